/* tests/unit/test-image-cancel.c: cancelling the long image operations
 * through their progress callbacks (convert on each of its copy paths,
 * commit, rebase, compare), checked from outside: no output or temporary
 * file left, a destination that existed unchanged, images that qemu-img
 * checks clean and that read as before; and the fault switch counting
 * the writes of many threads exactly. Tests that need qemu-img count a skip
 * when it is missing. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/macro.h"
#include "base/process.h"
#include "base/strutil.h"
#include "image/image-internal.h"
#include "test.h"
#include "vmhost/image.h"

#define DISK_SIZE (UINT64_C(64) << 20)

static char *path_in_tmp(const char *name) {
        char *p = strdup_printf("%s/%s", test_tmpdir(), name);
        if (!p)
                abort();
        return p;
}

static bool have_qemu_img(void) {
        return test_need_program("qemu-img", "qemu-utils");
}

static int qemu_img(const char *a1, const char *a2, const char *a3, const char *a4) {
        const char *argv[] = { "qemu-img", a1, a2, a3, a4, NULL };
        char *out = NULL;
        int r = process_run(test_ctx(), (char *const *) argv, 120 * 1000 /* qemu-img: seconds */, 1 << 20, &out, NULL);
        if (r != 0)
                fprintf(stderr, "  (qemu-img %s %s %s %s: %d: %s)\n", a1, a2, a3 ? a3 : "", a4 ? a4 : "", r,
                        out ? out : "");
        free(out);
        return r;
}

/* The byte a test disk holds at 'off' for pattern 'p': never zero, so
 * that every cluster is data. */
static uint8_t pattern_byte(uint64_t off, unsigned p) {
        return (uint8_t) (1 + (off / 4096 + p * 7) % 251);
}

static void fill(uint8_t *buf, uint64_t off, size_t len, unsigned p) {
        for (size_t i = 0; i < len; i += 4096)
                memset(buf + i, pattern_byte(off + i, p), MIN((size_t) 4096, len - i));
}

/* Writes pattern 'p' over [0, len) of the image open read-write. */
static int write_pattern(struct vh_image *img, uint64_t len, unsigned p) {
        size_t chunk = 1 << 20;
        uint8_t *buf = malloc(chunk);
        int r = buf ? 0 : -ENOMEM;
        for (uint64_t off = 0; r >= 0 && off < len; off += chunk) {
                fill(buf, off, chunk, p);
                r = vh_image_write(img, off, buf, chunk, NULL);
        }
        free(buf);
        return r;
}

static struct vh_image *open_img(const char *path, unsigned flags) {
        struct vh_image_open_options o = { .format = VH_IMAGE_FORMAT_PROBE, .flags = flags };
        struct vh_image *img = NULL;
        struct vh_error err = {};
        if (vh_image_open(path, &o, &img, &err) < 0)
                test_fail(__FILE__, __LINE__, "cannot open %s: %s", path, err.msg);
        return img;
}

static int new_qcow2(const char *path, const char *backing) {
        struct vh_image_create_options co = {
                .format = VH_IMAGE_FORMAT_QCOW2,
                .size = DISK_SIZE,
                .backing_file = backing,
                .backing_format = backing ? VH_IMAGE_FORMAT_QCOW2 : VH_IMAGE_FORMAT_PROBE,
                .replace_data = true,
        };
        struct vh_error err = {};
        int r = vh_image_create(path, &co, &err);
        if (r < 0)
                test_fail(__FILE__, __LINE__, "cannot create %s: %s", path, err.msg);
        return r;
}

/* What the guest sees in the image at 'path', all of it. */
static uint8_t *guest_view(const char *path) {
        struct vh_image *img = open_img(path, 0);
        if (!img)
                return NULL;
        uint8_t *buf = malloc(vh_image_virtual_size(img));
        if (buf && vh_image_read(img, 0, buf, vh_image_virtual_size(img), NULL) < 0) {
                free(buf);
                buf = NULL;
        }
        vh_image_free(img);
        return buf;
}

