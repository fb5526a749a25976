#!/bin/bash
# tests/e2e/t-host-cluster.sh: a small cluster over real OpenSSH, driven
# from this side ("a") only: hosts b and c (tests/e2e/lib-hosts.sh: a
# network namespace each, with its own sshd, private vmhost state, run and
# /root directories, machine-id and Open vSwitch) are reached with
# 'vmhost --host b|c ...' for every vmhost command; 'ip netns' only
# observes. Checks:
#   base     the guest's base image reaches b and c over ssh (push_base)
#   net      on each host: the NIC moved into an OVS switch ('net uplink'),
#            a VM network joined to the other host's by VXLAN (the
#            tutorial's 5.4); b serves DHCP for both
#   vm       a VM on b and one on c, overlays on their host's own base,
#            started in parallel and waited for up to the ready line; each
#            QEMU runs in its host's namespace
#   tcp      the guests greet each other and move 512 KiB over the tunnel,
#            through 'vmhost --host H vm console'
#   names    shell-injection names as VM and network names run nothing on b
#   down     with c stopped, '--host c' fails within the timeout naming c
#            (exit 255) and 'host list' still succeeds, with c down
#   cleanup  no namespace, bridge or process of the test is left
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init host-cluster
need ip python3 scp qemu-system-x86_64 ovs-vsctl ovsdb-server ovs-vswitchd ovsdb-tool
VMHOST=${VMHOST:-$ROOT/build/src/cli/vmhost}
[ -x "$VMHOST" ] || { fail vmhost-built "$VMHOST is not built"; e2e_finish; }
VMHOST=$(readlink -f "$VMHOST")
# Room for VXLAN's 50 bytes around the guests' 1500-byte frames.
HOSTS_MTU=1600
# shellcheck source=tests/e2e/lib-hosts.sh
source "$HERE/lib-hosts.sh"
OWNED=/tmp/vmhost-owned-$$
trap 'rc=$?; hosts_cleanup; rm -f "$OWNED"; (exit $rc); e2e_cleanup' EXIT
hosts_init
T0=$(e2e_now)

if [ -n "${VMHOST_GUEST_DIR:-}" ]; then
	GUEST_DIR=$VMHOST_GUEST_DIR
else
	"$VMHOST" guest build >/dev/null || { fail guest-build; e2e_finish; }
	GUEST_DIR=$VMHOST_HOME/guest
fi
[ -s "$GUEST_DIR/disk.qcow2" ] || { fail guest "no $GUEST_DIR/disk.qcow2"; e2e_finish; }

# The base image as the hosts see it.
BASE=/var/lib/vmhost/images/disk.qcow2
SUBNET=10.93.0

# push_base HOST: the guest's base onto HOST, at $BASE (its STATE/images),
# by 'vmhost img push'; both hosts at once, from the one local file.
push_base() {
	"$VMHOST" img push -q "$GUEST_DIR/disk.qcow2" "$1"
}

# on HOST ARGS...: vmhost ARGS on HOST, over ssh.
on() { local h=$1; shift; "$VMHOST" --host "$h" "$@"; }

# ------------------------------------------------------------------ hosts
if ! host_new b ovs || ! host_new c ovs; then e2e_finish; fi
for h in b c; do
	if out=$(host_add "$h" 2>&1); then pass "host add $h" "$(head -1 <<<"$out")"; else fail "host add $h" "$out"; e2e_finish; fi
done
t=$(e2e_now)
push_base b & pb=$!
push_base c & pc=$!
wait $pb; rb=$?
wait $pc; rc=$?
if [ $rb = 0 ] && [ $rc = 0 ] && cmp -s "$GUEST_DIR/disk.qcow2" "$(host_dir b)/state/images/disk.qcow2" &&
	cmp -s "$GUEST_DIR/disk.qcow2" "$(host_dir c)/state/images/disk.qcow2"; then
	pass base-pushed "$BASE on b and c in $(e2e_elapsed "$t") s"
else
	fail base-pushed "img push: b $rb, c $rc"; e2e_finish
fi

