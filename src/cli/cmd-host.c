/* cli/cmd-host.c: 'vmhost host ...': register remote hosts reached over
 * OpenSSH, list them with whether they answer, show and forget them. The
 * commands that run on a host are the usual ones with --host NAME
 * (main.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/json-writer.h"
#include "base/log.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "cli/cli.h"
#include "host/host.h"
#include "host/ssh.h"
#include "vm/vm-alloc.h"

static void usage(FILE *f) {
        fprintf(f,
                "Usage: vmhost host COMMAND [ARGS...]\n"
                "\n"
                "Other machines that vmhost drives over OpenSSH (no agent of its own): run any\n"
                "vm, img or net command there with 'vmhost --host NAME ...'. This machine is\n"
                "always the host 'local'. See docs/hosts.md.\n"
                "\n"
                "Commands:\n"
                "  add NAME --ssh [USER@]ADDRESS [--port N] [--identity FILE] [--vmhost PATH]\n"
                "                                connect once, record its host key, check vmhost there\n"
                "  list [--json]                 every host: reachable or why not, round trip, versions,\n"
                "                                accelerator, CPUs, free memory, VMs\n"
                "  show NAME [--json]            what is recorded of a host\n"
                "  check NAME [--json]           what 'vmhost doctor' says there\n"
                "  remove NAME [--force]         forget a host (refused while it holds VMs)\n"
                "\n"
                "Options of add:\n"
                "  --ssh [USER@]ADDRESS   where sshd listens and whom to log in as\n"
                "  --port N               sshd's port (default 22)\n"
                "  --identity FILE        the private key to log in with (default: ssh's own choice)\n"
                "  --vmhost PATH          the vmhost program there (default: vmhost in its PATH)\n"
                "\n"
                "Examples:\n"
                "  vmhost host add b --ssh root@192.168.1.20\n"
                "  vmhost host list\n"
                "  vmhost --host b vm list\n");
}

static const struct {
        const char *name;
        const char *text;
} command_helps[] = {
        { "add",
          "Usage: vmhost host add NAME --ssh [USER@]ADDRESS [--port N] [--identity FILE] [--vmhost PATH]\n"
          "\n"
          "Registers host NAME: connects once over ssh, records its host key (shown as a\n"
          "fingerprint; later connections refuse any other key), checks that the vmhost\n"
          "there has this one's major.minor version and shows what its doctor says in\n"
          "one line. Logging in must work without a password (keys or an agent).\n"
          "\n"
          "  --ssh [USER@]ADDRESS   where sshd listens and whom to log in as\n"
          "  --port N               sshd's port (default 22)\n"
          "  --identity FILE        the private key to log in with (default: ssh's own choice)\n"
          "  --vmhost PATH          the vmhost program there (default: vmhost in its PATH)\n"
          "\n"
          "Example:\n"
          "  vmhost host add b --ssh root@192.168.1.20 --identity ~/.ssh/id_ed25519\n" },
        { "list",
          "Usage: vmhost host list [--json]\n"
          "\n"
          "Every registered host, asked in parallel: whether it answers (and why not),\n"
          "the round trip of the ask, its vmhost and QEMU versions, accelerator, CPUs,\n"
          "free memory and VMs (running/all). One unreachable host costs at most the\n"
          "connect timeout (5 s) and never fails the listing.\n"
          "\n"
          "  --json   the same as a JSON array\n"
          "\n"
          "Example:\n"
          "  vmhost host list --json\n" },
        { "show",
          "Usage: vmhost host show NAME [--json]\n"
          "\n"
          "What is recorded of host NAME: its ssh address, port, key, vmhost path and host\n"
          "key fingerprint.\n"
          "\n"
          "  --json   the same as one JSON object\n"
          "\n"
          "Example:\n"
          "  vmhost host show b\n" },
        { "check",
          "Usage: vmhost host check NAME [--json]\n"
          "\n"
          "Runs 'vmhost doctor' on host NAME and shows its report; the exit status is\n"
          "the doctor's there (0: VMs can run).\n"
          "\n"
          "  --json   the doctor's JSON report\n"
          "\n"
          "Example:\n"
          "  vmhost host check b\n" },
        { "remove",
          "Usage: vmhost host remove NAME [--force]\n"
          "\n"
          "Forgets host NAME: its file, its recorded host key, its open ssh connection.\n"
          "Nothing on the host itself changes. Refused while the host holds VMs, or\n"
          "when it cannot be asked whether it does.\n"
          "\n"
          "  --force  forget it all the same (its VMs stay there, unmanaged from here)\n"
          "\n"
          "Example:\n"
          "  vmhost host remove b\n" },
};

static void command_usage(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(command_helps); i++)
                if (streq(command_helps[i].name, name)) {
                        fputs(command_helps[i].text, stdout);
                        return;
                }
        usage(stdout);
}

static int print_json(struct json_writer *w) {
        int r;
        _cleanup_free_ char *s = json_writer_finish(w, &r);
        if (!s)
                return log_error_errno(r, "Cannot format JSON: %m"), 1;
        fputs(s, stdout);
        if (s[0] && s[strlen(s) - 1] != '\n')
                fputc('\n', stdout);
        return 0;
}

/* The value of option argv[*i] ("--opt VALUE" or "--opt=VALUE"), or NULL
 * when argv[*i] is not 'opt'. */
