/* tests/unit/test-net.c: the pure parts of the network library: IPv4
 * prefixes, network definitions and their errors, derived interface names,
 * and the text vmhost hands to nft, dnsmasq and ovs-vsctl (golden). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "base/strv.h"
#include "net/dnsmasq.h"
#include "net/net-addr.h"
#include "net/net-def.h"
#include "net/net-internal.h"
#include "net/net-lease.h"
#include "net/nft.h"
#include "net/ovs.h"
#include "test.h"

TEST(net_ipv4_parse_strict) {
        uint32_t a;
        CHECK(net_ipv4_parse("10.1.2.3", &a) == 0);
        CHECK_EQ_U64(a, 0x0a010203);
        CHECK(net_ipv4_parse("255.255.255.255", &a) == 0);
        CHECK_EQ_U64(a, 0xffffffff);
        static const char *const bad[] = { "", "10.1.2", "10.1.2.3.4", "256.1.1.1", "10.1.2.3 ", " 10.1.2.3",
                                           "010.1.2.3", "10..2.3", "a.b.c.d", "1.2.3.-4", "1.2.3.4/24", "1234.1.1.1" };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                if (net_ipv4_parse(bad[i], &a) == 0)
                        test_fail(__FILE__, __LINE__, "accepted '%s'", bad[i]);
        char buf[NET_IPV4_STRLEN];
        CHECK_STREQ(net_ipv4_format(0xc0a80101, buf), "192.168.1.1");
}

TEST(net_prefix_parse_and_overlap) {
        struct net_prefix p, q;
        char buf[NET_PREFIX_STRLEN];
        CHECK(net_prefix_parse("10.10.0.0/24", false, &p) == 0);
        CHECK_EQ_INT(p.len, 24);
        CHECK_STREQ(net_prefix_format(&p, buf), "10.10.0.0/24");
        CHECK_EQ_INT(net_prefix_parse("10.10.0.1/24", false, &p), -EDOM);
        CHECK(net_prefix_parse("10.10.0.1/24", true, &p) == 0);
        CHECK(net_prefix_parse("10.10.0.0", false, &p) < 0);
        CHECK(net_prefix_parse("10.10.0.0/33", false, &p) < 0);
        CHECK(net_prefix_parse("10.10.0.0/", false, &p) < 0);
        CHECK(net_prefix_parse("10.10.0.0/2x", false, &p) < 0);

        CHECK(net_prefix_parse("10.10.0.0/16", false, &p) == 0);
        CHECK(net_prefix_parse("10.10.5.0/24", false, &q) == 0);
        CHECK(net_prefix_overlap(&p, &q));
        CHECK(net_prefix_overlap(&q, &p));
        CHECK(net_prefix_parse("10.11.0.0/24", false, &q) == 0);
        CHECK(!net_prefix_overlap(&p, &q));
        CHECK(net_prefix_parse("0.0.0.0/0", false, &q) == 0);
        CHECK(net_prefix_overlap(&p, &q));

        CHECK(net_prefix_parse("192.168.7.0/24", false, &p) == 0);
        CHECK_EQ_U64(net_prefix_broadcast(&p), 0xc0a807ff);
        CHECK(net_prefix_is_host(&p, 0xc0a80701));
        CHECK(!net_prefix_is_host(&p, 0xc0a80700));
        CHECK(!net_prefix_is_host(&p, 0xc0a807ff));
        CHECK(!net_prefix_is_host(&p, 0xc0a80801));
        CHECK(net_prefix_contains(&p, 0xc0a807ff));

        uint32_t f, l;
        CHECK(net_range_parse("10.0.0.100-10.0.0.150", &f, &l) == 0);
        CHECK_EQ_U64(l - f, 50);
        CHECK(net_range_parse("10.0.0.150-10.0.0.100", &f, &l) < 0);
        CHECK(net_range_parse("10.0.0.100", &f, &l) < 0);
}

TEST(net_ifname_derivation) {
        char n[NET_IFNAME_MAX + 1];
        CHECK(net_tap_name("web", 0, n) == 0);
        CHECK_STREQ(n, "vh-web-0");
        CHECK(net_tap_name("a-vm-with-a-long-name", 3, n) == 0);
        CHECK_EQ_INT(strlen(n), 15);
        CHECK(strncmp(n, "vh-a-vm-", 8) == 0);
        CHECK(n[13] == '-' && n[14] == '3');
        /* Two long names with the same start must not collide. */
        char m[NET_IFNAME_MAX + 1];
        CHECK(net_tap_name("a-vm-with-a-long-name-2", 3, m) == 0);
        CHECK(strcmp(n, m) != 0);
        CHECK(net_ifname_is_valid(n) && net_ifname_is_valid(m));
        /* Deterministic: the same VM gets the same tap. */
        CHECK(net_tap_name("a-vm-with-a-long-name", 3, m) == 0);
        CHECK_STREQ(n, m);
        CHECK(net_tap_name("exactly-9", 99, n) == 0);
        CHECK_STREQ(n, "vh-exactly-9-99");
        CHECK(net_tap_name("exactly-10", 99, n) == 0);
        CHECK_EQ_INT(strlen(n), 15);
        CHECK(net_tap_name("x", 100, n) < 0);

        CHECK(net_ifname_is_valid("eth0"));
        CHECK(!net_ifname_is_valid(""));
        CHECK(!net_ifname_is_valid("a/b"));
        CHECK(!net_ifname_is_valid("a b"));
        CHECK(!net_ifname_is_valid("a:1"));
        CHECK(!net_ifname_is_valid("sixteen-chars-xx"));
        CHECK(!net_ifname_is_valid(".."));
        CHECK(!net_ifname_is_valid("a\"b"));
        CHECK(!net_ifname_is_valid("x;y"));
        CHECK(net_ifname_is_valid("veth-h1.2_x"));

        struct net_def *d = net_def_new("lan");
        CHECK(d && net_def_bridge_name(d, n) == 0);
        CHECK_STREQ(n, "vb-lan");
        net_def_free(d);
}

