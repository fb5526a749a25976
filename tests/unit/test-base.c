/* tests/unit/test-base.c: unit tests for src/base/. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/defs.h"
#include "base/fileio.h"
#include "base/json-writer.h"
#include "base/keyfile.h"
#include "base/poll.h"
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

/* The reader the VM, network and host definitions share: a file of
 * exactly the limit is read, one byte more is refused naming the file, a
 * missing one is -ENOENT with no message (the caller words it). */
TEST(def_file_read_limits_and_names) {
        char path[512];
        snprintf(path, sizeof(path), "%s/def.conf", test_tmpdir());
        CHECK(write_file_atomic(path, "name = a\n", 9, 0600) == 0);
        char *text = NULL;
        struct vh_error err = {};
        CHECK(def_file_read(path, 9, &text, &err) == 0);
        CHECK_STREQ(text, "name = a\n");
        free(text);
        text = NULL;
        CHECK(def_file_read(path, 8, &text, &err) == -EFBIG);
        CHECK(text == NULL);
        CHECK(strstr(vh_error_message(&err, -EFBIG), "def.conf: larger than 8 bytes") != NULL);
        struct vh_error none = {};
        snprintf(path, sizeof(path), "%s/nosuch.conf", test_tmpdir());
        CHECK(def_file_read(path, 9, &text, &none) == -ENOENT);
        CHECK(none.msg[0] == 0);
        CHECK(def_name_check("x.conf", "a", "a", &none) == 0);
        CHECK(def_name_check("x.conf", "b", "a", &err) == -EINVAL);
        CHECK_STREQ(vh_error_message(&err, -EINVAL), "x.conf: says name = b, but the file is for 'a'");
}

#define RUN_MS (60 * 1000) /* generous: these commands take milliseconds */

TEST(process_run_captures) {
        char *out = NULL;
        struct vh_error err = {};
        char *argv[] = { "sh", "-c", "echo hi; echo err >&2; exit 3", NULL };
        CHECK_EQ_INT(process_run(test_ctx(), argv, RUN_MS, 1024, &out, &err), 3);
        CHECK_STREQ(out, "hi\nerr\n");
        free(out);
        char *argv2[] = { "vmhost-no-such-program", NULL };
        CHECK_EQ_INT(process_run(test_ctx(), argv2, RUN_MS, 1024, NULL, &err), -ENOENT);
        CHECK(strstr(err.msg, "vmhost-no-such-program"));
        /* Output past the limit is an error that names the command... */
        char *argv3[] = { "sh", "-c", "yes | head -c 100000", NULL };
        out = NULL;
        CHECK_EQ_INT(process_run(test_ctx(), argv3, RUN_MS, 10, &out, &err), -E2BIG);
        CHECK(out == NULL);
        CHECK(strstr(err.msg, "'sh'") && strstr(err.msg, "10 bytes"));
        /* ...but nothing is kept when the caller does not want the output. */
        CHECK_EQ_INT(process_run(test_ctx(), argv3, RUN_MS, 10, NULL, &err), 0);
        CHECK_EQ_INT(process_run(test_ctx(), argv3, RUN_MS, 100000, &out, &err), 0);
        CHECK_EQ_INT(out ? strlen(out) : 0, 100000);
        free(out);
        out = NULL;
        /* No output at all is an empty string, not NULL. */
        char *argv4[] = { "true", NULL };
        CHECK_EQ_INT(process_run(test_ctx(), argv4, RUN_MS, 10, &out, &err), 0);
        CHECK_STREQ(out, "");
        free(out);
        CHECK_EQ_INT(process_run(test_ctx(), argv4, 0, 10, NULL, &err), -EINVAL);
}

/* The pid a test's shell wrote to 'path', or -1. */
static int read_pid_file(const char *path) {
        char *line = NULL;
        long pid = -1;
        if (read_one_line_file(path, &line) == 0)
                pid = strtol(line, NULL, 10);
        free(line);
        return pid > 0 ? (int) pid : -1;
}

