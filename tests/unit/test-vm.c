/* tests/unit/test-vm.c: unit tests for src/vm/: definitions, the QEMU
 * command line, MAC derivation. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/fileio.h"
#include "base/lockfile.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "base/strv.h"
#include "vm/vm-accel.h"
#include "vm/vm-addr.h"
#include "vm/vm-alloc.h"
#include "vm/vm-cmdline.h"
#include "vm/vm-def.h"
#include "vm/vm-json.h"
#include "vm/vm-list.h"
#include "vm/vm-ops.h"
#include "vm/vm-vnc.h"
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
        CHECK_EQ_INT(def->vnc, VM_VNC_TCP);
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
                  "t.conf:3: vnc must be unix, none or HOST:DISPLAY (display 0..99), e.g. 127.0.0.1:5, not '0.0.0.0'" },
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
                .qmp_watch_socket = "/run/vmhost/vms/demo/qmp-watch.sock",
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
                    "-vga std -vnc 127.0.0.1:7,password=on "
                    "-chardev socket,id=serial0,path=/run/vmhost/vms/demo/serial.sock,server=on,wait=off,"
                    "logfile=/var/lib/vmhost/vms/demo/serial.log,logappend=on -serial chardev:serial0 "
                    "-chardev socket,id=qmp0,path=/run/vmhost/vms/demo/qmp.sock,server=on,wait=off "
                    "-mon chardev=qmp0,mode=control "
                    "-chardev socket,id=qmp1,path=/run/vmhost/vms/demo/qmp-watch.sock,server=on,wait=off "
                    "-mon chardev=qmp1,mode=control "
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

TEST(vm_def_vnc_values) {
        /* The vnc key: what each value parses to and writes back as. An old
         * "127.0.0.1:N" stays a TCP display (password protected now). */
        static const struct {
                const char *value;
                enum vm_vnc kind;
                const char *host;
                unsigned display;
                const char *written; /* NULL: no vnc line */
        } ok[] = {
                { "unix", VM_VNC_UNIX, NULL, 0, "vnc = unix\n" },
                { "none", VM_VNC_NONE, NULL, 0, NULL },
                { "127.0.0.1:5", VM_VNC_TCP, "127.0.0.1", 5, "vnc = 127.0.0.1:5\n" },
                { "0.0.0.0:99", VM_VNC_TCP, "0.0.0.0", 99, "vnc = 0.0.0.0:99\n" },
                { "vm-host.example:0", VM_VNC_TCP, "vm-host.example", 0, "vnc = vm-host.example:0\n" },
                { "[::1]:3", VM_VNC_TCP, "[::1]", 3, "vnc = [::1]:3\n" },
        };
        for (size_t i = 0; i < ELEMENTSOF(ok); i++) {
                struct vh_error err = {};
                _cleanup_free_ char *text = strdup_printf("name = a\ndisk = x\nvnc = %s\n", ok[i].value);
                struct vm_def *def = NULL;
                CHECK_EQ_INT(vm_def_parse(text, "t.conf", &def, &err), 0);
                if (!def)
                        continue;
                CHECK_EQ_INT(def->vnc, ok[i].kind);
                if (ok[i].host) {
                        CHECK_STREQ(def->vnc_host, ok[i].host);
                        CHECK_EQ_INT(def->vnc_display, ok[i].display);
                }
                _cleanup_free_ char *out = vm_def_format(def);
                const char *line = out ? strstr(out, "vnc = ") : NULL;
                if (ok[i].written)
                        CHECK(line && strneq(line, ok[i].written, strlen(ok[i].written)));
                else
                        CHECK(out && !line);
                vm_def_free(def);
        }
        /* No vnc key: no display (definitions written before vnc existed). */
        struct vm_def *def = NULL;
        struct vh_error err = {};
        CHECK_EQ_INT(vm_def_parse("name = a\ndisk = x\n", "t.conf", &def, &err), 0);
        CHECK(def && def->vnc == VM_VNC_NONE);
        vm_def_free(def);

        /* Refused: anything that could smuggle a QEMU option or is no
         * host, and displays out of range. */
        static const char *const bad[] = {
                "127.0.0.1,password=off:5", "127.0.0.1:5,password=off", "0.0.0.0", ":5", "127.0.0.1:100",
                "127.0.0.1:-1", "a b:1", "[::1:2", "[]:1", "unix:/tmp/x", "auto", "",
                "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa:1",
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                def = vm_def_new("a");
                err = (struct vh_error) {};
                int r = def ? vm_def_set(def, "vnc", bad[i], &err) : -ENOMEM;
                if (r != -EINVAL)
                        test_fail(__FILE__, __LINE__, "vnc '%s': %d, expected -EINVAL", bad[i], r);
                else
                        CHECK(strstr(err.msg, "vnc must be unix, none or HOST:DISPLAY") != NULL);
                CHECK(def && def->vnc == VM_VNC_NONE);
                vm_def_free(def);
        }

        CHECK(vm_vnc_host_is_loopback("127.0.0.1"));
        CHECK(vm_vnc_host_is_loopback("127.1.2.3"));
        CHECK(vm_vnc_host_is_loopback("localhost"));
        CHECK(vm_vnc_host_is_loopback("[::1]"));
        CHECK(!vm_vnc_host_is_loopback("0.0.0.0"));
        CHECK(!vm_vnc_host_is_loopback("127.example"));
        CHECK(!vm_vnc_host_is_loopback("192.168.1.2"));
        CHECK(!vm_vnc_host_is_loopback("[::]"));
}

