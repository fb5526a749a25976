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
uint64_t now_ms(void);

/* Waits until 'pid' is gone (see process_alive) or 'timeout_ms' passes;
 * returns whether it is gone. */
bool process_wait_gone(int pid, unsigned timeout_ms);

/* Whether a process with this pid exists (kill(pid, 0)). */
bool process_alive(int pid);
