/* tests/unit/test-vm.c: unit tests for src/vm/: definitions, the QEMU
 * command line, MAC derivation. */
#include <errno.h>
#include <stdlib.h>

#include "base/strv.h"
#include "vm/vm-alloc.h"
#include "vm/vm-cmdline.h"
#include "vm/vm-def.h"
#include "vm/vm.h"
#include "test.h"

TEST(vm_def_parse_roundtrip) {
        const char *text = "# comment\n"
                           "name = web1\n"
                           "cpus = 2\n"
                           "memory = 512M\n"
                           "boot = disk\n"
                           "disk = /var/lib/vmhost/vms/web1/disk.qcow2\n"
                           "id = 7\n"
                           "nic = user,mac=02:aa:bb:cc:00:07\n"
                           "nic = lan,vlan=2,model=e1000,ip=10.0.0.5\n"
                           "vnc = 127.0.0.1:5\n"
                           "forward = tcp:auto:22\n"
                           "forward = udp:5353:53\n"
                           "localtime = yes\n";
        struct vm_def *def = NULL;
        struct vh_error err = {};
        CHECK_EQ_INT(vm_def_parse(text, "t.conf", &def, &err), 0);
        if (!def)
                return;
        CHECK_STREQ(def->name, "web1");
        CHECK_EQ_INT(def->cpus, 2);
        CHECK_EQ_U64(def->memory, 512ULL << 20);
        CHECK_EQ_INT(def->n_forwards, 2);
        CHECK_EQ_INT(def->forwards[0].host_port, 0);
        CHECK_EQ_INT(def->forwards[1].proto, VM_FWD_UDP);
        CHECK(def->localtime);
        CHECK_EQ_INT(def->id, 7);
        CHECK_EQ_INT(def->n_nics, 2);
        CHECK_STREQ(def->nics[0].network, "user");
        CHECK_STREQ(def->nics[0].mac, "02:aa:bb:cc:00:07");
        CHECK_EQ_INT(def->nics[1].vlan, 2);
        CHECK_EQ_INT(def->nics[1].model, VM_NIC_E1000);
        CHECK_STREQ(def->nics[1].ip, "10.0.0.5");
        CHECK(def->vnc);
        CHECK_STREQ(def->vnc_host, "127.0.0.1");
        CHECK_EQ_INT(def->vnc_display, 5);

        char *again = vm_def_format(def);
        struct vm_def *def2 = NULL;
        CHECK_EQ_INT(vm_def_parse(again, "again", &def2, &err), 0);
        char *again2 = def2 ? vm_def_format(def2) : NULL;
        CHECK_STREQ(again, again2);
        free(again);
        free(again2);
        vm_def_free(def2);
        vm_def_free(def);
}

TEST(vm_def_parse_errors_name_the_line) {
        static const struct {
                const char *text;
                const char *msg;
        } cases[] = {
                { "name = a\ncpuz = 2\ndisk = x\n", "t.conf:2: unknown key 'cpuz'" },
                { "name = a\ncpus = 0\ndisk = x\n", "t.conf:2: cpus must be 1..256, not '0'" },
                { "name = a\ndisk = x\nmemory = lots\n", "t.conf:3: memory must be a size like 512M or 2G, not 'lots'" },
                { "name = a\ndisk = x\nmemory = 1\n", "t.conf:3: memory must be between 16M and 1T, not '1'" },
                { "name = a b\n", "t.conf:1: invalid name 'a b' (1-32 letters, digits, '-' or '_')" },
                { "name = a\njunk\n", "t.conf:2: expected 'key = value', got 'junk'" },
                { "name = a\ndisk =\n", "t.conf:2: key 'disk' has no value" },
                { "cpus = 1\n", "t.conf: missing key 'name'" },
                { "name = a\n", "VM a boots from disk but has no 'disk'" },
                { "name = a\ndisk = x\nforward = tcp:1:2\n", "VM a has forwards but no user-mode NIC ('nic = user')" },
                { "name = a\ndisk = x\nnic = user\nforward = tcp:70000:2\n",
                  "t.conf:4: Invalid forward 'tcp:70000:2': host port must be 1..65535 or 'auto'" },
                { "name = a\ndisk = x\nnic = user\nforward = sctp:1:2\n",
                  "t.conf:4: Invalid forward 'sctp:1:2': protocol must be tcp or udp" },
                { "name = a\ndisk = x\nnic = user,mac=01:00:00:00:00:01\n",
                  "t.conf:3: Invalid NIC 'user,mac=01:00:00:00:00:01': mac must be auto or a unicast address like 52:54:00:12:34:56" },
                { "name = a\ndisk = x\nnic = user,vlan=2\n",
                  "t.conf:3: Invalid NIC 'user,vlan=2': vlan and ip need a vmhost network, not user-mode NAT" },
                { "name = a\ndisk = x\nnic = lan,vlan=4095\n", "t.conf:3: Invalid NIC 'lan,vlan=4095': vlan must be 1..4094" },
                { "name = a\ndisk = x\nnic = lan,speed=10\n",
                  "t.conf:3: Invalid NIC 'lan,speed=10': unknown option 'speed=10' (mac, vlan, model, ip)" },
                { "name = a\ndisk = x\nnic = ../x\n",
                  "t.conf:3: Invalid NIC '../x': expected NETWORK[,mac=MAC][,vlan=N][,model=virtio|e1000][,ip=ADDR] where NETWORK is 'user' or a network's name" },
                { "name = a\ndisk = x\nnic = user,mac=02:00:00:00:00:01\nnic = lan,mac=02:00:00:00:00:01\n",
                  "VM a: NICs 0 and 1 have the same MAC 02:00:00:00:00:01" },
                { "name = a\ndisk = x\nvnc = 0.0.0.0\n",
                  "t.conf:3: vnc must be none or HOST:DISPLAY (display 0..99), e.g. 127.0.0.1:5, not '0.0.0.0'" },
                { "name = a\ndisk = x\nboot = floppy\n", "t.conf:3: boot must be disk, cdrom or kernel, not 'floppy'" },
                { "name = a\nboot = cdrom\ndisk = x\n", "VM a boots from cdrom but has no 'cdrom'" },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct vm_def *def = NULL;
                struct vh_error err = {};
                int r = vm_def_parse(cases[i].text, "t.conf", &def, &err);
                if (r >= 0) {
                        test_fail(__FILE__, __LINE__, "case %zu parsed but should fail", i);
                        vm_def_free(def);
                        continue;
                }
                CHECK(def == NULL);
                CHECK_STREQ(err.msg, cases[i].msg);
        }
}

