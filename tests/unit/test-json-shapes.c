/* tests/unit/test-json-shapes.c: the JSON documents of vm/vm-json.h and
 * net/net-json.h against golden text for fixed inputs: the shapes that
 * 'vm status --json', 'vm list --json' and 'net show --json' print, a
 * remote host replies and the web API serves (docs/json.md). A field that
 * changes name or disappears fails here; a new one must be added to the
 * golden text and to docs/json.md. Also the one scan of STATE/vms and the
 * description that status and list share (vm/vm-list.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/fileio.h"
#include "base/json.h"
#include "base/json-writer.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "host/host.h"
#include "net/net-json.h"
#include "vm/vm-json.h"
#include "vm/vm-list.h"
#include "test.h"

static char *finish(struct json_writer *w) {
        int r = 0;
        char *s = json_writer_finish(w, &r);
        if (!s)
                test_fail(__FILE__, __LINE__, "json_writer_finish: %d", r);
        return s;
}

/* Every key of the document 's' (at any depth) must be in docs/json.md, as
 * `key`: a field added to a builder without its documentation fails. */
static void walk_keys(const struct json_value *v, const char *doc) {
        if (v->type == JSON_OBJECT)
                for (size_t i = 0; i < v->object.n; i++) {
                        char quoted[80];
                        snprintf(quoted, sizeof(quoted), "`%s`", v->object.members[i].key);
                        if (!strstr(doc, quoted))
                                test_fail(__FILE__, __LINE__, "field %s is not in docs/json.md", quoted);
                        walk_keys(v->object.members[i].value, doc);
                }
        else if (v->type == JSON_ARRAY)
                for (size_t i = 0; i < v->array.n; i++)
                        walk_keys(v->array.items[i], doc);
}

static void check_documented(const char *s) {
        _cleanup_free_ char *doc = NULL;
        if (!s || read_full_file(VMHOST_SOURCE_ROOT "/docs/json.md", 1 << 20, &doc, NULL) < 0) {
                test_fail(__FILE__, __LINE__, "cannot read docs/json.md");
                return;
        }
        _cleanup_(json_value_freep) struct json_value *v = NULL;
        struct vh_error err = {};
        int r = json_parse(s, strlen(s), NULL, &v, &err);
        if (r < 0) {
                test_fail(__FILE__, __LINE__, "not JSON: %s", vh_error_message(&err, r));
                return;
        }
        walk_keys(v, doc);
}

static struct vm_def *golden_vm(void) {
        static const char text[] =
                "name = web\n"
                "cpus = 2\n"
                "memory = 512M\n"
                "id = 7\n"
                "boot = disk\n"
                "disk = /var/lib/vmhost/vms/web/disk.qcow2\n"
                "base = /srv/bases/debian.qcow2\n"
                "nic = user,mac=52:54:00:00:07:00\n"
                "nic = lan,mac=52:54:00:00:07:01,vlan=10,model=e1000,ip=10.0.0.5\n"
                "vnc = 127.0.0.1:3\n"
                "forward = tcp:auto:22\n"
                "forward = udp:5353:53\n";
        struct vm_def *def = NULL;
        struct vh_error err = {};
        int r = vm_def_parse(text, "golden", &def, &err);
        if (r < 0)
                test_fail(__FILE__, __LINE__, "vm_def_parse: %s", vh_error_message(&err, r));
        return def;
}

