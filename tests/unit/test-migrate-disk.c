/* tests/unit/test-migrate-disk.c: the disk-copy engine of a copied-storage
 * migration (vm/vm-migrate-disk.h) between two real QEMUs on this machine:
 * a source with a qcow2 overlay over a base, the -blockdev node names and
 * the device vmhost's command line gives (vm-cmdline.c: disk0-fileN,
 * disk0-layerN, virtio-blk-pci id disk0), and a destination started for
 * incoming with its own empty overlay over the same base. No guest OS:
 * the firmware runs and finds nothing to boot; the guest's writes are
 * made through the disk device's backend with HMP's qemu-io. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/json.h"
#include "base/macro.h"
#include "base/poll.h"
#include "base/process.h"
#include "qemu-fixture.h"
#include "test.h"
#include "vm/vm-migrate-disk.h"

#define MIB (1024u * 1024u)
#define DISK_SIZE "64M"
#define RUN_MS 60000
#define WAIT_MS 60000
/* The fault tests' overlay data and mirror speed: more than QEMU's mirror
 * buffer (16 MiB), which it copies in one go before its rate limit waits,
 * so that the job is still copying, and not yet ready, for seconds. */
#define FAULT_MIB 48
#define FAULT_SPEED (8 * MIB)

struct side {
        pid_t pid;
        char qmp[256];
        struct qmp_client *q;
};

static bool run(char *const argv[]) {
        struct vh_error err = {};
        _cleanup_free_ char *out = NULL;
        int r = process_run(test_ctx(), argv, RUN_MS, 1 << 20, &out, &err);
        if (r != 0)
                test_fail(__FILE__, __LINE__, "%s exited with %d: %s %s", argv[0], r, vh_error_message(&err, r),
                          out ? out : "");
        return r == 0;
}

static void path_in_tmp(char *buf, size_t size, const char *name) {
        snprintf(buf, size, "%s/%s", test_tmpdir(), name);
}

/* base.qcow2 with 16 MiB of data, and 'overlay' (if not NULL) on it. */
static bool make_images(const char *overlay_name, const char *overlay2_name) {
        char base[256], ovl[256], io[128];
        path_in_tmp(base, sizeof(base), "base.qcow2");
        if (access(base, F_OK) < 0) {
                char *mk[] = { "qemu-img", "create", "-q", "-f", "qcow2", base, DISK_SIZE, NULL };
                snprintf(io, sizeof(io), "write -P 0x11 0 16M");
                char *w[] = { "qemu-io", "-f", "qcow2", "-c", io, base, NULL };
                if (!run(mk) || !run(w))
                        return false;
        }
        const char *names[] = { overlay_name, overlay2_name };
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                if (!names[i])
                        continue;
                path_in_tmp(ovl, sizeof(ovl), names[i]);
                char *mk[] = { "qemu-img", "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", ovl, NULL };
                if (!run(mk))
                        return false;
        }
        return true;
}

/* QEMU with the disk 'overlay' (over base.qcow2; NULL: only a standalone
 * qcow2 'standalone'), paused; 'incoming' adds -incoming defer. */
