/* net/net-json.h: the JSON documents that describe vmhost networks: what
 * 'net show --json', 'net list --json', 'net ports --json' and 'net attach
 * --json' print, and what a remote host or the web API return, so that all
 * are one format. docs/json.md describes every field. */
#pragma once

#include <stddef.h>

#include "base/json-writer.h"
#include "net/net.h"

/* The shape version of the network documents. It stays as long as changes
 * only add fields; removing or renaming one, or changing its type or
 * meaning, takes the next number (docs/json.md). */
#define NET_JSON_VERSION 1

/* "available" (user-mode networks), "running", "stopped" or "degraded". */
const char *net_state_to_string(const struct net_def *def, const struct net_status *st);

/* 'net show': the definition and state of one network with its attached
 * NICs ('ports', 'n_ports' of them, as net_list_ports() gives them). */
void net_show_to_json(struct json_writer *w, const struct net_def *def, const struct net_status *st,
                      const struct net_port *ports, size_t n_ports);

/* One entry of 'net list': the same fields as 'net show' but, in place of
 * the ports, the names of the VMs using the network. */
void net_list_entry_to_json(struct json_writer *w, const struct net_def *def, const struct net_status *st,
                            char *const *vms, size_t n_vms);

/* 'net ports': an array of the attached NICs. */
void net_ports_to_json(struct json_writer *w, const struct net_port *ports, size_t n_ports);

/* 'net attach': the attachment of one NIC to the network 'net_name'. */
void net_attachment_to_json(struct json_writer *w, const char *net_name, const struct net_nic_attachment *att);
