/* cli/cmd-vm.c: 'vmhost vm ...': define, start, stop and reach VMs. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <dirent.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <sys/un.h>
#include <unistd.h>
#include <editline/readline.h>

#include "base/fileio.h"
#include "base/json-writer.h"
#include "base/json.h"
#include "base/log.h"
#include "base/paths.h"
#include "base/strutil.h"
#include "base/strv.h"
#include "cli/cli.h"
#include "host/host.h"
#include "host/ssh.h"
#include "vm/vm-accel.h"
#include "vm/vm-addr.h"
#include "vm/vm-control.h"
#include "vm/vm-image.h"
#include "vm/vm-json.h"
#include "vm/vm-list.h"
#include "vm/vm-ops.h"
#include "vm/vm-vnc.h"
#include "vm/vm.h"

/* cmd-vm-migrate.c: 'vm migrate' and its hidden far-side commands. */
int vm_migrate_cmd(const struct vh_context *ctx, int argc, char **argv);
int vm_migrate_check_cmd(const struct vh_context *ctx, int argc, char **argv);
int vm_migrate_incoming_cmd(const struct vh_context *ctx, int argc, char **argv);
int vm_console_relay_cmd(const struct vh_context *ctx, int argc, char **argv);
int vm_web_query_cmd(const struct vh_context *ctx, int argc, char **argv);
extern const char vm_migrate_help[];

/* The options of 'vm create', in both the group's usage and create's own. */
#define VM_CREATE_OPTIONS \
                "  --cpus N                virtual CPUs (default 1)\n" \
                "  --memory SIZE           memory, e.g. 512M or 2G (default 256M)\n" \
                "  --disk FILE             use this disk image as it is (its format is probed)\n" \
                "  --disk-format raw|qcow2 the format --disk must have (refused if the file differs)\n" \
                "  --base IMAGE            make the VM its own qcow2 overlay on this base; with\n" \
                "                          --host H, an IMAGE that is a file here stands for H's copy\n" \
                "                          of it (found by content, see 'vmhost img push')\n" \
                "  --push                  with --host H and --base: push the base to H first if\n" \
                "                          H has no copy of it\n" \
                "  --disk-size SIZE        virtual size of the overlay (default: the base's)\n" \
                "  --cdrom ISO             attach an ISO image\n" \
                "  --boot disk|cdrom|kernel  boot device (default disk)\n" \
                "  --kernel FILE --initrd FILE --append TEXT   direct kernel boot\n" \
                "  --net SPEC              a NIC: user (QEMU user-mode NAT, the default), none, or\n" \
                "                          NETWORK[,mac=MAC][,vlan=N][,model=virtio|e1000][,ip=ADDR];\n" \
                "                          repeat for several NICs. MACs are allocated unless given\n" \
                "  --vnc auto|unix|none|HOST:DISPLAY|HOST:auto\n" \
                "                          VNC display. auto = unix (default): a unix socket only this\n" \
                "                          user reaches, through 'vmhost vm vnc'. HOST:DISPLAY: TCP port\n" \
                "                          5900+DISPLAY (HOST:auto: a free one), always with a password\n" \
                "                          made at each start. A VNC password is worth little: DES with\n" \
                "                          8 characters, and the screen is sent unencrypted; keep TCP\n" \
                "                          displays on 127.0.0.1 or a trusted network\n" \
                "  --forward PROTO:HOST:GUEST  forward a host port on 127.0.0.1 to the guest,\n" \
                "                          e.g. tcp:auto:22 (port allocated at start) or tcp:2222:22\n" \
                "  --accel auto|kvm|tcg    accelerator (auto: KVM only where it really works)\n" \
                "  --cpu MODEL             CPU model: host (KVM only; nested virtualization) or max\n" \
                "  --localtime             guest clock in local time\n"

static void usage(FILE *f) {
        fprintf(f,
                "Usage: vmhost vm COMMAND NAME [OPTIONS]\n"
                "\n"
                "Commands:\n"
                "  create NAME [OPTIONS]   define a VM (options below)\n"
                "  start NAME [--wait] [--timeout SEC]\n"
                "                          start it; --wait waits for the guest's ready line\n"
                "  stop NAME [--timeout SEC]\n"
                "                          ACPI power button; after SEC (default 30) QEMU quits\n"
                "  kill NAME               stop at once (QEMU quits, no guest shutdown)\n"
                "  restart NAME [--wait]   stop, then start\n"
                "  status NAME [--json]    state, pid, accelerator, forwarded ports, guest addresses\n"
                "  list [--json]           all VMs of this vmhost home (--all-hosts: of every host)\n"
                "  console NAME            attach to the serial console (detach: Ctrl-])\n"
                "  monitor NAME ['CMD']    a human monitor command, e.g. 'info status';\n"
                "                          without CMD an interactive prompt (leave with Ctrl-D)\n"
                "  qmp NAME 'JSON'         a raw QMP command, e.g. '{\"execute\":\"query-status\"}'\n"
                "  vnc NAME [--timeout SEC] [--print]\n"
                "                          the screen and keyboard: for a unix display (the default) a\n"
                "                          session for one VNC client on 127.0.0.1 with a one-time\n"
                "                          password, printed here and expired when the client leaves or\n"
                "                          nobody came in SEC (default 300); for a TCP display its address\n"
                "                          and this start's password. --print: only the socket or address\n"
                "  screenshot NAME FILE    save the screen as PNG\n"
                "  cdrom NAME eject|insert ISO   change the CD while it runs\n"
                "  snapshot create|list|revert|delete NAME [SNAP]\n"
                "                          running: full machine state; stopped: the disk's snapshot\n"
                "  commit NAME             merge the VM's overlay into its base (all VMs on it stopped)\n"
                "  forward NAME add PROTO:HOST|auto:GUEST  add a user-mode forward, also while it runs\n"
                "  migrate NAME HOST [--storage shared] [--transport ssh|direct] [--bandwidth RATE]\n"
                "          [--max-downtime MS] [--timeout SEC] [--dry-run] [--json]\n"
                "                          move it to HOST while it runs (see 'vm migrate --help')\n"
                "  delete NAME             remove a stopped VM and its own disk (never a shared base)\n"
                "  set NAME KEY=VALUE...   change the definition, e.g. boot=disk after installing,\n"
                "                          cdrom=none, memory=1G (keys: docs/vm-definition.md)\n"
                "\n"
                "Options of create:\n"
                VM_CREATE_OPTIONS
                "\n"
                "Example:\n"
                "  vmhost vm create web --base /var/lib/vmhost/guest/disk.qcow2 --forward tcp:auto:7777\n"
                "  vmhost vm start web --wait && vmhost vm status web\n"
                "  vmhost vm vnc web       # then: vncviewer 127.0.0.1::PORT, with the printed password\n");
}

/* 'vmhost vm COMMAND --help': that command's usage, what it does, its
 * options and an example; the group's usage above lists all commands. */
struct command_help {
        const char *name;
        const char *text; /* from the "Usage:" line to the last example */
};