# ------------------------------------------------------------------ networks
# net_setup HOST OTHER GATEWAY [CREATE-OPTIONS...]: the underlay NIC into
# OVS network phy (the userspace datapath sends tunnel packets only out of
# an OVS bridge holding the underlay address), then network lan with a
# VXLAN tunnel to OTHER. The uplink moves the address this very ssh
# session runs over; the session survives it.
net_setup() {
	local h=$1 other=$2 gw=$3
	shift 3
	on "$h" net create phy --type ovs --mtu "$HOSTS_MTU" &&
		on "$h" net uplink phy --port eth0 --host-ip "$(host_ip "$h")/24" &&
		on "$h" net create lan --type ovs --subnet "$SUBNET.0/24" --gateway "$gw" "$@" &&
		on "$h" net tunnel add lan --remote "$(host_ip "$other")" --type vxlan --key 42
}
t=$(e2e_now)
net_setup b c "$SUBNET.251" --dhcp "$SUBNET.100-$SUBNET.150" >"$E2E_TMP/net-b.txt" 2>&1 & pb=$!
net_setup c b "$SUBNET.252" >"$E2E_TMP/net-c.txt" 2>&1 & pc=$!
wait $pb; rb=$?
wait $pc; rc=$?
for h in b c; do
	eval "r=\$r$h"
	# shellcheck disable=SC2154 # set by the eval
	if [ "$r" = 0 ] && ip -n "$(host_ns "$h")" -4 addr show dev vb-phy | grep -q "$(host_ip "$h")/24"; then
		pass "net-$h" "uplink and VXLAN on $h: $(tr '\n' ';' <"$E2E_TMP/net-$h.txt" | cut -c1-300)"
	else
		fail "net-$h" "exit $r: $(cat "$E2E_TMP/net-$h.txt")"
	fi
done
echo "networks in $(e2e_elapsed "$t") s"
if out=$(on b net show lan --json 2>&1) && python3 -c 'import json,sys
n = json.loads(sys.argv[1])
t = n["tunnels"]
assert len(t) == 1 and t[0]["remote"] == sys.argv[2] and n["effective_mtu"] == 1500, n' "$out" "$(host_ip c)" 2>/dev/null; then
	pass tunnel-b "b's lan: VXLAN to c, MTU 1500 kept"
else
	fail tunnel-b "$out"
fi

# ------------------------------------------------------------------ VMs
for h in b c; do
	if out=$(on "$h" vm create "g$h" --base "$BASE" --net lan --vnc none 2>&1); then
		pass "vm create on $h" "$(head -1 <<<"$out")"
	else
		fail "vm create on $h" "$out"
	fi
done
# The overlay is b's, on b's copy of the base; this side has no such VM.
ov=$(ls "$(host_dir b)"/state/vms/gb/*.qcow2 2>/dev/null | head -1)
if [ -n "$ov" ] && qemu-img info -U "$ov" 2>/dev/null | grep -qx "backing file: $BASE" && ! "$VMHOST" vm list | grep -q '^gb '; then
	pass overlay-on-b "$(basename "$ov") over $BASE as b sees it"
else
	fail overlay-on-b "overlay '$ov': $(qemu-img info -U "$ov" 2>&1 | grep backing)"
fi
t=$(e2e_now)
on b vm start gb --wait --timeout 120 >"$E2E_TMP/start-b.txt" 2>&1 & pb=$!
on c vm start gc --wait --timeout 120 >"$E2E_TMP/start-c.txt" 2>&1 & pc=$!
wait $pb; rb=$?
wait $pc; rc=$?
boot_s=$(e2e_elapsed "$t")
declare -A IP=() MAC=()
QEMU_PIDS=()
for h in b c; do
	eval "r=\$r$h"
	ready=$(grep -o 'VMHOST-READY .*' "$E2E_TMP/start-$h.txt")
	IP[$h]=$(sed -n 's/.* ip=\([0-9.]*\) .*/\1/p' <<<"$ready")
	if [ "$r" = 0 ] && [[ ${IP[$h]} == "$SUBNET".1[0-5][0-9] ]]; then
		pass "ready-g$h" "$ready (both in $boot_s s)"
	else
		fail "ready-g$h" "exit $r: $(cat "$E2E_TMP/start-$h.txt"); serial: $(tail -c 600 "$(host_dir "$h")/state/vms/g$h/serial.log" 2>/dev/null)"
	fi
	st=$(on "$h" vm status "g$h" --json 2>/dev/null)
	pid=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["pid"])' "$st" 2>/dev/null)
	MAC[$h]=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["nics"][0]["mac"])' "$st" 2>/dev/null)
	other=$([ "$h" = b ] && echo c || echo b)
	if [ -n "$pid" ] && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "qemu-system.*g$h" && ip netns pids "$(host_ns "$h")" | grep -qx "$pid" &&
		! ip netns pids "$(host_ns "$other")" | grep -qx "$pid"; then
		QEMU_PIDS+=("$pid")
		pass "qemu-in-$h" "pid $pid in namespace $(host_ns "$h")"
	else
		fail "qemu-in-$h" "pid '$pid'; $h's namespace: $(ip netns pids "$(host_ns "$h")" | tr '\n' ' ')"
	fi
