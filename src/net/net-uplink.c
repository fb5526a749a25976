/* net/net-uplink.c: moving a NIC into a network's switch and the host's
 * address onto the switch's own port (the bridge's local interface), so the
 * VMs share the NIC's LAN and the host stays reachable.
 *
 * The move is a list of steps, each with its undo. The plan is made (and
 * printed with --dry-run) before anything changes; if a step fails, the
 * steps done are undone in reverse order, so the host never ends up
 * without its address. The default route through the NIC is taken down
 * explicitly before the address goes (removing a device's last address
 * would flush it silently) and brought back on the bridge afterwards. */
#include <errno.h>
#include <linux/rtnetlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/macro.h"
#include "base/strutil.h"
#include "base/strv.h"
#include "net/net-internal.h"
#include "net/ovs.h"

enum uplink_step {
        STEP_PORT_TO_BRIDGE,
        STEP_ROUTE_OFF_PORT,
        STEP_ADDR_OFF_PORT,
        STEP_ADDR_ON_BRIDGE,
        STEP_ROUTE_ON_BRIDGE,
        _STEP_MAX,
};

struct uplink {
        struct nl_conn *nl;
        const struct net_def *def;
        const char *db;          /* ovs: the switch's database */
        const char *bridge;
        const char *port;
        struct net_prefix host_ip;
        unsigned mtu, orig_mtu;
        uint32_t gateway;        /* default route to put on the bridge; 0: none */
        bool move_route;         /* a default route through the port exists */
        struct nl_route route;   /* ... and this is it */
        bool had_ip;
        bool active[_STEP_MAX];  /* which steps this move consists of */
};

static int link_index(struct nl_conn *nl, const char *name) {
        struct nl_link l;
        int r = nl_link_get(nl, name, &l);
        return r < 0 ? r : l.ifindex;
}

static int port_attach(const struct vh_context *ctx, struct uplink *u, struct vh_error *err) {
        int pi = link_index(u->nl, u->port);
        if (pi < 0)
                return vh_error_set(err, pi, "interface %s is gone", u->port);
        int r;
        if (u->def->type == NET_TYPE_OVS) {
                struct strv argv = {};
                const char *db = u->db;
                ovs_argv_add_uplink_port(&argv, db, u->bridge, u->port, u->def->name, u->mtu != u->orig_mtu ? u->mtu : 0);
                r = argv.error ? argv.error : ovs_vsctl(ctx, argv.v, NULL, err);
                strv_done(&argv);
                if (r >= 0)
                        r = ovs_check_interface(ctx, db, u->port, err);
                if (r < 0) {
                        struct strv del = {};
                        ovs_argv_del_port(&del, db, u->bridge, u->port);
                        if (!del.error)
                                (void) ovs_vsctl(ctx, del.v, NULL, NULL);
                        strv_done(&del);
                        return r;
                }
        } else {
                int bi = link_index(u->nl, u->bridge);
                if (bi < 0)
                        return vh_error_set(err, bi, "bridge %s is missing", u->bridge);
                r = u->mtu != u->orig_mtu ? nl_link_set_mtu(u->nl, pi, u->mtu) : 0;
                if (r >= 0)
                        r = nl_link_set_master(u->nl, pi, bi);
                if (r < 0) {
                        (void) nl_link_set_mtu(u->nl, pi, u->orig_mtu);
                        return vh_error_set(err, r, "cannot add %s to bridge %s: %s", u->port, u->bridge, strerror(-r));
                }
        }
        r = nl_link_set_up(u->nl, pi, true);
        if (r < 0)
                return vh_error_set(err, r, "cannot bring %s up: %s", u->port, strerror(-r));
        return 0;
}

static int port_detach(const struct vh_context *ctx, struct uplink *u) {
        int r = 0, pi = link_index(u->nl, u->port);
        if (u->def->type == NET_TYPE_OVS) {
                struct strv argv = {};
                ovs_argv_del_port(&argv, u->db, u->bridge, u->port);
                r = argv.error ? argv.error : ovs_vsctl(ctx, argv.v, NULL, NULL);
                strv_done(&argv);
        } else if (pi > 0)
                r = nl_link_set_master(u->nl, pi, 0);
        if (pi > 0 && u->orig_mtu && u->orig_mtu != u->mtu)
                (void) nl_link_set_mtu(u->nl, pi, u->orig_mtu);
        if (pi > 0)
                (void) nl_link_set_up(u->nl, pi, true);
        return r;
}