static bool side_start(struct side *s, const char *tag, const char *overlay, const char *standalone, bool incoming) {
        *s = (struct side) { .pid = -1 };
        char base[256], ovl[256], log[300], qmp_opt[300];
        char bd[4][600];
        path_in_tmp(base, sizeof(base), "base.qcow2");
        path_in_tmp(ovl, sizeof(ovl), overlay ? overlay : standalone);
        snprintf(s->qmp, sizeof(s->qmp), "%s/%s-qmp.sock", test_tmpdir(), tag);
        snprintf(log, sizeof(log), "%s/%s-qemu.log", test_tmpdir(), tag);
        snprintf(qmp_opt, sizeof(qmp_opt), "unix:%s,server=on,wait=off", s->qmp);
        int n = 0;
        if (overlay) {
                snprintf(bd[n++], sizeof(bd[0]),
                         "{\"driver\":\"file\",\"filename\":\"%s\",\"node-name\":\"disk0-file1\",\"read-only\":true}",
                         base);
                snprintf(bd[n++], sizeof(bd[0]),
                         "{\"driver\":\"qcow2\",\"file\":\"disk0-file1\",\"node-name\":\"disk0-layer1\","
                         "\"read-only\":true,\"backing\":null}");
        }
        snprintf(bd[n++], sizeof(bd[0]),
                 "{\"driver\":\"file\",\"filename\":\"%s\",\"node-name\":\"disk0-file0\",\"discard\":\"unmap\"}", ovl);
        snprintf(bd[n++], sizeof(bd[0]),
                 "{\"driver\":\"qcow2\",\"file\":\"disk0-file0\",\"node-name\":\"disk0-layer0\",\"discard\":\"unmap\","
                 "\"backing\":%s}",
                 overlay ? "\"disk0-layer1\"" : "null");
        char *argv[32];
        int argc = 0;
        argv[argc++] = (char *) TEST_QEMU_BINARY;
        argv[argc++] = (char *) "-accel";
        argv[argc++] = (char *) "tcg";
        argv[argc++] = (char *) "-M";
        argv[argc++] = (char *) "pc";
        argv[argc++] = (char *) "-m";
        argv[argc++] = (char *) "64";
        argv[argc++] = (char *) "-nodefaults";
        argv[argc++] = (char *) "-S";
        argv[argc++] = (char *) "-display";
        argv[argc++] = (char *) "none";
        argv[argc++] = (char *) "-qmp";
        argv[argc++] = qmp_opt;
        for (int i = 0; i < n; i++) {
                argv[argc++] = (char *) "-blockdev";
                argv[argc++] = bd[i];
        }
        argv[argc++] = (char *) "-device";
        argv[argc++] = (char *) "virtio-blk-pci,drive=disk0-layer0,id=disk0,write-cache=on";
        if (incoming) {
                argv[argc++] = (char *) "-incoming";
                argv[argc++] = (char *) "defer";
        }
        argv[argc] = NULL;

        pid_t pid = test_qemu_spawn(argv, log);
        if (pid < 0)
                return false;
        s->pid = pid;
        struct vh_error err = {};
        int r = test_qmp_connect_retry(s->qmp, &s->q, &err);
        if (r < 0) {
                test_fail(__FILE__, __LINE__, "QMP of %s: %s", tag, vh_error_message(&err, r));
                return false;
        }
        return true;
}

static void side_kill(struct side *s) {
        s->q = qmp_free(s->q);
        if (s->pid > 0) {
                kill(s->pid, SIGKILL);
                waitpid(s->pid, NULL, 0);
                s->pid = -1;
        }
}

/* "quit" and wait for the exit, so that QEMU's qcow2 caches are on disk. */
static void side_quit(struct side *s) {
        if (s->q && qmp_execute(s->q, "quit", NULL, NULL, NULL) >= 0 && s->pid > 0) {
                uint64_t deadline = vh_deadline_after(WAIT_MS);
                while (vh_clock_ms() < deadline && waitpid(s->pid, NULL, WNOHANG) == 0)
                        usleep(10 * 1000);
                if (waitpid(s->pid, NULL, WNOHANG) < 0)
                        s->pid = -1;
        }
        side_kill(s);
}

static bool qexec(struct side *s, const char *cmd, const char *args) {
        struct vh_error err = {};
        int r = qmp_execute(s->q, cmd, args, NULL, &err);
        if (r < 0)
                test_fail(__FILE__, __LINE__, "%s: %s", cmd, vh_error_message(&err, r));
        return r >= 0;
}

/* A write through the disk device's backend, as the guest's would go.
 * HMP's qemu-io prints its result on QEMU's stdout, not in the reply, so
 * only a refused command shows here; what was written is checked on the
 * image (image_has). */
