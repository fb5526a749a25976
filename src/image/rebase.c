/* image/rebase.c: 'img rebase': giving a qcow2 image another backing file
 * (or none), as 'qemu-img rebase' does.
 *
 * Safe mode keeps what the guest sees: every range the image does not hold
 * itself is read through the old chain and through the new one, and where
 * they differ the old content is written into the image (whole clusters).
 * Only then, with the image flushed, is the header rewritten to name the
 * new backing file. A crash before that leaves the old backing file named
 * and an image whose new clusters hold exactly what the old chain showed.
 * Unsafe mode (-u) only rewrites the header. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/macro.h"
#include "image/image-internal.h"
#include "image/qcow2.h"

/* Copies the header extensions of 'old' (the image's first cluster as
 * read, header 'h', 'cs' bytes) into 'buf' at *out, in their order, all
 * but those of type 'skip' (the one the caller writes itself), then the
 * end marker (zeros: 'buf' is zeroed); *out ends past it. */
int qcow2_header_copy_extensions(const uint8_t *old, const struct qcow2_header *h, uint32_t cs, uint32_t skip,
                                 uint8_t *buf, size_t *out, struct vh_error *err) {
        uint64_t ext_end = h->backing_file_offset ? MIN(h->backing_file_offset, (uint64_t) cs) : cs;
        uint64_t in = h->header_length;
        for (unsigned n = 0; n < QCOW2_MAX_HEADER_EXTENSIONS && in + 8 <= ext_end; n++) {
                uint32_t type = be32_load(old + in), len = be32_load(old + in + 4);
                if (type == QCOW2_EXT_END)
                        break;
                size_t whole = 8 + ALIGN_UP((size_t) len, (size_t) 8);
                if (len > ext_end - in - 8)
                        return vh_error_set(err, -EINVAL, "header extension %#010" PRIx32 " is too long", type);
                if (type != skip) {
                        if (*out + whole + 8 > cs)
                                return vh_error_set(err, -ENAMETOOLONG, "the header extensions do not fit");
                        memcpy(buf + *out, old + in, MIN(whole, (size_t) (ext_end - in)));
                        *out += whole;
                }
                in += whole;
        }
        *out += 8;
        return 0;
}

/* Bytes compared at a time (a multiple of every cluster size). */
#define REBASE_CHUNK (UINT64_C(2) << 20)

int qcow2_header_set_backing(struct vh_image *img, const char *backing, const char *backing_format,
                             struct vh_error *err) {
        struct qcow2_state *s = img->priv;
        struct qcow2_header *h = &s->h;
        const uint32_t cs = h->cluster_size;
        size_t name_len = backing ? strlen(backing) : 0;
        size_t fmt_len = backing_format ? strlen(backing_format) : 0;
        int r;

        if (name_len > VH_IMAGE_MAX_BACKING_NAME)
                return vh_error_set(err, -ENAMETOOLONG, "backing file name is longer than %d bytes",
                                    VH_IMAGE_MAX_BACKING_NAME);
        if (fmt_len > QCOW2_MAX_BACKING_FORMAT)
                return vh_error_set(err, -EINVAL, "backing format name is too long");

        _cleanup_free_ uint8_t *old = malloc(cs), *buf = calloc(1, cs);
        if (!old || !buf)
                return vh_error_set(err, -ENOMEM, "out of memory");
        r = image_pread(img, old, cs, 0, err);
        if (r < 0)
                return r;

        /* The fixed header, then the extensions we keep (all but the
         * backing format, which is rebuilt), in their order. */
        memcpy(buf, old, h->header_length);
        size_t out = h->header_length;
        if (fmt_len) {
                be32_store(buf + out, QCOW2_EXT_BACKING_FORMAT);
                be32_store(buf + out + 4, (uint32_t) fmt_len);
                memcpy(buf + out + 8, backing_format, fmt_len);
                out += 8 + ALIGN_UP(fmt_len, (size_t) 8);
        }
        r = qcow2_header_copy_extensions(old, h, cs, QCOW2_EXT_BACKING_FORMAT, buf, &out, err);
        if (r < 0)
                return r;
        if (out + name_len > cs)
                return vh_error_set(err, -ENAMETOOLONG,
                                    "the backing file name does not fit in the first cluster (%" PRIu32 " bytes)", cs);
        if (name_len) {
                memcpy(buf + out, backing, name_len);
                be64_store(buf + 8, out);
                be32_store(buf + 16, (uint32_t) name_len);
        } else {
                be64_store(buf + 8, 0);
                be32_store(buf + 16, 0);
        }

        /* One write of the first cluster, as QEMU updates it. */
        r = image_pwrite_all(img->fd, buf, cs, 0);
        if (r < 0)
                return vh_error_set(err, r, "writing the header failed: %s", strerror(-r));
        r = qcow2_sync(img, "header", err);
        if (r < 0)
                return r;

        h->backing_file_offset = name_len ? out : 0;
        h->backing_file_size = (uint32_t) name_len;
        memcpy(h->backing_file, backing ? backing : "", name_len);
        h->backing_file[name_len] = '\0';
        memcpy(h->backing_format, backing_format ? backing_format : "", fmt_len);
        h->backing_format[fmt_len] = '\0';
        return 0;
}

