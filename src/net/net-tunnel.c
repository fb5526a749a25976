/* net/net-tunnel.c: tunnels that join the same network on two hosts.
 *
 * bridge networks: a kernel VXLAN (or gretap) link to the peer, enslaved to
 *   the bridge, with local address and underlay device from the route to
 *   the peer.
 * ovs networks: an OVS tunnel port (type=gre|vxlan, options:remote_ip). With
 *   the userspace datapath OVS routes tunnel packets itself and can only
 *   send them out through an OVS bridge that holds the underlay address and
 *   the physical port (../shared/lab/README.md); setup checks for that and
 *   says how to get there ('vmhost net uplink') instead of failing silently.
 *
 * Encapsulation eats into the frame size: net_effective_mtu() lowers the
 * network's MTU unless the underlay is large enough. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/macro.h"
#include "base/strutil.h"
#include "base/strv.h"
#include "net/net-internal.h"
#include "net/ovs.h"

#define VXLAN_PORT 4789
#define VXLAN_DEFAULT_VNI 1

/* What must hold before a tunnel can work: a route to the peer, and with
 * the OVS userspace datapath, that route leaving through an OVS bridge. */
static int tunnel_check(const struct vh_context *ctx, struct nl_conn *nl, const struct net_def *def,
                        const struct net_runtime *rt, const struct net_tunnel *t, struct vh_error *err) {
        char a[NET_IPV4_STRLEN];
        net_ipv4_format(t->remote, a);
        struct nl_route route;
        struct nl_link l;
        int r = nl_route_get(nl, t->remote, &route);
        if (r < 0)
                return vh_error_set(err, r, "no route to tunnel endpoint %s: %s", a, strerror(-r));
        r = nl_link_get_by_index(nl, route.oif, &l);
        if (r < 0)
                return vh_error_set(err, r, "cannot read the route's interface to %s", a);
        if (def->type == NET_TYPE_OVS && rt->datapath == NET_DATAPATH_NETDEV &&
            ovs_bridge_exists(ctx, net_runtime_ovs_db(ctx, def, rt), l.name) != 1)
                return vh_error_set(err, -ENETUNREACH,
                                    "the route to tunnel endpoint %s leaves through %s, which is not an Open vSwitch "
                                    "bridge; the userspace datapath can only send tunnel packets through an OVS "
                                    "bridge that holds the underlay address and the NIC: e.g. 'vmhost net create phy "
                                    "--type ovs' and 'vmhost net uplink phy --port %s --host-ip ADDRESS/PREFIX'",
                                    a, l.name, l.name);
        return 0;
}

static int ovs_tunnel_setup(const struct vh_context *ctx, struct nl_conn *nl, const struct net_def *def,
                            const struct net_runtime *rt, const struct net_tunnel *t, const char *ifname,
                            struct vh_error *err) {
        const char *db = net_runtime_ovs_db(ctx, def, rt);
        int r = tunnel_check(ctx, nl, def, rt, t, err);
        if (r < 0)
                return r;
        struct strv argv = {};
        ovs_argv_add_tunnel_port(&argv, db, rt->bridge, ifname, t, def->name);
        r = argv.error ? argv.error : ovs_vsctl(ctx, argv.v, NULL, err);
        strv_done(&argv);
        if (r < 0)
                return r;
        return ovs_check_interface(ctx, db, ifname, err);
}

