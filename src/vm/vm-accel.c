/* vm/vm-accel.c: accelerator choice. */
#include <errno.h>

#include "vm/vm-accel.h"

int vm_accel_resolve(enum vm_accel want, const char **ret, struct vh_error *err) {
        switch (want) {
        case VM_ACCEL_KVM:
                *ret = "kvm";
                return 0;
        case VM_ACCEL_TCG:
                *ret = "tcg";
                return 0;
        case VM_ACCEL_AUTO:
                /* Until the host probe is wired in, auto means the safe choice. */
                *ret = "tcg";
                return 0;
        }
        return vh_error_set(err, -EINVAL, "Unknown accelerator");
}
