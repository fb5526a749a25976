/* image/image-internal.h: what the format drivers (raw.c, qcow2.c) share
 * with the format-independent layer (image.c, chain.c, convert.c): the
 * image object, the driver table and big-endian helpers. Not installed. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "vmhost/error.h"
#include "vmhost/image.h"

/* How one layer (not the chain) stores a guest range. */
enum image_extent_kind {
        IMAGE_EXTENT_DATA,        /* in this file at host_offset */
        IMAGE_EXTENT_ZERO,        /* reads as zeros; the backing file is not consulted */
        IMAGE_EXTENT_UNALLOCATED, /* not here: ask the backing file, or zeros */
        IMAGE_EXTENT_COMPRESSED,  /* one compressed cluster; the driver decodes it */
};

struct image_layer_extent {
        uint64_t length;
        enum image_extent_kind kind;
        uint64_t host_offset; /* for DATA */
};

struct image_driver {
        enum vh_image_format format;
        /* Reads and validates the metadata; sets virtual_size and, for
         * formats that have one, backing_name and backing_format. */
        int (*open)(struct vh_image *img, struct vh_error *err);
        void (*close)(struct vh_image *img);
        /* Describes [offset, offset + max_len) of this layer alone; offset is
         * below the virtual size and max_len is clipped to it by the caller. */
        int (*map)(struct vh_image *img, uint64_t offset, uint64_t max_len, struct image_layer_extent *ret,
                   struct vh_error *err);
        /* Reads from an extent that map() called COMPRESSED. */
        int (*read_compressed)(struct vh_image *img, uint64_t offset, void *buf, size_t len, struct vh_error *err);
        /* Adds the format's own fields to 'info'. */
        int (*fill_info)(struct vh_image *img, struct vh_image_info *info, struct vh_error *err);

        /* The in-place write path, for images opened read-write. Ranges lie
         * within the virtual size (checked by image.c). */
        int (*write)(struct vh_image *img, uint64_t offset, const void *buf, size_t len, struct vh_error *err);
        int (*write_zeroes)(struct vh_image *img, uint64_t offset, uint64_t len, struct vh_error *err);
        int (*discard)(struct vh_image *img, uint64_t offset, uint64_t len, struct vh_error *err);
        int (*flush)(struct vh_image *img, struct vh_error *err);
        int (*resize)(struct vh_image *img, uint64_t new_size, struct vh_error *err);
        /* Called once the file was reopened for writing (image_reopen_rw):
         * refuses what cannot be written and sets up the write state. */
        int (*reopen_rw)(struct vh_image *img, struct vh_error *err);
};

struct vh_image {
        char *filename;
        int fd;
        enum vh_image_format format;
        const struct image_driver *driver;
        void *priv; /* the driver's state */

        bool read_write;
        unsigned depth; /* 0 for the image opened by the user */
        dev_t dev;
        ino_t ino;
        uint64_t file_size; /* at open time */

        uint64_t virtual_size;

        /* From the image's header (qcow2); NULL when there is none. */
        char *backing_name;
        enum vh_image_format backing_format; /* VH_IMAGE_FORMAT_PROBE when not recorded */
        /* A recorded backing format vmhost has no driver for: the image
         * itself opens (info shows it, as qemu-img does); opening its
         * backing file fails with this name. NULL otherwise. */
        char *backing_format_unknown;
        char *backing_path;                  /* backing_name resolved against our directory */
        struct vh_image *backing;
        /* The id of the internal snapshot whose state this (read-only)
         * image shows instead of its active one (convert -l), else NULL. */
        char *snapshot_id;
};

extern const struct image_driver image_driver_raw;
extern const struct image_driver image_driver_qcow2;

/* Reads exactly 'len' bytes at 'offset'; what lies past the end of the
 * file reads as zeros (a qcow2 file may end inside its last cluster). */
int image_pread(struct vh_image *img, void *buf, size_t len, uint64_t offset, struct vh_error *err);
/* The same on any file open at 'fd' ('filename' for messages). */
int image_pread_fd(int fd, const char *filename, void *buf, size_t len, uint64_t offset, struct vh_error *err);

