/* web/server.c: the event loop of web/server.h. Every socket is
 * non-blocking and every wait is poll() with the nearest client deadline as
 * its timeout, so one client can only ever cost the others the time of one
 * recv() or send() of a buffer. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <linux/sockios.h>
#include <netinet/tcp.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/macro.h"
#include "web/server.h"
#include "web/tls.h"

/* Room for one whole request; more waits until the previous is answered. */
#define WEB_IN_MAX (HTTP_MAX_HEAD + HTTP_MAX_BODY)
#define WEB_READ_CHUNK 16384

struct web_buf {
        char *data;
        size_t len, cap;
        size_t off;   /* bytes at the start already consumed (sent, or parsed) */
};

enum conn_state {
        CONN_READING,   /* waiting for (the rest of) a request */
        CONN_HANDLING,  /* the application has the request and answers later */
        CONN_WRITING,   /* a response is being sent */
        CONN_STREAM,    /* a stream head was sent; broadcasts follow until the client leaves */
        CONN_RAW,       /* handed over after an Upgrade: bytes go to raw_ops */
        CONN_DRAINING,  /* answered and shut for writing: reads and drops input until the client closes */
};

struct web_conn {
        struct web_server *srv;
        uint64_t id;
        int fd;
        enum conn_state state;
        struct web_buf in, out;
        uint64_t deadline_ms;     /* when it is dropped unless something happens */
        bool request_started;     /* bytes of a request arrived: its deadline runs */
        bool head_method;         /* the request being answered is HEAD */
        bool close_after_write;
        int topic;                /* CONN_STREAM: its topic */
        const struct web_raw_ops *raw_ops;  /* CONN_RAW: */
        void *raw_userdata;
        bool raw_paused;          /* reads nothing from the client */
        bool raw_kick;            /* resumed with input waiting: hand it over next turn */
        struct ssl_st *ssl;       /* TLS (web_server_set_tls()), NULL: plain */
        bool tls_ready;           /* its handshake is done */
        /* What the last TLS read or write waits for (a read may need to
         * write, during a handshake or a key update, and the other way
         * round); 0: what a plain socket would. Kept apart so that a
         * connection that reads nothing polls for nothing to read. */
        short tls_read_want, tls_write_want;
        bool trusted;             /* a request of it carried a valid session (web_conn_set_trusted) */
        bool answered;            /* a request of it was answered: idle is a kept-alive wait, not a new client's */
        bool peer_gone;           /* the client closed or reset (or drained enough): close without draining */
        size_t drained;           /* CONN_DRAINING: bytes dropped */
        bool held;                /* counted by web_conn_hold() for 'owner' */
        uint64_t owner;
        bool ended;               /* web_server_end_owner(): closed on the next turn */
};

struct watch {
        int fd;
        short events;
        void (*ready)(void *userdata, int fd);                 /* web_server_watch() */
        void (*ready_io)(void *userdata, int fd, short revents); /* web_server_watch_io() */
        void *userdata;
};

struct web_server {
        int listen_fd;
        const struct web_server_ops *ops;
        void *userdata;
        unsigned tick_ms;
        struct web_conn *conns[WEB_MAX_CONNS];
        size_t n_conns;
        uint64_t next_id;
        struct watch watches[WEB_MAX_WATCHES];
        size_t n_watches;
        bool stop;
        struct web_tls *tls;      /* NULL: plain HTTP */
};

static int buf_reserve(struct web_buf *b, size_t more) {
        if (b->off > 0 && b->off == b->len)
                b->off = b->len = 0;
        if (b->len + more <= b->cap)
                return 0;
        /* Consumed bytes at the front are dropped before growing. */
        if (b->off > 0) {
                memmove(b->data, b->data + b->off, b->len - b->off);
                b->len -= b->off;
                b->off = 0;
                if (b->len + more <= b->cap)
                        return 0;
        }
        size_t cap = MAX(b->cap * 2, b->len + more);
        cap = MAX(cap, (size_t) 4096);
        char *d = realloc(b->data, cap);
        if (!d)
                return -ENOMEM;
        b->data = d;
        b->cap = cap;
        return 0;
}

static int buf_append(struct web_buf *b, const void *data, size_t len) {
        int r = buf_reserve(b, len);
        if (r < 0)
                return r;
        memcpy(b->data + b->len, data, len);
        b->len += len;
        return 0;
}

static size_t buf_pending(const struct web_buf *b) {
        return b->len - b->off;
}

