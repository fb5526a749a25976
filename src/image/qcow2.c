/* image/qcow2.c: reading qcow2 images.
 *
 * Everything in a qcow2 file is untrusted input. The header and its
 * extensions are validated against hard limits (QEMU's own implementation
 * limits) before any table is read, and every table offset found later (L2
 * tables, data clusters, compressed clusters) is checked against alignment
 * and the file size before it is used, so a hostile image gives an error
 * naming the file and the field, never a crash or a huge allocation.
 *
 * Guest offsets are mapped through the L1 table (read whole at open: at
 * most 32 MiB) and L2 tables (one cluster each, in a small cache) to host
 * offsets, zero clusters, compressed clusters, or "unallocated", which the
 * generic layer (image.c) answers from the backing file. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#ifdef HAVE_ZSTD
#include <zstd.h>
#endif

#include "base/macro.h"
#include "image/image-internal.h"
#include "image/qcow2.h"

/* The L2 cache holds at most this many bytes of tables (and at least a few
 * tables whatever the cluster size). */
#define QCOW2_L2_CACHE_BYTES (UINT64_C(8) << 20)
#define QCOW2_L2_CACHE_MIN 4
#define QCOW2_L2_CACHE_MAX 64

uint64_t qcow2_l1_entries_for(uint64_t size, unsigned cluster_bits, uint32_t l2_entry_size) {
        /* One L1 entry maps cluster_size / l2_entry_size clusters. */
        unsigned shift = 2 * cluster_bits - (l2_entry_size == 16 ? 4 : 3);
        return (size >> shift) + ((size & ((UINT64_C(1) << shift) - 1)) ? 1 : 0);
}

size_t qcow2_header_need(const uint8_t *buf, size_t len, uint64_t file_size) {
        if (len < 24)
                return (size_t) MIN((uint64_t) 24, file_size);
        uint32_t cluster_bits = be32_load(buf + 20);
        if (cluster_bits < QCOW2_MIN_CLUSTER_BITS || cluster_bits > QCOW2_MAX_CLUSTER_BITS)
                return len; /* the parser reports it */
        return (size_t) MIN((uint64_t) 1 << cluster_bits, file_size);
}

/* A table of 'bytes' bytes at 'offset' must start on a cluster boundary,
 * not at 0 (the header) and end inside the file. */
static int check_table(const struct qcow2_header *h, const char *field, uint64_t offset, uint64_t bytes,
                       uint64_t file_size, struct vh_error *err) {
        if (offset & (h->cluster_size - 1))
                return vh_error_set(err, -EINVAL, "%s %#" PRIx64 " is not aligned to the cluster size (%" PRIu32 ")",
                                    field, offset, h->cluster_size);
        if (offset == 0)
                return vh_error_set(err, -EINVAL, "%s is 0, which is the header", field);
        if (offset > file_size || bytes > file_size - offset)
                return vh_error_set(err, -EINVAL,
                                    "%s %#" PRIx64 " plus %" PRIu64 " bytes goes past the end of the file (%" PRIu64
                                    " bytes)",
                                    field, offset, bytes, file_size);
        return 0;
}

/* Names of the unknown incompatible features, from the image's own feature
 * name table when it has one: that table exists so that an old reader can
 * say what it does not understand. */
static void describe_unknown_features(uint64_t unknown, const uint8_t *table, size_t table_len, char *out,
                                      size_t out_len) {
        size_t used = 0;
        out[0] = '\0';
        for (unsigned bit = 0; bit < 64; bit++) {
                if (!(unknown & (UINT64_C(1) << bit)))
                        continue;
                char name[QCOW2_FEATURE_NAME_MAX + 1] = "";
                for (size_t i = 0; table && i + QCOW2_FEATURE_NAME_ENTRY <= table_len; i += QCOW2_FEATURE_NAME_ENTRY)
                        if (table[i] == 0 && table[i + 1] == bit) {
                                memcpy(name, table + i + 2, QCOW2_FEATURE_NAME_MAX);
                                name[QCOW2_FEATURE_NAME_MAX] = '\0';
                                for (char *c = name; *c; c++)
                                        if ((unsigned char) *c < 0x20 || (unsigned char) *c > 0x7e)
                                                *c = '?';
                                break;
                        }
                int n = snprintf(out + used, out_len - used, "%s%s%sbit %u%s", used ? ", " : "", name,
                                 name[0] ? " (" : "", bit, name[0] ? ")" : "");
                if (n < 0 || (size_t) n >= out_len - used)
                        break;
                used += (size_t) n;
        }
}

