/* cli/cmd-img-write.c: the 'vmhost img' verbs that change images in place:
 * commit, rebase, resize and snapshot, with qemu-img's flags, output and
 * exit codes (0 success, 1 failure, 2 bad usage), on top of the image
 * engine's write path (include/vmhost/image.h). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "cli/cli.h"
#include "cli/cmd-img.h"
#include "vmhost/image.h"

static int parse_fmt(const char *s, const char *flag, enum vh_image_format *ret) {
        int f = vh_image_format_from_string(s);
        if (f < 0) {
                log_error("Unknown format '%s' for %s: use raw or qcow2.", s, flag);
                return -EINVAL;
        }
        *ret = f;
        return 0;
}

struct progress {
        int last; /* hundredths of a percent last printed, -1 for none */
};

static void progress_print(uint64_t done, uint64_t total, void *userdata) {
        struct progress *p = userdata;
        int now = total ? (int) ((double) done * 10000.0 / (double) total) : 10000;
        if (p->last >= 0 && now / 100 == p->last / 100 && now != 10000)
                return;
        if (now == p->last)
                return;
        p->last = now;
        fprintf(stderr, "    (%d.%02d/100%%)\r", now / 100, now % 100);
        fflush(stderr);
}

static struct vh_image *open_or_log(const char *file, enum vh_image_format format, unsigned flags) {
        struct vh_image_open_options o = { .format = format, .flags = flags };
        struct vh_error err = {};
        struct vh_image *img = NULL;
        int r = vh_image_open(file, &o, &img, &err);
        if (r < 0) {
                log_error("Cannot open %s: %s", file, vh_error_message(&err, r));
                return NULL;
        }
        return img;
}

/* Flushes and closes; a failed flush is a failed command. */
static int close_image(struct vh_image *img, const char *file) {
        struct vh_error err = {};
        int r = vh_image_flush(img, &err);
        if (r < 0)
                log_error("Cannot flush %s: %s", file, vh_error_message(&err, r));
        vh_image_free(img);
        return r;
}

/* ---- commit ---- */

static void usage_commit(FILE *f) {
        fprintf(f,
                "Usage: vmhost img commit [-f FMT] [-b BASE] [-d] [-p] [-q] FILE\n"
                "\n"
                "Writes the data of FILE (and of the images between it and BASE) into its\n"
                "backing file, or into BASE further down the chain, then empties FILE so that\n"
                "it reads through to the updated backing file. A smaller backing file grows to\n"
                "FILE's size. Refused while a VM uses FILE or the base.\n"
                "\n"
                "  -b BASE     commit into BASE (must be in FILE's backing chain); implies -d,\n"
                "              as the images between FILE and BASE no longer read right after\n"
                "  -d          do not empty FILE\n"
                "  -f FMT      format of FILE (default: probe)\n"
                "  -p          show progress on stderr\n"
                "  -q          quiet\n"
                "\n"
                "Example:\n"
                "  vmhost img commit -p vm1.qcow2\n");
}

int cmd_img_commit(int argc, char **argv) {
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                {},
        };
        enum vh_image_format format = VH_IMAGE_FORMAT_PROBE;
        struct vh_image_commit_options co = {};
        bool progress = false, quiet = false;
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "hf:b:dpqt:", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        usage_commit(stdout);
                        return 0;
                case 'f':
                        if (parse_fmt(optarg, "-f", &format) < 0)
                                return 2;
                        break;
                case 'b':
                        co.base = optarg;
                        break;
                case 'd':
                        co.keep_top = true;
                        break;
                case 'p':
                        progress = true;
                        break;
                case 'q':
                        quiet = true;
                        break;
                case 't':
                        break; /* qemu-img's cache mode: we always write through the page cache and fsync */
                default:
                        usage_commit(stderr);
                        return 2;
                }
        if (argc - optind != 1) {
                log_error("Expected one FILE. See 'vmhost img commit --help'.");
                return 2;
        }
        const char *file = argv[optind];
        struct progress ps = { .last = -1 };
        if (progress && !quiet) {
                co.progress = progress_print;
                co.userdata = &ps;
        }

        bool empty = !co.keep_top && !co.base;
        struct vh_image *img = open_or_log(file, format, empty ? VH_IMAGE_OPEN_READ_WRITE : 0);
        if (!img)
                return 1;
        struct vh_error err = {};
        int r = vh_image_commit(img, &co, &err);
        if (co.progress)
                fputc('\n', stderr);
        if (r < 0) {
                log_error("Cannot commit %s: %s", file, vh_error_message(&err, r));
                vh_image_free(img);
                return 1;
        }
        r = close_image(img, file);
        if (r < 0)
                return 1;
        if (!quiet)
                printf("Image committed.\n");
        return 0;
}

