/* vm/vm-control.c: QMP-driven operations on running VMs. */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/fileio.h"
#include "base/json-writer.h"
#include "base/json.h"
#include "base/macro.h"
#include "base/process.h"
#include "base/strutil.h"
#include "qmp/qmp.h"
#include "vm/vm-cmdline.h"
#include "vm/vm-control.h"
#include "vm/vm.h"
#include "vmhost/image.h"

/* QMP serves one client at a time; a command waits this long for it. */
#define VM_QMP_CONNECT_MS 5000

static int open_qmp(const struct vh_context *ctx, const char *name, struct qmp_client **ret, struct vh_error *err) {
        struct vm_paths p;
        int r = vm_open_running(ctx, name, &p, NULL, err);
        if (r < 0)
                return r;
        r = qmp_connect(p.qmp_socket, VM_QMP_CONNECT_MS, ret, err);
        if (r == -ETIMEDOUT)
                r = vh_error_set(err, r, "The QMP socket of VM %s (%s) did not answer: another client (a console, a web "
                                 "dashboard) may hold it", name, p.qmp_socket);
        vm_paths_done(&p);
        return r;
}

/* Waits up to 'timeout_ms' for 'pid' to go, in VM_CANCEL_STEP_MS steps
 * that ask 'cancel'; whether it went. */
static bool wait_gone_cancellable(int pid, unsigned timeout_ms, const struct vm_cancel *cancel) {
        if (!cancel)
                return process_wait_gone(pid, timeout_ms);
        uint64_t deadline = vh_clock_ms() + timeout_ms;
        for (;;) {
                uint64_t now = vh_clock_ms();
                if (now >= deadline)
                        return !process_alive(pid);
                if (process_wait_gone(pid, (unsigned) MIN(deadline - now, (uint64_t) VM_CANCEL_STEP_MS)))
                        return true;
                if (vm_cancelled(cancel))
                        return false;
        }
}

static int stop_graceful_locked(const struct vh_context *ctx, const char *name, unsigned timeout_ms,
                                const struct vm_cancel *cancel, enum vm_stop_how *ret_how, struct vh_error *err) {
        struct vm_status st;
        int r = vm_get_status(ctx, name, &st, err);
        if (r < 0)
                return r;
        if (st.state != VM_STATE_RUNNING) {
                if (ret_how)
                        *ret_how = VM_STOP_NOT_RUNNING;
                return 0;
        }

        enum vm_stop_how how = VM_STOP_KILLED;
        _cleanup_(qmp_freep) struct qmp_client *q = NULL;
        struct vh_error qerr = {};
        if (open_qmp(ctx, name, &q, &qerr) >= 0) {
                if (timeout_ms > 0 && qmp_execute(q, "system_powerdown", NULL, NULL, &qerr) >= 0 &&
                    wait_gone_cancellable(st.pid, timeout_ms, cancel))
                        how = VM_STOP_GUEST;
                else if (qmp_execute(q, "quit", NULL, NULL, &qerr) >= 0 || process_alive(st.pid) == false) {
                        if (process_wait_gone(st.pid, 5000))
                                how = VM_STOP_QUIT;
                }
        }
        /* Whatever happened above, vm_stop() finishes the job: SIGTERM and
         * SIGKILL for a QEMU still there, then the taps and runtime files. */
        r = vm_stop(ctx, name, 2000, err);
        if (r < 0)
                return r;
        if (ret_how)
                *ret_how = how;
        return 0;
}

int vm_stop_graceful_cancellable(const struct vh_context *ctx, const char *name, unsigned timeout_ms,
                                 const struct vm_cancel *cancel, enum vm_stop_how *ret_how, struct vh_error *err) {
        _cleanup_(vm_lock_releasep) struct vm_lock *lock = NULL;
        int r = vm_lock_take_cancellable(ctx, name, timeout_ms > 0 ? "stopped" : "killed",
                                         VM_LOCK_LIFECYCLE_TIMEOUT_MS, cancel, &lock, err);
        if (r < 0)
                return r;
        return stop_graceful_locked(ctx, name, timeout_ms, cancel, ret_how, err);
}

