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
#include "vmhost/image.h"

enum {
        ARG_OUTPUT = 0x100,
        ARG_SIZE,
        ARG_START_OFFSET,
        ARG_MAX_LENGTH,
};

static int parse_output(const char *s, enum vh_image_info_output *ret) {
        if (streq(s, "json"))
                *ret = VH_IMAGE_INFO_JSON;
        else if (streq(s, "human"))
                *ret = VH_IMAGE_INFO_HUMAN;
        else {
                log_error("--output must be human or json, not '%s'.", s);
                return -EINVAL;
        }
        return 0;
}

static int parse_fmt(const char *s, const char *flag, enum vh_image_format *ret) {
        int f = vh_image_format_from_string(s);
        if (f < 0) {
                log_error("Unknown format '%s' for %s: use raw or qcow2.", s, flag);
                return -EINVAL;
        }
        *ret = f;
        return 0;
}

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
                "  -q              quiet\n"
                "\n"
                "Examples:\n"
                "  vmhost img check vm1.qcow2\n"
                "  vmhost img check -r leaks --output=json vm1.qcow2\n");
}

static void check_report(const char *line, void *userdata) {
        fprintf(stderr, "%s\n", line);
}

struct check_cli {
        bool quiet;
        enum vh_image_info_output output;
};

static void check_repaired(uint64_t leaks_fixed, uint64_t corruptions_fixed, void *userdata) {
        const struct check_cli *c = userdata;
        if (c->quiet || c->output != VH_IMAGE_INFO_HUMAN)
                return;
        printf("The following inconsistencies were found and repaired:\n\n"
               "    %" PRIu64 " leaked clusters\n"
               "    %" PRIu64 " corruptions\n\n"
               "Double checking the fixed image now...\n",
               leaks_fixed, corruptions_fixed);
}

int cmd_img_check(int argc, char **argv) {
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "output", required_argument, NULL, ARG_OUTPUT },
                { "repair", required_argument, NULL, 'r' },
                { "force-share", no_argument, NULL, 'U' },
                { "format", required_argument, NULL, 'f' },
                {},
        };
        struct check_cli cli = { .output = VH_IMAGE_INFO_HUMAN };
        struct vh_image_check_options o = {
                .format = VH_IMAGE_FORMAT_PROBE,
                .report = check_report,
                .repaired = check_repaired,
                .userdata = &cli,
        };
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "hf:r:Uq", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        usage_check(stdout);
                        return 0;
                case 'f':
                        if (parse_fmt(optarg, "-f", &o.format) < 0)
                                return 1;
                        break;
                case 'r':
                        if (streq(optarg, "leaks"))
                                o.repair = VH_IMAGE_CHECK_REPAIR_LEAKS;
                        else if (streq(optarg, "all"))
                                o.repair = VH_IMAGE_CHECK_REPAIR_ALL;
                        else {
                                log_error("Unknown option value for -r (expecting 'leaks' or 'all'): %s", optarg);
                                return 1;
                        }
                        break;
                case 'U':
                        o.force_share = true;
                        break;
                case 'q':
                        cli.quiet = true;
                        break;
                case ARG_OUTPUT:
                        if (parse_output(optarg, &cli.output) < 0)
                                return 1;
                        break;
                default:
                        usage_check(stderr);
                        return 1;
                }
        if (argc - optind != 1) {
                log_error("Expected one FILE. See 'vmhost img check --help'.");
                return 1;
        }
        if (o.force_share && o.repair) {
                log_error("-U cannot be used with -r: a repair must lock the image.");
                return 1;
        }
        const char *file = argv[optind];

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

struct map_cli {
        enum vh_image_info_output output;
};

