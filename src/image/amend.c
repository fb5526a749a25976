/* image/amend.c: 'img amend': changing a qcow2 image's format options in
 * place, as 'qemu-img amend' does: compat (version 2 <-> 3), lazy_refcounts,
 * refcount_bits, and a larger size.
 *
 * Every change is made so that the file is the old image or the new one at
 * each moment, with leaked clusters at worst:
 *   lazy_refcounts  one write of the header's first 104 bytes (one sector);
 *   refcount_bits   the new refcount table and blocks are built in memory
 *                   from the old refcounts and written past the end of the
 *                   file (clusters nothing counts or names yet), fsync, then
 *                   one header write names them with the new width; the old
 *                   table and blocks are already counted as free in the new
 *                   blocks, so nothing is left to free;
 *   compat=1.1      one write of the first cluster (the v3 fields go in
 *                   between the v2 header and its extensions);
 *   compat=0.10     zero clusters (v3 only) are expanded first through the
 *                   write path's ordering (zeros written and synced, then
 *                   refcounts, then the L2 entry), which leaves a v3 image
 *                   that reads the same; then one write of the first
 *                   cluster drops the v3 fields.
 * A refusal (a downgrade that would lose something, a refcount too large
 * for the new width, a resize that would lose bitmaps) is found before
 * anything is written: the refcounts are read, and the largest checked
 * against the new width, before the first write.
 *
 * Progress: the refcount read and the zero cluster expansion are the long
 * parts; each is one phase of the 0..total the callback sees. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/macro.h"
#include "image/image-internal.h"
#include "image/qcow2.h"

/* Refcounts held in memory while the refcount structures are rebuilt: 8
 * bytes per cluster of the file (1 GiB of memory at the limit). */
#define AMEND_MAX_CLUSTERS (UINT64_C(1) << 27)

static uint64_t refcount_max_for(unsigned order) {
        return order == 6 ? UINT64_MAX : (UINT64_C(1) << (1u << order)) - 1;
}

/* Writes the fields a refcount switch changes (refcount table, order),
 * with the rest of the first 104 bytes as they are: one write inside the
 * first sector, so it lands whole or not at all. */
static int header_write_refcounts(struct vh_image *img, struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        uint8_t buf[QCOW2_V3_MIN_HEADER_LENGTH];
        int r = image_pread(img, buf, sizeof(buf), 0, err);
        if (r < 0)
                return r;
        be64_store(buf + 48, s->h.refcount_table_offset);
        be32_store(buf + 56, s->h.refcount_table_clusters);
        be32_store(buf + 96, s->h.refcount_order);
        r = image_pwrite_all(img->fd, buf, sizeof(buf), 0);
        if (r < 0)
                return vh_error_set(err, r, "writing the header failed: %s", strerror(-r));
        return qcow2_sync(img, "header", err);
}

/* The write state (refcount cache, table) was built for the old refcount
 * structures: it is made again from the header. Nothing is dirty here
 * (the caller flushed), so closing writes nothing. */
static int rw_restart(struct vh_image *img, struct vh_error *err) {
        qcow2_rw_close(img);
        return qcow2_rw_open(img, err);
}

/* The phases of one amend (refcount read, zero expansion) mapped onto
 * one 0..total range, so that -p goes from 0 to 100% once. */
struct amend_progress {
        int (*progress)(uint64_t done, uint64_t total, void *userdata);
        void *userdata;
        unsigned phase, phases;
};

#define AMEND_PROGRESS_SCALE (UINT64_C(1) << 20)

static int amend_progress(const struct amend_progress *ap, uint64_t done, uint64_t total) {
        if (!ap->progress || ap->phases == 0)
                return 0;
        uint64_t part = total == 0 || done >= total ? AMEND_PROGRESS_SCALE : done * AMEND_PROGRESS_SCALE / total;
        return image_progress(ap->progress, ap->userdata, ap->phase * AMEND_PROGRESS_SCALE + part,
                              ap->phases * AMEND_PROGRESS_SCALE);
}

