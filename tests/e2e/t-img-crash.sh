#!/bin/bash
# tests/e2e/t-img-crash.sh: crash safety of vmhost's image writers. Each
# writer is killed with SIGKILL after its Nth write through the engine's
# test knob VMHOST_FAULT_KILL_AFTER_WRITES=N (src/image/image.c raises
# SIGKILL right after the Nth pwrite returns), at 30 points spread over the
# whole run, and after each kill:
#   - the image opens ('vmhost img info'),
#   - 'qemu-img check' finds at most leaks (exit 0 or 3), and
#     'qemu-img check -r leaks' repairs those (exit 0 after),
#   - every byte QEMU reads is either the old or the new data.
# Writers:
#   writes-*    image-io (vmhost's write path) doing allocating writes, copy on
#               write of partial clusters from a backing file, zero writes and
#               discards on disjoint ranges: a v3 overlay with 64k clusters, a
#               v2 overlay with 4k clusters, and 512-byte clusters with 64-bit
#               refcounts (so refcount blocks and the refcount table grow,
#               and the 64 cached refcount blocks are evicted often); the
#               uninterrupted run must leave the image clean, and each
#               killed image is then written again to completion, which must
#               give a clean image with exactly the new data
#   lazy        the same on an image with lazy_refcounts: the dirty bit is set
#               while writing, so a kill leaves it dirty; 'qemu-img check -r
#               all' must repair it clean, and bytes are old or new
#   commit      'vmhost img commit': the top keeps reading exactly as before,
#               the base reads old or new per byte
#   convert-*   'vmhost img convert -O qcow2 [-c]' over an existing file: the
#               destination is the old file or the complete new one, clean
#               (the converter makes few, large writes: every one is a kill
#               point then)
#   amend-*     'vmhost img amend -o refcount_bits=64' (512-byte clusters, a
#               snapshot: hundreds of refcount blocks), '-o compat=0.10' on
#               an overlay with unallocated and preallocated zero clusters
#               (written out first): after every kill
#               the header is the old or the new one, check finds at most
#               leaks, and the data is unchanged; '-o compat=1.1' is one write;
#               amend-compat-shared: '-o compat=0.10' over 16000 preallocated
#               zero clusters that a snapshot shares (each gets a new
#               cluster, the old one loses a reference) with 512-byte
#               clusters, so that allocations run flushes to make room in the
#               refcount cache: the reference must go only after the new L2
#               entry is stored (a decrement queued before the allocation
#               reached the disk while the table there still named the
#               cluster: 'refcount=1 reference=2' after 19 of 43 kills)
#   shrink      'vmhost img resize --shrink' over data: the old size or the
#               new one, the data old or new byte by byte (the tail of an
#               image still at the old size reads as zeros, or as before)
# Env: VMHOST, IMAGE_IO (see t-img-diff.sh); SEED=N replays; POINTS=30.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init img-crash
need qemu-img qemu-io python3 cmp

need_vmhost_and_image_io
# Private copies: a rebuild of the tree while the test runs must not swap
# the binaries under it.
mkdir -p "$E2E_TMP/bin"
cp "$VMHOST" "$IMAGE_IO" "$E2E_TMP/bin/"
VMHOST=$E2E_TMP/bin/$(basename "$VMHOST")
IMAGE_IO=$E2E_TMP/bin/$(basename "$IMAGE_IO")
SEED=${SEED:-$RANDOM}
POINTS=${POINTS:-30}
echo "seed $SEED (SEED=$SEED replays this run), $POINTS kill points per writer"
cd "$E2E_TMP"
T0=$(e2e_now)
KILLS=0 COMPLETED=0 ODD=0 ODD_RC=

# rnd: the next number of a linear congruential generator in LCG (bash's
# $RANDOM cannot be replayed: bash reseeds it in every subshell).
rnd() {
	LCG=$(((LCG * 1103515245 + 12345) % 2147483648))
	R=$((LCG >> 8))
}

