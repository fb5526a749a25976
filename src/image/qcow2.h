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
/* Like qcow2_writer_add_cluster(), but the caller writes the cluster's
 * data itself at '*ret_host' (from any thread), before
 * qcow2_writer_finish(). Reserved clusters follow each other in the file
 * in the order they are reserved. */
int qcow2_writer_reserve_cluster(struct qcow2_writer *w, uint64_t guest_cluster, uint64_t *ret_host,
                                 struct vh_error *err);
/* Maps guest cluster 'guest_cluster' to zeros (the zero flag; version 3
 * only), hiding what a backing file holds there. */
int qcow2_writer_add_zero_cluster(struct qcow2_writer *w, uint64_t guest_cluster, struct vh_error *err);
/* Appends one cluster zlib-compressed, or as it is when it does not get
 * smaller. */
int qcow2_writer_add_compressed(struct qcow2_writer *w, uint64_t guest_cluster, const void *data,
                                struct vh_error *err);
/* Writes refcounts, L2 tables, L1 and header behind the data, in that order
 * with fsync between the steps, and leaves everything on stable storage. */
int qcow2_writer_finish(struct qcow2_writer *w, struct vh_error *err);
struct qcow2_writer *qcow2_writer_free(struct qcow2_writer *w);

/* Checks the create parameters that do not depend on the file (cluster
 * size, refcount bits, version, lazy refcounts, backing name length). */
int qcow2_writer_params_check(const struct qcow2_writer_params *p, struct vh_error *err);
/* Fills the parameters from create's and convert's options, where 0 means
 * qemu-img's default (64 KiB clusters, compat 1.1, 16 refcount bits), and
 * checks them. The backing file name is not copied. */
int qcow2_writer_params_from(uint64_t virtual_size, uint32_t cluster_size, unsigned version, unsigned refcount_bits,
                             bool lazy_refcounts, const char *backing_file, enum vh_image_format backing_format,
                             struct qcow2_writer_params *ret, struct vh_error *err);

/* ---- The driver state, shared by the reader (qcow2.c) and the in-place
 * write path (qcow2-alloc.c, qcow2-cache.c, snapshot.c). ---- */

struct vh_image;
struct vh_image_snapshot;
struct qcow2_cache;

/* A refcount decrement that must wait until no table on disk points at
 * the clusters any more (see qcow2_flush()). */
struct qcow2_pending_free {
        uint64_t offset; /* host byte offset of the first cluster */
        uint64_t bytes;  /* every cluster touched by [offset, offset + bytes) */
};

/* Ranges of clusters being set up by an allocation that the free-cluster
 * scan must step over (their refcounts are not set yet). */
#define QCOW2_MAX_RESERVED 4

struct qcow2_state {
        struct qcow2_header h;
        uint64_t *l1; /* host byte order, h.l1_size entries */

        struct qcow2_cache *l2_cache;

        /* The last compressed cluster decoded, keyed by its L2 entry. */
        uint8_t *cbuf; /* compressed input, up to two clusters */
        uint8_t *dbuf; /* one decoded cluster */
        uint64_t dbuf_entry;
        bool dbuf_valid;
        void *zs;      /* z_stream, allocated on first use */
        void *zstd;    /* ZSTD_DCtx */

        /* ---- read-write opens only (qcow2-alloc.c) ---- */
        bool rw;
        struct qcow2_cache *rb_cache; /* refcount blocks */
        uint64_t *reftable;           /* host order */
        uint64_t reftable_entries;    /* in memory; may be ahead of the file */
        uint64_t reftable_offset;     /* where the table lives (or will) */
        uint32_t reftable_clusters;
        bool reftable_moved;          /* a grown table not yet named by the header */
        uint64_t reftable_dirty_lo, reftable_dirty_hi; /* entries to write, [lo, hi) */
        uint64_t old_reftable_offset; /* freed once the header names the new one */
        uint32_t old_reftable_clusters;
        uint64_t l1_dirty_lo, l1_dirty_hi;              /* entries to write, [lo, hi) */
        uint64_t refblock_entries;    /* refcounts per refcount block */
        uint64_t refcount_max;
        uint64_t free_hint;           /* no free cluster below this one */
        uint64_t end_cluster;         /* nothing is allocated at or past this cluster */
        uint64_t reserved_lo[QCOW2_MAX_RESERVED], reserved_hi[QCOW2_MAX_RESERVED];
        unsigned n_reserved;
        struct qcow2_pending_free *pending;
        size_t n_pending, pending_cap;
        bool data_unsynced;    /* guest data written since the last fsync */
        bool flushing;         /* inside qcow2_flush(): evictions write directly */
        bool marked_dirty;     /* we set the dirty bit (lazy refcounts) */
        bool header_checked;   /* autoclear bits cleared, first write prepared */
        uint8_t *cow_buf;      /* one cluster */
        uint8_t *zero_buf;     /* one cluster of zeros */
};

/* ---- qcow2-cache.c: L2 tables and refcount blocks, one cluster each,
 * kept in memory and written back in the order qcow2_flush() imposes. ---- */

