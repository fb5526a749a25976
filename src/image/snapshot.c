/* image/snapshot.c: internal qcow2 snapshots ('img snapshot -l|-c|-a|-d').
 *
 * A snapshot is a copy of the active L1 table plus one more reference on
 * every L2 table and data cluster it reaches, so that later writes copy
 * on write instead of changing what the snapshot sees. The snapshot table
 * (QEMU's layout: docs/interop/qcow2.rst, "Snapshots") lists them; it is
 * rewritten whole into new clusters and switched to by the header, so a
 * crash leaves the old table or the new one.
 *
 * Order of each change: new references counted and on disk, then the new
 * tables written, then the header that makes them reachable, then the
 * references that only the old state held are dropped. A crash leaks at
 * worst, with one exception QEMU shares: the COPIED flags of the active
 * tables are fixed in a last step, and until then 'qemu-img check' can
 * report them (-r all repairs that). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/macro.h"
#include "base/strutil.h"
#include "image/image-internal.h"
#include "image/qcow2.h"

/* The longest name a new snapshot may have. */
#define SNAPSHOT_NAME_MAX 1024
/* Extra data we write: vm_state_size_large, disk_size, icount. */
#define SNAPSHOT_EXTRA_SIZE 24

static uint64_t sn_vm_state_size(const struct qcow2_snapshot *sn) {
        return sn->extra_size >= 8 ? be64_load(sn->extra) : sn->vm_state_size32;
}

static bool sn_disk_size(const struct qcow2_snapshot *sn, uint64_t *ret) {
        if (sn->extra_size < 16)
                return false;
        *ret = be64_load(sn->extra + 8);
        return true;
}

static uint64_t sn_icount(const struct qcow2_snapshot *sn) {
        return sn->extra_size >= 24 ? be64_load(sn->extra + 16) : UINT64_MAX;
}

/* Reads the snapshot table and checks what the operations below rely
 * on: L1 tables within the file, ids and names without NUL bytes. */
static int table_read(struct vh_image *img, struct qcow2_snapshot **ret, size_t *ret_n, struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        const struct qcow2_header *h = &s->h;

        /* The size as it is now: an image opened with force-share may be
         * growing under a running VM. */
        (void) image_past_eof(img, 0, UINT64_MAX);
        struct qcow2_snapshot *t = NULL;
        size_t n = 0;
        int r = qcow2_snapshot_table_read(img->fd, img->filename, img->file_size, h->snapshots_offset,
                                          h->nb_snapshots, 0, &t, &n, NULL, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                const struct qcow2_snapshot *sn = &t[i];
                if ((sn->l1_offset & (h->cluster_size - 1)) || sn->l1_offset == 0 ||
                    (uint64_t) sn->l1_size * 8 > QCOW2_MAX_L1_BYTES ||
                    image_past_eof(img, sn->l1_offset, (uint64_t) sn->l1_size * 8)) {
                        r = vh_error_set(err, -EINVAL,
                                         "snapshot %zu: L1 table at %#" PRIx64 " with %" PRIu32
                                         " entries is not aligned, too large or past the end of the file",
                                         i, sn->l1_offset, sn->l1_size);
                        break;
                }
                if (strlen(sn->id) != sn->id_len || strlen(sn->name) != sn->name_len) {
                        r = vh_error_set(err, -EINVAL, "snapshot %zu: id or name contains a NUL byte", i);
                        break;
                }
        }
        if (r < 0) {
                qcow2_snapshot_table_free(t, n);
                return r;
        }
        *ret = t;
        *ret_n = n;
        return 0;
}

static int find(const struct qcow2_snapshot *t, size_t n, const char *name, size_t *ret) {
        /* By name first, then by id, as 'qemu-img snapshot -a' does. */
        for (size_t i = 0; i < n; i++)
                if (streq(t[i].name, name)) {
                        *ret = i;
                        return 0;
                }
        for (size_t i = 0; i < n; i++)
                if (streq(t[i].id, name)) {
                        *ret = i;
                        return 0;
                }
        return -ENOENT;
}

struct vh_image_snapshot *vh_image_snapshots_free(struct vh_image_snapshot *list, size_t n) {
        for (size_t i = 0; list && i < n; i++) {
                free(list[i].id);
                free(list[i].name);
        }
        free(list);
        return NULL;
}

