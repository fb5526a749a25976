/* vm/vm-list.h: which VMs this vmhost home has, and what 'vm status' and
 * 'vm list' say about each: one directory scan and one description for
 * every caller (the CLI, the allocator, the base-dependency scan, a remote
 * host's reply, the web API). */
#pragma once

#include <stddef.h>

#include "vm/vm-def.h"
#include "vm/vm-image.h" /* vm_names_free() */
#include "vm/vm.h"
#include "vmhost/context.h"
#include "vmhost/error.h"

/* Upper bound on the VMs one scan returns: a state directory with more
 * entries is refused rather than read without end. */
#define VM_LIST_MAX 65536

/* The names of every VM of this home, sorted: each entry of STATE/vms that
 * is a valid VM name and holds a vm.conf, whether that definition parses
 * or not (callers that must not overlook a broken one, such as the
 * allocator, load each and decide). *ret is NULL-terminated; free it with
 * vm_names_free(). Returns the count. A missing STATE/vms is no VM. */
int vm_list_names(const struct vh_context *ctx, char ***ret, struct vh_error *err);
static inline void vm_names_freep(char ***p) { vm_names_free(*p); }

/* The definition and status of one VM, as 'vm status' and 'vm list'
 * show them: vm_load() and vm_get_status(), and for a VM that is stopped
 * the exit reason of a crash an earlier command noticed (kept until the
 * next start). */
int vm_describe(const struct vh_context *ctx, const char *name, struct vm_def **ret_def, struct vm_status *ret_status,
                struct vh_error *err);
