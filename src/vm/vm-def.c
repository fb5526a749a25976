/* vm/vm-def.c: VM definitions: parse, validate, format. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/defs.h"
#include "base/keyfile.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "probe/probe-parse.h"
#include "vm/vm-def.h"

struct vm_def *vm_def_new(const char *name) {
        struct vm_def *def = calloc(1, sizeof(*def));
        if (!def)
                return NULL;
        def->name = strdup(name);
        def->disk_format = strdup("qcow2");
        if (!def->name || !def->disk_format)
                return vm_def_free(def);
        def->cpus = 1;
        def->memory = 256ULL << 20;
        def->boot = VM_BOOT_DISK;
        def->accel = VM_ACCEL_AUTO;
        return def;
}

static const char *const boot_names[] = {
        [VM_BOOT_DISK] = "disk",
        [VM_BOOT_CDROM] = "cdrom",
        [VM_BOOT_KERNEL] = "kernel",
};
static const char *const accel_names[] = {
        [VM_ACCEL_AUTO] = "auto",
        [VM_ACCEL_KVM] = "kvm",
        [VM_ACCEL_TCG] = "tcg",
};

const char *vm_boot_to_string(enum vm_boot b) {
        return b < ELEMENTSOF(boot_names) ? boot_names[b] : NULL;
}

int vm_boot_from_string(const char *s, enum vm_boot *ret) {
        int i = keyfile_parse_choice(s, boot_names, ELEMENTSOF(boot_names));
        if (i < 0)
                return i;
        *ret = (enum vm_boot) i;
        return 0;
}

const char *vm_accel_to_string(enum vm_accel a) {
        return a < ELEMENTSOF(accel_names) ? accel_names[a] : NULL;
}

int vm_accel_from_string(const char *s, enum vm_accel *ret) {
        int i = keyfile_parse_choice(s, accel_names, ELEMENTSOF(accel_names));
        if (i < 0)
                return i;
        *ret = (enum vm_accel) i;
        return 0;
}

static int parse_port(const char *s, bool allow_auto, uint16_t *ret) {
        long v;
        if (allow_auto && streq(s, "auto")) {
                *ret = 0;
                return 0;
        }
        if (parse_int_range(s, 1, 65535, &v) < 0)
                return -EINVAL;
        *ret = (uint16_t) v;
        return 0;
}

int vm_forward_parse(const char *s, struct vm_forward *ret, struct vh_error *err) {
        char proto[8], host[16], guest[16];
        const char *a = strchr(s, ':');
        const char *b = a ? strchr(a + 1, ':') : NULL;
        if (!a || !b || strchr(b + 1, ':') || (size_t) (a - s) >= sizeof(proto) ||
            (size_t) (b - a - 1) >= sizeof(host) || strlen(b + 1) >= sizeof(guest))
                return vh_error_set(err, -EINVAL, "Invalid forward '%s': expected PROTO:HOSTPORT:GUESTPORT, e.g. tcp:auto:22 or tcp:2222:22", s);
        memcpy(proto, s, (size_t) (a - s));
        proto[a - s] = '\0';
        memcpy(host, a + 1, (size_t) (b - a - 1));
        host[b - a - 1] = '\0';
        strcpy(guest, b + 1);

        struct vm_forward f;
        if (streq(proto, "tcp"))
                f.proto = VM_FWD_TCP;
        else if (streq(proto, "udp"))
                f.proto = VM_FWD_UDP;
        else
                return vh_error_set(err, -EINVAL, "Invalid forward '%s': protocol must be tcp or udp", s);
        if (parse_port(host, true, &f.host_port) < 0)
                return vh_error_set(err, -EINVAL, "Invalid forward '%s': host port must be 1..65535 or 'auto'", s);
        if (parse_port(guest, false, &f.guest_port) < 0)
                return vh_error_set(err, -EINVAL, "Invalid forward '%s': guest port must be 1..65535", s);
        *ret = f;
        return 0;
}

const char *vm_forward_format(const struct vm_forward *f, char *buf, size_t len) {
        const char *proto = f->proto == VM_FWD_UDP ? "udp" : "tcp";
        if (f->host_port == 0)
                snprintf(buf, len, "%s:auto:%u", proto, f->guest_port);
        else
                snprintf(buf, len, "%s:%u:%u", proto, f->host_port, f->guest_port);
        return buf;
}

bool vm_mac_is_valid(const char *s) {
        unsigned v[6];
        char tail;
        if (strlen(s) != 17)
                return false;
        if (sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6)
                return false;
        for (int i = 0; i < 17; i++)
                if ((i % 3 == 2) ? s[i] != ':' : !isxdigit((unsigned char) s[i]))
                        return false;
        /* A unicast address: multicast bit clear. */
        return (v[0] & 1) == 0;
}

