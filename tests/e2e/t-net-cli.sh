#!/usr/bin/env bash
# tests/e2e/t-net-cli.sh: 'vmhost net' definitions and errors, no guests
# (runs in a few seconds), in a network namespace playing the host:
#   - errors name the problem: a subnet overlapping a host route or another
#     vmhost network, a NAT uplink that does not exist, bad values, a
#     hand-edited definition with a bad line (file:line in the message)
#   - list/show --json; a user-mode network needs nothing on the host
#   - show of a stopped OVS network says what datapath auto chooses here
#   - eight NICs attached at once from parallel commands (the lock) all get
#     their tap and DHCP reservation, with one dnsmasq that re-reads its
#     hosts file (never restarted); detached in parallel, nothing is left
#   - with dnsmasq unable to start (its address taken), an attach is rolled
#     back whole and a detach finishes and says what failed
# shellcheck disable=SC2154 # PID_name, TAP_name, rc: set through eval and in traps
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init net-cli
source "$here/vmhost-env.sh"
need python3 ip dnsmasq
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (network namespaces)"; exit 77; }

H=vhnc-h$$
vh() { ip netns exec "$H" "$VMHOST" "$@"; }
net_cleanup() {
	local i
	for i in $(seq 0 7); do vh net detach par "p$i" >/dev/null 2>&1; done
	for n in a b par u; do vh net delete $n >/dev/null 2>&1; done
	ip netns del "$H" 2>/dev/null
}
trap 'rc=$?; net_cleanup; (exit $rc); e2e_cleanup' EXIT
ip netns add "$H" && ip -n "$H" link set lo up
ip link add eth0 netns "$H" type veth peer name peer0 netns "$H"
ip -n "$H" addr add 192.168.50.2/24 dev eth0 && ip -n "$H" link set eth0 up
ip -n "$H" route add 10.200.0.0/16 via 192.168.50.1

# expect_error DESC PATTERN CMD...: CMD must fail and print PATTERN.
expect_error() {
	local desc=$1 pat=$2 out; shift 2
	if out=$("$@" 2>&1); then
		fail "$desc" "succeeded: $out"
	elif grep -qE -- "$pat" <<<"$out"; then
		pass "$desc" "$out"
	else
		fail "$desc" "wrong message: $out"
	fi
}

expect_error overlap-connected-route 'subnet 192.168.0.0/16 overlaps the host route 192.168.50.0/24 dev eth0' \
	vh net create a --type bridge --subnet 192.168.0.0/16
expect_error overlap-static-route 'overlaps the host route 10.200.0.0/16 dev eth0' \
	vh net create a --type bridge --subnet 10.200.7.0/24
vh net create a --type bridge --subnet 10.201.0.0/24 --dhcp >/dev/null && pass create-a || fail create-a
expect_error overlap-vmhost-network "overlaps vmhost network 'a' \(10.201.0.0/24\)" \
	vh net create b --type bridge --subnet 10.201.0.128/25
expect_error missing-nat-uplink 'uplink interface wan9 does not exist' \
	vh net create b --type bridge --subnet 10.202.0.0/24 --nat --uplink wan9
expect_error host-bits 'did you mean 10.202.0.0/24' vh net create b --type bridge --subnet 10.202.0.1/24
expect_error gateway-outside 'gateway 10.9.9.9 is not a host address of subnet 10.202.0.0/24' \
	vh net create b --type bridge --subnet 10.202.0.0/24 --gateway 10.9.9.9
expect_error dhcp-over-gateway 'the DHCP range contains the gateway 10.202.0.1' \
	vh net create b --type bridge --subnet 10.202.0.0/24 --dhcp 10.202.0.1-10.202.0.20
expect_error type-required 'type user\|bridge\|ovs is required' vh net create b --subnet 10.202.0.0/24
expect_error duplicate-name "network 'a' exists already" vh net create a --type bridge --subnet 10.203.0.0/24
expect_error vlan-needs-ovs 'VLAN tags need an Open vSwitch network' vh net attach a vm1 --vlan 3
expect_error unknown-network "no network 'zz'" vh net start zz
expect_error bad-name 'invalid network name' vh net show 'x/y'

