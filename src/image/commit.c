/* image/commit.c: 'img commit': folding an overlay back into a backing
 * file, as 'qemu-img commit' does.
 *
 * Everything the layers above the base answer themselves (data, and zeros
 * that hide the base's data) is written into the base; ranges the base or
 * something below it answers are skipped. The base is flushed before the
 * top image is emptied, so that at every moment the top image reads the
 * same as before: a crash during the copy leaves a base with some of the
 * new data and an intact top; a crash while emptying leaves a top image
 * whose remaining clusters equal what the base now holds. */
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

/* Bytes read and written at a time (a multiple of every cluster size). */
#define COMMIT_CHUNK (UINT64_C(4) << 20)

/* Finds the layer 'base' names, as qemu-img does: for each layer L that
 * has a backing file, a relative 'base' is taken relative to L's
 * directory (not the working directory) and an absolute one as it is;
 * it names L's backing file if both are the same file. A name relative to
 * the working directory therefore matches only where it happens to be the
 * same path, and scripts that rely on qemu-img refusing it keep working. */
static int find_base(struct vh_image *top, const char *base, struct vh_image **ret, struct vh_error *err) {
        for (struct vh_image *x = top; x->backing; x = x->backing) {
                _cleanup_free_ char *path = NULL;
                struct stat st;
                int r = image_backing_path(x->filename, base, &path);
                if (r == -ENOMEM)
                        return vh_error_set(err, r, "out of memory");
                if (r < 0 || stat(path, &st) < 0)
                        continue;
                if (x->backing->dev == st.st_dev && x->backing->ino == st.st_ino) {
                        *ret = x->backing;
                        return 0;
                }
        }
        return vh_error_set(err, -ENOENT, "Did not find '%s' in the backing chain of '%s'", base, top->filename);
}

/* Writes zeros into 'base' over [off, off + len) where it does not read as
 * zeros already. */
static int zero_where_needed(struct vh_image *base, uint64_t off, uint64_t len, struct vh_error *err) {
        while (len > 0) {
                struct vh_image_extent e;
                int r = vh_image_map(base, off, len, &e, err);
                if (r < 0)
                        return r;
                if (e.length == 0)
                        return vh_error_set(err, -EIO, "%s: empty extent at %" PRIu64, base->filename, off);
                if (!e.zero) {
                        r = vh_image_write_zeroes(base, off, e.length, err);
                        if (r < 0)
                                return r;
                }
                off += e.length;
                len -= e.length;
        }
        return 0;
}

static int copy_down(struct vh_image *top, struct vh_image *base, const struct vh_image_commit_options *opts,
                     struct vh_error *err) {
        const uint64_t size = top->virtual_size;
        _cleanup_free_ uint8_t *buf = aligned_alloc(4096, (size_t) COMMIT_CHUNK);
        if (!buf)
                return vh_error_set(err, -ENOMEM, "out of memory");

        uint64_t off = 0;
        while (off < size) {
                int r = image_progress(opts->progress, opts->userdata, off, size);
                if (r < 0)
                        return r;
                struct vh_image_extent e;
                r = vh_image_map(top, off, MIN(size - off, COMMIT_CHUNK), &e, err);
                if (r < 0)
                        return r;
                if (e.length == 0)
                        return vh_error_set(err, -EIO, "%s: empty extent at %" PRIu64, top->filename, off);
                if (e.depth >= base->depth) {
                        /* The base (or what is below it) answers: nothing to do. */
                } else if (e.zero) {
                        r = zero_where_needed(base, off, e.length, err);
                } else {
                        r = vh_image_read(top, off, buf, (size_t) e.length, err);
                        if (r >= 0)
                                r = image_buffer_is_zero(buf, (size_t) e.length)
                                            ? zero_where_needed(base, off, e.length, err)
                                            : vh_image_write(base, off, buf, (size_t) e.length, err);
                }
                if (r < 0)
                        return r;
                off += e.length;
        }
        return 0;
}

/* Gives the space of the freed clusters back to the file system, as
 * qemu-img's commit does for the emptied top: runs of free clusters become
 * holes (where the file system can punch them) and the file is cut after
 * the last cluster still in use. Only called after a flush, so nothing on
 * disk names the clusters given back; the refcounts do not change. */
