/* web/tls.c: the TLS of web/tls.h on OpenSSL. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "base/fileio.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "web/tls.h"

struct web_tls {
        SSL_CTX *ctx;
        /* Sockets through send(MSG_NOSIGNAL): a client that leaves must
         * not kill the server with SIGPIPE, whatever the program's
         * signal disposition. */
        BIO_METHOD *bio_method;
};

DEFINE_FREE_FUNC(X509, X509_free);
DEFINE_FREE_FUNC(EVP_PKEY, EVP_PKEY_free);
DEFINE_FREE_FUNC(BIO, BIO_free);
DEFINE_FREE_FUNC(BIGNUM, BN_free);
DEFINE_FREE_FUNC(X509_EXTENSION, X509_EXTENSION_free);

/* OpenSSL's reason for the last failure, for a message. */
static const char *ssl_reason(void) {
        unsigned long e = ERR_peek_last_error();
        const char *s = e ? ERR_reason_error_string(e) : NULL;
        return s ? s : "unknown OpenSSL error";
}

static int bio_sock_write(BIO *b, const char *data, int len) {
        int fd = (int) (intptr_t) BIO_get_data(b);
        BIO_clear_retry_flags(b);
        ssize_t n = send(fd, data, (size_t) len, MSG_NOSIGNAL);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                BIO_set_retry_write(b);
        return (int) n;
}

static int bio_sock_read(BIO *b, char *data, int len) {
        int fd = (int) (intptr_t) BIO_get_data(b);
        BIO_clear_retry_flags(b);
        ssize_t n = recv(fd, data, (size_t) len, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
                BIO_set_retry_read(b);
        return (int) n;
}

static long bio_sock_ctrl(BIO *b, int cmd, long num, void *ptr) {
        (void) b, (void) num, (void) ptr;
        /* Nothing is buffered here: a flush is done at once. */
        return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

struct web_tls *web_tls_free(struct web_tls *t) {
        if (!t)
                return NULL;
        SSL_CTX_free(t->ctx);
        BIO_meth_free(t->bio_method);
        free(t);
        return NULL;
}
DEFINE_FREE_FUNC(struct web_tls, web_tls_free);

/* Reads the key file, refusing one that others may read or change: its
 * mode is taken from the opened file, so a swap after the check cannot
 * slip a looser one in. */
static int read_key_file(const char *path, char **ret_data, size_t *ret_len, struct vh_error *err) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                int r = negative_errno();
                return vh_error_set(err, r, "Cannot open the TLS key %s: %s", path, strerror(-r));
        }
        struct stat st;
        if (fstat(fd, &st) < 0) {
                int r = negative_errno();
                return vh_error_set(err, r, "Cannot stat the TLS key %s: %s", path, strerror(-r));
        }
        if (!S_ISREG(st.st_mode))
                return vh_error_set(err, -EINVAL, "The TLS key %s is not a regular file", path);
        if (st.st_mode & (S_IROTH | S_IWOTH))
                return vh_error_set(err, -EPERM,
                                    "The TLS key %s can be %s by other users (mode %04o): refused. Make it private: "
                                    "chmod 600 %s",
                                    path, (st.st_mode & S_IROTH) ? "read" : "changed",
                                    (unsigned) (st.st_mode & 07777), path);
        if (st.st_size > WEB_TLS_MAX_FILE)
                return vh_error_set(err, -EFBIG, "The TLS key %s is larger than %d bytes", path, WEB_TLS_MAX_FILE);
        _cleanup_free_ char *data = malloc(WEB_TLS_MAX_FILE);
        if (!data)
                return -ENOMEM;
        size_t len = 0;
        for (;;) {
                ssize_t n = read(fd, data + len, WEB_TLS_MAX_FILE - len);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0) {
                        int r = negative_errno();
                        return vh_error_set(err, r, "Cannot read the TLS key %s: %s", path, strerror(-r));
                }
                if (n == 0)
                        break;
                len += (size_t) n;
                if (len == WEB_TLS_MAX_FILE)
                        return vh_error_set(err, -EFBIG, "The TLS key %s is larger than %d bytes", path,
                                            WEB_TLS_MAX_FILE - 1);
        }
        *ret_data = TAKE_PTR(data);
        *ret_len = len;
        return 0;
}

