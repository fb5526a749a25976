/* vm/vm-accel.h: which accelerator a VM gets. 'auto' asks the host probe
 * (src/probe/) whether KVM really runs guest code here, not merely whether
 * /dev/kvm exists. */
#pragma once

#include <stdbool.h>

#include "vm/vm-def.h"
#include "vmhost/context.h"

/* Sets *ret to "kvm" or "tcg" (static strings). */
int vm_accel_resolve(const struct vh_context *ctx, enum vm_accel want, const char **ret, struct vh_error *err);

/* Whether CPU model 'cpu_model' (NULL: QEMU's default) can run on 'accel'
 * ("kvm" or "tcg"). 'host' passes the host CPU through, which only a
 * hardware accelerator can do; QEMU refuses it under TCG after the VM has
 * been started, so vmhost refuses it up front. The error names the VM, the
 * accelerator and the model to use instead. */
int vm_accel_check_cpu(const char *vm_name, const char *cpu_model, const char *accel, struct vh_error *err);
/* Resolves def's accelerator and checks its CPU model against it. */
int vm_accel_check_def(const struct vh_context *ctx, const struct vm_def *def, struct vh_error *err);

/* The machine type vmhost's VMs are, unversioned: QEMU's i440FX PC. */
#define VM_MACHINE_ALIAS "pc"
#define VM_QEMU_BINARY "qemu-system-x86_64"

/* The versioned machine type VM_MACHINE_ALIAS stands for in this host's
 * 'qemu_binary' (from its '-machine help'), e.g. "pc-i440fx-7.2". */
int vm_machine_resolve(const struct vh_context *ctx, const char *qemu_binary, char **ret, struct vh_error *err);
/* Pins def's machine type (def->machine) to the versioned type of this
 * host's QEMU when it has none yet, so that a QEMU upgrade cannot change
 * the VM's hardware under it. Best effort: where QEMU cannot tell (not
 * installed, no alias listed), the VM stays unpinned and is pinned at its
 * next start. *ret_pinned (may be NULL) says whether def changed. Returns
 * 0, or -ENOMEM. */
int vm_machine_pin(const struct vh_context *ctx, struct vm_def *def, bool *ret_pinned);
