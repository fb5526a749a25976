/* tests/unit/test-docs.c: the definition files' documentation and their
 * parsers agree. The key column of the "| key | ..." table in
 * docs/vm-definition.md (docs/networks.md, docs/hosts.md) must list exactly the keys of
 * the schema that vm_def_set() (net_def_set()) reads, every one of those
 * keys must reach a handler, and every key that vm_def_format()
 * (net_def_format()) writes must be among them. The docs are read from the source tree, whose path
 * meson passes as VMHOST_SOURCE_ROOT. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/defs.h"
#include "base/fileio.h"
#include "host/host-def.h"
#include "net/net-def.h"
#include "test.h"
#include "vm/vm-def.h"

#ifndef VMHOST_SOURCE_ROOT
#error "tests/unit/meson.build passes the source tree as VMHOST_SOURCE_ROOT"
#endif

#define DOC_KEYS_MAX 64
#define DOC_KEY_LEN 48

struct key_list {
        char keys[DOC_KEYS_MAX][DOC_KEY_LEN];
        size_t n;
};

static bool key_list_has_n(const struct key_list *l, const char *key, size_t len) {
        for (size_t i = 0; i < l->n; i++)
                if (strlen(l->keys[i]) == len && memcmp(l->keys[i], key, len) == 0)
                        return true;
        return false;
}

static bool key_list_has(const struct key_list *l, const char *key) {
        return key_list_has_n(l, key, strlen(key));
}

static bool key_list_add(struct key_list *l, const char *key, size_t len) {
        if (l->n >= DOC_KEYS_MAX || len == 0 || len >= DOC_KEY_LEN)
                return false;
        memcpy(l->keys[l->n], key, len);
        l->keys[l->n][len] = '\0';
        l->n++;
        return true;
}

/* The backquoted names in the first cell of each row of the table whose
 * header starts "| key |" ("| `kernel`, `initrd`, `append` | ..." gives
 * three). Returns the number of keys, or -errno. */
static int doc_keys(const char *text, struct key_list *ret) {
        *ret = (struct key_list) {};
        bool in_table = false;
        for (const char *line = text; line && *line;) {
                const char *nl = strchr(line, '\n');
                size_t len = nl ? (size_t) (nl - line) : strlen(line);
                if (!in_table) {
                        if (len >= 7 && strncmp(line, "| key |", 7) == 0)
                                in_table = true;
                } else if (len == 0 || line[0] != '|')
                        break;
                else if (strncmp(line, "| ---", 5) != 0) {
                        const char *end = memchr(line + 1, '|', len - 1);
                        if (!end)
                                return -EINVAL;
                        for (const char *p = line + 1; p < end;) {
                                const char *open = memchr(p, '`', (size_t) (end - p));
                                if (!open)
                                        break;
                                const char *close = memchr(open + 1, '`', (size_t) (end - open - 1));
                                if (!close)
                                        return -EINVAL;
                                if (!key_list_add(ret, open + 1, (size_t) (close - open - 1)))
                                        return -E2BIG;
                                p = close + 1;
                        }
                }
                line = nl ? nl + 1 : NULL;
        }
        return in_table ? (int) ret->n : -ENOENT;
}

/* The keys of "key = value" lines in a formatted definition. */
static void written_keys(const char *text, struct key_list *ret) {
        *ret = (struct key_list) {};
        for (const char *line = text; line && *line;) {
                const char *nl = strchr(line, '\n');
                const char *eq = strstr(line, " = ");
                if (line[0] != '#' && eq && (!nl || eq < nl) && !key_list_has_n(ret, line, (size_t) (eq - line)))
                        (void) key_list_add(ret, line, (size_t) (eq - line));
                line = nl ? nl + 1 : NULL;
        }
}

static char *read_doc(const char *rel) {
        char path[512];
        snprintf(path, sizeof(path), "%s/%s", VMHOST_SOURCE_ROOT, rel);
        char *text = NULL;
        int r = read_full_file(path, 1024 * 1024, &text, NULL);
        if (r < 0)
                test_fail(__FILE__, __LINE__, "cannot read %s: %s", path, strerror(-r));
        return text;
}

/* Both directions, each difference named. */
static void compare(const char *doc, const struct key_list *documented, const struct def_schema *schema) {
        struct key_list known = {};
        for (size_t i = 0; i < schema->n_keys; i++) {
                const char *key = schema->keys[i].name;
                (void) key_list_add(&known, key, strlen(key));
                if (!key_list_has(documented, key))
                        test_fail(__FILE__, __LINE__, "the parser accepts key '%s' but %s does not document it", key, doc);
        }
        for (size_t i = 0; i < documented->n; i++)
                if (!key_list_has(&known, documented->keys[i]))
                        test_fail(__FILE__, __LINE__, "%s documents key '%s' but the parser does not accept it", doc,
                                  documented->keys[i]);
}

/* The checks for one kind of definition: 'obj' is a new one, which the
 * sample key = value pairs fill before it is formatted. */
