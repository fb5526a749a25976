/* tests/unit/test-image.c: unit tests for src/image/: qcow2 header
 * validation (table-driven: each bad field gives its own error), create,
 * reopen and read, backing chain resolution (relative names, loops,
 * depth), convert round trips, locks, what create and convert may replace
 * (vh_image_replace_check, table-driven), and interop with qemu-img and
 * qemu-io in both directions (skipped with a reason when they are not
 * installed). */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/macro.h"
#include "base/process.h"
#include "base/strutil.h"
#include "image/image-internal.h"
#include "image/qcow2.h"
#include "test.h"
#include "vmhost/image.h"

/* ---- helpers ---- */

static char *tpath(const char *name) {
        char *p = strdup_printf("%s/%s", test_tmpdir(), name);
        if (!p)
                abort();
        return p;
}

/* A path below the test directory, valid until the next call with the same
 * slot (no cleanup needed in tests). */
static const char *P(unsigned slot, const char *name) {
        static char *paths[16];
        free(paths[slot]);
        paths[slot] = tpath(name);
        return paths[slot];
}

static bool have(const char *prog) {
        return test_need_program(prog, "qemu-utils");
}

/* Runs a program; returns its exit status and keeps its output in
 * 'ret_out' (may be NULL). */
static int run(char **ret_out, const char *arg0, ...) {
        const char *argv[32];
        size_t n = 0;
        va_list ap;
        va_start(ap, arg0);
        for (const char *a = arg0; a && n < ELEMENTSOF(argv) - 1; a = va_arg(ap, const char *))
                argv[n++] = a;
        va_end(ap);
        argv[n] = NULL;
        char *out = NULL;
        int r = process_run(test_ctx(), (char *const *) argv, 120 * 1000 /* qemu-img/qemu-io: seconds */, 1 << 20, &out,
                            NULL);
        if (r != 0 && getenv("VERBOSE"))
                fprintf(stderr, "  (%s exited %d: %s)\n", arg0, r, out ? out : "");
        if (ret_out)
                *ret_out = out;
        else
                free(out);
        return r;
}

static int write_bytes(const char *path, const void *buf, size_t len) {
        int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        int r = image_pwrite_all(fd, buf, len, 0);
        close(fd);
        return r;
}

static int read_bytes(const char *path, uint8_t **ret, size_t *ret_len) {
        char *data;
        size_t len;
        int r = read_full_file(path, 256 << 20, &data, &len);
        if (r < 0)
                return r;
        *ret = (uint8_t *) data;
        *ret_len = len;
        return 0;
}

struct fill {
        uint64_t guest_cluster;
        uint8_t pattern;
};

/* Writes a qcow2 image with the internal writer, which (unlike create)
 * does not look at the backing file: that is how loops are made. */
static int write_qcow2(const char *path, uint64_t size, unsigned cluster_bits, const char *backing,
                       const char *backing_fmt, const struct fill *fills, size_t n_fills) {
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        struct qcow2_writer_params p = {
                .virtual_size = size,
                .cluster_bits = cluster_bits,
                .version = 3,
                .refcount_order = 4,
                .backing_file = backing,
                .backing_format = backing_fmt,
        };
        struct qcow2_writer *w = NULL;
        struct vh_error err = {};
        int r = qcow2_writer_new(fd, &p, &w, &err);
        uint8_t *buf = malloc((size_t) 1 << cluster_bits);
        for (size_t i = 0; r >= 0 && i < n_fills; i++) {
                memset(buf, fills[i].pattern, (size_t) 1 << cluster_bits);
                r = qcow2_writer_add_cluster(w, fills[i].guest_cluster, buf, &err);
        }
        if (r >= 0)
                r = qcow2_writer_finish(w, &err);
        if (r < 0)
                fprintf(stderr, "  write_qcow2(%s): %s\n", path, vh_error_message(&err, r));
        free(buf);
        qcow2_writer_free(w);
        close(fd);
        return r;
}

static struct vh_image *open_image(const char *path, unsigned flags, struct vh_error *err) {
        struct vh_image_open_options o = { .format = VH_IMAGE_FORMAT_PROBE, .flags = flags };
        struct vh_image *img = NULL;
        int r = vh_image_open(path, &o, &img, err);
        if (r < 0)
                return NULL;
        return img;
}

static bool all_bytes(const uint8_t *p, size_t len, uint8_t v) {
        for (size_t i = 0; i < len; i++)
                if (p[i] != v)
                        return false;
        return true;
}

/* ---- header validation ---- */

/* A valid image (64 KiB clusters, 1 GiB) in memory, as the writer makes
 * it, with a backing file name when 'backing' is set. */
static uint8_t *good_image(bool backing, size_t *ret_len) {
        const char *path = P(0, backing ? "good-b.qcow2" : "good.qcow2");
        if (write_qcow2(path, 1ULL << 30, 16, backing ? "base.qcow2" : NULL, backing ? "qcow2" : NULL, NULL, 0) < 0)
                return NULL;
        uint8_t *buf;
        if (read_bytes(path, &buf, ret_len) < 0)
                return NULL;
        return buf;
}

enum { W8 = 1, W32 = 4, W64 = 8 };

struct header_case {
        const char *name;
        bool backing;        /* start from the image with a backing file */
        size_t offset;       /* field to change */
        int width;
        uint64_t value;
        int error;           /* expected return */
        const char *message; /* expected in the error message */
};

static const struct header_case header_cases[] = {
        { "good", false, 0, 0, 0, 0, NULL },
        { "good with backing", true, 0, 0, 0, 0, NULL },
        { "magic", false, 0, W32, 0x514649fc, -EINVAL, "magic" },
        { "version 1", false, 4, W32, 1, -EOPNOTSUPP, "version 1" },
        { "version 4", false, 4, W32, 4, -EOPNOTSUPP, "version 4" },
        { "cluster_bits small", false, 20, W32, 8, -EINVAL, "cluster_bits 8" },
        { "cluster_bits large", false, 20, W32, 22, -EINVAL, "cluster_bits 22" },
        { "cluster_bits huge", false, 20, W32, 0xffffffff, -EINVAL, "cluster_bits" },
        { "header_length short", false, 100, W32, 96, -EINVAL, "header_length 96" },
        { "header_length unaligned", false, 100, W32, 108, -EINVAL, "header_length 108" },
        { "header_length past cluster", false, 100, W32, 65536 + 8, -EINVAL, "header_length" },
        { "crypt_method aes", false, 32, W32, 1, -EOPNOTSUPP, "encrypted" },
        { "crypt_method luks", false, 32, W32, 2, -EOPNOTSUPP, "crypt_method 2" },
        { "refcount_order", false, 96, W32, 7, -EINVAL, "refcount_order 7" },
        { "size too large", false, 24, W64, 1ULL << 63, -EFBIG, "size" },
        { "l1_size too small for size", false, 36, W32, 1, -EINVAL, "l1_size 1 is too small" },
        { "l1_size over limit", false, 36, W32, 0x10000000, -EFBIG, "l1_size" },
        { "l1_table_offset unaligned", false, 40, W64, 0x30200, -EINVAL, "l1_table_offset 0x30200 is not aligned" },
        { "l1_table_offset zero", false, 40, W64, 0, -EINVAL, "l1_table_offset is 0" },
        { "l1_table_offset past eof", false, 40, W64, 0x7fff0000, -EINVAL, "l1_table_offset 0x7fff0000" },
        { "refcount_table_offset unaligned", false, 48, W64, 0x10001, -EINVAL, "refcount_table_offset" },
        { "refcount_table_offset past eof", false, 48, W64, 1ULL << 40, -EINVAL, "refcount_table_offset" },
        { "refcount_table_clusters zero", false, 56, W32, 0, -EINVAL, "refcount_table_clusters is 0" },
        { "refcount_table_clusters huge", false, 56, W32, 0xffffffff, -EFBIG, "refcount_table_clusters" },
        { "nb_snapshots huge", false, 60, W32, 70000, -EINVAL, "nb_snapshots 70000" },
        { "snapshots_offset bad", false, 60, W32, 1, -EINVAL, "snapshots_offset is 0" },
        { "incompatible unknown bit", false, 72, W64, 1ULL << 40, -EOPNOTSUPP, "bit 40" },
        { "incompatible data file", false, 72, W64, 1ULL << 2, -EOPNOTSUPP, "external data file" },
        { "incompatible compression without type", false, 72, W64, 1ULL << 3, -EOPNOTSUPP, "compression_type 0" },
        { "compression_type without bit", false, 104, W8, 1, -EINVAL, "compression_type 1" },
        { "extended l2 with small clusters", false, 20, W32, 12, -EINVAL, "extended L2" },
        { "backing_file_size too long", true, 16, W32, 1024, -EINVAL, "backing_file_size 1024" },
        { "backing_file_offset past cluster", true, 8, W64, 65530, -EINVAL, "backing_file_offset" },
        { "backing_file_offset in header", true, 8, W64, 16, -EINVAL, "overlaps the header" },
        { "extension length", false, 116, W32, 0xfffffff0, -EINVAL, "header extension 0x6803f857" },
        { "backing format too long", true, 116, W32, 16, -EINVAL, "backing format extension" },
        { "dirty bit is fine read-only", false, 72, W64, 1, 0, NULL },
        { "corrupt bit is fine read-only", false, 72, W64, 2, 0, NULL },
        { "lazy refcounts", false, 80, W64, 1, 0, NULL },
};

