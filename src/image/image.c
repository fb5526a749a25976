/* image/image.c: the format-independent layer of the image engine: format
 * names and probing, opening a file (type checks, locks, driver), the read
 * path that walks the backing chain, extent maps and the info query. The
 * formats themselves live in raw.c and qcow2.c. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "base/macro.h"
#include "image/image-internal.h"

static const char *const format_names[_VH_IMAGE_FORMAT_MAX] = {
        [VH_IMAGE_FORMAT_RAW] = "raw",
        [VH_IMAGE_FORMAT_QCOW2] = "qcow2",
};

static const struct image_driver *const drivers[_VH_IMAGE_FORMAT_MAX] = {
        [VH_IMAGE_FORMAT_RAW] = &image_driver_raw,
        [VH_IMAGE_FORMAT_QCOW2] = &image_driver_qcow2,
};

const char *vh_image_format_to_string(enum vh_image_format format) {
        if (format < 0 || format >= _VH_IMAGE_FORMAT_MAX)
                return NULL;
        return format_names[format];
}

int vh_image_format_from_string(const char *s) {
        for (int i = 0; s && i < _VH_IMAGE_FORMAT_MAX; i++)
                if (streq(s, format_names[i]))
                        return i;
        return -EINVAL;
}

static const char *const prealloc_names[_VH_IMAGE_PREALLOC_MAX] = {
        [VH_IMAGE_PREALLOC_OFF] = "off",
        [VH_IMAGE_PREALLOC_METADATA] = "metadata",
        [VH_IMAGE_PREALLOC_FALLOC] = "falloc",
        [VH_IMAGE_PREALLOC_FULL] = "full",
};

const char *vh_image_prealloc_to_string(enum vh_image_prealloc mode) {
        if (mode < 0 || mode >= _VH_IMAGE_PREALLOC_MAX)
                return NULL;
        return prealloc_names[mode];
}

int vh_image_prealloc_from_string(const char *s, enum vh_image_prealloc *ret) {
        for (int i = 0; s && i < _VH_IMAGE_PREALLOC_MAX; i++)
                if (streq(s, prealloc_names[i])) {
                        *ret = (enum vh_image_prealloc) i;
                        return 0;
                }
        return -EINVAL;
}

int vh_image_cache_from_string(const char *s, enum vh_image_cache *ret) {
        static const struct {
                const char *name;
                enum vh_image_cache mode;
        } modes[] = {
                { "writeback", VH_IMAGE_CACHE_WRITEBACK },
                { "writethrough", VH_IMAGE_CACHE_WRITEBACK },
                { "unsafe", VH_IMAGE_CACHE_UNSAFE },
                { "none", VH_IMAGE_CACHE_NONE },
                { "directsync", VH_IMAGE_CACHE_NONE },
        };
        for (size_t i = 0; s && i < ELEMENTSOF(modes); i++)
                if (streq(s, modes[i].name)) {
                        *ret = modes[i].mode;
                        return 0;
                }
        return -EINVAL;
}

int image_error_prefix(struct vh_error *err, int code, const char *prefix) {
        if (err) {
                char msg[VH_ERROR_MAX];
                snprintf(msg, sizeof(msg), "%s", vh_error_message(err, code));
                vh_error_set(err, code, "%s: %s", prefix, msg);
        }
        return code;
}

int image_progress(int (*progress)(uint64_t done, uint64_t total, void *userdata), void *userdata, uint64_t done,
                   uint64_t total) {
        if (progress && progress(done, total, userdata) != 0)
                return -ECANCELED;
        return 0;
}

int image_pread(struct vh_image *img, void *buf, size_t len, uint64_t offset, struct vh_error *err) {
        return image_pread_fd(img->fd, img->filename, buf, len, offset, err);
}

int image_pread_fd(int fd, const char *filename, void *buf, size_t len, uint64_t offset, struct vh_error *err) {
        uint8_t *p = buf;
        while (len > 0) {
                ssize_t n = pread(fd, p, MIN(len, (size_t) 1 << 30), (off_t) offset);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return vh_error_set(err, negative_errno(), "%s: read of %zu bytes at %" PRIu64 " failed: %m",
                                            filename, len, offset);
                if (n == 0) {
                        memset(p, 0, len); /* past the end of the file */
                        break;
                }
                p += n;
                len -= (size_t) n;
                offset += (uint64_t) n;
        }
        return 0;
}

