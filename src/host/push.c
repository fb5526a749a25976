/* host/push.c: 'img push': hashes and sidecars, the stream's framing
 * (encoder and decoder), the far side's receive and lookup, and the near
 * side walking a chain backing first. */
#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <openssl/evp.h>
#ifdef HAVE_ZSTD
#include <zstd.h>
#endif

#include "base/fileio.h"
#include "base/macro.h"
#include "base/paths.h"
#include "base/strutil.h"
#include "host/push.h"
#include "host/ssh-pipe.h"
#include "host/ssh.h"
#include "vmhost/image.h"

/* Zero-block granularity of the encoder: a 64 KiB block of zeros inside
 * an allocated extent is left out like a hole. */
#define PUSH_ZERO_BLOCK (64u * 1024)
/* After a record that did not shrink, this many go raw untried: random or
 * already compressed data costs a compression attempt per MiB otherwise. */
#define PUSH_COMPRESS_BACKOFF 16
/* The far side's answers are a line or an error message. */
#define PUSH_ANSWER_MAX (16u * 1024)
/* A lookup may hash an image that has no sidecar there yet. */
#define PUSH_LOOKUP_TIMEOUT_MS (600u * 1000)
/* A receive hashes and fsyncs after the last byte arrived. */
#define PUSH_FINISH_TIMEOUT_MS (600u * 1000)
/* After a failed write, how long the far side's answer may take. */
#define PUSH_STALL_ANSWER_MS 10000u
/* The byte the temporary file's writer locks (OFD), far past any data and
 * away from the bytes QEMU's (and the image library's) locks use. */
#define PUSH_LOCK_OFFSET (1ll << 62)

/* Never written: the zeros that partial blocks of holes and gaps hash as. */
static const uint8_t zeros[PUSH_HASH_BLOCK];

static void put_be32(uint8_t *p, uint32_t v) {
        for (int i = 3; i >= 0; i--, v >>= 8)
                p[i] = (uint8_t) v;
}
static void put_be64(uint8_t *p, uint64_t v) {
        for (int i = 7; i >= 0; i--, v >>= 8)
                p[i] = (uint8_t) v;
}
static uint32_t get_be32(const uint8_t *p) {
        return (uint32_t) p[0] << 24 | (uint32_t) p[1] << 16 | (uint32_t) p[2] << 8 | p[3];
}
static uint64_t get_be64(const uint8_t *p) {
        return (uint64_t) get_be32(p) << 32 | get_be32(p + 4);
}

void push_header_encode(uint64_t size, uint8_t out[PUSH_HEADER_SIZE]) {
        memcpy(out, PUSH_MAGIC, 8);
        put_be64(out + 8, size);
}

void push_record_encode(const struct push_record *rec, uint8_t out[PUSH_RECORD_HEADER_SIZE]) {
        out[0] = (uint8_t) rec->kind;
        out[1] = out[2] = out[3] = 0;
        put_be32(out + 4, rec->payload_len);
        put_be64(out + 8, rec->offset);
        put_be32(out + 16, rec->data_len);
}

static size_t payload_max(void) {
#ifdef HAVE_ZSTD
        return MAX((size_t) PUSH_RECORD_MAX, ZSTD_compressBound(PUSH_RECORD_MAX));
#else
        return PUSH_RECORD_MAX;
#endif
}

/* 1: got all 'len' bytes; 0: the input ended before the first; -EPIPE:
 * it ended in between; other -errno from the reader. */
static int read_exact(push_read_fn read_fn, void *userdata, void *buf, size_t len, uint64_t *wire) {
        size_t got = 0;
        while (got < len) {
                ssize_t n = read_fn((char *) buf + got, len - got, userdata);
                if (n < 0)
                        return (int) n;
                if (n == 0)
                        return got == 0 ? 0 : -EPIPE;
                if ((size_t) n > len - got)
                        return -EIO;
                got += (size_t) n;
                *wire += (uint64_t) n;
        }
        return 1;
}

int push_decode(push_read_fn read_fn, push_size_fn size_fn, push_data_fn data_fn, void *userdata,
                uint64_t size_max, struct push_decode_stats *ret_stats, struct vh_error *err) {
        struct push_decode_stats st = {};
        uint8_t hdr[PUSH_RECORD_HEADER_SIZE];
        int r = read_exact(read_fn, userdata, hdr, PUSH_HEADER_SIZE, &st.wire_bytes);
        if (r == 0 || r == -EPIPE)
                return vh_error_set(err, -EPIPE, "the image stream ended before its header (the sender went away)");
        if (r < 0)
                return vh_error_set(err, r, "cannot read the image stream: %s", strerror(-r));
        if (memcmp(hdr, PUSH_MAGIC, 8) != 0)
                return vh_error_set(err, -EBADMSG, "not a vmhost image stream (bad magic)");
        st.size = get_be64(hdr + 8);
        if (st.size > size_max)
                return vh_error_set(err, -EBADMSG, "image stream: size %" PRIu64 " is past the limit of %" PRIu64,
                                    st.size, size_max);
        if (size_fn && (r = size_fn(st.size, userdata)) != 0)
                return vh_error_set(err, r < 0 ? r : -ECANCELED, "cannot make room for %" PRIu64 " bytes: %s",
                                    st.size, strerror(r < 0 ? -r : ECANCELED));

        size_t pmax = payload_max();
        _cleanup_free_ uint8_t *payload = malloc(pmax);
        _cleanup_free_ uint8_t *data = malloc(PUSH_RECORD_MAX);
        if (!payload || !data)
                return -ENOMEM;
#ifdef HAVE_ZSTD
        ZSTD_DCtx *dctx = NULL;
#endif
        uint64_t next = 0; /* records come in order and never overlap */
        for (;;) {
                r = read_exact(read_fn, userdata, hdr, PUSH_RECORD_HEADER_SIZE, &st.wire_bytes);
                if (r == 0 || r == -EPIPE) {
                        r = vh_error_set(err, -EPIPE,
                                         "the image stream ended after %" PRIu64 " records, before its end record "
                                         "(the sender went away)",
                                         st.records);
                        goto out;
                }
                if (r < 0) {
                        r = vh_error_set(err, r, "cannot read the image stream: %s", strerror(-r));
                        goto out;
                }
                struct push_record rec = {
                        .kind = hdr[0],
                        .payload_len = get_be32(hdr + 4),
                        .offset = get_be64(hdr + 8),
                        .data_len = get_be32(hdr + 16),
                };
                if (hdr[1] || hdr[2] || hdr[3]) {
                        r = vh_error_set(err, -EBADMSG, "image stream: record %" PRIu64 ": reserved bytes set",
                                         st.records);
                        goto out;
                }
                if (rec.kind == PUSH_RECORD_END) {
                        if (rec.payload_len || rec.data_len || rec.offset != st.size) {
                                r = vh_error_set(err, -EBADMSG, "image stream: malformed end record");
                                goto out;
                        }
                        uint8_t extra;
                        r = read_exact(read_fn, userdata, &extra, 1, &st.wire_bytes);
                        if (r != 0) {
                                r = vh_error_set(err, -EBADMSG, "image stream: bytes after the end record");
                                goto out;
                        }
                        break;
                }
                if (rec.kind != PUSH_RECORD_RAW && rec.kind != PUSH_RECORD_ZSTD) {
                        r = vh_error_set(err, -EBADMSG, "image stream: record %" PRIu64 ": unknown kind %u",
                                         st.records, (unsigned) hdr[0]);
                        goto out;
                }
                if (rec.data_len == 0 || rec.data_len > PUSH_RECORD_MAX) {
                        r = vh_error_set(err, -EBADMSG,
                                         "image stream: record %" PRIu64 ": data length %" PRIu32
                                         " is not within 1..%u",
                                         st.records, rec.data_len, PUSH_RECORD_MAX);
                        goto out;
                }
                if (rec.offset < next || rec.offset > st.size || rec.data_len > st.size - rec.offset) {
                        r = vh_error_set(err, -EBADMSG,
                                         "image stream: record %" PRIu64 " at %" PRIu64 "+%" PRIu32
                                         " is not after %" PRIu64 " and within the size %" PRIu64,
                                         st.records, rec.offset, rec.data_len, next, st.size);
                        goto out;
                }
                if ((rec.kind == PUSH_RECORD_RAW && rec.payload_len != rec.data_len) ||
                    (rec.kind == PUSH_RECORD_ZSTD && (rec.payload_len == 0 || rec.payload_len > pmax))) {
                        r = vh_error_set(err, -EBADMSG,
                                         "image stream: record %" PRIu64 ": payload length %" PRIu32
                                         " does not fit its data length %" PRIu32,
                                         st.records, rec.payload_len, rec.data_len);
                        goto out;
                }
                r = read_exact(read_fn, userdata, payload, rec.payload_len, &st.wire_bytes);
                if (r <= 0) {
                        r = vh_error_set(err, r == 0 || r == -EPIPE ? -EPIPE : r,
                                         "the image stream ended inside record %" PRIu64 " (the sender went away)",
                                         st.records);
                        goto out;
                }
                const uint8_t *d = payload;
                if (rec.kind == PUSH_RECORD_ZSTD) {
#ifdef HAVE_ZSTD
                        if (!dctx && !(dctx = ZSTD_createDCtx())) {
                                r = -ENOMEM;
                                goto out;
                        }
                        size_t n = ZSTD_decompressDCtx(dctx, data, rec.data_len, payload, rec.payload_len);
                        if (ZSTD_isError(n) || n != rec.data_len) {
                                r = vh_error_set(err, -EBADMSG,
                                                 "image stream: record %" PRIu64 ": compressed data is damaged%s%s",
                                                 st.records, ZSTD_isError(n) ? ": " : " (wrong length)",
                                                 ZSTD_isError(n) ? ZSTD_getErrorName(n) : "");
                                goto out;
                        }
                        d = data;
#else
                        r = vh_error_set(err, -EOPNOTSUPP, "image stream: compressed records need zstd, "
                                                           "which this vmhost was built without");
                        goto out;
#endif
                }
                r = data_fn(rec.offset, d, rec.data_len, userdata);
                if (r != 0) {
                        r = vh_error_set(err, r < 0 ? r : -ECANCELED, "cannot store record %" PRIu64 ": %s",
                                         st.records, strerror(r < 0 ? -r : ECANCELED));
                        goto out;
                }
                next = rec.offset + rec.data_len;
                st.data_bytes += rec.data_len;
                st.records++;
        }
        r = 0;
        if (ret_stats)
                *ret_stats = st;
out:
#ifdef HAVE_ZSTD
        ZSTD_freeDCtx(dctx);
#endif
        return r;
}