int web_tls_new(const char *cert_path, const char *key_path, struct web_tls **ret, struct vh_error *err) {
        _cleanup_free_ char *key_pem = NULL;
        size_t key_len = 0;
        int r = read_key_file(key_path, &key_pem, &key_len, err);
        if (r < 0)
                return r;
        _cleanup_(web_tls_freep) struct web_tls *t = calloc(1, sizeof(*t));
        if (!t)
                return -ENOMEM;
        ERR_clear_error();
        t->ctx = SSL_CTX_new(TLS_server_method());
        t->bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "vmhost-socket");
        if (!t->ctx || !t->bio_method || !BIO_meth_set_write(t->bio_method, bio_sock_write) ||
            !BIO_meth_set_read(t->bio_method, bio_sock_read) || !BIO_meth_set_ctrl(t->bio_method, bio_sock_ctrl))
                return vh_error_set(err, -ENOMEM, "Cannot set up OpenSSL: %s", ssl_reason());
        /* TLS 1.2 and 1.3 with OpenSSL's default cipher lists (its
         * security level decides); no renegotiation (a client could make
         * the server do handshakes without end). */
        if (!SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION))
                return vh_error_set(err, -EPROTO, "Cannot require TLS 1.2: %s", ssl_reason());
        SSL_CTX_set_options(t->ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
        /* The server's write buffer moves (it grows, and what was sent
         * goes from its front), and writes may be partial. */
        SSL_CTX_set_mode(t->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                                         SSL_MODE_RELEASE_BUFFERS);
        if (SSL_CTX_use_certificate_chain_file(t->ctx, cert_path) != 1)
                return vh_error_set(err, -EINVAL, "Cannot load the TLS certificate %s: %s", cert_path, ssl_reason());
        _cleanup_(BIO_freep) BIO *kb = BIO_new_mem_buf(key_pem, (int) key_len);
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = kb ? PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL) : NULL;
        explicit_bzero(key_pem, key_len);
        if (!key)
                return vh_error_set(err, -EINVAL, "Cannot load the TLS key %s (PEM, not encrypted): %s", key_path,
                                    ssl_reason());
        if (SSL_CTX_use_PrivateKey(t->ctx, key) != 1 || SSL_CTX_check_private_key(t->ctx) != 1)
                return vh_error_set(err, -EINVAL, "The TLS key %s does not belong to the certificate %s: %s", key_path,
                                    cert_path, ssl_reason());
        *ret = TAKE_PTR(t);
        return 0;
}

/* Whether the certificate in 'path' names 'address' and is valid for
 * WEB_TLS_RENEW_DAYS more. */
static bool self_cert_usable(const char *path, const char *address) {
        _cleanup_(BIO_freep) BIO *b = BIO_new_file(path, "r");
        _cleanup_(X509_freep) X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        if (!x)
                return false;
        time_t until = time(NULL) + (time_t) WEB_TLS_RENEW_DAYS * 86400;
        return X509_check_ip_asc(x, address, 0) == 1 && X509_cmp_time(X509_get0_notAfter(x), &until) > 0;
}

static int add_ext(X509 *x, int nid, const char *value) {
        X509V3_CTX v3;
        X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
        _cleanup_(X509_EXTENSION_freep) X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, &v3, nid, value);
        return e && X509_add_ext(x, e, -1) == 1 ? 0 : -EINVAL;
}

static int pem_write(const char *path, mode_t mode, EVP_PKEY *key, X509 *x) {
        _cleanup_(BIO_freep) BIO *b = BIO_new(BIO_s_mem());
        if (!b)
                return -ENOMEM;
        if (key ? !PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL) : !PEM_write_bio_X509(b, x))
                return -ENOMEM;
        char *data;
        long len = BIO_get_mem_data(b, &data);
        return write_file_atomic(path, data, (size_t) len, mode);
}

/* A DNS name fit for a certificate: letters, digits, '-' and '.'. */
static bool dns_name_ok(const char *s) {
        if (isempty(s) || strlen(s) > 253)
                return false;
        for (const char *p = s; *p; p++)
                if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '-' ||
                      *p == '.'))
                        return false;
        return true;
}