static const struct command_help command_helps[] = {
        { "create",
          "Usage: vmhost vm create NAME [OPTIONS]\n"
          "\n"
          "Defines VM NAME: one readable definition file (docs/vm-definition.md); the VM\n"
          "id, the NICs' MACs and a VNC display are allocated under a lock. A --disk's\n"
          "format is probed; a CPU model the accelerator cannot run is refused.\n"
          "\n"
          "Options:\n"
          VM_CREATE_OPTIONS
          "\n"
          "Examples:\n"
          "  vmhost vm create web --base /var/lib/vmhost/guest/disk.qcow2 --forward tcp:auto:7777\n"
          "  vmhost vm create db --disk db.raw --cpus 2 --memory 1G --net lan\n"
          "  vmhost --host b vm create web --base /var/lib/vmhost/guest/disk.qcow2 --push\n" },
        { "start",
          "Usage: vmhost vm start NAME [--wait] [--timeout SEC]\n"
          "\n"
          "Starts QEMU for VM NAME (attaching its NICs, allocating auto forwards) and\n"
          "prints the accelerator, forwards and how to reach it. A VM that runs already\n"
          "is not started twice: 'VM NAME is already running (pid N)' and exit 0 (with\n"
          "--wait, it is still waited for). While another vmhost command works on the\n"
          "VM (a start, a stop), this one waits for it up to 45 s, then fails with\n"
          "'VM NAME is busy: being started by pid N'.\n"
          "\n"
          "  --wait          wait for the guest's ready line on the serial console\n"
          "  --timeout SEC   how long --wait waits (default 300)\n"
          "\n"
          "Example:\n"
          "  vmhost vm start web --wait\n" },
        { "stop",
          "Usage: vmhost vm stop NAME [--timeout SEC]\n"
          "\n"
          "Presses the ACPI power button; if the guest has not powered off after SEC\n"
          "seconds, QEMU is told to quit, and killed if it does not.\n"
          "\n"
          "  --timeout SEC   seconds the guest gets to shut down (default 30, 0: quit now)\n"
          "\n"
          "Example:\n"
          "  vmhost vm stop web --timeout 60\n" },
        { "kill",
          "Usage: vmhost vm kill NAME\n"
          "\n"
          "Stops VM NAME at once: QEMU quits without a guest shutdown (like pulling the\n"
          "plug). Its NICs are detached.\n"
          "\n"
          "Example:\n"
          "  vmhost vm kill web\n" },
        { "restart",
          "Usage: vmhost vm restart NAME [--wait] [--timeout SEC]\n"
          "\n"
          "Stops VM NAME (as 'vm stop', 30 seconds), then starts it again.\n"
          "\n"
          "  --wait          wait for the guest's ready line\n"
          "  --timeout SEC   how long --wait waits (default 300)\n"
          "\n"
          "Example:\n"
          "  vmhost vm restart web --wait\n" },
        { "status",
          "Usage: vmhost vm status NAME [--json]\n"
          "\n"
          "State (running, stopped, crashed), pid, accelerator, forwarded ports, the\n"
          "guest's addresses (DHCP leases, reservations, the user-mode NAT address),\n"
          "VNC and the definition's main keys.\n"
          "\n"
          "  --json   the same as one JSON object\n"
          "\n"
          "Example:\n"
          "  vmhost vm status web --json\n" },
        { "list",
          "Usage: vmhost vm list [--json] [--all-hosts]\n"
          "\n"
          "All VMs of this vmhost home: state, pid, CPUs, memory, forwards and guest\n"
          "addresses.\n"
          "\n"
          "  --json        an array of the objects 'vm status --json' prints\n"
          "  --all-hosts   the VMs of this machine (host 'local') and of every registered\n"
          "                host (asked in parallel) in one table with a HOST column; a host\n"
          "                that does not answer is listed as down, with the reason\n"
          "\n"
          "Example:\n"
          "  vmhost vm list\n" },
        { "console",
          "Usage: vmhost vm console NAME\n"
          "\n"
          "Attaches the terminal to the VM's serial console; Ctrl-] detaches and the\n"
          "VM runs on. With piped input, the answers are relayed until the console is\n"
          "quiet.\n"
          "\n"
          "Example:\n"
          "  vmhost vm console web\n" },
        { "monitor",
          "Usage: vmhost vm monitor NAME ['COMMAND']\n"
          "\n"
          "Runs one QEMU human monitor command and prints its answer, or without\n"
          "COMMAND opens an interactive monitor prompt (QEMU's Ctrl-Alt-2 monitor) with\n"
          "line editing and history (arrow keys). Ctrl-D or 'quit' leaves the prompt;\n"
          "the VM runs on ('quit' is not passed to QEMU).\n"
          "\n"
          "Examples:\n"
          "  vmhost vm monitor web 'info status'\n"
          "  vmhost vm monitor web\n" },
        { "qmp",
          "Usage: vmhost vm qmp NAME 'JSON'\n"
          "\n"
          "Sends one raw QMP command to the VM and prints QEMU's answer.\n"
          "\n"
          "Example:\n"
          "  vmhost vm qmp web '{\"execute\":\"query-status\"}'\n" },
        { "vnc",
          "Usage: vmhost vm vnc NAME [--timeout SEC] [--print]\n"
          "\n"
          "The VM's screen and keyboard for a VNC viewer. For a unix display (the default)\n"
          "it opens a session for one client on 127.0.0.1 with a one-time password, both\n"
          "printed here only; the password expires when the client leaves, on Ctrl-C, or\n"
          "when nobody came within SEC. For a TCP display it prints the address and this\n"
          "start's password. A VNC password is weak (DES, 8 characters, no encryption).\n"
          "\n"
          "Options:\n"
          "  --timeout SEC  how long the session waits for its client (default 300)\n"
          "  --print        only print the socket path or HOST:PORT, open no session\n"
          "\n"
          "Example:\n"
          "  vmhost vm vnc web       # then: vncviewer 127.0.0.1::PORT, with the printed password\n" },
        { "screenshot",
          "Usage: vmhost vm screenshot NAME FILE\n"
          "\n"
          "Saves the VM's screen as a PNG image in FILE.\n"
          "\n"
          "Example:\n"
          "  vmhost vm screenshot web screen.png\n" },
        { "cdrom",
          "Usage: vmhost vm cdrom NAME eject|insert [ISO]\n"
          "\n"
          "Changes the CD of a running VM: eject it, or insert ISO.\n"
          "\n"
          "Examples:\n"
          "  vmhost vm cdrom web insert debian.iso\n"
          "  vmhost vm cdrom web eject\n" },
        { "snapshot",
          "Usage: vmhost vm snapshot create|list|revert|delete NAME [SNAPSHOT]\n"
          "\n"
          "Snapshots of VM NAME. While it runs: the full machine state (memory and\n"
          "disk); while it is stopped: the disk's internal qcow2 snapshot.\n"
          "\n"
          "Examples:\n"
          "  vmhost vm snapshot create web before-upgrade\n"
          "  vmhost vm snapshot revert web before-upgrade\n" },
        { "commit",
          "Usage: vmhost vm commit NAME\n"
          "\n"
          "Merges the VM's overlay into its shared base and empties the overlay. Refused\n"
          "while this VM or any VM on the same base runs; those VMs are named, since\n"
          "they see the changed base from now on.\n"
          "\n"
          "Example:\n"
          "  vmhost vm commit web\n" },
        { "forward",
          "Usage: vmhost vm forward NAME add PROTO:HOSTPORT|auto:GUESTPORT\n"
          "\n"
          "Adds a user-mode forward from 127.0.0.1:HOSTPORT to the guest's port; auto\n"
          "allocates the host port. A running VM gets it at once.\n"
          "\n"
          "Example:\n"
          "  vmhost vm forward web add tcp:auto:22\n" },
        { "delete",
          "Usage: vmhost vm delete NAME\n"
          "\n"
          "Removes a stopped VM: its definition and its own disk (an overlay made by\n"
          "--base), never a shared base or a --disk it was given.\n"
          "\n"
          "Example:\n"
          "  vmhost vm delete web\n" },
        { "migrate", vm_migrate_help },
        { "set",
          "Usage: vmhost vm set NAME KEY=VALUE...\n"
          "\n"
          "Changes keys of the definition (docs/vm-definition.md), checked as at create:\n"
          "a new disk's format is probed, a cpu the accelerator cannot run is refused.\n"
          "A running VM gets the change at its next start. cdrom=none removes the CD.\n"
          "\n"
          "Examples:\n"
          "  vmhost vm set web boot=disk cdrom=none\n"
          "  vmhost vm set web memory=1G cpus=2\n" },
};

static int command_usage(const char *name) {
        for (size_t i = 0; i < ELEMENTSOF(command_helps); i++)
                if (streq(command_helps[i].name, name)) {
                        fputs(command_helps[i].text, stdout);
                        return 0;
                }
        /* A command without its own help still gets the group's. */
        usage(stdout);
        return 0;
}

static int report(int r, const struct vh_error *err) {
        log_error("%s", vh_error_message(err, r));
        return 1;
}

