/* base/json-writer.h: builds JSON text for `--json` output and for QMP
 * commands. Commas and string escaping are handled here so callers only
 * say what goes where:
 *
 *     json_object_begin(w);
 *     json_key(w, "name"); json_string(w, vm->name);
 *     json_object_end(w);
 *
 * Errors (out of memory, too deep) stick in w->error and are reported by
 * json_writer_finish(). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JSON_WRITER_MAX_DEPTH 64

struct json_writer {
        char *buf;
        size_t len, cap;
        int depth;
        bool need_comma[JSON_WRITER_MAX_DEPTH];
        bool after_key;
        bool pretty;
        int error;
};

void json_writer_init(struct json_writer *w, bool pretty);
void json_writer_free(struct json_writer *w);
/* Returns the text (owned by the caller) or NULL with -errno in *ret_error. */
char *json_writer_finish(struct json_writer *w, int *ret_error);

void json_object_begin(struct json_writer *w);
void json_object_end(struct json_writer *w);
void json_array_begin(struct json_writer *w);
void json_array_end(struct json_writer *w);
void json_key(struct json_writer *w, const char *key);
void json_string(struct json_writer *w, const char *s); /* NULL writes null */
void json_int(struct json_writer *w, int64_t v);
void json_uint(struct json_writer *w, uint64_t v);
void json_double(struct json_writer *w, double v);
void json_bool(struct json_writer *w, bool v);
void json_null(struct json_writer *w);

/* Key and value in one call. */
void json_kv_string(struct json_writer *w, const char *key, const char *s);
void json_kv_int(struct json_writer *w, const char *key, int64_t v);
void json_kv_uint(struct json_writer *w, const char *key, uint64_t v);
void json_kv_bool(struct json_writer *w, const char *key, bool v);
