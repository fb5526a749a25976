/* vm/vm-vnc.h: a VM's screen and keyboard, for its owner only.
 *
 * QEMU's VNC server always runs with password=on, so it lets nobody in
 * until vmhost gives it a password through QMP. The default display
 * (vnc = unix) is a unix socket in the VM's runtime directory (0600 in
 * 0700, like the QMP and serial sockets); a session (vmhost vm vnc) opens
 * a listener on 127.0.0.1 for one client, sets a one-time password, relays
 * that client to the socket and expires the password when it leaves. A TCP
 * display (vnc = HOST:DISPLAY) gets a new password at every start, kept in
 * the runtime directory (0600) for 'vmhost vm vnc' to show.
 *
 * VNC authentication is DES with at most 8 password characters: it keeps
 * other local users out of a session that lasts minutes, it is no defence
 * for a display open to a network for days. */
#pragma once

#include <stdint.h>

#include "vm/vm-def.h"
#include "vm/vm.h"
#include "vmhost/context.h"
#include "vmhost/error.h"

/* VNC authentication uses the first 8 characters of a password, no more. */
#define VM_VNC_PASSWORD_LEN 8

/* A random password of VM_VNC_PASSWORD_LEN letters and digits (none that
 * are easily confused: 0/O, 1/l/I). */
int vm_vnc_password_new(char ret[VM_VNC_PASSWORD_LEN + 1]);

/* Called by vm_start() once QMP answers. A TCP display: makes this start's
 * password, stores it in paths->vnc_password (0600) and gives it to QEMU.
 * Other displays: nothing to do (the unix socket stays locked until a
 * session sets a password). */
int vm_vnc_start(const struct vm_def *def, const struct vm_paths *paths, struct vh_error *err);

/* The password of the running VM's TCP display; owned by the caller. */
int vm_vnc_get_password(const struct vh_context *ctx, const char *name, char **ret, struct vh_error *err);

struct vm_vnc_session;

/* Opens a session on a running VM with vnc = unix: a TCP listener on
 * 127.0.0.1 (a free port the kernel picks) and a new one-time password,
 * which QEMU requires from now on. */
int vm_vnc_session_open(const struct vh_context *ctx, const char *name, struct vm_vnc_session **ret,
                        struct vh_error *err);
uint16_t vm_vnc_session_port(const struct vm_vnc_session *s);
const char *vm_vnc_session_password(const struct vm_vnc_session *s);

/* Waits up to 'accept_timeout_ms' (-1: no limit) for one client, then
 * closes the listener (one client per session) and relays between it and
 * QEMU's VNC socket until either side closes. 'cancel_fd' (-1: none)
 * becoming readable ends the wait or the relay: -ECANCELED. Returns 0
 * once a client came and left, -ETIMEDOUT if none came. */
int vm_vnc_session_run(struct vm_vnc_session *s, int accept_timeout_ms, int cancel_fd, struct vh_error *err);

/* Expires the session's password in QEMU at once, so it opens nothing
 * more; the client already connected stays. Idempotent. */
int vm_vnc_session_end(struct vm_vnc_session *s, struct vh_error *err);

/* Ends the session if that was not done (errors dropped), closes, frees;
 * accepts NULL, returns NULL. */
struct vm_vnc_session *vm_vnc_session_free(struct vm_vnc_session *s);
DEFINE_FREE_FUNC(struct vm_vnc_session, vm_vnc_session_free);
