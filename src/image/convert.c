/* image/convert.c: 'img convert': copies what a guest sees in an image
 * (through its backing chain) into a new standalone raw or qcow2 image.
 *
 * The source is walked with vh_image_map(): ranges known to read as zeros
 * (unallocated clusters without backing data, zero clusters, holes in a
 * raw file found with SEEK_DATA/SEEK_HOLE) are skipped without reading.
 * What is read is checked for zeros once more, so an image whose zeros
 * were written out as data still converts to a small file: raw output is
 * sparse (ftruncate, then only non-zero blocks are written), qcow2 output
 * leaves all-zero clusters unallocated and writes the rest sequentially
 * (see qcow2-write.c for the order of the metadata).
 *
 * Like qemu-img, zeros are left out only in runs of at least the sparse
 * size (-S, 4 KiB by default); -S 0 writes everything. With -c, qcow2
 * clusters are stored zlib-compressed. With -B the output is an overlay of
 * the given backing file and holds only the clusters whose content differs
 * from it (zero clusters where the backing file has data and the source
 * has zeros); when that file is part of the source's own chain, ranges the
 * source takes from it are skipped without reading.
 *
 * Reading and writing overlap: usually several workers copy windows of
 * the disk in parallel, each asking the kernel to read ahead the data of
 * a window further on (convert_loop_parallel); where the output must be
 * written in one order (-c), a reader thread maps and reads the source a
 * few chunks ahead of the writer (convert_loop_threaded); with -B, which
 * reads the output's backing file while writing, one thread does both.
 *
 * The cache mode (-t) decides how the output reaches the disk: unsafe
 * writes it to the page cache only, writeback also flushes it before it
 * is renamed into place, none writes the data with O_DIRECT (a second
 * descriptor; metadata still goes through the page cache) and flushes.
 * Starting writeback early with sync_file_range() was measured and made
 * the durable modes slower on this project's machine, so it is not done. */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/macro.h"
#include "image/convert-progress.h"
#include "image/image-internal.h"
#include "image/qcow2.h"

/* How much is read from the source at a time; a multiple of every qcow2
 * cluster size. */
#define CONVERT_CHUNK (UINT64_C(2) << 20)
/* qemu-img's default sparse size: runs of zeros at least this long are
 * not written. */
#define DEFAULT_SPARSE_SIZE UINT64_C(4096)
/* Source depth that never matches. */
#define NO_DEPTH UINT32_MAX

struct convert_target {
        uint64_t unit; /* zero detection granularity; divides CONVERT_CHUNK */
        /* Takes 'len' bytes of guest data at 'offset' (unit aligned); 'buf'
         * is zero-padded up to a whole unit. */
        int (*emit)(struct convert_target *t, uint64_t offset, const uint8_t *buf, uint64_t len, struct vh_error *err);
        int fd;
        struct qcow2_writer *qcow2;
        const char *path; /* for messages */
        uint64_t sparse;  /* minimal run of zeros left out; 0: write everything */
        bool compress;
        bool flush; /* the output is flushed before it is renamed into place */
        int direct_fd; /* -t none: the output opened again with O_DIRECT, else -1 */
        bool zero_clusters; /* qcow2 version 3: zero flags can hide backing data */
        struct vh_image *backing; /* -B: the output's backing file */
        unsigned backing_depth;   /* where it sits in the source's chain, or NO_DEPTH */
        uint8_t *bbuf;            /* the backing file's content of a chunk */
};

/* O_DIRECT needs buffer, offset and length aligned to the disk's sector
 * size; 4 KiB suits disks with 4 KiB sectors too. */
#define DIRECT_ALIGN UINT64_C(4096)

/* Writes guest data to the output: past the page cache with -t none when
 * it is aligned, else through it. */
static int write_data(struct convert_target *t, const uint8_t *buf, size_t len, uint64_t offset) {
        if (t->direct_fd >= 0 && (uintptr_t) buf % DIRECT_ALIGN == 0 && offset % DIRECT_ALIGN == 0 &&
            len % DIRECT_ALIGN == 0) {
                int r = image_pwrite_all(t->direct_fd, buf, len, offset);
                /* A file system may refuse some direct writes; the same
                 * bytes through the page cache are just as good. */
                if (r != -EINVAL)
                        return r;
        }
        return image_pwrite_all(t->fd, buf, len, offset);
}

/* Mapped source data (see map_data()) faults when it is read after the
 * file shrank under the mapping, SIGBUS: QEMU's locks keep QEMU and vmhost
 * from resizing it, but not truncate(1) or another machine's writer on a
 * shared file system. Code that reads mapped data in user space runs under
 * a guard that turns that fault into an error of this convert. The
 * handler is installed once, and only where SIGBUS has its default action:
 * a program with a SIGBUS handler of its own gets no mappings. A SIGBUS
 * outside a guard gets the default action again, as if there were none.
 * (The kernel's own reads of a mapping, pwrite() from it, return EFAULT.) */
static __thread sigjmp_buf *bus_guard;
static bool bus_guard_installed;
static pthread_once_t bus_guard_once = PTHREAD_ONCE_INIT;

static void bus_handler(int sig) {
        sigjmp_buf *jb = bus_guard;
        if (jb) {
                bus_guard = NULL;
                siglongjmp(*jb, 1);
        }
        /* Not a guarded read: the faulting access runs again and ends the
         * process, as without this handler. */
        signal(sig, SIG_DFL);
}

