/* base/log.h: how programs (never libraries) report to the user.
 * log_error_errno(r, fmt, ...) prints and returns r, with %m meaning
 * strerror(-r), so callers write: return log_error_errno(r, "...: %m"); */
#pragma once

#include <stdbool.h>

#include "base/macro.h"

enum log_level { LOG_LEVEL_ERROR, LOG_LEVEL_WARNING, LOG_LEVEL_INFO, LOG_LEVEL_DEBUG };

void log_set_max_level(enum log_level level);
enum log_level log_get_max_level(void);

int log_internal(enum log_level level, int error, const char *fmt, ...) _printf_(3, 4);

#define log_error_errno(r, ...) log_internal(LOG_LEVEL_ERROR, (r), __VA_ARGS__)
#define log_warning_errno(r, ...) log_internal(LOG_LEVEL_WARNING, (r), __VA_ARGS__)
#define log_error(...) log_internal(LOG_LEVEL_ERROR, 0, __VA_ARGS__)
#define log_warning(...) log_internal(LOG_LEVEL_WARNING, 0, __VA_ARGS__)
#define log_info(...) log_internal(LOG_LEVEL_INFO, 0, __VA_ARGS__)
#define log_debug(...) log_internal(LOG_LEVEL_DEBUG, 0, __VA_ARGS__)
