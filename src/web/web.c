/* web/web.c: the application of web/web.h over the event loop of
 * web/server.h: sessions and the checks every request passes, the API,
 * the VM list kept current for the event streams, and the jobs
 * (web/web-jobs.h) that do the slow work off the loop. */
#include <dirent.h>
#include <errno.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/inotify.h>
#include <sys/random.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/json-writer.h"
#include "base/json.h"
#include "base/macro.h"
#include "base/paths.h"
#include "base/poll.h"
#include "base/strutil.h"
#include "host/host-def.h"
#include "vm/vm.h"
#include "web/server.h"
#include "web/web-console.h"
#include "web/web-jobs.h"
#include "web/web-static.h"
#include "web/web.h"
#include "web/tls.h"
#include "web/websocket.h"

#define TOPIC_VMS 1
#define KEEPALIVE_MS (15 * 1000)
#define PING ": ping\n\n"
/* The browser reconnects after a second when the stream breaks. */
#define RETRY "retry: 1000\n\n"

struct session {
        char id[WEB_SECRET_HEX + 1];
        char csrf[WEB_SECRET_HEX + 1];
        uint64_t created_ms, last_used_ms;
        uint64_t serial;                   /* names it to the server (web_conn_set_owner): ids are secrets */
};

struct web_app {
        const struct vh_context *ctx;
        struct web_server *srv;
        char token[WEB_SECRET_HEX + 1];
        char cookie_name[32];              /* per port: cookies do not tell ports apart */
        char *allowed_hosts[2 + 2 * WEB_MAX_SERVER_NAMES]; /* what Host may say (host_allowed) */
        int static_fd;
        int stop_fd;
        int notify[2];                     /* jobs write their pointer to [1], the loop reads [0] */
        int inotify_fd;
        struct session sessions[WEB_MAX_SESSIONS];
        size_t n_sessions;
        uint64_t next_session_serial;
        uint64_t session_idle_ms, session_lifetime_ms;

        char *local_json, *remote_json;    /* latest host objects ("" remote: no hosts) */
        char *list_json;                   /* the last list sent ("[...]") */
        bool local_running, remote_running, local_dirty;
        bool remote_dirty;                 /* an action on a remote VM ended during a listing: list again */
        uint64_t last_local_ms, last_remote_ms, last_ping_ms;
        bool remote_done;                  /* asked the hosts at least once */
        uint64_t waiting[WEB_MAX_CONNS];   /* GET /api/vms that wait for the next local list */
        size_t n_waiting;
        unsigned n_jobs, n_actions;        /* threads under way; actions among them */
        struct web_consoles *consoles;
        /* Set by the stop signal, read by the worker threads: their
         * library calls (start, stop, restart) stop waiting when it is. */
        atomic_bool stopping;
};

static int random_hex(char out[WEB_SECRET_HEX + 1]) {
        uint8_t b[WEB_SECRET_HEX / 2];
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
                snprintf(out + 2 * i, 3, "%02x", b[i]);
        return 0;
}

/* Compares secrets in a time that does not depend on where they differ. */
static bool secret_equal(const char *a, const char *b) {
        size_t la = strlen(a), lb = strlen(b);
        unsigned char d = la != lb;
        for (size_t i = 0; i < la && i < lb; i++)
                d |= (unsigned char) (a[i] ^ b[i]);
        return d == 0 && la == WEB_SECRET_HEX;
}

const char *web_app_token(const struct web_app *app) {
        return app->token;
}

/* ---- responses ---- */

static void respond_json(struct web_conn *c, int status, const char *json) {
        (void) web_conn_respond(c, status, "application/json", "Cache-Control: no-store\r\n", json, strlen(json),
                                false);
}

static void respond_error(struct web_conn *c, int status, const char *msg) {
        struct json_writer w;
        json_writer_init(&w, false);
        json_object_begin(&w);
        json_kv_string(&w, "error", msg);
        json_object_end(&w);
        int r;
        _cleanup_free_ char *s = json_writer_finish(&w, &r);
        respond_json(c, status, s ? s : "{\"error\": \"out of memory\"}");
}

/* 401 for the page: an HTML page that says how to get in. */
static void respond_unauthorized(struct web_conn *c, bool api) {
        static const char html[] =
                "<!doctype html><meta charset=utf-8><title>vmhost: sign in</title>"
                "<p>This vmhost web server needs the address it printed when it started "
                "(<code>http://127.0.0.1:PORT/?token=...</code>). Open that address again.</p>\n";
        if (api)
                respond_error(c, 401, "No valid session: open the URL that 'vmhost web' printed.");
        else
                (void) web_conn_respond(c, 401, "text/html; charset=utf-8", "Cache-Control: no-store\r\n", html,
                                        sizeof(html) - 1, false);
}

/* ---- sessions ---- */

static bool session_expired(const struct web_app *app, const struct session *s, uint64_t now) {
        return now - s->last_used_ms >= app->session_idle_ms || now - s->created_ms >= app->session_lifetime_ms;
}

static void session_drop(struct web_app *app, size_t i) {
        /* What it holds open ends with it: an event stream would go on
         * telling a signed-out browser about the VMs, a console go on
         * showing and taking keys. */
        web_server_end_owner(app->srv, app->sessions[i].serial);
        /* The secrets do not linger in the freed slot. */
        app->sessions[i] = app->sessions[--app->n_sessions];
        memset(&app->sessions[app->n_sessions], 0, sizeof(app->sessions[0]));
}

/* The request's session, NULL when it has none or its session expired
 * (idle too long, or older than its lifetime): that one is dropped, and
 * the caller answers 401 as for no session at all. */
static struct session *session_find(struct web_app *app, const struct http_request *req) {
        char id[WEB_SECRET_HEX + 1];
        if (http_cookie_get(http_request_header(req, "Cookie"), app->cookie_name, id, sizeof(id)) < 0)
                return NULL;
        size_t found = SIZE_MAX;
        for (size_t i = 0; i < app->n_sessions; i++)
                if (secret_equal(app->sessions[i].id, id))
                        found = i;
        if (found == SIZE_MAX)
                return NULL;
        if (session_expired(app, &app->sessions[found], vh_clock_ms())) {
                session_drop(app, found);
                return NULL;
        }
        return &app->sessions[found];
}

static struct session *session_new(struct web_app *app) {
        uint64_t now = vh_clock_ms();
        for (size_t i = 0; i < app->n_sessions;)
                if (session_expired(app, &app->sessions[i], now))
                        session_drop(app, i);
                else
                        i++;
        struct session *s;
        if (app->n_sessions < WEB_MAX_SESSIONS)
                s = &app->sessions[app->n_sessions++];
        else {
                /* The least recently used one makes room. */
                s = &app->sessions[0];
                for (size_t i = 1; i < app->n_sessions; i++)
                        if (app->sessions[i].last_used_ms < s->last_used_ms)
                                s = &app->sessions[i];
                web_server_end_owner(app->srv, s->serial);
        }
        if (random_hex(s->id) < 0 || random_hex(s->csrf) < 0) {
                session_drop(app, (size_t) (s - app->sessions));
                return NULL;
        }
        s->created_ms = s->last_used_ms = now;
        s->serial = ++app->next_session_serial;
        return s;
}