/* A refcount rewrite, worked out before anything is written: where the
 * new blocks and table go and every cluster's refcount. */
struct refcount_plan {
        unsigned order;
        uint64_t start; /* first cluster past everything in use: the new structures go here */
        uint64_t nb, nt; /* new refcount blocks, new table clusters */
        uint64_t *counts; /* start + nb + nt entries */
};

static void refcount_plan_done(struct refcount_plan *plan) {
        plan->counts = mfree(plan->counts);
}

/* Reads every refcount (read-only) into 'plan' and refuses a width too
 * narrow for the largest, so that this refusal, like the others, comes
 * before the first write. A cancel here leaves the image unchanged. */
static int refcount_plan_make(struct vh_image *img, unsigned order, const struct amend_progress *ap,
                              struct refcount_plan *plan, struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        const uint64_t cs = s->h.cluster_size;
        const unsigned cb = s->h.cluster_bits;
        int r;

        uint64_t start = MAX(s->end_cluster, DIV_ROUND_UP(img->file_size, cs));
        if (start > AMEND_MAX_CLUSTERS)
                return vh_error_set(err, -EFBIG,
                                    "the file has %" PRIu64 " clusters; rewriting its refcounts is limited to %" PRIu64,
                                    start, AMEND_MAX_CLUSTERS);

        /* Where the new structures go: behind everything, so they overlap
         * nothing in use; as many blocks as cover the file and themselves
         * (a fixed point: they count themselves and the table). */
        const uint64_t per_block = (cs * 8) >> order;
        uint64_t nb = 0, nt = 0;
        for (;;) {
                uint64_t total = start + nb + nt;
                uint64_t need_b = DIV_ROUND_UP(total, per_block);
                uint64_t need_t = DIV_ROUND_UP(need_b * 8, cs);
                if (need_b == nb && need_t == nt)
                        break;
                nb = need_b;
                nt = need_t;
        }
        if (nt * cs > QCOW2_MAX_REFTABLE_BYTES)
                return vh_error_set(err, -EFBIG, "the new refcount table would exceed %" PRIu64 " bytes",
                                    QCOW2_MAX_REFTABLE_BYTES);
        const uint64_t total = start + nb + nt;

        _cleanup_free_ uint64_t *counts = calloc(total, sizeof(uint64_t));
        if (!counts)
                return vh_error_set(err, -ENOMEM, "out of memory for %" PRIu64 " refcounts", total);
        const uint64_t new_max = refcount_max_for(order);
        for (uint64_t c = 0; c < start; c++) {
                if (c % 65536 == 0) {
                        r = amend_progress(ap, c, start);
                        if (r < 0)
                                return vh_error_set(err, r, "cancelled; the image is unchanged");
                }
                r = qcow2_refcount_get(img, c << cb, &counts[c], err);
                if (r < 0)
                        return r;
                if (counts[c] > new_max)
                        return vh_error_set(err, -EINVAL,
                                            "Cannot decrease refcount entry width to %u bits: Cluster at offset %#" PRIx64
                                            " has a refcount of %" PRIu64,
                                            1u << order, c << cb, counts[c]);
        }
        /* The old table and blocks are free once the header names the new
         * ones: the new blocks count them so. */
        for (uint64_t i = 0; i < s->reftable_clusters; i++) {
                uint64_t c = (s->reftable_offset >> cb) + i;
                if (c < start)
                        counts[c] = 0;
        }
        for (uint64_t i = 0; i < s->reftable_entries; i++) {
                uint64_t c = s->reftable[i] >> cb;
                if (s->reftable[i] && c < start)
                        counts[c] = 0;
        }
        for (uint64_t c = start; c < total; c++)
                counts[c] = 1;
        *plan = (struct refcount_plan) { .order = order, .start = start, .nb = nb, .nt = nt, .counts = TAKE_PTR(counts) };
        return 0;
}

