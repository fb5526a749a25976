#!/bin/bash
# tests/e2e/t-vm-migrate-postcopy.sh: faults of 'vmhost vm migrate
# --postcopy' after the switch to post-copy, when nothing can be rolled
# back (the destination runs the guest, part of its memory is only on the
# source). Two namespace hosts (lib-hosts.sh), shared storage, real
# OpenSSH. The destination is c as "cpc": its vmhost runs QEMU as root,
# which may use userfaultfd whatever vm.unprivileged_userfaultfd says (as
# in t-vm-migrate-converge.sh). The guest prints "CNT n" every 100 ms and
# rewrites an 8 MiB file in its RAM in a loop, so that memory stalls at
# --bandwidth 32M and vmhost switches to post-copy; --postcopy-bandwidth
# 1M makes the post-copy phase last (seconds), so that each fault hits it.
# Before each fault the progress says "postcopy", both QEMUs report
# postcopy-active and c's guest runs. Faults (no test-only hook):
#   (a) c's QEMU killed: the VM is lost; b's QEMU stays paused (never
#       resumed), the report says "lost", which host keeps the definition
#       and the commands that boot it again; they are run and work;
#   (b) the ssh forward of the stream killed: both QEMUs postcopy-paused,
#       the report says "recoverable" and names 'vm migrate --resume',
#       which finishes the migration (c's counter goes on from b's);
#   (c) c's link set down: b ends within its ssh bound, says c is
#       unreachable and that the VM is paused here; once the link is back,
#       'vm migrate --resume' finishes it.
# Each: vmhost ends in bounded time with exit status 1, the JSON fields,
# the QEMU states through QMP on both sides, no guest running twice (b's
# counter stands still), and what is left on each side.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init vm-pcf # short: ssh control sockets live under its temporary directory
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
hosts_know_each_other b c || { fail hosts-add-peers; e2e_finish; }
WRAP=$E2E_TMP/vmhost-qemu-root
printf '#!/bin/sh\nVMHOST_QEMU_USER=root exec %s "$@"\n' "$VMHOST" >"$WRAP"
chmod 0755 "$WRAP"
host_ssh b "$VMHOST" host add cpc --ssh "root@$(host_ip c)" --identity "$HOSTS_KEY" --vmhost "$WRAP" >/dev/null ||
	{ fail hosts-add-cpc; e2e_finish; }
MIG_VM=m3
# shellcheck source=tests/e2e/lib-migrate.sh
source "$HERE/lib-migrate.sh"

