/* web/http.c: HTTP/1.1 request heads (RFC 9110, 9112) as web/http.h
 * describes. Strict where leniency lets two readers disagree (request
 * smuggling): CRLF line ends only, no folded header lines, one
 * Content-Length, no Transfer-Encoding. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/macro.h"
#include "web/http.h"

static bool is_tchar(unsigned char c) {
        /* RFC 9110 token characters. */
        return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
               (c && strchr("!#$%&'*+-.^_`|~", c));
}

/* A field value byte: visible ASCII, space, tab, or obs-text. */
static bool is_field_char(unsigned char c) {
        return c == '\t' || (c >= 0x20 && c != 0x7f);
}

/* A target byte: visible ASCII without space; escapes are checked later. */
static bool is_target_char(unsigned char c) {
        return c > 0x20 && c < 0x7f;
}

static int fail(int status, int *ret_status, int r) {
        *ret_status = status;
        return r;
}

void http_request_done(struct http_request *req) {
        if (!req)
                return;
        free(req->head);
        free(req->path_raw);
        *req = (struct http_request) {};
}

const char *http_request_header(const struct http_request *req, const char *name) {
        for (size_t i = 0; i < req->n_headers; i++)
                if (strcasecmp(req->headers[i].name, name) == 0)
                        return req->headers[i].value;
        return NULL;
}

/* Whether the comma-separated list 'value' has the token 'tok' (any case). */
static bool list_has_token(const char *value, const char *tok) {
        size_t n = strlen(tok);
        for (const char *p = value; *p;) {
                while (*p == ' ' || *p == '\t' || *p == ',')
                        p++;
                const char *e = p;
                while (*e && *e != ',')
                        e++;
                const char *t = e;
                while (t > p && (t[-1] == ' ' || t[-1] == '\t'))
                        t--;
                if ((size_t) (t - p) == n && strncasecmp(p, tok, n) == 0)
                        return true;
                p = e;
        }
        return false;
}

static int parse_request_line(char *line, struct http_request *req, int *ret_status) {
        char *sp1 = strchr(line, ' ');
        if (!sp1 || sp1 == line)
                return fail(400, ret_status, -EINVAL);
        size_t mlen = (size_t) (sp1 - line);
        for (size_t i = 0; i < mlen; i++)
                if (!is_tchar((unsigned char) line[i]))
                        return fail(400, ret_status, -EINVAL);
        if (mlen >= sizeof(req->method))
                return fail(501, ret_status, -EOPNOTSUPP);
        memcpy(req->method, line, mlen);
        req->method[mlen] = '\0';
        static const char *const methods[] = { "GET", "HEAD", "POST", "DELETE", "PUT", "OPTIONS" };
        bool known = false;
        for (size_t i = 0; i < ELEMENTSOF(methods); i++)
                known = known || streq(req->method, methods[i]);
        if (!known)
                return fail(501, ret_status, -EOPNOTSUPP);

        char *target = sp1 + 1;
        char *sp2 = strchr(target, ' ');
        if (!sp2 || sp2 == target)
                return fail(400, ret_status, -EINVAL);
        *sp2 = '\0';
        for (char *c = target; *c; c++)
                if (!is_target_char((unsigned char) *c))
                        return fail(400, ret_status, -EINVAL);
        /* Origin form only: no absolute URLs (we are no proxy), no '*'. */
        if (target[0] != '/')
                return fail(400, ret_status, -EINVAL);
        req->target = target;

        const char *version = sp2 + 1;
        if (strneq(version, "HTTP/1.", 7) && (version[7] == '0' || version[7] == '1') && version[8] == '\0')
                req->minor = (unsigned) (version[7] - '0');
        else if (strneq(version, "HTTP/", 5))
                return fail(505, ret_status, -EPROTONOSUPPORT);
        else
                return fail(400, ret_status, -EINVAL);
        return 0;
}

/* Parses "name: value" into req->headers (pointing into 'line'). */
static int parse_header_line(char *line, struct http_request *req, int *ret_status) {
        /* A line starting with white space would continue the previous
         * one (obs-fold), which RFC 9112 lets a server refuse. */
        char *colon = strchr(line, ':');
        if (!colon || colon == line)
                return fail(400, ret_status, -EINVAL);
        for (char *c = line; c < colon; c++)
                if (!is_tchar((unsigned char) *c))
                        return fail(400, ret_status, -EINVAL);
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
                v++;
        for (char *c = v; *c; c++)
                if (!is_field_char((unsigned char) *c))
                        return fail(400, ret_status, -EINVAL);
        char *end = v + strlen(v);
        while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
                *--end = '\0';
        if (req->n_headers >= HTTP_MAX_HEADERS)
                return fail(431, ret_status, -E2BIG);
        req->headers[req->n_headers++] = (struct http_header) { line, v };
        return 0;
}

static int parse_content_length(const char *v, uint64_t *ret, int *ret_status) {
        if (!*v)
                return fail(400, ret_status, -EINVAL);
        uint64_t n = 0;
        for (const char *c = v; *c; c++) {
                if (*c < '0' || *c > '9')
                        return fail(400, ret_status, -EINVAL);
                n = n * 10 + (uint64_t) (*c - '0');
                if (n > HTTP_MAX_BODY)
                        return fail(413, ret_status, -EFBIG);
        }
        *ret = n;
        return 0;
}

