/* vmhost/image.h: vmhost's own disk image engine for raw and qcow2 files.
 *
 * An image is opened by path into an opaque 'struct vh_image'. Opening
 * probes the format (unless one is given), validates the header against the
 * limits below, resolves the backing chain (a relative backing name is taken
 * relative to the directory of the image that names it, as QEMU does) and
 * takes the same OFD byte locks QEMU takes, so that vmhost and QEMU see each
 * other's use of a file.
 *
 *     struct vh_image_open_options o = { .format = VH_IMAGE_FORMAT_PROBE };
 *     struct vh_image *img;
 *     r = vh_image_open("vm1.qcow2", &o, &img, &err);
 *     r = vh_image_read(img, 0, buf, 512, &err);   (follows the backing chain)
 *     img = vh_image_free(img);
 *
 * The qcow2 on-disk format is the one of QEMU's docs/interop/qcow2.rst;
 * files written here are meant to be read by QEMU and the other way round.
 * All functions return 0 (or a count) on success and -errno on failure, and
 * fill 'err' (which may be NULL) with the cause, naming the file and, for a
 * bad header, the field. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "vmhost/error.h"

/* Longest backing chain that is followed (the image itself is depth 0). */
#define VH_IMAGE_MAX_CHAIN_DEPTH 64
/* Largest virtual size of any image: qemu-img's (INT64_MAX), in whole
 * sectors. A qcow2 image is limited further by its cluster size: its L1
 * table may not exceed 32 MiB, as in QEMU (2 PiB with 64 KiB clusters). */
#define VH_IMAGE_MAX_VIRTUAL_SIZE ((UINT64_C(1) << 63) - 512)
/* Longest backing file name in a qcow2 header (the spec's limit). */
#define VH_IMAGE_MAX_BACKING_NAME 1023

enum vh_image_format {
        VH_IMAGE_FORMAT_PROBE = -1, /* as input: detect from the file's first bytes */
        VH_IMAGE_FORMAT_RAW = 0,
        VH_IMAGE_FORMAT_QCOW2 = 1,
        _VH_IMAGE_FORMAT_MAX,
};

/* "raw", "qcow2"; NULL for anything else. */
const char *vh_image_format_to_string(enum vh_image_format format);
/* Returns the format or -EINVAL. */
int vh_image_format_from_string(const char *s);

/* Detects the format of the file at 'path' by its magic. Files that look
 * like a format vmhost does not handle (qcow version 1, vmdk, vdi, vhdx,
 * qed, luks) give -EOPNOTSUPP rather than being taken for raw. */
int vh_image_probe(const char *path, enum vh_image_format *ret_format, struct vh_error *err);

/* Probes the backing file 'backing_name' as the image at 'overlay_path'
 * would open it (a relative name is relative to the overlay's directory). */
int vh_image_backing_probe(const char *overlay_path, const char *backing_name, enum vh_image_format *ret_format,
                           struct vh_error *err);

enum {
        /* Open for writing: takes QEMU's write lock and refuses images
         * marked corrupt. Backing files are always opened read-only. */
        VH_IMAGE_OPEN_READ_WRITE = 1 << 0,
        /* Do not open the backing chain; reads of unallocated clusters then
         * return zeros. */
        VH_IMAGE_OPEN_NO_BACKING = 1 << 1,
        /* Take no locks (qemu-img's -U): for looking at an image a running
         * VM holds. Reads may see data in flux. */
        VH_IMAGE_OPEN_FORCE_SHARE = 1 << 2,
};

struct vh_image_open_options {
        enum vh_image_format format; /* VH_IMAGE_FORMAT_PROBE to detect it */
        unsigned flags;              /* VH_IMAGE_OPEN_* */
};

struct vh_image;

/* Opens 'path' and, unless told not to, its whole backing chain. 'opts' may
 * be NULL (probe, read-only). The caller owns '*ret_image'. */
int vh_image_open(const char *path, const struct vh_image_open_options *opts,
                  struct vh_image **ret_image, struct vh_error *err);

