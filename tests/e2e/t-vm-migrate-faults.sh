#!/bin/bash
# tests/e2e/t-vm-migrate-faults.sh: the faults and refusals of 'vmhost vm
# migrate' that t-vm-migrate.sh and t-vm-migrate-copy.sh do not cover,
# between two namespace hosts (lib-hosts.sh) over real OpenSSH, copied
# storage (no shared directory). The TCG guest prints "CNT n" every 100 ms;
# it has one NIC on bridge network 'mf' (taps to look for), and an overlay
# over a base pushed to b. c's state directory is a 256 MiB tmpfs, so that
# its free space can be made short.
#
# Refusals, each as a dry run and as a real run, nothing changed on either
# host: the network missing on c; another image under the base's name on
# c; c's disk too small for the copy (room for the overlay's allocation plus
# the 64 MiB margin: 'space' check; with --storage copy it needs the
# NEEDS-MERGE patch, see there).
# Faults, each leaving the VM running on b (its counter goes on) and nothing
# of it on c (QEMU, session, definition, overlay, runtime directory with the
# NBD socket, taps):
#   link-down       c's link set down in the memory phase; b rolls back
#                   within ssh's ServerAlive bound, c cleans itself up while
#                   the link is still down (the source's heartbeat stops);
#                   the link comes back and nothing reappears.
#   pre-switchover  b's vmhost stopped (SIGSTOP) in the memory phase, so that
#                   b's QEMU waits paused in 'pre-switchover' for it (as it
#                   does for ~5 ms each migration); c's QEMU killed there;
#                   vmhost continued: b resumes, one copy only.
#   before-cont     c's 'vm migrate-incoming' stopped (SIGSTOP) in the memory
#                   phase; b completes and sends CONT; c's QEMU killed before
#                   the session reads CONT: c answers FAILED, b resumes.
# No test-only hook: the signals make the timing.
# Then a migration that succeeds, and 'vm list --all-hosts' on b shows the
# VM once, on c.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init vm-migfault # short: ssh control socket paths are limited
need ip unshare ssh ssh-keygen python3 qemu-img qemu-io qemu-system-x86_64 fallocate
VMHOST=${VMHOST:-$ROOT/build/src/cli/vmhost}
VMHOST=$(readlink -f "$VMHOST")
GUEST_DIR=${VMHOST_GUEST_DIR:?run through tests/e2e/run (the test guest)}
# shellcheck source=tests/e2e/lib-hosts.sh
source "$HERE/lib-hosts.sh"
C_STATE=
umount_c_state() { # keeps the status it was called with
	local rc=$?
	[ -n "$C_STATE" ] && umount -l "$C_STATE" 2>/dev/null
	return $rc
}
trap 'hosts_cleanup; umount_c_state; e2e_cleanup' EXIT
hosts_init
host_new b || e2e_finish
# c's state directory (its /var/lib/vmhost) on a tmpfs of its own, mounted
# before host_new binds it into c's namespace.
C_STATE=$(host_dir c)/state
mkdir -p -m 700 "$C_STATE"
mount -t tmpfs -o size=256m,mode=0700 vmhost-e2e-c "$C_STATE" || { fail tmpfs "cannot mount a tmpfs"; e2e_finish; }
host_new c || e2e_finish
host_add b >/dev/null && host_add c >/dev/null || { fail hosts-add; e2e_finish; }
hosts_know_each_other b c || { fail hosts-add-peers; e2e_finish; }
MIG_VM=m3
# shellcheck source=tests/e2e/lib-migrate.sh
source "$HERE/lib-migrate.sh"
BR=vb-mf
nothing_on_c() { [ -z "$(leftovers_on c $BR)" ]; }
# The images on c (not the hash sidecars: the base check computes and
# records the hash of an image it finds under the base's name, a cache).
images_of_c() { ls "$C_STATE/images" 2>/dev/null | grep -v '\.vmhost-hash$' | tr '\n' ' '; }
counter_goes_on() { # counter_goes_on BEFORE: b's counter passes BEFORE + 5 within 10 s
	wait_until 10 "counter goes on on b" bash -c \
		"[ \"\$(grep -ao 'CNT [0-9]*' $(log_of b) | tail -1 | cut -d' ' -f2)\" -gt $(($1 + 5)) ]"
}
# mig_status HOST: the status of MIG_VM's migration in its QEMU there
# (through 'vm qmp', the CLI's monitor, not the migration's).
mig_status() {
	"$VMHOST" --host "$1" vm qmp "$MIG_VM" '{"execute":"query-migrate"}' 2>/dev/null |
		python3 -c 'import json,sys; d=json.load(sys.stdin); d=d.get("return",d); print(d.get("status","none"))' 2>/dev/null
}
mig_status_is() { [ "$(mig_status "$1")" = "$2" ]; }
# run_status HOST: QEMU's run state of MIG_VM there ("running", "paused",
# "postmigrate", ...; 'vm status' says only whether QEMU runs).
run_status() {
	"$VMHOST" --host "$1" vm qmp "$MIG_VM" '{"execute":"query-status"}' 2>/dev/null |
		python3 -c 'import json,sys; d=json.load(sys.stdin); d=d.get("return",d); print(d.get("status","none"))' 2>/dev/null
}

