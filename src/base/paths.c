/* base/paths.c: state and runtime directories of a context. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/fileio.h"
#include "base/macro.h"
#include "base/paths.h"
#include "base/strutil.h"

char *vh_state_dir(const struct vh_context *ctx) {
        return strdup(ctx->state_dir);
}

char *vh_runtime_dir(const struct vh_context *ctx) {
        return strdup(ctx->runtime_dir);
}

static int subdir(char *base, const char *sub, char **ret_path) {
        _cleanup_free_ char *b = base;
        if (!b)
                return -ENOMEM;
        char *p = isempty(sub) ? strdup(b) : strdup_printf("%s/%s", b, sub);
        if (!p)
                return -ENOMEM;
        int r = mkdir_p(p, 0700);
        if (r < 0) {
                free(p);
                return r;
        }
        *ret_path = p;
        return 0;
}

int vh_state_subdir(const struct vh_context *ctx, const char *sub, char **ret_path) {
        return subdir(vh_state_dir(ctx), sub, ret_path);
}

int vh_runtime_subdir(const struct vh_context *ctx, const char *sub, char **ret_path) {
        return subdir(vh_runtime_dir(ctx), sub, ret_path);
}
