/* cli/cmd-img-push.c: 'vmhost img push IMAGE HOST' and the far side's
 * internal 'vmhost img receive' (src/host/push.h, docs/hosts.md). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/json-writer.h"
#include "base/log.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "cli/cmd-img.h"
#include "host/host-def.h"
#include "host/push.h"
#include "vmhost/image.h"

static void usage_push(FILE *f) {
        fprintf(f,
                "Usage: vmhost img push [-f raw|qcow2] [--name NAME] [--to DIR] [--json]\n"
                "                       [--no-compress] [-q] IMAGE HOST\n"
                "\n"
                "Copies IMAGE, with its backing files (backing first), to the registered HOST\n"
                "once. Each file is known by a hash of its bytes (vmhost-sha256-tree-1m), kept\n"
                "beside it in IMAGE.vmhost-hash: one the host holds already, under any name,\n"
                "is not sent again.\n"
                "A different image under the same name there is refused, never overwritten.\n"
                "Only allocated, non-zero data travels, zstd-compressed where that pays. The\n"
                "copy is written under a temporary name, checked by hash there, then renamed\n"
                "and made read-only; an interrupted push leaves nothing under the name.\n"
                "\n"
                "  -f, --format F IMAGE's format, raw or qcow2; default: probed, and then a\n"
                "                 backing file outside IMAGE's directory is refused (a raw\n"
                "                 disk may hold a qcow2 header its guest wrote)\n"
                "  --name NAME    IMAGE's file name on HOST; default: its own. A backing file\n"
                "                 whose name a layer above takes gets NAME.HASH8.EXT there\n"
                "  --to DIR       the directory on HOST (absolute); default: its STATE/images\n"
                "  --json         the result as JSON: each file's path there, hash, bytes sent\n"
                "  --no-compress  send records uncompressed\n"
                "  -q             no progress line, no final line\n"
                "\n"
                "Example:\n"
                "  vmhost img push base.qcow2 b\n");
}

static void usage_receive(FILE *f) {
        fprintf(f,
                "Usage: vmhost img receive [--lookup [--no-record]] --name NAME --hash HASH [--to DIR]\n"
                "                          [--backing FILE --backing-format FMT]\n"
                "\n"
                "Internal: the far side of 'vmhost img push', run over ssh. Reads an image\n"
                "stream on stdin (or, with --lookup, only says whether the content is here).\n"
                "Prints 'received PATH', 'present PATH' or 'absent PATH'. Exit status 3: the\n"
                "name holds another image; 4: the data arrived damaged.\n"
                "\n"
                "  --lookup          only look for the content (by hash, under any name)\n"
                "  --no-record       with --lookup: write no hash sidecar (a dry run's lookup)\n"
                "  --name NAME       the file name in DIR\n"
                "  --hash HASH       what the content must hash to (vmhost-sha256-tree-1m)\n"
                "  --to DIR          the directory (absolute); default: STATE/images\n"
                "  --backing FILE    qcow2: the backing name to write into the copy\n"
                "  --backing-format FMT  raw or qcow2, with --backing\n"
                "\n"
                "Example:\n"
                "  vmhost img receive --lookup --name base.qcow2 --hash HASH\n");
}

static volatile sig_atomic_t interrupted;

static void on_interrupt(int sig) {
        interrupted = sig;
}

struct progress {
        bool tty;
        uint64_t start_ns, last_ns;
        const char *image;
};

static void human_bytes(uint64_t n, char *buf, size_t size) {
        if (n >= (1ull << 30))
                snprintf(buf, size, "%.2f GiB", (double) n / (1ull << 30));
        else if (n >= (1ull << 20))
                snprintf(buf, size, "%.1f MiB", (double) n / (1ull << 20));
        else
                snprintf(buf, size, "%" PRIu64 " KiB", n >> 10);
}

static int push_progress(size_t layer, size_t n_layers, uint64_t done, uint64_t total, uint64_t wire, void *userdata) {
        struct progress *p = userdata;
        if (interrupted)
                return 1;
        if (!p->tty)
                return 0;
        uint64_t now = vh_clock_ns();
        if (now - p->last_ns < 200000000ull && done < total)
                return 0;
        if (p->last_ns == 0 || done == 0)
                p->start_ns = now;
        p->last_ns = now;
        double secs = (double) (now - p->start_ns) / 1e9;
        double rate = secs > 0 ? (double) done / secs : 0;
        char d[32], t[32], r[32], w[32];
        human_bytes(done, d, sizeof(d));
        human_bytes(total, t, sizeof(t));
        human_bytes((uint64_t) rate, r, sizeof(r));
        human_bytes(wire, w, sizeof(w));
        unsigned left = rate > 0 ? (unsigned) ((double) (total - done) / rate) : 0;
        fprintf(stderr, "\r\033[Kpushing %zu/%zu: %s of %s, %s/s, %s on the wire, %u:%02u left", layer + 1,
                n_layers, d, t, r, w, left / 60, left % 60);
        return 0;
}

int cmd_img_push(const struct vh_context *ctx, int argc, char **argv) {
        enum { ARG_TO = 0x100, ARG_JSON, ARG_NO_COMPRESS, ARG_TEST_CORRUPT, ARG_NAME };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "to", required_argument, NULL, ARG_TO },
                { "format", required_argument, NULL, 'f' },
                { "name", required_argument, NULL, ARG_NAME },
                { "json", no_argument, NULL, ARG_JSON },
                { "no-compress", no_argument, NULL, ARG_NO_COMPRESS },
                { "quiet", no_argument, NULL, 'q' },
                /* Tests only (tests/e2e/t-host-push.sh), not in --help:
                 * damage one record in transit, which nothing else here
                 * can do inside ssh, for the far side's hash to catch. */
                { "test-corrupt-in-transit", no_argument, NULL, ARG_TEST_CORRUPT },
                {},
        };
        const char *dir = NULL, *name = NULL;
        enum vh_image_format format = VH_IMAGE_FORMAT_PROBE;
        bool json = false, no_compress = false, quiet = false, test_corrupt = false;
        int c;
        optind = 0;
        while ((c = getopt_long(argc, argv, "hqf:", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        usage_push(stdout);
                        return 0;
                case 'f':
                        if (streq(optarg, "raw"))
                                format = VH_IMAGE_FORMAT_RAW;
                        else if (streq(optarg, "qcow2"))
                                format = VH_IMAGE_FORMAT_QCOW2;
                        else {
                                log_error("-f takes raw or qcow2, not '%s'.", optarg);
                                return 2;
                        }
                        break;
                case ARG_TO:
                        dir = optarg;
                        break;
                case ARG_NAME:
                        if (!push_name_is_valid(optarg)) {
                                log_error("--name takes a file name of 1..%d of [A-Za-z0-9._+-], not starting with "
                                          "'.' or '-', not '%s'.", PUSH_NAME_MAX, optarg);
                                return 2;
                        }
                        name = optarg;
                        break;
                case ARG_JSON:
                        json = true;
                        break;
                case ARG_NO_COMPRESS:
                        no_compress = true;
                        break;
                case 'q':
                        quiet = true;
                        break;
                case ARG_TEST_CORRUPT:
                        test_corrupt = true;
                        break;
                default:
                        fprintf(stderr, "See 'vmhost img push --help'.\n");
                        return 2;
                }
        }
        if (argc - optind != 2) {
                log_error("img push needs IMAGE and HOST. See 'vmhost img push --help'.");
                return 2;
        }
        const char *image = argv[optind], *host = argv[optind + 1];
        if (streq(host, HOST_LOCAL)) {
                log_error("'local' is this machine: IMAGE is here already.");
                return 2;
        }
        if (!host_name_is_valid(host)) {
                log_error("Invalid host name '%s'.", host);
                return 2;
        }
        if (dir && dir[0] != '/') {
                log_error("--to needs an absolute directory on host %s, not '%s'.", host, dir);
                return 2;
        }
        struct vh_error err = {};
        _cleanup_(host_def_freep) struct host_def *def = NULL;
        int r = host_load(ctx, host, &def, &err);
        if (r < 0) {
                log_error("Cannot push %s: %s.", image, vh_error_message(&err, r));
                return 1;
        }

        struct sigaction sa = { .sa_handler = on_interrupt }, old_int, old_term;
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
        struct progress p = { .tty = !quiet && !json && isatty(STDERR_FILENO), .image = image };
        struct push_options po = {
                .dir = dir,
                .name = name,
                .format_given = format != VH_IMAGE_FORMAT_PROBE,
                .format = format,
                .no_compress = no_compress,
                .test_corrupt = test_corrupt,
                .progress = push_progress,
                .userdata = &p,
        };
        struct push_result res = {};
        uint64_t t0 = vh_clock_ns();
        r = push_image(ctx, def, image, &po, &res, &err);
        double secs = (double) (vh_clock_ns() - t0) / 1e9;
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
        if (p.tty && p.last_ns)
                fputs("\r\033[K", stderr);
        if (r < 0) {
                if (interrupted)
                        log_error("Push of %s to host %s interrupted: nothing was kept under its name there.", image,
                                  host);
                else
                        log_error("Cannot push %s to host %s: %s.", image, host, vh_error_message(&err, r));
                return r == -EEXIST ? 3 : 1;
        }
        uint64_t sent = 0, wire = 0, data = 0;
        for (size_t i = 0; i < res.n_layers; i++) {
                sent += res.layers[i].sent;
                wire += res.layers[i].stats.wire_bytes;
                data += res.layers[i].stats.data_bytes;
        }
        if (json) {
                struct json_writer w;
                json_writer_init(&w, true);
                json_object_begin(&w);
                json_kv_string(&w, "image", image);
                json_kv_string(&w, "host", host);
                json_kv_uint(&w, "wire-bytes", wire);
                json_kv_uint(&w, "data-bytes", data);
                json_key(&w, "seconds");
                json_double(&w, secs);
                json_key(&w, "files");
                json_array_begin(&w);
                for (size_t i = 0; i < res.n_layers; i++) {
                        const struct push_layer_result *L = &res.layers[i];
                        json_object_begin(&w);
                        json_kv_string(&w, "path", L->local_path);
                        json_kv_string(&w, "remote-path", L->remote_path);
                        json_kv_string(&w, "hash", L->sha256);
                        json_kv_string(&w, "hash-algorithm", PUSH_HASH_ALGORITHM);
                        json_kv_bool(&w, "sent", L->sent);
                        json_kv_uint(&w, "size", L->stats.size);
                        json_kv_uint(&w, "allocated-bytes", L->stats.allocated);
                        json_kv_uint(&w, "data-bytes", L->stats.data_bytes);
                        json_kv_uint(&w, "wire-bytes", L->stats.wire_bytes);
                        json_kv_uint(&w, "records", L->stats.records);
                        json_kv_uint(&w, "compressed-records", L->stats.compressed_records);
                        json_object_end(&w);
                }
                json_array_end(&w);
                json_object_end(&w);
                int jr;
                _cleanup_free_ char *s = json_writer_finish(&w, &jr);
                if (!s) {
                        push_result_done(&res);
                        return log_error_errno(jr, "Cannot format JSON: %m"), 1;
                }
                fputs(s, stdout);
                if (s[0] && s[strlen(s) - 1] != '\n')
                        fputc('\n', stdout);
        } else if (!quiet) {
                const struct push_layer_result *top = &res.layers[res.n_layers - 1];
                char w[32], d[32];
                human_bytes(wire, w, sizeof(w));
                human_bytes(data, d, sizeof(d));
                if (sent == 0)
                        fprintf(stderr, "Host %s has %s already: %s (hash %s).\n", host, image, top->remote_path,
                                top->sha256);
                else
                        fprintf(stderr, "Pushed %s to host %s: %s (%" PRIu64 " of %zu files sent, %s data, %s on "
                                        "the wire, %.1f s).\n",
                                image, host, top->remote_path, sent, res.n_layers, d, w, secs);
                /* A chain: which local files went, so that none is a surprise. */
                for (size_t i = 0; res.n_layers > 1 && i < res.n_layers; i++)
                        fprintf(stderr, "  %s %s -> %s\n", res.layers[i].sent ? "sent " : "there", res.layers[i].local_path,
                                res.layers[i].remote_path);
        }
        push_result_done(&res);
        return 0;
}

