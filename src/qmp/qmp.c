/* qmp/qmp.c: QMP client: line framing with a limit, greeting and
 * capabilities, commands matched to replies by id, an event queue. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/json-writer.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "base/fileio.h"
#include "qmp/qmp.h"

#define READ_CHUNK (64u * 1024)
#define COMMAND_NAME_MAX 128

struct qmp_client {
        int fd;
        char *name; /* the socket path (or caller's name), for messages */
        int timeout_ms;
        size_t max_line;
        struct json_limits limits;
        uint64_t last_id;

        /* Bytes received and not yet consumed are buf[start..len).
         * buf[start..scanned) is known to hold no '\n', so a line arriving
         * in many pieces is scanned once. */
        char *buf;
        size_t start, len, cap, scanned;

        struct qmp_event *head, *tail;
        size_t n_events;
        uint64_t dropped;

        struct qmp_version version;
        char error_class[64];

        /* Sticky failure of the connection: its -errno and message. */
        int broken;
        char broken_msg[VH_ERROR_MAX];

        /* Non-blocking use (qmp_connect_async). Commands wait in
         * out[out_start..out_len) until the greeting came, then go out
         * behind qmp_capabilities, which QEMU thus handles first. */
        bool async;
        enum { ASYNC_GREETING, ASYNC_NEGOTIATING, ASYNC_READY } phase;
        uint64_t caps_id;
        char *out;
        size_t out_start, out_len;
        struct qmp_reply *reply_head, *reply_tail;
        size_t n_replies, n_pending; /* pending: sent, reply not yet popped */
};

static int64_t now_ms(void) {
        return (int64_t) vh_clock_ms();
}

/* -1 for "no deadline". */
static int64_t deadline_after(int timeout_ms) {
        return timeout_ms < 0 ? -1 : now_ms() + timeout_ms;
}

static int remaining_ms(int64_t deadline) {
        if (deadline < 0)
                return -1;
        int64_t left = deadline - now_ms();
        return left <= 0 ? 0 : left > INT32_MAX ? INT32_MAX : (int) left;
}

struct qmp_event *qmp_event_free(struct qmp_event *e) {
        if (!e)
                return NULL;
        free(e->name);
        json_value_free(e->data);
        free(e);
        return NULL;
}

/* Marks the connection as unusable: 'code' and the message are returned by
 * every later call. Closes the socket since nothing more can be read from
 * it in a known state. */
static int set_broken(struct qmp_client *q, struct vh_error *err, int code, const char *fmt, ...) _printf_(4, 5);
static int set_broken(struct qmp_client *q, struct vh_error *err, int code, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(q->broken_msg, sizeof(q->broken_msg), fmt, ap);
        va_end(ap);
        q->broken = code;
        q->fd = safe_close(q->fd);
        return vh_error_set(err, code, "%s", q->broken_msg);
}

static int check_usable(struct qmp_client *q, struct vh_error *err) {
        if (q->broken)
                return vh_error_set(err, q->broken, "%s", q->broken_msg);
        if (q->fd < 0)
                return vh_error_set(err, -ENOTCONN, "QMP connection to %s is closed", q->name);
        return 0;
}

/* Takes the next complete line out of the buffer, or returns 0 with
 * *ret NULL if there is none yet. The line is NUL-terminated in place,
 * without its "\r\n", and stays valid until the next buffer operation. */
static int take_line(struct qmp_client *q, char **ret, size_t *ret_len, size_t *ret_consumed, struct vh_error *err) {
        char *nl = q->len > q->scanned ? memchr(q->buf + q->scanned, '\n', q->len - q->scanned) : NULL;
        if (!nl) {
                q->scanned = q->len;
                if (q->len - q->start >= q->max_line)
                        return set_broken(q, err, -EMSGSIZE,
                                          "QMP message from %s is longer than %zu bytes; connection dropped", q->name,
                                          q->max_line);
                *ret = NULL;
                return 0;
        }
        char *line = q->buf + q->start;
        size_t n = (size_t) (nl - line);
        if (n + 1 > q->max_line)
                return set_broken(q, err, -EMSGSIZE, "QMP message from %s is longer than %zu bytes; connection dropped",
                                  q->name, q->max_line);
        *ret_consumed = n + 1;
        if (n > 0 && line[n - 1] == '\r')
                n--;
        line[n] = '\0';
        *ret = line;
        *ret_len = n;
        return 0;
}

/* Drops the first 'n' unread bytes (a line that has been handled). */
static void consume(struct qmp_client *q, size_t n) {
        q->start += n;
        if (q->start == q->len)
                q->start = q->len = 0;
        q->scanned = q->start;
}

/* Makes room to read into and returns how much may be read (0 when out
 * of memory). Never more than one line's worth is held: take_line()
 * refuses a buffer that is full without a newline. */
static size_t make_room(struct qmp_client *q) {
        if (q->start > 0) {
                memmove(q->buf, q->buf + q->start, q->len - q->start);
                q->len -= q->start;
                q->scanned -= q->start;
                q->start = 0;
        }
        size_t want = MIN((size_t) READ_CHUNK, q->max_line - q->len);
        if (q->len + want + 1 > q->cap) {
                size_t ncap = MIN(MAX(q->cap * 2, q->len + want + 1), q->max_line + 1);
                char *b = realloc(q->buf, ncap);
                if (!b)
                        return 0;
                q->buf = b;
                q->cap = ncap;
        }
        return want;
}

