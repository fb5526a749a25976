/* vm/vm-accel.h: which accelerator a VM gets. 'auto' asks the host probe
 * (src/host/) whether KVM really runs guest code here, not merely whether
 * /dev/kvm exists. */
#pragma once

#include "vm/vm-def.h"

/* Sets *ret to "kvm" or "tcg" (static strings). */
int vm_accel_resolve(enum vm_accel want, const char **ret, struct vh_error *err);