done

# Both VMs are their host's VM 1; their MACs, derived from each host's
# machine id, must differ all the same on the one segment.
if [ -n "${MAC[b]}" ] && [ -n "${MAC[c]}" ] && [ "${MAC[b]}" != "${MAC[c]}" ]; then
	pass macs-differ "gb ${MAC[b]}, gc ${MAC[c]}"
else
	fail macs-differ "gb '${MAC[b]}', gc '${MAC[c]}'"
fi

# ------------------------------------------------------------------ TCP over the tunnel
# cross FROM TO: FROM's guest reads TO's greeting, then a 512 KiB transfer
# from TO to FROM (full-size frames through VXLAN).
cross() {
	local from=$1 to=$2 out t
	t=$(e2e_now)
	if out=$(console_cmd "$from" "g$from" 30 "timeout 20 nc ${IP[$to]} 7777") && [ "$out" = "vmhost-guest guest hello" ]; then
		pass "tcp-$from-$to" "g$from -> g$to (${IP[$to]}): '$out' in $(e2e_elapsed "$t") s"
	else
		fail "tcp-$from-$to" "'${out:-}'"
	fi
	# The sender runs per connection (nc -e); the guest polls its
	# /proc/net/tcp until nc listens on 9000 (0x2328), at most 10 s.
	console_cmd "$to" "g$to" 20 "printf '#!/bin/sh\\ndd if=/dev/zero bs=1024 count=512 2>/dev/null\\n' >/tmp/bulk; chmod +x /tmp/bulk; (nc -l -p 9000 -e /tmp/bulk >/dev/null 2>&1 &); n=0; until grep -qsE ':2328 [0-9A-F]+:0000 0A' /proc/net/tcp /proc/net/tcp6 || [ \$n -ge 200 ]; do usleep 50000; n=\$((n+1)); done" >/dev/null
	t=$(e2e_now)
	if out=$(console_cmd "$from" "g$from" 40 "timeout 30 nc ${IP[$to]} 9000 </dev/null | wc -c") && [ "$out" = 524288 ]; then
		pass "bulk-$to-$from" "524288 bytes g$to -> g$from in $(e2e_elapsed "$t") s"
	else
		fail "bulk-$to-$from" "got '${out:-}' bytes"
	fi
}
cross b c
cross c b

# ------------------------------------------------------------------ injection names
nets_before=$(ls "$(host_dir b)/state/networks" 2>/dev/null | tr '\n' ' ')
for evil in "x;touch $OWNED" "\$(id)"; do
	rc=0
	out=$(on b vm create "$evil" --base "$BASE" --vnc none 2>&1) || rc=$?
	if [ $rc = 2 ] && grep -qF "Invalid VM name '$evil'" <<<"$out" && [ ! -e "$OWNED" ] &&
		[ "$(ls "$(host_dir b)/state/vms")" = gb ]; then
		pass "vm name stays a name: $evil" "$out"
	else
		fail "vm name stays a name: $evil" "exit $rc: $out; b's VMs: $(ls "$(host_dir b)/state/vms" | tr '\n' ' ')"
	fi
	rc=0
	out=$(on b net create "$evil" --type ovs 2>&1) || rc=$?
	if [ $rc = 2 ] && grep -qF "'$evil'" <<<"$out" && [ ! -e "$OWNED" ] &&
		[ "$(ls "$(host_dir b)/state/networks" 2>/dev/null | tr '\n' ' ')" = "$nets_before" ]; then
		pass "network name stays a name: $evil" "$out"
	else
		fail "network name stays a name: $evil" "exit $rc: $out; b's networks: $(ls "$(host_dir b)/state/networks" | tr '\n' ' ')"
	fi
done

# ------------------------------------------------------------------ one view
# all_hosts_check WANT: 'vm list --all-hosts --json' has gb running on b
# and, WANT=up, gc running on c, or, WANT=down, c listed as down.
all_hosts_check() {
	python3 -c 'import json, sys
want = sys.argv[1]
d = {h["host"]: h for h in json.load(open(sys.argv[2]))}
assert set(d) >= {"local", "b", "c"}, d.keys()
def vms(h): return {v["name"]: v["state"] for v in d[h]["vms"]}
assert d["b"]["reachable"] and vms("b") == {"gb": "running"}, d["b"]
assert "gb" not in vms("local") and "gc" not in vms("local"), d["local"]
if want == "up":
    assert d["c"]["reachable"] and vms("c") == {"gc": "running"}, d["c"]
else:
    assert not d["c"]["reachable"] and "c" in (d["c"]["error"] or ""), d["c"]' "$1" "$E2E_TMP/all.json"
}
rc=0
"$VMHOST" vm list --all-hosts --json >"$E2E_TMP/all.json" 2>"$E2E_TMP/all.err" || rc=$?
"$VMHOST" vm list --all-hosts >"$E2E_TMP/all.txt" 2>&1 || rc=$?
if [ $rc = 0 ] && all_hosts_check up 2>"$E2E_TMP/all.py" && grep -qE "^b +gb +running" "$E2E_TMP/all.txt" &&
	grep -qE "^c +gc +running" "$E2E_TMP/all.txt"; then
	pass "vm list --all-hosts" "$(grep -E '^(b|c) ' "$E2E_TMP/all.txt" | tr -s ' ' | tr '\n' ';')"