bool image_past_eof(struct vh_image *img, uint64_t offset, uint64_t len) {
        if (offset <= img->file_size && len <= img->file_size - offset)
                return false;
        struct stat st;
        if (fstat(img->fd, &st) < 0 || !S_ISREG(st.st_mode) || (uint64_t) st.st_size <= img->file_size)
                return true;
        img->file_size = (uint64_t) st.st_size;
        return offset > img->file_size || len > img->file_size - offset;
}

/* The fault switch (vh_image_fault_set_kill_after_writes()): the number
 * of writes after which to die, 0 for never, and the writes counted so
 * far. Atomic, because convert's worker threads write in parallel and
 * the Nth write of the process, whichever thread makes it, must be the
 * last. */
static _Atomic uint64_t fault_after, fault_writes;

void vh_image_fault_set_kill_after_writes(uint64_t n) {
        atomic_store(&fault_writes, 0);
        atomic_store(&fault_after, n);
}

uint64_t image_fault_writes(void) {
        return atomic_load(&fault_writes);
}

static void fault_count_write(void) {
        uint64_t after = atomic_load_explicit(&fault_after, memory_order_relaxed);
        if (after > 0 && atomic_fetch_add(&fault_writes, 1) + 1 >= after)
                raise(SIGKILL);
}

int image_pwrite_all(int fd, const void *buf, size_t len, uint64_t offset) {
        int r = 0;
        const uint8_t *p = buf;
        while (len > 0) {
                ssize_t n = pwrite(fd, p, MIN(len, (size_t) 1 << 30), (off_t) offset);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        r = negative_errno();
                        break;
                }
                if (n == 0) {
                        r = -EIO;
                        break;
                }
                p += n;
                len -= (size_t) n;
                offset += (uint64_t) n;
        }
        fault_count_write();
        return r;
}

bool image_buffer_is_zero(const void *buf, size_t len) {
        const uint8_t *p = buf;
        /* Check a few bytes by hand, then let memcmp compare the buffer with
         * itself shifted: zero iff every byte equals the first (zero) one. */
        size_t head = MIN(len, (size_t) 16);
        for (size_t i = 0; i < head; i++)
                if (p[i])
                        return false;
        return len <= 16 || memcmp(p, p + 16, len - 16) == 0;
}

/* Formats that vmhost does not read but must not take for raw either: a
 * vmdk opened as raw would hand its metadata to a guest as disk content. */
static const struct {
        size_t offset;
        const char *magic;
        size_t len;
        const char *name;
} foreign_magics[] = {
        { 0, "KDMV", 4, "vmdk" },
        { 0, "# Disk DescriptorFile", 21, "vmdk (descriptor)" },
        { 0, "vhdxfile", 8, "vhdx" },
        { 0, "conectix", 8, "vpc (vhd)" },
        { 0, "QED\0", 4, "qed" },
        { 0, "LUKS\xba\xbe", 6, "luks" },
        { 0x40, "\x7f\x10\xda\xbe", 4, "vdi" },
};

static int probe_buffer(const uint8_t *buf, size_t len, const char *filename, enum vh_image_format *ret,
                        struct vh_error *err) {
        if (len >= 8 && be32_load(buf) == 0x514649fb) {
                if (be32_load(buf + 4) == 1)
                        return vh_error_set(err, -EOPNOTSUPP,
                                            "%s: is a qcow (version 1) image, which is not supported; convert it with "
                                            "'qemu-img convert -O qcow2'",
                                            filename);
                *ret = VH_IMAGE_FORMAT_QCOW2;
                return 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(foreign_magics); i++)
                if (len >= foreign_magics[i].offset + foreign_magics[i].len &&
                    memcmp(buf + foreign_magics[i].offset, foreign_magics[i].magic, foreign_magics[i].len) == 0)
                        return vh_error_set(err, -EOPNOTSUPP,
                                            "%s: looks like a %s image, which is not supported; convert it with "
                                            "'qemu-img convert -O qcow2' (or give -f raw if it really is raw)",
                                            filename, foreign_magics[i].name);
        *ret = VH_IMAGE_FORMAT_RAW;
        return 0;
}

static int probe_fd(int fd, const char *filename, enum vh_image_format *ret, struct vh_error *err) {
        uint8_t buf[512];
        size_t have = 0;
        while (have < sizeof(buf)) {
                ssize_t n = pread(fd, buf + have, sizeof(buf) - have, (off_t) have);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return vh_error_set(err, negative_errno(), "%s: cannot read: %m", filename);
                if (n == 0)
                        break;
                have += (size_t) n;
        }
        return probe_buffer(buf, have, filename, ret, err);
}

