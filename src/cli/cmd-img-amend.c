/* cli/cmd-img-amend.c: 'vmhost img amend': qemu-img amend's options for
 * qcow2 (compat, lazy_refcounts, refcount_bits, size), its refusals of the
 * others and its exit codes (0 success, 1 failure), on top of
 * vh_image_amend() (src/image/amend.c). */
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
#include "cli/img-common.h"
#include "vmhost/image.h"

/* Longest -o text taken (all -o joined). */
#define AMEND_MAX_OPTIONS 4096

static void usage_amend(FILE *f) {
        fprintf(f,
                "Usage: vmhost img amend [-f FMT] [-p] [-q] [-t CACHE] [--force] -o OPTIONS FILE\n"
                "\n"
                "Changes the format options of the qcow2 image FILE in place, as qemu-img amend\n"
                "does. The file is the old or the new image at every moment, so a crash or a\n"
                "kill half-way loses nothing. Refused while another process (a running VM)\n"
                "holds the image.\n"
                "\n"
                "  -o OPTIONS  comma-separated, -o may be repeated ('-o help' lists them):\n"
                "                compat=0.10|1.1    version 2 or 3; going to 0.10 writes zero\n"
                "                                   clusters out, and is refused with extended\n"
                "                                   L2 entries, an external data file, bitmaps,\n"
                "                                   zstd-compressed clusters, snapshots of another\n"
                "                                   disk size, lazy refcounts or refcount_bits\n"
                "                                   other than 16\n"
                "                lazy_refcounts=on|off  (version 3)\n"
                "                refcount_bits=N    1, 2, 4, ... 64 (other than 16: version 3);\n"
                "                                   refused if a refcount does not fit\n"
                "                size=SIZE          grow the virtual disk; unlike qemu-img,\n"
                "                                   not shrink it (use 'vmhost img resize --shrink'),\n"
                "                                   and not with persistent bitmaps (not kept)\n"
                "              Refused: backing_file, backing_fmt (use 'vmhost img rebase'),\n"
                "              data_file, data_file_raw, encrypt.* (not supported), and the\n"
                "              creation-only options (cluster_size, compression_type, ...).\n"
                "  -f FMT      the image's format (qcow2; raw has no options to amend)\n"
                "  -p          show progress (of a refcount_bits rewrite and of a downgrade's\n"
                "              zero clusters); Ctrl-C cancels cleanly\n"
                "  -q          quiet\n"
                "  -t CACHE    accepted for qemu-img's sake; amend always flushes\n"
                "  --force     accepted for qemu-img's sake (it is for encryption keyslots)\n"
                "\n"
                "Every refusal comes before anything is written.\n"
                "A dirty image (lazy refcounts, not closed cleanly) is refused: repair it with\n"
                "'vmhost img check -r all' first (qemu-img repairs it on open).\n"
                "\n"
                "Example:\n"
                "  vmhost img amend -o compat=0.10 vm1.qcow2\n");
}

/* What qemu-img 7.2 lists for 'amend -o help' on qcow2, less what vmhost
 * refuses (see usage_amend()). */
static void print_amend_help(void) {
        printf("Amend options for 'qcow2':\n");
        printf("  %-22s - %s\n", "compat=<str>", "Compatibility level (v2 [0.10] or v3 [1.1])");
        printf("  %-22s - %s\n", "lazy_refcounts=<bool (on/off)>", "Postpone refcount updates");
        printf("  %-22s - %s\n", "refcount_bits=<num>", "Width of a reference count entry in bits");
        printf("  %-22s - %s\n", "size=<size>", "Virtual disk size");
}

static bool has_help(const char *opts) {
        _cleanup_free_ char *copy = strdup(opts);
        if (!copy)
                return false;
        for (char *save = NULL, *kv = strtok_r(copy, ",", &save); kv; kv = strtok_r(NULL, ",", &save))
                if (streq(kv, "help") || streq(kv, "?"))
                        return true;
        return false;
}

/* Parses 'opts' into 'o' with qemu-img's messages; prints the error. A key
 * without '=' has the value "on", as in QEMU's option syntax. */
