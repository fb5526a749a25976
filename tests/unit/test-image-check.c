/* tests/unit/test-image-check.c: unit tests for the inspection operations
 * (src/image/check.c, map.c, measure.c, qcow2-meta.c): a table of faults
 * planted in a qcow2 image, each with the category qemu-img puts it in
 * (leak, corruption, check error) and the line it reports; repairs with
 * -r leaks and -r all, after which the image checks clean (also for
 * qemu-img, when it is installed); refcount entries of every width;
 * measure's numbers against values qemu-img printed; map of a known
 * layout. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/macro.h"
#include "base/process.h"
#include "base/strutil.h"
#include "image/inspect.h"
#include "image/qcow2.h"
#include "test.h"
#include "vmhost/image.h"

#define CS 65536u

static char *cpath(const char *name) {
        char *p = strdup_printf("%s/%s", test_tmpdir(), name);
        if (!p)
                abort();
        return p;
}

/* An image of 8 MiB with 64 KiB clusters and guest clusters 0..5 and 40
 * written, by the sequential writer: header, 7 data clusters (1..7),
 * refcount block, refcount table, one L2 table, L1 table. */
static int make_image(const char *path, unsigned refcount_order) {
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
                return -errno;
        struct qcow2_writer_params p = {
                .virtual_size = 8u << 20,
                .cluster_bits = 16,
                .version = 3,
                .refcount_order = refcount_order,
        };
        struct qcow2_writer *w = NULL;
        struct vh_error err = {};
        uint8_t *buf = malloc(CS);
        int r = qcow2_writer_new(fd, &p, &w, &err);
        static const uint64_t clusters[] = { 0, 1, 2, 3, 4, 5, 40 };
        for (size_t i = 0; r >= 0 && i < ELEMENTSOF(clusters); i++) {
                memset(buf, (int) (0x10 + i), CS);
                r = qcow2_writer_add_cluster(w, clusters[i], buf, &err);
        }
        if (r >= 0)
                r = qcow2_writer_finish(w, &err);
        free(buf);
        qcow2_writer_free(w);
        close(fd);
        return r;
}

/* Where the tables of an image are, read back from its header. */
struct layout {
        uint64_t l1, reftable, refblock, l2, file_size;
        unsigned order;
};

static int get_layout(const char *path, struct layout *ret) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        struct qcow2_meta *m = NULL;
        int r = qcow2_meta_load(fd, path, 0, &m, NULL);
        if (r >= 0) {
                ret->l1 = m->h.l1_table_offset;
                ret->reftable = m->h.refcount_table_offset;
                ret->refblock = m->reftable[0] & QCOW2_REFT_OFFSET_MASK;
                ret->l2 = m->l1[0] & QCOW2_L1E_OFFSET_MASK;
                ret->file_size = m->file_len;
                ret->order = m->h.refcount_order;
        }
        qcow2_meta_free(m);
        close(fd);
        return r;
}

static int poke64(const char *path, uint64_t offset, uint64_t v) {
        uint8_t b[8];
        be64_store(b, v);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        int r = image_pwrite_all(fd, b, 8, offset);
        close(fd);
        return r;
}

static uint64_t peek64(const char *path, uint64_t offset) {
        uint8_t b[8] = {};
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
                if (pread(fd, b, 8, (off_t) offset) != 8)
                        memset(b, 0, 8);
                close(fd);
        }
        return be64_load(b);
}

static int set_refcount(const char *path, const struct layout *l, uint64_t cluster, uint64_t v) {
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        uint8_t *block = malloc(CS);
        int r = pread(fd, block, CS, (off_t) l->refblock) == CS ? 0 : -EIO;
        if (r >= 0) {
                qcow2_refblock_entry_set(block, cluster, l->order, v);
                r = image_pwrite_all(fd, block, CS, l->refblock);
        }
        free(block);
        close(fd);
        return r;
}

/* The faults, planted into a fresh image. */
enum fault {
        FAULT_NONE,
        FAULT_LEAK,             /* an unused cluster with refcount 1 */
        FAULT_REFCOUNT_RAISED,  /* a data cluster with refcount 2 */
        FAULT_REFCOUNT_DROPPED, /* a data cluster with refcount 0 */
        FAULT_L2_PAST_EOF,      /* an L2 entry pointing far past the end */
        FAULT_TWO_REFS,         /* two L2 entries on one cluster */
        FAULT_L1_RESERVED,      /* reserved bits in an L1 entry */
        FAULT_COPIED_MISSING,   /* a data cluster with refcount 1 without COPIED */
        FAULT_REFBLOCK_MISALIGNED,
};