static ssize_t stdin_read(void *buf, size_t len, void *userdata) {
        for (;;) {
                ssize_t n = read(STDIN_FILENO, buf, len);
                if (n < 0 && errno == EINTR)
                        continue;
                return n < 0 ? -errno : n;
        }
}

int cmd_img_receive(const struct vh_context *ctx, int argc, char **argv) {
        enum { ARG_NAME = 0x100, ARG_SHA, ARG_TO, ARG_BACKING, ARG_BACKING_FMT, ARG_LOOKUP, ARG_NO_RECORD };
        static const struct option options[] = {
                { "help", no_argument, NULL, 'h' },
                { "name", required_argument, NULL, ARG_NAME },
                { "hash", required_argument, NULL, ARG_SHA },
                { "to", required_argument, NULL, ARG_TO },
                { "backing", required_argument, NULL, ARG_BACKING },
                { "backing-format", required_argument, NULL, ARG_BACKING_FMT },
                { "lookup", no_argument, NULL, ARG_LOOKUP },
                { "no-record", no_argument, NULL, ARG_NO_RECORD },
                {},
        };
        struct push_receive_options o = {};
        bool lookup = false;
        unsigned lookup_flags = 0;
        int c;
        optind = 0;
        while ((c = getopt_long(argc, argv, "+h", options, NULL)) >= 0) {
                switch (c) {
                case 'h':
                        usage_receive(stdout);
                        return 0;
                case ARG_NAME:
                        o.name = optarg;
                        break;
                case ARG_SHA:
                        o.sha256 = optarg;
                        break;
                case ARG_TO:
                        o.dir = optarg;
                        break;
                case ARG_BACKING:
                        o.backing = optarg;
                        break;
                case ARG_BACKING_FMT:
                        o.backing_format = optarg;
                        break;
                case ARG_LOOKUP:
                        lookup = true;
                        break;
                case ARG_NO_RECORD:
                        lookup_flags |= PUSH_READ_ONLY;
                        break;
                default:
                        return 2;
                }
        }
        if (optind != argc || !o.name || !o.sha256 || (!o.backing != !o.backing_format)) {
                log_error("img receive needs --name and --hash (and --backing with --backing-format).");
                return 2;
        }
        struct vh_error err = {};
        _cleanup_free_ char *path = NULL;
        int r;
        if (lookup) {
                enum push_lookup_status st;
                r = push_lookup(ctx, o.dir, o.name, o.sha256, lookup_flags, &st, &path, &err);
                if (r >= 0) {
                        printf("%s %s\n", st == PUSH_PRESENT ? "present" : "absent", path);
                        return 0;
                }
        } else {
                /* The sender going away is EOF on stdin, handled as such. */
                signal(SIGPIPE, SIG_IGN);
                bool present = false;
                r = push_receive(ctx, &o, stdin_read, NULL, &path, &present, NULL, &err);
                if (r >= 0) {
                        printf("%s %s\n", present ? "present" : "received", path);
                        return 0;
                }
        }
        log_error("%s", vh_error_message(&err, r));
        return r == -EEXIST ? 3 : r == -EBADMSG ? 4 : 1;
}
