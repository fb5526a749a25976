/* host/host.c: adding and asking remote hosts. */
#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/fileio.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "base/strv.h"
#include "host/host.h"
#include "host/ssh.h"
#include "vm/vm-addr.h"
#include "vm/vm-alloc.h"
#include "vm/vm-json.h"
#include "vm/vm-list.h"
#include "vmhost/doctor.h"

/* The connect, the login and the command's own start (with the doctor's
 * checks there, a few hundred ms). */
#define HOST_PROBE_TIMEOUT_MS ((HOST_SSH_CONNECT_TIMEOUT_S + 10) * 1000u)
#define HOST_SELF_JSON_VERSION 1

static int version_major_minor(const char *v, unsigned long *maj, unsigned long *min) {
        char *end;
        if (!v || !isdigit((unsigned char) v[0]))
                return -EINVAL;
        *maj = strtoul(v, &end, 10);
        if (*end != '.' || !isdigit((unsigned char) end[1]))
                return -EINVAL;
        *min = strtoul(end + 1, &end, 10);
        return *end == '\0' || *end == '.' || *end == '-' || *end == '+' ? 0 : -EINVAL;
}

bool host_version_compatible(const char *a, const char *b) {
        unsigned long amaj, amin, bmaj, bmin;
        return version_major_minor(a, &amaj, &amin) >= 0 && version_major_minor(b, &bmaj, &bmin) >= 0 &&
               amaj == bmaj && amin == bmin;
}

void host_status_done(struct host_status *st) {
        if (!st)
                return;
        host_names_free(st->macs);
        host_names_free(st->bad_macs);
        host_names_free(st->warnings);
        json_value_free(st->vm_list);
        *st = (struct host_status) {};
}

/* MemTotal and MemAvailable of /proc/meminfo, in bytes (0 when unread). */
static void meminfo(uint64_t *total, uint64_t *avail) {
        *total = *avail = 0;
        _cleanup_free_ char *text = NULL;
        if (read_full_file("/proc/meminfo", 64 * 1024, &text, NULL) < 0)
                return;
        for (char *line = text; line && *line;) {
                unsigned long long kb;
                if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
                        *total = (uint64_t) kb * 1024;
                else if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
                        *avail = (uint64_t) kb * 1024;
                line = strchr(line, '\n');
                if (line)
                        line++;
        }
}

/* The first word of a doctor check's value ("7.2.22 (Debian ...)" ->
 * "7.2.22"), when the check is ok or warn. */
static void check_word(const struct probe_report *r, const char *name, char *buf, size_t size) {
        buf[0] = '\0';
        const struct probe_check *c = probe_report_find(r, name);
        if (!c || (c->status != PROBE_CHECK_OK && c->status != PROBE_CHECK_WARN))
                return;
        size_t n = MIN(strcspn(c->value, " "), size - 1);
        memcpy(buf, c->value, n);
        buf[n] = '\0';
}

static void write_doctor(const struct vh_context *ctx, struct json_writer *w, struct strv *warnings) {
        struct probe_doctor_options opts = {
                .ovs_db = isempty(ctx->ovs_db) ? NULL : ctx->ovs_db,
                .ovs_rundir = isempty(ctx->ovs_rundir) ? NULL : ctx->ovs_rundir,
        };
        struct probe_report *report = NULL;
        struct vh_error e = {};
        int r = probe_doctor_run(ctx, &opts, &report, &e);
        if (r < 0) {
                strv_addf(warnings, "cannot run the doctor's checks: %s", vh_error_message(&e, r));
                return;
        }
        char qemu[64], ovs[64];
        check_word(report, "qemu-system-x86_64", qemu, sizeof(qemu));
        check_word(report, "openvswitch", ovs, sizeof(ovs));
        const struct probe_check *d = probe_report_find(report, "ovs-daemons");
        json_kv_string(w, "qemu-version", qemu[0] ? qemu : NULL);
        json_kv_string(w, "accelerator", report->can_run_vms ? probe_accel_to_string(report->accel) : "none");
        json_kv_bool(w, "can-run-vms", report->can_run_vms);
        json_kv_string(w, "ovs-version", ovs[0] ? ovs : NULL);
        json_kv_bool(w, "ovs-running", ovs[0] && d && d->status == PROBE_CHECK_OK);
        probe_report_free(report);
}