/* What the headers say about the body and the connection. */
static int check_headers(struct http_request *req, int *ret_status) {
        bool have_length = false, have_host = false;
        for (size_t i = 0; i < req->n_headers; i++) {
                const char *name = req->headers[i].name, *v = req->headers[i].value;
                if (strcasecmp(name, "Content-Length") == 0) {
                        uint64_t n;
                        int r = parse_content_length(v, &n, ret_status);
                        if (r < 0)
                                return r;
                        /* Two that differ would let two readers disagree. */
                        if (have_length && n != req->content_length)
                                return fail(400, ret_status, -EINVAL);
                        req->content_length = n;
                        have_length = true;
                } else if (strcasecmp(name, "Transfer-Encoding") == 0)
                        return fail(have_length || http_request_header(req, "Content-Length") ? 400 : 501,
                                    ret_status, -EOPNOTSUPP);
                else if (strcasecmp(name, "Host") == 0) {
                        if (have_host)
                                return fail(400, ret_status, -EINVAL);
                        have_host = true;
                }
        }
        /* HTTP/1.1 requires Host (RFC 9112 3.2); the server checks it
         * against its own name, so a request without one is refused. */
        if (req->minor == 1 && !have_host)
                return fail(400, ret_status, -EINVAL);
        const char *conn = http_request_header(req, "Connection");
        if (req->minor == 1)
                req->keep_alive = !conn || !list_has_token(conn, "close");
        else
                req->keep_alive = conn && list_has_token(conn, "keep-alive");
        const char *up = http_request_header(req, "Upgrade");
        req->upgrade_websocket = conn && up && list_has_token(conn, "upgrade") && list_has_token(up, "websocket");
        return 0;
}

/* Finds "\r\n\r\n" in the first 'len' bytes; the offset after it or 0. */
static size_t find_head_end(const char *data, size_t len) {
        for (size_t i = 3; i < len; i++)
                if (data[i] == '\n' && data[i - 1] == '\r' && data[i - 2] == '\n' && data[i - 3] == '\r')
                        return i + 1;
        return 0;
}

int http_request_parse(const char *data, size_t len, struct http_request *ret, int *ret_status) {
        size_t scan = MIN(len, (size_t) HTTP_MAX_HEAD);
        size_t head_len = find_head_end(data, scan);
        /* The request line's limit applies before the head is whole: a
         * client sending an endless first line is refused as soon as it
         * passes it. */
        const char *eol = memchr(data, '\n', MIN(len, (size_t) HTTP_MAX_REQUEST_LINE + 2));
        if (!eol && len >= HTTP_MAX_REQUEST_LINE + 2)
                return fail(414, ret_status, -E2BIG);
        if (!head_len) {
                if (len >= HTTP_MAX_HEAD)
                        return fail(431, ret_status, -E2BIG);
                /* A NUL can never be part of a head: refuse at once rather
                 * than waiting for more. */
                if (memchr(data, '\0', len))
                        return fail(400, ret_status, -EINVAL);
                return -EAGAIN;
        }
        if (memchr(data, '\0', head_len))
                return fail(400, ret_status, -EINVAL);

        struct http_request req = { .head_len = head_len };
        /* The head without the final empty line, as one string. */
        req.head = strndup(data, head_len - 2);
        if (!req.head)
                return fail(500, ret_status, -ENOMEM);

        char *line = req.head;
        int r = 0;
        for (unsigned n = 0; *line; n++) {
                char *cr = strstr(line, "\r\n");
                if (!cr) {
                        r = fail(400, ret_status, -EINVAL);
                        goto out;
                }
                *cr = '\0';
                /* A lone CR or LF inside a line is no line end here. */
                if (strpbrk(line, "\r\n")) {
                        r = fail(400, ret_status, -EINVAL);
                        goto out;
                }
                if (n == 0) {
                        if ((size_t) (cr - line) > HTTP_MAX_REQUEST_LINE) {
                                r = fail(414, ret_status, -E2BIG);
                                goto out;
                        }
                        r = parse_request_line(line, &req, ret_status);
                } else
                        r = parse_header_line(line, &req, ret_status);
                if (r < 0)
                        goto out;
                line = cr + 2;
        }
        if (!req.target) {
                r = fail(400, ret_status, -EINVAL);
                goto out;
        }
        r = check_headers(&req, ret_status);
        if (r < 0)
                goto out;
        /* The path and the query: the target stays whole for messages. */
        const char *q = strchr(req.target, '?');
        req.path_raw = q ? strndup(req.target, (size_t) (q - req.target)) : strdup(req.target);
        if (!req.path_raw) {
                r = fail(500, ret_status, -ENOMEM);
                goto out;
        }
        req.query = q ? q + 1 : NULL;
        *ret = req;
        return 0;
out:
        free(req.head);
        return r;
}