static int release_free_clusters(struct vh_image *img, struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        const unsigned cb = s->h.cluster_bits;
        struct stat st;
        if (fstat(img->fd, &st) < 0)
                return vh_error_set(err, negative_errno(), "%s: cannot stat: %m", img->filename);
        uint64_t n = DIV_ROUND_UP((uint64_t) st.st_size, UINT64_C(1) << cb), used_end = 1, run = 0;
        /* Runs of free clusters between used ones become holes; the run
         * after the last used cluster goes with the truncation below. */
        for (uint64_t c = 1; c < n; c++) {
                uint64_t rc;
                int r = qcow2_refcount_get(img, c << cb, &rc, err);
                if (r < 0)
                        return r;
                if (rc == 0) {
                        if (!run)
                                run = c;
                        continue;
                }
                if (run)
                        /* Best effort: without hole punching the space stays
                         * allocated, as it was. */
                        (void) fallocate(img->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) (run << cb),
                                         (off_t) ((c - run) << cb));
                run = 0;
                used_end = c + 1;
        }
        if ((used_end << cb) >= (uint64_t) st.st_size)
                return 0;
        if (ftruncate(img->fd, (off_t) (used_end << cb)) < 0)
                return vh_error_set(err, negative_errno(), "%s: cannot give back the freed space: %m", img->filename);
        img->file_size = used_end << cb;
        return 0;
}

/* Drops every cluster of the active state of 'img' (qemu-img's "empty"):
 * the L1 entries go first, the tables and data they reached are freed
 * after, so each L2 range of the image reads either its old clusters or
 * the backing file, which holds the same data now. */
static int qcow2_make_empty(struct vh_image *img, struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        const struct qcow2_header *h = &s->h;
        int r = qcow2_prepare_write(img, err);
        if (r < 0)
                return r;
        for (uint64_t i = 0; i < h->l1_size; i++) {
                uint64_t l2 = s->l1[i] & QCOW2_L1E_OFFSET_MASK;
                if (!l2)
                        continue;
                uint8_t *table;
                r = qcow2_l2_load(img, l2, &table, err);
                if (r < 0)
                        return r;
                for (uint64_t j = 0; j < h->l2_entries; j++) {
                        r = qcow2_free_l2_entry_later(img, be64_load(table + j * 8), err);
                        if (r < 0)
                                return r;
                }
                r = qcow2_free_later(img, l2, h->cluster_size, err);
                if (r < 0)
                        return r;
                s->l1[i] = 0;
                s->l1_dirty_lo = MIN(s->l1_dirty_lo, i);
                s->l1_dirty_hi = MAX(s->l1_dirty_hi, i + 1);
        }
        r = qcow2_flush(img, err);
        if (r < 0)
                return r;
        return release_free_clusters(img, err);
}

int vh_image_commit(struct vh_image *top, const struct vh_image_commit_options *opts, struct vh_error *err) {
        struct vh_image *base = top->backing;
        int r;

        if (!top->backing_name)
                return vh_error_set(err, -EINVAL, "%s: the image has no backing file to commit into", top->filename);
        if (!top->backing)
                return vh_error_set(err, -EINVAL, "%s: the backing chain was not opened", top->filename);
        bool empty_top = !opts->keep_top && !opts->base;
        if (opts->base) {
                r = find_base(top, opts->base, &base, err);
                if (r < 0)
                        return r;
        }
        if (empty_top && !top->read_write)
                return vh_error_set(err, -EROFS, "%s: must be open read-write to be emptied after the commit",
                                    top->filename);

        r = image_reopen_rw(base, err);
        if (r < 0)
                return r;
        if (base->virtual_size < top->virtual_size) {
                /* As qemu-img: a smaller base grows to the top's size. */
                r = vh_image_resize(base, top->virtual_size, false, err);
                if (r < 0)
                        return r;
        }

        r = copy_down(top, base, opts, err);
        if (r >= 0)
                r = image_progress(opts->progress, opts->userdata, top->virtual_size, top->virtual_size);
        if (r == -ECANCELED) {
                /* What was copied is what the top shows there, so the top
                 * reads the same; on stable storage it is a consistent
                 * part of the commit that a later commit completes. */
                r = vh_image_flush(base, err);
                if (r < 0)
                        return r;
                return vh_error_set(err, -ECANCELED,
                                    "cancelled; %s holds part of the data of %s, which is unchanged and reads "
                                    "the same",
                                    base->filename, top->filename);
        }
        if (r < 0)
                return r;
        /* The base holds everything on stable storage before the top
         * forgets any of it. */
        r = vh_image_flush(base, err);
        if (r < 0)
                return r;
        if (empty_top) {
                if (top->format != VH_IMAGE_FORMAT_QCOW2)
                        return vh_error_set(err, -EOPNOTSUPP, "%s: only qcow2 images can be emptied",
                                            top->filename);
                r = qcow2_make_empty(top, err);
                if (r < 0)
                        return image_error_prefix(err, r, top->filename);
        }
        return 0;
}