TEST(vm_vnc_passwords) {
        /* 8 characters (all VNC authentication uses), from the alphabet
         * without look-alikes, and a new one each time. */
        char first[VM_VNC_PASSWORD_LEN + 1] = "";
        bool all_same = true;
        for (int i = 0; i < 200; i++) {
                char pw[VM_VNC_PASSWORD_LEN + 1];
                CHECK_EQ_INT(vm_vnc_password_new(pw), 0);
                CHECK_EQ_INT(strlen(pw), VM_VNC_PASSWORD_LEN);
                CHECK(strspn(pw, "abcdefghijkmnopqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789") == VM_VNC_PASSWORD_LEN);
                if (i == 0)
                        memcpy(first, pw, sizeof(pw));
                else if (!streq(pw, first))
                        all_same = false;
        }
        CHECK(!all_same);
}

TEST(vm_cmdline_vnc) {
        /* Every VNC display QEMU opens requires a password; the default one
         * is a unix socket (its path escaped like the others). */
        struct vm_launch l = {
                .qemu_binary = "qemu-system-x86_64",
                .accel = "tcg",
                .qmp_socket = "/run/q.sock",
                .serial_socket = "/run/s.sock",
                .serial_log = "/var/s.log",
                .vnc_socket = "/run/vm,s/vnc.sock",
                .files = {
                        .disk_layers = { { .file = { .fd_read = 10, .fd_write = 11 }, .driver = "file", .format = "raw" } },
                        .n_disk_layers = 1,
                },
        };
        char *s = build_cmdline("name = a\ndisk = /d\nvnc = unix\n", &l);
        CHECK(s && strstr(s, " -vga std -vnc unix:/run/vm,,s/vnc.sock,password=on "));
        free(s);
        s = build_cmdline("name = a\ndisk = /d\nvnc = 0.0.0.0:7\n", &l);
        CHECK(s && strstr(s, " -vnc 0.0.0.0:7,password=on "));
        free(s);
        s = build_cmdline("name = a\ndisk = /d\nvnc = none\n", &l);
        CHECK(s && !strstr(s, "-vnc") && !strstr(s, "-vga"));
        free(s);
        /* A unix display needs its socket path; no silent TCP fallback. */
        l.vnc_socket = NULL;
        struct vm_def *def = NULL;
        struct vh_error err = {};
        struct strv argv = {};
        CHECK_EQ_INT(vm_def_parse("name = a\ndisk = /d\nvnc = unix\n", "t", &def, &err), 0);
        CHECK_EQ_INT(def ? vm_cmdline_build(def, &l, &argv, &err) : -ENOMEM, -EINVAL);
        strv_done(&argv);
        vm_def_free(def);
}

TEST(vm_mac_is_stable_local_unicast) {
        char a[18], b[18], c[18], d[18];
        CHECK_EQ_INT(vm_derive_mac(test_ctx(), 1, 0, a), 0);
        CHECK_EQ_INT(vm_derive_mac(test_ctx(), 1, 0, b), 0);
        CHECK_EQ_INT(vm_derive_mac(test_ctx(), 2, 0, c), 0);
        CHECK_EQ_INT(vm_derive_mac(test_ctx(), 1, 1, d), 0);
        CHECK_STREQ(a, b);
        CHECK(strcmp(a, c) != 0 && strcmp(a, d) != 0);
        CHECK(vm_mac_is_valid(a) && vm_mac_is_valid(d));
        /* Locally administered, unicast; NIC index in the first octet, the
         * VM id in the last two. */
        CHECK(strncmp(a, "02:", 3) == 0 && strncmp(d, "12:", 3) == 0);
        CHECK(strcmp(a + 12, "00:01") == 0);
        CHECK_EQ_INT(vm_derive_mac(test_ctx(), 0, 0, a), -EINVAL);
        CHECK_EQ_INT(vm_derive_mac(test_ctx(), 1, 16, a), -EINVAL);
}

/* A second home in the test's directory (its own state dir). */
static struct vh_context *other_home(const char *sub) {
        _cleanup_free_ char *dir = strdup_printf("%s/%s", test_tmpdir(), sub);
        struct vh_context_params p = { .state_dir = dir };
        struct vh_context *c = NULL;
        if (!dir || mkdir_p(dir, 0700) < 0 || vh_context_new(&p, &c, NULL) < 0)
                return NULL;
        return c;
}

TEST(vm_host_id_made_once_random_per_home) {
        char a[VM_HOST_ID_LEN + 1], a2[VM_HOST_ID_LEN + 1], b[VM_HOST_ID_LEN + 1];
        struct vh_error err = {};
        CHECK_EQ_INT(vm_host_id_get(test_ctx(), a, &err), 0);
        CHECK_EQ_INT(strlen(a), VM_HOST_ID_LEN);
        CHECK_EQ_INT(strspn(a, "0123456789abcdef"), VM_HOST_ID_LEN);
        /* Kept: the second read is the file's. */
        CHECK_EQ_INT(vm_host_id_get(test_ctx(), a2, &err), 0);
        CHECK_STREQ(a, a2);
        _cleanup_free_ char *path = strdup_printf("%s/host-id", test_tmpdir()), *text = NULL;
        CHECK(path && read_one_line_file(path, &text) >= 0 && text && streq(text, a));
        /* Another home on the same machine (same /etc/machine-id) differs. */
        struct vh_context *o = other_home("other");
        CHECK(o != NULL);
        if (!o)
                return;
        CHECK_EQ_INT(vm_host_id_get(o, b, &err), 0);
        CHECK(strcmp(a, b) != 0);
        char ma[18], mb[18];
        CHECK_EQ_INT(vm_derive_mac(test_ctx(), 1, 0, ma), 0);
        CHECK_EQ_INT(vm_derive_mac(o, 1, 0, mb), 0);
        CHECK(strcmp(ma, mb) != 0);
        /* A file that holds something else is refused, naming it. */
        _cleanup_free_ char *opath = strdup_printf("%s/other/host-id", test_tmpdir());
        CHECK(opath && write_file_atomic(opath, "not-an-id\n", 10, 0644) >= 0);
        err = (struct vh_error) {};
        CHECK_EQ_INT(vm_host_id_get(o, b, &err), -EINVAL);
        CHECK(strstr(err.msg, "host-id is not a host id") != NULL);
        CHECK_EQ_INT(vm_derive_mac(o, 1, 0, mb), -EINVAL);
        vh_context_free(o);
}

