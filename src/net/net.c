/* net/net.c: network lifecycle: definitions on disk, create with host
 * checks, start/stop/delete of bridges and Open vSwitch switches with their
 * gateway, dnsmasq and masquerade, and the runtime record of what runs. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/rtnetlink.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/defs.h"
#include "base/fileio.h"
#include "base/lockfile.h"
#include "base/macro.h"
#include "base/paths.h"
#include "base/strutil.h"
#include "base/strv.h"
#include "net/dnsmasq.h"
#include "net/net-internal.h"
#include "net/nft.h"
#include "net/ovs.h"

#define NET_MAX_NETWORKS 1024

/* ------------------------------------------------------------------ paths, lock */

int net_conf_path(const struct vh_context *ctx, const char *name, char **ret) {
        if (!name_is_valid(name))
                return -EINVAL;
        _cleanup_free_ char *dir = NULL;
        int r = vh_state_subdir(ctx, "networks", &dir);
        if (r < 0)
                return r;
        char *p = strdup_printf("%s/%s.conf", dir, name);
        if (!p)
                return -ENOMEM;
        *ret = p;
        return 0;
}

int net_run_path(const struct vh_context *ctx, const char *name, const char *file, char **ret) {
        if (!name_is_valid(name))
                return -EINVAL;
        /* Only the path: reading the state of a stopped network must not
         * leave directories behind (net_run_dir_make() creates). */
        _cleanup_free_ char *run = vh_runtime_dir(ctx);
        if (!run)
                return -ENOMEM;
        char *p = file ? strdup_printf("%s/networks/%s/%s", run, name, file) : strdup_printf("%s/networks/%s", run, name);
        if (!p)
                return -ENOMEM;
        *ret = p;
        return 0;
}

int net_run_dir_make(const struct vh_context *ctx, const char *name, const char *sub) {
        _cleanup_free_ char *dir = NULL, *top = NULL, *run = vh_runtime_dir(ctx);
        int r = net_run_path(ctx, name, sub, &dir);
        if (r >= 0)
                r = net_run_path(ctx, name, NULL, &top);
        if (r < 0 || !run)
                return r < 0 ? r : -ENOMEM;
        r = mkdir_p(dir, 0700);
        if (r < 0 || sub)
                return r;
        /* Searchable, not listable, down to the network's own directory, so
         * that dnsmasq, once it is 'nobody', can re-read its reservations
         * file there. What is private has its own mode: a VM's runtime
         * directory stays 0700, the files here hold nothing secret. */
        _cleanup_free_ char *networks = strdup_printf("%s/networks", run);
        if (!networks)
                return -ENOMEM;
        const char *dirs[] = { run, networks, top };
        for (size_t i = 0; i < ELEMENTSOF(dirs); i++)
                if (chmod(dirs[i], 0711) < 0)
                        return negative_errno();
        return 0;
}

int net_lock_take(const struct vh_context *ctx, struct vh_error *err) {
        _cleanup_free_ char *dir = NULL;
        int r = vh_runtime_subdir(ctx, "networks", &dir);
        if (r < 0)
                return vh_error_set(err, r, "cannot create the runtime directory: %s", strerror(-r));
        _cleanup_free_ char *path = strdup_printf("%s/lock", dir);
        if (!path)
                return -ENOMEM;
        /* Bounded wait: a stuck holder must not hang every VM start forever. */
        return vh_lockfile_take(path, "The network configuration of this vmhost home", "changed", 60 * 1000, err);
}

bool net_fault_inject(const struct vh_context *ctx, const char *what, unsigned step) {
        if (isempty(ctx->net_fault))
                return false;
        char want[64];
        snprintf(want, sizeof(want), "%s:%u", what, step);
        return streq(ctx->net_fault, want);
}

char **net_strv_free(char **v) {
        for (char **p = v; p && *p; p++)
                free(*p);
        free(v);
        return NULL;
}

/* ------------------------------------------------------------------ definitions */

int net_load(const struct vh_context *ctx, const char *name, struct net_def **ret, struct vh_error *err) {
        if (!name_is_valid(name))
                return vh_error_set(err, -EINVAL, "invalid network name '%s': use 1..%d characters of [a-zA-Z0-9_-]",
                                    name, VH_NAME_MAX);
        _cleanup_free_ char *path = NULL;
        int r = net_conf_path(ctx, name, &path);
        if (r < 0)
                return vh_error_set(err, r, "cannot find the state directory: %s", strerror(-r));
        _cleanup_free_ char *text = NULL;
        r = def_file_read(path, NET_CONF_MAX_BYTES, &text, err);
        if (r == -ENOENT)
                return vh_error_set(err, -ENOENT, "no network '%s' (see 'vmhost net list')", name);
        if (r < 0)
                return r;
        struct net_def *def = NULL;
        r = net_def_parse(text, path, &def, err);
        if (r < 0)
                return r;
        if ((r = def_name_check(path, def->name, name, err)) < 0) {
                net_def_free(def);
                return r;
        }
        *ret = def;
        return 0;
}

int net_save(const struct vh_context *ctx, const struct net_def *def, struct vh_error *err) {
        _cleanup_free_ char *path = NULL, *text = net_def_format(def);
        if (!text)
                return -ENOMEM;
        int r = net_conf_path(ctx, def->name, &path);
        if (r < 0)
                return vh_error_set(err, r, "cannot find the state directory: %s", strerror(-r));
        r = write_file_atomic(path, text, strlen(text), 0644);
        if (r < 0)
                return vh_error_set(err, r, "cannot write %s: %s", path, strerror(-r));
        return 0;
}

