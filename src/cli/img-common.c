/* cli/img-common.c: the flags, checks and output the 'vmhost img' verbs
 * share (see img-common.h). Messages are kept word for word as the verbs
 * printed them, since scripts match them. */
#include <ctype.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/log.h"
#include "base/strutil.h"
#include "cli/img-common.h"

int img_cli_parse_format(const char *s, const char *flag, enum vh_image_format *ret) {
        int f = vh_image_format_from_string(s);
        if (f < 0) {
                log_error("Unknown format '%s' for %s: use raw or qcow2.", s, flag);
                return -EINVAL;
        }
        *ret = f;
        return 0;
}

int img_cli_parse_size(const char *s, uint64_t *ret) {
        if (!s)
                return -EINVAL;
        while (*s == ' ' || *s == '\t')
                s++;

        if (s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) {
                /* qemu takes hex for whole numbers only; a unit may follow. */
                if (!isxdigit((unsigned char) s[2]))
                        return -EINVAL;
                errno = 0;
                char *end;
                unsigned long long v = strtoull(s + 2, &end, 16);
                if (errno == ERANGE)
                        return -ERANGE;
                static const char units[] = "BKMGTPE";
                uint64_t unit = 1;
                if (*end) {
                        const char *u = strchr(units, toupper((unsigned char) *end));
                        if (!u || end[1] != '\0')
                                return -EINVAL;
                        unit = UINT64_C(1) << (10 * (u - units));
                }
                if (unit > 1 && v > UINT64_MAX / unit)
                        return -ERANGE;
                *ret = (uint64_t) v * unit;
                return 0;
        }

        /* "1024.0" and "1024.0b": a fraction of zeros on bytes is a whole
         * number of bytes, which parse_size() refuses as a fraction. */
        const char *dot = strchr(s, '.');
        if (dot) {
                const char *p = dot + 1;
                while (*p == '0')
                        p++;
                if (p > dot + 1 && (*p == '\0' || ((p[0] == 'b' || p[0] == 'B') && p[1] == '\0'))) {
                        char whole[32];
                        size_t n = (size_t) (dot - s);
                        if (n == 0 || n >= sizeof(whole))
                                return -EINVAL;
                        memcpy(whole, s, n);
                        whole[n] = '\0';
                        return parse_size(whole, ret);
                }
        }
        return parse_size(s, ret);
}

int img_cli_parse_src_cache(const char *s) {
        enum vh_image_cache cache;
        if (vh_image_cache_from_string(s, &cache) < 0) {
                log_error("Invalid source cache option: %s (use writeback, writethrough, none, directsync or "
                          "unsafe)",
                          s);
                return -EINVAL;
        }
        return 0;
}

int img_cli_parse_rate(struct img_cli *cli, const char *s) {
        uint64_t rate;
        if (img_cli_parse_size(s, &rate) < 0) {
                log_error("Invalid rate limit specified. You may use k, M, G, T, P or E suffixes for "
                          "kilobytes, megabytes, gigabytes, terabytes, petabytes and exabytes.");
                return -EINVAL;
        }
        cli->rate_limit = rate;
        return 0;
}

static uint64_t now_ns(void) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t) ts.tv_sec * UINT64_C(1000000000) + (uint64_t) ts.tv_nsec;
}

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

bool img_cli_parse_flag(struct img_cli *cli, int c, const char *arg, int *ret_status) {
        switch (c) {
        case 'h':
                cli->usage(stdout);
                *ret_status = 0;
                return false;
        case 'f':
                if (img_cli_parse_format(arg, "-f", &cli->format) < 0)
                        break;
                return true;
        case 'U':
                cli->force_share = true;
                return true;
        case 'q':
                cli->quiet = true;
                return true;
        case 'p':
                cli->progress = true;
                return true;
        case IMG_CLI_ARG_OUTPUT:
                if (parse_output(arg, &cli->output) < 0)
                        break;
                return true;
        default:
                /* getopt_long() has said what is wrong ('?' or ':'). */
                cli->usage(stderr);
                break;
        }
        *ret_status = cli->usage_status;
        return false;
}

int img_cli_check_args(const struct img_cli *cli, int n, int min, int max, const char *what) {
        if (n >= min && n <= max)
                return 0;
        log_error("Expected %s. See 'vmhost img %s --help'.", what, cli->verb);
        return -EINVAL;
}

