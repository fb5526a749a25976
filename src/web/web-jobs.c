/* web/web-jobs.c: the threads of web/web-jobs.h. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/json-writer.h"
#include "base/json.h"
#include "base/macro.h"
#include "base/poll.h"
#include "base/strutil.h"
#include "host/host-def.h"
#include "host/host.h"
#include "host/ssh.h"
#include "qmp/qmp.h"
#include "vm/vm-control.h"
#include "vm/vm-ops.h"
#include "vmhost/image.h"
#include "vm/vm.h"
#include "web/web-jobs.h"

extern char **environ;

int web_action_from_string(const char *s, enum web_action *ret) {
        static const char *const names[] = {
                [WEB_ACTION_START] = "start",     [WEB_ACTION_STOP] = "stop",
                [WEB_ACTION_KILL] = "kill",       [WEB_ACTION_RESTART] = "restart",
                [WEB_ACTION_DELETE] = "delete",
        };
        for (size_t i = 0; i < ELEMENTSOF(names); i++)
                if (streq(s, names[i])) {
                        *ret = (enum web_action) i;
                        return 0;
                }
        return -EINVAL;
}

struct web_job *web_job_free(struct web_job *job) {
        if (job) {
                if (job->kind == WEB_JOB_CONSOLE)
                        safe_close(job->console_fd);
                free(job->result);
                free(job->text);
                free(job->serial_log);
                free(job);
        }
        return NULL;
}

/* The listing of this host, or of the registered hosts, as 'vm list
 * --all-hosts --json' prints them (host_cluster_entry_to_json): for the
 * remote hosts the objects separated by commas, for the event loop to put
 * after this host's in one array ("" when no host is registered). */
static int list_hosts(struct web_job *job, unsigned flags) {
        struct vh_error err = {};
        struct host_cluster c = {};
        int r = host_cluster_list(job->ctx, flags, &c, &err);
        if (r < 0)
                return r;
        if (flags & HOST_CLUSTER_REMOTE)
                job->hosts_registered = c.n_registered > 0;
        for (size_t i = 0; i < c.n; i++)
                if (c.hosts[i].local && !c.hosts[i].status.reachable) {
                        /* The page shows it as the CLI says it. */
                        char why[sizeof(c.hosts[i].status.why)];
                        snprintf(why, sizeof(why), "%s", c.hosts[i].status.why);
                        static const char prefix[] = "Cannot list this host's VMs: ";
                        snprintf(c.hosts[i].status.why, sizeof(c.hosts[i].status.why), "%s%.*s", prefix,
                                 (int) (sizeof(why) - sizeof(prefix)), why);
                }
        /* Written as an array, whose brackets are then dropped. */
        struct json_writer w;
        json_writer_init(&w, false);
        json_array_begin(&w);
        for (size_t i = 0; i < c.n; i++)
                host_cluster_entry_to_json(&w, &c.hosts[i], true);
        json_array_end(&w);
        host_cluster_done(&c);
        _cleanup_free_ char *a = json_writer_finish(&w, &r);
        if (!a)
                return r;
        size_t len = strlen(a);
        job->result = strndup(a + 1, len - 2);
        return job->result ? 0 : -ENOMEM;
}

static int list_local(struct web_job *job) {
        return list_hosts(job, HOST_CLUSTER_LOCAL);
}

static int list_remote(struct web_job *job) {
        return list_hosts(job, HOST_CLUSTER_REMOTE);
}

/* The HTTP status of a library error, by the kind of failure. */
static int status_of(int r) {
        switch (r) {
        case -ENOENT: return 404;
        case -EINVAL: return 400;
        case -EBUSY: case -EEXIST: case -ESRCH: case -EALREADY: case -ETIMEDOUT: return 409;
        default: return 500;
        }
}

static void set_result(struct web_job *job, int status, const char *key, const char *text) {
        struct json_writer w;
        json_writer_init(&w, false);
        json_object_begin(&w);
        json_kv_string(&w, "name", job->name);
        json_kv_string(&w, key, text);
        json_object_end(&w);
        int r;
        job->result = json_writer_finish(&w, &r);
        job->status = status;
}

static bool job_stopping(void *userdata) {
        const atomic_bool *stopping = userdata;
        return stopping && atomic_load(stopping);
}

/* The snapshots of the VM's disk: first as 'vm snapshot list' gets them
 * (its errors, and its text), then each entry read from the image the
 * same way (read only, shared), for the page's buttons. */
