/* cli/cmd-net.c: 'vmhost net ...': define, start, stop and delete networks
 * (user-mode, Linux bridge, Open vSwitch), their tunnels and uplinks, and
 * attach NICs by hand (what 'vmhost vm start' does for its --net NICs). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json-writer.h"
#include "base/log.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "base/strv.h"
#include "cli/cli.h"
#include "net/net-json.h"
#include "net/net.h"

/* The options of 'net create', in both the group's usage and create's own. */
#define NET_CREATE_OPTIONS \
                "  --subnet CIDR        IPv4 subnet, e.g. 10.10.0.0/24 (user default: 10.0.2.0/24)\n" \
                "  --gateway IP         the host's address on it (default: the first host address)\n" \
                "  --dhcp [FIRST-LAST]  DHCP and DNS from dnsmasq (default range: upper half of the subnet)\n" \
                "  --nat                masquerade the subnet to the outside (nftables table ip vmhost)\n" \
                "  --uplink IF          with --nat: only out of this interface\n" \
                "  --mtu N              MTU of the bridge and the VM NICs (default 1500)\n" \
                "  --bridge IF          name of the bridge interface (default vb-NAME)\n" \
                "  --ovs-db REMOTE      ovs: the OVSDB to use (default $VMHOST_OVS_DB or OVS's own)\n" \
                "  --datapath auto|system|netdev   ovs: auto uses netdev when the kernel module is missing\n" \
                "  --domain DOMAIN      DNS domain of the VMs (default: the network's name)\n"

static void usage(FILE *f) {
        fprintf(f,
                "Usage: vmhost net COMMAND [ARGS...]\n"
                "\n"
                "Networks VMs attach to by name. Types: user (QEMU's own NAT inside each VM),\n"
                "bridge (a Linux bridge with taps, dnsmasq and masquerade), ovs (an Open vSwitch\n"
                "bridge with VLANs and tunnels). See docs/networks.md.\n"
                "\n"
                "Commands:\n"
                "  create NAME --type user|bridge|ovs [OPTIONS]   define a network\n"
                "  list [--json]                 all networks and whether they run\n"
                "  show NAME [--json]            definition, state, tunnels, attached NICs\n"
                "  start NAME                    bring it up (attaching a VM does this too)\n"
                "  stop NAME                     take it down (refused while VMs use it)\n"
                "  delete NAME                   stop it and remove it: no link, nft rule, dnsmasq\n"
                "                                or OVS port is left\n"
                "  tunnel add NAME --remote IP --type gre|vxlan [--key N]\n"
                "  tunnel remove NAME --remote IP\n"
                "                                join the same network on another host\n"
                "  uplink NAME --port IF --host-ip ADDR/PREFIX [--gateway IP] [--dry-run]\n"
                "  uplink NAME --remove          move a NIC into the switch, the host's address onto\n"
                "                                the bridge (plan first; rolled back on failure)\n"
                "  attach NAME VM [--index N] [--mac MAC] [--ip ADDR] [--vlan N] [--trunks LIST] [--json]\n"
                "  detach NAME VM [--index N]    a VM NIC's tap by hand (normally 'vmhost vm' does it)\n"
                "  ports NAME [--json]           the attached NICs\n"
                "  release VM                    detach all NICs of VM from every network (after a crash)\n"
                "\n"
                "Options of create:\n"
                NET_CREATE_OPTIONS
                "\n"
                "Examples:\n"
                "  vmhost net create lan --type bridge --subnet 10.10.0.0/24 --dhcp --nat\n"
                "  vmhost net create sw --type ovs --subnet 10.20.0.0/24 --dhcp\n"
                "  vmhost net tunnel add sw --remote 172.16.0.2 --type vxlan --key 42\n"
                "  vmhost net uplink phy --port eth1 --host-ip 192.168.1.10/24 --dry-run\n");
}

/* 'vmhost net COMMAND --help': that command's usage, options and example;
 * the group's usage above lists all commands. */