static const char *option_value(int argc, char **argv, int *i, const char *opt, bool *missing) {
        size_t n = strlen(opt);
        if (!strneq(argv[*i], opt, n))
                return NULL;
        if (argv[*i][n] == '=')
                return argv[*i] + n + 1;
        if (argv[*i][n] != '\0')
                return NULL;
        if (*i + 1 >= argc) {
                *missing = true;
                return NULL;
        }
        return argv[++*i];
}

static int host_add_cmd(const struct vh_context *ctx, int argc, char **argv) {
        const char *name = NULL, *ssh = NULL, *port = NULL, *identity = NULL, *vmhost = NULL;
        for (int i = 2; i < argc; i++) {
                bool missing = false;
                const char *v;
                if ((v = option_value(argc, argv, &i, "--ssh", &missing)))
                        ssh = v;
                else if ((v = option_value(argc, argv, &i, "--port", &missing)))
                        port = v;
                else if ((v = option_value(argc, argv, &i, "--identity", &missing)))
                        identity = v;
                else if ((v = option_value(argc, argv, &i, "--vmhost", &missing)))
                        vmhost = v;
                else if (missing) {
                        log_error("Option %s needs a value.", argv[i]);
                        return 2;
                } else if (!name && argv[i][0] != '-')
                        name = argv[i];
                else {
                        log_error("Unexpected argument '%s'. See 'vmhost host add --help'.", argv[i]);
                        return 2;
                }
        }
        if (!name || !ssh) {
                log_error("Usage: vmhost host add NAME --ssh [USER@]ADDRESS [--port N] [--identity FILE] [--vmhost PATH]");
                return 2;
        }
        if (streq(name, HOST_LOCAL)) {
                log_error("'local' is this machine, always there: give the other host another name.");
                return 2;
        }
        if (!host_name_is_valid(name)) {
                log_error("Invalid host name '%s': use 1..%d characters of [a-zA-Z0-9_-].", name, VH_NAME_MAX);
                return 2;
        }
        _cleanup_(host_def_freep) struct host_def *def = host_def_new(name);
        if (!def)
                return log_error_errno(-ENOMEM, "Out of memory."), 1;
        /* An identity relative to where the user is, made absolute: the
         * file is read later from anywhere. */
        _cleanup_free_ char *abs_identity = NULL;
        if (identity && identity[0] != '/') {
                if (!ctx->cwd) {
                        log_error("Host %s: give --identity as an absolute path.", name);
                        return 2;
                }
                abs_identity = strdup_printf("%s/%s", ctx->cwd, identity);
                if (!abs_identity)
                        return log_error_errno(-ENOMEM, "Out of memory."), 1;
                identity = abs_identity;
        }
        struct vh_error err = {};
        const struct { const char *key, *value; } sets[] = {
                { "ssh", ssh }, { "port", port }, { "identity", identity }, { "vmhost", vmhost },
        };
        for (size_t i = 0; i < ELEMENTSOF(sets); i++)
                if (sets[i].value && host_def_set(def, sets[i].key, sets[i].value, &err) < 0) {
                        log_error("Host %s: %s.", name, err.msg);
                        return 2;
                }
        struct host_status st = {};
        int r = host_add(ctx, def, &st, &err);
        host_status_done(r < 0 ? &st : NULL);
        if (r < 0) {
                log_error("Cannot add host %s: %s.", name, vh_error_message(&err, r));
                return 1;
        }
        printf("Host %s: %s port %u\n", name, def->ssh, host_def_port(def));
        printf("  host key  %s (recorded; any other key is refused from now on)\n", def->host_key);
        printf("  vmhost    %s (%s), %llu ms\n", st.version, host_def_vmhost(def), (unsigned long long) st.rtt_ms);
        char line[512];
        host_status_summary(&st, line, sizeof(line));
        printf("  doctor    %s\n", line);
        for (char **w = st.warnings; w && *w; w++)
                log_warning("Host %s: %s.", name, *w);
        /* Two homes with one id (a copied state directory) would derive
         * the same MACs; creates avoid them, but say so now. */
        char here[VM_HOST_ID_LEN + 1];
        if (vm_host_id_get(ctx, here, NULL) >= 0 && streq(here, st.host_id))
                log_warning("Host %s has this machine's host id %s (was its state directory copied from here?): "
                            "remove the file host-id in its state directory so that it makes its own.",
                            name, here);
        host_status_done(&st);
        return 0;
}