/* Reads more bytes, waiting until 'deadline'. -ETIMEDOUT is not sticky;
 * end of file and I/O errors are. */
static int fill(struct qmp_client *q, int64_t deadline, struct vh_error *err) {
        for (;;) {
                struct pollfd p = { .fd = q->fd, .events = POLLIN };
                int r = poll(&p, 1, remaining_ms(deadline));
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return set_broken(q, err, negative_errno(), "Cannot wait for QMP data from %s: %m", q->name);
                }
                if (r == 0)
                        return vh_error_set(err, -ETIMEDOUT, "No QMP message from %s in time", q->name);

                size_t want = make_room(q);
                if (want == 0)
                        return vh_error_set(err, -ENOMEM, "Out of memory reading from %s", q->name);
                ssize_t n = recv(q->fd, q->buf + q->len, want, 0);
                if (n < 0) {
                        if (errno == EINTR || errno == EAGAIN)
                                continue;
                        int e = negative_errno();
                        return set_broken(q, err, e, "Cannot read from QMP socket %s: %s", q->name, strerror(-e));
                }
                if (n == 0)
                        return set_broken(q, err, -ECONNRESET, "QEMU closed the QMP connection %s%s", q->name,
                                          q->len > q->start ? " in the middle of a message" : "");
                q->len += (size_t) n;
                return 0;
        }
}

/* Takes the next JSON message, an object, out of what was received:
 * returns 1 with it in *ret, 0 when no whole line is there yet, or -errno. */
static int next_message(struct qmp_client *q, struct json_value **ret, struct vh_error *err) {
        for (;;) {
                int r = check_usable(q, err);
                if (r < 0)
                        return r;
                char *line = NULL;
                size_t len = 0, consumed = 0;
                r = take_line(q, &line, &len, &consumed, err);
                if (r < 0)
                        return r;
                if (!line)
                        return 0;
                if (strspn(line, " \t") == len) { /* blank line: nothing to parse */
                        consume(q, consumed);
                        continue;
                }
                struct json_value *v = NULL;
                struct vh_error jerr = {};
                r = json_parse(line, len, &q->limits, &v, &jerr);
                consume(q, consumed);
                if (r == -ENOMEM)
                        return vh_error_set(err, r, "Out of memory parsing a QMP message from %s", q->name);
                if (r < 0)
                        return set_broken(q, err, -EPROTO, "QMP message from %s is not valid JSON: %s", q->name,
                                          jerr.msg);
                if (v->type != JSON_OBJECT) {
                        json_value_free(v);
                        return set_broken(q, err, -EPROTO, "QMP message from %s is not a JSON object", q->name);
                }
                *ret = v;
                return 1;
        }
}

/* Reads the next JSON message, an object, waiting until 'deadline'. */
static int read_message(struct qmp_client *q, int64_t deadline, struct json_value **ret, struct vh_error *err) {
        for (;;) {
                int r = next_message(q, ret, err);
                if (r != 0)
                        return r < 0 ? r : 0;
                r = fill(q, deadline, err);
                if (r < 0)
                        return r;
        }
}

/* Turns an {"event": ...} message into a struct qmp_event. */
static int event_from_message(struct qmp_client *q, struct json_value *msg, struct qmp_event **ret,
                              struct vh_error *err) {
        const char *name;
        if (json_get_string(json_object_get(msg, "event"), &name) < 0)
                return set_broken(q, err, -EPROTO, "QMP event from %s has no event name", q->name);
        struct qmp_event *e = calloc(1, sizeof(*e));
        if (!e || !(e->name = strdup(name))) {
                free(e);
                return vh_error_set(err, -ENOMEM, "Out of memory");
        }
        e->data = json_object_steal(msg, "data");
        struct json_value *ts = json_object_get(msg, "timestamp");
        if (json_get_int(json_object_get(ts, "seconds"), &e->seconds) < 0)
                e->seconds = -1;
        if (json_get_int(json_object_get(ts, "microseconds"), &e->microseconds) < 0)
                e->microseconds = -1;
        *ret = e;
        return 0;
}

static void queue_event(struct qmp_client *q, struct qmp_event *e) {
        if (q->n_events >= QMP_MAX_QUEUED_EVENTS) {
                struct qmp_event *old = q->head;
                q->head = old->next;
                if (!q->head)
                        q->tail = NULL;
                q->n_events--;
                q->dropped++;
                qmp_event_free(old);
        }
        e->next = NULL;
        if (q->tail)
                q->tail->next = e;
        else
                q->head = e;
        q->tail = e;
        q->n_events++;
}

/* Takes the first queued event named 'name' (any if NULL) out of the queue. */
static struct qmp_event *unqueue_event(struct qmp_client *q, const char *name) {
        struct qmp_event *prev = NULL;
        for (struct qmp_event *e = q->head; e; prev = e, e = e->next) {
                if (name && !streq(e->name, name))
                        continue;
                if (prev)
                        prev->next = e->next;
                else
                        q->head = e->next;
                if (q->tail == e)
                        q->tail = prev;
                e->next = NULL;
                q->n_events--;
                return e;
        }
        return NULL;
}

