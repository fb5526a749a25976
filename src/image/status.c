/* image/status.c: block status the way QEMU computes it, which is what
 * 'qemu-img map' prints and what 'compare' and 'measure' decide on.
 *
 * For one layer (bstat_layer) the answer is a range with flags:
 *   DATA          the layer holds data there (a data or compressed cluster;
 *                 for raw files, what SEEK_DATA calls data)
 *   ZERO          it reads as zeros (zero clusters, holes in raw files;
 *                 also unallocated ranges with nothing below them)
 *   OFFSET_VALID  'map' is where the range lies in the layer's file
 *   ALLOCATED     this layer answers (DATA or ZERO of its own)
 *   EOF           the range ends at the layer's end
 * Ranges end where the qcow2 tables change type or stop being contiguous
 * in the file, and never cross an L2 table.
 *
 * One rule needs the file system: when the tables count clearly more
 * clusters than the file system has allocated, QEMU takes the image for a
 * "preallocation=metadata" one and asks SEEK_DATA/SEEK_HOLE, for each
 * data range, whether it holds data (RECURSE); a data range in a hole or
 * past the end of the file then reads as zeros (ZERO on top of DATA).
 * qemu-io leaves such holes behind (it writes partial clusters as data
 * plus zeroed space), so this shows up in everyday images.
 *
 * bstat_above() follows a range down the backing chain until a layer
 * answers; ranges past the end of a shorter backing file read as zeros. */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/macro.h"
#include "image/inspect.h"

/* Subcluster types, as the spec's extended L2 section defines them. */
enum sc_type {
        SC_NORMAL,
        SC_COMPRESSED,
        SC_ZERO_PLAIN,
        SC_ZERO_ALLOC,
        SC_UNALLOCATED_PLAIN,
        SC_UNALLOCATED_ALLOC,
        SC_INVALID,
};

struct bstat_layer_state {
        struct vh_image *img;
        struct qcow2_meta *q; /* qcow2 layers only */
        bool prealloc_checked;
        bool metadata_prealloc;
        uint8_t *l2;          /* the last L2 table read */
        uint64_t l2_offset;   /* its offset; 0 when none */
        /* The last data range SEEK_DATA/SEEK_HOLE found in the file. */
        bool data_valid;
        uint64_t data_start, data_end;
};

struct bstat_chain {
        struct bstat_layer_state *layers;
        size_t n;
};

struct bstat_chain *bstat_chain_free(struct bstat_chain *c) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n; i++) {
                qcow2_meta_free(c->layers[i].q);
                free(c->layers[i].l2);
        }
        free(c->layers);
        free(c);
        return NULL;
}

int bstat_chain_new(struct vh_image *top, struct bstat_chain **ret, struct vh_error *err) {
        _cleanup_(bstat_chain_freep) struct bstat_chain *c = calloc(1, sizeof(*c));
        if (!c)
                return vh_error_set(err, -ENOMEM, "out of memory");
        size_t n = 0;
        for (struct vh_image *x = top; x; x = x->backing)
                n++;
        c->layers = calloc(n, sizeof(*c->layers));
        if (!c->layers)
                return vh_error_set(err, -ENOMEM, "out of memory");
        for (struct vh_image *x = top; x; x = x->backing) {
                struct bstat_layer_state *l = &c->layers[c->n++];
                l->img = x;
                if (x->format == VH_IMAGE_FORMAT_QCOW2) {
                        int r = qcow2_meta_load(x->fd, x->filename, 0, &l->q, err);
                        if (r < 0)
                                return image_error_prefix(err, r, x->filename);
                        if (x->snapshot_id) {
                                /* A loaded snapshot (convert -l, measure -l):
                                 * its L1 table, not the header's. */
                                const struct qcow2_state *qs = x->priv;
                                size_t bytes = (size_t) qs->h.l1_size * sizeof(uint64_t);
                                uint64_t *l1 = malloc(bytes ? bytes : 1);
                                if (!l1)
                                        return vh_error_set(err, -ENOMEM, "out of memory");
                                memcpy(l1, qs->l1, bytes);
                                free(l->q->l1);
                                l->q->l1 = l1;
                                l->q->h.l1_size = qs->h.l1_size;
                        }
                        l->l2 = malloc(l->q->h.cluster_size);
                        if (!l->l2)
                                return vh_error_set(err, -ENOMEM, "out of memory");
                }
        }
        *ret = TAKE_PTR(c);
        return 0;
}

