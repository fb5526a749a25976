/* vm/vm-cmdline.h: turns a VM definition into QEMU's argv. A pure function
 * of its inputs (no files touched, nothing probed) so its output can be
 * compared with golden command lines in tests. */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "base/strv.h"
#include "vm/vm-def.h"
#include "vmhost/image.h"

/* The CD-ROM drive every VM has (empty unless 'cdrom' is set), so an ISO
 * can be inserted while it runs: QMP addresses it by this device id. */
#define VM_CDROM_DEVICE_ID "cd0"

/* Longest chain of files under one disk: the VM's own disk and the
 * backing files the image engine follows. */
#define VM_MAX_DISK_LAYERS (VH_IMAGE_MAX_CHAIN_DEPTH + 1)

/* A file vmhost opened for QEMU. QEMU inherits the descriptors as one fd
 * set (-add-fd) and opens "/dev/fdset/N" instead of the path, so the rights
 * of whoever runs vmhost decide, not those of QEMU's unprivileged user, and
 * that holds for every later reopen as well (a reopen that changes a node
 * from read-write to read-only or back, e.g. when migration hands the disks
 * over). QEMU picks from the set the descriptor whose access mode matches
 * the open it would have done; a mode the set lacks fails with EACCES, so
 * what is left out here is what QEMU can never do with the file.
 * Descriptors 0-2 are QEMU's stdio and never a passed file: 0 means none,
 * so a zeroed struct passes nothing. */
struct vm_launch_file {
        int fd_read;  /* opened O_RDONLY */
        int fd_write; /* opened O_RDWR */
};

/* One file of a disk's chain. */
struct vm_launch_layer {
        struct vm_launch_file file;
        const char *driver; /* QEMU's protocol driver: "file", or "host_device" for a block device */
        const char *format; /* "qcow2" or "raw" */
};

/* The files QEMU gets as descriptors. */
struct vm_launch_files {
        /* The files of the disk, the VM's own first, then its backing
         * files in chain order; every one is a -blockdev node with its
         * backing named explicitly, so that QEMU opens no backing file by
         * the path in an image header. Required when the VM has a disk. */
        struct vm_launch_layer disk_layers[VM_MAX_DISK_LAYERS];
        unsigned n_disk_layers;
        /* Required when the VM has a CD, a kernel, an initrd. */
        struct vm_launch_file cdrom, kernel, initrd;
};

/* What is decided at start time, not stored in the definition. */
struct vm_launch {
        const char *qemu_binary;   /* e.g. "qemu-system-x86_64" */
        const char *accel;         /* "kvm" or "tcg": already resolved */
        const char *qmp_socket;
        const char *qmp_watch_socket; /* a second QMP monitor for a watcher; NULL: none */
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
        struct vm_launch_files files;
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