/* An event stream or a console holds its connection for as long as it is
 * open and is never closed to make room: counted per session and in all
 * (web_conn_hold()), so that one session, or a few, cannot take every
 * slot and lock requests out. False when refused (answered here). */
static bool session_hold(struct web_conn *c, const struct session *s) {
        int r = web_conn_hold(c, s->serial, WEB_MAX_HELD_PER_SESSION);
        if (r >= 0)
                return true;
        char m[192];
        if (r == -EDQUOT)
                snprintf(m, sizeof(m), "This session has %d event streams and consoles open already: close one "
                         "(another tab, or a console) first.", WEB_MAX_HELD_PER_SESSION);
        else
                snprintf(m, sizeof(m), "The server has %d event streams and consoles open already: close one first.",
                         WEB_MAX_HELD);
        respond_error(c, r == -EDQUOT ? 429 : 503, m);
        return false;
}

/* ---- the VM list ---- */

static void start_job(struct web_app *app, struct web_job *job) {
        job->ctx = app->ctx;
        job->notify_fd = app->notify[1];
        job->stopping = &app->stopping;
        if (web_job_start(job) < 0) {
                web_job_free(job);
                return;
        }
        app->n_jobs++;
}

/* An action or request job: counted against WEB_MAX_ACTIONS while it
 * runs; a thread that cannot start is the request's 500. */
static void start_counted_job(struct web_app *app, struct web_conn *c, struct web_job *job) {
        unsigned before = app->n_jobs;
        start_job(app, job);
        if (app->n_jobs == before)
                respond_error(c, 500, "Cannot start a thread for the request.");
        else
                app->n_actions++;
}

static void start_local_list(struct web_app *app) {
        if (app->local_running)
                return;
        struct web_job *job = calloc(1, sizeof(*job));
        if (!job)
                return;
        job->kind = WEB_JOB_LIST_LOCAL;
        unsigned before = app->n_jobs;
        app->local_running = true;
        app->local_dirty = false;
        start_job(app, job);
        if (app->n_jobs == before)
                app->local_running = false;
}

static void start_remote_list(struct web_app *app) {
        if (app->remote_running)
                return;
        struct web_job *job = calloc(1, sizeof(*job));
        if (!job)
                return;
        job->kind = WEB_JOB_LIST_REMOTE;
        unsigned before = app->n_jobs;
        app->remote_running = true;
        app->remote_dirty = false;
        start_job(app, job);
        if (app->n_jobs == before)
                app->remote_running = false;
}

/* The list as 'vm list --all-hosts --json' has it: this host first. */
static char *compose_list(struct web_app *app) {
        const char *remote = app->remote_json ? app->remote_json : "";
        return strdup_printf("[%s%s%s]", app->local_json, remote[0] ? "," : "", remote);
}

static void list_changed(struct web_app *app) {
        if (!app->local_json)
                return;
        _cleanup_free_ char *list = compose_list(app);
        if (!list)
                return;
        for (size_t i = 0; i < app->n_waiting; i++) {
                struct web_conn *c = web_server_conn(app->srv, app->waiting[i]);
                if (c)
                        respond_json(c, 200, list);
        }
        app->n_waiting = 0;
        if (app->list_json && streq(app->list_json, list))
                return;
        _cleanup_free_ char *event = strdup_printf("event: vms\ndata: %s\n\n", list);
        if (event)
                web_server_broadcast(app->srv, TOPIC_VMS, event, strlen(event));
        free(app->list_json);
        app->list_json = TAKE_PTR(list);
}

/* Adds inotify watches on STATE/vms, RUN/vms and each VM's directory in
 * them (inotify gives the same watch for a path added twice, so this
 * runs after every listing and picks up new VMs). Only entries appearing,
 * going and being renamed into place: vm.conf and the runtime state are
 * written by rename, QMP sockets and pid files appear and go. Not opens or
 * closes, which the listing itself does (its locks). */
static void watch_dirs(struct web_app *app) {
        if (app->inotify_fd < 0)
                return;
        const uint32_t mask = IN_CREATE | IN_DELETE | IN_MOVED_TO | IN_MOVED_FROM | IN_ONLYDIR;
        const char *tops[] = { app->ctx->state_dir, app->ctx->runtime_dir };
        for (size_t t = 0; t < ELEMENTSOF(tops); t++) {
                _cleanup_free_ char *vms = strdup_printf("%s/vms", tops[t]);
                if (!vms || inotify_add_watch(app->inotify_fd, vms, mask) < 0)
                        continue;
                DIR *d = opendir(vms);
                if (!d)
                        continue;
                struct dirent *de;
                unsigned n = 0;
                while ((de = readdir(d)) && n++ < 4096) {
                        if (de->d_type != DT_DIR || !name_is_valid(de->d_name))
                                continue;
                        _cleanup_free_ char *sub = strdup_printf("%s/%s", vms, de->d_name);
                        if (sub)
                                (void) inotify_add_watch(app->inotify_fd, sub, mask);
                }
                closedir(d);
        }
}

static void inotify_ready(void *userdata, int fd) {
        struct web_app *app = userdata;
        char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
        while (read(fd, buf, sizeof(buf)) > 0)
                ;
        app->local_dirty = true;
}

