#!/usr/bin/env bash
# Install from CD as the tutorial does: an empty disk, the ISO attached,
# boot from cdrom; the "installer" (the guest's shell on the serial
# console) fetches a bootable system over user-mode NAT (10.0.2.2 is the
# host's loopback) and writes it to its disk; then 'vm set boot=disk
# cdrom=none' and the VM boots from its disk through the bootloader.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init vm-install
source "$here/vmhost-env.sh"
trap 'vmhost_cleanup_vms; e2e_cleanup' EXIT
need python3 qemu-img

# What the installer will fetch: the guest's bootable disk, as raw.
mkdir -p "$E2E_TMP/www"
qemu-img convert -f qcow2 -O raw "$GUEST_DIR/disk.qcow2" "$E2E_TMP/www/system.raw"
size=$(stat -c %s "$E2E_TMP/www/system.raw")
port=$(free_port)
python3 -m http.server "$port" --bind 127.0.0.1 --directory "$E2E_TMP/www" >"$E2E_TMP/http.log" 2>&1 &
track_pid $!

"$VMHOST" img create -f qcow2 "$E2E_TMP/inst.qcow2" 64M >/dev/null && pass empty-disk || fail empty-disk
"$VMHOST" vm create inst --disk "$E2E_TMP/inst.qcow2" --cdrom "$GUEST_DIR/guest.iso" --boot cdrom >/dev/null &&
	pass create-with-cdrom || fail create-with-cdrom
t0=$(e2e_now)
if out=$("$VMHOST" vm start inst --wait --timeout 120 2>&1); then
	pass boot-from-cdrom "$(grep -o 'VMHOST-READY.*' <<<"$out") after $(e2e_elapsed "$t0") s"
else
	fail boot-from-cdrom "$out"; e2e_finish
fi
sock=$VMHOST_HOME/run/vms/inst/serial.sock
serial_cmd "$sock" 10 "cat /sys/block/vda/size" >"$E2E_TMP/vda" 2>&1
[ "$(tail -1 "$E2E_TMP/vda")" = 131072 ] && pass installer-sees-empty-disk "vda 64 MiB" || fail installer-sees-empty-disk "$(cat "$E2E_TMP/vda")"

t0=$(e2e_now)
# Written, then read back from the disk and compared with the host's copy.
want=$(md5sum <"$E2E_TMP/www/system.raw" | cut -d' ' -f1)
if serial_cmd "$sock" 180 "wget -q -O - http://10.0.2.2:$port/system.raw | dd of=/dev/vda bs=1M conv=fsync 2>/dev/null; sync; echo 3 > /proc/sys/vm/drop_caches; head -c $size /dev/vda | md5sum" >"$E2E_TMP/install" 2>&1 &&
	grep -q "^$want " "$E2E_TMP/install"; then
	pass install-to-disk "$size bytes in $(e2e_elapsed "$t0") s, read back with md5 $want"
else
	fail install-to-disk "$(cat "$E2E_TMP/install")"
fi
"$VMHOST" vm stop inst >/dev/null && pass stop-after-install || fail stop-after-install
"$VMHOST" vm set inst boot=disk cdrom=none >/dev/null && pass set-boot-disk || fail set-boot-disk
[ "$(vm_json inst boot)" = disk ] && [ -z "$(vm_json inst cdrom)" ] && pass definition-updated || fail definition-updated

t0=$(e2e_now)
log_size=$(stat -c %s "$VMHOST_HOME/vms/inst/serial.log")
if out=$("$VMHOST" vm start inst --wait --timeout 120 2>&1); then
	pass boot-from-installed-disk "$(grep -o 'VMHOST-READY.*' <<<"$out") after $(e2e_elapsed "$t0") s"
else
	fail boot-from-installed-disk "$out"; tail -c 1500 "$VMHOST_HOME/vms/inst/serial.log"
fi
# The installed system came up through the disk's bootloader, not the CD:
# the console of this boot (the log is appended to) shows SYSLINUX, not ISOLINUX.
this_boot=$(tail -c +$((log_size + 1)) "$VMHOST_HOME/vms/inst/serial.log" | tr -d '\0')
grep -q SYSLINUX <<<"$this_boot" && ! grep -q ISOLINUX <<<"$this_boot" && pass booted-via-disk-bootloader ||
	fail booted-via-disk-bootloader "$(grep -aoE '(ISO|SYS)LINUX[^\r]*' <<<"$this_boot" | head -3)"
"$VMHOST" vm stop inst >/dev/null
qemu-img check "$E2E_TMP/inst.qcow2" >/dev/null 2>&1 && pass disk-clean || fail disk-clean
e2e_finish
