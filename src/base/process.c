/* base/process.c: fork/exec with argv, bounded in time and output. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/macro.h"
#include "base/poll.h"
#include "base/process.h"
#include "base/strutil.h"

char *find_executable(const struct vh_context *ctx, const char *name) {
        if (strchr(name, '/'))
                return access(name, X_OK) == 0 ? strdup(name) : NULL;

        const char *path = ctx ? ctx->exec_path : NULL;
        if (isempty(path))
                path = VH_CONTEXT_DEFAULT_PATH;
        _cleanup_free_ char *copy = strdup(path);
        if (!copy)
                return NULL;
        char *save = NULL;
        for (char *dir = strtok_r(copy, ":", &save); dir; dir = strtok_r(NULL, ":", &save)) {
                char *p = strdup_printf("%s/%s", dir, name);
                if (!p)
                        return NULL;
                struct stat st;
                if (stat(p, &st) == 0 && S_ISREG(st.st_mode) && access(p, X_OK) == 0)
                        return p;
                free(p);
        }
        /* Many tools live in sbin, which a user's PATH may lack. */
        static const char *const extra[] = { "/usr/sbin", "/sbin" };
        for (size_t i = 0; i < ELEMENTSOF(extra); i++) {
                char *p = strdup_printf("%s/%s", extra[i], name);
                if (p && access(p, X_OK) == 0)
                        return p;
                free(p);
        }
        return NULL;
}

/* One run of a child: its pipes, what is collected, and how it ends. */
struct run {
        const char *cmd;           /* argv[0], for messages */
        pid_t pid;
        int pid_fd;                /* -1 on kernels without pidfds */
        int out_fd, err_fd;        /* read ends; err_fd -1 when stderr goes with stdout */
        /* Collected stdout (and stderr) when not streaming. */
        bool keep;
        char *buf;
        size_t len, cap, max;
        /* Streaming: stdout to the callback, stderr collected apart. */
        process_output_fn on_stdout;
        void *userdata;
        char *err_buf;
        size_t err_len, err_cap;
};

/* Makes sure 'fd' is not 0, 1 or 2, where the child's dup2() onto
 * stdin/stdout/stderr would be a no-op that leaves O_CLOEXEC set. */
static int fd_above_stdio(int fd) {
        if (fd < 0 || fd > STDERR_FILENO)
                return fd;
        int moved = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
        int e = errno;
        close(fd);
        errno = e;
        return moved;
}

static int pipe_above_stdio(int p[2]) {
        if (pipe2(p, O_CLOEXEC) < 0)
                return negative_errno();
        p[0] = fd_above_stdio(p[0]);
        p[1] = fd_above_stdio(p[1]);
        if (p[0] < 0 || p[1] < 0) {
                int r = negative_errno();
                p[0] = safe_close(p[0]);
                p[1] = safe_close(p[1]);
                return r;
        }
        return 0;
}

static int append(char **buf, size_t *len, size_t *cap, const char *data, size_t n, size_t max) {
        if (n > max - *len)
                return -E2BIG;
        if (*len + n + 1 > *cap) {
                size_t ncap = MAX(*cap * 2, (size_t) 4096);
                ncap = MAX(ncap, *len + n + 1);
                ncap = MIN(ncap, max + 1);
                char *b = realloc(*buf, ncap);
                if (!b)
                        return -ENOMEM;
                *buf = b;
                *cap = ncap;
        }
        memcpy(*buf + *len, data, n);
        *len += n;
        (*buf)[*len] = '\0';
        return 0;
}

/* Ends the child: SIGTERM, SIGKILL, bounded (see process.h), and reaps it
 * if it is gone. */
static void run_kill(struct run *run) {
        if (run->pid <= 0)
                return;
        bool gone;
        if (run->pid_fd >= 0)
                gone = process_pidfd_terminate(run->pid_fd, PROCESS_TERM_GRACE_MS, PROCESS_KILL_WAIT_MS) >= 0;
        else {
                /* Our unreaped child: its pid cannot be reused, kill() is safe. */
                kill(run->pid, SIGKILL);
                gone = false;
                for (uint64_t deadline = vh_deadline_after(PROCESS_KILL_WAIT_MS); vh_clock_ms() < deadline;) {
                        if (waitpid(run->pid, NULL, WNOHANG) == run->pid) {
                                run->pid = -1;
                                return;
                        }
                        usleep(10 * 1000);
                }
        }
        if (gone) {
                while (waitpid(run->pid, NULL, 0) < 0 && errno == EINTR)
                        ;
                run->pid = -1;
        }
}

