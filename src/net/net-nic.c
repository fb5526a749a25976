/* net/net-nic.c: VM NICs on vmhost networks: a tap per NIC, created on
 * attach and removed on detach, with a port record under
 * RUN/networks/NAME/ports/VM.INDEX so that detach, 'in use' checks and the
 * DHCP reservations all work from what was actually attached, also after
 * the VM's QEMU crashed. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "base/strv.h"
#include "net/net-internal.h"
#include "net/ovs.h"
#include "net/tap.h"

#define NET_PORT_MAX_BYTES 1024

/* "52:54:00:12:34:56", unicast; written back in lower case. */
static bool mac_normalize(const char *s, char ret[18]) {
        if (strlen(s) != 17)
                return false;
        for (int i = 0; i < 17; i++) {
                if (i % 3 == 2) {
                        if (s[i] != ':')
                                return false;
                } else if (!isxdigit((unsigned char) s[i]))
                        return false;
                ret[i] = (char) tolower((unsigned char) s[i]);
        }
        ret[17] = '\0';
        unsigned first = (unsigned) strtoul(ret, NULL, 16);
        return (first & 1) == 0; /* a multicast MAC cannot be a NIC's */
}

static bool trunks_valid(const char *s) {
        if (isempty(s) || strlen(s) > 63)
                return false;
        const char *p = s;
        for (;;) {
                if (!isdigit((unsigned char) *p))
                        return false;
                unsigned v = 0;
                while (isdigit((unsigned char) *p)) {
                        v = v * 10 + (unsigned) (*p++ - '0');
                        if (v > 4095)
                                return false;
                }
                if (*p == '\0')
                        return true;
                if (*p++ != ',')
                        return false;
        }
}

static int port_path(const struct vh_context *ctx, const char *net, const char *vm, unsigned index, char **ret) {
        char file[VH_NAME_MAX + 16];
        snprintf(file, sizeof(file), "ports/%s.%u", vm, index);
        return net_run_path(ctx, net, file, ret);
}

static int port_parse(const char *text, struct net_port *ret) {
        struct net_port p = { .vlan = -1 };
        char line[256];
        for (const char *s = text; *s;) {
                size_t n = strcspn(s, "\n");
                if (n >= sizeof(line))
                        return -EINVAL;
                memcpy(line, s, n);
                line[n] = '\0';
                s += n + (s[n] == '\n');
                char *eq = strchr(line, '=');
                if (!eq)
                        continue;
                *eq = '\0';
                const char *k = line, *v = eq + 1;
                long l;
                if (streq(k, "vm") && name_is_valid(v))
                        snprintf(p.vm, sizeof(p.vm), "%s", v);
                else if (streq(k, "index") && parse_int_range(v, 0, 99, &l) == 0)
                        p.index = (unsigned) l;
                else if (streq(k, "tap") && net_ifname_is_valid(v))
                        snprintf(p.tap, sizeof(p.tap), "%s", v);
                else if (streq(k, "mac"))
                        (void) (mac_normalize(v, p.mac) || (p.mac[0] = '\0'));
                else if (streq(k, "ip")) {
                        uint32_t a;
                        if (net_ipv4_parse(v, &a) == 0)
                                snprintf(p.ip, sizeof(p.ip), "%s", v);
                } else if (streq(k, "vlan") && parse_int_range(v, 0, 4095, &l) == 0)
                        p.vlan = (int) l;
                else if (streq(k, "trunks") && trunks_valid(v))
                        snprintf(p.trunks, sizeof(p.trunks), "%s", v);
        }
        if (!p.vm[0] || !p.tap[0])
                return -EINVAL;
        *ret = p;
        return 0;
}

