/* web/server.h: the event loop of vmhost's web server: one thread, poll()
 * over non-blocking sockets, a read and a write buffer per client, and a
 * deadline per client so that a slow or abusive one is dropped without
 * stalling the others. It knows HTTP framing (web/http.h) but no routes:
 * the application (web/web.c) answers each whole request, at once or
 * later (a worker finished), or turns the connection into a stream
 * (server-sent events) or hands it over raw after an Upgrade (the
 * websockets of the consoles), whose bytes then go to callbacks.
 *
 * Limits: WEB_MAX_CONNS clients (past it the oldest idle one is closed to
 * make room, or the new one is refused), a request's head and body must
 * arrive within WEB_REQUEST_TIMEOUT_MS of its first byte, a kept-alive
 * connection may idle WEB_IDLE_TIMEOUT_MS, a response must drain within
 * WEB_WRITE_TIMEOUT_MS of its last progress, and a stream's backlog is at
 * most WEB_STREAM_MAX_BACKLOG bytes. With TLS (web_server_set_tls()) the
 * handshake is one more non-blocking step of the same loop. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmhost/error.h"
#include "web/http.h"

#define WEB_MAX_CONNS 64
/* Connections that stay open (event streams, consoles: web_conn_hold())
 * may take at most this many slots, so that the rest are left for
 * requests: a stream or console is never closed to make room. */
#define WEB_MAX_HELD 48
#define WEB_REQUEST_TIMEOUT_MS (10 * 1000)
#define WEB_IDLE_TIMEOUT_MS (30 * 1000)
#define WEB_WRITE_TIMEOUT_MS (30 * 1000)
#define WEB_STREAM_MAX_BACKLOG (1u << 20)
/* A connection the server ends (a refusal, Connection: close) first sends
 * its answer, then shuts its sending side and reads and drops what the
 * client still sends, until the client closes, for this long and this
 * many bytes at most: closing a socket with unread input sends a reset,
 * which can destroy the answer before the client reads it. */
#define WEB_DRAIN_MS 2000
#define WEB_DRAIN_MAX (256u * 1024)
/* The application's own fds: a few of its own, and one backend (a VM's
 * VNC or serial socket) per connection at most. */
#define WEB_MAX_WATCHES (8 + WEB_MAX_CONNS)
/* A raw connection's output past this is refused (web_conn_raw_write):
 * the producer must pause at web_conn_out_pending() > its own mark and go
 * on at the writable callback. */
#define WEB_RAW_MAX_BACKLOG (4u << 20)

struct web_server;
struct web_conn;
struct web_tls;

struct web_server_ops {
        /* One whole request ('body' is 'req->content_length' bytes). The
         * handler answers with web_conn_respond() or web_conn_stream_begin(),
         * or does neither and answers later, looking the connection up by
         * web_conn_id() (it may be gone by then). Until it answers, the
         * connection reads no further request. */
        void (*request)(void *userdata, struct web_conn *c, const struct http_request *req, const char *body);
        /* Called on every turn of the loop, at least every 'tick_ms'. */
        void (*tick)(void *userdata, uint64_t now_ms);
};

/* A socket bound and listening on 'address' (numeric IPv4 or IPv6, no
 * name lookups) and 'port' (0: the kernel picks; *ret_port says which).
 * Non-blocking, close-on-exec: QEMU started by a worker must not inherit
 * it. */
int web_listen(const char *address, uint16_t port, int *ret_fd, uint16_t *ret_port, struct vh_error *err);

/* Takes ownership of 'listen_fd'. */
int web_server_new(int listen_fd, const struct web_server_ops *ops, void *userdata, unsigned tick_ms,
                   struct web_server **ret);
struct web_server *web_server_free(struct web_server *srv);
/* Serves HTTPS from now on (web/tls.h): every new client must complete a
 * TLS handshake, within WEB_REQUEST_TIMEOUT_MS of its connect, before its
 * first request; one that sends plain HTTP gets a plain 400 and is
 * closed. Takes ownership of 'tls'. */
void web_server_set_tls(struct web_server *srv, struct web_tls *tls);
/* Whether the connection came over TLS (the cookie is then Secure and the
 * Origin https). */
bool web_conn_is_tls(const struct web_conn *c);
/* Marks the connection as one of a session (it showed a valid cookie): it
 * is not closed to make room for new clients while its request is under
 * way (server.c, evict_for_room). */
void web_conn_set_trusted(struct web_conn *c);
/* Counts the connection, from now until its request is answered (a
 * refusal) or, once it is a stream or raw, until it closes, among those
 * that stay open for 'owner' (a session): -EDQUOT when 'owner' has
 * 'max_per_owner' of them already, -EBUSY when WEB_MAX_HELD are held in
 * all. A connection counted already is not counted twice. */
