/* probe/probe-parse.c: pure parsers for the doctor's inputs (program version
 * lines, /proc/cpuinfo, module parameters and lists, kernel config). They
 * take text and never read files, so tests can feed them real outputs. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/macro.h"
#include "probe/probe-parse.h"

/* Steps over one line of 'text': sets *line and *len (without the newline)
 * and returns the start of the next line, or NULL at the end. */
static const char *line_next(const char *text, const char **line, size_t *len) {
        if (!text || !*text)
                return NULL;
        const char *nl = strchr(text, '\n');
        *line = text;
        *len = nl ? (size_t) (nl - text) : strlen(text);
        return nl ? nl + 1 : text + *len;
}

static void span_strip(const char **s, size_t *n) {
        while (*n > 0 && isspace((unsigned char) **s))
                (*s)++, (*n)--;
        while (*n > 0 && isspace((unsigned char) (*s)[*n - 1]))
                (*n)--;
}

static bool span_eq(const char *s, size_t n, const char *word) {
        return strlen(word) == n && strneq(s, word, n);
}

/* Module names: modprobe and the kernel treat '-' and '_' alike. */
static bool module_name_eq(const char *s, size_t n, const char *module) {
        size_t i = 0;
        for (; i < n && module[i]; i++) {
                char a = s[i] == '-' ? '_' : s[i];
                char b = module[i] == '-' ? '_' : module[i];
                if (a != b)
                        return false;
        }
        return i == n && module[i] == '\0';
}

static void copy_span(char *buf, size_t size, const char *s, size_t n) {
        if (size == 0)
                return;
        n = MIN(n, size - 1);
        memcpy(buf, s, n);
        buf[n] = '\0';
}

int probe_parse_version(const char *text, struct probe_version *ret) {
        if (!text)
                return -EINVAL;
        size_t n = strcspn(text, "\n");
        if (n > PROBE_VERSION_LINE_MAX)
                n = PROBE_VERSION_LINE_MAX;

        for (size_t i = 0; i < n; i++) {
                if (!isdigit((unsigned char) text[i]))
                        continue;
                /* Inside a word ("x86_64", "deb12u18") is not a version; a
                 * lone 'v' before it ("v1.0.6") is just a prefix. */
                if (i > 0 && isalnum((unsigned char) text[i - 1]) &&
                    !(text[i - 1] == 'v' && (i == 1 || !isalnum((unsigned char) text[i - 2]))))
                        continue;

                size_t j = i;
                while (j < n && isdigit((unsigned char) text[j]))
                        j++;
                if (j + 1 >= n || text[j] != '.' || !isdigit((unsigned char) text[j + 1])) {
                        i = j;
                        continue;
                }
                /* The token goes on over digits, dots, letters and the
                 * separators of things like "9.2p1" or "1.0~rc1". */
                size_t end = j;
                while (end < n && (isalnum((unsigned char) text[end]) || strchr(".+~-", text[end])))
                        end++;

                struct probe_version v = {};
                copy_span(v.text, sizeof(v.text), text + i, end - i);
                unsigned parts[3] = {};
                const char *p = text + i;
                for (int k = 0; k < 3 && p < text + end && isdigit((unsigned char) *p); k++) {
                        unsigned long x = 0;
                        while (p < text + end && isdigit((unsigned char) *p)) {
                                if (x < 1000000)
                                        x = x * 10 + (unsigned) (*p - '0');
                                p++;
                        }
                        parts[k] = (unsigned) x;
                        if (p < text + end && *p == '.')
                                p++;
                        else
                                break;
                }
                v.major = parts[0], v.minor = parts[1], v.micro = parts[2];

                /* "(Debian 1:7.2+dfsg-7+deb12u18)", with or without a space. */
                size_t k = end;
                while (k < n && text[k] == ' ')
                        k++;
                if (k < n && text[k] == '(') {
                        const char *close = memchr(text + k, ')', n - k);
                        if (close)
                                copy_span(v.detail, sizeof(v.detail), text + k + 1,
                                          (size_t) (close - (text + k + 1)));
                }
                *ret = v;
                return 0;
        }
        return -EINVAL;
}

