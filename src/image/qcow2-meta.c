/* image/qcow2-meta.c: a raw view of a qcow2 file's metadata for the
 * inspection operations: header, L1 table, refcount table and blocks,
 * snapshot table, bitmap directory.
 *
 * The reader in qcow2.c answers "what does the guest see"; this file
 * answers "what do the tables say", including what the reader would stop
 * at, because 'check' must report it and 'map' must tell apart states the
 * reader merges (a zero cluster with and without a preallocated host
 * cluster). Every size taken from the file is bounded before it is used
 * (see the limits in qcow2.h and inspect.h). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/macro.h"
#include "image/inspect.h"

uint64_t qcow2_refblock_entry_get(const uint8_t *block, uint64_t index, unsigned order) {
        unsigned bits = 1u << order;
        if (bits < 8) {
                /* Sub-byte entries: entry 0 in the least significant bits. */
                unsigned shift = (unsigned) (index * bits % 8);
                return (block[index * bits / 8] >> shift) & ((1u << bits) - 1);
        }
        const uint8_t *p = block + index * (bits / 8);
        uint64_t v = 0;
        for (unsigned i = 0; i < bits / 8; i++)
                v = v << 8 | p[i];
        return v;
}

void qcow2_refblock_entry_set(uint8_t *block, uint64_t index, unsigned order, uint64_t value) {
        unsigned bits = 1u << order;
        if (bits < 8) {
                unsigned shift = (unsigned) (index * bits % 8);
                uint8_t mask = (uint8_t) (((1u << bits) - 1) << shift);
                uint8_t *b = &block[index * bits / 8];
                *b = (uint8_t) ((*b & ~mask) | ((value << shift) & mask));
                return;
        }
        uint8_t *p = block + index * (bits / 8);
        for (unsigned i = bits / 8; i > 0; i--) {
                p[i - 1] = (uint8_t) value;
                value >>= 8;
        }
}

uint64_t qcow2_refcount_metadata_size(uint64_t clusters, uint64_t cluster_size, unsigned refcount_order,
                                      uint64_t *ret_blocks, uint64_t *ret_table_clusters) {
        /* Refcount blocks count every cluster, themselves and the table
         * included; iterate until adding them needs no more of them. */
        uint64_t per_block = cluster_size * 8 >> refcount_order;
        uint64_t per_table_cluster = cluster_size / 8;
        uint64_t blocks = 0, table = 0, n = 0, last;
        do {
                last = n;
                blocks = DIV_ROUND_UP(clusters + table + blocks, per_block);
                table = DIV_ROUND_UP(blocks, per_table_cluster);
                n = clusters + blocks + table;
        } while (n != last);
        if (ret_blocks)
                *ret_blocks = blocks;
        if (ret_table_clusters)
                *ret_table_clusters = table;
        return (blocks + table) * cluster_size;
}

int qcow2_meta_pread(struct qcow2_meta *m, void *buf, size_t len, uint64_t offset, struct vh_error *err) {
        return image_pread_fd(m->fd, m->filename, buf, len, offset, err);
}

struct qcow2_meta *qcow2_meta_free(struct qcow2_meta *m) {
        if (!m)
                return NULL;
        free(m->l1);
        if (m->refblocks)
                for (uint64_t i = 0; i < m->reftable_entries; i++)
                        free(m->refblocks[i]);
        free(m->refblocks);
        free(m->reftable);
        qcow2_snapshot_table_free(m->snapshots, m->n_snapshots);
        for (uint32_t i = 0; i < m->n_bitmaps; i++)
                free(m->bitmaps[i].name);
        free(m->bitmaps);
        free(m);
        return NULL;
}

static int load_refblock(struct qcow2_meta *m, uint64_t index, uint8_t **ret) {
        if (!m->refblocks[index]) {
                uint8_t *b = malloc(m->h.cluster_size);
                if (!b)
                        return -ENOMEM;
                int r = qcow2_meta_pread(m, b, m->h.cluster_size, m->reftable[index] & QCOW2_REFT_OFFSET_MASK, NULL);
                if (r < 0) {
                        free(b);
                        return r;
                }
                m->refblocks[index] = b;
        }
        *ret = m->refblocks[index];
        return 0;
}

int qcow2_meta_get_refcount(struct qcow2_meta *m, uint64_t cluster, uint64_t *ret) {
        uint64_t index = cluster >> m->refblock_bits;
        if (index >= m->reftable_entries) {
                *ret = 0;
                return 0;
        }
        uint64_t block = m->reftable[index] & QCOW2_REFT_OFFSET_MASK;
        if (block == 0) {
                *ret = 0;
                return 0;
        }
        if (block & (m->h.cluster_size - 1))
                return -EIO;
        uint8_t *b;
        int r = load_refblock(m, index, &b);
        if (r < 0)
                return r;
        *ret = qcow2_refblock_entry_get(b, cluster & ((UINT64_C(1) << m->refblock_bits) - 1), m->h.refcount_order);
        return 0;
}

