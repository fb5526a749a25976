/* net/net-def.c: network definitions: parse, complete, validate, format. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/defs.h"
#include "base/keyfile.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "net/net-def.h"

struct net_def *net_def_new(const char *name) {
        struct net_def *def = calloc(1, sizeof(*def));
        if (!def)
                return NULL;
        def->name = strdup(name);
        if (!def->name)
                return net_def_free(def);
        def->type = NET_TYPE_BRIDGE;
        return def;
}

static const char *const type_names[] = {
        [NET_TYPE_USER] = "user",
        [NET_TYPE_BRIDGE] = "bridge",
        [NET_TYPE_OVS] = "ovs",
};
static const char *const datapath_names[] = {
        [NET_DATAPATH_AUTO] = "auto",
        [NET_DATAPATH_SYSTEM] = "system",
        [NET_DATAPATH_NETDEV] = "netdev",
};
static const char *const tunnel_names[] = {
        [NET_TUNNEL_GRE] = "gre",
        [NET_TUNNEL_VXLAN] = "vxlan",
};

const char *net_type_to_string(enum net_type t) {
        return (size_t) t < ELEMENTSOF(type_names) ? type_names[t] : NULL;
}

int net_type_from_string(const char *s, enum net_type *ret) {
        int i = keyfile_parse_choice(s, type_names, ELEMENTSOF(type_names));
        if (i < 0)
                return i;
        *ret = (enum net_type) i;
        return 0;
}

const char *net_datapath_to_string(enum net_datapath d) {
        return (size_t) d < ELEMENTSOF(datapath_names) ? datapath_names[d] : NULL;
}

const char *net_tunnel_type_to_string(enum net_tunnel_type t) {
        return (size_t) t < ELEMENTSOF(tunnel_names) ? tunnel_names[t] : NULL;
}

int net_tunnel_type_from_string(const char *s, enum net_tunnel_type *ret) {
        int i = keyfile_parse_choice(s, tunnel_names, ELEMENTSOF(tunnel_names));
        if (i < 0)
                return i;
        *ret = (enum net_tunnel_type) i;
        return 0;
}

int net_tunnel_parse(const char *s, struct net_tunnel *ret, struct vh_error *err) {
        char buf[64];
        if (strlen(s) >= sizeof(buf))
                return vh_error_set(err, -EINVAL, "tunnel '%.80s' is too long", s);
        strcpy(buf, s);
        char *remote = strchr(buf, ':');
        if (!remote)
                return vh_error_set(err, -EINVAL, "tunnel must be TYPE:REMOTE[:KEY] (e.g. gre:172.16.0.2), not '%s'", s);
        *remote++ = '\0';
        char *key = strchr(remote, ':');
        if (key)
                *key++ = '\0';
        struct net_tunnel t = {};
        if (net_tunnel_type_from_string(buf, &t.type) < 0)
                return vh_error_set(err, -EINVAL, "tunnel type must be gre or vxlan, not '%s'", buf);
        if (net_ipv4_parse(remote, &t.remote) < 0 || t.remote == 0)
                return vh_error_set(err, -EINVAL, "tunnel remote must be an IPv4 address, not '%s'", remote);
        if (key) {
                uint64_t k;
                /* VXLAN VNIs have 24 bits; GRE keys 32. */
                uint64_t max = t.type == NET_TUNNEL_VXLAN ? 0xffffff : 0xffffffff;
                if (parse_u64(key, &k) < 0 || k > max || (t.type == NET_TUNNEL_VXLAN && k == 0))
                        return vh_error_set(err, -EINVAL, "tunnel key must be a number 0..%" PRIu64 "%s, not '%s'", max,
                                            t.type == NET_TUNNEL_VXLAN ? " (VNI, not 0)" : "", key);
                t.has_key = true;
                t.key = (uint32_t) k;
        }
        *ret = t;
        return 0;
}