static void bus_guard_install(void) {
        struct sigaction old;
        if (sigaction(SIGBUS, NULL, &old) < 0 || (old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL)
                return;
        /* SA_NODEFER: SIGBUS stays unblocked after the jump, which does
         * not restore the signal mask (sigsetjmp(.., 0): no syscall). */
        struct sigaction sa = { .sa_handler = bus_handler, .sa_flags = SA_NODEFER };
        sigemptyset(&sa.sa_mask);
        bus_guard_installed = sigaction(SIGBUS, &sa, NULL) == 0;
}

static int source_shrank(struct vh_error *err) {
        return vh_error_set(err, -EIO, "the source image shrank while it was being converted "
                                       "(truncated by a program that ignores image locks?)");
}

static int emit_raw_unguarded(struct convert_target *t, uint64_t offset, const uint8_t *buf, uint64_t len,
                              struct vh_error *err) {
        /* Write everything but runs of zero units at least t->sparse long;
         * those stay holes. */
        uint64_t pos = 0;
        while (pos < len) {
                uint64_t start = pos, zeros = 0;
                /* Data up to the next long enough run of zeros. */
                while (pos < len) {
                        uint64_t n = MIN(t->unit, len - pos);
                        if (t->sparse && image_buffer_is_zero(buf + pos, (size_t) n)) {
                                uint64_t z = pos;
                                while (z < len && image_buffer_is_zero(buf + z, (size_t) MIN(t->unit, len - z)))
                                        z += MIN(t->unit, len - z);
                                if (z - pos >= t->sparse || z == len) {
                                        zeros = z - pos;
                                        break;
                                }
                                pos = z;
                                continue;
                        }
                        pos += n;
                }
                if (pos > start) {
                        int r = write_data(t, buf + start, (size_t) (pos - start), offset + start);
                        if (r == -EFAULT) /* only mapped source data can be a bad address */
                                return source_shrank(err);
                        if (r < 0)
                                return vh_error_set(err, r, "%s: write at %" PRIu64 " failed: %s", t->path,
                                                    offset + start, strerror(-r));
                }
                pos += zeros;
        }
        return 0;
}

/* 'buf' may be mapped source data: its zero checks run under the guard. */
static int emit_raw(struct convert_target *t, uint64_t offset, const uint8_t *buf, uint64_t len,
                    struct vh_error *err) {
        sigjmp_buf jb;
        if (sigsetjmp(jb, 0))
                return source_shrank(err);
        bus_guard = &jb;
        int r = emit_raw_unguarded(t, offset, buf, len, err);
        bus_guard = NULL;
        return r;
}

static int emit_qcow2(struct convert_target *t, uint64_t offset, const uint8_t *buf, uint64_t len,
                      struct vh_error *err) {
        int r;
        if (t->backing) {
                r = image_read_view(t->backing, offset, t->bbuf, ALIGN_UP(len, t->unit), err);
                if (r < 0)
                        return r;
        }
        uint64_t zero_run = 0; /* zero clusters just before 'pos' not yet decided on */
        for (uint64_t pos = 0; pos < len; pos += t->unit) {
                /* A partial last cluster is zero-padded by the caller. */
                const uint8_t *c = buf + pos;
                uint64_t guest = (offset + pos) / t->unit;
                bool zero = image_buffer_is_zero(c, (size_t) t->unit);

                if (t->backing && t->sparse && memcmp(c, t->bbuf + pos, (size_t) t->unit) == 0)
                        continue; /* the backing file has it already */
                if (t->backing && zero && t->zero_clusters && t->sparse) {
                        r = qcow2_writer_add_zero_cluster(t->qcow2, guest, err);
                        if (r < 0)
                                return image_error_prefix(err, r, t->path);
                        continue;
                }
                if (!t->backing && zero && t->sparse) {
                        /* Decided once the run of zero clusters ends: runs
                         * shorter than the sparse size are written. */
                        zero_run++;
                        bool last = pos + t->unit >= len ||
                                    !image_buffer_is_zero(c + t->unit, (size_t) t->unit);
                        if (!last)
                                continue;
                        if (zero_run * t->unit >= t->sparse) {
                                zero_run = 0;
                                continue;
                        }
                        for (uint64_t k = zero_run; k > 1; k--) {
                                r = qcow2_writer_add_cluster(t->qcow2, guest - (k - 1), c, err);
                                if (r < 0)
                                        return image_error_prefix(err, r, t->path);
                        }
                        zero_run = 0;
                }
                r = t->compress ? qcow2_writer_add_compressed(t->qcow2, guest, c, err)
                                : qcow2_writer_add_cluster(t->qcow2, guest, c, err);
                if (r < 0)
                        return image_error_prefix(err, r, t->path);
        }
        return 0;
}

/* Finds the next range at or after '*off' that the output must hold,
 * reads it into 'buf' (CONVERT_CHUNK bytes) and sets '*off' to its start
 * and '*ret_n' to its length; 0 at the end of the disk. */
static int next_chunk(struct vh_image *src, struct convert_target *t, uint64_t *off, uint8_t *buf, uint64_t *ret_n,
                      struct vh_error *err) {
        const uint64_t size = vh_image_virtual_size(src);
        const uint64_t unit = t->unit;

        while (*off < size) {
                struct vh_image_extent e;
                int r = vh_image_map(src, *off, size - *off, &e, err);
                if (r < 0)
                        return r;

                /* Ranges the output need not hold: zeros (where the output's
                 * backing file reads as zeros too), and what the source
                 * takes from the output's own backing file. */
                bool skip = false;
                if (!t->sparse)
                        skip = false;
                else if (t->backing_depth != NO_DEPTH && e.depth >= t->backing_depth)
                        skip = true;
                else if (e.zero && !t->backing)
                        skip = true;
                else if (e.zero) {
                        r = image_view_is_zero(t->backing, *off, e.length, &skip, err);
                        if (r < 0)
                                return r;
                }

                uint64_t n;
                if (skip) {
                        /* Skip the whole units the zero range covers. */
                        uint64_t end = *off + e.length;
                        if (end >= size) {
                                *off = size;
                                break;
                        }
                        uint64_t skip_to = end / unit * unit;
                        if (skip_to > *off) {
                                *off = skip_to;
                                continue;
                        }
                        n = unit; /* zeros and data share this unit */
                } else
                        n = MIN(CONVERT_CHUNK, ALIGN_UP(e.length, unit));
                n = MIN(n, size - *off);

                r = vh_image_read(src, *off, buf, (size_t) n, err);
                if (r < 0)
                        return r;
                memset(buf + n, 0, (size_t) (ALIGN_UP(n, unit) - n));
                *ret_n = n;
                return 0;
        }
        *ret_n = 0;
        return 0;
}

/* The reader thread fills a ring of chunks while the main thread writes
 * them out, so that reading the source (often from a cold cache) and
 * writing the output overlap. Only the reader touches the source images
 * and only the writer the output. */
#define CONVERT_RING 4

struct convert_ring {
        pthread_mutex_t lock;
        pthread_cond_t changed;
        struct {
                uint8_t *buf;
                uint64_t off, n; /* n == 0: the end */
        } slot[CONVERT_RING];
        unsigned head, count; /* filled slots start at 'head' */
        bool stop;            /* the writer gave up */
        int error;            /* the reader's, once it ended */
        struct vh_error err;

        struct vh_image *src;
        struct convert_target *t;
};

static void *convert_reader(void *userdata) {
        struct convert_ring *q = userdata;
        uint64_t off = 0;
        for (;;) {
                pthread_mutex_lock(&q->lock);
                while (q->count == CONVERT_RING && !q->stop)
                        pthread_cond_wait(&q->changed, &q->lock);
                bool stop = q->stop;
                unsigned i = (q->head + q->count) % CONVERT_RING;
                pthread_mutex_unlock(&q->lock);
                if (stop)
                        return NULL;

                /* The slot is ours until it is counted. */
                uint64_t n = 0;
                int r = next_chunk(q->src, q->t, &off, q->slot[i].buf, &n, &q->err);

                pthread_mutex_lock(&q->lock);
                q->slot[i].off = off;
                q->slot[i].n = r < 0 ? 0 : n;
                q->count++;
                if (r < 0)
                        q->error = r;
                pthread_cond_broadcast(&q->changed);
                pthread_mutex_unlock(&q->lock);
                if (r < 0 || n == 0)
                        return NULL;
                off += n;
        }
}

static int convert_loop_threaded(struct vh_image *src, struct convert_target *t,
                                 const struct vh_image_convert_options *opts, struct vh_error *err) {
        const uint64_t size = vh_image_virtual_size(src);
        struct convert_ring q = { .src = src, .t = t };
        int r = 0;

        for (unsigned i = 0; i < CONVERT_RING; i++) {
                q.slot[i].buf = aligned_alloc(4096, (size_t) CONVERT_CHUNK);
                if (!q.slot[i].buf)
                        r = vh_error_set(err, -ENOMEM, "out of memory");
        }
        pthread_t reader;
        bool started = false;
        if (r >= 0) {
                pthread_mutex_init(&q.lock, NULL);
                pthread_cond_init(&q.changed, NULL);
                int e = pthread_create(&reader, NULL, convert_reader, &q);
                if (e != 0)
                        r = vh_error_set(err, -e, "cannot start the reader thread: %s", strerror(e));
                else
                        started = true;
        }

        while (r >= 0) {
                pthread_mutex_lock(&q.lock);
                while (q.count == 0)
                        pthread_cond_wait(&q.changed, &q.lock);
                unsigned i = q.head;
                uint64_t off = q.slot[i].off, n = q.slot[i].n;
                int error = q.error;
                pthread_mutex_unlock(&q.lock);

                if (n == 0) {
                        if (error < 0) {
                                if (err)
                                        *err = q.err;
                                r = error;
                        }
                        break;
                }
                r = image_progress(opts->progress, opts->userdata, off, size);
                if (r >= 0)
                        r = t->emit(t, off, q.slot[i].buf, n, err);

                pthread_mutex_lock(&q.lock);
                q.head = (q.head + 1) % CONVERT_RING;
                q.count--;
                pthread_cond_broadcast(&q.changed);
                pthread_mutex_unlock(&q.lock);
        }

        if (started) {
                pthread_mutex_lock(&q.lock);
                q.stop = true;
                pthread_cond_broadcast(&q.changed);
                pthread_mutex_unlock(&q.lock);
                pthread_join(reader, NULL);
                pthread_cond_destroy(&q.changed);
                pthread_mutex_destroy(&q.lock);
        }
        for (unsigned i = 0; i < CONVERT_RING; i++)
                free(q.slot[i].buf);
        if (r >= 0)
                r = image_progress(opts->progress, opts->userdata, size, size);
        return r;
}

/* ---- Parallel copy ----
 *
 * Several workers, each with its own handle on the source chain (the
 * image objects are not shared between threads), read fixed windows of
 * the disk. Raw output is position-independent: each worker writes what
 * it read. For qcow2 output the main thread goes through the windows in
 * guest order and assigns host clusters (qcow2_writer_reserve_cluster),
 * so the file is laid out exactly as the sequential path lays it out, and
 * the worker that read a window then writes it there. Both the reads
 * (from a cold cache) and the page-cache writes then run on every core,
 * as qemu-img's coroutines do. */
/* CONVERT_WORKERS, CONVERT_SLOTS and CONVERT_WINDOW: image-internal.h. */

struct convert_window {
        enum { WINDOW_EMPTY, WINDOW_READ, WINDOW_PLANNED } state;
        uint64_t index;
        uint8_t *buf;              /* CONVERT_WINDOW bytes, read data zero padded to units */
        uint64_t *seg_off, *seg_len; /* guest ranges read */
        const uint8_t **seg_data;    /* where each one's bytes are: in 'buf' or a mapping */
        size_t n_seg;
        void **map_addr;   /* mappings of the source the segments point into */
        size_t *map_len;
        size_t n_map;
        const uint8_t **plan_data; /* qcow2: what each run writes */
        uint64_t *plan_host, *plan_len; /* and where it goes */
        size_t n_plan;
        int error;
        struct vh_error err;
};

struct convert_par {
        pthread_mutex_t lock;
        pthread_cond_t changed;
        struct convert_target *t;
        uint64_t size, n_windows;
        struct convert_window slot[CONVERT_SLOTS];
        bool stop;
        int error; /* the first write error */
        struct vh_error err;
        /* Held by a worker while it writes a window through the page
         * cache. The file system takes the file's inode lock for every
         * such write anyway (ext4 does), so they never ran in parallel; but
         * workers waiting for that lock spin on it, on the core the other
         * workers would map and check their next windows on. Waiting here
         * sleeps instead: raw -> qcow2 spent 6 to 10% of its samples
         * spinning (rwsem_spin_on_owner) before. */
        pthread_mutex_t write_lock;
        uint64_t next_raw; /* raw output: the next window to claim */
        uint64_t done;     /* raw output: bytes of windows finished */
};

struct convert_worker {
        struct convert_par *par;
        struct vh_image *src; /* this worker's own handle on the chain */
        /* By chain depth: whether data may be mapped from that layer
         * rather than read (see map_safe()). */
        bool map_ok[VH_IMAGE_MAX_CHAIN_DEPTH + 1];
        unsigned id;
        pthread_t thread;
        bool started;
};

static void add_segment(struct convert_window *w, uint64_t pos, uint64_t n, const uint8_t *data) {
        size_t i = w->n_seg;
        if (i > 0 && w->seg_off[i - 1] + w->seg_len[i - 1] == pos && w->seg_data[i - 1] + w->seg_len[i - 1] == data) {
                w->seg_len[i - 1] += n;
                return;
        }
        w->seg_off[i] = pos;
        w->seg_len[i] = n;
        w->seg_data[i] = data;
        w->n_seg++;
}

static void unmap_window(struct convert_window *w) {
        for (size_t i = 0; i < w->n_map; i++)
                munmap(w->map_addr[i], w->map_len[i]);
        w->n_map = 0;
}

/* Where the first part of [off, off + len) of what 'img' shows is stored:
 * '*ret_layer' and '*ret_host' when it is plain data in one layer's file
 * (NULL otherwise: zeros, compressed), and that part's length. */
static int locate(struct vh_image *img, uint64_t off, uint64_t len, struct vh_image **ret_layer, uint64_t *ret_host,
                  uint64_t *ret_len, struct vh_error *err) {
        for (;;) {
                struct image_layer_extent e;
                int r = img->driver->map(img, off, len, &e, err);
                if (r < 0)
                        return image_error_prefix(err, r, img->filename);
                if (e.length == 0)
                        return vh_error_set(err, -EIO, "%s: internal error: empty extent at %" PRIu64, img->filename,
                                            off);
                e.length = MIN(e.length, len);
                if (e.kind == IMAGE_EXTENT_UNALLOCATED && img->backing && off < img->backing->virtual_size) {
                        len = MIN(e.length, img->backing->virtual_size - off);
                        img = img->backing;
                        continue;
                }
                *ret_layer = e.kind == IMAGE_EXTENT_DATA ? img : NULL;
                *ret_host = e.host_offset;
                *ret_len = e.length;
                return 0;
        }
}

/* Maps 'len' bytes at 'host' of 'layer' for reading, populated at once;
 * NULL where that cannot be done (then the caller reads them). Only ranges
 * within the file: a mapping past its end faults (SIGBUS). */
static const uint8_t *map_data(struct convert_window *w, struct vh_image *layer, uint64_t host, uint64_t len) {
        const uint64_t page = (uint64_t) sysconf(_SC_PAGESIZE);
        if (image_past_eof(layer, host, len))
                return NULL;
        uint64_t start = host / page * page, delta = host - start;
        void *p = mmap(NULL, (size_t) (delta + len), PROT_READ, MAP_SHARED | MAP_POPULATE, layer->fd, (off_t) start);
        if (p == MAP_FAILED)
                return NULL;
        w->map_addr[w->n_map] = p;
        w->map_len[w->n_map] = (size_t) (delta + len);
        w->n_map++;
        return (const uint8_t *) p + delta;
}

/* Reads window [a, end) of 'src' into 'w'. Plain data in a layer that
 * 'map_ok' allows is mapped instead of read: zero detection then looks at
 * the page cache itself and the output is written straight from it, one
 * copy of each byte instead of two (into 'buf' and out of it). */
static int read_window(struct vh_image *src, const bool *map_ok, struct convert_target *t, uint64_t a, uint64_t end,
                       struct convert_window *w, struct vh_error *err) {
        const uint64_t unit = t->unit;
        uint64_t pos = a;
        w->n_seg = 0;
        w->n_map = 0;
        while (pos < end) {
                struct vh_image_extent e;
                int r = vh_image_map(src, pos, end - pos, &e, err);
                if (r < 0)
                        return r;
                uint64_t n;
                if (t->sparse && e.zero) {
                        uint64_t zend = pos + e.length;
                        if (zend >= end)
                                break;
                        uint64_t skip_to = zend / unit * unit;
                        if (skip_to > pos) {
                                pos = skip_to;
                                continue;
                        }
                        n = unit; /* zeros and data share this unit */
                } else
                        n = ALIGN_UP(e.length, unit);
                n = MIN(n, end - pos);

                /* 'pos' is unit aligned; so is every piece but the disk's
                 * last, which is read and padded. */
                for (uint64_t stop = pos + n; pos < stop;) {
                        uint64_t left = stop - pos, len = 0, host = 0;
                        struct vh_image *layer = NULL;
                        if (map_ok) {
                                r = locate(src, pos, left, &layer, &host, &len, err);
                                if (r < 0)
                                        return r;
                        }
                        uint64_t whole = len / unit * unit;
                        if (layer && map_ok[layer->depth] && whole > 0) {
                                const uint8_t *data = map_data(w, layer, host, whole);
                                if (data) {
                                        add_segment(w, pos, whole, data);
                                        pos += whole;
                                        continue;
                                }
                        }
                        uint64_t k = map_ok ? MIN(left, MAX(whole, unit)) : left;
                        uint8_t *b = w->buf + (pos - a);
                        r = vh_image_read(src, pos, b, (size_t) k, err);
                        if (r < 0)
                                return r;
                        memset(b + k, 0, (size_t) (ALIGN_UP(k, unit) - k));
                        add_segment(w, pos, k, b);
                        pos += k;
                }
        }
        return 0;
}

/* Whether a mapping of 'x' (a worker's handle) stays valid while the
 * convert runs. A mapping past the file's end faults (SIGBUS), so the file
 * must not shrink: 'caller', the caller's handle on the same file, holds
 * the lock that keeps QEMU and vmhost from resizing it (byte 203, see
 * lock.c) unless it was opened with force-share. That lock is seen from
 * the worker's descriptor, which holds none, and not from the caller's,
 * which only sees other descriptors' locks. Regular files only. */
static bool map_safe(struct vh_image *caller, struct vh_image *x) {
        pthread_once(&bus_guard_once, bus_guard_install);
        if (!bus_guard_installed)
                return false;
        struct stat st;
        if (fstat(x->fd, &st) < 0 || !S_ISREG(st.st_mode))
                return false;
        struct flock seen_by_worker = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 203, .l_len = 1 };
        struct flock seen_by_caller = seen_by_worker;
        if (fcntl(x->fd, F_OFD_GETLK, &seen_by_worker) < 0 || fcntl(caller->fd, F_OFD_GETLK, &seen_by_caller) < 0)
                return false;
        return seen_by_worker.l_type != F_UNLCK && seen_by_caller.l_type == F_UNLCK;
}