int qcow2_meta_set_refcount(struct qcow2_meta *m, uint64_t cluster, uint64_t value) {
        uint64_t index = cluster >> m->refblock_bits;
        if (index >= m->reftable_entries)
                return -ENOENT;
        uint64_t block = m->reftable[index] & QCOW2_REFT_OFFSET_MASK;
        if (block == 0)
                return -ENOENT;
        if (block & (m->h.cluster_size - 1))
                return -EIO;
        uint8_t *b;
        int r = load_refblock(m, index, &b);
        if (r < 0)
                return r;
        qcow2_refblock_entry_set(b, cluster & ((UINT64_C(1) << m->refblock_bits) - 1), m->h.refcount_order, value);
        return 0;
}

int qcow2_meta_refblock_sync(struct qcow2_meta *m, uint64_t index, struct vh_error *err) {
        if (index >= m->reftable_entries || !m->refblocks[index])
                return 0;
        uint64_t off = m->reftable[index] & QCOW2_REFT_OFFSET_MASK;
        int r = image_pwrite_all(m->fd, m->refblocks[index], m->h.cluster_size, off);
        if (r < 0)
                return vh_error_set(err, r, "%s: writing the refcount block at %#" PRIx64 " failed: %s", m->filename,
                                    off, strerror(-r));
        return 0;
}

int qcow2_meta_detect_metadata_preallocation(struct qcow2_meta *m, bool *ret) {
        /* QEMU's rule: if the clusters with a refcount clearly outnumber
         * the clusters the file system has allocated, the image was
         * preallocated with metadata only, and "allocated" in the tables
         * does not mean "holds data". */
        struct stat st;
        if (fstat(m->fd, &st) < 0)
                return negative_errno();
        uint64_t real_clusters = (uint64_t) st.st_blocks * 512 / m->h.cluster_size;
        uint64_t threshold = MAX(real_clusters * 10 / 9, real_clusters + 2);
        uint64_t end = DIV_ROUND_UP(m->file_len, m->h.cluster_size), count = 0;
        /* Past the refcount table every refcount is 0. */
        end = MIN(end, m->reftable_entries << m->refblock_bits);
        uint64_t per_block = UINT64_C(1) << m->refblock_bits;
        for (uint64_t i = 0; i < end && count < threshold; i++) {
                /* A refcount block that is not there holds only zeros: a
                 * sparse file of terabytes (what 'check -r all' of a
                 * damaged image may leave, as qemu-img's does) costs its
                 * table, not a step per cluster. */
                if (i % per_block == 0 && (m->reftable[i >> m->refblock_bits] & QCOW2_REFT_OFFSET_MASK) == 0) {
                        i += per_block - 1;
                        continue;
                }
                uint64_t rc;
                int r = qcow2_meta_get_refcount(m, i, &rc);
                if (r < 0)
                        return r;
                count += rc != 0;
        }
        *ret = count >= threshold;
        return 0;
}

void qcow2_snapshot_table_free(struct qcow2_snapshot *t, size_t n) {
        for (size_t i = 0; t && i < n; i++) {
                free(t[i].id);
                free(t[i].name);
                free(t[i].extra);
        }
        free(t);
}

/* Each entry is 40 bytes, then the extra data, the id and the name,
 * padded to 8. The padding of the last entry may lie past the end of the
 * file (QEMU does not write it). */
