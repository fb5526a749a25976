/* web/web.h: vmhost's web dashboard: the routes, the security checks and
 * the VM list that 'vmhost web' serves over web/server.h.
 *
 *   GET  /?token=T            the printed URL: sets the session cookie, 303 to /
 *   GET  /, /app.js, ...      the page's static files (WEB_DIR), session needed
 *   GET  /api/session         {"csrf": "...", "version": "..."}
 *   GET  /api/vms             every host's VMs: 'vm list --all-hosts --json'
 *   GET  /api/events          server-sent events: "vms" with that list on each change
 *   POST /api/vms/NAME/start  (stop, kill, restart); DELETE /api/vms/NAME
 *
 * Every request but the token exchange needs the session cookie (401), a
 * Host header naming this server and an Origin, when sent, of this server
 * (403: DNS rebinding, cross-site requests); POST and DELETE need the
 * session's CSRF value in X-VMHost-CSRF (403). docs/web.md has the why. */
#pragma once

#include <stdint.h>

#include "vmhost/context.h"
#include "vmhost/error.h"

/* The token, the session ids and the CSRF values: 256 random bits in hex. */
#define WEB_SECRET_HEX 64
#define WEB_MAX_SESSIONS 32
/* Event streams and consoles one session may hold open at once (of
 * WEB_MAX_HELD in all): a few tabs, each with its stream and consoles,
 * or tools/bench/bench-web's 20 viewers of one serial console. */
#define WEB_MAX_HELD_PER_SESSION 24
/* Names given with --server-name, at most. */
#define WEB_MAX_SERVER_NAMES 8
/* A session ends after this long without a request, and this long after
 * its sign-in however busy: a working day, and a week. */
#define WEB_SESSION_IDLE_MS (12 * 3600 * 1000ull)
#define WEB_SESSION_LIFETIME_MS (7 * 24 * 3600 * 1000ull)
/* At most this many actions run at once; more get 503. */
#define WEB_MAX_ACTIONS 16
/* How often the registered hosts are asked while a page watches. */
#define WEB_REMOTE_INTERVAL_MS (10 * 1000)
/* How often this host's VMs are listed while a page watches, besides
 * every change inotify reports: a QEMU that dies changes no file. */
#define WEB_LOCAL_INTERVAL_MS 1000

struct web_app_options {
        int listen_fd;               /* taken over, from web_listen() */
        const char *host_port;       /* "127.0.0.1:8470": what Host and Origin must name */
        uint16_t port;
        const char *static_dir;      /* absolute: index.html, app.js, app.css */
        int stop_fd;                 /* readable when to stop (a signalfd); not closed */
        struct web_tls *tls;         /* taken over: serve HTTPS (web/tls.h); NULL: plain HTTP */
        const char *const *server_names; /* NULL-terminated, or NULL: more names Host may say (with the port) */
        uint64_t session_idle_ms;    /* 0: WEB_SESSION_IDLE_MS */
        uint64_t session_lifetime_ms; /* 0: WEB_SESSION_LIFETIME_MS */
        size_t serial_slow_viewer;   /* 0: WEB_SERIAL_SLOW_VIEWER (web/web-console.h) */
};

struct web_app;

int web_app_new(const struct vh_context *ctx, const struct web_app_options *opts, struct web_app **ret,
                struct vh_error *err);
/* The token of the URL to print (WEB_SECRET_HEX characters). */
const char *web_app_token(const struct web_app *app);
/* Serves until stop_fd is readable; then waits for the actions under way
 * (each bounded by the library's own timeouts) and returns. */
int web_app_run(struct web_app *app, struct vh_error *err);
struct web_app *web_app_free(struct web_app *app);