/* ---- The tree hash ---- */

/* An image's identity (PUSH_HASH_ALGORITHM, docs/hosts.md): SHA-256 over
 * a tag, the size (u64 big endian) and the SHA-256 of each 1 MiB block in
 * order (the last one may be short). Not the SHA-256 of the bytes: a hole
 * or a gap between records is a run of whole blocks whose digest is the
 * constant digest of a zero block, so it costs 32 bytes of hashing per
 * MiB, not a pass over its zeros (a TiB-sized hole would take ten minutes
 * at SHA-256's speed, far past what the sender waits for). */
#define TREE_BLOCK PUSH_HASH_BLOCK
#define TREE_TAG "vmhost-sha256-tree-1m\n"
/* Zero-block digests fed to the outer hash at once. */
#define TREE_ZERO_BATCH 1024

struct hasher {
        EVP_MD_CTX *outer, *leaf;
        uint64_t size, pos;        /* the image's size; bytes hashed so far */
        uint8_t *zero_leaves;      /* TREE_ZERO_BATCH copies of the zero block's digest */
};

static void hasher_done(struct hasher *h) {
        EVP_MD_CTX_free(h->outer);
        EVP_MD_CTX_free(h->leaf);
        free(h->zero_leaves);
        *h = (struct hasher) {};
}

static int hasher_init(struct hasher *h, uint64_t size) {
        *h = (struct hasher) { .size = size };
        h->outer = EVP_MD_CTX_new();
        h->leaf = EVP_MD_CTX_new();
        h->zero_leaves = malloc(32 * TREE_ZERO_BATCH);
        uint8_t be[8];
        put_be64(be, size);
        if (!h->outer || !h->leaf || !h->zero_leaves || EVP_DigestInit_ex(h->outer, EVP_sha256(), NULL) != 1 ||
            EVP_DigestUpdate(h->outer, TREE_TAG, strlen(TREE_TAG)) != 1 || EVP_DigestUpdate(h->outer, be, 8) != 1 ||
            EVP_DigestInit_ex(h->leaf, EVP_sha256(), NULL) != 1)
                goto fail;
        /* The zero block's digest, once per hash (half a millisecond). */
        unsigned n = 0;
        if (EVP_DigestUpdate(h->leaf, zeros, TREE_BLOCK) != 1 || EVP_DigestFinal_ex(h->leaf, h->zero_leaves, &n) != 1 ||
            EVP_DigestInit_ex(h->leaf, EVP_sha256(), NULL) != 1)
                goto fail;
        for (size_t i = 1; i < TREE_ZERO_BATCH; i++)
                memcpy(h->zero_leaves + 32 * i, h->zero_leaves, 32);
        return 0;
fail:
        hasher_done(h);
        return -ENOMEM;
}

/* Ends the current block: its digest goes into the outer hash. */
static void hasher_end_block(struct hasher *h) {
        uint8_t md[32];
        unsigned n = 0;
        EVP_DigestFinal_ex(h->leaf, md, &n);
        EVP_DigestUpdate(h->outer, md, 32);
        EVP_DigestInit_ex(h->leaf, EVP_sha256(), NULL);
}

/* The next 'n' bytes of the image (never past its size). */
static void hasher_update(struct hasher *h, const void *p, size_t n) {
        const uint8_t *b = p;
        assert(n <= h->size - h->pos);
        while (n > 0) {
                size_t k = (size_t) MIN((uint64_t) n, TREE_BLOCK - h->pos % TREE_BLOCK);
                EVP_DigestUpdate(h->leaf, b, k);
                h->pos += k;
                b += k;
                n -= k;
                if (h->pos % TREE_BLOCK == 0)
                        hasher_end_block(h);
        }
}

/* The next 'n' bytes are zeros: whole blocks by their constant digest. */
static void hasher_zeros(struct hasher *h, uint64_t n) {
        assert(n <= h->size - h->pos);
        if (n > 0 && h->pos % TREE_BLOCK) {
                size_t k = (size_t) MIN(n, TREE_BLOCK - h->pos % TREE_BLOCK);
                hasher_update(h, zeros, k);
                n -= k;
        }
        uint64_t blocks = n / TREE_BLOCK;
        while (blocks > 0) {
                size_t k = (size_t) MIN(blocks, (uint64_t) TREE_ZERO_BATCH);
                EVP_DigestUpdate(h->outer, h->zero_leaves, 32 * k);
                blocks -= k;
        }
        h->pos += n / TREE_BLOCK * TREE_BLOCK;
        if (n % TREE_BLOCK)
                hasher_update(h, zeros, (size_t) (n % TREE_BLOCK));
}

/* The rest of the image up to its size is zeros; the hex digest. */
static void hasher_final(struct hasher *h, char hex[PUSH_SHA256_HEX + 1]) {
        hasher_zeros(h, h->size - h->pos);
        if (h->pos % TREE_BLOCK)
                hasher_end_block(h);
        uint8_t md[32];
        unsigned n = 0;
        EVP_DigestFinal_ex(h->outer, md, &n);
        for (unsigned i = 0; i < 32; i++)
                snprintf(hex + 2 * i, 3, "%02x", md[i]);
        hasher_done(h);
}

static int pread_full(int fd, void *buf, size_t len, uint64_t off) {
        size_t got = 0;
        while (got < len) {
                ssize_t n = pread(fd, (char *) buf + got, len - got, (off_t) (off + got));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return negative_errno();
                if (n == 0)
                        return -EIO; /* the file shrank under us */
                got += (size_t) n;
        }
        return 0;
}

/* The next data extent at or after 'off': 1 and [*ret_start, *ret_end),
 * or 0 when only a hole is left. */
static int next_extent(int fd, uint64_t off, uint64_t size, uint64_t *ret_start, uint64_t *ret_end) {
        off_t d = lseek(fd, (off_t) off, SEEK_DATA);
        if (d < 0)
                return errno == ENXIO ? 0 : negative_errno();
        off_t h = lseek(fd, d, SEEK_HOLE);
        if (h < 0)
                return negative_errno();
        *ret_start = (uint64_t) d;
        *ret_end = MIN((uint64_t) h, size);
        return *ret_start < size;
}

int push_hash_fd(int fd, char ret_hex[PUSH_SHA256_HEX + 1], struct vh_error *err) {
        struct stat st;
        if (fstat(fd, &st) < 0)
                return vh_error_set(err, negative_errno(), "cannot stat the image: %m");
        uint64_t size = (uint64_t) st.st_size, off = 0;
        _cleanup_free_ uint8_t *buf = malloc(PUSH_RECORD_MAX);
        struct hasher h;
        if (!buf || hasher_init(&h, size) < 0)
                return -ENOMEM;
        int r;
        while (off < size) {
                uint64_t start, end;
                r = next_extent(fd, off, size, &start, &end);
                if (r < 0)
                        goto fail;
                if (r == 0)
                        break;
                hasher_zeros(&h, start - off);
                for (uint64_t p = start; p < end;) {
                        size_t n = (size_t) MIN(end - p, (uint64_t) PUSH_RECORD_MAX);
                        if ((r = pread_full(fd, buf, n, p)) < 0)
                                goto fail;
                        hasher_update(&h, buf, n);
                        p += n;
                }
                off = end;
        }
        hasher_final(&h, ret_hex);
        return 0;
fail:
        hasher_done(&h);
        return vh_error_set(err, r, "cannot read the image to hash it: %s", strerror(-r));
}

