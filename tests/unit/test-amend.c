/* tests/unit/test-amend.c: unit tests for vh_image_amend() (image/amend.c),
 * mostly its refcount rewrite: from every refcount width to every other
 * one, over images with data, a snapshot (refcount 2) and 512-byte
 * clusters (many refcount blocks), checked with vmhost's own check (no
 * leaks, no corruptions), the data read back, and the header's fields;
 * a width too narrow for a refcount is refused before anything is
 * written; the version switch both ways keeps data and zero clusters;
 * the option checks refuse what qemu-img refuses; every refusal leaves the
 * file byte for byte as it was (snapshots that prevent a downgrade, a
 * refcount too narrow asked for with an upgrade or lazy refcounts); the
 * zero cluster expansion of a downgrade reports progress from 0 to the
 * total and a cancel leaves a clean version 3 image that reads the same. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/fileio.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "image/image-internal.h"
#include "image/qcow2.h"
#include "test.h"
#include "vmhost/image.h"

static char *tpath(const char *name) {
        char *p = strdup_printf("%s/%s", test_tmpdir(), name);
        if (!p)
                abort();
        return p;
}

/* A qcow2 image of 'size' bytes with a recognisable pattern in every
 * third cluster and zeros written over a range; 'snapshot' adds one. */
static int make_image_v(const char *path, uint32_t cluster_size, unsigned bits, bool snapshot, unsigned version) {
        struct vh_image_create_options co = {
                .format = VH_IMAGE_FORMAT_QCOW2, .size = 1 << 20, .cluster_size = cluster_size,
                .refcount_bits = bits, .replace_data = true, .version = version,
        };
        struct vh_error err = {};
        int r = vh_image_create(path, &co, &err);
        if (r < 0)
                return r;
        struct vh_image_open_options oo = { .format = VH_IMAGE_FORMAT_QCOW2, .flags = VH_IMAGE_OPEN_READ_WRITE };
        _cleanup_(vh_image_freep) struct vh_image *img = NULL;
        r = vh_image_open(path, &oo, &img, &err);
        if (r < 0)
                return r;
        _cleanup_free_ uint8_t *buf = malloc(cluster_size);
        if (!buf)
                return -ENOMEM;
        for (uint64_t off = 0; off < (1 << 20) && r >= 0; off += 3 * (uint64_t) cluster_size) {
                memset(buf, (int) (0x10 + off / cluster_size % 200), cluster_size);
                r = vh_image_write(img, off, buf, cluster_size, &err);
        }
        if (r >= 0 && snapshot)
                r = vh_image_snapshot_create(img, "s1", &err);
        if (r >= 0)
                r = vh_image_write_zeroes(img, 0, 4 * (uint64_t) cluster_size, &err);
        if (r >= 0)
                r = vh_image_flush(img, &err);
        return r;
}

static int make_image(const char *path, uint32_t cluster_size, unsigned bits, bool snapshot) {
        return make_image_v(path, cluster_size, bits, snapshot, 0);
}

static uint8_t *read_all(const char *path) {
        struct vh_image_open_options oo = { .format = VH_IMAGE_FORMAT_QCOW2 };
        _cleanup_(vh_image_freep) struct vh_image *img = NULL;
        if (vh_image_open(path, &oo, &img, NULL) < 0)
                return NULL;
        uint8_t *buf = malloc(1 << 20);
        if (buf && vh_image_read(img, 0, buf, 1 << 20, NULL) < 0) {
                free(buf);
                return NULL;
        }
        return buf;
}

static int amend(const char *path, const struct vh_image_amend_options *o, struct vh_error *err) {
        struct vh_image_open_options oo = { .format = VH_IMAGE_FORMAT_QCOW2, .flags = VH_IMAGE_OPEN_READ_WRITE };
        _cleanup_(vh_image_freep) struct vh_image *img = NULL;
        int r = vh_image_open(path, &oo, &img, err);
        if (r >= 0)
                r = vh_image_amend(img, o, err);
        if (r >= 0)
                r = vh_image_flush(img, err);
        return r;
}