int host_self_json(const struct vh_context *ctx, unsigned flags, char **ret, struct vh_error *err) {
        char host_id[VM_HOST_ID_LEN + 1];
        int r = vm_host_id_get(ctx, host_id, err);
        if (r < 0)
                return r;
        _cleanup_(vm_names_freep) char **names = NULL;
        int n = vm_list_names(ctx, &names, err);
        if (n < 0)
                return n;
        _cleanup_(vm_names_freep) char **macs = NULL;
        struct vh_error e = {};
        struct strv warnings = {};
        if (vm_alloc_macs_in_use(ctx, &macs, &e) < 0)
                strv_addf(&warnings, "cannot tell the VMs' MACs: %s", e.msg);

        struct json_writer w;
        json_writer_init(&w, false);
        json_object_begin(&w);
        json_kv_uint(&w, "version", HOST_SELF_JSON_VERSION);
        json_kv_string(&w, "vmhost-version", VMHOST_VERSION);
        json_kv_string(&w, "host-id", host_id);
        long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        json_kv_uint(&w, "cpus", cpus > 0 ? (uint64_t) cpus : 0);
        uint64_t total, avail;
        meminfo(&total, &avail);
        json_kv_uint(&w, "memory-total", total);
        json_kv_uint(&w, "memory-free", avail);
        if (flags & HOST_PROBE_DOCTOR)
                write_doctor(ctx, &w, &warnings);

        /* One description per VM: counted here, and with HOST_PROBE_VMS
         * its status object, as 'vm list --json' writes it. */
        unsigned running = 0;
        if (flags & HOST_PROBE_VMS) {
                json_key(&w, "vm-list");
                json_array_begin(&w);
        }
        for (int i = 0; i < n; i++) {
                _cleanup_(vm_def_freep) struct vm_def *def = NULL;
                struct vm_status st;
                e = (struct vh_error) {};
                r = vm_describe(ctx, names[i], &def, &st, &e);
                if (r < 0) {
                        strv_addf(&warnings, "%s", vh_error_message(&e, r));
                        continue;
                }
                if (st.state == VM_STATE_RUNNING)
                        running++;
                if (!(flags & HOST_PROBE_VMS))
                        continue;
                _cleanup_free_ struct vm_address *addrs = NULL;
                int n_addrs = vm_addresses(ctx, def, &st, (int64_t) time(NULL), &addrs, &e);
                if (n_addrs < 0) {
                        strv_addf(&warnings, "VM %s: cannot tell its addresses: %s", def->name,
                                  vh_error_message(&e, n_addrs));
                        n_addrs = 0;
                }
                struct vm_paths p;
                bool have_paths = vm_paths_get(ctx, def->name, &p, NULL) >= 0;
                vm_status_to_json(&w, def, &st, addrs, (size_t) n_addrs, have_paths ? p.vnc_socket : NULL);
                if (have_paths)
                        vm_paths_done(&p);
        }
        if (flags & HOST_PROBE_VMS)
                json_array_end(&w);
        json_kv_uint(&w, "vms", (uint64_t) n);
        json_kv_uint(&w, "vms-running", running);
        json_key(&w, "macs");
        json_array_begin(&w);
        for (char **m = macs; m && *m; m++)
                json_string(&w, *m);
        json_array_end(&w);
        json_key(&w, "warnings");
        json_array_begin(&w);
        for (size_t i = 0; i < warnings.n; i++)
                json_string(&w, warnings.v[i]);
        json_array_end(&w);
        json_object_end(&w);
        r = warnings.error;
        strv_done(&warnings);
        char *text = json_writer_finish(&w, &r);
        if (!text)
                return r < 0 ? r : -ENOMEM;
        *ret = text;
        return 0;
}

static void copy_string(const struct json_value *o, const char *key, char *buf, size_t size) {
        const char *s;
        buf[0] = '\0';
        if (json_get_string(json_object_get(o, key), &s) >= 0)
                {
                snprintf(buf, size, "%s", s);
                str_make_printable(buf, 0);
        }
}

