#!/usr/bin/env bash
# Shared bases: per-VM overlays on one base; the base cannot be overwritten
# or deleted through vmhost while VMs depend on it (the error names them);
# 'vm commit' merges an overlay into the base, refused while any VM on that
# base runs, and names the other VMs that will see the change.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init vm-base
source "$here/vmhost-env.sh"
trap 'vmhost_cleanup_vms; e2e_cleanup' EXIT
need python3 qemu-img

BASE=$E2E_TMP/base.qcow2
cp "$GUEST_DIR/disk.qcow2" "$BASE"
"$VMHOST" vm create va --base "$BASE" --disk-size 64M >/dev/null && "$VMHOST" vm create vb --base "$BASE" --disk-size 64M >/dev/null &&
	pass two-overlays || fail two-overlays
sum0=$(sha256sum <"$BASE")

out=$("$VMHOST" img create -f qcow2 "$BASE" 1G 2>&1) && fail overwrite-base-refused "$out" ||
	{ [[ $out == *"base of VMs va, vb"* ]] && pass overwrite-base-refused "$out" || fail overwrite-base-refused "$out"; }
out=$("$VMHOST" img convert -O qcow2 "$GUEST_DIR/disk.qcow2" "$BASE" 2>&1) && fail convert-onto-base-refused "$out" ||
	{ [[ $out == *"base of VMs va, vb"* ]] && pass convert-onto-base-refused "$out" || fail convert-onto-base-refused "$out"; }
[ "$(sha256sum <"$BASE")" = "$sum0" ] && pass base-untouched || fail base-untouched

# A VM's own disk that another VM uses as its base cannot be deleted.
"$VMHOST" vm create vc --base "$VMHOST_HOME/vms/va/disk.qcow2" >/dev/null
out=$("$VMHOST" vm delete va 2>&1) && fail delete-base-vm-refused "$out" ||
	{ [[ $out == *"base of VM vc"* ]] && pass delete-base-vm-refused "$out" || fail delete-base-vm-refused "$out"; }
"$VMHOST" vm delete vc >/dev/null && pass delete-leaf || fail delete-leaf

# Write into va's overlay, then commit it into the base.
"$VMHOST" vm start va --wait >/dev/null
serial_cmd "$VMHOST_HOME/run/vms/va/serial.sock" 10 "echo committed-data | dd of=/dev/vda bs=1M seek=40 conv=fsync 2>/dev/null" >/dev/null
out=$("$VMHOST" vm commit va 2>&1) && fail commit-refused-while-running "$out" ||
	{ [[ $out == *"while VM va"* ]] && pass commit-refused-while-running "$out" || fail commit-refused-while-running "$out"; }
"$VMHOST" vm stop va >/dev/null
"$VMHOST" vm start vb --wait >/dev/null
out=$("$VMHOST" vm commit va 2>&1) && fail commit-refused-while-other-runs "$out" ||
	{ [[ $out == *"while VM vb"* ]] && pass commit-refused-while-other-runs "$out" || fail commit-refused-while-other-runs "$out"; }
"$VMHOST" vm stop vb >/dev/null
out=$("$VMHOST" vm commit va 2>&1) && [[ $out == *"VM vb uses the same base"* ]] && pass commit "$out" || fail commit "$out"
qemu-img check "$BASE" >/dev/null 2>&1 && qemu-img check "$VMHOST_HOME/vms/va/disk.qcow2" >/dev/null 2>&1 &&
	pass images-clean-after-commit || fail images-clean-after-commit
alloc=$(qemu-img map --output=json "$VMHOST_HOME/vms/va/disk.qcow2" | python3 -c 'import json,sys
print(sum(e["length"] for e in json.load(sys.stdin) if e["depth"] == 0 and e["data"]))')
[ "$alloc" = 0 ] && pass overlay-emptied || fail overlay-emptied "$alloc bytes still in the overlay"
# vb, on the same base, now sees the committed bytes.
"$VMHOST" vm start vb --wait >/dev/null
out=$(serial_cmd "$VMHOST_HOME/run/vms/vb/serial.sock" 10 "dd if=/dev/vda bs=1M skip=40 count=1 2>/dev/null | head -1")
[ "$out" = committed-data ] && pass other-vm-sees-commit "$out" || fail other-vm-sees-commit "$out"
"$VMHOST" vm stop vb >/dev/null
e2e_finish