TEST(process_run_timeout_kills) {
        char pidfile[512], script[700];
        struct vh_error err = {};
        snprintf(pidfile, sizeof(pidfile), "%s/pid", test_tmpdir());
        /* Ignores SIGTERM (an ignored signal stays ignored across exec), so
         * only the SIGKILL that follows ends it. */
        snprintf(script, sizeof(script), "echo $$ > %s; trap '' TERM; exec sleep 600", pidfile);
        char *argv[] = { "sh", "-c", script, NULL };
        CHECK_EQ_INT(process_run(test_ctx(), argv, 300, 1024, NULL, &err), -ETIMEDOUT);
        CHECK(strstr(err.msg, "'sh'") && strstr(err.msg, "0.300 s"));
        int pid = read_pid_file(pidfile);
        CHECK(pid > 0);
        /* Killed and reaped: nothing of it is left. */
        CHECK(!process_alive(pid));
}

TEST(process_run_does_not_wait_for_daemons) {
        /* The child exits at once but leaves a process holding its output
         * pipe, as a daemonizing tool can: the run ends with the child. */
        char *out = NULL;
        struct vh_error err = {};
        char *argv[] = { "sh", "-c", "sleep 600 & echo $!", NULL };
        CHECK_EQ_INT(process_run(test_ctx(), argv, 20 * 1000, 1024, &out, &err), 0);
        long pid = out ? strtol(out, NULL, 10) : 0;
        CHECK(pid > 0);
        if (pid > 0)
                kill((pid_t) pid, SIGKILL);
        free(out);
}

TEST(process_run_exec_failure) {
        /* Executable, but no format the kernel knows: execve() fails in the
         * child, which reports its errno instead of exiting 127. */
        char path[512];
        struct vh_error err = {};
        snprintf(path, sizeof(path), "%s/not-a-program", test_tmpdir());
        CHECK(write_file_atomic(path, "\x01\x02garbage", 9, 0755) == 0);
        char *argv[] = { path, NULL };
        CHECK_EQ_INT(process_run(test_ctx(), argv, RUN_MS, 1024, NULL, &err), -ENOEXEC);
        CHECK(strstr(err.msg, path));
}

struct stream_count {
        size_t bytes, chunks;
        size_t cancel_after;  /* bytes; 0: never */
        int cancel_with;
};

static int count_output(const void *data, size_t size, void *userdata) {
        struct stream_count *c = userdata;
        const char *p = data;
        for (size_t i = 0; i < size; i++)
                if (p[i] != 'y' && p[i] != '\n' && p[i] != '\0')
                        return -EBADMSG; /* stderr must never arrive here */
        c->bytes += size;
        c->chunks++;
        return c->cancel_after && c->bytes >= c->cancel_after ? c->cancel_with : 0;
}

TEST(process_run_stream_passes_stdout_keeps_stderr_apart) {
        struct stream_count c = {};
        struct vh_error err = {};
        char *errtext = NULL;
        /* More than a pipe holds, so it arrives in many chunks. */
        char *argv[] = { "sh", "-c", "echo warning >&2; head -c 3000000 /dev/zero; echo done >&2", NULL };
        CHECK_EQ_INT(process_run_stream(test_ctx(), argv, RUN_MS, count_output, &c, &errtext, &err), 0);
        CHECK_EQ_U64(c.bytes, 3000000);
        CHECK(c.chunks > 1);
        CHECK_STREQ(errtext, "warning\ndone\n");
        free(errtext);
}