static void job_done(struct web_app *app, struct web_job *job) {
        app->n_jobs--;
        switch (job->kind) {
        case WEB_JOB_LIST_LOCAL:
                app->local_running = false;
                app->last_local_ms = vh_clock_ms();
                if (job->result) {
                        free(app->local_json);
                        app->local_json = TAKE_PTR(job->result);
                }
                watch_dirs(app);
                list_changed(app);
                break;
        case WEB_JOB_LIST_REMOTE:
                app->remote_running = false;
                app->remote_done = true;
                app->last_remote_ms = vh_clock_ms();
                if (job->result) {
                        free(app->remote_json);
                        app->remote_json = TAKE_PTR(job->result);
                }
                list_changed(app);
                /* This listing may have asked the host before the action
                 * changed it. */
                if (app->remote_dirty)
                        start_remote_list(app);
                break;
        case WEB_JOB_MONITOR:
        case WEB_JOB_KEYS:
        case WEB_JOB_TYPE: {
                app->n_actions--;
                struct web_conn *c = web_server_conn(app->srv, job->conn_id);
                if (c)
                        respond_json(c, job->status ? job->status : 500,
                                     job->result ? job->result : "{\"error\": \"out of memory\"}");
                break;
        }
        case WEB_JOB_SCREENSHOT: {
                app->n_actions--;
                struct web_conn *c = web_server_conn(app->srv, job->conn_id);
                if (c && job->status == 200)
                        (void) web_conn_respond(c, 200, "image/png", "Cache-Control: no-store\r\n", job->result,
                                                job->result_len, false);
                else if (c)
                        respond_json(c, job->status ? job->status : 500,
                                     job->result ? job->result : "{\"error\": \"out of memory\"}");
                break;
        }
        case WEB_JOB_CONSOLE: {
                app->n_actions--;
                struct web_conn *c = web_server_conn(app->srv, job->conn_id);
                if (c && job->status == 200) {
                        int fd = TAKE_FD(job->console_fd);
                        int r = web_console_attach(app->consoles, c, job->ws_accept, job->ws_protocol_binary,
                                                   job->console_kind, job->host, job->name, fd, job->serial_log,
                                                   job->serial_log_offset);
                        if (r < 0)
                                respond_error(c, 503, "Cannot attach the console.");
                } else if (c)
                        respond_json(c, job->status ? job->status : 500,
                                     job->result ? job->result : "{\"error\": \"out of memory\"}");
                break;
        }
        case WEB_JOB_ACTION: {
                app->n_actions--;
                struct web_conn *c = web_server_conn(app->srv, job->conn_id);
                if (c)
                        respond_json(c, job->status ? job->status : 500,
                                     job->result ? job->result : "{\"error\": \"out of memory\"}");
                /* What it changed shows at once: a remote VM's host is
                 * asked again (all registered hosts, in one listing). */
                if (job->host[0]) {
                        app->remote_dirty = true;
                        start_remote_list(app);
                } else
                        app->local_dirty = true;
                break;
        }
        }
        web_job_free(job);
}

static void notify_ready(void *userdata, int fd) {
        struct web_app *app = userdata;
        struct web_job *job;
        while (read(fd, &job, sizeof(job)) == (ssize_t) sizeof(job))
                job_done(app, job);
}

static void stop_ready(void *userdata, int fd) {
        struct web_app *app = userdata;
        /* Consumed, so that it is not delivered again when the program
         * unblocks it (a signalfd's record is 128 bytes). */
        char buf[128];
        (void) !read(fd, buf, sizeof(buf));
        atomic_store(&app->stopping, true);
        web_server_stop(app->srv);
}

static void tick(void *userdata, uint64_t now) {
        struct web_app *app = userdata;
        /* A session ends on time, not at its next request: its streams
         * and consoles with it. */
        for (size_t i = 0; i < app->n_sessions;)
                if (session_expired(app, &app->sessions[i], now))
                        session_drop(app, i);
                else
                        i++;
        web_consoles_tick(app->consoles, now);
        bool watched = web_server_stream_count(app->srv, TOPIC_VMS) > 0 || app->n_waiting > 0;
        if (!watched)
                return;
        if (app->local_dirty || now >= app->last_local_ms + WEB_LOCAL_INTERVAL_MS)
                start_local_list(app);
        if (!app->remote_done || now >= app->last_remote_ms + WEB_REMOTE_INTERVAL_MS)
                start_remote_list(app);
        if (now >= app->last_ping_ms + KEEPALIVE_MS) {
                /* A comment line keeps proxies and the browser from
                 * taking a quiet stream for a dead one. */
                web_server_broadcast(app->srv, TOPIC_VMS, PING, sizeof(PING) - 1);
                app->last_ping_ms = now;
        }
}

/* ---- routes ---- */

/* The VM name that starts 'rest' (up to its next '/', in '*ret_slash', or
 * NULL at the end) into 'name': true; a 400 answered when it is not a
 * valid name. */
static bool path_vm_name(struct web_conn *c, const char *rest, char name[VH_NAME_MAX + 1], const char **ret_slash) {
        const char *slash = strchr(rest, '/');
        size_t n = slash ? (size_t) (slash - rest) : strlen(rest);
        if (n == 0 || n > VH_NAME_MAX) {
                respond_error(c, 400, "Invalid VM name: 1 to 32 letters, digits, '-' or '_'.");
                return false;
        }
        memcpy(name, rest, n);
        name[n] = '\0';
        if (!name_is_valid(name)) {
                respond_error(c, 400, "Invalid VM name: 1 to 32 letters, digits, '-' or '_'.");
                return false;
        }
        *ret_slash = slash;
        return true;
}

static void api_action(struct web_app *app, struct web_conn *c, const char name[VH_NAME_MAX + 1], const char *verb) {
        enum web_action action;
        if (web_action_from_string(verb, &action) < 0 || action == WEB_ACTION_DELETE) {
                respond_error(c, 404, "Unknown action: expected start, stop, kill or restart.");
                return;
        }
        if (app->n_actions >= WEB_MAX_ACTIONS) {
                respond_error(c, 503, "Too many actions under way; try again when one has finished.");
                return;
        }
        struct web_job *job = calloc(1, sizeof(*job));
        if (!job) {
                respond_error(c, 500, "Out of memory.");
                return;
        }
        job->kind = WEB_JOB_ACTION;
        job->action = action;
        snprintf(job->name, sizeof(job->name), "%s", name);
        job->conn_id = web_conn_id(c);
        start_counted_job(app, c, job);
}

static void api_session(struct web_conn *c, const struct session *s) {
        struct json_writer w;
        json_writer_init(&w, false);
        json_object_begin(&w);
        json_kv_string(&w, "csrf", s->csrf);
        json_kv_string(&w, "version", VMHOST_VERSION);
        json_object_end(&w);
        int r;
        _cleanup_free_ char *body = json_writer_finish(&w, &r);
        respond_json(c, 200, body ? body : "{}");
}

static void api_events(struct web_app *app, struct web_conn *c) {
        if (web_conn_stream_begin(c, TOPIC_VMS, "text/event-stream") < 0)
                return;
        (void) web_conn_stream_write(c, RETRY, sizeof(RETRY) - 1);
        if (app->list_json) {
                _cleanup_free_ char *event = strdup_printf("event: vms\ndata: %s\n\n", app->list_json);
                if (event)
                        (void) web_conn_stream_write(c, event, strlen(event));
        }
        start_local_list(app);
}

/* Starts a job that answers 'c' itself, counted with the actions. */
static void start_conn_job(struct web_app *app, struct web_conn *c, struct web_job *job) {
        if (app->n_actions >= WEB_MAX_ACTIONS) {
                web_job_free(job);
                respond_error(c, 503, "Too many actions under way; try again when one has finished.");
                return;
        }
        job->conn_id = web_conn_id(c);
        start_counted_job(app, c, job);
}

static struct web_job *job_new(enum web_job_kind kind, const char *name) {
        struct web_job *job = calloc(1, sizeof(*job));
        if (!job)
                return NULL;
        job->kind = kind;
        job->console_fd = -1;
        snprintf(job->name, sizeof(job->name), "%s", name);
        return job;
}

static int console_kind_from_string(const char *s, enum web_console_kind *ret) {
        if (s && streq(s, "vnc"))
                *ret = WEB_CONSOLE_VNC;
        else if (s && streq(s, "serial"))
                *ret = WEB_CONSOLE_SERIAL;
        else
                return -EINVAL;
        return 0;
}

