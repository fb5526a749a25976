#!/usr/bin/env bash
# What a new user trips over (issue 10, item 5): a raw disk is recorded as
# raw (probed) and boots; a --disk-format the file contradicts is refused at
# create, naming both formats; --cpu host without usable KVM is refused at
# create, at set and at start (a hand-edited definition) naming TCG and
# suggesting --cpu max, and doctor's nested line says so too; 'vm monitor
# NAME' without a command is an interactive prompt (driven through a pty)
# that leaves the VM running on Ctrl-D; 'vm status' and 'vm list' show the
# guest's user-mode NAT address.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init vm-newuser
source "$here/vmhost-env.sh"
trap 'vmhost_cleanup_vms; e2e_cleanup' EXIT
need python3 qemu-img

# expect_error DESC PATTERN... -- CMD...: CMD must fail, and its output match
# every PATTERN (extended regex).
expect_error() {
	local desc=$1 out pats=(); shift
	while [ "$1" != -- ]; do pats+=("$1"); shift; done
	shift
	if out=$("$@" 2>&1); then
		fail "$desc" "succeeded: $out"
		return
	fi
	for p in "${pats[@]}"; do
		grep -qE -- "$p" <<<"$out" || { fail "$desc" "no '$p' in: $out"; return; }
	done
	pass "$desc" "$out"
}
conf_key() { sed -n "s/^$2 = //p" "$VMHOST_HOME/vms/$1/vm.conf"; }

# ---- disk format ----
RAW=$E2E_TMP/disk.raw
qemu-img convert -O raw "$GUEST_DIR/disk.qcow2" "$RAW"
"$VMHOST" vm create r1 --disk "$RAW" --vnc none >/dev/null && [ "$(conf_key r1 disk-format)" = raw ] &&
	pass raw-disk-recorded-raw || fail raw-disk-recorded-raw "disk-format = $(conf_key r1 disk-format)"
t0=$(e2e_now)
out=$("$VMHOST" vm start r1 --wait --timeout 180 2>&1) && pass raw-disk-boots "$(grep -o 'VMHOST-READY.*' <<<"$out") after $(e2e_elapsed "$t0") s" ||
	fail raw-disk-boots "$out"
expect_error raw-disk-as-qcow2-refused "is raw" "qcow2" -- "$VMHOST" vm create r2 --disk "$RAW" --disk-format qcow2 --vnc none
[ ! -e "$VMHOST_HOME/vms/r2" ] && pass refused-create-leaves-nothing || fail refused-create-leaves-nothing "$(ls "$VMHOST_HOME/vms/r2")"
expect_error qcow2-disk-as-raw-refused "is qcow2" "raw" -- "$VMHOST" vm create r2 --disk "$GUEST_DIR/disk.qcow2" --disk-format raw --vnc none
"$VMHOST" vm create r3 --disk "$RAW" --disk-format raw --vnc none >/dev/null && [ "$(conf_key r3 disk-format)" = raw ] &&
	pass explicit-raw-accepted || fail explicit-raw-accepted
"$VMHOST" vm create q1 --disk "$GUEST_DIR/disk.qcow2" --vnc none >/dev/null && [ "$(conf_key q1 disk-format)" = qcow2 ] &&
	pass qcow2-disk-recorded-qcow2 || fail qcow2-disk-recorded-qcow2
expect_error set-format-contradicting-refused "is raw" "qcow2" -- "$VMHOST" vm set r3 disk-format=qcow2
[ "$(conf_key r3 disk-format)" = raw ] && pass refused-set-keeps-definition || fail refused-set-keeps-definition
"$VMHOST" vm set r3 disk="$GUEST_DIR/disk.qcow2" >/dev/null && [ "$(conf_key r3 disk-format)" = qcow2 ] &&
	pass set-disk-reprobes || fail set-disk-reprobes "disk-format = $(conf_key r3 disk-format)"
expect_error disk-format-bad-value "qcow2 or raw" -- "$VMHOST" vm create r4 --disk "$RAW" --disk-format vmdk --vnc none

