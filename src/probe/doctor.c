/* probe/doctor.c: the checks behind 'vmhost doctor'. Each check looks at one
 * thing vmhost relies on and records a status, a short value and a reason
 * that says why and what to do. The KVM probe runs in its own process while
 * the other checks are made, so the doctor costs about one probe budget.
 * The parsing is in probe-parse.c; this file only gathers the inputs. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <unistd.h>
#include <zlib.h>

#include "base/clock.h"
#include "base/fileio.h"
#include "base/json-writer.h"
#include "base/macro.h"
#include "base/poll.h"
#include "base/process.h"
#include "base/strutil.h"
#include "probe/probe-parse.h"
#include "probe/kvm-probe.h"
#include "vmhost/doctor.h"

/* Limits on what the doctor reads. */
#define TOOL_OUTPUT_MAX (16 * 1024)
/* "TOOL --version", "qemu -accel help": instant, but the doctor must not
 * hang on a tool that does. */
#define TOOL_RUN_TIMEOUT_MS (10 * 1000u)
#define PROC_FILE_MAX (4 * 1024 * 1024)
#define MODULES_DEP_MAX (16 * 1024 * 1024)
#define KCONFIG_MAX (8 * 1024 * 1024)
#define MODPROBE_FILES_MAX 128
#define MODPROBE_FILE_MAX (64 * 1024)
#define PATH_DIRS_MAX 64
#define OTHER_TARGETS_MAX 32

/* Rows are gathered in the order the checks finish and shown in this one. */
enum section {
        SECTION_QEMU,
        SECTION_KVM,
        SECTION_CPU,
        SECTION_NET,
        SECTION_TOOLS,
};

struct doctor {
        struct probe_report *report;
        enum section sections[PROBE_REPORT_MAX_CHECKS];

        struct utsname uts;
        char *proc_modules, *modules_builtin, *modules_dep, *config;
        char config_name[512];
        struct probe_kernel_sources kernel;

        bool qemu_present, qemu_has_tcg, qemu_has_kvm;
        char qemu_name[48];
        struct probe_cpu_info cpu;
        bool cpu_known;

        const char *ovs_db, *ovs_rundir;
};

const char *probe_check_status_to_string(enum probe_check_status s) {
        switch (s) {
        case PROBE_CHECK_OK: return "ok";
        case PROBE_CHECK_WARN: return "warn";
        case PROBE_CHECK_MISSING: return "missing";
        case PROBE_CHECK_UNUSABLE: break;
        }
        return "unusable";
}

struct probe_report *probe_report_free(struct probe_report *r) {
        free(r);
        return NULL;
}

const struct probe_check *probe_report_find(const struct probe_report *r, const char *name) {
        for (unsigned i = 0; r && i < r->n_checks; i++)
                if (streq(r->checks[i].name, name))
                        return &r->checks[i];
        return NULL;
}

_printf_(5, 6)
static struct probe_check *check_add(struct doctor *d, enum section section, const char *name,
                                    enum probe_check_status status, const char *reason_fmt, ...) {
        struct probe_report *r = d->report;
        /* The table of checks is fixed; running out is a programming error
         * that must not overwrite memory. */
        if (r->n_checks >= PROBE_REPORT_MAX_CHECKS)
                return NULL;
        d->sections[r->n_checks] = section;
        struct probe_check *c = &r->checks[r->n_checks++];
        *c = (struct probe_check) { .status = status };
        snprintf(c->name, sizeof(c->name), "%s", name);
        va_list ap;
        va_start(ap, reason_fmt);
        vsnprintf(c->reason, sizeof(c->reason), reason_fmt, ap);
        va_end(ap);
        return c;
}

_printf_(2, 3)
static void check_value(struct probe_check *c, const char *fmt, ...) {
        if (!c)
                return;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->value, sizeof(c->value), fmt, ap);
        va_end(ap);
}

/* Runs "TOOL ARG" and parses the version from its first line. Returns 0,
 * -ENOENT when the tool is not installed, -EINVAL when it printed no
 * version, or another -errno. */
static int tool_version(const struct vh_context *ctx, const char *tool, const char *arg, struct probe_version *ret) {
        _cleanup_free_ char *out = NULL;
        char *argv[] = { (char *) tool, (char *) arg, NULL };
        int r = process_run(ctx, argv, TOOL_RUN_TIMEOUT_MS, TOOL_OUTPUT_MAX, &out, NULL);
        if (r < 0)
                return r;
        if (!out)
                return -ENOMEM;
        return probe_parse_version(out, ret);
}

/* Reads a file that may be gzip-compressed (/proc/config.gz) or plain
 * (/boot/config-R): zlib reads both. */
static int read_maybe_gz(const char *path, size_t max, char **ret) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        gzFile f = gzdopen(fd, "rb");
        if (!f) {
                close(fd);
                return -ENOMEM;
        }
        size_t cap = 64 * 1024, len = 0;
        _cleanup_free_ char *buf = malloc(cap + 1);
        int r = buf ? 0 : -ENOMEM;
        while (r == 0) {
                if (len == cap) {
                        if (cap >= max) {
                                r = -EFBIG;
                                break;
                        }
                        size_t ncap = MIN(cap * 2, max);
                        char *n = realloc(buf, ncap + 1);
                        if (!n) {
                                r = -ENOMEM;
                                break;
                        }
                        buf = n;
                        cap = ncap;
                }
                int k = gzread(f, buf + len, (unsigned) (cap - len));
                if (k < 0)
                        r = -EIO;
                else if (k == 0)
                        break;
                else
                        len += (size_t) k;
        }
        gzclose(f);
        if (r < 0)
                return r;
        buf[len] = '\0';
        *ret = TAKE_PTR(buf);
        return 0;
}

