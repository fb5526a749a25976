/* vm/vm-json.h: the JSON documents that describe VMs: what 'vm status
 * --json' and 'vm list --json' print, what a remote host replies and what
 * the web API serves, so that all are one format. docs/json.md describes
 * every field. */
#pragma once

#include <stddef.h>

#include "base/json-writer.h"
#include "vm/vm-addr.h"
#include "vm/vm-def.h"
#include "vm/vm.h"

/* The shape version of the VM status object. It stays as long as changes
 * only add fields; removing or renaming one, or changing its type or
 * meaning, takes the next number (docs/json.md). */
#define VM_JSON_VERSION 1

/* Writes the status object of one VM: its definition 'def', its status 'st'
 * (as vm_describe() gives them) and the guest's addresses (vm_addresses(),
 * 'n_addrs' of them; none for a VM that does not run). 'vnc_socket' is the
 * VM's vnc socket path (struct vm_paths), used for vnc = unix. */
void vm_status_to_json(struct json_writer *w, const struct vm_def *def, const struct vm_status *st,
                       const struct vm_address *addrs, size_t n_addrs, const char *vnc_socket);
