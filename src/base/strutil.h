/* base/strutil.h: string helpers: formatting into new strings, checked
 * number parsing, size parsing and printing, name validation. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/macro.h"

/* asprintf() that returns NULL on failure. */
char *strdup_printf(const char *fmt, ...) _printf_(1, 2);

bool startswith(const char *s, const char *prefix);
bool endswith(const char *s, const char *suffix);

/* Strips leading and trailing white space in place; returns s. */
char *strstrip(char *s);

/* Parses a whole decimal number; -EINVAL on junk, -ERANGE past the bounds. */
int parse_u64(const char *s, uint64_t *ret);
int parse_int_range(const char *s, long min, long max, long *ret);

/* Parses a size like qemu-img does: "10G", "512M", "1.5G", "4096", "64k";
 * a bare number is bytes; suffixes are binary (K=1024). */
int parse_size(const char *s, uint64_t *ret);

/* Prints a size like "2 GiB" or "1.5 MiB" into buf. */
const char *format_size(uint64_t bytes, char *buf, size_t len);

/* Object names (VMs, networks, hosts): 1..32 chars of [a-zA-Z0-9_-],
 * starting with a letter or digit. They end up in file names, tap names and
 * QEMU ids, so nothing else is allowed. */
#define VH_NAME_MAX 32
bool name_is_valid(const char *name);

/* Text that came from elsewhere (another host's reply or stderr, a name
 * it gave) made safe to print to a terminal, in place: every control
 * character (below 0x20, 0x7f, and the C1 controls U+0080..U+009F, which
 * terminals read as escapes too) and every byte that is not part of valid
 * UTF-8 becomes '?'. With STR_PRINTABLE_LINES, '\n' and '\t' stay. The
 * length never changes; returns 's'. */
enum { STR_PRINTABLE_LINES = 1 << 0 };
char *str_make_printable(char *s, unsigned flags);
/* The same on a copy (NULL when out of memory). */
char *str_printable_dup(const char *s, unsigned flags);
