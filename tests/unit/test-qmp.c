/* tests/unit/test-qmp.c: unit tests for src/qmp/: the client against a
 * real QEMU (qemu-system-x86_64 -M none under TCG: greeting, queries,
 * error classes, human commands, events, a stopped and a killed QEMU), and
 * against a fake server on a socketpair for the faults a real QEMU cannot
 * be made to produce (garbage, over-long lines, replies without ids). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/json.h"
#include "base/process.h"
#include "base/strutil.h"
#include "qmp/qmp.h"
#include "qemu-fixture.h"
#include "test.h"

static long long clock_ms(void) {
        return (long long) vh_clock_ms();
}

/* ---- a real QEMU ---- */


TEST(qmp_real_greeting_and_commands) {
        if (!test_qemu_available())
                return;
        struct test_qemu qm;
        if (!test_qemu_start(&qm, 1))
                return;
        struct qmp_client *q = NULL;
        struct vh_error err = {};
        int r = test_qmp_connect_retry(qm.sock[0], &q, &err);
        CHECK_EQ_INT(r, 0);
        if (r < 0) {
                fprintf(stderr, "  connect: %s\n", err.msg);
                test_qemu_kill(&qm);
                return;
        }

        /* The greeting's version is the one query-version reports. */
        const struct qmp_version *ver = qmp_get_version(q);
        CHECK(ver->major >= 2);
        CHECK(ver->package != NULL);
        struct json_value *v = NULL;
        CHECK_EQ_INT(qmp_execute(q, "query-version", NULL, &v, &err), 0);
        int64_t major = -1, minor = -1, micro = -1;
        struct json_value *qemu = json_object_get(v, "qemu");
        CHECK_EQ_INT(json_get_int(json_object_get(qemu, "major"), &major), 0);
        CHECK_EQ_INT(json_get_int(json_object_get(qemu, "minor"), &minor), 0);
        CHECK_EQ_INT(json_get_int(json_object_get(qemu, "micro"), &micro), 0);
        CHECK_EQ_INT(major, ver->major);
        CHECK_EQ_INT(minor, ver->minor);
        CHECK_EQ_INT(micro, ver->micro);
        const char *package = NULL;
        CHECK_EQ_INT(json_get_string(json_object_get(v, "package"), &package), 0);
        CHECK_STREQ(package, ver->package);
        v = json_value_free(v);

        CHECK_EQ_INT(qmp_execute(q, "query-status", NULL, &v, &err), 0);
        const char *status = NULL;
        bool running = true;
        CHECK_EQ_INT(json_get_string(json_object_get(v, "status"), &status), 0);
        CHECK_STREQ(status, "prelaunch");
        CHECK_EQ_INT(json_get_bool(json_object_get(v, "running"), &running), 0);
        CHECK(!running);
        v = json_value_free(v);
        CHECK_EQ_INT(qmp_execute(q, "cont", NULL, NULL, &err), 0);
        CHECK_EQ_INT(qmp_execute(q, "query-status", NULL, &v, &err), 0);
        CHECK_EQ_INT(json_get_string(json_object_get(v, "status"), &status), 0);
        CHECK_STREQ(status, "running");
        CHECK_EQ_INT(json_get_bool(json_object_get(v, "running"), &running), 0);
        CHECK(running);
        v = json_value_free(v);

        /* Error replies carry QMP's class and description. */
        v = NULL;
        r = qmp_execute(q, "foo", NULL, &v, &err);
        CHECK_EQ_INT(r, -EOPNOTSUPP);
        CHECK_EQ_INT(err.code, -EOPNOTSUPP);
        CHECK_STREQ(err.msg, "QMP command 'foo' failed: CommandNotFound: The command foo has not been found");
        CHECK_STREQ(qmp_last_error_class(q), "CommandNotFound");
        CHECK(v == NULL);

        r = qmp_execute(q, "query-status", "{\"bogus\": 1}", NULL, &err);
        CHECK_EQ_INT(r, -EREMOTEIO);
        CHECK_STREQ(qmp_last_error_class(q), "GenericError");
        CHECK(strstr(err.msg, "QMP command 'query-status' failed: GenericError: ") == err.msg);
        CHECK(strstr(err.msg, "bogus") != NULL);

        /* A success clears the last error class. */
        CHECK_EQ_INT(qmp_execute(q, "query-status", "{}", NULL, &err), 0);
        CHECK(qmp_last_error_class(q) == NULL);

        /* Refused before anything is sent: a bad command name, arguments
         * that are not one object, and text trying to append a command. */
        CHECK_EQ_INT(qmp_execute(q, "query-status\",\"x", NULL, NULL, &err), -EINVAL);
        CHECK_EQ_INT(qmp_execute(q, "", NULL, NULL, &err), -EINVAL);
        CHECK_EQ_INT(qmp_execute(q, "stop", "[1]", NULL, &err), -EINVAL);
        CHECK_STREQ(err.msg, "Arguments of QMP command 'stop' must be a JSON object");
        CHECK_EQ_INT(qmp_execute(q, "query-status", "{}}{\"execute\":\"quit\"", NULL, &err), -EINVAL);
        CHECK_STREQ(err.msg, "Arguments of QMP command 'query-status' are not valid JSON: "
                             "line 1, column 3: unexpected '}' after the JSON value");
        CHECK_EQ_INT(qmp_execute(q, "query-status", NULL, NULL, &err), 0); /* still there */

        /* Human monitor commands. */
        char *text = NULL;
        CHECK_EQ_INT(qmp_human_command(q, "info status", &text, &err), 0);
        CHECK_STREQ(text, "VM status: running\r\n");
        free(text);
        text = NULL;
        CHECK_EQ_INT(qmp_human_command(q, "info \"quoted\"\nversion", &text, &err), 0);
        CHECK(text != NULL); /* HMP's own complaint, but the escaping held */
        free(text);

        /* The largest reply QEMU has: the whole schema. */
        v = NULL;
        CHECK_EQ_INT(qmp_execute(q, "query-qmp-schema", NULL, &v, &err), 0);
        CHECK(json_array_len(v) > 500);
        v = json_value_free(v);

        CHECK(qmp_free(q) == NULL);
        test_qemu_kill(&qm);
}

