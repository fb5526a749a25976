/* vm/vm.c: VM lifecycle: load/save definitions, start QEMU, status,
 * wait for the guest, stop, console. */
#include <arpa/inet.h>
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <sched.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/defs.h"
#include "base/fileio.h"
#include "base/lockfile.h"
#include "base/macro.h"
#include "base/paths.h"
#include "base/process.h"
#include "base/strutil.h"
#include "base/strv.h"
#include "vm/vm-accel.h"
#include "vm/vm-alloc.h"
#include "vm/vm-control.h"
#include "qmp/qmp.h"
#include "vm/vm-cmdline.h"
#include "vm/vm-image.h"
#include "vm/vm-net.h"
#include "vm/vm-start.h"
#include "vm/vm-user.h"
#include "vm/vm-vnc.h"
#include "vm/vm.h"
#include "vmhost/image.h"

#define SERIAL_LOG_SCAN_MAX (16u << 20)

/* "DIR/vms/NAME" or "DIR/vms/NAME/LEAF", copied rather than formatted:
 * 'vm list' builds these nine paths three times per VM, and vasprintf() was
 * about half of its instructions with 500 VMs. */
static char *vm_path(const char *dir, const char *name, const char *leaf) {
        size_t ld = strlen(dir), ln = strlen(name), ll = leaf ? strlen(leaf) : 0;
        char *s = malloc(ld + strlen("/vms/") + ln + 1 + ll + 1);
        if (!s)
                return NULL;
        char *e = mempcpy(mempcpy(mempcpy(s, dir, ld), "/vms/", strlen("/vms/")), name, ln);
        if (leaf) {
                *e++ = '/';
                e = mempcpy(e, leaf, ll);
        }
        *e = '\0';
        return s;
}

int vm_paths_get(const struct vh_context *ctx, const char *name, struct vm_paths *ret, struct vh_error *err) {
        if (!name_is_valid(name))
                return vh_error_set(err, -EINVAL,
                                    "Invalid VM name '%s': use 1-%d letters, digits, '-' or '_', starting with a letter or digit",
                                    name, VH_NAME_MAX);
        _cleanup_free_ char *state = vh_state_dir(ctx), *run = vh_runtime_dir(ctx);
        if (!state || !run)
                return -ENOMEM;

        struct vm_paths p = {
                .state_dir = vm_path(state, name, NULL),
                .conf = vm_path(state, name, "vm.conf"),
                .runtime_dir = vm_path(run, name, NULL),
                .qmp_socket = vm_path(run, name, "qmp.sock"),
                .qmp_watch_socket = vm_path(run, name, "qmp-watch.sock"),
                .serial_socket = vm_path(run, name, "serial.sock"),
                .serial_log = vm_path(state, name, "serial.log"),
                .pidfile = vm_path(run, name, "qemu.pid"),
                .qemu_log = vm_path(state, name, "qemu.log"),
                .runtime_state = vm_path(run, name, "state"),
                .vnc_socket = vm_path(run, name, "vnc.sock"),
                .vnc_password = vm_path(run, name, "vnc.password"),
        };
        if (!p.state_dir || !p.conf || !p.runtime_dir || !p.qmp_socket || !p.qmp_watch_socket || !p.serial_socket ||
            !p.serial_log || !p.pidfile || !p.qemu_log || !p.runtime_state || !p.vnc_socket || !p.vnc_password) {
                vm_paths_done(&p);
                return -ENOMEM;
        }
        /* sun_path holds 108 bytes; say so instead of letting QEMU fail. */
        if (strlen(p.qmp_socket) >= sizeof(((struct sockaddr_un *) 0)->sun_path) ||
            strlen(p.qmp_watch_socket) >= sizeof(((struct sockaddr_un *) 0)->sun_path) ||
            strlen(p.serial_socket) >= sizeof(((struct sockaddr_un *) 0)->sun_path) ||
            strlen(p.vnc_socket) >= sizeof(((struct sockaddr_un *) 0)->sun_path)) {
                int r = vh_error_set(err, -ENAMETOOLONG, "Runtime directory %s is too long for unix socket paths",
                                     p.runtime_dir);
                vm_paths_done(&p);
                return r;
        }
        *ret = p;
        return 0;
}

void vm_paths_done(struct vm_paths *p) {
        free(p->state_dir);
        free(p->conf);
        free(p->runtime_dir);
        free(p->qmp_socket);
        free(p->qmp_watch_socket);
        free(p->serial_socket);
        free(p->serial_log);
        free(p->pidfile);
        free(p->qemu_log);
        free(p->runtime_state);
        free(p->vnc_socket);
        free(p->vnc_password);
        *p = (struct vm_paths) {};
}

static void vm_paths_donep(struct vm_paths *p) {
        vm_paths_done(p);
}
#define _cleanup_paths_ _cleanup_(vm_paths_donep)

bool vm_exists(const struct vh_context *ctx, const char *name) {
        _cleanup_paths_ struct vm_paths p = {};
        return vm_paths_get(ctx, name, &p, NULL) >= 0 && file_exists(p.conf);
}

int vm_load(const struct vh_context *ctx, const char *name, struct vm_def **ret, struct vh_error *err) {
        _cleanup_paths_ struct vm_paths p = {};
        int r = vm_paths_get(ctx, name, &p, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *text = NULL;
        r = def_file_read(p.conf, VM_CONF_MAX_BYTES, &text, err);
        if (r == -ENOENT)
                return vh_error_set(err, r, "No VM named '%s' (no %s). See 'vmhost vm list'.", name, p.conf);
        if (r < 0)
                return r;
        struct vm_def *def;
        r = vm_def_parse(text, p.conf, &def, err);
        if (r < 0)
                return r;
        if ((r = def_name_check(p.conf, def->name, name, err)) < 0) {
                vm_def_free(def);
                return r;
        }
        *ret = def;
        return 0;
}

int vm_save(const struct vh_context *ctx, const struct vm_def *def, struct vh_error *err) {
        _cleanup_paths_ struct vm_paths p = {};
        int r = vm_paths_get(ctx, def->name, &p, err);
        if (r < 0)
                return r;
        r = vm_def_validate(def, err);
        if (r < 0)
                return r;
        r = mkdir_p(p.state_dir, 0700);
        if (r < 0)
                return vh_error_set(err, r, "Cannot create %s: %s", p.state_dir, strerror(-r));
        _cleanup_free_ char *text = vm_def_format(def);
        if (!text)
                return -ENOMEM;
        r = write_file_atomic(p.conf, text, strlen(text), 0600);
        if (r < 0)
                return vh_error_set(err, r, "Cannot write %s: %s", p.conf, strerror(-r));
        return 0;
}

const char *vm_state_to_string(enum vm_state s) {
        switch (s) {
        case VM_STATE_STOPPED: return "stopped";
        case VM_STATE_RUNNING: return "running";
        case VM_STATE_CRASHED: return "crashed";
        case VM_STATE_STARTING: return "starting";
        }
        return "unknown";
}

/* ------------------------------------------------------------ the VM lock */

/* The locks this thread holds, for re-entry: a function that holds a VM's
 * lock calls others that take it too (restart calls stop and start; stop
 * asks vm_get_status, whose crash clean-up takes it). A second descriptor
 * would conflict with the first, so re-entry counts instead. Few at once:
 * an operation locks its own VM. */
#define VM_LOCKS_PER_THREAD 8

/* A lock is known by its file, not by the VM's name alone: a process may
 * work with several contexts (homes), each with its own VMs. vm_paths_get()
 * keeps a runtime directory short enough for a unix socket path, so the
 * lock's path fits here too. */
#define VM_LOCK_PATH_MAX 256

struct vm_lock {
        char path[VM_LOCK_PATH_MAX];
        int fd;
        unsigned depth; /* 0: slot free */
        bool stopping;  /* this thread stops the VM: a QEMU found gone is a stop, not a crash */
};

static _Thread_local struct vm_lock held_locks[VM_LOCKS_PER_THREAD];

/* RUN/vms/NAME.lock into 'buf' (no directory made); false when too long. */
static bool lock_path_format(const struct vh_context *ctx, const char *name, char buf[static VM_LOCK_PATH_MAX]) {
        int n = snprintf(buf, VM_LOCK_PATH_MAX, "%s/vms/%s.lock", ctx->runtime_dir, name);
        return n > 0 && n < VM_LOCK_PATH_MAX;
}

static struct vm_lock *held_lock(const struct vh_context *ctx, const char *name) {
        char path[VM_LOCK_PATH_MAX];
        if (!lock_path_format(ctx, name, path))
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(held_locks); i++)
                if (held_locks[i].depth > 0 && streq(held_locks[i].path, path))
                        return &held_locks[i];
        return NULL;
}

int vm_lock_path(const struct vh_context *ctx, const char *name, char **ret) {
        if (!name_is_valid(name))
                return -EINVAL;
        _cleanup_free_ char *dir = NULL;
        int r = vh_runtime_subdir(ctx, "vms", &dir);
        if (r < 0)
                return r;
        char *path = strdup_printf("%s/%s.lock", dir, name);
        if (!path)
                return -ENOMEM;
        *ret = path;
        return 0;
}