/* True if [offset, offset + len) does not lie within the file. The size
 * is looked up again before saying so: an image opened with force-share
 * may be growing under a running VM. */
bool image_past_eof(struct vh_image *img, uint64_t offset, uint64_t len);

/* Opens one file, without its backing chain. 'chain_top', when given, is
 * the chain this file is about to join: a file already in it is a loop,
 * found before locking (our own locks would otherwise make it look like
 * "in use"). */
int image_open_one(const char *path, enum vh_image_format format, unsigned flags, unsigned depth,
                   const struct vh_image *chain_top, struct vh_image **ret, struct vh_error *err);

/* Reads what the backing chain of 'img' shows at [offset, offset + len)
 * (within img's virtual size): zeros past the backing file's end or
 * without one. */
int image_read_backing(struct vh_image *img, uint64_t offset, void *buf, size_t len, struct vh_error *err);

/* Reads what 'img' (NULL: an empty disk) shows at [offset, offset + len),
 * zeros past its end: for comparing what two chains of different sizes
 * show (convert -B, rebase). */
int image_read_view(struct vh_image *img, uint64_t offset, void *buf, uint64_t len, struct vh_error *err);
/* Whether 'img' (NULL: an empty disk) reads as zeros over [offset, offset
 * + len), past its end included, as far as vh_image_map() tells without
 * reading data. */
int image_view_is_zero(struct vh_image *img, uint64_t offset, uint64_t len, bool *ret, struct vh_error *err);

/* Makes an image opened read-only (a backing file, say) writable: reopens
 * the file for writing and swaps QEMU's read lock for the write lock. */
int image_reopen_rw(struct vh_image *img, struct vh_error *err);

/* Opens the backing chain below 'img' (chain.c). */
int image_chain_open(struct vh_image *img, unsigned flags, struct vh_error *err);

/* Builds the path QEMU would open for 'backing_name' named by the image at
 * 'overlay_path': absolute names as they are, relative ones appended to the
 * overlay's directory as written ("sub/a.qcow2" + "../b" = "sub/../b"). */
int image_backing_path(const char *overlay_path, const char *backing_name, char **ret_path);

/* Opens 'backing_name' as the image at 'overlay_path' will see it as its
 * backing file (create, convert -B, rebase): resolved against the
 * overlay's directory, its real format checked against the one given with
 * -F (which must be given: a probed format lets a guest make the host
 * read any file), then opened with its own chain. 'what' names it in
 * errors ("backing file", "new backing file"). The resolved path is
 * returned too when 'ret_path' is not NULL. */
int image_open_backing_file(const char *overlay_path, const char *backing_name, enum vh_image_format format,
                            const char *what, char **ret_path, struct vh_image **ret, struct vh_error *err);

/* QEMU's OFD byte locks (lock.c). A reader holds "consistent read" and
 * refuses to share "write" and "resize"; a writer also holds those two. */
enum image_lock_mode {
        IMAGE_LOCK_READ,
        IMAGE_LOCK_WRITE,
};
int image_lock(int fd, enum image_lock_mode mode, const char *filename, struct vh_error *err);
/* Drops every lock this open file description holds on the file. */
void image_unlock(int fd);

/* A new image file written beside its final path and renamed over it
 * (output.c). */
struct image_output {
        char *path;     /* final path (symlinks resolved) */
        char *tmp_path;
        int fd;         /* the temporary file, open for writing */
        int old_fd;     /* the file being replaced, held locked; -1 if none */
};
/* Refuses (-EEXIST, see replace.c) to replace an existing file that holds
 * data, unless 'replace_data'; never replaces one another process holds
 * with QEMU's locks (-EBUSY). The old file stays locked until
 * image_output_done(), so the check holds until the rename. */
int image_output_begin(const char *path, bool replace_data, struct image_output *ret, struct vh_error *err);
/* Renames the finished temporary file into place. 'flush': fsync the file
 * first and the directory after, so both survive a power loss; a file
 * that replaces another is always flushed. */
