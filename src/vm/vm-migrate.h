/* vm/vm-migrate.h: live migration of a running VM to another host over
 * the ssh transport (host/ssh.h). Storage 'shared': the disk is the same
 * file on both hosts (verified, not trusted) and only memory and device
 * state move. Storage 'copy': the destination makes its own overlay over
 * its own copy of the base (pushed with img push when missing) and the
 * source mirrors its top layer into it (vm-migrate-disk.h) before memory
 * follows; the mirror completes at the switch-over.
 *
 *     source (vm_migrate)                       destination (hidden commands)
 *     checks: host_probe, token beside disk --> 'vm migrate-check NAME' (definition on stdin)
 *     'vm migrate-incoming NAME' session    --> defines the VM, QEMU -incoming defer,
 *                                          <--   "READY {socket|port, vnc, forwards}"
 *     copy: the destination's own overlay, and an NBD export of it
 *           ("nbd" in READY); ssh -L nbd-fwd.sock:nbd.sock; mirror until
 *           in sync (phase "disk")
 *     stream: ssh -L fwd.sock:in.sock, or TCP (direct); QEMU gets it as fd:
 *     QMP: capabilities, parameters, migrate, poll query-migrate
 *     pre-switchover: copy: the mirror finishes (in sync, no pivot);
 *                     migrate-continue (the switch-over starts)
 *     --postcopy, memory stalled: migrate-start-postcopy; at pre-switchover as
 *     above; postcopy-active                --> "POSTCOPY"; destination 'cont' <-- "RUNNING"
 *           (from here the guest state is split: no rollback, no resume here;
 *           a failure leaves both QEMUs paused, the report says which host
 *           has what; 'resume' recovers: migrate-recover there, migrate
 *           resume=true here, through 'vm migrate-incoming NAME --recover')
 *     completed                             --> "CONT"; destination stops the
 *                                               export, 'cont'        <-- "RUNNING"
 *     source QEMU quits, definition (and for copy its own overlay) removed
 *
 * The session's stdin is the destination's lifeline: when it ends before
 * "CONT" (ssh killed, the source vmhost gone), or goes silent for 10 s
 * after a first "ALIVE" (the source's heartbeat, every second: a cut link
 * ends nothing), the destination removes its QEMU, definition and runtime
 * files by itself. Before the
 * switch-over any failure cancels the migration and leaves the VM running
 * on the source. Nothing here prints: progress comes through a callback
 * that can cancel. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "host/host-def.h"
#include "vm/vm-def.h"
#include "vmhost/context.h"
#include "base/json.h"
#include "vmhost/error.h"

/* AUTO: shared when the disk is verified shared, else copy. */
enum vm_migrate_storage { VM_MIGRATE_STORAGE_AUTO, VM_MIGRATE_STORAGE_SHARED, VM_MIGRATE_STORAGE_COPY };
const char *vm_migrate_storage_to_string(enum vm_migrate_storage s);
enum vm_migrate_transport { VM_MIGRATE_TRANSPORT_SSH, VM_MIGRATE_TRANSPORT_DIRECT };

/* Default and bounds of --max-downtime, and the first downtime-limit
 * asked of QEMU (raised step by step up to the maximum when the remaining
 * memory stops shrinking). */
#define VM_MIGRATE_MAX_DOWNTIME_DEFAULT_MS 500u
#define VM_MIGRATE_MAX_DOWNTIME_MAX_MS 60000u
#define VM_MIGRATE_DOWNTIME_START_MS 50u
/* QEMU's own default of 128 MiB/s is what makes a migration slow; this
 * one means "as fast as the link goes". */
#define VM_MIGRATE_BANDWIDTH_DEFAULT (8ull << 30)
/* How often query-migrate is asked. Often: with pause-before-switchover
 * the source waits paused in 'pre-switchover' for vmhost to see it and
 * answer, and that wait is downtime (at 100 ms it added up to 100 ms to
 * every downtime: tools/bench/bench-migrate). */
