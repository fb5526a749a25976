/* base/lockfile.h: the one lock helper of vmhost: an exclusive lock on a
 * file, waited for a bounded time, that names its holder.
 *
 * The lock is an OFD lock (fcntl F_OFD_SETLK) on the open file: it belongs
 * to the descriptor, not to a pid file's contents, so it goes away with the
 * last descriptor of its holder, also when the holder is killed. Two
 * descriptors conflict even inside one process (two threads of a server).
 * The holder writes "PID OP" into the file, so that a caller that waited
 * in vain can say who is in the way ("being started by pid 1234"); that
 * text is only information, the lock itself is the kernel's. */
#pragma once

#include "vmhost/error.h"

struct vh_lock_holder {
        int pid;       /* 0 when the holder has not written its name yet */
        char op[48];   /* what it does, a past participle: "started", "changed" */
};

/* Takes the exclusive lock on 'path' (created 0600 when missing), polling
 * until 'timeout_ms' has passed (0: one try). 'op' is recorded for waiters.
 * Returns the descriptor to close to release it (close-on-exec, so no
 * child process inherits it). Past the deadline: -EBUSY and the message
 * "WHAT is busy: being OP by pid N ...", 'what' naming the locked object
 * ("VM r1"). */
int vh_lockfile_take(const char *path, const char *what, const char *op, unsigned timeout_ms, struct vh_error *err);

/* Whether another descriptor holds the lock on 'path' now: 1 and the
 * holder in *ret (when not NULL), 0 if nobody does (or no file exists),
 * or -errno. Never waits and never creates the file. */
int vh_lockfile_holder(const char *path, struct vh_lock_holder *ret);
