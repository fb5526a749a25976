/* tests/unit/test-qmp-watch.c: the non-blocking QMP client (qmp_connect_async
 * and friends) that a long-lived watcher uses: against a real QEMU with two
 * monitor sockets (the watcher on the second receives the events of
 * commands the CLI sends on the first, which still answers), and against a
 * fake server on a socketpair for the protocol edges (commands queued
 * before the greeting, a refused negotiation, events before end of file). */
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
#include "base/poll.h"
#include "base/process.h"
#include "qmp/qmp.h"
#include "qemu-fixture.h"
#include "test.h"

#define WAIT_MS (20 * 1000) /* bound of every wait below; QEMU answers in milliseconds */

/* Runs the event loop of one client until 'done' says so or the deadline.
 * Returns 0, -ETIMEDOUT, or qmp_process()'s error. */
static int watch_until(struct qmp_client *q, bool (*done)(struct qmp_client *, void *), void *userdata,
                       struct vh_error *err) {
        uint64_t deadline = vh_deadline_after(WAIT_MS);
        for (;;) {
                if (done(q, userdata))
                        return 0;
                int fd = qmp_get_fd(q);
                if (fd < 0)
                        return qmp_process(q, err);
                int k = vh_poll_until(fd, qmp_poll_events(q), deadline);
                if (k < 0)
                        return k;
                if (k == 0)
                        return -ETIMEDOUT;
                int r = qmp_process(q, err);
                if (r < 0)
                        return r;
        }
}

static bool is_ready(struct qmp_client *q, void *userdata) {
        (void) userdata;
        return qmp_is_ready(q);
}

/* Waits for the event 'name' (other events are dropped). */
struct want_event {
        const char *name;
        bool seen;
};

static bool event_seen(struct qmp_client *q, void *userdata) {
        struct want_event *w = userdata;
        struct qmp_event *e;
        while (!w->seen && qmp_pop_event(q, &e) > 0) {
                w->seen = streq(e->name, w->name);
                qmp_event_free(e);
        }
        return w->seen;
}

static bool reply_queued(struct qmp_client *q, void *userdata) {
        struct qmp_reply **ret = userdata;
        return *ret || qmp_pop_reply(q, ret) > 0;
}

/* ---- a real QEMU with two QMP sockets ---- */

/* QEMU creates a socket file a moment before it listens on it. */
static int connect_async_retry(const char *path, struct qmp_client **ret, struct vh_error *err) {
        uint64_t deadline = vh_deadline_after(WAIT_MS);
        for (;;) {
                int r = qmp_connect_async(path, ret, err);
                if ((r != -ECONNREFUSED && r != -ENOENT && r != -EAGAIN) || vh_clock_ms() >= deadline)
                        return r;
                usleep(10 * 1000);
        }
}

static const char *status_of(struct json_value *v) {
        const char *s = NULL;
        if (json_get_string(json_object_get(v, "status"), &s) < 0)
                return "(none)";
        return s;
}