static struct bstat_layer_state *find_layer(struct bstat_chain *c, struct vh_image *img) {
        for (size_t i = 0; i < c->n; i++)
                if (c->layers[i].img == img)
                        return &c->layers[i];
        return NULL;
}

/* The file under a layer, as QEMU's file driver answers: SEEK_DATA and
 * SEEK_HOLE, holes read as zeros, the size rounded up to 512. */
static void file_status(struct bstat_layer_state *l, uint64_t offset, uint64_t bytes, struct bstat *ret) {
        uint64_t total = ALIGN_UP(l->img->file_size, (uint64_t) 512);
        int fd = l->img->fd;

        *ret = (struct bstat) { .file = l->img, .map = offset };
        if (offset >= total) {
                ret->flags = BSTAT_EOF;
                return;
        }
        bytes = MIN(bytes, total - offset);

        uint64_t pnum;
        unsigned flags;
        if (l->data_valid && offset >= l->data_start && offset < l->data_end) {
                flags = BSTAT_DATA;
                pnum = l->data_end - offset;
        } else {
                off_t d = lseek(fd, (off_t) offset, SEEK_DATA);
                if (d < 0 && errno == ENXIO) {
                        flags = BSTAT_ZERO; /* a hole up to the end */
                        pnum = bytes;
                } else if (d < 0 || (uint64_t) d < offset) {
                        flags = BSTAT_DATA; /* no information: all data */
                        pnum = bytes;
                } else if ((uint64_t) d > offset) {
                        flags = BSTAT_ZERO;
                        pnum = (uint64_t) d - offset;
                } else {
                        off_t h = lseek(fd, (off_t) offset, SEEK_HOLE);
                        flags = BSTAT_DATA;
                        if (h < 0 || (uint64_t) h <= offset)
                                pnum = bytes;
                        else
                                pnum = (uint64_t) h - offset;
                }
                if (flags == BSTAT_DATA) {
                        l->data_valid = true;
                        l->data_start = offset;
                        l->data_end = offset + pnum;
                }
        }
        ret->flags = flags | BSTAT_OFFSET_VALID | BSTAT_ALLOCATED;
        ret->pnum = MIN(pnum, bytes);
        if (offset + ret->pnum == total)
                ret->flags |= BSTAT_EOF;
}

static enum sc_type subcluster_type(const struct qcow2_header *h, uint64_t entry, uint64_t bitmap, unsigned sc) {
        bool extl2 = h->l2_entry_size == 16;
        if (entry & QCOW2_OFLAG_COMPRESSED)
                return SC_COMPRESSED;
        bool has_offset = (entry & QCOW2_L2E_OFFSET_MASK) != 0;
        if (!extl2) {
                if (entry & QCOW2_OFLAG_ZERO)
                        return has_offset ? SC_ZERO_ALLOC : SC_ZERO_PLAIN;
                return has_offset ? SC_NORMAL : SC_UNALLOCATED_PLAIN;
        }
        if (has_offset) {
                if ((bitmap >> 32) & bitmap)
                        return SC_INVALID;
                if (bitmap & (UINT64_C(1) << (32 + sc)))
                        return SC_ZERO_ALLOC;
                if (bitmap & (UINT64_C(1) << sc))
                        return SC_NORMAL;
                return SC_UNALLOCATED_ALLOC;
        }
        if (bitmap & QCOW2_L2_BITMAP_ALL_ALLOC)
                return SC_INVALID;
        if (bitmap & (UINT64_C(1) << (32 + sc)))
                return SC_ZERO_PLAIN;
        return SC_UNALLOCATED_PLAIN;
}