char *net_tunnel_format(const struct net_tunnel *t) {
        char a[NET_IPV4_STRLEN];
        if (t->has_key)
                return strdup_printf("%s:%s:%" PRIu32, net_tunnel_type_to_string(t->type), net_ipv4_format(t->remote, a),
                                     t->key);
        return strdup_printf("%s:%s", net_tunnel_type_to_string(t->type), net_ipv4_format(t->remote, a));
}

int net_range_parse(const char *s, uint32_t *ret_first, uint32_t *ret_last) {
        char buf[2 * NET_IPV4_STRLEN];
        if (strlen(s) >= sizeof(buf))
                return -EINVAL;
        strcpy(buf, s);
        char *dash = strchr(buf, '-');
        if (!dash)
                return -EINVAL;
        *dash = '\0';
        uint32_t a, b;
        if (net_ipv4_parse(buf, &a) < 0 || net_ipv4_parse(dash + 1, &b) < 0 || a > b)
                return -EINVAL;
        *ret_first = a;
        *ret_last = b;
        return 0;
}

/* DNS labels, so the domain can go into dnsmasq's config verbatim. */
static bool domain_is_valid(const char *s) {
        size_t n = strlen(s), label = 0;
        if (n == 0 || n > 63 || s[0] == '.' || s[n - 1] == '.')
                return false;
        for (const char *p = s; *p; p++) {
                if (*p == '.') {
                        if (label == 0)
                                return false;
                        label = 0;
                        continue;
                }
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-'))
                        return false;
                label++;
        }
        return true;
}

/* OVSDB remotes ovs-vsctl understands; a path stays one argv element, so
 * the only concern is keeping it a plausible remote and bounded. */
static bool ovs_db_is_valid(const char *s) {
        if (strlen(s) > 200)
                return false;
        if (!startswith(s, "unix:") && !startswith(s, "tcp:") && !startswith(s, "ssl:"))
                return false;
        for (const char *p = s; *p; p++)
                if ((unsigned char) *p < 0x21 || *p == 0x7f)
                        return false;
        return true;
}

unsigned net_def_mtu(const struct net_def *def) {
        return def->mtu ? def->mtu : NET_MTU_DEFAULT;
}

const char *net_def_domain(const struct net_def *def) {
        return def->domain ? def->domain : def->name;
}

int net_def_bridge_name(const struct net_def *def, char ret[static NET_IFNAME_MAX + 1]) {
        if (def->bridge) {
                snprintf(ret, NET_IFNAME_MAX + 1, "%s", def->bridge);
                return 0;
        }
        return net_ifname_derive("vb-", def->name, "", ret);
}

int net_tap_name(const char *vm, unsigned index, char ret[static NET_IFNAME_MAX + 1]) {
        char suffix[8];
        if (index > 99)
                return -ERANGE;
        snprintf(suffix, sizeof(suffix), "-%u", index);
        return net_ifname_derive("vh-", vm, suffix, ret);
}

int net_tunnel_ifname(const struct net_def *def, const struct net_tunnel *t, char ret[static NET_IFNAME_MAX + 1]) {
        char a[NET_IPV4_STRLEN], suffix[8];
        net_ipv4_format(t->remote, a);
        /* The endpoint identifies the tunnel within a network; its hash keeps
         * the name short and stable when other tunnels come and go. */
        snprintf(suffix, sizeof(suffix), "-%04x", (unsigned) (net_name_hash(a) & 0xffff));
        return net_ifname_derive("vt-", def->name, suffix, ret);
}

unsigned net_tunnel_overhead(const struct net_tunnel *t) {
        /* outer IPv4 (20) + tunnel header + the inner Ethernet header (14) */
        if (t->type == NET_TUNNEL_VXLAN)
                return 20 + 8 + 8 + 14;
        return 20 + 4 + (t->has_key ? 4 : 0) + 14;
}

