/* vmhost/doctor.h: what this host can do for virtual machines, and why.
 *
 * Two parts:
 *  - the KVM probe, which answers "can KVM really run guest code here, and
 *    how fast?" by running a tiny real-mode loop through the KVM API in a
 *    child process, bounded in time. 'vm start --accel auto' uses it to pick
 *    kvm or tcg; probe_kvm_cached() keeps the answer for one boot.
 *  - the doctor report: one check per thing vmhost relies on (QEMU, KVM,
 *    nested virtualization, kernel networking, Open vSwitch (installed and
 *    its daemons answering), nftables, dnsmasq, ssh), each with a status, a
 *    short value and a reason.
 *
 * Nothing here prints; 'vmhost doctor' shows the report. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "vmhost/context.h"
#include "vmhost/error.h"

enum probe_accel {
        PROBE_ACCEL_NONE,  /* no way to run a guest */
        PROBE_ACCEL_TCG,   /* QEMU's CPU emulator */
        PROBE_ACCEL_KVM,
};

const char *probe_accel_to_string(enum probe_accel a);

/* ---- KVM probe ---- */

#define PROBE_KVM_DEVICE "/dev/kvm"
/* KVM_GET_API_VERSION has returned 12 since Linux 2.6.22; anything else is
 * an interface vmhost (and QEMU) does not speak. */
#define PROBE_KVM_API_VERSION 12
/* Loop iterations of the probe guest (2 instructions each). Real KVM runs
 * them in 1 to 4 ms; the rate threshold below needs at most 40 ms. */
#define PROBE_KVM_ITERATIONS 2000000u
/* How long the guest may run before the probe stops it and measures. */
#define PROBE_KVM_BUDGET_MS 300u
/* When the probe process is killed, whatever it is doing. */
#define PROBE_KVM_HARD_TIMEOUT_MS 2000u
/* Below this many guest instructions per second KVM is not used: real KVM
 * does billions; a paravirtual KVM that traps every instruction does about
 * a million, where a stock kernel does not finish booting. */
#define PROBE_KVM_MIN_IPS 100e6

enum probe_kvm_status {
        PROBE_KVM_USABLE,      /* ran the guest loop fast enough: use KVM */
        PROBE_KVM_MISSING,     /* no device node */
        PROBE_KVM_NO_ACCESS,   /* the device cannot be opened (permissions) */
        PROBE_KVM_UNUSABLE,    /* opened, but the API, the guest run or its speed failed */
};

const char *probe_kvm_status_to_string(enum probe_kvm_status s);

struct probe_kvm_options {
        const char *device;        /* NULL: PROBE_KVM_DEVICE */
        uint32_t iterations;       /* 0: PROBE_KVM_ITERATIONS */
        unsigned budget_ms;        /* 0: PROBE_KVM_BUDGET_MS */
        unsigned hard_timeout_ms;  /* 0: PROBE_KVM_HARD_TIMEOUT_MS */
        double min_ips;            /* 0: PROBE_KVM_MIN_IPS */
};

#define PROBE_KVM_REASON_MAX 256

struct probe_kvm_result {
        enum probe_kvm_status status;
        bool present;                   /* the device node exists */
        bool openable;                  /* it opened read-write */
        int api_version;                /* -1 when not read */
        bool ran;                       /* the guest was entered (KVM_RUN) */
        bool finished;                  /* the guest reached its hlt */
        bool killed;                    /* the probe process hit the hard timeout */
        uint64_t iterations;            /* loop iterations the guest executed */
        uint64_t iterations_target;
        double seconds;                 /* time spent in KVM_RUN */
        double instructions_per_second; /* 2 per iteration over 'seconds' */
        double probe_seconds;           /* the whole probe, process start included */
        char reason[PROBE_KVM_REASON_MAX]; /* one sentence: why usable or not */
};

/* Probes 'opts->device' (opts may be NULL for the defaults). Returns 0 with
 * a verdict in 'ret_result' whatever KVM did (missing, unusable, slow,
 * hung: the reason says which); -errno only when the probe itself could not
 * run (fork, pipe, memory). Never takes longer than the hard timeout. */
int probe_kvm_probe(const struct probe_kvm_options *opts, struct probe_kvm_result *ret_result,
                   struct vh_error *err);

/* The answer for this boot: read from <runtime dir>/kvm-probe when it was
 * written during the current boot (keyed by /proc/sys/kernel/random/boot_id),
 * else probed with the defaults and stored there. A cache that cannot be
 * read or written only costs a probe. 'ret_from_cache' may be NULL. */
int probe_kvm_cached(const struct vh_context *ctx, struct probe_kvm_result *ret_result, bool *ret_from_cache,
                     struct vh_error *err);

/* Stores a fresh result as the answer for this boot ('vmhost doctor' calls
 * this after each probe, so a changed host is seen at once). */
int probe_kvm_cache_store(const struct vh_context *ctx, const struct probe_kvm_result *r, struct vh_error *err);

/* Serializes a result as "key=value" lines keyed by 'boot_id', and reads it
 * back: -ESTALE when the boot id differs, -EINVAL when malformed. */
int probe_kvm_cache_format(const struct probe_kvm_result *r, const char *boot_id, char **ret_text);
int probe_kvm_cache_parse(const char *text, const char *boot_id, struct probe_kvm_result *ret_result);