struct host_id_race {
        const struct vh_context *ctx;
        pthread_barrier_t *start;
        char id[VM_HOST_ID_LEN + 1];
        int r;
        char msg[VH_ERROR_MAX];
};

static void *host_id_race_thread(void *p) {
        struct host_id_race *t = p;
        struct vh_error e = {};
        pthread_barrier_wait(t->start);
        t->r = vm_host_id_get(t->ctx, t->id, &e);
        snprintf(t->msg, sizeof(t->msg), "%s", e.msg);
        return NULL;
}

/* Threads of one process (a daemon) making the host id at once: each
 * gets it, all the same one (the first link wins), no temporary left. */
TEST(vm_host_id_threads_race) {
        enum { THREADS = 8, ROUNDS = 40 };
        for (int round = 0; round < ROUNDS; round++) {
                char sub[32];
                snprintf(sub, sizeof(sub), "idrace%d", round);
                struct vh_context *c = other_home(sub);
                CHECK(c != NULL);
                if (!c)
                        return;
                pthread_barrier_t start;
                pthread_barrier_init(&start, NULL, THREADS);
                struct host_id_race t[THREADS] = {};
                pthread_t th[THREADS];
                for (int i = 0; i < THREADS; i++) {
                        t[i] = (struct host_id_race) { .ctx = c, .start = &start };
                        CHECK_EQ_INT(pthread_create(&th[i], NULL, host_id_race_thread, &t[i]), 0);
                }
                for (int i = 0; i < THREADS; i++)
                        pthread_join(th[i], NULL);
                pthread_barrier_destroy(&start);
                bool ok = true;
                for (int i = 0; i < THREADS; i++) {
                        if (t[i].r != 0 || !streq(t[i].id, t[0].id)) {
                                fprintf(stderr, "round %d thread %d: %d %s (%s vs %s)\n", round, i, t[i].r, t[i].msg,
                                        t[i].id, t[0].id);
                                ok = false;
                        }
                }
                CHECK(ok);
                _cleanup_free_ char *dir = strdup_printf("%s/%s", test_tmpdir(), sub);
                DIR *d = dir ? opendir(dir) : NULL;
                CHECK(d != NULL);
                for (struct dirent *de; d && (de = readdir(d));)
                        CHECK(!startswith(de->d_name, ".host-id"));
                if (d)
                        closedir(d);
                vh_context_free(c);
                if (!ok)
                        break;
        }
}

TEST(vm_mac_derive_carries_the_host_id) {
        static const struct {
                const char *host_id;
                unsigned id, index; /* out of range: -EINVAL */
        } cases[] = {
                { "00000000000000000000000000000000", 1, 0 },
                { "00000000000000000000000000000000", 258, 3 },
                { "ffffffffffffffffffffffffffffffff", 65535, 15 },
                { "00000000000000000000000000000000", 0, 0 },
                { "00000000000000000000000000000000", 65536, 0 },
                { "00000000000000000000000000000000", 1, 16 },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char m[18], want[32];
                uint32_t h = vm_host_id_mix(cases[i].host_id);
                CHECK(h <= 0xffffff);
                int r = vm_mac_derive(h, cases[i].id, cases[i].index, m);
                if (cases[i].id == 0 || cases[i].id > 65535 || cases[i].index >= 16) {
                        CHECK_EQ_INT(r, -EINVAL);
                        continue;
                }
                CHECK_EQ_INT(r, 0);
                snprintf(want, sizeof(want), "%02x:%02x:%02x:%02x:%02x:%02x", cases[i].index << 4 | 2, h >> 16,
                         (h >> 8) & 0xff, h & 0xff, cases[i].id >> 8, cases[i].id & 0xff);
                CHECK_STREQ(m, want);
                CHECK(vm_mac_is_valid(m));
        }
        /* Two host ids that differ in one digit give other MACs for the same VM id. */
        char a[18], b[18];
        CHECK_EQ_INT(vm_mac_derive(vm_host_id_mix("0123456789abcdef0123456789abcdef"), 7, 0, a), 0);
        CHECK_EQ_INT(vm_mac_derive(vm_host_id_mix("0123456789abcdef0123456789abcdee"), 7, 0, b), 0);
        CHECK(strcmp(a, b) != 0);
        CHECK_EQ_INT(vm_host_id_mix("0123456789abcdef0123456789abcdef"),
                     vm_host_id_mix("0123456789abcdef0123456789abcdef"));
}

