/* vm/vm-accel.c: accelerator choice. KVM is used only where the host probe
 * saw it run guest code at full speed; the probe's answer is cached for the
 * boot, so a start does not pay for it twice. */
#include <errno.h>

#include "vm/vm-accel.h"
#include "vmhost/doctor.h"

int vm_accel_resolve(enum vm_accel want, const char **ret, struct vh_error *err) {
        if (want == VM_ACCEL_TCG) {
                *ret = "tcg";
                return 0;
        }

        struct host_kvm_probe_result probe;
        bool cached;
        int r = host_kvm_probe_cached(&probe, &cached, err);
        if (r < 0)
                return r;
        bool kvm = probe.status == HOST_KVM_USABLE;

        if (want == VM_ACCEL_KVM && !kvm)
                return vh_error_set(err, -ENODEV, "KVM was asked for but is not usable here: %s (see 'vmhost doctor')",
                                    probe.reason);
        *ret = kvm ? "kvm" : "tcg";
        return 0;
}
