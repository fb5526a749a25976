/* net/net.h: vmhost networks, the library behind 'vmhost net' and the VM
 * side's NICs.
 *
 * A network is a definition (STATE/networks/NAME.conf, see net-def.h) and,
 * while it runs, host objects vmhost made and records in RUN/networks/NAME/:
 *   bridge  a Linux bridge (netlink), the gateway address on it, dnsmasq,
 *           masquerade in nftables table "ip vmhost", kernel VXLAN tunnels
 *   ovs     an Open vSwitch bridge (ovs-vsctl) with the gateway on its local
 *           (internal) port, one port per VM NIC with its VLAN tag, GRE or
 *           VXLAN tunnel ports, dnsmasq and masquerade as for bridges
 *   user    nothing on the host: QEMU's user-mode NAT inside each VM
 * A VM NIC is a tap named after the VM ("vh-VM-0"), created on attach and
 * removed on detach, so it exists only while the VM runs.
 *
 * All calls that change something hold one lock (RUN/networks/lock), so two
 * VMs starting at once cannot interleave their changes. Nothing here prints;
 * errors come back as -errno with a message in 'err'. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "base/strutil.h"
#include "net/net-addr.h"
#include "net/net-def.h"
#include "vmhost/context.h"
#include "vmhost/error.h"

/* ------------------------------------------------------------------ VM NICs */

struct net_nic_request {
        const char *vm_name;
        unsigned index;          /* NIC number within the VM, 0..99 */
        const char *mac;         /* "52:54:00:..."; needed for 'ip' */
        int vlan;                /* OVS access VLAN 0..4095; -1 none */
        const char *ip;          /* reserved IPv4 address (DHCP reservation) or NULL */
        const char *trunks;      /* OVS trunk VLANs "1,2,3" or NULL */
};

struct net_nic_attachment {
        char tap[16];            /* the tap to hand to QEMU (ifname=); empty for user networks */
        bool disable_offload;    /* OVS userspace datapath: add csum=off,guest_csum=off to virtio-net-pci,
                                  * or TCP through the switch fails (bad checksums) */
        unsigned mtu;            /* the network's MTU (also the tap's) */
        char netns[64];          /* network namespace QEMU must run in; empty: the caller's own */
        enum net_type type;
        char user_subnet[NET_PREFIX_STRLEN]; /* user networks: -netdev user,net=THIS */
        char warning[256];       /* attached, but something will not work as the user may expect
                                  * (a tagged NIC on a network whose DHCP is untagged); empty if none */
};

/* Makes the tap, puts it on the bridge or switch (with the VLAN tag), adds
 * the DHCP reservation when req->ip is set and starts the network first if
 * it is not running. Attaching a NIC that is still attached (the VM crashed
 * and nobody detached it) replaces the old tap. */
int net_nic_attach(const struct vh_context *ctx, const char *net_name, const struct net_nic_request *req,
                   struct net_nic_attachment *ret, struct vh_error *err);

/* Removes the tap, its switch port and its reservation. Idempotent: fine to
 * call twice, for a NIC never attached, and after QEMU crashed. */
int net_nic_detach(const struct vh_context *ctx, const char *net_name, const char *vm_name, unsigned index,
                   struct vh_error *err);

/* Detaches every NIC of the VM from every network (cleanup after a crash
 * when the caller no longer knows which networks it used). Returns the
 * number of NICs detached. */
int net_nic_detach_all(const struct vh_context *ctx, const char *vm_name, struct vh_error *err);

/* The VMs with NICs attached to the network: returns their number and, when
 * ret_vms is not NULL, a NULL-terminated array of names (net_strv_free()). */
int net_in_use_by(const struct vh_context *ctx, const char *net_name, char ***ret_vms, struct vh_error *err);
char **net_strv_free(char **v);