int vm_lock_take(const struct vh_context *ctx, const char *name, const char *op, unsigned timeout_ms,
                 struct vm_lock **ret, struct vh_error *err) {
        if (!name_is_valid(name))
                return vh_error_set(err, -EINVAL,
                                    "Invalid VM name '%s': use 1-%d letters, digits, '-' or '_', starting with a letter or digit",
                                    name, VH_NAME_MAX);
        struct vm_lock *l = held_lock(ctx, name);
        if (l) {
                l->depth++;
                *ret = l;
                return 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(held_locks) && !l; i++)
                if (held_locks[i].depth == 0)
                        l = &held_locks[i];
        if (!l)
                return vh_error_set(err, -ENOLCK, "Cannot lock VM %s: this thread holds %zu VM locks already", name,
                                    ELEMENTSOF(held_locks));
        _cleanup_free_ char *path = NULL;
        int r = vm_lock_path(ctx, name, &path);
        if (r < 0)
                return vh_error_set(err, r, "Cannot create the runtime directory for the lock of VM %s: %s", name,
                                    strerror(-r));
        if (strlen(path) >= VM_LOCK_PATH_MAX)
                return vh_error_set(err, -ENAMETOOLONG, "The lock file of VM %s (%s) has too long a path", name, path);
        char what[VH_NAME_MAX + 8];
        snprintf(what, sizeof(what), "VM %s", name);
        int fd = vh_lockfile_take(path, what, op, timeout_ms, err);
        if (fd < 0)
                return fd;
        snprintf(l->path, sizeof(l->path), "%s", path);
        l->fd = fd;
        l->depth = 1;
        *ret = l;
        return 0;
}

int vm_lock_take_with_home(const struct vh_context *ctx, const char *name, const char *op, struct vm_lock **ret,
                           int *ret_home_fd, struct vh_error *err) {
        struct vm_lock *lock = NULL;
        int r = vm_lock_take(ctx, name, op, VM_LOCK_TIMEOUT_MS, &lock, err);
        if (r < 0)
                return r;
        r = vm_home_lock(ctx, ret_home_fd, err);
        if (r < 0) {
                vm_lock_release(lock);
                return r;
        }
        *ret = lock;
        return 0;
}

bool vm_cancelled(const struct vm_cancel *cancel) {
        return cancel && cancel->func && cancel->func(cancel->userdata);
}

int vm_lock_take_cancellable(const struct vh_context *ctx, const char *name, const char *op, unsigned timeout_ms,
                             const struct vm_cancel *cancel, struct vm_lock **ret, struct vh_error *err) {
        if (!cancel)
                return vm_lock_take(ctx, name, op, timeout_ms, ret, err);
        /* The wait in steps, each a bounded take of its own, with the
         * question in between. */
        uint64_t deadline = vh_clock_ms() + timeout_ms;
        for (;;) {
                if (vm_cancelled(cancel))
                        return vh_error_set(err, -ECANCELED, "VM %s was not %s: cancelled while waiting for its lock",
                                            name, op);
                uint64_t now = vh_clock_ms();
                unsigned step = (unsigned) MIN(deadline > now ? deadline - now : 0, (uint64_t) VM_CANCEL_STEP_MS);
                struct vh_error step_err = {};
                int r = vm_lock_take(ctx, name, op, step, ret, &step_err);
                if (r != -EBUSY)
                        return r < 0 ? vh_error_set(err, r, "%s", vh_error_message(&step_err, r)) : r;
                if (vh_clock_ms() < deadline)
                        continue;
                /* The step's message would name the step's wait, not this one. */
                struct vh_lock_holder h = {};
                char path[VM_LOCK_PATH_MAX];
                if (lock_path_format(ctx, name, path) && vh_lockfile_holder(path, &h) > 0 && h.pid > 0)
                        return vh_error_set(err, -EBUSY,
                                            "VM %s is busy: being %s by pid %d (waited %u.%u s); try again when it is done",
                                            name, h.op[0] ? h.op : "used", h.pid, timeout_ms / 1000,
                                            timeout_ms % 1000 / 100);
                return vh_error_set(err, -EBUSY, "VM %s is busy (waited %u.%u s); try again when it is done", name,
                                    timeout_ms / 1000, timeout_ms % 1000 / 100);
        }
}

struct vm_lock *vm_lock_release(struct vm_lock *l) {
        if (l && l->depth > 0 && --l->depth == 0) {
                l->fd = safe_close(l->fd);
                l->stopping = false;
        }
        return NULL;
}

/* Whether another thread or process holds VM 'name's lock; if so, its
 * action goes to st->busy and st->busy_pid. Never waits: one open and one
 * fcntl, asked for every VM by 'vm list'. */
static bool holder_get(const struct vh_context *ctx, const struct vm_paths *p, const char *name,
                       struct vm_status *st) {
        struct vh_lock_holder h = {};
        if (held_lock(ctx, name))
                return false;
        /* RUN/vms/NAME.lock, as vm_lock_path() names it, without its mkdir.
         * vm_paths_get() keeps the runtime directory shorter than a socket
         * path. */
        char path[sizeof(((struct sockaddr_un *) 0)->sun_path) + sizeof(".lock")];
        if ((size_t) snprintf(path, sizeof(path), "%s.lock", p->runtime_dir) >= sizeof(path) ||
            vh_lockfile_holder(path, &h) <= 0)
                return false;
        /* A holder that has not written its name yet is still a holder. */
        snprintf(st->busy, sizeof(st->busy), "%s", h.op[0] ? h.op : "locked");
        st->busy_pid = h.pid;
        return true;
}

/* What another process that holds VM 'name's lock is doing, as a state
 * for vm_get_status (with st->busy filled); 'fallback' when nobody holds it
 * or it does something else. Never waits. */
static enum vm_state state_of_holder(const struct vh_context *ctx, const struct vm_paths *p, const char *name,
                                     enum vm_state fallback, struct vm_status *st) {
        if (!holder_get(ctx, p, name, st))
                return fallback;
        if (streq(st->busy, "started") || streq(st->busy, "restarted"))
                return VM_STATE_STARTING;
        if (streq(st->busy, "stopped") || streq(st->busy, "killed") || streq(st->busy, "deleted"))
                return VM_STATE_STOPPED;
        return fallback;
}

/* Whether 'pid' is the QEMU we started: its command line names our QMP
 * socket. Guards against a recycled pid after a crash or reboot. */
static bool pid_is_our_qemu(int pid, const char *qmp_socket) {
        if (!process_alive(pid))
                return false;
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
        _cleanup_free_ char *cmdline = NULL;
        size_t len;
        if (read_full_file(path, 1 << 20, &cmdline, &len) < 0)
                return false;
        for (size_t i = 0; i < len; i += strlen(cmdline + i) + 1)
                if (strstr(cmdline + i, qmp_socket))
                        return true;
        return false;
}

static int runtime_state_read(const char *path, struct vm_status *st) {
        _cleanup_free_ char *text = NULL;
        int r = read_full_file(path, 64 * 1024, &text, NULL);
        if (r < 0)
                return r;
        char *save = NULL;
        for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
                char *eq = strchr(line, '=');
                if (!eq)
                        continue;
                *eq = '\0';
                const char *k = line, *v = eq + 1;
                uint64_t u;
                if (streq(k, "pid") && parse_u64(v, &u) == 0 && u < INT32_MAX)
                        st->pid = (int) u;
                else if (streq(k, "accel"))
                        snprintf(st->accel, sizeof(st->accel), "%s", v);
                else if (streq(k, "serial-log-offset") && parse_u64(v, &u) == 0)
                        st->serial_log_offset = u;
                else if (streq(k, "netns"))
                        snprintf(st->netns, sizeof(st->netns), "%s", v);
                else if (streq(k, "started") && parse_u64(v, &u) == 0 && u <= INT64_MAX)
                        st->started_at = (int64_t) u;
                else if (startswith(k, "nic.")) {
                        uint64_t idx;
                        if (parse_u64(k + strlen("nic."), &idx) == 0 && idx < VM_MAX_NICS && name_is_valid(v))
                                snprintf(st->nic_networks[idx], sizeof(st->nic_networks[idx]), "%s", v);
                } else if (startswith(k, "forward.")) {
                        uint64_t idx;
                        if (parse_u64(k + strlen("forward."), &idx) == 0 && idx < VM_MAX_FORWARDS &&
                            parse_u64(v, &u) == 0 && u <= 65535)
                                st->host_ports[idx] = (uint16_t) u;
                }
        }
        return 0;
}

static int runtime_state_write(const char *path, const struct vm_status *st, unsigned n_forwards) {
        char buf[2048];
        int n = snprintf(buf, sizeof(buf), "pid=%d\naccel=%s\nserial-log-offset=%" PRIu64 "\n", st->pid, st->accel,
                         st->serial_log_offset);
        for (unsigned i = 0; i < n_forwards && n < (int) sizeof(buf); i++)
                n += snprintf(buf + n, sizeof(buf) - (size_t) n, "forward.%u=%u\n", i, st->host_ports[i]);
        for (unsigned i = 0; i < VM_MAX_NICS && n < (int) sizeof(buf); i++)
                if (st->nic_networks[i][0])
                        n += snprintf(buf + n, sizeof(buf) - (size_t) n, "nic.%u=%s\n", i, st->nic_networks[i]);
        if (st->netns[0] && n < (int) sizeof(buf))
                n += snprintf(buf + n, sizeof(buf) - (size_t) n, "netns=%s\n", st->netns);
        if (st->started_at > 0 && n < (int) sizeof(buf))
                n += snprintf(buf + n, sizeof(buf) - (size_t) n, "started=%" PRId64 "\n", st->started_at);
        if (n >= (int) sizeof(buf))
                return -ENOBUFS;
        return write_file_atomic(path, buf, (size_t) n, 0600);
}