static bool qemu_io(struct side *s, const char *io) {
        char line[256];
        snprintf(line, sizeof(line), "qemu-io -d /machine/peripheral/disk0/virtio-backend \"%s\"", io);
        struct vh_error err = {};
        _cleanup_free_ char *out = NULL;
        int r = qmp_human_command(s->q, line, &out, &err);
        if (r < 0 || !isempty(out)) {
                test_fail(__FILE__, __LINE__, "%s: %s", line, r < 0 ? vh_error_message(&err, r) : out);
                return false;
        }
        return true;
}

/* Whether the image 'name' reads 'pattern' over MiB [off, off+len), read
 * beside a QEMU that may hold it (-U) after that QEMU flushed ('s', may be
 * NULL when it is gone). */
static bool image_has(struct side *s, const char *name, unsigned pattern, unsigned off_mib, unsigned len_mib) {
        if (s && !qemu_io(s, "flush"))
                return false;
        char path[256], io[128];
        path_in_tmp(path, sizeof(path), name);
        snprintf(io, sizeof(io), "read -P 0x%x %uM %uM", pattern, off_mib, len_mib);
        char *argv[] = { "qemu-io", "-U", "-r", "-f", "qcow2", "-c", io, path, NULL };
        struct vh_error err = {};
        _cleanup_free_ char *out = NULL;
        int r = process_run(test_ctx(), argv, RUN_MS, 1 << 20, &out, &err);
        bool ok = r == 0 && out && strstr(out, "read ") && !strstr(out, "failed");
        if (!ok)
                test_fail(__FILE__, __LINE__, "%s on %s: %d %s", io, name, r, out ? out : vh_error_message(&err, r));
        return ok;
}

static char *status_of(struct side *s) {
        _cleanup_(json_value_freep) struct json_value *v = NULL;
        const char *st = NULL;
        if (qmp_execute(s->q, "query-status", NULL, &v, NULL) < 0 ||
            json_get_string(json_object_get(v, "status"), &st) < 0)
                return strdup("?");
        return strdup(st);
}

/* The node names of the block graph, sorted, as one string. */
static char *graph_of(struct side *s) {
        _cleanup_(json_value_freep) struct json_value *v = NULL;
        if (qmp_execute(s->q, "query-named-block-nodes", "{\"flat\":true}", &v, NULL) < 0)
                return strdup("?");
        const char *names[64];
        size_t n = 0;
        for (size_t i = 0; i < json_array_len(v) && n < ELEMENTSOF(names); i++)
                if (json_get_string(json_object_get(json_array_at(v, i), "node-name"), &names[n]) >= 0)
                        n++;
        for (size_t i = 1; i < n; i++)
                for (size_t j = i; j > 0 && strcmp(names[j - 1], names[j]) > 0; j--) {
                        const char *t = names[j];
                        names[j] = names[j - 1];
                        names[j - 1] = t;
                }
        char buf[2048] = "";
        for (size_t i = 0; i < n; i++) {
                strncat(buf, names[i], sizeof(buf) - strlen(buf) - 2);
                strncat(buf, " ", sizeof(buf) - strlen(buf) - 1);
        }
        return strdup(buf);
}

static size_t jobs_of(struct side *s) {
        _cleanup_(json_value_freep) struct json_value *v = NULL;
        if (qmp_execute(s->q, "query-block-jobs", NULL, &v, NULL) < 0)
                return 999;
        return json_array_len(v);
}

/* Bytes the overlay itself holds (qemu-img map: depth 0, data). */
static uint64_t overlay_allocated(const char *overlay) {
        char ovl[256];
        path_in_tmp(ovl, sizeof(ovl), overlay);
        char *argv[] = { "qemu-img", "map", "--output=json", "-f", "qcow2", ovl, NULL };
        struct vh_error err = {};
        _cleanup_free_ char *out = NULL;
        if (process_run(test_ctx(), argv, RUN_MS, 1 << 20, &out, &err) != 0)
                return 0;
        _cleanup_(json_value_freep) struct json_value *v = NULL;
        if (json_parse(out, strlen(out), NULL, &v, &err) < 0)
                return 0;
        uint64_t sum = 0;
        for (size_t i = 0; i < json_array_len(v); i++) {
                const struct json_value *e = json_array_at(v, i);
                int64_t depth = -1;
                bool data = false;
                uint64_t len = 0;
                (void) json_get_int(json_object_get(e, "depth"), &depth);
                (void) json_get_bool(json_object_get(e, "data"), &data);
                (void) json_get_uint(json_object_get(e, "length"), &len);
                if (depth == 0 && data)
                        sum += len;
        }
        return sum;
}