static struct net_def *parse_ok(const char *text) {
        struct net_def *d = NULL;
        struct vh_error e = {};
        int r = net_def_parse(text, "t.conf", &d, &e);
        if (r < 0)
                test_fail(__FILE__, __LINE__, "parse failed: %s", e.msg);
        return d;
}

TEST(net_def_parse_roundtrip) {
        struct net_def *d = parse_ok("# comment\n"
                                     "name = lan\n"
                                     "type = ovs\n"
                                     "subnet = 10.20.0.0/24\n"
                                     "gateway = 10.20.0.254\n"
                                     "dhcp = 10.20.0.100-10.20.0.150\n"
                                     "nat = yes\n"
                                     "nat-interface = eth0\n"
                                     "mtu = 1450\n"
                                     "ovs-db = unix:/tmp/db.sock\n"
                                     "tunnel = gre:172.16.0.2\n"
                                     "tunnel = vxlan:172.16.0.3:42\n");
        if (!d)
                return;
        CHECK_EQ_INT(d->type, NET_TYPE_OVS);
        CHECK_EQ_U64(d->gateway, 0x0a1400fe);
        CHECK_EQ_INT(d->n_tunnels, 2);
        CHECK_EQ_INT(d->tunnels[1].key, 42);
        CHECK(d->tunnels[1].has_key && !d->tunnels[0].has_key);
        CHECK_EQ_INT(net_def_mtu(d), 1450);
        char *text = net_def_format(d);
        struct net_def *d2 = text ? parse_ok(text) : NULL;
        char *text2 = d2 ? net_def_format(d2) : NULL;
        CHECK(text && text2 && streq(text, text2));
        free(text);
        free(text2);
        net_def_free(d2);
        net_def_free(d);
}

TEST(net_def_complete_defaults) {
        struct net_def *d = net_def_new("lan");
        struct vh_error e = {};
        CHECK(net_def_set(d, "subnet", "10.30.0.0/24", &e) == 0);
        CHECK(net_def_set(d, "dhcp", "yes", &e) == 0);
        CHECK(net_def_complete(d, &e) == 0);
        char a[NET_IPV4_STRLEN];
        CHECK_STREQ(net_ipv4_format(d->gateway, a), "10.30.0.1");
        CHECK_STREQ(net_ipv4_format(d->dhcp_first, a), "10.30.0.128");
        CHECK_STREQ(net_ipv4_format(d->dhcp_last, a), "10.30.0.254");
        CHECK(net_def_validate(d, &e) == 0);
        net_def_free(d);

        d = net_def_new("u");
        CHECK(net_def_set(d, "type", "user", &e) == 0);
        CHECK(net_def_complete(d, &e) == 0);
        char p[NET_PREFIX_STRLEN];
        CHECK_STREQ(net_prefix_format(&d->subnet, p), "10.0.2.0/24");
        CHECK_STREQ(net_ipv4_format(d->gateway, a), "10.0.2.2");
        net_def_free(d);
}