static bool event_is(struct qmp_event *e, const char *name) {
        return e && streq(e->name, name);
}

TEST(qmp_real_events_are_queued) {
        if (!test_qemu_available())
                return;
        struct test_qemu qm;
        if (!test_qemu_start(&qm, 1))
                return;
        _cleanup_(qmp_freep) struct qmp_client *q = NULL;
        struct vh_error err = {};
        if (test_qmp_connect_retry(qm.sock[0], &q, &err) < 0) {
                test_fail(__FILE__, __LINE__, "connect: %s", err.msg);
                test_qemu_kill(&qm);
                return;
        }

        CHECK_EQ_INT(qmp_execute(q, "cont", NULL, NULL, &err), 0);
        CHECK_EQ_INT(qmp_wait_event(q, "RESUME", 1000, NULL, &err), 0);
        CHECK_EQ_INT(qmp_events_queued(q), 0);

        /* QEMU sends STOP before the reply to "stop": the client must keep
         * it while it waits for the reply, and across later commands. */
        CHECK_EQ_INT(qmp_execute(q, "stop", NULL, NULL, &err), 0);
        CHECK_EQ_INT(qmp_execute(q, "cont", NULL, NULL, &err), 0);
        CHECK_EQ_INT(qmp_execute(q, "query-status", NULL, NULL, &err), 0);
        CHECK_EQ_INT(qmp_events_queued(q), 2);

        struct qmp_event *e = NULL;
        CHECK_EQ_INT(qmp_next_event(q, 1000, &e, &err), 0);
        CHECK(event_is(e, "STOP"));
        CHECK(e && e->seconds > 1000000000 && e->microseconds >= 0 && e->microseconds < 1000000);
        CHECK(e && e->data == NULL);
        e = qmp_event_free(e);
        CHECK_EQ_INT(qmp_next_event(q, 1000, &e, &err), 0);
        CHECK(event_is(e, "RESUME"));
        e = qmp_event_free(e);

        long long t0 = clock_ms();
        CHECK_EQ_INT(qmp_next_event(q, 200, &e, &err), -ETIMEDOUT);
        /* Not before the timeout; no upper bound (load makes waits longer). */
        CHECK(clock_ms() - t0 >= 190);
        CHECK(e == NULL);
        CHECK_EQ_INT(qmp_next_event(q, 0, &e, &err), -ETIMEDOUT);

        /* wait_event picks its event out of the queue and keeps the rest in
         * order. HMP "stop" emits the same event as QMP. */
        CHECK_EQ_INT(qmp_human_command(q, "stop", NULL, &err), 0);
        CHECK_EQ_INT(qmp_execute(q, "system_reset", NULL, NULL, &err), 0);
        CHECK_EQ_INT(qmp_execute(q, "cont", NULL, NULL, &err), 0);
        CHECK_EQ_INT(qmp_wait_event(q, "RESET", 1000, &e, &err), 0);
        CHECK(event_is(e, "RESET"));
        const char *reason = NULL;
        CHECK_EQ_INT(json_get_string(json_object_get(e ? e->data : NULL, "reason"), &reason), 0);
        CHECK_STREQ(reason, "host-qmp-system-reset");
        e = qmp_event_free(e);
        CHECK_EQ_INT(qmp_wait_event(q, "RESUME", 1000, NULL, &err), 0);
        CHECK_EQ_INT(qmp_next_event(q, 1000, &e, &err), 0);
        CHECK(event_is(e, "STOP"));
        e = qmp_event_free(e);
        CHECK_EQ_INT(qmp_events_queued(q), 0);
        CHECK_EQ_INT(qmp_events_dropped(q), 0);

        /* "quit": the reply, SHUTDOWN, then QEMU closes the socket. */
        CHECK_EQ_INT(qmp_execute(q, "quit", NULL, NULL, &err), 0);
        CHECK_EQ_INT(qmp_wait_event(q, "SHUTDOWN", 5000, &e, &err), 0);
        CHECK_EQ_INT(json_get_string(json_object_get(e ? e->data : NULL, "reason"), &reason), 0);
        CHECK_STREQ(reason, "host-qmp-quit");
        e = qmp_event_free(e);
        int status = 0;
        CHECK_EQ_INT(waitpid(qm.pid, &status, 0), qm.pid);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
        qm.pid = -1;
        int r = qmp_execute(q, "query-status", NULL, NULL, &err);
        CHECK(r == -ECONNRESET || r == -EPIPE);
}

