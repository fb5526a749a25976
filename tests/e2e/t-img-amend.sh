#!/bin/bash
# tests/e2e/t-img-amend.sh: 'vmhost img amend' against 'qemu-img amend'
# (issue 15, item 9). For every input image (made by qemu-img and qemu-io)
# and every option, both tools run on copies of the same file, and:
#   - the exit statuses are the same;
#   - after success: 'qemu-img check' finds vmhost's result clean, it reads
#     as the input did (qemu-img compare, and each internal snapshot
#     through convert -l), and 'qemu-img info --output=json' shows the same
#     virtual size, snapshots and format-specific fields as qemu-img's
#     result (compat, lazy refcounts, refcount bits, compression type,
#     extended l2, corrupt);
#   - after a refusal: vmhost left the file byte for byte as it was.
# Inputs: a v3 image with data, a compressed cluster and zero clusters; an
# overlay of a backing file with unallocated and preallocated zero
# clusters (a downgrade must write those out); an image with an internal
# snapshot taken before zero writes; a v2 image with a snapshot; lazy
# refcounts; zstd with a compressed cluster; extended L2; a raw file.
# Also: the image held by another process (qemu-io), unknown and
# creation-only options, backing_file, -o help, no -o. Refusals that
# qemu-img makes after it has written (a snapshot that prevents a
# downgrade, found after the resize; a refcount too narrow, found after
# the upgrade) must leave vmhost's file unchanged, and where marked
# --same-message vmhost's error holds qemu-img's; amend's own errors name
# the file once. Persistent bitmaps: amend
# size= and img resize are refused (vmhost does not keep bitmaps; qemu-img
# does), the file unchanged. -p on a downgrade goes from 0 to 100%.
# qemu-img 7.2 itself leaves the snapshot image with OFLAG_COPIED errors
# after compat=0.10 (its check reports 8) and the snapshot's data zeroed
# where the active image had zero clusters; vmhost's result must be clean
# and is compared with the input's data (every snapshot), not qemu-img's.
# Env: VMHOST=path to the vmhost binary; E2E_KEEP=1 keeps the temp dir.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init img-amend
need qemu-img qemu-io python3 cmp

VMHOST=${VMHOST:-$ROOT/build/src/cli/vmhost}
if [ ! -x "$VMHOST" ]; then
	fail vmhost-built "$VMHOST is not built (ninja -C build)"
	e2e_finish
fi
cd "$E2E_TMP"

# fields IMAGE: what amend changes, from qemu-img's JSON, as one line.
fields() {
	qemu-img info -U --output=json "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
fs = d.get("format-specific", {}).get("data", {})
fs.pop("bitmaps", None)
snaps = [(s["id"], s["name"], s["vm-state-size"]) for s in d.get("snapshots", [])]
print(json.dumps({"virtual-size": d["virtual-size"], "snapshots": snaps, "fs": fs, "dirty": d.get("dirty-flag")}, sort_keys=True))'
}

# snapshots IMAGE: the ids of its internal snapshots.
snapshots() {
	qemu-img snapshot -l "$1" | awk 'NR > 2 { print $1 }'
}

# same_data NAME INPUT GOT: GOT reads as INPUT, the active state and every
# snapshot's; prints what differs.
same_data() {
	local id
	qemu-img compare -q "$2" "$3" 2>/dev/null || { echo "active data differs"; return; }
	for id in $(snapshots "$2"); do
		qemu-img convert -l "snapshot.id=$id" -O raw "$2" in-snap.raw
		qemu-img convert -l "snapshot.id=$id" -O raw "$3" got-snap.raw 2>/dev/null || { echo "snapshot $id unreadable"; return; }
		cmp -s in-snap.raw got-snap.raw || { echo "snapshot $id data differs"; return; }
	done
}