static void put_field(uint8_t *buf, size_t offset, int width, uint64_t v) {
        if (width == W8)
                buf[offset] = (uint8_t) v;
        else if (width == W32)
                be32_store(buf + offset, (uint32_t) v);
        else if (width == W64)
                be64_store(buf + offset, v);
}

TEST(qcow2_header_table) {
        size_t len[2];
        uint8_t *base[2] = { good_image(false, &len[0]), good_image(true, &len[1]) };
        CHECK(base[0] && base[1]);
        if (!base[0] || !base[1])
                return;

        for (size_t i = 0; i < ELEMENTSOF(header_cases); i++) {
                const struct header_case *c = &header_cases[i];
                int b = c->backing ? 1 : 0;
                uint8_t *buf = malloc(len[b]);
                memcpy(buf, base[b], len[b]);
                put_field(buf, c->offset, c->width, c->value);
                if (streq(c->name, "extended l2 with small clusters"))
                        be64_store(buf + 72, QCOW2_INCOMPAT_EXTL2);

                struct qcow2_header h;
                struct vh_error err = {};
                size_t need = qcow2_header_need(buf, len[b], len[b]);
                int r = qcow2_header_parse(buf, need, len[b], &h, &err);
                if (r != c->error)
                        test_fail(__FILE__, __LINE__, "%s: got %d (%s), want %d", c->name, r, err.msg, c->error);
                else if (c->message && !strstr(err.msg, c->message))
                        test_fail(__FILE__, __LINE__, "%s: message \"%s\" lacks \"%s\"", c->name, err.msg, c->message);
                free(buf);
        }
        free(base[0]);
        free(base[1]);
}

TEST(qcow2_header_good_fields) {
        size_t len;
        _cleanup_free_ uint8_t *buf = good_image(true, &len);
        CHECK(buf);
        if (!buf)
                return;
        struct qcow2_header h;
        struct vh_error err = {};
        CHECK_EQ_INT(qcow2_header_parse(buf, 65536, len, &h, &err), 0);
        CHECK_EQ_INT(h.version, 3);
        CHECK_EQ_INT(h.cluster_bits, 16);
        CHECK_EQ_U64(h.size, 1ULL << 30);
        CHECK_EQ_INT(h.l1_size, 2);
        CHECK_EQ_INT(h.header_length, 112);
        CHECK_EQ_INT(h.refcount_order, 4);
        CHECK_STREQ(h.backing_file, "base.qcow2");
        CHECK_STREQ(h.backing_format, "qcow2");
        /* Not enough bytes: asks for more rather than guessing. */
        CHECK_EQ_INT(qcow2_header_parse(buf, 4096, len, &h, &err), -EAGAIN);
        CHECK_EQ_INT(qcow2_header_parse(buf, 50, len, &h, &err), -EINVAL);
        CHECK(strstr(err.msg, "too short"));
}

TEST(qcow2_header_unknown_feature_named_from_table) {
        size_t len;
        _cleanup_free_ uint8_t *buf = good_image(false, &len);
        if (!buf)
                return;
        /* Feature table at 112 (no backing format extension): entries at
         * 120. Rename entry 4 to bit 9, "frobnication", and set that bit. */
        CHECK_EQ_INT(be32_load(buf + 112), QCOW2_EXT_FEATURE_TABLE);
        uint8_t *e = buf + 120 + 4 * 48;
        e[1] = 9;
        memset(e + 2, 0, 46);
        memcpy(e + 2, "frobnication", 12);
        be64_store(buf + 72, 1ULL << 9);
        struct qcow2_header h;
        struct vh_error err = {};
        CHECK_EQ_INT(qcow2_header_parse(buf, 65536, len, &h, &err), -EOPNOTSUPP);
        CHECK(strstr(err.msg, "frobnication (bit 9)"));
}

/* Bad headers through the file API: the error names the file and the
 * field, and the file is not changed. */
TEST(image_open_bad_header_names_file_and_field) {
        size_t len;
        _cleanup_free_ uint8_t *buf = good_image(false, &len);
        if (!buf)
                return;
        be64_store(buf + 40, 0x30001); /* l1_table_offset */
        const char *path = P(1, "bad.qcow2");
        CHECK_EQ_INT(write_bytes(path, buf, len), 0);

        struct vh_error err = {};
        struct vh_image *img = open_image(path, 0, &err);
        CHECK(!img);
        CHECK(strstr(err.msg, path));
        CHECK(strstr(err.msg, "l1_table_offset"));
        img = open_image(path, VH_IMAGE_OPEN_READ_WRITE, &err);
        CHECK(!img);

        uint8_t *after = NULL;
        size_t after_len = 0;
        CHECK_EQ_INT(read_bytes(path, &after, &after_len), 0);
        CHECK(after && after_len == len && memcmp(after, buf, len) == 0);
        free(after);

        /* Truncated to a few bytes: still qcow2 by magic, clear error. */
        CHECK_EQ_INT(write_bytes(path, buf, 20), 0);
        CHECK(!open_image(path, 0, &err));
        CHECK(strstr(err.msg, "too short"));
}

/* Tables found after the header: an L1 entry pointing outside the file,
 * an unaligned data cluster, garbage compressed data. */
