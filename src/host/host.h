/* host/host.h: operations on registered hosts over the ssh transport:
 * adding one (first contact, its host key recorded), asking hosts whether
 * they answer and which vmhost they run (many at once, in parallel). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "base/json.h"
#include "host/host-def.h"
#include "vmhost/context.h"
#include "vmhost/error.h"

/* What host_probe() takes of a 'host self' reply: every VM's status
 * object (up to VM_LIST_MAX VMs of about 1 KiB and 128 JSON values each)
 * and their NICs' MACs. ssh's output and the JSON reader have the same
 * limits, so that a host within them is never "down" for its size. */
#define HOST_SELF_MAX_OUTPUT (64u << 20)
#define HOST_SELF_MAX_VALUES (128u * 65536)
#define HOST_SELF_MAX_MACS (65536u * 8)

/* Which vmhost versions drive each other: the same major.minor ("0.1.0"
 * and "0.1.7" do, "0.1.0" and "0.2.0" do not). The replies and options
 * that pass between them (host self, --avoid-mac, the JSON shapes) may
 * change between minor versions while vmhost is 0.x. Pure. */
bool host_version_compatible(const char *a, const char *b);

/* What 'host self' adds to an ask (host_probe()'s flags, with the
 * HOST_SSH_* ones): the doctor's summary (QEMU, accelerator, OVS; it
 * costs the doctor's checks there, a few hundred ms), and the VM status
 * objects of 'vm list --json'. */
enum host_probe_flags {
        HOST_PROBE_DOCTOR = 1 << 8,
        HOST_PROBE_VMS = 1 << 9,
};

/* What one ask of a host found. */
struct host_status {
        bool reachable;             /* ssh logged in and a compatible vmhost answered */
        bool incompatible;          /* vmhost answered, in a version this one does not drive */
        int error;                  /* -errno when not reachable */
        char why[VH_ERROR_MAX];     /* the reason when not, naming the host */
        uint64_t rtt_ms;            /* the time of the whole ask */
        char version[64];           /* "0.1.0", the vmhost version there; "" when unknown */
        /* From 'vmhost host self --json' there, when reachable: */
        char host_id[40];           /* its STATE/host-id */
        unsigned cpus;
        uint64_t memory_total, memory_free;  /* bytes; free is MemAvailable */
        unsigned vms, vms_running;
        char **macs;                /* MACs of its VMs' NICs, lower case, NULL-terminated */
        char **bad_macs;            /* what its reply gave as MACs that are not (the first few,
                                     * cut short), left out of 'macs'; NULL-terminated */
        bool has_doctor;            /* HOST_PROBE_DOCTOR: the next fields are set */
        char qemu_version[64];      /* "" when QEMU is missing */
        char accel[16];             /* "kvm", "tcg" or "none" */
        char ovs_version[64];       /* "" when Open vSwitch is not installed */
        bool ovs_running;
        struct json_value *vm_list; /* HOST_PROBE_VMS: the array of VM status objects */
        char **warnings;            /* HOST_PROBE_VMS: VMs that could not be described there */
};
/* Frees what a host_status holds (it stays zeroed); accepts NULL. */
void host_status_done(struct host_status *st);

/* The document of 'vmhost host self --json' (docs/json.md) for this
 * machine: vmhost version, host id, CPUs, memory, VMs and their MACs, and
 * with 'flags' the doctor's summary and the VMs' status objects. What
 * cannot be described goes into its "warnings", never to stderr: the
 * reply travels over ssh with stderr mixed in. */
int host_self_json(const struct vh_context *ctx, unsigned flags, char **ret, struct vh_error *err);
/* Reads such a document (after any lines before its opening '{': ssh
 * mixes the remote stderr in) into 'ret' (host_status_done() it), but
 * neither 'reachable' nor the version check: -EPROTO when it is not one. */
int host_self_parse(const char *text, struct host_status *ret, struct vh_error *err);

/* One line for people: "QEMU 7.2.22, accelerator tcg, OVS 3.1.0 (not
 * running), 1.2G of 3.8G memory free, 2 CPUs, 1 VM (0 running)". */
void host_status_summary(const struct host_status *st, char *buf, size_t size);

/* Writes the object 'host list --json' prints for one host (docs/json.md). */
void host_status_to_json(struct json_writer *w, const struct host_def *def, const struct host_status *st);

/* Runs 'vmhost host self --json' on the host (bounded: the connect
 * timeout plus a few seconds for the command) and checks that its version
 * is compatible with this one. Fills 'ret' either way (host_status_done()
 * it); returns 0 when reachable, else ret->error: -ENOENT when the host has
 * no vmhost (saying how to install it), -EPROTONOSUPPORT when its version
 * is incompatible (saying both), or ssh's error. 'flags': HOST_SSH_* and
 * HOST_PROBE_*. */