static const struct {
        const char *name;
        const char *text;
} command_helps[] = {
        { "create",
          "Usage: vmhost net create NAME --type user|bridge|ovs [OPTIONS]\n"
          "\n"
          "Defines network NAME (it starts when a VM attaches, or with 'net start').\n"
          "\n"
          "Options:\n"
          "  --type TYPE          user (QEMU's NAT inside each VM), bridge or ovs\n"
          NET_CREATE_OPTIONS
          "\n"
          "Examples:\n"
          "  vmhost net create lan --type bridge --subnet 10.10.0.0/24 --dhcp --nat\n"
          "  vmhost net create sw --type ovs --subnet 10.20.0.0/24 --dhcp\n" },
        { "list",
          "Usage: vmhost net list [--json]\n"
          "\n"
          "All networks, their type, subnet and whether they run.\n"
          "\n"
          "  --json   the same as a JSON array\n"
          "\n"
          "Example:\n"
          "  vmhost net list --json\n" },
        { "show",
          "Usage: vmhost net show NAME [--json]\n"
          "\n"
          "The definition and state of network NAME, its tunnels and attached NICs.\n"
          "\n"
          "  --json   the same as one JSON object\n"
          "\n"
          "Example:\n"
          "  vmhost net show lan\n" },
        { "ports",
          "Usage: vmhost net ports NAME [--json]\n"
          "\n"
          "The VM NICs attached to network NAME: VM, NIC index, tap, MAC, IP, VLAN.\n"
          "\n"
          "  --json   the same as a JSON array\n"
          "\n"
          "Example:\n"
          "  vmhost net ports lan\n" },
        { "start",
          "Usage: vmhost net start NAME\n"
          "\n"
          "Brings network NAME up: its bridge, dnsmasq, NAT rules and tunnels (attaching\n"
          "a VM does this too).\n"
          "\n"
          "Example:\n"
          "  vmhost net start lan\n" },
        { "stop",
          "Usage: vmhost net stop NAME\n"
          "\n"
          "Takes network NAME down; refused while VMs use it.\n"
          "\n"
          "Example:\n"
          "  vmhost net stop lan\n" },
        { "delete",
          "Usage: vmhost net delete NAME\n"
          "\n"
          "Stops network NAME and removes it: no link, nft rule, dnsmasq or OVS port is\n"
          "left. Refused while VMs use it.\n"
          "\n"
          "Example:\n"
          "  vmhost net delete lan\n" },
        { "tunnel",
          "Usage: vmhost net tunnel add NAME --remote IP --type gre|vxlan [--key N]\n"
          "       vmhost net tunnel remove NAME --remote IP\n"
          "\n"
          "Joins network NAME with the same network on another host.\n"
          "\n"
          "  --remote IP          the other host's address\n"
          "  --type gre|vxlan     tunnel type\n"
          "  --key N              GRE key or VXLAN network id\n"
          "\n"
          "Example:\n"
          "  vmhost net tunnel add sw --remote 172.16.0.2 --type vxlan --key 42\n" },
        { "uplink",
          "Usage: vmhost net uplink NAME --port IF --host-ip ADDR/PREFIX [--gateway IP] [--dry-run]\n"
          "       vmhost net uplink NAME --remove\n"
          "\n"
          "Moves host NIC IF into the switch of network NAME and the host's address onto\n"
          "the bridge; every step is rolled back if one fails.\n"
          "\n"
          "  --port IF            the host NIC to move\n"
          "  --host-ip ADDR/PREFIX  the host's address, moved onto the bridge\n"
          "  --gateway IP         the host's default gateway (its route moves to the bridge)\n"
          "  --dry-run            print the plan, change nothing\n"
          "  --remove             undo: the NIC and its address go back\n"
          "\n"
          "Example:\n"
          "  vmhost net uplink phy --port eth1 --host-ip 192.168.1.10/24 --dry-run\n" },
        { "attach",
          "Usage: vmhost net attach NAME VM [--index N] [--mac MAC] [--ip ADDR] [--vlan N] [--trunks LIST] [--json]\n"
          "\n"
          "Makes the tap of NIC N of VM on network NAME by hand (normally 'vmhost vm\n"
          "start' does it).\n"
          "\n"
          "  --index N            the NIC's index (default 0)\n"
          "  --mac MAC            its MAC\n"
          "  --ip ADDR            an address reserved for it in dnsmasq\n"
          "  --vlan N             ovs: access VLAN tag\n"
          "  --trunks LIST        ovs: trunk VLANs, e.g. 10,20\n"
          "  --json               print the port as JSON\n"
          "\n"
          "Example:\n"
          "  vmhost net attach lan web --index 0 --mac 02:00:00:00:00:01\n" },
        { "detach",
          "Usage: vmhost net detach NAME VM [--index N]\n"
          "\n"
          "Removes the tap of NIC N of VM from network NAME by hand.\n"
          "\n"
          "  --index N            the NIC's index (default 0)\n"
          "\n"
          "Example:\n"
          "  vmhost net detach lan web --index 0\n" },
        { "release",
          "Usage: vmhost net release VM\n"
          "\n"
          "Detaches every NIC of VM from every network (after a crash).\n"
          "\n"
          "Example:\n"
          "  vmhost net release web\n" },
};