TEST(net_def_errors_name_the_line) {
        static const struct {
                const char *text, *want;
        } cases[] = {
                { "name = lan\ntype = bridge\nsubnet = 10.0.0.1/24\n", "t.conf:3: subnet '10.0.0.1/24' has host bits set: did you mean 10.0.0.0/24?" },
                { "name = lan\ntype = switch\n", "t.conf:2: type must be user, bridge or ovs, not 'switch'" },
                { "name = lan\ntype = bridge\nmtu = 70000\n", "t.conf:3: mtu must be a number 576..9000, not '70000'" },
                { "name = lan\ntype = bridge\ncolour = blue\n", "t.conf:3: unknown key 'colour'" },
                { "name = lan\ntype = bridge\njunk\n", "t.conf:3: expected 'key = value', got 'junk'" },
                { "name = lan\ntype = bridge\nmtu =\n", "t.conf:3: key 'mtu' has no value" },
                { "name = lan\ntype = bridge\nmtu = 1400\nmtu = 1500\n", "t.conf:4: key 'mtu' given twice" },
                { "name = lan\ntype = bridge\ntunnel = ipip:1.2.3.4\n", "t.conf:3: tunnel type must be gre or vxlan, not 'ipip'" },
                { "name = lan\ntype = bridge\ntunnel = vxlan:1.2.3.4:16777216\n", "t.conf:3: tunnel key must be a number 0..16777215 (VNI, not 0), not '16777216'" },
                { "type = bridge\n", "t.conf: missing 'name = ...'" },
                { "name = lan\n", "t.conf: missing 'type = user|bridge|ovs'" },
                { "name = lan\ntype = bridge\nsubnet = 10.0.0.0/24\ngateway = 10.0.1.1\n", "t.conf: gateway 10.0.1.1 is not a host address of subnet 10.0.0.0/24" },
                { "name = lan\ntype = bridge\nsubnet = 10.0.0.0/24\ngateway = 10.0.0.1\ndhcp = 10.0.0.1-10.0.0.9\n", "t.conf: the DHCP range contains the gateway 10.0.0.1" },
                { "name = lan\ntype = bridge\nnat = yes\n", "t.conf: nat needs a subnet and a gateway (the VMs' route out)" },
                { "name = lan\ntype = user\nnat = yes\n", "t.conf: network 'lan' is type user (QEMU's own NAT inside each VM): nat, bridge, mtu, ovs-db, datapath, tunnels and uplinks do not apply" },
                { "name = lan\ntype = bridge\novs-db = unix:/x\n", "t.conf: ovs-db and datapath apply only to type ovs" },
                { "name = lan\ntype = bridge\ntunnel = gre:1.2.3.4\ntunnel = vxlan:1.2.3.4\n", "t.conf: two tunnels to 1.2.3.4" },
                { "name = lan\ntype = bridge\nuplink-port = eth1\n", "t.conf: uplink-port needs uplink-host-ip" },
                { "name = la n\ntype = bridge\n", "t.conf:1: name must be 1..32 characters of [a-zA-Z0-9_-], not 'la n'" },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct net_def *d = NULL;
                struct vh_error e = {};
                int r = net_def_parse(cases[i].text, "t.conf", &d, &e);
                if (r >= 0) {
                        test_fail(__FILE__, __LINE__, "case %zu parsed", i);
                        net_def_free(d);
                        continue;
                }
                if (!streq(e.msg, cases[i].want))
                        test_fail(__FILE__, __LINE__, "case %zu: got \"%s\", want \"%s\"", i, e.msg, cases[i].want);
        }
        /* Limits: a long line and a big file are errors, not truncation. */
        char *big = malloc(NET_CONF_MAX_LINE + 32);
        memset(big, 'x', NET_CONF_MAX_LINE + 10);
        strcpy(big + NET_CONF_MAX_LINE + 10, "\n");
        struct net_def *d = NULL;
        struct vh_error e = {};
        CHECK(net_def_parse(big, "t.conf", &d, &e) < 0);
        CHECK(strstr(e.msg, "t.conf:1: line longer") != NULL);
        free(big);
}

