/* host/ssh.c: the ssh transport: argv, remote quoting, running and
 * explaining ssh's failures. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "base/macro.h"
#include "base/paths.h"
#include "base/process.h"
#include "base/strutil.h"
#include "base/strv.h"
#include "host/ssh.h"

extern char **environ;

char *host_shell_quote(const char *s) {
        size_t n = 2, len = strlen(s);
        for (size_t i = 0; i < len; i++)
                n += s[i] == '\'' ? 4 : 1;
        char *q = malloc(n + 1), *p = q;
        if (!q)
                return NULL;
        *p++ = '\'';
        for (size_t i = 0; i < len; i++) {
                if (s[i] == '\'') {
                        /* Close the quote, an escaped quote, reopen. */
                        memcpy(p, "'\\''", 4);
                        p += 4;
                } else
                        *p++ = s[i];
        }
        *p++ = '\'';
        *p = '\0';
        return q;
}

int host_remote_command(char *const argv[], char **ret) {
        if (!argv || !argv[0])
                return -EINVAL;
        /* The exact length of the line (what host_shell_quote() makes,
         * a space between words), not a worst case: a guess of 4 bytes per
         * byte refused lines of a quarter of the limit. */
        size_t cap = 0;
        for (size_t i = 0; argv[i]; i++) {
                size_t len = 2 + (i > 0);
                for (const char *c = argv[i]; *c && len <= HOST_REMOTE_COMMAND_MAX; c++)
                        len += *c == '\'' ? 4 : 1;
                if (len > HOST_REMOTE_COMMAND_MAX || cap + len > HOST_REMOTE_COMMAND_MAX)
                        return -E2BIG;
                cap += len;
        }
        char *cmd = malloc(cap + 1), *p = cmd;
        if (!cmd)
                return -ENOMEM;
        for (size_t i = 0; argv[i]; i++) {
                _cleanup_free_ char *q = host_shell_quote(argv[i]);
                if (!q) {
                        free(cmd);
                        return -ENOMEM;
                }
                if (i > 0)
                        *p++ = ' ';
                size_t k = strlen(q);
                memcpy(p, q, k);
                p += k;
        }
        *p = '\0';
        *ret = cmd;
        return 0;
}

/* host_ssh_argv(), with 'extra' options before the target and, for a
 * forward ('own_connection'), ssh's own connection instead of the shared
 * master and no remote command. */
