/* cli/cli.h: the verb groups of the vmhost program, one cmd-*.c each.
 * Each takes the program's context (filled once by main() from the
 * environment) and the arguments after its verb (argv[0] is the verb), and
 * returns the process exit status. */
#pragma once

#include <stdbool.h>

#include "vmhost/context.h"

int cmd_doctor(const struct vh_context *ctx, int argc, char **argv);
int cmd_img(const struct vh_context *ctx, int argc, char **argv);
int cmd_vm(const struct vh_context *ctx, int argc, char **argv);
int cmd_guest(const struct vh_context *ctx, int argc, char **argv);
int cmd_net(const struct vh_context *ctx, int argc, char **argv);
int cmd_host(const struct vh_context *ctx, int argc, char **argv);

/* True if argv has -h or --help before any "--". */
bool cli_wants_help(int argc, char **argv);
