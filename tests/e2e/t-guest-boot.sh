#!/bin/bash
# tests/e2e/t-guest-boot.sh: end-to-end test of the test guest made by
# tools/mkguest: the build and its cache, then boots under bare QEMU (TCG):
#   direct   -kernel/-initrd/-append with a static address, console round trip
#   disk     disk.qcow2 through MBR + syslinux (-boot c), DHCP from user-mode NAT,
#            greeting read through a host forward; the cached base stays untouched
#   iso      guest.iso through isolinux (-cdrom -boot d), no NIC (DHCP must not hang)
#   counter  vmhost.counter=1 prints increasing CNT lines
# Prints PASS/FAIL per check and the measured boot times; exit 0 only if all pass.
# Env: VMHOST_GUEST_DIR=DIR uses (and if needed builds) that shared guest cache
#      instead of a private cold build; E2E_KEEP=1 keeps the temp dir on failure.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init guest-boot
need qemu-system-x86_64 qemu-img python3

BOOT_TIMEOUT=120
READY_RE='VMHOST-READY name=[^ ]+ ip=[^ ]+ uptime=[0-9.]+'
TIMES=()

# ------------------------------------------------------------------ build
if [ -n "${VMHOST_GUEST_DIR:-}" ]; then
	GDIR=$VMHOST_GUEST_DIR
	t=$(e2e_now)
	if out=$("$ROOT/tools/mkguest" --out "$GDIR" 2>&1); then
		pass build-shared "$(e2e_elapsed "$t") s: $(tail -n 1 <<<"$out")"
	else
		echo "$out"; fail build-shared "tools/mkguest --out $GDIR failed"; e2e_finish
	fi
else
	GDIR=$E2E_TMP/guest
	t=$(e2e_now)
	if out=$("$ROOT/tools/mkguest" --out "$GDIR" 2>&1); then
		TIMES+=("build cold: $(e2e_elapsed "$t") s")
		pass build-cold "$(e2e_elapsed "$t") s"
		while IFS= read -r l; do echo "    $l"; done <<<"$out"
	else
		echo "$out"; fail build-cold "tools/mkguest failed"; e2e_finish
	fi
	stamp_before=$(cat "$GDIR/stamp")
	t=$(e2e_now)
	out=$("$ROOT/tools/mkguest" --out "$GDIR" 2>&1) || true
	if grep -q 'up to date' <<<"$out" && [ "$(cat "$GDIR/stamp")" = "$stamp_before" ]; then
		TIMES+=("build cached: $(e2e_elapsed "$t") s")
		pass build-cached "$(e2e_elapsed "$t") s: $out"
	else
		fail build-cached "second run did not report 'up to date': $out"
	fi
	t=$(e2e_now)
	if out=$("$ROOT/tools/mkguest" --force --out "$GDIR" 2>&1) && grep -q '^mkguest: built' <<<"$out" &&
	   ! compgen -G "$E2E_TMP/.guest.tmp.*" >/dev/null; then
		pass build-force "rebuilt in $(e2e_elapsed "$t") s, no temp dir left"
	else
		echo "$out"; fail build-force "--force rebuild failed or left a temp dir"
	fi
fi

for a in vmlinuz initrd.img disk.qcow2 guest.iso manifest.json stamp; do
	[ -s "$GDIR/$a" ] || { fail artifacts "missing $GDIR/$a"; e2e_finish; }
done
if python3 - "$GDIR" <<'EOF'
import json, os, sys
d = sys.argv[1]
m = json.load(open(os.path.join(d, 'manifest.json')))
assert m['cmdline'] == 'console=ttyS0 quiet panic=-1 no_timer_check vmhost.net=dhcp vmhost.tcp=7777', m['cmdline']
assert m['kernel_version'] and m['ready_prefix'] == 'VMHOST-READY '
for key in ('kernel', 'initrd', 'disk', 'iso'):
    a = m['artifacts'][key]
    assert os.path.getsize(os.path.join(d, a['file'])) == a['size'], key
EOF
then pass manifest; else fail manifest "manifest.json invalid (see above)"; fi

if out=$(qemu-img check -f qcow2 "$GDIR/disk.qcow2" 2>&1); then
	pass qcow2-check "$(grep -o 'No errors were found' <<<"$out" || true)"
else
	echo "$out"; fail qcow2-check "qemu-img check failed"
fi

# ------------------------------------------------------------------ boots
# boot NAME QEMU-ARGS...: start QEMU, wait for the ready line; sets READY,
# records the wall-clock time. Returns 1 (after dumping logs) on failure.
boot() {
	local name=$1; shift
	qemu_start "$name" "$@"
	local rc=0
	READY=$(wait_for_line "$E2E_TMP/$name.log" "$READY_RE" "$BOOT_TIMEOUT" "$QEMU_PID" 2>/dev/null) || rc=$?
	if [ "$rc" = 0 ]; then
		local wall; wall=$(e2e_elapsed "$QEMU_T0")
		TIMES+=("boot $name: $wall s wall to ready (guest ${READY##* })")
		pass "boot-$name" "ready after $wall s: $READY"
		return 0
	fi
	if [ "$rc" = 2 ]; then
		fail "boot-$name" "QEMU exited after $(e2e_elapsed "$QEMU_T0") s without a ready line"
	else
		fail "boot-$name" "no ready line within ${BOOT_TIMEOUT}s"
	fi
	qemu_dump "$name"
	stop_pid "$QEMU_PID"
	return 1
}

