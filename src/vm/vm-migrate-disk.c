/* vm/vm-migrate-disk.c: see vm-migrate-disk.h. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/clock.h"
#include "base/json-writer.h"
#include "base/json.h"
#include "base/macro.h"
#include "base/poll.h"
#include "base/strutil.h"
#include "vm/vm-migrate-disk.h"

#define DEFAULT_DEVICE_ID "disk0"

struct vm_migrate_disk_mirror {
        struct qmp_client *q;  /* borrowed */
        char node[VM_MIGRATE_DISK_MAX_NODE];
        bool node_added;       /* the NBD client node exists */
        bool job_exists;       /* the job exists in QEMU (created, not dismissed) */
        bool finished;         /* mirror_finish succeeded */
        bool ended;            /* finished, aborted or failed and cleaned up */
        struct vm_migrate_disk_progress last;
        void (*tick)(void *userdata);  /* called at every wait step, may be NULL */
        void *tick_userdata;
};

void vm_migrate_disk_mirror_set_tick(struct vm_migrate_disk_mirror *m, void (*tick)(void *userdata),
                                     void *userdata) {
        m->tick = tick;
        m->tick_userdata = userdata;
}

/* What query-block-jobs says of our job. */
struct job_state {
        bool present;
        bool concluded;
        bool ready;
        uint64_t offset, len;
        char status[32];
        char error[256];  /* "" when none */
};

/* "fd:NAME": a socket QEMU got by getfd (see vm-migrate-disk.h). */
static const char *fd_name(const char *socket_path) {
        return socket_path && startswith(socket_path, "fd:") ? socket_path + 3 : NULL;
}

static int check_path(const char *socket_path, struct vh_error *err) {
        const char *fdn = fd_name(socket_path);
        if (fdn && (isempty(fdn) || strlen(fdn) >= VM_MIGRATE_DISK_MAX_NODE))
                return vh_error_set(err, -EINVAL, "NBD socket fd name '%s' is empty or too long", fdn);
        if (fdn)
                return 0;
        if (isempty(socket_path))
                return vh_error_set(err, -EINVAL, "No NBD socket path given for the disk migration");
        if (strlen(socket_path) > VM_MIGRATE_DISK_MAX_PATH)
                return vh_error_set(err, -ENAMETOOLONG, "NBD socket path %s is longer than %d bytes", socket_path,
                                    VM_MIGRATE_DISK_MAX_PATH);
        if (socket_path[0] != '/')
                return vh_error_set(err, -EINVAL, "NBD socket path %s is not absolute", socket_path);
        return 0;
}

static int check_node(const char *node, struct vh_error *err) {
        if (isempty(node) || strlen(node) >= VM_MIGRATE_DISK_MAX_NODE)
                return vh_error_set(err, -EINVAL, "Block node name '%s' is empty or longer than %d bytes",
                                    node ? node : "", VM_MIGRATE_DISK_MAX_NODE - 1);
        return 0;
}

static void sleep_ms(unsigned ms) {
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long) (ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
}

/* Runs 'command' with the object the writer holds. */
static int execute_w(struct qmp_client *q, const char *command, struct json_writer *w, struct json_value **ret,
                     struct vh_error *err) {
        int r = 0;
        _cleanup_free_ char *args = json_writer_finish(w, &r);
        if (!args)
                return vh_error_set(err, r, "Could not format the arguments of '%s'", command);
        return qmp_execute(q, command, args, ret, err);
}

static bool error_says(const struct vh_error *err, const char *what) {
        return err && strstr(err->msg, what) != NULL;
}

