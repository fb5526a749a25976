/* vm/vm-ops.c: create and set: checks, allocation, overlay, rollback. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/defs.h"
#include "base/fileio.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "vm/vm-accel.h"
#include "vm/vm-alloc.h"
#include "vm/vm-image.h"
#include "vm/vm-ops.h"
#include "vm/vm.h"

int vm_def_set_vnc(struct vm_def *def, const char *value, bool *ret_alloc, struct vh_error *err) {
        _cleanup_free_ char *v = NULL;
        bool alloc = false;
        if (streq(value, "auto"))
                value = "unix";
        else if (endswith(value, ":auto")) {
                /* Checked as display 0, replaced by the allocated one. */
                v = strdup_printf("%.*s0", (int) (strlen(value) - strlen("auto")), value);
                if (!v)
                        return -ENOMEM;
                alloc = true;
        }
        int r = vm_def_set(def, "vnc", v ? v : value, err);
        if (r < 0)
                return r;
        *ret_alloc = alloc;
        return 0;
}

int vm_path_absolute(const char *path, const char *base_dir, const char *what, char **ret, struct vh_error *err) {
        if (isempty(path))
                return vh_error_set(err, -EINVAL, "Empty path for %s", what);
        char *abs;
        if (path[0] == '/')
                abs = strdup(path);
        else if (isempty(base_dir) || base_dir[0] != '/')
                return vh_error_set(err, -EINVAL, "%s %s: an absolute path is needed here", what, path);
        else
                abs = strdup_printf("%s%s%s", base_dir, endswith(base_dir, "/") ? "" : "/", path);
        if (!abs)
                return -ENOMEM;
        if (strlen(abs) >= 4096) {
                free(abs);
                return vh_error_set(err, -ENAMETOOLONG, "%s %s: path too long", what, path);
        }
        *ret = abs;
        return 0;
}

/* Replaces *path (when set) with its absolute form. */
static int absolute_in_place(char **path, const char *base_dir, const char *what, struct vh_error *err) {
        if (!*path)
                return 0;
        char *abs;
        int r = vm_path_absolute(*path, base_dir, what, &abs, err);
        if (r < 0)
                return r;
        free(*path);
        *path = abs;
        return 0;
}

static int def_paths_absolute(struct vm_def *def, const char *base_dir, struct vh_error *err) {
        struct {
                char **path;
                const char *what;
        } paths[] = {
                { &def->disk, "Disk" }, { &def->base, "Base image" }, { &def->cdrom, "CD-ROM image" },
                { &def->kernel, "Kernel" }, { &def->initrd, "Initrd" },
        };
        for (size_t i = 0; i < ELEMENTSOF(paths); i++) {
                int r = absolute_in_place(paths[i].path, base_dir, paths[i].what, err);
                if (r < 0)
                        return r;
        }
        return 0;
}

void vm_create_result_done(struct vm_create_result *res) {
        res->def = vm_def_free(res->def);
}

