/* base/defs.c: parse, set, format and free any definition described by a
 * schema table (see defs.h). */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "base/defs.h"
#include "base/fileio.h"
#include "base/macro.h"
#include "base/strutil.h"

/* Fields are found by offset; the macros keep the casts in one place. */
#define FIELD(obj, off, type) ((type *) (void *) ((char *) (obj) + (off)))
#define CFIELD(obj, off, type) ((const type *) (const void *) ((const char *) (obj) + (off)))

/* Keys of one schema tracked by a 64-bit set in def_parse(). */
#define DEF_KEYS_MAX 64

const struct def_key *def_key_find(const struct def_schema *schema, const char *name) {
        for (size_t i = 0; i < schema->n_keys; i++)
                if (streq(schema->keys[i].name, name))
                        return &schema->keys[i];
        return NULL;
}

static int choice_index(const struct def_key *k, const char *value) {
        return keyfile_parse_choice(value, k->choices, k->n_choices);
}

/* "a, b or c" from the row's choices. */
static void choices_text(const struct def_key *k, char *buf, size_t len) {
        size_t n = 0, total = 0, pos = 0;
        for (size_t i = 0; i < k->n_choices; i++)
                total += k->choices[i] != NULL;
        buf[0] = '\0';
        for (size_t i = 0; i < k->n_choices && pos < len; i++) {
                if (!k->choices[i])
                        continue;
                const char *sep = n == 0 ? "" : n + 1 == total ? " or " : ", ";
                int w = snprintf(buf + pos, len - pos, "%s%s", sep, k->choices[i]);
                if (w < 0)
                        return;
                pos += (size_t) w;
                n++;
        }
}

/* "KEY must be EXPECT, not 'VALUE'". */
static int refuse(const struct def_key *k, const char *value, struct vh_error *err) {
        char expect[256];
        if (k->expect)
                snprintf(expect, sizeof(expect), "%s", k->expect);
        else if (k->type == DEF_UINT)
                snprintf(expect, sizeof(expect), "%ld..%ld", k->min, k->max);
        else if (k->type == DEF_BOOL)
                snprintf(expect, sizeof(expect), "yes or no");
        else if (k->choices)
                choices_text(k, expect, sizeof(expect));
        else
                snprintf(expect, sizeof(expect), "valid");
        return vh_error_set(err, -EINVAL, "%s must be %s, not '%.200s'", k->name, expect, value);
}

static int set_list(const struct def_key *k, void *obj, const char *value, struct vh_error *err) {
        const struct def_list *l = k->list;
        unsigned *count = FIELD(obj, l->count_offset, unsigned);
        if (*count >= l->max)
                return vh_error_set(err, -EINVAL, "at most %u %s", l->max, l->plural);
        int r = l->parse(value, (char *) obj + k->offset + *count * l->elem_size, err);
        if (r < 0)
                return r;
        (*count)++;
        return 0;
}

static int set_key(const struct def_key *k, void *obj, const char *value, struct vh_error *err) {
        if (k->set)
                return k->set(obj, value, err);
        switch (k->type) {
        case DEF_STRING:
                if ((k->valid && !k->valid(value)) || (k->choices && choice_index(k, value) < 0))
                        return refuse(k, value, err);
                return keyfile_set_string(FIELD(obj, k->offset, char *), value);
        case DEF_UINT: {
                long v;
                if (parse_int_range(value, k->min, k->max, &v) < 0)
                        return refuse(k, value, err);
                *FIELD(obj, k->offset, unsigned) = (unsigned) v;
                return 0;
        }
        case DEF_BOOL:
                if (keyfile_parse_bool(value, FIELD(obj, k->offset, bool)) < 0)
                        return refuse(k, value, err);
                return 0;
        case DEF_CHOICE: {
                int i = choice_index(k, value);
                if (i < 0)
                        return refuse(k, value, err);
                *FIELD(obj, k->offset, unsigned) = (unsigned) i;
                return 0;
        }
        case DEF_LIST:
                return set_list(k, obj, value, err);
        case DEF_CUSTOM:
                break;
        }
        assert(!"a DEF_CUSTOM key needs set()");
        return -EINVAL;
}

int def_set(const struct def_schema *schema, void *obj, const char *key, const char *value, struct vh_error *err) {
        const struct def_key *k = def_key_find(schema, key);
        if (!k)
                return vh_error_set(err, -EINVAL, "unknown key '%.100s'", key);
        struct vh_error e = {};
        int r = set_key(k, obj, value, &e);
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return vh_error_set(err, -EINVAL, "%s", e.msg[0] ? e.msg : "invalid value");
        return 0;
}

static int missing(const struct def_key *k, const char *origin, struct vh_error *err) {
        if (k->missing)
                return vh_error_set(err, -EINVAL, "%s: %s", origin, k->missing);
        return vh_error_set(err, -EINVAL, "%s: missing key '%s'", origin, k->name);
}