TEST(qmp_watch_real_qemu) {
        struct test_qemu qm;
        if (!test_qemu_available() || !test_qemu_start(&qm, 2))
                return;
        struct vh_error err = {};
        struct qmp_client *watch = NULL, *cli = NULL;

        /* The watcher connects first and stays; a command queued before
         * the greeting goes out behind qmp_capabilities. */
        int r = connect_async_retry(qm.sock[1], &watch, &err);
        CHECK_EQ_INT(r, 0);
        if (r < 0)
                goto out;
        uint64_t id = 0;
        CHECK_EQ_INT(qmp_send(watch, "query-status", NULL, &id, &err), 0);
        CHECK(!qmp_is_ready(watch));
        CHECK_EQ_INT(watch_until(watch, is_ready, NULL, &err), 0);
        CHECK_EQ_INT(qmp_get_version(watch)->major >= 6, 1);
        struct qmp_reply *reply = NULL;
        CHECK_EQ_INT(watch_until(watch, reply_queued, &reply, &err), 0);
        CHECK(reply && reply->id == id && reply->error == 0);
        if (reply)
                CHECK_STREQ(status_of(reply->value), "prelaunch");
        reply = qmp_reply_free(reply);
        /* The blocking calls refuse a non-blocking client. */
        CHECK_EQ_INT(qmp_execute(watch, "query-status", NULL, NULL, &err), -EBUSY);

        /* The CLI's socket still answers while the watcher holds its own. */
        r = test_qmp_connect_retry(qm.sock[0], &cli, &err);
        CHECK_EQ_INT(r, 0);
        if (r < 0)
                goto out;
        struct json_value *v = NULL;
        CHECK_EQ_INT(qmp_execute(cli, "query-status", NULL, &v, &err), 0);
        CHECK_STREQ(status_of(v), "prelaunch");
        v = json_value_free(v);

        /* Commands on the CLI's socket, events on the watcher's. */
        CHECK_EQ_INT(qmp_execute(cli, "cont", NULL, NULL, &err), 0);
        struct want_event resume = { .name = "RESUME" };
        CHECK_EQ_INT(watch_until(watch, event_seen, &resume, &err), 0);
        CHECK(resume.seen);
        CHECK_EQ_INT(qmp_execute(cli, "stop", NULL, NULL, &err), 0);
        struct want_event stop = { .name = "STOP" };
        CHECK_EQ_INT(watch_until(watch, event_seen, &stop, &err), 0);
        CHECK(stop.seen);
        CHECK_EQ_INT(qmp_execute(cli, "query-status", NULL, &v, &err), 0);
        CHECK_STREQ(status_of(v), "paused");
        v = json_value_free(v);

        /* An error reply of an async command carries its class. */
        CHECK_EQ_INT(qmp_send(watch, "no-such-command", NULL, &id, &err), 0);
        CHECK_EQ_INT(watch_until(watch, reply_queued, &reply, &err), 0);
        CHECK(reply && reply->id == id && reply->error == -EOPNOTSUPP);
        if (reply)
                CHECK_STREQ(reply->error_class, "CommandNotFound");
        reply = qmp_reply_free(reply);

        /* QEMU quits: its SHUTDOWN still reaches the watcher, then the
         * connection is gone for good. */
        CHECK_EQ_INT(qmp_execute(cli, "quit", NULL, NULL, &err), 0);
        struct want_event shutdown = { .name = "SHUTDOWN" };
        r = watch_until(watch, event_seen, &shutdown, &err);
        CHECK(shutdown.seen || r == -ECONNRESET);
        uint64_t deadline = vh_deadline_after(WAIT_MS);
        while ((r = qmp_process(watch, &err)) == 0 && vh_clock_ms() < deadline)
                (void) vh_poll_until(qmp_get_fd(watch), POLLIN, deadline);
        CHECK_EQ_INT(r, -ECONNRESET);
        CHECK_EQ_INT(qmp_get_fd(watch), -1);
        CHECK_EQ_INT(qmp_send(watch, "query-status", NULL, NULL, &err), -ECONNRESET);
out:
        qmp_free(watch);
        qmp_free(cli);
        test_qemu_kill(&qm);
}

/* ---- a fake QEMU on a socketpair ---- */

#define GREETING "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, \"capabilities\": []}}\r\n"

static void peer_write(int fd, const char *s) {
        CHECK(write(fd, s, strlen(s)) == (ssize_t) strlen(s));
}

/* Reads what the client sent so far (it is small) into 'buf'. */
static void peer_read(int fd, char *buf, size_t len) {
        ssize_t n = 0;
        if (vh_poll_until(fd, POLLIN, vh_deadline_after(WAIT_MS)) > 0)
                n = read(fd, buf, len - 1);
        buf[n > 0 ? n : 0] = '\0';
}

