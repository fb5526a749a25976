/* cli/cmd-img-inspect.c: 'vmhost img check|map|compare|measure', the
 * verbs that look at images without changing what a guest sees (check -r
 * repairs metadata only). Flags, messages, output and exit codes are
 * qemu-img's, so scripts written for qemu-img work unchanged. */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/log.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "cli/cmd-img.h"
#include "cli/img-common.h"
#include "vmhost/image.h"

enum {
        ARG_SIZE = IMG_CLI_ARG_VERB,
        ARG_START_OFFSET,
        ARG_MAX_LENGTH,
};

/* ---- check ---- */

static void usage_check(FILE *f) {
        fprintf(f,
                "Usage: vmhost img check [-f FMT] [-r leaks|all] [--output=human|json] [-U] [-q] FILE\n"
                "\n"
                "Checks the refcounts and tables of a qcow2 image, as 'qemu-img check' does.\n"
                "Problems are listed on stderr. Exit status: 0 no problems, 1 the check could\n"
                "not be completed, 2 corruptions, 3 leaked clusters only, 63 format without checks.\n"
                "\n"
                "  -f FMT          image format (default: probe)\n"
                "  -r leaks        repair leaked clusters (refcounts too high)\n"
                "  -r all          also repair refcounts too low, a broken refcount table and\n"
                "                  COPIED flags\n"
                "  --output=json   qemu-img's JSON (check-errors, leaks, corruptions, ...)\n"
                "  -U              take no lock (not with -r)\n"
                "  -T SRC_CACHE    taken for qemu-img's sake; reads use the page cache\n"
                "  -q              quiet\n"
                "\n"
                "Examples:\n"
                "  vmhost img check vm1.qcow2\n"
                "  vmhost img check -r leaks --output=json vm1.qcow2\n");
}

static void check_report(const char *line, void *userdata) {
        fprintf(stderr, "%s\n", line);
}

static void check_repaired(uint64_t leaks_fixed, uint64_t corruptions_fixed, void *userdata) {
        const struct img_cli *cli = userdata;
        if (cli->quiet || cli->output != VH_IMAGE_INFO_HUMAN)
                return;
        printf("The following inconsistencies were found and repaired:\n\n"
               "    %" PRIu64 " leaked clusters\n"
               "    %" PRIu64 " corruptions\n\n"
               "Double checking the fixed image now...\n",
               leaks_fixed, corruptions_fixed);
}

int cmd_img_check(int argc, char **argv) {
        static const struct option options[] = {
                IMG_CLI_OPTION_HELP,
                IMG_CLI_OPTION_OUTPUT,
                { "repair", required_argument, NULL, 'r' },
                IMG_CLI_OPTION_FORCE_SHARE,
                IMG_CLI_OPTION_FORMAT,
                {},
        };
        struct img_cli cli = IMG_CLI_INIT("check", usage_check, 1);
        struct vh_image_check_options o = {
                .report = check_report,
                .repaired = check_repaired,
                .userdata = &cli,
        };
        int c, status;

        optind = 0;
        while ((c = getopt_long(argc, argv, "hf:r:UqT:", options, NULL)) >= 0)
                switch (c) {
                case 'T':
                        if (img_cli_parse_src_cache(optarg) < 0)
                                return 1; /* qemu-img's exit status */
                        break;
                case 'r':
                        if (streq(optarg, "leaks"))
                                o.repair = VH_IMAGE_CHECK_REPAIR_LEAKS;
                        else if (streq(optarg, "all"))
                                o.repair = VH_IMAGE_CHECK_REPAIR_ALL;
                        else {
                                log_error("Unknown option value for -r (expecting 'leaks' or 'all'): %s", optarg);
                                return cli.usage_status;
                        }
                        break;
                default:
                        if (!img_cli_parse_flag(&cli, c, optarg, &status))
                                return status;
                }
        if (img_cli_check_args(&cli, argc - optind, 1, 1, "one FILE") < 0)
                return cli.usage_status;
        if (cli.force_share && o.repair) {
                log_error("-U cannot be used with -r: a repair must lock the image.");
                return cli.usage_status;
        }
        const char *file = argv[optind];
        o.format = cli.format;
        o.force_share = cli.force_share;

        struct vh_error err = {};
        struct vh_image_check_result res;
        int r = vh_image_check(file, &o, &res, &err);
        if (r == -EOPNOTSUPP && streq(vh_error_message(&err, r), "This image format does not support checks")) {
                log_error("This image format does not support checks");
                return 63;
        }
        if (r < 0) {
                log_error("Check failed: %s", vh_error_message(&err, r));
                return 1;
        }
        if (!cli.quiet) {
                _cleanup_free_ char *text = NULL;
                r = vh_image_check_format(file, &res, cli.output, &text, &err);
                if (r < 0) {
                        log_error("%s", vh_error_message(&err, r));
                        return 1;
                }
                fputs(text, stdout);
                if (text[0] && text[strlen(text) - 1] != '\n')
                        fputc('\n', stdout);
        }
        if (res.check_errors) {
                log_error("Check failed");
                return 1;
        }
        if (res.corruptions)
                return 2;
        if (res.leaks)
                return 3;
        return 0;
}

