/* vmhost/context.h: everything the libraries would otherwise learn from
 * the process: where state and runtime files live, whether we are root,
 * who QEMU runs as, which Open vSwitch database to talk to, where programs
 * are found, the user's working directory and the fault switches of the
 * tests. A program fills one context once (vh_context_from_env()) and
 * hands it to every library call that needs one, as its first argument;
 * the libraries read no environment, no euid and no working directory, so
 * the same code runs unchanged in a long-lived server, with several
 * contexts side by side (a remote host later is a context plus a
 * transport). A context is immutable once made, so threads may share it. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "vmhost/error.h"

/* The search path when a context has none (or there is no context). */
#define VH_CONTEXT_DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct vh_context {
        char *state_dir;       /* absolute: definitions, images, the guest cache */
        char *runtime_dir;     /* absolute: sockets, pid files, locks */
        bool is_root;          /* the effective user is root */
        char *qemu_user;       /* as root: the user QEMU drops to (not yet checked);
                                * NULL: QEMU keeps our identity (not root, or "root" asked for) */
        char *ovs_db;          /* ovs-vsctl --db= for networks that name none; NULL: OVS's default */
        char *ovs_rundir;      /* where OVS's daemons keep pid files and sockets; NULL: OVS's default */
        char *exec_path;       /* ':'-separated directories programs are searched in; never NULL */
        char *cwd;             /* absolute: the user's working directory, for relative paths they give;
                                * NULL: unknown (relative paths are refused) */
        char *mkguest;         /* the guest builder to run; NULL: the installed one */
        char *net_fault;       /* test fault switch "STEP:N" of the network code; NULL: off */
        uint64_t image_fault_kill_after_writes; /* test fault switch of the image code; 0: off */
};

/* What vh_context_new() copies; NULL strings are left unset. */
struct vh_context_params {
        const char *state_dir;     /* required, absolute */
        const char *runtime_dir;   /* absolute; NULL: STATE/run */
        bool is_root;
        const char *qemu_user;
        const char *ovs_db;
        const char *ovs_rundir;
        const char *exec_path;     /* NULL or "": VH_CONTEXT_DEFAULT_PATH */
        const char *cwd;           /* absolute or NULL */
        const char *mkguest;
        const char *net_fault;
        uint64_t image_fault_kill_after_writes;
};

/* A context built explicitly (tests, and later a remote host). Fails with
 * -EINVAL and a message naming the setting when a directory is missing or
 * not absolute. Sets nothing global. */
int vh_context_new(const struct vh_context_params *params, struct vh_context **ret, struct vh_error *err);

/* The context of this program, read from its environment and identity:
 *   state     $VMHOST_HOME, else /var/lib/vmhost for root, else
 *             $XDG_DATA_HOME/vmhost, else $HOME/.local/share/vmhost
 *   runtime   $VMHOST_HOME/run, else /run/vmhost for root, else
 *             $XDG_RUNTIME_DIR/vmhost, else STATE/run
 *   qemu_user as root: $VMHOST_QEMU_USER or "vmhost-qemu" ("root": none)
 *   ovs_db    $VMHOST_OVS_DB; ovs_rundir $OVS_RUNDIR; exec_path $PATH;
 *   cwd       the working directory; mkguest $VMHOST_MKGUEST
 *   faults    $VMHOST_NET_FAULT, $VMHOST_FAULT_KILL_AFTER_WRITES (which
 *             also sets the image library's switch: it is process-wide)
 * The only place vmhost reads its environment, euid and working directory.
 * Empty variables count as unset. -EINVAL with a message naming the
 * variable for a relative directory or a fault switch that is not a number. */
int vh_context_from_env(struct vh_context **ret, struct vh_error *err);

/* Accepts NULL, returns NULL. */
struct vh_context *vh_context_free(struct vh_context *ctx);
static inline void vh_context_freep(struct vh_context **p) {
        vh_context_free(*p);
}
