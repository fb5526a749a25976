/* image/convert.c: 'img convert': copies what a guest sees in an image
 * (through its backing chain) into a new standalone raw or qcow2 image.
 *
 * The source is walked with vh_image_map(): ranges known to read as zeros
 * (unallocated clusters without backing data, zero clusters, holes in a
 * raw file found with SEEK_DATA/SEEK_HOLE) are skipped without reading.
 * What is read is checked for zeros once more, so an image whose zeros
 * were written out as data still converts to a small file: raw output is
 * sparse (ftruncate, then only non-zero blocks are written), qcow2 output
 * leaves all-zero clusters unallocated and writes the rest sequentially
 * (see qcow2-write.c for the order of the metadata). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/macro.h"
#include "image/image-internal.h"
#include "image/qcow2.h"

/* How much is read from the source at a time; a multiple of every qcow2
 * cluster size. */
#define CONVERT_CHUNK (UINT64_C(2) << 20)
/* Granularity of zero detection for raw output (qemu-img's default
 * min_sparse is 4 KiB as well). */
#define RAW_SPARSE_BLOCK UINT64_C(4096)

struct convert_target {
        uint64_t unit; /* zero detection granularity; divides CONVERT_CHUNK */
        /* Takes 'len' bytes of guest data at 'offset' (unit aligned); 'buf'
         * is zero-padded up to a whole unit. */
        int (*emit)(struct convert_target *t, uint64_t offset, const uint8_t *buf, uint64_t len, struct vh_error *err);
        int fd;
        struct qcow2_writer *qcow2;
        const char *path; /* for messages */
};

static int emit_raw(struct convert_target *t, uint64_t offset, const uint8_t *buf, uint64_t len,
                    struct vh_error *err) {
        /* Write runs of non-zero blocks; zero blocks stay holes. */
        uint64_t run_start = 0, run_len = 0;
        for (uint64_t pos = 0; pos < len; pos += t->unit) {
                uint64_t n = MIN(t->unit, len - pos);
                bool zero = image_buffer_is_zero(buf + pos, (size_t) n);
                if (!zero) {
                        if (run_len == 0)
                                run_start = pos;
                        run_len += n;
                }
                if ((zero || pos + n >= len) && run_len > 0) {
                        int r = image_pwrite_all(t->fd, buf + run_start, (size_t) run_len, offset + run_start);
                        if (r < 0)
                                return vh_error_set(err, r, "%s: write at %" PRIu64 " failed: %s", t->path,
                                                    offset + run_start, strerror(-r));
                        run_len = 0;
                }
        }
        return 0;
}

static int emit_qcow2(struct convert_target *t, uint64_t offset, const uint8_t *buf, uint64_t len,
                      struct vh_error *err) {
        for (uint64_t pos = 0; pos < len; pos += t->unit) {
                /* A partial last cluster is zero-padded by the caller. */
                if (image_buffer_is_zero(buf + pos, (size_t) t->unit))
                        continue;
                int r = qcow2_writer_add_cluster(t->qcow2, (offset + pos) / t->unit, buf + pos, err);
                if (r < 0)
                        return image_error_prefix(err, r, t->path);
        }
        return 0;
}

static int convert_loop(struct vh_image *src, struct convert_target *t, const struct vh_image_convert_options *opts,
                        struct vh_error *err) {
        const uint64_t size = vh_image_virtual_size(src);
        const uint64_t unit = t->unit;

        _cleanup_free_ uint8_t *buf = aligned_alloc(4096, (size_t) CONVERT_CHUNK);
        if (!buf)
                return vh_error_set(err, -ENOMEM, "out of memory");

        uint64_t off = 0; /* always unit aligned */
        while (off < size) {
                if (opts->progress)
                        opts->progress(off, size, opts->userdata);

                struct vh_image_extent e;
                int r = vh_image_map(src, off, size - off, &e, err);
                if (r < 0)
                        return r;

                uint64_t n;
                if (e.zero) {
                        /* Skip the whole units the zero range covers. */
                        uint64_t end = off + e.length;
                        if (end >= size) {
                                off = size;
                                continue;
                        }
                        uint64_t skip_to = end / unit * unit;
                        if (skip_to > off) {
                                off = skip_to;
                                continue;
                        }
                        n = unit; /* zeros and data share this unit */
                } else
                        n = MIN(CONVERT_CHUNK, ALIGN_UP(e.length, unit));
                n = MIN(n, size - off);

                r = vh_image_read(src, off, buf, (size_t) n, err);
                if (r < 0)
                        return r;
                uint64_t padded = ALIGN_UP(n, unit);
                memset(buf + n, 0, (size_t) (padded - n));

                r = t->emit(t, off, buf, n, err);
                if (r < 0)
                        return r;
                off += n;
        }
        if (opts->progress)
                opts->progress(size, size, opts->userdata);
        return 0;
}

