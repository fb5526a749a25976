/* vm/vm-user.c: QEMU's unprivileged user. Like libvirt's libvirt-qemu: a
 * system user with no home and no shell, made once. */
#include <errno.h>
#include <pwd.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/macro.h"
#include "base/process.h"
#include "base/strutil.h"
#include "vm/vm-user.h"

/* useradd writes /etc/passwd and /etc/group under their locks: seconds at
 * most, unless another tool holds those locks. */
#define USERADD_TIMEOUT_MS (30 * 1000u)
/* getpwnam_r's buffer: sysconf's hint first, doubled on ERANGE up to this
 * (an entry is a few hundred bytes; NSS modules may need more). */
#define PASSWD_BUFFER_MAX (1024u * 1024)

/* Looks 'user' up with the reentrant getpwnam_r, which is safe in a
 * process with threads (getpwnam's static result is not). Returns 1 and
 * fills the ids, 0 if there is no such user, or -errno. */
static int lookup_user(const char *user, uid_t *ret_uid, gid_t *ret_gid) {
        long hint = sysconf(_SC_GETPW_R_SIZE_MAX);
        size_t size = hint > 0 && hint <= (long) PASSWD_BUFFER_MAX ? (size_t) hint : 4096;
        for (;;) {
                _cleanup_free_ char *buf = malloc(size);
                if (!buf)
                        return -ENOMEM;
                struct passwd pw, *found = NULL;
                int e = getpwnam_r(user, &pw, buf, size, &found);
                /* glibc says "no such user" with 0 and no entry; some NSS
                 * modules say it with ENOENT. */
                if (e == 0 || e == ENOENT) {
                        if (!found)
                                return 0;
                        *ret_uid = pw.pw_uid;
                        *ret_gid = pw.pw_gid;
                        return 1;
                }
                if (e == EINTR)
                        continue;
                if (e != ERANGE)
                        return -e;
                if (size >= PASSWD_BUFFER_MAX)
                        return -ERANGE;
                size = MIN(size * 2, (size_t) PASSWD_BUFFER_MAX);
        }
}

int vm_qemu_user(const struct vh_context *ctx, const char **ret_user, uid_t *ret_uid, gid_t *ret_gid,
                 struct vh_error *err) {
        const char *user = ctx->qemu_user;
        if (!ctx->is_root || isempty(user) || streq(user, "root")) {
                *ret_user = NULL;
                return 0;
        }
        if (!name_is_valid(user))
                return vh_error_set(err, -EINVAL, "VMHOST_QEMU_USER '%s' is not a valid user name", user);

        uid_t uid = 0;
        gid_t gid = 0;
        int found = lookup_user(user, &uid, &gid);
        if (found == 0 && streq(user, VM_QEMU_USER)) {
                char *argv[] = { "useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                                 "--shell", "/usr/sbin/nologin", "--comment", "vmhost QEMU processes",
                                 (char *) VM_QEMU_USER, NULL };
                _cleanup_free_ char *out = NULL;
                struct vh_error perr = {};
                int r = process_run(ctx, argv, USERADD_TIMEOUT_MS, 4096, &out, &perr);
                /* A parallel vmhost may have made it first (exit 9: exists). */
                if (r != 0 && r != 9)
                        return vh_error_set(err, r < 0 ? r : -EIO, "Cannot create the user %s for QEMU: %s", user,
                                            r < 0 ? perr.msg : out && *out ? strstrip(out) : "useradd failed");
                found = lookup_user(user, &uid, &gid);
        }
        if (found < 0)
                return vh_error_set(err, found, "Cannot look up user %s, which QEMU should run as: %s", user,
                                    strerror(-found));
        if (found == 0)
                return vh_error_set(err, -ENOENT, "User %s, which QEMU should run as, does not exist", user);
        *ret_user = user;
        if (ret_uid)
                *ret_uid = uid;
        if (ret_gid)
                *ret_gid = gid;
        return 0;
}