int net_def_complete(struct net_def *def, struct vh_error *err) {
        if (def->type == NET_TYPE_USER) {
                /* QEMU's user-mode defaults: 10.0.2.0/24, host at .2. */
                if (!def->has_subnet) {
                        def->has_subnet = true;
                        def->subnet = (struct net_prefix) { .addr = 0x0a000200, .len = 24 };
                }
                if (!def->gateway)
                        def->gateway = net_prefix_network(&def->subnet) + 2;
                return 0;
        }
        if (!def->has_subnet)
                return 0;
        if (!def->gateway)
                def->gateway = net_prefix_network(&def->subnet) + 1;
        if (def->dhcp && !def->dhcp_first) {
                uint32_t net = net_prefix_network(&def->subnet), bcast = net_prefix_broadcast(&def->subnet);
                uint32_t size = bcast - net + 1;
                def->dhcp_first = net + size / 2;
                def->dhcp_last = bcast - 1;
                /* Keep the gateway out of the pool: dnsmasq with no-ping would hand it out. */
                if (def->gateway == def->dhcp_last)
                        def->dhcp_last--;
                else if (def->gateway == def->dhcp_first)
                        def->dhcp_first++;
                if (def->dhcp_first > def->dhcp_last)
                        return vh_error_set(err, -EINVAL, "subnet is too small for a DHCP range");
        }
        return 0;
}

int net_def_validate(const struct net_def *def, struct vh_error *err) {
        char b[NET_IPV4_STRLEN], s[NET_PREFIX_STRLEN], p[NET_PREFIX_STRLEN];
        if (!name_is_valid(def->name))
                return vh_error_set(err, -EINVAL, "invalid network name '%s'", def->name);

        if (def->type == NET_TYPE_USER) {
                if (def->nat || def->nat_interface || def->bridge || def->ovs_db || def->n_tunnels || def->uplink_port ||
                    def->mtu || def->datapath != NET_DATAPATH_AUTO)
                        return vh_error_set(err, -EINVAL,
                                            "network '%s' is type user (QEMU's own NAT inside each VM): nat, bridge, mtu, "
                                            "ovs-db, datapath, tunnels and uplinks do not apply",
                                            def->name);
                if (def->dhcp_first)
                        return vh_error_set(err, -EINVAL, "user networks always run QEMU's DHCP; a dhcp range does not apply");
        }
        if (def->type != NET_TYPE_OVS && (def->ovs_db || def->datapath != NET_DATAPATH_AUTO))
                return vh_error_set(err, -EINVAL, "ovs-db and datapath apply only to type ovs");

        if (def->gateway && !def->has_subnet)
                return vh_error_set(err, -EINVAL, "a gateway needs a subnet");
        if (def->has_subnet && def->gateway && !net_prefix_is_host(&def->subnet, def->gateway))
                return vh_error_set(err, -EINVAL, "gateway %s is not a host address of subnet %s",
                                    net_ipv4_format(def->gateway, b), net_prefix_format(&def->subnet, s));
        if (def->dhcp && def->type != NET_TYPE_USER) {
                if (!def->has_subnet || !def->gateway)
                        return vh_error_set(err, -EINVAL, "dhcp needs a subnet and a gateway (dnsmasq listens on the gateway)");
                if (def->dhcp_first) {
                        if (!net_prefix_is_host(&def->subnet, def->dhcp_first) ||
                            !net_prefix_is_host(&def->subnet, def->dhcp_last) || def->dhcp_first > def->dhcp_last)
                                return vh_error_set(err, -EINVAL, "the DHCP range is not inside subnet %s",
                                                    net_prefix_format(&def->subnet, s));
                        if (def->gateway >= def->dhcp_first && def->gateway <= def->dhcp_last)
                                return vh_error_set(err, -EINVAL, "the DHCP range contains the gateway %s",
                                                    net_ipv4_format(def->gateway, b));
                }
        }
        if (def->nat && (!def->has_subnet || !def->gateway))
                return vh_error_set(err, -EINVAL, "nat needs a subnet and a gateway (the VMs' route out)");
        if (def->nat_interface && !def->nat)
                return vh_error_set(err, -EINVAL, "nat-interface is set but nat is not");
        for (unsigned i = 0; i < def->n_tunnels; i++)
                for (unsigned j = 0; j < i; j++)
                        if (def->tunnels[i].remote == def->tunnels[j].remote)
                                return vh_error_set(err, -EINVAL, "two tunnels to %s",
                                                    net_ipv4_format(def->tunnels[i].remote, b));
        if (def->uplink_port && !def->has_uplink_host_ip)
                return vh_error_set(err, -EINVAL, "uplink-port needs uplink-host-ip");
        if ((def->has_uplink_host_ip || def->uplink_gateway) && !def->uplink_port)
                return vh_error_set(err, -EINVAL, "uplink-host-ip and uplink-gateway need uplink-port");
        if (def->has_uplink_host_ip && def->has_subnet &&
            net_prefix_overlap(&def->uplink_host_ip, &def->subnet))
                return vh_error_set(err, -EINVAL, "the uplink's host address %s overlaps the network's subnet %s",
                                    net_prefix_format(&def->uplink_host_ip, s), net_prefix_format(&def->subnet, p));
        if (def->uplink_gateway && !net_prefix_is_host(&def->uplink_host_ip, def->uplink_gateway))
                return vh_error_set(err, -EINVAL, "uplink-gateway %s is not inside the uplink's host prefix",
                                    net_ipv4_format(def->uplink_gateway, b));
        if (def->uplink_port && def->nat_interface && streq(def->uplink_port, def->nat_interface))
                return vh_error_set(err, -EINVAL, "nat-interface %s is the port moved into this network's bridge",
                                    def->nat_interface);
        return 0;
}

