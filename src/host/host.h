/* host/host.h: operations on registered hosts over the ssh transport:
 * adding one (first contact, its host key recorded), asking hosts whether
 * they answer and which vmhost they run (many at once, in parallel). */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "host/host-def.h"
#include "vmhost/context.h"
#include "vmhost/error.h"

/* What one ask of a host found. */
struct host_status {
        bool reachable;             /* ssh logged in and vmhost answered */
        int error;                  /* -errno when not */
        char why[VH_ERROR_MAX];     /* the reason when not, naming the host */
        uint64_t rtt_ms;            /* the time of the whole ask */
        char version[64];           /* "0.1.0" of 'vmhost --version' there */
};

/* Runs 'vmhost --version' on the host (bounded: the connect timeout plus a
 * few seconds for the command). Fills 'ret' either way; returns 0 when
 * reachable, else ret->error. */
int host_probe(const struct vh_context *ctx, const struct host_def *def, unsigned flags, struct host_status *ret);

/* host_probe() of 'n' hosts at once, one thread each: the whole costs the
 * slowest one, at most its timeout. Returns 0, or -errno when the threads
 * could not be started (then nothing was asked). */
int host_probe_all(const struct vh_context *ctx, struct host_def *const defs[], size_t n,
                   struct host_status ret[]);

/* Registers 'def' (its name must be free): connects once, recording the
 * host's key in its own known_hosts file (an unknown key is accepted this
 * once; ssh never accepts a changed one), checks that vmhost runs there
 * and stores the key's fingerprint in def->host_key and the file.
 * '*ret_status' says what the host answered. Nothing stays behind on
 * failure. */
int host_add(const struct vh_context *ctx, struct host_def *def, struct host_status *ret_status,
             struct vh_error *err);

/* Closes the host's multiplexed connection, if one is open (best effort). */
void host_disconnect(const struct vh_context *ctx, const struct host_def *def);
