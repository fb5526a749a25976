/* vm/vm.h: VM lifecycle over the state directory: definitions stored in
 * STATE/vms/NAME/vm.conf, runtime files (QMP, serial and VNC sockets, pid
 * file, state) in RUN/vms/NAME/ (mode 0700). */
#pragma once

#include "base/strv.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vm/vm-def.h"
#include "vmhost/context.h"

/* The fixed line the vmhost test guest prints on its serial console once it
 * is up; see tools/guest/init.sh. */
#define VM_READY_MARKER "VMHOST-READY "

struct vm_paths {
        char *state_dir;      /* STATE/vms/NAME */
        char *conf;           /* STATE/vms/NAME/vm.conf */
        char *runtime_dir;    /* RUN/vms/NAME */
        char *qmp_socket;
        char *qmp_watch_socket; /* a second QMP monitor for one long-lived watcher (web, migration),
                                 * so that it never locks the CLI out of qmp_socket */
        char *serial_socket;
        char *serial_log;
        char *pidfile;
        char *qemu_log;       /* QEMU's own stderr */
        char *runtime_state;  /* key=value: pid, accel, resolved ports */
        char *vnc_socket;     /* QEMU's VNC server for vnc = unix */
        char *vnc_password;   /* this start's password of a TCP display (0600) */
};

int vm_paths_get(const struct vh_context *ctx, const char *name, struct vm_paths *ret, struct vh_error *err);
void vm_paths_done(struct vm_paths *p);

/* Every file in the VM's state directory but its definition, full paths,
 * at most VM_STATE_FILES_MAX: what 'vm delete' removes besides vm.conf
 * (vm_delete() removes them, vm_delete_plan() names them). Sticky -ENOMEM
 * in ret->error; a missing directory gives none. */
#define VM_STATE_FILES_MAX 4096
void vm_state_files(const struct vm_paths *p, struct strv *ret);

int vm_load(const struct vh_context *ctx, const char *name, struct vm_def **ret, struct vh_error *err);
/* Writes the definition atomically. */
int vm_save(const struct vh_context *ctx, const struct vm_def *def, struct vh_error *err);
bool vm_exists(const struct vh_context *ctx, const char *name);

/* STARTING: no QEMU is recorded yet, but a 'vm start' holds the VM's lock. */
enum vm_state { VM_STATE_STOPPED, VM_STATE_RUNNING, VM_STATE_CRASHED, VM_STATE_STARTING };

struct vm_status {
        enum vm_state state;
        int pid;
        char accel[8];
        uint16_t host_ports[VM_MAX_FORWARDS];
        uint64_t serial_log_offset;   /* where this boot's console output starts */
        char exit_reason[256];        /* for CRASHED: last line of QEMU's log */
        char nic_networks[VM_MAX_NICS][VH_NAME_MAX + 1]; /* vmhost network per NIC, "" if none */
        char netns[64];               /* network namespace QEMU runs in, "" for ours */
        char warning[512];            /* vm_start only: what will not work as the user may expect
                                       * (a tagged NIC cut off from its network's DHCP); "" if none */
        /* RUNNING: when this host's QEMU of the VM was launched, wall-clock
         * seconds since the epoch (0: unknown). Recorded by the start in the
         * runtime state, so it survives a restart of vmhost (or of a server
         * using the library) and stays the same between calls; a migrated
         * VM's is when the destination's QEMU was launched, its start on
         * this host. A VM started by a vmhost that did not record it gets
         * its QEMU's start from /proc (vm_process_start_parse()). */
        int64_t started_at;
        /* Another thread or process holds the VM's lock: the action under
         * way, as the holder named it ("started", "stopped", "changed"),
         * and the holder's pid (0 if it did not say yet); "" when nobody
         * else does. The state is what can be read without that lock. */
        char busy[48];
        int busy_pid;
};

const char *vm_state_to_string(enum vm_state s);

/* The files vm_process_start_parse() reads are at most this long: a
 * /proc/PID/stat line (the command name is at most 64 bytes), and
 * /proc/stat with a line per CPU and interrupt counters. */
#define VM_PROC_PID_STAT_MAX 4096
#define VM_PROC_STAT_MAX (4u << 20)

/* When a process started, in seconds since the epoch: its /proc/PID/stat
 * text 'pid_stat' gives the start in clock ticks after boot (field 22,
 * after the command name in parentheses, which may hold spaces and ')'),
 * /proc/stat's text 'proc_stat' the boot time ("btime N"), 'hz' the ticks
 * per second (sysconf(_SC_CLK_TCK)). Pure. -EINVAL for text that is not
 * such a file or numbers out of range, -E2BIG for text beyond the limits. */
