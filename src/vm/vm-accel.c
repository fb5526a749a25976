/* vm/vm-accel.c: accelerator choice. KVM is used only where the host probe
 * saw it run guest code at full speed; the probe's answer is cached for the
 * boot, so a start does not pay for it twice. */
#include <errno.h>
#include <string.h>

#include "vm/vm-accel.h"
#include "vmhost/doctor.h"

int vm_accel_resolve(const struct vh_context *ctx, enum vm_accel want, const char **ret, struct vh_error *err) {
        if (want == VM_ACCEL_TCG) {
                *ret = "tcg";
                return 0;
        }

        struct probe_kvm_result probe;
        bool cached;
        int r = probe_kvm_cached(ctx, &probe, &cached, err);
        if (r < 0)
                return r;
        bool kvm = probe.status == PROBE_KVM_USABLE;

        if (want == VM_ACCEL_KVM && !kvm)
                return vh_error_set(err, -ENODEV, "KVM was asked for but is not usable here: %s (see 'vmhost doctor')",
                                    probe.reason);
        *ret = kvm ? "kvm" : "tcg";
        return 0;
}

int vm_accel_check_cpu(const char *vm_name, const char *cpu_model, const char *accel, struct vh_error *err) {
        if (!cpu_model || strcmp(cpu_model, "host") != 0 || strcmp(accel, "kvm") == 0)
                return 0;
        return vh_error_set(err, -EINVAL,
                            "VM %s: CPU model 'host' needs KVM, but the accelerator is %s (see 'vmhost doctor'); "
                            "use --cpu max (or 'vmhost vm set %s cpu=max'), the emulator's model with every feature "
                            "it implements",
                            vm_name, strcmp(accel, "tcg") == 0 ? "TCG" : accel, vm_name);
}

int vm_accel_check_def(const struct vh_context *ctx, const struct vm_def *def, struct vh_error *err) {
        if (!def->cpu_model)
                return 0;
        const char *accel;
        int r = vm_accel_resolve(ctx, def->accel, &accel, err);
        if (r < 0)
                return r;
        return vm_accel_check_cpu(def->name, def->cpu_model, accel, err);
}
