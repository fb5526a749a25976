/* net/net-internal.h: what the parts of the network library share: paths,
 * the lock, the runtime state file of a running network, and the steps
 * start/stop/attach are made of. Not for use outside src/net/. */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

#include "net/net-def.h"
#include "net/net.h"
#include "net/netlink.h"
#include "net/ovs.h"
#include "vmhost/context.h"
#include "vmhost/error.h"

#define NET_RUNTIME_MAX_BYTES (16 * 1024)
#define NET_MAX_PORTS 1024

/* What a running network recorded when it started: how to find and undo
 * what was made (RUN/networks/NAME/state, key=value lines). */
struct net_runtime {
        char bridge[NET_IFNAME_MAX + 1];
        enum net_datapath datapath;
        char datapath_why[128];
        unsigned mtu;
        char mtu_why[128];
        bool nat;
        /* An uplink in place: the NIC, its MTU before, the default route moved. */
        char uplink_port[NET_IFNAME_MAX + 1];
        unsigned uplink_orig_mtu;
        uint32_t uplink_gateway;
        bool uplink_had_ip;      /* the host address was on the NIC before (else only added) */
        /* ovs: the database the switch was made in, so that teardown talks
         * to the same one whatever a later context says. */
        char ovs_db[256];
};

/* The OVSDB remote of a running network (recorded), else the definition's. */
static inline const char *net_runtime_ovs_db(const struct vh_context *ctx, const struct net_def *def,
                                             const struct net_runtime *rt) {
        return rt && rt->ovs_db[0] ? rt->ovs_db : ovs_db_for(ctx, def);
}

/* STATE/networks/NAME.conf */
int net_conf_path(const struct vh_context *ctx, const char *name, char **ret);
/* RUN/networks/NAME[/file] (only the path). */
int net_run_path(const struct vh_context *ctx, const char *name, const char *file, char **ret);
/* Creates RUN/networks/NAME[/sub]. */
int net_run_dir_make(const struct vh_context *ctx, const char *name, const char *sub);

/* The exclusive lock of all network changes; returns the fd to close. */
int net_lock_take(const struct vh_context *ctx, struct vh_error *err);
static inline void net_lock_releasep(int *fd) {
        if (*fd >= 0)
                close(*fd);
}
#define _cleanup_net_lock_ __attribute__((cleanup(net_lock_releasep)))

/* -ENOENT when the network does not run. */
int net_runtime_read(const struct vh_context *ctx, const char *name, struct net_runtime *ret);
int net_runtime_write(const struct vh_context *ctx, const char *name, const struct net_runtime *rt);
int net_runtime_parse(const char *text, struct net_runtime *ret);
char *net_runtime_format(const struct net_runtime *rt);

/* Start without taking the lock (the caller holds it). */
int net_start_locked(const struct vh_context *ctx, const struct net_def *def, struct net_runtime *ret_rt,
                     struct vh_error *err);

/* Rewrites dnsmasq's reservations from the port records and makes it
 * re-read them (SIGHUP); starts it when it is not running and restarts it
 * only when its config (range, address, interface) changed. No-op for
 * networks without DHCP. */
int net_dnsmasq_sync(const struct vh_context *ctx, const struct net_def *def, const struct net_runtime *rt,
                     struct vh_error *err);

/* The effective MTU: the definition's, lowered where a tunnel's underlay
 * cannot carry full frames plus the encapsulation. why gets an explanation
 * when lowered. */
int net_effective_mtu(struct nl_conn *nl, const struct net_def *def, unsigned *ret, char *why, size_t why_len,
                      struct vh_error *err);

/* Tunnels on the host for a running network (bridge: kernel VXLAN/gretap
 * links enslaved to the bridge; ovs: tunnel ports). */
int net_tunnel_setup(const struct vh_context *ctx, struct nl_conn *nl, const struct net_def *def,
                     const struct net_runtime *rt, const struct net_tunnel *t, struct vh_error *err);
int net_tunnel_teardown(const struct vh_context *ctx, struct nl_conn *nl, const struct net_def *def,
                        const struct net_runtime *rt, const struct net_tunnel *t);

/* Uplink steps for start/stop (the def's uplink-* keys). Apply records
 * what it did in rt. */
int net_uplink_apply(const struct vh_context *ctx, struct nl_conn *nl, const struct net_def *def,
                     struct net_runtime *rt, char ***ret_plan, bool dry_run, struct vh_error *err);
int net_uplink_revert(const struct vh_context *ctx, struct nl_conn *nl, const struct net_def *def,
                      struct net_runtime *rt);

/* Port records (RUN/networks/NAME/ports/VM.INDEX): the count and *ret (a
 * calloc'ed array, never NULL on success). A record that cannot be read or
 * parsed fails the call with its file named in 'err': reading it as "no
 * port" would hide a tap, a VLAN or a reserved address. Only the temporary
 * file of a write that never finished is skipped. */
int net_ports_read(const struct vh_context *ctx, const char *name, struct net_port **ret, struct vh_error *err);

/* Test hook: the context's net_fault "WHAT:N" (VMHOST_NET_FAULT) makes the
 * Nth step of WHAT fail (e.g. "uplink:3"), to prove rollback. Returns true when this step fails. */
bool net_fault_inject(const struct vh_context *ctx, const char *what, unsigned step);