bool net_exists(const struct vh_context *ctx, const char *name) {
        _cleanup_free_ char *path = NULL;
        return net_conf_path(ctx, name, &path) >= 0 && file_exists(path);
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

int net_list_names(const struct vh_context *ctx, char ***ret, struct vh_error *err) {
        _cleanup_free_ char *dir = NULL;
        int r = vh_state_subdir(ctx, "networks", &dir);
        if (r < 0)
                return vh_error_set(err, r, "cannot find the state directory: %s", strerror(-r));
        DIR *d = opendir(dir);
        if (!d)
                return vh_error_set(err, negative_errno(), "cannot list %s: %m", dir);
        struct strv names = {};
        struct dirent *de;
        while ((de = readdir(d))) {
                size_t n = strlen(de->d_name);
                if (n <= 5 || !endswith(de->d_name, ".conf"))
                        continue;
                char name[VH_NAME_MAX + 1];
                if (n - 5 > VH_NAME_MAX)
                        continue;
                memcpy(name, de->d_name, n - 5);
                name[n - 5] = '\0';
                if (!name_is_valid(name))
                        continue;
                if (names.n >= NET_MAX_NETWORKS) {
                        closedir(d);
                        strv_done(&names);
                        return vh_error_set(err, -E2BIG, "more than %d networks in %s", NET_MAX_NETWORKS, dir);
                }
                strv_add(&names, name);
        }
        closedir(d);
        if (names.error) {
                strv_done(&names);
                return -ENOMEM;
        }
        if (!names.v) {
                names.v = calloc(1, sizeof(char *));
                if (!names.v)
                        return -ENOMEM;
        }
        qsort(names.v, names.n, sizeof(char *), cmp_str);
        *ret = names.v;
        return (int) names.n;
}

/* ------------------------------------------------------------------ runtime record */

int net_runtime_parse(const char *text, struct net_runtime *ret) {
        struct net_runtime rt = {};
        char line[512];
        for (const char *p = text; *p;) {
                size_t n = strcspn(p, "\n");
                if (n >= sizeof(line))
                        return -EINVAL;
                memcpy(line, p, n);
                line[n] = '\0';
                p += n + (p[n] == '\n');
                char *eq = strchr(line, '=');
                if (!eq)
                        continue;
                *eq = '\0';
                const char *k = line, *v = eq + 1;
                long l;
                if (streq(k, "bridge") && net_ifname_is_valid(v))
                        snprintf(rt.bridge, sizeof(rt.bridge), "%s", v);
                else if (streq(k, "datapath"))
                        rt.datapath = streq(v, "netdev") ? NET_DATAPATH_NETDEV :
                                      streq(v, "system") ? NET_DATAPATH_SYSTEM : NET_DATAPATH_AUTO;
                else if (streq(k, "datapath-why"))
                        snprintf(rt.datapath_why, sizeof(rt.datapath_why), "%s", v);
                else if (streq(k, "mtu") && parse_int_range(v, 68, 65535, &l) == 0)
                        rt.mtu = (unsigned) l;
                else if (streq(k, "mtu-why"))
                        snprintf(rt.mtu_why, sizeof(rt.mtu_why), "%s", v);
                else if (streq(k, "nat"))
                        rt.nat = streq(v, "yes");
                else if (streq(k, "uplink-port") && net_ifname_is_valid(v))
                        snprintf(rt.uplink_port, sizeof(rt.uplink_port), "%s", v);
                else if (streq(k, "uplink-orig-mtu") && parse_int_range(v, 68, 65535, &l) == 0)
                        rt.uplink_orig_mtu = (unsigned) l;
                else if (streq(k, "uplink-gateway"))
                        (void) net_ipv4_parse(v, &rt.uplink_gateway);
                else if (streq(k, "uplink-had-ip"))
                        rt.uplink_had_ip = streq(v, "yes");
                else if (streq(k, "ovs-db") && strlen(v) < sizeof(rt.ovs_db))
                        snprintf(rt.ovs_db, sizeof(rt.ovs_db), "%s", v);
        }
        if (!rt.bridge[0])
                return -EINVAL;
        *ret = rt;
        return 0;
}

char *net_runtime_format(const struct net_runtime *rt) {
        char a[NET_IPV4_STRLEN];
        return strdup_printf("bridge=%s\ndatapath=%s\ndatapath-why=%s\nmtu=%u\nmtu-why=%s\nnat=%s\n"
                             "uplink-port=%s\nuplink-orig-mtu=%u\nuplink-gateway=%s\nuplink-had-ip=%s\novs-db=%s\n",
                             rt->bridge, net_datapath_to_string(rt->datapath), rt->datapath_why, rt->mtu, rt->mtu_why,
                             rt->nat ? "yes" : "no", rt->uplink_port, rt->uplink_orig_mtu,
                             rt->uplink_gateway ? net_ipv4_format(rt->uplink_gateway, a) : "",
                             rt->uplink_had_ip ? "yes" : "no", rt->ovs_db);
}

int net_runtime_read(const struct vh_context *ctx, const char *name, struct net_runtime *ret) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        int r = net_run_path(ctx, name, "state", &path);
        if (r < 0)
                return r;
        r = read_full_file(path, NET_RUNTIME_MAX_BYTES, &text, NULL);
        if (r < 0)
                return r;
        return net_runtime_parse(text, ret);
}