static int plant(const char *path, enum fault f) {
        struct layout l;
        int r = get_layout(path, &l);
        if (r < 0)
                return r;
        uint64_t e0 = peek64(path, l.l2), e1 = peek64(path, l.l2 + 8);
        switch (f) {
        case FAULT_NONE:
                return 0;
        case FAULT_LEAK: {
                uint64_t c = l.file_size / CS;
                if (truncate(path, (off_t) ((c + 1) * CS)) < 0)
                        return -errno;
                return set_refcount(path, &l, c, 1);
        }
        case FAULT_REFCOUNT_RAISED:
                return set_refcount(path, &l, (e0 & QCOW2_L2E_OFFSET_MASK) / CS, 2);
        case FAULT_REFCOUNT_DROPPED:
                return set_refcount(path, &l, (e0 & QCOW2_L2E_OFFSET_MASK) / CS, 0);
        case FAULT_L2_PAST_EOF:
                return poke64(path, l.l2, QCOW2_OFLAG_COPIED | (l.file_size + 100 * CS));
        case FAULT_TWO_REFS:
                return poke64(path, l.l2 + 8, (e1 & ~QCOW2_L2E_OFFSET_MASK) | (e0 & QCOW2_L2E_OFFSET_MASK));
        case FAULT_L1_RESERVED:
                return poke64(path, l.l1, peek64(path, l.l1) | 0x100);
        case FAULT_COPIED_MISSING:
                return poke64(path, l.l2, e0 & ~QCOW2_OFLAG_COPIED);
        case FAULT_REFBLOCK_MISALIGNED:
                return poke64(path, l.reftable, l.refblock + 512);
        }
        return -EINVAL;
}

struct report_log {
        char text[8192];
};

static void log_line(const char *line, void *userdata) {
        struct report_log *log = userdata;
        size_t n = strlen(log->text);
        snprintf(log->text + n, sizeof(log->text) - n, "%s\n", line);
}

static int check(const char *path, unsigned repair, struct vh_image_check_result *res, struct report_log *log) {
        struct vh_image_check_options o = {
                .format = VH_IMAGE_FORMAT_PROBE,
                .repair = repair,
                .report = log_line,
                .userdata = log,
        };
        if (log)
                log->text[0] = '\0';
        else
                o.report = NULL;
        struct vh_error err = {};
        int r = vh_image_check(path, &o, res, &err);
        if (r < 0 && getenv("VERBOSE"))
                fprintf(stderr, "  check %s: %s\n", path, vh_error_message(&err, r));
        return r;
}

/* Without qemu-img the test still checks our own verdict, and says that
 * QEMU's was left out. */
static bool have_qemu_img(void) {
        return test_need_program("qemu-img", "qemu-utils");
}

static int qemu_img_check(const char *path) {
        const char *argv[] = { "qemu-img", "check", "-q", path, NULL };
        char *out = NULL;
        int r = process_run(test_ctx(), (char *const *) argv, 120 * 1000 /* qemu-img: seconds */, 1 << 16, &out, NULL);
        free(out);
        return r;
}

static const struct fault_case {
        const char *name;
        enum fault fault;
        uint64_t corruptions, leaks;
        const char *line;      /* a line the check reports */
        int repair_with;       /* VH_IMAGE_CHECK_REPAIR_* that cleans it; -1: cannot be repaired */
} fault_cases[] = {
        { "clean", FAULT_NONE, 0, 0, NULL, 0 },
        { "leak", FAULT_LEAK, 0, 1, "Leaked cluster 12 refcount=1 reference=0", VH_IMAGE_CHECK_REPAIR_LEAKS },
        { "refcount-raised", FAULT_REFCOUNT_RAISED, 1, 1, "Leaked cluster 1 refcount=2 reference=1",
          VH_IMAGE_CHECK_REPAIR_LEAKS },
        { "refcount-dropped", FAULT_REFCOUNT_DROPPED, 2, 0, "ERROR cluster 1 refcount=0 reference=1",
          VH_IMAGE_CHECK_REPAIR_ALL },
        { "l2-past-eof", FAULT_L2_PAST_EOF, 2, 1,
          "ERROR: counting reference for region exceeding the end of the file by one cluster or more", -1 },
        { "two-refs", FAULT_TWO_REFS, 1, 1, "ERROR cluster 1 refcount=1 reference=2", VH_IMAGE_CHECK_REPAIR_ALL },
        { "l1-reserved", FAULT_L1_RESERVED, 2, 0, "ERROR found L1 entry with reserved bits set", -1 },
        { "copied-missing", FAULT_COPIED_MISSING, 1, 0, "ERROR OFLAG_COPIED data cluster: l2_entry=10000 refcount=1",
          VH_IMAGE_CHECK_REPAIR_ALL },
        { "refblock-misaligned", FAULT_REFBLOCK_MISALIGNED, 1, 0,
          "ERROR refcount block 0 is not cluster aligned; refcount table entry corrupted", VH_IMAGE_CHECK_REPAIR_ALL },
};