enum {
        OPT_CPUS = 0x100, OPT_MEMORY, OPT_DISK, OPT_BASE, OPT_DISK_SIZE, OPT_CDROM, OPT_BOOT, OPT_KERNEL,
        OPT_INITRD, OPT_APPEND, OPT_NET, OPT_FORWARD, OPT_ACCEL, OPT_CPU, OPT_LOCALTIME, OPT_WAIT, OPT_TIMEOUT,
        OPT_JSON, OPT_VNC, OPT_PRINT, OPT_DISK_FORMAT, OPT_AVOID_MAC, OPT_PUSH,
};

static int set_key(struct vm_def *def, const char *key, const char *value) {
        /* Options go through the same checks as the definition file's keys. */
        struct vh_error err = {};
        int r = vm_def_set(def, key, value, &err);
        if (r < 0)
                return log_error_errno(r, "--%s %s: %s", key, value, vh_error_message(&err, r));
        return 0;
}

/* Applies a --vnc value (see vm_def_set_vnc()); the error names 'what'. */
static int apply_vnc(struct vm_def *def, const char *value, const char *what, bool *ret_alloc) {
        struct vh_error err = {};
        int r = vm_def_set_vnc(def, value, ret_alloc, &err);
        if (r < 0)
                return log_error_errno(r, "%s%s: %s", what, value, vh_error_message(&err, r));
        return 0;
}

/* The caller's working directory, which relative paths of a definition
 * are taken from (the library reads no working directory). */
static char *working_dir(const struct vh_context *ctx) {
        if (!ctx->cwd) {
                log_error("Cannot find the current directory (it may have been removed).");
                return NULL;
        }
        char *cwd = strdup(ctx->cwd);
        if (!cwd)
                log_error("Out of memory.");
        return cwd;
}

/* What a TCP display means, said where one is configured. */
static void vnc_tcp_notice(const struct vm_def *def) {
        if (def->vnc != VM_VNC_TCP)
                return;
        if (!vm_vnc_host_is_loopback(def->vnc_host))
                log_warning("VNC display %s:%u (TCP port %u) of VM %s is reachable from the network. It is password "
                            "protected, but a VNC password is weak (DES, 8 characters) and the screen and keys travel "
                            "unencrypted. The default, vnc=unix with 'vmhost vm vnc %s', opens no network port.",
                            def->vnc_host, def->vnc_display, 5900 + def->vnc_display, def->name, def->name);
        printf("VNC: %s:%u (port %u), password protected: a new password at every start, shown by "
               "'vmhost vm vnc %s'.\n",
               def->vnc_host, def->vnc_display, 5900 + def->vnc_display, def->name);
}

/* The "vnc:" line of start and status. */
static void print_vnc_line(const struct vm_def *def) {
        if (def->vnc == VM_VNC_TCP)
                printf("vnc:         %s:%u (port %u, password: vmhost vm vnc %s)\n", def->vnc_host, def->vnc_display,
                       5900 + def->vnc_display, def->name);
        else if (def->vnc == VM_VNC_UNIX)
                printf("vnc:         unix socket (session: vmhost vm vnc %s)\n", def->name);
}

/* "M1,M2,..." of --avoid-mac into 'v'; each must be a MAC. */
static int add_avoid_macs(struct strv *v, const char *list) {
        /* What one remote command line carries (the caller sends only the
         * MACs that matter here); past it the list is not ours. */
        if (v->n + strlen(list) / 18 > HOST_REMOTE_COMMAND_MAX / 18 + 1)
                return log_error("--avoid-mac: too many MACs"), -E2BIG;
        for (const char *p = list; *p;) {
                size_t n = strcspn(p, ",");
                char mac[18];
                if (n != 17) {
                        log_error("--avoid-mac: '%.*s' is not a MAC (aa:bb:cc:dd:ee:ff)", (int) MIN(n, 40), p);
                        return -EINVAL;
                }
                memcpy(mac, p, n);
                mac[n] = '\0';
                if (!vm_mac_is_valid(mac)) {
                        log_error("--avoid-mac: '%s' is not a MAC (aa:bb:cc:dd:ee:ff)", mac);
                        return -EINVAL;
                }
                strv_add(v, mac);
                p += n;
                if (*p == ',')
                        p++;
        }
        return v->error;
}

/* The MACs the registered hosts' VMs use, asked in parallel; a host that
 * cannot be asked is named in a warning and the create goes on. */
static int gather_avoid_macs(const struct vh_context *ctx, struct strv *v) {
        char **macs = NULL, **warnings = NULL;
        struct vh_error err = {};
        int r = host_cluster_macs(ctx, NULL, false, &macs, &warnings, &err);
        if (r < 0) {
                log_warning("Cannot ask the registered hosts which MACs they use (%s): only this host's are checked.",
                            vh_error_message(&err, r));
                return r == -ENOMEM ? r : 0;
        }
        for (char **u = warnings; *u; u++)
                log_warning("%s.", *u);
        for (char **m = macs; *m; m++)
                strv_add(v, *m);
        host_names_free(macs);
        host_names_free(warnings);
        return v->error;
}