static uint64_t get_uint(const struct json_value *o, const char *key) {
        uint64_t v = 0;
        (void) json_get_uint(json_object_get(o, key), &v);
        return v;
}

static int string_array(const struct json_value *a, size_t max, char ***ret) {
        struct strv v = {};
        for (size_t i = 0; i < json_array_len(a) && i < max; i++) {
                const char *s;
                if (json_get_string(json_array_at(a, i), &s) >= 0) {
                        strv_add(&v, s);
                        /* Printed as they come: another host's text. */
                        if (!v.error)
                                str_make_printable(v.v[v.n - 1], 0);
                }
        }
        if (!v.v && !v.error && !(v.v = calloc(1, sizeof(char *))))
                v.error = -ENOMEM;
        if (v.error) {
                strv_done(&v);
                return -ENOMEM;
        }
        *ret = v.v;
        return 0;
}

/* The "macs" of a reply into ret->macs, lower case. What is not a MAC
 * is left out (into ret->bad_macs): joined into one --avoid-mac list, one
 * bad string of one host made every forwarded create refuse the list. */
static int mac_array(const struct json_value *a, struct host_status *ret) {
        struct strv v = {}, bad = {};
        for (size_t i = 0; i < json_array_len(a) && i < HOST_SELF_MAX_MACS; i++) {
                const char *s = NULL;
                (void) json_get_string(json_array_at(a, i), &s);
                char mac[18];
                if (s && strlen(s) == 17) {
                        for (size_t k = 0; k <= 17; k++)
                                mac[k] = (char) tolower((unsigned char) s[k]);
                        if (vm_mac_is_valid(mac)) {
                                strv_add(&v, mac);
                                continue;
                        }
                }
                if (bad.n < 8) {
                        strv_addf(&bad, "%.40s", s ? s : "(not a string)");
                        if (!bad.error)
                                str_make_printable(bad.v[bad.n - 1], 0);
                }
        }
        if (!v.v && !v.error && !(v.v = calloc(1, sizeof(char *))))
                v.error = -ENOMEM;
        if (!bad.v && !bad.error && !(bad.v = calloc(1, sizeof(char *))))
                bad.error = -ENOMEM;
        if (v.error || bad.error) {
                strv_done(&v);
                strv_done(&bad);
                return -ENOMEM;
        }
        ret->macs = v.v;
        ret->bad_macs = bad.v;
        return 0;
}

int host_self_parse(const char *text, struct host_status *ret, struct vh_error *err) {
        /* The document starts on a line of its own; what comes before it
         * is the remote stderr. */
        const char *start = text;
        while (start && *start != '{') {
                start = strchr(start, '\n');
                if (start)
                        start++;
        }
        if (!start)
                return vh_error_set(err, -EPROTO, "no JSON document in the reply");
        size_t len = strlen(start);
        while (len > 0 && strchr(" \t\r\n", start[len - 1]))
                len--;
        _cleanup_(json_value_freep) struct json_value *v = NULL;
        struct vh_error e = {};
        /* The reader takes what host_probe() lets ssh bring (the JSON
         * defaults are smaller: a host of some 16000 VMs looked down). */
        const struct json_limits limits = {
                .max_bytes = HOST_SELF_MAX_OUTPUT,
                .max_elements = HOST_SELF_MAX_MACS,
                .max_values = HOST_SELF_MAX_VALUES,
        };
        int r = json_parse(start, len, &limits, &v, &e);
        if (r < 0)
                return vh_error_set(err, -EPROTO, "the reply is not JSON: %s", e.msg);
        uint64_t version = 0;
        if (v->type != JSON_OBJECT || json_get_uint(json_object_get(v, "version"), &version) < 0 ||
            !json_object_get(v, "vmhost-version"))
                return vh_error_set(err, -EPROTO, "the reply is not a 'host self' document");
        copy_string(v, "vmhost-version", ret->version, sizeof(ret->version));
        copy_string(v, "host-id", ret->host_id, sizeof(ret->host_id));
        ret->cpus = (unsigned) MIN(get_uint(v, "cpus"), UINT32_MAX);
        ret->memory_total = get_uint(v, "memory-total");
        ret->memory_free = get_uint(v, "memory-free");
        ret->vms = (unsigned) MIN(get_uint(v, "vms"), UINT32_MAX);
        ret->vms_running = (unsigned) MIN(get_uint(v, "vms-running"), UINT32_MAX);
        ret->has_doctor = json_object_get(v, "accelerator") != NULL;
        copy_string(v, "qemu-version", ret->qemu_version, sizeof(ret->qemu_version));
        copy_string(v, "accelerator", ret->accel, sizeof(ret->accel));
        copy_string(v, "ovs-version", ret->ovs_version, sizeof(ret->ovs_version));
        (void) json_get_bool(json_object_get(v, "ovs-running"), &ret->ovs_running);
        r = string_array(json_object_get(v, "warnings"), 1024, &ret->warnings);
        if (r >= 0)
                r = mac_array(json_object_get(v, "macs"), ret);
        if (r < 0)
                return r;
        struct json_value *list = json_object_steal(v, "vm-list");
        if (list && list->type != JSON_ARRAY)
                list = json_value_free(list);
        ret->vm_list = list;
        return 0;
}

