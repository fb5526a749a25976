/* image/info.c: 'img info' output, in the two shapes 'qemu-img info'
 * prints: human-readable text and JSON with qemu-img's field names, so
 * scripts written against qemu-img keep working. */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/macro.h"
#include "base/strutil.h"
#include "image/image-internal.h"

/* Sizes as qemu-img prints them: three significant digits, switching to
 * the next binary unit once the number would reach 1000 ("0.977 KiB" for
 * 1000 bytes, "196 KiB", "1 GiB"). */
static void human_size(uint64_t bytes, char *buf, size_t len) {
        static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB" };
        double v = (double) bytes;
        size_t i = 0;
        while (v >= 1000.0 && i + 1 < ELEMENTSOF(units)) {
                v /= 1024.0;
                i++;
        }
        snprintf(buf, len, "%0.3g %s", v, units[i]);
}

/* qemu-img builds its JSON from QEMU's dictionary object, a hash table
 * of 512 buckets, and prints each object's members bucket by bucket,
 * the member added last first within a bucket. Scripts that grep, sed or
 * diff the text see that order, so the members here are added in the
 * order QEMU's schema adds them and printed in the dictionary's order;
 * the text (four-space indentation, ": ", ",\n", \uXXXX escapes for
 * everything outside printable ASCII) is QEMU's too. Objects nest to a
 * fixed depth set by this file, never by the image. */
#define QDICT_BUCKETS 512u
#define QJ_MAX_MEMBERS 16

struct qj_member {
        const char *key;        /* static */
        char *value;            /* the member's JSON text, owned */
        size_t index;           /* the order it was added in */
};

struct qj_object {
        struct qj_member members[QJ_MAX_MEMBERS];
        size_t n;
        unsigned depth;         /* 0 for the outermost value */
        bool oom;
};

/* The hash QEMU's dictionary uses (gdbm's, by way of tdb). */
static unsigned qdict_bucket(const char *key) {
        uint32_t v = 0x238F13AFu * (uint32_t) strlen(key);
        for (uint32_t i = 0; key[i]; i++)
                v += (uint32_t) (unsigned char) key[i] << (i * 5 % 24);
        return (1103515243u * v + 12345u) % QDICT_BUCKETS;
}

static void qj_indent(FILE *f, unsigned depth) {
        for (unsigned k = 0; k < depth; k++)
                fputs("    ", f);
}

/* One code point of QEMU's "modified UTF-8" at 'p': returns the bytes it
 * takes and the code point in '*ret_cp', -1 for a malformed sequence
 * (which QEMU prints as U+FFFD): a stray byte is one malformed unit, a
 * sequence cut short ends before the byte that cuts it. */