int qcow2_snapshot_table_read(int fd, const char *filename, uint64_t file_len, uint64_t offset, uint32_t nb,
                              unsigned flags, struct qcow2_snapshot **ret, size_t *ret_n, uint64_t *ret_bytes,
                              struct vh_error *err) {
        bool lenient = flags & QCOW2_SNAPSHOT_READ_LENIENT;
        struct qcow2_snapshot *t = NULL;
        size_t n = 0;
        uint64_t pos = offset;
        int r = 0;

        if (nb > 0) {
                t = calloc(nb, sizeof(*t));
                if (!t)
                        return vh_error_set(err, -ENOMEM, "out of memory");
        }
        for (; n < nb; n++) {
                struct qcow2_snapshot *sn = &t[n];
                uint8_t fixed[40];
                if (pos - offset + sizeof(fixed) > QCOW2_MAX_SNAPSHOT_TABLE) {
                        if (lenient)
                                break;
                        r = vh_error_set(err, -EFBIG, "snapshot table is larger than %" PRIu64 " bytes",
                                         QCOW2_MAX_SNAPSHOT_TABLE);
                        goto fail;
                }
                if (!lenient && (pos > file_len || sizeof(fixed) > file_len - pos)) {
                        r = vh_error_set(err, -EINVAL, "snapshot table entry %zu at %#" PRIx64 " is past the end of the file",
                                         n, pos);
                        goto fail;
                }
                /* image_pread_fd() reads zeros past the end of the file. */
                r = image_pread_fd(fd, filename, fixed, sizeof(fixed), pos, err);
                if (r < 0)
                        goto fail;
                sn->l1_offset = be64_load(fixed);
                sn->l1_size = be32_load(fixed + 8);
                sn->id_len = be16_load(fixed + 12);
                sn->name_len = be16_load(fixed + 14);
                sn->date_sec = be32_load(fixed + 16);
                sn->date_nsec = be32_load(fixed + 20);
                sn->vm_clock_nsec = be64_load(fixed + 24);
                sn->vm_state_size32 = be32_load(fixed + 32);
                sn->extra_stored = sn->extra_size = be32_load(fixed + 36);
                if (sn->extra_size > QCOW2_MAX_SNAPSHOT_EXTRA) {
                        if (!lenient) {
                                r = vh_error_set(err, -EFBIG,
                                                 "Too much extra metadata in snapshot table entry %zu (%" PRIu32
                                                 " > %d bytes)",
                                                 n, sn->extra_size, QCOW2_MAX_SNAPSHOT_EXTRA);
                                goto fail;
                        }
                        sn->extra_size = QCOW2_MAX_SNAPSHOT_EXTRA;
                }
                if (sn->id_len > QCOW2_MAX_SNAPSHOT_ID) {
                        r = vh_error_set(err, -EINVAL, "snapshot %zu: id of %u bytes (limit %d)", n,
                                         (unsigned) sn->id_len, QCOW2_MAX_SNAPSHOT_ID);
                        goto fail;
                }
                uint64_t var = (uint64_t) sn->extra_stored + sn->id_len + sn->name_len;
                uint64_t entry = ALIGN_UP(sizeof(fixed) + var, (uint64_t) 8);
                if (pos - offset + entry > QCOW2_MAX_SNAPSHOT_TABLE) {
                        if (lenient)
                                break;
                        r = vh_error_set(err, -EFBIG, "snapshot table is larger than %" PRIu64 " bytes",
                                         QCOW2_MAX_SNAPSHOT_TABLE);
                        goto fail;
                }
                if (!lenient && sizeof(fixed) + var > file_len - pos) {
                        r = vh_error_set(err, -EINVAL, "snapshot table entry %zu at %#" PRIx64 " is past the end of the file",
                                         n, pos);
                        goto fail;
                }
                sn->id = calloc(1, (size_t) sn->id_len + 1);
                sn->name = calloc(1, (size_t) sn->name_len + 1);
                sn->extra = calloc(1, MAX((size_t) sn->extra_size, (size_t) 1));
                if (!sn->id || !sn->name || !sn->extra) {
                        r = vh_error_set(err, -ENOMEM, "out of memory");
                        goto fail;
                }
                uint64_t p = pos + sizeof(fixed);
                r = image_pread_fd(fd, filename, sn->extra, sn->extra_size, p, err);
                if (r >= 0)
                        r = image_pread_fd(fd, filename, sn->id, sn->id_len, p + sn->extra_stored, err);
                if (r >= 0)
                        r = image_pread_fd(fd, filename, sn->name, sn->name_len, p + sn->extra_stored + sn->id_len,
                                           err);
                if (r < 0)
                        goto fail;
                pos += entry;
        }
        *ret = t;
        *ret_n = n;
        if (ret_bytes)
                *ret_bytes = pos - offset;
        return 0;
fail:
        qcow2_snapshot_table_free(t, n + 1);
        return r;
}

static uint64_t entry_bytes(const struct qcow2_snapshot *sn) {
        return ALIGN_UP(40 + (uint64_t) sn->extra_size + strlen(sn->id) + strlen(sn->name), (uint64_t) 8);
}