void host_status_summary(const struct host_status *st, char *buf, size_t size) {
        char total[32], avail[32], ovs[96];
        if (!st->ovs_version[0])
                snprintf(ovs, sizeof(ovs), "no OVS");
        else
                snprintf(ovs, sizeof(ovs), "OVS %s%s", st->ovs_version, st->ovs_running ? "" : " (not running)");
        snprintf(buf, size, "QEMU %s, accelerator %s, %s, %s of %s memory free, %u CPU%s, %u VM%s (%u running)",
                 st->qemu_version[0] ? st->qemu_version : "missing", st->accel[0] ? st->accel : "?", ovs,
                 format_size(st->memory_free, avail, sizeof(avail)), format_size(st->memory_total, total, sizeof(total)),
                 st->cpus, st->cpus == 1 ? "" : "s", st->vms, st->vms == 1 ? "" : "s", st->vms_running);
}

void host_status_to_json(struct json_writer *w, const struct host_def *def, const struct host_status *st) {
        json_object_begin(w);
        json_kv_uint(w, "version", 1);
        json_kv_string(w, "name", def->name);
        json_kv_string(w, "ssh", def->ssh);
        json_kv_uint(w, "port", host_def_port(def));
        json_kv_bool(w, "reachable", st->reachable);
        json_kv_string(w, "state", st->reachable ? "reachable" : st->incompatible ? "incompatible" : "down");
        json_key(w, "error");
        json_string(w, st->reachable ? NULL : st->why);
        json_kv_uint(w, "rtt-ms", st->rtt_ms);
        json_key(w, "vmhost-version");
        json_string(w, st->version[0] ? st->version : NULL);
        bool r = st->reachable;
        json_kv_string(w, "host-id", r && st->host_id[0] ? st->host_id : NULL);
        json_kv_string(w, "qemu-version", r && st->qemu_version[0] ? st->qemu_version : NULL);
        json_kv_string(w, "accelerator", r && st->accel[0] ? st->accel : NULL);
        json_kv_string(w, "ovs-version", r && st->ovs_version[0] ? st->ovs_version : NULL);
        json_key(w, "ovs-running");
        if (r && st->has_doctor)
                json_bool(w, st->ovs_running);
        else
                json_null(w);
        const struct { const char *key; uint64_t v; } nums[] = {
                { "cpus", st->cpus }, { "memory-total", st->memory_total }, { "memory-free", st->memory_free },
                { "vms", st->vms }, { "vms-running", st->vms_running },
        };
        for (size_t i = 0; i < ELEMENTSOF(nums); i++) {
                json_key(w, nums[i].key);
                if (r)
                        json_uint(w, nums[i].v);
                else
                        json_null(w);
        }
        json_object_end(w);
}

static void status_fail(struct host_status *ret, int r, const struct vh_error *e) {
        ret->reachable = false;
        ret->error = r;
        snprintf(ret->why, sizeof(ret->why), "%s", vh_error_message(e, r));
        /* It may quote the far side (its stderr, its reply). */
        str_make_printable(ret->why, 0);
}

