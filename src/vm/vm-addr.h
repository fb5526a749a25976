/* vm/vm-addr.h: where a running VM's guest can be reached: per NIC, the
 * address dnsmasq leased to its MAC on a vmhost bridge or OVS network (or,
 * before the guest asked, the address reserved for it), and for user-mode
 * NICs the address QEMU's user-mode NAT gives the guest. What 'vmhost vm
 * status' and 'vm list' show; nothing here prints. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "net/net-addr.h"
#include "vm/vm-def.h"
#include "vm/vm.h"
#include "vmhost/context.h"

enum vm_addr_source {
        VM_ADDR_DHCP_LEASE, /* in the network's dnsmasq lease file */
        VM_ADDR_RESERVED,   /* the NIC's ip=, not leased (yet) */
        VM_ADDR_USER_NAT,   /* QEMU's user-mode DHCP, always the same address */
};

struct vm_address {
        unsigned nic;
        char network[VH_NAME_MAX + 1];   /* VM_NET_USER or the vmhost network */
        char mac[18];
        char ip[NET_IPV4_STRLEN];
        enum vm_addr_source source;
};

/* "dhcp-lease", "reserved", "user-nat" */
const char *vm_addr_source_to_string(enum vm_addr_source s);

/* The address QEMU's user-mode network gives its (only) guest: its DHCP
 * server hands out the 16 addresses from the 15th host of the subnet on
 * (10.0.2.15 in QEMU's default 10.0.2.0/24), the first one to the first
 * client. */
uint32_t vm_user_nat_guest_address(const struct net_prefix *subnet);

/* The addresses of the VM's NICs while it runs ('st' as vm_get_status()
 * gave it); none when it does not. A NIC with nothing known (no lease, no
 * reservation, its network gone or its lease file unreadable) is left out:
 * addresses are information, and one unreadable file must not fail the
 * status. 'now' (seconds since the epoch) decides which leases have
 * expired. Returns the count; *ret (free()) has one entry per address. */
int vm_addresses(const struct vh_context *ctx, const struct vm_def *def, const struct vm_status *st, int64_t now,
                 struct vm_address **ret, struct vh_error *err);