int web_listen(const char *address, uint16_t port, int *ret_fd, uint16_t *ret_port, struct vh_error *err) {
        struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | AI_PASSIVE,
                                  .ai_socktype = SOCK_STREAM },
                        *ai = NULL;
        char ports[8];
        snprintf(ports, sizeof(ports), "%u", port);
        int g = getaddrinfo(address, ports, &hints, &ai);
        if (g != 0)
                return vh_error_set(err, -EINVAL, "'%s' is not a numeric IPv4 or IPv6 address", address);
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
                int r = negative_errno();
                freeaddrinfo(ai);
                return vh_error_set(err, r, "Cannot make a socket for %s: %s", address, strerror(-r));
        }
        int one = 1;
        (void) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 64) < 0) {
                int r = negative_errno();
                freeaddrinfo(ai);
                close(fd);
                return vh_error_set(err, r, "Cannot listen on %s port %u: %s", address, port, strerror(-r));
        }
        freeaddrinfo(ai);
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        if (getsockname(fd, (struct sockaddr *) &ss, &sl) < 0) {
                int r = negative_errno();
                close(fd);
                return vh_error_set(err, r, "getsockname: %s", strerror(-r));
        }
        *ret_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *) &ss)->sin6_port
                                                   : ((struct sockaddr_in *) &ss)->sin_port);
        *ret_fd = fd;
        return 0;
}

int web_server_new(int listen_fd, const struct web_server_ops *ops, void *userdata, unsigned tick_ms,
                   struct web_server **ret) {
        struct web_server *srv = calloc(1, sizeof(*srv));
        if (!srv) {
                close(listen_fd);
                return -ENOMEM;
        }
        srv->listen_fd = listen_fd;
        srv->ops = ops;
        srv->userdata = userdata;
        srv->tick_ms = tick_ms ? tick_ms : 1000;
        srv->next_id = 1;
        *ret = srv;
        return 0;
}

void web_server_set_tls(struct web_server *srv, struct web_tls *tls) {
        web_tls_free(srv->tls);
        srv->tls = tls;
}

bool web_conn_is_tls(const struct web_conn *c) {
        return c->ssl;
}

static void conn_free(struct web_conn *c) {
        if (c->state == CONN_RAW && c->raw_ops->closed)
                c->raw_ops->closed(c->raw_userdata, c);
        web_tls_conn_free(c->ssl);
        safe_close(c->fd);
        free(c->in.data);
        free(c->out.data);
        free(c);
}

static void conn_close(struct web_server *srv, size_t i) {
        conn_free(srv->conns[i]);
        srv->conns[i] = srv->conns[--srv->n_conns];
}

void web_server_close_conns(struct web_server *srv) {
        while (srv->n_conns)
                conn_close(srv, 0);
}

struct web_server *web_server_free(struct web_server *srv) {
        if (!srv)
                return NULL;
        while (srv->n_conns)
                conn_close(srv, 0);
        safe_close(srv->listen_fd);
        web_tls_free(srv->tls);
        free(srv);
        return NULL;
}

int web_server_watch(struct web_server *srv, int fd, void (*ready)(void *userdata, int fd), void *userdata) {
        if (srv->n_watches >= WEB_MAX_WATCHES)
                return -ENOSPC;
        srv->watches[srv->n_watches++] = (struct watch) { .fd = fd, .events = POLLIN, .ready = ready,
                                                          .userdata = userdata };
        return 0;
}

int web_server_watch_io(struct web_server *srv, int fd, short events,
                        void (*ready)(void *userdata, int fd, short revents), void *userdata) {
        if (srv->n_watches >= WEB_MAX_WATCHES)
                return -ENOSPC;
        srv->watches[srv->n_watches++] = (struct watch) { .fd = fd, .events = events, .ready_io = ready,
                                                          .userdata = userdata };
        return 0;
}

void web_server_watch_events(struct web_server *srv, int fd, short events) {
        for (size_t i = 0; i < srv->n_watches; i++)
                if (srv->watches[i].fd == fd)
                        srv->watches[i].events = events;
}

void web_server_unwatch(struct web_server *srv, int fd) {
        for (size_t i = 0; i < srv->n_watches; i++)
                if (srv->watches[i].fd == fd) {
                        srv->watches[i] = srv->watches[--srv->n_watches];
                        return;
                }
}

void web_server_stop(struct web_server *srv) {
        srv->stop = true;
}

