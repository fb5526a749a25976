/* image/raw.c: raw images: the file is the disk. The virtual size is the
 * file size rounded up to 512 bytes (as QEMU reports it; the tail reads as
 * zeros), and holes found with SEEK_DATA/SEEK_HOLE are reported as zero
 * extents so that convert need not read them. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/macro.h"
#include "image/image-internal.h"

struct raw_state {
        /* The last data range SEEK_DATA/SEEK_HOLE found, so that walking a
         * file cluster by cluster costs one lseek pair per data range. */
        uint64_t data_start, data_end;
        bool seek_works;
};

static int raw_open(struct vh_image *img, struct vh_error *err) {
        struct raw_state *s = calloc(1, sizeof(*s));
        if (!s)
                return vh_error_set(err, -ENOMEM, "out of memory");
        s->seek_works = true;
        img->priv = s;
        img->virtual_size = ALIGN_UP(img->file_size, (uint64_t) 512);
        return 0;
}

static void raw_close(struct vh_image *img) {
        free(img->priv);
        img->priv = NULL;
}

static int raw_map(struct vh_image *img, uint64_t offset, uint64_t max_len, struct image_layer_extent *ret,
                   struct vh_error *err) {
        struct raw_state *s = img->priv;

        if (offset >= img->file_size) {
                /* The tail up to the next 512 bytes. */
                *ret = (struct image_layer_extent) { .length = max_len, .kind = IMAGE_EXTENT_ZERO };
                return 0;
        }
        uint64_t file_left = img->file_size - offset;

        if (s->seek_works && !(offset >= s->data_start && offset < s->data_end)) {
                off_t data = lseek(img->fd, (off_t) offset, SEEK_DATA);
                if (data < 0 && errno == ENXIO) {
                        /* A hole up to the end of the file. */
                        *ret = (struct image_layer_extent) { .length = max_len, .kind = IMAGE_EXTENT_ZERO };
                        return 0;
                }
                if (data < 0) {
                        /* File systems without SEEK_DATA: everything is data. */
                        s->seek_works = false;
                } else if ((uint64_t) data > offset) {
                        *ret = (struct image_layer_extent) {
                                .length = MIN(max_len, (uint64_t) data - offset),
                                .kind = IMAGE_EXTENT_ZERO,
                        };
                        return 0;
                } else {
                        off_t hole = lseek(img->fd, (off_t) offset, SEEK_HOLE);
                        if (hole < 0 || (uint64_t) hole <= offset)
                                s->seek_works = false;
                        else {
                                s->data_start = offset;
                                s->data_end = (uint64_t) hole;
                        }
                }
        }

        uint64_t length = MIN(max_len, file_left);
        if (s->seek_works)
                length = MIN(length, s->data_end - offset);
        *ret = (struct image_layer_extent) { .length = length, .kind = IMAGE_EXTENT_DATA, .host_offset = offset };
        (void) err;
        return 0;
}

static int raw_fill_info(struct vh_image *img, struct vh_image_info *info, struct vh_error *err) {
        return 0;
}

/* Writes invalidate the data range remembered by raw_map(). */
static void raw_forget_extent(struct vh_image *img) {
        struct raw_state *s = img->priv;
        s->data_start = s->data_end = 0;
}

static int raw_write(struct vh_image *img, uint64_t offset, const void *buf, size_t len, struct vh_error *err) {
        raw_forget_extent(img);
        int r = image_pwrite_all(img->fd, buf, len, offset);
        if (r < 0)
                return vh_error_set(err, r, "write of %zu bytes at %" PRIu64 " failed: %s", len, offset, strerror(-r));
        img->file_size = MAX(img->file_size, offset + len);
        return 0;
}

/* Zeros without writing them where the file system can: a hole reads as
 * zeros and frees the space, as QEMU's raw driver does for discard and
 * for zero writes that may unmap. */