/* Rewrites the refcount structures as 'plan' says. Only header writes
 * (version, lazy refcounts) may have come between the plan and this:
 * they change no refcount and allocate nothing. 'written' says whether
 * they did, for the message of a cancel. */
static int refcount_rewrite(struct vh_image *img, const struct refcount_plan *plan, const struct amend_progress *ap,
                            bool written, struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        const uint64_t cs = s->h.cluster_size;
        const unsigned cb = s->h.cluster_bits;
        const unsigned order = plan->order;
        const uint64_t start = plan->start, nb = plan->nb, nt = plan->nt, total = start + nb + nt;
        const uint64_t *counts = plan->counts;
        int r;

        r = qcow2_flush(img, err);
        if (r < 0)
                return r;
        if (MAX(s->end_cluster, DIV_ROUND_UP(img->file_size, cs)) != start)
                return vh_error_set(err, -EIO, "internal error: the file changed between reading and rewriting its "
                                               "refcounts");
        uint64_t old_file_size = img->file_size;

        /* Blocks, then the table, each block in its own write. */
        const uint64_t per_block = (cs * 8) >> order;
        _cleanup_free_ uint8_t *buf = malloc(MAX(cs, nt * cs));
        if (!buf)
                return vh_error_set(err, -ENOMEM, "out of memory");
        for (uint64_t b = 0; b < nb; b++) {
                memset(buf, 0, cs);
                for (uint64_t j = 0; j < per_block && b * per_block + j < total; j++)
                        qcow2_refblock_set(buf, j, order, counts[b * per_block + j]);
                r = image_pwrite_all(img->fd, buf, cs, (start + b) << cb);
                if (r < 0) {
                        r = vh_error_set(err, r, "writing a new refcount block failed: %s", strerror(-r));
                        goto undo;
                }
        }
        memset(buf, 0, nt * cs);
        for (uint64_t b = 0; b < nb; b++)
                be64_store(buf + b * 8, (start + b) << cb);
        r = image_pwrite_all(img->fd, buf, nt * cs, (start + nb) << cb);
        if (r < 0) {
                r = vh_error_set(err, r, "writing the new refcount table failed: %s", strerror(-r));
                goto undo;
        }
        r = qcow2_sync(img, "new refcount structures", err);
        if (r < 0)
                goto undo;
        r = amend_progress(ap, start, start);
        if (r < 0) {
                r = vh_error_set(err, r,
                                 written ? "cancelled; the refcount width is unchanged (the compat or lazy_refcounts "
                                           "change asked for with it was made)"
                                         : "cancelled; the image is unchanged");
                goto undo;
        }

        /* The switch: one header write. */
        uint64_t old_offset = s->h.refcount_table_offset;
        uint32_t old_clusters = s->h.refcount_table_clusters, old_order = s->h.refcount_order;
        s->h.refcount_table_offset = (start + nb) << cb;
        s->h.refcount_table_clusters = (uint32_t) nt;
        s->h.refcount_order = order;
        r = header_write_refcounts(img, err);
        if (r < 0) {
                s->h.refcount_table_offset = old_offset;
                s->h.refcount_table_clusters = old_clusters;
                s->h.refcount_order = old_order;
                return r;
        }
        img->file_size = MAX(img->file_size, total << cb);
        return rw_restart(img, err);

undo:
        /* Nothing names the new clusters: give the space back (best effort;
         * left there, they are unused clusters that count as free). */
        if (ftruncate(img->fd, (off_t) old_file_size) == 0)
                img->file_size = old_file_size;
        return r;
}

/* ---- downgrade: zero clusters ---- */

/* Removes the zero flag from every entry of the L2 tables 'l1' names,
 * keeping what each reads: without a backing file an unallocated entry
 * reads as zeros in version 2 too; otherwise the cluster gets zeros
 * written. Progress goes by L1 entry: '*done' of 'total' over all tables. */