int qcow2_header_parse(const uint8_t *buf, size_t len, uint64_t file_size, struct qcow2_header *ret,
                       struct vh_error *err) {
        struct qcow2_header h = {};

        if (len < QCOW2_V2_HEADER_LENGTH)
                return vh_error_set(err, -EINVAL, "file too short for a qcow2 header (%zu bytes)", len);
        if (be32_load(buf) != QCOW2_MAGIC)
                return vh_error_set(err, -EINVAL, "magic is not QFI\\xfb: not a qcow2 image");

        h.version = be32_load(buf + 4);
        h.backing_file_offset = be64_load(buf + 8);
        h.backing_file_size = be32_load(buf + 16);
        h.cluster_bits = be32_load(buf + 20);
        h.size = be64_load(buf + 24);
        h.crypt_method = be32_load(buf + 32);
        h.l1_size = be32_load(buf + 36);
        h.l1_table_offset = be64_load(buf + 40);
        h.refcount_table_offset = be64_load(buf + 48);
        h.refcount_table_clusters = be32_load(buf + 56);
        h.nb_snapshots = be32_load(buf + 60);
        h.snapshots_offset = be64_load(buf + 64);

        if (h.version != 2 && h.version != 3)
                return vh_error_set(err, -EOPNOTSUPP, "version %" PRIu32 " is not supported (only 2 and 3)",
                                    h.version);
        if (h.cluster_bits < QCOW2_MIN_CLUSTER_BITS || h.cluster_bits > QCOW2_MAX_CLUSTER_BITS)
                return vh_error_set(err, -EINVAL, "cluster_bits %" PRIu32 " is out of range (%d..%d)", h.cluster_bits,
                                    QCOW2_MIN_CLUSTER_BITS, QCOW2_MAX_CLUSTER_BITS);
        h.cluster_size = UINT32_C(1) << h.cluster_bits;
        if ((uint64_t) len < MIN((uint64_t) h.cluster_size, file_size))
                return -EAGAIN; /* the caller did not read enough; see qcow2_header_need() */

        if (h.version == 2) {
                h.refcount_order = 4;
                h.header_length = QCOW2_V2_HEADER_LENGTH;
        } else {
                if (len < QCOW2_V3_MIN_HEADER_LENGTH)
                        return vh_error_set(err, -EINVAL, "file too short for a version 3 header (%zu bytes)", len);
                h.incompatible_features = be64_load(buf + 72);
                h.compatible_features = be64_load(buf + 80);
                h.autoclear_features = be64_load(buf + 88);
                h.refcount_order = be32_load(buf + 96);
                h.header_length = be32_load(buf + 100);
                if (h.header_length < QCOW2_V3_MIN_HEADER_LENGTH || h.header_length % 8 != 0 ||
                    h.header_length > h.cluster_size)
                        return vh_error_set(err, -EINVAL,
                                            "header_length %" PRIu32
                                            " is invalid (at least 104, a multiple of 8, at most the cluster size)",
                                            h.header_length);
                if (h.header_length > len)
                        return vh_error_set(err, -EINVAL, "header_length %" PRIu32 " goes past the end of the file",
                                            h.header_length);
                if (h.header_length > 104)
                        h.compression_type = buf[104];
        }

        if (h.crypt_method != 0)
                return vh_error_set(err, -EOPNOTSUPP, "encrypted images are not supported (crypt_method %" PRIu32 ")",
                                    h.crypt_method);
        if (h.refcount_order > 6)
                return vh_error_set(err, -EINVAL, "refcount_order %" PRIu32 " is out of range (0..6)",
                                    h.refcount_order);

        /* The backing file name lives in the first cluster, after the
         * extensions. */
        if (h.backing_file_offset != 0 && h.backing_file_size > 0) {
                if (h.backing_file_size > VH_IMAGE_MAX_BACKING_NAME)
                        return vh_error_set(err, -EINVAL, "backing_file_size %" PRIu32 " is longer than %d",
                                            h.backing_file_size, VH_IMAGE_MAX_BACKING_NAME);
                if (h.backing_file_offset < h.header_length)
                        return vh_error_set(err, -EINVAL, "backing_file_offset %#" PRIx64 " overlaps the header",
                                            h.backing_file_offset);
                if (h.backing_file_offset > h.cluster_size ||
                    h.backing_file_size > h.cluster_size - h.backing_file_offset)
                        return vh_error_set(err, -EINVAL,
                                            "backing_file_offset %#" PRIx64 " with backing_file_size %" PRIu32
                                            " goes past the first cluster",
                                            h.backing_file_offset, h.backing_file_size);
                if (h.backing_file_offset + h.backing_file_size > len)
                        return vh_error_set(err, -EINVAL,
                                            "backing_file_offset %#" PRIx64 " with backing_file_size %" PRIu32
                                            " goes past the end of the file",
                                            h.backing_file_offset, h.backing_file_size);
                const uint8_t *name = buf + h.backing_file_offset;
                if (memchr(name, '\0', h.backing_file_size))
                        return vh_error_set(err, -EINVAL, "backing file name contains a NUL byte");
                memcpy(h.backing_file, name, h.backing_file_size);
                h.backing_file[h.backing_file_size] = '\0';
        }

        /* Header extensions: from the end of the header to the backing file
         * name (or the end of the first cluster). Bytes past the end of a
         * short file read as zeros, which is the end marker. */
        const uint8_t *feature_table = NULL;
        size_t feature_table_len = 0;
        uint64_t ext_end = h.backing_file_offset ? MIN(h.backing_file_offset, (uint64_t) h.cluster_size)
                                                 : h.cluster_size;
        uint64_t off = h.header_length;
        for (unsigned n = 0;; n++) {
                if (n >= QCOW2_MAX_HEADER_EXTENSIONS)
                        return vh_error_set(err, -EINVAL, "more than %d header extensions",
                                            QCOW2_MAX_HEADER_EXTENSIONS);
                if (off + 8 > ext_end || off + 8 > len)
                        break;
                uint32_t type = be32_load(buf + off);
                uint32_t ext_len = be32_load(buf + off + 4);
                if (type == QCOW2_EXT_END)
                        break;
                if (ext_len > ext_end - off - 8 || ext_len > len - off - 8)
                        return vh_error_set(err, -EINVAL,
                                            "header extension %#010" PRIx32 " at offset %" PRIu64 ": length %" PRIu32
                                            " goes past the end of the header area",
                                            type, off, ext_len);
                const uint8_t *data = buf + off + 8;
                switch (type) {
                case QCOW2_EXT_BACKING_FORMAT:
                        if (ext_len > QCOW2_MAX_BACKING_FORMAT)
                                return vh_error_set(err, -EINVAL,
                                                    "backing format extension is %" PRIu32 " bytes, longer than %d",
                                                    ext_len, QCOW2_MAX_BACKING_FORMAT);
                        memcpy(h.backing_format, data, ext_len);
                        h.backing_format[ext_len] = '\0';
                        break;
                case QCOW2_EXT_FEATURE_TABLE:
                        feature_table = data;
                        feature_table_len = ext_len;
                        break;
                default:
                        /* Bitmaps, crypto (refused through crypt_method),
                         * data file (refused through its feature bit) and
                         * unknown extensions do not change how we read. */
                        break;
                }
                off += 8 + ALIGN_UP((uint64_t) ext_len, 8);
        }

        uint64_t unknown = h.incompatible_features & ~QCOW2_INCOMPAT_KNOWN;
        if (unknown) {
                char names[256];
                describe_unknown_features(unknown, feature_table, feature_table_len, names, sizeof(names));
                return vh_error_set(err, -EOPNOTSUPP, "incompatible_features has unsupported features: %s", names);
        }
        if (h.incompatible_features & QCOW2_INCOMPAT_DATA_FILE)
                return vh_error_set(err, -EOPNOTSUPP,
                                    "images with an external data file are not supported (incompatible_features bit 2)");
        if (h.incompatible_features & QCOW2_INCOMPAT_COMPRESSION) {
                if (h.compression_type != QCOW2_COMPRESSION_ZSTD)
                        return vh_error_set(err, -EOPNOTSUPP, "compression_type %u is not supported",
                                            h.compression_type);
#ifndef HAVE_ZSTD
                return vh_error_set(err, -EOPNOTSUPP, "zstd compressed images are not supported by this build");
#endif
        } else if (h.compression_type != QCOW2_COMPRESSION_ZLIB)
                return vh_error_set(err, -EINVAL,
                                    "compression_type %u is set without the compression type feature bit",
                                    h.compression_type);
        if ((h.incompatible_features & QCOW2_INCOMPAT_EXTL2) && h.cluster_bits < QCOW2_EXTL2_MIN_CLUSTER_BITS)
                return vh_error_set(err, -EINVAL,
                                    "cluster_bits %" PRIu32 " is too small for extended L2 entries (at least %d)",
                                    h.cluster_bits, QCOW2_EXTL2_MIN_CLUSTER_BITS);

        h.l2_entry_size = (h.incompatible_features & QCOW2_INCOMPAT_EXTL2) ? 16 : 8;
        h.l2_entries = h.cluster_size / h.l2_entry_size;

        /* Past 2^62 the arithmetic on offsets could overflow; QEMU's own L1
         * limit stops well before. */
        if (h.size > (UINT64_C(1) << 62))
                return vh_error_set(err, -EFBIG, "size %" PRIu64 " is too large", h.size);
        uint64_t l1_needed = qcow2_l1_entries_for(h.size, h.cluster_bits, h.l2_entry_size);
        if ((uint64_t) h.l1_size * 8 > QCOW2_MAX_L1_BYTES)
                return vh_error_set(err, -EFBIG, "l1_size %" PRIu32 " is larger than the limit of %" PRIu64 " entries",
                                    h.l1_size, QCOW2_MAX_L1_BYTES / 8);
        if (h.l1_size < l1_needed)
                return vh_error_set(err, -EINVAL,
                                    "l1_size %" PRIu32 " is too small for size %" PRIu64 " (needs %" PRIu64 ")",
                                    h.l1_size, h.size, l1_needed);
        if (h.l1_size > 0) {
                int r = check_table(&h, "l1_table_offset", h.l1_table_offset, (uint64_t) h.l1_size * 8, file_size,
                                    err);
                if (r < 0)
                        return r;
        }

        if (h.refcount_table_clusters == 0)
                return vh_error_set(err, -EINVAL, "refcount_table_clusters is 0: the image has no refcount table");
        uint64_t reftable_bytes = (uint64_t) h.refcount_table_clusters << h.cluster_bits;
        if (reftable_bytes > QCOW2_MAX_REFTABLE_BYTES)
                return vh_error_set(err, -EFBIG,
                                    "refcount_table_clusters %" PRIu32 " makes the refcount table larger than %" PRIu64
                                    " bytes",
                                    h.refcount_table_clusters, QCOW2_MAX_REFTABLE_BYTES);
        int r = check_table(&h, "refcount_table_offset", h.refcount_table_offset, reftable_bytes, file_size, err);
        if (r < 0)
                return r;

        if (h.nb_snapshots > QCOW2_MAX_SNAPSHOTS)
                return vh_error_set(err, -EINVAL, "nb_snapshots %" PRIu32 " is larger than %d", h.nb_snapshots,
                                    QCOW2_MAX_SNAPSHOTS);
        if (h.nb_snapshots > 0) {
                /* The first entry (40 bytes at least) must be in the file.
                 * Entries past the end read as zeros to QEMU, which 'check
                 * -r all' repairs; the snapshot operations refuse them when
                 * they read the table (qcow2_snapshot_table_read()). */
                r = check_table(&h, "snapshots_offset", h.snapshots_offset, 40, file_size, err);
                if (r < 0)
                        return r;
        }

        *ret = h;
        return 0;
}

