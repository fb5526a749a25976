/* base/strv.c: string vectors. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/strv.h"

static void take(struct strv *s, char *str) {
        if (!str) {
                s->error = -ENOMEM;
                return;
        }
        if (s->error) {
                free(str);
                return;
        }
        char **nv = realloc(s->v, (s->n + 2) * sizeof(char *));
        if (!nv) {
                free(str);
                s->error = -ENOMEM;
                return;
        }
        s->v = nv;
        s->v[s->n++] = str;
        s->v[s->n] = NULL;
}

void strv_add(struct strv *s, const char *str) {
        take(s, strdup(str));
}

void strv_addf(struct strv *s, const char *fmt, ...) {
        va_list ap;
        char *str;
        va_start(ap, fmt);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        if (vasprintf(&str, fmt, ap) < 0)
                str = NULL;
#pragma GCC diagnostic pop
        va_end(ap);
        take(s, str);
}

void strv_done(struct strv *s) {
        for (size_t i = 0; i < s->n; i++)
                free(s->v[i]);
        free(s->v);
        *s = (struct strv) {};
}

char *strv_join(char *const *v, const char *sep) {
        size_t len = 1;
        for (char *const *p = v; p && *p; p++)
                len += strlen(*p) + strlen(sep);
        char *out = malloc(len);
        if (!out)
                return NULL;
        out[0] = '\0';
        for (char *const *p = v; p && *p; p++) {
                if (p != v)
                        strcat(out, sep);
                strcat(out, *p);
        }
        return out;
}