/* ---- rebase ---- */

static void usage_rebase(FILE *f) {
        fprintf(f,
                "Usage: vmhost img rebase [-f FMT] [-u] -b BACKING [-F BACKING_FMT] [-p] [-q] FILE\n"
                "\n"
                "Makes BACKING the backing file of FILE; -b \"\" makes FILE standalone. The\n"
                "name is stored as given; a relative one is relative to FILE's directory.\n"
                "Safe mode (the default) first copies into FILE every range where the old and\n"
                "the new backing chains differ, so that the guest sees the same disk.\n"
                "\n"
                "  -b BACKING  the new backing file, or \"\" for none\n"
                "  -F FMT      its format (required with a backing file)\n"
                "  -u          unsafe: only rewrite the name; the old and new backing files\n"
                "              need not exist (after moving or renaming them)\n"
                "  -f FMT      format of FILE (default: probe)\n"
                "  -p          show progress on stderr\n"
                "  -q          quiet\n"
                "\n"
                "Examples:\n"
                "  vmhost img rebase -b new-base.qcow2 -F qcow2 vm1.qcow2\n"
                "  vmhost img rebase -u -b /srv/images/base.qcow2 -F qcow2 vm1.qcow2\n");
}

int cmd_img_rebase(int argc, char **argv) {
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                {},
        };
        enum vh_image_format format = VH_IMAGE_FORMAT_PROBE;
        struct vh_image_rebase_options ro = { .backing_format = VH_IMAGE_FORMAT_PROBE };
        bool progress = false, quiet = false, have_b = false;
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "hf:b:F:upqt:T:U", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        usage_rebase(stdout);
                        return 0;
                case 'f':
                        if (parse_fmt(optarg, "-f", &format) < 0)
                                return 2;
                        break;
                case 'b':
                        ro.backing_file = optarg;
                        have_b = true;
                        break;
                case 'F':
                        if (parse_fmt(optarg, "-F", &ro.backing_format) < 0)
                                return 2;
                        break;
                case 'u':
                        ro.unsafe = true;
                        break;
                case 'p':
                        progress = true;
                        break;
                case 'q':
                        quiet = true;
                        break;
                case 't':
                case 'T':
                        break; /* cache modes: see commit */
                case 'U':
                        log_error("-U (no locks) cannot be used to change an image.");
                        return 2;
                default:
                        usage_rebase(stderr);
                        return 2;
                }
        if (argc - optind != 1) {
                log_error("Expected one FILE. See 'vmhost img rebase --help'.");
                return 2;
        }
        if (!have_b) {
                log_error("The new backing file must be given with -b (-b \"\" for none).");
                return 2;
        }
        const char *file = argv[optind];
        if (!isempty(ro.backing_file) && ro.backing_format == VH_IMAGE_FORMAT_PROBE) {
                log_error("The format of the new backing file must be given with -F (qcow2 or raw).");
                return 2;
        }
        struct progress ps = { .last = -1 };
        if (progress && !quiet) {
                ro.progress = progress_print;
                ro.userdata = &ps;
        }

        /* Unsafe mode must work when the old backing file is gone. */
        unsigned flags = VH_IMAGE_OPEN_READ_WRITE | (ro.unsafe ? VH_IMAGE_OPEN_NO_BACKING : 0);
        struct vh_image *img = open_or_log(file, format, flags);
        if (!img)
                return 1;
        struct vh_error err = {};
        int r = vh_image_rebase(img, &ro, &err);
        if (ro.progress)
                fputc('\n', stderr);
        if (r < 0) {
                log_error("Cannot rebase %s: %s", file, vh_error_message(&err, r));
                vh_image_free(img);
                return 1;
        }
        return close_image(img, file) < 0 ? 1 : 0;
}