/* Closes the image and its backing chain; accepts NULL, returns NULL. */
struct vh_image *vh_image_free(struct vh_image *img);
/* For _cleanup_(vh_image_freep) on a local 'struct vh_image *'. */
static inline void vh_image_freep(struct vh_image **p) {
        vh_image_free(*p);
}

/* The name the image was opened by (for a backing file: the path built
 * from the overlay's directory and the backing name). */
const char *vh_image_filename(const struct vh_image *img);
/* Whether 'fd' is the file 'img' was opened from (same device and inode):
 * for whoever opens the path again and must not get another file. */
bool vh_image_is_file(const struct vh_image *img, int fd);
enum vh_image_format vh_image_get_format(const struct vh_image *img);
uint64_t vh_image_virtual_size(const struct vh_image *img);
/* The backing image, owned by 'img'; NULL when there is none (or it was
 * not opened). */
struct vh_image *vh_image_backing(const struct vh_image *img);

/* Reads 'len' bytes of guest data at 'offset', following the backing chain;
 * parts past the virtual size are an error (-EINVAL). */
int vh_image_read(struct vh_image *img, uint64_t offset, void *buf, size_t len, struct vh_error *err);

/* Starts reading, in the background, what a later vh_image_read() of
 * [offset, offset + len) will need from each file of the chain (only the
 * data, not holes or zero clusters). A hint: errors are ignored. */
void vh_image_prefetch(struct vh_image *img, uint64_t offset, uint64_t len);

/* ---- Progress and cancelling ----
 *
 * The long operations (convert, commit, rebase, compare) take a callback
 * 'progress' with 'userdata'. It is called in the caller's thread (never
 * in one of convert's workers), now and then, with the bytes of the
 * virtual disk done so far and the total, and last with done == total
 * once the work is done but before the result is committed (the rename
 * of convert's output, the emptying of commit's top image, the header of
 * rebase). It returns 0 to go on; anything else cancels: the operation
 * stops within a few MiB of work (one chunk or window; convert's workers
 * finish the window they hold), cleans up and returns -ECANCELED, with a
 * message that says what was left:
 *   convert  the temporary output is removed, the destination untouched;
 *   commit   the top image is not emptied and reads the same; the base
 *            holds, flushed, what was copied so far (data the top shows),
 *            and both are consistent images;
 *   rebase   the header still names the old backing file; clusters
 *            already copied into the image hold what the old chain showed,
 *            so the guest sees the same disk;
 *   compare  no result. */

/* ---- Writing (images opened with VH_IMAGE_OPEN_READ_WRITE) ----
 *
 * Writes change the image in place. qcow2 clusters are allocated (with
 * copy-on-write from the backing file for partial clusters, and from
 * snapshots), and metadata goes to disk in a crash-safe order: a crash at
 * any point leaves an image that opens and whose only damage is leaked
 * clusters. Metadata is cached: call vh_image_flush() to put everything on
 * stable storage (vh_image_free() flushes too, but cannot report errors).
 * Images marked corrupt or dirty, with unknown incompatible features or
 * with extended L2 entries are refused at open for writing. */

/* Writes 'len' bytes of guest data at 'offset' (within the virtual size). */
int vh_image_write(struct vh_image *img, uint64_t offset, const void *buf, size_t len, struct vh_error *err);
/* Makes the range read as zeros: the zero flag on qcow2 version 3, holes
 * where nothing below shows through, zeros written otherwise. */
int vh_image_write_zeroes(struct vh_image *img, uint64_t offset, uint64_t len, struct vh_error *err);
/* Gives the space of whole clusters back, as QEMU's discard does: on qcow2
 * v3 they read as zeros afterwards; on v2 without a backing file too, and
 * v2 with one is left alone; partial clusters are left alone; raw files
 * get holes. */
int vh_image_discard(struct vh_image *img, uint64_t offset, uint64_t len, struct vh_error *err);
/* Puts all data and metadata written so far on stable storage. */
int vh_image_flush(struct vh_image *img, struct vh_error *err);

/* Changes the virtual size. Growing a qcow2 image zeroes what its backing
 * file would otherwise show in the new area; shrinking needs 'shrink' and
 * is refused while data is allocated past the new end. */
