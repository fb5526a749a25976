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
 * of this home uses (the display's port must also be free on 'host' now).
 * An id whose derived MACs (any NIC index) are among 'avoid_macs' (MACs in
 * use on other hosts of the cluster, NULL-terminated; NULL: none) is
 * skipped too, as one taken here by a hand-written MAC is. */
int vm_alloc_id(const struct vh_context *ctx, char *const *avoid_macs, unsigned *ret, struct vh_error *err);
int vm_alloc_vnc_display(const struct vh_context *ctx, const char *host, unsigned *ret, struct vh_error *err);

/* -EADDRINUSE, naming the NIC, when a MAC of 'def' is among 'avoid_macs'
 * (compared without case): a MAC given by hand that another host's VM
 * already has. */
int vm_alloc_check_macs(const struct vm_def *def, char *const *avoid_macs, struct vh_error *err);

/* The host id: VM_HOST_ID_LEN random hex digits made once per vmhost home
 * and kept in STATE/host-id, so that two machines (or two homes) differ
 * even when they share /etc/machine-id (cloned images, the test hosts),
 * and a home keeps its id across reboots. A file that holds anything else
 * is refused, naming it (removing it makes a new id, and new MACs for NICs
 * that have none recorded). Safe against two processes making it at once. */
#define VM_HOST_ID_LEN 32
int vm_host_id_get(const struct vh_context *ctx, char ret[VM_HOST_ID_LEN + 1], struct vh_error *err);
/* The 24 bits of a host id that derived MACs carry. Pure. */
uint32_t vm_host_id_mix(const char *host_id);
/* vm_host_id_mix() of this home's host id. */
int vm_host_id(const struct vh_context *ctx, uint32_t *ret, struct vh_error *err);

/* A MAC for NIC 'index' of VM 'id' on the host whose mixed id is 'host':
 * locally administered unicast, first octet (index << 4) | 0x02, then the
 * 24 bits of 'host', then the VM id. Unique per host by construction, and
 * across hosts unless two mixed host ids collide (1 in 16.7 million; a
 * create also avoids the MACs it finds on the other hosts). Pure. */
int vm_mac_derive(uint32_t host, unsigned id, unsigned index, char ret[18]);
/* vm_mac_derive() with this home's host id. */
int vm_derive_mac(const struct vh_context *ctx, unsigned id, unsigned index, char ret[18]);

/* Every MAC the VMs of this home use (recorded or derived), lower case,
 * NULL-terminated (free with vm_names_free()). Returns the count. */
int vm_alloc_macs_in_use(const struct vh_context *ctx, char ***ret, struct vh_error *err);