static int expand_zeros(struct vh_image *img, const uint64_t *l1, uint64_t l1_size, const struct amend_progress *ap,
                        uint64_t *done, uint64_t total, struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        const struct qcow2_header *h = &s->h;
        const uint64_t cs = h->cluster_size;
        int r;

        for (uint64_t i = 0; i < l1_size; i++, (*done)++) {
                r = amend_progress(ap, *done, total);
                if (r < 0)
                        return r;
                uint64_t l2 = l1[i] & QCOW2_L1E_OFFSET_MASK;
                if (!l2)
                        continue;
                uint64_t l2_refs;
                r = qcow2_refcount_get(img, l2, &l2_refs, err);
                if (r < 0)
                        return r;
                if (l2_refs == 0)
                        return vh_error_set(err, -EINVAL, "L2 table at %#" PRIx64 " has refcount 0", l2);
                for (uint64_t j = 0; j < h->l2_entries; j++) {
                        uint8_t *table;
                        r = qcow2_l2_load(img, l2, &table, err);
                        if (r < 0)
                                return r;
                        uint64_t e = be64_load(table + j * 8);
                        if (!(e & QCOW2_OFLAG_ZERO) || (e & QCOW2_OFLAG_COMPRESSED))
                                continue;
                        uint64_t host = e & QCOW2_L2E_OFFSET_MASK, ne;
                        uint64_t host_refs = 0;
                        if (host) {
                                r = qcow2_refcount_get(img, host, &host_refs, err);
                                if (r < 0)
                                        return r;
                        }
                        bool in_place = host && host_refs == l2_refs;
                        if (in_place) {
                                /* Only this table's users name it: zeros
                                 * where it is. */
                                r = image_pwrite_all(img->fd, s->zero_buf, cs, host);
                                if (r < 0)
                                        return vh_error_set(err, r, "writing zeros at %#" PRIx64 " failed: %s",
                                                            host, strerror(-r));
                                s->data_unsynced = true;
                                ne = e & ~QCOW2_OFLAG_ZERO;
                        } else if (!img->backing_name)
                                ne = 0;
                        else {
                                uint64_t off;
                                r = qcow2_alloc_contiguous(img, 1, &off, err);
                                for (uint64_t k = 1; r >= 0 && k < l2_refs; k++)
                                        r = qcow2_refcount_update(img, off, cs, +1, err);
                                if (r < 0)
                                        return r;
                                r = image_pwrite_all(img->fd, s->zero_buf, cs, off);
                                if (r < 0)
                                        return vh_error_set(err, r, "writing zeros at %#" PRIx64 " failed: %s", off,
                                                            strerror(-r));
                                if (off + cs > img->file_size)
                                        img->file_size = off + cs;
                                s->data_unsynced = true;
                                ne = off | (l2_refs == 1 ? QCOW2_OFLAG_COPIED : 0);
                        }
                        /* The allocation may have flushed: the table again. */
                        r = qcow2_l2_load(img, l2, &table, err);
                        if (r < 0)
                                return r;
                        be64_store(table + j * 8, ne);
                        qcow2_cache_mark_dirty(s->l2_cache, table);
                        /* Only now that the entry no longer names the old
                         * cluster may its references go, as in the write
                         * path: a flush (an allocation above may run one,
                         * to make room in the refcount cache) writes the L2
                         * table before it applies these. Queued before the
                         * allocation, the decrement could reach the disk
                         * while the table there still named the cluster. */
                        if (host && !in_place)
                                for (uint64_t k = 0; k < l2_refs; k++) {
                                        r = qcow2_free_later(img, host, cs, err);
                                        if (r < 0)
                                                return r;
                                }
                }
        }
        return 0;
}