# ---- interactive monitor, through a pty ----
# r1 runs (the raw disk above). The script types 'info status', recalls it
# with the up arrow (history), runs a one-shot 'vm monitor' from outside
# while the prompt is open (the socket is not held), and leaves with Ctrl-D.
if [ "$(vm_json r1 state)" = running ]; then
	out=$(timeout 60 python3 - "$VMHOST" r1 <<'PY' 2>&1
import os, pty, select, subprocess, sys, time
vmhost, name = sys.argv[1:]
pid, fd = pty.fork()
if pid == 0:
    os.execv(vmhost, [vmhost, "vm", "monitor", name])
buf = b""
def expect(what, timeout=20):
    global buf
    end = time.time() + timeout
    while what.encode() not in buf:
        left = end - time.time()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise SystemExit("timeout waiting for %r; got %r" % (what, buf[-400:]))
        try:
            data = os.read(fd, 4096)
        except OSError:
            raise SystemExit("monitor ended waiting for %r; got %r" % (what, buf[-400:]))
        buf += data
    i = buf.index(what.encode()) + len(what)
    seen, buf = buf[:i], buf[i:]
    return seen
expect("(qemu) ")
os.write(fd, b"info status\r")
expect("VM status: running"); expect("(qemu) ")
print("typed: VM status: running")
os.write(fd, b"\x1b[A\r")          # up arrow: the previous line again
expect("VM status: running"); expect("(qemu) ")
print("history: VM status: running")
other = subprocess.run([vmhost, "vm", "monitor", name, "info status"], capture_output=True, text=True, timeout=20)
if "VM status: running" not in other.stdout:
    raise SystemExit("one-shot monitor while the prompt is open: %r %r" % (other.stdout, other.stderr))
print("one-shot beside the prompt: ok")
os.write(fd, b"\x04")              # Ctrl-D
expect("Left the monitor")
_, status = os.waitpid(pid, 0)
if os.waitstatus_to_exitcode(status) != 0:
    raise SystemExit("exit status %d" % os.waitstatus_to_exitcode(status))
print("Ctrl-D: left, exit 0")
PY
)
	rc=$?
	[ $rc -eq 0 ] && pass monitor-interactive "$(tr '\n' ';' <<<"$out")" || fail monitor-interactive "$out"
	[ "$(vm_json r1 state)" = running ] && out=$("$VMHOST" vm monitor r1 'info status') && [[ $out == *"VM status: running"* ]] &&
		pass vm-runs-after-monitor "$out" || fail vm-runs-after-monitor "state $(vm_json r1 state)"
	# Piped commands work without a terminal; 'quit' leaves, QEMU stays.
	out=$(printf 'info status\nquit\ninfo status\n' | timeout 20 "$VMHOST" vm monitor r1 2>&1)
	[ "$(grep -c 'VM status: running' <<<"$out")" = 1 ] && [ "$(vm_json r1 state)" = running ] &&
		pass monitor-piped-quit-leaves "$out" || fail monitor-piped-quit-leaves "$out; state $(vm_json r1 state)"
else
	fail monitor-interactive "r1 is not running"
fi
expect_error monitor-stopped-vm "is not running" -- "$VMHOST" vm monitor q1

# ---- CPU model host without KVM ----
accel=$("$VMHOST" doctor --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["accelerator"])')
KARGS=(--boot kernel --kernel "$GUEST_DIR/vmlinuz" --initrd "$GUEST_DIR/initrd.img" --vnc none)
if [ "$accel" = kvm ]; then
	# KVM works here: 'host' must be accepted; the TCG case is still
	# testable with --accel tcg.
	"$VMHOST" vm create c0 "${KARGS[@]}" --cpu host >/dev/null && pass cpu-host-with-kvm-accepted || fail cpu-host-with-kvm-accepted
	TCG=(--accel tcg)
else
	TCG=()
fi
expect_error cpu-host-refused-at-create "CPU model 'host' needs KVM" "TCG" "--cpu max" -- \
	"$VMHOST" vm create c1 "${KARGS[@]}" "${TCG[@]}" --cpu host
[ ! -e "$VMHOST_HOME/vms/c1" ] && pass cpu-refused-create-leaves-nothing || fail cpu-refused-create-leaves-nothing
"$VMHOST" vm create c1 "${KARGS[@]}" "${TCG[@]}" --cpu max >/dev/null && pass cpu-max-accepted || fail cpu-max-accepted
expect_error cpu-host-refused-at-set "CPU model 'host' needs KVM" "TCG" "--cpu max" -- "$VMHOST" vm set c1 cpu=host
[ "$(conf_key c1 cpu)" = max ] && pass cpu-refused-set-keeps-definition || fail cpu-refused-set-keeps-definition
sed -i 's/^cpu = max$/cpu = host/' "$VMHOST_HOME/vms/c1/vm.conf"
expect_error cpu-host-refused-at-start "CPU model 'host' needs KVM" "TCG" "--cpu max" -- "$VMHOST" vm start c1
st=$(vm_json c1 state)
[ "$st" = stopped ] && [ ! -e "$VMHOST_HOME/run/vms/c1/qmp.sock" ] && pass cpu-refused-start-nothing-runs "state $st" ||
	fail cpu-refused-start-nothing-runs "state $st"
if [ "$accel" != kvm ]; then
	line=$("$VMHOST" doctor | grep '^nested ')
	grep -q "TCG" <<<"$line" && grep -q -- "--cpu max" <<<"$line" && pass doctor-nested-says-cpu-max "$line" ||
		fail doctor-nested-says-cpu-max "$line"
fi
e2e_finish
