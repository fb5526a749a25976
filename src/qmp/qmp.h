/* qmp/qmp.h: a client for QEMU's machine protocol (QMP) over a unix
 * socket: connect, greeting, capabilities negotiation, commands, events.
 *
 *     struct qmp_client *q;
 *     r = qmp_connect("/run/vmhost/vms/web1/qmp.sock", 5000, &q, &err);
 *     struct json_value *ret = NULL;
 *     r = qmp_execute(q, "query-status", NULL, &ret, &err);
 *     r = qmp_execute(q, "stop", NULL, NULL, &err);
 *     r = qmp_wait_event(q, "STOP", 1000, NULL, &err);
 *     q = qmp_free(q);
 *
 * The protocol: QEMU sends one JSON message per line. Replies carry the id
 * of their command; events ({"event": ...}) come at any time, including
 * between a command and its reply. Events read while waiting for a reply
 * are queued in arrival order for qmp_next_event()/qmp_wait_event(), so
 * none is lost; the queue is bounded (QMP_MAX_QUEUED_EVENTS): past it the
 * oldest are dropped and counted (qmp_events_dropped()).
 *
 * One command is in flight at a time; a client is not thread-safe. After a
 * command times out its late reply is recognized by its id and discarded.
 * A broken connection (EOF, I/O error, an over-long or unparseable line)
 * is sticky: every later call returns the same error, while events queued
 * before it can still be read. Nothing is printed; errors come back as
 * -errno with 'err' saying what happened. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/json.h"
#include "base/macro.h"
#include "vmhost/error.h"

/* QEMU's replies are single lines; query-qmp-schema, the largest, is under
 * 1 MiB. A line longer than this is refused and breaks the connection. */
#define QMP_MAX_LINE_DEFAULT (16u << 20)
#define QMP_MAX_QUEUED_EVENTS 1024
#define QMP_TIMEOUT_DEFAULT_MS 30000

struct qmp_client;

struct qmp_event {
        char *name;                     /* "SHUTDOWN", "STOP", ... */
        struct json_value *data;        /* the "data" member, or NULL */
        int64_t seconds, microseconds;  /* QEMU's timestamp, -1 if absent */
        struct qmp_event *next;         /* queue link, NULL once returned */
};

struct qmp_version {
        int major, minor, micro;
        char *package;  /* e.g. "Debian 1:7.2+dfsg-7", may be "" */
};

/* Connects to the QMP socket at 'path', reads the greeting and negotiates
 * capabilities, all within 'timeout_ms', which also becomes the per-command
 * timeout (see qmp_set_timeout). Returns -ENOENT or -ECONNREFUSED when no
 * QEMU listens there, -ETIMEDOUT when no greeting came (QEMU serves one
 * client per QMP socket: is another one connected?), -EPROTO when the peer
 * does not speak QMP. */
int qmp_connect(const char *path, int timeout_ms, struct qmp_client **ret, struct vh_error *err);

/* The same over an already connected stream socket; takes ownership of
 * 'fd', even on failure. 'max_line' 0 means QMP_MAX_LINE_DEFAULT.
 * 'name' (may be NULL) names the peer in error messages. */
int qmp_connect_fd(int fd, const char *name, int timeout_ms, size_t max_line, struct qmp_client **ret,
                   struct vh_error *err);

/* Runs 'command' with 'args_json', the text of a JSON object or NULL,
 * and waits at most the per-command timeout for its reply. The arguments
 * are checked to be exactly one object first, so no caller text can add a
 * second command. On success stores the reply's "return" value in
 * *ret_value (owned by the caller; pass NULL to drop it). A QMP error
 * reply becomes "QMP command 'foo' failed: CommandNotFound: The command
 * foo has not been found" in 'err', with -EOPNOTSUPP for CommandNotFound,
 * -ENODEV for DeviceNotFound and -EREMOTEIO for the other classes (the
 * class is kept: qmp_last_error_class()). Connection failures return
 * -ECONNRESET (QEMU closed the socket) or -EPIPE, a timeout -ETIMEDOUT. */
int qmp_execute(struct qmp_client *q, const char *command, const char *args_json, struct json_value **ret_value,
                struct vh_error *err);

/* The same, passing the file descriptor 'pass_fd' (not taken over; the
 * caller closes it) with the command, for add-fd and getfd. */
int qmp_execute_fd(struct qmp_client *q, const char *command, const char *args_json, int pass_fd,
                   struct json_value **ret_value, struct vh_error *err);

/* Runs a human monitor command ("info status") through
 * human-monitor-command and stores its text output in *ret_text (may be
 * NULL), owned by the caller. */
int qmp_human_command(struct qmp_client *q, const char *command_line, char **ret_text, struct vh_error *err);

/* Returns the oldest queued event, or reads until one arrives. 'timeout_ms'
 * 0 only looks at what is queued or already readable; -1 waits forever.
 * -ETIMEDOUT if none came. The event is owned by the caller
 * (qmp_event_free). */
int qmp_next_event(struct qmp_client *q, int timeout_ms, struct qmp_event **ret, struct vh_error *err);

/* Waits for the first event called 'name', taking it out of the queue if it
 * is already there; other events read meanwhile stay queued in order.
 * 'ret' may be NULL. */
int qmp_wait_event(struct qmp_client *q, const char *name, int timeout_ms, struct qmp_event **ret,
                   struct vh_error *err);

