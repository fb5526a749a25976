/* image/qcow2-alloc.c: writing qcow2 images in place: cluster allocation
 * with refcounts, copy-on-write, zero writes, discard, and the order in
 * which metadata reaches the disk.
 *
 * Crash safety rests on one rule: nothing on disk may point at something
 * that is not on disk yet, and nothing may be freed while something on
 * disk still points at it. Writes therefore go out in this order (see
 * qcow2_flush()):
 *
 *   0. the file grows over every cluster counted (so that
 *      'qemu-img check' sees a leak left by a crash)
 *   1. guest data (new clusters, copy-on-write results)       fsync
 *   2. refcount blocks, then the refcount table entries       fsync
 *   3. L2 tables                                              fsync
 *   4. L1 entries (and the header when tables moved)          fsync
 *   5. refcount decrements of clusters no table names any more fsync
 *
 * A crash between any two steps leaves clusters that are counted but not
 * used (leaks, which 'qemu-img check -r leaks' repairs) and never a table
 * entry that points at unwritten data or at a cluster that could be handed
 * out again. Between flushes, L2 tables and refcount blocks live in write-
 * back caches (qcow2-cache.c) and decrements wait in s->pending.
 *
 * With lazy_refcounts (version 3), the dirty bit is set before the first
 * write and cleared on a clean close; the fsyncs after steps 2 and 5 are
 * then skipped, as a crash makes QEMU rebuild the refcounts anyway.
 *
 * Allocation is first fit from s->free_hint. A refcount block for a range
 * that has none is put inside that range (all of it is free then), so it
 * counts itself; the refcount table grows into new clusters at the end of
 * the file and replaces the old one through the header. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/macro.h"
#include "image/image-internal.h"
#include "image/qcow2.h"

/* Refcount blocks kept in memory (bytes; at least a few blocks). */
#define QCOW2_RB_CACHE_BYTES (UINT64_C(4) << 20)
#define QCOW2_RB_CACHE_MIN 8
#define QCOW2_RB_CACHE_MAX 64

static struct qcow2_state *st(struct vh_image *img) {
        return img->priv;
}

uint64_t qcow2_refblock_get(const uint8_t *block, uint64_t index, unsigned order) {
        switch (order) {
        case 0:
        case 1:
        case 2: {
                /* Sub-byte entries: entry 0 in the least significant bits. */
                unsigned bits = 1u << order;
                uint8_t byte = block[index * bits / 8];
                return (byte >> (index * bits % 8)) & ((1u << bits) - 1);
        }
        case 3:
                return block[index];
        case 4:
                return be16_load(block + index * 2);
        case 5:
                return be32_load(block + index * 4);
        default:
                return be64_load(block + index * 8);
        }
}

void qcow2_refblock_set(uint8_t *block, uint64_t index, unsigned order, uint64_t value) {
        switch (order) {
        case 0:
        case 1:
        case 2: {
                unsigned bits = 1u << order;
                unsigned shift = (unsigned) (index * bits % 8);
                uint8_t mask = (uint8_t) (((1u << bits) - 1) << shift);
                uint8_t *b = &block[index * bits / 8];
                *b = (uint8_t) ((*b & ~mask) | ((value << shift) & mask));
                break;
        }
        case 3:
                block[index] = (uint8_t) value;
                break;
        case 4:
                be16_store(block + index * 2, (uint16_t) value);
                break;
        case 5:
                be32_store(block + index * 4, (uint32_t) value);
                break;
        default:
                be64_store(block + index * 8, value);
                break;
        }
}

int qcow2_sync(struct vh_image *img, const char *after, struct vh_error *err) {
        if (fsync(img->fd) < 0)
                return vh_error_set(err, negative_errno(), "fsync after writing the %s failed: %m", after);
        return 0;
}

static int host_write(struct vh_image *img, const void *buf, size_t len, uint64_t offset, const char *what,
                      struct vh_error *err) {
        int r = image_pwrite_all(img->fd, buf, len, offset);
        if (r < 0)
                return vh_error_set(err, r, "writing the %s at %#" PRIx64 " failed: %s", what, offset, strerror(-r));
        if (offset + len > img->file_size)
                img->file_size = offset + len;
        return 0;
}

/* ---- header ---- */

int qcow2_header_update(struct vh_image *img, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        const struct qcow2_header *h = &s->h;
        uint8_t buf[QCOW2_V3_MIN_HEADER_LENGTH];
        size_t n = h->version == 2 ? QCOW2_V2_HEADER_LENGTH : QCOW2_V3_MIN_HEADER_LENGTH;

        /* Only the fields we change are rebuilt; the rest (and whatever
         * lies past byte 104, such as compression_type) is left alone. */
        int r = image_pread(img, buf, n, 0, err);
        if (r < 0)
                return r;
        be64_store(buf + 24, h->size);
        be32_store(buf + 36, h->l1_size);
        be64_store(buf + 40, h->l1_table_offset);
        be64_store(buf + 48, h->refcount_table_offset);
        be32_store(buf + 56, h->refcount_table_clusters);
        be32_store(buf + 60, h->nb_snapshots);
        be64_store(buf + 64, h->snapshots_offset);
        if (h->version >= 3) {
                be64_store(buf + 72, h->incompatible_features);
                be64_store(buf + 80, h->compatible_features);
                be64_store(buf + 88, h->autoclear_features);
        }
        r = host_write(img, buf, n, 0, "header", err);
        if (r < 0)
                return r;
        return qcow2_sync(img, "header", err);
}

/* Guest writes need the backing file: for copy-on-write, and to know
 * whether a cluster must be hidden by a zero flag. */
static int check_backing_open(struct vh_image *img, struct vh_error *err) {
        if (img->backing_name && !img->backing)
                return vh_error_set(err, -EINVAL,
                                    "the image was opened without its backing file, which guest writes need");
        return qcow2_prepare_write(img, err);
}

/* Before the first change to the file: autoclear bits we do not maintain
 * (bitmaps) are cleared, as the spec asks of a writer that does not know
 * them, and with lazy refcounts the dirty bit is set. */
int qcow2_prepare_write(struct vh_image *img, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        if (s->header_checked)
                return 0;
        bool update = false;
        if (s->h.version >= 3 && s->h.autoclear_features) {
                s->h.autoclear_features = 0;
                update = true;
        }
        if (s->h.version >= 3 && (s->h.compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS) &&
            !(s->h.incompatible_features & QCOW2_INCOMPAT_DIRTY)) {
                s->h.incompatible_features |= QCOW2_INCOMPAT_DIRTY;
                s->marked_dirty = true;
                update = true;
        }
        if (update) {
                int r = qcow2_header_update(img, err);
                if (r < 0)
                        return r;
        }
        s->header_checked = true;
        return 0;
}

static bool lazy(const struct qcow2_state *s) {
        return s->marked_dirty;
}

/* ---- refcounts ---- */