static int kernel_tunnel_setup(struct nl_conn *nl, const struct net_def *def, const struct net_runtime *rt,
                               const struct net_tunnel *t, const char *ifname, struct vh_error *err) {
        char a[NET_IPV4_STRLEN];
        net_ipv4_format(t->remote, a);
        struct nl_route route;
        int r = nl_route_get(nl, t->remote, &route);
        if (r < 0)
                return vh_error_set(err, r, "no route to tunnel endpoint %s: %s", a, strerror(-r));
        struct nl_link l, br;
        r = nl_link_get(nl, rt->bridge, &br);
        if (r < 0)
                return vh_error_set(err, r, "bridge %s is missing", rt->bridge);
        /* Made again on every start so that it matches the definition. */
        if (nl_link_get(nl, ifname, &l) == 0) {
                if (!streq(l.kind, "vxlan") && !streq(l.kind, "gretap"))
                        return vh_error_set(err, -EEXIST, "interface %s exists and is not a vmhost tunnel", ifname);
                (void) nl_link_del(nl, l.ifindex);
        }
        if (t->type == NET_TUNNEL_VXLAN) {
                struct nl_vxlan v = {
                        .vni = t->has_key ? t->key : VXLAN_DEFAULT_VNI,
                        .local = route.prefsrc,
                        .remote = t->remote,
                        .port = VXLAN_PORT,
                        .underlay_ifindex = route.oif,
                };
                r = nl_vxlan_add(nl, ifname, &v, rt->mtu);
        } else {
                struct nl_gretap g = {
                        .local = route.prefsrc,
                        .remote = t->remote,
                        .has_key = t->has_key,
                        .key = t->key,
                        .underlay_ifindex = route.oif,
                };
                r = nl_gretap_add(nl, ifname, &g, rt->mtu);
        }
        if (r == -EOPNOTSUPP)
                return vh_error_set(err, r, "this kernel cannot make %s links (module missing)%s",
                                    t->type == NET_TUNNEL_VXLAN ? "vxlan" : "gretap",
                                    t->type == NET_TUNNEL_GRE ? ": use --type vxlan" : "");
        if (r < 0)
                return vh_error_set(err, r, "cannot create tunnel %s to %s: %s", ifname, a, strerror(-r));
        r = nl_link_get(nl, ifname, &l);
        if (r >= 0)
                r = nl_link_set_master(nl, l.ifindex, br.ifindex);
        if (r >= 0)
                r = nl_link_set_up(nl, l.ifindex, true);
        if (r < 0) {
                if (nl_link_get(nl, ifname, &l) == 0)
                        (void) nl_link_del(nl, l.ifindex);
                return vh_error_set(err, r, "cannot attach tunnel %s to %s: %s", ifname, rt->bridge, strerror(-r));
        }
        return 0;
}

int net_tunnel_setup(const struct vh_context *ctx, struct nl_conn *nl, const struct net_def *def,
                     const struct net_runtime *rt, const struct net_tunnel *t, struct vh_error *err) {
        char ifname[NET_IFNAME_MAX + 1];
        int r = net_tunnel_ifname(def, t, ifname);
        if (r < 0)
                return vh_error_set(err, r, "cannot derive a tunnel name for '%s'", def->name);
        if (def->type == NET_TYPE_OVS)
                return ovs_tunnel_setup(ctx, nl, def, rt, t, ifname, err);
        return kernel_tunnel_setup(nl, def, rt, t, ifname, err);
}

int net_tunnel_teardown(const struct vh_context *ctx, struct nl_conn *nl, const struct net_def *def,
                        const struct net_runtime *rt, const struct net_tunnel *t) {
        char ifname[NET_IFNAME_MAX + 1];
        int r = net_tunnel_ifname(def, t, ifname);
        if (r < 0)
                return r;
        if (def->type == NET_TYPE_OVS) {
                struct strv argv = {};
                ovs_argv_del_port(&argv, net_runtime_ovs_db(ctx, def, rt), rt->bridge, ifname);
                r = argv.error ? argv.error : ovs_vsctl(ctx, argv.v, NULL, NULL);
                strv_done(&argv);
                return r;
        }
        struct nl_link l;
        if (nl_link_get(nl, ifname, &l) == 0 && (streq(l.kind, "vxlan") || streq(l.kind, "gretap")))
                return nl_link_del(nl, l.ifindex);
        return 0;
}

/* After the tunnel set changed on a running network: the new effective MTU
 * on the bridge and the taps, and in DHCP. */
static int mtu_update(const struct vh_context *ctx, struct nl_conn *nl, const struct net_def *def,
                      struct net_runtime *rt, struct vh_error *err) {
        unsigned mtu;
        char why[sizeof(rt->mtu_why)];
        int r = net_effective_mtu(nl, def, &mtu, why, sizeof(why), err);
        if (r < 0)
                return r;
        snprintf(rt->mtu_why, sizeof(rt->mtu_why), "%s", why);
        if (mtu == rt->mtu)
                return net_runtime_write(ctx, def->name, rt);
        /* A tap left at the old MTU would drop the larger frames: every
         * port must be known before anything changes. */
        struct net_port *ports = NULL;
        int np = net_ports_read(ctx, def->name, &ports, err);
        if (np < 0)
                return np;
        rt->mtu = mtu;
        /* Taps first: a Linux bridge cannot be larger than its ports. */
        for (int i = 0; i < np; i++) {
                struct nl_link l;
                if (nl_link_get(nl, ports[i].tap, &l) == 0)
                        (void) nl_link_set_mtu(nl, l.ifindex, mtu);
        }
        free(ports);
        if (def->type == NET_TYPE_OVS) {
                struct strv argv = {};
                ovs_argv_begin(&argv, net_runtime_ovs_db(ctx, def, rt));
                strv_add(&argv, "set");
                strv_add(&argv, "Interface");
                strv_add(&argv, rt->bridge);
                strv_addf(&argv, "mtu_request=%u", mtu);
                r = argv.error ? argv.error : ovs_vsctl(ctx, argv.v, NULL, err);
                strv_done(&argv);
        } else {
                struct nl_link br;
                r = nl_link_get(nl, rt->bridge, &br);
                if (r >= 0)
                        r = nl_link_set_mtu(nl, br.ifindex, mtu);
                if (r < 0)
                        vh_error_set(err, r, "cannot set MTU %u on %s: %s", mtu, rt->bridge, strerror(-r));
        }
        if (r < 0)
                return r;
        r = net_runtime_write(ctx, def->name, rt);
        if (r < 0)
                return r;
        return net_dnsmasq_sync(ctx, def, rt, err);
}

