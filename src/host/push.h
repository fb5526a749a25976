/* host/push.h: copying an image to a remote host once ('vmhost img
 * push'). An image's identity is its content: a tree hash of the file's
 * bytes (PUSH_HASH_ALGORITHM, which costs nothing for holes), kept beside
 * it in a sidecar with the size, mtime and inode it was computed for, so
 * that a changed file is hashed again and an unchanged one costs a stat.
 *
 * What crosses the wire is a framed stream (docs/hosts.md, "Pushing
 * images"): a header with the file's size, then records (offset, length,
 * data), each raw or zstd-compressed, in increasing offset order, holes and
 * all-zero blocks left out, then an end record. The far side ('vmhost img
 * receive', internal) parses it as outside bytes: every field is bounded
 * (record length, offset + length within the declared size, the size
 * itself, the name), writes a sparse temporary file in the target
 * directory, checks the hash, fsyncs, and only then renames it into place,
 * read-only. A temporary file is locked (OFD lock) while its writer lives,
 * so the next receive removes those whose writer is gone. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "host/host-def.h"
#include "vmhost/image.h"
#include "vmhost/context.h"
#include "vmhost/error.h"

#define PUSH_SHA256_HEX 64
/* The largest image one push carries (the temporary file is sparse, so
 * this bounds the declared size, not the disk use). */
#define PUSH_SIZE_MAX (UINT64_C(64) << 40)
/* The most data one record carries, uncompressed. */
#define PUSH_RECORD_MAX (1u << 20)
/* A remote name: a file name of [A-Za-z0-9._+-], not starting with '.'. */
#define PUSH_NAME_MAX 200
/* Beside IMAGE: IMAGE.vmhost-hash, a name of vmhost's own (IMAGE.sha256
 * may be the user's sha256sum file). */
#define PUSH_SIDECAR_SUFFIX ".vmhost-hash"
#define PUSH_SIDECAR_MAX 4096
/* The sidecar's first line: "vmhost-hash VERSION". A sidecar of another
 * version (or the old "# vmhost-push:" one) is computed again, never read
 * as this one. */
#define PUSH_SIDECAR_MAGIC "vmhost-hash"
#define PUSH_SIDECAR_VERSION "2"
#define PUSH_SIDECAR_OLD_MARK "# vmhost-push: "
/* The identity: SHA-256 over a tag, the size and each 1 MiB block's
 * SHA-256 (push_hash_fd()). */
#define PUSH_HASH_ALGORITHM "vmhost-sha256-tree-1m"
#define PUSH_HASH_BLOCK (UINT64_C(1) << 20)

/* ---- Framing ---- */

#define PUSH_MAGIC "VHPUSH1\n"
#define PUSH_HEADER_SIZE 16  /* magic, u64 size (big endian) */
#define PUSH_RECORD_HEADER_SIZE 20

enum push_record_kind {
        PUSH_RECORD_RAW = 1,   /* payload: the data */
        PUSH_RECORD_ZSTD = 2,  /* payload: one zstd frame of the data */
        PUSH_RECORD_END = 3,   /* no payload; offset = size, length 0: the stream is complete */
};

/* A record header on the wire, 20 bytes, big endian:
 *   u8 kind, u8 0, u16 0, u32 payload length, u64 offset, u32 data length. */
struct push_record {
        enum push_record_kind kind;
        uint32_t payload_len;
        uint64_t offset;
        uint32_t data_len;
};

void push_header_encode(uint64_t size, uint8_t out[PUSH_HEADER_SIZE]);
void push_record_encode(const struct push_record *rec, uint8_t out[PUSH_RECORD_HEADER_SIZE]);

/* Where the decoder gets bytes: fills up to 'len' bytes of 'buf', returns
 * how many (0 at the end of the input), or -errno. */
typedef ssize_t (*push_read_fn)(void *buf, size_t len, void *userdata);
/* Where decoded data goes: 'len' bytes (1..PUSH_RECORD_MAX) at 'offset',
 * always within the declared size and after the previous record. Non-zero
 * stops the decoding with that value. */
typedef int (*push_data_fn)(uint64_t offset, const void *data, size_t len, void *userdata);
/* Told the declared size once the header is read; may refuse it. */
typedef int (*push_size_fn)(uint64_t size, void *userdata);