/* When QEMU has gone away, a command cannot be sent, but what it sent
 * before leaving (a SHUTDOWN event, typically) may still be unread in the
 * socket. Queue those events so that a caller's qmp_wait_event() finds
 * them, and drop the rest. */
static void drain_events(struct qmp_client *q) {
        for (;;) {
                char *line = q->buf + q->start;
                char *nl = q->len > q->start ? memchr(line, '\n', q->len - q->start) : NULL;
                if (nl) {
                        size_t n = (size_t) (nl - line);
                        struct json_value *v = NULL;
                        struct qmp_event *e = NULL;
                        if (n + 1 <= q->max_line && json_parse(line, n, &q->limits, &v, NULL) == 0 &&
                            json_object_get(v, "event") && event_from_message(q, v, &e, NULL) == 0)
                                queue_event(q, e);
                        json_value_free(v);
                        consume(q, n + 1);
                        continue;
                }
                if (q->len - q->start >= q->max_line)
                        return;
                size_t want = make_room(q);
                if (want == 0)
                        return;
                ssize_t got = recv(q->fd, q->buf + q->len, want, MSG_DONTWAIT);
                if (got <= 0)
                        return;
                q->len += (size_t) got;
        }
}

/* Sends 'data'; 'pass_fd' (>= 0) rides along with its first byte as
 * SCM_RIGHTS, which is how QEMU takes a file descriptor for add-fd and
 * getfd: with the command that uses it. */
static int send_all(struct qmp_client *q, const char *data, size_t len, int pass_fd, int64_t deadline,
                    struct vh_error *err) {
        while (len > 0) {
                /* MSG_NOSIGNAL: a dead QEMU must give -EPIPE, not kill us. */
                ssize_t n;
                if (pass_fd >= 0) {
                        char control[CMSG_SPACE(sizeof(int))] = {};
                        struct iovec iov = { .iov_base = (void *) data, .iov_len = len };
                        struct msghdr mh = {
                                .msg_iov = &iov,
                                .msg_iovlen = 1,
                                .msg_control = control,
                                .msg_controllen = sizeof(control),
                        };
                        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                        c->cmsg_level = SOL_SOCKET;
                        c->cmsg_type = SCM_RIGHTS;
                        c->cmsg_len = CMSG_LEN(sizeof(int));
                        memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
                        n = sendmsg(q->fd, &mh, MSG_NOSIGNAL);
                        if (n > 0)
                                pass_fd = -1;
                } else
                        n = send(q->fd, data, len, MSG_NOSIGNAL);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN) {
                                struct pollfd p = { .fd = q->fd, .events = POLLOUT };
                                int r = poll(&p, 1, remaining_ms(deadline));
                                if (r == 0)
                                        return set_broken(q, err, -ETIMEDOUT,
                                                          "QEMU did not take a QMP command on %s in time", q->name);
                                continue;
                        }
                        int e = negative_errno();
                        if (e == -EPIPE || e == -ECONNRESET) {
                                drain_events(q);
                                return set_broken(q, err, e, "QEMU closed the QMP connection %s", q->name);
                        }
                        return set_broken(q, err, e, "Cannot write to QMP socket %s: %s", q->name, strerror(-e));
                }
                data += n;
                len -= (size_t) n;
        }
        return 0;
}

static bool command_name_is_valid(const char *s) {
        size_t n = strlen(s);
        if (n == 0 || n > COMMAND_NAME_MAX)
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = s[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                      c == '_' || c == '.'))
                        return false;
        }
        return true;
}

/* Maps a QMP error class to the errno the caller gets. */
static int errno_for_class(const char *class) {
        if (streq(class, "CommandNotFound"))
                return -EOPNOTSUPP;
        if (streq(class, "DeviceNotFound"))
                return -ENODEV;
        return -EREMOTEIO;
}

static int reply_error(struct qmp_client *q, const char *command, const struct json_value *error, bool had_id,
                       struct vh_error *err) {
        const char *class = "GenericError", *desc = "(no description)";
        (void) json_get_string(json_object_get(error, "class"), &class);
        (void) json_get_string(json_object_get(error, "desc"), &desc);
        snprintf(q->error_class, sizeof(q->error_class), "%s", class);
        return vh_error_set(err, errno_for_class(class), "QMP command '%s' failed: %s: %s%s", command, class, desc,
                            had_id ? "" : " (reply without id)");
}

int qmp_execute(struct qmp_client *q, const char *command, const char *args_json, struct json_value **ret_value,
                struct vh_error *err) {
        return qmp_execute_fd(q, command, args_json, -1, ret_value, err);
}

/* The text of one command with a new id: checks the name and that the
 * arguments are one JSON object. */
