/* net/net-json.c: the network documents (see net-json.h, docs/json.md). */
#include "net/net-json.h"

const char *net_state_to_string(const struct net_def *def, const struct net_status *st) {
        if (def->type == NET_TYPE_USER)
                return "available";
        if (st->degraded)
                return "degraded";
        return st->running ? "running" : "stopped";
}

/* The fields 'net show' and 'net list' share, into an open object. */
static void def_fields(struct json_writer *w, const struct net_def *def, const struct net_status *st) {
        char a[NET_IPV4_STRLEN], p[NET_PREFIX_STRLEN];
        json_kv_uint(w, "version", NET_JSON_VERSION);
        json_kv_string(w, "name", def->name);
        json_kv_string(w, "type", net_type_to_string(def->type));
        json_kv_string(w, "state", net_state_to_string(def, st));
        json_kv_string(w, "subnet", def->has_subnet ? net_prefix_format(&def->subnet, p) : NULL);
        json_kv_string(w, "gateway", def->gateway ? net_ipv4_format(def->gateway, a) : NULL);
        json_key(w, "dhcp");
        if (def->dhcp && def->dhcp_first) {
                json_object_begin(w);
                json_kv_string(w, "first", net_ipv4_format(def->dhcp_first, a));
                json_kv_string(w, "last", net_ipv4_format(def->dhcp_last, a));
                json_object_end(w);
        } else
                json_bool(w, def->dhcp);
        json_kv_bool(w, "nat", def->nat);
        json_kv_string(w, "nat_interface", def->nat_interface);
        json_kv_uint(w, "mtu", net_def_mtu(def));
        json_kv_uint(w, "effective_mtu", st->mtu ? st->mtu : net_def_mtu(def));
        if (st->running && st->mtu_why[0])
                json_kv_string(w, "mtu_note", st->mtu_why);
        json_kv_string(w, "bridge", def->type == NET_TYPE_USER ? NULL : st->bridge);
        if (def->type == NET_TYPE_OVS) {
                /* "datapath" is the definition's while stopped (auto, say);
                 * "datapath_effective" is what runs, or what start would choose. */
                const char *why = st->datapath_why;
                enum net_datapath eff = st->running ? st->datapath : net_datapath_choose(def->datapath, &why);
                json_kv_string(w, "datapath", st->running ? net_datapath_to_string(st->datapath)
                                                          : net_datapath_to_string(def->datapath));
                json_kv_string(w, "datapath_effective", net_datapath_to_string(eff));
                json_kv_string(w, "datapath_note", why);
                json_kv_bool(w, "disable_offload", st->running && st->datapath == NET_DATAPATH_NETDEV);
        }
        json_kv_string(w, "domain", net_def_domain(def));
        if (st->running)
                json_kv_int(w, "dnsmasq_pid", st->dnsmasq_pid);
        json_key(w, "tunnels");
        json_array_begin(w);
        for (unsigned i = 0; i < def->n_tunnels; i++) {
                const struct net_tunnel *t = &def->tunnels[i];
                char ifname[NET_IFNAME_MAX + 1] = "";
                (void) net_tunnel_ifname(def, t, ifname);
                json_object_begin(w);
                json_kv_string(w, "type", net_tunnel_type_to_string(t->type));
                json_kv_string(w, "remote", net_ipv4_format(t->remote, a));
                if (t->has_key)
                        json_kv_uint(w, "key", t->key);
                json_kv_string(w, "interface", ifname);
                json_object_end(w);
        }
        json_array_end(w);
        json_key(w, "uplink");
        if (def->uplink_port) {
                json_object_begin(w);
                json_kv_string(w, "port", def->uplink_port);
                json_kv_string(w, "host_ip", net_prefix_format(&def->uplink_host_ip, p));
                json_kv_string(w, "gateway", def->uplink_gateway ? net_ipv4_format(def->uplink_gateway, a) : NULL);
                json_object_end(w);
        } else
                json_null(w);
}

void net_ports_to_json(struct json_writer *w, const struct net_port *ports, size_t n_ports) {
        json_array_begin(w);
        for (size_t i = 0; i < n_ports; i++) {
                json_object_begin(w);
                json_kv_string(w, "vm", ports[i].vm);
                json_kv_uint(w, "index", ports[i].index);
                json_kv_string(w, "tap", ports[i].tap);
                json_kv_string(w, "mac", ports[i].mac[0] ? ports[i].mac : NULL);
                json_kv_string(w, "ip", ports[i].ip[0] ? ports[i].ip : NULL);
                json_key(w, "vlan");
                if (ports[i].vlan >= 0)
                        json_int(w, ports[i].vlan);
                else
                        json_null(w);
                json_kv_string(w, "trunks", ports[i].trunks[0] ? ports[i].trunks : NULL);
                json_object_end(w);
        }
        json_array_end(w);
}

void net_show_to_json(struct json_writer *w, const struct net_def *def, const struct net_status *st,
                      const struct net_port *ports, size_t n_ports) {
        json_object_begin(w);
        def_fields(w, def, st);
        json_key(w, "ports");
        net_ports_to_json(w, ports, n_ports);
        json_object_end(w);
}

void net_list_entry_to_json(struct json_writer *w, const struct net_def *def, const struct net_status *st,
                            char *const *vms, size_t n_vms) {
        json_object_begin(w);
        def_fields(w, def, st);
        json_key(w, "vms");
        json_array_begin(w);
        for (size_t k = 0; k < n_vms; k++)
                json_string(w, vms[k]);
        json_array_end(w);
        json_object_end(w);
}

void net_attachment_to_json(struct json_writer *w, const char *net_name, const struct net_nic_attachment *att) {
        json_object_begin(w);
        json_kv_uint(w, "version", NET_JSON_VERSION);
        json_kv_string(w, "network", net_name);
        json_kv_string(w, "type", net_type_to_string(att->type));
        json_kv_string(w, "tap", att->tap[0] ? att->tap : NULL);
        json_kv_bool(w, "disable_offload", att->disable_offload);
        json_kv_uint(w, "mtu", att->mtu);
        json_kv_string(w, "netns", att->netns[0] ? att->netns : NULL);
        json_kv_string(w, "user_subnet", att->user_subnet[0] ? att->user_subnet : NULL);
        json_kv_string(w, "warning", att->warning[0] ? att->warning : NULL);
        json_object_end(w);
}