static void kernel_load(struct doctor *d) {
        if (uname(&d->uts) < 0)
                snprintf(d->uts.release, sizeof(d->uts.release), "unknown");
        char path[512];

        /* Each source is optional: a kernel without module support has no
         * /proc/modules, a custom kernel may have no /lib/modules. */
        (void) read_full_file("/proc/modules", PROC_FILE_MAX, &d->proc_modules, NULL);
        snprintf(path, sizeof(path), "/lib/modules/%s/modules.builtin", d->uts.release);
        (void) read_full_file(path, PROC_FILE_MAX, &d->modules_builtin, NULL);
        snprintf(path, sizeof(path), "/lib/modules/%s/modules.dep", d->uts.release);
        (void) read_full_file(path, MODULES_DEP_MAX, &d->modules_dep, NULL);

        if (read_maybe_gz("/proc/config.gz", KCONFIG_MAX, &d->config) >= 0)
                snprintf(d->config_name, sizeof(d->config_name), "/proc/config.gz");
        else {
                snprintf(path, sizeof(path), "/boot/config-%s", d->uts.release);
                if (read_maybe_gz(path, KCONFIG_MAX, &d->config) >= 0)
                        snprintf(d->config_name, sizeof(d->config_name), "%s", path);
        }

        d->kernel = (struct probe_kernel_sources) {
                .release = d->uts.release,
                .proc_modules = d->proc_modules,
                .modules_builtin = d->modules_builtin,
                .modules_dep = d->modules_dep,
                .config = d->config,
                .config_name = d->config_name[0] ? d->config_name : NULL,
        };
}

static bool sys_module_exists(const char *module) {
        char path[128];
        snprintf(path, sizeof(path), "/sys/module/%s", module);
        return file_exists(path);
}

static enum probe_kmod_state kmod(struct doctor *d, const char *module, const char *symbol, char *how, size_t size) {
        return probe_kmod_resolve(&d->kernel, module, symbol, sys_module_exists(module), how, size);
}

/* ---- QEMU ---- */

static const struct {
        const char *machine, *target, *package;
} qemu_targets[] = {
        { "x86_64", "x86_64", "qemu-system-x86" },
        { "i686", "i386", "qemu-system-x86" },
        { "aarch64", "aarch64", "qemu-system-arm" },
        { "ppc64le", "ppc64", "qemu-system-ppc" },
        { "s390x", "s390x", "qemu-system-misc" },
        { "riscv64", "riscv64", "qemu-system-misc" },
};

