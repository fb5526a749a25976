/* image/qcow2.h: the qcow2 on-disk layout (QEMU's docs/interop/qcow2.rst)
 * as constants, the parsed header, and the two halves of the driver: the
 * reader (qcow2.c) and the sequential writer (qcow2-write.c). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmhost/error.h"

#define QCOW2_MAGIC UINT32_C(0x514649fb) /* "QFI\xfb" */

#define QCOW2_V2_HEADER_LENGTH 72
#define QCOW2_V3_MIN_HEADER_LENGTH 104
/* What this writer puts in header_length for version 3: the fields up to
 * and including compression_type (byte 104), padded to 8. */
#define QCOW2_V3_HEADER_LENGTH 112

#define QCOW2_MIN_CLUSTER_BITS 9
#define QCOW2_MAX_CLUSTER_BITS 21 /* QEMU's limit: 2 MiB clusters */
#define QCOW2_DEFAULT_CLUSTER_BITS 16
/* Extended L2 entries split clusters into 32 subclusters of >= 512 bytes. */
#define QCOW2_EXTL2_MIN_CLUSTER_BITS 14
#define QCOW2_SUBCLUSTERS 32

/* QEMU's implementation limits, which keep a hostile header from making us
 * allocate or scan absurd amounts. */
#define QCOW2_MAX_L1_BYTES (UINT64_C(32) << 20)
#define QCOW2_MAX_REFTABLE_BYTES (UINT64_C(8) << 20)
#define QCOW2_MAX_SNAPSHOTS 65536
#define QCOW2_MAX_BACKING_FORMAT 15
#define QCOW2_MAX_HEADER_EXTENSIONS 1024

/* Header extension types. */
#define QCOW2_EXT_END UINT32_C(0x00000000)
#define QCOW2_EXT_BACKING_FORMAT UINT32_C(0xe2792aca)
#define QCOW2_EXT_FEATURE_TABLE UINT32_C(0x6803f857)
#define QCOW2_EXT_BITMAPS UINT32_C(0x23852875)
#define QCOW2_EXT_CRYPTO UINT32_C(0x0537be77)
#define QCOW2_EXT_DATA_FILE UINT32_C(0x44415441)

#define QCOW2_FEATURE_NAME_ENTRY 48
#define QCOW2_FEATURE_NAME_MAX 46

/* incompatible_features */
#define QCOW2_INCOMPAT_DIRTY (UINT64_C(1) << 0)
#define QCOW2_INCOMPAT_CORRUPT (UINT64_C(1) << 1)
#define QCOW2_INCOMPAT_DATA_FILE (UINT64_C(1) << 2)
#define QCOW2_INCOMPAT_COMPRESSION (UINT64_C(1) << 3)
#define QCOW2_INCOMPAT_EXTL2 (UINT64_C(1) << 4)
#define QCOW2_INCOMPAT_KNOWN (UINT64_C(0x1f))
/* compatible_features */
#define QCOW2_COMPAT_LAZY_REFCOUNTS (UINT64_C(1) << 0)
/* autoclear_features */
#define QCOW2_AUTOCLEAR_BITMAPS (UINT64_C(1) << 0)
#define QCOW2_AUTOCLEAR_DATA_FILE_RAW (UINT64_C(1) << 1)

#define QCOW2_COMPRESSION_ZLIB 0
#define QCOW2_COMPRESSION_ZSTD 1

/* L1 and L2 entries. */
#define QCOW2_L1E_OFFSET_MASK UINT64_C(0x00fffffffffffe00)
#define QCOW2_L2E_OFFSET_MASK UINT64_C(0x00fffffffffffe00)
#define QCOW2_OFLAG_COPIED (UINT64_C(1) << 63)
#define QCOW2_OFLAG_COMPRESSED (UINT64_C(1) << 62)
#define QCOW2_OFLAG_ZERO (UINT64_C(1) << 0)
#define QCOW2_REFT_OFFSET_MASK UINT64_C(0xfffffffffffffe00)

/* The header as read from a file, host byte order, plus what follows from
 * it. Only qcow2_header_parse() fills one, and only when every field is
 * within the limits above and consistent with the file size. */
struct qcow2_header {
        uint32_t version;
        uint64_t backing_file_offset;
        uint32_t backing_file_size;
        uint32_t cluster_bits;
        uint64_t size;
        uint32_t crypt_method;
        uint32_t l1_size;
        uint64_t l1_table_offset;
        uint64_t refcount_table_offset;
        uint32_t refcount_table_clusters;
        uint32_t nb_snapshots;
        uint64_t snapshots_offset;
        uint64_t incompatible_features;
        uint64_t compatible_features;
        uint64_t autoclear_features;
        uint32_t refcount_order;
        uint32_t header_length;
        uint8_t compression_type;

        char backing_file[1024];   /* "" when there is none */
        char backing_format[QCOW2_MAX_BACKING_FORMAT + 1]; /* "" when not recorded */

        /* Derived. */
        uint32_t cluster_size;
        uint32_t l2_entry_size;    /* 8, or 16 with extended L2 entries */
        uint64_t l2_entries;       /* entries per L2 table */
};

/* Parses and validates the header in 'buf', the first 'len' bytes of a file
 * of 'file_size' bytes. 'len' must cover the first cluster or the whole
 * file, whichever is shorter; with fewer bytes only the fixed fields are
 * checked and -EAGAIN asks for qcow2_header_need() bytes. Errors name the
 * field ("l1_table_offset 0x200 is not aligned to the cluster size"). */
int qcow2_header_parse(const uint8_t *buf, size_t len, uint64_t file_size, struct qcow2_header *ret,
                       struct vh_error *err);

/* How many leading bytes of the file qcow2_header_parse() wants, once it
 * knows the cluster size from 'buf' (at least 24 bytes). */
size_t qcow2_header_need(const uint8_t *buf, size_t len, uint64_t file_size);

/* Number of L1 entries needed to map 'size' bytes. */
uint64_t qcow2_l1_entries_for(uint64_t size, unsigned cluster_bits, uint32_t l2_entry_size);

/* The sequential writer: data clusters are appended in the order given,
 * metadata is laid out behind them by qcow2_writer_finish(). */
struct qcow2_writer_params {
        uint64_t virtual_size;
        unsigned cluster_bits;
        unsigned version;          /* 2 or 3 */
        unsigned refcount_order;   /* 0..6 */
        bool lazy_refcounts;
        const char *backing_file;  /* NULL for none */
        const char *backing_format;
};

struct qcow2_writer;

int qcow2_writer_new(int fd, const struct qcow2_writer_params *params, struct qcow2_writer **ret,
                     struct vh_error *err);
/* Appends one cluster of guest data for guest cluster 'guest_cluster'. Each
 * guest cluster may be written once. */
int qcow2_writer_add_cluster(struct qcow2_writer *w, uint64_t guest_cluster, const void *data,
                             struct vh_error *err);
/* Writes refcounts, L2 tables, L1 and header behind the data, in that order
 * with fsync between the steps, and leaves everything on stable storage. */
int qcow2_writer_finish(struct qcow2_writer *w, struct vh_error *err);
struct qcow2_writer *qcow2_writer_free(struct qcow2_writer *w);

/* Checks the create parameters that do not depend on the file (cluster
 * size, refcount bits, version, lazy refcounts, backing name length). */
int qcow2_writer_params_check(const struct qcow2_writer_params *p, struct vh_error *err);
