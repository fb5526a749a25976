/* cli/cmd-vm-migrate.c: 'vmhost vm migrate NAME HOST' (live migration,
 * vm/vm-migrate.h) and the two hidden commands the source runs on the
 * destination over ssh: 'vm migrate-check' and 'vm migrate-incoming'. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/json-writer.h"
#include "base/log.h"
#include "base/strutil.h"
#include "host/host-def.h"
#include "vm/vm-migrate.h"

int vm_migrate_cmd(const struct vh_context *ctx, int argc, char **argv);
int vm_migrate_check_cmd(const struct vh_context *ctx, int argc, char **argv);
int vm_migrate_incoming_cmd(const struct vh_context *ctx, int argc, char **argv);
extern const char vm_migrate_help[];

const char vm_migrate_help[] =
        "Usage: vmhost vm migrate NAME HOST [--storage auto|shared|copy] [--transport ssh|direct]\n"
        "                         [--bandwidth RATE] [--max-downtime MS] [--timeout SEC] [--postcopy]\n"
        "                         [--postcopy-bandwidth RATE] [--dry-run] [--json]\n"
        "       vmhost vm migrate NAME HOST --resume [--transport ssh|direct] [--json]\n"
        "\n"
        "Moves running VM NAME to registered host HOST while it runs (docs/migration.md).\n"
        "Checks first, touching nothing: HOST answers with a compatible vmhost, its QEMU is\n"
        "at least this one's and has the VM's machine type, CPU model host only between\n"
        "equal CPUs, enough free memory, the VM's networks exist there, the name is free\n"
        "there, and the disk is on storage shared at the same path (verified with a file\n"
        "written beside it) or, for a copy, its base is on HOST with the same content.\n"
        "Then HOST starts the VM paused, (for a copy) the disk's top layer is mirrored\n"
        "into HOST's own overlay, memory and device state move, HOST resumes it and this\n"
        "host's QEMU and definition (and copied overlay) go: the VM runs on one host.\n"
        "Any failure before the switch-over (or Ctrl-C) leaves it running here and\n"
        "nothing on HOST.\n"
        "\n"
        "Options:\n"
        "  --storage auto          (default) shared when the disk is verified shared, else copy\n"
        "  --storage shared        the disk is the same file on both hosts; only memory moves\n"
        "  --storage copy          HOST gets its own overlay over its copy of the base (pushed\n"
        "                          with 'img push' when missing) and the top layer is mirrored\n"
        "                          into it while the guest runs\n"
        "  --transport ssh|direct  ssh (default): the stream (and a copied disk) goes through\n"
        "                          ssh, encrypted, and nothing listens on TCP. direct: plain TCP\n"
        "                          to HOST's address, memory and disk UNENCRYPTED and the disk's\n"
        "                          NBD export open to the network while it is copied: trusted\n"
        "                          networks only\n"
        "  --bandwidth RATE        at most RATE bytes/s, e.g. 500M (default: no practical limit)\n"
        "  --max-downtime MS       the longest pause allowed (default 500); the limit starts\n"
        "                          low and is raised step by step up to MS when the guest\n"
        "                          dirties memory as fast as it is sent\n"
        "  --timeout SEC           give up after SEC seconds (the VM stays here; not once\n"
        "                          post-copy has started)\n"
        "  --postcopy              when memory stops shrinking, switch to post-copy instead of\n"
        "                          raising the downtime: the VM runs on HOST at once and pulls\n"
        "                          the rest of its memory from here. After that switch a failure\n"
        "                          CANNOT be rolled back (the guest state is split between the\n"
        "                          hosts): the report says which host holds the VM, and this\n"
        "                          host's QEMU stays paused. HOST's QEMU needs userfaultfd\n"
        "                          (as its own user: sysctl vm.unprivileged_userfaultfd=1 there)\n"
        "  --postcopy-bandwidth RATE  after the switch to post-copy, send the rest at most at\n"
        "                          RATE bytes/s (default: unlimited; the guest's own page\n"
        "                          faults are served first either way)\n"
        "  --resume                finish a post-copy migration to HOST that broke (both QEMUs\n"
        "                          paused in postcopy-paused, as the report of the failure\n"
        "                          says): HOST's QEMU takes a new stream and this one sends\n"
        "                          the rest (QEMU's post-copy recovery)\n"
        "  --dry-run               the checks only\n"
        "  --json                  the report as JSON\n"
        "\n"
        "Example:\n"
        "  vmhost vm migrate web b --dry-run\n"
        "  vmhost vm migrate web b && vmhost --host b vm status web\n";

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
        (void) sig;
        interrupted = 1;
}

struct progress_state {
        bool tty;
        int last_phase;
};

static int on_progress(const struct vm_migrate_progress *p, void *userdata) {
        struct progress_state *s = userdata;
        if (interrupted)
                return 1;
        const char *phase = vm_migrate_phase_to_string(p->phase);
        if (!s->tty) {
                if ((int) p->phase != s->last_phase)
                        fprintf(stderr, "migrate: %s (%.1f s)\n", phase, (double) p->elapsed_ms / 1000);
                s->last_phase = (int) p->phase;
                return 0;
        }
        char sent[32], left[32], rate[32], dirty[32];
        if (p->phase == VM_MIGRATE_PHASE_DISK || p->phase == VM_MIGRATE_PHASE_PUSH) {
                fprintf(stderr, "\r\033[K%-11s %5.1f%%  sent %s  left %s  %s/s", phase, p->percent,
                        format_size(p->transferred, sent, sizeof(sent)), format_size(p->remaining, left, sizeof(left)),
                        format_size(p->rate_bps, rate, sizeof(rate)));
                s->last_phase = (int) p->phase;
                return 0;
        }
        fprintf(stderr, "\r\033[K%-11s %5.1f%%  sent %s  left %s  %s/s  dirty %s/s  pass %u  downtime ~%" PRIu64
                        "/%u ms",
                phase, p->percent, format_size(p->transferred, sent, sizeof(sent)),
                format_size(p->remaining, left, sizeof(left)), format_size(p->rate_bps, rate, sizeof(rate)),
                format_size(p->dirty_rate, dirty, sizeof(dirty)), p->pass, p->expected_downtime_ms,
                p->downtime_limit_ms);
        s->last_phase = (int) p->phase;
        return 0;
}

static void print_json(const char *name, const struct vm_migrate_options *o, const struct vm_migrate_result *res,
                       int r, const struct vh_error *err) {
        struct json_writer w;
        json_writer_init(&w, true);
        json_object_begin(&w);
        json_kv_string(&w, "name", name);
        json_kv_string(&w, "destination", o->dest->name);
        json_kv_string(&w, "transport", o->transport == VM_MIGRATE_TRANSPORT_SSH ? "ssh" : "direct");
        json_kv_string(&w, "storage", vm_migrate_storage_to_string(res->storage));
        json_kv_bool(&w, "dry_run", o->dry_run);
        json_kv_bool(&w, "checks_ok", res->checks_ok);
        json_key(&w, "checks");
        json_array_begin(&w);
        for (size_t i = 0; i < res->n_checks; i++) {
                json_object_begin(&w);
                json_kv_string(&w, "name", res->checks[i].name);
                json_kv_bool(&w, "ok", res->checks[i].ok);
                json_kv_string(&w, "message", res->checks[i].message);
                json_object_end(&w);
        }
        json_array_end(&w);
        json_kv_bool(&w, "migrated", res->migrated);
        json_kv_string(&w, "where", res->where);
        json_kv_string(&w, "outcome", res->outcome);
        json_kv_bool(&w, "source_paused", res->source_paused);
        if (res->source_state[0])
                json_kv_string(&w, "source_state", res->source_state);
        if (res->destination_state[0])
                json_kv_string(&w, "destination_state", res->destination_state);
        if (res->definition[0])
                json_kv_string(&w, "definition", res->definition);
        if (res->recover[0])
                json_kv_string(&w, "recover", res->recover);
        json_kv_uint(&w, "total_ms", res->total_ms);
        json_kv_uint(&w, "migration_ms", res->migration_ms);
        json_kv_uint(&w, "downtime_ms", res->downtime_ms);
        json_kv_uint(&w, "setup_ms", res->setup_ms);
        json_kv_uint(&w, "ram_transferred", res->ram_transferred);
        json_kv_uint(&w, "ram_total", res->ram_total);
        json_kv_uint(&w, "disk_transferred", res->disk_transferred);
        json_kv_uint(&w, "disk_total", res->disk_total);
        json_kv_uint(&w, "push_wire_bytes", res->push_wire_bytes);
        json_kv_uint(&w, "passes", res->passes);
        json_kv_uint(&w, "downtime_limit_ms", res->downtime_limit_ms);
        json_key(&w, "downtime_steps_ms");
        json_array_begin(&w);
        for (unsigned i = 0; i < res->n_downtime_steps; i++)
                json_uint(&w, res->downtime_steps_ms[i]);
        json_array_end(&w);
        json_kv_bool(&w, "postcopy", res->postcopy);
        json_kv_uint(&w, "postcopy_pass", res->postcopy_pass);
        json_kv_string(&w, "vnc", res->vnc);
        json_key(&w, "forwards");
        json_array_begin(&w);
        for (unsigned i = 0; i < res->n_forwards; i++) {
                char spec[48];
                json_object_begin(&w);
                json_kv_string(&w, "forward", vm_forward_format(&res->forwards[i], spec, sizeof(spec)));
                json_kv_uint(&w, "host_port", res->host_ports[i]);
                json_object_end(&w);
        }
        json_array_end(&w);
        json_key(&w, "last_progress");
        json_object_begin(&w);
        json_kv_string(&w, "phase", vm_migrate_phase_to_string(res->last.phase));
        json_kv_string(&w, "status", res->last.status);
        json_kv_uint(&w, "remaining", res->last.remaining);
        json_kv_uint(&w, "dirty_rate", res->last.dirty_rate);
        json_kv_uint(&w, "rate", res->last.rate_bps);
        json_kv_uint(&w, "pass", res->last.pass);
        json_kv_uint(&w, "expected_downtime_ms", res->last.expected_downtime_ms);
        json_object_end(&w);
        if (res->warning[0])
                json_kv_string(&w, "warning", res->warning);
        if (r < 0)
                json_kv_string(&w, "error", vh_error_message(err, r));
        json_object_end(&w);
        int werr = 0;
        char *out = json_writer_finish(&w, &werr);
        if (out)
                printf("%s\n", out);
        free(out);
}

static void print_text(const char *name, const struct vm_migrate_options *o, const struct vm_migrate_result *res) {
        for (size_t i = 0; i < res->n_checks; i++)
                printf("%s %-10s %s\n", res->checks[i].ok ? "ok  " : "FAIL", res->checks[i].name,
                       res->checks[i].message);
        if (!res->migrated)
                return;
        char sent[32], total[32];
        printf("Migrated VM %s to host %s in %.2f s (QEMU: %" PRIu64 " ms), downtime %" PRIu64
               " ms, %s of %s RAM sent in %u passes (%s).\n",
               name, o->dest->name, (double) res->total_ms / 1000, res->migration_ms, res->downtime_ms,
               format_size(res->ram_transferred, sent, sizeof(sent)), format_size(res->ram_total, total, sizeof(total)),
               res->passes, o->transport == VM_MIGRATE_TRANSPORT_SSH ? "through ssh" : "direct TCP, unencrypted");
        if (res->storage == VM_MIGRATE_STORAGE_COPY) {
                char d[32], pw[32];
                printf("disk:        copied, %s mirrored (top layer)%s%s%s\n",
                       format_size(res->disk_transferred, d, sizeof(d)), res->push_wire_bytes ? "; base pushed, " : "",
                       res->push_wire_bytes ? format_size(res->push_wire_bytes, pw, sizeof(pw)) : "",
                       res->push_wire_bytes ? " on the wire" : "");
        }
        if (res->postcopy)
                printf("post-copy:   switched after pass %u; the rest of memory was pulled by host %s\n",
                       res->postcopy_pass, o->dest->name);
        printf("where:       host %s\n", res->where);
        if (res->vnc[0])
                printf("vnc:         %s on host %s\n", res->vnc, o->dest->name);
        for (unsigned i = 0; i < res->n_forwards; i++)
                printf("forward:     host %s 127.0.0.1:%u -> guest port %u\n", o->dest->name, res->host_ports[i],
                       res->forwards[i].guest_port);
}

enum { OPT_STORAGE = 0x100, OPT_TRANSPORT, OPT_BANDWIDTH, OPT_MAX_DOWNTIME, OPT_TIMEOUT, OPT_POSTCOPY,
       OPT_POSTCOPY_BANDWIDTH, OPT_RESUME, OPT_DRY_RUN, OPT_JSON };

int vm_migrate_cmd(const struct vh_context *ctx, int argc, char **argv) {
        static const struct option options[] = {
                { "storage", required_argument, NULL, OPT_STORAGE },
                { "transport", required_argument, NULL, OPT_TRANSPORT },
                { "bandwidth", required_argument, NULL, OPT_BANDWIDTH },
                { "max-downtime", required_argument, NULL, OPT_MAX_DOWNTIME },
                { "timeout", required_argument, NULL, OPT_TIMEOUT },
                { "postcopy", no_argument, NULL, OPT_POSTCOPY },
                { "postcopy-bandwidth", required_argument, NULL, OPT_POSTCOPY_BANDWIDTH },
                { "resume", no_argument, NULL, OPT_RESUME },
                { "dry-run", no_argument, NULL, OPT_DRY_RUN },
                { "json", no_argument, NULL, OPT_JSON },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        struct vm_migrate_options o = {};
        bool json = false;
        long v;
        int c;
        optind = 1;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) != -1)
                switch (c) {
                case OPT_STORAGE:
                        if (streq(optarg, "auto"))
                                o.storage = VM_MIGRATE_STORAGE_AUTO;
                        else if (streq(optarg, "shared"))
                                o.storage = VM_MIGRATE_STORAGE_SHARED;
                        else if (streq(optarg, "copy"))
                                o.storage = VM_MIGRATE_STORAGE_COPY;
                        else
                                return log_error("--storage: expected auto, shared or copy, not '%s'", optarg), 2;
                        break;
                case OPT_TRANSPORT:
                        if (streq(optarg, "ssh"))
                                o.transport = VM_MIGRATE_TRANSPORT_SSH;
                        else if (streq(optarg, "direct"))
                                o.transport = VM_MIGRATE_TRANSPORT_DIRECT;
                        else
                                return log_error("--transport: expected ssh or direct, not '%s'", optarg), 2;
                        break;
                case OPT_BANDWIDTH:
                        if (vm_migrate_parse_rate(optarg, &o.bandwidth) < 0)
                                return log_error("--bandwidth: '%s' is not a rate, e.g. 500M or 1G", optarg), 2;
                        break;
                case OPT_MAX_DOWNTIME:
                        if (parse_int_range(optarg, 1, VM_MIGRATE_MAX_DOWNTIME_MAX_MS, &v) < 0)
                                return log_error("--max-downtime: expected 1..%u ms, not '%s'",
                                                 VM_MIGRATE_MAX_DOWNTIME_MAX_MS, optarg), 2;
                        o.max_downtime_ms = (unsigned) v;
                        break;
                case OPT_TIMEOUT:
                        if (parse_int_range(optarg, 1, 7 * 24 * 3600, &v) < 0)
                                return log_error("--timeout: expected seconds, not '%s'", optarg), 2;
                        o.timeout_s = (unsigned) v;
                        break;
                case OPT_POSTCOPY:
                        o.postcopy = true;
                        break;
                case OPT_POSTCOPY_BANDWIDTH:
                        if (vm_migrate_parse_rate(optarg, &o.postcopy_bandwidth) < 0)
                                return log_error("--postcopy-bandwidth: '%s' is not a rate, e.g. 500M or 1G",
                                                 optarg), 2;
                        break;
                case OPT_RESUME:
                        o.resume = true;
                        break;
                case OPT_DRY_RUN:
                        o.dry_run = true;
                        break;
                case OPT_JSON:
                        json = true;
                        break;
                case 'h':
                        fputs(vm_migrate_help, stdout);
                        return 0;
                default:
                        return 2;
                }
        if (o.resume && (o.postcopy || o.dry_run || o.storage != VM_MIGRATE_STORAGE_AUTO))
                return log_error("--resume takes only --transport and --json: the rest was set by the migration "
                                 "it resumes"), 2;
        if (o.postcopy_bandwidth && !o.postcopy)
                return log_error("--postcopy-bandwidth needs --postcopy"), 2;
        if (argc - optind != 2)
                return log_error("vm migrate: expected a VM name and a host, e.g. vmhost vm migrate web b"), 2;
        const char *name = argv[optind], *host = argv[optind + 1];
        if (streq(host, HOST_LOCAL))
                return log_error("vm migrate: VM %s is on this host already; name another host", name), 2;
        _cleanup_(host_def_freep) struct host_def *dest = NULL;
        struct vh_error err = {};
        int r = host_load(ctx, host, &dest, &err);
        if (r < 0)
                return log_error("Cannot migrate VM %s: %s.", name, vh_error_message(&err, r)), 1;
        if (o.transport == VM_MIGRATE_TRANSPORT_DIRECT && !o.dry_run)
                log_warning("--transport direct: VM %s's memory crosses the network to host %s unencrypted.", name,
                            host);
        o.name = name;
        o.dest = dest;
        struct progress_state ps = { .tty = isatty(STDERR_FILENO), .last_phase = -1 };
        o.progress = on_progress;
        o.userdata = &ps;

        /* Ctrl-C, a kill or the end of the session that runs us (with
         * --host) cancel in order: the VM stays here. A reader of our
         * output that went away must not end us mid-way either. */
        struct sigaction sa = { .sa_handler = on_sigint }, old_int, old_term, old_hup;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
        sigaction(SIGHUP, &sa, &old_hup);
        signal(SIGPIPE, SIG_IGN);
        struct vm_migrate_result *res = calloc(1, sizeof(*res));
        if (!res)
                return log_error("Out of memory."), 1;
        r = vm_migrate(ctx, &o, res, &err);
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
        sigaction(SIGHUP, &old_hup, NULL);
        if (ps.tty && ps.last_phase >= 0)
                fputc('\n', stderr);
        if (json)
                print_json(name, &o, res, r, &err);
        else
                print_text(name, &o, res);
        fflush(stdout);
        if (r < 0 && !json) {
                if (interrupted && r == -ECANCELED)
                        log_error("Migration of VM %s interrupted: it %s.", name,
                                  res->migrated ? "runs on the destination" : "stays running here");
                else
                        log_error("%s", vh_error_message(&err, r));
                if (res->warning[0])
                        log_warning("%s", res->warning);
                if (res->recover[0])
                        log_info("VM %s: %s; run: %s", name, res->outcome, res->recover);
                if (!res->migrated && !res->source_paused && res->n_checks && res->checks_ok && !o.dry_run)
                        log_info("VM %s is still running on this host.", name);
        } else if (res->warning[0] && !json)
                log_warning("%s", res->warning);
        if (r >= 0 && o.dry_run && !json)
                printf("All checks passed: VM %s can migrate to host %s.\n", name, host);
        free(res);
        return r < 0 ? 1 : 0;
}