/* Removes what a running QEMU leaves in the runtime directory. */
static void runtime_clean(const struct vm_paths *p) {
        unlink(p->qmp_socket);
        unlink(p->qmp_watch_socket);
        unlink(p->serial_socket);
        unlink(p->vnc_socket);
        unlink(p->vnc_password);
        unlink(p->pidfile);
        unlink(p->runtime_state);
        rmdir(p->runtime_dir);
}

/* The last non-empty line of QEMU's stderr log: why it exited. */
static void last_log_line(const char *path, char *buf, size_t len) {
        _cleanup_free_ char *text = NULL;
        size_t n;
        buf[0] = '\0';
        if (read_full_file(path, 1 << 20, &text, &n) < 0)
                return;
        while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r'))
                text[--n] = '\0';
        char *start = strrchr(text, '\n');
        snprintf(buf, len, "%s", start ? start + 1 : text);
}

/* An unsigned decimal of at most 18 digits (far below INT64_MAX) at *s, which
 * is moved past it. */
static int parse_decimal(const char **s, uint64_t *ret) {
        uint64_t v = 0;
        size_t n = 0;
        for (; **s >= '0' && **s <= '9'; (*s)++, n++) {
                if (n == 18)
                        return -EINVAL;
                v = v * 10 + (uint64_t) (**s - '0');
        }
        if (n == 0)
                return -EINVAL;
        *ret = v;
        return 0;
}

int vm_process_start_parse(const char *pid_stat, const char *proc_stat, long hz, int64_t *ret) {
        if (strnlen(pid_stat, VM_PROC_PID_STAT_MAX + 1) > VM_PROC_PID_STAT_MAX ||
            strnlen(proc_stat, VM_PROC_STAT_MAX + 1) > VM_PROC_STAT_MAX)
                return -E2BIG;
        if (hz <= 0 || hz > 1000000)
                return -EINVAL;
        /* "PID (COMM) S F4 F5 ...": the name may hold anything but a NUL,
         * so the fields start after its last ')'. */
        const char *f = strrchr(pid_stat, ')');
        if (!f || f[1] != ' ' || !f[2] || f[3] != ' ')
                return -EINVAL;
        f += 4; /* at field 4 */
        uint64_t ticks = 0;
        for (int field = 4; field <= 22; field++) {
                /* Fields 4-21 are numbers, some of them negative. */
                if (*f == '-' && field != 22)
                        f++;
                if (parse_decimal(&f, &ticks) < 0)
                        return -EINVAL;
                if (field < 22 && *f++ != ' ')
                        return -EINVAL;
        }
        if (*f != ' ' && *f != '\n' && *f != '\0')
                return -EINVAL;

        const char *b = proc_stat;
        while (b && !startswith(b, "btime ")) {
                b = strchr(b, '\n');
                if (b)
                        b++;
        }
        if (!b)
                return -EINVAL;
        b += strlen("btime ");
        uint64_t btime;
        if (parse_decimal(&b, &btime) < 0 || (*b != '\n' && *b != '\0') || btime == 0)
                return -EINVAL;
        *ret = (int64_t) (btime + ticks / (uint64_t) hz);
        return 0;
}

/* The start of process 'pid' from /proc, 0 when it cannot be told (the
 * process went, /proc is not mounted). */
static int64_t process_started(int pid) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/stat", pid);
        _cleanup_free_ char *pid_stat = NULL, *proc_stat = NULL;
        int64_t t;
        if (read_full_file(path, VM_PROC_PID_STAT_MAX, &pid_stat, NULL) < 0 ||
            read_full_file("/proc/stat", VM_PROC_STAT_MAX, &proc_stat, NULL) < 0 ||
            vm_process_start_parse(pid_stat, proc_stat, sysconf(_SC_CLK_TCK), &t) < 0)
                return 0;
        return t;
}

int vm_get_status(const struct vh_context *ctx, const char *name, struct vm_status *ret, struct vh_error *err) {
        _cleanup_paths_ struct vm_paths p = {};
        int r = vm_paths_get(ctx, name, &p, err);
        if (r < 0)
                return r;
        if (!file_exists(p.conf))
                return vh_error_set(err, -ENOENT, "No VM named '%s'. See 'vmhost vm list'.", name);

        struct vm_status st = { .state = VM_STATE_STOPPED };
        r = runtime_state_read(p.runtime_state, &st);
        if (r == -ENOENT) {
                /* No QEMU recorded: stopped, or a start is under way. */
                st.state = state_of_holder(ctx, &p, name, VM_STATE_STOPPED, &st);
                *ret = st;
                return 0;
        }
        if (r < 0)
                return vh_error_set(err, r, "Cannot read %s: %s", p.runtime_state, strerror(-r));

        if (pid_is_our_qemu(st.pid, p.qmp_socket)) {
                st.state = VM_STATE_RUNNING;
                /* Started by a vmhost that did not record the time. */
                if (st.started_at == 0)
                        st.started_at = process_started(st.pid);
                (void) holder_get(ctx, &p, name, &st);
                *ret = st;
                return 0;
        }

        /* Recorded as running but gone: QEMU died or the host rebooted.
         * Report why and clean the stale runtime files. A clean stop removes
         * the state file first, so reaching here means it was not one.
         * The clean-up changes the VM: it runs under the VM's lock, with the
         * state read again there (a start or stop may have finished since). */
        if (!held_lock(ctx, name)) {
                /* Only tried: a holder may keep it for the whole of a
                 * start or a guest's shutdown, and a listing of many VMs
                 * must not wait for each. */
                struct vm_lock *lock = NULL;
                struct vh_error lock_err = {};
                r = vm_lock_take(ctx, name, "checked", 0, &lock, &lock_err);
                if (r >= 0) {
                        r = vm_get_status(ctx, name, ret, err);
                        vm_lock_release(lock);
                        return r;
                }
                if (r != -EBUSY)
                        return vh_error_set(err, r, "%s", vh_error_message(&lock_err, r));
                /* Someone else works on the VM now: say what it does and
                 * leave its files to it. */
                st.state = state_of_holder(ctx, &p, name, VM_STATE_CRASHED, &st);
                st.started_at = 0;
                if (st.state == VM_STATE_CRASHED)
                        last_log_line(p.qemu_log, st.exit_reason, sizeof(st.exit_reason));
                st.pid = 0;
                *ret = st;
                return 0;
        }
        struct vm_lock *mine = held_lock(ctx, name);
        if (mine && mine->stopping) {
                /* Our own stop made it go (a guest power-off, 'quit', the
                 * signal): clean up as a stop, with no crash to remember. */
                (void) vm_net_detach(ctx, name, st.nic_networks, VM_MAX_NICS, NULL);
                runtime_clean(&p);
                *ret = (struct vm_status) { .state = VM_STATE_STOPPED };
                return 0;
        }
        st.state = VM_STATE_CRASHED;
        st.started_at = 0;
        /* Its taps and switch ports go with it. */
        (void) vm_net_detach(ctx, name, st.nic_networks, VM_MAX_NICS, NULL);
        last_log_line(p.qemu_log, st.exit_reason, sizeof(st.exit_reason));
        if (!st.exit_reason[0])
                snprintf(st.exit_reason, sizeof(st.exit_reason), "QEMU (pid %d) is gone; its log is empty", st.pid);
        runtime_clean(&p);
        /* Remember the crash for the next 'status' until the next start. */
        _cleanup_free_ char *crash = strdup_printf("%s/last-exit", p.state_dir);
        if (crash)
                (void) write_file_atomic(crash, st.exit_reason, strlen(st.exit_reason), 0600);
        st.pid = 0;
        *ret = st;
        return 0;
}

int vm_open_running(const struct vh_context *ctx, const char *name, struct vm_paths *ret_paths,
                    struct vm_status *ret_status, struct vh_error *err) {
        struct vm_status st;
        int r = vm_get_status(ctx, name, &st, err);
        if (r < 0)
                return r;
        if (st.state != VM_STATE_RUNNING)
                return vh_error_set(err, -ESRCH, "VM %s is not running%s%s", name, st.exit_reason[0] ? ": " : "",
                                    st.exit_reason);
        if (ret_paths) {
                r = vm_paths_get(ctx, name, ret_paths, err);
                if (r < 0)
                        return r;
        }
        if (ret_status)
                *ret_status = st;
        return 0;
}

void vm_last_exit(const struct vh_context *ctx, const char *name, char *buf, size_t len) {
        buf[0] = '\0';
        _cleanup_paths_ struct vm_paths p = {};
        if (vm_paths_get(ctx, name, &p, NULL) < 0)
                return;
        _cleanup_free_ char *path = strdup_printf("%s/last-exit", p.state_dir), *text = NULL;
        if (path && read_one_line_file(path, &text) >= 0)
                snprintf(buf, len, "%s", text);
}

