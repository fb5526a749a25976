/* tests/unit/test-push.c: img push's framing (encoder and decoder, and the
 * decoder's refusals of malformed streams, table-driven), sidecars, and a
 * receive into a directory from a stream in memory: the hash check, the
 * refusal of another image under the name, stale temporary files. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "host/push.h"
#include "test.h"

/* A growing buffer that the encoder writes and the decoder reads. */
struct membuf {
        uint8_t *data;
        size_t len, cap, pos;
};

static int mem_write(const void *buf, size_t len, void *userdata) {
        struct membuf *m = userdata;
        if (m->len + len > m->cap) {
                size_t cap = (m->len + len) * 2;
                uint8_t *d = realloc(m->data, cap);
                if (!d)
                        return -ENOMEM;
                m->data = d;
                m->cap = cap;
        }
        memcpy(m->data + m->len, buf, len);
        m->len += len;
        return 0;
}

static ssize_t mem_read(void *buf, size_t len, void *userdata) {
        struct membuf *m = userdata;
        /* Odd sizes, so that reads split headers and payloads. */
        size_t n = len < 7777 ? len : 7777;
        if (n > m->len - m->pos)
                n = m->len - m->pos;
        memcpy(buf, m->data + m->pos, n);
        m->pos += n;
        return (ssize_t) n;
}

/* The decoded image, in memory. */
struct sink {
        struct membuf *in;
        uint8_t *img;
        uint64_t size;
};

static int sink_size(uint64_t size, void *userdata) {
        struct sink *s = userdata;
        s->size = size;
        s->img = calloc(1, size ? size : 1);
        return s->img ? 0 : -ENOMEM;
}

static int sink_data(uint64_t offset, const void *data, size_t len, void *userdata) {
        struct sink *s = userdata;
        if (offset + len > s->size)
                return -EOVERFLOW;
        memcpy(s->img + offset, data, len);
        return 0;
}

static ssize_t sink_read(void *buf, size_t len, void *userdata) {
        struct sink *s = userdata;
        return mem_read(buf, len, s->in);
}

/* A sparse file: text (compressible) at 0 with a 64 KiB zero block
 * inside, a hole, incompressible data, a hole to the end. */
#define IMG_SIZE (8u << 20)
#define RND_OFF (3u << 20)
#define RND_LEN ((1u << 20) + 4096)
static int make_image(const char *path, uint8_t **ret_content) {
        uint8_t *c = calloc(1, IMG_SIZE);
        uint32_t x = 12345;
        for (size_t i = 0; i < (2u << 20); i++)
                c[i] = "vmhost pushes images\n"[i % 21];
        memset(c + (1u << 20), 0, 64 * 1024);
        for (size_t i = RND_OFF; i < RND_OFF + RND_LEN; i++) {
                x = x * 1103515245u + 12345u;
                c[i] = (uint8_t) (x >> 16);
        }
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0 || ftruncate(fd, IMG_SIZE) < 0 || pwrite(fd, c, 2u << 20, 0) < 0 ||
            pwrite(fd, c + RND_OFF, RND_LEN, RND_OFF) < 0) {
                free(c);
                return -1;
        }
        *ret_content = c;
        return fd;
}

/* The tree hash from its definition (docs/hosts.md, "Pushing images"):
 * SHA-256 of the tag, the size as u64 big endian, and each 1 MiB block's
 * SHA-256. */
static void tree_hash_reference(const uint8_t *data, uint64_t size, char hex[PUSH_SHA256_HEX + 1]) {
        EVP_MD_CTX *outer = EVP_MD_CTX_new();
        EVP_DigestInit_ex(outer, EVP_sha256(), NULL);
        EVP_DigestUpdate(outer, "vmhost-sha256-tree-1m\n", 22);
        uint8_t be[8];
        for (int i = 0; i < 8; i++)
                be[i] = (uint8_t) (size >> (56 - 8 * i));
        EVP_DigestUpdate(outer, be, 8);
        for (uint64_t off = 0; off < size; off += 1u << 20) {
                uint8_t md[32];
                unsigned n = 0;
                size_t len = size - off < (1u << 20) ? (size_t) (size - off) : 1u << 20;
                EVP_Digest(data + off, len, md, &n, EVP_sha256(), NULL);
                EVP_DigestUpdate(outer, md, 32);
        }
        uint8_t md[32];
        unsigned n = 0;
        EVP_DigestFinal_ex(outer, md, &n);
        EVP_MD_CTX_free(outer);
        for (int i = 0; i < 32; i++)
                snprintf(hex + 2 * i, 3, "%02x", md[i]);
}

