#!/bin/bash
# tests/e2e/t-img-diff.sh: differential test of vmhost's image write path
# against QEMU. For backing chains 1 to 10 deep (top + N backing files, in
# qcow2 v3 and v2, cluster sizes 512 to 64k, refcount widths 1 to 64), every
# layer is filled by qemu-io with seeded random writes (patterns, random
# data, zero writes, discards, compressed clusters). Then, each on fresh
# copies of the chain (one for qemu-img, one for vmhost):
#   read      vmhost img convert -O raw  vs  qemu-img convert -O raw (cmp)
#   commit    vmhost img commit          vs  qemu-img commit, every layer
#   commit-b  vmhost img commit -b BASE  vs  qemu-img commit -b BASE
#   rebase    vmhost img rebase -b LOWER (or "") vs qemu-img rebase
#   convert   vmhost img convert -O qcow2 [-c] [-B LOWER]: checked, and the
#             same guest disk as qemu-img's conversion and as the source
#   writes    the other way round: image-io (vmhost's write path) and qemu-io
#             run the same random write / write -z / discard list on the top
#             image; qemu-img compare, cmp of raw views, and qemu-img check
#             (no errors, no leaks) on what vmhost wrote
# Layers are compared with 'qemu-img compare' and with cmp of 'qemu-img
# convert -O raw' outputs; every image vmhost wrote must pass 'qemu-img
# check' with no errors and no leaks.
# Env: VMHOST=vmhost binary; IMAGE_IO=image-io helper (default: next to the
#      build's tests/unit); SEED=N replays a run; DEPTHS="1 2 ..." to choose;
#      E2E_KEEP=1 keeps the temp dir on failure.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init img-diff
need qemu-img qemu-io python3 cmp

need_vmhost_and_image_io
SEED=${SEED:-$RANDOM}
DEPTHS=${DEPTHS:-1 2 3 4 5 6 7 8 9 10}
echo "seed $SEED (SEED=$SEED replays this run)"
cd "$E2E_TMP"
head -c 4M /dev/urandom >rnd.bin
T0=$(e2e_now)
N_COMPARED=0 N_OPS=0 N_CHECKED=0