static void check_qemu(const struct vh_context *ctx, struct doctor *d) {
        const char *target = "x86_64", *package = "qemu-system-x86";
        for (size_t i = 0; i < ELEMENTSOF(qemu_targets); i++)
                if (streq(d->uts.machine, qemu_targets[i].machine)) {
                        target = qemu_targets[i].target;
                        package = qemu_targets[i].package;
                }
        snprintf(d->qemu_name, sizeof(d->qemu_name), "qemu-system-%s", target);

        _cleanup_free_ char *path = find_executable(ctx, d->qemu_name);
        if (!path) {
                struct probe_check *c = check_add(d, SECTION_QEMU, d->qemu_name, PROBE_CHECK_MISSING,
                                                 "not in PATH; install %s", package);
                check_value(c, "not found");
                return;
        }
        d->qemu_present = true;

        struct probe_version v;
        int r = tool_version(ctx, d->qemu_name, "--version", &v);
        if (r < 0) {
                struct probe_check *c = check_add(d, SECTION_QEMU, d->qemu_name, PROBE_CHECK_WARN,
                                                 "%s --version printed no version (%s)", path, strerror(-r));
                check_value(c, "unknown version");
        } else {
                char vb[PROBE_CHECK_VALUE_MAX];
                /* Older QEMUs may lack options vmhost passes; 7.2 is what
                 * vmhost is tested with. */
                bool old = v.major < 6;
                struct probe_check *c = check_add(d, SECTION_QEMU, d->qemu_name,
                                                 old ? PROBE_CHECK_WARN : PROBE_CHECK_OK,
                                                 old ? "%s is older than 6.0; vmhost is tested with 7.2" : "%s runs the guests",
                                                 path);
                check_value(c, "%s", probe_version_format(&v, vb, sizeof(vb)));
        }

        _cleanup_free_ char *out = NULL;
        char *argv[] = { d->qemu_name, (char *) "-accel", (char *) "help", NULL };
        r = process_run(ctx, argv, TOOL_RUN_TIMEOUT_MS, TOOL_OUTPUT_MAX, &out, NULL);
        if (r != 0 || !out) {
                /* Every Debian build has TCG; assume it rather than refuse to run. */
                d->qemu_has_tcg = true;
                struct probe_check *c = check_add(d, SECTION_QEMU, "qemu-accelerators", PROBE_CHECK_WARN,
                                                 "'%s -accel help' failed; assuming TCG is built in", d->qemu_name);
                check_value(c, "unknown");
        } else {
                d->qemu_has_tcg = probe_accel_help_has(out, "tcg");
                d->qemu_has_kvm = probe_accel_help_has(out, "kvm");
                struct probe_check *c = check_add(
                        d, SECTION_QEMU, "qemu-accelerators", d->qemu_has_tcg ? PROBE_CHECK_OK : PROBE_CHECK_WARN,
                        d->qemu_has_tcg ? "built into %s (from -accel help)"
                                        : "%s has no TCG: guests can only run with KVM",
                        d->qemu_name);
                check_value(c, "%s%s%s", d->qemu_has_kvm ? "kvm" : "",
                            d->qemu_has_kvm && d->qemu_has_tcg ? ", " : "", d->qemu_has_tcg ? "tcg" : "");
                if (!d->qemu_has_kvm && !d->qemu_has_tcg)
                        check_value(c, "none");
        }
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Other qemu-system-* binaries in PATH: listed, not run, since a machine with
 * every target installed would spend seconds on --version alone. */
static void check_qemu_targets(const struct vh_context *ctx, struct doctor *d) {
        char *names[OTHER_TARGETS_MAX];
        size_t n = 0;
        bool more = false;
        const char *pathenv = ctx->exec_path;
        _cleanup_free_ char *copy = strdup(isempty(pathenv) ? "/usr/local/bin:/usr/bin:/bin" : pathenv);
        if (!copy)
                return;
        char *save = NULL;
        size_t dirs = 0;
        for (char *dir = strtok_r(copy, ":", &save); dir && dirs < PATH_DIRS_MAX;
             dir = strtok_r(NULL, ":", &save), dirs++) {
                DIR *dp = opendir(dir);
                if (!dp)
                        continue;
                struct dirent *de;
                while ((de = readdir(dp))) {
                        if (!startswith(de->d_name, "qemu-system-") || streq(de->d_name, d->qemu_name))
                                continue;
                        const char *suffix = de->d_name + strlen("qemu-system-");
                        bool dup = false;
                        for (size_t i = 0; i < n && !dup; i++)
                                dup = streq(names[i], suffix);
                        if (dup)
                                continue;
                        if (n >= OTHER_TARGETS_MAX) {
                                more = true;
                                continue;
                        }
                        char *s = strdup(suffix);
                        if (s)
                                names[n++] = s;
                }
                closedir(dp);
        }
        qsort(names, n, sizeof(names[0]), cmp_str);

        char value[PROBE_CHECK_VALUE_MAX] = "";
        size_t len = 0;
        for (size_t i = 0; i < n; i++) {
                int k = snprintf(value + len, sizeof(value) - len, "%s%s", i ? ", " : "", names[i]);
                if (k < 0 || (size_t) k >= sizeof(value) - len) {
                        more = true;
                        break;
                }
                len += (size_t) k;
        }
        for (size_t i = 0; i < n; i++)
                free(names[i]);

        struct probe_check *c = check_add(d, SECTION_QEMU, "qemu-other-targets", PROBE_CHECK_OK,
                                         n ? "other qemu-system-* programs in PATH; vmhost uses %s"
                                           : "no other qemu-system-* programs in PATH; vmhost uses %s",
                                         d->qemu_name);
        check_value(c, "%s%s", n ? value : "none", more ? ", ..." : "");
}

static void check_qemu_img(const struct vh_context *ctx, struct doctor *d) {
        struct probe_version v;
        int r = tool_version(ctx, "qemu-img", "--version", &v);
        if (r == -ENOENT) {
                struct probe_check *c = check_add(d, SECTION_QEMU, "qemu-img", PROBE_CHECK_MISSING,
                                                 "not in PATH; install qemu-utils for interoperability checks "
                                                 "of vmhost's images");
                check_value(c, "not found");
                return;
        }
        if (r < 0) {
                struct probe_check *c = check_add(d, SECTION_QEMU, "qemu-img", PROBE_CHECK_WARN,
                                                 "qemu-img --version printed no version (%s)", strerror(-r));
                check_value(c, "unknown version");
                return;
        }
        char vb[PROBE_CHECK_VALUE_MAX];
        struct probe_check *c = check_add(d, SECTION_QEMU, "qemu-img", PROBE_CHECK_OK,
                                         "checks and converts images for interoperability with vmhost's own engine");
        check_value(c, "%s", probe_version_format(&v, vb, sizeof(vb)));
}

/* ---- KVM ---- */

static void check_kvm_module(struct doctor *d) {
        const char *vendor_module = d->cpu_known ? probe_kvm_vendor_module(d->cpu.vendor) : NULL;
        static const char *const hw[] = { "kvm_intel", "kvm_amd" };
        for (size_t i = 0; i < ELEMENTSOF(hw); i++)
                if (sys_module_exists(hw[i])) {
                        struct probe_check *c = check_add(d, SECTION_KVM, "kvm-module", PROBE_CHECK_OK,
                                                         "hardware-assisted KVM (/sys/module/%s exists)", hw[i]);
                        check_value(c, "%s", hw[i]);
                        return;
                }
        if (sys_module_exists("kvm_pvm")) {
                struct probe_check *c = check_add(d, SECTION_KVM, "kvm-module", PROBE_CHECK_WARN,
                                                 "paravirtualized KVM (PVM): runs guests without hardware "
                                                 "virtualization, which is slow for unmodified guests");
                check_value(c, "kvm_pvm");
                return;
        }
        if (!vendor_module) {
                struct probe_check *c = check_add(d, SECTION_KVM, "kvm-module", PROBE_CHECK_MISSING,
                                                 "no KVM module is loaded and the CPU vendor '%s' has none vmhost knows",
                                                 d->cpu_known ? d->cpu.vendor : "unknown");
                check_value(c, "none");
                return;
        }
        char how[256];
        enum probe_kmod_state s = kmod(d, vendor_module, streq(vendor_module, "kvm_intel") ? "KVM_INTEL" : "KVM_AMD",
                                      how, sizeof(how));
        struct probe_check *c;
        if (s == PROBE_KMOD_LOADABLE)
                c = check_add(d, SECTION_KVM, "kvm-module", PROBE_CHECK_WARN, "not loaded: run 'modprobe %s' (%s)",
                              vendor_module, how);
        else
                c = check_add(d, SECTION_KVM, "kvm-module", PROBE_CHECK_MISSING, "%s cannot be used: %s",
                              vendor_module, how);
        check_value(c, "%s %s", vendor_module, probe_kmod_state_to_string(s));
}

static void check_kvm(struct doctor *d) {
        const struct probe_kvm_result *k = &d->report->kvm;
        struct probe_check *c;
        char rate[32];

        if (!k->present) {
                c = check_add(d, SECTION_KVM, "kvm-device", PROBE_CHECK_MISSING,
                              "the device node does not exist (see 'kvm' for why)");
                check_value(c, "no %s", PROBE_KVM_DEVICE);
        } else if (!k->openable) {
                c = check_add(d, SECTION_KVM, "kvm-device", PROBE_CHECK_UNUSABLE, "%s", k->reason);
                check_value(c, "%s, not openable", PROBE_KVM_DEVICE);
        } else {
                c = check_add(d, SECTION_KVM, "kvm-device", PROBE_CHECK_OK, "opens read-write");
                check_value(c, "%s", PROBE_KVM_DEVICE);
                if (k->api_version >= 0) {
                        bool good = k->api_version == PROBE_KVM_API_VERSION;
                        c = check_add(d, SECTION_KVM, "kvm-api", good ? PROBE_CHECK_OK : PROBE_CHECK_UNUSABLE,
                                      good ? "KVM_GET_API_VERSION returns the stable API version %d"
                                           : "KVM_GET_API_VERSION must return %d",
                                      PROBE_KVM_API_VERSION);
                        check_value(c, "%d", k->api_version);
                }
        }

        /* The line that says whether KVM will be used. */
        switch (k->status) {
        case PROBE_KVM_USABLE:
                c = check_add(d, SECTION_KVM, "kvm", PROBE_CHECK_OK,
                              "%s (%" PRIu64 " loop iterations in %.1f ms)", k->reason, k->iterations,
                              k->seconds * 1e3);
                check_value(c, "usable, %s instr/s",
                            probe_format_rate(k->instructions_per_second, rate, sizeof(rate)));
                break;
        case PROBE_KVM_MISSING:
                c = check_add(d, SECTION_KVM, "kvm", PROBE_CHECK_MISSING, "%s", k->reason);
                check_value(c, "missing");
                break;
        case PROBE_KVM_NO_ACCESS:
                c = check_add(d, SECTION_KVM, "kvm", PROBE_CHECK_UNUSABLE, "%s", k->reason);
                check_value(c, "present but not accessible");
                break;
        case PROBE_KVM_UNUSABLE:
                c = check_add(d, SECTION_KVM, "kvm", PROBE_CHECK_UNUSABLE, "%s", k->reason);
                if (k->ran && k->seconds > 0 && !k->killed)
                        check_value(c, "present but unusable, %s instr/s",
                                    probe_format_rate(k->instructions_per_second, rate, sizeof(rate)));
                else
                        check_value(c, "present but unusable");
                break;
        }
}

static void decide_accel(struct doctor *d) {
        struct probe_report *r = d->report;
        const struct probe_kvm_result *k = &r->kvm;

        if (!d->qemu_present) {
                r->accel = PROBE_ACCEL_NONE;
                snprintf(r->accel_reason, sizeof(r->accel_reason), "%s is not installed", d->qemu_name);
        } else if (k->status == PROBE_KVM_USABLE && d->qemu_has_kvm) {
                r->accel = PROBE_ACCEL_KVM;
                snprintf(r->accel_reason, sizeof(r->accel_reason), "%s", k->reason);
        } else if (d->qemu_has_tcg) {
                r->accel = PROBE_ACCEL_TCG;
                snprintf(r->accel_reason, sizeof(r->accel_reason), "%s; QEMU's TCG emulates the CPU, slower but able to boot any guest",
                         k->status == PROBE_KVM_USABLE ? "QEMU was built without KVM support"
                         : k->status == PROBE_KVM_MISSING ? "no KVM on this host"
                         : k->status == PROBE_KVM_NO_ACCESS ? "KVM is not accessible"
                                                           : "KVM is present but unusable");
        } else {
                r->accel = PROBE_ACCEL_NONE;
                snprintf(r->accel_reason, sizeof(r->accel_reason),
                         "KVM is not usable and %s has no TCG", d->qemu_name);
        }
        r->can_run_vms = r->accel != PROBE_ACCEL_NONE;

        struct probe_check *c = check_add(d, SECTION_KVM, "accelerator",
                                         r->accel == PROBE_ACCEL_KVM ? PROBE_CHECK_OK
                                         : r->accel == PROBE_ACCEL_TCG ? PROBE_CHECK_WARN
                                                                      : PROBE_CHECK_UNUSABLE,
                                         "%s", r->accel_reason);
        check_value(c, "%s", probe_accel_to_string(r->accel));
}

/* ---- CPU and nested virtualization ---- */

static void check_cpu(struct doctor *d) {
        _cleanup_free_ char *text = NULL;
        int r = read_full_file("/proc/cpuinfo", 16 * 1024 * 1024, &text, NULL);
        if (r >= 0)
                r = probe_parse_cpuinfo(text, &d->cpu);
        if (r < 0) {
                struct probe_check *c = check_add(d, SECTION_CPU, "cpu", PROBE_CHECK_WARN,
                                                 "cannot read /proc/cpuinfo: %s", strerror(-r));
                check_value(c, "unknown");
                return;
        }
        d->cpu_known = true;

        const char *flag = d->cpu.vmx ? "vmx" : d->cpu.svm ? "svm" : NULL;
        struct probe_check *c;
        if (flag)
                c = check_add(d, SECTION_CPU, "cpu", PROBE_CHECK_OK,
                              "the CPU offers hardware virtualization (%s flag in /proc/cpuinfo)", flag);
        else
                c = check_add(d, SECTION_CPU, "cpu", PROBE_CHECK_WARN,
                              "no vmx or svm flag in /proc/cpuinfo: no hardware virtualization%s",
                              d->cpu.hypervisor ? " (this host is itself a VM whose hypervisor does not pass it on)" : "");
        check_value(c, "%s%s%s, %s", d->cpu.vendor[0] ? d->cpu.vendor : "unknown vendor",
                    d->cpu.model[0] ? " " : "", d->cpu.model, flag ? flag : "no vmx/svm");
}

/* The last "options MODULE nested=..." in the /etc/modprobe.d .conf files (in
 * name order, as modprobe reads them). */
static int modprobe_nested(const char *module, char *value, size_t vsize, char *file, size_t fsize) {
        struct dirent **list = NULL;
        int n = scandir("/etc/modprobe.d", &list, NULL, alphasort);
        if (n < 0)
                return 0;
        int found = 0;
        for (int i = 0; i < n; i++) {
                if (i < MODPROBE_FILES_MAX && endswith(list[i]->d_name, ".conf")) {
                        char path[512];
                        snprintf(path, sizeof(path), "/etc/modprobe.d/%s", list[i]->d_name);
                        _cleanup_free_ char *text = NULL;
                        if (read_full_file(path, MODPROBE_FILE_MAX, &text, NULL) >= 0 &&
                            probe_modprobe_find_option(text, module, "nested", value, vsize) > 0) {
                                snprintf(file, fsize, "%s", path);
                                found = 1;
                        }
                }
                free(list[i]);
        }
        free(list);
        return found;
}

static void check_nested(struct doctor *d) {
        const char *module = d->cpu_known ? probe_kvm_vendor_module(d->cpu.vendor) : NULL;
        struct probe_check *c;
        if (!module) {
                c = check_add(d, SECTION_CPU, "nested", PROBE_CHECK_MISSING,
                              "unknown CPU vendor: no kvm_intel or kvm_amd nested parameter to read");
                check_value(c, "unknown");
                return;
        }

        char mp_value[32] = "", mp_file[512] = "", mp[600] = "";
        bool mp_on = false;
        if (modprobe_nested(module, mp_value, sizeof(mp_value), mp_file, sizeof(mp_file)) > 0) {
                (void) probe_parse_bool_param(mp_value, &mp_on);
                snprintf(mp, sizeof(mp), "; %s sets nested=%s", mp_file, mp_value);
        } else
                snprintf(mp, sizeof(mp), "; to enable: 'options %s nested=1' in /etc/modprobe.d/kvm-nested.conf", module);

        char path[128];
        snprintf(path, sizeof(path), "/sys/module/%s/parameters/nested", module);
        _cleanup_free_ char *param = NULL;
        bool on = false;
        if (read_one_line_file(path, &param) < 0 || probe_parse_bool_param(param, &on) < 0) {
                bool pvm = sys_module_exists("kvm_pvm");
                c = check_add(d, SECTION_CPU, "nested", PROBE_CHECK_MISSING, "%s%s",
                              pvm ? "KVM here is kvm_pvm, which has no nested parameter: guests get no KVM"
                                  : "no nested parameter: the module is not loaded",
                              pvm ? "" : mp);
                check_value(c, "%s not loaded", module);
                return;
        }
        if (on) {
                c = check_add(d, SECTION_CPU, "nested", PROBE_CHECK_OK, "%s = %s: guests can run KVM themselves",
                              path, param);
                check_value(c, "enabled");
        } else {
                c = check_add(d, SECTION_CPU, "nested", PROBE_CHECK_WARN, "%s = %s%s%s", path, param, mp,
                              mp_on ? " (reload the module, with no VM running, to apply)"
                                    : ", then reload the module with no VM running");
                check_value(c, "disabled");
        }
}

/* The nested line says what a VM asking for the host's CPU gets: without
 * KVM, 'vmhost vm create --cpu host' is refused (QEMU cannot pass the host
 * CPU through under TCG), which the user should learn here first. */
static void nested_note_accel(struct doctor *d) {
        const struct probe_report *r = d->report;
        if (r->accel == PROBE_ACCEL_KVM)
                return;
        for (unsigned i = 0; i < r->n_checks; i++) {
                struct probe_check *c = &d->report->checks[i];
                if (!streq(c->name, "nested"))
                        continue;
                size_t n = strlen(c->reason);
                snprintf(c->reason + n, sizeof(c->reason) - n,
                         "; the accelerator is %s, so '--cpu host' (which needs KVM) is refused: use --cpu max",
                         r->accel == PROBE_ACCEL_TCG ? "TCG" : "none");
                if (c->status == PROBE_CHECK_OK)
                        c->status = PROBE_CHECK_WARN;
        }
}

/* ---- networking ---- */

static void check_tun(struct doctor *d) {
        char how[256];
        enum probe_kmod_state s = kmod(d, "tun", "TUN", how, sizeof(how));
        int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        int e = errno;
        struct probe_check *c;
        if (fd >= 0) {
                close(fd);
                c = check_add(d, SECTION_NET, "tun", PROBE_CHECK_OK,
                              "/dev/net/tun opens read-write: tap devices for VM NICs (%s)", how);
                check_value(c, "usable");
        } else if (e == EACCES || e == EPERM) {
                c = check_add(d, SECTION_NET, "tun", PROBE_CHECK_UNUSABLE,
                              "cannot open /dev/net/tun: %s; taps need root or CAP_NET_ADMIN", strerror(e));
                check_value(c, "no access");
        } else if (s == PROBE_KMOD_LOADABLE) {
                c = check_add(d, SECTION_NET, "tun", PROBE_CHECK_WARN, "/dev/net/tun: %s; run 'modprobe tun' (%s)",
                              strerror(e), how);
                check_value(c, "module not loaded");
        } else {
                c = check_add(d, SECTION_NET, "tun", PROBE_CHECK_MISSING,
                              "/dev/net/tun: %s; VMs can only use user-mode networking (%s)", strerror(e), how);
                check_value(c, "missing");
        }
}

static const struct {
        const char *name, *module, *symbol, *purpose;
} module_checks[] = {
        { "bridge", "bridge", "BRIDGE", "Linux bridges connect VM taps" },
        { "veth", "veth", "VETH", "veth pairs link network namespaces" },
        { "vxlan", "vxlan", "VXLAN", "kernel VXLAN tunnels join bridges across hosts" },
        { "gre", "ip_gre", "NET_IPGRE", "kernel GRE tunnels" },
        { "8021q", "8021q", "VLAN_8021Q", "VLAN sub-interfaces (Open vSwitch VLAN tags do not need it)" },
        { "vhost-net", "vhost_net", "VHOST_NET",
          "in-kernel virtio-net data path (without it QEMU moves packets itself, slower)" },
};

static void check_modules(struct doctor *d) {
        for (size_t i = 0; i < ELEMENTSOF(module_checks); i++) {
                char how[256];
                enum probe_kmod_state s = kmod(d, module_checks[i].module, module_checks[i].symbol, how, sizeof(how));
                struct probe_check *c = check_add(d, SECTION_NET, module_checks[i].name,
                                                 probe_kmod_available(s) ? PROBE_CHECK_OK
                                                 : s == PROBE_KMOD_UNKNOWN ? PROBE_CHECK_WARN
                                                                          : PROBE_CHECK_MISSING,
                                                 "%s; %s", module_checks[i].purpose, how);
                check_value(c, "%s", probe_kmod_state_to_string(s));
        }
}

static void check_netns(struct doctor *d) {
        int k = d->config ? probe_kconfig_lookup(d->config, "NET_NS") : 0;
        bool have = file_exists("/proc/self/ns/net");
        struct probe_check *c;
        if (have)
                c = check_add(d, SECTION_NET, "netns", PROBE_CHECK_OK,
                              "/proc/self/ns/net exists%s: tests and tunnels use network namespaces",
                              k == 'y' ? " and CONFIG_NET_NS=y" : "");
        else
                c = check_add(d, SECTION_NET, "netns", PROBE_CHECK_MISSING, "no /proc/self/ns/net%s",
                              k == 'n' ? " (CONFIG_NET_NS is not set)" : "");
        check_value(c, have ? "supported" : "missing");
}

static void check_nftables(const struct vh_context *ctx, struct doctor *d) {
        char how[256], vb[64] = "";
        enum probe_kmod_state s = kmod(d, "nf_tables", "NF_TABLES", how, sizeof(how));
        struct probe_version v;
        int r = tool_version(ctx, "nft", "--version", &v);
        if (r >= 0)
                snprintf(vb, sizeof(vb), "nft %s", v.text);
        else if (r == -ENOENT)
                snprintf(vb, sizeof(vb), "no nft");
        else
                snprintf(vb, sizeof(vb), "nft (unknown version)");

        struct probe_check *c;
        if (!probe_kmod_available(s) && s != PROBE_KMOD_UNKNOWN)
                c = check_add(d, SECTION_NET, "nftables", PROBE_CHECK_MISSING,
                              "no nf_tables in the kernel: no NAT for VM networks (%s)", how);
        else if (r == -ENOENT)
                c = check_add(d, SECTION_NET, "nftables", PROBE_CHECK_MISSING,
                              "nft is not installed (install nftables); NAT for VM networks needs it (%s)", how);
        else
                c = check_add(d, SECTION_NET, "nftables", s == PROBE_KMOD_UNKNOWN ? PROBE_CHECK_WARN : PROBE_CHECK_OK,
                              "NAT for VM networks (%s)", how);
        check_value(c, "%s, nf_tables %s", vb, probe_kmod_state_to_string(s));
}

static void check_ovs(const struct vh_context *ctx, struct doctor *d) {
        static const char *const tools[] = { "ovs-vsctl", "ovs-vswitchd", "ovsdb-server" };
        char missing[128] = "";
        size_t n_missing = 0;
        for (size_t i = 0; i < ELEMENTSOF(tools); i++) {
                _cleanup_free_ char *p = find_executable(ctx, tools[i]);
                if (!p) {
                        size_t l = strlen(missing);
                        snprintf(missing + l, sizeof(missing) - l, "%s%s", n_missing ? ", " : "", tools[i]);
                        n_missing++;
                }
        }
        struct probe_check *c;
        if (n_missing == ELEMENTSOF(tools)) {
                c = check_add(d, SECTION_NET, "openvswitch", PROBE_CHECK_MISSING,
                              "not installed (install openvswitch-switch); Linux bridges still work");
                check_value(c, "not found");
        } else if (n_missing > 0) {
                c = check_add(d, SECTION_NET, "openvswitch", PROBE_CHECK_UNUSABLE, "missing %s", missing);
                check_value(c, "incomplete");
        } else {
                struct probe_version v;
                int r = tool_version(ctx, "ovs-vsctl", "--version", &v);
                c = check_add(d, SECTION_NET, "openvswitch", PROBE_CHECK_OK,
                              "ovs-vsctl, ovs-vswitchd and ovsdb-server are installed");
                check_value(c, "%s", r >= 0 ? v.text : "unknown version");
        }

        char how[256];
        enum probe_kmod_state s = kmod(d, "openvswitch", "OPENVSWITCH", how, sizeof(how));
        if (probe_kmod_available(s)) {
                c = check_add(d, SECTION_NET, "ovs-datapath", PROBE_CHECK_OK,
                              "the kernel datapath is available (%s)", how);
                check_value(c, "kernel (system)");
        } else {
                c = check_add(d, SECTION_NET, "ovs-datapath", PROBE_CHECK_WARN,
                              "no openvswitch kernel module: bridges need datapath_type=netdev (%s)", how);
                check_value(c, "userspace (netdev) only");
        }
}

/* ---- Open vSwitch daemons ---- */

/* Sends one JSON-RPC request to the unix socket 'path' and waits, at most
 * 'timeout_ms' in all, for the start of a JSON-RPC reply (every reply has a
 * "result" member, null on an error: either way the daemon answered). Both
 * ovsdb-server (method "echo") and ovs-vswitchd's control socket ("version")
 * answer such a request; a listener that accepts but never answers (a hung
 * daemon) is -ETIMEDOUT, not running. */
static int jsonrpc_ask(const char *path, const char *request, unsigned timeout_ms) {
        struct sockaddr_un sa;
        if (unix_address(path, &sa) < 0)
                return -ENAMETOOLONG;
        _cleanup_close_ int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0)
                return negative_errno();
        uint64_t deadline = vh_deadline_after(timeout_ms);
        /* A unix socket connects at once or not at all: EAGAIN is a full
         * listen backlog (a daemon that does not accept), not a connect in
         * progress, and the socket stays unconnected (a send would say
         * ENOTCONN). It cannot be polled for; retry until the deadline. */
        while (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                if (errno == EINTR)
                        continue;
                if (errno != EAGAIN)
                        return negative_errno();
                if (vh_clock_ms() >= deadline)
                        return -ETIMEDOUT;
                usleep(10 * 1000);
        }
        size_t len = strlen(request), sent = 0;
        char reply[512];
        size_t got = 0;
        for (;;) {
                int k = vh_poll_until(fd, sent < len ? POLLOUT : POLLIN, deadline);
                if (k < 0)
                        return k;
                if (k == 0)
                        return -ETIMEDOUT;
                if (sent < len) {
                        ssize_t n = send(fd, request + sent, len - sent, MSG_NOSIGNAL);
                        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                                continue;
                        if (n < 0)
                                return negative_errno();
                        sent += (size_t) n;
                        continue;
                }
                ssize_t n = recv(fd, reply + got, sizeof(reply) - 1 - got, 0);
                if (n < 0 && (errno == EAGAIN || errno == EINTR))
                        continue;
                if (n < 0)
                        return negative_errno();
                if (n == 0)
                        return -EPROTO;
                got += (size_t) n;
                reply[got] = '\0';
                /* The reply's first bytes are enough: {"id":...,"result":...}. */
                if (strstr(reply, "\"result\""))
                        return 0;
                if (reply[0] != '{' || got == sizeof(reply) - 1)
                        return -EPROTO;
        }
}