#define VM_MIGRATE_POLL_MS 5u
/* How often the progress callback is told, at most (phase changes always). */
#define VM_MIGRATE_PROGRESS_MS 100u

#define VM_MIGRATE_MAX_CHECKS 16
/* 50 ms doubled up to VM_MIGRATE_MAX_DOWNTIME_MAX_MS takes 12 steps. */
#define VM_MIGRATE_MAX_DOWNTIME_STEPS 16
/* The far side's answers: a bounded JSON object, bounded lines. */
#define VM_MIGRATE_REPLY_MAX (64u * 1024)
#define VM_MIGRATE_LINE_MAX 4096u

struct vm_migrate_check {
        char name[32];          /* "reachable", "qemu", "machine", ... */
        bool ok;
        char message[512];      /* what was found; for a failure, what to do */
};

enum vm_migrate_phase {
        VM_MIGRATE_PHASE_CHECKS,
        VM_MIGRATE_PHASE_PUSH,       /* copy: the base sent with img push (bytes of it) */
        VM_MIGRATE_PHASE_PREPARE,    /* destination QEMU starting, stream connecting */
        VM_MIGRATE_PHASE_DISK,       /* copy: the mirror, until in sync (disk bytes) */
        VM_MIGRATE_PHASE_MEMORY,
        VM_MIGRATE_PHASE_SWITCHOVER, /* source stopped, last pages and device state */
        VM_MIGRATE_PHASE_POSTCOPY,   /* runs on the destination, which pulls the rest */
        VM_MIGRATE_PHASE_DONE,
};
const char *vm_migrate_phase_to_string(enum vm_migrate_phase p);

struct vm_migrate_progress {
        enum vm_migrate_phase phase;
        char status[32];             /* QEMU's migration status */
        uint64_t transferred, remaining, total;  /* RAM bytes (disk: the mirror's, push: the base's) */
        double percent;              /* of total, never going backwards */
        uint64_t rate_bps;           /* bytes per second QEMU reports sending */
        uint64_t dirty_rate;         /* bytes the guest dirties per second */
        unsigned pass;               /* dirty-sync-count */
        uint64_t expected_downtime_ms;
        unsigned downtime_limit_ms;  /* what is allowed now */
        uint64_t elapsed_ms;
};

/* Returning non-zero cancels the migration (the VM stays on the source). */
typedef int (*vm_migrate_progress_fn)(const struct vm_migrate_progress *p, void *userdata);

struct vm_migrate_options {
        const char *name;
        const struct host_def *dest;
        enum vm_migrate_storage storage;
        enum vm_migrate_transport transport;
        uint64_t bandwidth;          /* bytes/s; 0: VM_MIGRATE_BANDWIDTH_DEFAULT */
        unsigned max_downtime_ms;    /* 0: VM_MIGRATE_MAX_DOWNTIME_DEFAULT_MS */
        unsigned timeout_s;          /* 0: none */
        /* When memory stops shrinking, switch to post-copy (capability
         * postcopy-ram on both sides) instead of raising the downtime.
         * After the switch a failure cannot be rolled back. */
        bool postcopy;
        /* bytes/s of the background transfer after the switch to
         * post-copy (QEMU's max-postcopy-bandwidth); 0: unlimited, QEMU's
         * default (the guest's own page faults are served either way). */
        uint64_t postcopy_bandwidth;
        bool dry_run;                /* the checks only */
        /* Finish a post-copy migration to 'dest' that broke (this QEMU in
         * postcopy-paused): the destination's QEMU takes a new stream
         * (migrate-recover), this one sends the rest (migrate resume). No
         * checks, no new definition: both are there from the first run. */
        bool resume;
        vm_migrate_progress_fn progress;
        void *userdata;
};

