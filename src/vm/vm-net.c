/* vm/vm-net.c: NICs on vmhost networks. */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/macro.h"
#include "net/net.h"
#include "vm/vm-net.h"

int vm_net_attach(const struct vh_context *ctx, const struct vm_def *def, struct vm_net_attachments *ret,
                  struct vh_error *err) {
        struct vm_net_attachments a = { .n = def->n_nics };
        int r = 0;
        for (unsigned i = 0; i < def->n_nics; i++) {
                const struct vm_nic *nic = &def->nics[i];
                if (streq(nic->network, VM_NET_USER))
                        continue;
                struct net_nic_request req = {
                        .vm_name = def->name,
                        .index = i,
                        .mac = nic->mac,
                        .vlan = nic->vlan,
                        .ip = nic->ip,
                };
                struct net_nic_attachment at;
                r = net_nic_attach(ctx, nic->network, &req, &at, err);
                if (r < 0)
                        goto fail;
                snprintf(a.network[i], sizeof(a.network[i]), "%s", nic->network);
                snprintf(a.tap[i], sizeof(a.tap[i]), "%s", at.tap);
                snprintf(a.user_subnet[i], sizeof(a.user_subnet[i]), "%s", at.type == NET_TYPE_USER ? at.user_subnet : "");
                a.disable_offload[i] = at.disable_offload;
                if (at.warning[0]) {
                        size_t used = strlen(a.warning);
                        snprintf(a.warning + used, sizeof(a.warning) - used, "%s%s", used ? "; " : "", at.warning);
                }
                /* QEMU runs in one namespace: every tap must be in it. */
                if (at.netns[0]) {
                        if (a.netns[0] && !streq(a.netns, at.netns)) {
                                r = vh_error_set(err, -EINVAL,
                                                 "VM %s: NIC %u's network %s lives in network namespace %s, another NIC's in %s",
                                                 def->name, i, nic->network, at.netns, a.netns);
                                goto fail;
                        }
                        snprintf(a.netns, sizeof(a.netns), "%s", at.netns);
                }
        }
        *ret = a;
        return 0;

fail:
        (void) vm_net_detach(ctx, def->name, a.network, def->n_nics, NULL);
        return r;
}

int vm_net_detach(const struct vh_context *ctx, const char *vm_name, char networks[][VH_NAME_MAX + 1], unsigned n,
                  struct vh_error *err) {
        int first = 0;
        for (unsigned i = 0; i < n && i < VM_MAX_NICS; i++) {
                if (!networks[i][0])
                        continue;
                struct vh_error e = {};
                int r = net_nic_detach(ctx, networks[i], vm_name, i, &e);
                if (r < 0 && first == 0) {
                        first = r;
                        if (err)
                                *err = e;
                }
        }
        return first;
}

void vm_net_fill_launch(const struct vm_net_attachments *a, struct vm_launch *l) {
        for (unsigned i = 0; i < a->n && i < VM_MAX_NICS; i++) {
                l->nics[i].tap = a->tap[i][0] ? a->tap[i] : NULL;
                l->nics[i].user_subnet = a->user_subnet[i][0] ? a->user_subnet[i] : NULL;
                l->nics[i].disable_offload = a->disable_offload[i];
        }
}
