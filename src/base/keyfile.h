/* base/keyfile.h: the reader of vmhost's hand-edited definition files
 * (vms/NAME/vm.conf, networks/NAME.conf): one "key = value" a line, '#'
 * starts a comment line, blank lines are skipped. A value is the rest of
 * the line after the first '=', stripped of white space; there is no
 * quoting and no escaping. The reader owns the syntax, its limits and the
 * "FILE:LINE: ..." form of every error; what a key means stays with the
 * definition that knows it.
 *
 *     _cleanup_(keyfile_freep) struct keyfile *kf = NULL;
 *     r = keyfile_new(text, origin, &syntax, &kf, err);
 *     while ((r = keyfile_next(kf, &key, &value, err)) > 0)
 *             if (bad(value))
 *                     return keyfile_error(kf, err, -EINVAL, "%s must be ...", key);
 *
 * It is pure (no system calls), so the fuzzers and unit tests drive it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "base/macro.h"
#include "vmhost/error.h"

/* What one kind of file allows. Zero means the strict choice where there is
 * one; each format states its limits. */
struct keyfile_syntax {
        size_t max_bytes;            /* the whole text; past it -EFBIG */
        size_t max_line;             /* a line without its newline must be shorter */
        bool allow_repeats;          /* any key may be given again (the later wins or adds) */
        const char *const *repeatable; /* NULL-terminated keys that may repeat anyway */
        bool allow_empty_key;        /* pass " = v" on, for the caller's 'unknown key' */
        /* How much of a bad line and of a key errors quote; 0: all of it (the
         * message is bounded by VH_ERROR_MAX anyway). */
        int quote_line_max;
        int quote_key_max;
};

struct keyfile;

/* Starts reading 'text' (copied); 'origin' names it in errors and must
 * outlive the reader. -EFBIG past syntax->max_bytes. */
int keyfile_new(const char *text, const char *origin, const struct keyfile_syntax *syntax, struct keyfile **ret,
                struct vh_error *err);
struct keyfile *keyfile_free(struct keyfile *kf);
static inline void keyfile_freep(struct keyfile **p) {
        keyfile_free(*p);
}

/* The next entry: 1 with 'ret_key' and 'ret_value' (valid until the next
 * call or keyfile_free()), 0 at the end, or -errno with "FILE:LINE: ..."
 * in 'err' for a line that breaks the syntax. */
int keyfile_next(struct keyfile *kf, const char **ret_key, const char **ret_value, struct vh_error *err);

/* The number of the line keyfile_next() returned last (from 1). */
unsigned keyfile_line(const struct keyfile *kf);

/* Fills 'err' with "FILE:LINE: " and the message, for a value the caller
 * refuses; returns 'code'. */
int keyfile_error(const struct keyfile *kf, struct vh_error *err, int code, const char *fmt, ...) _printf_(4, 5);

/* Value helpers the definitions share. */

/* yes/true/on/1 or no/false/off/0; -EINVAL otherwise, 'ret' untouched. */
int keyfile_parse_bool(const char *value, bool *ret);
/* The index of 'value' in 'names' (n entries; NULL ones never match), or
 * -EINVAL: for enums written as words. */
int keyfile_parse_choice(const char *value, const char *const *names, size_t n);
/* Replaces the string in '*field' with a copy of 'value'; -ENOMEM leaves
 * it as it was. */
int keyfile_set_string(char **field, const char *value);