static size_t utf8_next(const unsigned char *p, int32_t *ret_cp) {
        unsigned n;
        uint32_t cp;
        if (p[0] < 0x80) {
                *ret_cp = p[0];
                return 1;
        } else if ((p[0] & 0xe0) == 0xc0) {
                n = 2;
                cp = p[0] & 0x1f;
        } else if ((p[0] & 0xf0) == 0xe0) {
                n = 3;
                cp = p[0] & 0x0f;
        } else if ((p[0] & 0xf8) == 0xf0) {
                n = 4;
                cp = p[0] & 0x07;
        } else {
                *ret_cp = -1;
                return 1;
        }
        for (unsigned k = 1; k < n; k++) {
                if ((p[k] & 0xc0) != 0x80) {
                        *ret_cp = -1;
                        return k;
                }
                cp = cp << 6 | (p[k] & 0x3f);
        }
        static const uint32_t min[] = { 0, 0, 0x80, 0x800, 0x10000 };
        if (n == 2 && cp == 0)
                *ret_cp = 0; /* "\xC0\x80", modified UTF-8's NUL */
        else if (cp < min[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
                *ret_cp = -1;
        else
                *ret_cp = (int32_t) cp;
        return n;
}

static void qj_put_string(FILE *f, const char *s) {
        fputc('"', f);
        for (const unsigned char *p = (const unsigned char *) s; *p;) {
                int32_t cp;
                p += utf8_next(p, &cp);
                switch (cp) {
                case '"':
                        fputs("\\\"", f);
                        break;
                case '\\':
                        fputs("\\\\", f);
                        break;
                case '\b':
                        fputs("\\b", f);
                        break;
                case '\f':
                        fputs("\\f", f);
                        break;
                case '\n':
                        fputs("\\n", f);
                        break;
                case '\r':
                        fputs("\\r", f);
                        break;
                case '\t':
                        fputs("\\t", f);
                        break;
                default:
                        if (cp < 0)
                                cp = 0xfffd;
                        if (cp > 0xffff)
                                fprintf(f, "\\u%04X\\u%04X", (unsigned) (0xd800 + ((cp - 0x10000) >> 10)),
                                        (unsigned) (0xdc00 + ((cp - 0x10000) & 0x3ff)));
                        else if (cp < 0x20 || cp >= 0x7f)
                                fprintf(f, "\\u%04X", (unsigned) cp);
                        else
                                fputc(cp, f);
                }
        }
        fputc('"', f);
}

static void qj_init(struct qj_object *o, unsigned depth) {
        *o = (struct qj_object) { .depth = depth };
}

static void qj_done(struct qj_object *o) {
        for (size_t k = 0; k < o->n; k++)
                free(o->members[k].value);
        o->n = 0;
}

/* Takes ownership of 'value' (NULL: out of memory). */
static void qj_add_text(struct qj_object *o, const char *key, char *value) {
        assert(o->n < QJ_MAX_MEMBERS);
        if (!value) {
                o->oom = true;
                return;
        }
        o->members[o->n] = (struct qj_member) { .key = key, .value = value, .index = o->n };
        o->n++;
}

static void qj_add_uint(struct qj_object *o, const char *key, uint64_t v) {
        qj_add_text(o, key, strdup_printf("%" PRIu64, v));
}

static void qj_add_bool(struct qj_object *o, const char *key, bool v) {
        qj_add_text(o, key, strdup(v ? "true" : "false"));
}

static void qj_add_string(struct qj_object *o, const char *key, const char *s) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (!f) {
                o->oom = true;
                return;
        }
        qj_put_string(f, s);
        if (fclose(f) != 0) {
                free(text);
                text = NULL;
        }
        qj_add_text(o, key, text);
}

static int qj_member_cmp(const void *a, const void *b) {
        const struct qj_member *x = a, *y = b;
        unsigned bx = qdict_bucket(x->key), by = qdict_bucket(y->key);
        if (bx != by)
                return bx < by ? -1 : 1;
        /* Within a bucket the member added later comes first. */
        return x->index < y->index ? 1 : -1;
}

/* The object's text, as QEMU prints it at its depth; empties 'o'.
 * NULL when out of memory. */
static char *qj_finish(struct qj_object *o) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = o->oom ? NULL : open_memstream(&text, &len);
        if (f) {
                /* qsort is not stable, but the order is total: indexes
                 * differ. */
                qsort(o->members, o->n, sizeof(o->members[0]), qj_member_cmp);
                fputc('{', f);
                for (size_t k = 0; k < o->n; k++) {
                        fputs(k ? ",\n" : "\n", f);
                        qj_indent(f, o->depth + 1);
                        qj_put_string(f, o->members[k].key);
                        fprintf(f, ": %s", o->members[k].value);
                }
                fputc('\n', f);
                qj_indent(f, o->depth);
                fputc('}', f);
                if (fclose(f) != 0) {
                        free(text);
                        text = NULL;
                }
        }
        qj_done(o);
        return text;
}

/* A list of texts as QEMU prints it at 'depth'. Takes ownership of the
 * elements. NULL when out of memory (or an element is NULL). */
static char *qj_list(char **elements, size_t n, unsigned depth) {
        char *text = NULL;
        size_t len = 0;
        bool ok = true;
        for (size_t k = 0; k < n; k++)
                ok = ok && elements[k];
        FILE *f = ok ? open_memstream(&text, &len) : NULL;
        if (f) {
                fputc('[', f);
                for (size_t k = 0; k < n; k++) {
                        fputs(k ? ",\n" : "\n", f);
                        qj_indent(f, depth + 1);
                        fputs(elements[k], f);
                }
                fputc('\n', f);
                qj_indent(f, depth);
                fputc(']', f);
                if (fclose(f) != 0) {
                        free(text);
                        text = NULL;
                }
        }
        for (size_t k = 0; k < n; k++)
                free(elements[k]);
        return text;
}

/* SnapshotInfo's members, in the schema's order. */
static char *snapshot_json(const struct vh_image_snapshot *sn, unsigned depth) {
        struct qj_object o;
        qj_init(&o, depth);
        qj_add_string(&o, "id", sn->id);
        qj_add_string(&o, "name", sn->name);
        qj_add_uint(&o, "vm-state-size", sn->vm_state_size);
        qj_add_uint(&o, "date-sec", (uint64_t) sn->date_sec);
        qj_add_uint(&o, "date-nsec", sn->date_nsec);
        qj_add_uint(&o, "vm-clock-sec", sn->vm_clock_nsec / 1000000000);
        qj_add_uint(&o, "vm-clock-nsec", sn->vm_clock_nsec % 1000000000);
        if (sn->icount != UINT64_MAX)
                qj_add_uint(&o, "icount", sn->icount);
        return qj_finish(&o);
}