static int snapshot_list(struct web_job *job, struct vh_error *err) {
        _cleanup_free_ char *text = NULL;
        int r = vm_snapshot_list(job->ctx, job->name, &text, err);
        if (r < 0)
                return r;
        _cleanup_(vm_def_freep) struct vm_def *def = NULL;
        r = vm_load(job->ctx, job->name, &def, err);
        if (r < 0)
                return r;
        const struct vh_image_open_options o = {
                .format = VH_IMAGE_FORMAT_QCOW2,
                .flags = VH_IMAGE_OPEN_NO_BACKING | VH_IMAGE_OPEN_FORCE_SHARE,
        };
        _cleanup_(vh_image_freep) struct vh_image *img = NULL;
        r = vh_image_open(def->disk, &o, &img, err);
        if (r < 0)
                return r;
        struct vh_image_snapshot *list = NULL;
        size_t n = 0;
        r = vh_image_snapshot_list(img, &list, &n, err);
        if (r < 0)
                return r;
        struct json_writer w;
        json_writer_init(&w, false);
        json_object_begin(&w);
        json_kv_string(&w, "name", job->name);
        json_key(&w, "snapshots");
        json_array_begin(&w);
        for (size_t i = 0; i < n; i++) {
                json_object_begin(&w);
                json_kv_string(&w, "id", list[i].id);
                json_kv_string(&w, "tag", list[i].name);
                json_kv_int(&w, "date", list[i].date_sec);
                json_kv_uint(&w, "vm-state-size", list[i].vm_state_size);
                json_object_end(&w);
        }
        json_array_end(&w);
        json_kv_string(&w, "text", text);
        json_object_end(&w);
        vh_image_snapshots_free(list, n);
        job->result = json_writer_finish(&w, &r);
        job->status = 200;
        return job->result ? 0 : r;
}

static void strv_to_json(struct json_writer *w, const char *key, char *const *v) {
        json_key(w, key);
        json_array_begin(w);
        for (char *const *s = v; s && *s; s++)
                json_string(w, *s);
        json_array_end(w);
}

static int delete_plan(struct web_job *job, struct vh_error *err) {
        struct vm_delete_plan plan = {};
        int r = vm_delete_plan(job->ctx, job->name, &plan, err);
        if (r < 0)
                return r;
        struct json_writer w;
        json_writer_init(&w, false);
        json_object_begin(&w);
        json_kv_string(&w, "name", job->name);
        strv_to_json(&w, "removed", plan.removed.v);
        strv_to_json(&w, "kept", plan.kept.v);
        json_object_end(&w);
        vm_delete_plan_done(&plan);
        job->result = json_writer_finish(&w, &r);
        job->status = 200;
        return job->result ? 0 : r;
}

/* 'vm create NAME --base BASE [--memory M] [--cpus N] [--net NET]' with
 * the CLI's defaults (user networking, VNC on a private unix socket) and
 * the same checks (vm_def_set(), vm_create()); relative paths are refused
 * (the server has no working directory of the user's). Its messages are
 * the CLI's: "--memory 3X: ...". */
static int create_vm(struct web_job *job, char *msg, size_t msg_size, struct vh_error *err) {
        _cleanup_(vm_def_freep) struct vm_def *def = vm_def_new(job->name);
        if (!def)
                return -ENOMEM;
        const struct {
                const char *key, *value;
        } keys[] = {
                { "memory", job->memory },
                { "cpus", job->cpus },
                { "nic", job->net[0] ? job->net : VM_NET_USER },
        };
        int r;
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                if (!keys[i].value[0])
                        continue;
                struct vh_error e = {};
                r = vm_def_set(def, keys[i].key, keys[i].value, &e);
                if (r < 0)
                        return vh_error_set(err, r, "--%s %s: %s", streq(keys[i].key, "nic") ? "net" : keys[i].key,
                                            keys[i].value, vh_error_message(&e, r));
        }
        bool vnc_alloc;
        r = vm_def_set_vnc(def, "auto", &vnc_alloc, err);
        if (r < 0)
                return r;
        /* MACs are unique across the cluster, as 'vm create' sees to. */
        char **macs = NULL, **warnings = NULL;
        struct vh_error e = {};
        if (host_cluster_macs(job->ctx, NULL, false, &macs, &warnings, &e) < 0)
                macs = warnings = NULL;
        struct vm_create_options opts = {
                .def = TAKE_PTR(def),
                .base = job->text,
                .alloc_vnc_display = vnc_alloc,
                .base_dir = NULL,
                .avoid_macs = macs,
        };
        struct vm_create_result res = {};
        r = vm_create(job->ctx, &opts, &res, err);
        host_names_free(macs);
        host_names_free(warnings);
        if (r < 0)
                return r;
        snprintf(msg, msg_size, "Created VM %s with overlay %s on %s.", job->name, res.def->disk, res.def->base);
        vm_create_result_done(&res);
        return 0;
}