TEST(qcow2_bad_tables_fail_reads) {
        const char *path = P(1, "tables.qcow2");
        struct fill f[] = { { 0, 0xaa } };
        CHECK_EQ_INT(write_qcow2(path, 1 << 20, 16, NULL, NULL, f, 1), 0);
        uint8_t *buf = NULL;
        size_t len = 0;
        CHECK_EQ_INT(read_bytes(path, &buf, &len), 0);
        if (!buf)
                return;
        uint64_t l1_off = be64_load(buf + 40);
        uint64_t l2_off = be64_load(buf + l1_off) & QCOW2_L1E_OFFSET_MASK;
        uint8_t tmp[512];
        struct vh_error err = {};

        /* Good first. */
        struct vh_image *img = open_image(path, 0, &err);
        CHECK(img);
        CHECK_EQ_INT(vh_image_read(img, 0, tmp, sizeof(tmp), &err), 0);
        CHECK(all_bytes(tmp, sizeof(tmp), 0xaa));
        img = vh_image_free(img);

        static const struct {
                size_t where;   /* 1: L1 entry 0; 2: L2 entry 0 */
                uint64_t value;
                const char *message;
        } cases[] = {
                { 1, QCOW2_OFLAG_COPIED | (1ULL << 40), "L2 table offset 0x10000000000 is past the end" },
                { 1, 0x10200, "L2 table offset 0x10200 is not aligned" },
                { 2, QCOW2_OFLAG_COPIED | 0x10200, "data offset 0x10200 is not aligned" },
                { 2, QCOW2_OFLAG_COPIED | (1ULL << 45), "past the end of the file" },
                { 2, QCOW2_OFLAG_COPIED, "offset 0 (the header)" },
                { 2, QCOW2_OFLAG_COMPRESSED | 0x1000, "does not decompress" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                uint8_t *b = malloc(len);
                memcpy(b, buf, len);
                be64_store(b + (cases[i].where == 1 ? l1_off : l2_off), cases[i].value);
                CHECK_EQ_INT(write_bytes(path, b, len), 0);
                free(b);
                img = open_image(path, 0, &err);
                CHECK(img);
                if (!img)
                        continue;
                vh_error_clear(&err);
                int r = vh_image_read(img, 0, tmp, sizeof(tmp), &err);
                if (r >= 0 || !strstr(err.msg, cases[i].message) || !strstr(err.msg, path))
                        test_fail(__FILE__, __LINE__, "case %zu: r=%d msg=\"%s\", want \"%s\"", i, r, err.msg,
                                  cases[i].message);
                img = vh_image_free(img);
        }
        free(buf);
}

/* ---- probing ---- */

TEST(image_probe_formats) {
        static const struct {
                const char *content;
                size_t len;
                int r;
                int format;
        } cases[] = {
                { "hello world", 11, 0, VH_IMAGE_FORMAT_RAW },
                { "", 0, 0, VH_IMAGE_FORMAT_RAW },
                { "QFI\xfb\0\0\0\x01", 8, -EOPNOTSUPP, 0 },
                { "QFI\xfb\0\0\0\x03", 8, 0, VH_IMAGE_FORMAT_QCOW2 },
                { "KDMV\x01\0\0\0", 8, -EOPNOTSUPP, 0 },
                { "vhdxfile", 8, -EOPNOTSUPP, 0 },
                { "QED\0", 4, -EOPNOTSUPP, 0 },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const char *path = P(1, "probe.img");
                CHECK_EQ_INT(write_bytes(path, cases[i].content, cases[i].len), 0);
                enum vh_image_format f = -1;
                struct vh_error err = {};
                int r = vh_image_probe(path, &f, &err);
                if (r != cases[i].r || (r == 0 && (int) f != cases[i].format))
                        test_fail(__FILE__, __LINE__, "case %zu: r=%d f=%d (%s)", i, r, (int) f, err.msg);
        }
        struct vh_error err = {};
        enum vh_image_format f;
        CHECK_EQ_INT(vh_image_probe(P(1, "missing.img"), &f, &err), -ENOENT);
        CHECK(strstr(err.msg, "missing.img"));
        CHECK_EQ_INT(vh_image_format_from_string("qcow2"), VH_IMAGE_FORMAT_QCOW2);
        CHECK_EQ_INT(vh_image_format_from_string("vmdk"), -EINVAL);
}

/* ---- create, reopen, read ---- */

TEST(image_create_reopen_read) {
        static const struct {
                enum vh_image_format format;
                uint64_t size, want_size;
                uint32_t cluster_size;
                unsigned version;
                unsigned refcount_bits;
        } cases[] = {
                { VH_IMAGE_FORMAT_QCOW2, 64 << 20, 64 << 20, 0, 0, 0 },
                { VH_IMAGE_FORMAT_QCOW2, 1000, 1024, 0, 0, 0 }, /* rounded up to 512 */
                { VH_IMAGE_FORMAT_QCOW2, 10ULL << 30, 10ULL << 30, 512, 0, 0 },
                { VH_IMAGE_FORMAT_QCOW2, 3 << 20, 3 << 20, 2 << 20, 2, 16 },
                { VH_IMAGE_FORMAT_QCOW2, 1ULL << 40, 1ULL << 40, 0, 3, 1 },
                { VH_IMAGE_FORMAT_RAW, 5 << 20, 5 << 20, 0, 0, 0 },
                { VH_IMAGE_FORMAT_RAW, 513, 1024, 0, 0, 0 },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                const char *path = P(1, "new.img");
                struct vh_image_create_options o = {
                        .format = cases[i].format,
                        .size = cases[i].size,
                        .cluster_size = cases[i].cluster_size,
                        .version = cases[i].version,
                        .refcount_bits = cases[i].refcount_bits,
                };
                struct vh_error err = {};
                int r = vh_image_create(path, &o, &err);
                if (r < 0) {
                        test_fail(__FILE__, __LINE__, "case %zu: create: %s", i, err.msg);
                        continue;
                }
                struct vh_image *img = open_image(path, 0, &err);
                if (!img) {
                        test_fail(__FILE__, __LINE__, "case %zu: open: %s", i, err.msg);
                        continue;
                }
                CHECK_EQ_INT(vh_image_get_format(img), cases[i].format);
                CHECK_EQ_U64(vh_image_virtual_size(img), cases[i].want_size);
                uint8_t buf[4096];
                memset(buf, 0xff, sizeof(buf));
                uint64_t at = cases[i].want_size - MIN(cases[i].want_size, (uint64_t) sizeof(buf));
                size_t n = (size_t) MIN(cases[i].want_size, (uint64_t) sizeof(buf));
                CHECK_EQ_INT(vh_image_read(img, at, buf, n, &err), 0);
                CHECK(all_bytes(buf, n, 0));
                /* Past the end is an error, not a short read. */
                CHECK_EQ_INT(vh_image_read(img, cases[i].want_size - 1, buf, 2, &err), -EINVAL);
                struct vh_image_extent e;
                CHECK_EQ_INT(vh_image_map(img, 0, UINT64_MAX, &e, &err), 0);
                CHECK(e.zero);
                vh_image_free(img);
        }
}

TEST(image_create_refuses) {
        struct vh_error err = {};
        /* The largest qcow2 size follows from the cluster size, as in
         * qemu-img: 2^22 L1 entries of cluster_size / 8 clusters each
         * (2 PiB with 64 KiB clusters); a sector more is refused. */
        struct vh_image_create_options o = { .format = VH_IMAGE_FORMAT_QCOW2, .size = (1ULL << 51) + 512 };
        CHECK_EQ_INT(vh_image_create(P(1, "big.qcow2"), &o, &err), -EFBIG);
        CHECK(strstr(err.msg, "too large for file format 'qcow2'"));
        CHECK(!file_exists(P(1, "big.qcow2")));
        o.size = 1ULL << 51;
        CHECK_EQ_INT(vh_image_create(P(1, "big.qcow2"), &o, &err), 0);
        struct vh_image *img = open_image(P(1, "big.qcow2"), 0, &err);
        CHECK(img && vh_image_virtual_size(img) == 1ULL << 51);
        vh_image_free(img);
        o.size = VH_IMAGE_MAX_VIRTUAL_SIZE + 1;
        CHECK_EQ_INT(vh_image_create(P(1, "big2.qcow2"), &o, &err), -EFBIG);

        o = (struct vh_image_create_options) { .format = VH_IMAGE_FORMAT_QCOW2, .size = 1 << 20, .cluster_size = 3000 };
        CHECK(vh_image_create(P(1, "x.qcow2"), &o, &err) < 0);
        CHECK(strstr(err.msg, "power of two"));

        o = (struct vh_image_create_options) { .format = VH_IMAGE_FORMAT_QCOW2, .size = 1 << 20, .version = 2,
                                               .lazy_refcounts = true };
        CHECK(vh_image_create(P(1, "x.qcow2"), &o, &err) < 0);
        CHECK(strstr(err.msg, "lazy_refcounts"));

        /* 512-byte clusters cannot map 1 TiB with a 32 MiB L1 table. */
        o = (struct vh_image_create_options) { .format = VH_IMAGE_FORMAT_QCOW2, .size = 1ULL << 40, .cluster_size = 512 };
        CHECK_EQ_INT(vh_image_create(P(1, "x.qcow2"), &o, &err), -EFBIG);

        /* Into a directory that does not exist: no stray files anywhere. */
        o = (struct vh_image_create_options) { .format = VH_IMAGE_FORMAT_RAW, .size = 1 << 20 };
        CHECK(vh_image_create(P(1, "nodir/x.img"), &o, &err) < 0);
        CHECK(strstr(err.msg, "nodir/x.img"));

        /* A long backing name does not fit next to the header in 512 bytes. */
        char longname[600];
        memset(longname, 'a', sizeof(longname) - 1);
        longname[sizeof(longname) - 1] = '\0';
        struct qcow2_writer_params p = { .virtual_size = 1 << 20, .cluster_bits = 9, .version = 3, .refcount_order = 4,
                                         .backing_file = longname, .backing_format = "qcow2" };
        CHECK_EQ_INT(qcow2_writer_params_check(&p, &err), -ENAMETOOLONG);
}

/* Writes 'len' bytes of 0x5a at 'offset' of the image at 'path'. */
static int put_data(const char *path, uint64_t offset, size_t len) {
        struct vh_error err = {};
        struct vh_image *img = open_image(path, VH_IMAGE_OPEN_READ_WRITE, &err);
        if (!img)
                return err.code ? err.code : -EIO;
        uint8_t *buf = malloc(len);
        int r = buf ? 0 : -ENOMEM;
        if (buf) {
                memset(buf, 0x5a, len);
                r = vh_image_write(img, offset, buf, len, &err);
        }
        if (r >= 0)
                r = vh_image_flush(img, &err);
        free(buf);
        vh_image_free(img);
        return r;
}

/* What may be replaced without consent: table-driven over the kinds of
 * existing file, each asked through vh_image_replace_check() without and
 * with replace_data. */
TEST(image_replace_check_table) {
        enum kind {
                NONE, ZERO_LENGTH, NEW_QCOW2, NEW_OVERLAY, PREALLOC_METADATA, SPARSE_RAW,
                QCOW2_DATA, OVERLAY_DATA, RAW_DATA, TEXT, SNAPSHOT_ONLY, BROKEN_QCOW2, DIRECTORY,
        };
        static const struct {
                enum kind kind;
                const char *name;
                int r;              /* without replace_data */
                int r_forced;       /* with it */
                const char *amount; /* in the message of a refusal */
        } cases[] = {
                { NONE, "none", 0, 0, NULL },
                { ZERO_LENGTH, "zero-length", 0, 0, NULL },
                { NEW_QCOW2, "new-qcow2", 0, 0, NULL },
                { NEW_OVERLAY, "new-overlay", 0, 0, NULL },
                { PREALLOC_METADATA, "prealloc-metadata", 0, 0, NULL },
                { SPARSE_RAW, "sparse-raw", 0, 0, NULL },
                { QCOW2_DATA, "qcow2-data", -EEXIST, 0, "it holds 128 KiB (131072 bytes) of data" },
                { OVERLAY_DATA, "overlay-data", -EEXIST, 0, "it holds 64 KiB (65536 bytes) of data" },
                { RAW_DATA, "raw-data", -EEXIST, 0, "it holds 1 MiB (1048576 bytes) of data" },
                { TEXT, "text", -EEXIST, 0, "it holds 6 bytes of data" },
                { SNAPSHOT_ONLY, "snapshot-only", -EEXIST, 0, "it holds 1 internal snapshot" },
                { BROKEN_QCOW2, "broken-qcow2", -EEXIST, 0, "that cannot be read as an image" },
                { DIRECTORY, "directory", -EINVAL, -EINVAL, "not a regular file" },
        };
        struct vh_error err = {};
        struct vh_image_create_options q = { .format = VH_IMAGE_FORMAT_QCOW2, .size = 4 << 20 };
        CHECK_EQ_INT(vh_image_create(P(0, "rbase.qcow2"), &q, &err), 0);
        CHECK_EQ_INT(put_data(P(0, "rbase.qcow2"), 0, 4 << 20), 0);

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                _cleanup_free_ char *path = strdup_printf("%s/r-%s", test_tmpdir(), cases[i].name);
                struct vh_image_create_options o = q;
                int r = 0;
                switch (cases[i].kind) {
                case NONE:
                        break;
                case ZERO_LENGTH:
                        r = write_bytes(path, "", 0);
                        break;
                case NEW_QCOW2:
                        r = vh_image_create(path, &o, &err);
                        break;
                case NEW_OVERLAY:
                        o.backing_file = "rbase.qcow2";
                        o.backing_format = VH_IMAGE_FORMAT_QCOW2;
                        r = vh_image_create(path, &o, &err);
                        break;
                case PREALLOC_METADATA:
                        o.preallocation = VH_IMAGE_PREALLOC_METADATA;
                        r = vh_image_create(path, &o, &err);
                        break;
                case SPARSE_RAW:
                        o.format = VH_IMAGE_FORMAT_RAW;
                        r = vh_image_create(path, &o, &err);
                        break;
                case QCOW2_DATA:
                        r = vh_image_create(path, &o, &err);
                        if (r >= 0)
                                r = put_data(path, 1 << 20, 128 << 10);
                        break;
                case OVERLAY_DATA:
                        /* Only its own cluster counts, not the base's 4 MiB;
                         * the base need not even be there. */
                        o.backing_file = "rbase.qcow2";
                        o.backing_format = VH_IMAGE_FORMAT_QCOW2;
                        r = vh_image_create(path, &o, &err);
                        if (r >= 0)
                                r = put_data(path, 0, 512);
                        break;
                case RAW_DATA:
                        o.format = VH_IMAGE_FORMAT_RAW;
                        r = vh_image_create(path, &o, &err);
                        if (r >= 0)
                                r = put_data(path, 2 << 20, 1 << 20);
                        break;
                case TEXT:
                        r = write_bytes(path, "hello\n", 6);
                        break;
                case SNAPSHOT_ONLY: {
                        r = vh_image_create(path, &o, &err);
                        struct vh_image *img = r >= 0 ? open_image(path, VH_IMAGE_OPEN_READ_WRITE, &err) : NULL;
                        r = img ? vh_image_snapshot_create(img, "s1", &err) : -EIO;
                        vh_image_free(img);
                        break;
                }
                case BROKEN_QCOW2: {
                        /* The qcow2 magic, then a version nobody knows. */
                        uint8_t hdr[4096] = { 'Q', 'F', 'I', 0xfb, 0, 0, 0, 9 };
                        r = write_bytes(path, hdr, sizeof(hdr));
                        break;
                }
                case DIRECTORY:
                        r = mkdir(path, 0700) < 0 ? -errno : 0;
                        break;
                }
                if (r < 0) {
                        test_fail(__FILE__, __LINE__, "%s: setup failed: %d %s", cases[i].name, r, err.msg);
                        continue;
                }
                if (cases[i].kind == OVERLAY_DATA)
                        CHECK_EQ_INT(rename(P(0, "rbase.qcow2"), P(1, "rbase.away")), 0);

                vh_error_clear(&err);
                r = vh_image_replace_check(path, false, &err);
                if (r != cases[i].r)
                        test_fail(__FILE__, __LINE__, "%s: %d, expected %d (%s)", cases[i].name, r, cases[i].r,
                                  err.msg);
                if (cases[i].amount && (!strstr(err.msg, cases[i].amount) || !strstr(err.msg, path)))
                        test_fail(__FILE__, __LINE__, "%s: message does not say \"%s\" and name the file: %s",
                                  cases[i].name, cases[i].amount, err.msg);
                r = vh_image_replace_check(path, true, &err);
                if (r != cases[i].r_forced)
                        test_fail(__FILE__, __LINE__, "%s (replace_data): %d, expected %d (%s)", cases[i].name, r,
                                  cases[i].r_forced, err.msg);

                if (cases[i].kind == OVERLAY_DATA)
                        CHECK_EQ_INT(rename(P(1, "rbase.away"), P(0, "rbase.qcow2")), 0);
        }
}

