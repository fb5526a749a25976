/* vm/vm-json.c: the VM status object (see vm-json.h, docs/json.md). */
#include "vm/vm-json.h"

static const char *nic_model_to_string(enum vm_nic_model m) {
        return m == VM_NIC_E1000 ? "e1000" : "virtio";
}

void vm_status_to_json(struct json_writer *w, const struct vm_def *def, const struct vm_status *st,
                       const struct vm_address *addrs, size_t n_addrs, const char *vnc_socket) {
        json_object_begin(w);
        json_kv_uint(w, "version", VM_JSON_VERSION);
        json_kv_string(w, "name", def->name);
        json_kv_string(w, "state", vm_state_to_string(st->state));
        if (st->state == VM_STATE_RUNNING) {
                json_kv_int(w, "pid", st->pid);
                json_kv_string(w, "accel", st->accel);
                if (st->started_at > 0)
                        json_kv_int(w, "started", st->started_at);
        }
        if (st->busy[0]) {
                json_kv_string(w, "busy", st->busy);
                if (st->busy_pid > 0)
                        json_kv_int(w, "busy-pid", st->busy_pid);
        }
        json_kv_uint(w, "cpus", def->cpus);
        json_kv_uint(w, "memory", def->memory);
        json_kv_uint(w, "id", def->id);
        json_kv_string(w, "boot", vm_boot_to_string(def->boot));
        json_kv_string(w, "cdrom", def->cdrom);
        json_kv_string(w, "disk", def->disk);
        json_kv_string(w, "base", def->base);
        json_key(w, "vnc");
        if (def->vnc == VM_VNC_TCP) {
                json_object_begin(w);
                json_kv_string(w, "type", "tcp");
                json_kv_string(w, "host", def->vnc_host);
                json_kv_uint(w, "display", def->vnc_display);
                json_kv_uint(w, "port", 5900 + def->vnc_display);
                json_kv_bool(w, "password", true);
                json_object_end(w);
        } else if (def->vnc == VM_VNC_UNIX) {
                json_object_begin(w);
                json_kv_string(w, "type", "unix");
                json_kv_string(w, "socket", vnc_socket);
                json_object_end(w);
        } else
                json_null(w);
        json_key(w, "nics");
        json_array_begin(w);
        for (unsigned i = 0; i < def->n_nics; i++) {
                json_object_begin(w);
                json_kv_string(w, "network", def->nics[i].network);
                json_kv_string(w, "mac", def->nics[i].mac);
                if (def->nics[i].vlan >= 0)
                        json_kv_int(w, "vlan", def->nics[i].vlan);
                json_kv_string(w, "model", nic_model_to_string(def->nics[i].model));
                if (def->nics[i].ip)
                        json_kv_string(w, "ip", def->nics[i].ip);
                json_object_end(w);
        }
        json_array_end(w);
        json_key(w, "forwards");
        json_array_begin(w);
        for (unsigned i = 0; i < def->n_forwards; i++) {
                json_object_begin(w);
                json_kv_string(w, "proto", def->forwards[i].proto == VM_FWD_UDP ? "udp" : "tcp");
                json_kv_string(w, "host", "127.0.0.1");
                /* Running: the port in use ('auto' resolved at start);
                 * stopped: a fixed port of the definition, none for auto. */
                if (st->state == VM_STATE_RUNNING)
                        json_kv_uint(w, "host-port", st->host_ports[i]);
                else if (def->forwards[i].host_port)
                        json_kv_uint(w, "host-port", def->forwards[i].host_port);
                json_kv_uint(w, "guest-port", def->forwards[i].guest_port);
                json_object_end(w);
        }
        json_array_end(w);
        json_key(w, "addresses");
        json_array_begin(w);
        for (size_t i = 0; i < n_addrs; i++) {
                json_object_begin(w);
                json_kv_uint(w, "nic", addrs[i].nic);
                json_kv_string(w, "network", addrs[i].network);
                json_kv_string(w, "mac", addrs[i].mac);
                json_kv_string(w, "ip", addrs[i].ip);
                json_kv_string(w, "source", vm_addr_source_to_string(addrs[i].source));
                json_object_end(w);
        }
        json_array_end(w);
        if (st->exit_reason[0])
                json_kv_string(w, "exit-reason", st->exit_reason);
        json_object_end(w);
}
