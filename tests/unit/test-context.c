/* tests/unit/test-context.c: the program's context (vmhost/context.h):
 * what vh_context_from_env() reads and refuses, what vh_context_new()
 * refuses, and a check of the source tree that no other file of src/
 * reads the environment, the euid or the working directory. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "image/image-internal.h"
#include "test.h"
#include "vmhost/context.h"
#include "vmhost/image.h"

#ifndef VMHOST_SOURCE_ROOT
#error "tests/unit/meson.build passes the source tree as VMHOST_SOURCE_ROOT"
#endif

/* The variables vh_context_from_env() reads, saved and restored around a
 * test that sets them. */
static const char *const vars[] = {
        "VMHOST_HOME", "VMHOST_QEMU_USER", "VMHOST_OVS_DB", "OVS_RUNDIR", "VMHOST_MKGUEST",
        "VMHOST_NET_FAULT", "VMHOST_FAULT_KILL_AFTER_WRITES", "XDG_DATA_HOME", "XDG_RUNTIME_DIR",
};
static char *saved[ELEMENTSOF(vars)];

static void env_save(void) {
        for (size_t i = 0; i < ELEMENTSOF(vars); i++) {
                const char *v = getenv(vars[i]);
                saved[i] = v ? strdup(v) : NULL;
        }
}

static void env_restore(void) {
        for (size_t i = 0; i < ELEMENTSOF(vars); i++) {
                if (saved[i])
                        setenv(vars[i], saved[i], 1);
                else
                        unsetenv(vars[i]);
                saved[i] = mfree(saved[i]);
        }
}

TEST(context_from_env_reads_the_environment_once) {
        env_save();
        setenv("VMHOST_HOME", "/srv/vh", 1);
        setenv("VMHOST_QEMU_USER", "qemu-test", 1);
        setenv("VMHOST_OVS_DB", "unix:/tmp/db.sock", 1);
        setenv("OVS_RUNDIR", "/tmp/ovs", 1);
        setenv("VMHOST_MKGUEST", "/opt/mkguest", 1);
        setenv("VMHOST_NET_FAULT", "attach:2", 1);
        setenv("VMHOST_FAULT_KILL_AFTER_WRITES", "", 1);
        struct vh_context *c = NULL;
        struct vh_error err = {};
        CHECK_EQ_INT(vh_context_from_env(&c, &err), 0);
        /* What the context holds no longer depends on the environment. */
        env_restore();
        if (c) {
                CHECK_STREQ(c->state_dir, "/srv/vh");
                CHECK_STREQ(c->runtime_dir, "/srv/vh/run");
                CHECK_EQ_INT(c->is_root, geteuid() == 0);
                if (c->is_root)
                        CHECK_STREQ(c->qemu_user, "qemu-test");
                else
                        CHECK(c->qemu_user == NULL);
                CHECK_STREQ(c->ovs_db, "unix:/tmp/db.sock");
                CHECK_STREQ(c->ovs_rundir, "/tmp/ovs");
                CHECK_STREQ(c->mkguest, "/opt/mkguest");
                CHECK_STREQ(c->net_fault, "attach:2");
                CHECK_EQ_U64(c->image_fault_kill_after_writes, 0);
                CHECK(c->exec_path && *c->exec_path);
                CHECK(!c->cwd || c->cwd[0] == '/');
        }
        c = vh_context_free(c);
}