TEST(net_tunnel_overhead_and_names) {
        struct net_tunnel g = { .type = NET_TUNNEL_GRE, .remote = 0xac100002 };
        struct net_tunnel gk = { .type = NET_TUNNEL_GRE, .remote = 0xac100002, .has_key = true, .key = 7 };
        struct net_tunnel v = { .type = NET_TUNNEL_VXLAN, .remote = 0xac100003 };
        CHECK_EQ_INT(net_tunnel_overhead(&g), 38);
        CHECK_EQ_INT(net_tunnel_overhead(&gk), 42);
        CHECK_EQ_INT(net_tunnel_overhead(&v), 50);
        struct net_def *d = net_def_new("lan");
        char a[NET_IFNAME_MAX + 1], b[NET_IFNAME_MAX + 1];
        CHECK(net_tunnel_ifname(d, &g, a) == 0);
        CHECK(net_tunnel_ifname(d, &v, b) == 0);
        CHECK(strncmp(a, "vt-lan-", 7) == 0 && strlen(a) == 11);
        CHECK(strcmp(a, b) != 0);
        char *s = net_tunnel_format(&gk);
        CHECK_STREQ(s, "gre:172.16.0.2:7");
        free(s);
        net_def_free(d);
}

TEST(net_nft_ruleset_golden) {
        struct nft_masquerade m[2] = {
                { .net_name = "lan", .subnet = { 0x0a5a0000, 24 }, .out_interface = "uplink" },
                { .net_name = "lab", .subnet = { 0x0a5b0000, 16 } },
        };
        char *text = nft_ruleset_format(m, 2);
        CHECK_STREQ(text,
                    "# generated by vmhost: masquerade of its NAT networks; replaced as a whole\n"
                    "table ip vmhost\n"
                    "delete table ip vmhost\n"
                    "table ip vmhost {\n"
                    "\tchain postrouting {\n"
                    "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
                    "\t\tip saddr 10.90.0.0/24 ip daddr != 10.90.0.0/24 oifname \"uplink\" counter masquerade comment \"vmhost network lan\"\n"
                    "\t\tip saddr 10.91.0.0/16 ip daddr != 10.91.0.0/16 counter masquerade comment \"vmhost network lab\"\n"
                    "\t}\n"
                    "}\n");
        free(text);
        text = nft_ruleset_format(NULL, 0);
        CHECK_STREQ(text,
                    "# generated by vmhost: masquerade of its NAT networks; replaced as a whole\n"
                    "table ip vmhost\n"
                    "delete table ip vmhost\n");
        free(text);
}

TEST(net_dnsmasq_config_golden) {
        struct dnsmasq_host hosts[] = {
                { .mac = "52:54:00:5b:00:01", .ip = 0x0a5b002a, .name = "vm1" },
        };
        struct dnsmasq_config c = {
                .net_name = "lan",
                .interface = "vb-lan",
                .subnet = { 0x0a5b0000, 24 },
                .gateway = 0x0a5b0001,
                .first = 0x0a5b0064,
                .last = 0x0a5b0096,
                .mtu = 1450,
                .domain = "lan",
                .lease_file = "/run/vmhost/networks/lan/dnsmasq.leases",
                .pid_file = "/run/vmhost/networks/lan/dnsmasq.pid",
                .log_file = "/run/vmhost/networks/lan/dnsmasq.log",
                .hosts_file = "/run/vmhost/networks/lan/dnsmasq.hosts",
        };
        char *text = dnsmasq_config_format(&c);
        CHECK_STREQ(text,
                    "# generated by vmhost for network lan; rewritten on every change\n"
                    "interface=vb-lan\n"
                    "bind-interfaces\n"
                    "except-interface=lo\n"
                    "no-hosts\n"
                    "domain=lan\n"
                    "local=/lan/\n"
                    "dhcp-range=10.91.0.100,10.91.0.150,255.255.255.0,1h\n"
                    "dhcp-option=option:router,10.91.0.1\n"
                    "dhcp-option=option:dns-server,10.91.0.1\n"
                    "dhcp-option=option:mtu,1450\n"
                    "dhcp-authoritative\n"
                    "no-ping\n"
                    "dhcp-leasefile=/run/vmhost/networks/lan/dnsmasq.leases\n"
                    "pid-file=/run/vmhost/networks/lan/dnsmasq.pid\n"
                    "log-facility=/run/vmhost/networks/lan/dnsmasq.log\n"
                    "log-dhcp\n"
                    "dhcp-hostsfile=/run/vmhost/networks/lan/dnsmasq.hosts\n");
        free(text);
        text = dnsmasq_hosts_format(hosts, 1);
        CHECK_STREQ(text, "# generated by vmhost: one reservation per NIC with a fixed address (MAC,IP,NAME)\n"
                          "52:54:00:5b:00:01,10.91.0.42,vm1\n");
        free(text);
        char name[48];
        dnsmasq_host_name("web_1", 2, name, sizeof(name));
        CHECK_STREQ(name, "web-1-2");
}

