/* tests/unit/test-vm-start.c: vm_start() in its three steps (vm/vm-start.h)
 * against a real QEMU under TCG: a destination for a live migration
 * (paused, -incoming defer), the one undo path of a start that is not
 * recorded, a failed exec reported from the child, and the cancel hook of
 * start, restart and stop. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/fileio.h"
#include "base/json.h"
#include "base/macro.h"
#include "base/process.h"
#include "base/strutil.h"
#include "qmp/qmp.h"
#include "vm/vm-control.h"
#include "vm/vm-start.h"
#include "vm/vm.h"
#include "test.h"

#define QEMU_BINARY "qemu-system-x86_64"

static bool have_qemu(void) {
        return test_need_program(QEMU_BINARY, "qemu-system-x86");
}

/* A small VM with a 1 MiB raw disk, no NIC, no display, under TCG: the
 * cheapest thing QEMU starts. */
static bool define_vm(const char *name) {
        _cleanup_free_ char *disk = strdup_printf("%s/%s.raw", test_tmpdir(), name);
        int fd = disk ? open(disk, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600) : -1;
        if (fd < 0 || ftruncate(fd, 1 << 20) < 0) {
                test_fail(__FILE__, __LINE__, "cannot make %s", disk ? disk : "a disk");
                if (fd >= 0)
                        close(fd);
                return false;
        }
        close(fd);
        _cleanup_(vm_def_freep) struct vm_def *def = vm_def_new(name);
        if (!def)
                return false;
        def->memory = 64ULL << 20;
        def->accel = VM_ACCEL_TCG;
        def->vnc = VM_VNC_NONE;
        def->disk = TAKE_PTR(disk);
        free(def->disk_format);
        def->disk_format = strdup("raw");
        struct vh_error err = {};
        int r = vm_save(test_ctx(), def, &err);
        if (r < 0)
                test_fail(__FILE__, __LINE__, "vm_save: %s", vh_error_message(&err, r));
        return r >= 0;
}

static void incoming_body(void) {
        if (!define_vm("mig1"))
                return;
        struct vh_error err = {};
        _cleanup_(vm_start_job_freep) struct vm_start_job *job = NULL;
        int r = vm_start_prepare(test_ctx(), "mig1", &job, &err);
        CHECK_EQ_INT(r, 0);
        if (r < 0) {
                fprintf(stderr, "  prepare: %s\n", vh_error_message(&err, r));
                return;
        }
        struct vm_start_options o = { .incoming_defer = true };
        r = vm_start_launch(test_ctx(), job, &o, &err);
        CHECK_EQ_INT(r, 0);
        if (r >= 0)
                r = vm_start_record(job, 30 * 1000, NULL, &err);
        CHECK_EQ_INT(r, 0);
        if (r < 0) {
                fprintf(stderr, "  launch/record: %s\n", vh_error_message(&err, r));
                return;
        }

        struct vm_status st;
        CHECK_EQ_INT(vm_get_status(test_ctx(), "mig1", &st, &err), 0);
        CHECK(st.state == VM_STATE_RUNNING);
        CHECK_EQ_INT(st.pid, job->pid);

        /* QEMU waits for the incoming migration: paused, "inmigrate". */
        _cleanup_(qmp_freep) struct qmp_client *q = NULL;
        r = qmp_connect(job->paths.qmp_socket, 10 * 1000, &q, &err);
        CHECK_EQ_INT(r, 0);
        if (r >= 0) {
                struct json_value *v = NULL;
                const char *status = NULL;
                bool running = true;
                CHECK_EQ_INT(qmp_execute(q, "query-status", NULL, &v, &err), 0);
                CHECK_EQ_INT(json_get_string(json_object_get(v, "status"), &status), 0);
                CHECK_STREQ(status, "inmigrate");
                CHECK_EQ_INT(json_get_bool(json_object_get(v, "running"), &running), 0);
                CHECK(!running);
                json_value_free(v);
                q = qmp_free(q);
        }
        CHECK_EQ_INT(vm_stop(test_ctx(), "mig1", 5000, &err), 0);
        CHECK(!process_alive(job->pid));
}

TEST(vm_start_incoming_defer_is_inmigrate) {
        if (!have_qemu())
                return;
        incoming_body();
}