static struct nl_route default_route(uint32_t gateway, int oif) {
        return (struct nl_route) { .gateway = gateway, .oif = oif, .protocol = RTPROT_BOOT };
}

static int step_do(const struct vh_context *ctx, struct uplink *u, enum uplink_step s, struct vh_error *err) {
        char p[NET_PREFIX_STRLEN], g[NET_IPV4_STRLEN];
        net_prefix_format(&u->host_ip, p);
        net_ipv4_format(u->gateway, g);
        int r, bi;
        switch (s) {
        case STEP_PORT_TO_BRIDGE:
                return port_attach(ctx, u, err);
        case STEP_ROUTE_OFF_PORT:
                r = nl_route_del(u->nl, &u->route);
                return r < 0 ? vh_error_set(err, r, "cannot remove the default route from %s: %s", u->port, strerror(-r)) : 0;
        case STEP_ADDR_OFF_PORT:
                r = link_index(u->nl, u->port);
                if (r >= 0)
                        r = nl_addr_del(u->nl, r, &u->host_ip);
                return r < 0 ? vh_error_set(err, r, "cannot remove %s from %s: %s", p, u->port, strerror(-r)) : 0;
        case STEP_ADDR_ON_BRIDGE:
                bi = link_index(u->nl, u->bridge);
                r = bi < 0 ? bi : nl_addr_add(u->nl, bi, &u->host_ip);
                if (r >= 0)
                        r = nl_link_set_up(u->nl, bi, true);
                return r < 0 ? vh_error_set(err, r, "cannot add %s to %s: %s", p, u->bridge, strerror(-r)) : 0;
        case STEP_ROUTE_ON_BRIDGE:
                bi = link_index(u->nl, u->bridge);
                if (bi >= 0) {
                        struct nl_route rt = default_route(u->gateway, bi);
                        r = nl_route_add(u->nl, &rt);
                } else
                        r = bi;
                return r < 0 ? vh_error_set(err, r, "cannot add the default route via %s on %s: %s", g, u->bridge,
                                            strerror(-r))
                             : 0;
        default:
                return -EINVAL;
        }
}

static int step_undo(const struct vh_context *ctx, struct uplink *u, enum uplink_step s) {
        int i;
        switch (s) {
        case STEP_PORT_TO_BRIDGE:
                return port_detach(ctx, u);
        case STEP_ROUTE_OFF_PORT: {
                i = link_index(u->nl, u->port);
                if (i < 0)
                        return i;
                struct nl_route rt = u->route;
                rt.oif = i;
                return nl_route_add(u->nl, &rt);
        }
        case STEP_ADDR_OFF_PORT:
                i = link_index(u->nl, u->port);
                return i < 0 ? i : nl_addr_add(u->nl, i, &u->host_ip);
        case STEP_ADDR_ON_BRIDGE:
                i = link_index(u->nl, u->bridge);
                return i < 0 ? i : nl_addr_del(u->nl, i, &u->host_ip);
        case STEP_ROUTE_ON_BRIDGE: {
                i = link_index(u->nl, u->bridge);
                if (i < 0)
                        return i;
                struct nl_route rt = default_route(u->gateway, i);
                return nl_route_del(u->nl, &rt);
        }
        default:
                return -EINVAL;
        }
}

static void step_describe(const struct uplink *u, enum uplink_step s, char *buf, size_t len) {
        char p[NET_PREFIX_STRLEN], g[NET_IPV4_STRLEN], m[32] = "";
        net_prefix_format(&u->host_ip, p);
        net_ipv4_format(u->gateway, g);
        if (u->mtu != u->orig_mtu)
                snprintf(m, sizeof(m), ", MTU %u -> %u", u->orig_mtu, u->mtu);
        switch (s) {
        case STEP_PORT_TO_BRIDGE:
                snprintf(buf, len, "add %s to %s bridge %s%s", u->port,
                         u->def->type == NET_TYPE_OVS ? "Open vSwitch" : "Linux", u->bridge, m);
                break;
        case STEP_ROUTE_OFF_PORT:
                snprintf(buf, len, "remove the default route via %s from %s", net_ipv4_format(u->route.gateway, g),
                         u->port);
                break;
        case STEP_ADDR_OFF_PORT:
                snprintf(buf, len, "remove %s from %s", p, u->port);
                break;
        case STEP_ADDR_ON_BRIDGE:
                snprintf(buf, len, "add %s to %s (the bridge's internal port)", p, u->bridge);
                break;
        case STEP_ROUTE_ON_BRIDGE:
                snprintf(buf, len, "add the default route via %s on %s", g, u->bridge);
                break;
        default:
                snprintf(buf, len, "?");
        }
}

