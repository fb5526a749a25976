/* vm/vm-user.h: the unprivileged user QEMU runs as when vmhost is root. */
#pragma once

#include <sys/types.h>

#include "vmhost/context.h"
#include "vmhost/error.h"

#define VM_QEMU_USER "vmhost-qemu"

/* When vmhost runs as root (ctx->is_root): the user QEMU drops to,
 * ctx->qemu_user (created as a system user on first use when it is
 * VM_QEMU_USER; NULL or "root" keeps QEMU privileged). Otherwise QEMU
 * already runs unprivileged: *ret_user NULL. */
int vm_qemu_user(const struct vh_context *ctx, const char **ret_user, uid_t *ret_uid, gid_t *ret_gid,
                 struct vh_error *err);
