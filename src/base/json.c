/* base/json.c: recursive-descent JSON parser (RFC 8259) with limits, and
 * the accessors over the tree it builds. See json.h for the strictness
 * rules and why. */
#include <errno.h>
#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/json.h"
#include "base/macro.h"

struct parser {
        const char *text;
        size_t len, pos;
        struct json_limits limits;
        size_t n_values;
        struct vh_error *err;
};

/* strtod() follows LC_NUMERIC, so a program that called setlocale() in a
 * locale with a decimal comma would misread "1.5". Numbers are converted in
 * the C locale instead. */
static locale_t c_locale;
static pthread_once_t c_locale_once = PTHREAD_ONCE_INIT;

static void c_locale_init(void) {
        c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t) 0);
}

/* Copies 's' (n bytes) into 'buf' with control characters replaced, so an
 * error message quoting input cannot carry escape sequences to a terminal. */
static const char *sanitize(const char *s, size_t n, char *buf, size_t size) {
        size_t i = 0, j = 0;
        for (; i < n && j + 4 < size; i++)
                buf[j++] = (unsigned char) s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
        if (i < n) {
                memcpy(buf + j, "...", 3);
                j += 3;
        }
        buf[j] = '\0';
        return buf;
}

static int fail_at(struct parser *ps, size_t pos, int code, const char *fmt, ...) _printf_(4, 5);

