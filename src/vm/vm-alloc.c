/* vm/vm-alloc.c: ids, VNC displays, MACs. */
#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/lockfile.h"
#include "base/macro.h"
#include "base/paths.h"
#include "base/strutil.h"
#include "base/strv.h"
#include "vm/vm-alloc.h"
#include "vm/vm-list.h"
#include "vm/vm.h"

int vm_home_lock(const struct vh_context *ctx, int *ret_fd, struct vh_error *err) {
        _cleanup_free_ char *dir = NULL;
        int r = vh_state_subdir(ctx, "vms", &dir);
        if (r < 0)
                return vh_error_set(err, r, "Cannot create the VM directory: %s", strerror(-r));
        _cleanup_free_ char *path = strdup_printf("%s/.lock", dir);
        if (!path)
                return -ENOMEM;
        /* Held only while ids, MACs and displays are chosen and saved: a
         * holder for longer than this is stuck. */
        int fd = vh_lockfile_take(path, "The VM allocation (ids, MACs, VNC displays) of this vmhost home", "used",
                                  VM_HOME_LOCK_TIMEOUT_MS, err);
        if (fd < 0)
                return fd;
        *ret_fd = fd;
        return 0;
}

/* Reads VM 'name's definition as far as it goes (vm_def_parse_lenient()):
 * a typo in one key must not hand that VM's id, MACs or display to
 * another. Returns 1 with '*ret', 0 when the directory holds no definition,
 * or -errno with 'err' naming the file when what it holds cannot be told. */
static int load_reserved(const struct vh_context *ctx, const char *name, struct vm_def **ret, struct vh_error *err) {
        struct vm_paths p;
        int r = vm_paths_get(ctx, name, &p, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *text = NULL;
        r = read_full_file(p.conf, VM_CONF_MAX_BYTES, &text, NULL);
        if (r == -ENOENT)
                r = 0;
        else if (r < 0)
                r = vh_error_set(err, r, "VM %s's definition %s cannot be read (%s); fix it first", name, p.conf,
                                 strerror(-r));
        else {
                struct vh_error e = {};
                r = vm_def_parse_lenient(text, p.conf, ret, &e);
                if (r >= 0)
                        r = 1;
                else if (r != -ENOMEM)
                        r = vh_error_set(err, r,
                                         "VM %s's definition does not parse (%s), so what it reserves is unknown; fix it first",
                                         name, e.msg);
        }
        vm_paths_done(&p);
        return r;
}

/* Calls 'fn' for every definition in this home, broken ones with what
 * could be read of them; fails, naming the file, for one that cannot be
 * read that far. */
static int for_each_def(const struct vh_context *ctx, void (*fn)(const struct vm_def *def, void *userdata),
                        void *userdata, struct vh_error *err) {
        _cleanup_(vm_names_freep) char **names = NULL;
        int r = vm_list_names(ctx, &names, err);
        if (r < 0)
                return r;
        for (char **n = names; *n; n++) {
                struct vm_def *def = NULL;
                r = load_reserved(ctx, *n, &def, err);
                if (r < 0)
                        return r;
                if (r > 0) {
                        fn(def, userdata);
                        vm_def_free(def);
                }
        }
        return 0;
}

struct used {
        uint32_t host; /* vm_host_id(), for MACs derived from an id */
        uint8_t ids[65536 / 8];
        uint8_t displays[VM_VNC_DISPLAY_MAX + 1];
};

static void mark_id(struct used *u, unsigned id) {
        if (id > 0 && id < 65536)
                u->ids[id / 8] |= (uint8_t) (1u << (id % 8));
}

/* A MAC that is the one vm_derive_mac() gives some id here takes that id,
 * so that the next VM's derived MACs cannot collide with it. */
static void mark_mac(struct used *u, const char *mac) {
        unsigned b[6];
        if (sscanf(mac, "%2x:%2x:%2x:%2x:%2x:%2x", &b[0], &b[1], &b[2], &b[3], &b[4], &b[5]) != 6)
                return;
        if ((b[0] & 0x0f) == 0x02 && ((uint32_t) b[1] << 16 | (uint32_t) b[2] << 8 | b[3]) == u->host)
                mark_id(u, b[4] << 8 | b[5]);
}

static void mark_used(const struct vm_def *def, void *userdata) {
        struct used *u = userdata;
        mark_id(u, def->id);
        if (def->vnc == VM_VNC_TCP && def->vnc_display <= VM_VNC_DISPLAY_MAX)
                u->displays[def->vnc_display] = 1;
        /* A MAC written by hand (or copied from another VM). */
        for (unsigned i = 0; i < def->n_nics; i++)
                mark_mac(u, def->nics[i].mac);
}

/* What the definitions of this home use, and the ids whose MACs
 * 'avoid_macs' holds; fails where a definition cannot be read. */
static int used_collect(const struct vh_context *ctx, char *const *avoid_macs, struct used **ret, const char *what,
                        struct vh_error *err) {
        _cleanup_free_ struct used *u = calloc(1, sizeof(*u));
        if (!u)
                return -ENOMEM;
        struct vh_error e = {};
        int r = vm_host_id(ctx, &u->host, &e);
        if (r >= 0)
                r = for_each_def(ctx, mark_used, u, &e);
        if (r < 0)
                return vh_error_set(err, r, "Cannot allocate %s: %s", what, vh_error_message(&e, r));
        for (char *const *m = avoid_macs; m && *m; m++)
                mark_mac(u, *m);
        *ret = TAKE_PTR(u);
        return 0;
}

int vm_alloc_id(const struct vh_context *ctx, char *const *avoid_macs, unsigned *ret, struct vh_error *err) {
        _cleanup_free_ struct used *u = NULL;
        int r = used_collect(ctx, avoid_macs, &u, "a VM id", err);
        if (r < 0)
                return r;
        for (unsigned id = 1; id < 65536; id++)
                if (!(u->ids[id / 8] & (1u << (id % 8)))) {
                        *ret = id;
                        return 0;
                }
        return vh_error_set(err, -ENOSPC, "All 65535 VM ids of this vmhost home are taken");
}

int vm_alloc_check_macs(const struct vm_def *def, char *const *avoid_macs, struct vh_error *err) {
        for (unsigned i = 0; i < def->n_nics; i++)
                for (char *const *m = avoid_macs; m && *m; m++)
                        if (strcasecmp(def->nics[i].mac, *m) == 0)
                                return vh_error_set(err, -EADDRINUSE,
                                                    "MAC %s of NIC %u of VM %s is in use by a VM on another host: "
                                                    "give another mac= or leave it out to have one allocated",
                                                    def->nics[i].mac, i, def->name);
        return 0;
}

static bool tcp_port_free(const char *host, unsigned port) {
        struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t) port) };
        if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
                sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        _cleanup_close_ int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
                return false;
        return bind(fd, (struct sockaddr *) &sa, sizeof(sa)) == 0;
}

