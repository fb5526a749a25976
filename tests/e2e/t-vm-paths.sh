#!/usr/bin/env bash
# Paths given relative to the caller's directory (vm create --disk, --cdrom,
# --kernel, --initrd, --base; vm set disk=, cdrom=) are stored absolute, so
# the VM starts from any other directory (issue 11: 'vm create q1 --disk
# rel.qcow2' stored 'disk = rel.qcow2', and 'vm start q1' elsewhere failed).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init vm-paths
source "$here/vmhost-env.sh"
trap 'vmhost_cleanup_vms; e2e_cleanup' EXIT
need qemu-img

conf_key() { sed -n "s/^$2 = //p" "$VMHOST_HOME/vms/$1/vm.conf"; }

mkdir -p "$E2E_TMP/work/sub" "$E2E_TMP/elsewhere"
cd "$E2E_TMP/work" || exit 1
qemu-img create -q -f qcow2 rel.qcow2 64M && qemu-img create -q -f qcow2 sub/other.qcow2 64M &&
	cp "$GUEST_DIR/vmlinuz" vmlinuz && cp "$GUEST_DIR/initrd.img" sub/initrd.img && : >cd.iso || fail setup

"$VMHOST" vm create q1 --disk rel.qcow2 --cdrom cd.iso --vnc none >/dev/null &&
	[ "$(conf_key q1 disk)" = "$E2E_TMP/work/rel.qcow2" ] && [ "$(conf_key q1 cdrom)" = "$E2E_TMP/work/cd.iso" ] &&
	pass create-stores-absolute "disk = $(conf_key q1 disk)" || fail create-stores-absolute "$(cat "$VMHOST_HOME/vms/q1/vm.conf")"

"$VMHOST" vm create q2 --boot kernel --kernel vmlinuz --initrd sub/initrd.img --vnc none \
	--append "console=ttyS0 quiet panic=-1 no_timer_check vmhost.name=q2 vmhost.net=none" >/dev/null &&
	[ "$(conf_key q2 kernel)" = "$E2E_TMP/work/vmlinuz" ] && [ "$(conf_key q2 initrd)" = "$E2E_TMP/work/sub/initrd.img" ] &&
	pass create-kernel-absolute || fail create-kernel-absolute "$(cat "$VMHOST_HOME/vms/q2/vm.conf")"

"$VMHOST" vm create q3 --base rel.qcow2 --vnc none >/dev/null &&
	[ "$(conf_key q3 base)" = "$E2E_TMP/work/rel.qcow2" ] && pass create-base-absolute || fail create-base-absolute

(cd sub && "$VMHOST" vm set q1 disk=other.qcow2 >/dev/null) &&
	[ "$(conf_key q1 disk)" = "$E2E_TMP/work/sub/other.qcow2" ] && pass set-stores-absolute "disk = $(conf_key q1 disk)" ||
	fail set-stores-absolute "$(conf_key q1 disk)"

# The VM starts from another directory.
cd "$E2E_TMP/elsewhere" || exit 1
out=$("$VMHOST" vm start q2 --wait --timeout 120 2>&1) && pass start-from-elsewhere "$(grep -o 'VMHOST-READY.*' <<<"$out")" ||
	fail start-from-elsewhere "$out"
"$VMHOST" vm kill q2 >/dev/null || fail kill
out=$("$VMHOST" vm start q1 2>&1) && [ "$(vm_json q1 state)" = running ] && pass start-disk-from-elsewhere ||
	fail start-disk-from-elsewhere "$out"
"$VMHOST" vm kill q1 >/dev/null || fail kill
e2e_finish
