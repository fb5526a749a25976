/* tools/fuzz/fuzz-vm-conf.c: libFuzzer target for the VM definition parser
 * (vm_def_parse() in src/vm/vm-def.c over the table-driven layer of
 * src/base/defs.c), which reads STATE/vms/NAME/vm.conf, a file users edit by
 * hand, and for its lenient reading that the allocator uses on broken
 * files. Besides memory safety it checks the parsers' promises:
 *  - strict: on failure no definition and a message; on success the
 *    definition is valid, and formatting it gives text that parses back to
 *    the same text (a fixed point);
 *  - lenient: never more than the text says. On failure no definition and
 *    a message; on success with no problem it agrees with the strict parse,
 *    and with problems the first one is named and the strict parse fails. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "vm/vm-def.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *format_or_die(const struct vm_def *def) {
        char *s = vm_def_format(def);
        if (!s)
                abort();
        return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
        if (size > VM_CONF_MAX_BYTES + 16)
                return 0;
        char *text = malloc(size + 1);
        if (!text)
                return 0;
        memcpy(text, data, size);
        text[size] = '\0';

        struct vm_def *def = NULL;
        struct vh_error e = {};
        int r = vm_def_parse(text, "fuzz.conf", &def, &e);
        if (r < 0 && (def || e.code != r || e.msg[0] == '\0'))
                abort();
        char *once = NULL;
        if (r == 0) {
                if (vm_def_validate(def, &e) < 0)
                        abort();
                once = format_or_die(def);
                struct vm_def *again = NULL;
                if (vm_def_parse(once, "fuzz.conf", &again, &e) < 0)
                        abort();
                char *twice = format_or_die(again);
                if (strcmp(once, twice) != 0)
                        abort();
                free(twice);
                vm_def_free(again);
                /* The small helpers a definition offers must hold on it too. */
                (void) vm_def_user_nic(def);
                if (def->vnc == VM_VNC_TCP)
                        (void) vm_vnc_host_is_loopback(def->vnc_host);
        }

        struct vm_def *lenient = NULL;
        struct vh_error le = {};
        int lr = vm_def_parse_lenient(text, "fuzz.conf", &lenient, &le);
        if (lr < 0) {
                if (lenient || le.msg[0] == '\0' || r == 0)
                        abort();
        } else {
                if (!lenient)
                        abort();
                if (lr == 0) {
                        /* Nothing was skipped: the same definition as strict. */
                        char *l = format_or_die(lenient);
                        if (r != 0 || strcmp(l, once) != 0)
                                abort();
                        free(l);
                } else if (r == 0 || le.msg[0] == '\0') {
                        abort();
                }
                /* What the lenient read holds can be written out. */
                free(format_or_die(lenient));
                vm_def_free(lenient);
        }
        free(once);
        vm_def_free(def);
        free(text);
        return 0;
}
