/* cli/cmd-guest.c: 'vmhost guest'. */
#include "base/log.h"
#include "cli/cli.h"

int cmd_guest(int argc, char **argv) {
        log_error("'vmhost guest' is not built yet.");
        return 1;
}