int net_runtime_write(const struct vh_context *ctx, const char *name, const struct net_runtime *rt) {
        _cleanup_free_ char *path = NULL, *text = net_runtime_format(rt);
        if (!text)
                return -ENOMEM;
        int r = net_run_dir_make(ctx, name, NULL);
        if (r >= 0)
                r = net_run_path(ctx, name, "state", &path);
        if (r < 0)
                return r;
        return write_file_atomic(path, text, strlen(text), 0600);
}

/* Removes the network's runtime directory (files only vmhost wrote there). */
static void run_dir_remove(const struct vh_context *ctx, const char *name) {
        _cleanup_free_ char *dir = NULL;
        if (net_run_path(ctx, name, NULL, &dir) < 0)
                return;
        static const char *const files[] = { "state", "dnsmasq.conf", "dnsmasq.pid", "dnsmasq.leases", "dnsmasq.log",
                                              "dnsmasq.hosts" };
        for (size_t i = 0; i < ELEMENTSOF(files); i++) {
                _cleanup_free_ char *p = strdup_printf("%s/%s", dir, files[i]);
                if (p)
                        (void) unlink(p);
        }
        _cleanup_free_ char *ports = strdup_printf("%s/ports", dir);
        if (ports)
                (void) rmdir(ports);
        (void) rmdir(dir);
}

/* ------------------------------------------------------------------ host checks */

/* A subnet must not overlap another vmhost network's (which would make both
 * unreachable in part) nor a route the host already has (its LAN, a VPN):
 * the bridge's connected route would hijack that traffic. Routes through
 * the network's own bridge ('own_ifindex') are its own. */
static int check_overlap(const struct vh_context *ctx, struct nl_conn *nl, const struct net_def *def, int own_ifindex,
                         struct vh_error *err) {
        if (def->type == NET_TYPE_USER || !def->has_subnet)
                return 0;
        char s[NET_PREFIX_STRLEN], o[NET_PREFIX_STRLEN];
        net_prefix_format(&def->subnet, s);

        char **names = NULL;
        int n = net_list_names(ctx, &names, err);
        if (n < 0)
                return n;
        for (int i = 0; i < n; i++) {
                if (streq(names[i], def->name))
                        continue;
                struct net_def *other = NULL;
                struct vh_error e = {};
                if (net_load(ctx, names[i], &other, &e) < 0)
                        continue; /* a broken definition is reported when it is used */
                bool clash = other->type != NET_TYPE_USER && other->has_subnet &&
                             net_prefix_overlap(&def->subnet, &other->subnet);
                if (clash)
                        net_prefix_format(&other->subnet, o);
                net_def_free(other);
                if (clash) {
                        vh_error_set(err, -EADDRINUSE, "subnet %s overlaps vmhost network '%s' (%s): choose another subnet",
                                     s, names[i], o);
                        net_strv_free(names);
                        return -EADDRINUSE;
                }
        }
        net_strv_free(names);

        struct nl_route *routes = NULL;
        int nr = nl_route_list(nl, &routes);
        if (nr < 0)
                return vh_error_set(err, nr, "cannot read the host's routes: %s", strerror(-nr));
        int r = 0;
        for (int i = 0; i < nr; i++) {
                const struct nl_route *rt = &routes[i];
                /* Unicast routes of the main table, and the host's own
                 * addresses (local table), such as an AnyIP prefix on lo. */
                bool relevant = (rt->table == RT_TABLE_MAIN && rt->type == RTN_UNICAST) ||
                                (rt->table == RT_TABLE_LOCAL && rt->type == RTN_LOCAL);
                if (!relevant || rt->dst.len == 0)
                        continue;
                if (own_ifindex > 0 && rt->oif == own_ifindex)
                        continue;
                if (!net_prefix_overlap(&def->subnet, &rt->dst))
                        continue;
                struct nl_link l = {};
                if (rt->oif <= 0 || nl_link_get_by_index(nl, rt->oif, &l) < 0)
                        snprintf(l.name, sizeof(l.name), "?");
                r = vh_error_set(err, -EADDRINUSE,
                                 "subnet %s overlaps the host route %s dev %s: choose another subnet", s,
                                 net_prefix_format(&rt->dst, o), l.name);
                break;
        }
        free(routes);
        return r;
}

int net_create(const struct vh_context *ctx, struct net_def *def, struct vh_error *err) {
        int r = net_def_complete(def, err);
        if (r < 0)
                return r;
        r = net_def_validate(def, err);
        if (r < 0)
                return r;
        _cleanup_net_lock_ int lock = net_lock_take(ctx, err);
        if (lock < 0)
                return lock;
        if (net_exists(ctx, def->name))
                return vh_error_set(err, -EEXIST, "network '%s' exists already", def->name);

        if (def->type != NET_TYPE_USER) {
                _cleanup_(nl_closep) struct nl_conn *nl = NULL;
                r = nl_open(&nl);
                if (r < 0)
                        return vh_error_set(err, r, "cannot open netlink: %s", strerror(-r));
                char br[NET_IFNAME_MAX + 1];
                r = net_def_bridge_name(def, br);
                if (r < 0)
                        return vh_error_set(err, r, "cannot derive a bridge name for '%s'", def->name);
                struct nl_link l;
                if (nl_link_get(nl, br, &l) == 0)
                        return vh_error_set(err, -EEXIST,
                                            "interface %s exists already: remove it or choose another name (bridge = ...)", br);
                r = check_overlap(ctx, nl, def, 0, err);
                if (r < 0)
                        return r;
                if (def->nat_interface && nl_link_get(nl, def->nat_interface, &l) < 0)
                        return vh_error_set(err, -ENODEV, "uplink interface %s does not exist (see 'ip link')",
                                            def->nat_interface);
        }
        if (def->type == NET_TYPE_OVS) {
                /* The database in use now becomes part of the definition:
                 * every later command must reach the same switch. */
                const char *db = ovs_db_for(ctx, def);
                if (db && !def->ovs_db) {
                        r = net_def_set(def, "ovs-db", db, err);
                        if (r < 0)
                                return r;
                }
                r = ovs_check_available(ctx, db, err);
                if (r < 0)
                        return r;
        }
        return net_save(ctx, def, err);
}

