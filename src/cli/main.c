/* cli/main.c: the vmhost program: dispatches to one verb group. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/log.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "cli/cli.h"
#include "base/strv.h"
#include "host/host-def.h"
#include "host/host.h"
#include "host/push.h"
#include "base/fileio.h"
#include "cli/cmd-img.h"
#include "host/ssh.h"
#include "vmhost/context.h"

static const struct {
        const char *verb;
        int (*run)(const struct vh_context *ctx, int argc, char **argv);
        const char *summary;
} verbs[] = {
        { "doctor", cmd_doctor, "what this host can do (QEMU, KVM, networking) and why" },
        { "img", cmd_img, "raw and qcow2 images (create, info, convert, ...)" },
        { "vm", cmd_vm, "define, start, stop and reach virtual machines" },
        { "net", cmd_net, "networks: user-mode, Linux bridge, Open vSwitch; tunnels, uplinks" },
        { "guest", cmd_guest, "build the small test guest (kernel, disk image, ISO)" },
        { "host", cmd_host, "other machines driven over ssh: add, list, show, remove" },
        { "web", cmd_web, "the web dashboard: every VM of every host in a browser tab" },
};

/* The verbs whose commands run on another host with --host NAME. */
static bool verb_runs_remotely(const char *verb) {
        return streq(verb, "vm") || streq(verb, "img") || streq(verb, "net") || streq(verb, "doctor");
}

static void usage(FILE *f) {
        fprintf(f,
                "Usage: vmhost [-v] [--host NAME] VERB [ARGS...]\n"
                "\n"
                "Turns this Linux machine into a QEMU/KVM virtualization host.\n"
                "\n"
                "Verbs:\n");
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                fprintf(f, "  %-8s %s\n", verbs[i].verb, verbs[i].summary);
        fprintf(f,
                "\n"
                "Options:\n"
                "  -v, --verbose    print debug messages\n"
                "  -H, --host NAME  run the vm, img, net or doctor command on host NAME over ssh\n"
                "                   (see 'vmhost host --help'); also accepted among its options\n"
                "  --version        print the version\n"
                "  -h, --help       this help; 'vmhost VERB --help' for a verb\n"
                "\n"
                "Example:\n"
                "  vmhost doctor\n"
                "  vmhost img create -f qcow2 -b base.qcow2 -F qcow2 vm1.qcow2\n"
                "  vmhost --host b vm list\n");
}

bool cli_wants_help(int argc, char **argv) {
        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--"))
                        break;
                if (streq(argv[i], "-h") || streq(argv[i], "--help"))
                        return true;
        }
        return false;
}

int cli_group_start(int argc, char **argv, const char *group, const char *const commands[], size_t n_commands,
                    void (*group_usage)(FILE *), void (*command_usage)(const char *)) {
        if (argc < 2) {
                group_usage(stderr);
                return 2;
        }
        bool known = streq(argv[1], "-h") || streq(argv[1], "--help");
        for (size_t i = 0; !known && i < n_commands; i++)
                known = streq(argv[1], commands[i]);
        if (!known) {
                log_error("Unknown command '%s %s'. See 'vmhost %s --help'.", group, argv[1], group);
                return 2;
        }
        if (cli_wants_help(argc, argv)) {
                if (streq(argv[1], "-h") || streq(argv[1], "--help"))
                        group_usage(stdout);
                else
                        command_usage(argv[1]);
                return 0;
        }
        return -1;
}

/* Whether argv[*i] is --host/-H; its value goes to *ret_name (NULL when
 * missing) and *i moves past it. */
static bool host_option(int argc, char **argv, int *i, const char **ret_name) {
        const char *a = argv[*i];
        if (startswith(a, "--host=")) {
                *ret_name = a + strlen("--host=");
                return true;
        }
        if (!streq(a, "--host") && !streq(a, "-H"))
                return false;
        *ret_name = *i + 1 < argc ? argv[++*i] : NULL;
        return true;
}

/* 'vmhost --host NAME VERB ARGS...': the same command run there by its
 * vmhost, each argument quoted for its shell (host/ssh.h), output
 * streaming, its exit status ours. A failure of ssh itself is 255 with a
 * message naming the host. */
/* Whether host_ssh_exec()'s error is ssh's own failure (its exit 255,
 * host_ssh_classify()), which we pass on as 255, rather than ours. */
static bool ssh_failed(int r) {
        return r == -EKEYREJECTED || r == -ECONNREFUSED || r == -ETIMEDOUT || r == -EHOSTUNREACH || r == -EACCES ||
               r == -ECOMM;
}

/* 'vm create' for another host: of the MACs in use on this machine and on
 * every other registered host, those that host's create must avoid
 * (host_macs_for_create(): the ones carrying its host id's bits, and the
 * ones written in 'argv'; it checks its own VMs), as "--avoid-mac
 * M1,M2,..." (empty when there are none: given at all, it tells that
 * host's create that the asking was done here). */
