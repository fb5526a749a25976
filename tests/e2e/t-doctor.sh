#!/usr/bin/env bash
# 'vmhost doctor' on this very host: the table and --json agree, the
# accelerator follows the KVM probe (never /dev/kvm's mere existence), and
# the exit status says VMs can run (QEMU with TCG is installed by CI).
# The ovs-daemons row: a private ovsdb-server and ovs-vswitchd (run
# directory in E2E_TMP, in a network namespace, as in t-net-ovs.sh) are
# "running"; each one stopped is named; a run directory with nothing in it
# is "not running"; the system's own daemons, whatever their state here, get
# the command that starts them when they are stopped.
# shellcheck disable=SC2154 # rc: set in the trap
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init doctor
need python3 ip ovsdb-server ovs-vswitchd ovsdb-tool ovs-vsctl

t0=$(e2e_now)
"$VMHOST" doctor >"$E2E_TMP/table" 2>&1
rc=$?
[ $rc -eq 0 ] && pass doctor-exit-0 "in $(e2e_elapsed "$t0") s" || fail doctor-exit-0 "exit $rc"
cat "$E2E_TMP/table"
"$VMHOST" doctor --json >"$E2E_TMP/json" 2>&1 || true
python3 - "$E2E_TMP/json" <<'EOF2' && pass doctor-json-consistent || fail doctor-json-consistent
import json, os, sys
d = json.load(open(sys.argv[1]))
checks = {c["name"]: c for c in d["checks"]}
for c in d["checks"]:
    assert set(c) >= {"name", "status", "value", "reason"}, c
    assert c["status"] in ("ok", "warn", "missing", "unusable"), c
assert d["can-run-vms"] is True, d
probe = d["kvm-probe"]
kvm = checks["kvm"]
if not os.path.exists("/dev/kvm"):
    assert kvm["status"] == "missing", kvm
    assert d["accelerator"] == "tcg", d["accelerator"]
elif d["accelerator"] == "kvm":
    # KVM is chosen only after the guest loop ran at full speed.
    assert kvm["status"] == "ok" and probe["instructions-per-second"] >= 100e6, probe
else:
    assert kvm["status"] in ("unusable", "missing"), kvm
    assert kvm["reason"], kvm
print("accelerator:", d["accelerator"], "| kvm:", kvm["status"], "-", kvm["reason"])
EOF2
grep -qE '^accelerator: (tcg|kvm) ' "$E2E_TMP/table" && pass doctor-names-accelerator "$(grep '^accelerator:' "$E2E_TMP/table")" ||
	fail doctor-names-accelerator
grep -qE '^KVM: ' "$E2E_TMP/table" && pass doctor-says-why-kvm "$(grep '^KVM:' "$E2E_TMP/table")" || fail doctor-says-why-kvm
"$VMHOST" doctor --help | grep -q "Example" && pass doctor-help || fail doctor-help
"$VMHOST" doctor --bogus >/dev/null 2>&1; [ $? -eq 2 ] && pass doctor-bad-option || fail doctor-bad-option

# ovs_row [VAR=VALUE...]: the ovs-daemons row of 'doctor --json' run with
# that environment, as "STATUS|VALUE|REASON".
ovs_row() {
	env "$@" "$VMHOST" doctor --json 2>/dev/null | python3 -c '
import json, sys
c = [c for c in json.load(sys.stdin)["checks"] if c["name"] == "ovs-daemons"]
print("%s|%s|%s" % (c[0]["status"], c[0]["value"], c[0]["reason"]) if len(c) == 1 else "no ovs-daemons row")'
}
# expect_row NAME ROW STATUS VALUE REASON-REGEX
expect_row() {
	local IFS='|' st val why
	read -r st val why <<<"$2"
	if [ "$st" = "$3" ] && [ "$val" = "$4" ] && grep -qE "$5" <<<"$why"; then pass "$1" "$2"; else fail "$1" "$2"; fi
}

# The system's daemons: this machine may have them running or not.
row=$(ovs_row VMHOST_OVS_DB= OVS_RUNDIR=)
if [ -S /var/run/openvswitch/db.sock ] && ovs-vsctl --timeout=2 --no-wait show >/dev/null 2>&1 &&
   ovs-appctl -T 2 -t ovs-vswitchd version >/dev/null 2>&1; then
	expect_row ovs-daemons-system-running "$row" ok running 'ovsdb-server answers on /var/run/openvswitch/db.sock; ovs-vswitchd runs'
else
	# "not running" or one of them: either way the command that starts them.
	expect_row ovs-daemons-system-stopped "$row" unusable "$(cut -d'|' -f2 <<<"$row")" \
		'OVS networks fail until they run: service openvswitch-switch start$'
	grep -qE '^unusable\|(not running|ovsdb-server not running|ovs-vswitchd not running)\|' <<<"$row" ||
		fail ovs-daemons-system-value "$row"