/* The destination's half of the checks: definition on stdin. */
int vm_migrate_check_cmd(const struct vh_context *ctx, int argc, char **argv) {
        static const struct option options[] = {
                { "qemu-version", required_argument, NULL, 'q' },
                { "cpu", required_argument, NULL, 'c' },
                { "disk-size", required_argument, NULL, 's' },
                { "token", required_argument, NULL, 't' },
                { "token-value", required_argument, NULL, 'v' },
                { "copy", no_argument, NULL, 'C' },
                { "postcopy", no_argument, NULL, 'P' },
                {},
        };
        struct vm_migrate_check_request req = {};
        int c;
        optind = 1;
        while ((c = getopt_long(argc, argv, "", options, NULL)) != -1)
                switch (c) {
                case 'q': req.qemu_version = optarg; break;
                case 'c': req.cpu = optarg; break;
                case 's':
                        if (parse_u64(optarg, &req.disk_size) < 0)
                                return log_error("--disk-size: not a number"), 2;
                        break;
                case 't': req.token_path = optarg; break;
                case 'v': req.token_value = optarg; break;
                case 'C': req.copy = true; break;
                case 'P': req.postcopy = true; break;
                default: return 2;
                }
        if (argc - optind != 1)
                return log_error("vm migrate-check: expected a VM name (an internal command of 'vm migrate')"), 2;
        /* The definition, bounded as a vm.conf is. */
        size_t cap = VM_CONF_MAX_BYTES + 1, n = 0;
        _cleanup_free_ char *text = malloc(cap + 1);
        if (!text)
                return 1;
        for (;;) {
                ssize_t k = read(STDIN_FILENO, text + n, cap - n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        break;
                n += (size_t) k;
                if (n >= cap)
                        return log_error("vm migrate-check: the definition is longer than %u bytes",
                                         VM_CONF_MAX_BYTES), 1;
        }
        text[n] = '\0';
        struct vh_error err = {};
        _cleanup_free_ char *out = NULL;
        int r = vm_migrate_check_local(ctx, text, &req, &out, &err);
        if (r < 0)
                return log_error("%s", vh_error_message(&err, r)), 1;
        printf("%s\n", out);
        return 0;
}

int vm_migrate_incoming_cmd(const struct vh_context *ctx, int argc, char **argv) {
        static const struct option options[] = {
                { "transport", required_argument, NULL, 't' },
                { "listen", required_argument, NULL, 'l' },
                { "copy-disk-size", required_argument, NULL, 's' },
                { "copy-base", required_argument, NULL, 'b' },
                { "postcopy", no_argument, NULL, 'P' },
                { "recover", no_argument, NULL, 'R' },
                {},
        };
        bool recover = false;
        struct vm_migrate_incoming_options io = { .transport = VM_MIGRATE_TRANSPORT_SSH };
        int c;
        optind = 1;
        while ((c = getopt_long(argc, argv, "", options, NULL)) != -1)
                switch (c) {
                case 't':
                        if (streq(optarg, "direct"))
                                io.transport = VM_MIGRATE_TRANSPORT_DIRECT;
                        else if (!streq(optarg, "ssh"))
                                return log_error("--transport: expected ssh or direct"), 2;
                        break;
                case 'l': io.listen_addr = optarg; break;
                case 's':
                        if (parse_u64(optarg, &io.disk_size) < 0 || io.disk_size == 0)
                                return log_error("--copy-disk-size: not a size in bytes"), 2;
                        io.copy = true;
                        break;
                case 'b': io.base = optarg; break;
                case 'P': io.postcopy = true; break;
                case 'R': recover = true; break;
                default: return 2;
                }
        if (argc - optind != 1)
                return log_error("vm migrate-incoming: expected a VM name (an internal command of 'vm migrate')"), 2;
        /* The source going away must reach the clean-up, not kill it. */
        signal(SIGPIPE, SIG_IGN);
        signal(SIGHUP, SIG_IGN);
        setvbuf(stdout, NULL, _IONBF, 0);
        struct vh_error err = {};
        if (io.base && !io.copy)
                return log_error("--copy-base needs --copy-disk-size"), 2;
        int r = recover ? vm_migrate_incoming_recover(ctx, argv[optind], &io, STDIN_FILENO, STDOUT_FILENO, &err)
                        : vm_migrate_incoming(ctx, argv[optind], &io, STDIN_FILENO, STDOUT_FILENO, &err);
        if (r < 0)
                return log_error("%s", vh_error_message(&err, r)), 1;
        return 0;
}