static int load_all(const struct vh_context *ctx, struct host_def ***ret_defs, size_t *ret_n) {
        char **skipped = NULL;
        struct vh_error err = {};
        int r = host_load_all(ctx, ret_defs, ret_n, &skipped, &err);
        if (r < 0)
                return log_error_errno(r, "Cannot list hosts: %s", vh_error_message(&err, r)), -1;
        for (char **s = skipped; *s; s++)
                log_warning("Skipping host %s.", *s);
        host_names_free(skipped);
        return 0;
}

static int host_list_cmd(const struct vh_context *ctx, bool json) {
        struct host_def **defs = NULL;
        size_t n = 0;
        if (load_all(ctx, &defs, &n) < 0)
                return 1;
        _cleanup_free_ struct host_status *st = calloc(n + 1, sizeof(*st));
        int r = st ? host_probe_all(ctx, defs, n, HOST_PROBE_DOCTOR, st) : -ENOMEM;
        if (r < 0) {
                host_defs_free(defs);
                return log_error_errno(r, "Cannot ask the hosts: %m"), 1;
        }
        if (json) {
                struct json_writer w;
                json_writer_init(&w, true);
                json_array_begin(&w);
                for (size_t i = 0; i < n; i++)
                        host_status_to_json(&w, defs[i], &st[i]);
                json_array_end(&w);
                r = print_json(&w);
        } else {
                printf("%-12s %-24s %-12s %7s  %-7s %-7s %-5s %4s %8s %5s  %s\n", "NAME", "SSH", "STATE", "RTT",
                       "VMHOST", "QEMU", "ACCEL", "CPUS", "MEM-FREE", "VMS", "WHY NOT");
                for (size_t i = 0; i < n; i++) {
                        char ssh[300], rtt[32], mem[32] = "-", vms[32] = "-", cpus[16] = "-";
                        const struct host_status *h = &st[i];
                        snprintf(ssh, sizeof(ssh), "%s:%u", defs[i]->ssh, host_def_port(defs[i]));
                        snprintf(rtt, sizeof(rtt), "%llu ms", (unsigned long long) h->rtt_ms);
                        if (h->reachable) {
                                format_size(h->memory_free, mem, sizeof(mem));
                                snprintf(vms, sizeof(vms), "%u/%u", h->vms_running, h->vms);
                                snprintf(cpus, sizeof(cpus), "%u", h->cpus);
                        }
                        printf("%-12s %-24s %-12s %7s  %-7s %-7s %-5s %4s %8s %5s  %s\n", defs[i]->name, ssh,
                               h->reachable ? "reachable" : h->incompatible ? "incompatible" : "down", rtt,
                               h->version[0] ? h->version : "-",
                               h->reachable && h->qemu_version[0] ? h->qemu_version : "-",
                               h->reachable && h->accel[0] ? h->accel : "-", cpus, mem, vms,
                               h->reachable ? "-" : h->why);
                }
                r = 0;
        }
        for (size_t i = 0; i < n; i++)
                host_status_done(&st[i]);
        host_defs_free(defs);
        return r;
}

