/* vm/vm-def.h: a VM definition: what the user asked for, stored as one
 * readable "key = value" file per VM (vms/NAME/vm.conf under the state
 * directory), documented in docs/vm-definition.md and validated on load
 * with line-numbered errors. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/macro.h"
#include "base/strutil.h"
#include "vmhost/error.h"

#define VM_MAX_FORWARDS 16
#define VM_MAX_NICS 8
/* VNC display numbers vmhost hands out: ports 5901..5999. */
#define VM_VNC_DISPLAY_MIN 1
#define VM_VNC_DISPLAY_MAX 99
/* The network name that means QEMU's user-mode NAT (no vmhost network). */
#define VM_NET_USER "user"
#define VM_CONF_MAX_BYTES (64 * 1024)
#define VM_CONF_MAX_LINE 4096

enum vm_boot { VM_BOOT_DISK, VM_BOOT_CDROM, VM_BOOT_KERNEL };
enum vm_accel { VM_ACCEL_AUTO, VM_ACCEL_KVM, VM_ACCEL_TCG };
enum vm_fwd_proto { VM_FWD_TCP, VM_FWD_UDP };

enum vm_nic_model { VM_NIC_VIRTIO, VM_NIC_E1000 };

/* Where QEMU's VNC server listens. VM_VNC_NONE is 0 so that 'if (def->vnc)'
 * asks "has a display". */
enum vm_vnc {
        VM_VNC_NONE,
        VM_VNC_UNIX,  /* "unix": a socket in the VM's runtime directory (0600 in 0700) */
        VM_VNC_TCP,   /* "HOST:DISPLAY": TCP port 5900 + display, always with a password */
};

/* One NIC: "NETWORK[,mac=MAC][,vlan=N][,model=virtio|e1000][,ip=ADDR]". */
struct vm_nic {
        char *network;           /* VM_NET_USER or a vmhost network's name */
        char mac[18];            /* "" until allocated */
        int vlan;                /* 1..4094, or -1 for untagged */
        enum vm_nic_model model;
        char *ip;                /* an address reserved on a managed network, or NULL */
};

/* A user-mode network forward: host port (0 = allocate at start) to guest port. */
struct vm_forward {
        enum vm_fwd_proto proto;
        uint16_t host_port;
        uint16_t guest_port;
};

struct vm_def {
        char *name;
        unsigned cpus;
        uint64_t memory;     /* bytes */
        char *disk;          /* path of the VM's disk image */
        char *disk_format;   /* "qcow2" or "raw" */
        char *base;          /* the shared base the disk overlays, if any */
        char *cdrom;
        enum vm_boot boot;
        char *kernel, *initrd, *append;
        enum vm_accel accel;
        char *cpu_model;     /* NULL: QEMU's default for the accelerator */
        char *machine;       /* versioned QEMU machine type; NULL: not pinned yet ("pc") */
        unsigned id;         /* 1..65535, unique in this vmhost home; 0: none yet */
        struct vm_nic nics[VM_MAX_NICS];
        unsigned n_nics;
        enum vm_vnc vnc;
        char *vnc_host;      /* VM_VNC_TCP: the address QEMU listens on */
        unsigned vnc_display; /* VM_VNC_TCP: port 5900 + display */
        struct vm_forward forwards[VM_MAX_FORWARDS];
        unsigned n_forwards;
        bool localtime;
};

struct vm_def *vm_def_new(const char *name);
struct vm_def *vm_def_free(struct vm_def *def);
static inline void vm_def_freep(struct vm_def **p) { vm_def_free(*p); }

/* A unicast MAC written as six colon-separated hex pairs. */
bool vm_mac_is_valid(const char *s);
/* Parses a NIC spec (see struct vm_nic); mac=auto leaves mac empty. */
int vm_nic_parse(const char *s, struct vm_nic *ret, struct vh_error *err);
char *vm_nic_format(const struct vm_nic *nic);
void vm_nic_done(struct vm_nic *nic);
/* The first user-mode NIC, or NULL. */
const struct vm_nic *vm_def_user_nic(const struct vm_def *def);

/* Whether a TCP display's host is a loopback address (127.0.0.0/8, ::1,
 * localhost): anything else is reachable from the network. */
bool vm_vnc_host_is_loopback(const char *host);

/* Parses "tcp:HOST:GUEST" or "tcp:auto:GUEST" (udp likewise). */
int vm_forward_parse(const char *s, struct vm_forward *ret, struct vh_error *err);
/* "tcp:auto:7777" or "tcp:2222:22" */
const char *vm_forward_format(const struct vm_forward *f, char *buf, size_t len);

const char *vm_boot_to_string(enum vm_boot b);
int vm_boot_from_string(const char *s, enum vm_boot *ret);
const char *vm_accel_to_string(enum vm_accel a);
int vm_accel_from_string(const char *s, enum vm_accel *ret);

/* Parses a definition from text; 'origin' names it in errors
 * ("vm.conf:12: unknown key 'cpuz'"). */
int vm_def_parse(const char *text, const char *origin, struct vm_def **ret, struct vh_error *err);
/* Sets one key as the definition file would ("cpus", "2"); the error
 * says what is wrong with the value. Whole-definition checks are left to
 * vm_def_validate(). */
int vm_def_set(struct vm_def *def, const char *key, const char *value, struct vh_error *err);
/* The schema of vm.conf (base/defs.h): the keys vm_def_set() accepts, their
 * flags (DEF_IMMUTABLE: 'name' and 'id'; DEF_ALLOCATED: what allocation
 * hands out). */
struct def_schema;
const struct def_schema *vm_def_schema(void);
/* Reads what it can of a definition that may be broken, for the allocator
 * and the scans that must not skip a VM whose file has a typo: a line whose
 * value is refused is skipped, and 'ret' holds the rest. Returns the number
 * of problems (0: the definition is valid) with the first in 'err', or
 * -errno where even that fails: a line the reader cannot split, or a refused
 * line of an allocated key (id, nic, vnc, forward), whose value is then
 * unknown. */
int vm_def_parse_lenient(const char *text, const char *origin, struct vm_def **ret, struct vh_error *err);
/* Formats a definition as the text vm_def_parse() reads back. */
char *vm_def_format(const struct vm_def *def);
/* The disk format a VM records: 'probed' (what the image engine read from
 * the file's first bytes, "raw" when no known header is there) unless
 * 'explicit' is given. An explicit format the probe contradicts is an
 * error naming both, so that a wrong format fails at create or set, not
 * when QEMU opens the disk at start. Sets *ret to a static string. */
int vm_disk_format_choose(const char *disk, const char *probed, const char *explicit_format, const char **ret,
                          struct vh_error *err);
/* Checks a definition as a whole (required keys, consistent boot). */
int vm_def_validate(const struct vm_def *def, struct vh_error *err);
