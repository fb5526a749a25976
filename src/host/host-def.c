/* host/host-def.c: the host registry: the schema of STATE/hosts/NAME.conf
 * (base/defs.h does the parsing) and its files. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/fileio.h"
#include "base/macro.h"
#include "base/paths.h"
#include "base/strutil.h"
#include "base/strv.h"
#include "host/host-def.h"

bool host_name_is_valid(const char *name) {
        return name_is_valid(name) && !streq(name, HOST_LOCAL);
}

bool host_ssh_target_is_valid(const char *s) {
        size_t n = s ? strlen(s) : 0;
        if (n == 0 || n > HOST_SSH_MAX)
                return false;
        const char *at = strchr(s, '@');
        const char *addr = s;
        if (at) {
                if (at == s || strchr(at + 1, '@'))
                        return false;
                for (const char *p = s; p < at; p++)
                        if (!isalnum((unsigned char) *p) && !strchr("_.-", *p))
                                return false;
                if (s[0] == '-')
                        return false;
                addr = at + 1;
        }
        /* An address that began with '-' would be an ssh option. */
        if (addr[0] == '\0' || addr[0] == '-' || addr[0] == '.')
                return false;
        for (const char *p = addr; *p; p++)
                if (!isalnum((unsigned char) *p) && !strchr(".:-", *p))
                        return false;
        return true;
}

static bool path_is_valid(const char *s) {
        size_t n = s ? strlen(s) : 0;
        if (n == 0 || n > HOST_PATH_MAX || s[0] == '-')
                return false;
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f)
                        return false;
        return true;
}

static bool absolute_path_is_valid(const char *s) {
        return path_is_valid(s) && s[0] == '/';
}

static bool fingerprint_is_valid(const char *s) {
        if (!s || !startswith(s, "SHA256:") || strlen(s) > 100 || strlen(s) <= 7)
                return false;
        for (const char *p = s + 7; *p; p++)
                if (!isalnum((unsigned char) *p) && !strchr("+/=", *p))
                        return false;
        return true;
}

#define STR_(x) #x
#define STR(x) STR_(x)
#define F(field) offsetof(struct host_def, field)

/* Every key a host file may hold, in the order host_def_format() writes
 * them; the unit tests compare this table with docs/hosts.md. */
static const struct def_key host_keys[] = {
        { "name", DEF_STRING, F(name), DEF_REQUIRED | DEF_IMMUTABLE, .missing = "missing 'name = ...'",
          .valid = host_name_is_valid, .expect = "1.." STR(VH_NAME_MAX) " characters of [a-zA-Z0-9_-], not 'local'" },
        { "ssh", DEF_STRING, F(ssh), DEF_REQUIRED, .missing = "missing 'ssh = [USER@]ADDRESS'",
          .valid = host_ssh_target_is_valid, .expect = "[USER@]ADDRESS (a host name or IP address)" },
        { "port", DEF_UINT, F(port), .min = 1, .max = 65535, .expect = "a port 1..65535" },
        { "identity", DEF_STRING, F(identity), .valid = absolute_path_is_valid,
          .expect = "an absolute path of a private key" },
        { "vmhost", DEF_STRING, F(vmhost), .valid = path_is_valid, .expect = "the vmhost program on that host" },
        { "host-key", DEF_STRING, F(host_key), .valid = fingerprint_is_valid,
          .expect = "a key fingerprint SHA256:..." },
};

#undef F

static const struct keyfile_syntax host_conf_syntax = {
        .max_bytes = HOST_CONF_MAX_BYTES,
        .max_line = HOST_CONF_MAX_LINE,
        .quote_line_max = 200,
        .quote_key_max = 100,
};

static const struct def_schema host_schema = {
        .header = "# vmhost remote host (see docs/hosts.md); validated when loaded.\n",
        .keys = host_keys,
        .n_keys = ELEMENTSOF(host_keys),
        .syntax = &host_conf_syntax,
};

const struct def_schema *host_def_schema(void) {
        return &host_schema;
}

struct host_def *host_def_new(const char *name) {
        struct host_def *def = calloc(1, sizeof(*def));
        if (!def)
                return NULL;
        def->name = strdup(name);
        if (!def->name)
                return mfree(def);
        return def;
}

struct host_def *host_def_free(struct host_def *def) {
        if (!def)
                return NULL;
        def_free_fields(&host_schema, def);
        free(def);
        return NULL;
}

unsigned host_def_port(const struct host_def *def) {
        return def->port ? def->port : HOST_DEFAULT_PORT;
}

const char *host_def_vmhost(const struct host_def *def) {
        return def->vmhost ? def->vmhost : HOST_DEFAULT_VMHOST;
}

int host_def_set(struct host_def *def, const char *key, const char *value, struct vh_error *err) {
        return def_set(&host_schema, def, key, value, err);
}

int host_def_parse(const char *text, const char *origin, struct host_def **ret, struct vh_error *err) {
        _cleanup_(host_def_freep) struct host_def *def = host_def_new("unnamed");
        if (!def)
                return -ENOMEM;
        int r = def_parse(&host_schema, def, text, origin, 0, err);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(def);
        return 0;
}

char *host_def_format(const struct host_def *def) {
        return def_format(&host_schema, def);
}