# mig_status HOST / run_status HOST: the migration status and the run
# state of m3's QEMU on HOST through QMP ('vm qmp'), "none" without one.
qmp_field() {
	"$VMHOST" --host "$1" vm qmp m3 "{\"execute\":\"$2\"}" 2>/dev/null |
		python3 -c 'import json,sys; d=json.load(sys.stdin); d=d.get("return",d); print(d.get("status","none"))' 2>/dev/null ||
		echo none
}
mig_status() { qmp_field "$1" query-migrate; }
run_status() { qmp_field "$1" query-status; }
run_status_is() { [ "$(run_status "$1")" = "$2" ]; }
mig_status_is() { [ "$(mig_status "$1")" = "$2" ]; }
# cnt_past HOST N: m3's counter on HOST is past N.
cnt_past() { local n; n=$(last_cnt "$(log_of "$1")"); [ -n "$n" ] && [ "$n" -gt "$2" ]; }
qemu_pids() { procs_on "$1" "process=vmhost-m3( |,|\$)" | awk '{print $1}' | tr '\n' ' '; }
# jget KEY: a field of the JSON report on stdin ("" when absent).
jget() { python3 -c 'import json,sys; d=json.load(sys.stdin); v=d.get(sys.argv[1], ""); print(v)' "$1" 2>/dev/null; }
# stands_still HOST: m3's counter on HOST does not move for 2 s.
stands_still() {
	local a b
	a=$(last_cnt "$(log_of "$1")"); sleep 2; b=$(last_cnt "$(log_of "$1")")
	[ "$a" = "$b" ]
}
start_load() {
	console_cmd "$1" m3 60 'yes 0123456789abcdef | head -c 8388608 >/tmp/src && { while :; do dd if=/tmp/src of=/tmp/dst bs=1M conv=notrunc 2>/dev/null; done </dev/null >/dev/null 2>&1 & } && echo LOAD-ON' |
		grep -q LOAD-ON
}
MPID=
# pc_start TAG [ARGS...]: the migration b -> cpc in the background
# (stdout TAG.out, stderr TAG.err), until it is in post-copy with c
# running the guest. Returns 1 (and says why) when it did not get there.
pc_start() {
	local tag=$1
	shift
	vb vm migrate m3 cpc --postcopy --bandwidth 32M --max-downtime 100 --postcopy-bandwidth 1M --timeout 60 \
		"$@" >"$E2E_TMP/$tag.out" 2>"$E2E_TMP/$tag.err" &
	MPID=$!
	wait_until 60 "$tag: phase postcopy" grep -q '^migrate: postcopy' "$E2E_TMP/$tag.err" &&
		wait_until 15 "$tag: c runs the guest" run_status_is c running ||
		{ fail "$tag-postcopy" "$(cat "$E2E_TMP/$tag.out" "$E2E_TMP/$tag.err")"; return 1; }
	local sb sc
	sb=$(mig_status b); sc=$(mig_status c)
	[ "$sb" = postcopy-active ] && [ "$sc" = postcopy-active ] &&
		pass "$tag-in-postcopy" "b $sb, c $sc, c $(run_status c)" ||
		{ fail "$tag-in-postcopy" "b $sb, c $sc (it completed before the fault?)"; return 1; }
}
# pc_end TAG LIMIT: vmhost must end within LIMIT s (else it is killed: a
# hang); sets RC and OUT (stdout).
pc_end() {
	local t0; t0=$(e2e_now)
	if wait_until "$2" "$1: vmhost ends" pid_dead "$MPID"; then
		wait "$MPID"; RC=$?
		pass "$1-ends" "rc $RC after $(e2e_elapsed "$t0") s"
	else
		kill "$MPID"; wait "$MPID"; RC=hang
		fail "$1-ends" "still running after $2 s"
	fi
	OUT=$(cat "$E2E_TMP/$1.out")
}
forward_pids() { pgrep -f -- "-i $HOSTS_KEY .*-L .*migrate-fwd.sock" | tr '\n' ' '; }

qemu-img create -q -f qcow2 -b "$GUEST_DIR/disk.qcow2" -F qcow2 "$E2E_TMP/shared/m3.qcow2"
chmod 0666 "$E2E_TMP/shared/m3.qcow2"
vb vm create m3 --disk "$SHARED_AT/m3.qcow2" --boot kernel --kernel "$GUEST_DIR/vmlinuz" \
	--initrd "$GUEST_DIR/initrd.img" --memory 128M --net none \
	--append "console=ttyS0 quiet panic=-1 no_timer_check vmhost.name=m3 vmhost.net=none vmhost.counter=1" \
	>/dev/null && pass create || fail create
vb vm start m3 --wait --timeout 120 >/dev/null && pass start-on-b || { fail start-on-b; e2e_finish; }
wait_until 30 "counter on b" bash -c "[ \"\$(grep -ac 'CNT ' $(log_of b))\" -ge 5 ]"
start_load b && pass load-on-b || { fail load-on-b; e2e_finish; }
sleep 1