fi

# Nothing there: both are named, and no start command for another host's OVS.
expect_row ovs-daemons-none "$(ovs_row VMHOST_OVS_DB= OVS_RUNDIR="$E2E_TMP/nowhere")" unusable "not running" \
	"^ovsdb-server: no socket \($E2E_TMP/nowhere/db.sock\); ovs-vswitchd: no pid file $E2E_TMP/nowhere/ovs-vswitchd.pid; OVS networks fail until the daemons for this database run$"

# A private Open vSwitch: default file names inside its own run directory.
NS=vhdoc-$$
OVS_DIR=$E2E_TMP/ovs
ovs_cleanup() {
	local p
	for p in "$OVS_DIR"/ovs-vswitchd.pid "$OVS_DIR"/ovsdb-server.pid; do [ -f "$p" ] && stop_pid "$(cat "$p")"; done
	ip netns del "$NS" 2>/dev/null
}
trap 'rc=$?; ovs_cleanup; (exit $rc); e2e_cleanup' EXIT
mkdir -p "$OVS_DIR"
ip netns add "$NS"
ovsenv=(env OVS_RUNDIR="$OVS_DIR" OVS_DBDIR="$OVS_DIR" OVS_LOGDIR="$OVS_DIR")
ovsdb-tool create "$OVS_DIR/conf.db" /usr/share/openvswitch/vswitch.ovsschema
# ovs_start: both daemons, logging to files only.
ovs_start() {
	"${ovsenv[@]}" ip netns exec "$NS" ovsdb-server "$OVS_DIR/conf.db" --remote=punix:"$OVS_DIR/db.sock" \
		--pidfile --log-file -vconsole:off --detach
	ovs-vsctl --db=unix:"$OVS_DIR/db.sock" --timeout=10 --no-wait init
	"${ovsenv[@]}" ip netns exec "$NS" timeout 30 ovs-vswitchd unix:"$OVS_DIR/db.sock" --pidfile --log-file \
		-vconsole:off --detach
}
ovs_start
vpid=$(cat "$OVS_DIR/ovs-vswitchd.pid" 2>/dev/null)
if [ -n "$vpid" ] && [ -S "$OVS_DIR/ovs-vswitchd.$vpid.ctl" ]; then pass ovs-private-up "ovs-vswitchd pid $vpid"; else
	fail ovs-private-up "$(ls "$OVS_DIR")"; fi
expect_row ovs-daemons-running "$(ovs_row VMHOST_OVS_DB= OVS_RUNDIR="$OVS_DIR")" ok running \
	"^ovsdb-server answers on $OVS_DIR/db.sock; ovs-vswitchd runs \(pid $vpid\)$"
# The database named by VMHOST_OVS_DB, as 'net create' would use it.
expect_row ovs-daemons-db-override "$(ovs_row VMHOST_OVS_DB=unix:"$OVS_DIR/db.sock" OVS_RUNDIR="$OVS_DIR")" ok running \
	"^ovsdb-server answers on $OVS_DIR/db.sock;"

# ovs-vswitchd stopped: its pid file names a dead process, or is gone.
stop_pid "$vpid"
expect_row ovs-daemons-vswitchd-stopped "$(ovs_row VMHOST_OVS_DB= OVS_RUNDIR="$OVS_DIR")" unusable "ovs-vswitchd not running" \
	"^ovsdb-server answers on $OVS_DIR/db.sock; ovs-vswitchd: "
# ovsdb-server stopped too.
stop_pid "$(cat "$OVS_DIR/ovsdb-server.pid")"
expect_row ovs-daemons-both-stopped "$(ovs_row VMHOST_OVS_DB= OVS_RUNDIR="$OVS_DIR")" unusable "not running" \
	"^ovsdb-server: (no socket|nobody listens on the socket) \($OVS_DIR/db.sock\); ovs-vswitchd: "
# ovs-vswitchd back, then ovsdb-server stopped: the database is what is
# missing. (ovs-vswitchd --detach waits for the database, so it starts first.)
ovs_start
stop_pid "$(cat "$OVS_DIR/ovsdb-server.pid")"
expect_row ovs-daemons-db-stopped "$(ovs_row VMHOST_OVS_DB= OVS_RUNDIR="$OVS_DIR")" unusable "ovsdb-server not running" \
	"^ovsdb-server: (no socket|nobody listens on the socket) \($OVS_DIR/db.sock\); ovs-vswitchd runs \(pid [0-9]+\)"
e2e_finish