static int self_cert_make(const char *cert_path, const char *key_path, const char *address, const char *hostname,
                          struct vh_error *err) {
        ERR_clear_error();
        _cleanup_(EVP_PKEY_freep) EVP_PKEY *key = EVP_EC_gen("P-256");
        _cleanup_(X509_freep) X509 *x = X509_new();
        if (!key || !x)
                return vh_error_set(err, -ENOMEM, "Cannot make a P-256 key: %s", ssl_reason());
        unsigned char serial[16];
        if (RAND_bytes(serial, sizeof(serial)) != 1)
                return vh_error_set(err, -EIO, "Cannot get random bytes: %s", ssl_reason());
        serial[0] &= 0x7f; /* positive */
        _cleanup_(BN_freep) BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
        bool dns = dns_name_ok(hostname);
        _cleanup_free_ char *cn = strdup_printf("vmhost web %s", dns ? hostname : address);
        _cleanup_free_ char *san = dns ? strdup_printf("IP:%s, DNS:%s", address, hostname)
                                       : strdup_printf("IP:%s", address);
        if (!bn || !cn || !san)
                return -ENOMEM;
        X509_NAME *name = X509_get_subject_name(x);
        if (X509_set_version(x, 2) != 1 || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) ||
            !X509_gmtime_adj(X509_getm_notBefore(x), -3600) ||
            !X509_gmtime_adj(X509_getm_notAfter(x), (long) WEB_TLS_SELF_DAYS * 86400) || X509_set_pubkey(x, key) != 1 ||
            X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *) cn, -1, -1, 0) != 1 ||
            X509_set_issuer_name(x, name) != 1 || add_ext(x, NID_subject_alt_name, san) < 0 ||
            add_ext(x, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
            add_ext(x, NID_key_usage, "critical,digitalSignature") < 0 ||
            add_ext(x, NID_ext_key_usage, "serverAuth") < 0 ||
            add_ext(x, NID_subject_key_identifier, "hash") < 0 || X509_sign(x, key, EVP_sha256()) <= 0)
                return vh_error_set(err, -EINVAL, "Cannot make a certificate for %s: %s", address, ssl_reason());
        /* The key first: a certificate on disk always has its key there
         * (a crash in between leaves a pair that does not match, which
         * the next start replaces). */
        int r = pem_write(key_path, 0600, key, NULL);
        if (r < 0)
                return vh_error_set(err, r, "Cannot write %s: %s", key_path, strerror(-r));
        r = pem_write(cert_path, 0644, NULL, x);
        if (r < 0)
                return vh_error_set(err, r, "Cannot write %s: %s", cert_path, strerror(-r));
        return 0;
}

int web_tls_self_signed(const char *dir, const char *address, const char *hostname, struct web_tls **ret,
                        bool *ret_made, struct vh_error *err) {
        int r = mkdir_p(dir, 0700);
        if (r < 0)
                return vh_error_set(err, r, "Cannot make %s: %s", dir, strerror(-r));
        /* Only this user may list or change the key's directory. */
        struct stat st;
        if (stat(dir, &st) < 0 || ((st.st_mode & 077) && chmod(dir, 0700) < 0)) {
                r = negative_errno();
                return vh_error_set(err, r, "Cannot make %s private (0700): %s", dir, strerror(-r));
        }
        _cleanup_free_ char *cert = strdup_printf("%s/cert.pem", dir);
        _cleanup_free_ char *key = strdup_printf("%s/key.pem", dir);
        if (!cert || !key)
                return -ENOMEM;
        if (self_cert_usable(cert, address) && file_exists(key)) {
                struct vh_error lerr = {};
                r = web_tls_new(cert, key, ret, &lerr);
                if (r >= 0) {
                        *ret_made = false;
                        return 0;
                }
                /* A key someone made readable is not silently replaced:
                 * the user learns that it leaked. */
                if (r == -EPERM) {
                        *err = lerr;
                        return r;
                }
        }
        r = self_cert_make(cert, key, address, hostname, err);
        if (r < 0)
                return r;
        r = web_tls_new(cert, key, ret, err);
        if (r < 0)
                return r;
        *ret_made = true;
        return 0;
}