const char *probe_version_format(const struct probe_version *v, char *buf, size_t size) {
        if (v->detail[0])
                snprintf(buf, size, "%s (%s)", v->text, v->detail);
        else
                snprintf(buf, size, "%s", v->text);
        return buf;
}

bool probe_accel_help_has(const char *text, const char *name) {
        const char *line;
        size_t len;
        for (const char *p = text; (p = line_next(p, &line, &len));) {
                span_strip(&line, &len);
                if (span_eq(line, len, name))
                        return true;
        }
        return false;
}

bool probe_machine_name_is_valid(const char *s) {
        size_t n = s ? strlen(s) : 0;
        if (n == 0 || n > PROBE_MACHINE_NAME_MAX || !isalnum((unsigned char) s[0]))
                return false;
        return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

int probe_machine_alias(const char *text, const char *alias, char *buf, size_t size) {
        static const char marker[] = "(alias of ";
        const char *line;
        size_t len;
        size_t alen = strlen(alias);
        for (const char *p = text; (p = line_next(p, &line, &len));) {
                /* "pc                   Standard PC (i440FX + PIIX, 1996) (alias of pc-i440fx-7.2)" */
                if (len <= alen || !strneq(line, alias, alen) || !isspace((unsigned char) line[alen]))
                        continue;
                const char *m = NULL;
                for (size_t i = alen; i + sizeof(marker) - 1 <= len; i++)
                        if (strneq(line + i, marker, sizeof(marker) - 1))
                                m = line + i + sizeof(marker) - 1;
                if (!m)
                        return -ENOENT;
                size_t n = (size_t) (line + len - m);
                const char *close = memchr(m, ')', n);
                if (!close || (size_t) (close - m) > PROBE_MACHINE_NAME_MAX || (size_t) (close - m) >= size)
                        return -EINVAL;
                copy_span(buf, size, m, (size_t) (close - m));
                return probe_machine_name_is_valid(buf) ? 0 : -EINVAL;
        }
        return -ENOENT;
}

int probe_parse_bool_param(const char *text, bool *ret) {
        if (!text)
                return -EINVAL;
        const char *s = text;
        size_t n = strlen(text);
        span_strip(&s, &n);
        if (span_eq(s, n, "Y") || span_eq(s, n, "y") || span_eq(s, n, "1")) {
                *ret = true;
                return 0;
        }
        if (span_eq(s, n, "N") || span_eq(s, n, "n") || span_eq(s, n, "0")) {
                *ret = false;
                return 0;
        }
        return -EINVAL;
}

int probe_parse_cpuinfo(const char *text, struct probe_cpu_info *ret) {
        struct probe_cpu_info info = {};
        bool seen_vendor = false, seen_flags = false, in_block = false;
        const char *line;
        size_t len;

        for (const char *p = text; (p = line_next(p, &line, &len));) {
                const char *colon = memchr(line, ':', len);
                if (!colon) {
                        /* A blank line ends the first processor's block. */
                        if (in_block)
                                break;
                        continue;
                }
                in_block = true;
                const char *key = line, *val = colon + 1;
                size_t klen = (size_t) (colon - line), vlen = len - klen - 1;
                span_strip(&key, &klen);
                span_strip(&val, &vlen);

                if (span_eq(key, klen, "vendor_id")) {
                        copy_span(info.vendor, sizeof(info.vendor), val, vlen);
                        seen_vendor = true;
                } else if (span_eq(key, klen, "model name"))
                        copy_span(info.model, sizeof(info.model), val, vlen);
                else if (span_eq(key, klen, "flags")) {
                        seen_flags = true;
                        const char *f = val, *end = val + vlen;
                        while (f < end) {
                                while (f < end && *f == ' ')
                                        f++;
                                const char *e = f;
                                while (e < end && *e != ' ')
                                        e++;
                                size_t fl = (size_t) (e - f);
                                if (span_eq(f, fl, "vmx"))
                                        info.vmx = true;
                                else if (span_eq(f, fl, "svm"))
                                        info.svm = true;
                                else if (span_eq(f, fl, "hypervisor"))
                                        info.hypervisor = true;
                                f = e;
                        }
                }
        }
        if (!seen_vendor && !seen_flags)
                return -EINVAL;
        *ret = info;
        return 0;
}

const char *probe_kvm_vendor_module(const char *vendor) {
        if (!vendor)
                return NULL;
        if (streq(vendor, "GenuineIntel"))
                return "kvm_intel";
        /* Hygon builds AMD's design and uses kvm_amd too. */
        if (streq(vendor, "AuthenticAMD") || streq(vendor, "HygonGenuine"))
                return "kvm_amd";
        return NULL;
}

int probe_modprobe_find_option(const char *text, const char *module, const char *param,
                              char *value_buf, size_t value_size) {
        int found = 0;
        size_t plen = strlen(param);
        const char *line;
        size_t len;

        for (const char *p = text; (p = line_next(p, &line, &len));) {
                span_strip(&line, &len);
                if (len == 0 || line[0] == '#')
                        continue;

                /* Tokens: "options" MODULE PARAM=VALUE ... */
                const char *end = line + len, *t = line;
                int index = 0;
                bool ours = false;
                while (t < end) {
                        while (t < end && isspace((unsigned char) *t))
                                t++;
                        const char *e = t;
                        while (e < end && !isspace((unsigned char) *e))
                                e++;
                        size_t tl = (size_t) (e - t);
                        if (tl == 0)
                                break;
                        if (index == 0 && !span_eq(t, tl, "options"))
                                break;
                        if (index == 1) {
                                ours = module_name_eq(t, tl, module);
                                if (!ours)
                                        break;
                        }
                        if (index >= 2 && tl > plen && strneq(t, param, plen) && t[plen] == '=') {
                                const char *v = t + plen + 1;
                                size_t vl = tl - plen - 1;
                                if (vl >= 2 && v[0] == '"' && v[vl - 1] == '"')
                                        v++, vl -= 2;
                                copy_span(value_buf, value_size, v, vl);
                                found = 1;
                        }
                        index++;
                        t = e;
                }
        }
        return found;
}

/* The module name of a path like "kernel/net/bridge/bridge.ko.xz". */
static bool module_path_is(const char *s, size_t n, const char *module) {
        const char *slash = NULL;
        for (size_t i = 0; i < n; i++)
                if (s[i] == '/')
                        slash = s + i;
        if (slash) {
                n -= (size_t) (slash + 1 - s);
                s = slash + 1;
        }
        /* Cut at ".ko", whatever compression suffix follows it. */
        for (size_t i = 0; i + 3 <= n; i++)
                if (strneq(s + i, ".ko", 3) && (i + 3 == n || s[i + 3] == '.')) {
                        n = i;
                        break;
                }
        return module_name_eq(s, n, module);
}

bool probe_modules_list_has(const char *text, const char *module) {
        const char *line;
        size_t len;
        if (!text)
                return false;
        for (const char *p = text; (p = line_next(p, &line, &len));) {
                const char *colon = memchr(line, ':', len);
                if (colon)
                        len = (size_t) (colon - line);
                span_strip(&line, &len);
                if (len > 0 && module_path_is(line, len, module))
                        return true;
        }
        return false;
}

bool probe_proc_modules_has(const char *text, const char *module) {
        const char *line;
        size_t len;
        if (!text)
                return false;
        for (const char *p = text; (p = line_next(p, &line, &len));) {
                size_t n = 0;
                while (n < len && !isspace((unsigned char) line[n]))
                        n++;
                if (n > 0 && module_name_eq(line, n, module))
                        return true;
        }
        return false;
}

int probe_kconfig_lookup(const char *text, const char *symbol) {
        const char *line;
        size_t len, slen = strlen(symbol);
        if (!text)
                return 0;
        for (const char *p = text; (p = line_next(p, &line, &len));) {
                span_strip(&line, &len);
                if (len > 7 + slen && strneq(line, "CONFIG_", 7) && strneq(line + 7, symbol, slen) &&
                    line[7 + slen] == '=') {
                        char v = len > 8 + slen ? line[8 + slen] : '\0';
                        if (v == 'm')
                                return 'm';
                        if (v == 'n' || v == '\0')
                                return 'n';
                        /* 'y', or a string or number: the option is on. */
                        return 'y';
                }
                /* "# CONFIG_FOO is not set" */
                if (len == 9 + slen + 11 && strneq(line, "# CONFIG_", 9) && strneq(line + 9, symbol, slen) &&
                    strneq(line + 9 + slen, " is not set", 11))
                        return 'n';
        }
        return 0;
}

const char *probe_kmod_state_to_string(enum probe_kmod_state s) {
        switch (s) {
        case PROBE_KMOD_ABSENT: return "not in kernel";
        case PROBE_KMOD_LOADABLE: return "module, not loaded";
        case PROBE_KMOD_PRESENT: return "present";
        case PROBE_KMOD_BUILTIN: return "built in";
        case PROBE_KMOD_LOADED: return "loaded";
        case PROBE_KMOD_UNKNOWN: break;
        }
        return "unknown";
}

enum probe_kmod_state probe_kmod_resolve(const struct probe_kernel_sources *src, const char *module,
                                       const char *symbol, bool in_sysfs,
                                       char *how, size_t how_size) {
        const char *cfg = src->config_name ? src->config_name : "kernel config";
        const char *rel = src->release ? src->release : "this kernel";
        int k = symbol && src->config ? probe_kconfig_lookup(src->config, symbol) : 0;

        if (probe_proc_modules_has(src->proc_modules, module)) {
                snprintf(how, how_size, "%s is listed in /proc/modules", module);
                return PROBE_KMOD_LOADED;
        }
        if (probe_modules_list_has(src->modules_builtin, module)) {
                snprintf(how, how_size, "%s is in modules.builtin of %s", module, rel);
                return PROBE_KMOD_BUILTIN;
        }
        if (k == 'y') {
                snprintf(how, how_size, "CONFIG_%s=y in %s", symbol, cfg);
                return PROBE_KMOD_BUILTIN;
        }
        if (in_sysfs) {
                /* A module in /sys/module but not in /proc/modules is built
                 * in, and so is everything in a kernel without module
                 * support; otherwise we cannot tell loaded from built in. */
                bool no_modules = src->config && probe_kconfig_lookup(src->config, "MODULES") == 'n';
                snprintf(how, how_size, "/sys/module/%s exists%s", module,
                         no_modules ? " and the kernel has no module support" : "");
                return src->proc_modules || no_modules ? PROBE_KMOD_BUILTIN : PROBE_KMOD_PRESENT;
        }
        if (k == 'm') {
                if (!src->modules_dep) {
                        snprintf(how, how_size, "CONFIG_%s=m in %s", symbol, cfg);
                        return PROBE_KMOD_LOADABLE;
                }
                if (probe_modules_list_has(src->modules_dep, module)) {
                        snprintf(how, how_size, "%s.ko is in modules.dep of %s (modprobe %s)", module, rel, module);
                        return PROBE_KMOD_LOADABLE;
                }
                snprintf(how, how_size, "CONFIG_%s=m but %s.ko is not installed for %s", symbol, module, rel);
                return PROBE_KMOD_ABSENT;
        }
        if (k == 'n') {
                snprintf(how, how_size, "CONFIG_%s is not set in %s", symbol, cfg);
                return PROBE_KMOD_ABSENT;
        }
        if (probe_modules_list_has(src->modules_dep, module)) {
                snprintf(how, how_size, "%s.ko is in modules.dep of %s (modprobe %s)", module, rel, module);
                return PROBE_KMOD_LOADABLE;
        }
        if (src->modules_builtin && src->modules_dep) {
                snprintf(how, how_size, "%s is in neither modules.builtin nor modules.dep of %s", module, rel);
                return PROBE_KMOD_ABSENT;
        }
        if (src->config && symbol) {
                snprintf(how, how_size, "CONFIG_%s does not appear in %s", symbol, cfg);
                return PROBE_KMOD_ABSENT;
        }
        snprintf(how, how_size, "no /proc/modules, modules.builtin, modules.dep or kernel config for %s", rel);
        return PROBE_KMOD_UNKNOWN;
}

const char *probe_format_rate(double per_second, char *buf, size_t size) {
        if (!(per_second >= 0))
                snprintf(buf, size, "?");
        else if (per_second >= 1e9)
                snprintf(buf, size, "%.1f G", per_second / 1e9);
        else if (per_second >= 1e6)
                snprintf(buf, size, "%.1f M", per_second / 1e6);
        else if (per_second >= 1e3)
                snprintf(buf, size, "%.0f k", per_second / 1e3);
        else
                snprintf(buf, size, "%.0f", per_second);
        return buf;
}