/* ---- Names and sidecars ---- */

bool push_name_is_valid(const char *name) {
        size_t n = name ? strlen(name) : 0;
        if (n == 0 || n > PUSH_NAME_MAX || name[0] == '.' || name[0] == '-')
                return false;
        for (size_t i = 0; i < n; i++) {
                char c = name[i];
                if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                      c == '_' || c == '-' || c == '+'))
                        return false;
        }
        /* Sidecars have that name: an image must not. */
        return !endswith(name, PUSH_SIDECAR_SUFFIX);
}

bool push_sha256_is_valid(const char *hex) {
        if (!hex || strlen(hex) != PUSH_SHA256_HEX)
                return false;
        for (size_t i = 0; i < PUSH_SHA256_HEX; i++)
                if (!((hex[i] >= '0' && hex[i] <= '9') || (hex[i] >= 'a' && hex[i] <= 'f')))
                        return false;
        return true;
}

char *push_sidecar_format(const struct push_sidecar *sc, const char *name) {
        char *s = NULL;
        if (asprintf(&s,
                     PUSH_SIDECAR_MAGIC " " PUSH_SIDECAR_VERSION "\n"
                     "algorithm=" PUSH_HASH_ALGORITHM "\n"
                     "hash=%s\n"
                     "file=%s size=%" PRIu64 " mtime-ns=%" PRIu64 " inode=%" PRIu64 "\n"
                     "%s%s%s",
                     sc->sha256, name, sc->size, sc->mtime_ns, sc->inode, sc->origin[0] ? "origin=" : "",
                     sc->origin, sc->origin[0] ? "\n" : "") < 0)
                return NULL;
        return s;
}

/* "KEY=HEX\n" at '*p': the hash, and '*p' past the line. */
static int parse_hash_line(const char **p, const char *key, char ret[PUSH_SHA256_HEX + 1]) {
        size_t k = strlen(key);
        if (!strneq(*p, key, k) || strlen(*p + k) < PUSH_SHA256_HEX + 1 || (*p)[k + PUSH_SHA256_HEX] != '\n')
                return -EBADMSG;
        char h[PUSH_SHA256_HEX + 1];
        memcpy(h, *p + k, PUSH_SHA256_HEX);
        h[PUSH_SHA256_HEX] = '\0';
        if (!push_sha256_is_valid(h))
                return -EBADMSG;
        memcpy(ret, h, sizeof(h));
        *p += k + PUSH_SHA256_HEX + 1;
        return 0;
}

int push_sidecar_parse(const char *text, struct push_sidecar *ret) {
        struct push_sidecar sc = {};
        if (strlen(text) > PUSH_SIDECAR_MAX)
                return -EBADMSG;
        /* Ours at all? Another version or algorithm of ours is recomputed
         * (and may be replaced); anything else is someone else's file. */
        if (!startswith(text, PUSH_SIDECAR_MAGIC " "))
                return startswith(text, PUSH_SIDECAR_OLD_MARK) || strstr(text, "\n" PUSH_SIDECAR_OLD_MARK)
                               ? -EPROTONOSUPPORT
                               : -EBADMSG;
        const char *p = text + strlen(PUSH_SIDECAR_MAGIC " ");
        if (!startswith(p, PUSH_SIDECAR_VERSION "\nalgorithm=" PUSH_HASH_ALGORITHM "\n"))
                return -EPROTONOSUPPORT;
        p += strlen(PUSH_SIDECAR_VERSION "\nalgorithm=" PUSH_HASH_ALGORITHM "\n");
        if (parse_hash_line(&p, "hash=", sc.sha256) < 0)
                return -EBADMSG;
        /* The file name is informative (the sidecar sits beside its file). */
        if (!startswith(p, "file="))
                return -EBADMSG;
        p = strchr(p, ' ');
        if (!p)
                return -EBADMSG;
        int used = 0;
        if (sscanf(p, " size=%" SCNu64 " mtime-ns=%" SCNu64 " inode=%" SCNu64 "%n", &sc.size, &sc.mtime_ns,
                   &sc.inode, &used) != 3 ||
            p[used] != '\n')
                return -EBADMSG;
        p += used + 1;
        if (startswith(p, "origin=") && parse_hash_line(&p, "origin=", sc.origin) < 0)
                return -EBADMSG;
        if (*p)
                return -EBADMSG;
        *ret = sc;
        return 0;
}

static uint64_t stat_mtime_ns(const struct stat *st) {
        return (uint64_t) st->st_mtim.tv_sec * 1000000000ull + (uint64_t) st->st_mtim.tv_nsec;
}

static bool sidecar_matches(const struct push_sidecar *sc, const struct stat *st) {
        return sc->size == (uint64_t) st->st_size && sc->mtime_ns == stat_mtime_ns(st) &&
               sc->inode == (uint64_t) st->st_ino;
}

/* The sidecar of 'path' if it still describes the file 'st'. */
static int sidecar_load(const char *path, const struct stat *st, struct push_sidecar *ret) {
        _cleanup_free_ char *sc_path = NULL, *text = NULL;
        if (asprintf(&sc_path, "%s%s", path, PUSH_SIDECAR_SUFFIX) < 0)
                return -ENOMEM;
        int r = read_full_file(sc_path, PUSH_SIDECAR_MAX, &text, NULL);
        if (r < 0)
                return r;
        struct push_sidecar sc;
        if ((r = push_sidecar_parse(text, &sc)) < 0)
                return r;
        if (!sidecar_matches(&sc, st))
                return -ESTALE;
        *ret = sc;
        return 0;
}

static int sidecar_save(const char *path, const struct push_sidecar *sc) {
        _cleanup_free_ char *sc_path = NULL, *text = NULL, *old = NULL;
        const char *base = strrchr(path, '/');
        base = base ? base + 1 : path;
        if (asprintf(&sc_path, "%s%s", path, PUSH_SIDECAR_SUFFIX) < 0 || !(text = push_sidecar_format(sc, base)))
                return -ENOMEM;
        /* Only over a sidecar of ours (any version) or nothing: a file of
         * the user's under that name stays, and costs the hash each time. */
        struct stat st;
        if (lstat(sc_path, &st) == 0) {
                struct push_sidecar prev;
                if (!S_ISREG(st.st_mode))
                        return -EEXIST;
                int r = read_full_file(sc_path, PUSH_SIDECAR_MAX, &old, NULL);
                if (r < 0 || push_sidecar_parse(old, &prev) == -EBADMSG)
                        return -EEXIST;
        } else if (errno != ENOENT)
                return negative_errno();
        return write_file_atomic(sc_path, text, strlen(text), 0444);
}

/* A copy whose backing name the far side rewrote is no longer the bytes
 * that were pushed; what was pushed (its origin) is in its sidecar, and
 * also here, on the file itself, with the hash the file had then: a lost
 * or stale sidecar is computed again without losing the origin, which is
 * kept only while the file still has that hash. */
#define PUSH_ORIGIN_XATTR "user.vmhost.push-origin"

static void origin_mark(int fd, const char origin[PUSH_SHA256_HEX + 1], const char own[PUSH_SHA256_HEX + 1]) {
        char v[2 * PUSH_SHA256_HEX + 2];
        snprintf(v, sizeof(v), "%s %s", origin, own);
        /* Best effort: without user xattrs the sidecar alone keeps it. */
        (void) fsetxattr(fd, PUSH_ORIGIN_XATTR, v, strlen(v), 0);
}

static void origin_of(int fd, const char own[PUSH_SHA256_HEX + 1], char ret_origin[PUSH_SHA256_HEX + 1]) {
        char v[2 * PUSH_SHA256_HEX + 2] = "";
        ret_origin[0] = '\0';
        ssize_t n = fgetxattr(fd, PUSH_ORIGIN_XATTR, v, sizeof(v) - 1);
        if (n != 2 * PUSH_SHA256_HEX + 1 || v[PUSH_SHA256_HEX] != ' ')
                return;
        v[n] = '\0';
        v[PUSH_SHA256_HEX] = '\0';
        if (push_sha256_is_valid(v) && streq(v + PUSH_SHA256_HEX + 1, own))
                memcpy(ret_origin, v, PUSH_SHA256_HEX + 1);
}

/* 'record': save a hash computed here in the sidecar (a read-only use,
 * a dry run's lookup, writes nothing beside the image). */
