/* vm/vm-accel.c: accelerator choice. KVM is used only where the host probe
 * saw it run guest code at full speed; the probe's answer is cached for the
 * boot, so a start does not pay for it twice. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "base/macro.h"
#include "base/process.h"
#include "base/strutil.h"
#include "probe/probe-parse.h"
#include "vm/vm-accel.h"
#include "vmhost/doctor.h"

/* 'qemu-system-x86_64 -machine help' lists some 40 types in 3 KiB. */
#define MACHINE_HELP_MAX_OUTPUT (64 * 1024)
#define MACHINE_HELP_TIMEOUT_MS 10000

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

int vm_machine_resolve(const struct vh_context *ctx, const char *qemu_binary, char **ret, struct vh_error *err) {
        _cleanup_free_ char *exe = find_executable(ctx, qemu_binary);
        if (!exe)
                return vh_error_set(err, -ENOENT, "%s not found; install qemu-system-x86 (see 'vmhost doctor')",
                                    qemu_binary);
        char *argv[] = { exe, (char *) "-machine", (char *) "help", NULL };
        _cleanup_free_ char *out = NULL;
        int r = process_run(ctx, argv, MACHINE_HELP_TIMEOUT_MS, MACHINE_HELP_MAX_OUTPUT, &out, err);
        if (r < 0)
                return r;
        if (r != 0)
                return vh_error_set(err, -EIO, "%s -machine help failed (exit %d)", exe, r);
        char name[PROBE_MACHINE_NAME_MAX + 1];
        r = probe_machine_alias(out, VM_MACHINE_ALIAS, name, sizeof(name));
        if (r < 0)
                return vh_error_set(err, r, "%s -machine help names no versioned type for '%s'", exe,
                                    VM_MACHINE_ALIAS);
        *ret = strdup(name);
        return *ret ? 0 : -ENOMEM;
}

int vm_machine_pin(const struct vh_context *ctx, struct vm_def *def, bool *ret_pinned) {
        if (ret_pinned)
                *ret_pinned = false;
        if (def->machine)
                return 0;
        struct vh_error ignored = {};
        int r = vm_machine_resolve(ctx, VM_QEMU_BINARY, &def->machine, &ignored);
        if (r == -ENOMEM)
                return r;
        if (r >= 0 && ret_pinned)
                *ret_pinned = true;
        return 0;
}