/* The snapshot table, with the L1 tables checked to lie in the file. */
static int snapshots_read(struct vh_image *img, struct qcow2_snapshot **ret, size_t *ret_n, struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        const struct qcow2_header *h = &s->h;
        struct qcow2_snapshot *t = NULL;
        size_t n = 0;
        int r = qcow2_snapshot_table_read(img->fd, img->filename, img->file_size, h->snapshots_offset,
                                          h->nb_snapshots, 0, &t, &n, NULL, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if ((t[i].l1_offset & (h->cluster_size - 1)) || (uint64_t) t[i].l1_size * 8 > QCOW2_MAX_L1_BYTES ||
                    image_past_eof(img, t[i].l1_offset, (uint64_t) t[i].l1_size * 8)) {
                        qcow2_snapshot_table_free(t, n);
                        return vh_error_set(err, -EINVAL, "snapshot %zu: L1 table at %#" PRIx64 " is bad", i,
                                            t[i].l1_offset);
                }
        *ret = t;
        *ret_n = n;
        return 0;
}

/* 'written': whether the options applied before (refcount width, size)
 * changed the file, for the message of a cancel. */
static int expand_all_zeros(struct vh_image *img, const struct amend_progress *ap, bool written,
                            struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        struct qcow2_snapshot *t = NULL;
        size_t n = 0;
        int r = snapshots_read(img, &t, &n, err);
        if (r < 0)
                return r;
        uint64_t total = s->h.l1_size, done = 0;
        for (size_t i = 0; i < n; i++)
                total += t[i].l1_size;
        r = expand_zeros(img, s->l1, s->h.l1_size, ap, &done, total, err);
        for (size_t i = 0; i < n && r >= 0; i++) {
                _cleanup_free_ uint64_t *l1 = NULL;
                r = qcow2_l1_read(img, t[i].l1_offset, t[i].l1_size, &l1, err);
                if (r >= 0)
                        r = expand_zeros(img, l1, t[i].l1_size, ap, &done, total, err);
        }
        qcow2_snapshot_table_free(t, n);
        /* The last call, before the header switch. */
        if (r >= 0)
                r = amend_progress(ap, total, total);
        if (r == -ECANCELED) {
                /* What was expanded reads as before: it stays, on disk. */
                r = qcow2_flush(img, err);
                if (r < 0)
                        return r;
                return vh_error_set(err, -ECANCELED,
                                    written ? "cancelled; the image is still version 3 and reads as before (some "
                                              "zero clusters were written out; the refcount width or size asked "
                                              "for with the downgrade was changed)"
                                            : "cancelled; the image is still version 3 and reads as before (some "
                                              "zero clusters were written out)");
        }
        if (r < 0)
                return r;
        return qcow2_flush(img, err);
}

/* Whether any L2 table reachable from the active or a snapshot's L1 has a
 * compressed entry (a zstd image cannot go to version 2 then). */
static int has_compressed(struct vh_image *img, const uint64_t *l1, uint64_t l1_size, bool *ret,
                          struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        for (uint64_t i = 0; i < l1_size && !*ret; i++) {
                uint64_t l2 = l1[i] & QCOW2_L1E_OFFSET_MASK;
                if (!l2)
                        continue;
                uint8_t *table;
                int r = qcow2_l2_load(img, l2, &table, err);
                if (r < 0)
                        return r;
                for (uint64_t j = 0; j < s->h.l2_entries; j++)
                        if (be64_load(table + j * 8) & QCOW2_OFLAG_COMPRESSED) {
                                *ret = true;
                                break;
                        }
        }
        return 0;
}

static int any_compressed(struct vh_image *img, bool *ret, struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        bool found = false;
        int r = has_compressed(img, s->l1, s->h.l1_size, &found, err);
        if (r < 0)
                return r;
        struct qcow2_snapshot *t = NULL;
        size_t n = 0;
        r = snapshots_read(img, &t, &n, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n && r >= 0 && !found; i++) {
                _cleanup_free_ uint64_t *l1 = NULL;
                r = qcow2_l1_read(img, t[i].l1_offset, t[i].l1_size, &l1, err);
                if (r >= 0)
                        r = has_compressed(img, l1, t[i].l1_size, &found, err);
        }
        qcow2_snapshot_table_free(t, n);
        if (r < 0)
                return r;
        *ret = found;
        return 0;
}

/* ---- the version switch: the first cluster rebuilt ---- */

/* Writes the first cluster for 'version' (2 or 3): the fixed v2 fields as
 * they are, the v3 fields (none of the features set, 16-bit refcounts,
 * zlib) or none, then the header extensions but the feature name table
 * (QEMU keeps one in version 3 only; it is optional), then the backing
 * file name. One write, as QEMU updates its header. */
static int header_set_version(struct vh_image *img, unsigned version, struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        struct qcow2_header *h = &s->h;
        const uint32_t cs = h->cluster_size;
        size_t name_len = strlen(h->backing_file);

        _cleanup_free_ uint8_t *old = malloc(cs), *buf = calloc(1, cs);
        if (!old || !buf)
                return vh_error_set(err, -ENOMEM, "out of memory");
        int r = image_pread(img, old, cs, 0, err);
        if (r < 0)
                return r;
        memcpy(buf, old, QCOW2_V2_HEADER_LENGTH);
        be32_store(buf + 4, version);
        size_t out = QCOW2_V2_HEADER_LENGTH;
        if (version >= 3) {
                /* incompatible, compatible, autoclear features: none */
                be32_store(buf + 96, 4); /* refcount_order: 16 bits */
                be32_store(buf + 100, QCOW2_V3_HEADER_LENGTH);
                /* byte 104, compression_type: zlib */
                out = QCOW2_V3_HEADER_LENGTH;
        }
        r = qcow2_header_copy_extensions(old, h, cs, QCOW2_EXT_FEATURE_TABLE, buf, &out, err);
        if (r < 0)
                return r;
        if (out + name_len > cs)
                return vh_error_set(err, -ENAMETOOLONG,
                                    "the backing file name does not fit in the first cluster (%" PRIu32 " bytes)", cs);
        if (name_len) {
                memcpy(buf + out, h->backing_file, name_len);
                be64_store(buf + 8, out);
        }
        r = image_pwrite_all(img->fd, buf, cs, 0);
        if (r < 0)
                return vh_error_set(err, r, "writing the header failed: %s", strerror(-r));
        r = qcow2_sync(img, "header", err);
        if (r < 0)
                return r;

        h->version = version;
        h->header_length = version >= 3 ? QCOW2_V3_HEADER_LENGTH : QCOW2_V2_HEADER_LENGTH;
        h->incompatible_features = h->compatible_features = h->autoclear_features = 0;
        h->refcount_order = 4;
        h->compression_type = QCOW2_COMPRESSION_ZLIB;
        h->backing_file_offset = name_len ? out : 0;
        s->marked_dirty = false;
        return 0;
}

/* Version 3 wants each snapshot entry to carry at least 16 bytes of extra
 * data (the 64-bit VM state size and the disk size). */
static int check_snapshots_for_v3(struct vh_image *img, struct vh_error *err) {
        struct qcow2_snapshot *t = NULL;
        size_t n = 0;
        int r = snapshots_read(img, &t, &n, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++)
                if (t[i].extra_size < 16) {
                        r = vh_error_set(err, -EOPNOTSUPP,
                                         "snapshot '%s' has %" PRIu32 " bytes of extra data where version 3 needs 16; "
                                         "upgrading such a snapshot table is not supported (delete the snapshot or "
                                         "use 'qemu-img amend')",
                                         t[i].name, t[i].extra_size);
                        break;
                }
        qcow2_snapshot_table_free(t, n);
        return r;
}

/* Version 2 snapshot entries have no field for the disk size nor room for
 * a VM state size above 4 GiB: as QEMU, a downgrade is refused when one
 * would lose either. 'size' is the virtual size the image will have. */
static int check_snapshots_for_v2(struct vh_image *img, uint64_t size, struct vh_error *err) {
        struct qcow2_snapshot *t = NULL;
        size_t n = 0;
        int r = snapshots_read(img, &t, &n, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n && r >= 0; i++) {
                /* As QEMU reads them: without the fields, the 32-bit VM
                 * state size and the image's size when opened. */
                uint64_t vm_state = t[i].extra_size >= 8 ? be64_load(t[i].extra) : t[i].vm_state_size32;
                uint64_t disk = t[i].extra_size >= 16 ? be64_load(t[i].extra + 8) : img->virtual_size;
                if (vm_state > UINT32_MAX)
                        r = vh_error_set(err, -ENOTSUP,
                                         "Internal snapshots prevent downgrade of image (snapshot '%s' has %" PRIu64
                                         " bytes of VM state; version 2 records at most 4 GiB)",
                                         t[i].name, vm_state);
                else if (disk != size)
                        r = vh_error_set(err, -ENOTSUP,
                                         "Internal snapshots prevent downgrade of image (snapshot '%s' was taken at "
                                         "a disk size of %" PRIu64 " bytes, the image %s %" PRIu64
                                         "; version 2 cannot record a snapshot's own size)",
                                         t[i].name, disk, size == img->virtual_size ? "has" : "would have", size);
        }
        qcow2_snapshot_table_free(t, n);
        return r;
}

int vh_image_amend(struct vh_image *img, const struct vh_image_amend_options *opts, struct vh_error *err) {
        static const struct vh_image_amend_options none = { .lazy_refcounts = -1 };
        if (!opts)
                opts = &none;
        if (img->format != VH_IMAGE_FORMAT_QCOW2)
                return vh_error_set(err, -EOPNOTSUPP, "Format driver '%s' does not support option amendment",
                                    vh_image_format_to_string(img->format));
        if (!img->read_write)
                return vh_error_set(err, -EROFS, "%s: cannot amend: the image is open read-only", img->filename);
        struct qcow2_state *s = img->priv;
        struct qcow2_header *h = &s->h;
        const unsigned old_version = h->version;
        const unsigned version = opts->version ? opts->version : old_version;
        unsigned bits = opts->refcount_bits ? opts->refcount_bits : 1u << h->refcount_order;
        bool old_lazy = old_version >= 3 && (h->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS);
        /* A downgrade drops lazy refcounts unless they are asked for. */
        bool lazy = opts->lazy_refcounts >= 0 ? opts->lazy_refcounts : (old_lazy && version >= 3);
        const bool grow = opts->size && opts->size > img->virtual_size;
        const uint64_t final_size = grow ? opts->size : img->virtual_size;
        int r;

        if (version != 2 && version != 3)
                return vh_error_set(err, -EINVAL, "Unknown compatibility level %u", version);
        if (bits == 0 || bits > 64 || (bits & (bits - 1)))
                return vh_error_set(err, -EINVAL, "Refcount width must be a power of two and may not exceed 64 bits");
        unsigned order = 0;
        while ((1u << order) < bits)
                order++;
        if (lazy && version < 3)
                return vh_error_set(err, -EINVAL,
                                    "Lazy refcounts only supported with compatibility level 1.1 and above (use "
                                    "compat=1.1 or greater)");
        if (bits != 16 && version < 3) {
                /* qemu-img's two messages: the width asked for, or the
                 * image's own width kept by a downgrade. */
                if (!opts->refcount_bits)
                        return vh_error_set(err, -ENOTSUP, "compat=0.10 requires refcount_bits=16");
                return vh_error_set(err, -EINVAL,
                                    "Refcount widths other than 16 bits require compatibility level 1.1 or above "
                                    "(use compat=1.1 or greater)");
        }
        if (opts->size && opts->size < img->virtual_size)
                return vh_error_set(err, -EOPNOTSUPP,
                                    "amend does not shrink images (size %" PRIu64 " is below %" PRIu64
                                    "); use 'vmhost img resize --shrink', which says what it discards",
                                    opts->size, img->virtual_size);
        if (opts->size % 512)
                return vh_error_set(err, -EINVAL, "The new size must be a multiple of 512");
        if (grow) {
                /* The resize comes after an upgrade: its version 2
                 * refusal (snapshots) is for an image that stays so. */
                if (old_version < 3 && version >= 3) {
                        if (opts->size > VH_IMAGE_MAX_VIRTUAL_SIZE)
                                return vh_error_set(err, -EFBIG,
                                                    "size %" PRIu64 " is larger than the limit of %" PRIu64 " bytes",
                                                    opts->size, VH_IMAGE_MAX_VIRTUAL_SIZE);
                } else {
                        r = vh_image_resize_check(img, opts->size, false, err);
                        if (r < 0)
                                return r;
                }
        }
        if (version < old_version) {
                uint64_t incompat = h->incompatible_features & ~QCOW2_INCOMPAT_COMPRESSION;
                if (incompat)
                        return vh_error_set(err, -ENOTSUP,
                                            "Cannot downgrade an image with incompatible features 0x%" PRIx64 " set",
                                            incompat);
                if (h->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS)
                        return vh_error_set(err, -ENOTSUP,
                                            "Cannot downgrade an image with persistent bitmaps (version 2 has no "
                                            "place for them)");
                if (h->nb_snapshots) {
                        r = check_snapshots_for_v2(img, final_size, err);
                        if (r < 0)
                                return r;
                }
                if (h->compression_type != QCOW2_COMPRESSION_ZLIB) {
                        bool found = false;
                        r = any_compressed(img, &found, err);
                        if (r < 0)
                                return r;
                        if (found)
                                return vh_error_set(err, -ENOTSUP,
                                                    "Cannot downgrade an image with zstd compression type and existing "
                                                    "compressed clusters");
                }
        }
        if (version > old_version && h->nb_snapshots) {
                r = check_snapshots_for_v3(img, err);
                if (r < 0)
                        return r;
        }

        r = qcow2_flush(img, err);
        if (r < 0)
                return r;
        struct amend_progress ap = {
                .progress = opts->progress,
                .userdata = opts->userdata,
                .phases = (order != h->refcount_order) + (version < old_version),
        };
        /* The last refusal (a refcount too large for the new width) and
         * the long read that finds it, before anything is written. */
        _cleanup_(refcount_plan_done) struct refcount_plan plan = {};
        if (order != h->refcount_order) {
                r = refcount_plan_make(img, order, &ap, &plan, err);
                if (r < 0)
                        return r;
        }

        bool written = false;
        /* Upgrade first, so that what needs version 3 has it. */
        if (version > old_version) {
                r = header_set_version(img, version, err);
                if (r < 0)
                        return r;
                written = true;
        }
        if (version >= 3 && lazy != (h->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS ? true : false)) {
                /* Refcounts are up to date (a dirty image does not open
                 * for writing, and we flushed), so the bit is all. */
                if (lazy)
                        h->compatible_features |= QCOW2_COMPAT_LAZY_REFCOUNTS;
                else
                        h->compatible_features &= ~QCOW2_COMPAT_LAZY_REFCOUNTS;
                r = qcow2_header_update(img, err);
                if (r < 0)
                        return r;
                written = true;
        }
        if (plan.counts) {
                r = refcount_rewrite(img, &plan, &ap, written, err);
                if (r < 0)
                        return r;
                refcount_plan_done(&plan);
                written = true;
                ap.phase++;
        }
        if (grow) {
                /* The driver's resize: vh_image_resize() would name the
                 * file in its messages, which the caller does already. */
                r = qcow2_resize(img, opts->size, err);
                if (r < 0)
                        return r;
                r = qcow2_flush(img, err);
                if (r < 0)
                        return r;
                written = true;
        }
        if (version < old_version) {
                r = expand_all_zeros(img, &ap, written, err);
                /* With lazy refcounts (a resize above set the dirty bit)
                 * the flush did not sync the refcounts; the header that
                 * drops the dirty bit must come after them. */
                if (r >= 0)
                        r = qcow2_sync(img, "refcounts", err);
                if (r < 0)
                        return r;
                r = header_set_version(img, version, err);
                if (r < 0)
                        return r;
        }
        return 0;
}