TEST(json_vm_status_running_golden) {
        _cleanup_(vm_def_freep) struct vm_def *def = golden_vm();
        if (!def)
                return;
        struct vm_status st = { .state = VM_STATE_RUNNING, .pid = 4242, .accel = "tcg",
                                .host_ports = { 40022, 5353 } };
        struct vm_address addrs[] = {
                { .nic = 0, .network = "user", .mac = "52:54:00:00:07:00", .ip = "10.0.2.15",
                  .source = VM_ADDR_USER_NAT },
        };
        struct json_writer w;
        json_writer_init(&w, false);
        vm_status_to_json(&w, def, &st, addrs, ELEMENTSOF(addrs), "/run/vmhost/vms/web/vnc.sock");
        _cleanup_free_ char *s = finish(&w);
        CHECK_STREQ(s,
                    "{\"version\":1,\"name\":\"web\",\"state\":\"running\",\"pid\":4242,\"accel\":\"tcg\","
                    "\"cpus\":2,\"memory\":536870912,\"id\":7,\"boot\":\"disk\",\"cdrom\":null,"
                    "\"disk\":\"/var/lib/vmhost/vms/web/disk.qcow2\",\"base\":\"/srv/bases/debian.qcow2\","
                    "\"vnc\":{\"type\":\"tcp\",\"host\":\"127.0.0.1\",\"display\":3,\"port\":5903,\"password\":true},"
                    "\"nics\":[{\"network\":\"user\",\"mac\":\"52:54:00:00:07:00\",\"model\":\"virtio\"},"
                    "{\"network\":\"lan\",\"mac\":\"52:54:00:00:07:01\",\"vlan\":10,\"model\":\"e1000\",\"ip\":\"10.0.0.5\"}],"
                    "\"forwards\":[{\"proto\":\"tcp\",\"host\":\"127.0.0.1\",\"host-port\":40022,\"guest-port\":22},"
                    "{\"proto\":\"udp\",\"host\":\"127.0.0.1\",\"host-port\":5353,\"guest-port\":53}],"
                    "\"addresses\":[{\"nic\":0,\"network\":\"user\",\"mac\":\"52:54:00:00:07:00\",\"ip\":\"10.0.2.15\","
                    "\"source\":\"user-nat\"}]}");
        check_documented(s);
}

TEST(json_vm_status_stopped_golden) {
        _cleanup_(vm_def_freep) struct vm_def *def = golden_vm();
        if (!def)
                return;
        def->vnc = VM_VNC_UNIX;
        /* Stopped: no pid or accel; an auto forward has no host port, a
         * fixed one its own; the crash reason when there is one. */
        struct vm_status st = { .state = VM_STATE_STOPPED, .exit_reason = "qemu: terminating on signal 9" };
        struct json_writer w;
        json_writer_init(&w, false);
        vm_status_to_json(&w, def, &st, NULL, 0, "/run/vmhost/vms/web/vnc.sock");
        _cleanup_free_ char *s = finish(&w);
        CHECK_STREQ(s,
                    "{\"version\":1,\"name\":\"web\",\"state\":\"stopped\","
                    "\"cpus\":2,\"memory\":536870912,\"id\":7,\"boot\":\"disk\",\"cdrom\":null,"
                    "\"disk\":\"/var/lib/vmhost/vms/web/disk.qcow2\",\"base\":\"/srv/bases/debian.qcow2\","
                    "\"vnc\":{\"type\":\"unix\",\"socket\":\"/run/vmhost/vms/web/vnc.sock\"},"
                    "\"nics\":[{\"network\":\"user\",\"mac\":\"52:54:00:00:07:00\",\"model\":\"virtio\"},"
                    "{\"network\":\"lan\",\"mac\":\"52:54:00:00:07:01\",\"vlan\":10,\"model\":\"e1000\",\"ip\":\"10.0.0.5\"}],"
                    "\"forwards\":[{\"proto\":\"tcp\",\"host\":\"127.0.0.1\",\"guest-port\":22},"
                    "{\"proto\":\"udp\",\"host\":\"127.0.0.1\",\"host-port\":5353,\"guest-port\":53}],"
                    "\"addresses\":[],\"exit-reason\":\"qemu: terminating on signal 9\"}");
        check_documented(s);
        def->vnc = VM_VNC_NONE;
        json_writer_init(&w, false);
        vm_status_to_json(&w, def, &st, NULL, 0, NULL);
        _cleanup_free_ char *t = finish(&w);
        CHECK(t && strstr(t, ",\"vnc\":null,"));
}