/* 'vmhost host self --json [--doctor] [--vms]': what this machine says of
 * itself to the vmhost that asks over ssh (host_probe()); not for people,
 * so not in the usage. */
static int host_self_cmd(const struct vh_context *ctx, int argc, char **argv) {
        unsigned flags = 0;
        bool json = false;
        for (int i = 2; i < argc; i++) {
                if (streq(argv[i], "--json"))
                        json = true;
                else if (streq(argv[i], "--doctor"))
                        flags |= HOST_PROBE_DOCTOR;
                else if (streq(argv[i], "--vms"))
                        flags |= HOST_PROBE_VMS;
                else {
                        log_error("host self: unexpected argument '%s'.", argv[i]);
                        return 2;
                }
        }
        if (!json) {
                log_error("host self: only --json (it answers another vmhost).");
                return 2;
        }
        _cleanup_free_ char *text = NULL;
        struct vh_error err = {};
        int r = host_self_json(ctx, flags, &text, &err);
        if (r < 0) {
                log_error("Cannot describe this host: %s.", vh_error_message(&err, r));
                return 1;
        }
        puts(text);
        return 0;
}

static int host_check_cmd(const struct vh_context *ctx, const char *name, bool json) {
        _cleanup_(host_def_freep) struct host_def *def = NULL;
        struct vh_error err = {};
        int r = host_load(ctx, name, &def, &err);
        if (r < 0) {
                log_error("Host %s: %s.", name, vh_error_message(&err, r));
                return 1;
        }
        char *argv[] = { (char *) host_def_vmhost(def), (char *) "doctor", json ? (char *) "--json" : NULL, NULL };
        fflush(stdout);
        r = host_ssh_exec(ctx, def, argv, STDERR_FILENO, &err);
        if (r < 0) {
                log_error("Cannot check host %s: %s.", name, vh_error_message(&err, r));
                return 1;
        }
        if (r == 127)
                log_error("Host %s has no vmhost program '%s': install vmhost there ('make install' in its source "
                          "tree).", name, host_def_vmhost(def));
        return r;
}

