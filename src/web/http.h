/* web/http.h: the HTTP/1.1 request parser of vmhost's web server: a
 * request head read from outside bytes, with a limit on every part of it,
 * and the decoding of its path and query. Pure functions over a buffer, so
 * that the event loop (web/server.c), the unit tests and the fuzz target
 * share them. Only origin-form targets ("/path?query"), no chunked bodies:
 * what a browser sends to a server of its own origin. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Past these the request is refused with the status in parentheses. */
#define HTTP_MAX_REQUEST_LINE 8192  /* method, target, version (414) */
#define HTTP_MAX_HEAD 16384         /* request line and headers with their CRLFs (431) */
#define HTTP_MAX_HEADERS 64         /* header fields (431) */
#define HTTP_MAX_BODY 65536         /* Content-Length (413) */

struct http_header {
        const char *name;   /* as sent; compare with strcasecmp */
        const char *value;  /* without surrounding spaces */
};

struct http_request {
        char *head;                 /* owned: the head, cut into the strings below */
        size_t head_len;            /* bytes of the head in the input, up to and with the empty line */
        char method[8];
        const char *target;         /* as sent: "/api/vms?x=1" */
        char *path_raw;             /* owned: the target before '?', still percent-encoded */
        const char *query;          /* after '?', or NULL */
        unsigned minor;             /* HTTP/1.minor: 0 or 1 */
        struct http_header headers[HTTP_MAX_HEADERS];
        size_t n_headers;
        uint64_t content_length;    /* 0 without the header */
        bool keep_alive;            /* the client wants the connection kept after the response */
        bool upgrade_websocket;     /* "Connection: upgrade" and "Upgrade: websocket" */
};

/* Parses the request head at the start of 'data' ('len' bytes; more may
 * follow: a body, the next request). Returns 0 with *ret filled (free with
 * http_request_done()), -EAGAIN when the head is incomplete and no limit is
 * passed yet (read more), or another -errno with *ret_status the status to
 * answer with before closing: 400 (malformed), 413, 414, 431, 501 (a method
 * or transfer coding this server does not do), 505 (not HTTP/1.0 or 1.1). */
int http_request_parse(const char *data, size_t len, struct http_request *ret, int *ret_status);
void http_request_done(struct http_request *req);

/* The value of header 'name' (case-insensitive), NULL when absent. */
const char *http_request_header(const struct http_request *req, const char *name);

/* Decodes a path ("/a%20b/c.js"): percent escapes. Refuses with -EINVAL
 * an escape that is not two hex digits, an encoded or plain NUL or control
 * character and a backslash; with -EACCES an empty segment ("a//b") and a
 * "." or ".." segment however it was written ("%2e%2E"), so that the
 * decoded path names a file below the root without a way up. A trailing
 * '/' is kept. *ret is new. -ENAMETOOLONG past HTTP_MAX_REQUEST_LINE. */
int http_path_decode(const char *raw, char **ret);

/* The value of 'key' in a query ("a=1&token=x"), decoded ('+' is a space);
 * -ENOENT when absent, -EINVAL when malformed (as http_path_decode but
 * '/' and empty values are fine). *ret is new. */
int http_query_get(const char *query, const char *key, char **ret);

/* The value of cookie 'name' in a Cookie header ("a=1; b=2"), copied into
 * 'buf' of 'size' bytes; -ENOENT when absent, -ENAMETOOLONG when it does
 * not fit. */
int http_cookie_get(const char *header, const char *name, char *buf, size_t size);

/* The reason phrase of a status ("Not Found"); "Unknown" for others. */
const char *http_status_reason(int status);

/* The MIME type for a file name by its extension, NULL when not served. */
const char *http_mime_type(const char *filename);