void web_tls_fingerprint(const struct web_tls *t, char ret[WEB_TLS_FINGERPRINT_MAX]) {
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned n = 0;
        X509 *x = SSL_CTX_get0_certificate(t->ctx);
        ret[0] = '\0';
        if (!x || X509_digest(x, EVP_sha256(), md, &n) != 1 || n != 32)
                return;
        for (unsigned i = 0; i < n; i++)
                snprintf(ret + 3 * i, 4, i + 1 < n ? "%02X:" : "%02X", md[i]);
}

int web_tls_conn_new(struct web_tls *t, int fd, struct ssl_st **ret) {
        SSL *ssl = SSL_new(t->ctx);
        BIO *b = BIO_new(t->bio_method);
        if (!ssl || !b) {
                SSL_free(ssl);
                BIO_free(b);
                return -ENOMEM;
        }
        BIO_set_data(b, (void *) (intptr_t) fd);
        BIO_set_init(b, 1);
        SSL_set_bio(ssl, b, b);
        SSL_set_accept_state(ssl);
        *ret = ssl;
        return 0;
}

void web_tls_close_notify(struct ssl_st *ssl) {
        if (!SSL_is_init_finished(ssl) || (SSL_get_shutdown(ssl) & SSL_SENT_SHUTDOWN))
                return;
        ERR_clear_error();
        (void) SSL_shutdown(ssl);
        ERR_clear_error();
}

void web_tls_conn_free(struct ssl_st *ssl) {
        if (!ssl)
                return;
        /* A close_notify when the socket takes it at once; no wait. */
        web_tls_close_notify(ssl);
        SSL_free(ssl);
        ERR_clear_error();
}

/* The errno of a failed SSL call 'ret', and what it waits for. */
static int ssl_failure(SSL *ssl, int ret, short *ret_want) {
        int saved = errno;
        switch (SSL_get_error(ssl, ret)) {
        case SSL_ERROR_WANT_READ:
                *ret_want = POLLIN;
                return EAGAIN;
        case SSL_ERROR_WANT_WRITE:
                *ret_want = POLLOUT;
                return EAGAIN;
        case SSL_ERROR_ZERO_RETURN:
                return 0;
        case SSL_ERROR_SYSCALL:
                /* errno is the socket's, or 0 for an EOF without close_notify. */
                return saved && saved != EAGAIN ? saved : ECONNRESET;
        default:
                return EPROTO;
        }
}

int web_tls_handshake(struct ssl_st *ssl, short *ret_want) {
        ERR_clear_error();
        int ret = SSL_do_handshake(ssl);
        if (ret == 1)
                return 1;
        int e = ssl_failure(ssl, ret, ret_want);
        if (e == EAGAIN)
                return 0;
        if (e == EPROTO && ERR_GET_REASON(ERR_peek_last_error()) == SSL_R_HTTP_REQUEST)
                e = EBADMSG;
        ERR_clear_error();
        return e ? -e : -ECONNRESET;
}

ssize_t web_tls_read(struct ssl_st *ssl, void *data, size_t len, short *ret_want) {
        ERR_clear_error();
        int ret = SSL_read(ssl, data, (int) MIN(len, (size_t) INT32_MAX));
        if (ret > 0)
                return ret;
        int e = ssl_failure(ssl, ret, ret_want);
        ERR_clear_error();
        if (e == 0)
                return 0;
        errno = e;
        return -1;
}

ssize_t web_tls_write(struct ssl_st *ssl, const void *data, size_t len, short *ret_want) {
        ERR_clear_error();
        int ret = SSL_write(ssl, data, (int) MIN(len, (size_t) INT32_MAX));
        if (ret > 0)
                return ret;
        int e = ssl_failure(ssl, ret, ret_want);
        ERR_clear_error();
        errno = e ? e : EPIPE;
        return -1;
}

size_t web_tls_pending(struct ssl_st *ssl) {
        int n = SSL_pending(ssl);
        return n > 0 ? (size_t) n : 0;
}
