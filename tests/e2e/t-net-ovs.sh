#!/usr/bin/env bash
# tests/e2e/t-net-ovs.sh: a vmhost Open vSwitch network end to end, in a
# network namespace with its own ovsdb-server and ovs-vswitchd (no kernel
# datapath here, so vmhost must pick the userspace one and say so):
#   - show before start says auto means netdev here, and start reports
#     datapath netdev with the same reason; the gateway sits on the
#     bridge's internal port; attach says to turn checksum offload off
#   - two TCG guests get DHCP leases from dnsmasq, reach the gateway port
#     and each other over TCP (TCP, not ping: the checksum-offload trap)
#   - VLANs: guests on tag 1 talk to each other, not to the guest on tag 2
#     nor to the untagged gateway
#   - errors: a missing Open vSwitch, an unreachable database
#   - delete leaves no OVS bridge or port, no tap and no dnsmasq
# shellcheck disable=SC2154 # PID_name, TAP_name, rc: set through eval and in traps
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init net-ovs
source "$here/vmhost-env.sh"
need python3 ip ovs-vsctl ovsdb-server ovs-vswitchd ovsdb-tool socat qemu-system-x86_64
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (network namespaces)"; exit 77; }
if [ ! -e "$GUEST_DIR/vmlinuz" ]; then "$VMHOST" guest build >/dev/null || { fail guest-build; e2e_finish; }; fi