/* ---- map ---- */

static void usage_map(FILE *f) {
        fprintf(f,
                "Usage: vmhost img map [-f FMT] [--output=human|json] [--start-offset=N]\n"
                "                      [--max-length=N] [-U] FILE\n"
                "\n"
                "Shows which ranges of the guest disk hold data, zeros or nothing, in which\n"
                "layer of the backing chain (depth) and where in which file, exactly as\n"
                "'qemu-img map' prints it.\n"
                "\n"
                "  -f FMT             image format (default: probe)\n"
                "  --output=json      all ranges: start, length, depth, present, zero, data, offset\n"
                "  --start-offset=N   begin at guest offset N\n"
                "  --max-length=N     stop after N bytes\n"
                "  -U                 take no lock\n"
                "\n"
                "Example:\n"
                "  vmhost img map --output=json vm1.qcow2\n");
}

static int map_emit(const struct vh_image_map_entry *e, const struct vh_image_map_entry *next, void *userdata) {
        const struct img_cli *cli = userdata;
        if (cli->output == VH_IMAGE_INFO_HUMAN) {
                if (e->data && !e->has_offset) {
                        log_error("File contains external, encrypted or compressed clusters.");
                        return -EINVAL;
                }
                if (e->data && !e->zero)
                        printf("%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64 "%s\n", e->start, e->length, e->offset,
                               e->filename ? e->filename : "");
                return 0;
        }
        printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %u, \"present\": %s, \"zero\": %s, "
               "\"data\": %s",
               e->start, e->length, e->depth, e->present ? "true" : "false", e->zero ? "true" : "false",
               e->data ? "true" : "false");
        if (e->has_offset)
                printf(", \"offset\": %" PRIu64, e->offset);
        putchar('}');
        if (next)
                puts(",");
        return 0;
}

int cmd_img_map(int argc, char **argv) {
        static const struct option options[] = {
                IMG_CLI_OPTION_HELP,
                IMG_CLI_OPTION_OUTPUT,
                { "start-offset", required_argument, NULL, ARG_START_OFFSET },
                { "max-length", required_argument, NULL, ARG_MAX_LENGTH },
                IMG_CLI_OPTION_FORCE_SHARE,
                IMG_CLI_OPTION_FORMAT,
                {},
        };
        struct img_cli cli = IMG_CLI_INIT("map", usage_map, 1);
        uint64_t start = 0, max_length = UINT64_MAX;
        int c, status;

        cli.qemu_img_messages = true;
        optind = 0;
        while ((c = getopt_long(argc, argv, "hf:U", options, NULL)) >= 0)
                switch (c) {
                case ARG_START_OFFSET:
                case ARG_MAX_LENGTH: {
                        uint64_t v;
                        if (img_cli_parse_size(optarg, &v) < 0) {
                                log_error("Invalid %s '%s'.", c == ARG_START_OFFSET ? "start offset" : "max length",
                                          optarg);
                                return cli.usage_status;
                        }
                        if (c == ARG_START_OFFSET)
                                start = v;
                        else
                                max_length = v;
                        break;
                }
                default:
                        if (!img_cli_parse_flag(&cli, c, optarg, &status))
                                return status;
                }
        if (img_cli_check_args(&cli, argc - optind, 1, 1, "one FILE") < 0)
                return cli.usage_status;
        const char *file = argv[optind];

        struct vh_image *img = NULL;
        if (img_cli_open(&cli, file, cli.format, 0, &img) < 0)
                return 1;
        struct vh_error err = {};
        if (cli.output == VH_IMAGE_INFO_HUMAN)
                printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
        else
                putchar('[');
        int r = vh_image_map_walk(img, start, max_length, cli.output == VH_IMAGE_INFO_HUMAN, map_emit, &cli, &err);
        vh_image_free(img);
        if (r == -EINVAL && cli.output == VH_IMAGE_INFO_HUMAN && !err.msg[0])
                return 1; /* reported by map_emit */
        if (r < 0) {
                fflush(stdout);
                log_error("Could not read file metadata: %s", vh_error_message(&err, r));
                return 1;
        }
        if (cli.output == VH_IMAGE_INFO_JSON)
                puts("]");
        return 0;
}