void probe_ovs_daemons_probe(const struct vh_context *ctx, const char *db, const char *rundir, unsigned timeout_ms,
                             struct probe_ovs_daemons *ret) {
        struct probe_ovs_daemons s = {};
        if (!timeout_ms)
                timeout_ms = PROBE_OVS_TIMEOUT_MS;
        snprintf(s.rundir, sizeof(s.rundir), "%s", rundir ? rundir : PROBE_OVS_RUNDIR);
        if (db)
                snprintf(s.db, sizeof(s.db), "%s%s", startswith(db, "unix:") || strchr(db, ':') ? "" : "unix:", db);
        else
                snprintf(s.db, sizeof(s.db), "unix:%s/db.sock", s.rundir);

        s.default_paths = streq(s.rundir, PROBE_OVS_RUNDIR) && streq(s.db, "unix:" PROBE_OVS_RUNDIR "/db.sock");

        _cleanup_free_ char *server = find_executable(ctx,
                                                      "ovsdb-server"), *vswitchd = find_executable(ctx, "ovs-vswitchd");
        s.installed = server && vswitchd;

        if (startswith(s.db, "unix:"))
                s.db_error = jsonrpc_ask(s.db + strlen("unix:"), "{\"method\":\"echo\",\"params\":[],\"id\":0}",
                                         timeout_ms);
        else
                s.db_error = -EOPNOTSUPP;

        char path[sizeof(s.rundir) + 32];
        _cleanup_free_ char *line = NULL;
        snprintf(path, sizeof(path), "%s/ovs-vswitchd.pid", s.rundir);
        long pid = 0;
        if (read_one_line_file(path, &line) < 0)
                s.vswitchd_error = -ENOENT;
        else if (parse_int_range(strstrip(line), 1, INT32_MAX, &pid) < 0)
                s.vswitchd_error = -EPROTO;
        else {
                s.vswitchd_pid = (int) pid;
                /* A pid file outlives a killed daemon; the process must exist. */
                if (kill((pid_t) pid, 0) < 0 && errno == ESRCH)
                        s.vswitchd_error = -ESRCH;
        }
        if (s.vswitchd_pid && !s.vswitchd_error) {
                /* OVS names the control socket after the pid unless --unixctl
                 * gave it a name; the tests' private daemons use the plain one. */
                snprintf(s.vswitchd_ctl, sizeof(s.vswitchd_ctl), "%s/ovs-vswitchd.%d.ctl", s.rundir, s.vswitchd_pid);
                if (!file_exists(s.vswitchd_ctl))
                        snprintf(s.vswitchd_ctl, sizeof(s.vswitchd_ctl), "%s/ovs-vswitchd.ctl", s.rundir);
                s.vswitchd_error = jsonrpc_ask(s.vswitchd_ctl, "{\"method\":\"version\",\"params\":[],\"id\":0}",
                                               timeout_ms);
        }
        *ret = s;
}

