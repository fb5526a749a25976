/* web/web-console.c: the tickets and relays of web/web-console.h. */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/macro.h"
#include "base/strutil.h"
#include "web/web-console.h"
#include "web/websocket.h"

/* What one read from QEMU takes: one websocket message each. */
#define RELAY_CHUNK (64 * 1024)

struct ticket {
        char secret[WEB_TICKET_HEX + 1];
        char session[WEB_TICKET_HEX + 1];
        char host[VH_NAME_MAX + 1];      /* "" for this host */
        char name[VH_NAME_MAX + 1];
        enum web_console_kind kind;
        uint64_t expires_ms;
        bool used;
};

struct serial_console;

/* One websocket of a console. */
struct ws_client {
        struct web_consoles *cs;
        struct web_conn *conn;           /* NULL once closed */
        struct ws_reader reader;
        enum web_console_kind kind;
        char name[VH_NAME_MAX + 1];
        bool closing;                    /* our close frame went out: nothing more */
        /* VNC: */
        int fd;
        uint8_t *up;                     /* RFB bytes from the browser for QEMU */
        size_t up_len, up_off;
        /* Serial: */
        struct serial_console *serial;
        struct ws_client *next;
};

struct serial_console {
        struct web_consoles *cs;
        char host[VH_NAME_MAX + 1];      /* "" for this host; else fd is the relay's over ssh */
        char name[VH_NAME_MAX + 1];
        int fd;
        char *log;                       /* the serial log, for every viewer's scrollback */
        uint64_t log_offset;             /* where this QEMU's output starts in it */
        /* A remote VM's: no log here, so the last WEB_SERIAL_SCROLLBACK
         * bytes that came (the relay sends the log's end first) are kept
         * for the next viewer's scrollback. */
        uint8_t *recent;
        size_t recent_len;
        struct ws_client *viewers[WEB_MAX_CONNS];
        size_t n_viewers;
        uint8_t to_guest[WEB_CONSOLE_UP_MAX];
        size_t to_guest_len;
        struct serial_console *next;
};

struct web_consoles {
        struct web_server *srv;
        struct ticket tickets[WEB_MAX_TICKETS];
        struct ws_client *clients;
        struct serial_console *serials;
        uint64_t last_ping_ms;
        size_t slow_viewer;        /* web_consoles_set_slow_viewer() */
};

static bool secret_equal(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b);
        unsigned char d = la != lb;
        for (size_t i = 0; i < la && i < lb; i++)
                d |= (unsigned char) (a[i] ^ b[i]);
        return d == 0 && la == WEB_TICKET_HEX;
}

int web_consoles_new(struct web_server *srv, struct web_consoles **ret) {
        struct web_consoles *cs = calloc(1, sizeof(*cs));
        if (!cs)
                return -ENOMEM;
        cs->srv = srv;
        cs->slow_viewer = WEB_SERIAL_SLOW_VIEWER;
        *ret = cs;
        return 0;
}

/* ---- tickets ---- */

int web_console_ticket_new(struct web_consoles *cs, const char *session, const char *host, const char *name,
                           enum web_console_kind kind, uint64_t now, char ret[WEB_TICKET_HEX + 1]) {
        struct ticket *t = &cs->tickets[0];
        for (size_t i = 0; i < WEB_MAX_TICKETS; i++) {
                struct ticket *c = &cs->tickets[i];
                if (!c->secret[0] || c->used || c->expires_ms <= now) {
                        t = c;
                        break;
                }
                if (c->expires_ms < t->expires_ms)
                        t = c;
        }
        uint8_t b[WEB_TICKET_HEX / 2];
        size_t got = 0;
        while (got < sizeof(b)) {
                ssize_t k = getrandom(b + got, sizeof(b) - got, 0);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return negative_errno();
                got += (size_t) k;
        }
        for (size_t i = 0; i < sizeof(b); i++)
                snprintf(t->secret + 2 * i, 3, "%02x", b[i]);
        snprintf(t->session, sizeof(t->session), "%s", session);
        snprintf(t->host, sizeof(t->host), "%s", host);
        snprintf(t->name, sizeof(t->name), "%s", name);
        t->kind = kind;
        t->expires_ms = now + WEB_TICKET_TTL_MS;
        t->used = false;
        memcpy(ret, t->secret, sizeof(t->secret));
        return 0;
}

