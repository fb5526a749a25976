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

int vm_qemu_user(const char **ret_user, uid_t *ret_uid, gid_t *ret_gid, struct vh_error *err) {
        if (geteuid() != 0) {
                *ret_user = NULL;
                return 0;
        }
        const char *user = getenv("VMHOST_QEMU_USER");
        if (isempty(user))
                user = VM_QEMU_USER;
        if (streq(user, "root")) {
                *ret_user = NULL;
                return 0;
        }
        if (!name_is_valid(user))
                return vh_error_set(err, -EINVAL, "VMHOST_QEMU_USER '%s' is not a valid user name", user);

        struct passwd *pw = getpwnam(user);
        if (!pw && streq(user, VM_QEMU_USER)) {
                char *argv[] = { "useradd", "--system", "--user-group", "--no-create-home", "--home-dir", "/nonexistent",
                                 "--shell", "/usr/sbin/nologin", "--comment", "vmhost QEMU processes",
                                 (char *) VM_QEMU_USER, NULL };
                _cleanup_free_ char *out = NULL;
                int r = process_run(argv, 4096, &out);
                /* A parallel vmhost may have made it first (exit 9: exists). */
                if (r != 0 && r != 9)
                        return vh_error_set(err, r < 0 ? r : -EIO, "Cannot create the user %s for QEMU: %s", user,
                                            out && *out ? strstrip(out) : "useradd failed");
                pw = getpwnam(user);
        }
        if (!pw)
                return vh_error_set(err, -ENOENT, "User %s, which QEMU should run as, does not exist", user);
        *ret_user = user;
        if (ret_uid)
                *ret_uid = pw->pw_uid;
        if (ret_gid)
                *ret_gid = pw->pw_gid;
        return 0;
}
