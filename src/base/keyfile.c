/* base/keyfile.c: the "key = value" reader shared by the VM and network
 * definitions (see keyfile.h for the syntax). */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/keyfile.h"
#include "base/strutil.h"

struct keyfile {
        char *text;                /* a private copy, cut into lines in place */
        char *next;                /* the unread rest of 'text' */
        const char *origin;
        struct keyfile_syntax syntax;
        unsigned line_no;
        /* The keys returned so far, when keys must be unique. They point into
         * 'text', which never moves, and number at most one per line, so the
         * byte limit bounds them. */
        const char **seen;
        size_t n_seen, n_seen_alloc;
};

int keyfile_new(const char *text, const char *origin, const struct keyfile_syntax *syntax, struct keyfile **ret,
                struct vh_error *err) {
        size_t n = strlen(text);
        if (n > syntax->max_bytes)
                return vh_error_set(err, -EFBIG, "%s: larger than %zu bytes", origin, syntax->max_bytes);
        struct keyfile *kf = calloc(1, sizeof(*kf));
        if (!kf)
                return -ENOMEM;
        kf->text = malloc(n + 1);
        if (!kf->text) {
                free(kf);
                return -ENOMEM;
        }
        memcpy(kf->text, text, n + 1);
        kf->next = kf->text;
        kf->origin = origin;
        kf->syntax = *syntax;
        *ret = kf;
        return 0;
}

struct keyfile *keyfile_free(struct keyfile *kf) {
        if (!kf)
                return NULL;
        free(kf->text);
        free(kf->seen);
        free(kf);
        return NULL;
}

unsigned keyfile_line(const struct keyfile *kf) {
        return kf->line_no;
}

int keyfile_error(const struct keyfile *kf, struct vh_error *err, int code, const char *fmt, ...) {
        char msg[VH_ERROR_MAX];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof(msg), fmt, ap);
        va_end(ap);
        return vh_error_set(err, code, "%s:%u: %s", kf->origin, kf->line_no, msg);
}

static bool key_may_repeat(const struct keyfile *kf, const char *key) {
        if (kf->syntax.allow_repeats)
                return true;
        for (const char *const *k = kf->syntax.repeatable; k && *k; k++)
                if (streq(*k, key))
                        return true;
        return false;
}

/* Refuses a key given before; remembers it otherwise. */
static int check_unique(struct keyfile *kf, const char *key, int quote_key, struct vh_error *err) {
        for (size_t i = 0; i < kf->n_seen; i++)
                if (streq(kf->seen[i], key))
                        return keyfile_error(kf, err, -EINVAL, "key '%.*s' given twice", quote_key, key);
        if (kf->n_seen == kf->n_seen_alloc) {
                size_t n = kf->n_seen_alloc ? 2 * kf->n_seen_alloc : 16;
                const char **s = realloc(kf->seen, n * sizeof(*s));
                if (!s)
                        return -ENOMEM;
                kf->seen = s;
                kf->n_seen_alloc = n;
        }
        kf->seen[kf->n_seen++] = key;
        return 0;
}

int keyfile_next(struct keyfile *kf, const char **ret_key, const char **ret_value, struct vh_error *err) {
        int quote_line = kf->syntax.quote_line_max > 0 ? kf->syntax.quote_line_max : INT_MAX;
        int quote_key = kf->syntax.quote_key_max > 0 ? kf->syntax.quote_key_max : INT_MAX;

        while (*kf->next) {
                char *line = kf->next;
                char *nl = strchr(line, '\n');
                size_t n = nl ? (size_t) (nl - line) : strlen(line);
                kf->line_no++;
                /* Measured before stripping: the limit is on what was read. */
                if (n >= kf->syntax.max_line)
                        return keyfile_error(kf, err, -EINVAL, "line longer than %zu bytes", kf->syntax.max_line);
                line[n] = '\0';
                kf->next = nl ? nl + 1 : line + n;

                strstrip(line);
                if (line[0] == '\0' || line[0] == '#')
                        continue;
                char *eq = strchr(line, '=');
                if (!eq)
                        return keyfile_error(kf, err, -EINVAL, "expected 'key = value', got '%.*s'", quote_line, line);
                *eq = '\0';
                char *key = strstrip(line), *value = strstrip(eq + 1);
                if (key[0] == '\0' && !kf->syntax.allow_empty_key)
                        return keyfile_error(kf, err, -EINVAL, "missing key before '='");
                if (value[0] == '\0')
                        return keyfile_error(kf, err, -EINVAL, "key '%.*s' has no value", quote_key, key);
                /* Where only some keys may repeat, repeating another is almost
                 * always an editing mistake: the later line would silently win. */
                if (!key_may_repeat(kf, key)) {
                        int r = check_unique(kf, key, quote_key, err);
                        if (r < 0)
                                return r;
                }
                *ret_key = key;
                *ret_value = value;
                return 1;
        }
        return 0;
}

int keyfile_parse_bool(const char *value, bool *ret) {
        if (streq(value, "yes") || streq(value, "true") || streq(value, "on") || streq(value, "1")) {
                *ret = true;
                return 0;
        }
        if (streq(value, "no") || streq(value, "false") || streq(value, "off") || streq(value, "0")) {
                *ret = false;
                return 0;
        }
        return -EINVAL;
}

int keyfile_parse_choice(const char *value, const char *const *names, size_t n) {
        for (size_t i = 0; i < n && i <= INT_MAX; i++)
                if (names[i] && streq(value, names[i]))
                        return (int) i;
        return -EINVAL;
}

int keyfile_set_string(char **field, const char *value) {
        char *v = strdup(value);
        if (!v)
                return -ENOMEM;
        free(*field);
        *field = v;
        return 0;
}
