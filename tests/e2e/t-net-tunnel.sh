#!/usr/bin/env bash
# tests/e2e/t-net-tunnel.sh: one vmhost network on two "hosts" (network
# namespaces joined by veth pairs, each with its own vmhost home and its own
# ovsdb-server/ovs-vswitchd), a TCG guest on each:
#   ovs    the underlay NIC is moved into an OVS network with 'vmhost net
#          uplink' (the userspace datapath sends tunnel packets only through
#          an OVS bridge holding the underlay address), MTU 1600 there; then
#          a GRE tunnel, and after it a VXLAN tunnel, joins the VM networks:
#          the guests reach each other over TCP and a 512 KiB transfer moves
#          full-size (1500-byte MTU) frames; a tunnel whose route does not
#          leave through an OVS bridge is refused with the reason
#   bridge a Linux bridge network joined by kernel VXLAN over a 1500-byte
#          underlay: vmhost lowers the network MTU to 1450 and says why;
#          guests at that MTU move a 512 KiB transfer
#   after delete, no tunnel link or port is left
# shellcheck disable=SC2154 # PID_name, TAP_name, rc: set through eval and in traps
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init net-tunnel
source "$here/vmhost-env.sh"
need python3 ip ovs-vsctl ovsdb-server ovs-vswitchd ovsdb-tool qemu-system-x86_64
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (network namespaces)"; exit 77; }
if [ ! -e "$GUEST_DIR/vmlinuz" ]; then "$VMHOST" guest build >/dev/null || { fail guest-build; e2e_finish; }; fi