/* Opens the new backing file as the image will see it, checking its format
 * and that the image is not part of the new chain. */
static int open_new_backing(struct vh_image *img, const struct vh_image_rebase_options *opts, char **ret_path,
                            struct vh_image **ret, struct vh_error *err) {
        _cleanup_free_ char *path = NULL;
        struct vh_image *b = NULL;
        int r = image_open_backing_file(img->filename, opts->backing_file, opts->backing_format, "new backing file",
                                        &path, &b, err);
        if (r < 0)
                return r;
        for (struct vh_image *x = b; x; x = x->backing)
                if (x->dev == img->dev && x->ino == img->ino) {
                        vh_image_free(b);
                        return vh_error_set(err, -ELOOP, "%s would be its own backing file (through %s)",
                                            img->filename, x->filename);
                }
        *ret_path = TAKE_PTR(path);
        *ret = b;
        return 0;
}

/* qemu-img rebase's steps up to 'end', from '*qoff' where its loop
 * stands: a range of up to 2 MiB of one allocation status in the image's
 * own layer; one that the image does not hold is cut where a backing file
 * ends (old_end, new_end) and counts as a step in '*steps'. Its loop goes
 * on from where a step was cut, so the steps are counted in its order,
 * not from vmhost's ranges. */
static int qemu_steps_until(struct vh_image *img, uint64_t end, uint64_t old_end, uint64_t new_end, uint64_t *qoff,
                            uint64_t *steps, struct vh_error *err) {
        const uint64_t size = img->virtual_size;
        while (*qoff < end && *qoff < size) {
                struct image_layer_extent le;
                int r = img->driver->map(img, *qoff, MIN(size - *qoff, REBASE_CHUNK), &le, err);
                if (r < 0)
                        return image_error_prefix(err, r, img->filename);
                if (le.length == 0)
                        return vh_error_set(err, -EIO, "%s: empty extent at %" PRIu64, img->filename, *qoff);
                uint64_t n = MIN(le.length, size - *qoff);
                if (le.kind == IMAGE_EXTENT_UNALLOCATED) {
                        if (*qoff < old_end && old_end < *qoff + n)
                                n = old_end - *qoff;
                        if (*qoff < new_end && new_end < *qoff + n)
                                n = new_end - *qoff;
                        (*steps)++;
                }
                *qoff += n;
        }
        return 0;
}

static int copy_differences(struct vh_image *img, struct vh_image *new_backing,
                            const struct vh_image_rebase_options *opts, struct vh_error *err) {
        const uint64_t size = img->virtual_size;
        const uint64_t cs = img->format == VH_IMAGE_FORMAT_QCOW2 ? ((struct qcow2_state *) img->priv)->h.cluster_size
                                                                 : 512;
        _cleanup_free_ uint8_t *a = aligned_alloc(4096, (size_t) REBASE_CHUNK);
        _cleanup_free_ uint8_t *b = aligned_alloc(4096, (size_t) REBASE_CHUNK);
        if (!a || !b)
                return vh_error_set(err, -ENOMEM, "out of memory");

        /* qemu-img's steps (opts->progress_qemu_steps): the unit and how
         * many of them make 100%; where the backing files end. */
        const uint64_t unit = MIN(size, REBASE_CHUNK), units = unit ? size / unit : 0;
        const uint64_t old_end = img->backing ? img->backing->virtual_size : 0;
        const uint64_t new_end = new_backing ? new_backing->virtual_size : 0;
        uint64_t pieces = 0, qoff = 0;

        uint64_t off = 0;
        while (off < size) {
                int r = opts->progress_qemu_steps ? image_progress(opts->progress, opts->userdata, pieces * unit,
                                                                   units * unit)
                                                  : image_progress(opts->progress, opts->userdata, off, size);
                if (r < 0)
                        return r;
                /* The image's own layer, not the chain: a range past the
                 * end of a short backing file reads as zeros "at depth 0"
                 * in vh_image_map(), yet the image does not hold it. */
                struct image_layer_extent le;
                r = img->driver->map(img, off, MIN(size - off, REBASE_CHUNK), &le, err);
                if (r < 0)
                        return image_error_prefix(err, r, img->filename);
                if (le.length == 0)
                        return vh_error_set(err, -EIO, "%s: empty extent at %" PRIu64, img->filename, off);
                uint64_t len = MIN(le.length, size - off);
                if (opts->progress_qemu_steps) {
                        r = qemu_steps_until(img, off + len, old_end, new_end, &qoff, &pieces, err);
                        if (r < 0)
                                return r;
                }
                if (le.kind != IMAGE_EXTENT_UNALLOCATED) {
                        /* The image answers itself; the backing file does
                         * not matter here. */
                        off += len;
                        continue;
                }
                bool old_zero, new_zero;
                r = image_view_is_zero(img, off, len, &old_zero, err);
                if (r >= 0 && old_zero)
                        r = image_view_is_zero(new_backing, off, len, &new_zero, err);
                if (r < 0)
                        return r;
                if (old_zero && new_zero) {
                        off += len;
                        continue;
                }
                r = vh_image_read(img, off, a, (size_t) len, err);
                if (r < 0)
                        return r;
                r = image_read_view(new_backing, off, b, len, err);
                if (r < 0)
                        return r;
                /* Cluster by cluster (ranges the image does not hold start
                 * and end on cluster boundaries, or at the end of the disk). */
                for (uint64_t p = 0; p < len;) {
                        uint64_t n = MIN(cs - ((off + p) % cs), len - p);
                        if (memcmp(a + p, b + p, (size_t) n) != 0) {
                                r = vh_image_write(img, off + p, a + p, (size_t) n, err);
                                if (r < 0)
                                        return r;
                        }
                        p += n;
                }
                off += len;
        }
        if (opts->progress_qemu_steps)
                return image_progress(opts->progress, opts->userdata, pieces * unit, units * unit);
        return 0;
}

