/* tests/unit/test-doctor.c: unit tests for src/probe/ (the doctor's parsers,
 * the KVM probe's verdicts, its per-boot cache, the probe process harness
 * and one real probe of this machine's /dev/kvm). The parser inputs are
 * real outputs of the programs and files they read. */
#include <fcntl.h>
#include <poll.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/fileio.h"
#include "probe/probe-parse.h"
#include "probe/kvm-probe.h"
#include "test.h"
#include "vmhost/doctor.h"

TEST(doctor_parse_version_table) {
        static const struct {
                const char *in;
                int r;
                unsigned major, minor, micro;
                const char *text, *detail;
        } cases[] = {
                { "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)\n"
                  "Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n",
                  0, 7, 2, 19, "7.2.19", "Debian 1:7.2+dfsg-7+deb12u18" },
                { "qemu-img version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright ...\n",
                  0, 7, 2, 22, "7.2.22", "Debian 1:7.2+dfsg-7+deb12u18+b3" },
                /* Old QEMUs put no space before the package. */
                { "QEMU emulator version 2.11.1(Debian 1:2.11+dfsg-1ubuntu7.41)\n",
                  0, 2, 11, 1, "2.11.1", "Debian 1:2.11+dfsg-1ubuntu7.41" },
                { "QEMU emulator version 8.2.0\n", 0, 8, 2, 0, "8.2.0", "" },
                { "nftables v1.0.6 (Lester Gooch #5)\n", 0, 1, 0, 6, "1.0.6", "Lester Gooch #5" },
                { "Dnsmasq version 2.90  Copyright (c) 2000-2024 Simon Kelley\n", 0, 2, 90, 0, "2.90", "" },
                { "ovs-vsctl (Open vSwitch) 3.1.0\nDB Schema 8.3.1\n", 0, 3, 1, 0, "3.1.0", "" },
                { "OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19 27 Jan 2026\n", 0, 9, 2, 0, "9.2p1", "" },
                /* "86_64" sits inside a word; no version on the first line. */
                { "qemu-system-x86_64: -accel kvm: failed\n7.2.1\n", -EINVAL, 0, 0, 0, NULL, NULL },
                { "version 12\n", -EINVAL, 0, 0, 0, NULL, NULL },
                { "", -EINVAL, 0, 0, 0, NULL, NULL },
                { "1.2", 0, 1, 2, 0, "1.2", "" },
                { "deb12u18 1.5", 0, 1, 5, 0, "1.5", "" },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct probe_version v;
                int r = probe_parse_version(cases[i].in, &v);
                if (r != cases[i].r) {
                        test_fail(__FILE__, __LINE__, "case %zu: probe_parse_version = %d, want %d", i, r, cases[i].r);
                        continue;
                }
                if (r < 0)
                        continue;
                if (v.major != cases[i].major || v.minor != cases[i].minor || v.micro != cases[i].micro)
                        test_fail(__FILE__, __LINE__, "case %zu: %u.%u.%u", i, v.major, v.minor, v.micro);
                CHECK_STREQ(v.text, cases[i].text);
                CHECK_STREQ(v.detail, cases[i].detail);
        }
        CHECK(probe_parse_version(NULL, &(struct probe_version) {}) == -EINVAL);
}

TEST(doctor_version_format) {
        struct probe_version v;
        char buf[128];
        CHECK(probe_parse_version("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)", &v) == 0);
        CHECK_STREQ(probe_version_format(&v, buf, sizeof(buf)), "7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)");
        CHECK(probe_parse_version("Dnsmasq version 2.90", &v) == 0);
        CHECK_STREQ(probe_version_format(&v, buf, sizeof(buf)), "2.90");
}

TEST(doctor_accel_help) {
        const char *out = "Accelerators supported in QEMU binary:\ntcg\nkvm\n";
        CHECK(probe_accel_help_has(out, "tcg"));
        CHECK(probe_accel_help_has(out, "kvm"));
        CHECK(!probe_accel_help_has(out, "xen"));
        CHECK(!probe_accel_help_has("Accelerators supported in QEMU binary:\nkvm\n", "tcg"));
        CHECK(!probe_accel_help_has("", "tcg"));
}

TEST(doctor_bool_param_table) {
        static const struct {
                const char *in;
                int r;
                bool v;
        } cases[] = {
                { "Y\n", 0, true }, { "N\n", 0, false }, { "1\n", 0, true }, { "0", 0, false },
                { " Y ", 0, true }, { "y", 0, true },   { "yes", -EINVAL, false },
                { "", -EINVAL, false }, { "2", -EINVAL, false }, { "YN", -EINVAL, false },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                bool v = !cases[i].v;
                int r = probe_parse_bool_param(cases[i].in, &v);
                if (r != cases[i].r)
                        test_fail(__FILE__, __LINE__, "probe_parse_bool_param(\"%s\") = %d", cases[i].in, r);
                else if (r == 0 && v != cases[i].v)
                        test_fail(__FILE__, __LINE__, "probe_parse_bool_param(\"%s\") wrong value", cases[i].in);
        }
        bool v;
        CHECK(probe_parse_bool_param(NULL, &v) == -EINVAL);
}

TEST(doctor_cpuinfo_table) {
        static const struct {
                const char *in;
                int r;
                const char *vendor, *model;
                bool vmx, svm, hypervisor;
        } cases[] = {
                { "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz\n"
                  "flags\t\t: fpu vme de pse tsc msr vmx smx est tm2\n\n"
                  "processor\t: 1\nvendor_id\t: GenuineIntel\nflags\t\t: fpu svm\n",
                  0, "GenuineIntel", "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz", true, false, false },
                { "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"
                  "flags\t\t: fpu vme svm hypervisor lahf_lm\n",
                  0, "AuthenticAMD", "AMD EPYC 7B13", false, true, true },
                /* This machine: a guest without AMD-V. */
                { "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel name\t: AMD EPYC\n"
                  "flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep hypervisor lahf_lm cmp_legacy\n"
                  "bugs\t\t: cpu_meltdown spectre_v1\n\n",
                  0, "AuthenticAMD", "AMD EPYC", false, false, true },
                /* A flag name that only contains "vmx" is not vmx. */
                { "vendor_id : GenuineIntel\nflags : vmxon svmx\n", 0, "GenuineIntel", "", false, false, false },
                /* arm64 has no vendor_id or flags line. */
                { "processor\t: 0\nBogoMIPS\t: 50.00\nFeatures\t: fp asimd evtstrm\n", -EINVAL, NULL, NULL, false, false, false },
                { "", -EINVAL, NULL, NULL, false, false, false },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct probe_cpu_info c;
                int r = probe_parse_cpuinfo(cases[i].in, &c);
                if (r != cases[i].r) {
                        test_fail(__FILE__, __LINE__, "case %zu: probe_parse_cpuinfo = %d", i, r);
                        continue;
                }
                if (r < 0)
                        continue;
                CHECK_STREQ(c.vendor, cases[i].vendor);
                CHECK_STREQ(c.model, cases[i].model);
                if (c.vmx != cases[i].vmx || c.svm != cases[i].svm || c.hypervisor != cases[i].hypervisor)
                        test_fail(__FILE__, __LINE__, "case %zu: flags vmx=%d svm=%d hypervisor=%d", i, c.vmx, c.svm,
                                  c.hypervisor);
        }
        CHECK_STREQ(probe_kvm_vendor_module("GenuineIntel"), "kvm_intel");
        CHECK_STREQ(probe_kvm_vendor_module("AuthenticAMD"), "kvm_amd");
        CHECK_STREQ(probe_kvm_vendor_module("HygonGenuine"), "kvm_amd");
        CHECK(probe_kvm_vendor_module("CentaurHauls") == NULL);
        CHECK(probe_kvm_vendor_module(NULL) == NULL);
}