int image_output_commit(struct image_output *out, bool flush, struct vh_error *err);
/* Closes everything and removes the temporary file (if not committed).
 * Safe on a struct that begin failed to fill, if it was set up as
 * IMAGE_OUTPUT_INIT. */
#define IMAGE_OUTPUT_INIT { .fd = -1, .old_fd = -1 }
void image_output_done(struct image_output *out);

/* What vh_image_replace_check() decides, keeping the existing file open
 * and write-locked in '*ret_fd' (-1 when there is none, '*ret_mode' then
 * 0) for the caller that goes on to replace it (output.c). */
int image_replace_open(const char *path, bool replace_data, int *ret_fd, mode_t *ret_mode, struct vh_error *err);

/* -EEXIST, with the file and what it holds named in 'err', when the
 * existing file open as 'fd' (write-locked by the caller) holds data:
 * anything but a zero-length file or an image without data of its own
 * (replace.c). */
int image_replace_check_locked(int fd, const char *path, struct vh_error *err);

/* Writes all of 'buf' at 'offset'. Each call counts as one write for the
 * fault switch (vh_image_fault_set_kill_after_writes()). */
int image_pwrite_all(int fd, const void *buf, size_t len, uint64_t offset);
/* The writes counted since the fault switch was last set (for tests). */
uint64_t image_fault_writes(void);

/* True if all 'len' bytes are zero. */
bool image_buffer_is_zero(const void *buf, size_t len);

/* raw.c: sets the size of a new raw file. */
int raw_create(int fd, uint64_t size, struct vh_error *err);

/* Allocates [offset, offset + len) of a new file: falloc reserves the
 * blocks, full writes zeros; off and metadata do nothing (raw.c). */
int image_preallocate(int fd, uint64_t offset, uint64_t len, enum vh_image_prealloc mode, struct vh_error *err);

/* Format-specific create into an open file (qcow2-write.c). */
int qcow2_create(int fd, const struct vh_image_create_options *opts, uint64_t size, struct vh_error *err);

/* Calls an operation's progress callback (if any): -ECANCELED when it
 * asks to cancel (see "Progress and cancelling" in vmhost/image.h), else 0.
 * The caller sets the message, which says what was left behind. */
int image_progress(int (*progress)(uint64_t done, uint64_t total, void *userdata), void *userdata, uint64_t done,
                   uint64_t total);

/* Copies the message of 'err' behind "PREFIX: ", keeping the code. */
int image_error_prefix(struct vh_error *err, int code, const char *prefix);

static inline uint16_t be16_load(const uint8_t *p) {
        return (uint16_t) ((unsigned) p[0] << 8 | p[1]);
}
static inline uint32_t be32_load(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}
static inline uint64_t be64_load(const uint8_t *p) {
        return (uint64_t) be32_load(p) << 32 | be32_load(p + 4);
}
static inline void be16_store(uint8_t *p, uint16_t v) {
        p[0] = (uint8_t) (v >> 8);
        p[1] = (uint8_t) v;
}
static inline void be32_store(uint8_t *p, uint32_t v) {
        p[0] = (uint8_t) (v >> 24);
        p[1] = (uint8_t) (v >> 16);
        p[2] = (uint8_t) (v >> 8);
        p[3] = (uint8_t) v;
}
static inline void be64_store(uint8_t *p, uint64_t v) {
        be32_store(p, (uint32_t) (v >> 32));
        be32_store(p + 4, (uint32_t) v);
}

/* convert.c's parallel copy: its workers, the windows that can be under
 * way at once (read ahead of the writes), and a window's size (a
 * multiple of every cluster size). A cancel stops it within the windows
 * under way (tests/unit/test-image-cancel.c holds it to that). */
#define CONVERT_WORKERS 4
#define CONVERT_SLOTS (2 * CONVERT_WORKERS)
#define CONVERT_WINDOW (UINT64_C(4) << 20)
