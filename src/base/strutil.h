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
