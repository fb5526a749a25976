/* vm/vm-migrate.c: live migration to another host, shared or copied
 * storage (see vm-migrate.h for the sequence and what each side owns). */
#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>
#include <libgen.h>
#include <limits.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "base/clock.h"
#include "base/fileio.h"
#include "base/json-writer.h"
#include "base/json.h"
#include "base/macro.h"
#include "base/paths.h"
#include "base/poll.h"
#include "base/process.h"
#include "base/strutil.h"
#include "host/host.h"
#include "host/push.h"
#include "host/ssh-pipe.h"
#include "host/ssh.h"
#include "net/net.h"
#include "qmp/qmp.h"
#include "vm/vm-accel.h"
#include "vm/vm-alloc.h"
#include "vm/vm-image.h"
#include "vm/vm-migrate-disk.h"
#include "vm/vm-migrate-internal.h"
#include "vm/vm-migrate.h"
#include "vmhost/image.h"
#include "vm/vm-start.h"
#include "vm/vm.h"

extern char **environ;

/* QMP commands of a migration answer at once; a QEMU that does not in
 * this long is treated as gone. */
#define MIGRATE_QMP_TIMEOUT_MS 5000
/* The destination's READY comes after its QEMU started (30 s at most). */
#define MIGRATE_READY_TIMEOUT_MS 60000
/* The far side's answer to CONT, and its check command. */
#define MIGRATE_REPLY_TIMEOUT_MS 20000
/* When the source says 'completed', what is still in transit (socket and
 * ssh buffers, a few MiB) reaches the destination and is loaded within
 * this; it answers CONT within MIGRATE_REPLY_TIMEOUT_MS either way. */
#define MIGRATE_INCOMING_LOAD_TIMEOUT_MS 15000
/* The ssh forward's local socket appears within the connect timeout. */
#define MIGRATE_FORWARD_TIMEOUT_MS ((HOST_SSH_CONNECT_TIMEOUT_S + 5) * 1000)
/* The passes remaining memory may fail to shrink before the downtime
 * allowed is raised. */
#define MIGRATE_STALL_PASSES 2
/* The source's heartbeat on the session: an "ALIVE" line at least every
 * MIGRATE_ALIVE_MS until CONT. A cut link ends nothing on the
 * destination: the TCP connection only goes quiet, and sshd there (not
 * vmhost's to configure with ClientAliveInterval) may wait hours. A
 * destination that has heard one ALIVE takes MIGRATE_SILENCE_MS without
 * a line as the source gone and cleans up; one from a source that sends
 * none (older) waits for the end of its stdin as before, and an older
 * destination ignores the lines. */
#define MIGRATE_ALIVE_MS 1000
#define MIGRATE_SILENCE_MS 10000
#define MIGRATE_FD_NAME "vmhost-migrate"
/* The send buffer of the unix socket from the source QEMU into the ssh
 * forward (the kernel caps it at net.core.wmem_max; Debian's default is
 * 208 KiB): with more room QEMU's migration thread and ssh take turns less
 * often on a busy machine. Idle 256 MiB guest, 9 runs each on a loaded
 * 2-core machine: QEMU's total-time median 664 ms against 729 ms
 * (docs/benchmarks.md, "Live migration"). Not on direct TCP, where setting it
 * would turn the kernel's own sizing off. */
#define MIGRATE_FORWARD_SNDBUF (4 << 20)
#define MIGRATE_NBD_FD_NAME "vmhost-migrate-nbd"

const char *vm_migrate_phase_to_string(enum vm_migrate_phase p) {
        switch (p) {
        case VM_MIGRATE_PHASE_CHECKS: return "checks";
        case VM_MIGRATE_PHASE_PUSH: return "push";
        case VM_MIGRATE_PHASE_PREPARE: return "prepare";
        case VM_MIGRATE_PHASE_DISK: return "disk";
        case VM_MIGRATE_PHASE_MEMORY: return "memory";
        case VM_MIGRATE_PHASE_SWITCHOVER: return "switch-over";
        case VM_MIGRATE_PHASE_POSTCOPY: return "postcopy";
        case VM_MIGRATE_PHASE_DONE: return "done";
        }
        return "?";
}

const char *vm_migrate_storage_to_string(enum vm_migrate_storage s) {
        switch (s) {
        case VM_MIGRATE_STORAGE_AUTO: return "auto";
        case VM_MIGRATE_STORAGE_SHARED: return "shared";
        case VM_MIGRATE_STORAGE_COPY: return "copy";
        }
        return "?";
}

int vm_migrate_parse_rate(const char *s, uint64_t *ret) {
        if (!s || !*s || strlen(s) > 32)
                return -EINVAL;
        char buf[40];
        snprintf(buf, sizeof(buf), "%s", s);
        size_t n = strlen(buf);
        if (n > 2 && streq(buf + n - 2, "/s"))
                buf[n - 2] = '\0';
        uint64_t v;
        int r = parse_size(buf, &v);
        if (r < 0)
                return r;
        if (v == 0)
                return -ERANGE;
        *ret = v;
        return 0;
}

unsigned vm_migrate_next_downtime(unsigned cur_ms, unsigned max_ms, unsigned stalled_passes) {
        if (stalled_passes < MIGRATE_STALL_PASSES || cur_ms >= max_ms)
                return MIN(cur_ms, max_ms);
        uint64_t next = (uint64_t) cur_ms * 2;
        return (unsigned) MIN(next, (uint64_t) max_ms);
}

bool vm_migrate_want_postcopy(bool postcopy, bool requested, unsigned stalled_passes) {
        return postcopy && !requested && stalled_passes >= MIGRATE_STALL_PASSES;
}

static uint64_t get_u64(const struct json_value *v, const char *key) {
        uint64_t u = 0;
        if (json_get_uint(json_object_get(v, key), &u) < 0)
                return 0;
        return u;
}

int vm_migrate_progress_from_json(const struct json_value *v, struct vm_migrate_progress *ret) {
        const char *status;
        if (!v || v->type != JSON_OBJECT || json_get_string(json_object_get(v, "status"), &status) < 0)
                return -EPROTO;
        struct vm_migrate_progress p = *ret;
        snprintf(p.status, sizeof(p.status), "%s", status);
        const struct json_value *ram = json_object_get(v, "ram");
        p.transferred = get_u64(ram, "transferred");
        p.remaining = get_u64(ram, "remaining");
        p.total = get_u64(ram, "total");
        double mbps = 0;
        if (json_get_double(json_object_get(ram, "mbps"), &mbps) == 0 && mbps > 0)
                p.rate_bps = (uint64_t) (mbps * 1e6 / 8);
        else
                p.rate_bps = 0;
        uint64_t page = get_u64(ram, "page-size");
        p.dirty_rate = get_u64(ram, "dirty-pages-rate") * (page ? page : 4096);
        p.pass = (unsigned) MIN(get_u64(ram, "dirty-sync-count"), (uint64_t) UINT32_MAX);
        p.expected_downtime_ms = get_u64(v, "expected-downtime");
        /* Remaining grows again when the guest dirties pages already sent:
         * the percent shown is the best so far, so it never runs backwards. */
        if (p.total > 0) {
                double pc = 100.0 * (double) (p.total - MIN(p.remaining, p.total)) / (double) p.total;
                if (pc > p.percent)
                        p.percent = pc;
        }
        if (streq(status, "completed"))
                p.percent = 100.0;
        *ret = p;
        return 0;
}

/* ---- line I/O with the far side ---- */

struct line_reader {
        int fd;
        char buf[VM_MIGRATE_LINE_MAX];
        size_t len;
        bool eof;
};

/* The next line (without its newline, NUL-terminated in 'line') until
 * 'deadline_ms': 1, 0 at end of file, -ETIMEDOUT, -E2BIG for a line too
 * long. */
static int line_read(struct line_reader *lr, char *line, size_t size, uint64_t deadline_ms) {
        for (;;) {
                char *nl = memchr(lr->buf, '\n', lr->len);
                if (nl) {
                        size_t k = (size_t) (nl - lr->buf);
                        snprintf(line, size, "%.*s", (int) MIN(k, size - 1), lr->buf);
                        memmove(lr->buf, nl + 1, lr->len - k - 1);
                        lr->len -= k + 1;
                        return 1;
                }
                if (lr->len == sizeof(lr->buf))
                        return -E2BIG;
                if (lr->eof)
                        return 0;
                struct pollfd pfd = { .fd = lr->fd, .events = POLLIN };
                uint64_t now = vh_clock_ms();
                if (now >= deadline_ms)
                        return -ETIMEDOUT;
                int n = poll(&pfd, 1, (int) MIN(deadline_ms - now, 1000u));
                if (n < 0 && errno != EINTR)
                        return negative_errno();
                if (n <= 0)
                        continue;
                ssize_t k = read(lr->fd, lr->buf + lr->len, sizeof(lr->buf) - lr->len);
                if (k < 0 && errno != EINTR && errno != EAGAIN)
                        return negative_errno();
                if (k == 0)
                        lr->eof = true;
                if (k > 0)
                        lr->len += (size_t) k;
        }
}

static int write_all(int fd, const char *s, size_t n) {
        while (n > 0) {
                ssize_t k = send(fd, s, n, MSG_NOSIGNAL);
                if (k < 0 && errno == ENOTSOCK)
                        k = write(fd, s, n);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k <= 0)
                        return k < 0 ? negative_errno() : -EPIPE;
                s += k;
                n -= (size_t) k;
        }
        return 0;
}

static int write_line(int fd, const char *fmt, ...) _printf_(2, 3);
static int write_line(int fd, const char *fmt, ...) {
        char buf[VM_MIGRATE_LINE_MAX];
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
        va_end(ap);
        if (n < 0)
                return -EINVAL;
        size_t k = MIN((size_t) n, sizeof(buf) - 2);
        buf[k++] = '\n';
        return write_all(fd, buf, k);
}

/* ---- the destination's session ---- */

/* Removes the definition of a VM that is not running and the files
 * vmhost made beside it, never a disk: with shared storage the disk is
 * the other host's now. The caller holds the VM's lock. */
static void forget_vm(const struct vh_context *ctx, const char *name) {
        struct vm_paths p = {};
        if (vm_paths_get(ctx, name, &p, NULL) < 0)
                return;
        unlink(p.conf);
        unlink(p.serial_log);
        unlink(p.qemu_log);
        _cleanup_free_ char *crash = strdup_printf("%s/last-exit", p.state_dir);
        if (crash)
                unlink(crash);
        /* Fails, rightly, when a disk or anything else lives there. */
        rmdir(p.state_dir);
        vm_paths_done(&p);
}

static int read_exact(int fd, char *buf, size_t n, uint64_t deadline_ms) {
        size_t got = 0;
        while (got < n) {
                struct pollfd pfd = { .fd = fd, .events = POLLIN };
                uint64_t now = vh_clock_ms();
                if (now >= deadline_ms)
                        return -ETIMEDOUT;
                int k = poll(&pfd, 1, (int) (deadline_ms - now));
                if (k < 0 && errno != EINTR)
                        return negative_errno();
                if (k <= 0)
                        continue;
                ssize_t m = read(fd, buf + got, n - got);
                if (m < 0 && errno != EINTR)
                        return negative_errno();
                if (m == 0)
                        return -EPIPE;
                if (m > 0)
                        got += (size_t) m;
        }
        return 0;
}

static int listen_unix(const char *path, int *ret) {
        struct sockaddr_un sa;
        if (unix_address(path, &sa) < 0)
                return -ENAMETOOLONG;
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();
        unlink(path);
        mode_t old = umask(0177);
        int r = bind(fd, (struct sockaddr *) &sa, sizeof(sa));
        umask(old);
        if (r < 0 || listen(fd, 1) < 0) {
                r = negative_errno();
                close(fd);
                return r;
        }
        *ret = fd;
        return 0;
}

static int listen_tcp(const char *addr, uint16_t *ret_port, int *ret) {
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICHOST },
                        *ai = NULL;
        if (getaddrinfo(addr, "0", &hints, &ai) != 0 || !ai)
                return -EADDRNOTAVAIL;
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int r = fd < 0 ? negative_errno() : 0;
        if (r == 0 && (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 1) < 0))
                r = negative_errno();
        freeaddrinfo(ai);
        if (r < 0) {
                safe_close(fd);
                return r;
        }
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        getsockname(fd, (struct sockaddr *) &ss, &sl);
        *ret_port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *) &ss)->sin6_port
                                                   : ((struct sockaddr_in *) &ss)->sin_port);
        *ret = fd;
        return 0;
}

/* Until the destination's own query-migrate says its incoming stream was
 * loaded ('completed'), or, for 'postcopy', that the device state is here
 * and the rest of memory comes on demand ('postcopy-active', or already
 * 'completed'); 'failed' or 'cancelled' (with QEMU's reason) and the time
 * running out are errors. The guest is stopped until this returns. */
