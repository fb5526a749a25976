/* net/net-addr.h: IPv4 addresses and prefixes as vmhost networks use them:
 * parsing "10.0.0.0/24" strictly, overlap and containment, formatting, and
 * deriving interface names (at most 15 characters) from object names.
 * Addresses are kept in host byte order so arithmetic on them reads plainly. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NET_IFNAME_MAX 15          /* IFNAMSIZ - 1 */
#define NET_IPV4_STRLEN 16         /* "255.255.255.255" + NUL */
#define NET_PREFIX_STRLEN 19       /* "255.255.255.255/32" + NUL */

struct net_prefix {
        uint32_t addr;   /* host byte order */
        unsigned len;    /* 0..32 */
};

/* Dotted quad only ("10.1.2.3"); no shorthand forms like "10.1". */
int net_ipv4_parse(const char *s, uint32_t *ret);
const char *net_ipv4_format(uint32_t addr, char buf[static NET_IPV4_STRLEN]);

/* "A.B.C.D/N". With 'host_bits_ok' false, bits past the prefix must be zero
 * (a subnet); with true the address is a host address inside it
 * ("172.16.0.1/24", as for --host-ip). */
int net_prefix_parse(const char *s, bool host_bits_ok, struct net_prefix *ret);
const char *net_prefix_format(const struct net_prefix *p, char buf[static NET_PREFIX_STRLEN]);

uint32_t net_prefix_mask(unsigned len);
uint32_t net_prefix_network(const struct net_prefix *p);
uint32_t net_prefix_broadcast(const struct net_prefix *p);
bool net_prefix_contains(const struct net_prefix *p, uint32_t addr);
bool net_prefix_overlap(const struct net_prefix *a, const struct net_prefix *b);
/* An address usable by a host in p: inside, and not the network or broadcast
 * address (for prefixes shorter than /31). */
bool net_prefix_is_host(const struct net_prefix *p, uint32_t addr);

/* Interface names: 1..15 printable bytes, not "." or "..", none of '/', ':',
 * white space (the kernel's rules) nor quotes, backslash, ';', '#', '{', '}'
 * (they go into nft and dnsmasq files). */
bool net_ifname_is_valid(const char *name);

/* prefix + name + suffix when that fits in 15 characters; else the name is
 * cut and 4 hex digits of a hash of the whole name are put before the
 * suffix, so different long names still get different interfaces:
 * ("vh-", "averyveryverylongvm", "-0") -> "vh-avery3f2a-0". */
int net_ifname_derive(const char *prefix, const char *name, const char *suffix, char ret[static NET_IFNAME_MAX + 1]);

/* FNV-1a, for derived names (stable across versions: names live in the kernel). */
uint32_t net_name_hash(const char *s);
