/* cli/img-common.h: what the 'vmhost img' verbs (cmd-img.c,
 * cmd-img-inspect.c, cmd-img-write.c) share: the flags most of them take
 * (-h, -f FMT, -U, -q, -p, --output), the argument count check, opening an
 * image with the failure reported, and the progress line (on stdout, as qemu-img). The
 * exit status of bad usage and the wording of some messages differ between
 * verbs, as they do in qemu-img, so 'struct img_cli' carries them. */
#pragma once

#include <getopt.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "vmhost/image.h"

/* getopt_long() codes of long options that have no short form. A verb
 * numbers its own from IMG_CLI_ARG_VERB on. */
enum {
        IMG_CLI_ARG_OUTPUT = 0x100,
        IMG_CLI_ARG_VERB,
};

/* Entries for a verb's long option table. */
#define IMG_CLI_OPTION_HELP { "help", no_argument, NULL, 'h' }
#define IMG_CLI_OPTION_FORCE_SHARE { "force-share", no_argument, NULL, 'U' }
#define IMG_CLI_OPTION_FORMAT { "format", required_argument, NULL, 'f' }
#define IMG_CLI_OPTION_OUTPUT { "output", required_argument, NULL, IMG_CLI_ARG_OUTPUT }

/* One run of a verb: how it reports bad usage, and the shared flags it
 * was given. Start it with IMG_CLI_INIT(). */
struct img_cli {
        const char *verb;       /* "map", for "See 'vmhost img map --help'." */
        void (*usage)(FILE *f); /* the verb's --help text */
        int usage_status;       /* exit status of bad usage: 2, or 1 where qemu-img uses 1 */
        bool qemu_img_messages; /* "Could not open 'FILE': ..." (qemu-img's words), not "Cannot open FILE: ..." */

        enum vh_image_format format;      /* -f FMT; VH_IMAGE_FORMAT_PROBE without */
        bool force_share;                 /* -U, --force-share: take no lock */
        bool quiet;                       /* -q */
        bool progress;                    /* -p */
        enum vh_image_info_output output; /* --output=human|json */

        uint64_t rate_limit;   /* -r RATE (convert, commit): bytes per second; 0 for none */
        uint64_t rate_start_ns; /* CLOCK_MONOTONIC when the progress hook was set */
        float progress_last;   /* percent last printed, as qemu-img keeps it (a float) */
        uint64_t progress_done, progress_total; /* the last report, shown once however often it comes */
        bool progress_reported; /* progress_done and progress_total hold one */
        /* How a report makes the figure: done / total, or, as qemu-img
         * adds up steps in float, a sum (see progress_print()). */
        enum {
                IMG_CLI_PROGRESS_RATIO,
                IMG_CLI_PROGRESS_SUM_SHARES, /* compare: each report adds (done - last done) / total */
                IMG_CLI_PROGRESS_SUM_STEPS,  /* rebase: each unit of done adds 100 / (total / unit) */
        } progress_mode;
        float progress_current; /* the sum so far */
        bool progress_started; /* the 0% line is out */
};

#define IMG_CLI_INIT(verb_name, usage_fn, bad_usage_status)                                                    \
        {                                                                                                      \
                .verb = (verb_name), .usage = (usage_fn), .usage_status = (bad_usage_status),                 \
                .format = VH_IMAGE_FORMAT_PROBE, .output = VH_IMAGE_INFO_HUMAN,                            \
        }

/* Parses a format name given with 'flag' ("-f", "-O", "-F"); reports a bad
 * one and returns -EINVAL. */
int img_cli_parse_format(const char *s, const char *flag, enum vh_image_format *ret);

/* Parses a size as qemu-img reads one, on top of parse_size() (a number
 * with an optional B, k, M, G, T, P, E suffix, and fractions such as
 * "1.5G"): leading blanks, a hexadecimal number ("0x10000", no fraction)
 * and a fraction of zeros on bytes ("1024.0", "1024.0b") are taken too.
 * Returns -EINVAL or -ERANGE for anything else, and prints nothing. */