int def_parse(const struct def_schema *schema, void *obj, const char *text, const char *origin, unsigned flags,
              struct vh_error *err) {
        assert(schema->n_keys <= DEF_KEYS_MAX);
        bool lenient = flags & DEF_PARSE_LENIENT;
        _cleanup_(keyfile_freep) struct keyfile *kf = NULL;
        int r = keyfile_new(text, origin, schema->syntax, &kf, err);
        if (r < 0)
                return r;

        uint64_t seen = 0;
        int problems = 0;
        const char *key, *value;
        while ((r = keyfile_next(kf, &key, &value, err)) > 0) {
                const struct def_key *k = def_key_find(schema, key);
                struct vh_error e = {};
                r = def_set(schema, obj, key, value, &e);
                if (r == -ENOMEM)
                        return r;
                if (r >= 0) {
                        seen |= UINT64_C(1) << (k - schema->keys);
                        continue;
                }
                /* An unknown but named key cannot hide an allocated value;
                 * a nameless one might be anything. */
                bool uncertain = k ? (k->flags & DEF_ALLOCATED) : key[0] == '\0';
                if (!lenient || uncertain)
                        return keyfile_error(kf, err, -EINVAL, "%s", e.msg);
                if (problems++ == 0)
                        (void) keyfile_error(kf, err, -EINVAL, "%s", e.msg);
        }
        /* A line the reader cannot split is fatal even when lenient: which
         * key it meant is unknown. */
        if (r < 0)
                return r;

        for (size_t i = 0; i < schema->n_keys; i++) {
                const struct def_key *k = &schema->keys[i];
                if (!(k->flags & DEF_REQUIRED) || (seen & (UINT64_C(1) << i)))
                        continue;
                if (!lenient)
                        return missing(k, origin, err);
                if (problems++ == 0)
                        (void) missing(k, origin, err);
        }
        return lenient ? problems : 0;
}

static int format_key(const struct def_key *k, const void *obj, FILE *f) {
        if (k->format)
                return k->format(obj, f);
        bool always = k->flags & DEF_ALWAYS;
        switch (k->type) {
        case DEF_STRING: {
                const char *s = *CFIELD(obj, k->offset, char *);
                if (s)
                        fprintf(f, "%s = %s\n", k->name, s);
                return 0;
        }
        case DEF_UINT: {
                unsigned v = *CFIELD(obj, k->offset, unsigned);
                if (v || always)
                        fprintf(f, "%s = %u\n", k->name, v);
                return 0;
        }
        case DEF_BOOL: {
                bool v = *CFIELD(obj, k->offset, bool);
                if (v || always)
                        fprintf(f, "%s = %s\n", k->name, v ? "yes" : "no");
                return 0;
        }
        case DEF_CHOICE: {
                unsigned v = *CFIELD(obj, k->offset, unsigned);
                if ((v || always) && v < k->n_choices && k->choices[v])
                        fprintf(f, "%s = %s\n", k->name, k->choices[v]);
                return 0;
        }
        case DEF_LIST: {
                const struct def_list *l = k->list;
                unsigned n = *CFIELD(obj, l->count_offset, unsigned);
                for (unsigned i = 0; i < n; i++) {
                        _cleanup_free_ char *s = l->format((const char *) obj + k->offset + i * l->elem_size);
                        if (!s)
                                return -ENOMEM;
                        fprintf(f, "%s = %s\n", k->name, s);
                }
                return 0;
        }
        case DEF_CUSTOM:
                break;
        }
        assert(!"a DEF_CUSTOM key needs format()");
        return -EINVAL;
}

char *def_format(const struct def_schema *schema, const void *obj) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f)
                return NULL;
        if (schema->header)
                fputs(schema->header, f);
        for (size_t i = 0; i < schema->n_keys; i++)
                if (format_key(&schema->keys[i], obj, f) < 0) {
                        fclose(f);
                        free(buf);
                        return NULL;
                }
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

void def_free_fields(const struct def_schema *schema, void *obj) {
        for (size_t i = 0; i < schema->n_keys; i++) {
                const struct def_key *k = &schema->keys[i];
                if (k->done)
                        k->done(obj);
                if (k->type == DEF_STRING) {
                        char **s = FIELD(obj, k->offset, char *);
                        *s = mfree(*s);
                } else if (k->type == DEF_LIST) {
                        const struct def_list *l = k->list;
                        unsigned *n = FIELD(obj, l->count_offset, unsigned);
                        for (unsigned j = 0; l->done && j < *n; j++)
                                l->done((char *) obj + k->offset + j * l->elem_size);
                        *n = 0;
                }
        }
}

int def_file_read(const char *path, size_t max, char **ret, struct vh_error *err) {
        int r = read_full_file(path, max, ret, NULL);
        if (r == -ENOENT)
                return r;
        if (r == -EFBIG)
                return vh_error_set(err, r, "%s: larger than %zu bytes", path, max);
        if (r < 0)
                return vh_error_set(err, r, "cannot read %s: %s", path, strerror(-r));
        return 0;
}

int def_name_check(const char *path, const char *found, const char *name, struct vh_error *err) {
        if (streq(found, name))
                return 0;
        return vh_error_set(err, -EINVAL, "%s: says name = %s, but the file is for '%s'", path, found, name);
}