static struct qcow2_state *state(struct vh_image *img) {
        return img->priv;
}

static void qcow2_close(struct vh_image *img) {
        struct qcow2_state *s = img->priv;
        if (!s)
                return;
        if (s->rw)
                qcow2_rw_close(img);
        free(s->l1);
        qcow2_cache_free(s->l2_cache);
        free(s->cbuf);
        free(s->dbuf);
        if (s->zs) {
                inflateEnd(s->zs);
                free(s->zs);
        }
#ifdef HAVE_ZSTD
        ZSTD_freeDCtx(s->zstd);
#endif
        free(s);
        img->priv = NULL;
}

static int qcow2_open(struct vh_image *img, struct vh_error *err) {
        uint8_t probe[512];
        size_t have = (size_t) MIN((uint64_t) sizeof(probe), img->file_size);
        int r = image_pread(img, probe, have, 0, err);
        if (r < 0)
                return r;
        size_t need = qcow2_header_need(probe, have, img->file_size);
        _cleanup_free_ uint8_t *buf = malloc(MAX(need, (size_t) 1));
        if (!buf)
                return vh_error_set(err, -ENOMEM, "out of memory");
        r = image_pread(img, buf, need, 0, err);
        if (r < 0)
                return r;

        struct qcow2_state *s = calloc(1, sizeof(*s));
        if (!s)
                return vh_error_set(err, -ENOMEM, "out of memory");
        img->priv = s;

        r = qcow2_header_parse(buf, need, img->file_size, &s->h, err);
        if (r == -EAGAIN)
                r = vh_error_set(err, -EINVAL, "header could not be read");
        if (r < 0)
                return r;
        const struct qcow2_header *h = &s->h;

        /* Read-write opens are checked (corrupt, dirty, features we cannot
         * write) by qcow2_rw_open() at the end, before anything is written. */

        if (h->l1_size > 0) {
                s->l1 = calloc(h->l1_size, sizeof(uint64_t));
                if (!s->l1)
                        return vh_error_set(err, -ENOMEM, "out of memory for an L1 table of %" PRIu32 " entries",
                                            h->l1_size);
                r = image_pread(img, s->l1, (size_t) h->l1_size * 8, h->l1_table_offset, err);
                if (r < 0)
                        return r;
                for (uint32_t i = 0; i < h->l1_size; i++)
                        s->l1[i] = be64_load((const uint8_t *) &s->l1[i]);
        }

        size_t n_slots = (size_t) (QCOW2_L2_CACHE_BYTES >> h->cluster_bits);
        n_slots = MAX(n_slots, (size_t) QCOW2_L2_CACHE_MIN);
        n_slots = MIN(n_slots, (size_t) QCOW2_L2_CACHE_MAX);
        s->l2_cache = qcow2_cache_new(n_slots, h->cluster_size, NULL);
        if (!s->l2_cache)
                return vh_error_set(err, -ENOMEM, "out of memory");

        img->virtual_size = h->size;
        if (h->backing_file[0]) {
                img->backing_name = strdup(h->backing_file);
                if (!img->backing_name)
                        return vh_error_set(err, -ENOMEM, "out of memory");
                img->backing_format = VH_IMAGE_FORMAT_PROBE;
                if (h->backing_format[0]) {
                        int f = vh_image_format_from_string(h->backing_format);
                        if (f >= 0)
                                img->backing_format = f;
                        else {
                                /* Fatal only for the backing file, as in QEMU:
                                 * the image itself is still described. */
                                img->backing_format_unknown = strdup(h->backing_format);
                                if (!img->backing_format_unknown)
                                        return vh_error_set(err, -ENOMEM, "out of memory");
                        }
                }
        }
        if (img->read_write)
                return qcow2_rw_open(img, err);
        return 0;
}