static int command_format(struct qmp_client *q, const char *command, const char *args_json, uint64_t *ret_id,
                          char **ret_msg, struct vh_error *err) {
        int r;
        if (!command || !command_name_is_valid(command))
                return vh_error_set(err, -EINVAL, "Invalid QMP command name '%s'", command ? command : "(null)");
        if (args_json) {
                /* Checked to be one object so that the text spliced below
                 * cannot close ours and start another command. */
                struct json_value *args = NULL;
                struct vh_error jerr = {};
                r = json_parse(args_json, strlen(args_json), &q->limits, &args, &jerr);
                if (r < 0)
                        return vh_error_set(err, r, "Arguments of QMP command '%s' are not valid JSON: %s", command,
                                            jerr.msg);
                bool is_object = args->type == JSON_OBJECT;
                json_value_free(args);
                if (!is_object)
                        return vh_error_set(err, -EINVAL, "Arguments of QMP command '%s' must be a JSON object",
                                            command);
        }

        uint64_t id = ++q->last_id;
        char *msg = args_json
                ? strdup_printf("{\"execute\":\"%s\",\"arguments\":%s,\"id\":%" PRIu64 "}\n", command, args_json, id)
                : strdup_printf("{\"execute\":\"%s\",\"id\":%" PRIu64 "}\n", command, id);
        if (!msg)
                return vh_error_set(err, -ENOMEM, "Out of memory");
        *ret_id = id;
        *ret_msg = msg;
        return 0;
}

int qmp_execute_fd(struct qmp_client *q, const char *command, const char *args_json, int pass_fd,
                   struct json_value **ret_value, struct vh_error *err) {
        int r = check_usable(q, err);
        if (r < 0)
                return r;
        if (q->async)
                return vh_error_set(err, -EBUSY, "QMP connection to %s is non-blocking: use qmp_send()", q->name);
        uint64_t id;
        _cleanup_free_ char *msg = NULL;
        r = command_format(q, command, args_json, &id, &msg, err);
        if (r < 0)
                return r;

        q->error_class[0] = '\0';
        int64_t deadline = deadline_after(q->timeout_ms);
        r = send_all(q, msg, strlen(msg), pass_fd, deadline, err);
        if (r < 0)
                return r;

        for (;;) {
                _cleanup_(json_value_freep) struct json_value *reply = NULL;
                r = read_message(q, deadline, &reply, err);
                if (r == -ETIMEDOUT)
                        return vh_error_set(err, r, "QMP command '%s' got no reply from %s within %d ms", command,
                                            q->name, q->timeout_ms);
                if (r < 0)
                        return r;

                if (json_object_get(reply, "event")) {
                        struct qmp_event *e;
                        r = event_from_message(q, reply, &e, err);
                        if (r < 0)
                                return r;
                        queue_event(q, e);
                        continue;
                }

                struct json_value *idv = json_object_get(reply, "id"), *error = json_object_get(reply, "error");
                if (!idv) {
                        /* QEMU answers without an id only when it could not
                         * read the command at all; with one command in
                         * flight, that answer is ours. */
                        if (error)
                                return reply_error(q, command, error, false, err);
                        return vh_error_set(err, -EPROTO, "QMP reply from %s to command '%s' has no id", q->name,
                                            command);
                }
                uint64_t got;
                if (json_get_uint(idv, &got) < 0 || got != id)
                        continue; /* the late reply of a command that timed out */
                if (error)
                        return reply_error(q, command, error, true, err);
                struct json_value *value = json_object_steal(reply, "return");
                if (!value)
                        return vh_error_set(err, -EPROTO,
                                            "QMP reply from %s to command '%s' has neither 'return' nor 'error'",
                                            q->name, command);
                if (ret_value)
                        *ret_value = value;
                else
                        json_value_free(value);
                return 0;
        }
}

int qmp_human_command(struct qmp_client *q, const char *command_line, char **ret_text, struct vh_error *err) {
        struct json_writer w;
        int r = 0;
        if (!command_line)
                return vh_error_set(err, -EINVAL, "No human monitor command");
        json_writer_init(&w, false);
        json_object_begin(&w);
        json_kv_string(&w, "command-line", command_line);
        json_object_end(&w);
        _cleanup_free_ char *args = json_writer_finish(&w, &r);
        if (!args)
                return vh_error_set(err, r < 0 ? r : -ENOMEM, "Cannot build the human monitor command");

        _cleanup_(json_value_freep) struct json_value *ret = NULL;
        r = qmp_execute(q, "human-monitor-command", args, &ret, err);
        if (r < 0)
                return r;
        const char *text;
        if (json_get_string(ret, &text) < 0)
                return vh_error_set(err, -EPROTO, "human-monitor-command '%s' returned a %s, not a string",
                                    command_line, json_type_to_string(ret->type));
        if (ret_text) {
                char *s = strdup(text);
                if (!s)
                        return vh_error_set(err, -ENOMEM, "Out of memory");
                *ret_text = s;
        }
        return 0;
}

/* Reads messages until an event named 'name' (any if NULL) arrives; other
 * events are queued, stray replies dropped. */
