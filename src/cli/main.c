/* cli/main.c: the vmhost program: dispatches to one verb group. */
#include <stdio.h>
#include <string.h>

#include "base/log.h"
#include "base/macro.h"
#include "cli/cli.h"
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
};

static void usage(FILE *f) {
        fprintf(f,
                "Usage: vmhost [-v] VERB [ARGS...]\n"
                "\n"
                "Turns this Linux machine into a QEMU/KVM virtualization host.\n"
                "\n"
                "Verbs:\n");
        for (size_t i = 0; i < ELEMENTSOF(verbs); i++)
                fprintf(f, "  %-8s %s\n", verbs[i].verb, verbs[i].summary);
        fprintf(f,
                "\n"
                "Options:\n"
                "  -v, --verbose  print debug messages\n"
                "  --version      print the version\n"
                "  -h, --help     this help; 'vmhost VERB --help' for a verb\n"
                "\n"
                "Example:\n"
                "  vmhost doctor\n"
                "  vmhost img create -f qcow2 -b base.qcow2 -F qcow2 vm1.qcow2\n");
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

int main(int argc, char **argv) {
        int i = 1;
        for (; i < argc && argv[i][0] == '-'; i++) {
                if (streq(argv[i], "-v") || streq(argv[i], "--verbose"))
                        log_set_max_level(LOG_LEVEL_DEBUG);
                else if (streq(argv[i], "--version")) {
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
                        return verbs[v].run(ctx, argc - i, argv + i);
                }

        log_error("Unknown verb '%s'. See 'vmhost --help'.", argv[i]);
        return 2;
}
