/* base/paths.h: where vmhost keeps things: the state directory
 * (definitions, images, the guest cache) and the runtime directory
 * (sockets, pid files, locks) of a context; vh_context_from_env() says
 * how a program's are chosen. Two homes never share a file, so
 * independent homes cannot see each other. */
#pragma once

#include "vmhost/context.h"

/* Both return a new string, or NULL when out of memory. */
char *vh_state_dir(const struct vh_context *ctx);
char *vh_runtime_dir(const struct vh_context *ctx);

/* STATE/sub or RUN/sub, created (mode 0700 for new directories). */
int vh_state_subdir(const struct vh_context *ctx, const char *sub, char **ret_path);
int vh_runtime_subdir(const struct vh_context *ctx, const char *sub, char **ret_path);