int net_tunnel_add(const struct vh_context *ctx, const char *name, const struct net_tunnel *t, struct vh_error *err) {
        _cleanup_net_lock_ int lock = net_lock_take(ctx, err);
        if (lock < 0)
                return lock;
        _cleanup_(net_def_freep) struct net_def *def = NULL;
        int r = net_load(ctx, name, &def, err);
        if (r < 0)
                return r;
        char a[NET_IPV4_STRLEN];
        net_ipv4_format(t->remote, a);
        if (def->type == NET_TYPE_USER)
                return vh_error_set(err, -EINVAL, "network '%s' is user-mode: tunnels need a bridge or ovs network", name);
        for (unsigned i = 0; i < def->n_tunnels; i++)
                if (def->tunnels[i].remote == t->remote)
                        return vh_error_set(err, -EEXIST, "network '%s' has a tunnel to %s already", name, a);
        if (def->n_tunnels >= NET_MAX_TUNNELS)
                return vh_error_set(err, -E2BIG, "network '%s' has the maximum of %d tunnels", name, NET_MAX_TUNNELS);
        def->tunnels[def->n_tunnels++] = *t;
        r = net_def_validate(def, err);
        if (r < 0)
                return r;

        _cleanup_(nl_closep) struct nl_conn *nl = NULL;
        r = nl_open(&nl);
        if (r < 0)
                return vh_error_set(err, r, "cannot open netlink: %s", strerror(-r));
        struct net_runtime rt;
        if (net_runtime_read(ctx, name, &rt) < 0) {
                /* Not running: check now what start would trip over. */
                struct net_runtime planned = { .datapath = NET_DATAPATH_AUTO };
                if (def->type == NET_TYPE_OVS)
                        planned.datapath = ovs_choose_datapath(def->datapath, NULL);
                r = tunnel_check(ctx, nl, def, &planned, t, err);
                if (r < 0)
                        return r;
        } else {
                r = mtu_update(ctx, nl, def, &rt, err);
                if (r >= 0)
                        r = net_tunnel_setup(ctx, nl, def, &rt, t, err);
                if (r < 0) {
                        def->n_tunnels--;
                        struct vh_error e = {};
                        (void) mtu_update(ctx, nl, def, &rt, &e);
                        return r;
                }
        }
        return net_save(ctx, def, err);
}

int net_tunnel_remove(const struct vh_context *ctx, const char *name, uint32_t remote, struct vh_error *err) {
        _cleanup_net_lock_ int lock = net_lock_take(ctx, err);
        if (lock < 0)
                return lock;
        _cleanup_(net_def_freep) struct net_def *def = NULL;
        int r = net_load(ctx, name, &def, err);
        if (r < 0)
                return r;
        char a[NET_IPV4_STRLEN];
        unsigned i;
        for (i = 0; i < def->n_tunnels; i++)
                if (def->tunnels[i].remote == remote)
                        break;
        if (i == def->n_tunnels)
                return vh_error_set(err, -ENOENT, "network '%s' has no tunnel to %s", name, net_ipv4_format(remote, a));
        struct net_tunnel t = def->tunnels[i];
        memmove(&def->tunnels[i], &def->tunnels[i + 1], (def->n_tunnels - i - 1) * sizeof(def->tunnels[0]));
        def->n_tunnels--;

        struct net_runtime rt;
        if (net_runtime_read(ctx, name, &rt) >= 0) {
                _cleanup_(nl_closep) struct nl_conn *nl = NULL;
                r = nl_open(&nl);
                if (r < 0)
                        return vh_error_set(err, r, "cannot open netlink: %s", strerror(-r));
                (void) net_tunnel_teardown(ctx, nl, def, &rt, &t);
                struct vh_error e = {};
                (void) mtu_update(ctx, nl, def, &rt, &e);
        }
        return net_save(ctx, def, err);
}