int host_probe(const struct vh_context *ctx, const struct host_def *def, unsigned flags, struct host_status *ret) {
        *ret = (struct host_status) {};
        struct strv a = {};
        strv_add(&a, host_def_vmhost(def));
        strv_add(&a, "host");
        strv_add(&a, "self");
        strv_add(&a, "--json");
        if (flags & HOST_PROBE_DOCTOR)
                strv_add(&a, "--doctor");
        if (flags & HOST_PROBE_VMS)
                strv_add(&a, "--vms");
        if (a.error) {
                strv_done(&a);
                struct vh_error e = {};
                status_fail(ret, vh_error_set(&e, -ENOMEM, "Out of memory"), &e);
                return ret->error;
        }
        unsigned ssh_flags = flags & (HOST_SSH_ACCEPT_NEW);
        _cleanup_free_ char *out = NULL;
        struct vh_error e = {};
        uint64_t t0 = vh_clock_ms();
        int r = host_ssh_run(ctx, def, ssh_flags, a.v, HOST_PROBE_TIMEOUT_MS, HOST_SELF_MAX_OUTPUT, &out, &e);
        strv_done(&a);
        if (r == 0)
                r = host_self_parse(out, ret, &e);
        ret->rtt_ms = vh_clock_ms() - t0;
        if (r == 127 || r == 126) {
                r = vh_error_set(&e, -ENOENT,
                                 "host '%s' answers, but has no vmhost program '%s' (the shell there says: exit %d): "
                                 "install vmhost on that machine ('make install' in its source tree), or give "
                                 "the program's path with 'vmhost host add %s ... --vmhost PATH'",
                                 def->name, host_def_vmhost(def), r, def->name);
                status_fail(ret, r, &e);
                return r;
        }
        if (r < 0 && r != -EPROTO) {
                status_fail(ret, r, &e);
                return r;
        }
        if (r != 0) {
                /* No 'host self' answer: a vmhost too old (or too new) to
                 * have it, or not vmhost at all. Its --version says which. */
                char line[200];
                snprintf(line, sizeof(line), "%.199s", r > 0 && out ? strstrip(out) : e.msg);
                line[strcspn(line, "\n")] = '\0';
                int exit_status = r;
                char *vargv[] = { (char *) host_def_vmhost(def), (char *) "--version", NULL };
                _cleanup_free_ char *vout = NULL;
                r = host_ssh_run(ctx, def, ssh_flags, vargv, HOST_PROBE_TIMEOUT_MS, 4096, &vout, &e);
                if (r == 0 && vout && startswith(strstrip(vout), "vmhost ")) {
                        snprintf(ret->version, sizeof(ret->version), "%s", vout + strlen("vmhost "));
                        ret->version[strcspn(ret->version, "\n")] = '\0';
                        str_make_printable(ret->version, 0);
                } else {
                        r = vh_error_set(&e, -EPROTO,
                                         "host '%s': '%s host self --json' did not answer as vmhost does (%s%d: %s)",
                                         def->name, host_def_vmhost(def), exit_status > 0 ? "exit " : "error ",
                                         exit_status, line);
                        status_fail(ret, r, &e);
                        return r;
                }
        }
        if (!host_version_compatible(ret->version, VMHOST_VERSION)) {
                ret->incompatible = true;
                r = vh_error_set(&e, -EPROTONOSUPPORT,
                                 "host '%s' runs vmhost %s, this machine %s: incompatible (vmhost drives hosts of "
                                 "its own major.minor version); install vmhost %s there ('make install' in its "
                                 "source tree)",
                                 def->name, ret->version, VMHOST_VERSION, VMHOST_VERSION);
                status_fail(ret, r, &e);
                return r;
        }
        ret->reachable = true;
        return 0;
}

struct probe_job {
        const struct vh_context *ctx;
        unsigned flags;
        const struct host_def *def;
        struct host_status *status;
};

static void *probe_thread(void *p) {
        struct probe_job *job = p;
        host_probe(job->ctx, job->def, job->flags, job->status);
        return NULL;
}