int vm_stop_graceful(const struct vh_context *ctx, const char *name, unsigned timeout_ms, enum vm_stop_how *ret_how,
                     struct vh_error *err) {
        return vm_stop_graceful_cancellable(ctx, name, timeout_ms, NULL, ret_how, err);
}

int vm_monitor(const struct vh_context *ctx, const char *name, const char *command, char **ret_text,
               struct vh_error *err) {
        _cleanup_(qmp_freep) struct qmp_client *q = NULL;
        int r = open_qmp(ctx, name, &q, err);
        if (r < 0)
                return r;
        return qmp_human_command(q, command, ret_text, err);
}

int vm_qmp_raw(const struct vh_context *ctx, const char *name, const char *json_text, char **ret_json,
               struct vh_error *err) {
        struct json_value *cmd = NULL;
        int r = json_parse(json_text, strlen(json_text), NULL, &cmd, err);
        if (r < 0)
                return r;
        const char *execute = NULL;
        struct json_value *args = json_object_get(cmd, "arguments");
        _cleanup_free_ char *args_text = NULL;
        if (json_get_string(json_object_get(cmd, "execute"), &execute) < 0) {
                json_value_free(cmd);
                return vh_error_set(err, -EINVAL, "Expected a QMP command like {\"execute\": \"query-status\"}");
        }
        if (args && json_value_format(args, false, &args_text) < 0) {
                json_value_free(cmd);
                return -ENOMEM;
        }
        _cleanup_free_ char *command = strdup(execute);
        json_value_free(cmd);
        if (!command)
                return -ENOMEM;

        _cleanup_(qmp_freep) struct qmp_client *q = NULL;
        r = open_qmp(ctx, name, &q, err);
        if (r < 0)
                return r;
        struct json_value *ret = NULL;
        r = qmp_execute(q, command, args_text, &ret, err);
        if (r < 0)
                return r;
        r = json_value_format(ret, true, ret_json);
        json_value_free(ret);
        return r;
}

/* Hands an open file to QEMU (QEMU runs as an unprivileged user and could
 * not open it by name): the file is put in a new fd set, which QEMU
 * opens as "/dev/fdset/N". Returns N. */
static int pass_file(struct qmp_client *q, int fd, int64_t *ret_fdset, struct vh_error *err) {
        struct json_value *ret = NULL;
        int r = qmp_execute_fd(q, "add-fd", NULL, fd, &ret, err);
        if (r < 0)
                return r;
        int64_t id;
        r = json_get_int(json_object_get(ret, "fdset-id"), &id);
        json_value_free(ret);
        if (r < 0)
                return vh_error_set(err, -EPROTO, "QMP add-fd returned no fdset-id");
        *ret_fdset = id;
        return 0;
}

static void drop_fdset(struct qmp_client *q, int64_t fdset) {
        char args[64];
        snprintf(args, sizeof(args), "{\"fdset-id\":%lld}", (long long) fdset);
        (void) qmp_execute(q, "remove-fd", args, NULL, NULL);
}

int vm_screenshot(const struct vh_context *ctx, const char *name, const char *path, struct vh_error *err) {
        _cleanup_(qmp_freep) struct qmp_client *q = NULL;
        int r = open_qmp(ctx, name, &q, err);
        if (r < 0)
                return r;
        /* vmhost opens the file (with the caller's rights and umask); QEMU
         * only writes into it. */
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return vh_error_set(err, negative_errno(), "Cannot create %s: %m", path);
        int64_t fdset;
        r = pass_file(q, fd, &fdset, err);
        if (r < 0)
                return r;
        char args[128];
        snprintf(args, sizeof(args), "{\"filename\":\"/dev/fdset/%lld\",\"format\":\"png\"}", (long long) fdset);
        r = qmp_execute(q, "screendump", args, NULL, err);
        drop_fdset(q, fdset);
        if (r < 0)
                unlink(path);
        return r;
}

