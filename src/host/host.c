/* host/host.c: adding and asking remote hosts. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base/clock.h"
#include "base/macro.h"
#include "base/strutil.h"
#include "host/host.h"
#include "host/ssh.h"

/* The connect, the login and the command's own start. */
#define HOST_PROBE_TIMEOUT_MS ((HOST_SSH_CONNECT_TIMEOUT_S + 5) * 1000u)

int host_probe(const struct vh_context *ctx, const struct host_def *def, unsigned flags, struct host_status *ret) {
        *ret = (struct host_status) {};
        char *argv[] = { (char *) host_def_vmhost(def), (char *) "--version", NULL };
        _cleanup_free_ char *out = NULL;
        struct vh_error e = {};
        uint64_t t0 = vh_clock_ms();
        int r = host_ssh_run(ctx, def, flags, argv, HOST_PROBE_TIMEOUT_MS, 4096, &out, &e);
        ret->rtt_ms = vh_clock_ms() - t0;
        if (r >= 0 && out)
                strstrip(out);
        if (r == 0 && out && startswith(out, "vmhost ")) {
                snprintf(ret->version, sizeof(ret->version), "%s", out + strlen("vmhost "));
                ret->reachable = true;
                return 0;
        }
        if (r == 127)
                r = vh_error_set(&e, -ENOENT,
                                 "host '%s' answers, but has no vmhost program '%s': install vmhost there "
                                 "(or give its path with --vmhost)",
                                 def->name, host_def_vmhost(def));
        else if (r >= 0) {
                char line[200];
                snprintf(line, sizeof(line), "%s", out ? out : "");
                line[strcspn(line, "\n")] = '\0';
                r = vh_error_set(&e, -EPROTO, "host '%s': '%s --version' did not answer as vmhost does (exit %d: %s)",
                                 def->name, host_def_vmhost(def), r, line);
        }
        ret->error = r;
        snprintf(ret->why, sizeof(ret->why), "%s", vh_error_message(&e, r));
        return r;
}

struct probe_job {
        const struct vh_context *ctx;
        const struct host_def *def;
        struct host_status *status;
};

static void *probe_thread(void *p) {
        struct probe_job *job = p;
        host_probe(job->ctx, job->def, 0, job->status);
        return NULL;
}

int host_probe_all(const struct vh_context *ctx, struct host_def *const defs[], size_t n,
                   struct host_status ret[]) {
        if (n == 0)
                return 0;
        if (n > HOST_MAX_HOSTS)
                return -E2BIG;
        _cleanup_free_ struct probe_job *jobs = calloc(n, sizeof(*jobs));
        _cleanup_free_ pthread_t *threads = calloc(n, sizeof(*threads));
        _cleanup_free_ bool *started = calloc(n, sizeof(*started));
        if (!jobs || !threads || !started)
                return -ENOMEM;
        for (size_t i = 0; i < n; i++) {
                jobs[i] = (struct probe_job) { ctx, defs[i], &ret[i] };
                started[i] = pthread_create(&threads[i], NULL, probe_thread, &jobs[i]) == 0;
                /* No thread: ask it here, in turn, rather than not at all. */
                if (!started[i])
                        probe_thread(&jobs[i]);
        }
        for (size_t i = 0; i < n; i++)
                if (started[i])
                        pthread_join(threads[i], NULL);
        return 0;
}

int host_add(const struct vh_context *ctx, struct host_def *def, struct host_status *ret_status,
             struct vh_error *err) {
        if (!host_name_is_valid(def->name)) {
                if (streq(def->name, HOST_LOCAL))
                        return vh_error_set(err, -EINVAL, "'local' is this machine: choose another name");
                return vh_error_set(err, -EINVAL, "invalid host name '%s': use 1..%d characters of [a-zA-Z0-9_-]",
                                    def->name, VH_NAME_MAX);
        }
        if (host_exists(ctx, def->name))
                return vh_error_set(err, -EEXIST, "host '%s' exists already (see 'vmhost host show %s')", def->name,
                                    def->name);
        _cleanup_free_ char *known = NULL;
        int r = host_known_hosts_path(ctx, def->name, &known);
        if (r < 0)
                return vh_error_set(err, r, "cannot find the state directory: %s", strerror(-r));
        /* A file left by an earlier host of this name must not vouch for
         * whatever answers now. */
        if (unlink(known) < 0 && errno != ENOENT)
                return vh_error_set(err, negative_errno(), "cannot remove %s: %m", known);
        /* A master left from a host of this name (same address) would skip the key check. */
        host_disconnect(ctx, def);

        struct host_status st;
        r = host_probe(ctx, def, HOST_SSH_ACCEPT_NEW, &st);
        if (ret_status)
                *ret_status = st;
        if (r < 0) {
                unlink(known);
                host_disconnect(ctx, def);
                return vh_error_set(err, r, "%s", st.why);
        }
        _cleanup_free_ char *fp = NULL;
        r = host_known_hosts_fingerprint(ctx, known, &fp, err);
        if (r >= 0) {
                free(def->host_key);
                def->host_key = TAKE_PTR(fp);
                r = host_save(ctx, def, err);
        }
        if (r < 0) {
                unlink(known);
                host_disconnect(ctx, def);
                return r;
        }
        return 0;
}

void host_disconnect(const struct vh_context *ctx, const struct host_def *def) {
        /* Fails harmlessly when no master runs. */
        (void) host_ssh_run(ctx, def, HOST_SSH_CLOSE_MASTER, NULL, 5000, 4096, NULL, NULL);
}
