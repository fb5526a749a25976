/* tools/fuzz/fuzz-probe.c: libFuzzer target for the parsers of what other
 * programs print (src/probe/probe-parse.c): version lines, /proc/cpuinfo,
 * modprobe's configuration, kernel config, and QEMU's '-machine help',
 * whose answer becomes part of a VM's definition. Besides memory safety it
 * checks the promises: a machine type found is a valid machine type name,
 * bounded; a version's text is bounded. Also /proc/PID/stat and /proc/stat
 * as vm_process_start_parse() reads them (src/vm/vm.c): a start found is
 * not before the boot. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "probe/probe-parse.h"
#include "vm/vm.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > 256 * 1024)
                return 0;
        char *text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = '\0';

        char machine[PROBE_MACHINE_NAME_MAX + 1];
        memset(machine, 'x', sizeof(machine));
        int r = probe_machine_alias(text, "pc", machine, sizeof(machine));
        if (r == 0 && (!probe_machine_name_is_valid(machine) || strlen(machine) > PROBE_MACHINE_NAME_MAX))
                abort();
        char tiny[4];
        if (probe_machine_alias(text, "pc", tiny, sizeof(tiny)) == 0 && strlen(tiny) >= sizeof(tiny))
                abort();

        struct probe_version v;
        if (probe_parse_version(text, &v) == 0 && strlen(v.text) >= sizeof(v.text))
                abort();
        struct probe_cpu_info cpu;
        (void) probe_parse_cpuinfo(text, &cpu);
        char value[64];
        (void) probe_modprobe_find_option(text, "kvm_intel", "nested", value, sizeof(value));
        (void) probe_kconfig_lookup(text, "CONFIG_KVM");
        (void) probe_accel_help_has(text, "kvm");
        int64_t started;
        if (vm_process_start_parse(text, "btime 1000\n", 100, &started) == 0 && started < 1000)
                abort();
        (void) vm_process_start_parse("1 (q) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 500 1\n", text, 100,
                                      &started);
        free(text);
        return 0;
}