static void command_usage(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(command_helps); i++)
                if (streq(command_helps[i].name, name)) {
                        fputs(command_helps[i].text, stdout);
                        return;
                }
        usage(stdout);
}

/* A tiny option reader: "--opt value" and "--opt=value"; positional
 * arguments are collected in order. */
struct args {
        int argc;
        char **argv;
        int i;
        const char *opt;   /* current option name (without value) */
        const char *value; /* inline "=value", if any */
};

static bool args_next_option(struct args *a, char *buf, size_t len) {
        const char *s = a->argv[a->i];
        const char *eq = strchr(s, '=');
        if (eq) {
                snprintf(buf, len, "%.*s", (int) (eq - s), s);
                a->value = eq + 1;
        } else {
                snprintf(buf, len, "%s", s);
                a->value = NULL;
        }
        a->opt = buf;
        return true;
}

/* The value of the current option: inline or the next argument. */
static const char *args_value(struct args *a) {
        if (a->value)
                return a->value;
        if (a->i + 1 >= a->argc) {
                log_error("Option %s needs a value.", a->opt);
                return NULL;
        }
        return a->argv[++a->i];
}

static int print_json(struct json_writer *w) {
        int r;
        _cleanup_free_ char *s = json_writer_finish(w, &r);
        if (!s)
                return log_error_errno(r, "Cannot format JSON: %m"), 1;
        fputs(s, stdout);
        if (s[0] && s[strlen(s) - 1] != '\n')
                fputc('\n', stdout);
        return 0;
}

static int fail(int r, const struct vh_error *err, const char *what) {
        log_error_errno(r, "%s: %s", what, vh_error_message(err, r));
        return 1;
}

/* ------------------------------------------------------------------ create */

static int net_create_cmd(const struct vh_context *ctx, int argc, char **argv) {
        const char *name = NULL;
        _cleanup_(net_def_freep) struct net_def *def = NULL;
        bool have_type = false;
        struct vh_error err = {};
        struct { const char *key, *value; } sets[32];
        size_t nsets = 0;
        bool dhcp = false;
        const char *dhcp_range = NULL;

        struct args a = { argc, argv, 2, NULL, NULL };
        char opt[64];
        for (; a.i < argc; a.i++) {
                if (!startswith(argv[a.i], "--")) {
                        if (name) {
                                log_error("Unexpected argument '%s'.", argv[a.i]);
                                return 2;
                        }
                        name = argv[a.i];
                        continue;
                }
                args_next_option(&a, opt, sizeof(opt));
                static const struct { const char *opt, *key; } map[] = {
                        { "--type", "type" },         { "--subnet", "subnet" },   { "--gateway", "gateway" },
                        { "--uplink", "nat-interface" }, { "--mtu", "mtu" },     { "--bridge", "bridge" },
                        { "--ovs-db", "ovs-db" },     { "--datapath", "datapath" }, { "--domain", "domain" },
                };
                const char *key = NULL;
                for (size_t k = 0; k < ELEMENTSOF(map); k++)
                        if (streq(opt, map[k].opt))
                                key = map[k].key;
                if (key) {
                        const char *v = args_value(&a);
                        if (!v)
                                return 2;
                        if (nsets >= ELEMENTSOF(sets)) {
                                log_error("Too many options.");
                                return 2;
                        }
                        sets[nsets].key = key;
                        sets[nsets++].value = v;
                        if (streq(key, "type"))
                                have_type = true;
                } else if (streq(opt, "--dhcp")) {
                        dhcp = true;
                        /* The range is optional: take the next word only if it
                         * looks like one (A.B.C.D-A.B.C.D). */
                        uint32_t f, l;
                        if (a.value)
                                dhcp_range = a.value;
                        else if (a.i + 1 < argc && net_range_parse(argv[a.i + 1], &f, &l) == 0)
                                dhcp_range = argv[++a.i];
                } else if (streq(opt, "--nat")) {
                        if (nsets >= ELEMENTSOF(sets))
                                return 2;
                        sets[nsets].key = "nat";
                        sets[nsets++].value = "yes";
                } else {
                        log_error("Unknown option '%s'. See 'vmhost net --help'.", opt);
                        return 2;
                }
        }
        if (!name) {
                log_error("net create: missing NAME. See 'vmhost net --help'.");
                return 2;
        }
        if (!name_is_valid(name)) {
                log_error("Invalid network name '%s': use 1..%d characters of [a-zA-Z0-9_-].", name, VH_NAME_MAX);
                return 2;
        }
        if (!have_type) {
                log_error("net create: --type user|bridge|ovs is required.");
                return 2;
        }
        def = net_def_new(name);
        if (!def)
                return log_error_errno(-ENOMEM, "Out of memory"), 1;
        for (size_t k = 0; k < nsets; k++) {
                int r = net_def_set(def, sets[k].key, sets[k].value, &err);
                if (r < 0)
                        return fail(r, &err, "Invalid network definition"), 2;
        }
        if (dhcp) {
                int r = net_def_set(def, "dhcp", dhcp_range ? dhcp_range : "yes", &err);
                if (r < 0)
                        return fail(r, &err, "Invalid network definition"), 2;
        }
        int r = net_create(ctx, def, &err);
        if (r < 0)
                return fail(r, &err, "Cannot create network");
        char s[NET_PREFIX_STRLEN] = "-";
        if (def->has_subnet)
                net_prefix_format(&def->subnet, s);
        printf("created network %s (type %s, subnet %s)\n", name, net_type_to_string(def->type), s);
        return 0;
}

