/* net/tap.c: persistent tap devices through /dev/net/tun. Removal goes
 * through netlink (RTM_DELLINK), which also works while QEMU still holds
 * the tap open, e.g. when cleaning up after it crashed mid-shutdown. */
#include <errno.h>
#include <fcntl.h>
#include <linux/if_tun.h>
#include <net/if.h>
#include <string.h>
#include <sys/ioctl.h>

#include "base/macro.h"
#include "net/net-addr.h"
#include "net/tap.h"

int net_tap_create(const char *name) {
        if (!net_ifname_is_valid(name))
                return -EINVAL;
        if (if_nametoindex(name) > 0)
                return -EEXIST;
        _cleanup_close_ int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);
        if (fd < 0)
                return negative_errno();
        struct ifreq ifr = {};
        ifr.ifr_flags = IFF_TAP | IFF_NO_PI;
        strncpy(ifr.ifr_name, name, IFNAMSIZ - 1);
        if (ioctl(fd, TUNSETIFF, &ifr) < 0)
                return negative_errno();
        /* Persistent: the tap outlives this fd and waits for QEMU. */
        if (ioctl(fd, TUNSETPERSIST, 1) < 0)
                return negative_errno();
        return 0;
}