/* Why one daemon is not running, for the reason text. */
static const char *daemon_error_string(int e, char *buf, size_t len) {
        switch (e) {
        case -ENOENT: return "no socket";
        case -ECONNREFUSED: return "nobody listens on the socket";
        case -ETIMEDOUT: return "no answer within the timeout";
        case -EPROTO: return "not an Open vSwitch answer";
        case -ESRCH: return "the pid file names no running process";
        default: break;
        }
        snprintf(buf, len, "%s", strerror(e < 0 ? -e : e));
        return buf;
}

void probe_ovs_daemons_judge(const struct probe_ovs_daemons *s, struct probe_check *ret) {
        struct probe_check c = { .status = PROBE_CHECK_OK };
        snprintf(c.name, sizeof(c.name), "ovs-daemons");
        if (!s->installed) {
                c.status = PROBE_CHECK_MISSING;
                snprintf(c.value, sizeof(c.value), "not installed");
                snprintf(c.reason, sizeof(c.reason),
                         "ovsdb-server and ovs-vswitchd are not installed (install openvswitch-switch)");
                *ret = c;
                return;
        }
        const char *db_path = startswith(s->db, "unix:") ? s->db + strlen("unix:") : s->db;
        bool db_ok = s->db_error == 0, db_unknown = s->db_error == -EOPNOTSUPP, sw_ok = s->vswitchd_error == 0;
        /* Paths are cut at 100 characters so that both halves and the hint
         * fit the reason (each half at most 120). */
        char b1[64], b2[64], db_part[200], sw_part[200];

        if (db_ok)
                snprintf(db_part, sizeof(db_part), "ovsdb-server answers on %.100s", db_path);
        else if (db_unknown)
                snprintf(db_part, sizeof(db_part), "database %.100s is not a unix socket (not checked)", s->db);
        else
                snprintf(db_part, sizeof(db_part), "ovsdb-server: %.50s (%.100s)", daemon_error_string(s->db_error, b1, sizeof(b1)),
                         db_path);
        if (sw_ok)
                snprintf(sw_part, sizeof(sw_part), "ovs-vswitchd runs (pid %d)", s->vswitchd_pid);
        else if (s->vswitchd_error == -ENOENT && !s->vswitchd_pid)
                snprintf(sw_part, sizeof(sw_part), "ovs-vswitchd: no pid file %.100s/ovs-vswitchd.pid", s->rundir);
        else if (s->vswitchd_error == -ESRCH || s->vswitchd_error == -EPROTO)
                snprintf(sw_part, sizeof(sw_part), "ovs-vswitchd: %.40s (%.100s/ovs-vswitchd.pid)",
                         s->vswitchd_error == -EPROTO ? "unreadable pid file"
                                                      : daemon_error_string(s->vswitchd_error, b2, sizeof(b2)),
                         s->rundir);
        else
                snprintf(sw_part, sizeof(sw_part), "ovs-vswitchd pid %d: control socket %.80s: %.40s", s->vswitchd_pid,
                         s->vswitchd_ctl, daemon_error_string(s->vswitchd_error, b2, sizeof(b2)));

        if ((db_ok || db_unknown) && sw_ok) {
                c.status = db_ok ? PROBE_CHECK_OK : PROBE_CHECK_WARN;
                snprintf(c.value, sizeof(c.value), "running");
                snprintf(c.reason, sizeof(c.reason), "%.120s; %.120s", db_part, sw_part);
                *ret = c;
                return;
        }
        c.status = PROBE_CHECK_UNUSABLE;
        snprintf(c.value, sizeof(c.value), "%s",
                 !db_ok && !db_unknown && !sw_ok ? "not running"
                 : !sw_ok                        ? "ovs-vswitchd not running"
                                                 : "ovsdb-server not running");
        /* The system's daemons have a start command; an override (a test's
         * private database) is whoever started it. */
        snprintf(c.reason, sizeof(c.reason), "%.120s; %.120s; OVS networks fail until %s", db_part, sw_part,
                 s->default_paths ? "they run: " PROBE_OVS_START_HINT : "the daemons for this database run");
        *ret = c;
}