static bool clean(const char *path) {
        struct vh_image_check_options co = { .format = VH_IMAGE_FORMAT_QCOW2 };
        struct vh_image_check_result res = {};
        struct vh_error err = {};
        int r = vh_image_check(path, &co, &res, &err);
        if (r < 0 || res.corruptions || res.leaks || res.check_errors) {
                fprintf(stderr, "  %s: check %d, %" PRIu64 " corruptions, %" PRIu64 " leaks: %s\n", path, r,
                        res.corruptions, res.leaks, vh_error_message(&err, r));
                return false;
        }
        return true;
}

static void info_of(const char *path, struct vh_image_info **ret) {
        struct vh_image_open_options oo = { .format = VH_IMAGE_FORMAT_QCOW2 };
        _cleanup_(vh_image_freep) struct vh_image *img = NULL;
        *ret = NULL;
        if (vh_image_open(path, &oo, &img, NULL) >= 0)
                (void) vh_image_get_info(img, ret, NULL);
}

TEST(amend_refcount_every_width) {
        static const unsigned widths[] = { 1, 2, 4, 8, 16, 32, 64 };
        for (size_t i = 0; i < ELEMENTSOF(widths); i++)
                for (size_t j = 0; j < ELEMENTSOF(widths); j++) {
                        if (i == j)
                                continue;
                        _cleanup_free_ char *p = tpath("rc.qcow2");
                        /* 512-byte clusters: 64 entries per block at 64 bits. */
                        CHECK(make_image(p, 512, widths[i], false) == 0);
                        _cleanup_free_ uint8_t *before = read_all(p);
                        struct vh_image_amend_options o = { .lazy_refcounts = -1, .refcount_bits = widths[j] };
                        struct vh_error err = {};
                        int r = amend(p, &o, &err);
                        if (r < 0)
                                test_fail(__FILE__, __LINE__, "%u -> %u bits: %s", widths[i], widths[j],
                                          vh_error_message(&err, r));
                        CHECK(clean(p));
                        _cleanup_free_ uint8_t *after = read_all(p);
                        CHECK(before && after && memcmp(before, after, 1 << 20) == 0);
                        struct vh_image_info *info;
                        info_of(p, &info);
                        CHECK(info != NULL);
                        if (info)
                                CHECK_EQ_INT(info->refcount_bits, widths[j]);
                        vh_image_info_free(info);
                }
}

TEST(amend_refcount_snapshot_and_too_narrow) {
        _cleanup_free_ char *p = tpath("snap.qcow2");
        CHECK(make_image(p, 4096, 16, true) == 0);
        _cleanup_free_ char *before = NULL;
        size_t before_len = 0;
        CHECK(read_full_file(p, 64 << 20, &before, &before_len) >= 0);
        /* The snapshot shares clusters (refcount 2): one bit is too few. */
        struct vh_image_amend_options o = { .lazy_refcounts = -1, .refcount_bits = 1 };
        struct vh_error err = {};
        CHECK_EQ_INT(amend(p, &o, &err), -EINVAL);
        CHECK(strstr(vh_error_message(&err, -EINVAL), "has a refcount of 2") != NULL);
        _cleanup_free_ char *after = NULL;
        size_t after_len = 0;
        CHECK(read_full_file(p, 64 << 20, &after, &after_len) >= 0);
        CHECK(before && after && before_len == after_len && memcmp(before, after, before_len) == 0);
        /* Two bits hold it; and back to 16. */
        o.refcount_bits = 2;
        CHECK(amend(p, &o, &err) == 0);
        CHECK(clean(p));
        o.refcount_bits = 16;
        CHECK(amend(p, &o, &err) == 0);
        CHECK(clean(p));
}

TEST(amend_version_both_ways) {
        _cleanup_free_ char *p = tpath("ver.qcow2");
        CHECK(make_image(p, 65536, 16, true) == 0);
        _cleanup_free_ uint8_t *before = read_all(p);
        struct vh_image_amend_options o = { .lazy_refcounts = -1, .version = 2 };
        struct vh_error err = {};
        int r = amend(p, &o, &err);
        if (r < 0)
                test_fail(__FILE__, __LINE__, "downgrade: %s", vh_error_message(&err, r));
        CHECK(clean(p));
        struct vh_image_info *info;
        info_of(p, &info);
        CHECK(info && info->qcow2_version == 2);
        vh_image_info_free(info);
        _cleanup_free_ uint8_t *mid = read_all(p);
        CHECK(before && mid && memcmp(before, mid, 1 << 20) == 0);
        o = (struct vh_image_amend_options) { .lazy_refcounts = 1, .version = 3 };
        CHECK(amend(p, &o, &err) == 0);
        CHECK(clean(p));
        info_of(p, &info);
        CHECK(info && info->qcow2_version == 3 && info->lazy_refcounts);
        vh_image_info_free(info);
        _cleanup_free_ uint8_t *after = read_all(p);
        CHECK(after && before && memcmp(before, after, 1 << 20) == 0);
}

