/* net/nft.h: masquerade for NAT networks, in vmhost's own nftables table
 * ("table ip vmhost"), never touching anyone else's rules. The whole table
 * is regenerated from the NAT networks that run and loaded with one
 * 'nft -f FILE' (exec'd with an argv): the file first creates the table (so
 * that deleting it cannot fail), deletes it, then defines it again, and nft
 * applies all of that as one transaction, so reloading is idempotent and
 * never leaves a half-made table. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "net/net-addr.h"
#include "vmhost/context.h"
#include "vmhost/error.h"

#define NFT_TABLE_FAMILY "ip"
#define NFT_TABLE_NAME "vmhost"

struct nft_masquerade {
        const char *net_name;
        struct net_prefix subnet;
        const char *out_interface;   /* NULL: any interface */
};

/* The ruleset text for these networks; with n == 0 it only removes the table. */
char *nft_ruleset_format(const struct nft_masquerade *m, size_t n);

/* Writes 'ruleset' to 'path' and runs nft -f path. */
int nft_apply(const struct vh_context *ctx, const char *path, const char *ruleset, struct vh_error *err);

/* Whether vmhost's table exists (nft list table ip vmhost): 1, 0 or -errno. */
int nft_table_exists(const struct vh_context *ctx);
