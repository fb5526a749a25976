/* image/lock.c: QEMU-compatible image locking, so that vmhost does not
 * write an image a running VM uses, and a VM does not start on an image
 * vmhost is writing.
 *
 * QEMU (block/file-posix.c) expresses its block-layer permissions as shared
 * OFD locks on single bytes of the image file: for each permission bit N it
 * holds, it locks byte 100 + N; for each permission it refuses to share
 * with others, it locks byte 200 + N. Before use, it tests (F_OFD_GETLK
 * with a write lock) that nobody else locks 200 + N for a permission it
 * wants, nor 100 + N for a permission it refuses to share. The permission
 * bits are: 0 consistent read, 1 write, 2 write unchanged, 3 resize.
 *
 * qemu-img and QEMU were observed (/proc/locks) to hold, for a read-only
 * open: 100, 201, 203; for a read-write open: 100, 101, 103, 201, 203.
 * We take exactly those. Locks are advisory: they only keep cooperating
 * programs apart. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "base/macro.h"
#include "image/image-internal.h"

#define LOCK_PERM_BASE 100
#define LOCK_SHARED_BASE 200

enum {
        PERM_CONSISTENT_READ = 1 << 0,
        PERM_WRITE = 1 << 1,
        PERM_WRITE_UNCHANGED = 1 << 2,
        PERM_RESIZE = 1 << 3,
        PERM_ALL = 0xf,
};

static const char *const perm_names[] = { "consistent read", "write", "write unchanged", "resize" };

static int lock_byte(int fd, off_t byte) {
        struct flock fl = {
                .l_type = F_RDLCK,
                .l_whence = SEEK_SET,
                .l_start = byte,
                .l_len = 1,
        };
        if (fcntl(fd, F_OFD_SETLK, &fl) < 0)
                return negative_errno();
        return 0;
}

/* True if another open file description holds a lock on 'byte'. */
static int byte_taken(int fd, off_t byte) {
        struct flock fl = {
                .l_type = F_WRLCK,
                .l_whence = SEEK_SET,
                .l_start = byte,
                .l_len = 1,
        };
        if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
                return negative_errno();
        return fl.l_type != F_UNLCK;
}

int image_lock(int fd, enum image_lock_mode mode, const char *filename, struct vh_error *err) {
        unsigned perm = PERM_CONSISTENT_READ;
        unsigned shared = PERM_CONSISTENT_READ | PERM_WRITE_UNCHANGED;
        if (mode == IMAGE_LOCK_WRITE)
                perm |= PERM_WRITE | PERM_RESIZE;

        for (unsigned i = 0; i < 4; i++) {
                int r = 0;
                if (perm & (1u << i))
                        r = lock_byte(fd, LOCK_PERM_BASE + i);
                if (r >= 0 && !(shared & (1u << i)))
                        r = lock_byte(fd, LOCK_SHARED_BASE + i);
                if (r == -EINVAL || r == -ENOLCK || r == -EOPNOTSUPP)
                        return 0; /* no OFD locks on this file system: QEMU then runs without locks too */
                if (r == -EAGAIN || r == -EACCES)
                        return vh_error_set(err, -EBUSY, "%s: failed to lock byte %u: the image is in use",
                                            filename, (perm & (1u << i)) ? LOCK_PERM_BASE + i : LOCK_SHARED_BASE + i);
                if (r < 0)
                        return vh_error_set(err, r, "%s: cannot take QEMU's image lock: %s", filename, strerror(-r));
        }

        for (unsigned i = 0; i < 4; i++) {
                if (perm & (1u << i)) {
                        int r = byte_taken(fd, LOCK_SHARED_BASE + i);
                        if (r < 0)
                                return vh_error_set(err, r, "%s: cannot test image locks: %s", filename, strerror(-r));
                        if (r > 0)
                                return vh_error_set(err, -EBUSY,
                                                    "%s: failed to get \"%s\" lock: the image is in use by another "
                                                    "process (a running VM?)",
                                                    filename, perm_names[i]);
                }
                if (!(shared & (1u << i))) {
                        int r = byte_taken(fd, LOCK_PERM_BASE + i);
                        if (r < 0)
                                return vh_error_set(err, r, "%s: cannot test image locks: %s", filename, strerror(-r));
                        if (r > 0)
                                return vh_error_set(err, -EBUSY,
                                                    "%s: failed to get shared \"%s\" lock: the image is in use by "
                                                    "another process (a running VM?)",
                                                    filename, perm_names[i]);
                }
        }
        return 0;
}