/* ---- compare ---- */

static void usage_compare(FILE *f) {
        fprintf(f,
                "Usage: vmhost img compare [-f FMT] [-F FMT] [-s] [-p] [-q] [-U] FILE1 FILE2\n"
                "\n"
                "Compares what a guest sees in two images (through their backing chains).\n"
                "Exit status: 0 identical, 1 different (the first differing offset is\n"
                "printed), 2 an image could not be opened, 3 or 4 an error while comparing.\n"
                "\n"
                "  -f FMT   format of FILE1 (default: probe)\n"
                "  -F FMT   format of FILE2 (default: probe)\n"
                "  -s       strict: different sizes or allocation also count as different\n"
                "  -p       show progress (stdout, as qemu-img)\n"
                "  -q       quiet: only the exit status\n"
                "  -U       take no locks\n"
                "  -T MODE  source cache mode: taken for qemu-img's sake; reads use the page cache\n"
                "\n"
                "Example:\n"
                "  vmhost img compare base.qcow2 copy.raw\n");
}

/* compare -p: the progress line, and the size warning where qemu-img
 * prints it, between the lines: once the smaller size is done. */
struct compare_cli {
        struct img_cli *cli;
        uint64_t size_a, size_b;
        bool warned; /* "Image size mismatch" is out */
};

static int compare_progress(uint64_t done, uint64_t total, void *userdata) {
        struct compare_cli *cc = userdata;
        img_cli_progress_show(cc->cli, done, total);
        if (cc->size_a != cc->size_b && !cc->warned && done >= MIN(cc->size_a, cc->size_b)) {
                printf("Warning: Image size mismatch!\n");
                cc->warned = true;
        }
        return 0;
}

/* Prints the outcome of compare in qemu-img's words; returns its exit
 * status. */
static int compare_report(const struct img_cli *cli, bool warned, int r, const struct vh_image_compare_result *res,
                          const struct vh_error *err) {
        if (res->size_mismatch && !cli->quiet && !warned)
                printf("Warning: Image size mismatch!\n");
        if (r < 0) {
                log_error("%s", vh_error_message(err, r));
                return res->read_error ? 4 : 3;
        }
        switch (res->outcome) {
        case VH_IMAGE_COMPARE_IDENTICAL:
                if (!cli->quiet)
                        printf("Images are identical.\n");
                return 0;
        case VH_IMAGE_COMPARE_CONTENT_MISMATCH:
                if (!cli->quiet)
                        printf("Content mismatch at offset %" PRIu64 "!\n", res->offset);
                return 1;
        case VH_IMAGE_COMPARE_SIZE_MISMATCH:
                if (!cli->quiet)
                        printf("Strict mode: Image size mismatch!\n");
                return 1;
        case VH_IMAGE_COMPARE_STATUS_MISMATCH:
                if (!cli->quiet)
                        printf("Strict mode: Offset %" PRIu64 " block status mismatch!\n", res->offset);
                return 1;
        }
        return 1;
}

