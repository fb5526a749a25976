/* image/qcow2-write.c: writing new qcow2 images front to back, for create
 * (no data) and convert (data).
 *
 * The file is laid out as:
 *
 *     cluster 0           header, header extensions, backing file name
 *     data clusters       in the order they were added
 *     refcount blocks     every cluster of the file has refcount 1
 *     refcount table
 *     L2 tables           in guest order
 *     L1 table
 *
 * Because every cluster up to the end of the file is in use exactly once,
 * the refcounts are "1 for clusters 0..n-1" and need no bookkeeping, and
 * the image has no leaks by construction. All L1/L2 entries carry the
 * COPIED flag (refcount is exactly one), as qemu-img check expects.
 *
 * Compressed clusters (convert -c) are the exception: they are packed one
 * right after the other, several to a host cluster, and a
 * host cluster is referenced once by each compressed cluster that touches
 * it. Those counts are kept per data cluster (only once the first
 * compressed cluster is added) and never exceed what refcount_bits can
 * hold: a compressed cluster that would overflow its first host cluster
 * starts a fresh one.
 *
 * Writes happen in the order a crash-safe qcow2 writer follows: data
 * before the refcounts that account for it, refcounts before the L2 tables
 * that point at data, L2 tables before the L1 table, the L1 table before
 * the header that makes it reachable. There is no fsync between the steps:
 * the file being written is a temporary file that no name points at
 * (output.c), so a crash in the middle leaves nothing anybody opens, and
 * the one flush before it is renamed into place (when the caller asks for
 * durability) covers every step. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <zlib.h>

#include "base/macro.h"
#include "image/image-internal.h"
#include "image/qcow2.h"

/* The L2 tables of the image being written are kept in memory until the
 * end; this caps them (1 GiB of tables maps 8 TiB of data with 64 KiB
 * clusters). */
#define QCOW2_WRITER_MAX_L2_BYTES (UINT64_C(1) << 30)
/* Data clusters are collected into writes of this size. */
#define QCOW2_WRITER_BUFFER (4u << 20)

struct qcow2_writer {
        int fd;
        struct qcow2_writer_params p;
        char *backing_file;
        char *backing_format;

        uint32_t cluster_size;
        uint64_t l2_entries;
        uint64_t l1_size;
        uint64_t **l2;    /* per L1 index: a table of host-order entries, or NULL */
        uint64_t n_l2;

        uint64_t data_end;     /* host byte offset where the data written so far ends */
        uint8_t *wbuf;
        size_t wbuf_size, wbuf_used;
        uint64_t wbuf_offset;  /* host offset of wbuf[0]; wbuf_offset + wbuf_used == data_end */

        /* Compression (qcow2_writer_add_compressed). */
        uint32_t *refs;        /* references per host cluster of the data area, or NULL: all 1 */
        uint64_t n_refs;
        uint64_t refcount_max;
        uint8_t *cbuf;
        z_stream *zs;
};

/* The feature name table QEMU writes, so that older readers can name
 * features they do not know. (type, bit, name) as in the spec. */
static const struct {
        uint8_t type;
        uint8_t bit;
        const char *name;
} feature_names[] = {
        { 0, 0, "dirty bit" },
        { 0, 1, "corrupt bit" },
        { 0, 2, "external data file" },
        { 0, 3, "compression type" },
        { 0, 4, "extended L2 entries" },
        { 1, 0, "lazy refcounts" },
        { 2, 0, "bitmaps" },
        { 2, 1, "raw external data" },
};

static size_t header_fixed_bytes(const struct qcow2_writer_params *p) {
        size_t n = p->version == 2 ? QCOW2_V2_HEADER_LENGTH : QCOW2_V3_HEADER_LENGTH;
        if (p->backing_format)
                n += 8 + ALIGN_UP(strlen(p->backing_format), (size_t) 8);
        n += 8; /* end of extensions */
        if (p->backing_file)
                n += strlen(p->backing_file);
        return n;
}

