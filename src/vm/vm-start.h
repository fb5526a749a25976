/* vm/vm-start.h: a VM start in three steps, so that a live migration can
 * start the destination QEMU with the same checks and files as a normal
 * start, only paused and waiting for the incoming state:
 *
 *     vm_start_prepare()   definition, checks, host ports, MACs, the files
 *                          QEMU gets, runtime directory, taps
 *     vm_start_launch()    QEMU's command line, fork and exec (optionally
 *                          paused with -incoming defer, see
 *                          struct vm_start_options)
 *     vm_start_record()    QMP greeting, VNC password, runtime state
 *
 * vm_start() is the three in a row. Every step that fails leaves 'job'
 * as it was made so far, and vm_start_job_free() undoes it (kills a QEMU that
 * was launched but not recorded, detaches the taps, removes the runtime
 * files): one undo path for every failure. Once recorded, vm_start_job_free()
 * only frees; the VM is running and belongs to vm_stop().
 *
 * The caller holds whatever serializes operations on the VM across all
 * three steps. */
#pragma once

#include <stdbool.h>

#include "vm/vm-cmdline.h"
#include "vm/vm-net.h"
#include "vm/vm.h"
#include "vmhost/context.h"

/* What vm_start_prepare() made and the later steps use. Read-only for the
 * caller, except as documented. */
struct vm_start_job {
        const struct vh_context *ctx;  /* of vm_start_prepare(): outlives the job */
        struct vm_def *def;
        struct vm_paths paths;
        /* The state to record: RUNNING, accelerator, resolved host ports,
         * network per NIC, netns, warning; the pid once launched. */
        struct vm_status status;
        const char *accel;             /* "kvm" or "tcg", static */
        const char *qemu_user;         /* -runas; NULL: QEMU stays as the caller */
        struct vm_launch_files files;  /* owned: closed by vm_start_job_free() */
        struct vm_net_attachments nets;
        bool runtime_made;             /* runtime directory (re)made: remove it on undo */
        bool nets_attached;            /* taps attached: detach them on undo */
        bool recorded;                 /* vm_start_record() succeeded: nothing to undo */
        int pid;                       /* QEMU's pid once launched, else 0 */
        int pid_fd;                    /* a pidfd of that QEMU, -1 if none */
        bool qemu_gone;                /* the undo killed it already */
        const struct vm_cancel *cancel; /* of vm_start_launch()'s options: vm_start_record()'s wait */
};

/* Loads the VM 'name', checks that it can start (not running, its files
 * exist, its CPU model suits the accelerator), resolves host ports and
 * MACs, opens the files QEMU gets and attaches its NICs. On failure
 * nothing is left behind and *ret is untouched. */
int vm_start_prepare(const struct vh_context *ctx, const char *name, struct vm_start_job **ret, struct vh_error *err);

/* Builds QEMU's command line and starts it in its own session (the pid
 * is in job->pid). QEMU is not yet known to be up: see
 * vm_start_record(). */
int vm_start_launch(const struct vh_context *ctx, struct vm_start_job *job, const struct vm_start_options *opts,
                    struct vh_error *err);

/* Waits (bounded) for QEMU's QMP greeting, gives a TCP display its
 * password and records the runtime state, after which the VM counts as
 * running. ret (may be NULL) gets the recorded status. The launch's
 * cancel hook ends the wait: -ECANCELED, QEMU killed (the undo of
 * vm_start_job_free() does the rest). */
int vm_start_record(struct vm_start_job *job, unsigned timeout_ms, struct vm_status *ret, struct vh_error *err);

/* Undoes whatever a start that was not recorded made, then frees.
 * Accepts NULL, returns NULL. */
struct vm_start_job *vm_start_job_free(struct vm_start_job *job);
DEFINE_FREE_FUNC(struct vm_start_job, vm_start_job_free);
