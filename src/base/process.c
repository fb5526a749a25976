/* base/process.c: fork/exec with argv. */
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
#include "base/process.h"
#include "base/strutil.h"

char *find_executable(const char *name) {
        if (strchr(name, '/'))
                return access(name, X_OK) == 0 ? strdup(name) : NULL;

        const char *path = getenv("PATH");
        if (isempty(path))
                path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
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

int process_run(char *const argv[], size_t max_output, char **ret_output) {
        _cleanup_free_ char *exe = find_executable(argv[0]);
        if (!exe)
                return -ENOENT;

        int pipefd[2];
        if (pipe2(pipefd, O_CLOEXEC) < 0)
                return negative_errno();

        pid_t pid = fork();
        if (pid < 0) {
                int r = negative_errno();
                close(pipefd[0]);
                close(pipefd[1]);
                return r;
        }
        if (pid == 0) {
                int null = open("/dev/null", O_RDONLY);
                if (null >= 0)
                        dup2(null, STDIN_FILENO);
                dup2(pipefd[1], STDOUT_FILENO);
                dup2(pipefd[1], STDERR_FILENO);
                execv(exe, argv);
                _exit(127);
        }
        close(pipefd[1]);

        size_t cap = max_output + 1, len = 0;
        _cleanup_free_ char *buf = malloc(cap);
        char drain[4096];
        for (;;) {
                ssize_t k;
                if (buf && len < max_output)
                        k = read(pipefd[0], buf + len, max_output - len);
                else
                        k = read(pipefd[0], drain, sizeof(drain));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                if (buf && len < max_output)
                        len += (size_t) k;
        }
        close(pipefd[0]);

        int status;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return negative_errno();

        if (buf)
                buf[len] = '\0';
        if (ret_output)
                *ret_output = TAKE_PTR(buf);

        if (WIFEXITED(status))
                return WEXITSTATUS(status);
        if (WIFSIGNALED(status))
                return 128 + WTERMSIG(status);
        return -EIO;
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
        for (;;) {
                struct pollfd pfd = { .fd = pid_fd, .events = POLLIN };
                uint64_t now = vh_clock_ms();
                int timeout = now >= deadline ? 0 : (int) MIN(deadline - now, (uint64_t) INT32_MAX);
                int k = poll(&pfd, 1, timeout);
                if (k > 0)
                        return true;
                if (k == 0)
                        return false;
                if (errno != EINTR)
                        return false;
        }
}

int process_pidfd_signal(int pid_fd, int sig) {
        return syscall(SYS_pidfd_send_signal, pid_fd, sig, NULL, 0) < 0 ? negative_errno() : 0;
}

int process_pidfd_terminate(int pid_fd, unsigned term_timeout_ms, unsigned kill_timeout_ms) {
        int r = process_pidfd_signal(pid_fd, SIGTERM);
        if (r < 0 && r != -ESRCH)
                return r;
        if (pidfd_wait_until(pid_fd, vh_clock_ms() + term_timeout_ms))
                return 0;
        r = process_pidfd_signal(pid_fd, SIGKILL);
        if (r < 0 && r != -ESRCH)
                return r;
        if (pidfd_wait_until(pid_fd, vh_clock_ms() + kill_timeout_ms))
                return 1;
        return -ETIMEDOUT;
}

bool process_wait_gone(int pid, unsigned timeout_ms) {
        uint64_t deadline = vh_clock_ms() + timeout_ms;
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