int qcow2_snapshot_table_serialize(const struct qcow2_snapshot *t, size_t n, uint32_t cluster_size,
                                   uint8_t **ret_buf, uint64_t *ret_bytes, struct vh_error *err) {
        uint64_t bytes = 0;
        for (size_t i = 0; i < n; i++)
                bytes += entry_bytes(&t[i]);
        if (bytes > QCOW2_MAX_SNAPSHOT_TABLE)
                return vh_error_set(err, -EFBIG, "the snapshot table would exceed %" PRIu64 " bytes",
                                    QCOW2_MAX_SNAPSHOT_TABLE);
        uint64_t clusters = MAX(DIV_ROUND_UP(bytes, (uint64_t) cluster_size), (uint64_t) 1);
        uint8_t *buf = calloc(1, clusters * cluster_size);
        if (!buf)
                return vh_error_set(err, -ENOMEM, "out of memory");
        uint8_t *p = buf;
        for (size_t i = 0; i < n; i++) {
                const struct qcow2_snapshot *sn = &t[i];
                size_t id_len = strlen(sn->id), name_len = strlen(sn->name);
                be64_store(p, sn->l1_offset);
                be32_store(p + 8, sn->l1_size);
                be16_store(p + 12, (uint16_t) id_len);
                be16_store(p + 14, (uint16_t) name_len);
                be32_store(p + 16, sn->date_sec);
                be32_store(p + 20, sn->date_nsec);
                be64_store(p + 24, sn->vm_clock_nsec);
                be32_store(p + 32, sn->vm_state_size32);
                be32_store(p + 36, sn->extra_size);
                memcpy(p + 40, sn->extra, sn->extra_size);
                memcpy(p + 40 + sn->extra_size, sn->id, id_len);
                memcpy(p + 40 + sn->extra_size + id_len, sn->name, name_len);
                p += entry_bytes(sn);
        }
        *ret_buf = buf;
        *ret_bytes = bytes;
        return 0;
}

/* Finds the bitmaps extension in the header area, and reads the bitmap
 * directory it points at (spec: "Bitmaps extension", "Bitmap directory"). */
static int load_bitmaps(struct qcow2_meta *m, const uint8_t *hdr, size_t hdr_len, struct vh_error *err) {
        const struct qcow2_header *h = &m->h;
        if (h->version < 3)
                return 0;
        uint64_t end = h->backing_file_offset ? MIN(h->backing_file_offset, (uint64_t) hdr_len) : hdr_len;
        uint64_t off = h->header_length;
        uint32_t nb = 0;
        bool found = false;
        for (unsigned n = 0; n < QCOW2_MAX_HEADER_EXTENSIONS && off + 8 <= end; n++) {
                uint32_t type = be32_load(hdr + off), len = be32_load(hdr + off + 4);
                if (type == QCOW2_EXT_END || len > end - off - 8)
                        break;
                if (type == QCOW2_EXT_BITMAPS && len >= 24) {
                        nb = be32_load(hdr + off + 8);
                        m->bitmap_directory_size = be64_load(hdr + off + 16);
                        m->bitmap_directory_offset = be64_load(hdr + off + 24);
                        found = true;
                }
                off += 8 + ALIGN_UP((uint64_t) len, 8);
        }
        /* Without the autoclear bit a program that did not know bitmaps
         * wrote the image: QEMU then ignores them (and so do we). */
        if (!found || !(h->autoclear_features & QCOW2_AUTOCLEAR_BITMAPS) || nb == 0)
                return 0;
        if (nb > QCOW2_MAX_BITMAPS)
                return vh_error_set(err, -EINVAL, "bitmaps extension: %" PRIu32 " bitmaps is more than %d", nb,
                                    QCOW2_MAX_BITMAPS);
        if (m->bitmap_directory_size > QCOW2_MAX_BITMAP_DIRECTORY ||
            m->bitmap_directory_offset > m->file_len ||
            m->bitmap_directory_size > m->file_len - m->bitmap_directory_offset)
                return vh_error_set(err, -EINVAL, "bitmaps extension: the bitmap directory (%#" PRIx64 ", %" PRIu64
                                    " bytes) is not inside the file",
                                    m->bitmap_directory_offset, m->bitmap_directory_size);
        m->has_bitmaps = true;

        size_t dsize = (size_t) m->bitmap_directory_size;
        _cleanup_free_ uint8_t *dir = malloc(MAX(dsize, (size_t) 1));
        if (!dir)
                return vh_error_set(err, -ENOMEM, "out of memory");
        int r = qcow2_meta_pread(m, dir, dsize, m->bitmap_directory_offset, err);
        if (r < 0)
                return r;
        m->bitmaps = calloc(nb, sizeof(*m->bitmaps));
        if (!m->bitmaps)
                return vh_error_set(err, -ENOMEM, "out of memory");
        size_t p = 0;
        for (uint32_t i = 0; i < nb; i++) {
                if (dsize - p < 24)
                        return vh_error_set(err, -EINVAL, "bitmap directory entry %" PRIu32 " is truncated", i);
                struct qcow2_bitmap_entry *b = &m->bitmaps[i];
                m->n_bitmaps = i + 1;
                b->table_offset = be64_load(dir + p);
                b->table_size = be32_load(dir + p + 8);
                b->flags = be32_load(dir + p + 12);
                b->granularity_bits = dir[p + 17];
                uint16_t name_size = be16_load(dir + p + 18);
                uint32_t extra = be32_load(dir + p + 20);
                if (extra > QCOW2_MAX_SNAPSHOT_EXTRA || (uint64_t) 24 + extra + name_size > dsize - p)
                        return vh_error_set(err, -EINVAL, "bitmap directory entry %" PRIu32 " is truncated", i);
                if (b->table_size > QCOW2_MAX_BITMAP_TABLE_ENTRIES)
                        return vh_error_set(err, -EINVAL, "bitmap %" PRIu32 ": table of %" PRIu32 " entries is too large",
                                            i, b->table_size);
                b->name = strndup((const char *) dir + p + 24 + extra, name_size);
                if (!b->name)
                        return vh_error_set(err, -ENOMEM, "out of memory");
                p += ALIGN_UP((size_t) 24 + extra + name_size, (size_t) 8);
        }
        return 0;
}

