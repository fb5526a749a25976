#!/usr/bin/env bash
# Allocation and the image scans with a broken definition in the home. A
# typo in VM qa's vm.conf (memory = 12x) must not free what qa holds: the
# next 'vm create' gets another id, MAC and VNC display, and qa's base stays
# protected (the refusal names qa's file). Where even a lenient read cannot
# tell what qa holds (a bad id, a line that is not "key = value"), creating
# is refused and the message names the file. No QEMU runs.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init vm-alloc
source "$here/vmhost-env.sh"
need qemu-img

conf_key() { sed -n "s/^$2 = //p" "$VMHOST_HOME/vms/$1/vm.conf"; }
QA_CONF=$VMHOST_HOME/vms/qa/vm.conf

BASE=$E2E_TMP/base.qcow2 OTHER=$E2E_TMP/other.qcow2
qemu-img create -f qcow2 "$BASE" 64M >/dev/null && qemu-img create -f qcow2 "$OTHER" 64M >/dev/null ||
	{ fail make-bases; e2e_finish; }
out=$("$VMHOST" vm create qa --base "$BASE" --net user --vnc 127.0.0.1:auto 2>&1) && pass create-qa || fail create-qa "$out"
qa_id=$(conf_key qa id) qa_nic=$(conf_key qa nic) qa_vnc=$(conf_key qa vnc)
cp "$QA_CONF" "$E2E_TMP/qa.conf.good"

# The typo: a key whose value is refused, none of what allocation hands out.
sed -i 's/^memory = .*/memory = 12x/' "$QA_CONF"

# qa's base must not be overwritten: qa may use it, and the refusal says
# which file to fix.
sum0=$(sha256sum <"$BASE")
out=$("$VMHOST" img create -f qcow2 "$BASE" 1G 2>&1) && fail overwrite-base-of-broken-refused "$out" ||
	{ [[ $out == *"$QA_CONF"*"fix it first"* ]] && pass overwrite-base-of-broken-refused "$out" ||
		fail overwrite-base-of-broken-refused "$out"; }
[ "$(sha256sum <"$BASE")" = "$sum0" ] && pass base-untouched || fail base-untouched

# qb gets its own id, MAC and display, not qa's.
out=$("$VMHOST" vm create qb --base "$OTHER" --net user --vnc 127.0.0.1:auto 2>&1) && pass create-qb "$out" ||
	fail create-qb "$out"
qb_id=$(conf_key qb id) qb_nic=$(conf_key qb nic) qb_vnc=$(conf_key qb vnc)
[ -n "$qb_id" ] && [ "$qb_id" != "$qa_id" ] && pass distinct-id "qa $qa_id, qb $qb_id" ||
	fail distinct-id "qa $qa_id, qb $qb_id"
qa_mac=${qa_nic#*mac=} qb_mac=${qb_nic#*mac=}
[ -n "$qb_mac" ] && [ "${qb_mac%%,*}" != "${qa_mac%%,*}" ] && pass distinct-mac "qa $qa_mac, qb $qb_mac" ||
	fail distinct-mac "qa $qa_mac, qb $qb_mac"
[ -n "$qb_vnc" ] && [ "$qb_vnc" != "$qa_vnc" ] && pass distinct-display "qa $qa_vnc, qb $qb_vnc" ||
	fail distinct-display "qa $qa_vnc, qb $qb_vnc"

# Deleting qb removes its disk, which qa might use as its base: refused
# until qa's file parses.
out=$("$VMHOST" vm delete qb 2>&1) && fail delete-while-broken-refused "$out" ||
	{ [[ $out == *"$QA_CONF"* ]] && [ -f "$VMHOST_HOME/vms/qb/vm.conf" ] && pass delete-while-broken-refused "$out" ||
		fail delete-while-broken-refused "$out"; }

# What qa holds cannot be told: creating is refused, naming the file.
for bad in 'id = 1x' 'id 1' 'nic = user,mac=zz'; do
	cp "$E2E_TMP/qa.conf.good" "$QA_CONF"
	case $bad in
	id*) sed -i "s/^id = .*/$bad/" "$QA_CONF" ;;
	nic*) sed -i "s/^nic = .*/$bad/" "$QA_CONF" ;;
	esac
	out=$("$VMHOST" vm create qc --base "$OTHER" --net user 2>&1) && fail "unreadable-refused[$bad]" "$out" ||
		{ [[ $out == *"$QA_CONF"*"fix it first"* ]] && [ ! -e "$VMHOST_HOME/vms/qc/vm.conf" ] &&
			pass "unreadable-refused[$bad]" "$out" || fail "unreadable-refused[$bad]" "$out"; }
done

# Fixed, everything works again.
cp "$E2E_TMP/qa.conf.good" "$QA_CONF"
out=$("$VMHOST" vm create qc --base "$OTHER" --net user 2>&1) && pass create-after-fix || fail create-after-fix "$out"
qc_id=$(conf_key qc id)
[ -n "$qc_id" ] && [ "$qc_id" != "$qa_id" ] && [ "$qc_id" != "$qb_id" ] && pass distinct-id-after-fix "$qc_id" ||
	fail distinct-id-after-fix "qa $qa_id, qb $qb_id, qc $qc_id"
"$VMHOST" vm delete qb >/dev/null 2>&1 && "$VMHOST" vm delete qc >/dev/null 2>&1 && pass delete-after-fix ||
	fail delete-after-fix
out=$("$VMHOST" img create -f qcow2 "$BASE" 1G 2>&1) && fail overwrite-base-refused "$out" ||
	{ [[ $out == *"base of VM qa"* ]] && pass overwrite-base-refused "$out" || fail overwrite-base-refused "$out"; }
e2e_finish
