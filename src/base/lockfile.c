/* base/lockfile.c: bounded exclusive OFD locks that record their holder. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/lockfile.h"
#include "base/macro.h"

/* How often a waiter tries again: short against the holder's own work
 * (a VM start takes seconds), cheap enough for many waiters. */
#define LOCK_POLL_MS 20

static int try_lock(int fd) {
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
        if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
                return 1;
        if (errno == EAGAIN || errno == EACCES || errno == EINTR)
                return 0;
        return negative_errno();
}

/* "PID OP\n" from the file; a holder that has not written yet leaves it
 * empty or with its predecessor's text, which is then reported. */
static void read_holder(int fd, struct vh_lock_holder *ret) {
        char buf[96];
        *ret = (struct vh_lock_holder) {};
        ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
        if (n <= 0)
                return;
        buf[n] = '\0';
        int pid, end = 0;
        if (sscanf(buf, "%d %n", &pid, &end) != 1 || pid <= 0)
                return;
        ret->pid = pid;
        size_t len = strcspn(buf + end, "\n");
        if (len >= sizeof(ret->op))
                len = sizeof(ret->op) - 1;
        memcpy(ret->op, buf + end, len);
        ret->op[len] = '\0';
}

int vh_lockfile_take(const char *path, const char *what, const char *op, unsigned timeout_ms, struct vh_error *err) {
        int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOCTTY, 0600);
        if (fd < 0)
                return vh_error_set(err, negative_errno(), "Cannot open the lock file %s of %s: %m", path, what);
        uint64_t deadline = vh_clock_ms() + timeout_ms;
        for (;;) {
                int r = try_lock(fd);
                if (r < 0) {
                        r = vh_error_set(err, r, "Cannot lock %s (%s): %s", path, what, strerror(-r));
                        close(fd);
                        return r;
                }
                if (r > 0)
                        break;
                if (vh_clock_ms() >= deadline) {
                        struct vh_lock_holder h;
                        read_holder(fd, &h);
                        close(fd);
                        if (h.pid > 0)
                                return vh_error_set(err, -EBUSY,
                                                    "%s is busy: being %s by pid %d (waited %u.%u s); try again when "
                                                    "it is done",
                                                    what, h.op[0] ? h.op : "used", h.pid, timeout_ms / 1000,
                                                    timeout_ms % 1000 / 100);
                        return vh_error_set(err, -EBUSY, "%s is busy: another vmhost process holds %s (waited %u.%u s)",
                                            what, path, timeout_ms / 1000, timeout_ms % 1000 / 100);
                }
                struct timespec ts = { 0, LOCK_POLL_MS * 1000 * 1000 };
                nanosleep(&ts, NULL);
        }
        /* Ours now: replace the previous holder's name with ours. A failed
         * write costs only the waiters' message, not the lock. */
        char buf[96];
        int n = snprintf(buf, sizeof(buf), "%d %.47s\n", (int) getpid(), op ? op : "used");
        if (ftruncate(fd, 0) == 0)
                (void) !pwrite(fd, buf, (size_t) n, 0);
        return fd;
}

int vh_lockfile_holder(const char *path, struct vh_lock_holder *ret) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return errno == ENOENT ? 0 : negative_errno();
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
        if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
                return negative_errno();
        if (fl.l_type == F_UNLCK)
                return 0;
        if (ret)
                read_holder(fd, ret);
        return 1;
}