static int vm_create_cmd(const struct vh_context *ctx, int argc, char **argv) {
        static const struct option options[] = {
                { "cpus", required_argument, NULL, OPT_CPUS },
                { "memory", required_argument, NULL, OPT_MEMORY },
                { "disk", required_argument, NULL, OPT_DISK },
                { "disk-format", required_argument, NULL, OPT_DISK_FORMAT },
                { "base", required_argument, NULL, OPT_BASE },
                { "disk-size", required_argument, NULL, OPT_DISK_SIZE },
                { "cdrom", required_argument, NULL, OPT_CDROM },
                { "boot", required_argument, NULL, OPT_BOOT },
                { "kernel", required_argument, NULL, OPT_KERNEL },
                { "initrd", required_argument, NULL, OPT_INITRD },
                { "append", required_argument, NULL, OPT_APPEND },
                { "net", required_argument, NULL, OPT_NET },
                { "vnc", required_argument, NULL, OPT_VNC },
                { "forward", required_argument, NULL, OPT_FORWARD },
                { "accel", required_argument, NULL, OPT_ACCEL },
                { "cpu", required_argument, NULL, OPT_CPU },
                { "localtime", no_argument, NULL, OPT_LOCALTIME },
                /* Not in the usage: the MACs another vmhost found in use on
                 * the other hosts, when it runs this create over ssh. */
                { "avoid-mac", required_argument, NULL, OPT_AVOID_MAC },
                /* Read by 'vmhost --host H' on the calling side, which
                 * takes it out; here it can only be a mistake. */
                { "push", no_argument, NULL, OPT_PUSH },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        if (argc < 2 || argv[1][0] == '-') {
                log_error("vm create: missing VM name. Example: vmhost vm create web --base base.qcow2");
                return 2;
        }
        const char *name = argv[1];
        if (!name_is_valid(name)) {
                log_error("Invalid VM name '%s': use 1-%d letters, digits, '-' or '_', starting with a letter or digit.",
                          name, VH_NAME_MAX);
                return 2;
        }
        _cleanup_(vm_def_freep) struct vm_def *def = vm_def_new(name);
        if (!def)
                return log_error_errno(-ENOMEM, "Out of memory"), 1;
        const char *base = NULL, *disk_size = NULL, *vnc = "auto", *disk_format = NULL;
        const char *nets[VM_MAX_NICS];
        unsigned n_nets = 0;
        bool no_net = false, avoid_given = false;
        _cleanup_(strv_done) struct strv avoid = {};

        optind = 2;
        int c;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0) {
                const char *key = NULL;
                switch (c) {
                case 'h': usage(stdout); return 0;
                case OPT_CPUS: key = "cpus"; break;
                case OPT_MEMORY: key = "memory"; break;
                case OPT_DISK: key = "disk"; break;
                case OPT_DISK_FORMAT: disk_format = optarg; break;
                case OPT_BASE: base = optarg; break;
                case OPT_DISK_SIZE: disk_size = optarg; break;
                case OPT_CDROM: key = "cdrom"; break;
                case OPT_BOOT: key = "boot"; break;
                case OPT_KERNEL: key = "kernel"; break;
                case OPT_INITRD: key = "initrd"; break;
                case OPT_APPEND: key = "append"; break;
                case OPT_NET:
                        if (streq(optarg, "none"))
                                no_net = true;
                        else if (n_nets >= VM_MAX_NICS)
                                return log_error("At most %d --net options", VM_MAX_NICS), 2;
                        else
                                nets[n_nets++] = optarg;
                        break;
                case OPT_VNC: vnc = optarg; break;
                case OPT_FORWARD: key = "forward"; break;
                case OPT_ACCEL: key = "accel"; break;
                case OPT_CPU: key = "cpu"; break;
                case OPT_LOCALTIME: key = "localtime"; break;
                case OPT_PUSH:
                        log_error("vm create: --push copies the base image to another host; use it with --host NAME");
                        return 2;
                case OPT_AVOID_MAC:
                        avoid_given = true;
                        if (add_avoid_macs(&avoid, optarg) < 0)
                                return 2;
                        break;
                default: return 2;
                }
                if (key && set_key(def, key, c == OPT_LOCALTIME ? "yes" : optarg) < 0)
                        return 2;
        }
        if (optind < argc) {
                log_error("vm create: unexpected argument '%s'", argv[optind]);
                return 2;
        }
        /* Option combinations are usage errors (exit 2); vm_create()
         * checks them again for callers other than this one. */
        if (base && def->disk) {
                log_error("vm create: --disk and --base exclude each other");
                return 2;
        }
        if (disk_size && !base) {
                log_error("vm create: --disk-size needs --base");
                return 2;
        }
        if (disk_format && !def->disk) {
                log_error("vm create: --disk-format needs --disk (an overlay made with --base is always qcow2)");
                return 2;
        }
        if (no_net && n_nets > 0)
                return log_error("vm create: --net none excludes other --net options"), 2;
        if (!no_net && n_nets == 0)
                nets[n_nets++] = VM_NET_USER;
        for (unsigned i = 0; i < n_nets; i++)
                if (set_key(def, "nic", nets[i]) < 0)
                        return 2;
        bool vnc_alloc;
        if (apply_vnc(def, vnc, "--vnc ", &vnc_alloc) < 0)
                return 2;

        uint64_t size = 0;
        if (disk_size && parse_size(disk_size, &size) < 0) {
                log_error("--disk-size %s: not a size (e.g. 10G)", disk_size);
                return 2;
        }
        _cleanup_free_ char *cwd = working_dir(ctx);
        if (!cwd)
                return 1;
        /* MACs are unique across the cluster: a create here asks the
         * registered hosts which they use (a create forwarded by another
         * vmhost brings that list along instead). */
        if (!avoid_given && gather_avoid_macs(ctx, &avoid) < 0)
                return log_error_errno(-ENOMEM, "Out of memory"), 1;
        struct vm_create_options opts = {
                .def = TAKE_PTR(def),
                .base = base,
                .disk_size = size,
                .disk_format = disk_format,
                .alloc_vnc_display = vnc_alloc,
                .base_dir = cwd,
                .avoid_macs = avoid.v,
        };
        struct vh_error err = {};
        _cleanup_(vm_create_result_done) struct vm_create_result res = {};
        int r = vm_create(ctx, &opts, &res, &err);
        if (r < 0)
                return report(r, &err);
        def = TAKE_PTR(res.def);
        printf("Created VM %s", name);
        if (base)
                printf(" with overlay %s on %s", def->disk, def->base);
        printf(".\n");
        for (unsigned i = 0; i < def->n_nics; i++)
                printf("NIC %u: network %s, MAC %s\n", i, def->nics[i].network, def->nics[i].mac);
        if (def->vnc == VM_VNC_UNIX)
                printf("VNC: a unix socket only you reach; 'vmhost vm vnc %s' opens a session.\n", name);
        vnc_tcp_notice(def);
        printf("Start it with: vmhost vm start %s --wait\n", name);
        return 0;
}

static void print_forwards(const struct vm_def *def, const struct vm_status *st) {
        for (unsigned i = 0; i < def->n_forwards; i++)
                printf("forward:     %s 127.0.0.1:%u -> guest port %u\n",
                       def->forwards[i].proto == VM_FWD_UDP ? "udp" : "tcp", st->host_ports[i],
                       def->forwards[i].guest_port);
}

static int vm_start_cmd(const struct vh_context *ctx, int argc, char **argv) {
        static const struct option options[] = {
                { "wait", no_argument, NULL, OPT_WAIT },
                { "timeout", required_argument, NULL, OPT_TIMEOUT },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        bool wait = false;
        long timeout = 300;
        int c;
        optind = 2;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h': usage(stdout); return 0;
                case OPT_WAIT: wait = true; break;
                case OPT_TIMEOUT:
                        if (parse_int_range(optarg, 1, 86400, &timeout) < 0)
                                return log_error("--timeout %s: expected seconds (1..86400)", optarg), 2;
                        break;
                default: return 2;
                }
        bool restart = streq(argv[0], "restart");
        if (argc < 2 || argv[1][0] == '-')
                return log_error("vm %s: missing VM name", argv[0]), 2;
        const char *name = argv[1];

        struct vh_error err = {};
        struct vm_status st;
        int r = restart ? vm_restart(ctx, name, 30 * 1000, NULL, &st, &err) : vm_start(ctx, name, NULL, &st, &err);
        if (r == -EALREADY) {
                /* What the user wanted is true already: not an error. */
                printf("%s.\n", vh_error_message(&err, r));
        } else if (r < 0)
                return report(r, &err);
        _cleanup_(vm_def_freep) struct vm_def *def = NULL;
        int r2 = vm_load(ctx, name, &def, &err);
        if (r2 < 0)
                return report(r2, &err);

        if (r >= 0) {
                printf("VM %s started (pid %d, accelerator %s).\n", name, st.pid, st.accel);
                if (st.warning[0])
                        log_warning("%s.", st.warning);
        }
        print_forwards(def, &st);
        print_vnc_line(def);
        if (wait) {
                _cleanup_free_ char *line = NULL;
                r = vm_wait_ready(ctx, name, (unsigned) timeout * 1000, &line, &err);
                if (r < 0)
                        return report(r, &err);
                printf("ready:       %s\n", line);
        }
        printf("console:     vmhost vm console %s   (detach with Ctrl-])\n", name);
        printf("stop:        vmhost vm stop %s\n", name);
        return 0;
}

static int vm_stop_cmd(const struct vh_context *ctx, int argc, char **argv) {
        static const struct option options[] = {
                { "timeout", required_argument, NULL, OPT_TIMEOUT },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        bool kill_now = streq(argv[0], "kill");
        long timeout = 30;
        int c;
        optind = 2;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h': usage(stdout); return 0;
                case OPT_TIMEOUT:
                        if (parse_int_range(optarg, 0, 3600, &timeout) < 0)
                                return log_error("--timeout %s: expected seconds (0..3600)", optarg), 2;
                        break;
                default: return 2;
                }
        if (argc < 2 || argv[1][0] == '-')
                return log_error("vm %s: missing VM name", argv[0]), 2;
        struct vh_error err = {};
        enum vm_stop_how how;
        int r = vm_stop_graceful(ctx, argv[1], kill_now ? 0 : (unsigned) timeout * 1000, &how, &err);
        if (r < 0)
                return report(r, &err);
        static const char *const what[] = {
                [VM_STOP_GUEST] = "the guest powered off",
                [VM_STOP_QUIT] = "QEMU quit",
                [VM_STOP_KILLED] = "QEMU was killed",
                [VM_STOP_NOT_RUNNING] = "it was not running",
        };
        printf("VM %s stopped (%s).\n", argv[1], what[how]);
        return 0;
}

static int vm_restart_cmd(const struct vh_context *ctx, int argc, char **argv) {
        if (cli_wants_help(argc, argv))
                return usage(stdout), 0;
        /* vm_start_cmd() sees "restart" in argv[0] and restarts. */
        return vm_start_cmd(ctx, argc, argv);
}