static bool in_reserved(const struct qcow2_state *s, uint64_t cluster, uint64_t *ret_end) {
        for (unsigned i = 0; i < s->n_reserved; i++)
                if (cluster >= s->reserved_lo[i] && cluster < s->reserved_hi[i]) {
                        if (ret_end)
                                *ret_end = s->reserved_hi[i];
                        return true;
                }
        return false;
}

/* A free cluster must not be one of the tables the header names: that
 * would mean the refcounts are wrong, and writing there would destroy
 * the image. QEMU calls this an overlap and marks the image corrupt; we
 * stop with an error and write nothing. */
static int check_overlap(struct vh_image *img, uint64_t cluster, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        const struct qcow2_header *h = &s->h;
        uint64_t off = cluster << h->cluster_bits, cs = h->cluster_size;
        const char *what = NULL;
        if (cluster == 0)
                what = "header";
        else if (h->l1_size && off + cs > h->l1_table_offset && off < h->l1_table_offset + (uint64_t) h->l1_size * 8)
                what = "L1 table";
        else if (off + cs > h->refcount_table_offset &&
                 off < h->refcount_table_offset + ((uint64_t) h->refcount_table_clusters << h->cluster_bits))
                what = "refcount table";
        else if (h->nb_snapshots && off == h->snapshots_offset)
                what = "snapshot table";
        if (what)
                return vh_error_set(err, -EUCLEAN,
                                    "cluster %#" PRIx64 " has refcount 0 but holds the %s: the refcounts are "
                                    "corrupt; repair them with 'qemu-img check -r all'",
                                    off, what);
        return 0;
}

static void note_allocated(struct vh_image *img, uint64_t first, uint64_t n) {
        struct qcow2_state *s = st(img);
        if (first + n > s->end_cluster)
                s->end_cluster = first + n;
        /* Reads check table offsets against the file size; a table still in
         * the cache may lie past the end of the file until it is written. */
        uint64_t end = (first + n) << s->h.cluster_bits;
        if (end > img->file_size)
                img->file_size = end;
}

static int reftable_grow(struct vh_image *img, uint64_t min_entries, struct vh_error *err);

/* Makes sure cluster 'cluster' has a refcount block and returns its
 * offset. A new block goes into the range it covers (all of which is free,
 * having no block), so that it counts itself; only when that range is
 * entirely reserved does it go elsewhere. */
static int refblock_ensure(struct vh_image *img, uint64_t cluster, uint64_t *ret, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        uint64_t R = cluster / s->refblock_entries;
        int r;

        if (R >= s->reftable_entries) {
                r = reftable_grow(img, R + 1, err);
                if (r < 0)
                        return r;
        }
        if (s->reftable[R]) {
                *ret = s->reftable[R];
                return 0;
        }

        uint64_t first = R * s->refblock_entries, f = first, end;
        while (f < first + s->refblock_entries && in_reserved(s, f, &end))
                f = end;
        bool self = f < first + s->refblock_entries;
        if (self) {
                r = check_overlap(img, f, err);
                if (r < 0)
                        return r;
                note_allocated(img, f, 1);
        } else {
                uint64_t off;
                r = qcow2_alloc_contiguous(img, 1, &off, err);
                if (r < 0)
                        return r;
                f = off >> s->h.cluster_bits;
        }
        uint64_t boff = f << s->h.cluster_bits;
        uint8_t *block;
        r = qcow2_cache_get_new(img, s->rb_cache, boff, &block, err);
        if (r < 0)
                return r;
        if (self)
                qcow2_refblock_set(block, f - first, s->h.refcount_order, 1);
        s->reftable[R] = boff;
        s->reftable_dirty_lo = MIN(s->reftable_dirty_lo, R);
        s->reftable_dirty_hi = MAX(s->reftable_dirty_hi, R + 1);
        *ret = boff;
        return 0;
}

int qcow2_refcount_get(struct vh_image *img, uint64_t offset, uint64_t *ret, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        uint64_t cluster = offset >> s->h.cluster_bits;
        uint64_t R = cluster / s->refblock_entries;
        if (R >= s->reftable_entries || !s->reftable[R]) {
                *ret = 0;
                return 0;
        }
        uint8_t *block;
        int r = qcow2_cache_get(img, s->rb_cache, s->reftable[R], &block, err);
        if (r < 0)
                return r;
        *ret = qcow2_refblock_get(block, cluster % s->refblock_entries, s->h.refcount_order);
        return 0;
}

int qcow2_refcount_update(struct vh_image *img, uint64_t offset, uint64_t bytes, int delta, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        const unsigned cb = s->h.cluster_bits;
        if (bytes == 0)
                return 0;
        uint64_t first = offset >> cb, last = (offset + bytes - 1) >> cb;

        for (uint64_t c = first; c <= last; c++) {
                uint64_t boff;
                int r;
                if (delta > 0) {
                        r = refblock_ensure(img, c, &boff, err);
                        if (r < 0)
                                return r;
                } else {
                        uint64_t R = c / s->refblock_entries;
                        if (R >= s->reftable_entries || !s->reftable[R])
                                return vh_error_set(err, -EUCLEAN,
                                                    "cluster %#" PRIx64 " is freed but has no refcount: the "
                                                    "refcounts are corrupt ('qemu-img check -r all' repairs them)",
                                                    c << cb);
                        boff = s->reftable[R];
                }
                uint8_t *block;
                r = qcow2_cache_get(img, s->rb_cache, boff, &block, err);
                if (r < 0)
                        return r;
                uint64_t i = c % s->refblock_entries;
                uint64_t v = qcow2_refblock_get(block, i, s->h.refcount_order);
                if (delta > 0) {
                        if (v >= s->refcount_max)
                                return vh_error_set(err, -ERANGE,
                                                    "refcount of cluster %#" PRIx64 " would exceed %" PRIu64
                                                    " (refcount_bits %u)",
                                                    c << cb, s->refcount_max, 1u << s->h.refcount_order);
                        v++;
                } else {
                        if (v == 0)
                                return vh_error_set(err, -EUCLEAN,
                                                    "cluster %#" PRIx64 " is freed twice: the refcounts are corrupt "
                                                    "('qemu-img check -r all' repairs them)",
                                                    c << cb);
                        v--;
                }
                qcow2_refblock_set(block, i, s->h.refcount_order, v);
                qcow2_cache_mark_dirty(s->rb_cache, block);
                if (delta > 0)
                        note_allocated(img, c, 1);
                else if (v == 0) {
                        if (c < s->free_hint)
                                s->free_hint = c;
                        /* A freed L2 table must not be served from the
                         * cache once its cluster holds something else. */
                        qcow2_cache_drop(s->l2_cache, c << cb);
                }
        }
        return 0;
}

/* First fit from the hint: up to 'max' free clusters in a row (within one
 * refcount block), with refcount 1. */