static unsigned trailing_ones32(uint32_t v) {
        return v == UINT32_MAX ? 32 : (unsigned) __builtin_ctz(~v);
}
static unsigned trailing_zeros32(uint32_t v) {
        return v == 0 ? 32 : (unsigned) __builtin_ctz(v);
}

/* How many subclusters from 'sc_from' on share one type in this entry;
 * -EINVAL for an entry that contradicts itself. */
static int subcluster_range(const struct qcow2_header *h, uint64_t entry, uint64_t bitmap, unsigned sc_from,
                            enum sc_type *ret_type) {
        bool extl2 = h->l2_entry_size == 16;
        unsigned per_cluster = extl2 ? QCOW2_SUBCLUSTERS : 1;
        enum sc_type t = subcluster_type(h, entry, bitmap, sc_from);
        *ret_type = t;
        if (t == SC_INVALID)
                return -EINVAL;
        if (!extl2 || t == SC_COMPRESSED)
                return (int) (per_cluster - sc_from);
        uint32_t below = (uint32_t) ((UINT64_C(1) << sc_from) - 1);
        switch (t) {
        case SC_NORMAL:
                return (int) (trailing_ones32((uint32_t) bitmap | below) - sc_from);
        case SC_ZERO_PLAIN:
        case SC_ZERO_ALLOC:
                return (int) (trailing_ones32((uint32_t) (bitmap >> 32) | below) - sc_from);
        default:
                return (int) (trailing_zeros32(((uint32_t) (bitmap >> 32) | (uint32_t) bitmap) & ~below) - sc_from);
        }
}

/* Subclusters of one type (and, where they have host clusters, contiguous
 * in the file) from entry 'index', subcluster 'sc_index' on, looking at
 * up to 'nb_clusters' entries of 'table'. */
static int count_contiguous(const struct qcow2_header *h, const uint8_t *table, uint64_t index, uint64_t nb_clusters,
                            unsigned sc_index) {
        unsigned per_cluster = h->l2_entry_size == 16 ? QCOW2_SUBCLUSTERS : 1;
        enum sc_type expected = SC_NORMAL, t;
        uint64_t expected_offset = 0;
        bool check_offset = false;
        int count = 0;

        for (uint64_t i = 0; i < nb_clusters; i++) {
                unsigned first = i == 0 ? sc_index : 0;
                const uint8_t *e = table + (index + i) * h->l2_entry_size;
                uint64_t entry = be64_load(e), bitmap = h->l2_entry_size == 16 ? be64_load(e + 8) : 0;
                int n = subcluster_range(h, entry, bitmap, first, &t);
                if (n < 0)
                        return -EIO;
                if (i == 0) {
                        if (t == SC_COMPRESSED)
                                return n; /* compressed clusters go one by one */
                        expected = t;
                        expected_offset = entry & QCOW2_L2E_OFFSET_MASK;
                        check_offset = t == SC_NORMAL || t == SC_ZERO_ALLOC || t == SC_UNALLOCATED_ALLOC;
                } else if (t != expected)
                        break;
                else if (check_offset) {
                        expected_offset += h->cluster_size;
                        if (expected_offset != (entry & QCOW2_L2E_OFFSET_MASK))
                                break;
                }
                count += n;
                if (first + (unsigned) n < per_cluster)
                        break;
        }
        return count;
}

