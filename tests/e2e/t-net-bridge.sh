#!/usr/bin/env bash
# tests/e2e/t-net-bridge.sh: a vmhost Linux-bridge network end to end, in a
# network namespace playing the host and one playing the internet
# (203.0.113.0/24, with no route back to the VMs' subnet):
#   - 'vmhost net create --dhcp --nat --uplink' and attach makes the bridge,
#     the gateway, taps named after the VMs, dnsmasq and the masquerade
#   - two TCG guests get DHCP leases; the one with a reservation gets its
#     fixed address; each reaches the other's TCP service
#   - a guest reaches a TCP server in the "internet" through masquerade (the
#     server sees the host's uplink address); nft rules outside vmhost's own
#     table are the same before, during and after; ip_forward goes 0 -> 1 -> 0
#   - delete is refused while VMs are attached; a NIC whose QEMU was killed
#     is detached cleanly; after delete no link, nft table or dnsmasq is left
# shellcheck disable=SC2154 # PID_name, TAP_name, rc: set through eval and in traps
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init net-bridge
source "$here/vmhost-env.sh"
need python3 ip nft dnsmasq socat qemu-system-x86_64
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (network namespaces)"; exit 77; }
if [ ! -e "$GUEST_DIR/vmlinuz" ]; then "$VMHOST" guest build >/dev/null || { fail guest-build; e2e_finish; }; fi