/* What the page sends is a flat object of a few short members (a path
 * at most, a list of 8 key names): more is refused before it is built. */
static const struct json_limits body_limits = {
        .max_depth = 2,
        .max_bytes = 2 * PATH_MAX,
        .max_string = PATH_MAX,
        .max_elements = 16,
        .max_values = 64,
};

/* The body as a JSON object, or an answer saying why not. */
static struct json_value *body_object(struct web_conn *c, const char *body) {
        struct json_value *v = NULL;
        struct vh_error err = {};
        int r = json_parse(body, strlen(body), &body_limits, &v, &err);
        if (r < 0 || v->type != JSON_OBJECT) {
                json_value_free(v);
                _cleanup_free_ char *m = strdup_printf("The request body must be a JSON object%s%s.",
                                                       r < 0 ? ": " : "", r < 0 ? vh_error_message(&err, r) : "");
                respond_error(c, 400, m ? m : "The request body must be a JSON object.");
                return NULL;
        }
        return v;
}

/* Starts action 'action' on VM 'name' of 'host' ("" this one) with
 * argument 'text' (copied; may be NULL), answered when it is done. */
static void start_action(struct web_app *app, struct web_conn *c, const char *host, const char *name,
                         enum web_action action, const char *text) {
        struct web_job *job = job_new(WEB_JOB_ACTION, name);
        if (job)
                snprintf(job->host, sizeof(job->host), "%s", host);
        if (job && text && !(job->text = strdup(text)))
                job = web_job_free(job);
        if (!job) {
                respond_error(c, 500, "Out of memory.");
                return;
        }
        job->action = action;
        start_conn_job(app, c, job);
}

/* A string member of at most 'max' bytes: 1 when given, 0 when absent or
 * null, -EINVAL (answered) when it is something else. */
static int body_string(struct web_conn *c, const struct json_value *v, const char *key, size_t max,
                       const char **ret) {
        const struct json_value *m = json_object_get(v, key);
        if (!m || m->type == JSON_NULL)
                return 0;
        if (m->type != JSON_STRING || m->string.len == 0 || m->string.len > max) {
                _cleanup_free_ char *e = strdup_printf("\"%s\" must be a string of 1 to %zu bytes.", key, max);
                respond_error(c, 400, e ? e : "Bad member of the request body.");
                return -EINVAL;
        }
        *ret = m->string.s;
        return 1;
}

/* POST /api/vms {"name", "base", "memory", "cpus", "net"}: 'vm create
 * NAME --base BASE ...' (web-jobs.c: create_vm()). */
static void api_create(struct web_app *app, struct web_conn *c, const char *body) {
        _cleanup_(json_value_freep) struct json_value *v = body_object(c, body);
        if (!v)
                return;
        const char *name = NULL, *base = NULL, *memory = "", *cpus = "", *net = "";
        if (body_string(c, v, "name", VH_NAME_MAX, &name) < 0 || body_string(c, v, "base", PATH_MAX - 1, &base) < 0 ||
            body_string(c, v, "memory", WEB_CREATE_FIELD_MAX, &memory) < 0 ||
            body_string(c, v, "cpus", WEB_CREATE_FIELD_MAX, &cpus) < 0 ||
            body_string(c, v, "net", WEB_CREATE_FIELD_MAX, &net) < 0)
                return;
        if (!name || !name_is_valid(name)) {
                _cleanup_free_ char *m = strdup_printf("Invalid VM name '%s': use 1-%d letters, digits, '-' or '_', "
                                                       "starting with a letter or digit.", name ? name : "", VH_NAME_MAX);
                respond_error(c, 400, m ? m : "Invalid VM name.");
                return;
        }
        if (!base) {
                respond_error(c, 400, "Expected {\"name\": ..., \"base\": \"/path/to/base.qcow2\"}: the base image "
                                      "the new VM's overlay sits on.");
                return;
        }
        if (base[0] != '/') {
                respond_error(c, 400, "The base image must be an absolute path: the server has no working directory of "
                                      "yours.");
                return;
        }
        for (const struct json_member *m = v->object.members; m < v->object.members + v->object.n; m++)
                if (!streq(m->key, "name") && !streq(m->key, "base") && !streq(m->key, "memory") &&
                    !streq(m->key, "cpus") && !streq(m->key, "net")) {
                        _cleanup_free_ char *e = strdup_printf("Unknown member \"%s\" (name, base, memory, cpus, "
                                                               "net).", m->key);
                        respond_error(c, 400, e ? e : "Unknown member.");
                        return;
                }
        struct web_job *job = job_new(WEB_JOB_ACTION, name);
        if (job && !(job->text = strdup(base)))
                job = web_job_free(job);
        if (!job) {
                respond_error(c, 500, "Out of memory.");
                return;
        }
        job->action = WEB_ACTION_CREATE;
        snprintf(job->memory, sizeof(job->memory), "%s", memory);
        snprintf(job->cpus, sizeof(job->cpus), "%s", cpus);
        snprintf(job->net, sizeof(job->net), "%s", net);
        start_conn_job(app, c, job);
}

/* /api/vms/NAME/SUB (or /api/hosts/HOST/...: 'host' not "", that host's
 * vmhost does it over ssh): snapshots, the CD and the facts of a delete.
 * True when answered. 'name' is valid. */
