/* cli/cmd-web.c: 'vmhost web': the web dashboard (src/web/) in the
 * foreground, until Ctrl-C or SIGTERM; the VMs keep running. */
#include <errno.h>
#include <pthread.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/log.h"
#include "base/macro.h"
#include "base/process.h"
#include "base/strutil.h"
#include "cli/cli.h"
#include "config.h"
#include "web/server.h"
#include "web/tls.h"
#include "web/web-console.h"
#include "web/web.h"

#define WEB_DEFAULT_ADDRESS "127.0.0.1"
#define WEB_DEFAULT_PORT 8470
/* Without --listen, a taken 8470 moves on to the next free port of these
 * few; with --listen the port given is the port or an error. */
#define WEB_PORT_TRIES 10

static void usage(FILE *f) {
        fputs("Usage: vmhost web [--listen ADDRESS:PORT] [--server-name NAME]... [--tls-cert FILE --tls-key FILE]\n"
              "                  [--session-idle TIME] [--session-lifetime TIME]\n"
              "                  [--serial-slow-viewer SIZE] [--open]\n"
              "\n"
              "Serves the web dashboard: every VM of this host and of the registered hosts\n"
              "('vmhost host list'), with their state, updating by itself, and buttons to start,\n"
              "stop, kill, restart and delete them, and each running VM's consoles in the page:\n"
              "its screen (noVNC), its serial console (xterm.js) and a monitor box. Runs in the\n"
              "foreground until Ctrl-C; the VMs keep running. Prints one URL with a random\n"
              "token: open it in a browser. The token becomes a session cookie and leaves the\n"
              "address bar.\n"
              "\n"
              "Options:\n"
              "  --listen ADDRESS:PORT  where to listen (default 127.0.0.1:8470, or the next free\n"
              "                         port up to 8479 when it is taken; PORT 0: any free port).\n"
              "                         An address other than loopback is served over HTTPS only:\n"
              "                         with --tls-cert/--tls-key, else with a self-signed\n"
              "                         certificate made on first use (STATE/web/cert.pem, kept\n"
              "                         and reused) whose SHA-256 fingerprint is printed with the\n"
              "                         URL: compare it with what the browser shows. Not 0.0.0.0\n"
              "                         or ::: name the address the clients connect to.\n"
              "  --server-name NAME     a DNS name the clients use for a non-loopback --listen\n"
              "                         address (repeatable): requests must name this server in\n"
              "                         Host (and Origin), else 403; the address itself is\n"
              "                         always accepted, and localhost on loopback\n"
              "  --session-idle TIME    a session ends after this long without a request\n"
              "                         (default 12h; TIME: N, Ns, Nm, Nh or Nd)\n"
              "  --session-lifetime TIME\n"
              "                         and this long after its sign-in in any case (default 7d)\n"
              "  --serial-slow-viewer SIZE\n"
              "                         a serial console viewer (a browser tab) that falls this far\n"
              "                         behind the guest's output is disconnected, so that the\n"
              "                         others need not wait for it (default 1M; 64K to 4M)\n"
              "  --open                 also open the URL in the desktop's browser (xdg-open)\n"
              "  --tls-cert FILE        serve HTTPS (TLS 1.2 or later) with this certificate chain\n"
              "                         (PEM), also on loopback\n"
              "  --tls-key FILE         its private key (PEM, not encrypted; not readable by others)\n"
              "  -h, --help             this help\n"
              "\n"
              "From another machine, reach it through ssh instead:\n"
              "  ssh -L 8470:127.0.0.1:8470 HOST, then open the printed URL there.\n"
              "\n"
              "Example:\n"
              "  vmhost web\n"
              "  vmhost web --listen 127.0.0.1:9000 --open\n"
              "  vmhost web --listen 192.168.1.10:8470\n",
              f);
}

/* The directory of this binary, or NULL. */
static char *self_dir(void) {
        char self[4096];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n <= 0)
                return NULL;
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (!slash || slash == self)
                return NULL;
        *slash = '\0';
        return strdup(self);
}

/* The page's files: the directory named by the file vmhost.webdir beside
 * this binary (the build tree's, naming its source's web/), else the
 * installed DATA/web found relative to this binary, else the configured
 * one; as the guest builder is found (cmd-guest.c). */
