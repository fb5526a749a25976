/* base/context.c: the program's context (vmhost/context.h). The only file
 * that reads the environment, the euid and the working directory; a
 * check in the unit tests (test-base.c) keeps it so. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/macro.h"
#include "base/strutil.h"
#include "vmhost/context.h"
#include "vmhost/image.h"

struct vh_context *vh_context_free(struct vh_context *ctx) {
        if (!ctx)
                return NULL;
        free(ctx->state_dir);
        free(ctx->runtime_dir);
        free(ctx->qemu_user);
        free(ctx->ovs_db);
        free(ctx->ovs_rundir);
        free(ctx->exec_path);
        free(ctx->cwd);
        free(ctx->mkguest);
        free(ctx->net_fault);
        free(ctx);
        return NULL;
}

/* *dst = a copy of src (NULL stays NULL); false when out of memory. */
static bool copy_opt(char **dst, const char *src) {
        if (!src)
                return true;
        *dst = strdup(src);
        return *dst != NULL;
}

int vh_context_new(const struct vh_context_params *p, struct vh_context **ret, struct vh_error *err) {
        if (isempty(p->state_dir) || p->state_dir[0] != '/')
                return vh_error_set(err, -EINVAL, "The state directory '%s' is not an absolute path",
                                    p->state_dir ? p->state_dir : "");
        if (p->runtime_dir && p->runtime_dir[0] != '/')
                return vh_error_set(err, -EINVAL, "The runtime directory '%s' is not an absolute path",
                                    p->runtime_dir);
        if (p->cwd && p->cwd[0] != '/')
                return vh_error_set(err, -EINVAL, "The working directory '%s' is not an absolute path", p->cwd);

        _cleanup_(vh_context_freep) struct vh_context *c = calloc(1, sizeof(*c));
        if (!c)
                return -ENOMEM;
        c->is_root = p->is_root;
        c->image_fault_kill_after_writes = p->image_fault_kill_after_writes;
        c->state_dir = strdup(p->state_dir);
        c->runtime_dir = p->runtime_dir ? strdup(p->runtime_dir) : strdup_printf("%s/run", p->state_dir);
        c->exec_path = strdup(isempty(p->exec_path) ? VH_CONTEXT_DEFAULT_PATH : p->exec_path);
        if (!c->state_dir || !c->runtime_dir || !c->exec_path || !copy_opt(&c->qemu_user, p->qemu_user) ||
            !copy_opt(&c->ovs_db, p->ovs_db) || !copy_opt(&c->ovs_rundir, p->ovs_rundir) ||
            !copy_opt(&c->cwd, p->cwd) || !copy_opt(&c->mkguest, p->mkguest) ||
            !copy_opt(&c->net_fault, p->net_fault))
                return -ENOMEM;
        *ret = TAKE_PTR(c);
        return 0;
}

/* The variable, or NULL when unset or empty. */
static const char *env(const char *name) {
        const char *v = getenv(name);
        return isempty(v) ? NULL : v;
}

static int env_absolute(const char *name, struct vh_error *err) {
        const char *v = env(name);
        if (v && v[0] != '/')
                return vh_error_set(err, -EINVAL, "%s=%s is not an absolute path", name, v);
        return 0;
}

int vh_context_from_env(struct vh_context **ret, struct vh_error *err) {
        bool root = geteuid() == 0;
        const char *home = env("VMHOST_HOME");
        _cleanup_free_ char *state = NULL, *run = NULL, *cwd = NULL;
        int r;

        /* A relative directory would change meaning with the working
         * directory of whoever uses it: refused, naming the variable. */
        if ((r = env_absolute("VMHOST_HOME", err)) < 0)
                return r;
        if (home) {
                state = strdup(home);
                run = strdup_printf("%s/run", home);
        } else if (root) {
                state = strdup("/var/lib/vmhost");
                run = strdup("/run/vmhost");
        } else {
                if ((r = env_absolute("XDG_DATA_HOME", err)) < 0 || (r = env_absolute("XDG_RUNTIME_DIR", err)) < 0)
                        return r;
                const char *xdg = env("XDG_DATA_HOME"), *h = env("HOME");
                state = xdg ? strdup_printf("%s/vmhost", xdg)
                            : strdup_printf("%s/.local/share/vmhost", h && h[0] == '/' ? h : "/tmp");
                const char *xrun = env("XDG_RUNTIME_DIR");
                run = xrun ? strdup_printf("%s/vmhost", xrun) : state ? strdup_printf("%s/run", state) : NULL;
        }
        if (!state || !run)
                return -ENOMEM;

        const char *qemu_user = NULL;
        if (root) {
                qemu_user = env("VMHOST_QEMU_USER");
                if (!qemu_user)
                        qemu_user = "vmhost-qemu"; /* VM_QEMU_USER, vm/vm-user.h */
                else if (streq(qemu_user, "root"))
                        qemu_user = NULL;
        }

        uint64_t kill_after = 0;
        const char *e = env("VMHOST_FAULT_KILL_AFTER_WRITES");
        if (e) {
                char *end;
                errno = 0;
                unsigned long long v = strtoull(e, &end, 10);
                if (errno != 0 || *end != '\0' || e[0] == '-')
                        return vh_error_set(err, -EINVAL, "VMHOST_FAULT_KILL_AFTER_WRITES=%s is not a number", e);
                kill_after = v;
        }

        /* Without a working directory (it was removed under us) relative
         * paths are refused where they are given, not here. */
        cwd = getcwd(NULL, 0);
        if (cwd && cwd[0] != '/')
                cwd = mfree(cwd);

        struct vh_context_params p = {
                .state_dir = state,
                .runtime_dir = run,
                .is_root = root,
                .qemu_user = qemu_user,
                .ovs_db = env("VMHOST_OVS_DB"),
                .ovs_rundir = env("OVS_RUNDIR"),
                .exec_path = env("PATH"),
                .cwd = cwd,
                .mkguest = env("VMHOST_MKGUEST"),
                .net_fault = env("VMHOST_NET_FAULT"),
                .image_fault_kill_after_writes = kill_after,
        };
        r = vh_context_new(&p, ret, err);
        if (r < 0)
                return r;
        /* The image library's switch is process-wide: set once, here. */
        vh_image_fault_set_kill_after_writes(kill_after);
        return 0;
}
