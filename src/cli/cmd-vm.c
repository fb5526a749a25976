/* cli/cmd-vm.c: 'vmhost vm'. */
#include "base/log.h"
#include "cli/cli.h"

int cmd_vm(int argc, char **argv) {
        log_error("'vmhost vm' is not built yet.");
        return 1;
}