static const char *migration_status(struct side *s, char *buf, size_t size) {
        _cleanup_(json_value_freep) struct json_value *v = NULL;
        const char *st = "?";
        if (qmp_execute(s->q, "query-migrate", NULL, &v, NULL) >= 0)
                (void) json_get_string(json_object_get(v, "status"), &st);
        snprintf(buf, size, "%s", st ? st : "none");
        return buf;
}

/* Polls query-migrate on 's' until its status is 'want' (or a final
 * failure), within WAIT_MS. */
static bool wait_migration(struct side *s, const char *want) {
        char st[64];
        uint64_t deadline = vh_deadline_after(WAIT_MS);
        while (vh_clock_ms() < deadline) {
                migration_status(s, st, sizeof(st));
                if (streq(st, want))
                        return true;
                if (streq(st, "failed") || streq(st, "cancelled"))
                        break;
                usleep(20 * 1000);
        }
        test_fail(__FILE__, __LINE__, "migration status %s, wanted %s", st, want);
        return false;
}

static bool need_tools(void) {
        return test_qemu_available() && test_need_program("qemu-img", "qemu-utils") &&
               test_need_program("qemu-io", "qemu-utils");
}

TEST(migrate_disk_find_top) {
        if (!need_tools() || !make_images("top.qcow2", NULL))
                return;
        char solo[256];
        path_in_tmp(solo, sizeof(solo), "solo.qcow2");
        char *mk[] = { "qemu-img", "create", "-q", "-f", "qcow2", solo, DISK_SIZE, NULL };
        if (!run(mk))
                return;
        struct side a, b;
        struct vh_error err = {};
        if (side_start(&a, "a", "top.qcow2", NULL, false) && side_start(&b, "b", NULL, "solo.qcow2", false)) {
                struct vm_migrate_disk_top t = {};
                CHECK_EQ_INT(vm_migrate_disk_find_top(a.q, NULL, &t, &err), 0);
                CHECK_STREQ(t.node, "disk0-layer0");
                CHECK(t.has_backing);
                CHECK_EQ_U64(t.virtual_size, 64 * MIB);
                CHECK_EQ_INT(vm_migrate_disk_find_top(b.q, "disk0", &t, &err), 0);
                CHECK_STREQ(t.node, "disk0-layer0");
                CHECK(!t.has_backing);
                CHECK_EQ_INT(vm_migrate_disk_find_top(b.q, "disk9", &t, &err), -ENODEV);
                CHECK(strstr(err.msg, "disk9") != NULL);

                /* Bad input: named, refused before QEMU sees it. */
                char long_path[200];
                memset(long_path, 'x', sizeof(long_path) - 1);
                long_path[0] = '/';
                long_path[sizeof(long_path) - 1] = '\0';
                CHECK_EQ_INT(vm_migrate_disk_export_start(b.q, long_path, "disk0-layer0", &err), -ENAMETOOLONG);
                CHECK_EQ_INT(vm_migrate_disk_export_start(b.q, "rel.sock", "disk0-layer0", &err), -EINVAL);
                CHECK_EQ_INT(vm_migrate_disk_export_start(b.q, "/tmp/x.sock", "", &err), -EINVAL);
                struct vm_migrate_disk_mirror *m = NULL;
                CHECK_EQ_INT(vm_migrate_disk_mirror_start(a.q, &t, "", 0, &m, &err), -EINVAL);
                CHECK(m == NULL);
                /* A node QEMU does not have: its error, nothing left. */
                char sock[256];
                path_in_tmp(sock, sizeof(sock), "none.sock");
                struct vm_migrate_disk_top bad = { .node = "nosuchnode" };
                CHECK(vm_migrate_disk_export_start(b.q, sock, "nosuchnode", &err) < 0);
                CHECK_EQ_INT(vm_migrate_disk_export_stop(b.q, &err), 0);
                CHECK(vm_migrate_disk_mirror_start(a.q, &bad, sock, 0, &m, &err) < 0);
                CHECK(m == NULL);
                _cleanup_free_ char *g = graph_of(&a);
                CHECK_STREQ(g, "disk0-file0 disk0-file1 disk0-layer0 disk0-layer1 ");
        }
        side_kill(&a);
        side_kill(&b);
}