/* ------------------------------------------------------------------ show / list */

static int net_show_cmd(const struct vh_context *ctx, const char *name, bool json) {
        struct vh_error err = {};
        _cleanup_(net_def_freep) struct net_def *def = NULL;
        int r = net_load(ctx, name, &def, &err);
        if (r < 0)
                return fail(r, &err, "Cannot load network");
        struct net_status st;
        r = net_get_status(ctx, name, &st, &err);
        if (r < 0)
                return fail(r, &err, "Cannot read the state of the network");
        _cleanup_free_ struct net_port *ports = NULL;
        int np = net_list_ports(ctx, name, &ports, &err);
        if (np < 0)
                return fail(np, &err, "Cannot read the ports");
        if (json) {
                struct json_writer w;
                json_writer_init(&w, true);
                net_show_to_json(&w, def, &st, ports, (size_t) np);
                return print_json(&w);
        }
        char a[NET_IPV4_STRLEN], p[NET_PREFIX_STRLEN];
        printf("name:      %s\n", def->name);
        printf("type:      %s\n", net_type_to_string(def->type));
        printf("state:     %s\n", net_state_to_string(def, &st));
        if (def->has_subnet)
                printf("subnet:    %s\n", net_prefix_format(&def->subnet, p));
        if (def->gateway)
                printf("gateway:   %s\n", net_ipv4_format(def->gateway, a));
        if (def->type != NET_TYPE_USER) {
                if (def->dhcp) {
                        char last[NET_IPV4_STRLEN];
                        printf("dhcp:      %s-%s%s\n", net_ipv4_format(def->dhcp_first, a),
                               net_ipv4_format(def->dhcp_last, last), st.dnsmasq_pid > 0 ? " (dnsmasq running)" : "");
                } else
                        printf("dhcp:      no\n");
                printf("nat:       %s%s%s\n", def->nat ? "yes" : "no", def->nat_interface ? " via " : "",
                       def->nat_interface ? def->nat_interface : "");
                printf("bridge:    %s\n", st.bridge);
                printf("mtu:       %u%s%s%s\n", st.mtu, st.mtu_why[0] ? " (" : "", st.mtu_why, st.mtu_why[0] ? ")" : "");
        }
        if (def->type == NET_TYPE_OVS) {
                if (st.running)
                        printf("datapath:  %s (%s)\n", net_datapath_to_string(st.datapath), st.datapath_why);
                else {
                        const char *why = NULL;
                        enum net_datapath eff = net_datapath_choose(def->datapath, &why);
                        if (def->datapath == NET_DATAPATH_AUTO)
                                printf("datapath:  auto (%s here: %s)\n", net_datapath_to_string(eff), why);
                        else
                                printf("datapath:  %s (%s)\n", net_datapath_to_string(eff), why);
                }
        }
        for (unsigned i = 0; i < def->n_tunnels; i++) {
                char ifname[NET_IFNAME_MAX + 1] = "";
                (void) net_tunnel_ifname(def, &def->tunnels[i], ifname);
                printf("tunnel:    %s to %s", net_tunnel_type_to_string(def->tunnels[i].type),
                       net_ipv4_format(def->tunnels[i].remote, a));
                if (def->tunnels[i].has_key)
                        printf(" key %" PRIu32, def->tunnels[i].key);
                printf(" (%s)\n", ifname);
        }
        if (def->uplink_port)
                printf("uplink:    %s, host address %s\n", def->uplink_port, net_prefix_format(&def->uplink_host_ip, p));
        for (int i = 0; i < np; i++) {
                printf("port:      %s NIC %u: %s", ports[i].vm, ports[i].index, ports[i].tap);
                if (ports[i].mac[0])
                        printf(" mac %s", ports[i].mac);
                if (ports[i].ip[0])
                        printf(" ip %s", ports[i].ip);
                if (ports[i].vlan >= 0)
                        printf(" vlan %d", ports[i].vlan);
                if (ports[i].trunks[0])
                        printf(" trunks %s", ports[i].trunks);
                printf("\n");
        }
        return 0;
}