static int port_write(const struct vh_context *ctx, const char *net, const struct net_port *p) {
        int r = net_run_dir_make(ctx, net, "ports");
        if (r < 0)
                return r;
        _cleanup_free_ char *path = NULL;
        r = port_path(ctx, net, p->vm, p->index, &path);
        if (r < 0)
                return r;
        char vlan[12] = ""; /* empty: untagged */
        if (p->vlan >= 0)
                snprintf(vlan, sizeof(vlan), "%d", p->vlan);
        _cleanup_free_ char *text = strdup_printf("vm=%s\nindex=%u\ntap=%s\nmac=%s\nip=%s\nvlan=%s\ntrunks=%s\n", p->vm,
                                                  p->index, p->tap, p->mac, p->ip, vlan, p->trunks);
        if (!text)
                return -ENOMEM;
        return write_file_atomic(path, text, strlen(text), 0600);
}

static int port_read(const struct vh_context *ctx, const char *net, const char *vm, unsigned index,
                     struct net_port *ret) {
        _cleanup_free_ char *path = NULL, *text = NULL;
        int r = port_path(ctx, net, vm, index, &path);
        if (r < 0)
                return r;
        r = read_full_file(path, NET_PORT_MAX_BYTES, &text, NULL);
        if (r < 0)
                return r;
        return port_parse(text, ret);
}

static void port_remove(const struct vh_context *ctx, const char *net, const char *vm, unsigned index) {
        _cleanup_free_ char *path = NULL;
        if (port_path(ctx, net, vm, index, &path) >= 0)
                (void) unlink(path);
}

/* write_file_atomic()'s temporary: PATH.tmp.PID. */
static bool is_unfinished_write(const char *file) {
        const char *t = strstr(file, ".tmp.");
        long pid;
        return t && parse_int_range(t + 5, 1, INT_MAX, &pid) == 0;
}

int net_ports_read(const struct vh_context *ctx, const char *name, struct net_port **ret, struct vh_error *err) {
        _cleanup_free_ char *dir = NULL;
        int r = net_run_path(ctx, name, "ports", &dir);
        if (r < 0)
                return vh_error_set(err, r, "cannot find the ports of network '%s': %s", name, strerror(-r));
        struct net_port *v = NULL;
        size_t n = 0;
        DIR *d = opendir(dir);
        if (!d) {
                if (errno != ENOENT)
                        return vh_error_set(err, negative_errno(), "cannot read the ports of network '%s' (%s): %m", name,
                                            dir);
                *ret = calloc(1, sizeof(struct net_port));
                return *ret ? 0 : -ENOMEM;
        }
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.' || is_unfinished_write(de->d_name))
                        continue;
                if (n >= NET_MAX_PORTS) {
                        r = vh_error_set(err, -E2BIG, "network '%s' has more than %d port records in %s", name,
                                         NET_MAX_PORTS, dir);
                        break;
                }
                _cleanup_free_ char *path = strdup_printf("%s/%s", dir, de->d_name), *text = NULL;
                if (!path) {
                        r = -ENOMEM;
                        break;
                }
                struct net_port p;
                r = read_full_file(path, NET_PORT_MAX_BYTES, &text, NULL);
                if (r < 0) {
                        r = vh_error_set(err, r, "cannot read port record %s of network '%s': %s", path, name,
                                         strerror(-r));
                        break;
                }
                r = port_parse(text, &p);
                if (r < 0) {
                        r = vh_error_set(err, r, "port record %s of network '%s' is corrupt (no vm= or tap=)", path, name);
                        break;
                }
                struct net_port *nv = realloc(v, (n + 1) * sizeof(*v));
                if (!nv) {
                        r = -ENOMEM;
                        break;
                }
                v = nv;
                v[n++] = p;
        }
        closedir(d);
        if (r < 0) {
                free(v);
                return r;
        }
        if (!v && !(v = calloc(1, sizeof(*v))))
                return -ENOMEM;
        *ret = v;
        return (int) n;
}

int net_list_ports(const struct vh_context *ctx, const char *net_name, struct net_port **ret, struct vh_error *err) {
        if (!name_is_valid(net_name))
                return vh_error_set(err, -EINVAL, "invalid network name '%s'", net_name);
        return net_ports_read(ctx, net_name, ret, err);
}

