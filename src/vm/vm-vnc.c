/* vm/vm-vnc.c: VNC passwords through QMP and the one-client relay from
 * 127.0.0.1 to a VM's VNC unix socket. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/json-writer.h"
#include "base/macro.h"
#include "base/poll.h"
#include "base/process.h"
#include "base/strutil.h"
#include "qmp/qmp.h"
#include "vm/vm-vnc.h"

/* QMP serves one client at a time; wait this long for our turn. */
#define VNC_QMP_CONNECT_MS 5000
/* Bytes in flight per direction of the relay. */
#define RELAY_BUFFER (64 * 1024)

int vm_vnc_password_new(char ret[VM_VNC_PASSWORD_LEN + 1]) {
        static const char alphabet[] = "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
        const unsigned n = sizeof(alphabet) - 1;
        /* Bytes at or above the last multiple of n are dropped, so every
         * character is equally likely. */
        const unsigned limit = 256 / n * n;
        unsigned got = 0;
        while (got < VM_VNC_PASSWORD_LEN) {
                unsigned char buf[32];
                ssize_t k = getrandom(buf, sizeof(buf), 0);
                if (k < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                for (ssize_t i = 0; i < k && got < VM_VNC_PASSWORD_LEN; i++)
                        if (buf[i] < limit)
                                ret[got++] = alphabet[buf[i] % n];
        }
        ret[VM_VNC_PASSWORD_LEN] = '\0';
        return 0;
}

/* Runs set_password or expire_password (with 'value') on the VM's QMP. */
static int qmp_vnc_password(const char *name, const char *qmp_socket, const char *command, const char *key,
                            const char *value, struct vh_error *err) {
        struct json_writer w;
        json_writer_init(&w, false);
        json_object_begin(&w);
        json_kv_string(&w, "protocol", "vnc");
        json_kv_string(&w, key, value);
        json_object_end(&w);
        int r;
        _cleanup_free_ char *args = json_writer_finish(&w, &r);
        if (!args)
                return r;
        _cleanup_(qmp_freep) struct qmp_client *q = NULL;
        r = qmp_connect(qmp_socket, VNC_QMP_CONNECT_MS, &q, err);
        if (r == -ETIMEDOUT)
                return vh_error_set(err, r, "The QMP socket of VM %s (%s) did not answer: another client may hold it",
                                    name, qmp_socket);
        if (r < 0)
                return r;
        return qmp_execute(q, command, args, NULL, err);
}

int vm_vnc_start(const struct vm_def *def, const struct vm_paths *paths, struct vh_error *err) {
        if (def->vnc != VM_VNC_TCP)
                return 0;
        char pw[VM_VNC_PASSWORD_LEN + 2];
        int r = vm_vnc_password_new(pw);
        if (r < 0)
                return vh_error_set(err, r, "Cannot make a VNC password for VM %s: %s", def->name, strerror(-r));
        /* Stored first: a password QEMU has but nobody can read would lock
         * the owner out too. */
        pw[VM_VNC_PASSWORD_LEN] = '\n';
        r = write_file_atomic(paths->vnc_password, pw, VM_VNC_PASSWORD_LEN + 1, 0600);
        if (r < 0)
                return vh_error_set(err, r, "Cannot store the VNC password of VM %s in %s: %s", def->name,
                                    paths->vnc_password, strerror(-r));
        pw[VM_VNC_PASSWORD_LEN] = '\0';
        struct vh_error e = {};
        r = qmp_vnc_password(def->name, paths->qmp_socket, "set_password", "password", pw, &e);
        explicit_bzero(pw, sizeof(pw));
        if (r < 0)
                return vh_error_set(err, r, "Cannot set the VNC password of VM %s: %s", def->name,
                                    vh_error_message(&e, r));
        return 0;
}

/* The VM's definition and paths, checked to be running. */
static int running_vm(const struct vh_context *ctx, const char *name, struct vm_def **ret_def,
                      struct vm_paths *ret_paths, struct vh_error *err) {
        struct vh_error e = {};
        int r = vm_open_running(ctx, name, ret_paths, NULL, &e);
        if (r == -ESRCH)
                return vh_error_set(err, r, "%s; its VNC display exists only while it runs", e.msg);
        if (r < 0)
                return vh_error_set(err, r, "%s", vh_error_message(&e, r));
        r = vm_load(ctx, name, ret_def, err);
        if (r < 0)
                vm_paths_done(ret_paths);
        return r;
}

int vm_vnc_get_password(const struct vh_context *ctx, const char *name, char **ret, struct vh_error *err) {
        _cleanup_(vm_def_freep) struct vm_def *def = NULL;
        struct vm_paths p = {};
        int r = running_vm(ctx, name, &def, &p, err);
        if (r < 0)
                return r;
        if (def->vnc != VM_VNC_TCP)
                r = vh_error_set(err, -EINVAL, "VM %s has no TCP VNC display", name);
        else if ((r = read_one_line_file(p.vnc_password, ret)) < 0)
                r = vh_error_set(err, r, "Cannot read the VNC password of VM %s (%s): %s%s", name, p.vnc_password,
                                 strerror(-r),
                                 r == -ENOENT ? "; it was started without this TCP display (restart it)" : "");
        vm_paths_done(&p);
        return r;
}

struct vm_vnc_session {
        char *name;
        char *qmp_socket;
        char *vnc_socket;
        int listen_fd;
        uint16_t port;
        bool ended;
        char password[VM_VNC_PASSWORD_LEN + 1];
};

int vm_vnc_session_open(const struct vh_context *ctx, const char *name, struct vm_vnc_session **ret,
                        struct vh_error *err) {
        _cleanup_(vm_def_freep) struct vm_def *def = NULL;
        struct vm_paths p = {};
        int r = running_vm(ctx, name, &def, &p, err);
        if (r < 0)
                return r;
        _cleanup_(vm_vnc_session_freep) struct vm_vnc_session *s = calloc(1, sizeof(*s));
        if (s) {
                s->listen_fd = -1;
                s->ended = true; /* nothing to expire yet */
                s->name = strdup(name);
                s->qmp_socket = TAKE_PTR(p.qmp_socket);
                s->vnc_socket = TAKE_PTR(p.vnc_socket);
        }
        vm_paths_done(&p);
        if (!s || !s->name)
                return -ENOMEM;
        if (def->vnc == VM_VNC_NONE)
                return vh_error_set(err, -EINVAL, "VM %s has no VNC display (vnc = none)", name);
        if (def->vnc == VM_VNC_TCP)
                return vh_error_set(err, -EINVAL, "VM %s has a TCP VNC display (%s:%u), not a unix socket to relay to",
                                    name, def->vnc_host, def->vnc_display);

        /* 'vm set' changes the definition for the next start only. */
        if (access(s->vnc_socket, F_OK) < 0)
                return vh_error_set(err, -ENOENT, "VM %s has no VNC socket %s: it was started without vnc = unix "
                                    "(restart it)", name, s->vnc_socket);

        s->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (s->listen_fd < 0)
                return vh_error_set(err, negative_errno(), "Cannot make a TCP socket: %m");
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(sa);
        if (bind(s->listen_fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(s->listen_fd, 1) < 0 ||
            getsockname(s->listen_fd, (struct sockaddr *) &sa, &len) < 0)
                return vh_error_set(err, negative_errno(), "Cannot listen on 127.0.0.1 for VM %s's VNC: %m", name);
        s->port = ntohs(sa.sin_port);

        r = vm_vnc_password_new(s->password);
        if (r < 0)
                return vh_error_set(err, r, "Cannot make a VNC password: %s", strerror(-r));
        struct vh_error e = {};
        r = qmp_vnc_password(name, s->qmp_socket, "set_password", "password", s->password, &e);
        if (r < 0)
                return vh_error_set(err, r, "Cannot set the VNC password of VM %s: %s", name, vh_error_message(&e, r));
        s->ended = false;
        *ret = TAKE_PTR(s);
        return 0;
}

uint16_t vm_vnc_session_port(const struct vm_vnc_session *s) {
        return s->port;
}

const char *vm_vnc_session_password(const struct vm_vnc_session *s) {
        return s->password;
}

/* One direction of the relay: bytes read from 'from' wait in 'buf' until
 * 'to' took them all; only then is 'from' read again, so a slow reader
 * slows the writer instead of growing a buffer. */
struct relay_dir {
        int from, to;
        char *buf;
        size_t len, off;
};

/* Moves what it can without blocking. 1: the 'from' side closed, 0: more
 * to come, <0: an I/O error. */
static int relay_step(struct relay_dir *d, short revents_from, short revents_to) {
        if (d->len == 0 && (revents_from & (POLLIN | POLLHUP | POLLERR))) {
                ssize_t k = read(d->from, d->buf, RELAY_BUFFER);
                if (k == 0)
                        return 1;
                if (k < 0)
                        return errno == EAGAIN || errno == EINTR ? 0 : errno == ECONNRESET ? 1 : negative_errno();
                d->len = (size_t) k;
                d->off = 0;
                revents_to |= POLLOUT; /* try at once: usually there is room */
        }
        if (d->len > 0 && (revents_to & (POLLOUT | POLLERR | POLLHUP))) {
                ssize_t k = send(d->to, d->buf + d->off, d->len - d->off, MSG_NOSIGNAL);
                if (k < 0)
                        return errno == EAGAIN || errno == EINTR ? 0 : errno == EPIPE || errno == ECONNRESET ? 1
                                                                                                             : negative_errno();
                d->off += (size_t) k;
                if (d->off == d->len)
                        d->len = d->off = 0;
        }
        return 0;
}

/* Relays until either side closes (0) or 'cancel_fd' is readable. */
static int relay(struct vm_vnc_session *s, int client, int server, int cancel_fd, struct vh_error *err) {
        _cleanup_free_ char *up = malloc(RELAY_BUFFER), *down = malloc(RELAY_BUFFER);
        if (!up || !down)
                return -ENOMEM;
        struct relay_dir dirs[2] = {
                { .from = client, .to = server, .buf = up },
                { .from = server, .to = client, .buf = down },
        };
        for (;;) {
                /* fds: client, server, cancel */
                struct pollfd fds[3] = { { .fd = client }, { .fd = server }, { .fd = cancel_fd, .events = POLLIN } };
                for (int i = 0; i < 2; i++) {
                        struct pollfd *from = &fds[i], *to = &fds[1 - i];
                        if (dirs[i].len == 0)
                                from->events |= POLLIN;
                        else
                                to->events |= POLLOUT;
                }
                int n = poll(fds, cancel_fd >= 0 ? 3 : 2, -1);
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return vh_error_set(err, negative_errno(), "poll: %m");
                }
                if (cancel_fd >= 0 && fds[2].revents)
                        return -ECANCELED;
                for (int i = 0; i < 2; i++) {
                        int r = relay_step(&dirs[i], fds[i].revents, fds[1 - i].revents);
                        if (r < 0)
                                return vh_error_set(err, r, "VNC relay of VM %s: %s", s->name, strerror(-r));
                        /* A closed side ends the session; what it sent
                         * before was passed on already (a side is read
                         * again only once its last bytes were written). */
                        if (r > 0)
                                return 0;
                }
        }
}

int vm_vnc_session_run(struct vm_vnc_session *s, int accept_timeout_ms, int cancel_fd, struct vh_error *err) {
        if (s->listen_fd < 0)
                return vh_error_set(err, -EALREADY, "This VNC session of VM %s has had its client", s->name);
        uint64_t deadline = accept_timeout_ms >= 0 ? vh_deadline_after((uint64_t) accept_timeout_ms) : UINT64_MAX;
        _cleanup_close_ int client = -1;
        while (client < 0) {
                struct pollfd fds[2] = { { .fd = s->listen_fd, .events = POLLIN }, { .fd = cancel_fd, .events = POLLIN } };
                int n = vh_poll_fds_until(fds, cancel_fd >= 0 ? 2 : 1, deadline);
                if (n < 0)
                        return vh_error_set(err, n, "poll: %s", strerror(-n));
                if (cancel_fd >= 0 && fds[1].revents)
                        return -ECANCELED;
                if (n == 0)
                        return vh_error_set(err, -ETIMEDOUT, "No VNC client came to 127.0.0.1:%u within %d s", s->port,
                                            accept_timeout_ms / 1000);
                client = accept4(s->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
                if (client < 0 && errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
                        return vh_error_set(err, negative_errno(), "accept on 127.0.0.1:%u: %m", s->port);
        }
        /* One client per session: nobody else reaches the socket through
         * this port from now on, even knowing the password. */
        s->listen_fd = safe_close(s->listen_fd);

        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", s->vnc_socket);
        _cleanup_close_ int server = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (server < 0)
                return vh_error_set(err, negative_errno(), "Cannot make a unix socket: %m");
        if (connect(server, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return vh_error_set(err, negative_errno(), "Cannot connect to the VNC socket of VM %s (%s): %m", s->name,
                                    s->vnc_socket);
        if (fcntl(server, F_SETFL, O_NONBLOCK) < 0)
                return vh_error_set(err, negative_errno(), "fcntl: %m");
        return relay(s, client, server, cancel_fd, err);
}

int vm_vnc_session_end(struct vm_vnc_session *s, struct vh_error *err) {
        if (s->ended)
                return 0;
        s->listen_fd = safe_close(s->listen_fd);
        struct vh_error e = {};
        int r = qmp_vnc_password(s->name, s->qmp_socket, "expire_password", "time", "now", &e);
        /* A VM that stopped took its password along. */
        if (r == -ENOENT || r == -ECONNREFUSED)
                r = 0;
        if (r < 0)
                return vh_error_set(err, r, "Cannot expire the VNC password of VM %s: %s", s->name,
                                    vh_error_message(&e, r));
        s->ended = true;
        explicit_bzero(s->password, sizeof(s->password));
        return 0;
}

struct vm_vnc_session *vm_vnc_session_free(struct vm_vnc_session *s) {
        if (!s)
                return NULL;
        (void) vm_vnc_session_end(s, NULL);
        safe_close(s->listen_fd);
        free(s->name);
        free(s->qmp_socket);
        free(s->vnc_socket);
        free(s);
        return NULL;
}