int vm_cdrom_change(const struct vh_context *ctx, const char *name, const char *iso, struct vh_error *err) {
        char abs[PATH_MAX];
        if (iso && !realpath(iso, abs))
                return vh_error_set(err, negative_errno(), "ISO image %s: %m", iso);
        _cleanup_(vm_lock_releasep) struct vm_lock *lock = NULL;
        int r = vm_lock_take(ctx, name, "changed", VM_LOCK_TIMEOUT_MS, &lock, err);
        if (r < 0)
                return r;
        _cleanup_(vm_def_freep) struct vm_def *def = NULL;
        r = vm_load(ctx, name, &def, err);
        if (r < 0)
                return r;
        _cleanup_(qmp_freep) struct qmp_client *q = NULL;
        r = open_qmp(ctx, name, &q, err);
        if (r < 0)
                return r;

        /* QEMU gets the ISO as an open file: it may not be allowed to open
         * the path itself. */
        _cleanup_close_ int fd = -1;
        int64_t fdset = -1;
        char fdpath[64] = "";
        if (iso) {
                fd = open(abs, O_RDONLY | O_CLOEXEC);
                if (fd < 0)
                        return vh_error_set(err, negative_errno(), "Cannot open ISO image %s: %m", abs);
                r = pass_file(q, fd, &fdset, err);
                if (r < 0)
                        return r;
                snprintf(fdpath, sizeof(fdpath), "/dev/fdset/%lld", (long long) fdset);
        }
        struct json_writer w;
        json_writer_init(&w, false);
        json_object_begin(&w);
        json_kv_string(&w, "id", VM_CDROM_DEVICE_ID);
        if (iso) {
                json_kv_string(&w, "filename", fdpath);
                json_kv_string(&w, "format", "raw");
                json_kv_string(&w, "read-only-mode", "read-only");
        } else
                json_kv_bool(&w, "force", true);
        json_object_end(&w);
        _cleanup_free_ char *args = json_writer_finish(&w, &r);
        if (!args)
                return r;
        r = qmp_execute(q, iso ? "blockdev-change-medium" : "eject", args, NULL, err);
        if (fdset >= 0)
                drop_fdset(q, fdset); /* QEMU keeps its own copy while the CD is in */
        if (r < 0)
                return r;

        /* The next start sees the same CD. */
        free(def->cdrom);
        def->cdrom = NULL;
        if (iso && !(def->cdrom = strdup(abs)))
                return -ENOMEM;
        if (!iso && def->boot == VM_BOOT_CDROM)
                def->boot = VM_BOOT_DISK;
        return vm_save(ctx, def, err);
}

static int open_disk(const struct vm_def *def, bool write, struct vh_image **ret, struct vh_error *err) {
        if (!def->disk)
                return vh_error_set(err, -ENOENT, "VM %s has no disk", def->name);
        if (!streq(def->disk_format, "qcow2"))
                return vh_error_set(err, -EOPNOTSUPP, "Disk %s of VM %s is %s; snapshots need qcow2", def->disk,
                                    def->name, def->disk_format);
        struct vh_image_open_options o = {
                .format = VH_IMAGE_FORMAT_QCOW2,
                /* Writes may copy clusters up from the backing file. */
                .flags = write ? VH_IMAGE_OPEN_READ_WRITE : VH_IMAGE_OPEN_NO_BACKING | VH_IMAGE_OPEN_FORCE_SHARE,
        };
        return vh_image_open(def->disk, &o, ret, err);
}

/* Whether a disk of the running VM holds the internal snapshot 'snap'
 * (query-block: each drive's image and its snapshots). HMP's loadvm stops
 * the guest before it looks and leaves it paused when the snapshot is
 * missing, and delvm of a missing one says nothing: both are asked first. */
static int running_snapshot_exists(struct qmp_client *q, const char *snap, bool *ret, struct vh_error *err) {
        struct json_value *v = NULL;
        int r = qmp_execute(q, "query-block", NULL, &v, err);
        if (r < 0)
                return r;
        *ret = false;
        for (size_t i = 0; i < json_array_len(v) && !*ret; i++) {
                const struct json_value *image =
                        json_object_get(json_object_get(json_array_at(v, i), "inserted"), "image");
                const struct json_value *snaps = json_object_get(image, "snapshots");
                for (size_t k = 0; k < json_array_len(snaps); k++) {
                        const char *tag;
                        if (json_get_string(json_object_get(json_array_at(snaps, k), "name"), &tag) == 0 &&
                            streq(tag, snap)) {
                                *ret = true;
                                break;
                        }
                }
        }
        json_value_free(v);
        return 0;
}