/* Finds the L2 table for guest cluster 'cluster'. '*ret_table' is NULL when
 * the L1 entry says the whole table is unallocated. */
static int l2_lookup(struct vh_image *img, uint64_t cluster, const uint8_t **ret_table, uint64_t *ret_index,
                     struct vh_error *err) {
        struct qcow2_state *s = state(img);
        uint64_t l1_index = cluster / s->h.l2_entries;

        *ret_index = cluster % s->h.l2_entries;
        *ret_table = NULL;
        if (l1_index >= s->h.l1_size)
                return 0;
        uint64_t l2_offset = s->l1[l1_index] & QCOW2_L1E_OFFSET_MASK;
        if (l2_offset == 0)
                return 0;
        if (l2_offset & (s->h.cluster_size - 1))
                return vh_error_set(err, -EINVAL, "L1 entry %" PRIu64 ": L2 table offset %#" PRIx64 " is not aligned",
                                    l1_index, l2_offset);
        if (image_past_eof(img, l2_offset, s->h.cluster_size))
                return vh_error_set(err, -EINVAL,
                                    "L1 entry %" PRIu64 ": L2 table offset %#" PRIx64 " is past the end of the file",
                                    l1_index, l2_offset);
        uint8_t *table;
        int r = qcow2_cache_get(img, s->l2_cache, l2_offset, &table, err);
        if (r < 0)
                return r;
        *ret_table = table;
        return 0;
}