static int alloc_run(struct vh_image *img, uint64_t max, uint64_t *ret_offset, uint64_t *ret_n,
                     struct vh_error *err) {
        struct qcow2_state *s = st(img);
        const uint64_t E = s->refblock_entries;
        const unsigned order = s->h.refcount_order;
        uint64_t c = s->free_hint;
        int r;

        for (;;) {
                uint64_t end;
                if (in_reserved(s, c, &end)) {
                        c = end;
                        continue;
                }
                uint64_t R = c / E;
                if (R >= s->reftable_entries || !s->reftable[R]) {
                        /* A range without a block is all free; its block
                         * goes to its first cluster we may use, possibly c
                         * itself, so look at c again. */
                        uint64_t boff;
                        r = refblock_ensure(img, c, &boff, err);
                        if (r < 0)
                                return r;
                        continue;
                }
                uint8_t *block;
                r = qcow2_cache_get(img, s->rb_cache, s->reftable[R], &block, err);
                if (r < 0)
                        return r;
                uint64_t i = c % E;
                while (i < E && qcow2_refblock_get(block, i, order) != 0)
                        i++;
                if (i == E) {
                        c = (R + 1) * E;
                        continue;
                }
                c = R * E + i;
                if (in_reserved(s, c, NULL))
                        continue;
                r = check_overlap(img, c, err);
                if (r < 0)
                        return r;
                uint64_t n = 1;
                while (n < max && i + n < E && qcow2_refblock_get(block, i + n, order) == 0 &&
                       !in_reserved(s, c + n, NULL) && check_overlap(img, c + n, NULL) == 0)
                        n++;
                for (uint64_t k = 0; k < n; k++)
                        qcow2_refblock_set(block, i + k, order, 1);
                qcow2_cache_mark_dirty(s->rb_cache, block);
                /* Everything from the hint up to here was in use (or is
                 * reserved, which will be). */
                s->free_hint = c + n;
                note_allocated(img, c, n);
                *ret_offset = c << s->h.cluster_bits;
                *ret_n = n;
                return 0;
        }
}

int qcow2_alloc_contiguous(struct vh_image *img, uint64_t n, uint64_t *ret_offset, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        int r;
        if (n == 1) {
                uint64_t got;
                return alloc_run(img, 1, ret_offset, &got, err);
        }
        if (s->n_reserved >= QCOW2_MAX_RESERVED)
                return vh_error_set(err, -EIO, "internal error: allocations nested too deep");

        /* Past end_cluster everything is free. The refcount table must
         * reach that far (with room for the blocks themselves) before the
         * range is reserved, so that growing it does not nest. */
        uint64_t c;
        for (;;) {
                c = s->end_cluster;
                uint64_t last = c + n + 2 * (n / s->refblock_entries + 2);
                if (last / s->refblock_entries >= s->reftable_entries) {
                        r = reftable_grow(img, last / s->refblock_entries + 1, err);
                        if (r < 0)
                                return r;
                        continue;
                }
                /* A file may end before clusters its refcounts count (a
                 * truncated tail): skip past any that are taken. */
                uint64_t busy = UINT64_MAX;
                for (uint64_t k = 0; k < n && busy == UINT64_MAX; k++) {
                        uint64_t rc;
                        r = qcow2_refcount_get(img, (c + k) << s->h.cluster_bits, &rc, err);
                        if (r < 0)
                                return r;
                        if (rc)
                                busy = c + k;
                }
                if (busy == UINT64_MAX)
                        break;
                s->end_cluster = busy + 1;
        }
        unsigned slot = s->n_reserved++;
        s->reserved_lo[slot] = c;
        s->reserved_hi[slot] = c + n;
        note_allocated(img, c, n);
        r = qcow2_refcount_update(img, c << s->h.cluster_bits, n << s->h.cluster_bits, +1, err);
        s->n_reserved--;
        if (r < 0)
                return r;
        *ret_offset = c << s->h.cluster_bits;
        return 0;
}

/* The refcount table is contiguous and must grow as a whole: a new, larger
 * copy goes to fresh clusters, and the header switches to it in the next
 * flush (after its refcount blocks and the copy itself are on disk). */
static int reftable_grow(struct vh_image *img, uint64_t min_entries, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        const uint64_t cs = s->h.cluster_size;
        const uint64_t per_cluster = cs / 8;
        int r;

        uint64_t entries = MAX(min_entries, s->reftable_entries * 2);
        /* Also cover the new table and the blocks that will count it. */
        for (int i = 0; i < 3; i++) {
                uint64_t clusters = DIV_ROUND_UP(entries, per_cluster);
                uint64_t need = DIV_ROUND_UP(s->end_cluster + clusters + 2 * (clusters / s->refblock_entries + 2),
                                             s->refblock_entries) + 1;
                entries = MAX(entries, need);
        }
        entries = ALIGN_UP(entries, per_cluster);
        uint64_t clusters = entries / per_cluster;
        if (clusters * cs > QCOW2_MAX_REFTABLE_BYTES)
                return vh_error_set(err, -EFBIG, "the refcount table would exceed %" PRIu64 " bytes",
                                    QCOW2_MAX_REFTABLE_BYTES);

        uint64_t *t = realloc(s->reftable, entries * sizeof(uint64_t));
        if (!t)
                return vh_error_set(err, -ENOMEM, "out of memory for the refcount table");
        memset(t + s->reftable_entries, 0, (entries - s->reftable_entries) * sizeof(uint64_t));
        s->reftable = t;
        s->reftable_entries = entries;

        /* A table grown earlier but not yet named by the header is not
         * referenced from disk: it can go at once. */
        uint64_t prev_offset = s->reftable_offset, prev_clusters = s->reftable_clusters;
        bool prev_pending = s->reftable_moved;

        uint64_t off;
        r = qcow2_alloc_contiguous(img, clusters, &off, err);
        if (r < 0)
                return r;
        if (prev_pending) {
                r = qcow2_refcount_update(img, prev_offset, prev_clusters * cs, -1, err);
                if (r < 0)
                        return r;
        } else {
                s->old_reftable_offset = prev_offset;
                s->old_reftable_clusters = (uint32_t) prev_clusters;
        }
        s->reftable_offset = off;
        s->reftable_clusters = (uint32_t) clusters;
        s->reftable_moved = true;
        return 0;
}

int qcow2_free_later(struct vh_image *img, uint64_t offset, uint64_t bytes, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        if (bytes == 0)
                return 0;
        if (s->n_pending == s->pending_cap) {
                size_t cap = MAX(s->pending_cap * 2, (size_t) 64);
                struct qcow2_pending_free *p = realloc(s->pending, cap * sizeof(*p));
                if (!p)
                        return vh_error_set(err, -ENOMEM, "out of memory");
                s->pending = p;
                s->pending_cap = cap;
        }
        s->pending[s->n_pending++] = (struct qcow2_pending_free) { .offset = offset, .bytes = bytes };
        return 0;
}

int qcow2_free_l2_entry_later(struct vh_image *img, uint64_t entry, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        if (entry & QCOW2_OFLAG_COMPRESSED) {
                uint64_t off, bytes;
                qcow2_compressed_range(&s->h, entry, &off, &bytes);
                s->dbuf_valid = false;
                return qcow2_free_later(img, off, bytes, err);
        }
        uint64_t host = entry & QCOW2_L2E_OFFSET_MASK;
        return host ? qcow2_free_later(img, host, s->h.cluster_size, err) : 0;
}