void vm_nic_done(struct vm_nic *nic) {
        free(nic->network);
        free(nic->ip);
        *nic = (struct vm_nic) { .vlan = -1 };
}

static bool ipv4_is_valid(const char *s) {
        unsigned a, b, c, d;
        char tail;
        return sscanf(s, "%3u.%3u.%3u.%3u%c", &a, &b, &c, &d, &tail) == 4 && a < 256 && b < 256 && c < 256 &&
               d < 256;
}

int vm_nic_parse(const char *s, struct vm_nic *ret, struct vh_error *err) {
        if (strlen(s) > 256)
                return vh_error_set(err, -EINVAL, "Invalid NIC '%.40s...': too long", s);
        _cleanup_free_ char *copy = strdup(s);
        if (!copy)
                return -ENOMEM;
        struct vm_nic nic = { .vlan = -1, .model = VM_NIC_VIRTIO };
        /* Owned here until the NIC is complete: every refusal frees it. */
        _cleanup_free_ char *ip = NULL;
        char *save = NULL;
        char *network = strtok_r(copy, ",", &save);
        if (!network || (!streq(network, VM_NET_USER) && !name_is_valid(network)))
                return vh_error_set(err, -EINVAL, "Invalid NIC '%s': expected NETWORK[,mac=MAC][,vlan=N][,model=virtio|e1000][,ip=ADDR] "
                                    "where NETWORK is 'user' or a network's name", s);
        for (char *opt = strtok_r(NULL, ",", &save); opt; opt = strtok_r(NULL, ",", &save)) {
                char *eq = strchr(opt, '=');
                if (!eq)
                        goto bad_opt;
                *eq = '\0';
                const char *k = opt, *v = eq + 1;
                long n;
                if (streq(k, "mac")) {
                        if (streq(v, "auto"))
                                nic.mac[0] = '\0';
                        else if (vm_mac_is_valid(v))
                                snprintf(nic.mac, sizeof(nic.mac), "%s", v);
                        else
                                return vh_error_set(err, -EINVAL, "Invalid NIC '%s': mac must be auto or a unicast address like 52:54:00:12:34:56", s);
                } else if (streq(k, "vlan")) {
                        if (parse_int_range(v, 1, 4094, &n) < 0)
                                return vh_error_set(err, -EINVAL, "Invalid NIC '%s': vlan must be 1..4094", s);
                        nic.vlan = (int) n;
                } else if (streq(k, "model")) {
                        if (streq(v, "virtio"))
                                nic.model = VM_NIC_VIRTIO;
                        else if (streq(v, "e1000"))
                                nic.model = VM_NIC_E1000;
                        else
                                return vh_error_set(err, -EINVAL, "Invalid NIC '%s': model must be virtio or e1000", s);
                } else if (streq(k, "ip")) {
                        if (!ipv4_is_valid(v))
                                return vh_error_set(err, -EINVAL, "Invalid NIC '%s': ip must be an IPv4 address", s);
                        free(ip);
                        ip = strdup(v);
                        if (!ip)
                                return -ENOMEM;
                } else {
                        *eq = '=';
                        goto bad_opt;
                }
                continue;
        bad_opt:
                return vh_error_set(err, -EINVAL, "Invalid NIC '%s': unknown option '%s' (mac, vlan, model, ip)", s, opt);
        }
        if (streq(network, VM_NET_USER) && (nic.vlan >= 0 || ip))
                return vh_error_set(err, -EINVAL, "Invalid NIC '%s': vlan and ip need a vmhost network, not user-mode NAT", s);
        nic.network = strdup(network);
        if (!nic.network)
                return -ENOMEM;
        nic.ip = TAKE_PTR(ip);
        *ret = nic;
        return 0;
}

char *vm_nic_format(const struct vm_nic *nic) {
        char vlan[32] = "";
        if (nic->vlan >= 0)
                snprintf(vlan, sizeof(vlan), ",vlan=%d", nic->vlan);
        return strdup_printf("%s%s%s%s%s%s%s", nic->network, nic->mac[0] ? ",mac=" : "", nic->mac, vlan,
                             nic->model == VM_NIC_E1000 ? ",model=e1000" : "", nic->ip ? ",ip=" : "",
                             nic->ip ? nic->ip : "");
}

