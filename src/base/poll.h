/* base/poll.h: waiting for file descriptors until a deadline on the
 * monotonic clock (base/clock.h), the one loop behind every bounded wait
 * for a child, a socket or a client. */
#pragma once

#include <poll.h>
#include <stddef.h>
#include <stdint.h>

/* Polls 'fds' until one has an event or vh_clock_ms() reaches
 * 'deadline_ms' (a deadline in the past polls once without sleeping).
 * Restarts after EINTR with the time that is left, so a signal neither
 * ends the wait early nor extends it. Returns the number of ready entries
 * (their revents set), 0 at the deadline, or -errno. */
int vh_poll_fds_until(struct pollfd *fds, size_t n_fds, uint64_t deadline_ms);

/* The same for one descriptor: returns its revents (> 0), 0 at the
 * deadline, or -errno. */
int vh_poll_until(int fd, short events, uint64_t deadline_ms);

/* vh_clock_ms() + 'timeout_ms', for the deadline of a wait starting now. */
uint64_t vh_deadline_after(uint64_t timeout_ms);