/* Counts what a progress callback saw; cancels once 'done' reaches
 * 'cancel_at' of the total. */
struct cancel_state {
        double cancel_at;     /* fraction of the total; > 1: never */
        unsigned calls;
        unsigned calls_after_cancel;
        bool cancelled;
        uint64_t done_at_cancel;
        uint64_t writes_at_cancel;  /* image_fault_writes() when it cancelled */
};

static int cancel_progress(uint64_t done, uint64_t total, void *userdata) {
        struct cancel_state *s = userdata;
        s->calls++;
        if (s->cancelled) {
                s->calls_after_cancel++;
                return 1;
        }
        if ((double) done >= s->cancel_at * (double) total) {
                s->cancelled = true;
                s->done_at_cancel = done;
                s->writes_at_cancel = image_fault_writes();
                return 1;
        }
        return 0;
}

/* Names in the test directory that look like a temporary output. */
static unsigned temp_files_left(void) {
        DIR *d = opendir(test_tmpdir());
        unsigned n = 0;
        if (!d)
                return 0;
        for (struct dirent *e; (e = readdir(d));)
                if (strstr(e->d_name, ".vmhost-") && strstr(e->d_name, ".tmp"))
                        n++;
        closedir(d);
        return n;
}

/* One way through convert: each output kind takes another copy loop
 * (raw and qcow2: the parallel workers; -c: reader thread and writer;
 * -B: one thread). */
static const struct convert_case {
        const char *name;
        enum vh_image_format format;
        bool compress;
        bool backing; /* -B onto the source's own backing file */
} convert_cases[] = {
        { "parallel raw", VH_IMAGE_FORMAT_RAW, false, false },
        { "parallel qcow2", VH_IMAGE_FORMAT_QCOW2, false, false },
        { "threaded -c", VH_IMAGE_FORMAT_QCOW2, true, false },
        { "one thread -B", VH_IMAGE_FORMAT_QCOW2, false, true },
};