/* The keys whose values need more than a row of the table. */

static int set_subnet(void *obj, const char *value, struct vh_error *err) {
        struct net_def *def = obj;
        struct net_prefix p;
        int r = net_prefix_parse(value, false, &p);
        if (r == -EDOM) {
                char b[NET_PREFIX_STRLEN];
                (void) net_prefix_parse(value, true, &p);
                p.addr = net_prefix_network(&p);
                return vh_error_set(err, -EINVAL, "subnet '%s' has host bits set: did you mean %s?", value,
                                    net_prefix_format(&p, b));
        }
        if (r < 0 || p.len < 8 || p.len > 30)
                return vh_error_set(err, -EINVAL, "subnet must be an IPv4 prefix /8../30 like 10.10.0.0/24, not '%s'",
                                    value);
        def->subnet = p;
        def->has_subnet = true;
        return 0;
}

static int format_subnet(const void *obj, FILE *f) {
        const struct net_def *def = obj;
        char p[NET_PREFIX_STRLEN];
        if (def->has_subnet)
                fprintf(f, "subnet = %s\n", net_prefix_format(&def->subnet, p));
        return 0;
}

static int set_gateway(void *obj, const char *value, struct vh_error *err) {
        struct net_def *def = obj;
        uint32_t a;
        if (streq(value, "none")) {
                def->gateway = 0;
                return 0;
        }
        if (net_ipv4_parse(value, &a) < 0 || a == 0)
                return vh_error_set(err, -EINVAL, "gateway must be an IPv4 address or none, not '%s'", value);
        def->gateway = a;
        return 0;
}

static int format_gateway(const void *obj, FILE *f) {
        const struct net_def *def = obj;
        char a[NET_IPV4_STRLEN];
        if (def->gateway)
                fprintf(f, "gateway = %s\n", net_ipv4_format(def->gateway, a));
        return 0;
}

static int set_dhcp(void *obj, const char *value, struct vh_error *err) {
        struct net_def *def = obj;
        uint32_t first, last;
        if (keyfile_parse_bool(value, &def->dhcp) == 0) {
                def->dhcp_first = def->dhcp_last = 0;
                return 0;
        }
        if (net_range_parse(value, &first, &last) < 0)
                return vh_error_set(err, -EINVAL,
                                    "dhcp must be yes, no or a range FIRST-LAST like 10.0.0.100-10.0.0.150, not '%s'",
                                    value);
        def->dhcp = true;
        def->dhcp_first = first;
        def->dhcp_last = last;
        return 0;
}