/* Fills ps->err with "line L, column C: <message>" for byte offset 'pos'. */
static int fail_at(struct parser *ps, size_t pos, int code, const char *fmt, ...) {
        if (!ps->err)
                return code;
        unsigned long line = 1;
        size_t line_start = 0;
        for (size_t i = 0; i < pos && i < ps->len; i++)
                if (ps->text[i] == '\n') {
                        line++;
                        line_start = i + 1;
                }
        char msg[VH_ERROR_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        return vh_error_set(ps->err, code, "line %lu, column %zu: %s", line, pos - line_start + 1, msg);
}

static int fail_oom(struct parser *ps) {
        return vh_error_set(ps->err, -ENOMEM, "out of memory while parsing JSON");
}

/* Describes the byte at ps->pos for "expected X, got Y" messages. */
static const char *describe_here(struct parser *ps, char *buf, size_t size) {
        if (ps->pos >= ps->len)
                return "end of input";
        unsigned char c = (unsigned char) ps->text[ps->pos];
        if (c > 0x20 && c < 0x7f)
                snprintf(buf, size, "'%c'", c);
        else
                snprintf(buf, size, "byte 0x%02X", c);
        return buf;
}

static int fail_expected(struct parser *ps, const char *what) {
        char b[32];
        return fail_at(ps, ps->pos, -EINVAL, "expected %s, got %s", what, describe_here(ps, b, sizeof(b)));
}

static void skip_ws(struct parser *ps) {
        while (ps->pos < ps->len) {
                char c = ps->text[ps->pos];
                if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
                        break;
                ps->pos++;
        }
}

static struct json_value *value_new(enum json_type t) {
        struct json_value *v = calloc(1, sizeof(*v));
        if (v)
                v->type = t;
        return v;
}

struct json_value *json_value_free(struct json_value *v) {
        if (!v)
                return NULL;
        switch (v->type) {
        case JSON_STRING:
                free(v->string.s);
                break;
        case JSON_ARRAY:
                for (size_t i = 0; i < v->array.n; i++)
                        json_value_free(v->array.items[i]);
                free(v->array.items);
                break;
        case JSON_OBJECT:
                for (size_t i = 0; i < v->object.n; i++) {
                        free(v->object.members[i].key);
                        json_value_free(v->object.members[i].value);
                }
                free(v->object.members);
                break;
        default:
                break;
        }
        free(v);
        return NULL;
}

/* Length of the valid UTF-8 sequence at s (n bytes available), or 0 if it
 * is invalid: overlong forms, UTF-16 surrogates (U+D800..DFFF) and code
 * points past U+10FFFF are all refused (Unicode 15, table 3-7). */
static size_t utf8_sequence_length(const unsigned char *s, size_t n) {
        unsigned char c = s[0];
        size_t len;
        unsigned char lo = 0x80, hi = 0xBF; /* bounds of the second byte */

        if (c < 0x80)
                return 1;
        if (c >= 0xC2 && c <= 0xDF)
                len = 2;
        else if (c >= 0xE0 && c <= 0xEF) {
                len = 3;
                if (c == 0xE0)
                        lo = 0xA0;
                else if (c == 0xED)
                        hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
                len = 4;
                if (c == 0xF0)
                        lo = 0x90;
                else if (c == 0xF4)
                        hi = 0x8F;
        } else
                return 0;
        if (n < len)
                return 0;
        if (s[1] < lo || s[1] > hi)
                return 0;
        for (size_t i = 2; i < len; i++)
                if (s[i] < 0x80 || s[i] > 0xBF)
                        return 0;
        return len;
}

static size_t utf8_encode(uint32_t cp, char out[4]) {
        if (cp < 0x80) {
                out[0] = (char) cp;
                return 1;
        }
        if (cp < 0x800) {
                out[0] = (char) (0xC0 | (cp >> 6));
                out[1] = (char) (0x80 | (cp & 0x3F));
                return 2;
        }
        if (cp < 0x10000) {
                out[0] = (char) (0xE0 | (cp >> 12));
                out[1] = (char) (0x80 | ((cp >> 6) & 0x3F));
                out[2] = (char) (0x80 | (cp & 0x3F));
                return 3;
        }
        out[0] = (char) (0xF0 | (cp >> 18));
        out[1] = (char) (0x80 | ((cp >> 12) & 0x3F));
        out[2] = (char) (0x80 | ((cp >> 6) & 0x3F));
        out[3] = (char) (0x80 | (cp & 0x3F));
        return 4;
}

struct strbuf {
        char *s;
        size_t len, cap;
};

static int strbuf_append(struct strbuf *b, const char *p, size_t n) {
        if (b->len + n + 1 > b->cap) {
                size_t ncap = MAX(b->cap * 2, b->len + n + 32);
                char *s = realloc(b->s, ncap);
                if (!s)
                        return -ENOMEM;
                b->s = s;
                b->cap = ncap;
        }
        memcpy(b->s + b->len, p, n);
        b->len += n;
        b->s[b->len] = '\0';
        return 0;
}

/* Reads 4 hex digits at ps->pos (after "\u"). */
static int parse_hex4(struct parser *ps, uint32_t *ret) {
        uint32_t v = 0;
        for (int i = 0; i < 4; i++) {
                if (ps->pos + (size_t) i >= ps->len)
                        return fail_at(ps, ps->len, -EINVAL, "unexpected end of input in \\u escape");
                char c = ps->text[ps->pos + (size_t) i];
                uint32_t d;
                if (c >= '0' && c <= '9')
                        d = (uint32_t) (c - '0');
                else if (c >= 'a' && c <= 'f')
                        d = (uint32_t) (c - 'a' + 10);
                else if (c >= 'A' && c <= 'F')
                        d = (uint32_t) (c - 'A' + 10);
                else
                        return fail_at(ps, ps->pos + (size_t) i, -EINVAL,
                                       "\\u escape needs 4 hex digits");
                v = v << 4 | d;
        }
        ps->pos += 4;
        *ret = v;
        return 0;
}

/* Decodes the escape after a backslash at ps->pos - 1 into 'b'. */
static int parse_escape(struct parser *ps, struct strbuf *b) {
        size_t esc_pos = ps->pos - 1;
        if (ps->pos >= ps->len)
                return fail_at(ps, ps->pos, -EINVAL, "unexpected end of input in escape sequence");
        char c = ps->text[ps->pos++], out[4];
        switch (c) {
        case '"': case '\\': case '/':
                out[0] = c;
                return strbuf_append(b, out, 1);
        case 'b': return strbuf_append(b, "\b", 1);
        case 'f': return strbuf_append(b, "\f", 1);
        case 'n': return strbuf_append(b, "\n", 1);
        case 'r': return strbuf_append(b, "\r", 1);
        case 't': return strbuf_append(b, "\t", 1);
        case 'u':
                break;
        default: {
                char d[32];
                ps->pos--;
                return fail_at(ps, esc_pos, -EINVAL, "invalid escape '\\' followed by %s in string",
                               describe_here(ps, d, sizeof(d)));
        }
        }

        uint32_t cp;
        int r = parse_hex4(ps, &cp);
        if (r < 0)
                return r;
        if (cp == 0)
                return fail_at(ps, esc_pos, -EINVAL, "\\u0000 (NUL) is not allowed in strings");
        if (cp >= 0xDC00 && cp <= 0xDFFF)
                return fail_at(ps, esc_pos, -EINVAL, "unpaired low surrogate \\u%04" PRIX32 " in string", cp);
        if (cp >= 0xD800 && cp <= 0xDBFF) {
                /* UTF-16 pair: the low half must follow as another \u. */
                if (ps->pos + 2 > ps->len || ps->text[ps->pos] != '\\' || ps->text[ps->pos + 1] != 'u')
                        return fail_at(ps, esc_pos, -EINVAL,
                                       "high surrogate \\u%04" PRIX32 " not followed by a \\u low surrogate", cp);
                ps->pos += 2;
                uint32_t lo;
                r = parse_hex4(ps, &lo);
                if (r < 0)
                        return r;
                if (lo < 0xDC00 || lo > 0xDFFF)
                        return fail_at(ps, ps->pos - 6, -EINVAL,
                                       "high surrogate \\u%04" PRIX32 " followed by \\u%04" PRIX32
                                       ", which is not a low surrogate", cp, lo);
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        size_t n = utf8_encode(cp, out);
        return strbuf_append(b, out, n);
}

/* Parses a string starting at the '"' at ps->pos. */
static int parse_string(struct parser *ps, char **ret, size_t *ret_len) {
        struct strbuf b = {};
        size_t start = ps->pos;
        int r;

        ps->pos++; /* opening quote */
        for (;;) {
                /* Copy the run of plain bytes in one go. */
                size_t run = ps->pos;
                while (run < ps->len) {
                        unsigned char c = (unsigned char) ps->text[run];
                        if (c == '"' || c == '\\' || c < 0x20 || c >= 0x80)
                                break;
                        run++;
                }
                if (run > ps->pos) {
                        if (b.len + (run - ps->pos) > ps->limits.max_string) {
                                r = fail_at(ps, start, -E2BIG, "string longer than %zu bytes", ps->limits.max_string);
                                goto fail;
                        }
                        if (strbuf_append(&b, ps->text + ps->pos, run - ps->pos) < 0)
                                goto oom;
                        ps->pos = run;
                }
                if (ps->pos >= ps->len) {
                        r = fail_at(ps, start, -EINVAL, "unterminated string (end of input before the closing '\"')");
                        goto fail;
                }
                unsigned char c = (unsigned char) ps->text[ps->pos];
                if (c == '"') {
                        ps->pos++;
                        break;
                }
                if (c == '\\') {
                        ps->pos++;
                        r = parse_escape(ps, &b);
                        if (r == -ENOMEM)
                                goto oom;
                        if (r < 0)
                                goto fail;
                } else if (c == 0) {
                        r = fail_at(ps, ps->pos, -EINVAL, "NUL byte in string");
                        goto fail;
                } else if (c < 0x20) {
                        r = fail_at(ps, ps->pos, -EINVAL,
                                    "control character 0x%02X in string must be escaped (e.g. \\n or \\u%04X)", c, c);
                        goto fail;
                } else {
                        size_t n = utf8_sequence_length((const unsigned char *) ps->text + ps->pos,
                                                        ps->len - ps->pos);
                        if (n == 0) {
                                r = fail_at(ps, ps->pos, -EINVAL, "invalid UTF-8 in string (byte 0x%02X)", c);
                                goto fail;
                        }
                        if (strbuf_append(&b, ps->text + ps->pos, n) < 0)
                                goto oom;
                        ps->pos += n;
                }
                if (b.len > ps->limits.max_string) {
                        r = fail_at(ps, start, -E2BIG, "string longer than %zu bytes", ps->limits.max_string);
                        goto fail;
                }
        }
        if (!b.s && strbuf_append(&b, "", 0) < 0)
                goto oom;
        *ret = b.s;
        *ret_len = b.len;
        return 0;
oom:
        r = fail_oom(ps);
fail:
        free(b.s);
        return r;
}

static int parse_number(struct parser *ps, struct json_value *v) {
        size_t start = ps->pos, p = ps->pos;
        const char *t = ps->text;
        bool neg = false, integral = true;

        if (t[p] == '-') {
                neg = true;
                p++;
        }
        if (p >= ps->len || t[p] < '0' || t[p] > '9') {
                ps->pos = p;
                return fail_expected(ps, "a digit after '-'");
        }
        if (t[p] == '0') {
                p++;
                if (p < ps->len && t[p] >= '0' && t[p] <= '9')
                        return fail_at(ps, start, -EINVAL, "numbers must not have leading zeros");
        } else
                while (p < ps->len && t[p] >= '0' && t[p] <= '9')
                        p++;
        size_t int_end = p;
        if (p < ps->len && t[p] == '.') {
                integral = false;
                p++;
                if (p >= ps->len || t[p] < '0' || t[p] > '9') {
                        ps->pos = p;
                        return fail_expected(ps, "a digit after the decimal point");
                }
                while (p < ps->len && t[p] >= '0' && t[p] <= '9')
                        p++;
        }
        if (p < ps->len && (t[p] == 'e' || t[p] == 'E')) {
                integral = false;
                p++;
                if (p < ps->len && (t[p] == '+' || t[p] == '-'))
                        p++;
                if (p >= ps->len || t[p] < '0' || t[p] > '9') {
                        ps->pos = p;
                        return fail_expected(ps, "a digit in the exponent");
                }
                while (p < ps->len && t[p] >= '0' && t[p] <= '9')
                        p++;
        }
        size_t n = p - start;
        if (n > JSON_NUMBER_MAX_CHARS)
                return fail_at(ps, start, -E2BIG, "number longer than %d characters", JSON_NUMBER_MAX_CHARS);

        if (integral) {
                /* Exact integer path, so 2^63-1 and 2^64-1 keep every digit. */
                uint64_t mag = 0;
                bool overflow = false;
                for (size_t i = start + neg; i < int_end; i++) {
                        unsigned d = (unsigned) (t[i] - '0');
                        if (mag > (UINT64_MAX - d) / 10) {
                                overflow = true;
                                break;
                        }
                        mag = mag * 10 + d;
                }
                if (!overflow) {
                        if (!neg) {
                                v->number.is_uint = true;
                                v->number.u = mag;
                                if (mag <= INT64_MAX) {
                                        v->number.is_int = true;
                                        v->number.i = (int64_t) mag;
                                }
                        } else if (mag <= (uint64_t) INT64_MAX + 1) {
                                v->number.is_int = true;
                                v->number.i = mag == (uint64_t) INT64_MAX + 1 ? INT64_MIN : -(int64_t) mag;
                                if (mag == 0) {
                                        v->number.is_uint = true;
                                        v->number.u = 0;
                                }
                        }
                }
        }

        char small[64];
        _cleanup_free_ char *big = NULL;
        char *buf = small;
        if (n >= sizeof(small)) {
                buf = big = malloc(n + 1);
                if (!big)
                        return fail_oom(ps);
        }
        memcpy(buf, t + start, n);
        buf[n] = '\0';
        pthread_once(&c_locale_once, c_locale_init);
        double d = c_locale ? strtod_l(buf, NULL, c_locale) : strtod(buf, NULL);
        if (isinf(d)) {
                char s[48];
                return fail_at(ps, start, -ERANGE, "number %s is out of range", sanitize(buf, n, s, sizeof(s)));
        }
        v->number.d = d;
        ps->pos = p;
        return 0;
}

static int parse_literal(struct parser *ps, const char *word, size_t n) {
        if (ps->len - ps->pos < n || memcmp(ps->text + ps->pos, word, n) != 0)
                return fail_at(ps, ps->pos, -EINVAL, "invalid literal (expected true, false or null)");
        ps->pos += n;
        return 0;
}

static int parse_value(struct parser *ps, unsigned depth, struct json_value **ret);

static int check_duplicate_keys(struct parser *ps, size_t obj_pos, const struct json_value *o);

/* Grows an array of 'size'-byte elements to hold one more than *n. */
static int grow(void **p, size_t *cap, size_t n, size_t size) {
        if (n < *cap)
                return 0;
        size_t ncap = *cap ? *cap * 2 : 4;
        void *q = reallocarray(*p, ncap, size);
        if (!q)
                return -ENOMEM;
        *p = q;
        *cap = ncap;
        return 0;
}

static int parse_array(struct parser *ps, unsigned depth, struct json_value *v) {
        size_t cap = 0;
        int r;

        ps->pos++; /* '[' */
        skip_ws(ps);
        if (ps->pos < ps->len && ps->text[ps->pos] == ']') {
                ps->pos++;
                return 0;
        }
        for (;;) {
                if (v->array.n >= ps->limits.max_elements)
                        return fail_at(ps, ps->pos, -E2BIG, "array has more than %zu items", ps->limits.max_elements);
                if (grow((void **) &v->array.items, &cap, v->array.n, sizeof(*v->array.items)) < 0)
                        return fail_oom(ps);
                r = parse_value(ps, depth, &v->array.items[v->array.n]);
                if (r < 0)
                        return r;
                v->array.n++;
                skip_ws(ps);
                if (ps->pos < ps->len && ps->text[ps->pos] == ']') {
                        ps->pos++;
                        return 0;
                }
                if (ps->pos >= ps->len || ps->text[ps->pos] != ',')
                        return fail_expected(ps, "',' or ']' in array");
                ps->pos++;
                skip_ws(ps);
                if (ps->pos < ps->len && ps->text[ps->pos] == ']')
                        return fail_at(ps, ps->pos, -EINVAL, "trailing comma before ']'");
        }
}

static int parse_object(struct parser *ps, unsigned depth, struct json_value *v) {
        size_t cap = 0, obj_pos = ps->pos;
        int r;

        ps->pos++; /* '{' */
        skip_ws(ps);
        if (ps->pos < ps->len && ps->text[ps->pos] == '}') {
                ps->pos++;
                return 0;
        }
        for (;;) {
                if (ps->pos >= ps->len || ps->text[ps->pos] != '"')
                        return fail_expected(ps, "a '\"' to begin an object key");
                if (v->object.n >= ps->limits.max_elements)
                        return fail_at(ps, ps->pos, -E2BIG, "object has more than %zu members",
                                       ps->limits.max_elements);
                if (grow((void **) &v->object.members, &cap, v->object.n, sizeof(*v->object.members)) < 0)
                        return fail_oom(ps);
                struct json_member *m = &v->object.members[v->object.n];
                size_t key_len;
                *m = (struct json_member) {};
                r = parse_string(ps, &m->key, &key_len);
                if (r < 0)
                        return r;
                /* Counted now so that freeing 'v' frees the key if the
                 * value fails. */
                v->object.n++;
                skip_ws(ps);
                if (ps->pos >= ps->len || ps->text[ps->pos] != ':')
                        return fail_expected(ps, "':' after object key");
                ps->pos++;
                r = parse_value(ps, depth, &m->value);
                if (r < 0)
                        return r;
                skip_ws(ps);
                if (ps->pos < ps->len && ps->text[ps->pos] == '}') {
                        ps->pos++;
                        return check_duplicate_keys(ps, obj_pos, v);
                }
                if (ps->pos >= ps->len || ps->text[ps->pos] != ',')
                        return fail_expected(ps, "',' or '}' in object");
                ps->pos++;
                skip_ws(ps);
                if (ps->pos < ps->len && ps->text[ps->pos] == '}')
                        return fail_at(ps, ps->pos, -EINVAL, "trailing comma before '}'");
        }
}

static int key_cmp(const void *a, const void *b) {
        return strcmp(*(const char *const *) a, *(const char *const *) b);
}

static int check_duplicate_keys(struct parser *ps, size_t obj_pos, const struct json_value *o) {
        size_t n = o->object.n;
        const char *dup = NULL;
        char s[80];

        if (n <= 16) {
                /* Small objects, the usual case: no allocation. */
                for (size_t i = 1; i < n && !dup; i++)
                        for (size_t j = 0; j < i; j++)
                                if (streq(o->object.members[i].key, o->object.members[j].key)) {
                                        dup = o->object.members[i].key;
                                        break;
                                }
        } else {
                _cleanup_free_ const char **keys = malloc(n * sizeof(*keys));
                if (!keys)
                        return fail_oom(ps);
                for (size_t i = 0; i < n; i++)
                        keys[i] = o->object.members[i].key;
                qsort(keys, n, sizeof(*keys), key_cmp);
                for (size_t i = 1; i < n; i++)
                        if (streq(keys[i], keys[i - 1])) {
                                dup = keys[i];
                                break;
                        }
                if (dup)
                        return fail_at(ps, obj_pos, -EINVAL, "duplicate key \"%s\" in object",
                                       sanitize(dup, strlen(dup), s, sizeof(s)));
                return 0;
        }
        if (dup)
                return fail_at(ps, obj_pos, -EINVAL, "duplicate key \"%s\" in object",
                               sanitize(dup, strlen(dup), s, sizeof(s)));
        return 0;
}

/* Parses one value at ps->pos (after white space); 'depth' is the number
 * of containers around it. */
static int parse_value(struct parser *ps, unsigned depth, struct json_value **ret) {
        int r;

        skip_ws(ps);
        if (ps->pos >= ps->len)
                return fail_at(ps, ps->pos, -EINVAL, "unexpected end of input, expected a value");
        if (++ps->n_values > ps->limits.max_values)
                return fail_at(ps, ps->pos, -E2BIG, "more than %zu values in the document", ps->limits.max_values);

        char c = ps->text[ps->pos];
        struct json_value *v;
        switch (c) {
        case '{':
        case '[':
                if (depth + 1 > ps->limits.max_depth)
                        return fail_at(ps, ps->pos, -E2BIG, "nesting deeper than %u levels", ps->limits.max_depth);
                v = value_new(c == '{' ? JSON_OBJECT : JSON_ARRAY);
                if (!v)
                        return fail_oom(ps);
                r = c == '{' ? parse_object(ps, depth + 1, v) : parse_array(ps, depth + 1, v);
                break;
        case '"':
                v = value_new(JSON_STRING);
                if (!v)
                        return fail_oom(ps);
                r = parse_string(ps, &v->string.s, &v->string.len);
                break;
        case 't':
        case 'f':
                v = value_new(JSON_BOOL);
                if (!v)
                        return fail_oom(ps);
                v->boolean = c == 't';
                r = c == 't' ? parse_literal(ps, "true", 4) : parse_literal(ps, "false", 5);
                break;
        case 'n':
                v = value_new(JSON_NULL);
                if (!v)
                        return fail_oom(ps);
                r = parse_literal(ps, "null", 4);
                break;
        case '-':
        case '0' ... '9':
                v = value_new(JSON_NUMBER);
                if (!v)
                        return fail_oom(ps);
                r = parse_number(ps, v);
                break;
        default: {
                char b[32];
                return fail_at(ps, ps->pos, -EINVAL, "expected a value, got %s", describe_here(ps, b, sizeof(b)));
        }
        }
        if (r < 0) {
                json_value_free(v);
                return r;
        }
        *ret = v;
        return 0;
}

int json_parse(const char *text, size_t len, const struct json_limits *limits, struct json_value **ret,
               struct vh_error *err) {
        struct parser ps = {
                .text = text,
                .len = len,
                .err = err,
                .limits = {
                        .max_depth = JSON_DEFAULT_MAX_DEPTH,
                        .max_bytes = JSON_DEFAULT_MAX_BYTES,
                        .max_string = JSON_DEFAULT_MAX_STRING,
                        .max_elements = JSON_DEFAULT_MAX_ELEMENTS,
                        .max_values = JSON_DEFAULT_MAX_VALUES,
                },
        };
        if (limits) {
                if (limits->max_depth)
                        ps.limits.max_depth = limits->max_depth;
                if (limits->max_bytes)
                        ps.limits.max_bytes = limits->max_bytes;
                if (limits->max_string)
                        ps.limits.max_string = limits->max_string;
                if (limits->max_elements)
                        ps.limits.max_elements = limits->max_elements;
                if (limits->max_values)
                        ps.limits.max_values = limits->max_values;
        }
        ps.limits.max_depth = MIN(ps.limits.max_depth, (unsigned) JSON_DEPTH_HARD_MAX);

        if (!text && len > 0)
                return vh_error_set(err, -EINVAL, "no JSON text");
        if (len > ps.limits.max_bytes)
                return vh_error_set(err, -E2BIG, "JSON text is %zu bytes, more than the limit of %zu", len,
                                    ps.limits.max_bytes);

        struct json_value *v = NULL;
        int r = parse_value(&ps, 0, &v);
        if (r < 0)
                return r;
        skip_ws(&ps);
        if (ps.pos < ps.len) {
                char b[32];
                r = fail_at(&ps, ps.pos, -EINVAL, "unexpected %s after the JSON value",
                            describe_here(&ps, b, sizeof(b)));
                json_value_free(v);
                return r;
        }
        *ret = v;
        return 0;
}

const char *json_type_to_string(enum json_type t) {
        switch (t) {
        case JSON_NULL: return "null";
        case JSON_BOOL: return "boolean";
        case JSON_NUMBER: return "number";
        case JSON_STRING: return "string";
        case JSON_ARRAY: return "array";
        case JSON_OBJECT: return "object";
        }
        return "unknown";
}

struct json_value *json_object_get(const struct json_value *v, const char *key) {
        if (!v || v->type != JSON_OBJECT || !key)
                return NULL;
        for (size_t i = 0; i < v->object.n; i++)
                if (streq(v->object.members[i].key, key))
                        return v->object.members[i].value;
        return NULL;
}

struct json_value *json_object_steal(struct json_value *v, const char *key) {
        if (!v || v->type != JSON_OBJECT || !key)
                return NULL;
        for (size_t i = 0; i < v->object.n; i++) {
                struct json_member *m = &v->object.members[i];
                if (!streq(m->key, key))
                        continue;
                struct json_value *taken = m->value;
                free(m->key);
                memmove(m, m + 1, (v->object.n - i - 1) * sizeof(*m));
                v->object.n--;
                return taken;
        }
        return NULL;
}

int json_get_string(const struct json_value *v, const char **ret) {
        if (!v)
                return -ENOENT;
        if (v->type != JSON_STRING)
                return -EINVAL;
        *ret = v->string.s;
        return 0;
}

int json_get_int(const struct json_value *v, int64_t *ret) {
        if (!v)
                return -ENOENT;
        if (v->type != JSON_NUMBER)
                return -EINVAL;
        if (!v->number.is_int)
                return -ERANGE;
        *ret = v->number.i;
        return 0;
}

int json_get_uint(const struct json_value *v, uint64_t *ret) {
        if (!v)
                return -ENOENT;
        if (v->type != JSON_NUMBER)
                return -EINVAL;
        if (!v->number.is_uint)
                return -ERANGE;
        *ret = v->number.u;
        return 0;
}

int json_get_double(const struct json_value *v, double *ret) {
        if (!v)
                return -ENOENT;
        if (v->type != JSON_NUMBER)
                return -EINVAL;
        *ret = v->number.d;
        return 0;
}

int json_get_bool(const struct json_value *v, bool *ret) {
        if (!v)
                return -ENOENT;
        if (v->type != JSON_BOOL)
                return -EINVAL;
        *ret = v->boolean;
        return 0;
}

size_t json_array_len(const struct json_value *v) {
        return v && v->type == JSON_ARRAY ? v->array.n : 0;
}

struct json_value *json_array_at(const struct json_value *v, size_t i) {
        if (!v || v->type != JSON_ARRAY || i >= v->array.n)
                return NULL;
        return v->array.items[i];
}

int json_value_write(struct json_writer *w, const struct json_value *v) {
        if (!v) {
                if (!w->error)
                        w->error = -EINVAL;
                return w->error;
        }
        switch (v->type) {
        case JSON_NULL:
                json_null(w);
                break;
        case JSON_BOOL:
                json_bool(w, v->boolean);
                break;
        case JSON_NUMBER:
                if (v->number.is_int)
                        json_int(w, v->number.i);
                else if (v->number.is_uint)
                        json_uint(w, v->number.u);
                else
                        json_double(w, v->number.d);
                break;
        case JSON_STRING:
                json_string(w, v->string.s);
                break;
        case JSON_ARRAY:
                json_array_begin(w);
                /* Past the writer's depth, begin has failed without opening:
                 * calling end would close the parent's bracket. */
                if (w->error)
                        return w->error;
                for (size_t i = 0; i < v->array.n && !w->error; i++)
                        json_value_write(w, v->array.items[i]);
                json_array_end(w);
                break;
        case JSON_OBJECT:
                json_object_begin(w);
                if (w->error)
                        return w->error;
                for (size_t i = 0; i < v->object.n && !w->error; i++) {
                        json_key(w, v->object.members[i].key);
                        json_value_write(w, v->object.members[i].value);
                }
                json_object_end(w);
                break;
        }
        return w->error;
}

int json_value_format(const struct json_value *v, bool pretty, char **ret) {
        struct json_writer w;
        int r = 0;

        json_writer_init(&w, pretty);
        json_value_write(&w, v);
        char *s = json_writer_finish(&w, &r);
        if (!s)
                return r < 0 ? r : -ENOMEM;
        *ret = s;
        return 0;
}
