/* vm/vm-image.c: per-VM overlays on shared bases. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/macro.h"
#include "base/paths.h"
#include "base/strutil.h"
#include "vm/vm-image.h"
#include "vm/vm-list.h"
#include "vm/vm.h"
#include "vmhost/image.h"

int vm_image_own_disk_path(const struct vh_context *ctx, const char *name, char **ret, struct vh_error *err) {
        struct vm_paths p;
        int r = vm_paths_get(ctx, name, &p, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *disk = strdup_printf("%s/disk.qcow2", p.state_dir);
        r = disk ? mkdir_p(p.state_dir, 0700) : -ENOMEM;
        vm_paths_done(&p);
        if (r < 0)
                return vh_error_set(err, r, "Cannot create the directory of VM %s: %s", name, strerror(-r));
        if (file_exists(disk))
                return vh_error_set(err, -EEXIST, "%s exists already; refusing to replace the disk of VM %s", disk,
                                    name);
        *ret = TAKE_PTR(disk);
        return 0;
}

int vm_image_create_overlay(const struct vh_context *ctx, struct vm_def *def, const char *base, uint64_t size,
                            struct vh_error *err) {
        char abs_base[PATH_MAX];
        if (!realpath(base, abs_base))
                return vh_error_set(err, negative_errno(), "Base image %s: %m", base);

        enum vh_image_format fmt;
        int r = vh_image_probe(abs_base, &fmt, err);
        if (r < 0)
                return r;

        _cleanup_free_ char *disk = NULL;
        r = vm_image_own_disk_path(ctx, def->name, &disk, err);
        if (r < 0)
                return r;

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

int vm_image_record_disk_format(struct vm_def *def, const char *explicit_format, struct vh_error *err) {
        enum vh_image_format fmt;
        int r = vh_image_probe(def->disk, &fmt, err);
        if (r < 0)
                return r;
        const char *chosen;
        r = vm_disk_format_choose(def->disk, vh_image_format_to_string(fmt), explicit_format, &chosen, err);
        if (r < 0)
                return r;
        char *f = strdup(chosen);
        if (!f)
                return vh_error_set(err, -ENOMEM, "Out of memory");
        free(def->disk_format);
        def->disk_format = f;
        return 0;
}

void vm_image_remove_own_disk(const struct vh_context *ctx, const struct vm_def *def) {
        struct vm_paths p;
        if (!def->disk || vm_paths_get(ctx, def->name, &p, NULL) < 0)
                return;
        if (startswith(def->disk, p.state_dir))
                unlink(def->disk);
        vm_paths_done(&p);
}

char **vm_names_free(char **names) {
        for (char **n = names; n && *n; n++)
                free(*n);
        free(names);
        return NULL;
}

static bool same_file(const char *a, const struct stat *b) {
        struct stat st;
        return a && stat(a, &st) == 0 && st.st_dev == b->st_dev && st.st_ino == b->st_ino;
}

/* The backing file recorded in 'disk's header, resolved, or NULL. */
static char *disk_backing(const char *disk) {
        struct vh_image_open_options o = {
                .format = VH_IMAGE_FORMAT_PROBE,
                .flags = VH_IMAGE_OPEN_NO_BACKING | VH_IMAGE_OPEN_FORCE_SHARE,
        };
        struct vh_image *img = NULL;
        if (vh_image_open(disk, &o, &img, NULL) < 0)
                return NULL;
        struct vh_image_info *info = NULL;
        char *b = NULL;
        if (vh_image_get_info(img, &info, NULL) >= 0 && info->full_backing_filename)
                b = strdup(info->full_backing_filename);
        vh_image_info_free(info);
        vh_image_free(img);
        return b;
}