# amend_case NAME INPUT [--qemu-unclean] [--same-message] AMEND-ARGS...:
# both tools on copies of INPUT, judged as the header says.
amend_case() {
	local name=$1 input=$2 qemu_unclean=0 same_message=0 p out qmsg
	shift 2
	if [ "${1:-}" = --qemu-unclean ]; then qemu_unclean=1; shift; fi
	if [ "${1:-}" = --same-message ]; then same_message=1; shift; fi
	cp "$input" q.qcow2
	cp "$input" v.qcow2
	set +e
	qemu-img amend "$@" q.qcow2 >q.out 2>q.err
	local q_rc=$?
	"$VMHOST" img amend "$@" v.qcow2 >v.out 2>v.err
	local v_rc=$?
	set -e
	if [ "$q_rc" != "$v_rc" ]; then
		fail "$name" "exit qemu-img $q_rc, vmhost $v_rc; qemu-img: $(cat q.err); vmhost: $(cat v.err)"
		return
	fi
	if [ "$v_rc" != 0 ]; then
		qmsg=$(sed -n '1s/^qemu-img: //p' q.err)
		if [ "$same_message" = 1 ] && ! grep -qF -- "$qmsg" v.err; then
			fail "$name-message" "vmhost's '$(cat v.err)' lacks qemu-img's '$qmsg'"
		elif [ "$(grep '^vmhost: error: Cannot amend' v.err | grep -o 'v\.qcow2' | wc -l)" -gt 1 ]; then
			fail "$name-message" "the file name is repeated: $(cat v.err)"
		elif cmp -s "$input" v.qcow2; then
			pass "$name" "refused by both (exit $v_rc), file unchanged: $(head -1 v.err)"
		else
			fail "$name" "vmhost refused but changed the file"
		fi
		return
	fi
	if ! out=$(qemu-img check v.qcow2 2>&1); then
		fail "$name-check" "vmhost's result is not clean: $(grep -m1 -E '^(ERROR|Leaked)' <<<"$out" || head -1 <<<"$out")"
		return
	fi
	p=$(same_data "$name" "$input" v.qcow2)
	[ -z "$p" ] || { fail "$name-data" "$p"; return; }
	if [ "$qemu_unclean" = 0 ]; then
		qemu-img check -q q.qcow2 >/dev/null 2>&1 || { fail "$name-qemu" "qemu-img's own result is not clean"; return; }
		qemu-img compare -q q.qcow2 v.qcow2 || { fail "$name-compare" "vmhost's and qemu-img's results differ"; return; }
	elif qemu-img check -q q.qcow2 >/dev/null 2>&1; then
		fail "$name-qemu" "qemu-img's result was expected unclean (its 7.2 bug) but is clean: drop --qemu-unclean"
		return
	fi
	local fq fv
	fq=$(fields q.qcow2) fv=$(fields v.qcow2)
	if [ "$fq" != "$fv" ]; then
		fail "$name-info" "vmhost $fv, qemu-img $fq"
		return
	fi
	pass "$name" "exit 0, clean, same data, same info: $fv"
}

# ---- inputs ----
qemu-img create -q -f qcow2 plain.qcow2 8M
qemu-io -c "write -P 0x11 0 1M" -c "write -c -P 0x22 1M 64k" -c "write -P 0x33 2M 256k" -c "write -z 2M 128k" \
	-c "write -z 4M 1M" plain.qcow2 >/dev/null

qemu-img create -q -f qcow2 base.qcow2 8M
qemu-io -c "write -P 0x5b 0 8M" base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2
# unallocated zero clusters at 1M, preallocated ones (allocated, then
# zeroed without unmapping) at 3M, data at 0 and 5M
qemu-io -c "write -P 0x44 0 64k" -c "write -z 1M 256k" -c "write -P 0x45 3M 128k" -c "write -z 3M 128k" \
	-c "write -P 0x46 5M 64k" overlay.qcow2 >/dev/null

qemu-img create -q -f qcow2 snap.qcow2 4M
qemu-io -c "write -P 0x66 0 1M" snap.qcow2 >/dev/null
qemu-img snapshot -c s1 snap.qcow2
qemu-io -c "write -z 0 512k" -c "write -P 0x67 2M 64k" snap.qcow2 >/dev/null

qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 4M
qemu-io -c "write -P 0x77 0 1M" v2.qcow2 >/dev/null
qemu-img snapshot -c s1 v2.qcow2
qemu-io -c "write -P 0x78 0 64k" v2.qcow2 >/dev/null

qemu-img create -q -f qcow2 -o lazy_refcounts=on lazy.qcow2 4M
qemu-io -c "write -P 0x88 0 1M" lazy.qcow2 >/dev/null

qemu-img create -q -f qcow2 -o compression_type=zstd zstd.qcow2 4M
qemu-io -c "write -c -P 0x99 0 64k" zstd.qcow2 >/dev/null
qemu-img create -q -f qcow2 -o compression_type=zstd zstd-empty.qcow2 4M

qemu-img create -q -f qcow2 -o extended_l2=on extl2.qcow2 4M
qemu-img create -q -f qcow2 -o refcount_bits=8 rc8.qcow2 4M
qemu-io -c "write -P 0xaa 0 1M" rc8.qcow2 >/dev/null
qemu-img create -q -f raw raw.img 1M

# A snapshot taken at 64M, the image grown to 1G after: version 2 has no
# place for the snapshot's own size.
qemu-img create -q -f qcow2 grown.qcow2 64M
qemu-io -c "write -P 0x1a 0 2M" grown.qcow2 >/dev/null
qemu-img snapshot -c s1 grown.qcow2
qemu-img resize -q grown.qcow2 1G
qemu-img create -q -f qcow2 -o refcount_bits=64 rc64.qcow2 4M
qemu-img create -q -f qcow2 bitmaps.qcow2 4M
qemu-io -c "write -P 0xbb 0 1M" bitmaps.qcow2 >/dev/null
qemu-img bitmap --add bitmaps.qcow2 b0
qemu-img bitmap --add bitmaps.qcow2 b1

# ---- options that change the image ----
for img in plain overlay; do
	amend_case "$img-compat-0.10" "$img.qcow2" -o compat=0.10
	amend_case "$img-lazy-on" "$img.qcow2" -o lazy_refcounts=on
	for bits in 1 2 4 8 32 64; do
		amend_case "$img-refcount-$bits" "$img.qcow2" -o refcount_bits=$bits
	done
	amend_case "$img-refcount-8-compat-0.10" "$img.qcow2" -o refcount_bits=8,compat=0.10
	amend_case "$img-size-16M" "$img.qcow2" -o size=16M
done
amend_case snap-compat-0.10 snap.qcow2 --qemu-unclean -o compat=0.10
amend_case snap-refcount-2 snap.qcow2 -o refcount_bits=2
amend_case snap-refcount-1 snap.qcow2 -o refcount_bits=1     # refcount 2 does not fit: refused
amend_case v2-compat-1.1 v2.qcow2 -o compat=1.1
amend_case v2-compat-v3-lazy v2.qcow2 -o compat=v3,lazy_refcounts=on
amend_case v2-compat-1.1-refcount-64 v2.qcow2 -o compat=1.1 -o refcount_bits=64
amend_case v2-compat-0.10 v2.qcow2 -o compat=0.10
amend_case lazy-off lazy.qcow2 -o lazy_refcounts=off
amend_case lazy-compat-0.10 lazy.qcow2 -o compat=0.10
amend_case rc8-compat-0.10-refcount-16 rc8.qcow2 -o compat=0.10,refcount_bits=16
amend_case zstd-empty-compat-0.10 zstd-empty.qcow2 -o compat=0.10
amend_case plain-last-wins plain.qcow2 -o refcount_bits=16,refcount_bits=4