TEST(image_convert_cancel_leaves_nothing) {
        _cleanup_free_ char *base = path_in_tmp("cbase.qcow2"), *src = path_in_tmp("csrc.qcow2");
        _cleanup_free_ char *dst = path_in_tmp("cdst.img");
        /* A base and an overlay that both hold data (the overlay every
         * other MiB), so that -B has clusters to write too. */
        if (new_qcow2(base, NULL) < 0 || new_qcow2(src, "cbase.qcow2") < 0)
                return;
        struct vh_image *b = open_img(base, VH_IMAGE_OPEN_READ_WRITE);
        CHECK(b && write_pattern(b, DISK_SIZE, 1) == 0);
        vh_image_free(b);
        struct vh_image *o = open_img(src, VH_IMAGE_OPEN_READ_WRITE);
        uint8_t *mib = malloc(1 << 20);
        CHECK(o && mib);
        for (uint64_t off = 0; o && mib && off < DISK_SIZE; off += UINT64_C(2) << 20) {
                fill(mib, off, 1 << 20, 2);
                CHECK_EQ_INT(vh_image_write(o, off, mib, 1 << 20, NULL), 0);
        }
        free(mib);
        vh_image_free(o);

        for (size_t i = 0; i < ELEMENTSOF(convert_cases); i++) {
                const struct convert_case *c = &convert_cases[i];
                struct vh_image *img = open_img(src, 0);
                if (!img)
                        return;
                struct vh_image_convert_options co = {
                        .format = c->format,
                        .compress = c->compress,
                        .backing_file = c->backing ? "cbase.qcow2" : NULL,
                        .backing_format = c->backing ? VH_IMAGE_FORMAT_QCOW2 : VH_IMAGE_FORMAT_PROBE,
                        .progress = cancel_progress,
                };

                /* The writes of a whole convert, to tell a cancelled one
                 * stopped early. */
                struct cancel_state full = { .cancel_at = 2 };
                co.userdata = &full;
                vh_image_fault_set_kill_after_writes(UINT64_MAX);
                struct vh_error err = {};
                CHECK_EQ_INT(vh_image_convert(img, dst, &co, &err), 0);
                uint64_t full_writes = image_fault_writes();
                CHECK(full.calls >= 2);
                unlink(dst);

                /* Cancelled a quarter of the way, with no file there (a
                 * quarter: 4 of the 16 windows, so that the windows under
                 * way at the cancel, up to CONVERT_SLOTS = 8, still end
                 * before the last). */
                struct cancel_state s = { .cancel_at = 0.25 };
                co.userdata = &s;
                vh_image_fault_set_kill_after_writes(UINT64_MAX);
                int r = vh_image_convert(img, dst, &co, &err);
                uint64_t cancelled_writes = image_fault_writes();
                vh_image_fault_set_kill_after_writes(0);
                if (r != -ECANCELED)
                        test_fail(__FILE__, __LINE__, "%s: convert returned %d, not -ECANCELED", c->name, r);
                if (!strstr(err.msg, "cancelled"))
                        test_fail(__FILE__, __LINE__, "%s: message '%s' says nothing of a cancel", c->name, err.msg);
                CHECK(s.cancelled && s.done_at_cancel < DISK_SIZE);
                CHECK_EQ_INT(s.calls_after_cancel, 0);
                if (access(dst, F_OK) == 0)
                        test_fail(__FILE__, __LINE__, "%s: the cancelled convert left %s", c->name, dst);
                CHECK_EQ_INT(temp_files_left(), 0);
                /* Stopped within the windows under way when it was asked
                 * to, not at the end. Measured from the moment of the
                 * cancel, not from the figure reported: on a loaded
                 * machine the thread that reports progress may run only
                 * after the workers wrote everything (seen: 64 writes of
                 * 64 with the cancel reported at half-way). */
                uint64_t per_window = (full_writes * CONVERT_WINDOW + DISK_SIZE - 1) / DISK_SIZE;
                uint64_t bound = s.writes_at_cancel + CONVERT_SLOTS * per_window;
                if (cancelled_writes > bound)
                        test_fail(__FILE__, __LINE__, "%s: %" PRIu64 " writes (of %" PRIu64 " for a whole convert), "
                                  "%" PRIu64 " when cancelled: more than the %u windows under way", c->name,
                                  cancelled_writes, full_writes, s.writes_at_cancel, CONVERT_SLOTS);

                /* Cancelled with a file there that it would replace: the
                 * file stays as it was. */
                static const char old_text[] = "the old content\n";
                CHECK_EQ_INT(write_file_atomic(dst, old_text, strlen(old_text), 0644), 0);
                co.replace_data = true;
                s = (struct cancel_state) { .cancel_at = 0.5 };
                CHECK_EQ_INT(vh_image_convert(img, dst, &co, &err), -ECANCELED);
                _cleanup_free_ char *text = NULL;
                size_t text_len = 0;
                CHECK_EQ_INT(read_full_file(dst, 1024, &text, &text_len), 0);
                CHECK(text && text_len == strlen(old_text) && memcmp(text, old_text, text_len) == 0);
                CHECK_EQ_INT(temp_files_left(), 0);
                unlink(dst);

                /* Cancelled at the very end (done == total), before the
                 * rename: nothing is put in place either. */
                s = (struct cancel_state) { .cancel_at = 1 };
                co.replace_data = false;
                CHECK_EQ_INT(vh_image_convert(img, dst, &co, &err), -ECANCELED);
                CHECK(s.done_at_cancel == DISK_SIZE);
                CHECK(access(dst, F_OK) < 0);
                CHECK_EQ_INT(temp_files_left(), 0);
                vh_image_free(img);
        }
}