static char *avoid_mac_list(const struct vh_context *ctx, const struct host_def *def, char *const *argv) {
        char **macs = NULL, **warnings = NULL;
        struct vh_error err = {};
        int r = host_cluster_macs(ctx, def->name, true, &macs, &warnings, &err);
        if (r < 0) {
                log_warning("Cannot gather the MACs in use on the other hosts (%s): host %s checks only its own.",
                            vh_error_message(&err, r), def->name);
                return strdup("");
        }
        for (char **u = warnings; *u; u++)
                log_warning("%s.", *u);
        host_names_free(warnings);
        /* Its host id, for what its derivation makes (the connection is
         * the one the create then uses). Unknown: all of them go. */
        struct host_status st;
        if (macs[0])
                (void) host_probe(ctx, def, 0, &st);
        else
                st = (struct host_status) {};
        char **send = NULL;
        r = host_macs_for_create(macs, st.reachable ? st.host_id : NULL, argv, &send);
        host_status_done(&st);
        host_names_free(macs);
        if (r < 0)
                return NULL;
        char *list = strv_join(send, ",");
        host_names_free(send);
        return list;
}

static bool is_vm_create(int argc, char **argv) {
        return argc >= 2 && streq(argv[0], "vm") && streq(argv[1], "create") && !cli_wants_help(argc, argv);
}

/* 'vm create NAME --base IMAGE' for another host, where IMAGE is a file
 * here: that host's own copy of it, found by content (img push), takes
 * its place in the command; with '--push' (which only this side reads,
 * and takes out) a missing copy is pushed first. An IMAGE that is no file
 * here is taken as a path on that host and left alone. Returns 0 with
 * argv[k] replaced (the new string in *ret_owned), or an exit status. */
static int base_for_host(const struct vh_context *ctx, const struct host_def *def, char **argv, size_t *n,
                         char **ret_owned) {
        bool push = false;
        size_t base_at = 0;
        for (size_t k = 3; k < *n && !streq(argv[k], "--"); k++) {
                if (streq(argv[k], "--push")) {
                        memmove(argv + k, argv + k + 1, (*n - k) * sizeof(char *));
                        (*n)--;
                        push = true;
                        k--;
                } else if (streq(argv[k], "--base") && k + 1 < *n)
                        base_at = ++k;
                else if (startswith(argv[k], "--base="))
                        base_at = k;
        }
        const char *base = !base_at ? NULL : startswith(argv[base_at], "--base=") ? argv[base_at] + strlen("--base=")
                                                                                 : argv[base_at];
        if (!base || !file_exists(base)) {
                if (push) {
                        log_error("vm create --push: %s", base ? "the base image must be a file here, to push it"
                                                               : "--push needs --base IMAGE");
                        return 2;
                }
                return 0;
        }
        _cleanup_free_ char *local = realpath(base, NULL);
        if (!local)
                return log_error_errno(-errno, "Cannot resolve %s: %m", base), 1;
        struct vh_error err = {};
        _cleanup_free_ char *remote = NULL;
        int r = push_find(ctx, def, local, NULL, 0, &remote, &err);
        if (r < 0) {
                /* It may quote the far side's stderr. */
                str_make_printable(err.msg, 0);
                log_error("Host %s: %s.", def->name, vh_error_message(&err, r));
                /* 255 is kept for ssh's own failure: a base that cannot be
                 * pushed (its name, say) is found out here, without ssh. */
                return ssh_failed(r) ? 255 : 1;
        }
        if (!remote && !push) {
                log_error("Host %s has no copy of base image %s. Push it first with 'vmhost img push %s %s', or "
                          "add --push.",
                          def->name, local, local, def->name);
                return 1;
        }
        if (!remote) {
                char *pa[] = { (char *) "push", local, def->name, NULL };
                r = cmd_img_push(ctx, 3, pa);
                if (r != 0)
                        return r;
                r = push_find(ctx, def, local, NULL, 0, &remote, &err);
                if (r < 0 || !remote) {
                        str_make_printable(err.msg, 0);
                        log_error("Host %s: the pushed copy of %s is not found there%s%s.", def->name, local,
                                  r < 0 ? ": " : "", r < 0 ? vh_error_message(&err, r) : "");
                        return 1;
                }
        }
        log_info("Base image %s is %s on host %s.", local, remote, def->name);
        char *arg = startswith(argv[base_at], "--base=") ? strdup_printf("--base=%s", remote) : TAKE_PTR(remote);
        if (!arg)
                return log_error_errno(-ENOMEM, "Out of memory."), 1;
        argv[base_at] = *ret_owned = arg;
        return 0;
}

