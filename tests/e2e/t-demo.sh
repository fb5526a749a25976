#!/usr/bin/env bash
# The README's first command in a private vmhost home: tools/demo makes the
# VM 'demo' as an overlay on the guest disk (created by vmhost's own image
# code), boots it through the disk's bootloader with user-mode NAT and a
# forwarded port, and waits for the ready line. Then: the forwarded port
# reaches the guest's TCP service, the overlay is what QEMU expects.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init demo
source "$here/vmhost-env.sh"
trap 'vmhost_cleanup_vms; e2e_cleanup' EXIT
need qemu-img python3

t0=$(e2e_now)
if VMHOST=$VMHOST "$here/../../tools/demo" >"$E2E_TMP/demo.out" 2>&1; then
	pass demo-ready "$(grep -o 'VMHOST-READY.*' "$E2E_TMP/demo.out") after $(e2e_elapsed "$t0") s"
else
	fail demo-ready "tools/demo failed"
	cat "$E2E_TMP/demo.out"
	tail -c 1500 "$VMHOST_HOME/vms/demo/serial.log" 2>/dev/null
	e2e_finish
fi
cat "$E2E_TMP/demo.out"

grep -q "vm console demo" "$E2E_TMP/demo.out" && grep -q "vm stop demo" "$E2E_TMP/demo.out" &&
	grep -qE "nc 127.0.0.1 [0-9]+" "$E2E_TMP/demo.out" && pass demo-prints-how-to-reach ||
	fail demo-prints-how-to-reach

port=$(vm_json demo forwards 0 host-port)
if line=$(tcp_read_line 127.0.0.1 "$port" 30); then
	case $line in
	*hello*) pass forward-reaches-guest-service "127.0.0.1:$port -> '$line'" ;;
	*) fail forward-reaches-guest-service "unexpected answer '$line'" ;;
	esac
else
	fail forward-reaches-guest-service "nothing on 127.0.0.1:$port"
fi

# The overlay: made by vmhost, backed by the guest disk, clean for qemu-img
# (-U: QEMU holds its lock while the VM runs).
info=$(qemu-img info -U --output=json "$VMHOST_HOME/vms/demo/disk.qcow2")
bf=$(echo "$info" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("full-backing-filename",""))')
[ "$bf" = "$(readlink -f "$GUEST_DIR")/disk.qcow2" ] && pass overlay-backed-by-guest-disk "$bf" ||
	fail overlay-backed-by-guest-disk "backing '$bf'"

# Running again reports the running VM instead of failing.
VMHOST=$VMHOST "$here/../../tools/demo" >"$E2E_TMP/demo2.out" 2>&1 && grep -q "already running" "$E2E_TMP/demo2.out" &&
	pass demo-idempotent || fail demo-idempotent "$(cat "$E2E_TMP/demo2.out")"

"$VMHOST" vm stop demo >/dev/null && [ "$(vm_json demo state)" = stopped ] && pass demo-stops || fail demo-stops
qemu-img check "$VMHOST_HOME/vms/demo/disk.qcow2" >"$E2E_TMP/check.out" 2>&1 && pass overlay-check-clean ||
	fail overlay-check-clean "$(cat "$E2E_TMP/check.out")"
e2e_finish