NETNS=()
VMS=()   # "HOST NET VM" triples to detach on exit
# vh N ARGS: vmhost on host N (its namespace, its home)
vh() { local n=$1; shift; VMHOST_HOME=$E2E_TMP/home$n ip netns exec "vhnt$n-$$" "$VMHOST" "$@"; }
ovsctl() { local n=$1; shift; ovs-vsctl --db=unix:"$E2E_TMP/ovs$n/db.sock" "$@"; }
net_cleanup() {
	local i p t
	for ((i = ${#E2E_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${E2E_PIDS[i]}"; done
	E2E_PIDS=()
	for t in "${VMS[@]}"; do set -- $t; vh "$1" net detach "$2" "$3" >/dev/null 2>&1; done
	for n in 1 2; do
		for net in lan klan phy; do vh $n net delete $net >/dev/null 2>&1; done
		for p in "$E2E_TMP"/home$n/run/networks/*/dnsmasq.pid; do
			[ -f "$p" ] && grep -q "$E2E_TMP" "/proc/$(cat "$p")/cmdline" 2>/dev/null && kill "$(cat "$p")"
		done
		for p in "$E2E_TMP"/ovs$n/ovs-vswitchd.pid "$E2E_TMP"/ovs$n/ovsdb-server.pid; do [ -f "$p" ] && stop_pid "$(cat "$p")"; done
	done
	for ns in "${NETNS[@]}"; do ip netns del "$ns" 2>/dev/null; done
}
trap 'rc=$?; net_cleanup; (exit $rc); e2e_cleanup' EXIT

# ------------------------------------------------------------------ two hosts
for n in 1 2; do
	ns=vhnt$n-$$
	ip netns add "$ns" && NETNS+=("$ns") && ip -n "$ns" link set lo up
	mkdir -p "$E2E_TMP/home$n"
	[ -n "${VMHOST_GUEST_DIR:-}" ] && ln -s "$VMHOST_GUEST_DIR" "$E2E_TMP/home$n/guest"
	d=$E2E_TMP/ovs$n
	mkdir -p "$d"
	ovsdb-tool create "$d/conf.db" /usr/share/openvswitch/vswitch.ovsschema
	OVS_RUNDIR=$d OVS_DBDIR=$d OVS_LOGDIR=$d ip netns exec "$ns" ovsdb-server "$d/conf.db" --remote=punix:"$d/db.sock" \
		--pidfile="$d/ovsdb-server.pid" --unixctl="$d/ovsdb-server.ctl" --log-file="$d/ovsdb-server.log" --detach
	ovsctl $n --no-wait init
	OVS_RUNDIR=$d OVS_DBDIR=$d OVS_LOGDIR=$d ip netns exec "$ns" ovs-vswitchd unix:"$d/db.sock" \
		--pidfile="$d/ovs-vswitchd.pid" --unixctl="$d/ovs-vswitchd.ctl" --log-file="$d/ovs-vswitchd.log" --detach 2>/dev/null
	ovsctl $n --timeout=10 set Open_vSwitch . external_ids:system-id="host$n" || { fail "ovs-host$n"; e2e_finish; }
	mkdir -p "$E2E_TMP/qemu$n"
	printf '#!/bin/sh\nexec ip netns exec %s /usr/bin/qemu-system-x86_64 "$@"\n' "$ns" >"$E2E_TMP/qemu$n/qemu-system-x86_64"
	chmod +x "$E2E_TMP/qemu$n/qemu-system-x86_64"
done
# underlay for OVS: a "NIC" with the host's address, as a real host has it
hosts_ok=1
ip link add veth-h1 netns vhnt1-$$ type veth peer name veth-h2 netns vhnt2-$$ || hosts_ok=0
# underlay for the Linux bridges: a second link, addresses on the veths themselves
ip link add kv-h1 netns vhnt1-$$ type veth peer name kv-h2 netns vhnt2-$$ || hosts_ok=0
for n in 1 2; do
	ns=vhnt$n-$$
	ip -n "$ns" addr add 172.16.0.$n/24 dev veth-h$n || hosts_ok=0
	ip -n "$ns" link set veth-h$n mtu 1600 up || hosts_ok=0
	ip -n "$ns" addr add 172.17.0.$n/24 dev kv-h$n || hosts_ok=0
	ip -n "$ns" link set kv-h$n up || hosts_ok=0
done
if [ $hosts_ok = 1 ]; then
	pass hosts "two namespaces, two OVS instances, two underlays"
else
	fail hosts "setting up the underlay links failed"; e2e_finish
fi

# boot HOST NAME NET APPEND ATTACH-ARGS...: attach through vmhost and boot
boot() {
	local n=$1 name=$2 net=$3 append=$4 mac att tap off; shift 4
	mac=$(printf '52:54:00:5e:%02x:%02x' "$n" "${#VMS[@]}")
	if ! att=$(vh "$n" net attach "$net" "$name" --mac "$mac" --json "$@" 2>&1); then
		fail "attach-$name" "$att"; return 1
	fi
	VMS+=("$n $net $name")
	tap=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["tap"])' <<<"$att")
	off=$(python3 -c 'import json,sys; print("yes" if json.load(sys.stdin)["disable_offload"] else "")' <<<"$att")
	PATH="$E2E_TMP/qemu$n:$PATH" qemu_start "$name" -kernel "$GUEST_DIR/vmlinuz" -initrd "$GUEST_DIR/initrd.img" \
		-append "console=ttyS0 quiet panic=-1 no_timer_check vmhost.name=$name vmhost.tcp=7777 $append" \
		-netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" \
		-device "virtio-net-pci,netdev=n0,mac=$mac${off:+,csum=off,guest_csum=off}"
	eval "PID_$name=$QEMU_PID"
}
wait_ready() {
	local name=$1 pid line
	eval "pid=\$PID_$name"
	if line=$(wait_for_line "$E2E_TMP/$name.log" "VMHOST-READY name=$name ip=[^ ]+" 120 "$pid"); then
		pass "boot-$name" "$line"
	else
		fail "boot-$name"; qemu_dump "$name"; return 1
	fi
}
# cross LABEL FROM TO-IP TO: TCP greeting and a 512 KiB transfer from TO to FROM
cross() {
	local label=$1 from=$2 ip=$3 to=$4 out t
	t=$(e2e_now)
	if out=$(serial_cmd "$E2E_TMP/$from.sock" 30 "timeout 20 nc $ip 7777") && [ "$out" = "vmhost-guest $to hello" ]; then
		pass "$label-tcp" "$from -> $to: '$out' in $(e2e_elapsed "$t") s"
	else
		fail "$label-tcp" "$from -> $to: '${out:-}'"
	fi
	# The sender runs per connection (nc -e), so the receiver's half-close
	# (its stdin is /dev/null) cannot cut the stream short. The guest polls
	# its /proc/net/tcp until nc listens on 9000 (0x2328), at most 10 s.
	serial_cmd "$E2E_TMP/$to.sock" 20 "printf '#!/bin/sh\\ndd if=/dev/zero bs=1024 count=512 2>/dev/null\\n' >/tmp/bulk; chmod +x /tmp/bulk; (nc -l -p 9000 -e /tmp/bulk >/dev/null 2>&1 &); n=0; until grep -qsE ':2328 [0-9A-F]+:0000 0A' /proc/net/tcp /proc/net/tcp6 || [ \$n -ge 200 ]; do usleep 50000; n=\$((n+1)); done" >/dev/null
	t=$(e2e_now)
	if out=$(serial_cmd "$E2E_TMP/$from.sock" 40 "timeout 30 nc $ip 9000 </dev/null | wc -c") && [ "$out" = 524288 ]; then
		pass "$label-bulk" "524288 bytes $to -> $from in $(e2e_elapsed "$t") s (MTU $(serial_cmd "$E2E_TMP/$from.sock" 5 'cat /sys/class/net/eth0/mtu'))"
	else
		fail "$label-bulk" "got '${out:-}' bytes"
	fi
}

# ------------------------------------------------------------------ OVS: underlay via uplink
for n in 1 2; do
	export VMHOST_OVS_DB=unix:$E2E_TMP/ovs$n/db.sock
	vh $n net create phy --type ovs --mtu 1600 >/dev/null &&
	out=$(vh $n net uplink phy --port veth-h$n --host-ip 172.16.0.$n/24 2>&1) &&
	vh $n net create lan --type ovs --subnet 10.91.0.0/24 --gateway 10.91.0.25$n >/dev/null
	rc=$?
	unset VMHOST_OVS_DB
	if [ $rc = 0 ] && ip -n vhnt$n-$$ -4 addr show dev vb-phy | grep "172.16.0.$n/24" >/dev/null; then
		pass "uplink-host$n" "$(tr '\n' ';' <<<"$out")"
	else
		fail "uplink-host$n" "$out"; e2e_finish
	fi
done
if ip netns exec vhnt1-$$ ping -c 1 -W 3 172.16.0.2 >/dev/null; then pass underlay-ping "172.16.0.1 -> 172.16.0.2 through both OVS bridges"; else fail underlay-ping; fi

# a tunnel whose underlay is not an OVS bridge is refused, with the reason
if out=$(vh 1 net tunnel add lan --remote 172.17.0.2 --type gre 2>&1); then
	fail tunnel-underlay-check "accepted: $out"
elif grep -q 'is not an Open vSwitch bridge' <<<"$out"; then pass tunnel-underlay-check "$out"; else fail tunnel-underlay-check "$out"; fi

gre_ok=1
for n in 1 2; do
	if ! out=$(vh $n net tunnel add lan --remote 172.16.0.$((3 - n)) --type gre 2>&1); then
		fail "gre-add-host$n" "$out"
		gre_ok=0
	fi
done
[ $gre_ok = 1 ] && pass gre-add "$out"
boot 1 g1 lan "vmhost.ip=10.91.0.11/24"
boot 2 g2 lan "vmhost.ip=10.91.0.12/24"
wait_ready g1 && wait_ready g2
port=$(vh 1 net show lan --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["tunnels"][0]["interface"])')
[ "$(ovsctl 1 get Interface "$port" type)" = gre ] && [ "$(ovsctl 1 get Interface "$port" error)" = '[]' ] &&
	pass gre-port "$port: $(ovsctl 1 get Interface "$port" options)" || fail gre-port
[ "$(vh 1 net show lan --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["effective_mtu"])')" = 1500 ] &&
	pass gre-mtu-kept "underlay 1600 leaves room for 1500" || fail gre-mtu-kept
cross gre g1 10.91.0.12 g2
cross gre-back g2 10.91.0.11 g1

# ------------------------------------------------------------------ the same network over VXLAN
for n in 1 2; do
	vh $n net tunnel remove lan --remote 172.16.0.$((3 - n)) >/dev/null || fail "gre-remove-host$n"
done
if [ -z "$(ovsctl 1 list-ports vb-lan | grep '^vt-')" ]; then pass gre-port-removed; else fail gre-port-removed; fi
for n in 1 2; do
	out=$(vh $n net tunnel add lan --remote 172.16.0.$((3 - n)) --type vxlan --key 42 2>&1) || fail "vxlan-add-host$n" "$out"
done
port=$(vh 1 net show lan --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["tunnels"][0]["interface"])')
[ "$(ovsctl 1 get Interface "$port" type)" = vxlan ] && pass vxlan-port "$port: $(ovsctl 1 get Interface "$port" options)" || fail vxlan-port
cross vxlan g1 10.91.0.12 g2
stop_pid "$PID_g1"; stop_pid "$PID_g2"
vh 1 net detach lan g1 >/dev/null; vh 2 net detach lan g2 >/dev/null

# ------------------------------------------------------------------ Linux bridge + kernel VXLAN
for n in 1 2; do
	vh $n net create klan --type bridge --subnet 10.92.0.0/24 --gateway 10.92.0.25$n >/dev/null &&
	out=$(vh $n net tunnel add klan --remote 172.17.0.$((3 - n)) --type vxlan --key 7 2>&1) || fail "kvxlan-add-host$n" "$out"
done
if out=$(vh 1 net start klan 2>&1) && grep -q 'MTU 1450' <<<"$out" && grep -q 'lowered from 1500' <<<"$out"; then
	pass kvxlan-mtu-lowered "$(tr '\n' ' ' <<<"$out")"
else
	fail kvxlan-mtu-lowered "$out"
fi
vx=$(vh 1 net show klan --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["tunnels"][0]["interface"])')
if ip -n vhnt1-$$ -d link show "$vx" | grep 'vxlan id 7 remote 172.17.0.2 .*dev kv-h1' >/dev/null; then
	pass kvxlan-link "$(ip -n vhnt1-$$ -d link show "$vx" | grep -o 'vxlan id.*' | cut -c1-70)"
else
	fail kvxlan-link "$(ip -n vhnt1-$$ -d link show "$vx")"
fi
boot 1 k1 klan "vmhost.ip=10.92.0.11/24 vmhost.mtu=1450"
boot 2 k2 klan "vmhost.ip=10.92.0.12/24 vmhost.mtu=1450"
wait_ready k1 && wait_ready k2
cross kvxlan k1 10.92.0.12 k2
stop_pid "$PID_k1"; stop_pid "$PID_k2"
vh 1 net detach klan k1 >/dev/null; vh 2 net detach klan k2 >/dev/null

# ------------------------------------------------------------------ teardown
for n in 1 2; do
	for net in klan lan phy; do vh $n net delete $net >/dev/null || fail "delete-$net-host$n"; done
done
left=$(for n in 1 2; do ip -n vhnt$n-$$ -o link show | grep -oE ' (vb-|vh-|vt-)[^:@]*'; done || true)
[ -z "$left" ] && pass no-links-left || fail no-links-left "$left"
bridges=$(ovsctl 1 list-br; ovsctl 2 list-br)
[ -z "$bridges" ] && pass no-ovs-bridges-left || fail no-ovs-bridges-left "$bridges"
if ip -n vhnt1-$$ -4 addr show dev veth-h1 | grep '172.16.0.1/24' >/dev/null && [ "$(ip -n vhnt1-$$ -j link show veth-h1 | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["mtu"])')" = 1600 ]; then
	pass uplink-restored-on-delete "172.16.0.1/24 back on veth-h1, MTU 1600"
else
	fail uplink-restored-on-delete "$(ip -n vhnt1-$$ addr show dev veth-h1)"
fi
e2e_finish
