/* vm/vm-image.h: a VM's own disk: a qcow2 overlay on a shared base, made
 * with vmhost's image engine (include/vmhost/image.h). */
#pragma once

#include <stdint.h>

#include "vm/vm-def.h"

/* Creates STATE/vms/NAME/disk.qcow2 backed by 'base' (its absolute path
 * and probed format are recorded) and sets def->disk, def->disk_format and
 * def->base. 'size' 0 means the base's virtual size. */
int vm_image_create_overlay(struct vm_def *def, const char *base, uint64_t size, struct vh_error *err);

/* Removes the overlay made above after a failed create. */
void vm_image_remove_own_disk(const struct vm_def *def);