TEST(image_check_fault_table) {
        struct report_log log;
        for (size_t i = 0; i < ELEMENTSOF(fault_cases); i++) {
                const struct fault_case *fc = &fault_cases[i];
                _cleanup_free_ char *path = cpath("f.qcow2");
                CHECK(make_image(path, 4) >= 0);
                CHECK(plant(path, fc->fault) >= 0);

                struct vh_image_check_result res = {};
                int r = check(path, 0, &res, &log);
                if (fc->fault == FAULT_REFBLOCK_MISALIGNED) {
                        /* No refcount can be read: the check cannot be completed
                         * in every part (qemu-img: check errors, exit 1). */
                        CHECK(r >= 0);
                        CHECK(res.check_errors > 0);
                } else {
                        CHECK_EQ_INT(r, 0);
                        CHECK_EQ_INT(res.check_errors, 0);
                        if (fc->fault != FAULT_L1_RESERVED)
                                CHECK_EQ_U64(res.leaks, fc->leaks);
                }
                if (fc->fault != FAULT_L1_RESERVED)
                        CHECK_EQ_U64(res.corruptions, fc->corruptions);
                else
                        CHECK(res.corruptions >= 1);
                if (fc->line && !strstr(log.text, fc->line))
                        test_fail(__FILE__, __LINE__, "%s: no line '%s' in:\n%s", fc->name, fc->line, log.text);
                if (fc->fault == FAULT_NONE) {
                        CHECK_EQ_U64(res.allocated_clusters, 7);
                        CHECK_EQ_U64(res.total_clusters, 128);
                        /* guest cluster 40 follows 5 in the file: not fragmented */
                        CHECK_EQ_U64(res.fragmented_clusters, 0);
                        CHECK(res.image_end_offset > 0);
                }
                if (fc->repair_with <= 0)
                        continue;

                struct vh_image_check_result fixed = {};
                r = check(path, (unsigned) fc->repair_with, &fixed, &log);
                CHECK_EQ_INT(r, 0);
                if (fixed.corruptions || fixed.leaks || fixed.check_errors)
                        test_fail(__FILE__, __LINE__, "%s: after repair %" PRIu64 " corruptions, %" PRIu64 " leaks:\n%s",
                                  fc->name, fixed.corruptions, fixed.leaks, log.text);
                CHECK(fixed.leaks_fixed + fixed.corruptions_fixed > 0);
                struct vh_image_check_result again = {};
                CHECK_EQ_INT(check(path, 0, &again, NULL), 0);
                CHECK_EQ_U64(again.corruptions + again.leaks + again.check_errors, 0);
                if (have_qemu_img() && qemu_img_check(path) != 0)
                        test_fail(__FILE__, __LINE__, "%s: qemu-img check fails after the repair", fc->name);
        }
}

TEST(image_check_leaks_repair_keeps_data) {
        _cleanup_free_ char *path = cpath("d.qcow2");
        CHECK(make_image(path, 4) >= 0);
        CHECK(plant(path, FAULT_REFCOUNT_RAISED) >= 0);
        struct vh_image_check_result res = {};
        CHECK_EQ_INT(check(path, VH_IMAGE_CHECK_REPAIR_LEAKS, &res, NULL), 0);
        /* -r leaks lowers the refcount; the COPIED flag was right all along. */
        CHECK_EQ_U64(res.leaks_fixed, 1);
        CHECK_EQ_U64(res.corruptions, 0);

        struct vh_image *img = NULL;
        struct vh_image_open_options o = { .format = VH_IMAGE_FORMAT_QCOW2 };
        CHECK(vh_image_open(path, &o, &img, NULL) >= 0);
        uint8_t buf[512];
        if (img) {
                CHECK(vh_image_read(img, 0, buf, sizeof(buf), NULL) >= 0);
                CHECK_EQ_INT(buf[0], 0x10);
                CHECK(vh_image_read(img, 40 * CS, buf, sizeof(buf), NULL) >= 0);
                CHECK_EQ_INT(buf[511], 0x16);
        }
        vh_image_free(img);
}

