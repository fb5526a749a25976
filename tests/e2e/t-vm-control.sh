#!/usr/bin/env bash
# A running VM through QMP: 'monitor info status' says running, raw QMP,
# a PNG screenshot, CD eject/insert while running (the guest mounts the
# inserted ISO, and no longer can after the eject), snapshots of the full
# machine (savevm/loadvm) that undo a file written after them, disk
# snapshots while stopped (the disk's internal qcow2 snapshot, seen by
# qemu-img), the graceful stop through the ACPI button, kill and restart.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init vm-control
source "$here/vmhost-env.sh"
trap 'vmhost_cleanup_vms; e2e_cleanup' EXIT
need python3 qemu-img

"$VMHOST" vm create c1 --base "$GUEST_DIR/disk.qcow2" --disk-size 64M >/dev/null && pass create || fail create
"$VMHOST" vm start c1 --wait --timeout 120 >/dev/null && pass start || { fail start; e2e_finish; }
S=$VMHOST_HOME/run/vms/c1/serial.sock
DISK=$VMHOST_HOME/vms/c1/disk.qcow2

out=$("$VMHOST" vm monitor c1 'info status')
[ "$out" = "VM status: running" ] && pass monitor-info-status "$out" || fail monitor-info-status "$out"
out=$("$VMHOST" vm qmp c1 '{"execute":"query-status"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
[ "$out" = running ] && pass qmp-query-status || fail qmp-query-status "$out"
out=$("$VMHOST" vm qmp c1 '{"execute":"no-such-command"}' 2>&1) && fail qmp-error || {
	[[ $out == *CommandNotFound* ]] && pass qmp-error "$out" || fail qmp-error "$out"; }
"$VMHOST" vm qmp c1 '{"execute":"query-status"}{"execute":"quit"}' >/dev/null 2>&1 && fail qmp-one-command-only || pass qmp-one-command-only
"$VMHOST" vm screenshot c1 "$E2E_TMP/screen.png" >/dev/null &&
	[ "$(head -c 8 "$E2E_TMP/screen.png" | od -An -tx1 | tr -d ' ')" = 89504e470d0a1a0a ] && pass screenshot-png "$(stat -c %s "$E2E_TMP/screen.png") bytes" || fail screenshot-png
# The VNC socket vmhost names is QEMU's VNC server, which wants a password
# (no session set one: VNC authentication is all it offers, and fails).
vnc=$("$VMHOST" vm vnc c1 --print)
rfb=$(python3 "$here/rfb.py" --unix "$vnc" 2>&1); rc=$?
[ "$vnc" = "$(vm_json c1 vnc socket)" ] && [ $rc = 4 ] && [[ $rfb == *"security types [2]"* ]] &&
	pass vnc-endpoint "$vnc: $rfb" || fail vnc-endpoint "$vnc: rc $rc '$rfb'"

# CD while running: insert, the guest's drive has media; eject.
# QEMU (unprivileged) gets the ISO as a file descriptor vmhost opened.
"$VMHOST" vm cdrom c1 insert "$GUEST_DIR/guest.iso" >/dev/null &&
	"$VMHOST" vm monitor c1 'info block cd0-media' | grep -q "cd0-media.*/dev/fdset/.*read-only" &&
	[ "$(vm_json c1 cdrom)" = "$(readlink -f "$GUEST_DIR/guest.iso")" ] &&
	pass cdrom-insert || fail cdrom-insert "$("$VMHOST" vm monitor c1 'info block')"
# Inside the guest: its IDE CD drive (/dev/sr0, drivers loaded after the
# ready line) holds the ISO: mount it and list it. The first open after a
# media change fails (EINVAL) while Linux takes note of the new disc, so
# the mount is tried up to 5 times.
cd_ls='n=0; while [ ! -b /dev/sr0 ] && [ $n -lt 150 ]; do usleep 100000; n=$((n+1)); done; mkdir -p /mnt/cd; for i in 1 2 3 4 5; do if mount -t iso9660 -o ro /dev/sr0 /mnt/cd 2>/tmp/mount.err; then ls /mnt/cd; umount /mnt/cd; exit 0; fi; usleep 200000; done; cat /tmp/mount.err; exit 1'
out=$(serial_cmd "$S" 30 "$cd_ls")
[[ $out == *vmlinuz* && $out == *isolinux* ]] && pass cdrom-guest-reads "the guest mounted /dev/sr0: $(echo $out)" ||
	fail cdrom-guest-reads "$out"
"$VMHOST" vm cdrom c1 eject >/dev/null && "$VMHOST" vm monitor c1 'info block cd0-media' | grep -q "not inserted" &&
	[ -z "$(vm_json c1 cdrom)" ] && pass cdrom-eject || fail cdrom-eject "$("$VMHOST" vm monitor c1 'info block cd0-media')"
out=$(serial_cmd "$S" 30 "$cd_ls" 2>&1)
rc=$?
[ $rc -ne 0 ] && [[ $out == *"No medium found"* ]] && pass cdrom-guest-ejected "$(echo $out | tail -c 120)" ||
	fail cdrom-guest-ejected "rc $rc: $out"

# Full machine snapshot: a file written after it is gone after revert.
serial_cmd "$S" 10 "echo before > /tmp/marker" >/dev/null
"$VMHOST" vm snapshot create c1 live1 >/dev/null && pass snapshot-create-running || fail snapshot-create-running
# The write after the snapshot must have happened, or the revert proves nothing.
out=$(serial_cmd "$S" 10 "echo after > /tmp/marker; echo x > /tmp/written-after; cat /tmp/marker")
[ "$out" = after ] && pass written-after-snapshot || fail written-after-snapshot "$out"
"$VMHOST" vm snapshot revert c1 live1 >/dev/null && pass snapshot-revert-running || fail snapshot-revert-running
out=$(serial_cmd "$S" 10 "cat /tmp/marker; test -e /tmp/written-after && echo STILL-THERE")
[ "$out" = before ] && pass revert-undoes-file "$out" || fail revert-undoes-file "$out"
"$VMHOST" vm snapshot list c1 | grep -q live1 && "$VMHOST" vm monitor c1 'info snapshots' | grep -q live1 &&
	pass snapshot-list "vmhost and QEMU's 'info snapshots' list it" || fail snapshot-list
# A snapshot that does not exist: refused before QEMU is asked (HMP's
# loadvm pauses the guest first and leaves it paused when the snapshot
# is missing; delvm of a missing one says nothing), the guest runs on.
out=$("$VMHOST" vm snapshot revert c1 nosuch 2>&1); rc=$?
st=$("$VMHOST" vm qmp c1 '{"execute":"query-status"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
[ $rc -eq 1 ] && grep -q "no snapshot named 'nosuch'" <<<"$out" && [ "$st" = running ] &&
	pass snapshot-revert-missing-runs-on "$out" || fail snapshot-revert-missing-runs-on "exit $rc, guest $st: $out"
out=$("$VMHOST" vm snapshot delete c1 nosuch 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "no snapshot named 'nosuch'" <<<"$out" && pass snapshot-delete-missing-refused "$out" ||
	fail snapshot-delete-missing-refused "exit $rc: $out"

# Graceful stop: the guest sees the ACPI button and powers off.
t0=$(e2e_now)
out=$("$VMHOST" vm stop c1)
[[ $out == *"guest powered off"* ]] && pass stop-acpi "$out in $(e2e_elapsed "$t0") s" || fail stop-acpi "$out"

# Disk snapshot while stopped: bytes written after it are undone.
"$VMHOST" vm start c1 --wait >/dev/null
serial_cmd "$S" 10 "echo disk-v1 | dd of=/dev/vda bs=1M seek=40 conv=fsync 2>/dev/null" >/dev/null
"$VMHOST" vm stop c1 >/dev/null
"$VMHOST" vm snapshot create c1 disk1 >/dev/null && qemu-img snapshot -l "$DISK" | grep -q disk1 &&
	pass snapshot-create-stopped "qemu-img lists it" || fail snapshot-create-stopped "$(qemu-img snapshot -l "$DISK")"
"$VMHOST" vm start c1 --wait >/dev/null
out=$(serial_cmd "$S" 10 "echo disk-v2 | dd of=/dev/vda bs=1M seek=40 conv=fsync 2>/dev/null; dd if=/dev/vda bs=1M skip=40 count=1 2>/dev/null | head -1")
[ "$out" = disk-v2 ] && pass disk-written-after-snapshot || fail disk-written-after-snapshot "$out"
"$VMHOST" vm kill c1 | grep -q "QEMU quit" && pass kill || fail kill
[ "$(vm_json c1 state)" = stopped ] && [ -z "$(vm_json c1 exit-reason)" ] && pass kill-not-a-crash ||
	fail kill-not-a-crash "$("$VMHOST" vm status c1)"
"$VMHOST" vm snapshot revert c1 disk1 >/dev/null && pass snapshot-revert-stopped || fail snapshot-revert-stopped
qemu-img check "$DISK" >/dev/null 2>&1 && pass disk-check-clean || fail disk-check-clean "$(qemu-img check "$DISK" 2>&1 | tail -3)"
"$VMHOST" vm start c1 --wait >/dev/null
out=$(serial_cmd "$S" 10 "dd if=/dev/vda bs=1M skip=40 count=1 2>/dev/null | head -1")
[ "$out" = disk-v1 ] && pass disk-revert-undoes-write "$out" || fail disk-revert-undoes-write "$out"
pid0=$(vm_json c1 pid)
"$VMHOST" vm restart c1 --wait >/dev/null && [ "$(vm_json c1 state)" = running ] && [ -n "$pid0" ] &&
	[ "$(vm_json c1 pid)" != "$pid0" ] && pass restart "QEMU pid $pid0 -> $(vm_json c1 pid)" || fail restart
# A stop under way that waits out the guest's grace time (its acpid is
# gone, so the button does nothing): status and list answer at once, say
# the VM is busy being stopped and by which process, and still running.
out=$(serial_cmd "$S" 10 "killall acpid; echo acpid-gone")
"$VMHOST" vm stop c1 --timeout 4 >"$E2E_TMP/bstop.out" 2>&1 &
bpid=$!
c1_busy_stopping() { [ "$(vm_json c1 busy)" = stopped ]; }
wait_until 5 "the stop to hold the lock of c1" c1_busy_stopping
t0=$(e2e_now)
"$VMHOST" vm list --json >"$E2E_TMP/busy.json"
dt=$(e2e_elapsed "$t0")
if [ "$out" = acpid-gone ] && python3 - "$E2E_TMP/busy.json" "$bpid" <<'EOF2' && awk -v t="$dt" 'BEGIN { exit !(t < 1) }' &&
import json, sys
v = [v for v in json.load(open(sys.argv[1])) if v["name"] == "c1"][0]
assert v["state"] == "running" and v["busy"] == "stopped" and v["busy-pid"] == int(sys.argv[2]), v
EOF2
	"$VMHOST" vm status c1 | grep -qx "busy: *being stopped by pid $bpid"; then
	pass busy-while-stopping "list in $dt s: running, busy being stopped by pid $bpid"
else
	fail busy-while-stopping "guest: '$out'; list in $dt s: $(cat "$E2E_TMP/busy.json"); status: $("$VMHOST" vm status c1)"
fi
wait "$bpid"
grep -q "QEMU quit" "$E2E_TMP/bstop.out" && [ "$(vm_json c1 state)" = stopped ] && [ -z "$(vm_json c1 busy)" ] &&
	pass busy-stop-done "$(cat "$E2E_TMP/bstop.out")" || fail busy-stop-done "$(cat "$E2E_TMP/bstop.out")"
"$VMHOST" vm start c1 --wait >/dev/null || fail start-after-busy-stop
# Deleted, as QEMU itself lists the snapshots of the running VM.
"$VMHOST" vm snapshot delete c1 live1 >/dev/null && info=$("$VMHOST" vm monitor c1 'info snapshots') &&
	! grep -q live1 <<<"$info" && pass snapshot-delete-running || fail snapshot-delete-running "$info"
"$VMHOST" vm stop c1 >/dev/null
"$VMHOST" vm snapshot create c1 'bad name' >/dev/null 2>&1 && fail snapshot-bad-name || pass snapshot-bad-name
"$VMHOST" vm monitor c1 'info status' >/dev/null 2>&1 && fail monitor-stopped || pass monitor-stopped
e2e_finish