static void par_fail(struct convert_par *p, int r, const struct vh_error *err) {
        pthread_mutex_lock(&p->lock);
        if (p->error >= 0) {
                p->error = r;
                if (err)
                        p->err = *err;
        }
        p->stop = true;
        pthread_cond_broadcast(&p->changed);
        pthread_mutex_unlock(&p->lock);
}

static int write_plan(struct convert_par *p, const struct convert_window *w, struct vh_error *err) {
        for (size_t i = 0; i < w->n_plan; i++) {
                int r = write_data(p->t, w->plan_data[i], (size_t) w->plan_len[i], w->plan_host[i]);
                if (r == -EFAULT) /* only mapped source data can be a bad address */
                        return source_shrank(err);
                if (r < 0)
                        return vh_error_set(err, r, "%s: write at %" PRIu64 " failed: %s", p->t->path, w->plan_host[i],
                                            strerror(-r));
        }
        return 0;
}

/* While window j is read, the kernel already reads the data of the window
 * 2 * CONVERT_WORKERS further on (32 MiB ahead), so the disk has more
 * requests in flight than there are workers. Of the distances tried (2, 4
 * and 8 windows), 8 was the fastest for a raw source with scattered data;
 * for a qcow2 source, whose data lies in order, readahead already does
 * this and the hint changes nothing measurable. */
