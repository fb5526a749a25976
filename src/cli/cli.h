/* cli/cli.h: the verb groups of the vmhost program, one cmd-*.c each.
 * Each takes the arguments after its verb (argv[0] is the verb) and returns
 * the process exit status. */
#pragma once

#include <stdbool.h>

int cmd_doctor(int argc, char **argv);
int cmd_img(int argc, char **argv);
int cmd_vm(int argc, char **argv);
int cmd_guest(int argc, char **argv);
int cmd_net(int argc, char **argv);

/* True if argv has -h or --help before any "--". */
bool cli_wants_help(int argc, char **argv);