TEST(vm_def_limits) {
        /* A line past the limit and a file past the limit are refused. */
        size_t n = VM_CONF_MAX_LINE + 10;
        char *text = malloc(n + 32);
        strcpy(text, "name = a\nappend = ");
        memset(text + strlen(text), 'x', n);
        text[18 + n] = '\0';
        struct vm_def *def = NULL;
        struct vh_error err = {};
        CHECK_EQ_INT(vm_def_parse(text, "t.conf", &def, &err), -EINVAL);
        CHECK(strstr(err.msg, "t.conf:2: line longer than") != NULL);
        free(text);

        text = malloc(VM_CONF_MAX_BYTES + 2);
        memset(text, '\n', VM_CONF_MAX_BYTES + 1);
        text[VM_CONF_MAX_BYTES + 1] = '\0';
        CHECK_EQ_INT(vm_def_parse(text, "t.conf", &def, &err), -EFBIG);
        free(text);
}

static char *build_cmdline(const char *conf, const struct vm_launch *l) {
        struct vm_def *def = NULL;
        struct vh_error err = {};
        if (vm_def_parse(conf, "t", &def, &err) < 0) {
                test_fail(__FILE__, __LINE__, "parse: %s", err.msg);
                return NULL;
        }
        struct strv argv = {};
        char *s = NULL;
        if (vm_cmdline_build(def, l, &argv, &err) < 0)
                test_fail(__FILE__, __LINE__, "build: %s", err.msg);
        else
                s = strv_join(argv.v, " ");
        strv_done(&argv);
        vm_def_free(def);
        return s;
}