TEST(image_commit_cancel_keeps_the_chain) {
        if (!have_qemu_img())
                return;
        _cleanup_free_ char *base = path_in_tmp("mbase.qcow2"), *top = path_in_tmp("mtop.qcow2");
        _cleanup_free_ char *want = path_in_tmp("mwant.raw");
        if (new_qcow2(base, NULL) < 0 || new_qcow2(top, "mbase.qcow2") < 0)
                return;
        struct vh_image *img = open_img(base, VH_IMAGE_OPEN_READ_WRITE);
        CHECK(img && write_pattern(img, DISK_SIZE, 1) == 0);
        vh_image_free(img);
        img = open_img(top, VH_IMAGE_OPEN_READ_WRITE);
        CHECK(img && write_pattern(img, DISK_SIZE, 2) == 0);
        vh_image_free(img);
        uint8_t *before = guest_view(top);
        CHECK(before != NULL);
        if (!before)
                return;
        /* The guest's view as a raw file, for qemu-img to compare with. */
        int fd = open(want, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        CHECK(fd >= 0 && image_pwrite_all(fd, before, DISK_SIZE, 0) == 0);
        close(fd);

        img = open_img(top, VH_IMAGE_OPEN_READ_WRITE);
        struct cancel_state s = { .cancel_at = 0.5 };
        struct vh_image_commit_options co = { .progress = cancel_progress, .userdata = &s };
        struct vh_error err = {};
        int r = img ? vh_image_commit(img, &co, &err) : -EIO;
        vh_image_free(img);
        CHECK_EQ_INT(r, -ECANCELED);
        if (!strstr(err.msg, "cancelled") || !strstr(err.msg, "reads the same"))
                test_fail(__FILE__, __LINE__, "message '%s' does not say what was left", err.msg);
        CHECK_EQ_INT(s.calls_after_cancel, 0);
        CHECK(s.done_at_cancel > 0 && s.done_at_cancel < DISK_SIZE);

        /* Both images are consistent, and the overlay shows what it did. */
        CHECK_EQ_INT(qemu_img("check", "-q", base, NULL), 0);
        CHECK_EQ_INT(qemu_img("check", "-q", top, NULL), 0);
        CHECK_EQ_INT(qemu_img("compare", "-q", top, want), 0);
        uint8_t *after = guest_view(top);
        CHECK(after && memcmp(before, after, DISK_SIZE) == 0);
        free(after);
        /* The base holds the overlay's data up to where it stopped, its
         * own after: the commit was cut in the middle. */
        uint8_t *b = guest_view(base);
        CHECK(b != NULL);
        if (b) {
                CHECK(b[0] == pattern_byte(0, 2));
                CHECK(b[DISK_SIZE - 1] == pattern_byte(DISK_SIZE - 4096, 1));
        }
        free(b);

        /* And the chain is usable: the commit can be done again, whole. */
        img = open_img(top, VH_IMAGE_OPEN_READ_WRITE);
        co.progress = NULL;
        CHECK(img && vh_image_commit(img, &co, &err) == 0);
        vh_image_free(img);
        CHECK_EQ_INT(qemu_img("check", "-q", base, NULL), 0);
        CHECK_EQ_INT(qemu_img("compare", "-q", base, want), 0);
        CHECK_EQ_INT(qemu_img("compare", "-q", top, want), 0);
        free(before);
}

TEST(image_rebase_cancel_keeps_the_old_backing_file) {
        if (!have_qemu_img())
                return;
        _cleanup_free_ char *base = path_in_tmp("rbase.qcow2"), *top = path_in_tmp("rtop.qcow2");
        if (new_qcow2(base, NULL) < 0 || new_qcow2(top, "rbase.qcow2") < 0)
                return;
        struct vh_image *img = open_img(base, VH_IMAGE_OPEN_READ_WRITE);
        CHECK(img && write_pattern(img, DISK_SIZE, 3) == 0);
        vh_image_free(img);
        uint8_t *before = guest_view(top);

        /* To no backing file: everything the base shows is copied. */
        img = open_img(top, VH_IMAGE_OPEN_READ_WRITE);
        struct cancel_state s = { .cancel_at = 0.5 };
        struct vh_image_rebase_options ro = { .backing_file = "", .progress = cancel_progress, .userdata = &s };
        struct vh_error err = {};
        CHECK(img && vh_image_rebase(img, &ro, &err) == -ECANCELED);
        if (!strstr(err.msg, "old backing file"))
                test_fail(__FILE__, __LINE__, "message '%s' does not say what was left", err.msg);
        vh_image_free(img);
        CHECK_EQ_INT(qemu_img("check", "-q", top, NULL), 0);
        img = open_img(top, 0);
        CHECK(img && vh_image_backing(img) != NULL);
        vh_image_free(img);
        uint8_t *after = guest_view(top);
        CHECK(before && after && memcmp(before, after, DISK_SIZE) == 0);
        free(before);
        free(after);
}

TEST(image_compare_cancel) {
        _cleanup_free_ char *a = path_in_tmp("pa.qcow2");
        if (new_qcow2(a, NULL) < 0)
                return;
        struct vh_image *img = open_img(a, VH_IMAGE_OPEN_READ_WRITE);
        CHECK(img && write_pattern(img, DISK_SIZE, 4) == 0);
        vh_image_free(img);
        struct vh_image *x = open_img(a, 0), *y = open_img(a, 0);
        struct cancel_state s = { .cancel_at = 0.25 };
        struct vh_image_compare_options co = { .progress = cancel_progress, .userdata = &s };
        struct vh_image_compare_result res;
        struct vh_error err = {};
        CHECK(x && y && vh_image_compare(x, y, &co, &res, &err) == -ECANCELED);
        CHECK(strstr(err.msg, "cancelled") != NULL);
        vh_image_free(x);
        vh_image_free(y);
}

/* ---- The fault switch counts the writes of all threads ---- */

#define COUNT_THREADS 4
#define COUNT_WRITES 4000000

static pthread_barrier_t count_start;

static void *count_writer(void *userdata) {
        int fd = *(int *) userdata;
        uint8_t byte = 1;
        pthread_barrier_wait(&count_start);
        /* Empty writes: no system call between the counts, so threads on
         * different cores count at the same moments, as convert's workers
         * can. */
        for (unsigned i = 0; i < COUNT_WRITES; i++)
                if (image_pwrite_all(fd, &byte, 0, 0) < 0)
                        break;
        return NULL;
}

TEST(image_fault_switch_counts_across_threads) {
        _cleanup_free_ char *path = path_in_tmp("count");
        int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        CHECK(fd >= 0);
        if (fd < 0)
                return;
        /* On, but never reached: only the count matters. */
        vh_image_fault_set_kill_after_writes(UINT64_MAX);
        pthread_t t[COUNT_THREADS];
        unsigned started = 0;
        CHECK_EQ_INT(pthread_barrier_init(&count_start, NULL, COUNT_THREADS), 0);
        for (; started < COUNT_THREADS; started++)
                if (pthread_create(&t[started], NULL, count_writer, &fd) != 0)
                        break;
        CHECK_EQ_INT(started, COUNT_THREADS);
        if (started < COUNT_THREADS)
                abort(); /* the started threads would wait at the barrier forever */
        for (unsigned i = 0; i < started; i++)
                pthread_join(t[i], NULL);
        pthread_barrier_destroy(&count_start);
        uint64_t n = image_fault_writes();
        vh_image_fault_set_kill_after_writes(0);
        close(fd);
        CHECK_EQ_U64(n, (uint64_t) COUNT_THREADS * COUNT_WRITES);
        CHECK_EQ_U64(image_fault_writes(), 0);
}
