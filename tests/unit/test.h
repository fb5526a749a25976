/* tests/unit/test.h: the unit-test framework.
 *
 *     TEST(parse_size_suffixes) {
 *             CHECK(parse_size("1G", &v) == 0);
 *             CHECK_EQ_U64(v, 1ULL << 30);
 *     }
 *
 * Each TEST registers itself at load time; the runner (tests/unit/main.c)
 * runs them all (or those whose name contains argv[1]). A failing CHECK
 * prints file:line and the test goes on, so one run shows every failure.
 *
 * A test that cannot run here (a tool that is not installed) calls
 * test_skip() with the reason and returns; it counts as skipped, not as
 * passed, unless it also failed. With E2E_NO_SKIP=1 or CI=true a skip
 * counts as a failure, as in the e2e runner: CI installs everything, so a
 * skip there hides a missing part.
 *
 * The last line is "N passed, N failed, N skipped". */
#pragma once

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

struct test_case {
        const char *name;
        const char *file;
        void (*func)(void);
        struct test_case *next;
};

void test_register(struct test_case *t);
void test_fail(const char *file, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Marks the running test as skipped, with the reason; the caller returns
 * (or leaves out the part it cannot run). */
void test_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* True if 'prog' is found in PATH; if not, skips the running test saying
 * so, with 'package' as the hint. */
bool test_need_program(const char *prog, const char *package);
/* A temporary directory for the running test, removed after it. */
const char *test_tmpdir(void);
/* The context library calls of the running test get: a vmhost home in
 * test_tmpdir(), QEMU kept as the caller (a test must not create system
 * users), programs searched in $PATH, OVS and fault switches from the
 * environment as a program's would be. Freed after the test. */
struct vh_context;
const struct vh_context *test_ctx(void);

#define TEST(name)                                                              \
        static void test_##name(void);                                          \
        static struct test_case test_case_##name = { #name, __FILE__, test_##name, NULL }; \
        __attribute__((constructor)) static void test_register_##name(void) {   \
                test_register(&test_case_##name);                               \
        }                                                                       \
        static void test_##name(void)

#define CHECK(expr)                                                             \
        do {                                                                    \
                if (!(expr))                                                    \
                        test_fail(__FILE__, __LINE__, "CHECK(%s)", #expr);      \
        } while (0)

#define CHECK_EQ_INT(a, b)                                                      \
        do {                                                                    \
                long long _a = (long long) (a), _b = (long long) (b);           \
                if (_a != _b)                                                   \
                        test_fail(__FILE__, __LINE__, "%s == %s: %lld != %lld", #a, #b, _a, _b); \
        } while (0)

#define CHECK_EQ_U64(a, b)                                                      \
        do {                                                                    \
                uint64_t _a = (uint64_t) (a), _b = (uint64_t) (b);              \
                if (_a != _b)                                                   \
                        test_fail(__FILE__, __LINE__, "%s == %s: %" PRIu64 " != %" PRIu64, #a, #b, _a, _b); \
        } while (0)

#define CHECK_STREQ(a, b)                                                       \
        do {                                                                    \
                const char *_a = (a), *_b = (b);                                \
                if (!_a || !_b || strcmp(_a, _b) != 0)                          \
                        test_fail(__FILE__, __LINE__, "%s == %s: \"%s\" != \"%s\"", #a, #b, \
                                  _a ? _a : "(null)", _b ? _b : "(null)");      \
        } while (0)