/* For commands of the form 'vm VERB NAME ARG': checks the count. */
static int want_args(int argc, char **argv, int n, const char *example) {
        if (argc != n + 1) {
                log_error("vm %s: expected %d argument%s. Example: %s", argv[0], n, n == 1 ? "" : "s", example);
                return -EINVAL;
        }
        return 0;
}

/* The human monitor ends lines with CR LF; a terminal or a script wants LF. */
static void print_monitor_answer(const char *out) {
        for (const char *c = out ? out : ""; *c; c++)
                if (!(c[0] == '\r' && c[1] == '\n'))
                        fputc(*c, stdout);
        fflush(stdout);
}

/* The next command line: from libedit's editor on a terminal (arrows,
 * history), else one line of stdin, so that a script can pipe commands in.
 * NULL at the end of input (Ctrl-D). */
static char *monitor_read_line(bool tty) {
        if (tty)
                return readline("(qemu) ");
        char *line = NULL;
        size_t n = 0;
        if (getline(&line, &n, stdin) < 0) {
                free(line);
                return NULL;
        }
        line[strcspn(line, "\n")] = '\0';
        return line;
}

/* 'vm monitor NAME' without a command: QEMU's monitor as a prompt. Each
 * line connects to the VM's QMP socket, runs as a human monitor command and
 * disconnects: QMP serves one client at a time, and a prompt left open must
 * not lock out 'vm stop' or the other commands. */
/* Whether a monitor line is QEMU's 'quit' (or 'q'), whatever the spaces
 * around it: QEMU would end the VM without vmhost knowing. */
static bool monitor_is_quit(const char *line) {
        line += strspn(line, " \t");
        size_t n = strcspn(line, " \t");
        return ((n == 4 && strncmp(line, "quit", 4) == 0) || (n == 1 && line[0] == 'q')) &&
               line[n + strspn(line + n, " \t")] == '\0';
}

static int monitor_interactive(const struct vh_context *ctx, const char *name) {
        bool tty = isatty(STDIN_FILENO);
        struct vh_error err = {};
        struct vm_status st;
        int r = vm_get_status(ctx, name, &st, &err);
        if (r < 0)
                return report(r, &err);
        if (st.state != VM_STATE_RUNNING)
                return log_error("VM %s is not running; start it with 'vmhost vm start %s'.", name, name), 1;
        if (tty) {
                printf("Monitor of VM %s: QEMU's human monitor commands, e.g. 'info status'.\n"
                       "Leave with Ctrl-D (or 'quit'); the VM runs on.\n", name);
                using_history();
                stifle_history(500);
                /* Tab would complete file names of this machine, which mean
                 * nothing to QEMU. */
                rl_bind_key('\t', rl_insert);
        }
        for (;;) {
                _cleanup_free_ char *line = monitor_read_line(tty);
                if (!line)
                        break;
                const char *cmd = line + strspn(line, " \t");
                if (!*cmd)
                        continue;
                if (tty)
                        add_history(cmd);
                /* QEMU's own 'quit' would end the VM behind vmhost's back;
                 * here it leaves the prompt, as Ctrl-D does. */
                if (monitor_is_quit(cmd))
                        break;
                _cleanup_free_ char *out = NULL;
                err = (struct vh_error) {};
                r = vm_monitor(ctx, name, cmd, &out, &err);
                if (r == -ESRCH)
                        return report(r, &err);
                if (r < 0) {
                        log_error("%s", vh_error_message(&err, r));
                        continue;
                }
                print_monitor_answer(out);
        }
        if (tty) {
                clear_history();
                printf("\nLeft the monitor of %s; the VM runs on (stop it with 'vmhost vm stop %s').\n", name, name);
        }
        return 0;
}

static int vm_monitor_cmd(const struct vh_context *ctx, int argc, char **argv) {
        if (cli_wants_help(argc, argv))
                return usage(stdout), 0;
        if (argc == 2 && argv[1][0] != '-')
                return monitor_interactive(ctx, argv[1]);
        if (want_args(argc, argv, 2, "vmhost vm monitor web 'info status'") < 0)
                return 2;
        if (monitor_is_quit(argv[2]))
                return log_error("'quit' would end VM %s behind vmhost's back: use 'vmhost vm stop %s' (or 'vm kill').",
                                 argv[1], argv[1]),
                       2;
        struct vh_error err = {};
        _cleanup_free_ char *out = NULL;
        int r = vm_monitor(ctx, argv[1], argv[2], &out, &err);
        if (r < 0)
                return report(r, &err);
        print_monitor_answer(out);
        return 0;
}

static int vm_qmp_cmd(const struct vh_context *ctx, int argc, char **argv) {
        if (cli_wants_help(argc, argv))
                return usage(stdout), 0;
        if (want_args(argc, argv, 2, "vmhost vm qmp web '{\"execute\":\"query-status\"}'") < 0)
                return 2;
        struct vh_error err = {};
        _cleanup_free_ char *out = NULL;
        int r = vm_qmp_raw(ctx, argv[1], argv[2], &out, &err);
        if (r < 0)
                return report(r, &err);
        fputs(out, stdout);
        if (!endswith(out, "\n"))
                fputc('\n', stdout);
        return 0;
}

/* Ctrl-C, a hangup or SIGTERM end a VNC session through this fd, so the
 * password is expired on the way out. */
static int session_signals(sigset_t *ret_old) {
        sigset_t mask;
        sigemptyset(&mask);
        sigaddset(&mask, SIGINT);
        sigaddset(&mask, SIGTERM);
        sigaddset(&mask, SIGHUP);
        if (sigprocmask(SIG_BLOCK, &mask, ret_old) < 0)
                return negative_errno();
        int fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
        return fd < 0 ? negative_errno() : fd;
}

static int vm_vnc_cmd(const struct vh_context *ctx, int argc, char **argv) {
        static const struct option options[] = {
                { "timeout", required_argument, NULL, OPT_TIMEOUT },
                { "print", no_argument, NULL, OPT_PRINT },
                { "help", no_argument, NULL, 'h' },
                {},
        };
        long timeout = 300;
        bool print_only = false;
        int c;
        optind = 2;
        while ((c = getopt_long(argc, argv, "h", options, NULL)) >= 0)
                switch (c) {
                case 'h': usage(stdout); return 0;
                case OPT_TIMEOUT:
                        if (parse_int_range(optarg, 1, 86400, &timeout) < 0)
                                return log_error("--timeout %s: expected seconds (1..86400)", optarg), 2;
                        break;
                case OPT_PRINT: print_only = true; break;
                default: return 2;
                }
        if (argc < 2 || argv[1][0] == '-' || optind < argc)
                return log_error("vm vnc: expected one VM name. Example: vmhost vm vnc web"), 2;
        const char *name = argv[1];
        struct vh_error err = {};
        _cleanup_(vm_def_freep) struct vm_def *def = NULL;
        int r = vm_load(ctx, name, &def, &err);
        if (r < 0)
                return report(r, &err);
        if (!def->vnc)
                return log_error("VM %s has no VNC display (vnc = none). Enable it with 'vmhost vm set %s vnc=unix'.",
                                 name, name), 1;
        if (print_only) {
                struct vm_paths p;
                if (def->vnc == VM_VNC_TCP) {
                        printf("%s:%u\n", def->vnc_host, 5900 + def->vnc_display);
                        return 0;
                }
                r = vm_paths_get(ctx, name, &p, &err);
                if (r < 0)
                        return report(r, &err);
                printf("%s\n", p.vnc_socket);
                vm_paths_done(&p);
                return 0;
        }
        if (def->vnc == VM_VNC_TCP) {
                _cleanup_free_ char *pw = NULL;
                r = vm_vnc_get_password(ctx, name, &pw, &err);
                if (r < 0)
                        return report(r, &err);
                printf("endpoint: %s:%u\npassword: %s\n", def->vnc_host, 5900 + def->vnc_display, pw);
                return 0;
        }

        sigset_t old;
        _cleanup_close_ int sigfd = session_signals(&old);
        if (sigfd < 0)
                return log_error_errno(sigfd, "Cannot watch for Ctrl-C: %m"), 1;
        _cleanup_(vm_vnc_session_freep) struct vm_vnc_session *s = NULL;
        r = vm_vnc_session_open(ctx, name, &s, &err);
        if (r < 0)
                return report(r, &err);
        /* The password goes to the caller's stdout only, never to a log. */
        printf("endpoint: 127.0.0.1:%u\npassword: %s\n", vm_vnc_session_port(s), vm_vnc_session_password(s));
        fflush(stdout);
        fprintf(stderr,
                "One VNC client may connect within %ld s, e.g. 'vncviewer 127.0.0.1::%u'. The password expires when "
                "it leaves; Ctrl-C ends the session.\n",
                timeout, vm_vnc_session_port(s));
        r = vm_vnc_session_run(s, (int) timeout * 1000, sigfd, &err);
        struct vh_error end_err = {};
        int r2 = vm_vnc_session_end(s, &end_err);
        (void) sigprocmask(SIG_SETMASK, &old, NULL);
        if (r < 0 && r != -ECANCELED)
                return report(r, &err);
        if (r2 < 0)
                return report(r2, &end_err);
        fprintf(stderr, "%s; the password is expired.\n", r == -ECANCELED ? "Stopped" : "The VNC client left");
        return 0;
}

