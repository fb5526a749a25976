/* vm/vm-def.c: VM definitions: parse, validate, format. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "base/keyfile.h"
#include "base/macro.h"
#include "base/strutil.h"
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

struct vm_def *vm_def_free(struct vm_def *def) {
        if (!def)
                return NULL;
        free(def->name);
        free(def->disk);
        free(def->disk_format);
        free(def->base);
        free(def->cdrom);
        free(def->kernel);
        free(def->initrd);
        free(def->append);
        free(def->cpu_model);
        free(def->vnc_host);
        for (unsigned i = 0; i < def->n_nics; i++)
                vm_nic_done(&def->nics[i]);
        free(def);
        return NULL;
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
                        free(nic.ip);
                        nic.ip = strdup(v);
                        if (!nic.ip)
                                return -ENOMEM;
                } else {
                        *eq = '=';
                        goto bad_opt;
                }
                continue;
        bad_opt:
                free(nic.ip);
                return vh_error_set(err, -EINVAL, "Invalid NIC '%s': unknown option '%s' (mac, vlan, model, ip)", s, opt);
        }
        if (streq(network, VM_NET_USER) && (nic.vlan >= 0 || nic.ip)) {
                free(nic.ip);
                return vh_error_set(err, -EINVAL, "Invalid NIC '%s': vlan and ip need a vmhost network, not user-mode NAT", s);
        }
        nic.network = strdup(network);
        if (!nic.network) {
                free(nic.ip);
                return -ENOMEM;
        }
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

/* Every key vm.conf may hold: vm_def_set() refuses any other, so a key
 * handled in apply_key() but missing here cannot be used, and the unit
 * tests compare this list with docs/vm-definition.md (both ways). */
static const char *const vm_def_key_names[] = {
        "name", "cpus", "memory", "accel", "cpu", "boot", "disk", "disk-format", "base", "cdrom",
        "kernel", "initrd", "append", "id", "nic", "vnc", "forward", "localtime",
};

const char *const *vm_def_keys(size_t *ret_n) {
        *ret_n = ELEMENTSOF(vm_def_key_names);
        return vm_def_key_names;
}

static bool vm_def_key_known(const char *key) {
        for (size_t i = 0; i < ELEMENTSOF(vm_def_key_names); i++)
                if (streq(key, vm_def_key_names[i]))
                        return true;
        return false;
}

