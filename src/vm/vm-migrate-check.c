/* vm/vm-migrate-check.c: the checks of a migration that run on the
 * destination ('vm migrate-check'): its QEMU and machine type, the CPU
 * model, free memory, the VM's networks, its name and its storage; and
 * the source's reading of their answer. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "base/fileio.h"
#include "base/json-writer.h"
#include "base/json.h"
#include "base/macro.h"
#include "base/process.h"
#include "base/strutil.h"
#include "net/net.h"
#include "vm/vm-accel.h"
#include "vm/vm-migrate-internal.h"
#include "vm/vm-migrate.h"
#include "vm/vm.h"

void vm_migrate_add_check(struct vm_migrate_result *res, const char *name, bool ok, const char *fmt, ...) {
        if (res->n_checks >= VM_MIGRATE_MAX_CHECKS)
                return;
        struct vm_migrate_check *c = &res->checks[res->n_checks++];
        snprintf(c->name, sizeof(c->name), "%s", name);
        c->ok = ok;
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->message, sizeof(c->message), fmt, ap);
        va_end(ap);
}

int vm_migrate_checks_parse(const char *text, struct vm_migrate_result *res, struct vh_error *err) {
        const char *start = text ? strchr(text, '{') : NULL;
        /* ssh mixes the remote stderr in: the object starts on its own line. */
        while (start && start != text && start[-1] != '\n')
                start = strchr(start + 1, '{');
        if (!start)
                return vh_error_set(err, -EPROTO, "the destination's check gave no answer: %.200s", text ? text : "");
        struct json_limits lim = { .max_depth = 4, .max_bytes = VM_MIGRATE_REPLY_MAX, .max_string = 1024,
                                   .max_elements = 64, .max_values = 1024 };
        _cleanup_(json_value_freep) struct json_value *v = NULL;
        struct vh_error e = {};
        int r = json_parse(start, strlen(start), &lim, &v, &e);
        if (r < 0)
                return vh_error_set(err, -EPROTO, "the destination's check answer is not valid: %s",
                                    vh_error_message(&e, r));
        const struct json_value *checks = json_object_get(v, "checks");
        if (!checks || checks->type != JSON_ARRAY)
                return vh_error_set(err, -EPROTO, "the destination's check answer has no list of checks");
        for (size_t i = 0; i < json_array_len(checks); i++) {
                const struct json_value *c = json_array_at(checks, i);
                const char *name, *msg;
                bool ok;
                if (json_get_string(json_object_get(c, "name"), &name) < 0 ||
                    json_get_bool(json_object_get(c, "ok"), &ok) < 0 ||
                    json_get_string(json_object_get(c, "message"), &msg) < 0)
                        return vh_error_set(err, -EPROTO, "check %zu of the destination's answer is malformed", i);
                vm_migrate_add_check(res, name, ok, "%s", msg);
        }
        return 0;
}

void vm_migrate_cpu_model_name(char *buf, size_t len) {
        _cleanup_free_ char *text = NULL;
        size_t n;
        snprintf(buf, len, "unknown");
        if (read_full_file("/proc/cpuinfo", 4u << 20, &text, &n) < 0)
                return;
        const char *p = strstr(text, "model name");
        if (!p || !(p = strchr(p, ':')))
                return;
        p++;
        while (*p == ' ' || *p == '\t')
                p++;
        size_t k = strcspn(p, "\n");
        snprintf(buf, len, "%.*s", (int) MIN(k, len - 1), p);
}

/* "7.2.22" < "8.0.0": -1, 0, 1. */
static int version_compare(const char *a, const char *b) {
        for (int i = 0; i < 3; i++) {
                unsigned long x = strtoul(a, (char **) &a, 10), y = strtoul(b, (char **) &b, 10);
                if (x != y)
                        return x < y ? -1 : 1;
                if (*a == '.')
                        a++;
                if (*b == '.')
                        b++;
        }
        return 0;
}

/* What a copied disk needs free here beyond the source's allocation. */
#define MIGRATE_CHECK_SPACE_MARGIN (64ull << 20)

static uint64_t mem_available(void) {
        _cleanup_free_ char *text = NULL;
        size_t n;
        if (read_full_file("/proc/meminfo", 1u << 20, &text, &n) < 0)
                return 0;
        const char *p = strstr(text, "MemAvailable:");
        return p ? strtoull(p + strlen("MemAvailable:"), NULL, 10) * 1024 : 0;
}

/* Bytes free for an unprivileged writer under 'dir', or -errno. */
static int64_t space_available(const char *dir) {
        struct statvfs sv;
        if (statvfs(dir, &sv) < 0)
                return negative_errno();
        uint64_t b = (uint64_t) sv.f_bavail * (sv.f_frsize ? sv.f_frsize : sv.f_bsize);
        return (int64_t) MIN(b, (uint64_t) INT64_MAX);
}