/* ---- flush: the ordering described at the top of this file ---- */

int qcow2_l1_write(struct vh_image *img, uint64_t lo, uint64_t hi, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        if (lo >= hi)
                return 0;
        /* Whole sectors, within the clusters of the table. */
        uint64_t table_bytes = ALIGN_UP((uint64_t) s->h.l1_size * 8, (uint64_t) s->h.cluster_size);
        uint64_t from = lo * 8 / 512 * 512;
        uint64_t to = MIN(ALIGN_UP(hi * 8, (uint64_t) 512), table_bytes);
        _cleanup_free_ uint8_t *buf = calloc(1, (size_t) (to - from));
        if (!buf)
                return vh_error_set(err, -ENOMEM, "out of memory");
        for (uint64_t i = from / 8; i < to / 8 && i < s->h.l1_size; i++)
                be64_store(buf + (i * 8 - from), s->l1[i]);
        return host_write(img, buf, (size_t) (to - from), s->h.l1_table_offset + from, "L1 table", err);
}

static int reftable_write(struct vh_image *img, uint64_t lo, uint64_t hi, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        uint64_t table_bytes = (uint64_t) s->reftable_clusters << s->h.cluster_bits;
        uint64_t from = lo * 8 / 512 * 512;
        uint64_t to = MIN(ALIGN_UP(hi * 8, (uint64_t) 512), table_bytes);
        if (from >= to)
                return 0;
        _cleanup_free_ uint8_t *buf = calloc(1, (size_t) (to - from));
        if (!buf)
                return vh_error_set(err, -ENOMEM, "out of memory");
        for (uint64_t i = from / 8; i < to / 8 && i < s->reftable_entries; i++)
                be64_store(buf + (i * 8 - from), s->reftable[i]);
        return host_write(img, buf, (size_t) (to - from), s->reftable_offset + from, "refcount table", err);
}

static int flush_refcounts(struct vh_image *img, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        int r = qcow2_cache_write_dirty(img, s->rb_cache, "refcount block", err);
        if (r < 0)
                return r;
        if (s->reftable_moved) {
                /* The blocks first, then the new table that names them, then
                 * the header that names the table. */
                if (!lazy(s)) {
                        r = qcow2_sync(img, "refcount blocks", err);
                        if (r < 0)
                                return r;
                }
                r = reftable_write(img, 0, s->reftable_entries, err);
                if (r < 0)
                        return r;
                r = qcow2_sync(img, "refcount table", err);
                if (r < 0)
                        return r;
                s->h.refcount_table_offset = s->reftable_offset;
                s->h.refcount_table_clusters = s->reftable_clusters;
                r = qcow2_header_update(img, err);
                if (r < 0)
                        return r;
                s->reftable_moved = false;
                s->reftable_dirty_lo = UINT64_MAX;
                s->reftable_dirty_hi = 0;
                /* The old table is named by nothing now. */
                r = qcow2_free_later(img, s->old_reftable_offset,
                                     (uint64_t) s->old_reftable_clusters << s->h.cluster_bits, err);
                if (r < 0)
                        return r;
                s->old_reftable_clusters = 0;
        } else if (s->reftable_dirty_lo < s->reftable_dirty_hi) {
                if (!lazy(s)) {
                        r = qcow2_sync(img, "refcount blocks", err);
                        if (r < 0)
                                return r;
                }
                r = reftable_write(img, s->reftable_dirty_lo, s->reftable_dirty_hi, err);
                if (r < 0)
                        return r;
                s->reftable_dirty_lo = UINT64_MAX;
                s->reftable_dirty_hi = 0;
        }
        return 0;
}

/* Every cluster the refcounts count must lie inside the file before they
 * reach the disk. A table is counted in step 2 and written only in step 3,
 * and 'qemu-img check' looks at no cluster past the end of the file: after
 * a crash in between, with the table the last cluster, it would neither
 * see nor repair that leak ('-r leaks'), which would come to light once the
 * file grows past it. The file grows before step 1's fsync, which makes the
 * new size durable before any refcount that needs it. */
static int cover_counted_clusters(struct vh_image *img, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        uint64_t end = s->end_cluster << s->h.cluster_bits;
        struct stat sb;
        if (fstat(img->fd, &sb) < 0)
                return vh_error_set(err, negative_errno(), "%s: fstat failed: %m", img->filename);
        if (!S_ISREG(sb.st_mode) || (uint64_t) sb.st_size >= end)
                return 0;
        if (ftruncate(img->fd, (off_t) end) < 0)
                return vh_error_set(err, negative_errno(), "%s: growing the file to %" PRIu64 " bytes failed: %m",
                                    img->filename, end);
        s->data_unsynced = true;
        return 0;
}

