#!/usr/bin/env bash
# VMs on a vmhost bridge network, inside a namespace host: 'vm create --net'
# NICs get taps at start (named after the VM), DHCP from vmhost's dnsmasq
# (a reserved address for one), VM-to-VM TCP through the bridge; taps
# vanish at stop and after a QEMU crash; the network cannot be deleted
# while a VM uses it; after delete nothing is left.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init vm-net
source "$here/vmhost-env.sh"
need python3 ip dnsmasq
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (network namespaces)"; exit 77; }

H=vhvn-h$$
ip netns add "$H" && ip -n "$H" link set lo up
vh() { ip netns exec "$H" "$VMHOST" "$@"; }
cleanup_ns() {
	local n
	for n in a1 a2; do vh vm stop "$n" --timeout 5 >/dev/null 2>&1; done
	vh net delete lan >/dev/null 2>&1
	ip netns del "$H" 2>/dev/null
}
trap 'rc=$?; cleanup_ns; (exit $rc); e2e_cleanup' EXIT

KARGS=(--boot kernel --kernel "$GUEST_DIR/vmlinuz" --initrd "$GUEST_DIR/initrd.img" --vnc none)
vh net create lan --type bridge --subnet 10.62.0.0/24 --dhcp >/dev/null && pass net-create || fail net-create
vh vm create a1 "${KARGS[@]}" --net lan --append "console=ttyS0 quiet panic=-1 no_timer_check vmhost.name=a1 vmhost.net=dhcp" >/dev/null &&
	vh vm create a2 "${KARGS[@]}" --net lan,ip=10.62.0.77 --append "console=ttyS0 quiet panic=-1 no_timer_check vmhost.name=a2 vmhost.net=dhcp" >/dev/null &&
	pass vm-create-on-network || fail vm-create-on-network

vh vm start a1 >/dev/null && vh vm start a2 >/dev/null && pass start-both || fail start-both
br=$(vh net show lan --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["bridge"])')
taps=$(ip -n "$H" -o link show master "$br" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | sort | tr '\n' ' ')
[ "$taps" = "vh-a1-0 vh-a2-0 " ] && pass taps-on-bridge "$br: $taps" || fail taps-on-bridge "$br: '$taps'"
w1=$(wait_for_line "$VMHOST_HOME/vms/a1/serial.log" "VMHOST-READY" 120) && w2=$(wait_for_line "$VMHOST_HOME/vms/a2/serial.log" "VMHOST-READY" 120) &&
	pass both-ready "$w1 | $w2" || fail both-ready
ip_a1=$(sed -n 's/.* ip=\([0-9.]*\) .*/\1/p' <<<"$w1")
ip_a2=$(sed -n 's/.* ip=\([0-9.]*\) .*/\1/p' <<<"$w2")
[[ $ip_a1 == 10.62.0.* ]] && pass dhcp-lease "a1 got $ip_a1" || fail dhcp-lease "a1: $w1"
[ "$ip_a2" = 10.62.0.77 ] && pass dhcp-reservation "a2 got $ip_a2" || fail dhcp-reservation "a2: $w2"
out=$(serial_cmd "$VMHOST_HOME/run/vms/a1/serial.sock" 20 "echo | nc -w 3 $ip_a2 7777") 
[[ $out == *"a2 hello"* ]] && pass vm-to-vm-tcp "$out" || fail vm-to-vm-tcp "$out"
# A start that fails half-way (QEMU rejects the disk) leaves no tap and no
# runtime files behind. The disk is a qcow2 image at create (whose format
# is probed) and junk by the time of the start.
cp "$GUEST_DIR/disk.qcow2" "$E2E_TMP/junk.qcow2"
vh vm create a3 --disk "$E2E_TMP/junk.qcow2" --net lan --vnc none >/dev/null
head -c 1048576 /dev/urandom >"$E2E_TMP/junk.qcow2"
out=$(vh vm start a3 2>&1) && fail failed-start-cleans "started: $out" || {
	if ! ip -n "$H" link show vh-a3-0 >/dev/null 2>&1 && [ ! -e "$VMHOST_HOME/run/vms/a3" ] &&
		[ "$(vh vm status a3 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')" = stopped ]; then
		pass failed-start-cleans "$out"
	else
		fail failed-start-cleans "left: $(ip -n "$H" -o link | grep a3) $(ls "$VMHOST_HOME/run/vms/a3" 2>&1)"
	fi
}
if out=$(vh net delete lan 2>&1); then fail delete-refused-in-use "deleted while VMs run"
elif grep -q 'in use by' <<<"$out"; then pass delete-refused-in-use "$out"; else fail delete-refused-in-use "$out"; fi

# Stop removes the tap; a crash's tap goes at the next command.
vh vm stop a1 >/dev/null
ip -n "$H" link show vh-a1-0 >/dev/null 2>&1 && fail stop-removes-tap || pass stop-removes-tap
pid2=$(vh vm status a2 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')
kill -9 "$pid2"
wait_until 10 "exit of QEMU $pid2 after kill -9" pid_dead "$pid2"
[ "$(vh vm status a2 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')" = crashed ] &&
	! ip -n "$H" link show vh-a2-0 >/dev/null 2>&1 && pass crash-removes-tap || fail crash-removes-tap "$(ip -n "$H" -o link)"
vh net delete lan >/dev/null && pass net-delete || fail net-delete
left=$(ip -n "$H" -o link | grep -v ' lo:' || true)
[ -z "$left" ] && pass nothing-left || fail nothing-left "$left"
e2e_finish
