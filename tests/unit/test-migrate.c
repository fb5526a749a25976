/* tests/unit/test-migrate.c: the pure parts of live migration: the far
 * side's check answer (positive and negative cases), query-migrate
 * progress (the percent never runs backwards), the downtime steps, rates,
 * and the forward's ssh argv. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "host/host-def.h"
#include "host/ssh.h"
#include "test.h"
#include "vm/vm-migrate.h"
#include "vmhost/context.h"

TEST(migrate_checks_parse_table) {
        static const struct {
                const char *text;
                int want;        /* 0 or the -errno */
                size_t n;        /* checks appended */
                bool first_ok;
        } cases[] = {
                { "{\"vmhost\":\"0.1.0\",\"checks\":[{\"name\":\"qemu\",\"ok\":true,\"message\":\"QEMU 7.2\"}]}", 0, 1, true },
                /* ssh's stderr before the object */
                { "warning: x\n{\"checks\":[{\"name\":\"name\",\"ok\":false,\"message\":\"taken\"},"
                  "{\"name\":\"cpu\",\"ok\":true,\"message\":\"\"}]}", 0, 2, false },
                { "{\"checks\":[]}", 0, 0, false },
                { "", -EPROTO, 0, false },
                { "no json here", -EPROTO, 0, false },
                { "{\"checks\":{}}", -EPROTO, 0, false },
                { "{\"checks\":[{\"name\":\"x\",\"ok\":\"yes\",\"message\":\"m\"}]}", -EPROTO, 0, false },
                { "{\"checks\":[{\"name\":\"x\",\"ok\":true}]}", -EPROTO, 0, false },
                { "{\"checks\":[[[[[[1]]]]]]}", -EPROTO, 0, false },          /* deeper than allowed */
                { "{\"checks\":[{\"name\":\"x\",\"ok\":true,\"message\":\"m\"}", -EPROTO, 0, false }, /* cut */
                { "a{\"checks\":[]}", -EPROTO, 0, false },                    /* '{' not at a line start */
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct vm_migrate_result res = {};
                struct vh_error err = {};
                int r = vm_migrate_checks_parse(cases[i].text, &res, &err);
                if (r != cases[i].want)
                        test_fail(__FILE__, __LINE__, "case %zu: %d, want %d (%s)", i, r, cases[i].want,
                                  vh_error_message(&err, r));
                if (r == 0 && res.n_checks != cases[i].n)
                        test_fail(__FILE__, __LINE__, "case %zu: %zu checks, want %zu", i, res.n_checks, cases[i].n);
                if (r == 0 && res.n_checks > 0 && res.checks[0].ok != cases[i].first_ok)
                        test_fail(__FILE__, __LINE__, "case %zu: first check ok=%d", i, res.checks[0].ok);
        }
}

TEST(migrate_checks_parse_bounded) {
        /* More checks than the result holds: kept to the bound, no overflow. */
        char *text = strdup("{\"checks\":[");
        for (int i = 0; i < 40; i++) {
                char *n = strdup_printf("%s%s{\"name\":\"c%d\",\"ok\":true,\"message\":\"m\"}", text, i ? "," : "", i);
                free(text);
                text = n;
        }
        char *n = strdup_printf("%s]}", text);
        free(text);
        struct vm_migrate_result res = {};
        CHECK_EQ_INT(vm_migrate_checks_parse(n, &res, NULL), 0);
        CHECK_EQ_INT(res.n_checks, VM_MIGRATE_MAX_CHECKS);
        free(n);
}

static int progress_of(const char *js, struct vm_migrate_progress *p) {
        struct json_value *v = NULL;
        int r = json_parse(js, strlen(js), NULL, &v, NULL);
        if (r < 0)
                return r;
        r = vm_migrate_progress_from_json(v, p);
        json_value_free(v);
        return r;
}

