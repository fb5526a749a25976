/* vm/vm-cmdline.c: QEMU's argv from a VM definition.
 *
 * Security defaults live here: -nodefaults and -no-user-config (nothing we
 * did not ask for), QMP and the serial console only on unix sockets (the
 * caller creates them in a 0700 directory with umask 077, so 0600), VNC
 * on a unix socket beside them unless a TCP display is asked for, every
 * VNC display with password=on, no TCP monitor, forwards bound to
 * 127.0.0.1, and -sandbox on. */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "base/macro.h"
#include "base/strutil.h"
#include "vm/vm-cmdline.h"

char *qemu_opt_escape(const char *value) {
        size_t n = 0;
        for (const char *p = value; *p; p++)
                n += *p == ',' ? 2 : 1;
        char *out = malloc(n + 1), *o = out;
        if (!out)
                return NULL;
        for (const char *p = value; *p; p++) {
                *o++ = *p;
                if (*p == ',')
                        *o++ = ',';
        }
        *o = '\0';
        return out;
}

int vm_cmdline_build(const struct vm_def *def, const struct vm_launch *l, struct strv *a, struct vh_error *err) {
        int r = vm_def_validate(def, err);
        if (r < 0)
                return r;

        _cleanup_free_ char *disk = def->disk ? qemu_opt_escape(def->disk) : NULL;
        _cleanup_free_ char *cdrom = def->cdrom ? qemu_opt_escape(def->cdrom) : NULL;
        _cleanup_free_ char *qmp = qemu_opt_escape(l->qmp_socket);
        _cleanup_free_ char *serial = qemu_opt_escape(l->serial_socket);
        _cleanup_free_ char *serial_log = qemu_opt_escape(l->serial_log);
        if ((def->disk && !disk) || (def->cdrom && !cdrom) || !qmp || !serial || !serial_log)
                return -ENOMEM;

        strv_add(a, l->qemu_binary);
        strv_add(a, "-name");
        strv_addf(a, "%s,process=vmhost-%s", def->name, def->name);
        strv_add(a, "-nodefaults");
        strv_add(a, "-no-user-config");
        strv_add(a, "-machine");
        strv_addf(a, "pc,accel=%s", l->accel);
        if (def->cpu_model) {
                strv_add(a, "-cpu");
                strv_add(a, def->cpu_model);
        }
        strv_add(a, "-smp");
        strv_addf(a, "%u", def->cpus);
        strv_add(a, "-m");
        strv_addf(a, "%" PRIu64 "M", def->memory >> 20);

        /* The sandbox denies obsolete system calls, process spawning and
         * resource control changes. It also denies set*uid unless QEMU has
         * to drop to 'run_as' itself: that happens after the filter is in
         * place, and once every id is the unprivileged user's there is no
         * way back to root anyway. */
        strv_add(a, "-sandbox");
        strv_addf(a, "on,obsolete=deny,elevateprivileges=%s,spawn=deny,resourcecontrol=deny",
                  l->run_as ? "allow" : "deny");
        if (l->run_as) {
                strv_add(a, "-runas");
                strv_add(a, l->run_as);
        }

        strv_add(a, "-display");
        strv_add(a, "none");

        if (def->disk) {
                strv_add(a, "-drive");
                strv_addf(a, "file=%s,format=%s,if=virtio,id=disk0,cache=writeback,discard=unmap", disk,
                          def->disk_format);
        }
        strv_add(a, "-drive");
        if (def->cdrom)
                strv_addf(a, "if=none,id=%s-media,media=cdrom,readonly=on,file=%s,format=raw", VM_CDROM_DEVICE_ID, cdrom);
        else
                strv_addf(a, "if=none,id=%s-media,media=cdrom,readonly=on", VM_CDROM_DEVICE_ID);
        strv_add(a, "-device");
        strv_addf(a, "ide-cd,drive=%s-media,id=%s,bus=ide.1,unit=0", VM_CDROM_DEVICE_ID, VM_CDROM_DEVICE_ID);
        strv_add(a, "-boot");
        strv_add(a, def->boot == VM_BOOT_CDROM ? "order=d" : "order=c");
        if (def->boot == VM_BOOT_KERNEL) {
                strv_add(a, "-kernel");
                strv_add(a, def->kernel);
                if (def->initrd) {
                        strv_add(a, "-initrd");
                        strv_add(a, def->initrd);
                }
                if (def->append) {
                        strv_add(a, "-append");
                        strv_add(a, def->append);
                }
        }

        for (unsigned i = 0; i < def->n_nics; i++) {
                const struct vm_nic *nic = &def->nics[i];
                if (!nic->mac[0])
                        return vh_error_set(err, -EINVAL, "NIC %u of VM %s has no MAC allocated", i, def->name);
                if (streq(nic->network, VM_NET_USER)) {
                        _cleanup_free_ char *netdev = strdup_printf("user,id=net%u", i);
                        if (!netdev)
                                return -ENOMEM;
                        /* Forwards go to the first user-mode NIC. */
                        for (unsigned f = 0; nic == vm_def_user_nic(def) && f < def->n_forwards; f++) {
                                const struct vm_forward *fw = &def->forwards[f];
                                uint16_t host = fw->host_port ? fw->host_port : l->host_ports[f];
                                if (host == 0)
                                        return vh_error_set(err, -EINVAL, "Forward %u of VM %s has no host port allocated",
                                                            f, def->name);
                                char *n = strdup_printf("%s,hostfwd=%s:127.0.0.1:%u-:%u", netdev,
                                                        fw->proto == VM_FWD_UDP ? "udp" : "tcp", host, fw->guest_port);
                                if (!n)
                                        return -ENOMEM;
                                free(netdev);
                                netdev = n;
                        }
                        strv_add(a, "-netdev");
                        strv_add(a, netdev);
                } else if (l->nics[i].user_subnet) {
                        strv_add(a, "-netdev");
                        strv_addf(a, "user,id=net%u,net=%s", i, l->nics[i].user_subnet);
                } else {
                        const struct vm_launch_nic *ln = &l->nics[i];
                        if (!ln->tap)
                                return vh_error_set(err, -EINVAL, "NIC %u of VM %s (network %s) has no tap attached", i,
                                                    def->name, nic->network);
                        strv_add(a, "-netdev");
                        strv_addf(a, "tap,id=net%u,ifname=%s,script=no,downscript=no", i, ln->tap);
                }
                strv_add(a, "-device");
                bool no_offload = !streq(nic->network, VM_NET_USER) && l->nics[i].disable_offload;
                if (nic->model == VM_NIC_E1000)
                        strv_addf(a, "e1000,netdev=net%u,mac=%s", i, nic->mac);
                else
                        strv_addf(a, "virtio-net-pci,netdev=net%u,mac=%s%s", i, nic->mac,
                                  no_offload ? ",csum=off,guest_csum=off" : "");
        }

        if (def->vnc) {
                /* -nodefaults leaves no display adapter; VNC needs one. */
                strv_add(a, "-vga");
                strv_add(a, "std");
                /* password=on on both kinds: until vmhost sets a password
                 * through QMP (set_password) QEMU lets nobody in, and a
                 * one-time password is what guards the relay 'vm vnc'
                 * opens on 127.0.0.1 in front of the unix socket. */
                strv_add(a, "-vnc");
                if (def->vnc == VM_VNC_UNIX) {
                        if (!l->vnc_socket)
                                return vh_error_set(err, -EINVAL, "VM %s has no VNC socket path", def->name);
                        _cleanup_free_ char *vnc = qemu_opt_escape(l->vnc_socket);
                        if (!vnc)
                                return -ENOMEM;
                        strv_addf(a, "unix:%s,password=on", vnc);
                } else
                        strv_addf(a, "%s:%u,password=on", def->vnc_host, def->vnc_display);
        }

        strv_add(a, "-chardev");
        strv_addf(a, "socket,id=serial0,path=%s,server=on,wait=off,logfile=%s,logappend=on", serial, serial_log);
        strv_add(a, "-serial");
        strv_add(a, "chardev:serial0");
        strv_add(a, "-chardev");
        strv_addf(a, "socket,id=qmp0,path=%s,server=on,wait=off", qmp);
        strv_add(a, "-mon");
        strv_add(a, "chardev=qmp0,mode=control");

        if (def->localtime) {
                strv_add(a, "-rtc");
                strv_add(a, "base=localtime");
        }
        if (l->pidfile) {
                strv_add(a, "-pidfile");
                strv_add(a, l->pidfile);
        }
        if (l->daemonize)
                strv_add(a, "-daemonize");

        return a->error;
}