static int net_list_cmd(const struct vh_context *ctx, bool json) {
        struct vh_error err = {};
        char **names = NULL;
        int n = net_list_names(ctx, &names, &err);
        if (n < 0)
                return fail(n, &err, "Cannot list networks");
        struct json_writer w;
        json_writer_init(&w, true);
        if (json)
                json_array_begin(&w);
        else
                printf("%-16s %-7s %-10s %-18s %-15s %s\n", "NAME", "TYPE", "STATE", "SUBNET", "BRIDGE", "VMS");
        int rc = 0;
        for (int i = 0; i < n; i++) {
                struct net_def *def = NULL;
                struct net_status st;
                if (net_load(ctx, names[i], &def, &err) < 0 || net_get_status(ctx, names[i], &st, &err) < 0) {
                        log_error("%s", err.msg);
                        net_def_free(def);
                        rc = 1;
                        continue;
                }
                char **vms = NULL;
                int nv = net_in_use_by(ctx, names[i], &vms, &err);
                if (json) {
                        net_list_entry_to_json(&w, def, &st, vms, nv > 0 ? (size_t) nv : 0);
                } else {
                        char p[NET_PREFIX_STRLEN] = "-";
                        if (def->has_subnet)
                                net_prefix_format(&def->subnet, p);
                        _cleanup_free_ char *list = nv > 0 ? strv_join(vms, ",") : NULL;
                        printf("%-16s %-7s %-10s %-18s %-15s %s\n", def->name, net_type_to_string(def->type),
                               net_state_to_string(def, &st), p, def->type == NET_TYPE_USER ? "-" : st.bridge,
                               list ? list : "-");
                }
                net_strv_free(vms);
                net_def_free(def);
        }
        net_strv_free(names);
        if (json) {
                json_array_end(&w);
                if (print_json(&w))
                        return 1;
        } else
                json_writer_free(&w);
        return rc;
}

/* ------------------------------------------------------------------ start / stop / delete */

static int net_start_cmd(const struct vh_context *ctx, const char *name) {
        struct vh_error err = {};
        _cleanup_(net_def_freep) struct net_def *def = NULL;
        int r = net_load(ctx, name, &def, &err);
        if (r < 0)
                return fail(r, &err, "Cannot load network");
        if (def->type == NET_TYPE_USER) {
                printf("network %s is user-mode: nothing to start on the host (QEMU runs it per VM)\n", name);
                return 0;
        }
        struct net_status st;
        r = net_start(ctx, name, &st, &err);
        if (r < 0)
                return fail(r, &err, "Cannot start network");
        printf("network %s running: bridge %s, MTU %u\n", name, st.bridge, st.mtu);
        if (def->type == NET_TYPE_OVS)
                printf("datapath %s: %s\n", net_datapath_to_string(st.datapath), st.datapath_why);
        if (st.mtu_why[0])
                printf("MTU %s\n", st.mtu_why);
        return 0;
}