const struct vm_nic *vm_def_user_nic(const struct vm_def *def) {
        for (unsigned i = 0; i < def->n_nics; i++)
                if (streq(def->nics[i].network, VM_NET_USER))
                        return &def->nics[i];
        return NULL;
}

/* The HOST of "vnc = HOST:DISPLAY" (the first 'len' bytes of 's'): a host
 * name or IPv4 address, or an IPv6 address in brackets, 1..63 bytes. */
static bool vnc_host_is_valid(const char *s, size_t len) {
        if (len == 0 || len > 63)
                return false;
        bool bracketed = s[0] == '[';
        if (bracketed && (len < 3 || s[len - 1] != ']'))
                return false;
        for (size_t i = bracketed ? 1 : 0; i < (bracketed ? len - 1 : len); i++) {
                unsigned char c = (unsigned char) s[i];
                bool ok = bracketed ? isxdigit(c) || c == ':' || c == '.' : isalnum(c) || c == '.' || c == '-';
                if (!ok)
                        return false;
        }
        return true;
}

bool vm_vnc_host_is_loopback(const char *host) {
        return (startswith(host, "127.") && ipv4_is_valid(host)) || streq(host, "localhost") || streq(host, "[::1]");
}

/* The keys whose values need more than a row of the table. */

static int set_name(void *obj, const char *value, struct vh_error *err) {
        struct vm_def *def = obj;
        if (!name_is_valid(value))
                return vh_error_set(err, -EINVAL, "invalid name '%s' (1-%d letters, digits, '-' or '_')", value,
                                    VH_NAME_MAX);
        return keyfile_set_string(&def->name, value);
}

static int set_memory(void *obj, const char *value, struct vh_error *err) {
        struct vm_def *def = obj;
        uint64_t v, mib;
        /* A bare number means MiB, as in qemu's -m; one past 1T in MiB
         * must not wrap around when shifted. */
        if (parse_u64(value, &mib) == 0)
                v = mib <= (1ULL << 20) ? mib << 20 : UINT64_MAX;
        else if (parse_size(value, &v) < 0)
                return vh_error_set(err, -EINVAL, "memory must be a size like 512M or 2G, not '%s'", value);
        if (v < (16ULL << 20) || v > (1ULL << 40))
                return vh_error_set(err, -EINVAL, "memory must be between 16M and 1T, not '%s'", value);
        def->memory = v;
        return 0;
}

static int format_memory(const void *obj, FILE *f) {
        const struct vm_def *def = obj;
        fprintf(f, "memory = %" PRIu64 "M\n", def->memory >> 20);
        return 0;
}

/* The format belongs to the disk: without one there is nothing to say. */
static int format_disk_format(const void *obj, FILE *f) {
        const struct vm_def *def = obj;
        if (def->disk && def->disk_format)
                fprintf(f, "disk-format = %s\n", def->disk_format);
        return 0;
}

static int set_vnc(void *obj, const char *value, struct vh_error *err) {
        struct vm_def *def = obj;
        if (streq(value, "none")) {
                def->vnc = VM_VNC_NONE;
                return 0;
        }
        if (streq(value, "unix")) {
                def->vnc = VM_VNC_UNIX;
                return 0;
        }
        /* HOST goes into QEMU's -vnc option as it is: only the characters
         * of a host name or an address, so no ',' can add an option
         * (",password=off") to it. */
        const char *colon = strrchr(value, ':');
        long d;
        if (!colon || !vnc_host_is_valid(value, (size_t) (colon - value)) || parse_int_range(colon + 1, 0, 99, &d) < 0)
                return vh_error_set(err, -EINVAL,
                                    "vnc must be unix, none or HOST:DISPLAY (display 0..99), e.g. 127.0.0.1:5, not '%s'",
                                    value);
        char *host = strndup(value, (size_t) (colon - value));
        if (!host)
                return -ENOMEM;
        free(def->vnc_host);
        def->vnc_host = host;
        def->vnc_display = (unsigned) d;
        def->vnc = VM_VNC_TCP;
        return 0;
}

static int format_vnc(const void *obj, FILE *f) {
        const struct vm_def *def = obj;
        if (def->vnc == VM_VNC_UNIX)
                fprintf(f, "vnc = unix\n");
        else if (def->vnc == VM_VNC_TCP)
                fprintf(f, "vnc = %s:%u\n", def->vnc_host, def->vnc_display);
        return 0;
}

static void done_vnc(void *obj) {
        struct vm_def *def = obj;
        def->vnc_host = mfree(def->vnc_host);
}

static int nic_parse(const char *value, void *elem, struct vh_error *err) {
        return vm_nic_parse(value, elem, err);
}