int qcow2_l2_load(struct vh_image *img, uint64_t l2_offset, uint8_t **ret, struct vh_error *err) {
        struct qcow2_state *s = state(img);
        if ((l2_offset & (s->h.cluster_size - 1)) || l2_offset == 0)
                return vh_error_set(err, -EINVAL, "L2 table offset %#" PRIx64 " is not aligned", l2_offset);
        if (image_past_eof(img, l2_offset, s->h.cluster_size))
                return vh_error_set(err, -EINVAL, "L2 table offset %#" PRIx64 " is past the end of the file",
                                    l2_offset);
        return qcow2_cache_get(img, s->l2_cache, l2_offset, ret, err);
}

void qcow2_compressed_range(const struct qcow2_header *h, uint64_t entry, uint64_t *ret_offset,
                            uint64_t *ret_bytes) {
        unsigned csize_shift = 62 - (h->cluster_bits - 8);
        uint64_t csize_mask = (UINT64_C(1) << (h->cluster_bits - 8)) - 1;
        uint64_t coffset = entry & ((UINT64_C(1) << csize_shift) - 1);
        uint64_t nb_sectors = ((entry >> csize_shift) & csize_mask) + 1;
        *ret_offset = coffset & ~UINT64_C(511);
        *ret_bytes = nb_sectors * 512;
}