static int net_simple_cmd(const struct vh_context *ctx, const char *verb, const char *name) {
        struct vh_error err = {};
        int r;
        if (streq(verb, "stop"))
                r = net_stop(ctx, name, &err);
        else
                r = net_delete(ctx, name, &err);
        if (r < 0) {
                char what[64];
                snprintf(what, sizeof(what), "Cannot %s network %s", verb, name);
                return fail(r, &err, what);
        }
        printf("network %s %s\n", name, streq(verb, "stop") ? "stopped" : "deleted");
        return 0;
}

/* ------------------------------------------------------------------ tunnel */

static int net_tunnel_cmd(const struct vh_context *ctx, int argc, char **argv) {
        if (argc < 4) {
                log_error("Usage: vmhost net tunnel add|remove NAME --remote IP [--type gre|vxlan] [--key N]");
                return 2;
        }
        const char *sub = argv[2], *name = argv[3], *remote = NULL, *type = NULL, *key = NULL;
        struct args a = { argc, argv, 4, NULL, NULL };
        char opt[64];
        for (; a.i < argc; a.i++) {
                args_next_option(&a, opt, sizeof(opt));
                const char **dst = streq(opt, "--remote") ? &remote : streq(opt, "--type") ? &type :
                                   streq(opt, "--key") ? &key : NULL;
                if (!dst) {
                        log_error("Unknown argument '%s'. See 'vmhost net --help'.", argv[a.i]);
                        return 2;
                }
                if (!(*dst = args_value(&a)))
                        return 2;
        }
        if (!remote) {
                log_error("net tunnel: --remote IP is required.");
                return 2;
        }
        struct vh_error err = {};
        if (streq(sub, "add")) {
                if (!type) {
                        log_error("net tunnel add: --type gre|vxlan is required.");
                        return 2;
                }
                _cleanup_free_ char *spec = key ? strdup_printf("%s:%s:%s", type, remote, key)
                                                : strdup_printf("%s:%s", type, remote);
                struct net_tunnel t;
                if (!spec)
                        return 1;
                int r = net_tunnel_parse(spec, &t, &err);
                if (r < 0)
                        return fail(r, &err, "Invalid tunnel"), 2;
                r = net_tunnel_add(ctx, name, &t, &err);
                if (r < 0)
                        return fail(r, &err, "Cannot add the tunnel");
                struct net_status st;
                if (net_get_status(ctx, name, &st, &err) >= 0 && st.running) {
                        printf("tunnel %s to %s added to running network %s (MTU %u)\n", type, remote, name, st.mtu);
                        if (st.mtu_why[0])
                                printf("MTU %s\n", st.mtu_why);
                } else
                        printf("tunnel %s to %s added to network %s (made when it starts)\n", type, remote, name);
                return 0;
        }
        if (streq(sub, "remove") || streq(sub, "del")) {
                uint32_t ip;
                if (net_ipv4_parse(remote, &ip) < 0) {
                        log_error("Invalid IPv4 address '%s'.", remote);
                        return 2;
                }
                int r = net_tunnel_remove(ctx, name, ip, &err);
                if (r < 0)
                        return fail(r, &err, "Cannot remove the tunnel");
                printf("tunnel to %s removed from network %s\n", remote, name);
                return 0;
        }
        log_error("Unknown command 'net tunnel %s': use add or remove.", sub);
        return 2;
}

/* ------------------------------------------------------------------ uplink */

static void print_plan(char **plan) {
        for (char **p = plan; p && *p; p++)
                printf("%s\n", *p);
}