int vm_allocate_port(bool udp, uint16_t *ret) {
        _cleanup_close_ int fd = socket(AF_INET, (udp ? SOCK_DGRAM : SOCK_STREAM) | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        if (bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return negative_errno();
        socklen_t len = sizeof(sa);
        if (getsockname(fd, (struct sockaddr *) &sa, &len) < 0)
                return negative_errno();
        *ret = ntohs(sa.sin_port);
        return 0;
}

/* Waits until QEMU's QMP socket sends its greeting, 'pid' dies (-ESRCH) or
 * the time is up (-ETIMEDOUT). The socket listens before QEMU has opened
 * its disks; the greeting only comes from the main loop, once QEMU is fully
 * initialized. Only the greeting is read: no command is sent. */
static int wait_for_qmp_greeting(const char *path, int pid, unsigned timeout_ms, const struct vm_cancel *cancel) {
        uint64_t deadline = vh_clock_ms() + timeout_ms;
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        for (;;) {
                _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
                if (fd < 0)
                        return negative_errno();
                if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0) {
                        char buf[512];
                        size_t len = 0;
                        while (vh_clock_ms() < deadline) {
                                struct pollfd pfd = { .fd = fd, .events = POLLIN };
                                int n = poll(&pfd, 1, 50);
                                if (n < 0 && errno != EINTR)
                                        return negative_errno();
                                if (n > 0) {
                                        ssize_t k = read(fd, buf + len, sizeof(buf) - 1 - len);
                                        if (k <= 0)
                                                break; /* closed: QEMU failed, or is going */
                                        len += (size_t) k;
                                        buf[len] = '\0';
                                        if (strstr(buf, "\"QMP\""))
                                                return 0;
                                        if (len == sizeof(buf) - 1)
                                                return 0; /* a long greeting is still one */
                                }
                                if (!process_alive(pid))
                                        return -ESRCH;
                                if (vm_cancelled(cancel))
                                        return -ECANCELED;
                        }
                }
                if (!process_alive(pid))
                        return -ESRCH;
                if (vm_cancelled(cancel))
                        return -ECANCELED;
                if (vh_clock_ms() >= deadline)
                        return -ETIMEDOUT;
                /* QEMU takes 0.1-0.5 s to listen; polling every 1 ms (a few
                 * cheap syscalls) notices at once, every 10 ms added 5 ms on
                 * average to every start (tools/bench/bench-vm). */
                usleep(1000);
        }
}

static uint64_t file_size_or_zero(const char *path) {
        struct stat st;
        return stat(path, &st) == 0 ? (uint64_t) st.st_size : 0;
}

/* Opens 'path' for QEMU to inherit: close-on-exec until the child that
 * becomes QEMU clears the flag, and above 0-2, which that child replaces
 * with /dev/null and its log. */
static int open_for_qemu(const char *path, int flags) {
        int fd = open(path, flags | O_CLOEXEC | O_NOCTTY);
        if (fd < 0)
                return negative_errno();
        if (fd <= STDERR_FILENO) {
                int moved = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
                int r = moved < 0 ? negative_errno() : moved;
                close(fd);
                return r;
        }
        return fd;
}

static void launch_file_close(struct vm_launch_file *f) {
        if (f->fd_read > STDERR_FILENO)
                close(f->fd_read);
        if (f->fd_write > STDERR_FILENO)
                close(f->fd_write);
        *f = (struct vm_launch_file) {};
}

static void launch_files_close(struct vm_launch_files *f) {
        for (unsigned i = 0; i < f->n_disk_layers; i++)
                launch_file_close(&f->disk_layers[i].file);
        f->n_disk_layers = 0;
        launch_file_close(&f->cdrom);
        launch_file_close(&f->kernel);
        launch_file_close(&f->initrd);
}

/* Every descriptor in 'f', for the child to pass on; returns the count. */
static size_t launch_files_fds(const struct vm_launch_files *f, int *ret_fds, size_t max) {
        size_t n = 0;
        const struct vm_launch_file *all[VM_MAX_DISK_LAYERS + 3];
        size_t n_all = 0;
        for (unsigned i = 0; i < f->n_disk_layers; i++)
                all[n_all++] = &f->disk_layers[i].file;
        all[n_all++] = &f->cdrom;
        all[n_all++] = &f->kernel;
        all[n_all++] = &f->initrd;
        for (size_t i = 0; i < n_all; i++) {
                if (all[i]->fd_read > STDERR_FILENO && n < max)
                        ret_fds[n++] = all[i]->fd_read;
                if (all[i]->fd_write > STDERR_FILENO && n < max)
                        ret_fds[n++] = all[i]->fd_write;
        }
        return n;
}

/* Opens the disk and every file of its backing chain. The chain is the
 * one the image engine reads (relative backing names resolved against the
 * directory of the image naming them, as QEMU does); QEMU gets exactly
 * these files and opens no other. The VM's own file is opened read-only
 * and read-write: QEMU writes it, and reopens it read-only when it turns
 * into a backing file (the old top of a live external snapshot). A backing
 * file only read-only: it may be shared, and QEMU never writes one (see
 * vm-cmdline.c), so a base the user may only read (0444) is fine. */
static int open_disk_layers(const struct vm_def *def, struct vm_launch_files *f, struct vh_error *err) {
        int fmt = vh_image_format_from_string(def->disk_format);
        if (fmt < 0)
                return vh_error_set(err, -EINVAL, "Disk %s of VM %s has format '%s'; vmhost runs qcow2 and raw",
                                    def->disk, def->name, def->disk_format);
        /* No locks: QEMU takes its own on the descriptors. */
        struct vh_image_open_options o = { .format = fmt, .flags = VH_IMAGE_OPEN_FORCE_SHARE };
        _cleanup_(vh_image_freep) struct vh_image *img = NULL;
        struct vh_error why = {};
        int r = vh_image_open(def->disk, &o, &img, &why);
        if (r < 0)
                return vh_error_set(err, r, "Cannot open the disk of VM %s: %s", def->name, vh_error_message(&why, r));
        for (const struct vh_image *cur = img; cur; cur = vh_image_backing(cur)) {
                if (f->n_disk_layers == VM_MAX_DISK_LAYERS)
                        return vh_error_set(err, -ELOOP, "The disk of VM %s has more than %d backing files", def->name,
                                            VM_MAX_DISK_LAYERS - 1);
                struct vm_launch_layer *y = &f->disk_layers[f->n_disk_layers];
                const char *path = vh_image_filename(cur);
                bool own = f->n_disk_layers == 0;
                r = open_for_qemu(path, O_RDONLY);
                if (r < 0)
                        return own ? vh_error_set(err, r, "Cannot open disk %s of VM %s: %s", path, def->name, strerror(-r))
                                   : vh_error_set(err, r, "Cannot open %s (backing file of the disk of VM %s): %s", path,
                                                  def->name, strerror(-r));
                y->file.fd_read = r;
                f->n_disk_layers++;
                if (own) {
                        r = open_for_qemu(path, O_RDWR);
                        if (r < 0)
                                return vh_error_set(err, r, "Cannot open disk %s of VM %s for writing: %s", path,
                                                    def->name, strerror(-r));
                        y->file.fd_write = r;
                }
                /* The path is opened again: it must still be the file whose
                 * format and chain were just read, or QEMU would get another
                 * (a qcow2 put in its place would be served as raw). */
                if (!vh_image_is_file(cur, y->file.fd_read) || (own && !vh_image_is_file(cur, y->file.fd_write)))
                        return vh_error_set(err, -ESTALE, "%s (%s VM %s) was replaced while vmhost opened it; start again",
                                            path, own ? "the disk of" : "a backing file of the disk of", def->name);
                struct stat st;
                if (fstat(y->file.fd_read, &st) < 0)
                        return vh_error_set(err, negative_errno(), "Cannot stat %s: %m", path);
                y->driver = S_ISBLK(st.st_mode) ? "host_device" : "file";
                y->format = vh_image_format_to_string(vh_image_get_format(cur));
        }
        return 0;
}

/* Opens every file QEMU needs: the disk's chain, the CD, kernel and
 * initrd, with the rights of whoever runs vmhost. QEMU gets descriptors
 * (see struct vm_launch_file), so neither its first open nor any later
 * reopen depends on what QEMU's unprivileged user may open. */
static int launch_files_open(const struct vm_def *def, struct vm_launch_files *f, struct vh_error *err) {
        int r = 0;
        if (def->disk)
                r = open_disk_layers(def, f, err);
        struct {
                const char *path, *what;
                struct vm_launch_file *file;
        } ro[] = {
                { def->cdrom, "CD-ROM image", &f->cdrom },
                { def->boot == VM_BOOT_KERNEL ? def->kernel : NULL, "kernel", &f->kernel },
                { def->boot == VM_BOOT_KERNEL ? def->initrd : NULL, "initrd", &f->initrd },
        };
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(ro); i++) {
                if (!ro[i].path)
                        continue;
                r = open_for_qemu(ro[i].path, O_RDONLY);
                if (r < 0)
                        r = vh_error_set(err, r, "Cannot open %s %s of VM %s: %s", ro[i].what, ro[i].path, def->name,
                                         strerror(-r));
                else
                        ro[i].file->fd_read = r;
        }
        if (r < 0)
                launch_files_close(f);
        return r < 0 ? r : 0;
}