# one_ready NAME: the contract is exactly one ready line per boot.
one_ready() {
	local n; n=$(grep -ac 'VMHOST-READY' "$E2E_TMP/$1.log" || true)
	if [ "$n" = 1 ]; then pass "one-ready-$1"; else fail "one-ready-$1" "$n ready lines"; fi
}

# (a) direct kernel boot, static address, console round trip
if boot direct -kernel "$GDIR/vmlinuz" -initrd "$GDIR/initrd.img" \
	-append "console=ttyS0 quiet panic=-1 no_timer_check vmhost.name=direct vmhost.ip=10.0.2.15/24 vmhost.gw=10.0.2.2" \
	-netdev user,id=n0,restrict=on -device virtio-net-pci,netdev=n0; then
	if grep -q 'name=direct ip=10.0.2.15 ' <<<"$READY"; then pass direct-static-ip; else fail direct-static-ip "$READY"; fi
	t=$(e2e_now)
	# shellcheck disable=SC2016 # expanded by the guest's shell
	if out=$(serial_cmd "$E2E_TMP/direct.sock" 20 'echo $((6*7))') && [ "$out" = 42 ]; then
		pass direct-console "echo \$((6*7)) -> $out in $(e2e_elapsed "$t") s"
	else
		fail direct-console "expected 42, got '${out:-}'"
	fi
	rc=0; serial_cmd "$E2E_TMP/direct.sock" 20 'exit 3' >/dev/null || rc=$?
	if [ "$rc" = 3 ]; then pass direct-console-status; else fail direct-console-status "exit 3 gave $rc"; fi
	if out=$(serial_cmd "$E2E_TMP/direct.sock" 20 'ip -4 -o addr show dev eth0; cat /sys/class/net/eth0/operstate') &&
	   grep -q '10.0.2.15/24' <<<"$out"; then
		pass direct-eth0
	else
		fail direct-eth0 "$out"
	fi
	one_ready direct
	stop_pid "$QEMU_PID"
fi

# (b) disk image through its own bootloader; user-mode NAT, DHCP, host forward
base_sum=$(sha256sum < "$GDIR/disk.qcow2")
PORT=$(free_port)
if boot disk -drive file="$GDIR/disk.qcow2",format=qcow2,if=virtio,snapshot=on -boot c \
	-netdev user,id=n0,hostfwd=tcp:127.0.0.1:"$PORT"-:7777 -device virtio-net-pci,netdev=n0; then
	if grep -qE 'name=guest ip=10\.0\.2\.[0-9]+ ' <<<"$READY"; then pass disk-dhcp; else fail disk-dhcp "$READY"; fi
	if grep -aq 'SYSLINUX' "$E2E_TMP/disk.log"; then pass disk-syslinux; else fail disk-syslinux "no SYSLINUX banner on the console"; fi
	t=$(e2e_now)
	if out=$(tcp_read_line 127.0.0.1 "$PORT" 20) && [ "$out" = "vmhost-guest guest hello" ]; then
		pass disk-tcp-hello "127.0.0.1:$PORT -> '$out' in $(e2e_elapsed "$t") s"
	else
		fail disk-tcp-hello "expected 'vmhost-guest guest hello', got '${out:-}'"
	fi
	if out=$(serial_cmd "$E2E_TMP/disk.sock" 20 'cat /proc/cmdline') &&
	   grep -q 'console=ttyS0 quiet panic=-1 no_timer_check vmhost.net=dhcp vmhost.tcp=7777' <<<"$out"; then
		pass disk-cmdline
	else
		fail disk-cmdline "${out:-}"
	fi
	one_ready disk
	stop_pid "$QEMU_PID"
fi
if [ "$(sha256sum < "$GDIR/disk.qcow2")" = "$base_sum" ]; then pass disk-base-untouched; else fail disk-base-untouched "disk.qcow2 changed"; fi

# (c) ISO through isolinux, no NIC: the default command line asks for DHCP,
# which must be skipped without eth0
if boot iso -cdrom "$GDIR/guest.iso" -boot d; then
	if grep -q 'name=guest ip=none ' <<<"$READY"; then pass iso-no-nic; else fail iso-no-nic "$READY"; fi
	if grep -aq 'ISOLINUX' "$E2E_TMP/iso.log"; then pass iso-isolinux; else fail iso-isolinux "no ISOLINUX banner on the console"; fi
	one_ready iso
	stop_pid "$QEMU_PID"
fi

# (d) counter mode
if boot counter -kernel "$GDIR/vmlinuz" -initrd "$GDIR/initrd.img" \
	-append "console=ttyS0 quiet panic=-1 no_timer_check vmhost.name=counter vmhost.counter=1"; then
	if wait_for_line "$E2E_TMP/counter.log" '^CNT 15' 30 "$QEMU_PID" >/dev/null; then
		if seq_out=$(grep -aoE '^CNT [0-9]+' "$E2E_TMP/counter.log" | awk '
			{ n = $2 + 0; if (NR > 1 && n != prev + 1) bad++; prev = n; cnt++ }
			END { printf "%d lines, last %d, %d gaps\n", cnt, prev, bad; exit bad > 0 || cnt < 16 }'); then
			pass counter "$seq_out"
		else
			fail counter "CNT not increasing by 1: $seq_out"
		fi
	else
		fail counter "no 'CNT 15' line"
		qemu_dump counter
	fi
	one_ready counter
	stop_pid "$QEMU_PID"
fi

echo "== times"
for t in "${TIMES[@]}"; do echo "  $t"; done
e2e_finish
