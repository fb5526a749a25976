/* image/compare.c: 'img compare': whether two images show a guest the
 * same disk, and if not, the first 512-byte sector where they differ, as
 * 'qemu-img compare' reports it.
 *
 * Both images are walked with the block status of their whole chains
 * (status.c): ranges that read as zeros in both, or that no layer of
 * either chain allocates, need no reading; a range allocated in one image
 * only must read as zeros there; the rest is read from both and compared
 * sector by sector. Past the end of the smaller image the larger one must
 * read as zeros. Strict mode (-s) also fails on different sizes or on a
 * different block status. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "base/macro.h"
#include "image/inspect.h"

/* qemu-img reads at most this much at a time. */
#define COMPARE_CHUNK (UINT64_C(2) << 20)
#define SECTOR UINT64_C(512)

/* Index of the first sector of 'buf' that is not all zeros, or -1. */
static int64_t find_nonzero(const uint8_t *buf, uint64_t n) {
        uint64_t whole = n / SECTOR * SECTOR, i;
        for (i = 0; i < whole; i += SECTOR)
                if (!image_buffer_is_zero(buf + i, SECTOR))
                        return (int64_t) i;
        if (i < n && !image_buffer_is_zero(buf + i, n - whole))
                return (int64_t) i;
        return -1;
}

/* Length of the leading run of sectors that compare like the first one;
 * returns whether that first sector differs. */
static bool compare_sectors(const uint8_t *a, const uint8_t *b, uint64_t n, uint64_t *ret_same) {
        uint64_t i = MIN(n, SECTOR);
        bool differs = memcmp(a, b, i) != 0;
        while (i < n) {
                uint64_t len = MIN(n - i, SECTOR);
                if ((memcmp(a + i, b + i, len) != 0) != differs)
                        break;
                i += len;
        }
        *ret_same = i;
        return differs;
}

struct compare_state {
        struct bstat_chain *ca, *cb;
        uint8_t *buf1, *buf2;
        struct vh_image_compare_result *res;
};

static int read_or_flag(struct compare_state *s, struct vh_image *img, uint64_t offset, uint8_t *buf, uint64_t n,
                        struct vh_error *err) {
        int r = vh_image_read(img, offset, buf, (size_t) n, err);
        if (r < 0)
                s->res->read_error = true;
        return r;
}

/* Sets the mismatch offset when [offset, offset + n) of 'img' has a
 * non-zero sector; returns 1 then. */
static int check_empty(struct compare_state *s, struct vh_image *img, uint64_t offset, uint64_t n,
                       struct vh_error *err) {
        int r = read_or_flag(s, img, offset, s->buf1, n, err);
        if (r < 0)
                return r;
        int64_t idx = find_nonzero(s->buf1, n);
        if (idx < 0)
                return 0;
        s->res->outcome = VH_IMAGE_COMPARE_CONTENT_MISMATCH;
        s->res->offset = offset + (uint64_t) idx;
        return 1;
}