static char *snapshots_json(const struct vh_image_info *i, unsigned depth) {
        char **elements = calloc(i->n_snapshots, sizeof(char *));
        if (!elements)
                return NULL;
        for (size_t k = 0; k < i->n_snapshots; k++)
                elements[k] = snapshot_json(&i->snapshots[k], depth + 1);
        char *text = qj_list(elements, i->n_snapshots, depth);
        free(elements);
        return text;
}

/* The table 'qemu-img snapshot -l' and 'qemu-img info' print: fixed
 * columns, the date in local time, the VM clock as hh:mm:ss.mmm. */
static void snapshots_human(FILE *f, const struct vh_image_snapshot *list, size_t n) {
        fprintf(f, "%-9s %-17s %7s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
        for (size_t k = 0; k < n; k++) {
                const struct vh_image_snapshot *sn = &list[k];
                char size[32], date[32] = "", clock[32], icount[32] = "";
                human_size(sn->vm_state_size, size, sizeof(size));
                time_t t = (time_t) sn->date_sec;
                struct tm tm;
                if (localtime_r(&t, &tm))
                        strftime(date, sizeof(date), "%Y-%m-%d %H:%M:%S", &tm);
                uint64_t secs = sn->vm_clock_nsec / 1000000000;
                snprintf(clock, sizeof(clock), "%02d:%02d:%02d.%03d", (int) (secs / 3600), (int) ((secs / 60) % 60),
                         (int) (secs % 60), (int) ((sn->vm_clock_nsec / 1000000) % 1000));
                if (sn->icount != UINT64_MAX)
                        snprintf(icount, sizeof(icount), "%" PRIu64, sn->icount);
                fprintf(f, "%-9s %-17s %7s%20s%13s%11s\n", sn->id, sn->name, size, date, clock, icount);
        }
}

int vh_image_snapshots_format(const struct vh_image_snapshot *list, size_t n, char **ret_text,
                              struct vh_error *err) {
        char *text = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&text, &len);
        if (!f)
                return vh_error_set(err, -ENOMEM, "out of memory");
        fprintf(f, "Snapshot list:\n");
        snapshots_human(f, list, n);
        if (fclose(f) != 0 || !text) {
                free(text);
                return vh_error_set(err, -ENOMEM, "out of memory");
        }
        *ret_text = text;
        return 0;
}

/* ImageInfo's members in the schema's order (filename, format,
 * dirty-flag, actual-size, virtual-size, cluster-size, ..., backing
 * names, snapshots, format-specific); qemu-img prints them in its
 * dictionary's order (see above). */
static char *info_json(const struct vh_image_info *i, unsigned depth) {
        struct qj_object o;
        qj_init(&o, depth);
        qj_add_string(&o, "filename", i->filename);
        qj_add_string(&o, "format", vh_image_format_to_string(i->format));
        qj_add_bool(&o, "dirty-flag", i->dirty_flag);
        qj_add_uint(&o, "actual-size", i->actual_size);
        qj_add_uint(&o, "virtual-size", i->virtual_size);
        if (i->cluster_size)
                qj_add_uint(&o, "cluster-size", i->cluster_size);
        if (i->backing_filename) {
                qj_add_string(&o, "backing-filename", i->backing_filename);
                if (i->full_backing_filename)
                        qj_add_string(&o, "full-backing-filename", i->full_backing_filename);
                if (i->backing_filename_format)
                        qj_add_string(&o, "backing-filename-format", i->backing_filename_format);
        }
        if (i->n_snapshots > 0)
                qj_add_text(&o, "snapshots", snapshots_json(i, depth + 1));
        if (i->format == VH_IMAGE_FORMAT_QCOW2) {
                /* ImageInfoSpecificQCow2: compat, extended-l2,
                 * lazy-refcounts, corrupt, refcount-bits, compression-type;
                 * a v2 image has no feature bits to show. */
                struct qj_object data;
                qj_init(&data, depth + 2);
                qj_add_string(&data, "compat", i->qcow2_version >= 3 ? "1.1" : "0.10");
                if (i->qcow2_version >= 3) {
                        qj_add_bool(&data, "extended-l2", i->extended_l2);
                        qj_add_bool(&data, "lazy-refcounts", i->lazy_refcounts);
                        qj_add_bool(&data, "corrupt", i->corrupt);
                }
                qj_add_uint(&data, "refcount-bits", i->refcount_bits);
                qj_add_string(&data, "compression-type", i->compression_type);

                struct qj_object spec;
                qj_init(&spec, depth + 1);
                qj_add_string(&spec, "type", "qcow2");
                qj_add_text(&spec, "data", qj_finish(&data));
                qj_add_text(&o, "format-specific", qj_finish(&spec));
        }
        return qj_finish(&o);
}

