/* cli/cmd-img-write.c: the 'vmhost img' verbs that change images in place:
 * commit, rebase, resize and snapshot, with qemu-img's flags, output and
 * exit codes (0 success, 1 failure, 2 bad usage), on top of the image
 * engine's write path (include/vmhost/image.h). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "cli/cli.h"
#include "cli/cmd-img.h"
#include "cli/img-common.h"
#include "vmhost/image.h"

/* Flushes and closes; a failed flush is a failed command. */
static int close_image(struct vh_image *img, const char *file) {
        struct vh_error err = {};
        int r = vh_image_flush(img, &err);
        if (r < 0)
                log_error("Cannot flush %s: %s", file, img_cli_without_name(file, vh_error_message(&err, r)));
        vh_image_free(img);
        return r;
}

/* ---- commit ---- */

static void usage_commit(FILE *f) {
        fprintf(f,
                "Usage: vmhost img commit [-f FMT] [-b BASE] [-d] [-r RATE] [-p] [-q] FILE\n"
                "\n"
                "Writes the data of FILE (and of the images between it and BASE) into its\n"
                "backing file, or into BASE further down the chain, then empties FILE so that\n"
                "it reads through to the updated backing file. A smaller backing file grows to\n"
                "FILE's size. Refused while a VM uses FILE or the base.\n"
                "\n"
                "  -b BASE     commit into BASE (must be in FILE's backing chain); implies -d,\n"
                "              as the images between FILE and BASE no longer read right after.\n"
                "              As in qemu-img, a relative BASE is relative to the directory\n"
                "              of the image that names it, not to the working directory\n"
                "  -d          do not empty FILE\n"
                "  -r RATE     copy at most RATE bytes per second (k, M, G suffixes; 0: no limit)\n"
                "  -f FMT      format of FILE (default: probe)\n"
                "  -p          show progress (stdout, as qemu-img)\n"
                "  -q          quiet\n"
                "\n"
                "Example:\n"
                "  vmhost img commit -p vm1.qcow2\n");
}

int cmd_img_commit(int argc, char **argv) {
        static const struct option options[] = {
                IMG_CLI_OPTION_HELP,
                {},
        };
        struct img_cli cli = IMG_CLI_INIT("commit", usage_commit, 2);
        struct vh_image_commit_options co = {};
        int c, status;

        optind = 0;
        while ((c = getopt_long(argc, argv, "hf:b:dpqt:r:", options, NULL)) >= 0)
                switch (c) {
                case 'r':
                        if (img_cli_parse_rate(&cli, optarg) < 0)
                                return 1; /* qemu-img's exit status */
                        break;
                case 'b':
                        co.base = optarg;
                        break;
                case 'd':
                        co.keep_top = true;
                        break;
                case 't':
                        break; /* qemu-img's cache mode: we always write through the page cache and fsync */
                default:
                        if (!img_cli_parse_flag(&cli, c, optarg, &status))
                                return status;
                }
        if (img_cli_check_args(&cli, argc - optind, 1, 1, "one FILE") < 0)
                return cli.usage_status;
        const char *file = argv[optind];
        img_cli_progress_hook(&cli, &co.progress, &co.userdata);

        bool empty = !co.keep_top && !co.base;
        struct vh_image *img = NULL;
        if (img_cli_open(&cli, file, cli.format, empty ? VH_IMAGE_OPEN_READ_WRITE : 0, &img) < 0)
                return 1;
        struct vh_error err = {};
        int r = vh_image_commit(img, &co, &err);
        img_cli_progress_end(&cli);
        if (r < 0) {
                log_error("Cannot commit %s: %s", file, img_cli_without_name(file, vh_error_message(&err, r)));
                vh_image_free(img);
                return 1;
        }
        r = close_image(img, file);
        if (r < 0)
                return 1;
        if (!cli.quiet)
                printf("Image committed.\n");
        return 0;
}

/* ---- rebase ---- */

static void usage_rebase(FILE *f) {
        fprintf(f,
                "Usage: vmhost img rebase [-f FMT] [-u] -b BACKING [-F BACKING_FMT] [-p] [-q] [-U] FILE\n"
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
                "  -p          show progress (stdout, as qemu-img)\n"
                "  -q          quiet\n"
                "  -U          taken for qemu-img's sake: FILE is always locked for writing, and\n"
                "              the backing files are read under QEMU's shared read lock\n"
                "\n"
                "Examples:\n"
                "  vmhost img rebase -b new-base.qcow2 -F qcow2 vm1.qcow2\n"
                "  vmhost img rebase -u -b /srv/images/base.qcow2 -F qcow2 vm1.qcow2\n");
}