/* Counts progress reports and checks that 'done' never goes back. */
struct progress_seen {
        unsigned calls;
        uint64_t last_done;
        bool backwards;
        /* For the fault tests: act once some bytes are copied. */
        struct side *kill_side;
        bool cancel;
        bool acted;
};

static int on_progress(const struct vm_migrate_disk_progress *p, void *userdata) {
        struct progress_seen *s = userdata;
        s->calls++;
        if (p->done < s->last_done)
                s->backwards = true;
        s->last_done = p->done;
        if (p->done > 0 && !p->ready && !s->acted) {
                if (s->kill_side) {
                        s->acted = true;
                        kill(s->kill_side->pid, SIGKILL);
                        waitpid(s->kill_side->pid, NULL, 0);
                        s->kill_side->pid = -1;
                }
                if (s->cancel) {
                        s->acted = true;
                        return 1;
                }
        }
        return 0;
}

TEST(migrate_disk_mirror_and_migrate) {
        if (!need_tools() || !make_images("src.qcow2", "dst.qcow2"))
                return;
        struct side src, dst;
        struct vh_error err = {};
        struct vm_migrate_disk_mirror *m = NULL;
        _cleanup_free_ char *g = NULL, *st = NULL;
        char nbd[256], mig[256], uri[300];
        path_in_tmp(nbd, sizeof(nbd), "nbd.sock");
        path_in_tmp(mig, sizeof(mig), "mig.sock");
        snprintf(uri, sizeof(uri), "{\"uri\":\"unix:%s\"}", mig);
        if (!side_start(&src, "src", "src.qcow2", NULL, false) || !side_start(&dst, "dst", "dst.qcow2", NULL, true))
                goto out;
        if (!qexec(&src, "cont", NULL))
                goto out;
        /* The guest's data in the overlay: 6 MiB over the base's 16. */
        if (!qemu_io(&src, "write -P 0x5a 0 4M") || !qemu_io(&src, "write -P 0xa5 20M 2M"))
                goto out;

        struct vm_migrate_disk_top top = {};
        CHECK_EQ_INT(vm_migrate_disk_find_top(src.q, NULL, &top, &err), 0);
        CHECK(top.has_backing);
        CHECK_EQ_INT(vm_migrate_disk_export_start(dst.q, nbd, top.node, &err), 0);
        int r = vm_migrate_disk_mirror_start(src.q, &top, nbd, 0, &m, &err);
        CHECK_EQ_INT(r, 0);
        if (r < 0) {
                test_fail(__FILE__, __LINE__, "%s", err.msg);
                goto out;
        }
        struct progress_seen seen = {};
        r = vm_migrate_disk_mirror_wait_ready(m, WAIT_MS, on_progress, &seen, &err);
        CHECK_EQ_INT(r, 0);
        if (r < 0) {
                test_fail(__FILE__, __LINE__, "%s", err.msg);
                goto out;
        }
        CHECK(seen.calls >= 1);
        CHECK(!seen.backwards);
        /* Written while in sync: must reach the destination too. */
        CHECK(qemu_io(&src, "write -P 0x3c 40M 1M"));

        /* Memory, as the other helper's vm migrate does it. */
        CHECK(qexec(&src, "migrate-set-capabilities",
                    "{\"capabilities\":[{\"capability\":\"events\",\"state\":true},"
                    "{\"capability\":\"pause-before-switchover\",\"state\":true}]}"));
        CHECK(qexec(&dst, "migrate-set-capabilities",
                    "{\"capabilities\":[{\"capability\":\"events\",\"state\":true},"
                    "{\"capability\":\"late-block-activate\",\"state\":true}]}"));
        CHECK(qexec(&dst, "migrate-incoming", uri));
        CHECK(qexec(&src, "migrate", uri));
        if (!wait_migration(&src, "pre-switchover"))
                goto out;
        r = vm_migrate_disk_mirror_finish(m, &err);
        CHECK_EQ_INT(r, 0);
        if (r < 0)
                test_fail(__FILE__, __LINE__, "%s", err.msg);
        CHECK(vm_migrate_disk_mirror_finished(m));
        struct vm_migrate_disk_progress p = {};
        CHECK_EQ_INT(vm_migrate_disk_mirror_progress(m, &p, &err), 0);
        g = graph_of(&src);
        CHECK_STREQ(g, "disk0-file0 disk0-file1 disk0-layer0 disk0-layer1 ");
        CHECK_EQ_INT(jobs_of(&src), 0);

        CHECK(qexec(&src, "migrate-continue", "{\"state\":\"pre-switchover\"}"));
        CHECK(wait_migration(&src, "completed"));
        CHECK(wait_migration(&dst, "completed"));
        CHECK_EQ_INT(vm_migrate_disk_export_stop(dst.q, &err), 0);
        CHECK_EQ_INT(vm_migrate_disk_export_stop(dst.q, &err), 0); /* idempotent */
        CHECK(qexec(&dst, "cont", NULL));
        st = status_of(&dst);
        CHECK_STREQ(st, "running");
        /* The destination's guest reads what the source's wrote. */
        CHECK(image_has(&dst, "dst.qcow2", 0x5a, 0, 4));
        CHECK(image_has(&dst, "dst.qcow2", 0x3c, 40, 1));
        CHECK(image_has(&dst, "dst.qcow2", 0x11, 8, 1));

        side_quit(&dst);
        side_quit(&src);
        char a[256], b[256];
        path_in_tmp(a, sizeof(a), "src.qcow2");
        path_in_tmp(b, sizeof(b), "dst.qcow2");
        char *cmp[] = { "qemu-img", "compare", "-q", a, b, NULL };
        CHECK(run(cmp));
        /* Only the overlay went over, not the base under it. */
        uint64_t alloc = overlay_allocated("src.qcow2");
        printf("  mirror: %" PRIu64 " bytes done of %" PRIu64 "; source overlay allocates %" PRIu64
               " bytes (base: 16 MiB of data)\n",
               p.done, p.total, alloc);
        CHECK_EQ_U64(alloc, 7 * MIB);
        CHECK(p.done >= alloc);
        CHECK(p.done <= alloc + alloc / 10);
out:
        m = vm_migrate_disk_mirror_free(m);
        side_kill(&src);
        side_kill(&dst);
}