int vh_image_resize(struct vh_image *img, uint64_t new_size, bool shrink, struct vh_error *err);

/* The refusals of vh_image_resize() that need no write, with messages that
 * do not name the file (vh_image_resize() adds its name): read-only, past
 * the size limit, a shrink without 'shrink', a format without resize, and
 * for qcow2 a size not a multiple of 512, a version 2 image with internal
 * snapshots, and an image with persistent bitmaps (vmhost does not keep
 * them; qemu-img's resize does, so they are not thrown away here). */
int vh_image_resize_check(struct vh_image *img, uint64_t new_size, bool shrink, struct vh_error *err);

/* ---- Operations on chains: commit, rebase ---- */

struct vh_image_commit_options {
        /* Commit into this image of the chain (a path, compared by file
         * identity; relative names are also tried against the directory of
         * the top image). NULL: the top image's backing file. */
        const char *base;
        /* Leave the top image as it is (qemu-img's -d). Implied by 'base',
         * as in qemu-img: the images between top and base would otherwise
         * no longer read right. */
        bool keep_top;
        int (*progress)(uint64_t done, uint64_t total, void *userdata); /* see "Progress" above */
        void *userdata;
};

/* Writes what 'top' (opened read-write unless opts->keep_top or base)
 * shows from the layers above the base into the base, growing the base
 * when it is smaller, then empties 'top' (its clusters are freed, so it
 * reads through to the base again). The base is reopened for writing
 * (QEMU's write lock: refused while a VM uses it). The base is flushed
 * before 'top' is touched, so a crash loses nothing. */
int vh_image_commit(struct vh_image *top, const struct vh_image_commit_options *opts, struct vh_error *err);

struct vh_image_rebase_options {
        /* The new backing file name, stored as given (relative names are
         * relative to the image's directory); NULL or "" for none. */
        const char *backing_file;
        enum vh_image_format backing_format; /* required with a backing file */
        /* Only rewrite the header (qemu-img's -u): no data is compared or
         * copied, and the backing files need not exist. */
        bool unsafe;
        int (*progress)(uint64_t done, uint64_t total, void *userdata); /* see "Progress" above */
        void *userdata;
        /* 'progress' steps as qemu-img rebase's figure does (for 'img
         * rebase -p'): one report per range the image does not hold (at
         * most 2 MiB, also split at the end of each backing file), done
         * counting them in units of MIN(size, 2 MiB) and total being
         * size / unit such units, so done may pass total. No report marks
         * the end: the caller shows it once the call succeeded. */
        bool progress_qemu_steps;
};

/* Changes the backing file of the qcow2 image 'img' (opened read-write;
 * with its chain unless unsafe). In safe mode every range 'img' does not
 * hold itself and where the old and the new backing chains differ is
 * copied into 'img' first, so that the guest sees the same disk. */
int vh_image_rebase(struct vh_image *img, const struct vh_image_rebase_options *opts, struct vh_error *err);

/* ---- Internal snapshots (qcow2) ---- */

/* One entry of the snapshot table, as 'qemu-img snapshot -l' lists it. */
struct vh_image_snapshot {
        char *id;                /* unique, "1", "2", ... */
        char *name;              /* the tag */
        uint64_t vm_state_size;  /* 0: a disk-only snapshot */
        int64_t date_sec;
        uint32_t date_nsec;
        uint64_t vm_clock_nsec;
        uint64_t icount;         /* UINT64_MAX when not recorded */
        uint64_t disk_size;      /* virtual size when taken */
};

/* The snapshots of 'img' (none for raw). The caller frees the array with
 * vh_image_snapshots_free(). */
int vh_image_snapshot_list(struct vh_image *img, struct vh_image_snapshot **ret, size_t *ret_n,
                           struct vh_error *err);
struct vh_image_snapshot *vh_image_snapshots_free(struct vh_image_snapshot *list, size_t n);
/* "Snapshot list:" and the table, as 'qemu-img snapshot -l' prints it. */
int vh_image_snapshots_format(const struct vh_image_snapshot *list, size_t n, char **ret_text,
                              struct vh_error *err);
