/* tests/unit/test-image-write.c: unit tests for the image write path
 * (qcow2-alloc.c, qcow2-cache.c) and what is built on it: allocation and
 * copy-on-write checked against an in-memory model of the guest disk and
 * against qemu-io doing the same operations, 'qemu-img check' (no errors,
 * no leaks) after every operation, refcount widths 1..64 and cluster sizes
 * 512..2M, refcount table growth, lazy refcounts, refusals (read-only,
 * corrupt, dirty, unknown features, extended L2, locks), internal
 * snapshots in both directions with qemu-img, commit / rebase / resize
 * compared with qemu-img doing the same on a copy, convert -c / -B / -S,
 * convert of several sources, -n and -l, and a writer killed after its
 * Nth write. Tests that need qemu-img or qemu-io say SKIP when they are
 * missing. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
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

/* A path below the test directory, valid until the next call with the
 * same slot. */
static const char *P(unsigned slot, const char *name) {
        static char *paths[16];
        free(paths[slot]);
        paths[slot] = strdup_printf("%s/%s", test_tmpdir(), name);
        if (!paths[slot])
                abort();
        return paths[slot];
}

/* Both asked, so that the skip names each missing tool. */
static bool have_qemu(void) {
        bool img = test_need_program("qemu-img", "qemu-utils");
        bool io = test_need_program("qemu-io", "qemu-utils");
        return img && io;
}

/* Runs a program (argv from the arguments, NULL-terminated); returns its
 * exit status and keeps its output in 'ret_out' when not NULL. */
static int run(char **ret_out, const char *arg0, ...) {
        const char *argv[64];
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
                fprintf(stderr, "  (%s %s exited %d: %s)\n", arg0, n > 1 ? argv[1] : "", r, out ? out : "");
        if (ret_out)
                *ret_out = out;
        else
                free(out);
        return r;
}

static int run_argv(const char *const *argv) {
        char *out = NULL;
        int r = process_run(test_ctx(), (char *const *) argv, 120 * 1000 /* qemu-img/qemu-io: seconds */, 1 << 20, &out,
                            NULL);
        if (r != 0 && getenv("VERBOSE"))
                fprintf(stderr, "  (%s exited %d: %s)\n", argv[0], r, out ? out : "");
        free(out);
        return r;
}

/* 'qemu-img check' exit status: 0 clean, 2 corrupt, 3 leaks only. */
static int qcheck(const char *path) {
        return run(NULL, "qemu-img", "check", "-q", path, NULL);
}

static bool qsame(const char *a, const char *b) {
        return run(NULL, "qemu-img", "compare", "-q", a, b, NULL) == 0;
}

static struct vh_image *open_img(const char *path, unsigned flags) {
        struct vh_image_open_options o = { .format = VH_IMAGE_FORMAT_PROBE, .flags = flags };
        struct vh_image *img = NULL;
        struct vh_error err = {};
        int r = vh_image_open(path, &o, &img, &err);
        if (r < 0 && getenv("VERBOSE"))
                fprintf(stderr, "  open %s: %s\n", path, err.msg);
        return img;
}

static int create_qcow2(const char *path, uint64_t size, uint32_t cs, unsigned rb, unsigned version, bool lazy,
                        const char *backing) {
        struct vh_image_create_options o = {
                .format = VH_IMAGE_FORMAT_QCOW2,
                .size = size,
                .cluster_size = cs,
                .refcount_bits = rb,
                .version = version,
                .lazy_refcounts = lazy,
                .backing_file = backing,
                .backing_format = backing ? VH_IMAGE_FORMAT_QCOW2 : VH_IMAGE_FORMAT_PROBE,
                .replace_data = true, /* the tests make each image again under the same name */
        };
        struct vh_error err = {};
        int r = vh_image_create(path, &o, &err);
        if (r < 0 && getenv("VERBOSE"))
                fprintf(stderr, "  create %s: %s\n", path, err.msg);
        return r;
}

/* The guest view of an image, whole. */
static uint8_t *read_view(const char *path, uint64_t *ret_size) {
        struct vh_image *img = open_img(path, 0);
        if (!img)
                return NULL;
        uint64_t size = vh_image_virtual_size(img);
        uint8_t *buf = malloc(MAX(size, (uint64_t) 1));
        struct vh_error err = {};
        if (buf && vh_image_read(img, 0, buf, (size_t) size, &err) < 0) {
                free(buf);
                buf = NULL;
        }
        vh_image_free(img);
        *ret_size = size;
        return buf;
}

/* The guest view as qemu-img sees it (convert to raw). */
static uint8_t *qemu_view(const char *path, uint64_t *ret_size) {
        const char *raw = P(15, "qemu-view.raw");
        if (run(NULL, "qemu-img", "convert", "-O", "raw", path, raw, NULL) != 0)
                return NULL;
        char *data = NULL;
        size_t len = 0;
        if (read_full_file(raw, 512 << 20, &data, &len) < 0)
                return NULL;
        unlink(raw);
        *ret_size = len;
        return (uint8_t *) data;
}

/* qemu-img convert -O raw of both, then cmp. */
static bool same_raw_views(const char *a, const char *b) {
        const char *ra = P(13, "view-a.raw"), *rb = P(14, "view-b.raw");
        bool ok = run(NULL, "qemu-img", "convert", "-O", "raw", a, ra, NULL) == 0 &&
                  run(NULL, "qemu-img", "convert", "-O", "raw", b, rb, NULL) == 0 &&
                  run(NULL, "cmp", "-s", ra, rb, NULL) == 0;
        unlink(ra);
        unlink(rb);
        return ok;
}

static int copy_file(const char *from, const char *to) {
        return run(NULL, "cp", "--sparse=always", from, to, NULL) == 0 ? 0 : -EIO;
}

/* xorshift64*: deterministic, so a failure reproduces. */
static uint64_t rng_next(uint64_t *s) {
        *s ^= *s >> 12;
        *s ^= *s << 25;
        *s ^= *s >> 27;
        return *s * UINT64_C(2685821657736338717);
}

/* ---- random operations, against a model and against qemu-io ---- */

enum op_kind { OP_WRITE, OP_ZERO, OP_DISCARD };

struct op {
        enum op_kind kind;
        uint64_t off, len;
        uint8_t pattern;
};

static struct op random_op(uint64_t *seed, uint64_t size) {
        static const uint64_t lens[] = { 512, 1024, 4096, 65536, 100 * 1024, 1 << 20, 3 << 20, 7 * 512 };
        struct op o;
        uint64_t k = rng_next(seed) % 8;
        o.kind = k < 5 ? OP_WRITE : k < 7 ? OP_ZERO : OP_DISCARD;
        o.len = MIN(lens[rng_next(seed) % ELEMENTSOF(lens)], size);
        o.off = rng_next(seed) % ((size - o.len) / 512 + 1) * 512;
        o.pattern = (uint8_t) (rng_next(seed) % 255 + 1);
        return o;
}

static void op_format(const struct op *o, char *buf, size_t len) {
        if (o->kind == OP_WRITE)
                snprintf(buf, len, "write -P 0x%02x %" PRIu64 " %" PRIu64, o->pattern, o->off, o->len);
        else if (o->kind == OP_ZERO)
                snprintf(buf, len, "write -z %" PRIu64 " %" PRIu64, o->off, o->len);
        else
                snprintf(buf, len, "discard %" PRIu64 " %" PRIu64, o->off, o->len);
}

/* What the operation does to the guest disk, as QEMU defines it: discard
 * zeroes whole clusters (the last one counts as whole when the range
 * reaches the end of the disk), except on version 2 with a backing file,
 * where it does nothing. */
static void model_apply(uint8_t *model, uint64_t size, const struct op *o, uint64_t cs, bool v2_backing) {
        if (o->kind == OP_WRITE)
                memset(model + o->off, o->pattern, (size_t) o->len);
        else if (o->kind == OP_ZERO)
                memset(model + o->off, 0, (size_t) o->len);
        else if (!v2_backing) {
                uint64_t start = ALIGN_UP(o->off, cs);
                uint64_t end = o->off + o->len == size ? size : (o->off + o->len) / cs * cs;
                if (start < end)
                        memset(model + start, 0, (size_t) (end - start));
        }
}

static int op_do(struct vh_image *img, const struct op *o) {
        struct vh_error err = {};
        int r;
        if (o->kind == OP_WRITE) {
                uint8_t *buf = malloc((size_t) o->len);
                if (!buf)
                        return -ENOMEM;
                memset(buf, o->pattern, (size_t) o->len);
                r = vh_image_write(img, o->off, buf, (size_t) o->len, &err);
                free(buf);
        } else if (o->kind == OP_ZERO)
                r = vh_image_write_zeroes(img, o->off, o->len, &err);
        else
                r = vh_image_discard(img, o->off, o->len, &err);
        if (r < 0)
                fprintf(stderr, "  op failed: %s\n", err.msg);
        return r;
}