int net_in_use_by(const struct vh_context *ctx, const char *net_name, char ***ret_vms, struct vh_error *err) {
        struct net_port *ports = NULL;
        int n = net_list_ports(ctx, net_name, &ports, err);
        if (n < 0)
                return n;
        struct strv vms = {};
        for (int i = 0; i < n; i++) {
                bool dup = false;
                for (size_t j = 0; j < vms.n; j++)
                        if (streq(vms.v[j], ports[i].vm))
                                dup = true;
                if (!dup)
                        strv_add(&vms, ports[i].vm);
        }
        free(ports);
        if (vms.error) {
                strv_done(&vms);
                return -ENOMEM;
        }
        int count = (int) vms.n;
        if (ret_vms) {
                if (!vms.v && !(vms.v = calloc(1, sizeof(char *))))
                        return -ENOMEM;
                *ret_vms = vms.v;
        } else
                strv_done(&vms);
        return count;
}

/* Removes a tap and its switch port; quiet when they are already gone.
 * With 'strict' (the switch is running), a switch that refuses to drop the
 * port fails the call before the tap is touched, so that nothing is half
 * removed; otherwise that is best effort (the switch may be gone). */
static int tap_remove(const struct vh_context *ctx, struct nl_conn *nl, const struct net_def *def,
                      const struct net_runtime *rt, const char *bridge, const char *tap, bool strict,
                      struct vh_error *err) {
        if (def->type == NET_TYPE_OVS) {
                struct strv argv = {};
                ovs_argv_del_port(&argv, net_runtime_ovs_db(ctx, def, rt), bridge, tap);
                int r = argv.error ? argv.error : ovs_vsctl(ctx, argv.v, NULL, strict ? err : NULL);
                strv_done(&argv);
                if (r < 0 && strict)
                        return r;
        }
        struct nl_link l;
        /* Only a tun/tap of that name: never some other device. */
        if (nl_link_get(nl, tap, &l) == 0 && streq(l.kind, "tun"))
                (void) nl_link_del(nl, l.ifindex);
        return 0;
}

static int detach_locked(const struct vh_context *ctx, struct nl_conn *nl, const struct net_def *def, const char *vm,
                         unsigned index, struct vh_error *err) {
        struct net_port p;
        char tap[NET_IFNAME_MAX + 1];
        bool had_record = port_read(ctx, def->name, vm, index, &p) >= 0;
        if (had_record)
                snprintf(tap, sizeof(tap), "%s", p.tap);
        else if (net_tap_name(vm, index, tap) < 0)
                return 0;
        char bridge[NET_IFNAME_MAX + 1] = "";
        struct net_runtime rt;
        bool running = net_runtime_read(ctx, def->name, &rt) >= 0;
        if (running)
                snprintf(bridge, sizeof(bridge), "%s", rt.bridge);
        else
                (void) net_def_bridge_name(def, bridge);
        int r = tap_remove(ctx, nl, def, running ? &rt : NULL, bridge, tap, running, err);
        if (r < 0) {
                char msg[VH_ERROR_MAX];
                snprintf(msg, sizeof(msg), "%s", vh_error_message(err, r));
                return vh_error_set(err, r, "%.400s (NIC %u of VM %s stays attached to '%s': nothing was removed)", msg,
                                    index, vm, def->name);
        }
        port_remove(ctx, def->name, vm, index);
        /* The NIC is gone whatever dnsmasq does next: a failure here is
         * reported, and the detach stays done (never half a port). */
        if (had_record && p.ip[0] && def->dhcp && running) {
                struct vh_error e = {};
                r = net_dnsmasq_sync(ctx, def, &rt, &e);
                if (r < 0)
                        return vh_error_set(err, r,
                                            "NIC %u of VM %s is detached from '%s' (tap, port and reservation removed), "
                                            "but its DHCP server was not updated: %.300s; run 'vmhost net start %s'",
                                            index, vm, def->name, vh_error_message(&e, r), def->name);
        }
        return 0;
}