static int ssh_argv(const struct vh_context *ctx, const struct host_def *def, unsigned flags,
                    char *const remote_argv[], char *const extra[], bool own_connection, char ***ret,
                    struct vh_error *err) {
        if (!host_ssh_target_is_valid(def->ssh))
                return vh_error_set(err, -EINVAL, "host '%s': invalid ssh address '%s'", def->name,
                                    def->ssh ? def->ssh : "");
        _cleanup_free_ char *known = NULL, *cmd = NULL, *cm_dir = NULL;
        int r = host_known_hosts_path(ctx, def->name, &known);
        if (r < 0)
                return vh_error_set(err, r, "host '%s': cannot find the state directory: %s", def->name, strerror(-r));
        r = vh_runtime_subdir(ctx, "ssh", &cm_dir);
        /* Control sockets let whoever can reach them run commands on the
         * host as us: the directory is ours alone, whatever made it. */
        if (r >= 0 && chmod(cm_dir, 0700) < 0)
                r = negative_errno();
        if (r < 0)
                return vh_error_set(err, r, "host '%s': cannot make the runtime directory for ssh: %s", def->name,
                                    strerror(-r));
        if (!(flags & HOST_SSH_CLOSE_MASTER) && !own_connection) {
                r = host_remote_command(remote_argv, &cmd);
                if (r == -E2BIG)
                        return vh_error_set(err, r, "host '%s': the command is longer than %u bytes", def->name,
                                            HOST_REMOTE_COMMAND_MAX);
                if (r < 0)
                        return r;
        }

        struct strv a = {};
        strv_add(&a, "ssh");
        strv_add(&a, "-o");
        strv_add(&a, "BatchMode=yes");
        strv_add(&a, "-o");
        strv_addf(&a, "ConnectTimeout=%d", HOST_SSH_CONNECT_TIMEOUT_S);
        strv_add(&a, "-o");
        strv_addf(&a, "StrictHostKeyChecking=%s", flags & HOST_SSH_ACCEPT_NEW ? "accept-new" : "yes");
        strv_add(&a, "-o");
        strv_addf(&a, "UserKnownHostsFile=%s", known);
        /* Only this host's file vouches for it, and it stays readable. */
        strv_add(&a, "-o");
        strv_add(&a, "GlobalKnownHostsFile=/dev/null");
        strv_add(&a, "-o");
        strv_add(&a, "HashKnownHosts=no");
        strv_add(&a, "-o");
        strv_add(&a, "UpdateHostKeys=no");
        if (own_connection) {
                strv_add(&a, "-o");
                strv_add(&a, "ControlMaster=no");
                strv_add(&a, "-o");
                strv_add(&a, "ControlPath=none");
        } else {
                strv_add(&a, "-o");
                strv_add(&a, "ControlMaster=auto");
                strv_add(&a, "-o");
                strv_addf(&a, "ControlPersist=%d", HOST_SSH_CONTROL_PERSIST_S);
                strv_add(&a, "-o");
                strv_addf(&a, "ControlPath=%s/%%C", cm_dir);
        }
        strv_add(&a, "-o");
        strv_addf(&a, "ServerAliveInterval=%d", HOST_SSH_ALIVE_INTERVAL_S);
        strv_add(&a, "-o");
        strv_addf(&a, "ServerAliveCountMax=%d", HOST_SSH_ALIVE_COUNT);
        strv_add(&a, "-o");
        strv_add(&a, "LogLevel=ERROR");
        if (flags & HOST_SSH_TTY)
                strv_add(&a, "-t");
        strv_add(&a, "-p");
        strv_addf(&a, "%u", host_def_port(def));
        if (def->identity) {
                strv_add(&a, "-i");
                strv_add(&a, def->identity);
                strv_add(&a, "-o");
                strv_add(&a, "IdentitiesOnly=yes");
        }
        if (flags & HOST_SSH_CLOSE_MASTER) {
                strv_add(&a, "-O");
                strv_add(&a, "exit");
        }
        for (size_t i = 0; extra && extra[i]; i++)
                strv_add(&a, extra[i]);
        /* The target was checked not to start with '-'; "--" says so to ssh too. */
        strv_add(&a, "--");
        strv_add(&a, def->ssh);
        if (cmd)
                strv_add(&a, cmd);
        if (a.error) {
                strv_done(&a);
                return -ENOMEM;
        }
        *ret = a.v;
        return 0;
}

int host_ssh_argv(const struct vh_context *ctx, const struct host_def *def, unsigned flags,
                  char *const remote_argv[], char ***ret, struct vh_error *err) {
        return ssh_argv(ctx, def, flags, remote_argv, NULL, false, ret, err);
}

/* The forward's ciphers, best first (see host_ssh_forward_argv()). */
#define HOST_SSH_FORWARD_CIPHERS                                                                              \
        "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,"  \
        "aes256-ctr"

int host_ssh_forward_argv(const struct vh_context *ctx, const struct host_def *def, const char *local_socket,
                          const char *remote_socket, char ***ret, struct vh_error *err) {
        _cleanup_free_ char *spec = strdup_printf("%s:%s", local_socket, remote_socket);
        if (!spec)
                return -ENOMEM;
        /* No command (-N); a forward that cannot be set up ends ssh
         * instead of leaving it connected and useless; a stale local
         * socket of an earlier run is replaced. The forward carries the
         * whole migration stream on one core at each end: AES-GCM (AES-NI)
         * costs less CPU per byte there than OpenSSH's default
         * chacha20-poly1305 (measured 430-460 against 250-330 MiB per
         * CPU-second of the client, docs/benchmarks.md, "Live migration"), so it
         * goes first; the rest of OpenSSH's default set follows, for a
         * server that lacks it. Only the forwards: the control session
         * carries a few lines. */
        char *extra[] = { (char *) "-N", (char *) "-o", (char *) "ExitOnForwardFailure=yes", (char *) "-o",
                          (char *) "StreamLocalBindUnlink=yes", (char *) "-c", (char *) HOST_SSH_FORWARD_CIPHERS,
                          (char *) "-L", spec, NULL };
        return ssh_argv(ctx, def, 0, NULL, extra, true, ret, err);
}

