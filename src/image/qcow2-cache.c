/* image/qcow2-cache.c: a small write-back cache of one-cluster tables (L2
 * tables, refcount blocks), least recently used out.
 *
 * The cache does not know the order in which tables may reach the disk;
 * the owner does (qcow2-alloc.c: refcount blocks before the L2 tables that
 * point at newly counted clusters). So a dirty table never leaves on its
 * own: when the victim of a miss is dirty, the owner's evict callback runs
 * first (it flushes everything in order, or writes one table when it is
 * already in the middle of such a flush), and only a clean slot is reused.
 * Pointers handed out stay valid until the next get on the same cache:
 * with at least QCOW2_CACHE_MIN_SLOTS slots, the table used just before is
 * never the victim. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "base/macro.h"
#include "image/image-internal.h"
#include "image/qcow2.h"

#define QCOW2_CACHE_MIN_SLOTS 4

struct qcow2_cache_slot {
        uint64_t offset; /* 0: empty */
        uint64_t last_used;
        bool dirty;
        uint8_t *table;
};

struct qcow2_cache {
        struct qcow2_cache_slot *slots;
        size_t n_slots;
        uint32_t table_size;
        uint64_t clock;
        qcow2_cache_evict_fn evict;
};

struct qcow2_cache *qcow2_cache_new(size_t n_slots, uint32_t table_size, qcow2_cache_evict_fn evict) {
        struct qcow2_cache *c = calloc(1, sizeof(*c));
        if (!c)
                return NULL;
        c->n_slots = MAX(n_slots, (size_t) QCOW2_CACHE_MIN_SLOTS);
        c->table_size = table_size;
        c->evict = evict;
        c->slots = calloc(c->n_slots, sizeof(*c->slots));
        if (!c->slots)
                return mfree(c);
        return c;
}

struct qcow2_cache *qcow2_cache_free(struct qcow2_cache *c) {
        if (!c)
                return NULL;
        for (size_t i = 0; i < c->n_slots; i++)
                free(c->slots[i].table);
        free(c->slots);
        free(c);
        return NULL;
}

static struct qcow2_cache_slot *find(struct qcow2_cache *c, uint64_t offset) {
        for (size_t i = 0; i < c->n_slots; i++)
                if (c->slots[i].table && c->slots[i].offset == offset)
                        return &c->slots[i];
        return NULL;
}

/* A clean slot to (re)use: an empty one, else the least recently used. */
static int victim(struct vh_image *img, struct qcow2_cache *c, struct qcow2_cache_slot **ret, struct vh_error *err) {
        for (;;) {
                struct qcow2_cache_slot *v = NULL;
                for (size_t i = 0; i < c->n_slots; i++) {
                        struct qcow2_cache_slot *s = &c->slots[i];
                        if (!s->table || s->offset == 0) {
                                v = s;
                                break;
                        }
                        if (!v || s->last_used < v->last_used)
                                v = s;
                }
                if (!v->dirty) {
                        if (!v->table) {
                                v->table = malloc(c->table_size);
                                if (!v->table)
                                        return vh_error_set(err, -ENOMEM, "out of memory for a metadata table");
                        }
                        *ret = v;
                        return 0;
                }
                if (!c->evict)
                        return vh_error_set(err, -EIO, "internal error: dirty table in a read-only cache");
                int r = c->evict(img, err);
                if (r < 0)
                        return r;
                if (v->dirty)
                        return vh_error_set(err, -EIO, "internal error: eviction left the table dirty");
        }
}

/* The slot for the table at 'offset': the one that holds it, or a clean
 * one made free for it (*ret_loaded false then). Making room may run the
 * owner's flush, and that flush may itself read this very table into
 * another slot (step 5 of qcow2_flush() decrements refcounts in whatever
 * block the freed clusters lie in). So the table is looked for again
 * afterwards: two slots for one table would each take part of the updates,
 * and the one written back last would undo the other's. */