static void run_action(struct web_job *job) {
        struct vh_error err = {};
        /* A server that stops ends the waits of a start (QEMU is then
         * killed and the start undone), a restart or a stop (QEMU quits
         * at once): see vm_start() and vm_stop_graceful_cancellable(). */
        const struct vm_cancel cancel = { .func = job_stopping, .userdata = (void *) job->stopping };
        const struct vm_start_options start_opts = { .cancel = &cancel };
        struct vm_status st;
        enum vm_stop_how how;
        char msg[VH_ERROR_MAX + 128];
        int r;
        const char *name = job->name;
        switch (job->action) {
        case WEB_ACTION_START:
        case WEB_ACTION_RESTART:
                r = job->action == WEB_ACTION_RESTART
                            ? vm_restart(job->ctx, name, WEB_STOP_TIMEOUT_MS, &start_opts, &st, &err)
                            : vm_start(job->ctx, name, &start_opts, &st, &err);
                if (r == -EALREADY) {
                        /* As 'vm start' says it: what was asked is true. */
                        snprintf(msg, sizeof(msg), "%s.", vh_error_message(&err, r));
                        r = 0;
                } else if (r >= 0)
                        snprintf(msg, sizeof(msg), "VM %s %s (pid %d, accelerator %s).%s%s", name,
                                 job->action == WEB_ACTION_RESTART ? "restarted" : "started", st.pid, st.accel,
                                 st.warning[0] ? " Warning: " : "", st.warning);
                break;
        case WEB_ACTION_STOP:
        case WEB_ACTION_KILL:
                r = vm_stop_graceful_cancellable(job->ctx, name, job->action == WEB_ACTION_KILL ? 0 : WEB_STOP_TIMEOUT_MS,
                                                 &cancel, &how, &err);
                if (r >= 0) {
                        static const char *const what[] = {
                                [VM_STOP_GUEST] = "the guest powered off",
                                [VM_STOP_QUIT] = "QEMU quit",
                                [VM_STOP_KILLED] = "QEMU was killed",
                                [VM_STOP_NOT_RUNNING] = "it was not running",
                        };
                        snprintf(msg, sizeof(msg), "VM %s stopped (%s).", name, what[how]);
                }
                break;
        case WEB_ACTION_DELETE:
                r = vm_delete(job->ctx, name, &err);
                if (r >= 0)
                        snprintf(msg, sizeof(msg), "Deleted VM %s.", name);
                break;
        case WEB_ACTION_SNAPSHOT_CREATE:
        case WEB_ACTION_SNAPSHOT_REVERT:
        case WEB_ACTION_SNAPSHOT_DELETE: {
                static const enum vm_snapshot_op ops[] = {
                        [WEB_ACTION_SNAPSHOT_CREATE] = VM_SNAPSHOT_CREATE,
                        [WEB_ACTION_SNAPSHOT_REVERT] = VM_SNAPSHOT_REVERT,
                        [WEB_ACTION_SNAPSHOT_DELETE] = VM_SNAPSHOT_DELETE,
                };
                bool running;
                r = vm_snapshot(job->ctx, name, ops[job->action], job->text, &running, &err);
                if (r >= 0)
                        snprintf(msg, sizeof(msg), "Snapshot %s of VM %s: %s (%s).", job->text, name,
                                 job->action == WEB_ACTION_SNAPSHOT_CREATE   ? "created"
                                 : job->action == WEB_ACTION_SNAPSHOT_REVERT ? "reverted to"
                                                                             : "deleted",
                                 running ? "full machine state, VM running" : "disk only, VM stopped");
                break;
        }
        case WEB_ACTION_SNAPSHOT_LIST:
        case WEB_ACTION_DELETE_PLAN:
                r = job->action == WEB_ACTION_SNAPSHOT_LIST ? snapshot_list(job, &err) : delete_plan(job, &err);
                if (r >= 0)
                        return;
                break;
        case WEB_ACTION_CDROM_INSERT:
        case WEB_ACTION_CDROM_EJECT: {
                /* What 'vm cdrom' would hand QEMU, but a regular file
                 * only: no device node (a disk of the host) through the
                 * page. stat() follows symlinks, as the insert's
                 * realpath() does. */
                struct stat sb;
                if (job->action == WEB_ACTION_CDROM_INSERT && stat(job->text, &sb) == 0 && !S_ISREG(sb.st_mode)) {
                        r = vh_error_set(&err, -EINVAL, "ISO image %s is not a regular file", job->text);
                        break;
                }
                r = vm_cdrom_change(job->ctx, name, job->action == WEB_ACTION_CDROM_INSERT ? job->text : NULL, &err);
                if (r >= 0)
                        snprintf(msg, sizeof(msg), job->action == WEB_ACTION_CDROM_INSERT ? "Inserted the CD into %s."
                                                                                        : "Ejected the CD of %s.",
                                 name);
                break;
        }
        case WEB_ACTION_CREATE:
                r = create_vm(job, msg, sizeof(msg), &err);
                break;
        default:
                r = -EINVAL;
                vh_error_set(&err, r, "unknown action");
        }
        if (r < 0)
                /* -ENOENT is 404 when the VM is missing; a file of an
                 * existing VM that is missing (its kernel) is a conflict
                 * with its definition. */
                set_result(job, r == -ENOENT && vm_exists(job->ctx, name) ? 409 : status_of(r), "error",
                           vh_error_message(&err, r));
        else
                set_result(job, 200, "message", msg);
}

/* The VM's own QMP socket, as the CLI's commands reach it (QEMU serves
 * one client at a time: a CLI command under way makes this wait). */
#define WEB_QMP_CONNECT_MS 5000

static int open_vm_qmp(const struct vh_context *ctx, const char *name, struct vm_paths *ret_paths,
                       struct qmp_client **ret, struct vh_error *err) {
        struct vm_paths p = {};
        struct vm_status st;
        int r = vm_open_running(ctx, name, &p, &st, err);
        if (r < 0)
                return r;
        r = qmp_connect(p.qmp_socket, WEB_QMP_CONNECT_MS, ret, err);
        if (r == -ETIMEDOUT)
                r = vh_error_set(err, r, "The QMP socket of VM %s (%s) did not answer: another client may hold it",
                                 name, p.qmp_socket);
        if (r >= 0 && ret_paths)
                *ret_paths = p;
        else
                vm_paths_done(&p);
        return r;
}

