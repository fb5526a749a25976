/* net/ovs.c: ovs-vsctl argv builders and runner. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "base/macro.h"
#include "base/process.h"
#include "base/strutil.h"
#include "net/netlink.h"
#include "net/ovs.h"

#define OVS_MAX_OUTPUT (64 * 1024)
/* ovs-vsctl gives up by itself after --timeout=OVS_TIMEOUT_SEC; this bounds
 * an ovs-vsctl that hangs before or after that timer (a stuck exec, a
 * blocked write of its output). */
#define OVS_VSCTL_RUN_TIMEOUT_MS ((OVS_TIMEOUT_SEC + 5) * 1000u)

const char *ovs_db_for(const struct vh_context *ctx, const struct net_def *def) {
        if (def && def->ovs_db)
                return def->ovs_db;
        return isempty(ctx->ovs_db) ? NULL : ctx->ovs_db;
}

void ovs_argv_begin(struct strv *argv, const char *db) {
        strv_add(argv, "ovs-vsctl");
        if (db)
                strv_addf(argv, "--db=%s", db);
        strv_addf(argv, "--timeout=%d", OVS_TIMEOUT_SEC);
}

void ovs_argv_add_bridge(struct strv *argv, const char *db, const char *bridge, enum net_datapath dp,
                         const char *net_name, unsigned mtu) {
        ovs_argv_begin(argv, db);
        strv_add(argv, "--");
        strv_add(argv, "--may-exist");
        strv_add(argv, "add-br");
        strv_add(argv, bridge);
        strv_add(argv, "--");
        strv_add(argv, "set");
        strv_add(argv, "Bridge");
        strv_add(argv, bridge);
        strv_addf(argv, "datapath_type=%s", dp == NET_DATAPATH_NETDEV ? "netdev" : "system");
        strv_addf(argv, "external_ids:vmhost-net=%s", net_name);
        if (mtu) {
                strv_add(argv, "--");
                strv_add(argv, "set");
                strv_add(argv, "Interface");
                strv_add(argv, bridge);
                strv_addf(argv, "mtu_request=%u", mtu);
        }
}

void ovs_argv_del_bridge(struct strv *argv, const char *db, const char *bridge) {
        ovs_argv_begin(argv, db);
        strv_add(argv, "--");
        strv_add(argv, "--if-exists");
        strv_add(argv, "del-br");
        strv_add(argv, bridge);
}

static void add_port_prefix(struct strv *argv, const char *db, const char *bridge, const char *port) {
        ovs_argv_begin(argv, db);
        strv_add(argv, "--");
        strv_add(argv, "--may-exist");
        strv_add(argv, "add-port");
        strv_add(argv, bridge);
        strv_add(argv, port);
}

void ovs_argv_add_vm_port(struct strv *argv, const char *db, const char *bridge, const char *port, int vlan,
                          const char *trunks, const char *net_name, const char *vm_name) {
        add_port_prefix(argv, db, bridge, port);
        strv_add(argv, "--");
        strv_add(argv, "set");
        strv_add(argv, "Port");
        strv_add(argv, port);
        /* Set (or reset) both: a port re-added after a crash must not keep
         * the VLAN of its previous life. */
        if (vlan >= 0)
                strv_addf(argv, "tag=%d", vlan);
        else
                strv_add(argv, "tag=[]");
        if (trunks)
                strv_addf(argv, "trunks=%s", trunks);
        else
                strv_add(argv, "trunks=[]");
        strv_addf(argv, "external_ids:vmhost-net=%s", net_name);
        strv_addf(argv, "external_ids:vmhost-vm=%s", vm_name);
}

void ovs_argv_add_tunnel_port(struct strv *argv, const char *db, const char *bridge, const char *port,
                              const struct net_tunnel *t, const char *net_name) {
        char a[NET_IPV4_STRLEN];
        add_port_prefix(argv, db, bridge, port);
        strv_add(argv, "--");
        strv_add(argv, "set");
        strv_add(argv, "Interface");
        strv_add(argv, port);
        strv_addf(argv, "type=%s", net_tunnel_type_to_string(t->type));
        strv_addf(argv, "options:remote_ip=%s", net_ipv4_format(t->remote, a));
        /* VXLAN without a key uses VNI 1, the same default the kernel VXLAN
         * side of vmhost uses, so OVS and Linux-bridge hosts interoperate. */
        if (t->has_key)
                strv_addf(argv, "options:key=%" PRIu32, t->key);
        else if (t->type == NET_TUNNEL_VXLAN)
                strv_add(argv, "options:key=1");
        strv_add(argv, "--");
        strv_add(argv, "set");
        strv_add(argv, "Port");
        strv_add(argv, port);
        strv_addf(argv, "external_ids:vmhost-net=%s", net_name);
}

void ovs_argv_add_uplink_port(struct strv *argv, const char *db, const char *bridge, const char *port,
                              const char *net_name, unsigned mtu) {
        add_port_prefix(argv, db, bridge, port);
        strv_add(argv, "--");
        strv_add(argv, "set");
        strv_add(argv, "Port");
        strv_add(argv, port);
        strv_addf(argv, "external_ids:vmhost-net=%s", net_name);
        strv_add(argv, "external_ids:vmhost-uplink=true");
        if (mtu) {
                strv_add(argv, "--");
                strv_add(argv, "set");
                strv_add(argv, "Interface");
                strv_add(argv, port);
                strv_addf(argv, "mtu_request=%u", mtu);
        }
}