int vm_process_start_parse(const char *pid_stat, const char *proc_stat, long hz, int64_t *ret);

/* Reads the runtime state; a recorded pid that is no longer our QEMU
 * means the VM died (CRASHED, with the reason from its log) or was stopped
 * before a host reboot; stale sockets are removed either way. That clean-up
 * happens under the VM's lock, which is only tried, never waited for: a
 * listing must not slow down while actions run. When another thread or
 * process holds it, nothing is removed, 'busy' names what the holder does,
 * and the state says it too (STARTING while a start runs, STOPPED while a
 * stop or delete runs, else CRASHED). Everything else is read without the
 * lock: the definition and the runtime state are replaced atomically
 * (rename), so a reader sees the old file or the new one. */
int vm_get_status(const struct vh_context *ctx, const char *name, struct vm_status *ret, struct vh_error *err);

/* The opening of every operation on a running VM: its status and (when
 * 'ret_paths' is not NULL) its paths, or -ESRCH and "VM NAME is not
 * running" (with the reason when QEMU was just found gone). */
int vm_open_running(const struct vh_context *ctx, const char *name, struct vm_paths *ret_paths,
                    struct vm_status *ret_status, struct vh_error *err);

/* The exit reason of a crash noticed earlier, kept until the next start;
 * buf is emptied when there is none. */
void vm_last_exit(const struct vh_context *ctx, const char *name, char *buf, size_t len);

/* The per-VM lock: every operation that changes a VM or acts on its QEMU
 * (create, start, stop, kill, restart, delete, set, commit, snapshot, cdrom,
 * forward, the crash clean-up of vm_get_status) holds it across its whole
 * check-then-act, so two of them never interleave: exactly one QEMU per VM,
 * and what one reports stays true. It is an OFD lock on RUN/vms/NAME.lock
 * (base/lockfile.h), so a holder that crashes frees it.
 *
 * Why there: RUN/vms exists before a VM does, so 'vm create' can lock a
 * name without a directory yet, and two creates of one name serialize on
 * one file; the file is beside, not inside, the VM's directories, which
 * delete removes, so a delete can hold the lock while it removes them and a
 * waiting create then finds the name free. Lock files are never removed
 * (removing one while another process waits on it would give two holders);
 * they are a few bytes each, and RUN is emptied at boot.
 *
 * A second caller waits a bounded time and then fails with -EBUSY and
 * "VM r1 is busy: being started by pid N". The lock is re-entrant within
 * one thread (vm_restart() holds it and calls vm_stop_graceful() and
 * vm_start(), which take it again); two threads exclude each other. Order:
 * a VM's lock before the home's allocation lock and the network lock. */
#define VM_LOCK_TIMEOUT_MS (10 * 1000)
/* start, stop, kill, restart wait longer: the holder may be a start
 * (QEMU gets 30 s to come up) or a stop (the guest gets its shutdown time). */
#define VM_LOCK_LIFECYCLE_TIMEOUT_MS (45 * 1000)

struct vm_lock;

/* Takes VM 'name's lock for 'op' (a past participle for the waiters'
 * message: "started", "deleted"), waiting at most 'timeout_ms'. */
int vm_lock_take(const struct vh_context *ctx, const char *name, const char *op, unsigned timeout_ms,
                 struct vm_lock **ret, struct vh_error *err);
/* Releases one level of the lock (NULL is fine); returns NULL. */
struct vm_lock *vm_lock_release(struct vm_lock *lock);
static inline void vm_lock_releasep(struct vm_lock **l) {
        vm_lock_release(*l);
}
/* VM 'name's lock for 'op' (VM_LOCK_TIMEOUT_MS), then the home's lock
 * (vm_home_lock()), in that order, which is the only order: for changes
 * that allocate (an id, a MAC, a display, a port) or save beside other
 * VMs' allocations. '*ret_home_fd' is the home lock's descriptor. */
int vm_lock_take_with_home(const struct vh_context *ctx, const char *name, const char *op, struct vm_lock **ret,
                           int *ret_home_fd, struct vh_error *err);
/* RUN/vms/NAME.lock, newly allocated (for tests and messages). */
int vm_lock_path(const struct vh_context *ctx, const char *name, char **ret);

/* How a caller that goes away (a server shutting down) ends the waits of
 * vm_start(), vm_restart() and vm_stop_graceful_cancellable() early:
 * 'func' is asked at every step of their waits, at least every
 * VM_CANCEL_STEP_MS, and returns true to cancel. It runs on the calling
 * thread and must not block. What each leaves behind is said where it is
 * declared; the VM is always in a state vm_get_status() tells right. */