static int read_event(struct qmp_client *q, const char *name, int timeout_ms, struct qmp_event **ret,
                      struct vh_error *err) {
        if (q->async)
                return vh_error_set(err, -EBUSY, "QMP connection to %s is non-blocking: use qmp_pop_event()",
                                    q->name);
        int64_t deadline = deadline_after(timeout_ms);
        for (;;) {
                _cleanup_(json_value_freep) struct json_value *msg = NULL;
                int r = read_message(q, deadline, &msg, err);
                if (r == -ETIMEDOUT)
                        return vh_error_set(err, r, "No QMP event%s%s from %s within %d ms", name ? " " : "",
                                            name ? name : "", q->name, timeout_ms);
                if (r < 0)
                        return r;
                if (!json_object_get(msg, "event"))
                        continue; /* a late reply to a timed-out command */
                struct qmp_event *e;
                r = event_from_message(q, msg, &e, err);
                if (r < 0)
                        return r;
                if (!name || streq(e->name, name)) {
                        if (ret)
                                *ret = e;
                        else
                                qmp_event_free(e);
                        return 0;
                }
                queue_event(q, e);
        }
}

int qmp_next_event(struct qmp_client *q, int timeout_ms, struct qmp_event **ret, struct vh_error *err) {
        struct qmp_event *e = unqueue_event(q, NULL);
        if (e) {
                *ret = e;
                return 0;
        }
        return read_event(q, NULL, timeout_ms, ret, err);
}

int qmp_wait_event(struct qmp_client *q, const char *name, int timeout_ms, struct qmp_event **ret,
                   struct vh_error *err) {
        if (!name)
                return vh_error_set(err, -EINVAL, "No event name to wait for");
        struct qmp_event *e = unqueue_event(q, name);
        if (e) {
                if (ret)
                        *ret = e;
                else
                        qmp_event_free(e);
                return 0;
        }
        return read_event(q, name, timeout_ms, ret, err);
}

size_t qmp_events_queued(const struct qmp_client *q) {
        return q->n_events;
}

uint64_t qmp_events_dropped(const struct qmp_client *q) {
        return q->dropped;
}

const struct qmp_version *qmp_get_version(const struct qmp_client *q) {
        return &q->version;
}

const char *qmp_last_error_class(const struct qmp_client *q) {
        return q->error_class[0] ? q->error_class : NULL;
}

void qmp_set_timeout(struct qmp_client *q, int timeout_ms) {
        q->timeout_ms = timeout_ms > 0 ? timeout_ms : QMP_TIMEOUT_DEFAULT_MS;
}

void qmp_close(struct qmp_client *q) {
        if (q)
                q->fd = safe_close(q->fd);
}

struct qmp_client *qmp_free(struct qmp_client *q) {
        if (!q)
                return NULL;
        qmp_close(q);
        struct qmp_event *e;
        while ((e = unqueue_event(q, NULL)))
                qmp_event_free(e);
        struct qmp_reply *reply;
        while (qmp_pop_reply(q, &reply) > 0)
                qmp_reply_free(reply);
        free(q->out);
        free(q->buf);
        free(q->name);
        free(q->version.package);
        free(q);
        return NULL;
}

static int greeting_parse(struct qmp_client *q, const struct json_value *msg, struct vh_error *err);

/* Reads the greeting, {"QMP": {"version": {"qemu": {...}, "package": ...},
 * "capabilities": [...]}}, and records the version. */
static int read_greeting(struct qmp_client *q, int64_t deadline, struct vh_error *err) {
        _cleanup_(json_value_freep) struct json_value *msg = NULL;
        struct vh_error inner = {};
        int r;
        for (;;) {
                r = read_message(q, deadline, &msg, &inner);
                if (r == -ETIMEDOUT)
                        return vh_error_set(err, r,
                                            "No QMP greeting from %s in time (QEMU serves one client per QMP socket: "
                                            "is another one connected?)",
                                            q->name);
                if (r < 0)
                        return vh_error_set(err, r, "No QMP greeting from %s: %s", q->name, inner.msg);
                /* A client connecting while QEMU starts can get an event
                 * (RESUME, seen here with QEMU 7.2) before the greeting:
                 * keep it like any other. */
                if (!json_object_get(msg, "event"))
                        break;
                struct qmp_event *e;
                r = event_from_message(q, msg, &e, &inner);
                if (r < 0)
                        return vh_error_set(err, r, "No QMP greeting from %s: %s", q->name, inner.msg);
                queue_event(q, e);
                msg = json_value_free(msg);
        }
        return greeting_parse(q, msg, err);
}

/* Records the version from a greeting message (any other message: -EPROTO). */
static int greeting_parse(struct qmp_client *q, const struct json_value *msg, struct vh_error *err) {
        struct json_value *qmp = json_object_get(msg, "QMP");
        if (!qmp || qmp->type != JSON_OBJECT) {
                _cleanup_free_ char *text = NULL;
                (void) json_value_format(msg, false, &text);
                return vh_error_set(err, -EPROTO,
                                    "%s sent no QMP greeting (no \"QMP\" object but %.80s%s): is it a QMP socket?",
                                    q->name, text ? text : "?", text && strlen(text) > 80 ? "..." : "");
        }
        struct json_value *version = json_object_get(qmp, "version"), *qemu = json_object_get(version, "qemu");
        int64_t major = 0, minor = 0, micro = 0;
        if (json_get_int(json_object_get(qemu, "major"), &major) < 0 ||
            json_get_int(json_object_get(qemu, "minor"), &minor) < 0 ||
            json_get_int(json_object_get(qemu, "micro"), &micro) < 0 || major < 0 || major > 1000 || minor < 0 ||
            minor > 1000 || micro < 0 || micro > 1000)
                return vh_error_set(err, -EPROTO, "QMP greeting from %s has no valid QEMU version", q->name);
        const char *package = "";
        (void) json_get_string(json_object_get(version, "package"), &package);
        free(q->version.package);
        q->version = (struct qmp_version) { .major = (int) major, .minor = (int) minor, .micro = (int) micro };
        q->version.package = strdup(package);
        if (!q->version.package)
                return vh_error_set(err, -ENOMEM, "Out of memory");
        return 0;
}