TEST(push_encode_decode_roundtrip) {
        char path[512];
        snprintf(path, sizeof(path), "%s/img.raw", test_tmpdir());
        uint8_t *content = NULL;
        int fd = make_image(path, &content);
        CHECK(fd >= 0);
        if (fd < 0)
                return;
        for (int compress = 0; compress < 2; compress++) {
                struct membuf m = {};
                struct push_encode_options eo = { .no_compress = !compress };
                struct push_encode_stats es = {};
                struct vh_error err = {};
                CHECK_EQ_INT(push_encode(fd, mem_write, &m, &eo, &es, &err), 0);
                CHECK_EQ_U64(es.size, IMG_SIZE);
                /* The holes are not read; the zero block is not sent. */
                CHECK(es.allocated < IMG_SIZE / 2);
                CHECK_EQ_U64(es.data_bytes, (1u << 20) + 4096 + (2u << 20) - 64 * 1024);
                if (compress) {
                        CHECK(es.compressed_records > 0);
                        CHECK(es.wire_bytes < es.data_bytes);
                } else {
                        CHECK_EQ_INT(es.compressed_records, 0);
                        CHECK(es.wire_bytes > es.data_bytes && es.wire_bytes < es.data_bytes + 4096);
                }
                CHECK_EQ_U64(es.wire_bytes, m.len);
                struct sink s = { .in = &m };
                struct push_decode_stats ds = {};
                CHECK_EQ_INT(push_decode(sink_read, sink_size, sink_data, &s, PUSH_SIZE_MAX, &ds, &err), 0);
                CHECK_EQ_U64(ds.size, IMG_SIZE);
                CHECK_EQ_U64(ds.data_bytes, es.data_bytes);
                CHECK_EQ_U64(ds.wire_bytes, m.len);
                CHECK(s.img && memcmp(s.img, content, IMG_SIZE) == 0);
                free(s.img);
                free(m.data);
        }
        /* The hash of the sparse file equals the hash of its bytes, and is
         * the tree hash of docs/hosts.md, computed here from its definition. */
        char h1[PUSH_SHA256_HEX + 1], h2[PUSH_SHA256_HEX + 1];
        struct vh_error err = {};
        CHECK_EQ_INT(push_hash_fd(fd, h1, &err), 0);
        char dense[512];
        snprintf(dense, sizeof(dense), "%s/dense.raw", test_tmpdir());
        int dfd = open(dense, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        CHECK(dfd >= 0 && write(dfd, content, IMG_SIZE) == IMG_SIZE);
        CHECK_EQ_INT(push_hash_fd(dfd, h2, &err), 0);
        CHECK_STREQ(h1, h2);
        char ref[PUSH_SHA256_HEX + 1];
        tree_hash_reference(content, IMG_SIZE, ref);
        CHECK_STREQ(h1, ref);
        /* A size that ends inside a block: the last block is short. */
        CHECK(ftruncate(dfd, IMG_SIZE - 1000) == 0);
        CHECK_EQ_INT(push_hash_fd(dfd, h2, &err), 0);
        tree_hash_reference(content, IMG_SIZE - 1000, ref);
        CHECK_STREQ(h2, ref);
        close(dfd);
        close(fd);
        free(content);
}

/* A stream built record by record for the refusal table. */
static void put_header(struct membuf *m, uint64_t size) {
        uint8_t h[PUSH_HEADER_SIZE];
        push_header_encode(size, h);
        mem_write(h, sizeof(h), m);
}

static void put_record(struct membuf *m, int kind, uint32_t payload_len, uint64_t offset, uint32_t data_len,
                       const void *payload) {
        uint8_t h[PUSH_RECORD_HEADER_SIZE];
        struct push_record r = { .kind = kind, .payload_len = payload_len, .offset = offset, .data_len = data_len };
        push_record_encode(&r, h);
        mem_write(h, sizeof(h), m);
        if (payload)
                mem_write(payload, payload_len, m);
}

static void put_end(struct membuf *m, uint64_t size) {
        put_record(m, PUSH_RECORD_END, 0, size, 0, NULL);
}

TEST(push_decode_refuses) {
        static uint8_t data[8192];
        memset(data, 'x', sizeof(data));
        static const struct {
                const char *what;
                int expect;
                const char *msg;
        } cases[] = {
                { "good", 0, NULL },
                { "bad magic", -EBADMSG, "magic" },
                { "size past limit", -EBADMSG, "past the limit" },
                { "record past size", -EBADMSG, "within the size" },
                { "overlap", -EBADMSG, "is not after" },
                { "zero length", -EBADMSG, "data length 0" },
                { "too long", -EBADMSG, "is not within" },
                { "raw payload mismatch", -EBADMSG, "payload length" },
                { "unknown kind", -EBADMSG, "unknown kind" },
                { "reserved", -EBADMSG, "reserved" },
                { "truncated header", -EPIPE, "before its header" },
                { "truncated record", -EPIPE, "inside record" },
                { "no end record", -EPIPE, "before its end record" },
                { "bytes after end", -EBADMSG, "after the end" },
                { "end offset", -EBADMSG, "end record" },
                { "bad zstd", -EBADMSG, "compressed" },
                { "offset overflow", -EBADMSG, "within the size" },
        };
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
                struct membuf m = {};
                const char *w = cases[i].what;
                if (streq(w, "bad magic")) {
                        put_header(&m, 4096);
                        m.data[0] = 'X';
                        put_end(&m, 4096);
                } else if (streq(w, "size past limit")) {
                        put_header(&m, (1u << 30) + 1);
                        put_end(&m, (1u << 30) + 1);
                } else if (streq(w, "truncated header")) {
                        put_header(&m, 4096);
                        m.len = 5;
                } else {
                        put_header(&m, 65536);
                        if (streq(w, "good") || streq(w, "bytes after end") || streq(w, "no end record")) {
                                put_record(&m, PUSH_RECORD_RAW, 100, 0, 100, data);
                                put_record(&m, PUSH_RECORD_RAW, 100, 4096, 100, data);
                        } else if (streq(w, "record past size"))
                                put_record(&m, PUSH_RECORD_RAW, 8192, 60000, 8192, data);
                        else if (streq(w, "offset overflow"))
                                put_record(&m, PUSH_RECORD_RAW, 100, UINT64_MAX - 50, 100, data);
                        else if (streq(w, "overlap")) {
                                put_record(&m, PUSH_RECORD_RAW, 100, 1000, 100, data);
                                put_record(&m, PUSH_RECORD_RAW, 100, 1050, 100, data);
                        } else if (streq(w, "zero length"))
                                put_record(&m, PUSH_RECORD_RAW, 0, 0, 0, data);
                        else if (streq(w, "too long"))
                                put_record(&m, PUSH_RECORD_RAW, 0, 0, PUSH_RECORD_MAX + 1, NULL);
                        else if (streq(w, "raw payload mismatch"))
                                put_record(&m, PUSH_RECORD_RAW, 50, 0, 100, data);
                        else if (streq(w, "unknown kind"))
                                put_record(&m, 9, 100, 0, 100, data);
                        else if (streq(w, "reserved")) {
                                put_record(&m, PUSH_RECORD_RAW, 100, 0, 100, data);
                                m.data[PUSH_HEADER_SIZE + 2] = 1;
                        } else if (streq(w, "truncated record")) {
                                put_record(&m, PUSH_RECORD_RAW, 100, 0, 100, data);
                                m.len -= 10;
                        } else if (streq(w, "bad zstd"))
                                put_record(&m, PUSH_RECORD_ZSTD, 100, 0, 100, data);
                        if (streq(w, "end offset"))
                                put_end(&m, 4096);
                        else if (!streq(w, "no end record") && !streq(w, "truncated record"))
                                put_end(&m, 65536);
                        if (streq(w, "bytes after end"))
                                mem_write("z", 1, &m);
                }
                struct sink s = { .in = &m };
                struct vh_error err = {};
                int r = push_decode(sink_read, sink_size, sink_data, &s, 1u << 30, NULL, &err);
                if (r != cases[i].expect)
                        test_fail(__FILE__, __LINE__, "%s: %d, not %d (%s)", w, r, cases[i].expect, err.msg);
                else if (cases[i].msg && !strstr(err.msg, cases[i].msg))
                        test_fail(__FILE__, __LINE__, "%s: message '%s' lacks '%s'", w, err.msg, cases[i].msg);
                if (r == 0)
                        CHECK(s.img && memcmp(s.img + 4096, data, 100) == 0);
                free(s.img);
                free(m.data);
        }
}

