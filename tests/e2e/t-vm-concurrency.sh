#!/usr/bin/env bash
# Many vmhost commands at once on the same VMs and on different ones: the
# per-VM lock must keep exactly one QEMU per VM, make every reported
# success true ("started" VMs run, "deleted" VMs are gone, one of two
# creates of a name wins), give no two definitions the same id, MAC or VNC
# display, and leave no QEMU or tap behind. First the scenario of issue 11:
# two 'vm start r1' at once, 5 rounds. The VMs run in a network namespace
# on a bridge network, so that their NICs are real taps.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init vm-concurrency
source "$here/vmhost-env.sh"
need python3 ip pgrep
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (network namespaces, taps)"; exit 77; }

H=vhcc-h$$
ip netns add "$H" && ip -n "$H" link set lo up
vh() { ip netns exec "$H" "$VMHOST" "$@"; }
RUNVMS=$VMHOST_HOME/run/vms
cleanup_ns() {
	local n
	for n in $(ls "$VMHOST_HOME/vms" 2>/dev/null); do vh vm kill "$n" >/dev/null 2>&1; done
	vh net delete lan >/dev/null 2>&1
	ip netns del "$H" 2>/dev/null
}
trap 'rc=$?; cleanup_ns; (exit $rc); e2e_cleanup' EXIT

# qemu_pids NAME: the pids of every process whose command line names VM
# NAME's QMP socket (QEMU, whoever started it), one per line.
qemu_pids() { pgrep -f -- "$RUNVMS/$1/qmp.sock" || true; }
qemu_count() { qemu_pids "$1" | grep -c . ; }
pidfile_pid() { cat "$RUNVMS/$1/qemu.pid" 2>/dev/null | tr -d ' \n' || true; }
state() { vh vm status "$1" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null || echo none; }
taps() { ip -n "$H" -o link show 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1 | grep '^vh-' | sort | tr '\n' ' '; }

# check_one_qemu NAME: a running VM has exactly one QEMU, the one of its pid
# file and its status; a VM that does not run has none.
check_one_qemu() {
	local n=$1 st c pids pf
	st=$(state "$n") c=$(qemu_count "$n") pids=$(qemu_pids "$n" | tr '\n' ' ') pf=$(pidfile_pid "$n")
	if [ "$st" = running ]; then
		[ "$c" = 1 ] && [ "${pids% }" = "$pf" ] && [ "$(vh vm status "$n" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])')" = "$pf" ]
	else
		[ "$c" = 0 ]
	fi || { echo "VM $n: state $st, $c QEMU ($pids), pid file '$pf'"; return 1; }
}

KARGS=(--boot kernel --kernel "$GUEST_DIR/vmlinuz" --initrd "$GUEST_DIR/initrd.img" --memory 128M --net lan)
append() { echo "console=ttyS0 quiet panic=-1 no_timer_check vmhost.name=$1 vmhost.net=none"; }
create() { vh vm create "$1" "${KARGS[@]}" --append "$(append "$1")" "${@:2}"; }

vh net create lan --type bridge --subnet 10.64.0.0/24 >/dev/null && pass net-create || fail net-create

# ---- The issue's scenario: two 'vm start r1' at once, 5 rounds.
create r1 >/dev/null && pass create-r1 || fail create-r1
for round in 1 2 3 4 5; do
	vh vm start r1 >"$E2E_TMP/a.out" 2>&1 & a=$!
	vh vm start r1 >"$E2E_TMP/b.out" 2>&1 & b=$!
	wait $a; ra=$?
	wait $b; rb=$?
	started=$(cat "$E2E_TMP/a.out" "$E2E_TMP/b.out" | grep -c '^VM r1 started')
	already=$(cat "$E2E_TMP/a.out" "$E2E_TMP/b.out" | grep -c '^VM r1 is already running (pid [0-9]*)')
	spid=$(cat "$E2E_TMP/a.out" "$E2E_TMP/b.out" | sed -n 's/^VM r1 started (pid \([0-9]*\),.*/\1/p')
	why="rc $ra/$rb, a: $(head -c 300 "$E2E_TMP/a.out" | tr '\n' '|') b: $(head -c 300 "$E2E_TMP/b.out" | tr '\n' '|')"
	if [ "$ra" = 0 ] && [ "$rb" = 0 ] && [ "$started" = 1 ] && [ "$already" = 1 ] &&
		[ "$(state r1)" = running ] && [ "$(qemu_count r1)" = 1 ] && [ "$(pidfile_pid r1)" = "$spid" ]; then
		pass "two-starts-round-$round" "one started (pid $spid), one 'already running', one QEMU"
	else
		fail "two-starts-round-$round" "$why; state $(state r1), QEMU: $(qemu_pids r1 | tr '\n' ' ')"
	fi
	vh vm kill r1 >/dev/null 2>&1
	[ "$(qemu_count r1)" = 0 ] && [ "$(state r1)" = stopped ] || fail "kill-round-$round" "QEMU left: $(qemu_pids r1 | tr '\n' ' ')"