/* Takes a disk-only snapshot of the current state, named 'name' (unique). */
int vh_image_snapshot_create(struct vh_image *img, const char *name, struct vh_error *err);
/* Makes the snapshot with this name (or id) the current state; what was
 * written since is lost. */
int vh_image_snapshot_apply(struct vh_image *img, const char *name, struct vh_error *err);
/* Makes 'img' (qcow2, opened read-only) show the state of the snapshot
 * with this id and this name (either may be NULL, not both) instead of
 * its active state, as 'qemu-img convert -l' does: in the image's current
 * virtual size (not the snapshot's), zeros past what the snapshot maps.
 * The file is not changed. -ENOENT ("Can't find snapshot") when none
 * matches; -EOPNOTSUPP for raw. */
int vh_image_snapshot_load(struct vh_image *img, const char *id, const char *name, struct vh_error *err);
/* Removes the snapshot with this name (or id) and frees what only it used. */
int vh_image_snapshot_delete(struct vh_image *img, const char *name, struct vh_error *err);

/* What a range of the guest disk holds, seen through the backing chain. */
struct vh_image_extent {
        uint64_t offset;
        uint64_t length;
        bool zero;      /* reads as zeros, without having to read it */
        bool data;      /* backed by data somewhere in the chain */
        unsigned depth; /* chain depth that answered (0 = the image itself) */
};

/* Describes the range starting at 'offset' (at most 'max_len' bytes) that
 * has one status. 'ret_extent->length' is at least 1 when offset is below
 * the virtual size. */
int vh_image_map(struct vh_image *img, uint64_t offset, uint64_t max_len,
                 struct vh_image_extent *ret_extent, struct vh_error *err);

/* What 'qemu-img info' shows, with its field names in the JSON output. */
struct vh_image_info {
        char *filename;
        enum vh_image_format format;
        uint64_t virtual_size;
        uint64_t actual_size;           /* bytes allocated on the host file system */
        uint32_t cluster_size;          /* 0 for raw */
        char *backing_filename;         /* as stored in the image, or NULL */
        char *full_backing_filename;    /* resolved against the image's directory */
        char *backing_filename_format;  /* from the header, or NULL */
        bool dirty_flag;
        /* qcow2 only: */
        unsigned qcow2_version;         /* 2 ("0.10") or 3 ("1.1") */
        bool lazy_refcounts;
        unsigned refcount_bits;
        bool corrupt;
        bool extended_l2;
        const char *compression_type;   /* "zlib" or "zstd" (static) */
        struct vh_image_snapshot *snapshots; /* internal snapshots (qcow2) */
        size_t n_snapshots;
};

int vh_image_get_info(struct vh_image *img, struct vh_image_info **ret_info, struct vh_error *err);
struct vh_image_info *vh_image_info_free(struct vh_image_info *info);

enum vh_image_info_output {
        VH_IMAGE_INFO_HUMAN,
        VH_IMAGE_INFO_JSON,
};

/* Renders the information on 'img' (and, with 'backing_chain', on every
 * image below it: a JSON array then) as 'qemu-img info' does. The caller
 * owns '*ret_text'. */
int vh_image_info_format(struct vh_image *img, enum vh_image_info_output output, bool backing_chain,
                         char **ret_text, struct vh_error *err);

/* How much of a new image is allocated up front (qemu-img's -o
 * preallocation=). */
enum vh_image_prealloc {
        VH_IMAGE_PREALLOC_OFF,          /* nothing: a sparse file, clusters allocated on write */
        /* qcow2: every cluster mapped in the L2 tables to its own place in
         * the file, which stays sparse (reads as zeros); not for raw. */
        VH_IMAGE_PREALLOC_METADATA,
        VH_IMAGE_PREALLOC_FALLOC,       /* also the file's blocks reserved (fallocate) */
        VH_IMAGE_PREALLOC_FULL,         /* also zeros written to every block */
        _VH_IMAGE_PREALLOC_MAX,
};