static int image_hash_fd(const char *path, int fd, char ret_hex[PUSH_SHA256_HEX + 1],
                         char ret_origin[PUSH_SHA256_HEX + 1], bool record, struct vh_error *err) {
        struct stat st;
        if (fstat(fd, &st) < 0)
                return vh_error_set(err, negative_errno(), "cannot stat %s: %m", path);
        if (!S_ISREG(st.st_mode))
                return vh_error_set(err, -EINVAL, "%s is not a regular file", path);
        struct push_sidecar sc = {};
        if (sidecar_load(path, &st, &sc) == 0) {
                memcpy(ret_hex, sc.sha256, PUSH_SHA256_HEX + 1);
                if (ret_origin)
                        memcpy(ret_origin, sc.origin, PUSH_SHA256_HEX + 1);
                return 0;
        }
        struct vh_error e = {};
        int r = push_hash_fd(fd, sc.sha256, &e);
        if (r < 0)
                return vh_error_set(err, r, "%s: %s", path, vh_error_message(&e, r));
        struct stat after;
        if (fstat(fd, &after) < 0)
                return vh_error_set(err, negative_errno(), "cannot stat %s: %m", path);
        /* Recorded only if the file held still while it was read. */
        if (record && stat_mtime_ns(&after) == stat_mtime_ns(&st) && after.st_size == st.st_size) {
                sc.size = (uint64_t) st.st_size;
                sc.mtime_ns = stat_mtime_ns(&st);
                sc.inode = (uint64_t) st.st_ino;
                origin_of(fd, sc.sha256, sc.origin);
                /* A directory we cannot write costs the hash next time, no more. */
                (void) sidecar_save(path, &sc);
        } else
                origin_of(fd, sc.sha256, sc.origin);
        memcpy(ret_hex, sc.sha256, PUSH_SHA256_HEX + 1);
        if (ret_origin)
                memcpy(ret_origin, sc.origin, PUSH_SHA256_HEX + 1);
        return 0;
}

static int image_hash_path(const char *path, char ret_hex[PUSH_SHA256_HEX + 1], char ret_origin[PUSH_SHA256_HEX + 1],
                           bool record, struct vh_error *err) {
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return vh_error_set(err, negative_errno(), "cannot open %s: %m", path);
        return image_hash_fd(path, fd, ret_hex, ret_origin, record, err);
}

int push_image_hash(const char *path, char ret_hex[PUSH_SHA256_HEX + 1], char ret_origin[PUSH_SHA256_HEX + 1],
                    struct vh_error *err) {
        return image_hash_path(path, ret_hex, ret_origin, true, err);
}

/* ---- The far side ---- */

/* 'dir', or STATE/images without one; made unless 'read_only' (a lookup
 * of a dry run makes nothing: a missing directory holds no image). */
static int resolve_dir(const struct vh_context *ctx, const char *dir, bool read_only, char **ret,
                       struct vh_error *err) {
        if (!dir && read_only) {
                _cleanup_free_ char *state = vh_state_dir(ctx);
                if (!state || !(*ret = strdup_printf("%s/images", state)))
                        return -ENOMEM;
                return 0;
        }
        if (!dir) {
                int r = vh_state_subdir(ctx, "images", ret);
                if (r < 0)
                        return vh_error_set(err, r, "cannot make the images directory: %s", strerror(-r));
                return 0;
        }
        if (dir[0] != '/' || strlen(dir) > 4096)
                return vh_error_set(err, -EINVAL, "the target directory '%s' must be an absolute path", dir);
        int r = read_only ? 0 : mkdir_p(dir, 0755);
        if (r < 0)
                return vh_error_set(err, r, "cannot make the directory %s: %s", dir, strerror(-r));
        char *d = strdup(dir);
        if (!d)
                return -ENOMEM;
        *ret = d;
        return 0;
}

/* Whether 'n' is exactly ".NAME.push-XXXXXX" as push_receive() makes it
 * (mkostemp's six characters), with NAME a valid image name: nothing
 * else in DIR is ours to remove (".git.push-options" is not). */
static bool is_temp_name(const char *n) {
        size_t len = strlen(n), sfx = strlen(".push-XXXXXX");
        if (len < 1 + 1 + sfx || n[0] != '.' || len - 1 - sfx > PUSH_NAME_MAX)
                return false;
        const char *tail = n + len - sfx;
        if (!startswith(tail, ".push-"))
                return false;
        for (size_t i = strlen(".push-"); i < sfx; i++)
                if (!((tail[i] >= 'a' && tail[i] <= 'z') || (tail[i] >= 'A' && tail[i] <= 'Z') ||
                      (tail[i] >= '0' && tail[i] <= '9')))
                        return false;
        char name[PUSH_NAME_MAX + 1];
        memcpy(name, n + 1, len - 1 - sfx);
        name[len - 1 - sfx] = '\0';
        return push_name_is_valid(name);
}

static int temp_lock(int fd) {
        struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = PUSH_LOCK_OFFSET, .l_len = 1 };
        return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? negative_errno() : 0;
}

/* Marks a temporary file as push_receive()'s: a name alone cannot tell
 * (".bashrc.push-backup" has the shape of an image "bashrc"'s). */
#define PUSH_TEMP_XATTR "user.vmhost.push-temp"

/* Removes DIR/.NAME.push-XXXXXX files that carry PUSH_TEMP_XATTR and whose
 * writer is gone (its lock went with it, however it died); on a
 * filesystem without user xattrs none are removed. The lock is taken here, not only looked at,
 * and held across the unlink: a writer cannot take it meanwhile, and one
 * that made its file but had not locked it yet finds its name gone after
 * locking and makes another (make_temp()). */
static void clean_stale_temps(const char *dir) {
        DIR *d = opendir(dir);
        if (!d)
                return;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (!is_temp_name(de->d_name))
                        continue;
                int fd = openat(dirfd(d), de->d_name, O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
                if (fd < 0)
                        continue;
                struct stat st, now;
                char mark;
                if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) &&
                    fgetxattr(fd, PUSH_TEMP_XATTR, &mark, 1) == 1 && temp_lock(fd) == 0 &&
                    fstatat(dirfd(d), de->d_name, &now, AT_SYMLINK_NOFOLLOW) == 0 && now.st_ino == st.st_ino &&
                    now.st_dev == st.st_dev)
                        (void) unlinkat(dirfd(d), de->d_name, 0);
                close(fd);
        }
        closedir(d);
}

/* Makes and locks DIR/.NAME.push-XXXXXX ('tmp' the template, filled in):
 * the fd. Between mkostemp and the lock another receive's cleanup may see
 * the file unlocked and remove it; then the name no longer leads to this
 * file, and another is made. */
static int make_temp(char *tmp, size_t tmp_len) {
        for (int attempt = 0; attempt < 16; attempt++) {
                memcpy(tmp + tmp_len - 6, "XXXXXX", 6);
                int fd = mkostemp(tmp, O_CLOEXEC);
                if (fd < 0)
                        return negative_errno();
                int r = temp_lock(fd);
                struct stat st, now;
                if (r == 0 && fstat(fd, &st) == 0 && stat(tmp, &now) == 0 && now.st_ino == st.st_ino &&
                    now.st_dev == st.st_dev && st.st_nlink > 0) {
                        /* Marked only once locked: an unmarked file is never removed. */
                        (void) fsetxattr(fd, PUSH_TEMP_XATTR, "1", 1, 0);
                        return fd;
                }
                close(fd);
                if (r < 0 && r != -EAGAIN && r != -EACCES)
                        return r;
        }
        return -EAGAIN;
}

/* The hash of DIR/NAME when it exists: 1; 0 when it does not. */
static int existing_hash(const char *path, char hex[PUSH_SHA256_HEX + 1], char origin[PUSH_SHA256_HEX + 1],
                         bool record, struct vh_error *err) {
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 && errno == ENOENT)
                return 0;
        if (fd < 0)
                return vh_error_set(err, negative_errno(), "cannot open %s: %m", path);
        int r = image_hash_fd(path, fd, hex, origin, record, err);
        close(fd);
        return r < 0 ? r : 1;
}

/* What a stat tells of DIR/NAME: 0 absent; 1 present, its valid sidecar's
 * hash and origin in 'hex' and 'origin'; 2 present without one. */
static int existing_known_hash(const char *path, char hex[PUSH_SHA256_HEX + 1], char origin[PUSH_SHA256_HEX + 1],
                               struct vh_error *err) {
        struct stat st;
        if (lstat(path, &st) < 0) {
                if (errno == ENOENT)
                        return 0;
                return vh_error_set(err, negative_errno(), "cannot stat %s: %m", path);
        }
        struct push_sidecar sc;
        if (!S_ISREG(st.st_mode) || sidecar_load(path, &st, &sc) < 0)
                return 2;
        memcpy(hex, sc.sha256, PUSH_SHA256_HEX + 1);
        memcpy(origin, sc.origin, PUSH_SHA256_HEX + 1);
        return 1;
}

/* Whether DIR/NAME holds the content 'want' (its hash or origin): 1; 0
 * when it does not exist; -EEXIST with a message when it holds another. */