TEST(qmp_watch_fake_protocol) {
        int sv[2];
        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        struct vh_error err = {};
        struct qmp_client *q = NULL;
        CHECK_EQ_INT(qmp_connect_async_fd(sv[0], "fake", 0, &q, &err), 0);
        if (!q)
                return;
        /* Nothing goes out before the greeting, not even a command. */
        uint64_t id = 0;
        CHECK_EQ_INT(qmp_send(q, "query-status", NULL, &id, &err), 0);
        CHECK_EQ_INT(qmp_poll_events(q), POLLIN);
        CHECK_EQ_INT(vh_poll_until(sv[1], POLLIN, 0), 0);
        CHECK_EQ_INT(qmp_process(q, &err), 0);

        /* An event may come before the greeting; then the greeting: the
         * client answers with qmp_capabilities first, the command after. */
        peer_write(sv[1], "{\"event\": \"RESUME\", \"timestamp\": {\"seconds\": 1, \"microseconds\": 2}}\n" GREETING);
        CHECK_EQ_INT(qmp_process(q, &err), 0);
        char buf[1024];
        peer_read(sv[1], buf, sizeof(buf));
        const char *caps = strstr(buf, "qmp_capabilities"), *cmd = strstr(buf, "query-status");
        CHECK(caps && cmd && caps < cmd);
        CHECK(!qmp_is_ready(q));
        struct qmp_event *e = NULL;
        CHECK_EQ_INT(qmp_pop_event(q, &e), 1);
        CHECK(e && streq(e->name, "RESUME") && e->seconds == 1);
        e = qmp_event_free(e);
        CHECK_EQ_INT(qmp_pop_event(q, &e), 0);

        /* The negotiation's reply, the command's, an event split across
         * two writes. */
        const char *caps_id = caps ? strstr(caps, "\"id\":") : NULL;
        unsigned long long cid = caps_id ? strtoull(caps_id + 5, NULL, 10) : 0;
        CHECK(cid > 0 && cid != id);
        char msg[256];
        snprintf(msg, sizeof(msg), "{\"return\": {}, \"id\": %llu}\n{\"return\": {\"status\": \"running\"}, \"id\": %llu}\n"
                 "{\"event\": \"ST", cid, (unsigned long long) id);
        peer_write(sv[1], msg);
        CHECK_EQ_INT(qmp_process(q, &err), 0);
        CHECK(qmp_is_ready(q));
        CHECK_EQ_INT(qmp_pop_event(q, &e), 0);
        peer_write(sv[1], "OP\"}\n");
        CHECK_EQ_INT(qmp_process(q, &err), 0);
        CHECK_EQ_INT(qmp_pop_event(q, &e), 1);
        CHECK(e && streq(e->name, "STOP"));
        e = qmp_event_free(e);
        struct qmp_reply *reply = NULL;
        CHECK_EQ_INT(qmp_pop_reply(q, &reply), 1);
        CHECK(reply && reply->id == id && reply->error == 0);
        reply = qmp_reply_free(reply);

        /* At most QMP_MAX_PENDING_COMMANDS outstanding. */
        int sent = 0;
        while (qmp_send(q, "query-status", NULL, NULL, &err) == 0 && sent < QMP_MAX_PENDING_COMMANDS + 5)
                sent++;
        CHECK_EQ_INT(sent, QMP_MAX_PENDING_COMMANDS);
        CHECK(strstr(err.msg, "wait for their replies"));

        /* An event right before the end of file is kept; the end is sticky. */
        peer_write(sv[1], "{\"event\": \"SHUTDOWN\"}\n");
        close(sv[1]);
        CHECK_EQ_INT(qmp_process(q, &err), -ECONNRESET);
        CHECK_EQ_INT(qmp_process(q, &err), -ECONNRESET);
        CHECK_EQ_INT(qmp_pop_event(q, &e), 1);
        CHECK(e && streq(e->name, "SHUTDOWN"));
        qmp_event_free(e);
        qmp_free(q);
}

TEST(qmp_watch_fake_refused_negotiation) {
        int sv[2];
        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        struct vh_error err = {};
        struct qmp_client *q = NULL;
        CHECK_EQ_INT(qmp_connect_async_fd(sv[0], "fake", 0, &q, &err), 0);
        if (!q)
                return;
        peer_write(sv[1], GREETING "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}, \"id\": 1}\n");
        CHECK_EQ_INT(qmp_process(q, &err), -EPROTO);
        CHECK(strstr(err.msg, "refused the QMP negotiation"));
        CHECK(!qmp_is_ready(q));
        /* Not a greeting at all. */
        qmp_free(q);
        close(sv[1]);
        CHECK(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0);
        CHECK_EQ_INT(qmp_connect_async_fd(sv[0], "fake", 0, &q, &err), 0);
        peer_write(sv[1], "{\"hello\": 1}\n");
        CHECK_EQ_INT(qmp_process(q, &err), -EPROTO);
        CHECK(strstr(err.msg, "no QMP greeting"));
        qmp_free(q);
        close(sv[1]);
}