int web_console_ticket_take(struct web_consoles *cs, const char *ticket, const char *session, const char *host,
                            const char *name, enum web_console_kind kind, uint64_t now) {
        for (size_t i = 0; ticket && i < WEB_MAX_TICKETS; i++) {
                struct ticket *t = &cs->tickets[i];
                if (!t->secret[0] || !secret_equal(t->secret, ticket))
                        continue;
                bool ok = !t->used && now < t->expires_ms && streq(t->session, session) && streq(t->host, host) &&
                          streq(t->name, name) &&
                          t->kind == kind;
                /* Once shown, never again: a ticket that leaked through a
                 * failed attempt is dead too. */
                t->used = true;
                return ok ? 0 : -EACCES;
        }
        return -EACCES;
}

/* ---- websocket output ---- */

/* Sends one message; -ENOBUFS when the browser's backlog has no room. */
static int ws_send(struct ws_client *cl, uint8_t opcode, const void *data, size_t len) {
        if (!cl->conn || cl->closing)
                return -EPIPE;
        uint8_t head[WS_MAX_HEAD];
        size_t hl = ws_frame_head(head, true, opcode, len);
        if (web_conn_out_pending(cl->conn) + hl + len > WEB_RAW_MAX_BACKLOG)
                return -ENOBUFS;
        int r = web_conn_raw_write(cl->conn, head, hl);
        if (r >= 0 && len)
                r = web_conn_raw_write(cl->conn, data, len);
        return r;
}

/* Ends the websocket with 'code' and a reason the page can show. */
static void ws_close(struct ws_client *cl, uint16_t code, const char *reason) {
        if (!cl->conn || cl->closing)
                return;
        uint8_t p[WS_MAX_CONTROL];
        size_t rl = MIN(strlen(reason), sizeof(p) - 2);
        p[0] = (uint8_t) (code >> 8);
        p[1] = (uint8_t) code;
        memcpy(p + 2, reason, rl);
        /* A full backlog loses the close frame, not the closing. */
        (void) ws_send(cl, WS_OP_CLOSE, p, rl + 2);
        cl->closing = true;
        web_conn_raw_end(cl->conn);
}

/* ---- VNC ---- */

static void vnc_update_watch(struct ws_client *cl) {
        if (cl->fd < 0)
                return;
        short ev = 0;
        if (cl->conn && !cl->closing && web_conn_out_pending(cl->conn) < WEB_CONSOLE_HIGH_WATER)
                ev |= POLLIN;
        if (cl->up_len > cl->up_off)
                ev |= POLLOUT;
        web_server_watch_events(cl->cs->srv, cl->fd, ev);
}

static void vnc_ready(void *userdata, int fd, short revents) {
        struct ws_client *cl = userdata;
        if (revents & POLLOUT) {
                while (cl->up_off < cl->up_len) {
                        ssize_t k = write(fd, cl->up + cl->up_off, cl->up_len - cl->up_off);
                        if (k < 0 && errno == EINTR)
                                continue;
                        if (k < 0 && errno == EAGAIN)
                                break;
                        if (k <= 0) {
                                ws_close(cl, WS_CLOSE_GOING_AWAY, "The VM's VNC server closed");
                                web_server_unwatch(cl->cs->srv, fd);
                                close(fd);
                                cl->fd = -1;
                                return;
                        }
                        cl->up_off += (size_t) k;
                }
                if (cl->up_off == cl->up_len) {
                        cl->up_off = cl->up_len = 0;
                        if (cl->conn && !cl->closing)
                                web_conn_raw_pause(cl->conn, false);
                }
        }
        if (revents & (POLLIN | POLLHUP | POLLERR)) {
                uint8_t buf[RELAY_CHUNK];
                ssize_t k = read(fd, buf, sizeof(buf));
                if (k < 0 && (errno == EAGAIN || errno == EINTR))
                        k = -2;
                if (k == 0 || k == -1) {
                        /* The VM stopped, or QEMU dropped this client. */
                        ws_close(cl, WS_CLOSE_GOING_AWAY, "The VM's VNC server closed the connection");
                        web_server_unwatch(cl->cs->srv, fd);
                        close(fd);
                        cl->fd = -1;
                        return;
                }
                if (k > 0 && ws_send(cl, WS_OP_BINARY, buf, (size_t) k) < 0) {
                        ws_close(cl, WS_CLOSE_POLICY, "The browser does not keep up");
                        return;
                }
        }
        vnc_update_watch(cl);
}