# The base: 8 MiB of data in a 32 MiB raw image, pushed to b.
BASE=$E2E_TMP/mfbase.raw
qemu-img create -q -f raw "$BASE" 32M && qemu-io -f raw -c 'write -P 0x66 0 8M' "$BASE" >/dev/null || fail base-make
"$VMHOST" img push -q "$BASE" b >/dev/null && [ -e "$(host_dir b)/state/images/mfbase.raw" ] &&
	pass base-on-b || { fail base-on-b; e2e_finish; }
vb net create mf --type bridge >/dev/null && pass net-on-b || fail net-on-b
vb vm create m3 --base /var/lib/vmhost/images/mfbase.raw --boot kernel --kernel "$GUEST_DIR/vmlinuz" \
	--initrd "$GUEST_DIR/initrd.img" --memory 128M --net mf \
	--append "console=ttyS0 quiet panic=-1 no_timer_check vmhost.name=m3 vmhost.net=none vmhost.counter=1" \
	>/dev/null && pass create || fail create
vb vm start m3 --wait --timeout 120 >/dev/null && pass start-on-b || { fail start-on-b; e2e_finish; }
wait_until 30 "counter on b" bash -c "[ \"\$(grep -ac 'CNT ' $(log_of b))\" -ge 5 ]"
# 12 MiB written by the guest: the overlay allocates that much (and more
# than the 'space' check's margin leaves room for below).
out=$(console_cmd b m3 60 "dd if=/dev/zero bs=1M count=12 2>/dev/null | tr '\\000' Z | dd of=/dev/vda bs=1M seek=16 conv=fsync 2>/dev/null; echo WROTE=\$?")
grep -q 'WROTE=0' <<<"$out" && pass guest-writes-12M || fail guest-writes-12M "$out"
OVL_B=$(host_dir b)/state/vms/m3/disk.qcow2