/* create and convert follow the check: what holds data is kept unless
 * replace_data says so; what another process holds is kept whatever
 * replace_data says. */
TEST(image_create_convert_replace) {
        const char *path = P(1, "again.qcow2");
        struct vh_error err = {};
        struct vh_image_create_options o = { .format = VH_IMAGE_FORMAT_QCOW2, .size = 1 << 20 };
        CHECK_EQ_INT(vh_image_create(path, &o, &err), 0);
        /* An empty image is replaced as qemu-img would. */
        o.size = 2 << 20;
        CHECK_EQ_INT(vh_image_create(path, &o, &err), 0);
        struct vh_image *img = open_image(path, 0, &err);
        CHECK(img && vh_image_virtual_size(img) == 2 << 20);
        vh_image_free(img);

        /* With data: refused, the image untouched. */
        CHECK_EQ_INT(put_data(path, 65536, 4096), 0);
        _cleanup_free_ uint8_t *before = NULL, *after = NULL;
        size_t before_len = 0, after_len = 0;
        CHECK_EQ_INT(read_bytes(path, &before, &before_len), 0);
        o.size = 3 << 20;
        CHECK_EQ_INT(vh_image_create(path, &o, &err), -EEXIST);
        CHECK(strstr(err.msg, path) && strstr(err.msg, "64 KiB (65536 bytes) of data"));
        CHECK_EQ_INT(vh_image_create(P(2, "src.qcow2"), &o, &err), 0);
        struct vh_image *src = open_image(P(2, "src.qcow2"), 0, &err);
        CHECK(src);
        struct vh_image_convert_options co = { .format = VH_IMAGE_FORMAT_QCOW2 };
        if (src)
                CHECK_EQ_INT(vh_image_convert(src, path, &co, &err), -EEXIST);
        CHECK(strstr(err.msg, path) && strstr(err.msg, "of data"));
        CHECK_EQ_INT(read_bytes(path, &after, &after_len), 0);
        CHECK(before && after && before_len == after_len && memcmp(before, after, before_len) == 0);

        /* Held by a reader (a VM's backing file, say): refused even with
         * replace_data, and the file untouched. */
        img = open_image(path, 0, &err);
        CHECK(img);
        o.replace_data = co.replace_data = true;
        CHECK_EQ_INT(vh_image_create(path, &o, &err), -EBUSY);
        CHECK(strstr(err.msg, "in use"));
        if (src)
                CHECK_EQ_INT(vh_image_convert(src, path, &co, &err), -EBUSY);
        CHECK_EQ_INT(vh_image_replace_check(path, true, &err), -EBUSY);
        vh_image_free(img);
        free(after);
        after = NULL;
        CHECK_EQ_INT(read_bytes(path, &after, &after_len), 0);
        CHECK(before && after && before_len == after_len && memcmp(before, after, before_len) == 0);

        /* With replace_data and no holder: replaced. */
        if (src)
                CHECK_EQ_INT(vh_image_convert(src, path, &co, &err), 0);
        img = open_image(path, 0, &err);
        CHECK(img && vh_image_virtual_size(img) == 3 << 20);
        vh_image_free(img);
        CHECK_EQ_INT(put_data(path, 0, 512), 0);
        o.size = 1 << 20;
        CHECK_EQ_INT(vh_image_create(path, &o, &err), 0);
        img = open_image(path, 0, &err);
        CHECK(img && vh_image_virtual_size(img) == 1 << 20);
        vh_image_free(img);
        vh_image_free(src);

        /* No temporary files left behind. */
        char *out = NULL;
        CHECK_EQ_INT(run(&out, "ls", "-A", test_tmpdir(), NULL), 0);
        CHECK(out && !strstr(out, ".tmp"));
        free(out);
}