/* Room for RFB bytes from the browser, for QEMU. */
static size_t vnc_room(struct ws_client *cl) {
        if (cl->up_off > 0) {
                memmove(cl->up, cl->up + cl->up_off, cl->up_len - cl->up_off);
                cl->up_len -= cl->up_off;
                cl->up_off = 0;
        }
        return WEB_CONSOLE_UP_MAX - cl->up_len;
}

/* Queued for QEMU; the caller checked the room. */
static void vnc_up(struct ws_client *cl, const uint8_t *data, size_t len) {
        if (cl->fd < 0)
                return;
        memcpy(cl->up + cl->up_len, data, len);
        cl->up_len += len;
        vnc_update_watch(cl);
}

/* ---- serial ---- */

static void serial_free(struct serial_console *sc) {
        struct web_consoles *cs = sc->cs;
        for (struct serial_console **p = &cs->serials; *p; p = &(*p)->next)
                if (*p == sc) {
                        *p = sc->next;
                        break;
                }
        if (sc->fd >= 0) {
                web_server_unwatch(cs->srv, sc->fd);
                close(sc->fd);
        }
        for (size_t i = 0; i < sc->n_viewers; i++)
                sc->viewers[i]->serial = NULL;
        free(sc->log);
        free(sc->recent);
        free(sc);
}

void web_consoles_set_slow_viewer(struct web_consoles *cs, size_t bytes) {
        cs->slow_viewer = bytes == 0 ? WEB_SERIAL_SLOW_VIEWER : MIN(MAX(bytes, WEB_SERIAL_SLOW_VIEWER_MIN),
                                                                     WEB_RAW_MAX_BACKLOG);
}

static void serial_update_watch(struct serial_console *sc) {
        web_server_watch_events(sc->cs->srv, sc->fd, (short) (POLLIN | (sc->to_guest_len ? POLLOUT : 0)));
}

/* Sends guest output to every viewer; a viewer too far behind goes. */
static void serial_fan_out(struct serial_console *sc, const uint8_t *data, size_t len) {
        for (size_t i = 0; i < sc->n_viewers; i++) {
                struct ws_client *v = sc->viewers[i];
                if (!v->conn || v->closing)
                        continue;
                /* Behind: what waits here and in the kernel's send
                 * buffer (which grows to megabytes for a client that
                 * does not read). */
                size_t behind = web_conn_out_pending(v->conn) + web_conn_kernel_pending(v->conn);
                if (behind + len > sc->cs->slow_viewer ||
                    ws_send(v, WS_OP_BINARY, data, len) < 0)
                        ws_close(v, WS_CLOSE_POLICY, "This viewer fell too far behind the serial console");
        }
}

static void serial_close_all(struct serial_console *sc, const char *why) {
        for (size_t i = 0; i < sc->n_viewers; i++)
                ws_close(sc->viewers[i], WS_CLOSE_GOING_AWAY, why);
}