static void prefetch_ahead(struct convert_worker *k, uint64_t j) {
        uint64_t next = j + 2 * CONVERT_WORKERS;
        if (next < k->par->n_windows)
                vh_image_prefetch(k->src, next * CONVERT_WINDOW, CONVERT_WINDOW);
}

/* Writes with -t none go past the page cache and are left to the file
 * system to order. */
static void write_lock(struct convert_par *p) {
        if (p->t->direct_fd < 0)
                pthread_mutex_lock(&p->write_lock);
}

static void write_unlock(struct convert_par *p) {
        if (p->t->direct_fd < 0)
                pthread_mutex_unlock(&p->write_lock);
}

static void *convert_worker_run(void *userdata) {
        struct convert_worker *k = userdata;
        struct convert_par *p = k->par;
        struct convert_target *t = p->t;
        bool raw = t->emit == emit_raw;
        struct vh_error err = {};

        if (raw) {
                /* No order to keep: claim windows one by one. */
                struct convert_window *w = &p->slot[k->id];
                for (;;) {
                        pthread_mutex_lock(&p->lock);
                        uint64_t j = p->next_raw++;
                        bool stop = p->stop;
                        pthread_mutex_unlock(&p->lock);
                        if (stop || j >= p->n_windows)
                                return NULL;
                        uint64_t a = j * CONVERT_WINDOW, end = MIN(a + CONVERT_WINDOW, p->size);
                        prefetch_ahead(k, j);
                        int r = read_window(k->src, k->map_ok, t, a, end, w, &err);
                        if (r >= 0 && w->n_seg > 0) {
                                write_lock(p);
                                for (size_t i = 0; r >= 0 && i < w->n_seg; i++)
                                        r = emit_raw(t, w->seg_off[i], w->seg_data[i], w->seg_len[i], &err);
                                write_unlock(p);
                        }
                        unmap_window(w);
                        if (r < 0) {
                                par_fail(p, r, &err);
                                return NULL;
                        }
                        pthread_mutex_lock(&p->lock);
                        p->done += end - a;
                        pthread_cond_broadcast(&p->changed);
                        pthread_mutex_unlock(&p->lock);
                }
        }

        for (uint64_t j = k->id; j < p->n_windows; j += CONVERT_WORKERS) {
                struct convert_window *w = &p->slot[j % CONVERT_SLOTS];
                pthread_mutex_lock(&p->lock);
                while (w->state != WINDOW_EMPTY && !p->stop)
                        pthread_cond_wait(&p->changed, &p->lock);
                bool stop = p->stop;
                pthread_mutex_unlock(&p->lock);
                if (stop)
                        return NULL;

                uint64_t a = j * CONVERT_WINDOW, end = MIN(a + CONVERT_WINDOW, p->size);
                prefetch_ahead(k, j);
                int r = read_window(k->src, k->map_ok, t, a, end, w, &w->err);

                pthread_mutex_lock(&p->lock);
                w->index = j;
                w->error = r < 0 ? r : 0;
                w->state = WINDOW_READ;
                pthread_cond_broadcast(&p->changed);
                while (w->state != WINDOW_PLANNED && !p->stop)
                        pthread_cond_wait(&p->changed, &p->lock);
                stop = p->stop;
                pthread_mutex_unlock(&p->lock);
                if (stop || r < 0)
                        return NULL;

                write_lock(p);
                r = write_plan(p, w, &err);
                write_unlock(p);
                unmap_window(w);
                if (r < 0) {
                        par_fail(p, r, &err);
                        return NULL;
                }
                pthread_mutex_lock(&p->lock);
                w->state = WINDOW_EMPTY;
                pthread_cond_broadcast(&p->changed);
                pthread_mutex_unlock(&p->lock);
        }
        return NULL;
}