/* Reads what 'fd' has now, without blocking. Returns 1 at end of file, 0
 * when nothing more is there for now, or -errno to end the run. */
static int run_read(struct run *run, int fd, bool is_stderr, struct vh_error *err) {
        char chunk[64 * 1024];
        for (;;) {
                ssize_t k = read(fd, chunk, sizeof(chunk));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0 && errno == EAGAIN)
                        return 0;
                if (k < 0)
                        return vh_error_set(err, negative_errno(), "Cannot read the output of '%s': %m", run->cmd);
                if (k == 0)
                        return 1;
                if (is_stderr) {
                        /* Diagnostics only: past the limit they are dropped. */
                        size_t room = PROCESS_STDERR_MAX - run->err_len;
                        if (room > 0 && append(&run->err_buf, &run->err_len, &run->err_cap, chunk,
                                               MIN((size_t) k, room), PROCESS_STDERR_MAX) == -ENOMEM)
                                return vh_error_set(err, -ENOMEM, "Out of memory for the output of '%s'", run->cmd);
                } else if (run->on_stdout) {
                        int r = run->on_stdout(chunk, (size_t) k, run->userdata);
                        if (r != 0)
                                return vh_error_set(err, r < 0 ? r : -ECANCELED,
                                                    "'%s' was cancelled while its output was being read", run->cmd);
                } else if (run->keep) {
                        int r = append(&run->buf, &run->len, &run->cap, chunk, (size_t) k, run->max);
                        if (r == -E2BIG)
                                return vh_error_set(err, r, "The output of '%s' exceeds %zu bytes; it was stopped",
                                                    run->cmd, run->max);
                        if (r < 0)
                                return vh_error_set(err, r, "Out of memory for the output of '%s'", run->cmd);
                }
        }
}