int vm_migrate_disk_find_top(struct qmp_client *q, const char *device_id, struct vm_migrate_disk_top *ret,
                             struct vh_error *err) {
        if (!device_id)
                device_id = DEFAULT_DEVICE_ID;
        _cleanup_(json_value_freep) struct json_value *blocks = NULL;
        int r = qmp_execute(q, "query-block", NULL, &blocks, err);
        if (r < 0)
                return r;
        /* A -blockdev disk has no BlockBackend name ("device" is ""); its
         * device is named by "qdev", which QEMU gives as the device's id
         * or, for virtio, the QOM path of its backend. */
        char qom_prefix[128];
        snprintf(qom_prefix, sizeof(qom_prefix), "/machine/peripheral/%s/", device_id);
        for (size_t i = 0; i < json_array_len(blocks); i++) {
                const struct json_value *b = json_array_at(blocks, i);
                const char *dev = NULL, *qdev = NULL;
                (void) json_get_string(json_object_get(b, "device"), &dev);
                (void) json_get_string(json_object_get(b, "qdev"), &qdev);
                bool match = (dev && streq(dev, device_id)) ||
                             (qdev && (streq(qdev, device_id) || startswith(qdev, qom_prefix)));
                if (!match)
                        continue;
                const struct json_value *ins = json_object_get(b, "inserted");
                const char *node = NULL;
                if (!ins || json_get_string(json_object_get(ins, "node-name"), &node) < 0)
                        return vh_error_set(err, -ENODEV, "Disk device %s has no medium", device_id);
                if (check_node(node, err) < 0)
                        return -EINVAL;
                int64_t depth = 0;
                (void) json_get_int(json_object_get(ins, "backing_file_depth"), &depth);
                uint64_t size = 0;
                (void) json_get_uint(json_object_get(json_object_get(ins, "image"), "virtual-size"), &size);
                struct vm_migrate_disk_top t = { .has_backing = depth > 0, .virtual_size = size };
                snprintf(t.node, sizeof(t.node), "%s", node);
                *ret = t;
                return 0;
        }
        return vh_error_set(err, -ENODEV, "QEMU has no disk device %s", device_id);
}

int vm_migrate_disk_export_start(struct qmp_client *dst, const char *socket_path, const char *node,
                                 struct vh_error *err) {
        int r = check_path(socket_path, err);
        if (r < 0)
                return r;
        r = check_node(node, err);
        if (r < 0)
                return r;

        /* QEMU 7.2's nbd-server-start takes only the legacy address form
         * (type + data), unlike blockdev-add's flat one. */
        struct json_writer w;
        json_writer_init(&w, false);
        json_object_begin(&w);
        json_key(&w, "addr");
        json_object_begin(&w);
        json_kv_string(&w, "type", fd_name(socket_path) ? "fd" : "unix");
        json_key(&w, "data");
        json_object_begin(&w);
        if (fd_name(socket_path))
                json_kv_string(&w, "str", fd_name(socket_path));
        else
                json_kv_string(&w, "path", socket_path);
        json_object_end(&w);
        json_object_end(&w);
        /* The source's mirror is its one client: over direct TCP the
         * writable export must not take a second connection from the
         * network meanwhile (QEMU >= 5.2). */
        json_kv_uint(&w, "max-connections", 1);
        json_object_end(&w);
        r = execute_w(dst, "nbd-server-start", &w, NULL, err);
        if (r < 0)
                return r;

        json_writer_init(&w, false);
        json_object_begin(&w);
        json_kv_string(&w, "type", "nbd");
        json_kv_string(&w, "id", VM_MIGRATE_DISK_EXPORT_ID);
        json_kv_string(&w, "node-name", node);
        json_kv_string(&w, "name", node);
        json_kv_bool(&w, "writable", true);
        json_object_end(&w);
        r = execute_w(dst, "block-export-add", &w, NULL, err);
        if (r < 0) {
                (void) qmp_execute(dst, "nbd-server-stop", NULL, NULL, NULL);
                return r;
        }
        return 0;
}

static int export_present(struct qmp_client *dst, bool *ret, struct vh_error *err) {
        _cleanup_(json_value_freep) struct json_value *exports = NULL;
        int r = qmp_execute(dst, "query-block-exports", NULL, &exports, err);
        if (r < 0)
                return r;
        bool found = false;
        for (size_t i = 0; i < json_array_len(exports); i++) {
                const char *id = NULL;
                if (json_get_string(json_object_get(json_array_at(exports, i), "id"), &id) >= 0 &&
                    streq(id, VM_MIGRATE_DISK_EXPORT_ID))
                        found = true;
        }
        *ret = found;
        return 0;
}