/* Applies one key; on a bad value returns -EINVAL with the reason in 'why'. */
static int apply_key(struct vm_def *def, const char *key, const char *value, char *why, size_t why_len) {
        if (streq(key, "name")) {
                if (!name_is_valid(value)) {
                        snprintf(why, why_len, "invalid name '%s' (1-%d letters, digits, '-' or '_')", value, VH_NAME_MAX);
                        return -EINVAL;
                }
                return keyfile_set_string(&def->name, value);
        }
        if (streq(key, "cpus")) {
                long v;
                if (parse_int_range(value, 1, 256, &v) < 0) {
                        snprintf(why, why_len, "cpus must be 1..256, not '%s'", value);
                        return -EINVAL;
                }
                def->cpus = (unsigned) v;
                return 0;
        }
        if (streq(key, "memory")) {
                uint64_t v;
                /* A bare number means MiB, as in qemu's -m. */
                uint64_t mib;
                if (parse_u64(value, &mib) == 0)
                        v = mib << 20;
                else if (parse_size(value, &v) < 0) {
                        snprintf(why, why_len, "memory must be a size like 512M or 2G, not '%s'", value);
                        return -EINVAL;
                }
                if (v < (16ULL << 20) || v > (1ULL << 40)) {
                        snprintf(why, why_len, "memory must be between 16M and 1T, not '%s'", value);
                        return -EINVAL;
                }
                def->memory = v;
                return 0;
        }
        if (streq(key, "disk"))
                return keyfile_set_string(&def->disk, value);
        if (streq(key, "disk-format")) {
                if (!streq(value, "qcow2") && !streq(value, "raw")) {
                        snprintf(why, why_len, "disk-format must be qcow2 or raw, not '%s'", value);
                        return -EINVAL;
                }
                return keyfile_set_string(&def->disk_format, value);
        }
        if (streq(key, "base"))
                return keyfile_set_string(&def->base, value);
        if (streq(key, "cdrom"))
                return keyfile_set_string(&def->cdrom, value);
        if (streq(key, "kernel"))
                return keyfile_set_string(&def->kernel, value);
        if (streq(key, "initrd"))
                return keyfile_set_string(&def->initrd, value);
        if (streq(key, "append"))
                return keyfile_set_string(&def->append, value);
        if (streq(key, "cpu"))
                return keyfile_set_string(&def->cpu_model, value);
        if (streq(key, "boot")) {
                if (vm_boot_from_string(value, &def->boot) < 0) {
                        snprintf(why, why_len, "boot must be disk, cdrom or kernel, not '%s'", value);
                        return -EINVAL;
                }
                return 0;
        }
        if (streq(key, "accel")) {
                if (vm_accel_from_string(value, &def->accel) < 0) {
                        snprintf(why, why_len, "accel must be auto, kvm or tcg, not '%s'", value);
                        return -EINVAL;
                }
                return 0;
        }
        if (streq(key, "id")) {
                long v;
                if (parse_int_range(value, 1, 65535, &v) < 0) {
                        snprintf(why, why_len, "id must be 1..65535, not '%s'", value);
                        return -EINVAL;
                }
                def->id = (unsigned) v;
                return 0;
        }
        if (streq(key, "nic")) {
                struct vh_error e = {};
                if (def->n_nics >= VM_MAX_NICS) {
                        snprintf(why, why_len, "at most %d NICs", VM_MAX_NICS);
                        return -EINVAL;
                }
                int r = vm_nic_parse(value, &def->nics[def->n_nics], &e);
                if (r == -ENOMEM)
                        return r;
                if (r < 0) {
                        snprintf(why, why_len, "%.400s", e.msg);
                        return -EINVAL;
                }
                def->n_nics++;
                return 0;
        }
        if (streq(key, "vnc")) {
                if (streq(value, "none")) {
                        def->vnc = VM_VNC_NONE;
                        return 0;
                }
                if (streq(value, "unix")) {
                        def->vnc = VM_VNC_UNIX;
                        return 0;
                }
                /* HOST goes into QEMU's -vnc option as it is: only the
                 * characters of a host name or an address, so no ',' can add
                 * an option (",password=off") to it. */
                const char *colon = strrchr(value, ':');
                long d;
                if (!colon || !vnc_host_is_valid(value, (size_t) (colon - value)) ||
                    parse_int_range(colon + 1, 0, 99, &d) < 0) {
                        snprintf(why, why_len,
                                 "vnc must be unix, none or HOST:DISPLAY (display 0..99), e.g. 127.0.0.1:5, not '%s'",
                                 value);
                        return -EINVAL;
                }
                char *host = strndup(value, (size_t) (colon - value));
                if (!host)
                        return -ENOMEM;
                free(def->vnc_host);
                def->vnc_host = host;
                def->vnc_display = (unsigned) d;
                def->vnc = VM_VNC_TCP;
                return 0;
        }
        if (streq(key, "forward")) {
                struct vh_error e = {};
                if (def->n_forwards >= VM_MAX_FORWARDS) {
                        snprintf(why, why_len, "at most %d forwards", VM_MAX_FORWARDS);
                        return -EINVAL;
                }
                if (vm_forward_parse(value, &def->forwards[def->n_forwards], &e) < 0) {
                        snprintf(why, why_len, "%.400s", e.msg);
                        return -EINVAL;
                }
                def->n_forwards++;
                return 0;
        }
        if (streq(key, "localtime")) {
                if (keyfile_parse_bool(value, &def->localtime) < 0) {
                        snprintf(why, why_len, "localtime must be yes or no, not '%s'", value);
                        return -EINVAL;
                }
                return 0;
        }
        snprintf(why, why_len, "unknown key '%s'", key);
        return -ENOKEY;
}