/* Runs the child to its end; see process_run() and process_run_stream(). */
static int run_child(const struct vh_context *ctx, struct run *run, char *const argv[], unsigned timeout_ms,
                     bool idle_timeout, struct vh_error *err) {
        if (!argv || isempty(argv[0]))
                return vh_error_set(err, -EINVAL, "No program to run");
        if (timeout_ms == 0)
                return vh_error_set(err, -EINVAL, "No time limit for '%s'", argv[0]);
        run->cmd = argv[0];

        /* Everything the child needs exists before the fork: the resolved
         * path (no PATH lookup in the child), the environment, the
         * descriptors. */
        _cleanup_free_ char *exe = find_executable(ctx, argv[0]);
        if (!exe)
                return vh_error_set(err, -ENOENT, "'%s' is not installed (not found in PATH)", argv[0]);
        char *const *envp = environ;
        _cleanup_close_ int null_fd = fd_above_stdio(open("/dev/null", O_RDONLY | O_CLOEXEC));
        if (null_fd < 0)
                return vh_error_set(err, negative_errno(), "Cannot open /dev/null: %m");
        int out[2] = { -1, -1 }, errp[2] = { -1, -1 }, execp[2] = { -1, -1 };
        int r = pipe_above_stdio(out);
        if (r >= 0 && run->on_stdout)
                r = pipe_above_stdio(errp);
        /* Carries execve()'s errno back; closed by a successful exec. */
        if (r >= 0)
                r = pipe_above_stdio(execp);
        if (r < 0) {
                safe_close(out[0]), safe_close(out[1]), safe_close(errp[0]), safe_close(errp[1]);
                return vh_error_set(err, r, "Cannot make pipes for '%s': %s", argv[0], strerror(-r));
        }

        pid_t pid = fork();
        if (pid == 0) {
                /* Async-signal-safe calls only from here on. */
                if (dup2(null_fd, STDIN_FILENO) >= 0 && dup2(out[1], STDOUT_FILENO) >= 0 &&
                    dup2(errp[1] >= 0 ? errp[1] : out[1], STDERR_FILENO) >= 0)
                        execve(exe, argv, envp);
                int e = errno;
                /* A failed exec closed nothing: let go of what is shared
                 * with the caller (an OFD lock it holds lives as long as
                 * any copy of its descriptor) before the caller hears of
                 * the failure. */
                int keep = execp[1];
                if (keep > 3)
                        (void) syscall(SYS_close_range, 3u, (unsigned) keep - 1, 0u);
                (void) syscall(SYS_close_range, (unsigned) keep + 1, ~0u, 0u);
                ssize_t k = write(keep, &e, sizeof(e));
                (void) k;
                _exit(127);
        }
        int fork_errno = errno;
        safe_close(out[1]);
        safe_close(errp[1]);
        safe_close(execp[1]);
        _cleanup_close_ int exec_fd = execp[0];
        _cleanup_close_ int out_fd = out[0], err_fd = errp[0];
        if (pid < 0)
                return vh_error_set(err, -fork_errno, "Cannot start '%s': %s", argv[0], strerror(fork_errno));
        run->pid = pid;
        /* Opened on our unreaped child, so it is the right process. */
        _cleanup_close_ int pid_fd = process_pidfd_open(pid);
        run->pid_fd = pid_fd;

        if (fcntl(out_fd, F_SETFL, O_NONBLOCK) < 0 || (err_fd >= 0 && fcntl(err_fd, F_SETFL, O_NONBLOCK) < 0)) {
                r = vh_error_set(err, negative_errno(), "Cannot set up the pipes of '%s': %m", argv[0]);
                run_kill(run);
                return r;
        }

        uint64_t deadline = vh_deadline_after(timeout_ms);
        bool exited = false;
        for (;;) {
                struct pollfd fds[3] = {
                        { .fd = out_fd, .events = POLLIN },
                        { .fd = err_fd, .events = POLLIN },
                        { .fd = pid_fd, .events = POLLIN },
                };
                if (out_fd < 0 && err_fd < 0 && (pid_fd < 0 || exited))
                        break;
                int k = vh_poll_fds_until(fds, ELEMENTSOF(fds), deadline);
                if (k < 0) {
                        r = vh_error_set(err, k, "Cannot wait for '%s': %s", argv[0], strerror(-k));
                        run_kill(run);
                        return r;
                }
                /* The clock too, not only poll's 0: a descriptor that stays
                 * ready must not keep the loop from its deadline. */
                if (k == 0 || vh_clock_ms() >= deadline) {
                        r = vh_error_set(err, -ETIMEDOUT, "'%s' %s %u.%03u s; it was stopped", argv[0],
                                         idle_timeout ? "gave no output for" : "did not finish within",
                                         timeout_ms / 1000, timeout_ms % 1000);
                        run_kill(run);
                        return r;
                }
                if (fds[2].revents)
                        exited = true;
                /* Once the child has exited, what it wrote is in the pipes
                 * already: read it and stop, even if a process it left
                 * behind (a daemon) still holds the write end. */
                int fd_list[2] = { out_fd, err_fd };
                for (int i = 0; i < 2; i++) {
                        if (fd_list[i] < 0 || (!fds[i].revents && !exited))
                                continue;
                        r = run_read(run, fd_list[i], i == 1, err);
                        if (r < 0) {
                                run_kill(run);
                                return r;
                        }
                        if (r > 0 || exited) {
                                if (i == 0)
                                        out_fd = safe_close(out_fd);
                                else
                                        err_fd = safe_close(err_fd);
                        }
                        if (idle_timeout && fds[i].revents)
                                deadline = vh_deadline_after(timeout_ms);
                }
        }

        int status;
        if (pid_fd >= 0 || exited) {
                while (waitpid(pid, &status, 0) < 0)
                        if (errno != EINTR)
                                return vh_error_set(err, negative_errno(), "Cannot reap '%s': %m", argv[0]);
        } else {
                /* No pidfd: both pipes are closed, so the child has exited or
                 * is about to; still bounded by the deadline. */
                for (;;) {
                        pid_t w = waitpid(pid, &status, WNOHANG);
                        if (w == pid)
                                break;
                        if (w < 0 && errno != EINTR)
                                return vh_error_set(err, negative_errno(), "Cannot reap '%s': %m", argv[0]);
                        if (vh_clock_ms() >= deadline) {
                                run_kill(run);
                                return vh_error_set(err, -ETIMEDOUT, "'%s' did not exit in time; it was stopped",
                                                    argv[0]);
                        }
                        usleep(10 * 1000);
                }
        }
        run->pid = -1;

        int exec_errno = 0;
        if (read(exec_fd, &exec_errno, sizeof(exec_errno)) == (ssize_t) sizeof(exec_errno) && exec_errno > 0)
                return vh_error_set(err, -exec_errno, "Cannot execute %s: %s", exe, strerror(exec_errno));

        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        if (WIFSIGNALED(status))
                return 128 + WTERMSIG(status);
        return vh_error_set(err, -EIO, "'%s' ended in an unknown way (status 0x%x)", argv[0], (unsigned) status);
}