static int existing_holds(const char *path, const char *want, struct vh_error *err) {
        char hex[PUSH_SHA256_HEX + 1], origin[PUSH_SHA256_HEX + 1];
        int r = existing_hash(path, hex, origin, true, err);
        if (r <= 0)
                return r;
        if (!streq(hex, want) && !streq(origin, want))
                return vh_error_set(err, -EEXIST, "%s exists and holds another image (hash %s): refused", path,
                                    hex);
        return 1;
}

static int lookup_in(const char *dir, const char *name, const char *sha256, unsigned flags,
                     enum push_lookup_status *ret_status, char **ret_path, struct vh_error *err) {
        _cleanup_free_ char *path = NULL;
        if (asprintf(&path, "%s/%s", dir, name) < 0)
                return -ENOMEM;
        char hex[PUSH_SHA256_HEX + 1], origin[PUSH_SHA256_HEX + 1];
        int r = existing_hash(path, hex, origin, !(flags & PUSH_READ_ONLY), err);
        if (r < 0)
                return r;
        if (r > 0) {
                if (!streq(hex, sha256) && !streq(origin, sha256))
                        return vh_error_set(err, -EEXIST,
                                            "%s exists and holds another image (hash %s, not %s): refused, "
                                            "not overwritten; push under another name or remove it there",
                                            path, hex, sha256);
                *ret_status = PUSH_PRESENT;
                *ret_path = TAKE_PTR(path);
                return 0;
        }
        /* The same content under another name: any valid sidecar says so. */
        DIR *d = opendir(dir);
        if (d) {
                struct dirent *de;
                while ((de = readdir(d))) {
                        const char *n = de->d_name;
                        size_t len = strlen(n);
                        if (n[0] == '.' || !endswith(n, PUSH_SIDECAR_SUFFIX))
                                continue;
                        _cleanup_free_ char *img = NULL;
                        if (asprintf(&img, "%s/%.*s", dir, (int) (len - strlen(PUSH_SIDECAR_SUFFIX)), n) < 0)
                                break;
                        struct stat st;
                        struct push_sidecar sc;
                        if (stat(img, &st) < 0 || !S_ISREG(st.st_mode) || sidecar_load(img, &st, &sc) < 0)
                                continue;
                        if (streq(sc.sha256, sha256) || streq(sc.origin, sha256)) {
                                closedir(d);
                                *ret_status = PUSH_PRESENT;
                                *ret_path = TAKE_PTR(img);
                                return 0;
                        }
                }
                closedir(d);
        }
        *ret_status = PUSH_ABSENT;
        *ret_path = TAKE_PTR(path);
        return 0;
}

int push_lookup(const struct vh_context *ctx, const char *dir, const char *name, const char *sha256, unsigned flags,
                enum push_lookup_status *ret_status, char **ret_path, struct vh_error *err) {
        if (!push_name_is_valid(name))
                return vh_error_set(err, -EINVAL, "invalid image name '%s' (1..%d of [A-Za-z0-9._+-], not "
                                                  "starting with '.' or '-')", name, PUSH_NAME_MAX);
        if (!push_sha256_is_valid(sha256))
                return vh_error_set(err, -EINVAL, "invalid hash '%s'", sha256);
        _cleanup_free_ char *d = NULL;
        int r = resolve_dir(ctx, dir, flags & PUSH_READ_ONLY, &d, err);
        if (r < 0)
                return r;
        return lookup_in(d, name, sha256, flags, ret_status, ret_path, err);
}

struct receive_state {
        push_read_fn read_fn;
        void *userdata;
        int fd;
        struct hasher h;   /* from the header on; covers [0, h.pos) */
};

static ssize_t receive_read(void *buf, size_t len, void *userdata) {
        struct receive_state *s = userdata;
        return s->read_fn(buf, len, s->userdata);
}

static int receive_size(uint64_t size, void *userdata) {
        struct receive_state *s = userdata;
        /* Sparse: the declared size costs no blocks. */
        if (ftruncate(s->fd, (off_t) size) < 0)
                return negative_errno();
        return hasher_init(&s->h, size);
}

static int receive_data(uint64_t offset, const void *data, size_t len, void *userdata) {
        struct receive_state *s = userdata;
        /* Records come in order: what lies between them is zeros. */
        hasher_zeros(&s->h, offset - s->h.pos);
        hasher_update(&s->h, data, len);
        size_t done = 0;
        while (done < len) {
                ssize_t n = pwrite(s->fd, (const char *) data + done, len - done, (off_t) (offset + done));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return negative_errno();
                done += (size_t) n;
        }
        return 0;
}

/* Writes 'backing' into the qcow2 copy at 'path' unless it names that
 * already: 1 when it changed the file. */
static int rewrite_backing(const char *path, const char *backing, const char *backing_format,
                           struct vh_error *err) {
        enum vh_image_format fmt;
        int r = vh_image_probe(path, &fmt, err);
        if (r < 0)
                return r;
        if (fmt != VH_IMAGE_FORMAT_QCOW2)
                return vh_error_set(err, -EINVAL, "the image has a backing file but is not qcow2");
        enum vh_image_format bfmt = streq(backing_format, "raw")     ? VH_IMAGE_FORMAT_RAW
                                    : streq(backing_format, "qcow2") ? VH_IMAGE_FORMAT_QCOW2
                                                                     : VH_IMAGE_FORMAT_PROBE;
        if (bfmt == VH_IMAGE_FORMAT_PROBE)
                return vh_error_set(err, -EINVAL, "unknown backing format '%s'", backing_format);
        struct vh_image_open_options o = { .format = VH_IMAGE_FORMAT_QCOW2,
                                           .flags = VH_IMAGE_OPEN_READ_WRITE | VH_IMAGE_OPEN_NO_BACKING };
        _cleanup_(vh_image_freep) struct vh_image *img = NULL;
        if ((r = vh_image_open(path, &o, &img, err)) < 0)
                return r;
        struct vh_image_info *info = NULL;
        if ((r = vh_image_get_info(img, &info, err)) < 0)
                return r;
        bool same = info->backing_filename && streq(info->backing_filename, backing) &&
                    info->backing_filename_format && streq(info->backing_filename_format, backing_format);
        vh_image_info_free(info);
        if (same)
                return 0;
        struct vh_image_rebase_options ro = { .backing_file = backing, .backing_format = bfmt, .unsafe = true };
        if ((r = vh_image_rebase(img, &ro, err)) < 0 || (r = vh_image_flush(img, err)) < 0)
                return r;
        return 1;
}