int img_cli_open(const struct img_cli *cli, const char *file, enum vh_image_format format, unsigned flags,
                 struct vh_image **ret) {
        struct vh_image_open_options oo = {
                .format = format,
                .flags = flags | (cli->force_share ? VH_IMAGE_OPEN_FORCE_SHARE : 0),
        };
        struct vh_error err = {};
        int r = vh_image_open(file, &oo, ret, &err);
        if (r < 0) {
                if (cli->qemu_img_messages)
                        log_error("Could not open '%s': %s", file, vh_error_message(&err, r));
                else {
                        /* The engine's message names the file already. */
                        const char *msg = vh_error_message(&err, r);
                        if (img_cli_without_name(file, msg) != msg)
                                log_error("%s", msg);
                        else
                                log_error("Cannot open %s: %s", file, msg);
                }
        }
        return r;
}

const char *img_cli_without_name(const char *file, const char *msg) {
        size_t n = strlen(file);
        if (strncmp(msg, file, n) == 0 && msg[n] == ':' && msg[n + 1] == ' ')
                return msg + n + 2;
        return msg;
}

/* convert -l and measure -l: "snapshot.id=ID,snapshot.name=NAME" (either or both), or
 * a bare ID or NAME, tried as an id first, as qemu-img does. Modifies
 * 'spec'. Reports failures in qemu-img's words. */
int img_cli_load_snapshot(struct vh_image *img, char *spec) {
        struct vh_error err = {};
        int r;
        if (startswith(spec, "snapshot.")) {
                const char *id = NULL, *name = NULL;
                char *save = NULL;
                for (char *kv = strtok_r(spec, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
                        if (startswith(kv, "snapshot.id="))
                                id = kv + strlen("snapshot.id=");
                        else if (startswith(kv, "snapshot.name="))
                                name = kv + strlen("snapshot.name=");
                        else {
                                char *eq = strchr(kv, '=');
                                if (eq)
                                        *eq = '\0';
                                log_error("Invalid parameter '%s'", kv);
                                return -EINVAL;
                        }
                }
                r = vh_image_snapshot_load(img, id, name, &err);
        } else {
                r = vh_image_snapshot_load(img, spec, NULL, &err);
                if (r == -ENOENT)
                        r = vh_image_snapshot_load(img, NULL, spec, &err);
        }
        if (r < 0)
                log_error("Failed to load snapshot: %s", vh_error_message(&err, r));
        return r;
}

bool img_cli_shows_progress(const struct img_cli *cli) {
        return cli->progress && !cli->quiet;
}

/* The smallest step qemu-img shows, in percent: 2 for rebase and compare,
 * 1 for convert and commit. */
static float progress_min_step(const struct img_cli *cli) {
        return streq(cli->verb, "rebase") || streq(cli->verb, "compare") ? 2.0f : 1.0f;
}

/* Progress as qemu-img prints it, which scripts and front ends parse: on
 * stdout, "    (P/100%)\r" with P to two decimals, at the start, each
 * time it has moved by more than the verb's step since the last line,
 * and at 100 (every time it is reported). The arithmetic is in float, as
 * qemu-img's, so that the same steps give the same lines. */
/* Prints 'now' if qemu-img would: each time the figure moved by more
 * than the verb's step since the last line, and at 100 every time. */
static void progress_line(struct img_cli *cli, float now) {
        float step = progress_min_step(cli);
        if (!(now > cli->progress_last + step || now < cli->progress_last - step || now == 100.0f))
                return;
        cli->progress_last = now;
        printf("    (%3.2f/100%%)\r", (double) now);
        fflush(stdout);
}

/* qemu-img's progress_print() with a delta: its float arithmetic. */
static void progress_add(struct img_cli *cli, float delta) {
        float now = cli->progress_current + delta / 100 * 100;
        if (now > 100.0f)
                now = 100.0f;
        cli->progress_current = now;
        progress_line(cli, now);
}

/* Progress as qemu-img prints it, which scripts and front ends parse: on
 * stdout, "    (P/100%)\r" with P to two decimals, 0 once at the start,
 * then each time it has moved by more than the verb's step since the
 * last line, and at 100 (every time it is reported). The arithmetic is
 * in float, as qemu-img's, so that the same steps give the same lines. */
static void progress_print(struct img_cli *cli, uint64_t done, uint64_t total) {
        /* A report that repeats the last one is a chance to cancel, not a
         * step (convert's data steps, see image/convert-progress.c). */
        if (cli->progress_reported && done == cli->progress_done && total == cli->progress_total)
                return;
        uint64_t last_done = cli->progress_reported ? cli->progress_done : 0;
        cli->progress_reported = true;
        cli->progress_done = done;
        cli->progress_total = total;
        /* qemu-img shows 0% once, as the work starts, whatever is
         * reported first. */
        if (!cli->progress_started) {
                cli->progress_started = true;
                printf("    (0.00/100%%)\r");
                fflush(stdout);
        }
        switch (cli->progress_mode) {
        case IMG_CLI_PROGRESS_SUM_SHARES:
                /* compare: the chunk's share in percent, as a float. */
                if (total && done > last_done)
                        progress_add(cli, (float) (done - last_done) / (float) total * 100);
                return;
        case IMG_CLI_PROGRESS_SUM_STEPS: {
                /* rebase: 100 / (size / unit) per step, one step at a time
                 * (each may print). */
                uint64_t unit = MIN(total, UINT64_C(2) << 20);
                if (!unit || done <= last_done)
                        return;
                float step = (float) 100 / (float) (total / unit);
                for (uint64_t n = (done - last_done) / unit; n > 0; n--)
                        progress_add(cli, step);
                return;
        }
        case IMG_CLI_PROGRESS_RATIO:
                break;
        }
        float now = total ? (float) (100.0 * (double) done / (double) total) : 100.0f;
        if (now > 100.0f)
                now = 100.0f;
        /* A later report of nothing done yet is a chance to cancel. */
        if (now != 0.0f)
                progress_line(cli, now);
}

/* Set by the signal handler, read by the progress callback: the
 * operation itself must do the cleaning up, which a handler cannot. */
static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig) {
        (void) sig;
        interrupted = 1;
}