int net_nic_detach(const struct vh_context *ctx, const char *net_name, const char *vm_name, unsigned index,
                   struct vh_error *err) {
        if (!name_is_valid(vm_name))
                return vh_error_set(err, -EINVAL, "invalid VM name '%s'", vm_name);
        _cleanup_net_lock_ int lock = net_lock_take(ctx, err);
        if (lock < 0)
                return lock;
        _cleanup_(net_def_freep) struct net_def *def = NULL;
        struct vh_error e = {};
        int r = net_load(ctx, net_name, &def, &e);
        if (r == -ENOENT)
                return 0; /* the network is gone, and with it anything attached */
        if (r < 0)
                return vh_error_set(err, r, "%s", e.msg);
        if (def->type == NET_TYPE_USER)
                return 0;
        _cleanup_(nl_closep) struct nl_conn *nl = NULL;
        r = nl_open(&nl);
        if (r < 0)
                return vh_error_set(err, r, "cannot open netlink: %s", strerror(-r));
        return detach_locked(ctx, nl, def, vm_name, index, err);
}

int net_nic_detach_all(const struct vh_context *ctx, const char *vm_name, struct vh_error *err) {
        if (!name_is_valid(vm_name))
                return vh_error_set(err, -EINVAL, "invalid VM name '%s'", vm_name);
        _cleanup_net_lock_ int lock = net_lock_take(ctx, err);
        if (lock < 0)
                return lock;
        char **names = NULL;
        int n = net_list_names(ctx, &names, err);
        if (n < 0)
                return n;
        _cleanup_(nl_closep) struct nl_conn *nl = NULL;
        int r = nl_open(&nl);
        if (r < 0) {
                net_strv_free(names);
                return vh_error_set(err, r, "cannot open netlink: %s", strerror(-r));
        }
        /* Every NIC is detached even when one step fails; the first failure
         * is returned. */
        int count = 0, first = 0;
        for (int i = 0; i < n; i++) {
                struct net_port *ports = NULL;
                struct vh_error e = {};
                int np = net_ports_read(ctx, names[i], &ports, &e);
                if (np < 0) {
                        /* Which NICs of this VM the network holds is unknown:
                         * the others are still detached, and this is said. */
                        if (first == 0)
                                first = vh_error_set(err, np, "%s", vh_error_message(&e, np));
                        continue;
                }
                struct net_def *def = NULL;
                if (np > 0 && net_load(ctx, names[i], &def, &e) >= 0)
                        for (int k = 0; k < np; k++)
                                if (streq(ports[k].vm, vm_name)) {
                                        r = detach_locked(ctx, nl, def, vm_name, ports[k].index,
                                                          first < 0 ? NULL : err);
                                        count++;
                                        if (r < 0 && first == 0)
                                                first = r;
                                }
                net_def_free(def);
                free(ports);
        }
        net_strv_free(names);
        return first < 0 ? first : count;
}

