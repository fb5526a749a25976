#!/usr/bin/env bash
# QEMU gets its files as descriptors vmhost opened, never by path: as root,
# QEMU drops to its own user (-runas), which cannot enter the 0700
# directories that hold this VM's overlay, its read-only (0444) base, its
# CD and its kernel. The VM still boots, writes its disk, takes and reverts
# snapshots, gets a CD from a 0700 directory, and a commit into a base in a
# 0700 directory works. QEMU's command line names none of the paths (only
# /dev/fdset/N and /proc/self/fd/N), QEMU holds each file of the chain open,
# and the shared base only read-only. A migration's hand-over of the disks
# (released when it completes, taken back at 'cont') works, which needs a
# reopen. A missing backing file is a clear error at start.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init vm-fdpass
source "$here/vmhost-env.sh"
trap 'vmhost_cleanup_vms; e2e_cleanup' EXIT
need python3 qemu-img
if [ "$(id -u)" != 0 ]; then
	echo "SKIP: needs root (QEMU runs as vmhost's QEMU user only when started by root)"
	exit 77
fi

# Directories only root may enter, one per file, as a user's would be.
BASEDIR=$E2E_TMP/base-dir DISKDIR=$E2E_TMP/disk-dir ISODIR=$E2E_TMP/iso-dir KDIR=$E2E_TMP/kernel-dir
mkdir -m 0700 "$BASEDIR" "$DISKDIR" "$ISODIR" "$KDIR"
BASE=$BASEDIR/base.qcow2 DISK=$DISKDIR/disk.qcow2 ISO=$ISODIR/guest.iso
cp "$GUEST_DIR/disk.qcow2" "$BASE" && chmod 0444 "$BASE"
qemu-img create -q -f qcow2 -F qcow2 -b "$BASE" "$DISK" 64M
cp "$GUEST_DIR/guest.iso" "$ISO"
cp "$GUEST_DIR/vmlinuz" "$GUEST_DIR/initrd.img" "$KDIR/"
base_sum=$(sha256sum <"$BASE")

# qemu_fds PID PATH: the access modes (ro, rw) of QEMU's descriptors of PATH.
qemu_fds() {
	local fd
	for fd in /proc/"$1"/fd/*; do
		[ "$(readlink "$fd")" = "$2" ] || continue
		case $(($(awk '/^flags:/ { print "0" $2 }' /proc/"$1"/fdinfo/"${fd##*/}") & 3)) in
		0) echo ro ;; 2) echo rw ;; *) echo other ;;
		esac
	done | sort | tr '\n' ' '
}
cmdline() { tr '\0' ' ' </proc/"$1"/cmdline; }

"$VMHOST" vm create f1 --disk "$DISK" --memory 256M >/dev/null && pass create || fail create
if out=$("$VMHOST" vm start f1 --wait --timeout 120 2>&1); then
	pass start-ready "disk and base in 0700 directories, base 0444"
else
	fail start-ready "$out"; tail -c 1000 "$VMHOST_HOME/vms/f1/qemu.log"; e2e_finish
fi
S=$VMHOST_HOME/run/vms/f1/serial.sock
pid=$(vm_json f1 pid)
user=$(ps -o user= -p "$pid")
[ "$user" != root ] && pass qemu-unprivileged "QEMU runs as $user" || fail qemu-unprivileged "QEMU runs as $user"
cl=$(cmdline "$pid")
[[ $cl != *"$DISKDIR"* && $cl != *"$BASEDIR"* && $cl == *"/dev/fdset/"* ]] &&
	pass cmdline-no-disk-path "$(grep -o -- '-blockdev [^ ]*' <<<"$cl" | head -4 | tr '\n' ' ')" ||
	fail cmdline-no-disk-path "$cl"
top=$(qemu_fds "$pid" "$DISK") base=$(qemu_fds "$pid" "$BASE")
[[ $top == *rw* ]] && pass overlay-passed-as-fd "modes: $top" || fail overlay-passed-as-fd "modes: '$top'"
# The base is shared: QEMU can read it, never write it.
[[ -n $base && $base != *rw* ]] && pass base-passed-read-only "modes: $base" || fail base-passed-read-only "modes: '$base'"

