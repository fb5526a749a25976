/* cli/cmd-img.c: 'vmhost img'. */
#include "base/log.h"
#include "cli/cli.h"

int cmd_img(int argc, char **argv) {
        log_error("'vmhost img' is not built yet.");
        return 1;
}