/* A client on connected 'fd' (taken over, even on failure), made
 * non-blocking, with nothing read yet: the start of both the blocking and
 * the non-blocking connect. */
static int client_new(int fd, const char *name, size_t max_line, struct qmp_client **ret, struct vh_error *err) {
        _cleanup_close_ int owned = fd;
        if (fd < 0)
                return vh_error_set(err, -EBADF, "No QMP socket");
        int flags = fcntl(fd, F_GETFL);
        if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
                return vh_error_set(err, negative_errno(), "Cannot set up the QMP socket: %m");
        struct qmp_client *q = calloc(1, sizeof(*q));
        if (!q)
                return vh_error_set(err, -ENOMEM, "Out of memory");
        q->fd = TAKE_FD(owned);
        q->name = strdup(name ? name : "QMP peer");
        q->max_line = max_line ? max_line : QMP_MAX_LINE_DEFAULT;
        q->limits = (struct json_limits) { .max_bytes = q->max_line, .max_string = q->max_line };
        if (!q->name) {
                qmp_free(q);
                return vh_error_set(err, -ENOMEM, "Out of memory");
        }
        *ret = q;
        return 0;
}

/* Sets up a client on connected 'fd' (taking it over, even on failure):
 * greeting and negotiation before 'deadline', then 'timeout_ms' per
 * command. */
static int client_setup(int fd, const char *name, int timeout_ms, int64_t deadline, size_t max_line,
                        struct qmp_client **ret, struct vh_error *err) {
        _cleanup_(qmp_freep) struct qmp_client *q = NULL;
        int r = client_new(fd, name, max_line, &q, err);
        if (r < 0)
                return r;
        r = read_greeting(q, deadline, err);
        if (r < 0)
                return r;

        /* Until qmp_capabilities QEMU accepts no other command. It gets
         * what remains of the connect timeout. */
        q->timeout_ms = MAX(remaining_ms(deadline), 1);
        r = qmp_execute(q, "qmp_capabilities", NULL, NULL, err);
        if (r < 0)
                return r;
        qmp_set_timeout(q, timeout_ms);
        *ret = TAKE_PTR(q);
        return 0;
}

int qmp_connect_fd(int fd, const char *name, int timeout_ms, size_t max_line, struct qmp_client **ret,
                   struct vh_error *err) {
        if (timeout_ms <= 0)
                timeout_ms = QMP_TIMEOUT_DEFAULT_MS;
        return client_setup(fd, name, timeout_ms, deadline_after(timeout_ms), max_line, ret, err);
}

int qmp_connect(const char *path, int timeout_ms, struct qmp_client **ret, struct vh_error *err) {
        struct sockaddr_un sa;
        if (unix_address(path, &sa) < 0)
                return vh_error_set(err, -ENAMETOOLONG, "QMP socket path %s is too long for a unix socket",
                                    path ? path : "(null)");
        if (timeout_ms <= 0)
                timeout_ms = QMP_TIMEOUT_DEFAULT_MS;
        int64_t deadline = deadline_after(timeout_ms);

        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return vh_error_set(err, negative_errno(), "Cannot create a unix socket: %m");
        for (;;) {
                if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0)
                        break;
                int e = negative_errno();
                if (e == -EINTR)
                        continue;
                /* A full listen backlog: unix sockets cannot be polled for
                 * that, so retry until the deadline. */
                if (e == -EAGAIN && remaining_ms(deadline) > 0) {
                        usleep(10 * 1000);
                        continue;
                }
                if (e == -ENOENT)
                        return vh_error_set(err, e, "No QMP socket at %s: is the VM running?", path);
                if (e == -ECONNREFUSED)
                        return vh_error_set(err, e, "Nothing listens on QMP socket %s: has QEMU exited?", path);
                if (e == -EAGAIN)
                        return vh_error_set(err, -ETIMEDOUT, "QMP socket %s accepted no connection in time", path);
                return vh_error_set(err, e, "Cannot connect to QMP socket %s: %s", path, strerror(-e));
        }
        return client_setup(TAKE_FD(fd), path, timeout_ms, deadline, 0, ret, err);
}

/* ---- non-blocking use ---- */

/* What may wait to be sent: commands are small, and at most
 * QMP_MAX_PENDING_COMMANDS of them are outstanding. */
#define ASYNC_OUT_MAX (1u << 20)
/* Bytes read per qmp_process() call, so that one chatty QEMU cannot keep an
 * event loop from the others; the rest is read at the next poll. */
#define ASYNC_READ_MAX (1u << 20)

struct qmp_reply *qmp_reply_free(struct qmp_reply *r) {
        if (!r)
                return NULL;
        json_value_free(r->value);
        free(r);
        return NULL;
}