static int raw_write_zeroes(struct vh_image *img, uint64_t offset, uint64_t len, struct vh_error *err) {
        raw_forget_extent(img);
        /* The tail past the file's end (up to the next 512 bytes) already
         * reads as zeros. */
        if (offset >= img->file_size)
                return 0;
        len = MIN(len, img->file_size - offset);
        if (fallocate(img->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, (off_t) offset, (off_t) len) == 0)
                return 0;
        if (fallocate(img->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, (off_t) offset, (off_t) len) == 0)
                return 0;
        static const uint8_t zeros[65536];
        while (len > 0) {
                size_t n = (size_t) MIN(len, (uint64_t) sizeof(zeros));
                int r = image_pwrite_all(img->fd, zeros, n, offset);
                if (r < 0)
                        return vh_error_set(err, r, "writing zeros at %" PRIu64 " failed: %s", offset, strerror(-r));
                offset += n;
                len -= n;
        }
        return 0;
}

static int raw_flush(struct vh_image *img, struct vh_error *err) {
        if (fsync(img->fd) < 0)
                return vh_error_set(err, negative_errno(), "fsync failed: %m");
        return 0;
}

static int raw_resize(struct vh_image *img, uint64_t new_size, struct vh_error *err) {
        struct stat st;
        if (fstat(img->fd, &st) < 0)
                return vh_error_set(err, negative_errno(), "cannot stat: %m");
        if (!S_ISREG(st.st_mode))
                return vh_error_set(err, -EOPNOTSUPP, "only regular files can be resized, not block devices");
        raw_forget_extent(img);
        if (ftruncate(img->fd, (off_t) new_size) < 0)
                return vh_error_set(err, negative_errno(), "cannot set the file size to %" PRIu64 ": %m", new_size);
        if (fsync(img->fd) < 0)
                return vh_error_set(err, negative_errno(), "fsync failed: %m");
        img->file_size = new_size;
        img->virtual_size = ALIGN_UP(new_size, (uint64_t) 512);
        return 0;
}

int raw_create(int fd, uint64_t size, struct vh_error *err) {
        /* Sparse: the file system gives zeros for the holes, like qemu-img's
         * default preallocation=off. Old content is cut away first, but a
         * new (empty) file is not truncated to 0: ext4 takes that for "file
         * replaced by truncation" and writes back everything written to
         * it when it is closed, which costs a convert a fraction of a
         * second per GiB. */
        struct stat st;
        if (fstat(fd, &st) < 0 || st.st_size != 0)
                if (ftruncate(fd, 0) < 0)
                        return vh_error_set(err, negative_errno(), "cannot truncate the file: %m");
        if (ftruncate(fd, (off_t) size) < 0)
                return vh_error_set(err, negative_errno(), "cannot set the file size to %" PRIu64 ": %m", size);
        return 0;
}

int image_preallocate(int fd, uint64_t offset, uint64_t len, enum vh_image_prealloc mode, struct vh_error *err) {
        if (len == 0 || mode == VH_IMAGE_PREALLOC_OFF || mode == VH_IMAGE_PREALLOC_METADATA)
                return 0;
        int e = posix_fallocate(fd, (off_t) offset, (off_t) len);
        if (e == EOPNOTSUPP || e == EINVAL)
                return vh_error_set(err, -EOPNOTSUPP, "the file system cannot preallocate (fallocate): %s",
                                    strerror(e));
        if (e != 0)
                return vh_error_set(err, -e, "cannot preallocate %" PRIu64 " bytes: %s", len, strerror(e));
        if (mode != VH_IMAGE_PREALLOC_FULL)
                return 0;
        /* full: the blocks are reserved above, so writing zeros over them
         * cannot fail for lack of space half-way. */
        const size_t chunk = (size_t) 1 << 20;
        _cleanup_free_ uint8_t *zeros = calloc(1, chunk);
        if (!zeros)
                return vh_error_set(err, -ENOMEM, "out of memory");
        for (uint64_t pos = offset; pos < offset + len; pos += chunk) {
                size_t n = (size_t) MIN((uint64_t) chunk, offset + len - pos);
                int r = image_pwrite_all(fd, zeros, n, pos);
                if (r < 0)
                        return vh_error_set(err, r, "writing zeros at %" PRIu64 " failed: %s", pos, strerror(-r));
        }
        return 0;
}

const struct image_driver image_driver_raw = {
        .format = VH_IMAGE_FORMAT_RAW,
        .open = raw_open,
        .close = raw_close,
        .map = raw_map,
        .fill_info = raw_fill_info,
        .write = raw_write,
        .write_zeroes = raw_write_zeroes,
        .discard = raw_write_zeroes,
        .flush = raw_flush,
        .resize = raw_resize,
};