TEST(doctor_modprobe_option_table) {
        static const struct {
                const char *text, *module;
                int r;
                const char *value;
        } cases[] = {
                { "options kvm_intel nested=1\n", "kvm_intel", 1, "1" },
                { "# enable nested\noptions kvm-intel nested=Y enable_apicv=0\n", "kvm_intel", 1, "Y" },
                { "options kvm_amd nested=1\n", "kvm_intel", 0, NULL },
                { "#options kvm_intel nested=1\n", "kvm_intel", 0, NULL },
                { "options kvm_intel ept=1\n", "kvm_intel", 0, NULL },
                { "blacklist kvm_intel\noptions kvm_intel nested=\"1\"\n", "kvm_intel", 1, "1" },
                /* The last setting wins, as on the module's command line. */
                { "options kvm_amd nested=1\noptions kvm_amd nested=0\n", "kvm_amd", 1, "0" },
                { "options kvm_intel nested_early_check=1\n", "kvm_intel", 0, NULL },
                { "", "kvm_intel", 0, NULL },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char v[16] = "";
                int r = probe_modprobe_find_option(cases[i].text, cases[i].module, "nested", v, sizeof(v));
                if (r != cases[i].r)
                        test_fail(__FILE__, __LINE__, "case %zu: probe_modprobe_find_option = %d", i, r);
                else if (r > 0)
                        CHECK_STREQ(v, cases[i].value);
        }
}

/* Excerpts of Debian 12's 6.1.0-56-cloud-amd64 lists. */
static const char modules_dep[] =
        "kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko\n"
        "kernel/arch/x86/kvm/kvm-intel.ko: kernel/arch/x86/kvm/kvm.ko kernel/virt/lib/irqbypass.ko\n"
        "kernel/drivers/net/tun.ko:\n"
        "kernel/drivers/net/vxlan/vxlan.ko: kernel/net/ipv6/ip6_udp_tunnel.ko kernel/net/ipv4/udp_tunnel.ko\n"
        "kernel/net/bridge/bridge.ko: kernel/net/802/stp.ko kernel/net/llc/llc.ko\n"
        "kernel/net/openvswitch/openvswitch.ko.xz: kernel/net/nsh/nsh.ko.xz\n";
static const char modules_builtin[] =
        "kernel/net/unix/unix.ko\n"
        "kernel/net/ipv6/ipv6.ko\n";
static const char proc_modules[] =
        "kvm_amd 155648 0 - Live 0x0000000000000000\n"
        "bridge 311296 0 - Live 0x0000000000000000\n";

TEST(doctor_module_lists) {
        CHECK(probe_modules_list_has(modules_dep, "tun"));
        CHECK(probe_modules_list_has(modules_dep, "bridge"));
        CHECK(probe_modules_list_has(modules_dep, "kvm_intel"));
        CHECK(probe_modules_list_has(modules_dep, "kvm-intel"));
        CHECK(probe_modules_list_has(modules_dep, "openvswitch"));
        /* Dependencies are not targets: stp.ko is only needed by bridge here. */
        CHECK(!probe_modules_list_has(modules_dep, "stp"));
        CHECK(!probe_modules_list_has(modules_dep, "kvm_amd"));
        CHECK(!probe_modules_list_has(modules_dep, "tu"));
        CHECK(!probe_modules_list_has(modules_dep, "vxla"));
        CHECK(probe_modules_list_has(modules_builtin, "ipv6"));
        CHECK(!probe_modules_list_has(modules_builtin, "bridge"));
        CHECK(!probe_modules_list_has(NULL, "bridge"));

        CHECK(probe_proc_modules_has(proc_modules, "kvm_amd"));
        CHECK(probe_proc_modules_has(proc_modules, "kvm-amd"));
        CHECK(probe_proc_modules_has(proc_modules, "bridge"));
        CHECK(!probe_proc_modules_has(proc_modules, "kvm"));
        CHECK(!probe_proc_modules_has(NULL, "kvm"));
}

static const char kconfig[] =
        "# Automatically generated file; DO NOT EDIT.\n"
        "CONFIG_NET_NS=y\n"
        "CONFIG_KVM=y\n"
        "# CONFIG_KVM_INTEL is not set\n"
        "CONFIG_BRIDGE=m\n"
        "CONFIG_TUN=y\n"
        "CONFIG_VXLAN=m\n"
        "# CONFIG_OPENVSWITCH is not set\n"
        "CONFIG_LOCALVERSION=\"-cloud\"\n"
        "CONFIG_NR_CPUS=64\n";

TEST(doctor_kconfig_table) {
        static const struct {
                const char *symbol;
                int want;
        } cases[] = {
                { "NET_NS", 'y' }, { "KVM", 'y' }, { "KVM_INTEL", 'n' }, { "BRIDGE", 'm' },
                { "OPENVSWITCH", 'n' }, { "LOCALVERSION", 'y' }, { "NR_CPUS", 'y' },
                /* Prefixes of other symbols are not matches. */
                { "KVM_", 0 }, { "NET", 0 }, { "VLAN_8021Q", 0 },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                int k = probe_kconfig_lookup(kconfig, cases[i].symbol);
                if (k != cases[i].want)
                        test_fail(__FILE__, __LINE__, "probe_kconfig_lookup(%s) = %d, want %d", cases[i].symbol, k,
                                  cases[i].want);
        }
        CHECK_EQ_INT(probe_kconfig_lookup(NULL, "KVM"), 0);
}