# ---- refusals: a dry run and a real run each; nothing changes ----
# refuse NAME REGEX [ARGS...]: both runs fail with a FAIL line matching
# REGEX, b's VM runs on, c has nothing of it and no new image.
refuse() {
	local what=$1 re=$2 imgs all out mode ok=1
	shift 2
	imgs=$(images_of_c)
	all=$(ls -a "$C_STATE/images" 2>/dev/null | tr '\n' ' ')
	for mode in --dry-run ""; do
		out=$(vb vm migrate m3 c $mode "$@" 2>&1) && { fail "refuse-$what${mode:+-dry}" "succeeded: $out"; ok=0; continue; }
		# A dry run writes nothing at all, not even a hash sidecar.
		if grep -qE "$re" <<<"$out" && [ "$(state_of b)" = running ] && nothing_on_c && [ "$(images_of_c)" = "$imgs" ] &&
			{ [ -z "$mode" ] || [ "$(ls -a "$C_STATE/images" 2>/dev/null | tr '\n' ' ')" = "$all" ]; }; then
			pass "refuse-$what${mode:+-dry}" "$(grep -E "$re" <<<"$out" | head -1)"
		else
			fail "refuse-$what${mode:+-dry}" "b: $(state_of b); c: $(leftovers_on c $BR | tr '\n' ' ') images '$(images_of_c)' (was '$imgs'); $out"
			ok=0
		fi
	done
	return $((1 - ok))
}
refuse net-missing "^FAIL networks .*network mf does not exist here"
vc net create mf --type bridge >/dev/null && pass net-on-c || fail net-on-c
# Another image under the base's name on c.
qemu-img create -q -f raw "$E2E_TMP/other.raw" 32M && qemu-io -f raw -c 'write -P 0x11 0 1M' "$E2E_TMP/other.raw" >/dev/null
mkdir -p "$C_STATE/images" && cp "$E2E_TMP/other.raw" "$C_STATE/images/mfbase.raw"
refuse base-differs "^FAIL base .*another image under the name of base" --storage copy
rm -f "$C_STATE/images/mfbase.raw" "$C_STATE/images/mfbase.raw.vmhost-hash"
# c's disk too small: free space set to the margin plus half the overlay
# (the copy alone would fit, with the margin it does not). --storage copy
# (the real run) sends the overlay's size only with the NEEDS-MERGE patch.
alloc=$(stat -c %s "$OVL_B")
avail=$(df -B1 --output=avail "$C_STATE" | tail -1)
fill=$((avail - (64 << 20) - alloc / 2))
if [ "$alloc" -gt $((8 << 20)) ] && [ "$fill" -gt 0 ] && fallocate -l "$fill" "$C_STATE/filler"; then
	refuse space "^FAIL space .*free in /var/lib/vmhost here for the copy"
	# --storage copy: the source sends the overlay's size for a copy only
	# with the NEEDS-MERGE patch (without it the check sees 0 bytes and
	# passes); a dry run only, so that a missing refusal moves nothing.
	out=$(vb vm migrate m3 c --storage copy --dry-run 2>&1); grep -qE "^FAIL space " <<<"$out" &&
		pass refuse-space-copy-dry "$(grep -E '^FAIL space' <<<"$out")" || fail refuse-space-copy-dry "$out"
else
	fail space-setup "overlay $alloc bytes, $avail free on c, fill $fill"
fi
rm -f "$C_STATE/filler"

# ---- fault: c's link down during the memory phase ----
before=$(last_cnt "$(log_of b)")
vb vm migrate m3 c --bandwidth 2M --timeout 120 >"$E2E_TMP/link.out" 2>&1 &
pid=$!
if wait_until 60 "link-down: memory phase" bash -c "grep -q 'migrate: memory' $E2E_TMP/link.out &&
	[ ! -e $(host_dir c)/run/vms/m3/migrate-in.sock ] && [ -S $(host_dir b)/run/vms/m3/migrate-fwd.sock ]"; then
	host_link c down
	t0=$(e2e_now)
	wait $pid; rc=$?
	t_src=$(awk -v a="$t0" -v b="$(e2e_now)" 'BEGIN { printf "%.1f", b - a }')
	[ $rc -ne 0 ] && [ "$(run_status b)" = running ] && counter_goes_on "$before" &&
		pass link-down-source-keeps-vm "b rolled back ${t_src} s after the link went down: $(grep -m1 -iE 'error|fail' "$E2E_TMP/link.out")" ||
		fail link-down-source-keeps-vm "rc $rc, b: $(state_of b), counter $(last_cnt "$(log_of b)") (was $before); $(cat "$E2E_TMP/link.out")"
	# With the link still down, b cannot reach c: c must clean up by itself.
	if wait_until 30 "c cleans itself up" nothing_on_c; then
		t_dst=$(awk -v a="$t0" -v b="$(e2e_now)" 'BEGIN { printf "%.1f", b - a }')
		pass link-down-dest-cleans-itself "c had nothing of m3 ${t_dst} s after its link went down, link still down"
	else
		fail link-down-dest-cleans-itself "after 30 s with the link down, c has: $(leftovers_on c $BR | tr '\n' ' ')"
	fi
	host_link c up
	# Whatever c still had waits for the link: give it back its chance.
	t1=$(e2e_now)
	wait_until 60 "c clean once the link is up" nothing_on_c
	echo "link-down: c had nothing of m3 $(awk -v a="$t1" -v b="$(e2e_now)" 'BEGIN { printf "%.1f", b - a }') s after the link came back"
	# Nothing comes back late (a session that resumes once the link does).
	sleep 2
	[ "$(run_status b)" = running ] && nothing_on_c && [ "$(state_of c)" = "" ] &&
		pass link-up-nothing-on-c "b runs m3, c has nothing of it" ||
		fail link-up-nothing-on-c "b: $(state_of b); c: $(state_of c) $(leftovers_on c $BR | tr '\n' ' ')"