static void serial_keep_recent(struct serial_console *sc, const uint8_t *data, size_t len) {
        /* One read is smaller than what is kept (serial_drain()). */
        assert(len <= WEB_SERIAL_SCROLLBACK);
        if (sc->recent_len + len > WEB_SERIAL_SCROLLBACK) {
                size_t drop = sc->recent_len + len - WEB_SERIAL_SCROLLBACK;
                memmove(sc->recent, sc->recent + drop, sc->recent_len - drop);
                sc->recent_len -= drop;
        }
        memcpy(sc->recent + sc->recent_len, data, len);
        sc->recent_len += len;
}

/* Reads what the guest printed; false when the console closed (the VM
 * stopped). */
static bool serial_drain(struct serial_console *sc) {
        for (int rounds = 0; rounds < 16; rounds++) {
                uint8_t buf[16384];
                ssize_t k = read(sc->fd, buf, sizeof(buf));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0 && errno == EAGAIN)
                        return true;
                if (k <= 0)
                        return false;
                serial_fan_out(sc, buf, (size_t) k);
                if (sc->recent)
                        serial_keep_recent(sc, buf, (size_t) k);
        }
        return true;
}

static void serial_ready(void *userdata, int fd, short revents) {
        struct serial_console *sc = userdata;
        if (revents & POLLOUT) {
                while (sc->to_guest_len > 0) {
                        ssize_t k = write(fd, sc->to_guest, sc->to_guest_len);
                        if (k < 0 && errno == EINTR)
                                continue;
                        if (k <= 0)
                                break;
                        memmove(sc->to_guest, sc->to_guest + k, sc->to_guest_len - (size_t) k);
                        sc->to_guest_len -= (size_t) k;
                }
                if (sc->to_guest_len == 0)
                        for (size_t i = 0; i < sc->n_viewers; i++)
                                if (sc->viewers[i]->conn && !sc->viewers[i]->closing)
                                        web_conn_raw_pause(sc->viewers[i]->conn, false);
        }
        if ((revents & (POLLIN | POLLHUP | POLLERR)) && !serial_drain(sc)) {
                serial_close_all(sc, "The VM's serial console closed (the VM stopped)");
                serial_free(sc);
                return;
        }
        serial_update_watch(sc);
}

static struct serial_console *serial_find(const struct web_consoles *cs, const char *host, const char *name) {
        for (struct serial_console *sc = cs->serials; sc; sc = sc->next)
                if (streq(sc->host, host) && streq(sc->name, name))
                        return sc;
        return NULL;
}

bool web_console_serial_open(const struct web_consoles *cs, const char *host, const char *name) {
        return serial_find(cs, host, name) != NULL;
}

size_t web_serial_log_tail(const char *log, uint64_t offset, uint8_t **ret) {
        *ret = NULL;
        _cleanup_close_ int fd = log ? open(log, O_RDONLY | O_CLOEXEC | O_NOFOLLOW) : -1;
        struct stat st;
        if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
                return 0;
        uint64_t size = (uint64_t) st.st_size;
        uint64_t from = size > WEB_SERIAL_SCROLLBACK ? size - WEB_SERIAL_SCROLLBACK : 0;
        if (offset <= size)
                from = MAX(from, offset);
        uint8_t *buf = malloc(WEB_SERIAL_SCROLLBACK);
        if (!buf)
                return 0;
        size_t got = 0, want = (size_t) (size - from);
        while (got < want) {
                ssize_t k = pread(fd, buf + got, want - got, (off_t) (from + got));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                got += (size_t) k;
        }
        *ret = buf;
        return got;
}

/* The end of this boot's serial output, for a new viewer. */
static void serial_scrollback(struct ws_client *cl, const char *log, uint64_t offset) {
        _cleanup_free_ uint8_t *buf = NULL;
        size_t got = web_serial_log_tail(log, offset, &buf);
        if (got)
                (void) ws_send(cl, WS_OP_BINARY, buf, got);
}

/* ---- the websocket's callbacks ---- */