int vm_migrate_disk_export_stop(struct qmp_client *dst, struct vh_error *err) {
        bool present = false;
        int r = export_present(dst, &present, err);
        if (r < 0)
                return r;
        if (present) {
                /* "hard": a source that is still connected (an abort) must
                 * not keep the export alive. */
                r = qmp_execute(dst, "block-export-del",
                                "{\"id\":\"" VM_MIGRATE_DISK_EXPORT_ID "\",\"mode\":\"hard\"}", NULL, err);
                if (r < 0)
                        return r;
        }
        /* nbd-server-stop also waits for the exports of the server to go. */
        struct vh_error e = {};
        r = qmp_execute(dst, "nbd-server-stop", NULL, NULL, &e);
        if (r < 0 && !(r == -EREMOTEIO && error_says(&e, "not running"))) {
                if (err)
                        *err = e;
                return r;
        }
        /* block-export-del only starts the removal: wait until it is gone. */
        uint64_t deadline = vh_deadline_after(VM_MIGRATE_DISK_END_TIMEOUT_MS);
        for (;;) {
                r = export_present(dst, &present, err);
                if (r < 0)
                        return r;
                if (!present)
                        return 0;
                if (vh_clock_ms() >= deadline)
                        return vh_error_set(err, -ETIMEDOUT, "NBD export %s was still there after %d ms",
                                            VM_MIGRATE_DISK_EXPORT_ID, VM_MIGRATE_DISK_END_TIMEOUT_MS);
                sleep_ms(VM_MIGRATE_DISK_POLL_MS);
        }
}

static int read_job(struct vm_migrate_disk_mirror *m, struct job_state *ret, struct vh_error *err) {
        _cleanup_(json_value_freep) struct json_value *jobs = NULL;
        int r = qmp_execute(m->q, "query-block-jobs", NULL, &jobs, err);
        if (r < 0)
                return r;
        struct job_state s = {};
        for (size_t i = 0; i < json_array_len(jobs); i++) {
                const struct json_value *j = json_array_at(jobs, i);
                const char *id = NULL;
                if (json_get_string(json_object_get(j, "device"), &id) < 0 || !streq(id, VM_MIGRATE_DISK_JOB_ID))
                        continue;
                s.present = true;
                const char *status = "", *error = "";
                (void) json_get_string(json_object_get(j, "status"), &status);
                (void) json_get_string(json_object_get(j, "error"), &error);
                (void) json_get_bool(json_object_get(j, "ready"), &s.ready);
                (void) json_get_uint(json_object_get(j, "offset"), &s.offset);
                (void) json_get_uint(json_object_get(j, "len"), &s.len);
                snprintf(s.status, sizeof(s.status), "%s", status);
                snprintf(s.error, sizeof(s.error), "%s", error);
                s.concluded = streq(status, "concluded") || streq(status, "null");
                break;
        }
        if (s.present) {
                /* QEMU's len grows with new guest writes, its offset with
                 * the copying; keep what is reported monotonic. */
                m->last.done = MAX(m->last.done, s.offset);
                m->last.total = MAX(m->last.total, MAX(s.len, m->last.done));
                m->last.ready = s.ready && !s.concluded;
        } else
                m->last.ready = false;
        *ret = s;
        return 0;
}

/* Waits until the job is concluded (or gone), dismisses it and deletes the
 * NBD node. 'job_error' gets the job's error message ("" if none). */
static int wait_end_and_clean(struct vm_migrate_disk_mirror *m, char *job_error, size_t job_error_size,
                              struct vh_error *err) {
        if (job_error_size > 0)
                job_error[0] = '\0';
        uint64_t deadline = vh_deadline_after(VM_MIGRATE_DISK_END_TIMEOUT_MS);
        /* Asked again after 1 ms, then twice as long each time up to
         * VM_MIGRATE_DISK_POLL_MS: at the switch-over this wait is inside
         * the guest's downtime, and a cancelled mirror with nothing dirty
         * ends within a millisecond or two (a fixed 50 ms sleep added up
         * to 50 ms to every copied-storage downtime). */
        unsigned pause_ms = 1;
        int r;
        while (m->job_exists) {
                struct job_state s;
                r = read_job(m, &s, err);
                if (r < 0)
                        return r;
                if (!s.present) {
                        m->job_exists = false;
                        break;
                }
                if (s.concluded) {
                        snprintf(job_error, job_error_size, "%s", s.error);
                        r = qmp_execute(m->q, "job-dismiss", "{\"id\":\"" VM_MIGRATE_DISK_JOB_ID "\"}", NULL, err);
                        if (r < 0)
                                return r;
                        m->job_exists = false;
                        break;
                }
                if (vh_clock_ms() >= deadline)
                        return vh_error_set(err, -ETIMEDOUT, "Mirror job %s did not end within %d ms (state %s)",
                                            VM_MIGRATE_DISK_JOB_ID, VM_MIGRATE_DISK_END_TIMEOUT_MS, s.status);
                if (m->tick)
                        m->tick(m->tick_userdata);
                sleep_ms(pause_ms);
                pause_ms = MIN(pause_ms * 2, (unsigned) VM_MIGRATE_DISK_POLL_MS);
        }
        if (m->node_added) {
                r = qmp_execute(m->q, "blockdev-del", "{\"node-name\":\"" VM_MIGRATE_DISK_NBD_NODE "\"}", NULL, err);
                if (r < 0)
                        return r;
                m->node_added = false;
        }
        m->ended = true;
        return 0;
}

