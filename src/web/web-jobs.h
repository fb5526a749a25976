/* web/web-jobs.h: the work of the web server that may take long, each run
 * in a thread of its own so that the event loop never waits for it: the
 * listing of this host's VMs (reads files, asks each QEMU's pid), the
 * asking of the registered hosts over ssh (seconds), and the actions on a
 * VM (a start waits for QEMU, a stop for the guest). They call the same
 * library functions as the CLI (vm_start(), vm_stop_graceful(),
 * host_self_json(), host_probe_all(), ...), which take the VM's lock, so
 * a job and a CLI command on one VM exclude each other as two commands do.
 *
 * A finished job writes its own pointer to 'notify_fd' (a pipe the loop
 * polls); the loop reads it, uses the result and frees the job. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "base/strutil.h"
#include "vmhost/context.h"

enum web_job_kind {
        WEB_JOB_LIST_LOCAL,   /* result: the host object of this machine ('vm list --all-hosts --json') */
        WEB_JOB_LIST_REMOTE,  /* result: the host objects of every registered host, comma-separated */
        WEB_JOB_ACTION,       /* result: an HTTP status and a JSON body */
};

enum web_action { WEB_ACTION_START, WEB_ACTION_STOP, WEB_ACTION_KILL, WEB_ACTION_RESTART, WEB_ACTION_DELETE };

/* Stop waits this long for the guest to power off, as 'vm stop' does. */
#define WEB_STOP_TIMEOUT_MS (30 * 1000)

struct web_job {
        enum web_job_kind kind;
        const struct vh_context *ctx;   /* shared, immutable (vmhost/context.h) */
        int notify_fd;
        /* WEB_JOB_ACTION: */
        enum web_action action;
        char name[VH_NAME_MAX + 1];
        uint64_t conn_id;               /* who asked (it may have gone when the job ends) */
        /* Results: */
        int status;                     /* HTTP status of an action */
        char *result;                   /* JSON text (owned) */
        bool hosts_registered;          /* WEB_JOB_LIST_REMOTE: there is at least one */
};

/* "start", ... as in the API's paths; -EINVAL for others. */
int web_action_from_string(const char *s, enum web_action *ret);

/* Starts 'job' in a detached thread; it owns itself until it writes its
 * pointer to job->notify_fd. On failure nothing was started. */
int web_job_start(struct web_job *job);
struct web_job *web_job_free(struct web_job *job);