static int vm_screenshot_cmd(const struct vh_context *ctx, int argc, char **argv) {
        if (cli_wants_help(argc, argv))
                return usage(stdout), 0;
        if (want_args(argc, argv, 2, "vmhost vm screenshot web screen.png") < 0)
                return 2;
        struct vh_error err = {};
        int r = vm_screenshot(ctx, argv[1], argv[2], &err);
        if (r < 0)
                return report(r, &err);
        printf("Wrote %s.\n", argv[2]);
        return 0;
}

static int vm_cdrom_cmd(const struct vh_context *ctx, int argc, char **argv) {
        if (cli_wants_help(argc, argv))
                return usage(stdout), 0;
        struct vh_error err = {};
        int r;
        if (argc == 3 && streq(argv[2], "eject"))
                r = vm_cdrom_change(ctx, argv[1], NULL, &err);
        else if (argc == 4 && streq(argv[2], "insert"))
                r = vm_cdrom_change(ctx, argv[1], argv[3], &err);
        else
                return log_error("vm cdrom: expected 'vmhost vm cdrom NAME eject' or 'vmhost vm cdrom NAME insert ISO'"), 2;
        if (r < 0)
                return report(r, &err);
        printf(argc == 3 ? "Ejected the CD of %s.\n" : "Inserted the CD into %s.\n", argv[1]);
        return 0;
}

static int vm_snapshot_cmd(const struct vh_context *ctx, int argc, char **argv) {
        if (cli_wants_help(argc, argv))
                return usage(stdout), 0;
        /* vm snapshot create|list|revert|delete NAME [SNAP] */
        if (argc < 3)
                return log_error("vm snapshot: expected create|list|revert|delete NAME [SNAPSHOT]"), 2;
        const char *op = argv[1], *name = argv[2];
        struct vh_error err = {};
        int r;
        if (streq(op, "list")) {
                if (argc != 3)
                        return log_error("vm snapshot list: expected only the VM name"), 2;
                _cleanup_free_ char *text = NULL;
                r = vm_snapshot_list(ctx, name, &text, &err);
                if (r < 0)
                        return report(r, &err);
                fputs(text, stdout);
                return 0;
        }
        enum vm_snapshot_op o;
        if (streq(op, "create"))
                o = VM_SNAPSHOT_CREATE;
        else if (streq(op, "revert"))
                o = VM_SNAPSHOT_REVERT;
        else if (streq(op, "delete"))
                o = VM_SNAPSHOT_DELETE;
        else
                return log_error("vm snapshot: unknown operation '%s' (create, list, revert, delete)", op), 2;
        if (argc != 4)
                return log_error("vm snapshot %s: expected NAME SNAPSHOT", op), 2;
        bool running;
        r = vm_snapshot(ctx, name, o, argv[3], &running, &err);
        if (r < 0)
                return report(r, &err);
        printf("Snapshot %s of VM %s: %s (%s).\n", argv[3], name,
               o == VM_SNAPSHOT_CREATE ? "created" : o == VM_SNAPSHOT_REVERT ? "reverted to" : "deleted",
               running ? "full machine state, VM running" : "disk only, VM stopped");
        return 0;
}

/* RUN/vms/NAME/vnc.sock, as vm_paths_get() names it, into a static buffer:
 * 'vm list --json' asks for it per VM, where a whole vm_paths_get() cost
 * 4% more instructions with 500 VMs (callgrind: 30.8 M against 29.6 M). */
static const char *vnc_socket_path(const struct vh_context *ctx, const char *name) {
        static char *run;
        static char buf[sizeof(((struct sockaddr_un *) 0)->sun_path)];
        if (!run && !(run = vh_runtime_dir(ctx)))
                return NULL;
        int n = snprintf(buf, sizeof(buf), "%s/vms/%s/vnc.sock", run, name);
        return n > 0 && (size_t) n < sizeof(buf) ? buf : NULL;
}

/* The guest's addresses (none while it does not run); a failure to find
 * them is only logged, as status has more to say. Returns the count. */
static int get_addresses(const struct vh_context *ctx, const struct vm_def *def, const struct vm_status *st,
                         struct vm_address **ret) {
        struct vh_error err = {};
        int n = vm_addresses(ctx, def, st, (int64_t) time(NULL), ret, &err);
        if (n < 0) {
                log_warning("VM %s: cannot tell its addresses: %s", def->name, vh_error_message(&err, n));
                *ret = NULL;
                return 0;
        }
        return n;
}

/* "45s", "12m05s", "3h07m", "2d04h": how long since 'started' (epoch
 * seconds); "-" when unknown. */
static const char *format_uptime(int64_t started, char *buf, size_t len) {
        int64_t now = (int64_t) time(NULL);
        if (started <= 0) {
                snprintf(buf, len, "-");
                return buf;
        }
        /* A clock stepped back since the start: no negative uptime. */
        int64_t s = now > started ? now - started : 0;
        if (s < 60)
                snprintf(buf, len, "%" PRId64 "s", s);
        else if (s < 3600)
                snprintf(buf, len, "%" PRId64 "m%02" PRId64 "s", s / 60, s % 60);
        else if (s < 86400)
                snprintf(buf, len, "%" PRId64 "h%02" PRId64 "m", s / 3600, s % 3600 / 60);
        else
                snprintf(buf, len, "%" PRId64 "d%02" PRId64 "h", s / 86400, s % 86400 / 3600);
        return buf;
}

/* The status object of vm/vm-json.h, with the guest's addresses. */
static void status_json(const struct vh_context *ctx, struct json_writer *w, const struct vm_def *def,
                        const struct vm_status *st) {
        _cleanup_free_ struct vm_address *addrs = NULL;
        int n_addrs = get_addresses(ctx, def, st, &addrs);
        vm_status_to_json(w, def, st, addrs, (size_t) n_addrs, vnc_socket_path(ctx, def->name));
}

static int print_json(struct json_writer *w) {
        int r = 0;
        _cleanup_free_ char *s = json_writer_finish(w, &r);
        if (!s)
                return log_error_errno(r, "Cannot format JSON: %m"), 1;
        fputs(s, stdout);
        return 0;
}

