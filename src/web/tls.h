/* web/tls.h: TLS for vmhost's web server (OpenSSL): the server's
 * certificate and key (given, or made on first use and kept in the state
 * directory), and the non-blocking handshake, reads and writes of one
 * client, for web/server.c's poll loop.
 *
 * TLS 1.2 at least, OpenSSL's default ciphers; a key file that other users
 * can read or write is refused. Every call on a connection returns at once:
 * what it would wait for comes back as POLLIN or POLLOUT in *ret_want. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "vmhost/error.h"

/* "AB:CD:..." of the SHA-256 of the certificate, with its NUL. */
#define WEB_TLS_FINGERPRINT_MAX (32 * 3)
/* A self-made certificate is valid this long, and made anew when less
 * than WEB_TLS_RENEW_DAYS are left (the fingerprint then changes). */
#define WEB_TLS_SELF_DAYS 365
#define WEB_TLS_RENEW_DAYS 7
/* Certificate and key files past this size are refused. */
#define WEB_TLS_MAX_FILE (256 * 1024)

struct web_tls;
struct ssl_st;

/* The certificate chain in 'cert_path' (PEM) and its key in 'key_path'
 * (PEM, not encrypted), which must match. */
int web_tls_new(const char *cert_path, const char *key_path, struct web_tls **ret, struct vh_error *err);

/* The self-made certificate in 'dir' (cert.pem, key.pem 0600; the
 * directory is made 0700): the one there when it names 'address' and has
 * WEB_TLS_RENEW_DAYS left, else a new one (EC P-256, SAN the IP 'address'
 * and the DNS name 'hostname' when not NULL, WEB_TLS_SELF_DAYS days).
 * *ret_made says which. */
int web_tls_self_signed(const char *dir, const char *address, const char *hostname, struct web_tls **ret,
                        bool *ret_made, struct vh_error *err);

struct web_tls *web_tls_free(struct web_tls *t);

/* The SHA-256 fingerprint of the server's certificate. */
void web_tls_fingerprint(const struct web_tls *t, char ret[WEB_TLS_FINGERPRINT_MAX]);

/* A server-side TLS connection on the non-blocking socket 'fd' (not taken
 * over: the caller closes it after web_tls_conn_free()). */
int web_tls_conn_new(struct web_tls *t, int fd, struct ssl_st **ret);
void web_tls_conn_free(struct ssl_st *ssl);
/* Sends the close_notify alert, once, when the socket takes it at once
 * (web_tls_conn_free() does too). */
void web_tls_close_notify(struct ssl_st *ssl);

/* One step of the handshake: 1 done, 0 under way (wait for *ret_want),
 * -EBADMSG when the client spoke plain HTTP, -EPROTO another TLS failure,
 * -errno of the socket. */
int web_tls_handshake(struct ssl_st *ssl, short *ret_want);

/* As recv() and send(): > 0 bytes, 0 the client ended the session (read
 * only), -1 with errno: EAGAIN (wait for *ret_want), EPROTO, or the
 * socket's. A write that returned EAGAIN is retried with the same bytes
 * at the start of 'data' (more may follow them). */
ssize_t web_tls_read(struct ssl_st *ssl, void *data, size_t len, short *ret_want);
ssize_t web_tls_write(struct ssl_st *ssl, const void *data, size_t len, short *ret_want);

/* Decrypted bytes OpenSSL holds that the socket will not report. */
size_t web_tls_pending(struct ssl_st *ssl);