/* "off", "metadata", "falloc", "full"; -EINVAL if unknown. */
int vh_image_prealloc_from_string(const char *s, enum vh_image_prealloc *ret);
/* The name of a mode; NULL if out of range. */
const char *vh_image_prealloc_to_string(enum vh_image_prealloc mode);

/* vh_image_resize(), and the new area preallocated as 'resize
 * --preallocation' does (qemu-img's modes): raw takes falloc and full,
 * qcow2 all three; a mode other than off is refused for a shrink. */
int vh_image_resize_prealloc(struct vh_image *img, uint64_t new_size, bool shrink, enum vh_image_prealloc prealloc,
                             struct vh_error *err);

struct vh_image_create_options {
        enum vh_image_format format;
        /* Virtual size in bytes, rounded up to 512 like qemu-img does. May be
         * 0 with a backing file: the backing file's virtual size is taken,
         * unless size_given (below). */
        uint64_t size;
        /* qcow2 only: */
        const char *backing_file;       /* stored as given; resolved relative to the new image */
        /* Must be given with backing_file (qemu-img refuses a missing one
         * since QEMU 6.1); recorded as given, and the backing file opened
         * as this format, even if it looks like another one (as qemu-img
         * does; see vh_image_backing_probe() to warn). */
        enum vh_image_format backing_format;
        uint32_t cluster_size;          /* 0: 64 KiB; a power of two in 512..2 MiB */
        unsigned version;               /* 0: 3 (compat=1.1); or 2 (compat=0.10) */
        bool lazy_refcounts;            /* version 3 only */
        unsigned refcount_bits;         /* 0: 16; a power of two in 1..64 */
        /* Not with a backing file (allocated clusters would hide its data,
         * as qemu-img refuses too); metadata is for qcow2 only. */
        enum vh_image_prealloc preallocation;
        /* Replace an existing file that holds data (the CLI's --force); see
         * vh_image_replace_check(). */
        bool replace_data;
        /* qemu-img's -u: the backing file is not opened (it may not exist
         * yet, as for an overlay made before its base arrives); size and
         * backing_format must then be given. */
        bool unsafe_backing;
        /* 'size' was given, also as 0: a backing file's size is then not
         * taken (qemu-img makes a disk of 0 bytes over a backing file when
         * told "0"). Without it, 0 means "no size given". */
        bool size_given;
};

/* Creates the image at 'path'. The new file appears whole or not at all:
 * it is written next to 'path' and renamed. An existing file is replaced
 * as vh_image_replace_check() says (unlike qemu-img, not one that holds
 * data, unless opts->replace_data), checked under its write lock, which
 * is held until the rename. */
int vh_image_create(const char *path, const struct vh_image_create_options *opts, struct vh_error *err);

/* How a new output file reaches the disk (qemu-img's -t). The output is
 * always written to a temporary file and renamed into place, so a process
 * that dies half-way never leaves a partial image under the destination
 * name; the mode says whether that holds across a power loss too. */
enum vh_image_cache {
        /* Flushed before the rename: after a power loss the destination is
         * the old file or the complete new one. */
        VH_IMAGE_CACHE_WRITEBACK,
        /* Not flushed (qemu-img convert's default): the new file may still
         * be in the page cache when the call returns. A file that is being
         * replaced is flushed anyway, so what was stored is never lost. */
        VH_IMAGE_CACHE_UNSAFE,
        /* Data written with O_DIRECT, past the page cache, then flushed
         * before the rename like WRITEBACK. */
        VH_IMAGE_CACHE_NONE,
        _VH_IMAGE_CACHE_MAX,
};

/* Parses qemu-img's cache mode names: writeback, unsafe, none, and
 * writethrough and directsync, which for an output that is renamed into
 * place at the end give what writeback and none give. -EINVAL if unknown. */
int vh_image_cache_from_string(const char *s, enum vh_image_cache *ret);