TEST(context_from_env_refuses_relative_dirs_and_bad_faults) {
        static const struct {
                const char *var, *value, *named; /* the message names 'named' */
        } cases[] = {
                { "VMHOST_HOME", "rel/home", "VMHOST_HOME" },
                { "VMHOST_FAULT_KILL_AFTER_WRITES", "12x", "VMHOST_FAULT_KILL_AFTER_WRITES" },
                { "VMHOST_FAULT_KILL_AFTER_WRITES", "-1", "VMHOST_FAULT_KILL_AFTER_WRITES" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                env_save();
                setenv("VMHOST_HOME", "/srv/vh", 1);
                setenv(cases[i].var, cases[i].value, 1);
                struct vh_context *c = NULL;
                struct vh_error err = {};
                CHECK_EQ_INT(vh_context_from_env(&c, &err), -EINVAL);
                CHECK(c == NULL);
                CHECK(strstr(err.msg, cases[i].named) != NULL);
                env_restore();
        }
}

TEST(context_from_env_sets_the_image_fault_switch) {
        env_save();
        setenv("VMHOST_HOME", "/srv/vh", 1);
        setenv("VMHOST_FAULT_KILL_AFTER_WRITES", "7", 1);
        struct vh_context *c = NULL;
        CHECK_EQ_INT(vh_context_from_env(&c, NULL), 0);
        env_restore();
        if (c)
                CHECK_EQ_U64(c->image_fault_kill_after_writes, 7);
        c = vh_context_free(c);
        /* Armed: a few writes (fewer than 7) are counted, not fatal. */
        _cleanup_free_ char *path = strdup_printf("%s/f", test_tmpdir());
        int fd = path ? open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600) : -1;
        CHECK(fd >= 0);
        if (fd >= 0) {
                for (unsigned i = 0; i < 3; i++)
                        CHECK_EQ_INT(image_pwrite_all(fd, "x", 1, i), 0);
                close(fd);
        }
        CHECK_EQ_U64(image_fault_writes(), 3);
        vh_image_fault_set_kill_after_writes(0);
}

TEST(context_new_refuses_relative_dirs) {
        static const struct vh_context_params cases[] = {
                { .state_dir = NULL },
                { .state_dir = "" },
                { .state_dir = "rel" },
                { .state_dir = "/s", .runtime_dir = "run" },
                { .state_dir = "/s", .cwd = "here" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct vh_context *c = NULL;
                struct vh_error err = {};
                CHECK_EQ_INT(vh_context_new(&cases[i], &c, &err), -EINVAL);
                CHECK(c == NULL);
                CHECK(strstr(err.msg, "not an absolute path") != NULL);
        }
        struct vh_context *c = NULL;
        CHECK_EQ_INT(vh_context_new(&(struct vh_context_params) { .state_dir = "/s" }, &c, NULL), 0);
        if (c) {
                CHECK_STREQ(c->runtime_dir, "/s/run");
                CHECK_STREQ(c->exec_path, VH_CONTEXT_DEFAULT_PATH);
                CHECK(!c->cwd && !c->qemu_user && !c->ovs_db && !c->net_fault);
        }
        c = vh_context_free(c);
}

/* The words a grep for process state finds; split so that this file
 * does not contain them whole. */
static const char *const forbidden[] = { "get" "env", "gete" "uid", "get" "cwd" };
static FILE *offenders;
static unsigned n_offending;

static int scan_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st, (void) ftw;
        if (flag != FTW_F)
                return 0;
        const char *rel = path + strlen(VMHOST_SOURCE_ROOT) + 1;
        if (streq(rel, "src/base/context.c"))
                return 0;
        _cleanup_free_ char *text = NULL;
        size_t size = 0;
        if (read_full_file(path, 16u << 20, &text, &size) < 0) {
                fprintf(offenders, "  %s: cannot read\n", rel);
                n_offending++;
                return 0;
        }
        unsigned line = 1;
        for (char *l = text, *next; l && *l; l = next, line++) {
                next = strchr(l, '\n');
                if (next)
                        *next++ = '\0';
                for (size_t i = 0; i < ELEMENTSOF(forbidden); i++)
                        if (strstr(l, forbidden[i])) {
                                fprintf(offenders, "  %s:%u: %s\n", rel, line, strstrip(l));
                                n_offending++;
                                break;
                        }
        }
        return 0;
}

/* Issue 11: below the program, state comes in through the context. Only
 * its constructor may read the environment, the euid or the working
 * directory; this lists every other line of src/ that names one. */
TEST(context_only_constructor_reads_process_state) {
        char *list = NULL;
        size_t list_size = 0;
        offenders = open_memstream(&list, &list_size);
        CHECK(offenders != NULL);
        if (!offenders)
                return;
        n_offending = 0;
        CHECK_EQ_INT(nftw(VMHOST_SOURCE_ROOT "/src", scan_one, 16, FTW_PHYS), 0);
        fclose(offenders);
        if (n_offending)
                test_fail(__FILE__, __LINE__, "%u lines of src/ outside src/base/context.c read process state:\n%s",
                          n_offending, list);
        free(list);
}
