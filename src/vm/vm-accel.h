/* vm/vm-accel.h: which accelerator a VM gets. 'auto' asks the host probe
 * (src/probe/) whether KVM really runs guest code here, not merely whether
 * /dev/kvm exists. */
#pragma once

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