int qcow2_writer_params_from(uint64_t virtual_size, uint32_t cluster_size, unsigned version, unsigned refcount_bits,
                             bool lazy_refcounts, const char *backing_file, enum vh_image_format backing_format,
                             struct qcow2_writer_params *ret, struct vh_error *err) {
        uint32_t cs = cluster_size ? cluster_size : UINT32_C(1) << QCOW2_DEFAULT_CLUSTER_BITS;
        unsigned rb = refcount_bits ? refcount_bits : 16;
        if (cs & (cs - 1))
                return vh_error_set(err, -EINVAL, "cluster size %" PRIu32 " is not a power of two", cs);
        if (rb & (rb - 1) || rb > 64)
                return vh_error_set(err, -EINVAL, "refcount_bits %u is not a power of two between 1 and 64", rb);
        struct qcow2_writer_params p = {
                .virtual_size = virtual_size,
                .cluster_bits = (unsigned) __builtin_ctz(cs),
                .version = version ? version : 3,
                .refcount_order = (unsigned) __builtin_ctz(rb),
                .lazy_refcounts = lazy_refcounts,
                .backing_file = backing_file,
                .backing_format = backing_file ? vh_image_format_to_string(backing_format) : NULL,
        };
        int r = qcow2_writer_params_check(&p, err);
        if (r < 0)
                return r;
        *ret = p;
        return 0;
}

int qcow2_writer_params_check(const struct qcow2_writer_params *p, struct vh_error *err) {
        if (p->cluster_bits < QCOW2_MIN_CLUSTER_BITS || p->cluster_bits > QCOW2_MAX_CLUSTER_BITS)
                return vh_error_set(err, -EINVAL, "cluster size must be a power of two between 512 and 2M");
        if (p->version != 2 && p->version != 3)
                return vh_error_set(err, -EINVAL, "compat must be 0.10 or 1.1");
        if (p->refcount_order > 6)
                return vh_error_set(err, -EINVAL, "refcount_bits must be a power of two between 1 and 64");
        if (p->version == 2 && p->refcount_order != 4)
                return vh_error_set(err, -EINVAL, "refcount_bits other than 16 need compat=1.1");
        if (p->version == 2 && p->lazy_refcounts)
                return vh_error_set(err, -EINVAL, "lazy_refcounts need compat=1.1");
        if (p->virtual_size > VH_IMAGE_MAX_VIRTUAL_SIZE)
                return vh_error_set(err, -EFBIG, "size %" PRIu64 " is larger than the limit of %" PRIu64 " bytes",
                                    p->virtual_size, VH_IMAGE_MAX_VIRTUAL_SIZE);
        if (qcow2_l1_entries_for(p->virtual_size, p->cluster_bits, 8) * 8 > QCOW2_MAX_L1_BYTES)
                /* qemu-img's words, and its limit: with 32 MiB of L1
                 * entries, each mapping an L2 table of cluster_size / 8
                 * clusters, the largest size is 2^22 * cluster_size^2 / 8. */
                return vh_error_set(err, -EFBIG,
                                    "The image size is too large for file format 'qcow2' (try using a larger "
                                    "cluster size): %" PRIu64 " bytes need an L1 table larger than 32 MiB with "
                                    "%u-byte clusters",
                                    p->virtual_size, 1u << p->cluster_bits);
        if (p->backing_file && (p->backing_file[0] == '\0' || strlen(p->backing_file) > VH_IMAGE_MAX_BACKING_NAME))
                return vh_error_set(err, -ENAMETOOLONG, "backing file name must have 1 to %d bytes",
                                    VH_IMAGE_MAX_BACKING_NAME);
        if (p->backing_format && strlen(p->backing_format) > QCOW2_MAX_BACKING_FORMAT)
                return vh_error_set(err, -EINVAL, "backing format name is too long");
        if (header_fixed_bytes(p) > (1u << p->cluster_bits))
                return vh_error_set(err, -ENAMETOOLONG,
                                    "the header and backing file name do not fit in one %u-byte cluster; use a larger "
                                    "cluster_size or a shorter backing file name",
                                    1u << p->cluster_bits);
        return 0;
}

struct qcow2_writer *qcow2_writer_free(struct qcow2_writer *w) {
        if (!w)
                return NULL;
        for (uint64_t i = 0; w->l2 && i < w->l1_size; i++)
                free(w->l2[i]);
        free(w->l2);
        free(w->wbuf);
        free(w->refs);
        free(w->cbuf);
        if (w->zs) {
                deflateEnd(w->zs);
                free(w->zs);
        }
        free(w->backing_file);
        free(w->backing_format);
        free(w);
        return NULL;
}
DEFINE_FREE_FUNC(struct qcow2_writer, qcow2_writer_free)

