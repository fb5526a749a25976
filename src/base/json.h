/* base/json.h: a JSON parser (RFC 8259) for text that comes from outside:
 * QMP replies and events, HTTP request bodies. It builds a tree of
 * struct json_value that the caller walks with the accessors below.
 *
 *     struct json_value *v = NULL;
 *     r = json_parse(text, len, NULL, &v, &err);      // NULL: default limits
 *     const char *status;
 *     r = json_get_string(json_object_get(v, "status"), &status);
 *     v = json_value_free(v);
 *
 * Strictness, because the input is untrusted:
 *   - exactly one value, surrounded only by JSON white space;
 *   - strings must be valid UTF-8 (no overlong forms, no encoded surrogates,
 *     nothing past U+10FFFF); \uXXXX escapes are decoded, surrogate pairs
 *     combined, unpaired surrogates rejected;
 *   - NUL is rejected inside strings (raw or as \u0000), so every string and
 *     key is also a valid C string and cannot be truncated behind a
 *     checker's back;
 *   - duplicate keys in one object are rejected (RFC 8259 leaves their
 *     meaning open; two readers picking different ones is a classic
 *     smuggling trick);
 *   - numbers out of double's range (1e400) are rejected;
 *   - every size has a limit (struct json_limits).
 *
 * Errors: -EINVAL for malformed text, -E2BIG when a limit is exceeded,
 * -ERANGE for a number beyond double's range, -ENOMEM; 'err' then says what and where, as
 * "line 1, column 17: expected ':' after object key" (columns count bytes,
 * from 1). */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/json-writer.h"
#include "base/macro.h"
#include "vmhost/error.h"

/* Recursion is bounded by this whatever the caller asks for, so a large
 * max_depth cannot overflow the stack. */
#define JSON_DEPTH_HARD_MAX 1000

#define JSON_DEFAULT_MAX_DEPTH 64
#define JSON_DEFAULT_MAX_BYTES (16u << 20)
#define JSON_DEFAULT_MAX_STRING (16u << 20)
#define JSON_DEFAULT_MAX_ELEMENTS (1u << 20)
#define JSON_DEFAULT_MAX_VALUES (1u << 20)
/* No number needs more digits than this; longer ones are rejected before
 * strtod() spends time on them. */
#define JSON_NUMBER_MAX_CHARS 1024

/* A field left 0 takes the default above. */
struct json_limits {
        unsigned max_depth;     /* nested arrays/objects; a bare scalar is depth 0 */
        size_t max_bytes;       /* length of the whole input */
        size_t max_string;      /* bytes of one decoded string or key */
        size_t max_elements;    /* items of one array or members of one object */
        size_t max_values;      /* values in the whole tree (bounds memory: each
                                 * costs ~50 bytes for as little as 2 of input) */
};

enum json_type {
        JSON_NULL,
        JSON_BOOL,
        JSON_NUMBER,
        JSON_STRING,
        JSON_ARRAY,
        JSON_OBJECT,
};

struct json_member {
        char *key;      /* NUL-terminated, valid UTF-8 */
        struct json_value *value;
};

struct json_value {
        enum json_type type;
        union {
                bool boolean;
                struct {
                        double d;       /* always set */
                        int64_t i;      /* valid if is_int */
                        uint64_t u;     /* valid if is_uint */
                        /* Integral literal (no fraction or exponent) that
                         * fits int64 / uint64. */
                        bool is_int, is_uint;
                } number;
                struct {
                        char *s;        /* NUL-terminated, no NUL inside */
                        size_t len;
                } string;
                struct {
                        struct json_value **items;
                        size_t n;
                } array;
                struct {
                        struct json_member *members;    /* in input order */
                        size_t n;
                } object;
        };
};

/* Parses 'len' bytes of 'text' (need not be NUL-terminated). 'limits' may
 * be NULL for the defaults. On success stores a new tree (owned by the
 * caller, free with json_value_free) in *ret; on failure leaves *ret
 * untouched and returns -EINVAL, -E2BIG, -ERANGE or -ENOMEM with 'err' filled. */
int json_parse(const char *text, size_t len, const struct json_limits *limits, struct json_value **ret,
               struct vh_error *err);

/* Frees a tree; accepts NULL; returns NULL. */
struct json_value *json_value_free(struct json_value *v);
DEFINE_FREE_FUNC(struct json_value, json_value_free);

/* "null", "boolean", "number", "string", "array", "object". */
const char *json_type_to_string(enum json_type t);

/* The member's value, or NULL if 'v' is NULL, not an object, or lacks
 * 'key'. The result is borrowed from 'v'. */
struct json_value *json_object_get(const struct json_value *v, const char *key);

/* Removes the member 'key' from object 'v' and returns its value, now owned
 * by the caller; NULL if there is none. For keeping a part of a message
 * (a QMP "return") after freeing the rest. */
struct json_value *json_object_steal(struct json_value *v, const char *key);

/* Typed reads. Each accepts v == NULL (returns -ENOENT, so the result of
 * json_object_get() can be passed straight in), returns -EINVAL when the
 * value has another type and -ERANGE when a number does not fit the asked
 * type (json_get_int on 1.5 or 1e30). *ret is set only on success;
 * json_get_string's result is borrowed from 'v'. */
int json_get_string(const struct json_value *v, const char **ret);
int json_get_int(const struct json_value *v, int64_t *ret);
int json_get_uint(const struct json_value *v, uint64_t *ret);
int json_get_double(const struct json_value *v, double *ret);
int json_get_bool(const struct json_value *v, bool *ret);

/* 0 if 'v' is not an array. */
size_t json_array_len(const struct json_value *v);
/* Borrowed item, or NULL if 'v' is not an array or 'i' is out of range. */
struct json_value *json_array_at(const struct json_value *v, size_t i);

/* Emits 'v' through the writer, as one value wherever the writer stands.
 * Integers keep all their digits; other numbers go through json_double().
 * Returns the writer's sticky error (0 or -errno; -E2BIG for a tree deeper
 * than the writer's JSON_WRITER_MAX_DEPTH). */
int json_value_write(struct json_writer *w, const struct json_value *v);

/* The whole value as new compact (or pretty) text in *ret. */
int json_value_format(const struct json_value *v, bool pretty, char **ret);