# disjoint_ops SIZE SALT: qemu-io style arguments (one per line) on 40
# disjoint slots of the disk: pattern writes (partial clusters included),
# zero writes and discards, from the seed and SALT.
disjoint_ops() {
	local size=$1 slot i off len kind
	LCG=$((SEED * 7919 + $2))
	slot=$((size / 40 / 512 * 512))
	for i in $(seq 0 39); do
		rnd; len=$(((R % (slot / 512 - 1) + 1) * 512))
		rnd; off=$((i * slot + (R % ((slot - len) / 512 + 1)) * 512))
		rnd; kind=$((R % 6))
		echo "-c"
		case $kind in
		0) echo "write -z $off $len" ;;
		1) echo "discard $off $len" ;;
		*) rnd; printf 'write -P 0x%02x %d %d\n' $((R % 255 + 1)) "$off" "$len" ;;
		esac
	done
}

# completes N CMD...: does CMD run to its end with the knob at N (files
# restored first by the caller's 'restore')?
completes() {
	local n=$1
	shift
	restore
	(VMHOST_FAULT_KILL_AFTER_WRITES=$n "$@" >/dev/null 2>&1; exit $?) 2>/dev/null
}

# count_writes CMD...: how many engine writes a full run of CMD does: the
# smallest N at which it is not killed, minus one (doubling, then bisection).
# 0 when it never completes, or completes without a single write.
count_writes() {
	local lo=0 hi=1 mid
	until completes "$hi" "$@"; do
		lo=$hi
		hi=$((hi * 2))
		[ "$hi" -le 1048576 ] || { echo 0; return; }
	done
	while [ $((hi - lo)) -gt 1 ]; do
		mid=$(((lo + hi) / 2))
		if completes "$mid" "$@"; then hi=$mid; else lo=$mid; fi
	done
	echo $((hi - 1))
}

# kills_ok NAME W KILLS_BEFORE ODD_BEFORE: the case's kill points really
# killed the writer: it wrote at least twice, every kill point but perhaps
# the last ended in SIGKILL, and no run ended any other way than killed or
# complete. Prints a failure and returns 1 otherwise.
kills_ok() {
	local name=$1 w=$2 k=$((KILLS - $3)) odd=$((ODD - $4)) points
	points=$(kill_points "$w" | wc -l)
	if [ "$w" -lt 2 ]; then
		fail "$name-writes" "the command made $w engine writes: the kill knob cannot interrupt it"
	elif [ "$k" -lt $((points - 1)) ]; then
		fail "$name-kills" "only $k of $points runs were killed"
	elif [ "$odd" -gt 0 ]; then
		fail "$name-exits" "$odd runs exited neither killed nor complete (last status $ODD_RC)"
	else
		return 0
	fi
	return 1
}

# judge NAME W KILLS_BEFORE ODD_BEFORE GOT...: every GOT image (made at
# a kill point) reads as old.raw or new.raw, block by block, and kills_ok;
# sets PROBLEMS to the number of failures.
judge() {
	local name=$1 w=$2 k0=$3 o0=$4 out path verdict
	shift 4
	PROBLEMS=0
	kills_ok "$name" "$w" "$k0" "$o0" || PROBLEMS=1
	if ! out=$(old_or_new old.raw new.raw "$@"); then
		fail "$name-verdicts" "the comparison failed: $out"
		PROBLEMS=$((PROBLEMS + 1))
		return
	fi
	if [ "$(grep -c . <<<"$out")" != $# ]; then
		fail "$name-verdicts" "$(grep -c . <<<"$out") verdicts for $# images"
		PROBLEMS=$((PROBLEMS + 1))
	fi
	while read -r path verdict; do
		[ "$verdict" = ok ] || { fail "$name-${path%.raw}" "neither old nor new at $verdict"; PROBLEMS=$((PROBLEMS + 1)); }
	done <<<"$out"
}

# kill_points W: POINTS numbers spread over 1..W.
kill_points() {
	local w=$1 k
	for k in $(seq 0 $((POINTS - 1))); do
		echo $((1 + k * (w - 1) / (POINTS - 1)))
	done | uniq
}

# run_killed N CMD...: run CMD with the knob, set RC (137: killed).
run_killed() {
	local n=$1
	shift
	RC=0
	# In a subshell, so that bash's "Killed" notice goes nowhere.
	(VMHOST_FAULT_KILL_AFTER_WRITES=$n "$@" >/dev/null 2>&1; exit $?) 2>/dev/null || RC=$?
	if [ "$RC" = 137 ]; then KILLS=$((KILLS + 1)); elif [ "$RC" = 0 ]; then COMPLETED=$((COMPLETED + 1)); else
		ODD=$((ODD + 1)) ODD_RC=$RC; fi
}

# after_crash IMAGE: opens, check finds at most leaks, -r leaks repairs them.
# Prints nothing when fine, else what is wrong.
after_crash() {
	local img=$1 rc=0
	"$VMHOST" img info "$img" >/dev/null 2>&1 || { echo "does not open"; return; }
	qemu-img check -q "$img" >/dev/null 2>&1 || rc=$?
	case $rc in
	0) ;;
	3) qemu-img check -q -r leaks "$img" >/dev/null 2>&1 || true
	   qemu-img check -q "$img" >/dev/null 2>&1 || echo "leaks not repaired" ;;
	*) echo "qemu-img check exit $rc" ;;
	esac
}

