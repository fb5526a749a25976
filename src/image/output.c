/* image/output.c: how create and convert put a new image file in place.
 *
 * The image is written to a temporary file in the destination directory,
 * flushed (unless the caller asks for no flush and nothing is replaced),
 * and renamed over the destination, so a crash or an error leaves
 * either the old file or the complete new one, never a half-written image
 * that QEMU might probe as something else. An existing file is replaced
 * only if it holds no data or the caller says so (replace.c; qemu-img
 * replaces anything), and never while another process holds it with
 * QEMU's locks (a VM using it): we take the write lock on the old file
 * first and keep it until the rename. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/macro.h"
#include "base/strutil.h"
#include "image/image-internal.h"

/* At most this many characters of the destination name go into the name
 * of the temporary file, to stay below NAME_MAX. */
#define TMP_NAME_KEEP 128

int image_output_begin(const char *path, bool replace_data, struct image_output *ret, struct vh_error *err) {
        struct image_output o = { .fd = -1, .old_fd = -1 };
        int r;

        if (isempty(path))
                return vh_error_set(err, -EINVAL, "no output file name given");

        struct stat st;
        if (lstat(path, &st) == 0 && S_ISLNK(st.st_mode)) {
                /* Replace the file the link points to, not the link. */
                o.path = realpath(path, NULL);
                if (!o.path)
                        return vh_error_set(err, negative_errno(), "%s: cannot resolve the symbolic link: %m", path);
        } else
                o.path = strdup(path);
        if (!o.path)
                return vh_error_set(err, -ENOMEM, "out of memory");

        /* The old file stays open, write-locked, until the rename: nobody
         * that honours the lock can put data into it between the check
         * and the replacement. */
        mode_t old_mode;
        r = image_replace_open(path, replace_data, &o.old_fd, &old_mode, err);
        if (r < 0)
                goto fail;

        const char *slash = strrchr(o.path, '/');
        const char *base = slash ? slash + 1 : o.path;
        int dir_len = slash ? (int) (slash - o.path + 1) : 0;
        for (int attempt = 0; attempt < 100; attempt++) {
                uint32_t rnd;
                if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
                        rnd = (uint32_t) getpid() * 2654435761u + (uint32_t) attempt;
                free(o.tmp_path);
                o.tmp_path = strdup_printf("%.*s.%.*s.vmhost-%08" PRIx32 ".tmp", dir_len, o.path, TMP_NAME_KEEP,
                                           base, rnd);
                if (!o.tmp_path) {
                        r = vh_error_set(err, -ENOMEM, "out of memory");
                        goto fail;
                }
                /* 0644 minus the umask, as qemu-img creates files. */
                o.fd = open(o.tmp_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOCTTY, 0644);
                if (o.fd >= 0 || errno != EEXIST)
                        break;
        }
        if (o.fd < 0) {
                r = vh_error_set(err, negative_errno(), "%s: cannot create a file in its directory: %m", path);
                free(o.tmp_path);
                o.tmp_path = NULL;
                goto fail;
        }
        if (old_mode && fchmod(o.fd, old_mode) < 0) {
                r = vh_error_set(err, negative_errno(), "%s: cannot set the file mode: %m", o.tmp_path);
                goto fail;
        }

        *ret = o;
        return 0;

fail:
        image_output_done(&o);
        return r;
}

int image_output_commit(struct image_output *out, bool flush, struct vh_error *err) {
        /* A file that is replaced is flushed whatever the caller asked: the
         * rename must not reach the disk before the new content does, or a
         * power loss could leave neither the old file nor the new one. */
        if (out->old_fd >= 0)
                flush = true;
        if (flush && fsync(out->fd) < 0)
                return vh_error_set(err, negative_errno(), "%s: fsync failed: %m", out->tmp_path);
        if (rename(out->tmp_path, out->path) < 0)
                return vh_error_set(err, negative_errno(), "%s: cannot rename %s into place: %m", out->path,
                                    out->tmp_path);
        free(out->tmp_path);
        out->tmp_path = NULL;

        if (!flush)
                return 0;
        /* The rename itself must reach the disk too. */
        _cleanup_free_ char *dir = NULL;
        const char *slash = strrchr(out->path, '/');
        dir = slash ? strndup(out->path, (size_t) MAX(slash - out->path, 1)) : strdup(".");
        if (!dir)
                return vh_error_set(err, -ENOMEM, "out of memory");
        _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 || fsync(dfd) < 0)
                return vh_error_set(err, negative_errno(), "%s: cannot flush the directory: %m", dir);
        return 0;
}

void image_output_done(struct image_output *out) {
        if (out->tmp_path)
                (void) unlink(out->tmp_path);
        free(out->tmp_path);
        free(out->path);
        out->tmp_path = out->path = NULL;
        out->fd = safe_close(out->fd);
        out->old_fd = safe_close(out->old_fd);
}