struct web_conn *web_server_conn(struct web_server *srv, uint64_t id) {
        for (size_t i = 0; i < srv->n_conns; i++)
                if (srv->conns[i]->id == id)
                        return srv->conns[i];
        return NULL;
}

uint64_t web_conn_id(const struct web_conn *c) {
        return c->id;
}

/* The one place bytes leave and come in: plain, or through TLS once its
 * handshake is done (conn_handshake()). Both return at once; EAGAIN says
 * to wait for what tls_read_want/tls_write_want name. */
static ssize_t conn_send(struct web_conn *c, const void *data, size_t len) {
        if (!c->ssl)
                return send(c->fd, data, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        c->tls_write_want = 0;
        return web_tls_write(c->ssl, data, len, &c->tls_write_want);
}

static ssize_t conn_recv(struct web_conn *c, void *data, size_t len) {
        if (!c->ssl)
                return recv(c->fd, data, len, MSG_DONTWAIT);
        c->tls_read_want = 0;
        return web_tls_read(c->ssl, data, len, &c->tls_read_want);
}

/* Whether the loop reads the client now. A connection whose request is
 * with the handler reads nothing more (no unbounded buffering); a stream
 * reads to see its client leave. */
static bool conn_wants_read(const struct web_conn *c) {
        return c->state == CONN_READING || c->state == CONN_STREAM || c->state == CONN_DRAINING ||
               (c->state == CONN_RAW && !c->raw_paused);
}

/* After the last byte of a connection the server ends (WEB_DRAIN_MS). */
static void conn_drain_begin(struct web_conn *c, uint64_t now) {
        if (c->ssl)
                web_tls_close_notify(c->ssl);
        (void) shutdown(c->fd, SHUT_WR);
        c->state = CONN_DRAINING;
        c->tls_read_want = c->tls_write_want = 0;
        c->in.len = c->in.off = 0;
        c->deadline_ms = now + WEB_DRAIN_MS;
}

/* Drops what the client sent; done (state WRITING with nothing to write,
 * which closes it) at its end, an error or WEB_DRAIN_MAX. Under TLS too
 * the bytes are dropped undecrypted: nothing in them matters any more. */
static void conn_drain(struct web_conn *c) {
        char buf[16384];
        for (;;) {
                ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        return;
                if (n > 0)
                        c->drained += (size_t) n;
                if (n <= 0 || c->drained > WEB_DRAIN_MAX) {
                        c->peer_gone = true;
                        c->state = CONN_WRITING;
                        return;
                }
        }
}

static void conn_idle(struct web_conn *c, uint64_t now) {
        /* A request that was to become a stream or console was answered
         * (refused) instead: it holds nothing. */
        c->held = false;
        c->state = CONN_READING;
        c->request_started = false;
        c->deadline_ms = now + WEB_IDLE_TIMEOUT_MS;
}

static int respond_head(struct web_conn *c, int status, const char *content_type, const char *extra, bool has_length,
                        size_t body_len, bool close) {
        char head[2048];
        char length[48] = "";
        if (has_length)
                snprintf(length, sizeof(length), "Content-Length: %zu\r\n", body_len);
        int n = snprintf(head, sizeof(head),
                         "HTTP/1.1 %d %s\r\n"
                         /* style-src allows inline styles: xterm.js sizes its rows
                          * with a <style> element it writes; scripts stay 'self'. */
                         "Content-Security-Policy: default-src 'self'; style-src 'self' 'unsafe-inline'; "
                         "frame-ancestors 'none'; base-uri 'none'; form-action 'self'\r\n"
                         "X-Content-Type-Options: nosniff\r\n"
                         "Referrer-Policy: no-referrer\r\n"
                         "X-Frame-Options: DENY\r\n"
                         "Cross-Origin-Opener-Policy: same-origin\r\n"
                         "Cross-Origin-Resource-Policy: same-origin\r\n"
                         "%s%s%s"
                         "%s"
                         "%s",
                         status, http_status_reason(status), content_type ? "Content-Type: " : "",
                         content_type ? content_type : "", content_type ? "\r\n" : "", length,
                         close ? "Connection: close\r\n" : "");
        if (n < 0 || (size_t) n >= sizeof(head))
                return -ENOBUFS;
        int r = buf_append(&c->out, head, (size_t) n);
        if (r >= 0 && extra)
                r = buf_append(&c->out, extra, strlen(extra));
        if (r >= 0)
                r = buf_append(&c->out, "\r\n", 2);
        return r;
}

int web_conn_respond(struct web_conn *c, int status, const char *content_type, const char *extra_headers,
                     const char *body, size_t body_len, bool close) {
        c->close_after_write = c->close_after_write || close;
        int r = respond_head(c, status, content_type, extra_headers, true, body_len, c->close_after_write);
        if (r >= 0 && body_len && !c->head_method)
                r = buf_append(&c->out, body, body_len);
        c->state = CONN_WRITING;
        c->deadline_ms = vh_clock_ms() + WEB_WRITE_TIMEOUT_MS;
        if (r < 0) {
                /* What went out so far would be a torn response. */
                c->out.len = c->out.off = 0;
                c->close_after_write = true;
        }
        return r;
}

int web_conn_stream_begin(struct web_conn *c, int topic, const char *content_type) {
        int r = respond_head(c, 200, content_type, "Cache-Control: no-store\r\n", false, 0, false);
        if (r < 0) {
                c->close_after_write = true;
                c->state = CONN_WRITING;
                return r;
        }
        c->state = CONN_STREAM;
        c->topic = topic;
        return 0;
}

int web_conn_stream_write(struct web_conn *c, const char *data, size_t len) {
        if (c->state != CONN_STREAM)
                return -EINVAL;
        if (buf_pending(&c->out) + len > WEB_STREAM_MAX_BACKLOG) {
                /* A client that does not read: drop it rather than buffer
                 * without end. */
                c->close_after_write = true;
                c->out.len = c->out.off = 0;
                c->state = CONN_WRITING;
                return -ENOBUFS;
        }
        return buf_append(&c->out, data, len);
}

void web_server_broadcast(struct web_server *srv, int topic, const char *data, size_t len) {
        for (size_t i = 0; i < srv->n_conns; i++)
                if (srv->conns[i]->state == CONN_STREAM && srv->conns[i]->topic == topic)
                        (void) web_conn_stream_write(srv->conns[i], data, len);
}

size_t web_server_stream_count(const struct web_server *srv, int topic) {
        size_t n = 0;
        for (size_t i = 0; i < srv->n_conns; i++)
                n += srv->conns[i]->state == CONN_STREAM && srv->conns[i]->topic == topic;
        return n;
}

int web_conn_raw_begin(struct web_conn *c, const char *head, const struct web_raw_ops *ops, void *userdata) {
        int r = buf_append(&c->out, head, strlen(head));
        if (r < 0) {
                c->close_after_write = true;
                c->state = CONN_WRITING;
                return r;
        }
        c->state = CONN_RAW;
        c->raw_ops = ops;
        c->raw_userdata = userdata;
        c->close_after_write = false;
        c->deadline_ms = vh_clock_ms() + WEB_WRITE_TIMEOUT_MS;
        /* Bytes the client sent right after its handshake. */
        c->raw_kick = buf_pending(&c->in) > 0;
        return 0;
}

void *web_conn_raw_userdata(const struct web_conn *c) {
        return c->raw_userdata;
}

int web_conn_raw_write(struct web_conn *c, const void *data, size_t len) {
        if (c->state != CONN_RAW || c->close_after_write)
                return -EPIPE;
        if (buf_pending(&c->out) + len > WEB_RAW_MAX_BACKLOG)
                return -ENOBUFS;
        if (buf_pending(&c->out) == 0)
                /* The write deadline runs from when output waits. */
                c->deadline_ms = vh_clock_ms() + WEB_WRITE_TIMEOUT_MS;
        return buf_append(&c->out, data, len);
}

size_t web_conn_out_pending(const struct web_conn *c) {
        return buf_pending(&c->out);
}

size_t web_conn_kernel_pending(const struct web_conn *c) {
        int n = 0;
        if (ioctl(c->fd, SIOCOUTQ, &n) < 0 || n < 0)
                return 0;
        return (size_t) n;
}

void web_conn_raw_pause(struct web_conn *c, bool pause) {
        if (c->raw_paused && !pause && buf_pending(&c->in) > 0)
                c->raw_kick = true;
        c->raw_paused = pause;
}

void web_conn_raw_end(struct web_conn *c) {
        c->close_after_write = true;
        c->raw_paused = true;
}

/* Hands the raw input to the application: what it consumes goes. */
static void conn_raw_process(struct web_conn *c) {
        while (!c->raw_paused && !c->close_after_write && buf_pending(&c->in) > 0) {
                size_t len = buf_pending(&c->in);
                size_t used = c->raw_ops->data(c->raw_userdata, c, (uint8_t *) c->in.data + c->in.off, len);
                c->in.off += MIN(used, len);
                if (used == 0)
                        return;
        }
}

/* A request the parser refused: its status, and the connection closes
 * (what follows in the stream cannot be trusted to start a request). */
static void refuse(struct web_conn *c, int status) {
        char body[128];
        int n = snprintf(body, sizeof(body), "{\"error\": \"%s\"}\n", http_status_reason(status));
        c->in.len = c->in.off = 0;
        (void) web_conn_respond(c, status, "application/json", NULL, body, (size_t) n, true);
}

/* Hands every whole request in the input to the application, one at a
 * time: the next only once the previous is answered (in order, as
 * HTTP/1.1 pipelining requires). */
static void conn_process(struct web_server *srv, struct web_conn *c) {
        while (c->state == CONN_READING && buf_pending(&c->in) > 0) {
                struct http_request req;
                int status = 0;
                const char *data = c->in.data + c->in.off;
                size_t len = buf_pending(&c->in);
                int r = http_request_parse(data, len, &req, &status);
                if (r == -EAGAIN)
                        return;
                if (r < 0) {
                        refuse(c, status);
                        return;
                }
                if (len < req.head_len + req.content_length) {
                        http_request_done(&req);
                        return;
                }
                /* The body as a string for the handler (bodies are JSON). */
                _cleanup_free_ char *body = strndup(data + req.head_len, req.content_length);
                if (!body) {
                        http_request_done(&req);
                        refuse(c, 500);
                        return;
                }
                c->in.off += req.head_len + req.content_length;
                c->head_method = streq(req.method, "HEAD");
                c->close_after_write = !req.keep_alive;
                c->state = CONN_HANDLING;
                srv->ops->request(srv->userdata, c, &req, body);
                http_request_done(&req);
        }
}

static void conn_read(struct web_server *srv, struct web_conn *c, uint64_t now) {
        if (c->state == CONN_DRAINING) {
                conn_drain(c);
                return;
        }
        if (buf_reserve(&c->in, WEB_READ_CHUNK) < 0) {
                refuse(c, 500);
                return;
        }
        size_t room = MIN((size_t) WEB_READ_CHUNK, (size_t) WEB_IN_MAX - MIN(buf_pending(&c->in), (size_t) WEB_IN_MAX));
        if (room == 0) {
                /* The parser refuses a head past its limit, so only a
                 * body can fill this: the handler's turn has not come. */
                return;
        }
        ssize_t n = conn_recv(c, c->in.data + c->in.len, room);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                return;
        if (n <= 0 && c->state == CONN_RAW) {
                /* Closed at once: the application learns it in closed(). */
                c->peer_gone = true;
                c->close_after_write = true;
                c->out.len = c->out.off = 0;
                c->state = CONN_WRITING;
                if (c->raw_ops->closed)
                        c->raw_ops->closed(c->raw_userdata, c);
                return;
        }
        if (n <= 0) {
                /* The client left (or reset). */
                c->peer_gone = true;
                c->close_after_write = true;
                c->out.len = c->out.off = 0;
                c->state = CONN_WRITING;
                return;
        }
        c->in.len += (size_t) n;
        if (c->state == CONN_RAW) {
                conn_raw_process(c);
                return;
        }
        if (c->state == CONN_STREAM) {
                /* A stream's client has nothing to say. */
                c->in.len = c->in.off = 0;
                return;
        }
        if (c->state == CONN_READING && !c->request_started) {
                /* From the first byte of a request, the whole of it has a
                 * fixed time: more bytes do not extend it (slowloris). */
                c->request_started = true;
                c->deadline_ms = now + WEB_REQUEST_TIMEOUT_MS;
        }
        conn_process(srv, c);
}

/* Returns false when the connection is to be closed. */
static bool conn_write(struct web_server *srv, struct web_conn *c, uint64_t now) {
        while (buf_pending(&c->out) > 0) {
                ssize_t n = conn_send(c, c->out.data + c->out.off, buf_pending(&c->out));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0 && errno == EAGAIN)
                        return true;
                if (n <= 0)
                        return false;
                c->out.off += (size_t) n;
                /* Progress: the write deadline starts again. */
                if (c->state == CONN_WRITING || c->state == CONN_RAW)
                        c->deadline_ms = now + WEB_WRITE_TIMEOUT_MS;
        }
        c->out.off = c->out.len = 0;
        if (c->state == CONN_RAW) {
                if (c->close_after_write)
                        return false;
                if (c->raw_ops->writable)
                        c->raw_ops->writable(c->raw_userdata, c);
                return true;
        }
        if (c->state != CONN_WRITING)
                return true;
        if (c->close_after_write) {
                if (c->peer_gone)
                        return false;
                conn_drain_begin(c, now);
                return true;
        }
        c->answered = true;
        conn_idle(c, now);
        if (buf_pending(&c->in) > 0) {
                /* A pipelined request already here: its clock runs now. */
                c->request_started = true;
                c->deadline_ms = now + WEB_REQUEST_TIMEOUT_MS;
                conn_process(srv, c);
        }
        return true;
}