static int map_emit(const struct vh_image_map_entry *e, const struct vh_image_map_entry *next, void *userdata) {
        const struct map_cli *m = userdata;
        if (m->output == VH_IMAGE_INFO_HUMAN) {
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
                { "help", no_argument, NULL, 'h' },
                { "output", required_argument, NULL, ARG_OUTPUT },
                { "start-offset", required_argument, NULL, ARG_START_OFFSET },
                { "max-length", required_argument, NULL, ARG_MAX_LENGTH },
                { "force-share", no_argument, NULL, 'U' },
                { "format", required_argument, NULL, 'f' },
                {},
        };
        struct vh_image_open_options oo = { .format = VH_IMAGE_FORMAT_PROBE };
        struct map_cli m = { .output = VH_IMAGE_INFO_HUMAN };
        uint64_t start = 0, max_length = UINT64_MAX;
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "hf:U", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        usage_map(stdout);
                        return 0;
                case 'f':
                        if (parse_fmt(optarg, "-f", &oo.format) < 0)
                                return 1;
                        break;
                case 'U':
                        oo.flags |= VH_IMAGE_OPEN_FORCE_SHARE;
                        break;
                case ARG_OUTPUT:
                        if (parse_output(optarg, &m.output) < 0)
                                return 1;
                        break;
                case ARG_START_OFFSET:
                case ARG_MAX_LENGTH: {
                        uint64_t v;
                        if (parse_size(optarg, &v) < 0) {
                                log_error("Invalid %s '%s'.", c == ARG_START_OFFSET ? "start offset" : "max length",
                                          optarg);
                                return 1;
                        }
                        if (c == ARG_START_OFFSET)
                                start = v;
                        else
                                max_length = v;
                        break;
                }
                default:
                        usage_map(stderr);
                        return 1;
                }
        if (argc - optind != 1) {
                log_error("Expected one FILE. See 'vmhost img map --help'.");
                return 1;
        }
        const char *file = argv[optind];

        struct vh_error err = {};
        struct vh_image *img = NULL;
        int r = vh_image_open(file, &oo, &img, &err);
        if (r < 0) {
                log_error("Could not open '%s': %s", file, vh_error_message(&err, r));
                return 1;
        }
        if (m.output == VH_IMAGE_INFO_HUMAN)
                printf("%-16s%-16s%-16s%s\n", "Offset", "Length", "Mapped to", "File");
        else
                putchar('[');
        r = vh_image_map_walk(img, start, max_length, m.output == VH_IMAGE_INFO_HUMAN, map_emit, &m, &err);
        vh_image_free(img);
        if (r == -EINVAL && m.output == VH_IMAGE_INFO_HUMAN && !err.msg[0])
                return 1; /* reported by map_emit */
        if (r < 0) {
                fflush(stdout);
                log_error("Could not read file metadata: %s", vh_error_message(&err, r));
                return 1;
        }
        if (m.output == VH_IMAGE_INFO_JSON)
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
                "  -p       show progress on stderr\n"
                "  -q       quiet: only the exit status\n"
                "  -U       take no locks\n"
                "\n"
                "Example:\n"
                "  vmhost img compare base.qcow2 copy.raw\n");
}

static void compare_progress(uint64_t done, uint64_t total, void *userdata) {
        fprintf(stderr, "    (%.2f/100%%)\r", total ? (double) done * 100.0 / (double) total : 100.0);
}

int cmd_img_compare(int argc, char **argv) {
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "force-share", no_argument, NULL, 'U' },
                {},
        };
        struct vh_image_open_options o1 = { .format = VH_IMAGE_FORMAT_PROBE };
        struct vh_image_open_options o2 = { .format = VH_IMAGE_FORMAT_PROBE };
        struct vh_image_compare_options co = {};
        bool quiet = false, progress = false;
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "hf:F:spqU", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        usage_compare(stdout);
                        return 0;
                case 'f':
                        if (parse_fmt(optarg, "-f", &o1.format) < 0)
                                return 2;
                        break;
                case 'F':
                        if (parse_fmt(optarg, "-F", &o2.format) < 0)
                                return 2;
                        break;
                case 's':
                        co.strict = true;
                        break;
                case 'p':
                        progress = true;
                        break;
                case 'q':
                        quiet = true;
                        break;
                case 'U':
                        o1.flags |= VH_IMAGE_OPEN_FORCE_SHARE;
                        o2.flags |= VH_IMAGE_OPEN_FORCE_SHARE;
                        break;
                default:
                        usage_compare(stderr);
                        return 2;
                }
        if (argc - optind != 2) {
                log_error("Expected FILE1 FILE2. See 'vmhost img compare --help'.");
                return 2;
        }
        const char *f1 = argv[optind], *f2 = argv[optind + 1];
        if (progress && !quiet)
                co.progress = compare_progress;

        struct vh_error err = {};
        struct vh_image *a = NULL, *b = NULL;
        int r = vh_image_open(f1, &o1, &a, &err);
        if (r < 0) {
                log_error("Could not open '%s': %s", f1, vh_error_message(&err, r));
                return 2;
        }
        r = vh_image_open(f2, &o2, &b, &err);
        if (r < 0) {
                log_error("Could not open '%s': %s", f2, vh_error_message(&err, r));
                vh_image_free(a);
                return 2;
        }
        struct vh_image_compare_result res;
        r = vh_image_compare(a, b, &co, &res, &err);
        vh_image_free(a);
        vh_image_free(b);
        if (co.progress)
                fputc('\n', stderr);
        if (res.size_mismatch && !quiet)
                printf("Warning: Image size mismatch!\n");
        if (r < 0) {
                log_error("%s", vh_error_message(&err, r));
                return res.read_error ? 4 : 3;
        }
        switch (res.outcome) {
        case VH_IMAGE_COMPARE_IDENTICAL:
                if (!quiet)
                        printf("Images are identical.\n");
                return 0;
        case VH_IMAGE_COMPARE_CONTENT_MISMATCH:
                if (!quiet)
                        printf("Content mismatch at offset %" PRIu64 "!\n", res.offset);
                return 1;
        case VH_IMAGE_COMPARE_SIZE_MISMATCH:
                if (!quiet)
                        printf("Strict mode: Image size mismatch!\n");
                return 1;
        case VH_IMAGE_COMPARE_STATUS_MISMATCH:
                if (!quiet)
                        printf("Strict mode: Offset %" PRIu64 " block status mismatch!\n", res.offset);
                return 1;
        }
        return 1;
}