static char *joined(struct strv *v) {
        char *s = strv_join(v->v, " ");
        strv_done(v);
        return s;
}

TEST(net_ovs_vsctl_argv_golden) {
        struct strv v = {};
        ovs_argv_add_bridge(&v, "unix:/tmp/o/db.sock", "vb-sw", NET_DATAPATH_NETDEV, "sw", 1500);
        char *s = joined(&v);
        CHECK_STREQ(s, "ovs-vsctl --db=unix:/tmp/o/db.sock --timeout=10 -- --may-exist add-br vb-sw -- set Bridge vb-sw "
                       "datapath_type=netdev external_ids:vmhost-net=sw -- set Interface vb-sw mtu_request=1500");
        free(s);

        v = (struct strv) {};
        ovs_argv_add_vm_port(&v, NULL, "vb-sw", "vh-web-0", 2, NULL, "sw", "web");
        s = joined(&v);
        CHECK_STREQ(s, "ovs-vsctl --timeout=10 -- --may-exist add-port vb-sw vh-web-0 -- set Port vh-web-0 tag=2 "
                       "trunks=[] external_ids:vmhost-net=sw external_ids:vmhost-vm=web");
        free(s);

        v = (struct strv) {};
        ovs_argv_add_vm_port(&v, NULL, "vb-sw", "vh-fw-1", -1, "1,2", "sw", "fw");
        s = joined(&v);
        CHECK_STREQ(s, "ovs-vsctl --timeout=10 -- --may-exist add-port vb-sw vh-fw-1 -- set Port vh-fw-1 tag=[] "
                       "trunks=1,2 external_ids:vmhost-net=sw external_ids:vmhost-vm=fw");
        free(s);

        struct net_tunnel t = { .type = NET_TUNNEL_GRE, .remote = 0xac100002, .has_key = true, .key = 5 };
        v = (struct strv) {};
        ovs_argv_add_tunnel_port(&v, NULL, "vb-sw", "vt-sw-1234", &t, "sw");
        s = joined(&v);
        CHECK_STREQ(s, "ovs-vsctl --timeout=10 -- --may-exist add-port vb-sw vt-sw-1234 -- set Interface vt-sw-1234 "
                       "type=gre options:remote_ip=172.16.0.2 options:key=5 -- set Port vt-sw-1234 "
                       "external_ids:vmhost-net=sw");
        free(s);

        struct net_tunnel x = { .type = NET_TUNNEL_VXLAN, .remote = 0xac100002 };
        v = (struct strv) {};
        ovs_argv_add_tunnel_port(&v, NULL, "vb-sw", "vt-sw-1234", &x, "sw");
        s = joined(&v);
        CHECK(strstr(s, "type=vxlan options:remote_ip=172.16.0.2 options:key=1 ") != NULL);
        free(s);

        v = (struct strv) {};
        ovs_argv_del_port(&v, NULL, "vb-sw", "vh-web-0");
        s = joined(&v);
        CHECK_STREQ(s, "ovs-vsctl --timeout=10 -- --if-exists del-port vb-sw vh-web-0");
        free(s);

        v = (struct strv) {};
        ovs_argv_del_bridge(&v, NULL, "vb-sw");
        s = joined(&v);
        CHECK_STREQ(s, "ovs-vsctl --timeout=10 -- --if-exists del-br vb-sw");
        free(s);
}

