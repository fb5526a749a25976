/* net/net-def.h: a network definition: what the user asked for, stored as
 * one readable "key = value" file per network (STATE/networks/NAME.conf),
 * documented in docs/networks.md and validated on load with line-numbered
 * errors. Parsing is pure (no system calls) so the fuzzer and the unit
 * tests drive it directly. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/macro.h"
#include "net/net-addr.h"
#include "vmhost/error.h"

#define NET_CONF_MAX_BYTES (16 * 1024)
#define NET_CONF_MAX_LINE 1024
#define NET_MAX_TUNNELS 16
#define NET_MTU_MIN 576
#define NET_MTU_MAX 9000
#define NET_MTU_DEFAULT 1500

enum net_type { NET_TYPE_USER, NET_TYPE_BRIDGE, NET_TYPE_OVS };
enum net_datapath { NET_DATAPATH_AUTO, NET_DATAPATH_SYSTEM, NET_DATAPATH_NETDEV };
enum net_tunnel_type { NET_TUNNEL_GRE, NET_TUNNEL_VXLAN };

struct net_tunnel {
        enum net_tunnel_type type;
        uint32_t remote;         /* host byte order */
        bool has_key;
        uint32_t key;            /* GRE key or VXLAN VNI */
};

struct net_def {
        char *name;
        enum net_type type;
        bool has_subnet;
        struct net_prefix subnet;
        uint32_t gateway;        /* 0: none */
        bool dhcp;
        uint32_t dhcp_first, dhcp_last;
        bool nat;
        char *nat_interface;     /* masquerade only out of this interface; NULL: any */
        unsigned mtu;            /* 0: NET_MTU_DEFAULT */
        char *bridge;            /* the bridge's interface name; NULL: derived */
        char *ovs_db;            /* ovs-vsctl --db=; NULL: the context's or OVS's default */
        enum net_datapath datapath;
        char *domain;            /* DNS domain dnsmasq answers for; NULL: the network's name */
        struct net_tunnel tunnels[NET_MAX_TUNNELS];
        unsigned n_tunnels;
        char *uplink_port;       /* NIC moved into the switch ('vmhost net uplink') */
        bool has_uplink_host_ip;
        struct net_prefix uplink_host_ip; /* the host's address, moved onto the bridge */
        uint32_t uplink_gateway; /* the host's default route through it; 0: none */
};

struct net_def *net_def_new(const char *name);
struct net_def *net_def_free(struct net_def *def);
static inline void net_def_freep(struct net_def **p) {
        net_def_free(*p);
}

const char *net_type_to_string(enum net_type t);
int net_type_from_string(const char *s, enum net_type *ret);
const char *net_datapath_to_string(enum net_datapath d);
const char *net_tunnel_type_to_string(enum net_tunnel_type t);
int net_tunnel_type_from_string(const char *s, enum net_tunnel_type *ret);

/* "gre:172.16.0.2" or "vxlan:172.16.0.2:42" (the last field is the key/VNI). */
int net_tunnel_parse(const char *s, struct net_tunnel *ret, struct vh_error *err);
char *net_tunnel_format(const struct net_tunnel *t);

/* "10.0.0.100-10.0.0.150". */
int net_range_parse(const char *s, uint32_t *ret_first, uint32_t *ret_last);

/* Sets one key as the definition file would ("mtu", "1450"); the message
 * says what is wrong with the value. */
int net_def_set(struct net_def *def, const char *key, const char *value, struct vh_error *err);

/* The schema of a network definition (base/defs.h): the keys net_def_set()
 * accepts and their flags. */
struct def_schema;
const struct def_schema *net_def_schema(void);

/* Parses a definition; 'origin' names it in errors ("lan.conf:3: ..."). The
 * result is validated. */
int net_def_parse(const char *text, const char *origin, struct net_def **ret, struct vh_error *err);

/* Fills what the user left out: gateway (first host of the subnet), the DHCP
 * range (the upper half of the subnet, without the gateway), the bridge
 * name, the user-mode default subnet 10.0.2.0/24. */
int net_def_complete(struct net_def *def, struct vh_error *err);

/* Whole-definition checks: combinations of keys, addresses inside the subnet. */
int net_def_validate(const struct net_def *def, struct vh_error *err);

/* The text net_def_parse() reads back. */
char *net_def_format(const struct net_def *def);

/* The effective values. */
unsigned net_def_mtu(const struct net_def *def);
const char *net_def_domain(const struct net_def *def);
/* The bridge interface: def->bridge or "vb-NAME" (shortened when long). */
int net_def_bridge_name(const struct net_def *def, char ret[static NET_IFNAME_MAX + 1]);
/* The tap of NIC 'index' of VM 'vm': "vh-VM-INDEX", shortened when long. */
int net_tap_name(const char *vm, unsigned index, char ret[static NET_IFNAME_MAX + 1]);
/* The interface of a tunnel: "vt-NET-" and 4 hex digits of the endpoint. */
int net_tunnel_ifname(const struct net_def *def, const struct net_tunnel *t, char ret[static NET_IFNAME_MAX + 1]);
/* Bytes of encapsulation a tunnel adds to a guest frame's IP packet size
 * budget on the underlay (outer IP + tunnel header + inner Ethernet). */
unsigned net_tunnel_overhead(const struct net_tunnel *t);