static int incoming_wait(struct qmp_client *q, const char *name, bool postcopy, struct vh_error *err) {
        const char *what = postcopy ? "post-copy" : "migration";
        uint64_t deadline = vh_deadline_after(MIGRATE_INCOMING_LOAD_TIMEOUT_MS);
        for (;;) {
                _cleanup_(json_value_freep) struct json_value *s = NULL;
                int r = qmp_execute(q, "query-migrate", NULL, &s, err);
                if (r < 0)
                        return r;
                const char *st = NULL, *why = NULL;
                (void) json_get_string(json_object_get(s, "status"), &st);
                if (st && (streq(st, "completed") || (postcopy && streq(st, "postcopy-active"))))
                        return 0;
                if (st && (streq(st, "failed") || streq(st, "cancelled") || (postcopy && startswith(st, "postcopy-")))) {
                        (void) json_get_string(json_object_get(s, "error-desc"), &why);
                        return vh_error_set(err, -EIO, "VM %s: the incoming %s %s%s%.200s", name, what, st,
                                            why ? ": " : "", why ? why : "");
                }
                if (vh_clock_ms() >= deadline)
                        return vh_error_set(err, -ETIMEDOUT, "VM %s: the incoming %s was not %s within %u s "
                                            "(status %.40s)", name, what, postcopy ? "started" : "loaded",
                                            MIGRATE_INCOMING_LOAD_TIMEOUT_MS / 1000, st ? st : "none");
                usleep(VM_MIGRATE_POLL_MS * 1000);
        }
}

/* Post-copy needs userfaultfd in the destination QEMU, which an
 * unprivileged QEMU (-runas) gets only with vm.unprivileged_userfaultfd=1
 * (QEMU 7.2 does not use /dev/userfaultfd). Says so when that is why. */
static int incoming_postcopy_refused(const char *name, int r, struct vh_error *err) {
        _cleanup_free_ char *v = NULL;
        size_t n = 0;
        bool off = read_full_file("/proc/sys/vm/unprivileged_userfaultfd", 16, &v, &n) >= 0 && v[0] == '0';
        char why[256];
        snprintf(why, sizeof(why), "%s", vh_error_message(err, r));
        return vh_error_set(err, r, "VM %s: QEMU here refused post-copy (%s)%s", name, why,
                            off ? ": it needs userfaultfd, which QEMU running as its own user gets only with sysctl "
                                  "vm.unprivileged_userfaultfd=1 on this host; or migrate without --postcopy"
                                : "");
}

/* Copied storage: the destination's own disk, STATE/vms/NAME/disk.qcow2,
 * empty, over this host's copy of the base (or without one: the mirror
 * then writes all of it), with the size the guest sees on the source. */
static int incoming_make_disk(const struct vh_context *ctx, struct vm_def *def,
                              const struct vm_migrate_incoming_options *o, struct vh_error *err) {
        if (o->disk_size == 0 || o->disk_size > PUSH_SIZE_MAX)
                return vh_error_set(err, -EINVAL, "VM %s: the source gave no valid disk size", def->name);
        def->disk = mfree(def->disk);
        def->base = mfree(def->base);
        if (o->base) {
                if (o->base[0] != '/' || !file_exists(o->base))
                        return vh_error_set(err, -ENOENT, "VM %s: its base %s is not on this host", def->name,
                                            o->base);
                return vm_image_create_overlay(ctx, def, o->base, o->disk_size, err);
        }
        _cleanup_free_ char *disk = NULL;
        int r = vm_image_own_disk_path(ctx, def->name, &disk, err);
        if (r < 0)
                return r;
        struct vh_image_create_options co = { .format = VH_IMAGE_FORMAT_QCOW2, .size = o->disk_size };
        r = vh_image_create(disk, &co, err);
        if (r < 0)
                return r;
        char *f = strdup("qcow2");
        if (!f) {
                unlink(disk);
                return -ENOMEM;
        }
        free(def->disk_format);
        def->disk_format = f;
        def->disk = TAKE_PTR(disk);
        return 0;
}

/* The destination's definition: the source's, with this host's own id
 * and TCP display; MACs and machine type stay, and the disk too unless it
 * is copied (then it is made here). Under the VM's and the home's lock. */
static int incoming_define(const struct vh_context *ctx, struct vm_def *def,
                           const struct vm_migrate_incoming_options *o, struct vh_error *err) {
        if (vm_exists(ctx, def->name))
                return vh_error_set(err, -EEXIST, "a VM named %s exists here already", def->name);
        for (unsigned i = 0; i < def->n_nics; i++)
                if (!def->nics[i].mac[0])
                        return vh_error_set(err, -EINVAL, "NIC %u of VM %s came without its MAC", i, def->name);
        _cleanup_close_ int home = -1;
        int r = vm_home_lock(ctx, &home, err);
        if (r < 0)
                return r;
        r = vm_alloc_id(ctx, NULL, &def->id, err);
        if (r < 0)
                return r;
        if (def->vnc == VM_VNC_TCP && (r = vm_alloc_vnc_display(ctx, def->vnc_host, &def->vnc_display, err)) < 0)
                return r;
        if (o->copy && def->disk && (r = incoming_make_disk(ctx, def, o, err)) < 0)
                return r;
        r = vm_save(ctx, def, err);
        if (r < 0 && o->copy)
                vm_image_remove_own_disk(ctx, def);
        return r;
}

/* The answer to the source's "STATUS" after a failure in post-copy:
 * "STATUS MIGRATION RUN" (QEMU's migration status and run state here). */
static int incoming_status(struct qmp_client *q, int out_fd, struct vh_error *err) {
        _cleanup_(json_value_freep) struct json_value *mv = NULL, *sv = NULL;
        const char *mig = NULL, *run = NULL;
        int r = qmp_execute(q, "query-migrate", NULL, &mv, err);
        if (r >= 0)
                r = qmp_execute(q, "query-status", NULL, &sv, err);
        if (r < 0)
                return r;
        (void) json_get_string(json_object_get(mv, "status"), &mig);
        (void) json_get_string(json_object_get(sv, "status"), &run);
        return write_line(out_fd, "STATUS %.40s %.40s", mig ? mig : "none", run ? run : "none");
}