TEST(vm_cmdline_golden) {
        struct vm_launch l = {
                .qemu_binary = "qemu-system-x86_64",
                .accel = "tcg",
                .qmp_socket = "/run/vmhost/vms/demo/qmp.sock",
                .serial_socket = "/run/vmhost/vms/demo/serial.sock",
                .serial_log = "/var/lib/vmhost/vms/demo/serial.log",
                .pidfile = "/run/vmhost/vms/demo/qemu.pid",
                .host_ports = { 40001 },
                .nics = { [1] = { .tap = "vh-demo-1", .disable_offload = true } },
                .files = {
                        .disk_layers = {
                                { .file = { .fd_read = 10, .fd_write = 11 }, .driver = "file", .format = "qcow2" },
                                { .file = { .fd_read = 12 }, .driver = "host_device", .format = "raw" },
                        },
                        .n_disk_layers = 2,
                        .cdrom = { .fd_read = 13 },
                        .kernel = { .fd_read = 14 },
                        .initrd = { .fd_read = 15 },
                },
                .daemonize = true,
        };
        char *s = build_cmdline("name = demo\ndisk = /v/d,isk.qcow2\nnic = user,mac=52:54:00:aa:bb:cc\n"
                                "nic = lan,mac=52:54:00:aa:bb:cd,vlan=3\nvnc = 127.0.0.1:7\nforward = tcp:auto:7777\n"
                                "forward = udp:5353:53\nlocaltime = yes\n", &l);
        CHECK_STREQ(s,
                    "qemu-system-x86_64 -name demo,process=vmhost-demo -nodefaults -no-user-config "
                    "-machine pc,accel=tcg -smp 1 -m 256M "
                    "-sandbox on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny "
                    "-display none "
                    "-add-fd fd=12,set=0,opaque=disk0-layer1-read "
                    "-blockdev {\"driver\":\"host_device\",\"filename\":\"/dev/fdset/0\",\"node-name\":\"disk0-file1\",\"read-only\":true} "
                    "-blockdev {\"driver\":\"raw\",\"file\":\"disk0-file1\",\"node-name\":\"disk0-layer1\",\"read-only\":true} "
                    "-add-fd fd=10,set=1,opaque=disk0-layer0-read -add-fd fd=11,set=1,opaque=disk0-layer0-write "
                    "-blockdev {\"driver\":\"file\",\"filename\":\"/dev/fdset/1\",\"node-name\":\"disk0-file0\",\"discard\":\"unmap\"} "
                    "-blockdev {\"driver\":\"qcow2\",\"file\":\"disk0-file0\",\"node-name\":\"disk0-layer0\",\"discard\":\"unmap\",\"backing\":\"disk0-layer1\"} "
                    "-drive if=none,id=cd0-media,media=cdrom,readonly=on -device ide-cd,drive=cd0-media,id=cd0,bus=ide.1,unit=0 "
                    "-boot order=c "
                    "-netdev user,id=net0,hostfwd=tcp:127.0.0.1:40001-:7777,hostfwd=udp:127.0.0.1:5353-:53 "
                    "-device virtio-net-pci,netdev=net0,mac=52:54:00:aa:bb:cc "
                    "-netdev tap,id=net1,ifname=vh-demo-1,script=no,downscript=no "
                    "-device virtio-net-pci,netdev=net1,mac=52:54:00:aa:bb:cd,csum=off,guest_csum=off "
                    "-vga std -vnc 127.0.0.1:7 "
                    "-chardev socket,id=serial0,path=/run/vmhost/vms/demo/serial.sock,server=on,wait=off,"
                    "logfile=/var/lib/vmhost/vms/demo/serial.log,logappend=on -serial chardev:serial0 "
                    "-chardev socket,id=qmp0,path=/run/vmhost/vms/demo/qmp.sock,server=on,wait=off "
                    "-mon chardev=qmp0,mode=control "
                    "-device virtio-blk-pci,drive=disk0-layer0,id=disk0,write-cache=on -rtc base=localtime "
                    "-pidfile /run/vmhost/vms/demo/qemu.pid -daemonize");
        free(s);

        /* No TCP endpoint other than the 127.0.0.1 forwards, ever. */
        s = build_cmdline("name = k\nboot = kernel\nkernel = /k\ninitrd = /i\nappend = console=ttyS0\ncdrom = /c.iso\n"
                          "cpu = host\n", &l);
        CHECK(s && strstr(s, "-kernel /proc/self/fd/14 -initrd /proc/self/fd/15 -append console=ttyS0"));
        CHECK(s && !strstr(s, "fd=14") && !strstr(s, "fd=15"));
        CHECK(s && strstr(s, "-cpu host"));
        CHECK(s && strstr(s, "-add-fd fd=13,set=0,opaque=cd0-read "
                             "-drive if=none,id=cd0-media,media=cdrom,readonly=on,file=/dev/fdset/0,format=raw"));
        CHECK(s && !strstr(s, "tcp:") && !strstr(s, "-netdev") && !strstr(s, "-vnc"));
        /* No disk: no disk device, and the layers given are not passed. */
        CHECK(s && !strstr(s, "virtio-blk") && !strstr(s, "-blockdev") && !strstr(s, "fd=10"));
        free(s);

        /* The bottom of a qcow2 chain has "backing": null: QEMU must not
         * follow a backing name in its header. */
        struct vm_launch one = l;
        one.files.n_disk_layers = 1;
        s = build_cmdline("name = d\ndisk = /d.qcow2\n", &one);
        CHECK(s && strstr(s, "\"node-name\":\"disk0-layer0\",\"discard\":\"unmap\",\"backing\":null}"));
        free(s);
}

/* Files the definition names but the launch did not open are refused, as
 * are descriptors that would give QEMU more than it needs. */