/* Classifies unit 'sub' (a subcluster with extended L2 entries, else the
 * whole cluster: sub = 0) of L2 entry 'index'. For DATA, '*ret_host' is
 * where that unit starts in the file. */
static int classify(struct vh_image *img, const uint8_t *table, uint64_t index, unsigned sub,
                    enum image_extent_kind *ret_kind, uint64_t *ret_host, struct vh_error *err) {
        struct qcow2_state *s = state(img);
        uint64_t entry = be64_load(table + index * s->h.l2_entry_size);
        bool extl2 = s->h.l2_entry_size == 16;

        if (entry & QCOW2_OFLAG_COMPRESSED) {
                *ret_kind = IMAGE_EXTENT_COMPRESSED;
                return 0;
        }

        uint64_t host = entry & QCOW2_L2E_OFFSET_MASK;
        bool allocated;
        if (extl2) {
                uint64_t bitmap = be64_load(table + index * 16 + 8);
                bool alloc = (bitmap >> sub) & 1;
                bool zero = (bitmap >> (32 + sub)) & 1;
                if (alloc && zero)
                        return vh_error_set(err, -EINVAL, "L2 entry %" PRIu64 ": subcluster %u is both allocated and zero",
                                            index, sub);
                if (zero) {
                        *ret_kind = IMAGE_EXTENT_ZERO;
                        return 0;
                }
                allocated = alloc;
                if (allocated && host == 0)
                        return vh_error_set(err, -EINVAL,
                                            "L2 entry %" PRIu64 ": allocated subcluster without a host offset", index);
        } else {
                if (entry & QCOW2_OFLAG_ZERO) {
                        *ret_kind = IMAGE_EXTENT_ZERO;
                        return 0;
                }
                if (host == 0 && (entry & QCOW2_OFLAG_COPIED))
                        return vh_error_set(err, -EINVAL, "L2 entry %" PRIu64 ": data cluster at offset 0 (the header)",
                                            index);
                allocated = host != 0;
        }
        if (!allocated) {
                *ret_kind = IMAGE_EXTENT_UNALLOCATED;
                return 0;
        }
        if (host & (s->h.cluster_size - 1))
                return vh_error_set(err, -EINVAL, "L2 entry %" PRIu64 ": data offset %#" PRIx64 " is not aligned", index,
                                    host);
        if (image_past_eof(img, host, 1))
                return vh_error_set(err, -EINVAL,
                                    "L2 entry %" PRIu64 ": data offset %#" PRIx64 " is past the end of the file", index,
                                    host);
        *ret_kind = IMAGE_EXTENT_DATA;
        *ret_host = extl2 ? host + (uint64_t) sub * (s->h.cluster_size / QCOW2_SUBCLUSTERS) : host;
        return 0;
}