int vm_migrate_incoming(const struct vh_context *ctx, const char *name, const struct vm_migrate_incoming_options *o,
                        int in_fd, int out_fd, struct vh_error *err) {
        enum vm_migrate_transport transport = o->transport;
        const char *listen_addr = o->listen_addr;
        /* The definition: its length on one line, then its bytes. */
        struct line_reader lr = { .fd = in_fd };
        char line[VM_MIGRATE_LINE_MAX];
        uint64_t deadline = vh_deadline_after(MIGRATE_READY_TIMEOUT_MS);
        int r = line_read(&lr, line, sizeof(line), deadline);
        long len = 0;
        if (r <= 0 || parse_int_range(line, 1, VM_CONF_MAX_BYTES, &len) < 0)
                return vh_error_set(err, -EPROTO, "VM %s: no definition came from the source", name);
        _cleanup_free_ char *text = malloc((size_t) len + 1);
        if (!text)
                return -ENOMEM;
        size_t have = MIN(lr.len, (size_t) len);
        memcpy(text, lr.buf, have);
        memmove(lr.buf, lr.buf + have, lr.len - have);
        lr.len -= have;
        if (have < (size_t) len && (r = read_exact(in_fd, text + have, (size_t) len - have, deadline)) < 0)
                return vh_error_set(err, r, "VM %s: the definition from the source was cut short", name);
        text[len] = '\0';
        _cleanup_(vm_def_freep) struct vm_def *def = NULL;
        r = vm_def_parse(text, "the source's definition", &def, err);
        if (r < 0)
                return r;
        if (!streq(def->name, name))
                return vh_error_set(err, -EINVAL, "the source sent VM %s for VM %s", def->name, name);

        _cleanup_(vm_lock_releasep) struct vm_lock *lock = NULL;
        r = vm_lock_take(ctx, name, "migrated here", VM_LOCK_TIMEOUT_MS, &lock, err);
        if (r < 0)
                return r;
        bool copy = o->copy && def->disk;
        r = incoming_define(ctx, def, o, err);
        if (r < 0)
                return r;
        /* From here on, every failure removes the definition again (and a
         * copied disk made here). */
        /* 'exported': the NBD export is up; 'nbd_tried': its start was
         * attempted (a failed start may leave the server to stop). */
        bool keep = false, exported = false, nbd_tried = false;
        uint16_t nbd_port = 0;
        int listen_fd = -1, stream_fd = -1;
        struct qmp_client *q = NULL;
        _cleanup_free_ char *sock = NULL, *nbd_sock = NULL;
        struct vm_start_job *job = NULL;
        struct vm_status st = {};
        struct vm_start_options sopts = { .incoming_defer = true };
        r = vm_start_prepare(ctx, name, &job, err);
        if (r >= 0)
                r = vm_start_launch(ctx, job, &sopts, err);
        if (r >= 0)
                r = vm_start_record(job, 30 * 1000, &st, err);
        job = vm_start_job_free(job);
        if (r < 0)
                goto fail;

        struct vm_paths p = {};
        r = vm_paths_get(ctx, name, &p, err);
        if (r < 0)
                goto fail;
        r = qmp_connect(p.qmp_watch_socket, MIGRATE_QMP_TIMEOUT_MS, &q, err);
        uint16_t port = 0;
        /* Copied storage: the disk stays inactive until 'cont' (the NBD
         * export writes it before), as in the sequence of vm-migrate-disk.h. */
        if (r >= 0)
                r = qmp_execute(q, "migrate-set-capabilities",
                                copy ? "{\"capabilities\":[{\"capability\":\"events\",\"state\":true},"
                                       "{\"capability\":\"late-block-activate\",\"state\":true}]}"
                                     : "{\"capabilities\":[{\"capability\":\"events\",\"state\":true}]}",
                                NULL, err);
        /* Post-copy is set on both sides before the stream starts; QEMU
         * checks here that it can take faults on the guest's memory. */
        if (r >= 0 && o->postcopy &&
            (r = qmp_execute(q, "migrate-set-capabilities",
                             "{\"capabilities\":[{\"capability\":\"postcopy-ram\",\"state\":true}]}", NULL,
                             err)) < 0)
                r = incoming_postcopy_refused(name, r, err);
        if (r >= 0 && copy) {
                struct vm_migrate_disk_top top = {};
                r = vm_migrate_disk_find_top(q, NULL, &top, err);
                if (r >= 0 && top.virtual_size != o->disk_size)
                        r = vh_error_set(err, -EINVAL, "VM %s: the disk made here has %" PRIu64 " bytes, not the "
                                         "source's %" PRIu64, name, top.virtual_size, o->disk_size);
                /* vmhost listens and QEMU gets the socket: QEMU runs as
                 * its own user and may not create files in the runtime
                 * directory. Direct: TCP on the stream's address (as
                 * unencrypted as the stream), the port chosen by the kernel. */
                int nbd_fd = -1;
                if (r >= 0 && transport == VM_MIGRATE_TRANSPORT_DIRECT) {
                        const char *a = listen_addr ? listen_addr : "0.0.0.0";
                        if ((r = listen_tcp(a, &nbd_port, &nbd_fd)) < 0)
                                vh_error_set(err, r, "Cannot listen for the disk's NBD connection on %s: %s", a,
                                             strerror(-r));
                } else if (r >= 0) {
                        nbd_sock = strdup_printf("%s/migrate-nbd.sock", p.runtime_dir);
                        if (!nbd_sock)
                                r = -ENOMEM;
                        else if ((r = listen_unix(nbd_sock, &nbd_fd)) < 0)
                                vh_error_set(err, r, "Cannot listen on %s: %s", nbd_sock, strerror(-r));
                }
                if (r >= 0)
                        r = qmp_execute_fd(q, "getfd", "{\"fdname\":\"" MIGRATE_NBD_FD_NAME "\"}", nbd_fd, NULL, err);
                safe_close(nbd_fd);
                nbd_tried = r >= 0;
                if (r >= 0)
                        r = vm_migrate_disk_export_start(q, "fd:" MIGRATE_NBD_FD_NAME, top.node, err);
                exported = r >= 0;
        }
        if (r >= 0 && transport == VM_MIGRATE_TRANSPORT_SSH) {
                sock = strdup_printf("%s/migrate-in.sock", p.runtime_dir);
                r = sock ? listen_unix(sock, &listen_fd) : -ENOMEM;
                if (r < 0)
                        vh_error_set(err, r, "Cannot listen on %s: %s", sock ? sock : "", strerror(-r));
        } else if (r >= 0) {
                r = listen_tcp(listen_addr ? listen_addr : "0.0.0.0", &port, &listen_fd);
                if (r < 0)
                        vh_error_set(err, r, "Cannot listen for the migration on %s: %s",
                                     listen_addr ? listen_addr : "0.0.0.0", strerror(-r));
        }
        vm_paths_done(&p);
        if (r < 0)
                goto fail;

        {
                struct json_writer w;
                json_writer_init(&w, false);
                json_object_begin(&w);
                json_kv_string(&w, "socket", sock);
                json_kv_uint(&w, "port", port);
                if (nbd_sock)
                        json_kv_string(&w, "nbd", nbd_sock);
                if (nbd_port)
                        json_kv_uint(&w, "nbd_port", nbd_port);
                char vnc[96] = "";
                if (def->vnc == VM_VNC_TCP)
                        snprintf(vnc, sizeof(vnc), "%s:%u", def->vnc_host, def->vnc_display);
                else if (def->vnc == VM_VNC_UNIX)
                        snprintf(vnc, sizeof(vnc), "unix");
                json_kv_string(&w, "vnc", vnc);
                json_key(&w, "host_ports");
                json_array_begin(&w);
                for (unsigned i = 0; i < def->n_forwards; i++)
                        json_uint(&w, st.host_ports[i]);
                json_array_end(&w);
                json_object_end(&w);
                int werr = 0;
                _cleanup_free_ char *js = json_writer_finish(&w, &werr);
                r = js ? write_line(out_fd, "READY %s", js) : -ENOMEM;
                if (r < 0)
                        goto fail;
        }

        /* The stream, then commands; the end of stdin before CONT is an
         * abort, so a source that vanished leaves nothing here, and so is
         * its silence once it has sent a heartbeat (a cut link). */
        bool completed_cont = false, beats = false;
        uint64_t heard = vh_clock_ms();
        for (;;) {
                struct pollfd pfd[2] = { { .fd = in_fd, .events = POLLIN }, { .fd = listen_fd, .events = POLLIN } };
                /* Lines already read (with the definition, or several in
                 * one read) are not announced by poll again. */
                bool buffered = memchr(lr.buf, '\n', lr.len) != NULL;
                int n = poll(pfd, listen_fd >= 0 ? 2 : 1, buffered ? 0 : 200);
                if (n < 0 && errno != EINTR) {
                        r = vh_error_set(err, negative_errno(), "poll: %m");
                        goto fail;
                }
                if (listen_fd >= 0 && n > 0 && (pfd[1].revents & POLLIN)) {
                        stream_fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
                        if (stream_fd >= 0) {
                                listen_fd = safe_close(listen_fd);
                                if (sock)
                                        unlink(sock);
                                r = qmp_execute_fd(q, "getfd", "{\"fdname\":\"" MIGRATE_FD_NAME "\"}", stream_fd,
                                                   NULL, err);
                                stream_fd = safe_close(stream_fd);
                                if (r >= 0)
                                        r = qmp_execute(q, "migrate-incoming",
                                                        "{\"uri\":\"fd:" MIGRATE_FD_NAME "\"}", NULL, err);
                                if (r < 0)
                                        goto fail;
                        }
                }
                bool readable = n > 0 && (pfd[0].revents & (POLLIN | POLLHUP | POLLERR));
                while (readable || buffered) {
                        r = line_read(&lr, line, sizeof(line), vh_deadline_after(1000));
                        if (r == -ETIMEDOUT)
                                break;
                        if (keep && r <= 0) {
                                /* Post-copy: the rest of the memory is on
                                 * the source, which can no longer run it. */
                                r = vh_error_set(err, -EPIPE, "VM %s: the source went away during post-copy; the "
                                                 "VM stays here", name);
                                goto fail;
                        }
                        if (r <= 0 || (streq(line, "ABORT") && !keep)) {
                                r = vh_error_set(err, -ECANCELED, "VM %s: the source %s", name,
                                                 r <= 0 ? "went away" : "aborted the migration");
                                goto fail;
                        }
                        heard = vh_clock_ms();
                        if (streq(line, "ALIVE"))
                                beats = true;
                        /* A failed 'STATUS' (QEMU gone) is found below. */
                        if (streq(line, "STATUS") && keep)
                                (void) incoming_status(q, out_fd, NULL);
                        if (streq(line, "POSTCOPY") && o->postcopy) {
                                /* The source stopped for good: whatever
                                 * happens now, the VM is not removed here. */
                                keep = true;
                                r = incoming_wait(q, name, true, err);
                                if (r >= 0 && exported && (r = vm_migrate_disk_export_stop(q, err)) >= 0)
                                        exported = false;
                                if (r >= 0)
                                        r = qmp_execute(q, "cont", NULL, NULL, err);
                                /* A failed 'cont' is tried again at CONT. */
                                if (r < 0)
                                        (void) write_line(out_fd, "FAILED %s", vh_error_message(err, r));
                                else
                                        (void) write_line(out_fd, "RUNNING");
                        } else if (streq(line, "CONT")) {
                                /* The source has sent everything, which is
                                 * not yet all here and loaded: 'cont' now
                                 * would only mark the VM to start after a
                                 * load that may still fail, and RUNNING
                                 * would be a guess. */
                                r = incoming_wait(q, name, false, err);
                                /* The mirror ended before the switch-over;
                                 * the export goes before the VM runs. */
                                if (r >= 0 && exported)
                                        r = vm_migrate_disk_export_stop(q, err);
                                if (r >= 0)
                                        r = qmp_execute(q, "cont", NULL, NULL, err);
                                if (r < 0)
                                        goto fail;
                                completed_cont = true;
                                break;
                        }
                        readable = false;
                        buffered = memchr(lr.buf, '\n', lr.len) != NULL;
                }
                if (completed_cont)
                        break;
                /* In post-copy the VM stays here whatever the source does. */
                if (beats && !keep && vh_clock_ms() - heard >= MIGRATE_SILENCE_MS) {
                        r = vh_error_set(err, -ETIMEDOUT, "VM %s: no word from the source for %u s (the link cut?)",
                                         name, MIGRATE_SILENCE_MS / 1000);
                        goto fail;
                }
                /* QEMU killed or failed the incoming stream: it is gone. */
                _cleanup_(json_value_freep) struct json_value *s = NULL;
                r = qmp_execute(q, "query-status", NULL, &s, err);
                /* A monitor slow to answer (a loaded machine, QEMU's main
                 * loop busy loading the stream) is not a dead QEMU; the
                 * source's heartbeat and stdin still bound this wait. */
                if (r == -ETIMEDOUT && st.pid > 0 && process_alive(st.pid))
                        continue;
                if (r < 0) {
                        char why[256];
                        snprintf(why, sizeof(why), "%s", vh_error_message(err, r));
                        vh_error_set(err, r, "VM %s: the destination QEMU is gone (%s)", name, why);
                        /* After the switch to post-copy: the guest is lost
                         * (the source has only the pages not yet pulled). */
                        if (keep)
                                (void) write_line(out_fd, "LOST the destination QEMU of VM %s died during post-copy",
                                                  name);
                        goto fail;
                }
        }
        if (completed_cont) {
                keep = true;
                (void) write_line(out_fd, "RUNNING");
        }
        r = 0;
fail:
        safe_close(listen_fd);
        safe_close(stream_fd);
        if (q && (exported || (nbd_tried && !keep)))
                (void) vm_migrate_disk_export_stop(q, NULL);
        q = qmp_free(q);
        if (sock)
                unlink(sock);
        if (nbd_sock)
                unlink(nbd_sock);
        if (!keep) {
                /* QEMU's own last word says more than a closed socket. */
                char why[300] = "";
                struct vm_paths lp = {};
                _cleanup_free_ char *log = NULL;
                size_t ln = 0;
                if (vm_paths_get(ctx, name, &lp, NULL) >= 0 && read_full_file(lp.qemu_log, 1u << 20, &log, &ln) >= 0) {
                        while (ln > 0 && (log[ln - 1] == '\n' || log[ln - 1] == '\r'))
                                log[--ln] = '\0';
                        const char *last = strrchr(log, '\n');
                        snprintf(why, sizeof(why), "%s", last ? last + 1 : log);
                }
                vm_paths_done(&lp);
                (void) write_line(out_fd, "FAILED %s%s%s", vh_error_message(err, r), why[0] ? "; QEMU: " : "", why);
                (void) vm_stop(ctx, name, 2000, NULL);
                /* Only a disk made here for this migration (never a base,
                 * never a shared disk). */
                if (copy)
                        vm_image_remove_own_disk(ctx, def);
                forget_vm(ctx, name);
        } else if (r < 0)
                /* Post-copy: the VM stays here, in whatever state it is. */
                (void) write_line(out_fd, "FAILED %s", vh_error_message(err, r));
        return r;
}

/* The migration status of 'q' into 'buf' ("none" when QEMU says none). */
static int incoming_mig_status(struct qmp_client *q, char *buf, size_t size, struct vh_error *err) {
        _cleanup_(json_value_freep) struct json_value *v = NULL;
        const char *st = NULL;
        int r = qmp_execute(q, "query-migrate", NULL, &v, err);
        if (r < 0)
                return r;
        (void) json_get_string(json_object_get(v, "status"), &st);
        snprintf(buf, size, "%s", st ? st : "none");
        return 0;
}

int vm_migrate_incoming_recover(const struct vh_context *ctx, const char *name,
                                const struct vm_migrate_incoming_options *o, int in_fd, int out_fd,
                                struct vh_error *err) {
        _cleanup_(vm_lock_releasep) struct vm_lock *lock = NULL;
        _cleanup_(qmp_freep) struct qmp_client *q = NULL;
        _cleanup_free_ char *sock = NULL;
        struct vm_paths p = {};
        struct vm_status vs;
        int listen_fd = -1;
        uint16_t port = 0;
        char st[48] = "";
        int r = vm_lock_take(ctx, name, "post-copy recovered here", VM_LOCK_TIMEOUT_MS, &lock, err);
        if (r < 0)
                goto say;
        r = vm_open_running(ctx, name, &p, &vs, err);
        if (r < 0)
                goto say;
        r = qmp_connect(p.qmp_watch_socket, MIGRATE_QMP_TIMEOUT_MS, &q, err);
        if (r >= 0)
                r = incoming_mig_status(q, st, sizeof(st), err);
        /* A stream that is gone without an error here (a cut link: the TCP
         * connection only went quiet) leaves QEMU waiting in
         * postcopy-active; migrate-recover needs postcopy-paused. */
        if (r >= 0 && streq(st, "postcopy-active")) {
                r = qmp_execute(q, "migrate-pause", NULL, NULL, err);
                uint64_t dl = vh_deadline_after(MIGRATE_QMP_TIMEOUT_MS);
                while (r >= 0 && streq(st, "postcopy-active") && vh_clock_ms() < dl) {
                        usleep(20000);
                        r = incoming_mig_status(q, st, sizeof(st), err);
                }
        }
        if (r >= 0 && !streq(st, "postcopy-paused"))
                r = vh_error_set(err, -EINVAL, "VM %s here is not in a paused post-copy migration (status %s): "
                                 "nothing to resume", name, st);
        if (r >= 0 && o->transport == VM_MIGRATE_TRANSPORT_SSH) {
                sock = strdup_printf("%s/migrate-in.sock", p.runtime_dir);
                r = sock ? listen_unix(sock, &listen_fd) : -ENOMEM;
                if (r < 0)
                        vh_error_set(err, r, "Cannot listen on %s: %s", sock ? sock : "", strerror(-r));
        } else if (r >= 0) {
                const char *a = o->listen_addr ? o->listen_addr : "0.0.0.0";
                r = listen_tcp(a, &port, &listen_fd);
                if (r < 0)
                        vh_error_set(err, r, "Cannot listen for the migration on %s: %s", a, strerror(-r));
        }
        vm_paths_done(&p);
        if (r >= 0) {
                struct json_writer w;
                json_writer_init(&w, false);
                json_object_begin(&w);
                json_kv_string(&w, "socket", sock);
                json_kv_uint(&w, "port", port);
                json_object_end(&w);
                int werr = 0;
                _cleanup_free_ char *js = json_writer_finish(&w, &werr);
                r = js ? write_line(out_fd, "READY %s", js) : -ENOMEM;
        }
        struct line_reader lr = { .fd = in_fd };
        char line[VM_MIGRATE_LINE_MAX];
        bool done = false;
        while (r >= 0 && !done) {
                struct pollfd pfd[2] = { { .fd = in_fd, .events = POLLIN }, { .fd = listen_fd, .events = POLLIN } };
                bool buffered = memchr(lr.buf, '\n', lr.len) != NULL;
                int n = poll(pfd, listen_fd >= 0 ? 2 : 1, buffered ? 0 : 200);
                if (n < 0 && errno != EINTR) {
                        r = vh_error_set(err, negative_errno(), "poll: %m");
                        break;
                }
                if (listen_fd >= 0 && n > 0 && (pfd[1].revents & POLLIN)) {
                        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
                        if (fd >= 0) {
                                listen_fd = safe_close(listen_fd);
                                if (sock)
                                        unlink(sock);
                                r = qmp_execute_fd(q, "getfd", "{\"fdname\":\"" MIGRATE_FD_NAME "\"}", fd, NULL, err);
                                safe_close(fd);
                                if (r >= 0)
                                        r = qmp_execute(q, "migrate-recover", "{\"uri\":\"fd:" MIGRATE_FD_NAME "\"}",
                                                        NULL, err);
                                if (r < 0)
                                        break;
                        }
                }
                bool readable = n > 0 && (pfd[0].revents & (POLLIN | POLLHUP | POLLERR));
                while (r >= 0 && (readable || buffered)) {
                        int k = line_read(&lr, line, sizeof(line), vh_deadline_after(1000));
                        if (k == -ETIMEDOUT)
                                break;
                        if (k <= 0 || streq(line, "ABORT")) {
                                r = vh_error_set(err, -EPIPE, "VM %s: the source went away while post-copy was "
                                                 "resumed; the VM stays here", name);
                                break;
                        }
                        if (streq(line, "STATUS"))
                                (void) incoming_status(q, out_fd, NULL);
                        else if (streq(line, "CONT")) {
                                r = incoming_wait(q, name, false, err);
                                _cleanup_(json_value_freep) struct json_value *sv = NULL;
                                const char *run = NULL;
                                if (r >= 0)
                                        r = qmp_execute(q, "query-status", NULL, &sv, err);
                                (void) json_get_string(json_object_get(sv, "status"), &run);
                                if (r >= 0 && (!run || !streq(run, "running")))
                                        r = qmp_execute(q, "cont", NULL, NULL, err);
                                done = r >= 0;
                                break;
                        }
                        readable = false;
                        buffered = memchr(lr.buf, '\n', lr.len) != NULL;
                }
                if (r < 0 || done)
                        break;
                _cleanup_(json_value_freep) struct json_value *sv = NULL;
                if ((r = qmp_execute(q, "query-status", NULL, &sv, err)) < 0) {
                        vh_error_set(err, r, "VM %s: the destination QEMU is gone", name);
                        (void) write_line(out_fd, "LOST the destination QEMU of VM %s died during post-copy", name);
                }
        }
        safe_close(listen_fd);
        if (sock)
                unlink(sock);
        if (done)
                return write_line(out_fd, "RUNNING");
say:
        (void) write_line(out_fd, "FAILED %s", vh_error_message(err, r));
        return r;
}

