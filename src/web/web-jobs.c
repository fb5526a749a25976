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
#include <unistd.h>

#include "base/fileio.h"
#include "base/json-writer.h"
#include "base/json.h"
#include "base/macro.h"
#include "host/host-def.h"
#include "host/host.h"
#include "qmp/qmp.h"
#include "vm/vm-control.h"
#include "vm/vm.h"
#include "web/web-jobs.h"

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

/* When process 'pid' started, in seconds since the epoch; 0 when unknown.
 * /proc/PID/stat's 22nd field counts clock ticks since boot, /proc/stat's
 * btime is the boot in epoch seconds. */
static int64_t process_started(int pid) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
        _cleanup_free_ char *stat = NULL, *sys = NULL;
        if (read_full_file(path, 4096, &stat, NULL) < 0 || read_full_file("/proc/stat", 1 << 20, &sys, NULL) < 0)
                return 0;
        /* The command name may hold spaces and ')': fields follow the last ')'. */
        const char *p = strrchr(stat, ')');
        if (!p)
                return 0;
        unsigned long long ticks = 0;
        /* After ')': state is field 3, starttime field 22. */
        const char *f = p + 1;
        for (int field = 3; field < 22 && f; field++)
                f = strchr(f + 1, ' ');
        if (!f || sscanf(f, " %llu", &ticks) != 1)
                return 0;
        const char *b = strstr(sys, "\nbtime ");
        long long btime = 0;
        if (!b || sscanf(b, "\nbtime %lld", &btime) != 1)
                return 0;
        long hz = sysconf(_SC_CLK_TCK);
        return hz > 0 ? (int64_t) (btime + (long long) (ticks / (unsigned long long) hz)) : 0;
}

/* One VM status object as host_self_json() wrote it, with "started"
 * (epoch seconds) added for a VM that runs here: the status object has no
 * start time yet, and the page shows uptime. */
static void write_vm_object(struct json_writer *w, const struct json_value *vm) {
        if (vm->type != JSON_OBJECT) {
                json_value_write(w, vm);
                return;
        }
        json_object_begin(w);
        for (size_t i = 0; i < vm->object.n; i++) {
                json_key(w, vm->object.members[i].key);
                json_value_write(w, vm->object.members[i].value);
        }
        int64_t pid;
        if (json_get_int(json_object_get(vm, "pid"), &pid) >= 0 && pid > 0 && pid < INT32_MAX) {
                int64_t t = process_started((int) pid);
                if (t > 0)
                        json_kv_int(w, "started", t);
        }
        json_object_end(w);
}

/* The object 'vm list --all-hosts --json' prints for one host. */
static void write_host_object(struct json_writer *w, const char *host, const struct host_status *h, bool local) {
        json_object_begin(w);
        json_kv_uint(w, "version", 1);
        json_kv_string(w, "host", host);
        json_kv_bool(w, "reachable", h->reachable);
        json_key(w, "error");
        json_string(w, h->reachable ? NULL : h->why);
        json_key(w, "vms");
        json_array_begin(w);
        for (size_t k = 0; k < json_array_len(h->vm_list); k++) {
                const struct json_value *vm = json_array_at(h->vm_list, k);
                if (local)
                        write_vm_object(w, vm);
                else
                        json_value_write(w, vm);
        }
        json_array_end(w);
        /* What could not be described there: the CLI warns with it. */
        json_key(w, "warnings");
        json_array_begin(w);
        for (char **m = h->warnings; m && *m; m++)
                json_string(w, *m);
        json_array_end(w);
        json_object_end(w);
}

static int list_local(struct web_job *job) {
        struct vh_error err = {};
        struct host_status st = {};
        _cleanup_free_ char *self = NULL;
        int r = host_self_json(job->ctx, HOST_PROBE_VMS, &self, &err);
        if (r >= 0)
                r = host_self_parse(self, &st, &err);
        if (r < 0)
                snprintf(st.why, sizeof(st.why), "Cannot list this host's VMs: %s", vh_error_message(&err, r));
        else
                st.reachable = true;
        struct json_writer w;
        json_writer_init(&w, false);
        write_host_object(&w, HOST_LOCAL, &st, true);
        host_status_done(&st);
        job->result = json_writer_finish(&w, &r);
        return job->result ? 0 : r;
}