static int info_human(FILE *f, const struct vh_image_info *i) {
        char vs[32], as[32];
        human_size(i->virtual_size, vs, sizeof(vs));
        human_size(i->actual_size, as, sizeof(as));

        fprintf(f, "image: %s\n", i->filename);
        fprintf(f, "file format: %s\n", vh_image_format_to_string(i->format));
        fprintf(f, "virtual size: %s (%" PRIu64 " bytes)\n", vs, i->virtual_size);
        fprintf(f, "disk size: %s\n", as);
        if (i->cluster_size)
                fprintf(f, "cluster_size: %" PRIu32 "\n", i->cluster_size);
        if (i->backing_filename) {
                fprintf(f, "backing file: %s", i->backing_filename);
                if (i->full_backing_filename && !streq(i->full_backing_filename, i->backing_filename))
                        fprintf(f, " (actual path: %s)", i->full_backing_filename);
                fputc('\n', f);
                if (i->backing_filename_format)
                        fprintf(f, "backing file format: %s\n", i->backing_filename_format);
        }
        if (i->dirty_flag)
                fprintf(f, "cleanly shut down: no\n");
        if (i->n_snapshots > 0) {
                fprintf(f, "Snapshot list:\n");
                snapshots_human(f, i->snapshots, i->n_snapshots);
        }
        if (i->format == VH_IMAGE_FORMAT_QCOW2) {
                fprintf(f, "Format specific information:\n");
                fprintf(f, "    compat: %s\n", i->qcow2_version >= 3 ? "1.1" : "0.10");
                fprintf(f, "    compression type: %s\n", i->compression_type);
                if (i->qcow2_version >= 3)
                        fprintf(f, "    lazy refcounts: %s\n", i->lazy_refcounts ? "true" : "false");
                fprintf(f, "    refcount bits: %u\n", i->refcount_bits);
                if (i->qcow2_version >= 3) {
                        fprintf(f, "    corrupt: %s\n", i->corrupt ? "true" : "false");
                        fprintf(f, "    extended l2: %s\n", i->extended_l2 ? "true" : "false");
                }
        }
        return ferror(f) ? -ENOMEM : 0;
}

int vh_image_info_format(struct vh_image *img, enum vh_image_info_output output, bool backing_chain,
                         char **ret_text, struct vh_error *err) {
        _cleanup_free_ char *text = NULL;
        size_t text_len = 0;
        _cleanup_fclose_ FILE *f = NULL;
        char *elements[VH_IMAGE_MAX_CHAIN_DEPTH + 1] = {};
        size_t n = 0;
        int r = 0;

        if (output != VH_IMAGE_INFO_JSON) {
                f = open_memstream(&text, &text_len);
                if (!f)
                        return vh_error_set(err, -ENOMEM, "out of memory");
        }

        for (struct vh_image *x = img; x; x = backing_chain ? x->backing : NULL) {
                if (n == VH_IMAGE_MAX_CHAIN_DEPTH + 1) {
                        r = vh_error_set(err, -ELOOP, "%s: the backing chain is deeper than %d images",
                                         img->filename, VH_IMAGE_MAX_CHAIN_DEPTH);
                        break;
                }
                struct vh_image_info *info;
                r = vh_image_get_info(x, &info, err);
                if (r < 0)
                        break;
                if (output == VH_IMAGE_INFO_JSON) {
                        /* In the array of --backing-chain each image is
                         * one level deeper. */
                        elements[n] = info_json(info, backing_chain ? 1 : 0);
                        if (!elements[n])
                                r = -ENOMEM;
                } else {
                        if (x != img)
                                fputc('\n', f);
                        r = info_human(f, info);
                }
                n++;
                vh_image_info_free(info);
                if (r < 0)
                        break;
        }

        if (output == VH_IMAGE_INFO_JSON) {
                if (r < 0) {
                        for (size_t k = 0; k < n; k++)
                                free(elements[k]);
                        return r == -ENOMEM ? vh_error_set(err, r, "out of memory") : r;
                }
                char *s = backing_chain ? qj_list(elements, n, 0) : elements[0];
                if (!s)
                        return vh_error_set(err, -ENOMEM, "out of memory");
                *ret_text = s;
                return 0;
        }
        if (r < 0)
                return r == -ENOMEM ? vh_error_set(err, r, "out of memory") : r;
        if (fclose(TAKE_PTR(f)) != 0)
                return vh_error_set(err, -ENOMEM, "out of memory");
        *ret_text = TAKE_PTR(text);
        return 0;
}
