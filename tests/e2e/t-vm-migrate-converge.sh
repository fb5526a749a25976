#!/bin/bash
# tests/e2e/t-vm-migrate-converge.sh: convergence of 'vmhost vm migrate'
# with a guest that dirties memory faster than the bandwidth lets it be
# copied. Two namespace hosts (lib-hosts.sh), shared storage, real OpenSSH;
# the test guest prints its counter ("CNT n" every 100 ms) and, started
# from its console, rewrites an 8 MiB file in its RAM-backed /tmp in a
# loop (as tools/bench/bench-migrate's dirty load, smaller; no new guest
# option was needed): at 16 MiB/s each pass leaves those 8 MiB dirty
# again, half a second of sending (a quarter at the 32 MiB/s of the
# post-copy cases), more than a short downtime allows:
#  (a) --max-downtime 100 --timeout 10: gives up at the timeout with the
#      figures (remaining, dirty rate, rate, pass); the VM goes on on b
#      (counter), nothing of it on c;
#  (b) --max-downtime 4000: the downtime limit is raised step by step (the
#      report's downtime_steps_ms) until it converges; the counter goes on
#      on c, the VM is on c only;
#  (c) --postcopy c -> b: refused before anything runs when b's QEMU may
#      not use userfaultfd (the VM stays on c, the message names the
#      sysctl); then to b with QEMU as root there (host "bpc": the same
#      machine, vmhost run with VMHOST_QEMU_USER=root): it switches to
#      post-copy (phase "postcopy"), completes, and the VM runs on b only
#      with its counter continued;
#  (d) --postcopy --storage copy b -> c (QEMU as root there, host "cpc"):
#      the mirror ends at the switch-over before c runs the guest; 2 MiB
#      the guest wrote to its disk read back the same on c;
#  (e) --storage copy --transport direct c -> b: the NBD connection over
#      plain TCP (no ssh forward for it), the same 2 MiB on b, c's
#      overlay gone.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init vm-conv # short: ssh control sockets live under its temporary directory
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
# Host b once more for c, as "bpc": its vmhost runs QEMU as root, which
# may use userfaultfd (post-copy) whatever vm.unprivileged_userfaultfd says.
WRAP=$E2E_TMP/vmhost-qemu-root
printf '#!/bin/sh\nVMHOST_QEMU_USER=root exec %s "$@"\n' "$VMHOST" >"$WRAP"
chmod 0755 "$WRAP"
host_ssh c "$VMHOST" host add bpc --ssh "root@$(host_ip b)" --identity "$HOSTS_KEY" --vmhost "$WRAP" >/dev/null ||
	{ fail hosts-add-bpc; e2e_finish; }
host_ssh b "$VMHOST" host add cpc --ssh "root@$(host_ip c)" --identity "$HOSTS_KEY" --vmhost "$WRAP" >/dev/null ||
	{ fail hosts-add-cpc; e2e_finish; }
MIG_VM=m3
# shellcheck source=tests/e2e/lib-migrate.sh
source "$HERE/lib-migrate.sh"

nothing_on() { # nothing_on HOST: no definition, no runtime files of m3
	local d; d=$(host_dir "$1")
	[ ! -e "$d/state/vms/m3/vm.conf" ] && [ ! -e "$d/run/vms/m3" ]
}
# counter_goes_on HOST N: the counter on HOST passes N + 10 (1 s more).
counter_goes_on() {
	wait_until 15 "counter on $1 past $(($2 + 10))" bash -c \
		"[ \"\$(grep -ao 'CNT [0-9]*' $(log_of "$1") | tail -1 | cut -d' ' -f2)\" -gt $(($2 + 10)) ]"
}
# jlist KEY: the JSON array KEY of the object on stdin, space-separated.
jlist() { python3 -c 'import json,sys; print(" ".join(map(str, json.load(sys.stdin).get(sys.argv[1], []))))' "$1"; }

qemu-img create -q -f qcow2 -b "$GUEST_DIR/disk.qcow2" -F qcow2 "$E2E_TMP/shared/m3.qcow2"
chmod 0666 "$E2E_TMP/shared/m3.qcow2"
vb vm create m3 --disk "$SHARED_AT/m3.qcow2" --boot kernel --kernel "$GUEST_DIR/vmlinuz" \
	--initrd "$GUEST_DIR/initrd.img" --memory 128M --net none \
	--append "console=ttyS0 quiet panic=-1 no_timer_check vmhost.name=m3 vmhost.net=none vmhost.counter=1" \
	>/dev/null && pass create || fail create