int qcow2_writer_new(int fd, const struct qcow2_writer_params *params, struct qcow2_writer **ret,
                     struct vh_error *err) {
        int r = qcow2_writer_params_check(params, err);
        if (r < 0)
                return r;

        _cleanup_(qcow2_writer_freep) struct qcow2_writer *w = calloc(1, sizeof(*w));
        if (!w)
                return vh_error_set(err, -ENOMEM, "out of memory");
        w->fd = fd;
        w->p = *params;
        if (params->backing_file) {
                w->backing_file = strdup(params->backing_file);
                w->backing_format = params->backing_format ? strdup(params->backing_format) : NULL;
                if (!w->backing_file || (params->backing_format && !w->backing_format))
                        return vh_error_set(err, -ENOMEM, "out of memory");
        }
        w->p.backing_file = w->backing_file;
        w->p.backing_format = w->backing_format;

        w->cluster_size = UINT32_C(1) << params->cluster_bits;
        w->l2_entries = w->cluster_size / 8;
        w->l1_size = qcow2_l1_entries_for(params->virtual_size, params->cluster_bits, 8);
        if (w->l1_size > 0) {
                w->l2 = calloc(w->l1_size, sizeof(*w->l2));
                if (!w->l2)
                        return vh_error_set(err, -ENOMEM, "out of memory");
        }
        w->wbuf_size = MAX(QCOW2_WRITER_BUFFER, w->cluster_size);
        w->wbuf = malloc(w->wbuf_size);
        if (!w->wbuf)
                return vh_error_set(err, -ENOMEM, "out of memory");
        w->data_end = w->cluster_size; /* cluster 0 is the header */
        w->wbuf_offset = w->cluster_size;
        w->refcount_max = params->refcount_order >= 6 ? UINT64_MAX
                                                      : (UINT64_C(1) << (1u << params->refcount_order)) - 1;

        *ret = TAKE_PTR(w);
        return 0;
}

static int flush_data(struct qcow2_writer *w, struct vh_error *err) {
        if (w->wbuf_used == 0)
                return 0;
        int r = image_pwrite_all(w->fd, w->wbuf, w->wbuf_used, w->wbuf_offset);
        if (r < 0)
                return vh_error_set(err, r, "write of %zu bytes at %" PRIu64 " failed: %s", w->wbuf_used,
                                    w->wbuf_offset, strerror(-r));
        w->wbuf_offset += w->wbuf_used;
        w->wbuf_used = 0;
        return 0;
}

/* The L2 slot of 'guest_cluster', which must not be set yet. */
static int l2_slot(struct qcow2_writer *w, uint64_t guest_cluster, uint64_t **ret, struct vh_error *err) {
        uint64_t l1_index = guest_cluster / w->l2_entries;
        uint64_t l2_index = guest_cluster % w->l2_entries;

        if (l1_index >= w->l1_size)
                return vh_error_set(err, -EINVAL, "guest cluster %" PRIu64 " is past the virtual size", guest_cluster);
        if (!w->l2[l1_index]) {
                if ((w->n_l2 + 1) * w->cluster_size > QCOW2_WRITER_MAX_L2_BYTES)
                        return vh_error_set(err, -EFBIG,
                                            "more than %" PRIu64 " bytes of L2 tables; use a larger cluster_size",
                                            QCOW2_WRITER_MAX_L2_BYTES);
                w->l2[l1_index] = calloc(w->l2_entries, sizeof(uint64_t));
                if (!w->l2[l1_index])
                        return vh_error_set(err, -ENOMEM, "out of memory for an L2 table");
                w->n_l2++;
        }
        if (w->l2[l1_index][l2_index])
                return vh_error_set(err, -EEXIST, "guest cluster %" PRIu64 " written twice", guest_cluster);
        *ret = &w->l2[l1_index][l2_index];
        return 0;
}

/* Appends 'len' bytes at host offset 'at' (>= data_end; the gap is zero
 * padding). */
static int append(struct qcow2_writer *w, const void *data, size_t len, uint64_t at, struct vh_error *err) {
        size_t pad = (size_t) (at - w->data_end);
        if (w->wbuf_used + pad + len > w->wbuf_size) {
                int r = flush_data(w, err);
                if (r < 0)
                        return r;
        }
        if (w->wbuf_used == 0)
                w->wbuf_offset = w->data_end;
        memset(w->wbuf + w->wbuf_used, 0, pad);
        memcpy(w->wbuf + w->wbuf_used + pad, data, len);
        w->wbuf_used += pad + len;
        w->data_end = at + len;
        return 0;
}

