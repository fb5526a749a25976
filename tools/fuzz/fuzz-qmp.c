/* tools/fuzz/fuzz-qmp.c: libFuzzer target for the QMP client's framing
 * (src/qmp/qmp.c): the greeting, line splitting (CR LF, blank lines, lines
 * over the limit, a last line without its newline), replies told apart by
 * their id, and the event queue. The input plays QEMU: after a small
 * header it is written to one end of a socketpair, whose write side is
 * then shut, and the client reads the other end through qmp_connect_fd()
 * as it would a QMP socket. Because the peer's end of file always follows
 * the input, no call ever waits for its timeout.
 *
 * Input: byte 0 picks the line limit, bytes 1..N_STEPS the calls made after
 * the connect (a command, an event read, a wait for a named event), the
 * rest is what "QEMU" sends. Seeds in tools/fuzz/corpus/qmp.
 *
 * Besides memory safety it checks the client's promises: a failed connect
 * gives no client and a message; events have names and leave the queue
 * unlinked; the queue stays within QMP_MAX_QUEUED_EVENTS; a broken
 * connection stays broken with the same error. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "qmp/qmp.h"

#define N_STEPS 6
#define HEADER (1 + N_STEPS)
/* More than the client reads in one chunk (64 KiB), so that a line split
 * across reads is covered, and less than a socketpair buffers. */
#define MAX_STREAM (96u * 1024)
/* Never reached: end of file ends every wait first. */
#define TIMEOUT_MS 10000

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_event(const struct qmp_client *q, struct qmp_event *e) {
        if (!e || !e->name || e->next)
                abort();
        if (qmp_events_queued(q) > QMP_MAX_QUEUED_EVENTS)
                abort();
        qmp_event_free(e);
}

/* Errors after which the connection is marked broken (qmp.h: "sticky"). */
static bool is_sticky(int r) {
        return r == -ECONNRESET || r == -EMSGSIZE || r == -EPIPE;
}

static void check_error(int r, const struct vh_error *err) {
        if (r >= 0)
                return;
        if (err->code != r || (r != -ENOMEM && err->msg[0] == '\0'))
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        static const size_t max_lines[] = { 0, 48, 300, 4096 };
        if (size < HEADER)
                return 0;
        size_t max_line = max_lines[data[0] % ELEMENTSOF(max_lines)];
        const uint8_t *steps = data + 1;
        const uint8_t *stream = data + HEADER;
        size_t len = MIN(size - HEADER, (size_t) MAX_STREAM);

        int sv[2];
        /* A failure here is most likely a leaked descriptor: report it
         * rather than stop testing quietly. */
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                abort();
        int sndbuf = 4 * MAX_STREAM;
        (void) setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
        for (size_t off = 0; off < len;) {
                ssize_t n = write(sv[1], stream + off, len - off);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        abort();
                off += (size_t) n;
        }
        /* End of file after the input; the client's own writes still land
         * in sv[1]'s receive buffer, unread. */
        if (shutdown(sv[1], SHUT_WR) < 0)
                abort();

        struct qmp_client *q = NULL;
        struct vh_error err = {};
        int r = qmp_connect_fd(sv[0], "fuzz", TIMEOUT_MS, max_line, &q, &err);
        if (r < 0) {
                if (q)
                        abort();
                check_error(r, &err);
                close(sv[1]);
                return 0;
        }
        if (!q)
                abort();
        const struct qmp_version *v = qmp_get_version(q);
        if (!v->package || v->major < 0 || v->major > 1000 || v->minor < 0 || v->minor > 1000 || v->micro < 0 ||
            v->micro > 1000)
                abort();

        int sticky = 0;
        char sticky_msg[VH_ERROR_MAX] = "";
        for (size_t i = 0; i < N_STEPS; i++) {
                struct qmp_event *e = NULL;
                struct json_value *ret = NULL;
                err = (struct vh_error) {};
                switch (steps[i] % 5) {
                case 0:
                        r = qmp_execute(q, "query-status", NULL, &ret, &err);
                        if (r == 0 && !ret)
                                abort();
                        json_value_free(ret);
                        break;
                case 1:
                        /* An error reply keeps its class; a success has none. (A
                         * call on a broken connection leaves the last one.) */
                        r = qmp_execute(q, "device_del", "{\"id\":\"n\"}", NULL, &err);
                        if ((r == -EOPNOTSUPP || r == -ENODEV || r == -EREMOTEIO) && !qmp_last_error_class(q))
                                abort();
                        if (r == 0 && qmp_last_error_class(q))
                                abort();
                        break;
                case 2:
                        r = qmp_next_event(q, 0, &e, &err);
                        if (r == 0)
                                check_event(q, e);
                        break;
                case 3:
                        r = qmp_wait_event(q, "STOP", 0, &e, &err);
                        if (r == 0 && strcmp(e->name, "STOP") != 0)
                                abort();
                        if (r == 0)
                                check_event(q, e);
                        break;
                default:
                        r = qmp_human_command(q, "info status", NULL, &err);
                        break;
                }
                check_error(r, &err);
                if (qmp_events_queued(q) > QMP_MAX_QUEUED_EVENTS)
                        abort();
                /* Once broken, every command fails the same way. */
                if (sticky && steps[i] % 5 != 2 && steps[i] % 5 != 3 && (r != sticky || strcmp(err.msg, sticky_msg)))
                        abort();
                if (!sticky && is_sticky(r)) {
                        sticky = r;
                        snprintf(sticky_msg, sizeof(sticky_msg), "%s", err.msg);
                }
        }
        if (sticky) {
                err = (struct vh_error) {};
                if (qmp_execute(q, "query-status", NULL, NULL, &err) != sticky || strcmp(err.msg, sticky_msg))
                        abort();
        }

        /* What is queued comes out in order, then the connection's end. */
        for (size_t n = 0; n <= QMP_MAX_QUEUED_EVENTS + 1; n++) {
                struct qmp_event *e = NULL;
                err = (struct vh_error) {};
                r = qmp_next_event(q, 0, &e, &err);
                if (r < 0) {
                        check_error(r, &err);
                        break;
                }
                check_event(q, e);
        }
        if (qmp_events_queued(q) != 0)
                abort();
        qmp_free(q);
        close(sv[1]);
        return 0;
}