int cmd_img_rebase(int argc, char **argv) {
        static const struct option options[] = {
                IMG_CLI_OPTION_HELP,
                {},
        };
        struct img_cli cli = IMG_CLI_INIT("rebase", usage_rebase, 2);
        struct vh_image_rebase_options ro = { .backing_format = VH_IMAGE_FORMAT_PROBE };
        bool have_b = false;
        int c, status;

        optind = 0;
        while ((c = getopt_long(argc, argv, "hf:b:F:upqt:T:U", options, NULL)) >= 0)
                switch (c) {
                case 'b':
                        ro.backing_file = optarg;
                        have_b = true;
                        break;
                case 'F':
                        if (img_cli_parse_format(optarg, "-F", &ro.backing_format) < 0)
                                return cli.usage_status;
                        break;
                case 'u':
                        ro.unsafe = true;
                        break;
                case 't':
                        break; /* cache modes: see commit */
                case 'T':
                        if (img_cli_parse_src_cache(optarg) < 0)
                                return 1; /* qemu-img's exit status */
                        break;
                case 'U':
                        /* qemu-img's -U here shares only the backing files
                         * (the image itself is always locked, as here).
                         * vmhost reads them under QEMU's shared read lock
                         * anyway, which no reader conflicts with, so -U is
                         * taken and changes nothing: a backing file that
                         * another process writes is still refused. */
                        break;
                default:
                        if (!img_cli_parse_flag(&cli, c, optarg, &status))
                                return status;
                }
        if (img_cli_check_args(&cli, argc - optind, 1, 1, "one FILE") < 0)
                return cli.usage_status;
        if (!have_b) {
                log_error("The new backing file must be given with -b (-b \"\" for none).");
                return cli.usage_status;
        }
        const char *file = argv[optind];
        if (!isempty(ro.backing_file) && ro.backing_format == VH_IMAGE_FORMAT_PROBE) {
                log_error("The format of the new backing file must be given with -F (qcow2 or raw).");
                return cli.usage_status;
        }
        img_cli_progress_hook(&cli, &ro.progress, &ro.userdata);
        /* -p: qemu-img's steps, and its 0% before the image is opened. */
        ro.progress_qemu_steps = true;
        cli.progress_mode = IMG_CLI_PROGRESS_SUM_STEPS;
        img_cli_progress_show(&cli, 0, 1);

        /* Unsafe mode must work when the old backing file is gone. */
        unsigned flags = VH_IMAGE_OPEN_READ_WRITE | (ro.unsafe ? VH_IMAGE_OPEN_NO_BACKING : 0);
        struct vh_image *img = NULL;
        if (img_cli_open(&cli, file, cli.format, flags, &img) < 0) {
                img_cli_progress_end(&cli);
                return 1;
        }
        struct vh_error err = {};
        int r = vh_image_rebase(img, &ro, &err);
        if (r >= 0)
                img_cli_progress_done(&cli);
        img_cli_progress_end(&cli);
        if (r < 0) {
                log_error("Cannot rebase %s: %s", file, img_cli_without_name(file, vh_error_message(&err, r)));
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
                "  --shrink    allow a smaller size; data past the new end is deleted\n"
                "              (discarded), with a warning, as in qemu-img\n"
                "  --preallocation=MODE  allocate the new area: off (default), falloc\n"
                "              (reserve blocks), full (write zeros); qcow2 also metadata\n"
                "              (map clusters only). Growing only; raw refuses metadata\n"
                "  -f FMT      format of FILE (default: probe)\n"
                "  -q          quiet\n"
                "\n"
                "Examples:\n"
                "  vmhost img resize vm1.qcow2 +10G\n"
                "  vmhost img resize --shrink disk.raw 1G\n");
}