static int do_flush(struct vh_image *img, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        int r;
        bool meta = qcow2_cache_is_dirty(s->rb_cache) || qcow2_cache_is_dirty(s->l2_cache) || s->reftable_moved ||
                    s->reftable_dirty_lo < s->reftable_dirty_hi || s->l1_dirty_lo < s->l1_dirty_hi ||
                    s->n_pending > 0;

        if (meta) {
                r = cover_counted_clusters(img, err);
                if (r < 0)
                        return r;
        }

        /* 1. Guest data must be on disk before any table points at it. */
        if (s->data_unsynced) {
                r = qcow2_sync(img, "guest data", err);
                if (r < 0)
                        return r;
                s->data_unsynced = false;
        }
        if (!meta)
                return 0;

        /* 2. Refcounts before the tables that use the clusters they count:
         * a crash after this step leaks, it never double-allocates. */
        r = flush_refcounts(img, err);
        if (r < 0)
                return r;
        if (!lazy(s)) {
                r = qcow2_sync(img, "refcounts", err);
                if (r < 0)
                        return r;
        }

        /* 3. L2 tables, now pointing at data and tables that are on disk
         * and counted. */
        if (qcow2_cache_is_dirty(s->l2_cache)) {
                r = qcow2_cache_write_dirty(img, s->l2_cache, "L2 table", err);
                if (r < 0)
                        return r;
                r = qcow2_sync(img, "L2 tables", err);
                if (r < 0)
                        return r;
        }

        /* 4. L1 entries, which make new L2 tables reachable. */
        if (s->l1_dirty_lo < s->l1_dirty_hi) {
                r = qcow2_l1_write(img, s->l1_dirty_lo, s->l1_dirty_hi, err);
                if (r < 0)
                        return r;
                s->l1_dirty_lo = UINT64_MAX;
                s->l1_dirty_hi = 0;
                r = qcow2_sync(img, "L1 table", err);
                if (r < 0)
                        return r;
        }

        /* 5. Only now that no table on disk names them may the clusters
         * replaced above lose their references; a crash before this point
         * leaks them. */
        while (s->n_pending > 0) {
                struct qcow2_pending_free f = s->pending[--s->n_pending];
                r = qcow2_refcount_update(img, f.offset, f.bytes, -1, err);
                if (r < 0)
                        return r;
        }
        if (qcow2_cache_is_dirty(s->rb_cache)) {
                r = qcow2_cache_write_dirty(img, s->rb_cache, "refcount block", err);
                if (r < 0)
                        return r;
                if (!lazy(s)) {
                        r = qcow2_sync(img, "freed refcounts", err);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

int qcow2_flush(struct vh_image *img, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        if (!s->rw || s->flushing)
                return 0;
        s->flushing = true;
        int r = do_flush(img, err);
        s->flushing = false;
        return r;
}

/* The caches call this when a dirty table must make room. Outside a flush
 * that is a whole ordered flush; inside one (step 5 touching more blocks
 * than the cache holds) refcount blocks may go out one by one, because the
 * tables that stopped naming the freed clusters are already on disk. */
static int evict_dirty(struct vh_image *img, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        if (s->flushing)
                return qcow2_cache_write_one(img, s->rb_cache, "refcount block", err);
        return qcow2_flush(img, err);
}

/* ---- open and close ---- */

int qcow2_rw_open(struct vh_image *img, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        const struct qcow2_header *h = &s->h;
        const uint64_t cs = h->cluster_size;

        if (h->incompatible_features & QCOW2_INCOMPAT_CORRUPT)
                return vh_error_set(err, -EROFS,
                                    "image is marked corrupt; it can only be opened read-only "
                                    "(repair it with 'qemu-img check -r all')");
        if (h->incompatible_features & QCOW2_INCOMPAT_DIRTY)
                return vh_error_set(err, -EROFS,
                                    "image is marked dirty (lazy refcounts) and needs a refcount repair "
                                    "before writing ('qemu-img check -r all')");
        if (h->incompatible_features & QCOW2_INCOMPAT_EXTL2)
                return vh_error_set(err, -EOPNOTSUPP,
                                    "writing images with extended L2 entries (subclusters) is not supported; "
                                    "convert the image to one without them first");

        s->refblock_entries = (cs * 8) >> h->refcount_order;
        s->refcount_max = h->refcount_order == 6 ? UINT64_MAX : (UINT64_C(1) << (1u << h->refcount_order)) - 1;
        s->reftable_offset = h->refcount_table_offset;
        s->reftable_clusters = h->refcount_table_clusters;
        s->reftable_entries = ((uint64_t) h->refcount_table_clusters * cs) / 8;
        s->reftable = calloc(s->reftable_entries, sizeof(uint64_t));
        if (!s->reftable)
                return vh_error_set(err, -ENOMEM, "out of memory for the refcount table");
        int r = image_pread(img, s->reftable, (size_t) (s->reftable_entries * 8), h->refcount_table_offset, err);
        if (r < 0)
                return r;
        for (uint64_t i = 0; i < s->reftable_entries; i++) {
                uint64_t e = be64_load((const uint8_t *) &s->reftable[i]) & QCOW2_REFT_OFFSET_MASK;
                if (e && ((e & (cs - 1)) || image_past_eof(img, e, cs)))
                        return vh_error_set(err, -EINVAL,
                                            "refcount table entry %" PRIu64 ": block offset %#" PRIx64
                                            " is not aligned or past the end of the file",
                                            i, e);
                s->reftable[i] = e;
        }
        s->reftable_dirty_lo = s->l1_dirty_lo = UINT64_MAX;

        size_t n_rb = (size_t) (QCOW2_RB_CACHE_BYTES / cs);
        n_rb = MIN(MAX(n_rb, (size_t) QCOW2_RB_CACHE_MIN), (size_t) QCOW2_RB_CACHE_MAX);
        s->rb_cache = qcow2_cache_new(n_rb, h->cluster_size, evict_dirty);
        /* The reader made its L2 cache without write-back; this one knows
         * how to evict dirty tables. */
        struct qcow2_cache *l2 = qcow2_cache_new(n_rb * 2, h->cluster_size, evict_dirty);
        s->cow_buf = malloc(cs);
        s->zero_buf = calloc(1, cs);
        if (!s->rb_cache || !l2 || !s->cow_buf || !s->zero_buf) {
                qcow2_cache_free(l2);
                return vh_error_set(err, -ENOMEM, "out of memory");
        }
        qcow2_cache_free(s->l2_cache);
        s->l2_cache = l2;

        s->end_cluster = DIV_ROUND_UP(img->file_size, cs);
        s->free_hint = 0;
        s->rw = true;
        return 0;
}

void qcow2_rw_close(struct vh_image *img) {
        struct qcow2_state *s = st(img);
        if (!s->rw)
                return;
        int r = qcow2_flush(img, NULL);
        if (r >= 0 && s->marked_dirty) {
                /* Everything, refcounts included, is on disk: the image is
                 * clean again. */
                s->h.incompatible_features &= ~QCOW2_INCOMPAT_DIRTY;
                if (qcow2_header_update(img, NULL) >= 0)
                        s->marked_dirty = false;
        }
        s->rw = false;
        qcow2_cache_free(s->rb_cache);
        s->rb_cache = NULL;
        free(s->reftable);
        s->reftable = NULL;
        free(s->pending);
        s->pending = NULL;
        s->n_pending = s->pending_cap = 0;
        free(s->cow_buf);
        free(s->zero_buf);
        s->cow_buf = s->zero_buf = NULL;
}

/* ---- the write path ---- */

static bool entry_in_place(uint64_t entry) {
        /* A standard data cluster with refcount exactly one: overwritten
         * where it is. */
        return !(entry & (QCOW2_OFLAG_COMPRESSED | QCOW2_OFLAG_ZERO)) && (entry & QCOW2_OFLAG_COPIED) &&
               (entry & QCOW2_L2E_OFFSET_MASK);
}

static int check_data_offset(struct vh_image *img, uint64_t entry, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        uint64_t host = entry & QCOW2_L2E_OFFSET_MASK;
        if (host & (s->h.cluster_size - 1))
                return vh_error_set(err, -EINVAL, "data cluster offset %#" PRIx64 " is not aligned", host);
        return 0;
}

/* Returns the L2 table that maps guest cluster 'cluster', ready to be
 * changed: allocated, and not shared with a snapshot (such a table is
 * copied first; the copy is what the active L1 names from then on). */
static int l2_writable(struct vh_image *img, uint64_t cluster, uint8_t **ret_table, uint64_t *ret_index,
                       struct vh_error *err) {
        struct qcow2_state *s = st(img);
        const struct qcow2_header *h = &s->h;
        uint64_t l1_index = cluster / h->l2_entries;
        int r;

        if (l1_index >= h->l1_size)
                return vh_error_set(err, -EINVAL, "guest cluster %" PRIu64 " is past the L1 table", cluster);
        *ret_index = cluster % h->l2_entries;
        uint64_t l1e = s->l1[l1_index];
        uint64_t old = l1e & QCOW2_L1E_OFFSET_MASK;
        if (old && (l1e & QCOW2_OFLAG_COPIED))
                return qcow2_l2_load(img, old, ret_table, err);

        uint64_t new_off;
        r = qcow2_alloc_contiguous(img, 1, &new_off, err);
        if (r < 0)
                return r;
        uint8_t *table;
        if (old) {
                /* Copy the shared table; its entries keep their refcounts
                 * (the snapshot's table and ours both count), but COPIED
                 * must say whether each is now ours alone. */
                _cleanup_free_ uint8_t *copy = malloc(h->cluster_size);
                if (!copy)
                        return vh_error_set(err, -ENOMEM, "out of memory");
                r = qcow2_l2_load(img, old, &table, err);
                if (r < 0)
                        return r;
                memcpy(copy, table, h->cluster_size);
                for (uint64_t i = 0; i < h->l2_entries; i++) {
                        uint64_t e = be64_load(copy + i * 8);
                        uint64_t host = e & QCOW2_L2E_OFFSET_MASK;
                        if ((e & QCOW2_OFLAG_COMPRESSED) || !host)
                                continue;
                        uint64_t rc;
                        r = qcow2_refcount_get(img, host, &rc, err);
                        if (r < 0)
                                return r;
                        e = rc == 1 ? e | QCOW2_OFLAG_COPIED : e & ~QCOW2_OFLAG_COPIED;
                        be64_store(copy + i * 8, e);
                }
                r = qcow2_cache_get_new(img, s->l2_cache, new_off, &table, err);
                if (r < 0)
                        return r;
                memcpy(table, copy, h->cluster_size);
                r = qcow2_free_later(img, old, h->cluster_size, err);
                if (r < 0)
                        return r;
        } else {
                r = qcow2_cache_get_new(img, s->l2_cache, new_off, &table, err);
                if (r < 0)
                        return r;
        }
        s->l1[l1_index] = new_off | QCOW2_OFLAG_COPIED;
        s->l1_dirty_lo = MIN(s->l1_dirty_lo, l1_index);
        s->l1_dirty_hi = MAX(s->l1_dirty_hi, l1_index + 1);
        *ret_table = table;
        return 0;
}

/* Re-reads the table pointer after calls that may have used the L2 cache
 * (the table itself stays cached: it is the most recently used). */
static int l2_again(struct vh_image *img, uint64_t cluster, uint8_t **ret_table, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        uint64_t l1e = s->l1[cluster / s->h.l2_entries];
        return qcow2_l2_load(img, l1e & QCOW2_L1E_OFFSET_MASK, ret_table, err);
}

static void l2_set(struct vh_image *img, uint8_t *table, uint64_t index, uint64_t entry) {
        be64_store(table + index * 8, entry);
        qcow2_cache_mark_dirty(st(img)->l2_cache, table);
}

/* What guest cluster 'cluster' holds now, as described by 'entry': for a
 * copy-on-write of part of it. */
static int read_old_cluster(struct vh_image *img, uint64_t cluster, uint64_t entry, uint8_t *buf,
                            struct vh_error *err) {
        struct qcow2_state *s = st(img);
        const uint64_t cs = s->h.cluster_size;
        uint64_t guest = cluster << s->h.cluster_bits;
        uint64_t len = MIN(cs, img->virtual_size - guest);
        uint64_t host = entry & QCOW2_L2E_OFFSET_MASK;
        int r;

        memset(buf + len, 0, (size_t) (cs - len));
        if (entry & QCOW2_OFLAG_COMPRESSED)
                return img->driver->read_compressed(img, guest, buf, (size_t) len, err);
        if (entry & QCOW2_OFLAG_ZERO) {
                memset(buf, 0, (size_t) len);
                return 0;
        }
        if (host) {
                r = check_data_offset(img, entry, err);
                if (r < 0)
                        return r;
                return image_pread(img, buf, (size_t) len, host, err);
        }
        return image_read_backing(img, guest, buf, (size_t) len, err);
}

/* Writes [offset, offset + len), which lies within one L2 table's range. */
static int write_in_table(struct vh_image *img, uint64_t offset, const uint8_t *buf, uint64_t len,
                          struct vh_error *err) {
        struct qcow2_state *s = st(img);
        const uint64_t cs = s->h.cluster_size;
        const unsigned cb = s->h.cluster_bits;
        uint64_t cluster = offset >> cb;
        uint8_t *table;
        uint64_t index;
        int r = l2_writable(img, cluster, &table, &index, err);
        if (r < 0)
                return r;

        while (len > 0) {
                uint64_t in_cluster = offset & (cs - 1);
                uint64_t entry = be64_load(table + index * 8);

                if (entry_in_place(entry)) {
                        /* Overwrite in place, as far as the host clusters
                         * follow each other. */
                        r = check_data_offset(img, entry, err);
                        if (r < 0)
                                return r;
                        uint64_t host = entry & QCOW2_L2E_OFFSET_MASK;
                        uint64_t n = MIN(len, cs - in_cluster), k = 1;
                        while (n < len && index + k < s->h.l2_entries) {
                                uint64_t e = be64_load(table + (index + k) * 8);
                                if (!entry_in_place(e) || (e & QCOW2_L2E_OFFSET_MASK) != host + k * cs)
                                        break;
                                n += MIN(cs, len - n);
                                k++;
                        }
                        r = host_write(img, buf, (size_t) n, host + in_cluster, "guest data", err);
                        if (r < 0)
                                return r;
                        s->data_unsynced = true;
                        buf += n;
                        offset += n;
                        len -= n;
                        index += k;
                        continue;
                }

                if (in_cluster == 0 && len >= cs) {
                        /* Whole clusters: new ones, without reading the old
                         * content. As many in a row as the write covers and
                         * the allocator gives contiguously. */
                        uint64_t want = 1;
                        while ((want + 1) * cs <= len && index + want < s->h.l2_entries &&
                               !entry_in_place(be64_load(table + (index + want) * 8)))
                                want++;
                        uint64_t host, got;
                        r = alloc_run(img, want, &host, &got, err);
                        if (r < 0)
                                return r;
                        /* Data first: the L2 entries below change only in
                         * memory, and reach the disk after an fsync. */
                        r = host_write(img, buf, (size_t) (got * cs), host, "guest data", err);
                        if (r < 0)
                                return r;
                        s->data_unsynced = true;
                        r = l2_again(img, cluster, &table, err);
                        if (r < 0)
                                return r;
                        for (uint64_t k = 0; k < got; k++) {
                                uint64_t old = be64_load(table + (index + k) * 8);
                                r = qcow2_free_l2_entry_later(img, old, err);
                                if (r < 0)
                                        return r;
                                l2_set(img, table, index + k, (host + k * cs) | QCOW2_OFLAG_COPIED);
                        }
                        buf += got * cs;
                        offset += got * cs;
                        len -= got * cs;
                        index += got;
                        continue;
                }

                /* Part of a cluster that is not ours alone (or not there):
                 * copy on write. A preallocated zero cluster of ours is
                 * reused in place. */
                uint64_t n = MIN(len, cs - in_cluster);
                r = read_old_cluster(img, offset >> cb, entry, s->cow_buf, err);
                if (r < 0)
                        return r;
                memcpy(s->cow_buf + in_cluster, buf, (size_t) n);
                uint64_t host = entry & QCOW2_L2E_OFFSET_MASK;
                bool reuse = (entry & QCOW2_OFLAG_ZERO) && (entry & QCOW2_OFLAG_COPIED) && host &&
                             !(entry & QCOW2_OFLAG_COMPRESSED);
                if (!reuse) {
                        uint64_t got;
                        r = alloc_run(img, 1, &host, &got, err);
                        if (r < 0)
                                return r;
                }
                r = host_write(img, s->cow_buf, (size_t) cs, host, "guest data", err);
                if (r < 0)
                        return r;
                s->data_unsynced = true;
                r = l2_again(img, cluster, &table, err);
                if (r < 0)
                        return r;
                if (!reuse) {
                        r = qcow2_free_l2_entry_later(img, entry, err);
                        if (r < 0)
                                return r;
                }
                l2_set(img, table, index, host | QCOW2_OFLAG_COPIED);
                buf += n;
                offset += n;
                len -= n;
                index++;
        }
        return 0;
}

/* Calls 'fn' for each piece of [offset, offset + len) that one L2 table
 * maps. */
static uint64_t table_piece(const struct qcow2_state *s, uint64_t offset, uint64_t len) {
        uint64_t span = s->h.l2_entries << s->h.cluster_bits;
        return MIN(len, span - (offset % span));
}

int qcow2_write(struct vh_image *img, uint64_t offset, const void *buf, size_t len, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        int r = check_backing_open(img, err);
        if (r < 0)
                return r;
        const uint8_t *p = buf;
        while (len > 0) {
                uint64_t n = table_piece(s, offset, len);
                r = write_in_table(img, offset, p, n, err);
                if (r < 0)
                        return r;
                p += n;
                offset += n;
                len -= (size_t) n;
        }
        return 0;
}

/* Whether guest cluster 'cluster' (entry 'entry') reads as zeros. */
static bool reads_zero(struct vh_image *img, uint64_t cluster, uint64_t entry) {
        struct qcow2_state *s = st(img);
        if (entry & QCOW2_OFLAG_COMPRESSED)
                return false;
        if (entry & QCOW2_OFLAG_ZERO)
                return true;
        if (entry & QCOW2_L2E_OFFSET_MASK)
                return false;
        return !img->backing || (cluster << s->h.cluster_bits) >= img->backing->virtual_size;
}

static int entry_of(struct vh_image *img, uint64_t cluster, uint64_t *ret, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        uint64_t l1e = s->l1[cluster / s->h.l2_entries] & QCOW2_L1E_OFFSET_MASK;
        if (!l1e) {
                *ret = 0;
                return 0;
        }
        uint8_t *table;
        int r = qcow2_l2_load(img, l1e, &table, err);
        if (r < 0)
                return r;
        *ret = be64_load(table + (cluster % s->h.l2_entries) * 8);
        return 0;
}

/* Zeros part of one cluster, as data (unless it reads as zeros already). */
static int zero_partial(struct vh_image *img, uint64_t offset, uint64_t len, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        uint64_t entry;
        int r = entry_of(img, offset >> s->h.cluster_bits, &entry, err);
        if (r < 0)
                return r;
        if (reads_zero(img, offset >> s->h.cluster_bits, entry))
                return 0;
        return qcow2_write(img, offset, s->zero_buf, (size_t) len, err);
}

enum zero_mode {
        ZERO_FLAG,    /* write zeroes, v3: the zero flag */
        ZERO_DEALLOC, /* write zeroes, v2 without backing data: unallocated reads as zeros */
        DISCARD,      /* QEMU's discard: zero flag on v3, deallocation on v2 */
};

/* Whole clusters [offset, offset + len) within one L2 table. */
static int zero_clusters_in_table(struct vh_image *img, uint64_t offset, uint64_t len, enum zero_mode mode,
                                  struct vh_error *err) {
        struct qcow2_state *s = st(img);
        const unsigned cb = s->h.cluster_bits;
        uint64_t cluster = offset >> cb, n = len >> cb;
        bool backing = img->backing != NULL;
        int r;

        /* Without an L2 table nothing here is allocated: skip the table
         * when that already reads the way the operation wants. */
        uint64_t l1e = s->l1[cluster / s->h.l2_entries];
        if (!(l1e & QCOW2_L1E_OFFSET_MASK)) {
                bool skip;
                if (mode == ZERO_FLAG)
                        skip = !backing || offset >= img->backing->virtual_size;
                else if (mode == DISCARD)
                        skip = !backing || s->h.version < 3;
                else
                        skip = true;
                if (skip)
                        return 0;
        }

        uint8_t *table;
        uint64_t index;
        r = l2_writable(img, cluster, &table, &index, err);
        if (r < 0)
                return r;
        for (uint64_t k = 0; k < n; k++, index++) {
                uint64_t old = be64_load(table + index * 8);
                bool allocated = (old & QCOW2_OFLAG_COMPRESSED) || (old & QCOW2_L2E_OFFSET_MASK);
                uint64_t new_entry;
                switch (mode) {
                case ZERO_FLAG:
                        if (old == QCOW2_OFLAG_ZERO || (!allocated && reads_zero(img, cluster + k, old)))
                                continue;
                        new_entry = QCOW2_OFLAG_ZERO;
                        break;
                case ZERO_DEALLOC:
                        if (!allocated && !(old & QCOW2_OFLAG_ZERO))
                                continue;
                        new_entry = 0;
                        break;
                default: /* DISCARD */
                        if (s->h.version >= 3) {
                                if (!allocated && (!backing || old == QCOW2_OFLAG_ZERO))
                                        continue;
                                new_entry = QCOW2_OFLAG_ZERO;
                        } else {
                                if (!allocated)
                                        continue;
                                new_entry = 0;
                        }
                        break;
                }
                r = qcow2_free_l2_entry_later(img, old, err);
                if (r < 0)
                        return r;
                l2_set(img, table, index, new_entry);
        }
        return 0;
}

static int zero_clusters(struct vh_image *img, uint64_t offset, uint64_t len, enum zero_mode mode,
                         struct vh_error *err) {
        struct qcow2_state *s = st(img);
        while (len > 0) {
                uint64_t n = table_piece(s, offset, len);
                int r = zero_clusters_in_table(img, offset, n, mode, err);
                if (r < 0)
                        return r;
                offset += n;
                len -= n;
        }
        return 0;
}

int qcow2_write_zeroes(struct vh_image *img, uint64_t offset, uint64_t len, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        const uint64_t cs = s->h.cluster_size;
        int r = check_backing_open(img, err);
        if (r < 0)
                return r;

        uint64_t head = offset & (cs - 1);
        if (head) {
                uint64_t n = MIN(len, cs - head);
                r = zero_partial(img, offset, n, err);
                if (r < 0)
                        return r;
                offset += n;
                len -= n;
        }
        /* The last cluster of an image whose size is not a multiple of the
         * cluster size counts as whole when the range reaches the end. */
        uint64_t whole = offset + len == img->virtual_size ? ALIGN_UP(len, cs) : len / cs * cs;
        if (whole > 0) {
                if (s->h.version >= 3)
                        r = zero_clusters(img, offset, whole, ZERO_FLAG, err);
                else {
                        /* Version 2 has no zero flag: deallocate where that
                         * reads as zeros (no backing data there), write
                         * zeros elsewhere. */
                        uint64_t backing_end = img->backing ? img->backing->virtual_size : 0;
                        uint64_t split = MIN(offset + whole, MAX(offset, ALIGN_UP(backing_end, cs)));
                        r = 0;
                        for (uint64_t o = offset; r >= 0 && o < split; o += cs) {
                                uint64_t n = MIN(cs, split - o);
                                n = MIN(n, img->virtual_size - o);
                                r = zero_partial(img, o, n, err);
                        }
                        if (r >= 0 && split < offset + whole)
                                r = zero_clusters(img, split, offset + whole - split, ZERO_DEALLOC, err);
                }
                if (r < 0)
                        return r;
                whole = MIN(whole, len);
                offset += whole;
                len -= whole;
        }
        if (len > 0)
                return zero_partial(img, offset, len, err);
        return 0;
}

int qcow2_discard(struct vh_image *img, uint64_t offset, uint64_t len, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        const uint64_t cs = s->h.cluster_size;
        int r = check_backing_open(img, err);
        if (r < 0)
                return r;
        /* QEMU leaves a version 2 image with a backing file alone: taking a
         * cluster away would show the backing file's data, not zeros. */
        if (s->h.version < 3 && img->backing_name)
                return 0;
        /* Only whole clusters are discarded; the partial ones at either
         * end keep their data, as in QEMU. */
        uint64_t start = ALIGN_UP(offset, cs);
        uint64_t end = offset + len == img->virtual_size ? ALIGN_UP(img->virtual_size, cs)
                                                          : (offset + len) / cs * cs;
        if (start >= end)
                return 0;
        return zero_clusters(img, start, end - start, DISCARD, err);
}

/* ---- tables for resize and snapshots ---- */

int qcow2_fix_copied_flags(struct vh_image *img, struct vh_error *err) {
        struct qcow2_state *s = st(img);
        const struct qcow2_header *h = &s->h;
        int r;
        for (uint64_t i = 0; i < h->l1_size; i++) {
                uint64_t l1e = s->l1[i];
                uint64_t l2 = l1e & QCOW2_L1E_OFFSET_MASK;
                if (!l2)
                        continue;
                uint64_t rc;
                r = qcow2_refcount_get(img, l2, &rc, err);
                if (r < 0)
                        return r;
                uint64_t want = rc == 1 ? l2 | QCOW2_OFLAG_COPIED : l2;
                if (want != l1e) {
                        s->l1[i] = want;
                        s->l1_dirty_lo = MIN(s->l1_dirty_lo, i);
                        s->l1_dirty_hi = MAX(s->l1_dirty_hi, i + 1);
                }
                for (uint64_t j = 0; j < h->l2_entries; j++) {
                        uint8_t *table;
                        /* Reloaded per entry: refcount lookups do not touch
                         * the L2 cache, but this stays correct if they did. */
                        r = qcow2_l2_load(img, l2, &table, err);
                        if (r < 0)
                                return r;
                        uint64_t e = be64_load(table + j * 8);
                        uint64_t host = e & QCOW2_L2E_OFFSET_MASK;
                        if ((e & QCOW2_OFLAG_COMPRESSED) || !host)
                                continue;
                        r = qcow2_refcount_get(img, host, &rc, err);
                        if (r < 0)
                                return r;
                        uint64_t we = rc == 1 ? e | QCOW2_OFLAG_COPIED : e & ~QCOW2_OFLAG_COPIED;
                        if (we != e) {
                                r = qcow2_l2_load(img, l2, &table, err);
                                if (r < 0)
                                        return r;
                                l2_set(img, table, j, we);
                        }
                }
        }
        return 0;
}

int qcow2_preallocate(struct vh_image *img, uint64_t offset, uint64_t len, enum vh_image_prealloc mode,
                      struct vh_error *err) {
        struct qcow2_state *s = st(img);
        const struct qcow2_header *h = &s->h;
        const uint64_t cs = h->cluster_size;
        if (mode == VH_IMAGE_PREALLOC_OFF || len == 0)
                return 0;
        uint64_t c = offset >> h->cluster_bits, end = DIV_ROUND_UP(offset + len, cs);
        while (c < end) {
                uint8_t *table;
                uint64_t index;
                int r = l2_writable(img, c, &table, &index, err);
                if (r < 0)
                        return r;
                /* A run of clusters with nothing of their own (unallocated,
                 * or a zero flag without a host cluster), within this table. */
                uint64_t e = be64_load(table + index * 8);
                if (e != 0 && e != QCOW2_OFLAG_ZERO) {
                        c++;
                        continue;
                }
                uint64_t n = 1;
                while (c + n < end && index + n < h->l2_entries) {
                        uint64_t x = be64_load(table + (index + n) * 8);
                        if (x != 0 && x != QCOW2_OFLAG_ZERO)
                                break;
                        n++;
                }
                uint64_t host;
                r = qcow2_alloc_contiguous(img, n, &host, err);
                if (r < 0)
                        return r;
                /* The host clusters must read as zeros before any entry
                 * names them: falloc reserves them (zeros), full writes
                 * zeros, metadata makes them holes, as QEMU does (no zero
                 * flag: the mapping is what is preallocated). The file is
                 * extended over them, as 'qemu-img check' expects of
                 * allocated clusters. */
                if (mode == VH_IMAGE_PREALLOC_METADATA) {
                        struct stat sb;
                        if (fstat(img->fd, &sb) < 0)
                                return vh_error_set(err, negative_errno(), "cannot stat: %m");
                        if (host < (uint64_t) sb.st_size)
                                (void) fallocate(img->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) host,
                                                 (off_t) MIN(n * cs, (uint64_t) sb.st_size - host));
                        if (host + n * cs > (uint64_t) sb.st_size && ftruncate(img->fd, (off_t) (host + n * cs)) < 0)
                                return vh_error_set(err, negative_errno(), "cannot extend the file to %" PRIu64 " bytes: %m",
                                                    host + n * cs);
                } else {
                        r = image_preallocate(img->fd, host, n * cs, mode, err);
                        if (r < 0)
                                return r;
                }
                r = qcow2_sync(img, "preallocated clusters", err);
                if (r < 0)
                        return r;
                r = l2_again(img, c, &table, err);
                if (r < 0)
                        return r;
                for (uint64_t i = 0; i < n; i++)
                        be64_store(table + (index + i) * 8, (host + i * cs) | QCOW2_OFLAG_COPIED);
                qcow2_cache_mark_dirty(s->l2_cache, table);
                c += n;
        }
        return qcow2_flush(img, err);
}