/* A copied disk: this host makes the VM's own overlay under
 * STATE/vms/NAME and the mirror fills it with what the source's top layer
 * holds. 'disk_size' is the size of the source's disk file: for a qcow2
 * overlay that is what it allocates (clusters and metadata), for a raw
 * disk (mirrored whole) an upper bound. The margin keeps room for the
 * guest's writes during the copy and for the definition and logs. */
static void check_space(const struct vh_context *ctx, const struct vm_def *def, uint64_t disk_size,
                        struct vm_migrate_result *res) {
        int64_t avail = space_available(ctx->state_dir);
        uint64_t want = disk_size + MIGRATE_CHECK_SPACE_MARGIN;
        char a[32], w[32], d[32];
        format_size(disk_size, d, sizeof(d));
        format_size(want, w, sizeof(w));
        if (avail < 0)
                vm_migrate_add_check(res, "space", false, "cannot see the free space of %s here (%s): check that "
                                     "it is mounted", ctx->state_dir, strerror((int) -avail));
        else if ((uint64_t) avail < want)
                vm_migrate_add_check(res, "space", false, "only %s free in %s here for the copy of disk %s (%s "
                                     "allocated on the source, %s needed with the margin): free space there first",
                                     format_size((uint64_t) avail, a, sizeof(a)), ctx->state_dir, def->disk, d, w);
        else
                vm_migrate_add_check(res, "space", true, "%s free in %s for the copy of disk %s (%s allocated)",
                                     format_size((uint64_t) avail, a, sizeof(a)), ctx->state_dir, def->disk, d);
}