int qmp_connect_async_fd(int fd, const char *name, size_t max_line, struct qmp_client **ret, struct vh_error *err) {
        _cleanup_(qmp_freep) struct qmp_client *q = NULL;
        int r = client_new(fd, name, max_line, &q, err);
        if (r < 0)
                return r;
        q->timeout_ms = QMP_TIMEOUT_DEFAULT_MS;
        q->async = true;
        q->phase = ASYNC_GREETING;
        q->version.package = strdup("");
        if (!q->version.package)
                return vh_error_set(err, -ENOMEM, "Out of memory");
        *ret = TAKE_PTR(q);
        return 0;
}

int qmp_connect_async(const char *path, struct qmp_client **ret, struct vh_error *err) {
        struct sockaddr_un sa;
        if (unix_address(path, &sa) < 0)
                return vh_error_set(err, -ENAMETOOLONG, "QMP socket path %s is too long for a unix socket",
                                    path ? path : "(null)");
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return vh_error_set(err, negative_errno(), "Cannot create a unix socket: %m");
        /* A unix socket connects at once or fails; nothing to wait for. */
        while (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                int e = negative_errno();
                if (e == -EINTR)
                        continue;
                if (e == -ENOENT)
                        return vh_error_set(err, e, "No QMP socket at %s: is the VM running?", path);
                if (e == -ECONNREFUSED)
                        return vh_error_set(err, e, "Nothing listens on QMP socket %s: has QEMU exited?", path);
                if (e == -EAGAIN)
                        return vh_error_set(err, e, "QMP socket %s accepts no connection now (backlog full)", path);
                return vh_error_set(err, e, "Cannot connect to QMP socket %s: %s", path, strerror(-e));
        }
        return qmp_connect_async_fd(TAKE_FD(fd), path, 0, ret, err);
}

int qmp_get_fd(const struct qmp_client *q) {
        return q->fd;
}

short qmp_poll_events(const struct qmp_client *q) {
        if (q->fd < 0)
                return 0;
        bool out = q->async && q->phase != ASYNC_GREETING && q->out_len > q->out_start;
        return (short) (POLLIN | (out ? POLLOUT : 0));
}

bool qmp_is_ready(const struct qmp_client *q) {
        return !q->async || q->phase == ASYNC_READY;
}

/* Appends (or, 'front', prepends) 'msg' to what waits to be sent. */
static int out_add(struct qmp_client *q, const char *msg, bool front, struct vh_error *err) {
        size_t n = strlen(msg), waiting = q->out_len - q->out_start;
        if (waiting + n > ASYNC_OUT_MAX)
                return vh_error_set(err, -ENOBUFS, "More than %u bytes wait to be sent to QMP socket %s",
                                    ASYNC_OUT_MAX, q->name);
        char *b = malloc(waiting + n + 1);
        if (!b)
                return vh_error_set(err, -ENOMEM, "Out of memory");
        const char *old = q->out ? q->out + q->out_start : "";
        if (front) {
                memcpy(b, msg, n);
                memcpy(b + n, old, waiting);
        } else {
                memcpy(b, old, waiting);
                memcpy(b + waiting, msg, n);
        }
        b[waiting + n] = '\0';
        free(q->out);
        q->out = b;
        q->out_start = 0;
        q->out_len = waiting + n;
        return 0;
}

/* Writes what waits, as far as the socket takes it now. */
static int out_flush(struct qmp_client *q, struct vh_error *err) {
        if (q->phase == ASYNC_GREETING)
                return 0;
        while (q->out_start < q->out_len) {
                ssize_t n = send(q->fd, q->out + q->out_start, q->out_len - q->out_start, MSG_NOSIGNAL | MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                return 0;
                        int e = negative_errno();
                        return set_broken(q, err, e, "Cannot write to QMP socket %s: %s", q->name, strerror(-e));
                }
                q->out_start += (size_t) n;
        }
        q->out_start = q->out_len = 0;
        return 0;
}

static void queue_reply(struct qmp_client *q, struct qmp_reply *r) {
        r->next = NULL;
        if (q->reply_tail)
                q->reply_tail->next = r;
        else
                q->reply_head = r;
        q->reply_tail = r;
        q->n_replies++;
}