int vm_create(const struct vh_context *ctx, struct vm_create_options *opts, struct vm_create_result *ret,
              struct vh_error *err) {
        _cleanup_(vm_def_freep) struct vm_def *def = TAKE_PTR(opts->def);
        if (!def)
                return -EINVAL;
        const char *name = def->name;
        if (!name_is_valid(name))
                return vh_error_set(err, -EINVAL,
                                    "Invalid VM name '%s': use 1-%d letters, digits, '-' or '_', starting with a letter or digit",
                                    name, VH_NAME_MAX);
        if (opts->base && def->disk)
                return vh_error_set(err, -EINVAL, "VM %s: a disk and a base exclude each other", name);
        if (opts->disk_size && !opts->base)
                return vh_error_set(err, -EINVAL, "VM %s: a disk size needs a base to make an overlay on", name);
        if (opts->disk_format && !def->disk)
                return vh_error_set(err, -EINVAL,
                                    "VM %s: a disk format needs a disk (an overlay made on a base is always qcow2)", name);
        int r = def_paths_absolute(def, opts->base_dir, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *base = NULL;
        if (opts->base && (r = vm_path_absolute(opts->base, opts->base_dir, "Base image", &base, err)) < 0)
                return r;
        if (def->disk && !file_exists(def->disk))
                return vh_error_set(err, -ENOENT, "Disk %s does not exist", def->disk);
        if (def->cdrom && !file_exists(def->cdrom))
                return vh_error_set(err, -ENOENT, "CD-ROM image %s does not exist", def->cdrom);

        /* With a base the disk is made below; the rest is checked now. */
        r = base ? 0 : vm_def_validate(def, err);
        if (r < 0)
                return r;
        /* Before the locks: resolving the accelerator may run the KVM probe. */
        r = vm_accel_check_def(ctx, def, err);
        if (r < 0)
                return r;

        r = vm_machine_pin(ctx, def, NULL);
        if (r < 0)
                return r;

        /* The name's lock makes the exists-check and the save one step
         * against another create, a delete or a start of the same name;
         * allocation and saving happen under the home's lock too, so
         * parallel creates never share an id, a MAC or a VNC display. */
        _cleanup_(vm_lock_releasep) struct vm_lock *lock = NULL;
        _cleanup_close_ int home = -1;
        r = vm_lock_take_with_home(ctx, name, "created", &lock, &home, err);
        if (r < 0)
                return r;
        if (vm_exists(ctx, name))
                return vh_error_set(err, -EEXIST, "VM %s already exists. Use 'vmhost vm delete %s' first, or another name.",
                                    name, name);
        /* The format QEMU is told is the one the file has: probed here,
         * so a wrong one is refused now rather than by QEMU at start. */
        if (def->disk && (r = vm_image_record_disk_format(def, opts->disk_format, err)) < 0)
                return r;
        r = vm_alloc_check_macs(def, opts->avoid_macs, err);
        if (r < 0)
                return r;
        r = vm_alloc_id(ctx, opts->avoid_macs, &def->id, err);
        if (r < 0)
                return r;
        for (unsigned i = 0; i < def->n_nics; i++)
                if (!def->nics[i].mac[0] && (r = vm_derive_mac(ctx, def->id, i, def->nics[i].mac)) < 0)
                        return vh_error_set(err, r, "Cannot derive the MAC of NIC %u of VM %s: %s", i, def->name,
                                            strerror(-r));
        if (opts->alloc_vnc_display) {
                r = vm_alloc_vnc_display(ctx, def->vnc_host, &def->vnc_display, err);
                if (r < 0)
                        return r;
        }
        if (base) {
                r = vm_image_create_overlay(ctx, def, base, opts->disk_size, err);
                if (r < 0)
                        return r;
        }
        r = vm_save(ctx, def, err);
        if (r < 0) {
                if (base)
                        vm_image_remove_own_disk(ctx, def);
                return r;
        }
        ret->def = TAKE_PTR(def);
        return 0;
}

void vm_set_result_done(struct vm_set_result *res) {
        res->def = vm_def_free(res->def);
}

static bool key_is_path(const char *key) {
        return streq(key, "disk") || streq(key, "base") || streq(key, "cdrom") || streq(key, "kernel") ||
               streq(key, "initrd");
}

/* A KEY=VALUE the definition refuses: the caller's usage error, as the
 * CLI's exit status 2 says; all else (the VM, its files, the checks of
 * create) fails with usage_error unset. */
static int usage_error(struct vm_set_result *ret, int r) {
        ret->usage_error = true;
        return r;
}

int vm_set(const struct vh_context *ctx, const char *name, const struct vm_set_options *opts, struct vm_set_result *ret,
           struct vh_error *err) {
        if (opts->n_assignments == 0)
                return vh_error_set(err, -EINVAL, "vm set: expected KEY=VALUE, e.g. boot=disk");
        /* A new TCP display is allocated: under the home's lock. */
        _cleanup_(vm_lock_releasep) struct vm_lock *lock = NULL;
        _cleanup_close_ int home = -1;
        int r = vm_lock_take_with_home(ctx, name, "changed", &lock, &home, err);
        if (r < 0)
                return r;
        _cleanup_(vm_def_freep) struct vm_def *def = NULL;
        r = vm_load(ctx, name, &def, err);
        if (r < 0)
                return r;

        bool vnc_set = false, disk_changed = false, cpu_changed = false;
        _cleanup_free_ char *disk_format = NULL;
        for (size_t i = 0; i < opts->n_assignments; i++) {
                const char *a = opts->assignments[i], *eq = strchr(a, '=');
                if (!eq || eq == a || (size_t) (eq - a) > 64)
                        return usage_error(ret, vh_error_set(err, -EINVAL, "vm set: expected KEY=VALUE, not '%s'", a));
                char key[65];
                snprintf(key, sizeof(key), "%.*s", (int) (eq - a), a);
                const char *value = eq + 1;
                /* Identity and what vmhost allocated stay as they are: the
                 * schema marks them (vm-def.c's table, DEF_IMMUTABLE). */
                const struct def_key *k = def_key_find(vm_def_schema(), key);
                if (k && (k->flags & DEF_IMMUTABLE))
                        return usage_error(ret, vh_error_set(err, -EINVAL, "vm set: '%s' cannot be changed", key));
                if (k && k->type == DEF_LIST)
                        return usage_error(ret, vh_error_set(err, -EINVAL,
                                                             "vm set: '%s' adds to a list; edit %s in the definition file instead",
                                                             key, key));
                if (streq(key, "cdrom") && (streq(value, "none") || !value[0])) {
                        def->cdrom = mfree(def->cdrom);
                        continue;
                }
                _cleanup_free_ char *abs = NULL;
                if (key_is_path(key)) {
                        r = vm_path_absolute(value, opts->base_dir, key, &abs, err);
                        if (r < 0)
                                return r;
                        if (!file_exists(abs))
                                return vh_error_set(err, -ENOENT, "vm set: %s %s does not exist", key, abs);
                        value = abs;
                }
                if (streq(key, "vnc")) {
                        bool alloc;
                        struct vh_error why = {};
                        r = vm_def_set_vnc(def, value, &alloc, &why);
                        if (r < 0)
                                return usage_error(ret, vh_error_set(err, r, "vm set vnc=%s: %s", value,
                                                                     vh_error_message(&why, r)));
                        /* The home lock is held: nobody takes the display meanwhile. */
                        if (alloc && (r = vm_alloc_vnc_display(ctx, def->vnc_host, &def->vnc_display, err)) < 0)
                                return r;
                        vnc_set = true;
                        continue;
                }
                struct vh_error why = {};
                r = vm_def_set(def, key, value, &why);
                if (r < 0)
                        return usage_error(ret, vh_error_set(err, r, "vm set %s=%s: %s", key, value,
                                                             vh_error_message(&why, r)));
                if (streq(key, "disk-format") && !(disk_format = strdup(value)))
                        return -ENOMEM;
                disk_changed = disk_changed || streq(key, "disk");
                cpu_changed = cpu_changed || streq(key, "cpu") || streq(key, "accel");
        }
        /* The same checks as at create: the disk's format is probed (a
         * format given here must agree), and the CPU model must suit the
         * accelerator. */
        if ((disk_changed || disk_format) && def->disk &&
            (r = vm_image_record_disk_format(def, disk_format, err)) < 0)
                return r;
        if (cpu_changed && (r = vm_accel_check_def(ctx, def, err)) < 0)
                return r;
        r = vm_save(ctx, def, err);
        if (r < 0)
                return r;
        struct vm_status st;
        *ret = (struct vm_set_result) {
                .vnc_changed = vnc_set,
                .running = vm_get_status(ctx, name, &st, NULL) >= 0 && st.state == VM_STATE_RUNNING,
                .def = TAKE_PTR(def),
        };
        return 0;
}

/* Whether 'path' lies in directory 'dir' (both absolute, as the
 * definition keeps them). */
static bool path_in_dir(const char *path, const char *dir) {
        size_t n = strlen(dir);
        return strncmp(path, dir, n) == 0 && path[n] == '/';
}

static void paths_donep(struct vm_paths *p) {
        vm_paths_done(p);
}

int vm_delete_plan(const struct vh_context *ctx, const char *name, struct vm_delete_plan *ret, struct vh_error *err) {
        _cleanup_(paths_donep) struct vm_paths p = {};
        int r = vm_paths_get(ctx, name, &p, err);
        if (r < 0)
                return r;
        _cleanup_(vm_def_freep) struct vm_def *def = NULL;
        r = vm_load(ctx, name, &def, err);
        if (r < 0)
                return r;
        struct vm_delete_plan plan = {};
        strv_addf(&plan.removed, "definition: %s", p.conf);
        _cleanup_(strv_done) struct strv files = {};
        vm_state_files(&p, &files);
        for (size_t i = 0; i < files.n; i++) {
                const char *f = files.v[i];
                bool disk = def->disk && streq(def->disk, f);
                strv_addf(&plan.removed, "%s: %s", disk ? "its own disk" : endswith(f, ".log") ? "log" : "file", f);
        }
        if (files.error)
                plan.removed.error = files.error;
        if (def->disk && !path_in_dir(def->disk, p.state_dir))
                strv_addf(&plan.kept, "disk (not made by vmhost for this VM): %s", def->disk);
        if (def->base)
                strv_addf(&plan.kept, "base image: %s", def->base);
        if (def->cdrom)
                strv_addf(&plan.kept, "CD image: %s", def->cdrom);
        if (def->kernel)
                strv_addf(&plan.kept, "kernel: %s", def->kernel);
        if (def->initrd)
                strv_addf(&plan.kept, "initrd: %s", def->initrd);
        if (plan.removed.error || plan.kept.error) {
                vm_delete_plan_done(&plan);
                return -ENOMEM;
        }
        *ret = plan;
        return 0;
}

void vm_delete_plan_done(struct vm_delete_plan *plan) {
        strv_done(&plan->removed);
        strv_done(&plan->kept);
}