static int qcow2_map(struct vh_image *img, uint64_t offset, uint64_t max_len, struct image_layer_extent *ret,
                     struct vh_error *err) {
        struct qcow2_state *s = state(img);
        const struct qcow2_header *h = &s->h;
        uint64_t cluster = offset >> h->cluster_bits;
        bool extl2 = h->l2_entry_size == 16;
        unsigned unit_bits = extl2 ? h->cluster_bits - 5 : h->cluster_bits;
        uint64_t unit = UINT64_C(1) << unit_bits;

        /* One call answers at most up to the end of the current L2 table. */
        uint64_t table_end = ((cluster / h->l2_entries) + 1) * h->l2_entries << h->cluster_bits;
        uint64_t limit = MIN(max_len, table_end - offset);

        const uint8_t *table;
        uint64_t index;
        int r = l2_lookup(img, cluster, &table, &index, err);
        if (r < 0)
                return r;
        if (!table) {
                *ret = (struct image_layer_extent) { .length = limit, .kind = IMAGE_EXTENT_UNALLOCATED };
                return 0;
        }

        uint64_t u = offset >> unit_bits; /* unit number in the guest */
        unsigned sub = extl2 ? (unsigned) (u & (QCOW2_SUBCLUSTERS - 1)) : 0;
        enum image_extent_kind kind;
        uint64_t host = 0;
        r = classify(img, table, index, sub, &kind, &host, err);
        if (r < 0)
                return r;

        uint64_t in_unit = offset & (unit - 1);
        if (kind == IMAGE_EXTENT_COMPRESSED) {
                /* Each compressed cluster is decoded on its own. */
                uint64_t in_cluster = offset & (h->cluster_size - 1);
                *ret = (struct image_layer_extent) {
                        .length = MIN(limit, h->cluster_size - in_cluster),
                        .kind = kind,
                };
                return 0;
        }

        uint64_t length = unit - in_unit;
        uint64_t first_host = host + in_unit;
        while (length < limit) {
                u++;
                uint64_t c = u >> (h->cluster_bits - unit_bits);
                uint64_t i = c % h->l2_entries;
                unsigned sb = extl2 ? (unsigned) (u & (QCOW2_SUBCLUSTERS - 1)) : 0;
                enum image_extent_kind k;
                uint64_t hst = 0;
                r = classify(img, table, i, sb, &k, &hst, err);
                if (r < 0)
                        return r;
                if (k != kind || (kind == IMAGE_EXTENT_DATA && hst != first_host + length))
                        break;
                length += unit;
        }
        *ret = (struct image_layer_extent) {
                .length = MIN(length, limit),
                .kind = kind,
                .host_offset = first_host,
        };
        return 0;
}

static int decompress_zlib(struct qcow2_state *s, size_t in_len, struct vh_error *err) {
        z_stream *zs = s->zs;
        if (!zs) {
                zs = calloc(1, sizeof(*zs));
                if (!zs)
                        return vh_error_set(err, -ENOMEM, "out of memory");
                /* Raw deflate (no zlib header); -15 accepts every window size. */
                if (inflateInit2(zs, -15) != Z_OK) {
                        free(zs);
                        return vh_error_set(err, -ENOMEM, "cannot set up zlib");
                }
                s->zs = zs;
        } else if (inflateReset(zs) != Z_OK)
                return vh_error_set(err, -EIO, "cannot reset zlib");

        zs->next_in = s->cbuf;
        zs->avail_in = (uInt) in_len;
        zs->next_out = s->dbuf;
        zs->avail_out = s->h.cluster_size;
        int z = inflate(zs, Z_FINISH);
        /* The compressed size is rounded up to sectors, so input may be
         * left over: what counts is a whole cluster of output. */
        if ((z != Z_STREAM_END && z != Z_BUF_ERROR && z != Z_OK) || zs->avail_out != 0)
                return -EINVAL;
        return 0;
}

#ifdef HAVE_ZSTD
static int decompress_zstd(struct qcow2_state *s, size_t in_len, struct vh_error *err) {
        if (!s->zstd) {
                s->zstd = ZSTD_createDCtx();
                if (!s->zstd)
                        return vh_error_set(err, -ENOMEM, "cannot set up zstd");
        } else
                ZSTD_DCtx_reset(s->zstd, ZSTD_reset_session_only);

        ZSTD_inBuffer in = { s->cbuf, in_len, 0 };
        ZSTD_outBuffer out = { s->dbuf, s->h.cluster_size, 0 };
        while (out.pos < out.size) {
                size_t prev_in = in.pos, prev_out = out.pos;
                size_t z = ZSTD_decompressStream(s->zstd, &out, &in);
                if (ZSTD_isError(z))
                        return -EINVAL;
                if (in.pos == prev_in && out.pos == prev_out)
                        return -EINVAL;
        }
        return 0;
}
#endif