static bool api_vm_more(struct web_app *app, struct web_conn *c, const struct http_request *req, const char *host,
                        const char *name, const char *sub, const char *body) {
        bool get = streq(req->method, "GET") || streq(req->method, "HEAD");
        bool post = streq(req->method, "POST");
        if (streq(sub, "delete-plan") && get) {
                start_action(app, c, host, name, WEB_ACTION_DELETE_PLAN, NULL);
                return true;
        }
        if (streq(sub, "snapshots") && get) {
                start_action(app, c, host, name, WEB_ACTION_SNAPSHOT_LIST, NULL);
                return true;
        }
        if (streq(sub, "snapshots") && post) {
                _cleanup_(json_value_freep) struct json_value *v = body_object(c, body);
                const char *snap = NULL;
                if (!v || body_string(c, v, "name", WEB_SNAPSHOT_NAME_MAX, &snap) < 0)
                        return true;
                if (!snap) {
                        respond_error(c, 400, "Expected {\"name\": \"before-upgrade\"}: the snapshot's name.");
                        return true;
                }
                start_action(app, c, host, name, WEB_ACTION_SNAPSHOT_CREATE, snap);
                return true;
        }
        const char *snap_path = startswith(sub, "snapshots/") ? sub + strlen("snapshots/") : NULL;
        if (snap_path) {
                /* SNAP or SNAP/revert; the library checks the name itself. */
                const char *slash = strchr(snap_path, '/');
                size_t n = slash ? (size_t) (slash - snap_path) : strlen(snap_path);
                bool revert = slash && streq(slash, "/revert") && post;
                bool del = !slash && streq(req->method, "DELETE");
                if (!revert && !del)
                        return false;
                char snap[WEB_SNAPSHOT_NAME_MAX + 1];
                if (n == 0 || n >= sizeof(snap)) {
                        respond_error(c, 400, "Invalid snapshot name: 1-128 characters, no spaces or quotes.");
                        return true;
                }
                memcpy(snap, snap_path, n);
                snap[n] = '\0';
                start_action(app, c, host, name, revert ? WEB_ACTION_SNAPSHOT_REVERT : WEB_ACTION_SNAPSHOT_DELETE, snap);
                return true;
        }
        if (streq(sub, "cdrom") && post) {
                _cleanup_(json_value_freep) struct json_value *v = body_object(c, body);
                if (!v)
                        return true;
                const char *iso = NULL;
                bool eject = false;
                if (body_string(c, v, "iso", PATH_MAX - 1, &iso) < 0)
                        return true;
                (void) json_get_bool(json_object_get(v, "eject"), &eject);
                if ((iso != NULL) == eject || v->object.n != 1) {
                        respond_error(c, 400, "Expected {\"iso\": \"/path/to/image.iso\"} or {\"eject\": true}.");
                        return true;
                }
                /* The rule of 'vm cdrom' run by this server's user (the
                 * ISO is opened read-only and handed to QEMU; nothing of
                 * it comes back here), with an absolute path, since the
                 * server has no working directory of the user's; the
                 * job also wants a regular file (web-jobs.c). Another
                 * host's VM: a path on that host, 'vm cdrom' there. */
                if (iso && iso[0] != '/') {
                        respond_error(c, 400, "The ISO image must be an absolute path: the server has no working "
                                              "directory of yours.");
                        return true;
                }
                start_action(app, c, host, name, iso ? WEB_ACTION_CDROM_INSERT : WEB_ACTION_CDROM_EJECT, iso);
                return true;
        }
        return false;
}

/* POST /api/vms/NAME/SUB: the consoles' requests. */
static bool api_vm_console(struct web_app *app, struct web_conn *c, const char *host, const char *name,
                           const char *sub, const char *body, const struct session *s) {
        if (streq(sub, "console-ticket")) {
                _cleanup_(json_value_freep) struct json_value *v = body_object(c, body);
                if (!v)
                        return true;
                const char *kind_s = NULL;
                enum web_console_kind kind;
                (void) json_get_string(json_object_get(v, "kind"), &kind_s);
                if (console_kind_from_string(kind_s, &kind) < 0) {
                        respond_error(c, 400, "Expected {\"kind\": \"vnc\"} or {\"kind\": \"serial\"}.");
                        return true;
                }
                /* A remote VM's existence is its relay's to say (asking
                 * would take a round trip on the loop). */
                if (!host[0] && !vm_exists(app->ctx, name)) {
                        _cleanup_free_ char *m = strdup_printf("VM %s does not exist.", name);
                        respond_error(c, 404, m ? m : "No such VM.");
                        return true;
                }
                char ticket[WEB_TICKET_HEX + 1];
                if (web_console_ticket_new(app->consoles, s->id, host, name, kind, vh_clock_ms(), ticket) < 0) {
                        respond_error(c, 500, "Cannot make a ticket.");
                        return true;
                }
                _cleanup_free_ char *out = strdup_printf("{\"ticket\": \"%s\", \"expires_in\": %d}", ticket,
                                                         WEB_TICKET_TTL_MS / 1000);
                respond_json(c, 200, out ? out : "{}");
                return true;
        }
        /* Keys, typing and the screenshot are this host's QEMU's: a
         * remote VM's page sends keys over its relayed VNC screen. */
        if (host[0] && !streq(sub, "monitor"))
                return false;
        if (streq(sub, "monitor")) {
                _cleanup_(json_value_freep) struct json_value *v = body_object(c, body);
                if (!v)
                        return true;
                const char *cmd = NULL;
                if (json_get_string(json_object_get(v, "command"), &cmd) < 0 || !cmd[0] ||
                    strlen(cmd) > WEB_MONITOR_MAX_COMMAND || strpbrk(cmd, "\n\r")) {
                        respond_error(c, 400, "Expected {\"command\": \"info status\"}: one line of at most 1024 "
                                              "characters.");
                        return true;
                }
                struct web_job *job = job_new(WEB_JOB_MONITOR, name);
                if (job && !(job->text = strdup(cmd)))
                        job = web_job_free(job);
                if (job)
                        snprintf(job->host, sizeof(job->host), "%s", host);
                if (!job)
                        respond_error(c, 500, "Out of memory.");
                else
                        start_conn_job(app, c, job);
                return true;
        }
        if (streq(sub, "keys")) {
                _cleanup_(json_value_freep) struct json_value *v = body_object(c, body);
                if (!v)
                        return true;
                struct json_value *keys = json_object_get(v, "keys");
                size_t n = json_array_len(keys);
                struct web_job *job = job_new(WEB_JOB_KEYS, name);
                if (!job) {
                        respond_error(c, 500, "Out of memory.");
                        return true;
                }
                bool ok = keys && keys->type == JSON_ARRAY && n > 0 && n <= WEB_MAX_KEYS;
                for (size_t i = 0; ok && i < n; i++) {
                        const char *k = NULL;
                        ok = json_get_string(json_array_at(keys, i), &k) >= 0 && k[0] &&
                             strlen(k) <= WEB_KEY_NAME_MAX && strspn(k, "abcdefghijklmnopqrstuvwxyz0123456789_") ==
                                                                      strlen(k);
                        if (ok)
                                snprintf(job->keys[i], sizeof(job->keys[i]), "%s", k);
                }
                if (!ok) {
                        web_job_free(job);
                        respond_error(c, 400, "Expected {\"keys\": [\"ctrl\", \"alt\", \"delete\"]}: 1 to 8 QEMU "
                                              "key names (lower case letters, digits, '_').");
                        return true;
                }
                job->n_keys = n;
                start_conn_job(app, c, job);
                return true;
        }
        if (streq(sub, "type")) {
                _cleanup_(json_value_freep) struct json_value *v = body_object(c, body);
                if (!v)
                        return true;
                const char *text = NULL;
                if (json_get_string(json_object_get(v, "text"), &text) < 0 || !text[0] ||
                    strlen(text) > WEB_TYPE_MAX) {
                        respond_error(c, 400, "Expected {\"text\": \"...\"}: 1 to 512 characters.");
                        return true;
                }
                for (const char *p = text; *p; p++) {
                        const char *keys[2];
                        if (web_type_keys(*p, keys) < 0) {
                                char m[160];
                                snprintf(m, sizeof(m), "Cannot type character %zu (byte 0x%02x): only printable "
                                         "ASCII, tab and newline have keys on a US keyboard.",
                                         (size_t) (p - text) + 1, (unsigned char) *p);
                                respond_error(c, 400, m);
                                return true;
                        }
                }
                struct web_job *job = job_new(WEB_JOB_TYPE, name);
                if (job && !(job->text = strdup(text)))
                        job = web_job_free(job);
                if (!job)
                        respond_error(c, 500, "Out of memory.");
                else
                        start_conn_job(app, c, job);
                return true;
        }
        return false;
}

