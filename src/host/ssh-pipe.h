/* host/ssh-pipe.h: a remote command fed from this process: ssh runs it
 * with a socket to its stdin, written here (an image stream), while its
 * stdout and stderr (a short answer or an error) are collected. The
 * socket is written with MSG_NOSIGNAL, so a remote end that goes away is
 * -EPIPE here, never a SIGPIPE; each write waits a bounded time, so a cut
 * link is an error, not a hang. */
#pragma once

#include <stddef.h>

#include "host/host-def.h"
#include "vmhost/context.h"
#include "vmhost/error.h"

/* How long one write may find no room: ssh's buffers full and nothing
 * moving (a cut link, a remote end that stopped reading). */
#define HOST_SSH_PIPE_IDLE_MS 30000u

struct host_ssh_pipe {
        int pid;      /* ssh; 0 when not running */
        int in_fd;    /* the remote command's stdin; -1 when closed */
        int out_fd;   /* its stdout and stderr together */
};

/* Starts 'remote_argv' on the host (host_ssh_argv(), flags 0). */
int host_ssh_pipe_start(const struct vh_context *ctx, const struct host_def *def, char *const remote_argv[],
                        struct host_ssh_pipe *ret, struct vh_error *err);
/* Writes all of 'buf' to the remote stdin: 0, -EPIPE (the remote command
 * or ssh went away), -ETIMEDOUT (no progress for HOST_SSH_PIPE_IDLE_MS). */
int host_ssh_pipe_write(struct host_ssh_pipe *p, const void *buf, size_t len);
/* Closes the remote stdin, collects the output (at most 'max_output'
 * bytes, within 'timeout_ms') and waits for ssh. Returns the remote exit
 * status (0..254), or -errno with 'err' naming the host (an ssh failure:
 * host_ssh_classify()). '*ret_output' (may be NULL) gets the output, also
 * on a non-zero status. */
int host_ssh_pipe_finish(const struct host_def *def, struct host_ssh_pipe *p, unsigned timeout_ms,
                         size_t max_output, char **ret_output, struct vh_error *err);
/* Ends ssh (SIGTERM, then SIGKILL) and closes everything: a cancelled
 * push. The remote command sees its stdin end early. Accepts a pipe that
 * never started. */
void host_ssh_pipe_abort(struct host_ssh_pipe *p);