/* Called when a dirty table must leave the cache to make room. */
typedef int (*qcow2_cache_evict_fn)(struct vh_image *img, struct vh_error *err);

struct qcow2_cache *qcow2_cache_new(size_t n_slots, uint32_t table_size, qcow2_cache_evict_fn evict);
struct qcow2_cache *qcow2_cache_free(struct qcow2_cache *c);
/* The table at host 'offset' (validated by the caller), read on a miss. The
 * pointer stays valid until the next get from the same cache. */
int qcow2_cache_get(struct vh_image *img, struct qcow2_cache *c, uint64_t offset, uint8_t **ret,
                    struct vh_error *err);
/* A table for a newly allocated cluster: zero-filled, dirty, not read. */
int qcow2_cache_get_new(struct vh_image *img, struct qcow2_cache *c, uint64_t offset, uint8_t **ret,
                        struct vh_error *err);
void qcow2_cache_mark_dirty(struct qcow2_cache *c, const uint8_t *table);
bool qcow2_cache_is_dirty(const struct qcow2_cache *c);
/* Writes every dirty table (no fsync); 'what' names them in errors. */
int qcow2_cache_write_dirty(struct vh_image *img, struct qcow2_cache *c, const char *what, struct vh_error *err);
/* Writes the least recently used dirty table (for an eviction while the
 * caller is already writing tables back in order). */
int qcow2_cache_write_one(struct vh_image *img, struct qcow2_cache *c, const char *what, struct vh_error *err);
/* Forgets the table at 'offset' (its cluster was freed), dirty or not. */
void qcow2_cache_drop(struct qcow2_cache *c, uint64_t offset);

/* ---- qcow2-alloc.c: the in-place write path. ---- */

/* Sets up the write state of an image opened read-write (refcount table,
 * caches) and refuses what cannot be written. Writes nothing. */
int qcow2_rw_open(struct vh_image *img, struct vh_error *err);
/* Flushes (best effort: errors leave at most leaked clusters) and clears
 * the dirty bit we set. */
void qcow2_rw_close(struct vh_image *img);

/* Before the first change to the file: clears autoclear bits we do not
 * maintain and, with lazy refcounts, sets the dirty bit. */
int qcow2_prepare_write(struct vh_image *img, struct vh_error *err);

int qcow2_write(struct vh_image *img, uint64_t offset, const void *buf, size_t len, struct vh_error *err);
int qcow2_write_zeroes(struct vh_image *img, uint64_t offset, uint64_t len, struct vh_error *err);
int qcow2_discard(struct vh_image *img, uint64_t offset, uint64_t len, struct vh_error *err);
/* Puts everything on disk in the crash-safe order (see qcow2-alloc.c). */
int qcow2_flush(struct vh_image *img, struct vh_error *err);

/* Refcount of the cluster at host 'offset' (0 past the table). */
int qcow2_refcount_get(struct vh_image *img, uint64_t offset, uint64_t *ret, struct vh_error *err);
/* Adds 'delta' (+1 or -1) to the refcount of every cluster touched by
 * [offset, offset + bytes), now (in the cache). Decrements that could free
 * a cluster still named on disk must go through qcow2_free_later(). */
int qcow2_refcount_update(struct vh_image *img, uint64_t offset, uint64_t bytes, int delta, struct vh_error *err);
/* Queues a decrement for the next qcow2_flush(), after the tables that
 * stopped pointing at the clusters are on disk. */
int qcow2_free_later(struct vh_image *img, uint64_t offset, uint64_t bytes, struct vh_error *err);
/* Queues the decrement(s) an L2 entry's clusters need when the entry goes
 * away (standard, preallocated zero or compressed). */
int qcow2_free_l2_entry_later(struct vh_image *img, uint64_t entry, struct vh_error *err);
/* Allocates 'n' contiguous clusters with refcount 1; returns the offset. */
int qcow2_alloc_contiguous(struct vh_image *img, uint64_t n, uint64_t *ret_offset, struct vh_error *err);

/* Reads an L2 table (a cached copy; the offset is checked). */
int qcow2_l2_load(struct vh_image *img, uint64_t l2_offset, uint8_t **ret, struct vh_error *err);
/* Host byte range [*ret_offset, + *ret_bytes) that a compressed L2 entry
 * refers to (whole sectors, as the refcounts count them). */
void qcow2_compressed_range(const struct qcow2_header *h, uint64_t entry, uint64_t *ret_offset,
                            uint64_t *ret_bytes);

/* Writes the fixed header fields from s->h (everything up to
 * header_length), then fsync. */
int qcow2_header_update(struct vh_image *img, struct vh_error *err);
/* Reads an L1 table of 'size' entries at 'offset', in host order, into a
 * new array (*ret, at least one entry; the caller frees it) (snapshot.c). */
int qcow2_l1_read(struct vh_image *img, uint64_t offset, uint32_t size, uint64_t **ret, struct vh_error *err);
/* Copies the header extensions of the first cluster 'old' (header 'h',
 * 'cs' bytes) into the zeroed 'buf' at *out, all but those of type 'skip',
 * then the end marker; *out ends past it (rebase.c). */