static int host_file_path(const struct vh_context *ctx, const char *name, const char *suffix, char **ret) {
        if (!host_name_is_valid(name))
                return -EINVAL;
        _cleanup_free_ char *dir = NULL;
        int r = vh_state_subdir(ctx, "hosts", &dir);
        if (r < 0)
                return r;
        char *p = strdup_printf("%s/%s%s", dir, name, suffix);
        if (!p)
                return -ENOMEM;
        *ret = p;
        return 0;
}

int host_conf_path(const struct vh_context *ctx, const char *name, char **ret) {
        return host_file_path(ctx, name, ".conf", ret);
}

int host_known_hosts_path(const struct vh_context *ctx, const char *name, char **ret) {
        return host_file_path(ctx, name, ".known_hosts", ret);
}

static int invalid_name(const char *name, struct vh_error *err) {
        if (name && streq(name, HOST_LOCAL))
                return vh_error_set(err, -EINVAL, "'local' is this machine, not a host that can be registered");
        return vh_error_set(err, -EINVAL, "invalid host name '%s': use 1..%d characters of [a-zA-Z0-9_-]",
                            name ? name : "", VH_NAME_MAX);
}

int host_load(const struct vh_context *ctx, const char *name, struct host_def **ret, struct vh_error *err) {
        if (!host_name_is_valid(name))
                return invalid_name(name, err);
        _cleanup_free_ char *path = NULL;
        int r = host_conf_path(ctx, name, &path);
        if (r < 0)
                return vh_error_set(err, r, "cannot find the state directory: %s", strerror(-r));
        _cleanup_free_ char *text = NULL;
        r = def_file_read(path, HOST_CONF_MAX_BYTES, &text, err);
        if (r == -ENOENT)
                return vh_error_set(err, -ENOENT, "no host '%s' (see 'vmhost host list')", name);
        if (r < 0)
                return r;
        struct host_def *def = NULL;
        r = host_def_parse(text, path, &def, err);
        if (r < 0)
                return r;
        if ((r = def_name_check(path, def->name, name, err)) < 0) {
                host_def_free(def);
                return r;
        }
        *ret = def;
        return 0;
}

int host_save(const struct vh_context *ctx, const struct host_def *def, struct vh_error *err) {
        if (!host_name_is_valid(def->name))
                return invalid_name(def->name, err);
        _cleanup_free_ char *path = NULL, *text = host_def_format(def);
        if (!text)
                return -ENOMEM;
        int r = host_conf_path(ctx, def->name, &path);
        if (r < 0)
                return vh_error_set(err, r, "cannot find the state directory: %s", strerror(-r));
        r = write_file_atomic(path, text, strlen(text), 0600);
        if (r < 0)
                return vh_error_set(err, r, "cannot write %s: %s", path, strerror(-r));
        return 0;
}

bool host_exists(const struct vh_context *ctx, const char *name) {
        _cleanup_free_ char *path = NULL;
        return host_conf_path(ctx, name, &path) >= 0 && file_exists(path);
}

int host_remove(const struct vh_context *ctx, const char *name, struct vh_error *err) {
        if (!host_name_is_valid(name))
                return invalid_name(name, err);
        _cleanup_free_ char *conf = NULL, *known = NULL;
        int r = host_conf_path(ctx, name, &conf);
        if (r >= 0)
                r = host_known_hosts_path(ctx, name, &known);
        if (r < 0)
                return vh_error_set(err, r, "cannot find the state directory: %s", strerror(-r));
        if (unlink(conf) < 0) {
                if (errno == ENOENT)
                        return vh_error_set(err, -ENOENT, "no host '%s' (see 'vmhost host list')", name);
                return vh_error_set(err, negative_errno(), "cannot remove %s: %m", conf);
        }
        if (unlink(known) < 0 && errno != ENOENT)
                return vh_error_set(err, negative_errno(), "cannot remove %s: %m", known);
        return 0;
}

char **host_names_free(char **names) {
        for (char **p = names; p && *p; p++)
                free(*p);
        free(names);
        return NULL;
}

static int cmp_str(const void *a, const void *b) {
        return strcmp(*(char *const *) a, *(char *const *) b);
}

int host_list_names(const struct vh_context *ctx, char ***ret, struct vh_error *err) {
        _cleanup_free_ char *dir = NULL;
        int r = vh_state_subdir(ctx, "hosts", &dir);
        if (r < 0)
                return vh_error_set(err, r, "cannot find the state directory: %s", strerror(-r));
        DIR *d = opendir(dir);
        if (!d)
                return vh_error_set(err, negative_errno(), "cannot list %s: %m", dir);
        struct strv names = {};
        struct dirent *de;
        while ((de = readdir(d))) {
                size_t n = strlen(de->d_name);
                if (n <= 5 || n - 5 > VH_NAME_MAX || !endswith(de->d_name, ".conf"))
                        continue;
                char name[VH_NAME_MAX + 1];
                memcpy(name, de->d_name, n - 5);
                name[n - 5] = '\0';
                if (!host_name_is_valid(name))
                        continue;
                if (names.n >= HOST_MAX_HOSTS) {
                        closedir(d);
                        strv_done(&names);
                        return vh_error_set(err, -E2BIG, "more than %d hosts in %s", HOST_MAX_HOSTS, dir);
                }
                strv_add(&names, name);
        }
        closedir(d);
        if (!names.error && !names.v)
                names.v = calloc(1, sizeof(char *));
        if (names.error || !names.v) {
                strv_done(&names);
                return -ENOMEM;
        }
        qsort(names.v, names.n, sizeof(char *), cmp_str);
        *ret = names.v;
        return (int) names.n;
}
