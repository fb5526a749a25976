/* vm/vm-cmdline.h: turns a VM definition into QEMU's argv. A pure function
 * of its inputs (no files touched, nothing probed) so its output can be
 * compared with golden command lines in tests. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "base/strv.h"
#include "vm/vm-def.h"

/* The CD-ROM drive every VM has (empty unless 'cdrom' is set), so an ISO
 * can be inserted while it runs: QMP addresses it by this device id. */
#define VM_CDROM_DEVICE_ID "cd0"

/* What is decided at start time, not stored in the definition. */
struct vm_launch {
        const char *qemu_binary;   /* e.g. "qemu-system-x86_64" */
        const char *accel;         /* "kvm" or "tcg": already resolved */
        const char *qmp_socket;
        const char *serial_socket;
        const char *serial_log;
        const char *vnc_socket;    /* for vnc = unix */
        const char *pidfile;
        /* Per NIC on a vmhost network: the tap the network attached. */
        struct vm_launch_nic {
                const char *tap;
                const char *user_subnet; /* a vmhost network of type user: -netdev user,net=THIS */
                bool disable_offload;  /* OVS userspace datapath: no checksum offload */
        } nics[VM_MAX_NICS];
        uint16_t host_ports[VM_MAX_FORWARDS]; /* resolved host port per forward */
        bool daemonize;
        /* Drop to this user once QEMU has opened its disks, sockets and
         * devices (-runas); NULL: stay as the caller. */
        const char *run_as;
};

/* Appends QEMU's arguments (argv[0] included) to 'ret_argv'. */
int vm_cmdline_build(const struct vm_def *def, const struct vm_launch *launch, struct strv *ret_argv,
                     struct vh_error *err);

/* QEMU option values separate with ','; a literal ',' is written ',,'. */
char *qemu_opt_escape(const char *value);
