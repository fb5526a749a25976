/* host/ssh-pipe.c: a remote command whose stdin this process writes. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/macro.h"
#include "base/process.h"
#include "host/ssh-pipe.h"
#include "host/ssh.h"

extern char **environ;

int host_ssh_pipe_start(const struct vh_context *ctx, const struct host_def *def, char *const remote_argv[],
                        struct host_ssh_pipe *ret, struct vh_error *err) {
        char **argv = NULL;
        _cleanup_free_ char *exe = NULL;
        int r = host_ssh_command(ctx, def, 0, remote_argv, &argv, &exe, err);
        if (r < 0)
                return r;
        /* A socket rather than a pipe for stdin: send() with MSG_NOSIGNAL
         * turns a vanished reader into -EPIPE without touching this
         * process's signal dispositions (a library must not). */
        int in[2] = { -1, -1 }, out[2] = { -1, -1 };
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, in) < 0 || pipe2(out, O_CLOEXEC) < 0) {
                r = negative_errno();
                safe_close(in[0]);
                safe_close(in[1]);
                host_names_free(argv);
                return vh_error_set(err, r, "host '%s': cannot make a pipe for ssh: %s", def->name, strerror(-r));
        }
        char *const *envp = environ;
        pid_t pid = fork();
        if (pid == 0) {
                /* Async-signal-safe calls only from here on. dup2 clears
                 * close-on-exec on the copies. */
                if (dup2(in[1], STDIN_FILENO) >= 0 && dup2(out[1], STDOUT_FILENO) >= 0 &&
                    dup2(out[1], STDERR_FILENO) >= 0)
                        execve(exe, argv, envp);
                _exit(127);
        }
        int fork_errno = errno;
        host_names_free(argv);
        close(in[1]);
        close(out[1]);
        if (pid < 0) {
                close(in[0]);
                close(out[0]);
                return vh_error_set(err, -fork_errno, "host '%s': cannot start ssh: %s", def->name,
                                    strerror(fork_errno));
        }
        *ret = (struct host_ssh_pipe) { .pid = pid, .in_fd = in[0], .out_fd = out[0] };
        return 0;
}

int host_ssh_pipe_write(struct host_ssh_pipe *p, const void *buf, size_t len) {
        const char *b = buf;
        while (len > 0) {
                ssize_t n = send(p->in_fd, b, len, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n > 0) {
                        b += n;
                        len -= (size_t) n;
                        continue;
                }
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno != EAGAIN)
                        return negative_errno();
                struct pollfd pfd = { .fd = p->in_fd, .events = POLLOUT };
                int k = poll(&pfd, 1, (int) HOST_SSH_PIPE_IDLE_MS);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return negative_errno();
                if (k == 0)
                        return -ETIMEDOUT;
        }
        return 0;
}

void host_ssh_pipe_abort(struct host_ssh_pipe *p) {
        p->in_fd = safe_close(p->in_fd);
        p->out_fd = safe_close(p->out_fd);
        if (p->pid > 0) {
                kill(p->pid, SIGTERM);
                if (!process_wait_gone(p->pid, PROCESS_TERM_GRACE_MS))
                        kill(p->pid, SIGKILL);
                while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
                        ;
        }
        p->pid = 0;
}

int host_ssh_pipe_finish(const struct host_def *def, struct host_ssh_pipe *p, unsigned timeout_ms,
                         size_t max_output, char **ret_output, struct vh_error *err) {
        p->in_fd = safe_close(p->in_fd);
        size_t cap = max_output + 1, len = 0;
        _cleanup_free_ char *out = malloc(cap);
        if (!out) {
                host_ssh_pipe_abort(p);
                return -ENOMEM;
        }
        uint64_t deadline = vh_clock_ms() + timeout_ms;
        int r = 0;
        for (;;) {
                uint64_t now = vh_clock_ms();
                if (now >= deadline) {
                        r = -ETIMEDOUT;
                        break;
                }
                struct pollfd pfd = { .fd = p->out_fd, .events = POLLIN };
                int k = poll(&pfd, 1, (int) (deadline - now));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0) {
                        r = negative_errno();
                        break;
                }
                if (k == 0)
                        continue;
                char buf[4096];
                ssize_t n = read(p->out_fd, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                /* Past the limit the rest is read and dropped: it is for messages. */
                size_t keep = MIN((size_t) n, max_output - len);
                memcpy(out + len, buf, keep);
                len += keep;
        }
        out[len] = '\0';
        if (r < 0) {
                host_ssh_pipe_abort(p);
                if (r == -ETIMEDOUT)
                        return vh_error_set(err, r, "host '%s' did not finish within %u s", def->name,
                                            timeout_ms / 1000);
                return vh_error_set(err, r, "host '%s': cannot read ssh's output: %s", def->name, strerror(-r));
        }
        p->out_fd = safe_close(p->out_fd);
        int status;
        while (waitpid(p->pid, &status, 0) < 0)
                if (errno != EINTR) {
                        r = negative_errno();
                        p->pid = 0;
                        return vh_error_set(err, r, "host '%s': cannot wait for ssh: %s", def->name, strerror(-r));
                }
        p->pid = 0;
        if (WIFSIGNALED(status))
                return vh_error_set(err, -EINTR, "host '%s': ssh was killed by signal %d", def->name,
                                    WTERMSIG(status));
        r = WEXITSTATUS(status);
        if (r == 255)
                return host_ssh_classify(def, out, err);
        if (ret_output)
                *ret_output = TAKE_PTR(out);
        return r;
}