struct net_port {
        char vm[VH_NAME_MAX + 1];
        unsigned index;
        char tap[16];
        char mac[18];
        char ip[NET_IPV4_STRLEN];
        int vlan;
        char trunks[64];
};
/* The attached NICs; returns the count, *ret a new array (free()). */
int net_list_ports(const struct vh_context *ctx, const char *net_name, struct net_port **ret, struct vh_error *err);

/* ------------------------------------------------------------------ networks */

/* Definitions on disk. */
int net_load(const struct vh_context *ctx, const char *name, struct net_def **ret, struct vh_error *err);
int net_save(const struct vh_context *ctx, const struct net_def *def, struct vh_error *err);
bool net_exists(const struct vh_context *ctx, const char *name);
/* Sorted names; NULL-terminated (net_strv_free()). Returns the count. */
int net_list_names(const struct vh_context *ctx, char ***ret, struct vh_error *err);

/* Completes and validates 'def', checks it against the host (subnet overlap
 * with host routes and other vmhost networks, Open vSwitch present, the NAT
 * interface exists) and saves it. -EEXIST if the name is taken. */
int net_create(const struct vh_context *ctx, struct net_def *def, struct vh_error *err);

struct net_status {
        bool running;
        bool degraded;               /* recorded as running but the bridge is gone */
        char bridge[16];
        enum net_datapath datapath;  /* ovs: the datapath in use */
        char datapath_why[128];
        unsigned mtu;                /* effective: may be below the definition's for tunnel headroom */
        char mtu_why[128];
        int dnsmasq_pid;
        unsigned n_ports;
};
int net_get_status(const struct vh_context *ctx, const char *name, struct net_status *ret, struct vh_error *err);

/* The datapath an OVS network gets when it starts on this host now: the
 * configured one ("as configured"), or for auto what start would choose
 * (system when the openvswitch kernel module is there, else netdev) and why.
 * Changes nothing, so 'net show' of a stopped network can say it; 'net
 * start' uses the same answer. 'ret_why' (may be NULL) is a static string. */
enum net_datapath net_datapath_choose(enum net_datapath configured, const char **ret_why);

/* Brings the network up (idempotent). A start that fails half-way removes
 * what it made. ret may be NULL. */
int net_start(const struct vh_context *ctx, const char *name, struct net_status *ret, struct vh_error *err);
/* Takes it down; refuses (-EBUSY) while VMs are attached. */
int net_stop(const struct vh_context *ctx, const char *name, struct vh_error *err);
/* Stops it and removes the definition; refuses (-EBUSY) while VMs are attached. */
int net_delete(const struct vh_context *ctx, const char *name, struct vh_error *err);

/* ------------------------------------------------------------------ tunnels */

/* Adds a tunnel to the definition and, if the network runs, to the host. */
int net_tunnel_add(const struct vh_context *ctx, const char *name, const struct net_tunnel *t, struct vh_error *err);
int net_tunnel_remove(const struct vh_context *ctx, const char *name, uint32_t remote, struct vh_error *err);

/* ------------------------------------------------------------------ uplink */

struct net_uplink_request {
        const char *port;            /* the NIC to move into the switch */
        struct net_prefix host_ip;   /* the host's address, moved from the NIC onto the bridge */
        uint32_t gateway;            /* default route to move; 0: the NIC's current default route, if any */
        bool dry_run;                /* only make the plan */
};

/* Moves a NIC into the network's bridge and the host's address onto the
 * bridge's own (internal) port, step by step; if a step fails, the steps
 * done are undone in reverse order so the host keeps its address. The plan
 * (one line per step, then what happened) goes to *ret_plan
 * (net_strv_free()) even on failure. */
int net_uplink(const struct vh_context *ctx, const char *name, const struct net_uplink_request *req, char ***ret_plan,
               struct vh_error *err);
/* Moves the NIC and the address back and forgets the uplink. */
int net_uplink_remove(const struct vh_context *ctx, const char *name, char ***ret_plan, struct vh_error *err);