int vm_alloc_vnc_display(const struct vh_context *ctx, const char *host, unsigned *ret, struct vh_error *err) {
        _cleanup_free_ struct used *u = NULL;
        int r = used_collect(ctx, NULL, &u, "a VNC display", err);
        if (r < 0)
                return r;
        for (unsigned d = VM_VNC_DISPLAY_MIN; d <= VM_VNC_DISPLAY_MAX; d++)
                if (!u->displays[d] && tcp_port_free(host, 5900 + d)) {
                        *ret = d;
                        return 0;
                }
        return vh_error_set(err, -ENOSPC, "No free VNC display in :%d..:%d (ports %d..%d)", VM_VNC_DISPLAY_MIN,
                            VM_VNC_DISPLAY_MAX, 5900 + VM_VNC_DISPLAY_MIN, 5900 + VM_VNC_DISPLAY_MAX);
}

static bool host_id_is_valid(const char *s) {
        if (strlen(s) != VM_HOST_ID_LEN)
                return false;
        for (const char *p = s; *p; p++)
                if (!strchr("0123456789abcdef", *p))
                        return false;
        return true;
}

/* Reads STATE/host-id: 1 with the id, 0 when there is none. */
static int host_id_read(const char *path, char ret[VM_HOST_ID_LEN + 1], struct vh_error *err) {
        _cleanup_free_ char *line = NULL;
        int r = read_one_line_file(path, &line);
        if (r == -ENOENT)
                return 0;
        if (r < 0)
                return vh_error_set(err, r, "Cannot read the host id %s: %s", path, strerror(-r));
        if (!host_id_is_valid(line))
                return vh_error_set(err, -EINVAL,
                                    "%s is not a host id (%d hex digits): remove it to make a new one "
                                    "(NICs without a recorded MAC then get new MACs)",
                                    path, VM_HOST_ID_LEN);
        memcpy(ret, line, VM_HOST_ID_LEN + 1);
        return 1;
}