/* ---- resize ---- */

static void usage_resize(FILE *f) {
        fprintf(f,
                "Usage: vmhost img resize [-f FMT] [--shrink] [-q] FILE [+|-]SIZE\n"
                "\n"
                "Sets the virtual size of FILE to SIZE, or grows (+) or shrinks (-) it by SIZE.\n"
                "SIZE takes k, M, G, T suffixes. Shrinking needs --shrink and is refused while\n"
                "data is allocated past the new end. The guest's partitions and file systems\n"
                "are not touched: grow them inside the guest, shrink them first.\n"
                "\n"
                "  --shrink    allow a smaller size\n"
                "  -f FMT      format of FILE (default: probe)\n"
                "  -q          quiet\n"
                "\n"
                "Examples:\n"
                "  vmhost img resize vm1.qcow2 +10G\n"
                "  vmhost img resize --shrink disk.raw 1G\n");
}

int cmd_img_resize(int argc, char **argv) {
        enum { ARG_SHRINK = 0x100, ARG_PREALLOC };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "shrink", no_argument, NULL, ARG_SHRINK },
                { "preallocation", required_argument, NULL, ARG_PREALLOC },
                {},
        };
        enum vh_image_format format = VH_IMAGE_FORMAT_PROBE;
        bool shrink = false, quiet = false;
        int c;

        if (cli_wants_help(argc, argv)) {
                usage_resize(stdout);
                return 0;
        }
        /* The size is taken off before getopt sees it: "-1G" is not an
         * option (qemu-img does the same). */
        if (argc < 3) {
                log_error("Expected FILE SIZE. See 'vmhost img resize --help'.");
                return 2;
        }
        const char *size_arg = argv[--argc];

        optind = 0;
        while ((c = getopt_long(argc, argv, "hf:q", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        usage_resize(stdout);
                        return 0;
                case 'f':
                        if (parse_fmt(optarg, "-f", &format) < 0)
                                return 2;
                        break;
                case 'q':
                        quiet = true;
                        break;
                case ARG_SHRINK:
                        shrink = true;
                        break;
                case ARG_PREALLOC:
                        if (!streq(optarg, "off")) {
                                log_error("Only --preallocation=off is supported.");
                                return 2;
                        }
                        break;
                default:
                        usage_resize(stderr);
                        return 2;
                }
        if (argc - optind != 1) {
                log_error("Expected FILE SIZE. See 'vmhost img resize --help'.");
                return 2;
        }
        const char *file = argv[optind];
        int sign = size_arg[0] == '+' ? 1 : size_arg[0] == '-' ? -1 : 0;
        uint64_t amount;
        if (parse_size(size_arg + (sign != 0), &amount) < 0) {
                log_error("Invalid size '%s': use [+|-]NUMBER with an optional k, M, G, T suffix.", size_arg);
                return 2;
        }

        struct vh_image *img = open_or_log(file, format, VH_IMAGE_OPEN_READ_WRITE);
        if (!img)
                return 1;
        uint64_t cur = vh_image_virtual_size(img), size = amount;
        if (sign > 0)
                size = cur + amount < cur ? UINT64_MAX : cur + amount;
        else if (sign < 0) {
                if (amount > cur) {
                        log_error("Cannot shrink %s by %s: it is only %" PRIu64 " bytes.", file, size_arg + 1, cur);
                        vh_image_free(img);
                        return 1;
                }
                size = cur - amount;
        }
        struct vh_error err = {};
        int r = vh_image_resize(img, size, shrink, &err);
        if (r < 0) {
                log_error("Cannot resize %s: %s", file, vh_error_message(&err, r));
                vh_image_free(img);
                return 1;
        }
        if (close_image(img, file) < 0)
                return 1;
        if (!quiet)
                printf("Image resized.\n");
        return 0;
}

/* ---- snapshot ---- */

static void usage_snapshot(FILE *f) {
        fprintf(f,
                "Usage: vmhost img snapshot [-l | -c NAME | -a NAME | -d NAME] [-U] [-q] FILE\n"
                "\n"
                "Internal snapshots of a qcow2 image (the same table QEMU's savevm and\n"
                "'qemu-img snapshot' use; disk state only).\n"
                "\n"
                "  -l          list the snapshots\n"
                "  -c NAME     create a snapshot of the current state\n"
                "  -a NAME     apply: go back to the snapshot (later writes are lost)\n"
                "  -d NAME     delete the snapshot (NAME may also be its ID)\n"
                "  -U          -l only: take no lock (an image a running VM uses)\n"
                "  -q          quiet\n"
                "\n"
                "Examples:\n"
                "  vmhost img snapshot -c before-upgrade vm1.qcow2\n"
                "  vmhost img snapshot -a before-upgrade vm1.qcow2\n");
}

int cmd_img_snapshot(int argc, char **argv) {
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "force-share", no_argument, NULL, 'U' },
                {},
        };
        enum { LIST, CREATE, APPLY, DELETE } action = LIST;
        const char *name = NULL;
        bool force_share = false;
        int actions = 0, c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "hlc:a:d:Uqf:", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        usage_snapshot(stdout);
                        return 0;
                case 'l':
                        action = LIST;
                        actions++;
                        break;
                case 'c':
                case 'a':
                case 'd':
                        action = c == 'c' ? CREATE : c == 'a' ? APPLY : DELETE;
                        name = optarg;
                        actions++;
                        break;
                case 'U':
                        force_share = true;
                        break;
                case 'q':
                case 'f':
                        break;
                default:
                        usage_snapshot(stderr);
                        return 2;
                }
        if (actions != 1) {
                log_error("Give exactly one of -l, -c, -a, -d. See 'vmhost img snapshot --help'.");
                return 2;
        }
        if (argc - optind != 1) {
                log_error("Expected one FILE. See 'vmhost img snapshot --help'.");
                return 2;
        }
        if (force_share && action != LIST) {
                log_error("-U only goes with -l: a snapshot cannot be changed without the image's lock.");
                return 2;
        }
        const char *file = argv[optind];
        unsigned flags = action == LIST ? (force_share ? VH_IMAGE_OPEN_FORCE_SHARE : 0) : VH_IMAGE_OPEN_READ_WRITE;
        struct vh_image *img = open_or_log(file, VH_IMAGE_FORMAT_PROBE, flags | VH_IMAGE_OPEN_NO_BACKING);
        if (!img)
                return 1;

        struct vh_error err = {};
        int r;
        if (action == LIST) {
                struct vh_image_snapshot *list = NULL;
                size_t n = 0;
                r = vh_image_snapshot_list(img, &list, &n, &err);
                if (r >= 0 && n > 0) {
                        _cleanup_free_ char *text = NULL;
                        r = vh_image_snapshots_format(list, n, &text, &err);
                        if (r >= 0)
                                fputs(text, stdout);
                }
                vh_image_snapshots_free(list, n);
                vh_image_free(img);
                if (r < 0) {
                        log_error("Cannot list the snapshots of %s: %s", file, vh_error_message(&err, r));
                        return 1;
                }
                return 0;
        }

        const char *what = action == CREATE ? "create" : action == APPLY ? "apply" : "delete";
        if (action == CREATE)
                r = vh_image_snapshot_create(img, name, &err);
        else if (action == APPLY)
                r = vh_image_snapshot_apply(img, name, &err);
        else
                r = vh_image_snapshot_delete(img, name, &err);
        if (r < 0) {
                log_error("Cannot %s snapshot '%s' of %s: %s", what, name, file, vh_error_message(&err, r));
                vh_image_free(img);
                return 1;
        }
        return close_image(img, file) < 0 ? 1 : 0;
}