struct vh_image_convert_options {
        enum vh_image_format format;    /* output format */
        enum vh_image_cache cache;      /* 0: writeback */
        uint32_t cluster_size;          /* qcow2 output: 0 for 64 KiB */
        unsigned version;               /* qcow2 output: 0 for 3 */
        unsigned refcount_bits;         /* qcow2 output: 0 for 16 */
        bool lazy_refcounts;
        bool compress;                  /* qcow2 output: zlib-compressed clusters (-c) */
        /* qcow2 output: an overlay of this file (-B), stored as given and
         * resolved against the output's directory; only clusters that
         * differ from it are written. backing_format must match it. */
        const char *backing_file;
        enum vh_image_format backing_format;
        /* Runs of zeros shorter than this are written anyway (-S); 0 means
         * qemu-img's 4 KiB. A multiple of 512. */
        uint64_t sparse_size;
        bool fully_allocated;           /* -S 0: write zeros too */
        /* Replace an existing 'dst_path' that holds data (--force); see
         * vh_image_replace_check(). */
        bool replace_data;
        int (*progress)(uint64_t done, uint64_t total, void *userdata); /* see "Progress" above */
        void *userdata;
        /* 'progress' counts as qemu-img convert's figure does (for 'img
         * convert -p'): done and total are bytes of the data to copy, not
         * of the virtual disk, reported in qemu-img's steps (pieces of at
         * most 2 MiB; see image/convert-progress.c), then once more at the
         * end. Takes one walk of the sources' block status before the copy. */
        bool progress_data_steps;
};

/* Writes the guest-visible content of 'src' (through its backing chain) as
 * a standalone image at 'dst_path'. Zero ranges are not written: raw output
 * is sparse, qcow2 output leaves them unallocated. As with create, the new
 * file replaces 'dst_path' only once it is complete, and only
 * as vh_image_replace_check() allows. */
int vh_image_convert(struct vh_image *src, const char *dst_path, const struct vh_image_convert_options *opts,
                     struct vh_error *err);

/* Writes the guest-visible content of 'srcs', one after another, as a new
 * image at 'dst_path' whose size is their sum (qemu-img convert with
 * several sources), put in place as vh_image_convert() does. One source
 * is vh_image_convert(). Not with a backing file or compression; the
 * cache mode only decides the flush (none writes through the page cache
 * here too). */
int vh_image_convert_concat(struct vh_image *const *srcs, size_t n_srcs, const char *dst_path,
                            const struct vh_image_convert_options *opts, struct vh_error *err);

/* Writes the guest-visible content of 'srcs', one after another, into
 * 'dst' (opened read-write) from its start, through its write path: the
 * output of 'convert -n' and of several sources. 'dst' must be at least as
 * large as the sources together (-ENOSPC otherwise) and is not resized.
 * Zeros of the sources are written as zeros (zero clusters, holes) unless
 * 'dst_is_zero' says 'dst' reads as zeros already. Of 'opts' only
 * sparse_size, fully_allocated, cache (a flush unless unsafe) and progress
 * apply. A failure or cancel leaves 'dst' holding part of the data. */
int vh_image_convert_into(struct vh_image *const *srcs, size_t n_srcs, struct vh_image *dst, bool dst_is_zero,
                          const struct vh_image_convert_options *opts, struct vh_error *err);

/* Whether a new image may replace the file at 'path', as create and
 * convert decide it (they check again under the file's lock):
 *   0        nothing there, a zero-length file, an image with no data of
 *            its own (a new qcow2, an empty overlay, a sparse raw file), or
 *            any other regular file when 'replace_data' is set;
 *   -EEXIST  it holds data and 'replace_data' is not set: guest data of
 *            its own (not its backing file's; zero clusters and clusters
 *            that metadata preallocation mapped onto holes do not count,
 *            blocks reserved by falloc or full preallocation do), internal
 *            snapshots, or, for a file that cannot be read as an image, any
 *            block on disk. A file that is not an image (text) is raw data.
 *            The message names the file and the amount;
 *   -EBUSY   another process holds it with QEMU's locks (a running VM,
 *            qemu-io), whatever 'replace_data' says; the message names the
 *            process where /proc tells;
 *   -EINVAL  it is not a regular file. */
int vh_image_replace_check(const char *path, bool replace_data, struct vh_error *err);

/* ---- Inspection: check, map, compare, measure (check.c, map.c,
 * compare.c, measure.c), with qemu-img's semantics and output. ---- */