int vh_image_rebase(struct vh_image *img, const struct vh_image_rebase_options *opts, struct vh_error *err) {
        const char *name = isempty(opts->backing_file) ? NULL : opts->backing_file;
        int r;

        if (img->format != VH_IMAGE_FORMAT_QCOW2)
                return vh_error_set(err, -EOPNOTSUPP, "%s: only qcow2 images have a backing file", img->filename);
        if (!img->read_write)
                return vh_error_set(err, -EROFS, "%s: cannot rebase: the image is open read-only", img->filename);
        if (name && (opts->backing_format < 0 || opts->backing_format >= _VH_IMAGE_FORMAT_MAX))
                return vh_error_set(err, -EINVAL,
                                    "the format of the new backing file must be given (-F), as qemu-img asks");

        _cleanup_free_ char *new_path = NULL;
        struct vh_image *new_backing = NULL;
        if (name && !opts->unsafe) {
                r = open_new_backing(img, opts, &new_path, &new_backing, err);
                if (r < 0)
                        return r;
        } else if (name) {
                if (image_backing_path(img->filename, name, &new_path) < 0)
                        new_path = NULL; /* a protocol name: stored, not opened */
        }

        if (!opts->unsafe) {
                if (img->backing_name && !img->backing) {
                        vh_image_free(new_backing);
                        return vh_error_set(err, -EINVAL,
                                            "%s: the old backing file is not open; safe mode needs it (or use -u)",
                                            img->filename);
                }
                r = copy_differences(img, new_backing, opts, err);
                if (r >= 0 && !opts->progress_qemu_steps)
                        r = image_progress(opts->progress, opts->userdata, img->virtual_size, img->virtual_size);
                if (r >= 0 || r == -ECANCELED) {
                        /* Cancelled too: what was copied holds what the
                         * old chain shows, on stable storage before the
                         * call returns. */
                        int q = vh_image_flush(img, err);
                        if (q < 0)
                                r = q;
                }
                if (r == -ECANCELED)
                        r = vh_error_set(err, r, "cancelled; %s still names its old backing file and reads the same",
                                         img->filename);
                if (r < 0) {
                        vh_image_free(new_backing);
                        return r;
                }
        } else if (!opts->progress_qemu_steps) {
                r = image_progress(opts->progress, opts->userdata, img->virtual_size, img->virtual_size);
                if (r < 0) {
                        vh_image_free(new_backing);
                        return vh_error_set(err, r, "cancelled; %s still names its old backing file", img->filename);
                }
        }

        r = qcow2_header_set_backing(img, name, name ? vh_image_format_to_string(opts->backing_format) : NULL, err);
        if (r < 0) {
                vh_image_free(new_backing);
                return image_error_prefix(err, r, img->filename);
        }

        /* The image object follows: reads now go to the new chain. */
        char *bn = name ? strdup(name) : NULL;
        if (name && !bn) {
                vh_image_free(new_backing);
                return vh_error_set(err, -ENOMEM, "out of memory");
        }
        vh_image_free(img->backing);
        free(img->backing_name);
        free(img->backing_path);
        img->backing = new_backing;
        img->backing_name = bn;
        img->backing_path = TAKE_PTR(new_path);
        img->backing_format = name ? opts->backing_format : VH_IMAGE_FORMAT_PROBE;
        for (struct vh_image *x = img->backing; x; x = x->backing)
                x->depth++;
        return 0;
}