int push_receive(const struct vh_context *ctx, const struct push_receive_options *opts, push_read_fn read_fn,
                 void *userdata, char **ret_path, bool *ret_present, struct push_decode_stats *ret_stats,
                 struct vh_error *err) {
        if (!push_name_is_valid(opts->name))
                return vh_error_set(err, -EINVAL, "invalid image name '%s'", opts->name ? opts->name : "");
        if (!push_sha256_is_valid(opts->sha256))
                return vh_error_set(err, -EINVAL, "invalid hash '%s'", opts->sha256 ? opts->sha256 : "");
        if (opts->backing && (strlen(opts->backing) == 0 || strlen(opts->backing) > VH_IMAGE_MAX_BACKING_NAME ||
                              !opts->backing_format))
                return vh_error_set(err, -EINVAL, "invalid backing file name for %s", opts->name);
        _cleanup_free_ char *dir = NULL, *final = NULL, *tmp = NULL;
        int r = resolve_dir(ctx, opts->dir, false, &dir, err);
        if (r < 0)
                return r;
        clean_stale_temps(dir);
        if (asprintf(&final, "%s/%s", dir, opts->name) < 0 || asprintf(&tmp, "%s/.%s.push-XXXXXX", dir, opts->name) < 0)
                return -ENOMEM;
        /* Only what costs a stat before the stream: a receiver that hashes
         * a big file here reads nothing meanwhile, and the sender gives up
         * on a far side that takes no data (HOST_SSH_PIPE_IDLE_MS). A file
         * under NAME without a valid sidecar is hashed after the stream. */
        char hex[PUSH_SHA256_HEX + 1], origin[PUSH_SHA256_HEX + 1];
        bool name_taken = false;
        r = existing_known_hash(final, hex, origin, err);
        if (r < 0)
                return r;
        if (r == 1 && !streq(hex, opts->sha256) && !streq(origin, opts->sha256))
                return vh_error_set(err, -EEXIST, "%s exists and holds another image (hash %s): refused", final,
                                    hex);
        /* Present already (a push that died after the rename, or a race
         * with another push of it): the stream is not needed. */
        if (r == 1) {
                *ret_path = TAKE_PTR(final);
                if (ret_present)
                        *ret_present = true;
                return 0;
        }
        name_taken = r == 2;

        struct receive_state s = { .read_fn = read_fn, .userdata = userdata };
        s.fd = make_temp(tmp, strlen(tmp));
        if (s.fd < 0)
                return vh_error_set(err, s.fd, "cannot make and lock a temporary file in %s: %s", dir,
                                    strerror(-s.fd));
        struct push_decode_stats st = {};
        r = push_decode(receive_read, receive_size, receive_data, &s, PUSH_SIZE_MAX, &st, err);
        if (r < 0)
                goto fail;
        char got[PUSH_SHA256_HEX + 1];
        hasher_final(&s.h, got);
        if (!streq(got, opts->sha256)) {
                r = vh_error_set(err, -EBADMSG,
                                 "the copy of %s hashes to %s, not %s: damaged in transit, nothing kept",
                                 opts->name, got, opts->sha256);
                goto fail;
        }
        if (name_taken) {
                /* Hashed now that the sender has nothing left to send. */
                r = existing_holds(final, opts->sha256, err);
                if (r < 0)
                        goto fail;
                if (r > 0) {
                        r = 0;
                        goto present;
                }
        }
        struct push_sidecar sc = {};
        memcpy(sc.sha256, got, sizeof(got));
        if (opts->backing) {
                r = rewrite_backing(tmp, opts->backing, opts->backing_format, err);
                if (r < 0)
                        goto fail;
                if (r > 0) {
                        /* The file is no longer the bytes that were pushed:
                         * its sidecar says both (docs/hosts.md). */
                        memcpy(sc.origin, got, sizeof(got));
                        if ((r = push_hash_fd(s.fd, sc.sha256, err)) < 0)
                                goto fail;
                        origin_mark(s.fd, sc.origin, sc.sha256);
                }
        }
        struct stat fst;
        if (fsync(s.fd) < 0 || fchmod(s.fd, 0444) < 0 || fstat(s.fd, &fst) < 0) {
                r = vh_error_set(err, negative_errno(), "cannot store %s: %m", tmp);
                goto fail;
        }
        sc.size = (uint64_t) fst.st_size;
        sc.mtime_ns = stat_mtime_ns(&fst);
        sc.inode = (uint64_t) fst.st_ino;
        /* Never over another file: a push of the same name that won the race keeps its place. */
        if (renameat2(AT_FDCWD, tmp, AT_FDCWD, final, RENAME_NOREPLACE) < 0) {
                r = negative_errno();
                if (r == -EEXIST) {
                        /* Another push of the name got there first: the same
                         * content is a success (two pushes of one image at
                         * once), another is refused. */
                        r = existing_holds(final, opts->sha256, err);
                        if (r > 0) {
                                r = 0;
                                goto present;
                        }
                        if (r == 0)
                                r = vh_error_set(err, -EAGAIN, "%s came and went while %s was renamed to it: "
                                                               "push again", final, tmp);
                        goto fail;
                }
                r = vh_error_set(err, r, "cannot rename %s to %s: %s", tmp, final, strerror(-r));
                goto fail;
        }
        /* From here the image is complete; a sidecar that fails to appear
         * is computed again by the next lookup. */
        (void) sidecar_save(final, &sc);
        int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dfd >= 0) {
                (void) fsync(dfd);
                close(dfd);
        }
        close(s.fd);
        if (ret_stats)
                *ret_stats = st;
        *ret_path = TAKE_PTR(final);
        if (ret_present)
                *ret_present = false;
        return 0;
present:
        /* Another push put the same content under the name meanwhile. */
        hasher_done(&s.h);
        (void) unlink(tmp);
        close(s.fd);
        if (ret_stats)
                *ret_stats = st;
        *ret_path = TAKE_PTR(final);
        if (ret_present)
                *ret_present = true;
        return 0;
fail:
        hasher_done(&s.h);
        (void) unlink(tmp);
        close(s.fd);
        return r;
}

/* ---- The near side: encoding ---- */

static bool all_zero(const uint8_t *p, size_t n) {
        /* A zero prefix, then the buffer compared with itself shifted. */
        for (size_t i = 0; i < MIN(n, (size_t) 16); i++)
                if (p[i])
                        return false;
        return n <= 16 || memcmp(p, p + 16, n - 16) == 0;
}

struct encoder {
        push_write_fn write_fn;
        void *userdata;
        const struct push_encode_options *opts;
        struct push_encode_stats st;
        uint8_t *cbuf;
        size_t cbuf_size;
        unsigned backoff;
        bool corrupted;
#ifdef HAVE_ZSTD
        ZSTD_CCtx *cctx;
#endif
};

static int emit(struct encoder *e, const void *p, size_t n) {
        int r = e->write_fn(p, n, e->userdata);
        if (r < 0)
                return r;
        e->st.wire_bytes += n;
        return 0;
}

static int emit_record(struct encoder *e, uint64_t offset, uint8_t *data, size_t len) {
        if (e->opts->test_corrupt && !e->corrupted) {
                data[0] ^= 0xff;
                e->corrupted = true;
        }
        struct push_record rec = { .kind = PUSH_RECORD_RAW, .payload_len = (uint32_t) len, .offset = offset,
                                   .data_len = (uint32_t) len };
        const uint8_t *payload = data;
#ifdef HAVE_ZSTD
        if (!e->opts->no_compress && e->cctx) {
                if (e->backoff > 0)
                        e->backoff--;
                else {
                        size_t c = ZSTD_compressCCtx(e->cctx, e->cbuf, e->cbuf_size, data, len, 1);
                        /* Kept when it saves more than 10%: less is not worth
                         * the far side's time to decompress. */
                        if (!ZSTD_isError(c) && c < len - len / 10) {
                                rec.kind = PUSH_RECORD_ZSTD;
                                rec.payload_len = (uint32_t) c;
                                payload = e->cbuf;
                                e->st.compressed_records++;
                        } else
                                e->backoff = PUSH_COMPRESS_BACKOFF;
                }
        }
#endif
        uint8_t hdr[PUSH_RECORD_HEADER_SIZE];
        push_record_encode(&rec, hdr);
        int r = emit(e, hdr, sizeof(hdr));
        if (r < 0 || (r = emit(e, payload, rec.payload_len)) < 0)
                return r;
        e->st.records++;
        e->st.data_bytes += len;
        return 0;
}

int push_encode(int fd, push_write_fn write_fn, void *write_userdata, const struct push_encode_options *opts,
                struct push_encode_stats *ret_stats, struct vh_error *err) {
        static const struct push_encode_options no_opts = {};
        if (!opts)
                opts = &no_opts;
        struct stat st;
        if (fstat(fd, &st) < 0)
                return vh_error_set(err, negative_errno(), "cannot stat the image: %m");
        uint64_t size = (uint64_t) st.st_size;
        if (size > PUSH_SIZE_MAX)
                return vh_error_set(err, -EFBIG, "the image is larger than %" PRIu64 " bytes", PUSH_SIZE_MAX);
        struct encoder e = { .write_fn = write_fn, .userdata = write_userdata, .opts = opts };
        e.st.size = size;
        int r;
        /* The allocated total first, for the progress line's "of". */
        for (uint64_t off = 0; off < size;) {
                uint64_t start, end;
                if ((r = next_extent(fd, off, size, &start, &end)) < 0)
                        return vh_error_set(err, r, "cannot map the image's extents: %s", strerror(-r));
                if (r == 0)
                        break;
                e.st.allocated += end - start;
                off = end;
        }
        _cleanup_free_ uint8_t *buf = malloc(PUSH_RECORD_MAX);
        e.cbuf_size = payload_max();
        e.cbuf = malloc(e.cbuf_size);
        if (!buf || !e.cbuf) {
                free(e.cbuf);
                return -ENOMEM;
        }
#ifdef HAVE_ZSTD
        if (!opts->no_compress)
                e.cctx = ZSTD_createCCtx();
#endif
        uint8_t hdr[PUSH_HEADER_SIZE];
        push_header_encode(size, hdr);
        if ((r = emit(&e, hdr, sizeof(hdr))) < 0)
                goto write_failed;
        uint64_t done = 0;
        for (uint64_t off = 0; off < size;) {
                uint64_t start, end;
                r = next_extent(fd, off, size, &start, &end);
                if (r < 0) {
                        r = vh_error_set(err, r, "cannot map the image's extents: %s", strerror(-r));
                        goto out;
                }
                if (r == 0)
                        break;
                for (uint64_t p = start; p < end;) {
                        size_t n = (size_t) MIN(end - p, (uint64_t) PUSH_RECORD_MAX);
                        if ((r = pread_full(fd, buf, n, p)) < 0) {
                                r = vh_error_set(err, r, "cannot read the image at %" PRIu64 ": %s", p,
                                                 strerror(-r));
                                goto out;
                        }
                        /* Runs of non-zero blocks become records; zero blocks are left out. */
                        size_t i = 0;
                        while (i < n) {
                                size_t b = MIN((size_t) PUSH_ZERO_BLOCK, n - i);
                                if (all_zero(buf + i, b)) {
                                        i += b;
                                        continue;
                                }
                                size_t j = i + b;
                                while (j < n) {
                                        size_t bj = MIN((size_t) PUSH_ZERO_BLOCK, n - j);
                                        if (all_zero(buf + j, bj))
                                                break;
                                        j += bj;
                                }
                                if ((r = emit_record(&e, p + i, buf + i, j - i)) < 0)
                                        goto write_failed;
                                i = j;
                        }
                        p += n;
                        done += n;
                        if (opts->progress && opts->progress(done, e.st.allocated, e.st.wire_bytes, opts->userdata)) {
                                r = vh_error_set(err, -ECANCELED, "cancelled");
                                goto out;
                        }
                }
                off = end;
        }
        struct push_record end_rec = { .kind = PUSH_RECORD_END, .offset = size };
        uint8_t rh[PUSH_RECORD_HEADER_SIZE];
        push_record_encode(&end_rec, rh);
        if ((r = emit(&e, rh, sizeof(rh))) < 0)
                goto write_failed;
        if (ret_stats)
                *ret_stats = e.st;
        r = 0;
        goto out;
write_failed:
        r = vh_error_set(err, r, "cannot send the image: %s", strerror(-r));
out:
        if (ret_stats && r < 0)
                *ret_stats = e.st;
#ifdef HAVE_ZSTD
        ZSTD_freeCCtx(e.cctx);
#endif
        free(e.cbuf);
        return r;
}

