/* tools/fuzz/fuzz-net-lease.c: libFuzzer target for the dnsmasq lease file
 * parser (src/net/net-lease.c); the file holds what guests sent (hostnames,
 * client ids). Besides memory safety it checks the parser's promises: on
 * failure no leases and a message; on success at most NET_LEASES_MAX
 * leases, each with a canonical lower-case MAC, a dotted-quad address and a
 * plain hostname, and every lease is found again by its MAC. */
#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/net-lease.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > NET_LEASES_MAX_BYTES + 16)
                return 0;
        struct net_lease *l = (struct net_lease *) data; /* must be overwritten or left alone */
        size_t n = 0, skipped = 0;
        struct vh_error e = {};
        int r = net_leases_parse((const char *) data, size, &l, &n, &skipped, &e);
        if (r < 0) {
                if (l != (struct net_lease *) data || e.code != r || e.msg[0] == '\0')
                        abort();
                return 0;
        }
        if (n > NET_LEASES_MAX || (n == 0) != (l == NULL))
                abort();
        for (size_t i = 0; i < n; i++) {
                uint32_t a;
                if (strlen(l[i].mac) != 17 || net_ipv4_parse(l[i].ip, &a) < 0 || l[i].expiry < 0)
                        abort();
                for (const char *c = l[i].mac; *c; c++)
                        if (isupper((unsigned char) *c))
                                abort();
                for (const char *c = l[i].hostname; *c; c++)
                        if (!isalnum((unsigned char) *c) && !strchr("-_.", *c))
                                abort();
                if (!net_leases_find(l, n, l[i].mac, 0))
                        abort();
        }
        free(l);
        return 0;
}
