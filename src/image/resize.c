/* image/resize.c: 'img resize': changing the guest-visible size.
 *
 * Growing a qcow2 image may need a larger L1 table. The L1 table must be
 * contiguous, so a bigger copy goes to new clusters and the header switches
 * to it in one write: new table and its refcounts on disk, then the header,
 * then the old table is freed (a crash in between leaks the old or the new
 * table, never loses a mapping). When the backing file is longer than the
 * old size, the new area is zeroed, as QEMU does, so that the backing
 * file's data there does not suddenly show through.
 *
 * Shrinking is refused while anything is allocated past the new end (data,
 * compressed or preallocated clusters): the caller asked for --shrink, but
 * losing data silently is never what a resize means here.
 *
 * An image with persistent bitmaps is not resized at all: vmhost does not
 * keep bitmaps (its first write clears their autoclear bit, which makes
 * them invalid), and qemu-img's resize keeps them, so a resize here would
 * throw away what the user expects to stay. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/macro.h"
#include "image/image-internal.h"
#include "image/qcow2.h"

/* Entry of guest cluster 'cluster' (0 when its table is unallocated). */
static int entry_at(struct vh_image *img, uint64_t cluster, uint64_t *ret, struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        uint64_t l1_index = cluster / s->h.l2_entries;
        uint64_t l2 = l1_index < s->h.l1_size ? s->l1[l1_index] & QCOW2_L1E_OFFSET_MASK : 0;
        if (!l2) {
                *ret = 0;
                return 0;
        }
        uint8_t *table;
        int r = qcow2_l2_load(img, l2, &table, err);
        if (r < 0)
                return r;
        *ret = be64_load(table + (cluster % s->h.l2_entries) * 8);
        return 0;
}

/* The last step of a resize: the header gets the new size, once every
 * table it depends on is on disk. */
static int set_size(struct vh_image *img, uint64_t new_size, struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        s->h.size = new_size;
        int r = qcow2_header_update(img, err);
        if (r < 0)
                return r;
        img->virtual_size = new_size;
        return 0;
}

static int qcow2_shrink(struct vh_image *img, uint64_t new_size, struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        const struct qcow2_header *h = &s->h;
        const unsigned cb = h->cluster_bits;
        uint64_t first = ALIGN_UP(new_size, (uint64_t) h->cluster_size) >> cb;
        uint64_t end = DIV_ROUND_UP(h->size, (uint64_t) h->cluster_size);
        int r;

        /* Data past the new end is discarded first, as qemu-img does on
         * an explicit shrink: the clusters go through the write path's
         * discard (its ordering: L2 entries, then refcounts), so a crash
         * half-way leaves a consistent image of the old size whose tail
         * reads as zeros, never one that lost anything before the new
         * end. Only a version 2 image with a backing file keeps its data
         * there (a discard would show the backing file); it is refused. */
        bool discarded = false;
again:
        for (uint64_t c = first; c < end; c++) {
                if (c % h->l2_entries == 0 && !(s->l1[c / h->l2_entries] & QCOW2_L1E_OFFSET_MASK)) {
                        c += h->l2_entries - 1;
                        continue;
                }
                uint64_t e;
                r = entry_at(img, c, &e, err);
                if (r < 0)
                        return r;
                if (((e & QCOW2_OFLAG_COMPRESSED) || (e & QCOW2_L2E_OFFSET_MASK)) && !discarded) {
                        r = qcow2_discard(img, first << cb, h->size - (first << cb), err);
                        if (r < 0)
                                return r;
                        r = qcow2_flush(img, err);
                        if (r < 0)
                                return r;
                        discarded = true;
                        goto again;
                }
                if ((e & QCOW2_OFLAG_COMPRESSED) || (e & QCOW2_L2E_OFFSET_MASK))
                        return vh_error_set(err, -ENOTEMPTY,
                                            "guest offset %" PRIu64 " past the new size %" PRIu64
                                            " holds data; shrinking would lose it (discard it first)",
                                            c << cb, new_size);
        }

        /* Zero flags past the end go, and so do L2 tables that map only
         * what lies past it; the L1 table keeps its size. */
        for (uint64_t c = first; c < end; c++) {
                uint64_t l1_index = c / h->l2_entries;
                uint64_t l2 = s->l1[l1_index] & QCOW2_L1E_OFFSET_MASK;
                if (!l2) {
                        c = (l1_index + 1) * h->l2_entries - 1;
                        continue;
                }
                if (c % h->l2_entries == 0) {
                        r = qcow2_free_later(img, l2, h->cluster_size, err);
                        if (r < 0)
                                return r;
                        s->l1[l1_index] = 0;
                        s->l1_dirty_lo = MIN(s->l1_dirty_lo, l1_index);
                        s->l1_dirty_hi = MAX(s->l1_dirty_hi, l1_index + 1);
                        c = (l1_index + 1) * h->l2_entries - 1;
                        continue;
                }
                uint64_t e;
                r = entry_at(img, c, &e, err);
                if (r < 0)
                        return r;
                if (e) {
                        /* Only a zero flag can be left here (checked above). */
                        uint8_t *table;
                        r = qcow2_l2_load(img, l2, &table, err);
                        if (r < 0)
                                return r;
                        if (!(s->l1[l1_index] & QCOW2_OFLAG_COPIED))
                                continue; /* a table shared with a snapshot stays as it is */
                        be64_store(table + (c % h->l2_entries) * 8, 0);
                        qcow2_cache_mark_dirty(s->l2_cache, table);
                }
        }
        /* The tables first, then the header with the smaller size. */
        r = qcow2_flush(img, err);
        if (r < 0)
                return r;
        return set_size(img, new_size, err);
}