int vm_def_set(struct vm_def *def, const char *key, const char *value, struct vh_error *err) {
        if (!vm_def_key_known(key))
                return vh_error_set(err, -EINVAL, "unknown key '%.100s'", key);
        char why[VH_ERROR_MAX - 64] = "";
        int r = apply_key(def, key, value, why, sizeof(why));
        if (r == -ENOMEM)
                return r;
        if (r < 0)
                return vh_error_set(err, -EINVAL, "%s", why);
        return 0;
}

/* The file format: nic and forward repeat, and a repeated single key has
 * always let the later line win. An empty key reaches vm_def_set(), which
 * names it as an unknown key. */
static const struct keyfile_syntax vm_conf_syntax = {
        .max_bytes = VM_CONF_MAX_BYTES,
        .max_line = VM_CONF_MAX_LINE,
        .allow_repeats = true,
        .allow_empty_key = true,
};

int vm_def_parse(const char *text, const char *origin, struct vm_def **ret, struct vh_error *err) {
        _cleanup_(keyfile_freep) struct keyfile *kf = NULL;
        int r = keyfile_new(text, origin, &vm_conf_syntax, &kf, err);
        if (r < 0)
                return r;
        _cleanup_(vm_def_freep) struct vm_def *def = vm_def_new("unnamed");
        if (!def)
                return -ENOMEM;

        bool have_name = false;
        const char *key, *value;
        while ((r = keyfile_next(kf, &key, &value, err)) > 0) {
                struct vh_error e = {};
                r = vm_def_set(def, key, value, &e);
                if (r == -ENOMEM)
                        return r;
                if (r < 0)
                        return keyfile_error(kf, err, r, "%.400s", e.msg);
                if (streq(key, "name"))
                        have_name = true;
        }
        if (r < 0)
                return r;
        if (!have_name)
                return vh_error_set(err, -EINVAL, "%s: missing key 'name'", origin);

        r = vm_def_validate(def, err);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(def);
        return 0;
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

char *vm_def_format(const struct vm_def *def) {
        char *buf = NULL;
        size_t len = 0;
        FILE *f = open_memstream(&buf, &len);
        if (!f)
                return NULL;

        fprintf(f, "# vmhost VM definition (see docs/vm-definition.md). Edit with care:\n"
                   "# it is validated when loaded.\n");
        fprintf(f, "name = %s\n", def->name);
        fprintf(f, "cpus = %u\n", def->cpus);
        fprintf(f, "memory = %" PRIu64 "M\n", def->memory >> 20);
        fprintf(f, "accel = %s\n", vm_accel_to_string(def->accel));
        if (def->cpu_model)
                fprintf(f, "cpu = %s\n", def->cpu_model);
        fprintf(f, "boot = %s\n", vm_boot_to_string(def->boot));
        if (def->disk)
                fprintf(f, "disk = %s\ndisk-format = %s\n", def->disk, def->disk_format);
        if (def->base)
                fprintf(f, "base = %s\n", def->base);
        if (def->cdrom)
                fprintf(f, "cdrom = %s\n", def->cdrom);
        if (def->kernel)
                fprintf(f, "kernel = %s\n", def->kernel);
        if (def->initrd)
                fprintf(f, "initrd = %s\n", def->initrd);
        if (def->append)
                fprintf(f, "append = %s\n", def->append);
        if (def->id)
                fprintf(f, "id = %u\n", def->id);
        for (unsigned i = 0; i < def->n_nics; i++) {
                _cleanup_free_ char *n = vm_nic_format(&def->nics[i]);
                if (!n) {
                        fclose(f);
                        free(buf);
                        return NULL;
                }
                fprintf(f, "nic = %s\n", n);
        }
        if (def->vnc == VM_VNC_UNIX)
                fprintf(f, "vnc = unix\n");
        else if (def->vnc == VM_VNC_TCP)
                fprintf(f, "vnc = %s:%u\n", def->vnc_host, def->vnc_display);
        for (unsigned i = 0; i < def->n_forwards; i++) {
                char b[64];
                fprintf(f, "forward = %s\n", vm_forward_format(&def->forwards[i], b, sizeof(b)));
        }
        if (def->localtime)
                fprintf(f, "localtime = yes\n");
        if (fclose(f) != 0) {
                free(buf);
                return NULL;
        }
        return buf;
}