/* Fills 'u' from the host's current state; refuses what cannot work. */
static int uplink_prepare(struct uplink *u, struct vh_error *err) {
        struct nl_link pl, bl;
        int r = nl_link_get(u->nl, u->port, &pl);
        if (r == -ENODEV)
                return vh_error_set(err, r, "uplink interface %s does not exist (see 'ip link')", u->port);
        if (r < 0)
                return vh_error_set(err, r, "cannot read interface %s: %s", u->port, strerror(-r));
        if (streq(u->port, u->bridge))
                return vh_error_set(err, -EINVAL, "%s is the network's own bridge", u->port);
        if (streq(pl.kind, "bridge") || streq(pl.kind, "openvswitch") || streq(pl.kind, "tun") ||
            streq(pl.name, "lo"))
                return vh_error_set(err, -EINVAL, "%s is a %s, not a NIC that can be moved into a switch", u->port,
                                    pl.kind[0] ? pl.kind : "loopback");
        bool have_bridge = nl_link_get(u->nl, u->bridge, &bl) == 0;
        if (pl.master > 0 && !(have_bridge && pl.master == bl.ifindex)) {
                struct nl_link m;
                if (nl_link_get_by_index(u->nl, pl.master, &m) < 0)
                        snprintf(m.name, sizeof(m.name), "#%d", pl.master);
                return vh_error_set(err, -EBUSY, "%s is already part of %s", u->port, m.name);
        }
        u->orig_mtu = pl.mtu;

        struct nl_addr *addrs = NULL;
        int na = nl_addr_list(u->nl, 0, &addrs);
        if (na < 0)
                return vh_error_set(err, na, "cannot read the host's addresses: %s", strerror(-na));
        char p[NET_PREFIX_STRLEN];
        net_prefix_format(&u->host_ip, p);
        for (int i = 0; i < na; i++) {
                if (addrs[i].prefix.addr != u->host_ip.addr)
                        continue;
                if (addrs[i].ifindex == pl.ifindex && addrs[i].prefix.len == u->host_ip.len)
                        u->had_ip = true;
                else if (!(have_bridge && addrs[i].ifindex == bl.ifindex)) {
                        struct nl_link o;
                        if (nl_link_get_by_index(u->nl, addrs[i].ifindex, &o) < 0)
                                snprintf(o.name, sizeof(o.name), "#%d", addrs[i].ifindex);
                        free(addrs);
                        return vh_error_set(err, -EADDRINUSE, "address %s is on %s, not on %s", p, o.name, u->port);
                }
        }
        free(addrs);

        struct nl_route *routes = NULL;
        int nr = nl_route_list(u->nl, &routes);
        if (nr < 0)
                return vh_error_set(err, nr, "cannot read the host's routes: %s", strerror(-nr));
        for (int i = 0; i < nr; i++)
                if (routes[i].table == RT_TABLE_MAIN && routes[i].dst.len == 0 && routes[i].oif == pl.ifindex &&
                    routes[i].gateway) {
                        u->move_route = true;
                        u->route = routes[i];
                        u->route.table = RT_TABLE_MAIN;
                        break;
                }
        free(routes);
        if (!u->gateway && u->move_route)
                u->gateway = u->route.gateway;
        if (u->gateway && !net_prefix_is_host(&u->host_ip, u->gateway)) {
                char g[NET_IPV4_STRLEN];
                return vh_error_set(err, -EINVAL, "gateway %s is not inside %s", net_ipv4_format(u->gateway, g), p);
        }

        u->active[STEP_PORT_TO_BRIDGE] = true;
        u->active[STEP_ROUTE_OFF_PORT] = u->move_route;
        u->active[STEP_ADDR_OFF_PORT] = u->had_ip;
        u->active[STEP_ADDR_ON_BRIDGE] = true;
        u->active[STEP_ROUTE_ON_BRIDGE] = u->gateway != 0;
        return 0;
}

