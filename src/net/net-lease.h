/* net/net-lease.h: the DHCP leases dnsmasq hands out on a vmhost network,
 * read from its lease file (RUN/networks/NAME/dnsmasq.leases), so that
 * 'vmhost vm status' can say where a guest is.
 *
 * The file is dnsmasq's, written while guests ask for addresses, and its
 * contents come from outside (a guest chooses its hostname and client id):
 * the parser is bounded (file size, line length, number of leases) and
 * skips lines it does not understand rather than trusting them. */
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "net/net-addr.h"
#include "vmhost/context.h"
#include "vmhost/error.h"

#define NET_LEASES_MAX_BYTES (1024 * 1024)
#define NET_LEASES_MAX_LINE 1024
#define NET_LEASES_MAX 4096
#define NET_LEASE_HOSTNAME_MAX 63

/* One IPv4 lease line: "EXPIRY MAC IP HOSTNAME CLIENT-ID". */
struct net_lease {
        int64_t expiry;                          /* seconds since the epoch; 0: never expires */
        char mac[18];                            /* lower case "52:54:00:12:34:56" */
        char ip[NET_IPV4_STRLEN];
        char hostname[NET_LEASE_HOSTNAME_MAX + 1]; /* "" when the guest sent none ("*") */
};

/* Parses the text of a lease file. Lines that are not IPv4 leases of an
 * Ethernet MAC (DHCPv6's "duid" line and its leases, damaged lines) are
 * skipped; *ret_skipped (may be NULL) counts them. -E2BIG past the limits
 * above. *ret (free()) is NULL when there is no lease. */
int net_leases_parse(const char *text, size_t len, struct net_lease **ret, size_t *ret_n, size_t *ret_skipped,
                     struct vh_error *err);

/* The lease of 'mac' (any case) still valid at 'now': the one expiring
 * last when dnsmasq lists several. NULL if there is none. */
const struct net_lease *net_leases_find(const struct net_lease *leases, size_t n, const char *mac, int64_t now);

/* Reads and parses network NAME's lease file; no file (the network does
 * not run, or no guest asked yet) is no lease, not an error. */
int net_leases_read(const struct vh_context *ctx, const char *net_name, struct net_lease **ret, size_t *ret_n,
                    struct vh_error *err);
