#!/bin/bash
# tests/e2e/t-vm-migrate.sh: 'vmhost vm migrate' between two namespace hosts
# (lib-hosts.sh) over real OpenSSH, shared storage: one directory
# bind-mounted at the same path in both. A TCG guest printing a counter on
# its console ("CNT n" every 100 ms) is migrated b -> c through ssh and
# back c -> b over direct TCP; the counter goes on where it was (no reset),
# the VM is on exactly one host after each move. Refusals of --dry-run:
# unknown host, name taken there, disk not shared; a copy over direct TCP passes its checks.
# (Copied storage: t-vm-migrate-copy.sh.) Faults, each leaving
# the VM running on the source and nothing on the destination: the
# destination QEMU killed mid-way, the ssh forward killed, SIGINT to the
# migrating vmhost.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init vm-migrate
need ip unshare ssh ssh-keygen python3 qemu-img qemu-system-x86_64
VMHOST=${VMHOST:-$ROOT/build/src/cli/vmhost}
VMHOST=$(readlink -f "$VMHOST")
GUEST_DIR=${VMHOST_GUEST_DIR:?run through tests/e2e/run (the test guest)}
# shellcheck source=tests/e2e/lib-hosts.sh
source "$HERE/lib-hosts.sh"
trap 'hosts_cleanup; e2e_cleanup' EXIT
hosts_init
SHARED_AT=/run/vmhost-e2e-shared-$$
mkdir -p "$E2E_TMP/shared"
chmod 0777 "$E2E_TMP/shared"
chmod 0711 "$E2E_TMP"
export HOSTS_SHARED=$E2E_TMP/shared:$SHARED_AT
host_new b && host_new c || e2e_finish
host_add b >/dev/null && host_add c >/dev/null || { fail hosts-add; e2e_finish; }
# Each host knows the other (the source drives the destination itself).
# ('vmhost --host' forwards no 'host' commands: plain ssh does it.)
hosts_know_each_other b c || { fail hosts-add-peers; e2e_finish; }
MIG_VM=m1
# shellcheck source=tests/e2e/lib-migrate.sh
source "$HERE/lib-migrate.sh"

nothing_on() { # nothing_on HOST: no definition, no runtime files of m1
	local d; d=$(host_dir "$1")
	[ ! -e "$d/state/vms/m1/vm.conf" ] && [ ! -e "$d/run/vms/m1" ]
}

# The disk: an overlay on the test guest's image, in the shared directory.
qemu-img create -q -f qcow2 -b "$GUEST_DIR/disk.qcow2" -F qcow2 "$E2E_TMP/shared/m1.qcow2"
chmod 0666 "$E2E_TMP/shared/m1.qcow2"
vb vm create m1 --disk "$SHARED_AT/m1.qcow2" --boot kernel --kernel "$GUEST_DIR/vmlinuz" \
	--initrd "$GUEST_DIR/initrd.img" --memory 128M --forward tcp:auto:7777 \
	--append "console=ttyS0 quiet panic=-1 no_timer_check vmhost.name=m1 vmhost.net=none vmhost.counter=1" \
	>/dev/null && pass create || fail create
vb vm start m1 --wait --timeout 120 >/dev/null && pass start-on-b || { fail start-on-b; e2e_finish; }
wait_until 30 "counter on b" bash -c "[ \"\$(grep -ac 'CNT ' $(log_of b))\" -ge 10 ]"

# ---- refusals (dry run: nothing changes) ----
out=$(vb vm migrate m1 nosuch --dry-run 2>&1) && fail refuse-unknown-host "succeeded: $out" ||
	{ grep -q "no host 'nosuch'" <<<"$out" && pass refuse-unknown-host "$out" || fail refuse-unknown-host "$out"; }
if out=$(vb vm migrate m1 c --dry-run 2>&1); then
	pass dry-run-ok "$(tr '\n' ' ' <<<"$out")"
else fail dry-run-ok "$out"; fi
nothing_on c && pass dry-run-touches-nothing || fail dry-run-touches-nothing
# The name taken on c: a stopped VM of that name there.
qemu-img create -q -f qcow2 "$(host_dir c)/state/x.qcow2" 16M
vc vm create m1 --disk /var/lib/vmhost/x.qcow2 --net none >/dev/null || fail name-taken-setup
out=$(vb vm migrate m1 c --dry-run 2>&1) && fail refuse-name-taken "succeeded" ||
	{ grep -q "FAIL name .*exists here already" <<<"$out" && pass refuse-name-taken "$(grep FAIL <<<"$out")" ||
		fail refuse-name-taken "$out"; }
vc vm delete m1 >/dev/null
# A disk in b's private directory is not shared with c.
qemu-img create -q -f qcow2 -b "$GUEST_DIR/disk.qcow2" -F qcow2 "$(host_dir b)/state/p1.qcow2"
vb vm create p1 --disk /var/lib/vmhost/p1.qcow2 --boot kernel --kernel "$GUEST_DIR/vmlinuz" \
	--initrd "$GUEST_DIR/initrd.img" --memory 64M --net none \
	--append "console=ttyS0 quiet panic=-1 vmhost.name=p1 vmhost.net=none" >/dev/null &&
	vb vm start p1 >/dev/null 2>&1
out=$(vb vm migrate p1 c --storage shared --dry-run 2>&1) && fail refuse-not-shared "succeeded: $out" ||
	{ grep -q "FAIL storage .*not on storage shared" <<<"$out" && pass refuse-not-shared "$(grep FAIL <<<"$out")" ||
		fail refuse-not-shared "$out"; }