/* A client that sent plain HTTP to the TLS port learns why in plain
 * HTTP: what it sent (already read in part by OpenSSL) is drained first
 * so that the close does not reset the connection before it reads. */
static void refuse_plain_http(int fd) {
        static const char body[] = "This server speaks HTTPS only: use an https:// address.\n";
        char resp[256];
        int n = snprintf(resp, sizeof(resp),
                         "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n"
                         "Connection: close\r\n\r\n%s",
                         sizeof(body) - 1, body);
        char drain[4096];
        for (int k = 0; k < 16 && recv(fd, drain, sizeof(drain), MSG_DONTWAIT) > 0; k++)
                ;
        (void) !send(fd, resp, (size_t) n, MSG_NOSIGNAL | MSG_DONTWAIT);
        (void) shutdown(fd, SHUT_WR);
}

/* One step of a TLS handshake; false when the connection is to be closed.
 * A handshake is bounded by the deadline a new client gets (the request
 * time) and costs the loop one non-blocking step per event, so a client
 * that sends half a ClientHello stalls nobody. */
static bool conn_handshake(struct web_server *srv, struct web_conn *c, uint64_t now) {
        c->tls_read_want = 0;
        int r = web_tls_handshake(c->ssl, &c->tls_read_want);
        if (r == 0)
                return true;
        if (r == -EBADMSG)
                refuse_plain_http(c->fd);
        if (r < 0)
                return false;
        c->tls_ready = true;
        c->tls_read_want = 0;
        /* Its first request has the whole request time from now. */
        c->deadline_ms = now + WEB_REQUEST_TIMEOUT_MS;
        /* The request may have come with the handshake's last flight. */
        conn_read(srv, c, now);
        return true;
}