TEST(amend_refusals) {
        _cleanup_free_ char *p = tpath("ref.qcow2");
        CHECK(make_image(p, 65536, 16, false) == 0);
        static const struct {
                struct vh_image_amend_options o;
                const char *message;
        } cases[] = {
                { { .lazy_refcounts = 1, .version = 2 }, "Lazy refcounts only supported" },
                { { .lazy_refcounts = -1, .version = 2, .refcount_bits = 8 }, "Refcount widths other than 16" },
                { { .lazy_refcounts = -1, .refcount_bits = 3 }, "power of two" },
                { { .lazy_refcounts = -1, .refcount_bits = 128 }, "power of two" },
                { { .lazy_refcounts = -1, .version = 4 }, "Unknown compatibility level" },
                { { .lazy_refcounts = -1, .size = 512 }, "does not shrink" },
                { { .lazy_refcounts = -1, .size = (2 << 20) + 1 }, "multiple of 512" },
        };
        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                struct vh_error err = {};
                int r = amend(p, &cases[i].o, &err);
                CHECK(r < 0);
                if (r < 0 && !strstr(vh_error_message(&err, r), cases[i].message))
                        test_fail(__FILE__, __LINE__, "case %zu: '%s' lacks '%s'", i, vh_error_message(&err, r),
                                  cases[i].message);
        }
        CHECK(clean(p));
}

/* 'o' is refused with a message holding 'message', and the file is left
 * byte for byte as it was. */
static void refused_unchanged(const char *path, const struct vh_image_amend_options *o, int code, const char *message,
                              int line) {
        _cleanup_free_ char *before = NULL, *after = NULL;
        size_t before_len = 0, after_len = 0;
        if (read_full_file(path, 64 << 20, &before, &before_len) < 0) {
                test_fail(__FILE__, line, "cannot read %s", path);
                return;
        }
        struct vh_error err = {};
        int r = amend(path, o, &err);
        if (r != code || !strstr(vh_error_message(&err, r), message))
                test_fail(__FILE__, line, "got %d '%s', expected %d '%s'", r, vh_error_message(&err, r), code,
                          message);
        if (read_full_file(path, 64 << 20, &after, &after_len) < 0 || before_len != after_len ||
            memcmp(before, after, before_len) != 0)
                test_fail(__FILE__, line, "the refusal changed the file");
}

static int resize_to(const char *path, uint64_t size) {
        struct vh_image_open_options oo = { .format = VH_IMAGE_FORMAT_QCOW2, .flags = VH_IMAGE_OPEN_READ_WRITE };
        _cleanup_(vh_image_freep) struct vh_image *img = NULL;
        int r = vh_image_open(path, &oo, &img, NULL);
        if (r >= 0)
                r = vh_image_resize(img, size, false, NULL);
        if (r >= 0)
                r = vh_image_flush(img, NULL);
        return r;
}

