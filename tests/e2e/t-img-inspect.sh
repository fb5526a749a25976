#!/bin/bash
# tests/e2e/t-img-inspect.sh: 'vmhost img map|compare|check|measure' against
# qemu-img on the same files, end to end through the CLI.
#   chains   qemu-img and qemu-io build random backing chains 1 to 10 deep
#            (seeded; the seed is printed): qcow2 layers with 4k..128k
#            clusters, extended L2, compat=0.10, refcount_bits 1/16/64, a raw
#            base, overlays larger and smaller than their backing file;
#            writes of patterns and random data, zero writes (with and
#            without unmap), discards, compressed clusters
#   map      --output=json and human text equal to qemu-img's, byte for byte
#            (and as parsed JSON), for the top of each chain and every layer
#   measure  -O raw|qcow2 (and other cluster sizes), JSON equal
#   compare  exit code and message equal: identical pairs (an image and its
#            qemu-img raw copy), a copy with one byte changed, pairs of
#            different sizes, strict mode
#   check    --output=json and exit code equal on every clean layer, and on
#            corrupted copies: a leaked cluster, a refcount raised, a
#            refcount dropped to 0, an L2 entry past the end of the file, two
#            L2 entries on one cluster, a misaligned L2 table, a misaligned
#            refcount block; then 'vmhost img check -r leaks|all' repairs and
#            qemu-img check agrees with what qemu-img's own repair gives
# Prints PASS/FAIL per check; exit 0 only if all pass.
# Env: VMHOST=path to the vmhost binary; SEED=N to replay a run;
#      E2E_KEEP=1 keeps the temp dir on failure.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init img-inspect
need qemu-img qemu-io python3

VMHOST=${VMHOST:-$ROOT/build/src/cli/vmhost}
if [ ! -x "$VMHOST" ]; then
	fail vmhost-built "$VMHOST is not built (ninja -C build)"
	e2e_finish
fi
SEED=${SEED:-20240611}
echo "seed $SEED (SEED=$SEED replays this run)"
cd "$E2E_TMP"
T0=$(e2e_now)
head -c 4M /dev/urandom >rnd.bin

# ---- build the chains -------------------------------------------------------
cat >build.py <<'EOF'
import random, subprocess, sys
seed = int(sys.argv[1])
rng = random.Random(seed)
M = 1 << 20

def run(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)

def qemu_io(img, fmt, cmds):
    argv = ["qemu-io", "-f", fmt]
    for c in cmds:
        argv += ["-c", c]
    argv.append(img)
    run(*argv)