static struct net_def *golden_net(void) {
        static const char text[] =
                "name = lan\n"
                "type = bridge\n"
                "subnet = 10.0.0.0/24\n"
                "gateway = 10.0.0.1\n"
                "dhcp = 10.0.0.100-10.0.0.200\n"
                "nat = yes\n";
        struct net_def *def = NULL;
        struct vh_error err = {};
        int r = net_def_parse(text, "golden", &def, &err);
        if (r < 0)
                test_fail(__FILE__, __LINE__, "net_def_parse: %s", vh_error_message(&err, r));
        return def;
}

TEST(json_net_show_golden) {
        _cleanup_(net_def_freep) struct net_def *def = golden_net();
        if (!def)
                return;
        struct net_status st = { .running = true, .bridge = "vb-lan", .mtu = 1500, .dnsmasq_pid = 77 };
        struct net_port ports[] = {
                { .vm = "web", .index = 1, .tap = "vh-web-1", .mac = "52:54:00:00:07:01", .ip = "10.0.0.5", .vlan = 10 },
                { .vm = "db", .index = 0, .tap = "vh-db-0", .vlan = -1 },
        };
        struct json_writer w;
        json_writer_init(&w, false);
        net_show_to_json(&w, def, &st, ports, ELEMENTSOF(ports));
        _cleanup_free_ char *s = finish(&w);
        char domain[64];
        snprintf(domain, sizeof(domain), "%s", net_def_domain(def));
        _cleanup_free_ char *want = strdup_printf(
                "{\"version\":1,\"name\":\"lan\",\"type\":\"bridge\",\"state\":\"running\",\"subnet\":\"10.0.0.0/24\","
                "\"gateway\":\"10.0.0.1\",\"dhcp\":{\"first\":\"10.0.0.100\",\"last\":\"10.0.0.200\"},\"nat\":true,"
                "\"nat_interface\":null,\"mtu\":1500,\"effective_mtu\":1500,\"bridge\":\"vb-lan\",\"domain\":\"%s\","
                "\"dnsmasq_pid\":77,\"tunnels\":[],\"uplink\":null,"
                "\"ports\":[{\"vm\":\"web\",\"index\":1,\"tap\":\"vh-web-1\",\"mac\":\"52:54:00:00:07:01\","
                "\"ip\":\"10.0.0.5\",\"vlan\":10,\"trunks\":null},"
                "{\"vm\":\"db\",\"index\":0,\"tap\":\"vh-db-0\",\"mac\":null,\"ip\":null,\"vlan\":null,\"trunks\":null}]}",
                domain);
        CHECK_STREQ(s, want);
        check_documented(s);

        /* A list entry: the same fields, the VMs in place of the ports. */
        char *vms[] = { "db", "web", NULL };
        st.running = false;
        json_writer_init(&w, false);
        net_list_entry_to_json(&w, def, &st, vms, 2);
        _cleanup_free_ char *l = finish(&w);
        CHECK(l && startswith(l, "{\"version\":1,\"name\":\"lan\",\"type\":\"bridge\",\"state\":\"stopped\","));
        CHECK(l && strstr(l, ",\"uplink\":null,\"vms\":[\"db\",\"web\"]}"));
        CHECK(l && !strstr(l, "dnsmasq_pid"));
        check_documented(l);
}

TEST(json_net_attach_golden) {
        struct net_nic_attachment att = { .tap = "vh-web-1", .mtu = 1500, .type = NET_TYPE_BRIDGE };
        struct json_writer w;
        json_writer_init(&w, false);
        net_attachment_to_json(&w, "lan", &att);
        _cleanup_free_ char *s = finish(&w);
        CHECK_STREQ(s, "{\"version\":1,\"network\":\"lan\",\"type\":\"bridge\",\"tap\":\"vh-web-1\","
                       "\"disable_offload\":false,\"mtu\":1500,\"netns\":null,\"user_subnet\":null,\"warning\":null}");
        check_documented(s);
}