/* SIGKILL, and a bounded wait until QEMU is gone with its descriptors
 * (disks, taps, sockets), so that nothing is undone under it. A QEMU that
 * outlives the wait (stuck in the kernel) is reported as still there. */
static bool qemu_kill_wait(int pid) {
        if (kill(pid, SIGKILL) < 0 && errno == ESRCH)
                return true;
        return process_wait_gone(pid, 5000);
}

/* ------------------------------------------------------------ vm start */

/* Kills the QEMU of a start that failed and waits (bounded) until it is
 * gone with its descriptors, through the pidfd taken at launch, so that
 * the signal cannot reach a process that reused the pid. */
static void job_kill_qemu(struct vm_start_job *job) {
        if (job->pid <= 0 || job->qemu_gone)
                return;
        if (job->pid_fd >= 0)
                (void) process_pidfd_terminate(job->pid_fd, 0, 5000);
        else
                (void) qemu_kill_wait(job->pid);
        job->qemu_gone = true;
}

struct vm_start_job *vm_start_job_free(struct vm_start_job *job) {
        if (!job)
                return NULL;
        const struct vh_context *ctx = job->ctx;
        if (!job->recorded) {
                /* The one undo path of a failed start, in the reverse order
                 * of the making: QEMU first (it holds the taps and files),
                 * then the taps, then the runtime files. */
                job_kill_qemu(job);
                if (job->nets_attached)
                        (void) vm_net_detach(ctx, job->def->name, job->status.nic_networks, VM_MAX_NICS, NULL);
                if (job->runtime_made)
                        runtime_clean(&job->paths);
        }
        launch_files_close(&job->files);
        safe_close(job->pid_fd);
        vm_paths_done(&job->paths);
        vm_def_free(job->def);
        free(job);
        return NULL;
}

int vm_start_prepare(const struct vh_context *ctx, const char *name, struct vm_start_job **ret, struct vh_error *err) {
        _cleanup_(vm_start_job_freep) struct vm_start_job *job = calloc(1, sizeof(*job));
        if (!job)
                return -ENOMEM;
        job->pid_fd = -1;
        job->ctx = ctx;
        int r = vm_load(ctx, name, &job->def, err);
        if (r < 0)
                return r;
        const struct vm_def *def = job->def;
        r = vm_paths_get(ctx, name, &job->paths, err);
        if (r < 0)
                return r;
        const struct vm_paths *p = &job->paths;

        struct vm_status cur;
        r = vm_get_status(ctx, name, &cur, err);
        if (r < 0)
                return r;
        if (cur.state == VM_STATE_RUNNING)
                return vh_error_set(err, -EALREADY, "VM %s is already running (pid %d)", name, cur.pid);

        if (def->disk && !file_exists(def->disk))
                return vh_error_set(err, -ENOENT, "Disk %s of VM %s does not exist", def->disk, name);
        if (def->cdrom && !file_exists(def->cdrom))
                return vh_error_set(err, -ENOENT, "CD-ROM image %s of VM %s does not exist", def->cdrom, name);

        struct vm_status *st = &job->status;
        st->state = VM_STATE_RUNNING;
        /* A VM defined before machine types were pinned (or where QEMU
         * could not tell at create) is pinned now, by the caller's lock. */
        bool pinned;
        r = vm_machine_pin(ctx, job->def, &pinned);
        if (r < 0)
                return r;
        if (pinned && (r = vm_save(ctx, def, err)) < 0)
                return r;
        r = vm_accel_resolve(ctx, def->accel, &job->accel, err);
        if (r < 0)
                return r;
        /* Before anything is attached: a definition edited by hand may ask
         * for a CPU model this accelerator cannot run. */
        r = vm_accel_check_cpu(name, def->cpu_model, job->accel, err);
        if (r < 0)
                return r;
        snprintf(st->accel, sizeof(st->accel), "%s", job->accel);

        for (unsigned i = 0; i < def->n_forwards; i++) {
                st->host_ports[i] = def->forwards[i].host_port;
                if (st->host_ports[i] == 0) {
                        r = vm_allocate_port(def->forwards[i].proto == VM_FWD_UDP, &st->host_ports[i]);
                        if (r < 0)
                                return vh_error_set(err, r, "Cannot allocate a host port for VM %s: %s", name,
                                                    strerror(-r));
                }
        }
        /* MACs are allocated at create; a hand-written NIC without one gets
         * the derived MAC, which is the same at every start. */
        for (unsigned i = 0; i < def->n_nics; i++)
                if (!def->nics[i].mac[0] && (r = vm_derive_mac(ctx, def->id, i, job->def->nics[i].mac)) < 0)
                        return vh_error_set(err, r, "VM %s has no id to derive the MAC of NIC %u from; set 'mac=' or 'id ='",
                                            name, i);

        /* QEMU drops to an unprivileged user once it has opened its
         * sockets and taps; its disks, CD and kernel are descriptors opened
         * below, and files it needs later (screenshots, a new CD) are
         * opened by vmhost and passed to it too (see vm-control.c). */
        r = vm_qemu_user(ctx, &job->qemu_user, NULL, NULL, err);
        if (r < 0)
                return r;

        /* Opened before anything is set up, so that a file the caller may
         * not open fails the start with nothing to undo. */
        r = launch_files_open(def, &job->files, err);
        if (r < 0)
                return r;

        r = mkdir_p(p->state_dir, 0700);
        if (r < 0)
                return vh_error_set(err, r, "Cannot create %s: %s", p->state_dir, strerror(-r));
        r = mkdir_p(p->runtime_dir, 0700);
        if (r < 0)
                return vh_error_set(err, r, "Cannot create %s: %s", p->runtime_dir, strerror(-r));
        /* What a QEMU that is gone left behind. */
        job->runtime_made = true;
        runtime_clean(p);
        r = mkdir_p(p->runtime_dir, 0700);
        if (r < 0)
                return vh_error_set(err, r, "Cannot create %s: %s", p->runtime_dir, strerror(-r));

        /* Taps exist only while the VM runs: made now, removed at stop, at
         * the first command after a crash, or by the undo if the start
         * fails. */
        r = vm_net_attach(ctx, def, &job->nets, err);
        if (r < 0)
                return r;
        job->nets_attached = true;
        memcpy(st->nic_networks, job->nets.network, sizeof(st->nic_networks));
        snprintf(st->netns, sizeof(st->netns), "%s", job->nets.netns);
        snprintf(st->warning, sizeof(st->warning), "%s", job->nets.warning);

        *ret = TAKE_PTR(job);
        return 0;
}

/* What the QEMU child reports through its error pipe when it cannot exec:
 * the step and errno; the parent, which may format, makes the message. */
enum launch_step { LAUNCH_STEP_NETNS = 1, LAUNCH_STEP_EXEC };
struct launch_failure {
        int32_t step;
        int32_t error;
};

/* write(2) of a message formatted before the fork; in the child, where
 * nothing may be formatted. */
static void child_say(const char *msg, size_t len) {
        while (len > 0) {
                ssize_t k = write(STDERR_FILENO, msg, len);
                if (k <= 0)
                        return;
                msg += k;
                len -= (size_t) k;
        }
}

static _noreturn_ void child_fail(int errpipe, enum launch_step step, const char *msg, size_t len) {
        struct launch_failure f = { .step = step, .error = errno };
        child_say(msg, len);
        /* Close what this child shares with vmhost before reporting: an
         * exec that failed closed nothing, and the VM's lock is an OFD
         * lock on a description this child still references, so until it
         * exits the lock would stay held after vm_start() returned (a
         * status right after the failed start then says "starting"). */
        if (errpipe > 3)
                (void) syscall(SYS_close_range, 3u, (unsigned) errpipe - 1, 0u);
        (void) syscall(SYS_close_range, (unsigned) errpipe + 1, ~0u, 0u);
        (void) !write(errpipe, &f, sizeof(f));
        _exit(127);
}

/* Reads exactly 'len' bytes or up to end of file, waiting at most
 * 'timeout_ms' in all; returns the count, or -ETIMEDOUT. */
static ssize_t read_bounded(int fd, void *buf, size_t len, unsigned timeout_ms) {
        uint64_t deadline = vh_clock_ms() + timeout_ms;
        size_t got = 0;
        while (got < len) {
                uint64_t now = vh_clock_ms();
                if (now >= deadline)
                        return -ETIMEDOUT;
                struct pollfd pfd = { .fd = fd, .events = POLLIN };
                int n = poll(&pfd, 1, (int) (deadline - now));
                if (n < 0 && errno != EINTR)
                        return negative_errno();
                if (n <= 0)
                        continue;
                ssize_t k = read(fd, (char *) buf + got, len - got);
                if (k < 0 && errno != EINTR)
                        return negative_errno();
                if (k == 0)
                        break;
                if (k > 0)
                        got += (size_t) k;
        }
        return (ssize_t) got;
}

/* How long the parent waits for the middle child's report and for QEMU's
 * exec: both are a few system calls away. */
#define LAUNCH_FORK_TIMEOUT_MS 10000

