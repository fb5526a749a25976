/* vm/vm-control.h: talking to a running VM through QMP (src/qmp/): the
 * graceful stop, human monitor commands, raw QMP, screenshots, the CD-ROM
 * tray, and snapshots (QEMU's savevm/loadvm while it runs; the disk's
 * internal qcow2 snapshots through vmhost's image engine while stopped). */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "vm/vm.h"
#include "vmhost/context.h"
#include "vmhost/error.h"

enum vm_stop_how {
        VM_STOP_GUEST,   /* the guest powered off after the ACPI button */
        VM_STOP_QUIT,    /* it did not in time: QEMU was told to quit */
        VM_STOP_KILLED,  /* QEMU did not answer: SIGKILL */
        VM_STOP_NOT_RUNNING,
};

/* Presses the ACPI power button and waits up to 'timeout_ms' for the guest
 * to power off; then asks QEMU to quit; then kills it. 'timeout_ms' 0 skips
 * the guest and quits at once (vm kill). Taps are detached afterwards. */
int vm_stop_graceful(const struct vh_context *ctx, const char *name, unsigned timeout_ms, enum vm_stop_how *ret_how,
                     struct vh_error *err);
/* vm_stop_graceful() with a cancel hook (vm/vm.h; NULL: none). A cancel
 * while waiting for the VM's lock: -ECANCELED, nothing done. A cancel while
 * waiting for the guest ends its grace time: QEMU is told to quit (or
 * killed) at once, a matter of milliseconds, and the stop completes
 * (VM_STOP_QUIT or VM_STOP_KILLED): the stop was asked for, and a guest
 * left shutting down with nobody watching would leave its runtime files to
 * be taken for a crash. */
int vm_stop_graceful_cancellable(const struct vh_context *ctx, const char *name, unsigned timeout_ms,
                                 const struct vm_cancel *cancel, enum vm_stop_how *ret_how, struct vh_error *err);

/* Runs a human monitor command ("info status"); the answer in *ret_text. */
int vm_monitor(const struct vh_context *ctx, const char *name, const char *command, char **ret_text,
               struct vh_error *err);

/* Sends one raw QMP command given as JSON text ({"execute": ..., "arguments":
 * {...}}) and returns the reply's "return" value as JSON text. */
int vm_qmp_raw(const struct vh_context *ctx, const char *name, const char *json_text, char **ret_json,
               struct vh_error *err);

/* Writes a PNG of the VM's screen to 'path'. QEMU draws into the VM's
 * runtime directory; vmhost moves the file to 'path'. */
int vm_screenshot(const struct vh_context *ctx, const char *name, const char *path, struct vh_error *err);

/* Ejects the CD (iso NULL) or inserts 'iso' into the running VM's CD-ROM
 * drive, and records the change in the definition. */
int vm_cdrom_change(const struct vh_context *ctx, const char *name, const char *iso, struct vh_error *err);

enum vm_snapshot_op { VM_SNAPSHOT_CREATE, VM_SNAPSHOT_REVERT, VM_SNAPSHOT_DELETE };

/* Running VM: the full machine state (savevm/loadvm/delvm). Stopped VM:
 * the disk's internal snapshot. *ret_running says which it was. */
int vm_snapshot(const struct vh_context *ctx, const char *name, enum vm_snapshot_op op, const char *snap,
                bool *ret_running, struct vh_error *err);
/* The snapshot table of the VM's disk, as text ("Snapshot list: ..."). */
int vm_snapshot_list(const struct vh_context *ctx, const char *name, char **ret_text, struct vh_error *err);