# ---- (a) the destination's QEMU killed during post-copy: lost ----
if pc_start a --json; then
	qp=$(qemu_pids c)
	kill -9 $qp
	pc_end a 60
	echo "a: report $OUT"
	[ "$RC" = 1 ] && [ "$(jget outcome <<<"$OUT")" = lost ] && [ "$(jget migrated <<<"$OUT")" = False ] &&
		[ "$(jget source_paused <<<"$OUT")" = True ] && [ "$(jget where <<<"$OUT")" = none ] &&
		[ "$(jget definition <<<"$OUT")" = cpc ] && [ "$(jget destination_state <<<"$OUT")" = gone ] &&
		pass a-report-fields "outcome lost, where none, definition cpc, destination gone" ||
		fail a-report-fields "rc $RC: $OUT"
	w="$(jget error <<<"$OUT") $(jget warning <<<"$OUT")"
	grep -q "lost" <<<"$w" && grep -q "must not be resumed" <<<"$w" &&
		grep -q "vmhost vm kill m3 && vmhost vm delete m3" <<<"$w" && grep -q "vmhost --host cpc vm start m3" <<<"$w" &&
		pass a-report-words "$w" || fail a-report-words "$w"
	sb=$(run_status b)
	[ "$sb" != running ] && [ "$sb" != none ] && [ "$(mig_status b)" = postcopy-paused ] &&
		stands_still b && pass a-source-paused "b: QEMU $(qemu_pids b)$sb, $(mig_status b), counter still" ||
		fail a-source-paused "b: $sb, $(mig_status b), counter $(last_cnt "$(log_of b)")"
	[ -z "$(qemu_pids c)" ] && [ "$(state_of c)" != running ] && [ -e "$(host_dir c)/state/vms/m3/vm.conf" ] &&
		[ -e "$(host_dir b)/state/vms/m3/vm.conf" ] &&
		pass a-left "c: no QEMU, definition kept ($(state_of c)); b: paused QEMU and its definition" ||
		fail a-left "c: QEMU '$(qemu_pids c)', $(leftovers_on c | tr '\n' ' '); b: $(leftovers_on b | tr '\n' ' ')"
	# The report's commands, as it gives them.
	if vb vm kill m3 >/dev/null && vb vm delete m3 >/dev/null && vc vm start m3 --wait --timeout 120 >/dev/null; then
		wait_until 30 "counter on c after the cold boot" bash -c "[ \"\$(grep -ac 'CNT ' $(log_of c))\" -ge 5 ]"
		[ -z "$(leftovers_on b)" ] && [ "$(run_status c)" = running ] && [ -e "$E2E_TMP/shared/m3.qcow2" ] &&
			pass a-recovered "booted again on c from the shared disk; nothing on b" ||
			fail a-recovered "b: $(leftovers_on b | tr '\n' ' '); c: $(run_status c)"
	else
		fail a-recovered "the report's commands failed"
	fi
	# Back to b for the next case (pre-copy: no load yet).
	vc vm migrate m3 b >/dev/null 2>&1 && [ "$(run_status b)" = running ] && pass a-back-to-b ||
		{ fail a-back-to-b; e2e_finish; }
	wait_until 30 "counter on b" bash -c "[ \"\$(grep -ac 'CNT ' $(log_of b))\" -ge 5 ]"
	start_load b || { fail load-on-b-again; e2e_finish; }
	sleep 1
else
	wait "$MPID"
fi

# ---- (b) the stream's ssh forward killed: paused on both sides ----
if pc_start b; then
	fp=$(forward_pids)
	[ -n "$fp" ] && kill -9 $fp
	pc_end b 60
	txt="$OUT $(cat "$E2E_TMP/b.err")"
	echo "b: report $txt"
	[ "$RC" = 1 ] && grep -q "paused on both hosts" <<<"$txt" && grep -q "recoverable" <<<"$txt" &&
		grep -q "vmhost vm migrate m3 cpc --resume" <<<"$txt" && grep -q "must not be resumed" <<<"$txt" &&
		pass b-report-words || fail b-report-words "forward '$fp', rc $RC: $txt"
	sb=$(run_status b)
	[ "$(mig_status b)" = postcopy-paused ] && [ "$(mig_status c)" = postcopy-paused ] && [ "$sb" != running ] &&
		stands_still b && pass b-both-paused "b: $sb, $(mig_status b), counter still; c: $(run_status c), $(mig_status c)" ||
		fail b-both-paused "b: $sb $(mig_status b); c: $(run_status c) $(mig_status c)"
	[ -e "$(host_dir c)/state/vms/m3/vm.conf" ] && [ -e "$(host_dir b)/state/vms/m3/vm.conf" ] &&
		[ -n "$(qemu_pids b)" ] && [ -n "$(qemu_pids c)" ] && pass b-left "both QEMUs and definitions kept" ||
		fail b-left "b: $(leftovers_on b | tr '\n' ' '); c: $(leftovers_on c | tr '\n' ' ')"
	before=$(last_cnt "$(log_of b)")
	if out=$(vb vm migrate m3 cpc --resume --json 2>"$E2E_TMP/b-resume.err"); then
		pass b-resume "$(jget outcome <<<"$out"), total $(jget total_ms <<<"$out") ms"
	else
		fail b-resume "$out $(cat "$E2E_TMP/b-resume.err")"
	fi
	counter_c=$(last_cnt "$(log_of c)")
	wait_until 15 "counter on c goes on" cnt_past c $((${counter_c:-0} + 10))
	[ "$(jget migrated <<<"$out")" = True ] && [ "$(jget where <<<"$out")" = cpc ] && [ "$(run_status c)" = running ] &&
		[ "$(mig_status c)" = completed ] && [ -z "$(leftovers_on b)" ] && [ "$(first_cnt "$(log_of c)")" -gt "$before" ] 2>/dev/null &&
		pass b-resumed-on-c "c runs it ($(mig_status c)), its counter from $(first_cnt "$(log_of c)") on (b had $before); nothing on b" ||
		fail b-resumed-on-c "c: $(run_status c) $(mig_status c); b: $(leftovers_on b | tr '\n' ' '); $out"
	# Back to b for the next case: the guest that was resumed runs on.
	vc vm migrate m3 b >/dev/null 2>&1 && [ "$(run_status b)" = running ] && pass b-back-to-b ||
		{ fail b-back-to-b; e2e_finish; }
	n0=$(last_cnt "$(log_of b)")
	wait_until 15 "counter on b after the way back" cnt_past b $((${n0:-0} + 10)) &&
		pass b-guest-alive-on-b "counter $n0 -> $(last_cnt "$(log_of b)")"
	# The guest's load came along (it dirties memory on b as it did on c):
	# case (c) stalls and switches to post-copy only if it does.
	# (Not started again through the console: after this way back, with
	# the first load still running in the guest, the console command got
	# no answer in 60 s in 2 of 3 runs, the counter going on; not
	# understood yet, perhaps the shell starved on a loaded machine.)
