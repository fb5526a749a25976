/* image/chain.c: backing chains. A qcow2 image may name a backing file
 * whose content shows through wherever the image has no cluster of its
 * own; that file may have a backing file in turn. Names are resolved as
 * QEMU resolves them (relative to the directory of the image that names
 * them, by plain string concatenation), the chain is at most
 * VH_IMAGE_MAX_CHAIN_DEPTH deep, and a file that appears twice is a loop.
 * Backing files are always opened read-only. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/macro.h"
#include "base/strutil.h"
#include "image/image-internal.h"

/* QEMU takes "proto:rest" (a ':' before any '/') as a protocol, and
 * "json:{...}" as an inline description; neither is a plain file. */
static bool has_protocol(const char *name) {
        size_t n = strcspn(name, ":/");
        return name[n] == ':';
}

int image_open_backing_file(const char *overlay_path, const char *backing_name, enum vh_image_format format,
                            const char *what, char **ret_path, struct vh_image **ret, struct vh_error *err) {
        char prefix[64];
        snprintf(prefix, sizeof(prefix), "cannot use the %s", what);
        _cleanup_free_ char *path = NULL;
        int r = image_backing_path(overlay_path, backing_name, &path);
        if (r == -EOPNOTSUPP)
                return vh_error_set(err, r, "%s '%s': protocol and json: names are not supported", what, backing_name);
        if (r < 0)
                return vh_error_set(err, r, "out of memory");

        enum vh_image_format detected;
        r = vh_image_probe(path, &detected, err);
        if (r < 0)
                return image_error_prefix(err, r, prefix);
        if (format < 0 || format >= _VH_IMAGE_FORMAT_MAX)
                /* qemu-img refuses this since QEMU 6.1. */
                return vh_error_set(err, -EINVAL, "%s '%s' given without its format; it looks like %s: add -F %s",
                                    what, backing_name, vh_image_format_to_string(detected),
                                    vh_image_format_to_string(detected));
        if (detected != format)
                return vh_error_set(err, -EINVAL, "%s '%s' is a %s image, not %s (-F)", what, path,
                                    vh_image_format_to_string(detected), vh_image_format_to_string(format));

        struct vh_image_open_options o = { .format = format };
        r = vh_image_open(path, &o, ret, err);
        if (r < 0)
                return image_error_prefix(err, r, prefix);
        if (ret_path)
                *ret_path = TAKE_PTR(path);
        return 0;
}

int vh_image_backing_probe(const char *overlay_path, const char *backing_name, enum vh_image_format *ret_format,
                           struct vh_error *err) {
        _cleanup_free_ char *path = NULL;
        int r = image_backing_path(overlay_path, backing_name, &path);
        if (r == -EOPNOTSUPP)
                return vh_error_set(err, r, "backing file '%s': protocol and json: names are not supported",
                                    backing_name);
        if (r < 0)
                return vh_error_set(err, r, "out of memory");
        return vh_image_probe(path, ret_format, err);
}

int image_backing_path(const char *overlay_path, const char *backing_name, char **ret_path) {
        if (isempty(backing_name) || has_protocol(backing_name))
                return -EOPNOTSUPP;

        char *path;
        const char *slash = strrchr(overlay_path, '/');
        if (backing_name[0] == '/' || !slash)
                path = strdup(backing_name);
        else
                path = strdup_printf("%.*s%s", (int) (slash - overlay_path + 1), overlay_path, backing_name);
        if (!path)
                return -ENOMEM;
        *ret_path = path;
        return 0;
}

int image_chain_open(struct vh_image *top, unsigned flags, struct vh_error *err) {
        /* Backing files are only read; the force-share choice carries over. */
        unsigned backing_flags = flags & VH_IMAGE_OPEN_FORCE_SHARE;

        for (struct vh_image *cur = top; cur->backing_name; cur = cur->backing) {
                if (!cur->backing_path)
                        return vh_error_set(err, -EOPNOTSUPP,
                                            "%s: backing file name '%s' uses a protocol or json: syntax, which is not "
                                            "supported",
                                            cur->filename, cur->backing_name);
                if (cur->backing_format_unknown)
                        return vh_error_set(err, -EOPNOTSUPP,
                                            "%s: backing file '%s': format '%s' (header extension) is not supported",
                                            cur->filename, cur->backing_name, cur->backing_format_unknown);
                if (cur->depth + 1 > VH_IMAGE_MAX_CHAIN_DEPTH)
                        return vh_error_set(err, -ELOOP, "%s: backing chain is deeper than %d images", top->filename,
                                            VH_IMAGE_MAX_CHAIN_DEPTH);

                struct vh_image *b;
                int r = image_open_one(cur->backing_path, cur->backing_format, backing_flags, cur->depth + 1, top, &b,
                                       err);
                if (r < 0) {
                        char prefix[VH_ERROR_MAX];
                        snprintf(prefix, sizeof(prefix), "%s: backing file '%s'", cur->filename, cur->backing_name);
                        return image_error_prefix(err, r, prefix);
                }
                cur->backing = b;
        }
        return 0;
}