# The disk's device is still the last on the PCI bus, after the NIC, where
# -drive if=virtio put it: an installed guest keeps its device names.
pci=$("$VMHOST" vm monitor f1 'info pci' | python3 -c 'import re, sys
slot = None
for line in sys.stdin:
    m = re.search(r"Bus +\d+, device +(\d+)", line)
    if m:
        slot = int(m.group(1))
    if "1af4:1000" in line: print("nic", slot)
    if "1af4:1001" in line: print("disk", slot)' | sort | tr '\n' ' ')
[[ $pci =~ disk\ ([0-9]+)\ nic\ ([0-9]+) ]] && [ "${BASH_REMATCH[1]}" -gt "${BASH_REMATCH[2]}" ] &&
	pass disk-last-on-pci "$pci" || fail disk-last-on-pci "$pci"

# The guest writes its disk; the base stays as it was.
out=$(serial_cmd "$S" 20 "echo fd-data-1 | dd of=/dev/vda bs=1M seek=40 conv=fsync 2>/dev/null; dd if=/dev/vda bs=1M skip=40 count=1 2>/dev/null | head -1")
[ "$out" = fd-data-1 ] && pass guest-writes-disk || fail guest-writes-disk "$out"

# Snapshot of the running machine, a write after it, revert: undone.
"$VMHOST" vm snapshot create f1 s1 >/dev/null && pass snapshot-create-running || fail snapshot-create-running
out=$(serial_cmd "$S" 20 "echo fd-data-2 | dd of=/dev/vda bs=1M seek=40 conv=fsync 2>/dev/null; dd if=/dev/vda bs=1M skip=40 count=1 2>/dev/null | head -1")
[ "$out" = fd-data-2 ] && pass written-after-snapshot || fail written-after-snapshot "$out"
"$VMHOST" vm snapshot revert f1 s1 >/dev/null && pass snapshot-revert-running || fail snapshot-revert-running
out=$(serial_cmd "$S" 20 "echo 3 > /proc/sys/vm/drop_caches; dd if=/dev/vda bs=1M skip=40 count=1 2>/dev/null | head -1")
[ "$out" = fd-data-1 ] && pass revert-undoes-write "$out" || fail revert-undoes-write "$out"

# A CD from a 0700 directory; the guest reads it.
cd_ls='n=0; while [ ! -b /dev/sr0 ] && [ $n -lt 150 ]; do usleep 100000; n=$((n+1)); done; mkdir -p /mnt/cd; for i in 1 2 3 4 5; do if mount -t iso9660 -o ro /dev/sr0 /mnt/cd 2>/tmp/mount.err; then ls /mnt/cd; umount /mnt/cd; exit 0; fi; usleep 200000; done; cat /tmp/mount.err; exit 1'
"$VMHOST" vm cdrom f1 insert "$ISO" >/dev/null && pass cdrom-insert || fail cdrom-insert
out=$(serial_cmd "$S" 30 "$cd_ls")
[[ $out == *vmlinuz* ]] && pass cdrom-guest-reads "$(echo $out)" || fail cdrom-guest-reads "$out"

# Block activation, the step of a migration that hands the disks over:
# when the migration completes (here into a sink that discards it) QEMU
# lets go of its disks, and 'cont' takes them back, as a destination does
# at the switch-over. Both may reopen the files.
port=$(free_port)
python3 -c 'import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(1)
open(sys.argv[2], "w").close()
c, _ = s.accept()
while c.recv(1 << 20):
    pass' "$port" "$E2E_TMP/sink-listens" &
track_pid $!
wait_until 20 "migration sink listening on port $port" test -e "$E2E_TMP/sink-listens"
"$VMHOST" vm qmp f1 "{\"execute\":\"migrate\",\"arguments\":{\"uri\":\"tcp:127.0.0.1:$port\"}}" >/dev/null
mig=
for _ in $(seq 300); do
	mig=$("$VMHOST" vm qmp f1 '{"execute":"query-migrate"}' | python3 -c 'import json,sys; print(json.load(sys.stdin).get("status"))')
	[ "$mig" = completed ] || [ "$mig" = failed ] && break
	sleep 0.1
done
[ "$mig" = completed ] && pass migrate-releases-disks || fail migrate-releases-disks "$mig: $(tail -2 "$VMHOST_HOME/vms/f1/qemu.log")"
"$VMHOST" vm qmp f1 '{"execute":"cont"}' >/dev/null
out=$("$VMHOST" vm qmp f1 '{"execute":"query-status"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
[ "$out" = running ] && pass cont-takes-disks-back || fail cont-takes-disks-back "$out: $(tail -2 "$VMHOST_HOME/vms/f1/qemu.log")"
out=$(serial_cmd "$S" 20 "echo fd-data-3 | dd of=/dev/vda bs=1M seek=41 conv=fsync 2>/dev/null; dd if=/dev/vda bs=1M skip=41 count=1 2>/dev/null | head -1")
[ "$out" = fd-data-3 ] && pass guest-writes-after-activation || fail guest-writes-after-activation "$out"
out=$(serial_cmd "$S" 30 "$cd_ls")
[[ $out == *vmlinuz* ]] && pass cdrom-after-activation || fail cdrom-after-activation "$out"
"$VMHOST" vm stop f1 >/dev/null

# Stopped: a disk snapshot (vmhost's own engine). The next start has the
# CD too, as a descriptor.
"$VMHOST" vm snapshot create f1 d1 >/dev/null && qemu-img snapshot -l "$DISK" | grep -q d1 &&
	pass snapshot-create-stopped || fail snapshot-create-stopped
"$VMHOST" vm start f1 --wait --timeout 120 >/dev/null && pass restart-with-cd || fail restart-with-cd
pid=$(vm_json f1 pid)
cl=$(cmdline "$pid")
[[ $cl != *"$ISODIR"* && -n $(qemu_fds "$pid" "$ISO") ]] && pass cdrom-at-start-as-fd "modes: $(qemu_fds "$pid" "$ISO")" ||
	fail cdrom-at-start-as-fd "$cl"
out=$(serial_cmd "$S" 30 "$cd_ls")
[[ $out == *vmlinuz* ]] && pass cdrom-at-start-guest-reads || fail cdrom-at-start-guest-reads "$out"
out=$(serial_cmd "$S" 20 "dd if=/dev/vda bs=1M skip=40 count=1 2>/dev/null | head -1")
[ "$out" = fd-data-1 ] && pass disk-kept-across-restart "$out" || fail disk-kept-across-restart "$out"
"$VMHOST" vm stop f1 >/dev/null
[ "$(sha256sum <"$BASE")" = "$base_sum" ] && pass base-untouched || fail base-untouched
qemu-img check -q "$DISK" && pass disk-check-clean || fail disk-check-clean
# QEMU knew the base only as /dev/fdset/N; the overlay's header must still
# name it by its path.
out=$(qemu-img info --output=json "$DISK" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("backing-filename"))')
[ "$out" = "$BASE" ] && pass header-keeps-backing-path "$out" || fail header-keeps-backing-path "$out"

# Commit: a VM on its own overlay over a base in a 0700 directory.
WBASE=$BASEDIR/writable-base.qcow2
cp "$GUEST_DIR/disk.qcow2" "$WBASE"
"$VMHOST" vm create f2 --base "$WBASE" --disk-size 64M >/dev/null
"$VMHOST" vm start f2 --wait --timeout 120 >/dev/null
S2=$VMHOST_HOME/run/vms/f2/serial.sock
serial_cmd "$S2" 20 "echo commit-data | dd of=/dev/vda bs=1M seek=40 conv=fsync 2>/dev/null" >/dev/null
"$VMHOST" vm stop f2 >/dev/null
"$VMHOST" vm commit f2 >/dev/null && pass commit || fail commit
"$VMHOST" vm start f2 --wait --timeout 120 >/dev/null
pid=$(vm_json f2 pid)
out=$(serial_cmd "$S2" 20 "dd if=/dev/vda bs=1M skip=40 count=1 2>/dev/null | head -1")
[ "$out" = commit-data ] && [[ $(cmdline "$pid") != *"$BASEDIR"* ]] && pass commit-seen-after-restart "$out" ||
	fail commit-seen-after-restart "$out"
"$VMHOST" vm stop f2 >/dev/null

# Direct kernel boot from a 0700 directory: kernel and initrd as descriptors.
"$VMHOST" vm create f3 --boot kernel --kernel "$KDIR/vmlinuz" --initrd "$KDIR/initrd.img" \
	--append "console=ttyS0 quiet panic=-1 vmhost.name=f3" --memory 256M >/dev/null
if "$VMHOST" vm start f3 --wait --timeout 120 >/dev/null 2>&1; then
	pid=$(vm_json f3 pid)
	cl=$(cmdline "$pid")
	[[ $cl != *"$KDIR"* && -n $(qemu_fds "$pid" "$KDIR/vmlinuz") && -n $(qemu_fds "$pid" "$KDIR/initrd.img") ]] &&
		pass kernel-as-fd "$(grep -o -- '-kernel [^ ]* -initrd [^ ]*' <<<"$cl")" || fail kernel-as-fd "$cl"
else
	fail kernel-as-fd "start failed: $(tail -3 "$VMHOST_HOME/vms/f3/qemu.log")"
fi
"$VMHOST" vm stop f3 >/dev/null

# A chain with a missing file: vmhost says which, QEMU is not started.
qemu-img create -q -f qcow2 -F qcow2 -b "$BASEDIR/gone.qcow2" -u "$DISKDIR/orphan.qcow2" 64M
"$VMHOST" vm create f4 --disk "$DISKDIR/orphan.qcow2" >/dev/null
out=$("$VMHOST" vm start f4 2>&1) && fail missing-backing-error "started: $out" ||
	{ [[ $out == *"disk of VM f4"*gone.qcow2* ]] && pass missing-backing-error "$out" || fail missing-backing-error "$out"; }
e2e_finish
