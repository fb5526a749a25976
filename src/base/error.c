/* base/error.c: struct vh_error helpers. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "vmhost/error.h"

int vh_error_set(struct vh_error *err, int code, const char *fmt, ...) {
        if (err) {
                va_list ap;
                va_start(ap, fmt);
                vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
                va_end(ap);
                err->code = code;
        }
        return code;
}

void vh_error_clear(struct vh_error *err) {
        if (err) {
                err->code = 0;
                err->msg[0] = '\0';
        }
}

const char *vh_error_message(const struct vh_error *err, int code) {
        if (err && err->msg[0])
                return err->msg;
        return strerror(code < 0 ? -code : code);
}