struct vm_migrate_result {
        struct vm_migrate_check checks[VM_MIGRATE_MAX_CHECKS];
        size_t n_checks;
        bool checks_ok;
        bool migrated;               /* the VM runs on the destination now */
        char where[VH_NAME_MAX + 8]; /* the host that holds the VM: "local" or the destination */
        bool source_paused;          /* a failure after the switch-over left it paused here */
        uint64_t total_ms;           /* this call, checks included */
        uint64_t migration_ms;       /* QEMU's total-time */
        uint64_t downtime_ms;        /* QEMU's figure */
        uint64_t setup_ms;
        uint64_t ram_transferred, ram_total;
        enum vm_migrate_storage storage; /* the mode used (AUTO resolved) */
        uint64_t disk_transferred;   /* copy: bytes the mirror wrote to the destination */
        uint64_t disk_total;         /* copy: the mirror's own total (its estimate of the work) */
        uint64_t push_wire_bytes;    /* copy: bytes of the base pushed (0: it was there) */
        unsigned passes;
        unsigned downtime_limit_ms;  /* the last one asked */
        /* Every downtime-limit asked, in order (the steps of convergence). */
        unsigned downtime_steps_ms[VM_MIGRATE_MAX_DOWNTIME_STEPS];
        unsigned n_downtime_steps;
        bool postcopy;               /* switched to post-copy (reached postcopy-active) */
        unsigned postcopy_pass;      /* the pass at which it was asked */
        struct vm_migrate_progress last; /* the last progress seen (figures of a timeout) */
        /* The destination's allocations (never assumed from the source). */
        char vnc[96];                /* "unix", "HOST:DISPLAY" or "" */
        uint16_t host_ports[VM_MAX_FORWARDS];
        unsigned n_forwards;
        struct vm_forward forwards[VM_MAX_FORWARDS];
        char warning[1024];          /* "" or what went wrong after the switch-over */
        /* What the user has, in one word: "migrated"; "stayed" (the VM
         * runs here, nothing there); after a failure past the switch to
         * post-copy "lost" (the destination's QEMU died: no QEMU holds the
         * whole guest), "postcopy-paused" (both QEMUs paused, recoverable
         * with 'resume') or "unknown" (the destination did not answer);
         * "unknown" too when a pre-copy switch-over was not confirmed. */
        char outcome[24];
        char source_state[32];       /* this QEMU's migration status at the end ("none": no QEMU) */
        /* The destination's, as its session said: its QEMU's migration
         * status, "gone" (its QEMU died), "unreachable" (no answer). */
        char destination_state[32];
        char definition[VH_NAME_MAX + 8]; /* after a post-copy failure: the host whose definition to keep */
        char recover[512];           /* the commands that recover or clean up, "" when none are needed */
};

/* Checks, then (unless dry_run) migrates. Returns 0 when the VM runs on
 * the destination (or, for dry_run, every check passed); -EINVAL with
 * "N checks failed" when a check failed (the list is in 'ret'); another
 * -errno when the migration failed ('ret->where' says where the VM is).
 * Holds the VM's lock throughout. */
int vm_migrate(const struct vh_context *ctx, const struct vm_migrate_options *opts, struct vm_migrate_result *ret,
               struct vh_error *err);

/* The destination's part of the checks: 'def_text' is the VM's
 * definition as the source has it; the other facts come from the source.
 * Writes {"vmhost":..., "checks":[{"name","ok","message"}...]} to *ret. */
struct vm_migrate_check_request {
        const char *qemu_version;    /* the source QEMU's "7.2.22" */
        const char *cpu;             /* the source's CPU model name (/proc/cpuinfo) */
        const char *token_path;      /* a file the source wrote beside the disk */
        const char *token_value;     /* what it holds */
        uint64_t disk_size;          /* the disk's size as the source sees it */
        bool copy;                   /* storage copy: no token; the disk is made here */
        bool postcopy;               /* --postcopy: QEMU here must be able to use userfaultfd */
};
int vm_migrate_check_local(const struct vh_context *ctx, const char *def_text,
                           const struct vm_migrate_check_request *req, char **ret, struct vh_error *err);

