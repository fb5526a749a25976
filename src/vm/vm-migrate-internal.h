/* vm/vm-migrate-internal.h: what the files of a migration share
 * (vm-migrate.c drives it, vm-migrate-check.c holds the destination's
 * checks); not for other modules. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "base/macro.h"
#include "vm/vm-migrate.h"

/* Appends a check to 'res' (silently dropped past VM_MIGRATE_MAX_CHECKS). */
void vm_migrate_add_check(struct vm_migrate_result *res, const char *name, bool ok, const char *fmt, ...)
        _printf_(4, 5);

/* "model name : ..." of /proc/cpuinfo, the CPU a 'host' model exposes;
 * "unknown" when it cannot be read. */
void vm_migrate_cpu_model_name(char *buf, size_t len);