TEST(amend_refusals_before_any_write) {
        _cleanup_free_ char *p = tpath("early.qcow2");
        /* A snapshot of another disk size: version 2 cannot record it. */
        CHECK(make_image(p, 65536, 16, true) == 0);
        CHECK(resize_to(p, 2 << 20) == 0);
        refused_unchanged(p, &(struct vh_image_amend_options) { .lazy_refcounts = -1, .version = 2 }, -ENOTSUP,
                          "Internal snapshots prevent downgrade of image", __LINE__);
        /* The same size now, but the downgrade asks for a larger one. */
        CHECK(make_image(p, 65536, 16, true) == 0);
        refused_unchanged(p, &(struct vh_image_amend_options) { .lazy_refcounts = -1, .version = 2, .size = 2 << 20 },
                          -ENOTSUP, "Internal snapshots prevent downgrade of image", __LINE__);
        /* A refcount of 2 (the snapshot) with an upgrade, or lazy refcounts,
         * and one bit: the header writes must not come first. */
        CHECK(make_image_v(p, 65536, 16, true, 2) == 0);
        refused_unchanged(p, &(struct vh_image_amend_options) { .lazy_refcounts = -1, .version = 3, .refcount_bits = 1 },
                          -EINVAL, "has a refcount of 2", __LINE__);
        CHECK(make_image(p, 65536, 16, true) == 0);
        refused_unchanged(p, &(struct vh_image_amend_options) { .lazy_refcounts = 1, .refcount_bits = 1 }, -EINVAL,
                          "has a refcount of 2", __LINE__);
        /* A downgrade keeping a width other than 16: qemu-img's message. */
        CHECK(make_image(p, 65536, 64, false) == 0);
        refused_unchanged(p, &(struct vh_image_amend_options) { .lazy_refcounts = -1, .version = 2 }, -ENOTSUP,
                          "compat=0.10 requires refcount_bits=16", __LINE__);
        /* A version 2 image with a snapshot cannot grow: said once, without
         * the file name (the caller names it). */
        CHECK(make_image_v(p, 65536, 16, true, 2) == 0);
        refused_unchanged(p, &(struct vh_image_amend_options) { .lazy_refcounts = -1, .size = 2 << 20 }, -EOPNOTSUPP,
                          "a version 2 image with internal snapshots cannot be resized", __LINE__);
        struct vh_error err = {};
        int r = amend(p, &(struct vh_image_amend_options) { .lazy_refcounts = -1, .size = 2 << 20 }, &err);
        CHECK(r < 0 && !strstr(vh_error_message(&err, r), "early.qcow2"));
        CHECK(clean(p));
}

struct progress_log {
        uint64_t first, last, total, calls, cancel_at;
        bool backwards;
};

static int log_progress(uint64_t done, uint64_t total, void *userdata) {
        struct progress_log *l = userdata;
        if (l->calls == 0)
                l->first = done;
        else if (done < l->last)
                l->backwards = true;
        l->last = done;
        l->total = total;
        l->calls++;
        return l->cancel_at && l->calls >= l->cancel_at;
}

TEST(amend_downgrade_progress_and_cancel) {
        _cleanup_free_ char *p = tpath("prog.qcow2");
        /* 512-byte clusters: 1 MiB is 32 L1 entries. */
        CHECK(make_image(p, 512, 16, true) == 0);
        _cleanup_free_ uint8_t *before = read_all(p);

        struct progress_log l = { .cancel_at = 5 };
        struct vh_image_amend_options o = { .lazy_refcounts = -1, .version = 2, .progress = log_progress, .userdata = &l };
        struct vh_error err = {};
        int r = amend(p, &o, &err);
        CHECK_EQ_INT(r, -ECANCELED);
        CHECK(r < 0 && strstr(vh_error_message(&err, r), "still version 3") != NULL);
        CHECK(clean(p));
        struct vh_image_info *info;
        info_of(p, &info);
        CHECK(info && info->qcow2_version == 3);
        vh_image_info_free(info);
        _cleanup_free_ uint8_t *mid = read_all(p);
        CHECK(before && mid && memcmp(before, mid, 1 << 20) == 0);

        /* Uncancelled: from 0 to the total, never back. */
        l = (struct progress_log) {};
        r = amend(p, &o, &err);
        if (r < 0)
                test_fail(__FILE__, __LINE__, "downgrade: %s", vh_error_message(&err, r));
        CHECK(l.calls > 32 && l.first == 0 && l.last == l.total && !l.backwards);
        CHECK(clean(p));
        info_of(p, &info);
        CHECK(info && info->qcow2_version == 2);
        vh_image_info_free(info);
        _cleanup_free_ uint8_t *after = read_all(p);
        CHECK(before && after && memcmp(before, after, 1 << 20) == 0);

        /* With a refcount rewrite first: still once from 0 to the total. */
        CHECK(make_image(p, 512, 8, true) == 0);
        l = (struct progress_log) {};
        o.refcount_bits = 16;
        r = amend(p, &o, &err);
        CHECK_EQ_INT(r, 0);
        CHECK(l.calls > 32 && l.first == 0 && l.last == l.total && !l.backwards);
        CHECK(clean(p));
}
