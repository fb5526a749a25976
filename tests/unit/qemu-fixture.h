/* tests/unit/qemu-fixture.h: a real QEMU for the QMP tests: no machine at
 * all (-M none, TCG: up in a fraction of a second), paused, with one or two
 * QMP unix sockets in the test's temp dir. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "qmp/qmp.h"

#define TEST_QEMU_BINARY "qemu-system-x86_64"
#define TEST_QEMU_MAX_MONITORS 2

struct test_qemu {
        pid_t pid;
        char sock[TEST_QEMU_MAX_MONITORS][256]; /* QMP sockets, sock[0] always */
};

/* Forks 'argv' (argv[0] looked up in PATH) with stdin from /dev/null and
 * stdout and stderr into the file 'log'; the pid, or -1. */
pid_t test_qemu_spawn(char *const argv[], const char *log);

/* QEMU is installed; else the test is counted as skipped. */
bool test_qemu_available(void);

/* Starts it with 'n_monitors' (1 or 2) QMP sockets; true once every socket
 * exists (test failure and false if QEMU exits or they do not appear). Its
 * output goes to qemu.log in the temp dir. */
bool test_qemu_start(struct test_qemu *qm, int n_monitors);
void test_qemu_kill(struct test_qemu *qm);

/* qmp_connect() until QEMU listens: it creates the socket file a moment
 * before it accepts on it. */
int test_qmp_connect_retry(const char *path, struct qmp_client **ret, struct vh_error *err);
