/* vm/vm-addr.c: guest addresses per NIC, from the networks' leases and
 * QEMU's user-mode defaults. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/macro.h"
#include "base/strutil.h"
#include "net/net-lease.h"
#include "net/net.h"
#include "vm/vm-addr.h"
#include "vm/vm-alloc.h"

/* QEMU's user-mode network when none is given (-netdev user without net=). */
static const struct net_prefix user_default_subnet = { .addr = 0x0a000200, .len = 24 };

const char *vm_addr_source_to_string(enum vm_addr_source s) {
        switch (s) {
        case VM_ADDR_DHCP_LEASE: return "dhcp-lease";
        case VM_ADDR_RESERVED: return "reserved";
        case VM_ADDR_USER_NAT: break;
        }
        return "user-nat";
}

uint32_t vm_user_nat_guest_address(const struct net_prefix *subnet) {
        return net_prefix_network(subnet) + 15;
}

/* The leases of each network the VM uses, read once per call. */
struct lease_cache {
        char network[VM_MAX_NICS][VH_NAME_MAX + 1];
        struct net_lease *leases[VM_MAX_NICS];
        size_t n[VM_MAX_NICS];
        bool ok[VM_MAX_NICS];
        unsigned used;
};

static void lease_cache_done(struct lease_cache *c) {
        for (unsigned i = 0; i < c->used; i++)
                free(c->leases[i]);
}

static const struct net_lease *lease_lookup(const struct vh_context *ctx, struct lease_cache *c, const char *network,
                                            const char *mac, int64_t now) {
        unsigned i = 0;
        while (i < c->used && !streq(c->network[i], network))
                i++;
        if (i == c->used) {
                if (c->used >= VM_MAX_NICS)
                        return NULL;
                snprintf(c->network[i], sizeof(c->network[i]), "%s", network);
                c->ok[i] = net_leases_read(ctx, network, &c->leases[i], &c->n[i], NULL) >= 0;
                c->used++;
        }
        return c->ok[i] ? net_leases_find(c->leases[i], c->n[i], mac, now) : NULL;
}

int vm_addresses(const struct vh_context *ctx, const struct vm_def *def, const struct vm_status *st, int64_t now,
                 struct vm_address **ret, struct vh_error *err) {
        *ret = NULL;
        if (st->state != VM_STATE_RUNNING || def->n_nics == 0)
                return 0;
        _cleanup_free_ struct vm_address *a = calloc(def->n_nics, sizeof(*a));
        if (!a)
                return vh_error_set(err, -ENOMEM, "Out of memory");
        struct lease_cache cache = {};
        unsigned n = 0;
        for (unsigned i = 0; i < def->n_nics; i++) {
                const struct vm_nic *nic = &def->nics[i];
                struct vm_address *x = &a[n];
                x->nic = i;
                snprintf(x->network, sizeof(x->network), "%s", nic->network);
                /* A hand-written NIC without a MAC runs with the derived one. */
                if (nic->mac[0])
                        snprintf(x->mac, sizeof(x->mac), "%s", nic->mac);
                else
                        (void) vm_derive_mac(ctx, def->id, i, x->mac);

                struct net_prefix subnet = user_default_subnet;
                bool user = streq(nic->network, VM_NET_USER);
                if (!user) {
                        struct net_def *nd = NULL;
                        if (net_load(ctx, nic->network, &nd, NULL) < 0)
                                continue; /* the network is gone: nothing to say */
                        user = nd->type == NET_TYPE_USER;
                        if (user && nd->has_subnet)
                                subnet = nd->subnet;
                        net_def_free(nd);
                }
                if (user) {
                        net_ipv4_format(vm_user_nat_guest_address(&subnet), x->ip);
                        x->source = VM_ADDR_USER_NAT;
                        n++;
                        continue;
                }
                const struct net_lease *l = x->mac[0] ? lease_lookup(ctx, &cache, nic->network, x->mac, now) : NULL;
                if (l) {
                        snprintf(x->ip, sizeof(x->ip), "%s", l->ip);
                        x->source = VM_ADDR_DHCP_LEASE;
                        n++;
                } else if (nic->ip) {
                        snprintf(x->ip, sizeof(x->ip), "%s", nic->ip);
                        x->source = VM_ADDR_RESERVED;
                        n++;
                }
        }
        lease_cache_done(&cache);
        if (n > 0)
                *ret = TAKE_PTR(a);
        return (int) n;
}