TEST(vm_alloc_id_avoids_other_hosts_macs) {
        struct vh_error err = {};
        unsigned id = 0;
        CHECK_EQ_INT(vm_alloc_id(test_ctx(), NULL, &id, &err), 0);
        CHECK_EQ_INT(id, 1);
        /* Another host holds the MACs this home would derive for ids 1
         * (NIC 0) and 2 (NIC 1): the next id is 3. */
        char m1[18], m2[18], m3[18];
        CHECK_EQ_INT(vm_derive_mac(test_ctx(), 1, 0, m1), 0);
        CHECK_EQ_INT(vm_derive_mac(test_ctx(), 2, 1, m2), 0);
        for (char *p = m2; *p; p++)
                *p = (char) toupper((unsigned char) *p);
        char *avoid[] = { (char *) "52:54:00:12:34:56", m1, m2, NULL };
        CHECK_EQ_INT(vm_alloc_id(test_ctx(), avoid, &id, &err), 0);
        CHECK_EQ_INT(id, 3);
        CHECK_EQ_INT(vm_derive_mac(test_ctx(), 3, 0, m3), 0);
        /* A MAC given by hand that another host uses is refused, naming it. */
        struct vm_def *def = NULL;
        _cleanup_free_ char *conf = strdup_printf("name = v\ndisk = /d\nnic = user,mac=%s\n", m1);
        CHECK_EQ_INT(vm_def_parse(conf, "t", &def, &err), 0);
        if (def) {
                CHECK_EQ_INT(vm_alloc_check_macs(def, avoid, &err), -EADDRINUSE);
                CHECK(strstr(err.msg, m1) != NULL && strstr(err.msg, "VM v") != NULL);
                char *none[] = { m3, NULL };
                CHECK_EQ_INT(vm_alloc_check_macs(def, none, &err), 0);
                CHECK_EQ_INT(vm_alloc_check_macs(def, NULL, &err), 0);
        }
        vm_def_free(def);
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

TEST(vm_disk_format_choose_table) {
        static const struct {
                const char *probed, *explicit_format, *want; /* want NULL: refused */
                const char *msg;                             /* in the error */
        } cases[] = {
                { "raw", NULL, "raw", NULL },
                { "qcow2", NULL, "qcow2", NULL },
                { "raw", "raw", "raw", NULL },
                { "qcow2", "qcow2", "qcow2", NULL },
                /* The probe contradicts what was given: both are named. */
                { "raw", "qcow2", NULL, "is raw (no qcow2 header), but the disk format given is qcow2" },
                { "qcow2", "raw", NULL, "is qcow2 (it has a qcow2 header), but the disk format given is raw" },
                { "raw", "vmdk", NULL, "qcow2 or raw, not 'vmdk'" },
                { "vpc", NULL, NULL, "is a vpc image" },
                { NULL, NULL, NULL, "unknown" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const char *got = "untouched";
                struct vh_error err = {};
                int r = vm_disk_format_choose("d.img", cases[i].probed, cases[i].explicit_format, &got, &err);
                if (cases[i].want) {
                        CHECK_EQ_INT(r, 0);
                        CHECK_STREQ(got, cases[i].want);
                } else {
                        CHECK_EQ_INT(r, -EINVAL);
                        CHECK_STREQ(got, "untouched");
                        CHECK(strstr(err.msg, cases[i].msg) != NULL);
                        CHECK(strstr(err.msg, "d.img") != NULL || cases[i].explicit_format);
                }
        }
}

TEST(vm_accel_check_cpu_host_needs_kvm) {
        struct vh_error err = {};
        CHECK_EQ_INT(vm_accel_check_cpu("web", NULL, "tcg", &err), 0);
        CHECK_EQ_INT(vm_accel_check_cpu("web", "max", "tcg", &err), 0);
        CHECK_EQ_INT(vm_accel_check_cpu("web", "host", "kvm", &err), 0);
        CHECK_EQ_INT(vm_accel_check_cpu("web", "qemu64", "kvm", &err), 0);
        CHECK_EQ_INT(vm_accel_check_cpu("web", "host", "tcg", &err), -EINVAL);
        CHECK(strstr(err.msg, "VM web") && strstr(err.msg, "TCG") && strstr(err.msg, "--cpu max"));
}

TEST(vm_user_nat_address) {
        /* QEMU's user-mode DHCP starts at the 15th host: 10.0.2.15 by default. */
        struct net_prefix p = { .addr = 0x0a000200, .len = 24 };
        char b[NET_IPV4_STRLEN];
        CHECK_STREQ(net_ipv4_format(vm_user_nat_guest_address(&p), b), "10.0.2.15");
        p = (struct net_prefix) { .addr = 0xac100000, .len = 16 };
        CHECK_STREQ(net_ipv4_format(vm_user_nat_guest_address(&p), b), "172.16.0.15");

        /* A running VM with a user-mode NIC (no files read for it); a
         * stopped one has no addresses. */
        const char *text = "name = u1\nboot = kernel\nkernel = /k\nid = 3\nnic = user,mac=02:00:00:00:00:03\n";
        struct vm_def *def = NULL;
        struct vh_error err = {};
        CHECK_EQ_INT(vm_def_parse(text, "t.conf", &def, &err), 0);
        if (!def)
                return;
        struct vm_status st = { .state = VM_STATE_RUNNING };
        struct vm_address *a = NULL;
        CHECK_EQ_INT(vm_addresses(test_ctx(), def, &st, 0, &a, &err), 1);
        if (a) {
                CHECK_STREQ(a[0].ip, "10.0.2.15");
                CHECK_STREQ(a[0].mac, "02:00:00:00:00:03");
                CHECK_STREQ(a[0].network, "user");
                CHECK_STREQ(vm_addr_source_to_string(a[0].source), "user-nat");
        }
        free(a);
        st.state = VM_STATE_STOPPED;
        a = (struct vm_address *) &st;
        CHECK_EQ_INT(vm_addresses(test_ctx(), def, &st, 0, &a, &err), 0);
        CHECK(a == NULL);
        vm_def_free(def);
}

/* A child that takes 'path' (op "started"), says so on a pipe and waits
 * to be killed: another process than the test, as a real holder is. */
static pid_t spawn_lock_holder(const char *path) {
        int pfd[2];
        if (pipe(pfd) < 0)
                return -1;
        pid_t pid = fork();
        if (pid == 0) {
                close(pfd[0]);
                int fd = vh_lockfile_take(path, "VM t1", "started", 0, NULL);
                char c = fd >= 0 ? 'y' : 'n';
                if (write(pfd[1], &c, 1) != 1)
                        _exit(1);
                for (;;)
                        pause();
        }
        close(pfd[1]);
        char c = 0;
        if (pid < 0 || read(pfd[0], &c, 1) != 1 || c != 'y') {
                if (pid > 0) {
                        kill(pid, SIGKILL);
                        waitpid(pid, NULL, 0);
                }
                pid = -1;
        }
        close(pfd[0]);
        return pid;
}

TEST(lockfile_waiter_times_out_naming_holder_and_death_frees_it) {
        _cleanup_free_ char *path = strdup_printf("%s/t1.lock", test_tmpdir());
        pid_t holder = spawn_lock_holder(path);
        CHECK(holder > 0);
        if (holder <= 0)
                return;

        struct vh_lock_holder h = {};
        CHECK_EQ_INT(vh_lockfile_holder(path, &h), 1);
        CHECK_EQ_INT(h.pid, holder);
        CHECK_STREQ(h.op, "started");

        struct vh_error err = {};
        int fd = vh_lockfile_take(path, "VM t1", "stopped", 200, &err);
        CHECK_EQ_INT(fd, -EBUSY);
        char want[96];
        snprintf(want, sizeof(want), "VM t1 is busy: being started by pid %d", (int) holder);
        CHECK(strstr(err.msg, want) != NULL);
        if (!strstr(err.msg, want))
                fprintf(stderr, "  message: %s\n", err.msg);

        /* The holder dies without unlocking: the kernel frees the lock. */
        kill(holder, SIGKILL);
        waitpid(holder, NULL, 0);
        CHECK_EQ_INT(vh_lockfile_holder(path, NULL), 0);
        fd = vh_lockfile_take(path, "VM t1", "stopped", 0, &err);
        CHECK(fd >= 0);
        /* Now we are the holder on record. */
        _cleanup_free_ char *text = NULL;
        CHECK(read_one_line_file(path, &text) >= 0);
        snprintf(want, sizeof(want), "%d stopped", (int) getpid());
        CHECK_STREQ(text, want);
        safe_close(fd);
}

TEST(lockfile_two_descriptors_of_one_process_conflict) {
        _cleanup_free_ char *path = strdup_printf("%s/x.lock", test_tmpdir());
        struct vh_error err = {};
        int a = vh_lockfile_take(path, "thing x", "changed", 0, &err);
        CHECK(a >= 0);
        /* Two threads of a server would hold two descriptors: they exclude
         * each other as two processes do. */
        CHECK_EQ_INT(vh_lockfile_take(path, "thing x", "changed", 50, &err), -EBUSY);
        CHECK(strstr(err.msg, "thing x is busy: being changed by pid") != NULL);
        safe_close(a);
        int b = vh_lockfile_take(path, "thing x", "changed", 0, &err);
        CHECK(b >= 0);
        safe_close(b);
}

static void vm_lock_status_body(void) {
        /* A definition on disk for vm_get_status to find. */
        struct vm_def *def = vm_def_new("t1");
        struct vh_error err = {};
        CHECK(def && vm_def_set(def, "disk", "/dev/null", &err) == 0);
        CHECK(def && vm_save(test_ctx(), def, &err) == 0);
        vm_def_free(def);

        /* Re-entrant within this thread. */
        struct vm_lock *a = NULL, *b = NULL;
        CHECK_EQ_INT(vm_lock_take(test_ctx(), "t1", "changed", 0, &a, &err), 0);
        CHECK_EQ_INT(vm_lock_take(test_ctx(), "t1", "changed", 0, &b, &err), 0);
        struct vm_status st;
        CHECK_EQ_INT(vm_get_status(test_ctx(), "t1", &st, &err), 0);
        CHECK_EQ_INT(st.state, VM_STATE_STOPPED);
        vm_lock_release(b);
        vm_lock_release(a);

        /* A start under way in another process: status says "starting"
         * and does not wait for it; another start is told who is busy. */
        _cleanup_free_ char *path = NULL;
        CHECK_EQ_INT(vm_lock_path(test_ctx(), "t1", &path), 0);
        pid_t holder = path ? spawn_lock_holder(path) : -1;
        CHECK(holder > 0);
        if (holder <= 0)
                return;
        CHECK_EQ_INT(vm_get_status(test_ctx(), "t1", &st, &err), 0);
        CHECK_EQ_INT(st.state, VM_STATE_STARTING);
        CHECK_STREQ(vm_state_to_string(st.state), "starting");
        CHECK_EQ_INT(vm_lock_take(test_ctx(), "t1", "started", 100, &a, &err), -EBUSY);
        char want[64];
        snprintf(want, sizeof(want), "VM t1 is busy: being started by pid %d", (int) holder);
        CHECK(strstr(err.msg, want) != NULL);
        CHECK_EQ_INT(vm_delete(test_ctx(), "t1", &err), -EBUSY);
        CHECK(vm_exists(test_ctx(), "t1"));
        kill(holder, SIGKILL);
        waitpid(holder, NULL, 0);
        CHECK_EQ_INT(vm_get_status(test_ctx(), "t1", &st, &err), 0);
        CHECK_EQ_INT(st.state, VM_STATE_STOPPED);
        CHECK_EQ_INT(vm_delete(test_ctx(), "t1", &err), 0);
        CHECK(!vm_exists(test_ctx(), "t1"));
}

TEST(vm_lock_reentrant_status_starting_delete_busy) {
        vm_lock_status_body(); /* in test_ctx()'s home, the test's directory */
}

TEST(vm_path_absolute_table) {
        static const struct {
                const char *path, *base_dir, *want; /* want NULL: refused */
        } cases[] = {
                { "rel.qcow2", "/home/u", "/home/u/rel.qcow2" },
                { "sub/rel.qcow2", "/home/u/", "/home/u/sub/rel.qcow2" },
                { "/abs/d.qcow2", "/home/u", "/abs/d.qcow2" },
                { "/abs/d.qcow2", NULL, "/abs/d.qcow2" },
                { "rel.qcow2", NULL, NULL },
                { "rel.qcow2", "not/absolute", NULL },
                { "", "/home/u", NULL },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char *abs = NULL;
                struct vh_error err = {};
                int r = vm_path_absolute(cases[i].path, cases[i].base_dir, "Disk", &abs, &err);
                if (cases[i].want) {
                        CHECK_EQ_INT(r, 0);
                        CHECK_STREQ(abs, cases[i].want);
                } else {
                        CHECK_EQ_INT(r, -EINVAL);
                        CHECK(err.msg[0]);
                }
                free(abs);
        }
}

/* A broken definition read for the allocator: what parses counts, a bad
 * value of another key is skipped (and reported), and a line that may hide
 * an allocated value fails with its line named. */
TEST(vm_def_parse_lenient_keeps_what_parses) {
        const char *text = "name = qa\nmemory = 12x\ndisk = /d\nid = 4\nnic = user,mac=02:00:00:00:00:04\n"
                           "vnc = 127.0.0.1:3\nforward = tcp:2222:22\ncpus = lots\n";
        struct vm_def *def = NULL;
        struct vh_error err = {};
        CHECK(vm_def_parse(text, "t.conf", &def, &err) < 0);
        CHECK_STREQ(err.msg, "t.conf:2: memory must be a size like 512M or 2G, not '12x'");
        err = (struct vh_error) {};
        CHECK_EQ_INT(vm_def_parse_lenient(text, "t.conf", &def, &err), 2);
        CHECK_STREQ(err.msg, "t.conf:2: memory must be a size like 512M or 2G, not '12x'");
        if (def) {
                CHECK_EQ_INT(def->id, 4);
                CHECK_EQ_INT(def->n_nics, 1);
                CHECK_STREQ(def->nics[0].mac, "02:00:00:00:00:04");
                CHECK_EQ_INT(def->vnc_display, 3);
                CHECK_EQ_INT(def->forwards[0].host_port, 2222);
                def = vm_def_free(def);
        }
        static const struct {
                const char *text, *msg;
        } fatal[] = {
                { "name = qa\ndisk = /d\nid = 1x\n", "t.conf:3: id must be 1..65535, not '1x'" },
                { "name = qa\nmemory 12x\n", "t.conf:2: expected 'key = value', got 'memory 12x'" },
                { "name = qa\nvnc = 0.0.0.0\n",
                  "t.conf:2: vnc must be unix, none or HOST:DISPLAY (display 0..99), e.g. 127.0.0.1:5, not '0.0.0.0'" },
                { "name = qa\n = 3\n", "t.conf:2: unknown key ''" },
        };
        for (size_t i = 0; i < ELEMENTSOF(fatal); i++) {
                err = (struct vh_error) {};
                def = NULL;
                CHECK(vm_def_parse_lenient(fatal[i].text, "t.conf", &def, &err) < 0);
                CHECK(def == NULL);
                CHECK_STREQ(err.msg, fatal[i].msg);
        }
        /* Valid as a whole: 0; parsed but invalid as a whole: 1. */
        err = (struct vh_error) {};
        CHECK_EQ_INT(vm_def_parse_lenient("name = a\ndisk = /d\n", "t.conf", &def, &err), 0);
        def = vm_def_free(def);
        CHECK_EQ_INT(vm_def_parse_lenient("name = a\n", "t.conf", &def, &err), 1);
        CHECK_STREQ(err.msg, "VM a boots from disk but has no 'disk'");
        vm_def_free(def);
}

/* A thread's re-entry is per lock file, not per VM name: the same name in
 * two homes (two contexts in one process, as a server may hold) are two
 * VMs, and each take locks its own file. */
TEST(vm_lock_same_name_two_homes) {
        char b_state[4096];
        snprintf(b_state, sizeof(b_state), "%s/home-b", test_ctx()->state_dir);
        CHECK(mkdir(b_state, 0700) == 0 || errno == EEXIST);
        struct vh_context *b = NULL;
        struct vh_context_params params = { .state_dir = b_state, .exec_path = test_ctx()->exec_path };
        CHECK_EQ_INT(vh_context_new(&params, &b, NULL), 0);
        if (!b)
                return;
        struct vm_lock *la = NULL, *lb = NULL;
        CHECK_EQ_INT(vm_lock_take(test_ctx(), "twin", "started", 1000, &la, NULL), 0);
        CHECK_EQ_INT(vm_lock_take(b, "twin", "started", 1000, &lb, NULL), 0);
        char *pa = NULL, *pb = NULL;
        CHECK_EQ_INT(vm_lock_path(test_ctx(), "twin", &pa), 0);
        CHECK_EQ_INT(vm_lock_path(b, "twin", &pb), 0);
        CHECK(pa && pb && strcmp(pa, pb) != 0);
        /* Both files are locked (by this process: another description sees it). */
        CHECK_EQ_INT(vh_lockfile_holder(pa, NULL), 1);
        CHECK_EQ_INT(vh_lockfile_holder(pb, NULL), 1);
        vm_lock_release(lb);
        CHECK_EQ_INT(vh_lockfile_holder(pb, NULL), 0);
        CHECK_EQ_INT(vh_lockfile_holder(pa, NULL), 1);
        vm_lock_release(la);
        CHECK_EQ_INT(vh_lockfile_holder(pa, NULL), 0);
        free(pa);
        free(pb);
        vh_context_free(b);
}

/* /proc/PID/stat and /proc/stat as the kernel writes them, and what is not. */
TEST(vm_process_start_parse_table) {
        /* Fields 4-21, then starttime (22) and the rest. */
        static const char mid[] = "1 2 3 0 -1 4194560 100 0 0 0 5 6 0 0 20 0 1 0";
        const char *btime = "cpu  1 2 3\ncpu0 1 2 3\nintr 5 0 0\nctxt 9\nbtime 1700000000\nprocesses 44\n";
        static const struct {
                const char *comm, *tail;
                long hz;
                int want;      /* 0 or -errno */
                int64_t start; /* when 0 */
        } cases[] = {
                { "qemu-system-x86", " 250000 1000 10\n", 100, 0, 1700000000 + 2500 },
                /* A name with spaces and ')': the fields follow the last ')'. */
                { "a) b (c)", " 199 1000 10\n", 100, 0, 1700000001 },
                { "x", " 0\n", 100, 0, 1700000000 },
                { "x", " 1234567890123456789 1\n", 100, -EINVAL, 0 }, /* 19 digits: too many */
                { "x", " 12345678901234567\n", 100, 0, 1700000000 + 123456789012345 },
                { "x", " -5 1\n", 100, -EINVAL, 0 },                /* starttime is never negative */
                { "x", " 12x 1\n", 100, -EINVAL, 0 },
                { "x", "\n", 100, -EINVAL, 0 },                    /* cut short */
                { "x", " 100\n", 0, -EINVAL, 0 },                  /* no tick rate */
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *stat = strdup_printf("4242 (%s) S %s%s", cases[i].comm, mid, cases[i].tail);
                int64_t t = -1;
                int r = vm_process_start_parse(stat, btime, cases[i].hz, &t);
                if (r != cases[i].want || (r == 0 && t != cases[i].start))
                        test_fail(__FILE__, __LINE__, "case %zu: %d %" PRId64 ", want %d %" PRId64, i, r, t,
                                  cases[i].want, cases[i].start);
        }
        _cleanup_free_ char *good = strdup_printf("1 (q) S %s 100 1\n", mid);
        int64_t t;
        CHECK_EQ_INT(vm_process_start_parse(good, "cpu 1\nbtime 0\n", 100, &t), -EINVAL);
        CHECK_EQ_INT(vm_process_start_parse(good, "cpu 1\nxbtime 5\n", 100, &t), -EINVAL);
        CHECK_EQ_INT(vm_process_start_parse(good, "btime 5", 100, &t), 0);
        CHECK_EQ_INT(t, 6);
        CHECK_EQ_INT(vm_process_start_parse("no parenthesis", btime, 100, &t), -EINVAL);
        /* Past the limits: refused before any parsing. */
        char *big = malloc(VM_PROC_PID_STAT_MAX + 2);
        CHECK(big != NULL);
        if (big) {
                memset(big, 'a', VM_PROC_PID_STAT_MAX + 1);
                big[VM_PROC_PID_STAT_MAX + 1] = '\0';
                CHECK_EQ_INT(vm_process_start_parse(big, btime, 100, &t), -E2BIG);
                free(big);
        }
        /* This very process, read from the real files: it started before
         * now, and not before the test runner did (within its run time). */
        _cleanup_free_ char *self = NULL, *sys = NULL;
        CHECK(read_full_file("/proc/self/stat", VM_PROC_PID_STAT_MAX, &self, NULL) >= 0);
        CHECK(read_full_file("/proc/stat", VM_PROC_STAT_MAX, &sys, NULL) >= 0);
        if (self && sys) {
                CHECK_EQ_INT(vm_process_start_parse(self, sys, sysconf(_SC_CLK_TCK), &t), 0);
                int64_t now = (int64_t) time(NULL);
                CHECK(t <= now + 1 && t > now - 3600);
        }
}

/* "started" and "busy" in the status object: only when known. */
TEST(vm_status_json_started_busy) {
        struct vm_def *def = vm_def_new("s1");
        struct vh_error err = {};
        CHECK(def && vm_def_set(def, "disk", "/d.qcow2", &err) == 0);
        if (!def)
                return;
        struct vm_status st = { .state = VM_STATE_RUNNING, .pid = 77, .accel = "tcg", .started_at = 1700000123 };
        snprintf(st.busy, sizeof(st.busy), "stopped");
        st.busy_pid = 9;
        struct json_writer w;
        json_writer_init(&w, false);
        vm_status_to_json(&w, def, &st, NULL, 0, NULL);
        int r;
        _cleanup_free_ char *s = json_writer_finish(&w, &r);
        CHECK(s && strstr(s, "\"pid\":77,\"accel\":\"tcg\",\"started\":1700000123,\"busy\":\"stopped\",\"busy-pid\":9,"));
        st = (struct vm_status) { .state = VM_STATE_STOPPED, .started_at = 5 };
        json_writer_init(&w, false);
        vm_status_to_json(&w, def, &st, NULL, 0, NULL);
        _cleanup_free_ char *s2 = json_writer_finish(&w, &r);
        CHECK(s2 && !strstr(s2, "started") && !strstr(s2, "busy"));
        vm_def_free(def);
}

/* A thread of this process holding VM 'name's lock, as a worker thread of
 * 'vmhost web' does during an action, until told to let go. */
struct lock_thread {
        const char *name;
        int took;       /* 1 taken, -1 failed */
        int release_fd; /* read end: closed by the test to release */
        int ready_fd;   /* write end: one byte once taken */
};

static void *lock_thread_main(void *arg) {
        struct lock_thread *t = arg;
        struct vm_lock *lock = NULL;
        t->took = vm_lock_take(test_ctx(), t->name, "stopped", 0, &lock, NULL) == 0 ? 1 : -1;
        char c = 'x';
        (void) !write(t->ready_fd, &c, 1);
        if (t->took > 0) {
                (void) !read(t->release_fd, &c, 1); /* returns when the test closes its end */
                vm_lock_release(lock);
        }
        return NULL;
}

/* Writes a runtime state that records a QEMU that is gone (a pid that was
 * just reaped): the state in which vm_get_status() wants the lock for the
 * crash clean-up. */
static void record_gone_qemu(const char *name) {
        struct vm_paths p = {};
        CHECK_EQ_INT(vm_paths_get(test_ctx(), name, &p, NULL), 0);
        pid_t dead = fork();
        if (dead == 0)
                _exit(0);
        waitpid(dead, NULL, 0);
        CHECK(mkdir_p(p.runtime_dir, 0700) == 0);
        _cleanup_free_ char *text = strdup_printf("pid=%d\naccel=tcg\nstarted=1700000000\n", (int) dead);
        CHECK(text && write_file_atomic(p.runtime_state, text, strlen(text), 0600) == 0);
        vm_paths_done(&p);
}

/* A listing never waits for a VM's lock: 3 VMs, two of them with a gone
 * QEMU on record whose clean-up needs the lock, which another process (a
 * start) and another thread of this process (a stop) hold. Each used to
 * cost a 1 s wait; now the listing is quick, names the actions, leaves
 * the files to the holders, and cleans up once the locks are free. */
TEST(vm_list_does_not_wait_for_busy_vms) {
        static const char *const names[] = { "b1", "b2", "b3" };
        struct vh_error err = {};
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                struct vm_def *def = vm_def_new(names[i]);
                CHECK(def && vm_def_set(def, "disk", "/dev/null", &err) == 0);
                CHECK(def && vm_save(test_ctx(), def, &err) == 0);
                vm_def_free(def);
        }
        record_gone_qemu("b1");
        record_gone_qemu("b2");

        _cleanup_free_ char *path = NULL;
        CHECK_EQ_INT(vm_lock_path(test_ctx(), "b1", &path), 0);
        pid_t holder = path ? spawn_lock_holder(path) : -1;
        CHECK(holder > 0);
        int release[2], ready[2];
        CHECK(pipe(release) == 0 && pipe(ready) == 0);
        struct lock_thread lt = { .name = "b2", .release_fd = release[0], .ready_fd = ready[1] };
        pthread_t thread;
        CHECK(pthread_create(&thread, NULL, lock_thread_main, &lt) == 0);
        char c;
        CHECK(read(ready[0], &c, 1) == 1);
        CHECK_EQ_INT(lt.took, 1);

        uint64_t t0 = vh_clock_ms();
        char **list = NULL;
        int n = vm_list_names(test_ctx(), &list, &err);
        CHECK_EQ_INT(n, 3);
        struct vm_status st[3] = {};
        for (int i = 0; i < n && i < 3; i++) {
                struct vm_def *def = NULL;
                CHECK_EQ_INT(vm_describe(test_ctx(), list[i], &def, &st[i], &err), 0);
                vm_def_free(def);
        }
        uint64_t dt = vh_clock_ms() - t0;
        vm_names_free(list);
        /* Well under the 1 s one wait used to take (two of them here). */
        CHECK(dt < 300);
        if (dt >= 300)
                fprintf(stderr, "  listing took %" PRIu64 " ms\n", dt);
        CHECK_EQ_INT(st[0].state, VM_STATE_STARTING);
        CHECK_STREQ(st[0].busy, "started");
        CHECK_EQ_INT(st[0].busy_pid, holder);
        CHECK_EQ_INT(st[1].state, VM_STATE_STOPPED);
        CHECK_STREQ(st[1].busy, "stopped");
        CHECK_EQ_INT(st[1].busy_pid, getpid());
        CHECK_EQ_INT(st[2].state, VM_STATE_STOPPED);
        CHECK_STREQ(st[2].busy, "");
        CHECK_EQ_INT(st[2].busy_pid, 0);
        /* The holders' files were left alone. */
        struct vm_paths p1 = {}, p2 = {};
        CHECK_EQ_INT(vm_paths_get(test_ctx(), "b1", &p1, NULL), 0);
        CHECK_EQ_INT(vm_paths_get(test_ctx(), "b2", &p2, NULL), 0);
        CHECK(file_exists(p1.runtime_state) && file_exists(p2.runtime_state));

        /* Free again: the next status does the clean-up, under the lock. */
        if (holder > 0) {
                kill(holder, SIGKILL);
                waitpid(holder, NULL, 0);
        }
        close(release[1]);
        pthread_join(thread, NULL);
        close(release[0]);
        close(ready[0]);
        close(ready[1]);
        for (int i = 0; i < 2; i++) {
                struct vm_status s;
                CHECK_EQ_INT(vm_get_status(test_ctx(), names[i], &s, &err), 0);
                CHECK_EQ_INT(s.state, VM_STATE_CRASHED);
                CHECK_STREQ(s.busy, "");
                CHECK_EQ_INT(s.started_at, 0);
        }
        CHECK(!file_exists(p1.runtime_state) && !file_exists(p2.runtime_state));
        vm_paths_done(&p1);
        vm_paths_done(&p2);
}
