/* cli/cmd-vm-relay.c: 'vm console-relay NAME vnc|serial', an internal
 * command of 'vmhost web' (not in the help): the web server of another
 * machine runs it here over ssh to reach a VM of this host's console. It
 * relays its stdin and stdout to the VM's VNC server (a client handed to
 * QEMU through QMP getfd and add_client, as the web server does for its
 * own VMs: nothing listens) or to its serial console (the chardev's unix
 * socket, one client at a time: while a relay holds it, 'vm console' and
 * another relay wait for it). The web server shares one serial relay
 * among all its viewers of the VM.
 *
 * Protocol: once connected, the line WEB_RELAY_READY on stdout; for a
 * serial console then the end of this boot's serial log (at most
 * WEB_SERIAL_SCROLLBACK bytes, the viewer's scrollback); then the
 * console's bytes both ways until either side ends. Errors before that
 * go to stderr, as every command's. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/log.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "web/web-console.h"
#include "web/web-jobs.h"

int vm_console_relay_cmd(const struct vh_context *ctx, int argc, char **argv);

static int write_all(int fd, const void *buf, size_t n) {
        const char *p = buf;
        while (n > 0) {
                ssize_t k = write(fd, p, n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return k < 0 ? negative_errno() : -EIO;
                p += k;
                n -= (size_t) k;
        }
        return 0;
}

/* The end of this boot's output from the serial log (what the console
 * said before we connected), as web-console.c gives a local viewer. */
static int send_scrollback(const char *log, uint64_t offset) {
        _cleanup_free_ uint8_t *buf = NULL;
        size_t got = web_serial_log_tail(log, offset, &buf);
        return write_all(STDOUT_FILENO, buf, got);
}

/* stdin to 'fd', 'fd' to stdout, until either ends. Blocking writes: this
 * process serves one console, and a slow side should slow the other. */
static int relay(int fd) {
        struct pollfd fds[2] = { { .fd = STDIN_FILENO, .events = POLLIN }, { .fd = fd, .events = POLLIN } };
        char buf[64 * 1024];
        for (;;) {
                if (poll(fds, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                for (int i = 0; i < 2; i++) {
                        if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR)))
                                continue;
                        ssize_t k = read(fds[i].fd, buf, sizeof(buf));
                        if (k < 0 && errno == EINTR)
                                continue;
                        /* The viewer left, or QEMU closed (the VM stopped). */
                        if (k <= 0)
                                return 0;
                        int r = write_all(i == 0 ? fd : STDOUT_FILENO, buf, (size_t) k);
                        if (r < 0)
                                return i == 0 ? 0 : r;
                }
        }
}

int vm_console_relay_cmd(const struct vh_context *ctx, int argc, char **argv) {
        if (argc != 3 || (!streq(argv[2], "vnc") && !streq(argv[2], "serial")))
                return log_error("vm console-relay: expected a VM name and 'vnc' or 'serial' (an internal command "
                                 "of 'vmhost web')"),
                       2;
        bool vnc = streq(argv[2], "vnc");
        struct vh_error err = {};
        int fd = -1;
        _cleanup_free_ char *log = NULL;
        uint64_t offset = 0;
        int r = vnc ? web_vnc_connect(ctx, argv[1], &fd, &err)
                    : web_serial_connect(ctx, argv[1], &fd, &log, &offset, &err);
        if (r < 0) {
                log_error("%s", vh_error_message(&err, r));
                return 1;
        }
        _cleanup_close_ int sock = fd;
        /* Connected non-blocking for the web server's loop; this relay waits. */
        (void) fcntl(sock, F_SETFL, fcntl(sock, F_GETFL) & ~O_NONBLOCK);
        static const char ready[] = WEB_RELAY_READY;
        r = write_all(STDOUT_FILENO, ready, sizeof(ready) - 1);
        if (r >= 0 && !vnc)
                r = send_scrollback(log, offset);
        if (r >= 0)
                r = relay(sock);
        /* A gone viewer (EPIPE) is the normal end, not worth a message. */
        if (r < 0 && r != -EPIPE) {
                log_error("vm console-relay %s: %s", argv[1], strerror(-r));
                return 1;
        }
        return 0;
}

/* 'vm web-query NAME snapshots|delete-plan', another internal command of
 * 'vmhost web' (not in the help): the JSON the web server gives its page
 * for a VM of its own (web_vm_query()), printed here for the web server
 * of another machine, which runs it over ssh for this host's VMs: the
 * snapshot list with each entry's fields (what 'vm snapshot list' prints
 * is its "text"), and what a delete would remove and keep
 * (vm_delete_plan()). */
int vm_web_query_cmd(const struct vh_context *ctx, int argc, char **argv);

int vm_web_query_cmd(const struct vh_context *ctx, int argc, char **argv) {
        if (argc != 3 || (!streq(argv[2], "snapshots") && !streq(argv[2], "delete-plan")))
                return log_error("vm web-query: expected a VM name and 'snapshots' or 'delete-plan' (an internal "
                                 "command of 'vmhost web')"),
                       2;
        struct vh_error err = {};
        _cleanup_free_ char *json = NULL;
        int r = web_vm_query(ctx, argv[1],
                             streq(argv[2], "snapshots") ? WEB_ACTION_SNAPSHOT_LIST : WEB_ACTION_DELETE_PLAN, &json,
                             &err);
        if (r < 0) {
                log_error("%s", vh_error_message(&err, r));
                return 1;
        }
        printf("%s\n", json);
        return fflush(stdout) == 0 ? 0 : 1;
}