/* ---- VMs of other hosts ---- */

/* A path "/api/hosts/HOST/...": 1 with 'host' the registered host's name
 * ("" for "local", this machine) and '*ret_tail' what follows HOST ("/vms/
 * NAME/start"); 0 for another path; -1 when answered (a malformed or an
 * unknown host). */
static int host_route(struct web_app *app, struct web_conn *c, const char *path, char host[VH_NAME_MAX + 1],
                      const char **ret_tail) {
        if (!startswith(path, "/api/hosts/"))
                return 0;
        const char *h = path + strlen("/api/hosts/");
        size_t n = strcspn(h, "/");
        if (n == 0 || n > VH_NAME_MAX) {
                respond_error(c, 400, "Invalid host name: 1 to 32 letters, digits, '-' or '_'.");
                return -1;
        }
        memcpy(host, h, n);
        host[n] = '\0';
        *ret_tail = h + n;
        if (streq(host, HOST_LOCAL)) {
                host[0] = '\0';
                return 1;
        }
        if (!host_name_is_valid(host)) {
                _cleanup_free_ char *m = strdup_printf("Invalid host name '%s': 1 to 32 letters, digits, '-' or "
                                                       "'_'.", host);
                respond_error(c, 400, m ? m : "Invalid host name.");
                return -1;
        }
        /* A stat of STATE/hosts/HOST.conf: cheap enough for the loop. */
        if (!host_exists(app->ctx, host)) {
                _cleanup_free_ char *m = strdup_printf("No host '%s' (see 'vmhost host list').", host);
                respond_error(c, 404, m ? m : "No such host.");
                return -1;
        }
        return 1;
}

static void api(struct web_app *app, struct web_conn *c, const struct http_request *req, const char *path,
                const struct session *s, const char *body);

/* /api/hosts/HOST/vms/NAME[/SUB]: "local" is /api/vms/...; another host's
 * VM gets the actions that 'vmhost --host HOST vm VERB NAME' runs there
 * (web-jobs.c: run_remote_action()) and its consoles through a relay over
 * ssh (run_remote_console()). */
static void api_host(struct web_app *app, struct web_conn *c, const struct http_request *req, const char *path,
                     const struct session *s, const char *body) {
        char host[VH_NAME_MAX + 1];
        const char *tail = NULL;
        if (host_route(app, c, path, host, &tail) < 0)
                return;
        /* "local": this host's routes, once (no /api/hosts/local/hosts/...). */
        if (!host[0] && !startswith(tail, "/vms/")) {
                respond_error(c, 404, "No such API path (expected /api/hosts/HOST/vms/NAME/...).");
                return;
        }
        if (!host[0]) {
                _cleanup_free_ char *local = strdup_printf("/api%s", tail);
                if (!local)
                        return respond_error(c, 500, "Out of memory.");
                return api(app, c, req, local, s, body);
        }
        const char *rest = startswith(tail, "/vms/") ? tail + strlen("/vms/") : NULL;
        if (!rest) {
                respond_error(c, 404, "No such API path (expected /api/hosts/HOST/vms/NAME/...).");
                return;
        }
        char name[VH_NAME_MAX + 1];
        const char *slash;
        if (!path_vm_name(c, rest, name, &slash))
                return;
        enum web_action action;
        bool post = streq(req->method, "POST");
        const char *sub = slash ? slash + 1 : NULL;
        if (!sub && streq(req->method, "DELETE"))
                action = WEB_ACTION_DELETE;
        else if (sub && api_vm_more(app, c, req, host, name, sub, body))
                return;
        else if (sub && post && !strchr(sub, '/') && api_vm_console(app, c, host, name, sub, body, s))
                return;
        else if (!sub || !post || web_action_from_string(sub, &action) < 0 || action == WEB_ACTION_DELETE) {
                respond_error(c, 404, "Not for VMs of other hosts: start, stop, kill, restart, snapshots, cdrom, "
                                      "monitor, delete-plan, console-ticket or DELETE (keys and typing go over "
                                      "the relayed VNC screen; no screenshot: 'vmhost --host HOST vm screenshot').");
                return;
        }
        struct web_job *job = job_new(WEB_JOB_ACTION, name);
        if (!job) {
                respond_error(c, 500, "Out of memory.");
                return;
        }
        snprintf(job->host, sizeof(job->host), "%s", host);
        job->action = action;
        start_conn_job(app, c, job);
}

/* A websocket to a console: GET /api/vms/NAME/console/{vnc,serial}?ticket=T
 * (or /api/hosts/HOST/vms/NAME/console/..., a remote VM's) with the
 * session's cookie, from this server's own page (Origin), with a ticket of
 * this session for this VM and console. */
static void upgrade(struct web_app *app, struct web_conn *c, const struct http_request *req, const char *path,
                    const struct session *s) {
        /* Browsers always send Origin on a websocket, and apply no
         * same-origin rule to it: only our own page may come in. */
        if (!http_request_header(req, "Origin")) {
                respond_error(c, 403, "A websocket needs an Origin of this server.");
                return;
        }
        char host[VH_NAME_MAX + 1] = "";
        const char *tail = NULL;
        int hr = host_route(app, c, path, host, &tail);
        if (hr < 0)
                return;
        if (hr == 0)
                tail = startswith(path, "/api/") ? path + strlen("/api") : NULL;
        const char *rest = tail && startswith(tail, "/vms/") ? tail + strlen("/vms/") : NULL;
        const char *slash = rest ? strchr(rest, '/') : NULL;
        char name[VH_NAME_MAX + 1];
        enum web_console_kind kind;
        if (!slash || (size_t) (slash - rest) >= sizeof(name) || !startswith(slash, "/console/") ||
            console_kind_from_string(slash + strlen("/console/"), &kind) < 0 || !streq(req->method, "GET")) {
                respond_error(c, 404, "No websocket at this path.");
                return;
        }
        memcpy(name, rest, (size_t) (slash - rest));
        name[slash - rest] = '\0';
        if (!name_is_valid(name)) {
                respond_error(c, 400, "Invalid VM name: 1 to 32 letters, digits, '-' or '_'.");
                return;
        }
        const char *version = http_request_header(req, "Sec-WebSocket-Version");
        if (!version || !streq(version, "13")) {
                static const char msg[] = "{\"error\": \"Only WebSocket version 13 is spoken here.\"}";
                (void) web_conn_respond(c, 426, "application/json", "Sec-WebSocket-Version: 13\r\n", msg,
                                        sizeof(msg) - 1, true);
                return;
        }
        char accept[WS_ACCEPT_LEN + 1];
        if (ws_accept_key(http_request_header(req, "Sec-WebSocket-Key"), accept) < 0) {
                respond_error(c, 400, "Missing or malformed Sec-WebSocket-Key.");
                return;
        }
        _cleanup_free_ char *ticket = NULL;
        (void) http_query_get(req->query, "ticket", &ticket);
        if (!ticket || web_console_ticket_take(app->consoles, ticket, s->id, host, name, kind, vh_clock_ms()) < 0) {
                respond_error(c, 403, "Missing, used, expired or foreign console ticket (POST "
                                      "/api/vms/NAME/console-ticket gives one).");
                return;
        }
        bool binary = false;
        const char *protos = http_request_header(req, "Sec-WebSocket-Protocol");
        for (const char *p = protos; p && *p;) {
                p += strspn(p, " ,");
                size_t n = strcspn(p, " ,");
                if (n == 6 && strncmp(p, "binary", 6) == 0)
                        binary = true;
                p += n;
        }
        if (kind == WEB_CONSOLE_SERIAL && web_console_serial_open(app->consoles, host, name)) {
                /* Already open here: the viewer joins it. */
                if (web_console_attach(app->consoles, c, accept, binary, kind, host, name, -1, NULL, 0) < 0)
                        respond_error(c, 503, "Cannot attach the console.");
                return;
        }
        struct web_job *job = job_new(WEB_JOB_CONSOLE, name);
        if (!job) {
                respond_error(c, 500, "Out of memory.");
                return;
        }
        job->console_kind = kind;
        snprintf(job->host, sizeof(job->host), "%s", host);
        memcpy(job->ws_accept, accept, sizeof(accept));
        job->ws_protocol_binary = binary;
        start_conn_job(app, c, job);
}

