/* base/strutil.c: string helpers. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/strutil.h"

char *strdup_printf(const char *fmt, ...) {
        va_list ap;
        char *s;
        va_start(ap, fmt);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
        int r = vasprintf(&s, fmt, ap);
#pragma GCC diagnostic pop
        va_end(ap);
        return r < 0 ? NULL : s;
}

bool startswith(const char *s, const char *prefix) {
        return strncmp(s, prefix, strlen(prefix)) == 0;
}

bool endswith(const char *s, const char *suffix) {
        size_t a = strlen(s), b = strlen(suffix);
        return a >= b && memcmp(s + a - b, suffix, b) == 0;
}

char *strstrip(char *s) {
        char *p = s;
        while (isspace((unsigned char) *p))
                p++;
        size_t n = strlen(p);
        while (n > 0 && isspace((unsigned char) p[n - 1]))
                n--;
        memmove(s, p, n);
        s[n] = '\0';
        return s;
}

int parse_u64(const char *s, uint64_t *ret) {
        if (isempty(s) || !isdigit((unsigned char) s[0]))
                return -EINVAL;
        errno = 0;
        char *end;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (*end != '\0')
                return -EINVAL;
        *ret = v;
        return 0;
}

int parse_int_range(const char *s, long min, long max, long *ret) {
        if (isempty(s))
                return -EINVAL;
        errno = 0;
        char *end;
        long v = strtol(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;
        if (*end != '\0' || end == s)
                return -EINVAL;
        if (v < min || v > max)
                return -ERANGE;
        *ret = v;
        return 0;
}

int parse_size(const char *s, uint64_t *ret) {
        static const struct {
                char suffix;
                unsigned shift;
        } units[] = {
                { 'B', 0 }, { 'K', 10 }, { 'M', 20 }, { 'G', 30 }, { 'T', 40 }, { 'P', 50 }, { 'E', 60 },
        };

        if (isempty(s) || !isdigit((unsigned char) s[0]))
                return -EINVAL;

        errno = 0;
        char *end;
        uint64_t whole = strtoull(s, &end, 10);
        if (errno == ERANGE)
                return -ERANGE;

        /* Up to 9 fraction digits, as in "1.5G". */
        uint64_t frac = 0, frac_div = 1;
        if (*end == '.') {
                end++;
                if (!isdigit((unsigned char) *end))
                        return -EINVAL;
                while (isdigit((unsigned char) *end)) {
                        if (frac_div < 1000000000ULL) {
                                frac = frac * 10 + (uint64_t) (*end - '0');
                                frac_div *= 10;
                        }
                        end++;
                }
        }

        unsigned shift = 0;
        if (*end) {
                char c = (char) toupper((unsigned char) *end);
                size_t i;
                for (i = 0; i < ELEMENTSOF(units); i++)
                        if (units[i].suffix == c)
                                break;
                if (i == ELEMENTSOF(units))
                        return -EINVAL;
                shift = units[i].shift;
                end++;
                /* Accept "G", "GB", "GiB". */
                if (shift > 0 && (streq(end, "iB") || streq(end, "ib") || streq(end, "B") || streq(end, "b")))
                        end += strlen(end);
                if (*end)
                        return -EINVAL;
        }
        if (frac_div > 1 && shift == 0)
                return -EINVAL; /* "1.5" bytes makes no sense */

        if (shift > 0 && whole > (UINT64_MAX >> shift))
                return -ERANGE;
        uint64_t v = whole << shift;
        if (frac) {
                unsigned __int128 f = ((unsigned __int128) frac << shift) / frac_div;
                if (f > UINT64_MAX - v)
                        return -ERANGE;
                v += (uint64_t) f;
        }
        *ret = v;
        return 0;
}

const char *format_size(uint64_t bytes, char *buf, size_t len) {
        static const char *const names[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
        unsigned i = 0;
        double v = (double) bytes;
        while (v >= 1024.0 && i + 1 < ELEMENTSOF(names)) {
                v /= 1024.0;
                i++;
        }
        if (i == 0)
                snprintf(buf, len, "%" PRIu64 " B", bytes);
        else if (v == (double) (uint64_t) v)
                snprintf(buf, len, "%" PRIu64 " %s", (uint64_t) v, names[i]);
        else
                snprintf(buf, len, "%.3g %s", v, names[i]);
        return buf;
}

bool name_is_valid(const char *name) {
        size_t n = name ? strlen(name) : 0;
        if (n == 0 || n > VH_NAME_MAX)
                return false;
        if (!isalnum((unsigned char) name[0]))
                return false;
        for (size_t i = 0; i < n; i++) {
                unsigned char c = (unsigned char) name[i];
                if (!isalnum(c) && c != '-' && c != '_')
                        return false;
        }
        return true;
}

/* The length of the valid UTF-8 sequence at 's' (no overlong forms, no
 * surrogates, at most U+10FFFF), 0 when there is none. */
static size_t utf8_sequence(const unsigned char *s, uint32_t *ret_cp) {
        size_t n;
        uint32_t cp, min;
        if (s[0] < 0x80)
                return *ret_cp = s[0], 1;
        if (s[0] >= 0xc2 && s[0] <= 0xdf)
                n = 2, cp = s[0] & 0x1f, min = 0x80;
        else if (s[0] >= 0xe0 && s[0] <= 0xef)
                n = 3, cp = s[0] & 0x0f, min = 0x800;
        else if (s[0] >= 0xf0 && s[0] <= 0xf4)
                n = 4, cp = s[0] & 0x07, min = 0x10000;
        else
                return 0;
        for (size_t i = 1; i < n; i++) {
                if ((s[i] & 0xc0) != 0x80)
                        return 0;
                cp = cp << 6 | (s[i] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                return 0;
        *ret_cp = cp;
        return n;
}

char *str_make_printable(char *s, unsigned flags) {
        unsigned char *p = (unsigned char *) s;
        while (p && *p) {
                uint32_t cp;
                size_t n = utf8_sequence(p, &cp);
                bool keep = n > 0 && cp >= 0x20 && cp != 0x7f && !(cp >= 0x80 && cp <= 0x9f);
                if (n == 1 && (flags & STR_PRINTABLE_LINES) && (cp == '\n' || cp == '\t'))
                        keep = true;
                if (keep) {
                        p += n;
                        continue;
                }
                /* A bad sequence: its bytes each become '?'. */
                for (size_t i = 0; i < MAX(n, (size_t) 1); i++)
                        *p++ = '?';
        }
        return s;
}

char *str_printable_dup(const char *s, unsigned flags) {
        char *c = strdup(s ? s : "");
        return c ? str_make_printable(c, flags) : NULL;
}