/* qcow2 output: assigns host clusters to what window 'w' holds, in guest
 * order, leaving out zero clusters (the sparse size is at most a cluster
 * on this path). */
static int plan_window_unguarded(struct convert_target *t, struct convert_window *w, struct vh_error *err) {
        w->n_plan = 0;
        for (size_t i = 0; i < w->n_seg; i++)
                for (uint64_t pos = w->seg_off[i]; pos < w->seg_off[i] + w->seg_len[i]; pos += t->unit) {
                        const uint8_t *data = w->seg_data[i] + (pos - w->seg_off[i]);
                        if (t->sparse && image_buffer_is_zero(data, (size_t) t->unit))
                                continue;
                        uint64_t host;
                        int r = qcow2_writer_reserve_cluster(t->qcow2, pos / t->unit, &host, err);
                        if (r < 0)
                                return image_error_prefix(err, r, t->path);
                        size_t n = w->n_plan;
                        if (n > 0 && w->plan_host[n - 1] + w->plan_len[n - 1] == host &&
                            w->plan_data[n - 1] + w->plan_len[n - 1] == data)
                                w->plan_len[n - 1] += t->unit;
                        else {
                                w->plan_data[n] = data;
                                w->plan_host[n] = host;
                                w->plan_len[n] = t->unit;
                                w->n_plan++;
                        }
                }
        return 0;
}

/* The window's segments may be mapped source data: read under the guard. */
static int plan_window(struct convert_target *t, struct convert_window *w, struct vh_error *err) {
        sigjmp_buf jb;
        if (sigsetjmp(jb, 0))
                return source_shrank(err);
        bus_guard = &jb;
        int r = plan_window_unguarded(t, w, err);
        bus_guard = NULL;
        return r;
}

/* A handle on the same chain for a worker; fails (and the caller copies
 * in one thread) if reopening does not give the same files. */
static int reopen_chain(struct vh_image *src, struct vh_image **ret) {
        struct vh_image_open_options o = {
                .format = src->format,
                .flags = VH_IMAGE_OPEN_FORCE_SHARE | (src->backing ? 0 : VH_IMAGE_OPEN_NO_BACKING),
        };
        struct vh_image *img = NULL;
        int r = vh_image_open(src->filename, &o, &img, NULL);
        if (r < 0)
                return r;
        /* -l: the worker reads the same snapshot. */
        if (src->snapshot_id) {
                r = vh_image_snapshot_load(img, src->snapshot_id, NULL, NULL);
                if (r < 0) {
                        vh_image_free(img);
                        return r;
                }
        }
        struct vh_image *x = src, *y = img;
        for (; x && y; x = x->backing, y = y->backing)
                if (x->dev != y->dev || x->ino != y->ino || x->virtual_size != y->virtual_size ||
                    x->format != y->format)
                        break;
        if (x || y) {
                vh_image_free(img);
                return -ESTALE;
        }
        *ret = img;
        return 0;
}

/* Returns -EAGAIN when the parallel path does not apply; the caller then
 * copies with the pipeline. */