static int list_remote(struct web_job *job) {
        struct host_def **defs = NULL;
        char **skipped = NULL;
        size_t n = 0;
        struct vh_error err = {};
        int r = host_load_all(job->ctx, &defs, &n, &skipped, &err);
        if (r < 0)
                return r;
        host_names_free(skipped);
        job->hosts_registered = n > 0;
        if (n == 0) {
                host_defs_free(defs);
                job->result = strdup("");
                return job->result ? 0 : -ENOMEM;
        }
        struct host_status *st = calloc(n, sizeof(*st));
        if (!st) {
                host_defs_free(defs);
                return -ENOMEM;
        }
        r = host_probe_all(job->ctx, defs, n, HOST_PROBE_VMS, st);
        if (r >= 0) {
                /* Objects separated by commas, for the loop to put after
                 * this host's in one array. */
                struct json_writer w;
                json_writer_init(&w, false);
                json_array_begin(&w);
                for (size_t i = 0; i < n; i++)
                        write_host_object(&w, defs[i]->name, &st[i], false);
                json_array_end(&w);
                _cleanup_free_ char *a = json_writer_finish(&w, &r);
                if (a) {
                        size_t len = strlen(a);
                        job->result = strndup(a + 1, len - 2);
                        r = job->result ? 0 : -ENOMEM;
                }
        }
        for (size_t i = 0; i < n; i++)
                host_status_done(&st[i]);
        free(st);
        host_defs_free(defs);
        return r;
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

static void run_action(struct web_job *job) {
        struct vh_error err = {};
        struct vm_status st;
        enum vm_stop_how how;
        char msg[VH_ERROR_MAX + 128];
        int r;
        const char *name = job->name;
        switch (job->action) {
        case WEB_ACTION_START:
        case WEB_ACTION_RESTART:
                r = job->action == WEB_ACTION_RESTART ? vm_restart(job->ctx, name, WEB_STOP_TIMEOUT_MS, NULL, &st, &err)
                                                      : vm_start(job->ctx, name, NULL, &st, &err);
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
                r = vm_stop_graceful(job->ctx, name, job->action == WEB_ACTION_KILL ? 0 : WEB_STOP_TIMEOUT_MS, &how,
                                     &err);
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

/* A socketpair whose other end QEMU's VNC server takes as a client
 * (getfd, then add_client): no listener anywhere, and no VNC password,
 * since this client was authenticated by the web server (skipauth). */
static int open_vnc(struct web_job *job, struct vh_error *err) {
        /* Not running says more than its display would. */
        _cleanup_(qmp_freep) struct qmp_client *q = NULL;
        int r = open_vm_qmp(job->ctx, job->name, NULL, &q, err);
        if (r < 0)
                return r;
        _cleanup_(vm_def_freep) struct vm_def *def = NULL;
        r = vm_load(job->ctx, job->name, &def, err);
        if (r < 0)
                return r;
        if (def->vnc == VM_VNC_NONE)
                return vh_error_set(err, -EINVAL, "VM %s has no VNC display (vnc = none)", job->name);
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
        job->console_fd = sv[0];
        return 0;
}

/* The serial chardev's socket (one client at a time: the web server
 * holds it for all its viewers) and the log for the scrollback. */
static int open_serial(struct web_job *job, struct vh_error *err) {
        struct vm_paths p = {};
        struct vm_status st;
        int r = vm_open_running(job->ctx, job->name, &p, &st, err);
        if (r < 0)
                return r;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        if (strlen(p.serial_socket) >= sizeof(sa.sun_path)) {
                r = vh_error_set(err, -ENAMETOOLONG, "The serial socket path of VM %s is too long", job->name);
                vm_paths_done(&p);
                return r;
        }
        strcpy(sa.sun_path, p.serial_socket);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                r = vh_error_set(err, negative_errno(), "Cannot connect to the serial console of VM %s (%s): %m",
                                 job->name, p.serial_socket);
                safe_close(fd);
                vm_paths_done(&p);
                return r;
        }
        (void) fcntl(fd, F_SETFL, O_NONBLOCK);
        job->console_fd = fd;
        job->serial_log = TAKE_PTR(p.serial_log);
        job->serial_log_offset = st.serial_log_offset;
        vm_paths_done(&p);
        return 0;
}

static void run_console(struct web_job *job) {
        struct vh_error err = {};
        int r = job->console_kind == WEB_CONSOLE_VNC ? open_vnc(job, &err) : open_serial(job, &err);
        if (r < 0)
                set_result(job, r == -ENOENT && vm_exists(job->ctx, job->name) ? 409 : status_of(r), "error",
                           vh_error_message(&err, r));
        else
                job->status = 200;
}

static void *job_thread(void *arg) {
        struct web_job *job = arg;
        int r = 0;
        switch (job->kind) {
        case WEB_JOB_LIST_LOCAL: r = list_local(job); break;
        case WEB_JOB_LIST_REMOTE: r = list_remote(job); break;
        case WEB_JOB_ACTION: run_action(job); break;
        case WEB_JOB_MONITOR: run_monitor(job); break;
        case WEB_JOB_KEYS: case WEB_JOB_TYPE: run_keys(job); break;
        case WEB_JOB_SCREENSHOT: run_screenshot(job); break;
        case WEB_JOB_CONSOLE: run_console(job); break;
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
