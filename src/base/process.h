/* base/process.h: running other programs with an argv (never a shell),
 * capturing their output with a size limit. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Runs argv[0] (searched in PATH) with stdin from /dev/null, collecting
 * stdout and stderr together (at most 'max_output' bytes are kept; the
 * rest is drained). Returns the exit status (0..255), 128+N for death by
 * signal N, or -errno when it could not be started (-ENOENT when the
 * program does not exist). 'ret_output' may be NULL. */
int process_run(char *const argv[], size_t max_output, char **ret_output);

/* Finds 'name' in PATH (or checks it, when it contains a '/'). Returns a new
 * string or NULL. */
char *find_executable(const char *name);

/* Milliseconds on the monotonic clock, for deadlines. */

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