/* ---- measure ---- */

static void usage_measure(FILE *f) {
        fprintf(f,
                "Usage: vmhost img measure [--output=human|json] [-O FMT] [-o OPTIONS]\n"
                "                          [--size SIZE | [-f FMT] [-U] FILE]\n"
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
                        if (parse_size(v, &cs) < 0 || cs > UINT32_MAX) {
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
                { "help", no_argument, NULL, 'h' },
                { "output", required_argument, NULL, ARG_OUTPUT },
                { "size", required_argument, NULL, ARG_SIZE },
                { "force-share", no_argument, NULL, 'U' },
                {},
        };
        struct vh_image_open_options oo = { .format = VH_IMAGE_FORMAT_PROBE };
        struct vh_image_measure_options mo = { .format = VH_IMAGE_FORMAT_RAW };
        enum vh_image_info_output output = VH_IMAGE_INFO_HUMAN;
        bool have_size = false;
        int c;

        optind = 0;
        while ((c = getopt_long(argc, argv, "hf:O:o:U", options, NULL)) >= 0)
                switch (c) {
                case 'h':
                        usage_measure(stdout);
                        return 0;
                case 'f':
                        if (parse_fmt(optarg, "-f", &oo.format) < 0)
                                return 1;
                        break;
                case 'O':
                        if (parse_fmt(optarg, "-O", &mo.format) < 0)
                                return 1;
                        break;
                case 'o':
                        if (measure_o(optarg, &mo) < 0)
                                return 1;
                        break;
                case 'U':
                        oo.flags |= VH_IMAGE_OPEN_FORCE_SHARE;
                        break;
                case ARG_OUTPUT:
                        if (parse_output(optarg, &output) < 0)
                                return 1;
                        break;
                case ARG_SIZE:
                        if (parse_size(optarg, &mo.size) < 0) {
                                log_error("Invalid image size specified. Must be between 0 and %" PRIu64 ".",
                                          VH_IMAGE_MAX_VIRTUAL_SIZE);
                                return 1;
                        }
                        have_size = true;
                        break;
                default:
                        usage_measure(stderr);
                        return 1;
                }
        int left = argc - optind;
        if (left > 1 || (!have_size && left == 0)) {
                log_error("Either --size N or one filename must be specified.");
                return 1;
        }
        if (have_size && left == 1) {
                log_error("--size N cannot be used together with a filename.");
                return 1;
        }

        struct vh_error err = {};
        struct vh_image *img = NULL;
        if (left == 1) {
                int r = vh_image_open(argv[optind], &oo, &img, &err);
                if (r < 0) {
                        log_error("Could not open '%s': %s", argv[optind], vh_error_message(&err, r));
                        return 1;
                }
        }
        struct vh_image_measure_result res;
        int r = vh_image_measure(img, &mo, &res, &err);
        vh_image_free(img);
        if (r < 0) {
                log_error("%s", vh_error_message(&err, r));
                return 1;
        }
        if (output == VH_IMAGE_INFO_HUMAN) {
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