struct write_case {
        uint32_t cluster_size;
        unsigned refcount_bits;
        unsigned version;
        bool lazy;
        bool backing;
        uint64_t size;
};

/* Runs 'n_ops' random operations on a vmhost-written image: each one is
 * done by vmhost (open, operate, close) and followed by 'qemu-img check'
 * (clean, no leaks) and a read-back against the model; qemu-io does the
 * same list on a copy, and the two must compare identical at the end. */
static void run_case(const struct write_case *c, uint64_t seed, unsigned n_ops) {
        const char *img = P(1, "w.qcow2"), *copy = P(2, "q.qcow2"), *base = P(3, "wbase.qcow2");
        const uint64_t size = c->size;
        uint8_t *model = calloc(1, (size_t) size);
        if (!model)
                abort();

        if (c->backing) {
                unlink(base);
                CHECK_EQ_INT(run(NULL, "qemu-img", "create", "-q", "-f", "qcow2", base, "6M", NULL), 0);
                CHECK_EQ_INT(run(NULL, "qemu-io", "-c", "write -P 0x5a 0 5M", "-c", "write -z 1M 64k", base, NULL), 0);
                memset(model, 0x5a, 5 << 20);
                memset(model + (1 << 20), 0, 65536);
        }
        CHECK_EQ_INT(create_qcow2(img, size, c->cluster_size, c->refcount_bits, c->version, c->lazy,
                                  c->backing ? "wbase.qcow2" : NULL),
                     0);
        CHECK_EQ_INT(copy_file(img, copy), 0);
        bool v2_backing = c->version == 2 && c->backing;

        const char *qargv[2 * 64 + 3] = { "qemu-io" };
        size_t qn = 1;
        char cmds[64][96];
        unsigned failures = 0;
        for (unsigned i = 0; i < n_ops && i < 64 && failures == 0; i++) {
                struct op o = random_op(&seed, size);
                op_format(&o, cmds[i], sizeof(cmds[i]));
                qargv[qn++] = "-c";
                qargv[qn++] = cmds[i];

                struct vh_image *w = open_img(img, VH_IMAGE_OPEN_READ_WRITE);
                CHECK(w);
                if (!w)
                        break;
                CHECK_EQ_INT(op_do(w, &o), 0);
                struct vh_error err = {};
                CHECK_EQ_INT(vh_image_flush(w, &err), 0);
                vh_image_free(w);
                model_apply(model, size, &o, c->cluster_size, v2_backing);

                int rc = qcheck(img);
                if (rc != 0) {
                        test_fail(__FILE__, __LINE__, "cs=%u rb=%u v%u: qemu-img check says %d after op %u '%s'",
                                  c->cluster_size, c->refcount_bits, c->version, rc, i, cmds[i]);
                        failures++;
                }
                uint64_t got_size = 0;
                uint8_t *got = read_view(img, &got_size);
                if (!got || got_size != size || memcmp(got, model, (size_t) size) != 0) {
                        test_fail(__FILE__, __LINE__, "cs=%u rb=%u v%u: content differs from the model after '%s'",
                                  c->cluster_size, c->refcount_bits, c->version, cmds[i]);
                        failures++;
                }
                free(got);
        }
        qargv[qn++] = copy;
        qargv[qn] = NULL;
        CHECK_EQ_INT(run_argv(qargv), 0);
        CHECK(qsame(img, copy));
        uint64_t qsize = 0;
        uint8_t *q = qemu_view(img, &qsize);
        CHECK(q && qsize == size && memcmp(q, model, (size_t) size) == 0);
        free(q);
        free(model);
}

static const struct write_case write_cases[] = {
        { 65536, 16, 3, false, false, 8 << 20 },
        { 512, 16, 3, false, false, (4 << 20) + 3 * 512 },
        { 4096, 1, 3, false, false, 8 << 20 },
        { 4096, 2, 3, false, true, 8 << 20 },
        { 65536, 64, 3, false, true, (8 << 20) + 512 },
        { 2 << 20, 16, 3, false, true, 8 << 20 },
        { 65536, 16, 2, false, false, 8 << 20 },
        { 4096, 16, 2, false, true, 8 << 20 },
        { 4096, 8, 3, true, true, 8 << 20 },
};

TEST(image_write_random_ops_checked_after_each) {
        if (!have_qemu())
                return;
        for (size_t i = 0; i < ELEMENTSOF(write_cases); i++)
                run_case(&write_cases[i], 1000 + i, 12);
}

TEST(image_write_partial_cow_from_backing) {
        if (!have_qemu())
                return;
        const char *base = P(3, "cbase.qcow2"), *top = P(1, "ctop.qcow2");
        CHECK_EQ_INT(run(NULL, "qemu-img", "create", "-q", "-f", "qcow2", base, "4M", NULL), 0);
        CHECK_EQ_INT(run(NULL, "qemu-io", "-c", "write -P 0x11 0 4M", base, NULL), 0);
        CHECK_EQ_INT(create_qcow2(top, 0, 65536, 0, 0, false, "cbase.qcow2"), 0);

        struct vh_image *img = open_img(top, VH_IMAGE_OPEN_READ_WRITE);
        CHECK(img);
        if (!img)
                return;
        struct vh_error err = {};
        uint8_t buf[1000];
        memset(buf, 0x22, sizeof(buf));
        /* 1000 bytes in the middle of a cluster, and across a boundary. */
        CHECK_EQ_INT(vh_image_write(img, 70000, buf, sizeof(buf), &err), 0);
        CHECK_EQ_INT(vh_image_write(img, 131072 - 500, buf, sizeof(buf), &err), 0);
        uint8_t got[3 * 65536];
        CHECK_EQ_INT(vh_image_read(img, 65536, got, sizeof(got), &err), 0);
        for (size_t i = 0; i < sizeof(got); i++) {
                uint64_t off = 65536 + i;
                uint8_t want = (off >= 70000 && off < 71000) || (off >= 131072 - 500 && off < 131072 + 500) ? 0x22
                                                                                                               : 0x11;
                if (got[i] != want) {
                        test_fail(__FILE__, __LINE__, "byte %" PRIu64 " is %#x, not %#x", off, got[i], want);
                        break;
                }
        }
        CHECK_EQ_INT(vh_image_flush(img, &err), 0);
        vh_image_free(img);
        CHECK_EQ_INT(qcheck(top), 0);
        /* QEMU sees the same: three clusters allocated in the overlay. */
        char *map = NULL;
        CHECK_EQ_INT(run(&map, "qemu-img", "map", "--output=json", top, NULL), 0);
        CHECK(map && strstr(map, "\"start\": 65536, \"length\": 131072, \"depth\": 0"));
        free(map);
        CHECK_EQ_INT(run(NULL, "qemu-io", "-c", "read -P 0x22 70000 1000", "-c", "read -P 0x11 71000 1000", top,
                         NULL),
                     0);
}

TEST(image_write_refcount_table_grows) {
        if (!have_qemu())
                return;
        /* 512-byte clusters with 64-bit refcounts: a refcount block covers
         * 64 clusters and one table cluster 64 blocks (2 MiB), so 6 MiB of
         * data needs the table to move twice. */
        const char *path = P(1, "grow.qcow2");
        CHECK_EQ_INT(create_qcow2(path, 16 << 20, 512, 64, 3, false, NULL), 0);
        struct vh_image *img = open_img(path, VH_IMAGE_OPEN_READ_WRITE);
        CHECK(img);
        if (!img)
                return;
        uint8_t *buf = malloc(65536);
        struct vh_error err = {};
        for (uint64_t off = 0; off < (6 << 20); off += 65536) {
                memset(buf, (int) (off >> 16) + 1, 65536);
                CHECK_EQ_INT(vh_image_write(img, off * 2 % (16 << 20), buf, 65536, &err), 0);
        }
        CHECK_EQ_INT(vh_image_flush(img, &err), 0);
        vh_image_free(img);
        free(buf);
        CHECK_EQ_INT(qcheck(path), 0);
        char *info = NULL;
        CHECK_EQ_INT(run(&info, "qemu-img", "info", path, NULL), 0);
        free(info);
        CHECK_EQ_INT(run(NULL, "qemu-io", "-c", "read -P 0x01 0 64k", "-c", "read -P 0x02 128k 64k", path, NULL), 0);

        /* And the image stays writable by QEMU. */
        CHECK_EQ_INT(run(NULL, "qemu-io", "-c", "write -P 0x7f 15M 1M", path, NULL), 0);
        CHECK_EQ_INT(qcheck(path), 0);
}