/* Handles one message of a non-blocking client. */
static int async_dispatch(struct qmp_client *q, struct json_value *msg, struct vh_error *err) {
        struct vh_error inner = {};
        int r;
        if (json_object_get(msg, "event")) {
                struct qmp_event *e;
                r = event_from_message(q, msg, &e, err);
                if (r < 0)
                        return r;
                queue_event(q, e);
                return 0;
        }
        if (q->phase == ASYNC_GREETING) {
                r = greeting_parse(q, msg, &inner);
                if (r < 0)
                        return set_broken(q, err, r, "%s", inner.msg);
                char caps[64];
                q->caps_id = ++q->last_id;
                snprintf(caps, sizeof(caps), "{\"execute\":\"qmp_capabilities\",\"id\":%" PRIu64 "}\n", q->caps_id);
                r = out_add(q, caps, true, err);
                if (r < 0)
                        return r;
                q->phase = ASYNC_NEGOTIATING;
                return 0;
        }

        uint64_t id = 0;
        struct json_value *error = json_object_get(msg, "error");
        bool has_id = json_get_uint(json_object_get(msg, "id"), &id) >= 0;
        if (q->phase == ASYNC_NEGOTIATING && (!has_id || id == q->caps_id)) {
                if (error) {
                        reply_error(q, "qmp_capabilities", error, has_id, &inner);
                        return set_broken(q, err, -EPROTO, "%s refused the QMP negotiation: %s", q->name, inner.msg);
                }
                q->phase = ASYNC_READY;
                return 0;
        }
        /* Never more replies than commands outstanding: a peer that sends
         * more is not QEMU. */
        if (q->n_replies >= QMP_MAX_PENDING_COMMANDS)
                return set_broken(q, err, -EPROTO, "%s sent more QMP replies than commands", q->name);
        struct qmp_reply *reply = calloc(1, sizeof(*reply));
        if (!reply)
                return vh_error_set(err, -ENOMEM, "Out of memory");
        reply->id = id;
        if (error) {
                const char *class = "GenericError", *desc = "(no description)";
                (void) json_get_string(json_object_get(error, "class"), &class);
                (void) json_get_string(json_object_get(error, "desc"), &desc);
                snprintf(reply->error_class, sizeof(reply->error_class), "%s", class);
                snprintf(reply->error_desc, sizeof(reply->error_desc), "%s", desc);
                reply->error = errno_for_class(class);
        } else {
                reply->value = json_object_steal(msg, "return");
                if (!reply->value) {
                        reply->error = -EPROTO;
                        snprintf(reply->error_desc, sizeof(reply->error_desc), "reply has neither 'return' nor 'error'");
                }
        }
        queue_reply(q, reply);
        return 0;
}

/* Handles every whole message received so far. */
static int async_dispatch_all(struct qmp_client *q, struct vh_error *err) {
        for (;;) {
                _cleanup_(json_value_freep) struct json_value *msg = NULL;
                int r = next_message(q, &msg, err);
                if (r <= 0)
                        return r;
                r = async_dispatch(q, msg, err);
                if (r < 0)
                        return r;
        }
}

int qmp_process(struct qmp_client *q, struct vh_error *err) {
        int r = check_usable(q, err);
        if (r < 0)
                return r;
        if (!q->async)
                return vh_error_set(err, -EINVAL, "QMP connection to %s is blocking: qmp_process() is for "
                                    "qmp_connect_async()", q->name);
        for (size_t total = 0; total < ASYNC_READ_MAX;) {
                r = async_dispatch_all(q, err);
                if (r < 0)
                        return r;
                size_t want = make_room(q);
                if (want == 0)
                        return vh_error_set(err, -ENOMEM, "Out of memory reading from %s", q->name);
                ssize_t n = recv(q->fd, q->buf + q->len, want, MSG_DONTWAIT);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        if (errno == EAGAIN)
                                break;
                        int e = negative_errno();
                        return set_broken(q, err, e, "Cannot read from QMP socket %s: %s", q->name, strerror(-e));
                }
                if (n == 0) {
                        /* What came before the end (a SHUTDOWN event) counts. */
                        (void) async_dispatch_all(q, NULL);
                        if (q->broken)
                                return check_usable(q, err);
                        return set_broken(q, err, -ECONNRESET, "QEMU closed the QMP connection %s%s", q->name,
                                          q->len > q->start ? " in the middle of a message" : "");
                }
                q->len += (size_t) n;
                total += (size_t) n;
        }
        r = async_dispatch_all(q, err);
        if (r < 0)
                return r;
        return out_flush(q, err);
}

int qmp_send(struct qmp_client *q, const char *command, const char *args_json, uint64_t *ret_id,
             struct vh_error *err) {
        int r = check_usable(q, err);
        if (r < 0)
                return r;
        if (!q->async)
                return vh_error_set(err, -EINVAL, "QMP connection to %s is blocking: use qmp_execute()", q->name);
        if (q->n_pending >= QMP_MAX_PENDING_COMMANDS)
                return vh_error_set(err, -EBUSY, "%d QMP commands to %s still wait for their replies",
                                    QMP_MAX_PENDING_COMMANDS, q->name);
        uint64_t id;
        _cleanup_free_ char *msg = NULL;
        r = command_format(q, command, args_json, &id, &msg, err);
        if (r < 0)
                return r;
        r = out_add(q, msg, false, err);
        if (r < 0)
                return r;
        q->n_pending++;
        if (ret_id)
                *ret_id = id;
        return out_flush(q, err);
}

int qmp_pop_event(struct qmp_client *q, struct qmp_event **ret) {
        struct qmp_event *e = unqueue_event(q, NULL);
        if (!e)
                return 0;
        *ret = e;
        return 1;
}

int qmp_pop_reply(struct qmp_client *q, struct qmp_reply **ret) {
        struct qmp_reply *r = q->reply_head;
        if (!r)
                return 0;
        q->reply_head = r->next;
        if (!q->reply_head)
                q->reply_tail = NULL;
        r->next = NULL;
        q->n_replies--;
        if (q->n_pending > 0)
                q->n_pending--;
        *ret = r;
        return 1;
}