static int vm_status_cmd(const struct vh_context *ctx, int argc, char **argv) {
        bool json = false;
        const char *name = NULL;
        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--json"))
                        json = true;
                else if (streq(argv[i], "-h") || streq(argv[i], "--help"))
                        return usage(stdout), 0;
                else if (!name && argv[i][0] != '-')
                        name = argv[i];
                else
                        return log_error("vm status: unexpected argument '%s'", argv[i]), 2;
        }
        if (!name)
                return log_error("vm status: missing VM name"), 2;
        struct vh_error err = {};
        _cleanup_(vm_def_freep) struct vm_def *def = NULL;
        struct vm_status st;
        int r = vm_describe(ctx, name, &def, &st, &err);
        if (r < 0)
                return report(r, &err);
        if (json) {
                struct json_writer w;
                json_writer_init(&w, true);
                status_json(ctx, &w, def, &st);
                return print_json(&w);
        }
        printf("name:        %s\n", name);
        printf("state:       %s\n", vm_state_to_string(st.state));
        if (st.state == VM_STATE_RUNNING) {
                printf("pid:         %d\n", st.pid);
                printf("accelerator: %s\n", st.accel);
                if (st.started_at > 0) {
                        char up[32], when[32];
                        time_t t = (time_t) st.started_at;
                        struct tm tm;
                        if (localtime_r(&t, &tm) && strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S %z", &tm))
                                printf("uptime:      %s (since %s)\n", format_uptime(st.started_at, up, sizeof(up)),
                                       when);
                }
                print_forwards(def, &st);
                _cleanup_free_ struct vm_address *addrs = NULL;
                int n = get_addresses(ctx, def, &st, &addrs);
                for (int i = 0; i < n; i++)
                        printf("address:     %s on nic %u (%s, %s)\n", addrs[i].ip, addrs[i].nic, addrs[i].network,
                               vm_addr_source_to_string(addrs[i].source));
        }
        if (st.busy[0]) {
                if (st.busy_pid > 0)
                        printf("busy:        being %s by pid %d\n", st.busy, st.busy_pid);
                else
                        printf("busy:        being %s\n", st.busy);
        }
        if (st.exit_reason[0])
                printf("last exit:   %s\n", st.exit_reason);
        char b[32];
        printf("cpus:        %u\nmemory:      %s\n", def->cpus, format_size(def->memory, b, sizeof(b)));
        for (unsigned i = 0; i < def->n_nics; i++) {
                _cleanup_free_ char *nic = vm_nic_format(&def->nics[i]);
                printf("nic %u:       %s\n", i, nic ? nic : "?");
        }
        print_vnc_line(def);
        printf("boot:        %s\n", vm_boot_to_string(def->boot));
        if (def->disk)
                printf("disk:        %s\n", def->disk);
        if (def->cdrom)
                printf("cdrom:       %s\n", def->cdrom);
        if (def->base)
                printf("base:        %s\n", def->base);
        return 0;
}

/* One row of 'vm list --all-hosts' from a VM status object (vm-json.h),
 * as a host replied it. */
static void print_host_vm_row(const char *host, const struct json_value *vm) {
        const char *name = "?", *state = "?";
        (void) json_get_string(json_object_get(vm, "name"), &name);
        (void) json_get_string(json_object_get(vm, "state"), &state);
        uint64_t cpus = 0, memory = 0;
        int64_t pid = 0;
        (void) json_get_uint(json_object_get(vm, "cpus"), &cpus);
        (void) json_get_uint(json_object_get(vm, "memory"), &memory);
        char pids[24] = "-", mem[32], ips[VM_MAX_NICS * NET_IPV4_STRLEN] = "";
        if (json_get_int(json_object_get(vm, "pid"), &pid) >= 0)
                snprintf(pids, sizeof(pids), "%" PRId64, pid);
        const struct json_value *addrs = json_object_get(vm, "addresses");
        for (size_t a = 0, u = 0; a < json_array_len(addrs) && a < VM_MAX_NICS && u < sizeof(ips); a++) {
                const char *ip;
                if (json_get_string(json_object_get(json_array_at(addrs, a), "ip"), &ip) >= 0)
                        u += (size_t) snprintf(ips + u, sizeof(ips) - u, "%s%.15s", u ? "," : "", ip);
        }
        /* The far side's strings, not escapes for this terminal. */
        _cleanup_free_ char *pname = str_printable_dup(name, 0), *pstate = str_printable_dup(state, 0);
        str_make_printable(ips, 0);
        printf("%-12s %-20s %-9s %-7s %-5" PRIu64 " %-8s %s\n", host, pname ? pname : "?", pstate ? pstate : "?", pids,
               cpus, format_size(memory, mem, sizeof(mem)), ips[0] ? ips : "-");
}

/* 'vm list --all-hosts': this machine's VMs, then every registered
 * host's (asked in parallel, each one reply of 'host self --vms'). A host
 * that does not answer is listed as down with the reason; the listing
 * still succeeds. */
static int vm_list_all_hosts(const struct vh_context *ctx, bool json) {
        struct vh_error err = {};
        _cleanup_(host_cluster_done) struct host_cluster c = {};
        int r = host_cluster_list(ctx, HOST_CLUSTER_LOCAL | HOST_CLUSTER_REMOTE, &c, &err);
        if (r < 0)
                return report(r, &err);
        for (char **k = c.skipped; *k; k++)
                log_warning("Skipping host %s.", *k);
        int rc = 0;
        if (!c.hosts[0].status.reachable) {
                log_error("Cannot list this host's VMs: %s", c.hosts[0].status.why);
                rc = 1;
        }

        struct json_writer w;
        json_writer_init(&w, true);
        if (json)
                json_array_begin(&w);
        else
                printf("%-12s %-20s %-9s %-7s %-5s %-8s %s\n", "HOST", "NAME", "STATE", "PID", "CPUS", "MEMORY",
                       "ADDRESSES");
        for (size_t i = 0; i < c.n; i++) {
                const struct host_cluster_entry *e = &c.hosts[i];
                const struct host_status *h = &e->status;
                for (char **m = h->warnings; m && *m; m++) {
                        log_warning("Host %s: %s", e->name, *m);
                        rc = e->local ? 1 : rc;
                }
                if (json) {
                        host_cluster_entry_to_json(&w, e, false);
                        continue;
                }
                if (!h->reachable) {
                        printf("%-12s %-20s %-9s %s\n", e->name, "-", "down", h->why);
                        continue;
                }
                for (size_t k = 0; k < json_array_len(h->vm_list); k++)
                        print_host_vm_row(e->name, json_array_at(h->vm_list, k));
        }
        if (json) {
                json_array_end(&w);
                if (print_json(&w))
                        rc = 1;
        } else
                json_writer_free(&w);
        return rc;
}