static int qcow2_grow_l1(struct vh_image *img, uint64_t entries, struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        const uint64_t cs = s->h.cluster_size;
        int r;

        if (entries * 8 > QCOW2_MAX_L1_BYTES)
                return vh_error_set(err, -EFBIG, "the L1 table would exceed %" PRIu64 " bytes; use a larger cluster size",
                                    QCOW2_MAX_L1_BYTES);
        /* The new table is written from memory: everything it points at
         * must be on disk first. */
        r = qcow2_flush(img, err);
        if (r < 0)
                return r;

        uint64_t clusters = DIV_ROUND_UP(entries * 8, cs);
        uint64_t *l1 = realloc(s->l1, clusters * cs);
        if (!l1)
                return vh_error_set(err, -ENOMEM, "out of memory for the L1 table");
        memset(l1 + s->h.l1_size, 0, clusters * cs - (uint64_t) s->h.l1_size * 8);
        s->l1 = l1;

        uint64_t off;
        r = qcow2_alloc_contiguous(img, clusters, &off, err);
        if (r < 0)
                return r;
        _cleanup_free_ uint8_t *buf = calloc(1, clusters * cs);
        if (!buf)
                return vh_error_set(err, -ENOMEM, "out of memory");
        for (uint64_t i = 0; i < s->h.l1_size; i++)
                be64_store(buf + i * 8, s->l1[i]);
        r = image_pwrite_all(img->fd, buf, clusters * cs, off);
        if (r < 0)
                return vh_error_set(err, r, "writing the new L1 table at %#" PRIx64 " failed: %s", off, strerror(-r));
        /* The new table and its refcounts on disk, then the header names
         * it, then the old one is freed. */
        r = qcow2_sync(img, "new L1 table", err);
        if (r < 0)
                return r;
        r = qcow2_flush(img, err);
        if (r < 0)
                return r;
        uint64_t old_off = s->h.l1_table_offset, old_bytes = ALIGN_UP((uint64_t) s->h.l1_size * 8, cs);
        s->h.l1_table_offset = off;
        s->h.l1_size = (uint32_t) entries;
        r = qcow2_header_update(img, err);
        if (r < 0)
                return r;
        if (old_off && old_bytes) {
                r = qcow2_free_later(img, old_off, old_bytes, err);
                if (r < 0)
                        return r;
        }
        return qcow2_flush(img, err);
}

/* The number of valid persistent bitmaps: those of the bitmaps extension
 * while the autoclear bit says they are consistent (the spec's rule; QEMU
 * ignores them otherwise). */
static int qcow2_bitmap_count(struct vh_image *img, uint32_t *ret, struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        const struct qcow2_header *h = &s->h;
        *ret = 0;
        if (h->version < 3 || !(h->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS))
                return 0;
        uint64_t end = h->backing_file_offset ? MIN(h->backing_file_offset, (uint64_t) h->cluster_size)
                                              : h->cluster_size;
        end = MIN(end, img->file_size);
        _cleanup_free_ uint8_t *buf = malloc(h->cluster_size);
        if (!buf)
                return vh_error_set(err, -ENOMEM, "out of memory");
        int r = image_pread(img, buf, (size_t) end, 0, err);
        if (r < 0)
                return r;
        uint64_t off = h->header_length;
        for (unsigned n = 0; n < QCOW2_MAX_HEADER_EXTENSIONS && off + 8 <= end; n++) {
                uint32_t type = be32_load(buf + off), len = be32_load(buf + off + 4);
                if (type == QCOW2_EXT_END || len > end - off - 8)
                        break;
                if (type == QCOW2_EXT_BITMAPS && len >= 4) {
                        *ret = be32_load(buf + off + 8);
                        break;
                }
                off += 8 + ALIGN_UP((uint64_t) len, 8);
        }
        return 0;
}