int img_cli_parse_size(const char *s, uint64_t *ret);

/* -T SRC_CACHE (check, compare, convert, rebase): the five cache mode
 * names qemu-img takes for the source. vmhost reads its sources through
 * the page cache whatever the mode (a mode changes how a file is read,
 * never what is read), so the mode is checked and then has no effect.
 * Reports an unknown one in qemu-img's words and returns -EINVAL. */
int img_cli_parse_src_cache(const char *s);

/* -r RATE (convert, commit): a size per second, as qemu-img reads it;
 * 0 is no limit. Reports a bad one in qemu-img's words and returns
 * -EINVAL. The limit is kept by the progress callback (see
 * img_cli_progress_hook()), which waits until the virtual disk done so far
 * (zeros included) has taken at least done / RATE seconds. */
int img_cli_parse_rate(struct img_cli *cli, const char *s);

/* For the 'default:' of a verb's getopt_long() switch, so that the verb
 * handles only its own flags: takes -f, -U, -q, -p and --output into 'cli'
 * (the verb's option string decides which of them it accepts); -h prints
 * the usage on stdout; an unknown option or a missing argument prints it on
 * stderr. Returns true to go on parsing, false when the command ends, with
 * its exit status in *ret_status (0 after -h, else cli->usage_status). */
bool img_cli_parse_flag(struct img_cli *cli, int c, const char *arg, int *ret_status);

/* Checks that the verb got between 'min' and 'max' arguments after its
 * flags; if not, reports "Expected WHAT. See 'vmhost img VERB --help'."
 * and returns -EINVAL. */
int img_cli_check_args(const struct img_cli *cli, int n, int min, int max, const char *what);

/* Opens 'file' as 'format' with 'flags' (VH_IMAGE_OPEN_*), adding
 * VH_IMAGE_OPEN_FORCE_SHARE after -U. Reports a failure in the verb's
 * words and returns it. */
int img_cli_open(const struct img_cli *cli, const char *file, enum vh_image_format format, unsigned flags,
                 struct vh_image **ret);
/* 'msg' past its leading "FILE: ", for a message that names the file in
 * its own words ("Cannot resize FILE: ..."); 'msg' itself without one. */
const char *img_cli_without_name(const char *file, const char *msg);

/* -l SNAPSHOT (convert, measure): makes 'img' show the internal snapshot
 * named by 'spec' ("snapshot.id=ID", "snapshot.name=NAME", both, or a
 * bare ID or NAME tried as an id first, as qemu-img does); modifies
 * 'spec'. Reports a failure in qemu-img's words and returns it. */
int img_cli_load_snapshot(struct vh_image *img, char *spec);

/* True if the verb shows progress: -p without -q. */
bool img_cli_shows_progress(const struct img_cli *cli);

/* Points a long operation's 'progress' and 'userdata' options at the
 * shared callback, whose state lives in 'cli': it prints whole percents
 * on stdout if the verb shows progress, keeps cli->rate_limit, and
 * cancels the operation once
 * SIGINT or SIGTERM came (Ctrl-C), which it catches from now on unless
 * they are ignored. The operation then cleans up and fails with
 * -ECANCELED; a second Ctrl-C ends the process at once. */
void img_cli_progress_hook(struct img_cli *cli, int (**ret_progress)(uint64_t done, uint64_t total, void *userdata),
                           void **ret_userdata);

/* Shows 'done' of 'total' as qemu-img's progress line does, if the verb
 * shows progress (for a verb that cannot be interrupted). */
void img_cli_progress_show(struct img_cli *cli, uint64_t done, uint64_t total);

/* Shows 100%, as qemu-img does once its verb succeeded (rebase). */
void img_cli_progress_done(struct img_cli *cli);

/* Ends the progress line, if the verb shows progress. */
void img_cli_progress_end(const struct img_cli *cli);