TEST(vm_cmdline_files_refused) {
        static const struct {
                const char *conf;
                struct vm_launch_files files;
                const char *msg;
        } cases[] = {
                { "name = d\ndisk = /d.qcow2\n", {}, "Disk /d.qcow2 of VM d was not opened for QEMU" },
                /* The VM's own file must be writable. */
                { "name = d\ndisk = /d.qcow2\n",
                  { .disk_layers = { { .file = { .fd_read = 10 }, .driver = "file", .format = "qcow2" } }, .n_disk_layers = 1 },
                  "Layer 0 of the disk of VM d has the wrong descriptors" },
                /* A backing file is never writable by QEMU. */
                { "name = d\ndisk = /d.qcow2\n",
                  { .disk_layers = { { .file = { .fd_read = 10, .fd_write = 11 }, .driver = "file", .format = "qcow2" },
                                     { .file = { .fd_read = 12, .fd_write = 13 }, .driver = "file", .format = "raw" } },
                    .n_disk_layers = 2 },
                  "Layer 1 of the disk of VM d has the wrong descriptors" },
                { "name = d\ndisk = /d.raw\ndisk-format = raw\n",
                  { .disk_layers = { { .file = { .fd_read = 10, .fd_write = 11 }, .driver = "file", .format = "raw" },
                                     { .file = { .fd_read = 12 }, .driver = "file", .format = "raw" } },
                    .n_disk_layers = 2 },
                  "Layer 0 of the disk of VM d is raw but has a backing file" },
                { "name = d\ncdrom = /c.iso\nboot = cdrom\n", {}, "CD-ROM image /c.iso of VM d was not opened for QEMU" },
                { "name = d\nboot = kernel\nkernel = /k\n", {}, "The kernel file of VM d was not opened for QEMU" },
                { "name = d\nboot = kernel\nkernel = /k\ninitrd = /i\n", { .kernel = { .fd_read = 10 } },
                  "The initrd file of VM d was not opened for QEMU" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct vm_launch l = {
                        .qemu_binary = "qemu-system-x86_64",
                        .accel = "tcg",
                        .qmp_socket = "/q",
                        .serial_socket = "/s",
                        .serial_log = "/l",
                        .files = cases[i].files,
                };
                struct vm_def *def = NULL;
                struct vh_error err = {};
                if (vm_def_parse(cases[i].conf, "t", &def, &err) < 0) {
                        test_fail(__FILE__, __LINE__, "case %zu: parse: %s", i, err.msg);
                        continue;
                }
                struct strv argv = {};
                CHECK_EQ_INT(vm_cmdline_build(def, &l, &argv, &err), -EINVAL);
                CHECK_STREQ(err.msg, cases[i].msg);
                strv_done(&argv);
                vm_def_free(def);
        }
}

TEST(vm_mac_is_stable_local_unicast) {
        char a[18], b[18], c[18], d[18];
        CHECK_EQ_INT(vm_derive_mac(1, 0, a), 0);
        CHECK_EQ_INT(vm_derive_mac(1, 0, b), 0);
        CHECK_EQ_INT(vm_derive_mac(2, 0, c), 0);
        CHECK_EQ_INT(vm_derive_mac(1, 1, d), 0);
        CHECK_STREQ(a, b);
        CHECK(strcmp(a, c) != 0 && strcmp(a, d) != 0);
        CHECK(vm_mac_is_valid(a) && vm_mac_is_valid(d));
        /* Locally administered, unicast; NIC index in the first octet, the
         * VM id in the last two. */
        CHECK(strncmp(a, "02:", 3) == 0 && strncmp(d, "12:", 3) == 0);
        CHECK(strcmp(a + 12, "00:01") == 0);
        CHECK_EQ_INT(vm_derive_mac(0, 0, a), -EINVAL);
        CHECK_EQ_INT(vm_derive_mac(1, 16, a), -EINVAL);
}

TEST(vm_forward_format_roundtrip) {
        struct vm_forward f;
        char b[64];
        CHECK_EQ_INT(vm_forward_parse("tcp:auto:22", &f, NULL), 0);
        CHECK_STREQ(vm_forward_format(&f, b, sizeof(b)), "tcp:auto:22");
        CHECK_EQ_INT(vm_forward_parse("udp:1:65535", &f, NULL), 0);
        CHECK_STREQ(vm_forward_format(&f, b, sizeof(b)), "udp:1:65535");
        CHECK_EQ_INT(vm_forward_parse("tcp:1:2:3", &f, NULL), -EINVAL);
        CHECK_EQ_INT(vm_forward_parse("tcp:1", &f, NULL), -EINVAL);
        CHECK_EQ_INT(vm_forward_parse("tcp:0:2", &f, NULL), -EINVAL);
}
