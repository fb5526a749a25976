/* vm/vm-list.c: the one scan of STATE/vms, and the description of a VM
 * that status and list share. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/macro.h"
#include "base/paths.h"
#include "base/strutil.h"
#include "vm/vm-list.h"

static int name_cmp(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

int vm_list_names(const struct vh_context *ctx, char ***ret, struct vh_error *err) {
        _cleanup_free_ char *state = vh_state_dir(ctx);
        _cleanup_free_ char *dir = state ? strdup_printf("%s/vms", state) : NULL;
        if (!dir)
                return -ENOMEM;
        DIR *d = opendir(dir);
        if (!d && errno != ENOENT)
                return vh_error_set(err, negative_errno(), "Cannot read %s: %m", dir);
        _cleanup_(vm_names_freep) char **names = calloc(1, sizeof(char *));
        size_t n = 0, cap = 0;
        int r = names ? 0 : -ENOMEM;
        for (struct dirent *de; r >= 0 && d && (errno = 0, de = readdir(d));) {
                if (!name_is_valid(de->d_name) || !vm_exists(ctx, de->d_name))
                        continue;
                if (n >= VM_LIST_MAX) {
                        r = vh_error_set(err, -E2BIG, "%s holds more than %d VMs", dir, VM_LIST_MAX);
                        break;
                }
                if (n + 1 >= cap) {
                        size_t ncap = cap ? 2 * cap : 16;
                        char **bigger = realloc(names, ncap * sizeof(char *));
                        if (!bigger) {
                                r = -ENOMEM;
                                break;
                        }
                        names = bigger;
                        cap = ncap;
                }
                if (!(names[n] = strdup(de->d_name))) {
                        r = -ENOMEM;
                        break;
                }
                names[++n] = NULL;
        }
        /* readdir() returns NULL at the end and on an error alike. */
        if (r >= 0 && d && errno != 0)
                r = vh_error_set(err, negative_errno(), "Cannot read %s: %m", dir);
        if (d)
                closedir(d);
        if (r < 0)
                return r;
        qsort(names, n, sizeof(char *), name_cmp);
        *ret = TAKE_PTR(names);
        return (int) n;
}

int vm_describe(const struct vh_context *ctx, const char *name, struct vm_def **ret_def, struct vm_status *ret_status,
                struct vh_error *err) {
        _cleanup_(vm_def_freep) struct vm_def *def = NULL;
        int r = vm_load(ctx, name, &def, err);
        if (r < 0)
                return r;
        struct vm_status st;
        r = vm_get_status(ctx, name, &st, err);
        if (r < 0)
                return r;
        /* A crash seen by an earlier command is remembered until the next
         * start; vm_get_status() reports it only the first time. */
        if (st.state == VM_STATE_STOPPED)
                vm_last_exit(ctx, name, st.exit_reason, sizeof(st.exit_reason));
        *ret_def = TAKE_PTR(def);
        *ret_status = st;
        return 0;
}