#define VM_CANCEL_STEP_MS 100
struct vm_cancel {
        bool (*func)(void *userdata);
        void *userdata;
};
/* Whether 'cancel' (NULL: never) asks to cancel now. */
bool vm_cancelled(const struct vm_cancel *cancel);

/* vm_lock_take() whose wait ends with -ECANCELED ("... cancelled while
 * waiting for VM NAME's lock") when 'cancel' says so. */
int vm_lock_take_cancellable(const struct vh_context *ctx, const char *name, const char *op, unsigned timeout_ms,
                             const struct vm_cancel *cancel, struct vm_lock **ret, struct vh_error *err);

struct vm_start_options {
        const char *qemu_binary;  /* NULL: qemu-system-x86_64 */
        /* NULL: not cancellable (the CLI: Ctrl-C ends the process). See
         * vm_start() for what a cancelled start leaves. */
        const struct vm_cancel *cancel;
        /* Start QEMU paused (-S) and waiting for a migration stream
         * (-incoming defer), as the destination of a live migration:
         * QMP 'query-status' says "inmigrate" until a 'migrate-incoming'
         * brings the state in. */
        bool incoming_defer;
};

/* Starts QEMU in its own session and records its pid: vm_start_prepare(),
 * vm_start_launch() and vm_start_record() of vm/vm-start.h in a row, under
 * the VM's lock. A start that fails half-way removes what it made. A VM
 * that runs already: -EALREADY with *ret its status and the message
 * "VM NAME is already running (pid N)".
 *
 * opts->cancel ends the wait for the lock (nothing done) or for QEMU's QMP
 * greeting with -ECANCELED. QEMU is then killed and the start undone like
 * any start that fails: a QEMU that has not greeted is not known to work,
 * its display has no password yet and its state is not recorded, and the
 * caller, going away, could report neither a running VM nor a failure
 * later; so the VM is left stopped, as before the start. */
int vm_start(const struct vh_context *ctx, const char *name, const struct vm_start_options *opts, struct vm_status *ret,
             struct vh_error *err);

/* Waits until the guest prints VM_READY_MARKER on its console (after this
 * boot's start), QEMU dies (-ESRCH) or 'timeout_ms' passes (-ETIMEDOUT).
 * The ready line (without newline) goes to ret_line when not NULL. */
int vm_wait_ready(const struct vh_context *ctx, const char *name, unsigned timeout_ms, char **ret_line,
                  struct vh_error *err);

/* Stops QEMU: SIGTERM (QEMU shuts down cleanly), SIGKILL after 'timeout_ms'. */
int vm_stop(const struct vh_context *ctx, const char *name, unsigned timeout_ms, struct vh_error *err);

/* vm_stop_graceful() with 'stop_timeout_ms', then vm_start(), under one hold
 * of the VM's lock so that no other start or stop comes between.
 * opts->cancel: a cancel during the stop ends the guest's grace time (the
 * stop finishes at once, as vm_stop_graceful_cancellable() says) and the
 * start is not begun (-ECANCELED, the VM stopped); during the start, as
 * vm_start(). */
int vm_restart(const struct vh_context *ctx, const char *name, unsigned stop_timeout_ms,
               const struct vm_start_options *opts, struct vm_status *ret, struct vh_error *err);

/* Relays the terminal (in_fd/out_fd) to the serial console until the
 * detach key (Ctrl-]) or the VM goes away. */
#define VM_CONSOLE_DETACH_KEY 0x1d
int vm_console(const struct vh_context *ctx, const char *name, int in_fd, int out_fd, struct vh_error *err);

/* Adds a user-mode forward ("tcp:auto:22") to the definition and, when
 * the VM runs, to QEMU at once. *ret_host_port: the host port (0 when the
 * VM is stopped and the port is 'auto'). */
int vm_forward_add(const struct vh_context *ctx, const char *name, const char *spec, uint16_t *ret_host_port,
                   struct vh_error *err);

/* Removes a stopped VM: its definition, logs and its own disk (a disk
 * under its state directory); a shared base is never touched. Refused
 * (-EBUSY) while it runs or while its disk is the base of another VM. */
int vm_delete(const struct vh_context *ctx, const char *name, struct vh_error *err);

/* Allocates a free TCP or UDP port on 127.0.0.1 (asks the kernel). */
int vm_allocate_port(bool udp, uint16_t *ret);