static int slot_for(struct vh_image *img, struct qcow2_cache *c, uint64_t offset, struct qcow2_cache_slot **ret,
                    bool *ret_loaded, struct vh_error *err) {
        struct qcow2_cache_slot *s = find(c, offset);
        if (!s) {
                struct qcow2_cache_slot *v = NULL;
                int r = victim(img, c, &v, err);
                if (r < 0)
                        return r;
                s = find(c, offset);
                if (!s) {
                        *ret = v;
                        *ret_loaded = false;
                        return 0;
                }
        }
        *ret = s;
        *ret_loaded = true;
        return 0;
}

int qcow2_cache_get(struct vh_image *img, struct qcow2_cache *c, uint64_t offset, uint8_t **ret,
                    struct vh_error *err) {
        c->clock++;
        struct qcow2_cache_slot *s;
        bool loaded;
        int r = slot_for(img, c, offset, &s, &loaded, err);
        if (r < 0)
                return r;
        if (!loaded) {
                s->offset = 0;
                r = image_pread(img, s->table, c->table_size, offset, err);
                if (r < 0)
                        return r;
                s->offset = offset;
        }
        s->last_used = c->clock;
        *ret = s->table;
        return 0;
}

int qcow2_cache_get_new(struct vh_image *img, struct qcow2_cache *c, uint64_t offset, uint8_t **ret,
                        struct vh_error *err) {
        c->clock++;
        struct qcow2_cache_slot *s;
        bool loaded;
        int r = slot_for(img, c, offset, &s, &loaded, err);
        if (r < 0)
                return r;
        memset(s->table, 0, c->table_size);
        s->offset = offset;
        s->dirty = true;
        s->last_used = c->clock;
        *ret = s->table;
        return 0;
}

void qcow2_cache_mark_dirty(struct qcow2_cache *c, const uint8_t *table) {
        for (size_t i = 0; i < c->n_slots; i++)
                if (c->slots[i].table == table) {
                        c->slots[i].dirty = true;
                        return;
                }
}

bool qcow2_cache_is_dirty(const struct qcow2_cache *c) {
        for (size_t i = 0; c && i < c->n_slots; i++)
                if (c->slots[i].dirty)
                        return true;
        return false;
}

static int write_slot(struct vh_image *img, struct qcow2_cache *c, struct qcow2_cache_slot *s, const char *what,
                      struct vh_error *err) {
        int r = image_pwrite_all(img->fd, s->table, c->table_size, s->offset);
        if (r < 0)
                return vh_error_set(err, r, "%s: writing the %s at %#" PRIx64 " failed: %s", img->filename, what,
                                    s->offset, strerror(-r));
        s->dirty = false;
        if (s->offset + c->table_size > img->file_size)
                img->file_size = s->offset + c->table_size;
        return 0;
}

int qcow2_cache_write_dirty(struct vh_image *img, struct qcow2_cache *c, const char *what, struct vh_error *err) {
        /* In offset order: fewer seeks, and a crash leaves a prefix. */
        for (;;) {
                struct qcow2_cache_slot *next = NULL;
                for (size_t i = 0; i < c->n_slots; i++) {
                        struct qcow2_cache_slot *s = &c->slots[i];
                        if (s->dirty && (!next || s->offset < next->offset))
                                next = s;
                }
                if (!next)
                        return 0;
                int r = write_slot(img, c, next, what, err);
                if (r < 0)
                        return r;
        }
}

int qcow2_cache_write_one(struct vh_image *img, struct qcow2_cache *c, const char *what, struct vh_error *err) {
        struct qcow2_cache_slot *v = NULL;
        for (size_t i = 0; i < c->n_slots; i++) {
                struct qcow2_cache_slot *s = &c->slots[i];
                if (s->dirty && (!v || s->last_used < v->last_used))
                        v = s;
        }
        return v ? write_slot(img, c, v, what, err) : 0;
}

void qcow2_cache_drop(struct qcow2_cache *c, uint64_t offset) {
        struct qcow2_cache_slot *s = c ? find(c, offset) : NULL;
        if (s) {
                s->offset = 0;
                s->dirty = false;
        }
}