TEST(image_locks) {
        const char *path = P(1, "locked.qcow2");
        struct vh_error err = {};
        struct vh_image_create_options o = { .format = VH_IMAGE_FORMAT_QCOW2, .size = 1 << 20 };
        CHECK_EQ_INT(vh_image_create(path, &o, &err), 0);

        struct vh_image *r1 = open_image(path, 0, &err);
        struct vh_image *r2 = open_image(path, 0, &err);
        CHECK(r1 && r2); /* readers share */
        CHECK(!open_image(path, VH_IMAGE_OPEN_READ_WRITE, &err));
        CHECK(strstr(err.msg, "in use"));
        vh_image_free(r1);
        vh_image_free(r2);

        struct vh_image *w = open_image(path, VH_IMAGE_OPEN_READ_WRITE, &err);
        CHECK(w);
        CHECK(!open_image(path, 0, &err));
        struct vh_image *peek = open_image(path, VH_IMAGE_OPEN_FORCE_SHARE, &err);
        CHECK(peek);
        vh_image_free(peek);

        /* QEMU sees our lock, and we see QEMU's. */
        if (have("qemu-img")) {
                CHECK(run(NULL, "qemu-img", "info", path, NULL) != 0);
                CHECK_EQ_INT(run(NULL, "qemu-img", "info", "-U", path, NULL), 0);
        }
        vh_image_free(w);
        if (have("qemu-img"))
                CHECK_EQ_INT(run(NULL, "qemu-img", "info", path, NULL), 0);
}

/* ---- backing chains ---- */

TEST(image_backing_path_table) {
        static const struct {
                const char *overlay, *name, *want;
                int r;
        } cases[] = {
                { "a.qcow2", "b.qcow2", "b.qcow2", 0 },
                { "sub/a.qcow2", "b.qcow2", "sub/b.qcow2", 0 },
                { "sub/a.qcow2", "../b.qcow2", "sub/../b.qcow2", 0 },
                { "/x/y/a.qcow2", "/abs/b.qcow2", "/abs/b.qcow2", 0 },
                { "/x/y/a.qcow2", "b.qcow2", "/x/y/b.qcow2", 0 },
                { "/a.qcow2", "b.qcow2", "/b.qcow2", 0 },
                { "a.qcow2", "dir/x:y.qcow2", "dir/x:y.qcow2", 0 },
                { "a.qcow2", "nbd:localhost:10809", NULL, -EOPNOTSUPP },
                { "a.qcow2", "json:{\"file\":{}}", NULL, -EOPNOTSUPP },
                { "a.qcow2", "", NULL, -EOPNOTSUPP },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char *p = NULL;
                int r = image_backing_path(cases[i].overlay, cases[i].name, &p);
                if (r != cases[i].r || (r == 0 && !streq(p, cases[i].want)))
                        test_fail(__FILE__, __LINE__, "case %zu: r=%d path=%s", i, r, p ? p : "(null)");
                free(p);
        }
}

TEST(image_chain_reads_through_layers) {
        /* base: 4 clusters of 64 KiB = 256 KiB; mid adds cluster 1; top
         * (512 KiB, bigger than base) adds cluster 2 and reads zeros past
         * the end of base. Relative names in a subdirectory. */
        CHECK_EQ_INT(mkdir_p(P(1, "d/sub"), 0755), 0);
        struct fill fb[] = { { 0, 0x10 }, { 1, 0x11 }, { 2, 0x12 }, { 3, 0x13 } };
        struct fill fm[] = { { 1, 0x21 } };
        struct fill ft[] = { { 2, 0x32 }, { 5, 0x35 } };
        CHECK_EQ_INT(write_qcow2(P(1, "d/base.qcow2"), 256 << 10, 16, NULL, NULL, fb, 4), 0);
        CHECK_EQ_INT(write_qcow2(P(1, "d/sub/mid.qcow2"), 256 << 10, 16, "../base.qcow2", "qcow2", fm, 1), 0);
        CHECK_EQ_INT(write_qcow2(P(1, "d/sub/top.qcow2"), 512 << 10, 16, "mid.qcow2", "qcow2", ft, 2), 0);

        struct vh_error err = {};
        struct vh_image *img = open_image(P(1, "d/sub/top.qcow2"), 0, &err);
        CHECK(img);
        if (!img) {
                fprintf(stderr, "  %s\n", err.msg);
                return;
        }
        CHECK(vh_image_backing(img) && vh_image_backing(vh_image_backing(img)));
        CHECK_STREQ(vh_image_filename(vh_image_backing(vh_image_backing(img))),
                    P(2, "d/sub/../base.qcow2"));

        static const uint8_t want[8] = { 0x10, 0x21, 0x32, 0x13, 0, 0x35, 0, 0 };
        uint8_t *buf = malloc(512 << 10);
        CHECK_EQ_INT(vh_image_read(img, 0, buf, 512 << 10, &err), 0);
        for (int c = 0; c < 8; c++)
                if (!all_bytes(buf + c * 65536, 65536, want[c]))
                        test_fail(__FILE__, __LINE__, "cluster %d is not 0x%02x", c, want[c]);
        /* A read across layers and cluster boundaries. */
        CHECK_EQ_INT(vh_image_read(img, 65536 - 3, buf, 6, &err), 0);
        CHECK(buf[0] == 0x10 && buf[2] == 0x10 && buf[3] == 0x21 && buf[5] == 0x21);
        free(buf);

        struct vh_image_extent e;
        CHECK_EQ_INT(vh_image_map(img, 0, UINT64_MAX, &e, &err), 0);
        CHECK(e.data && e.depth == 2 && e.length == 65536);
        CHECK_EQ_INT(vh_image_map(img, 4 * 65536, UINT64_MAX, &e, &err), 0);
        CHECK(e.zero && !e.data && e.length == 65536);

        struct vh_image_info *info = NULL;
        CHECK_EQ_INT(vh_image_get_info(img, &info, &err), 0);
        if (info) {
                CHECK_STREQ(info->backing_filename, "mid.qcow2");
                CHECK_STREQ(info->full_backing_filename, P(2, "d/sub/mid.qcow2"));
                CHECK_STREQ(info->backing_filename_format, "qcow2");
                CHECK_EQ_INT(info->cluster_size, 65536);
                vh_image_info_free(info);
        }
        char *json = NULL;
        CHECK_EQ_INT(vh_image_info_format(img, VH_IMAGE_INFO_JSON, true, &json, &err), 0);
        CHECK(json && json[0] == '[' && strstr(json, "\"full-backing-filename\""));
        free(json);
        vh_image_free(img);

        /* Without the chain, unallocated clusters read as zeros. */
        img = open_image(P(1, "d/sub/top.qcow2"), VH_IMAGE_OPEN_NO_BACKING, &err);
        CHECK(img && !vh_image_backing(img));
        uint8_t b2[16];
        CHECK_EQ_INT(vh_image_read(img, 0, b2, sizeof(b2), &err), 0);
        CHECK(all_bytes(b2, sizeof(b2), 0));
        vh_image_free(img);
}

