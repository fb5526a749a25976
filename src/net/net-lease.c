/* net/net-lease.c: dnsmasq's lease file, parsed within limits. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "net/net-internal.h"
#include "net/net-lease.h"

/* The next white-space separated field of [*p, end), at most 'max' bytes;
 * false if there is none or it is longer. */
static bool next_field(const char **p, const char *end, char *buf, size_t max) {
        const char *s = *p;
        while (s < end && (*s == ' ' || *s == '\t'))
                s++;
        const char *e = s;
        while (e < end && *e != ' ' && *e != '\t')
                e++;
        if (e == s || (size_t) (e - s) >= max)
                return false;
        memcpy(buf, s, (size_t) (e - s));
        buf[e - s] = '\0';
        *p = e;
        return true;
}

static bool parse_mac(const char *s, char ret[static 18]) {
        if (strlen(s) != 17)
                return false;
        for (int i = 0; i < 17; i++) {
                if (i % 3 == 2 ? s[i] != ':' : !isxdigit((unsigned char) s[i]))
                        return false;
                ret[i] = (char) tolower((unsigned char) s[i]);
        }
        ret[17] = '\0';
        return true;
}

/* dnsmasq writes hostnames it accepted as DNS labels; anything else (a
 * terminal escape from a guest, say) is not shown. */
static bool hostname_is_plain(const char *s) {
        for (; *s; s++)
                if (!isalnum((unsigned char) *s) && *s != '-' && *s != '_' && *s != '.')
                        return false;
        return true;
}

/* One line (without its newline) into *ret; false if it is not an IPv4
 * lease. */
static bool parse_line(const char *s, const char *end, struct net_lease *ret) {
        char f[4][NET_LEASES_MAX_LINE];
        const char *p = s;
        for (int i = 0; i < 4; i++)
                if (!next_field(&p, end, f[i], sizeof(f[i])))
                        return false;
        /* The fifth field, the client id, is not needed; the line may end
         * after the hostname in old files. */
        uint64_t expiry;
        uint32_t addr;
        struct net_lease l = {};
        if (parse_u64(f[0], &expiry) < 0 || expiry > INT64_MAX || !parse_mac(f[1], l.mac) ||
            net_ipv4_parse(f[2], &addr) < 0)
                return false;
        l.expiry = (int64_t) expiry;
        net_ipv4_format(addr, l.ip);
        if (!streq(f[3], "*") && strlen(f[3]) <= NET_LEASE_HOSTNAME_MAX && hostname_is_plain(f[3]))
                snprintf(l.hostname, sizeof(l.hostname), "%s", f[3]);
        *ret = l;
        return true;
}

int net_leases_parse(const char *text, size_t len, struct net_lease **ret, size_t *ret_n, size_t *ret_skipped,
                     struct vh_error *err) {
        if (len > NET_LEASES_MAX_BYTES)
                return vh_error_set(err, -E2BIG, "lease file of %zu bytes: more than the %d bytes vmhost reads", len,
                                    NET_LEASES_MAX_BYTES);
        _cleanup_free_ struct net_lease *leases = NULL;
        size_t n = 0, cap = 0, skipped = 0;
        const char *end = text + len;
        for (const char *s = text; s < end;) {
                const char *nl = memchr(s, '\n', (size_t) (end - s));
                const char *e = nl ? nl : end;
                if ((size_t) (e - s) > NET_LEASES_MAX_LINE)
                        return vh_error_set(err, -E2BIG, "lease file: a line of more than %d bytes",
                                            NET_LEASES_MAX_LINE);
                struct net_lease l;
                /* A NUL inside a line makes it a damaged line, not a shorter one. */
                if (e > s && !memchr(s, '\0', (size_t) (e - s)) && parse_line(s, e, &l)) {
                        if (n >= NET_LEASES_MAX)
                                return vh_error_set(err, -E2BIG, "lease file: more than %d leases", NET_LEASES_MAX);
                        if (n == cap) {
                                size_t c = cap ? cap * 2 : 16;
                                struct net_lease *m = reallocarray(leases, c, sizeof(*m));
                                if (!m)
                                        return vh_error_set(err, -ENOMEM, "Out of memory");
                                leases = m;
                                cap = c;
                        }
                        leases[n++] = l;
                } else if (e > s)
                        skipped++;
                s = nl ? nl + 1 : end;
        }
        *ret = TAKE_PTR(leases);
        *ret_n = n;
        if (ret_skipped)
                *ret_skipped = skipped;
        return 0;
}

const struct net_lease *net_leases_find(const struct net_lease *leases, size_t n, const char *mac, int64_t now) {
        const struct net_lease *best = NULL;
        for (size_t i = 0; i < n; i++) {
                const struct net_lease *l = &leases[i];
                if (strcasecmp(l->mac, mac) != 0 || (l->expiry != 0 && l->expiry <= now))
                        continue;
                /* 0 never expires, so it outlasts any time. */
                if (!best || (best->expiry != 0 && (l->expiry == 0 || l->expiry > best->expiry)))
                        best = l;
        }
        return best;
}

int net_leases_read(const struct vh_context *ctx, const char *net_name, struct net_lease **ret, size_t *ret_n,
                    struct vh_error *err) {
        _cleanup_free_ char *path = NULL;
        int r = net_run_path(ctx, net_name, "dnsmasq.leases", &path);
        if (r < 0)
                return vh_error_set(err, r, "Network %s: cannot name its lease file", net_name);
        _cleanup_free_ char *text = NULL;
        size_t len = 0;
        r = read_full_file(path, NET_LEASES_MAX_BYTES, &text, &len);
        if (r == -ENOENT) {
                *ret = NULL;
                *ret_n = 0;
                return 0;
        }
        if (r < 0)
                return vh_error_set(err, r, "Cannot read the leases of network %s (%s): %s", net_name, path,
                                    strerror(-r));
        struct vh_error e = {};
        r = net_leases_parse(text, len, ret, ret_n, NULL, &e);
        if (r < 0)
                return vh_error_set(err, r, "%s: %s", path, e.msg);
        return 0;
}
