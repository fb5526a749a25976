#!/bin/bash
# tests/e2e/t-vm-migrate-copy.sh: 'vmhost vm migrate --storage copy' between
# two namespace hosts (lib-hosts.sh) with NO shared storage, over real
# OpenSSH. A base (24 MiB of data) is pushed from this side to b with 'img
# push'; the test guest runs on b on an overlay over b's copy. The guest
# writes 8 MiB to its disk before the migration and a sequence number to
# one sector every 50 ms throughout it. Checks: dry runs (auto picks copy,
# direct+copy checks pass); one fault: c's QEMU killed during the disk phase
# (b's migration pushed the base to c first) leaves the VM running on b
# with its block graph as before and nothing of the VM on c; then b -> c:
# the counter goes on, the VM is on c only, b's overlay is gone and its base
# kept, c's overlay holds what the guest wrote ('qemu-img compare' against
# a reference built here: base + the 8 MiB + the last sequence number the
# guest wrote), and the disk bytes sent are close to b's overlay
# allocation, far below the base's data.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init vm-migrate-copy
need ip unshare ssh ssh-keygen python3 qemu-img qemu-io qemu-system-x86_64
VMHOST=${VMHOST:-$ROOT/build/src/cli/vmhost}
VMHOST=$(readlink -f "$VMHOST")
GUEST_DIR=${VMHOST_GUEST_DIR:?run through tests/e2e/run (the test guest)}
# shellcheck source=tests/e2e/lib-hosts.sh
source "$HERE/lib-hosts.sh"
trap 'hosts_cleanup; e2e_cleanup' EXIT
hosts_init
host_new b && host_new c || e2e_finish
host_add b >/dev/null && host_add c >/dev/null || { fail hosts-add; e2e_finish; }
hosts_know_each_other b c || { fail hosts-add-peers; e2e_finish; }
MIG_VM=m2
# shellcheck source=tests/e2e/lib-migrate.sh
source "$HERE/lib-migrate.sh"

nothing_on() { # nothing_on HOST: no definition, disk or runtime files of m2
	local d; d=$(host_dir "$1")
	[ ! -e "$d/state/vms/m2" ] && [ ! -e "$d/run/vms/m2" ]
}
# The overlay of m2 on HOST as seen from here: its backing name is a path
# inside the host's namespace, so the backing file is named here.
ovl_spec() {
	local d; d=$(host_dir "$1")
	echo "json:{\"driver\":\"qcow2\",\"file\":{\"driver\":\"file\",\"filename\":\"$d/state/vms/m2/disk.qcow2\"},\"backing\":{\"driver\":\"raw\",\"file\":{\"driver\":\"file\",\"filename\":\"$d/state/images/mcbase.raw\"}}}"
}
# Bytes the top layer of m2's overlay on HOST allocates (not its base's).
top_alloc() {
	qemu-img map -U --output=json "$(ovl_spec "$1")" | python3 -c 'import json,sys; print(sum(e["length"] for e in json.load(sys.stdin) if e["depth"] == 0 and e["data"]))'
}
# The base: 24 MiB of data in a 64 MiB raw image, pushed to b.
BASE=$E2E_TMP/mcbase.raw
qemu-img create -q -f raw "$BASE" 64M && qemu-io -f raw -c 'write -P 0x77 0 24M' "$BASE" >/dev/null || fail base-make
"$VMHOST" img push -q "$BASE" b >/dev/null && [ -e "$(host_dir b)/state/images/mcbase.raw" ] &&
	pass base-on-b || { fail base-on-b; e2e_finish; }
vb vm create m2 --base /var/lib/vmhost/images/mcbase.raw --boot kernel --kernel "$GUEST_DIR/vmlinuz" \
	--initrd "$GUEST_DIR/initrd.img" --memory 128M --net none \
	--append "console=ttyS0 quiet panic=-1 no_timer_check vmhost.name=m2 vmhost.net=none vmhost.counter=1" \
	>/dev/null && pass create || fail create
vb vm start m2 --wait --timeout 120 >/dev/null && pass start-on-b || { fail start-on-b; e2e_finish; }
wait_until 30 "counter on b" bash -c "[ \"\$(grep -ac 'CNT ' $(log_of b))\" -ge 5 ]"
OVL_B=$(host_dir b)/state/vms/m2/disk.qcow2

