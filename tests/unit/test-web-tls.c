/* tests/unit/test-web-tls.c: the TLS setup of src/web/tls.c: the
 * self-made certificate (made on first use, reused with the same
 * fingerprint, made anew for another address, its key 0600 in a 0700
 * directory, a key others can read refused rather than replaced), the
 * errors for certificate and key files that are missing, not PEM, too
 * big, not regular or not a pair, and a client speaking plain HTTP. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "test.h"
#include "web/tls.h"

static char *tmp_path(const char *name) {
        return strdup_printf("%s/%s", test_tmpdir(), name);
}

static mode_t mode_of(const char *path) {
        struct stat st;
        return stat(path, &st) < 0 ? (mode_t) -1 : st.st_mode & 07777;
}

static void write_text(const char *path, const char *text, mode_t mode) {
        CHECK_EQ_INT(write_file_atomic(path, text, strlen(text), mode), 0);
}

/* Whether 'fp' looks like "AB:CD:...", 32 bytes in upper-case hex. */
static bool fingerprint_ok(const char *fp) {
        if (strlen(fp) != 32 * 3 - 1)
                return false;
        for (size_t i = 0; fp[i]; i++)
                if (i % 3 == 2 ? fp[i] != ':' : !strchr("0123456789ABCDEF", fp[i]))
                        return false;
        return true;
}

TEST(web_tls_self_signed_made_then_reused) {
        char *dir = tmp_path("web");
        char *cert = tmp_path("web/cert.pem"), *key = tmp_path("web/key.pem");
        struct vh_error err = {};
        struct web_tls *t = NULL;
        bool made = false;
        CHECK_EQ_INT(web_tls_self_signed(dir, "192.0.2.7", "vm-host.example", &t, &made, &err), 0);
        CHECK(t && made);
        CHECK_EQ_INT(mode_of(dir), 0700);
        CHECK_EQ_INT(mode_of(key), 0600);
        CHECK(access(cert, R_OK) == 0);
        char fp1[WEB_TLS_FINGERPRINT_MAX] = "", fp2[WEB_TLS_FINGERPRINT_MAX] = "";
        if (t)
                web_tls_fingerprint(t, fp1);
        CHECK(fingerprint_ok(fp1));
        t = web_tls_free(t);

        /* Second start: the same certificate, not a new one. */
        made = true;
        CHECK_EQ_INT(web_tls_self_signed(dir, "192.0.2.7", "vm-host.example", &t, &made, &err), 0);
        CHECK(t && !made);
        if (t)
                web_tls_fingerprint(t, fp2);
        CHECK_STREQ(fp2, fp1);
        CHECK_EQ_INT(mode_of(key), 0600);
        t = web_tls_free(t);

        /* Another address: the old certificate does not name it. */
        CHECK_EQ_INT(web_tls_self_signed(dir, "192.0.2.8", NULL, &t, &made, &err), 0);
        CHECK(t && made);
        if (t)
                web_tls_fingerprint(t, fp2);
        CHECK(fingerprint_ok(fp2) && strcmp(fp2, fp1) != 0);
        CHECK_EQ_INT(mode_of(key), 0600);
        t = web_tls_free(t);
        free(dir), free(cert), free(key);
}

TEST(web_tls_self_signed_dir_made_private) {
        char *dir = tmp_path("open");
        CHECK_EQ_INT(mkdir(dir, 0755), 0);
        CHECK_EQ_INT(chmod(dir, 0755), 0);
        struct vh_error err = {};
        struct web_tls *t = NULL;
        bool made = false;
        CHECK_EQ_INT(web_tls_self_signed(dir, "127.0.0.1", NULL, &t, &made, &err), 0);
        CHECK_EQ_INT(mode_of(dir), 0700);
        web_tls_free(t);
        free(dir);
}

/* A key made readable since is refused with the reason, and stays: the
 * user must learn that it may have leaked. */
TEST(web_tls_self_signed_open_key_refused) {
        char *dir = tmp_path("web");
        char *key = tmp_path("web/key.pem");
        struct vh_error err = {};
        struct web_tls *t = NULL;
        bool made = false;
        CHECK_EQ_INT(web_tls_self_signed(dir, "192.0.2.7", NULL, &t, &made, &err), 0);
        t = web_tls_free(t);
        _cleanup_free_ char *before = NULL;
        CHECK_EQ_INT(read_full_file(key, WEB_TLS_MAX_FILE, &before, NULL), 0);
        CHECK_EQ_INT(chmod(key, 0644), 0);
        err = (struct vh_error) {};
        CHECK_EQ_INT(web_tls_self_signed(dir, "192.0.2.7", NULL, &t, &made, &err), -EPERM);
        CHECK(!t);
        CHECK(strstr(err.msg, "other users") && strstr(err.msg, "chmod 600") && strstr(err.msg, key));
        _cleanup_free_ char *after = NULL;
        CHECK_EQ_INT(read_full_file(key, WEB_TLS_MAX_FILE, &after, NULL), 0);
        CHECK(before && after && streq(before, after));
        free(dir), free(key);
}