# a user-mode network: nothing on the host
vh net create u --type user >/dev/null && pass create-user || fail create-user
if out=$(vh net attach u vm1 --json) && python3 -c '
import json, sys
a = json.load(sys.stdin)
assert a["type"] == "user" and a["tap"] is None and a["user_subnet"] == "10.0.2.0/24", a' <<<"$out"; then
	pass user-attach "$(tr -d '\n ' <<<"$out")"
else
	fail user-attach "$out"
fi

# list / show --json
if out=$(vh net list --json) && python3 -c '
import json, sys
nets = {n["name"]: n for n in json.load(sys.stdin)}
assert set(nets) == {"a", "u"}, nets
a = nets["a"]
assert a["type"] == "bridge" and a["state"] == "stopped" and a["subnet"] == "10.201.0.0/24", a
assert a["gateway"] == "10.201.0.1" and a["dhcp"] == {"first": "10.201.0.128", "last": "10.201.0.254"}, a
assert a["bridge"] == "vb-a" and a["mtu"] == 1500 and a["vms"] == [], a
assert nets["u"]["state"] == "available" and nets["u"]["gateway"] == "10.0.2.2"' <<<"$out"; then
	pass list-json
else
	fail list-json "$out"
fi
if vh net list | grep -E '^a +bridge +stopped +10.201.0.0/24 +vb-a' >/dev/null; then pass list-table; else fail list-table "$(vh net list)"; fi

# a hand-edited definition with a mistake
cp "$VMHOST_HOME/networks/a.conf" "$E2E_TMP/a.conf.good"
echo "mtu = lots" >>"$VMHOST_HOME/networks/a.conf"
line=$(wc -l <"$VMHOST_HOME/networks/a.conf")
expect_error bad-conf-line "a.conf:$line: mtu must be a number 576..9000, not 'lots'" vh net show a
cp "$E2E_TMP/a.conf.good" "$VMHOST_HOME/networks/a.conf"

# A stopped OVS network: show says what datapath auto means on this host
# (the same choice 'net start' makes; no kernel module here: netdev). The
# definitions are written by hand: 'create' would need a running OVS.
if [ -e /sys/module/openvswitch ]; then dp=system why='the openvswitch kernel module is loaded'
else dp=netdev why='no openvswitch kernel datapath on this host'; fi
printf 'name = o\ntype = ovs\nsubnet = 10.205.0.0/24\n' >"$VMHOST_HOME/networks/o.conf"
printf 'name = o2\ntype = ovs\nsubnet = 10.206.0.0/24\ndatapath = system\n' >"$VMHOST_HOME/networks/o2.conf"
if out=$(vh net show o) && grep -qx "datapath:  auto ($dp here: $why)" <<<"$out"; then
	pass show-datapath-auto "$(grep datapath: <<<"$out")"
else
	fail show-datapath-auto "$out"
fi
if out=$(vh net show o --json) && python3 -c '
import json, sys
n = json.load(sys.stdin)
assert n["state"] == "stopped" and n["datapath"] == "auto", n
assert n["datapath_effective"] == sys.argv[1] and n["datapath_note"] == sys.argv[2], n' "$dp" "$why" <<<"$out"; then
	pass show-datapath-auto-json "datapath auto, datapath_effective $dp"
else
	fail show-datapath-auto-json "$out"
fi
if out=$(vh net show o2) && grep -qx 'datapath:  system (as configured)' <<<"$out" &&
   vh net show o2 --json | grep -q '"datapath_effective": *"system"'; then
	pass show-datapath-configured "$(grep datapath: <<<"$out")"
else
	fail show-datapath-configured "$out"
fi
rm -f "$VMHOST_HOME/networks/o.conf" "$VMHOST_HOME/networks/o2.conf"

# ------------------------------------------------------------------ parallel attach
vh net create par --type bridge --subnet 10.204.0.0/24 --dhcp >/dev/null || fail create-par
HOSTS=$VMHOST_HOME/run/networks/par/dnsmasq.hosts
# reservations: the lines of dnsmasq's hosts file that are not comments
reservations() { grep -c '^[^#]' "$HOSTS" 2>/dev/null || true; }
vh net start par >/dev/null || fail start-par
dpid0=$(cat "$VMHOST_HOME/run/networks/par/dnsmasq.pid" 2>/dev/null)
t=$(e2e_now)
pids=()
for i in $(seq 0 7); do
	vh net attach par "p$i" --mac "52:54:00:77:00:0$i" --ip "10.204.0.$((10 + i))" >"$E2E_TMP/att$i.out" 2>&1 &
	pids+=($!)
