/* tests/unit/test-base.c: unit tests for src/base/. */
#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/json-writer.h"
#include "base/process.h"
#include "base/strutil.h"
#include "test.h"

TEST(parse_size_table) {
        static const struct {
                const char *in;
                int r;
                uint64_t v;
        } cases[] = {
                { "0", 0, 0 },
                { "4096", 0, 4096 },
                { "64k", 0, 65536 },
                { "64K", 0, 65536 },
                { "1M", 0, 1 << 20 },
                { "10G", 0, 10ULL << 30 },
                { "2GiB", 0, 2ULL << 30 },
                { "1.5G", 0, 3ULL << 29 },
                { "1T", 0, 1ULL << 40 },
                { "", -EINVAL, 0 },
                { "G", -EINVAL, 0 },
                { "-1", -EINVAL, 0 },
                { "1X", -EINVAL, 0 },
                { "1.5", -EINVAL, 0 },
                { "1GG", -EINVAL, 0 },
                { "99999999999999999999", -ERANGE, 0 },
                { "16777216T", -ERANGE, 0 },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                uint64_t v = 12345;
                int r = parse_size(cases[i].in, &v);
                if (r != cases[i].r)
                        test_fail(__FILE__, __LINE__, "parse_size(\"%s\") = %d, want %d", cases[i].in, r, cases[i].r);
                else if (r == 0 && v != cases[i].v)
                        test_fail(__FILE__, __LINE__, "parse_size(\"%s\") = %" PRIu64, cases[i].in, v);
        }
}

TEST(format_size_units) {
        char b[32];
        CHECK_STREQ(format_size(512, b, sizeof(b)), "512 B");
        CHECK_STREQ(format_size(2ULL << 30, b, sizeof(b)), "2 GiB");
        CHECK_STREQ(format_size(3ULL << 19, b, sizeof(b)), "1.5 MiB");
}

TEST(name_validation) {
        CHECK(name_is_valid("demo"));
        CHECK(name_is_valid("vm-1_a"));
        CHECK(name_is_valid("0abc"));
        CHECK(!name_is_valid(""));
        CHECK(!name_is_valid(NULL));
        CHECK(!name_is_valid("-x"));
        CHECK(!name_is_valid("a/b"));
        CHECK(!name_is_valid(".."));
        CHECK(!name_is_valid("a b"));
        CHECK(!name_is_valid("abcdefghijabcdefghijabcdefghijabc")); /* 33 chars */
}

TEST(parse_numbers) {
        uint64_t u;
        long l;
        CHECK(parse_u64("42", &u) == 0 && u == 42);
        CHECK(parse_u64("42x", &u) == -EINVAL);
        CHECK(parse_u64("-1", &u) == -EINVAL);
        CHECK(parse_int_range("7", 1, 10, &l) == 0 && l == 7);
        CHECK(parse_int_range("11", 1, 10, &l) == -ERANGE);
        CHECK(parse_int_range("", 1, 10, &l) == -EINVAL);
}

TEST(json_writer_shapes) {
        struct json_writer w;
        json_writer_init(&w, false);
        json_object_begin(&w);
        json_kv_string(&w, "name", "a\"b\n");
        json_kv_int(&w, "n", -3);
        json_key(&w, "list");
        json_array_begin(&w);
        json_bool(&w, true);
        json_null(&w);
        json_array_end(&w);
        json_key(&w, "empty");
        json_object_begin(&w);
        json_object_end(&w);
        json_object_end(&w);
        int err = 0;
        char *s = json_writer_finish(&w, &err);
        CHECK_STREQ(s, "{\"name\":\"a\\\"b\\n\",\"n\":-3,\"list\":[true,null],\"empty\":{}}");
        free(s);

        json_writer_init(&w, false);
        json_object_begin(&w);
        s = json_writer_finish(&w, &err);
        CHECK(s == NULL);
        CHECK_EQ_INT(err, -EINVAL);
}

TEST(file_roundtrip_and_limit) {
        char path[512];
        snprintf(path, sizeof(path), "%s/a/b/c", test_tmpdir());
        CHECK(mkdir_p(path, 0700) == 0);
        snprintf(path, sizeof(path), "%s/a/f", test_tmpdir());
        CHECK(write_file_atomic(path, "hello\nworld\n", 12, 0600) == 0);
        char *data = NULL;
        size_t len = 0;
        CHECK(read_full_file(path, 100, &data, &len) == 0);
        CHECK_EQ_INT(len, 12);
        free(data);
        data = NULL;
        CHECK(read_full_file(path, 5, &data, &len) == -EFBIG);
        CHECK(data == NULL);
        CHECK(read_one_line_file(path, &data) == 0);
        CHECK_STREQ(data, "hello");
        free(data);
        struct stat st;
        CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600);
}

TEST(process_run_captures) {
        char *out = NULL;
        char *argv[] = { "sh", "-c", "echo hi; echo err >&2; exit 3", NULL };
        CHECK_EQ_INT(process_run(argv, 1024, &out), 3);
        CHECK_STREQ(out, "hi\nerr\n");
        free(out);
        char *argv2[] = { "vmhost-no-such-program", NULL };
        CHECK_EQ_INT(process_run(argv2, 1024, NULL), -ENOENT);
        /* Output past the limit is drained, not kept. */
        char *argv3[] = { "sh", "-c", "yes | head -c 100000", NULL };
        out = NULL;
        CHECK_EQ_INT(process_run(argv3, 10, &out), 0);
        CHECK_EQ_INT(strlen(out), 10);
        free(out);
}

TEST(process_alive_sees_zombies_as_dead) {
        pid_t pid = fork();
        if (pid == 0)
                _exit(0);
        CHECK(pid > 0);
        /* Not reaped yet: a zombie. */
        for (int i = 0; i < 200; i++) {
                char path[64], buf[256] = "";
                snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
                FILE *f = fopen(path, "r");
                if (f) {
                        if (!fgets(buf, sizeof(buf), f))
                                buf[0] = '\0';
                        fclose(f);
                }
                if (strstr(buf, ") Z "))
                        break;
                usleep(5000);
        }
        CHECK(!process_alive(pid));
        CHECK(process_alive(getpid()));
        CHECK(!process_alive(0));
        waitpid(pid, NULL, 0);
}