else
	fail link-down "the memory phase did not start: $(cat "$E2E_TMP/link.out")"
	wait $pid
fi
host_link c up

# ---- fault: c's QEMU killed while b waits paused in pre-switchover ----
before=$(last_cnt "$(log_of b)")
vb vm migrate m3 c --bandwidth 50M --timeout 120 >"$E2E_TMP/pre.out" 2>&1 &
pid=$!
if wait_until 60 "pre-switchover: memory phase" grep -q 'migrate: memory' "$E2E_TMP/pre.out"; then
	# The migrating vmhost on b (the one 'vmhost --host b' started).
	mpid=$(procs_on b "vmhost vm migrate m3 c " | awk '{print $1}' | head -1)
	kill -STOP "$mpid"
	t0=$(e2e_now)
	# Within c's 10 s patience for a silent source (the stopped vmhost
	# sends no heartbeat): c's QEMU must still be there to be killed.
	if wait_until 8 "b's QEMU in pre-switchover" mig_status_is b pre-switchover &&
		qpid=$(procs_on c 'process=vmhost-m3' | awk '{print $1}') && [ -n "$qpid" ]; then
		# QEMU's run state while it waits there: 'finish-migrate' (the
		# guest stopped, as 'paused').
		st_paused=$(run_status b)
		kill -9 "$qpid"
		echo "pre-switchover: b's QEMU waited there $(awk -v a="$t0" -v b="$(e2e_now)" 'BEGIN { printf "%.1f", b - a }') s after vmhost was stopped; c's QEMU $qpid killed"
		kill -CONT "$mpid"
		wait $pid; rc=$?
		counter_goes_on "$before"
		wait_until 20 "c cleaned" bash -c "[ ! -e $(host_dir c)/state/vms/m3 ] && [ ! -e $(host_dir c)/run/vms/m3 ]"
		if [ $rc -ne 0 ] && case $st_paused in paused | finish-migrate) true ;; *) false ;; esac &&
			[ "$(run_status b)" = running ] && nothing_on_c &&
			[ "$(last_cnt "$(log_of b)")" -gt $((before + 5)) ]; then
			pass fault-pre-switchover "b was $st_paused in pre-switchover, runs again; c has nothing: $(grep -m1 -iE 'error|fail' "$E2E_TMP/pre.out")"
		else
			fail fault-pre-switchover "rc $rc, b was '$st_paused', now $(run_status b); c: $(leftovers_on c $BR | tr '\n' ' '); $(cat "$E2E_TMP/pre.out")"
		fi
	else
		kill -CONT "$mpid"
		fail fault-pre-switchover "b's QEMU did not reach pre-switchover in time ($(mig_status b)) or c's QEMU was gone ('${qpid:-}'); $(cat "$E2E_TMP/pre.out")"
		wait $pid
	fi