static int format_dhcp(const void *obj, FILE *f) {
        const struct net_def *def = obj;
        char a[NET_IPV4_STRLEN], b[NET_IPV4_STRLEN];
        if (def->dhcp && def->dhcp_first)
                fprintf(f, "dhcp = %s-%s\n", net_ipv4_format(def->dhcp_first, a), net_ipv4_format(def->dhcp_last, b));
        else
                fprintf(f, "dhcp = %s\n", def->dhcp ? "yes" : "no");
        return 0;
}

/* User networks are QEMU's NAT: 'nat' does not apply, so it is not written. */
static int format_nat(const void *obj, FILE *f) {
        const struct net_def *def = obj;
        if (def->type != NET_TYPE_USER)
                fprintf(f, "nat = %s\n", def->nat ? "yes" : "no");
        return 0;
}

static int set_uplink_host_ip(void *obj, const char *value, struct vh_error *err) {
        struct net_def *def = obj;
        struct net_prefix p;
        if (net_prefix_parse(value, true, &p) < 0 || p.len == 0)
                return vh_error_set(err, -EINVAL, "uplink-host-ip must be ADDRESS/PREFIX like 192.168.1.10/24, not '%s'",
                                    value);
        def->uplink_host_ip = p;
        def->has_uplink_host_ip = true;
        return 0;
}

static int format_uplink_host_ip(const void *obj, FILE *f) {
        const struct net_def *def = obj;
        char p[NET_PREFIX_STRLEN];
        if (def->has_uplink_host_ip)
                fprintf(f, "uplink-host-ip = %s\n", net_prefix_format(&def->uplink_host_ip, p));
        return 0;
}

static int set_uplink_gateway(void *obj, const char *value, struct vh_error *err) {
        struct net_def *def = obj;
        uint32_t a;
        if (net_ipv4_parse(value, &a) < 0 || a == 0)
                return vh_error_set(err, -EINVAL, "uplink-gateway must be an IPv4 address, not '%s'", value);
        def->uplink_gateway = a;
        return 0;
}

static int format_uplink_gateway(const void *obj, FILE *f) {
        const struct net_def *def = obj;
        char a[NET_IPV4_STRLEN];
        if (def->uplink_gateway)
                fprintf(f, "uplink-gateway = %s\n", net_ipv4_format(def->uplink_gateway, a));
        return 0;
}

static int tunnel_parse(const char *value, void *elem, struct vh_error *err) {
        return net_tunnel_parse(value, elem, err);
}

static char *tunnel_format(const void *elem) {
        return net_tunnel_format(elem);
}

static const struct def_list tunnel_list = {
        .count_offset = offsetof(struct net_def, n_tunnels),
        .elem_size = sizeof(struct net_tunnel),
        .max = NET_MAX_TUNNELS,
        .plural = "tunnels",
        .parse = tunnel_parse,
        .format = tunnel_format,
};

/* Choices are stored through an unsigned. */
_Static_assert(sizeof(enum net_type) == sizeof(unsigned) && sizeof(enum net_datapath) == sizeof(unsigned),
               "DEF_CHOICE fields are unsigned-sized");

#define STR_(x) #x
#define STR(x) STR_(x)
#define F(field) offsetof(struct net_def, field)
#define IFNAME_EXPECT "an interface name (1..15 characters)"

/* Every key a network definition may hold, in the order net_def_format()
 * writes them: any other is refused, and the unit tests compare this
 * table with docs/networks.md. */