static void check_ovs_daemons(const struct vh_context *ctx, struct doctor *d) {
        struct probe_ovs_daemons s;
        probe_ovs_daemons_probe(ctx, d->ovs_db, d->ovs_rundir, 0, &s);
        struct probe_check *c = check_add(d, SECTION_NET, "ovs-daemons", PROBE_CHECK_OK, "%s", "");
        if (c)
                probe_ovs_daemons_judge(&s, c);
}

static void check_tool(const struct vh_context *ctx, struct doctor *d, const char *name, const char *tool,
                       const char *arg, const char *purpose, const char *package) {
        struct probe_version v;
        int r = tool_version(ctx, tool, arg, &v);
        struct probe_check *c;
        if (r == -ENOENT) {
                c = check_add(d, SECTION_TOOLS, name, PROBE_CHECK_MISSING, "not installed (install %s); %s",
                              package, purpose);
                check_value(c, "not found");
        } else if (r < 0) {
                c = check_add(d, SECTION_TOOLS, name, PROBE_CHECK_OK, "%s (version not recognized)", purpose);
                check_value(c, "installed");
        } else {
                c = check_add(d, SECTION_TOOLS, name, PROBE_CHECK_OK, "%s", purpose);
                check_value(c, "%s", v.text);
        }
}

static void check_tools(const struct vh_context *ctx, struct doctor *d) {
        check_tool(ctx, d, "dnsmasq", "dnsmasq", "--version", "DHCP and DNS for VM networks", "dnsmasq-base");
        check_tool(ctx, d, "ssh", "ssh", "-V", "reaches remote hosts and drives migration between them",
                   "openssh-client");
        _cleanup_free_ char *sshd = find_executable(ctx, "sshd");
        struct probe_check *c;
        if (sshd) {
                c = check_add(d, SECTION_TOOLS, "sshd", PROBE_CHECK_OK,
                              "lets other vmhost hosts reach this one over ssh");
                check_value(c, "%s", sshd);
        } else {
                c = check_add(d, SECTION_TOOLS, "sshd", PROBE_CHECK_MISSING,
                              "optional: only needed for other hosts to reach this one (install openssh-server)");
                check_value(c, "not found");
        }
}