/* ---- The near side: a chain to a host ---- */

void push_result_done(struct push_result *res) {
        for (size_t i = 0; i < res->n_layers; i++) {
                free(res->layers[i].local_path);
                free(res->layers[i].name);
                free(res->layers[i].remote_path);
        }
        free(res->layers);
        *res = (struct push_result) {};
}

/* "WORD PATH\n" from the far side: the word and a new copy of PATH
 * (absolute, one line). */
static int parse_answer(const char *out, const char *word, char **ret_path) {
        size_t w = strlen(word);
        const char *line = out;
        /* The answer is the last line that starts with a known word. */
        const char *found = NULL;
        while (line && *line) {
                if (strneq(line, word, w) && line[w] == ' ')
                        found = line + w + 1;
                line = strchr(line, '\n');
                if (line)
                        line++;
        }
        if (!found || found[0] != '/')
                return -EBADMSG;
        size_t n = strcspn(found, "\n");
        if (n > 4096)
                return -EBADMSG;
        char *p = strndup(found, n);
        if (!p)
                return -ENOMEM;
        *ret_path = p;
        return 0;
}

static void last_line_of(const char *s, char *buf, size_t size) {
        size_t len = strlen(s);
        while (len > 0 && (s[len - 1] == '\n' || s[len - 1] == '\r'))
                len--;
        size_t start = len;
        while (start > 0 && s[start - 1] != '\n')
                start--;
        /* The far side's own "vmhost: error: " is ours to say. */
        if (strneq(s + start, "vmhost: error: ", 15) && start + 15 <= len)
                start += 15;
        size_t n = MIN(len - start, size - 1);
        memcpy(buf, s + start, n);
        buf[n] = '\0';
}

static const char *base_name(const char *path) {
        const char *s = strrchr(path, '/');
        return s ? s + 1 : path;
}

/* The remote 'vmhost img receive' argv, NULL-terminated in 'a' (16 slots). */
static void receive_argv(const struct host_def *def, const struct push_options *opts, bool lookup, const char *name,
                         const char *sha256, const char *backing, const char *backing_format, char *a[16]) {
        size_t n = 0;
        a[n++] = (char *) host_def_vmhost(def);
        a[n++] = (char *) "img";
        a[n++] = (char *) "receive";
        if (lookup)
                a[n++] = (char *) "--lookup";
        if (lookup && opts->read_only)
                a[n++] = (char *) "--no-record";
        a[n++] = (char *) "--name";
        a[n++] = (char *) name;
        a[n++] = (char *) "--hash";
        a[n++] = (char *) sha256;
        if (opts->dir) {
                a[n++] = (char *) "--to";
                a[n++] = (char *) opts->dir;
        }
        if (backing) {
                a[n++] = (char *) "--backing";
                a[n++] = (char *) backing;
                a[n++] = (char *) "--backing-format";
                a[n++] = (char *) backing_format;
        }
        a[n] = NULL;
}

struct layer_progress {
        const struct push_options *opts;
        size_t layer, n_layers;
};

static int layer_progress(uint64_t done, uint64_t total, uint64_t wire, void *userdata) {
        struct layer_progress *lp = userdata;
        return lp->opts->progress(lp->layer, lp->n_layers, done, total, wire, lp->opts->userdata);
}

static int pipe_write(const void *buf, size_t len, void *userdata) {
        return host_ssh_pipe_write(userdata, buf, len);
}

/* Sends one layer: 'fd' open on it. */
static int send_layer(const struct vh_context *ctx, const struct host_def *def, const struct push_options *opts,
                      int fd, struct push_layer_result *L, size_t layer, size_t n_layers, const char *backing,
                      const char *backing_format, struct vh_error *err) {
        char *argv[16];
        receive_argv(def, opts, false, L->name, L->sha256, backing, backing_format, argv);
        struct host_ssh_pipe p = { .in_fd = -1, .out_fd = -1 };
        int r = host_ssh_pipe_start(ctx, def, argv, &p, err);
        if (r < 0)
                return r;
        struct layer_progress lp = { opts, layer, n_layers };
        struct push_encode_options eo = {
                .no_compress = opts->no_compress,
                .test_corrupt = opts->test_corrupt,
                .progress = opts->progress ? layer_progress : NULL,
                .userdata = &lp,
        };
        struct vh_error e = {};
        int sr = push_encode(fd, pipe_write, &p, &eo, &L->stats, &e);
        if (sr == -ECANCELED) {
                /* The far side sees its input end early and keeps nothing. */
                host_ssh_pipe_abort(&p);
                return vh_error_set(err, sr, "push of %s to host '%s' cancelled: nothing kept there", L->local_path,
                                    def->name);
        }
        if (sr < 0 && sr != -EPIPE && sr != -ECONNRESET && sr != -ETIMEDOUT) {
                host_ssh_pipe_abort(&p);
                return vh_error_set(err, sr, "push of %s to host '%s': %s", L->local_path, def->name,
                                    vh_error_message(&e, sr));
        }
        /* Even after a failed write: the far side's answer says why. */
        _cleanup_free_ char *out = NULL;
        struct vh_error fe = {};
        r = host_ssh_pipe_finish(def, &p, sr < 0 ? PUSH_STALL_ANSWER_MS : PUSH_FINISH_TIMEOUT_MS, PUSH_ANSWER_MAX, &out, &fe);
        if (r == -ECOMM && strstr(fe.msg, "no reason given"))
                /* ssh's 255 with nothing said: the remote command died of a
                 * signal, or the connection went. */
                return vh_error_set(err, -ECONNRESET,
                                    "the receiving vmhost on host '%s' died or the link was cut while %s was sent; "
                                    "nothing was kept under its name there: push again",
                                    def->name, L->local_path);
        if (r < 0 && sr == -ETIMEDOUT)
                /* The cause is the stall, not the short wait for an answer after it. */
                return vh_error_set(err, -ETIMEDOUT,
                                    "push of %s to host '%s' stalled: the far side took no data for %u s (a "
                                    "receiver that stopped reading, or a link that stopped moving), and gave no "
                                    "answer within %u s; nothing was kept under its name there",
                                    L->local_path, def->name, HOST_SSH_PIPE_IDLE_MS / 1000, PUSH_STALL_ANSWER_MS / 1000);
        if (r < 0)
                return vh_error_set(err, r, "push of %s: %s", L->local_path, vh_error_message(&fe, r));
        if (r != 0) {
                char line[512];
                last_line_of(out ? out : "", line, sizeof(line));
                return vh_error_set(err, r == 3 ? -EEXIST : r == 4 ? -EBADMSG : -EIO,
                                    "host '%s' did not take %s: %s", def->name, L->local_path,
                                    line[0] ? line : "no reason given");
        }
        /* A far side that found the content there (under the name before
         * the stream, or put there by another push meanwhile) answers
         * without reading the rest: a write that failed then is no error. */
        bool present = parse_answer(out, "present", &L->remote_path) == 0;
        if (!present && sr < 0)
                return vh_error_set(err, sr, "push of %s to host '%s': %s", L->local_path, def->name,
                                    vh_error_message(&e, sr));
        if (!present && parse_answer(out, "received", &L->remote_path) < 0)
                return vh_error_set(err, -EBADMSG, "host '%s' gave no path for %s: %s", def->name, L->local_path,
                                    out);
        L->sent = !present;
        return 0;
}

