/* image/check.c: 'img check': rebuilds the reference counts of a qcow2
 * image from everything that points at a cluster (header, active and
 * snapshot L1 tables and their L2 tables, data and compressed clusters,
 * snapshot table, refcount table and blocks, bitmap directory, tables and
 * data), compares them with the refcounts the file records, and checks the
 * COPIED flags of the active tables.
 *
 * The problems are counted in qemu-img's categories, so that scripts and
 * people reading 'qemu-img check' output read ours the same way:
 *   corruptions  a refcount lower than the references (data may be freed
 *                and overwritten), entries pointing at misaligned offsets
 *                or past the end of the file, reserved bits, wrong COPIED
 *                flags, broken refcount table entries
 *   leaks        a refcount higher than the references (wasted space only)
 *   check errors the check itself could not read something
 * and each problem is reported as a line in qemu-img's words through the
 * caller's report callback (libraries do not print).
 *
 * Repair ('-r leaks', '-r all') changes the file in place, in an order
 * that keeps it consistent at every step:
 *   - refcounts are lowered (leaks) or raised (too low) by rewriting the
 *     refcount blocks that hold them, then fsync;
 *   - a refcount table that cannot be trusted (an entry misaligned, outside
 *     the file, or a cluster with references but refcount 0) is replaced
 *     whole: new blocks and table are written past the end of the file,
 *     fsync, then the header is pointed at them in one sector write, fsync;
 *     the old structure is then simply unreferenced;
 *   - COPIED flags are fixed last, once the refcounts they describe are
 *     right; L1 and L2 tables are rewritten only where they lie in a
 *     cluster with refcount 1 (never over other metadata).
 * After a repair the image is checked again from scratch and that second
 * result is the one returned, with the number of repairs, as qemu-img
 * does. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/json-writer.h"
#include "base/macro.h"
#include "image/inspect.h"

/* The in-memory reference counts take 4 bytes per host cluster; this
 * bounds them to 1 GiB (a 16 TiB file with 64 KiB clusters). */
#define CHECK_MAX_CLUSTERS (UINT64_C(1) << 28)

enum { CHECK_FRAG_INFO = 1 << 0 };

struct check_ctx {
        struct qcow2_meta *m;
        const struct vh_image_check_options *opts;
        struct vh_image_check_result *res;
        unsigned fix; /* VH_IMAGE_CHECK_REPAIR_* for this pass */
        struct vh_error *err;

        uint32_t *refs;       /* references found, per host cluster */
        uint64_t nb_clusters; /* clusters compared; grows past the file for a reference that ends there */
        uint64_t refs_alloc;  /* entries allocated in refs */
        uint8_t *l2buf;       /* one L2 table */
        bool rebuild;         /* the refcount structure itself is broken */
        bool wrote;           /* a repair changed the file */
        bool quiet;           /* a counting pass whose findings are not reported */
        uint64_t highest;     /* highest cluster in use */
};