# The whole plan comes from one python run (python starts slowly here): for
# each depth D, plan/D/layerI ("cluster_size compat refcount_bits size") and
# plan/D/opsI (qemu-io arguments, one per line) for each layer, plan/D/pick
# (a lower layer), plan/D/writes (the list vmhost and qemu-io replay on the
# top) and plan/D/readback ("pattern offset length" of a pattern write that
# nothing after it overwrites, for qemu-io to read back).
make_plan() {
	python3 - "$SEED" "$E2E_TMP/rnd.bin" $DEPTHS <<'EOF'
import os, random, sys
seed, rnd, depths = int(sys.argv[1]), sys.argv[2], [int(x) for x in sys.argv[3:]]

def ops(rng, size, cluster, compress):
    out = []
    if compress:
        # Compressed writes first: QEMU refuses them on allocated clusters.
        for c in rng.sample(range(size // cluster), min(4, size // cluster)):
            n = min(cluster, size - c * cluster)
            out.append("write -c -P 0x%02x %d %d" % (rng.randrange(1, 256), c * cluster, n))
    for _ in range(rng.randrange(10, 25)):
        kind = rng.choice("PPPsszzd")
        length = rng.choice([512, 4096, 65536, 100 * 1024, 1 << 20, 2 << 20, rng.randrange(1, 3000) * 512])
        length = min(length, size)
        off = rng.randrange(0, (size - length) // 512 + 1) * 512
        if kind == "P":
            out.append("write -P 0x%02x %d %d" % (rng.randrange(1, 256), off, length))
        elif kind == "s":
            out.append("write -s %s %d %d" % (rnd, off, min(length, 4 << 20)))
        elif kind == "z":
            out.append("write -z %d %d" % (off, length))
        else:
            out.append("discard %d %d" % (off, length))
    return out

def save(path, lines):
    with open(path, "w") as f:
        for l in lines:
            f.write(l + "\n")

for depth in depths:
    d = "plan/%d" % depth
    os.makedirs(d, exist_ok=True)
    rng = random.Random(seed * 1000 + depth)
    params = []
    for i in range(depth + 1):
        cs = rng.choice([512, 4096, 4096, 65536, 65536, 65536, 65536, 65536])
        compat = rng.choice(["1.1", "1.1", "1.1", "0.10"])
        rb = 16 if compat == "0.10" else rng.choice([1, 2, 8, 16, 16, 64])
        # Layers differ in size: the top is sometimes larger, a middle one smaller.
        size = rng.choice([8, 8, 8, 6, 10]) << 20
        params.append((cs, compat, rb, size))
        save("%s/layer%d" % (d, i), ["%d %s %d %d" % params[-1]])
        save("%s/ops%d" % (d, i), [x for o in ops(rng, size, cs, rb > 1) for x in ("-c", o)])
    save(d + "/pick", [str(rng.randrange(0, depth))])
    cs, _, _, size = params[depth]
    w = ops(rng, size, cs, False)
    save(d + "/writes", [x for o in w for x in ("-c", o)])
    back = ""
    for i in range(len(w) - 1, -1, -1):
        if w[i].startswith("write -P"):
            _, _, pat, off, ln = w[i].split()
            off, ln = int(off), int(ln)
            later = [o.split() for o in w[i + 1:]]
            if all(int(x[-2]) >= off + ln or off >= int(x[-2]) + int(x[-1]) for x in later):
                back = "%s %d %d" % (pat, off, ln)
            break
    save(d + "/readback", [back])
EOF
}

# build_chain DIR DEPTH: l0.qcow2 (the base) .. lDEPTH.qcow2 (the top).
build_chain() {
	local dir=$1 depth=$2 i cs compat rb size
	local -a cmds
	mkdir -p "$dir"
	for i in $(seq 0 "$depth"); do
		read -r cs compat rb size <"plan/$depth/layer$i"
		local o="cluster_size=$cs,compat=$compat,refcount_bits=$rb"
		if [ "$i" = 0 ]; then
			qemu-img create -q -f qcow2 -o "$o" "$dir/l0.qcow2" "$size"
		else
			qemu-img create -q -f qcow2 -o "$o" -b "l$((i - 1)).qcow2" -F qcow2 "$dir/l$i.qcow2" "$size"
		fi
		mapfile -t cmds <"plan/$depth/ops$i"
		(cd "$dir" && qemu-io "${cmds[@]}" "l$i.qcow2" >/dev/null)
	done
}

# same_image A B: qemu-img compare and cmp of the raw views.
same_image() {
	qemu-img compare -q "$1" "$2" || return 1
	qemu-img convert -O raw "$1" cmp-a.raw && qemu-img convert -O raw "$2" cmp-b.raw || return 1
	cmp -s cmp-a.raw cmp-b.raw
	local rc=$?
	rm -f cmp-a.raw cmp-b.raw
	N_COMPARED=$((N_COMPARED + 1))
	return $rc
}

# clean IMAGE: qemu-img check finds no errors and no leaks.
clean() {
	N_CHECKED=$((N_CHECKED + 1))
	qemu-img check -q "$1" >/dev/null 2>&1
}

# copies DEPTH CHANGED...: fresh Q/ (for qemu-img) and V/ (for vmhost)
# copies of the chain; the layers the operation does not change are hard
# links (copying them costs time; that nobody wrote them is checked once per
# chain with sha1sum).
copies() {
	local depth=$1 i
	shift
	rm -rf Q V
	mkdir Q V
	for i in $(seq 0 "$depth"); do
		if [[ " $* " == *" $i "* ]]; then
			cp "$dir/l$i.qcow2" Q/ && cp "$dir/l$i.qcow2" V/
		else
			ln "$dir/l$i.qcow2" Q/ && ln "$dir/l$i.qcow2" V/
		fi
	done
}

# same_chains QDIR VDIR WHAT CHANGED...: the layers the operation changes
# compare the same as qemu-img's and are clean.
# top_layer_map IMAGE: the ranges IMAGE itself holds (depth 0 in qemu-img
# map), merged, one "start length data zero" per line.
top_layer_map() {
	qemu-img map --output=json "$1" | python3 -c 'import json, sys
out = []
for e in json.load(sys.stdin):
    if e["depth"] != 0:
        continue
    k = (e["data"], e["zero"])
    if out and out[-1][0] + out[-1][1] == e["start"] and out[-1][2:] == k:
        out[-1][1] += e["length"]
    else:
        out.append([e["start"], e["length"], *k])
for r in out:
    print(*r)'
}

# KiB an emptied qcow2 IMAGE may keep on disk for the metadata vmhost
# keeps (QEMU rebuilds an emptied image from scratch; vmhost keeps its
# header, tables and refcount blocks): 256 KiB, plus one file system block
# (4 KiB, or a cluster if larger) for each refcount block, since freed
# clusters beside one cannot be given back when clusters are smaller than
# the file system's blocks (seen: 512-byte clusters with 64-bit refcounts,
# refcount blocks spread over a 4.6 MB file, 552 KiB on disk).
kept_metadata_kib() {
	python3 - "$1" <<'EOF'
import struct, sys
with open(sys.argv[1], "rb") as f:
    h = f.read(72)
    cluster = 1 << struct.unpack(">I", h[20:24])[0]
    rt_off, rt_clusters = struct.unpack(">QI", h[48:60])
    f.seek(rt_off)
    n = rt_clusters * cluster // 8
    table = struct.unpack(">%dQ" % n, f.read(8 * n))
blocks = sum(1 for e in table if e)
print(256 + blocks * max(cluster, 4096) // 1024)
EOF
}

same_chains() {
	local q=$1 v=$2 what=$3 i bad=""
	shift 3
	for i in "$@"; do
		same_image "$q/l$i.qcow2" "$v/l$i.qcow2" || bad="$bad l$i(differs)"
		clean "$v/l$i.qcow2" || bad="$bad l$i(check)"
	done
	if [ -z "$bad" ]; then pass "$what"; else fail "$what" "$bad"; fi
}

make_plan
for depth in $DEPTHS; do
	dir=chain$depth
	build_chain "$dir" "$depth"
	(cd "$dir" && sha1sum l*.qcow2) >"sums$depth"
	top=l$depth.qcow2
	read -r pick <"plan/$depth/pick"
	echo "--- depth $depth: top $top, chosen lower layer l$pick ($(e2e_elapsed "$T0") s)"

	# read: the whole chain as raw.
	"$VMHOST" img convert -O raw "$dir/$top" v.raw
	qemu-img convert -O raw "$dir/$top" q.raw
	if cmp -s v.raw q.raw; then pass "depth$depth-read"; else fail "depth$depth-read" "raw views differ"; fi
	N_COMPARED=$((N_COMPARED + 1))
	rm -f v.raw q.raw

	# commit into the immediate backing file (the top is emptied), and
	# commit -b into a lower layer (the top is kept).
	for base in "$((depth - 1))" "$pick"; do
		copies "$depth" "$base" "$depth"
		if [ "$base" = "$((depth - 1))" ]; then args=(); what="depth$depth-commit"; else
			args=(-b "l$base.qcow2"); what="depth$depth-commit-b-l$base"; fi
		if ! (cd V && "$VMHOST" img commit -q "${args[@]}" "$top"); then
			fail "$what" "vmhost img commit failed"
		elif qerr=$(cd Q && qemu-img commit -q "${args[@]}" "$top" 2>&1); then
			same_chains Q V "$what" "$base" "$depth"
			# What the top itself holds afterwards (emptied by a plain commit,
			# kept with -b): the same depth-0 ranges in qemu-img's map as
			# qemu-img's top. (Deeper layers may differ in form: where the
			# top had zeros over an empty base, QEMU writes zero clusters
			# into the base and vmhost leaves it unallocated; both read
			# as zeros, which same_chains checked.)
			# An emptied top also gives the space of its data back, all but
			# what the metadata it keeps pins (kept_metadata_kib).
			vk=$(du -k "V/$top" | cut -f1) qk=$(du -k "Q/$top" | cut -f1)
			if [ "$(top_layer_map "Q/$top")" = "$(top_layer_map "V/$top")" ] &&
			   { [ ${#args[@]} -gt 0 ] || [ "$vk" -le $((qk + $(kept_metadata_kib "V/$top"))) ]; }; then
				pass "$what-top-map" "$(top_layer_map "V/$top" | grep -c .) ranges of its own, ${vk} KiB on disk (qemu-img's: ${qk} KiB)"
			else
				fail "$what-top-map" "the top's own ranges differ from qemu-img's top, or it kept its space (${vk} KiB, qemu-img's ${qk} KiB, metadata allowance $(kept_metadata_kib "V/$top") KiB)"
			fi
		elif qemu-img compare -q "$dir/$top" "V/$top" && qemu-img compare -q "$dir/$top" "V/l$base.qcow2" &&
			clean "V/l$base.qcow2" && clean "V/$top"; then
			# QEMU 7.2's commit job gives up on some chains (v2 bases that
			# must grow: "Operation not supported"); then the result is
			# checked against what it must be: the top's guest view.
			N_COMPARED=$((N_COMPARED + 2))
			pass "$what" "qemu-img failed ($qerr); the base now reads as the top did"
		else
			fail "$what" "qemu-img failed ($qerr) and vmhost's base does not read as the top did"
		fi
	done

	# rebase (safe) onto a lower layer, or onto nothing every third chain.
	copies "$depth" "$depth"
	if [ $((depth % 3)) = 0 ]; then
		(cd Q && qemu-img rebase -q -b "" "$top")
		(cd V && "$VMHOST" img rebase -q -b "" "$top")
		what="depth$depth-rebase-standalone"
	else
		(cd Q && qemu-img rebase -q -b "l$pick.qcow2" -F qcow2 "$top")
		(cd V && "$VMHOST" img rebase -q -b "l$pick.qcow2" -F qcow2 "$top")
		what="depth$depth-rebase-l$pick"
	fi
	if same_image "$dir/$top" "V/$top"; then : ; else fail "$what-unchanged" "the guest view changed"; fi
	same_chains Q V "$what" "$depth"

	# convert to qcow2: plain, compressed, as an overlay of the top's own
	# backing file (compared with qemu-img's), and as an overlay of a lower
	# layer (vmhost only: qemu-img assumes -B has the same content as the
	# source's backing file and copies only the top's clusters, so its output
	# differs there; vmhost writes what differs and must equal the source).
	for mode in plain compressed overlay overlay-lower; do
		args=(-O qcow2)
		case $mode in
		compressed) args+=(-c) ;;
		overlay) args+=(-B "l$((depth - 1)).qcow2" -F qcow2) ;;
		overlay-lower) args+=(-B "l$pick.qcow2" -F qcow2) ;;
		esac
		rm -f "$dir/out-v.qcow2" "$dir/out-q.qcow2"
		(cd "$dir" && "$VMHOST" img convert "${args[@]}" "$top" out-v.qcow2)
		ok=1
		if [ "$mode" != overlay-lower ]; then
			(cd "$dir" && qemu-img convert "${args[@]}" "$top" out-q.qcow2)
			same_image "$dir/out-v.qcow2" "$dir/out-q.qcow2" || ok=0
		fi
		# The flag took effect, as qemu-img sees the file: -c left compressed
		# clusters, -B named the backing file.
		case $mode in
		compressed)
			[ "$(qemu-img check --output=json "$dir/out-v.qcow2" | python3 -c 'import json,sys
print(json.load(sys.stdin).get("compressed-clusters", 0) > 0)')" = True ] || ok=0 ;;
		overlay | overlay-lower)
			[ "$(qemu-img info --output=json "$dir/out-v.qcow2" | python3 -c 'import json,sys
print(json.load(sys.stdin).get("backing-filename"))')" = "${args[3]}" ] || ok=0 ;;
		esac
		if [ $ok = 1 ] && qemu-img compare -q "$dir/out-v.qcow2" "$dir/$top" && clean "$dir/out-v.qcow2"; then
			pass "depth$depth-convert-$mode"
		else
			fail "depth$depth-convert-$mode" "differs from qemu-img's or the source, check fails, or -c/-B did not take effect"
		fi
		rm -f "$dir/out-v.qcow2" "$dir/out-q.qcow2"
	done

	# The other way round: vmhost writes, QEMU reads.
	copies "$depth" "$depth"
	mapfile -t cmds <"plan/$depth/writes"
	N_OPS=$((N_OPS + ${#cmds[@]} / 2))
	(cd Q && qemu-io "${cmds[@]}" "$top" >/dev/null)
	if (cd V && "$IMAGE_IO" -q "${cmds[@]}" "$top"); then
		if same_image "Q/$top" "V/$top" && clean "V/$top"; then
			pass "depth$depth-writes ($(( ${#cmds[@]} / 2 )) ops)"
		else
			fail "depth$depth-writes" "QEMU reads something else, or check fails"
		fi
	else
		fail "depth$depth-writes" "image-io failed"
	fi
	# qemu-io reads back a pattern vmhost wrote.
	pat="" off="" len=""
	read -r pat off len <"plan/$depth/readback" || true
	if [ -n "$pat" ]; then
		if out=$(qemu-io -r -c "read -P $pat $off $len" "V/$top" 2>&1) && ! grep -q "verification failed" <<<"$out"; then
			pass "depth$depth-qemu-io-reads-back"
		else
			fail "depth$depth-qemu-io-reads-back" "read -P $pat $off $len: $out"
		fi
	fi
	rm -rf Q V
	if (cd "$dir" && sha1sum --quiet -c ../sums$depth); then
		pass "depth$depth-other-layers-untouched"
	else
		fail "depth$depth-other-layers-untouched" "a layer no operation should change was written"
	fi
done

# An image a QEMU process holds is not written, and the error names it.
qemu-img create -q -f qcow2 held.qcow2 8M
qemu-io -c "sleep 20000" held.qcow2 >/dev/null 2>&1 &
holder=$!
track_pid "$holder"
wait_until 20 "lock on held.qcow2 by qemu-io $holder" lock_held "$holder"
cp held.qcow2 before.qcow2
if out=$("$VMHOST" img resize held.qcow2 +1M 2>&1); then
	fail locked-image "resize of an image qemu-io holds succeeded"
elif grep -q "in use by process $holder (qemu-io)" <<<"$out" && cmp -s held.qcow2 before.qcow2; then
	pass locked-image "$out"
else
	fail locked-image "$out"
fi
stop_pid "$holder"

echo "seed $SEED: $N_COMPARED image pairs compared, $N_CHECKED qemu-img checks, $N_OPS random write ops replayed through vmhost, $(e2e_elapsed "$T0") s"
e2e_finish