# unclean IMAGE: nothing when 'qemu-img check' finds IMAGE clean, else its
# exit status and its first finding.
unclean() {
	local out rc=0
	out=$(qemu-img check "$1" 2>&1) || rc=$?
	[ "$rc" = 0 ] || echo "qemu-img check exit $rc: $(grep -m1 -E '^(ERROR|Leaked)' <<<"$out" || head -1 <<<"$out")"
}

# old_or_new OLD NEW GOT...: per file, "ok" or the first offset whose byte
# is neither old nor new (one python run for all the files).
old_or_new() {
	python3 - "$@" <<'EOF'
import sys
old, new = open(sys.argv[1], "rb").read(), open(sys.argv[2], "rb").read()
if len(old) != len(new):
    sys.exit("old and new differ in size: %d and %d" % (len(old), len(new)))
for path in sys.argv[3:]:
    got = open(path, "rb").read()
    bad = None
    if len(got) != len(old):
        bad = "size %d" % len(got)
    else:
        step = 1 << 16
        for o in range(0, len(got), step):
            g = got[o:o + step]
            if g == old[o:o + step] or g == new[o:o + step]:
                continue
            for i in range(len(g)):
                if g[i] != old[o + i] and g[i] != new[o + i]:
                    bad = "byte %d" % (o + i)
                    break
            if bad:
                break
    print(path, "ok" if bad is None else bad)
EOF
}

# ---- allocating writes through image-io ----

# rewrite OPS...: writes OPS again into img.qcow2, after a kill; prints
# what went wrong, if anything: image-io's error, what 'qemu-img check'
# finds, or data other than new.raw.
rewrite() {
	local out p
	if ! out=$("$IMAGE_IO" -q "$@" img.qcow2 2>&1); then
		echo "writing again after the kill failed: $out"
		return
	fi
	p=$(unclean img.qcow2)
	if [ -n "$p" ]; then
		echo "writing again after the kill left the image unclean: $p"
		return
	fi
	qemu-img convert -O raw img.qcow2 again.raw
	cmp -s again.raw new.raw || echo "writing again after the kill did not give the new data"
}