int net_nic_attach(const struct vh_context *ctx, const char *net_name, const struct net_nic_request *req,
                   struct net_nic_attachment *ret, struct vh_error *err) {
        char mac[18] = "", ipbuf[NET_IPV4_STRLEN] = "";
        uint32_t ip = 0;
        if (!req || !name_is_valid(req->vm_name))
                return vh_error_set(err, -EINVAL, "invalid VM name '%s'", req && req->vm_name ? req->vm_name : "");
        if (req->index > 99)
                return vh_error_set(err, -EINVAL, "NIC index %u out of range 0..99", req->index);
        if (req->mac && !mac_normalize(req->mac, mac))
                return vh_error_set(err, -EINVAL, "invalid MAC address '%s': use 6 hex pairs like 52:54:00:12:34:56", req->mac);
        if (req->vlan < -1 || req->vlan > 4095)
                return vh_error_set(err, -EINVAL, "VLAN %d out of range 0..4095", req->vlan);
        if (req->trunks && !trunks_valid(req->trunks))
                return vh_error_set(err, -EINVAL, "trunks must be VLAN numbers 0..4095 separated by commas, not '%s'",
                                    req->trunks);
        if (req->ip) {
                if (net_ipv4_parse(req->ip, &ip) < 0)
                        return vh_error_set(err, -EINVAL, "invalid IPv4 address '%s'", req->ip);
                if (!mac[0])
                        return vh_error_set(err, -EINVAL, "a fixed address (ip=%s) needs the NIC's MAC address", req->ip);
                net_ipv4_format(ip, ipbuf);
        }

        _cleanup_net_lock_ int lock = net_lock_take(ctx, err);
        if (lock < 0)
                return lock;
        _cleanup_(net_def_freep) struct net_def *def = NULL;
        int r = net_load(ctx, net_name, &def, err);
        if (r < 0)
                return r;

        struct net_nic_attachment att = { .type = def->type, .mtu = net_def_mtu(def) };
        if (def->type == NET_TYPE_USER) {
                if (req->vlan >= 0 || req->trunks || req->ip)
                        return vh_error_set(err, -EINVAL,
                                            "network '%s' is user-mode: VLANs and fixed addresses need a bridge or ovs network",
                                            def->name);
                net_prefix_format(&def->subnet, att.user_subnet);
                *ret = att;
                return 0;
        }
        if ((req->vlan >= 0 || req->trunks) && def->type != NET_TYPE_OVS)
                return vh_error_set(err, -EINVAL, "VLAN tags need an Open vSwitch network; '%s' is a Linux bridge",
                                    def->name);
        if (ip) {
                if (!def->has_subnet || !net_prefix_is_host(&def->subnet, ip) || ip == def->gateway)
                        return vh_error_set(err, -EINVAL, "address %s is not a free host address of network '%s'%s", ipbuf,
                                            def->name, ip == def->gateway ? " (it is the gateway)" : "");
                struct net_port *ports = NULL;
                /* An unreadable record might hold this very address. */
                int np = net_ports_read(ctx, def->name, &ports, err);
                if (np < 0)
                        return np;
                for (int i = 0; i < np; i++)
                        if (streq(ports[i].ip, ipbuf) &&
                            !(streq(ports[i].vm, req->vm_name) && ports[i].index == req->index)) {
                                vh_error_set(err, -EADDRINUSE, "address %s is reserved for VM %s on network '%s'", ipbuf,
                                             ports[i].vm, def->name);
                                free(ports);
                                return -EADDRINUSE;
                        }
                free(ports);
        }

        _cleanup_(nl_closep) struct nl_conn *nl = NULL;
        r = nl_open(&nl);
        if (r < 0)
                return vh_error_set(err, r, "cannot open netlink: %s", strerror(-r));

        struct net_runtime rt;
        if (net_runtime_read(ctx, def->name, &rt) < 0) {
                r = net_start_locked(ctx, def, &rt, err);
                if (r < 0)
                        return r;
        }
        /* A NIC still attached from an earlier run (QEMU crashed, nobody
         * detached): replace it. */
        r = detach_locked(ctx, nl, def, req->vm_name, req->index, err);
        if (r < 0)
                return r;

        struct net_port p = { .index = req->index, .vlan = req->vlan };
        snprintf(p.vm, sizeof(p.vm), "%s", req->vm_name);
        snprintf(p.mac, sizeof(p.mac), "%s", mac);
        snprintf(p.ip, sizeof(p.ip), "%s", ipbuf);
        if (req->trunks)
                snprintf(p.trunks, sizeof(p.trunks), "%s", req->trunks);
        r = net_tap_name(req->vm_name, req->index, p.tap);
        if (r < 0)
                return vh_error_set(err, r, "cannot derive a tap name for %s NIC %u", req->vm_name, req->index);

        struct nl_link br, tl;
        r = nl_link_get(nl, rt.bridge, &br);
        if (r < 0)
                return vh_error_set(err, r, "network '%s' is recorded as running but its bridge %s is missing: "
                                            "run 'vmhost net stop %s' and start it again",
                                    def->name, rt.bridge, def->name);
        r = nl_link_get(nl, p.tap, &tl);
        if (r == 0)
                return vh_error_set(err, -EEXIST, "interface %s exists and is not a vmhost tap of this network", p.tap);
        r = net_tap_create(p.tap);
        if (r < 0)
                return vh_error_set(err, r, "cannot create tap %s: %s", p.tap, strerror(-r));
        /* From here on a failure removes the tap again. */
        r = nl_link_get(nl, p.tap, &tl);
        if (r >= 0 && tl.mtu != rt.mtu)
                r = nl_link_set_mtu(nl, tl.ifindex, rt.mtu);
        if (r >= 0 && def->type == NET_TYPE_BRIDGE)
                r = nl_link_set_master(nl, tl.ifindex, br.ifindex);
        if (r >= 0)
                r = nl_link_set_up(nl, tl.ifindex, true);
        if (r < 0) {
                vh_error_set(err, r, "cannot set up tap %s on %s: %s", p.tap, rt.bridge, strerror(-r));
                goto fail;
        }
        if (def->type == NET_TYPE_OVS) {
                struct strv argv = {};
                const char *db = net_runtime_ovs_db(ctx, def, &rt);
                ovs_argv_add_vm_port(&argv, db, rt.bridge, p.tap, req->vlan, req->trunks, def->name, req->vm_name);
                r = argv.error ? argv.error : ovs_vsctl(ctx, argv.v, NULL, err);
                strv_done(&argv);
                if (r >= 0)
                        r = ovs_check_interface(ctx, db, p.tap, err);
                if (r < 0)
                        goto fail;
        }
        r = port_write(ctx, def->name, &p);
        if (r < 0) {
                vh_error_set(err, r, "cannot record port %s: %s", p.tap, strerror(-r));
                goto fail;
        }
        if (ip && def->dhcp) {
                r = net_dnsmasq_sync(ctx, def, &rt, err);
                if (r < 0) {
                        port_remove(ctx, def->name, p.vm, p.index);
                        /* Takes the reservation out of dnsmasq's hosts file
                         * again (written before dnsmasq failed). */
                        (void) net_dnsmasq_sync(ctx, def, &rt, NULL);
                        goto fail;
                }
        }
        /* dnsmasq and the gateway sit on the switch's own port, which carries
         * the untagged segment only: a NIC in a tagged VLAN is cut off from
         * both, which the user would only notice as a guest without an address. */
        if (def->dhcp && req->vlan >= 1)
                snprintf(att.warning, sizeof(att.warning),
                         "NIC %u of %s is in VLAN %d, but the DHCP server and gateway of '%s' serve only the untagged "
                         "segment: the guest gets no address there%s",
                         req->index, req->vm_name, req->vlan, def->name, ip ? " (its reservation cannot be served)" : "");
        snprintf(att.tap, sizeof(att.tap), "%s", p.tap);
        att.mtu = rt.mtu;
        att.disable_offload = def->type == NET_TYPE_OVS && rt.datapath == NET_DATAPATH_NETDEV;
        *ret = att;
        return 0;

fail:
        /* Rolled back: no tap, switch port, port record or reservation is
         * left, and the error says so. */
        (void) tap_remove(ctx, nl, def, &rt, rt.bridge, p.tap, false, NULL);
        if (err) {
                char msg[VH_ERROR_MAX];
                snprintf(msg, sizeof(msg), "%s", vh_error_message(err, r));
                vh_error_set(err, r, "%.400s (attach of %s NIC %u rolled back: no tap or reservation left)", msg,
                             req->vm_name, req->index);
        }
        return r;
}