static int convert_loop_parallel(struct vh_image *src, struct convert_target *t,
                                 const struct vh_image_convert_options *opts, struct vh_error *err) {
        const uint64_t size = vh_image_virtual_size(src);
        bool raw = t->emit == emit_raw;
        /* Zero runs longer than a cluster need the sequential decision
         * across windows; compression and -B need the one writer. */
        if (t->backing || t->compress || (!raw && t->sparse > t->unit) || size == 0)
                return -EAGAIN;
        /* qcow2 output visits every window in order: for huge sparse disks
         * the pipeline, which skips unallocated ranges in one step, is
         * cheaper. */
        if (!raw && size > (UINT64_C(256) << 30))
                return -EAGAIN;

        struct convert_par p = { .t = t, .size = size, .n_windows = DIV_ROUND_UP(size, CONVERT_WINDOW) };
        struct convert_worker k[CONVERT_WORKERS] = {};
        size_t max_units = CONVERT_WINDOW / t->unit + 1;
        int r = 0;

        for (unsigned i = 0; i < CONVERT_WORKERS; i++) {
                k[i].par = &p;
                k[i].id = i;
                if (reopen_chain(src, &k[i].src) < 0) {
                        r = -EAGAIN;
                        continue;
                }
                for (struct vh_image *x = src, *y = k[i].src; x && y; x = x->backing, y = y->backing)
                        if (y->depth <= VH_IMAGE_MAX_CHAIN_DEPTH)
                                k[i].map_ok[y->depth] = map_safe(x, y);
        }
        for (unsigned i = 0; r >= 0 && i < CONVERT_SLOTS; i++) {
                struct convert_window *w = &p.slot[i];
                w->buf = aligned_alloc(4096, (size_t) CONVERT_WINDOW);
                w->seg_off = calloc(max_units, sizeof(uint64_t));
                w->seg_len = calloc(max_units, sizeof(uint64_t));
                w->seg_data = calloc(max_units, sizeof(*w->seg_data));
                w->map_addr = calloc(max_units, sizeof(*w->map_addr));
                w->map_len = calloc(max_units, sizeof(*w->map_len));
                w->plan_data = calloc(max_units, sizeof(*w->plan_data));
                w->plan_host = calloc(max_units, sizeof(uint64_t));
                w->plan_len = calloc(max_units, sizeof(uint64_t));
                if (!w->buf || !w->seg_off || !w->seg_len || !w->seg_data || !w->map_addr || !w->map_len ||
                    !w->plan_data || !w->plan_host || !w->plan_len)
                        r = vh_error_set(err, -ENOMEM, "out of memory");
        }
        if (r >= 0) {
                pthread_mutex_init(&p.lock, NULL);
                pthread_mutex_init(&p.write_lock, NULL);
                pthread_cond_init(&p.changed, NULL);
                for (unsigned i = 0; i < CONVERT_WORKERS; i++) {
                        int e = pthread_create(&k[i].thread, NULL, convert_worker_run, &k[i]);
                        if (e != 0) {
                                par_fail(&p, -e, NULL);
                                r = vh_error_set(err, -e, "cannot start a worker thread: %s", strerror(e));
                                break;
                        }
                        k[i].started = true;
                }
        }

        if (r >= 0 && raw) {
                pthread_mutex_lock(&p.lock);
                while (p.done < size && !p.stop) {
                        uint64_t done = p.done;
                        pthread_mutex_unlock(&p.lock);
                        /* A cancel stops the workers at their next
                         * window (par_fail() below). */
                        r = image_progress(opts->progress, opts->userdata, done, size);
                        pthread_mutex_lock(&p.lock);
                        if (r < 0)
                                break;
                        if (p.done == done && !p.stop)
                                pthread_cond_wait(&p.changed, &p.lock);
                }
                pthread_mutex_unlock(&p.lock);
        } else
                for (uint64_t j = 0; r >= 0 && j < p.n_windows; j++) {
                        struct convert_window *w = &p.slot[j % CONVERT_SLOTS];
                        pthread_mutex_lock(&p.lock);
                        while ((w->state != WINDOW_READ || w->index != j) && !p.stop)
                                pthread_cond_wait(&p.changed, &p.lock);
                        bool stop = p.stop;
                        pthread_mutex_unlock(&p.lock);
                        if (stop)
                                break;
                        if (w->error < 0) {
                                if (err)
                                        *err = w->err;
                                r = w->error;
                                break;
                        }
                        r = image_progress(opts->progress, opts->userdata, j * CONVERT_WINDOW, size);
                        if (r < 0)
                                break;
                        r = plan_window(t, w, err);
                        if (r < 0)
                                break;
                        pthread_mutex_lock(&p.lock);
                        w->state = WINDOW_PLANNED;
                        pthread_cond_broadcast(&p.changed);
                        pthread_mutex_unlock(&p.lock);
                }

        if (r < 0)
                par_fail(&p, r, NULL);
        for (unsigned i = 0; i < CONVERT_WORKERS; i++)
                if (k[i].started)
                        pthread_join(k[i].thread, NULL);
        if (r >= 0 && p.error < 0) {
                if (err)
                        *err = p.err;
                r = p.error;
        }
        if (k[0].started) {
                pthread_cond_destroy(&p.changed);
                pthread_mutex_destroy(&p.write_lock);
                pthread_mutex_destroy(&p.lock);
        }
        for (unsigned i = 0; i < CONVERT_SLOTS; i++) {
                struct convert_window *w = &p.slot[i];
                if (w->map_addr)
                        unmap_window(w);
                free(w->buf);
                free(w->seg_off);
                free(w->seg_len);
                free(w->seg_data);
                free(w->map_addr);
                free(w->map_len);
                free(w->plan_data);
                free(w->plan_host);
                free(w->plan_len);
        }
        for (unsigned i = 0; i < CONVERT_WORKERS; i++)
                vh_image_free(k[i].src);
        if (r >= 0)
                r = image_progress(opts->progress, opts->userdata, size, size);
        return r;
}

static int convert_loop(struct vh_image *src, struct convert_target *t, const struct vh_image_convert_options *opts,
                        struct vh_error *err) {
        const uint64_t size = vh_image_virtual_size(src);

        /* Sequential reads: ask the kernel for a larger read-ahead. */
        for (struct vh_image *x = src; x; x = vh_image_backing(x))
                (void) posix_fadvise(x->fd, 0, 0, POSIX_FADV_SEQUENTIAL);

        int r = convert_loop_parallel(src, t, opts, err);
        if (r != -EAGAIN)
                return r;
        /* With -B the writer reads the output's backing file while it
         * writes, so reading and writing stay in one thread. */
        if (!t->backing)
                return convert_loop_threaded(src, t, opts, err);

        _cleanup_free_ uint8_t *buf = aligned_alloc(4096, (size_t) CONVERT_CHUNK);
        if (!buf)
                return vh_error_set(err, -ENOMEM, "out of memory");
        uint64_t off = 0;
        for (;;) {
                r = image_progress(opts->progress, opts->userdata, off, size);
                if (r < 0)
                        return r;
                uint64_t n;
                r = next_chunk(src, t, &off, buf, &n, err);
                if (r < 0)
                        return r;
                if (n == 0)
                        break;
                r = t->emit(t, off, buf, n, err);
                if (r < 0)
                        return r;
                off += n;
        }
        return image_progress(opts->progress, opts->userdata, size, size);
}

/* Opens the -B backing file as the new image will see it (relative to the
 * output's directory), checks its format and finds it in the source's
 * chain. */
static int open_output_backing(struct vh_image *src, const char *dst_path, const struct vh_image_convert_options *opts,
                               struct vh_image **ret, unsigned *ret_depth, struct vh_error *err) {
        struct vh_image *b = NULL;
        int r = image_open_backing_file(dst_path, opts->backing_file, opts->backing_format, "backing file", NULL, &b,
                                        err);
        if (r < 0)
                return r;
        *ret_depth = NO_DEPTH;
        for (struct vh_image *x = vh_image_backing(src); x; x = vh_image_backing(x))
                if (x->dev == b->dev && x->ino == b->ino) {
                        *ret_depth = x->depth;
                        break;
                }
        *ret = b;
        return 0;
}

/* Writing over a file the source reads from would feed the copy its own
 * output. */
static int check_not_in_chain(struct vh_image *src, const char *dst_path, struct vh_error *err) {
        struct stat st;
        if (stat(dst_path, &st) < 0)
                return 0;
        for (struct vh_image *x = src; x; x = vh_image_backing(x))
                if (x->dev == st.st_dev && x->ino == st.st_ino)
                        return vh_error_set(err, -EINVAL, "%s: is %s, which the source image reads from", dst_path,
                                            x->filename);
        return 0;
}

/* opts->progress_data_steps: the copy's reports go through a
 * convert_progress made for 'srcs', which passes qemu-img's figures on to
 * opts->progress. */
