/* image/measure.c: 'img measure': the size a new raw or qcow2 image
 * would take, either for a given virtual size or to hold what a source
 * image shows a guest, computed as 'qemu-img measure' computes it:
 *   required         metadata of a fully allocated image plus the data
 *                    clusters the source really has (zero ranges skipped)
 *   fully allocated  metadata plus every data cluster
 * The metadata is header, L2 tables, L1 table and the refcount blocks and
 * table that count all of them (a fixed point, qcow2-meta.c). */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "base/macro.h"
#include "image/inspect.h"

/* Bytes of a qcow2 file with every cluster of 'size' bytes allocated. */
static uint64_t prealloc_size(uint64_t size, uint64_t cs, unsigned refcount_order, bool extl2) {
        uint64_t aligned = ALIGN_UP(size, cs);
        uint64_t l2e = extl2 ? 16 : 8;
        uint64_t meta = cs; /* header */
        uint64_t nl2e = ALIGN_UP(aligned / cs, cs / l2e);
        meta += nl2e * l2e;
        uint64_t nl1e = ALIGN_UP(nl2e * l2e / cs, cs / 8);
        meta += nl1e * 8;
        meta += qcow2_refcount_metadata_size((meta + aligned) / cs, cs, refcount_order, NULL, NULL);
        return meta + aligned;
}

/* Room for the source's persistent bitmaps in an image with clusters of
 * 'cs' bytes: each bitmap whole, its table, and the directory. */
static int bitmaps_size(struct vh_image *src, uint64_t cs, uint64_t *ret, struct vh_error *err) {
        _cleanup_(qcow2_meta_freep) struct qcow2_meta *m = NULL;
        int r = qcow2_meta_load(src->fd, src->filename, QCOW2_META_BITMAPS, &m, err);
        if (r < 0)
                return image_error_prefix(err, r, src->filename);
        uint64_t total = 0, dir = 0;
        for (uint32_t i = 0; i < m->n_bitmaps; i++) {
                const struct qcow2_bitmap_entry *b = &m->bitmaps[i];
                if (b->granularity_bits > 63)
                        return vh_error_set(err, -EINVAL, "%s: bitmap '%s' has granularity_bits %u", src->filename,
                                            b->name, b->granularity_bits);
                uint64_t gran = UINT64_C(1) << b->granularity_bits;
                uint64_t bytes = DIV_ROUND_UP(DIV_ROUND_UP(src->virtual_size, gran), (uint64_t) 8);
                uint64_t clusters = DIV_ROUND_UP(bytes, cs);
                total += clusters * cs + ALIGN_UP(clusters * 8, cs);
                dir += ALIGN_UP(24 + (uint64_t) strlen(b->name), (uint64_t) 8);
        }
        *ret = total + ALIGN_UP(dir, cs);
        return 0;
}

/* Bytes of data clusters a copy of 'src' needs: clusters with data in
 * them, found with the block status of the whole chain. */
static int required_data(struct vh_image *src, uint64_t cs, uint64_t *ret, struct vh_error *err) {
        _cleanup_(bstat_chain_freep) struct bstat_chain *c = NULL;
        int r = bstat_chain_new(src, &c, err);
        if (r < 0)
                return r;
        uint64_t size = src->virtual_size, required = 0;
        for (uint64_t offset = 0; offset < size;) {
                struct bstat s;
                r = bstat_above(c, src, offset, size - offset, &s, err);
                if (r < 0)
                        return image_error_prefix(err, r, "Unable to get block status");
                if (s.pnum == 0)
                        return vh_error_set(err, -EIO, "Unable to get block status at offset %" PRIu64, offset);
                uint64_t pnum = s.pnum;
                if (s.flags & BSTAT_ZERO) {
                        /* nothing to copy */
                } else if ((s.flags & (BSTAT_DATA | BSTAT_ALLOCATED)) == (BSTAT_DATA | BSTAT_ALLOCATED)) {
                        /* Whole clusters; the next step starts after this
                         * one. qemu-img also adds the offset into the
                         * cluster, which overcounts a range that starts
                         * mid-cluster; kept, so the numbers agree. */
                        pnum = ALIGN_UP(offset + pnum, cs) - offset;
                        required += offset % cs + pnum;
                }
                offset += pnum;
        }
        *ret = required;
        return 0;
}