int host_probe(const struct vh_context *ctx, const struct host_def *def, unsigned flags, struct host_status *ret);

/* host_probe() of 'n' hosts at once, one thread each: the whole costs the
 * slowest one, at most its timeout. Returns 0, or -errno when the threads
 * could not be started (then nothing was asked). */
int host_probe_all(const struct vh_context *ctx, struct host_def *const defs[], size_t n, unsigned flags,
                   struct host_status ret[]);

/* Every registered host that loads, sorted by name (NULL-terminated; free
 * with host_defs_free()); the count in '*ret_n'. A host file that does not
 * load is left out, its error added to '*ret_skipped' ("NAME: why"; the
 * caller warns). */
int host_load_all(const struct vh_context *ctx, struct host_def ***ret, size_t *ret_n, char ***ret_skipped,
                  struct vh_error *err);
struct host_def **host_defs_free(struct host_def **defs);

/* The MACs in use on the registered hosts other than 'except' (NULL: all),
 * asked in parallel, and with 'include_local' this home's: what a create
 * must avoid. '*ret_warnings' holds sentences for the caller to warn with,
 * each naming its host: hosts that could not be asked (their MACs are not
 * checked) and strings a host gave as MACs that are not (left out). Both
 * NULL-terminated (free with host_names_free()). */
int host_cluster_macs(const struct vh_context *ctx, const char *except, bool include_local, char ***ret_macs,
                      char ***ret_warnings, struct vh_error *err);

/* Of the cluster's 'macs', those a create on the host with 'host_id'
 * must be told of (--avoid-mac): the ones its own derivation could make
 * (they carry that host id's bits: they take an id there) and the ones
 * written in the create's 'argv' (a hand-given MAC it must refuse). The
 * others cannot collide there, and sending all of a large cluster's
 * would not fit on the command line. An empty 'host_id' (unknown) keeps
 * them all. A new NULL-terminated vector, its count returned. */
int host_macs_for_create(char *const *macs, const char *host_id, char *const *argv, char ***ret);

/* Registers 'def' (its name must be free): connects once, recording the
 * host's key in its own known_hosts file (an unknown key is accepted this
 * once; ssh never accepts a changed one), checks that vmhost runs there
 * and stores the key's fingerprint in def->host_key and the file.
 * '*ret_status' says what the host answered. Nothing stays behind on
 * failure. */
int host_add(const struct vh_context *ctx, struct host_def *def, struct host_status *ret_status,
             struct vh_error *err);

/* 'vm list --all-hosts': this machine and the registered hosts, each with
 * its VM status objects, for every caller that shows the cluster (the CLI,
 * the web API) to ask and describe it one way. */
enum host_cluster_flags {
        HOST_CLUSTER_LOCAL = 1 << 0,   /* this machine, as HOST_LOCAL, first */
        HOST_CLUSTER_REMOTE = 1 << 1,  /* every registered host that loads, sorted by name */
};

struct host_cluster_entry {
        const char *name;              /* HOST_LOCAL or the host's name (owned by the cluster) */
        bool local;
        /* HOST_PROBE_VMS's answer. This machine is "reachable" unless its
         * own VMs could not be listed: then 'error' and 'why' say so
         * (without a "Cannot list" prefix; the caller says what failed). */
        struct host_status status;
};

struct host_cluster {
        struct host_cluster_entry *hosts;
        size_t n;
        size_t n_registered;           /* registered hosts that loaded (asked with HOST_CLUSTER_REMOTE) */
        char **skipped;                /* host files that did not load, "NAME: why" (NULL-terminated) */
        struct host_def **defs;        /* the registered hosts, NULL-terminated */
};

/* Asks the hosts 'flags' selects (the registered ones in parallel, with
 * host_probe_all(), then this machine with host_self_json()) for their
 * VMs. A host that does not answer, or this machine failing to list its
 * own, is an entry that is not reachable, not a failure: -errno only when
 * the registry cannot be read or the asks cannot be started. Fills 'ret'
 * (host_cluster_done() it) only on success. */
int host_cluster_list(const struct vh_context *ctx, unsigned flags, struct host_cluster *ret, struct vh_error *err);
void host_cluster_done(struct host_cluster *c);

/* Writes the object 'vm list --all-hosts --json' prints for one host
 * (docs/json.md): version, host, reachable, error, vms (the host's status
 * objects as it replied them), and with 'with_warnings' a "warnings" array
 * of what could not be described there (the CLI warns on stderr instead). */
void host_cluster_entry_to_json(struct json_writer *w, const struct host_cluster_entry *e, bool with_warnings);

/* Closes the host's multiplexed connection, if one is open (best effort). */
void host_disconnect(const struct vh_context *ctx, const struct host_def *def);