TEST(push_sidecar_and_names) {
        struct push_sidecar sc = { .size = 42, .mtime_ns = 1700000000123456789ull, .inode = 99 };
        memset(sc.sha256, 'a', PUSH_SHA256_HEX);
        char *t = push_sidecar_format(&sc, "base.qcow2");
        struct push_sidecar back;
        CHECK(t && push_sidecar_parse(t, &back) == 0);
        CHECK_STREQ(back.sha256, sc.sha256);
        CHECK_EQ_U64(back.mtime_ns, sc.mtime_ns);
        CHECK_STREQ(back.origin, "");
        free(t);
        memset(sc.origin, 'b', PUSH_SHA256_HEX);
        t = push_sidecar_format(&sc, "o.qcow2");
        CHECK(t && push_sidecar_parse(t, &back) == 0 && streq(back.origin, sc.origin));
        free(t);
        static const struct {
                const char *text;
                int expect;
        } bad[] = {
                { "", -EBADMSG },
                { "zz  x\n", -EBADMSG },
                /* A sha256sum file: someone else's. */
                { "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa  x\n", -EBADMSG },
                /* The old plain SHA-256 sidecar: ours, recomputed. */
                { "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa  x\n# vmhost-push: size=1 mtime-ns=1 "
                  "inode=1\n", -EPROTONOSUPPORT },
                { "vmhost-hash 1\nalgorithm=sha256\n", -EPROTONOSUPPORT },
                { "vmhost-hash 2\nalgorithm=sha256\nhash=x\n", -EPROTONOSUPPORT },
                { "vmhost-hash 2\nalgorithm=vmhost-sha256-tree-1m\nhash=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
                  "AAAAAAAAAAAA\nfile=x size=1 mtime-ns=1 inode=1\n", -EBADMSG },
                { "vmhost-hash 2\nalgorithm=vmhost-sha256-tree-1m\nhash=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                  "aaaaaaaaaaaa\nfile=x size=1 mtime-ns=1\n", -EBADMSG },
                { "vmhost-hash 2\nalgorithm=vmhost-sha256-tree-1m\nhash=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                  "aaaaaaaaaaaa\nfile=x size=1 mtime-ns=1 inode=1 junk\n", -EBADMSG },
                { "vmhost-hash 2\nalgorithm=vmhost-sha256-tree-1m\nhash=aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
                  "aaaaaaaaaaaa\nfile=x size=1 mtime-ns=1 inode=1\norigin=zz\n", -EBADMSG },
        };
        for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
                if (push_sidecar_parse(bad[i].text, &back) != bad[i].expect)
                        test_fail(__FILE__, __LINE__, "sidecar %zu: not %d", i, bad[i].expect);
        CHECK(push_name_is_valid("base.qcow2"));
        CHECK(push_name_is_valid("debian-12+x_1.raw"));
        CHECK(!push_name_is_valid(".hidden"));
        CHECK(!push_name_is_valid("-opt"));
        CHECK(!push_name_is_valid("a/b"));
        CHECK(!push_name_is_valid("x;touch y"));
        CHECK(!push_name_is_valid("$(id)"));
        CHECK(!push_name_is_valid("a.vmhost-hash"));
        CHECK(push_name_is_valid("a.sha256"));
        CHECK(!push_name_is_valid(""));
}

static size_t count_temps(const char *dir) {
        size_t n = 0;
        DIR *d = opendir(dir);
        struct dirent *de;
        while (d && (de = readdir(d)))
                n += strstr(de->d_name, ".push-") != NULL;
        if (d)
                closedir(d);
        return n;
}

TEST(push_receive_into_dir) {
        char src[512], dir[512], final[600];
        snprintf(src, sizeof(src), "%s/src.raw", test_tmpdir());
        snprintf(dir, sizeof(dir), "%s/far", test_tmpdir());
        snprintf(final, sizeof(final), "%s/img.raw", dir);
        uint8_t *content = NULL;
        int fd = make_image(src, &content);
        CHECK(fd >= 0);
        if (fd < 0)
                return;
        char hex[PUSH_SHA256_HEX + 1];
        struct vh_error err = {};
        CHECK_EQ_INT(push_image_hash(src, hex, NULL, &err), 0);
        /* The sidecar is written and then trusted: a bogus hash in it is
         * believed while the file's size, mtime and inode match. */
        char sc_path[600];
        snprintf(sc_path, sizeof(sc_path), "%s.vmhost-hash", src);
        CHECK(access(sc_path, F_OK) == 0);

        /* A stale temp of a dead writer goes; the damaged stream leaves nothing. */
        mkdir(dir, 0755);
        char stale[700];
        snprintf(stale, sizeof(stale), "%s/.img.raw.push-dead00", dir);
        int sfd = open(stale, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
        CHECK(sfd >= 0 && fsetxattr(sfd, "user.vmhost.push-temp", "1", 1, 0) == 0);
        close(sfd);
        /* Files of others that merely look alike stay. */
        static const char *const theirs[] = { ".git.push-options", ".bashrc.push-backup", ".img.raw.push-abc",
                                              ".img.raw.push-abcdefg", "..push-abcdef", ".a b.push-abcdef" };
        for (size_t i = 0; i < sizeof(theirs) / sizeof(theirs[0]); i++) {
                char p[800];
                snprintf(p, sizeof(p), "%s/%s", dir, theirs[i]);
                close(open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0600));
        }
        struct membuf m = {};
        struct push_encode_options bad = { .test_corrupt = true };
        CHECK_EQ_INT(push_encode(fd, mem_write, &m, &bad, NULL, &err), 0);
        struct push_receive_options ro = { .dir = dir, .name = "img.raw", .sha256 = hex };
        char *out = NULL;
        int r = push_receive(test_ctx(), &ro, mem_read, &m, &out, NULL, NULL, &err);
        CHECK_EQ_INT(r, -EBADMSG);
        CHECK(strstr(err.msg, "damaged in transit") != NULL);
        CHECK(access(final, F_OK) < 0);
        CHECK(access(stale, F_OK) < 0);
        for (size_t i = 0; i < sizeof(theirs) / sizeof(theirs[0]); i++) {
                char p[800];
                snprintf(p, sizeof(p), "%s/%s", dir, theirs[i]);
                if (access(p, F_OK) < 0)
                        test_fail(__FILE__, __LINE__, "%s was removed", theirs[i]);
                unlink(p);
        }
        CHECK_EQ_INT(count_temps(dir), 0);
        free(m.data);

        /* A stream cut short leaves nothing either. */
        m = (struct membuf) {};
        CHECK_EQ_INT(push_encode(fd, mem_write, &m, NULL, NULL, &err), 0);
        size_t full = m.len;
        m.len = full / 2;
        CHECK_EQ_INT(push_receive(test_ctx(), &ro, mem_read, &m, &out, NULL, NULL, &err), -EPIPE);
        CHECK(access(final, F_OK) < 0);
        CHECK_EQ_INT(count_temps(dir), 0);

        /* The whole stream: the copy, read-only, with its sidecar. */
        m.len = full;
        m.pos = 0;
        struct push_decode_stats ds = {};
        CHECK_EQ_INT(push_receive(test_ctx(), &ro, mem_read, &m, &out, NULL, &ds, &err), 0);
        CHECK(out && streq(out, final));
        free(out);
        out = NULL;
        struct stat st;
        CHECK(stat(final, &st) == 0 && (st.st_mode & 07777) == 0444 && st.st_size == IMG_SIZE);
        CHECK((uint64_t) st.st_blocks * 512 < IMG_SIZE / 2);
        char got[PUSH_SHA256_HEX + 1];
        CHECK_EQ_INT(push_image_hash(final, got, NULL, &err), 0);
        CHECK_STREQ(got, hex);
        enum push_lookup_status ls;
        CHECK_EQ_INT(push_lookup(test_ctx(), dir, "img.raw", hex, 0, &ls, &out, &err), 0);
        CHECK(ls == PUSH_PRESENT && out && streq(out, final));
        free(out);
        out = NULL;
        /* Under another name it is found by its hash. */
        CHECK_EQ_INT(push_lookup(test_ctx(), dir, "other.raw", hex, 0, &ls, &out, &err), 0);
        CHECK(ls == PUSH_PRESENT && out && streq(out, final));
        free(out);
        out = NULL;
        /* Another image under that name is refused. */
        char other[PUSH_SHA256_HEX + 1];
        memset(other, 'c', PUSH_SHA256_HEX);
        other[PUSH_SHA256_HEX] = '\0';
        CHECK_EQ_INT(push_lookup(test_ctx(), dir, "img.raw", other, 0, &ls, &out, &err), -EEXIST);
        ro.sha256 = other;
        m.pos = 0;
        CHECK_EQ_INT(push_receive(test_ctx(), &ro, mem_read, &m, &out, NULL, NULL, &err), -EEXIST);
        CHECK(stat(final, &st) == 0 && st.st_size == IMG_SIZE);
        CHECK_EQ_INT(push_lookup(test_ctx(), dir, "new.raw", other, 0, &ls, &out, &err), 0);
        CHECK(ls == PUSH_ABSENT);
        free(out);
        free(m.data);
        close(fd);
        free(content);
}

/* A hole of a TiB, then data, then a hole to the end: hashed here and
 * received there without hashing the hole's zeros (plain SHA-256 took
 * ten minutes for it; the sender gives up on a receiver that reads
 * nothing for 30 s). */
TEST(push_sparse_tib_image) {
        char src[512], dir[512];
        snprintf(src, sizeof(src), "%s/tib.raw", test_tmpdir());
        snprintf(dir, sizeof(dir), "%s/far-tib", test_tmpdir());
        const uint64_t size = UINT64_C(1) << 40, at = (UINT64_C(1) << 40) - (UINT64_C(3) << 30) + 12345;
        int fd = open(src, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        CHECK(fd >= 0);
        if (fd < 0)
                return;
        if (ftruncate(fd, (off_t) size) < 0) {
                close(fd);
                test_skip("this filesystem takes no 1 TiB sparse file");
                return;
        }
        static uint8_t data[3 << 20];
        for (size_t i = 0; i < sizeof(data); i++)
                data[i] = (uint8_t) (i * 7 + 1);
        CHECK(pwrite(fd, data, sizeof(data), (off_t) at) == (ssize_t) sizeof(data));
        char hex[PUSH_SHA256_HEX + 1];
        struct vh_error err = {};
        CHECK_EQ_INT(push_hash_fd(fd, hex, &err), 0);
        struct membuf m = {};
        CHECK_EQ_INT(push_encode(fd, mem_write, &m, NULL, NULL, &err), 0);
        struct push_receive_options ro = { .dir = dir, .name = "tib.raw", .sha256 = hex };
        char *out = NULL;
        CHECK_EQ_INT(push_receive(test_ctx(), &ro, mem_read, &m, &out, NULL, NULL, &err), 0);
        struct stat st;
        CHECK(out && stat(out, &st) == 0 && (uint64_t) st.st_size == size);
        char got[PUSH_SHA256_HEX + 1];
        CHECK(out && push_image_hash(out, got, NULL, &err) == 0 && streq(got, hex));
        if (out)
                unlink(out);
        free(out);
        free(m.data);
        close(fd);
        unlink(src);
}

/* A reader that, halfway through the stream, puts the same content under
 * the name (as a second push of the same image that renamed first). */
struct racing_read {
        struct membuf *m;
        const char *done_copy, *final;
        bool raced;
};

static ssize_t racing_read(void *buf, size_t len, void *userdata) {
        struct racing_read *rr = userdata;
        if (!rr->raced && rr->m->pos > rr->m->len / 2) {
                rr->raced = true;
                if (link(rr->done_copy, rr->final) < 0)
                        return -errno;
        }
        return mem_read(buf, len, rr->m);
}

TEST(push_receive_same_image_twice_at_once) {
        char src[512], d1[512], d2[512], f1[600], f2[600];
        snprintf(src, sizeof(src), "%s/twice.raw", test_tmpdir());
        snprintf(d1, sizeof(d1), "%s/first", test_tmpdir());
        snprintf(d2, sizeof(d2), "%s/second", test_tmpdir());
        snprintf(f1, sizeof(f1), "%s/img.raw", d1);
        snprintf(f2, sizeof(f2), "%s/img.raw", d2);
        uint8_t *content = NULL;
        int fd = make_image(src, &content);
        CHECK(fd >= 0);
        if (fd < 0)
                return;
        char hex[PUSH_SHA256_HEX + 1];
        struct vh_error err = {};
        CHECK_EQ_INT(push_hash_fd(fd, hex, &err), 0);
        struct membuf m = {};
        CHECK_EQ_INT(push_encode(fd, mem_write, &m, NULL, NULL, &err), 0);
        struct push_receive_options ro = { .dir = d1, .name = "img.raw", .sha256 = hex };
        char *out = NULL;
        bool present = true;
        CHECK_EQ_INT(push_receive(test_ctx(), &ro, mem_read, &m, &out, &present, NULL, &err), 0);
        CHECK(!present);
        free(out);
        out = NULL;
        /* The second one finds the name taken at its rename: same content, a success. */
        mkdir(d2, 0755);
        m.pos = 0;
        struct racing_read rr = { .m = &m, .done_copy = f1, .final = f2 };
        ro.dir = d2;
        int r = push_receive(test_ctx(), &ro, racing_read, &rr, &out, &present, NULL, &err);
        if (r != 0)
                test_fail(__FILE__, __LINE__, "second receive: %d (%s)", r, err.msg);
        CHECK(rr.raced && present && out && streq(out, f2));
        CHECK_EQ_INT(count_temps(d2), 0);
        free(out);
        out = NULL;
        /* Another image put there meanwhile is still refused. */
        unlink(f2);
        char other[600];
        snprintf(other, sizeof(other), "%s/other", test_tmpdir());
        int ofd = open(other, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        CHECK(ofd >= 0 && write(ofd, "other", 5) == 5);
        close(ofd);
        m.pos = 0;
        rr = (struct racing_read) { .m = &m, .done_copy = other, .final = f2 };
        CHECK_EQ_INT(push_receive(test_ctx(), &ro, racing_read, &rr, &out, &present, NULL, &err), -EEXIST);
        CHECK(strstr(err.msg, "holds another image") != NULL);
        CHECK_EQ_INT(count_temps(d2), 0);
        free(m.data);
        close(fd);
        free(content);
}

/* IMAGE.sha256 is the user's (a sha256sum file): never touched; and a file
 * of the user's under the sidecar's own name is not replaced either. */
TEST(push_sidecar_spares_user_files) {
        char img[512], sum[600], sc[600];
        snprintf(img, sizeof(img), "%s/mine.raw", test_tmpdir());
        snprintf(sum, sizeof(sum), "%s.sha256", img);
        snprintf(sc, sizeof(sc), "%s.vmhost-hash", img);
        int fd = open(img, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        CHECK(fd >= 0 && write(fd, "disk", 4) == 4);
        close(fd);
        static const char user_sum[] = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  mine.raw\n";
        int sfd = open(sum, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        CHECK(sfd >= 0 && write(sfd, user_sum, strlen(user_sum)) == (ssize_t) strlen(user_sum));
        close(sfd);
        char hex[PUSH_SHA256_HEX + 1], buf[512] = "";
        struct vh_error err = {};
        CHECK_EQ_INT(push_image_hash(img, hex, NULL, &err), 0);
        sfd = open(sum, O_RDONLY | O_CLOEXEC);
        CHECK(sfd >= 0 && read(sfd, buf, sizeof(buf) - 1) > 0);
        close(sfd);
        CHECK_STREQ(buf, user_sum);
        CHECK(access(sc, F_OK) == 0);
        /* A user's file under IMAGE.vmhost-hash: left as it is. */
        unlink(sc);
        sfd = open(sc, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        CHECK(sfd >= 0 && write(sfd, "my notes\n", 9) == 9);
        close(sfd);
        char again[PUSH_SHA256_HEX + 1];
        CHECK_EQ_INT(push_image_hash(img, again, NULL, &err), 0);
        CHECK_STREQ(again, hex);
        memset(buf, 0, sizeof(buf));
        sfd = open(sc, O_RDONLY | O_CLOEXEC);
        CHECK(sfd >= 0 && read(sfd, buf, sizeof(buf) - 1) == 9);
        close(sfd);
        CHECK_STREQ(buf, "my notes\n");
}