static const char *ssh_address(const struct host_def *def) {
        const char *at = strchr(def->ssh, '@');
        return at ? at + 1 : def->ssh;
}

/* The last non-empty line of 's' (at most 'size' - 1 bytes). */
static void last_line(const char *s, char *buf, size_t size) {
        buf[0] = '\0';
        const char *end = s + strlen(s);
        while (end > s && (end[-1] == '\n' || end[-1] == '\r'))
                end--;
        const char *start = end;
        while (start > s && start[-1] != '\n')
                start--;
        size_t n = MIN((size_t) (end - start), size - 1);
        memcpy(buf, start, n);
        buf[n] = '\0';
        /* Quoted in our messages: the far side's bytes, not escapes. */
        str_make_printable(buf, 0);
}

int host_ssh_classify(const struct host_def *def, const char *out, struct vh_error *err) {
        const char *name = def->name, *addr = ssh_address(def);
        unsigned port = host_def_port(def);
        if (!out)
                out = "";
        if (strstr(out, "REMOTE HOST IDENTIFICATION HAS CHANGED") ||
            (strstr(out, "Host key verification failed") && strstr(out, "differs from the key")))
                return vh_error_set(err, -EKEYREJECTED,
                                    "host '%s' (%s port %u) now presents a different host key than the one recorded "
                                    "by 'vmhost host add'%s%s%s: refused. If the host was reinstalled and you trust "
                                    "its new key, run 'vmhost host remove %s' and 'vmhost host add %s ...' again",
                                    name, addr, port, def->host_key ? " (" : "", def->host_key ? def->host_key : "",
                                    def->host_key ? ")" : "", name, name);
        if (strstr(out, "Host key verification failed") || strstr(out, "No ED25519 host key is known") ||
            strstr(out, "host key is known"))
                return vh_error_set(err, -EKEYREJECTED,
                                    "host '%s' (%s port %u): its host key is not the one recorded by 'vmhost host "
                                    "add': refused. If you trust the host, remove it and add it again",
                                    name, addr, port);
        if (strstr(out, "Connection refused"))
                return vh_error_set(err, -ECONNREFUSED,
                                    "cannot reach host '%s': nothing listens on %s port %u (is sshd running there?)",
                                    name, addr, port);
        if (strstr(out, "timed out"))
                return vh_error_set(err, -ETIMEDOUT, "cannot reach host '%s': no answer from %s port %u within %d s",
                                    name, addr, port, HOST_SSH_CONNECT_TIMEOUT_S);
        if (strstr(out, "No route to host") || strstr(out, "Network is unreachable"))
                return vh_error_set(err, -EHOSTUNREACH, "cannot reach host '%s': no route to %s", name, addr);
        if (strstr(out, "Could not resolve hostname"))
                return vh_error_set(err, -EHOSTUNREACH, "cannot reach host '%s': cannot resolve '%s'", name, addr);
        if (strstr(out, "Permission denied"))
                return vh_error_set(err, -EACCES,
                                    "host '%s' refused the login as %s (no key of ours is authorized there): add "
                                    "your public key to its authorized_keys, or give the key with --identity",
                                    name, def->ssh);
        if (strstr(out, "read from master failed") || strstr(out, "mux_client_"))
                return vh_error_set(err, -ECOMM,
                                    "the connection to host '%s' (%s port %u) broke: is the host up? (the next "
                                    "command connects anew)",
                                    name, addr, port);
        char line[256];
        last_line(out, line, sizeof(line));
        return vh_error_set(err, -ECOMM, "ssh to host '%s' (%s port %u) failed: %s", name, addr, port,
                            line[0] ? line : "no reason given");
}