else
	fail fault-pre-switchover "the memory phase did not start: $(cat "$E2E_TMP/pre.out")"
	wait $pid
fi

# ---- fault: c's QEMU killed after b completed, before c reads CONT ----
before=$(last_cnt "$(log_of b)")
vb vm migrate m3 c --bandwidth 20M --timeout 120 >"$E2E_TMP/cont.out" 2>&1 &
pid=$!
if wait_until 60 "before-cont: memory phase" grep -q 'migrate: memory' "$E2E_TMP/cont.out"; then
	ipid=$(procs_on c "vm migrate-incoming m3 " | awk '{print $1}' | head -1)
	kill -STOP "$ipid"
	if wait_until 15 "b's migration completed" mig_status_is b completed &&
		qpid=$(procs_on c 'process=vmhost-m3' | awk '{print $1}') && [ -n "$qpid" ]; then
		st_paused=$(run_status b)
		kill -9 "$qpid"
		kill -CONT "$ipid"
		wait $pid; rc=$?
		counter_goes_on "$before"
		wait_until 20 "c cleaned" bash -c "[ ! -e $(host_dir c)/state/vms/m3 ] && [ ! -e $(host_dir c)/run/vms/m3 ]"
		if [ $rc -ne 0 ] && [ "$st_paused" = postmigrate ] && [ "$(run_status b)" = running ] && nothing_on_c &&
			grep -q "runs here again" "$E2E_TMP/cont.out" &&
			[ "$(last_cnt "$(log_of b)")" -gt $((before + 5)) ]; then
			pass fault-before-cont "b was '$st_paused' after completing, runs again; c has nothing: $(grep -m1 -iE 'error|fail' "$E2E_TMP/cont.out")"
		else
			fail fault-before-cont "rc $rc, b was '$st_paused', now $(run_status b); c: $(leftovers_on c $BR | tr '\n' ' '); $(cat "$E2E_TMP/cont.out")"
		fi
	else
		kill -CONT "$ipid"
		fail fault-before-cont "b's migration did not complete ($(mig_status b)) or c's QEMU was gone ('${qpid:-}'); $(cat "$E2E_TMP/cont.out")"
		wait $pid
	fi
else
	fail fault-before-cont "the memory phase did not start: $(cat "$E2E_TMP/cont.out")"
	wait $pid
fi

# ---- success, and 'vm list --all-hosts' on b ----
before=$(last_cnt "$(log_of b)")
if out=$(vb vm migrate m3 c --json 2>"$E2E_TMP/mig.err"); then
	pass migrate-b-c "total $(jfield total_ms <<<"$out") ms, downtime $(jfield downtime_ms <<<"$out") ms, storage $(jfield storage <<<"$out")"
else
	fail migrate-b-c "$out $(cat "$E2E_TMP/mig.err")"
fi
wait_until 20 "counter on c" bash -c "[ \"\$(grep -ac 'CNT ' $(log_of c))\" -ge 5 ]"
fc=$(first_cnt "$(log_of c)")
[ -n "$fc" ] && [ "$fc" -gt "$before" ] && pass counter-continues-on-c "b had $before, c starts at $fc" ||
	fail counter-continues-on-c "b had $before, c starts at '$fc'"
list=$(vb vm list --all-hosts 2>&1)
rows=$(awk '$2 == "m3"' <<<"$list")
[ "$(wc -l <<<"$rows")" = 1 ] && [ "$(awk '{print $1, $3}' <<<"$rows")" = "c running" ] &&
	pass list-all-hosts-one-row "$(tr -s ' ' <<<"$rows")" || fail list-all-hosts-one-row "$list"
[ -z "$(MIG_VM=m3 leftovers_on b $BR)" ] && pass nothing-left-on-b || fail nothing-left-on-b "$(leftovers_on b $BR | tr '\n' ' ')"
e2e_finish