int cmd_img_resize(int argc, char **argv) {
        enum { ARG_SHRINK = IMG_CLI_ARG_VERB, ARG_PREALLOC };
        static const struct option options[] = {
                IMG_CLI_OPTION_HELP,
                { "shrink", no_argument, NULL, ARG_SHRINK },
                { "preallocation", required_argument, NULL, ARG_PREALLOC },
                {},
        };
        struct img_cli cli = IMG_CLI_INIT("resize", usage_resize, 2);
        bool shrink = false;
        enum vh_image_prealloc prealloc = VH_IMAGE_PREALLOC_OFF;
        int c, status;

        if (cli_wants_help(argc, argv)) {
                usage_resize(stdout);
                return 0;
        }
        /* The size is taken off before getopt sees it: "-1G" is not an
         * option (qemu-img does the same). */
        if (img_cli_check_args(&cli, argc - 1, 2, INT_MAX, "FILE SIZE") < 0)
                return cli.usage_status;
        const char *size_arg = argv[--argc];

        optind = 0;
        while ((c = getopt_long(argc, argv, "hf:q", options, NULL)) >= 0)
                switch (c) {
                case ARG_SHRINK:
                        shrink = true;
                        break;
                case ARG_PREALLOC:
                        if (vh_image_prealloc_from_string(optarg, &prealloc) < 0) {
                                log_error("Invalid preallocation mode: '%s' (off, metadata, falloc or full).", optarg);
                                return cli.usage_status;
                        }
                        break;
                default:
                        if (!img_cli_parse_flag(&cli, c, optarg, &status))
                                return status;
                }
        if (img_cli_check_args(&cli, argc - optind, 1, 1, "FILE SIZE") < 0)
                return cli.usage_status;
        const char *file = argv[optind];
        int sign = size_arg[0] == '+' ? 1 : size_arg[0] == '-' ? -1 : 0;
        uint64_t amount;
        if (img_cli_parse_size(size_arg + (sign != 0), &amount) < 0) {
                log_error("Invalid size '%s': use [+|-]NUMBER with an optional k, M, G, T suffix.", size_arg);
                return cli.usage_status;
        }

        struct vh_image *img = NULL;
        if (img_cli_open(&cli, file, cli.format, VH_IMAGE_OPEN_READ_WRITE, &img) < 0)
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
        if (shrink && size < cur)
                /* qemu-img's warning: the user asked for it, and gets it. */
                log_warning("Shrinking %s deletes everything past its new end (%" PRIu64 " bytes); make sure "
                            "nothing important is there.",
                            file, size);
        struct vh_error err = {};
        int r = vh_image_resize_prealloc(img, size, shrink, prealloc, &err);
        if (r < 0) {
                log_error("Cannot resize %s: %s", file, img_cli_without_name(file, vh_error_message(&err, r)));
                vh_image_free(img);
                return 1;
        }
        if (close_image(img, file) < 0)
                return 1;
        if (!cli.quiet)
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
                "              none of these: open FILE for writing and do nothing, as qemu-img\n"
                "  -U          -l only: take no lock (an image a running VM uses)\n"
                "  -q          quiet\n"
                "\n"
                "Examples:\n"
                "  vmhost img snapshot -c before-upgrade vm1.qcow2\n"
                "  vmhost img snapshot -a before-upgrade vm1.qcow2\n");
}

int cmd_img_snapshot(int argc, char **argv) {
        static const struct option options[] = {
                IMG_CLI_OPTION_HELP,
                IMG_CLI_OPTION_FORCE_SHARE,
                {},
        };
        struct img_cli cli = IMG_CLI_INIT("snapshot", usage_snapshot, 2);
        enum { LIST, CREATE, APPLY, DELETE } action = LIST;
        const char *name = NULL;
        int actions = 0, c, status;

        optind = 0;
        while ((c = getopt_long(argc, argv, "hlc:a:d:Uqf:", options, NULL)) >= 0)
                switch (c) {
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
                case 'f':
                        break; /* accepted for qemu-img's sake; snapshots are qcow2's, so the format is probed */
                default:
                        if (!img_cli_parse_flag(&cli, c, optarg, &status))
                                return status;
                }
        /* Exit 1 for these, as qemu-img. */
        if (actions > 1) {
                log_error("Cannot mix '-l', '-a', '-c', '-d'. See 'vmhost img snapshot --help'.");
                return 1;
        }
        if (img_cli_check_args(&cli, argc - optind, 1, 1, "one FILE") < 0)
                return cli.usage_status;
        /* No action: qemu-img 7.2 opens the image for writing (its lock
         * taken, so a missing or busy image fails) and does nothing. */
        bool no_action = actions == 0;
        if (cli.force_share && (action != LIST || no_action)) {
                log_error("-U only goes with -l: a snapshot cannot be changed without the image's lock.");
                return 1;
        }
        const char *file = argv[optind];
        unsigned flags = (action == LIST && !no_action ? 0 : VH_IMAGE_OPEN_READ_WRITE) | VH_IMAGE_OPEN_NO_BACKING;
        struct vh_image *img = NULL;
        if (img_cli_open(&cli, file, VH_IMAGE_FORMAT_PROBE, flags, &img) < 0)
                return 1;
        if (no_action)
                return close_image(img, file) < 0 ? 1 : 0;

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
