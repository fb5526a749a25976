/* base/log.c: messages to stderr, prefixed with the program name. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

#include "base/log.h"

static enum log_level max_level = LOG_LEVEL_INFO;

void log_set_max_level(enum log_level level) {
        max_level = level;
}

enum log_level log_get_max_level(void) {
        return max_level;
}

int log_internal(enum log_level level, int error, const char *fmt, ...) {
        if (level > max_level)
                return error;

        int saved = errno;
        /* %m in the format refers to 'error', not to whatever errno is now. */
        errno = error < 0 ? -error : error;

        static const char *const prefix[] = {
                [LOG_LEVEL_ERROR] = "error: ",
                [LOG_LEVEL_WARNING] = "warning: ",
                [LOG_LEVEL_INFO] = "",
                [LOG_LEVEL_DEBUG] = "debug: ",
        };
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "vmhost: %s", prefix[level]);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        vfprintf(stderr, fmt, ap);
#pragma GCC diagnostic pop
        fputc('\n', stderr);
        va_end(ap);

        errno = saved;
        return error;
}
