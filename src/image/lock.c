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
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "base/macro.h"
#include "base/strutil.h"
#include "image/image-internal.h"

/* Bounds on the /proc walk that names a lock holder. */
#define LOCK_SCAN_MAX_PROCS 4096
#define LOCK_SCAN_MAX_FDS 65536

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

/* Does one "lock:" line of /proc/PID/fdinfo/FD cover 'byte' of the file
 * (dev, ino)? The line reads "lock:\t1: OFDLCK ADVISORY  READ -1
 * fe:00:10954696 100 101": major and minor in hex, the inode in decimal,
 * then the first and last byte (or EOF). */
static bool lock_line_covers(const char *line, dev_t dev, ino_t ino, off_t byte) {
        const char *p = strstr(line, "OFDLCK");
        if (!p)
                p = strstr(line, "POSIX");
        if (!p)
                return false;
        unsigned maj, min;
        unsigned long long inode;
        char first[32], last[32];
        /* Skip the type, advisory/mandatory, access and pid columns. */
        char type[16], adv[16], access[16], pid[16];
        if (sscanf(p, "%15s %15s %15s %15s %x:%x:%llu %31s %31s", type, adv, access, pid, &maj, &min, &inode, first,
                   last) != 9)
                return false;
        if (makedev(maj, min) != dev || (ino_t) inode != ino)
                return false;
        long long lo = strtoll(first, NULL, 10);
        long long hi = streq(last, "EOF") ? INT64_MAX : strtoll(last, NULL, 10);
        return byte >= lo && byte <= hi;
}

/* Finds a process other than us (or one of our other descriptors) that
 * holds a lock on 'byte' of the file open as 'fd', and describes it as
 * "process 1234 (qemu-system-x86)". OFD locks do not record a pid (F_GETLK
 * and /proc/locks say -1), but /proc/PID/fdinfo lists the locks of each
 * descriptor. Leaves 'buf' empty when none is found (or /proc is hidden). */
static void lock_holder(int fd, off_t byte, char *buf, size_t len) {
        buf[0] = '\0';
        struct stat st;
        if (fstat(fd, &st) < 0)
                return;
        DIR *proc = opendir("/proc");
        if (!proc)
                return;
        unsigned procs = 0, fds = 0;
        struct dirent *de;
        while (!buf[0] && (de = readdir(proc)) && procs < LOCK_SCAN_MAX_PROCS && fds < LOCK_SCAN_MAX_FDS) {
                if (!isdigit((unsigned char) de->d_name[0]))
                        continue;
                procs++;
                char path[64];
                snprintf(path, sizeof(path), "/proc/%.20s/fdinfo", de->d_name);
                DIR *fdinfo = opendir(path);
                if (!fdinfo)
                        continue;
                struct dirent *fe;
                while (!buf[0] && (fe = readdir(fdinfo)) && fds < LOCK_SCAN_MAX_FDS) {
                        if (!isdigit((unsigned char) fe->d_name[0]))
                                continue;
                        fds++;
                        if (atoi(de->d_name) == getpid() && atoi(fe->d_name) == fd)
                                continue; /* our own descriptor */
                        char fpath[128];
                        snprintf(fpath, sizeof(fpath), "/proc/%.20s/fdinfo/%.20s", de->d_name, fe->d_name);
                        FILE *f = fopen(fpath, "re");
                        if (!f)
                                continue;
                        char line[256];
                        for (unsigned n = 0; n < 256 && fgets(line, sizeof(line), f); n++)
                                if (startswith(line, "lock:") && lock_line_covers(line, st.st_dev, st.st_ino, byte)) {
                                        char comm[64] = "?";
                                        char cpath[64];
                                        snprintf(cpath, sizeof(cpath), "/proc/%.20s/comm", de->d_name);
                                        FILE *c = fopen(cpath, "re");
                                        if (c) {
                                                if (fgets(comm, sizeof(comm), c))
                                                        comm[strcspn(comm, "\n")] = '\0';
                                                fclose(c);
                                        }
                                        snprintf(buf, len, "process %.20s (%.32s)%s", de->d_name, comm,
                                                 atoi(de->d_name) == getpid() ? ", this process" : "");
                                        break;
                                }
                        fclose(f);
                }
                closedir(fdinfo);
        }
        closedir(proc);
}

/* "in use by process 1234 (qemu-system-x86)" or, when /proc does not say,
 * "in use by another process (a running VM?)". */
static void in_use_by(int fd, off_t byte, char *buf, size_t len) {
        char who[128];
        lock_holder(fd, byte, who, sizeof(who));
        snprintf(buf, len, "the image is in use by %.100s", who[0] ? who : "another process (a running VM?)");
}

void image_unlock(int fd) {
        struct flock fl = {
                .l_type = F_UNLCK,
                .l_whence = SEEK_SET,
                .l_start = 0,
                .l_len = 0, /* the whole file */
        };
        (void) fcntl(fd, F_OFD_SETLK, &fl);
}

int image_lock(int fd, enum image_lock_mode mode, const char *filename, struct vh_error *err) {
        char who[192];
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
                if (r == -EAGAIN || r == -EACCES) {
                        unsigned byte = (perm & (1u << i)) ? LOCK_PERM_BASE + i : LOCK_SHARED_BASE + i;
                        /* Someone holds the byte we want as a write lock;
                         * QEMU never does that, but say who. */
                        in_use_by(fd, byte, who, sizeof(who));
                        return vh_error_set(err, -EBUSY, "%s: failed to lock byte %u: %s", filename, byte, who);
                }
                if (r < 0)
                        return vh_error_set(err, r, "%s: cannot take QEMU's image lock: %s", filename, strerror(-r));
        }

        for (unsigned i = 0; i < 4; i++) {
                if (perm & (1u << i)) {
                        int r = byte_taken(fd, LOCK_SHARED_BASE + i);
                        if (r < 0)
                                return vh_error_set(err, r, "%s: cannot test image locks: %s", filename, strerror(-r));
                        if (r > 0) {
                                in_use_by(fd, LOCK_SHARED_BASE + i, who, sizeof(who));
                                return vh_error_set(err, -EBUSY, "%s: failed to get \"%s\" lock: %s", filename,
                                                    perm_names[i], who);
                        }
                }
                if (!(shared & (1u << i))) {
                        int r = byte_taken(fd, LOCK_PERM_BASE + i);
                        if (r < 0)
                                return vh_error_set(err, r, "%s: cannot test image locks: %s", filename, strerror(-r));
                        if (r > 0) {
                                in_use_by(fd, LOCK_PERM_BASE + i, who, sizeof(who));
                                return vh_error_set(err, -EBUSY, "%s: failed to get shared \"%s\" lock: %s",
                                                    filename, perm_names[i], who);
                        }
                }
        }
        return 0;
}