TEST(image_check_refcount_widths) {
        /* A leak in images with 1- to 64-bit refcount entries. */
        for (unsigned order = 0; order <= 6; order++) {
                _cleanup_free_ char *path = cpath("w.qcow2");
                CHECK(make_image(path, order) >= 0);
                struct vh_image_check_result res = {};
                CHECK_EQ_INT(check(path, 0, &res, NULL), 0);
                CHECK_EQ_U64(res.corruptions + res.leaks, 0);
                CHECK(plant(path, FAULT_LEAK) >= 0);
                CHECK_EQ_INT(check(path, 0, &res, NULL), 0);
                CHECK_EQ_U64(res.leaks, 1);
                CHECK_EQ_INT(check(path, VH_IMAGE_CHECK_REPAIR_LEAKS, &res, NULL), 0);
                CHECK_EQ_U64(res.leaks, 0);
                CHECK_EQ_U64(res.leaks_fixed, 1);
        }
}

TEST(image_check_refuses_raw_and_garbage) {
        _cleanup_free_ char *raw = cpath("r.img");
        int fd = open(raw, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
        CHECK(fd >= 0 && ftruncate(fd, 1 << 20) == 0);
        safe_close(fd);
        struct vh_image_check_result res;
        struct vh_error err = {};
        CHECK_EQ_INT(vh_image_check(raw, NULL, &res, &err), -EOPNOTSUPP);

        _cleanup_free_ char *bad = cpath("bad.qcow2");
        CHECK(make_image(bad, 4) >= 0);
        CHECK(poke64(bad, 40, 0x123) >= 0); /* l1_table_offset misaligned */
        CHECK(vh_image_check(bad, NULL, &res, &err) < 0);
        CHECK(strstr(err.msg, "l1_table_offset") != NULL);
}

TEST(image_refblock_entries_round_trip) {
        uint8_t block[64] = {};
        for (unsigned order = 0; order <= 6; order++) {
                unsigned bits = 1u << order;
                uint64_t max = bits == 64 ? UINT64_MAX : (UINT64_C(1) << bits) - 1;
                memset(block, 0, sizeof(block));
                uint64_t n = sizeof(block) * 8 / bits;
                for (uint64_t i = 0; i < n; i++)
                        qcow2_refblock_entry_set(block, i, order, (i * 7 + 1) & max);
                for (uint64_t i = 0; i < n; i++)
                        CHECK_EQ_U64(qcow2_refblock_entry_get(block, i, order), (i * 7 + 1) & max);
        }
        /* 16-bit entries are big-endian; sub-byte ones start at bit 0. */
        memset(block, 0, sizeof(block));
        qcow2_refblock_entry_set(block, 1, 4, 0x0102);
        CHECK_EQ_INT(block[2], 1);
        CHECK_EQ_INT(block[3], 2);
        memset(block, 0, sizeof(block));
        qcow2_refblock_entry_set(block, 0, 0, 1);
        CHECK_EQ_INT(block[0], 1);
}

TEST(image_measure_matches_qemu_img) {
        /* Numbers printed by qemu-img 7.2 'measure -O qcow2 --size ...'. */
        static const struct {
                uint64_t size;
                uint32_t cluster_size;
                unsigned refcount_bits;
                uint64_t required, fully;
        } cases[] = {
                { UINT64_C(1) << 30, 0, 0, 393216, 1074135040 },
                { 10u << 20, 0, 0, 327680, 10813440 },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct vh_image_measure_options o = {
                        .format = VH_IMAGE_FORMAT_QCOW2,
                        .size = cases[i].size,
                        .cluster_size = cases[i].cluster_size,
                        .refcount_bits = cases[i].refcount_bits,
                };
                struct vh_image_measure_result res = {};
                CHECK_EQ_INT(vh_image_measure(NULL, &o, &res, NULL), 0);
                CHECK_EQ_U64(res.required, cases[i].required);
                CHECK_EQ_U64(res.fully_allocated, cases[i].fully);
                CHECK(!res.has_bitmaps);
        }
        struct vh_image_measure_options raw = { .format = VH_IMAGE_FORMAT_RAW, .size = 1000 };
        struct vh_image_measure_result res = {};
        CHECK_EQ_INT(vh_image_measure(NULL, &raw, &res, NULL), 0);
        CHECK_EQ_U64(res.required, 1024);
        CHECK_EQ_U64(res.fully_allocated, 1024);

        /* An image with 7 data clusters needs 7 clusters of data. */
        _cleanup_free_ char *path = cpath("m.qcow2");
        CHECK(make_image(path, 4) >= 0);
        struct vh_image *img = NULL;
        CHECK(vh_image_open(path, NULL, &img, NULL) >= 0);
        if (img) {
                struct vh_image_measure_options q = { .format = VH_IMAGE_FORMAT_QCOW2 };
                CHECK_EQ_INT(vh_image_measure(img, &q, &res, NULL), 0);
                CHECK_EQ_U64(res.required - (res.fully_allocated - (8u << 20)), 7 * CS);
                CHECK(res.has_bitmaps);
                CHECK_EQ_U64(res.bitmaps, 0);
        }
        vh_image_free(img);
        CHECK_EQ_U64(qcow2_refcount_metadata_size(16388, CS, 4, NULL, NULL), 2 * CS);
}

struct collected {
        struct vh_image_map_entry e[16];
        size_t n;
};

static int collect(const struct vh_image_map_entry *e, const struct vh_image_map_entry *next, void *userdata) {
        struct collected *c = userdata;
        if (c->n < ELEMENTSOF(c->e))
                c->e[c->n++] = *e;
        return 0;
}

TEST(image_map_known_layout) {
        _cleanup_free_ char *path = cpath("map.qcow2");
        CHECK(make_image(path, 4) >= 0);
        struct vh_image *img = NULL;
        CHECK(vh_image_open(path, NULL, &img, NULL) >= 0);
        if (!img)
                return;
        struct collected c = {};
        CHECK_EQ_INT(vh_image_map_walk(img, 0, UINT64_MAX, false, collect, &c, NULL), 0);
        vh_image_free(img);
        /* data 0..6 clusters at host cluster 1, unallocated, data at guest
         * cluster 40 (host 7), unallocated to the end. */
        CHECK_EQ_INT(c.n, 4);
        CHECK_EQ_U64(c.e[0].start, 0);
        CHECK_EQ_U64(c.e[0].length, 6 * CS);
        CHECK(c.e[0].data && !c.e[0].zero && c.e[0].present && c.e[0].has_offset);
        CHECK_EQ_U64(c.e[0].offset, CS);
        CHECK(!c.e[1].data && c.e[1].zero && !c.e[1].present && !c.e[1].has_offset);
        CHECK_EQ_U64(c.e[2].start, 40 * CS);
        CHECK_EQ_U64(c.e[2].offset, 7 * CS);
        CHECK_EQ_U64(c.e[3].start + c.e[3].length, 8u << 20);
}

TEST(image_compare_finds_first_sector) {
        _cleanup_free_ char *a = cpath("a.qcow2"), *b = cpath("b.qcow2");
        CHECK(make_image(a, 4) >= 0);
        CHECK(make_image(b, 4) >= 0);
        struct vh_image *ia = NULL, *ib = NULL;
        struct vh_image_compare_result res = {};
        CHECK(vh_image_open(a, NULL, &ia, NULL) >= 0);
        CHECK(vh_image_open(b, NULL, &ib, NULL) >= 0);
        if (ia && ib) {
                CHECK_EQ_INT(vh_image_compare(ia, ib, NULL, &res, NULL), 0);
                CHECK_EQ_INT(res.outcome, VH_IMAGE_COMPARE_IDENTICAL);
        }
        vh_image_free(ib);
        ib = NULL;
        /* One byte in guest cluster 3, at 3*CS + 1000: sector 3*CS + 512. */
        struct layout l;
        CHECK(get_layout(b, &l) >= 0);
        uint64_t host = peek64(b, l.l2 + 3 * 8) & QCOW2_L2E_OFFSET_MASK;
        int fd = open(b, O_WRONLY | O_CLOEXEC);
        CHECK(fd >= 0 && pwrite(fd, "x", 1, (off_t) (host + 1000)) == 1);
        safe_close(fd);
        CHECK(vh_image_open(b, NULL, &ib, NULL) >= 0);
        if (ia && ib) {
                CHECK_EQ_INT(vh_image_compare(ia, ib, NULL, &res, NULL), 0);
                CHECK_EQ_INT(res.outcome, VH_IMAGE_COMPARE_CONTENT_MISMATCH);
                CHECK_EQ_U64(res.offset, 3 * CS + 512);
        }
        vh_image_free(ia);
        vh_image_free(ib);
}