else
	wait "$MPID"
fi

# ---- (c) c's link down during post-copy: c unreachable ----
if pc_start c --json; then
	host_link c down
	pc_end c 40
	echo "c: report $OUT"
	[ "$RC" = 1 ] && [ "$(jget outcome <<<"$OUT")" = unknown ] && [ "$(jget destination_state <<<"$OUT")" = unreachable ] &&
		[ "$(jget source_paused <<<"$OUT")" = True ] && [ "$(jget where <<<"$OUT")" = cpc ] &&
		pass c-report-fields || fail c-report-fields "rc $RC: $OUT"
	w="$(jget error <<<"$OUT") $(jget warning <<<"$OUT")"
	grep -q "unreachable" <<<"$w" && grep -q "must not be resumed" <<<"$w" &&
		grep -q "vmhost vm migrate m3 cpc --resume" <<<"$w" && pass c-report-words "$w" || fail c-report-words "$w"
	sb=$(run_status b)
	[ "$(mig_status b)" = postcopy-paused ] && [ "$sb" != running ] && stands_still b &&
		pass c-source-paused "b: $sb, $(mig_status b)" || fail c-source-paused "b: $sb $(mig_status b)"
	host_link c up
	# c's QEMU learns that the stream is gone when its sshd's connection
	# is reset (the source's ssh exited): then it too is postcopy-paused.
	wait_until 60 "c postcopy-paused after the link is back" mig_status_is c postcopy-paused &&
		pass c-dest-paused "c: $(run_status c), $(mig_status c)"
	if out=$(vb vm migrate m3 cpc --resume --json 2>"$E2E_TMP/c-resume.err"); then
		pass c-resume "total $(jget total_ms <<<"$out") ms"
	else
		fail c-resume "$out $(cat "$E2E_TMP/c-resume.err")"
	fi
	[ "$(run_status c)" = running ] && [ "$(mig_status c)" = completed ] && [ -z "$(leftovers_on b)" ] &&
		pass c-resumed-on-c || fail c-resumed-on-c "c: $(run_status c) $(mig_status c); b: $(leftovers_on b | tr '\n' ' ')"
else
	wait "$MPID"
fi
host_link c up

# Nothing to resume: refused, the VM runs on as it was.
out=$(vc vm migrate m3 b --resume 2>&1) && fail resume-nothing "succeeded: $out" ||
	{ grep -q "no broken post-copy migration here to resume" <<<"$out" && [ "$(run_status c)" = running ] &&
		[ -z "$(leftovers_on b)" ] && pass resume-nothing "$(grep -m1 error <<<"$out")" || fail resume-nothing "$out"; }

list=$(vb vm list --all-hosts 2>&1)
rows=$(awk '$1 != "cpc" && $2 == "m3" && $3 == "running"' <<<"$list")
[ "$(wc -l <<<"$rows")" = 1 ] && pass one-running-copy "$(tr -s ' ' <<<"$rows")" || fail one-running-copy "$list"
e2e_finish