int cmd_img_compare(int argc, char **argv) {
        static const struct option options[] = {
                IMG_CLI_OPTION_HELP,
                IMG_CLI_OPTION_FORCE_SHARE,
                {},
        };
        struct img_cli cli = IMG_CLI_INIT("compare", usage_compare, 2);
        enum vh_image_format format2 = VH_IMAGE_FORMAT_PROBE;
        struct vh_image_compare_options co = {};
        int c, status;

        cli.qemu_img_messages = true;
        optind = 0;
        while ((c = getopt_long(argc, argv, "hf:F:spqUT:", options, NULL)) >= 0)
                switch (c) {
                case 'T':
                        if (img_cli_parse_src_cache(optarg) < 0)
                                return 2; /* compare's exit status for errors, as qemu-img's */
                        break;
                case 'F':
                        if (img_cli_parse_format(optarg, "-F", &format2) < 0)
                                return cli.usage_status;
                        break;
                case 's':
                        co.strict = true;
                        break;
                default:
                        if (!img_cli_parse_flag(&cli, c, optarg, &status))
                                return status;
                }
        if (img_cli_check_args(&cli, argc - optind, 2, 2, "FILE1 FILE2") < 0)
                return cli.usage_status;
        const char *f1 = argv[optind], *f2 = argv[optind + 1];
        /* 2 when an image cannot be opened, as qemu-img. */
        struct vh_image *a = NULL, *b = NULL;
        if (img_cli_open(&cli, f1, cli.format, 0, &a) < 0)
                return 2;
        if (img_cli_open(&cli, f2, format2, 0, &b) < 0) {
                vh_image_free(a);
                return 2;
        }
        struct compare_cli cc = { .cli = &cli, .size_a = vh_image_virtual_size(a), .size_b = vh_image_virtual_size(b) };
        if (img_cli_shows_progress(&cli)) {
                co.progress = compare_progress;
                co.userdata = &cc;
                cli.progress_mode = IMG_CLI_PROGRESS_SUM_SHARES;
        }
        struct vh_error err = {};
        struct vh_image_compare_result res;
        int r = vh_image_compare(a, b, &co, &res, &err);
        vh_image_free(a);
        vh_image_free(b);
        /* qemu-img ends the progress line after the outcome. */
        status = compare_report(&cli, cc.warned, r, &res, &err);
        img_cli_progress_end(&cli);
        return status;
}

/* ---- measure ---- */

static void usage_measure(FILE *f) {
        fprintf(f,
                "Usage: vmhost img measure [--output=human|json] [-O FMT] [-o OPTIONS]\n"
                "                          [--size SIZE | [-f FMT] [-U] [-l SNAPSHOT] FILE]\n"
                "\n"
                "Prints the file size a new image needs: 'required' for what FILE holds (or\n"
                "for an empty image of SIZE), 'fully allocated' once every cluster is written.\n"
                "\n"
                "  -O FMT         raw (default) or qcow2\n"
                "  -o OPTIONS     qcow2: cluster_size=SIZE, refcount_bits=N, compat=1.1|0.10,\n"
                "                 extended_l2=on|off, preallocation=off|metadata|falloc|full,\n"
                "                 backing_file=NAME (then every cluster counts as required)\n"
                "  --size SIZE    measure an empty image of SIZE bytes (k, M, G, T suffixes)\n"
                "  -f FMT         format of FILE (default: probe)\n"
                "  -l SNAPSHOT    measure FILE's internal snapshot (as convert -l takes it)\n"
                "  --output=json  qemu-img's JSON (required, fully-allocated, bitmaps)\n"
                "\n"
                "Examples:\n"
                "  vmhost img measure -O qcow2 --size 20G\n"
                "  vmhost img measure -O qcow2 --output=json disk.raw\n");
}