static int compare_names(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Which relation to 'path' find_vms() looks for. */
enum vm_image_relation {
        VM_IMAGE_BASE_OF, /* 'path' backs the VM's disk */
        VM_IMAGE_DISK_OF, /* 'path' is the VM's disk */
};

static bool vm_has_relation(const struct vm_def *def, const struct stat *target, enum vm_image_relation rel) {
        if (rel == VM_IMAGE_DISK_OF)
                return same_file(def->disk, target);
        if (same_file(def->base, target))
                return true;
        if (!def->disk)
                return false;
        _cleanup_free_ char *b = disk_backing(def->disk);
        return same_file(b, target);
}

/* Appends a copy of 'name' to the NULL-terminated '*names' (n entries). */
static int names_add(char ***names, size_t *n, const char *name) {
        char **nn = realloc(*names, (*n + 2) * sizeof(char *));
        if (!nn)
                return -ENOMEM;
        *names = nn;
        nn[*n] = strdup(name);
        if (!nn[*n])
                return -ENOMEM;
        nn[++*n] = NULL;
        return 0;
}

/* Adds to '*names' the VMs whose disk has relation 'rel' to 'target'. A
 * definition that does not load fails the scan, naming its file: it might
 * use any image, and a base it uses must not lose its protection by a
 * typo. */
static int scan_vms(const struct vh_context *ctx, const struct stat *target, enum vm_image_relation rel, char ***names,
                    size_t *n, struct vh_error *err) {
        _cleanup_(vm_names_freep) char **all = NULL;
        int r = vm_list_names(ctx, &all, err);
        if (r < 0)
                return r;
        for (char **name = all; *name; name++) {
                _cleanup_(vm_def_freep) struct vm_def *def = NULL;
                struct vh_error e = {};
                r = vm_load(ctx, *name, &def, &e);
                if (r == -ENOENT && !vm_exists(ctx, *name))
                        continue; /* deleted since the scan */
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return vh_error_set(err, r, "VM %s's definition does not parse (%s); fix it first", *name,
                                            vh_error_message(&e, r));
                if (vm_has_relation(def, target, rel)) {
                        r = names_add(names, n, def->name);
                        if (r < 0)
                                return r;
                }
        }
        return 0;
}

/* The VMs whose disk has relation 'rel' to 'path', sorted; *ret_names
 * (may be NULL) only on success. */
static int find_vms(const struct vh_context *ctx, const char *path, enum vm_image_relation rel, char ***ret_names,
                    struct vh_error *err) {
        char **names = calloc(1, sizeof(char *));
        if (!names)
                return -ENOMEM;
        size_t n = 0;
        struct stat target;
        /* Nothing there: nothing depends on it. */
        int r = stat(path, &target) < 0 ? 0 : scan_vms(ctx, &target, rel, &names, &n, err);
        if (r < 0) {
                vm_names_free(names);
                return r;
        }
        qsort(names, n, sizeof(char *), compare_names);
        if (ret_names)
                *ret_names = names;
        else
                vm_names_free(names);
        return (int) n;
}

int vm_image_dependents(const struct vh_context *ctx, const char *path, char ***ret_names, struct vh_error *err) {
        return find_vms(ctx, path, VM_IMAGE_BASE_OF, ret_names, err);
}

static char *join_names(char **names) {
        size_t len = 1;
        for (char **n = names; n && *n; n++)
                len += strlen(*n) + 2;
        char *out = calloc(1, len);
        for (char **n = names; out && n && *n; n++) {
                if (n != names)
                        strcat(out, ", ");
                strcat(out, *n);
        }
        return out;
}

int vm_image_check_not_base(const struct vh_context *ctx, const char *path, const char *action, struct vh_error *err) {
        char **names = NULL;
        struct vh_error e = {};
        int n = vm_image_dependents(ctx, path, &names, &e);
        if (n < 0)
                return vh_error_set(err, n, "Refusing to %s %s: %s", action, path, vh_error_message(&e, n));
        if (n == 0) {
                vm_names_free(names);
                return 0;
        }
        _cleanup_free_ char *list = join_names(names);
        vm_names_free(names);
        return vh_error_set(err, -EBUSY, "Refusing to %s %s: it is the base of VM%s %s", action, path, n > 1 ? "s" : "",
                            list ? list : "?");
}

int vm_image_check_not_in_use(const struct vh_context *ctx, const char *path, const char *action,
                              struct vh_error *err) {
        char **names = NULL;
        struct vh_error e = {};
        int n = find_vms(ctx, path, VM_IMAGE_DISK_OF, &names, &e);
        if (n < 0)
                return vh_error_set(err, n, "Refusing to %s %s: %s", action, path, vh_error_message(&e, n));
        if (n == 0) {
                vm_names_free(names);
                return vm_image_check_not_base(ctx, path, action, err);
        }
        _cleanup_free_ char *list = join_names(names);
        vm_names_free(names);
        return vh_error_set(err, -EBUSY, "Refusing to %s %s: it is the disk of VM%s %s", action, path, n > 1 ? "s" : "",
                            list ? list : "?");
}

int vm_image_commit(const struct vh_context *ctx, const char *name, char ***ret_others,
                    int (*progress)(uint64_t, uint64_t, void *), void *userdata, struct vh_error *err) {
        _cleanup_(vm_lock_releasep) struct vm_lock *lock = NULL;
        int r = vm_lock_take(ctx, name, "committed", VM_LOCK_TIMEOUT_MS, &lock, err);
        if (r < 0)
                return r;
        _cleanup_(vm_def_freep) struct vm_def *def = NULL;
        r = vm_load(ctx, name, &def, err);
        if (r < 0)
                return r;
        if (!def->base || !def->disk)
                return vh_error_set(err, -EINVAL, "VM %s has no base image to commit into (its disk is %s)", name,
                                    def->disk ? def->disk : "none");

        char **users = NULL;
        struct vh_error e = {};
        r = vm_image_dependents(ctx, def->base, &users, &e);
        if (r < 0)
                return vh_error_set(err, r, "Refusing to commit VM %s into %s: %s", name, def->base,
                                    vh_error_message(&e, r));
        /* Nobody may run on the base while it changes under them. */
        char **others = calloc((size_t) r + 1, sizeof(char *));
        size_t n_others = 0;
        for (char **u = users; others && *u; u++) {
                struct vm_status st;
                /* A VM being started counts: its QEMU is about to open the base. */
                if (vm_get_status(ctx, *u, &st, NULL) >= 0 &&
                    (st.state == VM_STATE_RUNNING || st.state == VM_STATE_STARTING)) {
                        r = vh_error_set(err, -EBUSY, "Refusing to commit VM %s into %s while VM %s (on the same base) runs",
                                         name, def->base, *u);
                        vm_names_free(users);
                        vm_names_free(others);
                        return r;
                }
                /* A copy that fails would end the list early and drop a VM
                 * the caller must name. */
                if (!streq(*u, name) && !(others[n_others++] = strdup(*u)))
                        others = vm_names_free(others);
        }
        vm_names_free(users);
        if (!others)
                return -ENOMEM;

        struct vh_image_open_options o = { .format = VH_IMAGE_FORMAT_PROBE, .flags = VH_IMAGE_OPEN_READ_WRITE };
        struct vh_image *top = NULL;
        r = vh_image_open(def->disk, &o, &top, err);
        if (r < 0) {
                vm_names_free(others);
                return r;
        }
        struct vh_image_commit_options co = {
                .progress = progress,
                .userdata = userdata,
        };
        r = vh_image_commit(top, &co, err);
        vh_image_free(top);
        if (r < 0) {
                vm_names_free(others);
                return r;
        }
        if (ret_others)
                *ret_others = others;
        else
                vm_names_free(others);
        return 0;
}
