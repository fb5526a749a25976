/* cli/cmd-img.c: 'vmhost img': raw and qcow2 images with qemu-img's verbs
 * and flags (create, info, convert), on top of vmhost's own image engine
 * (include/vmhost/image.h). */
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
#include "vm/vm-image.h"
#include "vmhost/image.h"

/* The qemu-img release whose behaviour and output the img verbs follow
 * (docs/qemu-img-compat.md, tests/e2e/t-img-compat.sh). */
#define QEMU_IMG_COMPAT_VERSION "7.2"

static void usage(FILE *f) {
        fprintf(f,
                "Usage: vmhost img COMMAND [ARGS...]\n"
                "\n"
                "Raw and qcow2 disk images, with qemu-img's flags.\n"
                "\n"
                "Commands:\n"
                "  create   create a new image, or an overlay on a backing file\n"
                "  info     show the format, sizes and backing chain of an image\n"
                "  convert  copy an image (through its backing chain) to a new standalone image\n"
                "  check    check (and repair) the refcounts and tables of a qcow2 image\n"
                "  map      show where each range of the guest disk lives in the backing chain\n"
                "  compare  compare what a guest sees in two images\n"
                "  measure  compute the file size a new image needs\n"
                "  commit   write an overlay's data into its backing file and empty it\n"
                "  rebase   change the backing file, keeping what the guest sees\n"
                "  resize   grow or shrink the virtual disk\n"
                "  amend    change a qcow2 image's options (compat, lazy_refcounts, refcount_bits)\n"
                "  snapshot list, create, apply or delete internal qcow2 snapshots\n"
                "  push     copy an image and its backing files to a host once (by hash)\n"
                "  receive  internal: the far side of push\n"
                "\n"
                "'vmhost img COMMAND --help' for one command; 'vmhost img --version' (or -V)\n"
                "prints \"vmhost-img version X.Y.Z (qemu-img 7.2 compatible)\".\n"
                "\n"
                "Example:\n"
                "  vmhost img create -f qcow2 -b base.qcow2 -F qcow2 vm1.qcow2\n");
}

static void usage_create(FILE *f) {
        fprintf(f,
                "Usage: vmhost img create [-q] [--force] [-f FMT] [-b BACKING -F BACKING_FMT [-u]]\n"
                "                         [-o OPTIONS] FILE [SIZE]\n"
                "\n"
                "Creates FILE. SIZE takes k, M, G, T, P, E suffixes, fractions (1.5G) and hex\n"
                "(0x10000) as in qemu-img, and is rounded up to 512 bytes;\n"
                "with -b it may be omitted and is then the backing file's virtual size.\n"
                "An existing FILE is replaced only if it holds no data (empty, or an image\n"
                "with no data of its own), or with --force; unlike qemu-img. Never one a VM\n"
                "uses as its disk or base, nor one another process holds (a running QEMU).\n"
                "\n"
                "  -f FMT         raw (default) or qcow2\n"
                "  -b BACKING     backing file, stored as given: a relative name is relative\n"
                "                 to the directory of FILE\n"
                "  -F FMT         format of the backing file (required with -b); recorded as\n"
                "                 given, as in qemu-img, with a warning if the file looks\n"
                "                 like another format\n"
                "  -u             do not open the backing file (it need not exist yet);\n"
                "                 SIZE and -F are then required\n"
                "  -o OPTIONS     qcow2: cluster_size=SIZE (64k), compat=1.1|0.10,\n"
                "                 lazy_refcounts=on|off, refcount_bits=1..64 (16),\n"
                "                 compression_type=zlib (zstd is refused: vmhost writes\n"
                "                 zlib only), size=SIZE (not with SIZE as well); the\n"
                "                 largest qcow2 SIZE follows from cluster_size as in\n"
                "                 qemu-img (2 PiB with 64k clusters);\n"
                "                 both: preallocation=off (default, sparse) | falloc\n"
                "                 (blocks reserved) | full (zeros written), and for\n"
                "                 qcow2 metadata (every cluster mapped, file sparse);\n"
                "                 not with a backing file; -o help lists them\n"
                "  --force        replace an existing FILE that holds data (it is lost)\n"
                "  -q             quiet\n"
                "\n"
                "Examples:\n"
                "  vmhost img create -f qcow2 disk.qcow2 10G\n"
                "  vmhost img create --force -f qcow2 scratch.qcow2 10G\n"
                "  vmhost img create -f qcow2 -o preallocation=metadata fast.qcow2 20G\n"
                "  vmhost img create -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2\n"
                "  vmhost img create -f qcow2 -u -b later.qcow2 -F qcow2 overlay.qcow2 10G\n");
}

static void usage_info(FILE *f) {
        fprintf(f,
                "Usage: vmhost img info [-f FMT] [-U] [--output=human|json] [--backing-chain] FILE\n"
                "\n"
                "  -f FMT            do not probe: the image is FMT (raw or qcow2)\n"
                "  -U, --force-share take no lock (look at an image a running VM uses)\n"
                "  --output=json     qemu-img's JSON (same field names)\n"
                "  --backing-chain   also every backing file (a JSON array with --output=json);\n"
                "                    fails if one of them cannot be opened. Without it the\n"
                "                    backing file is not opened: a missing one is no error\n"
                "\n"
                "Example:\n"
                "  vmhost img info --output=json --backing-chain vm1.qcow2\n");
}