vb vm kill p1 >/dev/null 2>&1
# A copy over direct TCP is allowed (t-vm-migrate-converge.sh runs one).
out=$(vb vm migrate m1 c --storage copy --transport direct --dry-run 2>&1) &&
	grep -q "^ok   base " <<<"$out" && pass direct-copy-checks || fail direct-copy-checks "$out"

# ---- faults: each leaves m1 running on b and nothing on c ----
# fault_case NAME ACTION: a slow migration (1 MiB/s), ACTION run once the
# destination's QEMU has taken the stream.
fault_case() {
	local what=$1 action=$2 pid rc before
	before=$(last_cnt "$(log_of b)")
	vb vm migrate m1 c --bandwidth 1M --timeout 120 >"$E2E_TMP/f-$what.out" 2>&1 &
	pid=$!
	if ! wait_until 30 "$what: stream accepted on c" bash -c \
		"[ -e $(host_dir c)/run/vms/m1/state ] && [ -S $(host_dir b)/run/vms/m1/migrate-fwd.sock ] &&
		[ ! -e $(host_dir c)/run/vms/m1/migrate-in.sock ]"; then
		fail "fault-$what" "the migration did not start: $(cat "$E2E_TMP/f-$what.out")"
		wait $pid; return
	fi
	eval "$action"
	wait $pid; rc=$?
	[ $rc -ne 0 ] || { fail "fault-$what" "migrate succeeded"; return; }
	wait_until 20 "$what: c cleaned" bash -c "[ ! -e $(host_dir c)/state/vms/m1/vm.conf ] && [ ! -e $(host_dir c)/run/vms/m1 ]"
	local st; st=$(state_of b)
	wait_until 10 "$what: counter goes on on b" bash -c "[ \"\$(grep -ao 'CNT [0-9]*' $(log_of b) | tail -1 | cut -d' ' -f2)\" -gt $((before + 5)) ]"
	if [ "$st" = running ] && nothing_on c && [ "$(last_cnt "$(log_of b)")" -gt $((before + 5)) ]; then
		pass "fault-$what" "$(grep -m1 'error' "$E2E_TMP/f-$what.out")"
	else
		fail "fault-$what" "b: $st, c: $(ls -R "$(host_dir c)/run/vms" "$(host_dir c)/state/vms" 2>&1 | tr '\n' ' '); $(cat "$E2E_TMP/f-$what.out")"
	fi
}
fault_case qemu-killed 'kill -9 $(cat $(host_dir c)/run/vms/m1/qemu.pid)'
fault_case ssh-killed 'kill $(pgrep -f -- "migrate-fwd.sock:/run/vmhost/vms/m1/migrate-in.sock -- root@$(host_ip c)")'
fault_case sigint 'kill -INT $(pgrep -f -- "^$VMHOST vm migrate m1 c --bandwidth 1M")'

# ---- b -> c through ssh ----
before=$(last_cnt "$(log_of b)")
if out=$(vb vm migrate m1 c --json 2>"$E2E_TMP/mig1.err"); then
	pass migrate-b-c-ssh "total $(jfield total_ms <<<"$out") ms, downtime $(jfield downtime_ms <<<"$out") ms, $(jfield ram_transferred <<<"$out") bytes, $(jfield passes <<<"$out") passes"
else
	fail migrate-b-c-ssh "$out $(cat "$E2E_TMP/mig1.err")"
fi
[ "$(jfield where <<<"$out")" = c ] && pass report-where || fail report-where "$out"
[ "$(jfield downtime_ms <<<"$out")" -gt 0 ] 2>/dev/null && pass report-downtime || fail report-downtime "$out"
wait_until 20 "counter on c" bash -c "[ \"\$(grep -ac 'CNT ' $(log_of c))\" -ge 5 ]"
fc=$(first_cnt "$(log_of c)")
[ -n "$fc" ] && [ "$fc" -gt "$before" ] && pass counter-continues-on-c "b had $before before, c starts at $fc" ||
	fail counter-continues-on-c "b had $before, c starts at '${fc}'"
[ "$(state_of c)" = running ] && [ ! -e "$(host_dir b)/state/vms/m1/vm.conf" ] && [ ! -e "$(host_dir b)/run/vms/m1" ] &&
	pass one-host-after "running on c; b has no definition or runtime files" || fail one-host-after "c: $(state_of c); b: $(ls -R "$(host_dir b)/state/vms/m1" "$(host_dir b)/run/vms/m1" 2>&1 | tr "\n" " ")"
[ -e "$E2E_TMP/shared/m1.qcow2" ] && pass disk-kept || fail disk-kept

# ---- c -> b over direct TCP ----
before=$(last_cnt "$(log_of c)")
if out=$(vc vm migrate m1 b --transport direct --json 2>"$E2E_TMP/mig2.err"); then
	pass migrate-c-b-direct "total $(jfield total_ms <<<"$out") ms, downtime $(jfield downtime_ms <<<"$out") ms"
else
	fail migrate-c-b-direct "$out $(cat "$E2E_TMP/mig2.err")"
fi
wait_until 20 "counter on b again" bash -c "[ -n \"\$(grep -ao 'CNT [0-9]*' $(log_of b))\" ]"
fb=$(first_cnt "$(log_of b)")
[ -n "$fb" ] && [ "$fb" -gt "$before" ] && pass counter-continues-on-b "c had $before, b starts at $fb" ||
	fail counter-continues-on-b "c had $before, b starts at '$fb'"
[ "$(state_of b)" = running ] && nothing_on c && pass back-on-b || fail back-on-b
e2e_finish
