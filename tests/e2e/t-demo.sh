#!/usr/bin/env bash
# The README's first command in a private vmhost home: tools/demo makes the
# VM 'demo' as an overlay on the guest disk (created by vmhost's own image
# code), boots it through the disk's bootloader with user-mode NAT and a
# forwarded port, and waits for the ready line. Then: the command it prints
# for the guest's TCP service works here, the README's quote of its output
# is true, the forwarded port reaches the guest's TCP service, the overlay
# is what QEMU expects.
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
	grep -qE "^  guest service:  .*127\.0\.0\.1.*[0-9]+" "$E2E_TMP/demo.out" && pass demo-prints-how-to-reach ||
	fail demo-prints-how-to-reach

# The hint for the guest service is a command that works on this machine:
# run as printed, it shows the guest's greeting.
reach=$(sed -n 's/^  guest service:  \(.*[^ ]\)      (user-mode NAT.*/\1/p' "$E2E_TMP/demo.out")
if [ -n "$reach" ] && out=$(timeout 20 bash -c "$reach" </dev/null 2>&1) && grep -qE '^vmhost-guest [^ ]+ hello$' <<<"$out"; then
	pass demo-hint-works "'$reach' -> '$out'"
else
	fail demo-hint-works "'$reach' -> '${out:-}'"
fi
# The README quotes the demo's last lines (PORT for the port number, the
# build's path for vmhost): each must be what the demo printed. The guest
# service line names nc, which deps/packages.txt installs; without it the
# demo names another client (checked just above).
sed -n "/^The VM 'demo' is running.\$/,/^\`\`\`\$/p" "$here/../../README.md" | sed '$d' >"$E2E_TMP/readme.lines"
missing=()
while IFS= read -r line; do
	case $line in *"guest service:  nc "*) command -v nc >/dev/null || continue ;; esac
	line=${line//build\/src\/cli\/vmhost/$VMHOST}
	port_re='[0-9]+'
	pat=$(printf '%s' "$line" | sed -e 's/[][\.*^$()|+?{}]/\\&/g')
	pat=${pat//PORT/$port_re}
	grep -qxE -- "$pat" "$E2E_TMP/demo.out" || missing+=("$line")
done <"$E2E_TMP/readme.lines"
if [ "$(wc -l <"$E2E_TMP/readme.lines")" -ge 4 ] && [ ${#missing[@]} -eq 0 ]; then
	pass readme-output-true "$(wc -l <"$E2E_TMP/readme.lines") lines of README.md found in the demo's output"
else
	fail readme-output-true "not printed: ${missing[*]:-} (README lines: $(wc -l <"$E2E_TMP/readme.lines"))"
fi

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