/* Makes room for a new client, when every slot is taken: first by
 * closing the kept-alive connection that waited longest (its request was
 * answered and no other is under way; a browser opens another), else the
 * oldest of the clients that never showed a session and have no request
 * answered: an unfinished request, or nothing sent yet. Without the
 * second, anyone who can connect could hold all slots by sending one byte
 * on each and reconnecting every WEB_REQUEST_TIMEOUT_MS: the owner would
 * get 503. A client accepted but not yet read is not idle: counted so, it
 * was the first to go when the next client came, before its request was
 * read (t-web: the owner's request closed unanswered under such a flood).
 * Requests being answered, streams and consoles (all of a session) are
 * never closed for room. False when nothing can go. */
static bool evict_for_room(struct web_server *srv) {
        size_t idle = SIZE_MAX, partial = SIZE_MAX;
        /* A connection being drained was answered: the first to go. */
        for (size_t i = 0; i < srv->n_conns; i++)
                if (srv->conns[i]->state == CONN_DRAINING) {
                        conn_close(srv, i);
                        return true;
                }
        for (size_t i = 0; i < srv->n_conns; i++) {
                struct web_conn *c = srv->conns[i];
                if (c->state != CONN_READING)
                        continue;
                if (c->answered && buf_pending(&c->in) == 0 && !c->request_started) {
                        if (idle == SIZE_MAX || c->deadline_ms < srv->conns[idle]->deadline_ms)
                                idle = i;
                } else if (!c->trusted &&
                           (partial == SIZE_MAX || c->id < srv->conns[partial]->id))
                        partial = i;
        }
        size_t best = idle != SIZE_MAX ? idle : partial;
        if (best == SIZE_MAX)
                return false;
        conn_close(srv, best);
        return true;
}