static char *web_dir(void) {
        _cleanup_free_ char *dir = self_dir();
        if (dir) {
                _cleanup_free_ char *marker = strdup_printf("%s/vmhost.webdir", dir);
                _cleanup_free_ char *data = NULL;
                if (marker && read_one_line_file(marker, &data) >= 0 && data[0] == '/')
                        return TAKE_PTR(data);
#ifdef VMHOST_DATADIR_FROM_BINDIR
                char *p = strdup_printf("%s/%s/web", dir, VMHOST_DATADIR_FROM_BINDIR);
                if (p && access(p, R_OK | X_OK) == 0)
                        return p;
                free(p);
#endif
        }
        return strdup_printf("%s/web", VMHOST_DATADIR);
}

/* "ADDRESS:PORT", "[IPV6]:PORT". */
static int parse_listen(const char *s, char *addr, size_t size, long *ret_port) {
        const char *colon = strrchr(s, ':');
        if (!colon || colon == s)
                return -EINVAL;
        const char *a = s, *e = colon;
        if (s[0] == '[') {
                if (colon[-1] != ']')
                        return -EINVAL;
                a++;
                e--;
        }
        if ((size_t) (e - a) >= size || e == a)
                return -EINVAL;
        memcpy(addr, a, (size_t) (e - a));
        addr[e - a] = '\0';
        return parse_int_range(colon + 1, 0, 65535, ret_port);
}

/* "90", "90s", "15m", "12h", "7d": milliseconds, at least a second and
 * at most a year. */
static int parse_duration_ms(const char *s, uint64_t *ret) {
        static const struct {
                char suffix;
                long seconds;
        } units[] = { { 's', 1 }, { 'm', 60 }, { 'h', 3600 }, { 'd', 86400 } };
        char num[16];
        size_t n = strlen(s);
        long unit = 1;
        if (n > 0)
                for (size_t i = 0; i < ELEMENTSOF(units); i++)
                        if (s[n - 1] == units[i].suffix) {
                                unit = units[i].seconds;
                                n--;
                                break;
                        }
        if (n == 0 || n >= sizeof(num))
                return -EINVAL;
        memcpy(num, s, n);
        num[n] = '\0';
        long v;
        int r = parse_int_range(num, 1, 366L * 86400 / unit, &v);
        if (r < 0)
                return r;
        *ret = (uint64_t) v * (uint64_t) unit * 1000;
        return 0;
}

/* A DNS name as Host carries it: letters, digits, '-' and '.', no port. */
static bool server_name_is_valid(const char *s) {
        size_t n = strlen(s);
        return n > 0 && n <= 253 && strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.") == n &&
               s[0] != '.' && s[0] != '-';
}

static bool is_loopback(const char *addr) {
        return startswith(addr, "127.") || streq(addr, "::1");
}

static bool is_wildcard(const char *addr) {
        return streq(addr, "0.0.0.0") || streq(addr, "::") || streq(addr, "0");
}

/* The certificate: the one given, or for an address other than loopback
 * the self-made one of STATE/web; NULL in *ret for plain HTTP. */
static int web_tls_setup(const struct vh_context *ctx, const char *addr, const char *cert, const char *key,
                         struct web_tls **ret) {
        struct vh_error err = {};
        int r;
        *ret = NULL;
        if (cert) {
                r = web_tls_new(cert, key, ret, &err);
                if (r < 0)
                        return log_error("%s.", vh_error_message(&err, r)), r;
                return 0;
        }
        if (is_loopback(addr))
                return 0;
        _cleanup_free_ char *dir = strdup_printf("%s/web", ctx->state_dir);
        if (!dir)
                return log_error("Out of memory."), -ENOMEM;
        char host[256] = "";
        if (gethostname(host, sizeof(host) - 1) < 0)
                host[0] = '\0';
        bool made = false;
        r = web_tls_self_signed(dir, addr, host[0] ? host : NULL, ret, &made, &err);
        if (r < 0)
                return log_error("Cannot set up the self-signed certificate in %s: %s.", dir,
                                 vh_error_message(&err, r)),
                       r;
        if (made)
                log_info("Made a self-signed certificate for %s%s%s: %s/cert.pem (its key: key.pem, 0600). It is "
                         "reused next time; give --tls-cert and --tls-key to use your own.",
                         addr, host[0] ? " and " : "", host, dir);
        return 0;
}

