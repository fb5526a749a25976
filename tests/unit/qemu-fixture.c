/* tests/unit/qemu-fixture.c: see qemu-fixture.h. */
#include "qemu-fixture.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/poll.h"
#include "test.h"

#define START_WAIT_MS (10 * 1000)
#define CONNECT_WAIT_MS (20 * 1000)

pid_t test_qemu_spawn(char *const argv[], const char *log) {
        pid_t pid = fork();
        if (pid == 0) {
                int null = open("/dev/null", O_RDONLY);
                int out = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
                if (null < 0 || out < 0)
                        _exit(127);
                dup2(null, 0);
                dup2(out, 1);
                dup2(out, 2);
                execvp(argv[0], argv);
                _exit(127);
        }
        return pid;
}

bool test_qemu_available(void) {
        return test_need_program(TEST_QEMU_BINARY, "qemu-system-x86");
}

/* Paused (-S), because a machine that starts running by itself emits
 * RESUME at start-up, and QEMU 7.2 was seen, about once in 400 starts, to
 * send that event ahead of the greeting to a client connecting at that
 * instant (the client queues it, see qmp_fake_event_before_greeting) and,
 * about as rarely, to never answer that client's qmp_capabilities. Tests
 * that need a running machine send "cont". */
bool test_qemu_start(struct test_qemu *qm, int n_monitors) {
        *qm = (struct test_qemu) { .pid = -1 };
        if (n_monitors < 1 || n_monitors > TEST_QEMU_MAX_MONITORS)
                return false;
        const char *dir = test_tmpdir();
        char *argv[16];
        char opt[TEST_QEMU_MAX_MONITORS][300];
        int argc = 0;
        argv[argc++] = (char *) TEST_QEMU_BINARY;
        argv[argc++] = (char *) "-accel";
        argv[argc++] = (char *) "tcg";
        argv[argc++] = (char *) "-M";
        argv[argc++] = (char *) "none";
        argv[argc++] = (char *) "-nodefaults";
        argv[argc++] = (char *) "-S";
        argv[argc++] = (char *) "-display";
        argv[argc++] = (char *) "none";
        for (int i = 0; i < n_monitors; i++) {
                snprintf(qm->sock[i], sizeof(qm->sock[i]), "%s/qmp%d.sock", dir, i);
                snprintf(opt[i], sizeof(opt[i]), "unix:%s,server=on,wait=off", qm->sock[i]);
                argv[argc++] = (char *) "-qmp";
                argv[argc++] = opt[i];
        }
        argv[argc] = NULL;

        char log[300];
        snprintf(log, sizeof(log), "%s/qemu.log", dir);
        pid_t pid = test_qemu_spawn(argv, log);
        if (pid < 0)
                return false;
        qm->pid = pid;

        uint64_t deadline = vh_deadline_after(START_WAIT_MS);
        while (vh_clock_ms() < deadline) {
                bool all = true;
                for (int i = 0; i < n_monitors; i++)
                        if (access(qm->sock[i], F_OK) < 0)
                                all = false;
                if (all)
                        return true;
                int status;
                if (waitpid(pid, &status, WNOHANG) == pid) {
                        qm->pid = -1;
                        test_fail(__FILE__, __LINE__, "QEMU exited at start (status 0x%x), see its log", status);
                        return false;
                }
                usleep(10 * 1000);
        }
        test_fail(__FILE__, __LINE__, "QEMU's QMP sockets did not appear within 10 s");
        return false;
}

void test_qemu_kill(struct test_qemu *qm) {
        if (qm->pid > 0) {
                kill(qm->pid, SIGKILL);
                waitpid(qm->pid, NULL, 0);
                qm->pid = -1;
        }
}

int test_qmp_connect_retry(const char *path, struct qmp_client **ret, struct vh_error *err) {
        uint64_t deadline = vh_deadline_after(CONNECT_WAIT_MS);
        for (;;) {
                int r = qmp_connect(path, CONNECT_WAIT_MS, ret, err);
                if ((r != -ECONNREFUSED && r != -ENOENT) || vh_clock_ms() >= deadline)
                        return r;
                usleep(10 * 1000);
        }
}