struct push_decode_stats {
        uint64_t size;         /* declared */
        uint64_t data_bytes;   /* decoded */
        uint64_t wire_bytes;   /* read */
        uint64_t records;
};

/* Reads a whole stream: header, records, end record, and nothing after it.
 * Refuses with -EBADMSG and a message saying which field is wrong: a bad
 * magic, a size past 'size_max', an unknown kind, a data length of 0 or
 * past PUSH_RECORD_MAX, a raw payload whose length differs from its data
 * length or a compressed one longer than zstd's bound, a record that ends
 * past the size or starts before the previous one ended, a compressed
 * record that does not decompress to exactly its data length, an end
 * record whose offset is not the size, bytes after it, or an input that
 * ends early (-EPIPE then, the writer went away). */
int push_decode(push_read_fn read_fn, push_size_fn size_fn, push_data_fn data_fn, void *userdata,
                uint64_t size_max, struct push_decode_stats *ret_stats, struct vh_error *err);

/* Where the encoder puts bytes: all 'len' of them, or -errno. */
typedef int (*push_write_fn)(const void *buf, size_t len, void *userdata);
/* Progress of a send: data bytes read so far of 'total', and the bytes
 * written to the wire. Non-zero cancels (-ECANCELED). */
typedef int (*push_progress_fn)(uint64_t done, uint64_t total, uint64_t wire, void *userdata);

struct push_encode_options {
        bool no_compress;
        push_progress_fn progress;
        void *userdata;
        /* Tests only: flip one byte of the first data record after it was
         * read, so that the far side's hash check has something to find. */
        bool test_corrupt;
};

struct push_encode_stats {
        uint64_t size;
        uint64_t allocated;     /* bytes in data extents (SEEK_DATA) */
        uint64_t data_bytes;    /* sent: allocated minus all-zero blocks */
        uint64_t wire_bytes;    /* the stream's length */
        uint64_t records;
        uint64_t compressed_records;
};

/* Encodes the file 'fd' (read by SEEK_DATA/SEEK_HOLE extents; all-zero
 * blocks of 64 KiB left out) into 'write_fn'. Compression is tried with
 * zstd level 1 and kept for a record when it saves more than 10%; after a
 * record that did not compress, the next ones go raw without trying. */
int push_encode(int fd, push_write_fn write_fn, void *write_userdata, const struct push_encode_options *opts,
                struct push_encode_stats *ret_stats, struct vh_error *err);

/* ---- Hashes and sidecars ---- */

/* The PUSH_HASH_ALGORITHM hash of all of 'fd' as lowercase hex: the
 * SHA-256 of "vmhost-sha256-tree-1m\n", the size as u64 big endian, and
 * the SHA-256 of each PUSH_HASH_BLOCK block in order (the last one may be
 * short). Holes are neither read nor hashed byte by byte: a whole zero
 * block is a constant digest. */
int push_hash_fd(int fd, char ret_hex[PUSH_SHA256_HEX + 1], struct vh_error *err);

struct push_sidecar {
        char sha256[PUSH_SHA256_HEX + 1];
        char origin[PUSH_SHA256_HEX + 1];   /* "" unless the file was changed after it arrived (see docs) */
        uint64_t size;
        uint64_t mtime_ns;
        uint64_t inode;
};

/* The sidecar text:
 *   vmhost-hash 2
 *   algorithm=vmhost-sha256-tree-1m
 *   hash=HEX
 *   file=NAME size=N mtime-ns=N inode=N
 *   [origin=HEX] */
char *push_sidecar_format(const struct push_sidecar *sc, const char *name);
/* Parses one: 0; -EPROTONOSUPPORT for a vmhost sidecar of another version
 * or algorithm; -EBADMSG for anything else (not vmhost's). */
int push_sidecar_parse(const char *text, struct push_sidecar *ret);

/* The hash of the image at 'path': from PATH.vmhost-hash when it still
 * matches the file (size, mtime, inode), else computed and written there
 * (when the directory is writable, and never over a file there that is
 * not a vmhost sidecar: then, as in a read-only directory, the hash is
 * computed each time). 'ret_origin' (may be NULL) gets the sidecar's origin. */
int push_image_hash(const char *path, char ret_hex[PUSH_SHA256_HEX + 1], char ret_origin[PUSH_SHA256_HEX + 1],
                    struct vh_error *err);

bool push_name_is_valid(const char *name);
bool push_sha256_is_valid(const char *hex);