int host_probe_all(const struct vh_context *ctx, struct host_def *const defs[], size_t n, unsigned flags,
                   struct host_status ret[]) {
        if (n == 0)
                return 0;
        if (n > HOST_MAX_HOSTS)
                return -E2BIG;
        _cleanup_free_ struct probe_job *jobs = calloc(n, sizeof(*jobs));
        _cleanup_free_ pthread_t *threads = calloc(n, sizeof(*threads));
        _cleanup_free_ bool *started = calloc(n, sizeof(*started));
        if (!jobs || !threads || !started)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                jobs[i] = (struct probe_job) { ctx, flags, defs[i], &ret[i] };
                started[i] = pthread_create(&threads[i], NULL, probe_thread, &jobs[i]) == 0;
                /* No thread: ask it here, in turn, rather than not at all. */
                if (!started[i])
                        probe_thread(&jobs[i]);
        }
        for (size_t i = 0; i < n; i++)
                if (started[i])
                        pthread_join(threads[i], NULL);
        return 0;
}

int host_add(const struct vh_context *ctx, struct host_def *def, struct host_status *ret_status,
             struct vh_error *err) {
        if (!host_name_is_valid(def->name)) {
                if (streq(def->name, HOST_LOCAL))
                        return vh_error_set(err, -EINVAL, "'local' is this machine: choose another name");
                return vh_error_set(err, -EINVAL, "invalid host name '%s': use 1..%d characters of [a-zA-Z0-9_-]",
                                    def->name, VH_NAME_MAX);
        }
        if (host_exists(ctx, def->name))
                return vh_error_set(err, -EEXIST, "host '%s' exists already (see 'vmhost host show %s')", def->name,
                                    def->name);
        _cleanup_free_ char *known = NULL;
        int r = host_known_hosts_path(ctx, def->name, &known);
        if (r < 0)
                return vh_error_set(err, r, "cannot find the state directory: %s", strerror(-r));
        /* A file left by an earlier host of this name must not vouch for
         * whatever answers now. */
        if (unlink(known) < 0 && errno != ENOENT)
                return vh_error_set(err, negative_errno(), "cannot remove %s: %m", known);
        /* A master left from a host of this name (same address) would skip the key check. */
        host_disconnect(ctx, def);

        struct host_status st;
        r = host_probe(ctx, def, HOST_SSH_ACCEPT_NEW | HOST_PROBE_DOCTOR, &st);
        if (r < 0) {
                unlink(known);
                host_disconnect(ctx, def);
                r = vh_error_set(err, r, "%s", st.why);
                if (ret_status)
                        *ret_status = st;
                else
                        host_status_done(&st);
                return r;
        }
        if (ret_status)
                *ret_status = st;
        else
                host_status_done(&st);
        _cleanup_free_ char *fp = NULL;
        r = host_known_hosts_fingerprint(ctx, known, &fp, err);
        if (r >= 0) {
                free(def->host_key);
                def->host_key = TAKE_PTR(fp);
                r = host_save(ctx, def, err);
        }
        if (r < 0) {
                unlink(known);
                host_disconnect(ctx, def);
                return r;
        }
        return 0;
}

void host_disconnect(const struct vh_context *ctx, const struct host_def *def) {
        /* Fails harmlessly when no master runs. */
        (void) host_ssh_run(ctx, def, HOST_SSH_CLOSE_MASTER, NULL, 5000, 4096, NULL, NULL);
}

struct host_def **host_defs_free(struct host_def **defs) {
        for (struct host_def **d = defs; d && *d; d++)
                host_def_free(*d);
        free(defs);
        return NULL;
}

