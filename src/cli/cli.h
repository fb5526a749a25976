/* cli/cli.h: the verb groups of the vmhost program, one cmd-*.c each.
 * Each takes the program's context (filled once by main() from the
 * environment) and the arguments after its verb (argv[0] is the verb), and
 * returns the process exit status. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "vmhost/context.h"

int cmd_doctor(const struct vh_context *ctx, int argc, char **argv);
int cmd_img(const struct vh_context *ctx, int argc, char **argv);
int cmd_vm(const struct vh_context *ctx, int argc, char **argv);
int cmd_guest(const struct vh_context *ctx, int argc, char **argv);
int cmd_net(const struct vh_context *ctx, int argc, char **argv);
int cmd_host(const struct vh_context *ctx, int argc, char **argv);
int cmd_web(const struct vh_context *ctx, int argc, char **argv);

/* True if argv has -h or --help before any "--". */
bool cli_wants_help(int argc, char **argv);

/* The start of every verb group's dispatch: argv[1] must be one of its
 * 'commands' (or -h/--help): an unknown one is an error even with --help,
 * since help for a command that does not exist would say it does. With
 * --help anywhere, prints the group's or the command's usage. Returns -1
 * when the command is to run, else the exit status. */
int cli_group_start(int argc, char **argv, const char *group, const char *const commands[], size_t n_commands,
                    void (*group_usage)(FILE *), void (*command_usage)(const char *));