TEST(process_run_stream_cancel_and_idle_timeout) {
        char pidfile[512], script[700];
        struct vh_error err = {};
        snprintf(pidfile, sizeof(pidfile), "%s/pid", test_tmpdir());
        snprintf(script, sizeof(script), "echo $$ > %s; exec yes", pidfile);
        char *argv[] = { "sh", "-c", script, NULL };

        /* 'yes' never ends: only the cancel does. */
        struct stream_count c = { .cancel_after = 1 << 20, .cancel_with = 1 };
        CHECK_EQ_INT(process_run_stream(test_ctx(), argv, RUN_MS, count_output, &c, NULL, &err), -ECANCELED);
        CHECK(c.bytes >= (size_t) 1 << 20);
        int pid = read_pid_file(pidfile);
        CHECK(pid > 0 && !process_alive(pid));

        /* A negative return is passed on as it is. */
        c = (struct stream_count) { .cancel_after = 1, .cancel_with = -EIO };
        CHECK_EQ_INT(process_run_stream(test_ctx(), argv, RUN_MS, count_output, &c, NULL, &err), -EIO);

        /* Silence longer than the idle limit ends the run. */
        c = (struct stream_count) {};
        char *argv2[] = { "sh", "-c", "echo y; exec sleep 600", NULL };
        CHECK_EQ_INT(process_run_stream(test_ctx(), argv2, 300, count_output, &c, NULL, &err), -ETIMEDOUT);
        CHECK(strstr(err.msg, "no output"));
        CHECK_EQ_U64(c.bytes, 2);
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

/* A child that listens on 127.0.0.1:port and tells 'ready' when it does;
 * with 'stubborn' it ignores SIGTERM. */
static pid_t listening_child(int *port, bool stubborn) {
        int pipefd[2];
        if (pipe(pipefd) < 0)
                return -1;
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        socklen_t len = sizeof(a);
        if (s < 0 || bind(s, (struct sockaddr *) &a, sizeof(a)) < 0 || listen(s, 1) < 0 ||
            getsockname(s, (struct sockaddr *) &a, &len) < 0)
                return -1;
        *port = ntohs(a.sin_port);
        pid_t pid = fork();
        if (pid == 0) {
                if (stubborn)
                        signal(SIGTERM, SIG_IGN);
                (void) !write(pipefd[1], "x", 1);
                for (;;)
                        pause();
        }
        close(s);
        char c;
        close(pipefd[1]);
        (void) !read(pipefd[0], &c, 1);
        close(pipefd[0]);
        return pid;
}

static bool port_free(int port) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        bool ok = s >= 0 && bind(s, (struct sockaddr *) &a, sizeof(a)) == 0;
        if (s >= 0)
                close(s);
        return ok;
}

TEST(process_pidfd_terminate_waits_for_sockets) {
        for (int stubborn = 0; stubborn <= 1; stubborn++) {
                int port = 0;
                pid_t pid = listening_child(&port, stubborn);
                CHECK(pid > 0);
                CHECK(!port_free(port));
                int fd = process_pidfd_open(pid);
                CHECK(fd >= 0);
                /* The stubborn one takes SIGKILL after the 200 ms for SIGTERM. */
                CHECK_EQ_INT(process_pidfd_terminate(fd, 200, 2000), stubborn);
                /* Gone means its socket is closed: the port binds at once. */
                CHECK(port_free(port));
                close(fd);
                waitpid(pid, NULL, 0);
        }
        CHECK_EQ_INT(process_pidfd_open(0), -EINVAL);
        /* A reaped child has no process behind its pid any more. */
        pid_t pid = fork();
        if (pid == 0)
                _exit(0);
        waitpid(pid, NULL, 0);
        CHECK(process_wait_gone(pid, 10));
}

/* Reads all of 'text' as "t.conf": the entries as "key=value|" each, or on
 * failure the error message; returns what keyfile_new()/keyfile_next() did. */