def ops(size, cluster, qcow2, v3):
    cmds = []
    if qcow2:
        # Compressed writes first: QEMU refuses them on allocated clusters.
        for c in rng.sample(range(size // cluster), min(4, size // cluster)):
            cmds.append("write -c -P 0x%02x %d %d" % (rng.randrange(1, 256), c * cluster, cluster))
    for _ in range(rng.randrange(12, 30)):
        kind = rng.choice("PPssszzud")
        length = rng.choice([512, 4096, 65536, 100 * 1024, M, 3 * M])
        off = rng.randrange(0, (size - length) // 512) * 512
        if kind == "P":
            cmds.append("write -P 0x%02x %d %d" % (rng.randrange(1, 256), off, length))
        elif kind == "s":
            cmds.append("write -s rnd.bin %d %d" % (off, length))
        elif kind == "z":
            cmds.append("write -z %d %d" % (off, length))
        elif kind == "u":
            cmds.append("write -z -u %d %d" % (off, length))
        else:
            cmds.append("discard %d %d" % (off, length))
    return cmds

# (depth, base format, options per layer chosen below)
plans = [1, 2, 3, 5, 10, rng.randrange(1, 11)]
tops = []
for n, depth in enumerate(plans):
    size = rng.choice([16, 32, 48]) * M
    prev, prev_fmt = None, None
    for d in range(depth):
        raw = d == 0 and n == 2
        name = "c%d-l%d.%s" % (n, d, "raw" if raw else "qcow2")
        if raw:
            run("qemu-img", "create", "-q", "-f", "raw", name, str(size))
            qemu_io(name, "raw", ops(size, 65536, False, True))
        else:
            cluster = rng.choice([4096, 16384, 65536, 65536, 131072])
            o = ["cluster_size=%d" % cluster]
            v3 = True
            if n == 3 and d == 1:
                o.append("compat=0.10")
                v3 = False
            elif n == 4 and d % 3 == 1 and cluster >= 16384:
                o.append("extended_l2=on")
            elif n == 1:
                o.append("refcount_bits=%d" % (1 if d == 0 else 64))
            argv = ["qemu-img", "create", "-q", "-f", "qcow2", "-o", ",".join(o)]
            if prev:
                argv += ["-b", prev, "-F", prev_fmt]
                size = max(4 * M, size + rng.choice([0, 0, 8 * M, -4 * M]))
            argv += [name, str(size)]
            run(*argv)
            qemu_io(name, "qcow2", ops(size, cluster, True, v3))
        prev, prev_fmt = name, "raw" if raw else "qcow2"
    tops.append(prev)
print(" ".join(tops))
EOF
TOPS=$(python3 build.py "$SEED")
# Both tools read st_blocks (QEMU's test for metadata preallocation): let
# the file system settle it first, or the answer depends on writeback timing.
sync
# QEMU's block status asks whether an image looks preallocated by comparing
# its refcounts with the blocks the file system has allocated (st_blocks),
# which moves while delayed allocation is written back: settle it first.
sync
LAYERS=$(ls c*-l*.*)
echo "chains: $TOPS ($(echo "$LAYERS" | wc -w) layers, built in $(e2e_elapsed "$T0") s)"

# same NAME ARGS...: runs 'qemu-img ARGS' and 'vmhost img ARGS', compares
# stdout and exit status, and shows the difference.
img_q() { qemu-img "$@"; }
img_v() { $VMHOST img "$@"; }
same() {
	local name=$1; shift
	local q v qrc=0 vrc=0
	q=$(img_q "$@" 2>/dev/null) || qrc=$?
	v=$(img_v "$@" 2>/dev/null) || vrc=$?
	if [ "$q" == "$v" ] && [ "$qrc" == "$vrc" ]; then
		return 0
	fi
	echo "  $name: qemu-img exit $qrc, vmhost exit $vrc"
	diff <(echo "$q") <(echo "$v") | head -10 | sed 's/^/  /'
	return 1
}

# ---- map --------------------------------------------------------------------
# Where the image looks preallocated (above), both tools ask SEEK_DATA and
# SEEK_HOLE about the data clusters. qemu-io leaves unwritten extents in
# them (zeroed parts of partial clusters), and ext4 answers "hole" for an
# unwritten extent only while the page cache holds none of its pages; the
# first tool's own reads of the tables bring in neighbouring pages
# (read-ahead), so with a cold cache the second tool sees data where the
# first saw a hole. Seen here once, when another job dropped the caches
# during the run; with 'echo 3 > drop_caches' before each pair, 6 of 37
# differed every time. Each chain is read into the cache first, so both
# tools answer about the same state.
warm_chain() { cat "${1%%-*}"-l* >/dev/null; }
bad=0 n=0
for f in $LAYERS; do
	n=$((n + 1))
	warm_chain "$f"
	same "map json $f" map --output=json "$f" || bad=$((bad + 1))
done
for f in $TOPS; do
	n=$((n + 1))
	warm_chain "$f"
	same "map human $f" map "$f" || bad=$((bad + 1))
	# The JSON also parses to the same list (what scripts consume).
	python3 - <(qemu-img map --output=json "$f") <($VMHOST img map --output=json "$f") <<'EOF' || bad=$((bad + 1))
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
sys.exit(0 if a == b else 1)
EOF
done
[ $bad -eq 0 ] && pass map "$n map outputs equal qemu-img's, t=$(e2e_elapsed "$T0") s" || fail map "$bad of $n differ"

bad=0
for f in $TOPS; do
	warm_chain "$f"
	same "map range $f" map --output=json --start-offset=1M --max-length=5M "$f" || bad=$((bad + 1))
done
[ $bad -eq 0 ] && pass map-range "--start-offset/--max-length" || fail map-range "$bad differ"

# ---- measure ----------------------------------------------------------------
# measure and compare skip what block status calls zero: the same cache rule
# as for map (above).
cat $LAYERS >/dev/null
bad=0 n=0
for f in $TOPS; do
	for args in "-O qcow2" "-O raw" "-O qcow2 -o cluster_size=4k" "-O qcow2 -o cluster_size=2M,refcount_bits=1" \
		"-O qcow2 -o preallocation=full" "-O qcow2 -o backing_file=x"; do
		n=$((n + 1))
		# shellcheck disable=SC2086
		same "measure $args $f" measure --output=json $args "$f" || bad=$((bad + 1))
	done
done
for s in 0 1M 1G 100G 3T; do
	n=$((n + 1))
	same "measure --size $s" measure --output=json -O qcow2 --size $s || bad=$((bad + 1))
done
[ $bad -eq 0 ] && pass measure "$n measurements equal qemu-img's, t=$(e2e_elapsed "$T0") s" || fail measure "$bad of $n differ"

# ---- compare ----------------------------------------------------------------
bad=0 n=0
set -- $TOPS
for f in "$@"; do
	qemu-img convert -O raw "$f" "$f.raw"
	n=$((n + 1)); same "compare identical $f" compare "$f" "$f.raw" || bad=$((bad + 1))
	# One byte changed at a random offset (inside the data or not).
	cp --sparse=always "$f.raw" "$f.mod"
	sz=$(stat -c %s "$f.mod")
	off=$(python3 -c "import random; print(random.Random($SEED + $sz).randrange($sz))")
	printf '\x5a' | dd of="$f.mod" bs=1 seek="$off" conv=notrunc status=none
	n=$((n + 1)); same "compare changed $f" compare "$f" "$f.mod" || bad=$((bad + 1))
	n=$((n + 1)); same "compare changed reverse $f" compare -f raw "$f.mod" "$f" || bad=$((bad + 1))
	# Different sizes: the tail must be zeros.
	qemu-img create -q -f qcow2 -b "$f" -F "$(qemu-img info --output=json "$f" | python3 -c 'import json,sys; print(json.load(sys.stdin)["format"])')" "$f.big" 64M
	n=$((n + 1)); same "compare bigger $f" compare "$f" "$f.big" || bad=$((bad + 1))
	qemu-io -c "write -P 7 $((63 << 20)) 4096" "$f.big" >/dev/null
	n=$((n + 1)); same "compare bigger+data $f" compare "$f.big" "$f" || bad=$((bad + 1))
	n=$((n + 1)); same "compare strict size $f" compare -s "$f" "$f.big" || bad=$((bad + 1))
done
for ((i = 1; i < $#; i++)); do
	j=$((i + 1))
	n=$((n + 1)); same "compare ${!i} ${!j}" compare "${!i}" "${!j}" || bad=$((bad + 1))
done
[ $bad -eq 0 ] && pass compare "$n comparisons agree with qemu-img, t=$(e2e_elapsed "$T0") s" || fail compare "$bad of $n differ"

# ---- check: clean layers ----------------------------------------------------
bad=0 n=0
for f in $LAYERS; do
	n=$((n + 1))
	same "check $f" check --output=json "$f" || bad=$((bad + 1))
	same "check human $f" check "$f" || bad=$((bad + 1))
done
[ $bad -eq 0 ] && pass check-clean "$n layers, JSON, text and exit code equal, t=$(e2e_elapsed "$T0") s" || fail check-clean "$bad differ"

# ---- check: corrupted copies ------------------------------------------------
cat >corrupt.py <<'EOF'
# corrupt.py IMAGE CASE: plants one fault in a qcow2 image.
import struct, sys, os
path, case = sys.argv[1], sys.argv[2]
f = open(path, "r+b")
def rd(off, n): f.seek(off); return f.read(n)
def u64(off): return struct.unpack(">Q", rd(off, 8).ljust(8, b"\0"))[0]
def u32(off): return struct.unpack(">I", rd(off, 4).ljust(4, b"\0"))[0]
def w64(off, v): f.seek(off); f.write(struct.pack(">Q", v))
cb = u32(20); cs = 1 << cb
l1_size, l1_off = u32(36), u64(40)
rt_off = u64(48)
order = u32(96) if u32(4) >= 3 else 4
bits = 1 << order
extl2 = u32(4) >= 3 and (u64(72) >> 4) & 1
l2e = 16 if extl2 else 8
per_block = cs * 8 // bits
def refblock_of(cluster):
    return u64(rt_off + (cluster // per_block) * 8) & ~0x1ff
def get_ref(cluster):
    b = refblock_of(cluster); i = cluster % per_block
    if bits < 8:
        byte = rd(b + i * bits // 8, 1)[0]
        return (byte >> (i * bits % 8)) & ((1 << bits) - 1)
    return int.from_bytes(rd(b + i * bits // 8, bits // 8), "big")
def set_ref(cluster, v):
    b = refblock_of(cluster); i = cluster % per_block
    if bits < 8:
        off = b + i * bits // 8; byte = rd(off, 1)[0]; sh = i * bits % 8
        byte = (byte & ~(((1 << bits) - 1) << sh)) | (v << sh)
        f.seek(off); f.write(bytes([byte & 0xff]))
    else:
        f.seek(b + i * bits // 8); f.write(v.to_bytes(bits // 8, "big"))
# The first L2 table and its data entries.
l2 = next(u64(l1_off + 8 * i) & 0x00fffffffffffe00 for i in range(l1_size) if u64(l1_off + 8 * i))
entries = []
for i in range(cs // l2e):
    e = u64(l2 + i * l2e)
    if e & (1 << 62) == 0 and e & 0x00fffffffffffe00 and (extl2 or not e & 1):
        entries.append((i, e))
size = os.fstat(f.fileno()).st_size
if case == "leak":
    # A cluster past the data, in the last refcount block, counted but unused.
    c = (size + cs - 1) // cs
    f.truncate((c + 1) * cs)
    set_ref(c, 1)
elif case == "refcount-raised":
    c = (entries[0][1] & 0x00fffffffffffe00) >> cb
    set_ref(c, min(get_ref(c) + 1, (1 << bits) - 1) if bits > 1 else 1)
    if bits == 1:
        raise SystemExit(3)
elif case == "refcount-dropped":
    set_ref((entries[0][1] & 0x00fffffffffffe00) >> cb, 0)
elif case == "l2-past-eof":
    i, e = entries[0]
    w64(l2 + i * l2e, (e & ~0x00fffffffffffe00) | ((size + 64 * cs) & ~(cs - 1)))
elif case == "two-refs":
    (i, e), (j, e2) = entries[0], entries[1]
    w64(l2 + j * l2e, (e2 & ~0x00fffffffffffe00) | (e & 0x00fffffffffffe00))
elif case == "l2-misaligned":
    i = next(i for i in range(l1_size) if u64(l1_off + 8 * i))
    w64(l1_off + 8 * i, u64(l1_off + 8 * i) + 512)
elif case == "refblock-misaligned":
    w64(rt_off, u64(rt_off) + 512)
else:
    raise SystemExit("unknown case " + case)
EOF
cases="leak refcount-raised refcount-dropped l2-past-eof two-refs l2-misaligned refblock-misaligned"
# One qcow2 layer of each chain: default, refcount_bits=1 and 64, a raw
# base below, compat=0.10, extended L2.
victims=""
for c in $TOPS; do
	v=$(ls ${c%%-*}-l*.qcow2 | tail -2 | head -1)
	victims="$victims $v"
done
first_victim=$(echo $victims | cut -d' ' -f1)
bad=0 n=0 rbad=0 rn=0 skipped=0 undetected=0
for f in $victims; do
	for c in $cases; do
		cp --sparse=always "$f" "x.qcow2"
		# A case that does not apply to this image (nothing of its kind
		# in it) is left out, and counted.
		python3 corrupt.py x.qcow2 "$c" 2>/dev/null || { skipped=$((skipped + 1)); continue; }
		sync x.qcow2
		n=$((n + 1))
		# The fault must be real: qemu-img itself finds it.
		if qemu-img check x.qcow2 >/dev/null 2>&1; then
			echo "  planted $c in $f: qemu-img check finds nothing"
			undetected=$((undetected + 1))
		fi
		same "check $c $f" check --output=json x.qcow2 || bad=$((bad + 1))
		[ "$f" != "$first_victim" ] || same "check $c $f (text)" check x.qcow2 || bad=$((bad + 1))
		# Repair: qemu-img's repair and ours, then qemu-img judges both.
		modes=all
		case $c in leak | refcount-raised) modes=leaks ;; esac
		for mode in $modes; do
			rn=$((rn + 1))
			cp --sparse=always x.qcow2 q.qcow2
			cp --sparse=always x.qcow2 v.qcow2
			sync q.qcow2 v.qcow2
			qemu-img check -r $mode q.qcow2 >/dev/null 2>&1 || true
			$VMHOST img check -r $mode v.qcow2 >/dev/null 2>&1 || true
			qrc=0 vrc=0
			qemu-img check q.qcow2 >/dev/null 2>&1 || qrc=$?
			qemu-img check v.qcow2 >/dev/null 2>&1 || vrc=$?
			# Ours may repair more than qemu-img's (it rebuilds the
			# refcounts where qemu-img gives up): clean, or as good.
			if [ $vrc != 0 ] && [ $qrc != $vrc ]; then
				echo "  repair -r $mode $c $f: after qemu-img's repair check exits $qrc, after vmhost's $vrc"
				rbad=$((rbad + 1))
			elif ! qemu-img compare -q q.qcow2 v.qcow2 2>/dev/null && [ $qrc = 0 ]; then
				echo "  repair -r $mode $c $f: repaired images read differently"
				rbad=$((rbad + 1))
			fi
		done
	done
done
[ $bad -eq 0 ] && [ $n -gt 0 ] && [ $undetected -eq 0 ] &&
	pass check-corrupt "$n corrupted images ($skipped cases not applicable), each found by qemu-img: JSON, text and exit code equal, t=$(e2e_elapsed "$T0") s" ||
	fail check-corrupt "$bad of $n differ, $undetected not found by qemu-img itself, $skipped cases not applicable"
[ $rbad -eq 0 ] && [ $rn -gt 0 ] && pass check-repair "$rn repairs: qemu-img check as good as after its own repair, t=$(e2e_elapsed "$T0") s" ||
	fail check-repair "$rbad of $rn differ"

# A leak repaired in place leaves an image qemu-img calls clean.
f=$(echo $victims | cut -d' ' -f1)
cp --sparse=always "$f" x.qcow2
python3 corrupt.py x.qcow2 leak
rc=0; $VMHOST img check -r leaks --output=json x.qcow2 >rep.json 2>/dev/null || rc=$?
if [ $rc = 0 ] && grep -q '"leaks-fixed": 1' rep.json && qemu-img check -q x.qcow2; then
	pass check-repair-leak "-r leaks fixed 1 leak, qemu-img check clean"
else
	fail check-repair-leak "exit $rc, $(tr -d '\n' <rep.json)"
fi
rc=0; $VMHOST img check r2.raw >/dev/null 2>&1 || rc=$?
qemu-img create -q -f raw r2.raw 1M
rc=0; $VMHOST img check r2.raw >/dev/null 2>&1 || rc=$?
[ $rc = 63 ] && pass check-raw "raw: exit 63 like qemu-img" || fail check-raw "exit $rc"

echo "elapsed $(e2e_elapsed "$T0") s"
e2e_finish