int vm_start_launch(const struct vh_context *ctx, struct vm_start_job *job, const struct vm_start_options *opts,
                    struct vh_error *err) {
        assert(job && job->pid == 0 && !job->recorded);
        job->cancel = opts ? opts->cancel : NULL;
        const struct vm_def *def = job->def;
        const struct vm_paths *p = &job->paths;
        const char *name = def->name;

        struct vm_launch launch = {
                .run_as = job->qemu_user,
                .qemu_binary = opts && opts->qemu_binary ? opts->qemu_binary : "qemu-system-x86_64",
                .accel = job->accel,
                .qmp_socket = p->qmp_socket,
                .qmp_watch_socket = p->qmp_watch_socket,
                .serial_socket = p->serial_socket,
                .serial_log = p->serial_log,
                .vnc_socket = p->vnc_socket,
                .pidfile = p->pidfile,
                .daemonize = false,
        };
        memcpy(launch.host_ports, job->status.host_ports, sizeof(launch.host_ports));
        vm_net_fill_launch(&job->nets, &launch);
        /* A copy of the descriptors; the job owns them. */
        launch.files = job->files;

        /* Everything the child needs is made here, before the fork: in a
         * threaded process the child may only make async-signal-safe calls
         * (no malloc, no stdio, no formatting) until it execs. */
        _cleanup_(strv_done) struct strv argv = {};
        int r = vm_cmdline_build(def, &launch, &argv, err);
        if (r < 0)
                return r;
        if (opts && opts->incoming_defer) {
                /* Paused, and waiting for 'migrate-incoming' on QMP. */
                strv_add(&argv, "-S");
                strv_add(&argv, "-incoming");
                strv_add(&argv, "defer");
        }
        if (argv.error < 0)
                return argv.error;
        _cleanup_free_ char *exe = find_executable(ctx, launch.qemu_binary);
        if (!exe)
                return vh_error_set(err, -ENOENT, "%s not found; install qemu-system-x86 (see 'vmhost doctor')",
                                    launch.qemu_binary);
        int qemu_fds[2 * VM_MAX_DISK_LAYERS + 3];
        size_t n_qemu_fds = launch_files_fds(&job->files, qemu_fds, ELEMENTSOF(qemu_fds));
        char nspath[128] = "";
        if (job->nets.netns[0] && (size_t) snprintf(nspath, sizeof(nspath), "/run/netns/%s", job->nets.netns) >=
                                          sizeof(nspath))
                return vh_error_set(err, -ENAMETOOLONG, "Network namespace name %s of VM %s is too long",
                                    job->nets.netns, name);
        _cleanup_free_ char *netns_msg = strdup_printf("vmhost: cannot enter network namespace %s\n", job->nets.netns);
        _cleanup_free_ char *exec_msg = strdup_printf("vmhost: cannot execute %s\n", exe);
        if (!netns_msg || !exec_msg)
                return -ENOMEM;
        size_t netns_msg_len = strlen(netns_msg), exec_msg_len = strlen(exec_msg);

        job->status.serial_log_offset = file_size_or_zero(p->serial_log);
        /* The VM's start on this host, recorded with the state: the wall
         * clock now, read once, so that every later status says the same. */
        job->status.started_at = (int64_t) time(NULL);

        /* QEMU runs in the foreground of its own session, double-forked so
         * it is nobody's zombie: -daemonize would need fork() and setsid()
         * after the sandbox is in place, which spawn=deny and
         * elevateprivileges=deny forbid. The middle child reports QEMU's
         * pid on 'pidpipe'; QEMU's child reports a failure to exec on
         * 'errpipe', which closes without a word when exec succeeds. */
        _cleanup_close_ int pid_rd = -1, err_rd = -1;
        int pidpipe[2], errpipe[2];
        if (pipe2(pidpipe, O_CLOEXEC) < 0)
                return vh_error_set(err, negative_errno(), "Cannot start QEMU for VM %s: pipe: %m", name);
        pid_rd = pidpipe[0];
        if (pipe2(errpipe, O_CLOEXEC) < 0) {
                r = negative_errno();
                close(pidpipe[1]);
                return vh_error_set(err, r, "Cannot start QEMU for VM %s: pipe: %s", name, strerror(-r));
        }
        err_rd = errpipe[0];
        /* _Fork(): no atfork handlers, so the children of a threaded
         * process run none of other code's locks or allocations. */
        pid_t middle = _Fork();
        if (middle < 0) {
                r = negative_errno();
                close(pidpipe[1]);
                close(errpipe[1]);
                return vh_error_set(err, r, "Cannot start QEMU for VM %s: fork: %s", name, strerror(-r));
        }
        if (middle == 0) {
                /* Async-signal-safe calls only from here to execv(). */
                setsid();
                pid_t qemu = _Fork();
                if (qemu == 0) {
                        /* Sockets and logs QEMU creates are for us alone: 0600. */
                        umask(0177);
                        int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                        int log = open(p->qemu_log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
                        if (null >= 0) {
                                dup2(null, STDIN_FILENO);
                                dup2(null, STDOUT_FILENO);
                        }
                        if (log >= 0)
                                dup2(log, STDERR_FILENO);
                        /* QEMU must run in the namespace that owns its taps. */
                        if (nspath[0]) {
                                int nsfd = open(nspath, O_RDONLY | O_CLOEXEC);
                                if (nsfd < 0 || setns(nsfd, CLONE_NEWNET) < 0)
                                        child_fail(errpipe[1], LAUNCH_STEP_NETNS, netns_msg, netns_msg_len);
                        }
                        /* QEMU inherits the files vmhost opened for it. */
                        for (size_t i = 0; i < n_qemu_fds; i++)
                                fcntl(qemu_fds[i], F_SETFD, 0);
                        execv(exe, argv.v);
                        child_fail(errpipe[1], LAUNCH_STEP_EXEC, exec_msg, exec_msg_len);
                }
                int32_t v = qemu;
                _exit(write(pidpipe[1], &v, sizeof(v)) == sizeof(v) && qemu > 0 ? 0 : 1);
        }
        close(pidpipe[1]);
        close(errpipe[1]);
        int32_t qpid = 0;
        ssize_t got = read_bounded(pid_rd, &qpid, sizeof(qpid), LAUNCH_FORK_TIMEOUT_MS);
        /* The middle child exits right after its report (or a failed fork). */
        if (got == -ETIMEDOUT)
                (void) kill(middle, SIGKILL);
        int status;
        while (waitpid(middle, &status, 0) < 0)
                if (errno != EINTR)
                        break;
        if (got != sizeof(qpid) || qpid <= 0)
                return vh_error_set(err, -EIO, "Could not start QEMU for VM %s: %s", name,
                                    got == -ETIMEDOUT ? "no report from the forked process" : "fork failed");
        job->pid = qpid;

        /* The exec's report first: a failed exec has already ended the
         * process, and with it reparented and reaped its pid may be
         * another's, so it is never signalled or opened as a pidfd. */
        struct launch_failure f = {};
        got = read_bounded(err_rd, &f, sizeof(f), LAUNCH_FORK_TIMEOUT_MS);
        if (got == sizeof(f)) {
                job->qemu_gone = true;
                int e = f.error > 0 ? f.error : EIO;
                if (f.step == LAUNCH_STEP_NETNS)
                        return vh_error_set(err, -e, "Cannot start QEMU for VM %s: cannot enter network namespace %s: %s",
                                            name, job->nets.netns, strerror(e));
                return vh_error_set(err, -e, "Cannot start QEMU for VM %s: cannot execute %s: %s", name, exe,
                                    strerror(e));
        }
        /* A pidfd as soon as QEMU is known to run: QEMU is not our child
         * (the middle one was), so the undo of a later step signals it
         * through the pidfd, which cannot reach a process that reused the
         * pid. */
        int pid_fd = process_pidfd_open(qpid);
        if (pid_fd >= 0)
                job->pid_fd = pid_fd;
        else if (pid_fd == -ESRCH)
                job->qemu_gone = true; /* exited at once; vm_start_record() reads its log */
        if (got == -ETIMEDOUT)
                return vh_error_set(err, -ETIMEDOUT, "QEMU for VM %s did not start within %u s", name,
                                    LAUNCH_FORK_TIMEOUT_MS / 1000);
        /* End of file: QEMU runs (its exec closed the pipe). */
        return 0;
}

int vm_start_record(struct vm_start_job *job, unsigned timeout_ms, struct vm_status *ret, struct vh_error *err) {
        assert(job && job->pid > 0 && !job->recorded);
        const struct vm_paths *p = &job->paths;
        const char *name = job->def->name;

        /* QEMU is initialized once its QMP socket accepts connections; if it
         * dies first, its log says why. */
        int r = wait_for_qmp_greeting(p->qmp_socket, job->pid, timeout_ms, job->cancel);
        if (r == -ECANCELED) {
                /* Killed here, before the caller's undo, so that the VM is
                 * stopped by the time the error is read. */
                job_kill_qemu(job);
                return vh_error_set(err, r, "The start of VM %s was cancelled before QEMU was up; QEMU was stopped", name);
        }
        if (r < 0) {
                char why[256];
                /* Gone with its descriptors before the log is read and the
                 * undo runs. */
                job_kill_qemu(job);
                last_log_line(p->qemu_log, why, sizeof(why));
                return vh_error_set(err, -EIO, "QEMU failed to start VM %s: %s (full log: %s)", name,
                                    why[0]                 ? why
                                    : r == -ETIMEDOUT      ? "QMP socket did not answer in time"
                                                           : "no message",
                                    p->qemu_log);
        }

        /* A TCP display gets this start's password now; until then its
         * password=on let nobody in. */
        r = vm_vnc_start(job->def, p, err);
        if (r < 0)
                return r;

        job->status.pid = job->pid;
        r = runtime_state_write(p->runtime_state, &job->status, job->def->n_forwards);
        if (r < 0)
                return vh_error_set(err, r, "Cannot record the state of VM %s in %s: %s", name, p->runtime_state,
                                    strerror(-r));
        job->recorded = true;
        _cleanup_free_ char *crash = strdup_printf("%s/last-exit", p->state_dir);
        if (crash)
                unlink(crash);
        if (ret)
                *ret = job->status;
        return 0;
}

int vm_start(const struct vh_context *ctx, const char *name, const struct vm_start_options *opts, struct vm_status *ret,
             struct vh_error *err) {
        _cleanup_(vm_lock_releasep) struct vm_lock *lock = NULL;
        const struct vm_cancel *cancel = opts ? opts->cancel : NULL;
        int r = vm_lock_take_cancellable(ctx, name, "started", VM_LOCK_LIFECYCLE_TIMEOUT_MS, cancel, &lock, err);
        if (r < 0)
                return r;
        _cleanup_(vm_start_job_freep) struct vm_start_job *job = NULL;
        r = vm_start_prepare(ctx, name, &job, err);
        if (r == -EALREADY && ret && vm_get_status(ctx, name, ret, NULL) < 0)
                *ret = (struct vm_status) { .state = VM_STATE_RUNNING };
        if (r < 0)
                return r;
        r = vm_start_launch(ctx, job, opts, err);
        if (r < 0)
                return r;
        return vm_start_record(job, 30 * 1000, ret, err);
}

int vm_restart(const struct vh_context *ctx, const char *name, unsigned stop_timeout_ms,
               const struct vm_start_options *opts, struct vm_status *ret, struct vh_error *err) {
        _cleanup_(vm_lock_releasep) struct vm_lock *lock = NULL;
        const struct vm_cancel *cancel = opts ? opts->cancel : NULL;
        int r = vm_lock_take_cancellable(ctx, name, "restarted", VM_LOCK_LIFECYCLE_TIMEOUT_MS, cancel, &lock, err);
        if (r < 0)
                return r;
        r = vm_stop_graceful_cancellable(ctx, name, stop_timeout_ms, cancel, NULL, err);
        if (r < 0)
                return r;
        if (vm_cancelled(cancel))
                return vh_error_set(err, -ECANCELED, "The restart of VM %s was cancelled after its stop; it is stopped",
                                    name);
        return vm_start(ctx, name, opts, ret, err);
}

/* Sleeps until the serial log changes (inotify on 'log'; '*inotify_fd'
 * is set up on first use, once the log exists) or QEMU exits ('pid_fd', a
 * pidfd), so vm_wait_ready() sees the ready line as soon as QEMU writes
 * it. Where either cannot be had it wakes up in short steps instead, and
 * at the latest after a second, for the caller's status check. */
static void wait_for_log(const char *log, int *inotify_fd, int pid_fd, uint64_t deadline) {
        if (*inotify_fd < 0) {
                *inotify_fd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
                if (*inotify_fd >= 0 && inotify_add_watch(*inotify_fd, log, IN_MODIFY | IN_CLOSE_WRITE) < 0)
                        *inotify_fd = safe_close(*inotify_fd);
        }
        uint64_t now = vh_clock_ms();
        int timeout = (int) MIN(deadline > now ? deadline - now : 0, (uint64_t) 1000);
        if (*inotify_fd < 0)
                timeout = MIN(timeout, 50);
        struct pollfd fds[2] = { { .fd = *inotify_fd, .events = POLLIN }, { .fd = pid_fd, .events = POLLIN } };
        if (poll(fds, 2, timeout) > 0 && (fds[0].revents & POLLIN)) {
                char buf[4096];
                while (read(*inotify_fd, buf, sizeof(buf)) > 0)
                        ;
        }
}

int vm_wait_ready(const struct vh_context *ctx, const char *name, unsigned timeout_ms, char **ret_line,
                  struct vh_error *err) {
        _cleanup_paths_ struct vm_paths p = {};
        struct vm_status st;
        int r = vm_open_running(ctx, name, &p, &st, err);
        if (r < 0)
                return r;

        uint64_t deadline = vh_clock_ms() + timeout_ms;
        uint64_t offset = st.serial_log_offset;
        _cleanup_close_ int pid_fd = (int) syscall(SYS_pidfd_open, st.pid, 0);
        _cleanup_close_ int inotify_fd = -1;
        char tail[8192];
        size_t tail_len = 0;
        for (;;) {
                _cleanup_close_ int fd = open(p.serial_log, O_RDONLY | O_CLOEXEC);
                if (fd >= 0) {
                        for (;;) {
                                if (tail_len == sizeof(tail) - 1) {
                                        /* Keep the last partial line only. */
                                        memmove(tail, tail + tail_len / 2, tail_len - tail_len / 2);
                                        tail_len -= tail_len / 2;
                                }
                                ssize_t k = pread(fd, tail + tail_len, sizeof(tail) - 1 - tail_len, (off_t) offset);
                                if (k <= 0)
                                        break;
                                offset += (uint64_t) k;
                                tail_len += (size_t) k;
                                tail[tail_len] = '\0';
                                /* The log may hold NULs from the guest; search line by line. */
                                for (size_t i = 0; i < tail_len; i++)
                                        if (tail[i] == '\0')
                                                tail[i] = ' ';
                                char *m = strstr(tail, VM_READY_MARKER);
                                if (m) {
                                        char *eol = strpbrk(m, "\r\n");
                                        if (eol || tail_len < sizeof(tail) - 1) {
                                                if (eol)
                                                        *eol = '\0';
                                                if (ret_line) {
                                                        *ret_line = strdup(m);
                                                        if (!*ret_line)
                                                                return -ENOMEM;
                                                }
                                                if (eol)
                                                        return 0;
                                        }
                                        if (!eol)
                                                break; /* wait for the rest of the line */
                                }
                                if (offset - st.serial_log_offset > SERIAL_LOG_SCAN_MAX)
                                        return vh_error_set(err, -E2BIG,
                                                            "VM %s printed %u MiB without a ready line", name,
                                                            SERIAL_LOG_SCAN_MAX >> 20);
                        }
                }
                if (ret_line && *ret_line) {
                        free(*ret_line);
                        *ret_line = NULL;
                }
                struct vm_status now;
                r = vm_get_status(ctx, name, &now, err);
                if (r < 0)
                        return r;
                if (now.state != VM_STATE_RUNNING)
                        return vh_error_set(err, -ESRCH, "VM %s stopped before it was ready: %s", name,
                                            now.exit_reason[0] ? now.exit_reason : "no reason logged");
                if (vh_clock_ms() >= deadline)
                        return vh_error_set(err, -ETIMEDOUT,
                                            "VM %s printed no ready line within %u s (console log: %s)", name,
                                            timeout_ms / 1000, p.serial_log);
                wait_for_log(p.serial_log, &inotify_fd, pid_fd, deadline);
        }
}

static int stop_qemu(const struct vh_context *ctx, const char *name, const struct vm_paths *p, unsigned timeout_ms, struct vh_error *err) {
        struct vm_status st;
        int r = vm_get_status(ctx, name, &st, err);
        if (r < 0)
                return r;
        if (st.state != VM_STATE_RUNNING)
                return 0;
        if (kill(st.pid, SIGTERM) < 0 && errno != ESRCH)
                return vh_error_set(err, negative_errno(), "Cannot signal QEMU (pid %d) of VM %s: %m", st.pid, name);
        if (!process_wait_gone(st.pid, timeout_ms) && !qemu_kill_wait(st.pid))
                return vh_error_set(err, -ETIMEDOUT, "QEMU (pid %d) of VM %s is still there 5 s after SIGKILL", st.pid,
                                    name);
        r = vm_net_detach(ctx, name, st.nic_networks, VM_MAX_NICS, err);
        runtime_clean(p);
        return r;
}

static int vm_stop_locked(const struct vh_context *ctx, const char *name, unsigned timeout_ms, struct vh_error *err) {
        _cleanup_paths_ struct vm_paths p = {};
        int r = vm_paths_get(ctx, name, &p, err);
        if (r < 0)
                return r;
        /* From here on a QEMU found gone is a stop, not a crash: our
         * status check below (and one of a graceful stop that waited for
         * the guest to power off) cleans up without recording a crash. The
         * state file stays until QEMU is gone, so a stop that fails leaves
         * the VM known as running, which it still is. Other processes see
         * the lock held by a stop and report the VM stopped. */
        struct vm_lock *mine = held_lock(ctx, name);
        bool was_stopping = mine && mine->stopping;
        if (mine)
                mine->stopping = true;
        r = stop_qemu(ctx, name, &p, timeout_ms, err);
        if (mine)
                mine->stopping = was_stopping;
        return r;
}

int vm_stop(const struct vh_context *ctx, const char *name, unsigned timeout_ms, struct vh_error *err) {
        _cleanup_(vm_lock_releasep) struct vm_lock *lock = NULL;
        int r = vm_lock_take(ctx, name, "stopped", VM_LOCK_LIFECYCLE_TIMEOUT_MS, &lock, err);
        if (r < 0)
                return r;
        return vm_stop_locked(ctx, name, timeout_ms, err);
}

static void drain_output(int fd, int out_fd) {
        char buf[4096];
        uint64_t deadline = vh_clock_ms() + 30 * 1000;
        struct pollfd pfd = { .fd = fd, .events = POLLIN };
        while (vh_clock_ms() < deadline && poll(&pfd, 1, 1000) > 0) {
                ssize_t k = read(fd, buf, sizeof(buf));
                if (k <= 0 || write(out_fd, buf, (size_t) k) < 0)
                        break;
        }
}

int vm_console(const struct vh_context *ctx, const char *name, int in_fd, int out_fd, struct vh_error *err) {
        _cleanup_paths_ struct vm_paths p = {};
        struct vm_status st;
        int r = vm_open_running(ctx, name, &p, &st, err);
        if (r < 0)
                return r;

        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", p.serial_socket);
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0)
                return vh_error_set(err, negative_errno(), "Cannot connect to the console of VM %s (%s): %m", name,
                                    p.serial_socket);

        struct termios saved;
        bool is_tty = tcgetattr(in_fd, &saved) == 0;
        if (is_tty) {
                struct termios raw = saved;
                cfmakeraw(&raw);
                tcsetattr(in_fd, TCSANOW, &raw);
        }

        r = 0;
        struct pollfd fds[2] = { { .fd = in_fd, .events = POLLIN }, { .fd = fd, .events = POLLIN } };
        char buf[4096];
        for (;;) {
                if (poll(fds, 2, -1) < 0) {
                        if (errno == EINTR)
                                continue;
                        r = negative_errno();
                        break;
                }
                if (fds[1].revents & (POLLIN | POLLHUP | POLLERR)) {
                        ssize_t k = read(fd, buf, sizeof(buf));
                        if (k <= 0)
                                break; /* QEMU went away */
                        if (write(out_fd, buf, (size_t) k) < 0) {
                                r = negative_errno();
                                break;
                        }
                }
                if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
                        ssize_t k = read(in_fd, buf, sizeof(buf));
                        if (k <= 0) {
                                /* End of piped input: the answers are still
                                 * on their way, so relay output until the
                                 * console has been quiet for a second. */
                                drain_output(fd, out_fd);
                                break;
                        }
                        char *detach = memchr(buf, VM_CONSOLE_DETACH_KEY, (size_t) k);
                        size_t n = detach ? (size_t) (detach - buf) : (size_t) k;
                        if (n > 0 && write(fd, buf, n) < 0) {
                                r = negative_errno();
                                break;
                        }
                        if (detach)
                                break;
                }
        }
        if (is_tty)
                tcsetattr(in_fd, TCSANOW, &saved);
        return r;
}