/* Number of queued events, and of events dropped because the queue was
 * full. */
size_t qmp_events_queued(const struct qmp_client *q);
uint64_t qmp_events_dropped(const struct qmp_client *q);

/* QEMU's version as its greeting announced it. */
const struct qmp_version *qmp_get_version(const struct qmp_client *q);

/* The QMP error class of the last command that failed with an error reply
 * ("CommandNotFound", "GenericError", ...), or NULL. */
const char *qmp_last_error_class(const struct qmp_client *q);

/* Per-command timeout; <= 0 restores QMP_TIMEOUT_DEFAULT_MS. */
void qmp_set_timeout(struct qmp_client *q, int timeout_ms);

/* Closes the socket; queued events stay readable, everything else returns
 * -ENOTCONN. Idempotent. */
void qmp_close(struct qmp_client *q);

/* Closes and frees; accepts NULL; returns NULL. */
struct qmp_client *qmp_free(struct qmp_client *q);
DEFINE_FREE_FUNC(struct qmp_client, qmp_free);

/* ---- Non-blocking use, for an event loop watching many QEMUs ----
 *
 * QEMU serves one client per QMP socket; a long-lived watcher (the web
 * server, a migration) connects to the VM's second monitor socket (see
 * vm_paths: qmp-watch.sock) with this API, so that the CLI keeps the main
 * one. Nothing here blocks: the caller polls qmp_get_fd() for
 * qmp_poll_events() and calls qmp_process() when the descriptor is ready;
 * qmp_process() reads and writes what it can, does the greeting and
 * capabilities negotiation by itself, and queues events and replies.
 *
 *     r = qmp_connect_async(path, &q, &err);
 *     r = qmp_send(q, "query-status", NULL, &id, &err);  (queued until negotiated)
 *     loop: poll({ qmp_get_fd(q), qmp_poll_events(q) }), then
 *           r = qmp_process(q, &err);  (< 0: the connection is gone)
 *           while (qmp_pop_event(q, &e) > 0) ...
 *           while (qmp_pop_reply(q, &reply) > 0) ...
 *
 * A client is either blocking (qmp_connect) or non-blocking
 * (qmp_connect_async): the blocking calls qmp_execute(), qmp_next_event()
 * and qmp_wait_event() refuse a non-blocking client with -EBUSY. Timeouts
 * are the caller's: it knows when it sent what. The event queue is the same
 * bounded one (QMP_MAX_QUEUED_EVENTS, oldest dropped and counted); at most
 * QMP_MAX_PENDING_COMMANDS commands wait for their replies, so the reply
 * queue is bounded too. */

#define QMP_MAX_PENDING_COMMANDS 64

/* The reply to a command sent with qmp_send(). */
struct qmp_reply {
        uint64_t id;                /* qmp_send()'s *ret_id */
        int error;                  /* 0, or the -errno of the error class (see qmp_execute) */
        struct json_value *value;   /* the "return" member when error is 0 */
        char error_class[64];       /* "GenericError", ... when error is set */
        char error_desc[256];
        struct qmp_reply *next;     /* queue link, NULL once returned */
};

struct qmp_reply *qmp_reply_free(struct qmp_reply *r);
DEFINE_FREE_FUNC(struct qmp_reply, qmp_reply_free);

/* Connects to the QMP socket at 'path' without waiting for anything: the
 * greeting and negotiation happen in qmp_process(). -ENOENT or
 * -ECONNREFUSED when no QEMU listens there, -EAGAIN when its listen backlog
 * is full (try again later). */
int qmp_connect_async(const char *path, struct qmp_client **ret, struct vh_error *err);

/* The same over a connected stream socket; takes ownership of 'fd', even
 * on failure. 'name' (may be NULL) names the peer in messages. */
int qmp_connect_async_fd(int fd, const char *name, size_t max_line, struct qmp_client **ret, struct vh_error *err);

/* The descriptor to poll (-1 once the connection is closed or broken) and
 * the events to poll it for: POLLIN, and POLLOUT while output waits. */
int qmp_get_fd(const struct qmp_client *q);
short qmp_poll_events(const struct qmp_client *q);

/* Whether the greeting came and qmp_capabilities was accepted. */
bool qmp_is_ready(const struct qmp_client *q);

/* Reads what the socket has, queues the events and replies it holds,
 * writes what waits to be sent; never blocks. Returns 0, or the sticky
 * -errno of a broken connection (queued events and replies stay
 * readable). */
int qmp_process(struct qmp_client *q, struct vh_error *err);

/* Queues 'command' (arguments as for qmp_execute) to be sent, at once if
 * the socket takes it; its reply comes from qmp_pop_reply() with the id
 * stored in *ret_id (may be NULL). -EBUSY when QMP_MAX_PENDING_COMMANDS
 * replies are outstanding. */
int qmp_send(struct qmp_client *q, const char *command, const char *args_json, uint64_t *ret_id,
             struct vh_error *err);

/* Take the oldest queued event or reply (owned by the caller). Return 1,
 * or 0 when there is none; they never read from the socket. */
int qmp_pop_event(struct qmp_client *q, struct qmp_event **ret);
int qmp_pop_reply(struct qmp_client *q, struct qmp_reply **ret);

struct qmp_event *qmp_event_free(struct qmp_event *e);
DEFINE_FREE_FUNC(struct qmp_event, qmp_event_free);