done

# ---- 20 operations at once.
for n in c1 c2 c3 c4; do create "$n" >/dev/null || fail "create-$n"; done
vh vm start c1 >/dev/null && vh vm start c2 >/dev/null && pass start-c1-c2 || fail start-c1-c2
c1_pid0=$(pidfile_pid c1)

ops=(
	"start c1" "start c1" "start c1" "kill c1"
	"start c3" "start c3" "start c3" "status c3" "status c3"
	"stop c2 --timeout 0" "stop c2 --timeout 0"
	"delete c4" "delete c4" "start c4"
	"create n1" "create n2" "create n3" "create n4"
	"create d1" "create d1"
)
pids=()
for i in "${!ops[@]}"; do
	set -- ${ops[i]}
	case $1 in
	create) create "$2" --vnc 127.0.0.1:auto ;;
	*) vh vm "$@" ;;
	esac >"$E2E_TMP/op$i.out" 2>&1 &
	pids[i]=$!
done
for i in "${!ops[@]}"; do wait "${pids[i]}"; echo $? >"$E2E_TMP/op$i.rc"; done
[ ${#ops[@]} = 20 ] && pass twenty-ops-ran || fail twenty-ops-ran "${#ops[@]}"

# out OP-SUBSTRING: every output of the ops whose command is exactly that.
outs() { local i; for i in "${!ops[@]}"; do [ "${ops[i]}" = "$1" ] && { cat "$E2E_TMP/op$i.out"; echo; }; done; }
rcs() { local i; for i in "${!ops[@]}"; do [ "${ops[i]}" = "$1" ] && cat "$E2E_TMP/op$i.rc"; done | tr '\n' ' '; }
alltext() { local i; for i in "${!ops[@]}"; do echo "[${ops[i]}] rc=$(cat "$E2E_TMP/op$i.rc"): $(tr '\n' '|' <"$E2E_TMP/op$i.out")"; done; }

# Every failure is a clear one: busy, already there, gone, running.
bad=$(for i in "${!ops[@]}"; do
	[ "$(cat "$E2E_TMP/op$i.rc")" = 0 ] && continue
	grep -qE 'is busy: being [a-z ]+ by pid [0-9]+|already exists|No VM named|is running \(pid' "$E2E_TMP/op$i.out" ||
		echo "[${ops[i]}] $(tr '\n' '|' <"$E2E_TMP/op$i.out")"
done)
[ -z "$bad" ] && pass failures-are-clear || fail failures-are-clear "$bad"

# One QEMU per VM, matching pid file and status.
bad=$(for n in r1 c1 c2 c3 c4 n1 n2 n3 n4 d1; do [ -d "$VMHOST_HOME/vms/$n" ] && check_one_qemu "$n"; done)
[ -z "$bad" ] && pass one-qemu-per-vm || fail one-qemu-per-vm "$bad"

# c3 was only started: exactly one start says "started", the VM runs with
# that pid; the others said "already running" (or busy).
n=$(outs "start c3" | grep -c '^VM c3 started')
spid=$(outs "start c3" | sed -n 's/^VM c3 started (pid \([0-9]*\),.*/\1/p')
[ "$n" = 1 ] && [ "$(state c3)" = running ] && [ "$(pidfile_pid c3)" = "$spid" ] &&
	pass c3-started-is-true "pid $spid; rc $(rcs "start c3")" || fail c3-started-is-true "$n started, state $(state c3); $(alltext | grep c3)"
# Status during the start never calls it crashed.
outs "status c3" | grep -qE 'state: +crashed' && fail status-during-start "$(outs "status c3")" ||
	pass status-during-start "$(outs "status c3" | grep -oE 'state: +[a-z]+' | tr '\n' ' ')"

# c1: running before; starts and a kill at once. At most one start says
# "started"; if c1 runs at the end, it is that QEMU or the one from before.
n=$(outs "start c1" | grep -c '^VM c1 started')
spid=$(outs "start c1" | sed -n 's/^VM c1 started (pid \([0-9]*\),.*/\1/p')
end=$(pidfile_pid c1)
if [ "$n" -le 1 ] && { [ "$(state c1)" != running ] || [ "$end" = "$spid" ] || { [ -z "$spid" ] && [ "$end" = "$c1_pid0" ]; }; }; then
	pass c1-start-kill "started $n, state $(state c1)"
else
	fail c1-start-kill "started $n (pid $spid), before $c1_pid0, now $(state c1) $end; $(alltext | grep c1)"
fi

# c2: two stops: both say stopped, it is.
[ "$(rcs "stop c2 --timeout 0")" = "0 0 " ] && [ "$(state c2)" = stopped ] && [ "$(qemu_count c2)" = 0 ] &&
	pass c2-stops || fail c2-stops "$(alltext | grep c2)"

# c4: two deletes and a start: one delete says deleted and c4 is gone, or
# the start won, c4 runs and both deletes were refused.
del=$(outs "delete c4" | grep -c '^Deleted VM c4')
if [ "$del" = 1 ]; then
	[ ! -e "$VMHOST_HOME/vms/c4" ] && [ "$(qemu_count c4)" = 0 ] && pass c4-deleted-is-true || fail c4-deleted-is-true "$(alltext | grep c4)"
elif [ "$del" = 0 ] && [ "$(state c4)" = running ]; then
	pass c4-start-won "$(alltext | grep c4 | tr '\n' ' ')"
else
	fail c4-delete-start "$del deletes; $(alltext | grep c4)"
fi

# d1: two creates of one name: exactly one wins.
[ "$(outs "create d1" | grep -c '^Created VM d1')" = 1 ] && [ -f "$VMHOST_HOME/vms/d1/vm.conf" ] &&
	pass one-create-of-d1 || fail one-create-of-d1 "$(outs "create d1")"

# Distinct ids, MACs and VNC displays among all definitions.
vh vm list --json >"$E2E_TMP/list.json"
python3 - "$E2E_TMP/list.json" <<'EOF' && pass allocation-distinct || fail allocation-distinct "$(cat "$E2E_TMP/list.json" | head -c 500)"
import json, sys
vms = json.load(open(sys.argv[1]))
ids = [v["id"] for v in vms]
macs = [n["mac"] for v in vms for n in v["nics"]]
vncs = [(v.get("vnc") or {}).get("port") for v in vms if (v.get("vnc") or {}).get("port")]
assert len(set(ids)) == len(ids), ids
assert len(set(macs)) == len(macs), macs
assert len(set(vncs)) == len(vncs), vncs
assert {"n1", "n2", "n3", "n4", "d1"} <= {v["name"] for v in vms}
print("%d VMs, %d MACs, %d VNC displays" % (len(ids), len(macs), len(vncs)))
EOF

# Each running VM has its tap, no other tap exists.
want=$(for n in $(ls "$VMHOST_HOME/vms"); do [ "$(state "$n")" = running ] && echo "vh-$n-0"; done | sort | tr '\n' ' ')
[ "$(taps)" = "$want" ] && pass taps-match-running "'$want'" || fail taps-match-running "taps '$(taps)', running '$want'"

# Nothing left behind: after killing every VM, no QEMU of this home and no tap.
for n in $(ls "$VMHOST_HOME/vms"); do vh vm kill "$n" >/dev/null 2>&1 || fail "kill-$n"; done
left=$(pgrep -af -- "$RUNVMS/" || true)
[ -z "$left" ] && [ -z "$(taps)" ] && pass no-orphans || fail no-orphans "QEMU: $left; taps: $(taps)"
e2e_finish
