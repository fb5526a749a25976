#!/bin/bash
# tests/e2e/t-img-replace.sh: 'vmhost img create' and 'img convert' over an
# existing file (issue 10, item 3; a deliberate difference from qemu-img,
# docs/qemu-img-compat.md), through the CLI against qemu-img and qemu-io:
#   data      a qcow2 image, a raw image and a text file that hold data are
#             not replaced: exit 1, the message names the file and the
#             amount (as qemu-img map counts it), the guest content and the
#             file itself unchanged; --force replaces them
#   empty     a zero-length file, a new qcow2 (also preallocation=metadata),
#             an empty overlay and a sparse raw file are replaced without
#             --force
#   convert   the same for convert's destination
#   locked    an image qemu-io holds is refused even with --force, the error
#             names qemu-io's pid; the image unchanged
#   vm        a VM's disk (a definition made with --disk, never started) and
#             a VM's base are refused even with --force
#   size      create's negative SIZE ("-1", "-5M", -o size=-1) gets the
#             error of any bad size ("12x"), word for word; resize still
#             takes "-16M" as a relative shrink
# Env: VMHOST=path to the vmhost binary; E2E_KEEP=1 keeps the temp dir on
# failure.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init img-replace
VMHOST=${VMHOST:-$ROOT/build/src/cli/vmhost}
[ -x "$VMHOST" ] || { fail built "$VMHOST is not built (ninja -C build)"; e2e_finish; }
# shellcheck source=tests/e2e/vmhost-env.sh
source "$HERE/vmhost-env.sh"
trap 'vmhost_cleanup_vms; e2e_cleanup' EXIT
need qemu-img qemu-io python3 cmp sha256sum
cd "$E2E_TMP" || exit 1
head -c 2M /dev/urandom >rnd.bin

# guest_sum IMAGE: sha256 of what a guest sees (qemu-img's raw view).
guest_sum() {
	qemu-img convert -U -O raw "$1" view.raw && sha256sum <view.raw | cut -d' ' -f1
	rm -f view.raw
}

# own_data IMAGE: bytes of data the image holds itself, as qemu-img map
# says (data and not zero, depth 0).
own_data() {
	qemu-img map -U --output=json "$1" | python3 -c 'import json, sys
print(sum(e["length"] for e in json.load(sys.stdin) if e["depth"] == 0 and e["data"] and not e["zero"]))'
}

# vsize IMAGE: its virtual size, as qemu-img says.
vsize() { qemu-img info -U --output=json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }

# refused NAME EXPECT CMD...: CMD exits 1 and its message contains every
# pattern of EXPECT (separated by '|'); fails NAME otherwise. Sets OUT. The
# caller then checks that the file is unchanged and passes NAME.
refused() {
	local name=$1 expect=$2 rc=0 p
	shift 2
	OUT=$("$@" 2>&1) || rc=$?
	if [ "$rc" != 1 ]; then
		fail "$name" "exit $rc, expected 1: $OUT"
		return 1
	fi
	local IFS='|'
	for p in $expect; do
		if [[ $OUT != *"$p"* ]]; then
			fail "$name" "message lacks '$p': $OUT"
			return 1
		fi
	done
	return 0
}

# ---------------------------------------------------------------- data
# A qcow2 image with 1.5 MiB of its own data: random and a pattern.
"$VMHOST" img create -q -f qcow2 disk.qcow2 64M
qemu-io -c "write -s rnd.bin 0 1M" -c "write -P 0x5a 10M 512k" disk.qcow2 >/dev/null
amount=$(own_data disk.qcow2)
sum=$(guest_sum disk.qcow2)
cp disk.qcow2 disk.before
if refused create-over-data "disk.qcow2|($amount bytes) of data|--force" \
	"$VMHOST" img create -f qcow2 disk.qcow2 64M; then
	if [ "$amount" = 1572864 ] && [ "$(guest_sum disk.qcow2)" = "$sum" ] && cmp -s disk.qcow2 disk.before; then
		pass create-over-data "$OUT"
	else
		fail create-over-data "amount $amount (1572864 written) or content changed"
	fi
fi
# qemu-img itself would replace it: the refusal is vmhost's.
if "$VMHOST" img create -q --force -f qcow2 disk.qcow2 32M &&
   [ "$(own_data disk.qcow2)" = 0 ] && qemu-img check -q disk.qcow2 &&
   [ "$(vsize disk.qcow2)" = $((32 << 20)) ]; then
	pass create-force-replaces
else
	fail create-force-replaces "$(qemu-img info disk.qcow2 2>&1)"
fi