/* A source with 'mib' MiB in its overlay and a destination exporting its
 * empty overlay; the graph of the source before any mirror. */
static bool fault_setup(struct side *src, struct side *dst, unsigned mib, char *nbd, size_t nbd_size,
                        char **ret_graph) {
        path_in_tmp(nbd, nbd_size, "nbd.sock");
        if (!make_images("src.qcow2", "dst.qcow2") || !side_start(src, "src", "src.qcow2", NULL, false) ||
            !side_start(dst, "dst", "dst.qcow2", NULL, true) || !qexec(src, "cont", NULL))
                return false;
        char io[64];
        snprintf(io, sizeof(io), "write -P 0x5a 0 %uM", mib);
        if (!qemu_io(src, io))
                return false;
        struct vh_error err = {};
        if (vm_migrate_disk_export_start(dst->q, nbd, "disk0-layer0", &err) < 0) {
                test_fail(__FILE__, __LINE__, "%s", err.msg);
                return false;
        }
        *ret_graph = graph_of(src);
        return true;
}

/* What each fault test checks: the source runs, its graph is as before,
 * no job is left, its data is intact. */
static void check_source_as_before(struct side *src, const char *graph_before, unsigned mib) {
        _cleanup_free_ char *st = status_of(src);
        CHECK_STREQ(st, "running");
        _cleanup_free_ char *g = graph_of(src);
        CHECK_STREQ(g, graph_before);
        CHECK(strstr(g, VM_MIGRATE_DISK_NBD_NODE) == NULL);
        CHECK_EQ_INT(jobs_of(src), 0);
        CHECK(image_has(src, "src.qcow2", 0x5a, 0, mib));
        /* It still writes. */
        CHECK(qemu_io(src, "write -P 0x77 60M 1M"));
        CHECK(image_has(src, "src.qcow2", 0x77, 60, 1));
}