/* Parses the reply of vm_migrate_check_local() (after any lines before
 * its '{'), appending its checks to 'res'. Bounded. Pure. */
int vm_migrate_checks_parse(const char *text, struct vm_migrate_result *res, struct vh_error *err);

struct vm_migrate_incoming_options {
        enum vm_migrate_transport transport;
        const char *listen_addr;     /* direct: where to listen */
        bool copy;                   /* storage copy: a disk of its own here */
        const char *base;            /* copy: this host's copy of the base, NULL: no base (an empty disk) */
        uint64_t disk_size;          /* copy: the virtual size the guest sees */
        bool postcopy;               /* capability postcopy-ram here too */
};

/* The destination's session ('vm migrate-incoming'): reads the length-
 * prefixed definition from 'in_fd', defines and starts the VM paused with
 * -incoming defer, listens (transport ssh: a unix socket in its runtime
 * directory; direct: TCP on 'listen_addr', port chosen by the kernel),
 * writes "READY {json}" to 'out_fd', feeds the stream it accepts to QEMU,
 * and on "CONT" resumes the VM and writes "RUNNING". "ABORT", the end of
 * 'in_fd', or QEMU's death before that: QEMU, definition and runtime
 * files are removed ("FAILED why" when it can still say so).
 * With 'copy' the disk is STATE/vms/NAME/disk.qcow2, made here empty over
 * 'base' (or without one) at 'disk_size', and exported by QEMU's NBD
 * server on migrate-nbd.sock in the runtime directory ("nbd" in READY)
 * until CONT; a failure removes that disk too (never the base).
 * With 'postcopy', "POSTCOPY" (the source is in postcopy-active) resumes
 * the VM here before its memory is complete and answers "RUNNING"; from
 * then on nothing here is removed, whatever happens: the source cannot
 * take the VM back. */
int vm_migrate_incoming(const struct vh_context *ctx, const char *name, const struct vm_migrate_incoming_options *o,
                        int in_fd, int out_fd, struct vh_error *err);

/* The destination's part of 'resume' ('vm migrate-incoming NAME
 * --recover'): VM NAME's QEMU here must be in a post-copy migration that
 * broke (postcopy-paused; postcopy-active, still waiting for a stream that
 * is gone, is paused first with migrate-pause). Listens as
 * vm_migrate_incoming() does, writes "READY {json}", hands the stream it
 * accepts to QEMU with migrate-recover, and on "CONT" waits for the
 * migration to complete and answers "RUNNING". Nothing here is removed,
 * whatever happens: the VM's state is split between the hosts. */
int vm_migrate_incoming_recover(const struct vh_context *ctx, const char *name,
                                const struct vm_migrate_incoming_options *o, int in_fd, int out_fd,
                                struct vh_error *err);

/* Progress figures from a query-migrate reply ('ret' keeps its phase and
 * its percent as the floor). Pure. */
int vm_migrate_progress_from_json(const struct json_value *v, struct vm_migrate_progress *ret);

/* The next downtime-limit: doubled (at most 'max_ms') once the remaining
 * memory has not shrunk below its best for 'stalled_passes' >= 2 passes,
 * else 'cur_ms'. Pure. */
unsigned vm_migrate_next_downtime(unsigned cur_ms, unsigned max_ms, unsigned stalled_passes);

/* Whether to switch to post-copy now: allowed ('postcopy'), not asked
 * before, and the remaining memory stalled as for a downtime step. Pure. */
bool vm_migrate_want_postcopy(bool postcopy, bool requested, unsigned stalled_passes);

/* "1G", "500M", "100M/s", "1000000" (bytes per second) into *ret. */
int vm_migrate_parse_rate(const char *s, uint64_t *ret);