TEST(net_runtime_roundtrip) {
        struct net_runtime rt = {
                .bridge = "vb-lan",
                .datapath = NET_DATAPATH_NETDEV,
                .datapath_why = "no kernel datapath",
                .mtu = 1450,
                .nat = true,
                .uplink_port = "veth0",
                .uplink_orig_mtu = 1500,
                .uplink_gateway = 0xac100001,
                .uplink_had_ip = true,
        };
        char *text = net_runtime_format(&rt);
        struct net_runtime back;
        CHECK(text && net_runtime_parse(text, &back) == 0);
        CHECK_STREQ(back.bridge, "vb-lan");
        CHECK_EQ_INT(back.datapath, NET_DATAPATH_NETDEV);
        CHECK_EQ_INT(back.mtu, 1450);
        CHECK(back.nat && back.uplink_had_ip);
        CHECK_STREQ(back.uplink_port, "veth0");
        CHECK_EQ_U64(back.uplink_gateway, 0xac100001);
        free(text);
        CHECK(net_runtime_parse("mtu=1500\n", &back) < 0);
}

TEST(net_leases_parse_dnsmasq_file) {
        /* As dnsmasq writes it: IPv4 leases, then DHCPv6's duid line and a
         * v6 lease, plus lines a damaged or hostile file may hold. */
        static const char text[] =
                "1764770000 52:54:00:aa:bb:01 10.62.0.120 guest 01:52:54:00:aa:bb:01\n"
                "0 52:54:00:AA:BB:02 10.62.0.77 * *\n"
                "1764770100 52:54:00:aa:bb:01 10.62.0.121 guest2 *\n"
                "duid 00:01:00:01:2c:aa:bb:cc:52:54:00:00:00:01\n"
                "1764770000 1234567 fd00::5 guest6 00:01:00:01\n"
                "1764770000 52:54:00:aa:bb:03 10.62.0.300 bad *\n"
                "1764770000 52:54:00:aa:bb 10.62.0.5 shortmac *\n"
                "-5 52:54:00:aa:bb:04 10.62.0.6 negative *\n"
                "1764770000 52:54:00:aa:bb:05 10.62.0.7 \x1b[31mred *\n"
                "1764770000 52:54:00:aa:bb:06\n"
                "\n"
                "1764770000 52:54:00:aa:bb:07 10.62.0.8 last";
        struct net_lease *l = NULL;
        size_t n = 0, skipped = 0;
        struct vh_error err = {};
        CHECK_EQ_INT(net_leases_parse(text, sizeof(text) - 1, &l, &n, &skipped, &err), 0);
        CHECK_EQ_INT(n, 5);
        CHECK_EQ_INT(skipped, 6);
        if (n == 5) {
                CHECK_STREQ(l[0].mac, "52:54:00:aa:bb:01");
                CHECK_STREQ(l[0].ip, "10.62.0.120");
                CHECK_STREQ(l[0].hostname, "guest");
                CHECK_EQ_U64(l[0].expiry, 1764770000);
                CHECK_STREQ(l[1].mac, "52:54:00:aa:bb:02");
                CHECK_STREQ(l[1].hostname, "");
                CHECK_EQ_U64(l[1].expiry, 0);
                /* A hostname that is no DNS name is not passed on. */
                CHECK_STREQ(l[3].ip, "10.62.0.7");
                CHECK_STREQ(l[3].hostname, "");
                CHECK_STREQ(l[4].hostname, "last");

                /* The newest valid lease of a MAC, in any case; expired ones
                 * and 0 (never expires) handled. */
                const struct net_lease *f = net_leases_find(l, n, "52:54:00:AA:BB:01", 1764760000);
                CHECK(f && streq(f->ip, "10.62.0.121"));
                f = net_leases_find(l, n, "52:54:00:aa:bb:01", 1764770050);
                CHECK(f && streq(f->ip, "10.62.0.121"));
                CHECK(net_leases_find(l, n, "52:54:00:aa:bb:01", 1764770100) == NULL);
                f = net_leases_find(l, n, "52:54:00:aa:bb:02", INT64_MAX);
                CHECK(f && streq(f->ip, "10.62.0.77"));
                CHECK(net_leases_find(l, n, "52:54:00:aa:bb:09", 0) == NULL);
        }
        free(l);

        /* Nothing there: no leases, no array. */
        l = (struct net_lease *) &err;
        CHECK_EQ_INT(net_leases_parse("", 0, &l, &n, NULL, &err), 0);
        CHECK(l == NULL && n == 0);
}