vb vm start m3 --wait --timeout 120 >/dev/null && pass start-on-b || { fail start-on-b; e2e_finish; }
wait_until 30 "counter on b" bash -c "[ \"\$(grep -ac 'CNT ' $(log_of b))\" -ge 5 ]"
# The load: non-zero data (zero pages travel as a flag only), rewritten
# over the same page cache pages again and again.
if console_cmd b m3 60 'yes 0123456789abcdef | head -c 8388608 >/tmp/src && { while :; do dd if=/tmp/src of=/tmp/dst bs=1M conv=notrunc 2>/dev/null; done </dev/null >/dev/null 2>&1 & } && echo LOAD-ON' |
	grep -q LOAD-ON; then
	pass load-started
else fail load-started; e2e_finish; fi
sleep 1

# ---- (a) no convergence: the timeout, the VM stays on b ----
before=$(last_cnt "$(log_of b)")
t0=$(e2e_now)
out=$(vb vm migrate m3 c --bandwidth 16M --max-downtime 100 --timeout 10 --json 2>"$E2E_TMP/a.err")
rc=$?
took=$(e2e_elapsed "$t0")
err=$(jfield error <<<"$out")
if [ $rc -ne 0 ] && grep -q "did not converge in 10 s: pass [0-9]*, .* remaining, guest dirtying .*/s, sending .*/s" <<<"$err"; then
	pass timeout-gives-up "after $took s: $err"
else fail timeout-gives-up "rc $rc: $out $(cat "$E2E_TMP/a.err")"; fi
# The figures say why: what the guest dirties again within each pass (the
# remaining memory; QEMU's dirty rate counts each page once per pass) takes
# longer to send at the rate than the downtime allowed.
python3 - "$out" <<'EOF' && pass timeout-figures || fail timeout-figures "$out"
import json, sys
d = json.loads(sys.argv[1]); lp = d["last_progress"]
# On a machine loaded enough that the first pass (the bulk) is not done
# by the timeout, QEMU has no dirty rate or expected downtime yet: then the
# figures are the pass and what remains.
ok = (d["migrated"] is False and d["where"] == "local" and lp["remaining"] > (1 << 20) and lp["rate"] > 0
      and lp["pass"] >= 1 and d["downtime_limit_ms"] <= 100
      and (lp["pass"] < 2 or (lp["dirty_rate"] > 0 and lp["expected_downtime_ms"] > d["downtime_limit_ms"])))
print("remaining %d, dirty %d B/s, rate %d B/s, pass %d, expected downtime %d ms" % (
      lp["remaining"], lp["dirty_rate"], lp["rate"], lp["pass"], lp["expected_downtime_ms"]))
sys.exit(0 if ok else 1)
EOF
awk -v t="$took" 'BEGIN { exit !(t < 20) }' && pass timeout-on-time "$took s" || fail timeout-on-time "$took s"
wait_until 20 "c cleaned" bash -c "[ ! -e $(host_dir c)/state/vms/m3/vm.conf ] && [ ! -e $(host_dir c)/run/vms/m3 ]"
counter_goes_on b "$before"
[ "$(state_of b)" = running ] && nothing_on c && [ "$(last_cnt "$(log_of b)")" -gt $((before + 10)) ] &&
	pass timeout-vm-stays-on-b "counter $before -> $(last_cnt "$(log_of b)")" ||
	fail timeout-vm-stays-on-b "b: $(state_of b); c: $(ls -R "$(host_dir c)/state/vms" "$(host_dir c)/run/vms" 2>&1 | tr '\n' ' ')"

# ---- (b) converges by raising the downtime step by step ----
before=$(last_cnt "$(log_of b)")
if out=$(vb vm migrate m3 c --bandwidth 16M --max-downtime 4000 --timeout 60 --json 2>"$E2E_TMP/b.err"); then
	pass converge-by-downtime "downtime $(jfield downtime_ms <<<"$out") ms, $(jfield passes <<<"$out") passes, limits $(jlist downtime_steps_ms <<<"$out") ms"
else fail converge-by-downtime "$out $(cat "$E2E_TMP/b.err")"; fi
steps=$(jlist downtime_steps_ms <<<"$out")
python3 -c '
import sys
s = [int(x) for x in sys.argv[1:]]
sys.exit(0 if len(s) >= 3 and s[0] == 50 and all(b > a for a, b in zip(s, s[1:])) and s[-1] <= 4000 else 1)' $steps &&
	pass downtime-steps "$steps" || fail downtime-steps "'$steps'"