TEST(migrate_disk_abort) {
        struct side src = { .pid = -1 }, dst = { .pid = -1 };
        char nbd[256];
        _cleanup_free_ char *before = NULL;
        /* Before the first goto: clang refuses a jump over a cleanup. */
        _cleanup_(json_value_freep) struct json_value *ex = NULL;
        struct vh_error err = {};
        struct vm_migrate_disk_mirror *m = NULL;
        if (!need_tools() || !fault_setup(&src, &dst, FAULT_MIB, nbd, sizeof(nbd), &before))
                goto out;
        struct vm_migrate_disk_top top = {};
        CHECK_EQ_INT(vm_migrate_disk_find_top(src.q, NULL, &top, &err), 0);
        /* Slowed down so that the abort comes while it copies. */
        CHECK_EQ_INT(vm_migrate_disk_mirror_start(src.q, &top, nbd, FAULT_SPEED, &m, &err), 0);
        if (!m)
                goto out;
        char *during = graph_of(&src);
        CHECK(strstr(during, VM_MIGRATE_DISK_NBD_NODE) != NULL);
        free(during);
        struct vm_migrate_disk_progress p = {};
        CHECK_EQ_INT(vm_migrate_disk_mirror_progress(m, &p, &err), 0);
        CHECK(!p.ready);
        CHECK_EQ_INT(vm_migrate_disk_mirror_abort(m, &err), 0);
        CHECK_EQ_INT(vm_migrate_disk_mirror_abort(m, &err), 0); /* idempotent */
        CHECK(!vm_migrate_disk_mirror_finished(m));
        CHECK_EQ_INT(vm_migrate_disk_mirror_finish(m, &err), -ESTALE);
        check_source_as_before(&src, before, FAULT_MIB);
        m = vm_migrate_disk_mirror_free(m);

        /* Cancelled from the progress callback, mid-copy. */
        CHECK_EQ_INT(vm_migrate_disk_mirror_start(src.q, &top, nbd, FAULT_SPEED, &m, &err), 0);
        if (!m)
                goto out;
        struct progress_seen seen = { .cancel = true };
        CHECK_EQ_INT(vm_migrate_disk_mirror_wait_ready(m, WAIT_MS, on_progress, &seen, &err), -ECANCELED);
        CHECK(seen.acted);
        CHECK(strstr(err.msg, "cancelled") != NULL);
        check_source_as_before(&src, before, FAULT_MIB);
        m = vm_migrate_disk_mirror_free(m);

        /* The destination can take another attempt, then stops cleanly. */
        CHECK_EQ_INT(vm_migrate_disk_export_stop(dst.q, &err), 0);
        CHECK_EQ_INT(qmp_execute(dst.q, "query-block-exports", NULL, &ex, &err), 0);
        CHECK_EQ_INT(json_array_len(ex), 0);
out:
        m = vm_migrate_disk_mirror_free(m);
        side_kill(&src);
        side_kill(&dst);
}

