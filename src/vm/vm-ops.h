/* vm/vm-ops.h: the operations that change a VM's definition: create and
 * set, with their checks, the allocation of ids, MACs and VNC displays,
 * and the overlay made for --base (removed again if the create fails).
 * Each runs under the VM's lock (vm.h) and, where it allocates, the
 * home's allocation lock (vm-alloc.h). Callers parse and print only. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/strv.h"
#include "vm/vm-def.h"
#include "vmhost/context.h"

/* Applies a vnc value as 'vm create --vnc' and 'vm set vnc=' take it:
 * "auto" is the unix socket; "HOST:auto" a TCP display whose number is to
 * be allocated (*ret_alloc set; vm_create() or vm_set() allocates it). */
int vm_def_set_vnc(struct vm_def *def, const char *value, bool *ret_alloc, struct vh_error *err);

/* Makes a relative path absolute against 'base_dir' ("disk", "base",
 * "cdrom", "kernel", "initrd" of a definition: a definition is read from
 * anywhere, so it holds absolute paths only). No base_dir: a relative
 * path is refused. The path is not resolved further (symlinks stay). */
int vm_path_absolute(const char *path, const char *base_dir, const char *what, char **ret, struct vh_error *err);

struct vm_create_options {
        struct vm_def *def;          /* name and keys as parsed; taken over, even on failure */
        const char *base;            /* make the disk a qcow2 overlay on this image (no def->disk then) */
        uint64_t disk_size;          /* of that overlay; 0: the base's size */
        const char *disk_format;     /* the format def->disk must have; NULL: probed */
        bool alloc_vnc_display;      /* def's TCP display number is to be allocated */
        const char *base_dir;        /* where relative paths are taken from (the caller's cwd); NULL: refused */
        char *const *avoid_macs;     /* MACs in use on other hosts (NULL-terminated; NULL: none): neither
                                      * derived nor accepted by hand (vm_alloc_id(), vm_alloc_check_macs()) */
};

struct vm_create_result {
        struct vm_def *def;          /* as saved: id, MACs, display and overlay filled in */
};

/* Checks and saves a new VM. Fails with -EEXIST if one of that name
 * exists, -EINVAL for contradicting options, -ENOENT for a missing file;
 * nothing is left behind on failure. */
int vm_create(const struct vh_context *ctx, struct vm_create_options *opts, struct vm_create_result *ret,
              struct vh_error *err);
void vm_create_result_done(struct vm_create_result *res);

/* What 'vm delete NAME' would remove and what it keeps, as it decides it
 * (vm_delete(), vm.h): removed, the definition and every file in the VM's
 * state directory (its logs, and its disk when vmhost made it there);
 * kept, the files the definition names elsewhere (a base image, a disk of
 * the user's, the CD, kernel and initrd). Each entry "what: path". Reads
 * only; the delete itself checks again under the VM's lock. */
struct vm_delete_plan {
        struct strv removed;
        struct strv kept;
};
int vm_delete_plan(const struct vh_context *ctx, const char *name, struct vm_delete_plan *ret, struct vh_error *err);
void vm_delete_plan_done(struct vm_delete_plan *plan);

struct vm_set_options {
        char *const *assignments;    /* "KEY=VALUE" */
        size_t n_assignments;
        const char *base_dir;        /* as for vm_create */
};

struct vm_set_result {
        struct vm_def *def;          /* as saved */
        bool vnc_changed;
        bool running;                /* the change applies at the next start */
        /* On failure the only field set: the error is in a KEY=VALUE
         * itself (its syntax, a key that cannot change, a refused value). */
        bool usage_error;
};

/* Changes keys of a definition with the checks of create: name and id
 * never change, nic and forward are lists (-EINVAL); a new disk's format
 * is probed, a CPU model must suit the accelerator; cdrom=none removes it. */
int vm_set(const struct vh_context *ctx, const char *name, const struct vm_set_options *opts, struct vm_set_result *ret,
           struct vh_error *err);
void vm_set_result_done(struct vm_set_result *res);
