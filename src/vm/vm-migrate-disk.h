/* vm/vm-migrate-disk.h: the disk-copy engine of a live migration with
 * copied storage (the destination has its own overlay over its own copy of
 * the base): QEMU's NBD server exports the destination's top disk node and
 * the source mirrors its top layer into it while the guest runs.
 *
 * The sequence (each step one call here, except the memory migration,
 * which is the caller's):
 *
 *   destination  QEMU started for incoming (-incoming defer), its disk an
 *                empty overlay over the same base, same node names
 *                vm_migrate_disk_export_start(dst, sock, "disk0-layer0")
 *   source       vm_migrate_disk_find_top(src, &top)
 *                vm_migrate_disk_mirror_start(src, &top, sock, 0, &m)
 *                      (sync=top when the top has a backing file, else full)
 *                vm_migrate_disk_mirror_wait_ready(m, timeout, cb, data)
 *   caller       memory: pause-before-switchover on the source,
 *                late-block-activate on the destination, migrate-incoming,
 *                migrate, wait for the source's "pre-switchover"
 *   source       vm_migrate_disk_mirror_finish(m)  (the guest is paused:
 *                the ready mirror is cancelled, which in QEMU completes it
 *                in sync without pivoting the source to the target, then
 *                the NBD client node is deleted)
 *   caller       migrate-continue
 *   destination  vm_migrate_disk_export_stop(dst), then "cont"
 *
 * Any failure before finish: vm_migrate_disk_mirror_abort(m) on the source
 * (also done by wait_ready itself when it fails, times out or is cancelled,
 * and by vm_migrate_disk_mirror_free() for a mirror neither finished nor
 * aborted) and vm_migrate_disk_export_stop() on the destination, if it
 * still runs.
 *
 * Guarantees: after an abort that returned 0 the source's block graph is
 * the one it had before mirror_start (no job, no NBD node, the guest's
 * disk untouched: a mirror only reads the source) and the guest keeps
 * running as it did. When the destination dies or its socket breaks, the
 * mirror job fails in QEMU (its NBD node has no reconnect delay) and
 * wait_ready returns that error after cleaning up, within its bound.
 * Every wait is bounded; nothing prints; errors come in 'err'.
 *
 * The job is created with auto-dismiss off, so its end state and error
 * stay readable in query-block-jobs until this code dismisses it: nothing
 * depends on catching an event. These calls only run commands and never
 * take an event off the clients' queues: the BLOCK_JOB_* and MIGRATION
 * events stay there for the caller.
 *
 * The socket paths are unix socket paths of this machine (an ssh forward
 * of the other host's socket works the same), at most
 * VM_MIGRATE_DISK_MAX_PATH bytes, or "fd:NAME": a socket the caller gave
 * QEMU with getfd under NAME (listening for export_start, connected for
 * mirror_start), for a QEMU that may not create or reach sockets where
 * vmhost keeps them (it runs as its own user). One mirror per source QEMU at a time
 * (fixed job and node names); a mirror object is not thread-safe. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "base/macro.h"
#include "qmp/qmp.h"
#include "vmhost/error.h"

/* sun_path holds 108 bytes with its NUL. */
#define VM_MIGRATE_DISK_MAX_PATH 107
#define VM_MIGRATE_DISK_MAX_NODE 64

/* The names this engine gives its objects in QEMU. */
#define VM_MIGRATE_DISK_EXPORT_ID "vmhost-migrate-export"
#define VM_MIGRATE_DISK_JOB_ID "vmhost-migrate-mirror"
#define VM_MIGRATE_DISK_NBD_NODE "vmhost-migrate-nbd"

/* How often the waits poll query-block-jobs. */
#define VM_MIGRATE_DISK_POLL_MS 50
/* Bound of the waits that are not given a timeout (finish, abort). */
#define VM_MIGRATE_DISK_END_TIMEOUT_MS 30000

/* The VM's top disk node: the one its disk device reads and writes. */
struct vm_migrate_disk_top {
        char node[VM_MIGRATE_DISK_MAX_NODE];  /* "disk0-layer0" */
        bool has_backing;                     /* it is an overlay: mirror sync=top */
        uint64_t virtual_size;                /* bytes the guest sees */
};

/* Finds the top node of the disk device 'device_id' (vmhost's "disk0";
 * NULL means that) in query-block, and whether it has a backing file.
 * -ENODEV when QEMU has no such device or no medium in it. */
int vm_migrate_disk_find_top(struct qmp_client *q, const char *device_id, struct vm_migrate_disk_top *ret,
                             struct vh_error *err);

