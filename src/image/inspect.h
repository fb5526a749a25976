/* image/inspect.h: what the inspection operations (check.c, map.c,
 * compare.c, measure.c) share: a raw view of a qcow2 file's metadata that
 * does not go through the reader in qcow2.c (check must look at what the
 * reader would refuse, and map must tell apart states the reader merges),
 * and QEMU's block-status model, on which 'qemu-img map', 'compare' and
 * 'measure' base their output. Not installed. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "base/macro.h"
#include "image/image-internal.h"
#include "image/qcow2.h"
#include "vmhost/error.h"

/* Masks the spec defines for reserved bits. */
#define QCOW2_L1E_RESERVED_MASK UINT64_C(0x7f000000000001ff)
#define QCOW2_L2E_STD_RESERVED_MASK UINT64_C(0x3f000000000001fe)
#define QCOW2_REFT_RESERVED_MASK UINT64_C(0x1ff)
/* Extended L2: the allocation bits are the low 32 of the bitmap, the zero
 * bits the high 32. */
#define QCOW2_L2_BITMAP_ALL_ALLOC UINT64_C(0xffffffff)
#define QCOW2_L2_BITMAP_ALL_ZERO UINT64_C(0xffffffff00000000)

/* Limits on tables that only check and measure read. */
#define QCOW2_MAX_BITMAPS 65535
#define QCOW2_MAX_BITMAP_DIRECTORY (UINT64_C(64) << 20)
#define QCOW2_MAX_BITMAP_TABLE_ENTRIES (UINT64_C(1) << 24)

struct qcow2_bitmap_entry {
        uint64_t table_offset;
        uint32_t table_size; /* entries */
        uint32_t flags;
        uint8_t granularity_bits;
        char *name;
};

/* The metadata of one qcow2 file, read straight from the file. Offsets
 * taken from the header are validated by qcow2_header_parse(); offsets
 * found in tables are not, that is the caller's job. */
struct qcow2_meta {
        int fd;
        const char *filename; /* not owned */
        uint64_t file_len;    /* the file's size rounded up to 512, as QEMU sees it */
        struct qcow2_header h;

        uint64_t *l1;         /* host order, h.l1_size entries */
        uint64_t *reftable;   /* host order, reftable_entries entries */
        uint64_t reftable_entries;
        uint8_t **refblocks;  /* on-disk refcount blocks, loaded on demand, per reftable index */
        unsigned refblock_bits; /* log2 of the entries in one refcount block */

        struct qcow2_snapshot *snapshots;
        size_t n_snapshots;
        uint64_t snapshots_size; /* bytes of the snapshot table */

        bool has_bitmaps;     /* bitmaps extension present and its autoclear bit set */
        uint64_t bitmap_directory_offset, bitmap_directory_size;
        struct qcow2_bitmap_entry *bitmaps;
        uint32_t n_bitmaps;
};

enum {
        QCOW2_META_SNAPSHOTS = 1 << 0, /* read the snapshot table */
        QCOW2_META_BITMAPS = 1 << 1,   /* read the bitmap directory */
};

/* Reads the header, L1 and refcount tables (and, as asked, the snapshot
 * table and bitmap directory) of the qcow2 file open at 'fd'. */
int qcow2_meta_load(int fd, const char *filename, unsigned what, struct qcow2_meta **ret, struct vh_error *err);
struct qcow2_meta *qcow2_meta_free(struct qcow2_meta *m);
DEFINE_FREE_FUNC(struct qcow2_meta, qcow2_meta_free)

/* Reads 'len' bytes at 'offset'; past the end of the file reads zeros, as
 * QEMU's file driver does. */
int qcow2_meta_pread(struct qcow2_meta *m, void *buf, size_t len, uint64_t offset, struct vh_error *err);

/* The refcount of host cluster 'cluster' as the file records it: 0 when
 * no refcount block covers it, -EIO when the table entry for it is not
 * aligned (nothing can be read then). */
int qcow2_meta_get_refcount(struct qcow2_meta *m, uint64_t cluster, uint64_t *ret);
/* Changes the cached copy of the refcount block of 'cluster', which must
 * exist; the caller writes the block back (qcow2_meta_refblock_sync). */
int qcow2_meta_set_refcount(struct qcow2_meta *m, uint64_t cluster, uint64_t value);
/* Writes the cached refcount block with reftable index 'index' to disk. */
int qcow2_meta_refblock_sync(struct qcow2_meta *m, uint64_t index, struct vh_error *err);

/* Entry 'index' of a refcount block with entries of 2^order bits. */
uint64_t qcow2_refblock_entry_get(const uint8_t *block, uint64_t index, unsigned order);
void qcow2_refblock_entry_set(uint8_t *block, uint64_t index, unsigned order, uint64_t value);

/* Size in bytes of refcount blocks plus table needed to count 'clusters'
 * clusters and themselves (the fixed point every qcow2 writer needs). */
uint64_t qcow2_refcount_metadata_size(uint64_t clusters, uint64_t cluster_size, unsigned refcount_order,
                                      uint64_t *ret_blocks, uint64_t *ret_table_clusters);

/* Whether QEMU would take this image for one preallocated with metadata
 * only: it then asks the file system, per data cluster, whether the
 * cluster holds data (see status.c). */
int qcow2_meta_detect_metadata_preallocation(struct qcow2_meta *m, bool *ret);

/* QEMU's block status: one flag set per range, as bdrv_block_status()
 * reports it and 'qemu-img map/compare/measure' consume it. */
enum {
        BSTAT_DATA = 1 << 0,
        BSTAT_ZERO = 1 << 1,
        BSTAT_OFFSET_VALID = 1 << 2,
        BSTAT_ALLOCATED = 1 << 4,
        BSTAT_EOF = 1 << 5,
        BSTAT_RECURSE = 1 << 6,
};

struct bstat {
        unsigned flags;
        uint64_t pnum;          /* bytes with this status, > 0 below the end */
        uint64_t map;           /* host offset, with BSTAT_OFFSET_VALID */
        struct vh_image *file;  /* the layer whose file 'map' is in */
};

/* Per-layer state the block status keeps (a qcow2 view, the last raw data
 * range); lives as long as the chain it was made for. */
struct bstat_chain;
int bstat_chain_new(struct vh_image *top, struct bstat_chain **ret, struct vh_error *err);
struct bstat_chain *bstat_chain_free(struct bstat_chain *c);
DEFINE_FREE_FUNC(struct bstat_chain, bstat_chain_free)

/* Status of 'img' alone (a member of the chain) at 'offset'. */
int bstat_layer(struct bstat_chain *c, struct vh_image *img, uint64_t offset, uint64_t bytes, struct bstat *ret,
                struct vh_error *err);
/* Status through the whole chain below and including 'img'. */
int bstat_above(struct bstat_chain *c, struct vh_image *img, uint64_t offset, uint64_t bytes, struct bstat *ret,
                struct vh_error *err);