/* -r RATE: waits until 'done' bytes have taken done / RATE seconds since
 * the hook was set, just before the work starts. The engine reports every few MiB and has no more
 * than that in flight, so the rate holds within that much. The wait is
 * cut into slices short enough for Ctrl-C to cancel at once. */
static void rate_wait(struct img_cli *cli, uint64_t done) {
        if (!cli->rate_limit)
                return;
        /* done / rate in ns without overflow for any 64-bit 'done'. */
        long double due = (long double) done * 1e9L / (long double) cli->rate_limit;
        while (!interrupted) {
                uint64_t elapsed = now_ns() - cli->rate_start_ns;
                if ((long double) elapsed >= due)
                        break;
                long double left = due - (long double) elapsed;
                uint64_t slice = left > 100e6L ? UINT64_C(100000000) : (uint64_t) left;
                struct timespec ts = { .tv_sec = 0, .tv_nsec = (long) slice };
                (void) nanosleep(&ts, NULL);
        }
}

static int progress_cb(uint64_t done, uint64_t total, void *userdata) {
        struct img_cli *cli = userdata;
        if (img_cli_shows_progress(cli))
                progress_print(cli, done, total);
        rate_wait(cli, done);
        return interrupted ? 1 : 0;
}

static void catch_interrupt(int sig) {
        struct sigaction old;
        /* An ignored signal stays ignored (a background job of a shell
         * without job control must not stop on the terminal's Ctrl-C). */
        if (sigaction(sig, NULL, &old) < 0 || old.sa_handler == SIG_IGN)
                return;
        /* SA_RESTART: the signal may land in any thread, which then goes
         * on with its read or write. SA_RESETHAND: a second one kills. */
        struct sigaction sa = { .sa_handler = on_interrupt, .sa_flags = SA_RESTART | SA_RESETHAND };
        sigemptyset(&sa.sa_mask);
        (void) sigaction(sig, &sa, NULL);
}

void img_cli_progress_hook(struct img_cli *cli, int (**ret_progress)(uint64_t done, uint64_t total, void *userdata),
                           void **ret_userdata) {
        catch_interrupt(SIGINT);
        catch_interrupt(SIGTERM);
        *ret_progress = progress_cb;
        *ret_userdata = cli;
        cli->rate_start_ns = now_ns();
}

void img_cli_progress_show(struct img_cli *cli, uint64_t done, uint64_t total) {
        if (img_cli_shows_progress(cli))
                progress_print(cli, done, total);
}

void img_cli_progress_done(struct img_cli *cli) {
        if (!img_cli_shows_progress(cli))
                return;
        if (!cli->progress_started) {
                cli->progress_started = true;
                printf("    (0.00/100%%)\r");
        }
        cli->progress_current = 100.0f;
        progress_line(cli, 100.0f);
}

void img_cli_progress_end(const struct img_cli *cli) {
        if (img_cli_shows_progress(cli)) {
                /* qemu-img's convert prints 100% at the end of its copy
                 * loop and once more as it finishes; vmhost's engine
                 * reports the end once (the second report of it repeats
                 * the first and is not shown). Rebase prints its last
                 * 100% itself (img_cli_progress_done()). A convert with
                 * nothing to count (0 of 0) shows 100% only once, as
                 * qemu-img's, whose loop then prints nothing. */
                bool again = streq(cli->verb, "convert") && cli->progress_total != 0;
                if (cli->progress_last == 100.0f && again)
                        printf("    (100.00/100%%)\r");
                putchar('\n');
                fflush(stdout);
        }
}
