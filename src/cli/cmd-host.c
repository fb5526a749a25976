/* cli/cmd-host.c: 'vmhost host ...': register remote hosts reached over
 * OpenSSH, list them with whether they answer, show and forget them. The
 * commands that run on a host are the usual ones with --host NAME
 * (main.c). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json-writer.h"
#include "base/log.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "cli/cli.h"
#include "host/host.h"
#include "host/ssh.h"

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
                "  list [--json]                 every host: reachable or why not, round trip, version\n"
                "  show NAME [--json]            what is recorded of a host\n"
                "  remove NAME                   forget a host (its file and its known host key)\n"
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
          "fingerprint; later connections refuse any other key), and checks which vmhost\n"
          "runs there. Logging in must work without a password (keys or an agent).\n"
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
          "the round trip of the ask, and its vmhost version. One unreachable host costs\n"
          "at most the connect timeout (5 s) and never fails the listing.\n"
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
        { "remove",
          "Usage: vmhost host remove NAME\n"
          "\n"
          "Forgets host NAME: its file, its recorded host key, its open ssh connection.\n"
          "Nothing on the host itself changes.\n"
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
        if (r < 0) {
                log_error("Cannot add host %s: %s.", name, vh_error_message(&err, r));
                return 1;
        }
        printf("Host %s: %s port %u\n", name, def->ssh, host_def_port(def));
        printf("  host key  %s (recorded; any other key is refused from now on)\n", def->host_key);
        printf("  vmhost    %s (%s), %llu ms\n", st.version, host_def_vmhost(def), (unsigned long long) st.rtt_ms);
        return 0;
}

static int load_all(const struct vh_context *ctx, struct host_def ***ret_defs, size_t *ret_n) {
        char **names = NULL;
        struct vh_error err = {};
        int n = host_list_names(ctx, &names, &err);
        if (n < 0)
                return log_error_errno(n, "Cannot list hosts: %s", vh_error_message(&err, n)), -1;
        struct host_def **defs = calloc((size_t) n + 1, sizeof(*defs));
        if (!defs) {
                host_names_free(names);
                return -ENOMEM;
        }
        size_t k = 0;
        for (int i = 0; i < n; i++) {
                int r = host_load(ctx, names[i], &defs[k], &err);
                if (r < 0) {
                        log_warning("Skipping host %s: %s.", names[i], vh_error_message(&err, r));
                        continue;
                }
                k++;
        }
        host_names_free(names);
        *ret_defs = defs;
        *ret_n = k;
        return 0;
}

static int host_list_cmd(const struct vh_context *ctx, bool json) {
        struct host_def **defs = NULL;
        size_t n = 0;
        if (load_all(ctx, &defs, &n) < 0)
                return 1;
        _cleanup_free_ struct host_status *st = calloc(n + 1, sizeof(*st));
        int r = st ? host_probe_all(ctx, defs, n, st) : -ENOMEM;
        if (r < 0) {
                for (size_t i = 0; i < n; i++)
                        host_def_free(defs[i]);
                free(defs);
                return log_error_errno(r, "Cannot ask the hosts: %m"), 1;
        }
        if (json) {
                struct json_writer w;
                json_writer_init(&w, true);
                json_array_begin(&w);
                for (size_t i = 0; i < n; i++) {
                        json_object_begin(&w);
                        json_kv_string(&w, "name", defs[i]->name);
                        json_kv_string(&w, "ssh", defs[i]->ssh);
                        json_kv_uint(&w, "port", host_def_port(defs[i]));
                        json_kv_bool(&w, "reachable", st[i].reachable);
                        json_key(&w, "error");
                        json_string(&w, st[i].reachable ? NULL : st[i].why);
                        json_kv_uint(&w, "rtt-ms", st[i].rtt_ms);
                        json_key(&w, "vmhost-version");
                        json_string(&w, st[i].reachable ? st[i].version : NULL);
                        json_object_end(&w);
                }
                json_array_end(&w);
                r = print_json(&w);
        } else {
                printf("%-16s %-28s %-10s %8s  %s\n", "NAME", "SSH", "STATE", "RTT", "VMHOST / WHY NOT");
                for (size_t i = 0; i < n; i++) {
                        char ssh[300], rtt[32];
                        snprintf(ssh, sizeof(ssh), "%s:%u", defs[i]->ssh, host_def_port(defs[i]));
                        snprintf(rtt, sizeof(rtt), "%llu ms", (unsigned long long) st[i].rtt_ms);
                        printf("%-16s %-28s %-10s %8s  %s\n", defs[i]->name, ssh,
                               st[i].reachable ? "reachable" : "down", rtt,
                               st[i].reachable ? st[i].version : st[i].why);
                }
                r = 0;
        }
        for (size_t i = 0; i < n; i++)
                host_def_free(defs[i]);
        free(defs);
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

static int host_remove_cmd(const struct vh_context *ctx, const char *name) {
        _cleanup_(host_def_freep) struct host_def *def = NULL;
        struct vh_error err = {};
        int r = host_load(ctx, name, &def, &err);
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
        static const char *const commands[] = { "add", "list", "show", "remove" };
        if (argc < 2) {
                usage(stderr);
                return 2;
        }
        bool known = streq(argv[1], "-h") || streq(argv[1], "--help");
        for (size_t i = 0; !known && i < ELEMENTSOF(commands); i++)
                known = streq(argv[1], commands[i]);
        if (!known) {
                log_error("Unknown command 'host %s'. See 'vmhost host --help'.", argv[1]);
                return 2;
        }
        if (cli_wants_help(argc, argv)) {
                if (streq(argv[1], "-h") || streq(argv[1], "--help"))
                        usage(stdout);
                else
                        command_usage(argv[1]);
                return 0;
        }
        const char *cmd = argv[1];
        if (streq(cmd, "add"))
                return host_add_cmd(ctx, argc, argv);
        bool json = false;
        const char *name = NULL;
        for (int i = 2; i < argc; i++) {
                if (streq(argv[i], "--json") && !streq(cmd, "remove"))
                        json = true;
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
        return streq(cmd, "show") ? host_show_cmd(ctx, name, json) : host_remove_cmd(ctx, name);
}