TEST(image_chain_errors) {
        struct vh_error err = {};

        /* Missing backing file: the error names it. */
        CHECK_EQ_INT(write_qcow2(P(1, "orphan.qcow2"), 1 << 20, 16, "gone.qcow2", "qcow2", NULL, 0), 0);
        CHECK(!open_image(P(1, "orphan.qcow2"), 0, &err));
        CHECK(strstr(err.msg, "gone.qcow2"));
        CHECK(strstr(err.msg, "No such file"));

        /* Self loop and a two-image loop. */
        CHECK_EQ_INT(write_qcow2(P(1, "self.qcow2"), 1 << 20, 16, "self.qcow2", "qcow2", NULL, 0), 0);
        CHECK(!open_image(P(1, "self.qcow2"), 0, &err));
        CHECK_EQ_INT(err.code, -ELOOP);
        CHECK(strstr(err.msg, "loop"));
        CHECK_EQ_INT(write_qcow2(P(1, "l1.qcow2"), 1 << 20, 16, "l2.qcow2", "qcow2", NULL, 0), 0);
        CHECK_EQ_INT(write_qcow2(P(1, "l2.qcow2"), 1 << 20, 16, "l1.qcow2", "qcow2", NULL, 0), 0);
        CHECK(!open_image(P(1, "l1.qcow2"), 0, &err));
        CHECK(strstr(err.msg, "loop"));

        /* A FIFO as backing file is refused, not waited on. */
        CHECK_EQ_INT(mkfifo(P(1, "fifo"), 0600), 0);
        CHECK_EQ_INT(write_qcow2(P(1, "tofifo.qcow2"), 1 << 20, 16, "fifo", "raw", NULL, 0), 0);
        CHECK(!open_image(P(1, "tofifo.qcow2"), 0, &err));
        CHECK(strstr(err.msg, "not a regular file"));

        /* Protocol names are not followed. */
        CHECK_EQ_INT(write_qcow2(P(1, "proto.qcow2"), 1 << 20, 16, "nbd:127.0.0.1:10809", "raw", NULL, 0), 0);
        CHECK(!open_image(P(1, "proto.qcow2"), 0, &err));
        CHECK(strstr(err.msg, "protocol"));

        /* A backing format that is not ours. */
        CHECK_EQ_INT(write_qcow2(P(1, "vmdk.qcow2"), 1 << 20, 16, "x.vmdk", "vmdk", NULL, 0), 0);
        CHECK(!open_image(P(1, "vmdk.qcow2"), 0, &err));
        CHECK(strstr(err.msg, "vmdk"));
}

TEST(image_chain_depth_limit) {
        /* c0 -> c1 -> ... -> cN: depth N. N = 64 opens, N = 65 does not. */
        char name[32], next[32];
        const unsigned n = VH_IMAGE_MAX_CHAIN_DEPTH + 1;
        for (unsigned i = 0; i <= n; i++) {
                snprintf(name, sizeof(name), "c%u.qcow2", i);
                snprintf(next, sizeof(next), "c%u.qcow2", i + 1);
                bool last = i == n;
                CHECK_EQ_INT(write_qcow2(P(1, name), 1 << 20, 9, last ? NULL : next, last ? NULL : "qcow2", NULL, 0), 0);
        }
        struct vh_error err = {};
        struct vh_image *img = open_image(P(1, "c1.qcow2"), 0, &err); /* 64 below it */
        CHECK(img);
        if (!img)
                fprintf(stderr, "  %s\n", err.msg);
        vh_image_free(img);
        CHECK(!open_image(P(1, "c0.qcow2"), 0, &err)); /* 65 below it */
        CHECK_EQ_INT(err.code, -ELOOP);
        CHECK(strstr(err.msg, "deeper than 64"));
}

TEST(image_create_overlay_checks_backing) {
        struct vh_error err = {};
        CHECK_EQ_INT(mkdir_p(P(1, "vms"), 0755), 0);
        struct vh_image_create_options base = { .format = VH_IMAGE_FORMAT_QCOW2, .size = 3 << 20 };
        CHECK_EQ_INT(vh_image_create(P(1, "base.qcow2"), &base, &err), 0);

        /* Size taken from the backing file; name stored as given and
         * resolved relative to the overlay. */
        struct vh_image_create_options o = {
                .format = VH_IMAGE_FORMAT_QCOW2,
                .backing_file = "../base.qcow2",
                .backing_format = VH_IMAGE_FORMAT_QCOW2,
        };
        CHECK_EQ_INT(vh_image_create(P(1, "vms/ov.qcow2"), &o, &err), 0);
        struct vh_image *img = open_image(P(1, "vms/ov.qcow2"), 0, &err);
        CHECK(img && vh_image_virtual_size(img) == 3 << 20);
        CHECK(img && vh_image_backing(img));
        vh_image_free(img);

        /* A wrong format is recorded as given and the file opened as it,
         * as qemu-img does: the qcow2 file read as raw gives its length,
         * in whole sectors. The caller's probe tells the real format. */
        o.backing_format = VH_IMAGE_FORMAT_RAW;
        CHECK_EQ_INT(vh_image_create(P(1, "vms/ovraw.qcow2"), &o, &err), 0);
        struct stat st;
        CHECK_EQ_INT(stat(P(1, "base.qcow2"), &st), 0);
        img = open_image(P(1, "vms/ovraw.qcow2"), VH_IMAGE_OPEN_NO_BACKING, &err);
        CHECK(img && vh_image_virtual_size(img) == ALIGN_UP((uint64_t) st.st_size, (uint64_t) 512));
        vh_image_free(img);
        enum vh_image_format detected = VH_IMAGE_FORMAT_RAW;
        CHECK_EQ_INT(vh_image_backing_probe(P(1, "vms/ovraw.qcow2"), "../base.qcow2", &detected, &err), 0);
        CHECK_EQ_INT(detected, VH_IMAGE_FORMAT_QCOW2);
        /* -u: nothing opened, so the size and the format must be given. */
        struct vh_image_create_options u = {
                .format = VH_IMAGE_FORMAT_QCOW2,
                .backing_file = "later.qcow2",
                .backing_format = VH_IMAGE_FORMAT_QCOW2,
                .unsafe_backing = true,
        };
        CHECK(vh_image_create(P(1, "vms/ovu.qcow2"), &u, &err) < 0);
        CHECK(strstr(err.msg, "needs a size"));
        u.size = 1 << 20;
        CHECK_EQ_INT(vh_image_create(P(1, "vms/ovu.qcow2"), &u, &err), 0);
        u.backing_format = VH_IMAGE_FORMAT_PROBE;
        CHECK(vh_image_create(P(1, "vms/ovu2.qcow2"), &u, &err) < 0);
        CHECK(strstr(err.msg, "without backing format"));
        o.backing_format = VH_IMAGE_FORMAT_PROBE;
        CHECK(vh_image_create(P(1, "vms/ov2.qcow2"), &o, &err) < 0);
        CHECK(strstr(err.msg, "-F qcow2"));
        o.backing_format = VH_IMAGE_FORMAT_QCOW2;
        o.backing_file = "missing.qcow2";
        CHECK(vh_image_create(P(1, "vms/ov2.qcow2"), &o, &err) < 0);
        CHECK(strstr(err.msg, "missing.qcow2"));
        CHECK(!file_exists(P(1, "vms/ov2.qcow2")));
        o.backing_file = "ov2.qcow2";
        struct vh_image_create_options r = { .format = VH_IMAGE_FORMAT_RAW, .size = 1 << 20 };
        CHECK_EQ_INT(vh_image_create(P(1, "vms/ov2.qcow2"), &r, &err), 0);
        o.backing_format = VH_IMAGE_FORMAT_QCOW2;
        CHECK(vh_image_create(P(1, "vms/ov2.qcow2"), &o, &err) < 0);
        CHECK(strstr(err.msg, "own backing file"));
        /* Raw images cannot have one at all. */
        o.format = VH_IMAGE_FORMAT_RAW;
        o.backing_file = "../base.qcow2";
        CHECK(vh_image_create(P(1, "vms/ov3.img"), &o, &err) < 0);
}

/* ---- convert ---- */

/* A raw image with patterns, holes and zeros written as data. */
static void make_pattern_raw(const char *path, uint64_t size) {
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        CHECK(fd >= 0);
        CHECK_EQ_INT(ftruncate(fd, (off_t) size), 0);
        uint8_t buf[70000];
        for (size_t i = 0; i < sizeof(buf); i++)
                buf[i] = (uint8_t) (i * 7 + 3);
        CHECK_EQ_INT(image_pwrite_all(fd, buf, 5000, 0), 0);
        CHECK_EQ_INT(image_pwrite_all(fd, buf, sizeof(buf), 3 * 65536 - 100), 0);
        CHECK_EQ_INT(image_pwrite_all(fd, buf, 512, size - 512), 0);
        memset(buf, 0, sizeof(buf));
        CHECK_EQ_INT(image_pwrite_all(fd, buf, sizeof(buf), 1 << 20), 0); /* zeros as data */
        close(fd);
}