_printf_(2, 3) static void report(struct check_ctx *c, const char *fmt, ...) {
        if (!c->opts->report || c->quiet)
                return;
        char line[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(line, sizeof(line), fmt, ap);
        va_end(ap);
        c->opts->report(line, c->opts->userdata);
}

static bool fix_errors(const struct check_ctx *c) {
        return (c->fix & VH_IMAGE_CHECK_REPAIR_ALL) == VH_IMAGE_CHECK_REPAIR_ALL;
}
static bool fix_leaks(const struct check_ctx *c) {
        return c->fix & VH_IMAGE_CHECK_REPAIR_LEAKS;
}

static uint64_t refcount_max(const struct check_ctx *c) {
        unsigned bits = 1u << c->m->h.refcount_order;
        uint64_t max = bits >= 64 ? UINT64_MAX : (UINT64_C(1) << bits) - 1;
        return MIN(max, (uint64_t) UINT32_MAX);
}

/* Counts one reference to every cluster [offset, offset + size) touches. */
static void inc_refs(struct check_ctx *c, uint64_t offset, uint64_t size) {
        const struct qcow2_header *h = &c->m->h;
        if (size == 0)
                return;
        /* A range may end inside the last, partly written cluster; one
         * that reaches a whole cluster past the end points at nothing. */
        if (offset + size >= c->m->file_len + h->cluster_size) {
                report(c,
                       "ERROR: counting reference for region exceeding the end of the file by one cluster or more: "
                       "offset %#" PRIx64 " size %#" PRIx64,
                       offset, size);
                c->res->corruptions++;
                return;
        }
        uint64_t first = offset >> h->cluster_bits, last = (offset + size - 1) >> h->cluster_bits;
        for (uint64_t k = first; k <= last; k++) {
                /* refs_alloc covers the file plus one cluster, which the
                 * test above guarantees is enough. */
                if (k >= c->nb_clusters)
                        c->nb_clusters = k + 1;
                if (c->refs[k] >= refcount_max(c)) {
                        report(c, "ERROR: overflow cluster offset=%#" PRIx64, k << h->cluster_bits);
                        c->res->corruptions++;
                        continue;
                }
                c->refs[k]++;
        }
}

enum cluster_type {
        CLUSTER_UNALLOCATED,
        CLUSTER_ZERO_PLAIN,
        CLUSTER_ZERO_ALLOC,
        CLUSTER_NORMAL,
        CLUSTER_COMPRESSED,
};

static enum cluster_type cluster_type(const struct qcow2_header *h, uint64_t entry) {
        bool extl2 = h->l2_entry_size == 16;
        if (entry & QCOW2_OFLAG_COMPRESSED)
                return CLUSTER_COMPRESSED;
        /* With extended L2 entries bit 0 means nothing: zeros are in the
         * bitmap. */
        if ((entry & QCOW2_OFLAG_ZERO) && !extl2)
                return (entry & QCOW2_L2E_OFFSET_MASK) ? CLUSTER_ZERO_ALLOC : CLUSTER_ZERO_PLAIN;
        return (entry & QCOW2_L2E_OFFSET_MASK) ? CLUSTER_NORMAL : CLUSTER_UNALLOCATED;
}

static void compressed_range(const struct qcow2_header *h, uint64_t entry, uint64_t *ret_offset,
                             uint64_t *ret_size) {
        unsigned csize_shift = 62 - (h->cluster_bits - 8);
        uint64_t csize_mask = (UINT64_C(1) << (h->cluster_bits - 8)) - 1;
        uint64_t coffset = entry & ((UINT64_C(1) << csize_shift) - 1);
        uint64_t sectors = ((entry >> csize_shift) & csize_mask) + 1;
        *ret_offset = coffset;
        *ret_size = sectors * 512 - (coffset & 511);
}

static int write_sync(struct check_ctx *c, const void *buf, size_t len, uint64_t offset, const char *what) {
        c->wrote = true;
        int r = image_pwrite_all(c->m->fd, buf, len, offset);
        if (r >= 0 && fdatasync(c->m->fd) < 0)
                r = negative_errno();
        if (r < 0)
                report(c, "ERROR: Failed to write the %s at %#" PRIx64 ": %s", what, offset, strerror(-r));
        return r;
}

static int check_l2(struct check_ctx *c, uint64_t l2_offset, unsigned flags) {
        const struct qcow2_header *h = &c->m->h;
        struct vh_image_check_result *res = c->res;
        bool extl2 = h->l2_entry_size == 16;
        uint64_t next_contiguous = 0;

        int r = qcow2_meta_pread(c->m, c->l2buf, h->cluster_size, l2_offset, NULL);
        if (r < 0) {
                report(c, "ERROR: I/O error in check_refcounts_l2");
                res->check_errors++;
                return r;
        }
        for (uint64_t i = 0; i < h->l2_entries; i++) {
                uint8_t *e = c->l2buf + i * h->l2_entry_size;
                uint64_t entry = be64_load(e);
                uint64_t bitmap = extl2 ? be64_load(e + 8) : 0;
                enum cluster_type type = cluster_type(h, entry);

                if (type != CLUSTER_COMPRESSED && (entry & QCOW2_L2E_STD_RESERVED_MASK)) {
                        report(c, "ERROR found l2 entry with reserved bits set: %" PRIx64, entry);
                        res->corruptions++;
                }
                switch (type) {
                case CLUSTER_COMPRESSED: {
                        uint64_t coffset, csize;
                        if (entry & QCOW2_OFLAG_COPIED) {
                                compressed_range(h, entry, &coffset, &csize);
                                report(c,
                                       "ERROR: coffset=%#" PRIx64
                                       ": copied flag must never be set for compressed clusters",
                                       coffset);
                                entry &= ~QCOW2_OFLAG_COPIED;
                                res->corruptions++;
                        }
                        if (bitmap) {
                                report(c,
                                       "ERROR compressed cluster %" PRIu64
                                       " with non-zero subcluster allocation bitmap, entry=%#" PRIx64,
                                       i, entry);
                                res->corruptions++;
                                break;
                        }
                        compressed_range(h, entry, &coffset, &csize);
                        inc_refs(c, coffset, csize);
                        if (flags & CHECK_FRAG_INFO) {
                                /* Compressed clusters share sectors, so
                                 * qemu-img counts each one as fragmented. */
                                res->allocated_clusters++;
                                res->compressed_clusters++;
                                res->fragmented_clusters++;
                        }
                        break;
                }
                case CLUSTER_ZERO_ALLOC:
                case CLUSTER_NORMAL: {
                        uint64_t offset = entry & QCOW2_L2E_OFFSET_MASK;
                        if (extl2 && ((bitmap >> 32) & bitmap)) {
                                report(c,
                                       "ERROR offset=%" PRIx64
                                       ": Allocated cluster has corrupted subcluster allocation bitmap",
                                       offset);
                                res->corruptions++;
                        }
                        if (offset & (h->cluster_size - 1)) {
                                bool contains_data = extl2 ? (bitmap & QCOW2_L2_BITMAP_ALL_ALLOC) != 0
                                                           : !(entry & QCOW2_OFLAG_ZERO);
                                res->corruptions++;
                                if (!contains_data) {
                                        report(c,
                                               "%s offset=%" PRIx64
                                               ": Preallocated cluster is not properly aligned; L2 entry corrupted.",
                                               fix_errors(c) ? "Repairing" : "ERROR", offset);
                                        if (fix_errors(c)) {
                                                /* Nothing to keep: it reads as zeros. Make it a
                                                 * zero cluster without a host cluster. */
                                                uint8_t ne[16] = {};
                                                if (extl2)
                                                        be64_store(ne + 8, QCOW2_L2_BITMAP_ALL_ZERO);
                                                else
                                                        be64_store(ne, QCOW2_OFLAG_ZERO);
                                                if (write_sync(c, ne, h->l2_entry_size,
                                                               l2_offset + i * h->l2_entry_size, "L2 entry") < 0) {
                                                        res->check_errors++;
                                                } else {
                                                        memcpy(e, ne, h->l2_entry_size);
                                                        res->corruptions--;
                                                        res->corruptions_fixed++;
                                                        continue;
                                                }
                                        }
                                } else
                                        report(c,
                                               "ERROR offset=%" PRIx64
                                               ": Data cluster is not properly aligned; L2 entry corrupted.",
                                               offset);
                        }
                        if (flags & CHECK_FRAG_INFO) {
                                res->allocated_clusters++;
                                if (next_contiguous && offset != next_contiguous)
                                        res->fragmented_clusters++;
                                next_contiguous = offset + h->cluster_size;
                        }
                        inc_refs(c, offset, h->cluster_size);
                        break;
                }
                case CLUSTER_ZERO_PLAIN:
                        break;
                case CLUSTER_UNALLOCATED:
                        if (extl2 && (bitmap & QCOW2_L2_BITMAP_ALL_ALLOC)) {
                                report(c, "ERROR: Unallocated cluster has non-zero subcluster allocation map");
                                res->corruptions++;
                        }
                        break;
                }
        }
        return 0;
}

static int check_l1(struct check_ctx *c, uint64_t l1_offset, uint32_t l1_size, unsigned flags) {
        const struct qcow2_header *h = &c->m->h;
        if (l1_size == 0)
                return 0;
        inc_refs(c, l1_offset, (uint64_t) l1_size * 8);

        _cleanup_free_ uint8_t *l1 = malloc((size_t) l1_size * 8);
        if (!l1) {
                c->res->check_errors++;
                return -ENOMEM;
        }
        int r = qcow2_meta_pread(c->m, l1, (size_t) l1_size * 8, l1_offset, NULL);
        if (r < 0) {
                report(c, "ERROR: I/O error in check_refcounts_l1");
                c->res->check_errors++;
                return r;
        }
        for (uint32_t i = 0; i < l1_size; i++) {
                uint64_t entry = be64_load(l1 + (size_t) i * 8);
                if (!entry)
                        continue;
                if (entry & QCOW2_L1E_RESERVED_MASK) {
                        report(c, "ERROR found L1 entry with reserved bits set: %" PRIx64, entry);
                        c->res->corruptions++;
                }
                uint64_t l2_offset = entry & QCOW2_L1E_OFFSET_MASK;
                inc_refs(c, l2_offset, h->cluster_size);
                if (l2_offset & (h->cluster_size - 1)) {
                        report(c, "ERROR l2_offset=%" PRIx64 ": Table is not cluster aligned; L1 entry corrupted",
                               l2_offset);
                        c->res->corruptions++;
                }
                r = check_l2(c, l2_offset, flags);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int check_bitmaps(struct check_ctx *c) {
        struct qcow2_meta *m = c->m;
        const struct qcow2_header *h = &m->h;
        if (!m->has_bitmaps)
                return 0;
        inc_refs(c, m->bitmap_directory_offset, m->bitmap_directory_size);
        for (uint32_t i = 0; i < m->n_bitmaps; i++) {
                const struct qcow2_bitmap_entry *b = &m->bitmaps[i];
                uint64_t bytes = (uint64_t) b->table_size * 8;
                inc_refs(c, b->table_offset, bytes);
                if ((b->table_offset & (h->cluster_size - 1)) || b->table_offset > m->file_len ||
                    bytes > m->file_len - b->table_offset) {
                        c->res->corruptions++;
                        break;
                }
                _cleanup_free_ uint8_t *t = malloc(MAX(bytes, (uint64_t) 1));
                if (!t) {
                        c->res->check_errors++;
                        return -ENOMEM;
                }
                int r = qcow2_meta_pread(m, t, (size_t) bytes, b->table_offset, NULL);
                if (r < 0) {
                        c->res->corruptions++;
                        break;
                }
                for (uint32_t j = 0; j < b->table_size; j++) {
                        uint64_t entry = be64_load(t + (size_t) j * 8);
                        uint64_t offset = entry & UINT64_C(0x00fffffffffffe00);
                        /* Reserved bits, a misaligned offset, or "all ones"
                         * together with an offset. */
                        if ((entry & UINT64_C(0xff000000000001fe)) || (offset & (h->cluster_size - 1)) ||
                            (offset && (entry & 1))) {
                                c->res->corruptions++;
                                continue;
                        }
                        if (offset)
                                inc_refs(c, offset, h->cluster_size);
                }
        }
        return 0;
}

static void check_refblocks(struct check_ctx *c) {
        struct qcow2_meta *m = c->m;
        const struct qcow2_header *h = &m->h;
        for (uint64_t i = 0; i < m->reftable_entries; i++) {
                uint64_t entry = m->reftable[i];
                uint64_t offset = entry & QCOW2_REFT_OFFSET_MASK;
                uint64_t cluster = offset >> h->cluster_bits;
                if (entry & QCOW2_REFT_RESERVED_MASK) {
                        report(c, "ERROR refcount table entry %" PRIu64 " has reserved bits set", i);
                        c->res->corruptions++;
                        c->rebuild = true;
                        continue;
                }
                if (offset & (h->cluster_size - 1)) {
                        report(c,
                               "ERROR refcount block %" PRIu64
                               " is not cluster aligned; refcount table entry corrupted",
                               i);
                        c->res->corruptions++;
                        c->rebuild = true;
                        continue;
                }
                if (cluster >= c->nb_clusters) {
                        report(c, "%s refcount block %" PRIu64 " is outside image",
                               fix_errors(c) ? "Repairing" : "ERROR", i);
                        c->res->corruptions++;
                        c->rebuild = true;
                        continue;
                }
                if (offset != 0) {
                        inc_refs(c, offset, h->cluster_size);
                        if (c->refs[cluster] != 1) {
                                report(c, "ERROR refcount block %" PRIu64 " refcount=%" PRIu32, i, c->refs[cluster]);
                                c->res->corruptions++;
                                c->rebuild = true;
                        }
                }
        }
}

/* Counts every reference in the image into c->refs. */
static int calculate_refcounts(struct check_ctx *c) {
        struct qcow2_meta *m = c->m;
        const struct qcow2_header *h = &m->h;

        memset(c->refs, 0, c->refs_alloc * sizeof(*c->refs));
        c->nb_clusters = DIV_ROUND_UP(m->file_len, h->cluster_size);

        inc_refs(c, 0, h->cluster_size); /* the header */
        int r = check_l1(c, h->l1_table_offset, h->l1_size, CHECK_FRAG_INFO);
        if (r < 0)
                return r;
        for (size_t i = 0; i < m->n_snapshots; i++) {
                const struct qcow2_snapshot *s = &m->snapshots[i];
                if (s->l1_offset & (h->cluster_size - 1)) {
                        report(c,
                               "ERROR snapshot %s (%s) l1_offset=%#" PRIx64
                               ": L1 table is not cluster aligned; snapshot table entry corrupted",
                               s->id, s->name, s->l1_offset);
                        c->res->corruptions++;
                        continue;
                }
                if ((uint64_t) s->l1_size * 8 > QCOW2_MAX_L1_BYTES) {
                        report(c,
                               "ERROR snapshot %s (%s) l1_size=%#" PRIx32
                               ": L1 table is too large; snapshot table entry corrupted",
                               s->id, s->name, s->l1_size);
                        c->res->corruptions++;
                        continue;
                }
                r = check_l1(c, s->l1_offset, s->l1_size, 0);
                if (r < 0)
                        return r;
        }
        inc_refs(c, h->snapshots_offset, m->snapshots_size);
        inc_refs(c, h->refcount_table_offset, (uint64_t) h->refcount_table_clusters << h->cluster_bits);
        r = check_bitmaps(c);
        if (r < 0)
                return r;
        check_refblocks(c);
        return 0;
}

/* Writes back the refcount blocks changed in memory, then flushes. */
static int sync_refblocks(struct check_ctx *c, const bool *dirty) {
        for (uint64_t i = 0; i < c->m->reftable_entries; i++) {
                if (!dirty[i])
                        continue;
                c->wrote = true;
                int r = qcow2_meta_refblock_sync(c->m, i, c->err);
                if (r < 0)
                        return r;
        }
        if (fdatasync(c->m->fd) < 0)
                return vh_error_set(c->err, negative_errno(), "%s: fsync failed: %m", c->m->filename);
        return 0;
}

/* Compares recorded refcounts with the references; with 'fix', corrects
 * what it may in place. */
static int compare_refcounts(struct check_ctx *c, unsigned fix) {
        struct qcow2_meta *m = c->m;
        struct vh_image_check_result *res = c->res;
        _cleanup_free_ bool *dirty = NULL;
        _cleanup_free_ uint64_t *freed = NULL;
        size_t n_freed = 0, freed_alloc = 0;

        if (fix) {
                dirty = calloc(MAX(m->reftable_entries, (uint64_t) 1), sizeof(bool));
                if (!dirty)
                        return vh_error_set(c->err, -ENOMEM, "out of memory");
        }
        for (uint64_t i = 0; i < c->nb_clusters; i++) {
                uint64_t rc1;
                int r = qcow2_meta_get_refcount(m, i, &rc1);
                if (r < 0) {
                        report(c, "Can't get refcount for cluster %" PRIu64 ": %s", i, strerror(-r));
                        res->check_errors++;
                        continue;
                }
                uint64_t rc2 = c->refs[i];
                if (rc1 > 0 || rc2 > 0)
                        c->highest = i;
                if (rc1 == rc2)
                        continue;

                uint64_t *num_fixed = NULL;
                if (rc1 == 0)
                        c->rebuild = true; /* no refcount block may even exist for it */
                else if (rc1 > rc2 && (fix & VH_IMAGE_CHECK_REPAIR_LEAKS))
                        num_fixed = &res->leaks_fixed;
                else if (rc1 < rc2 && (fix & VH_IMAGE_CHECK_REPAIR_ALL) == VH_IMAGE_CHECK_REPAIR_ALL)
                        num_fixed = &res->corruptions_fixed;
                report(c, "%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
                       num_fixed ? "Repairing" : rc1 < rc2 ? "ERROR" : "Leaked", i, rc1, rc2);
                if (num_fixed && qcow2_meta_set_refcount(m, i, rc2) >= 0) {
                        dirty[i >> m->refblock_bits] = true;
                        (*num_fixed)++;
                        if (rc2 == 0) {
                                if (n_freed == freed_alloc) {
                                        size_t na = MAX(freed_alloc * 2, (size_t) 64);
                                        uint64_t *nf = realloc(freed, na * sizeof(*nf));
                                        if (!nf)
                                                return vh_error_set(c->err, -ENOMEM, "out of memory");
                                        freed = nf;
                                        freed_alloc = na;
                                }
                                freed[n_freed++] = i;
                        }
                        continue;
                }
                if (rc1 < rc2)
                        res->corruptions++;
                else
                        res->leaks++;
        }
        if (fix) {
                int r = sync_refblocks(c, dirty);
                if (r < 0)
                        return r;
                /* Give the freed clusters back to the file system, as QEMU
                 * does once their refcount reaches 0. Only after the
                 * refcounts saying so are on disk. */
                for (size_t k = 0; k < n_freed; k++)
                        (void) fallocate(m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                         (off_t) (freed[k] << m->h.cluster_bits), (off_t) m->h.cluster_size);
        }
        return 0;
}

/* Replaces the refcount table and blocks with new ones that hold exactly
 * the references counted, written past everything in use. */
static int rebuild_refcounts(struct check_ctx *c) {
        struct qcow2_meta *m = c->m;
        const struct qcow2_header *h = &m->h;
        const uint64_t cs = h->cluster_size;
        int r;

        c->wrote = true;
        /* The old structure is no longer referenced once the header points
         * at the new one. */
        uint64_t old_rt = h->refcount_table_offset >> h->cluster_bits;
        for (uint64_t k = 0; k < h->refcount_table_clusters; k++)
                if (old_rt + k < c->nb_clusters && c->refs[old_rt + k] > 0)
                        c->refs[old_rt + k]--;
        for (uint64_t i = 0; i < m->reftable_entries; i++) {
                uint64_t e = m->reftable[i];
                uint64_t off = e & QCOW2_REFT_OFFSET_MASK;
                if (!off || (e & QCOW2_REFT_RESERVED_MASK) || (off & (cs - 1)))
                        continue;
                uint64_t k = off >> h->cluster_bits;
                if (k < c->nb_clusters && c->refs[k] > 0)
                        c->refs[k]--;
        }

        /* Everything in use lies below 'start'; the new blocks and table go
         * there, and must count themselves too. */
        uint64_t start = MAX(c->nb_clusters, DIV_ROUND_UP(m->file_len, cs));
        uint64_t per_block = UINT64_C(1) << m->refblock_bits;
        uint64_t n_blocks = 0, n_table = 0;
        for (;;) {
                uint64_t total = start + n_blocks + n_table;
                uint64_t nb = DIV_ROUND_UP(total, per_block);
                uint64_t nt = DIV_ROUND_UP(nb * 8, cs);
                if (nb == n_blocks && nt == n_table)
                        break;
                n_blocks = nb;
                n_table = nt;
        }
        if (n_table * cs > QCOW2_MAX_REFTABLE_BYTES)
                return vh_error_set(c->err, -EFBIG, "%s: the rebuilt refcount table would be too large", m->filename);
        uint64_t blocks_at = start, table_at = start + n_blocks, end = table_at + n_table;

        _cleanup_free_ uint8_t *block = malloc(cs);
        _cleanup_free_ uint8_t *table = calloc(n_table, cs);
        if (!block || !table)
                return vh_error_set(c->err, -ENOMEM, "out of memory");
        for (uint64_t b = 0; b < n_blocks; b++) {
                memset(block, 0, cs);
                bool used = false;
                for (uint64_t j = 0; j < per_block; j++) {
                        uint64_t k = b * per_block + j;
                        uint64_t v = 0;
                        if (k < c->nb_clusters)
                                v = c->refs[k];
                        else if (k >= blocks_at && k < end)
                                v = 1;
                        if (v) {
                                qcow2_refblock_entry_set(block, j, h->refcount_order, v);
                                used = true;
                        }
                }
                (void) used;
                r = image_pwrite_all(m->fd, block, cs, (blocks_at + b) * cs);
                if (r < 0)
                        return vh_error_set(c->err, r, "%s: writing a refcount block failed: %s", m->filename,
                                            strerror(-r));
                be64_store(table + b * 8, (blocks_at + b) * cs);
        }
        r = image_pwrite_all(m->fd, table, n_table * cs, table_at * cs);
        if (r < 0)
                return vh_error_set(c->err, r, "%s: writing the refcount table failed: %s", m->filename,
                                    strerror(-r));
        /* The new structure must be on disk before the header points at it. */
        if (fsync(m->fd) < 0)
                return vh_error_set(c->err, negative_errno(), "%s: fsync failed: %m", m->filename);

        /* refcount_table_offset and refcount_table_clusters are bytes
         * 48..59: one write inside one sector. */
        uint8_t hdr[12];
        be64_store(hdr, table_at * cs);
        be32_store(hdr + 8, (uint32_t) n_table);
        r = image_pwrite_all(m->fd, hdr, sizeof(hdr), 48);
        if (r < 0)
                return vh_error_set(c->err, r, "%s: writing the header failed: %s", m->filename, strerror(-r));
        if (fsync(m->fd) < 0)
                return vh_error_set(c->err, negative_errno(), "%s: fsync failed: %m", m->filename);
        return 0;
}

/* Checks (and with 'fix' corrects) the COPIED flags of the active L1 and
 * L2 tables: set exactly where the refcount is 1. */
static int check_oflag_copied(struct check_ctx *c) {
        struct qcow2_meta *m = c->m;
        const struct qcow2_header *h = &m->h;
        struct vh_image_check_result *res = c->res;
        bool repair;

        if (fix_errors(c))
                repair = true;
        else if (fix_leaks(c))
                /* The refcounts were just repaired: trust them only if
                 * nothing else is wrong. */
                repair = !res->check_errors && !res->corruptions && !res->leaks;
        else
                repair = false;

        for (uint32_t i = 0; i < h->l1_size; i++) {
                uint64_t l1e = m->l1[i];
                uint64_t l2_offset = l1e & QCOW2_L1E_OFFSET_MASK;
                uint64_t rc;
                if (!l2_offset)
                        continue;
                if (qcow2_meta_get_refcount(m, l2_offset >> h->cluster_bits, &rc) < 0)
                        continue;
                bool l2_writable = rc == 1 && !(l2_offset & (h->cluster_size - 1));
                if ((rc == 1) != !!(l1e & QCOW2_OFLAG_COPIED)) {
                        res->corruptions++;
                        report(c, "%s OFLAG_COPIED L2 cluster: l1_index=%" PRIu32 " l1_entry=%" PRIx64 " refcount=%" PRIu64,
                               repair ? "Repairing" : "ERROR", i, l1e, rc);
                        if (repair) {
                                uint64_t ne = rc == 1 ? l1e | QCOW2_OFLAG_COPIED : l1e & ~QCOW2_OFLAG_COPIED;
                                uint8_t buf[8];
                                be64_store(buf, ne);
                                if (write_sync(c, buf, 8, h->l1_table_offset + (uint64_t) i * 8, "L1 entry") < 0) {
                                        res->check_errors++;
                                        return -EIO;
                                }
                                m->l1[i] = ne;
                                res->corruptions--;
                                res->corruptions_fixed++;
                        }
                }

                int r = qcow2_meta_pread(m, c->l2buf, h->cluster_size, l2_offset, NULL);
                if (r < 0) {
                        report(c, "ERROR: Could not read L2 table: %s", strerror(-r));
                        res->check_errors++;
                        return r;
                }
                uint64_t dirty = 0;
                for (uint64_t j = 0; j < h->l2_entries; j++) {
                        uint8_t *e = c->l2buf + j * h->l2_entry_size;
                        uint64_t entry = be64_load(e);
                        enum cluster_type t = cluster_type(h, entry);
                        if (t != CLUSTER_NORMAL && t != CLUSTER_ZERO_ALLOC)
                                continue;
                        if (qcow2_meta_get_refcount(m, (entry & QCOW2_L2E_OFFSET_MASK) >> h->cluster_bits, &rc) < 0)
                                continue;
                        if ((rc == 1) != !!(entry & QCOW2_OFLAG_COPIED)) {
                                res->corruptions++;
                                report(c, "%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64 " refcount=%" PRIu64,
                                       repair ? "Repairing" : "ERROR", entry, rc);
                                if (repair) {
                                        be64_store(e, rc == 1 ? entry | QCOW2_OFLAG_COPIED
                                                              : entry & ~QCOW2_OFLAG_COPIED);
                                        dirty++;
                                }
                        }
                }
                if (dirty > 0) {
                        /* Never write a table that shares its cluster with
                         * anything else: that would be metadata overlap. */
                        if (!l2_writable) {
                                report(c,
                                       "ERROR: Could not write L2 table; metadata overlap check failed: L2 table at %#" PRIx64
                                       " is not its own cluster",
                                       l2_offset);
                                res->check_errors++;
                                return -EIO;
                        }
                        if (write_sync(c, c->l2buf, h->cluster_size, l2_offset, "L2 table") < 0) {
                                res->check_errors++;
                                return -EIO;
                        }
                        res->corruptions -= dirty;
                        res->corruptions_fixed += dirty;
                }
        }
        return 0;
}

/* Clears the dirty and corrupt bits once the image is known to be
 * consistent (qemu-img does so after a successful repair). */
static int mark_clean(struct check_ctx *c) {
        const struct qcow2_header *h = &c->m->h;
        uint64_t bits = QCOW2_INCOMPAT_DIRTY | QCOW2_INCOMPAT_CORRUPT;
        if (h->version < 3 || !(h->incompatible_features & bits))
                return 0;
        uint8_t buf[8];
        c->wrote = true;
        be64_store(buf, h->incompatible_features & ~bits);
        int r = image_pwrite_all(c->m->fd, buf, sizeof(buf), 72);
        if (r >= 0 && fsync(c->m->fd) < 0)
                r = negative_errno();
        if (r < 0)
                return vh_error_set(c->err, r, "%s: clearing the dirty/corrupt flags failed: %s", c->m->filename,
                                    strerror(-r));
        return 0;
}

static int load_meta(struct check_ctx *c, int fd, const char *path) {
        c->m = qcow2_meta_free(c->m);
        int r = qcow2_meta_load(fd, path, QCOW2_META_SNAPSHOTS | QCOW2_META_BITMAPS, &c->m, c->err);
        if (r < 0)
                return image_error_prefix(c->err, r, path);
        uint64_t n = DIV_ROUND_UP(c->m->file_len, c->m->h.cluster_size) + 1;
        if (n > CHECK_MAX_CLUSTERS)
                return vh_error_set(c->err, -EFBIG, "%s: the file has more than %" PRIu64 " clusters to check", path,
                                    CHECK_MAX_CLUSTERS);
        if (n > c->refs_alloc) {
                free(c->refs);
                c->refs = malloc(n * sizeof(*c->refs));
                if (!c->refs)
                        return vh_error_set(c->err, -ENOMEM, "out of memory for %" PRIu64 " refcounts", n);
                c->refs_alloc = n;
        }
        free(c->l2buf);
        c->l2buf = malloc(c->m->h.cluster_size);
        if (!c->l2buf)
                return vh_error_set(c->err, -ENOMEM, "out of memory");
        return 0;
}

/* True if a refcount block exists for host cluster 'k'. */
static bool refblock_covers(const struct qcow2_meta *m, uint64_t k) {
        uint64_t index = k >> m->refblock_bits;
        if (index >= m->reftable_entries)
                return false;
        uint64_t block = m->reftable[index] & QCOW2_REFT_OFFSET_MASK;
        return block != 0 && !(block & (m->h.cluster_size - 1));
}

/* Finds 'count' consecutive clusters that nothing references and whose
 * recorded refcount is 0, inside existing refcount blocks (c->refs must
 * hold the references), as QEMU's allocator picks the first free ones. */
static int find_free_clusters(struct check_ctx *c, uint64_t count, uint64_t *ret) {
        struct qcow2_meta *m = c->m;
        uint64_t limit = c->nb_clusters + count + ((uint64_t) 1 << m->refblock_bits);
        uint64_t run = 0;
        for (uint64_t k = 1; k < limit; k++) {
                uint64_t rc;
                bool free_ = refblock_covers(m, k) && (k >= c->nb_clusters || c->refs[k] == 0) &&
                             qcow2_meta_get_refcount(m, k, &rc) >= 0 && rc == 0;
                run = free_ ? run + 1 : 0;
                if (run == count) {
                        *ret = k + 1 - count;
                        return 0;
                }
        }
        return -ENOSPC;
}

/* Gives an incomplete version 3 entry the extra data it lacks, the
 * 24 bytes QEMU writes: vm_state_size_large (from the 32-bit field when
 * absent), disk_size (the image's size: the spec's meaning for an entry
 * that does not record it) and icount (-1: unknown). */
static int complete_entry(struct qcow2_snapshot *sn, uint64_t disk_size) {
        uint8_t *x = calloc(1, 24);
        if (!x)
                return -ENOMEM;
        memcpy(x, sn->extra, MIN(sn->extra_size, (uint32_t) 16));
        if (sn->extra_size < 8)
                be64_store(x, sn->vm_state_size32);
        if (sn->extra_size < 16)
                be64_store(x + 8, disk_size);
        be64_store(x + 16, UINT64_MAX);
        free(sn->extra);
        sn->extra = x;
        sn->extra_size = 24;
        return 0;
}

/* Writes the repaired snapshot table, in an order that leaves a
 * consistent image (a leak at worst) if it stops half-way: the table to
 * free clusters, their refcounts, the header naming it (one 12-byte write
 * within a sector), then the old table's refcounts. */
static int rewrite_snapshot_table(struct check_ctx *c) {
        struct qcow2_meta *m = c->m;
        const struct qcow2_header *h = &m->h;
        struct vh_image_check_result *res = c->res, scratch = {};

        /* The references as they are now, to know which clusters are free. */
        c->res = &scratch;
        c->quiet = true;
        int r = calculate_refcounts(c);
        c->quiet = false;
        c->res = res;
        if (r < 0)
                return r;

        for (size_t i = 0; i < m->n_snapshots; i++)
                if (m->snapshots[i].extra_size < 16 && complete_entry(&m->snapshots[i], h->size) < 0)
                        return vh_error_set(c->err, -ENOMEM, "out of memory");
        _cleanup_free_ uint8_t *buf = NULL;
        uint64_t bytes;
        r = qcow2_snapshot_table_serialize(m->snapshots, m->n_snapshots, h->cluster_size, &buf, &bytes, c->err);
        if (r < 0)
                return r;
        uint64_t at = 0, count = DIV_ROUND_UP(bytes, (uint64_t) h->cluster_size);
        _cleanup_free_ bool *dirty = calloc(MAX(m->reftable_entries, (uint64_t) 1), sizeof(bool));
        if (!dirty)
                return vh_error_set(c->err, -ENOMEM, "out of memory");
        if (count > 0) {
                r = find_free_clusters(c, count, &at);
                if (r < 0)
                        return vh_error_set(c->err, r,
                                            "%s: no room for the repaired snapshot table (%" PRIu64
                                            " clusters) within the refcount blocks",
                                            m->filename, count);
                r = write_sync(c, buf, (size_t) bytes, at << h->cluster_bits, "snapshot table");
                if (r < 0)
                        return vh_error_set(c->err, r, "%s: writing the snapshot table failed: %s", m->filename,
                                            strerror(-r));
                for (uint64_t k = at; k < at + count; k++) {
                        (void) qcow2_meta_set_refcount(m, k, 1);
                        dirty[k >> m->refblock_bits] = true;
                }
                r = sync_refblocks(c, dirty);
                if (r < 0)
                        return r;
        }

        uint8_t hdr[12];
        be32_store(hdr, (uint32_t) m->n_snapshots);
        be64_store(hdr + 4, at << h->cluster_bits);
        r = write_sync(c, hdr, sizeof(hdr), 60, "header");
        if (r < 0)
                return vh_error_set(c->err, r, "%s: writing the header failed: %s", m->filename, strerror(-r));

        /* The old table's clusters, where their refcount matches what
         * referenced them (anything else is left to the check's report). */
        memset(dirty, 0, MAX(m->reftable_entries, (uint64_t) 1) * sizeof(bool));
        uint64_t file_clusters = DIV_ROUND_UP(m->file_len, (uint64_t) h->cluster_size);
        if (h->snapshots_offset && m->snapshots_size) {
                uint64_t first = h->snapshots_offset >> h->cluster_bits;
                uint64_t last = (h->snapshots_offset + m->snapshots_size - 1) >> h->cluster_bits;
                for (uint64_t k = first; k <= last && k < file_clusters && k < c->nb_clusters; k++) {
                        uint64_t rc;
                        if (qcow2_meta_get_refcount(m, k, &rc) < 0 || rc == 0 || rc != c->refs[k])
                                continue;
                        if (qcow2_meta_set_refcount(m, k, rc - 1) >= 0)
                                dirty[k >> m->refblock_bits] = true;
                }
        }
        r = sync_refblocks(c, dirty);
        if (r < 0)
                return r;
        /* Freed clusters go back to the file system, as QEMU discards
         * them; only once the refcounts saying so are on disk. */
        if (h->snapshots_offset && m->snapshots_size) {
                uint64_t first = h->snapshots_offset >> h->cluster_bits;
                uint64_t last = (h->snapshots_offset + m->snapshots_size - 1) >> h->cluster_bits;
                for (uint64_t k = first; k <= last && k < file_clusters; k++) {
                        uint64_t rc;
                        if (qcow2_meta_get_refcount(m, k, &rc) >= 0 && rc == 0)
                                (void) fallocate(m->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                                                 (off_t) (k << h->cluster_bits), (off_t) h->cluster_size);
                }
        }
        return 0;
}

/* The snapshot table as QEMU's check judges it: a version 3 entry needs
 * 16 bytes of extra data at least (vm_state_size_large and disk_size;
 * spec, "Snapshot table entry"), and QEMU reads no more than 1 KiB of
 * extra data per entry and 64 MiB of table. Each is a corruption that
 * -r all repairs by rewriting the table; without it, the extra data or
 * table QEMU will not read fails the check, as in qemu-img. */
static int check_snapshot_table(struct check_ctx *c) {
        struct qcow2_meta *m = c->m;
        struct vh_image_check_result *res = c->res;
        bool fix = fix_errors(c);
        uint64_t found = 0, overhang = 0;

        if (m->n_snapshots < m->h.nb_snapshots) {
                if (!fix)
                        return vh_error_set(c->err, -EFBIG,
                                            "%s: the snapshot table is larger than %" PRIu64
                                            " bytes; 'check -r all' discards the snapshots past that",
                                            m->filename, QCOW2_MAX_SNAPSHOT_TABLE);
                report(c, "Discarding %" PRIu64 " overhanging snapshots (snapshot table is too big)",
                       (uint64_t) m->h.nb_snapshots - m->n_snapshots);
                overhang = m->h.nb_snapshots - m->n_snapshots;
                found += overhang;
        }
        for (size_t i = 0; i < m->n_snapshots; i++) {
                const struct qcow2_snapshot *sn = &m->snapshots[i];
                if (sn->extra_stored <= sn->extra_size)
                        continue;
                if (!fix)
                        return vh_error_set(c->err, -EFBIG,
                                            "%s: Too much extra metadata in snapshot table entry %zu (%" PRIu32
                                            " > %d bytes); 'check -r all' removes what is past the limit",
                                            m->filename, i, sn->extra_stored, QCOW2_MAX_SNAPSHOT_EXTRA);
                report(c, "Discarding too much extra metadata in snapshot table entry %zu (%" PRIu32 " > %d)", i,
                       sn->extra_stored, QCOW2_MAX_SNAPSHOT_EXTRA);
                found++;
        }
        if (m->h.version >= 3)
                for (size_t i = 0; i < m->n_snapshots; i++)
                        if (m->snapshots[i].extra_size < 16) {
                                report(c, "%s snapshot table entry %zu is incomplete", fix ? "Repairing" : "ERROR", i);
                                found++;
                        }
        res->corruptions += found;
        if (!fix || found == 0)
                return 0;
        int r;
        if (found == overhang) {
                /* Only entries to drop: the table stays where it is, with
                 * fewer entries (one write; the clusters past its new end
                 * are leaks, which the refcount pass frees), as QEMU does. */
                uint8_t nb[4];
                be32_store(nb, (uint32_t) m->n_snapshots);
                r = write_sync(c, nb, sizeof(nb), 60, "header");
                if (r < 0)
                        return vh_error_set(c->err, r, "%s: writing the header failed: %s", m->filename,
                                            strerror(-r));
        } else {
                r = rewrite_snapshot_table(c);
                if (r < 0)
                        return r;
        }
        res->corruptions -= found;
        res->corruptions_fixed += found;
        return 1;
}

/* One pass over the image, as qemu-img's qcow2 check does it. Returns
 * < 0 when the check could not be completed. */
static int check_pass(struct check_ctx *c, int fd, const char *path, unsigned fix,
                      struct vh_image_check_result *res) {
        *res = (struct vh_image_check_result) {};
        c->res = res;
        c->fix = fix;
        c->rebuild = false;
        c->highest = 0;

        int r = load_meta(c, fd, path);
        if (r < 0)
                return r;
        r = check_snapshot_table(c);
        if (r < 0)
                return r;
        if (r > 0) {
                /* Rewritten: count against the new table. */
                r = load_meta(c, fd, path);
                if (r < 0)
                        return r;
        }
        res->total_clusters = DIV_ROUND_UP(ALIGN_UP(c->m->h.size, (uint64_t) 512), c->m->h.cluster_size);

        r = calculate_refcounts(c);
        if (r < 0)
                return vh_error_set(c->err, r, "%s: the check could not be completed: %s", path, strerror(-r));

        struct vh_image_check_result pre = *res;
        r = compare_refcounts(c, 0);
        if (r < 0)
                return r;

        if (c->rebuild && fix_errors(c)) {
                struct vh_image_check_result old = *res;
                report(c, "Rebuilding refcount structure");
                r = rebuild_refcounts(c);
                if (r < 0) {
                        res->check_errors++;
                        return r;
                }
                /* Count again against the new structure. */
                struct vh_image_check_result again = {};
                c->res = &again;
                r = load_meta(c, fd, path);
                if (r < 0)
                        return r;
                c->rebuild = false;
                r = calculate_refcounts(c);
                if (r < 0)
                        return r;
                struct vh_image_check_result fresh = {};
                c->res = &fresh;
                r = compare_refcounts(c, VH_IMAGE_CHECK_REPAIR_LEAKS);
                if (r < 0)
                        return r;
                if (c->rebuild)
                        report(c, "ERROR rebuilt refcount structure is still broken");
                c->res = res;
                res->corruptions = again.corruptions;
                res->leaks = again.leaks;
                if (res->corruptions < old.corruptions)
                        res->corruptions_fixed += old.corruptions - res->corruptions;
                if (res->leaks < old.leaks)
                        res->leaks_fixed += old.leaks - res->leaks;
                res->leaks += fresh.leaks;
        } else if (fix) {
                if (c->rebuild) {
                        report(c, "ERROR need to rebuild refcount structures");
                        res->check_errors++;
                        return vh_error_set(c->err, -EIO, "%s: the refcount structure must be rebuilt: use -r all",
                                            path);
                }
                if (res->leaks || res->corruptions) {
                        *res = pre;
                        r = compare_refcounts(c, fix);
                        if (r < 0)
                                return r;
                }
        }

        r = check_oflag_copied(c);
        if (r < 0)
                return vh_error_set(c->err, r, "%s: the check could not be completed", path);
        /* c->m may have been reloaded by a rebuild: not 'h'. */
        res->image_end_offset = (c->highest + 1) << c->m->h.cluster_bits;

        if (fix && res->check_errors == 0 && res->corruptions == 0) {
                r = mark_clean(c);
                if (r < 0)
                        return r;
        }
        return 0;
}

int vh_image_check(const char *path, const struct vh_image_check_options *opts, struct vh_image_check_result *ret,
                   struct vh_error *err) {
        struct vh_image_check_options defaults = { .format = VH_IMAGE_FORMAT_PROBE };
        if (!opts)
                opts = &defaults;
        if (isempty(path))
                return vh_error_set(err, -EINVAL, "no image file name given");

        enum vh_image_format format = opts->format;
        if (format == VH_IMAGE_FORMAT_PROBE) {
                int r = vh_image_probe(path, &format, err);
                if (r < 0)
                        return r;
        }
        if (format != VH_IMAGE_FORMAT_QCOW2)
                return vh_error_set(err, -EOPNOTSUPP, "This image format does not support checks");

        bool rw = opts->repair != 0;
        _cleanup_close_ int fd = open(path, (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
        if (fd < 0)
                return vh_error_set(err, negative_errno(), "%s: cannot open: %m", path);
        struct stat st;
        if (fstat(fd, &st) < 0)
                return vh_error_set(err, negative_errno(), "%s: cannot stat: %m", path);
        if (!S_ISREG(st.st_mode))
                return vh_error_set(err, -EINVAL, "%s: not a regular file", path);
        /* A repair must not race a VM writing the image; a plain check
         * takes the read lock like qemu-img, or none with -U. */
        if (rw || !opts->force_share) {
                int r = image_lock(fd, rw ? IMAGE_LOCK_WRITE : IMAGE_LOCK_READ, path, err);
                if (r < 0)
                        return r;
        }

        struct check_ctx c = { .opts = opts, .err = err };
        struct vh_image_check_result res = {};
        int r = check_pass(&c, fd, path, opts->repair, &res);
        if (r >= 0 && (res.corruptions_fixed || res.leaks_fixed || c.wrote)) {
                /* Check the repaired image again; report that, with the
                 * number of repairs. (qemu-img checks again only when it
                 * counted a repair; a rebuild of a badly broken refcount
                 * table can change the file without fixing a counted
                 * problem, and the result must describe the file.) */
                uint64_t cf = res.corruptions_fixed, lf = res.leaks_fixed;
                if (opts->repaired && (cf || lf))
                        opts->repaired(lf, cf, opts->userdata);
                r = check_pass(&c, fd, path, 0, &res);
                res.corruptions_fixed = cf;
                res.leaks_fixed = lf;
        }
        qcow2_meta_free(c.m);
        free(c.refs);
        free(c.l2buf);
        if (r < 0)
                return r;
        *ret = res;
        return 0;
}

int vh_image_check_format(const char *filename, const struct vh_image_check_result *r,
                          enum vh_image_info_output output, char **ret_text, struct vh_error *err) {
        if (output == VH_IMAGE_INFO_JSON) {
                /* qemu-img prints its keys in the order of its dictionary's
                 * hash buckets; the same order here keeps the text equal,
                 * not only the JSON. */
                struct json_writer w;
                json_writer_init(&w, true);
                json_object_begin(&w);
                if (r->image_end_offset)
                        json_kv_uint(&w, "image-end-offset", r->image_end_offset);
                if (r->compressed_clusters)
                        json_kv_uint(&w, "compressed-clusters", r->compressed_clusters);
                if (r->total_clusters)
                        json_kv_uint(&w, "total-clusters", r->total_clusters);
                if (r->corruptions)
                        json_kv_uint(&w, "corruptions", r->corruptions);
                if (r->corruptions_fixed)
                        json_kv_uint(&w, "corruptions-fixed", r->corruptions_fixed);
                json_kv_uint(&w, "check-errors", r->check_errors);
                if (r->leaks)
                        json_kv_uint(&w, "leaks", r->leaks);
                if (r->leaks_fixed)
                        json_kv_uint(&w, "leaks-fixed", r->leaks_fixed);
                if (r->allocated_clusters)
                        json_kv_uint(&w, "allocated-clusters", r->allocated_clusters);
                json_kv_string(&w, "filename", filename);
                json_kv_string(&w, "format", "qcow2");
                if (r->fragmented_clusters)
                        json_kv_uint(&w, "fragmented-clusters", r->fragmented_clusters);
                json_object_end(&w);
                int e = 0;
                _cleanup_free_ char *text = json_writer_finish(&w, &e);
                if (!text)
                        return vh_error_set(err, e, "cannot format the check result");
                /* qemu-img indents by four spaces; the object is flat, and
                 * escaped strings hold no raw newline, so every "\n  " is
                 * an indentation. */
                size_t n = 0;
                for (const char *p = text; *p; p++)
                        n += *p == '\n';
                char *out = malloc(strlen(text) + 2 * n + 1), *o = out;
                if (!out)
                        return vh_error_set(err, -ENOMEM, "out of memory");
                for (const char *p = text; *p; p++) {
                        *o++ = *p;
                        if (*p == '\n' && p[1] == ' ' && p[2] == ' ') {
                                *o++ = ' ';
                                *o++ = ' ';
                        }
                }
                *o = '\0';
                *ret_text = out;
                return 0;
        }

        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f)
                return vh_error_set(err, -ENOMEM, "out of memory");
        if (!r->corruptions && !r->leaks && !r->check_errors)
                fprintf(f, "No errors were found on the image.\n");
        else {
                if (r->corruptions)
                        fprintf(f,
                                "\n%" PRIu64 " errors were found on the image.\n"
                                "Data may be corrupted, or further writes to the image may corrupt it.\n",
                                r->corruptions);
                if (r->leaks)
                        fprintf(f,
                                "\n%" PRIu64 " leaked clusters were found on the image.\n"
                                "This means waste of disk space, but no harm to data.\n",
                                r->leaks);
                if (r->check_errors)
                        fprintf(f, "\n%" PRIu64 " internal errors have occurred during the check.\n", r->check_errors);
        }
        if (r->total_clusters && r->allocated_clusters)
                fprintf(f, "%" PRIu64 "/%" PRIu64 " = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
                        r->allocated_clusters, r->total_clusters,
                        (double) r->allocated_clusters * 100.0 / (double) r->total_clusters,
                        (double) r->fragmented_clusters * 100.0 / (double) r->allocated_clusters,
                        (double) r->compressed_clusters * 100.0 / (double) r->allocated_clusters);
        if (r->image_end_offset)
                fprintf(f, "Image end offset: %" PRIu64 "\n", r->image_end_offset);
        if (fclose(f) != 0) {
                free(buf);
                return vh_error_set(err, -ENOMEM, "out of memory");
        }
        *ret_text = buf;
        return 0;
}