static void check_definition_keys(const char *doc_path, const struct def_schema *schema, void *obj,
                                  const char *const (*sample)[2], size_t n_sample) {
        _cleanup_free_ char *doc = read_doc(doc_path);
        if (!doc)
                return;
        struct key_list documented;
        int r = doc_keys(doc, &documented);
        CHECK(r > 0);
        compare(doc_path, &documented, schema);

        /* Each listed key reaches its handler (a value may be refused, the
         * key not), and every key written is listed. */
        for (size_t i = 0; i < schema->n_keys; i++) {
                struct vh_error e = {};
                if (def_set(schema, obj, schema->keys[i].name, "not a valid value", &e) < 0 &&
                    strstr(e.msg, "unknown key"))
                        test_fail(__FILE__, __LINE__, "key '%s' is listed but not handled: %s", schema->keys[i].name,
                                  e.msg);
        }
        struct vh_error e = {};
        CHECK(def_set(schema, obj, "net", "user", &e) < 0 && strstr(e.msg, "unknown key 'net'"));
        for (size_t i = 0; i < n_sample; i++) {
                e = (struct vh_error) {};
                if (def_set(schema, obj, sample[i][0], sample[i][1], &e) < 0)
                        test_fail(__FILE__, __LINE__, "%s = %s: %s", sample[i][0], sample[i][1], e.msg);
        }
        _cleanup_free_ char *text = def_format(schema, obj);
        CHECK(text != NULL);
        struct key_list written;
        written_keys(text, &written);
        CHECK(written.n >= MIN(n_sample, (size_t) 10));
        for (size_t i = 0; i < written.n; i++)
                if (!key_list_has(&documented, written.keys[i]))
                        test_fail(__FILE__, __LINE__, "%s writes '%s', undocumented", doc_path, written.keys[i]);
}

TEST(docs_doc_keys_parser) {
        struct key_list l;
        CHECK_EQ_INT(doc_keys("intro\n\n| key | value | default |\n| --- | --- | --- |\n"
                              "| `name` | `a`, `b` | required |\n| `kernel`, `initrd` | x | |\n\nafter | `no` |\n",
                              &l),
                     3);
        CHECK_STREQ(l.keys[0], "name");
        CHECK_STREQ(l.keys[1], "kernel");
        CHECK_STREQ(l.keys[2], "initrd");
        /* Only the key table counts, not a table of types before it. */
        CHECK_EQ_INT(doc_keys("| type | x |\n| --- | --- |\n| `user` | y |\n\n| key | v |\n| --- | --- |\n| `mtu` | 1 |\n",
                              &l),
                     1);
        CHECK_STREQ(l.keys[0], "mtu");
        CHECK_EQ_INT(doc_keys("no table here\n", &l), -ENOENT);
        CHECK_EQ_INT(doc_keys("| key | v |\n| `open | x |\n", &l), -EINVAL);
}

TEST(docs_vm_definition_keys) {
        static const char *const sample[][2] = {
                { "cpus", "2" }, { "memory", "512M" }, { "accel", "tcg" }, { "cpu", "host" }, { "boot", "disk" },
                { "disk", "/d.qcow2" }, { "disk-format", "qcow2" }, { "base", "/b.qcow2" }, { "cdrom", "/c.iso" },
                { "kernel", "/k" }, { "initrd", "/i" }, { "append", "console=ttyS0" }, { "id", "7" },
                { "nic", "user,mac=52:54:00:12:34:56" }, { "vnc", "127.0.0.1:5" }, { "forward", "tcp:auto:22" },
                { "localtime", "yes" },
        };
        struct vm_def *def = vm_def_new("t");
        CHECK(def != NULL);
        if (def)
                check_definition_keys("docs/vm-definition.md", vm_def_schema(), def, sample, ELEMENTSOF(sample));
        vm_def_free(def);
}

TEST(docs_network_keys) {
        static const char *const sample[][2] = {
                { "type", "ovs" }, { "subnet", "10.1.0.0/24" }, { "gateway", "10.1.0.1" }, { "dhcp", "yes" },
                { "nat", "yes" }, { "nat-interface", "eth0" }, { "mtu", "1400" }, { "bridge", "vb-x" },
                { "ovs-db", "unix:/run/x.sock" }, { "datapath", "netdev" }, { "domain", "lan" },
                { "tunnel", "gre:172.16.0.2" }, { "uplink-port", "eth1" }, { "uplink-host-ip", "192.168.1.10/24" },
                { "uplink-gateway", "192.168.1.1" },
        };
        struct net_def *def = net_def_new("t");
        CHECK(def != NULL);
        if (def)
                check_definition_keys("docs/networks.md", net_def_schema(), def, sample, ELEMENTSOF(sample));
        net_def_free(def);
}

TEST(docs_host_keys) {
        static const char *const sample[][2] = {
                { "ssh", "root@10.0.0.2" }, { "port", "2222" }, { "identity", "/root/.ssh/id_b" },
                { "vmhost", "/usr/local/bin/vmhost" }, { "host-key", "SHA256:abc" },
        };
        struct host_def *def = host_def_new("t");
        CHECK(def != NULL);
        if (def)
                check_definition_keys("docs/hosts.md", host_def_schema(), def, sample, ELEMENTSOF(sample));
        host_def_free(def);
}
