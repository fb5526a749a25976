/* base/strv.h: NULL-terminated string vectors, for building argv arrays. */
#pragma once

#include <stddef.h>

#include "base/macro.h"

struct strv {
        char **v;   /* always NULL-terminated once anything was added */
        size_t n;
        int error;  /* sticky -ENOMEM */
};

/* Appends a copy of 's'. */
void strv_add(struct strv *s, const char *str);
/* Appends a formatted string. */
void strv_addf(struct strv *s, const char *fmt, ...) _printf_(2, 3);
void strv_done(struct strv *s);
/* Joins with spaces (for logs and error messages only, never for a shell). */
char *strv_join(char *const *v, const char *sep);