int vh_image_probe(const char *path, enum vh_image_format *ret_format, struct vh_error *err) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (fd < 0)
                return vh_error_set(err, negative_errno(), "%s: cannot open: %m", path);
        struct stat st;
        if (fstat(fd, &st) < 0)
                return vh_error_set(err, negative_errno(), "%s: cannot stat: %m", path);
        if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
                return vh_error_set(err, -EINVAL, "%s: not a regular file or block device", path);
        return probe_fd(fd, path, ret_format, err);
}

struct vh_image *vh_image_free(struct vh_image *img) {
        while (img) {
                struct vh_image *backing = img->backing;
                if (img->driver && img->driver->close)
                        img->driver->close(img);
                safe_close(img->fd);
                free(img->filename);
                free(img->backing_name);
                free(img->backing_path);
                free(img->snapshot_id);
                free(img->backing_format_unknown);
                free(img);
                img = backing;
        }
        return NULL;
}
/* /dev/null, or any other node of the same character device. */
static bool is_null_device(const struct stat *st) {
        return S_ISCHR(st->st_mode) && major(st->st_rdev) == 1 && minor(st->st_rdev) == 3;
}

int image_open_one(const char *path, enum vh_image_format format, unsigned flags, unsigned depth,
                   const struct vh_image *chain_top, struct vh_image **ret, struct vh_error *err) {
        bool rw = flags & VH_IMAGE_OPEN_READ_WRITE;

        _cleanup_(vh_image_freep) struct vh_image *img = calloc(1, sizeof(*img));
        if (!img)
                return vh_error_set(err, -ENOMEM, "out of memory");
        img->fd = -1;
        img->depth = depth;
        img->read_write = rw;
        img->backing_format = VH_IMAGE_FORMAT_PROBE;
        img->filename = strdup(path);
        if (!img->filename)
                return vh_error_set(err, -ENOMEM, "out of memory");

        /* O_NONBLOCK so that a FIFO named as a backing file cannot hang us
         * in open(); it is refused just below and the flag cleared. */
        img->fd = open(path, (rw ? O_RDWR : O_RDONLY) | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
        if (img->fd < 0)
                return vh_error_set(err, negative_errno(), "%s: cannot open: %m", path);
        struct stat st;
        if (fstat(img->fd, &st) < 0)
                return vh_error_set(err, negative_errno(), "%s: cannot stat: %m", path);
        if (S_ISREG(st.st_mode))
                img->file_size = (uint64_t) st.st_size;
        else if (S_ISBLK(st.st_mode)) {
                uint64_t size;
                if (ioctl(img->fd, BLKGETSIZE64, &size) < 0)
                        return vh_error_set(err, negative_errno(), "%s: cannot get the block device size: %m", path);
                img->file_size = size;
        } else if (is_null_device(&st) && !rw)
                /* QEMU reads /dev/null as an empty raw image; scripts name
                 * it as the backing file of an overlay that must read as
                 * zeros. */
                img->file_size = 0;
        else
                return vh_error_set(err, -EINVAL, "%s: not a regular file or block device", path);
        int fl = fcntl(img->fd, F_GETFL);
        if (fl < 0 || fcntl(img->fd, F_SETFL, fl & ~O_NONBLOCK) < 0)
                return vh_error_set(err, negative_errno(), "%s: fcntl failed: %m", path);
        img->dev = st.st_dev;
        img->ino = st.st_ino;

        for (const struct vh_image *x = chain_top; x; x = x->backing)
                if (x->dev == img->dev && x->ino == img->ino)
                        return vh_error_set(err, -ELOOP, "%s: backing chain loop: this file is already in the chain as %s",
                                            path, x->filename);

        /* The null device holds nothing to protect, and a lock on it
         * would be one every process on the machine shares. */
        if (!(flags & VH_IMAGE_OPEN_FORCE_SHARE) && !is_null_device(&st)) {
                int r = image_lock(img->fd, rw ? IMAGE_LOCK_WRITE : IMAGE_LOCK_READ, path, err);
                if (r < 0)
                        return r;
        }

        if (format == VH_IMAGE_FORMAT_PROBE) {
                int r = probe_fd(img->fd, path, &format, err);
                if (r < 0)
                        return r;
        }
        if (format < 0 || format >= _VH_IMAGE_FORMAT_MAX)
                return vh_error_set(err, -EINVAL, "%s: unknown image format %d", path, (int) format);
        img->format = format;
        img->driver = drivers[format];

        int r = img->driver->open(img, err);
        if (r < 0)
                return image_error_prefix(err, r, path);

        /* A name we cannot resolve (a protocol prefix) leaves backing_path
         * unset; opening the chain reports it, info still works. */
        if (img->backing_name)
                (void) image_backing_path(path, img->backing_name, &img->backing_path);

        *ret = TAKE_PTR(img);
        return 0;
}

int vh_image_open(const char *path, const struct vh_image_open_options *opts, struct vh_image **ret_image,
                  struct vh_error *err) {
        struct vh_image_open_options defaults = { .format = VH_IMAGE_FORMAT_PROBE };
        if (!opts)
                opts = &defaults;
        if (isempty(path))
                return vh_error_set(err, -EINVAL, "no image file name given");

        _cleanup_(vh_image_freep) struct vh_image *img = NULL;
        int r = image_open_one(path, opts->format, opts->flags, 0, NULL, &img, err);
        if (r < 0)
                return r;
        if (!(opts->flags & VH_IMAGE_OPEN_NO_BACKING)) {
                r = image_chain_open(img, opts->flags, err);
                if (r < 0)
                        return r;
        }
        *ret_image = TAKE_PTR(img);
        return 0;
}

const char *vh_image_filename(const struct vh_image *img) {
        return img->filename;
}

bool vh_image_is_file(const struct vh_image *img, int fd) {
        struct stat st;
        return fstat(fd, &st) == 0 && st.st_dev == img->dev && st.st_ino == img->ino;
}

enum vh_image_format vh_image_get_format(const struct vh_image *img) {
        return img->format;
}

uint64_t vh_image_virtual_size(const struct vh_image *img) {
        return img->virtual_size;
}

struct vh_image *vh_image_backing(const struct vh_image *img) {
        return img->backing;
}

static int layer_map(struct vh_image *img, uint64_t offset, uint64_t len, struct image_layer_extent *e,
                     struct vh_error *err) {
        int r = img->driver->map(img, offset, len, e, err);
        if (r < 0)
                return image_error_prefix(err, r, img->filename);
        if (e->length == 0)
                return vh_error_set(err, -EIO, "%s: internal error: empty extent at %" PRIu64, img->filename, offset);
        e->length = MIN(e->length, len);
        return 0;
}

int image_read_backing(struct vh_image *img, uint64_t offset, void *buf, size_t len, struct vh_error *err);

/* Reads [offset, offset + len), which lies within img's virtual size. */
static int read_chain(struct vh_image *img, uint64_t offset, uint8_t *buf, size_t len, struct vh_error *err) {
        while (len > 0) {
                struct image_layer_extent e;
                int r = layer_map(img, offset, len, &e, err);
                if (r < 0)
                        return r;
                size_t n = (size_t) e.length;

                switch (e.kind) {
                case IMAGE_EXTENT_DATA:
                        r = image_pread(img, buf, n, e.host_offset, err);
                        break;
                case IMAGE_EXTENT_ZERO:
                        memset(buf, 0, n);
                        break;
                case IMAGE_EXTENT_COMPRESSED:
                        r = img->driver->read_compressed(img, offset, buf, n, err);
                        if (r < 0)
                                r = image_error_prefix(err, r, img->filename);
                        break;
                case IMAGE_EXTENT_UNALLOCATED:
                        /* From the backing file as far as it reaches; zeros
                         * beyond its end, or without one. */
                        r = image_read_backing(img, offset, buf, n, err);
                        break;
                }
                if (r < 0)
                        return r;
                buf += n;
                offset += n;
                len -= n;
        }
        return 0;
}

int image_read_backing(struct vh_image *img, uint64_t offset, void *buf, size_t len, struct vh_error *err) {
        size_t from_backing = 0;
        struct vh_image *b = img->backing;
        if (b && offset < b->virtual_size) {
                from_backing = (size_t) MIN((uint64_t) len, b->virtual_size - offset);
                int r = read_chain(b, offset, buf, from_backing, err);
                if (r < 0)
                        return r;
        }
        memset((uint8_t *) buf + from_backing, 0, len - from_backing);
        return 0;
}

int vh_image_read(struct vh_image *img, uint64_t offset, void *buf, size_t len, struct vh_error *err) {
        if (offset > img->virtual_size || len > img->virtual_size - offset)
                return vh_error_set(err, -EINVAL,
                                    "%s: read of %zu bytes at %" PRIu64 " is past the virtual size (%" PRIu64 ")",
                                    img->filename, len, offset, img->virtual_size);
        return read_chain(img, offset, buf, len, err);
}

/* Asks the kernel to start reading the data that [offset, offset + len)
 * of 'img' is made of, in every layer, without waiting for it. */
static void prefetch_chain(struct vh_image *img, uint64_t offset, uint64_t len) {
        while (len > 0) {
                struct image_layer_extent e;
                if (layer_map(img, offset, len, &e, NULL) < 0)
                        return;
                if (e.kind == IMAGE_EXTENT_DATA)
                        (void) posix_fadvise(img->fd, (off_t) e.host_offset, (off_t) e.length, POSIX_FADV_WILLNEED);
                else if (e.kind == IMAGE_EXTENT_UNALLOCATED && img->backing && offset < img->backing->virtual_size)
                        prefetch_chain(img->backing, offset, MIN(e.length, img->backing->virtual_size - offset));
                offset += e.length;
                len -= e.length;
        }
}

void vh_image_prefetch(struct vh_image *img, uint64_t offset, uint64_t len) {
        if (offset >= img->virtual_size)
                return;
        prefetch_chain(img, offset, MIN(len, img->virtual_size - offset));
}

int vh_image_map(struct vh_image *img, uint64_t offset, uint64_t max_len, struct vh_image_extent *ret_extent,
                 struct vh_error *err) {
        if (offset > img->virtual_size)
                return vh_error_set(err, -EINVAL, "%s: offset %" PRIu64 " is past the virtual size (%" PRIu64 ")",
                                    img->filename, offset, img->virtual_size);
        uint64_t len = MIN(max_len, img->virtual_size - offset);
        if (len == 0) {
                *ret_extent = (struct vh_image_extent) { .offset = offset, .depth = img->depth };
                return 0;
        }

        struct image_layer_extent e;
        int r = layer_map(img, offset, len, &e, err);
        if (r < 0)
                return r;

        struct vh_image_extent x = { .offset = offset, .length = e.length, .depth = img->depth };
        switch (e.kind) {
        case IMAGE_EXTENT_DATA:
        case IMAGE_EXTENT_COMPRESSED:
                x.data = true;
                break;
        case IMAGE_EXTENT_ZERO:
                x.zero = true;
                break;
        case IMAGE_EXTENT_UNALLOCATED:
                if (img->backing && offset < img->backing->virtual_size) {
                        r = vh_image_map(img->backing, offset, MIN(e.length, img->backing->virtual_size - offset),
                                         &x, err);
                        if (r < 0)
                                return r;
                } else
                        x.zero = true;
                break;
        }
        *ret_extent = x;
        return 0;
}

int image_read_view(struct vh_image *img, uint64_t offset, void *buf, uint64_t len, struct vh_error *err) {
        uint64_t n = 0;
        if (img && offset < img->virtual_size) {
                n = MIN(len, img->virtual_size - offset);
                int r = vh_image_read(img, offset, buf, (size_t) n, err);
                if (r < 0)
                        return r;
        }
        memset((uint8_t *) buf + n, 0, (size_t) (len - n));
        return 0;
}

int image_view_is_zero(struct vh_image *img, uint64_t offset, uint64_t len, bool *ret, struct vh_error *err) {
        while (img && len > 0 && offset < img->virtual_size) {
                struct vh_image_extent e;
                int r = vh_image_map(img, offset, MIN(len, img->virtual_size - offset), &e, err);
                if (r < 0)
                        return r;
                if (!e.zero || e.length == 0) {
                        *ret = false;
                        return 0;
                }
                offset += e.length;
                len -= e.length;
        }
        *ret = true;
        return 0;
}

struct vh_image_info *vh_image_info_free(struct vh_image_info *info) {
        if (info) {
                free(info->filename);
                free(info->backing_filename);
                free(info->full_backing_filename);
                free(info->backing_filename_format);
                vh_image_snapshots_free(info->snapshots, info->n_snapshots);
                free(info);
        }
        return NULL;
}
DEFINE_FREE_FUNC(struct vh_image_info, vh_image_info_free)

int vh_image_get_info(struct vh_image *img, struct vh_image_info **ret_info, struct vh_error *err) {
        _cleanup_(vh_image_info_freep) struct vh_image_info *info = calloc(1, sizeof(*info));
        if (!info)
                return vh_error_set(err, -ENOMEM, "out of memory");

        struct stat st;
        if (fstat(img->fd, &st) < 0)
                return vh_error_set(err, negative_errno(), "%s: cannot stat: %m", img->filename);

        info->filename = strdup(img->filename);
        info->format = img->format;
        info->virtual_size = img->virtual_size;
        info->actual_size = (uint64_t) st.st_blocks * 512;
        if (!info->filename)
                return vh_error_set(err, -ENOMEM, "out of memory");
        if (img->backing_name) {
                info->backing_filename = strdup(img->backing_name);
                if (!info->backing_filename)
                        return vh_error_set(err, -ENOMEM, "out of memory");
                if (img->backing_path) {
                        info->full_backing_filename = strdup(img->backing_path);
                        if (!info->full_backing_filename)
                                return vh_error_set(err, -ENOMEM, "out of memory");
                }
        }
        int r = img->driver->fill_info(img, info, err);
        if (r < 0)
                return image_error_prefix(err, r, img->filename);

        *ret_info = TAKE_PTR(info);
        return 0;
}

/* ---- the write path ---- */

static int check_write(struct vh_image *img, uint64_t offset, uint64_t len, const char *what, struct vh_error *err) {
        if (!img->read_write)
                return vh_error_set(err, -EROFS, "%s: cannot %s: the image is open read-only", img->filename, what);
        if (offset > img->virtual_size || len > img->virtual_size - offset)
                return vh_error_set(err, -EINVAL,
                                    "%s: %s of %" PRIu64 " bytes at %" PRIu64 " is past the virtual size (%" PRIu64 ")",
                                    img->filename, what, len, offset, img->virtual_size);
        return 0;
}

static int driver_result(struct vh_image *img, int r, struct vh_error *err) {
        return r < 0 ? image_error_prefix(err, r, img->filename) : r;
}

int vh_image_write(struct vh_image *img, uint64_t offset, const void *buf, size_t len, struct vh_error *err) {
        int r = check_write(img, offset, len, "write", err);
        if (r < 0 || len == 0)
                return r;
        return driver_result(img, img->driver->write(img, offset, buf, len, err), err);
}

int vh_image_write_zeroes(struct vh_image *img, uint64_t offset, uint64_t len, struct vh_error *err) {
        int r = check_write(img, offset, len, "write zeroes", err);
        if (r < 0 || len == 0)
                return r;
        return driver_result(img, img->driver->write_zeroes(img, offset, len, err), err);
}

int vh_image_discard(struct vh_image *img, uint64_t offset, uint64_t len, struct vh_error *err) {
        int r = check_write(img, offset, len, "discard", err);
        if (r < 0 || len == 0)
                return r;
        return driver_result(img, img->driver->discard(img, offset, len, err), err);
}

int vh_image_flush(struct vh_image *img, struct vh_error *err) {
        if (!img->read_write)
                return 0;
        return driver_result(img, img->driver->flush(img, err), err);
}

int image_reopen_rw(struct vh_image *img, struct vh_error *err) {
        if (img->read_write)
                return 0;
        _cleanup_close_ int fd = open(img->filename, O_RDWR | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return vh_error_set(err, negative_errno(), "%s: cannot open for writing: %m", img->filename);
        struct stat st;
        if (fstat(fd, &st) < 0)
                return vh_error_set(err, negative_errno(), "%s: cannot stat: %m", img->filename);
        if (st.st_dev != img->dev || st.st_ino != img->ino)
                return vh_error_set(err, -ESTALE, "%s: the file was replaced while open", img->filename);

        /* OFD locks belong to the open file description: our own read lock
         * (which refuses to share "write") would make the write lock on the
         * new descriptor fail, so it goes first. If the write lock cannot be
         * had, the read lock is taken back. */
        image_unlock(img->fd);
        int r = image_lock(fd, IMAGE_LOCK_WRITE, img->filename, err);
        if (r < 0) {
                (void) image_lock(img->fd, IMAGE_LOCK_READ, img->filename, NULL);
                return r;
        }
        safe_close(img->fd);
        img->fd = TAKE_FD(fd);
        img->read_write = true;
        if (img->driver->reopen_rw) {
                r = img->driver->reopen_rw(img, err);
                if (r < 0) {
                        img->read_write = false;
                        return image_error_prefix(err, r, img->filename);
                }
        }
        return 0;
}