int host_load_all(const struct vh_context *ctx, struct host_def ***ret, size_t *ret_n, char ***ret_skipped,
                  struct vh_error *err) {
        char **names = NULL;
        int n = host_list_names(ctx, &names, err);
        if (n < 0)
                return n;
        struct host_def **defs = calloc((size_t) n + 1, sizeof(*defs));
        struct strv skipped = {};
        if (!defs) {
                host_names_free(names);
                return -ENOMEM;
        }
        size_t k = 0;
        for (int i = 0; i < n; i++) {
                struct vh_error e = {};
                int r = host_load(ctx, names[i], &defs[k], &e);
                if (r < 0)
                        strv_addf(&skipped, "%s: %s", names[i], vh_error_message(&e, r));
                else
                        k++;
        }
        host_names_free(names);
        if (!skipped.v && !skipped.error && !(skipped.v = calloc(1, sizeof(char *))))
                skipped.error = -ENOMEM;
        if (skipped.error) {
                strv_done(&skipped);
                host_defs_free(defs);
                return -ENOMEM;
        }
        *ret = defs;
        *ret_n = k;
        if (ret_skipped)
                *ret_skipped = skipped.v;
        else
                strv_done(&skipped);
        return 0;
}

void host_cluster_done(struct host_cluster *c) {
        if (!c)
                return;
        for (size_t i = 0; i < c->n; i++)
                host_status_done(&c->hosts[i].status);
        free(c->hosts);
        host_names_free(c->skipped);
        host_defs_free(c->defs);
        *c = (struct host_cluster) {};
}

int host_cluster_list(const struct vh_context *ctx, unsigned flags, struct host_cluster *ret, struct vh_error *err) {
        _cleanup_(host_cluster_done) struct host_cluster c = {};
        int r;
        if (flags & HOST_CLUSTER_REMOTE) {
                r = host_load_all(ctx, &c.defs, &c.n_registered, &c.skipped, err);
                if (r < 0)
                        return r;
        } else if (!(c.skipped = calloc(1, sizeof(char *))) || !(c.defs = calloc(1, sizeof(*c.defs))))
                return -ENOMEM;
        bool local = flags & HOST_CLUSTER_LOCAL;
        /* At least one, so that an empty registry is no allocation failure. */
        c.hosts = calloc(MAX(c.n_registered + local, (size_t) 1), sizeof(*c.hosts));
        if (!c.hosts)
                return -ENOMEM;
        c.n = c.n_registered + local;
        struct host_status *remote = calloc(c.n_registered, sizeof(*remote));
        if (!remote && c.n_registered > 0)
                return -ENOMEM;
        r = host_probe_all(ctx, c.defs, c.n_registered, HOST_PROBE_VMS, remote);
        if (r < 0) {
                free(remote);
                return vh_error_set(err, r, "Cannot ask the hosts: %s", strerror(-r));
        }
        for (size_t i = 0; i < c.n_registered; i++) {
                c.hosts[local + i].name = c.defs[i]->name;
                c.hosts[local + i].status = remote[i];
        }
        free(remote);
        if (local) {
                struct host_cluster_entry *e = &c.hosts[0];
                e->name = HOST_LOCAL;
                e->local = true;
                struct vh_error le = {};
                _cleanup_free_ char *self = NULL;
                r = host_self_json(ctx, HOST_PROBE_VMS, &self, &le);
                if (r >= 0)
                        r = host_self_parse(self, &e->status, &le);
                if (r < 0) {
                        e->status.error = r;
                        snprintf(e->status.why, sizeof(e->status.why), "%s", vh_error_message(&le, r));
                } else
                        e->status.reachable = true;
        }
        *ret = c;
        c = (struct host_cluster) {};
        return 0;
}

void host_cluster_entry_to_json(struct json_writer *w, const struct host_cluster_entry *e, bool with_warnings) {
        const struct host_status *h = &e->status;
        json_object_begin(w);
        json_kv_uint(w, "version", 1);
        json_kv_string(w, "host", e->name);
        json_kv_bool(w, "reachable", h->reachable);
        json_key(w, "error");
        json_string(w, h->reachable ? NULL : h->why);
        json_key(w, "vms");
        if (h->vm_list)
                json_value_write(w, h->vm_list);
        else {
                json_array_begin(w);
                json_array_end(w);
        }
        if (with_warnings) {
                json_key(w, "warnings");
                json_array_begin(w);
                for (char **m = h->warnings; m && *m; m++)
                        json_string(w, *m);
                json_array_end(w);
        }
        json_object_end(w);
}