TEST(doctor_kmod_resolve_table) {
        static const struct probe_kernel_sources full = {
                .release = "6.1.0-56-cloud-amd64",
                .proc_modules = proc_modules,
                .modules_builtin = modules_builtin,
                .modules_dep = modules_dep,
                .config = kconfig,
                .config_name = "/boot/config-6.1.0-56-cloud-amd64",
        };
        /* This machine: no module support, only /proc/config.gz. */
        static const struct probe_kernel_sources nomod = {
                .release = "6.18.44-fc-v782",
                .config = "# CONFIG_MODULES is not set\nCONFIG_BRIDGE=y\nCONFIG_VXLAN=y\n# CONFIG_OPENVSWITCH is not set\n",
                .config_name = "/proc/config.gz",
        };
        static const struct probe_kernel_sources lists_only = {
                .release = "6.1.0",
                .modules_builtin = modules_builtin,
                .modules_dep = modules_dep,
        };
        static const struct probe_kernel_sources nothing = { .release = "6.1.0" };
        static const struct probe_kernel_sources dep_no_config = { .release = "6.1.0", .config = "CONFIG_GENEVE=m\n" };
        static const struct {
                const struct probe_kernel_sources *src;
                const char *module, *symbol;
                bool in_sysfs;
                enum probe_kmod_state want;
                const char *how;
        } cases[] = {
                { &full, "bridge", "BRIDGE", true, PROBE_KMOD_LOADED, "bridge is listed in /proc/modules" },
                { &full, "ipv6", "IPV6", true, PROBE_KMOD_BUILTIN, "ipv6 is in modules.builtin of 6.1.0-56-cloud-amd64" },
                { &full, "tun", "TUN", false, PROBE_KMOD_BUILTIN, "CONFIG_TUN=y in /boot/config-6.1.0-56-cloud-amd64" },
                { &full, "vxlan", "VXLAN", false, PROBE_KMOD_LOADABLE,
                  "vxlan.ko is in modules.dep of 6.1.0-56-cloud-amd64 (modprobe vxlan)" },
                { &full, "openvswitch", "OPENVSWITCH", false, PROBE_KMOD_ABSENT,
                  "CONFIG_OPENVSWITCH is not set in /boot/config-6.1.0-56-cloud-amd64" },
                { &full, "8021q", "VLAN_8021Q", false, PROBE_KMOD_ABSENT,
                  "8021q is in neither modules.builtin nor modules.dep of 6.1.0-56-cloud-amd64" },
                /* In /sys/module but not in /proc/modules: built in. */
                { &full, "kvm", NULL, true, PROBE_KMOD_BUILTIN, "/sys/module/kvm exists" },
                { &nomod, "bridge", "BRIDGE", true, PROBE_KMOD_BUILTIN, "CONFIG_BRIDGE=y in /proc/config.gz" },
                { &nomod, "openvswitch", "OPENVSWITCH", false, PROBE_KMOD_ABSENT,
                  "CONFIG_OPENVSWITCH is not set in /proc/config.gz" },
                { &nomod, "ip_gre", "NET_IPGRE", false, PROBE_KMOD_ABSENT,
                  "CONFIG_NET_IPGRE does not appear in /proc/config.gz" },
                { &nomod, "kvm_pvm", NULL, true, PROBE_KMOD_BUILTIN,
                  "/sys/module/kvm_pvm exists and the kernel has no module support" },
                { &lists_only, "tun", "TUN", false, PROBE_KMOD_LOADABLE, "tun.ko is in modules.dep of 6.1.0 (modprobe tun)" },
                { &lists_only, "geneve", "GENEVE", false, PROBE_KMOD_ABSENT,
                  "geneve is in neither modules.builtin nor modules.dep of 6.1.0" },
                { &nothing, "bridge", "BRIDGE", true, PROBE_KMOD_PRESENT, "/sys/module/bridge exists" },
                { &nothing, "bridge", "BRIDGE", false, PROBE_KMOD_UNKNOWN,
                  "no /proc/modules, modules.builtin, modules.dep or kernel config for 6.1.0" },
                { &dep_no_config, "geneve", "GENEVE", false, PROBE_KMOD_LOADABLE, "CONFIG_GENEVE=m in kernel config" },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                char how[256] = "";
                enum probe_kmod_state s = probe_kmod_resolve(cases[i].src, cases[i].module, cases[i].symbol,
                                                           cases[i].in_sysfs, how, sizeof(how));
                if (s != cases[i].want)
                        test_fail(__FILE__, __LINE__, "case %zu (%s): state %s, want %s", i, cases[i].module,
                                  probe_kmod_state_to_string(s), probe_kmod_state_to_string(cases[i].want));
                CHECK_STREQ(how, cases[i].how);
        }
        CHECK(probe_kmod_available(PROBE_KMOD_LOADABLE));
        CHECK(!probe_kmod_available(PROBE_KMOD_ABSENT));
        CHECK(!probe_kmod_available(PROBE_KMOD_UNKNOWN));
}

TEST(doctor_format_rate) {
        char b[32];
        CHECK_STREQ(probe_format_rate(1.1e6, b, sizeof(b)), "1.1 M");
        CHECK_STREQ(probe_format_rate(3.24e9, b, sizeof(b)), "3.2 G");
        CHECK_STREQ(probe_format_rate(850e3, b, sizeof(b)), "850 k");
        CHECK_STREQ(probe_format_rate(12, b, sizeof(b)), "12");
        CHECK_STREQ(probe_format_rate(100e6, b, sizeof(b)), "100.0 M");
        CHECK_STREQ(probe_format_rate(-1, b, sizeof(b)), "?");
}

TEST(doctor_kvm_classify_table) {
        static const struct {
                bool finished;
                uint64_t iterations;
                double seconds;
                enum probe_kvm_status want;
                const char *reason_part;
        } cases[] = {
                /* Real KVM: 2 M iterations in 1.5 ms. */
                { true, 2000000, 0.0015, PROBE_KVM_USABLE, "KVM ran the probe guest at 2.7 G instructions/s" },
                /* This kind of machine: a paravirtual KVM trapping every instruction. */
                { false, 165000, 0.300, PROBE_KVM_UNUSABLE,
                  "KVM runs guest code at 1.1 M instructions/s, below the 100.0 M/s needed; a stock kernel would not boot" },
                /* Finished, but too slow. */
                { true, 2000000, 0.100, PROBE_KVM_UNUSABLE, "KVM runs guest code at 40.0 M instructions/s" },
                /* Just above the threshold is usable. */
                { true, 2000000, 0.039, PROBE_KVM_USABLE, "102.6 M instructions/s" },
                { false, 0, 0.300, PROBE_KVM_UNUSABLE, "ran no loop iteration in 300 ms" },
                /* Fast while running, but it never finished: a stall. */
                { false, 1000000, 0.005, PROBE_KVM_UNUSABLE, "ran 1000000 of 2000000 probe iterations" },
                { true, 2000000, 0.0, PROBE_KVM_UNUSABLE, "0 instructions/s" },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct probe_kvm_result r = {
                        .finished = cases[i].finished,
                        .iterations = cases[i].iterations,
                        .iterations_target = 2000000,
                        .seconds = cases[i].seconds,
                };
                probe_kvm_classify(&r, 0);
                if (r.status != cases[i].want)
                        test_fail(__FILE__, __LINE__, "case %zu: status %s (%s)", i,
                                  probe_kvm_status_to_string(r.status), r.reason);
                if (!strstr(r.reason, cases[i].reason_part))
                        test_fail(__FILE__, __LINE__, "case %zu: reason \"%s\" lacks \"%s\"", i, r.reason,
                                  cases[i].reason_part);
        }

        struct probe_kvm_result fast = { .finished = true, .iterations = 2000000, .seconds = 0.002 };
        probe_kvm_classify(&fast, 0);
        CHECK(fast.instructions_per_second > 1.9e9 && fast.instructions_per_second < 2.1e9);
        CHECK(probe_kvm_accel(&fast, true) == PROBE_ACCEL_KVM);
        /* A stricter threshold turns the same numbers down. */
        probe_kvm_classify(&fast, 5e9);
        CHECK(fast.status == PROBE_KVM_UNUSABLE);
        CHECK(probe_kvm_accel(&fast, true) == PROBE_ACCEL_TCG);
        CHECK(probe_kvm_accel(&fast, false) == PROBE_ACCEL_NONE);
}