/* Grows the per-cluster reference counts to cover host cluster 'c'. */
static int refs_reserve(struct qcow2_writer *w, uint64_t c, struct vh_error *err) {
        if (c < w->n_refs)
                return 0;
        uint64_t n = MAX(c + 1, w->n_refs * 2);
        uint32_t *refs = realloc(w->refs, n * sizeof(uint32_t));
        if (!refs)
                return vh_error_set(err, -ENOMEM, "out of memory");
        memset(refs + w->n_refs, 0, (n - w->n_refs) * sizeof(uint32_t));
        w->refs = refs;
        w->n_refs = n;
        return 0;
}

/* Points L2 entry 'slot' at the whole data cluster at host offset 'at',
 * counting the reference when counts are kept (see refs). */
static int map_data_cluster(struct qcow2_writer *w, uint64_t *slot, uint64_t at, struct vh_error *err) {
        if (w->refs) {
                int r = refs_reserve(w, at >> w->p.cluster_bits, err);
                if (r < 0)
                        return r;
                w->refs[at >> w->p.cluster_bits] = 1;
        }
        *slot = at | QCOW2_OFLAG_COPIED;
        return 0;
}

int qcow2_writer_add_cluster(struct qcow2_writer *w, uint64_t guest_cluster, const void *data,
                             struct vh_error *err) {
        uint64_t *slot;
        int r = l2_slot(w, guest_cluster, &slot, err);
        if (r < 0)
                return r;
        uint64_t at = ALIGN_UP(w->data_end, (uint64_t) w->cluster_size);
        r = append(w, data, w->cluster_size, at, err);
        if (r < 0)
                return r;
        return map_data_cluster(w, slot, at, err);
}

int qcow2_writer_reserve_cluster(struct qcow2_writer *w, uint64_t guest_cluster, uint64_t *ret_host,
                                 struct vh_error *err) {
        uint64_t *slot;
        int r = l2_slot(w, guest_cluster, &slot, err);
        if (r < 0)
                return r;
        /* Whatever is buffered lies before the reserved cluster: write it
         * now, so that the buffer never covers a cluster the caller writes. */
        r = flush_data(w, err);
        if (r < 0)
                return r;
        uint64_t at = ALIGN_UP(w->data_end, (uint64_t) w->cluster_size);
        w->data_end = at + w->cluster_size;
        r = map_data_cluster(w, slot, at, err);
        if (r < 0)
                return r;
        *ret_host = at;
        return 0;
}

int qcow2_writer_add_zero_cluster(struct qcow2_writer *w, uint64_t guest_cluster, struct vh_error *err) {
        if (w->p.version < 3)
                return vh_error_set(err, -EINVAL, "zero clusters need compat=1.1");
        uint64_t *slot;
        int r = l2_slot(w, guest_cluster, &slot, err);
        if (r < 0)
                return r;
        *slot = QCOW2_OFLAG_ZERO;
        return 0;
}

/* Raw deflate with a 4 KiB window, which is what QEMU's reader expects
 * (it inflates with windowBits -12). Returns the compressed length, or 0
 * when the cluster does not get smaller than a cluster. */