static int wrap_data_steps(struct vh_image *const *srcs, size_t n_srcs, const struct vh_image_convert_options *opts,
                           struct convert_progress **ret_plan, struct vh_image_convert_options *ret_opts,
                           struct vh_error *err) {
        uint64_t compress_cluster = opts->compress ? (opts->cluster_size ? opts->cluster_size : 65536) : 0;
        int r = convert_progress_new(srcs, n_srcs, compress_cluster, opts->fully_allocated, opts->backing_file != NULL,
                                     opts->progress, opts->userdata, ret_plan, err);
        if (r < 0)
                return r;
        *ret_opts = *opts;
        ret_opts->progress = convert_progress_report;
        ret_opts->userdata = *ret_plan;
        ret_opts->progress_data_steps = false;
        return 0;
}

int vh_image_convert(struct vh_image *src, const char *dst_path, const struct vh_image_convert_options *opts,
                     struct vh_error *err) {
        const uint64_t size = vh_image_virtual_size(src);
        int r;

        if (opts->progress && opts->progress_data_steps) {
                _cleanup_(convert_progress_freep) struct convert_progress *plan = NULL;
                struct vh_image_convert_options o;
                r = wrap_data_steps(&src, 1, opts, &plan, &o, err);
                return r < 0 ? r : vh_image_convert(src, dst_path, &o, err);
        }

        if (opts->format != VH_IMAGE_FORMAT_RAW && opts->format != VH_IMAGE_FORMAT_QCOW2)
                return vh_error_set(err, -EINVAL, "unknown output format");
        if (opts->cache < 0 || opts->cache >= _VH_IMAGE_CACHE_MAX)
                return vh_error_set(err, -EINVAL, "unknown cache mode");
        if (size > VH_IMAGE_MAX_VIRTUAL_SIZE)
                return vh_error_set(err, -EFBIG, "%s: virtual size %" PRIu64 " is larger than the limit", src->filename,
                                    size);
        r = check_not_in_chain(src, dst_path, err);
        if (r < 0)
                return r;

        if (opts->format != VH_IMAGE_FORMAT_QCOW2 && (opts->compress || opts->backing_file))
                return vh_error_set(err, -EINVAL, "compression and a backing file need qcow2 output");
        if (!opts->fully_allocated && opts->sparse_size % 512)
                return vh_error_set(err, -EINVAL, "the sparse size must be a multiple of 512 bytes");

        struct convert_target t = {
                .fd = -1,
                .direct_fd = -1,
                .sparse = opts->fully_allocated ? 0 : opts->sparse_size ? opts->sparse_size : DEFAULT_SPARSE_SIZE,
                .compress = opts->compress,
                .flush = opts->cache != VH_IMAGE_CACHE_UNSAFE,
                .backing_depth = NO_DEPTH,
        };
        _cleanup_free_ uint8_t *bbuf = NULL;
        _cleanup_(vh_image_freep) struct vh_image *backing = NULL;
        if (opts->backing_file) {
                r = open_output_backing(src, dst_path, opts, &backing, &t.backing_depth, err);
                if (r < 0)
                        return r;
                bbuf = malloc((size_t) CONVERT_CHUNK);
                if (!bbuf)
                        return vh_error_set(err, -ENOMEM, "out of memory");
                t.backing = backing;
                t.bbuf = bbuf;
        }

        struct qcow2_writer_params p = {};
        if (opts->format == VH_IMAGE_FORMAT_QCOW2) {
                r = qcow2_writer_params_from(size, opts->cluster_size, opts->version, opts->refcount_bits,
                                             opts->lazy_refcounts, opts->backing_file, opts->backing_format, &p, err);
                if (r < 0)
                        return r;
                t.zero_clusters = p.version >= 3;
        }

        struct image_output out = IMAGE_OUTPUT_INIT;
        r = image_output_begin(dst_path, opts->replace_data, &out, err);
        if (r < 0)
                return r;
        t.fd = out.fd;
        t.path = dst_path;
        _cleanup_close_ int direct_fd = -1;
        if (opts->cache == VH_IMAGE_CACHE_NONE) {
                /* A second descriptor for the data: O_DIRECT cannot be set
                 * on the one the metadata goes through. Where the file
                 * system has no O_DIRECT, everything goes through the page
                 * cache. */
                char fd_path[64];
                snprintf(fd_path, sizeof(fd_path), "/proc/self/fd/%d", out.fd);
                direct_fd = open(fd_path, O_WRONLY | O_DIRECT | O_CLOEXEC | O_NOCTTY);
                t.direct_fd = direct_fd;
        }

        if (opts->format == VH_IMAGE_FORMAT_RAW) {
                /* Zero runs are found in 4 KiB units, or sectors when the
                 * sparse size asks for finer ones. */
                t.unit = t.sparse % 4096 == 0 ? 4096 : 512;
                t.emit = emit_raw;
                r = raw_create(out.fd, size, err);
                if (r < 0)
                        r = image_error_prefix(err, r, dst_path);
        } else {
                t.unit = UINT64_C(1) << p.cluster_bits;
                t.emit = emit_qcow2;
                r = qcow2_writer_new(out.fd, &p, &t.qcow2, err);
                if (r < 0)
                        r = image_error_prefix(err, r, dst_path);
        }
        if (r >= 0)
                r = convert_loop(src, &t, opts, err);
        if (r >= 0 && t.qcow2) {
                r = qcow2_writer_finish(t.qcow2, err);
                if (r < 0)
                        r = image_error_prefix(err, r, dst_path);
        }
        if (r >= 0)
                r = image_output_commit(&out, t.flush, err);
        qcow2_writer_free(t.qcow2);
        /* Removes the temporary output unless it was renamed into place. */
        image_output_done(&out);
        if (r == -ECANCELED)
                vh_error_set(err, r, "cancelled; nothing was written to %s", dst_path);
        return r;
}

/* ---- Writing into an open image (-n, several sources) ----
 *
 * Off the fast paths above: the output is an image opened read-write and
 * written through its write path (vh_image_write, vh_image_write_zeroes),
 * which allocates clusters in place. Unless the output is known to read
 * as zeros, zeros of the sources are written as zeros too: an existing
 * output (-n) may hold anything there. */

/* Writes 'len' bytes of 'buf' (source data) at 'offset' of 'dst': runs of
 * zero units at least 'sparse' long as zeros (skipped when 'dst_is_zero'),
 * the rest as data. */
static int into_emit(struct vh_image *dst, uint64_t offset, const uint8_t *buf, uint64_t len, uint64_t sparse,
                     bool dst_is_zero, struct vh_error *err) {
        const uint64_t unit = 4096;
        uint64_t pos = 0;
        while (pos < len) {
                uint64_t start = pos;
                bool zero = sparse && image_buffer_is_zero(buf + pos, (size_t) MIN(unit, len - pos));
                while (pos < len && zero == (sparse && image_buffer_is_zero(buf + pos, (size_t) MIN(unit, len - pos))))
                        pos += MIN(unit, len - pos);
                /* A short run of zeros is written as data, as qemu-img
                 * leaves out only runs of the sparse size. */
                if (zero && pos - start < sparse && pos < len)
                        zero = false;
                int r;
                if (!zero)
                        r = vh_image_write(dst, offset + start, buf + start, (size_t) (pos - start), err);
                else if (!dst_is_zero)
                        r = vh_image_write_zeroes(dst, offset + start, pos - start, err);
                else
                        r = 0;
                if (r < 0)
                        return r;
        }
        return 0;
}