static void run_monitor(struct web_job *job) {
        struct vh_error err = {};
        _cleanup_free_ char *out = NULL;
        int r = vm_monitor(job->ctx, job->name, job->text, &out, &err);
        if (r < 0) {
                set_result(job, r == -ENOENT && vm_exists(job->ctx, job->name) ? 409 : status_of(r), "error",
                           vh_error_message(&err, r));
                return;
        }
        bool cut = out && strlen(out) > WEB_MONITOR_MAX_OUTPUT;
        if (cut)
                out[WEB_MONITOR_MAX_OUTPUT] = '\0';
        struct json_writer w;
        json_writer_init(&w, false);
        json_object_begin(&w);
        json_kv_string(&w, "name", job->name);
        json_kv_string(&w, "output", out ? out : "");
        json_kv_bool(&w, "truncated", cut);
        json_object_end(&w);
        job->result = json_writer_finish(&w, &r);
        job->status = 200;
}

static int send_keys(struct qmp_client *q, const char *const *keys, size_t n, struct vh_error *err) {
        struct json_writer w;
        json_writer_init(&w, false);
        json_object_begin(&w);
        json_key(&w, "keys");
        json_array_begin(&w);
        for (size_t i = 0; i < n; i++) {
                json_object_begin(&w);
                json_kv_string(&w, "type", "qcode");
                json_kv_string(&w, "data", keys[i]);
                json_object_end(&w);
        }
        json_array_end(&w);
        json_object_end(&w);
        int r;
        _cleanup_free_ char *args = json_writer_finish(&w, &r);
        if (!args)
                return r;
        return qmp_execute(q, "send-key", args, NULL, err);
}

int web_type_keys(char ch, const char *ret[2]) {
        static const char *const digits[] = { "0", "1", "2", "3", "4", "5", "6", "7", "8", "9" };
        static const char *const letters[] = { "a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "k", "l", "m",
                                               "n", "o", "p", "q", "r", "s", "t", "u", "v", "w", "x", "y", "z" };
        /* Characters with a key of their own, and their shifted twin. */
        static const struct {
                char plain, shifted;
                const char *key;
        } keys[] = {
                { ' ', 0, "spc" },          { '\n', 0, "ret" },        { '\t', 0, "tab" },
                { '-', '_', "minus" },      { '=', '+', "equal" },     { '[', '{', "bracket_left" },
                { ']', '}', "bracket_right" }, { '\\', '|', "backslash" }, { ';', ':', "semicolon" },
                { '\'', '"', "apostrophe" }, { ',', '<', "comma" },     { '.', '>', "dot" },
                { '/', '?', "slash" },      { '`', '~', "grave_accent" },
        };
        static const char shifted_digits[] = ")!@#$%^&*(";
        if (ch >= 'a' && ch <= 'z') {
                ret[0] = letters[ch - 'a'];
                return 1;
        }
        if (ch >= 'A' && ch <= 'Z') {
                ret[0] = "shift";
                ret[1] = letters[ch - 'A'];
                return 2;
        }
        if (ch >= '0' && ch <= '9') {
                ret[0] = digits[ch - '0'];
                return 1;
        }
        const char *d = ch ? strchr(shifted_digits, ch) : NULL;
        if (d) {
                ret[0] = "shift";
                ret[1] = digits[d - shifted_digits];
                return 2;
        }
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                if (ch == keys[i].plain) {
                        ret[0] = keys[i].key;
                        return 1;
                }
                if (ch && ch == keys[i].shifted) {
                        ret[0] = "shift";
                        ret[1] = keys[i].key;
                        return 2;
                }
        }
        return -EINVAL;
}

static void run_keys(struct web_job *job) {
        struct vh_error err = {};
        _cleanup_(qmp_freep) struct qmp_client *q = NULL;
        int r = open_vm_qmp(job->ctx, job->name, NULL, &q, &err);
        if (r >= 0 && job->kind == WEB_JOB_KEYS) {
                const char *keys[WEB_MAX_KEYS];
                for (size_t i = 0; i < job->n_keys; i++)
                        keys[i] = job->keys[i];
                r = send_keys(q, keys, job->n_keys, &err);
        } else if (r >= 0) {
                /* The page checked the characters; a key at a time, as a
                 * person types (send-key holds each 100 ms). */
                for (const char *p = job->text; r >= 0 && *p; p++) {
                        const char *keys[2];
                        int n = web_type_keys(*p, keys);
                        if (n < 0)
                                r = vh_error_set(&err, -EINVAL, "Cannot type character 0x%02x on a US keyboard",
                                                 (unsigned char) *p);
                        else
                                r = send_keys(q, keys, (size_t) n, &err);
                }
        }
        if (r < 0)
                set_result(job, status_of(r), "error", vh_error_message(&err, r));
        else
                set_result(job, 200, "message", job->kind == WEB_JOB_KEYS ? "Keys sent." : "Text typed.");
}