/* ---- The far side ---- */

enum push_lookup_status {
        PUSH_ABSENT,     /* neither the name nor the content is there */
        PUSH_PRESENT,    /* the content is there, at 'path' (maybe under another name) */
};

/* Looks for the content 'sha256' in 'dir' (NULL: STATE/images): under
 * 'name' first (-EEXIST with a message when that name holds something
 * else), else any sidecar in the directory whose hash or origin is it.
 * '*ret_path' gets the path found (PRESENT) or the path it would take
 * (ABSENT). With PUSH_READ_ONLY a hash computed on the way is not
 * saved in a sidecar: nothing is written. */
#define PUSH_READ_ONLY (1u << 0)
int push_lookup(const struct vh_context *ctx, const char *dir, const char *name, const char *sha256, unsigned flags,
                enum push_lookup_status *ret_status, char **ret_path, struct vh_error *err);

struct push_receive_options {
        const char *dir;             /* NULL: STATE/images */
        const char *name;
        const char *sha256;          /* what the stream must hash to */
        const char *backing;         /* qcow2: the backing name to write into the copy, or NULL */
        const char *backing_format;  /* "raw" or "qcow2", with 'backing' */
};

/* Receives one image from 'read_fn' (see push_decode()) into
 * DIR/.NAME.push-XXXXXX, checks its hash, rewrites its backing name when
 * told, fsyncs, writes its sidecar, renames it to DIR/NAME and makes it
 * read-only (0444). Stale temporary files of dead writers are removed
 * first. On any failure nothing is left under NAME nor the temporary
 * name. '*ret_path' gets the final path; '*ret_present' (may be NULL)
 * true when NAME held the content already (then the stream may be left
 * unread) or got it from another push meanwhile (the rename found it
 * taken and its hash is the one wanted: the copy is dropped). */
int push_receive(const struct vh_context *ctx, const struct push_receive_options *opts, push_read_fn read_fn,
                 void *userdata, char **ret_path, bool *ret_present, struct push_decode_stats *ret_stats,
                 struct vh_error *err);

/* ---- The near side ---- */

struct push_layer_result {
        char *local_path;
        char *name;                     /* the file name there */
        char *remote_path;
        char sha256[PUSH_SHA256_HEX + 1];
        bool sent;                      /* false: found there already */
        struct push_encode_stats stats;
};

struct push_result {
        struct push_layer_result *layers;  /* backing first, the image last */
        size_t n_layers;
};
void push_result_done(struct push_result *res);

struct push_options {
        const char *dir;                /* on the far side; NULL: its STATE/images */
        bool read_only;                 /* lookups only: no sidecar is written on either side (a dry run) */
        /* The top file's format (-f) when 'format_given', else probed. A layer whose format was only probed
         * (the top without -f, a backing file its overlay names without a
         * format) has its backing file followed only when that lies in
         * its own directory or below: a raw disk whose guest wrote a qcow2
         * header must not make this side send a file of its choosing. */
        /* The top file's name there; NULL: its own. A backing file whose
         * name a layer above it takes gets NAME.HASH8.EXT there (its
         * overlay's backing name is rewritten to it anyway). */
        const char *name;
        bool format_given;
        enum vh_image_format format;
        bool no_compress;
        bool test_corrupt;              /* see push_encode_options */
        /* Progress of each layer sent: 'layer' counts from 0, backing first. */
        int (*progress)(size_t layer, size_t n_layers, uint64_t done, uint64_t total, uint64_t wire,
                        void *userdata);
        void *userdata;
};

/* Where the host holds the content of the local image file 'path' (found
 * by its hash, under its own name or any other, in 'dir' there, NULL: its
 * STATE/images): '*ret_remote_path', or NULL when it has no copy. -EEXIST
 * when that name there holds something else. PUSH_READ_ONLY: no hash
 * computed on the way is saved in a sidecar, here or there (a dry run
 * touches nothing). */
int push_find(const struct vh_context *ctx, const struct host_def *def, const char *path, const char *dir,
              unsigned flags, char **ret_remote_path, struct vh_error *err);

/* Pushes the image at 'path' with its backing chain to the host, backing
 * files first, each found there by hash or sent. */
int push_image(const struct vh_context *ctx, const struct host_def *def, const char *path,
               const struct push_options *opts, struct push_result *ret, struct vh_error *err);