/* ---- one scan of STATE/vms ---- */

static void put(const char *home, const char *name, const char *conf) {
        _cleanup_free_ char *dir = strdup_printf("%s/vms/%s", home, name);
        _cleanup_free_ char *path = strdup_printf("%s/vm.conf", dir);
        CHECK(dir && path && mkdir_p(dir, 0700) == 0);
        if (conf && path)
                CHECK(write_file_atomic(path, conf, strlen(conf), 0600) == 0);
}

static void list_body(void) {
        const char *home = test_tmpdir();
        struct vh_error err = {};
        char **names = NULL;
        /* No STATE/vms yet: no VM, no error. */
        CHECK_EQ_INT(vm_list_names(test_ctx(), &names, &err), 0);
        CHECK(names && !names[0]);
        names = vm_names_free(names);

        put(home, "zeta", "name = zeta\ndisk = /d\n");
        put(home, "alpha", "name = alpha\ndisk = /d\n");
        /* Broken, but a VM all the same: the allocator must see it. */
        put(home, "broken", "name = broken\nmemory = 12x\n");
        put(home, "empty", NULL);     /* a directory without vm.conf */
        put(home, "bad.name", "name = bad.name\n");
        CHECK_EQ_INT(vm_list_names(test_ctx(), &names, &err), 3);
        if (names) {
                CHECK_STREQ(names[0], "alpha");
                CHECK_STREQ(names[1], "broken");
                CHECK_STREQ(names[2], "zeta");
                CHECK(!names[3]);
        }
        names = vm_names_free(names);

        /* Status and list describe a stopped VM with the crash an earlier
         * command noticed; a broken one fails with the file named. */
        _cleanup_free_ char *crash = strdup_printf("%s/vms/alpha/last-exit", home);
        CHECK(crash && write_file_atomic(crash, "qemu: killed", 12, 0600) == 0);
        struct vm_def *def = NULL;
        struct vm_status st;
        CHECK_EQ_INT(vm_describe(test_ctx(), "alpha", &def, &st, &err), 0);
        CHECK(st.state == VM_STATE_STOPPED);
        CHECK_STREQ(st.exit_reason, "qemu: killed");
        def = vm_def_free(def);
        CHECK_EQ_INT(vm_describe(test_ctx(), "zeta", &def, &st, &err), 0);
        CHECK_STREQ(st.exit_reason, "");
        def = vm_def_free(def);
        CHECK(vm_describe(test_ctx(), "broken", &def, &st, &err) < 0);
        CHECK(!def);
        CHECK(strstr(err.msg, "broken/vm.conf") != NULL);
}

TEST(vm_list_names_one_scan) {
        list_body(); /* in test_ctx()'s home, the test's directory */
}

/* The host documents: 'host self' (with every part) and a 'host list'
 * entry, reachable and not; each field documented. */
TEST(json_host_documents_documented) {
        _cleanup_free_ char *self = NULL;
        struct vh_error e = {};
        CHECK_EQ_INT(host_self_json(test_ctx(), HOST_PROBE_DOCTOR | HOST_PROBE_VMS, &self, &e), 0);
        check_documented(self);
        struct host_def *def = host_def_new("b");
        if (!def)
                return;
        def->ssh = strdup("root@10.0.0.2");
        struct host_status st = {};
        CHECK_EQ_INT(host_self_parse(self, &st, &e), 0);
        st.reachable = true;
        for (int i = 0; i < 2; i++) {
                struct json_writer w;
                json_writer_init(&w, false);
                host_status_to_json(&w, def, &st);
                _cleanup_free_ char *s = finish(&w);
                check_documented(s);
                st.reachable = false;
        }
        host_status_done(&st);
        host_def_free(def);
}