/* Writing over a file the source reads from would feed the copy its own
 * output. */
static int check_not_in_chain(struct vh_image *src, const char *dst_path, struct vh_error *err) {
        struct stat st;
        if (stat(dst_path, &st) < 0)
                return 0;
        for (struct vh_image *x = src; x; x = vh_image_backing(x))
                if (x->dev == st.st_dev && x->ino == st.st_ino)
                        return vh_error_set(err, -EINVAL, "%s: is %s, which the source image reads from", dst_path,
                                            x->filename);
        return 0;
}

int vh_image_convert(struct vh_image *src, const char *dst_path, const struct vh_image_convert_options *opts,
                     struct vh_error *err) {
        const uint64_t size = vh_image_virtual_size(src);
        int r;

        if (opts->format != VH_IMAGE_FORMAT_RAW && opts->format != VH_IMAGE_FORMAT_QCOW2)
                return vh_error_set(err, -EINVAL, "unknown output format");
        if (size > VH_IMAGE_MAX_VIRTUAL_SIZE)
                return vh_error_set(err, -EFBIG, "%s: virtual size %" PRIu64 " is larger than the limit", src->filename,
                                    size);
        r = check_not_in_chain(src, dst_path, err);
        if (r < 0)
                return r;

        struct convert_target t = { .fd = -1 };
        struct qcow2_writer_params p = {};
        if (opts->format == VH_IMAGE_FORMAT_QCOW2) {
                uint32_t cs = opts->cluster_size ? opts->cluster_size : UINT32_C(1) << QCOW2_DEFAULT_CLUSTER_BITS;
                unsigned rb = opts->refcount_bits ? opts->refcount_bits : 16;
                if (cs & (cs - 1))
                        return vh_error_set(err, -EINVAL, "cluster size %" PRIu32 " is not a power of two", cs);
                if (rb & (rb - 1) || rb > 64)
                        return vh_error_set(err, -EINVAL, "refcount_bits %u is not a power of two between 1 and 64",
                                            rb);
                p = (struct qcow2_writer_params) {
                        .virtual_size = size,
                        .cluster_bits = (unsigned) __builtin_ctz(cs),
                        .version = opts->version ? opts->version : 3,
                        .refcount_order = (unsigned) __builtin_ctz(rb),
                        .lazy_refcounts = opts->lazy_refcounts,
                };
                r = qcow2_writer_params_check(&p, err);
                if (r < 0)
                        return r;
        }

        struct image_output out = IMAGE_OUTPUT_INIT;
        r = image_output_begin(dst_path, &out, err);
        if (r < 0)
                return r;
        t.fd = out.fd;
        t.path = dst_path;

        if (opts->format == VH_IMAGE_FORMAT_RAW) {
                t.unit = RAW_SPARSE_BLOCK;
                t.emit = emit_raw;
                r = raw_create(out.fd, size, err);
                if (r < 0)
                        r = image_error_prefix(err, r, dst_path);
        } else {
                t.unit = UINT64_C(1) << p.cluster_bits;
                t.emit = emit_qcow2;
                r = qcow2_writer_new(out.fd, &p, &t.qcow2, err);
                if (r < 0)
                        r = image_error_prefix(err, r, dst_path);
        }
        if (r >= 0)
                r = convert_loop(src, &t, opts, err);
        if (r >= 0 && t.qcow2) {
                r = qcow2_writer_finish(t.qcow2, err);
                if (r < 0)
                        r = image_error_prefix(err, r, dst_path);
        }
        if (r >= 0)
                r = image_output_commit(&out, err);
        qcow2_writer_free(t.qcow2);
        image_output_done(&out);
        return r;
}
