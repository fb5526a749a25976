/* image/create.c: 'img create': new empty raw or qcow2 images, optionally
 * as an overlay on a backing file. The backing file must exist and open
 * (with its whole chain) as the format given, unless the caller says not
 * to open it (qemu-img's -u). That the format given is the file's real
 * one is for the caller to check (vh_image_backing_probe()): qemu-img
 * records what it is told, and scripts rely on that. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/macro.h"
#include "image/image-internal.h"

/* Opens the backing file the way the new overlay will see it, checks its
 * format and returns its virtual size. */
static int check_backing(const char *path, const struct vh_image_create_options *opts, uint64_t *ret_size,
                         struct vh_error *err) {
        _cleanup_free_ char *resolved = NULL;
        int r = image_backing_path(path, opts->backing_file, &resolved);
        if (r == -ENOMEM)
                return vh_error_set(err, r, "out of memory");
        struct stat a, b;
        if (r >= 0 && stat(path, &a) == 0 && stat(resolved, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino)
                return vh_error_set(err, -ELOOP, "%s: an image cannot be its own backing file", path);

        struct vh_image *img = NULL;
        if (opts->backing_format < 0 || opts->backing_format >= _VH_IMAGE_FORMAT_MAX)
                /* Fails, saying which format the file looks like. */
                r = image_open_backing_file(path, opts->backing_file, opts->backing_format, "backing file", NULL,
                                            &img, err);
        else {
                /* As the format the caller states, which is what the new
                 * image records and QEMU will open it as, even where the
                 * file looks like another format (a qcow2 file read as
                 * raw): qemu-img does the same, and the caller may warn
                 * (vh_image_backing_probe()). */
                struct vh_image_open_options o = { .format = opts->backing_format };
                r = resolved ? vh_image_open(resolved, &o, &img, err)
                             : vh_error_set(err, -EOPNOTSUPP,
                                            "backing file '%s': protocol and json: names are not supported",
                                            opts->backing_file);
                if (r < 0)
                        r = image_error_prefix(err, r, "cannot use the backing file");
        }
        if (r < 0)
                return r;
        *ret_size = vh_image_virtual_size(img);
        vh_image_free(img);
        return 0;
}

int vh_image_create(const char *path, const struct vh_image_create_options *opts, struct vh_error *err) {
        int r;

        if (opts->format != VH_IMAGE_FORMAT_RAW && opts->format != VH_IMAGE_FORMAT_QCOW2)
                return vh_error_set(err, -EINVAL, "unknown output format");
        if (opts->backing_file && opts->format != VH_IMAGE_FORMAT_QCOW2)
                return vh_error_set(err, -EINVAL, "only qcow2 images can have a backing file");
        if (opts->preallocation < 0 || opts->preallocation >= _VH_IMAGE_PREALLOC_MAX)
                return vh_error_set(err, -EINVAL, "unknown preallocation mode");
        if (opts->preallocation == VH_IMAGE_PREALLOC_METADATA && opts->format != VH_IMAGE_FORMAT_QCOW2)
                return vh_error_set(err, -EINVAL, "preallocation=metadata is for qcow2 images; raw takes falloc or full");
        if (opts->preallocation != VH_IMAGE_PREALLOC_OFF && opts->backing_file)
                /* Preallocated clusters read as zeros and would hide the
                 * backing file's data; qemu-img refuses this too. */
                return vh_error_set(err, -EINVAL, "an image with a backing file cannot be preallocated");
        if (opts->backing_file && strlen(opts->backing_file) > VH_IMAGE_MAX_BACKING_NAME)
                return vh_error_set(err, -ENAMETOOLONG, "backing file name is longer than %d bytes",
                                    VH_IMAGE_MAX_BACKING_NAME);

        uint64_t size = opts->size;
        if (opts->backing_file && opts->unsafe_backing) {
                /* Nothing can be checked, so nothing may be guessed. */
                if (size == 0 && !opts->size_given)
                        return vh_error_set(err, -EINVAL, "Image creation needs a size parameter");
                if (opts->backing_format < 0 || opts->backing_format >= _VH_IMAGE_FORMAT_MAX)
                        return vh_error_set(err, -EINVAL, "Backing file specified without backing format");
        } else if (opts->backing_file) {
                uint64_t backing_size = 0;
                r = check_backing(path, opts, &backing_size, err);
                if (r < 0)
                        return r;
                if (size == 0 && !opts->size_given)
                        size = backing_size;
        }
        if (size > VH_IMAGE_MAX_VIRTUAL_SIZE)
                return vh_error_set(err, -EFBIG, "size %" PRIu64 " is larger than the limit of %" PRIu64 " bytes",
                                    size, VH_IMAGE_MAX_VIRTUAL_SIZE);
        /* Sizes are whole sectors; qemu-img rounds up the same way. */
        size = ALIGN_UP(size, (uint64_t) 512);

        struct image_output out = IMAGE_OUTPUT_INIT;
        r = image_output_begin(path, opts->replace_data, &out, err);
        if (r < 0)
                return r;
        if (opts->format == VH_IMAGE_FORMAT_RAW) {
                r = raw_create(out.fd, size, err);
                if (r >= 0)
                        r = image_preallocate(out.fd, 0, size, opts->preallocation, err);
        } else
                r = qcow2_create(out.fd, opts, size, err);
        if (r >= 0)
                r = image_output_commit(&out, true, err);
        else
                r = image_error_prefix(err, r, path);
        image_output_done(&out);
        return r;
}