int host_ssh_run(const struct vh_context *ctx, const struct host_def *def, unsigned flags,
                 char *const remote_argv[], unsigned timeout_ms, size_t max_output, char **ret_output,
                 struct vh_error *err) {
        char **argv = NULL;
        int r = host_ssh_argv(ctx, def, flags, remote_argv, &argv, err);
        if (r < 0)
                return r;
        _cleanup_free_ char *out = NULL;
        struct vh_error e = {};
        r = process_run(ctx, argv, timeout_ms, max_output, &out, &e);
        host_names_free(argv);
        if (r == -ETIMEDOUT)
                return vh_error_set(err, r, "host '%s' did not answer within %u s", def->name, timeout_ms / 1000);
        if (r == -ENOENT)
                return vh_error_set(err, r, "ssh is not installed here (Debian: openssh-client)");
        if (r < 0)
                return vh_error_set(err, r, "host '%s': %s", def->name, vh_error_message(&e, r));
        /* 255 is ssh's own failure; vmhost itself never exits with it. */
        if (r == 255)
                return host_ssh_classify(def, out, err);
        if (ret_output)
                *ret_output = TAKE_PTR(out);
        return r;
}

/* ssh's own lines about the shared connection (a master that died with
 * its host, a stale socket): vmhost says what failed in its own words, so
 * these are not relayed. The remote command's stderr never starts so. */
static const char *const mux_noise[] = { "mux_client_", "Control socket connect(", "ControlSocket " };

/* Relays stderr to 'fd' line by line as far as the noise goes: the start
 * of a line is held only while it could still be one of mux_noise. */
struct relay {
        int fd;
        bool mid_line, dropping;
        char held[32];
        size_t n_held;
};

static void relay_write(struct relay *rl, const char *p, size_t n) {
        while (rl->fd >= 0 && n > 0) {
                ssize_t w = write(rl->fd, p, n);
                if (w < 0 && errno == EINTR)
                        continue;
                if (w <= 0)
                        return;
                p += w;
                n -= (size_t) w;
        }
}

static void relay_bytes(struct relay *rl, const char *buf, size_t n) {
        for (size_t i = 0; i < n; i++) {
                char c = buf[i];
                if (rl->dropping) {
                        rl->dropping = c != '\n';
                        continue;
                }
                if (rl->mid_line) {
                        /* Pass the rest of the line on in one write. */
                        size_t k = i;
                        while (k < n && buf[k] != '\n')
                                k++;
                        relay_write(rl, buf + i, k - i + (k < n));
                        rl->mid_line = k >= n;
                        i = k;
                        continue;
                }
                rl->held[rl->n_held++] = c;
                bool maybe = false;
                for (size_t m = 0; m < ELEMENTSOF(mux_noise); m++) {
                        size_t len = strlen(mux_noise[m]);
                        if (memcmp(rl->held, mux_noise[m], MIN(len, rl->n_held)) != 0)
                                continue;
                        if (rl->n_held >= len) {
                                rl->dropping = c != '\n';
                                rl->n_held = 0;
                                maybe = true;
                                break;
                        }
                        maybe = true;
                }
                if (rl->dropping || (maybe && rl->n_held == 0))
                        continue;
                if (!maybe || rl->n_held == sizeof(rl->held)) {
                        relay_write(rl, rl->held, rl->n_held);
                        rl->mid_line = c != '\n';
                        rl->n_held = 0;
                }
        }
}

int host_ssh_command(const struct vh_context *ctx, const struct host_def *def, unsigned flags,
                     char *const remote_argv[], char ***ret_argv, char **ret_exe, struct vh_error *err) {
        char **argv = NULL;
        int r = host_ssh_argv(ctx, def, flags, remote_argv, &argv, err);
        if (r < 0)
                return r;
        char *exe = find_executable(ctx, "ssh");
        if (!exe) {
                host_names_free(argv);
                return vh_error_set(err, -ENOENT, "ssh is not installed here (Debian: openssh-client)");
        }
        *ret_argv = argv;
        *ret_exe = exe;
        return 0;
}

