/* base/poll.c: poll() until a deadline. */
#include <errno.h>
#include <limits.h>

#include "base/clock.h"
#include "base/macro.h"
#include "base/poll.h"

uint64_t vh_deadline_after(uint64_t timeout_ms) {
        uint64_t now = vh_clock_ms();
        return timeout_ms > UINT64_MAX - now ? UINT64_MAX : now + timeout_ms;
}

int vh_poll_fds_until(struct pollfd *fds, size_t n_fds, uint64_t deadline_ms) {
        for (;;) {
                uint64_t now = vh_clock_ms();
                int timeout = now >= deadline_ms ? 0 : (int) MIN(deadline_ms - now, (uint64_t) INT_MAX);
                int k = poll(fds, (nfds_t) n_fds, timeout);
                if (k >= 0)
                        return k;
                if (errno != EINTR)
                        return negative_errno();
        }
}

int vh_poll_until(int fd, short events, uint64_t deadline_ms) {
        struct pollfd p = { .fd = fd, .events = events };
        int k = vh_poll_fds_until(&p, 1, deadline_ms);
        if (k <= 0)
                return k;
        /* POLLNVAL etc. are events too; never report 0 for a ready fd. */
        return p.revents ? p.revents : POLLIN;
}