TEST(image_write_killed_leaves_no_leak_past_the_end) {
        if (!have_qemu())
                return;
        /* A table is counted in step 2 of the flush and written in step 3.
         * A writer killed in between, with the table the last cluster,
         * used to leave a file that ended before it; 'qemu-img check' looks
         * at no cluster past the end of the file, so it neither saw nor
         * repaired that leak, which came to light once the file grew
         * (t-img-crash, seed 23523, "writes-512-refcount64-rewrite-165").
         * Here a zero write on an overlay needs a new L2 table and no
         * data, and the kill points cover the gap between the steps. */
        const char *base = P(3, "zbase.qcow2"), *top = P(1, "ztop.qcow2"), *pristine = P(2, "ztop.pristine");
        CHECK_EQ_INT(run(NULL, "qemu-img", "create", "-q", "-f", "qcow2", base, "1M", NULL), 0);
        CHECK_EQ_INT(run(NULL, "qemu-io", "-c", "write -P 0x22 0 1M", base, NULL), 0);
        CHECK_EQ_INT(create_qcow2(top, 0, 65536, 0, 0, false, "zbase.qcow2"), 0);
        CHECK_EQ_INT(copy_file(top, pristine), 0);
        unsigned killed = 0;
        for (uint64_t n = 1; n <= 4; n++) {
                CHECK_EQ_INT(copy_file(pristine, top), 0);
                pid_t pid = fork();
                if (pid == 0) {
                        vh_image_fault_set_kill_after_writes(n);
                        struct vh_image *w = open_img(top, VH_IMAGE_OPEN_READ_WRITE);
                        struct vh_error e = {};
                        int r = w ? vh_image_write_zeroes(w, 0, 65536, &e) : -EIO;
                        if (r >= 0)
                                r = vh_image_flush(w, &e);
                        vh_image_free(w);
                        _exit(r < 0 ? 1 : 0);
                }
                int status = 0;
                CHECK(waitpid(pid, &status, 0) == pid);
                if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
                        killed++;
                else
                        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
                int rc = qcheck(top);
                if (rc != 0 && rc != 3)
                        test_fail(__FILE__, __LINE__, "killed after write %" PRIu64 ": qemu-img check says %d", n, rc);
                if (rc == 3)
                        CHECK_EQ_INT(run(NULL, "qemu-img", "check", "-q", "-r", "leaks", top, NULL), 0);
                /* Growing the file past where the killed writer counted must
                 * bring no leak to light: the repair found them all. */
                struct vh_image *w = open_img(top, VH_IMAGE_OPEN_READ_WRITE);
                CHECK(w);
                if (!w)
                        break;
                uint8_t buf[65536];
                memset(buf, 0x33, sizeof(buf));
                struct vh_error err = {};
                CHECK_EQ_INT(vh_image_write(w, 512 << 10, buf, sizeof(buf), &err), 0);
                CHECK_EQ_INT(vh_image_flush(w, &err), 0);
                vh_image_free(w);
                rc = qcheck(top);
                if (rc != 0)
                        test_fail(__FILE__, __LINE__, "killed after write %" PRIu64 ", repaired, written again: "
                                  "qemu-img check says %d", n, rc);
        }
        CHECK(killed >= 1);
}

/* ---- the cache keeps one slot per table ---- */

/* A stand-in for the owner's flush, as the cache's evict callback: writes
 * every dirty table back, then, as step 5 of qcow2_flush() does with a
 * refcount block, reads the table at 'flush_reads' into the cache, changes
 * it and writes it too. */
static struct qcow2_cache *flush_cache;
static uint64_t flush_reads;
static unsigned flush_calls;

static int evict_like_flush(struct vh_image *img, struct vh_error *err) {
        flush_calls++;
        int r = qcow2_cache_write_dirty(img, flush_cache, "table", err);
        if (r < 0)
                return r;
        uint8_t *t;
        r = qcow2_cache_get(img, flush_cache, flush_reads, &t, err);
        if (r < 0)
                return r;
        t[0]++;
        qcow2_cache_mark_dirty(flush_cache, t);
        return qcow2_cache_write_dirty(img, flush_cache, "table", err);
}

TEST(image_cache_one_slot_per_table_when_eviction_reads_it) {
        const char *path = P(1, "tables.bin");
        uint8_t file[8 * 512];
        for (unsigned i = 0; i < 8; i++)
                memset(file + i * 512, (int) i, 512);
        CHECK_EQ_INT(write_file_atomic(path, file, sizeof(file), 0600), 0);
        int fd = open(path, O_RDWR | O_CLOEXEC);
        CHECK(fd >= 0);
        if (fd < 0)
                return;
        struct vh_image img = { .filename = (char *) path, .fd = fd, .file_size = sizeof(file) };
        struct vh_error err = {};

        /* get, then get_new: both must find the table the eviction read. */
        for (int use_new = 0; use_new < 2; use_new++) {
                flush_cache = qcow2_cache_new(4, 512, evict_like_flush);
                flush_calls = 0;
                CHECK(flush_cache);
                if (!flush_cache)
                        break;
                /* Four dirty tables fill the cache. */
                for (uint64_t i = 1; i <= 4; i++) {
                        uint8_t *t;
                        CHECK_EQ_INT(qcow2_cache_get(&img, flush_cache, i * 512, &t, &err), 0);
                        t[1] = 0xee;
                        qcow2_cache_mark_dirty(flush_cache, t);
                }
                /* A miss for table 5 makes room through the flush, which
                 * reads and changes table 5 itself. */
                uint64_t off = 5 * 512;
                uint8_t before = file[off];
                flush_reads = off;
                uint8_t *t5 = NULL, *again = NULL;
                if (use_new)
                        CHECK_EQ_INT(qcow2_cache_get_new(&img, flush_cache, off, &t5, &err), 0);
                else
                        CHECK_EQ_INT(qcow2_cache_get(&img, flush_cache, off, &t5, &err), 0);
                CHECK_EQ_INT(flush_calls, 1);
                if (!t5)
                        break;
                if (!use_new)
                        CHECK_EQ_INT(t5[0], before + 1);
                t5[0] = 0x40;
                qcow2_cache_mark_dirty(flush_cache, t5);
                /* The same table is the same slot: a second copy would take
                 * this change while the first kept the flush's, and the one
                 * written last would undo the other. */
                CHECK_EQ_INT(qcow2_cache_get(&img, flush_cache, off, &again, &err), 0);
                CHECK(again == t5);
                if (again) {
                        again[0]++;
                        qcow2_cache_mark_dirty(flush_cache, again);
                }
                CHECK_EQ_INT(qcow2_cache_write_dirty(&img, flush_cache, "table", &err), 0);
                uint8_t b = 0;
                CHECK(pread(fd, &b, 1, (off_t) off) == 1);
                CHECK_EQ_INT(b, 0x41);
                file[off] = b;
                flush_cache = qcow2_cache_free(flush_cache);
        }
        close(fd);
}