done
ok=0
for p in "${pids[@]}"; do wait "$p" && ok=$((ok + 1)); done
taps=$(ip -n "$H" -o link show master vb-par | grep -c ' vh-p[0-7]-0')
hosts=$(reservations)
dpid=$(cat "$VMHOST_HOME/run/networks/par/dnsmasq.pid" 2>/dev/null)
if [ "$ok" = 8 ] && [ "$taps" = 8 ] && [ "$hosts" = 8 ] && [ -n "$dpid" ] && kill -0 "$dpid"; then
	pass parallel-attach "8 attaches in $(e2e_elapsed "$t") s: 8 taps on vb-par, 8 reservations, dnsmasq $dpid"
else
	fail parallel-attach "ok=$ok taps=$taps hosts=$hosts dnsmasq=$dpid $(cat "$E2E_TMP"/att*.out)"
fi
# Reservations change without a restart: the same dnsmasq re-read its hosts
# file (SIGHUP), and its config holds no reservation of its own.
if [ -n "$dpid0" ] && [ "$dpid" = "$dpid0" ] && ! grep -q '^dhcp-host=' "$VMHOST_HOME/run/networks/par/dnsmasq.conf" &&
   grep -qx "dhcp-hostsfile=$HOSTS" "$VMHOST_HOME/run/networks/par/dnsmasq.conf"; then
	pass attach-no-restart "dnsmasq $dpid0 served all 8 attaches"
else
	fail attach-no-restart "dnsmasq was $dpid0, now $dpid"
fi
if [ "$(grep -c "dnsmasq-dhcp\[$dpid0\]: read $HOSTS$" "$VMHOST_HOME/run/networks/par/dnsmasq.log")" -ge 2 ]; then
	pass hosts-reread "$(grep -c "read $HOSTS" "$VMHOST_HOME/run/networks/par/dnsmasq.log") reads of the hosts file"
else
	fail hosts-reread "$(tail -5 "$VMHOST_HOME/run/networks/par/dnsmasq.log")"
fi
expect_error reserved-twice 'address 10.204.0.10 is reserved for VM p0' \
	vh net attach par other --mac 52:54:00:77:01:01 --ip 10.204.0.10
# a VM on two networks, released from both at once (cleanup after a crash)
vh net attach a p0 --mac 52:54:00:77:02:00 >/dev/null
if out=$(vh net release p0) && [ "$out" = "released 2 NICs of p0" ] && ! ip -n "$H" link show vh-p0-0 >/dev/null 2>&1 &&
   [ "$(vh net ports a --json)" = "[]" ]; then
	pass release "$out"
else
	fail release "${out:-}"
fi
pids=()
for i in $(seq 0 7); do vh net detach par "p$i" >/dev/null 2>&1 & pids+=($!); done
ok=0
for p in "${pids[@]}"; do wait "$p" && ok=$((ok + 1)); done
left=$(ip -n "$H" -o link show | grep -c ' vh-' || true)
dpid1=$(cat "$VMHOST_HOME/run/networks/par/dnsmasq.pid" 2>/dev/null)
if [ -s "$VMHOST_HOME/run/networks/par/dnsmasq.log" ] && ! grep -q 'Permission denied' "$VMHOST_HOME/run/networks/par/dnsmasq.log"; then
	pass hosts-readable
else
	fail hosts-readable "$(grep 'Permission denied' "$VMHOST_HOME/run/networks/par/dnsmasq.log" | head -3)"
fi
if [ "$ok" = 8 ] && [ "$left" = 0 ] && [ "$(reservations)" = 0 ] && [ "$dpid1" = "$dpid0" ]; then
	pass parallel-detach "no taps, no reservations left, dnsmasq $dpid1 still the same"
else
	fail parallel-detach "ok=$ok taps left=$left reservations=$(reservations) dnsmasq $dpid0 -> $dpid1"
fi