static int hex_value(char c) {
        if (c >= '0' && c <= '9')
                return c - '0';
        if (c >= 'a' && c <= 'f')
                return c - 'a' + 10;
        if (c >= 'A' && c <= 'F')
                return c - 'A' + 10;
        return -1;
}

/* Percent-decodes 'n' bytes of 's' into a new string; '+' is a space when
 * 'form'. Refuses bad escapes, NUL, control characters and backslashes. */
static int decode(const char *s, size_t n, bool form, char **ret) {
        if (n > HTTP_MAX_REQUEST_LINE)
                return -ENAMETOOLONG;
        char *out = malloc(n + 1), *o = out;
        if (!out)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) s[i];
                if (c == '%') {
                        int hi = i + 2 < n ? hex_value(s[i + 1]) : -1;
                        int lo = i + 2 < n ? hex_value(s[i + 2]) : -1;
                        if (hi < 0 || lo < 0) {
                                free(out);
                                return -EINVAL;
                        }
                        c = (unsigned char) (hi << 4 | lo);
                        i += 2;
                } else if (c == '+' && form)
                        c = ' ';
                if (c < 0x20 || c == 0x7f || c == '\\') {
                        free(out);
                        return -EINVAL;
                }
                *o++ = (char) c;
        }
        *o = '\0';
        *ret = out;
        return 0;
}

int http_path_decode(const char *raw, char **ret) {
        if (raw[0] != '/')
                return -EINVAL;
        char *p = NULL;
        int r = decode(raw, strlen(raw), false, &p);
        if (r < 0)
                return r;
        /* Each segment after decoding: an encoded '/' becomes a separator
         * like any other, so the check sees what the file system would. */
        for (const char *s = p + 1;;) {
                const char *e = strchrnul(s, '/');
                size_t n = (size_t) (e - s);
                bool last = *e == '\0';
                if ((n == 0 && !last) || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.')) {
                        free(p);
                        return -EACCES;
                }
                if (last)
                        break;
                s = e + 1;
        }
        *ret = p;
        return 0;
}

int http_query_get(const char *query, const char *key, char **ret) {
        if (!query)
                return -ENOENT;
        size_t klen = strlen(key);
        for (const char *p = query; *p;) {
                const char *e = strchrnul(p, '&');
                const char *eq = memchr(p, '=', (size_t) (e - p));
                const char *kend = eq ? eq : e;
                if ((size_t) (kend - p) == klen && strneq(p, key, klen)) {
                        const char *v = eq ? eq + 1 : e;
                        return decode(v, (size_t) (e - v), true, ret);
                }
                p = *e ? e + 1 : e;
        }
        return -ENOENT;
}

int http_cookie_get(const char *header, const char *name, char *buf, size_t size) {
        if (!header)
                return -ENOENT;
        size_t nlen = strlen(name);
        for (const char *p = header; *p;) {
                while (*p == ' ' || *p == '\t')
                        p++;
                const char *e = strchrnul(p, ';');
                if ((size_t) (e - p) > nlen && strneq(p, name, nlen) && p[nlen] == '=') {
                        const char *v = p + nlen + 1;
                        size_t vlen = (size_t) (e - v);
                        while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
                                vlen--;
                        if (vlen + 1 > size)
                                return -ENAMETOOLONG;
                        memcpy(buf, v, vlen);
                        buf[vlen] = '\0';
                        return 0;
                }
                p = *e ? e + 1 : e;
        }
        return -ENOENT;
}

const char *http_status_reason(int status) {
        switch (status) {
        case 200: return "OK";
        case 204: return "No Content";
        case 303: return "See Other";
        case 304: return "Not Modified";
        case 400: return "Bad Request";
        case 401: return "Unauthorized";
        case 403: return "Forbidden";
        case 404: return "Not Found";
        case 405: return "Method Not Allowed";
        case 408: return "Request Timeout";
        case 409: return "Conflict";
        case 413: return "Content Too Large";
        case 414: return "URI Too Long";
        case 429: return "Too Many Requests";
        case 431: return "Request Header Fields Too Large";
        case 500: return "Internal Server Error";
        case 501: return "Not Implemented";
        case 503: return "Service Unavailable";
        case 505: return "HTTP Version Not Supported";
        default: return "Unknown";
        }
}

const char *http_mime_type(const char *filename) {
        static const struct {
                const char *ext, *type;
        } types[] = {
                { ".html", "text/html; charset=utf-8" },
                /* ES modules need a JavaScript MIME type (HTML spec). */
                { ".js", "text/javascript; charset=utf-8" },
                { ".mjs", "text/javascript; charset=utf-8" },
                { ".css", "text/css; charset=utf-8" },
                { ".svg", "image/svg+xml" },
                { ".png", "image/png" },
                { ".ico", "image/x-icon" },
                { ".json", "application/json" },
                { ".wasm", "application/wasm" },
                { ".txt", "text/plain; charset=utf-8" },
        };
        const char *dot = strrchr(filename, '.');
        if (!dot || strchr(dot, '/'))
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(types); i++)
                if (strcasecmp(dot, types[i].ext) == 0)
                        return types[i].type;
        return NULL;
}