int vm_host_id_get(const struct vh_context *ctx, char ret[VM_HOST_ID_LEN + 1], struct vh_error *err) {
        _cleanup_free_ char *state = vh_state_dir(ctx);
        if (!state)
                return -ENOMEM;
        int r = mkdir_p(state, 0755);
        if (r < 0)
                return vh_error_set(err, r, "Cannot create the state directory %s: %s", state, strerror(-r));
        _cleanup_free_ char *path = strdup_printf("%s/host-id", state);
        /* A name of its own per caller (mkstemp): threads of one daemon
         * share the pid, and one's unlink() must not take another's file. */
        _cleanup_free_ char *tmp = strdup_printf("%s/.host-id.XXXXXX", state);
        if (!path || !tmp)
                return -ENOMEM;
        r = host_id_read(path, ret, err);
        if (r != 0)
                return r < 0 ? r : 0;

        /* Random, not derived from /etc/machine-id or a path: copies of one
         * machine share those. */
        uint8_t rnd[VM_HOST_ID_LEN / 2];
        for (size_t got = 0; got < sizeof(rnd);) {
                ssize_t k = getrandom(rnd + got, sizeof(rnd) - got, 0);
                if (k < 0 && errno == EINTR)
                        continue;
                if (k < 0)
                        return vh_error_set(err, negative_errno(), "Cannot make a host id: getrandom: %m");
                got += (size_t) k;
        }
        char text[VM_HOST_ID_LEN + 2];
        for (size_t i = 0; i < sizeof(rnd); i++)
                snprintf(text + 2 * i, 3, "%02x", rnd[i]);
        text[VM_HOST_ID_LEN] = '\n';
        text[VM_HOST_ID_LEN + 1] = '\0';
        /* Written whole under a temporary name, then linked: link() never
         * replaces, so of two callers (processes or threads) making it at
         * once the first wins and the second reads the winner's id. */
        int fd = mkostemp(tmp, O_CLOEXEC);
        if (fd < 0)
                return vh_error_set(err, negative_errno(), "Cannot write the host id in %s: %m", state);
        r = 0;
        errno = 0; /* a short write sets none */
        if (fchmod(fd, 0644) < 0 || write(fd, text, VM_HOST_ID_LEN + 1) != VM_HOST_ID_LEN + 1 || fsync(fd) < 0)
                r = errno > 0 ? negative_errno() : -EIO;
        if (close(fd) < 0 && r == 0)
                r = negative_errno();
        if (r < 0) {
                unlink(tmp);
                return vh_error_set(err, r, "Cannot write the host id %s: %s", tmp, strerror(-r));
        }
        if (link(tmp, path) < 0 && errno != EEXIST) {
                r = negative_errno();
                unlink(tmp);
                return vh_error_set(err, r, "Cannot create the host id %s: %s", path, strerror(-r));
        }
        unlink(tmp);
        r = host_id_read(path, ret, err);
        if (r == 0)
                return vh_error_set(err, -ENOENT, "The host id %s vanished as it was made", path);
        return r < 0 ? r : 0;
}

uint32_t vm_host_id_mix(const char *host_id) {
        /* FNV-1a, folded to 24 bits. */
        uint64_t h = 0xcbf29ce484222325ULL;
        for (const char *s = host_id; *s; s++)
                h = (h ^ (unsigned char) *s) * 0x100000001b3ULL;
        return (uint32_t) ((h >> 40) ^ (h >> 16) ^ h) & 0xffffff;
}

int vm_host_id(const struct vh_context *ctx, uint32_t *ret, struct vh_error *err) {
        char id[VM_HOST_ID_LEN + 1];
        int r = vm_host_id_get(ctx, id, err);
        if (r < 0)
                return r;
        *ret = vm_host_id_mix(id);
        return 0;
}

int vm_mac_derive(uint32_t host, unsigned id, unsigned index, char ret[18]) {
        if (id == 0 || id > 65535 || index >= 16)
                return -EINVAL;
        snprintf(ret, 18, "%02x:%02x:%02x:%02x:%02x:%02x", (index << 4) | 0x02, (host >> 16) & 0xff, (host >> 8) & 0xff,
                 host & 0xff, (id >> 8) & 0xff, id & 0xff);
        return 0;
}

int vm_derive_mac(const struct vh_context *ctx, unsigned id, unsigned index, char ret[18]) {
        if (id == 0 || id > 65535 || index >= 16)
                return -EINVAL;
        uint32_t host;
        int r = vm_host_id(ctx, &host, NULL);
        if (r < 0)
                return r;
        return vm_mac_derive(host, id, index, ret);
}

struct macs {
        struct strv v;
        uint32_t host;
        bool have_host;
};

static void collect_macs(const struct vm_def *def, void *userdata) {
        struct macs *m = userdata;
        for (unsigned i = 0; i < def->n_nics; i++) {
                char mac[18];
                if (def->nics[i].mac[0])
                        snprintf(mac, sizeof(mac), "%s", def->nics[i].mac);
                else if (!m->have_host || vm_mac_derive(m->host, def->id, i, mac) < 0)
                        continue;
                for (char *p = mac; *p; p++)
                        *p = (char) tolower((unsigned char) *p);
                strv_add(&m->v, mac);
        }
}

int vm_alloc_macs_in_use(const struct vh_context *ctx, char ***ret, struct vh_error *err) {
        struct macs m = {};
        m.have_host = vm_host_id(ctx, &m.host, NULL) >= 0;
        int r = for_each_def(ctx, collect_macs, &m, err);
        if (r >= 0 && m.v.error)
                r = -ENOMEM;
        if (r >= 0 && !m.v.v && !(m.v.v = calloc(1, sizeof(char *))))
                r = -ENOMEM;
        if (r < 0) {
                strv_done(&m.v);
                return r;
        }
        *ret = m.v.v;
        return (int) m.v.n;
}