static char *nic_format(const void *elem) {
        return vm_nic_format(elem);
}

static void nic_done(void *elem) {
        vm_nic_done(elem);
}

static int forward_parse(const char *value, void *elem, struct vh_error *err) {
        return vm_forward_parse(value, elem, err);
}

static char *forward_format(const void *elem) {
        char b[64];
        return strdup(vm_forward_format(elem, b, sizeof(b)));
}

static const struct def_list nic_list = {
        .count_offset = offsetof(struct vm_def, n_nics),
        .elem_size = sizeof(struct vm_nic),
        .max = VM_MAX_NICS,
        .plural = "NICs",
        .parse = nic_parse,
        .format = nic_format,
        .done = nic_done,
};

static const struct def_list forward_list = {
        .count_offset = offsetof(struct vm_def, n_forwards),
        .elem_size = sizeof(struct vm_forward),
        .max = VM_MAX_FORWARDS,
        .plural = "forwards",
        .parse = forward_parse,
        .format = forward_format,
};

static const char *const disk_formats[] = { "qcow2", "raw" };

/* Choices are stored through an unsigned. */
_Static_assert(sizeof(enum vm_boot) == sizeof(unsigned) && sizeof(enum vm_accel) == sizeof(unsigned),
               "DEF_CHOICE fields are unsigned-sized");

#define F(field) offsetof(struct vm_def, field)

/* Every key vm.conf may hold, in the order vm_def_format() writes them: any
 * other is refused, and the unit tests compare this table with
 * docs/vm-definition.md (both ways). */
static const struct def_key vm_keys[] = {
        { "name", DEF_STRING, F(name), DEF_REQUIRED | DEF_IMMUTABLE, .missing = "missing key 'name'", .set = set_name },
        { "cpus", DEF_UINT, F(cpus), DEF_ALWAYS, .min = 1, .max = 256 },
        { "memory", DEF_CUSTOM, F(memory), .set = set_memory, .format = format_memory },
        { "accel", DEF_CHOICE, F(accel), DEF_ALWAYS, .choices = accel_names, .n_choices = ELEMENTSOF(accel_names) },
        { "cpu", DEF_STRING, F(cpu_model) },
        /* The versioned type ("pc-i440fx-7.2"), pinned at create or first
         * start, so that a QEMU upgrade cannot change the VM's hardware
         * and a migration asks the destination for the same machine. */
        { "machine", DEF_STRING, F(machine), .valid = probe_machine_name_is_valid,
          .expect = "a QEMU machine type like pc-i440fx-7.2" },
        { "boot", DEF_CHOICE, F(boot), DEF_ALWAYS, .choices = boot_names, .n_choices = ELEMENTSOF(boot_names) },
        { "disk", DEF_STRING, F(disk) },
        { "disk-format", DEF_STRING, F(disk_format), .choices = disk_formats, .n_choices = ELEMENTSOF(disk_formats),
          .format = format_disk_format },
        { "base", DEF_STRING, F(base) },
        { "cdrom", DEF_STRING, F(cdrom) },
        { "kernel", DEF_STRING, F(kernel) },
        { "initrd", DEF_STRING, F(initrd) },
        { "append", DEF_STRING, F(append) },
        /* The id is what MACs are derived from: with the NICs' MACs, the
         * display and the forwards' host ports, what allocation hands out. */
        { "id", DEF_UINT, F(id), DEF_IMMUTABLE | DEF_ALLOCATED, .min = 1, .max = 65535 },
        { "nic", DEF_LIST, F(nics), DEF_ALLOCATED, .list = &nic_list },
        { "vnc", DEF_CUSTOM, F(vnc), DEF_ALLOCATED, .set = set_vnc, .format = format_vnc, .done = done_vnc },
        { "forward", DEF_LIST, F(forwards), DEF_ALLOCATED, .list = &forward_list },
        { "localtime", DEF_BOOL, F(localtime) },
};

#undef F

/* The file format: nic and forward repeat, and a repeated single key has
 * always let the later line win. An empty key reaches def_set(), which
 * names it as an unknown key. */
static const struct keyfile_syntax vm_conf_syntax = {
        .max_bytes = VM_CONF_MAX_BYTES,
        .max_line = VM_CONF_MAX_LINE,
        .allow_repeats = true,
        .allow_empty_key = true,
};

static const struct def_schema vm_schema = {
        .header = "# vmhost VM definition (see docs/vm-definition.md). Edit with care:\n"
                  "# it is validated when loaded.\n",
        .keys = vm_keys,
        .n_keys = ELEMENTSOF(vm_keys),
        .syntax = &vm_conf_syntax,
};