static int vm_list_cmd(const struct vh_context *ctx, int argc, char **argv) {
        bool json = false, all_hosts = false;
        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "--json"))
                        json = true;
                else if (streq(argv[i], "--all-hosts"))
                        all_hosts = true;
                else if (streq(argv[i], "-h") || streq(argv[i], "--help"))
                        return usage(stdout), 0;
                else
                        return log_error("vm list: unexpected argument '%s'", argv[i]), 2;
        }
        if (all_hosts)
                return vm_list_all_hosts(ctx, json);
        struct vh_error lerr = {};
        _cleanup_(vm_names_freep) char **names = NULL;
        int n = vm_list_names(ctx, &names, &lerr);
        if (n < 0)
                return report(n, &lerr);

        struct json_writer w;
        json_writer_init(&w, true);
        if (json)
                json_array_begin(&w);
        else
                printf("%-20s %-9s %-7s %-7s %-5s %-8s %-24s %s\n", "NAME", "STATE", "PID", "UPTIME", "CPUS", "MEMORY",
                       "FORWARDS", "ADDRESSES");
        int rc = 0;
        for (int i = 0; i < n; i++) {
                struct vh_error err = {};
                _cleanup_(vm_def_freep) struct vm_def *def = NULL;
                struct vm_status st;
                int r = vm_describe(ctx, names[i], &def, &st, &err);
                if (r < 0) {
                        /* One broken definition must not hide the others. */
                        log_warning("%s", vh_error_message(&err, r));
                        rc = 1;
                        continue;
                }
                if (json)
                        status_json(ctx, &w, def, &st);
                else {
                        char mem[32], fwd[256] = "", pid[16] = "-";
                        size_t used = 0;
                        for (unsigned f = 0; f < def->n_forwards && used < sizeof(fwd); f++) {
                                unsigned host = st.state == VM_STATE_RUNNING ? st.host_ports[f] : def->forwards[f].host_port;
                                char hp[8];
                                snprintf(hp, sizeof(hp), "%u", host);
                                used += (size_t) snprintf(fwd + used, sizeof(fwd) - used, "%s%s->%u", f ? "," : "",
                                                          host ? hp : "auto", def->forwards[f].guest_port);
                        }
                        if (st.state == VM_STATE_RUNNING)
                                snprintf(pid, sizeof(pid), "%d", st.pid);
                        char ips[VM_MAX_NICS * NET_IPV4_STRLEN] = "";
                        _cleanup_free_ struct vm_address *addrs = NULL;
                        int n_addrs = get_addresses(ctx, def, &st, &addrs);
                        for (int a = 0, u = 0; a < n_addrs; a++)
                                u += snprintf(ips + u, sizeof(ips) - (size_t) u, "%s%s", a ? "," : "", addrs[a].ip);
                        char up[32];
                        printf("%-20s %-9s %-7s %-7s %-5u %-8s %-24s %s\n", def->name, vm_state_to_string(st.state), pid,
                               format_uptime(st.state == VM_STATE_RUNNING ? st.started_at : 0, up, sizeof(up)),
                               def->cpus, format_size(def->memory, mem, sizeof(mem)), fwd[0] ? fwd : "-",
                               ips[0] ? ips : "-");
                        /* An action under way, which the listing did not wait for. */
                        if (st.busy[0] && st.busy_pid > 0)
                                printf("    busy: being %s by pid %d\n", st.busy, st.busy_pid);
                        else if (st.busy[0])
                                printf("    busy: being %s\n", st.busy);
                        /* As 'vm status' says it: why the VM is no longer
                         * running, on a line of its own under its row. */
                        if (st.exit_reason[0])
                                printf("    last exit: %s\n", st.exit_reason);
                }
        }
        if (json) {
                json_array_end(&w);
                if (print_json(&w))
                        return 1;
        } else
                json_writer_free(&w);
        return rc;
}

static int vm_console_cmd(const struct vh_context *ctx, int argc, char **argv) {
        if (cli_wants_help(argc, argv))
                return usage(stdout), 0;
        if (argc != 2)
                return log_error("vm console: expected exactly one VM name"), 2;
        if (isatty(STDIN_FILENO))
                fprintf(stderr, "Connected to the console of %s. Detach with Ctrl-].\r\n", argv[1]);
        struct vh_error err = {};
        int r = vm_console(ctx, argv[1], STDIN_FILENO, STDOUT_FILENO, &err);
        if (r < 0)
                return report(r, &err);
        if (isatty(STDIN_FILENO))
                fprintf(stderr, "\r\nDetached from %s.\n", argv[1]);
        return 0;
}

static int vm_delete_cmd(const struct vh_context *ctx, int argc, char **argv) {
        if (cli_wants_help(argc, argv))
                return usage(stdout), 0;
        if (argc != 2)
                return log_error("vm delete: expected exactly one VM name"), 2;
        struct vh_error err = {};
        int r = vm_delete(ctx, argv[1], &err);
        if (r < 0)
                return report(r, &err);
        printf("Deleted VM %s.\n", argv[1]);
        return 0;
}

static int vm_set_cmd(const struct vh_context *ctx, int argc, char **argv) {
        if (cli_wants_help(argc, argv))
                return usage(stdout), 0;
        if (argc < 3)
                return log_error("vm set: expected a VM name and KEY=VALUE, e.g. vmhost vm set web boot=disk"), 2;
        _cleanup_free_ char *cwd = working_dir(ctx);
        if (!cwd)
                return 1;
        struct vm_set_options opts = {
                .assignments = argv + 2,
                .n_assignments = (size_t) (argc - 2),
                .base_dir = cwd,
        };
        struct vh_error err = {};
        _cleanup_(vm_set_result_done) struct vm_set_result res = {};
        int r = vm_set(ctx, argv[1], &opts, &res, &err);
        if (r < 0) {
                report(r, &err);
                /* A KEY=VALUE the definition refuses is a usage error. */
                return res.usage_error ? 2 : 1;
        }
        if (res.vnc_changed)
                vnc_tcp_notice(res.def);
        if (res.running)
                printf("Saved; VM %s is running, so the change applies at its next start.\n", argv[1]);
        else
                printf("Saved.\n");
        return 0;
}

static int vm_forward_cmd(const struct vh_context *ctx, int argc, char **argv) {
        if (cli_wants_help(argc, argv))
                return usage(stdout), 0;
        if (argc != 4 || !streq(argv[2], "add"))
                return log_error("vm forward: expected 'vmhost vm forward NAME add PROTO:HOSTPORT|auto:GUESTPORT'"), 2;
        struct vh_error err = {};
        uint16_t port = 0;
        int r = vm_forward_add(ctx, argv[1], argv[3], &port, &err);
        if (r < 0)
                return report(r, &err);
        if (port)
                printf("forward:     127.0.0.1:%u -> guest port %s\n", port, strrchr(argv[3], ':') + 1);
        else
                printf("Added; the host port is allocated when VM %s starts.\n", argv[1]);
        return 0;
}

static int commit_progress(uint64_t done, uint64_t total, void *userdata) {
        if (isatty(STDERR_FILENO) && total > 0)
                fprintf(stderr, "\r    (%.2f/100%%)", 100.0 * (double) done / (double) total);
        return 0;
}

static int vm_commit_cmd(const struct vh_context *ctx, int argc, char **argv) {
        if (cli_wants_help(argc, argv))
                return usage(stdout), 0;
        if (want_args(argc, argv, 1, "vmhost vm commit web") < 0)
                return 2;
        struct vh_error err = {};
        char **others = NULL;
        int r = vm_image_commit(ctx, argv[1], &others, commit_progress, NULL, &err);
        if (isatty(STDERR_FILENO))
                fputc('\n', stderr);
        if (r < 0)
                return report(r, &err);
        printf("Committed the overlay of VM %s into its base; the overlay is empty again.\n", argv[1]);
        for (char **o = others; o && *o; o++)
                printf("Note: VM %s uses the same base and now sees the committed data.\n", *o);
        vm_names_free(others);
        return 0;
}

int cmd_vm(const struct vh_context *ctx, int argc, char **argv) {
        static const struct {
                const char *name;
                int (*run)(const struct vh_context *ctx, int argc, char **argv);
        } commands[] = {
                { "create", vm_create_cmd },   { "start", vm_start_cmd },     { "stop", vm_stop_cmd },
                { "status", vm_status_cmd },   { "list", vm_list_cmd },       { "console", vm_console_cmd },
                { "delete", vm_delete_cmd },   { "set", vm_set_cmd },         { "kill", vm_stop_cmd },
                { "restart", vm_restart_cmd }, { "monitor", vm_monitor_cmd }, { "qmp", vm_qmp_cmd },
                { "vnc", vm_vnc_cmd },         { "screenshot", vm_screenshot_cmd },
                { "cdrom", vm_cdrom_cmd },     { "snapshot", vm_snapshot_cmd }, { "commit", vm_commit_cmd },
                { "forward", vm_forward_cmd },
                { "migrate", vm_migrate_cmd }, { "migrate-check", vm_migrate_check_cmd },
                { "migrate-incoming", vm_migrate_incoming_cmd },
                /* Internal, of 'vmhost web' on another host (cmd-vm-relay.c). */
                { "console-relay", vm_console_relay_cmd }, { "web-query", vm_web_query_cmd },
        };
        if (argc < 2 || streq(argv[1], "-h") || streq(argv[1], "--help")) {
                usage(argc < 2 ? stderr : stdout);
                return argc < 2 ? 2 : 0;
        }
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (streq(argv[1], commands[i].name)) {
                        /* 'vmhost vm COMMAND ... --help': that command's own usage. */
                        if (cli_wants_help(argc - 1, argv + 1))
                                return command_usage(commands[i].name);
                        return commands[i].run(ctx, argc - 1, argv + 1);
                }
        log_error("Unknown command 'vm %s'. See 'vmhost vm --help'.", argv[1]);
        return 2;
}