TEST(migrate_disk_destination_killed) {
        struct side src = { .pid = -1 }, dst = { .pid = -1 };
        char nbd[256];
        _cleanup_free_ char *before = NULL;
        struct vh_error err = {};
        struct vm_migrate_disk_mirror *m = NULL;
        if (!need_tools() || !fault_setup(&src, &dst, FAULT_MIB, nbd, sizeof(nbd), &before))
                goto out;
        struct vm_migrate_disk_top top = {};
        CHECK_EQ_INT(vm_migrate_disk_find_top(src.q, NULL, &top, &err), 0);
        CHECK_EQ_INT(vm_migrate_disk_mirror_start(src.q, &top, nbd, FAULT_SPEED, &m, &err), 0);
        if (!m)
                goto out;
        /* The callback kills the destination once some bytes went over. */
        struct progress_seen seen = { .kill_side = &dst };
        uint64_t t0 = vh_clock_ms();
        int r = vm_migrate_disk_mirror_wait_ready(m, WAIT_MS, on_progress, &seen, &err);
        uint64_t took = vh_clock_ms() - t0;
        CHECK(seen.acted);
        CHECK_EQ_INT(r, -EIO);
        CHECK(strstr(err.msg, "disk0-layer0") != NULL);
        printf("  destination killed: wait_ready returned in %" PRIu64 " ms: %s\n", took, err.msg);
        CHECK(took < WAIT_MS);
        CHECK(vm_migrate_disk_mirror_abort(m, &err) == 0);
        check_source_as_before(&src, before, FAULT_MIB);
out:
        m = vm_migrate_disk_mirror_free(m);
        side_kill(&src);
        side_kill(&dst);
}

/* A VM without a base: the whole disk is mirrored (sync=full). Only the
 * mirror, with both QEMUs paused: the memory part is the test above. */
TEST(migrate_disk_no_base_full) {
        struct side src = { .pid = -1 }, dst = { .pid = -1 };
        struct vh_error err = {};
        struct vm_migrate_disk_mirror *m = NULL;
        char nbd[256];
        path_in_tmp(nbd, sizeof(nbd), "nbd.sock");
        if (!need_tools())
                return;
        const char *names[] = { "solo-src.qcow2", "solo-dst.qcow2" };
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                char path[256];
                path_in_tmp(path, sizeof(path), names[i]);
                char *mk[] = { "qemu-img", "create", "-q", "-f", "qcow2", path, DISK_SIZE, NULL };
                if (!run(mk))
                        return;
        }
        if (!side_start(&src, "src", NULL, "solo-src.qcow2", false) ||
            !side_start(&dst, "dst", NULL, "solo-dst.qcow2", true))
                goto out;
        if (!qemu_io(&src, "write -P 0x5a 1M 3M"))
                goto out;
        struct vm_migrate_disk_top top = {};
        CHECK_EQ_INT(vm_migrate_disk_find_top(src.q, NULL, &top, &err), 0);
        CHECK(!top.has_backing);
        CHECK_EQ_INT(vm_migrate_disk_export_start(dst.q, nbd, top.node, &err), 0);
        CHECK_EQ_INT(vm_migrate_disk_mirror_start(src.q, &top, nbd, 0, &m, &err), 0);
        if (!m)
                goto out;
        CHECK_EQ_INT(vm_migrate_disk_mirror_wait_ready(m, WAIT_MS, NULL, NULL, &err), 0);
        CHECK_EQ_INT(vm_migrate_disk_mirror_finish(m, &err), 0);
        struct vm_migrate_disk_progress p = {};
        CHECK_EQ_INT(vm_migrate_disk_mirror_progress(m, &p, &err), 0);
        /* sync=full covers the whole disk, not only what is allocated. */
        printf("  no base: mirror %" PRIu64 " bytes of a 64 MiB disk\n", p.done);
        CHECK_EQ_U64(p.total, 64 * MIB);
        CHECK_EQ_INT(vm_migrate_disk_export_stop(dst.q, &err), 0);
        side_quit(&src);
        side_quit(&dst);
        char a[256], b[256];
        path_in_tmp(a, sizeof(a), names[0]);
        path_in_tmp(b, sizeof(b), names[1]);
        char *cmp[] = { "qemu-img", "compare", "-q", a, b, NULL };
        CHECK(run(cmp));
        CHECK(image_has(NULL, names[1], 0x5a, 1, 3));
out:
        m = vm_migrate_disk_mirror_free(m);
        side_kill(&src);
        side_kill(&dst);
}