TEST(web_tls_new_bad_files) {
        /* A good pair, and a second key of another certificate. */
        char *d1 = tmp_path("one"), *d2 = tmp_path("two");
        struct vh_error err = {};
        struct web_tls *t = NULL;
        bool made;
        CHECK_EQ_INT(web_tls_self_signed(d1, "192.0.2.1", NULL, &t, &made, &err), 0);
        t = web_tls_free(t);
        CHECK_EQ_INT(web_tls_self_signed(d2, "192.0.2.2", NULL, &t, &made, &err), 0);
        t = web_tls_free(t);
        char *cert = tmp_path("one/cert.pem"), *key = tmp_path("one/key.pem"), *key2 = tmp_path("two/key.pem");
        char *junk = tmp_path("junk.pem"), *missing = tmp_path("missing.pem"), *big = tmp_path("big.pem");
        write_text(junk, "-----BEGIN NONSENSE-----\nnot base64\n", 0600);
        char *huge = malloc(WEB_TLS_MAX_FILE + 2);
        memset(huge, 'A', WEB_TLS_MAX_FILE + 1);
        huge[WEB_TLS_MAX_FILE + 1] = '\0';
        write_text(big, huge, 0600);
        free(huge);

        CHECK_EQ_INT(web_tls_new(cert, key, &t, &err), 0);
        t = web_tls_free(t);

        static const struct {
                const char *what;
                int cert, key; /* 0 cert, 1 key, 2 key2, 3 junk, 4 missing, 5 big, 6 the directory */
                int result;
                const char *says;
        } cases[] = {
                { "key missing", 0, 4, -ENOENT, "Cannot open the TLS key" },
                { "certificate missing", 4, 1, -EINVAL, "Cannot load the TLS certificate" },
                { "certificate not PEM", 3, 1, -EINVAL, "Cannot load the TLS certificate" },
                { "key not PEM", 0, 3, -EINVAL, "Cannot load the TLS key" },
                { "key of another certificate", 0, 2, -EINVAL, "does not belong to the certificate" },
                { "key too big", 0, 5, -EFBIG, "larger than" },
                { "key a directory", 0, 6, -EINVAL, "not a regular file" },
        };
        const char *paths[] = { cert, key, key2, junk, missing, big, d1 };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                err = (struct vh_error) {};
                t = NULL;
                int r = web_tls_new(paths[cases[i].cert], paths[cases[i].key], &t, &err);
                if (r != cases[i].result || t || !strstr(err.msg, cases[i].says))
                        test_fail(__FILE__, __LINE__, "%s: %d (want %d), '%s' (want '%s')", cases[i].what, r,
                                  cases[i].result, err.msg, cases[i].says);
                /* The message names the file at fault. */
                const char *fault = strstr(cases[i].says, "certificate") && !strstr(cases[i].says, "belong")
                                            ? paths[cases[i].cert]
                                            : paths[cases[i].key];
                if (!strstr(err.msg, fault))
                        test_fail(__FILE__, __LINE__, "%s: '%s' does not name %s", cases[i].what, err.msg, fault);
                web_tls_free(t);
        }
        free(d1), free(d2), free(cert), free(key), free(key2), free(junk), free(missing), free(big);
}

/* Plain HTTP on the TLS port: the handshake says so (the server then
 * answers in plain HTTP, server.c). */
TEST(web_tls_handshake_plain_http) {
        char *dir = tmp_path("web");
        struct vh_error err = {};
        struct web_tls *t = NULL;
        bool made;
        CHECK_EQ_INT(web_tls_self_signed(dir, "127.0.0.1", NULL, &t, &made, &err), 0);
        int sv[2];
        CHECK_EQ_INT(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
        struct ssl_st *ssl = NULL;
        CHECK(t && web_tls_conn_new(t, sv[0], &ssl) == 0);
        short want = 0;
        /* Nothing sent yet: under way, waiting to read. */
        if (ssl) {
                CHECK_EQ_INT(web_tls_handshake(ssl, &want), 0);
                CHECK_EQ_INT(want, POLLIN);
        }
        static const char get[] = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
        CHECK_EQ_INT(write(sv[1], get, sizeof(get) - 1), (long) sizeof(get) - 1);
        if (ssl)
                CHECK_EQ_INT(web_tls_handshake(ssl, &want), -EBADMSG);
        web_tls_conn_free(ssl);
        close(sv[0]);
        close(sv[1]);
        web_tls_free(t);
        free(dir);
}