static void api(struct web_app *app, struct web_conn *c, const struct http_request *req, const char *path,
                const struct session *s, const char *body) {
        bool get = streq(req->method, "GET") || streq(req->method, "HEAD");
        if (streq(path, "/api/session") && get)
                return api_session(c, s);
        if (streq(path, "/api/vms") && get) {
                /* The answer is the next listing: what the CLI did a
                 * moment ago must show. */
                if (app->n_waiting >= ELEMENTSOF(app->waiting)) {
                        respond_error(c, 503, "Too many requests wait for the list.");
                        return;
                }
                start_local_list(app);
                if (!app->local_running) {
                        respond_error(c, 503, "Cannot start a thread to list the VMs.");
                        return;
                }
                app->waiting[app->n_waiting++] = web_conn_id(c);
                if (!app->remote_done)
                        start_remote_list(app);
                return;
        }
        if (streq(path, "/api/events") && streq(req->method, "GET"))
                return api_events(app, c);
        if (streq(path, "/api/vms") && streq(req->method, "POST"))
                return api_create(app, c, body);
        if (startswith(path, "/api/hosts/"))
                return api_host(app, c, req, path, s, body);
        const char *rest = startswith(path, "/api/vms/") ? path + strlen("/api/vms/") : NULL;
        if (rest) {
                char name[VH_NAME_MAX + 1];
                const char *slash;
                if (!path_vm_name(c, rest, name, &slash))
                        return;
                if (!slash && streq(req->method, "DELETE")) {
                        struct web_job *job = calloc(1, sizeof(*job));
                        if (!job || app->n_actions >= WEB_MAX_ACTIONS) {
                                free(job);
                                respond_error(c, 503, "Too many actions under way; try again when one has finished.");
                                return;
                        }
                        job->kind = WEB_JOB_ACTION;
                        job->action = WEB_ACTION_DELETE;
                        snprintf(job->name, sizeof(job->name), "%s", name);
                        job->conn_id = web_conn_id(c);
                        start_counted_job(app, c, job);
                        return;
                }
                if (slash && !strchr(slash + 1, '/') && get && streq(slash + 1, "screenshot.png")) {
                        struct web_job *job = job_new(WEB_JOB_SCREENSHOT, name);
                        if (!job)
                                respond_error(c, 500, "Out of memory.");
                        else
                                start_conn_job(app, c, job);
                        return;
                }
                if (slash && api_vm_more(app, c, req, "", name, slash + 1, body))
                        return;
                if (slash && streq(req->method, "POST") && !strchr(slash + 1, '/')) {
                        if (api_vm_console(app, c, "", name, slash + 1, body, s))
                                return;
                        return api_action(app, c, name, slash + 1);
                }
        }
        if (streq(path, "/api/vms") || rest)
                respond_error(c, 405, "Method not allowed here.");
        else
                respond_error(c, 404, "No such API path.");
}

/* Whether 'host' (a Host header, or an Origin without its scheme) names
 * this server: the listen address, localhost on loopback, the names of
 * --server-name; with the port, or without it when the port is the
 * scheme's default (a browser then leaves it out). Names are compared
 * without case, as DNS does. Nothing else: a page of another site whose
 * name was rebound to this address sends its own name (DNS rebinding). */
static bool host_allowed(const struct web_app *app, const char *host) {
        for (size_t i = 0; host && i < ELEMENTSOF(app->allowed_hosts); i++)
                if (app->allowed_hosts[i] && strcasecmp(app->allowed_hosts[i], host) == 0)
                        return true;
        return false;
}

static int allowed_hosts_fill(struct web_app *app, const struct web_app_options *opts) {
        size_t n = 0;
        char **a = app->allowed_hosts;
        a[n++] = strdup(opts->host_port);
        /* The same server by its loopback name. */
        if (startswith(opts->host_port, "127.") || startswith(opts->host_port, "[::1]:"))
                a[n++] = strdup_printf("localhost:%u", opts->port);
        bool default_port = opts->port == (opts->tls ? 443 : 80);
        for (size_t i = 0; opts->server_names && opts->server_names[i] && i < WEB_MAX_SERVER_NAMES; i++) {
                a[n++] = strdup_printf("%s:%u", opts->server_names[i], opts->port);
                if (default_port)
                        a[n++] = strdup(opts->server_names[i]);
        }
        for (size_t i = 0; i < n; i++)
                if (!a[i])
                        return -ENOMEM;
        return 0;
}

