/* net/dnsmasq.h: DHCP and DNS for a bridge or OVS network from a dnsmasq
 * that vmhost starts and stops itself, with its own config, lease, pid and
 * log files in the network's runtime directory (never the system dnsmasq
 * service). Reservations (MAC,IP,NAME) come from the VM NICs attached with
 * a fixed address; they are kept in a hosts file that dnsmasq re-reads on
 * SIGHUP, so only a change of range, address or interface restarts it.
 *
 * 'no-ping' because the network is private: dnsmasq would otherwise ping
 * each address before offering it, delaying every lease by ~3 s. */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/net-addr.h"
#include "vmhost/context.h"
#include "vmhost/error.h"

struct dnsmasq_host {
        const char *mac;     /* "52:54:00:12:34:56" */
        uint32_t ip;
        const char *name;    /* host name for DNS; letters, digits, '-' */
};

struct dnsmasq_config {
        const char *net_name;
        const char *interface;
        struct net_prefix subnet;
        uint32_t gateway;
        uint32_t first, last;
        unsigned mtu;            /* advertised when not 1500 */
        const char *domain;
        const char *lease_file, *pid_file, *log_file;
        const char *hosts_file;  /* the reservations' file (see dnsmasq_hosts_format()), or NULL:
                                  * then 'hosts' go into the config itself */
        const struct dnsmasq_host *hosts;
        size_t n_hosts;
};

char *dnsmasq_config_format(const struct dnsmasq_config *c);

/* The text of the reservations file (--dhcp-hostsfile): a line per host. */
char *dnsmasq_hosts_format(const struct dnsmasq_host *hosts, size_t n);

/* Whether a dnsmasq that has dropped to its unprivileged user (nobody) can
 * read 'path' again: the file is world-readable and every directory above
 * it world-searchable. Where not, a SIGHUP would only make it log
 * "Permission denied" and keep the old reservations. */
bool dnsmasq_can_reread(const char *path);

/* Makes the running dnsmasq re-read its reservations (SIGHUP); -ESRCH when
 * it is not running. Only worth it where dnsmasq_can_reread(). */
int dnsmasq_reload(const char *pid_path, const char *conf_path);

/* Starts dnsmasq with this config file (it daemonizes and writes its pid
 * file; its exit status reports config and bind errors). */
int dnsmasq_start(const struct vh_context *ctx, const char *conf_path, const char *log_path, struct vh_error *err);

/* The pid of the dnsmasq that runs this config (checked through /proc, so a
 * recycled pid is never mistaken for it), or 0. */
int dnsmasq_pid(const char *pid_path, const char *conf_path);

/* Stops it (SIGTERM, SIGKILL after 3 s) and waits until it has exited with
 * its sockets closed (a pidfd), then removes the pid file. Returns 1 if it
 * was stopped, 0 if it was not running, -ETIMEDOUT if it would not go. */
int dnsmasq_stop(const char *pid_path, const char *conf_path);

/* A DNS-safe host name from a VM name and NIC index ("web_1", 0 -> "web-1"). */
void dnsmasq_host_name(const char *vm, unsigned index, char *buf, size_t len);
