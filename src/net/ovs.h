/* net/ovs.h: Open vSwitch through ovs-vsctl (exec'd with an argv, never a
 * shell). The argv builders are pure so the unit tests compare them with
 * golden text; ovs_vsctl() runs one and turns failures into messages that
 * say what to do. Every object vmhost makes carries external_ids:vmhost-net
 * (and vmhost-vm on VM ports) so that it can be found and removed.
 *
 * Pitfall (../shared/lab/README.md): ovs-vsctl can exit 0 although
 * ovs-vswitchd failed to open a device; ovs_check_interface() reads the
 * Interface table's error column, which is where that failure shows. */
#pragma once

#include <stdbool.h>

#include "base/strv.h"
#include "net/net-def.h"
#include "vmhost/context.h"
#include "vmhost/error.h"

/* Seconds ovs-vsctl waits for the database and for ovs-vswitchd. */
#define OVS_TIMEOUT_SEC 10

/* The database remote: def->ovs_db, else the context's ovs_db
 * ($VMHOST_OVS_DB), else NULL (OVS's default
 * unix:/var/run/openvswitch/db.sock). */
const char *ovs_db_for(const struct vh_context *ctx, const struct net_def *def);

/* argv = ovs-vsctl [--db=DB] --timeout=N; commands follow. */
void ovs_argv_begin(struct strv *argv, const char *db);

/* The bridge, its datapath type, the network tag and the MTU of its local
 * (gateway) port, in one transaction. */
void ovs_argv_add_bridge(struct strv *argv, const char *db, const char *bridge, enum net_datapath dp,
                         const char *net_name, unsigned mtu);
void ovs_argv_del_bridge(struct strv *argv, const char *db, const char *bridge);

/* A VM NIC's tap as a plain port (type=system: with the userspace datapath a
 * type=tap port would collide with QEMU's own open of the tap). vlan < 0:
 * untagged; trunks NULL or "1,2,3". */
void ovs_argv_add_vm_port(struct strv *argv, const char *db, const char *bridge, const char *port, int vlan,
                          const char *trunks, const char *net_name, const char *vm_name);
/* A tunnel port (type=gre|vxlan) to 'remote'. */
void ovs_argv_add_tunnel_port(struct strv *argv, const char *db, const char *bridge, const char *port,
                              const struct net_tunnel *t, const char *net_name);
/* A NIC moved into the bridge ('vmhost net uplink'). */
void ovs_argv_add_uplink_port(struct strv *argv, const char *db, const char *bridge, const char *port,
                              const char *net_name, unsigned mtu);
void ovs_argv_del_port(struct strv *argv, const char *db, const char *bridge, const char *port);

/* Runs an argv made above. Output (stdout+stderr, bounded) goes to
 * ret_output when not NULL. Errors: -ENOENT ovs-vsctl missing (message says
 * to install openvswitch-switch), -ETIMEDOUT database or ovs-vswitchd not
 * answering, -EIO other failures with ovs-vsctl's message. */
int ovs_vsctl(const struct vh_context *ctx, char *const *argv, char **ret_output, struct vh_error *err);

/* Whether ovs-vsctl exists and the database answers. */
int ovs_check_available(const struct vh_context *ctx, const char *db, struct vh_error *err);

/* Reads Interface 'name': -EIO with OVS's error text when the error column
 * is set or ofport is -1. */
int ovs_check_interface(const struct vh_context *ctx, const char *db, const char *name, struct vh_error *err);

/* 1 if 'bridge' is an OVS bridge in this database, 0 if not. */
int ovs_bridge_exists(const struct vh_context *ctx, const char *db, const char *bridge);

/* The datapath to use: 'requested' unless auto; auto picks system when the
 * kernel module (generic netlink family ovs_datapath) is there, else netdev.
 * ret_why explains the choice for the user. No side effects (see
 * net_datapath_choose(), its public face). */
enum net_datapath ovs_choose_datapath(enum net_datapath requested, const char **ret_why);
