/* image/convert-progress.h: convert's progress counted as qemu-img counts
 * it (see convert-progress.c), for vh_image_convert() and
 * vh_image_convert_into() when opts->progress_data_steps is set. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/macro.h"
#include "vmhost/error.h"
#include "vmhost/image.h"

struct convert_progress;

/* Walks the block status of 'srcs' (one after another) once to find the
 * data qemu-img would count, and keeps what is needed to report it step
 * by step: 'progress' and 'userdata' are the caller's. 'compress_cluster'
 * is the output's cluster size with -c, else 0; 'count_zeros' is -S 0;
 * 'target_has_backing' is -B. Fails as qemu-img's first pass does when a
 * block status cannot be read. */
int convert_progress_new(struct vh_image *const *srcs, size_t n_srcs, uint64_t compress_cluster, bool count_zeros,
                         bool target_has_backing, int (*progress)(uint64_t done, uint64_t total, void *userdata),
                         void *userdata, struct convert_progress **ret, struct vh_error *err);
struct convert_progress *convert_progress_free(struct convert_progress *p);
DEFINE_FREE_FUNC(struct convert_progress, convert_progress_free)

/* A progress callback for the copy loops, whose reports (bytes of the
 * virtual disk of all sources, out of their sum) it turns into qemu-img's
 * steps: one report to the caller for each 2 MiB piece of data that
 * starts below 'done' (done and total then count the data bytes, as
 * qemu-img's figure does), and, once done == total, one more report of
 * the end. A report that starts no piece repeats the last figure (a
 * printer shows it once), so that the caller can still cancel. Returns
 * what the caller's callback returned: nonzero cancels. */
int convert_progress_report(uint64_t done, uint64_t total, void *userdata);