static int lookup_layer(const struct vh_context *ctx, const struct host_def *def, const struct push_options *opts,
                        struct push_layer_result *L, bool *ret_present, struct vh_error *err) {
        char *argv[16];
        receive_argv(def, opts, true, L->name ? L->name : base_name(L->local_path), L->sha256, NULL, NULL, argv);
        _cleanup_free_ char *out = NULL;
        int r = host_ssh_run(ctx, def, 0, argv, PUSH_LOOKUP_TIMEOUT_MS, PUSH_ANSWER_MAX, &out, err);
        if (r < 0)
                return r;
        if (r != 0) {
                char line[512];
                last_line_of(out ? out : "", line, sizeof(line));
                return vh_error_set(err, r == 3 ? -EEXIST : -EIO, "host '%s': %s", def->name,
                                    line[0] ? line : "the lookup failed");
        }
        if (parse_answer(out, "present", &L->remote_path) == 0) {
                *ret_present = true;
                return 0;
        }
        if (parse_answer(out, "absent", &L->remote_path) == 0) {
                *ret_present = false;
                return 0;
        }
        return vh_error_set(err, -EBADMSG, "host '%s' gave an unexpected answer to a lookup: %s", def->name, out);
}

int push_find(const struct vh_context *ctx, const struct host_def *def, const char *path, const char *dir,
              unsigned flags, char **ret_remote_path, struct vh_error *err) {
        struct push_layer_result L = { .local_path = (char *) path };
        char origin[PUSH_SHA256_HEX + 1];
        int r = image_hash_path(path, L.sha256, origin, !(flags & PUSH_READ_ONLY), err);
        if (r < 0)
                return r;
        const char *name = base_name(path);
        if (!push_name_is_valid(name))
                return vh_error_set(err, -EINVAL, "image name '%s' cannot be pushed (a file name of [A-Za-z0-9._+-])",
                                    name);
        struct push_options opts = { .dir = dir, .read_only = flags & PUSH_READ_ONLY };
        bool present = false;
        r = lookup_layer(ctx, def, &opts, &L, &present, err);
        if (r < 0)
                return r;
        if (!present) {
                free(L.remote_path);
                L.remote_path = NULL;
        }
        *ret_remote_path = L.remote_path;
        return 0;
}

/* The backing name to write into a copy at 'path' for a backing file at
 * 'backing': its name alone when both are in one directory (a relative
 * name is resolved against the overlay's directory), else absolute. */
static char *backing_name_for(const char *path, const char *backing) {
        size_t dl = (size_t) (base_name(path) - path), bl = (size_t) (base_name(backing) - backing);
        if (dl == bl && strneq(path, backing, dl))
                return strdup(base_name(backing));
        return strdup(backing);
}

/* Whether 'path' lies in the directory 'dir' or below it (both real paths). */
static bool path_is_below(const char *dir, const char *path) {
        size_t n = strlen(dir);
        return strneq(path, dir, n) && (path[n] == '/' || (n > 0 && dir[n - 1] == '/'));
}

/* The rule of push_options.format for layer 'li' (>= 1, backing first)
 * and its backing file 'li - 1'. */
static int check_probed_backing(const struct vh_image *const *layer_img, size_t n, size_t li,
                                bool top_probed, struct vh_error *err) {
        bool probed;
        if (li == n - 1)
                probed = top_probed;
        else {
                struct vh_image_info *info = NULL;
                int r = vh_image_get_info((struct vh_image *) layer_img[li + 1], &info, err);
                if (r < 0)
                        return r;
                probed = !info->backing_filename_format;
                vh_image_info_free(info);
        }
        if (!probed)
                return 0;
        const char *path = vh_image_filename(layer_img[li]), *backing = vh_image_filename(layer_img[li - 1]);
        _cleanup_free_ char *rp = realpath(path, NULL), *rb = realpath(backing, NULL);
        if (!rp || !rb)
                return vh_error_set(err, negative_errno(), "cannot resolve %s or its backing file %s: %m", path,
                                    backing);
        char *slash = strrchr(rp, '/');
        *slash = '\0';
        if (path_is_below(rp[0] ? rp : "/", rb))
                return 0;
        return vh_error_set(err, -EPERM,
                            "%s looks like qcow2 (its format was only probed) and names the backing file %s, "
                            "outside its directory: not sent. A raw disk whose guest wrote a qcow2 header "
                            "looks like that; say -f raw to push it as the raw file it is, or -f qcow2 if it "
                            "is a qcow2 image whose chain you mean to push",
                            path, backing);
}

/* The name there of layer 'li' (backing first; its hash known): 'name',
 * unless a layer above it (the top under 'top_name' if given) or one
 * below takes that already: then NAME.HASH8.EXT (before the last '.'). */
static int layer_name(const struct push_result *res, size_t li, const char *name, const char *top_name,
                      char **ret) {
        size_t n = res->n_layers;
        bool taken = false;
        for (size_t j = li + 1; j < n && !taken; j++) {
                const char *above = j == n - 1 && top_name ? top_name : base_name(res->layers[j].local_path);
                taken = streq(above, name);
        }
        for (size_t j = 0; j < li && !taken; j++)
                taken = streq(res->layers[j].name, name);
        char *p;
        if (!taken)
                p = strdup(name);
        else {
                const char *dot = strrchr(name, '.');
                size_t stem = dot && dot != name ? (size_t) (dot - name) : strlen(name);
                if (asprintf(&p, "%.*s.%.8s%s", (int) stem, name, res->layers[li].sha256, name + stem) < 0)
                        p = NULL;
        }
        if (!p)
                return -ENOMEM;
        *ret = p;
        return 0;
}

int push_image(const struct vh_context *ctx, const struct host_def *def, const char *path,
               const struct push_options *opts, struct push_result *ret, struct vh_error *err) {
        struct vh_image_open_options oo = { .format = opts->format_given ? opts->format : VH_IMAGE_FORMAT_PROBE };
        _cleanup_(vh_image_freep) struct vh_image *img = NULL;
        int r = vh_image_open(path, &oo, &img, err);
        if (r < 0)
                return r;
        struct push_result res = {};
        size_t n = 0;
        for (struct vh_image *i = img; i; i = vh_image_backing(i))
                n++;
        res.layers = calloc(n, sizeof(*res.layers));
        if (!res.layers)
                return -ENOMEM;
        res.n_layers = n;
        /* Backing first: an overlay arrives only after what it names. */
        size_t k = n;
        for (struct vh_image *i = img; i; i = vh_image_backing(i)) {
                struct push_layer_result *L = &res.layers[--k];
                L->local_path = strdup(vh_image_filename(i));
                if (!L->local_path) {
                        r = -ENOMEM;
                        goto fail;
                }
        }
        k = n;
        const struct vh_image *layer_img[VH_IMAGE_MAX_CHAIN_DEPTH + 2];
        for (struct vh_image *i = img; i && k > 0; i = vh_image_backing(i))
                layer_img[--k] = i;

        for (size_t li = 1; li < n; li++)
                if ((r = check_probed_backing(layer_img, n, li, !opts->format_given, err)) < 0)
                        goto fail;

        for (size_t li = 0; li < n; li++) {
                struct push_layer_result *L = &res.layers[li];
                const char *name = li == n - 1 && opts->name ? opts->name : base_name(L->local_path);
                if (!push_name_is_valid(name)) {
                        r = vh_error_set(err, -EINVAL,
                                         "cannot push %s: its name '%s' is not a valid image name there (1..%d of "
                                         "[A-Za-z0-9._+-], not starting with '.' or '-'); copy or rename it",
                                         L->local_path, name, PUSH_NAME_MAX);
                        goto fail;
                }
                _cleanup_close_ int fd = open(L->local_path, O_RDONLY | O_CLOEXEC);
                if (fd < 0) {
                        r = vh_error_set(err, negative_errno(), "cannot open %s: %m", L->local_path);
                        goto fail;
                }
                if (!vh_image_is_file(layer_img[li], fd)) {
                        r = vh_error_set(err, -ESTALE, "%s was replaced while it was being pushed", L->local_path);
                        goto fail;
                }
                if ((r = image_hash_fd(L->local_path, fd, L->sha256, NULL, true, err)) < 0)
                        goto fail;
                if ((r = layer_name(&res, li, name, opts->name, &L->name)) < 0)
                        goto fail;
                bool present = false;
                if ((r = lookup_layer(ctx, def, opts, L, &present, err)) < 0)
                        goto fail;
                if (present)
                        continue;
                _cleanup_free_ char *backing = NULL;
                const char *bfmt = NULL;
                if (li > 0) {
                        /* Where the far side has the layer below, as the copy will see it. */
                        backing = backing_name_for(L->remote_path, res.layers[li - 1].remote_path);
                        if (!backing) {
                                r = -ENOMEM;
                                goto fail;
                        }
                        bfmt = vh_image_format_to_string(vh_image_get_format(layer_img[li - 1]));
                }
                free(L->remote_path);
                L->remote_path = NULL;
                if ((r = send_layer(ctx, def, opts, fd, L, li, n, backing, bfmt, err)) < 0)
                        goto fail;
        }
        *ret = res;
        return 0;
fail:
        push_result_done(&res);
        return r;
}