int vm_migrate_disk_mirror_start(struct qmp_client *src, const struct vm_migrate_disk_top *top,
                                 const char *socket_path, uint64_t bytes_per_sec,
                                 struct vm_migrate_disk_mirror **ret, struct vh_error *err) {
        int r = check_path(socket_path, err);
        if (r < 0)
                return r;
        r = check_node(top->node, err);
        if (r < 0)
                return r;
        if (bytes_per_sec > INT64_MAX)
                return vh_error_set(err, -ERANGE, "Mirror speed %" PRIu64 " bytes/s is out of range", bytes_per_sec);
        _cleanup_free_ struct vm_migrate_disk_mirror *m = calloc(1, sizeof(*m));
        if (!m)
                return vh_error_set(err, -ENOMEM, "Out of memory");
        m->q = src;
        snprintf(m->node, sizeof(m->node), "%s", top->node);

        /* No reconnect-delay (0, the default): when the destination goes,
         * the requests in flight fail at once and so does the job, rather
         * than the mirror waiting for a server that will not come back. */
        struct json_writer w;
        json_writer_init(&w, false);
        json_object_begin(&w);
        json_kv_string(&w, "driver", "nbd");
        json_kv_string(&w, "node-name", VM_MIGRATE_DISK_NBD_NODE);
        json_key(&w, "server");
        json_object_begin(&w);
        if (fd_name(socket_path)) {
                json_kv_string(&w, "type", "fd");
                json_kv_string(&w, "str", fd_name(socket_path));
        } else {
                json_kv_string(&w, "type", "unix");
                json_kv_string(&w, "path", socket_path);
        }
        json_object_end(&w);
        json_kv_string(&w, "export", top->node);
        json_object_end(&w);
        r = execute_w(src, "blockdev-add", &w, NULL, err);
        if (r < 0)
                return r;
        m->node_added = true;

        /* sync=top copies only what the top layer holds: the destination
         * reads the rest from its own copy of the base. auto-dismiss off
         * keeps a failed job's message readable until we dismiss it. */
        json_writer_init(&w, false);
        json_object_begin(&w);
        json_kv_string(&w, "job-id", VM_MIGRATE_DISK_JOB_ID);
        json_kv_string(&w, "device", top->node);
        json_kv_string(&w, "target", VM_MIGRATE_DISK_NBD_NODE);
        json_kv_string(&w, "sync", top->has_backing ? "top" : "full");
        json_kv_bool(&w, "auto-dismiss", false);
        if (bytes_per_sec > 0)
                json_kv_uint(&w, "speed", bytes_per_sec);
        json_object_end(&w);
        r = execute_w(src, "blockdev-mirror", &w, NULL, err);
        if (r < 0) {
                (void) qmp_execute(src, "blockdev-del", "{\"node-name\":\"" VM_MIGRATE_DISK_NBD_NODE "\"}", NULL, NULL);
                return r;
        }
        m->job_exists = true;
        *ret = TAKE_PTR(m);
        return 0;
}

/* Aborts after a failure, keeping the failure's message in 'err' unless
 * the abort itself fails. Returns 'r'. */
static int fail_and_abort(struct vm_migrate_disk_mirror *m, int r, struct vh_error *err) {
        struct vh_error e = {};
        int k = vm_migrate_disk_mirror_abort(m, &e);
        if (k < 0 && err) {
                char first[VH_ERROR_MAX];
                snprintf(first, sizeof(first), "%s", vh_error_message(err, r));
                vh_error_set(err, r, "%s; cleaning up the mirror failed too: %s", first, vh_error_message(&e, k));
        }
        return r;
}