int vh_image_convert_into(struct vh_image *const *srcs, size_t n_srcs, struct vh_image *dst, bool dst_is_zero,
                          const struct vh_image_convert_options *opts, struct vh_error *err) {
        uint64_t total = 0;
        for (size_t i = 0; i < n_srcs; i++) {
                if (vh_image_virtual_size(srcs[i]) > VH_IMAGE_MAX_VIRTUAL_SIZE - total)
                        return vh_error_set(err, -EFBIG, "the sources are larger together than the limit");
                total += vh_image_virtual_size(srcs[i]);
        }
        if (opts->progress && opts->progress_data_steps) {
                _cleanup_(convert_progress_freep) struct convert_progress *plan = NULL;
                struct vh_image_convert_options o;
                int r = wrap_data_steps(srcs, n_srcs, opts, &plan, &o, err);
                return r < 0 ? r : vh_image_convert_into(srcs, n_srcs, dst, dst_is_zero, &o, err);
        }
        if (total > vh_image_virtual_size(dst))
                /* qemu-img's words. */
                return vh_error_set(err, -ENOSPC, "output file is smaller than input file");
        for (size_t i = 0; i < n_srcs; i++)
                for (struct vh_image *x = srcs[i]; x; x = vh_image_backing(x))
                        if (x->dev == dst->dev && x->ino == dst->ino)
                                return vh_error_set(err, -EINVAL, "%s: is %s, which the source image reads from",
                                                    dst->filename, x->filename);
        if (opts->sparse_size % 512)
                return vh_error_set(err, -EINVAL, "the sparse size must be a multiple of 512 bytes");
        const uint64_t sparse = opts->fully_allocated ? 0 : opts->sparse_size ? opts->sparse_size : DEFAULT_SPARSE_SIZE;

        _cleanup_free_ uint8_t *buf = aligned_alloc(4096, (size_t) CONVERT_CHUNK);
        if (!buf)
                return vh_error_set(err, -ENOMEM, "out of memory");
        uint64_t base = 0;
        int r = 0;
        for (size_t i = 0; i < n_srcs && r >= 0; i++) {
                struct vh_image *src = srcs[i];
                const uint64_t size = vh_image_virtual_size(src);
                for (uint64_t off = 0; off < size && r >= 0;) {
                        r = image_progress(opts->progress, opts->userdata, base + off, total);
                        if (r < 0)
                                break;
                        struct vh_image_extent e;
                        r = vh_image_map(src, off, MIN(size - off, CONVERT_CHUNK), &e, err);
                        if (r < 0)
                                break;
                        uint64_t n = MIN(e.length, size - off);
                        if (e.zero && sparse) {
                                if (!dst_is_zero)
                                        r = vh_image_write_zeroes(dst, base + off, n, err);
                        } else {
                                r = vh_image_read(src, off, buf, (size_t) n, err);
                                if (r >= 0)
                                        r = into_emit(dst, base + off, buf, n, sparse, dst_is_zero, err);
                        }
                        off += n;
                }
                base += size;
        }
        if (r >= 0)
                r = image_progress(opts->progress, opts->userdata, total, total);
        if (r >= 0 && opts->cache != VH_IMAGE_CACHE_UNSAFE)
                r = vh_image_flush(dst, err);
        if (r == -ECANCELED)
                vh_error_set(err, r, "cancelled; %s holds part of the sources' data", dst->filename);
        return r;
}

int vh_image_convert_concat(struct vh_image *const *srcs, size_t n_srcs, const char *dst_path,
                            const struct vh_image_convert_options *opts, struct vh_error *err) {
        if (n_srcs == 0)
                return vh_error_set(err, -EINVAL, "no source image given");
        if (n_srcs == 1)
                return vh_image_convert(srcs[0], dst_path, opts, err);
        if (opts->format != VH_IMAGE_FORMAT_RAW && opts->format != VH_IMAGE_FORMAT_QCOW2)
                return vh_error_set(err, -EINVAL, "unknown output format");
        if (opts->backing_file)
                /* qemu-img's words. */
                return vh_error_set(err, -EINVAL, "Having a backing file for the target makes no sense when "
                                                  "concatenating multiple input images");
        if (opts->compress)
                return vh_error_set(err, -EOPNOTSUPP, "compressed output (-c) is written from one source only");
        uint64_t total = 0;
        for (size_t i = 0; i < n_srcs; i++) {
                if (vh_image_virtual_size(srcs[i]) > VH_IMAGE_MAX_VIRTUAL_SIZE - total)
                        return vh_error_set(err, -EFBIG, "the sources are larger together than the limit");
                total += vh_image_virtual_size(srcs[i]);
                int r = check_not_in_chain(srcs[i], dst_path, err);
                if (r < 0)
                        return r;
        }

        struct image_output out = IMAGE_OUTPUT_INIT;
        int r = image_output_begin(dst_path, opts->replace_data, &out, err);
        if (r < 0)
                return r;
        if (opts->format == VH_IMAGE_FORMAT_RAW)
                r = raw_create(out.fd, total, err);
        else {
                struct vh_image_create_options co = {
                        .format = VH_IMAGE_FORMAT_QCOW2,
                        .size = total,
                        .cluster_size = opts->cluster_size,
                        .version = opts->version,
                        .lazy_refcounts = opts->lazy_refcounts,
                        .refcount_bits = opts->refcount_bits,
                };
                r = qcow2_create(out.fd, &co, total, err);
        }
        if (r < 0)
                r = image_error_prefix(err, r, dst_path);
        /* The new file reads as zeros: the sources' zeros need no writes.
         * It is opened by its temporary name, which only this process
         * knows, and written through the write path: the sources need not
         * end on cluster boundaries. */
        struct vh_image *img = NULL;
        if (r >= 0) {
                struct vh_image_open_options oo = { .format = opts->format,
                                                    .flags = VH_IMAGE_OPEN_READ_WRITE | VH_IMAGE_OPEN_NO_BACKING };
                r = vh_image_open(out.tmp_path, &oo, &img, err);
        }
        if (r >= 0) {
                struct vh_image_convert_options o = *opts;
                o.cache = VH_IMAGE_CACHE_UNSAFE; /* flushed below, with the rename */
                r = vh_image_convert_into(srcs, n_srcs, img, true, &o, err);
                if (r == -ECANCELED)
                        vh_error_set(err, r, "cancelled; nothing was written to %s", dst_path);
        }
        if (r >= 0)
                r = vh_image_flush(img, err);
        vh_image_free(img);
        if (r >= 0)
                r = image_output_commit(&out, opts->cache != VH_IMAGE_CACHE_UNSAFE, err);
        image_output_done(&out);
        return r;
}