/* A start that is launched but never recorded (a migration that gave up)
 * is undone by freeing the job: QEMU gone, runtime files gone, and the VM
 * is stopped, not crashed. */
static void undo_body(void) {
        if (!define_vm("mig2"))
                return;
        struct vh_error err = {};
        struct vm_start_job *job = NULL;
        int r = vm_start_prepare(test_ctx(), "mig2", &job, &err);
        CHECK_EQ_INT(r, 0);
        if (r < 0)
                return;
        _cleanup_free_ char *runtime_dir = strdup(job->paths.runtime_dir);
        struct vm_start_options o = { .incoming_defer = true };
        CHECK_EQ_INT(vm_start_launch(test_ctx(), job, &o, &err), 0);
        int pid = job->pid;
        CHECK(pid > 0);
        CHECK(process_alive(pid));
        job = vm_start_job_free(job);
        CHECK(!process_alive(pid));
        CHECK(runtime_dir && !file_exists(runtime_dir));
        struct vm_status st;
        CHECK_EQ_INT(vm_get_status(test_ctx(), "mig2", &st, &err), 0);
        CHECK(st.state == VM_STATE_STOPPED);
}

TEST(vm_start_unrecorded_launch_is_undone) {
        if (!have_qemu())
                return;
        undo_body();
}

/* An executable QEMU binary that exec refuses (no ELF, no #!): the child
 * reports errno through its pipe, the parent says what failed and undoes. */
static void exec_fail_body(void) {
        if (!define_vm("mig3"))
                return;
        _cleanup_free_ char *bogus = strdup_printf("%s/not-qemu", test_tmpdir());
        CHECK(bogus && write_file_atomic(bogus, "garbage\n", 8, 0755) == 0);
        struct vh_error err = {};
        struct vm_status st;
        struct vm_start_options o = { .qemu_binary = bogus };
        int r = vm_start(test_ctx(), "mig3", &o, &st, &err);
        CHECK_EQ_INT(r, -ENOEXEC);
        CHECK(strstr(err.msg, "Cannot start QEMU for VM mig3: cannot execute ") == err.msg);
        CHECK(strstr(err.msg, strerror(ENOEXEC)) != NULL);
        CHECK_EQ_INT(vm_get_status(test_ctx(), "mig3", &st, &err), 0);
        CHECK(st.state == VM_STATE_STOPPED);
        _cleanup_free_ char *rt = strdup_printf("%s/run/vms/mig3", test_tmpdir());
        CHECK(rt && !file_exists(rt));
        /* The child's prepared message went to QEMU's log. */
        _cleanup_free_ char *log = strdup_printf("%s/vms/mig3/qemu.log", test_tmpdir()), *text = NULL;
        CHECK(log && read_full_file(log, 4096, &text, NULL) == 0);
        CHECK(text && strstr(text, "vmhost: cannot execute ") == text);
}

TEST(vm_start_exec_failure_reported) {
        exec_fail_body();
}

/* A cancel hook that says yes from a point in time on, and counts how
 * often it was asked. */
struct cancel_at {
        uint64_t at_ms;
        unsigned asked;
};

static bool cancel_at_func(void *userdata) {
        struct cancel_at *c = userdata;
        c->asked++;
        return vh_clock_ms() >= c->at_ms;
}

/* A start cancelled after QEMU was launched: a "QEMU" that runs but never
 * greets (a script that records its pid and becomes 'sleep 60'; the exec
 * keeps the pid) would hold the start for its 30 s greeting timeout. The
 * cancel ends it at once: -ECANCELED, the process killed, the runtime
 * files gone, the VM stopped and not busy. */