static int net_uplink_cmd(const struct vh_context *ctx, int argc, char **argv) {
        if (argc < 3) {
                log_error("Usage: vmhost net uplink NAME --port IF --host-ip ADDR/PREFIX [--gateway IP] [--dry-run]");
                return 2;
        }
        const char *name = argv[2], *port = NULL, *host_ip = NULL, *gateway = NULL;
        bool dry_run = false, remove = false;
        struct args a = { argc, argv, 3, NULL, NULL };
        char opt[64];
        for (; a.i < argc; a.i++) {
                args_next_option(&a, opt, sizeof(opt));
                if (streq(opt, "--dry-run")) {
                        dry_run = true;
                        continue;
                }
                if (streq(opt, "--remove")) {
                        remove = true;
                        continue;
                }
                const char **dst = streq(opt, "--port") ? &port : streq(opt, "--host-ip") ? &host_ip :
                                   streq(opt, "--gateway") ? &gateway : NULL;
                if (!dst) {
                        log_error("Unknown argument '%s'. See 'vmhost net --help'.", argv[a.i]);
                        return 2;
                }
                if (!(*dst = args_value(&a)))
                        return 2;
        }
        struct vh_error err = {};
        char **plan = NULL;
        if (remove) {
                int r = net_uplink_remove(ctx, name, &plan, &err);
                print_plan(plan);
                net_strv_free(plan);
                if (r < 0)
                        return fail(r, &err, "Cannot remove the uplink");
                return 0;
        }
        if (!port || !host_ip) {
                log_error("net uplink: --port IF and --host-ip ADDR/PREFIX are required.");
                return 2;
        }
        struct net_uplink_request req = { .port = port, .dry_run = dry_run };
        if (net_prefix_parse(host_ip, true, &req.host_ip) < 0 || req.host_ip.len == 0) {
                log_error("Invalid --host-ip '%s': use ADDRESS/PREFIX like 192.168.1.10/24.", host_ip);
                return 2;
        }
        if (gateway && net_ipv4_parse(gateway, &req.gateway) < 0) {
                log_error("Invalid --gateway '%s'.", gateway);
                return 2;
        }
        int r = net_uplink(ctx, name, &req, &plan, &err);
        print_plan(plan);
        net_strv_free(plan);
        if (r < 0)
                return fail(r, &err, "Uplink failed");
        return 0;
}

/* ------------------------------------------------------------------ attach / detach / ports */

static int net_attach_cmd(const struct vh_context *ctx, int argc, char **argv, bool attach) {
        if (argc < 4) {
                log_error("Usage: vmhost net %s NAME VM [--index N] ...", attach ? "attach" : "detach");
                return 2;
        }
        const char *name = argv[2];
        struct net_nic_request req = { .vm_name = argv[3], .vlan = -1 };
        bool json = false;
        struct args a = { argc, argv, 4, NULL, NULL };
        char opt[64];
        for (; a.i < argc; a.i++) {
                args_next_option(&a, opt, sizeof(opt));
                if (streq(opt, "--json")) {
                        json = true;
                        continue;
                }
                const char *v;
                long l;
                if (streq(opt, "--index")) {
                        if (!(v = args_value(&a)) || parse_int_range(v, 0, 99, &l) < 0) {
                                log_error("--index takes 0..99.");
                                return 2;
                        }
                        req.index = (unsigned) l;
                } else if (attach && streq(opt, "--vlan")) {
                        if (!(v = args_value(&a)) || parse_int_range(v, 0, 4095, &l) < 0) {
                                log_error("--vlan takes 0..4095.");
                                return 2;
                        }
                        req.vlan = (int) l;
                } else if (attach && streq(opt, "--mac")) {
                        if (!(req.mac = args_value(&a)))
                                return 2;
                } else if (attach && streq(opt, "--ip")) {
                        if (!(req.ip = args_value(&a)))
                                return 2;
                } else if (attach && streq(opt, "--trunks")) {
                        if (!(req.trunks = args_value(&a)))
                                return 2;
                } else {
                        log_error("Unknown argument '%s'. See 'vmhost net --help'.", argv[a.i]);
                        return 2;
                }
        }
        struct vh_error err = {};
        if (!attach) {
                int r = net_nic_detach(ctx, name, req.vm_name, req.index, &err);
                if (r < 0)
                        return fail(r, &err, "Cannot detach");
                printf("detached %s NIC %u from %s\n", req.vm_name, req.index, name);
                return 0;
        }
        struct net_nic_attachment att;
        int r = net_nic_attach(ctx, name, &req, &att, &err);
        if (r < 0)
                return fail(r, &err, "Cannot attach");
        if (att.warning[0])
                log_warning("%s.", att.warning);
        if (json) {
                struct json_writer w;
                json_writer_init(&w, true);
                net_attachment_to_json(&w, name, &att);
                return print_json(&w);
        }
        if (att.type == NET_TYPE_USER)
                printf("user-mode network: -netdev user,net=%s\n", att.user_subnet);
        else
                printf("tap %s (MTU %u)%s\n", att.tap, att.mtu,
                       att.disable_offload ? ": add csum=off,guest_csum=off to virtio-net-pci" : "");
        return 0;
}

