/* base/process.h: running other programs with an argv (never a shell),
 * with a time limit, capturing their output with a size limit or handing
 * it to a callback as it comes. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmhost/context.h"
#include "vmhost/error.h"

/* How long a killed child gets: SIGTERM, then SIGKILL after
 * PROCESS_TERM_GRACE_MS, then up to PROCESS_KILL_WAIT_MS for it to be
 * gone (a process in uninterruptible sleep can outlast SIGKILL; it is then
 * left behind rather than waited for without end). */
#define PROCESS_TERM_GRACE_MS 2000u
#define PROCESS_KILL_WAIT_MS 5000u

/* What process_run_stream() keeps of the child's stderr. */
#define PROCESS_STDERR_MAX (64u * 1024)

/* Runs argv[0] (searched in the context's exec_path, before forking; ctx
 * may be NULL for VH_CONTEXT_DEFAULT_PATH) with stdin from
 * /dev/null, collecting stdout and stderr together, and waits at most
 * 'timeout_ms' (> 0) for it. Returns the exit status (0..255), 128+N for
 * death by signal N, or -errno with 'err' (may be NULL) naming the
 * command:
 *   -ENOENT     the program does not exist;
 *   -ETIMEDOUT  it did not finish in time: it was killed (SIGTERM, then
 *               SIGKILL, see above);
 *   -E2BIG      its output exceeded 'max_output' bytes: it was killed
 *               (only when 'ret_output' is non-NULL; without it the output
 *               is read and dropped, whatever its size);
 *   others      it could not be started (exec failed: its errno).
 * On a return >= 0, *ret_output (if non-NULL) gets the NUL-terminated
 * output, owned by the caller.
 *
 * Only async-signal-safe calls happen between fork and exec (dup2,
 * execve, write, _exit): everything is allocated and resolved before the
 * fork, so this is safe in a multi-threaded process. */
int process_run(const struct vh_context *ctx, char *const argv[], unsigned timeout_ms, size_t max_output,
                char **ret_output, struct vh_error *err);

/* Receives the next 'size' bytes (> 0) of a streamed child's stdout.
 * Returning non-zero cancels: the child is killed and process_run_stream()
 * returns that value if it is negative, -ECANCELED otherwise. */
typedef int (*process_output_fn)(const void *data, size_t size, void *userdata);

/* Like process_run(), for outputs too long to hold in memory (an image
 * sent over ssh): the child's stdout goes to 'on_stdout' chunk by chunk as
 * it arrives; its stderr is collected apart (the first PROCESS_STDERR_MAX
 * bytes, the rest dropped: it is for messages) into *ret_stderr (may be
 * NULL), on a return >= 0 too. 'idle_timeout_ms' (> 0) bounds the time
 * without any output, not the whole run, since a long transfer is
 * legitimately long; 'on_stdout' can cancel on its own deadline. */
int process_run_stream(const struct vh_context *ctx, char *const argv[], unsigned idle_timeout_ms,
                       process_output_fn on_stdout, void *userdata, char **ret_stderr, struct vh_error *err);

/* Finds 'name' in the context's exec_path (ctx NULL:
 * VH_CONTEXT_DEFAULT_PATH), then in /usr/sbin and /sbin, or checks it when
 * it contains a '/'. Returns a new string or NULL. */
char *find_executable(const struct vh_context *ctx, const char *name);

/* Waits until 'pid' has fully exited (a pidfd, so its file descriptors
 * are closed too; polling its state where pidfds are missing) or
 * 'timeout_ms' passes; returns whether it is gone. */
bool process_wait_gone(int pid, unsigned timeout_ms);

/* Whether a process with this pid exists (kill(pid, 0)). */
bool process_alive(int pid);

/* A pidfd for 'pid' (close it), or -errno (-ESRCH: no such process). Open
 * it before checking who the process is: signals sent through it can then
 * never reach a process that reused the pid. */
int process_pidfd_open(int pid);

/* Sends 'sig' to the process behind 'pid_fd'; -ESRCH once it has exited. */
int process_pidfd_signal(int pid_fd, int sig);

/* SIGTERM through 'pid_fd', up to 'term_timeout_ms' for the process to be
 * gone, then SIGKILL and up to 'kill_timeout_ms' more. Returns 0 if it
 * exited on SIGTERM, 1 if it took SIGKILL, -ETIMEDOUT if it is still
 * there, or another -errno. */
int process_pidfd_terminate(int pid_fd, unsigned term_timeout_ms, unsigned kill_timeout_ms);