static int qcow2_read_compressed(struct vh_image *img, uint64_t offset, void *buf, size_t len,
                                 struct vh_error *err) {
        struct qcow2_state *s = state(img);
        const struct qcow2_header *h = &s->h;
        uint64_t cluster = offset >> h->cluster_bits;
        uint64_t in_cluster = offset & (h->cluster_size - 1);
        if (in_cluster + len > h->cluster_size)
                return vh_error_set(err, -EINVAL, "compressed read crosses a cluster boundary");

        const uint8_t *table;
        uint64_t index;
        int r = l2_lookup(img, cluster, &table, &index, err);
        if (r < 0)
                return r;
        uint64_t entry = table ? be64_load(table + index * h->l2_entry_size) : 0;
        if (!(entry & QCOW2_OFLAG_COMPRESSED))
                return vh_error_set(err, -EIO, "cluster %" PRIu64 " is no longer compressed", cluster);

        if (!s->dbuf_valid || s->dbuf_entry != entry) {
                unsigned csize_shift = 62 - (h->cluster_bits - 8);
                uint64_t csize_mask = (UINT64_C(1) << (h->cluster_bits - 8)) - 1;
                uint64_t coffset = entry & ((UINT64_C(1) << csize_shift) - 1);
                uint64_t nb_sectors = ((entry >> csize_shift) & csize_mask) + 1;
                uint64_t csize = nb_sectors * 512 - (coffset & 511);

                if (coffset == 0 || image_past_eof(img, coffset, 1))
                        return vh_error_set(err, -EINVAL,
                                            "L2 entry %" PRIu64 ": compressed data offset %#" PRIx64
                                            " is outside the file",
                                            index, coffset);
                if (!s->cbuf) {
                        s->cbuf = malloc((size_t) h->cluster_size * 2);
                        s->dbuf = malloc(h->cluster_size);
                        if (!s->cbuf || !s->dbuf)
                                return vh_error_set(err, -ENOMEM, "out of memory");
                }
                s->dbuf_valid = false;
                /* csize is at most two clusters by construction of the mask. */
                r = image_pread(img, s->cbuf, (size_t) csize, coffset, err);
                if (r < 0)
                        return r;
                if (h->compression_type == QCOW2_COMPRESSION_ZLIB)
                        r = decompress_zlib(s, (size_t) csize, err);
#ifdef HAVE_ZSTD
                else
                        r = decompress_zstd(s, (size_t) csize, err);
#endif
                if (r == -EINVAL)
                        return vh_error_set(err, -EINVAL,
                                            "compressed cluster at %#" PRIx64 " (guest cluster %" PRIu64
                                            ") does not decompress",
                                            coffset, cluster);
                if (r < 0)
                        return r;
                s->dbuf_entry = entry;
                s->dbuf_valid = true;
        }
        memcpy(buf, s->dbuf + in_cluster, len);
        return 0;
}

static int qcow2_fill_info(struct vh_image *img, struct vh_image_info *info, struct vh_error *err) {
        const struct qcow2_header *h = &state(img)->h;

        info->cluster_size = h->cluster_size;
        info->qcow2_version = h->version;
        info->lazy_refcounts = h->compatible_features & QCOW2_COMPAT_LAZY_REFCOUNTS;
        info->refcount_bits = 1u << h->refcount_order;
        info->corrupt = h->incompatible_features & QCOW2_INCOMPAT_CORRUPT;
        info->extended_l2 = h->incompatible_features & QCOW2_INCOMPAT_EXTL2;
        info->dirty_flag = h->incompatible_features & QCOW2_INCOMPAT_DIRTY;
        info->compression_type = h->compression_type == QCOW2_COMPRESSION_ZSTD ? "zstd" : "zlib";
        if (h->nb_snapshots > 0) {
                int r = qcow2_snapshots_describe(img, &info->snapshots, &info->n_snapshots, err);
                if (r < 0)
                        return r;
        }
        if (h->backing_file[0] && h->backing_format[0]) {
                info->backing_filename_format = strdup(h->backing_format);
                if (!info->backing_filename_format)
                        return vh_error_set(err, -ENOMEM, "out of memory");
        }
        return 0;
}

const struct image_driver image_driver_qcow2 = {
        .format = VH_IMAGE_FORMAT_QCOW2,
        .open = qcow2_open,
        .close = qcow2_close,
        .map = qcow2_map,
        .read_compressed = qcow2_read_compressed,
        .fill_info = qcow2_fill_info,
        .write = qcow2_write,
        .write_zeroes = qcow2_write_zeroes,
        .discard = qcow2_discard,
        .flush = qcow2_flush,
        .resize = qcow2_resize,
        .reopen_rw = qcow2_rw_open,
};
