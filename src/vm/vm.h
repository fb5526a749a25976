/* vm/vm.h: VM lifecycle over the state directory: definitions stored in
 * STATE/vms/NAME/vm.conf, runtime files (QMP, serial and VNC sockets, pid
 * file, state) in RUN/vms/NAME/ (mode 0700). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vm/vm-def.h"

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

int vm_paths_get(const char *name, struct vm_paths *ret, struct vh_error *err);
void vm_paths_done(struct vm_paths *p);

int vm_load(const char *name, struct vm_def **ret, struct vh_error *err);
/* Writes the definition atomically. */
int vm_save(const struct vm_def *def, struct vh_error *err);
bool vm_exists(const char *name);

enum vm_state { VM_STATE_STOPPED, VM_STATE_RUNNING, VM_STATE_CRASHED };

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
};

const char *vm_state_to_string(enum vm_state s);

/* Reads the runtime state; a recorded pid that is no longer our QEMU
 * means the VM died (CRASHED, with the reason from its log) or was stopped
 * before a host reboot; stale sockets are removed either way. */
int vm_get_status(const char *name, struct vm_status *ret, struct vh_error *err);

/* The exit reason of a crash noticed earlier, kept until the next start;
 * buf is emptied when there is none. */
void vm_last_exit(const char *name, char *buf, size_t len);

struct vm_start_options {
        const char *qemu_binary;  /* NULL: qemu-system-x86_64 */
};

/* Starts QEMU daemonized and records its pid. A start that fails half-way
 * removes what it made. */
int vm_start(const char *name, const struct vm_start_options *opts, struct vm_status *ret, struct vh_error *err);

/* Waits until the guest prints VM_READY_MARKER on its console (after this
 * boot's start), QEMU dies (-ESRCH) or 'timeout_ms' passes (-ETIMEDOUT).
 * The ready line (without newline) goes to ret_line when not NULL. */
int vm_wait_ready(const char *name, unsigned timeout_ms, char **ret_line, struct vh_error *err);

/* Stops QEMU: SIGTERM (QEMU shuts down cleanly), SIGKILL after 'timeout_ms'. */
int vm_stop(const char *name, unsigned timeout_ms, struct vh_error *err);

/* Relays the terminal (in_fd/out_fd) to the serial console until the
 * detach key (Ctrl-]) or the VM goes away. */
#define VM_CONSOLE_DETACH_KEY 0x1d
int vm_console(const char *name, int in_fd, int out_fd, struct vh_error *err);

/* Adds a user-mode forward ("tcp:auto:22") to the definition and, when
 * the VM runs, to QEMU at once. *ret_host_port: the host port (0 when the
 * VM is stopped and the port is 'auto'). */
int vm_forward_add(const char *name, const char *spec, uint16_t *ret_host_port, struct vh_error *err);

/* Removes a stopped VM: its definition, logs and its own disk (a disk
 * under its state directory); a shared base is never touched. */
int vm_delete(const char *name, struct vh_error *err);

/* Allocates a free TCP or UDP port on 127.0.0.1 (asks the kernel). */
int vm_allocate_port(bool udp, uint16_t *ret);