void web_conn_set_trusted(struct web_conn *c) {
        c->trusted = true;
}

void web_server_end_owner(struct web_server *srv, uint64_t owner) {
        for (size_t i = 0; i < srv->n_conns; i++)
                if (srv->conns[i]->held && srv->conns[i]->owner == owner)
                        srv->conns[i]->ended = true;
}

int web_conn_hold(struct web_conn *c, uint64_t owner, size_t max_per_owner) {
        if (c->held)
                return 0;
        size_t total = 0, mine = 0;
        for (size_t i = 0; i < c->srv->n_conns; i++) {
                const struct web_conn *o = c->srv->conns[i];
                total += o->held;
                mine += o->held && o->owner == owner;
        }
        if (mine >= max_per_owner)
                return -EDQUOT;
        if (total >= WEB_MAX_HELD)
                return -EBUSY;
        c->held = true;
        c->owner = owner;
        return 0;
}

static void accept_clients(struct web_server *srv, uint64_t now) {
        for (int k = 0; k < 16; k++) {
                int fd = accept4(srv->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (fd < 0)
                        return;
                if (srv->n_conns >= WEB_MAX_CONNS && !evict_for_room(srv)) {
                        /* Every slot has a request under way or a stream:
                         * a short refusal, never a wait. */
                        static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                                                   "Connection: close\r\n\r\n";
                        /* (A TLS client would read it as a broken record:
                         * it just sees the close.) */
                        if (!srv->tls)
                                (void) !send(fd, busy, sizeof(busy) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
                        close(fd);
                        continue;
                }
                struct web_conn *c = calloc(1, sizeof(*c));
                if (!c) {
                        close(fd);
                        return;
                }
                c->srv = srv;
                c->fd = fd;
                /* Nagle would hold the short tail of a response or a
                 * console frame until the browser's delayed ACK, up to
                 * 40 ms (tools/bench/bench-web: the VNC relay at 0.47 of
                 * websockify's frame rate without this, 0.98 with it). */
                int one = 1;
                (void) setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                if (srv->tls && web_tls_conn_new(srv->tls, fd, &c->ssl) < 0) {
                        close(fd);
                        free(c);
                        return;
                }
                c->id = srv->next_id++;
                /* A new client gets the request time for its first
                 * request, not the idle time: it connected to send one. */
                conn_idle(c, now);
                c->deadline_ms = now + WEB_REQUEST_TIMEOUT_MS;
                srv->conns[srv->n_conns++] = c;
        }
}

/* Deadlines passed: a request that did not arrive in time gets 408 (and
 * the connection closes); an idle or stuck one closes. */
static void expire(struct web_server *srv, uint64_t now) {
        for (size_t i = 0; i < srv->n_conns;) {
                struct web_conn *c = srv->conns[i];
                if (c->ended) {
                        conn_close(srv, i);
                        continue;
                }
                /* A raw connection times out only with output stuck. */
                bool timed = c->state != CONN_HANDLING && c->state != CONN_STREAM &&
                             (c->state != CONN_RAW || buf_pending(&c->out) > 0) && now >= c->deadline_ms;
                if (timed && c->state == CONN_READING && c->request_started) {
                        refuse(c, 408);
                        /* One try to send it; its own deadline closes it next. */
                        c->deadline_ms = now + 1000;
                        c->state = CONN_WRITING;
                        if (!conn_write(srv, c, now)) {
                                conn_close(srv, i);
                                continue;
                        }
                } else if (timed) {
                        conn_close(srv, i);
                        continue;
                }
                i++;
        }
}

int web_server_run(struct web_server *srv) {
        struct pollfd pfds[1 + WEB_MAX_WATCHES + WEB_MAX_CONNS];
        struct web_conn *polled[WEB_MAX_CONNS];
        /* TLS input OpenSSL already holds, which poll() cannot report. */
        bool tls_pending[WEB_MAX_CONNS];
        uint64_t next_tick = 0;
        while (!srv->stop) {
                uint64_t now = vh_clock_ms();
                if (now >= next_tick) {
                        if (srv->ops->tick)
                                srv->ops->tick(srv->userdata, now);
                        next_tick = now + srv->tick_ms;
                }
                expire(srv, now);
                for (size_t i = 0; i < srv->n_conns;) {
                        struct web_conn *c = srv->conns[i];
                        if (c->state == CONN_RAW && c->raw_kick) {
                                c->raw_kick = false;
                                conn_raw_process(c);
                        }
                        /* Ended with nothing left to send: no POLLOUT
                         * would come to close it. */
                        if (c->state == CONN_RAW && c->close_after_write && buf_pending(&c->out) == 0) {
                                conn_close(srv, i);
                                continue;
                        }
                        i++;
                }
                size_t n = 0;
                int watch_fds[WEB_MAX_WATCHES];
                size_t n_watched = srv->n_watches;
                pfds[n++] = (struct pollfd) { .fd = srv->listen_fd, .events = POLLIN };
                for (size_t i = 0; i < n_watched; i++) {
                        watch_fds[i] = srv->watches[i].fd;
                        pfds[n++] = (struct pollfd) { .fd = srv->watches[i].fd, .events = srv->watches[i].events };
                }
                uint64_t wake = next_tick;
                size_t first_conn = n;
                for (size_t i = 0; i < srv->n_conns; i++) {
                        struct web_conn *c = srv->conns[i];
                        short ev = 0;
                        bool reads = conn_wants_read(c);
                        if (reads)
                                ev |= c->tls_read_want ? c->tls_read_want : POLLIN;
                        if (buf_pending(&c->out) > 0)
                                ev |= c->tls_write_want ? c->tls_write_want : POLLOUT;
                        tls_pending[n - first_conn] = reads && c->state != CONN_DRAINING && c->ssl && c->tls_ready &&
                                                      web_tls_pending(c->ssl) > 0;
                        if (tls_pending[n - first_conn])
                                wake = now;
                        if (c->state != CONN_HANDLING && c->state != CONN_STREAM &&
                            (c->state != CONN_RAW || buf_pending(&c->out) > 0))
                                wake = MIN(wake, c->deadline_ms);
                        polled[n - first_conn] = c;
                        pfds[n++] = (struct pollfd) { .fd = c->fd, .events = ev };
                }
                int timeout = wake > now ? (int) MIN(wake - now, (uint64_t) 60000) : 0;
                int k = poll(pfds, n, timeout);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                now = vh_clock_ms();
                /* By fd: a callback may add or remove watches. */
                for (size_t i = 0; i < n_watched; i++) {
                        short re = pfds[1 + i].revents;
                        if (!re)
                                continue;
                        for (size_t w = 0; w < srv->n_watches; w++) {
                                struct watch wt = srv->watches[w];
                                if (wt.fd != watch_fds[i])
                                        continue;
                                if (wt.ready_io)
                                        wt.ready_io(wt.userdata, wt.fd, re);
                                else
                                        wt.ready(wt.userdata, wt.fd);
                                break;
                        }
                }
                /* Connections by pointer: a handler may close none, but
                 * conn_close() reorders the array. */
                for (size_t p = first_conn; p < n; p++) {
                        struct web_conn *c = polled[p - first_conn];
                        short re = pfds[p].revents;
                        if (tls_pending[p - first_conn])
                                re |= POLLIN;
                        if (!re)
                                continue;
                        size_t idx = SIZE_MAX;
                        for (size_t i = 0; i < srv->n_conns; i++)
                                if (srv->conns[i] == c)
                                        idx = i;
                        if (idx == SIZE_MAX)
                                continue;
                        if (c->ssl && !c->tls_ready) {
                                if (!conn_handshake(srv, c, now) ||
                                    ((buf_pending(&c->out) > 0 || c->state == CONN_WRITING) && !conn_write(srv, c, now)))
                                        conn_close(srv, idx);
                                continue;
                        }
                        /* A TLS read may wait for POLLOUT (and then any
                         * event is worth a try: a read that cannot go on
                         * returns EAGAIN at once). */
                        if (c->ssl && c->tls_read_want == POLLOUT && conn_wants_read(c))
                                re |= POLLIN;
                        /* A paused raw connection still learns that its
                                 * client left (poll reports it regardless). */
                        if ((re & (POLLHUP | POLLERR)) || ((re & POLLIN) && !(c->state == CONN_RAW && c->raw_paused)))
                                conn_read(srv, c, now);
                        if ((buf_pending(&c->out) > 0 || c->state == CONN_WRITING) && !conn_write(srv, c, now)) {
                                conn_close(srv, idx);
                                continue;
                        }
                }
                /* Answers given outside a connection's own event (a worker
                 * finished, a broadcast) go out on the next turn's POLLOUT. */
                if (pfds[0].revents & POLLIN)
                        accept_clients(srv, now);
        }
        return 0;
}
