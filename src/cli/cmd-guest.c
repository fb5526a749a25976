/* cli/cmd-guest.c: 'vmhost guest build|path': the small test guest made
 * here from Debian's cloud kernel and busybox-static (tools/mkguest),
 * cached under STATE/guest. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/log.h"
#include "base/paths.h"
#include "base/process.h"
#include "base/strutil.h"
#include "cli/cli.h"
#include "config.h"

static void usage(FILE *f) {
        fprintf(f,
                "Usage: vmhost guest build [--force]\n"
                "       vmhost guest path\n"
                "\n"
                "build  makes (or finds cached) the test guest: vmlinuz + initrd.img for direct\n"
                "       boot, disk.qcow2 that boots through a bootloader (-boot c), and guest.iso\n"
                "       (-boot d). Everything comes from local Debian packages; nothing is\n"
                "       downloaded. --force rebuilds.\n"
                "path   prints the directory holding them.\n"
                "\n"
                "Example:\n"
                "  vmhost guest build && ls $(vmhost guest path)\n");
}

/* The directory this binary was started from, or NULL. */
static char *self_dir(void) {
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n <= 0)
                return NULL;
        self[n] = '\0';
        char *slash = strrchr(self, '/');
        if (!slash || slash == self)
                return NULL;
        *slash = '\0';
        return strdup(self);
}

/* The guest builder: $VMHOST_MKGUEST if set; else DATA/mkguest, where DATA
 * is the directory named by the file vmhost.datadir beside this binary (the
 * build tree has one, naming its source's tools/), else the installed data
 * directory found relative to this binary (so a tree installed with DESTDIR
 * or moved elsewhere runs its own builder), else the configured one. */
static char *mkguest_path(const struct vh_context *ctx) {
        if (!isempty(ctx->mkguest))
                return strdup(ctx->mkguest);
        _cleanup_free_ char *dir = self_dir();
        if (dir) {
                _cleanup_free_ char *marker = strdup_printf("%s/vmhost.datadir", dir);
                _cleanup_free_ char *data = NULL;
                if (marker && read_one_line_file(marker, &data) >= 0 && data[0] == '/')
                        return strdup_printf("%s/mkguest", data);
#ifdef VMHOST_DATADIR_FROM_BINDIR
                char *p = strdup_printf("%s/%s/mkguest", dir, VMHOST_DATADIR_FROM_BINDIR);
                if (p && access(p, X_OK) == 0)
                        return p;
                free(p);
#endif
        }
        return strdup_printf("%s/mkguest", VMHOST_DATADIR);
}

int cmd_guest(const struct vh_context *ctx, int argc, char **argv) {
        if (argc < 2 || cli_wants_help(argc, argv)) {
                usage(argc < 2 ? stderr : stdout);
                return argc < 2 ? 2 : 0;
        }
        _cleanup_free_ char *dir = NULL;
        int r = vh_state_subdir(ctx, "guest", &dir);
        if (r < 0)
                return log_error_errno(r, "Cannot create the guest cache directory: %m"), 1;

        if (streq(argv[1], "path")) {
                printf("%s\n", dir);
                return 0;
        }
        if (!streq(argv[1], "build")) {
                log_error("Unknown command 'guest %s'. See 'vmhost guest --help'.", argv[1]);
                return 2;
        }
        bool force = false;
        for (int i = 2; i < argc; i++) {
                if (streq(argv[i], "--force"))
                        force = true;
                else
                        return log_error("guest build: unexpected argument '%s'", argv[i]), 2;
        }

        _cleanup_free_ char *tool = mkguest_path(ctx);
        if (!tool || access(tool, X_OK) < 0)
                return log_error("The guest builder %s is missing or not executable", tool ? tool : "mkguest"), 1;

        /* The builder converts its raw disk with this very program. */
        char self[PATH_MAX];
        ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
        if (n > 0) {
                self[n] = '\0';
                setenv("VMHOST", self, 1);
        }
        char *args[] = { tool, "--out", dir, force ? "--force" : NULL, NULL };
        execv(tool, args);
        return log_error_errno(negative_errno(), "Cannot run %s: %m", tool), 1;
}