void vm_state_files(const struct vm_paths *p, struct strv *ret) {
        DIR *d = opendir(p->state_dir);
        if (!d)
                return;
        struct dirent *de;
        while ((de = readdir(d)) && ret->n < VM_STATE_FILES_MAX)
                if (!streq(de->d_name, ".") && !streq(de->d_name, "..") && !streq(de->d_name, "vm.conf"))
                        strv_addf(ret, "%s/%s", p->state_dir, de->d_name);
        closedir(d);
}

int vm_delete(const struct vh_context *ctx, const char *name, struct vh_error *err) {
        _cleanup_(vm_lock_releasep) struct vm_lock *lock = NULL;
        int r = vm_lock_take(ctx, name, "deleted", VM_LOCK_TIMEOUT_MS, &lock, err);
        if (r < 0)
                return r;
        _cleanup_paths_ struct vm_paths p = {};
        r = vm_paths_get(ctx, name, &p, err);
        if (r < 0)
                return r;
        struct vm_status st;
        r = vm_get_status(ctx, name, &st, err);
        if (r < 0)
                return r;
        if (st.state == VM_STATE_RUNNING)
                return vh_error_set(err, -EBUSY, "VM %s is running (pid %d); stop it first with 'vmhost vm stop %s'",
                                    name, st.pid, name);
        _cleanup_(vm_def_freep) struct vm_def *def = NULL;
        r = vm_load(ctx, name, &def, err);
        if (r < 0)
                return r;
        /* Under the home's lock, which 'vm create --base' holds while it
         * makes an overlay: no VM can get this disk as its base between
         * the check and the removal. */
        _cleanup_close_ int home = -1;
        r = vm_home_lock(ctx, &home, err);
        if (r < 0)
                return r;
        if (def->disk && (r = vm_image_check_not_base(ctx, def->disk, "delete", err)) < 0)
                return r;

        /* Only files vmhost made for this VM live in its state directory;
         * a disk elsewhere (a shared base, a user's image) stays. The
         * definition goes last, so an interrupted delete can be repeated. */
        _cleanup_(strv_done) struct strv files = {};
        vm_state_files(&p, &files);
        if (files.error)
                return vh_error_set(err, files.error, "Cannot list %s: %s", p.state_dir, strerror(-files.error));
        for (size_t i = 0; i < files.n; i++)
                if (unlink(files.v[i]) < 0 && errno != ENOENT)
                        return vh_error_set(err, negative_errno(), "Cannot remove %s: %m", files.v[i]);
        if (unlink(p.conf) < 0 && errno != ENOENT)
                return vh_error_set(err, negative_errno(), "Cannot remove %s: %m", p.conf);
        rmdir(p.state_dir);
        runtime_clean(&p);
        return 0;
}

