/* image/convert-progress.c: 'img convert -p' moving in qemu-img's steps.
 *
 * Front ends and scripts read qemu-img's progress figures, and qemu-img
 * 7.2 counts differently from vmhost's copy loops: before copying, it
 * walks the source's block status once, cutting it into the pieces its
 * copy will take (a piece never crosses a change of status, its end is
 * moved back to a cluster boundary of the source, data comes in pieces of
 * at most 2 MiB, with -c of one output cluster), and adds up the sectors
 * of the pieces it will copy: data, and zeros too with -S 0. Its figure is
 * then 100 * (sectors of the pieces started so far) / (that sum), shown
 * as each piece starts, and 100 once more at the end. A source with no
 * such piece shows 0 and the final 100 only.
 *
 * vmhost's loops copy in their own windows, in parallel, and report the
 * virtual disk done so far. This module makes the same walk through the
 * same block status (status.c, which follows QEMU's), keeps a cursor in
 * it, and on each report of the loops passes on one figure for each piece
 * that starts below what is done: the same figures in the same order as
 * qemu-img, so the same lines, only grouped in time as vmhost works. The
 * copy loops are not touched; they see one more callback. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "base/macro.h"
#include "image/convert-progress.h"
#include "image/inspect.h"
#include "image/qcow2.h"

/* QEMU asks for the block status of at most this many sectors at a time
 * (BDRV_REQUEST_MAX_SECTORS: INT_MAX bytes, in sectors). */
#define QEMU_MAX_REQUEST_SECTORS (INT32_MAX >> 9)
/* qemu-img's copy buffer, in sectors (2 MiB). */
#define QEMU_BUF_SECTORS UINT64_C(4096)

enum piece_status {
        PIECE_DATA,
        PIECE_ZERO,
        PIECE_BACKING, /* left to the output's backing file (-B) */
};

struct convert_progress {
        int (*progress)(uint64_t done, uint64_t total, void *userdata);
        void *userdata;

        struct vh_image *const *srcs;
        size_t n_srcs;
        struct bstat_chain **chains; /* one per source */
        uint64_t total_sectors;      /* of all sources */
        uint64_t buf_sectors;        /* largest data piece */
        uint64_t cluster_sectors;    /* -c: the output's cluster, else 0 */
        bool count_zeros;            /* -S 0 */
        bool target_has_backing;     /* -B */

        /* The walk: where the next piece starts, up to where the status
         * last asked for holds, and that status. */
        uint64_t sector;
        uint64_t status_end;
        enum piece_status status;

        uint64_t counted; /* sectors of all pieces to be counted */
        uint64_t done;    /* of those, in pieces started so far */
        bool broken;      /* a block status failed during the copy: no more figures */
};

struct convert_progress *convert_progress_free(struct convert_progress *p) {
        if (!p)
                return NULL;
        for (size_t i = 0; p->chains && i < p->n_srcs; i++)
                bstat_chain_free(p->chains[i]);
        free(p->chains);
        free(p);
        return NULL;
}

static uint64_t source_sectors(const struct vh_image *img) {
        return DIV_ROUND_UP(img->virtual_size, (uint64_t) 512);
}

/* The alignment qemu-img keeps the ends of status runs at: the source's
 * cluster (qcow2), else a sector. */
static uint64_t source_alignment(const struct vh_image *img) {
        if (img->format == VH_IMAGE_FORMAT_QCOW2) {
                const struct qcow2_state *s = img->priv;
                return MAX((uint64_t) s->h.cluster_size / 512, (uint64_t) 1);
        }
        return 1;
}

/* The source that holds 'sector', and the sector it starts at. */
static size_t source_at(const struct convert_progress *p, uint64_t sector, uint64_t *ret_start) {
        uint64_t start = 0;
        size_t i = 0;
        for (; i + 1 < p->n_srcs; i++) {
                uint64_t n = source_sectors(p->srcs[i]);
                if (sector < start + n)
                        break;
                start += n;
        }
        *ret_start = start;
        return i;
}

/* The length of the piece starting at p->sector, in sectors, with its
 * status in p->status; asks for the block status where the last one ends. */
