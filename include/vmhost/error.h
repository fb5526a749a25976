/* vmhost/error.h: the error detail a library fills in when an errno alone
 * would lose the cause (a parse error, a corrupt table offset, a QMP error
 * class). Libraries never print; they return -errno and may fill this. */
#pragma once

#include <stddef.h>

#define VH_ERROR_MAX 512

struct vh_error {
        int code;                /* the -errno that was returned */
        char msg[VH_ERROR_MAX];  /* human-readable cause, empty if none */
};

/* Records a message in 'err' (which may be NULL) and returns 'code', so a
 * library can write: return vh_error_set(err, -EINVAL, "bad %s", what); */
int vh_error_set(struct vh_error *err, int code, const char *fmt, ...)
        __attribute__((format(printf, 3, 4)));

/* Clears 'err' (may be NULL). */
void vh_error_clear(struct vh_error *err);

/* The message, or strerror(-code) when no message was recorded. */
const char *vh_error_message(const struct vh_error *err, int code);