# ---- refusals ----
amend_case v2-lazy v2.qcow2 -o lazy_refcounts=on
amend_case plain-compat-0.10-lazy plain.qcow2 -o compat=0.10,lazy_refcounts=on
amend_case plain-compat-0.10-refcount-8 plain.qcow2 -o compat=0.10,refcount_bits=8
amend_case rc8-compat-0.10 rc8.qcow2 -o compat=0.10
amend_case zstd-compat-0.10 zstd.qcow2 -o compat=0.10
amend_case extl2-compat-0.10 extl2.qcow2 -o compat=0.10
# qemu-img refuses these after writing (it resizes, or upgrades, or sets
# lazy refcounts first); vmhost before anything.
amend_case grown-compat-0.10 grown.qcow2 --same-message -o compat=0.10
amend_case snap-compat-0.10-size snap.qcow2 --same-message -o compat=0.10,size=3G
amend_case v2-compat-1.1-refcount-1 v2.qcow2 --same-message -o compat=1.1,refcount_bits=1
amend_case snap-lazy-refcount-1 snap.qcow2 --same-message -o lazy_refcounts=on,refcount_bits=1
amend_case rc64-compat-0.10 rc64.qcow2 --same-message -o compat=0.10
amend_case v2-size v2.qcow2 -o size=8M
for o in refcount_bits=3 refcount_bits=128 refcount_bits=x compat=2 compat= compat lazy_refcounts=maybe foo=bar \
	cluster_size=4k compression_type=zstd extended_l2=on encrypt.format=luks encrypt.new-secret=x data_file=x \
	data_file_raw=on backing_file=x backing_fmt=qcow2 size=1000 size=4Q; do
	amend_case "bad-$o" plain.qcow2 -o "$o"
done
amend_case overlay-backing-file overlay.qcow2 -o backing_file=base.qcow2
amend_case raw raw.img -o compat=0.10
amend_case raw-f raw.img -f raw -o compat=0.10
amend_case qcow2-as-raw plain.qcow2 -f raw -o compat=0.10
amend_case no-options plain.qcow2
amend_case overlay-f-qcow2-compat-0.10 overlay.qcow2 -o compat=0.10 -f qcow2
amend_case two-files plain.qcow2 -o compat=0.10 plain.qcow2

# The overlay with its backing file gone: both must fail to open it.
mkdir -p gone && cp overlay.qcow2 gone/ && (cd gone && {
	set +e
	cp overlay.qcow2 q.qcow2; qemu-img amend -o compat=0.10 q.qcow2 >/dev/null 2>&1; q=$?
	"$VMHOST" img amend -o compat=0.10 overlay.qcow2 >/dev/null 2>&1; v=$?
	set -e
	if [ "$q" = "$v" ] && [ "$v" != 0 ] && cmp -s overlay.qcow2 ../overlay.qcow2; then
		pass backing-missing "both exit $v, file unchanged"
	else
		fail backing-missing "qemu-img $q, vmhost $v"
	fi
})

# Held by another process with QEMU's locks (as a running VM holds its disk).
cp plain.qcow2 held.qcow2
qemu-io -c "sleep 20000" held.qcow2 >/dev/null 2>&1 &
HOLDER=$!
wait_until 10 "qemu-io holding held.qcow2" sh -c '! qemu-img info held.qcow2 >/dev/null 2>&1' || true
set +e
qemu-img amend -o lazy_refcounts=on held.qcow2 >q.out 2>q.err; Q=$?
"$VMHOST" img amend -o lazy_refcounts=on held.qcow2 >v.out 2>v.err; V=$?
set -e
kill "$HOLDER" 2>/dev/null || true
wait "$HOLDER" 2>/dev/null || true
if [ "$Q" = 1 ] && [ "$V" = 1 ] && cmp -s held.qcow2 plain.qcow2; then
	pass in-use "both exit 1, file unchanged; vmhost: $(head -1 v.err)"
else
	fail in-use "qemu-img $Q ($(cat q.err)), vmhost $V ($(cat v.err))"
fi