static void run_screenshot(struct web_job *job) {
        struct vh_error err = {};
        /* An unnamed file in our runtime directory: nothing to clean up
         * whatever happens; vm_screenshot() opens it by its /proc name,
         * as 'vm screenshot' opens the path it is given. */
        _cleanup_close_ int fd = open(job->ctx->runtime_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
        if (fd < 0) {
                char msg[256 + PATH_MAX];
                snprintf(msg, sizeof(msg), "Cannot make a temporary file for the screenshot in %s: %s",
                         job->ctx->runtime_dir, strerror(errno));
                set_result(job, 500, "error", msg);
                return;
        }
        char path[64];
        snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
        int r = vm_screenshot(job->ctx, job->name, path, &err);
        struct stat sb;
        if (r >= 0 && (fstat(fd, &sb) < 0 || sb.st_size <= 0 || (uint64_t) sb.st_size > WEB_SCREENSHOT_MAX))
                r = vh_error_set(&err, -EIO, "QEMU wrote no usable screenshot of VM %s", job->name);
        if (r < 0) {
                set_result(job, r == -ENOENT && vm_exists(job->ctx, job->name) ? 409 : status_of(r), "error",
                           vh_error_message(&err, r));
                return;
        }
        char *png = malloc((size_t) sb.st_size);
        size_t got = 0;
        while (png && got < (size_t) sb.st_size) {
                ssize_t k = pread(fd, png + got, (size_t) sb.st_size - got, (off_t) got);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                got += (size_t) k;
        }
        if (!png || got != (size_t) sb.st_size) {
                free(png);
                set_result(job, 500, "error", "Cannot read the screenshot back");
                return;
        }
        job->result = png;
        job->result_len = got;
        job->status = 200;
}

int web_vnc_connect(const struct vh_context *ctx, const char *name, int *ret_fd, struct vh_error *err) {
        /* Not running says more than its display would. */
        _cleanup_(qmp_freep) struct qmp_client *q = NULL;
        int r = open_vm_qmp(ctx, name, NULL, &q, err);
        if (r < 0)
                return r;
        _cleanup_(vm_def_freep) struct vm_def *def = NULL;
        r = vm_load(ctx, name, &def, err);
        if (r < 0)
                return r;
        if (def->vnc == VM_VNC_NONE)
                return vh_error_set(err, -EINVAL, "VM %s has no VNC display (vnc = none)", name);
        int sv[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
                return vh_error_set(err, negative_errno(), "socketpair: %m");
        char fdname[64];
        snprintf(fdname, sizeof(fdname), "vmhost-web-%d", sv[1]);
        char args[160];
        snprintf(args, sizeof(args), "{\"fdname\":\"%s\"}", fdname);
        r = qmp_execute_fd(q, "getfd", args, sv[1], NULL, err);
        close(sv[1]);
        if (r >= 0) {
                snprintf(args, sizeof(args), "{\"protocol\":\"vnc\",\"fdname\":\"%s\",\"skipauth\":true}", fdname);
                r = qmp_execute(q, "add_client", args, NULL, err);
        }
        if (r < 0) {
                close(sv[0]);
                return r;
        }
        (void) fcntl(sv[0], F_SETFL, O_NONBLOCK);
        *ret_fd = sv[0];
        return 0;
}

int web_serial_connect(const struct vh_context *ctx, const char *name, int *ret_fd, char **ret_log,
                       uint64_t *ret_log_offset, struct vh_error *err) {
        struct vm_paths p = {};
        struct vm_status st;
        int r = vm_open_running(ctx, name, &p, &st, err);
        if (r < 0)
                return r;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(p.serial_socket) >= sizeof(sa.sun_path)) {
                r = vh_error_set(err, -ENAMETOOLONG, "The serial socket path of VM %s is too long", name);
                vm_paths_done(&p);
                return r;
        }
        strcpy(sa.sun_path, p.serial_socket);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                r = vh_error_set(err, negative_errno(), "Cannot connect to the serial console of VM %s (%s): %m",
                                 name, p.serial_socket);
                safe_close(fd);
                vm_paths_done(&p);
                return r;
        }
        (void) fcntl(fd, F_SETFL, O_NONBLOCK);
        *ret_fd = fd;
        *ret_log = TAKE_PTR(p.serial_log);
        *ret_log_offset = st.serial_log_offset;
        vm_paths_done(&p);
        return 0;
}

static void run_console(struct web_job *job) {
        struct vh_error err = {};
        int r = job->console_kind == WEB_CONSOLE_VNC
                        ? web_vnc_connect(job->ctx, job->name, &job->console_fd, &err)
                        : web_serial_connect(job->ctx, job->name, &job->console_fd, &job->serial_log,
                                             &job->serial_log_offset, &err);
        if (r < 0)
                set_result(job, r == -ENOENT && vm_exists(job->ctx, job->name) ? 409 : status_of(r), "error",
                           vh_error_message(&err, r));
        else
                job->status = 200;
}

/* ---- VMs of other hosts: their vmhost over ssh ---- */

/* The host's definition, or the job's 404 (a host removed since the
 * request was routed). */
static struct host_def *remote_host(struct web_job *job) {
        struct host_def *def = NULL;
        struct vh_error err = {};
        int r = host_load(job->ctx, job->host, &def, &err);
        if (r < 0) {
                set_result(job, r == -ENOENT ? 404 : 500, "error", vh_error_message(&err, r));
                return NULL;
        }
        return def;
}

