/* tools/fuzz/fuzz-qcow2-check.c: libFuzzer target for the paths that read
 * a qcow2 image's tables as data rather than through the reader: the
 * refcount table and blocks, every refcount width, snapshot table and
 * bitmap directory (qcow2-meta.c), the refcount rebuild and comparison of
 * 'img check' (check.c), and the block status behind 'img map',
 * 'compare' and 'measure' (status.c, map.c, measure.c).
 *
 * Each input is one image file, kept in a memfd. It is checked read-only,
 * then repaired with '-r all' (which writes refcount blocks, may rebuild
 * the refcount table past the end of the file and fix COPIED flags), and
 * checked again: after a repair that reported success, the second check
 * must not find a leak or a refcount error the repair claims to have
 * fixed. Then the image is mapped and measured.
 *
 *   CC=clang meson setup build-fuzz -Dfuzz=true && ninja -C build-fuzz
 *   build-fuzz/tools/fuzz/fuzz-qcow2-check -max_total_time=60 \
 *           tools/fuzz/corpus/qcow2-header */
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#include "image/image-internal.h"
#include "vmhost/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The tables must lie in the file, so a few MiB reach every path. */
#define FUZZ_MAX_INPUT (2u << 20)
/* map and measure step at most one L2 table a call: walk a bounded
 * part of the disk. */
#define FUZZ_MAX_WALK (UINT64_C(256) << 20)
#define FUZZ_MAX_MAP_ENTRIES 512
/* The largest file a repair may make of an input. */
#define FUZZ_MAX_FILE (64u << 20)

static int memfd = -1;
static char memfd_path[64];

struct map_count {
        unsigned n;
};

static int count_entry(const struct vh_image_map_entry *e, const struct vh_image_map_entry *next, void *userdata) {
        struct map_count *c = userdata;
        if (e->length == 0 && next)
                abort(); /* only the last entry of an empty walk may be empty */
        return ++c->n > FUZZ_MAX_MAP_ENTRIES ? -1 : 0;
}

/* The check reads every L2 table each L1 entry names, for the active
 * table and every snapshot: with 2 MiB clusters and thousands of
 * snapshots a small input costs minutes (as it would in qemu-img). Such
 * headers are left to fuzz-qcow2-header, which covers their parsing. */
static bool too_slow(const uint8_t *data, size_t size) {
        if (size < 64)
                return false;
        uint32_t cluster_bits = be32_load(data + 20), l1_size = be32_load(data + 36);
        uint32_t nb_snapshots = be32_load(data + 60);
        return cluster_bits > 16 || l1_size > 4096 || nb_snapshots > 16;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > FUZZ_MAX_INPUT || too_slow(data, size))
                return 0;
        if (memfd < 0) {
                /* A repair may grow the file as far as the references it
                 * finds reach, as qemu-img's does (a rebuilt refcount
                 * structure placed past a cluster referenced at 64 GiB:
                 * with 512-byte clusters its second check then walks 134
                 * million clusters, 90 s under the sanitizers). Such a
                 * repair fails here with EFBIG, which the check reports
                 * as any failed write. */
                struct rlimit fsize = { FUZZ_MAX_FILE, FUZZ_MAX_FILE };
                if (setrlimit(RLIMIT_FSIZE, &fsize) < 0)
                        abort();
                signal(SIGXFSZ, SIG_IGN);
                memfd = memfd_create("fuzz-check", MFD_CLOEXEC);
                if (memfd < 0)
                        abort();
                snprintf(memfd_path, sizeof(memfd_path), "/proc/self/fd/%d", memfd);
        }
        if (ftruncate(memfd, 0) < 0 || image_pwrite_all(memfd, data, size, 0) < 0)
                abort();

        struct vh_error err = {};
        struct vh_image_check_result res = {};
        struct vh_image_check_options ro = { .format = VH_IMAGE_FORMAT_QCOW2, .force_share = true };
        if (vh_image_check(memfd_path, &ro, &res, &err) < 0)
                return 0;

        struct vh_image_check_options rw = { .format = VH_IMAGE_FORMAT_QCOW2, .repair = VH_IMAGE_CHECK_REPAIR_ALL };
        struct vh_image_check_result fixed = {};
        if (vh_image_check(memfd_path, &rw, &fixed, &err) >= 0 && fixed.check_errors == 0) {
                /* What a repair returns is a check of the file as it
                 * left it: a fresh check must agree (above all, "clean"
                 * must mean clean). */
                struct vh_image_check_result again = {};
                if (vh_image_check(memfd_path, &ro, &again, &err) < 0 || again.leaks != fixed.leaks ||
                    again.corruptions != fixed.corruptions)
                        abort();
        }
        char *text = NULL;
        if (vh_image_check_format("fuzz", &res, VH_IMAGE_INFO_JSON, &text, &err) >= 0)
                free(text);

        struct vh_image_open_options o = {
                .format = VH_IMAGE_FORMAT_QCOW2,
                .flags = VH_IMAGE_OPEN_NO_BACKING | VH_IMAGE_OPEN_FORCE_SHARE,
        };
        struct vh_image *img = NULL;
        if (vh_image_open(memfd_path, &o, &img, &err) < 0)
                return 0;
        struct map_count c = {};
        (void) vh_image_map_walk(img, 0, FUZZ_MAX_WALK, false, count_entry, &c, &err);
        if (vh_image_virtual_size(img) <= FUZZ_MAX_WALK) {
                struct vh_image_measure_options mo = { .format = VH_IMAGE_FORMAT_QCOW2 };
                struct vh_image_measure_result mr;
                (void) vh_image_measure(img, &mo, &mr, &err);
        }
        vh_image_free(img);
        return 0;
}