int host_ssh_exec(const struct vh_context *ctx, const struct host_def *def, char *const remote_argv[],
                  int relay_fd, struct vh_error *err) {
        char **argv = NULL;
        _cleanup_free_ char *exe = NULL;
        unsigned flags = isatty(STDIN_FILENO) && isatty(STDOUT_FILENO) ? HOST_SSH_TTY : 0;
        int r = host_ssh_command(ctx, def, flags, remote_argv, &argv, &exe, err);
        if (r < 0)
                return r;
        int p[2];
        if (pipe2(p, O_CLOEXEC) < 0) {
                r = negative_errno();
                host_names_free(argv);
                return vh_error_set(err, r, "host '%s': cannot make a pipe: %s", def->name, strerror(-r));
        }
        char *const *envp = environ;
        pid_t pid = fork();
        if (pid == 0) {
                /* Async-signal-safe calls only from here on. */
                if (p[1] == STDERR_FILENO || dup2(p[1], STDERR_FILENO) >= 0)
                        execve(exe, argv, envp);
                _exit(127);
        }
        int fork_errno = errno;
        host_names_free(argv);
        close(p[1]);
        _cleanup_close_ int fd = p[0];
        if (pid < 0)
                return vh_error_set(err, -fork_errno, "host '%s': cannot start ssh: %s", def->name,
                                    strerror(fork_errno));

        /* Relay stderr as it comes; keep its tail to explain a failure. */
        char tail[4096];
        size_t tail_len = 0;
        struct relay rl = { .fd = relay_fd };
        for (;;) {
                char buf[4096];
                ssize_t n = read(fd, buf, sizeof(buf));
                if (n < 0 && errno == EINTR)
                        continue;
                if (n <= 0)
                        break;
                relay_bytes(&rl, buf, (size_t) n);
                size_t k = (size_t) n;
                if (k >= sizeof(tail) - 1) {
                        memcpy(tail, buf + k - (sizeof(tail) - 1), sizeof(tail) - 1);
                        tail_len = sizeof(tail) - 1;
                } else {
                        if (tail_len + k > sizeof(tail) - 1) {
                                size_t drop = tail_len + k - (sizeof(tail) - 1);
                                memmove(tail, tail + drop, tail_len - drop);
                                tail_len -= drop;
                        }
                        memcpy(tail + tail_len, buf, k);
                        tail_len += k;
                }
        }
        relay_write(&rl, rl.held, rl.n_held);
        tail[tail_len] = '\0';
        int status;
        while (waitpid(pid, &status, 0) < 0)
                if (errno != EINTR)
                        return vh_error_set(err, negative_errno(), "host '%s': cannot wait for ssh: %m", def->name);
        if (WIFSIGNALED(status))
                return 128 + WTERMSIG(status);
        r = WEXITSTATUS(status);
        if (r == 255)
                return host_ssh_classify(def, tail, err);
        return r;
}

int host_known_hosts_fingerprint(const struct vh_context *ctx, const char *known_hosts, char **ret,
                                 struct vh_error *err) {
        char *argv[] = { (char *) "ssh-keygen", (char *) "-l", (char *) "-E", (char *) "sha256", (char *) "-f",
                         (char *) known_hosts, NULL };
        _cleanup_free_ char *out = NULL;
        int r = process_run(ctx, argv, 10000, 64 * 1024, &out, err);
        if (r < 0)
                return r;
        if (r != 0)
                return vh_error_set(err, -EINVAL, "ssh-keygen cannot read %s: %s", known_hosts, strstrip(out));
        /* "256 SHA256:abc... 10.0.0.2 (ED25519)" */
        const char *f = strstr(out, "SHA256:");
        if (!f)
                return vh_error_set(err, -EINVAL, "no key fingerprint in ssh-keygen's answer for %s", known_hosts);
        size_t n = strcspn(f, " \t\n");
        char *fp = strndup(f, n);
        if (!fp)
                return -ENOMEM;
        *ret = fp;
        return 0;
}