static void usage_convert(FILE *f) {
        fprintf(f,
                "Usage: vmhost img convert [-f FMT] [-O FMT] [-o OPTIONS] [-c] [-B BACKING -F FMT]\n"
                "                          [-l SNAPSHOT] [-n] [-C] [-S SIZE] [-t CACHE] [-p] [-U]\n"
                "                          [-T SRC_CACHE] [-r RATE] [-m N] [-W] [--target-is-zero]\n"
                "                          [-q] [--force] SRC... DST\n"
                "\n"
                "Writes what a guest sees in SRC (through its backing chain) to DST as a\n"
                "standalone image; several SRCs (up to 64) one after another, DST's size\n"
                "being their sum (not with -B or -c). Zeros are not written: raw output is sparse, qcow2 output\n"
                "leaves zero clusters unallocated. The output is written beside DST and\n"
                "renamed to DST once complete, so DST is never a half-written image.\n"
                "An existing DST is replaced only if it holds no data, or with --force\n"
                "(unlike qemu-img); never one a VM uses or another process holds.\n"
                "\n"
                "  -f FMT         source format (default: probe)\n"
                "  -O FMT         output format: raw (default) or qcow2\n"
                "  -o OPTIONS     qcow2 output: cluster_size=SIZE, compat=1.1|0.10,\n"
                "                 lazy_refcounts=on|off, refcount_bits=N, compression_type=zlib,\n"
                "                 backing_file=BACKING and backing_fmt=FMT (as -B and -F,\n"
                "                 which win over them); -o help lists them for -O FMT\n"
                "  -c             qcow2 output: zlib-compressed clusters\n"
                "  -B BACKING     qcow2 output: an overlay of BACKING (relative to DST's\n"
                "                 directory) holding only what differs from it (less than\n"
                "                 qemu-img, which also writes data equal to BACKING); needs -F\n"
                "  -F FMT         format of BACKING\n"
                "  -l SNAPSHOT    convert the state of SRC's internal snapshot (qcow2):\n"
                "                 snapshot.id=ID, snapshot.name=NAME (or both, which must\n"
                "                 match one snapshot) or ID-OR-NAME; one SRC only\n"
                "  -n             write into the existing image DST (opened as -O says, raw\n"
                "                 by default; at least as large as SRC) instead of creating\n"
                "                 it: in place, zeros included; no -o or -c; -B is ignored\n"
                "  -C             accepted as in qemu-img (not with -c or -S); vmhost copies\n"
                "                 as it always does: mapped source data, zeros left out\n"
                "  -S SIZE        leave out only runs of zeros at least SIZE long (4k);\n"
                "                 0 writes everything (a fully allocated output)\n"
                "  -t CACHE       how the output reaches the disk, as in qemu-img:\n"
                "                 unsafe (default, like qemu-img): no flush; a power loss\n"
                "                 soon after may lose the new file (never an old one: a\n"
                "                 file that is replaced is always flushed first);\n"
                "                 writeback (or writethrough): flushed before DST appears;\n"
                "                 none (or directsync): written past the page cache\n"
                "                 (O_DIRECT), then flushed\n"
                "  -T SRC_CACHE   source cache mode: taken as in qemu-img; sources are read\n"
                "                 through the page cache whatever the mode\n"
                "  -r RATE        copy at most RATE bytes of the virtual disk per second\n"
                "                 (zeros included; k, M, G suffixes; 0: no limit)\n"
                "  -m N, -W       taken as in qemu-img (N in 1..16); vmhost's copy keeps its\n"
                "                 own workers and writes as they finish\n"
                "  --target-is-zero  with -n: DST reads as zeros already, so zeros are not\n"
                "                 written (taken on the caller's word, as in qemu-img)\n"
                "  -p             show progress (stdout, as qemu-img)\n"
                "  -U             take no lock on the source\n"
                "  --force        replace an existing DST that holds data (it is lost)\n"
                "  -q             quiet\n"
                "\n"
                "Examples:\n"
                "  vmhost img convert -f raw -O qcow2 disk.raw disk.qcow2\n"
                "  vmhost img convert --force -O qcow2 vm1.qcow2 /backup/vm1.qcow2\n"
                "  vmhost img convert -c -O qcow2 -B base.qcow2 -F qcow2 vm1.qcow2 vm1-small.qcow2\n"
                "  vmhost img convert -p -t writeback -O raw vm1.qcow2 /backup/vm1.raw\n");
}

static int parse_on_off(const char *key, const char *v, bool *ret) {
        /* The words QEMU's option parser takes for a boolean. */
        if (streq(v, "on") || streq(v, "true") || streq(v, "yes") || streq(v, "y")) {
                *ret = true;
                return 0;
        }
        if (streq(v, "off") || streq(v, "false") || streq(v, "no") || streq(v, "n")) {
                *ret = false;
                return 0;
        }
        log_error("Option %s takes on or off, not '%s'.", key, v);
        return -EINVAL;
}