# -o help: qemu-img's heading and a subset of its lines, exit 0.
for args in "-o help" "-f qcow2 -o help" "-o compat=0.10,help" "-o ?"; do
	cp plain.qcow2 h.qcow2
	set +e
	# shellcheck disable=SC2086
	qemu-img amend $args h.qcow2 >q.out 2>q.err; Q=$?
	# shellcheck disable=SC2086
	"$VMHOST" img amend $args h.qcow2 >v.out 2>v.err; V=$?
	set -e
	missing=$(grep -vxF -f q.out v.out || true)
	if [ "$Q" = 0 ] && [ "$V" = 0 ] && [ "$(head -1 v.out)" = "$(head -1 q.out)" ] && [ -z "$missing" ] &&
	   [ "$(wc -l <v.out)" -ge 4 ] && cmp -s h.qcow2 plain.qcow2; then
		pass "help $args" "$(($(wc -l <v.out) - 1)) of qemu-img's $(($(wc -l <q.out) - 1)) options"
	else
		fail "help $args" "qemu-img $Q, vmhost $V; lines not in qemu-img's: $missing"
	fi
done
set +e
qemu-img amend -o help raw.img >/dev/null 2>&1; Q=$?
"$VMHOST" img amend -o help raw.img >/dev/null 2>&1; V=$?
set -e
[ "$Q" = "$V" ] && pass help-raw "both exit $V" || fail help-raw "qemu-img $Q, vmhost $V"

# Progress: -p prints qemu-img's lines on stdout, starting at 0.00 and
# ending at 100.00, with nothing on stderr. (The steps between differ:
# qemu-img counts its own work units.)
cp plain.qcow2 p.qcow2
if "$VMHOST" img amend -p -o refcount_bits=4 p.qcow2 >p.out 2>p.err && [ ! -s p.err ] &&
   [ "$(tr '\r' '\n' <p.out | grep -m1 .)" = "    (0.00/100%)" ] &&
   [ "$(tr '\r' '\n' <p.out | grep . | tail -1)" = "    (100.00/100%)" ] && qemu-img check -q p.qcow2; then
	pass progress "$(tr '\r' '\n' <p.out | grep -c '%') progress lines on stdout, 0.00 to 100.00"
else
	fail progress "stdout: $(od -c p.out | head -5); stderr: $(cat p.err)"
fi

# Progress of a downgrade (the zero clusters written out): 0 to 100%.
cp plain.qcow2 p.qcow2
if "$VMHOST" img amend -p -o compat=0.10 p.qcow2 >p.out 2>p.err && grep -q "(0.00/100%)" p.out &&
   grep -q "(100.00/100%)" p.out && qemu-img check -q p.qcow2 && qemu-img compare -q plain.qcow2 p.qcow2; then
	pass progress-compat-0.10 "$(tr '\r' '\n' <p.out | grep -c '%') progress lines on stdout, 0 to 100%"
else
	fail progress-compat-0.10 "stdout: $(od -c p.out | head -5); stderr: $(cat p.err)"
fi

# Persistent bitmaps: qemu-img keeps them through a resize; vmhost, which
# does not keep bitmaps, refuses (amend size= and img resize) and leaves
# the file as it was.
cp bitmaps.qcow2 q.qcow2
if qemu-img amend -o size=8M q.qcow2 && [ "$(qemu-img info q.qcow2 | grep -c 'name: b[01]$')" = 2 ]; then
	for cmd in amend resize; do
		cp bitmaps.qcow2 v.qcow2
		set +e
		case $cmd in
		amend) "$VMHOST" img amend -o size=8M v.qcow2 >v.out 2>v.err ;;
		resize) "$VMHOST" img resize v.qcow2 8M >v.out 2>v.err ;;
		esac
		V=$?
		set -e
		if [ "$V" = 1 ] && cmp -s bitmaps.qcow2 v.qcow2 && grep -q "2 persistent bitmaps" v.err && grep -q "v.qcow2" v.err &&
		   [ "$(qemu-img info v.qcow2 | grep -c 'name: b[01]$')" = 2 ]; then
			pass "bitmaps-$cmd" "refused, file unchanged: $(cat v.err)"
		else
			fail "bitmaps-$cmd" "exit $V, $(cat v.err); bitmaps left: $(qemu-img info v.qcow2 | grep -c 'name: b[01]$')"
		fi
	done
else
	fail bitmaps-qemu "qemu-img amend -o size= did not keep the bitmaps"
fi

e2e_finish
