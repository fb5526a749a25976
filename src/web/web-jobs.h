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

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "base/strutil.h"
#include "vmhost/context.h"
#include "vmhost/error.h"

enum web_job_kind {
        WEB_JOB_LIST_LOCAL,   /* result: the host object of this machine ('vm list --all-hosts --json') */
        WEB_JOB_LIST_REMOTE,  /* result: the host objects of every registered host, comma-separated */
        WEB_JOB_ACTION,       /* result: an HTTP status and a JSON body */
        WEB_JOB_MONITOR,      /* 'text': a human monitor command; result as an action's, with "output" */
        WEB_JOB_KEYS,         /* 'keys': QEMU key names pressed together (send-key) */
        WEB_JOB_TYPE,         /* 'text': typed as key presses, one character after the other */
        WEB_JOB_SCREENSHOT,   /* result: the PNG (result_len bytes), or an error body */
        WEB_JOB_CONSOLE,      /* console_fd: a socket to the VM's VNC or serial console */
};

enum web_console_kind { WEB_CONSOLE_VNC, WEB_CONSOLE_SERIAL };

/* Limits of what the page may send. */
#define WEB_MONITOR_MAX_COMMAND 1024
#define WEB_MONITOR_MAX_OUTPUT (256 * 1024)
#define WEB_MAX_KEYS 8
#define WEB_KEY_NAME_MAX 24
#define WEB_TYPE_MAX 512
#define WEB_SCREENSHOT_MAX (64u << 20)

enum web_action {
        WEB_ACTION_START, WEB_ACTION_STOP, WEB_ACTION_KILL, WEB_ACTION_RESTART, WEB_ACTION_DELETE,
        /* Not in the paths of web_action_from_string(): their own routes. */
        WEB_ACTION_SNAPSHOT_CREATE,   /* 'text': the snapshot's name, as 'vm snapshot create' */
        WEB_ACTION_SNAPSHOT_REVERT,
        WEB_ACTION_SNAPSHOT_DELETE,
        WEB_ACTION_SNAPSHOT_LIST,     /* result: {"name", "snapshots": [{id, tag, date, vm-state-size}], "text"} */
        WEB_ACTION_CDROM_INSERT,      /* 'text': an absolute path, as 'vm cdrom NAME insert' */
        WEB_ACTION_CDROM_EJECT,
        WEB_ACTION_CREATE,            /* 'text': the base image; memory, cpus, net: as 'vm create' */
        WEB_ACTION_DELETE_PLAN,       /* result: {"name", "removed": [...], "kept": [...]} (vm_delete_plan()) */
};

/* Limits of a create's fields (the library checks their values). */
#define WEB_CREATE_FIELD_MAX 64
/* As vm_snapshot() takes them. */
#define WEB_SNAPSHOT_NAME_MAX 128

/* Stop waits this long for the guest to power off, as 'vm stop' does. */
#define WEB_STOP_TIMEOUT_MS (30 * 1000)

/* A remote VM's action: its host's vmhost run over ssh, as 'vmhost --host
 * HOST vm VERB NAME' runs it; bounded (a start waits for QEMU, a stop for
 * the guest, WEB_STOP_TIMEOUT_MS), and what it prints is kept up to this. */
#define WEB_REMOTE_ACTION_TIMEOUT_MS (120 * 1000)
#define WEB_REMOTE_OUTPUT_MAX (64 * 1024)

/* A remote VM's console: 'vmhost vm console-relay NAME vnc|serial' run on
 * its host over ssh relays its stdin and stdout to the VM's VNC server (a
 * client QEMU was handed there, as here) or serial console. It prints this
 * line first once connected, so that the web server answers the websocket
 * only then, and an error (the VM is not running) is the relay's message;
 * the console's bytes follow. */
#define WEB_RELAY_READY "vmhost console-relay ready\n"
#define WEB_RELAY_READY_TIMEOUT_MS (20 * 1000)

struct web_job {
        enum web_job_kind kind;
        const struct vh_context *ctx;   /* shared, immutable (vmhost/context.h) */
        int notify_fd;
        const atomic_bool *stopping;    /* the server is stopping: actions stop waiting (may be NULL) */
        /* WEB_JOB_ACTION: */
        enum web_action action;
        char name[VH_NAME_MAX + 1];
        char host[VH_NAME_MAX + 1];     /* a registered host's name: its VM, over ssh; "" here */
        uint64_t conn_id;               /* who asked (it may have gone when the job ends) */
        /* WEB_JOB_MONITOR, WEB_JOB_TYPE, actions with an argument: */
        char *text;                     /* owned */
        /* WEB_ACTION_CREATE ("" when not given: the defaults of 'vm create'): */
        char memory[WEB_CREATE_FIELD_MAX + 1];
        char cpus[WEB_CREATE_FIELD_MAX + 1];
        char net[WEB_CREATE_FIELD_MAX + 1];
        /* WEB_JOB_KEYS: */
        char keys[WEB_MAX_KEYS][WEB_KEY_NAME_MAX + 1];
        size_t n_keys;
        /* WEB_JOB_CONSOLE: */
        enum web_console_kind console_kind;
        int console_fd;                 /* result: connected, non-blocking (owned; -1 on failure) */
        char *serial_log;               /* result, serial: the VM's serial log (owned) */
        uint64_t serial_log_offset;     /* result, serial: where this boot's output starts in it */
        char ws_accept[32];             /* the handshake's answer, for when the console is open */
        bool ws_protocol_binary;        /* the client offered the "binary" subprotocol */
        /* Results: */
        int status;                     /* HTTP status of an action */
        char *result;                   /* JSON text (owned), or the PNG of a screenshot */
        size_t result_len;              /* WEB_JOB_SCREENSHOT: bytes of the PNG */
        bool hosts_registered;          /* WEB_JOB_LIST_REMOTE: there is at least one */
};

/* "start", ... as in the API's paths; -EINVAL for others. */
int web_action_from_string(const char *s, enum web_action *ret);

/* The QEMU key names ("qcodes") that type character 'ch' on a US
 * keyboard, shift first when needed: 1 or 2 of them; -EINVAL for a
 * character that has no key there. */
int web_type_keys(char ch, const char *ret[2]);

/* A socket to running VM 'name''s VNC server: a socketpair whose other end
 * QEMU took as a client (QMP getfd, then add_client, skipauth: whoever
 * holds this end was let in by its caller). Nothing listens. Non-blocking,
 * close-on-exec. For the web server's viewers and 'vm console-relay'. */
int web_vnc_connect(const struct vh_context *ctx, const char *name, int *ret_fd, struct vh_error *err);

/* A socket to running VM 'name''s serial console (the chardev serves one
 * client at a time), its serial log and where this boot's output starts in
 * it. Non-blocking, close-on-exec. */
int web_serial_connect(const struct vh_context *ctx, const char *name, int *ret_fd, char **ret_log,
                       uint64_t *ret_log_offset, struct vh_error *err);

/* The JSON answer of this host's VM 'name' to a WEB_ACTION_SNAPSHOT_LIST
 * or WEB_ACTION_DELETE_PLAN, as the web server gives its page: for the
 * hidden 'vm web-query' that another host's web server runs here over
 * ssh. '*ret_json' is free()d by the caller. */
int web_vm_query(const struct vh_context *ctx, const char *name, enum web_action action, char **ret_json,
                 struct vh_error *err);

/* Starts 'job' in a detached thread; it owns itself until it writes its
 * pointer to job->notify_fd. On failure nothing was started. */
int web_job_start(struct web_job *job);
struct web_job *web_job_free(struct web_job *job);