static const struct def_key net_keys[] = {
        { "name", DEF_STRING, F(name), DEF_REQUIRED | DEF_IMMUTABLE, .missing = "missing 'name = ...'",
          .valid = name_is_valid, .expect = "1.." STR(VH_NAME_MAX) " characters of [a-zA-Z0-9_-]" },
        { "type", DEF_CHOICE, F(type), DEF_REQUIRED | DEF_ALWAYS, .missing = "missing 'type = user|bridge|ovs'",
          .choices = type_names, .n_choices = ELEMENTSOF(type_names) },
        { "subnet", DEF_CUSTOM, F(subnet), .set = set_subnet, .format = format_subnet },
        { "gateway", DEF_CUSTOM, F(gateway), .set = set_gateway, .format = format_gateway },
        { "dhcp", DEF_CUSTOM, F(dhcp), .set = set_dhcp, .format = format_dhcp },
        { "nat", DEF_BOOL, F(nat), .format = format_nat },
        { "nat-interface", DEF_STRING, F(nat_interface), .valid = net_ifname_is_valid, .expect = IFNAME_EXPECT },
        { "mtu", DEF_UINT, F(mtu), .min = NET_MTU_MIN, .max = NET_MTU_MAX,
          .expect = "a number " STR(NET_MTU_MIN) ".." STR(NET_MTU_MAX) },
        { "bridge", DEF_STRING, F(bridge), .valid = net_ifname_is_valid, .expect = IFNAME_EXPECT },
        { "ovs-db", DEF_STRING, F(ovs_db), .valid = ovs_db_is_valid,
          .expect = "an OVSDB remote like unix:/run/openvswitch/db.sock" },
        { "datapath", DEF_CHOICE, F(datapath), .choices = datapath_names, .n_choices = ELEMENTSOF(datapath_names) },
        { "domain", DEF_STRING, F(domain), .valid = domain_is_valid, .expect = "DNS labels like lan or vms.example" },
        { "tunnel", DEF_LIST, F(tunnels), .list = &tunnel_list },
        { "uplink-port", DEF_STRING, F(uplink_port), .valid = net_ifname_is_valid, .expect = IFNAME_EXPECT },
        { "uplink-host-ip", DEF_CUSTOM, F(uplink_host_ip), .set = set_uplink_host_ip, .format = format_uplink_host_ip },
        { "uplink-gateway", DEF_CUSTOM, F(uplink_gateway), .set = set_uplink_gateway, .format = format_uplink_gateway },
};

#undef IFNAME_EXPECT
#undef F

/* The file format: 'tunnel' is the one key given once per tunnel. */
static const char *const repeatable_keys[] = { "tunnel", NULL };
static const struct keyfile_syntax net_conf_syntax = {
        .max_bytes = NET_CONF_MAX_BYTES,
        .max_line = NET_CONF_MAX_LINE,
        .repeatable = repeatable_keys,
        .quote_line_max = 200,
        .quote_key_max = 100,
};

static const struct def_schema net_schema = {
        .header = "# vmhost network definition (see docs/networks.md); validated when loaded.\n",
        .keys = net_keys,
        .n_keys = ELEMENTSOF(net_keys),
        .syntax = &net_conf_syntax,
};

const struct def_schema *net_def_schema(void) {
        return &net_schema;
}

struct net_def *net_def_free(struct net_def *def) {
        if (!def)
                return NULL;
        def_free_fields(&net_schema, def);
        free(def);
        return NULL;
}

int net_def_set(struct net_def *def, const char *key, const char *value, struct vh_error *err) {
        return def_set(&net_schema, def, key, value, err);
}

int net_def_parse(const char *text, const char *origin, struct net_def **ret, struct vh_error *err) {
        _cleanup_(net_def_freep) struct net_def *def = net_def_new("unnamed");
        if (!def)
                return -ENOMEM;
        int r = def_parse(&net_schema, def, text, origin, 0, err);
        if (r < 0)
                return r;
        struct vh_error e = {};
        r = net_def_validate(def, &e);
        if (r < 0)
                return vh_error_set(err, r, "%s: %s", origin, e.msg);
        *ret = TAKE_PTR(def);
        return 0;
}

char *net_def_format(const struct net_def *def) {
        return def_format(&net_schema, def);
}
