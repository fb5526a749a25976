/* base/defs.h: table-driven definitions. A definition (a VM, a network,
 * later a remote host) is a C struct that vmhost stores as a keyfile (see
 * base/keyfile.h). Its schema is one table with a row per key: the key's
 * name, its type, where it lives in the struct, how its value is checked
 * and written. Parsing, setting one key, formatting and freeing are then
 * the same code for every kind of definition; what stays with each kind is
 * the few keys whose values need their own parser (a NIC, a subnet) and the
 * checks across keys (its validate()).
 *
 *     static const struct def_key keys[] = {
 *             { "name", DEF_STRING, offsetof(struct x, name), DEF_REQUIRED, .valid = name_is_valid },
 *             { "mtu", DEF_UINT, offsetof(struct x, mtu), .min = 576, .max = 9000 },
 *     };
 *
 * Messages for a refused value have one shape, "KEY must be EXPECT, not
 * 'VALUE'", where EXPECT is the row's 'expect' or is made from its range or
 * its choices; a row with its own set() says what it likes. Pure (no system
 * calls), so the fuzzers and unit tests drive it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "base/keyfile.h"
#include "vmhost/error.h"

enum def_type {
        DEF_STRING, /* char *; NULL: not set. 'valid' or 'choices' check it */
        DEF_UINT,   /* unsigned in min..max; 0: not set */
        DEF_BOOL,   /* bool, written yes/no */
        DEF_CHOICE, /* an enum (stored as an unsigned) indexing 'choices' */
        DEF_LIST,   /* a bounded array and its count, one line per element (see struct def_list) */
        DEF_CUSTOM, /* set() and format() do it all */
};

enum def_key_flags {
        DEF_REQUIRED = 1 << 0,     /* parsing fails without it (message: 'missing') */
        DEF_IMMUTABLE = 1 << 1,    /* identity or allocated: a change after creation is refused */
        DEF_ALWAYS = 1 << 2,       /* formatted even when zero (the first choice, false, 0) */
        /* A value vmhost hands out and must never hand out twice (an id, a
         * MAC, a display, a port): a lenient parse cannot skip its line. */
        DEF_ALLOCATED = 1 << 3,
};

/* A DEF_LIST key: elements of 'elem_size' bytes at the key's offset, their
 * count an unsigned at 'count_offset', at most 'max'. */
struct def_list {
        size_t count_offset;
        size_t elem_size;
        unsigned max;
        const char *plural; /* "NICs": "at most 8 NICs" */
        /* Fills '*elem' (untouched on failure). */
        int (*parse)(const char *value, void *elem, struct vh_error *err);
        char *(*format)(const void *elem); /* NULL on out of memory */
        void (*done)(void *elem);          /* NULL: nothing to free */
};

struct def_key {
        const char *name;
        enum def_type type;
        size_t offset;
        unsigned flags;           /* enum def_key_flags */
        const char *expect;       /* "an interface name (1..15 characters)"; NULL: made from the row */
        const char *missing;      /* DEF_REQUIRED: the message without the file ("missing key 'name'") */
        bool (*valid)(const char *value); /* DEF_STRING */
        const char *const *choices;       /* DEF_CHOICE, or the values a DEF_STRING may take */
        size_t n_choices;
        long min, max;                    /* DEF_UINT */
        const struct def_list *list;      /* DEF_LIST */
        /* Override the type's own handling where set (DEF_CUSTOM: required).
         * set() returns -EINVAL with the message in 'err', or -ENOMEM;
         * format() writes the key's lines (none when it is not set). */
        int (*set)(void *obj, const char *value, struct vh_error *err);
        int (*format)(const void *obj, FILE *f);
        void (*done)(void *obj); /* frees what set() allocated beyond the field */
};

struct def_schema {
        const char *header; /* comment lines def_format() writes first */
        const struct def_key *keys;
        size_t n_keys;
        const struct keyfile_syntax *syntax;
};

/* The row of 'name', or NULL. */
const struct def_key *def_key_find(const struct def_schema *schema, const char *name);

/* Sets one key of 'obj' as a line of the file would; -EINVAL with the
 * reason in 'err' ("unknown key 'x'", "cpus must be 1..256, not '0'"). */
int def_set(const struct def_schema *schema, void *obj, const char *key, const char *value, struct vh_error *err);

enum def_parse_flags {
        /* Lines whose value is refused are skipped and counted, the first
         * one's message kept in 'err'; a missing required key counts too.
         * A line that might hold an allocated value (a DEF_ALLOCATED key, or
         * one the reader cannot split into a known key and a value) still
         * fails the parse: the caller cannot know what it holds. */
        DEF_PARSE_LENIENT = 1 << 0,
};

/* Reads 'text' into 'obj', which holds the defaults. Errors are "ORIGIN:LINE:
 * ..." and "ORIGIN: missing ...". Returns 0, or with DEF_PARSE_LENIENT the
 * number of problems skipped; -errno on failure ('obj' may then hold part
 * of the text: the caller frees it). */
int def_parse(const struct def_schema *schema, void *obj, const char *text, const char *origin, unsigned flags,
              struct vh_error *err);

/* The header and every key that is set, in the table's order, as text
 * def_parse() reads back; NULL on out of memory. */
char *def_format(const struct def_schema *schema, const void *obj);

/* Frees what the keys of 'obj' own (not 'obj' itself). */
void def_free_fields(const struct def_schema *schema, void *obj);

/* The text of the definition file 'path' (at most 'max' bytes): 0.
 * -ENOENT without a message: the caller says what is missing in its own
 * words ("no network 'x'"). Every other failure with one naming the file. */
int def_file_read(const char *path, size_t max, char **ret, struct vh_error *err);

/* The file 'path' for the object 'name' says its name is 'found': -EINVAL
 * with a message naming both unless they are the same (a copied or renamed
 * file must not act as another object). */
int def_name_check(const char *path, const char *found, const char *name, struct vh_error *err);