static int next_piece(struct convert_progress *p, uint64_t *ret_n, struct vh_error *err) {
        uint64_t n = MIN(p->total_sectors - p->sector, (uint64_t) QEMU_MAX_REQUEST_SECTORS);

        if (p->status_end <= p->sector) {
                uint64_t start;
                size_t i = source_at(p, p->sector, &start);
                struct vh_image *src = p->srcs[i];
                uint64_t offset = (p->sector - start) * 512;
                uint64_t bytes = MIN(n * 512, src->virtual_size - offset);
                struct bstat s;
                int r;
                /* With -B qemu-img asks about the source's own layer only
                 * (down to its backing file). */
                if (p->target_has_backing && src->backing)
                        r = bstat_layer(p->chains[i], src, offset, bytes, &s, err);
                else
                        r = bstat_above(p->chains[i], src, offset, bytes, &s, err);
                if (r < 0)
                        return image_error_prefix(err, r, "error while reading block status");
                if (s.pnum == 0)
                        return vh_error_set(err, -EIO, "error while reading block status at offset %" PRIu64,
                                            offset);
                n = DIV_ROUND_UP(s.pnum, (uint64_t) 512);
                uint64_t tail = (p->sector - start + n) % source_alignment(src);
                if (n > tail)
                        n -= tail;
                if (s.flags & BSTAT_ZERO)
                        p->status = PIECE_ZERO;
                else if (s.flags & BSTAT_DATA)
                        p->status = PIECE_DATA;
                else
                        p->status = p->target_has_backing ? PIECE_BACKING : PIECE_DATA;
                p->status_end = p->sector + n;
        }

        n = MIN(n, p->status_end - p->sector);
        if (p->status == PIECE_DATA)
                n = MIN(n, p->buf_sectors);
        if (p->cluster_sectors) {
                /* Compressed clusters are written whole: a shorter piece
                 * becomes one cluster of data. */
                if (n < p->cluster_sectors) {
                        n = MIN(p->cluster_sectors, p->total_sectors - p->sector);
                        p->status = PIECE_DATA;
                } else
                        n -= n % p->cluster_sectors;
        }
        *ret_n = n;
        return 0;
}

static bool piece_counts(const struct convert_progress *p) {
        return p->status == PIECE_DATA || (p->count_zeros && p->status == PIECE_ZERO);
}

int convert_progress_new(struct vh_image *const *srcs, size_t n_srcs, uint64_t compress_cluster, bool count_zeros,
                         bool target_has_backing, int (*progress)(uint64_t done, uint64_t total, void *userdata),
                         void *userdata, struct convert_progress **ret, struct vh_error *err) {
        _cleanup_(convert_progress_freep) struct convert_progress *p = calloc(1, sizeof(*p));
        if (!p)
                return vh_error_set(err, -ENOMEM, "out of memory");
        p->chains = calloc(n_srcs ? n_srcs : 1, sizeof(*p->chains));
        if (!p->chains)
                return vh_error_set(err, -ENOMEM, "out of memory");
        p->srcs = srcs;
        p->n_srcs = n_srcs;
        p->progress = progress;
        p->userdata = userdata;
        p->count_zeros = count_zeros;
        p->target_has_backing = target_has_backing;
        p->cluster_sectors = compress_cluster / 512;
        /* With -c qemu-img copies one output cluster at a time. */
        p->buf_sectors = p->cluster_sectors ? p->cluster_sectors : QEMU_BUF_SECTORS;
        for (size_t i = 0; i < n_srcs; i++) {
                int r = bstat_chain_new(srcs[i], &p->chains[i], err);
                if (r < 0)
                        return r;
                p->total_sectors += source_sectors(srcs[i]);
        }

        /* The first walk: what will be counted. */
        while (p->sector < p->total_sectors) {
                uint64_t n;
                int r = next_piece(p, &n, err);
                if (r < 0)
                        return r;
                if (piece_counts(p))
                        p->counted += n;
                p->sector += n;
        }
        p->sector = 0;
        p->status_end = 0;
        *ret = TAKE_PTR(p);
        return 0;
}

int convert_progress_report(uint64_t done, uint64_t total, void *userdata) {
        struct convert_progress *p = userdata;
        int r;

        if (!p->progress)
                return 0;
        /* Pieces that start below 'done' (all at the end). */
        uint64_t below = done >= total ? p->total_sectors : done / 512;
        bool reported = false;
        while (!p->broken && p->sector < below) {
                uint64_t n;
                struct vh_error err = {};
                if (next_piece(p, &n, &err) < 0) {
                        /* The copy reports its own errors; the figures
                         * just stop here. */
                        p->broken = true;
                        break;
                }
                bool counts = piece_counts(p);
                /* The copy (not the first walk) takes zeros it writes
                 * (-S 0) in 2 MiB pieces too; the sum stays the same. */
                if (p->count_zeros && p->status == PIECE_ZERO)
                        n = MIN(n, p->buf_sectors);
                p->sector += n;
                if (!counts)
                        continue;
                p->done += n;
                reported = true;
                r = p->progress(p->done * 512, p->counted * 512, p->userdata);
                if (r)
                        return r;
        }
        if (done >= total)
                /* qemu-img's last line, also with nothing counted: 0 of 0
                 * reads as 100. */
                return p->progress(p->counted * 512, p->counted * 512, p->userdata);
        if (reported)
                return 0;
        /* Nothing new: the caller still gets the chance to cancel, with
         * the last figure again. Before the first piece that is 0 of the
         * total (0 of 1 with nothing to count, so that 100 shows only at
         * the end). */
        return p->progress(p->done * 512, p->counted ? p->counted * 512 : 512, p->userdata);
}