int process_run(const struct vh_context *ctx, char *const argv[], unsigned timeout_ms, size_t max_output,
                char **ret_output, struct vh_error *err) {
        struct run run = { .pid = -1, .pid_fd = -1, .keep = ret_output != NULL, .max = max_output };
        int r = run_child(ctx, &run, argv, timeout_ms, false, err);
        if (r >= 0 && ret_output) {
                if (!run.buf) {
                        run.buf = strdup("");
                        if (!run.buf)
                                return vh_error_set(err, -ENOMEM, "Out of memory");
                }
                *ret_output = TAKE_PTR(run.buf);
        }
        free(run.buf);
        return r;
}

int process_run_stream(const struct vh_context *ctx, char *const argv[], unsigned idle_timeout_ms,
                       process_output_fn on_stdout, void *userdata, char **ret_stderr, struct vh_error *err) {
        if (!on_stdout)
                return vh_error_set(err, -EINVAL, "No output callback for '%s'", argv && argv[0] ? argv[0] : "?");
        struct run run = { .pid = -1, .pid_fd = -1, .on_stdout = on_stdout, .userdata = userdata };
        int r = run_child(ctx, &run, argv, idle_timeout_ms, true, err);
        if (r >= 0 && ret_stderr) {
                if (!run.err_buf) {
                        run.err_buf = strdup("");
                        if (!run.err_buf)
                                return vh_error_set(err, -ENOMEM, "Out of memory");
                }
                *ret_stderr = TAKE_PTR(run.err_buf);
        }
        free(run.err_buf);
        return r;
}

bool process_alive(int pid) {
        if (pid <= 0)
                return false;
        if (kill(pid, 0) < 0 && errno != EPERM)
                return false;
        /* A zombie still answers kill(); it is dead all the same. Our QEMUs
         * are reparented to PID 1, which on some machines reaps late. */
        char path[64], buf[512];
        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return true; /* no procfs: trust kill() */
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n <= 0)
                return false;
        buf[n] = '\0';
        /* "pid (comm) S ...": comm may contain ')' itself, so take the last. */
        const char *p = strrchr(buf, ')');
        if (!p || p[1] != ' ')
                return true;
        return p[2] != 'Z' && p[2] != 'X';
}

int process_pidfd_open(int pid) {
        if (pid <= 0)
                return -EINVAL;
        int fd = (int) syscall(SYS_pidfd_open, pid, 0);
        return fd < 0 ? negative_errno() : fd;
}

/* Sleeps until the process behind 'pid_fd' has exited, at most until
 * 'deadline' (vh_clock_ms() clock). A pidfd polls readable only after the whole
 * exit path has run, file descriptors included; that is what matters to
 * whoever wants the process's sockets or locks next. */
static bool pidfd_wait_until(int pid_fd, uint64_t deadline) {
        return vh_poll_until(pid_fd, POLLIN, deadline) > 0;
}

int process_pidfd_signal(int pid_fd, int sig) {
        return syscall(SYS_pidfd_send_signal, pid_fd, sig, NULL, 0) < 0 ? negative_errno() : 0;
}

int process_pidfd_terminate(int pid_fd, unsigned term_timeout_ms, unsigned kill_timeout_ms) {
        int r = process_pidfd_signal(pid_fd, SIGTERM);
        if (r < 0 && r != -ESRCH)
                return r;
        if (pidfd_wait_until(pid_fd, vh_deadline_after(term_timeout_ms)))
                return 0;
        r = process_pidfd_signal(pid_fd, SIGKILL);
        if (r < 0 && r != -ESRCH)
                return r;
        if (pidfd_wait_until(pid_fd, vh_deadline_after(kill_timeout_ms)))
                return 1;
        return -ETIMEDOUT;
}

bool process_wait_gone(int pid, unsigned timeout_ms) {
        uint64_t deadline = vh_deadline_after(timeout_ms);
        int pid_fd = process_pidfd_open(pid);
        if (pid_fd >= 0) {
                bool gone = pidfd_wait_until(pid_fd, deadline);
                close(pid_fd);
                return gone;
        }
        if (pid_fd == -ESRCH)
                return true;
        /* No pidfds (a kernel before 5.3): poll the process's state. */
        while (process_alive(pid)) {
                if (vh_clock_ms() >= deadline)
                        return false;
                usleep(10 * 1000);
        }
        return true;
}
