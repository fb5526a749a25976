/* net/net-addr.c: IPv4 prefixes and derived interface names. */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "base/macro.h"
#include "base/strutil.h"
#include "net/net-addr.h"

int net_ipv4_parse(const char *s, uint32_t *ret) {
        uint32_t v = 0;
        const char *p = s;
        for (int i = 0; i < 4; i++) {
                if (!isdigit((unsigned char) *p))
                        return -EINVAL;
                unsigned octet = 0, digits = 0;
                while (isdigit((unsigned char) *p)) {
                        /* "010" is octal to inet_aton(); refuse the ambiguity. */
                        if (digits == 1 && octet == 0)
                                return -EINVAL;
                        octet = octet * 10 + (unsigned) (*p - '0');
                        if (++digits > 3 || octet > 255)
                                return -EINVAL;
                        p++;
                }
                v = (v << 8) | octet;
                if (i < 3) {
                        if (*p != '.')
                                return -EINVAL;
                        p++;
                }
        }
        if (*p != '\0')
                return -EINVAL;
        *ret = v;
        return 0;
}

const char *net_ipv4_format(uint32_t a, char buf[static NET_IPV4_STRLEN]) {
        snprintf(buf, NET_IPV4_STRLEN, "%u.%u.%u.%u", a >> 24, (a >> 16) & 0xff, (a >> 8) & 0xff, a & 0xff);
        return buf;
}

uint32_t net_prefix_mask(unsigned len) {
        return len == 0 ? 0 : len >= 32 ? 0xffffffffu : ~((1u << (32 - len)) - 1);
}

int net_prefix_parse(const char *s, bool host_bits_ok, struct net_prefix *ret) {
        const char *slash = strchr(s, '/');
        if (!slash || (size_t) (slash - s) >= NET_IPV4_STRLEN)
                return -EINVAL;
        char a[NET_IPV4_STRLEN];
        memcpy(a, s, (size_t) (slash - s));
        a[slash - s] = '\0';
        uint32_t addr;
        if (net_ipv4_parse(a, &addr) < 0)
                return -EINVAL;
        long len;
        if (parse_int_range(slash + 1, 0, 32, &len) < 0)
                return -EINVAL;
        if (!host_bits_ok && (addr & ~net_prefix_mask((unsigned) len)))
                return -EDOM; /* caller says "did you mean ..." */
        *ret = (struct net_prefix) { .addr = addr, .len = (unsigned) len };
        return 0;
}

const char *net_prefix_format(const struct net_prefix *p, char buf[static NET_PREFIX_STRLEN]) {
        char a[NET_IPV4_STRLEN];
        snprintf(buf, NET_PREFIX_STRLEN, "%s/%u", net_ipv4_format(p->addr, a), p->len);
        return buf;
}

uint32_t net_prefix_network(const struct net_prefix *p) {
        return p->addr & net_prefix_mask(p->len);
}

uint32_t net_prefix_broadcast(const struct net_prefix *p) {
        return net_prefix_network(p) | ~net_prefix_mask(p->len);
}

bool net_prefix_contains(const struct net_prefix *p, uint32_t addr) {
        return (addr & net_prefix_mask(p->len)) == net_prefix_network(p);
}

bool net_prefix_overlap(const struct net_prefix *a, const struct net_prefix *b) {
        /* Two prefixes overlap exactly when the shorter one contains the other. */
        unsigned len = MIN(a->len, b->len);
        uint32_t m = net_prefix_mask(len);
        return (a->addr & m) == (b->addr & m);
}

bool net_prefix_is_host(const struct net_prefix *p, uint32_t addr) {
        if (!net_prefix_contains(p, addr))
                return false;
        if (p->len >= 31)
                return true;
        return addr != net_prefix_network(p) && addr != net_prefix_broadcast(p);
}

bool net_ifname_is_valid(const char *name) {
        size_t n = strlen(name);
        if (n == 0 || n > NET_IFNAME_MAX || streq(name, ".") || streq(name, ".."))
                return false;
        /* Beyond what the kernel refuses ('/', ':', white space), quotes,
         * backslashes and config punctuation are refused too: names end up
         * in nft rule files and dnsmasq configs. */
        for (const char *p = name; *p; p++)
                if (*p == '/' || *p == ':' || isspace((unsigned char) *p) || !isprint((unsigned char) *p) ||
                    strchr("\"'\\;#{}", *p))
                        return false;
        return true;
}

uint32_t net_name_hash(const char *s) {
        uint32_t h = 2166136261u;
        for (; *s; s++) {
                h ^= (unsigned char) *s;
                h *= 16777619u;
        }
        return h;
}

int net_ifname_derive(const char *prefix, const char *name, const char *suffix, char ret[static NET_IFNAME_MAX + 1]) {
        size_t lp = strlen(prefix), ln = strlen(name), ls = strlen(suffix);
        if (lp + ls + 4 + 1 > NET_IFNAME_MAX || ln == 0)
                return -EINVAL;
        char *p = ret;
        memcpy(p, prefix, lp);
        p += lp;
        if (lp + ln + ls <= NET_IFNAME_MAX) {
                memcpy(p, name, ln);
                p += ln;
        } else {
                size_t keep = NET_IFNAME_MAX - lp - ls - 4;
                char hash[8];
                snprintf(hash, sizeof(hash), "%04x", (unsigned) (net_name_hash(name) & 0xffff));
                memcpy(p, name, keep);
                p += keep;
                memcpy(p, hash, 4);
                p += 4;
        }
        memcpy(p, suffix, ls + 1);
        return 0;
}
