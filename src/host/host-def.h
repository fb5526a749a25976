/* host/host-def.h: the registry of remote hosts. A host is a machine
 * vmhost reaches over OpenSSH; what vmhost knows of it is one readable
 * "key = value" file, STATE/hosts/NAME.conf (docs/hosts.md), beside the
 * host's own known_hosts file STATE/hosts/NAME.known_hosts, so that one
 * host's key never vouches for another and the user's ~/.ssh is left
 * alone. Names follow the VM name rules; "local" is the machine vmhost
 * runs on and is never a file. Parsing is pure (the unit tests drive it);
 * loading and saving go through the context's state directory. */
#pragma once

#include <stdbool.h>

#include "base/defs.h"
#include "vmhost/context.h"
#include "vmhost/error.h"

#define HOST_CONF_MAX_BYTES (8 * 1024)
#define HOST_CONF_MAX_LINE 1024
#define HOST_MAX_HOSTS 256
#define HOST_SSH_MAX 255      /* [user@]address */
#define HOST_PATH_MAX 1024    /* identity, vmhost */
#define HOST_LOCAL "local"
#define HOST_DEFAULT_PORT 22
#define HOST_DEFAULT_VMHOST "vmhost"

struct host_def {
        char *name;
        char *ssh;          /* [user@]address: never starts with '-', no spaces or shell syntax */
        unsigned port;      /* 0: HOST_DEFAULT_PORT */
        char *identity;     /* absolute path of the private key; NULL: ssh's own choice (agent, ~/.ssh) */
        char *vmhost;       /* the vmhost program there; NULL: HOST_DEFAULT_VMHOST (found in its PATH) */
        char *host_key;     /* "SHA256:..." recorded by 'host add'; informational, ssh checks the key */
};

/* A host name: a VM name (1..VH_NAME_MAX of [a-zA-Z0-9_-]) other than "local". */
bool host_name_is_valid(const char *name);
/* "[user@]address": user [a-zA-Z0-9_.-], address a host name, IPv4 or
 * IPv6 literal ([a-zA-Z0-9.:-], at most HOST_SSH_MAX); never starting with
 * '-', so it can never be read as an ssh option. */
bool host_ssh_target_is_valid(const char *s);

struct host_def *host_def_new(const char *name);
struct host_def *host_def_free(struct host_def *def);
static inline void host_def_freep(struct host_def **p) {
        host_def_free(*p);
}
unsigned host_def_port(const struct host_def *def);
const char *host_def_vmhost(const struct host_def *def);

const struct def_schema *host_def_schema(void);
int host_def_set(struct host_def *def, const char *key, const char *value, struct vh_error *err);
/* Parses a host file; errors are "ORIGIN:LINE: ...". */
int host_def_parse(const char *text, const char *origin, struct host_def **ret, struct vh_error *err);
char *host_def_format(const struct host_def *def);

/* STATE/hosts/NAME.conf and STATE/hosts/NAME.known_hosts (the directory
 * is created, 0700). -EINVAL for an invalid name. */
int host_conf_path(const struct vh_context *ctx, const char *name, char **ret);
int host_known_hosts_path(const struct vh_context *ctx, const char *name, char **ret);

/* -ENOENT with "no host 'NAME' (see 'vmhost host list')". */
int host_load(const struct vh_context *ctx, const char *name, struct host_def **ret, struct vh_error *err);
int host_save(const struct vh_context *ctx, const struct host_def *def, struct vh_error *err);
bool host_exists(const struct vh_context *ctx, const char *name);
/* Removes the host's file and its known_hosts; -ENOENT if it has none. */
int host_remove(const struct vh_context *ctx, const char *name, struct vh_error *err);
/* The registered names, sorted, NULL-terminated (free with strv_free-like
 * host_names_free). */
int host_list_names(const struct vh_context *ctx, char ***ret, struct vh_error *err);
char **host_names_free(char **names);