/* ---- the source ---- */

/* An ssh process forwarding a local unix socket to one on the far side. */
struct forward {
        int pid;                     /* 0 if none */
        char *socket;                /* the local end */
};

struct migration {
        const struct vh_context *ctx;
        const struct vm_migrate_options *opts;
        struct vm_migrate_result *res;
        const char *name;
        struct vm_def *def;
        struct vm_paths paths;
        struct qmp_client *q;
        bool was_running;
        struct host_ssh_pipe far;
        bool far_started;
        struct line_reader far_lr;
        struct forward fwd;          /* the migration stream's */
        struct forward nbd_fwd;      /* copy: the NBD connection's */
        enum vm_migrate_storage storage; /* resolved by the checks */
        struct vm_migrate_disk_top top;  /* copy: the disk's top node here */
        char *base;                  /* copy: the local base of the disk, NULL: none */
        char *remote_base;           /* copy: the destination's copy of it */
        struct vm_migrate_disk_mirror *mirror;
        uint64_t disk_t0;
        bool migrate_started;
        bool switchover;             /* migrate-continue sent: no cancel from here */
        bool postcopy_requested;     /* migrate-start-postcopy sent */
        /* migrate-continue sent after post-copy was asked: the destination
         * may run the guest from here on, so the source never resumes. */
        bool postcopy_split;
        bool dest_running;           /* the destination answered RUNNING to POSTCOPY */
        /* --resume: this QEMU was postcopy-paused and was told to resume;
         * until it is postcopy-active again (or the deadline) its
         * postcopy-paused and postcopy-recover are steps, not failures. */
        bool resuming;
        uint64_t resume_deadline;
        uint64_t last_alive;         /* the last heartbeat sent to the far side */
        uint64_t t0;
};

/* The heartbeat (MIGRATE_ALIVE_MS): called from every wait of the source
 * between READY and CONT. A failed write is not an error here: the
 * stream's or the session's own failure says more, and says it next. */
static void far_alive(struct migration *m) {
        uint64_t now = vh_clock_ms();
        if (!m->far_started || now < m->last_alive + MIGRATE_ALIVE_MS)
                return;
        m->last_alive = now;
        (void) host_ssh_pipe_write(&m->far, "ALIVE\n", 6);
}

/* The same, for the waits of the disk mirror (vm-migrate-disk.c), which
 * can outlast MIGRATE_SILENCE_MS while the mirror ends at the switch-over
 * (bounded by VM_MIGRATE_DISK_END_TIMEOUT_MS). */
static void far_alive_tick(void *userdata) {
        far_alive(userdata);
}

static int progress(struct migration *m, struct vm_migrate_progress *p) {
        far_alive(m);
        p->elapsed_ms = vh_clock_ms() - m->t0;
        m->res->last = *p;
        if (m->opts->progress && m->opts->progress(p, m->opts->userdata) != 0)
                return -ECANCELED;
        return 0;
}

static void forward_stop(struct forward *f) {
        if (f->pid > 0) {
                kill(f->pid, SIGTERM);
                int st;
                uint64_t dl = vh_deadline_after(2000);
                while (waitpid(f->pid, &st, WNOHANG) == 0 && vh_clock_ms() < dl)
                        usleep(20000);
                if (waitpid(f->pid, &st, WNOHANG) == 0) {
                        kill(f->pid, SIGKILL);
                        waitpid(f->pid, &st, 0);
                }
                f->pid = 0;
        }
        if (f->socket)
                unlink(f->socket);
}

static int connect_unix(const char *path) {
        struct sockaddr_un sa;
        if (unix_address(path, &sa) < 0)
                return -ENAMETOOLONG;
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return negative_errno();
        if (connect(fd, (struct sockaddr *) &sa, sizeof(sa)) < 0) {
                int r = negative_errno();
                close(fd);
                return r;
        }
        return fd;
}

static int connect_tcp(const char *host, uint16_t port) {
        char ps[8];
        snprintf(ps, sizeof(ps), "%u", port);
        struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *ai = NULL;
        if (getaddrinfo(host, ps, &hints, &ai) != 0 || !ai)
                return -EHOSTUNREACH;
        int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int r = fd < 0 ? negative_errno() : 0;
        if (r == 0 && connect(fd, ai->ai_addr, ai->ai_addrlen) < 0)
                r = negative_errno();
        freeaddrinfo(ai);
        if (r < 0) {
                safe_close(fd);
                return r;
        }
        return fd;
}

/* A socket of the far side through its own ssh connection (not the
 * shared master, so that it is one process to watch, and a forward that
 * fails is an error: ExitOnForwardFailure), at RUNTIME/'local_name'.
 * '*ret_fd' gets the first connection through it; NULL: that connection
 * only proves the forward works and is closed (the NBD server sees a
 * client that leaves before its handshake, which it allows). */