[ "$(jfield postcopy <<<"$out")" = False ] && pass no-postcopy-unasked || fail no-postcopy-unasked "$out"
wait_until 20 "counter on c" bash -c "[ \"\$(grep -ac 'CNT ' $(log_of c))\" -ge 5 ]"
fc=$(first_cnt "$(log_of c)")
[ -n "$fc" ] && [ "$fc" -gt "$before" ] && [ "$(state_of c)" = running ] && nothing_on b &&
	pass converged-on-c "b had $before, c starts at $fc; nothing on b" ||
	fail converged-on-c "b had $before, c starts at '$fc', c: $(state_of c)"

# ---- (c) post-copy, c -> b ----
if [ "$(cat /proc/sys/vm/unprivileged_userfaultfd)" = 0 ]; then
	# The destination's checks say it first, in a dry run too.
	out=$(vc vm migrate m3 b --postcopy --dry-run 2>&1) && fail postcopy-refused-dry "passed: $out" ||
		{ grep -q "FAIL postcopy .*vm.unprivileged_userfaultfd=1" <<<"$out" && pass postcopy-refused-dry ||
			fail postcopy-refused-dry "$out"; }
	out=$(vc vm migrate m3 b --postcopy --bandwidth 16M --timeout 60 2>&1) && fail postcopy-refused "succeeded: $out" ||
		{ grep -q "needs userfaultfd.*vm.unprivileged_userfaultfd=1" <<<"$out" && pass postcopy-refused "$(grep -m1 error <<<"$out")" ||
			fail postcopy-refused "$out"; }
	before=$(last_cnt "$(log_of c)")
	wait_until 20 "b cleaned" bash -c "[ ! -e $(host_dir b)/state/vms/m3/vm.conf ] && [ ! -e $(host_dir b)/run/vms/m3 ]"
	counter_goes_on c "$before"
	[ "$(state_of c)" = running ] && nothing_on b && pass postcopy-refused-vm-stays ||
		fail postcopy-refused-vm-stays "c: $(state_of c)"
else
	echo "NOTE postcopy-refused not run: vm.unprivileged_userfaultfd is not 0 here"
fi
# The progress lines (not a terminal): one per phase.
before=$(last_cnt "$(log_of c)")
if out=$(vc vm migrate m3 bpc --postcopy --bandwidth 32M --max-downtime 100 --timeout 60 --json 2>"$E2E_TMP/c.err"); then
	pass postcopy-completes "switched at pass $(jfield postcopy_pass <<<"$out"), total $(jfield total_ms <<<"$out") ms, downtime $(jfield downtime_ms <<<"$out") ms"
else fail postcopy-completes "$out $(cat "$E2E_TMP/c.err")"; fi
[ "$(jfield postcopy <<<"$out")" = True ] && [ "$(jfield where <<<"$out")" = bpc ] &&
	[ "$(jfield migrated <<<"$out")" = True ] && pass postcopy-reported || fail postcopy-reported "$out"
grep -q "^migrate: postcopy" "$E2E_TMP/c.err" && pass postcopy-phase-shown "$(tr '\n' ' ' <"$E2E_TMP/c.err")" ||
	fail postcopy-phase-shown "$(cat "$E2E_TMP/c.err")"
wait_until 20 "counter on b again" bash -c "[ \"\$(grep -ac 'CNT ' $(log_of b))\" -ge 5 ]"
fb=$(first_cnt "$(log_of b)")
counter_goes_on b "${fb:-0}"
[ -n "$fb" ] && [ "$fb" -gt "$before" ] && [ "$(state_of b)" = running ] && nothing_on c &&
	pass postcopy-on-b-only "c had $before, b starts at $fb and goes on; nothing on c" ||
	fail postcopy-on-b-only "c had $before, b starts at '$fb', b: $(state_of b); c: $(ls -R "$(host_dir c)/run/vms" 2>&1 | tr '\n' ' ')"

# ---- (d) post-copy with copied storage, b -> c ("cpc": QEMU as root) ----
# The mirror is in sync before memory moves and ends at the switch-over,
# with the guest paused, before the destination runs: post-copy only
# changes how memory follows.
# 2 MiB the guest writes to its disk (a region no file system uses) must
# reach c's own overlay.
sum_b=$(console_cmd b m3 60 'dd if=/tmp/src of=/dev/vda bs=1M seek=20 count=2 conv=fsync 2>/dev/null && dd if=/dev/vda bs=1M skip=20 count=2 2>/dev/null | md5sum' | grep -o '^[0-9a-f]\{32\}')
[ -n "$sum_b" ] && pass disk-written-on-b "$sum_b" || fail disk-written-on-b
before=$(last_cnt "$(log_of b)")
if out=$(vb vm migrate m3 cpc --storage copy --postcopy --bandwidth 32M --max-downtime 100 --timeout 90 --json 2>"$E2E_TMP/d.err"); then
	pass postcopy-copy-completes "disk $(jfield disk_transferred <<<"$out") bytes, switched at pass $(jfield postcopy_pass <<<"$out"), total $(jfield total_ms <<<"$out") ms"
