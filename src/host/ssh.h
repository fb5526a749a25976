/* host/ssh.h: the transport to a remote host: OpenSSH's own client, run
 * with an argv (never a local shell), strict host-key checking against the
 * host's own known_hosts file (STATE/hosts/NAME.known_hosts), no prompts
 * (BatchMode), a bounded connect, and one multiplexed connection per host
 * (ControlMaster, control sockets in RUN/ssh, 0700) so that a command
 * after the first costs a round trip, not a handshake.
 *
 * ssh joins the remote command's words with spaces and the remote user's
 * shell parses the result again, so every remote argument is quoted here
 * for a POSIX shell: a name or a path stays one word there, whatever it
 * holds. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "host/host-def.h"
#include "vmhost/context.h"
#include "vmhost/error.h"

#define HOST_SSH_CONNECT_TIMEOUT_S 5
#define HOST_SSH_CONTROL_PERSIST_S 60
/* A host that dies without closing its connection (powered off, its link
 * cut) sends no FIN: the master would keep a dead connection, and every
 * command through it would wait forever. ssh asks for a sign of life
 * after this many silent seconds and gives up after that many unanswered
 * asks: a dead connection is noticed within about 2 x 2 s. */
#define HOST_SSH_ALIVE_INTERVAL_S 2
#define HOST_SSH_ALIVE_COUNT 2
/* The longest remote command line vmhost sends (ARG_MAX there is larger;
 * this bounds what one command may hold). */
#define HOST_REMOTE_COMMAND_MAX (64u * 1024)

/* 's' as one word of a POSIX shell: in single quotes, each ' written as
 * '\'' ("" becomes ''). A new string, or NULL when out of memory. */
char *host_shell_quote(const char *s);

/* The words of 'argv' each quoted and joined by spaces: the command line
 * that the remote shell splits back into exactly 'argv'. -E2BIG when that
 * line is longer than HOST_REMOTE_COMMAND_MAX bytes, -EINVAL for an empty
 * argv. */
int host_remote_command(char *const argv[], char **ret);

enum host_ssh_flags {
        /* First contact ('host add'): record an unknown host key in the
         * host's known_hosts file; a different key is refused all the same. */
        HOST_SSH_ACCEPT_NEW = 1 << 0,
        /* Ask the multiplexing master to exit ('host remove'); 'remote_argv'
         * is then ignored. */
        HOST_SSH_CLOSE_MASTER = 1 << 1,
        /* A terminal on the far side (ssh -t): the remote command gets a
         * pty, so Ctrl-C typed here arrives there as SIGINT. */
        HOST_SSH_TTY = 1 << 2,
};

/* The full ssh argv for running 'remote_argv' on the host (argv[0] is
 * "ssh"). Creates RUN/ssh (0700). Free with host_names_free(). */
int host_ssh_argv(const struct vh_context *ctx, const struct host_def *def, unsigned flags,
                  char *const remote_argv[], char ***ret, struct vh_error *err);

/* The ssh argv of a unix-socket forward to the host on ssh's own
 * connection (not the shared master, so that the forward is one process
 * whose end is the forward's end): 'local_socket' here leads to
 * 'remote_socket' there (ssh -N -L, ExitOnForwardFailure). For a live
 * migration's stream. Free with host_names_free(). */
int host_ssh_forward_argv(const struct vh_context *ctx, const struct host_def *def, const char *local_socket,
                          const char *remote_socket, char ***ret, struct vh_error *err);

/* host_ssh_argv() and the ssh program to run it with (found in the
 * context's PATH; -ENOENT naming the package when missing). Free the argv
 * with host_names_free(), the path with free(). */
int host_ssh_command(const struct vh_context *ctx, const struct host_def *def, unsigned flags,
                     char *const remote_argv[], char ***ret_argv, char **ret_exe, struct vh_error *err);

/* What ssh's own failure (its exit status 255, its stderr) means, as an
 * error naming the host and what to do: -EKEYREJECTED (host key changed or
 * unknown), -ECONNREFUSED, -ETIMEDOUT, -EHOSTUNREACH, -EACCES (our key
 * refused), else -ECOMM with ssh's last line. Pure. */
int host_ssh_classify(const struct host_def *def, const char *ssh_stderr, struct vh_error *err);

/* Runs 'remote_argv' on the host and collects its output (stdout and
 * stderr together, at most 'max_output' bytes) within 'timeout_ms'.
 * Returns the remote exit status (0..254), or -errno with 'err' naming the
 * host: ssh could not connect or log in (see host_ssh_classify()), or the
 * time ran out. Safe to call from several threads at once. */
int host_ssh_run(const struct vh_context *ctx, const struct host_def *def, unsigned flags,
                 char *const remote_argv[], unsigned timeout_ms, size_t max_output, char **ret_output,
                 struct vh_error *err);

/* Runs 'remote_argv' on the host with this process's stdin and stdout, as
 * a command run here would (output streams as it comes). When both are
 * terminals the remote command gets one too (HOST_SSH_TTY): Ctrl-C
 * reaches it as SIGINT and its stderr comes through that terminal.
 * Otherwise it has no terminal: Ctrl-C ends the local ssh, and the
 * remote command ends at its next write (SIGPIPE) or when it reads its
 * closed stdin. ssh's stderr,
 * which carries the remote command's, is copied to 'relay_fd' as it comes
 * and its last part kept to explain a failure of ssh itself. Waits for the
 * remote command without a time limit (it may legitimately be long; the
 * connect is bounded). Returns the remote exit status, 128+N if ssh died
 * of signal N, or -errno as host_ssh_run(). */
int host_ssh_exec(const struct vh_context *ctx, const struct host_def *def, char *const remote_argv[],
                  int relay_fd, struct vh_error *err);

/* The "SHA256:..." fingerprint of the first key in a known_hosts file
 * (ssh-keygen -l), for 'host add' to record and show. */
int host_known_hosts_fingerprint(const struct vh_context *ctx, const char *known_hosts, char **ret,
                                 struct vh_error *err);