# Where dnsmasq, as 'nobody', could not read its hosts file (the home inside
# a private directory), the reservation goes into its config, read as root,
# and vmhost restarts it.
chmod 0700 "$E2E_TMP"
CONF=$VMHOST_HOME/run/networks/par/dnsmasq.conf
if vh net attach par r1 --mac 52:54:00:77:04:01 --ip 10.204.0.40 >/dev/null &&
   dpid2=$(cat "$VMHOST_HOME/run/networks/par/dnsmasq.pid") && [ "$dpid2" != "$dpid1" ] && kill -0 "$dpid2" &&
   grep -qx 'dhcp-host=52:54:00:77:04:01,10.204.0.40,r1' "$CONF" && ! grep -q '^dhcp-hostsfile' "$CONF" &&
   ! grep -q "\[$dpid2\]: cannot read" "$VMHOST_HOME/run/networks/par/dnsmasq.log"; then
	pass private-home-restarts "dnsmasq $dpid1 -> $dpid2, the reservation in its config"
else
	fail private-home-restarts "dnsmasq $dpid1 -> ${dpid2:-}; reservations=$(reservations) $(tail -4 "$VMHOST_HOME/run/networks/par/dnsmasq.log")"
fi
vh net detach par r1 >/dev/null || fail detach-r1
chmod 0711 "$E2E_TMP"

# ------------------------------------------------------------------ a DHCP server that cannot start
# A real fault: dnsmasq is gone and something else holds its DNS address
# (10.204.0.1:53), so a new one cannot bind. An attach that needs it must be
# rolled back whole; a detach must finish and say what it could not do.
block_dns() {
	ip netns exec "$H" python3 -c 'import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.204.0.1", 53))
print("bound", flush=True)
time.sleep(60)' >"$E2E_TMP/block.out" 2>&1 &
	BLOCK_PID=$!
	track_pid "$BLOCK_PID"
	wait_until 20 "bind of 10.204.0.1:53 by the blocker" grep -q bound "$E2E_TMP/block.out"
}
unblock_dns() { stop_pid "$BLOCK_PID"; }
kill_dnsmasq() {
	local p
	p=$(cat "$VMHOST_HOME/run/networks/par/dnsmasq.pid" 2>/dev/null)
	[ -n "$p" ] && kill "$p" || return 1
	wait_until 20 "exit of dnsmasq $p after SIGTERM" pid_dead "$p"
}
kill_dnsmasq
block_dns || fail block-dns "$(cat "$E2E_TMP/block.out")"
if out=$(vh net attach par q1 --mac 52:54:00:77:03:01 --ip 10.204.0.30 2>&1); then
	fail attach-rollback "succeeded with dnsmasq unable to start: $out"
elif grep -q 'rolled back' <<<"$out" && grep -q 'Address already in use' <<<"$out" &&
     ! ip -n "$H" link show vh-q1-0 >/dev/null 2>&1 && [ "$(vh net ports par --json)" = "[]" ] &&
     [ "$(reservations)" = 0 ]; then
	pass attach-rollback "$out"
else
	fail attach-rollback "$out; ports=$(vh net ports par --json) reservations=$(reservations)"
fi
unblock_dns
if vh net attach par q1 --mac 52:54:00:77:03:01 --ip 10.204.0.30 >/dev/null && [ "$(reservations)" = 1 ]; then
	pass attach-after-fault
else
	fail attach-after-fault "reservations=$(reservations)"
fi
kill_dnsmasq
block_dns || fail block-dns "$(cat "$E2E_TMP/block.out")"
if out=$(vh net detach par q1 2>&1); then
	fail detach-finishes "succeeded with dnsmasq unable to start: $out"
elif grep -q 'is detached from .par. (tap, port and reservation removed), but its DHCP server was not updated' <<<"$out" &&
     ! ip -n "$H" link show vh-q1-0 >/dev/null 2>&1 && [ "$(vh net ports par --json)" = "[]" ] &&
     [ "$(reservations)" = 0 ]; then
	pass detach-finishes "$out"
else
	fail detach-finishes "$out; ports=$(vh net ports par --json) reservations=$(reservations)"
fi
unblock_dns
for n in a par u; do vh net delete $n >/dev/null || fail "delete-$n"; done
if [ -z "$(ls "$VMHOST_HOME/networks")" ] && ! ip -n "$H" -o link show | grep ' vb-' >/dev/null &&
   ! { [ -n "$dpid" ] && grep -q "$VMHOST_HOME" "/proc/$dpid/cmdline" 2>/dev/null; }; then
	pass all-deleted
else
	fail all-deleted "$(ls "$VMHOST_HOME/networks"; ip -n "$H" -o link show)"
fi
e2e_finish