TEST(doctor_kvm_judge_table) {
        const struct probe_kvm_options opts = {
                .device = "/dev/kvm", .iterations = 2000000, .budget_ms = 300, .hard_timeout_ms = 2000, .min_ips = 100e6,
        };
        static const struct {
                struct probe_kvm_report rep;
                bool have, killed;
                int sig;
                enum probe_kvm_status want;
                bool openable;
                const char *reason_part;
        } cases[] = {
                { { .stage = PROBE_KVM_STAGE_OPEN, .error = EACCES, .api_version = -1 }, true, false, 0,
                  PROBE_KVM_NO_ACCESS, false, "cannot open /dev/kvm read-write: Permission denied (add the user to group 'kvm')" },
                { { .stage = PROBE_KVM_STAGE_OPEN, .error = ENODEV, .api_version = -1 }, true, false, 0,
                  PROBE_KVM_UNUSABLE, false, "/dev/kvm exists but no KVM driver answers it" },
                { { .stage = PROBE_KVM_STAGE_API, .error = EPROTO, .api_version = 11 }, true, false, 0,
                  PROBE_KVM_UNUSABLE, true, "KVM API version 11, vmhost needs 12" },
                { { .stage = PROBE_KVM_STAGE_API, .error = ENOTTY, .api_version = -1 }, true, false, 0,
                  PROBE_KVM_UNUSABLE, true, "KVM_GET_API_VERSION failed: Inappropriate ioctl for device" },
                { { .stage = PROBE_KVM_STAGE_CREATE_VM, .error = ENOMEM, .api_version = 12 }, true, false, 0,
                  PROBE_KVM_UNUSABLE, true, "KVM_CREATE_VM failed: Cannot allocate memory" },
                { { .stage = PROBE_KVM_STAGE_RUN, .api_version = 12, .ran = 1 }, true, true, 0,
                  PROBE_KVM_UNUSABLE, true, "KVM_RUN did not return within 2000 ms even when interrupted; killed the probe" },
                { { .stage = PROBE_KVM_STAGE_CREATE_VCPU, .api_version = 12 }, true, true, 0,
                  PROBE_KVM_UNUSABLE, true, "KVM_CREATE_VCPU did not return within 2000 ms" },
                { { .stage = 0 }, false, true, 0, PROBE_KVM_UNUSABLE, false, "did not start within 2000 ms" },
                { { .stage = PROBE_KVM_STAGE_MEMORY, .api_version = 12 }, true, false, SIGSEGV,
                  PROBE_KVM_UNUSABLE, true, "died with signal 11" },
                { { .stage = PROBE_KVM_STAGE_EXIT, .api_version = 12, .ran = 1, .exit_reason = 8, .rip = 0x1008 },
                  true, false, 0, PROBE_KVM_UNUSABLE, true, "KVM exit 8 (shutdown (triple fault)" },
                { { .stage = PROBE_KVM_STAGE_DONE, .api_version = 12, .ran = 1, .finished = 1, .rcx = 5, .seconds = 0.002 },
                  true, false, 0, PROBE_KVM_UNUSABLE, true, "ecx=5" },
                { { .stage = PROBE_KVM_STAGE_DONE, .api_version = 12, .ran = 1, .finished = 1, .rcx = 0, .seconds = 0.002 },
                  true, false, 0, PROBE_KVM_USABLE, true, "2.0 G instructions/s" },
                /* The budget ran out: ecx tells how far the loop got. */
                { { .stage = PROBE_KVM_STAGE_DONE, .api_version = 12, .ran = 1, .rcx = 2000000 - 165000, .seconds = 0.3 },
                  true, false, 0, PROBE_KVM_UNUSABLE, true, "1.1 M instructions/s" },
                /* The upper half of rcx is not part of ecx. */
                { { .stage = PROBE_KVM_STAGE_DONE, .api_version = 12, .ran = 1, .finished = 1, .rcx = 0xdead00000000ull,
                    .seconds = 0.002 },
                  true, false, 0, PROBE_KVM_USABLE, true, "instructions/s" },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct probe_kvm_result r = { .iterations_target = 2000000, .api_version = -1, .present = true };
                probe_kvm_judge(&opts, &cases[i].rep, cases[i].have, cases[i].killed, cases[i].sig, &r);
                if (r.status != cases[i].want)
                        test_fail(__FILE__, __LINE__, "case %zu: status %s (%s)", i,
                                  probe_kvm_status_to_string(r.status), r.reason);
                if (r.openable != cases[i].openable)
                        test_fail(__FILE__, __LINE__, "case %zu: openable %d", i, r.openable);
                if (!strstr(r.reason, cases[i].reason_part))
                        test_fail(__FILE__, __LINE__, "case %zu: reason \"%s\" lacks \"%s\"", i, r.reason,
                                  cases[i].reason_part);
        }
}