static int qcow2_layer(struct bstat_layer_state *l, uint64_t offset, uint64_t count, struct bstat *ret,
                       struct vh_error *err) {
        struct qcow2_meta *q = l->q;
        const struct qcow2_header *h = &q->h;
        const unsigned cb = h->cluster_bits;
        const bool extl2 = h->l2_entry_size == 16;
        const unsigned sc_bits = extl2 ? cb - 5 : cb;
        const uint64_t cs = h->cluster_size;
        const unsigned l2_bits = (unsigned) __builtin_ctzll(h->l2_entries);

        uint64_t in_cluster = offset & (cs - 1);
        uint64_t l2_index = (offset >> cb) & (h->l2_entries - 1);
        uint64_t available = (h->l2_entries - l2_index) << cb;
        uint64_t needed = MIN(count + in_cluster, available);
        uint64_t l1_index = offset >> (cb + l2_bits);
        enum sc_type type = SC_UNALLOCATED_PLAIN;
        uint64_t host = 0;

        uint64_t l2_offset = l1_index < h->l1_size ? q->l1[l1_index] & QCOW2_L1E_OFFSET_MASK : 0;
        if (l2_offset) {
                if (l2_offset & (cs - 1))
                        return vh_error_set(err, -EIO, "L2 table offset %#" PRIx64 " unaligned (L1 index: %#" PRIx64 ")",
                                            l2_offset, l1_index);
                if (l->l2_offset != l2_offset) {
                        l->l2_offset = 0;
                        int r = qcow2_meta_pread(q, l->l2, cs, l2_offset, err);
                        if (r < 0)
                                return r;
                        l->l2_offset = l2_offset;
                }
                unsigned sc_index = (unsigned) ((offset >> sc_bits) & (extl2 ? QCOW2_SUBCLUSTERS - 1 : 0));
                const uint8_t *e = l->l2 + l2_index * h->l2_entry_size;
                uint64_t entry = be64_load(e), bitmap = extl2 ? be64_load(e + 8) : 0;
                type = subcluster_type(h, entry, bitmap, sc_index);
                if (h->version < 3 && (type == SC_ZERO_PLAIN || type == SC_ZERO_ALLOC))
                        return vh_error_set(err, -EIO,
                                            "Zero cluster entry found in pre-v3 image (L2 offset: %#" PRIx64
                                            ", L2 index: %#" PRIx64 ")",
                                            l2_offset, l2_index);
                if (type == SC_NORMAL || type == SC_ZERO_ALLOC || type == SC_UNALLOCATED_ALLOC) {
                        uint64_t hc = entry & QCOW2_L2E_OFFSET_MASK;
                        if (hc & (cs - 1))
                                return vh_error_set(err, -EIO,
                                                    "Cluster allocation offset %#" PRIx64 " unaligned (L2 offset: %#" PRIx64
                                                    ", L2 index: %#" PRIx64 ")",
                                                    hc, l2_offset, l2_index);
                        host = hc + in_cluster;
                }
                int sc = count_contiguous(h, l->l2, l2_index, DIV_ROUND_UP(needed, cs), sc_index);
                if (sc < 0)
                        return vh_error_set(err, -EIO, "invalid subcluster allocation bitmap (L2 offset: %#" PRIx64
                                            ", L2 index: %#" PRIx64 ")",
                                            l2_offset, l2_index);
                available = ((uint64_t) sc + sc_index) << sc_bits;
        }
        available = MIN(available, needed);

        unsigned flags = 0;
        *ret = (struct bstat) { .pnum = available - in_cluster, .file = l->img };
        if (type == SC_NORMAL || type == SC_ZERO_ALLOC || type == SC_UNALLOCATED_ALLOC) {
                ret->map = host;
                flags |= BSTAT_OFFSET_VALID;
        }
        if (type == SC_ZERO_PLAIN || type == SC_ZERO_ALLOC)
                flags |= BSTAT_ZERO;
        else if (type != SC_UNALLOCATED_PLAIN && type != SC_UNALLOCATED_ALLOC)
                flags |= BSTAT_DATA;
        if (l->metadata_prealloc && (flags & BSTAT_DATA) && (flags & BSTAT_OFFSET_VALID))
                flags |= BSTAT_RECURSE;
        ret->flags = flags;
        return 0;
}

