/* tests/unit/image-io.c: 'image-io', a test helper that drives vmhost's
 * image write path with qemu-io's command syntax, so that the same list
 * of operations can be run by qemu-io on one copy of an image and by
 * vmhost on another, and the results compared (tests/e2e/t-img-diff.sh),
 * or a writer killed part way (tests/e2e/t-img-crash.sh, with
 * VMHOST_FAULT_KILL_AFTER_WRITES).
 *
 *     image-io [-f FMT] [-q] -c 'write -P 0x5a 0 64k' -c 'write -z 1M 4k' \
 *              -c 'discard 2M 1M' -c 'write -s FILE 3M 8k' -c 'read -P 0x5a 0 64k' FILE
 *
 * Offsets and lengths take k, M, G suffixes. 'write -s FILE' writes the
 * first LEN bytes of FILE (as qemu-io does). 'flush' flushes. The image is
 * flushed and closed at the end; exit status 0, or 1 on the first error. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/macro.h"
#include "base/strutil.h"
#include "vmhost/context.h"
#include "vmhost/image.h"

#define MAX_COMMANDS 100000
#define MAX_IO (UINT64_C(256) << 20)

static int parse_num(const char *s, uint64_t *ret) {
        if (startswith(s, "0x") || startswith(s, "0X")) {
                char *end;
                errno = 0;
                unsigned long long v = strtoull(s, &end, 16);
                if (errno || *end)
                        return -EINVAL;
                *ret = v;
                return 0;
        }
        return parse_size(s, ret);
}

/* Splits 'cmd' at blanks into at most 'max' words (in place). */
static size_t split(char *cmd, char **words, size_t max) {
        size_t n = 0;
        char *save = NULL;
        for (char *w = strtok_r(cmd, " \t", &save); w && n < max; w = strtok_r(NULL, " \t", &save))
                words[n++] = w;
        return n;
}

static int run_command(struct vh_image *img, char *cmd, bool quiet) {
        char *w[8];
        size_t n = split(cmd, w, ELEMENTSOF(w));
        struct vh_error err = {};
        uint64_t off, len, pattern = 0;
        int r;

        if (n == 1 && streq(w[0], "flush")) {
                r = vh_image_flush(img, &err);
                if (r < 0)
                        fprintf(stderr, "flush: %s\n", vh_error_message(&err, r));
                return r;
        }
        if (n == 3 && streq(w[0], "discard")) {
                if (parse_num(w[1], &off) < 0 || parse_num(w[2], &len) < 0)
                        goto bad;
                r = vh_image_discard(img, off, len, &err);
                if (r < 0)
                        fprintf(stderr, "discard: %s\n", vh_error_message(&err, r));
                else if (!quiet)
                        printf("discard %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n", len, len, off);
                return r;
        }
        if (n == 4 && streq(w[0], "write") && streq(w[1], "-z")) {
                if (parse_num(w[2], &off) < 0 || parse_num(w[3], &len) < 0)
                        goto bad;
                r = vh_image_write_zeroes(img, off, len, &err);
                if (r < 0)
                        fprintf(stderr, "write -z: %s\n", vh_error_message(&err, r));
                else if (!quiet)
                        printf("wrote %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n", len, len, off);
                return r;
        }
        if (n == 5 && (streq(w[0], "write") || streq(w[0], "read")) && (streq(w[1], "-P") || streq(w[1], "-s"))) {
                bool from_file = streq(w[1], "-s");
                if ((!from_file && parse_num(w[2], &pattern) < 0) || parse_num(w[3], &off) < 0 ||
                    parse_num(w[4], &len) < 0 || len > MAX_IO || (from_file && streq(w[0], "read")))
                        goto bad;
                _cleanup_free_ uint8_t *buf = malloc(MAX((size_t) len, (size_t) 1));
                if (!buf)
                        return -ENOMEM;
                if (from_file) {
                        _cleanup_close_ int fd = open(w[2], O_RDONLY | O_CLOEXEC);
                        if (fd < 0 || pread(fd, buf, (size_t) len, 0) != (ssize_t) len) {
                                fprintf(stderr, "write -s: cannot read %" PRIu64 " bytes of %s\n", len, w[2]);
                                return -EIO;
                        }
                } else
                        memset(buf, (int) pattern, (size_t) len);
                if (streq(w[0], "write")) {
                        r = vh_image_write(img, off, buf, (size_t) len, &err);
                        if (r < 0)
                                fprintf(stderr, "write: %s\n", vh_error_message(&err, r));
                        else if (!quiet)
                                printf("wrote %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n", len, len, off);
                        return r;
                }
                _cleanup_free_ uint8_t *got = malloc(MAX((size_t) len, (size_t) 1));
                if (!got)
                        return -ENOMEM;
                r = vh_image_read(img, off, got, (size_t) len, &err);
                if (r < 0) {
                        fprintf(stderr, "read: %s\n", vh_error_message(&err, r));
                        return r;
                }
                for (uint64_t i = 0; i < len; i++)
                        if (got[i] != buf[i]) {
                                fprintf(stderr, "Pattern verification failed at offset %" PRIu64 "\n", off + i);
                                return -EBADMSG;
                        }
                if (!quiet)
                        printf("read %" PRIu64 "/%" PRIu64 " bytes at offset %" PRIu64 "\n", len, len, off);
                return 0;
        }
bad:
        fprintf(stderr, "image-io: cannot parse command '%s'\n", w[0] ? w[0] : "");
        return -EINVAL;
}