int net_uplink_apply(const struct vh_context *ctx, struct nl_conn *nl, const struct net_def *def,
                     struct net_runtime *rt, char ***ret_plan, bool dry_run, struct vh_error *err) {
        struct uplink u = {
                .nl = nl,
                .def = def,
                .db = net_runtime_ovs_db(ctx, def, rt),
                .bridge = rt->bridge,
                .port = def->uplink_port,
                .host_ip = def->uplink_host_ip,
                .gateway = def->uplink_gateway,
                .mtu = rt->mtu ? rt->mtu : net_def_mtu(def),
        };
        struct strv plan = {};
        int r = uplink_prepare(&u, err);
        if (r < 0)
                goto out;

        char line[256], desc[200];
        strv_addf(&plan, "uplink plan for network %s:", def->name);
        unsigned n = 0;
        for (int s = 0; s < _STEP_MAX; s++)
                if (u.active[s]) {
                        step_describe(&u, (enum uplink_step) s, desc, sizeof(desc));
                        strv_addf(&plan, "  %u. %s", ++n, desc);
                }
        if (dry_run) {
                strv_add(&plan, "(dry run: nothing changed)");
                goto out;
        }

        bool done[_STEP_MAX] = {};
        n = 0;
        for (int s = 0; s < _STEP_MAX && r >= 0; s++) {
                if (!u.active[s])
                        continue;
                n++;
                if (net_fault_inject(ctx, "uplink", n))
                        r = vh_error_set(err, -EIO, "step %u failed (fault injected by VMHOST_NET_FAULT)", n);
                else
                        r = step_do(ctx, &u, (enum uplink_step) s, err);
                if (r >= 0)
                        done[s] = true;
                else {
                        step_describe(&u, (enum uplink_step) s, desc, sizeof(desc));
                        snprintf(line, sizeof(line), "step %u (%.100s) failed: %.120s", n, desc, err ? err->msg : "");
                        strv_add(&plan, line);
                }
        }
        if (r < 0) {
                for (int s = _STEP_MAX - 1; s >= 0; s--) {
                        if (!done[s])
                                continue;
                        step_describe(&u, (enum uplink_step) s, desc, sizeof(desc));
                        int k = step_undo(ctx, &u, (enum uplink_step) s);
                        strv_addf(&plan, "rollback: undo '%s': %s", desc, k < 0 ? strerror(-k) : "ok");
                }
                goto out;
        }
        strv_add(&plan, "done");
        snprintf(rt->uplink_port, sizeof(rt->uplink_port), "%s", u.port);
        rt->uplink_orig_mtu = u.orig_mtu;
        rt->uplink_gateway = u.gateway;
        rt->uplink_had_ip = u.had_ip;
out:
        if (plan.error && r >= 0)
                r = -ENOMEM;
        if (ret_plan && !plan.error)
                *ret_plan = plan.v;
        else
                strv_done(&plan);
        return r;
}

int net_uplink_revert(const struct vh_context *ctx, struct nl_conn *nl, const struct net_def *def,
                      struct net_runtime *rt) {
        if (!rt->uplink_port[0])
                return 0;
        struct uplink u = {
                .nl = nl,
                .def = def,
                .db = net_runtime_ovs_db(ctx, def, rt),
                .bridge = rt->bridge,
                .port = rt->uplink_port,
                .host_ip = def->uplink_host_ip,
                .gateway = rt->uplink_gateway,
                .mtu = rt->mtu,
                .orig_mtu = rt->uplink_orig_mtu,
                .had_ip = rt->uplink_had_ip,
        };
        int r = 0, k;
        /* The apply steps undone in reverse; the route goes back onto the
         * NIC with the gateway it had. */
        if (u.gateway) {
                k = step_undo(ctx, &u, STEP_ROUTE_ON_BRIDGE);
                if (k < 0 && k != -ESRCH && r >= 0)
                        r = k;
        }
        if (def->has_uplink_host_ip) {
                k = step_undo(ctx, &u, STEP_ADDR_ON_BRIDGE);
                if (k < 0 && k != -EADDRNOTAVAIL && r >= 0)
                        r = k;
        }
        k = step_undo(ctx, &u, STEP_PORT_TO_BRIDGE);
        if (k < 0 && r >= 0)
                r = k;
        if (u.had_ip && def->has_uplink_host_ip) {
                k = step_undo(ctx, &u, STEP_ADDR_OFF_PORT);
                if (k < 0 && k != -EEXIST && r >= 0)
                        r = k;
        }
        if (u.gateway) {
                u.route = default_route(u.gateway, 0);
                k = step_undo(ctx, &u, STEP_ROUTE_OFF_PORT);
                if (k < 0 && k != -EEXIST && r >= 0)
                        r = k;
        }
        rt->uplink_port[0] = '\0';
        return r;
}

