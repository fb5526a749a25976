/* tests/unit/test-host.c: the host registry (names, the file format) and
 * the ssh transport's argv and quoting for the remote shell, the quoting
 * proven by a real POSIX shell. */
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/macro.h"
#include "base/process.h"
#include "base/strutil.h"
#include "base/strv.h"
#include "host/host-def.h"
#include "host/host.h"
#include "host/ssh.h"
#include "vm/vm-alloc.h"
#include "test.h"
#include "vmhost/context.h"

TEST(host_name_rules) {
        static const struct {
                const char *name;
                bool ok;
        } cases[] = {
                { "b", true }, { "node-2", true }, { "a_b", true }, { "local", false }, { "", false },
                { "-x", false }, { "x;touch /tmp/owned", false }, { "$(id)", false }, { "a b", false },
                { "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", false }, /* 33 */
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                if (host_name_is_valid(cases[i].name) != cases[i].ok)
                        test_fail(__FILE__, __LINE__, "name '%s'", cases[i].name);
}

TEST(host_ssh_target_rules) {
        static const struct {
                const char *s;
                bool ok;
        } cases[] = {
                { "10.0.0.2", true }, { "root@10.0.0.2", true }, { "op.er@host-b.example", true }, { "fe80::1", true },
                { "-oProxyCommand=x", false }, { "root@-oProxyCommand=x", false }, { "@host", false },
                { "a@b@c", false }, { "host b", false }, { "h;id", false }, { "h$(id)", false }, { "", false },
                { "-x@h", false }, { "h\n", false },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                if (host_ssh_target_is_valid(cases[i].s) != cases[i].ok)
                        test_fail(__FILE__, __LINE__, "target '%s'", cases[i].s);
}

TEST(host_def_roundtrip) {
        const char *text = "name = b\nssh = root@10.0.0.2\nport = 2222\nidentity = /root/.ssh/id_b\n"
                           "vmhost = /opt/vmhost/bin/vmhost\nhost-key = SHA256:abc+/def=\n";
        struct host_def *d = NULL;
        struct vh_error e = {};
        CHECK_EQ_INT(host_def_parse(text, "b.conf", &d, &e), 0);
        if (!d)
                return;
        CHECK_STREQ(d->ssh, "root@10.0.0.2");
        CHECK_EQ_INT(host_def_port(d), 2222);
        CHECK_STREQ(host_def_vmhost(d), "/opt/vmhost/bin/vmhost");
        _cleanup_free_ char *out = host_def_format(d);
        struct host_def *d2 = NULL;
        CHECK_EQ_INT(host_def_parse(out, "b2.conf", &d2, &e), 0);
        if (d2) {
                _cleanup_free_ char *out2 = host_def_format(d2);
                CHECK_STREQ(out, out2);
        }
        host_def_free(d2);
        host_def_free(d);
}

TEST(host_def_refuses) {
        static const struct {
                const char *text, *msg;
        } cases[] = {
                { "name = local\nssh = h\n", "not 'local'" },
                { "name = b\n", "missing 'ssh" },
                { "name = b\nssh = -oProxyCommand=touch\n", "[USER@]ADDRESS" },
                { "name = b\nssh = h\nport = 0\n", "port" },
                { "name = b\nssh = h\nport = 65536\n", "port" },
                { "name = b\nssh = h\nidentity = key\n", "absolute" },
                { "name = b\nssh = h\nhost-key = MD5:aa\n", "SHA256" },
                { "name = b\nssh = h\nfoo = 1\n", "foo" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct host_def *d = NULL;
                struct vh_error e = {};
                int r = host_def_parse(cases[i].text, "t.conf", &d, &e);
                CHECK(r < 0);
                if (!strstr(e.msg, cases[i].msg))
                        test_fail(__FILE__, __LINE__, "case %zu: '%s' lacks '%s'", i, e.msg, cases[i].msg);
                host_def_free(d);
        }
}

TEST(host_registry_files) {
        const struct vh_context *ctx = test_ctx();
        struct host_def *d = host_def_new("b");
        d->ssh = strdup("root@10.0.0.2");
        struct vh_error e = {};
        CHECK_EQ_INT(host_save(ctx, d, &e), 0);
        CHECK(host_exists(ctx, "b"));
        struct host_def *l = NULL;
        CHECK_EQ_INT(host_load(ctx, "b", &l, &e), 0);
        if (l)
                CHECK_STREQ(l->ssh, "root@10.0.0.2");
        host_def_free(l);
        char **names = NULL;
        CHECK_EQ_INT(host_list_names(ctx, &names, &e), 1);
        if (names)
                CHECK_STREQ(names[0], "b");
        host_names_free(names);
        CHECK_EQ_INT(host_load(ctx, "c", &l, &e), -ENOENT);
        CHECK(strstr(e.msg, "no host 'c'") != NULL);
        CHECK_EQ_INT(host_load(ctx, "local", &l, &e), -EINVAL);
        CHECK(strstr(e.msg, "'local' is this machine") != NULL);
        CHECK_EQ_INT(host_remove(ctx, "b", &e), 0);
        CHECK(!host_exists(ctx, "b"));
        CHECK_EQ_INT(host_remove(ctx, "b", &e), -ENOENT);
        host_def_free(d);
}

TEST(host_shell_quote_table) {
        static const struct {
                const char *in, *out;
        } cases[] = {
                { "", "''" },
                { "vm", "'vm'" },
                { "x;touch /tmp/owned", "'x;touch /tmp/owned'" },
                { "$(id)", "'$(id)'" },
                { "`id`", "'`id`'" },
                { "a b", "'a b'" },
                { "it's", "'it'\\''s'" },
                { "'", "''\\'''" },
                { "\"q\"", "'\"q\"'" },
                { "line1\nline2", "'line1\nline2'" },
                { "back\\slash", "'back\\slash'" },
                { "*?[a]~", "'*?[a]~'" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *q = host_shell_quote(cases[i].in);
                CHECK_STREQ(q, cases[i].out);
        }
        char *argv[] = { (char *) "vmhost", (char *) "vm", (char *) "list", NULL };
        _cleanup_free_ char *cmd = NULL;
        CHECK_EQ_INT(host_remote_command(argv, &cmd), 0);
        CHECK_STREQ(cmd, "'vmhost' 'vm' 'list'");
        char *empty[] = { NULL };
        CHECK_EQ_INT(host_remote_command(empty, &cmd), -EINVAL);
        _cleanup_free_ char *big = malloc(HOST_REMOTE_COMMAND_MAX / 2);
        memset(big, '\'', HOST_REMOTE_COMMAND_MAX / 2 - 1);
        big[HOST_REMOTE_COMMAND_MAX / 2 - 1] = '\0';
        char *bigv[] = { big, NULL };
        char *bigcmd = NULL;
        CHECK_EQ_INT(host_remote_command(bigv, &bigcmd), -E2BIG);
        free(bigcmd);
}

/* What ssh does with the command line, done by a real shell here: each
 * argument must come back as one word, unchanged, and run nothing. */
TEST(host_shell_quote_roundtrip_sh) {
        if (!test_need_program("sh", "dash"))
                return;
        const char *dir = test_tmpdir();
        _cleanup_free_ char *owned1 = strdup_printf("%s/owned1", dir), *owned2 = strdup_printf("%s/owned2", dir);
        _cleanup_free_ char *evil1 = strdup_printf("x;touch %s", owned1);
        _cleanup_free_ char *evil2 = strdup_printf("$(touch %s)", owned2);
        _cleanup_free_ char *evil3 = strdup_printf("'; touch %s; '", owned1);
        _cleanup_free_ char *evil4 = strdup_printf("`touch %s`", owned2);
        const char *args[] = { evil1, evil2, evil3, evil4, "$(id)", "a b", "it's", "", "\"dq\"", "two\nlines",
                               "tab\there", "*", "~", "$HOME", "back\\slash", "-n", "|&<>" };
        char *argv[ELEMENTSOF(args) + 3];
        argv[0] = (char *) "printf";
        argv[1] = (char *) "%s\\001";
        for (size_t i = 0; i < ELEMENTSOF(args); i++)
                argv[i + 2] = (char *) args[i];
        argv[ELEMENTSOF(args) + 2] = NULL;
        _cleanup_free_ char *cmd = NULL;
        CHECK_EQ_INT(host_remote_command(argv, &cmd), 0);
        char *sh[] = { (char *) "sh", (char *) "-c", cmd, NULL };
        _cleanup_free_ char *out = NULL;
        struct vh_error e = {};
        CHECK_EQ_INT(process_run(test_ctx(), sh, 10000, 64 * 1024, &out, &e), 0);
        if (!out)
                return;
        const char *p = out;
        for (size_t i = 0; i < ELEMENTSOF(args); i++) {
                const char *end = strchr(p, '\001');
                CHECK(end != NULL);
                if (!end)
                        break;
                if (strlen(args[i]) != (size_t) (end - p) || memcmp(p, args[i], end - p) != 0)
                        test_fail(__FILE__, __LINE__, "arg %zu: '%s' came back as '%.*s'", i, args[i],
                                                      (int) (end - p), p);
                p = end + 1;
        }
        CHECK_STREQ(p, "");
        CHECK(access(owned1, F_OK) < 0);
        CHECK(access(owned2, F_OK) < 0);
        /* The check has teeth: unquoted, the same words do run. */
        _cleanup_free_ char *raw = strdup_printf("echo %s", evil1);
        char *sh2[] = { (char *) "sh", (char *) "-c", raw, NULL };
        _cleanup_free_ char *out2 = NULL;
        CHECK_EQ_INT(process_run(test_ctx(), sh2, 10000, 4096, &out2, &e), 0);
        CHECK(access(owned1, F_OK) == 0);
}

TEST(host_ssh_argv_options) {
        struct host_def *d = host_def_new("b");
        d->ssh = strdup("root@10.0.0.2");
        d->port = 2222;
        d->identity = strdup("/k/id");
        d->vmhost = strdup("/opt/my vmhost");
        char *remote[] = { d->vmhost, (char *) "vm", (char *) "list", NULL };
        char **argv = NULL;
        struct vh_error e = {};
        CHECK_EQ_INT(host_ssh_argv(test_ctx(), d, 0, remote, &argv, &e), 0);
        if (!argv) {
                host_def_free(d);
                return;
        }
        _cleanup_free_ char *joined = strv_join(argv, "|");
        const char *want[] = { "ssh|", "|BatchMode=yes|", "|ConnectTimeout=5|", "|StrictHostKeyChecking=yes|",
                               "/hosts/b.known_hosts|", "|ControlMaster=auto|", "|ControlPersist=60|",
                               "|ServerAliveInterval=2|", "|ServerAliveCountMax=2|",
                               "/ssh/%C|", "|-p|2222|", "|-i|/k/id|", "|--|root@10.0.0.2|'/opt/my vmhost' 'vm' 'list'" };
        for (size_t i = 0; i < ELEMENTSOF(want); i++)
                if (!strstr(joined, want[i]))
                        test_fail(__FILE__, __LINE__, "'%s' lacks '%s'", joined, want[i]);
        CHECK(endswith(joined, "'/opt/my vmhost' 'vm' 'list'"));
        /* A remote terminal only when asked for. */
        CHECK(!strstr(joined, "|-t|"));
        host_names_free(argv);
        CHECK_EQ_INT(host_ssh_argv(test_ctx(), d, HOST_SSH_TTY, remote, &argv, &e), 0);
        _cleanup_free_ char *jt = argv ? strv_join(argv, "|") : NULL;
        CHECK(jt && strstr(jt, "|-t|") && strstr(jt, "|-t|") < strstr(jt, "|--|"));
        host_names_free(argv);
        CHECK_EQ_INT(host_ssh_argv(test_ctx(), d, HOST_SSH_ACCEPT_NEW, remote, &argv, &e), 0);
        _cleanup_free_ char *j2 = argv ? strv_join(argv, "|") : NULL;
        CHECK(j2 && strstr(j2, "StrictHostKeyChecking=accept-new"));
        host_names_free(argv);
        free(d->ssh);
        d->ssh = strdup("-oProxyCommand=touch /tmp/x");
        CHECK_EQ_INT(host_ssh_argv(test_ctx(), d, 0, remote, &argv, &e), -EINVAL);
        host_def_free(d);
}

TEST(host_ssh_classify_messages) {
        struct host_def *d = host_def_new("b");
        d->ssh = strdup("root@10.0.0.2");
        static const struct {
                const char *ssh_says;
                int code;
                const char *msg;
        } cases[] = {
                { "@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.\n",
                  -EKEYREJECTED, "different host key" },
                { "No ED25519 host key is known for 10.0.0.2 and you have requested strict checking.\n"
                  "Host key verification failed.\n", -EKEYREJECTED, "not the one recorded" },
                { "ssh: connect to host 10.0.0.2 port 22: Connection refused", -ECONNREFUSED, "nothing listens" },
                { "ssh: connect to host 10.0.0.2 port 22: Connection timed out", -ETIMEDOUT, "within 5 s" },
                { "ssh: connect to host 10.0.0.2 port 22: No route to host", -EHOSTUNREACH, "no route" },
                { "root@10.0.0.2: Permission denied (publickey).", -EACCES, "refused the login" },
                { "something odd", -ECOMM, "something odd" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct vh_error e = {};
                CHECK_EQ_INT(host_ssh_classify(d, cases[i].ssh_says, &e), cases[i].code);
                if (!strstr(e.msg, cases[i].msg) || !strstr(e.msg, "'b'"))
                        test_fail(__FILE__, __LINE__, "case %zu: '%s'", i, e.msg);
        }
        host_def_free(d);
}

TEST(host_version_compatible_rule) {
        static const struct {
                const char *a, *b;
                bool ok;
        } cases[] = {
                { "0.1.0", "0.1.0", true },  { "0.1.0", "0.1.7", true },   { "1.2.3", "1.2.0-rc1", true },
                { "0.1", "0.1.4", true },    { "0.1.0", "0.2.0", false },  { "1.1.0", "0.1.0", false },
                { "0.10.0", "0.1.0", false }, { "", "0.1.0", false },      { "vmhost", "0.1.0", false },
                { "0.1x", "0.1.0", false },  { "9.1.0", "0.1.0", false },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++)
                if (host_version_compatible(cases[i].a, cases[i].b) != cases[i].ok)
                        test_fail(__FILE__, __LINE__, "%s vs %s: want %s", cases[i].a, cases[i].b,
                                  cases[i].ok ? "compatible" : "incompatible");
}

TEST(host_self_round_trip) {
        _cleanup_free_ char *text = NULL;
        struct vh_error e = {};
        CHECK_EQ_INT(host_self_json(test_ctx(), HOST_PROBE_VMS, &text, &e), 0);
        if (!text)
                return;
        /* ssh mixes the remote stderr in before the document. */
        _cleanup_free_ char *mixed = strdup_printf("warning: something\n%s\n", text);
        struct host_status st = {};
        CHECK_EQ_INT(host_self_parse(mixed, &st, &e), 0);
        CHECK_STREQ(st.version, VMHOST_VERSION);
        char id[VM_HOST_ID_LEN + 1];
        CHECK_EQ_INT(vm_host_id_get(test_ctx(), id, &e), 0);
        CHECK_STREQ(st.host_id, id);
        CHECK(st.cpus >= 1 && st.memory_total > 0 && st.macs && !st.macs[0]);
        CHECK(st.vm_list && json_array_len(st.vm_list) == 0 && !st.has_doctor);
        host_status_done(&st);
        CHECK(!st.macs && !st.vm_list);
        static const char *const bad[] = { "", "vmhost 0.1.0\n", "{\"version\":1}", "[1]", "{\"version\":1," };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                e = (struct vh_error) {};
                CHECK_EQ_INT(host_self_parse(bad[i], &st, &e), -EPROTO);
                host_status_done(&st);
        }
}

/* A reply whose "macs" hold strings that are not MACs: those are left
 * out (named in bad_macs for the warning), the good ones kept in lower
 * case, so that one host's odd string cannot spoil a forwarded create. */
TEST(host_self_parse_drops_bad_macs) {
        static const char reply[] =
                "{\"version\":1,\"vmhost-version\":\"" VMHOST_VERSION "\",\"host-id\":\"x\","
                "\"macs\":[\"02:00:00:00:00:01\",\"zz\",\"02:AB:00:00:00:02\",\"03:00:00:00:00:03\","
                "\"02:00:00:00:00:0g\",7,\"02:00:00:00:00:04,02:00:00:00:00:05\",\"\\u001b[31m\"],"
                "\"warnings\":[]}";
        struct host_status st = {};
        struct vh_error e = {};
        CHECK_EQ_INT(host_self_parse(reply, &st, &e), 0);
        CHECK(st.macs && st.bad_macs);
        if (!st.macs || !st.bad_macs)
                return;
        CHECK_STREQ(st.macs[0], "02:00:00:00:00:01");
        CHECK(st.macs[1] && streq(st.macs[1], "02:ab:00:00:00:02"));
        CHECK(st.macs[1] && !st.macs[2]);
        size_t n_bad = 0;
        while (st.bad_macs[n_bad])
                n_bad++;
        CHECK_EQ_INT(n_bad, 6);
        CHECK_STREQ(st.bad_macs[0], "zz");
        /* Joined as this side does for --avoid-mac, the list is all MACs. */
        _cleanup_free_ char *joined = strv_join(st.macs, ",");
        CHECK(joined && streq(joined, "02:00:00:00:00:01,02:ab:00:00:00:02"));
        host_status_done(&st);
}

/* A reply as large as a host of 20000 VMs sends (over a million JSON
 * values, the reader's default limit) is read, not taken for "not JSON". */
TEST(host_self_parse_large_reply) {
        enum { VMS = 20000 };
        struct json_writer w;
        json_writer_init(&w, false);
        json_object_begin(&w);
        json_kv_uint(&w, "version", 1);
        json_kv_string(&w, "vmhost-version", VMHOST_VERSION);
        json_key(&w, "vm-list");
        json_array_begin(&w);
        for (unsigned i = 0; i < VMS; i++) {
                json_object_begin(&w);
                char name[32];
                snprintf(name, sizeof(name), "vm%u", i);
                json_kv_string(&w, "name", name);
                for (unsigned k = 0; k < 60; k++) {
                        char key[8];
                        snprintf(key, sizeof(key), "k%u", k);
                        json_kv_uint(&w, key, k);
                }
                json_object_end(&w);
        }
        json_array_end(&w);
        json_kv_uint(&w, "vms", VMS);
        json_key(&w, "macs");
        json_array_begin(&w);
        for (unsigned i = 0; i < VMS; i++) {
                char mac[18];
                snprintf(mac, sizeof(mac), "02:00:00:00:%02x:%02x", (i >> 8) & 0xff, i & 0xff);
                json_string(&w, mac);
        }
        json_array_end(&w);
        json_object_end(&w);
        int r = 0;
        _cleanup_free_ char *text = json_writer_finish(&w, &r);
        CHECK(text != NULL);
        if (!text)
                return;
        CHECK(strlen(text) < HOST_SELF_MAX_OUTPUT);
        struct host_status st = {};
        struct vh_error e = {};
        CHECK_EQ_INT(host_self_parse(text, &st, &e), 0);
        if (e.msg[0])
                fprintf(stderr, "host_self_parse: %s\n", e.msg);
        CHECK_EQ_INT(st.vms, VMS);
        CHECK(st.vm_list && json_array_len(st.vm_list) == VMS);
        CHECK(st.macs && st.macs[VMS - 1] && !st.macs[VMS]);
        host_status_done(&st);
}

/* A create forwarded to host B in a cluster of thousands of NICs: the
 * command line is measured exactly (3000 MACs, 54 KB, fit in 64 KiB), and
 * of 5000 MACs only those B's derivation could make and those the create
 * names by hand go to B. */
TEST(host_avoid_macs_many) {
        enum { MACS = 5000 };
        const char *b_id = "0123456789abcdef0123456789abcdef";
        uint32_t bits = vm_host_id_mix(b_id);
        struct strv macs = {};
        for (unsigned i = 0; i < MACS; i++) {
                char mac[18];
                uint32_t h = i % 1000 == 7 ? bits : (bits ^ 0x5a5a5a) + i / 256;
                CHECK_EQ_INT(vm_mac_derive(h, (i % 60000) + 1, i % 8, mac), 0);
                strv_add(&macs, mac);
        }
        CHECK(!macs.error);
        /* The line as it was sent before: every MAC, exactly sized. */
        char **first = calloc(3001, sizeof(char *));
        CHECK(first != NULL);
        if (!first || macs.error)
                return;
        memcpy(first, macs.v, 3000 * sizeof(char *));
        _cleanup_free_ char *list3000 = strv_join(first, ",");
        free(first);
        char *argv[] = { (char *) "vmhost", (char *) "vm", (char *) "create", (char *) "w", (char *) "--avoid-mac",
                         list3000, NULL };
        _cleanup_free_ char *cmd = NULL;
        CHECK_EQ_INT(host_remote_command(argv, &cmd), 0);
        CHECK(cmd && strlen(cmd) == strlen("'vmhost' 'vm' 'create' 'w' '--avoid-mac' ''") + strlen(list3000));
        /* Exactly at the limit and one past it. */
        size_t room = HOST_REMOTE_COMMAND_MAX - strlen("'x' ''");
        _cleanup_free_ char *big = malloc(room + 2);
        CHECK(big != NULL);
        if (big) {
                memset(big, 'a', room + 1);
                big[room] = '\0';
                char *a2[] = { (char *) "x", big, NULL };
                char *c2 = NULL;
                CHECK_EQ_INT(host_remote_command(a2, &c2), 0);
                CHECK(c2 && strlen(c2) == HOST_REMOTE_COMMAND_MAX);
                free(c2);
                big[room] = 'a';
                big[room + 1] = '\0';
                CHECK_EQ_INT(host_remote_command(a2, &c2), -E2BIG);
        }

        /* All 5000 do not fit; what B needs does. A MAC of another host
         * given by hand (upper case, inside --net) is kept for B to refuse. */
        char hand[64];
        snprintf(hand, sizeof(hand), "user,mac=%s", macs.v[1234]);
        for (char *p = hand; *p; p++)
                *p = (char) toupper((unsigned char) *p);
        char *cargv[] = { (char *) "vmhost", (char *) "vm", (char *) "create", (char *) "w", (char *) "--net", hand,
                          NULL };
        char **send = NULL;
        CHECK_EQ_INT(host_macs_for_create(macs.v, b_id, cargv, &send), 6);
        size_t kept_b = 0;
        bool kept_hand = false;
        for (char **m = send; m && *m; m++) {
                unsigned x[6];
                CHECK(sscanf(*m, "%2x:%2x:%2x:%2x:%2x:%2x", &x[0], &x[1], &x[2], &x[3], &x[4], &x[5]) == 6);
                if (((uint32_t) x[1] << 16 | (uint32_t) x[2] << 8 | x[3]) == bits)
                        kept_b++;
                kept_hand = kept_hand || streq(*m, macs.v[1234]);
        }
        CHECK_EQ_INT(kept_b, 5);
        CHECK(kept_hand);
        _cleanup_free_ char *list = strv_join(send, ",");
        char *sargv[] = { (char *) "vmhost", (char *) "vm", (char *) "create", (char *) "w", (char *) "--avoid-mac",
                          list, NULL };
        _cleanup_free_ char *scmd = NULL;
        CHECK_EQ_INT(host_remote_command(sargv, &scmd), 0);
        host_names_free(send);
        /* B's host id unknown: all of them. */
        CHECK_EQ_INT(host_macs_for_create(macs.v, NULL, cargv, &send), MACS);
        host_names_free(send);
        strv_done(&macs);
}

/* A reply whose strings carry terminal escapes: what is kept of it is
 * printable (host list and messages print these fields as they are). */
TEST(host_self_parse_escapes) {
        static const char reply[] =
                "{\"version\":1,\"vmhost-version\":\"" VMHOST_VERSION "\",\"host-id\":\"\\u001b[2J\","
                "\"qemu-version\":\"7.2\\u001b]0;owned\\u0007\",\"accelerator\":\"tcg\\r\",\"ovs-version\":\"\\u009b1m\","
                "\"macs\":[\"\\u001b[31m\"],\"warnings\":[\"VM x: \\u001b[H\\u001b[2Jgone\"]}";
        struct host_status st = {};
        struct vh_error e = {};
        CHECK_EQ_INT(host_self_parse(reply, &st, &e), 0);
        CHECK_STREQ(st.host_id, "?[2J");
        CHECK_STREQ(st.qemu_version, "7.2?]0;owned?");
        CHECK_STREQ(st.accel, "tcg?");
        CHECK_STREQ(st.ovs_version, "??1m");
        CHECK(st.warnings && st.warnings[0] && streq(st.warnings[0], "VM x: ?[H?[2Jgone"));
        CHECK(st.bad_macs && st.bad_macs[0] && streq(st.bad_macs[0], "?[31m"));
        host_status_done(&st);
}

/* ssh (here a stand-in on the context's PATH) that prints the remote
 * command's stderr, then its own mux noise and fails: the remote lines
 * are relayed whole (one split across writes too), the noise is not, and
 * the error says that the connection broke, naming the host. */
TEST(host_ssh_exec_drops_mux_noise) {
        _cleanup_free_ char *dir = strdup_printf("%s/fake-ssh", test_tmpdir());
        _cleanup_free_ char *ssh = strdup_printf("%s/fake-ssh/ssh", test_tmpdir());
        _cleanup_free_ char *state = strdup_printf("%s/fake-ssh/state", test_tmpdir());
        CHECK(dir && ssh && state && mkdir_p(state, 0700) >= 0);
        static const char script[] =
                "#!/bin/sh\n"
                "printf 'remote: one\\nmu' >&2\n"
                "printf 'st stay\\nCreated VM x\\n' >&2\n"
                "printf 'mux_client_request_session: read from master failed: Broken pipe\\r\\n' >&2\n"
                "printf 'ControlSocket /x already exists, disabling multiplexing\\n' >&2\n"
                "printf 'm' >&2\n"
                "exit 255\n";
        CHECK(write_file_atomic(ssh, script, strlen(script), 0755) >= 0);
        struct vh_context_params p = { .state_dir = state, .exec_path = dir };
        struct vh_context *c = NULL;
        CHECK_EQ_INT(vh_context_new(&p, &c, NULL), 0);
        if (!c)
                return;
        struct host_def *d = host_def_new("c");
        d->ssh = strdup("root@10.0.0.3");
        _cleanup_free_ char *out = strdup_printf("%s/fake-ssh/stderr", test_tmpdir());
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        CHECK(fd >= 0);
        char *remote[] = { (char *) "vmhost", (char *) "vm", (char *) "list", NULL };
        struct vh_error e = {};
        CHECK_EQ_INT(host_ssh_exec(c, d, remote, fd, &e), -ECOMM);
        close(fd);
        CHECK(strstr(e.msg, "connection to host 'c'") && strstr(e.msg, "broke"));
        _cleanup_free_ char *text = NULL;
        CHECK(read_full_file(out, 4096, &text, NULL) >= 0);
        CHECK(text && streq(text, "remote: one\nmust stay\nCreated VM x\nm"));
        if (text && !streq(text, "remote: one\nmust stay\nCreated VM x\nm"))
                fprintf(stderr, "relayed: '%s'\n", text);
        host_def_free(d);
        vh_context_free(c);
}

/* The cluster listing without a network: this machine (an empty home, so
 * no VMs) and a registry holding one host file that does not load, which
 * is skipped, not asked. The entry's JSON is the shape of 'vm list
 * --all-hosts --json' (docs/json.md), with "warnings" only on request. */
TEST(host_cluster_list_local_and_skipped) {
        const struct vh_context *ctx = test_ctx();
        _cleanup_free_ char *conf = NULL;
        CHECK_EQ_INT(host_conf_path(ctx, "bad", &conf), 0);
        const char *text = "name = bad\nssh = -x\n";
        CHECK(conf && write_file_atomic(conf, text, strlen(text), 0600) == 0);

        struct host_cluster c = {};
        struct vh_error err = {};
        CHECK_EQ_INT(host_cluster_list(ctx, HOST_CLUSTER_LOCAL | HOST_CLUSTER_REMOTE, &c, &err), 0);
        CHECK_EQ_INT(c.n, 1);
        CHECK_EQ_INT(c.n_registered, 0);
        CHECK(c.skipped && c.skipped[0] && startswith(c.skipped[0], "bad: ") && !c.skipped[1]);
        if (c.n != 1) {
                host_cluster_done(&c);
                return;
        }
        CHECK(c.hosts[0].local);
        CHECK_STREQ(c.hosts[0].name, "local");
        CHECK(c.hosts[0].status.reachable);
        CHECK_EQ_INT(json_array_len(c.hosts[0].status.vm_list), 0);

        for (int with = 0; with <= 1; with++) {
                struct json_writer w;
                json_writer_init(&w, false);
                host_cluster_entry_to_json(&w, &c.hosts[0], with);
                int r;
                _cleanup_free_ char *s = json_writer_finish(&w, &r);
                CHECK_STREQ(s, with ? "{\"version\":1,\"host\":\"local\",\"reachable\":true,\"error\":null,\"vms\":[],"
                                      "\"warnings\":[]}"
                                    : "{\"version\":1,\"host\":\"local\",\"reachable\":true,\"error\":null,\"vms\":[]}");
        }
        /* A host that did not answer: its reason, no VMs. */
        struct host_cluster_entry down = { .name = "far" };
        snprintf(down.status.why, sizeof(down.status.why), "cannot reach host 'far'");
        struct json_writer w;
        json_writer_init(&w, false);
        host_cluster_entry_to_json(&w, &down, false);
        int r;
        _cleanup_free_ char *s = json_writer_finish(&w, &r);
        CHECK_STREQ(s, "{\"version\":1,\"host\":\"far\",\"reachable\":false,\"error\":\"cannot reach host 'far'\",\"vms\":[]}");
        host_cluster_done(&c);
        CHECK(c.hosts == NULL && c.n == 0);

        /* Only the registry: no local entry. */
        CHECK_EQ_INT(host_cluster_list(ctx, HOST_CLUSTER_REMOTE, &c, &err), 0);
        CHECK_EQ_INT(c.n, 0);
        host_cluster_done(&c);
}