int vm_snapshot(const struct vh_context *ctx, const char *name, enum vm_snapshot_op op, const char *snap,
                bool *ret_running, struct vh_error *err) {
        if (isempty(snap) || strlen(snap) > 128 || strpbrk(snap, " \t\n\"'\\"))
                return vh_error_set(err, -EINVAL, "Invalid snapshot name '%s': 1-128 characters, no spaces or quotes",
                                    snap ? snap : "");
        _cleanup_(vm_lock_releasep) struct vm_lock *lock = NULL;
        int r = vm_lock_take(ctx, name, "snapshotted", VM_LOCK_TIMEOUT_MS, &lock, err);
        if (r < 0)
                return r;
        _cleanup_(vm_def_freep) struct vm_def *def = NULL;
        r = vm_load(ctx, name, &def, err);
        if (r < 0)
                return r;
        struct vm_status st;
        r = vm_get_status(ctx, name, &st, err);
        if (r < 0)
                return r;
        if (ret_running)
                *ret_running = st.state == VM_STATE_RUNNING;

        if (st.state == VM_STATE_RUNNING) {
                /* The whole machine: RAM, devices and every disk, taken by
                 * QEMU itself (the guest pauses while it is written). */
                static const char *const verbs[] = {
                        [VM_SNAPSHOT_CREATE] = "savevm",
                        [VM_SNAPSHOT_REVERT] = "loadvm",
                        [VM_SNAPSHOT_DELETE] = "delvm",
                };
                _cleanup_(qmp_freep) struct qmp_client *q = NULL;
                r = open_qmp(ctx, name, &q, err);
                if (r < 0)
                        return r;
                if (op != VM_SNAPSHOT_CREATE) {
                        bool exists;
                        r = running_snapshot_exists(q, snap, &exists, err);
                        if (r < 0)
                                return r;
                        if (!exists)
                                return vh_error_set(err, -ENOENT,
                                                    "VM %s has no snapshot named '%s' (see 'vmhost vm snapshot "
                                                    "list %s')",
                                                    name, snap, name);
                }
                qmp_set_timeout(q, 300 * 1000);
                _cleanup_free_ char *cmd = strdup_printf("%s %s", verbs[op], snap), *out = NULL;
                if (!cmd)
                        return -ENOMEM;
                r = qmp_human_command(q, cmd, &out, err);
                if (r < 0)
                        return r;
                /* HMP reports failures as text, not as a QMP error. */
                if (out && strstr(out, "rror"))
                        return vh_error_set(err, -EIO, "%s on VM %s failed: %s", verbs[op], name, strstrip(out));
                return 0;
        }

        _cleanup_(vh_image_freep) struct vh_image *img = NULL;
        r = open_disk(def, true, &img, err);
        if (r < 0)
                return r;
        switch (op) {
        case VM_SNAPSHOT_CREATE: r = vh_image_snapshot_create(img, snap, err); break;
        case VM_SNAPSHOT_REVERT: r = vh_image_snapshot_apply(img, snap, err); break;
        case VM_SNAPSHOT_DELETE: r = vh_image_snapshot_delete(img, snap, err); break;
        }
        if (r < 0)
                return r;
        return vh_image_flush(img, err);
}

int vm_snapshot_list(const struct vh_context *ctx, const char *name, char **ret_text, struct vh_error *err) {
        _cleanup_(vm_def_freep) struct vm_def *def = NULL;
        int r = vm_load(ctx, name, &def, err);
        if (r < 0)
                return r;
        _cleanup_(vh_image_freep) struct vh_image *img = NULL;
        r = open_disk(def, false, &img, err);
        if (r < 0)
                return r;
        struct vh_image_snapshot *list = NULL;
        size_t n = 0;
        r = vh_image_snapshot_list(img, &list, &n, err);
        if (r < 0)
                return r;
        r = vh_image_snapshots_format(list, n, ret_text, err);
        vh_image_snapshots_free(list, n);
        return r;
}
