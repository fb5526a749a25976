/* base/json-writer.c: JSON text builder. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json-writer.h"
#include "base/macro.h"

void json_writer_init(struct json_writer *w, bool pretty) {
        *w = (struct json_writer) { .pretty = pretty };
}

void json_writer_free(struct json_writer *w) {
        free(w->buf);
        w->buf = NULL;
        w->len = w->cap = 0;
}

static void put(struct json_writer *w, const char *s, size_t n) {
        if (w->error)
                return;
        if (w->len + n + 1 > w->cap) {
                size_t ncap = MAX(w->cap * 2, w->len + n + 256);
                char *b = realloc(w->buf, ncap);
                if (!b) {
                        w->error = -ENOMEM;
                        return;
                }
                w->buf = b;
                w->cap = ncap;
        }
        memcpy(w->buf + w->len, s, n);
        w->len += n;
        w->buf[w->len] = '\0';
}

static void puts_(struct json_writer *w, const char *s) {
        put(w, s, strlen(s));
}

static void newline(struct json_writer *w) {
        if (!w->pretty)
                return;
        put(w, "\n", 1);
        for (int i = 0; i < w->depth; i++)
                put(w, "  ", 2);
}

/* Called before any value: writes the separating comma unless the value
 * follows its key. */
static void before_value(struct json_writer *w) {
        if (w->after_key) {
                w->after_key = false;
                return;
        }
        if (w->depth > 0) {
                if (w->need_comma[w->depth])
                        put(w, ",", 1);
                newline(w);
                w->need_comma[w->depth] = true;
        }
}

static void open_(struct json_writer *w, char c) {
        before_value(w);
        if (w->depth + 1 >= JSON_WRITER_MAX_DEPTH) {
                w->error = -E2BIG;
                return;
        }
        put(w, &c, 1);
        w->depth++;
        w->need_comma[w->depth] = false;
}

static void close_(struct json_writer *w, char c) {
        if (w->depth <= 0) {
                w->error = -EINVAL;
                return;
        }
        bool had = w->need_comma[w->depth];
        w->depth--;
        if (had)
                newline(w);
        put(w, &c, 1);
        if (w->depth == 0 && w->pretty)
                put(w, "\n", 1);
}

void json_object_begin(struct json_writer *w) { open_(w, '{'); }
void json_object_end(struct json_writer *w) { close_(w, '}'); }
void json_array_begin(struct json_writer *w) { open_(w, '['); }
void json_array_end(struct json_writer *w) { close_(w, ']'); }

static void put_escaped(struct json_writer *w, const char *s) {
        put(w, "\"", 1);
        for (const unsigned char *p = (const unsigned char *) s; *p; p++) {
                char esc[8];
                switch (*p) {
                case '"': puts_(w, "\\\""); break;
                case '\\': puts_(w, "\\\\"); break;
                case '\n': puts_(w, "\\n"); break;
                case '\r': puts_(w, "\\r"); break;
                case '\t': puts_(w, "\\t"); break;
                default:
                        if (*p < 0x20) {
                                snprintf(esc, sizeof(esc), "\\u%04x", *p);
                                puts_(w, esc);
                        } else
                                put(w, (const char *) p, 1);
                }
        }
        put(w, "\"", 1);
}

void json_key(struct json_writer *w, const char *key) {
        before_value(w);
        put_escaped(w, key);
        puts_(w, w->pretty ? ": " : ":");
        w->after_key = true;
}

void json_string(struct json_writer *w, const char *s) {
        if (!s) {
                json_null(w);
                return;
        }
        before_value(w);
        put_escaped(w, s);
}

void json_int(struct json_writer *w, int64_t v) {
        char b[32];
        before_value(w);
        snprintf(b, sizeof(b), "%" PRId64, v);
        puts_(w, b);
}

void json_uint(struct json_writer *w, uint64_t v) {
        char b[32];
        before_value(w);
        snprintf(b, sizeof(b), "%" PRIu64, v);
        puts_(w, b);
}

void json_double(struct json_writer *w, double v) {
        char b[64];
        before_value(w);
        if (!isfinite(v))
                snprintf(b, sizeof(b), "null");
        else
                snprintf(b, sizeof(b), "%.6g", v);
        puts_(w, b);
}

void json_bool(struct json_writer *w, bool v) {
        before_value(w);
        puts_(w, v ? "true" : "false");
}

void json_null(struct json_writer *w) {
        before_value(w);
        puts_(w, "null");
}

void json_kv_string(struct json_writer *w, const char *key, const char *s) {
        json_key(w, key);
        json_string(w, s);
}

void json_kv_int(struct json_writer *w, const char *key, int64_t v) {
        json_key(w, key);
        json_int(w, v);
}

void json_kv_uint(struct json_writer *w, const char *key, uint64_t v) {
        json_key(w, key);
        json_uint(w, v);
}

void json_kv_bool(struct json_writer *w, const char *key, bool v) {
        json_key(w, key);
        json_bool(w, v);
}

char *json_writer_finish(struct json_writer *w, int *ret_error) {
        if (!w->error && w->depth != 0)
                w->error = -EINVAL;
        if (!w->error && !w->buf)
                put(w, "", 0);
        if (w->error) {
                if (ret_error)
                        *ret_error = w->error;
                json_writer_free(w);
                return NULL;
        }
        char *b = w->buf;
        w->buf = NULL;
        w->len = w->cap = 0;
        return b;
}