static int measure_o(char *s, struct vh_image_measure_options *mo) {
        char *save = NULL;
        for (char *kv = strtok_r(s, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
                char *v = strchr(kv, '=');
                if (!v) {
                        log_error("Option '%s' needs a value (key=value).", kv);
                        return -EINVAL;
                }
                *v++ = '\0';
                if (streq(kv, "cluster_size")) {
                        uint64_t cs;
                        if (img_cli_parse_size(v, &cs) < 0 || cs > UINT32_MAX) {
                                log_error("Invalid cluster_size '%s'.", v);
                                return -EINVAL;
                        }
                        mo->cluster_size = (uint32_t) cs;
                } else if (streq(kv, "refcount_bits")) {
                        long n;
                        if (parse_int_range(v, 1, 64, &n) < 0) {
                                log_error("Invalid refcount_bits '%s'.", v);
                                return -EINVAL;
                        }
                        mo->refcount_bits = (unsigned) n;
                } else if (streq(kv, "compat")) {
                        if (streq(v, "1.1") || streq(v, "v3"))
                                mo->version = 3;
                        else if (streq(v, "0.10") || streq(v, "v2"))
                                mo->version = 2;
                        else {
                                log_error("compat must be 1.1 or 0.10, not '%s'.", v);
                                return -EINVAL;
                        }
                } else if (streq(kv, "extended_l2")) {
                        if (streq(v, "on"))
                                mo->extended_l2 = true;
                        else if (streq(v, "off"))
                                mo->extended_l2 = false;
                        else {
                                log_error("extended_l2 takes on or off, not '%s'.", v);
                                return -EINVAL;
                        }
                } else if (streq(kv, "preallocation")) {
                        if (streq(v, "falloc") || streq(v, "full"))
                                mo->preallocate_data = true;
                        else if (streq(v, "off") || streq(v, "metadata"))
                                mo->preallocate_data = false;
                        else {
                                log_error("preallocation must be off, metadata, falloc or full, not '%s'.", v);
                                return -EINVAL;
                        }
                } else if (streq(kv, "backing_file"))
                        mo->backing = true;
                else if (streq(kv, "backing_fmt") || streq(kv, "lazy_refcounts"))
                        ; /* no effect on the size */
                else {
                        log_error("Unknown option '%s'. Supported: cluster_size, refcount_bits, compat, extended_l2, "
                                  "preallocation, backing_file.",
                                  kv);
                        return -EINVAL;
                }
        }
        return 0;
}

int cmd_img_measure(int argc, char **argv) {
        static const struct option options[] = {
                IMG_CLI_OPTION_HELP,
                IMG_CLI_OPTION_OUTPUT,
                { "size", required_argument, NULL, ARG_SIZE },
                IMG_CLI_OPTION_FORCE_SHARE,
                {},
        };
        struct img_cli cli = IMG_CLI_INIT("measure", usage_measure, 1);
        struct vh_image_measure_options mo = { .format = VH_IMAGE_FORMAT_RAW };
        bool have_size = false;
        char *snapshot = NULL;
        int c, status;

        cli.qemu_img_messages = true;
        optind = 0;
        while ((c = getopt_long(argc, argv, "hf:O:o:Ul:", options, NULL)) >= 0)
                switch (c) {
                case 'l':
                        snapshot = optarg;
                        break;
                case 'O':
                        if (img_cli_parse_format(optarg, "-O", &mo.format) < 0)
                                return cli.usage_status;
                        break;
                case 'o':
                        if (measure_o(optarg, &mo) < 0)
                                return cli.usage_status;
                        break;
                case ARG_SIZE:
                        if (img_cli_parse_size(optarg, &mo.size) < 0) {
                                log_error("Invalid image size specified. Must be between 0 and %" PRIu64 ".",
                                          VH_IMAGE_MAX_VIRTUAL_SIZE);
                                return cli.usage_status;
                        }
                        have_size = true;
                        break;
                default:
                        if (!img_cli_parse_flag(&cli, c, optarg, &status))
                                return status;
                }
        int left = argc - optind;
        if (left > 1 || (!have_size && left == 0)) {
                log_error("Either --size N or one filename must be specified.");
                return cli.usage_status;
        }
        if (snapshot && left == 0) {
                /* qemu-img's words and exit status. */
                log_error("-l requires a filename argument.");
                return 1;
        }
        if (have_size && left == 1) {
                log_error("--size N cannot be used together with a filename.");
                return cli.usage_status;
        }

        struct vh_image *img = NULL;
        if (left == 1 && img_cli_open(&cli, argv[optind], cli.format, 0, &img) < 0)
                return 1;
        /* -l: measure what converting the snapshot's state would need. */
        if (img && snapshot && img_cli_load_snapshot(img, snapshot) < 0) {
                vh_image_free(img);
                return 1;
        }
        struct vh_error err = {};
        struct vh_image_measure_result res;
        int r = vh_image_measure(img, &mo, &res, &err);
        vh_image_free(img);
        if (r < 0) {
                log_error("%s", vh_error_message(&err, r));
                return 1;
        }
        if (cli.output == VH_IMAGE_INFO_HUMAN) {
                printf("required size: %" PRIu64 "\n", res.required);
                printf("fully allocated size: %" PRIu64 "\n", res.fully_allocated);
                if (res.has_bitmaps)
                        printf("bitmaps size: %" PRIu64 "\n", res.bitmaps);
        } else {
                /* qemu-img's key order (that of its dictionary). */
                printf("{\n");
                if (res.has_bitmaps)
                        printf("    \"bitmaps\": %" PRIu64 ",\n", res.bitmaps);
                printf("    \"required\": %" PRIu64 ",\n", res.required);
                printf("    \"fully-allocated\": %" PRIu64 "\n", res.fully_allocated);
                printf("}\n");
        }
        return 0;
}
