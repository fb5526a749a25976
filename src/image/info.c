/* image/info.c: 'img info' output, in the two shapes 'qemu-img info'
 * prints: human-readable text and JSON with qemu-img's field names, so
 * scripts written against qemu-img keep working. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/json-writer.h"
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

static void snapshots_json(struct json_writer *w, const struct vh_image_info *i) {
        json_key(w, "snapshots");
        json_array_begin(w);
        for (size_t k = 0; k < i->n_snapshots; k++) {
                const struct vh_image_snapshot *sn = &i->snapshots[k];
                json_object_begin(w);
                if (sn->icount != UINT64_MAX)
                        json_kv_uint(w, "icount", sn->icount);
                json_kv_uint(w, "vm-clock-nsec", sn->vm_clock_nsec % 1000000000);
                json_kv_string(w, "name", sn->name);
                json_kv_uint(w, "date-sec", (uint64_t) sn->date_sec);
                json_kv_uint(w, "date-nsec", sn->date_nsec);
                json_kv_uint(w, "vm-clock-sec", sn->vm_clock_nsec / 1000000000);
                json_kv_string(w, "id", sn->id);
                json_kv_uint(w, "vm-state-size", sn->vm_state_size);
                json_object_end(w);
        }
        json_array_end(w);
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

static void info_json(struct json_writer *w, const struct vh_image_info *i) {
        json_object_begin(w);
        if (i->n_snapshots > 0)
                snapshots_json(w, i);
        json_kv_string(w, "filename", i->filename);
        json_kv_string(w, "format", vh_image_format_to_string(i->format));
        json_kv_uint(w, "virtual-size", i->virtual_size);
        json_kv_uint(w, "actual-size", i->actual_size);
        if (i->cluster_size)
                json_kv_uint(w, "cluster-size", i->cluster_size);
        if (i->backing_filename) {
                json_kv_string(w, "backing-filename", i->backing_filename);
                if (i->full_backing_filename)
                        json_kv_string(w, "full-backing-filename", i->full_backing_filename);
                if (i->backing_filename_format)
                        json_kv_string(w, "backing-filename-format", i->backing_filename_format);
        }
        json_kv_bool(w, "dirty-flag", i->dirty_flag);
        if (i->format == VH_IMAGE_FORMAT_QCOW2) {
                json_key(w, "format-specific");
                json_object_begin(w);
                json_kv_string(w, "type", "qcow2");
                json_key(w, "data");
                json_object_begin(w);
                json_kv_string(w, "compat", i->qcow2_version >= 3 ? "1.1" : "0.10");
                json_kv_string(w, "compression-type", i->compression_type);
                if (i->qcow2_version >= 3)
                        json_kv_bool(w, "lazy-refcounts", i->lazy_refcounts);
                json_kv_uint(w, "refcount-bits", i->refcount_bits);
                if (i->qcow2_version >= 3) {
                        json_kv_bool(w, "corrupt", i->corrupt);
                        json_kv_bool(w, "extended-l2", i->extended_l2);
                }
                json_object_end(w);
                json_object_end(w);
        }
        json_object_end(w);
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
        struct json_writer w;
        _cleanup_free_ char *text = NULL;
        size_t text_len = 0;
        _cleanup_fclose_ FILE *f = NULL;
        int r = 0;

        if (output == VH_IMAGE_INFO_JSON) {
                json_writer_init(&w, true);
                if (backing_chain)
                        json_array_begin(&w);
        } else {
                f = open_memstream(&text, &text_len);
                if (!f)
                        return vh_error_set(err, -ENOMEM, "out of memory");
        }

        for (struct vh_image *x = img; x; x = backing_chain ? x->backing : NULL) {
                struct vh_image_info *info;
                r = vh_image_get_info(x, &info, err);
                if (r < 0)
                        break;
                if (output == VH_IMAGE_INFO_JSON)
                        info_json(&w, info);
                else {
                        if (x != img)
                                fputc('\n', f);
                        r = info_human(f, info);
                }
                vh_image_info_free(info);
                if (r < 0)
                        break;
        }

        if (output == VH_IMAGE_INFO_JSON) {
                if (backing_chain)
                        json_array_end(&w);
                if (r < 0) {
                        json_writer_free(&w);
                        return r;
                }
                int e;
                char *s = json_writer_finish(&w, &e);
                if (!s)
                        return vh_error_set(err, e, "cannot build the JSON text");
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