else
	fail "vm list --all-hosts" "exit $rc: $(cat "$E2E_TMP/all.txt" "$E2E_TMP/all.err" "$E2E_TMP/all.py")"
fi

# ------------------------------------------------------------------ a host down
host_stop c
t=$(e2e_now)
rc=0
# c died without closing this side's ssh connection (its OVS went with
# it): the command must not wait on the dead connection. 'timeout' only
# keeps this test from hanging if it did; the output goes to a file, as
# the ssh master holds a client's output descriptors (they are passed to
# it) and a pipe would not end with the client.
timeout -k 5 60 "$VMHOST" --host c vm list >"$E2E_TMP/down.txt" 2>&1 || rc=$?
dt=$(e2e_elapsed "$t")
out=$(cat "$E2E_TMP/down.txt")
if [ $rc = 255 ] && grep -q "host 'c'" <<<"$out" && awk -v d="$dt" 'BEGIN { exit !(d < 15) }'; then
	pass "host c down: --host c fails clearly" "exit 255 after $dt s: $out"
else
	fail "host c down: --host c fails clearly" "exit $rc after $dt s: $out"
fi
t=$(e2e_now)
rc=0
timeout -k 5 60 "$VMHOST" host list >"$E2E_TMP/list.txt" 2>&1 || rc=$?
dt=$(e2e_elapsed "$t")
out=$(cat "$E2E_TMP/list.txt")
if [ $rc = 0 ] && grep -qE "^b .* reachable " <<<"$out" && grep -qE "^c .* down " <<<"$out" &&
	awk -v d="$dt" 'BEGIN { exit !(d < 15) }'; then
	pass "host list with c down" "$dt s: $(grep '^c ' <<<"$out")"
else
	fail "host list with c down" "exit $rc after $dt s: $out"
fi
t=$(e2e_now)
rc=0
timeout -k 5 60 "$VMHOST" vm list --all-hosts --json >"$E2E_TMP/all.json" 2>"$E2E_TMP/all.err" || rc=$?
dt=$(e2e_elapsed "$t")
timeout -k 5 60 "$VMHOST" vm list --all-hosts >"$E2E_TMP/all.txt" 2>&1 || rc=$?
if [ $rc = 0 ] && all_hosts_check down 2>"$E2E_TMP/all.py" && grep -qE "^c .*down" "$E2E_TMP/all.txt" &&
	awk -v d="$dt" 'BEGIN { exit !(d < 15) }'; then
	pass "vm list --all-hosts with c down" "$dt s: $(grep -E '^c ' "$E2E_TMP/all.txt")"
else
	fail "vm list --all-hosts with c down" "exit $rc after $dt s: $(cat "$E2E_TMP/all.txt" "$E2E_TMP/all.err" "$E2E_TMP/all.py")"
fi
# b is unaffected.
if out=$(on b vm status gb --json 2>&1) && grep -q '"state": *"running"' <<<"$out"; then
	pass "b runs on" "gb running"
else
	fail "b runs on" "$out"
fi

# ------------------------------------------------------------------ cleanup
# The trap runs it again; here it is checked.
nss="$(host_ns b) $(host_ns c)"
hosts_cleanup
left=$(ip netns list | grep -wE "$(host_ns b)|$(host_ns c)"; ip -o link show | grep -E "vhh$$|$HOSTS_SWITCH";
	pgrep -af "$E2E_TMP"; for p in "${QEMU_PIDS[@]}"; do pid_dead "$p" || echo "QEMU $p"; done)
if [ -z "$left" ]; then
	pass cleanup "namespaces $nss, switch $HOSTS_SWITCH, sshd, OVS and QEMU gone"
else
	fail cleanup "left: $left"
fi
echo "total $(e2e_elapsed "$T0") s"
e2e_finish