static void cancel_start_body(void) {
        if (!define_vm("can1"))
                return;
        _cleanup_free_ char *pidfile = strdup_printf("%s/fake-qemu.pid", test_tmpdir());
        _cleanup_free_ char *fake = strdup_printf("%s/fake-qemu", test_tmpdir());
        _cleanup_free_ char *script = strdup_printf("#!/bin/sh\necho $$ >%s\nexec sleep 60\n", pidfile);
        CHECK(fake && script && write_file_atomic(fake, script, strlen(script), 0755) == 0);
        struct cancel_at c = { .at_ms = vh_clock_ms() + 500 };
        struct vm_cancel cancel = { cancel_at_func, &c };
        struct vm_start_options o = { .qemu_binary = fake, .cancel = &cancel };
        struct vh_error err = {};
        struct vm_status st;
        uint64_t t0 = vh_clock_ms();
        int r = vm_start(test_ctx(), "can1", &o, &st, &err);
        uint64_t dt = vh_clock_ms() - t0;
        CHECK_EQ_INT(r, -ECANCELED);
        CHECK_STREQ(err.msg, "The start of VM can1 was cancelled before QEMU was up; QEMU was stopped");
        /* Half a second of waiting, then the kill: far from 30 s. */
        CHECK(dt >= 450 && dt < 5000);
        CHECK(c.asked > 1);
        _cleanup_free_ char *text = NULL;
        uint64_t pid = 0;
        CHECK(read_one_line_file(pidfile, &text) >= 0 && parse_u64(text, &pid) == 0 && pid > 1);
        CHECK(pid > 1 && !process_alive((int) pid));
        _cleanup_free_ char *rt = strdup_printf("%s/run/vms/can1", test_tmpdir());
        CHECK(rt && !file_exists(rt));
        CHECK_EQ_INT(vm_get_status(test_ctx(), "can1", &st, &err), 0);
        CHECK(st.state == VM_STATE_STOPPED);
        CHECK_STREQ(st.busy, "");
}

TEST(vm_start_cancelled_after_launch_is_undone) {
        cancel_start_body();
}

/* A real QEMU with no guest to answer the ACPI button: a restart whose
 * hook cancels at once is refused at the lock and leaves it running; a
 * graceful stop with a 60 s grace time, cancelled after 300 ms, finishes
 * at once with 'quit' instead of waiting out the grace. The start time
 * is recorded and stable. */
static void cancel_stop_body(void) {
        if (!define_vm("can2"))
                return;
        struct vh_error err = {};
        struct vm_status st, again;
        int64_t before = (int64_t) time(NULL);
        int r = vm_start(test_ctx(), "can2", NULL, &st, &err);
        CHECK_EQ_INT(r, 0);
        if (r < 0) {
                fprintf(stderr, "  start: %s\n", vh_error_message(&err, r));
                return;
        }
        CHECK(st.started_at >= before && st.started_at <= (int64_t) time(NULL));
        CHECK_EQ_INT(vm_get_status(test_ctx(), "can2", &again, &err), 0);
        CHECK_EQ_INT(again.started_at, st.started_at);

        struct cancel_at now = { .at_ms = 0 };
        struct vm_cancel cancel_now = { cancel_at_func, &now };
        struct vm_start_options o = { .cancel = &cancel_now };
        r = vm_restart(test_ctx(), "can2", 1000, &o, &again, &err);
        CHECK_EQ_INT(r, -ECANCELED);
        CHECK_EQ_INT(vm_get_status(test_ctx(), "can2", &again, &err), 0);
        CHECK(again.state == VM_STATE_RUNNING && again.pid == st.pid);

        struct cancel_at later = { .at_ms = vh_clock_ms() + 300 };
        struct vm_cancel cancel_later = { cancel_at_func, &later };
        enum vm_stop_how how = VM_STOP_GUEST;
        uint64_t t0 = vh_clock_ms();
        r = vm_stop_graceful_cancellable(test_ctx(), "can2", 60 * 1000, &cancel_later, &how, &err);
        uint64_t dt = vh_clock_ms() - t0;
        CHECK_EQ_INT(r, 0);
        CHECK_EQ_INT(how, VM_STOP_QUIT);
        CHECK(dt >= 250 && dt < 10 * 1000);
        if (dt >= 10 * 1000)
                fprintf(stderr, "  stop took %" PRIu64 " ms\n", dt);
        CHECK(!process_alive(st.pid));
        CHECK_EQ_INT(vm_get_status(test_ctx(), "can2", &again, &err), 0);
        CHECK(again.state == VM_STATE_STOPPED);
        CHECK_EQ_INT(again.started_at, 0);
}

TEST(vm_stop_cancelled_quits_at_once) {
        if (!have_qemu())
                return;
        cancel_stop_body();
}