/* What a failed ssh (not the remote command) says, as 'vmhost --host'
 * prints it after its program prefix. */
static void set_ssh_error(struct web_job *job, const char *host, struct vh_error *err, int r) {
        str_make_printable(err->msg, 0);
        _cleanup_free_ char *m = strdup_printf("On host %s: %s.", host, vh_error_message(err, r));
        set_result(job, 502, "error", m ? m : vh_error_message(err, r));
}

/* What the remote vmhost printed, for the page: its own words, without
 * the last newline (the CLI shows them as they come). */
static void trim_output(char *out) {
        size_t n = strlen(out);
        while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r'))
                out[--n] = '\0';
        /* The far side's bytes, shown as text: no escapes, lines kept. */
        str_make_printable(out, STR_PRINTABLE_LINES);
}

int web_vm_query(const struct vh_context *ctx, const char *name, enum web_action action, char **ret_json,
                 struct vh_error *err) {
        if (action != WEB_ACTION_SNAPSHOT_LIST && action != WEB_ACTION_DELETE_PLAN)
                return -EINVAL;
        struct web_job job = { .kind = WEB_JOB_ACTION, .ctx = ctx, .action = action, .console_fd = -1 };
        snprintf(job.name, sizeof(job.name), "%s", name);
        int r = action == WEB_ACTION_SNAPSHOT_LIST ? snapshot_list(&job, err) : delete_plan(&job, err);
        if (r < 0)
                return r;
        *ret_json = TAKE_PTR(job.result);
        return 0;
}

/* What the remote vmhost's 'vm web-query' printed: one JSON object, read
 * with limits (it comes from another machine), passed on as it came. */
static const struct json_limits remote_json_limits = {
        .max_depth = 4,
        .max_bytes = WEB_REMOTE_OUTPUT_MAX,
        .max_string = WEB_REMOTE_OUTPUT_MAX,
        .max_elements = 4096,
        .max_values = 32768,
};

/* The remote command of 'job' (its host's vmhost first, NULL-terminated)
 * into 'argv' (at most 7 entries): false for an action that has none. */
static bool remote_argv(struct web_job *job, const char *vmhost, char *argv[7]) {
        static const char *const verbs[] = {
                [WEB_ACTION_START] = "start",     [WEB_ACTION_STOP] = "stop",     [WEB_ACTION_KILL] = "kill",
                [WEB_ACTION_RESTART] = "restart", [WEB_ACTION_DELETE] = "delete",
        };
        static const char *const snap_ops[] = {
                [WEB_ACTION_SNAPSHOT_CREATE] = "create",
                [WEB_ACTION_SNAPSHOT_REVERT] = "revert",
                [WEB_ACTION_SNAPSHOT_DELETE] = "delete",
        };
        size_t n = 0;
        argv[n++] = (char *) vmhost;
        argv[n++] = (char *) "vm";
        if (job->kind == WEB_JOB_MONITOR) {
                argv[n++] = (char *) "monitor";
                argv[n++] = job->name;
                argv[n++] = job->text;
        } else if (job->kind != WEB_JOB_ACTION)
                return false;
        else if ((size_t) job->action < ELEMENTSOF(verbs) && verbs[job->action]) {
                argv[n++] = (char *) verbs[job->action];
                argv[n++] = job->name;
        } else if ((size_t) job->action < ELEMENTSOF(snap_ops) && snap_ops[job->action]) {
                argv[n++] = (char *) "snapshot";
                argv[n++] = (char *) snap_ops[job->action];
                argv[n++] = job->name;
                argv[n++] = job->text;
        } else if (job->action == WEB_ACTION_SNAPSHOT_LIST || job->action == WEB_ACTION_DELETE_PLAN) {
                argv[n++] = (char *) "web-query";
                argv[n++] = job->name;
                argv[n++] = (char *) (job->action == WEB_ACTION_SNAPSHOT_LIST ? "snapshots" : "delete-plan");
        } else if (job->action == WEB_ACTION_CDROM_INSERT || job->action == WEB_ACTION_CDROM_EJECT) {
                argv[n++] = (char *) "cdrom";
                argv[n++] = job->name;
                argv[n++] = (char *) (job->action == WEB_ACTION_CDROM_INSERT ? "insert" : "eject");
                if (job->action == WEB_ACTION_CDROM_INSERT)
                        argv[n++] = job->text;
        } else
                return false;
        argv[n] = NULL;
        return true;
}

/* 'vmhost --host HOST vm VERB NAME ...': the same command run by the
 * host's vmhost over ssh (host_ssh_run(): every argument quoted for its
 * shell, no shell here). Its exit status says success; its output is the
 * answer's message or error, as the CLI would print it; a snapshot list
 * and a delete's plan are the JSON of the hidden 'vm web-query' there
 * (web_vm_query()), a monitor command's answer its "output". */
