/* vm/vm-net.h: a VM's NICs on vmhost networks (src/net/): taps attached
 * before QEMU starts and detached when it stops, crashed or failed to
 * start. Which network each NIC joined is recorded in the VM's runtime
 * state, so cleanup after a crash does not depend on the definition. */
#pragma once

#include "vm/vm-cmdline.h"
#include "vm/vm-def.h"
#include "vmhost/context.h"

struct vm_net_attachments {
        char network[VM_MAX_NICS][VH_NAME_MAX + 1]; /* "" for the built-in user NIC */
        char tap[VM_MAX_NICS][16];
        char user_subnet[VM_MAX_NICS][32];
        bool disable_offload[VM_MAX_NICS];
        char netns[64];                            /* where QEMU must run; "" for ours */
        char warning[512];                         /* the NICs' attach warnings, "; "-joined */
        unsigned n;
};

/* Attaches every NIC that is on a vmhost network. On failure nothing stays
 * attached. */
int vm_net_attach(const struct vh_context *ctx, const struct vm_def *def, struct vm_net_attachments *ret,
                  struct vh_error *err);

/* Detaches the NICs recorded in 'networks' (index = NIC number; empty
 * entries skipped). Best effort and idempotent; the first error is
 * returned after trying all. */
int vm_net_detach(const struct vh_context *ctx, const char *vm_name, char networks[][VH_NAME_MAX + 1], unsigned n,
                  struct vh_error *err);

/* Fills the launch's per-NIC taps from the attachments. */
void vm_net_fill_launch(const struct vm_net_attachments *a, struct vm_launch *l);
