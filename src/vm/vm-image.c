/* vm/vm-image.c: per-VM overlays on shared bases. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/macro.h"
#include "base/paths.h"
#include "base/strutil.h"
#include "vm/vm-image.h"
#include "vm/vm.h"
#include "vmhost/image.h"

int vm_image_create_overlay(struct vm_def *def, const char *base, uint64_t size, struct vh_error *err) {
        char abs_base[PATH_MAX];
        if (!realpath(base, abs_base))
                return vh_error_set(err, negative_errno(), "Base image %s: %m", base);

        enum vh_image_format fmt;
        int r = vh_image_probe(abs_base, &fmt, err);
        if (r < 0)
                return r;

        struct vm_paths p;
        r = vm_paths_get(def->name, &p, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *disk = strdup_printf("%s/disk.qcow2", p.state_dir);
        r = disk ? mkdir_p(p.state_dir, 0700) : -ENOMEM;
        vm_paths_done(&p);
        if (r < 0)
                return vh_error_set(err, r, "Cannot create the directory of VM %s: %s", def->name, strerror(-r));
        if (file_exists(disk))
                return vh_error_set(err, -EEXIST, "%s exists already; refusing to replace the disk of VM %s", disk,
                                    def->name);

        /* The absolute base path is recorded, so the overlay does not depend
         * on where vmhost runs from. */
        struct vh_image_create_options opts = {
                .format = VH_IMAGE_FORMAT_QCOW2,
                .size = size,
                .backing_file = abs_base,
                .backing_format = fmt,
        };
        r = vh_image_create(disk, &opts, err);
        if (r < 0)
                return r;

        char *b = strdup(abs_base), *f = strdup("qcow2");
        if (!b || !f) {
                free(b);
                free(f);
                unlink(disk);
                return -ENOMEM;
        }
        free(def->base);
        def->base = b;
        free(def->disk_format);
        def->disk_format = f;
        free(def->disk);
        def->disk = TAKE_PTR(disk);
        return 0;
}

void vm_image_remove_own_disk(const struct vm_def *def) {
        struct vm_paths p;
        if (!def->disk || vm_paths_get(def->name, &p, NULL) < 0)
                return;
        if (startswith(def->disk, p.state_dir))
                unlink(def->disk);
        vm_paths_done(&p);
}
