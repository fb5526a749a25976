/* net/netlink.h: the rtnetlink requests vmhost needs, over libmnl: links
 * (bridges, VXLAN and gretap tunnels, up/down, MTU, master), IPv4 addresses
 * and routes, plus a generic-netlink family probe (is the Open vSwitch kernel
 * datapath there?). Nothing here shells out to ip(8) or brctl(8).
 *
 * Every request works on the network namespace the calling thread was in
 * when nl_open() ran. Functions return 0 or -errno as the kernel answered
 * (-ENODEV for a missing link, -EEXIST for a duplicate, ...). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/net-addr.h"

struct nl_conn;

int nl_open(struct nl_conn **ret);
struct nl_conn *nl_close(struct nl_conn *nl);
static inline void nl_closep(struct nl_conn **p) {
        nl_close(*p);
}

struct nl_link {
        int ifindex;
        char name[NET_IFNAME_MAX + 1];
        unsigned mtu;
        int master;              /* ifindex of the bridge it is enslaved to; 0: none */
        unsigned flags;          /* IFF_UP, IFF_LOWER_UP, ... */
        char kind[16];           /* "bridge", "vxlan", "tun", "veth", ... ; "" for plain devices */
        uint8_t mac[6];
        bool has_mac;
};

/* -ENODEV when there is no such link. */
int nl_link_get(struct nl_conn *nl, const char *name, struct nl_link *ret);
int nl_link_get_by_index(struct nl_conn *nl, int ifindex, struct nl_link *ret);

/* New links; -EEXIST when the name is taken. 'mtu' 0 leaves the kernel's default. */
int nl_bridge_add(struct nl_conn *nl, const char *name, unsigned mtu);

struct nl_vxlan {
        uint32_t vni;
        uint32_t local, remote;  /* host byte order; local 0: the kernel picks */
        uint16_t port;           /* UDP destination port, 4789 */
        int underlay_ifindex;    /* 0: any */
};
int nl_vxlan_add(struct nl_conn *nl, const char *name, const struct nl_vxlan *v, unsigned mtu);

struct nl_gretap {
        uint32_t local, remote;
        bool has_key;
        uint32_t key;
        int underlay_ifindex;
};
int nl_gretap_add(struct nl_conn *nl, const char *name, const struct nl_gretap *g, unsigned mtu);

int nl_link_del(struct nl_conn *nl, int ifindex);
int nl_link_set_up(struct nl_conn *nl, int ifindex, bool up);
int nl_link_set_mtu(struct nl_conn *nl, int ifindex, unsigned mtu);
/* master 0 releases the link from its bridge. */
int nl_link_set_master(struct nl_conn *nl, int ifindex, int master);

struct nl_addr {
        int ifindex;
        struct net_prefix prefix;  /* the address with its prefix length */
};
int nl_addr_add(struct nl_conn *nl, int ifindex, const struct net_prefix *p);
int nl_addr_del(struct nl_conn *nl, int ifindex, const struct net_prefix *p);
/* IPv4 addresses of one link (ifindex > 0) or of all. Returns the count;
 * *ret is a new array (free()). */
int nl_addr_list(struct nl_conn *nl, int ifindex, struct nl_addr **ret);

struct nl_route {
        struct net_prefix dst;
        uint32_t gateway;        /* 0: directly connected */
        int oif;
        uint32_t table;
        uint32_t prefsrc;
        uint32_t priority;
        uint8_t protocol, scope, type;
};
/* IPv4 routes of every table. Returns the count; *ret is a new array. */
int nl_route_list(struct nl_conn *nl, struct nl_route **ret);
/* The kernel's route lookup for one destination (like 'ip route get'). */
int nl_route_get(struct nl_conn *nl, uint32_t dst, struct nl_route *ret);
/* Adds or removes a unicast route in the main table. */
int nl_route_add(struct nl_conn *nl, const struct nl_route *r);
int nl_route_del(struct nl_conn *nl, const struct nl_route *r);

/* Whether the generic netlink family exists ("ovs_datapath": the Open vSwitch
 * kernel module is loaded). 1 yes, 0 no, -errno when netlink fails. */
int nl_genl_family_exists(const char *family);