static int forward_start(struct migration *m, struct forward *f, const char *local_name, const char *what,
                         const char *remote_socket, int *ret_fd, struct vh_error *err) {
        f->socket = strdup_printf("%s/%s", m->paths.runtime_dir, local_name);
        if (!f->socket)
                return -ENOMEM;
        unlink(f->socket);
        char **argv = NULL;
        int r = host_ssh_forward_argv(m->ctx, m->opts->dest, f->socket, remote_socket, &argv, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *exe = find_executable(m->ctx, "ssh");
        if (!exe) {
                host_names_free(argv);
                return vh_error_set(err, -ENOENT, "ssh is not installed here (Debian: openssh-client)");
        }
        char *const *envp = environ;
        pid_t pid = fork();
        if (pid == 0) {
                /* Async-signal-safe only. Its own process group: a Ctrl-C
                 * at the terminal is vmhost's to handle, in order. */
                setpgid(0, 0);
                int null = open("/dev/null", O_RDWR | O_CLOEXEC);
                if (null >= 0)
                        dup2(null, STDIN_FILENO);
                execve(exe, argv, envp);
                _exit(127);
        }
        int e = errno;
        host_names_free(argv);
        if (pid < 0)
                return vh_error_set(err, -e, "Cannot start ssh: %s", strerror(e));
        f->pid = pid;
        uint64_t dl = vh_deadline_after(MIGRATE_FORWARD_TIMEOUT_MS);
        for (;;) {
                int st;
                if (waitpid(pid, &st, WNOHANG) == pid) {
                        f->pid = 0;
                        return vh_error_set(err, -ECOMM, "the ssh forward of the %s to host %s failed (exit %d)", what,
                                            m->opts->dest->name, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
                }
                int fd = file_exists(f->socket) ? connect_unix(f->socket) : -ENOENT;
                if (fd >= 0) {
                        /* Best effort: a smaller buffer only costs speed. */
                        int sz = MIGRATE_FORWARD_SNDBUF;
                        (void) setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof(sz));
                        if (ret_fd)
                                *ret_fd = fd;
                        else
                                close(fd);
                        return 0;
                }
                far_alive(m);
                if (vh_clock_ms() >= dl)
                        return vh_error_set(err, -ETIMEDOUT, "the ssh forward of the %s to host %s did not come up "
                                            "in %u s", what, m->opts->dest->name, MIGRATE_FORWARD_TIMEOUT_MS / 1000);
                usleep(20000);
        }
}

static const char *ssh_host_address(const struct host_def *def) {
        const char *at = strchr(def->ssh, '@');
        return at ? at + 1 : def->ssh;
}

/* The far side's next line that says something (READY, RUNNING, FAILED),
 * other lines (its stderr) kept as the reason when it says nothing. */
static int far_read(struct migration *m, char *line, size_t size, unsigned timeout_ms) {
        uint64_t dl = vh_deadline_after(timeout_ms);
        char other[512] = "";
        for (;;) {
                int r = line_read(&m->far_lr, line, size, dl);
                if (r <= 0) {
                        snprintf(line, size, "%s", other[0] ? other : r == 0 ? "the session ended" : "no answer");
                        return r == 0 ? -EPIPE : r;
                }
                if (startswith(line, "READY ") || streq(line, "RUNNING") || startswith(line, "FAILED ") ||
                    startswith(line, "STATUS ") || startswith(line, "LOST "))
                        return 0;
                snprintf(other, sizeof(other), "%s", line);
        }
}

static int qmp_query_migrate(struct migration *m, struct vm_migrate_progress *p, struct json_value **ret,
                             struct vh_error *err) {
        struct json_value *v = NULL;
        int r = qmp_execute(m->q, "query-migrate", NULL, &v, err);
        if (r < 0)
                return r;
        r = vm_migrate_progress_from_json(v, p);
        if (r < 0) {
                json_value_free(v);
                return vh_error_set(err, r, "query-migrate answered without a status");
        }
        if (ret)
                *ret = v;
        else
                json_value_free(v);
        return 0;
}

static int set_downtime(struct migration *m, unsigned ms, struct vh_error *err) {
        char args[96];
        snprintf(args, sizeof(args), "{\"downtime-limit\":%u}", ms);
        m->res->downtime_limit_ms = ms;
        if (m->res->n_downtime_steps < VM_MIGRATE_MAX_DOWNTIME_STEPS)
                m->res->downtime_steps_ms[m->res->n_downtime_steps++] = ms;
        return qmp_execute(m->q, "migrate-set-parameters", args, NULL, err);
}

/* Before the switch-over: the VM goes on running here, as it was. */
static void rollback(struct migration *m) {
        if (m->migrate_started) {
                (void) qmp_execute(m->q, "migrate_cancel", NULL, NULL, NULL);
                uint64_t dl = vh_deadline_after(5000);
                struct vm_migrate_progress p = {};
                while (vh_clock_ms() < dl && qmp_query_migrate(m, &p, NULL, NULL) == 0 &&
                       (streq(p.status, "cancelling") || streq(p.status, "active") || streq(p.status, "setup") ||
                        streq(p.status, "pre-switchover") || streq(p.status, "device")))
                        usleep(50000);
        }
        /* The mirror only read this disk: once it is gone (no job, no NBD
         * node) the source is as it was. */
        if (m->mirror)
                (void) vm_migrate_disk_mirror_abort(m->mirror, NULL);
        m->mirror = vm_migrate_disk_mirror_free(m->mirror);
        if (m->was_running && m->q) {
                _cleanup_(json_value_freep) struct json_value *s = NULL;
                const char *status = NULL;
                if (qmp_execute(m->q, "query-status", NULL, &s, NULL) == 0 &&
                    json_get_string(json_object_get(s, "status"), &status) == 0 && !streq(status, "running"))
                        (void) qmp_execute(m->q, "cont", NULL, NULL, NULL);
        }
        forward_stop(&m->fwd);
        forward_stop(&m->nbd_fwd);
        if (m->far_started) {
                (void) host_ssh_pipe_write(&m->far, "ABORT\n", 6);
                /* The far side removes its VM; its answer is not needed. */
                (void) host_ssh_pipe_finish(m->opts->dest, &m->far, 15000, VM_MIGRATE_REPLY_MAX, NULL, NULL);
                m->far_started = false;
        }
}

/* The backing file recorded in 'disk's header, resolved, or NULL. */
static int disk_backing(const char *disk, char **ret, struct vh_error *err) {
        struct vh_image_open_options oo = {
                .format = VH_IMAGE_FORMAT_PROBE,
                .flags = VH_IMAGE_OPEN_NO_BACKING | VH_IMAGE_OPEN_FORCE_SHARE,
        };
        _cleanup_(vh_image_freep) struct vh_image *img = NULL;
        int r = vh_image_open(disk, &oo, &img, err);
        if (r < 0)
                return r;
        struct vh_image_info *info = NULL;
        r = vh_image_get_info(img, &info, err);
        if (r < 0)
                return r;
        char *b = NULL;
        if (info->full_backing_filename && !(b = strdup(info->full_backing_filename)))
                r = -ENOMEM;
        vh_image_info_free(info);
        if (r >= 0)
                *ret = b;
        return r;
}

/* Copied storage, checked here: the disk's top node in QEMU, and its base
 * on the destination by content (push_find), which 'vm migrate' pushes
 * there first when it is missing. Touches nothing. */
static int copy_checks(struct migration *m, struct vh_error *err) {
        const struct vm_migrate_options *o = m->opts;
        struct vm_migrate_result *res = m->res;
        const struct vm_def *def = m->def;
        struct vh_error e = {};
        int r = vm_migrate_disk_find_top(m->q, NULL, &m->top, &e);
        if (r < 0) {
                vm_migrate_add_check(res, "disk", false, "cannot find the disk of VM %s in its QEMU: %s", m->name,
                          vh_error_message(&e, r));
                return 0;
        }
        char vs[32];
        format_size(m->top.virtual_size, vs, sizeof(vs));
        if (!m->top.has_backing) {
                vm_migrate_add_check(res, "base", true, "disk %s has no base: it is mirrored whole (%s) into a new empty disk "
                          "there", def->disk, vs);
                return 0;
        }
        r = disk_backing(def->disk, &m->base, &e);
        if (r < 0 || !m->base) {
                vm_migrate_add_check(res, "base", false, "cannot read the base of disk %s: %s", def->disk,
                          r < 0 ? vh_error_message(&e, r) : "QEMU sees one, its header names none");
                return 0;
        }
        r = push_find(m->ctx, o->dest, m->base, NULL, o->dry_run ? PUSH_READ_ONLY : 0, &m->remote_base, &e);
        if (r == -EEXIST)
                vm_migrate_add_check(res, "base", false, "host %s holds another image under the name of base %s (%s): remove "
                          "or rename it there, then run again (the base is pushed with 'vmhost img push')",
                          o->dest->name, m->base, vh_error_message(&e, r));
        else if (r < 0)
                vm_migrate_add_check(res, "base", false, "cannot look for base %s on host %s: %s", m->base, o->dest->name,
                          vh_error_message(&e, r));
        else if (m->remote_base)
                vm_migrate_add_check(res, "base", true, "base %s is on host %s as %s (same content); only the overlay (%s "
                          "virtual) is copied", m->base, o->dest->name, m->remote_base, vs);
        else
                vm_migrate_add_check(res, "base", true, "base %s is not on host %s: it is pushed there first ('vmhost img "
                          "push'), then only the overlay (%s virtual) is copied", m->base, o->dest->name, vs);
        (void) err;
        return 0;
}

static int run_checks(struct migration *m, struct vh_error *err) {
        const struct vm_migrate_options *o = m->opts;
        struct vm_migrate_result *res = m->res;
        const struct vm_def *def = m->def;

        m->storage = o->storage;
        struct host_status hs = {};
        int r = host_probe(m->ctx, o->dest, 0, &hs);
        if (r < 0) {
                vm_migrate_add_check(res, "reachable", false, "%s", hs.why[0] ? hs.why : strerror(-r));
                host_status_done(&hs);
                return 0;
        }
        vm_migrate_add_check(res, "reachable", true, "host %s answers, vmhost %s, %s free", o->dest->name, hs.version,
                  format_size(hs.memory_free, (char[32]) {}, 32));
        host_status_done(&hs);
        bool copy = o->storage == VM_MIGRATE_STORAGE_COPY;

        /* The token beside the disk, read there through ssh (not for copy:
         * there the destination makes a disk of its own). */
        _cleanup_free_ char *token_path = NULL, *disk_copy = NULL;
        char token[33] = "";
        uint64_t disk_size = 0;
        if (def->disk && !copy) {
                uint8_t rnd[16];
                if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
                        return vh_error_set(err, -EIO, "no random bytes for the shared-storage check");
                for (int i = 0; i < 16; i++)
                        snprintf(token + 2 * i, 3, "%02x", rnd[i]);
                disk_copy = strdup(def->disk);
                if (!disk_copy)
                        return -ENOMEM;
                token_path = strdup_printf("%s/.vmhost-migrate-%s", dirname(disk_copy), token);
                if (!token_path)
                        return -ENOMEM;
                r = write_file_atomic(token_path, token, strlen(token), 0644);
                if (r < 0) {
                        vm_migrate_add_check(res, "storage", false, "cannot write beside disk %s to prove it is shared (%s)",
                                  def->disk, strerror(-r));
                        token_path = mfree(token_path);
                }
        }
        /* Shared: the destination compares the size; copied: it needs
         * room for it (a qcow2 overlay's file is what it allocates). */
        struct stat sb;
        if (def->disk && stat(def->disk, &sb) == 0)
                disk_size = (uint64_t) sb.st_size;
        char cpu[256], qver[64] = "";
        vm_migrate_cpu_model_name(cpu, sizeof(cpu));
        const struct qmp_version *qv = qmp_get_version(m->q);
        if (qv)
                snprintf(qver, sizeof(qver), "%d.%d.%d", qv->major, qv->minor, qv->micro);
        char size_s[32];
        snprintf(size_s, sizeof(size_s), "%" PRIu64, disk_size);
        char *argv[] = { (char *) host_def_vmhost(o->dest), (char *) "vm", (char *) "migrate-check", (char *) m->name,
                         (char *) "--qemu-version", qver, (char *) "--cpu", cpu,
                         (char *) "--disk-size", size_s,
                         /* Filled below: --postcopy, then --copy or the token. */
                         NULL, NULL, NULL, NULL, NULL, NULL };
        size_t k = 10;
        if (o->postcopy)
                argv[k++] = (char *) "--postcopy";
        if (copy)
                argv[k++] = (char *) "--copy";
        else if (token_path) {
                argv[k++] = (char *) "--token";
                argv[k++] = token_path;
                argv[k++] = (char *) "--token-value";
                argv[k++] = token;
        }
        assert(k < ELEMENTSOF(argv));
        _cleanup_free_ char *text = vm_def_format(def), *out = NULL;
        if (!text)
                return -ENOMEM;
        struct host_ssh_pipe pipe = {};
        r = host_ssh_pipe_start(m->ctx, o->dest, argv, &pipe, err);
        if (r >= 0)
                r = host_ssh_pipe_write(&pipe, text, strlen(text));
        if (r >= 0)
                r = host_ssh_pipe_finish(o->dest, &pipe, MIGRATE_REPLY_TIMEOUT_MS, VM_MIGRATE_REPLY_MAX, &out, err);
        else
                host_ssh_pipe_abort(&pipe);
        if (token_path)
                unlink(token_path);
        if (r < 0)
                return r;
        if (r != 0 && !strchr(out ? out : "", '{'))
                return vh_error_set(err, -EPROTO, "host %s could not check VM %s: %.300s", o->dest->name, m->name,
                                    out ? strstrip(out) : "");
        size_t first = res->n_checks;
        r = vm_migrate_checks_parse(out, res, err);
        if (r < 0)
                return r;
        if (m->storage == VM_MIGRATE_STORAGE_AUTO) {
                /* auto: shared when the destination saw the token, else a copy. */
                m->storage = VM_MIGRATE_STORAGE_SHARED;
                for (size_t i = first; i < res->n_checks; i++) {
                        struct vm_migrate_check *c = &res->checks[i];
                        if (!streq(c->name, "storage") || c->ok || !def->disk)
                                continue;
                        m->storage = VM_MIGRATE_STORAGE_COPY;
                        c->ok = true;
                        snprintf(c->message, sizeof(c->message), "disk %s is not shared with host %s: it is "
                                 "copied (--storage auto)", def->disk, o->dest->name);
                }
        }
        if (m->storage == VM_MIGRATE_STORAGE_COPY && def->disk)
                return copy_checks(m, err);
        return 0;
}

/* Reads the destination's READY object. */
static int parse_ready(struct migration *m, const char *js, char **ret_socket, uint16_t *ret_port, char **ret_nbd,
                       uint16_t *ret_nbd_port, struct vh_error *err) {
        struct json_limits lim = { .max_depth = 3, .max_bytes = VM_MIGRATE_LINE_MAX, .max_string = 512,
                                   .max_elements = VM_MAX_FORWARDS + 8, .max_values = 64 };
        _cleanup_(json_value_freep) struct json_value *v = NULL;
        int r = json_parse(js, strlen(js), &lim, &v, err);
        if (r < 0)
                return vh_error_set(err, -EPROTO, "the destination's READY is not valid: %s", vh_error_message(err, r));
        const char *s = NULL, *vnc = NULL, *nbd = NULL;
        uint64_t port = 0, nbd_port = 0;
        (void) json_get_uint(json_object_get(v, "nbd_port"), &nbd_port);
        (void) json_get_string(json_object_get(v, "socket"), &s);
        (void) json_get_string(json_object_get(v, "nbd"), &nbd);
        (void) json_get_uint(json_object_get(v, "port"), &port);
        if (json_get_string(json_object_get(v, "vnc"), &vnc) == 0)
                snprintf(m->res->vnc, sizeof(m->res->vnc), "%s", vnc);
        const struct json_value *hp = json_object_get(v, "host_ports");
        m->res->n_forwards = MIN(m->def->n_forwards, (unsigned) json_array_len(hp));
        for (unsigned i = 0; i < m->res->n_forwards; i++) {
                uint64_t u = 0;
                if (json_get_uint(json_array_at(hp, i), &u) == 0 && u <= 65535)
                        m->res->host_ports[i] = (uint16_t) u;
                m->res->forwards[i] = m->def->forwards[i];
        }
        if (port > 65535 || nbd_port > 65535)
                return vh_error_set(err, -EPROTO, "the destination named port %" PRIu64,
                                    port > 65535 ? port : nbd_port);
        if (s && !(*ret_socket = strdup(s)))
                return -ENOMEM;
        if (nbd && !(*ret_nbd = strdup(nbd)))
                return -ENOMEM;
        *ret_port = (uint16_t) port;
        *ret_nbd_port = (uint16_t) nbd_port;
        return 0;
}

static int on_push_progress(size_t layer, size_t n_layers, uint64_t done, uint64_t total, uint64_t wire,
                            void *userdata) {
        struct migration *m = userdata;
        (void) layer;
        (void) n_layers;
        struct vm_migrate_progress p = { .phase = VM_MIGRATE_PHASE_PUSH, .transferred = done, .total = total,
                                         .remaining = total - MIN(done, total) };
        snprintf(p.status, sizeof(p.status), "push");
        p.percent = total ? 100.0 * (double) done / (double) total : 0;
        uint64_t el = vh_clock_ms() - m->t0;
        p.rate_bps = el ? wire * 1000 / el : 0;
        return progress(m, &p) < 0 ? 1 : 0;
}

/* Copied storage: the base goes to the destination first, found there
 * by content or sent, as 'vmhost img push' does. */
static int push_base(struct migration *m, struct vh_error *err) {
        struct push_options po = { .progress = on_push_progress, .userdata = m };
        struct push_result pr = {};
        int r = push_image(m->ctx, m->opts->dest, m->base, &po, &pr, err);
        if (r >= 0 && pr.n_layers > 0) {
                const struct push_layer_result *top = &pr.layers[pr.n_layers - 1];
                for (size_t i = 0; i < pr.n_layers; i++)
                        if (pr.layers[i].sent)
                                m->res->push_wire_bytes += pr.layers[i].stats.wire_bytes;
                m->remote_base = top->remote_path ? strdup(top->remote_path) : NULL;
                if (!m->remote_base)
                        r = -ENOMEM;
        } else if (r >= 0)
                r = -EPROTO;
        push_result_done(&pr);
        if (r < 0)
                return vh_error_set(err, r, "cannot push base %s of VM %s to host %s: %s", m->base, m->name,
                                    m->opts->dest->name, vh_error_message(err, r));
        return 0;
}

static int on_disk_progress(const struct vm_migrate_disk_progress *d, void *userdata) {
        struct migration *m = userdata;
        struct vm_migrate_progress p = m->res->last;
        p.phase = VM_MIGRATE_PHASE_DISK;
        snprintf(p.status, sizeof(p.status), "%s", d->ready ? "ready" : "mirror");
        p.transferred = d->done;
        p.total = d->total;
        p.remaining = d->total - MIN(d->done, d->total);
        if (m->res->last.phase != VM_MIGRATE_PHASE_DISK)
                p.percent = 0;
        if (d->total && 100.0 * (double) d->done / (double) d->total > p.percent)
                p.percent = 100.0 * (double) d->done / (double) d->total;
        uint64_t el = vh_clock_ms() - m->disk_t0;
        p.rate_bps = el ? d->done * 1000 / el : 0;
        p.pass = 0;
        p.dirty_rate = 0;
        p.expected_downtime_ms = 0;
        return progress(m, &p) < 0 ? 1 : 0;
}

/* Copied storage: the NBD export of the destination through its own ssh
 * forward (or, direct, TCP to 'nbd_port'), and the mirror of the top
 * layer into it until in sync. */
static int start_disk_copy(struct migration *m, const char *remote_nbd, uint16_t nbd_port, struct vh_error *err) {
        /* vmhost connects and hands QEMU the connection (QEMU runs as its
         * own user and may not reach ssh's socket). */
        int fd = -1, r;
        if (m->opts->transport == VM_MIGRATE_TRANSPORT_DIRECT) {
                fd = connect_tcp(ssh_host_address(m->opts->dest), nbd_port);
                if (fd < 0)
                        return vh_error_set(err, fd, "cannot connect to host %s port %u for the disk: %s",
                                            m->opts->dest->name, nbd_port, strerror(-fd));
        } else if ((r = forward_start(m, &m->nbd_fwd, "migrate-nbd-fwd.sock", "disk's NBD connection", remote_nbd,
                                      &fd, err)) < 0)
                return r;
        r = qmp_execute_fd(m->q, "getfd", "{\"fdname\":\"" MIGRATE_NBD_FD_NAME "\"}", fd, NULL, err);
        safe_close(fd);
        if (r < 0)
                return r;
        m->disk_t0 = vh_clock_ms();
        r = vm_migrate_disk_mirror_start(m->q, &m->top, "fd:" MIGRATE_NBD_FD_NAME, m->opts->bandwidth, &m->mirror,
                                         err);
        if (r < 0)
                return r;
        vm_migrate_disk_mirror_set_tick(m->mirror, far_alive_tick, m);
        /* The migration's own timeout bounds this phase too. */
        unsigned timeout_ms = UINT_MAX;
        if (m->opts->timeout_s) {
                uint64_t end = m->t0 + (uint64_t) m->opts->timeout_s * 1000, now = vh_clock_ms();
                timeout_ms = end > now ? (unsigned) MIN(end - now, (uint64_t) UINT_MAX) : 1;
        }
        r = vm_migrate_disk_mirror_wait_ready(m->mirror, timeout_ms, on_disk_progress, m, err);
        if (r == -ECANCELED)
                return vh_error_set(err, r, "cancelled");
        if (r < 0)
                /* The destination's own word first: its QEMU died, it failed. */
                return r;
        return 0;
}

/* The far side's session, until its READY. */
static int prepare_destination(struct migration *m, int *ret_stream, struct vh_error *err) {
        const struct vm_migrate_options *o = m->opts;
        const char *addr = ssh_host_address(o->dest);
        char size_s[32];
        snprintf(size_s, sizeof(size_s), "%" PRIu64, m->top.virtual_size);
        bool copy = m->storage == VM_MIGRATE_STORAGE_COPY && m->def->disk;
        char *argv[16] = { (char *) host_def_vmhost(o->dest), (char *) "vm", (char *) "migrate-incoming",
                           (char *) m->name, (char *) "--transport",
                           o->transport == VM_MIGRATE_TRANSPORT_SSH ? (char *) "ssh" : (char *) "direct",
                           (char *) "--listen", (char *) addr };
        size_t n = 8;
        if (o->postcopy)
                argv[n++] = (char *) "--postcopy";
        if (copy) {
                argv[n++] = (char *) "--copy-disk-size";
                argv[n++] = size_s;
        }
        if (m->remote_base) {
                argv[n++] = (char *) "--copy-base";
                argv[n++] = m->remote_base;
        }
        argv[n] = NULL;
        _cleanup_free_ char *text = vm_def_format(m->def);
        if (!text)
                return -ENOMEM;
        int r = host_ssh_pipe_start(m->ctx, o->dest, argv, &m->far, err);
        if (r < 0)
                return r;
        m->far_started = true;
        m->far_lr = (struct line_reader) { .fd = m->far.out_fd };
        char head[32];
        snprintf(head, sizeof(head), "%zu\n", strlen(text));
        r = host_ssh_pipe_write(&m->far, head, strlen(head));
        if (r >= 0)
                r = host_ssh_pipe_write(&m->far, text, strlen(text));
        /* The first heartbeat: from here on the far side may count our
         * silence (MIGRATE_ALIVE_MS). */
        if (r >= 0 && (r = host_ssh_pipe_write(&m->far, "ALIVE\n", 6)) >= 0)
                m->last_alive = vh_clock_ms();
        if (r < 0)
                return vh_error_set(err, r, "cannot send VM %s's definition to host %s: %s", m->name, o->dest->name,
                                    strerror(-r));
        char line[VM_MIGRATE_LINE_MAX];
        r = far_read(m, line, sizeof(line), MIGRATE_READY_TIMEOUT_MS);
        if (r < 0 || !startswith(line, "READY "))
                return vh_error_set(err, r < 0 ? r : -EIO, "host %s could not prepare VM %s: %s", o->dest->name,
                                    m->name, startswith(line, "FAILED ") ? line + 7 : line);
        _cleanup_free_ char *sock = NULL, *nbd = NULL;
        uint16_t port = 0, nbd_port = 0;
        r = parse_ready(m, line + 6, &sock, &port, &nbd, &nbd_port, err);
        if (r < 0)
                return r;
        if (copy) {
                if (o->transport == VM_MIGRATE_TRANSPORT_DIRECT ? nbd_port == 0 : !nbd || nbd[0] != '/')
                        return vh_error_set(err, -EPROTO, "host %s named no NBD %s for the disk", o->dest->name,
                                            o->transport == VM_MIGRATE_TRANSPORT_DIRECT ? "port" : "socket");
                r = start_disk_copy(m, nbd, nbd_port, err);
                if (r < 0)
                        return r;
        }
        if (o->transport == VM_MIGRATE_TRANSPORT_SSH) {
                if (!sock || sock[0] != '/')
                        return vh_error_set(err, -EPROTO, "host %s named no socket for the stream", o->dest->name);
                return forward_start(m, &m->fwd, "migrate-fwd.sock", "migration stream", sock, ret_stream, err);
        }
        if (port == 0)
                return vh_error_set(err, -EPROTO, "host %s named no port for the stream", o->dest->name);
        int fd = connect_tcp(addr, port);
        if (fd < 0)
                return vh_error_set(err, fd, "cannot connect to host %s port %u for the migration: %s", o->dest->name,
                                    port, strerror(-fd));
        *ret_stream = fd;
        return 0;
}

/* query-migrate until the end, raising the downtime allowed when
 * remaining memory stops shrinking. Returns 0 at 'completed'. */
static int watch_migration(struct migration *m, struct vh_error *err) {
        const struct vm_migrate_options *o = m->opts;
        unsigned max_dt = o->max_downtime_ms ? o->max_downtime_ms : VM_MIGRATE_MAX_DOWNTIME_DEFAULT_MS;
        uint64_t deadline = o->timeout_s ? m->t0 + (uint64_t) o->timeout_s * 1000 : UINT64_MAX;
        struct vm_migrate_progress p = { .phase = VM_MIGRATE_PHASE_MEMORY, .downtime_limit_ms = m->res->downtime_limit_ms };
        uint64_t best_remaining = UINT64_MAX, last_progress = 0;
        unsigned best_pass = 0, last_pass = 0;
        for (;;) {
                _cleanup_(json_value_freep) struct json_value *v = NULL;
                int r = qmp_query_migrate(m, &p, &v, err);
                if (r < 0)
                        return r;
                p.downtime_limit_ms = m->res->downtime_limit_ms;
                if (m->resuming && streq(p.status, "postcopy-active"))
                        m->resuming = false;
                if (m->resuming && (streq(p.status, "postcopy-paused") || streq(p.status, "postcopy-recover")) &&
                    vh_clock_ms() < m->resume_deadline) {
                        far_alive(m);
                        usleep(VM_MIGRATE_POLL_MS * 1000);
                        continue;
                }
                if (streq(p.status, "failed") || streq(p.status, "cancelled") ||
                    streq(p.status, "postcopy-paused") || streq(p.status, "postcopy-recover")) {
                        const char *why = NULL;
                        (void) json_get_string(json_object_get(v, "error-desc"), &why);
                        if (m->postcopy_split)
                                return vh_error_set(err, -EIO, "the post-copy migration of VM %s broke (QEMU here: "
                                                    "%s%s%.200s)", m->name, p.status, why ? ", " : "",
                                                    why ? why : "");
                        return vh_error_set(err, -EIO, "the migration of VM %s %s%s%s", m->name, p.status,
                                            why ? ": " : "", why ? why : "");
                }
                if (streq(p.status, "pre-switchover") && m->switchover) {
                        /* migrate-continue sent; QEMU has not moved on yet. */
                        far_alive(m);
                        usleep(VM_MIGRATE_POLL_MS * 1000);
                        continue;
                }
                if (streq(p.status, "pre-switchover")) {
                        /* The source is paused with nearly all memory sent:
                         * only now does the switch-over begin. */
                        p.phase = VM_MIGRATE_PHASE_SWITCHOVER;
                        if ((r = progress(m, &p)) < 0)
                                return vh_error_set(err, r, "cancelled");
                        /* The guest is paused: the mirror copies what is
                         * still dirty and ends without pivoting, so the
                         * destination's disk is complete before its memory. */
                        if (m->mirror) {
                                r = vm_migrate_disk_mirror_finish(m->mirror, err);
                                struct vm_migrate_disk_progress d = {};
                                if (vm_migrate_disk_mirror_progress(m->mirror, &d, NULL) == 0) {
                                        m->res->disk_transferred = d.done;
                                        m->res->disk_total = d.total;
                                }
                                if (r < 0)
                                        return r;
                        }
                        m->switchover = true;
                        /* From the continue on, a post-copy destination
                         * may run the guest: this side never resumes. */
                        m->postcopy_split = m->postcopy_requested;
                        r = qmp_execute(m->q, "migrate-continue", "{\"state\":\"pre-switchover\"}", NULL, err);
                        if (r < 0)
                                return r;
                        continue;
                }
                if (streq(p.status, "completed")) {
                        p.phase = VM_MIGRATE_PHASE_SWITCHOVER;
                        /* QEMU's figures can read 0 just as it completes. */
                        uint64_t dt = get_u64(v, "downtime"), tt = get_u64(v, "total-time");
                        for (int i = 0; i < 10 && (dt == 0 || tt == 0); i++) {
                                usleep(50000);
                                json_value_free(v);
                                v = NULL;
                                if (qmp_query_migrate(m, &p, &v, NULL) < 0)
                                        break;
                                dt = get_u64(v, "downtime");
                                tt = get_u64(v, "total-time");
                        }
                        m->res->downtime_ms = dt;
                        m->res->migration_ms = tt;
                        m->res->setup_ms = get_u64(v, "setup-time");
                        m->res->ram_transferred = p.transferred;
                        m->res->ram_total = p.total;
                        m->res->passes = p.pass;
                        m->res->last = p;
                        return 0;
                }
                if (streq(p.status, "postcopy-active")) {
                        p.phase = VM_MIGRATE_PHASE_POSTCOPY;
                        if (!m->res->postcopy) {
                                m->res->postcopy = true;
                                /* The device state is there: the destination
                                 * runs the guest and pulls what it lacks. */
                                snprintf(m->res->where, sizeof(m->res->where), "%s", o->dest->name);
                                (void) progress(m, &p);
                                char line[VM_MIGRATE_LINE_MAX] = "";
                                r = host_ssh_pipe_write(&m->far, "POSTCOPY\n", 9);
                                if (r >= 0)
                                        r = far_read(m, line, sizeof(line), MIGRATE_REPLY_TIMEOUT_MS);
                                m->dest_running = r >= 0 && streq(line, "RUNNING");
                                /* Not an error yet: the pages keep flowing,
                                 * and CONT at the end asks again. */
                                if (!m->dest_running)
                                        snprintf(m->res->warning, sizeof(m->res->warning),
                                                 "host %s did not resume VM %s at the switch to post-copy: %.300s",
                                                 o->dest->name, m->name, startswith(line, "FAILED ") ? line + 7 : line);
                                last_progress = vh_clock_ms();
                        } else if (vh_clock_ms() >= last_progress + VM_MIGRATE_PROGRESS_MS) {
                                last_progress = vh_clock_ms();
                                /* No cancel from here: nothing could take it back. */
                                (void) progress(m, &p);
                        }
                }
                if (!m->switchover) {
                        if (p.pass != last_pass) {
                                last_pass = p.pass;
                                if (p.remaining < best_remaining) {
                                        best_remaining = p.remaining;
                                        best_pass = p.pass;
                                }
                                unsigned next = vm_migrate_next_downtime(m->res->downtime_limit_ms, max_dt,
                                                                         p.pass - best_pass);
                                if (vm_migrate_want_postcopy(o->postcopy, m->postcopy_requested,
                                                             p.pass - best_pass)) {
                                        /* Instead of a longer pause: the
                                         * destination runs and pulls the rest. */
                                        if ((r = qmp_execute(m->q, "migrate-start-postcopy", NULL, NULL, err)) < 0)
                                                return r;
                                        m->postcopy_requested = true;
                                        m->res->postcopy_pass = p.pass;
                                } else if (!o->postcopy && next != m->res->downtime_limit_ms) {
                                        if ((r = set_downtime(m, next, err)) < 0)
                                                return r;
                                        best_pass = p.pass; /* give the new limit its passes */
                                }
                        }
                        if (vh_clock_ms() >= last_progress + VM_MIGRATE_PROGRESS_MS) {
                                last_progress = vh_clock_ms();
                                if ((r = progress(m, &p)) < 0)
                                        return vh_error_set(err, r, "cancelled");
                        }
                        if (vh_clock_ms() >= deadline) {
                                char a[32], b[32];
                                char c[32];
                                return vh_error_set(err, -ETIMEDOUT,
                                                    "the migration of VM %s did not converge in %u s: pass %u, %s "
                                                    "remaining, guest dirtying %s/s, sending %s/s, expected "
                                                    "downtime %" PRIu64 " ms over the %u ms allowed; raise "
                                                    "--max-downtime or --bandwidth%s",
                                                    m->name, o->timeout_s, p.pass,
                                                    format_size(p.remaining, a, sizeof(a)),
                                                    format_size(p.dirty_rate, b, sizeof(b)),
                                                    format_size(p.rate_bps, c, sizeof(c)), p.expected_downtime_ms,
                                                    m->res->downtime_limit_ms, o->postcopy ? "" : ", or use --postcopy");
                        }
                }
                far_alive(m);
                /* The far side ending early (its QEMU died, it aborted) shows
                 * as a failed stream soon; a FAILED line says why at once. */
                struct pollfd pfd = { .fd = m->far.out_fd, .events = POLLIN };
                if (!m->switchover && poll(&pfd, 1, 0) > 0) {
                        char line[VM_MIGRATE_LINE_MAX];
                        if (line_read(&m->far_lr, line, sizeof(line), vh_deadline_after(200)) == 1 &&
                            startswith(line, "FAILED "))
                                return vh_error_set(err, -EIO, "host %s: %s", o->dest->name, line + 7);
                }
                usleep(VM_MIGRATE_POLL_MS * 1000);
        }
}

/* How long the destination is asked what it has after post-copy broke:
 * its QEMU learns that the stream is gone a moment after this one. */
#define MIGRATE_PROBE_TIMEOUT_MS 8000

/* After post-copy broke: the destination's word on its QEMU, into
 * res->destination_state: its migration status (asked with "STATUS"
 * until it is no longer postcopy-active, or the time is up), "gone"
 * when it said LOST, "unreachable" when it said nothing. */
static void probe_destination(struct migration *m) {
        struct vm_migrate_result *res = m->res;
        snprintf(res->destination_state, sizeof(res->destination_state), "unreachable");
        if (!m->far_started)
                return;
        uint64_t dl = vh_deadline_after(MIGRATE_PROBE_TIMEOUT_MS);
        while (vh_clock_ms() < dl) {
                /* What it said already (a LOST while the stream broke) first. */
                char line[VM_MIGRATE_LINE_MAX] = "";
                int r = far_read(m, line, sizeof(line), 300);
                if (r == -ETIMEDOUT) {
                        if (host_ssh_pipe_write(&m->far, "STATUS\n", 7) < 0)
                                return;
                        r = far_read(m, line, sizeof(line), 1000);
                }
                if (r == -ETIMEDOUT)
                        continue;
                if (r < 0)
                        return;
                if (startswith(line, "LOST ")) {
                        snprintf(res->destination_state, sizeof(res->destination_state), "gone");
                        return;
                }
                char mig[32] = "";
                if (startswith(line, "STATUS ") && sscanf(line + 7, "%31s", mig) == 1) {
                        snprintf(res->destination_state, sizeof(res->destination_state), "%s", mig);
                        if (!streq(mig, "postcopy-active"))
                                return;
                        usleep(300 * 1000);
                }
        }
}

/* A failure after the switch to post-copy ('why' the error): nothing is
 * rolled back or resumed; says where the VM is, which host's definition
 * to keep and what to run, from the two QEMUs' states. */
static void postcopy_failed(struct migration *m) {
        struct vm_migrate_result *res = m->res;
        const char *n = m->name, *d = m->opts->dest->name;
        struct vm_migrate_progress q = {};
        if (qmp_query_migrate(m, &q, NULL, NULL) == 0)
                snprintf(res->source_state, sizeof(res->source_state), "%s", q.status);
        else
                snprintf(res->source_state, sizeof(res->source_state), "none");
        probe_destination(m);
        res->source_paused = true;
        res->migrated = false;
        /* The destination ran the guest last: its disk (its own overlay
         * when copied) has the newest writes, so its definition is kept. */
        snprintf(res->definition, sizeof(res->definition), "%s", d);
        const char *ds = res->destination_state;
        bool src_paused = streq(res->source_state, "postcopy-paused");
        if (streq(ds, "gone") || (!src_paused && !streq(ds, "unreachable"))) {
                bool dest_alive = !streq(ds, "gone");
                snprintf(res->outcome, sizeof(res->outcome), "lost");
                snprintf(res->where, sizeof(res->where), "none");
                /* A destination QEMU still waiting for pages that will
                 * never come is killed too before the cold boot. */
                char kill_there[VH_NAME_MAX * 2 + 48] = "";
                if (dest_alive)
                        snprintf(kill_there, sizeof(kill_there), "vmhost --host %s vm kill %s && ", d, n);
                snprintf(res->recover, sizeof(res->recover),
                         "vmhost vm kill %s && vmhost vm delete %s && %svmhost --host %s vm start %s", n, n,
                         kill_there, d, n);
                snprintf(res->warning, sizeof(res->warning),
                         "VM %s is lost: %s during post-copy, and the paused QEMU here (%s) holds an out-of-date "
                         "copy that must not be resumed. Host %s keeps the definition (its disk has the guest's "
                         "last writes); boot the VM again there from its disk: '%s'",
                         n, dest_alive ? "this QEMU's stream failed for good (no post-copy recovery)"
                                       : "the destination QEMU died", res->source_state, d, res->recover);
                return;
        }
        snprintf(res->where, sizeof(res->where), "%s", d);
        snprintf(res->recover, sizeof(res->recover), "vmhost vm migrate %s %s --resume", n, d);
        if (streq(ds, "unreachable")) {
                snprintf(res->outcome, sizeof(res->outcome), "unknown");
                snprintf(res->warning, sizeof(res->warning),
                         "post-copy of VM %s broke and host %s is unreachable: the VM is paused here (%s) and this "
                         "copy must not be resumed; if its QEMU on host %s lives it waits there for the rest of the "
                         "memory. Host %s keeps the definition. When host %s answers again, '%s' finishes the "
                         "migration; if its QEMU there is gone the VM is lost: 'vmhost vm kill %s && vmhost vm "
                         "delete %s' here, then 'vmhost --host %s vm start %s'",
                         n, d, res->source_state, d, d, d, res->recover, n, n, d, n);
                return;
        }
        snprintf(res->outcome, sizeof(res->outcome), "postcopy-paused");
        snprintf(res->warning, sizeof(res->warning),
                 "VM %s is paused on both hosts (here %s, host %s %s): host %s has its device state and the pages "
                 "it pulled, this host the rest, so neither copy may run alone and the paused QEMU here must not "
                 "be resumed. This is recoverable: '%s' sends the rest and finishes the migration; host %s keeps "
                 "the definition",
                 n, res->source_state, d, ds, d, res->recover, d);
}

/* After 'completed': the destination resumes, the source goes. */
static int finish(struct migration *m, struct vh_error *err) {
        const struct vm_migrate_options *o = m->opts;
        int r = host_ssh_pipe_write(&m->far, "CONT\n", 5);
        char line[VM_MIGRATE_LINE_MAX] = "";
        if (r >= 0)
                r = far_read(m, line, sizeof(line), MIGRATE_REPLY_TIMEOUT_MS);
        if (r >= 0 && streq(line, "RUNNING")) {
                /* Now the stream is no longer needed; its socket lives in
                 * the runtime directory that goes below. */
                forward_stop(&m->fwd);
                forward_stop(&m->nbd_fwd);
                (void) host_ssh_pipe_finish(o->dest, &m->far, 10000, VM_MIGRATE_REPLY_MAX, NULL, NULL);
                m->far_started = false;
                m->res->migrated = true;
                snprintf(m->res->where, sizeof(m->res->where), "%s", o->dest->name);
                /* The VM lives on one host: this QEMU, its taps, runtime
                 * files and definition go (never the shared disk). */
                struct vh_error e = {};
                if (vm_stop(m->ctx, m->name, 10000, &e) < 0)
                        snprintf(m->res->warning, sizeof(m->res->warning), "the source QEMU did not quit: %s",
                                 vh_error_message(&e, -EIO));
                /* Copied: the destination has its own disk now; this
                 * one's overlay goes with the definition if vmhost made it
                 * (in the VM's directory), never the base. */
                if (m->storage == VM_MIGRATE_STORAGE_COPY && m->def->disk) {
                        struct vm_paths vp = {};
                        bool own = vm_paths_get(m->ctx, m->name, &vp, NULL) >= 0 &&
                                   startswith(m->def->disk, vp.state_dir);
                        vm_paths_done(&vp);
                        if (own)
                                vm_image_remove_own_disk(m->ctx, m->def);
                        else if (!m->res->warning[0])
                                snprintf(m->res->warning, sizeof(m->res->warning),
                                         "disk %s is not in VM %s's directory and was left here; host %s has its own "
                                         "copy now", m->def->disk, m->name, o->dest->name);
                }
                forget_vm(m->ctx, m->name);
                return 0;
        }
        /* The destination said it failed (and removed its QEMU): the state
         * is still complete here, so the source resumes. Without an answer
         * nobody knows whether the destination runs: the source stays
         * paused rather than risk two running copies on one disk. */
        if (r >= 0 && startswith(line, "FAILED ") && m->postcopy_split) {
                (void) host_ssh_pipe_finish(o->dest, &m->far, 10000, VM_MIGRATE_REPLY_MAX, NULL, NULL);
                m->far_started = false;
                m->res->source_paused = true;
                snprintf(m->res->where, sizeof(m->res->where), "%s", o->dest->name);
                snprintf(m->res->warning, sizeof(m->res->warning),
                         "VM %s is on host %s, which has all of its memory but could not resume it: see "
                         "'vmhost --host %s vm status %s'; the source QEMU here stays paused and must not be resumed "
                         "(post-copy)", m->name, o->dest->name, o->dest->name, m->name);
                return vh_error_set(err, -EIO, "host %s could not resume VM %s after post-copy (%s)", o->dest->name,
                                    m->name, line + 7);
        }
        if (r >= 0 && startswith(line, "FAILED ")) {
                (void) qmp_execute(m->q, "cont", NULL, NULL, NULL);
                (void) host_ssh_pipe_finish(o->dest, &m->far, 10000, VM_MIGRATE_REPLY_MAX, NULL, NULL);
                m->far_started = false;
                return vh_error_set(err, -EIO, "host %s could not resume VM %s (%s); it runs here again",
                                    o->dest->name, m->name, line + 7);
        }
        host_ssh_pipe_abort(&m->far);
        m->far_started = false;
        m->res->source_paused = true;
        snprintf(m->res->warning, sizeof(m->res->warning),
                 "VM %s is paused here and its state is on host %s, which did not confirm it resumed it: check "
                 "'vmhost --host %s vm status %s'; if it does not run there, 'vmhost vm qmp %s "
                 "'{\"execute\":\"cont\"}'' resumes it here",
                 m->name, o->dest->name, o->dest->name, m->name, m->name);
        return vh_error_set(err, -EIO, "no confirmation from host %s after the switch-over: %s", o->dest->name,
                            line);
}

/* --resume: a post-copy migration that broke (this QEMU postcopy-paused)
 * gets a new stream: the destination's QEMU takes it with migrate-recover
 * ('vm migrate-incoming --recover'), this one sends the rest (migrate
 * with resume), then the end is a migration's (finish). */
static int resume_migration(struct migration *m, struct vh_error *err) {
        const struct vm_migrate_options *o = m->opts;
        struct vm_migrate_progress p = { .phase = VM_MIGRATE_PHASE_PREPARE };
        int r = qmp_query_migrate(m, &p, NULL, err);
        if (r < 0)
                return r;
        if (!streq(p.status, "postcopy-paused"))
                return vh_error_set(err, -EINVAL, "VM %s has no broken post-copy migration here to resume (its "
                                    "migration status is %s)", m->name, p.status);
        /* From here on this side is as a failed post-copy left it. */
        m->switchover = m->postcopy_requested = m->postcopy_split = true;
        m->migrate_started = true;
        m->res->postcopy = true;
        snprintf(m->res->where, sizeof(m->res->where), "%s", o->dest->name);
        if ((r = progress(m, &p)) < 0)
                return vh_error_set(err, r, "cancelled");
        const char *addr = ssh_host_address(o->dest);
        char *argv[] = { (char *) host_def_vmhost(o->dest), (char *) "vm", (char *) "migrate-incoming",
                         (char *) m->name, (char *) "--recover", (char *) "--transport",
                         o->transport == VM_MIGRATE_TRANSPORT_SSH ? (char *) "ssh" : (char *) "direct",
                         (char *) "--listen", (char *) addr, NULL };
        r = host_ssh_pipe_start(m->ctx, o->dest, argv, &m->far, err);
        if (r < 0)
                return r;
        m->far_started = true;
        m->far_lr = (struct line_reader) { .fd = m->far.out_fd };
        if ((r = host_ssh_pipe_write(&m->far, "ALIVE\n", 6)) >= 0)
                m->last_alive = vh_clock_ms();
        char line[VM_MIGRATE_LINE_MAX] = "";
        if (r >= 0)
                r = far_read(m, line, sizeof(line), MIGRATE_READY_TIMEOUT_MS);
        if (r < 0 || !startswith(line, "READY "))
                return vh_error_set(err, r < 0 ? r : -EIO, "host %s cannot resume the post-copy of VM %s: %s",
                                    o->dest->name, m->name, startswith(line, "FAILED ") ? line + 7 : line);
        _cleanup_free_ char *sock = NULL, *nbd = NULL;
        uint16_t port = 0, nbd_port = 0;
        r = parse_ready(m, line + 6, &sock, &port, &nbd, &nbd_port, err);
        if (r < 0)
                return r;
        int fd = -1;
        if (o->transport == VM_MIGRATE_TRANSPORT_SSH) {
                if (!sock || sock[0] != '/')
                        return vh_error_set(err, -EPROTO, "host %s named no socket for the stream", o->dest->name);
                /* A forward of the first run may still have its socket. */
                forward_stop(&m->fwd);
                r = forward_start(m, &m->fwd, "migrate-fwd.sock", "migration stream", sock, &fd, err);
                if (r < 0)
                        return r;
        } else {
                fd = port ? connect_tcp(addr, port) : -EPROTO;
                if (fd < 0)
                        return vh_error_set(err, fd, "cannot connect to host %s port %u for the migration: %s",
                                            o->dest->name, port, strerror(-fd));
        }
        r = qmp_execute_fd(m->q, "getfd", "{\"fdname\":\"" MIGRATE_FD_NAME "\"}", fd, NULL, err);
        safe_close(fd);
        if (r >= 0)
                r = qmp_execute(m->q, "migrate", "{\"uri\":\"fd:" MIGRATE_FD_NAME "\",\"resume\":true}", NULL, err);
        if (r < 0)
                return r;
        m->resuming = true;
        m->resume_deadline = vh_deadline_after(MIGRATE_REPLY_TIMEOUT_MS);
        r = watch_migration(m, err);
        if (r < 0)
                return r;
        /* Which disk the first run copied is not known here: a disk in the
         * VM's directory is left rather than risk removing a shared one. */
        struct vm_paths vp = {};
        if (m->def->disk && vm_paths_get(m->ctx, m->name, &vp, NULL) >= 0 && startswith(m->def->disk, vp.state_dir))
                snprintf(m->res->warning, sizeof(m->res->warning),
                         "disk %s was left here (after --resume vmhost cannot tell a copied disk from a shared one): "
                         "remove it when host %s has its own copy", m->def->disk, o->dest->name);
        vm_paths_done(&vp);
        return finish(m, err);
}

int vm_migrate(const struct vh_context *ctx, const struct vm_migrate_options *opts, struct vm_migrate_result *ret,
               struct vh_error *err) {
        struct vm_migrate_result *res = ret;
        *res = (struct vm_migrate_result) { .checks_ok = false };
        snprintf(res->where, sizeof(res->where), "%s", HOST_LOCAL);
        struct migration m = { .ctx = ctx, .opts = opts, .res = res, .name = opts->name, .t0 = vh_clock_ms() };
        _cleanup_(vm_lock_releasep) struct vm_lock *lock = NULL;
        int r = vm_lock_take(ctx, opts->name, "migrated", VM_LOCK_TIMEOUT_MS, &lock, err);
        if (r < 0)
                return r;
        struct vm_status st;
        r = vm_open_running(ctx, opts->name, &m.paths, &st, err);
        if (r < 0)
                return r;
        r = vm_load(ctx, opts->name, &m.def, err);
        if (r < 0)
                goto out;
        /* MACs travel in the definition: one derived at start is written out. */
        for (unsigned i = 0; i < m.def->n_nics; i++)
                if (!m.def->nics[i].mac[0] && (r = vm_derive_mac(ctx, m.def->id, i, m.def->nics[i].mac)) < 0)
                        goto out;
        r = qmp_connect(m.paths.qmp_watch_socket, MIGRATE_QMP_TIMEOUT_MS, &m.q, err);
        if (r < 0)
                goto out;
        {
                _cleanup_(json_value_freep) struct json_value *s = NULL;
                const char *status = NULL;
                r = qmp_execute(m.q, "query-status", NULL, &s, err);
                if (r < 0)
                        goto out;
                m.was_running = json_get_string(json_object_get(s, "status"), &status) == 0 && streq(status, "running");
        }

        struct vm_migrate_progress p = { .phase = VM_MIGRATE_PHASE_CHECKS };
        if (opts->resume) {
                r = resume_migration(&m, err);
                if (r < 0 && m.postcopy_split)
                        postcopy_failed(&m);
                else if (r < 0)
                        snprintf(res->outcome, sizeof(res->outcome), "unchanged");
                if (r >= 0) {
                        p = res->last;
                        p.phase = VM_MIGRATE_PHASE_DONE;
                        (void) progress(&m, &p);
                }
                goto out;
        }
        if ((r = progress(&m, &p)) < 0) {
                vh_error_set(err, r, "cancelled");
                goto out;
        }
        r = run_checks(&m, err);
        res->storage = m.storage;
        if (r < 0)
                goto out;
        size_t failed = 0;
        for (size_t i = 0; i < res->n_checks; i++)
                failed += !res->checks[i].ok;
        res->checks_ok = failed == 0;
        if (failed) {
                r = vh_error_set(err, -EINVAL, "%zu check%s failed: VM %s stays on this host", failed,
                                 failed == 1 ? "" : "s", opts->name);
                goto out;
        }
        if (opts->dry_run)
                goto out;

        if (m.storage == VM_MIGRATE_STORAGE_COPY && m.base && !m.remote_base) {
                p.phase = VM_MIGRATE_PHASE_PUSH;
                if ((r = progress(&m, &p)) < 0) {
                        vh_error_set(err, r, "cancelled");
                        goto out;
                }
                r = push_base(&m, err);
                if (r < 0)
                        goto out;
        }
        p.phase = VM_MIGRATE_PHASE_PREPARE;
        if ((r = progress(&m, &p)) < 0) {
                vh_error_set(err, r, "cancelled");
                goto out;
        }
        int stream = -1;
        r = prepare_destination(&m, &stream, err);
        if (r >= 0) {
                /* Every capability a migration uses is set either way: a
                 * QEMU that arrived here by post-copy still has
                 * postcopy-ram on, and a stream with post-copy commands
                 * to a destination without it fails to load. */
                char args[320];
                snprintf(args, sizeof(args),
                         "{\"capabilities\":[{\"capability\":\"events\",\"state\":true},"
                         "{\"capability\":\"pause-before-switchover\",\"state\":true},"
                         "{\"capability\":\"auto-converge\",\"state\":true},"
                         "{\"capability\":\"postcopy-ram\",\"state\":%s}]}",
                         opts->postcopy ? "true" : "false");
                r = qmp_execute(m.q, "migrate-set-capabilities", args, NULL, err);
                unsigned max_dt = opts->max_downtime_ms ? opts->max_downtime_ms : VM_MIGRATE_MAX_DOWNTIME_DEFAULT_MS;
                if (r >= 0) {
                        snprintf(args, sizeof(args), "{\"max-bandwidth\":%" PRIu64 "}",
                                 opts->bandwidth ? opts->bandwidth : (uint64_t) VM_MIGRATE_BANDWIDTH_DEFAULT);
                        r = qmp_execute(m.q, "migrate-set-parameters", args, NULL, err);
                }
                if (r >= 0 && opts->postcopy) {
                        snprintf(args, sizeof(args), "{\"max-postcopy-bandwidth\":%" PRIu64 "}",
                                 opts->postcopy_bandwidth);
                        r = qmp_execute(m.q, "migrate-set-parameters", args, NULL, err);
                }
                if (r >= 0)
                        r = set_downtime(&m, MIN(VM_MIGRATE_DOWNTIME_START_MS, max_dt), err);
                if (r >= 0)
                        r = qmp_execute_fd(m.q, "getfd", "{\"fdname\":\"" MIGRATE_FD_NAME "\"}", stream, NULL, err);
                safe_close(stream);
                if (r >= 0) {
                        m.migrate_started = true;
                        r = qmp_execute(m.q, "migrate", "{\"uri\":\"fd:" MIGRATE_FD_NAME "\"}", NULL, err);
                }
        }
        if (r >= 0)
                r = watch_migration(&m, err);
        if (r < 0 && m.postcopy_split) {
                /* The guest state is split between the hosts: nothing here
                 * may run it again, and the destination keeps what it has. */
                postcopy_failed(&m);
                goto out;
        }
        if (r < 0 && !m.switchover) {
                rollback(&m);
                goto out;
        }
        if (r < 0) {
                /* Failed during the switch-over: did the destination get it? */
                struct vm_migrate_progress q = {};
                if (qmp_query_migrate(&m, &q, NULL, NULL) == 0 && !streq(q.status, "completed")) {
                        m.switchover = false;
                        rollback(&m);
                        goto out;
                }
        }
        /* The forward stays until the destination says it has loaded the
         * state and runs: the source's 'completed' means only that all of
         * it was written into the forward, and ssh may still hold some. */
        r = finish(&m, err);
        if (r >= 0) {
                p = res->last;
                p.phase = VM_MIGRATE_PHASE_DONE;
                (void) progress(&m, &p);
        }
out:
        if (!res->outcome[0])
                snprintf(res->outcome, sizeof(res->outcome), "%s",
                         res->migrated ? "migrated" : res->source_paused ? "unknown" : "stayed");
        m.mirror = vm_migrate_disk_mirror_free(m.mirror);
        if (m.far_started)
                host_ssh_pipe_abort(&m.far);
        forward_stop(&m.fwd);
        forward_stop(&m.nbd_fwd);
        free(m.fwd.socket);
        free(m.nbd_fwd.socket);
        free(m.base);
        free(m.remote_base);
        m.q = qmp_free(m.q);
        res->total_ms = vh_clock_ms() - m.t0;
        vm_def_free(m.def);
        vm_paths_done(&m.paths);
        return r;
}
