/* image/replace.c: whether create and convert may put a new image in place
 * of an existing file.
 *
 * qemu-img replaces whatever is there, so typing 'create' twice can cost
 * an installed OS. vmhost replaces only a file that holds nothing: a
 * zero-length file, or a raw or qcow2 image with no data of its own (a
 * freshly created qcow2, an empty overlay, a sparse raw file). Anything
 * else needs the caller's explicit consent (replace_data, the CLI's
 * --force). A file another process holds with QEMU's locks (a running VM,
 * qemu-io) is never replaced, consent or not.
 *
 * "Data" is what the image itself stores, as QEMU's block status sees it
 * (what 'qemu-img map' calls data and not zero): allocated clusters of a
 * qcow2 image, not its backing file's, not zero clusters, not clusters
 * that preallocation=metadata mapped onto holes of the file; for a raw
 * file, what SEEK_DATA finds. Internal snapshots count too. Blocks that
 * preallocation=falloc or full reserved count as data: telling them apart
 * from a disk full of zeros would mean reading all of it. A file vmhost
 * cannot read as an image (another format, a broken header) counts by the
 * blocks it takes on disk; a text file is a raw image and counts by its
 * bytes. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/macro.h"
#include "base/strutil.h"
#include "image/image-internal.h"

static int add_own_data(const struct vh_image_map_entry *e, const struct vh_image_map_entry *next, void *userdata) {
        uint64_t *bytes = userdata;
        (void) next;
        if (e->depth == 0 && e->data && !e->zero)
                *bytes += e->length;
        return 0;
}

/* "12 bytes" or "1 MiB (1048576 bytes)". */
static void describe_bytes(uint64_t bytes, char *buf, size_t len) {
        char human[32];
        if (bytes < 1024)
                snprintf(buf, len, "%" PRIu64 " byte%s", bytes, bytes == 1 ? "" : "s");
        else
                snprintf(buf, len, "%s (%" PRIu64 " bytes)", format_size(bytes, human, sizeof(human)), bytes);
}

/* What the image at 'path' (the file open as 'fd') holds of its own: the
 * bytes of guest data and the number of internal snapshots. Fails when
 * the file cannot be read as an image, with the reason in 'err'. */
static int own_data(int fd, const char *path, uint64_t *ret_bytes, size_t *ret_snapshots, struct vh_error *err) {
        /* Without locks: the caller holds the write lock on 'fd', and our
         * own read lock on a second open file description would clash
         * with it. Without the backing chain: only this file's data is
         * at stake, and a missing backing file must not hide it. */
        struct vh_image_open_options o = {
                .format = VH_IMAGE_FORMAT_PROBE,
                .flags = VH_IMAGE_OPEN_NO_BACKING | VH_IMAGE_OPEN_FORCE_SHARE,
        };
        _cleanup_(vh_image_freep) struct vh_image *img = NULL;
        int r = vh_image_open(path, &o, &img, err);
        if (r < 0)
                return r;
        struct stat st;
        if (fstat(fd, &st) < 0)
                return vh_error_set(err, negative_errno(), "%s: cannot stat: %m", path);
        if (st.st_dev != img->dev || st.st_ino != img->ino)
                return vh_error_set(err, -EAGAIN, "%s: was replaced while being looked at", path);

        uint64_t bytes = 0;
        r = vh_image_map_walk(img, 0, vh_image_virtual_size(img), false, add_own_data, &bytes, err);
        if (r < 0)
                return r;
        struct vh_image_snapshot *list = NULL;
        size_t n = 0;
        r = vh_image_snapshot_list(img, &list, &n, err);
        vh_image_snapshots_free(list, n);
        if (r < 0)
                return r;
        *ret_bytes = bytes;
        *ret_snapshots = n;
        return 0;
}

int image_replace_check_locked(int fd, const char *path, struct vh_error *err) {
        struct stat st;
        if (fstat(fd, &st) < 0)
                return vh_error_set(err, negative_errno(), "%s: cannot stat: %m", path);
        if (st.st_size == 0)
                return 0;

        char what[96];
        uint64_t bytes = 0;
        size_t snapshots = 0;
        struct vh_error why = {};
        int r = own_data(fd, path, &bytes, &snapshots, &why);
        if (r == -ENOMEM || r == -EAGAIN)
                return vh_error_set(err, r, "%s", vh_error_message(&why, r));
        if (r < 0) {
                /* Not an image we can read: what it takes on disk is what
                 * would be lost. */
                bytes = (uint64_t) st.st_blocks * 512;
                if (bytes == 0)
                        return 0;
                describe_bytes(bytes, what, sizeof(what));
                return vh_error_set(err, -EEXIST,
                                    "Refusing to replace %s: it holds %s on disk that cannot be read as an image (%s)",
                                    path, what, vh_error_message(&why, r));
        }
        if (bytes == 0 && snapshots == 0)
                return 0;
        describe_bytes(bytes, what, sizeof(what));
        if (snapshots == 0)
                return vh_error_set(err, -EEXIST, "Refusing to replace %s: it holds %s of data", path, what);
        if (bytes == 0)
                return vh_error_set(err, -EEXIST, "Refusing to replace %s: it holds %zu internal snapshot%s", path,
                                    snapshots, snapshots == 1 ? "" : "s");
        return vh_error_set(err, -EEXIST, "Refusing to replace %s: it holds %s of data and %zu internal snapshot%s",
                            path, what, snapshots, snapshots == 1 ? "" : "s");
}

int image_replace_open(const char *path, bool replace_data, int *ret_fd, mode_t *ret_mode, struct vh_error *err) {
        if (isempty(path))
                return vh_error_set(err, -EINVAL, "no file name given");
        struct stat st;
        if (stat(path, &st) < 0) {
                if (errno != ENOENT)
                        return vh_error_set(err, negative_errno(), "%s: cannot stat: %m", path);
                *ret_fd = -1;
                *ret_mode = 0;
                return 0;
        }
        if (!S_ISREG(st.st_mode))
                return vh_error_set(err, -EINVAL, "%s: exists and is not a regular file; not replacing it", path);

        /* The write lock first, which no VM or qemu-io holding the file
         * lets us have; the look at its data happens under it. */
        _cleanup_close_ int fd = open(path, O_RDWR | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return vh_error_set(err, negative_errno(), "%s: cannot open the existing file: %m", path);
        int r = image_lock(fd, IMAGE_LOCK_WRITE, path, err);
        if (r < 0)
                return r;
        if (!replace_data) {
                r = image_replace_check_locked(fd, path, err);
                if (r < 0)
                        return r;
        }
        *ret_fd = TAKE_FD(fd);
        *ret_mode = st.st_mode & 07777;
        return 0;
}

int vh_image_replace_check(const char *path, bool replace_data, struct vh_error *err) {
        int fd = -1;
        mode_t mode;
        int r = image_replace_open(path, replace_data, &fd, &mode, err);
        safe_close(fd);
        return r;
}