# 8 MiB of 'Q' at 32 MiB, then the writer of the sequence numbers ('SEQ'
# and 8 digits at 48 MiB, each fsynced before it is recorded in /tmp/seq).
out=$(console_cmd b m2 60 "dd if=/dev/zero bs=1M count=8 2>/dev/null | tr '\\000' Q | dd of=/dev/vda bs=1M seek=32 conv=fsync 2>/dev/null; echo WROTE=\$?")
grep -q 'WROTE=0' <<<"$out" && pass guest-writes-8M || fail guest-writes-8M "$out"
console_cmd b m2 20 "rm -f /tmp/stop /tmp/done; (i=0; while [ ! -e /tmp/stop ]; do i=\$((i+1)); printf 'SEQ%08d' \$i | dd of=/dev/vda bs=512 seek=98304 conv=notrunc,fsync 2>/dev/null && echo \$i >/tmp/seq; usleep 50000; done; touch /tmp/done) </dev/null >/dev/null 2>&1 & echo STARTED" >/dev/null
wait_until 20 "the guest's writer on b's overlay" bash -c "qemu-io -U -r -c 'read -v 50331648 3' '$(ovl_spec b)' | grep -q SEQ"

# ---- dry runs ----
out=$(vb vm migrate m2 c --dry-run 2>&1) && grep -q "ok   storage .*copied (--storage auto)" <<<"$out" &&
	grep -q "ok   base .*not on host c: it is pushed" <<<"$out" &&
	pass dry-run-auto-copy "$(grep -E 'storage|base' <<<"$out" | tr '\n' ' ')" || fail dry-run-auto-copy "$out"
out=$(vb vm migrate m2 c --storage copy --transport direct --dry-run 2>&1) &&
	grep -q "^ok   base " <<<"$out" && pass direct-copy-checks || fail direct-copy-checks "$out"
nothing_on c && [ ! -e "$(host_dir c)/state/images/mcbase.raw" ] && pass dry-run-touches-nothing ||
	fail dry-run-touches-nothing

# ---- fault: c's QEMU killed during the disk phase ----
graph() { vb vm qmp m2 '{"execute":"query-named-block-nodes","arguments":{"flat":true}}' 2>/dev/null |
	python3 -c 'import json,sys; d=json.load(sys.stdin); d=d.get("return",d) if isinstance(d,dict) else d; print(" ".join(sorted(n["node-name"] for n in d)))'; }
jobs() { vb vm qmp m2 '{"execute":"query-block-jobs"}' 2>/dev/null | python3 -c 'import json,sys; d=json.load(sys.stdin); print(len(d.get("return",d) if isinstance(d,dict) else d))'; }
g_before=$(graph)
before=$(last_cnt "$(log_of b)")
vb vm migrate m2 c --storage copy --bandwidth 1M --timeout 120 >"$E2E_TMP/f.out" 2>&1 &
pid=$!
if wait_until 60 "mirror running into c" bash -c "[ -S $(host_dir b)/run/vms/m2/migrate-nbd-fwd.sock ] &&
	[ -e $(host_dir c)/run/vms/m2/qemu.pid ] && grep -q 'migrate: disk' $E2E_TMP/f.out"; then
	kill -9 "$(cat "$(host_dir c)/run/vms/m2/qemu.pid")"
	wait $pid; rc=$?
	wait_until 20 "c cleaned" bash -c "[ ! -e $(host_dir c)/state/vms/m2 ] && [ ! -e $(host_dir c)/run/vms/m2 ]"
	wait_until 10 "counter goes on on b" bash -c "[ \"\$(grep -ao 'CNT [0-9]*' $(log_of b) | tail -1 | cut -d' ' -f2)\" -gt $((before + 5)) ]"
	g_after=$(graph)
	if [ $rc -ne 0 ] && [ "$(state_of b)" = running ] && nothing_on c && [ "$g_after" = "$g_before" ] &&
		[ "$(jobs)" = 0 ] && [ "$(last_cnt "$(log_of b)")" -gt $((before + 5)) ]; then
		pass fault-qemu-killed-disk-phase "$(grep -m1 -i 'error' "$E2E_TMP/f.out")"
	else
		fail fault-qemu-killed-disk-phase "rc $rc, b: $(state_of b), graph '$g_before' -> '$g_after', jobs $(jobs), c: $(ls -R "$(host_dir c)/state/vms" "$(host_dir c)/run/vms" 2>&1 | tr '\n' ' '); $(cat "$E2E_TMP/f.out")"
	fi
else
	fail fault-qemu-killed-disk-phase "the disk phase did not start: $(cat "$E2E_TMP/f.out")"
	wait $pid
fi
grep -q 'migrate: push' "$E2E_TMP/f.out" && cmp -s "$BASE" "$(host_dir c)/state/images/mcbase.raw" &&
	pass base-pushed-to-c "by the migration, same bytes" || fail base-pushed-to-c "$(cat "$E2E_TMP/f.out")"

# ---- b -> c, copied, through ssh ----
out=$(vb vm migrate m2 c --dry-run 2>&1)
grep -q "ok   base .*is on host c as /var/lib/vmhost/images/mcbase.raw (same content)" <<<"$out" &&
	pass base-found-on-c || fail base-found-on-c "$out"