TEST(qmp_real_events_between_commands) {
        /* Events that come while the client is idle: a second monitor
         * stops and resumes the machine; QEMU broadcasts the events to
         * both monitors. */
        if (!test_qemu_available())
                return;
        struct test_qemu qm;
        if (!test_qemu_start(&qm, 2))
                return;
        _cleanup_(qmp_freep) struct qmp_client *a = NULL, *b = NULL;
        struct vh_error err = {};
        if (test_qmp_connect_retry(qm.sock[0], &a, &err) < 0 || test_qmp_connect_retry(qm.sock[1], &b, &err) < 0) {
                test_fail(__FILE__, __LINE__, "connect: %s", err.msg);
                test_qemu_kill(&qm);
                return;
        }

        /* 'a' is idle while 'b' starts the machine. */
        CHECK_EQ_INT(qmp_execute(b, "cont", NULL, NULL, &err), 0);
        CHECK_EQ_INT(qmp_wait_event(a, "RESUME", 1000, NULL, &err), 0);
        CHECK_EQ_INT(qmp_wait_event(b, "RESUME", 1000, NULL, &err), 0);

        CHECK_EQ_INT(qmp_execute(b, "stop", NULL, NULL, &err), 0);
        CHECK_EQ_INT(qmp_wait_event(b, "STOP", 1000, NULL, &err), 0);
        /* Already readable on 'a': a zero timeout finds it. */
        struct qmp_event *e = NULL;
        CHECK_EQ_INT(qmp_next_event(a, 0, &e, &err), 0);
        CHECK(event_is(e, "STOP"));
        e = qmp_event_free(e);

        CHECK_EQ_INT(qmp_execute(b, "cont", NULL, NULL, &err), 0);
        CHECK_EQ_INT(qmp_execute(b, "system_reset", NULL, NULL, &err), 0);
        CHECK_EQ_INT(qmp_wait_event(b, "RESET", 1000, NULL, &err), 0);
        CHECK_EQ_INT(qmp_wait_event(b, "RESUME", 1000, NULL, &err), 0);

        /* 'a' reads RESUME and RESET while waiting for its own reply. */
        struct json_value *v = NULL;
        CHECK_EQ_INT(qmp_execute(a, "query-status", NULL, &v, &err), 0);
        const char *status = NULL;
        CHECK_EQ_INT(json_get_string(json_object_get(v, "status"), &status), 0);
        CHECK_STREQ(status, "running");
        json_value_free(v);
        CHECK_EQ_INT(qmp_events_queued(a), 2);
        CHECK_EQ_INT(qmp_next_event(a, 1000, &e, &err), 0);
        CHECK(event_is(e, "RESUME"));
        e = qmp_event_free(e);
        CHECK_EQ_INT(qmp_next_event(a, 1000, &e, &err), 0);
        CHECK(event_is(e, "RESET"));
        e = qmp_event_free(e);

        test_qemu_kill(&qm);
}