static bool files_equal(const char *a, const char *b) {
        uint8_t *x, *y;
        size_t xl, yl;
        if (read_bytes(a, &x, &xl) < 0)
                return false;
        if (read_bytes(b, &y, &yl) < 0) {
                free(x);
                return false;
        }
        bool eq = xl == yl && memcmp(x, y, xl) == 0;
        free(x);
        free(y);
        return eq;
}

static int convert(const char *src, const char *dst, enum vh_image_format f, uint32_t cluster_size) {
        struct vh_error err = {};
        struct vh_image *img = open_image(src, 0, &err);
        if (!img) {
                if (getenv("VERBOSE"))
                        fprintf(stderr, "  %s\n", err.msg);
                return err.code ? err.code : -EIO;
        }
        /* Callers convert into the same name again (cluster size loops). */
        struct vh_image_convert_options o = { .format = f, .cluster_size = cluster_size, .replace_data = true };
        int r = vh_image_convert(img, dst, &o, &err);
        if (r < 0 && getenv("VERBOSE"))
                fprintf(stderr, "  convert: %s\n", err.msg);
        vh_image_free(img);
        return r;
}

TEST(image_convert_round_trips) {
        const uint64_t size = (3 << 20) + 512;
        _cleanup_free_ char *raw = tpath("src.raw");
        make_pattern_raw(raw, size);

        CHECK_EQ_INT(convert(raw, P(2, "a.qcow2"), VH_IMAGE_FORMAT_QCOW2, 0), 0);
        CHECK_EQ_INT(convert(P(2, "a.qcow2"), P(3, "b.qcow2"), VH_IMAGE_FORMAT_QCOW2, 4096), 0);
        CHECK_EQ_INT(convert(P(3, "b.qcow2"), P(4, "c.raw"), VH_IMAGE_FORMAT_RAW, 0), 0);
        CHECK(files_equal(raw, P(4, "c.raw")));
        CHECK_EQ_INT(convert(raw, P(5, "d.raw"), VH_IMAGE_FORMAT_RAW, 0), 0);
        CHECK(files_equal(raw, P(5, "d.raw")));

        /* Zeros (holes and zeros written as data) are not allocated. */
        struct vh_error err = {};
        struct vh_image *img = open_image(P(2, "a.qcow2"), 0, &err);
        CHECK(img);
        if (img) {
                struct vh_image_extent e;
                CHECK_EQ_INT(vh_image_map(img, 1 << 20, UINT64_MAX, &e, &err), 0);
                CHECK(e.zero && !e.data);
                CHECK_EQ_INT(vh_image_map(img, 0, UINT64_MAX, &e, &err), 0);
                CHECK(e.data && e.length == 65536);
                vh_image_free(img);
        }
        struct stat st;
        CHECK_EQ_INT(stat(P(5, "d.raw"), &st), 0);
        CHECK((uint64_t) st.st_blocks * 512 < 300 * 1024); /* sparse */
        CHECK_EQ_U64((uint64_t) st.st_size, size);

        /* Through a backing chain into a standalone image. */
        struct vh_image_create_options o = { .format = VH_IMAGE_FORMAT_QCOW2,
                                             .backing_file = "a.qcow2",
                                             .backing_format = VH_IMAGE_FORMAT_QCOW2 };
        CHECK_EQ_INT(vh_image_create(P(1, "ov.qcow2"), &o, &err), 0);
        CHECK_EQ_INT(convert(P(1, "ov.qcow2"), P(2, "flat.raw"), VH_IMAGE_FORMAT_RAW, 0), 0);
        CHECK(files_equal(raw, P(2, "flat.raw")));

        /* Not onto itself nor onto its backing file. */
        CHECK(convert(P(1, "ov.qcow2"), P(2, "a.qcow2"), VH_IMAGE_FORMAT_QCOW2, 0) < 0);
        CHECK_EQ_INT(convert(P(2, "a.qcow2"), P(3, "e.raw"), VH_IMAGE_FORMAT_RAW, 0), 0);
        CHECK(files_equal(raw, P(3, "e.raw")));
}

TEST(image_convert_cache_modes) {
        static const struct {
                const char *name;
                int r;
                enum vh_image_cache mode;
        } names[] = {
                { "writeback", 0, VH_IMAGE_CACHE_WRITEBACK },   { "writethrough", 0, VH_IMAGE_CACHE_WRITEBACK },
                { "unsafe", 0, VH_IMAGE_CACHE_UNSAFE },         { "none", 0, VH_IMAGE_CACHE_NONE },
                { "directsync", 0, VH_IMAGE_CACHE_NONE },       { "", -EINVAL, 0 },
                { "Writeback", -EINVAL, 0 },                    { "none ", -EINVAL, 0 },
        };
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                enum vh_image_cache m = _VH_IMAGE_CACHE_MAX;
                CHECK_EQ_INT(vh_image_cache_from_string(names[i].name, &m), names[i].r);
                CHECK(names[i].r < 0 ? m == _VH_IMAGE_CACHE_MAX : m == names[i].mode);
        }
        enum vh_image_cache m = VH_IMAGE_CACHE_NONE;
        CHECK_EQ_INT(vh_image_cache_from_string(NULL, &m), -EINVAL);

        /* Every mode writes the same bytes, raw and qcow2, over a chain;
         * prefetching any range (past the end too) changes nothing. */
        const uint64_t size = (5 << 20) + 4096;
        _cleanup_free_ char *raw = tpath("cache.raw");
        make_pattern_raw(raw, size);
        struct vh_error err = {};
        struct vh_image_create_options co = { .format = VH_IMAGE_FORMAT_QCOW2,
                                              .backing_file = "cache.raw",
                                              .backing_format = VH_IMAGE_FORMAT_RAW };
        CHECK_EQ_INT(vh_image_create(P(1, "cache-ov.qcow2"), &co, &err), 0);
        for (enum vh_image_cache c = 0; c < _VH_IMAGE_CACHE_MAX; c++) {
                struct vh_image *img = open_image(P(1, "cache-ov.qcow2"), 0, &err);
                CHECK(img);
                if (!img)
                        continue;
                vh_image_prefetch(img, 0, UINT64_MAX);
                vh_image_prefetch(img, size - 1, 1 << 20);
                vh_image_prefetch(img, size + 1, 1);
                /* Each mode replaces the last one's output. */
                struct vh_image_convert_options q = { .format = VH_IMAGE_FORMAT_QCOW2, .cache = c, .replace_data = true };
                CHECK_EQ_INT(vh_image_convert(img, P(2, "cache-out.qcow2"), &q, &err), 0);
                struct vh_image_convert_options r = { .format = VH_IMAGE_FORMAT_RAW, .cache = c, .replace_data = true };
                CHECK_EQ_INT(vh_image_convert(img, P(3, "cache-out.raw"), &r, &err), 0);
                CHECK(files_equal(raw, P(3, "cache-out.raw")));
                vh_image_free(img);
                CHECK_EQ_INT(convert(P(2, "cache-out.qcow2"), P(4, "cache-back.raw"), VH_IMAGE_FORMAT_RAW, 0), 0);
                CHECK(files_equal(raw, P(4, "cache-back.raw")));
        }
        struct vh_image *img = open_image(raw, 0, &err);
        CHECK(img);
        if (img) {
                struct vh_image_convert_options bad = { .format = VH_IMAGE_FORMAT_RAW, .cache = _VH_IMAGE_CACHE_MAX };
                CHECK_EQ_INT(vh_image_convert(img, P(5, "bad.raw"), &bad, &err), -EINVAL);
                CHECK(access(P(5, "bad.raw"), F_OK) < 0);
                vh_image_free(img);
        }
}