# A raw image with data, and a text file (a raw image to vmhost).
"$VMHOST" img create -q -f raw disk.raw 16M
qemu-io -f raw -c "write -P 0x11 4M 256k" disk.raw >/dev/null
amount=$(own_data disk.raw)
cp --sparse=always disk.raw raw.before
refused create-over-raw-data "disk.raw|($amount bytes) of data" "$VMHOST" img create -f raw disk.raw 16M &&
	{ cmp -s disk.raw raw.before && [ "$amount" -ge 262144 ] && pass create-over-raw-data "$OUT" ||
		fail create-over-raw-data "amount $amount or content changed"; }
printf 'notes, not an image\n' >notes.txt
refused create-over-text "notes.txt|20 bytes of data" "$VMHOST" img create -f qcow2 notes.txt 1M &&
	{ [ "$(cat notes.txt)" = "notes, not an image" ] && pass create-over-text "$OUT" || fail create-over-text "notes.txt changed"; }
if "$VMHOST" img create -q --force -f qcow2 notes.txt 1M && qemu-img check -q notes.txt; then
	pass create-force-over-text
else
	fail create-force-over-text
fi

# ---------------------------------------------------------------- empty
: >zero.qcow2
"$VMHOST" img create -q -f qcow2 fresh.qcow2 64M
"$VMHOST" img create -q -f qcow2 -o preallocation=metadata meta.qcow2 16M
"$VMHOST" img create -q -f qcow2 -b fresh.qcow2 -F qcow2 overlay.qcow2
"$VMHOST" img create -q -f raw sparse.raw 16M
for f in zero.qcow2 fresh.qcow2 meta.qcow2 overlay.qcow2 sparse.raw; do
	fmt=qcow2
	[ "$f" = sparse.raw ] && fmt=raw
	ok=0
	if out=$("$VMHOST" img create -q -f "$fmt" "$f" 8M 2>&1) && [ "$(vsize "$f")" = $((8 << 20)) ]; then
		[ "$fmt" = raw ] || qemu-img check -q "$f" && ok=1
	fi
	if [ $ok = 1 ]; then pass "empty-replaced-$f"; else fail "empty-replaced-$f" "$out"; fi
done

# ---------------------------------------------------------------- convert
"$VMHOST" img create -q -f qcow2 src.qcow2 16M
qemu-io -c "write -P 0x33 0 3M" src.qcow2 >/dev/null
"$VMHOST" img create -q -f qcow2 dst.qcow2 16M
qemu-io -c "write -P 0x44 1M 64k" dst.qcow2 >/dev/null
cp dst.qcow2 dst.before
refused convert-over-data "dst.qcow2|(65536 bytes) of data|--force" \
	"$VMHOST" img convert -O qcow2 src.qcow2 dst.qcow2 &&
	{ cmp -s dst.qcow2 dst.before && pass convert-over-data "$OUT" || fail convert-over-data "dst.qcow2 changed"; }
if "$VMHOST" img convert --force -O qcow2 src.qcow2 dst.qcow2 && qemu-img compare -q src.qcow2 dst.qcow2; then
	pass convert-force-replaces
else
	fail convert-force-replaces
fi
"$VMHOST" img create -q -f qcow2 empty-dst.qcow2 16M
if "$VMHOST" img convert -O raw src.qcow2 empty-dst.qcow2 && qemu-img compare -q -F raw src.qcow2 empty-dst.qcow2; then
	pass convert-over-empty
else
	fail convert-over-empty
fi

# ---------------------------------------------------------------- locked
"$VMHOST" img create -q -f qcow2 held.qcow2 16M
qemu-io -c "write -P 0x66 0 128k" held.qcow2 >/dev/null
"$VMHOST" img create -q -f qcow2 held-empty.qcow2 16M
qemu-io -c "sleep 20000" held.qcow2 >/dev/null 2>&1 &
holder=$!
track_pid "$holder"
qemu-io -c "sleep 20000" held-empty.qcow2 >/dev/null 2>&1 &
holder2=$!
track_pid "$holder2"
wait_until 20 "lock on held.qcow2 by qemu-io $holder" lock_held "$holder"
wait_until 20 "lock on held-empty.qcow2 by qemu-io $holder2" lock_held "$holder2"
cp held.qcow2 held.before
cp held-empty.qcow2 held-empty.before
refused locked-create-force "held.qcow2|in use by process $holder (qemu-io)" \
	"$VMHOST" img create --force -f qcow2 held.qcow2 16M &&
	{ cmp -s held.qcow2 held.before && pass locked-create-force "$OUT" || fail locked-create-force "held.qcow2 changed"; }
refused locked-convert-force "held.qcow2|in use by process $holder (qemu-io)" \
	"$VMHOST" img convert --force -O qcow2 src.qcow2 held.qcow2 &&
	{ cmp -s held.qcow2 held.before && pass locked-convert-force "$OUT" || fail locked-convert-force "held.qcow2 changed"; }