static int run_on_host(const struct vh_context *ctx, const char *host, bool verbose, int argc, char **argv) {
        _cleanup_(host_def_freep) struct host_def *def = NULL;
        struct vh_error err = {};
        int r = host_load(ctx, host, &def, &err);
        if (r < 0) {
                log_error("Host %s: %s.", host, vh_error_message(&err, r));
                return 2;
        }
        _cleanup_free_ char **remote = calloc((size_t) argc + 5, sizeof(char *));
        if (!remote)
                return log_error_errno(-ENOMEM, "Out of memory."), 1;
        size_t n = 0;
        remote[n++] = (char *) host_def_vmhost(def);
        if (verbose)
                remote[n++] = (char *) "-v";
        for (int k = 0; k < argc; k++)
                remote[n++] = argv[k];
        /* MACs are unique across the cluster: the host that creates knows
         * its own VMs, this side asks the others. */
        _cleanup_free_ char *avoid = NULL, *base = NULL;
        if (is_vm_create(argc, argv)) {
                r = base_for_host(ctx, def, remote, &n, &base);
                if (r != 0)
                        return r;
                remote[n] = NULL;
                avoid = avoid_mac_list(ctx, def, remote);
                if (!avoid)
                        return log_error_errno(-ENOMEM, "Out of memory."), 1;
                remote[n++] = (char *) "--avoid-mac";
                remote[n++] = avoid;
        }
        remote[n] = NULL;
        fflush(stdout);
        r = host_ssh_exec(ctx, def, remote, STDERR_FILENO, &err);
        if (r < 0) {
                str_make_printable(err.msg, 0);
                log_error("On host %s: %s.", host, vh_error_message(&err, r));
                /* 255 says that ssh failed, as ssh's own status does. */
                return ssh_failed(r) ? 255 : 1;
        }
        return r;
}

/* A command's status as our exit status: 255 is kept for ssh's failures
 * (a caller of 'vmhost --host' tells them apart by it), and a negative
 * -errno returned by mistake must not wrap to 255 or more. */
static int exit_status(int r) {
        return r < 0 || r >= 255 ? 1 : r;
}

int main(int argc, char **argv) {
        int i = 1;
        const char *host = NULL;
        bool verbose = false;
        for (; i < argc && argv[i][0] == '-'; i++) {
                if (streq(argv[i], "-v") || streq(argv[i], "--verbose")) {
                        log_set_max_level(LOG_LEVEL_DEBUG);
                        verbose = true;
                } else if (host_option(argc, argv, &i, &host)) {
                        if (!host) {
                                log_error("Option --host needs a host name. See 'vmhost host list'.");
                                return 2;
                        }
                } else if (streq(argv[i], "--version")) {
                        printf("vmhost %s\n", VMHOST_VERSION);
                        return 0;
                } else if (streq(argv[i], "-h") || streq(argv[i], "--help")) {
                        usage(stdout);
                        return 0;
                } else {
                        log_error("Unknown option '%s'. See 'vmhost --help'.", argv[i]);
                        return 2;
                }
        }
        if (i >= argc) {
                usage(stderr);
                return 2;
        }
        /* --host among the command's options (before any "--"), taken
         * out so that neither side sees it. */
        if (verb_runs_remotely(argv[i]))
                for (int k = i + 1; k < argc && !streq(argv[k], "--"); k++) {
                        int at = k;
                        const char *name = NULL;
                        if (!host_option(argc, argv, &k, &name))
                                continue;
                        if (!name) {
                                log_error("Option --host needs a host name. See 'vmhost host list'.");
                                return 2;
                        }
                        if (host && !streq(host, name)) {
                                log_error("Two hosts given: '%s' and '%s'.", host, name);
                                return 2;
                        }
                        host = name;
                        int drop = k - at + 1;
                        memmove(argv + at, argv + k + 1, (size_t) (argc - k - 1) * sizeof(char *));
                        argc -= drop;
                        argv[argc] = NULL;
                        k = at - 1;
                }
        if (host && !verb_runs_remotely(argv[i])) {
                log_error("--host works with the vm, img, net and doctor commands, not with '%s'.", argv[i]);
                return 2;
        }
        for (size_t v = 0; v < ELEMENTSOF(verbs); v++)
                if (streq(argv[i], verbs[v].verb)) {
                        /* Filled once, here: the libraries read no environment. */
                        _cleanup_(vh_context_freep) struct vh_context *ctx = NULL;
                        struct vh_error err = {};
                        int r = vh_context_from_env(&ctx, &err);
                        if (r < 0) {
                                log_error_errno(r, "Cannot set up vmhost: %s", vh_error_message(&err, r));
                                return 1;
                        }
                        /* The machine we are on is the host "local". */
                        if (host && !streq(host, HOST_LOCAL))
                                return run_on_host(ctx, host, verbose, argc - i, argv + i);
                        return exit_status(verbs[v].run(ctx, argc - i, argv + i));
                }

        log_error("Unknown verb '%s'. See 'vmhost --help'.", argv[i]);
        return 2;
}