int net_uplink(const struct vh_context *ctx, const char *name, const struct net_uplink_request *req, char ***ret_plan,
               struct vh_error *err) {
        _cleanup_net_lock_ int lock = net_lock_take(ctx, err);
        if (lock < 0)
                return lock;
        _cleanup_(net_def_freep) struct net_def *def = NULL;
        int r = net_load(ctx, name, &def, err);
        if (r < 0)
                return r;
        if (def->type == NET_TYPE_USER)
                return vh_error_set(err, -EINVAL, "network '%s' is user-mode: an uplink needs a bridge or ovs network", name);
        if (def->uplink_port)
                return vh_error_set(err, -EEXIST, "network '%s' has the uplink %s already ('vmhost net uplink %s --remove')",
                                    name, def->uplink_port, name);
        if (!net_ifname_is_valid(req->port))
                return vh_error_set(err, -EINVAL, "invalid interface name '%s'", req->port);
        def->uplink_port = strdup(req->port);
        if (!def->uplink_port)
                return -ENOMEM;
        def->has_uplink_host_ip = true;
        def->uplink_host_ip = req->host_ip;
        def->uplink_gateway = req->gateway;
        r = net_def_validate(def, err);
        if (r < 0)
                return r;

        _cleanup_(nl_closep) struct nl_conn *nl = NULL;
        r = nl_open(&nl);
        if (r < 0)
                return vh_error_set(err, r, "cannot open netlink: %s", strerror(-r));
        struct net_runtime rt;
        bool running = net_runtime_read(ctx, name, &rt) >= 0;
        if (!running) {
                if (req->dry_run) {
                        /* Plan against the bridge the network will have. */
                        rt = (struct net_runtime) { .mtu = net_def_mtu(def) };
                        (void) net_def_bridge_name(def, rt.bridge);
                } else {
                        /* Start without the uplink, then move it in with the
                         * plan and rollback of this call. */
                        char *port = TAKE_PTR(def->uplink_port);
                        def->has_uplink_host_ip = false;
                        def->uplink_gateway = 0;
                        r = net_start_locked(ctx, def, &rt, err);
                        def->uplink_port = port;
                        def->has_uplink_host_ip = true;
                        def->uplink_gateway = req->gateway;
                        if (r < 0)
                                return r;
                }
        }
        r = net_uplink_apply(ctx, nl, def, &rt, ret_plan, req->dry_run, err);
        if (r < 0 || req->dry_run)
                return r;
        /* The default route found on the NIC is part of the uplink now. */
        def->uplink_gateway = rt.uplink_gateway;
        r = net_runtime_write(ctx, name, &rt);
        if (r >= 0)
                r = net_save(ctx, def, err);
        if (r < 0) {
                (void) net_uplink_revert(ctx, nl, def, &rt);
                (void) net_runtime_write(ctx, name, &rt);
                return r;
        }
        return 0;
}

int net_uplink_remove(const struct vh_context *ctx, const char *name, char ***ret_plan, struct vh_error *err) {
        _cleanup_net_lock_ int lock = net_lock_take(ctx, err);
        if (lock < 0)
                return lock;
        _cleanup_(net_def_freep) struct net_def *def = NULL;
        int r = net_load(ctx, name, &def, err);
        if (r < 0)
                return r;
        if (!def->uplink_port)
                return vh_error_set(err, -ENOENT, "network '%s' has no uplink", name);
        struct strv plan = {};
        struct net_runtime rt;
        if (net_runtime_read(ctx, name, &rt) >= 0 && rt.uplink_port[0]) {
                _cleanup_(nl_closep) struct nl_conn *nl = NULL;
                r = nl_open(&nl);
                if (r < 0)
                        return vh_error_set(err, r, "cannot open netlink: %s", strerror(-r));
                char p[NET_PREFIX_STRLEN];
                strv_addf(&plan, "move %s out of %s and %s back onto it", rt.uplink_port, rt.bridge,
                          net_prefix_format(&def->uplink_host_ip, p));
                r = net_uplink_revert(ctx, nl, def, &rt);
                (void) net_runtime_write(ctx, name, &rt);
                strv_add(&plan, r < 0 ? "not everything could be restored" : "done");
        }
        free(def->uplink_port);
        def->uplink_port = NULL;
        def->has_uplink_host_ip = false;
        def->uplink_gateway = 0;
        int k = net_save(ctx, def, err);
        if (ret_plan && !plan.error)
                *ret_plan = plan.v;
        else
                strv_done(&plan);
        if (r < 0)
                return vh_error_set(err, r, "the uplink was only partly restored: %s", strerror(-r));
        return k;
}