TEST(qmp_real_killed_or_stuck_qemu) {
        if (!test_qemu_available())
                return;
        struct test_qemu qm;
        if (!test_qemu_start(&qm, 1))
                return;
        _cleanup_(qmp_freep) struct qmp_client *q = NULL;
        struct vh_error err = {};
        if (test_qmp_connect_retry(qm.sock[0], &q, &err) < 0) {
                test_fail(__FILE__, __LINE__, "connect: %s", err.msg);
                test_qemu_kill(&qm);
                return;
        }

        /* QEMU serves one client per socket: a second one gets no greeting
         * and is told why. */
        struct qmp_client *second = NULL;
        CHECK_EQ_INT(qmp_connect(qm.sock[0], 300, &second, &err), -ETIMEDOUT);
        CHECK(strstr(err.msg, "is another one connected?") != NULL);
        CHECK(second == NULL);

        /* A stopped (hung) QEMU: the command times out; once it runs again
         * the late reply is told apart by its id and the next command gets
         * its own. */
        qmp_set_timeout(q, 300);
        kill(qm.pid, SIGSTOP);
        long long t0 = clock_ms();
        int r = qmp_execute(q, "query-version", NULL, NULL, &err);
        CHECK_EQ_INT(r, -ETIMEDOUT);
        CHECK(clock_ms() - t0 >= 290);
        CHECK(strstr(err.msg, "QMP command 'query-version' got no reply from ") == err.msg);
        kill(qm.pid, SIGCONT);
        qmp_set_timeout(q, 0);
        struct json_value *v = NULL;
        CHECK_EQ_INT(qmp_execute(q, "query-status", NULL, &v, &err), 0);
        CHECK(json_object_get(v, "status") != NULL); /* not query-version's reply */
        v = json_value_free(v);

        /* A killed QEMU: a clean error, the same on every later call. The
         * error itself, not a timeout, shows it was noticed at once. */
        test_qemu_kill(&qm);
        r = qmp_execute(q, "query-status", NULL, NULL, &err);
        CHECK(r == -ECONNRESET || r == -EPIPE);
        CHECK(strstr(err.msg, "QEMU closed the QMP connection") == err.msg);
        struct vh_error err2 = {};
        CHECK_EQ_INT(qmp_execute(q, "query-status", NULL, NULL, &err2), r);
        CHECK_STREQ(err2.msg, err.msg);
        struct qmp_event *e = NULL;
        CHECK_EQ_INT(qmp_next_event(q, 1000, &e, &err2), r);
        CHECK_EQ_INT(qmp_human_command(q, "info status", NULL, &err2), r);

        /* Nobody listens any more. */
        CHECK_EQ_INT(qmp_connect(qm.sock[0], 300, &second, &err), -ECONNREFUSED);
        char missing[300];
        snprintf(missing, sizeof(missing), "%s/nothing.sock", test_tmpdir());
        CHECK_EQ_INT(qmp_connect(missing, 300, &second, &err), -ENOENT);
        char want[400];
        snprintf(want, sizeof(want), "No QMP socket at %s: is the VM running?", missing);
        CHECK_STREQ(err.msg, want);
}

/* ---- a fake server ----
 * These faults cannot be caused with a real QEMU (it never sends garbage,
 * over-long lines or replies without ids to well-formed commands), so a
 * socketpair plays QEMU with a scripted byte stream. */

#define GREETING "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 1, \"minor\": 2, \"major\": 8}, " \
                 "\"package\": \"fake\"}, \"capabilities\": []}}\r\n"
#define CAPS_OK "{\"return\": {}, \"id\": 1}\r\n"

struct fake {
        int server;
        struct qmp_client *q;
};

/* Writes 'script' in a child process (so it may exceed the socket buffer),
 * then keeps the server end open until the client closes, or closes it
 * right away if 'hangup'. */
static void fake_write(int server, int client, const char *script, size_t len, bool hangup) {
        pid_t pid = fork();
        if (pid < 0)
                abort();
        if (pid == 0) {
                /* Or the server end would never see the client hang up. */
                close(client);
                size_t off = 0;
                while (off < len) {
                        ssize_t n = write(server, script + off, len - off);
                        if (n <= 0)
                                _exit(1);
                        off += (size_t) n;
                }
                if (!hangup) {
                        char b[4096];
                        while (read(server, b, sizeof(b)) > 0)
                                ;
                }
                _exit(0);
        }
        /* The parent keeps no copy that would hold the line open: the child
         * owns the server end from here. */
        close(server);
}

