/* tests/unit/test-vm-start.c: vm_start() in its three steps (vm/vm-start.h)
 * against a real QEMU under TCG: a destination for a live migration
 * (paused, -incoming defer), the one undo path of a start that is not
 * recorded, and a failed exec reported from the child. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/json.h"
#include "base/macro.h"
#include "base/process.h"
#include "base/strutil.h"
#include "qmp/qmp.h"
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