# The sequence number on HOST's overlay now ("" if none readable).
seq_on() {
	qemu-io -U -r -c 'read -v 50331648 11' "$(ovl_spec "$1")" 2>/dev/null | grep -ao 'SEQ[0-9]\{8\}' | head -1 | sed 's/^SEQ0*//'
}
alloc=$(top_alloc b)
seq0=$(seq_on b)
before=$(last_cnt "$(log_of b)")
if out=$(vb vm migrate m2 c --storage copy --json 2>"$E2E_TMP/mig.err"); then
	pass migrate-b-c-copy "total $(jfield total_ms <<<"$out") ms, downtime $(jfield downtime_ms <<<"$out") ms, RAM $(jfield ram_transferred <<<"$out") bytes, disk $(jfield disk_transferred <<<"$out") bytes (b's overlay allocated $alloc before)"
else
	fail migrate-b-c-copy "$out $(cat "$E2E_TMP/mig.err")"
fi
[ "$(jfield storage <<<"$out")" = copy ] && [ "$(jfield where <<<"$out")" = c ] && pass report-copy-where ||
	fail report-copy-where "$out"
disk=$(jfield disk_transferred <<<"$out")
seq1=$(seq_on c)
# Close to the overlay's allocation, far from the base's 24 MiB. The guest
# rewrites its sequence sector every 50 ms meanwhile, and each rewrite of
# a cluster the mirror already copied dirties it again: one more 64 KiB
# cluster (the mirror's granularity) per rewrite at most, so the longer
# the migration takes (a loaded machine), the more is sent again.
rewrites=$(( ${seq1:-0} - ${seq0:-0} + 1 ))
if [ -n "$seq0" ] && [ -n "$seq1" ] && [ "$disk" -ge $((alloc * 9 / 10)) ] 2>/dev/null &&
	[ $((disk - rewrites * 65536)) -le $((alloc * 11 / 10 + 1048576)) ] &&
	[ $((disk - rewrites * 65536)) -lt $((16 << 20)) ]; then
	pass disk-bytes-near-overlay "disk $disk bytes, overlay $alloc, $rewrites rewrites of one cluster meanwhile, base data $((24 << 20))"
else
	fail disk-bytes-near-overlay "disk '$disk' bytes, overlay $alloc, sequence '$seq0' -> '$seq1'"
fi
wait_until 20 "counter on c" bash -c "[ \"\$(grep -ac 'CNT ' $(log_of c))\" -ge 5 ]"
fc=$(first_cnt "$(log_of c)")
[ -n "$fc" ] && [ "$fc" -gt "$before" ] && pass counter-continues-on-c "b had $before before, c starts at $fc" ||
	fail counter-continues-on-c "b had $before, c starts at '${fc}'"
[ "$(state_of c)" = running ] && nothing_on b && [ -e "$(host_dir b)/state/images/mcbase.raw" ] &&
	pass one-host-after "running on c; b has no definition, overlay or runtime files; b's base kept" ||
	fail one-host-after "c: $(state_of c); b: $(ls -R "$(host_dir b)/state/vms" "$(host_dir b)/run/vms" 2>&1 | tr '\n' ' ')"
OVL_C=$(host_dir c)/state/vms/m2/disk.qcow2
qemu-img info -U "$OVL_C" 2>/dev/null | grep -q "backing file: /var/lib/vmhost/images/mcbase.raw" &&
	pass c-overlay-on-c-base || fail c-overlay-on-c-base "$(qemu-img info -U "$OVL_C" 2>&1)"

# The writer stops on c; what it wrote last must be in c's overlay.
out=$(console_cmd c m2 30 "touch /tmp/stop; n=0; while [ ! -e /tmp/done ] && [ \$n -lt 100 ]; do usleep 50000; n=\$((n+1)); done; echo LAST=\$(cat /tmp/seq)")
last=$(grep -ao 'LAST=[0-9]*' <<<"$out" | cut -d= -f2)
vc vm kill m2 >/dev/null 2>&1
wait_until 20 "m2 stopped on c" bash -c "[ ! -e $(host_dir c)/run/vms/m2/qemu.pid ]"
[ -n "$last" ] && [ "$last" -gt 0 ] && pass writer-ran "last sequence number $last" || fail writer-ran "$out"
# The reference: the base, the 8 MiB of Q, the last sector written.
REF=$E2E_TMP/ref.raw
cp --sparse=always "$BASE" "$REF"
python3 - "$REF" "${last:-0}" <<'EOF'
import sys
with open(sys.argv[1], 'r+b') as f:
    f.seek(32 << 20); f.write(b'Q' * (8 << 20))
    f.seek(48 << 20); f.write(b'SEQ%08d' % int(sys.argv[2]))
EOF
if cmpout=$(qemu-img compare -U -f raw "$REF" "$(ovl_spec c)" 2>&1); then
	pass compare-c-overlay "$cmpout: c's disk holds base + the guest's writes before and during the migration"
else
	fail compare-c-overlay "$cmpout"
fi
e2e_finish
