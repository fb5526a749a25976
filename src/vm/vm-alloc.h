/* vm/vm-alloc.h: what vmhost hands out so nobody computes it by hand: VM
 * ids, VNC displays and MAC addresses. Allocation happens under the home's
 * lock, so parallel 'vm create' runs never get the same value. */
#pragma once

#include <stdint.h>

#include "vm/vm-def.h"
#include "vmhost/context.h"

/* Takes the exclusive lock of this vmhost home (STATE/vms/.lock), waiting
 * at most VM_HOME_LOCK_TIMEOUT_MS for other vmhost processes (then -EBUSY,
 * naming the holder); returns the fd to close to release it. Taken after
 * a VM's own lock, never before (see vm_lock_take()). */
#define VM_HOME_LOCK_TIMEOUT_MS (30 * 1000)
int vm_home_lock(const struct vh_context *ctx, int *ret_fd, struct vh_error *err);

/* With the home lock held: the lowest VM id and VNC display no definition
 * of this home uses (the display's port must also be free on 'host' now). */
int vm_alloc_id(const struct vh_context *ctx, unsigned *ret, struct vh_error *err);
int vm_alloc_vnc_display(const struct vh_context *ctx, const char *host, unsigned *ret, struct vh_error *err);

/* A MAC for NIC 'index' of VM 'id': locally administered unicast, first
 * octet (index << 4) | 0x02, then 24 bits of this host's id (its machine id
 * and vmhost home), then the VM id. Unique per host by construction, and
 * across hosts unless two host ids collide (1 in 16.7 million). */
int vm_derive_mac(const struct vh_context *ctx, unsigned id, unsigned index, char ret[18]);
/* The 24-bit host id (exposed for tests and 'vmhost doctor'). */
uint32_t vm_host_id(const struct vh_context *ctx);