int host_cluster_macs(const struct vh_context *ctx, const char *except, bool include_local, char ***ret_macs,
                      char ***ret_warnings, struct vh_error *err) {
        struct host_def **all = NULL;
        char **skipped = NULL;
        size_t n = 0;
        int r = host_load_all(ctx, &all, &n, &skipped, err);
        if (r < 0)
                return r;
        struct strv macs = {}, warnings = {};
        for (char **s = skipped; s && *s; s++)
                strv_addf(&warnings, "host %s: its VMs' MACs are not checked", *s);
        host_names_free(skipped);
        /* The hosts to ask: all but 'except' (the one the create runs on
         * checks its own). */
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
                if (!except || !streq(all[i]->name, except))
                        all[m++] = all[i];
                else
                        host_def_free(all[i]);
        all[m] = NULL;
        struct host_status *st = calloc(m + 1, sizeof(*st));
        r = st ? host_probe_all(ctx, all, m, 0, st) : -ENOMEM;
        for (size_t i = 0; r >= 0 && i < m; i++) {
                if (!st[i].reachable)
                        strv_addf(&warnings, "%s: its VMs' MACs are not checked", st[i].why);
                for (char **bad = st[i].bad_macs; bad && *bad; bad++)
                        strv_addf(&warnings, "host %s gave '%s' as a MAC of its VMs: not a MAC, ignored", all[i]->name,
                                  *bad);
                for (char **mac = st[i].macs; mac && *mac; mac++)
                        strv_add(&macs, *mac);
        }
        for (size_t i = 0; st && i < m; i++)
                host_status_done(&st[i]);
        free(st);
        host_defs_free(all);
        if (r >= 0 && include_local) {
                char **local = NULL;
                r = vm_alloc_macs_in_use(ctx, &local, err);
                for (char **mac = local; r >= 0 && *mac; mac++)
                        strv_add(&macs, *mac);
                host_names_free(local);
        }
        if (r >= 0 && (macs.error || warnings.error))
                r = -ENOMEM;
        if (r >= 0 && !macs.v && !(macs.v = calloc(1, sizeof(char *))))
                r = -ENOMEM;
        if (r >= 0 && !warnings.v && !(warnings.v = calloc(1, sizeof(char *))))
                r = -ENOMEM;
        if (r < 0) {
                strv_done(&macs);
                strv_done(&warnings);
                return r;
        }
        *ret_macs = macs.v;
        *ret_warnings = warnings.v;
        return 0;
}

int host_macs_for_create(char *const *macs, const char *host_id, char *const *argv, char ***ret) {
        /* The MACs written in the create's arguments (mac=... of --net),
         * lower case: few, as the arguments are bounded. */
        struct strv given = {};
        for (char *const *a = argv; a && *a; a++)
                for (size_t i = 0, len = strlen(*a); i + 17 <= len; i++) {
                        char mac[18];
                        for (size_t k = 0; k < 17; k++)
                                mac[k] = (char) tolower((unsigned char) (*a)[i + k]);
                        mac[17] = '\0';
                        if (vm_mac_is_valid(mac))
                                strv_add(&given, mac);
                }
        bool all = !host_id || !host_id[0];
        uint32_t bits = all ? 0 : vm_host_id_mix(host_id);
        struct strv v = {};
        for (char *const *m = macs; m && *m; m++) {
                unsigned b[6];
                bool keep = all;
                /* What vm_mac_derive() gives there: only such a MAC can
                 * take an id from that host's allocation. */
                if (!keep && sscanf(*m, "%2x:%2x:%2x:%2x:%2x:%2x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) == 6)
                        keep = (b[0] & 0x0f) == 0x02 && ((uint32_t) b[1] << 16 | (uint32_t) b[2] << 8 | b[3]) == bits;
                for (size_t g = 0; !keep && g < given.n; g++)
                        keep = strcasecmp(*m, given.v[g]) == 0;
                if (keep)
                        strv_add(&v, *m);
        }
        int r = given.error;
        strv_done(&given);
        if (!r && !v.error && !v.v && !(v.v = calloc(1, sizeof(char *))))
                v.error = -ENOMEM;
        if (r < 0 || v.error < 0) {
                strv_done(&v);
                return -ENOMEM;
        }
        *ret = v.v;
        return (int) MIN(v.n, (size_t) INT32_MAX);
}
