/* tests/unit/test-http.c: the web server's request parser (src/web/http.c):
 * tables of good and bad requests with the status each must get, path and
 * query decoding, cookies, MIME types, and the static file opener against
 * symlinks. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"
#include "web/http.h"
#include "web/web-static.h"

static const struct {
        const char *text;
        int result;        /* 0, -EAGAIN, or <0 with 'status' */
        int status;
        const char *path;  /* path_raw when parsed */
        bool keep_alive;
} requests[] = {
        { "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0, 0, "/", true },
        { "GET /app.js?x=1 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 0, 0, "/app.js", false },
        { "GET / HTTP/1.0\r\n\r\n", 0, 0, "/", false },
        { "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", 0, 0, "/", true },
        { "POST /api/vms/a/start HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}", 0, 0, "/api/vms/a/start", true },
        { "GET / HTTP/1.1\r\nHost:   a  \r\nX-Empty:\r\n\r\n", 0, 0, "/", true },
        /* Incomplete: read more. */
        { "GET / HTTP/1.1\r\nHost: a\r\n", -EAGAIN, 0, NULL, false },
        { "GET / HTT", -EAGAIN, 0, NULL, false },
        { "", -EAGAIN, 0, NULL, false },
        /* Malformed. */
        { "GET / HTTP/1.1\nHost: a\n\n\r\n\r\n", -EINVAL, 400, NULL, false },
        { "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", -EINVAL, 400, NULL, false },
        { "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", -EINVAL, 400, NULL, false },
        { "GET * HTTP/1.1\r\nHost: a\r\n\r\n", -EINVAL, 400, NULL, false },
        { "GET / HTTP/1.1\r\n\r\n", -EINVAL, 400, NULL, false },              /* no Host */
        { "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", -EINVAL, 400, NULL, false },
        { "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", -EINVAL, 400, NULL, false },
        { "GET / HTTP/1.1\r\nHost : a\r\n\r\n", -EINVAL, 400, NULL, false },
        { "GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n", -EINVAL, 400, NULL, false },
        { "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", -EINVAL, 400, NULL, false },
        { "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", -EINVAL, 400, NULL, false },
        { "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", -EINVAL, 400, NULL, false },
        { "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", -EOPNOTSUPP, 400,
          NULL, false },
        { "GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n", -EOPNOTSUPP, 501, NULL, false },
        { "BREW / HTTP/1.1\r\nHost: a\r\n\r\n", -EOPNOTSUPP, 501, NULL, false },
        { "GET / HTTP/2.0\r\nHost: a\r\n\r\n", -EPROTONOSUPPORT, 505, NULL, false },
        { "GET / FTP/1.1\r\nHost: a\r\n\r\n", -EINVAL, 400, NULL, false },
        { "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 65537\r\n\r\n", -EFBIG, 413, NULL, false },
        { "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", -EFBIG, 413, NULL,
          false },
};

TEST(http_request_table) {
        for (size_t i = 0; i < sizeof(requests) / sizeof(requests[0]); i++) {
                struct http_request req = {};
                int status = 0;
                const char *t = requests[i].text;
                int r = http_request_parse(t, strlen(t), &req, &status);
                if (r != requests[i].result || (r < 0 && r != -EAGAIN && status != requests[i].status)) {
                        test_fail(__FILE__, __LINE__, "request %zu: got %d/%d, want %d/%d", i, r, status,
                                  requests[i].result, requests[i].status);
                        continue;
                }
                if (r == 0) {
                        CHECK_STREQ(req.path_raw, requests[i].path);
                        CHECK_EQ_INT(req.keep_alive, requests[i].keep_alive);
                        CHECK(req.head_len <= strlen(t));
                }
                http_request_done(&req);
        }
}

TEST(http_request_fields) {
        const char *t = "POST /api/vms/r1/start?a=b HTTP/1.1\r\nHost: 127.0.0.1:8470\r\n"
                        "Cookie: x=1; vmhost_session_8470=abc\r\nConnection: keep-alive, Upgrade\r\n"
                        "Upgrade: websocket\r\nContent-Length: 3\r\n\r\nxyzGET / HTTP/1.1\r\n";
        struct http_request req;
        int status;
        CHECK_EQ_INT(http_request_parse(t, strlen(t), &req, &status), 0);
        CHECK_STREQ(req.method, "POST");
        CHECK_STREQ(req.target, "/api/vms/r1/start?a=b");
        CHECK_STREQ(req.query, "a=b");
        CHECK_STREQ(http_request_header(&req, "host"), "127.0.0.1:8470");
        CHECK(http_request_header(&req, "Origin") == NULL);
        CHECK_EQ_U64(req.content_length, 3);
        CHECK(req.upgrade_websocket);
        /* The head ends at the empty line: the body and the next request follow. */
        CHECK(strncmp(t + req.head_len, "xyzGET", 6) == 0);
        char v[16];
        CHECK_EQ_INT(http_cookie_get(http_request_header(&req, "Cookie"), "vmhost_session_8470", v, sizeof(v)), 0);
        CHECK_STREQ(v, "abc");
        CHECK_EQ_INT(http_cookie_get(http_request_header(&req, "Cookie"), "vmhost_session", v, sizeof(v)), -ENOENT);
        CHECK_EQ_INT(http_cookie_get("a=12345", "a", v, 4), -ENAMETOOLONG);
        http_request_done(&req);
}

/* The limits: past each one the status it names, and never -EAGAIN for
 * ever (a client cannot make the server wait for a head without end). */
TEST(http_request_limits) {
        size_t n = HTTP_MAX_HEAD + 100;
        char *buf = malloc(n + 1);
        CHECK(buf);
        if (!buf)
                return;
        struct http_request req;
        int status = 0;
        /* A request line that never ends. */
        memset(buf, 'a', n);
        memcpy(buf, "GET /", 5);
        CHECK_EQ_INT(http_request_parse(buf, HTTP_MAX_REQUEST_LINE + 2, &req, &status), -E2BIG);
        CHECK_EQ_INT(status, 414);
        /* One huge header. */
        int k = snprintf(buf, n, "GET / HTTP/1.1\r\nHost: a\r\nX-Big: ");
        memset(buf + k, 'b', n - (size_t) k);
        CHECK_EQ_INT(http_request_parse(buf, n, &req, &status), -E2BIG);
        CHECK_EQ_INT(status, 431);
        /* Too many headers, each small. */
        size_t used = (size_t) snprintf(buf, n, "GET / HTTP/1.1\r\nHost: a\r\n");
        for (int i = 0; i < HTTP_MAX_HEADERS; i++)
                used += (size_t) snprintf(buf + used, n - used, "X-%d: v\r\n", i);
        used += (size_t) snprintf(buf + used, n - used, "\r\n");
        CHECK_EQ_INT(http_request_parse(buf, used, &req, &status), -E2BIG);
        CHECK_EQ_INT(status, 431);
        /* A NUL in an unfinished head is refused without waiting. */
        memcpy(buf, "GET /\0", 6);
        CHECK_EQ_INT(http_request_parse(buf, 6, &req, &status), -EINVAL);
        CHECK_EQ_INT(status, 400);
        free(buf);
}

static const struct {
        const char *raw;
        int result;
        const char *decoded;
} paths[] = {
        { "/", 0, "/" },
        { "/app.js", 0, "/app.js" },
        { "/a%20b/c.css", 0, "/a b/c.css" },
        { "/dir/", 0, "/dir/" },
        { "/a..b", 0, "/a..b" },
        { "/.well", 0, "/.well" },
        { "/..", -EACCES, NULL },
        { "/../etc/passwd", -EACCES, NULL },
        { "/a/../../b", -EACCES, NULL },
        { "/%2e%2e/etc/passwd", -EACCES, NULL },
        { "/%2E%2e/x", -EACCES, NULL },
        { "/.%2e/x", -EACCES, NULL },
        { "/a%2f..%2fb", -EACCES, NULL },
        { "/./a", -EACCES, NULL },
        { "//etc/passwd", -EACCES, NULL },
        { "/a//b", -EACCES, NULL },
        { "/a%00b", -EINVAL, NULL },
        { "/a%0ab", -EINVAL, NULL },
        { "/a%5c..%5cb", -EINVAL, NULL },
        { "/a%", -EINVAL, NULL },
        { "/a%4", -EINVAL, NULL },
        { "/a%zz", -EINVAL, NULL },
        { "relative", -EINVAL, NULL },
};

TEST(http_path_decode_table) {
        for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
                char *d = NULL;
                int r = http_path_decode(paths[i].raw, &d);
                if (r != paths[i].result)
                        test_fail(__FILE__, __LINE__, "path %s: got %d, want %d", paths[i].raw, r, paths[i].result);
                else if (r == 0)
                        CHECK_STREQ(d, paths[i].decoded);
                free(d);
        }
}

TEST(http_query) {
        char *v = NULL;
        CHECK_EQ_INT(http_query_get("a=1&token=ab%41+c&b", "token", &v), 0);
        CHECK_STREQ(v, "abA c");
        free(v);
        v = NULL;
        CHECK_EQ_INT(http_query_get("a=1&b", "b", &v), 0);
        CHECK_STREQ(v, "");
        free(v);
        v = NULL;
        CHECK_EQ_INT(http_query_get("tokens=1", "token", &v), -ENOENT);
        CHECK_EQ_INT(http_query_get(NULL, "token", &v), -ENOENT);
        CHECK_EQ_INT(http_query_get("token=%00", "token", &v), -EINVAL);
        CHECK(v == NULL);
}

TEST(http_mime) {
        CHECK_STREQ(http_mime_type("index.html"), "text/html; charset=utf-8");
        CHECK_STREQ(http_mime_type("app.js"), "text/javascript; charset=utf-8");
        CHECK_STREQ(http_mime_type("a/b.CSS"), "text/css; charset=utf-8");
        CHECK_STREQ(http_mime_type("x.svg"), "image/svg+xml");
        CHECK_STREQ(http_mime_type("x.png"), "image/png");
        CHECK_STREQ(http_mime_type("x.json"), "application/json");
        CHECK_STREQ(http_mime_type("x.wasm"), "application/wasm");
        CHECK(http_mime_type("README") == NULL);
        CHECK(http_mime_type("a.d/README") == NULL);
        CHECK(http_mime_type("x.sh") == NULL);
        CHECK_STREQ(http_status_reason(431), "Request Header Fields Too Large");
}

/* Symlinks out of the folder (or anywhere on the way) are refused. */
TEST(http_static_open) {
        char dir[512], path[600];
        snprintf(dir, sizeof(dir), "%s/www", test_tmpdir());
        CHECK(mkdir(dir, 0700) == 0);
        snprintf(path, sizeof(path), "%s/sub", dir);
        CHECK(mkdir(path, 0700) == 0);
        snprintf(path, sizeof(path), "%s/sub/ok.js", dir);
        FILE *f = fopen(path, "w");
        CHECK(f);
        if (f)
                fclose(f);
        snprintf(path, sizeof(path), "%s/out.js", dir);
        CHECK(symlink("/etc/passwd", path) == 0);
        snprintf(path, sizeof(path), "%s/in.js", dir);
        CHECK(symlink("sub/ok.js", path) == 0);
        snprintf(path, sizeof(path), "%s/link", dir);
        CHECK(symlink("/etc", path) == 0);
        int dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        CHECK(dfd >= 0);
        int fd = web_static_open(dfd, "sub/ok.js");
        CHECK(fd >= 0);
        if (fd >= 0)
                close(fd);
        CHECK(web_static_open(dfd, "out.js") < 0);
        CHECK(web_static_open(dfd, "in.js") < 0);
        CHECK(web_static_open(dfd, "link/passwd") < 0);
        CHECK(web_static_open(dfd, "missing.js") == -ENOENT);
        close(dfd);
}