else fail postcopy-copy-completes "$out $(cat "$E2E_TMP/d.err")"; fi
[ "$(jfield postcopy <<<"$out")" = True ] && [ "$(jfield storage <<<"$out")" = copy ] &&
	[ "$(jfield disk_transferred <<<"$out")" -ge 2097152 ] 2>/dev/null && pass postcopy-copy-reported || fail postcopy-copy-reported "$out"
wait_until 20 "counter on c again" bash -c "[ \"\$(grep -ac 'CNT ' $(log_of c))\" -ge 5 ]"
fc=$(first_cnt "$(log_of c)")
counter_goes_on c "${fc:-0}"
[ -n "$fc" ] && [ "$fc" -gt "$before" ] && [ "$(state_of c)" = running ] && nothing_on b &&
	[ -e "$(host_dir c)/state/vms/m3/disk.qcow2" ] &&
	pass postcopy-copy-on-c-only "b had $before, c starts at $fc on its own overlay; nothing on b" ||
	fail postcopy-copy-on-c-only "b had $before, c starts at '$fc', c: $(state_of c)"
sum_c=$(console_cmd c m3 60 'dd if=/dev/vda bs=1M skip=20 count=2 2>/dev/null | md5sum' | grep -o '^[0-9a-f]\{32\}')
[ -n "$sum_c" ] && [ "$sum_c" = "$sum_b" ] && pass postcopy-copy-disk-data "$sum_c" ||
	fail postcopy-copy-disk-data "b $sum_b, c '$sum_c'"

# ---- (e) copied storage over direct TCP, c -> b ----
# The disk's NBD connection goes over plain TCP like the stream: no ssh
# forward is started for it (the argv of every ssh -L is watched).
before=$(last_cnt "$(log_of c)")
vc vm migrate m3 b --storage copy --transport direct --json >"$E2E_TMP/e.out" 2>"$E2E_TMP/e.err" &
mpid=$!
fwds=
while kill -0 $mpid 2>/dev/null; do
	# (this test's only: other tests' hosts may run a VM m3 too)
	fwds+=$(pgrep -af -- "-i $HOSTS_KEY .*-L .*migrate-nbd" 2>/dev/null)
	sleep 0.1
done
wait $mpid && rc=0 || rc=$?
out=$(cat "$E2E_TMP/e.out")
[ $rc -eq 0 ] && [ "$(jfield migrated <<<"$out")" = True ] && [ "$(jfield storage <<<"$out")" = copy ] &&
	[ "$(jfield disk_transferred <<<"$out")" -ge 2097152 ] 2>/dev/null &&
	pass copy-direct "disk $(jfield disk_transferred <<<"$out") bytes, base pushed $(jfield push_wire_bytes <<<"$out") bytes, total $(jfield total_ms <<<"$out") ms, downtime $(jfield downtime_ms <<<"$out") ms" ||
	fail copy-direct "rc $rc: $out $(cat "$E2E_TMP/e.err")"
[ -z "$fwds" ] && pass copy-direct-no-ssh-forward || fail copy-direct-no-ssh-forward "$fwds"
wait_until 20 "counter on b again" bash -c "[ \"\$(grep -ac 'CNT ' $(log_of b))\" -ge 5 ]"
fb=$(first_cnt "$(log_of b)")
sum_e=$(console_cmd b m3 60 'dd if=/dev/vda bs=1M skip=20 count=2 2>/dev/null | md5sum' | grep -o '^[0-9a-f]\{32\}')
[ -n "$fb" ] && [ "$fb" -gt "$before" ] && [ "$(state_of b)" = running ] && nothing_on c &&
	[ ! -e "$(host_dir c)/state/vms/m3" ] && [ "$sum_e" = "$sum_b" ] &&
	pass copy-direct-on-b-only "c had $before, b starts at $fb, disk data $sum_e; c's overlay gone" ||
	fail copy-direct-on-b-only "c had $before, b starts at '$fb', disk '$sum_e' (want $sum_b); c: $(ls -R "$(host_dir c)/state/vms" 2>&1 | tr '\n' ' ')"
e2e_finish