TEST(image_write_eviction_flush_frees_in_the_block_being_read) {
        if (!have_qemu())
                return;
        /* The same through the write path (t-img-crash once found it:
         * seed 27424, "writes-512-refcount64-rewrite-203"). 512-byte
         * clusters and 64-bit refcounts: a refcount block covers 64
         * clusters, and the cache holds 64 blocks, fewer than the image
         * has. 65 discards leave a free cluster in each of the first
         * blocks (qemu's layout: the data of one L2 table per block), and
         * a flush frees them. Then one more discard queues a decrement in
         * block 64 (guest cluster 3964 lies at host cluster 4100), where
         * qemu left free clusters when its refcount table grew. The
         * writes fill the free clusters first fit: blocks 0..63 become
         * dirty, and the miss on block 64 evicts through a flush, which
         * reads block 64 to decrement. Without the second look in
         * slot_for() block 64 then sat in two slots, and with these
         * numbers the stale one (the flush's, in the lower slot) took the
         * next allocations, its write undoing the other's: 'qemu-img
         * check' found clusters in use with refcount 0. */
        const char *path = P(1, "evict.qcow2");
        const uint64_t size = 16 << 20, data = 8 << 20, span = 64 * 512, late = 3964 * 512;
        const unsigned holes = 65, writes = 300;
        CHECK_EQ_INT(create_qcow2(path, size, 512, 64, 3, false, NULL), 0);
        CHECK_EQ_INT(run(NULL, "qemu-io", "-c", "write -P 0x11 0 8M", path, NULL), 0);
        uint8_t *model = calloc(1, (size_t) size);
        struct vh_image *img = open_img(path, VH_IMAGE_OPEN_READ_WRITE);
        CHECK(model && img);
        if (!model || !img) {
                free(model);
                vh_image_free(img);
                return;
        }
        memset(model, 0x11, (size_t) data);
        struct vh_error err = {};
        for (uint64_t t = 0; t < holes; t++) {
                CHECK_EQ_INT(vh_image_discard(img, t * span, 512, &err), 0);
                memset(model + t * span, 0, 512);
        }
        CHECK_EQ_INT(vh_image_flush(img, &err), 0);
        /* The layout this relies on (qemu's), checked so that a change in
         * it fails here instead of testing nothing. */
        struct image_layer_extent ext = {};
        CHECK_EQ_INT(img->driver->map(img, late, 512, &ext, &err), 0);
        CHECK(ext.kind == IMAGE_EXTENT_DATA && ext.host_offset == 4100 * 512);
        CHECK_EQ_INT(vh_image_discard(img, late, 512, &err), 0);
        memset(model + late, 0, 512);
        uint8_t buf[512];
        for (uint64_t k = 0; k < writes; k++) {
                memset(buf, (int) (k % 250) + 1, sizeof(buf));
                CHECK_EQ_INT(vh_image_write(img, data + k * 512, buf, sizeof(buf), &err), 0);
                memcpy(model + data + k * 512, buf, sizeof(buf));
        }
        CHECK_EQ_INT(vh_image_flush(img, &err), 0);
        vh_image_free(img);
        CHECK_EQ_INT(qcheck(path), 0);
        uint64_t got_size = 0;
        uint8_t *got = qemu_view(path, &got_size);
        CHECK(got && got_size == size && memcmp(got, model, (size_t) size) == 0);
        free(got);
        free(model);
}

static void set_header_bit(const char *path, size_t byte, uint8_t bit) {
        int fd = open(path, O_RDWR | O_CLOEXEC);
        uint8_t v = 0;
        CHECK(fd >= 0 && pread(fd, &v, 1, (off_t) byte) == 1);
        v |= bit;
        CHECK(pwrite(fd, &v, 1, (off_t) byte) == 1);
        close(fd);
}

static bool file_unchanged(const char *path, const char *saved) {
        char *a = NULL, *b = NULL;
        size_t na = 0, nb = 0;
        bool same = read_full_file(path, 64 << 20, &a, &na) >= 0 && read_full_file(saved, 64 << 20, &b, &nb) >= 0 &&
                    na == nb && memcmp(a, b, na) == 0;
        free(a);
        free(b);
        return same;
}

TEST(image_write_refusals) {
        const char *path = P(1, "r.qcow2"), *saved = P(2, "r.saved");
        struct vh_error err = {};
        uint8_t buf[512] = { 1 };
        struct vh_image_open_options rw = { .format = VH_IMAGE_FORMAT_PROBE, .flags = VH_IMAGE_OPEN_READ_WRITE };
        struct vh_image *img = NULL;

        CHECK_EQ_INT(create_qcow2(path, 1 << 20, 0, 0, 0, false, NULL), 0);
        /* Read-only opens do not write. */
        img = open_img(path, 0);
        CHECK(img);
        if (img) {
                CHECK_EQ_INT(vh_image_write(img, 0, buf, sizeof(buf), &err), -EROFS);
                CHECK_EQ_INT(vh_image_write_zeroes(img, 0, 512, &err), -EROFS);
                CHECK_EQ_INT(vh_image_discard(img, 0, 512, &err), -EROFS);
                vh_image_free(img);
        }
        /* Past the virtual size. */
        img = open_img(path, VH_IMAGE_OPEN_READ_WRITE);
        CHECK(img);
        if (img) {
                CHECK_EQ_INT(vh_image_write(img, (1 << 20) - 256, buf, sizeof(buf), &err), -EINVAL);
                /* A second writer, even in this process, is refused by the
                 * lock, which names the holder. */
                struct vh_image *second = NULL;
                CHECK_EQ_INT(vh_image_open(path, &rw, &second, &err), -EBUSY);
                CHECK(strstr(err.msg, "in use by process"));
                vh_image_free(img);
        }

        /* Corrupt, dirty, unknown incompatible feature: refused at open,
         * and the file is left as it was. */
        static const struct {
                size_t byte;
                uint8_t bit;
                int code;
        } bad[] = {
                { 79, 0x02, -EROFS },      /* corrupt */
                { 79, 0x01, -EROFS },      /* dirty */
                { 77, 0x10, -EOPNOTSUPP }, /* bit 20: unknown */
        };
        for (size_t i = 0; i < ELEMENTSOF(bad); i++) {
                CHECK_EQ_INT(create_qcow2(path, 1 << 20, 0, 0, 0, false, NULL), 0);
                set_header_bit(path, bad[i].byte, bad[i].bit);
                CHECK_EQ_INT(copy_file(path, saved), 0);
                img = NULL;
                CHECK_EQ_INT(vh_image_open(path, &rw, &img, &err), bad[i].code);
                vh_image_free(img);
                CHECK(file_unchanged(path, saved));
        }

        /* Extended L2 entries are read, not written. */
        if (have_qemu()) {
                CHECK_EQ_INT(run(NULL, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "extended_l2=on", path, "1M",
                                 NULL),
                             0);
                img = NULL;
                CHECK_EQ_INT(vh_image_open(path, &rw, &img, &err), -EOPNOTSUPP);
                CHECK(strstr(err.msg, "extended L2"));
                vh_image_free(img);
        }
}

TEST(image_write_lazy_refcounts_dirty_bit) {
        if (!have_qemu())
                return;
        const char *path = P(1, "lazy.qcow2");
        CHECK_EQ_INT(create_qcow2(path, 4 << 20, 0, 0, 3, true, NULL), 0);
        struct vh_image *img = open_img(path, VH_IMAGE_OPEN_READ_WRITE);
        CHECK(img);
        if (!img)
                return;
        struct vh_error err = {};
        uint8_t buf[4096];
        memset(buf, 0x33, sizeof(buf));
        CHECK_EQ_INT(vh_image_write(img, 8192, buf, sizeof(buf), &err), 0);
        CHECK_EQ_INT(vh_image_flush(img, &err), 0);
        /* While the writer has it open, the image is marked dirty. */
        struct vh_image *peek = open_img(path, VH_IMAGE_OPEN_FORCE_SHARE);
        struct vh_image_info *info = NULL;
        CHECK(peek && vh_image_get_info(peek, &info, &err) == 0 && info && info->dirty_flag);
        vh_image_info_free(info);
        vh_image_free(peek);
        /* A clean close clears it. */
        vh_image_free(img);
        peek = open_img(path, 0);
        info = NULL;
        CHECK(peek && vh_image_get_info(peek, &info, &err) == 0 && info && !info->dirty_flag);
        vh_image_info_free(info);
        vh_image_free(peek);
        CHECK_EQ_INT(qcheck(path), 0);
}

/* ---- snapshots ---- */

static bool snapshot_listed(const char *path, const char *name) {
        char *out = NULL;
        bool ok = run(&out, "qemu-img", "snapshot", "-l", path, NULL) == 0 && out && strstr(out, name);
        free(out);
        return ok;
}