/* Stable sort of the rows by section, keeping each section's order. */
static void sort_sections(struct doctor *d) {
        struct probe_report *r = d->report;
        for (unsigned i = 1; i < r->n_checks; i++) {
                struct probe_check c = r->checks[i];
                enum section s = d->sections[i];
                unsigned j = i;
                for (; j > 0 && d->sections[j - 1] > s; j--) {
                        r->checks[j] = r->checks[j - 1];
                        d->sections[j] = d->sections[j - 1];
                }
                r->checks[j] = c;
                d->sections[j] = s;
        }
}

int probe_doctor_run(const struct vh_context *ctx, const struct probe_doctor_options *opts,
                     struct probe_report **ret_report, struct vh_error *err) {
        uint64_t t0 = vh_clock_ns();
        struct doctor d = {
                .ovs_db = opts ? opts->ovs_db : NULL,
                .ovs_rundir = opts ? opts->ovs_rundir : NULL,
        };
        d.report = calloc(1, sizeof(*d.report));
        if (!d.report)
                return vh_error_set(err, -ENOMEM, "Out of memory");

        /* The probe runs first, in its own process, while we look at the rest. */
        struct probe_kvm_job job;
        int r = probe_kvm_start(opts ? &opts->kvm : NULL, NULL, &job, err);
        if (r < 0) {
                probe_report_free(d.report);
                return r;
        }

        kernel_load(&d);
        check_qemu(ctx, &d);
        check_qemu_targets(ctx, &d);
        check_qemu_img(ctx, &d);
        check_cpu(&d);
        check_kvm_module(&d);
        check_nested(&d);
        check_tun(&d);
        check_modules(&d);
        check_netns(&d);
        check_nftables(ctx, &d);
        check_ovs(ctx, &d);
        check_ovs_daemons(ctx, &d);
        check_tools(ctx, &d);

        r = probe_kvm_finish(&job, &d.report->kvm, err);
        if (r >= 0) {
                check_kvm(&d);
                decide_accel(&d);
                nested_note_accel(&d);
                sort_sections(&d);
                if (opts && opts->store_kvm_cache)
                        (void) probe_kvm_cache_store(ctx, &d.report->kvm, NULL);
        }

        free(d.proc_modules);
        free(d.modules_builtin);
        free(d.modules_dep);
        free(d.config);
        if (r < 0) {
                probe_report_free(d.report);
                return r;
        }
        d.report->seconds = (double) (vh_clock_ns() - t0) / 1e9;
        *ret_report = d.report;
        return 0;
}