static void client_free(struct ws_client *cl) {
        struct web_consoles *cs = cl->cs;
        for (struct ws_client **p = &cs->clients; *p; p = &(*p)->next)
                if (*p == cl) {
                        *p = cl->next;
                        break;
                }
        if (cl->fd >= 0) {
                web_server_unwatch(cs->srv, cl->fd);
                close(cl->fd);
        }
        struct serial_console *sc = cl->serial;
        if (sc) {
                for (size_t i = 0; i < sc->n_viewers; i++)
                        if (sc->viewers[i] == cl) {
                                sc->viewers[i] = sc->viewers[--sc->n_viewers];
                                break;
                        }
                /* The last viewer gone: the chardev is free for 'vm console'. */
                if (sc->n_viewers == 0)
                        serial_free(sc);
        }
        ws_reader_done(&cl->reader);
        free(cl->up);
        free(cl);
}

static size_t client_data(void *userdata, struct web_conn *c, uint8_t *data, size_t len) {
        struct ws_client *cl = userdata;
        size_t off = 0;
        while (off < len && !cl->closing) {
                struct ws_event ev;
                size_t used;
                uint16_t code = 0;
                /* A data frame is read only when what it completes fits in
                 * what waits for QEMU; else the connection pauses until
                 * QEMU took its bytes (backpressure to the browser). */
                struct ws_frame f;
                if (ws_frame_parse(data + off, len - off, true, WS_MAX_FRAME, &f, &code) == 0 && !(f.opcode & 0x8)) {
                        size_t room = cl->kind == WEB_CONSOLE_VNC ? vnc_room(cl)
                                      : cl->serial ? sizeof(cl->serial->to_guest) - cl->serial->to_guest_len
                                                   : SIZE_MAX;
                        size_t need = (size_t) f.payload_len + (cl->reader.in_message ? cl->reader.msg_len : 0);
                        if (need > room && need <= WS_MAX_MESSAGE) {
                                web_conn_raw_pause(c, true);
                                return off;
                        }
                }
                int k = ws_reader_next(&cl->reader, data + off, len - off, &used, &ev, &code);
                if (k < 0) {
                        ws_close(cl, code, code == WS_CLOSE_TOO_BIG ? "Message too big" : "Protocol error");
                        return len;
                }
                if (used == 0)
                        break;
                if (k == 1 && ev.kind == WS_EVENT_MESSAGE) {
                        if (cl->kind == WEB_CONSOLE_VNC)
                                vnc_up(cl, ev.data, ev.len);
                        else if (cl->serial) {
                                memcpy(cl->serial->to_guest + cl->serial->to_guest_len, ev.data, ev.len);
                                cl->serial->to_guest_len += ev.len;
                                serial_update_watch(cl->serial);
                        }
                } else if (k == 1 && ev.kind == WS_EVENT_PING) {
                        (void) ws_send(cl, WS_OP_PONG, ev.data, ev.len);
                } else if (k == 1 && ev.kind == WS_EVENT_CLOSE) {
                        ws_close(cl, ev.close_code == 1005 ? WS_CLOSE_NORMAL : ev.close_code, "");
                        return len;
                }
                off += used;
        }
        return off;
}

static void client_writable(void *userdata, struct web_conn *c) {
        struct ws_client *cl = userdata;
        (void) c;
        if (cl->kind == WEB_CONSOLE_VNC && cl->fd >= 0)
                vnc_update_watch(cl);
}

static void client_closed(void *userdata, struct web_conn *c) {
        struct ws_client *cl = userdata;
        (void) c;
        cl->conn = NULL;
        client_free(cl);
}

static const struct web_raw_ops client_ops = {
        .data = client_data,
        .writable = client_writable,
        .closed = client_closed,
};