/* Destination: starts QEMU's NBD server on the unix socket 'socket_path'
 * (QEMU creates it, replacing a stale file) and exports 'node' writable
 * under the export name 'node'. If the export fails the server is stopped
 * again, so that a failure leaves nothing. */
int vm_migrate_disk_export_start(struct qmp_client *dst, const char *socket_path, const char *node,
                                 struct vh_error *err);

/* Destination: removes the export and stops the NBD server. Idempotent:
 * an export or server that is not there is not an error. QEMU leaves the
 * socket file; the caller removes it. */
int vm_migrate_disk_export_stop(struct qmp_client *dst, struct vh_error *err);

/* Progress of the mirror, from query-block-jobs. 'total' grows while the
 * guest writes (it is QEMU's estimate of the work); 'done' never goes
 * backwards between two reports. */
struct vm_migrate_disk_progress {
        uint64_t done, total;
        bool ready;  /* in sync: every guest write now reaches both sides */
};

/* Called about every VM_MIGRATE_DISK_POLL_MS while waiting; a non-zero
 * return cancels: the wait aborts the mirror and returns -ECANCELED. */
typedef int (*vm_migrate_disk_progress_fn)(const struct vm_migrate_disk_progress *p, void *userdata);

struct vm_migrate_disk_mirror;

/* Source: adds an NBD client node for the export 'top->node' at
 * 'socket_path' and starts mirroring 'top->node' into it (sync=top if
 * top->has_backing, else full), in the background, at most
 * 'bytes_per_sec' (0: unlimited; the --bandwidth of a migration). A
 * failure removes what it added; *ret is set only on success. 'src' must
 * outlive the mirror. */
int vm_migrate_disk_mirror_start(struct qmp_client *src, const struct vm_migrate_disk_top *top,
                                 const char *socket_path, uint64_t bytes_per_sec,
                                 struct vm_migrate_disk_mirror **ret, struct vh_error *err);

/* 'tick' is called at every step of the mirror's waits (wait_ready,
 * finish, abort): the caller's heartbeat to the far side goes on while
 * this side waits for QEMU. NULL: none. */
void vm_migrate_disk_mirror_set_tick(struct vm_migrate_disk_mirror *m, void (*tick)(void *userdata),
                                     void *userdata);

/* Waits until the mirror is ready (in sync), at most 'timeout_ms',
 * reporting progress to 'cb' (may be NULL). Returns 0 when ready. On a
 * failed job (-EIO, the destination gone), a timeout (-ETIMEDOUT), a cancel
 * (-ECANCELED) or a lost QMP connection it aborts the mirror first and
 * returns that error, with the job's own message in 'err'. -ESTALE for
 * a mirror that has ended already. */
int vm_migrate_disk_mirror_wait_ready(struct vm_migrate_disk_mirror *m, unsigned timeout_ms,
                                      vm_migrate_disk_progress_fn cb, void *userdata, struct vh_error *err);

/* Reads the progress now (query-block-jobs), or the last one read once
 * the job has ended. */
int vm_migrate_disk_mirror_progress(struct vm_migrate_disk_mirror *m, struct vm_migrate_disk_progress *ret,
                                    struct vh_error *err);

/* At the switch-over, with the source guest paused: ends the ready mirror
 * without pivoting (block-job-cancel of a ready job: QEMU copies what is
 * still dirty, then ends it as completed) and deletes the NBD node. The
 * final progress stays readable. -EBUSY (nothing done) when the mirror is
 * not ready; a job that fails at the end is an error (-EIO) and the
 * mirror is cleaned up as by an abort. */
int vm_migrate_disk_mirror_finish(struct vm_migrate_disk_mirror *m, struct vh_error *err);

/* Force-cancels the job (if it still runs), dismisses it and deletes the
 * NBD node, so that the source is as before mirror_start. Idempotent.
 * A QEMU that does not answer within VM_MIGRATE_DISK_END_TIMEOUT_MS
 * gives -ETIMEDOUT. */
int vm_migrate_disk_mirror_abort(struct vm_migrate_disk_mirror *m, struct vh_error *err);

/* Whether vm_migrate_disk_mirror_finish() succeeded. */
bool vm_migrate_disk_mirror_finished(const struct vm_migrate_disk_mirror *m);

/* Aborts a mirror that was neither finished nor aborted (errors
 * dropped), then frees. Accepts NULL; returns NULL. */
struct vm_migrate_disk_mirror *vm_migrate_disk_mirror_free(struct vm_migrate_disk_mirror *m);
DEFINE_FREE_FUNC(struct vm_migrate_disk_mirror, vm_migrate_disk_mirror_free);