int qcow2_snapshots_describe(struct vh_image *img, struct vh_image_snapshot **ret, size_t *ret_n,
                             struct vh_error *err) {
        *ret = NULL;
        *ret_n = 0;
        struct qcow2_snapshot *t;
        size_t n;
        int r = table_read(img, &t, &n, err);
        if (r < 0)
                return r;
        struct vh_image_snapshot *list = calloc(MAX(n, (size_t) 1), sizeof(*list));
        if (!list) {
                qcow2_snapshot_table_free(t, n);
                return vh_error_set(err, -ENOMEM, "out of memory");
        }
        for (size_t i = 0; i < n; i++) {
                struct vh_image_snapshot *x = &list[i];
                x->id = TAKE_PTR(t[i].id);
                x->name = TAKE_PTR(t[i].name);
                x->vm_state_size = sn_vm_state_size(&t[i]);
                x->date_sec = t[i].date_sec;
                x->date_nsec = t[i].date_nsec;
                x->vm_clock_nsec = t[i].vm_clock_nsec;
                x->icount = sn_icount(&t[i]);
                if (!sn_disk_size(&t[i], &x->disk_size))
                        x->disk_size = img->virtual_size;
        }
        qcow2_snapshot_table_free(t, n);
        *ret = list;
        *ret_n = n;
        return 0;
}

int vh_image_snapshot_list(struct vh_image *img, struct vh_image_snapshot **ret, size_t *ret_n,
                           struct vh_error *err) {
        *ret = NULL;
        *ret_n = 0;
        if (img->format != VH_IMAGE_FORMAT_QCOW2)
                return 0;
        int r = qcow2_snapshots_describe(img, ret, ret_n, err);
        return r < 0 ? image_error_prefix(err, r, img->filename) : 0;
}

/* Serializes the table and writes it to new clusters; returns where. */
static int table_write(struct vh_image *img, const struct qcow2_snapshot *t, size_t n, uint64_t *ret_offset,
                       struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        if (n == 0) {
                *ret_offset = 0;
                return 0;
        }
        _cleanup_free_ uint8_t *buf = NULL;
        uint64_t bytes;
        int r = qcow2_snapshot_table_serialize(t, n, s->h.cluster_size, &buf, &bytes, err);
        if (r < 0)
                return r;
        uint64_t clusters = DIV_ROUND_UP(bytes, (uint64_t) s->h.cluster_size);
        uint64_t off;
        r = qcow2_alloc_contiguous(img, clusters, &off, err);
        if (r < 0)
                return r;
        r = image_pwrite_all(img->fd, buf, (size_t) bytes, off);
        if (r < 0)
                return vh_error_set(err, r, "writing the snapshot table at %#" PRIx64 " failed: %s", off,
                                    strerror(-r));
        *ret_offset = off;
        return qcow2_sync(img, "snapshot table", err);
}

/* Makes the header name the new table, then frees the old one. */
static int table_switch(struct vh_image *img, uint64_t new_offset, size_t new_n, uint64_t old_offset,
                        uint64_t old_bytes, struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        /* The new table and every reference it needs counted, on disk. */
        int r = qcow2_flush(img, err);
        if (r < 0)
                return r;
        s->h.snapshots_offset = new_offset;
        s->h.nb_snapshots = (uint32_t) new_n;
        r = qcow2_header_update(img, err);
        if (r < 0)
                return r;
        if (old_offset && old_bytes) {
                r = qcow2_free_later(img, old_offset, ALIGN_UP(old_bytes, (uint64_t) s->h.cluster_size), err);
                if (r < 0)
                        return r;
        }
        return 0;
}

static uint64_t table_bytes(const struct qcow2_snapshot *t, size_t n) {
        uint64_t bytes = 0;
        for (size_t i = 0; i < n; i++)
                bytes += ALIGN_UP(40 + (uint64_t) t[i].extra_size + strlen(t[i].id) + strlen(t[i].name), (uint64_t) 8);
        return bytes;
}

/* Adds 'delta' references to everything the L1 table 'l1' (host order)
 * reaches: its L2 tables and their data clusters. +1 happens now; -1 is
 * queued until the next flush, after the tables that stop naming them. */