int vm_migrate_disk_mirror_wait_ready(struct vm_migrate_disk_mirror *m, unsigned timeout_ms,
                                      vm_migrate_disk_progress_fn cb, void *userdata, struct vh_error *err) {
        if (m->ended)
                return vh_error_set(err, -ESTALE, "The mirror of disk node %s has ended already", m->node);
        uint64_t deadline = vh_deadline_after(timeout_ms);
        for (;;) {
                struct job_state s;
                int r = read_job(m, &s, err);
                if (r < 0)
                        return fail_and_abort(m, r, err);
                if (!s.present) {
                        m->job_exists = false;
                        return fail_and_abort(m, vh_error_set(err, -EIO, "Mirror job %s of disk node %s vanished",
                                                              VM_MIGRATE_DISK_JOB_ID, m->node), err);
                }
                if (s.concluded) {
                        char job_error[256];
                        snprintf(job_error, sizeof(job_error), "%s", s.error[0] ? s.error : "it ended early");
                        r = vh_error_set(err, -EIO, "Mirroring disk node %s to the destination failed: %s", m->node,
                                         job_error);
                        return fail_and_abort(m, r, err);
                }
                if (cb && cb(&m->last, userdata) != 0)
                        return fail_and_abort(
                                m, vh_error_set(err, -ECANCELED, "Mirroring disk node %s was cancelled", m->node), err);
                if (s.ready)
                        return 0;
                if (vh_clock_ms() >= deadline)
                        return fail_and_abort(m,
                                              vh_error_set(err, -ETIMEDOUT,
                                                           "The mirror of disk node %s was not in sync after %u ms "
                                                           "(%" PRIu64 " of %" PRIu64 " bytes)",
                                                           m->node, timeout_ms, m->last.done, m->last.total),
                                              err);
                if (m->tick)
                        m->tick(m->tick_userdata);
                sleep_ms(VM_MIGRATE_DISK_POLL_MS);
        }
}

int vm_migrate_disk_mirror_progress(struct vm_migrate_disk_mirror *m, struct vm_migrate_disk_progress *ret,
                                    struct vh_error *err) {
        if (m->job_exists) {
                struct job_state s;
                int r = read_job(m, &s, err);
                if (r < 0)
                        return r;
        }
        *ret = m->last;
        return 0;
}

int vm_migrate_disk_mirror_finish(struct vm_migrate_disk_mirror *m, struct vh_error *err) {
        if (m->finished)
                return 0;
        if (m->ended)
                return vh_error_set(err, -ESTALE, "The mirror of disk node %s has ended already", m->node);
        struct job_state s;
        int r = read_job(m, &s, err);
        if (r < 0)
                return r;
        if (!s.present || s.concluded || !s.ready)
                return vh_error_set(err, -EBUSY, "The mirror of disk node %s is not in sync (state %s)", m->node,
                                    s.present ? s.status : "gone");
        /* Not forced: a ready mirror that is cancelled this way copies what
         * is still dirty and ends as completed, the source staying on its
         * own disk. */
        r = qmp_execute(m->q, "block-job-cancel", "{\"device\":\"" VM_MIGRATE_DISK_JOB_ID "\"}", NULL, err);
        if (r < 0)
                return fail_and_abort(m, r, err);
        char job_error[256];
        r = wait_end_and_clean(m, job_error, sizeof(job_error), err);
        if (r < 0)
                return fail_and_abort(m, r, err);
        if (job_error[0])
                return vh_error_set(err, -EIO, "Completing the mirror of disk node %s failed: %s", m->node,
                                    job_error);
        m->finished = true;
        return 0;
}

int vm_migrate_disk_mirror_abort(struct vm_migrate_disk_mirror *m, struct vh_error *err) {
        if (m->ended)
                return 0;
        if (m->job_exists) {
                struct job_state s;
                int r = read_job(m, &s, err);
                if (r < 0)
                        return r;
                if (s.present && !s.concluded) {
                        struct vh_error e = {};
                        r = qmp_execute(m->q, "block-job-cancel",
                                        "{\"device\":\"" VM_MIGRATE_DISK_JOB_ID "\",\"force\":true}", NULL, &e);
                        /* It may have concluded in between: the wait below
                         * sees that. */
                        if (r < 0 && r != -EREMOTEIO) {
                                if (err)
                                        *err = e;
                                return r;
                        }
                }
        }
        char job_error[256];
        return wait_end_and_clean(m, job_error, sizeof(job_error), err);
}

bool vm_migrate_disk_mirror_finished(const struct vm_migrate_disk_mirror *m) {
        return m->finished;
}

struct vm_migrate_disk_mirror *vm_migrate_disk_mirror_free(struct vm_migrate_disk_mirror *m) {
        if (!m)
                return NULL;
        if (!m->ended)
                (void) vm_migrate_disk_mirror_abort(m, NULL);
        free(m);
        return NULL;
}