static int compare_loop(struct compare_state *s, struct vh_image *a, struct vh_image *b,
                        const struct vh_image_compare_options *opts, struct vh_error *err) {
        uint64_t size_a = a->virtual_size, size_b = b->virtual_size, size = MIN(size_a, size_b);
        struct vh_image_compare_result *res = s->res;
        int r;

        /* Progress as qemu-img counts it: after each chunk, out of the
         * larger size (the part past the smaller one is checked too). */
        const uint64_t base = MAX(size_a, size_b);
        uint64_t offset = 0;
        r = image_progress(opts->progress, opts->userdata, 0, base);
        if (r < 0)
                return vh_error_set(err, r, "cancelled");
        if (opts->strict && size_a != size_b) {
                res->outcome = VH_IMAGE_COMPARE_SIZE_MISMATCH;
                return 1;
        }
        while (offset < size) {
                struct bstat s1, s2;
                r = bstat_above(s->ca, a, offset, size_a - offset, &s1, err);
                if (r < 0)
                        return r;
                r = bstat_above(s->cb, b, offset, size_b - offset, &s2, err);
                if (r < 0)
                        return r;
                if (s1.pnum == 0 || s2.pnum == 0)
                        return vh_error_set(err, -EIO, "no block status at offset %" PRIu64, offset);
                bool alloc1 = s1.flags & BSTAT_ALLOCATED, alloc2 = s2.flags & BSTAT_ALLOCATED;
                uint64_t chunk = MIN(s1.pnum, s2.pnum);

                if (opts->strict && s1.flags != s2.flags) {
                        res->outcome = VH_IMAGE_COMPARE_STATUS_MISMATCH;
                        res->offset = offset;
                        return 1;
                }
                if ((s1.flags & BSTAT_ZERO) && (s2.flags & BSTAT_ZERO)) {
                        /* zeros on both sides */
                } else if (alloc1 == alloc2) {
                        if (alloc1) {
                                chunk = MIN(chunk, COMPARE_CHUNK);
                                r = read_or_flag(s, a, offset, s->buf1, chunk, err);
                                if (r < 0)
                                        return r;
                                r = read_or_flag(s, b, offset, s->buf2, chunk, err);
                                if (r < 0)
                                        return r;
                                uint64_t same;
                                bool differs = compare_sectors(s->buf1, s->buf2, chunk, &same);
                                if (differs || same != chunk) {
                                        res->outcome = VH_IMAGE_COMPARE_CONTENT_MISMATCH;
                                        res->offset = offset + (differs ? 0 : same);
                                        return 1;
                                }
                        }
                } else {
                        chunk = MIN(chunk, COMPARE_CHUNK);
                        r = check_empty(s, alloc1 ? a : b, offset, chunk, err);
                        if (r != 0)
                                return r;
                }
                offset += chunk;
                r = image_progress(opts->progress, opts->userdata, offset, base);
                if (r < 0)
                        return vh_error_set(err, r, "cancelled");
        }

        if (size_a != size_b) {
                res->size_mismatch = true;
                struct vh_image *over = size_a > size_b ? a : b;
                struct bstat_chain *co = size_a > size_b ? s->ca : s->cb;
                uint64_t over_size = over->virtual_size;
                for (offset = size; offset < over_size;) {
                        struct bstat st;
                        r = bstat_above(co, over, offset, over_size - offset, &st, err);
                        if (r < 0)
                                return r;
                        if (st.pnum == 0)
                                return vh_error_set(err, -EIO, "no block status at offset %" PRIu64, offset);
                        uint64_t chunk = st.pnum;
                        if (st.flags & BSTAT_ALLOCATED) {
                                chunk = MIN(chunk, COMPARE_CHUNK);
                                r = check_empty(s, over, offset, chunk, err);
                                if (r != 0)
                                        return r;
                        }
                        offset += chunk;
                        r = image_progress(opts->progress, opts->userdata, offset, base);
                        if (r < 0)
                                return vh_error_set(err, r, "cancelled");
                }
        }
        res->outcome = VH_IMAGE_COMPARE_IDENTICAL;
        return 0;
}

int vh_image_compare(struct vh_image *a, struct vh_image *b, const struct vh_image_compare_options *opts,
                     struct vh_image_compare_result *ret, struct vh_error *err) {
        struct vh_image_compare_options defaults = {};
        if (!opts)
                opts = &defaults;
        struct vh_image_compare_result res = {};
        struct compare_state s = { .res = &res };

        int r = bstat_chain_new(a, &s.ca, err);
        if (r >= 0)
                r = bstat_chain_new(b, &s.cb, err);
        if (r >= 0) {
                s.buf1 = malloc((size_t) COMPARE_CHUNK);
                s.buf2 = malloc((size_t) COMPARE_CHUNK);
                if (!s.buf1 || !s.buf2)
                        r = vh_error_set(err, -ENOMEM, "out of memory");
        }
        if (r >= 0)
                r = compare_loop(&s, a, b, opts, err);
        /* The end, only when there is no difference: qemu-img's figure
         * stops where it found one. It repeats the last chunk's report. */
        uint64_t base = MAX(a->virtual_size, b->virtual_size);
        if (r >= 0 && res.outcome == VH_IMAGE_COMPARE_IDENTICAL &&
            image_progress(opts->progress, opts->userdata, base, base) < 0)
                r = vh_error_set(err, -ECANCELED, "cancelled");
        bstat_chain_free(s.ca);
        bstat_chain_free(s.cb);
        free(s.buf1);
        free(s.buf2);
        *ret = res;
        return r < 0 ? r : 0;
}