int vm_migrate_check_local(const struct vh_context *ctx, const char *def_text,
                           const struct vm_migrate_check_request *req, char **ret, struct vh_error *err) {
        _cleanup_(vm_def_freep) struct vm_def *def = NULL;
        int r = vm_def_parse(def_text, "the source's definition", &def, err);
        if (r < 0)
                return r;
        struct vm_migrate_result res = {};

        /* QEMU here: at least the source's, and it has the pinned machine. */
        char *vargv[] = { (char *) VM_QEMU_BINARY, (char *) "--version", NULL };
        _cleanup_free_ char *vout = NULL;
        char qver[64] = "";
        if (process_run(ctx, vargv, 10000, 64 * 1024, &vout, NULL) == 0) {
                const char *p = strstr(vout, "version ");
                if (p)
                        snprintf(qver, sizeof(qver), "%.*s", (int) strcspn(p + 8, " \n"), p + 8);
        }
        if (!qver[0])
                vm_migrate_add_check(&res, "qemu", false, "QEMU (%s) is not installed or does not answer here: install "
                          "qemu-system-x86 (see 'vmhost doctor')", VM_QEMU_BINARY);
        else if (req->qemu_version && version_compare(qver, req->qemu_version) < 0)
                vm_migrate_add_check(&res, "qemu", false, "QEMU %s here is older than the source's %s: a VM moves only to the "
                          "same or a newer QEMU; upgrade QEMU here", qver, req->qemu_version);
        else
                vm_migrate_add_check(&res, "qemu", true, "QEMU %s (source %s)", qver, req->qemu_version ? req->qemu_version : "?");

        if (qver[0] && def->machine) {
                char *margv[] = { (char *) VM_QEMU_BINARY, (char *) "-machine", (char *) "help", NULL };
                _cleanup_free_ char *mout = NULL;
                bool found = false;
                if (process_run(ctx, margv, 10000, 1u << 20, &mout, NULL) == 0)
                        for (char *line = mout; line && *line;) {
                                size_t k = strcspn(line, " \n");
                                if (k == strlen(def->machine) && !strncmp(line, def->machine, k))
                                        found = true;
                                line = strchr(line, '\n');
                                if (line)
                                        line++;
                        }
                if (found)
                        vm_migrate_add_check(&res, "machine", true, "machine type %s", def->machine);
                else
                        vm_migrate_add_check(&res, "machine", false, "QEMU %s here has no machine type %s, which VM %s is "
                                  "pinned to: install a QEMU that has it", qver, def->machine, def->name);
        } else if (qver[0])
                vm_migrate_add_check(&res, "machine", true, "machine type not pinned (pc)");

        if (def->cpu_model && streq(def->cpu_model, "host")) {
                char here[256];
                vm_migrate_cpu_model_name(here, sizeof(here));
                bool same = req->cpu && streq(req->cpu, here);
                vm_migrate_add_check(&res, "cpu", same,
                          same ? "CPU model host: the same CPU (%s) on both hosts"
                               : "CPU model host passes the CPU through, and this host's CPU (%s) differs from the "
                                 "source's: set a common model, e.g. 'vmhost vm set NAME cpu=max', and restart it",
                          here);
        } else
                vm_migrate_add_check(&res, "cpu", true, "CPU model %s", def->cpu_model ? def->cpu_model : "default");

        uint64_t avail = mem_available(), want = def->memory + (64u << 20);
        char a[32], w[32];
        format_size(avail, a, sizeof(a));
        format_size(def->memory, w, sizeof(w));
        vm_migrate_add_check(&res, "memory", avail >= want,
                  avail >= want ? "%s free for %s of guest memory"
                                : "only %s free for %s of guest memory (and QEMU's own): free memory there first",
                  a, w);

        bool nets_ok = true;
        char missing[256] = "";
        for (unsigned i = 0; i < def->n_nics; i++) {
                const char *n = def->nics[i].network;
                if (streq(n, VM_NET_USER) || net_exists(ctx, n))
                        continue;
                nets_ok = false;
                size_t l = strlen(missing);
                snprintf(missing + l, sizeof(missing) - l, "%s%s", l ? ", " : "", n);
        }
        vm_migrate_add_check(&res, "networks", nets_ok,
                  nets_ok ? "every network of its NICs exists here%s"
                          : "network %s does not exist here: create it with the same name first ('vmhost net create')",
                  nets_ok ? "" : missing);

        /* Post-copy: the destination QEMU serves page faults through
         * userfaultfd, which QEMU 7.2 opens as a system call (not
         * /dev/userfaultfd): an unprivileged QEMU gets it only with
         * vm.unprivileged_userfaultfd=1. Told now rather than when its
         * QEMU refuses the capability. */
        if (req->postcopy) {
                bool privileged = ctx->is_root && (isempty(ctx->qemu_user) || streq(ctx->qemu_user, "root"));
                _cleanup_free_ char *uf = NULL;
                size_t ufn = 0;
                bool allowed = read_full_file("/proc/sys/vm/unprivileged_userfaultfd", 16, &uf, &ufn) >= 0 &&
                               uf[0] == '1';
                if (privileged || allowed)
                        vm_migrate_add_check(&res, "postcopy", true, "post-copy: QEMU here may use userfaultfd (%s)",
                                             privileged ? "it runs as root" : "vm.unprivileged_userfaultfd=1");
                else
                        vm_migrate_add_check(&res, "postcopy", false, "post-copy needs userfaultfd, which QEMU here "
                                             "(running as %s) gets only with sysctl vm.unprivileged_userfaultfd=1: "
                                             "set it on this host, or migrate without --postcopy",
                                             ctx->is_root ? ctx->qemu_user : "the calling user");
        }

        bool taken = vm_exists(ctx, def->name);
        vm_migrate_add_check(&res, "name", !taken,
                  taken ? "a VM named %s exists here already: delete or rename it there first"
                        : "the name %s is free here",
                  def->name);

        /* Shared storage: the file the source wrote beside the disk is
         * read here at the same path with the same contents, and the disk
         * has the same size. */
        _cleanup_free_ char *token = NULL;
        size_t tn = 0;
        struct stat sb;
        if (!def->disk)
                vm_migrate_add_check(&res, "storage", true, "no disk");
        else if (req->copy) {
                vm_migrate_add_check(&res, "storage", true, "disk %s is copied: VM %s gets its own disk here", def->disk,
                          def->name);
                check_space(ctx, def, req->disk_size, &res);
        } else if (!req->token_path || !req->token_value ||
                 read_full_file(req->token_path, 4096, &token, &tn) < 0 || !streq(strstrip(token), req->token_value)) {
                vm_migrate_add_check(&res, "storage", false, "disk %s is not on storage shared with the source (a file written "
                          "beside it there is not seen here): share its directory at the same path, or use "
                          "--storage copy", def->disk);
                /* Not shared: 'auto' copies it, and then it needs room here. */
                check_space(ctx, def, req->disk_size, &res);
        }
        else if (stat(def->disk, &sb) < 0 || (uint64_t) sb.st_size != req->disk_size)
                vm_migrate_add_check(&res, "storage", false, "disk %s here is not the source's (%s): check the shared mount",
                          def->disk, errno ? strerror(errno) : "another size");
        else if (def->base && !file_exists(def->base))
                vm_migrate_add_check(&res, "storage", false, "the base %s of disk %s is missing here: share it at the same path",
                          def->base, def->disk);
        else
                vm_migrate_add_check(&res, "storage", true, "disk %s is shared (verified)", def->disk);

        struct json_writer w2;
        json_writer_init(&w2, false);
        json_object_begin(&w2);
        json_kv_string(&w2, "vmhost", VMHOST_VERSION);
        json_key(&w2, "checks");
        json_array_begin(&w2);
        for (size_t i = 0; i < res.n_checks; i++) {
                json_object_begin(&w2);
                json_kv_string(&w2, "name", res.checks[i].name);
                json_kv_bool(&w2, "ok", res.checks[i].ok);
                json_kv_string(&w2, "message", res.checks[i].message);
                json_object_end(&w2);
        }
        json_array_end(&w2);
        json_object_end(&w2);
        int werr = 0;
        char *out = json_writer_finish(&w2, &werr);
        if (!out)
                return werr < 0 ? werr : -ENOMEM;
        *ret = out;
        return 0;
}