void ovs_argv_del_port(struct strv *argv, const char *db, const char *bridge, const char *port) {
        ovs_argv_begin(argv, db);
        strv_add(argv, "--");
        strv_add(argv, "--if-exists");
        strv_add(argv, "del-port");
        strv_add(argv, bridge);
        strv_add(argv, port);
}

/* The first line of ovs-vsctl's output, for messages. */
static const char *first_line(char *out, char *buf, size_t len) {
        if (!out)
                return "";
        size_t n = strcspn(out, "\n");
        snprintf(buf, len, "%.*s", (int) MIN(n, len - 1), out);
        return buf;
}

int ovs_vsctl(const struct vh_context *ctx, char *const *argv, char **ret_output, struct vh_error *err) {
        _cleanup_free_ char *out = NULL;
        char line[300];
        int r = process_run(ctx, argv, OVS_VSCTL_RUN_TIMEOUT_MS, OVS_MAX_OUTPUT, &out, err);
        if (r == -ENOENT)
                return vh_error_set(err, -ENOENT,
                                    "Open vSwitch is not installed (no ovs-vsctl in PATH): apt-get install openvswitch-switch");
        if (r < 0)
                return r; /* 'err' names ovs-vsctl and the cause */
        if (r != 0) {
                const char *l = first_line(out, line, sizeof(line));
                if (out && (strstr(out, "timed out") || strstr(out, "Alarm clock") || r == 128 + 14))
                        return vh_error_set(err, -ETIMEDOUT,
                                            "Open vSwitch did not answer within %d s (%s): is ovsdb-server and "
                                            "ovs-vswitchd running for this database?",
                                            OVS_TIMEOUT_SEC, l);
                if (out && (strstr(out, "database connection failed") || strstr(out, "No such file or directory")))
                        return vh_error_set(err, -ECONNREFUSED,
                                            "cannot reach the Open vSwitch database (%s): is ovsdb-server running? "
                                            "(service openvswitch-switch start, or set ovs-db)",
                                            l);
                return vh_error_set(err, -EIO, "ovs-vsctl failed: %s", l);
        }
        if (ret_output)
                *ret_output = TAKE_PTR(out);
        return 0;
}

int ovs_check_available(const struct vh_context *ctx, const char *db, struct vh_error *err) {
        struct strv argv = {};
        ovs_argv_begin(&argv, db);
        strv_add(&argv, "--no-wait");
        strv_add(&argv, "list-br");
        int r = argv.error;
        if (r >= 0)
                r = ovs_vsctl(ctx, argv.v, NULL, err);
        strv_done(&argv);
        return r;
}

int ovs_check_interface(const struct vh_context *ctx, const char *db, const char *name, struct vh_error *err) {
        struct strv argv = {};
        ovs_argv_begin(&argv, db);
        strv_add(&argv, "--");
        strv_add(&argv, "get");
        strv_add(&argv, "Interface");
        strv_add(&argv, name);
        strv_add(&argv, "error");
        strv_add(&argv, "ofport");
        _cleanup_free_ char *out = NULL;
        int r = argv.error;
        if (r >= 0)
                r = ovs_vsctl(ctx, argv.v, &out, err);
        strv_done(&argv);
        if (r < 0)
                return r;
        /* Two lines: the error column ([] or "" when fine, a quoted message
         * otherwise) and ofport (-1 when the device could not be opened). */
        char *nl = strchr(out, '\n');
        if (nl)
                *nl = '\0';
        char *error = strstrip(out), *ofport = nl ? strstrip(nl + 1) : (char *) "";
        if (!streq(error, "[]") && !streq(error, "\"\"") && !isempty(error))
                return vh_error_set(err, -EIO, "Open vSwitch could not set up interface %s: %.300s", name, error);
        if (startswith(ofport, "-1"))
                return vh_error_set(err, -EIO, "Open vSwitch gave interface %s no port number (ofport -1)", name);
        return 0;
}

int ovs_bridge_exists(const struct vh_context *ctx, const char *db, const char *bridge) {
        struct strv argv = {};
        ovs_argv_begin(&argv, db);
        strv_add(&argv, "br-exists");
        strv_add(&argv, bridge);
        if (argv.error) {
                strv_done(&argv);
                return -ENOMEM;
        }
        /* br-exists answers with its exit status: 0 yes, 2 no. */
        int r = process_run(ctx, argv.v, OVS_VSCTL_RUN_TIMEOUT_MS, 4096, NULL, NULL);
        strv_done(&argv);
        if (r < 0)
                return r;
        return r == 0 ? 1 : r == 2 ? 0 : -EIO;
}

enum net_datapath ovs_choose_datapath(enum net_datapath requested, const char **ret_why) {
        if (requested != NET_DATAPATH_AUTO) {
                if (ret_why)
                        *ret_why = "as configured";
                return requested;
        }
        /* Only asks the kernel (one generic netlink lookup): 'net show' calls
         * this for a stopped network, so it must not load modules or touch OVS. */
        int r = nl_genl_family_exists("ovs_datapath");
        if (r > 0) {
                if (ret_why)
                        *ret_why = "the openvswitch kernel module is loaded";
                return NET_DATAPATH_SYSTEM;
        }
        if (ret_why)
                *ret_why = r < 0 ? "the kernel did not say whether it has the openvswitch datapath"
                                 : "no openvswitch kernel datapath on this host";
        return NET_DATAPATH_NETDEV;
}