static void handle_request(void *userdata, struct web_conn *c, const struct http_request *req, const char *body) {
        struct web_app *app = userdata;
        /* DNS rebinding: a page of another site whose name now points
         * here sends its own name as Host. */
        const char *host = http_request_header(req, "Host");
        if (!host_allowed(app, host)) {
                respond_error(c, 403, "The Host header does not name this server.");
                return;
        }
        /* Cross-site requests: browsers send Origin on every POST and on
         * cross-origin GETs; when sent it must be ours. */
        const char *origin = http_request_header(req, "Origin");
        if (origin) {
                /* Under TLS only the https origin is ours: a page served
                 * over plain HTTP elsewhere cannot claim it. */
                const char *scheme = web_conn_is_tls(c) ? "https://" : "http://";
                const char *o = startswith(origin, scheme) ? origin + strlen(scheme) : NULL;
                if (!o || !host_allowed(app, o)) {
                        respond_error(c, 403, "Cross-origin requests are refused.");
                        return;
                }
        }
        _cleanup_free_ char *path = NULL;
        int r = http_path_decode(req->path_raw, &path);
        if (r == -EACCES) {
                respond_error(c, 404, "No such file.");
                return;
        }
        if (r < 0) {
                respond_error(c, 400, "Malformed path.");
                return;
        }
        bool api_path = streq(path, "/api") || startswith(path, "/api/");

        /* The printed URL: its token becomes a session cookie, and the
         * redirect takes the token out of the address bar and history. */
        _cleanup_free_ char *token = NULL;
        if (streq(path, "/") && http_query_get(req->query, "token", &token) >= 0) {
                if (!secret_equal(token, app->token)) {
                        respond_unauthorized(c, false);
                        return;
                }
                struct session *s = session_new(app);
                if (!s) {
                        respond_error(c, 500, "Cannot make a session.");
                        return;
                }
                char headers[256];
                snprintf(headers, sizeof(headers),
                         "Location: /\r\nCache-Control: no-store\r\n"
                         "Set-Cookie: %s=%s; HttpOnly; SameSite=Strict; Path=/%s\r\n",
                         app->cookie_name, s->id, web_conn_is_tls(c) ? "; Secure" : "");
                (void) web_conn_respond(c, 303, NULL, headers, NULL, 0, false);
                return;
        }
        struct session *s = session_find(app, req);
        if (!s) {
                respond_unauthorized(c, api_path);
                return;
        }
        web_conn_set_trusted(c);
        s->last_used_ms = vh_clock_ms();
        bool changes = !streq(req->method, "GET") && !streq(req->method, "HEAD");
        if (changes) {
                const char *csrf = http_request_header(req, "X-VMHost-CSRF");
                if (!csrf || !secret_equal(csrf, s->csrf)) {
                        respond_error(c, 403, "Missing or wrong X-VMHost-CSRF header (GET /api/session has it).");
                        return;
                }
        }
        if ((req->upgrade_websocket || (streq(path, "/api/events") && streq(req->method, "GET"))) &&
            !session_hold(c, s))
                return;
        if (req->upgrade_websocket)
                return upgrade(app, c, req, path, s);
        if (api_path)
                return api(app, c, req, path, s, body);
        if (changes) {
                respond_error(c, 405, "Static files are read only.");
                return;
        }
        web_static_serve(c, app->static_fd, path);
}

static const struct web_server_ops server_ops = {
        .request = handle_request,
        .tick = tick,
};

int web_app_new(const struct vh_context *ctx, const struct web_app_options *opts, struct web_app **ret,
                struct vh_error *err) {
        struct web_app *app = calloc(1, sizeof(*app));
        if (!app) {
                close(opts->listen_fd);
                web_tls_free(opts->tls);
                return -ENOMEM;
        }
        app->ctx = ctx;
        app->static_fd = app->notify[0] = app->notify[1] = app->inotify_fd = -1;
        app->stop_fd = opts->stop_fd;
        app->session_idle_ms = opts->session_idle_ms ? opts->session_idle_ms : WEB_SESSION_IDLE_MS;
        app->session_lifetime_ms = opts->session_lifetime_ms ? opts->session_lifetime_ms : WEB_SESSION_LIFETIME_MS;
        int r = web_server_new(opts->listen_fd, &server_ops, app, 250, &app->srv);
        if (r >= 0)
                web_server_set_tls(app->srv, opts->tls);
        else
                web_tls_free(opts->tls);
        if (r >= 0)
                r = web_consoles_new(app->srv, &app->consoles);
        if (r >= 0)
                web_consoles_set_slow_viewer(app->consoles, opts->serial_slow_viewer);
        if (r < 0) {
                web_app_free(app);
                return vh_error_set(err, r, "Cannot set up the server: %s", strerror(-r));
        }
        r = random_hex(app->token);
        if (r < 0) {
                web_app_free(app);
                return vh_error_set(err, r, "Cannot get random bytes for the token: %s", strerror(-r));
        }
        snprintf(app->cookie_name, sizeof(app->cookie_name), "vmhost_session_%u", opts->port);
        if (allowed_hosts_fill(app, opts) < 0) {
                web_app_free(app);
                return vh_error_set(err, -ENOMEM, "Out of memory.");
        }
        app->static_fd = open(opts->static_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (app->static_fd < 0) {
                r = negative_errno();
                web_app_free(app);
                return vh_error_set(err, r, "Cannot open the page's directory %s: %s", opts->static_dir, strerror(-r));
        }
        if (pipe2(app->notify, O_CLOEXEC) < 0 || fcntl(app->notify[0], F_SETFL, O_NONBLOCK) < 0) {
                r = negative_errno();
                web_app_free(app);
                return vh_error_set(err, r, "pipe: %s", strerror(-r));
        }
        /* Without inotify the one-second listing still sees every change. */
        app->inotify_fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        (void) web_server_watch(app->srv, app->notify[0], notify_ready, app);
        if (app->inotify_fd >= 0)
                (void) web_server_watch(app->srv, app->inotify_fd, inotify_ready, app);
        if (opts->stop_fd >= 0)
                (void) web_server_watch(app->srv, opts->stop_fd, stop_ready, app);
        *ret = app;
        return 0;
}

int web_app_run(struct web_app *app, struct vh_error *err) {
        int r = web_server_run(app->srv);
        if (r < 0)
                return vh_error_set(err, r, "The server's poll failed: %s", strerror(-r));
        /* Threads under way hold pointers into nothing of ours but the
         * context and the pipe: wait for them, so that no start is cut
         * off half-way (each is bounded by the library's own timeouts). */
        while (app->n_jobs > 0) {
                struct web_job *job;
                ssize_t n = read(app->notify[0], &job, sizeof(job));
                if (n == (ssize_t) sizeof(job)) {
                        app->n_jobs--;
                        if (job->kind != WEB_JOB_LIST_LOCAL && job->kind != WEB_JOB_LIST_REMOTE)
                                app->n_actions--;
                        web_job_free(job);
                } else
                        (void) vh_poll_until(app->notify[0], POLLIN, vh_deadline_after(1000));
        }
        return 0;
}

struct web_app *web_app_free(struct web_app *app) {
        if (!app)
                return NULL;
        /* The connections first: a console's closed() frees its relay. */
        if (app->srv)
                web_server_close_conns(app->srv);
        web_consoles_free(app->consoles);
        web_server_free(app->srv);
        for (size_t i = 0; i < ELEMENTSOF(app->allowed_hosts); i++)
                free(app->allowed_hosts[i]);
        safe_close(app->static_fd);
        safe_close(app->inotify_fd);
        /* n_jobs is 0 after web_app_run(): no thread writes any more. */
        safe_close(app->notify[0]);
        safe_close(app->notify[1]);
        free(app->local_json);
        free(app->remote_json);
        free(app->list_json);
        free(app);
        return NULL;
}
