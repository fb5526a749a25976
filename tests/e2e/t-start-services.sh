#!/usr/bin/env bash
# tests/e2e/t-start-services.sh: tools/start-services (run by 'make run' and
# tools/run-tests) starts Open vSwitch when it is installed but stopped, and
# is idempotent. It runs against a private Open vSwitch (OVS_RUNDIR and
# friends in E2E_TMP, in a network namespace) so that the system's daemons,
# which other tests may use, are not touched:
#   - stopped: it starts both daemons; 'vmhost doctor' then says running
#   - running: a second run changes nothing (same pids)
#   - ovs-vswitchd killed: it starts ovs-vswitchd again, ovsdb-server stays
#   - not installed (ovsdb-server not in PATH): says so, exit 0
# shellcheck disable=SC2154 # rc: set in the trap
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init start-services
need python3 ip ovsdb-server ovs-vswitchd ovs-vsctl ovs-appctl
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (network namespaces)"; exit 77; }
START=$here/../../tools/start-services

NS=vhss-$$
D=$E2E_TMP/ovs
export OVS_RUNDIR=$D/run OVS_DBDIR=$D/db OVS_LOGDIR=$D/log OVS_SYSCONFDIR=$D/etc
mkdir -p "$OVS_RUNDIR" "$OVS_DBDIR" "$OVS_LOGDIR" "$OVS_SYSCONFDIR/openvswitch"
ss_cleanup() {
	local p
	for p in "$OVS_RUNDIR"/ovs-vswitchd.pid "$OVS_RUNDIR"/ovsdb-server.pid; do [ -f "$p" ] && stop_pid "$(cat "$p")"; done
	ip netns del "$NS" 2>/dev/null
}
trap 'rc=$?; ss_cleanup; (exit $rc); e2e_cleanup' EXIT
ip netns add "$NS"
start() { ip netns exec "$NS" "$START" >"$E2E_TMP/out" 2>&1; }
pids() { echo "$(cat "$OVS_RUNDIR/ovsdb-server.pid" 2>/dev/null) $(cat "$OVS_RUNDIR/ovs-vswitchd.pid" 2>/dev/null)"; }
doctor_row() {
	"$VMHOST" doctor --json 2>/dev/null | python3 -c '
import json, sys
print(*[c["status"] + " " + c["value"] for c in json.load(sys.stdin)["checks"] if c["name"] == "ovs-daemons"])'
}

[ "$(doctor_row)" = "unusable not running" ] && pass stopped-before "$(doctor_row)" || fail stopped-before "$(doctor_row)"

if start && grep -q '^start-services: Open vSwitch is not running: .*ovs-ctl start' "$E2E_TMP/out" &&
   grep -q '^start-services: Open vSwitch: ovsdb-server and ovs-vswitchd are running' "$E2E_TMP/out"; then
	pass starts-both "pids $(pids)"
else
	fail starts-both "$(cat "$E2E_TMP/out")"
fi
[ "$(doctor_row)" = "ok running" ] && pass doctor-running "$(doctor_row)" || fail doctor-running "$(doctor_row)"

before=$(pids)
if start && ! grep -q 'not running' "$E2E_TMP/out" && [ "$(pids)" = "$before" ]; then
	pass idempotent "$(tail -1 "$E2E_TMP/out"); pids $before unchanged"
else
	fail idempotent "pids $before -> $(pids): $(cat "$E2E_TMP/out")"
fi

read -r dbpid swpid <<<"$before"
stop_pid "$swpid"
[ "$(doctor_row)" = "unusable ovs-vswitchd not running" ] && pass vswitchd-killed "$(doctor_row)" ||
	fail vswitchd-killed "$(doctor_row)"
read -r dbpid2 swpid2 <<<"$(start; pids)"
if [ "$dbpid2" = "$dbpid" ] && [ -n "$swpid2" ] && [ "$swpid2" != "$swpid" ] && [ "$(doctor_row)" = "ok running" ]; then
	pass restarts-vswitchd "ovsdb-server $dbpid kept, ovs-vswitchd $swpid -> $swpid2"
else
	fail restarts-vswitchd "ovsdb-server $dbpid -> $dbpid2, ovs-vswitchd $swpid -> $swpid2: $(cat "$E2E_TMP/out")"
fi

mkdir -p "$E2E_TMP/bin"
ln -s "$(command -v bash)" "$E2E_TMP/bin/bash"
if out=$(PATH=$E2E_TMP/bin bash "$START" 2>&1) && grep -q 'Open vSwitch is not installed: nothing to start' <<<"$out"; then
	pass not-installed "$out"
else
	fail not-installed "$out"
fi
e2e_finish
