/* cli/cmd-doctor.c: 'vmhost doctor': shows what this host can do for VMs
 * (QEMU, KVM, nested virtualization, networking, tools) and why, as an
 * aligned table or as JSON. The exit status says whether VMs can run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "cli/cli.h"
#include "vmhost/doctor.h"

static void doctor_usage(FILE *f) {
        fprintf(f,
                "Usage: vmhost doctor [--json]\n"
                "\n"
                "Shows what this host can do for virtual machines, and why: QEMU and\n"
                "qemu-img, KVM (probed by running a tiny guest for at most %u ms),\n"
                "nested virtualization, kernel networking (tun, bridge, veth, vxlan,\n"
                "netns, nftables), Open vSwitch (installed, and whether ovsdb-server\n"
                "and ovs-vswitchd answer), dnsmasq and ssh. Each check is ok, warn,\n"
                "missing or unusable, with the reason.\n"
                "\n"
                "Environment:\n"
                "  VMHOST_OVS_DB  the OVS database to ask (unix:PATH), as for 'vmhost net'\n"
                "  OVS_RUNDIR     OVS's run directory (db.sock, ovs-vswitchd.pid);\n"
                "                 default /var/run/openvswitch\n"
                "\n"
                "Exit status: 0 when VMs can run here (QEMU with a working\n"
                "accelerator, KVM or TCG), 1 otherwise.\n"
                "\n"
                "Options:\n"
                "  --json      print the report as JSON\n"
                "  -h, --help  this help\n"
                "\n"
                "Example:\n"
                "  vmhost doctor\n"
                "  vmhost doctor --json | jq -r .accelerator\n",
                PROBE_KVM_BUDGET_MS);
}

static const char *kvm_summary(const struct probe_kvm_result *k) {
        switch (k->status) {
        case PROBE_KVM_USABLE: return "usable";
        case PROBE_KVM_MISSING: return "missing";
        case PROBE_KVM_NO_ACCESS: return "present but not accessible";
        case PROBE_KVM_UNUSABLE: break;
        }
        return "present but unusable";
}

static void print_table(const struct probe_report *r) {
        static const char *const head[] = { "CHECK", "STATUS", "VALUE" };
        size_t w[3] = { strlen(head[0]), strlen(head[1]), strlen(head[2]) };
        for (unsigned i = 0; i < r->n_checks; i++) {
                const struct probe_check *c = &r->checks[i];
                w[0] = MAX(w[0], strlen(c->name));
                w[1] = MAX(w[1], strlen(probe_check_status_to_string(c->status)));
                w[2] = MAX(w[2], strlen(c->value));
        }
        printf("%-*s  %-*s  %-*s  %s\n", (int) w[0], head[0], (int) w[1], head[1], (int) w[2], head[2], "REASON");
        for (unsigned i = 0; i < r->n_checks; i++) {
                const struct probe_check *c = &r->checks[i];
                printf("%-*s  %-*s  %-*s  %s\n", (int) w[0], c->name, (int) w[1],
                       probe_check_status_to_string(c->status), (int) w[2], c->value, c->reason);
        }
        printf("\n");
        printf("KVM: %s (%s)\n", kvm_summary(&r->kvm), r->kvm.reason);
        printf("accelerator: %s (%s)\n", probe_accel_to_string(r->accel), r->accel_reason);
        printf("VMs can run here: %s\n", r->can_run_vms ? "yes" : "no");
}

int cmd_doctor(const struct vh_context *ctx, int argc, char **argv) {
        bool json = false;
        for (int i = 1; i < argc; i++) {
                if (streq(argv[i], "-h") || streq(argv[i], "--help")) {
                        doctor_usage(stdout);
                        return 0;
                }
                if (streq(argv[i], "--json"))
                        json = true;
                else {
                        log_error("Unknown argument '%s'. See 'vmhost doctor --help'.", argv[i]);
                        return 2;
                }
        }

        /* The same variables the rest of vmhost and OVS's own tools read:
         * a private database (tests) is checked instead of the system's. */
        const char *ovs_db = ctx->ovs_db, *ovs_rundir = ctx->ovs_rundir;
        struct probe_doctor_options opts = {
                .store_kvm_cache = true,
                .ovs_db = isempty(ovs_db) ? NULL : ovs_db,
                .ovs_rundir = isempty(ovs_rundir) ? NULL : ovs_rundir,
        };
        struct probe_report *report = NULL;
        struct vh_error err = {};
        int r = probe_doctor_run(ctx, &opts, &report, &err);
        if (r < 0) {
                log_error_errno(r, "Cannot check this host: %s", vh_error_message(&err, r));
                return 1;
        }

        if (json) {
                _cleanup_free_ char *text = NULL;
                r = probe_report_to_json(report, true, &text);
                if (r < 0) {
                        probe_report_free(report);
                        log_error_errno(r, "Cannot format the report as JSON: %m");
                        return 1;
                }
                fputs(text, stdout);
        } else
                print_table(report);

        int status = report->can_run_vms ? 0 : 1;
        probe_report_free(report);
        return status;
}