/* The -o options both create and convert understand. 'backing_file' and
 * 'backing_fmt' (and 'size') may be NULL where they do not apply. */
struct img_options {
        uint32_t cluster_size;
        unsigned version;
        bool lazy_refcounts;
        unsigned refcount_bits;
        const char *backing_file;
        const char *backing_fmt;
        const char *size;
        enum vh_image_prealloc preallocation;
        bool compression_zlib; /* compression_type=zlib: the default, said out loud */
        /* compat, lazy_refcounts and preallocation as written, for create's
         * "Formatting" line, which shows them so in qemu-img. */
        const char *compat_text, *lazy_refcounts_text, *preallocation_text;
        bool help;             /* -o help (or ?): list the options instead */
};

/* Which keys beyond the qcow2 layout ones a verb's -o takes. */
enum {
        IMG_O_BACKING = 1 << 0, /* backing_file, backing_fmt (create, convert) */
        IMG_O_CREATE = 1 << 1,  /* size, preallocation (create) */
};

/* Parses "k=v,k=v" in place; 'keys' is a set of IMG_O_*. */
static int parse_o(char *s, struct img_options *o, unsigned keys) {
        char *save = NULL;
        for (char *kv = strtok_r(s, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
                if (streq(kv, "help") || streq(kv, "?")) {
                        o->help = true;
                        continue;
                }
                char *v = strchr(kv, '=');
                if (!v) {
                        log_error("Option '%s' needs a value (key=value).", kv);
                        return -EINVAL;
                }
                *v++ = '\0';
                if (streq(kv, "cluster_size")) {
                        uint64_t cs;
                        if (img_cli_parse_size(v, &cs) < 0 || cs < 512 || cs > (2u << 20) || (cs & (cs - 1))) {
                                log_error("cluster_size must be a power of two between 512 and 2M, not '%s'.", v);
                                return -EINVAL;
                        }
                        o->cluster_size = (uint32_t) cs;
                } else if (streq(kv, "compat")) {
                        o->compat_text = v;
                        if (streq(v, "1.1") || streq(v, "v3"))
                                o->version = 3;
                        else if (streq(v, "0.10") || streq(v, "v2"))
                                o->version = 2;
                        else {
                                log_error("compat must be 1.1 or 0.10, not '%s'.", v);
                                return -EINVAL;
                        }
                } else if (streq(kv, "compression_type")) {
                        /* zlib is what vmhost writes (convert -c); reading
                         * zstd images works, writing zstd clusters does not,
                         * so an image that promises them is not made. */
                        if (streq(v, "zstd")) {
                                log_error("compression_type=zstd is not supported for new images: vmhost "
                                          "compresses with zlib only.");
                                return -EINVAL;
                        }
                        if (!streq(v, "zlib")) {
                                log_error("compression_type must be zlib, not '%s'.", v);
                                return -EINVAL;
                        }
                        o->compression_zlib = true;
                } else if (streq(kv, "lazy_refcounts")) {
                        if (parse_on_off(kv, v, &o->lazy_refcounts) < 0)
                                return -EINVAL;
                        o->lazy_refcounts_text = v;
                } else if (streq(kv, "refcount_bits")) {
                        long n;
                        if (parse_int_range(v, 1, 64, &n) < 0 || (n & (n - 1))) {
                                log_error("refcount_bits must be a power of two between 1 and 64, not '%s'.", v);
                                return -EINVAL;
                        }
                        o->refcount_bits = (unsigned) n;
                } else if ((keys & IMG_O_BACKING) && streq(kv, "backing_file"))
                        o->backing_file = v;
                else if ((keys & IMG_O_BACKING) && streq(kv, "backing_fmt"))
                        o->backing_fmt = v;
                else if ((keys & IMG_O_CREATE) && streq(kv, "size"))
                        o->size = v;
                else if ((keys & IMG_O_CREATE) && streq(kv, "preallocation")) {
                        if (vh_image_prealloc_from_string(v, &o->preallocation) < 0) {
                                log_error("preallocation must be off, metadata, falloc or full, not '%s'.", v);
                                return -EINVAL;
                        }
                        o->preallocation_text = v;
                } else {
                        log_error("Invalid parameter '%s' (-o takes cluster_size, compat, lazy_refcounts, "
                                  "refcount_bits, compression_type%s%s).",
                                  kv, (keys & IMG_O_BACKING) ? ", backing_file, backing_fmt" : "",
                                  (keys & IMG_O_CREATE) ? ", size, preallocation" : "");
                        return -EINVAL;
                }
        }
        return 0;
}

/* -o help: the options a verb takes for 'format', in qemu-img's words and
 * layout. Only those vmhost takes are listed; qemu-img lists more (see
 * docs/qemu-img-compat.md). 'files': the verb was given its files, after
 * which qemu-img says "Supported options:" without the format. */
static void print_o_help(enum vh_image_format format, unsigned keys, bool files) {
        /* FILES: an option of qemu-img's file protocol, listed once the
         * files are given. */
        enum { RAW = 1 << 0, QCOW2 = 1 << 1, FILES = 1 << 2 };
        static const struct {
                const char *key, *type, *text;
                unsigned keys;    /* IMG_O_* it needs; 0 for any */
                unsigned formats; /* RAW, QCOW2, FILES */
        } table[] = {
                /* In qemu-img's order: by name. */
                { "backing_file", "str", "File name of a base image", IMG_O_BACKING, QCOW2 },
                { "backing_fmt", "str", "Image format of the base image", IMG_O_BACKING, QCOW2 },
                { "cluster_size", "size", "qcow2 cluster size", 0, QCOW2 },
                { "compat", "str", "Compatibility level (v2 [0.10] or v3 [1.1])", 0, QCOW2 },
                { "compression_type", "str", "Compression method used for image cluster compression", 0, QCOW2 },
                { "lazy_refcounts", "bool (on/off)", "Postpone refcount updates", 0, QCOW2 },
                { "preallocation", "str", "Preallocation mode (allowed values: off, metadata, falloc, full)",
                  IMG_O_CREATE, QCOW2 },
                { "preallocation", "str", "Preallocation mode (allowed values: off, falloc, full)", IMG_O_CREATE,
                  RAW | FILES },
                { "refcount_bits", "num", "Width of a reference count entry in bits", 0, QCOW2 },
                { "size", "size", "Virtual disk size", IMG_O_CREATE, RAW | QCOW2 },
        };
        unsigned f = format == VH_IMAGE_FORMAT_QCOW2 ? QCOW2 : RAW;
        if (files)
                printf("Supported options:\n");
        else
                printf("Supported %s options:\n", vh_image_format_to_string(format));
        for (size_t i = 0; i < ELEMENTSOF(table); i++) {
                if (!(table[i].formats & f) || (table[i].keys && !(keys & table[i].keys)) ||
                    ((table[i].formats & FILES) && !files))
                        continue;
                _cleanup_free_ char *name = strdup_printf("%s=<%s>", table[i].key, table[i].type);
                if (name)
                        printf("  %-22s - %s\n", name, table[i].text);
        }
}

/* True if 'o' has options that only a qcow2 image can take. */
static bool img_options_qcow2_only(const struct img_options *o) {
        return o->cluster_size || o->version || o->lazy_refcounts || o->refcount_bits || o->compression_zlib;
}

/* A VM's disk, or an image that backs one, is never replaced, --force or
 * not. */
static int check_not_vm_image(const struct vh_context *ctx, const char *file) {
        struct vh_error err = {};
        int r = vm_image_check_not_in_use(ctx, file, "overwrite", &err);
        if (r < 0)
                log_error("%s", vh_error_message(&err, r));
        return r;
}

/* If create or convert failed because the file it would replace holds
 * data (-EEXIST from the engine's replace check, whose message names the
 * file and the amount), reports that with the way out and returns true. */
static bool report_holds_data(const struct vh_error *err, int r) {
        if (r != -EEXIST || !startswith(vh_error_message(err, r), "Refusing to replace "))
                return false;
        log_error("%s. Use --force to replace it.", vh_error_message(err, r));
        return true;
}

/* True for an argument getopt would take for an option but that is a
 * negative number ("-1", "-5M"): no verb has a digit option. */
static bool looks_negative(const char *s) {
        return s[0] == '-' && s[1] >= '0' && s[1] <= '9';
}

/* A string option as qemu-img shows it: a comma doubled, as its option
 * syntax escapes it. */
static void print_opt_string(const char *key, const char *v) {
        printf(" %s=", key);
        for (; *v; v++) {
                if (*v == ',')
                        putchar(',');
                putchar(*v);
        }
}

/* create's first line as qemu-img prints it, which scripts match: the
 * driver's options in qemu-img's order, each one given or that has a
 * default (cluster_size, extended_l2, compression_type, lazy_refcounts,
 * refcount_bits for qcow2), the given ones as written except the numbers,
 * which are in bytes. */
static void print_formatting(const char *file, const struct vh_image_create_options *co,
                             const struct img_options *o, uint64_t size, const char *backing,
                             const char *backing_fmt) {
        bool qcow2 = co->format == VH_IMAGE_FORMAT_QCOW2;
        printf("Formatting '%s', fmt=%s", file, vh_image_format_to_string(co->format));
        if (qcow2) {
                printf(" cluster_size=%" PRIu32 " extended_l2=off", co->cluster_size ? co->cluster_size : 65536);
                if (o->preallocation_text)
                        print_opt_string("preallocation", o->preallocation_text);
                printf(" compression_type=zlib");
        }
        printf(" size=%" PRIu64, size);
        if (qcow2) {
                if (o->compat_text)
                        print_opt_string("compat", o->compat_text);
                if (backing)
                        print_opt_string("backing_file", backing);
                if (backing_fmt)
                        print_opt_string("backing_fmt", backing_fmt);
                printf(" lazy_refcounts=%s refcount_bits=%u",
                       o->lazy_refcounts_text ? o->lazy_refcounts_text : "off",
                       co->refcount_bits ? co->refcount_bits : 16);
        } else if (o->preallocation_text)
                print_opt_string("preallocation", o->preallocation_text);
        printf("\n");
}

static int img_create(const struct vh_context *ctx, int argc, char **argv) {
        enum { ARG_FORCE = IMG_CLI_ARG_VERB };
        static const struct option options[] = {
                IMG_CLI_OPTION_HELP,
                { "force", no_argument, NULL, ARG_FORCE },
                {},
        };
        struct img_cli cli = IMG_CLI_INIT("create", usage_create, 2);
        struct vh_image_create_options co = { .backing_format = VH_IMAGE_FORMAT_PROBE };
        struct img_options o = {};
        const char *backing = NULL, *backing_fmt = NULL;
        int c, status;

        /* A negative SIZE ("-1", "-5M") is taken off before getopt sees it,
         * as resize does, so that it gets the error of any bad size rather
         * than getopt's "invalid option". It is the last argument; after
         * "--" getopt takes it as an argument anyway. */
        const char *negative_size = NULL;
        if (argc > 2 && looks_negative(argv[argc - 1])) {
                bool after_dashes = false;
                for (int i = 1; i < argc - 1; i++)
                        after_dashes = after_dashes || streq(argv[i], "--");
                if (!after_dashes)
                        negative_size = argv[--argc];
        }

        cli.format = VH_IMAGE_FORMAT_RAW; /* -f is the new image's format, raw unless given */
        optind = 0;
        while ((c = getopt_long(argc, argv, "hf:b:F:o:qu", options, NULL)) >= 0)
                switch (c) {
                case ARG_FORCE:
                        co.replace_data = true;
                        break;
                case 'u':
                        co.unsafe_backing = true;
                        break;
                case 'b':
                        backing = optarg;
                        break;
                case 'F':
                        backing_fmt = optarg;
                        break;
                case 'o':
                        /* Exit 1 for any bad -o, as qemu-img. */
                        if (parse_o(optarg, &o, IMG_O_BACKING | IMG_O_CREATE) < 0)
                                return 1;
                        break;
                default:
                        if (!img_cli_parse_flag(&cli, c, optarg, &status))
                                return status;
                }

        co.format = cli.format;
        if (o.help) {
                print_o_help(co.format, IMG_O_BACKING | IMG_O_CREATE, optind < argc);
                return 0;
        }
        if (!backing)
                backing = o.backing_file;
        if (!backing_fmt)
                backing_fmt = o.backing_fmt;
        if (backing_fmt && img_cli_parse_format(backing_fmt, "-F", &co.backing_format) < 0)
                return cli.usage_status;

        /* A negative SIZE counts only behind a FILE. */
        int left = argc - optind;
        int n_args = negative_size && left == 0 ? 0 : left + (negative_size != NULL);
        if (img_cli_check_args(&cli, n_args, 1, 2, "FILE [SIZE]") < 0)
                return cli.usage_status;
        const char *file = argv[optind];
        if (o.size && (negative_size || n_args == 2)) {
                /* qemu-img's words and exit status. */
                log_error("%s: The image size must be specified only once", file);
                return 1;
        }
        const char *size_arg = negative_size ? negative_size : n_args == 2 ? argv[optind + 1] : o.size;
        if (size_arg) {
                if (img_cli_parse_size(size_arg, &co.size) < 0) {
                        log_error("Invalid size '%s': use a number of bytes with an optional k, M, G, T, P, E "
                                  "suffix.",
                                  size_arg);
                        return 1; /* qemu-img's exit status */
                }
                co.size_given = true;
        } else if (!backing) {
                log_error("Size missing: give SIZE, or a backing file with -b.");
                return cli.usage_status;
        } else if (co.unsafe_backing) {
                /* qemu-img's words and exit status: the size cannot come
                 * from a backing file that is not opened. */
                log_error("%s: Image creation needs a size parameter", file);
                return 1;
        }
        if (co.format == VH_IMAGE_FORMAT_RAW && img_options_qcow2_only(&o)) {
                log_error("-o cluster_size, compat, lazy_refcounts, refcount_bits and compression_type apply to "
                          "qcow2 only.");
                return 1; /* qemu-img: "Invalid parameter 'cluster_size'" */
        }

        co.backing_file = backing;
        co.cluster_size = o.cluster_size;
        co.version = o.version;
        co.lazy_refcounts = o.lazy_refcounts;
        co.refcount_bits = o.refcount_bits;
        co.preallocation = o.preallocation;

        if (check_not_vm_image(ctx, file) < 0)
                return 1;
        struct vh_error err = {};
        /* qemu-img records the backing format it is told, and so do we
         * (scripts rely on the exit status), but a format that is not the
         * file's is most likely a mistake QEMU will not catch either: say
         * so. */
        enum vh_image_format detected;
        bool other_format = backing && backing_fmt && !co.unsafe_backing &&
                            vh_image_backing_probe(file, backing, &detected, NULL) >= 0 &&
                            detected != co.backing_format;
        int r = vh_image_create(file, &co, &err);
        if (r < 0) {
                if (!report_holds_data(&err, r))
                        log_error("Cannot create %s: %s", file, img_cli_without_name(file, vh_error_message(&err, r)));
                return 1;
        }
        if (other_format)
                log_warning("The backing file %s looks like a %s image, not %s (-F); recording %s as told. "
                            "QEMU will read it as %s.",
                            backing, vh_image_format_to_string(detected),
                            vh_image_format_to_string(co.backing_format),
                            vh_image_format_to_string(co.backing_format),
                            vh_image_format_to_string(co.backing_format));
        if (!cli.quiet) {
                struct vh_image *img = NULL;
                struct vh_image_open_options oo = { .format = co.format, .flags = VH_IMAGE_OPEN_NO_BACKING };
                uint64_t size = co.size;
                if (vh_image_open(file, &oo, &img, NULL) >= 0)
                        size = vh_image_virtual_size(img);
                vh_image_free(img);
                /* One line, as qemu-img prints it (a second, empty one
                 * used to follow). */
                print_formatting(file, &co, &o, size, backing, backing_fmt);
        }
        return 0;
}

static int img_info(int argc, char **argv) {
        enum { ARG_BACKING_CHAIN = IMG_CLI_ARG_VERB };
        static const struct option options[] = {
                IMG_CLI_OPTION_HELP,
                IMG_CLI_OPTION_OUTPUT,
                { "backing-chain", no_argument, NULL, ARG_BACKING_CHAIN },
                IMG_CLI_OPTION_FORCE_SHARE,
                {},
        };
        struct img_cli cli = IMG_CLI_INIT("info", usage_info, 2);
        bool chain = false;
        int c, status;

        optind = 0;
        while ((c = getopt_long(argc, argv, "hf:U", options, NULL)) >= 0)
                switch (c) {
                case IMG_CLI_ARG_OUTPUT:
                        /* Not the shared --output: info's message has always
                         * been worded differently, and scripts may match it. */
                        if (streq(optarg, "json"))
                                cli.output = VH_IMAGE_INFO_JSON;
                        else if (streq(optarg, "human"))
                                cli.output = VH_IMAGE_INFO_HUMAN;
                        else {
                                log_error("--output takes human or json, not '%s'.", optarg);
                                return cli.usage_status;
                        }
                        break;
                case ARG_BACKING_CHAIN:
                        chain = true;
                        break;
                default:
                        if (!img_cli_parse_flag(&cli, c, optarg, &status))
                                return status;
                }
        if (img_cli_check_args(&cli, argc - optind, 1, 1, "one FILE") < 0)
                return cli.usage_status;
        const char *file = argv[optind];

        /* Without --backing-chain info describes the image it was given
         * and does not open its backing file, which may be missing, be
         * /dev/null or have a format vmhost has no driver for: qemu-img
         * shows such an image too (exit 0, the backing file's name). With
         * --backing-chain every link must open; a broken one fails the
         * whole command with nothing on stdout, as in qemu-img. */
        struct vh_image *img = NULL;
        cli.qemu_img_messages = chain;
        if (img_cli_open(&cli, file, cli.format, chain ? 0 : VH_IMAGE_OPEN_NO_BACKING, &img) < 0)
                return 1;
        struct vh_error err = {};
        _cleanup_free_ char *text = NULL;
        int r = vh_image_info_format(img, cli.output, chain, &text, &err);
        vh_image_free(img);
        if (r < 0) {
                log_error("Cannot describe %s: %s", file, img_cli_without_name(file, vh_error_message(&err, r)));
                return 1;
        }
        fputs(text, stdout);
        if (cli.output == VH_IMAGE_INFO_JSON)
                fputc('\n', stdout);
        return 0;
}

/* The most sources one convert concatenates. */
#define CONVERT_MAX_SOURCES 64

static int img_convert(const struct vh_context *ctx, int argc, char **argv) {
        enum { ARG_FORCE = IMG_CLI_ARG_VERB, ARG_TARGET_IS_ZERO, ARG_SALVAGE };
        static const struct option options[] = {
                IMG_CLI_OPTION_HELP,
                IMG_CLI_OPTION_FORCE_SHARE,
                { "force", no_argument, NULL, ARG_FORCE },
                { "target-is-zero", no_argument, NULL, ARG_TARGET_IS_ZERO },
                { "salvage", no_argument, NULL, ARG_SALVAGE },
                {},
        };
        struct img_cli cli = IMG_CLI_INIT("convert", usage_convert, 2);
        /* qemu-img convert's default cache mode is unsafe: no flush. */
        struct vh_image_convert_options co = { .format = VH_IMAGE_FORMAT_RAW, .cache = VH_IMAGE_CACHE_UNSAFE };
        struct img_options o = {};
        const char *backing_fmt = NULL;
        bool skip_create = false, have_o = false, copy_offload = false, have_sparse = false, target_is_zero = false;
        char *snapshot = NULL;
        int c, status;

        optind = 0;
        while ((c = getopt_long(argc, argv, "hf:O:o:pUqcB:F:S:t:nl:CT:r:m:W", options, NULL)) >= 0)
                switch (c) {
                case ARG_FORCE:
                        co.replace_data = true;
                        break;
                case ARG_TARGET_IS_ZERO:
                        target_is_zero = true;
                        break;
                case ARG_SALVAGE:
                        log_error("--salvage is not supported: vmhost stops at the first read error of a source "
                                  "rather than write zeros for what it could not read.");
                        return 1;
                case 'T':
                        if (img_cli_parse_src_cache(optarg) < 0)
                                return 1; /* qemu-img's exit status */
                        break;
                case 'r':
                        if (img_cli_parse_rate(&cli, optarg) < 0)
                                return 1;
                        break;
                case 'm': {
                        /* qemu-img's range and words. vmhost's copy has its
                         * own fixed set of workers, so N changes nothing. */
                        long n;
                        if (parse_int_range(optarg, 1, 16, &n) < 0) {
                                log_error("Invalid number of coroutines. Allowed number of coroutines is between "
                                          "1 and 16");
                                return 1;
                        }
                        break;
                }
                case 'W':
                        /* Out-of-order writes allowed: vmhost's workers
                         * write as they finish anyway. */
                        break;
                case 'O':
                        if (img_cli_parse_format(optarg, "-O", &co.format) < 0)
                                return cli.usage_status;
                        break;
                case 'o':
                        /* Exit 1 for any bad -o, as qemu-img. */
                        if (parse_o(optarg, &o, IMG_O_BACKING) < 0)
                                return 1;
                        have_o = true;
                        break;
                case 'n':
                        skip_create = true;
                        break;
                case 'l':
                        snapshot = optarg;
                        break;
                case 'C':
                        copy_offload = true;
                        break;
                case 'c':
                        co.compress = true;
                        break;
                case 'B':
                        co.backing_file = optarg;
                        break;
                case 'F':
                        backing_fmt = optarg;
                        break;
                case 'S':
                        if (img_cli_parse_size(optarg, &co.sparse_size) < 0 || co.sparse_size % 512) {
                                log_error("-S takes a size that is a multiple of 512, not '%s'.", optarg);
                                return cli.usage_status;
                        }
                        co.fully_allocated = co.sparse_size == 0;
                        have_sparse = true;
                        break;
                case 't':
                        if (vh_image_cache_from_string(optarg, &co.cache) < 0) {
                                log_error("Unknown cache mode '%s' for -t: use unsafe, writeback, "
                                          "writethrough, none or directsync.", optarg);
                                return cli.usage_status;
                        }
                        break;
                default:
                        if (!img_cli_parse_flag(&cli, c, optarg, &status))
                                return status;
                }
        if (o.help) {
                print_o_help(co.format, IMG_O_BACKING, optind < argc);
                return 0;
        }
        /* -C: taken where qemu-img takes it; the copy is vmhost's own
         * either way (see docs/qemu-img-compat.md). */
        if (copy_offload && co.compress) {
                log_error("Cannot enable copy offloading when -c is used");
                return 1;
        }
        if (copy_offload && have_sparse) {
                log_error("Cannot enable copy offloading when -S is used");
                return 1;
        }
        /* -B and -F take precedence over -o backing_file and backing_fmt,
         * as in qemu-img. */
        if (!co.backing_file)
                co.backing_file = o.backing_file;
        if (!backing_fmt)
                backing_fmt = o.backing_fmt;
        if (co.format == VH_IMAGE_FORMAT_RAW && (o.backing_file || o.backing_fmt) && !skip_create) {
                log_error("Invalid parameter '%s'", o.backing_file ? "backing_file" : "backing_fmt");
                return 1;
        }
        if (backing_fmt && !co.backing_file && !skip_create) {
                log_error("Backing format cannot be used without backing file");
                return 1;
        }
        co.backing_format = VH_IMAGE_FORMAT_PROBE;
        if (backing_fmt && img_cli_parse_format(backing_fmt, "-F", &co.backing_format) < 0)
                return cli.usage_status;
        if (target_is_zero && !skip_create) {
                log_error("--target-is-zero requires use of -n flag");
                return 1;
        }
        if (skip_create) {
                /* The output exists: nothing about its creation can be
                 * chosen. qemu-img's words and exit status for -o. */
                if (have_o) {
                        log_error("-o has no effect when skipping image creation");
                        return 1;
                }
                if (co.compress) {
                        log_error("-c cannot be used with -n: compressed clusters are written only into a new "
                                  "image.");
                        return 1;
                }
                if (co.backing_file) {
                        /* As in qemu-img, which copies everything then. */
                        log_warning("-B has no effect with -n: %s keeps its backing file and gets all the data.",
                                    argv[argc - 1]);
                        co.backing_file = NULL;
                }
        }
        /* Exit 1 for these, as qemu-img. */
        if ((co.compress || co.backing_file) && co.format != VH_IMAGE_FORMAT_QCOW2) {
                log_error("-c and -B need qcow2 output (-O qcow2).");
                return 1;
        }
        if (co.backing_file && co.backing_format == VH_IMAGE_FORMAT_PROBE) {
                log_error("-B needs the backing file's format: add -F qcow2 or -F raw.");
                return 1;
        }
        /* Each source holds a chain of open files: a bound well past any
         * real use keeps that within the limit on descriptors. */
        if (img_cli_check_args(&cli, argc - optind, 2, CONVERT_MAX_SOURCES + 1, "SRC... DST") < 0)
                return cli.usage_status;
        if (co.format == VH_IMAGE_FORMAT_RAW && img_options_qcow2_only(&o)) {
                log_error("-o cluster_size, compat, lazy_refcounts, refcount_bits and compression_type apply to "
                          "qcow2 output only.");
                return 1; /* qemu-img: "Invalid parameter 'cluster_size'" */
        }
        size_t n_srcs = (size_t) (argc - optind - 1);
        const char *dst = argv[argc - 1];
        co.cluster_size = o.cluster_size;
        co.version = o.version;
        co.lazy_refcounts = o.lazy_refcounts;
        co.refcount_bits = o.refcount_bits;
        img_cli_progress_hook(&cli, &co.progress, &co.userdata);
        /* -p: qemu-img's figures (see docs/qemu-img-compat.md), its 0%
         * before the sources are opened, so also before a failure. */
        co.progress_data_steps = img_cli_shows_progress(&cli);
        img_cli_progress_show(&cli, 0, 1);

        if (check_not_vm_image(ctx, dst) < 0) {
                img_cli_progress_end(&cli);
                return 1;
        }
        struct vh_image *srcs[CONVERT_MAX_SOURCES] = {};
        struct vh_error err = {};
        int r = 0;
        for (size_t i = 0; i < n_srcs && r >= 0; i++)
                r = img_cli_open(&cli, argv[optind + i], cli.format, 0, &srcs[i]);
        if (r >= 0 && snapshot) {
                if (n_srcs > 1) {
                        log_error("No support for concatenating multiple snapshot");
                        r = -EINVAL;
                } else
                        r = img_cli_load_snapshot(srcs[0], snapshot);
        }
        if (r >= 0 && skip_create) {
                /* -n: the output is opened as -O says (raw by default), as
                 * qemu-img opens it. */
                _cleanup_(vh_image_freep) struct vh_image *out = NULL;
                struct img_cli out_cli = cli;
                out_cli.force_share = false;
                r = img_cli_open(&out_cli, dst, co.format, VH_IMAGE_OPEN_READ_WRITE, &out);
                if (r >= 0) {
                        /* --target-is-zero: the caller's word that DST
                         * reads as zeros, so zeros are not written, as in
                         * qemu-img (which takes the word too). */
                        r = vh_image_convert_into(srcs, n_srcs, out, target_is_zero, &co, &err);
                        if (r < 0)
                                log_error("Cannot convert %s to %s: %s", n_srcs == 1 ? argv[optind] : "the sources",
                                          dst, vh_error_message(&err, r));
                }
        } else if (r >= 0) {
                r = vh_image_convert_concat(srcs, n_srcs, dst, &co, &err);
                if (r < 0 && !report_holds_data(&err, r))
                        log_error("Cannot convert %s to %s: %s", n_srcs == 1 ? argv[optind] : "the sources", dst,
                                  vh_error_message(&err, r));
        }
        for (size_t i = 0; i < n_srcs; i++)
                vh_image_free(srcs[i]);
        img_cli_progress_end(&cli);
        return r < 0 ? 1 : 0;
}

/* 'img --version', which scripts written for qemu-img run first: the
 * first line in qemu-img's shape, "NAME version X.Y.Z (...)", one word
 * before "version" so that the number is the third word, as scripts
 * split it. The number is vmhost's own, since that is what decides what
 * it does; the parenthesis names the qemu-img whose behaviour it follows. */
static int img_version(void) {
        printf("vmhost-img version %s (qemu-img %s compatible)\n", VMHOST_VERSION, QEMU_IMG_COMPAT_VERSION);
        return 0;
}

int cmd_img(const struct vh_context *ctx, int argc, char **argv) {
        /* The image commands need no context, except the two that make an
         * image and refuse to overwrite a VM's disk (they look at the VMs). */
        static const struct {
                const char *name;
                int (*run)(int argc, char **argv);
                int (*run_ctx)(const struct vh_context *ctx, int argc, char **argv);
        } commands[] = {
                { "create", NULL, img_create },
                { "info", img_info },
                { "convert", NULL, img_convert },
                { "check", cmd_img_check },
                { "map", cmd_img_map },
                { "compare", cmd_img_compare },
                { "measure", cmd_img_measure },
                { "commit", cmd_img_commit },
                { "rebase", cmd_img_rebase },
                { "resize", cmd_img_resize },
                { "amend", cmd_img_amend },
                { "snapshot", cmd_img_snapshot },
                { "push", NULL, cmd_img_push },
                { "receive", NULL, cmd_img_receive },
        };

        if (argc < 2) {
                usage(stderr);
                return 2;
        }
        if (streq(argv[1], "-h") || streq(argv[1], "--help") || streq(argv[1], "help")) {
                usage(stdout);
                return 0;
        }
        if (streq(argv[1], "--version") || streq(argv[1], "-V"))
                return img_version();
        for (size_t i = 0; i < ELEMENTSOF(commands); i++)
                if (streq(argv[1], commands[i].name))
                        return commands[i].run_ctx ? commands[i].run_ctx(ctx, argc - 1, argv + 1)
                                                   : commands[i].run(argc - 1, argv + 1);

        log_error("Unknown command 'img %s'. See 'vmhost img --help'.", argv[1]);
        return 2;
}