int main(int argc, char **argv) {
        struct vh_image_open_options o = { .format = VH_IMAGE_FORMAT_PROBE, .flags = VH_IMAGE_OPEN_READ_WRITE };
        char **cmds = calloc(MAX_COMMANDS, sizeof(char *));
        size_t n_cmds = 0;
        bool quiet = false;
        int c;

        if (!cmds)
                return 1;
        /* The fault switch (VMHOST_FAULT_KILL_AFTER_WRITES) is set by the
         * program's context, as in vmhost itself. */
        struct vh_context *ctx = NULL;
        struct vh_error cerr = {};
        int cr = vh_context_from_env(&ctx, &cerr);
        if (cr < 0) {
                fprintf(stderr, "image-io: %s\n", vh_error_message(&cerr, cr));
                return 2;
        }
        ctx = vh_context_free(ctx);
        while ((c = getopt(argc, argv, "f:c:q")) >= 0)
                switch (c) {
                case 'f':
                        o.format = vh_image_format_from_string(optarg);
                        if ((int) o.format < 0) {
                                fprintf(stderr, "image-io: unknown format %s\n", optarg);
                                return 2;
                        }
                        break;
                case 'c':
                        if (n_cmds >= MAX_COMMANDS) {
                                fprintf(stderr, "image-io: more than %d commands\n", MAX_COMMANDS);
                                return 2;
                        }
                        cmds[n_cmds++] = optarg;
                        break;
                case 'q':
                        quiet = true;
                        break;
                default:
                        fprintf(stderr, "usage: image-io [-f FMT] [-q] -c CMD... FILE\n");
                        return 2;
                }
        if (argc - optind != 1) {
                fprintf(stderr, "usage: image-io [-f FMT] [-q] -c CMD... FILE\n");
                return 2;
        }

        struct vh_error err = {};
        struct vh_image *img = NULL;
        int r = vh_image_open(argv[optind], &o, &img, &err);
        if (r < 0) {
                fprintf(stderr, "image-io: %s\n", vh_error_message(&err, r));
                return 1;
        }
        for (size_t i = 0; r >= 0 && i < n_cmds; i++)
                r = run_command(img, cmds[i], quiet);
        if (r >= 0) {
                r = vh_image_flush(img, &err);
                if (r < 0)
                        fprintf(stderr, "image-io: flush: %s\n", vh_error_message(&err, r));
        }
        vh_image_free(img);
        free(cmds);
        return r < 0 ? 1 : 0;
}
