/* base/paths.c: state and runtime directories. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/macro.h"
#include "base/paths.h"
#include "base/strutil.h"

char *vh_state_dir(void) {
        const char *home = getenv("VMHOST_HOME");
        if (!isempty(home))
                return strdup(home);
        if (geteuid() == 0)
                return strdup("/var/lib/vmhost");
        const char *xdg = getenv("XDG_DATA_HOME");
        if (!isempty(xdg))
                return strdup_printf("%s/vmhost", xdg);
        const char *h = getenv("HOME");
        return strdup_printf("%s/.local/share/vmhost", isempty(h) ? "/tmp" : h);
}

char *vh_runtime_dir(void) {
        const char *home = getenv("VMHOST_HOME");
        if (!isempty(home))
                return strdup_printf("%s/run", home);
        if (geteuid() == 0)
                return strdup("/run/vmhost");
        const char *xdg = getenv("XDG_RUNTIME_DIR");
        if (!isempty(xdg))
                return strdup_printf("%s/vmhost", xdg);
        _cleanup_free_ char *state = vh_state_dir();
        return state ? strdup_printf("%s/run", state) : NULL;
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

int vh_state_subdir(const char *sub, char **ret_path) {
        return subdir(vh_state_dir(), sub, ret_path);
}

int vh_runtime_subdir(const char *sub, char **ret_path) {
        return subdir(vh_runtime_dir(), sub, ret_path);
}