static int qcow2_resize_check(struct vh_image *img, uint64_t new_size, struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        if (new_size % 512)
                return vh_error_set(err, -EINVAL, "the new size must be a multiple of 512 bytes");
        if (new_size == s->h.size)
                return 0;
        if (s->h.nb_snapshots && s->h.version < 3)
                return vh_error_set(err, -EOPNOTSUPP,
                                    "a version 2 image with internal snapshots cannot be resized (its snapshot "
                                    "table has no room for their sizes)");
        uint32_t bitmaps;
        int r = qcow2_bitmap_count(img, &bitmaps, err);
        if (r < 0)
                return r;
        if (bitmaps)
                return vh_error_set(err, -ENOTSUP,
                                    "the image has %" PRIu32 " persistent bitmap%s, which vmhost does not keep: "
                                    "resizing would discard %s (resize it with 'qemu-img resize', which keeps "
                                    "them, or remove them first with 'qemu-img bitmap --remove')",
                                    bitmaps, bitmaps == 1 ? "" : "s", bitmaps == 1 ? "it" : "them");
        return 0;
}

int qcow2_resize(struct vh_image *img, uint64_t new_size, struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        uint64_t old = s->h.size;
        int r;

        r = qcow2_resize_check(img, new_size, err);
        if (r < 0)
                return r;
        r = qcow2_prepare_write(img, err);
        if (r < 0)
                return r;
        if (new_size == old)
                return 0;
        if (new_size < old)
                return qcow2_shrink(img, new_size, err);

        uint64_t need = qcow2_l1_entries_for(new_size, s->h.cluster_bits, s->h.l2_entry_size);
        if (need > s->h.l1_size) {
                r = qcow2_grow_l1(img, need, err);
                if (r < 0)
                        return r;
        } else {
                r = qcow2_flush(img, err);
                if (r < 0)
                        return r;
        }
        r = set_size(img, new_size, err);
        if (r < 0)
                return r;

        /* What the backing file holds past the old end must not appear in
         * the new area. */
        if (img->backing && img->backing->virtual_size > old) {
                uint64_t end = MIN(new_size, img->backing->virtual_size);
                r = qcow2_write_zeroes(img, old, end - old, err);
                if (r < 0)
                        return r;
                r = qcow2_flush(img, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

int vh_image_resize(struct vh_image *img, uint64_t new_size, bool shrink, struct vh_error *err) {
        return vh_image_resize_prealloc(img, new_size, shrink, VH_IMAGE_PREALLOC_OFF, err);
}

int vh_image_resize_check(struct vh_image *img, uint64_t new_size, bool shrink, struct vh_error *err) {
        if (!img->read_write)
                return vh_error_set(err, -EROFS, "cannot resize: the image is open read-only");
        if (new_size > VH_IMAGE_MAX_VIRTUAL_SIZE)
                return vh_error_set(err, -EFBIG, "size %" PRIu64 " is larger than the limit of %" PRIu64 " bytes",
                                    new_size, VH_IMAGE_MAX_VIRTUAL_SIZE);
        if (new_size < img->virtual_size && !shrink)
                return vh_error_set(err, -EINVAL,
                                    "the new size %" PRIu64 " is smaller than the current %" PRIu64
                                    "; shrinking can lose data, so it needs --shrink",
                                    new_size, img->virtual_size);
        if (!img->driver->resize)
                return vh_error_set(err, -EOPNOTSUPP, "resizing is not supported for this format");
        if (img->format == VH_IMAGE_FORMAT_QCOW2)
                return qcow2_resize_check(img, new_size, err);
        return 0;
}

int vh_image_resize_prealloc(struct vh_image *img, uint64_t new_size, bool shrink, enum vh_image_prealloc prealloc,
                             struct vh_error *err) {
        int r = vh_image_resize_check(img, new_size, shrink, err);
        if (r < 0)
                return image_error_prefix(err, r, img->filename);
        uint64_t old = img->virtual_size;
        if (prealloc != VH_IMAGE_PREALLOC_OFF) {
                /* qemu-img's refusals, in its words. */
                if (new_size < old)
                        return vh_error_set(err, -ENOTSUP, "Preallocation can only be used for growing images");
                if (img->format == VH_IMAGE_FORMAT_RAW && prealloc == VH_IMAGE_PREALLOC_METADATA)
                        return vh_error_set(err, -ENOTSUP, "Unsupported preallocation mode: metadata");
        }
        r = img->driver->resize(img, new_size, err);
        if (r < 0 || prealloc == VH_IMAGE_PREALLOC_OFF || new_size <= old)
                return r < 0 ? image_error_prefix(err, r, img->filename) : r;
        /* The new size is recorded first: a crash while preallocating
         * leaves the grown image with part of its new area allocated,
         * which reads as zeros like the rest. */
        if (img->format == VH_IMAGE_FORMAT_QCOW2)
                r = qcow2_preallocate(img, old, new_size - old, prealloc, err);
        else {
                r = image_preallocate(img->fd, old, new_size - old, prealloc, err);
                if (r >= 0 && fsync(img->fd) < 0)
                        r = vh_error_set(err, negative_errno(), "fsync failed: %m");
        }
        return r < 0 ? image_error_prefix(err, r, img->filename) : 0;
}