# writes_case NAME CREATE-OPTS BACKING: an 8 MiB image (an overlay of a
# base full of data when BACKING is 1).
writes_case() {
	local name=$1 opts=$2 backing=$3 w n rc problems=0 p
	local -a ops
	mkdir -p "$name" && cd "$name"
	if [ "$backing" = 1 ]; then
		qemu-img create -q -f qcow2 base.qcow2 8M
		qemu-io -c "write -P 0x5b 0 8M" -c "write -z 3M 1M" base.qcow2 >/dev/null
		qemu-img create -q -f qcow2 -o "$opts" -b base.qcow2 -F qcow2 img.qcow2 8M
	else
		qemu-img create -q -f qcow2 -o "$opts" img.qcow2 8M
	fi
	# Something there already: old data that the writes replace.
	qemu-io -c "write -P 0x3c 1M 2M" -c "write -P 0x3d 5M 512k" img.qcow2 >/dev/null
	cp img.qcow2 pristine.qcow2
	mapfile -t ops < <(disjoint_ops $((8 << 20)) "${#name}")
	restore() { cp pristine.qcow2 img.qcow2; }
	qemu-img convert -O raw img.qcow2 old.raw
	"$IMAGE_IO" -q "${ops[@]}" img.qcow2
	p=$(unclean img.qcow2)
	[ -z "$p" ] || { fail "$name-complete" "a run without the kill knob left the image unclean: $p"; problems=$((problems + 1)); }
	qemu-img convert -O raw img.qcow2 new.raw
	w=$(count_writes "$IMAGE_IO" -q "${ops[@]}" img.qcow2)
	local got=() k0=$KILLS o0=$ODD
	for n in $(kill_points "$w"); do
		restore
		run_killed "$n" "$IMAGE_IO" -q "${ops[@]}" img.qcow2
		p=$(after_crash img.qcow2)
		[ -z "$p" ] || { fail "$name-kill-$n" "$p"; problems=$((problems + 1)); }
		qemu-img convert -O raw img.qcow2 "got-$n.raw"
		got+=("got-$n.raw")
		# Writing again from there finishes the job (every third point).
		if [ $((${#got[@]} % 3)) = 1 ]; then
			p=$(rewrite "${ops[@]}")
			[ -z "$p" ] || { fail "$name-rewrite-$n" "$p"; problems=$((problems + 1)); }
		fi
	done
	judge "$name" "$w" "$k0" "$o0" "${got[@]}"
	problems=$((problems + PROBLEMS))
	[ "$problems" = 0 ] && pass "$name" "${#got[@]} kill points over $w writes, $(e2e_elapsed "$T0") s"
	cd ..
	rm -rf "$name"
}

writes_case writes-v3-64k "cluster_size=64k" 1
writes_case writes-v2-4k "cluster_size=4k,compat=0.10" 1
writes_case writes-512-refcount64 "cluster_size=512,refcount_bits=64" 0

# ---- lazy refcounts: the dirty bit ----
lazy_case() {
	local w n rc p problems=0 dirty=0
	local -a ops
	mkdir -p lazy && cd lazy
	qemu-img create -q -f qcow2 -o cluster_size=4k,lazy_refcounts=on img.qcow2 16M
	qemu-io -c "write -P 0x3c 1M 2M" img.qcow2 >/dev/null
	cp img.qcow2 pristine.qcow2
	restore() { cp pristine.qcow2 img.qcow2; }
	mapfile -t ops < <(disjoint_ops $((16 << 20)) 5)
	qemu-img convert -O raw img.qcow2 old.raw
	"$IMAGE_IO" -q "${ops[@]}" img.qcow2
	qemu-img info img.qcow2 | grep -q "cleanly shut down: no" && { fail lazy-clean-close "dirty after a clean close"; problems=1; }
	p=$(unclean img.qcow2)
	[ -z "$p" ] || { fail lazy-complete "a run without the kill knob left the image unclean: $p"; problems=$((problems + 1)); }
	qemu-img convert -O raw img.qcow2 new.raw
	w=$(count_writes "$IMAGE_IO" -q "${ops[@]}" img.qcow2)
	local got=() k0=$KILLS o0=$ODD
	for n in $(kill_points "$w"); do
		restore
		run_killed "$n" "$IMAGE_IO" -q "${ops[@]}" img.qcow2
		[ "$RC" = 137 ] && qemu-img info img.qcow2 | grep -q "cleanly shut down: no" && dirty=$((dirty + 1))
		"$VMHOST" img info img.qcow2 >/dev/null 2>&1 || { fail "lazy-kill-$n" "does not open"; problems=$((problems + 1)); }
		qemu-img check -q -r all img.qcow2 >/dev/null 2>&1 || true
		qemu-img check -q img.qcow2 >/dev/null 2>&1 || { fail "lazy-kill-$n" "not clean after -r all"; problems=$((problems + 1)); }
		qemu-img convert -O raw img.qcow2 "got-$n.raw"
		got+=("got-$n.raw")
	done
	judge lazy "$w" "$k0" "$o0" "${got[@]}"
	problems=$((problems + PROBLEMS))
	[ "$dirty" -gt 0 ] || { fail lazy-dirty "no killed run left the dirty bit set"; problems=$((problems + 1)); }
	[ "$problems" = 0 ] && pass lazy "${#got[@]} kill points over $w writes, $dirty left dirty and were repaired, $(e2e_elapsed "$T0") s"
	cd ..
	rm -rf lazy
}
lazy_case

# ---- commit ----
commit_case() {
	local w n rc problems=0 p
	mkdir -p commit && cd commit
	qemu-img create -q -f qcow2 -o cluster_size=4k base.qcow2 8M
	qemu-io -c "write -P 0x11 0 6M" -c "write -z 2M 1M" base.qcow2 >/dev/null
	qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2 10M
	local -a ops
	mapfile -t ops < <(disjoint_ops $((10 << 20)) 6)
	qemu-io "${ops[@]}" top.qcow2 >/dev/null
	mkdir pristine && cp base.qcow2 top.qcow2 pristine/
	restore() { cp pristine/base.qcow2 pristine/top.qcow2 .; }
	qemu-img convert -O raw top.qcow2 top.raw
	qemu-img convert -O raw base.qcow2 old.raw
	truncate -s 10M old.raw # the base grows to the top's size; the tail reads as zeros
	"$VMHOST" img commit -q top.qcow2
	qemu-img convert -O raw base.qcow2 new.raw
	w=$(count_writes "$VMHOST" img commit -q top.qcow2)
	local got=() k0=$KILLS o0=$ODD
	for n in $(kill_points "$w"); do
		restore
		run_killed "$n" "$VMHOST" img commit -q top.qcow2
		for f in base.qcow2 top.qcow2; do
			p=$(after_crash "$f")
			[ -z "$p" ] || { fail "commit-kill-$n-$f" "$p"; problems=$((problems + 1)); }
		done
		# The top reads as before at every point of the commit.
		qemu-img convert -O raw top.qcow2 now.raw
		cmp -s now.raw top.raw || { fail "commit-kill-$n-top" "the top's guest view changed"; problems=$((problems + 1)); }
		qemu-img convert -O raw base.qcow2 "got-$n.raw"
		[ "$(stat -c %s "got-$n.raw")" = "$(stat -c %s old.raw)" ] || truncate -s 10M "got-$n.raw"
		got+=("got-$n.raw")
	done
	judge commit "$w" "$k0" "$o0" "${got[@]}"
	problems=$((problems + PROBLEMS))
	[ "$problems" = 0 ] && pass commit "${#got[@]} kill points over $w writes, $(e2e_elapsed "$T0") s"
	cd ..
	rm -rf commit
}
commit_case

# ---- convert over an existing file ----
# dst.qcow2 holds data, so replacing it takes --force.
convert_case() {
	local name=$1 w n rc problems=0 leftovers=0
	shift
	mkdir -p "$name" && cd "$name"
	# Random data, so that even compressed output takes many writes.
	head -c 12M /dev/urandom >rnd.bin
	qemu-img create -q -f qcow2 base.qcow2 16M
	qemu-io -c "write -s rnd.bin 0 12M" base.qcow2 >/dev/null
	qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 src.qcow2
	local -a ops
	mapfile -t ops < <(disjoint_ops $((16 << 20)) 7)
	qemu-io "${ops[@]}" src.qcow2 >/dev/null
	qemu-img create -q -f qcow2 dst.qcow2 16M
	qemu-io -c "write -P 0x77 0 16M" dst.qcow2 >/dev/null
	cp dst.qcow2 pristine.qcow2
	restore() { cp pristine.qcow2 dst.qcow2; rm -f .dst.qcow2.vmhost-*.tmp; }
	qemu-img convert -O raw dst.qcow2 old.raw
	qemu-img convert -O raw src.qcow2 new.raw
	w=$(count_writes "$VMHOST" img convert --force -O qcow2 "$@" src.qcow2 dst.qcow2)
	local k0=$KILLS o0=$ODD
	for n in $(kill_points "$w"); do
		restore
		run_killed "$n" "$VMHOST" img convert --force -O qcow2 "$@" src.qcow2 dst.qcow2
		qemu-img check -q dst.qcow2 >/dev/null 2>&1 || { fail "$name-kill-$n" "destination not clean"; problems=$((problems + 1)); }
		qemu-img convert -O raw dst.qcow2 got.raw
		if ! cmp -s got.raw old.raw && ! cmp -s got.raw new.raw; then
			fail "$name-kill-$n" "destination is neither the old file nor the complete new one"
			problems=$((problems + 1))
		fi
		if [ "$RC" = 137 ] && ls .dst.qcow2.vmhost-*.tmp >/dev/null 2>&1; then leftovers=$((leftovers + 1)); fi
	done
	kills_ok "$name" "$w" "$k0" "$o0" || problems=$((problems + 1))
	# A run that is not killed gives the new image.
	restore
	if ! "$VMHOST" img convert --force -O qcow2 "$@" src.qcow2 dst.qcow2 || ! qemu-img convert -O raw dst.qcow2 got.raw ||
	   ! cmp -s got.raw new.raw; then
		fail "$name-complete" "a run without the kill knob did not give the new image"
		problems=$((problems + 1))
	fi
	[ "$problems" = 0 ] && pass "$name" "$(kill_points "$w" | wc -l) kill points over $w writes ($leftovers left a temporary file beside it), $(e2e_elapsed "$T0") s"
	cd ..
	rm -rf "$name"
}
convert_case convert-qcow2
convert_case convert-compressed -c

# ---- amend and resize --shrink: the file is the old image or the new one ----
# in_place_case NAME EXPECT CMD...: img.qcow2 (made by the caller, with
# pristine.qcow2, old.raw and new.raw beside it) changed in place by CMD,
# killed at every point; after each kill the image opens, check finds at
# most leaks (repaired by -r leaks), its header is the old or the new one
# (EXPECT: a sed expression on 'qemu-img info' that must give "old" or
# "new"), and the guest data is old or new, byte by byte (a shrunk image
# is compared over the old size: past its end it reads as zeros).
in_place_case() {
	local name=$1 expect=$2 w n p problems=0 olds=0 news=0 st size
	shift 2
	restore() { cp pristine.qcow2 img.qcow2; }
	size=$(stat -c %s old.raw)
	restore
	"$@" >/dev/null 2>&1 || { fail "$name-complete" "a run without the kill knob failed"; return; }
	p=$(unclean img.qcow2)
	[ -z "$p" ] || { fail "$name-complete" "a run without the kill knob left the image unclean: $p"; problems=1; }
	qemu-img convert -O raw img.qcow2 done.raw
	truncate -s "$size" done.raw
	cmp -s done.raw new.raw || { fail "$name-complete" "a complete run did not give the new data"; problems=1; }
	w=$(count_writes "$@")
	local got=() k0=$KILLS o0=$ODD
	for n in $(kill_points "$w"); do
		restore
		run_killed "$n" "$@"
		p=$(after_crash img.qcow2)
		[ -z "$p" ] || { fail "$name-kill-$n" "$p"; problems=$((problems + 1)); }
		st=$(qemu-img info img.qcow2 | sed -n "$expect")
		case $st in
		old) olds=$((olds + 1)) ;;
		new) news=$((news + 1)) ;;
		*) fail "$name-kill-$n-header" "neither the old nor the new header: $(qemu-img info img.qcow2 | tr '\n' ' ')"
		   problems=$((problems + 1)) ;;
		esac
		qemu-img convert -O raw img.qcow2 "got-$n.raw"
		truncate -s "$size" "got-$n.raw"
		got+=("got-$n.raw")
	done
	judge "$name" "$w" "$k0" "$o0" "${got[@]}"
	problems=$((problems + PROBLEMS))
	[ "$olds" -gt 0 ] && [ "$news" -gt 0 ] || { fail "$name-points" "kills left $olds old and $news new headers: the switch was not between two kill points"; problems=$((problems + 1)); }
	[ "$problems" = 0 ] && pass "$name" "${#got[@]} kill points over $w writes, $olds old and $news new, $(e2e_elapsed "$T0") s"
	return 0
}

amend_refcount_case() {
	mkdir -p amend-refcount && cd amend-refcount
	# 512-byte clusters: hundreds of refcount blocks to rewrite.
	qemu-img create -q -f qcow2 -o cluster_size=512 img.qcow2 8M
	local -a ops
	mapfile -t ops < <(disjoint_ops $((8 << 20)) 11)
	qemu-io "${ops[@]}" img.qcow2 >/dev/null
	qemu-img snapshot -c s1 img.qcow2
	cp img.qcow2 pristine.qcow2
	qemu-img convert -O raw img.qcow2 old.raw
	cp old.raw new.raw
	in_place_case amend-refcount-64 's/^    refcount bits: 16$/old/p; s/^    refcount bits: 64$/new/p' \
		"$VMHOST" img amend -o refcount_bits=64 img.qcow2
	cd ..
	rm -rf amend-refcount
}
amend_refcount_case

amend_compat_case() {
	mkdir -p amend-compat && cd amend-compat
	qemu-img create -q -f qcow2 -o cluster_size=4k base.qcow2 8M
	qemu-io -c "write -P 0x5b 0 8M" base.qcow2 >/dev/null
	qemu-img create -q -f qcow2 -o cluster_size=4k -b base.qcow2 -F qcow2 img.qcow2
	# Zero clusters both unallocated and preallocated, which a downgrade
	# must write out, between data.
	qemu-io -c "write -P 0x3c 0 1M" -c "write -z 1M 512k" -c "write -P 0x3d 2M 512k" -c "write -z 2M 512k" \
		-c "write -P 0x3e 4M 64k" img.qcow2 >/dev/null
	cp img.qcow2 pristine.qcow2
	qemu-img convert -O raw img.qcow2 old.raw
	cp old.raw new.raw
	in_place_case amend-compat-0.10 's/^    compat: 1.1$/old/p; s/^    compat: 0.10$/new/p' \
		"$VMHOST" img amend -o compat=0.10 img.qcow2
	# And back up (one write of the first cluster).
	cp img.qcow2 pristine.qcow2
	qemu-img amend -o compat=0.10 pristine.qcow2
	# The upgrade is the one write of the first cluster: no point to kill
	# it between two writes, which is the proof; the result is clean.
	local w
	w=$(count_writes "$VMHOST" img amend -o compat=1.1 img.qcow2)
	restore() { cp pristine.qcow2 img.qcow2; }
	restore
	"$VMHOST" img amend -o compat=1.1 img.qcow2
	if [ "$w" = 1 ] && [ -z "$(unclean img.qcow2)" ] && qemu-img info img.qcow2 | grep -qx "    compat: 1.1" &&
	   qemu-img compare -q img.qcow2 pristine.qcow2; then
		pass amend-compat-1.1 "one engine write (the first cluster), clean, same data"
	else
		fail amend-compat-1.1 "$w writes; $(unclean img.qcow2)"
	fi
	cd ..
	rm -rf amend-compat
}
amend_compat_case

amend_compat_shared_case() {
	mkdir -p amend-compat-shared && cd amend-compat-shared
	qemu-img create -q -f qcow2 -o cluster_size=512 base.qcow2 8M
	qemu-io -c "write -P 0x5b 0 8M" base.qcow2 >/dev/null
	qemu-img create -q -f qcow2 -o cluster_size=512 -b base.qcow2 -F qcow2 img.qcow2
	# Preallocated zero clusters everywhere, shared with a snapshot, then
	# one cluster written in every L2 table (64 entries), which copies the
	# active tables: their zero entries name clusters of refcount 2.
	qemu-io -c "write -P 0x3c 0 8M" -c "write -z 0 8M" img.qcow2 >/dev/null
	qemu-img snapshot -c s1 img.qcow2
	local -a ops=()
	local k
	for k in $(seq 0 255); do ops+=(-c "write -P 0x3d $((k * 32768)) 512"); done
	qemu-io "${ops[@]}" img.qcow2 >/dev/null
	cp img.qcow2 pristine.qcow2
	qemu-img convert -O raw img.qcow2 old.raw
	cp old.raw new.raw
	in_place_case amend-compat-shared 's/^    compat: 1.1$/old/p; s/^    compat: 0.10$/new/p' \
		"$VMHOST" img amend -o compat=0.10 img.qcow2
	cd ..
	rm -rf amend-compat-shared
}
amend_compat_shared_case

shrink_case() {
	mkdir -p shrink && cd shrink
	qemu-img create -q -f qcow2 -o cluster_size=4k img.qcow2 8M
	local -a ops
	mapfile -t ops < <(disjoint_ops $((8 << 20)) 12)
	qemu-io -c "write -P 0x21 0 8M" "${ops[@]}" img.qcow2 >/dev/null
	cp img.qcow2 pristine.qcow2
	qemu-img convert -O raw img.qcow2 old.raw
	# The new image: the first 3 MiB, zeros after (what a shrunk image
	# reads as over the old size).
	head -c 3M old.raw >new.raw
	truncate -s 8M new.raw
	in_place_case shrink 's/^virtual size: 8 MiB.*/old/p; s/^virtual size: 3 MiB.*/new/p' \
		"$VMHOST" img resize -q --shrink img.qcow2 3M
	cd ..
	rm -rf shrink
}
shrink_case

echo "seed $SEED: $KILLS runs killed, $COMPLETED ran to completion at their kill point, $(e2e_elapsed "$T0") s"
e2e_finish