int qcow2_meta_load(int fd, const char *filename, unsigned what, struct qcow2_meta **ret, struct vh_error *err) {
        _cleanup_(qcow2_meta_freep) struct qcow2_meta *m = calloc(1, sizeof(*m));
        if (!m)
                return vh_error_set(err, -ENOMEM, "out of memory");
        m->fd = fd;
        m->filename = filename;

        struct stat st;
        if (fstat(fd, &st) < 0)
                return vh_error_set(err, negative_errno(), "%s: cannot stat: %m", filename);
        uint64_t size = (uint64_t) st.st_size;
        m->file_len = ALIGN_UP(size, (uint64_t) 512);

        uint8_t first[512];
        size_t have = (size_t) MIN((uint64_t) sizeof(first), size);
        int r = qcow2_meta_pread(m, first, have, 0, err);
        if (r < 0)
                return r;
        size_t need = qcow2_header_need(first, have, size);
        _cleanup_free_ uint8_t *hdr = malloc(MAX(need, (size_t) 1));
        if (!hdr)
                return vh_error_set(err, -ENOMEM, "out of memory");
        r = qcow2_meta_pread(m, hdr, need, 0, err);
        if (r < 0)
                return r;
        r = qcow2_header_parse(hdr, need, size, &m->h, err);
        if (r == -EAGAIN)
                r = vh_error_set(err, -EINVAL, "header could not be read");
        if (r < 0)
                return r;
        const struct qcow2_header *h = &m->h;

        if (h->l1_size > 0) {
                m->l1 = malloc((size_t) h->l1_size * 8);
                if (!m->l1)
                        return vh_error_set(err, -ENOMEM, "out of memory");
                r = qcow2_meta_pread(m, m->l1, (size_t) h->l1_size * 8, h->l1_table_offset, err);
                if (r < 0)
                        return r;
                for (uint32_t i = 0; i < h->l1_size; i++)
                        m->l1[i] = be64_load((const uint8_t *) &m->l1[i]);
        }

        m->reftable_entries = ((uint64_t) h->refcount_table_clusters << h->cluster_bits) / 8;
        m->reftable = malloc(m->reftable_entries * 8);
        m->refblocks = calloc(m->reftable_entries, sizeof(*m->refblocks));
        if (!m->reftable || !m->refblocks)
                return vh_error_set(err, -ENOMEM, "out of memory");
        r = qcow2_meta_pread(m, m->reftable, m->reftable_entries * 8, h->refcount_table_offset, err);
        if (r < 0)
                return r;
        for (uint64_t i = 0; i < m->reftable_entries; i++)
                m->reftable[i] = be64_load((const uint8_t *) &m->reftable[i]);
        m->refblock_bits = h->cluster_bits + 3 - h->refcount_order;

        if (what & QCOW2_META_SNAPSHOTS) {
                r = qcow2_snapshot_table_read(m->fd, m->filename, m->file_len, m->h.snapshots_offset,
                                              m->h.nb_snapshots, QCOW2_SNAPSHOT_READ_LENIENT, &m->snapshots, &m->n_snapshots,
                                              &m->snapshots_size, err);
                if (r < 0)
                        return r;
        }
        if (what & QCOW2_META_BITMAPS) {
                r = load_bitmaps(m, hdr, need, err);
                if (r < 0)
                        return r;
        }
        *ret = TAKE_PTR(m);
        return 0;
}