/* ------------------------------------------------------------------ NAT */

static int ip_forward_marker(const struct vh_context *ctx, char **ret) {
        _cleanup_free_ char *dir = NULL;
        int r = vh_runtime_subdir(ctx, "networks", &dir);
        if (r < 0)
                return r;
        *ret = strdup_printf("%s/ip_forward.enabled-by-vmhost", dir);
        return *ret ? 0 : -ENOMEM;
}

/* IP forwarding on while a NAT network runs; back off afterwards only if
 * it was vmhost that turned it on (a marker file remembers). */
static int ip_forward_update(const struct vh_context *ctx, bool want, struct vh_error *err) {
        static const char *const sysctl = "/proc/sys/net/ipv4/ip_forward";
        _cleanup_free_ char *marker = NULL, *cur = NULL;
        int r = ip_forward_marker(ctx, &marker);
        if (r < 0)
                return r;
        r = read_one_line_file(sysctl, &cur);
        if (r < 0)
                return vh_error_set(err, r, "cannot read %s: %s", sysctl, strerror(-r));
        if (want && streq(cur, "0")) {
                r = write_file_atomic(marker, "1\n", 2, 0600);
                if (r < 0)
                        return vh_error_set(err, r, "cannot write %s: %s", marker, strerror(-r));
                _cleanup_close_ int fd = open(sysctl, O_WRONLY | O_CLOEXEC);
                if (fd < 0 || write(fd, "1\n", 2) != 2) {
                        r = negative_errno();
                        (void) unlink(marker);
                        return vh_error_set(err, r, "cannot enable IP forwarding (%s): %s", sysctl, strerror(-r));
                }
        } else if (!want && file_exists(marker)) {
                _cleanup_close_ int fd = open(sysctl, O_WRONLY | O_CLOEXEC);
                if (fd >= 0)
                        (void) !write(fd, "0\n", 2);
                (void) unlink(marker);
        }
        return 0;
}

/* Regenerates vmhost's nft table from the NAT networks that run, counting
 * 'starting' as running and 'stopping' as stopped. */
static int nat_sync(const struct vh_context *ctx, const char *starting, const char *stopping, struct vh_error *err) {
        char **names = NULL;
        int n = net_list_names(ctx, &names, err);
        if (n < 0)
                return n;
        struct nft_masquerade m[NET_MAX_NETWORKS];
        struct net_def *defs[NET_MAX_NETWORKS];
        size_t nm = 0;
        for (int i = 0; i < n; i++) {
                bool running;
                if (starting && streq(names[i], starting))
                        running = true;
                else if (stopping && streq(names[i], stopping))
                        running = false;
                else {
                        struct net_runtime rt;
                        running = net_runtime_read(ctx, names[i], &rt) >= 0;
                }
                if (!running)
                        continue;
                struct net_def *d = NULL;
                struct vh_error e = {};
                if (net_load(ctx, names[i], &d, &e) < 0)
                        continue;
                if (!d->nat || !d->has_subnet) {
                        net_def_free(d);
                        continue;
                }
                defs[nm] = d;
                m[nm] = (struct nft_masquerade) { .net_name = d->name, .subnet = d->subnet, .out_interface = d->nat_interface };
                nm++;
        }
        net_strv_free(names);

        int r = 0;
        /* Without NAT networks and without a table of ours, leave nftables
         * alone: a host without nft must still run plain bridges. */
        if (nm > 0 || nft_table_exists(ctx) > 0) {
                _cleanup_free_ char *text = nft_ruleset_format(m, nm), *path = NULL;
                _cleanup_free_ char *dir = NULL;
                r = text ? vh_runtime_subdir(ctx, "networks", &dir) : -ENOMEM;
                if (r >= 0) {
                        path = strdup_printf("%s/nft-vmhost.rules", dir);
                        r = path ? nft_apply(ctx, path, text, err) : -ENOMEM;
                }
        }
        if (r >= 0)
                r = ip_forward_update(ctx, nm > 0, err);
        for (size_t i = 0; i < nm; i++)
                net_def_free(defs[i]);
        return r;
}

/* ------------------------------------------------------------------ dnsmasq */

/* The reservations of a network: a host per port with a fixed address;
 * the hosts point into 'ports' and 'names'. */
struct dnsmasq_reservations {
        struct net_port *ports;
        struct dnsmasq_host *hosts;
        char (*names)[VH_NAME_MAX + 8];
        size_t n;
};

static void dnsmasq_reservations_done(struct dnsmasq_reservations *r) {
        free(r->ports);
        free(r->hosts);
        free(r->names);
}

