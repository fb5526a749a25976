/* cli/cmd-doctor.c: 'vmhost doctor'. */
#include "base/log.h"
#include "cli/cli.h"

int cmd_doctor(int argc, char **argv) {
        log_error("'vmhost doctor' is not built yet.");
        return 1;
}