TEST(image_create_preallocation) {
        static const struct {
                const char *name;
                int r;
                enum vh_image_prealloc mode;
        } names[] = {
                { "off", 0, VH_IMAGE_PREALLOC_OFF },       { "metadata", 0, VH_IMAGE_PREALLOC_METADATA },
                { "falloc", 0, VH_IMAGE_PREALLOC_FALLOC }, { "full", 0, VH_IMAGE_PREALLOC_FULL },
                { "Full", -EINVAL, 0 },                    { "", -EINVAL, 0 },
        };
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                enum vh_image_prealloc m = _VH_IMAGE_PREALLOC_MAX;
                CHECK_EQ_INT(vh_image_prealloc_from_string(names[i].name, &m), names[i].r);
                CHECK(names[i].r < 0 ? m == _VH_IMAGE_PREALLOC_MAX : m == names[i].mode);
        }

        /* Every cluster mapped, the data reading as zeros; falloc and full
         * also take the blocks. Sizes not a multiple of the cluster too. */
        const uint64_t size = (3 << 20) + 512;
        for (enum vh_image_prealloc m = 0; m < _VH_IMAGE_PREALLOC_MAX; m++) {
                struct vh_error err = {};
                /* falloc and full leave blocks that count as data for
                 * the next mode's create. */
                struct vh_image_create_options o = { .format = VH_IMAGE_FORMAT_QCOW2, .size = size,
                                                     .preallocation = m, .replace_data = true };
                CHECK_EQ_INT(vh_image_create(P(1, "pre.qcow2"), &o, &err), 0);
                struct vh_image *img = open_image(P(1, "pre.qcow2"), 0, &err);
                CHECK(img);
                if (!img)
                        continue;
                struct vh_image_extent e;
                CHECK_EQ_INT(vh_image_map(img, 0, UINT64_MAX, &e, &err), 0);
                CHECK_EQ_INT(e.data, m != VH_IMAGE_PREALLOC_OFF);
                CHECK_EQ_U64(e.length, size);
                uint8_t buf[4096];
                CHECK_EQ_INT(vh_image_read(img, size - sizeof(buf), buf, sizeof(buf), &err), 0);
                CHECK(image_buffer_is_zero(buf, sizeof(buf)));
                vh_image_free(img);
                struct stat st;
                CHECK_EQ_INT(stat(P(1, "pre.qcow2"), &st), 0);
                if (m >= VH_IMAGE_PREALLOC_FALLOC)
                        CHECK((uint64_t) st.st_blocks * 512 >= size);
                else
                        CHECK((uint64_t) st.st_blocks * 512 < (1 << 20));

                struct vh_image_create_options r = { .format = VH_IMAGE_FORMAT_RAW, .size = size,
                                                     .preallocation = m, .replace_data = true };
                int rr = vh_image_create(P(2, "pre.raw"), &r, &err);
                CHECK_EQ_INT(rr, m == VH_IMAGE_PREALLOC_METADATA ? -EINVAL : 0);
        }
        struct vh_error err = {};
        struct vh_image_create_options b = { .format = VH_IMAGE_FORMAT_QCOW2,
                                             .backing_file = "pre.qcow2",
                                             .backing_format = VH_IMAGE_FORMAT_QCOW2,
                                             .preallocation = VH_IMAGE_PREALLOC_METADATA };
        CHECK_EQ_INT(vh_image_create(P(1, "pre-ov.qcow2"), &b, &err), -EINVAL);
        CHECK(strstr(err.msg, "backing"));
}

/* ---- interop with qemu-img / qemu-io ---- */

TEST(interop_qemu_writes_vmhost_reads) {
        if (!have("qemu-img") || !have("qemu-io"))
                return;
        const char *base = P(1, "q-base.qcow2"), *top = P(2, "q-top.qcow2");
        CHECK_EQ_INT(run(NULL, "qemu-img", "create", "-q", "-f", "qcow2", base, "8M", NULL), 0);
        CHECK_EQ_INT(run(NULL, "qemu-io", "-c", "write -P 0x5a 0 1M", "-c", "write -P 0x6b 3M 100k", base, NULL), 0);
        CHECK_EQ_INT(run(NULL, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "-b",
                         "q-base.qcow2", "-F", "qcow2", top, NULL),
                     0);
        CHECK_EQ_INT(run(NULL, "qemu-io", "-c", "write -P 0x7c 512k 4k", "-c", "write -z 3M 8k", "-c",
                         "write -P 0x11 7M 1M", top, NULL),
                     0);
        CHECK_EQ_INT(run(NULL, "qemu-img", "convert", "-O", "raw", top, P(3, "q.raw"), NULL), 0);
        CHECK_EQ_INT(convert(top, P(4, "v.raw"), VH_IMAGE_FORMAT_RAW, 0), 0);
        CHECK(files_equal(P(3, "q.raw"), P(4, "v.raw")));

        /* A compressed image. */
        CHECK_EQ_INT(run(NULL, "qemu-img", "convert", "-c", "-O", "qcow2", top, P(5, "c.qcow2"), NULL), 0);
        CHECK_EQ_INT(convert(P(5, "c.qcow2"), P(4, "v2.raw"), VH_IMAGE_FORMAT_RAW, 0), 0);
        CHECK(files_equal(P(3, "q.raw"), P(4, "v2.raw")));

        /* Info agrees on the fields that matter. */
        struct vh_error err = {};
        struct vh_image *img = open_image(top, 0, &err);
        CHECK(img);
        if (img) {
                struct vh_image_info *info = NULL;
                CHECK_EQ_INT(vh_image_get_info(img, &info, &err), 0);
                CHECK(info && info->cluster_size == 4096 && info->virtual_size == 8 << 20);
                CHECK(info && info->backing_filename && streq(info->backing_filename, "q-base.qcow2"));
                vh_image_info_free(info);
                vh_image_free(img);
        }
}

TEST(interop_vmhost_writes_qemu_checks) {
        if (!have("qemu-img") || !have("qemu-io"))
                return;
        const uint64_t size = (3 << 20) + 512;
        const char *raw = P(1, "src.raw");
        make_pattern_raw(raw, size);

        static const uint32_t cluster_sizes[] = { 512, 4096, 65536, 2 << 20 };
        for (size_t i = 0; i < ELEMENTSOF(cluster_sizes); i++) {
                const char *q = P(2, "out.qcow2");
                CHECK_EQ_INT(convert(raw, q, VH_IMAGE_FORMAT_QCOW2, cluster_sizes[i]), 0);
                char *out = NULL;
                CHECK_EQ_INT(run(&out, "qemu-img", "check", q, NULL), 0);
                CHECK(out && strstr(out, "No errors were found"));
                free(out);
                CHECK_EQ_INT(run(NULL, "qemu-img", "compare", "-q", raw, q, NULL), 0);
        }

        /* An overlay made by vmhost: QEMU reads through it and writes to it. */
        struct vh_error err = {};
        struct vh_image_create_options o = { .format = VH_IMAGE_FORMAT_QCOW2,
                                             .backing_file = "out.qcow2",
                                             .backing_format = VH_IMAGE_FORMAT_QCOW2 };
        CHECK_EQ_INT(vh_image_create(P(3, "ov.qcow2"), &o, &err), 0);
        CHECK_EQ_INT(run(NULL, "qemu-img", "check", "-q", P(3, "ov.qcow2"), NULL), 0);
        CHECK_EQ_INT(run(NULL, "qemu-img", "compare", "-q", raw, P(3, "ov.qcow2"), NULL), 0);
        CHECK_EQ_INT(run(NULL, "qemu-io", "-c", "write -P 0x42 64k 64k", P(3, "ov.qcow2"), NULL), 0);
        CHECK_EQ_INT(run(NULL, "qemu-img", "check", "-q", P(3, "ov.qcow2"), NULL), 0);
        char *json = NULL;
        CHECK_EQ_INT(run(&json, "qemu-img", "info", "--output=json", P(3, "ov.qcow2"), NULL), 0);
        CHECK(json && strstr(json, "\"backing-filename-format\": \"qcow2\""));
        CHECK(json && strstr(json, "\"backing-filename\": \"out.qcow2\""));
        free(json);
}

TEST(image_is_file_tells_a_replaced_path) {
        /* vm start opens each file of a chain again by path for QEMU: a file
         * put in its place in between must be told from the one read. */
        char path[512], other[512];
        snprintf(path, sizeof(path), "%s/a.raw", test_tmpdir());
        snprintf(other, sizeof(other), "%s/b.raw", test_tmpdir());
        make_pattern_raw(path, 2 << 20);
        make_pattern_raw(other, 2 << 20);
        struct vh_error err = {};
        struct vh_image *img = open_image(path, 0, &err);
        CHECK(img != NULL);
        if (!img)
                return;
        int same = open(path, O_RDONLY | O_CLOEXEC);
        CHECK(same >= 0 && vh_image_is_file(img, same));
        CHECK_EQ_INT(rename(other, path), 0);
        int replaced = open(path, O_RDONLY | O_CLOEXEC);
        CHECK(replaced >= 0 && !vh_image_is_file(img, replaced));
        CHECK(!vh_image_is_file(img, -1));
        close(same);
        close(replaced);
        vh_image_free(img);
}
