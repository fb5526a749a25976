#!/usr/bin/env bash
# tests/e2e/t-net-uplink.sh: 'vmhost net uplink' on a veth playing the host's
# NIC (address 192.0.2.10/24, default route via 192.0.2.1 in a namespace
# playing the LAN), moved into a Linux-bridge network:
#   - bad requests are refused before anything changes (missing NIC, an
#     address that lives on another interface)
#   - --dry-run prints the plan and changes nothing
#   - a failure injected at each step (VMHOST_NET_FAULT=uplink:N) rolls back:
#     address, default route, bridge membership and MTU are as before
#   - the real move keeps the host reachable (ping and TCP to the LAN through
#     the bridge); '--remove' and 'delete' put the NIC back as it was
#   - the same into an Open vSwitch network (private ovsdb-server and
#     ovs-vswitchd): rollback of the last step, move, delete restores
# shellcheck disable=SC2154 # PID_name, TAP_name, rc: set through eval and in traps
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init net-uplink
source "$here/vmhost-env.sh"
need python3 ip socat ping ovs-vsctl ovsdb-server ovs-vswitchd ovsdb-tool
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (network namespaces)"; exit 77; }

U=vhnu-h$$ P=vhnu-lan$$
NETNS=()
vh() { ip netns exec "$U" "$VMHOST" "$@"; }
net_cleanup() {
	local i
	for ((i = ${#E2E_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${E2E_PIDS[i]}"; done
	E2E_PIDS=()
	vh net delete ex >/dev/null 2>&1
	vh net delete exo >/dev/null 2>&1
	for p in "$OVS_DIR"/ovs-vswitchd.pid "$OVS_DIR"/ovsdb-server.pid; do [ -f "$p" ] && stop_pid "$(cat "$p")"; done
	for ns in "${NETNS[@]}"; do ip netns del "$ns" 2>/dev/null; done
}
OVS_DIR=$E2E_TMP/ovs
trap 'rc=$?; net_cleanup; (exit $rc); e2e_cleanup' EXIT

for ns in "$U" "$P"; do ip netns add "$ns" && NETNS+=("$ns") && ip -n "$ns" link set lo up; done
ip link add eth1 netns "$U" type veth peer name lan0 netns "$P"
ip -n "$P" addr add 192.0.2.1/24 dev lan0; ip -n "$P" link set lan0 up
ip -n "$U" addr add 192.0.2.10/24 dev eth1; ip -n "$U" link set eth1 up
ip -n "$U" route add default via 192.0.2.1
ip netns exec "$P" socat TCP-LISTEN:8080,bind=192.0.2.1,reuseaddr,fork SYSTEM:'echo lan-hello' &
track_pid $!

# The host's view of its NIC: addresses, default route, master, MTU.
nic_state() {
	echo "eth1: $(ip -n "$U" -4 -o addr show dev eth1 | awk '{print $4}' | tr '\n' ' ')"
	echo "default: $(ip -n "$U" route show default)"
	ip -n "$U" -j link show eth1 | python3 -c 'import json,sys; l = json.load(sys.stdin)[0]; print("master:", l.get("master", "-"), "mtu:", l["mtu"])'
}
BEFORE=$(nic_state)
echo "$BEFORE"
reach() { # the LAN is reachable from the host: ping and TCP
	ip netns exec "$U" ping -c 1 -W 2 192.0.2.1 >/dev/null &&
	[ "$(ip netns exec "$U" bash -c "$(declare -f tcp_read_line); tcp_read_line 192.0.2.1 8080 5")" = lan-hello ]
}
reach && pass reach-before || { fail reach-before; e2e_finish; }

vh net create ex --type bridge --subnet 10.93.0.0/24 --mtu 1500 >/dev/null && pass create || { fail create; e2e_finish; }

# ------------------------------------------------------------------ refused up front
if out=$(vh net uplink ex --port nosuch0 --host-ip 192.0.2.10/24 2>&1); then fail missing-nic "$out"
elif grep -q 'uplink interface nosuch0 does not exist' <<<"$out"; then pass missing-nic "$out"; else fail missing-nic "$out"; fi
if out=$(vh net uplink ex --port eth1 --host-ip 127.0.0.1/8 2>&1); then fail address-elsewhere "$out"
elif grep -q 'is on lo, not on eth1' <<<"$out"; then pass address-elsewhere "$out"; else fail address-elsewhere "$out"; fi
if out=$(vh net uplink ex --port eth1 --host-ip 10.93.0.7/24 2>&1); then fail overlaps-subnet "$out"
elif grep -q 'overlaps' <<<"$out"; then pass overlaps-subnet "$out"; else fail overlaps-subnet "$out"; fi
[ "$(nic_state)" = "$BEFORE" ] && pass unchanged-after-refusals || fail unchanged-after-refusals "$(nic_state)"

# ------------------------------------------------------------------ dry run
if out=$(vh net uplink ex --port eth1 --host-ip 192.0.2.10/24 --dry-run 2>&1) &&
   grep -q '1. add eth1 to Linux bridge vb-ex' <<<"$out" && grep -q 'remove the default route via 192.0.2.1 from eth1' <<<"$out" &&
   grep -q 'add the default route via 192.0.2.1 on vb-ex' <<<"$out" && grep -q 'dry run: nothing changed' <<<"$out" &&
   [ "$(nic_state)" = "$BEFORE" ]; then
	pass dry-run "$(tr '\n' ';' <<<"$out")"
else
	fail dry-run "$out"
fi
steps=$(grep -cE '^  [0-9]+\. ' <<<"$out")
[ "$steps" = 5 ] && pass plan-steps "$steps steps" || fail plan-steps "$steps"

# ------------------------------------------------------------------ rollback at every step
for n in $(seq 1 "$steps"); do
	if out=$(VMHOST_NET_FAULT=uplink:$n vh net uplink ex --port eth1 --host-ip 192.0.2.10/24 2>&1); then
		fail "rollback-step$n" "succeeded despite the fault: $out"
		continue
	fi
	undone=$(grep -c '^rollback: undo .*: ok' <<<"$out")
	if [ "$(nic_state)" = "$BEFORE" ] && [ "$undone" = $((n - 1)) ] && reach &&
	   ! grep -q uplink-port "$VMHOST_HOME/networks/ex.conf"; then
		pass "rollback-step$n" "step $n failed, $undone steps undone, host unchanged and reachable"
	else
		fail "rollback-step$n" "$out / $(nic_state)"
	fi
done

# ------------------------------------------------------------------ the move
if out=$(vh net uplink ex --port eth1 --host-ip 192.0.2.10/24 2>&1); then pass uplink "$(tr '\n' ';' <<<"$out")"; else fail uplink "$out"; fi
after=$(nic_state)
if grep -q 'master: vb-ex' <<<"$after" && grep -q 'default via 192.0.2.1 dev vb-ex' <<<"$after" &&
   ip -n "$U" -4 -o addr show dev vb-ex | grep '192.0.2.10/24' >/dev/null && ! ip -n "$U" -4 -o addr show dev eth1 | grep inet >/dev/null; then
	pass moved "$(tr '\n' ';' <<<"$after")"
else
	fail moved "$after / $(ip -n "$U" -4 -o addr)"
fi
reach && pass reach-through-bridge || fail reach-through-bridge
if grep -q '^uplink-port = eth1$' "$VMHOST_HOME/networks/ex.conf" && vh net show ex --json | python3 -c '
import json, sys
u = json.load(sys.stdin)["uplink"]
assert u == {"port": "eth1", "host_ip": "192.0.2.10/24", "gateway": "192.0.2.1"}, u'; then
	pass uplink-recorded
else
	fail uplink-recorded "$(cat "$VMHOST_HOME/networks/ex.conf")"
fi
if out=$(vh net uplink ex --port eth1 --host-ip 192.0.2.10/24 2>&1); then fail second-uplink-refused "$out"; else pass second-uplink-refused "$out"; fi

# ------------------------------------------------------------------ back
if out=$(vh net uplink ex --remove 2>&1) && [ "$(nic_state)" = "$BEFORE" ] && reach; then
	pass remove "$(tr '\n' ';' <<<"$out")"
else
	fail remove "$out / $(nic_state)"
fi
# once more, then stop + start (the uplink is part of the network), then delete
vh net uplink ex --port eth1 --host-ip 192.0.2.10/24 >/dev/null || fail uplink-again
if vh net stop ex >/dev/null && [ "$(nic_state)" = "$BEFORE" ] && reach; then pass stop-restores; else fail stop-restores "$(nic_state)"; fi
if vh net start ex >/dev/null && grep -q 'master: vb-ex' <<<"$(nic_state)" && reach; then pass start-reapplies; else fail start-reapplies "$(nic_state)"; fi
if vh net delete ex >/dev/null && [ "$(nic_state)" = "$BEFORE" ] && reach && ! ip -n "$U" link show vb-ex >/dev/null 2>&1; then
	pass delete-restores "$(tr '\n' ';' <<<"$(nic_state)")"
else
	fail delete-restores "$(nic_state)"
fi

# ------------------------------------------------------------------ into Open vSwitch
mkdir -p "$OVS_DIR"
ovsdb-tool create "$OVS_DIR/conf.db" /usr/share/openvswitch/vswitch.ovsschema
OVS_RUNDIR=$OVS_DIR OVS_DBDIR=$OVS_DIR OVS_LOGDIR=$OVS_DIR ip netns exec "$U" ovsdb-server "$OVS_DIR/conf.db" \
	--remote=punix:"$OVS_DIR/db.sock" --pidfile="$OVS_DIR/ovsdb-server.pid" --unixctl="$OVS_DIR/ovsdb-server.ctl" \
	--log-file="$OVS_DIR/ovsdb-server.log" --detach
ovs-vsctl --db=unix:"$OVS_DIR/db.sock" --no-wait init
OVS_RUNDIR=$OVS_DIR OVS_DBDIR=$OVS_DIR OVS_LOGDIR=$OVS_DIR ip netns exec "$U" ovs-vswitchd unix:"$OVS_DIR/db.sock" \
	--pidfile="$OVS_DIR/ovs-vswitchd.pid" --unixctl="$OVS_DIR/ovs-vswitchd.ctl" --log-file="$OVS_DIR/ovs-vswitchd.log" \
	--detach 2>/dev/null
vh net create exo --type ovs --subnet 10.94.0.0/24 --ovs-db unix:"$OVS_DIR/db.sock" >/dev/null && pass ovs-create || fail ovs-create
# The fault is the injected one at the last step, the four before it are
# undone, and the OVS bridge (which must still exist) has no port left.
if out=$(VMHOST_NET_FAULT=uplink:5 vh net uplink exo --port eth1 --host-ip 192.0.2.10/24 2>&1); then
	fail ovs-rollback "succeeded despite the fault"
elif grep -q 'fault injected by VMHOST_NET_FAULT' <<<"$out" && [ "$(grep -c '^rollback: undo .*: ok' <<<"$out")" = 4 ] &&
   [ "$(nic_state)" = "$BEFORE" ] && reach && ovs-vsctl --db=unix:"$OVS_DIR/db.sock" br-exists vb-exo &&
   ports=$(ovs-vsctl --db=unix:"$OVS_DIR/db.sock" list-ports vb-exo) && [ -z "$ports" ]; then
	pass ovs-rollback "$(grep -c '^rollback: undo .*: ok' <<<"$out") steps undone, eth1 out of the switch again"
else
	fail ovs-rollback "$out / $(nic_state)"
fi
# The "LAN" is a veth, which hands over TCP packets with checksums still to be
# filled in; the userspace datapath reads them raw (AF_PACKET) and the host
# would drop them. A real NIC delivers complete checksums: make the veth peer
# do so too (ethtool -K lan0 tx off, through the ioctl, without ethtool).
ip netns exec "$P" python3 -c '
import array, fcntl, socket, struct
cmd = array.array("B", struct.pack("II", 0x17, 0))  # ETHTOOL_STXCSUM, off
ifr = struct.pack("16sQ8x", b"lan0", cmd.buffer_info()[0])
fcntl.ioctl(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), 0x8946, ifr)  # SIOCETHTOOL'
if out=$(vh net uplink exo --port eth1 --host-ip 192.0.2.10/24 2>&1) && reach &&
   [ "$(ovs-vsctl --db=unix:"$OVS_DIR/db.sock" list-ports vb-exo)" = eth1 ] &&
   ip -n "$U" -4 -o addr show dev vb-exo | grep '192.0.2.10/24' >/dev/null; then
	pass ovs-uplink "LAN reachable through the OVS internal port"
else
	fail ovs-uplink "$out / $(nic_state)"
fi
if vh net delete exo >/dev/null && [ "$(nic_state)" = "$BEFORE" ] && reach; then pass ovs-delete-restores; else fail ovs-delete-restores "$(nic_state)"; fi
e2e_finish