TEST(doctor_kvm_cache_roundtrip) {
        struct probe_kvm_result r = {
                .status = PROBE_KVM_UNUSABLE, .present = true, .openable = true, .api_version = 12, .ran = true,
                .iterations = 165000, .iterations_target = 2000000, .seconds = 0.3, .probe_seconds = 0.31,
        };
        snprintf(r.reason, sizeof(r.reason), "KVM runs guest code at 1.1 M instructions/s\nsecond line");
        char *text = NULL;
        CHECK(probe_kvm_cache_format(&r, "bb335092-13fe-42da-a8bd-937218b20b1c", &text) == 0);
        CHECK(text && !strstr(text, "\nsecond line"));

        struct probe_kvm_result back;
        CHECK(probe_kvm_cache_parse(text, "bb335092-13fe-42da-a8bd-937218b20b1c", &back) == 0);
        CHECK(back.status == PROBE_KVM_UNUSABLE);
        CHECK(back.present && back.openable && back.ran && !back.finished && !back.killed);
        CHECK_EQ_INT(back.api_version, 12);
        CHECK_EQ_U64(back.iterations, 165000);
        CHECK_EQ_U64(back.iterations_target, 2000000);
        CHECK(back.seconds > 0.2999 && back.seconds < 0.3001);
        CHECK(back.instructions_per_second > 1.09e6 && back.instructions_per_second < 1.11e6);
        CHECK_STREQ(back.reason, "KVM runs guest code at 1.1 M instructions/s second line");

        /* Another boot: the answer may have changed (modules, BIOS). */
        CHECK(probe_kvm_cache_parse(text, "00000000-0000-0000-0000-000000000000", &back) == -ESTALE);
        free(text);

        static const char *const bad[] = {
                "",
                "boot-id=x\nstatus=usable\n",                            /* no header */
                "vmhost-kvm-probe 1\nstatus=usable\n",                   /* no boot id */
                "vmhost-kvm-probe 1\nboot-id=x\n",                       /* no status */
                "vmhost-kvm-probe 1\nboot-id=x\nstatus=fast\n",          /* unknown status */
                "vmhost-kvm-probe 1\nboot-id=x\nstatus=usable\nfinished=2\n",
                "vmhost-kvm-probe 1\nboot-id=x\nstatus=usable\niterations=-1\n",
                "vmhost-kvm-probe 1\nboot-id=x\nstatus=usable\nseconds=nan\n",
                "vmhost-kvm-probe 1\nboot-id=x\nstatus=usable\njunk\n",
                "vmhost-kvm-probe 2\nboot-id=x\nstatus=usable\n",
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                if (probe_kvm_cache_parse(bad[i], "x", &back) != -EINVAL)
                        test_fail(__FILE__, __LINE__, "bad cache %zu accepted", i);
        /* Keys from a newer vmhost are ignored. */
        CHECK(probe_kvm_cache_parse("vmhost-kvm-probe 1\nboot-id=x\nstatus=usable\nfuture=1\n", "x", &back) == 0);
        CHECK(back.status == PROBE_KVM_USABLE);
}

TEST(doctor_kvm_probe_missing_device) {
        struct probe_kvm_options o = { .device = "/nonexistent/kvm" };
        struct probe_kvm_result r;
        CHECK(probe_kvm_probe(&o, &r, NULL) == 0);
        CHECK(r.status == PROBE_KVM_MISSING);
        CHECK(!r.present && !r.openable && !r.ran);
        CHECK(strstr(r.reason, "no /nonexistent/kvm") != NULL);
}

/* /dev/null opens read-write but is no KVM: the whole process harness runs
 * and the API step fails. */
TEST(doctor_kvm_probe_not_kvm) {
        struct probe_kvm_options o = { .device = "/dev/null" };
        struct probe_kvm_result r;
        CHECK(probe_kvm_probe(&o, &r, NULL) == 0);
        CHECK(r.status == PROBE_KVM_UNUSABLE);
        CHECK(r.present && r.openable && !r.ran && !r.killed);
        CHECK(strstr(r.reason, "KVM_GET_API_VERSION failed") != NULL);
        CHECK(r.probe_seconds > 0);
}

static void child_hangs(const struct probe_kvm_options *opts, struct probe_kvm_report *report,
                        void (*emit)(const struct probe_kvm_report *)) {
        report->stage = PROBE_KVM_STAGE_RUN;
        report->api_version = 12;
        report->ran = 1;
        emit(report);
        /* Like a KVM_RUN that never comes back, signals ignored. */
        signal(SIGALRM, SIG_IGN);
        for (;;)
                pause();
}

static void child_crashes(const struct probe_kvm_options *opts, struct probe_kvm_report *report,
                          void (*emit)(const struct probe_kvm_report *)) {
        report->stage = PROBE_KVM_STAGE_CREATE_VM;
        report->api_version = 12;
        emit(report);
        kill(getpid(), SIGKILL);
}

/* True once 'pid' has exited (a zombie until reaped), waiting at most
 * 'timeout_ms'; the status is left for the code under test to reap. */
static bool child_exited(pid_t pid, unsigned timeout_ms) {
        uint64_t deadline = vh_clock_ns() + (uint64_t) timeout_ms * 1000000u;
        for (;;) {
                siginfo_t si = {};
                if (waitid(P_PID, (id_t) pid, &si, WEXITED | WNOHANG | WNOWAIT) == 0 && si.si_pid == pid)
                        return true;
                if (vh_clock_ns() >= deadline)
                        return false;
                usleep(1000);
        }
}

/* The state, not the clock: the hung probe was killed, not before its
 * deadline (the same monotonic clock, so load can only make it later), and
 * reaped. No upper bound on the time: a loaded machine may take any time. */
TEST(doctor_kvm_probe_hard_timeout) {
        struct probe_kvm_options o = { .device = "/dev/null", .hard_timeout_ms = 300 };
        struct probe_kvm_job job;
        struct probe_kvm_result r;
        CHECK(probe_kvm_start(&o, child_hangs, &job, NULL) == 0);
        pid_t pid = job.pid;
        CHECK(probe_kvm_finish(&job, &r, NULL) == 0);
        CHECK(r.killed);
        CHECK(r.ran);
        CHECK(r.probe_seconds >= 0.3);
        CHECK(r.status == PROBE_KVM_UNUSABLE);
        CHECK(strstr(r.reason, "KVM_RUN did not return within 300 ms") != NULL);
        /* Reaped: no longer our child. */
        siginfo_t si = {};
        CHECK(waitid(P_PID, (id_t) pid, &si, WEXITED | WNOHANG) < 0 && errno == ECHILD);
}

/* The probe process never execs, so O_CLOEXEC does not close what it
 * inherits: it must close the parent's descriptors itself, or a probe stuck
 * in the kernel would hold a VM's lock (or another thread's pipe) open. A
 * pipe's read end sees POLLHUP once no write end is open anywhere; the probe
 * has reported (so it is past its clean-up) before we look. */
TEST(doctor_kvm_probe_child_keeps_no_parent_fds) {
        int p[2];
        CHECK(pipe2(p, O_CLOEXEC) == 0);
        struct probe_kvm_options o = { .device = "/dev/null", .hard_timeout_ms = 60 * 1000 };
        struct probe_kvm_job job;
        struct probe_kvm_result r;
        CHECK(probe_kvm_start(&o, child_hangs, &job, NULL) == 0);
        struct pollfd report = { .fd = job.fd, .events = POLLIN };
        CHECK(poll(&report, 1, 30 * 1000) == 1);
        close(p[1]);
        struct pollfd hup = { .fd = p[0], .events = POLLIN };
        CHECK(poll(&hup, 1, 0) == 1 && (hup.revents & POLLHUP));
        close(p[0]);
        kill(job.pid, SIGKILL);
        CHECK(probe_kvm_finish(&job, &r, NULL) == 0);
}

/* The doctor collects the probe after its other checks, maybe after the
 * hard timeout: a probe that had finished must not count as hung. Late is
 * made sure of, not slept for: the probe process has exited and its
 * deadline has passed before we ask. */
TEST(doctor_kvm_probe_collected_late) {
        struct probe_kvm_options o = { .device = "/dev/null", .hard_timeout_ms = 50 };
        struct probe_kvm_job job;
        struct probe_kvm_result r;
        CHECK(probe_kvm_start(&o, NULL, &job, NULL) == 0);
        CHECK(child_exited(job.pid, 30000));
        uint64_t deadline = job.start_ns + (uint64_t) o.hard_timeout_ms * 1000000u;
        while (vh_clock_ns() < deadline)
                usleep(1000);
        double asked = (double) (vh_clock_ns() - job.start_ns) / 1e9;
        CHECK(probe_kvm_finish(&job, &r, NULL) == 0);
        CHECK(!r.killed);
        CHECK(strstr(r.reason, "KVM_GET_API_VERSION failed") != NULL);
        /* Its own duration, stamped before it exited, not the time until
         * we asked. */
        CHECK(r.probe_seconds > 0);
        CHECK(r.probe_seconds < asked);
}

TEST(doctor_kvm_probe_child_dies) {
        struct probe_kvm_options o = { .device = "/dev/null" };
        struct probe_kvm_job job;
        struct probe_kvm_result r;
        CHECK(probe_kvm_start(&o, child_crashes, &job, NULL) == 0);
        CHECK(probe_kvm_finish(&job, &r, NULL) == 0);
        CHECK(!r.killed);
        CHECK(r.status == PROBE_KVM_UNUSABLE);
        CHECK(strstr(r.reason, "died with signal 9") != NULL);
        CHECK(strstr(r.reason, "KVM_CREATE_VM") != NULL);
}

/* The real thing: this machine's /dev/kvm. */
TEST(doctor_kvm_probe_real) {
        struct probe_kvm_result r;
        CHECK(probe_kvm_probe(NULL, &r, NULL) == 0);
        CHECK(r.reason[0] != '\0');

        if (!file_exists(PROBE_KVM_DEVICE)) {
                CHECK(r.status == PROBE_KVM_MISSING);
                CHECK(strstr(r.reason, "no /dev/kvm") != NULL);
                test_skip("no %s on this machine (%s)", PROBE_KVM_DEVICE, r.reason);
                return;
        }
        CHECK(r.present);
        CHECK(r.status != PROBE_KVM_MISSING);
        if (r.ran && !r.killed) {
                /* How long KVM_RUN took depends on the machine's load; that
                 * the budget stops it is what the judge's table tests. */
                CHECK(r.seconds > 0);
                CHECK(r.probe_seconds >= r.seconds);
                CHECK(r.iterations <= r.iterations_target);
                CHECK(r.finished || r.iterations < r.iterations_target);
        }
        fprintf(stderr, "  kvm probe: %s: %s; %" PRIu64 " iterations in %.1f ms = %.3g instr/s, probe %.1f ms\n",
                probe_kvm_status_to_string(r.status), r.reason, r.iterations, r.seconds * 1e3,
                r.instructions_per_second, r.probe_seconds * 1e3);
}

/* Runs 'f'; the probe cache lands in test_ctx()'s home, the test's
 * temporary directory. */
static void with_tmp_home(void (*f)(void)) {
        f();
}

static void cached_body(void) {
        struct probe_kvm_result a, b;
        bool from_cache = true;
        CHECK(probe_kvm_cached(test_ctx(), &a, &from_cache, NULL) == 0);
        CHECK(!from_cache);
        CHECK(probe_kvm_cached(test_ctx(), &b, &from_cache, NULL) == 0);
        CHECK(from_cache);
        CHECK(a.status == b.status);
        CHECK_STREQ(a.reason, b.reason);
        CHECK_EQ_U64(a.iterations, b.iterations);
}

TEST(doctor_kvm_probe_cached) {
        with_tmp_home(cached_body);
}

static void doctor_body(void) {
        struct probe_doctor_options o = { .store_kvm_cache = true };
        struct probe_report *r = NULL;
        struct vh_error err = {};
        CHECK(probe_doctor_run(test_ctx(), &o, &r, &err) == 0);
        if (!r)
                return;
        CHECK(r->n_checks > 10);
        /* The doctor's time includes the probe's, which ran meanwhile. */
        CHECK(r->seconds > 0 && r->seconds >= r->kvm.probe_seconds);
        CHECK(probe_report_find(r, "kvm") != NULL);
        CHECK(probe_report_find(r, "accelerator") != NULL);
        CHECK(probe_report_find(r, "tun") != NULL);
        CHECK(probe_report_find(r, "openvswitch") != NULL);
        CHECK(probe_report_find(r, "no-such-check") == NULL);
        CHECK_STREQ(probe_report_find(r, "accelerator")->value, probe_accel_to_string(r->accel));
        CHECK(r->can_run_vms == (r->accel != PROBE_ACCEL_NONE));
        for (unsigned i = 0; i < r->n_checks; i++)
                if (!r->checks[i].name[0] || !r->checks[i].value[0] || !r->checks[i].reason[0])
                        test_fail(__FILE__, __LINE__, "check %u (%s) has an empty field", i, r->checks[i].name);
        /* The store put the fresh result in the cache. */
        char path[512];
        snprintf(path, sizeof(path), "%s/run/kvm-probe", test_tmpdir());
        CHECK(file_exists(path));

        char *json = NULL;
        CHECK(probe_report_to_json(r, false, &json) == 0);
        CHECK(json && strstr(json, "\"checks\":[{\"name\":"));
        CHECK(json && strstr(json, "\"can-run-vms\":"));
        CHECK(json && strstr(json, "\"instructions-per-second\":"));
        free(json);
        probe_report_free(r);
}

TEST(doctor_run_on_this_host) {
        with_tmp_home(doctor_body);
}

TEST(doctor_report_json) {
        struct probe_report *r = calloc(1, sizeof(*r));
        CHECK(r != NULL);
        if (!r)
                return;
        r->n_checks = 1;
        snprintf(r->checks[0].name, sizeof(r->checks[0].name), "kvm");
        r->checks[0].status = PROBE_CHECK_UNUSABLE;
        snprintf(r->checks[0].value, sizeof(r->checks[0].value), "present but unusable");
        snprintf(r->checks[0].reason, sizeof(r->checks[0].reason), "runs at \"1.1 M\"");
        r->accel = PROBE_ACCEL_TCG;
        r->can_run_vms = true;
        r->kvm = (struct probe_kvm_result) {
                .status = PROBE_KVM_UNUSABLE, .api_version = -1, .iterations = 4, .seconds = 0.5,
                .instructions_per_second = 16,
        };
        char *json = NULL;
        CHECK(probe_report_to_json(r, false, &json) == 0);
        CHECK(json && strstr(json, "{\"checks\":[{\"name\":\"kvm\",\"status\":\"unusable\","
                                   "\"value\":\"present but unusable\",\"reason\":\"runs at \\\"1.1 M\\\"\"}],"
                                   "\"accelerator\":\"tcg\","));
        CHECK(json && strstr(json, "\"can-run-vms\":true"));
        CHECK(json && strstr(json, "\"api-version\":null"));
        CHECK(json && strstr(json, "\"iterations\":4,"));
        CHECK(json && strstr(json, "\"seconds\":0.5,\"instructions-per-second\":16,"));
        free(json);
        probe_report_free(r);
        CHECK(probe_report_free(NULL) == NULL);
}

/* ---- Open vSwitch daemons ---- */

TEST(doctor_ovs_daemons_judge_table) {
        static const struct {
                bool installed, default_paths;
                int db_error, vswitchd_pid, vswitchd_error;
                enum probe_check_status status;
                const char *value, *reason;
        } cases[] = {
                { true, true, 0, 42, 0, PROBE_CHECK_OK, "running",
                  "ovsdb-server answers on /var/run/openvswitch/db.sock; ovs-vswitchd runs (pid 42)" },
                { true, true, -ENOENT, 0, -ENOENT, PROBE_CHECK_UNUSABLE, "not running",
                  "ovsdb-server: no socket (/var/run/openvswitch/db.sock); ovs-vswitchd: no pid file "
                  "/var/run/openvswitch/ovs-vswitchd.pid; OVS networks fail until they run: service openvswitch-switch start" },
                { true, true, 0, 0, -ENOENT, PROBE_CHECK_UNUSABLE, "ovs-vswitchd not running",
                  "ovsdb-server answers on /var/run/openvswitch/db.sock; ovs-vswitchd: no pid file "
                  "/var/run/openvswitch/ovs-vswitchd.pid; OVS networks fail until they run: service openvswitch-switch start" },
                /* A pid file left by a killed daemon. */
                { true, true, 0, 4242, -ESRCH, PROBE_CHECK_UNUSABLE, "ovs-vswitchd not running",
                  "ovsdb-server answers on /var/run/openvswitch/db.sock; ovs-vswitchd: the pid file names no running "
                  "process (/var/run/openvswitch/ovs-vswitchd.pid); OVS networks fail until they run: service "
                  "openvswitch-switch start" },
                { true, true, -ECONNREFUSED, 7, 0, PROBE_CHECK_UNUSABLE, "ovsdb-server not running",
                  "ovsdb-server: nobody listens on the socket (/var/run/openvswitch/db.sock); ovs-vswitchd runs (pid 7); "
                  "OVS networks fail until they run: service openvswitch-switch start" },
                /* A hung daemon accepts but does not answer: not running either. */
                { true, true, -ETIMEDOUT, 7, -ETIMEDOUT, PROBE_CHECK_UNUSABLE, "not running",
                  "ovsdb-server: no answer within the timeout (/var/run/openvswitch/db.sock); ovs-vswitchd pid 7: control "
                  "socket /var/run/openvswitch/ovs-vswitchd.7.ctl: no answer within the timeout; OVS networks fail until "
                  "they run: service openvswitch-switch start" },
                /* An override (a test's private database): no system start command. */
                { true, false, -ENOENT, 0, -ENOENT, PROBE_CHECK_UNUSABLE, "not running",
                  "ovsdb-server: no socket (/var/run/openvswitch/db.sock); ovs-vswitchd: no pid file "
                  "/var/run/openvswitch/ovs-vswitchd.pid; OVS networks fail until the daemons for this database run" },
                /* A tcp: remote is not probed: the row says so and warns. */
                { true, false, -EOPNOTSUPP, 7, 0, PROBE_CHECK_WARN, "running", NULL },
                { false, true, -ENOENT, 0, -ENOENT, PROBE_CHECK_MISSING, "not installed",
                  "ovsdb-server and ovs-vswitchd are not installed (install openvswitch-switch)" },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct probe_ovs_daemons s = {
                        .installed = cases[i].installed,
                        .default_paths = cases[i].default_paths,
                        .db_error = cases[i].db_error,
                        .vswitchd_pid = cases[i].vswitchd_pid,
                        .vswitchd_error = cases[i].vswitchd_error,
                };
                snprintf(s.rundir, sizeof(s.rundir), "%s", PROBE_OVS_RUNDIR);
                snprintf(s.db, sizeof(s.db), cases[i].db_error == -EOPNOTSUPP ? "tcp:192.0.2.1:6640" : "unix:%s/db.sock",
                         PROBE_OVS_RUNDIR);
                if (s.vswitchd_pid)
                        snprintf(s.vswitchd_ctl, sizeof(s.vswitchd_ctl), "%s/ovs-vswitchd.%d.ctl", PROBE_OVS_RUNDIR,
                                 s.vswitchd_pid);
                struct probe_check c;
                probe_ovs_daemons_judge(&s, &c);
                CHECK_STREQ(c.name, "ovs-daemons");
                if (c.status != cases[i].status)
                        test_fail(__FILE__, __LINE__, "case %zu: status %s, want %s", i, probe_check_status_to_string(c.status),
                                  probe_check_status_to_string(cases[i].status));
                CHECK_STREQ(c.value, cases[i].value);
                if (cases[i].reason)
                        CHECK_STREQ(c.reason, cases[i].reason);
                else
                        CHECK(strstr(c.reason, "database tcp:192.0.2.1:6640 is not a unix socket (not checked)"));
        }
}

/* A unix socket at 'path' that listens; with 'reply', a child answers one
 * connection with it (after reading the request) and exits. Returns the
 * listening fd (the parent keeps it open) and the child's pid in ret_pid. */
static int ovs_fake_listen(const char *path, const char *reply, pid_t *ret_pid) {
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || bind(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0 || listen(fd, 4) < 0) {
                test_fail(__FILE__, __LINE__, "cannot listen on %s", path);
                if (fd >= 0)
                        close(fd);
                return -1;
        }
        *ret_pid = 0;
        if (!reply)
                return fd;
        pid_t pid = fork();
        if (pid == 0) {
                int c = accept(fd, NULL, NULL);
                char buf[256];
                if (c >= 0 && read(c, buf, sizeof(buf)) > 0 && write(c, reply, strlen(reply)) < 0)
                        _exit(1);
                _exit(0);
        }
        *ret_pid = pid;
        return fd;
}

static void write_text(const char *path, const char *text) {
        FILE *f = fopen(path, "w");
        CHECK(f != NULL);
        if (f) {
                fputs(text, f);
                fclose(f);
        }
}

TEST(doctor_ovs_daemons_probe) {
        char dir[256], db[300], pidfile[300], ctl[300], text[32];
        snprintf(dir, sizeof(dir), "%s/ovs", test_tmpdir());
        CHECK(mkdir(dir, 0700) == 0);
        snprintf(db, sizeof(db), "%s/db.sock", dir);
        snprintf(pidfile, sizeof(pidfile), "%s/ovs-vswitchd.pid", dir);
        struct probe_ovs_daemons s;

        /* Nothing there. */
        probe_ovs_daemons_probe(test_ctx(), NULL, dir, 200, &s);
        CHECK_EQ_INT(s.db_error, -ENOENT);
        CHECK_EQ_INT(s.vswitchd_error, -ENOENT);
        CHECK(!s.default_paths);
        CHECK(strstr(s.db, "unix:") == s.db && strstr(s.db, "/ovs/db.sock"));

        /* A socket file nobody listens on (a daemon that was killed). */
        {
                pid_t none;
                int fd = ovs_fake_listen(db, NULL, &none);
                if (fd >= 0)
                        close(fd);
                probe_ovs_daemons_probe(test_ctx(), NULL, dir, 200, &s);
                CHECK_EQ_INT(s.db_error, -ECONNREFUSED);
                unlink(db);
        }

        /* Listening, never answering: -ETIMEDOUT, and not before the
         * timeout (a lower bound only: load makes waits longer, never
         * shorter). */
        pid_t child;
        int fd = ovs_fake_listen(db, NULL, &child);
        uint64_t t0 = vh_clock_ns();
        probe_ovs_daemons_probe(test_ctx(), NULL, dir, 200, &s);
        uint64_t ms = (vh_clock_ns() - t0) / 1000000;
        CHECK_EQ_INT(s.db_error, -ETIMEDOUT);
        CHECK(ms >= 190);
        if (fd >= 0)
                close(fd);
        unlink(db);

        /* An answer that is not JSON-RPC. */
        fd = ovs_fake_listen(db, "HTTP/1.0 400 Bad Request\r\n\r\n", &child);
        probe_ovs_daemons_probe(test_ctx(), NULL, dir, 1000, &s);
        CHECK_EQ_INT(s.db_error, -EPROTO);
        if (child > 0)
                waitpid(child, NULL, 0);
        if (fd >= 0)
                close(fd);
        unlink(db);

        /* ovsdb-server's answer to echo; the database named by its remote. */
        fd = ovs_fake_listen(db, "{\"id\":0,\"result\":[],\"error\":null}", &child);
        char remote[320];
        snprintf(remote, sizeof(remote), "unix:%s", db);
        probe_ovs_daemons_probe(test_ctx(), remote, dir, 1000, &s);
        CHECK_EQ_INT(s.db_error, 0);
        CHECK_STREQ(s.db, remote);
        if (child > 0)
                waitpid(child, NULL, 0);
        if (fd >= 0)
                close(fd);

        /* A pid file that is not a pid, then one naming a process that exited. */
        write_text(pidfile, "garbage\n");
        probe_ovs_daemons_probe(test_ctx(), NULL, dir, 200, &s);
        CHECK_EQ_INT(s.vswitchd_error, -EPROTO);
        pid_t gone = fork();
        if (gone == 0)
                _exit(0);
        waitpid(gone, NULL, 0);
        snprintf(text, sizeof(text), "%d\n", (int) gone);
        write_text(pidfile, text);
        probe_ovs_daemons_probe(test_ctx(), NULL, dir, 200, &s);
        CHECK_EQ_INT(s.vswitchd_pid, gone);
        CHECK_EQ_INT(s.vswitchd_error, -ESRCH);

        /* A live process (this one) without a control socket, then with the
         * socket OVS names after the pid, answering "version". */
        snprintf(text, sizeof(text), "%d\n", (int) getpid());
        write_text(pidfile, text);
        probe_ovs_daemons_probe(test_ctx(), NULL, dir, 200, &s);
        CHECK_EQ_INT(s.vswitchd_pid, getpid());
        CHECK_EQ_INT(s.vswitchd_error, -ENOENT);
        snprintf(ctl, sizeof(ctl), "%s/ovs-vswitchd.%d.ctl", dir, (int) getpid());
        fd = ovs_fake_listen(ctl, "{\"id\":0,\"result\":\"ovs-vswitchd (Open vSwitch) 3.1.0\\n\",\"error\":null}", &child);
        probe_ovs_daemons_probe(test_ctx(), NULL, dir, 1000, &s);
        CHECK_EQ_INT(s.vswitchd_error, 0);
        CHECK_STREQ(s.vswitchd_ctl, ctl);
        if (child > 0)
                waitpid(child, NULL, 0);
        if (fd >= 0)
                close(fd);

        /* The defaults are the system's paths. */
        probe_ovs_daemons_probe(test_ctx(), NULL, NULL, 200, &s);
        CHECK(s.default_paths);
        CHECK_STREQ(s.db, "unix:/var/run/openvswitch/db.sock");
}

TEST(doctor_ovs_daemons_probe_full_backlog) {
        /* A daemon that stopped accepting: its listen backlog fills and a
         * connect fails with EAGAIN. That is a daemon that does not
         * answer (-ETIMEDOUT), not an unconnected socket (-ENOTCONN). */
        char dir[256], db[300];
        snprintf(dir, sizeof(dir), "%s/ovs-busy", test_tmpdir());
        CHECK(mkdir(dir, 0700) == 0);
        snprintf(db, sizeof(db), "%s/db.sock", dir);
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        CHECK(strlen(db) < sizeof(sa.sun_path));
        memcpy(sa.sun_path, db, strlen(db) < sizeof(sa.sun_path) ? strlen(db) + 1 : 0);
        int l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        CHECK(l >= 0 && bind(l, (struct sockaddr *) &sa, sizeof(sa)) == 0 && listen(l, 0) == 0);
        /* Fill the backlog until a connect is refused with EAGAIN. */
        int filler[8], n = 0;
        bool full = false;
        while (n < 8 && !full) {
                filler[n] = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
                if (connect(filler[n], (struct sockaddr *) &sa, sizeof(sa)) < 0 && errno == EAGAIN)
                        full = true;
                n++;
        }
        CHECK(full);
        struct probe_ovs_daemons s;
        probe_ovs_daemons_probe(test_ctx(), NULL, dir, 200, &s);
        CHECK_EQ_INT(s.db_error, -ETIMEDOUT);
        for (int i = 0; i < n; i++)
                close(filler[i]);
        close(l);
}

/* QEMU 7.2's '-machine help', cut: the line of "pc" names its versioned type. */
TEST(probe_machine_alias_of_pc) {
        static const char help[] =
                "Supported machines are:\n"
                "microvm              microvm (i386)\n"
                "pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)\n"
                "pc-i440fx-7.2        Standard PC (i440FX + PIIX, 1996) (default)\n"
                "q35                  Standard PC (Q35 + ICH9, 2009) (alias of pc-q35-7.2)\n"
                "pc-q35-7.2           Standard PC (Q35 + ICH9, 2009)\n";
        char buf[PROBE_MACHINE_NAME_MAX + 1];
        CHECK(probe_machine_alias(help, "pc", buf, sizeof(buf)) == 0);
        CHECK(strcmp(buf, "pc-i440fx-7.2") == 0);
        CHECK(probe_machine_alias(help, "q35", buf, sizeof(buf)) == 0);
        CHECK(strcmp(buf, "pc-q35-7.2") == 0);
        /* "pc-i440fx-7.2" starts with "pc" but is another line's name. */
        CHECK(probe_machine_alias("pc-i440fx-7.2 Standard PC (default)\n", "pc", buf, sizeof(buf)) == -ENOENT);
        CHECK(probe_machine_alias("microvm  microvm (i386)\n", "pc", buf, sizeof(buf)) == -ENOENT);
        CHECK(probe_machine_alias("", "pc", buf, sizeof(buf)) == -ENOENT);
        CHECK(probe_machine_alias("pc   Standard PC\n", "pc", buf, sizeof(buf)) == -ENOENT);
        /* What is not a machine type name is refused, not stored. */
        CHECK(probe_machine_alias("pc  x (alias of pc;rm -rf)\n", "pc", buf, sizeof(buf)) == -EINVAL);
        CHECK(probe_machine_alias("pc  x (alias of )\n", "pc", buf, sizeof(buf)) == -EINVAL);
        CHECK(probe_machine_alias("pc  x (alias of pc-i440fx-7.2\n", "pc", buf, sizeof(buf)) == -EINVAL);
        char tiny[5];
        CHECK(probe_machine_alias(help, "pc", tiny, sizeof(tiny)) == -EINVAL);
        CHECK(probe_machine_name_is_valid("pc-i440fx-7.2"));
        CHECK(!probe_machine_name_is_valid("-pc"));
        CHECK(!probe_machine_name_is_valid("pc,accel=kvm"));
        CHECK(!probe_machine_name_is_valid(""));
}
