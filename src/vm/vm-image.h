/* vm/vm-image.h: a VM's own disk: a qcow2 overlay on a shared base, made
 * with vmhost's image engine (include/vmhost/image.h). */
#pragma once

#include <stdint.h>

#include "vm/vm-def.h"
#include "vmhost/context.h"

/* STATE/vms/NAME/disk.qcow2, the disk vmhost makes for VM 'name' (an
 * overlay, or a migration's copy), its directory made (0700); -EEXIST with
 * a message when a file is there already: it is never replaced. */
int vm_image_own_disk_path(const struct vh_context *ctx, const char *name, char **ret, struct vh_error *err);

/* Creates STATE/vms/NAME/disk.qcow2 backed by 'base' (its absolute path
 * and probed format are recorded) and sets def->disk, def->disk_format and
 * def->base. 'size' 0 means the base's virtual size. */
int vm_image_create_overlay(const struct vh_context *ctx, struct vm_def *def, const char *base, uint64_t size,
                            struct vh_error *err);

/* Probes def->disk with the image engine and records its format in
 * def->disk_format; 'explicit_format' (may be NULL) is what the user gave
 * and must agree with the probe (see vm_disk_format_choose()). */
int vm_image_record_disk_format(struct vm_def *def, const char *explicit_format, struct vh_error *err);

/* Removes the overlay made above after a failed create. */
void vm_image_remove_own_disk(const struct vh_context *ctx, const struct vm_def *def);

/* The VMs of this home whose disk is backed by 'path' (directly: a vmhost
 * overlay's base, or the backing file recorded in the disk's header),
 * compared by file identity. Returns the count; *ret_names (may be NULL)
 * gets a NULL-terminated list to free with vm_names_free(). A definition
 * that does not load fails the scan with its file named: that VM might
 * use any image. */
int vm_image_dependents(const struct vh_context *ctx, const char *path, char ***ret_names, struct vh_error *err);
char **vm_names_free(char **names);

/* -EBUSY with the dependent VMs named when 'path' backs any VM's disk:
 * such an image must not be overwritten or deleted. */
int vm_image_check_not_base(const struct vh_context *ctx, const char *path, const char *action, struct vh_error *err);

/* The same, and also -EBUSY with the VMs named when 'path' is the disk of
 * any VM (running or only defined): what 'img create' and 'img convert'
 * must never replace, --force or not. */
int vm_image_check_not_in_use(const struct vh_context *ctx, const char *path, const char *action, struct vh_error *err);

/* Merges VM 'name's overlay into its base (vmhost vm commit). Refused while
 * this VM or any VM on the same base runs; the others are listed in
 * *ret_others (may be NULL), since they see the changed base from now on. */
int vm_image_commit(const struct vh_context *ctx, const char *name, char ***ret_others,
                    int (*progress)(uint64_t, uint64_t, void *), void *userdata, struct vh_error *err);