/* Decides from the measured numbers ('finished', 'iterations', 'seconds')
 * whether a guest that ran is usable: it must have finished and reached
 * 'min_ips' (0: the default). Sets status, instructions_per_second and
 * reason. Pure: the unit tests feed it numbers. */
void probe_kvm_classify(struct probe_kvm_result *r, double min_ips);

/* kvm when the probe says usable, else tcg ('qemu_has_tcg' false: none). */
enum probe_accel probe_kvm_accel(const struct probe_kvm_result *r, bool qemu_has_tcg);

/* ---- Doctor report ---- */

enum probe_check_status {
        PROBE_CHECK_OK,
        PROBE_CHECK_WARN,      /* works, with a limit worth knowing */
        PROBE_CHECK_MISSING,   /* not installed, or not in this kernel */
        PROBE_CHECK_UNUSABLE,  /* present, but does not work */
};

const char *probe_check_status_to_string(enum probe_check_status s);

#define PROBE_CHECK_NAME_MAX 32
#define PROBE_CHECK_VALUE_MAX 128
#define PROBE_CHECK_REASON_MAX 320
#define PROBE_REPORT_MAX_CHECKS 48

struct probe_check {
        char name[PROBE_CHECK_NAME_MAX];      /* "qemu-system-x86_64", "kvm", "bridge" */
        enum probe_check_status status;
        char value[PROBE_CHECK_VALUE_MAX];    /* "7.2.22 (Debian ...)", "built in" */
        char reason[PROBE_CHECK_REASON_MAX];  /* one sentence: why, and what to do */
};

struct probe_report {
        struct probe_check checks[PROBE_REPORT_MAX_CHECKS];
        unsigned n_checks;
        struct probe_kvm_result kvm;
        enum probe_accel accel;
        char accel_reason[PROBE_CHECK_REASON_MAX];
        bool can_run_vms;                    /* QEMU is there and some accelerator works */
        double seconds;                      /* how long the doctor took */
};

struct probe_doctor_options {
        struct probe_kvm_options kvm;   /* zeroes: the defaults */
        bool store_kvm_cache;                /* refresh the per-boot probe cache */
        const char *ovs_db;                  /* NULL: unix:OVS_RUNDIR/db.sock */
        const char *ovs_rundir;              /* NULL: PROBE_OVS_RUNDIR (ovs-vswitchd's pid file and socket) */
};

/* ---- Open vSwitch daemons ----
 *
 * Installed is not running: without systemd nothing starts ovsdb-server and
 * ovs-vswitchd, and every OVS network fails until someone does. The probe
 * asks each daemon over its unix socket (a JSON-RPC request it must answer
 * within the timeout); judging the answers is pure so that the unit tests
 * feed it every combination. */

#define PROBE_OVS_RUNDIR "/var/run/openvswitch"
#define PROBE_OVS_TIMEOUT_MS 1000u
#define PROBE_OVS_START_HINT "service openvswitch-switch start"

struct probe_ovs_daemons {
        bool installed;             /* ovsdb-server and ovs-vswitchd are in PATH */
        bool default_paths;         /* the system's database and run directory, not an override */
        char db[256];               /* the database remote asked: "unix:PATH" */
        int db_error;               /* 0: ovsdb-server answered; -ENOENT no socket, -ECONNREFUSED nobody
                                     * listens, -ETIMEDOUT no answer, -EPROTO not JSON-RPC, -EOPNOTSUPP
                                     * a tcp:/ssl: remote (not probed) */
        char rundir[200];
        int vswitchd_pid;           /* from RUNDIR/ovs-vswitchd.pid, 0 when unread */
        int vswitchd_error;         /* 0: the process lives and its control socket answered; -ENOENT no
                                     * pid file, -ESRCH the pid is not running, else as db_error */
        char vswitchd_ctl[256];     /* the control socket asked, "" when none was found */
};

/* Fills 'ret' for database 'db' (NULL: unix:RUNDIR/db.sock) and run
 * directory 'rundir' (NULL: PROBE_OVS_RUNDIR), waiting at most 'timeout_ms'
 * (0: PROBE_OVS_TIMEOUT_MS) per daemon. Never fails: what could not be asked
 * is recorded as an error in 'ret'. */
void probe_ovs_daemons_probe(const struct vh_context *ctx, const char *db, const char *rundir, unsigned timeout_ms,
                             struct probe_ovs_daemons *ret);

/* The doctor's "ovs-daemons" row from a probe: which daemon is not running,
 * why, and the command that starts them. */
void probe_ovs_daemons_judge(const struct probe_ovs_daemons *s, struct probe_check *ret);

/* Runs every check ('opts' may be NULL). The KVM probe runs in a child
 * process while the other checks run. Returns 0 with a report (owned by the
 * caller, free with probe_report_free) even when the host can run nothing;
 * -errno only when the checks could not be made at all. */
int probe_doctor_run(const struct vh_context *ctx, const struct probe_doctor_options *opts,
                     struct probe_report **ret_report, struct vh_error *err);

struct probe_report *probe_report_free(struct probe_report *r);

/* The check called 'name', or NULL. */
const struct probe_check *probe_report_find(const struct probe_report *r, const char *name);

/* The report as JSON: {"checks": [{name, status, value, reason}...],
 * "accelerator", "accelerator-reason", "can-run-vms", "kvm-probe": {...},
 * "seconds", "version"}; docs/json.md describes it. */
#define PROBE_REPORT_JSON_VERSION 1
int probe_report_to_json(const struct probe_report *r, bool pretty, char **ret_json);