int bstat_layer(struct bstat_chain *c, struct vh_image *img, uint64_t offset, uint64_t bytes, struct bstat *ret,
                struct vh_error *err) {
        struct bstat_layer_state *l = find_layer(c, img);
        if (!l)
                return vh_error_set(err, -EINVAL, "%s: not part of this chain", img->filename);
        uint64_t total = img->virtual_size;

        if (offset >= total) {
                *ret = (struct bstat) { .flags = BSTAT_EOF, .file = img };
                return 0;
        }
        bytes = MIN(bytes, total - offset);
        if (bytes == 0) {
                *ret = (struct bstat) { .file = img };
                return 0;
        }

        if (img->format == VH_IMAGE_FORMAT_RAW) {
                /* The raw format hands the question to its file. */
                file_status(l, offset, bytes, ret);
        } else {
                if (!l->prealloc_checked) {
                        bool p = false;
                        (void) qcow2_meta_detect_metadata_preallocation(l->q, &p);
                        l->metadata_prealloc = p;
                        l->prealloc_checked = true;
                }
                /* QEMU's qcow2 driver takes at most INT_MAX bytes a call. */
                int r = qcow2_layer(l, offset, MIN(bytes, (uint64_t) INT_MAX), ret, err);
                if (r < 0)
                        return image_error_prefix(err, r, img->filename);

                if (ret->flags & (BSTAT_DATA | BSTAT_ZERO))
                        ret->flags |= BSTAT_ALLOCATED;
                else if (!img->backing || offset >= img->backing->virtual_size)
                        /* Nothing below: reads as zeros. */
                        ret->flags |= BSTAT_ZERO;

                if ((ret->flags & BSTAT_RECURSE) && (ret->flags & BSTAT_DATA) && !(ret->flags & BSTAT_ZERO) &&
                    (ret->flags & BSTAT_OFFSET_VALID)) {
                        struct bstat f;
                        file_status(l, ret->map, ret->pnum, &f);
                        if ((f.flags & BSTAT_EOF) && (f.pnum == 0 || (f.flags & BSTAT_ZERO)))
                                /* Zeros up to the end of the file, and past
                                 * it: the whole range reads as zeros. */
                                ret->flags |= BSTAT_ZERO;
                        else {
                                ret->pnum = f.pnum;
                                ret->flags |= f.flags & BSTAT_ZERO;
                        }
                }
        }
        if (offset + ret->pnum == total)
                ret->flags |= BSTAT_EOF;
        else
                ret->flags &= ~(unsigned) BSTAT_EOF;
        return 0;
}

int bstat_above(struct bstat_chain *c, struct vh_image *img, uint64_t offset, uint64_t bytes, struct bstat *ret,
                struct vh_error *err) {
        int r = bstat_layer(c, img, offset, bytes, ret, err);
        if (r < 0 || ret->pnum == 0 || (ret->flags & BSTAT_ALLOCATED))
                return r;

        bool have_eof = ret->flags & BSTAT_EOF;
        uint64_t eof = offset + ret->pnum;
        bytes = ret->pnum;
        for (struct vh_image *p = img->backing; p; p = p->backing) {
                r = bstat_layer(c, p, offset, bytes, ret, err);
                if (r < 0)
                        return r;
                if (ret->pnum == 0) {
                        /* Past the end of a shorter backing file: zeros,
                         * as if this layer had them. */
                        *ret = (struct bstat) { .flags = BSTAT_ZERO | BSTAT_ALLOCATED, .pnum = bytes, .file = p };
                        break;
                }
                if (ret->flags & BSTAT_ALLOCATED) {
                        ret->flags &= ~(unsigned) BSTAT_EOF;
                        break;
                }
                bytes = ret->pnum;
        }
        if (have_eof && offset + ret->pnum == eof)
                ret->flags |= BSTAT_EOF;
        return 0;
}
