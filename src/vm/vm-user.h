/* vm/vm-user.h: the unprivileged user QEMU runs as when vmhost is root. */
#pragma once

#include <sys/types.h>

#include "vmhost/error.h"

#define VM_QEMU_USER "vmhost-qemu"

/* When vmhost runs as root: the user QEMU drops to (created as a system
 * user on first use; $VMHOST_QEMU_USER overrides, "root" keeps QEMU
 * privileged). Otherwise QEMU already runs unprivileged: *ret_user NULL. */
int vm_qemu_user(const char **ret_user, uid_t *ret_uid, gid_t *ret_gid, struct vh_error *err);