TEST(image_snapshots_with_qemu_img) {
        if (!have_qemu())
                return;
        const char *path = P(1, "snap.qcow2");
        struct vh_error err = {};
        CHECK_EQ_INT(run(NULL, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", path, "8M", NULL),
                     0);
        CHECK_EQ_INT(run(NULL, "qemu-io", "-c", "write -P 0x11 0 2M", "-c", "write -c -P 0x12 4M 4k", path, NULL), 0);
        uint64_t n0 = 0, n1 = 0, n;
        uint8_t *v0 = read_view(path, &n0);

        /* vmhost creates, qemu-img lists. */
        struct vh_image *img = open_img(path, VH_IMAGE_OPEN_READ_WRITE);
        CHECK(img && vh_image_snapshot_create(img, "first", &err) == 0);
        CHECK(img && vh_image_snapshot_create(img, "first", &err) == -EEXIST);
        vh_image_free(img);
        CHECK_EQ_INT(qcheck(path), 0);
        CHECK(snapshot_listed(path, "first"));

        /* Writes after the snapshot copy on write: shared clusters,
         * compressed ones, zero writes and discards. */
        img = open_img(path, VH_IMAGE_OPEN_READ_WRITE);
        uint8_t buf[65536];
        memset(buf, 0x21, sizeof(buf));
        CHECK(img && vh_image_write(img, 100000, buf, sizeof(buf), &err) == 0);
        CHECK(img && vh_image_write(img, 4 << 20, buf, 1000, &err) == 0);
        CHECK(img && vh_image_write_zeroes(img, 1 << 20, 65536, &err) == 0);
        CHECK(img && vh_image_discard(img, 1536 << 10, 65536, &err) == 0);
        vh_image_free(img);
        CHECK_EQ_INT(qcheck(path), 0);
        uint8_t *v1 = read_view(path, &n1);

        /* qemu-img creates one too, and goes back to vmhost's. */
        CHECK_EQ_INT(run(NULL, "qemu-img", "snapshot", "-c", "second", path, NULL), 0);
        CHECK_EQ_INT(run(NULL, "qemu-img", "snapshot", "-a", "first", path, NULL), 0);
        CHECK_EQ_INT(qcheck(path), 0);
        uint8_t *v = read_view(path, &n);
        CHECK(v && v0 && n == n0 && memcmp(v, v0, (size_t) n) == 0);
        free(v);

        /* vmhost lists both and goes to qemu-img's. */
        img = open_img(path, VH_IMAGE_OPEN_READ_WRITE);
        struct vh_image_snapshot *list = NULL;
        size_t count = 0;
        CHECK(img && vh_image_snapshot_list(img, &list, &count, &err) == 0);
        CHECK_EQ_INT(count, 2);
        if (count == 2) {
                CHECK_STREQ(list[0].name, "first");
                CHECK_STREQ(list[0].id, "1");
                CHECK_STREQ(list[1].name, "second");
                CHECK_EQ_U64(list[1].disk_size, 8 << 20);
        }
        vh_image_snapshots_free(list, count);
        CHECK(img && vh_image_snapshot_apply(img, "second", &err) == 0);
        vh_image_free(img);
        CHECK_EQ_INT(qcheck(path), 0);
        v = read_view(path, &n);
        CHECK(v && v1 && n == n1 && memcmp(v, v1, (size_t) n) == 0);
        free(v);

        /* Delete both (one by id), then the image is as if none had been. */
        img = open_img(path, VH_IMAGE_OPEN_READ_WRITE);
        CHECK(img && vh_image_snapshot_delete(img, "1", &err) == 0);
        vh_image_free(img);
        CHECK_EQ_INT(qcheck(path), 0);
        CHECK(!snapshot_listed(path, "first"));
        CHECK_EQ_INT(run(NULL, "qemu-img", "snapshot", "-d", "second", path, NULL), 0);
        CHECK_EQ_INT(qcheck(path), 0);
        /* With no snapshot left every cluster is ours alone: QEMU writes in
         * place again (check would flag wrong COPIED flags). */
        CHECK_EQ_INT(run(NULL, "qemu-io", "-c", "write -P 0x44 0 64k", path, NULL), 0);
        CHECK_EQ_INT(qcheck(path), 0);
        free(v0);
        free(v1);
}

/* ---- commit, rebase, resize against qemu-img on a copy ---- */

/* A 3-deep chain in directory 'dir' ("base", "mid" with 4k clusters,
 * "top" larger than its backing files), filled by qemu-io. */
static void make_chain(const char *dir) {
        char b[512], m[512], t[512];
        snprintf(b, sizeof(b), "%s/base.qcow2", dir);
        snprintf(m, sizeof(m), "%s/mid.qcow2", dir);
        snprintf(t, sizeof(t), "%s/top.qcow2", dir);
        CHECK_EQ_INT(mkdir_p(dir, 0755), 0);
        CHECK_EQ_INT(run(NULL, "qemu-img", "create", "-q", "-f", "qcow2", b, "8M", NULL), 0);
        CHECK_EQ_INT(run(NULL, "qemu-io", "-c", "write -P 0x11 0 3M", "-c", "write -P 0x12 5M 1M", b, NULL), 0);
        CHECK_EQ_INT(run(NULL, "qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4k", "-b", "base.qcow2",
                         "-F", "qcow2", m, NULL),
                     0);
        CHECK_EQ_INT(run(NULL, "qemu-io", "-c", "write -P 0x21 1M 100k", "-c", "write -z 5M 64k", "-c",
                         "write -P 0x22 7M 8k", m, NULL),
                     0);
        CHECK_EQ_INT(run(NULL, "qemu-img", "create", "-q", "-f", "qcow2", "-b", "mid.qcow2", "-F", "qcow2", t, "12M",
                         NULL),
                     0);
        CHECK_EQ_INT(run(NULL, "qemu-io", "-c", "write -P 0x31 512k 1M", "-c", "write -z 2M 128k", "-c",
                         "write -P 0x32 10M 300k", "-c", "discard 5M 64k", t, NULL),
                     0);
}

static void compare_chains(const char *qdir, const char *vdir, const char *what) {
        static const char *const names[] = { "base.qcow2", "mid.qcow2", "top.qcow2" };
        for (size_t i = 0; i < ELEMENTSOF(names); i++) {
                char a[512], b[512];
                snprintf(a, sizeof(a), "%s/%s", qdir, names[i]);
                snprintf(b, sizeof(b), "%s/%s", vdir, names[i]);
                if (!qsame(a, b) || !same_raw_views(a, b))
                        test_fail(__FILE__, __LINE__, "%s: %s differs from what qemu-img made", what, names[i]);
                if (qcheck(b) != 0)
                        test_fail(__FILE__, __LINE__, "%s: qemu-img check fails on %s", what, names[i]);
        }
}

static const char *chain_file(unsigned slot, const char *dir, const char *name) {
        static char buf[4][512];
        snprintf(buf[slot], sizeof(buf[slot]), "%s/%s", dir, name);
        return buf[slot];
}

TEST(image_commit_like_qemu_img) {
        if (!have_qemu())
                return;
        for (int variant = 0; variant < 3; variant++) {
                char qdir[256], vdir[256];
                snprintf(qdir, sizeof(qdir), "%s/q%d", test_tmpdir(), variant);
                snprintf(vdir, sizeof(vdir), "%s/v%d", test_tmpdir(), variant);
                make_chain(qdir);
                CHECK_EQ_INT(run(NULL, "cp", "-r", qdir, vdir, NULL), 0);

                struct vh_image_commit_options co = {};
                const char *qargs[8] = { "qemu-img", "commit", "-q" };
                size_t n = 3;
                if (variant == 1) {
                        co.keep_top = true;
                        qargs[n++] = "-d";
                } else if (variant == 2) {
                        co.base = chain_file(0, vdir, "base.qcow2");
                        qargs[n++] = "-b";
                        qargs[n++] = chain_file(1, qdir, "base.qcow2");
                }
                qargs[n++] = chain_file(2, qdir, "top.qcow2");
                qargs[n] = NULL;
                CHECK_EQ_INT(run_argv(qargs), 0);

                struct vh_image *top = open_img(chain_file(3, vdir, "top.qcow2"),
                                                variant == 0 ? VH_IMAGE_OPEN_READ_WRITE : 0);
                CHECK(top);
                struct vh_error err = {};
                if (top) {
                        int r = vh_image_commit(top, &co, &err);
                        if (r < 0)
                                fprintf(stderr, "  commit: %s\n", err.msg);
                        CHECK_EQ_INT(r, 0);
                        vh_image_free(top);
                }
                compare_chains(qdir, vdir, variant == 0 ? "commit" : variant == 1 ? "commit -d" : "commit -b");
        }
}

TEST(image_rebase_like_qemu_img) {
        if (!have_qemu())
                return;
        /* Safe onto base, safe onto nothing, unsafe, and safe onto a file
         * longer than the old backing file (top's tail past mid's end read
         * as zeros before; it must still). */
        static const char *const targets[] = { "base.qcow2", "", "base.qcow2", "big.qcow2" };
        for (int variant = 0; variant < 4; variant++) {
                char qdir[256], vdir[256];
                snprintf(qdir, sizeof(qdir), "%s/rq%d", test_tmpdir(), variant);
                snprintf(vdir, sizeof(vdir), "%s/rv%d", test_tmpdir(), variant);
                make_chain(qdir);
                if (variant == 3) {
                        const char *big = chain_file(3, qdir, "big.qcow2");
                        CHECK_EQ_INT(run(NULL, "qemu-img", "create", "-q", "-f", "qcow2", big, "12M", NULL), 0);
                        CHECK_EQ_INT(run(NULL, "qemu-io", "-c", "write -P 0x66 0 12M", big, NULL), 0);
                }
                CHECK_EQ_INT(run(NULL, "cp", "-r", qdir, vdir, NULL), 0);
                bool unsafe = variant == 2;
                const char *t = targets[variant];
                const char *qargs[12] = { "qemu-img", "rebase", "-q", "-b", t };
                size_t n = 5;
                if (*t) {
                        qargs[n++] = "-F";
                        qargs[n++] = "qcow2";
                }
                if (unsafe)
                        qargs[n++] = "-u";
                qargs[n++] = chain_file(0, qdir, "top.qcow2");
                qargs[n] = NULL;
                CHECK_EQ_INT(run_argv(qargs), 0);

                struct vh_image *top = open_img(chain_file(1, vdir, "top.qcow2"),
                                                VH_IMAGE_OPEN_READ_WRITE | (unsafe ? VH_IMAGE_OPEN_NO_BACKING : 0));
                CHECK(top);
                struct vh_error err = {};
                struct vh_image_rebase_options ro = {
                        .backing_file = t,
                        .backing_format = VH_IMAGE_FORMAT_QCOW2,
                        .unsafe = unsafe,
                };
                if (top) {
                        int r = vh_image_rebase(top, &ro, &err);
                        if (r < 0)
                                fprintf(stderr, "  rebase: %s\n", err.msg);
                        CHECK_EQ_INT(r, 0);
                        vh_image_free(top);
                }
                compare_chains(qdir, vdir, variant == 0   ? "rebase"
                                           : variant == 1 ? "rebase -b ''"
                                           : variant == 2 ? "rebase -u"
                                                          : "rebase onto a longer file");
                char *info = NULL;
                CHECK_EQ_INT(run(&info, "qemu-img", "info", chain_file(2, vdir, "top.qcow2"), NULL), 0);
                char want[64];
                snprintf(want, sizeof(want), "backing file: %s", t);
                CHECK(info && (*t ? strstr(info, want) != NULL : strstr(info, "backing file") == NULL));
                free(info);
        }
}

TEST(image_resize_like_qemu_img) {
        if (!have_qemu())
                return;
        static const struct {
                const char *file;
                uint64_t size;
                const char *arg;
        } cases[] = {
                /* Grows past the backing file (zeroed, as QEMU does) and
                 * needs a larger L1 table (4k clusters: 2 MiB per entry). */
                { "mid.qcow2", 16 << 20, "16M" },
                { "base.qcow2", 24 << 20, "24M" },
                { "top.qcow2", 10 << 20, "10M" }, /* shrink, nothing allocated past the end */
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                char qdir[256], vdir[256];
                snprintf(qdir, sizeof(qdir), "%s/zq%zu", test_tmpdir(), i);
                snprintf(vdir, sizeof(vdir), "%s/zv%zu", test_tmpdir(), i);
                make_chain(qdir);
                if (streq(cases[i].file, "top.qcow2"))
                        CHECK_EQ_INT(run(NULL, "qemu-io", "-c", "discard 10M 2M", chain_file(0, qdir, "top.qcow2"),
                                         NULL),
                                     0);
                CHECK_EQ_INT(run(NULL, "cp", "-r", qdir, vdir, NULL), 0);
                CHECK_EQ_INT(run(NULL, "qemu-img", "resize", "-q", "--shrink", chain_file(1, qdir, cases[i].file),
                                 cases[i].arg, NULL),
                             0);
                struct vh_image *img = open_img(chain_file(2, vdir, cases[i].file), VH_IMAGE_OPEN_READ_WRITE);
                CHECK(img);
                struct vh_error err = {};
                if (img) {
                        CHECK_EQ_INT(vh_image_resize(img, cases[i].size, true, &err), 0);
                        vh_image_free(img);
                }
                compare_chains(qdir, vdir, "resize");
        }

        /* Shrinking over allocated data needs 'shrink' (nothing changes
         * without it); with it the data past the end is discarded, as
         * qemu-img does, and the image stays clean. */
        char dir[256];
        snprintf(dir, sizeof(dir), "%s/zr", test_tmpdir());
        make_chain(dir);
        struct vh_image *img = open_img(chain_file(0, dir, "top.qcow2"), VH_IMAGE_OPEN_READ_WRITE);
        struct vh_error err = {};
        CHECK(img && vh_image_resize(img, 4 << 20, false, &err) == -EINVAL);
        CHECK(img && vh_image_virtual_size(img) == 12 << 20);
        CHECK(img && vh_image_resize(img, 4 << 20, true, &err) == 0);
        CHECK(img && vh_image_virtual_size(img) == 4 << 20);
        vh_image_free(img);
        CHECK_EQ_INT(qcheck(chain_file(0, dir, "top.qcow2")), 0);
}

/* ---- convert -c, -B, -S ---- */

TEST(image_convert_compress_backing_sparse) {
        if (!have_qemu())
                return;
        char dir[256];
        snprintf(dir, sizeof(dir), "%s/cv", test_tmpdir());
        make_chain(dir);
        const char *top = chain_file(0, dir, "top.qcow2");
        struct vh_image *src = open_img(top, 0);
        CHECK(src);
        if (!src)
                return;
        struct vh_error err = {};
        static const unsigned rbs[] = { 1, 4, 16 };
        for (size_t i = 0; i < ELEMENTSOF(rbs); i++) {
                struct vh_image_convert_options co = {
                        .format = VH_IMAGE_FORMAT_QCOW2, .compress = true, .refcount_bits = rbs[i],
                        .replace_data = true, /* the last round's output */
                };
                CHECK_EQ_INT(vh_image_convert(src, P(1, "c.qcow2"), &co, &err), 0);
                CHECK_EQ_INT(qcheck(P(1, "c.qcow2")), 0);
                CHECK(qsame(top, P(1, "c.qcow2")));
                char *out = NULL;
                CHECK_EQ_INT(run(&out, "qemu-img", "check", P(1, "c.qcow2"), NULL), 0);
                CHECK(out && strstr(out, "100.00% compressed"));
                free(out);
        }

        /* -B: an overlay of mid holding only what differs from it. */
        struct vh_image_convert_options bo = {
                .format = VH_IMAGE_FORMAT_QCOW2,
                .backing_file = "mid.qcow2",
                .backing_format = VH_IMAGE_FORMAT_QCOW2,
        };
        char out_path[512];
        snprintf(out_path, sizeof(out_path), "%s/ov.qcow2", dir);
        CHECK_EQ_INT(vh_image_convert(src, out_path, &bo, &err), 0);
        CHECK_EQ_INT(qcheck(out_path), 0);
        CHECK(qsame(top, out_path));
        char *map = NULL;
        CHECK_EQ_INT(run(&map, "qemu-img", "map", "--output=json", out_path, NULL), 0);
        /* Mid's data at 7M is not copied; top's at 10M is. */
        CHECK(map && strstr(map, "\"start\": 7340032, \"length\": 8192, \"depth\": 1"));
        CHECK(map && strstr(map, "\"depth\": 0, \"present\": true, \"zero\": false, \"data\": true"));
        free(map);

        /* -S 0: fully allocated raw; default: sparse. */
        struct vh_image_convert_options ro = { .format = VH_IMAGE_FORMAT_RAW, .fully_allocated = true };
        CHECK_EQ_INT(vh_image_convert(src, P(2, "full.raw"), &ro, &err), 0);
        ro.fully_allocated = false;
        CHECK_EQ_INT(vh_image_convert(src, P(3, "sparse.raw"), &ro, &err), 0);
        struct stat a, b;
        CHECK(stat(P(2, "full.raw"), &a) == 0 && stat(P(3, "sparse.raw"), &b) == 0);
        CHECK((uint64_t) a.st_blocks * 512 >= 12 << 20);
        CHECK(b.st_blocks < a.st_blocks / 2);
        CHECK(qsame(P(2, "full.raw"), top));
        vh_image_free(src);
}

/* convert's workers map the source's data instead of reading it when the
 * source is locked against resizing (convert.c, map_safe()); opened with
 * force-share they read it. Both must give the same bytes, for data in
 * every layer of a chain, host clusters out of guest order, compressed
 * clusters, output clusters larger than the source's, and a raw file
 * whose size is not a multiple of the page. */
TEST(image_convert_mapped_same_as_read) {
        if (!have_qemu())
                return;
        char dir[256];
        snprintf(dir, sizeof(dir), "%s/cvmap", test_tmpdir());
        make_chain(dir);
        /* mid has 4 KiB clusters: written backwards, its host clusters
         * run against guest order. */
        const char *mid = chain_file(1, dir, "mid.qcow2");
        const char *qio[64] = { "qemu-io" };
        size_t n = 1;
        char cmds[16][64];
        for (int i = 15; i >= 0; i--) {
                snprintf(cmds[i], sizeof(cmds[i]), "write -P 0x%x %d %d", 0x40 + i, (4 << 20) + i * 8192, 4096);
                qio[n++] = "-c";
                qio[n++] = cmds[i];
        }
        qio[n++] = mid;
        qio[n] = NULL;
        CHECK_EQ_INT(run_argv(qio), 0);
        const char *top = chain_file(0, dir, "top.qcow2");
        CHECK_EQ_INT(run(NULL, "qemu-io", "-c", "write -c -P 0x33 11M 64k", top, NULL), 0);

        /* A raw file of 1 MiB + 1000 bytes: data, a hole, data at the tail. */
        const char *raw = chain_file(2, dir, "odd.raw");
        CHECK_EQ_INT(run(NULL, "qemu-img", "create", "-q", "-f", "raw", raw, "1049576", NULL), 0);
        CHECK_EQ_INT(run(NULL, "qemu-io", "-f", "raw", "-c", "write -P 0x51 0 64k", "-c", "write -P 0x52 1044480 5096",
                         raw, NULL),
                     0);

        static const struct {
                enum vh_image_format format;
                uint32_t cluster_size;
        } outs[] = {
                { VH_IMAGE_FORMAT_RAW, 0 },
                { VH_IMAGE_FORMAT_QCOW2, 0 },
                { VH_IMAGE_FORMAT_QCOW2, 2 << 20 },
        };
        const char *srcs[] = { top, raw };
        for (size_t s = 0; s < ELEMENTSOF(srcs); s++)
                for (size_t o = 0; o < ELEMENTSOF(outs); o++) {
                        const char *mapped = P(1, "mapped.out"), *read = P(2, "read.out");
                        struct vh_image_convert_options co = {
                                .format = outs[o].format, .cluster_size = outs[o].cluster_size,
                        };
                        struct vh_error err = {};
                        struct vh_image *a = open_img(srcs[s], 0);
                        struct vh_image *b = open_img(srcs[s], VH_IMAGE_OPEN_FORCE_SHARE);
                        CHECK(a && b);
                        if (!a || !b) {
                                vh_image_free(a);
                                vh_image_free(b);
                                continue;
                        }
                        CHECK_EQ_INT(vh_image_convert(a, mapped, &co, &err), 0);
                        CHECK_EQ_INT(vh_image_convert(b, read, &co, &err), 0);
                        vh_image_free(a);
                        vh_image_free(b);
                        CHECK(qsame(srcs[s], mapped));
                        CHECK_EQ_INT(run(NULL, "cmp", mapped, read, NULL), 0);
                        if (outs[o].format == VH_IMAGE_FORMAT_QCOW2)
                                CHECK_EQ_INT(qcheck(mapped), 0);
                        unlink(mapped);
                        unlink(read);
                }
}

/* ---- a writer killed after its Nth write ---- */

/* The operations the child does: disjoint ranges, so that "old or new"
 * is defined for every byte. */
static int crash_writes(const char *path) {
        struct vh_image *img = open_img(path, VH_IMAGE_OPEN_READ_WRITE);
        if (!img)
                return -EIO;
        struct vh_error err = {};
        uint8_t *buf = malloc(300000);
        int r = buf ? 0 : -ENOMEM;
        for (int i = 0; r >= 0 && i < 12; i++) {
                memset(buf, 0x40 + i, 300000);
                r = vh_image_write(img, (uint64_t) i * 600000 + 1000, buf, 250000 + (size_t) i * 4000, &err);
        }
        if (r >= 0)
                r = vh_image_write_zeroes(img, 7500000, 300000, &err);
        if (r >= 0)
                r = vh_image_flush(img, &err);
        free(buf);
        vh_image_free(img);
        return r;
}

TEST(image_write_killed_after_nth_write) {
        if (!have_qemu())
                return;
        const char *path = P(1, "k.qcow2"), *base = P(3, "kbase.qcow2"), *pristine = P(2, "k.pristine");
        CHECK_EQ_INT(run(NULL, "qemu-img", "create", "-q", "-f", "qcow2", base, "8M", NULL), 0);
        CHECK_EQ_INT(run(NULL, "qemu-io", "-c", "write -P 0x0b 0 8M", base, NULL), 0);
        CHECK_EQ_INT(create_qcow2(path, 0, 4096, 0, 0, false, "kbase.qcow2"), 0);
        CHECK_EQ_INT(copy_file(path, pristine), 0);

        uint64_t n_old = 0, n_new = 0;
        uint8_t *old_view = read_view(path, &n_old);
        CHECK_EQ_INT(crash_writes(path), 0);
        uint8_t *new_view = read_view(path, &n_new);
        CHECK(old_view && new_view && n_old == n_new);
        if (!old_view || !new_view) {
                free(old_view);
                free(new_view);
                return;
        }

        unsigned killed = 0, completed = 0;
        for (uint64_t n = 1; n <= 400 && completed == 0; n += n < 40 ? 1 : 7) {
                CHECK_EQ_INT(copy_file(pristine, path), 0);
                pid_t pid = fork();
                if (pid == 0) {
                        vh_image_fault_set_kill_after_writes(n);
                        _exit(crash_writes(path) < 0 ? 1 : 0);
                }
                int status = 0;
                CHECK(waitpid(pid, &status, 0) == pid);
                if (WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL)
                        killed++;
                else {
                        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
                        completed++;
                }
                int rc = qcheck(path);
                if (rc != 0 && rc != 3)
                        test_fail(__FILE__, __LINE__, "killed after write %" PRIu64 ": qemu-img check says %d", n, rc);
                uint64_t sz = 0;
                uint8_t *v = read_view(path, &sz);
                CHECK(v && sz == n_old);
                for (uint64_t i = 0; v && i < sz; i++)
                        if (v[i] != old_view[i] && v[i] != new_view[i]) {
                                test_fail(__FILE__, __LINE__,
                                          "killed after write %" PRIu64 ": byte %" PRIu64 " is neither old nor new", n,
                                          i);
                                break;
                        }
                free(v);
                if (rc == 3) {
                        CHECK_EQ_INT(run(NULL, "qemu-img", "check", "-q", "-r", "leaks", path, NULL), 0);
                        CHECK_EQ_INT(qcheck(path), 0);
                }
        }
        CHECK(killed >= 20);
        CHECK_EQ_INT(completed, 1);
        free(old_view);
        free(new_view);
}

/* Truncates the file at *userdata once, at the first progress report. */
static int truncate_at_first_progress(uint64_t done, uint64_t total, void *userdata) {
        (void) done;
        (void) total;
        const char **path = userdata;
        if (*path) {
                CHECK_EQ_INT(truncate(*path, 0), 0);
                *path = NULL;
        }
        return 0;
}

TEST(image_convert_source_truncated_is_an_error) {
        /* Someone truncates the source mid-convert, as truncate(1) may
         * whatever QEMU's locks say. Mapped source data faults (SIGBUS)
         * once the file shrinks under the mapping; convert must fail with
         * an error, not die. To qcow2, the first progress report comes
         * after window 0 was mapped and before it is read for its zeros,
         * so the truncation always lands there. Where SIGBUS has a
         * handler already (a sanitizer's), nothing is mapped and the
         * convert only must not crash. */
        struct sigaction sa;
        CHECK_EQ_INT(sigaction(SIGBUS, NULL, &sa), 0);
        bool mapping = !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_DFL;
        char src[512], out[512];
        snprintf(src, sizeof(src), "%s/shrinks.raw", test_tmpdir());
        snprintf(out, sizeof(out), "%s/shrinks.qcow2", test_tmpdir());
        int fd = open(src, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        uint8_t *chunk = malloc(1 << 20);
        CHECK(fd >= 0 && chunk != NULL);
        if (fd < 0 || !chunk) {
                free(chunk);
                return;
        }
        memset(chunk, 0x5a, 1 << 20);
        for (int i = 0; i < 64; i++)
                CHECK_EQ_INT(image_pwrite_all(fd, chunk, 1 << 20, (uint64_t) i << 20), 0);
        free(chunk);
        close(fd);
        struct vh_image *img = open_img(src, 0);
        CHECK(img != NULL);
        if (!img)
                return;
        const char *victim = src;
        struct vh_image_convert_options co = {
                .format = VH_IMAGE_FORMAT_QCOW2, .progress = truncate_at_first_progress, .userdata = &victim,
        };
        struct vh_error err = {};
        int r = vh_image_convert(img, out, &co, &err);
        vh_image_free(img);
        CHECK(victim == NULL);
        if (mapping) {
                CHECK_EQ_INT(r, -EIO);
                if (!strstr(err.msg, "shrank while it was being converted"))
                        test_fail(__FILE__, __LINE__, "the error names no shrunk source: '%s'", err.msg);
                CHECK(access(out, F_OK) < 0); /* no output left behind */
        }
        unlink(out);
}

/* Writes 'len' bytes of 'byte' at 'offset' of the image at 'path'. */
static int fill(const char *path, uint64_t offset, uint64_t len, int byte) {
        struct vh_image *img = open_img(path, VH_IMAGE_OPEN_READ_WRITE);
        if (!img)
                return -EIO;
        uint8_t *buf = malloc((size_t) len);
        struct vh_error err = {};
        int r = buf ? 0 : -ENOMEM;
        if (buf) {
                memset(buf, byte, (size_t) len);
                r = vh_image_write(img, offset, buf, (size_t) len, &err);
        }
        if (r >= 0)
                r = vh_image_flush(img, &err);
        free(buf);
        vh_image_free(img);
        return r;
}

/* Whether [offset, offset + len) of 'img' reads as 'byte' throughout. */
static bool reads_as(struct vh_image *img, uint64_t offset, uint64_t len, int byte) {
        uint8_t *buf = malloc((size_t) len);
        struct vh_error err = {};
        bool ok = buf && vh_image_read(img, offset, buf, (size_t) len, &err) == 0;
        for (uint64_t i = 0; ok && i < len; i++)
                ok = buf[i] == (uint8_t) byte;
        free(buf);
        return ok;
}

/* convert of several sources and -n (vh_image_convert_concat,
 * vh_image_convert_into): each source's data at its place in the sum,
 * not cluster aligned; zeros written into an existing output; an output
 * smaller than the sources refused. */
TEST(image_convert_concat_and_into) {
        if (!have_qemu())
                return;
        struct vh_error err = {};
        CHECK_EQ_INT(create_qcow2(P(0, "c1.qcow2"), 1 << 20, 0, 0, 0, false, NULL), 0);
        CHECK_EQ_INT(fill(P(0, "c1.qcow2"), 0, 65536, 0x11), 0);
        CHECK_EQ_INT(fill(P(0, "c1.qcow2"), 1015808, 32768, 0x12), 0);
        struct vh_image_create_options ro = { .format = VH_IMAGE_FORMAT_RAW, .size = 307200, .replace_data = true };
        CHECK_EQ_INT(vh_image_create(P(1, "c2.raw"), &ro, &err), 0);
        CHECK_EQ_INT(fill(P(1, "c2.raw"), 4096, 8192, 0x22), 0);
        struct vh_image *srcs[2] = { open_img(P(0, "c1.qcow2"), 0), open_img(P(1, "c2.raw"), 0) };
        CHECK(srcs[0] && srcs[1]);
        if (!srcs[0] || !srcs[1])
                goto out;

        struct vh_image_convert_options co = { .format = VH_IMAGE_FORMAT_QCOW2, .replace_data = true };
        CHECK_EQ_INT(vh_image_convert_concat(srcs, 2, P(2, "cat.qcow2"), &co, &err), 0);
        CHECK_EQ_INT(qcheck(P(2, "cat.qcow2")), 0);
        struct vh_image *cat = open_img(P(2, "cat.qcow2"), 0);
        CHECK(cat);
        if (cat) {
                CHECK_EQ_U64(vh_image_virtual_size(cat), (1 << 20) + 307200);
                CHECK(reads_as(cat, 0, 65536, 0x11));
                CHECK(reads_as(cat, 65536, 1015808 - 65536, 0));
                CHECK(reads_as(cat, 1015808, 32768, 0x12));
                CHECK(reads_as(cat, (1 << 20), 4096, 0));
                CHECK(reads_as(cat, (1 << 20) + 4096, 8192, 0x22));
                CHECK(reads_as(cat, (1 << 20) + 12288, 307200 - 12288, 0));
        }
        vh_image_free(cat);
        co.backing_file = "c1.qcow2";
        co.backing_format = VH_IMAGE_FORMAT_QCOW2;
        CHECK_EQ_INT(vh_image_convert_concat(srcs, 2, P(3, "catb.qcow2"), &co, &err), -EINVAL);
        co.backing_file = NULL;

        /* -n: into a raw file full of 0x55, larger than both. */
        ro.size = 2 << 20;
        CHECK_EQ_INT(vh_image_create(P(3, "into.raw"), &ro, &err), 0);
        CHECK_EQ_INT(fill(P(3, "into.raw"), 0, 2 << 20, 0x55), 0);
        struct vh_image *into = open_img(P(3, "into.raw"), VH_IMAGE_OPEN_READ_WRITE);
        CHECK(into);
        if (into) {
                CHECK_EQ_INT(vh_image_convert_into(srcs, 2, into, false, &co, &err), 0);
                CHECK(reads_as(into, 0, 65536, 0x11));
                CHECK(reads_as(into, 65536, 1015808 - 65536, 0));
                CHECK(reads_as(into, (1 << 20) + 4096, 8192, 0x22));
                CHECK(reads_as(into, (1 << 20) + 12288, 307200 - 12288, 0));
                /* Past the sources: left alone. */
                CHECK(reads_as(into, (1 << 20) + 307200, (1 << 20) - 307200, 0x55));
        }
        vh_image_free(into);
        ro.size = 1 << 20;
        CHECK_EQ_INT(vh_image_create(P(3, "small.raw"), &ro, &err), 0);
        into = open_img(P(3, "small.raw"), VH_IMAGE_OPEN_READ_WRITE);
        CHECK(into);
        if (into)
                CHECK_EQ_INT(vh_image_convert_into(srcs, 2, into, false, &co, &err), -ENOSPC);
        vh_image_free(into);
out:
        vh_image_free(srcs[0]);
        vh_image_free(srcs[1]);
}

/* convert -l (vh_image_snapshot_load): the snapshot's state by name, by
 * id, by both; no match, raw and read-write images refused; converting
 * the loaded image gives the snapshot's data (also on the parallel path,
 * whose workers load it too). */
TEST(image_snapshot_load) {
        if (!have_qemu())
                return;
        struct vh_error err = {};
        CHECK_EQ_INT(create_qcow2(P(0, "sn.qcow2"), 4 << 20, 0, 0, 0, false, NULL), 0);
        CHECK_EQ_INT(fill(P(0, "sn.qcow2"), 0, 1 << 20, 0x11), 0);
        struct vh_image *img = open_img(P(0, "sn.qcow2"), VH_IMAGE_OPEN_READ_WRITE);
        CHECK(img);
        if (!img)
                return;
        CHECK_EQ_INT(vh_image_snapshot_create(img, "first", &err), 0);
        CHECK_EQ_INT(vh_image_snapshot_load(img, NULL, "first", &err), -EINVAL); /* read-write */
        vh_image_free(img);
        CHECK_EQ_INT(fill(P(0, "sn.qcow2"), 0, 3 << 20, 0x22), 0);

        static const struct {
                const char *id, *name;
                int r;
        } cases[] = {
                { NULL, "first", 0 }, { "1", NULL, 0 },      { "1", "first", 0 },
                { "2", "first", -ENOENT }, { NULL, "1", -ENOENT }, { NULL, "nope", -ENOENT },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                img = open_img(P(0, "sn.qcow2"), 0);
                CHECK(img);
                if (!img)
                        continue;
                CHECK_EQ_INT(vh_image_snapshot_load(img, cases[i].id, cases[i].name, &err), cases[i].r);
                bool loaded = cases[i].r == 0;
                CHECK(reads_as(img, 0, 1 << 20, loaded ? 0x11 : 0x22));
                CHECK(reads_as(img, 1 << 20, 2 << 20, loaded ? 0 : 0x22));
                CHECK_EQ_U64(vh_image_virtual_size(img), 4 << 20);
                if (loaded && i == 0) {
                        struct vh_image_convert_options co = { .format = VH_IMAGE_FORMAT_RAW, .replace_data = true };
                        CHECK_EQ_INT(vh_image_convert(img, P(1, "sn.raw"), &co, &err), 0);
                        struct vh_image *out = open_img(P(1, "sn.raw"), 0);
                        CHECK(out && reads_as(out, 0, 1 << 20, 0x11) && reads_as(out, 1 << 20, 3 << 20, 0));
                        vh_image_free(out);
                }
                vh_image_free(img);
        }
        struct vh_image_create_options ro = { .format = VH_IMAGE_FORMAT_RAW, .size = 1 << 20, .replace_data = true };
        CHECK_EQ_INT(vh_image_create(P(2, "r.raw"), &ro, &err), 0);
        img = open_img(P(2, "r.raw"), 0);
        CHECK(img);
        if (img)
                CHECK_EQ_INT(vh_image_snapshot_load(img, NULL, "first", &err), -EOPNOTSUPP);
        vh_image_free(img);
        CHECK_EQ_INT(qcheck(P(0, "sn.qcow2")), 0);
}