static int parse_amend_options(const char *opts, struct vh_image_amend_options *o) {
        static const char *const create_only[] = {
                "cluster_size", "compression_type", "extended_l2", "preallocation", "encryption", "encrypt.format",
                "nocow",
        };
        _cleanup_free_ char *copy = strdup(opts);
        if (!copy)
                return log_error_errno(-ENOMEM, "Out of memory.");
        for (char *save = NULL, *kv = strtok_r(copy, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
                char *eq = strchr(kv, '=');
                const char *v = "on";
                if (eq) {
                        *eq = '\0';
                        v = eq + 1;
                }
                if (streq(kv, "compat")) {
                        if (streq(v, "0.10") || streq(v, "v2"))
                                o->version = 2;
                        else if (streq(v, "1.1") || streq(v, "v3"))
                                o->version = 3;
                        else {
                                log_error("Unknown compatibility level %s", v);
                                return -EINVAL;
                        }
                } else if (streq(kv, "lazy_refcounts")) {
                        if (streq(v, "on") || streq(v, "yes") || streq(v, "true"))
                                o->lazy_refcounts = 1;
                        else if (streq(v, "off") || streq(v, "no") || streq(v, "false"))
                                o->lazy_refcounts = 0;
                        else {
                                log_error("Parameter 'lazy_refcounts' expects 'on' or 'off'");
                                return -EINVAL;
                        }
                } else if (streq(kv, "refcount_bits")) {
                        uint64_t n;
                        if (parse_u64(v, &n) < 0) {
                                log_error("Parameter 'refcount_bits' expects a number");
                                return -EINVAL;
                        }
                        if (n == 0 || n > 64 || (n & (n - 1))) {
                                log_error("Refcount width must be a power of two and may not exceed 64 bits");
                                return -EINVAL;
                        }
                        o->refcount_bits = (unsigned) n;
                } else if (streq(kv, "size")) {
                        if (img_cli_parse_size(v, &o->size) < 0) {
                                log_error("Parameter 'size' expects a non-negative number below 2^64 (with an "
                                          "optional k, M, G, T, P or E suffix)");
                                return -EINVAL;
                        }
                } else if (streq(kv, "backing_file") || streq(kv, "backing_fmt")) {
                        log_error("Cannot amend the backing file. You can use 'vmhost img rebase' instead.");
                        return -EINVAL;
                } else if (streq(kv, "data_file")) {
                        log_error("data-file can only be set for images that use an external data file");
                        return -EINVAL;
                } else if (streq(kv, "data_file_raw")) {
                        log_error("data-file-raw cannot be set on existing images");
                        return -EINVAL;
                } else if (startswith(kv, "encrypt.") && !streq(kv, "encrypt.format")) {
                        log_error("Can't amend encryption options - encryption not present (vmhost does not "
                                  "support encrypted images)");
                        return -EINVAL;
                } else {
                        bool creation = false;
                        for (size_t i = 0; i < ELEMENTSOF(create_only); i++)
                                creation |= streq(kv, create_only[i]);
                        if (creation)
                                log_error("Invalid parameter '%s'. This option is only supported for image creation",
                                          kv);
                        else
                                log_error("Invalid parameter '%s'", kv);
                        return -EINVAL;
                }
        }
        return 0;
}

int cmd_img_amend(int argc, char **argv) {
        enum { ARG_FORCE = IMG_CLI_ARG_VERB };
        static const struct option options[] = {
                IMG_CLI_OPTION_HELP,
                IMG_CLI_OPTION_FORMAT,
                { "force", no_argument, NULL, ARG_FORCE },
                {},
        };
        struct img_cli cli = IMG_CLI_INIT("amend", usage_amend, 1);
        _cleanup_free_ char *opts = NULL;
        int c, status;

        if (cli_wants_help(argc, argv)) {
                usage_amend(stdout);
                return 0;
        }
        optind = 0;
        while ((c = getopt_long(argc, argv, "hf:o:pqt:", options, NULL)) >= 0)
                switch (c) {
                case 'o': {
                        size_t have = opts ? strlen(opts) : 0;
                        if (have + strlen(optarg) + 1 > AMEND_MAX_OPTIONS) {
                                log_error("The -o options are longer than %d bytes.", AMEND_MAX_OPTIONS);
                                return 1;
                        }
                        char *joined = opts ? strdup_printf("%s,%s", opts, optarg) : strdup(optarg);
                        if (!joined)
                                return log_error_errno(-ENOMEM, "Out of memory."), 1;
                        free(opts);
                        opts = joined;
                        break;
                }
                case 't': {
                        enum vh_image_cache cache;
                        if (vh_image_cache_from_string(optarg, &cache) < 0) {
                                log_error("Invalid cache option: %s", optarg);
                                return 1;
                        }
                        break;
                }
                case ARG_FORCE:
                        break;
                default:
                        if (!img_cli_parse_flag(&cli, c, optarg, &status))
                                return status;
                }
        if (!opts) {
                log_error("Must specify options (-o). See 'vmhost img amend --help'.");
                return 1;
        }
        if (argc - optind != 1) {
                log_error("Expecting one image file name. See 'vmhost img amend --help'.");
                return 1;
        }
        const char *file = argv[optind];

        if (has_help(opts)) {
                enum vh_image_format format = cli.format;
                struct vh_error err = {};
                if (format == VH_IMAGE_FORMAT_PROBE) {
                        int r = vh_image_probe(file, &format, &err);
                        if (r < 0) {
                                log_error("Could not open '%s': %s", file, vh_error_message(&err, r));
                                return 1;
                        }
                }
                if (format != VH_IMAGE_FORMAT_QCOW2) {
                        log_error("Format driver '%s' does not support option amendment",
                                  vh_image_format_to_string(format));
                        return 1;
                }
                print_amend_help();
                return 0;
        }

        struct vh_image_amend_options o = { .lazy_refcounts = -1 };
        if (parse_amend_options(opts, &o) < 0)
                return 1;

        _cleanup_(vh_image_freep) struct vh_image *img = NULL;
        if (img_cli_open(&cli, file, cli.format, VH_IMAGE_OPEN_READ_WRITE, &img) < 0)
                return 1;
        img_cli_progress_hook(&cli, &o.progress, &o.userdata);
        struct vh_error err = {};
        int r = vh_image_amend(img, &o, &err);
        if (r >= 0)
                r = vh_image_flush(img, &err);
        img_cli_progress_end(&cli);
        if (r < 0) {
                log_error("Cannot amend %s: %s", file, img_cli_without_name(file, vh_error_message(&err, r)));
                return 1;
        }
        return 0;
}