static void run_remote_action(struct web_job *job) {
        char *argv[7];
        if (!remote_argv(job, "", argv)) {
                set_result(job, 400, "error", "This action is not available for VMs of other hosts.");
                return;
        }
        _cleanup_(host_def_freep) struct host_def *def = remote_host(job);
        if (!def)
                return;
        argv[0] = (char *) host_def_vmhost(def);
        struct vh_error err = {};
        _cleanup_free_ char *out = NULL;
        int r = host_ssh_run(job->ctx, def, 0, argv, WEB_REMOTE_ACTION_TIMEOUT_MS, WEB_REMOTE_OUTPUT_MAX, &out,
                             &err);
        if (r < 0) {
                set_ssh_error(job, def->name, &err, r);
                return;
        }
        bool query = job->kind == WEB_JOB_ACTION &&
                     (job->action == WEB_ACTION_SNAPSHOT_LIST || job->action == WEB_ACTION_DELETE_PLAN);
        if (r == 0 && query) {
                _cleanup_(json_value_freep) struct json_value *v = NULL;
                struct vh_error perr = {};
                int pr = json_parse(out, strlen(out), &remote_json_limits, &v, &perr);
                if (pr < 0 || v->type != JSON_OBJECT) {
                        char m[VH_ERROR_MAX + 128];
                        snprintf(m, sizeof(m), "On host %s: 'vm web-query' printed no JSON object%s%s", def->name,
                                 pr < 0 ? ": " : "", pr < 0 ? vh_error_message(&perr, pr) : "");
                        set_result(job, 502, "error", m);
                        return;
                }
                job->result = TAKE_PTR(out);
                job->status = 200;
                return;
        }
        if (r == 0 && job->kind == WEB_JOB_MONITOR) {
                /* The answer as the CLI prints it: QEMU's text. */
                struct json_writer w;
                json_writer_init(&w, false);
                json_object_begin(&w);
                json_kv_string(&w, "name", job->name);
                str_make_printable(out, STR_PRINTABLE_LINES);
                json_kv_string(&w, "output", out);
                json_kv_bool(&w, "truncated", strlen(out) >= WEB_REMOTE_OUTPUT_MAX);
                json_object_end(&w);
                job->result = json_writer_finish(&w, &r);
                job->status = 200;
                return;
        }
        trim_output(out);
        /* 1: the command failed (the VM is missing, not running, ...), 2:
         * it was not understood (an older vmhost there). */
        set_result(job, r == 0 ? 200 : r == 2 ? 400 : 409, r == 0 ? "message" : "error",
                   out[0] ? out : r == 0 ? "Done." : "The remote vmhost failed and said nothing.");
}

/* A relay's ssh after its console was handed to the loop: its stderr is
 * read (so that it never blocks on a full pipe) and dropped, and it is
 * waited for when the console closes (the loop closed its end: ssh sees
 * its stdin end, and so does the relay there). */
struct relay_reaper {
        pid_t pid;
        int err_fd;
};

static void *reap_thread(void *arg) {
        struct relay_reaper *rr = arg;
        char buf[4096];
        for (;;) {
                ssize_t k = read(rr->err_fd, buf, sizeof(buf));
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
        }
        close(rr->err_fd);
        while (waitpid(rr->pid, NULL, 0) < 0 && errno == EINTR)
                ;
        free(rr);
        return NULL;
}

/* Reads what 'fd' has within 'deadline' into 'buf' (at most 'size' - 1
 * bytes, NUL-terminated): a failed relay's stderr. */
