/* probe/probe-parse.h: the text parsers behind 'vmhost doctor'.
 *
 * Every function here is pure: it reads text that the caller got from a
 * program (qemu --version), procfs (/proc/cpuinfo, /proc/modules), sysfs (a
 * module parameter) or /lib/modules, and never touches the system itself.
 * That keeps the decisions of the doctor testable with fixed tables of
 * real outputs, on any machine. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

/* Longest first line of a program's version output we look at. */
#define PROBE_VERSION_LINE_MAX 512

struct probe_version {
        unsigned major, minor, micro;
        char text[32];    /* the version token as printed: "7.2.22", "9.2p1" */
        char detail[96];  /* what follows in parentheses, e.g. the Debian
                           * package version "Debian 1:7.2+dfsg-7+deb12u18";
                           * empty when there is none */
};

/* Finds the version in the first line of a '--version' output:
 *   "QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)"
 *   "qemu-img version 7.2.22 (Debian ...)", "nftables v1.0.6 (Lester Gooch #5)",
 *   "Dnsmasq version 2.90  Copyright ...", "ovs-vsctl (Open vSwitch) 3.1.0",
 *   "OpenSSH_9.2p1 Debian-2+deb12u10, OpenSSL 3.0.19 ..."
 * The version is the first token of the form DIGITS.DIGITS[...] that does not
 * sit inside a word (so the "86_64" of "x86_64" never counts). -EINVAL when
 * there is none. */
int probe_parse_version(const char *text, struct probe_version *ret);

/* Formats "7.2.22 (Debian 1:7.2+dfsg-7+deb12u18)" or just "7.2.22". */
const char *probe_version_format(const struct probe_version *v, char *buf, size_t size);

/* Whether 'qemu-system-* -accel help' lists the accelerator 'name'. */
bool probe_accel_help_has(const char *text, const char *name);

/* A QEMU machine type name ("pc-i440fx-7.2", "q35"): [A-Za-z0-9._-],
 * starting with a letter or digit, at most PROBE_MACHINE_NAME_MAX. */
#define PROBE_MACHINE_NAME_MAX 64
bool probe_machine_name_is_valid(const char *s);
/* In the output of 'qemu-system-x86_64 -machine help': the versioned
 * machine type that 'alias' ("pc") stands for, from its line's "(alias of
 * NAME)", into buf. -ENOENT when there is no such line or it names no
 * alias; -EINVAL when the name is not a machine type name or does not fit. */
int probe_machine_alias(const char *text, const char *alias, char *buf, size_t size);

/* A boolean module parameter as sysfs shows it: "Y", "N", "1", "0" (with
 * optional white space). -EINVAL for anything else. */
int probe_parse_bool_param(const char *text, bool *ret);

struct probe_cpu_info {
        char vendor[32];       /* "GenuineIntel", "AuthenticAMD", "" */
        char model[64];        /* "AMD EPYC", "" */
        bool vmx;              /* Intel VT-x */
        bool svm;              /* AMD-V */
        bool hypervisor;       /* we are ourselves a guest */
};

/* Reads the first processor block of /proc/cpuinfo. -EINVAL when it has
 * neither a vendor_id nor a flags line. */
int probe_parse_cpuinfo(const char *text, struct probe_cpu_info *ret);

/* The KVM module for a CPU vendor: "kvm_intel", "kvm_amd", or NULL. */
const char *probe_kvm_vendor_module(const char *vendor);

/* Looks for "options MODULE ... PARAM=VALUE" in modprobe.d text (comments
 * and other modules skipped; '-' and '_' are the same in module names, as
 * modprobe treats them). Returns 1 and the last value in 'value_buf' when
 * found, 0 when not. */
int probe_modprobe_find_option(const char *text, const char *module, const char *param,
                              char *value_buf, size_t value_size);

/* Module names in lists: "kernel/net/bridge/bridge.ko" in modules.builtin,
 * "kernel/net/bridge/bridge.ko.xz: kernel/net/802/stp.ko.xz ..." in
 * modules.dep (only the target before ':' counts, not the dependencies),
 * "bridge 311296 0 - Live 0x..." in /proc/modules. Names compare with '-'
 * and '_' equal. */
bool probe_modules_list_has(const char *text, const char *module);
bool probe_proc_modules_has(const char *text, const char *module);

/* Looks up CONFIG_SYMBOL in kernel config text (/proc/config.gz, /boot/config-*).
 * Returns 'y', 'm', 'n' ("# CONFIG_X is not set"), or 0 when the symbol does
 * not appear at all. 'symbol' is given without the CONFIG_ prefix. */
int probe_kconfig_lookup(const char *text, const char *symbol);

enum probe_kmod_state {
        PROBE_KMOD_UNKNOWN,   /* nothing to tell from */
        PROBE_KMOD_ABSENT,    /* not in this kernel, cannot be loaded */
        PROBE_KMOD_LOADABLE,  /* a module that is installed but not loaded */
        PROBE_KMOD_PRESENT,   /* in /sys/module: loaded or built in */
        PROBE_KMOD_BUILTIN,
        PROBE_KMOD_LOADED,
};

/* True for the states where the feature can be used now or on demand. */
static inline bool probe_kmod_available(enum probe_kmod_state s) {
        return s == PROBE_KMOD_LOADABLE || s == PROBE_KMOD_PRESENT ||
               s == PROBE_KMOD_BUILTIN || s == PROBE_KMOD_LOADED;
}

const char *probe_kmod_state_to_string(enum probe_kmod_state s);

/* What is known about the running kernel. Any text may be NULL when its file
 * could not be read; the names are used in the explanations. */
struct probe_kernel_sources {
        const char *release;           /* uname -r */
        const char *proc_modules;      /* /proc/modules */
        const char *modules_builtin;   /* /lib/modules/R/modules.builtin */
        const char *modules_dep;       /* /lib/modules/R/modules.dep */
        const char *config;            /* kernel config text */
        const char *config_name;       /* "/proc/config.gz", "/boot/config-R" */
};

/* Decides whether 'module' (kernel option 'symbol', without CONFIG_, may be
 * NULL) is loaded, built in, loadable or absent, in that order of evidence:
 * /proc/modules, modules.builtin, the kernel config, /sys/module/NAME
 * ('in_sysfs'), modules.dep. Writes how it knows into 'how' ("CONFIG_BRIDGE=y
 * in /proc/config.gz"). */
enum probe_kmod_state probe_kmod_resolve(const struct probe_kernel_sources *src, const char *module,
                                       const char *symbol, bool in_sysfs,
                                       char *how, size_t how_size);

/* "1.1 M", "3.2 G", "850 k", "12": a rate for "... instructions/s". */
const char *probe_format_rate(double per_second, char *buf, size_t size);