int probe_report_to_json(const struct probe_report *r, bool pretty, char **ret_json) {
        struct json_writer w;
        json_writer_init(&w, pretty);
        json_object_begin(&w);
        json_key(&w, "checks");
        json_array_begin(&w);
        for (unsigned i = 0; i < r->n_checks; i++) {
                const struct probe_check *c = &r->checks[i];
                json_object_begin(&w);
                json_kv_string(&w, "name", c->name);
                json_kv_string(&w, "status", probe_check_status_to_string(c->status));
                json_kv_string(&w, "value", c->value);
                json_kv_string(&w, "reason", c->reason);
                json_object_end(&w);
        }
        json_array_end(&w);
        json_kv_string(&w, "accelerator", probe_accel_to_string(r->accel));
        json_kv_string(&w, "accelerator-reason", r->accel_reason);
        json_kv_bool(&w, "can-run-vms", r->can_run_vms);

        const struct probe_kvm_result *k = &r->kvm;
        json_key(&w, "kvm-probe");
        json_object_begin(&w);
        json_kv_string(&w, "status", probe_kvm_status_to_string(k->status));
        json_kv_bool(&w, "present", k->present);
        json_kv_bool(&w, "openable", k->openable);
        json_key(&w, "api-version");
        if (k->api_version >= 0)
                json_int(&w, k->api_version);
        else
                json_null(&w);
        json_kv_bool(&w, "ran", k->ran);
        json_kv_bool(&w, "finished", k->finished);
        json_kv_bool(&w, "killed", k->killed);
        json_kv_uint(&w, "iterations", k->iterations);
        json_kv_uint(&w, "iterations-target", k->iterations_target);
        json_key(&w, "seconds");
        json_double(&w, k->seconds);
        json_key(&w, "instructions-per-second");
        json_double(&w, k->instructions_per_second);
        json_key(&w, "probe-seconds");
        json_double(&w, k->probe_seconds);
        json_kv_string(&w, "reason", k->reason);
        json_object_end(&w);

        json_key(&w, "seconds");
        json_double(&w, r->seconds);
        /* The shape version (docs/json.md); last, so that the report
         * still opens with its checks. */
        json_kv_uint(&w, "version", PROBE_REPORT_JSON_VERSION);
        json_object_end(&w);

        int e = 0;
        char *text = json_writer_finish(&w, &e);
        if (!text)
                return e < 0 ? e : -ENOMEM;
        *ret_json = text;
        return 0;
}