const struct def_schema *vm_def_schema(void) {
        return &vm_schema;
}

struct vm_def *vm_def_free(struct vm_def *def) {
        if (!def)
                return NULL;
        def_free_fields(&vm_schema, def);
        free(def);
        return NULL;
}

int vm_def_set(struct vm_def *def, const char *key, const char *value, struct vh_error *err) {
        return def_set(&vm_schema, def, key, value, err);
}

int vm_def_parse(const char *text, const char *origin, struct vm_def **ret, struct vh_error *err) {
        _cleanup_(vm_def_freep) struct vm_def *def = vm_def_new("unnamed");
        if (!def)
                return -ENOMEM;
        int r = def_parse(&vm_schema, def, text, origin, 0, err);
        if (r < 0)
                return r;
        r = vm_def_validate(def, err);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(def);
        return 0;
}

int vm_def_parse_lenient(const char *text, const char *origin, struct vm_def **ret, struct vh_error *err) {
        _cleanup_(vm_def_freep) struct vm_def *def = vm_def_new("unnamed");
        if (!def)
                return -ENOMEM;
        int r = def_parse(&vm_schema, def, text, origin, DEF_PARSE_LENIENT, err);
        if (r < 0)
                return r;
        /* Every line was read: what is left is a problem of the whole. */
        if (r == 0 && vm_def_validate(def, err) < 0)
                r = 1;
        *ret = TAKE_PTR(def);
        return r;
}

char *vm_def_format(const struct vm_def *def) {
        return def_format(&vm_schema, def);
}

int vm_disk_format_choose(const char *disk, const char *probed, const char *explicit_format, const char **ret,
                          struct vh_error *err) {
        static const char *const formats[] = { "qcow2", "raw" };
        const char *p = NULL, *e = NULL;
        for (size_t i = 0; i < ELEMENTSOF(formats); i++) {
                if (probed && streq(probed, formats[i]))
                        p = formats[i];
                if (explicit_format && streq(explicit_format, formats[i]))
                        e = formats[i];
        }
        if (explicit_format && !e)
                return vh_error_set(err, -EINVAL, "disk-format must be qcow2 or raw, not '%s'", explicit_format);
        if (!p)
                return vh_error_set(err, -EINVAL, "Disk %s is a %s image; a VM disk must be qcow2 or raw", disk,
                                    probed ? probed : "unknown");
        if (e && e != p) {
                /* Raw is what the probe says when there is no header: a raw
                 * disk called qcow2 would not open, and a qcow2 image used as
                 * raw would show the guest its metadata. */
                if (streq(e, "qcow2"))
                        return vh_error_set(err, -EINVAL,
                                            "Disk %s is raw (no qcow2 header), but the disk format given is qcow2; "
                                            "leave the format out to use it as raw, or convert it: vmhost img convert -O qcow2 %s NEW.qcow2",
                                            disk, disk);
                return vh_error_set(err, -EINVAL,
                                    "Disk %s is qcow2 (it has a qcow2 header), but the disk format given is raw; "
                                    "leave the format out to use it as qcow2", disk);
        }
        *ret = p;
        return 0;
}

int vm_def_validate(const struct vm_def *def, struct vh_error *err) {
        if (!name_is_valid(def->name))
                return vh_error_set(err, -EINVAL, "Invalid VM name '%s'", def->name);
        switch (def->boot) {
        case VM_BOOT_DISK:
                if (!def->disk)
                        return vh_error_set(err, -EINVAL, "VM %s boots from disk but has no 'disk'", def->name);
                break;
        case VM_BOOT_CDROM:
                if (!def->cdrom)
                        return vh_error_set(err, -EINVAL, "VM %s boots from cdrom but has no 'cdrom'", def->name);
                break;
        case VM_BOOT_KERNEL:
                if (!def->kernel)
                        return vh_error_set(err, -EINVAL, "VM %s boots a kernel but has no 'kernel'", def->name);
                break;
        }
        if (def->n_forwards > 0 && !vm_def_user_nic(def))
                return vh_error_set(err, -EINVAL, "VM %s has forwards but no user-mode NIC ('nic = user')", def->name);
        for (unsigned i = 0; i < def->n_nics; i++)
                for (unsigned j = 0; j < i; j++)
                        if (def->nics[i].mac[0] && strcasecmp(def->nics[i].mac, def->nics[j].mac) == 0)
                                return vh_error_set(err, -EINVAL, "VM %s: NICs %u and %u have the same MAC %s", def->name,
                                                    j, i, def->nics[i].mac);
        return 0;
}