static int l1_references(struct vh_image *img, const uint64_t *l1, uint64_t l1_size, int delta,
                         struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        const struct qcow2_header *h = &s->h;
        _cleanup_free_ uint8_t *copy = malloc(h->cluster_size);
        if (!copy)
                return vh_error_set(err, -ENOMEM, "out of memory");
        for (uint64_t i = 0; i < l1_size; i++) {
                uint64_t l2 = l1[i] & QCOW2_L1E_OFFSET_MASK;
                if (!l2)
                        continue;
                uint8_t *table;
                int r = qcow2_l2_load(img, l2, &table, err);
                if (r < 0)
                        return r;
                /* A copy: refcount updates may evict the cached table. */
                memcpy(copy, table, h->cluster_size);
                for (uint64_t j = 0; j < h->l2_entries; j++) {
                        uint64_t e = be64_load(copy + j * 8);
                        if (delta < 0)
                                r = qcow2_free_l2_entry_later(img, e, err);
                        else if (e & QCOW2_OFLAG_COMPRESSED) {
                                uint64_t off, bytes;
                                qcow2_compressed_range(h, e, &off, &bytes);
                                r = qcow2_refcount_update(img, off, bytes, +1, err);
                        } else if (e & QCOW2_L2E_OFFSET_MASK)
                                r = qcow2_refcount_update(img, e & QCOW2_L2E_OFFSET_MASK, h->cluster_size, +1, err);
                        if (r < 0)
                                return r;
                }
                r = delta < 0 ? qcow2_free_later(img, l2, h->cluster_size, err)
                              : qcow2_refcount_update(img, l2, h->cluster_size, +1, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

int qcow2_l1_read(struct vh_image *img, uint64_t offset, uint32_t size, uint64_t **ret, struct vh_error *err) {
        uint64_t *l1 = calloc(MAX(size, 1u), sizeof(uint64_t));
        if (!l1)
                return vh_error_set(err, -ENOMEM, "out of memory");
        int r = image_pread(img, l1, (size_t) size * 8, offset, err);
        if (r < 0) {
                free(l1);
                return r;
        }
        for (uint32_t i = 0; i < size; i++)
                l1[i] = be64_load((const uint8_t *) &l1[i]);
        *ret = l1;
        return 0;
}

/* Writes 'l1' (host order, 'size' entries, without COPIED flags) to new
 * clusters and returns where. */
static int l1_write_new(struct vh_image *img, const uint64_t *l1, uint64_t size, uint64_t *ret_offset,
                        struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        uint64_t bytes = ALIGN_UP(MAX(size, (uint64_t) 1) * 8, (uint64_t) s->h.cluster_size);
        _cleanup_free_ uint8_t *buf = calloc(1, bytes);
        if (!buf)
                return vh_error_set(err, -ENOMEM, "out of memory");
        for (uint64_t i = 0; i < size; i++)
                be64_store(buf + i * 8, l1[i]);
        uint64_t off;
        int r = qcow2_alloc_contiguous(img, bytes / s->h.cluster_size, &off, err);
        if (r < 0)
                return r;
        r = image_pwrite_all(img->fd, buf, (size_t) bytes, off);
        if (r < 0)
                return vh_error_set(err, r, "writing an L1 table at %#" PRIx64 " failed: %s", off, strerror(-r));
        *ret_offset = off;
        return qcow2_sync(img, "L1 table copy", err);
}

/* Common start of the changing operations. */
static int begin(struct vh_image *img, const char *what, struct qcow2_snapshot **ret_t, size_t *ret_n,
                 struct vh_error *err) {
        if (img->format != VH_IMAGE_FORMAT_QCOW2)
                return vh_error_set(err, -EOPNOTSUPP, "%s: internal snapshots need a qcow2 image", img->filename);
        if (!img->read_write)
                return vh_error_set(err, -EROFS, "%s: cannot %s a snapshot: the image is open read-only",
                                    img->filename, what);
        int r = qcow2_prepare_write(img, err);
        if (r >= 0)
                r = qcow2_flush(img, err);
        if (r >= 0)
                r = table_read(img, ret_t, ret_n, err);
        return r < 0 ? image_error_prefix(err, r, img->filename) : 0;
}

/* begin(), then finds the snapshot 'name' (-ENOENT if there is none). */
static int begin_named(struct vh_image *img, const char *what, const char *name, struct qcow2_snapshot **ret_t,
                       size_t *ret_n, size_t *ret_i, struct vh_error *err) {
        struct qcow2_snapshot *t = NULL;
        size_t n = 0;
        int r = begin(img, what, &t, &n, err);
        if (r < 0)
                return r;
        if (find(t, n, name, ret_i) < 0) {
                qcow2_snapshot_table_free(t, n);
                return vh_error_set(err, -ENOENT, "%s: no snapshot named '%s'", img->filename, name);
        }
        *ret_t = t;
        *ret_n = n;
        return 0;
}

int vh_image_snapshot_create(struct vh_image *img, const char *name, struct vh_error *err) {
        _cleanup_free_ uint64_t *copy = NULL;
        struct qcow2_snapshot *t = NULL;
        size_t n = 0;
        int r;

        if (isempty(name) || strlen(name) > SNAPSHOT_NAME_MAX)
                return vh_error_set(err, -EINVAL, "snapshot name must have 1 to %d bytes", SNAPSHOT_NAME_MAX);
        r = begin(img, "create", &t, &n, err);
        if (r < 0)
                return r;
        struct qcow2_state *s = img->priv;
        size_t dummy;
        if (find(t, n, name, &dummy) == 0) {
                r = vh_error_set(err, -EEXIST, "%s: a snapshot named '%s' exists already", img->filename, name);
                goto out;
        }
        if (n >= QCOW2_MAX_SNAPSHOTS) {
                r = vh_error_set(err, -EFBIG, "%s: already %d snapshots", img->filename, QCOW2_MAX_SNAPSHOTS);
                goto out;
        }
        if (s->h.refcount_order == 0) {
                r = vh_error_set(err, -ERANGE,
                                 "%s: refcount_bits=1 cannot count the second reference a snapshot adds",
                                 img->filename);
                goto out;
        }

        /* The new entry: the next free numeric id, as QEMU picks it. */
        unsigned long max_id = 0;
        for (size_t i = 0; i < n; i++)
                max_id = MAX(max_id, strtoul(t[i].id, NULL, 10));
        struct qcow2_snapshot *nt = realloc(t, (n + 1) * sizeof(*t));
        if (!nt) {
                r = vh_error_set(err, -ENOMEM, "out of memory");
                goto out;
        }
        t = nt;
        struct qcow2_snapshot *sn = &t[n];
        *sn = (struct qcow2_snapshot) {};
        n++;
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        sn->id = strdup_printf("%lu", max_id + 1);
        sn->name = strdup(name);
        sn->extra = calloc(1, SNAPSHOT_EXTRA_SIZE);
        if (!sn->id || !sn->name || !sn->extra) {
                r = vh_error_set(err, -ENOMEM, "out of memory");
                goto out;
        }
        sn->date_sec = (uint32_t) now.tv_sec;
        sn->date_nsec = (uint32_t) now.tv_nsec;
        sn->extra_size = SNAPSHOT_EXTRA_SIZE;
        be64_store(sn->extra + 8, s->h.size); /* disk_size; vm state and icount stay 0 */
        sn->l1_size = s->h.l1_size;

        /* 1. One more reference on all the active state reaches, counted
         * before anything names it twice. */
        r = l1_references(img, s->l1, s->h.l1_size, +1, err);
        if (r < 0)
                goto fail;
        /* 2. The active tables are no longer ours alone. */
        r = qcow2_fix_copied_flags(img, err);
        if (r < 0)
                goto fail;
        /* 3. The snapshot's copy of the L1 table, then the new table. */
        copy = calloc(MAX(s->h.l1_size, 1u), sizeof(uint64_t));
        if (!copy) {
                r = vh_error_set(err, -ENOMEM, "out of memory");
                goto fail;
        }
        for (uint32_t i = 0; i < s->h.l1_size; i++)
                copy[i] = s->l1[i] & ~QCOW2_OFLAG_COPIED;
        r = l1_write_new(img, copy, s->h.l1_size, &sn->l1_offset, err);
        if (r < 0)
                goto fail;
        uint64_t old_offset = s->h.snapshots_offset, old_bytes = table_bytes(t, n - 1), new_offset;
        r = table_write(img, t, n, &new_offset, err);
        if (r < 0)
                goto fail;
        /* 4. The header names it; then the old table goes. */
        r = table_switch(img, new_offset, n, old_offset, old_bytes, err);
        if (r >= 0)
                r = qcow2_flush(img, err);
fail:
        if (r < 0)
                r = image_error_prefix(err, r, img->filename);
out:
        qcow2_snapshot_table_free(t, n);
        return r;
}

int vh_image_snapshot_apply(struct vh_image *img, const char *name, struct vh_error *err) {
        _cleanup_free_ uint64_t *sn_l1 = NULL;
        struct qcow2_snapshot *t = NULL;
        size_t n = 0, i;
        int r = begin_named(img, "apply", name, &t, &n, &i, err);
        if (r < 0)
                return r;
        struct qcow2_state *s = img->priv;
        const struct qcow2_snapshot *sn = &t[i];
        uint64_t size = s->h.size;
        (void) sn_disk_size(sn, &size);
        if (size > VH_IMAGE_MAX_VIRTUAL_SIZE || size > (UINT64_C(1) << 62)) {
                r = vh_error_set(err, -EINVAL, "%s: snapshot '%s' has a disk size of %" PRIu64, img->filename, name,
                                 size);
                goto out;
        }
        uint64_t l1_size = MAX((uint64_t) sn->l1_size, qcow2_l1_entries_for(size, s->h.cluster_bits, 8));
        if (l1_size * 8 > QCOW2_MAX_L1_BYTES) {
                r = vh_error_set(err, -EFBIG, "%s: snapshot '%s' needs too large an L1 table", img->filename, name);
                goto out;
        }

        r = qcow2_l1_read(img, sn->l1_offset, sn->l1_size, &sn_l1, err);
        if (r < 0)
                goto fail;
        uint64_t *new_l1 = calloc(MAX(ALIGN_UP(l1_size * 8, (uint64_t) s->h.cluster_size) / 8, (uint64_t) 1),
                                  sizeof(uint64_t));
        if (!new_l1) {
                r = vh_error_set(err, -ENOMEM, "out of memory");
                goto fail;
        }
        for (uint32_t k = 0; k < sn->l1_size; k++)
                new_l1[k] = sn_l1[k] & ~QCOW2_OFLAG_COPIED;

        /* 1. The snapshot's state gets the references of the new active
         * state, counted before the header names it. */
        r = l1_references(img, sn_l1, sn->l1_size, +1, err);
        if (r >= 0) {
                uint64_t off;
                r = l1_write_new(img, new_l1, l1_size, &off, err);
                if (r >= 0)
                        r = qcow2_flush(img, err);
                if (r >= 0) {
                        /* 2. The header switches to the new active L1 and size. */
                        uint64_t old_off = s->h.l1_table_offset;
                        uint64_t old_bytes = ALIGN_UP((uint64_t) s->h.l1_size * 8, (uint64_t) s->h.cluster_size);
                        uint64_t *old_l1 = s->l1;
                        uint32_t old_size = s->h.l1_size;
                        s->h.l1_table_offset = off;
                        s->h.l1_size = (uint32_t) l1_size;
                        s->h.size = size;
                        r = qcow2_header_update(img, err);
                        if (r < 0) {
                                s->h.l1_table_offset = old_off;
                                s->h.l1_size = old_size;
                                free(new_l1);
                                goto fail;
                        }
                        s->l1 = new_l1;
                        new_l1 = NULL;
                        img->virtual_size = size;
                        /* 3. What only the old active state used goes. */
                        r = l1_references(img, old_l1, old_size, -1, err);
                        if (r >= 0 && old_off)
                                r = qcow2_free_later(img, old_off, old_bytes, err);
                        free(old_l1);
                        if (r >= 0)
                                r = qcow2_flush(img, err);
                        /* 4. COPIED where our references are the only ones. */
                        if (r >= 0)
                                r = qcow2_fix_copied_flags(img, err);
                        if (r >= 0)
                                r = qcow2_flush(img, err);
                }
        }
        free(new_l1);
fail:
        if (r < 0)
                r = image_error_prefix(err, r, img->filename);
out:
        qcow2_snapshot_table_free(t, n);
        return r;
}

int vh_image_snapshot_delete(struct vh_image *img, const char *name, struct vh_error *err) {
        _cleanup_free_ uint64_t *sn_l1 = NULL;
        struct qcow2_snapshot *t = NULL;
        size_t n = 0, i;
        int r = begin_named(img, "delete", name, &t, &n, &i, err);
        if (r < 0)
                return r;
        struct qcow2_state *s = img->priv;
        struct qcow2_snapshot gone = t[i];
        uint64_t old_offset = s->h.snapshots_offset, old_bytes = table_bytes(t, n);
        memmove(&t[i], &t[i + 1], (n - i - 1) * sizeof(*t));
        n--;

        uint64_t new_offset;
        /* 1. The new table without it, then the header. */
        r = qcow2_l1_read(img, gone.l1_offset, gone.l1_size, &sn_l1, err);
        if (r >= 0)
                r = table_write(img, t, n, &new_offset, err);
        if (r >= 0)
                r = table_switch(img, new_offset, n, old_offset, old_bytes, err);
        /* 2. Its references and its L1 table go, after the header no
         * longer names it. */
        if (r >= 0)
                r = l1_references(img, sn_l1, gone.l1_size, -1, err);
        if (r >= 0)
                r = qcow2_free_later(img, gone.l1_offset,
                                     ALIGN_UP(MAX((uint64_t) gone.l1_size, 1) * 8, (uint64_t) s->h.cluster_size), err);
        if (r >= 0)
                r = qcow2_flush(img, err);
        /* 3. What is ours alone again gets COPIED back. */
        if (r >= 0)
                r = qcow2_fix_copied_flags(img, err);
        if (r >= 0)
                r = qcow2_flush(img, err);
        free(gone.id);
        free(gone.name);
        free(gone.extra);
        if (r < 0)
                r = image_error_prefix(err, r, img->filename);
        qcow2_snapshot_table_free(t, n);
        return r;
}

int vh_image_snapshot_load(struct vh_image *img, const char *id, const char *name, struct vh_error *err) {
        if (!id && !name)
                return vh_error_set(err, -EINVAL, "no snapshot id or name given");
        if (img->format != VH_IMAGE_FORMAT_QCOW2)
                return vh_error_set(err, -EOPNOTSUPP, "%s: a %s image has no internal snapshots", img->filename,
                                    vh_image_format_to_string(img->format));
        if (img->read_write)
                /* Writes would go through the snapshot's tables. */
                return vh_error_set(err, -EINVAL, "%s: a snapshot is loaded only into an image opened read-only",
                                    img->filename);
        struct qcow2_snapshot *t = NULL;
        size_t n = 0;
        int r = table_read(img, &t, &n, err);
        if (r < 0)
                return r;
        size_t i;
        for (i = 0; i < n; i++)
                if ((!id || streq(t[i].id, id)) && (!name || streq(t[i].name, name)))
                        break;
        if (i == n) {
                /* qemu-img's words. */
                r = vh_error_set(err, -ENOENT, "Can't find snapshot");
                goto out;
        }
        struct qcow2_state *s = img->priv;
        const struct qcow2_snapshot *sn = &t[i];
        /* The virtual size stays the active state's, as in qemu-img: what
         * lies past the snapshot's L1 table reads as zeros, what lies past
         * the current size is not shown. */
        uint64_t *l1 = NULL;
        r = qcow2_l1_read(img, sn->l1_offset, sn->l1_size, &l1, err);
        if (r < 0)
                goto out;
        char *loaded = strdup(sn->id);
        if (!loaded) {
                free(l1);
                r = vh_error_set(err, -ENOMEM, "out of memory");
                goto out;
        }
        free(s->l1);
        s->l1 = l1;
        s->h.l1_size = sn->l1_size;
        free(img->snapshot_id);
        img->snapshot_id = loaded;
        /* Decoded clusters were the active state's. */
        s->dbuf_valid = false;
out:
        qcow2_snapshot_table_free(t, n);
        return r;
}