TEST(migrate_progress_from_query) {
        struct vm_migrate_progress p = {};
        CHECK_EQ_INT(progress_of("{\"status\":\"active\",\"expected-downtime\":30,\"ram\":{\"transferred\":100,"
                                 "\"remaining\":300,\"total\":400,\"mbps\":800,\"dirty-pages-rate\":10,"
                                 "\"page-size\":4096,\"dirty-sync-count\":2}}", &p), 0);
        CHECK_STREQ(p.status, "active");
        CHECK_EQ_U64(p.transferred, 100);
        CHECK_EQ_U64(p.remaining, 300);
        CHECK_EQ_U64(p.rate_bps, 100000000);
        CHECK_EQ_U64(p.dirty_rate, 40960);
        CHECK_EQ_INT(p.pass, 2);
        CHECK_EQ_U64(p.expected_downtime_ms, 30);
        CHECK(p.percent > 24.9 && p.percent < 25.1);
        /* Remaining grows again (pages dirtied): the percent stays. */
        CHECK_EQ_INT(progress_of("{\"status\":\"active\",\"ram\":{\"remaining\":390,\"total\":400}}", &p), 0);
        CHECK(p.percent > 24.9 && p.percent < 25.1);
        CHECK_EQ_INT(progress_of("{\"status\":\"completed\",\"ram\":{\"remaining\":0,\"total\":400}}", &p), 0);
        CHECK(p.percent == 100.0);
        /* Malformed replies are refused, not guessed. */
        CHECK_EQ_INT(progress_of("{\"ram\":{}}", &p), -EPROTO);
        CHECK_EQ_INT(progress_of("[1]", &p), -EPROTO);
        CHECK_EQ_INT(progress_of("{\"status\":5}", &p), -EPROTO);
        /* Wrong types in ram read as 0, never as garbage. */
        CHECK_EQ_INT(progress_of("{\"status\":\"active\",\"ram\":{\"transferred\":-5,\"total\":\"x\"}}", &p), 0);
        CHECK_EQ_U64(p.transferred, 0);
        CHECK_EQ_U64(p.total, 0);
}

TEST(migrate_downtime_steps) {
        CHECK_EQ_INT(vm_migrate_next_downtime(50, 500, 0), 50);
        CHECK_EQ_INT(vm_migrate_next_downtime(50, 500, 1), 50);
        CHECK_EQ_INT(vm_migrate_next_downtime(50, 500, 2), 100);
        CHECK_EQ_INT(vm_migrate_next_downtime(400, 500, 3), 500);
        CHECK_EQ_INT(vm_migrate_next_downtime(500, 500, 9), 500);
        CHECK_EQ_INT(vm_migrate_next_downtime(50, 30, 0), 30);
}

TEST(migrate_postcopy_switch) {
        /* Only when asked for, once, and on the same stall as a downtime step. */
        CHECK(!vm_migrate_want_postcopy(false, false, 5));
        CHECK(!vm_migrate_want_postcopy(true, false, 0));
        CHECK(!vm_migrate_want_postcopy(true, false, 1));
        CHECK(vm_migrate_want_postcopy(true, false, 2));
        CHECK(vm_migrate_want_postcopy(true, false, 7));
        CHECK(!vm_migrate_want_postcopy(true, true, 7));
        CHECK_STREQ(vm_migrate_phase_to_string(VM_MIGRATE_PHASE_POSTCOPY), "postcopy");
        CHECK_STREQ(vm_migrate_phase_to_string(VM_MIGRATE_PHASE_DONE), "done");
}

TEST(migrate_parse_rate) {
        uint64_t v = 0;
        CHECK_EQ_INT(vm_migrate_parse_rate("1G", &v), 0);
        CHECK_EQ_U64(v, 1ull << 30);
        CHECK_EQ_INT(vm_migrate_parse_rate("500M/s", &v), 0);
        CHECK_EQ_U64(v, 500ull << 20);
        CHECK(vm_migrate_parse_rate("", &v) < 0);
        CHECK(vm_migrate_parse_rate("0", &v) < 0);
        CHECK(vm_migrate_parse_rate("fast", &v) < 0);
        CHECK(vm_migrate_parse_rate("1111111111111111111111111111111111111", &v) < 0);
}

TEST(migrate_forward_argv) {
        const struct vh_context *ctx = test_ctx();
        struct host_def *def = host_def_new("b");
        def->ssh = strdup("root@10.0.0.2");
        char **argv = NULL;
        CHECK_EQ_INT(host_ssh_forward_argv(ctx, def, "/run/l.sock", "/run/r.sock", &argv, NULL), 0);
        bool own = false, exit_fail = false, fwd = false, no_cmd = false, mux = false;
        size_t n = 0;
        for (; argv && argv[n]; n++) {
                own |= streq(argv[n], "ControlPath=none");
                mux |= startswith(argv[n], "ControlMaster=auto");
                exit_fail |= streq(argv[n], "ExitOnForwardFailure=yes");
                fwd |= n > 0 && streq(argv[n - 1], "-L") && streq(argv[n], "/run/l.sock:/run/r.sock");
                no_cmd |= streq(argv[n], "-N");
        }
        CHECK(own && !mux && exit_fail && fwd && no_cmd);
        /* The target is last: no remote command. */
        CHECK(n > 0 && streq(argv[n - 1], "root@10.0.0.2"));
        host_names_free(argv);
        host_def_free(def);
}