H=vhno-h$$
NETNS=()
VMS=()
vh() { ip netns exec "$H" "$VMHOST" "$@"; }
net_cleanup() {
	local i p
	for ((i = ${#E2E_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${E2E_PIDS[i]}"; done
	E2E_PIDS=()
	for v in "${VMS[@]}"; do vh net detach sw "$v" >/dev/null 2>&1; done
	vh net delete sw >/dev/null 2>&1
	for p in "$VMHOST_HOME"/run/networks/*/dnsmasq.pid; do
		[ -f "$p" ] && grep -q "$VMHOST_HOME" "/proc/$(cat "$p")/cmdline" 2>/dev/null && kill "$(cat "$p")"
	done
	for p in "$OVS_DIR"/ovs-vswitchd.pid "$OVS_DIR"/ovsdb-server.pid; do [ -f "$p" ] && stop_pid "$(cat "$p")"; done
	for ns in "${NETNS[@]}"; do ip netns del "$ns" 2>/dev/null; done
}
trap 'rc=$?; net_cleanup; (exit $rc); e2e_cleanup' EXIT

ip netns add "$H" && NETNS+=("$H") && ip -n "$H" link set lo up
# A private Open vSwitch for this "host" (database, sockets and logs in E2E_TMP).
OVS_DIR=$E2E_TMP/ovs
mkdir -p "$OVS_DIR"
ovsdb-tool create "$OVS_DIR/conf.db" /usr/share/openvswitch/vswitch.ovsschema
ovsdb_start() {
	OVS_RUNDIR=$OVS_DIR OVS_DBDIR=$OVS_DIR OVS_LOGDIR=$OVS_DIR ip netns exec "$H" ovsdb-server "$OVS_DIR/conf.db" \
		--remote=punix:"$OVS_DIR/db.sock" --pidfile="$OVS_DIR/ovsdb-server.pid" --unixctl="$OVS_DIR/ovsdb-server.ctl" \
		--log-file="$OVS_DIR/ovsdb-server.log" --detach
}
ovsdb_start
ovs-vsctl --db=unix:"$OVS_DIR/db.sock" --no-wait init
OVS_RUNDIR=$OVS_DIR OVS_DBDIR=$OVS_DIR OVS_LOGDIR=$OVS_DIR ip netns exec "$H" ovs-vswitchd unix:"$OVS_DIR/db.sock" \
	--pidfile="$OVS_DIR/ovs-vswitchd.pid" --unixctl="$OVS_DIR/ovs-vswitchd.ctl" --log-file="$OVS_DIR/ovs-vswitchd.log" --detach
ovsctl() { ovs-vsctl --db=unix:"$OVS_DIR/db.sock" "$@"; }
ovsctl --timeout=10 set Open_vSwitch . external_ids:system-id=vmhost-e2e && pass ovs-up || { fail ovs-up; e2e_finish; }

mkdir -p "$E2E_TMP/qemu-$H"
printf '#!/bin/sh\nexec ip netns exec %s /usr/bin/qemu-system-x86_64 "$@"\n' "$H" >"$E2E_TMP/qemu-$H/qemu-system-x86_64"
chmod +x "$E2E_TMP/qemu-$H/qemu-system-x86_64"
# attach_boot NAME APPEND ATTACH-ARGS...: attach a NIC through vmhost, boot a
# guest on the tap it returns with the device options it asks for.
attach_boot() {
	local name=$1 append=$2 mac att tap off; shift 2
	mac=$(printf '52:54:00:4f:00:%02x' "${#VMS[@]}")
	if ! att=$(vh net attach sw "$name" --mac "$mac" --json "$@" 2>"$E2E_TMP/attach-$name.err"); then
		fail "attach-$name" "$att $(cat "$E2E_TMP/attach-$name.err")"; return 1
	fi
	VMS+=("$name")
	tap=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["tap"])' <<<"$att")
	off=$(python3 -c 'import json,sys; print("yes" if json.load(sys.stdin)["disable_offload"] else "")' <<<"$att")
	PATH="$E2E_TMP/qemu-$H:$PATH" qemu_start "$name" -kernel "$GUEST_DIR/vmlinuz" -initrd "$GUEST_DIR/initrd.img" \
		-append "console=ttyS0 quiet panic=-1 no_timer_check vmhost.name=$name vmhost.tcp=7777 $append" \
		-netdev "tap,id=n0,ifname=$tap,script=no,downscript=no" \
		-device "virtio-net-pci,netdev=n0,mac=$mac${off:+,csum=off,guest_csum=off}"
	eval "PID_$name=$QEMU_PID TAP_$name=$tap"
}
wait_ready() {
	local name=$1 pid line
	eval "pid=\$PID_$name"
	if line=$(wait_for_line "$E2E_TMP/$name.log" "VMHOST-READY name=$name ip=[^ ]+" 120 "$pid"); then
		pass "boot-$name" "$line"
		eval "IP_$name=$(grep -o 'ip=[0-9.a-z]*' <<<"$line" | cut -d= -f2)"
	else
		fail "boot-$name"; qemu_dump "$name"; return 1
	fi
}
# tcp NAME HOST PORT EXPECT: the guest connects; EXPECT "fail" means it must
# not: the command must run in the guest (serial_cmd succeeds, so a dead
# console is not a pass) and nc must fail without reading a greeting.
tcp() {
	local name=$1 host=$2 port=$3 want=$4 out rc=0
	if [ "$want" = fail ]; then
		out=$(serial_cmd "$E2E_TMP/$name.sock" 20 "timeout 4 nc $host $port; echo nc-rc=\$?") || rc=$?
		# (nc's own complaint, or timeout's "Terminated", may be there; a
		# greeting from the far end may not.)
		if [ "$rc" = 0 ] && grep -qE '^nc-rc=[1-9][0-9]*$' <<<"$out" && ! grep -q hello <<<"$out"; then
			pass "tcp-$name-to-$host-blocked" "$(tr '\n' ' ' <<<"$out")"
		else
			fail "tcp-$name-to-$host-blocked" "serial rc=$rc, got '$out'"
		fi
		return
	fi
	out=$(serial_cmd "$E2E_TMP/$name.sock" 20 "timeout 4 nc $host $port") || rc=$?
	if [ "$out" = "$want" ]; then
		pass "tcp-$name-to-$host" "$out"
	else
		fail "tcp-$name-to-$host" "got '${out:-}' rc=$rc"
	fi
}

# ------------------------------------------------------------------ errors first
mkdir -p "$E2E_TMP/empty-bin"
if out=$(ip netns exec "$H" env PATH="$E2E_TMP/empty-bin" "$VMHOST" net create x --type ovs --subnet 10.89.0.0/24 2>&1); then
	fail missing-ovs "$out"
elif grep -q 'Open vSwitch is not installed' <<<"$out"; then pass missing-ovs "$out"; else fail missing-ovs "$out"; fi
if out=$(vh net create x --type ovs --subnet 10.89.0.0/24 --ovs-db unix:"$E2E_TMP/nowhere.sock" 2>&1); then
	fail ovs-db-unreachable "$out"
elif grep -q 'cannot reach the Open vSwitch database' <<<"$out"; then pass ovs-db-unreachable "$out"; else fail ovs-db-unreachable "$out"; fi

# ------------------------------------------------------------------ create, start
export VMHOST_OVS_DB=unix:$OVS_DIR/db.sock
if out=$(vh net create sw --type ovs --subnet 10.81.0.0/24 --dhcp 2>&1) &&
   grep -q "^ovs-db = unix:$OVS_DIR/db.sock$" "$VMHOST_HOME/networks/sw.conf"; then
	pass create "$out; database recorded in the definition"
else
	fail create "$out"; e2e_finish
fi
unset VMHOST_OVS_DB
# Stopped, show says what auto will choose; start must then choose that.
if out=$(vh net show sw 2>&1) && grep -qx 'datapath:  auto (netdev here: no openvswitch kernel datapath on this host)' <<<"$out"; then
	pass show-datapath-before-start "$(grep datapath: <<<"$out")"
else
	fail show-datapath-before-start "$out"
fi
if out=$(vh net start sw 2>&1) && grep -qx 'datapath netdev: no openvswitch kernel datapath on this host' <<<"$out"; then
	pass start-datapath-reported "$(tr '\n' ' ' <<<"$out")"
else
	fail start-datapath-reported "$out"
fi
if [ "$(ovsctl get Bridge vb-sw datapath_type)" = netdev ] && [ "$(ovsctl get Interface vb-sw error)" = '[]' ] &&
   ip -n "$H" -4 addr show dev vb-sw | grep '10.81.0.1/24' >/dev/null; then
	pass gateway-internal-port "10.81.0.1 on vb-sw (type $(ovsctl get Interface vb-sw type))"
else
	fail gateway-internal-port "$(ovsctl show)"
fi
# a TCP service on the gateway port
ip netns exec "$H" socat TCP-LISTEN:8080,bind=10.81.0.1,reuseaddr,fork SYSTEM:'echo gateway-hello' &
track_pid $!

# ------------------------------------------------------------------ DHCP, gateway, VM to VM
attach_boot vm1 "vmhost.net=dhcp" --ip 10.81.0.50
attach_boot vm2 "vmhost.net=dhcp"
if [ "$(ovsctl get Interface "$TAP_vm1" error)" = '[]' ] && [ "$(ovsctl get Port "$TAP_vm1" external_ids:vmhost-vm | tr -d '"')" = vm1 ]; then
	pass vm-port "$TAP_vm1 on vb-sw, tagged with its VM"
else
	fail vm-port "$(ovsctl list Port "$TAP_vm1" | grep -E 'external_ids|name')"
fi
wait_ready vm1 && wait_ready vm2
[ "$IP_vm1" = 10.81.0.50 ] && pass dhcp-reserved "$IP_vm1" || fail dhcp-reserved "$IP_vm1"
case "$IP_vm2" in 10.81.0.*) pass dhcp-pool "$IP_vm2" ;; *) fail dhcp-pool "$IP_vm2" ;; esac
tcp vm1 10.81.0.1 8080 gateway-hello
tcp vm2 10.81.0.1 8080 gateway-hello
tcp vm1 "$IP_vm2" 7777 "vmhost-guest vm2 hello"
tcp vm2 10.81.0.50 7777 "vmhost-guest vm1 hello"
if out=$(ip netns exec "$H" bash -c "$(declare -f tcp_read_line); tcp_read_line 10.81.0.50 7777 10") && [ "$out" = "vmhost-guest vm1 hello" ]; then
	pass tcp-host-to-vm1 "$out"
else
	fail tcp-host-to-vm1 "${out:-}"
fi
stop_pid "$PID_vm1"; stop_pid "$PID_vm2"
vh net detach sw vm1 >/dev/null && vh net detach sw vm2 >/dev/null
if [ -z "$(ovsctl list-ports vb-sw)" ]; then pass detach-ports-gone; else fail detach-ports-gone "$(ovsctl list-ports vb-sw)"; fi

# ------------------------------------------------------------------ VLANs
# va, vb on VLAN 1 and vc, ve on VLAN 2 share 10.82.0.0/24: each pair talks,
# across the VLANs nothing passes. vd is on VLAN 1 with an address in the
# gateway's untagged subnet (10.81.0.0/24, which vm1 and vm2 reached above):
# the tag alone keeps it from the gateway.
attach_boot va "vmhost.ip=10.82.0.1/24" --vlan 1
attach_boot vb "vmhost.ip=10.82.0.2/24" --vlan 1
attach_boot vc "vmhost.ip=10.82.0.3/24" --vlan 2
attach_boot ve "vmhost.ip=10.82.0.5/24" --vlan 2
attach_boot vd "vmhost.ip=10.81.0.61/24" --vlan 1
[ "$(ovsctl get Port "$TAP_vc" tag)" = 2 ] && pass vlan-tag-set "$TAP_vc tag 2" || fail vlan-tag-set
# The same warning when a VM's start attaches a tagged NIC.
if PATH="$E2E_TMP/qemu-$H:$PATH" vh vm create vw --boot kernel --kernel "$GUEST_DIR/vmlinuz" --initrd "$GUEST_DIR/initrd.img" \
	--vnc none --net sw,vlan=3 >/dev/null && PATH="$E2E_TMP/qemu-$H:$PATH" vh vm start vw >"$E2E_TMP/vw.out" 2>"$E2E_TMP/vw.err" &&
   grep -q "NIC 0 of vw is in VLAN 3, but the DHCP server and gateway of 'sw' serve only the untagged segment" "$E2E_TMP/vw.err"; then
	pass vm-start-vlan-warning "$(cat "$E2E_TMP/vw.err")"
else
	fail vm-start-vlan-warning "$(cat "$E2E_TMP/vw.out" "$E2E_TMP/vw.err" 2>&1)"
fi
vh vm kill vw >/dev/null 2>&1; vh vm delete vw >/dev/null 2>&1
# DHCP and the gateway are untagged: a tagged NIC is told it gets no address.
if grep -q "NIC 0 of vc is in VLAN 2, but the DHCP server and gateway of 'sw' serve only the untagged segment" \
	"$E2E_TMP/attach-vc.err" && [ ! -s "$E2E_TMP/attach-vm1.err" ]; then
	pass vlan-dhcp-warning "$(cat "$E2E_TMP/attach-vc.err")"
else
	fail vlan-dhcp-warning "vc: $(cat "$E2E_TMP/attach-vc.err") vm1: $(cat "$E2E_TMP/attach-vm1.err")"
fi
wait_ready va && wait_ready vb && wait_ready vc && wait_ready ve && wait_ready vd
tcp va 10.82.0.2 7777 "vmhost-guest vb hello"
tcp vb 10.82.0.1 7777 "vmhost-guest va hello"
tcp vc 10.82.0.5 7777 "vmhost-guest ve hello"
tcp va 10.82.0.3 7777 fail
tcp vc 10.82.0.1 7777 fail
tcp vd 10.81.0.1 8080 fail
if out=$(vh net show sw --json) && python3 -c '
import json, sys
d = json.load(sys.stdin)
tags = {p["vm"]: p["vlan"] for p in d["ports"]}
assert tags == {"va": 1, "vb": 1, "vc": 2, "vd": 1, "ve": 2}, tags
assert d["datapath"] == "netdev" and d["disable_offload"] is True
' <<<"$out"; then pass show-json-ports; else fail show-json-ports "$out"; fi

# a trunk port (no guest needed to see what OVS was told)
if vh net attach sw trunk --trunks 1,2 >/dev/null && [ "$(ovsctl get Port vh-trunk-0 trunks)" = "[1, 2]" ] &&
   [ "$(ovsctl get Port vh-trunk-0 tag)" = "[]" ]; then
	pass trunk-port "vh-trunk-0 trunks $(ovsctl get Port vh-trunk-0 trunks)"
else
	fail trunk-port "$(ovsctl list Port vh-trunk-0 | grep -E '^(tag|trunks)')"
fi
vh net detach sw trunk >/dev/null

# A switch that cannot drop the port (its database is down: a real fault)
# fails the detach before anything else is touched: tap and record stay,
# and the detach completes once the database is back.
vh net attach sw half >/dev/null || fail attach-half
stop_pid "$(cat "$OVS_DIR/ovsdb-server.pid")"
if out=$(vh net detach sw half 2>&1); then
	fail detach-switch-down "succeeded with the database down: $out"
elif grep -q "stays attached to 'sw': nothing was removed" <<<"$out" && ip -n "$H" link show vh-half-0 >/dev/null 2>&1 &&
     vh net ports sw | grep -q 'half'; then
	pass detach-switch-down "refused, nothing removed: $out"
else
	fail detach-switch-down "$out; ports: $(vh net ports sw)"
fi
ovsdb_start
if vh net detach sw half >/dev/null && ! ip -n "$H" link show vh-half-0 >/dev/null 2>&1 &&
   ! vh net ports sw | grep -q 'half' && [ -z "$(ovsctl --timeout=10 port-to-br vh-half-0 2>/dev/null)" ]; then
	pass detach-after-switch-back
else
	fail detach-after-switch-back "$(vh net ports sw; ovsctl show)"
fi

# ------------------------------------------------------------------ teardown
for v in va vb vc vd ve; do eval "stop_pid \$PID_$v"; done
if out=$(vh net delete sw 2>&1); then fail delete-refused-in-use "$out"
elif grep -q 'in use by' <<<"$out"; then pass delete-refused-in-use "$out"; else fail delete-refused-in-use "$out"; fi
for v in va vb vc vd ve; do vh net detach sw "$v" >/dev/null; done
dnsmasq_pid=$(cat "$VMHOST_HOME/run/networks/sw/dnsmasq.pid" 2>/dev/null)
if out=$(vh net delete sw 2>&1); then pass delete "$out"; else fail delete "$out"; fi
if ovsctl br-exists vb-sw; then fail no-ovs-bridge-left "$(ovsctl show)"; else pass no-ovs-bridge-left; fi
ports=$(ovsctl --format=csv --no-headings --columns=name list Port 2>&1)
[ -z "$ports" ] && pass no-ovs-port-left || fail no-ovs-port-left "$ports"
left=$(ip -n "$H" -o link show | grep -oE ' (vb-|vh-|vt-)[^:@]*' || true)
[ -z "$left" ] && pass no-links-left "$(ip -n "$H" -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')" || fail no-links-left "$left"
if [ -n "$dnsmasq_pid" ] && grep -q "$VMHOST_HOME" "/proc/$dnsmasq_pid/cmdline" 2>/dev/null; then
	fail no-dnsmasq-left "pid $dnsmasq_pid"
else
	pass no-dnsmasq-left
fi
e2e_finish