int vh_image_measure(struct vh_image *src, const struct vh_image_measure_options *opts,
                     struct vh_image_measure_result *ret, struct vh_error *err) {
        struct vh_image_measure_result res = {};

        if (opts->format == VH_IMAGE_FORMAT_RAW) {
                res.required = src ? src->virtual_size : ALIGN_UP(opts->size, (uint64_t) 512);
                res.fully_allocated = res.required;
                *ret = res;
                return 0;
        }
        if (opts->format != VH_IMAGE_FORMAT_QCOW2)
                return vh_error_set(err, -EINVAL, "unknown output format");

        uint64_t cs = opts->cluster_size ? opts->cluster_size : UINT64_C(1) << QCOW2_DEFAULT_CLUSTER_BITS;
        unsigned rb = opts->refcount_bits ? opts->refcount_bits : 16;
        unsigned version = opts->version ? opts->version : 3;
        if (cs < 512 || cs > (UINT64_C(2) << 20) || (cs & (cs - 1)))
                return vh_error_set(err, -EINVAL, "Cluster size must be a power of two between 512 and 2048k");
        if (opts->extended_l2 && cs < (UINT64_C(1) << QCOW2_EXTL2_MIN_CLUSTER_BITS))
                return vh_error_set(err, -EINVAL, "Extended L2 entries are only supported with cluster sizes of at "
                                                  "least 16384 bytes");
        if (rb > 64 || (rb & (rb - 1)))
                return vh_error_set(err, -EINVAL, "Refcount width must be a power of two and may not exceed 64 bits");
        if (version == 2 && rb != 16)
                return vh_error_set(err, -EINVAL, "Different refcount widths than 16 bits require compatibility "
                                                  "level 1.1 or above (use compat=1.1 or greater)");
        unsigned order = (unsigned) __builtin_ctz(rb);
        if (opts->size > VH_IMAGE_MAX_VIRTUAL_SIZE || (src && src->virtual_size > VH_IMAGE_MAX_VIRTUAL_SIZE))
                return vh_error_set(err, -EFBIG, "virtual size is larger than %" PRIu64 " bytes",
                                    VH_IMAGE_MAX_VIRTUAL_SIZE);

        uint64_t virtual_size, required = 0;
        if (src) {
                virtual_size = ALIGN_UP(src->virtual_size, cs);
                if (opts->backing)
                        /* How much the new backing file shares with the
                         * source is unknown: assume nothing. */
                        required = virtual_size;
                else {
                        int r = required_data(src, cs, &required, err);
                        if (r < 0)
                                return r;
                }
        } else
                virtual_size = ALIGN_UP(opts->size, cs);
        if (opts->preallocate_data)
                required = virtual_size;

        res.fully_allocated = prealloc_size(virtual_size, cs, order, opts->extended_l2);
        res.required = res.fully_allocated - virtual_size + required;
        if (src && version >= 3 && src->format == VH_IMAGE_FORMAT_QCOW2) {
                /* Bitmaps only when both the source and the new image can
                 * hold them: qcow2 version 3. */
                _cleanup_(qcow2_meta_freep) struct qcow2_meta *m = NULL;
                int r = qcow2_meta_load(src->fd, src->filename, 0, &m, err);
                if (r < 0)
                        return image_error_prefix(err, r, src->filename);
                if (m->h.version >= 3) {
                        res.has_bitmaps = true;
                        r = bitmaps_size(src, cs, &res.bitmaps, err);
                        if (r < 0)
                                return r;
                }
        }
        *ret = res;
        return 0;
}
