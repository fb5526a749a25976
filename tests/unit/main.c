/* tests/unit/main.c: runs every registered unit test and prints
 * "N passed, N failed, N skipped"; exits non-zero if any failed. Skips are
 * listed by name with their reason; with E2E_NO_SKIP=1 or CI=true (as for
 * tests/e2e/run) each one counts as a failure instead. */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/process.h"
#include "test.h"

static struct test_case *tests;
static int current_failures;
/* Why the running test skipped (all reasons, "; "-joined), empty if not. */
static char current_skip[512];
static char tmpdir[256];

void test_register(struct test_case *t) {
        /* Keep registration order per file stable: append. */
        struct test_case **p = &tests;
        while (*p)
                p = &(*p)->next;
        *p = t;
}

void test_fail(const char *file, int line, const char *fmt, ...) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "  %s:%d: ", file, line);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
        current_failures++;
}

void test_skip(const char *fmt, ...) {
        char reason[256];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(reason, sizeof(reason), fmt, ap);
        va_end(ap);
        size_t n = strlen(current_skip);
        if (strstr(current_skip, reason))
                return;
        fprintf(stderr, "  SKIP: %s\n", reason);
        snprintf(current_skip + n, sizeof(current_skip) - n, "%s%s", n ? "; " : "", reason);
}

bool test_need_program(const char *prog, const char *package) {
        char *p = find_executable(test_ctx(), prog);
        bool ok = p != NULL;
        free(p);
        if (!ok)
                test_skip("%s is not installed (apt-get install %s)", prog, package);
        return ok;
}

/* CI installs every tool the tests use, so there a skip is a missing part:
 * the same switches as tests/e2e/run. */
static bool skips_fail(const char **ret_why) {
        const char *v = getenv("E2E_NO_SKIP");
        if (v && strcmp(v, "1") == 0) {
                *ret_why = "E2E_NO_SKIP=1";
                return true;
        }
        v = getenv("CI");
        if (v && strcmp(v, "true") == 0) {
                *ret_why = "CI=true";
                return true;
        }
        return false;
}

const char *test_tmpdir(void) {
        if (!tmpdir[0]) {
                const char *base = getenv("TMPDIR");
                snprintf(tmpdir, sizeof(tmpdir), "%s/vmhost-unit.XXXXXX", base ? base : "/tmp");
                if (!mkdtemp(tmpdir)) {
                        perror("mkdtemp");
                        abort();
                }
        }
        return tmpdir;
}

static struct vh_context *ctx;

const struct vh_context *test_ctx(void) {
        if (!ctx) {
                struct vh_context_params p = {
                        .state_dir = test_tmpdir(),
                        .is_root = geteuid() == 0,
                        .ovs_db = getenv("VMHOST_OVS_DB"),
                        .ovs_rundir = getenv("OVS_RUNDIR"),
                        .exec_path = getenv("PATH"),
                        .net_fault = getenv("VMHOST_NET_FAULT"),
                };
                struct vh_error err = {};
                int r = vh_context_new(&p, &ctx, &err);
                if (r < 0) {
                        fprintf(stderr, "vh_context_new: %s\n", vh_error_message(&err, r));
                        abort();
                }
        }
        return ctx;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st, (void) flag, (void) ftw;
        return remove(path);
}

static void tmpdir_cleanup(void) {
        ctx = vh_context_free(ctx);
        if (tmpdir[0]) {
                nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
                tmpdir[0] = '\0';
        }
}

int main(int argc, char **argv) {
        const char *filter = argc > 1 ? argv[1] : NULL;
        const char *no_skip_why = NULL;
        bool no_skip = skips_fail(&no_skip_why);
        int passed = 0, failed = 0, skipped = 0;
        /* The skips again at the end, where a reader of the summary sees them. */
        char *skip_list = NULL;
        size_t skip_list_size = 0;
        FILE *skips = open_memstream(&skip_list, &skip_list_size);
        if (!skips) {
                perror("open_memstream");
                return 1;
        }

        for (struct test_case *t = tests; t; t = t->next) {
                if (filter && !strstr(t->name, filter))
                        continue;
                current_failures = 0;
                current_skip[0] = '\0';
                t->func();
                tmpdir_cleanup();
                if (current_failures) {
                        failed++;
                        fprintf(stderr, "FAIL %s (%s)\n", t->name, t->file);
                } else if (current_skip[0] && no_skip) {
                        failed++;
                        fprintf(stderr, "FAIL %s (%s): skipped, counted as a failure (%s): %s\n", t->name, t->file,
                                no_skip_why, current_skip);
                } else if (current_skip[0]) {
                        skipped++;
                        fprintf(stderr, "SKIP %s: %s\n", t->name, current_skip);
                        fprintf(skips, "  %s: %s\n", t->name, current_skip);
                } else {
                        passed++;
                        if (getenv("VERBOSE"))
                                fprintf(stderr, "ok   %s\n", t->name);
                }
        }
        fclose(skips);
        if (skipped)
                printf("skipped:\n%s", skip_list);
        free(skip_list);
        printf("%d passed, %d failed, %d skipped\n", passed, failed, skipped);
        return failed ? 1 : 0;
}