int web_console_attach(struct web_consoles *cs, struct web_conn *c, const char *accept, bool binary,
                       enum web_console_kind kind, const char *host, const char *name, int fd,
                       const char *serial_log, uint64_t log_offset) {
        _cleanup_close_ int owned = fd;
        struct serial_console *sc = kind == WEB_CONSOLE_SERIAL ? serial_find(cs, host, name) : NULL;
        if (kind == WEB_CONSOLE_SERIAL && sc && sc->n_viewers >= ELEMENTSOF(sc->viewers))
                return -ENOSPC;
        if (kind == WEB_CONSOLE_VNC || !sc) {
                if (owned < 0)
                        return -EBADF;
        }
        struct ws_client *cl = calloc(1, sizeof(*cl));
        if (!cl)
                return -ENOMEM;
        cl->cs = cs;
        cl->kind = kind;
        cl->fd = -1;
        snprintf(cl->name, sizeof(cl->name), "%s", name);
        if (kind == WEB_CONSOLE_VNC) {
                cl->up = malloc(WEB_CONSOLE_UP_MAX);
                if (!cl->up || web_server_watch_io(cs->srv, owned, POLLIN, vnc_ready, cl) < 0) {
                        free(cl->up);
                        free(cl);
                        return -ENOMEM;
                }
                cl->fd = TAKE_FD(owned);
        } else if (!sc) {
                sc = calloc(1, sizeof(*sc));
                if (sc && host[0] && !(sc->recent = malloc(WEB_SERIAL_SCROLLBACK)))
                        sc = mfree(sc);
                if (!sc || web_server_watch_io(cs->srv, owned, POLLIN, serial_ready, sc) < 0) {
                        if (sc)
                                free(sc->recent);
                        free(sc);
                        free(cl);
                        return -ENOMEM;
                }
                sc->cs = cs;
                sc->fd = TAKE_FD(owned);
                sc->log = serial_log ? strdup(serial_log) : NULL;
                sc->log_offset = log_offset;
                snprintf(sc->host, sizeof(sc->host), "%s", host);
                snprintf(sc->name, sizeof(sc->name), "%s", name);
                sc->next = cs->serials;
                cs->serials = sc;
        }
        char head[512];
        snprintf(head, sizeof(head),
                 "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                 "Sec-WebSocket-Accept: %s\r\n%s\r\n",
                 accept, binary ? "Sec-WebSocket-Protocol: binary\r\n" : "");
        int r = web_conn_raw_begin(c, head, &client_ops, cl);
        if (r < 0) {
                if (cl->fd >= 0) {
                        web_server_unwatch(cs->srv, cl->fd);
                        close(cl->fd);
                }
                if (sc && sc->n_viewers == 0)
                        serial_free(sc);
                free(cl->up);
                free(cl);
                return r;
        }
        cl->conn = c;
        cl->next = cs->clients;
        cs->clients = cl;
        if (sc) {
                /* What is in the socket now is in the log too: passed to the
                 * viewers there are first, so the newcomer's scrollback
                 * and the live output meet without a gap. */
                if (!serial_drain(sc)) {
                        serial_close_all(sc, "The VM's serial console closed (the VM stopped)");
                        ws_close(cl, WS_CLOSE_GOING_AWAY, "The VM's serial console closed (the VM stopped)");
                        serial_free(sc);
                        return 0;
                }
                serial_scrollback(cl, sc->log, sc->log_offset);
                if (sc->recent_len)
                        (void) ws_send(cl, WS_OP_BINARY, sc->recent, sc->recent_len);
                cl->serial = sc;
                sc->viewers[sc->n_viewers++] = cl;
        }
        return 0;
}

void web_consoles_tick(struct web_consoles *cs, uint64_t now) {
        if (now < cs->last_ping_ms + WEB_CONSOLE_PING_MS)
                return;
        cs->last_ping_ms = now;
        for (struct ws_client *cl = cs->clients; cl; cl = cl->next)
                (void) ws_send(cl, WS_OP_PING, NULL, 0);
}

struct web_consoles *web_consoles_free(struct web_consoles *cs) {
        if (!cs)
                return NULL;
        /* The server closes the connections (client_closed frees each);
         * what is left here has none. */
        while (cs->clients) {
                struct ws_client *cl = cs->clients;
                if (cl->conn)
                        ws_close(cl, WS_CLOSE_GOING_AWAY, "The server stops");
                cl->conn = NULL;
                client_free(cl);
        }
        while (cs->serials)
                serial_free(cs->serials);
        free(cs);
        return NULL;
}