int cmd_web(const struct vh_context *ctx, int argc, char **argv) {
        enum { OPT_LISTEN = 0x100, OPT_OPEN, OPT_TLS_CERT, OPT_TLS_KEY, OPT_SERVER_NAME, OPT_SESSION_IDLE,
               OPT_SESSION_LIFETIME, OPT_SERIAL_SLOW_VIEWER };
        static const struct option options[] = {
                { "listen", required_argument, NULL, OPT_LISTEN },
                { "open", no_argument, NULL, OPT_OPEN },
                { "tls-cert", required_argument, NULL, OPT_TLS_CERT },
                { "tls-key", required_argument, NULL, OPT_TLS_KEY },
                { "server-name", required_argument, NULL, OPT_SERVER_NAME },
                { "session-idle", required_argument, NULL, OPT_SESSION_IDLE },
                { "session-lifetime", required_argument, NULL, OPT_SESSION_LIFETIME },
                { "serial-slow-viewer", required_argument, NULL, OPT_SERIAL_SLOW_VIEWER },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        const char *listen_arg = NULL, *tls_cert = NULL, *tls_key = NULL;
        const char *server_names[WEB_MAX_SERVER_NAMES + 1] = {};
        size_t n_server_names = 0;
        uint64_t session_idle_ms = 0, session_lifetime_ms = 0, slow_viewer = 0;
        bool open_browser = false;
        int c;
        optind = 1;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h': usage(stdout); return 0;
                case OPT_LISTEN: listen_arg = optarg; break;
                case OPT_OPEN: open_browser = true; break;
                case OPT_TLS_CERT: tls_cert = optarg; break;
                case OPT_TLS_KEY: tls_key = optarg; break;
                case OPT_SERVER_NAME:
                        if (!server_name_is_valid(optarg))
                                return log_error("--server-name %s: expected a DNS name (letters, digits, '-' and "
                                                 "'.'), without a port.",
                                                 optarg),
                                       2;
                        if (n_server_names >= WEB_MAX_SERVER_NAMES)
                                return log_error("--server-name: at most %d names.", WEB_MAX_SERVER_NAMES), 2;
                        server_names[n_server_names++] = optarg;
                        break;
                case OPT_SESSION_IDLE:
                case OPT_SESSION_LIFETIME:
                        if (parse_duration_ms(optarg, c == OPT_SESSION_IDLE ? &session_idle_ms : &session_lifetime_ms) <
                            0)
                                return log_error("--%s %s: expected a time from 1s to 366d, e.g. 90s, 30m, 12h or "
                                                 "7d.",
                                                 c == OPT_SESSION_IDLE ? "session-idle" : "session-lifetime", optarg),
                                       2;
                        break;
                case OPT_SERIAL_SLOW_VIEWER:
                        if (parse_size(optarg, &slow_viewer) < 0 || slow_viewer < WEB_SERIAL_SLOW_VIEWER_MIN ||
                            slow_viewer > WEB_RAW_MAX_BACKLOG)
                                return log_error("--serial-slow-viewer %s: expected a size from 64K to 4M, e.g. "
                                                 "256K.",
                                                 optarg),
                                       2;
                        break;
                default: return 2;
                }
        if (optind < argc)
                return log_error("web: unexpected argument '%s'. See 'vmhost web --help'.", argv[optind]), 2;

        char addr[64] = WEB_DEFAULT_ADDRESS;
        long port = WEB_DEFAULT_PORT;
        if (listen_arg && parse_listen(listen_arg, addr, sizeof(addr), &port) < 0)
                return log_error("--listen %s: expected ADDRESS:PORT, e.g. 127.0.0.1:8470 or [::1]:8470", listen_arg),
                       2;
        if (!tls_cert != !tls_key)
                return log_error("--tls-cert and --tls-key go together: give the certificate and its key."), 2;
        /* The Host check and the certificate name one address: "every
         * address" is neither (and would hand the page to networks the
         * user did not think of). */
        if (is_wildcard(addr))
                return log_error("--listen %s: name the one address the clients connect to (e.g. this host's LAN "
                                 "address), not every address: the Host check and the certificate (--tls-cert, "
                                 "or the self-made one) name it.",
                                 listen_arg),
                       2;
        /* On loopback the names are fixed (the address and localhost): a
         * name of the user's that resolves to 127.0.0.1 is what a DNS
         * rebinding attack would make too. */
        if (n_server_names > 0 && is_loopback(addr))
                return log_error("--server-name %s: only for an address other than loopback (on %s, Host may name "
                                 "%s or localhost).",
                                 server_names[0], addr, addr),
                       2;
        struct web_tls *tls = NULL;
        if (web_tls_setup(ctx, addr, tls_cert, tls_key, &tls) < 0)
                return 1;
        char fingerprint[WEB_TLS_FINGERPRINT_MAX] = "";
        if (tls)
                web_tls_fingerprint(tls, fingerprint);

        _cleanup_free_ char *dir = web_dir();
        if (!dir || access(dir, R_OK | X_OK) < 0)
                return web_tls_free(tls), log_error("The page's files (%s) are missing: is vmhost installed completely?",
                                 dir ? dir : "web/"),
                       1;

        int fd = -1;
        uint16_t bound = 0;
        struct vh_error err = {};
        int tries = listen_arg ? 1 : WEB_PORT_TRIES;
        int r = -EADDRINUSE;
        for (int t = 0; t < tries; t++) {
                err = (struct vh_error) {};
                r = web_listen(addr, (uint16_t) (port + t), &fd, &bound, &err);
                if (r != -EADDRINUSE)
                        break;
                if (t + 1 < tries)
                        log_info("Port %ld is in use; trying %ld.", port + t, port + t + 1);
        }
        if (r < 0)
                return web_tls_free(tls), log_error("%s%s", vh_error_message(&err, r),
                                 r == -EADDRINUSE ? ". Choose another with --listen 127.0.0.1:PORT." : "."),
                       1;

        /* SIGINT and SIGTERM arrive on a descriptor the loop polls. They
         * are blocked before any thread starts, so every worker inherits
         * the mask and the signal is never delivered to one of them. */
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        sigset_t old;
        pthread_sigmask(SIG_BLOCK, &mask, &old);
        _cleanup_close_ int sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
        if (sfd < 0) {
                close(fd);
                web_tls_free(tls);
                return log_error_errno(-errno, "signalfd: %m"), 1;
        }
        char host_port[96];
        snprintf(host_port, sizeof(host_port), strchr(addr, ':') ? "[%s]:%u" : "%s:%u", addr, bound);
        struct web_app_options opts = {
                .listen_fd = fd,
                .host_port = host_port,
                .port = bound,
                .static_dir = dir,
                .stop_fd = sfd,
                .tls = tls,
                .server_names = server_names,
                .session_idle_ms = session_idle_ms,
                .session_lifetime_ms = session_lifetime_ms,
                .serial_slow_viewer = (size_t) slow_viewer,
        };
        struct web_app *app = NULL;
        r = web_app_new(ctx, &opts, &app, &err);
        if (r < 0)
                return log_error("Cannot start the web server: %s", vh_error_message(&err, r)), 1;

        _cleanup_free_ char *url = strdup_printf("%s://%s/?token=%s", tls ? "https" : "http", host_port,
                                                 web_app_token(app));
        printf("%s\n", url ? url : "(out of memory)");
        /* With the URL: the only way to know, on the first visit to a
         * self-signed server, that the certificate is this one. */
        if (tls)
                printf("TLS certificate SHA-256 fingerprint: %s\n", fingerprint);
        fflush(stdout);
        fprintf(stderr, "Serving the vmhost dashboard on %s (files from %s). Stop with Ctrl-C; VMs keep running.\n",
                host_port, dir);
        if (open_browser && url) {
                /* Before the loop runs: the browser's first request waits
                 * in the listen queue meanwhile. xdg-open returns once it
                 * has handed the URL on. */
                _cleanup_free_ char *xdg = find_executable(ctx, "xdg-open");
                char *xa[] = { xdg, url, NULL };
                struct vh_error oerr = {};
                if (!xdg)
                        log_warning("xdg-open is not installed (apt-get install xdg-utils); open the URL above by "
                                    "hand.");
                else if ((r = process_run(ctx, xa, 5000, 0, NULL, &oerr)) != 0)
                        log_warning("xdg-open failed (%s); open the URL above by hand.",
                                    r < 0 ? vh_error_message(&oerr, r) : "it said why above");
        }
        r = web_app_run(app, &err);
        web_app_free(app);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (r < 0)
                return log_error("%s", vh_error_message(&err, r)), 1;
        fprintf(stderr, "Stopped; the VMs keep running.\n");
        return 0;
}