static int compress_cluster(struct qcow2_writer *w, const void *data, size_t *ret_len, struct vh_error *err) {
        if (!w->zs) {
                w->zs = calloc(1, sizeof(*w->zs));
                w->cbuf = malloc(w->cluster_size);
                if (!w->zs || !w->cbuf)
                        return vh_error_set(err, -ENOMEM, "out of memory");
                if (deflateInit2(w->zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK) {
                        free(w->zs);
                        w->zs = NULL;
                        return vh_error_set(err, -ENOMEM, "cannot set up zlib");
                }
        } else if (deflateReset(w->zs) != Z_OK)
                return vh_error_set(err, -EIO, "cannot reset zlib");
        w->zs->next_in = (Bytef *) data;
        w->zs->avail_in = w->cluster_size;
        w->zs->next_out = w->cbuf;
        w->zs->avail_out = w->cluster_size - 1;
        int z = deflate(w->zs, Z_FINISH);
        *ret_len = z == Z_STREAM_END ? (w->cluster_size - 1) - w->zs->avail_out : 0;
        return 0;
}

int qcow2_writer_add_compressed(struct qcow2_writer *w, uint64_t guest_cluster, const void *data,
                                struct vh_error *err) {
        const unsigned cb = w->p.cluster_bits;
        size_t clen = 0;
        int r = compress_cluster(w, data, &clen, err);
        if (r < 0)
                return r;
        if (clen == 0)
                return qcow2_writer_add_cluster(w, guest_cluster, data, err);

        uint64_t *slot;
        r = l2_slot(w, guest_cluster, &slot, err);
        if (r < 0)
                return r;
        if (!w->refs) {
                /* From now on counts are kept: every data cluster so far is
                 * a whole one, referenced once. */
                uint64_t end = DIV_ROUND_UP(w->data_end, (uint64_t) w->cluster_size);
                r = refs_reserve(w, end, err);
                if (r < 0)
                        return r;
                for (uint64_t c = 1; c < end; c++)
                        w->refs[c] = 1;
        }
        /* Packed byte by byte, as QEMU does; the descriptor counts the
         * sectors touched. */
        uint64_t at = w->data_end;
        if ((at & (w->cluster_size - 1)) && w->refs[at >> cb] >= w->refcount_max)
                at = ALIGN_UP(w->data_end, (uint64_t) w->cluster_size);
        uint64_t last = (at + clen - 1) >> cb;
        r = refs_reserve(w, last, err);
        if (r < 0)
                return r;
        r = append(w, w->cbuf, clen, at, err);
        if (r < 0)
                return r;
        for (uint64_t c = at >> cb; c <= last; c++)
                w->refs[c]++;

        unsigned csize_shift = 62 - (cb - 8);
        uint64_t sectors = ((at + clen - 1) >> 9) - (at >> 9) + 1;
        *slot = QCOW2_OFLAG_COMPRESSED | ((sectors - 1) << csize_shift) | at;
        return 0;
}

static int write_at(struct qcow2_writer *w, const void *buf, size_t len, uint64_t offset, const char *what,
                    struct vh_error *err) {
        int r = image_pwrite_all(w->fd, buf, len, offset);
        if (r < 0)
                return vh_error_set(err, r, "writing the %s at %" PRIu64 " failed: %s", what, offset, strerror(-r));
        return 0;
}


/* Builds cluster 0: header, extensions, backing file name. */
static int build_header(struct qcow2_writer *w, uint8_t *buf, uint64_t l1_offset, uint64_t reftable_offset,
                        uint64_t reftable_clusters) {
        const struct qcow2_writer_params *p = &w->p;
        uint32_t header_length = p->version == 2 ? QCOW2_V2_HEADER_LENGTH : QCOW2_V3_HEADER_LENGTH;

        memset(buf, 0, w->cluster_size);
        be32_store(buf, QCOW2_MAGIC);
        be32_store(buf + 4, p->version);
        be32_store(buf + 20, p->cluster_bits);
        be64_store(buf + 24, p->virtual_size);
        be32_store(buf + 36, (uint32_t) w->l1_size);
        be64_store(buf + 40, l1_offset);
        be64_store(buf + 48, reftable_offset);
        be32_store(buf + 56, (uint32_t) reftable_clusters);
        if (p->version >= 3) {
                be64_store(buf + 80, p->lazy_refcounts ? QCOW2_COMPAT_LAZY_REFCOUNTS : 0);
                be32_store(buf + 96, p->refcount_order);
                be32_store(buf + 100, header_length);
                /* byte 104, compression_type, stays 0: zlib */
        }

        size_t off = header_length;
        if (p->backing_format) {
                size_t n = strlen(p->backing_format);
                be32_store(buf + off, QCOW2_EXT_BACKING_FORMAT);
                be32_store(buf + off + 4, (uint32_t) n);
                memcpy(buf + off + 8, p->backing_format, n);
                off += 8 + ALIGN_UP(n, (size_t) 8);
        }
        /* The feature name table is optional. qemu-img 7.2 writes it only
         * with clusters above 4 KiB (seen: none from 512 to 4096 bytes,
         * one from 8192 up), and the same files are made here; it is left
         * out too when it does not fit next to the backing file name. */
        size_t table = ELEMENTSOF(feature_names) * QCOW2_FEATURE_NAME_ENTRY;
        size_t name_len = p->backing_file ? strlen(p->backing_file) : 0;
        if (p->version >= 3 && w->cluster_size > 4096 && off + 8 + table + 8 + name_len <= w->cluster_size) {
                be32_store(buf + off, QCOW2_EXT_FEATURE_TABLE);
                be32_store(buf + off + 4, (uint32_t) table);
                uint8_t *e = buf + off + 8;
                for (size_t i = 0; i < ELEMENTSOF(feature_names); i++, e += QCOW2_FEATURE_NAME_ENTRY) {
                        e[0] = feature_names[i].type;
                        e[1] = feature_names[i].bit;
                        strncpy((char *) e + 2, feature_names[i].name, QCOW2_FEATURE_NAME_MAX);
                }
                off += 8 + table;
        }
        off += 8; /* end-of-extensions marker: zeros */

        if (p->backing_file) {
                if (off + name_len > w->cluster_size)
                        return -ENAMETOOLONG; /* ruled out by qcow2_writer_params_check() */
                be64_store(buf + 8, off);
                be32_store(buf + 16, (uint32_t) name_len);
                memcpy(buf + off, p->backing_file, name_len);
        }
        return 0;
}

int qcow2_writer_finish(struct qcow2_writer *w, struct vh_error *err) {
        const unsigned cb = w->p.cluster_bits;
        const uint64_t cs = w->cluster_size;
        int r;

        /* Step 1: data, before any table points at it. */
        r = flush_data(w, err);
        if (r < 0)
                return r;

        /* Layout of the metadata behind the data. The refcount blocks must
         * cover every cluster including themselves and the refcount table,
         * so their count is found by iterating to a fixed point. */
        uint64_t data_clusters = DIV_ROUND_UP(w->data_end, (uint64_t) cs) - 1;
        uint64_t l1_clusters = DIV_ROUND_UP(w->l1_size * 8, cs);
        uint64_t fixed = 1 + data_clusters + w->n_l2 + l1_clusters;
        uint64_t refblock_entries = (cs * 8) >> w->p.refcount_order;
        uint64_t n_refblocks = 0, reftable_clusters = 0, total;
        /* An image with nothing in it ('img create' without
         * preallocation) gets qemu-img's layout, so that both make the
         * same file byte for byte: the header, the refcount table, one
         * refcount block, the L1 table, and the file ends with the L1
         * table's last entry. That holds while the one refcount block
         * covers all of them; past it qemu-img grows its tables as it
         * allocates the L1 table, and the layout below is used. */
        bool qemu_layout = data_clusters == 0 && w->n_l2 == 0 && 3 + l1_clusters <= refblock_entries;
        if (qemu_layout) {
                n_refblocks = reftable_clusters = 1;
                total = fixed + 2;
        } else
                for (;;) {
                        total = fixed + n_refblocks + reftable_clusters;
                        uint64_t rb = DIV_ROUND_UP(total, refblock_entries);
                        uint64_t rt = DIV_ROUND_UP(rb * 8, cs);
                        if (rb == n_refblocks && rt == reftable_clusters)
                                break;
                        n_refblocks = rb;
                        reftable_clusters = rt;
                }
        if (reftable_clusters * cs > QCOW2_MAX_REFTABLE_BYTES)
                return vh_error_set(err, -EFBIG, "the refcount table would exceed %" PRIu64 " bytes",
                                    QCOW2_MAX_REFTABLE_BYTES);
        uint64_t refblocks_at = 1 + data_clusters;
        uint64_t reftable_at = refblocks_at + n_refblocks;
        if (qemu_layout) {
                reftable_at = 1;
                refblocks_at = 2;
        }
        uint64_t l2_at = MAX(reftable_at + reftable_clusters, refblocks_at + n_refblocks);
        uint64_t l1_at = l2_at + w->n_l2;

        _cleanup_free_ uint8_t *block = malloc(cs);
        if (!block)
                return vh_error_set(err, -ENOMEM, "out of memory");

        /* Step 2: refcount blocks and table: every cluster the finished file
         * will use is accounted for before anything references it. */
        for (uint64_t b = 0; b < n_refblocks; b++) {
                memset(block, 0, cs);
                uint64_t first = b * refblock_entries;
                uint64_t n = MIN(refblock_entries, total - first);
                for (uint64_t i = 0; i < n; i++) {
                        uint64_t c = first + i;
                        uint64_t v = w->refs && c >= 1 && c <= data_clusters && c < w->n_refs ? w->refs[c] : 1;
                        qcow2_refblock_set(block, i, w->p.refcount_order, v);
                }
                r = write_at(w, block, cs, (refblocks_at + b) << cb, "refcount block", err);
                if (r < 0)
                        return r;
        }
        size_t reftable_bytes = (size_t) (reftable_clusters * cs);
        _cleanup_free_ uint8_t *reftable = calloc(1, MAX(reftable_bytes, (size_t) 1));
        if (!reftable)
                return vh_error_set(err, -ENOMEM, "out of memory");
        for (uint64_t b = 0; b < n_refblocks; b++)
                be64_store(reftable + b * 8, (refblocks_at + b) << cb);
        /* Only the used part is written; the rest of the table's clusters
         * read as zeros from the sparse file (set by ftruncate below). */
        r = write_at(w, reftable, (size_t) ALIGN_UP(n_refblocks * 8, (uint64_t) 512), reftable_at << cb,
                     "refcount table", err);
        if (r < 0)
                return r;

        /* Step 3: L2 tables, which point at data that is written and
         * accounted for. */
        _cleanup_free_ uint64_t *l1 = calloc(MAX(l1_clusters * cs / 8, (uint64_t) 1), sizeof(uint64_t));
        if (!l1)
                return vh_error_set(err, -ENOMEM, "out of memory");
        uint64_t next_l2 = l2_at;
        for (uint64_t i = 0; i < w->l1_size; i++) {
                if (!w->l2[i])
                        continue;
                for (uint64_t j = 0; j < w->l2_entries; j++)
                        be64_store(block + j * 8, w->l2[i][j]);
                r = write_at(w, block, cs, next_l2 << cb, "L2 table", err);
                if (r < 0)
                        return r;
                l1[i] = (next_l2 << cb) | QCOW2_OFLAG_COPIED;
                next_l2++;
        }

        /* Step 4: the L1 table, then the header that makes it all
         * reachable. Until the header is written the file is not an
         * image. */
        if (l1_clusters > 0) {
                uint8_t *l1_be = (uint8_t *) l1;
                for (uint64_t i = 0; i < w->l1_size; i++)
                        be64_store(l1_be + i * 8, l1[i]);
                r = write_at(w, l1_be, (size_t) ALIGN_UP(w->l1_size * 8, (uint64_t) 512), l1_at << cb, "L1 table",
                             err);
                if (r < 0)
                        return r;
        }
        uint64_t file_end = qemu_layout && w->l1_size ? (l1_at << cb) + w->l1_size * 8 : total << cb;
        if (ftruncate(w->fd, (off_t) file_end) < 0)
                return vh_error_set(err, negative_errno(), "cannot set the file size: %m");

        r = build_header(w, block, l1_clusters ? l1_at << cb : 0, reftable_at << cb, reftable_clusters);
        if (r < 0)
                return vh_error_set(err, r, "the header does not fit in the first cluster");
        return write_at(w, block, cs, 0, "header", err);
}

int qcow2_create(int fd, const struct vh_image_create_options *opts, uint64_t size, struct vh_error *err) {
        struct qcow2_writer_params p;
        int r = qcow2_writer_params_from(size, opts->cluster_size, opts->version, opts->refcount_bits,
                                         opts->lazy_refcounts, opts->backing_file, opts->backing_format, &p, err);
        if (r < 0)
                return r;
        const uint64_t cs = UINT64_C(1) << p.cluster_bits;
        _cleanup_(qcow2_writer_freep) struct qcow2_writer *w = NULL;
        r = qcow2_writer_new(fd, &p, &w, err);
        if (r < 0)
                return r;
        /* Preallocation maps every guest cluster, in order, to the data
         * area right after the header: [cs, cs + n * cs). The area is not
         * written, so it reads as zeros; falloc and full then allocate it
         * in the file too. */
        uint64_t n = opts->preallocation != VH_IMAGE_PREALLOC_OFF ? DIV_ROUND_UP(size, cs) : 0;
        for (uint64_t c = 0; c < n; c++) {
                uint64_t host;
                r = qcow2_writer_reserve_cluster(w, c, &host, err);
                if (r < 0)
                        return r;
        }
        r = qcow2_writer_finish(w, err);
        if (r < 0)
                return r;
        return image_preallocate(fd, cs, n * cs, opts->preallocation, err);
}