# Held but empty: still not replaced, the lock comes first.
refused locked-empty "held-empty.qcow2|in use by process $holder2 (qemu-io)" \
	"$VMHOST" img create -f qcow2 held-empty.qcow2 16M &&
	{ cmp -s held-empty.qcow2 held-empty.before && pass locked-empty "$OUT" || fail locked-empty "held-empty.qcow2 changed"; }
stop_pid "$holder"
stop_pid "$holder2"
if "$VMHOST" img create -q --force -f qcow2 held.qcow2 16M && [ "$(own_data held.qcow2)" = 0 ]; then
	pass unlocked-force-replaces "once qemu-io is gone"
else
	fail unlocked-force-replaces
fi

# ---------------------------------------------------------------- vm
"$VMHOST" img create -q -f qcow2 "$E2E_TMP/vmdisk.qcow2" 64M
"$VMHOST" img create -q -f qcow2 "$E2E_TMP/vmbase.qcow2" 64M
if "$VMHOST" vm create vd --disk "$E2E_TMP/vmdisk.qcow2" >/dev/null &&
   "$VMHOST" vm create vo --base "$E2E_TMP/vmbase.qcow2" >/dev/null; then
	pass vm-defined
else
	fail vm-defined
fi
cp vmdisk.qcow2 vmdisk.before
cp vmbase.qcow2 vmbase.before
# Both are empty images, so only the VM check can stop them.
refused vm-disk-create-force "vmdisk.qcow2: it is the disk of VM vd" \
	"$VMHOST" img create --force -f qcow2 "$E2E_TMP/vmdisk.qcow2" 64M &&
	{ cmp -s vmdisk.qcow2 vmdisk.before && pass vm-disk-create-force "$OUT" || fail vm-disk-create-force "changed"; }
refused vm-disk-convert-force "vmdisk.qcow2: it is the disk of VM vd" \
	"$VMHOST" img convert --force -O qcow2 src.qcow2 "$E2E_TMP/vmdisk.qcow2" &&
	{ cmp -s vmdisk.qcow2 vmdisk.before && pass vm-disk-convert-force "$OUT" || fail vm-disk-convert-force "changed"; }
refused vm-base-create-force "vmbase.qcow2: it is the base of VM vo" \
	"$VMHOST" img create --force -f qcow2 "$E2E_TMP/vmbase.qcow2" 64M &&
	{ cmp -s vmbase.qcow2 vmbase.before && pass vm-base-create-force "$OUT" || fail vm-base-create-force "changed"; }
"$VMHOST" vm delete vd >/dev/null && "$VMHOST" vm delete vo >/dev/null
if "$VMHOST" img create -q -f qcow2 "$E2E_TMP/vmdisk.qcow2" 32M; then
	pass vm-deleted-disk-replaced "an empty image once no VM uses it"
else
	fail vm-deleted-disk-replaced
fi

# ---------------------------------------------------------------- size
# A bad SIZE exits 1, as in qemu-img (issue 15 item 5).
rc=0
want=$("$VMHOST" img create -f qcow2 n.qcow2 12x 2>&1) || rc=$?
for size in -1 -5M; do
	rc2=0
	out=$("$VMHOST" img create -f qcow2 n.qcow2 "$size" 2>&1) || rc2=$?
	if [ "$rc2" = "$rc" ] && [ "$rc" = 1 ] && [ "$out" = "${want//12x/$size}" ] && [ ! -e n.qcow2 ]; then
		pass "negative-size$size" "$out"
	else
		fail "negative-size$size" "exit $rc2 (12x: $rc): $out; expected: ${want//12x/$size}"
	fi
done
rc2=0
out=$("$VMHOST" img create -f qcow2 -o size=-1 n.qcow2 2>&1) || rc2=$?
[ "$rc2" = 1 ] && [ "$out" = "${want//12x/-1}" ] && pass negative-size-o "$out" || fail negative-size-o "exit $rc2: $out"
"$VMHOST" img create -q -f qcow2 shrink.qcow2 64M
if "$VMHOST" img resize -q --shrink shrink.qcow2 -16M && [ "$(vsize shrink.qcow2)" = $((48 << 20)) ]; then
	pass resize-relative-shrink "-16M: 48 MiB"
else
	fail resize-relative-shrink "$(vsize shrink.qcow2)"
fi
rc2=0
out=$("$VMHOST" img resize --shrink shrink.qcow2 -1G 2>&1) || rc2=$?
[ "$rc2" = 1 ] && [[ $out == *"Cannot shrink shrink.qcow2 by 1G"* ]] && [ "$(vsize shrink.qcow2)" = $((48 << 20)) ] &&
	pass resize-shrink-past-zero "$out" || fail resize-shrink-past-zero "exit $rc2: $out"

e2e_finish