int web_conn_hold(struct web_conn *c, uint64_t owner, size_t max_per_owner);
/* Closes the connections held for 'owner' (its session ended) on the
 * loop's next turn, at most a tick from now: not at once, since the
 * caller may be in the middle of one of them. A raw one's closed() is
 * called. */
void web_server_end_owner(struct web_server *srv, uint64_t owner);
/* Closes every connection (a raw one's closed() is called), so that the
 * application can free what they point to before the server. */
void web_server_close_conns(struct web_server *srv);

/* Polls 'fd' for POLLIN with the loop and calls 'ready' when it is
 * readable (the application's worker pipe, inotify, a signalfd). */
int web_server_watch(struct web_server *srv, int fd, void (*ready)(void *userdata, int fd), void *userdata);

/* Polls 'fd' for 'events' (POLLIN, POLLOUT) and calls 'ready' with what
 * happened; web_server_watch_events() changes them (0: none for now),
 * web_server_unwatch() removes the fd (it is not closed). -ENOSPC past
 * WEB_MAX_WATCHES. */
int web_server_watch_io(struct web_server *srv, int fd, short events,
                        void (*ready)(void *userdata, int fd, short revents), void *userdata);
void web_server_watch_events(struct web_server *srv, int fd, short events);
void web_server_unwatch(struct web_server *srv, int fd);

/* Runs the loop until web_server_stop(); returns 0 or -errno of poll(). */
int web_server_run(struct web_server *srv);
void web_server_stop(struct web_server *srv);

/* The connection with 'id' (web_conn_id()), NULL when it has closed. */
struct web_conn *web_server_conn(struct web_server *srv, uint64_t id);
uint64_t web_conn_id(const struct web_conn *c);

/* Answers the connection's request: the status line, the security headers
 * every response carries (Content-Security-Policy, nosniff, no referrer,
 * no framing), 'content_type' (NULL: no body expected), Content-Length,
 * 'extra_headers' (complete "Name: value\r\n" lines or NULL), and 'body'
 * unless the request was HEAD. 'close' ends the connection after it.
 * Returns -ENOMEM when it cannot, and then closes the connection. */
int web_conn_respond(struct web_conn *c, int status, const char *content_type, const char *extra_headers,
                     const char *body, size_t body_len, bool close);

/* Turns the connection into a stream on 'topic' (> 0): a 200 head with
 * 'content_type' and no length, then whatever web_server_broadcast()
 * sends to that topic. A stream whose client does not read is closed once
 * its backlog passes WEB_STREAM_MAX_BACKLOG. */
int web_conn_stream_begin(struct web_conn *c, int topic, const char *content_type);
/* Appends 'data' to one stream, or to every stream on 'topic'. */
int web_conn_stream_write(struct web_conn *c, const char *data, size_t len);
void web_server_broadcast(struct web_server *srv, int topic, const char *data, size_t len);
/* The number of open streams on 'topic'. */
size_t web_server_stream_count(const struct web_server *srv, int topic);

/* A connection handed over after an Upgrade. */
struct web_raw_ops {
        /* Bytes arrived ('len' of them, at 'data', which the handler may
         * change in place): it returns how many it consumed; the rest stays
         * and comes again with more. Not called while paused. */
        size_t (*data)(void *userdata, struct web_conn *c, uint8_t *data, size_t len);
        /* Everything queued was sent: a producer that paused may go on. */
        void (*writable)(void *userdata, struct web_conn *c);
        /* The connection is closing (client gone, error, stuck output,
         * server end): the last call; 'c' is freed after it. */
        void (*closed)(void *userdata, struct web_conn *c);
};

/* Sends 'head' (a complete response head, "HTTP/1.1 101 ...\r\n\r\n")
 * and turns the connection raw: from now on its bytes go to 'ops'. A raw
 * connection has no idle limit (the application pings), only the write
 * deadline: output that makes no progress for WEB_WRITE_TIMEOUT_MS closes
 * it. */
int web_conn_raw_begin(struct web_conn *c, const char *head, const struct web_raw_ops *ops, void *userdata);
void *web_conn_raw_userdata(const struct web_conn *c);
/* Queues bytes; -ENOBUFS past WEB_RAW_MAX_BACKLOG (nothing queued). */
int web_conn_raw_write(struct web_conn *c, const void *data, size_t len);
size_t web_conn_out_pending(const struct web_conn *c);
/* What the kernel holds of the connection's output, not yet taken by the
 * client (SIOCOUTQ: unsent and unacknowledged bytes; 0 when it cannot
 * say). A client that does not read has the send buffer fill, which
 * grows to megabytes before a write would block. */
size_t web_conn_kernel_pending(const struct web_conn *c);
/* Stops (true) or resumes reading the client: backpressure when what it
 * sends cannot be passed on yet. Resuming hands over what waits. */
void web_conn_raw_pause(struct web_conn *c, bool pause);
/* Closes the connection once what is queued was sent. */
void web_conn_raw_end(struct web_conn *c);