int qcow2_header_copy_extensions(const uint8_t *old, const struct qcow2_header *h, uint32_t cs, uint32_t skip,
                                 uint8_t *buf, size_t *out, struct vh_error *err);
/* Rewrites the first cluster with a new backing file name and format (both
 * may be NULL: none), keeping the other header extensions. */
int qcow2_header_set_backing(struct vh_image *img, const char *backing, const char *backing_format,
                             struct vh_error *err);
/* Writes L1 entries [lo, hi) of the active table (whole sectors). */
int qcow2_l1_write(struct vh_image *img, uint64_t lo, uint64_t hi, struct vh_error *err);
/* Sets COPIED on the active L1 and L2 entries whose refcount is one and
 * clears it elsewhere (after a snapshot changed refcounts). */
int qcow2_fix_copied_flags(struct vh_image *img, struct vh_error *err);
/* Grows the guest-visible size (L1 table included) or, when nothing is
 * allocated past it, shrinks it. */
int qcow2_resize(struct vh_image *img, uint64_t new_size, struct vh_error *err);
/* Gives every guest cluster in [offset, offset + len) that has no host
 * cluster one, as 'resize --preallocation' does: metadata maps it onto
 * a hole, falloc also reserves it in the file, full
 * writes zeros there. Host clusters read as zeros before an L2 entry
 * names them; then the tables are flushed in the usual order. */
int qcow2_preallocate(struct vh_image *img, uint64_t offset, uint64_t len, enum vh_image_prealloc mode,
                      struct vh_error *err);

/* ---- The snapshot table (spec: "Snapshots"), read by one parser
 * (qcow2-meta.c) for both the snapshot operations (snapshot.c) and the
 * inspection (check.c). ---- */

/* QEMU's limits: the whole table, one entry's extra data, its id. */
#define QCOW2_MAX_SNAPSHOT_TABLE (UINT64_C(64) << 20)
#define QCOW2_MAX_SNAPSHOT_EXTRA 1024
#define QCOW2_MAX_SNAPSHOT_ID 1024

/* One entry as stored. Only the layout is checked when it is read: the
 * L1 offsets and the id and name bytes are the caller's to judge, since
 * 'check' reports what the snapshot operations refuse. */
struct qcow2_snapshot {
        uint64_t l1_offset;
        uint32_t l1_size;
        char *id;   /* the stored bytes, NUL-terminated */
        char *name;
        uint16_t id_len, name_len; /* as stored: a NUL byte inside makes strlen() shorter */
        uint32_t date_sec, date_nsec;
        uint64_t vm_clock_nsec;
        uint32_t vm_state_size32;
        uint8_t *extra; /* kept as read, so that unknown fields survive a rewrite */
        uint32_t extra_size;
        uint32_t extra_stored; /* extra_size as stored: larger when a lenient read dropped the excess */
};

/* What a lenient read of a damaged table does instead of failing, as
 * QEMU reads it for 'check': an entry past the end of the file reads as
 * zeros, extra data past QCOW2_MAX_SNAPSHOT_EXTRA is dropped (extra_stored
 * says how much there was), and the entries past QCOW2_MAX_SNAPSHOT_TABLE
 * are left out ('*ret_n' is then less than 'nb'). */
enum { QCOW2_SNAPSHOT_READ_LENIENT = 1 << 0 };

/* Reads the 'nb' entries of the table at 'offset' of the qcow2 file open
 * at 'fd' ('file_len' bytes; 'filename' for messages). Entries must lie
 * within the file and the table within QCOW2_MAX_SNAPSHOT_TABLE, unless
 * 'flags' has QCOW2_SNAPSHOT_READ_LENIENT. Sets '*ret_bytes' to the
 * table's size as stored, the last entry's padding included. */
int qcow2_snapshot_table_read(int fd, const char *filename, uint64_t file_len, uint64_t offset, uint32_t nb,
                              unsigned flags, struct qcow2_snapshot **ret, size_t *ret_n, uint64_t *ret_bytes,
                              struct vh_error *err);
/* Lays out the 'n' entries of 't' as the table stores them, into a new
 * buffer of whole clusters of 'cluster_size' bytes ('*ret_bytes': the
 * table's own size). Fails past QCOW2_MAX_SNAPSHOT_TABLE. */
int qcow2_snapshot_table_serialize(const struct qcow2_snapshot *t, size_t n, uint32_t cluster_size,
                                   uint8_t **ret_buf, uint64_t *ret_bytes, struct vh_error *err);
void qcow2_snapshot_table_free(struct qcow2_snapshot *t, size_t n);

/* The snapshot table as the public API describes it (snapshot.c). */
int qcow2_snapshots_describe(struct vh_image *img, struct vh_image_snapshot **ret, size_t *ret_n,
                             struct vh_error *err);

/* fsync with the reason in the error message. */
int qcow2_sync(struct vh_image *img, const char *after, struct vh_error *err);
/* Refcount entry 'index' of a refcount block, and setting it. */
uint64_t qcow2_refblock_get(const uint8_t *block, uint64_t index, unsigned order);
void qcow2_refblock_set(uint8_t *block, uint64_t index, unsigned order, uint64_t value);