H=vhnb-h$$ I=vhnb-i$$
NETNS=()
ns_add() { ip netns add "$1" && NETNS+=("$1") && ip netns exec "$1" ip link set lo up; }
vh() { ip netns exec "$H" "$VMHOST" "$@"; }
net_cleanup() {
	local i p
	for ((i = ${#E2E_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${E2E_PIDS[i]}"; done
	E2E_PIDS=()
	for v in vm1 vm2; do vh net detach lan "$v" >/dev/null 2>&1; done
	vh net delete lan >/dev/null 2>&1
	# Whatever vmhost could not stop: its own dnsmasq, found by our pid file.
	for p in "$VMHOST_HOME"/run/networks/*/dnsmasq.pid; do
		[ -f "$p" ] && grep -q "$VMHOST_HOME" "/proc/$(cat "$p")/cmdline" 2>/dev/null && kill "$(cat "$p")"
	done
	for ns in "${NETNS[@]}"; do ip netns del "$ns" 2>/dev/null; done
}
trap 'rc=$?; net_cleanup; (exit $rc); e2e_cleanup' EXIT

# QEMU must run in the namespace that owns its tap: a wrapper first in PATH.
mkdir -p "$E2E_TMP/qemu-$H"
printf '#!/bin/sh\nexec ip netns exec %s /usr/bin/qemu-system-x86_64 "$@"\n' "$H" >"$E2E_TMP/qemu-$H/qemu-system-x86_64"
chmod +x "$E2E_TMP/qemu-$H/qemu-system-x86_64"
# boot NAME TAP MAC [DEVICE-OPTS]: a guest asking for DHCP; sets PID_NAME.
boot() {
	local name=$1 tap=$2 mac=$3 extra=${4:-}
	PATH="$E2E_TMP/qemu-$H:$PATH" qemu_start "$name" -kernel "$GUEST_DIR/vmlinuz" -initrd "$GUEST_DIR/initrd.img" \
		-append "console=ttyS0 quiet panic=-1 no_timer_check vmhost.name=$name vmhost.net=dhcp vmhost.tcp=7777" \
		-netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" -device "virtio-net-pci,netdev=n0,mac=$mac$extra"
	eval "PID_$name=$QEMU_PID"
}
# nft ruleset without vmhost's table (stateless: no counter values).
foreign_rules() {
	ip netns exec "$H" nft -s list ruleset | awk '
		/^table ip vmhost \{/ { skip = 1; next }
		skip && /^\}/ { skip = 0; next }
		!skip'
}

ns_add "$H"; ns_add "$I"
ip link add uplink netns "$H" type veth peer name eth0 netns "$I"
ip -n "$I" addr add 203.0.113.1/24 dev eth0; ip -n "$I" link set eth0 up
ip -n "$H" addr add 203.0.113.2/24 dev uplink; ip -n "$H" link set uplink up
ip -n "$H" route add default via 203.0.113.1
# Someone else's nftables rules on the host, which vmhost must not touch.
ip netns exec "$H" nft -f - <<'EOF'
table inet someone_else {
	chain filter_forward {
		type filter hook forward priority filter; policy accept;
		ct state established,related accept
	}
}
EOF
RULES_BEFORE=$(foreign_rules)
grep -q someone_else <<<"$RULES_BEFORE" || { fail foreign-table "could not set up the foreign nft table"; e2e_finish; }
# A new namespace may inherit forwarding from the host (devconf_inherit_init_net);
# start from 0 so that "switched on" and "restored" mean something.
ip netns exec "$H" sysctl -qw net.ipv4.ip_forward=0
FWD_BEFORE=$(ip netns exec "$H" cat /proc/sys/net/ipv4/ip_forward)
[ "$FWD_BEFORE" = 0 ] || { fail ip-forward-off-at-start "$FWD_BEFORE"; e2e_finish; }
# The "internet": a TCP server that answers with the address it saw.
ip netns exec "$I" socat TCP-LISTEN:8080,bind=203.0.113.1,reuseaddr,fork SYSTEM:'echo peer=$SOCAT_PEERADDR' &
track_pid $!

# ------------------------------------------------------------------ create, attach
if out=$(vh net create lan --type bridge --subnet 10.61.0.0/24 --dhcp --nat --uplink uplink 2>&1); then
	pass create "$out"
else
	fail create "$out"; e2e_finish
fi
t=$(e2e_now)
if att1=$(vh net attach lan vm1 --mac 52:54:00:3d:00:01 --ip 10.61.0.42 --json 2>&1) &&
   att2=$(vh net attach lan vm2 --mac 52:54:00:3d:00:02 --json 2>&1); then
	pass attach "two taps in $(e2e_elapsed "$t") s (network started by the first attach)"
else
	fail attach "$att1 $att2"; e2e_finish
fi
TAP1=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["tap"])' <<<"$att1")
TAP2=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["tap"])' <<<"$att2")
[ "$TAP1" = vh-vm1-0 ] && [ "$TAP2" = vh-vm2-0 ] && pass tap-names "$TAP1 $TAP2" || fail tap-names "$TAP1 $TAP2"
if [ "$(ip -n "$H" -j link show "$TAP1" | python3 -c 'import json,sys; print(json.load(sys.stdin)[0].get("master"))')" = vb-lan ]; then
	pass tap-on-bridge
else
	fail tap-on-bridge "$(ip -n "$H" link show "$TAP1")"
fi
if ip -n "$H" -4 addr show dev vb-lan | grep '10.61.0.1/24' >/dev/null; then pass gateway-address; else fail gateway-address; fi
HOSTS=$VMHOST_HOME/run/networks/lan/dnsmasq.hosts
if grep -qx '52:54:00:3d:00:01,10.61.0.42,vm1' "$HOSTS" &&
   grep -qx "dhcp-hostsfile=$HOSTS" "$VMHOST_HOME/run/networks/lan/dnsmasq.conf" &&
   grep -q '^no-ping$' "$VMHOST_HOME/run/networks/lan/dnsmasq.conf"; then
	pass dnsmasq-config "reservation in the hosts file, no-ping"
else
	fail dnsmasq-config "$(cat "$VMHOST_HOME/run/networks/lan/dnsmasq.conf")"
fi
[ "$(ip netns exec "$H" cat /proc/sys/net/ipv4/ip_forward)" = 1 ] && pass ip-forward-on "was $FWD_BEFORE" || fail ip-forward-on
if [ "$(foreign_rules)" = "$RULES_BEFORE" ] && ip netns exec "$H" nft list table ip vmhost | grep 'masquerade' >/dev/null; then
	pass nft-own-table "other tables unchanged"
else
	fail nft-own-table "$(ip netns exec "$H" nft list ruleset)"
fi

# ------------------------------------------------------------------ guests
boot vm1 "$TAP1" 52:54:00:3d:00:01
boot vm2 "$TAP2" 52:54:00:3d:00:02
for v in vm1 vm2; do
	eval "pid=\$PID_$v"
	if line=$(wait_for_line "$E2E_TMP/$v.log" "VMHOST-READY name=$v ip=[^ ]+" 120 "$pid"); then
		eval "READY_$v=\$line"
		pass "boot-$v" "$line after $(e2e_elapsed "$QEMU_T0") s"
	else
		fail "boot-$v"; qemu_dump "$v"; e2e_finish
	fi
done
ip2=$(grep -o 'ip=[0-9.]*' <<<"$READY_vm2" | cut -d= -f2)
if grep -q 'ip=10.61.0.42 ' <<<"$READY_vm1"; then pass dhcp-reserved "vm1 got its fixed 10.61.0.42"; else fail dhcp-reserved "$READY_vm1"; fi
case "$ip2" in 10.61.0.1[2-9][0-9]|10.61.0.2[0-5][0-9]) pass dhcp-pool "vm2 got $ip2 from the pool" ;; *) fail dhcp-pool "vm2: $ip2" ;; esac
if grep -q '10.61.0.42 vm1' "$VMHOST_HOME/run/networks/lan/dnsmasq.leases"; then pass lease-file; else fail lease-file "$(cat "$VMHOST_HOME/run/networks/lan/dnsmasq.leases")"; fi

# VM to VM over TCP, both ways, and the host to a VM
if out=$(serial_cmd "$E2E_TMP/vm2.sock" 20 'timeout 5 nc 10.61.0.42 7777') && [ "$out" = "vmhost-guest vm1 hello" ]; then
	pass tcp-vm2-to-vm1 "$out"
else
	fail tcp-vm2-to-vm1 "${out:-}"
fi
if out=$(serial_cmd "$E2E_TMP/vm1.sock" 20 "timeout 5 nc $ip2 7777") && [ "$out" = "vmhost-guest vm2 hello" ]; then
	pass tcp-vm1-to-vm2 "$out"
else
	fail tcp-vm1-to-vm2 "${out:-}"
fi
if out=$(ip netns exec "$H" bash -c "$(declare -f tcp_read_line); tcp_read_line 10.61.0.42 7777 10") &&
   [ "$out" = "vmhost-guest vm1 hello" ]; then
	pass tcp-host-to-vm1 "$out"
else
	fail tcp-host-to-vm1 "${out:-}"
fi
if out=$(serial_cmd "$E2E_TMP/vm1.sock" 20 'nslookup vm1.lan 10.61.0.1 | grep -A2 vm1.lan') && grep -q 10.61.0.42 <<<"$out"; then
	pass dns-name "vm1.lan resolves to 10.61.0.42"
else
	fail dns-name "${out:-}"
fi

# ------------------------------------------------------------------ NAT
if out=$(serial_cmd "$E2E_TMP/vm1.sock" 20 'timeout 5 nc 203.0.113.1 8080') && [ "$out" = "peer=203.0.113.2" ]; then
	pass nat-tcp "the internet saw $out (masqueraded)"
else
	fail nat-tcp "${out:-}"
fi
if ip netns exec "$H" nft list table ip vmhost | grep -E 'counter packets [1-9]' >/dev/null; then
	pass nat-counter "$(ip netns exec "$H" nft list table ip vmhost | grep -o 'counter packets [0-9]* bytes [0-9]*')"
else
	fail nat-counter
fi
if [ "$(foreign_rules)" = "$RULES_BEFORE" ]; then pass nft-foreign-unchanged-running; else fail nft-foreign-unchanged-running; fi

# ------------------------------------------------------------------ in use, crash, teardown
if out=$(vh net delete lan 2>&1); then fail delete-refused "$out"; elif grep -q 'in use by vm1, vm2\|in use by vm2, vm1' <<<"$out"; then pass delete-refused "$out"; else fail delete-refused "$out"; fi
# vm2's QEMU dies; detach must still clean up its tap
kill -9 "$PID_vm2"; wait "$PID_vm2" 2>/dev/null
if vh net detach lan vm2 >/dev/null && ! ip -n "$H" link show "$TAP2" >/dev/null 2>&1 &&
   vh net detach lan vm2 >/dev/null; then
	pass detach-after-kill "tap gone; detaching again is fine"
else
	fail detach-after-kill
fi
# vm1's reservation stays while vm1 is attached, and goes with its port.
CONF=$VMHOST_HOME/run/networks/lan/dnsmasq.conf
if grep -qx '52:54:00:3d:00:01,10.61.0.42,vm1' "$HOSTS" && ! grep -q 'vm2' "$HOSTS"; then
	pass reservations-follow-ports "vm1's reservation kept after vm2's detach"
else
	fail reservations-follow-ports "$(cat "$HOSTS" 2>&1)"
fi
stop_pid "$PID_vm1"
dnsmasq_pid=$(cat "$VMHOST_HOME/run/networks/lan/dnsmasq.pid" 2>/dev/null)
[ -n "$dnsmasq_pid" ] && kill -0 "$dnsmasq_pid" 2>/dev/null && pass dnsmasq-running-before-delete "pid $dnsmasq_pid" ||
	fail dnsmasq-running-before-delete "pid '${dnsmasq_pid}'"
vh net detach lan vm1 >/dev/null
if [ -e "$HOSTS" ] && ! grep -q '52:54:00:3d:00:01' "$HOSTS" &&
   [ "$(cat "$VMHOST_HOME/run/networks/lan/dnsmasq.pid" 2>/dev/null)" = "$dnsmasq_pid" ]; then
	pass reservation-gone-with-port "the same dnsmasq $dnsmasq_pid re-read its hosts file"
else
	fail reservation-gone-with-port "$(cat "$HOSTS" 2>&1)"
fi
if out=$(vh net delete lan 2>&1); then pass delete "$out"; else fail delete "$out"; fi
left=$(ip -n "$H" -o link show | grep -oE ' (vb-|vh-|vt-)[^:@]*' || true)
[ -z "$left" ] && pass no-links-left || fail no-links-left "$left"
if ip netns exec "$H" nft list table ip vmhost >/dev/null 2>&1; then fail no-nft-table-left; else pass no-nft-table-left; fi
if [ "$(foreign_rules)" = "$RULES_BEFORE" ]; then pass nft-foreign-unchanged-after; else fail nft-foreign-unchanged-after "$(foreign_rules)"; fi
if [ -n "$dnsmasq_pid" ] && kill -0 "$dnsmasq_pid" 2>/dev/null && grep -q "$VMHOST_HOME" "/proc/$dnsmasq_pid/cmdline" 2>/dev/null; then
	fail no-dnsmasq-left "pid $dnsmasq_pid"
else
	pass no-dnsmasq-left "dnsmasq ${dnsmasq_pid:-?} gone"
fi
[ "$(ip netns exec "$H" cat /proc/sys/net/ipv4/ip_forward)" = "$FWD_BEFORE" ] && pass ip-forward-restored "$FWD_BEFORE" || fail ip-forward-restored
[ ! -e "$VMHOST_HOME/run/networks/lan" ] && pass runtime-dir-removed || fail runtime-dir-removed "$(ls -la "$VMHOST_HOME/run/networks/lan")"
e2e_finish
