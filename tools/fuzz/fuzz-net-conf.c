/* tools/fuzz/fuzz-net-conf.c: libFuzzer target for the network definition
 * parser (src/net/net-def.c), which reads STATE/networks/NAME.conf, a file
 * users edit by hand. Besides memory safety it checks the parser's
 * promises: on failure no definition and a message; on success the
 * definition is valid, and formatting it gives text that parses back to the
 * same text (a fixed point). The small parsers it builds on (prefixes,
 * ranges, tunnels) get the raw input too. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/net-def.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > NET_CONF_MAX_BYTES + 16)
                return 0;
        char *text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = '\0';

        struct net_prefix p;
        uint32_t a, b;
        struct net_tunnel t;
        struct vh_error e = {};
        if (size < 64) {
                (void) net_prefix_parse(text, false, &p);
                (void) net_prefix_parse(text, true, &p);
                (void) net_range_parse(text, &a, &b);
                if (net_tunnel_parse(text, &t, &e) == 0) {
                        char *s = net_tunnel_format(&t);
                        struct net_tunnel t2;
                        if (!s || net_tunnel_parse(s, &t2, &e) < 0 || memcmp(&t, &t2, sizeof(t)) != 0)
                                abort();
                        free(s);
                }
        }

        struct net_def *def = NULL;
        e = (struct vh_error) {};
        int r = net_def_parse(text, "fuzz.conf", &def, &e);
        if (r < 0) {
                if (def || e.code != r || e.msg[0] == '\0')
                        abort();
                free(text);
                return 0;
        }
        if (net_def_validate(def, &e) < 0)
                abort();
        char *once = net_def_format(def);
        struct net_def *again = NULL;
        if (!once || net_def_parse(once, "fuzz.conf", &again, &e) < 0)
                abort();
        char *twice = net_def_format(again);
        if (!twice || strcmp(once, twice) != 0)
                abort();
        /* Completing may fail (a subnet too small for DHCP) but must not crash. */
        (void) net_def_complete(def, &e);
        char name[NET_IFNAME_MAX + 1];
        (void) net_def_bridge_name(def, name);
        for (unsigned i = 0; i < def->n_tunnels; i++)
                (void) net_tunnel_ifname(def, &def->tunnels[i], name);
        free(once);
        free(twice);
        net_def_free(again);
        net_def_free(def);
        free(text);
        return 0;
}