enum {
        VH_IMAGE_CHECK_REPAIR_LEAKS = 1 << 0,  /* -r leaks: lower refcounts that are too high */
        VH_IMAGE_CHECK_REPAIR_ERRORS = 1 << 1,
        /* -r all: also raise refcounts that are too low, rebuild a broken
         * refcount table, fix COPIED flags */
        VH_IMAGE_CHECK_REPAIR_ALL = VH_IMAGE_CHECK_REPAIR_LEAKS | VH_IMAGE_CHECK_REPAIR_ERRORS,
};

struct vh_image_check_options {
        enum vh_image_format format;    /* VH_IMAGE_FORMAT_PROBE to detect it */
        unsigned repair;                /* VH_IMAGE_CHECK_REPAIR_* */
        bool force_share;               /* take no lock (read-only check only) */
        /* Each problem as the line qemu-img prints for it ("Leaked cluster 9
         * refcount=1 reference=0"); may be NULL. */
        void (*report)(const char *line, void *userdata);
        /* After a repair, before the image is checked again. */
        void (*repaired)(uint64_t leaks_fixed, uint64_t corruptions_fixed, void *userdata);
        void *userdata;
};

/* qemu-img's ImageCheck, field for field. */
struct vh_image_check_result {
        uint64_t check_errors;          /* the check could not read something */
        uint64_t corruptions;           /* refcount too low, bad offsets, wrong COPIED flags */
        uint64_t leaks;                 /* refcount higher than the references */
        uint64_t corruptions_fixed;
        uint64_t leaks_fixed;
        uint64_t image_end_offset;      /* end of the last cluster in use */
        uint64_t total_clusters;        /* guest clusters */
        uint64_t allocated_clusters;
        uint64_t fragmented_clusters;
        uint64_t compressed_clusters;
};

/* Checks (and with opts->repair, repairs) the qcow2 image at 'path'. A
 * format without checks (raw) gives -EOPNOTSUPP. Returns < 0 when the
 * check could not be completed (qemu-img's exit code 1); otherwise the
 * result says whether there were corruptions (2) or only leaks (3). */
int vh_image_check(const char *path, const struct vh_image_check_options *opts,
                   struct vh_image_check_result *ret, struct vh_error *err);
/* The result as 'qemu-img check' prints it (human text or JSON). */
int vh_image_check_format(const char *filename, const struct vh_image_check_result *result,
                          enum vh_image_info_output output, char **ret_text, struct vh_error *err);

/* One line of 'qemu-img map'. */
struct vh_image_map_entry {
        uint64_t start;
        uint64_t length;
        unsigned depth;                 /* layer that answered: 0 = the image itself */
        bool present;                   /* allocated in that layer */
        bool zero;
        bool data;
        bool has_offset;
        uint64_t offset;                /* where the data is in 'filename' */
        const char *filename;           /* valid during the callback only */
};

/* Walks [start, start + length) of 'img' through its backing chain the
 * way 'qemu-img map' does, and calls 'emit' for each merged entry with
 * the entry after it (NULL for the last). With 'human', ranges are merged
 * as the human format does (zero and unallocated ranges alike). 'emit'
 * returning < 0 stops the walk with that value. */
int vh_image_map_walk(struct vh_image *img, uint64_t start, uint64_t length, bool human,
                      int (*emit)(const struct vh_image_map_entry *e, const struct vh_image_map_entry *next,
                                  void *userdata),
                      void *userdata, struct vh_error *err);

struct vh_image_compare_options {
        bool strict;                    /* -s: sizes and allocation must match too */
        int (*progress)(uint64_t done, uint64_t total, void *userdata); /* see "Progress" above */
        void *userdata;
};

enum vh_image_compare_outcome {
        VH_IMAGE_COMPARE_IDENTICAL,
        VH_IMAGE_COMPARE_CONTENT_MISMATCH,  /* at 'offset' (a 512-byte sector) */
        VH_IMAGE_COMPARE_SIZE_MISMATCH,     /* strict mode only */
        VH_IMAGE_COMPARE_STATUS_MISMATCH,   /* strict mode only, at 'offset' */
};