static int dnsmasq_reservations_load(const struct vh_context *ctx, const char *net_name,
                                     struct dnsmasq_reservations *ret, struct vh_error *err) {
        struct dnsmasq_reservations res = {};
        int np = net_ports_read(ctx, net_name, &res.ports, err);
        if (np < 0)
                return np;
        res.hosts = calloc((size_t) np + 1, sizeof(*res.hosts));
        res.names = calloc((size_t) np + 1, sizeof(*res.names));
        if (!res.hosts || !res.names) {
                dnsmasq_reservations_done(&res);
                return -ENOMEM;
        }
        for (int i = 0; i < np; i++) {
                const struct net_port *p = &res.ports[i];
                uint32_t ip;
                if (!p->ip[0] || !p->mac[0] || net_ipv4_parse(p->ip, &ip) < 0)
                        continue;
                dnsmasq_host_name(p->vm, p->index, res.names[res.n], sizeof(res.names[res.n]));
                res.hosts[res.n] = (struct dnsmasq_host) { .mac = p->mac, .ip = ip, .name = res.names[res.n] };
                res.n++;
        }
        *ret = res;
        return 0;
}

int net_dnsmasq_sync(const struct vh_context *ctx, const struct net_def *def, const struct net_runtime *rt,
                     struct vh_error *err) {
        if (!def->dhcp || def->type == NET_TYPE_USER)
                return 0;
        _cleanup_free_ char *conf = NULL, *pid = NULL, *leases = NULL, *log = NULL, *hostsfile = NULL;
        int r = net_run_dir_make(ctx, def->name, NULL);
        if (r >= 0)
                r = net_run_path(ctx, def->name, "dnsmasq.conf", &conf);
        if (r >= 0)
                r = net_run_path(ctx, def->name, "dnsmasq.pid", &pid);
        if (r >= 0)
                r = net_run_path(ctx, def->name, "dnsmasq.leases", &leases);
        if (r >= 0)
                r = net_run_path(ctx, def->name, "dnsmasq.log", &log);
        if (r >= 0)
                r = net_run_path(ctx, def->name, "dnsmasq.hosts", &hostsfile);
        if (r < 0)
                return vh_error_set(err, r, "cannot make the runtime directory of '%s': %s", def->name, strerror(-r));

        struct dnsmasq_reservations res = {};
        r = dnsmasq_reservations_load(ctx, def->name, &res, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *hosts = dnsmasq_hosts_format(res.hosts, res.n), *old_hosts = NULL;
        bool hosts_same = hosts && read_full_file(hostsfile, 1 << 20, &old_hosts, NULL) >= 0 && streq(old_hosts, hosts);
        if (hosts && !hosts_same)
                r = write_file_atomic(hostsfile, hosts, strlen(hosts), 0644);
        /* dnsmasq reads its hosts file as 'nobody', at start and on SIGHUP.
         * Where that user cannot reach it (a runtime directory inside a
         * private one), the reservations go into the config, which dnsmasq
         * reads as root; each change then restarts it: slower, as correct. */
        bool reread = hosts && r >= 0 && dnsmasq_can_reread(hostsfile);
        struct dnsmasq_config c = {
                .net_name = def->name,
                .interface = rt->bridge,
                .subnet = def->subnet,
                .gateway = def->gateway,
                .first = def->dhcp_first,
                .last = def->dhcp_last,
                .mtu = rt->mtu,
                .domain = net_def_domain(def),
                .lease_file = leases,
                .pid_file = pid,
                .log_file = log,
                .hosts_file = reread ? hostsfile : NULL,
                .hosts = res.hosts,
                .n_hosts = res.n,
        };
        _cleanup_free_ char *text = hosts ? dnsmasq_config_format(&c) : NULL, *old = NULL;
        dnsmasq_reservations_done(&res);
        if (!text)
                return -ENOMEM;
        if (r < 0)
                return vh_error_set(err, r, "cannot write %s: %s", hostsfile, strerror(-r));

        bool running = dnsmasq_pid(pid, conf) > 0;
        bool same = read_full_file(conf, 1 << 20, &old, NULL) >= 0 && streq(old, text);
        if (running && same) {
                if (hosts_same || !reread)
                        return 0;
                r = dnsmasq_reload(pid, conf);
                if (r >= 0)
                        return 0;
                if (r != -ESRCH) /* it exited meanwhile: start it again below */
                        return vh_error_set(err, r, "cannot make dnsmasq of '%s' re-read its reservations: %s",
                                            def->name, strerror(-r));
        }
        r = dnsmasq_stop(pid, conf);
        if (r < 0)
                return vh_error_set(err, r, "the old dnsmasq of '%s' did not stop: %s", def->name, strerror(-r));
        r = write_file_atomic(conf, text, strlen(text), 0644);
        if (r < 0)
                return vh_error_set(err, r, "cannot write %s: %s", conf, strerror(-r));
        return dnsmasq_start(ctx, conf, log, err);
}

/* ------------------------------------------------------------------ MTU */

int net_effective_mtu(struct nl_conn *nl, const struct net_def *def, unsigned *ret, char *why, size_t why_len,
                      struct vh_error *err) {
        unsigned mtu = net_def_mtu(def);
        if (why_len)
                why[0] = '\0';
        for (unsigned i = 0; i < def->n_tunnels; i++) {
                const struct net_tunnel *t = &def->tunnels[i];
                char a[NET_IPV4_STRLEN];
                struct nl_route route;
                int r = nl_route_get(nl, t->remote, &route);
                if (r < 0)
                        return vh_error_set(err, r, "no route to tunnel endpoint %s: %s", net_ipv4_format(t->remote, a),
                                            strerror(-r));
                struct nl_link l;
                r = nl_link_get_by_index(nl, route.oif, &l);
                if (r < 0)
                        return vh_error_set(err, r, "cannot read the underlay interface of tunnel %s",
                                            net_ipv4_format(t->remote, a));
                unsigned overhead = net_tunnel_overhead(t);
                if (l.mtu < overhead + NET_MTU_MIN)
                        return vh_error_set(err, -EINVAL, "the underlay %s (MTU %u) is too small for %s tunnels", l.name,
                                            l.mtu, net_tunnel_type_to_string(t->type));
                if (l.mtu - overhead < mtu) {
                        mtu = l.mtu - overhead;
                        snprintf(why, why_len,
                                 "lowered from %u: the underlay %s (MTU %u) carries %u-byte guest packets through %s "
                                 "(%u bytes of encapsulation); raise the underlay MTU to keep %u",
                                 net_def_mtu(def), l.name, l.mtu, mtu, net_tunnel_type_to_string(t->type), overhead,
                                 net_def_mtu(def));
                }
        }
        *ret = mtu;
        return 0;
}

/* ------------------------------------------------------------------ start / stop */

static bool addr_present(struct nl_conn *nl, int ifindex, const struct net_prefix *p) {
        struct nl_addr *addrs = NULL;
        int n = nl_addr_list(nl, ifindex, &addrs);
        bool found = false;
        for (int i = 0; i < n; i++)
                if (addrs[i].prefix.addr == p->addr && addrs[i].prefix.len == p->len)
                        found = true;
        free(addrs);
        return found;
}

/* Waits for a link OVS creates asynchronously (the bridge's local port). */
static int wait_link(struct nl_conn *nl, const char *name, struct nl_link *ret) {
        for (int i = 0;; i++) {
                int r = nl_link_get(nl, name, ret);
                if (r != -ENODEV || i >= 100)
                        return r;
                struct timespec ts = { 0, 50 * 1000 * 1000 };
                nanosleep(&ts, NULL);
        }
}

static int bridge_setup(struct nl_conn *nl, const struct net_def *def, struct net_runtime *rt, struct nl_link *ret_link,
                        struct vh_error *err) {
        struct nl_link l;
        int r = nl_link_get(nl, rt->bridge, &l);
        if (r == -ENODEV) {
                r = nl_bridge_add(nl, rt->bridge, rt->mtu);
                if (r < 0)
                        return vh_error_set(err, r, "cannot create bridge %s: %s", rt->bridge, strerror(-r));
                r = nl_link_get(nl, rt->bridge, &l);
        }
        if (r < 0)
                return vh_error_set(err, r, "cannot read interface %s: %s", rt->bridge, strerror(-r));
        if (!streq(l.kind, "bridge"))
                return vh_error_set(err, -EEXIST, "interface %s exists and is not a bridge (it is %s)", rt->bridge,
                                    l.kind[0] ? l.kind : "a plain device");
        if (l.mtu != rt->mtu) {
                r = nl_link_set_mtu(nl, l.ifindex, rt->mtu);
                if (r < 0)
                        return vh_error_set(err, r, "cannot set MTU %u on %s: %s", rt->mtu, rt->bridge, strerror(-r));
        }
        *ret_link = l;
        return 0;
}

/* The decision itself sits in ovs.c with the rest of Open vSwitch; this is
 * its name in net.h, for 'net show' and for start below. */
enum net_datapath net_datapath_choose(enum net_datapath configured, const char **ret_why) {
        return ovs_choose_datapath(configured, ret_why);
}

static int ovs_setup(const struct vh_context *ctx, struct nl_conn *nl, const struct net_def *def,
                     struct net_runtime *rt, struct nl_link *ret_link, struct vh_error *err) {
        const char *db = net_runtime_ovs_db(ctx, def, rt);
        snprintf(rt->ovs_db, sizeof(rt->ovs_db), "%s", db ? db : "");
        int r = ovs_check_available(ctx, db, err);
        if (r < 0)
                return r;
        const char *why = NULL;
        rt->datapath = net_datapath_choose(def->datapath, &why);
        snprintf(rt->datapath_why, sizeof(rt->datapath_why), "%s", why);

        struct strv argv = {};
        ovs_argv_add_bridge(&argv, db, rt->bridge, rt->datapath, def->name, rt->mtu);
        r = argv.error ? argv.error : ovs_vsctl(ctx, argv.v, NULL, err);
        strv_done(&argv);
        if (r < 0)
                return r;
        r = ovs_check_interface(ctx, db, rt->bridge, err);
        if (r < 0) {
                if (rt->datapath == NET_DATAPATH_SYSTEM) {
                        char msg[VH_ERROR_MAX];
                        snprintf(msg, sizeof(msg), "%s", err ? err->msg : "");
                        vh_error_set(err, r, "%.400s (the kernel datapath failed: try datapath = netdev)", msg);
                }
                return r;
        }
        r = wait_link(nl, rt->bridge, ret_link);
        if (r < 0)
                return vh_error_set(err, r, "Open vSwitch made bridge %s but its interface did not appear: %s", rt->bridge,
                                    strerror(-r));
        return 0;
}

/* Removes what start made; returns the first failure of removing the
 * bridge itself (the rest is best effort, and quiet when already gone). */
static int teardown(const struct vh_context *ctx, struct nl_conn *nl, const struct net_def *def, struct net_runtime *rt,
                    struct vh_error *err) {
        int r = 0;
        _cleanup_free_ char *conf = NULL, *pid = NULL;
        if (net_run_path(ctx, def->name, "dnsmasq.conf",
                         &conf) >= 0 && net_run_path(ctx, def->name, "dnsmasq.pid", &pid) >= 0)
                (void) dnsmasq_stop(pid, conf);
        if (rt->uplink_port[0])
                (void) net_uplink_revert(ctx, nl, def, rt);
        for (unsigned i = 0; i < def->n_tunnels; i++)
                (void) net_tunnel_teardown(ctx, nl, def, rt, &def->tunnels[i]);
        if (def->type == NET_TYPE_OVS) {
                struct strv argv = {};
                ovs_argv_del_bridge(&argv, net_runtime_ovs_db(ctx, def, rt), rt->bridge);
                r = argv.error ? argv.error : ovs_vsctl(ctx, argv.v, NULL, err);
                strv_done(&argv);
        } else {
                struct nl_link l;
                /* Only a bridge: never delete some other device that happens
                 * to carry the name. */
                if (nl_link_get(nl, rt->bridge, &l) == 0 && streq(l.kind, "bridge")) {
                        r = nl_link_del(nl, l.ifindex);
                        if (r < 0)
                                vh_error_set(err, r, "cannot remove bridge %s: %s", rt->bridge, strerror(-r));
                }
        }
        return r;
}

int net_start_locked(const struct vh_context *ctx, const struct net_def *def, struct net_runtime *ret_rt,
                     struct vh_error *err) {
        if (def->type == NET_TYPE_USER)
                return vh_error_set(err, -EOPNOTSUPP, "network '%s' is user-mode: it runs inside each VM's QEMU", def->name);
        _cleanup_(nl_closep) struct nl_conn *nl = NULL;
        int r = nl_open(&nl);
        if (r < 0)
                return vh_error_set(err, r, "cannot open netlink: %s", strerror(-r));

        struct net_runtime old;
        bool was_running = net_runtime_read(ctx, def->name, &old) >= 0;
        struct net_runtime rt = {};
        r = net_def_bridge_name(def, rt.bridge);
        if (r < 0)
                return vh_error_set(err, r, "cannot derive a bridge name for '%s'", def->name);
        if (was_running) {
                /* Keep what the earlier start did (the uplink it moved). */
                rt = old;
        }
        rt.nat = def->nat;

        struct nl_link br;
        int own = nl_link_get(nl, rt.bridge, &br) == 0 ? br.ifindex : 0;
        r = check_overlap(ctx, nl, def, own, err);
        if (r < 0)
                return r;
        r = net_effective_mtu(nl, def, &rt.mtu, rt.mtu_why, sizeof(rt.mtu_why), err);
        if (r < 0)
                return r;

        /* Recorded before anything is made, so that 'stop' can clean up
         * after a start that died half-way. */
        r = net_runtime_write(ctx, def->name, &rt);
        if (r < 0)
                return vh_error_set(err, r, "cannot record the state of '%s': %s", def->name, strerror(-r));

        if (def->type == NET_TYPE_OVS)
                r = ovs_setup(ctx, nl, def, &rt, &br, err);
        else
                r = bridge_setup(nl, def, &rt, &br, err);
        if (r < 0)
                goto fail;
        (void) net_runtime_write(ctx, def->name, &rt);

        if (def->gateway) {
                struct net_prefix gw = { .addr = def->gateway, .len = def->subnet.len };
                if (!addr_present(nl, br.ifindex, &gw)) {
                        r = nl_addr_add(nl, br.ifindex, &gw);
                        if (r < 0 && r != -EEXIST) {
                                char a[NET_PREFIX_STRLEN];
                                vh_error_set(err, r, "cannot add gateway %s to %s: %s", net_prefix_format(&gw, a), rt.bridge,
                                             strerror(-r));
                                goto fail;
                        }
                }
        }
        r = nl_link_set_up(nl, br.ifindex, true);
        if (r < 0) {
                vh_error_set(err, r, "cannot bring %s up: %s", rt.bridge, strerror(-r));
                goto fail;
        }
        for (unsigned i = 0; i < def->n_tunnels; i++) {
                r = net_tunnel_setup(ctx, nl, def, &rt, &def->tunnels[i], err);
                if (r < 0)
                        goto fail;
        }
        if (def->uplink_port && !rt.uplink_port[0]) {
                char **plan = NULL;
                r = net_uplink_apply(ctx, nl, def, &rt, &plan, false, err);
                net_strv_free(plan);
                if (r < 0)
                        goto fail;
                (void) net_runtime_write(ctx, def->name, &rt);
        }
        r = net_dnsmasq_sync(ctx, def, &rt, err);
        if (r < 0)
                goto fail;
        if (def->nat) {
                r = nat_sync(ctx, def->name, NULL, err);
                if (r < 0)
                        goto fail;
        }
        r = net_runtime_write(ctx, def->name, &rt);
        if (r < 0) {
                vh_error_set(err, r, "cannot record the state of '%s': %s", def->name, strerror(-r));
                goto fail;
        }
        if (ret_rt)
                *ret_rt = rt;
        return 0;

fail:
        if (!was_running) {
                (void) teardown(ctx, nl, def, &rt, NULL);
                if (def->nat)
                        (void) nat_sync(ctx, NULL, def->name, NULL);
                run_dir_remove(ctx, def->name);
        }
        return r;
}

static void status_from_runtime(const struct net_runtime *rt, int nports, struct net_status *ret) {
        snprintf(ret->bridge, sizeof(ret->bridge), "%s", rt->bridge);
        ret->datapath = rt->datapath;
        snprintf(ret->datapath_why, sizeof(ret->datapath_why), "%s", rt->datapath_why);
        ret->mtu = rt->mtu;
        snprintf(ret->mtu_why, sizeof(ret->mtu_why), "%s", rt->mtu_why);
        ret->n_ports = nports > 0 ? (unsigned) nports : 0;
}

int net_start(const struct vh_context *ctx, const char *name, struct net_status *ret, struct vh_error *err) {
        _cleanup_net_lock_ int lock = net_lock_take(ctx, err);
        if (lock < 0)
                return lock;
        _cleanup_(net_def_freep) struct net_def *def = NULL;
        int r = net_load(ctx, name, &def, err);
        if (r < 0)
                return r;
        struct net_runtime rt;
        r = net_start_locked(ctx, def, &rt, err);
        if (r < 0)
                return r;
        if (ret) {
                *ret = (struct net_status) { .running = true };
                status_from_runtime(&rt, 0, ret);
        }
        return 0;
}

static int stop_locked(const struct vh_context *ctx, const struct net_def *def, struct vh_error *err) {
        if (def->type == NET_TYPE_USER)
                return 0;
        char **vms = NULL;
        int n = net_in_use_by(ctx, def->name, &vms, err);
        if (n < 0)
                return n;
        if (n > 0) {
                _cleanup_free_ char *list = strv_join(vms, ", ");
                net_strv_free(vms);
                return vh_error_set(err, -EBUSY, "network '%s' is in use by %s: stop %s first", def->name,
                                    list ? list : "VMs", n == 1 ? "it" : "them");
        }
        net_strv_free(vms);

        struct net_runtime rt;
        if (net_runtime_read(ctx, def->name, &rt) < 0) {
                /* Not recorded as running: still remove what a crashed start
                 * may have left, by name. */
                rt = (struct net_runtime) { .nat = def->nat };
                if (net_def_bridge_name(def, rt.bridge) < 0)
                        return 0;
        }
        _cleanup_(nl_closep) struct nl_conn *nl = NULL;
        int r = nl_open(&nl);
        if (r < 0)
                return vh_error_set(err, r, "cannot open netlink: %s", strerror(-r));
        if (def->type == NET_TYPE_OVS && rt.datapath == NET_DATAPATH_AUTO)
                rt.datapath = ovs_choose_datapath(def->datapath, NULL);
        r = teardown(ctx, nl, def, &rt, err);
        if (r < 0) {
                /* Keep the record: 'stop' again once the cause is fixed. */
                char msg[VH_ERROR_MAX];
                snprintf(msg, sizeof(msg), "%s", err ? err->msg : "");
                return vh_error_set(err, r, "%.400s (network '%s' is still recorded as running)", msg, def->name);
        }
        if (def->nat || rt.nat)
                r = nat_sync(ctx, NULL, def->name, err);
        run_dir_remove(ctx, def->name);
        return r;
}

int net_stop(const struct vh_context *ctx, const char *name, struct vh_error *err) {
        _cleanup_net_lock_ int lock = net_lock_take(ctx, err);
        if (lock < 0)
                return lock;
        _cleanup_(net_def_freep) struct net_def *def = NULL;
        int r = net_load(ctx, name, &def, err);
        if (r < 0)
                return r;
        return stop_locked(ctx, def, err);
}

int net_delete(const struct vh_context *ctx, const char *name, struct vh_error *err) {
        _cleanup_net_lock_ int lock = net_lock_take(ctx, err);
        if (lock < 0)
                return lock;
        _cleanup_(net_def_freep) struct net_def *def = NULL;
        int r = net_load(ctx, name, &def, err);
        if (r < 0)
                return r;
        r = stop_locked(ctx, def, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *path = NULL;
        r = net_conf_path(ctx, name, &path);
        if (r >= 0 && unlink(path) < 0)
                r = negative_errno();
        if (r < 0)
                return vh_error_set(err, r, "cannot remove the definition of '%s': %s", name, strerror(-r));
        return 0;
}

int net_get_status(const struct vh_context *ctx, const char *name, struct net_status *ret, struct vh_error *err) {
        _cleanup_(net_def_freep) struct net_def *def = NULL;
        int r = net_load(ctx, name, &def, err);
        if (r < 0)
                return r;
        struct net_status st = { .mtu = net_def_mtu(def) };
        if (def->type != NET_TYPE_USER)
                (void) net_def_bridge_name(def, st.bridge);
        struct net_runtime rt;
        if (def->type != NET_TYPE_USER && net_runtime_read(ctx, name, &rt) >= 0) {
                struct net_port *ports = NULL;
                int np = net_ports_read(ctx, name, &ports, err);
                if (np < 0)
                        return np;
                free(ports);
                st.running = true;
                status_from_runtime(&rt, np, &st);
                _cleanup_(nl_closep) struct nl_conn *nl = NULL;
                struct nl_link l;
                if (nl_open(&nl) >= 0 && nl_link_get(nl, rt.bridge, &l) == -ENODEV)
                        st.degraded = true;
                _cleanup_free_ char *conf = NULL, *pid = NULL;
                if (net_run_path(ctx, name, "dnsmasq.conf",
                                 &conf) >= 0 && net_run_path(ctx, name, "dnsmasq.pid", &pid) >= 0)
                        st.dnsmasq_pid = dnsmasq_pid(pid, conf);
        }
        *ret = st;
        return 0;
}
