/* tests/unit/main.c: runs every registered unit test and prints
 * "N passed, N failed"; exits non-zero if any failed. */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"

static struct test_case *tests;
static int current_failures;
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

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
        (void) st, (void) flag, (void) ftw;
        return remove(path);
}

static void tmpdir_cleanup(void) {
        if (tmpdir[0]) {
                nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
                tmpdir[0] = '\0';
        }
}

int main(int argc, char **argv) {
        const char *filter = argc > 1 ? argv[1] : NULL;
        int passed = 0, failed = 0;

        for (struct test_case *t = tests; t; t = t->next) {
                if (filter && !strstr(t->name, filter))
                        continue;
                current_failures = 0;
                t->func();
                tmpdir_cleanup();
                if (current_failures) {
                        failed++;
                        fprintf(stderr, "FAIL %s (%s)\n", t->name, t->file);
                } else {
                        passed++;
                        if (getenv("VERBOSE"))
                                fprintf(stderr, "ok   %s\n", t->name);
                }
        }
        printf("%d passed, %d failed\n", passed, failed);
        return failed ? 1 : 0;
}