struct vh_image_compare_result {
        enum vh_image_compare_outcome outcome;
        uint64_t offset;
        bool size_mismatch;             /* sizes differ (a warning unless strict) */
        bool read_error;                /* a failure was a read error (qemu-img exit 4), else a status error (3) */
};

/* Compares what a guest sees in 'a' and 'b' as 'qemu-img compare' does:
 * the first differing 512-byte sector; past the smaller size the larger
 * image must read as zeros (unless strict). */
int vh_image_compare(struct vh_image *a, struct vh_image *b, const struct vh_image_compare_options *opts,
                     struct vh_image_compare_result *ret, struct vh_error *err);

struct vh_image_measure_options {
        enum vh_image_format format;    /* of the image to be created */
        uint64_t size;                  /* without a source image: its virtual size */
        /* qcow2: 0 for the defaults */
        uint32_t cluster_size;
        unsigned refcount_bits;
        unsigned version;
        bool extended_l2;
        bool preallocate_data;          /* preallocation=falloc|full */
        bool backing;                   /* the new image will have a backing file */
};

struct vh_image_measure_result {
        uint64_t required;              /* bytes the new file needs for what the source holds */
        uint64_t fully_allocated;       /* bytes once every cluster is written */
        bool has_bitmaps;
        uint64_t bitmaps;               /* bytes for the source's persistent bitmaps */
};

/* 'qemu-img measure': how large a new image of opts->format holding 'src'
 * (or, with src NULL, of opts->size bytes) would be. */
int vh_image_measure(struct vh_image *src, const struct vh_image_measure_options *opts,
                     struct vh_image_measure_result *ret, struct vh_error *err);

/* ---- Fault injection, for the crash-safety tests ----
 *
 * With the switch at N > 0, the process raises SIGKILL right after its
 * Nth write to an image file (data or metadata, counted across all
 * threads), so that a test can stop a writer between any two of its
 * writes (tests/e2e/t-img-crash.sh). 0 turns it off. Setting it restarts
 * the count. */
void vh_image_fault_set_kill_after_writes(uint64_t n);


/* ---- amend (image/amend.c): 'qemu-img amend' for qcow2 ---- */

struct vh_image_amend_options {
        unsigned version;       /* 0: unchanged; 2 (compat=0.10) or 3 (compat=1.1) */
        int lazy_refcounts;     /* -1: unchanged (dropped by a downgrade); 0: off; 1: on (version 3) */
        unsigned refcount_bits; /* 0: unchanged; a power of two in 1..64 (not 16: version 3 only) */
        /* 0: unchanged; else the new virtual size, not below the current
         * one (a shrink is 'resize --shrink', which says what it discards). */
        uint64_t size;
        /* See "Progress" above: called while the refcounts are read (a
         * cancel leaves the image unchanged) and for each L1 entry while a
         * downgrade writes zero clusters out (a cancel leaves a version 3
         * image that reads as before, flushed; the options applied before
         * the downgrade, refcount width and size, stay applied). */
        int (*progress)(uint64_t done, uint64_t total, void *userdata);
        void *userdata;
};

/* Changes the format options of the qcow2 image 'img' (opened read-write,
 * so QEMU's write lock keeps a running VM's image out) in place, as
 * 'qemu-img amend' does, with its refusals and messages: lazy refcounts or
 * other refcount widths than 16 on version 2, a downgrade of an image with
 * incompatible features (extended L2, external data file), persistent
 * bitmaps, zstd-compressed clusters, or internal snapshots whose disk size
 * differs from the (new) virtual size or whose VM state exceeds 4 GiB; a
 * refcount too large for a narrower width; and a size change that
 * vh_image_resize_check() refuses (persistent bitmaps among others). A downgrade writes zero clusters out (zeros written, or
 * an unallocated cluster where no backing file shows through). Every
 * refusal comes before the first write, and the file is the old or the
 * new image at every moment (leaked clusters at worst); see amend.c. */
int vh_image_amend(struct vh_image *img, const struct vh_image_amend_options *opts, struct vh_error *err);