/* Connects a client to a fake server that sends 'script'. */
static int fake_connect(const char *script, size_t len, bool hangup, size_t max_line, int timeout_ms,
                        struct qmp_client **ret, struct vh_error *err) {
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                abort();
        fake_write(sv[1], sv[0], script, len, hangup);
        return qmp_connect_fd(sv[0], "fake", timeout_ms, max_line, ret, err);
}

/* Waits for the fake servers, which end when their client has closed. */
static void reap_children(void) {
        while (waitpid(-1, NULL, 0) > 0)
                ;
}

TEST(qmp_fake_bad_greetings) {
        static const struct {
                const char *script;
                int code;
                const char *msg;
        } cases[] = {
                { "hello\n", -EPROTO,
                  "No QMP greeting from fake: QMP message from fake is not valid JSON: "
                  "line 1, column 1: expected a value, got 'h'" },
                { "{\"foo\": 1}\n", -EPROTO,
                  "fake sent no QMP greeting (no \"QMP\" object but {\"foo\":1}): is it a QMP socket?" },
                { "{\"QMP\": []}\n", -EPROTO,
                  "fake sent no QMP greeting (no \"QMP\" object but {\"QMP\":[]}): is it a QMP socket?" },
                { "[1]\n", -EPROTO, "No QMP greeting from fake: QMP message from fake is not a JSON object" },
                { "{\"QMP\": {\"capabilities\": []}}\n", -EPROTO, "QMP greeting from fake has no valid QEMU version" },
                { "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 0, \"major\": \"8\"}}}}\n", -EPROTO,
                  "QMP greeting from fake has no valid QEMU version" },
                { "{\"QMP\": {\"ver", -ECONNRESET,
                  "No QMP greeting from fake: QEMU closed the QMP connection fake in the middle of a message" },
                { "", -ECONNRESET, "No QMP greeting from fake: QEMU closed the QMP connection fake" },
                { GREETING "{\"id\": 1, \"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}\n", -EREMOTEIO,
                  "QMP command 'qmp_capabilities' failed: GenericError: no" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct qmp_client *q = NULL;
                struct vh_error err = {};
                /* Hang up at once unless the client gets as far as sending
                 * qmp_capabilities (the last case), which would then race
                 * the hang-up into -EPIPE. */
                bool hangup = i + 1 < ELEMENTSOF(cases);
                int r = fake_connect(cases[i].script, strlen(cases[i].script), hangup, 0, 2000, &q, &err);
                if (r != cases[i].code || !streq(err.msg, cases[i].msg))
                        test_fail(__FILE__, __LINE__, "case %zu: %d \"%s\", want %d \"%s\"", i, r, err.msg,
                                  cases[i].code, cases[i].msg);
                CHECK(q == NULL);
                qmp_free(q);
        }
        reap_children();
}

TEST(qmp_fake_event_before_greeting) {
        /* Seen with a real QEMU 7.2, but only when the client connects in
         * the instant QEMU starts: a RESUME event ahead of the greeting. */
        const char *script = "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"RESUME\"}\r\n"
                             GREETING CAPS_OK;
        struct qmp_client *q = NULL;
        struct vh_error err = {};
        CHECK_EQ_INT(fake_connect(script, strlen(script), false, 0, 2000, &q, &err), 0);
        if (!q)
                return;
        CHECK_EQ_INT(qmp_get_version(q)->major, 8);
        CHECK_EQ_INT(qmp_events_queued(q), 1);
        struct qmp_event *e = NULL;
        CHECK_EQ_INT(qmp_next_event(q, 0, &e, &err), 0);
        CHECK_STREQ(e ? e->name : NULL, "RESUME");
        CHECK_EQ_INT(e ? e->seconds : 0, 1);
        qmp_event_free(e);
        qmp_free(q);
        reap_children();
}

TEST(qmp_fake_line_limit) {
        /* 4 KiB lines for the test; QEMU's real limit is 16 MiB. */
        char script[16384];
        struct qmp_client *q = NULL;
        struct vh_error err = {};

        /* An endless greeting. */
        memset(script, 'x', sizeof(script));
        CHECK_EQ_INT(fake_connect(script, sizeof(script), false, 4096, 2000, &q, &err), -EMSGSIZE);
        CHECK_STREQ(err.msg, "No QMP greeting from fake: QMP message from fake is longer than 4096 bytes; "
                             "connection dropped");

        /* A reply of exactly 4096 bytes with its "\r\n" passes; one more
         * byte does not. */
        for (int extra = 0; extra < 2; extra++) {
                const char *prefix = "{\"return\": \"", *suffix = "\", \"id\": 2}\r\n";
                size_t n = (size_t) snprintf(script, sizeof(script), GREETING CAPS_OK "%s", prefix);
                size_t pad = 4096 - strlen(prefix) - strlen(suffix) + (size_t) extra;
                memset(script + n, 'a', pad);
                n += pad;
                n += (size_t) snprintf(script + n, sizeof(script) - n, "%s", suffix);
                q = NULL;
                CHECK_EQ_INT(fake_connect(script, n, false, 4096, 2000, &q, &err), 0);
                if (!q)
                        continue;
                struct json_value *v = NULL;
                int r = qmp_execute(q, "query-thing", NULL, &v, &err);
                if (extra == 0) {
                        CHECK_EQ_INT(r, 0);
                        CHECK_EQ_INT(v ? v->string.len : 0, pad);
                } else {
                        CHECK_EQ_INT(r, -EMSGSIZE);
                        CHECK_STREQ(err.msg, "QMP message from fake is longer than 4096 bytes; connection dropped");
                        /* Sticky. */
                        CHECK_EQ_INT(qmp_execute(q, "query-thing", NULL, NULL, &err), -EMSGSIZE);
                }
                json_value_free(v);
                q = qmp_free(q);
        }
        reap_children();
}

TEST(qmp_fake_replies_and_ids) {
        struct qmp_client *q = NULL;
        struct vh_error err = {};
        const char *script =
                GREETING CAPS_OK
                /* id 2: a reply without id is refused, the client stays usable */
                "{\"return\": {\"status\": \"running\"}}\r\n"
                /* id 3: an error without id belongs to the command in flight */
                "{\"error\": {\"class\": \"GenericError\", \"desc\": \"JSON parse error, invalid keyword\"}}\r\n"
                /* id 4: a stale reply (id 99) is skipped, blank lines too, an
                 * event queued, then the real reply */
                "{\"return\": \"stale\", \"id\": 99}\r\n"
                "\r\n   \n"
                "{\"event\": \"STOP\", \"timestamp\": {\"seconds\": 5, \"microseconds\": 6}}\n"
                "{\"return\": {\"ok\": true}, \"id\": 4}\n"
                /* id 5: neither return nor error */
                "{\"id\": 5}\n"
                /* id 6: human command answering with a number */
                "{\"return\": 42, \"id\": 6}\n"
                /* id 7: ids are echoed as sent; a string id is not ours */
                "{\"return\": 1, \"id\": \"7\"}\n"
                "{\"return\": 2, \"id\": 7}\n"
                /* id 8: DeviceNotFound */
                "{\"error\": {\"class\": \"DeviceNotFound\", \"desc\": \"Device 'x' not found\"}, \"id\": 8}\n"
                /* id 9: an event without a name breaks the stream */
                "{\"event\": 5}\n";
        CHECK_EQ_INT(fake_connect(script, strlen(script), false, 0, 2000, &q, &err), 0);
        if (!q)
                return;
        CHECK_EQ_INT(qmp_get_version(q)->major, 8);
        CHECK_EQ_INT(qmp_get_version(q)->micro, 1);
        CHECK_STREQ(qmp_get_version(q)->package, "fake");

        CHECK_EQ_INT(qmp_execute(q, "query-status", NULL, NULL, &err), -EPROTO);
        CHECK_STREQ(err.msg, "QMP reply from fake to command 'query-status' has no id");
        CHECK_EQ_INT(qmp_execute(q, "query-status", NULL, NULL, &err), -EREMOTEIO);
        CHECK_STREQ(err.msg, "QMP command 'query-status' failed: GenericError: JSON parse error, invalid keyword "
                             "(reply without id)");
        struct json_value *v = NULL;
        CHECK_EQ_INT(qmp_execute(q, "query-status", NULL, &v, &err), 0);
        bool ok = false;
        CHECK_EQ_INT(json_get_bool(json_object_get(v, "ok"), &ok), 0);
        CHECK(ok);
        v = json_value_free(v);
        CHECK_EQ_INT(qmp_events_queued(q), 1);
        CHECK_EQ_INT(qmp_execute(q, "query-status", NULL, NULL, &err), -EPROTO);
        CHECK_STREQ(err.msg, "QMP reply from fake to command 'query-status' has neither 'return' nor 'error'");
        CHECK_EQ_INT(qmp_human_command(q, "info status", NULL, &err), -EPROTO);
        CHECK_STREQ(err.msg, "human-monitor-command 'info status' returned a number, not a string");
        int64_t i = 0;
        CHECK_EQ_INT(qmp_execute(q, "query-status", NULL, &v, &err), 0);
        CHECK_EQ_INT(json_get_int(v, &i), 0);
        CHECK_EQ_INT(i, 2);
        v = json_value_free(v);
        CHECK_EQ_INT(qmp_execute(q, "device_del", "{\"id\": \"x\"}", NULL, &err), -ENODEV);
        CHECK_STREQ(qmp_last_error_class(q), "DeviceNotFound");

        CHECK_EQ_INT(qmp_execute(q, "query-status", NULL, NULL, &err), -EPROTO);
        CHECK_STREQ(err.msg, "QMP event from fake has no event name");
        /* The event queued before the break is still there. */
        struct qmp_event *e = NULL;
        CHECK_EQ_INT(qmp_next_event(q, 0, &e, &err), 0);
        CHECK(e && streq(e->name, "STOP") && e->seconds == 5 && e->microseconds == 6);
        e = qmp_event_free(e);
        CHECK_EQ_INT(qmp_next_event(q, 0, &e, &err), -EPROTO);
        qmp_free(q);
        reap_children();
}

TEST(qmp_fake_commands_sent) {
        /* What goes on the wire: one line per command, ids counting up,
         * arguments spliced verbatim. */
        int sv[2];
        CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        const char *script = GREETING CAPS_OK "{\"return\": {}, \"id\": 2}\n"
                                              "{\"return\": \"ok\\r\\n\", \"id\": 3}\n";
        CHECK_EQ_INT(write(sv[1], script, strlen(script)), (ssize_t) strlen(script));
        struct qmp_client *q = NULL;
        struct vh_error err = {};
        CHECK_EQ_INT(qmp_connect_fd(sv[0], "fake", 2000, 0, &q, &err), 0);
        CHECK_EQ_INT(qmp_execute(q, "migrate-set-parameters", "{\"downtime-limit\": 300,\n \"x\": 1.25}", NULL, &err),
                     0);
        char *text = NULL;
        CHECK_EQ_INT(qmp_human_command(q, "info \"a\\b\"", &text, &err), 0);
        CHECK_STREQ(text, "ok\r\n");
        free(text);
        char got[1024] = {};
        ssize_t n = read(sv[1], got, sizeof(got) - 1);
        CHECK(n > 0);
        CHECK_STREQ(got, "{\"execute\":\"qmp_capabilities\",\"id\":1}\n"
                         "{\"execute\":\"migrate-set-parameters\",\"arguments\":{\"downtime-limit\": 300,\n \"x\": 1.25},"
                         "\"id\":2}\n"
                         "{\"execute\":\"human-monitor-command\",\"arguments\":{\"command-line\":\"info \\\"a\\\\b\\\"\"},"
                         "\"id\":3}\n");
        qmp_free(q);
        close(sv[1]);
}

TEST(qmp_fake_timeout_and_hangup) {
        struct qmp_client *q = NULL;
        struct vh_error err = {};
        /* No reply at all: a timeout, not a hang; the client stays usable. */
        CHECK_EQ_INT(fake_connect(GREETING CAPS_OK, strlen(GREETING CAPS_OK), false, 0, 2000, &q, &err), 0);
        if (q) {
                qmp_set_timeout(q, 150);
                long long t0 = clock_ms();
                CHECK_EQ_INT(qmp_execute(q, "query-status", NULL, NULL, &err), -ETIMEDOUT);
                CHECK(clock_ms() - t0 >= 140);
                CHECK_STREQ(err.msg, "QMP command 'query-status' got no reply from fake within 150 ms");
                CHECK_EQ_INT(qmp_wait_event(q, "STOP", 100, NULL, &err), -ETIMEDOUT);
                CHECK_STREQ(err.msg, "No QMP event STOP from fake within 100 ms");
                /* Closed by the caller: -ENOTCONN from then on. */
                qmp_close(q);
                qmp_close(q);
                CHECK_EQ_INT(qmp_execute(q, "query-status", NULL, NULL, &err), -ENOTCONN);
                CHECK_STREQ(err.msg, "QMP connection to fake is closed");
                q = qmp_free(q);
        }

        /* Hang-up in the middle of a reply. The fake shuts down only its
         * sending side so that the command is still written and the
         * outcome does not depend on timing. */
        int sv[2];
        CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        const char *script = GREETING CAPS_OK "{\"return\": {\"sta";
        CHECK_EQ_INT(write(sv[1], script, strlen(script)), (ssize_t) strlen(script));
        shutdown(sv[1], SHUT_WR);
        CHECK_EQ_INT(qmp_connect_fd(sv[0], "fake", 2000, 0, &q, &err), 0);
        if (q) {
                CHECK_EQ_INT(qmp_execute(q, "query-status", NULL, NULL, &err), -ECONNRESET);
                CHECK_STREQ(err.msg, "QEMU closed the QMP connection fake in the middle of a message");
                q = qmp_free(q);
        }
        close(sv[1]);

        /* Gone before the command could be written: -EPIPE, no SIGPIPE
         * killing the test, and the events it sent before leaving, whether
         * already read or still in the socket, can still be had. */
        CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        script = GREETING CAPS_OK "{\"event\": \"POWERDOWN\"}\n";
        CHECK_EQ_INT(write(sv[1], script, strlen(script)), (ssize_t) strlen(script));
        CHECK_EQ_INT(qmp_connect_fd(sv[0], "fake", 2000, 0, &q, &err), 0);
        script = "{\"event\": \"SHUTDOWN\", \"data\": {\"guest\": true}}\n{\"event\": \"trunc";
        CHECK_EQ_INT(write(sv[1], script, strlen(script)), (ssize_t) strlen(script));
        close(sv[1]);
        if (q) {
                int r = qmp_execute(q, "query-status", NULL, NULL, &err);
                CHECK(r == -EPIPE || r == -ECONNRESET);
                CHECK_STREQ(err.msg, "QEMU closed the QMP connection fake");
                struct qmp_event *e = NULL;
                CHECK_EQ_INT(qmp_wait_event(q, "SHUTDOWN", 0, &e, &err), 0);
                bool guest = false;
                CHECK_EQ_INT(json_get_bool(json_object_get(e ? e->data : NULL, "guest"), &guest), 0);
                CHECK(guest);
                e = qmp_event_free(e);
                CHECK_EQ_INT(qmp_next_event(q, 0, &e, &err), 0);
                CHECK_STREQ(e ? e->name : NULL, "POWERDOWN");
                e = qmp_event_free(e);
                CHECK_EQ_INT(qmp_next_event(q, 0, &e, &err), r);
                q = qmp_free(q);
        }
        CHECK(qmp_free(NULL) == NULL);
        reap_children();
}

TEST(qmp_fake_event_queue_is_bounded) {
        /* More events than the queue holds arrive before a reply: the
         * oldest are dropped and counted, the newest kept in order. */
        size_t total = QMP_MAX_QUEUED_EVENTS + 6, cap = total * 64 + 1024, n = 0;
        char *script = malloc(cap);
        if (!script)
                abort();
        n += (size_t) snprintf(script + n, cap - n, GREETING CAPS_OK);
        for (size_t i = 0; i < total; i++)
                n += (size_t) snprintf(script + n, cap - n, "{\"event\": \"E%zu\", \"data\": {\"i\": %zu}}\n", i, i);
        n += (size_t) snprintf(script + n, cap - n, "{\"return\": {}, \"id\": 2}\n");
        struct qmp_client *q = NULL;
        struct vh_error err = {};
        CHECK_EQ_INT(fake_connect(script, n, false, 0, 5000, &q, &err), 0);
        free(script);
        if (!q)
                return;
        CHECK_EQ_INT(qmp_execute(q, "query-status", NULL, NULL, &err), 0);
        CHECK_EQ_INT(qmp_events_queued(q), QMP_MAX_QUEUED_EVENTS);
        CHECK_EQ_INT(qmp_events_dropped(q), 6);
        struct qmp_event *e = NULL;
        CHECK_EQ_INT(qmp_next_event(q, 0, &e, &err), 0);
        CHECK_STREQ(e ? e->name : NULL, "E6");
        int64_t i = -1;
        CHECK_EQ_INT(json_get_int(json_object_get(e ? e->data : NULL, "i"), &i), 0);
        CHECK_EQ_INT(i, 6);
        CHECK_EQ_INT(e ? e->seconds : 0, -1); /* no timestamp */
        e = qmp_event_free(e);
        CHECK_EQ_INT(qmp_wait_event(q, "E1029", 0, &e, &err), 0);
        e = qmp_event_free(e);
        CHECK_EQ_INT(qmp_wait_event(q, "E1029", 0, NULL, &err), -ETIMEDOUT);
        CHECK_EQ_INT(qmp_events_queued(q), QMP_MAX_QUEUED_EVENTS - 2);
        qmp_free(q);
        reap_children();
}