TEST(net_leases_parse_limits) {
        struct net_lease *l = NULL;
        size_t n = 0;
        struct vh_error err = {};
        /* A line longer than the limit, the file past its size, more leases
         * than allowed: each a clear error, nothing returned. */
        size_t len = NET_LEASES_MAX_LINE + 10;
        char *s = malloc(len + 1);
        memset(s, 'a', len);
        s[len] = '\0';
        CHECK_EQ_INT(net_leases_parse(s, len, &l, &n, NULL, &err), -E2BIG);
        CHECK(strstr(err.msg, "line") != NULL);
        free(s);
        CHECK_EQ_INT(net_leases_parse("", NET_LEASES_MAX_BYTES + 1, &l, &n, NULL, &err), -E2BIG);

        const char *line = "0 52:54:00:00:00:01 10.0.0.1 h *\n";
        size_t ll = strlen(line), total = ll * (NET_LEASES_MAX + 1);
        s = malloc(total + 1);
        for (size_t i = 0; i <= NET_LEASES_MAX; i++)
                memcpy(s + i * ll, line, ll);
        s[total] = '\0';
        CHECK_EQ_INT(net_leases_parse(s, total, &l, &n, NULL, &err), -E2BIG);
        CHECK(strstr(err.msg, "leases") != NULL);
        CHECK_EQ_INT(net_leases_parse(s, total - ll, &l, &n, NULL, &err), 0);
        CHECK_EQ_INT(n, NET_LEASES_MAX);
        free(l);
        free(s);

        /* A NUL inside a line damages that line only. */
        static const char nul[] = "0 52:54:00:00:00:01 10.0.0.1 h\0x *\n0 52:54:00:00:00:02 10.0.0.2 g *\n";
        size_t skipped = 0;
        CHECK_EQ_INT(net_leases_parse(nul, sizeof(nul) - 1, &l, &n, &skipped, &err), 0);
        CHECK_EQ_INT(n, 1);
        CHECK_EQ_INT(skipped, 1);
        CHECK(n == 1 && streq(l[0].ip, "10.0.0.2"));
        free(l);
}

/* A port record that cannot be read or parsed fails the read, naming the
 * file: taken as "no port" it would hide a tap or a reserved address. The
 * temporary file of a write that never finished is no record. */
TEST(net_ports_read_refuses_corrupt_records) {
        _cleanup_free_ char *dir = NULL, *good = NULL, *tmp = NULL, *bad = NULL;
        CHECK_EQ_INT(net_run_dir_make(test_ctx(), "plan", "ports"), 0);
        CHECK_EQ_INT(net_run_path(test_ctx(), "plan", "ports", &dir), 0);
        good = dir ? strdup_printf("%s/v1.0", dir) : NULL;
        tmp = dir ? strdup_printf("%s/v1.1.tmp.4242", dir) : NULL;
        bad = dir ? strdup_printf("%s/v2.0", dir) : NULL;
        const char *rec = "vm=v1\nindex=0\ntap=vh-v1-0\nmac=02:00:00:00:00:01\nip=10.0.0.5\nvlan=\ntrunks=\n";
        if (good && tmp && bad) {
                CHECK_EQ_INT(write_file_atomic(good, rec, strlen(rec), 0600), 0);
                CHECK_EQ_INT(write_file_atomic(tmp, "vm=v1\nind", 10, 0600), 0);
                struct net_port *ports = NULL;
                struct vh_error e = {};
                CHECK_EQ_INT(net_ports_read(test_ctx(), "plan", &ports, &e), 1);
                if (ports)
                        CHECK_STREQ(ports[0].ip, "10.0.0.5");
                ports = mfree(ports);

                CHECK_EQ_INT(write_file_atomic(bad, "garbage\n", 8, 0600), 0);
                CHECK(net_ports_read(test_ctx(), "plan", &ports, &e) < 0);
                CHECK(ports == NULL);
                CHECK(strstr(e.msg, bad) && strstr(e.msg, "corrupt"));
                unlink(bad);

                /* Unreadable: a directory where a record should be. */
                CHECK_EQ_INT(mkdir(bad, 0700), 0);
                e = (struct vh_error) {};
                CHECK(net_ports_read(test_ctx(), "plan", &ports, &e) < 0);
                CHECK(strstr(e.msg, bad) && strstr(e.msg, "cannot read"));
                rmdir(bad);
        }
}