static int keyfile_read_all(const char *text, const struct keyfile_syntax *syntax, char *out, size_t len) {
        struct vh_error e = {};
        struct keyfile *kf = NULL;
        out[0] = '\0';
        int r = keyfile_new(text, "t.conf", syntax, &kf, &e);
        if (r >= 0) {
                const char *key, *value;
                while ((r = keyfile_next(kf, &key, &value, &e)) > 0) {
                        size_t n = strlen(out);
                        snprintf(out + n, len - n, "%s=%s|", key, value);
                }
                kf = keyfile_free(kf);
        }
        if (r < 0)
                snprintf(out, len, "%s", e.msg);
        return r;
}

/* 47 comment lines, 94 bytes: with "a = 1\n" exactly at the 100-byte limit. */
#define LINES_10 "#\n#\n#\n#\n#\n#\n#\n#\n#\n#\n"
#define LINES_47 LINES_10 LINES_10 LINES_10 LINES_10 "#\n#\n#\n#\n#\n#\n#\n"

TEST(keyfile_read_table) {
        static const char *const repeatable[] = { "tag", NULL };
        /* Small limits, so the tests reach them: 100 bytes, lines under 20. */
        static const struct keyfile_syntax strict = {
                .max_bytes = 100,
                .max_line = 20,
                .repeatable = repeatable,
                .quote_line_max = 12,
                .quote_key_max = 6,
        };
        static const struct keyfile_syntax lenient = {
                .max_bytes = 100,
                .max_line = 20,
                .allow_repeats = true,
                .allow_empty_key = true,
        };
        static const struct {
                const struct keyfile_syntax *syntax;
                const char *text;
                int r;
                const char *want;
        } cases[] = {
                /* Good lines, comments and blank lines. */
                { &strict, "", 0, "" },
                { &strict, "a = 1\nb=2\n", 0, "a=1|b=2|" },
                { &strict, "  a  =  x y  \n", 0, "a=x y|" },
                { &strict, "a = 1\r\n\tb = 2", 0, "a=1|b=2|" },
                { &strict, "# a = 1\n\n   \n\t\n  # b\nc = 3\n", 0, "c=3|" },
                { &strict, "a = b = c\n", 0, "a=b = c|" },
                { &strict, "a = 1 # no\n", 0, "a=1 # no|" },
                { &strict, "a = \"q\"\n", 0, "a=\"q\"|" },
                { &strict, "tag = 1\ntag = 2\n", 0, "tag=1|tag=2|" },
                /* Malformed lines name file and line. */
                { &strict, "a = 1\njunk\n", -EINVAL, "t.conf:2: expected 'key = value', got 'junk'" },
                { &strict, "abcdefghijklmnopq\n", -EINVAL, "t.conf:1: expected 'key = value', got 'abcdefghijkl'" },
                { &strict, "# x\n = 1\n", -EINVAL, "t.conf:2: missing key before '='" },
                { &strict, "a = 1\nb =  \n", -EINVAL, "t.conf:2: key 'b' has no value" },
                { &strict, "abcdefghij =\n", -EINVAL, "t.conf:1: key 'abcdef' has no value" },
                { &strict, "a = 1\n# a = 2\nb = 2\na = 3\n", -EINVAL, "t.conf:4: key 'a' given twice" },
                /* Limits: a line must be shorter than max_line, before stripping. */
                { &strict, "a = 0123456789abcde\n", 0, "a=0123456789abcde|" },
                { &strict, "a = 1\na = 0123456789abcdef\n", -EINVAL, "t.conf:2: line longer than 20 bytes" },
                { &strict, "a = 1\n                    \n", -EINVAL, "t.conf:2: line longer than 20 bytes" },
                /* Lines past the byte limit: that bounds the number of lines too. */
                { &strict, LINES_47 "a = 1\n", 0, "a=1|" },
                { &strict, LINES_47 "a = 12\n", -EFBIG, "t.conf: larger than 100 bytes" },
                /* What a lenient format lets through. */
                { &lenient, "a = 1\na = 2\n", 0, "a=1|a=2|" },
                { &lenient, " = 1\n", 0, "=1|" },
                { &lenient, "abcdefghijklmnopq\n", -EINVAL, "t.conf:1: expected 'key = value', got 'abcdefghijklmnopq'" },
                { &lenient, "abcdefghij =\n", -EINVAL, "t.conf:1: key 'abcdefghij' has no value" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char out[512];
                int r = keyfile_read_all(cases[i].text, cases[i].syntax, out, sizeof(out));
                if (r != cases[i].r)
                        test_fail(__FILE__, __LINE__, "case %zu: r = %d, want %d (%s)", i, r, cases[i].r, out);
                if (!streq(out, cases[i].want))
                        test_fail(__FILE__, __LINE__, "case %zu: got \"%s\", want \"%s\"", i, out, cases[i].want);
        }
}

TEST(keyfile_error_names_the_line) {
        static const struct keyfile_syntax syntax = { .max_bytes = 1024, .max_line = 128 };
        struct keyfile *kf = NULL;
        struct vh_error e = {};
        const char *key, *value;
        CHECK_EQ_INT(keyfile_new("a = 1\n# b\n\nc = 7\n", "x/vm.conf", &syntax, &kf, &e), 0);
        if (!kf)
                return;
        CHECK_EQ_INT(keyfile_next(kf, &key, &value, &e), 1);
        CHECK_EQ_INT(keyfile_line(kf), 1);
        CHECK_EQ_INT(keyfile_next(kf, &key, &value, &e), 1);
        CHECK_STREQ(key, "c");
        CHECK_STREQ(value, "7");
        CHECK_EQ_INT(keyfile_line(kf), 4);
        CHECK_EQ_INT(keyfile_error(kf, &e, -ERANGE, "%s must be 1..5, not '%s'", key, value), -ERANGE);
        CHECK_STREQ(e.msg, "x/vm.conf:4: c must be 1..5, not '7'");
        CHECK_EQ_INT(e.code, -ERANGE);
        CHECK_EQ_INT(keyfile_next(kf, &key, &value, &e), 0);
        CHECK_EQ_INT(keyfile_next(kf, &key, &value, &e), 0);
        kf = keyfile_free(kf);
        CHECK(keyfile_free(NULL) == NULL);
}

TEST(keyfile_value_helpers) {
        static const struct {
                const char *in;
                int r;
                bool v;
        } bools[] = {
                { "yes", 0, true }, { "true", 0, true }, { "on", 0, true }, { "1", 0, true },
                { "no", 0, false }, { "false", 0, false }, { "off", 0, false }, { "0", 0, false },
                { "", -EINVAL, false }, { "Yes", -EINVAL, false }, { "2", -EINVAL, false }, { "y", -EINVAL, false },
        };
        for (size_t i = 0; i < ELEMENTSOF(bools); i++) {
                bool v = !bools[i].v;
                int r = keyfile_parse_bool(bools[i].in, &v);
                if (r != bools[i].r || (r == 0 && v != bools[i].v))
                        test_fail(__FILE__, __LINE__, "keyfile_parse_bool(\"%s\") = %d, %d", bools[i].in, r, v);
                if (r < 0 && v != !bools[i].v)
                        test_fail(__FILE__, __LINE__, "keyfile_parse_bool(\"%s\") changed its output", bools[i].in);
        }

        static const char *const names[] = { "disk", NULL, "kernel" };
        CHECK_EQ_INT(keyfile_parse_choice("disk", names, ELEMENTSOF(names)), 0);
        CHECK_EQ_INT(keyfile_parse_choice("kernel", names, ELEMENTSOF(names)), 2);
        CHECK_EQ_INT(keyfile_parse_choice("cdrom", names, ELEMENTSOF(names)), -EINVAL);
        CHECK_EQ_INT(keyfile_parse_choice("", names, ELEMENTSOF(names)), -EINVAL);

        char *s = NULL;
        CHECK_EQ_INT(keyfile_set_string(&s, "one"), 0);
        CHECK_EQ_INT(keyfile_set_string(&s, "two"), 0);
        CHECK_STREQ(s, "two");
        free(s);
}

static void ignore_alarm(int sig) {
        (void) sig;
}

TEST(poll_until_deadline) {
        int p[2];
        CHECK(pipe(p) == 0);
        /* Nothing to read: 0 once the deadline has passed. */
        CHECK_EQ_INT(vh_poll_until(p[0], POLLIN, vh_deadline_after(20)), 0);
        CHECK_EQ_INT(vh_poll_until(p[0], POLLIN, 0), 0);
        /* A signal in the middle (no SA_RESTART: poll fails with EINTR)
         * neither ends the wait nor becomes an error. */
        struct sigaction sa = { .sa_handler = ignore_alarm }, old;
        sigemptyset(&sa.sa_mask);
        CHECK(sigaction(SIGALRM, &sa, &old) == 0);
        struct itimerval t = { .it_value = { .tv_usec = 20 * 1000 } }, off = {};
        CHECK(setitimer(ITIMER_REAL, &t, NULL) == 0);
        CHECK_EQ_INT(vh_poll_until(p[0], POLLIN, vh_deadline_after(300)), 0);
        setitimer(ITIMER_REAL, &off, NULL);
        sigaction(SIGALRM, &old, NULL);
        /* Readable: its revents. */
        CHECK(write(p[1], "x", 1) == 1);
        CHECK_EQ_INT(vh_poll_until(p[0], POLLIN, vh_deadline_after(10 * 1000)), POLLIN);
        struct pollfd fds[2] = { { .fd = p[0], .events = POLLIN }, { .fd = p[1], .events = POLLOUT } };
        CHECK_EQ_INT(vh_poll_fds_until(fds, 2, vh_deadline_after(10 * 1000)), 2);
        close(p[0]);
        close(p[1]);
        CHECK_EQ_INT(vh_poll_until(p[0], POLLIN, 0), POLLNVAL);
}

/* Another host's text made safe for a terminal: controls, DEL, C1
 * controls and bytes that are not UTF-8 each become '?', the rest stays,
 * the length never changes. */
TEST(str_make_printable_table) {
        static const struct { const char *in; unsigned flags; const char *out; } cases[] = {
                { "plain text", 0, "plain text" },
                { "", 0, "" },
                { "\x1b[31mred\x1b[0m", 0, "?[31mred?[0m" },
                { "\x1b]0;title\x07", 0, "?]0;title?" },
                { "a\rb\bc\x7f", 0, "a?b?c?" },
                { "l1\nl2\tx", 0, "l1?l2?x" },
                { "l1\nl2\tx\r", STR_PRINTABLE_LINES, "l1\nl2\tx?" },
                { "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", 0, "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80" },
                { "\xc2\x9b" "2J", 0, "??2J" },             /* C1 CSI as UTF-8 */
                { "\x9b" "2J", 0, "?2J" },                  /* C1 CSI as one byte */
                { "\xc3(", 0, "?(" },                       /* truncated sequence */
                { "\xc0\xaf", 0, "??" },                    /* overlong */
                { "\xed\xa0\x80", 0, "???" },               /* surrogate */
                { "\xf5\x80\x80\x80", 0, "????" },          /* past U+10FFFF */
                { "end\xe2\x82", 0, "end??" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char buf[64];
                snprintf(buf, sizeof(buf), "%s", cases[i].in);
                str_make_printable(buf, cases[i].flags);
                if (!streq(buf, cases[i].out))
                        test_fail(__FILE__, __LINE__, "case %zu: got '%s', want '%s'", i, buf, cases[i].out);
                _cleanup_free_ char *d = str_printable_dup(cases[i].in, cases[i].flags);
                CHECK(d && streq(d, cases[i].out));
        }
        CHECK(str_make_printable(NULL, 0) == NULL);
}
