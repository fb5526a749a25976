/* image/map.c: 'img map': what each range of the guest disk is, through
 * the backing chain, in the entries 'qemu-img map' prints.
 *
 * Each step asks the layers from the top down (status.c) until one has
 * data or zeros for the range; the entry records which layer answered
 * (depth), whether that layer allocated it (present), whether it reads as
 * zeros and/or holds data, and where the data lies in which file. Steps
 * that continue each other (same flags, same layer, same file, and file
 * offsets that follow on) are merged into one entry, as qemu-img merges
 * them, so the output is identical entry for entry. */
#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "base/macro.h"
#include "image/inspect.h"

static int map_step(struct bstat_chain *c, struct vh_image *top, uint64_t offset, uint64_t bytes,
                    struct vh_image_map_entry *ret, struct vh_error *err) {
        struct vh_image *img = top;
        unsigned depth = 0;
        struct bstat s;
        for (;;) {
                int r = bstat_layer(c, img, offset, bytes, &s, err);
                if (r < 0)
                        return r;
                if (s.pnum == 0)
                        return vh_error_set(err, -EIO, "%s: no status at offset %" PRIu64, img->filename, offset);
                bytes = s.pnum;
                if (s.flags & (BSTAT_DATA | BSTAT_ZERO))
                        break;
                if (!img->backing) {
                        s.flags = 0;
                        break;
                }
                img = img->backing;
                depth++;
        }
        bool has_offset = s.flags & BSTAT_OFFSET_VALID;
        *ret = (struct vh_image_map_entry) {
                .start = offset,
                .length = bytes,
                .depth = depth,
                .present = s.flags & BSTAT_ALLOCATED,
                .zero = s.flags & BSTAT_ZERO,
                .data = s.flags & BSTAT_DATA,
                .has_offset = has_offset,
                .offset = has_offset ? s.map : 0,
                .filename = has_offset && s.file ? s.file->filename : NULL,
        };
        return 0;
}

static bool mergeable(const struct vh_image_map_entry *a, const struct vh_image_map_entry *b) {
        if (a->length == 0)
                return false;
        if (a->zero != b->zero || a->data != b->data || a->depth != b->depth || a->present != b->present ||
            !a->filename != !b->filename || a->has_offset != b->has_offset)
                return false;
        if (a->filename && !streq(a->filename, b->filename))
                return false;
        if (a->has_offset && a->offset + a->length != b->offset)
                return false;
        return true;
}

int vh_image_map_walk(struct vh_image *img, uint64_t start, uint64_t length, bool human,
                      int (*emit)(const struct vh_image_map_entry *e, const struct vh_image_map_entry *next,
                                  void *userdata),
                      void *userdata, struct vh_error *err) {
        _cleanup_(bstat_chain_freep) struct bstat_chain *c = NULL;
        int r = bstat_chain_new(img, &c, err);
        if (r < 0)
                return r;

        uint64_t end = img->virtual_size;
        if (start > end)
                start = end;
        if (length < end - start)
                end = start + length;

        struct vh_image_map_entry curr = { .start = start }, next;
        while (curr.start + curr.length < end) {
                uint64_t offset = curr.start + curr.length;
                r = map_step(c, img, offset, end - offset, &next, err);
                if (r < 0)
                        return r;
                if (mergeable(&curr, &next)) {
                        curr.length += next.length;
                        continue;
                }
                if (curr.length > 0) {
                        r = emit(&curr, &next, userdata);
                        if (r < 0)
                                return r;
                        /* The human format does not tell zeros from
                         * unallocated ranges, and merges them. */
                        if (human && (!next.data || next.zero)) {
                                next.data = false;
                                next.zero = true;
                        }
                }
                curr = next;
        }
        return emit(&curr, NULL, userdata);
}
