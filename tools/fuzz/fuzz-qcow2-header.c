/* tools/fuzz/fuzz-qcow2-header.c: libFuzzer target for the image engine's
 * handling of untrusted image files. Each input is one image file: its
 * header goes through qcow2_header_parse() directly, then the file is
 * opened the way 'vmhost img info/convert' opens it (probing the format),
 * described (info in both output shapes), and walked with map + read over
 * its extents, which exercises the L1/L2 lookups, zero and compressed
 * clusters, subclusters and every offset check on the way.
 *
 * The backing chain is not followed (a fuzzed name could point anywhere
 * on the host) and no locks are taken (they are per-file and add nothing
 * here). Inputs live in a memfd, so nothing touches the disk.
 *
 *   CC=clang meson setup build-fuzz -Dfuzz=true && ninja -C build-fuzz
 *   build-fuzz/tools/fuzz/fuzz-qcow2-header -max_total_time=60 \
 *           tools/fuzz/corpus/qcow2-header */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "image/image-internal.h"
#include "image/qcow2.h"
#include "vmhost/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Larger inputs only slow the fuzzer down: every table must lie inside the
 * file, so a few MiB reach every code path. */
#define FUZZ_MAX_INPUT (4u << 20)
/* Bounds on the walk, so that a huge virtual size stays cheap. */
#define FUZZ_MAX_EXTENTS 256
#define FUZZ_READ_MAX (64u << 10)

static int memfd = -1;
static char memfd_path[64];

static void walk(struct vh_image *img) {
        static uint8_t buf[FUZZ_READ_MAX];
        struct vh_error err = {};
        uint64_t size = vh_image_virtual_size(img), off = 0;

        for (unsigned i = 0; i < FUZZ_MAX_EXTENTS && off < size; i++) {
                struct vh_image_extent e;
                if (vh_image_map(img, off, size - off, &e, &err) < 0 || e.length == 0)
                        break;
                size_t n = e.length < FUZZ_READ_MAX ? (size_t) e.length : FUZZ_READ_MAX;
                if (vh_image_read(img, off, buf, n, &err) < 0)
                        break;
                off += e.length;
        }
        /* And the very end, which the walk may not reach. */
        if (size > 0) {
                uint64_t n = size < 4096 ? size : 4096;
                (void) vh_image_read(img, size - n, buf, (size_t) n, &err);
        }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > FUZZ_MAX_INPUT)
                return 0;

        struct qcow2_header h;
        struct vh_error err = {};
        size_t need = qcow2_header_need(data, size, size);
        if (need <= size)
                (void) qcow2_header_parse(data, need, size, &h, &err);

        if (memfd < 0) {
                memfd = memfd_create("fuzz-image", MFD_CLOEXEC);
                if (memfd < 0)
                        abort();
                snprintf(memfd_path, sizeof(memfd_path), "/proc/self/fd/%d", memfd);
        }
        if (ftruncate(memfd, 0) < 0 || image_pwrite_all(memfd, data, size, 0) < 0)
                abort();

        struct vh_image_open_options o = {
                .format = VH_IMAGE_FORMAT_PROBE,
                .flags = VH_IMAGE_OPEN_NO_BACKING | VH_IMAGE_OPEN_FORCE_SHARE,
        };
        struct vh_image *img = NULL;
        if (vh_image_open(memfd_path, &o, &img, &err) < 0)
                return 0;

        char *text = NULL;
        if (vh_image_info_format(img, VH_IMAGE_INFO_JSON, true, &text, &err) >= 0)
                free(text);
        text = NULL;
        if (vh_image_info_format(img, VH_IMAGE_INFO_HUMAN, false, &text, &err) >= 0)
                free(text);

        walk(img);
        vh_image_free(img);
        return 0;
}