int vm_forward_add(const struct vh_context *ctx, const char *name, const char *spec, uint16_t *ret_host_port,
                   struct vh_error *err) {
        struct vm_forward f;
        int r = vm_forward_parse(spec, &f, err);
        if (r < 0)
                return r;
        _cleanup_(vm_lock_releasep) struct vm_lock *vm_lock = NULL;
        _cleanup_close_ int lock = -1;
        r = vm_lock_take_with_home(ctx, name, "changed", &vm_lock, &lock, err);
        if (r < 0)
                return r;
        _cleanup_(vm_def_freep) struct vm_def *def = NULL;
        r = vm_load(ctx, name, &def, err);
        if (r < 0)
                return r;
        const struct vm_nic *nic = vm_def_user_nic(def);
        if (!nic)
                return vh_error_set(err, -EINVAL, "VM %s has no user-mode NIC to forward to", name);
        if (def->n_forwards >= VM_MAX_FORWARDS)
                return vh_error_set(err, -ENOSPC, "VM %s has %d forwards already", name, VM_MAX_FORWARDS);
        for (unsigned i = 0; i < def->n_forwards; i++)
                if (def->forwards[i].proto == f.proto && def->forwards[i].guest_port == f.guest_port &&
                    (f.host_port == 0 || def->forwards[i].host_port == f.host_port))
                        return vh_error_set(err, -EEXIST, "VM %s already forwards to guest port %u", name, f.guest_port);

        struct vm_status st;
        r = vm_get_status(ctx, name, &st, err);
        if (r < 0)
                return r;
        uint16_t host = f.host_port;
        if (st.state == VM_STATE_RUNNING) {
                if (host == 0 && (r = vm_allocate_port(f.proto == VM_FWD_UDP, &host)) < 0)
                        return vh_error_set(err, r, "Cannot allocate a host port: %s", strerror(-r));
                _cleanup_paths_ struct vm_paths p = {};
                r = vm_paths_get(ctx, name, &p, err);
                if (r < 0)
                        return r;
                _cleanup_(qmp_freep) struct qmp_client *q = NULL;
                r = qmp_connect(p.qmp_socket, 5000, &q, err);
                if (r < 0)
                        return r;
                _cleanup_free_ char *cmd = strdup_printf("hostfwd_add net%u %s:127.0.0.1:%u-:%u",
                                                         (unsigned) (nic - def->nics),
                                                         f.proto == VM_FWD_UDP ? "udp" : "tcp", host, f.guest_port);
                _cleanup_free_ char *out = NULL;
                if (!cmd)
                        return -ENOMEM;
                r = qmp_human_command(q, cmd, &out, err);
                if (r < 0)
                        return r;
                /* The human monitor says what went wrong as text. */
                if (out && *strstrip(out))
                        return vh_error_set(err, -EIO, "QEMU refused the forward %s: %s", spec, out);
                st.host_ports[def->n_forwards] = host;
                r = runtime_state_write(p.runtime_state, &st, def->n_forwards + 1);
                if (r < 0)
                        return vh_error_set(err, r, "Cannot record the forward in %s: %s", p.runtime_state, strerror(-r));
        }
        /* Kept in the definition: the next start has it too ('auto' gets a
         * new port then). */
        def->forwards[def->n_forwards++] = f;
        r = vm_save(ctx, def, err);
        if (r < 0)
                return r;
        if (ret_host_port)
                *ret_host_port = host;
        return 0;
}