static int net_ports_cmd(const struct vh_context *ctx, const char *name, bool json) {
        struct vh_error err = {};
        if (!net_exists(ctx, name)) {
                log_error("No network '%s' (see 'vmhost net list').", name);
                return 1;
        }
        _cleanup_free_ struct net_port *ports = NULL;
        int n = net_list_ports(ctx, name, &ports, &err);
        if (n < 0)
                return fail(n, &err, "Cannot read the ports");
        if (json) {
                struct json_writer w;
                json_writer_init(&w, true);
                net_ports_to_json(&w, ports, (size_t) n);
                return print_json(&w);
        }
        printf("%-20s %-5s %-15s %-17s %-15s %s\n", "VM", "NIC", "TAP", "MAC", "IP", "VLAN");
        for (int i = 0; i < n; i++) {
                char vlan[16] = "-";
                if (ports[i].vlan >= 0)
                        snprintf(vlan, sizeof(vlan), "%d", ports[i].vlan);
                printf("%-20s %-5u %-15s %-17s %-15s %s\n", ports[i].vm, ports[i].index, ports[i].tap,
                       ports[i].mac[0] ? ports[i].mac : "-", ports[i].ip[0] ? ports[i].ip : "-", vlan);
        }
        return 0;
}

int cmd_net(const struct vh_context *ctx, int argc, char **argv) {
        static const char *const commands[] = { "list",   "show",   "ports",   "create", "start",  "stop",
                                                "delete", "tunnel", "uplink",  "release", "attach", "detach" };
        int r = cli_group_start(argc, argv, "net", commands, ELEMENTSOF(commands), usage, command_usage);
        if (r >= 0)
                return r;
        const char *cmd = argv[1];
        bool json = false;
        if (streq(cmd, "list") || streq(cmd, "show") || streq(cmd, "ports")) {
                const char *name = NULL;
                for (int i = 2; i < argc; i++) {
                        if (streq(argv[i], "--json"))
                                json = true;
                        else if (!name && argv[i][0] != '-')
                                name = argv[i];
                        else {
                                log_error("Unexpected argument '%s'.", argv[i]);
                                return 2;
                        }
                }
                if (streq(cmd, "list"))
                        return name ? (log_error("net list takes no NAME."), 2) : net_list_cmd(ctx, json);
                if (!name) {
                        log_error("net %s: missing NAME.", cmd);
                        return 2;
                }
                return streq(cmd, "show") ? net_show_cmd(ctx, name, json) : net_ports_cmd(ctx, name, json);
        }
        if (streq(cmd, "create"))
                return net_create_cmd(ctx, argc, argv);
        if (streq(cmd, "start") || streq(cmd, "stop") || streq(cmd, "delete")) {
                if (argc != 3) {
                        log_error("Usage: vmhost net %s NAME", cmd);
                        return 2;
                }
                return streq(cmd, "start") ? net_start_cmd(ctx, argv[2]) : net_simple_cmd(ctx, cmd, argv[2]);
        }
        if (streq(cmd, "tunnel"))
                return net_tunnel_cmd(ctx, argc, argv);
        if (streq(cmd, "uplink"))
                return net_uplink_cmd(ctx, argc, argv);
        if (streq(cmd, "release")) {
                if (argc != 3) {
                        log_error("Usage: vmhost net release VM");
                        return 2;
                }
                struct vh_error err = {};
                r = net_nic_detach_all(ctx, argv[2], &err);
                if (r < 0)
                        return fail(r, &err, "Cannot release the NICs");
                printf("released %d NIC%s of %s\n", r, r == 1 ? "" : "s", argv[2]);
                return 0;
        }
        if (streq(cmd, "attach") || streq(cmd, "detach"))
                return net_attach_cmd(ctx, argc, argv, streq(cmd, "attach"));
        log_error("Unknown command 'net %s'. See 'vmhost net --help'.", cmd);
        return 2;
}