static void read_until(int fd, uint64_t deadline, char *buf, size_t size) {
        size_t n = 0;
        while (n < size - 1) {
                if (vh_poll_until(fd, POLLIN, deadline) <= 0)
                        break;
                ssize_t k = read(fd, buf + n, size - 1 - n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                n += (size_t) k;
        }
        buf[n] = '\0';
}

/* Waits for the relay's ready line on 'fd', a byte at a time so that
 * nothing of the console after it is taken: 0, -EPROTO (something else
 * came: an older vmhost), -EPIPE (it ended first), -ETIMEDOUT. */
static int await_ready(int fd, uint64_t deadline) {
        static const char ready[] = WEB_RELAY_READY;
        for (size_t i = 0; i < sizeof(ready) - 1;) {
                int r = vh_poll_until(fd, POLLIN, deadline);
                if (r == 0)
                        return -ETIMEDOUT;
                if (r < 0)
                        return r;
                char ch;
                ssize_t k = read(fd, &ch, 1);
                if (k < 0 && (errno == EINTR || errno == EAGAIN))
                        continue;
                if (k <= 0)
                        return -EPIPE;
                if (ch != ready[i])
                        return -EPROTO;
                i++;
        }
        return 0;
}

/* A remote VM's console: 'vmhost vm console-relay NAME KIND' on its host,
 * with one end of a socketpair as ssh's stdin and stdout; the other end is
 * the console's socket for the loop, as a local VM's would be. Nothing
 * listens anywhere: the bytes go through ssh's own channel. */
static void run_remote_console(struct web_job *job) {
        _cleanup_(host_def_freep) struct host_def *def = remote_host(job);
        if (!def)
                return;
        char *remote[] = { (char *) host_def_vmhost(def), (char *) "vm", (char *) "console-relay", job->name,
                           (char *) (job->console_kind == WEB_CONSOLE_VNC ? "vnc" : "serial"), NULL };
        struct vh_error err = {};
        char **argv = NULL;
        _cleanup_free_ char *exe = NULL;
        int r = host_ssh_command(job->ctx, def, 0, remote, &argv, &exe, &err);
        if (r < 0) {
                set_ssh_error(job, def->name, &err, r);
                return;
        }
        int sv[2] = { -1, -1 }, ep[2] = { -1, -1 };
        struct relay_reaper *rr = malloc(sizeof(*rr));
        if (!rr || socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || pipe2(ep, O_CLOEXEC) < 0) {
                char m[128];
                snprintf(m, sizeof(m), "Cannot set up the console's relay: %s", strerror(rr ? errno : ENOMEM));
                safe_close(sv[0]);
                safe_close(sv[1]);
                free(rr);
                host_names_free(argv);
                set_result(job, 500, "error", m);
                return;
        }
        /* The server blocks its stop signals (a signalfd takes them):
         * ssh must not inherit that. Prepared before the fork. */
        sigset_t none;
        sigemptyset(&none);
        char *const *envp = environ;
        pid_t pid = fork();
        if (pid == 0) {
                /* Async-signal-safe calls only from here on. */
                (void) sigprocmask(SIG_SETMASK, &none, NULL);
                if (dup2(sv[1], STDIN_FILENO) >= 0 && dup2(sv[1], STDOUT_FILENO) >= 0 &&
                    dup2(ep[1], STDERR_FILENO) >= 0)
                        execve(exe, argv, envp);
                _exit(127);
        }
        int fork_errno = errno;
        host_names_free(argv);
        close(sv[1]);
        close(ep[1]);
        if (pid < 0) {
                close(sv[0]);
                close(ep[0]);
                free(rr);
                char m[128];
                snprintf(m, sizeof(m), "Cannot start ssh: %s", strerror(fork_errno));
                set_result(job, 500, "error", m);
                return;
        }
        r = await_ready(sv[0], vh_deadline_after(WEB_RELAY_READY_TIMEOUT_MS));
        if (r >= 0) {
                rr->pid = pid;
                rr->err_fd = ep[0];
                pthread_t t;
                pthread_attr_t attr;
                if (pthread_attr_init(&attr) == 0) {
                        (void) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
                        r = -pthread_create(&t, &attr, reap_thread, rr);
                        pthread_attr_destroy(&attr);
                } else
                        r = -ENOMEM;
                if (r >= 0) {
                        (void) fcntl(sv[0], F_SETFL, O_NONBLOCK);
                        job->console_fd = sv[0];
                        job->status = 200;
                        return;
                }
        }
        /* Failed: what the relay (or ssh) said, and how it ended. */
        if (r == -ETIMEDOUT || r == -EPROTO || r == -ENOMEM || r == -EAGAIN)
                (void) kill(pid, SIGTERM);
        close(sv[0]);
        char out[4096];
        read_until(ep[0], vh_deadline_after(5000), out, sizeof(out));
        close(ep[0]);
        free(rr);
        int status = 0;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
                ;
        if (r == -ETIMEDOUT) {
                char m[160];
                snprintf(m, sizeof(m), "On host %s: the console relay of VM %s did not answer within %d s.",
                         def->name, job->name, WEB_RELAY_READY_TIMEOUT_MS / 1000);
                set_result(job, 504, "error", m);
                return;
        }
        if (WIFEXITED(status) && WEXITSTATUS(status) == 255) {
                r = host_ssh_classify(def, out, &err);
                set_ssh_error(job, def->name, &err, r);
                return;
        }
        trim_output(out);
        if (r == -EPROTO && !out[0])
                snprintf(out, sizeof(out), "On host %s: 'vmhost vm console-relay' is not understood there (an older "
                         "vmhost?).", def->name);
        set_result(job, WIFEXITED(status) && WEXITSTATUS(status) == 2 ? 400 : 409, "error",
                   out[0] ? out : "The console relay ended without a word.");
}

static void *job_thread(void *arg) {
        struct web_job *job = arg;
        int r = 0;
        switch (job->kind) {
        case WEB_JOB_LIST_LOCAL: r = list_local(job); break;
        case WEB_JOB_LIST_REMOTE: r = list_remote(job); break;
        case WEB_JOB_ACTION: job->host[0] ? run_remote_action(job) : run_action(job); break;
        case WEB_JOB_MONITOR: job->host[0] ? run_remote_action(job) : run_monitor(job); break;
        case WEB_JOB_KEYS: case WEB_JOB_TYPE: run_keys(job); break;
        case WEB_JOB_SCREENSHOT: run_screenshot(job); break;
        case WEB_JOB_CONSOLE: job->host[0] ? run_remote_console(job) : run_console(job); break;
        }
        if (r < 0 && !job->result)
                job->status = 500;
        /* The pointer is the message; a pipe write of this size is atomic.
         * The loop drains the pipe, so it never fills for long; a full one
         * (the loop stuck) blocks this thread, not the loop. */
        while (write(job->notify_fd, &job, sizeof(job)) < 0 && errno == EINTR)
                ;
        return NULL;
}

int web_job_start(struct web_job *job) {
        pthread_attr_t attr;
        int r = pthread_attr_init(&attr);
        if (r != 0)
                return -r;
        (void) pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_t t;
        r = pthread_create(&t, &attr, job_thread, job);
        pthread_attr_destroy(&attr);
        return -r;
}
