/* tools/fuzz/fuzz-http.c: libFuzzer target for the web server's request
 * parser (src/web/http.c), which reads whatever a client sends. Besides
 * memory safety it checks the parser's promises: a result of 0, -EAGAIN,
 * or an error with a status the server can send; a head that parsed ends
 * within the input, at an empty line, and parses the same from exactly its
 * own bytes (it is self-delimiting, so the next request starts after it);
 * its path starts with '/', and a decoded path has no "." or ".." segment
 * and no NUL. The query and cookie readers run on what it found. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "web/http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool status_ok(int s) {
        return s == 400 || s == 413 || s == 414 || s == 431 || s == 500 || s == 501 || s == 505;
}

static void check_path(const char *raw) {
        char *p = NULL;
        int r = http_path_decode(raw, &p);
        if (r == 0) {
                if (p[0] != '/' || strstr(p, "/../") || strstr(p, "/./") || strstr(p, "//"))
                        abort();
                size_t n = strlen(p);
                if ((n >= 3 && strcmp(p + n - 3, "/..") == 0) || (n >= 2 && strcmp(p + n - 2, "/.") == 0))
                        abort();
                free(p);
        } else if (p || (r != -EINVAL && r != -EACCES && r != -ENAMETOOLONG && r != -ENOMEM))
                abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > 2 * HTTP_MAX_HEAD)
                return 0;
        const char *text = (const char *) data;
        struct http_request req;
        int status = 0;
        int r = http_request_parse(text, size, &req, &status);
        if (r == -EAGAIN)
                return 0;
        if (r < 0) {
                if (!status_ok(status))
                        abort();
                return 0;
        }
        if (req.head_len > size || req.head_len < 4 || memcmp(text + req.head_len - 4, "\r\n\r\n", 4) != 0 ||
            req.path_raw[0] != '/' || req.n_headers > HTTP_MAX_HEADERS || req.content_length > HTTP_MAX_BODY)
                abort();
        struct http_request again;
        int status2 = 0;
        if (http_request_parse(text, req.head_len, &again, &status2) != 0 || again.head_len != req.head_len ||
            strcmp(again.target, req.target) != 0 || again.n_headers != req.n_headers)
                abort();
        http_request_done(&again);
        check_path(req.path_raw);
        char *v = NULL;
        if (http_query_get(req.query, "token", &v) == 0) {
                if (strlen(v) > HTTP_MAX_REQUEST_LINE)
                        abort();
                free(v);
        }
        char cookie[80];
        (void) http_cookie_get(http_request_header(&req, "Cookie"), "vmhost_session_8470", cookie, sizeof(cookie));
        http_request_done(&req);
        return 0;
}