static int host_show_cmd(const struct vh_context *ctx, const char *name, bool json) {
        _cleanup_(host_def_freep) struct host_def *def = NULL;
        struct vh_error err = {};
        int r = host_load(ctx, name, &def, &err);
        if (r < 0) {
                log_error("Host %s: %s.", name, vh_error_message(&err, r));
                return 1;
        }
        _cleanup_free_ char *known = NULL;
        (void) host_known_hosts_path(ctx, name, &known);
        if (json) {
                struct json_writer w;
                json_writer_init(&w, true);
                json_object_begin(&w);
                json_kv_string(&w, "name", def->name);
                json_kv_string(&w, "ssh", def->ssh);
                json_kv_uint(&w, "port", host_def_port(def));
                json_kv_string(&w, "identity", def->identity);
                json_kv_string(&w, "vmhost", host_def_vmhost(def));
                json_kv_string(&w, "host-key", def->host_key);
                json_kv_string(&w, "known-hosts", known);
                json_object_end(&w);
                return print_json(&w);
        }
        printf("Host %s\n", def->name);
        printf("  ssh          %s\n", def->ssh);
        printf("  port         %u\n", host_def_port(def));
        printf("  identity     %s\n", def->identity ? def->identity : "(ssh's own choice)");
        printf("  vmhost       %s\n", host_def_vmhost(def));
        printf("  host key     %s\n", def->host_key ? def->host_key : "(none recorded)");
        printf("  known hosts  %s\n", known ? known : "?");
        return 0;
}

static int host_remove_cmd(const struct vh_context *ctx, const char *name, bool force) {
        _cleanup_(host_def_freep) struct host_def *def = NULL;
        struct vh_error err = {};
        int r = host_load(ctx, name, &def, &err);
        if (r >= 0 && !force) {
                /* Its VMs would be left where no command of ours finds them. */
                struct host_status st;
                r = host_probe(ctx, def, 0, &st);
                unsigned vms = st.vms;
                if (r < 0) {
                        log_error("Cannot remove host %s: cannot ask it whether it holds VMs (%s). "
                                  "'vmhost host remove %s --force' forgets it all the same.",
                                  name, st.why, name);
                        host_status_done(&st);
                        return 1;
                }
                host_status_done(&st);
                if (vms > 0) {
                        log_error("Cannot remove host %s: it holds %u VM%s (see 'vmhost --host %s vm list'); delete "
                                  "them there first, or forget the host all the same with --force.",
                                  name, vms, vms == 1 ? "" : "s", name);
                        return 1;
                }
        }
        if (r >= 0)
                host_disconnect(ctx, def);
        if (r >= 0 || r != -ENOENT)
                r = host_remove(ctx, name, &err);
        if (r < 0) {
                log_error("Cannot remove host %s: %s.", name, vh_error_message(&err, r));
                return 1;
        }
        printf("Host %s removed.\n", name);
        return 0;
}

int cmd_host(const struct vh_context *ctx, int argc, char **argv) {
        static const char *const commands[] = { "add", "list", "show", "check", "remove", "self" };
        int r = cli_group_start(argc, argv, "host", commands, ELEMENTSOF(commands), usage, command_usage);
        if (r >= 0)
                return r;
        const char *cmd = argv[1];
        if (streq(cmd, "add"))
                return host_add_cmd(ctx, argc, argv);
        if (streq(cmd, "self"))
                return host_self_cmd(ctx, argc, argv);
        bool json = false, force = false;
        const char *name = NULL;
        for (int i = 2; i < argc; i++) {
                if (streq(argv[i], "--json") && !streq(cmd, "remove"))
                        json = true;
                else if (streq(argv[i], "--force") && streq(cmd, "remove"))
                        force = true;
                else if (!name && argv[i][0] != '-')
                        name = argv[i];
                else {
                        log_error("Unexpected argument '%s'. See 'vmhost host %s --help'.", argv[i], cmd);
                        return 2;
                }
        }
        if (streq(cmd, "list")) {
                if (name) {
                        log_error("host list takes no NAME.");
                        return 2;
                }
                return host_list_cmd(ctx, json);
        }
        if (!name) {
                log_error("host %s: missing NAME.", cmd);
                return 2;
        }
        if (streq(cmd, "show"))
                return host_show_cmd(ctx, name, json);
        if (streq(cmd, "check"))
                return host_check_cmd(ctx, name, json);
        return host_remove_cmd(ctx, name, force);
}
