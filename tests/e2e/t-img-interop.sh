#!/bin/bash
# tests/e2e/t-img-interop.sh: 'vmhost img' against qemu-img and qemu-io, end
# to end through the CLI:
#   chain     a 3-deep backing chain (qemu-img base, qemu-img mid with 4k
#             clusters, vmhost overlay on top, larger than its backing file),
#             each layer filled by qemu-io with seeded random writes: patterns,
#             random data, zeroes, compressed clusters
#   raw       vmhost img convert -O raw vs qemu-img convert -O raw, cmp
#   qcow2     vmhost img convert -O qcow2: qemu-img check clean, compare identical
#   prealloc  create -o preallocation=off|metadata|falloc|full against qemu-img's
#   cache     -t unsafe|writeback|writethrough|none|directsync: same output;
#             flushes and O_DIRECT seen with strace; a bad mode is refused
#   guest     the guest builder's path: raw (sparse, ~64 MiB, 30% data) -> qcow2
#             -> raw, and QEMU writing into a vmhost overlay
#   info      vmhost img info --output=json vs qemu-img info --output=json,
#             field by field (python3 json), also --backing-chain and human text
#   errors    corrupt headers: clean error naming the field, no crash, file unchanged
#   locks     an image a qemu-io process holds is refused, and read with -U
# Prints PASS/FAIL per check; exit 0 only if all pass.
# Env: VMHOST=path to the vmhost binary; SEED=N to replay a run;
#      E2E_KEEP=1 keeps the temp dir on failure.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init img-interop
need qemu-img qemu-io python3 cmp strace

VMHOST=${VMHOST:-$ROOT/build/src/cli/vmhost}
if [ ! -x "$VMHOST" ]; then
	fail vmhost-built "$VMHOST is not built (ninja -C build)"
	e2e_finish
fi
SEED=${SEED:-$RANDOM}
echo "seed $SEED (SEED=$SEED replays this run)"
cd "$E2E_TMP"
head -c 4M /dev/urandom >rnd.bin

# qemu_io_random IMAGE SIZE CLUSTER SEED: many random writes in one qemu-io run.
qemu_io_random() {
	local img=$1 size=$2 cluster=$3 seed=$4
	local -a cmds=()
	mapfile -t cmds < <(python3 - "$size" "$cluster" "$seed" <<'EOF'
import random, sys
size, cluster, seed = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(seed)
# Compressed writes first: QEMU refuses them on clusters already allocated.
for c in rng.sample(range(size // cluster), 6):
    print("-c"); print("write -c -P 0x%02x %d %d" % (rng.randrange(1, 256), c * cluster, cluster))
for _ in range(34):
    kind = rng.choice(["P", "P", "s", "s", "z"])
    length = rng.choice([512, 4096, 65536, 100 * 1024, 1 << 20, 3 << 20])
    off = rng.randrange(0, (size - length) // 512) * 512
    print("-c")
    if kind == "P":
        print("write -P 0x%02x %d %d" % (rng.randrange(1, 256), off, length))
    elif kind == "s":
        print("write -s rnd.bin %d %d" % (off, length))
    else:
        print("write -z %d %d" % (off, length))
EOF
	)
	qemu-io "${cmds[@]}" "$img" >/dev/null
}

# json_same A.json B.json: field-by-field comparison, differences on stdout.
json_same() {
	python3 - "$1" "$2" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
diffs = []
def walk(x, y, path):
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y)):
            if k not in x:
                diffs.append("%s.%s: only qemu-img has it (%r)" % (path, k, y[k]))
            elif k not in y:
                diffs.append("%s.%s: only vmhost has it (%r)" % (path, k, x[k]))
            else:
                walk(x[k], y[k], "%s.%s" % (path, k))
    elif isinstance(x, list) and isinstance(y, list):
        if len(x) != len(y):
            diffs.append("%s: %d vs %d entries" % (path, len(x), len(y)))
        for i, (p, q) in enumerate(zip(x, y)):
            walk(p, q, "%s[%d]" % (path, i))
    elif x != y or type(x) != type(y):
        diffs.append("%s: vmhost %r, qemu-img %r" % (path, x, y))
walk(a, b, "")
for d in diffs:
    print("    " + d)
sys.exit(1 if diffs else 0)
EOF
}

# check_clean IMAGE: qemu-img check finds no errors and no leaks.
check_clean() {
	local out
	if out=$(qemu-img check "$1" 2>&1) && grep -q 'No errors were found' <<<"$out" && ! grep -qi leak <<<"$out"; then
		return 0
	fi
	printf '    %s\n' "${out//$'\n'/$'\n'    }"
	return 1
}

# ------------------------------------------------------------------ chain
M=$((1 << 20))
if qemu-img create -q -f qcow2 base.qcow2 64M && qemu_io_random base.qcow2 $((64 * M)) 65536 "$SEED" &&
   qemu-img create -q -f qcow2 -o cluster_size=4k -b base.qcow2 -F qcow2 mid.qcow2 &&
   qemu_io_random mid.qcow2 $((64 * M)) 4096 $((SEED + 1)); then
	pass chain-qemu-layers "base.qcow2 and mid.qcow2 (4k clusters) made and filled by qemu-img/qemu-io"
else
	fail chain-qemu-layers "qemu-img or qemu-io failed"
	e2e_finish
fi
if out=$("$VMHOST" img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2 80M 2>&1); then
	pass chain-create "vmhost overlay top.qcow2 (80M) on mid.qcow2 (64M) on base.qcow2"
else
	fail chain-create "$out"
	e2e_finish
fi
if qemu_io_random top.qcow2 $((80 * M)) 65536 $((SEED + 2)) && check_clean top.qcow2; then
	pass chain-qemu-writes "qemu-io wrote 40 random extents into each layer"
else
	fail chain-qemu-writes "qemu-io could not write into vmhost's overlay"
	e2e_finish
fi

# ------------------------------------------------------------------ raw
t=$(e2e_now)
if "$VMHOST" img convert -O raw top.qcow2 v.raw; then
	tv=$(e2e_elapsed "$t"); t=$(e2e_now)
	qemu-img convert -O raw top.qcow2 q.raw
	tq=$(e2e_elapsed "$t")
	if cmp v.raw q.raw; then
		pass raw-convert "identical to qemu-img's ($(du -k v.raw | cut -f1) KiB allocated vs $(du -k q.raw | cut -f1); vmhost ${tv}s, qemu-img ${tq}s)"
	else
		fail raw-convert "vmhost and qemu-img raw output differ"
	fi
else
	fail raw-convert "vmhost img convert -O raw failed"
fi

# ------------------------------------------------------------------ qcow2
# qcow2_fields FILE: cluster size, compat and refcount bits as qemu-img reads them.
qcow2_fields() {
	qemu-img info --output=json "$1" | python3 -c 'import json, sys
d = json.load(sys.stdin)
s = d["format-specific"]["data"]
print(d["cluster-size"], s["compat"], s["refcount-bits"])'
}
for c in "|65536 1.1 16" "-o cluster_size=4k|4096 1.1 16" "-o cluster_size=2M,refcount_bits=1|2097152 1.1 1" \
	"-o compat=0.10|65536 0.10 16"; do
	opts=${c%|*} want=${c#*|}
	name="qcow2-convert${opts:+ $opts}"
	# Each round replaces the last round's v.qcow2: --force.
	# shellcheck disable=SC2086 # opts is split on purpose
	if "$VMHOST" img convert --force -O qcow2 $opts top.qcow2 v.qcow2 && check_clean v.qcow2 &&
	   [ "$(qcow2_fields v.qcow2)" = "$want" ] &&
	   qemu-img compare -q top.qcow2 v.qcow2 && qemu-img compare -q v.qcow2 q.raw; then
		pass "$name" "qemu-img reads cluster size, compat, refcount bits: $want; check clean, compare identical, $(du -k v.qcow2 | cut -f1) KiB"
	else
		fail "$name"
	fi
done
if "$VMHOST" img convert -O raw v.qcow2 back.raw && cmp back.raw q.raw; then
	pass qcow2-to-raw "vmhost's qcow2 reads back byte for byte"
else
	fail qcow2-to-raw
fi

# ------------------------------------------------------------------ cache
# -t: every mode writes the same image; which ones flush and which open the
# output with O_DIRECT is seen with strace (the real system calls).
for t in unsafe writeback writethrough none directsync; do
	if "$VMHOST" img convert -t $t -O qcow2 top.qcow2 "t-$t.qcow2" && check_clean "t-$t.qcow2" &&
	   qemu-img compare -q "t-$t.qcow2" q.raw && "$VMHOST" img convert -t $t -O raw top.qcow2 "t-$t.raw" &&
	   cmp "t-$t.raw" q.raw; then
		pass "cache-$t" "qcow2 and raw output identical to qemu-img's"
	else
		fail "cache-$t"
	fi
done
# trace_convert FILE ARGS...: a convert under strace, its fsync, fdatasync
# and O_DIRECT opens in FILE.
trace_convert() {
	local out=$1
	shift
	strace -f -qq -e trace=fsync,fdatasync,openat,pwrite64 -o "$out" "$VMHOST" img convert "$@"
}
n_fsync() { grep -cE '(fsync|fdatasync)\(' "$1" || true; }
rm -f new.raw
trace_convert st-unsafe.txt -O raw top.qcow2 new.raw
# new.raw now holds data: replacing it takes --force.
trace_convert st-replace.txt --force -O raw top.qcow2 new.raw
trace_convert st-writeback.txt -t writeback -O raw top.qcow2 new-wb.raw
trace_convert st-none.txt -t none -O qcow2 top.qcow2 new-none.qcow2
if [ "$(n_fsync st-unsafe.txt)" -eq 0 ] && [ "$(n_fsync st-replace.txt)" -ge 2 ] &&
   [ "$(n_fsync st-writeback.txt)" -ge 2 ] && [ "$(n_fsync st-none.txt)" -ge 2 ]; then
	pass cache-flushes "default (unsafe): no fsync for a new file, file and directory flushed when replacing one; writeback and none flush"
else
	fail cache-flushes "fsync counts: unsafe new $(n_fsync st-unsafe.txt), unsafe replacing $(n_fsync st-replace.txt), writeback $(n_fsync st-writeback.txt), none $(n_fsync st-none.txt)"
fi
# (O_DIRECTORY, the directory opened to flush the rename, is not it.) The
# O_DIRECT open must succeed and data must be written through it.
direct_writes() {
	local fd
	fd=$(grep -E 'O_DIRECT([^O]|$).* = [0-9]+$' "$1" | grep -oE '[0-9]+$' | head -1)
	[ -n "$fd" ] && grep -cE "pwrite64\($fd, " "$1" || echo 0
}
if [ "$(direct_writes st-none.txt)" -gt 0 ] && ! grep -qE 'O_DIRECT([^O]|$)' st-writeback.txt &&
   check_clean new-none.qcow2 &&
   qemu-img compare -q new-none.qcow2 q.raw; then
	pass cache-none-direct "-t none: $(direct_writes st-none.txt) writes through the O_DIRECT descriptor, image clean and identical"
else
	fail cache-none-direct "$(grep -cE 'O_DIRECT([^O]|$)' st-none.txt) O_DIRECT opens with -t none"
fi
rc=0
out=$("$VMHOST" img convert -t sometimes -O raw top.qcow2 never.raw 2>&1) || rc=$?
if [ $rc -eq 2 ] && [[ $out == *"'sometimes'"* ]] && [ ! -e never.raw ]; then
	pass cache-bad-mode "exit 2: $out"
else
	fail cache-bad-mode "rc $rc: $out"
fi

# ------------------------------------------------------------------ prealloc
# -o preallocation=: vmhost's image against qemu-img's of the same mode:
# clean, same content, same allocation in the file (du) and the same map
# shape from qemu-img; QEMU writes into the preallocated image and vmhost
# reads what it wrote.
for m in off metadata falloc full; do
	"$VMHOST" img create -q -f qcow2 -o preallocation=$m "p-$m.qcow2" 20M
	qemu-img create -q -f qcow2 -o preallocation=$m "pq-$m.qcow2" 20M
	vk=$(du -k "p-$m.qcow2" | cut -f1) qk=$(du -k "pq-$m.qcow2" | cut -f1)
	# qemu-img's metadata sits in other clusters: compare all but the offsets.
	vm=$(qemu-img map --output=json "p-$m.qcow2" | sed 's/, "offset": [0-9]*//')
	qm=$(qemu-img map --output=json "pq-$m.qcow2" | sed 's/, "offset": [0-9]*//')
	if check_clean "p-$m.qcow2" && qemu-img compare -q "p-$m.qcow2" "pq-$m.qcow2" && [ "$vm" = "$qm" ] &&
	   [ $((vk - qk)) -le 256 ] && [ $((qk - vk)) -le 256 ] &&
	   qemu-io -c "write -P 0x3c 1M 3M" "p-$m.qcow2" >/dev/null && check_clean "p-$m.qcow2" &&
	   "$VMHOST" img convert -O raw "p-$m.qcow2" "p-$m.raw" && qemu-img convert -O raw "p-$m.qcow2" "pq-$m.raw" &&
	   cmp "p-$m.raw" "pq-$m.raw"; then
		pass "prealloc-qcow2-$m" "${vk} KiB allocated (qemu-img's: ${qk} KiB), same map, QEMU's writes read back"
	else
		fail "prealloc-qcow2-$m" "vmhost ${vk} KiB, qemu-img ${qk} KiB; map $vm vs $qm"
	fi
done
for m in off falloc full; do
	"$VMHOST" img create -q -f raw -o preallocation=$m "p-$m.img" 8M
	qemu-img create -q -f raw -o preallocation=$m "pq-$m.img" 8M
	vk=$(du -k "p-$m.img" | cut -f1) qk=$(du -k "pq-$m.img" | cut -f1)
	if cmp "p-$m.img" "pq-$m.img" && [ $((vk - qk)) -le 8 ] && [ $((qk - vk)) -le 8 ]; then
		pass "prealloc-raw-$m" "${vk} KiB allocated (qemu-img's: ${qk} KiB)"
	else
		fail "prealloc-raw-$m" "vmhost ${vk} KiB, qemu-img ${qk} KiB"
	fi
done
rc=0
out=$("$VMHOST" img create -f raw -o preallocation=metadata p-bad.img 1M 2>&1) || rc=$?
rc2=0
out2=$("$VMHOST" img create -f qcow2 -b base.qcow2 -F qcow2 -o preallocation=full p-bad.qcow2 2>&1) || rc2=$?
if [ $rc -eq 1 ] && [[ $out == *metadata* ]] && [ $rc2 -eq 1 ] && [[ $out2 == *"cannot be preallocated"* ]] &&
   [ ! -e p-bad.img ] && [ ! -e p-bad.qcow2 ]; then
	pass prealloc-refused "raw metadata and preallocated overlays refused, nothing created"
else
	fail prealloc-refused "rc $rc: $out / rc $rc2: $out2"
fi

# ------------------------------------------------------------------ guest
# Like tools/mkguest's disk: a sparse 64 MiB raw with 30% random data.
python3 - <<'EOF'
import os, random
rng = random.Random(7)
with open("disk.raw", "wb") as f:
    f.truncate(64 << 20)
    data = open("rnd.bin", "rb").read()
    for i in range(0, 64 << 20, 1 << 20):
        if rng.random() < 0.3:
            f.seek(i)
            f.write(data[: 1 << 20])
    f.seek(510); f.write(b"\x55\xaa")  # a boot signature in a partial first block
EOF
if "$VMHOST" img convert -f raw -O qcow2 disk.raw disk.qcow2 && check_clean disk.qcow2 &&
   qemu-img compare -q -f raw -F qcow2 disk.raw disk.qcow2; then
	pass guest-raw-to-qcow2 "$(du -k disk.qcow2 | cut -f1) KiB, check clean, identical"
else
	fail guest-raw-to-qcow2
fi
if "$VMHOST" img create -q -f qcow2 -b disk.qcow2 -F qcow2 overlay.qcow2 &&
   qemu-io -c 'write -P 0xab 1M 64k' -c 'read -P 0xab 1M 64k' overlay.qcow2 >/dev/null &&
   check_clean overlay.qcow2 && "$VMHOST" img convert -O raw overlay.qcow2 ov.raw &&
   qemu-img convert -O raw overlay.qcow2 ovq.raw && cmp ov.raw ovq.raw; then
	pass guest-overlay "QEMU writes into vmhost's overlay; both read it the same"
else
	fail guest-overlay
fi

# ------------------------------------------------------------------ info
for img in base.qcow2 mid.qcow2 top.qcow2 v.qcow2 disk.qcow2 overlay.qcow2 disk.raw q.raw; do
	"$VMHOST" img info --output=json "$img" >v.json
	qemu-img info --output=json "$img" >q.json
	if d=$(json_same v.json q.json); then pass "info-json $img"; else fail "info-json $img" "$(printf '\n%s' "$d")"; fi
done
"$VMHOST" img info --output=json --backing-chain top.qcow2 >v.json
qemu-img info --output=json --backing-chain top.qcow2 >q.json
if d=$(json_same v.json q.json); then pass "info-json --backing-chain" "3 images"; else fail "info-json --backing-chain" "$d"; fi
mkdir -p sub && "$VMHOST" img create -q -f qcow2 -b ../base.qcow2 -F qcow2 sub/rel.qcow2
"$VMHOST" img info --output=json --backing-chain sub/rel.qcow2 >v.json
qemu-img info --output=json --backing-chain sub/rel.qcow2 >q.json
if d=$(json_same v.json q.json); then pass "info-json relative backing" "$(grep -o '"full-backing-filename": "[^"]*"' v.json)"; else fail "info-json relative backing" "$d"; fi
for img in top.qcow2 disk.raw; do
	if diff <("$VMHOST" img info "$img") <(qemu-img info "$img") >info.diff; then
		pass "info-human $img" "same text as qemu-img"
	else
		fail "info-human $img" "$(cat info.diff)"
	fi
done

# ------------------------------------------------------------------ errors
# bad_header NAME OFFSET HEXBYTES EXPECTED: patch a copy of base.qcow2.
bad_header() {
	local name=$1 off=$2 bytes=$3 want=$4 out rc
	cp base.qcow2 bad.qcow2
	printf '%b' "$bytes" | dd of=bad.qcow2 bs=1 seek="$off" conv=notrunc status=none
	local sum; sum=$(md5sum <bad.qcow2)
	set +e
	out=$("$VMHOST" img info bad.qcow2 2>&1)
	rc=$?
	"$VMHOST" img convert -O raw bad.qcow2 bad.raw >/dev/null 2>&1
	local crc=$?
	set -e
	# Both refuse with exit 1 (a crash would be 134 or 139).
	if [ "$rc" = 1 ] && [ "$crc" = 1 ] && grep -q -- "$want" <<<"$out" && grep -q bad.qcow2 <<<"$out" &&
	   [ "$(md5sum <bad.qcow2)" = "$sum" ] && [ ! -e bad.raw ]; then
		pass "error $name" "$out"
	else
		fail "error $name" "info exit $rc, convert exit $crc: $out"
	fi
}
bad_header cluster_bits 20 '\x00\x00\x00\x30' 'cluster_bits 48'
bad_header l1_table_offset 40 '\x00\x00\x00\x00\x00\x03\x00\x08' 'l1_table_offset'
bad_header l1_size 36 '\x7f\xff\xff\xff' 'l1_size'
bad_header refcount_table_clusters 56 '\x00\x00\x00\x00' 'refcount_table_clusters'
bad_header header_length 100 '\x00\x00\x00\x09' 'header_length 9'
bad_header encrypted 32 '\x00\x00\x00\x02' 'encrypted'
bad_header incompatible 72 '\x00\x00\x01\x00\x00\x00\x00\x00' 'bit 40'
bad_header data-file 79 '\x04' 'external data file'
bad_header backing_file_size 8 '\x00\x00\x00\x00\x00\x00\x10\x00\x00\x00\x04\x00' 'backing_file_size 1024'

# ------------------------------------------------------------------ locks
# qemu-io's own 'sleep' keeps the image open (and locked) until stop_pid
# below; it is the lock holder, not a wait.
qemu-io -c 'sleep 60000' top.qcow2 >/dev/null 2>&1 &
holder=$!
track_pid "$holder"
wait_until 20 "lock on top.qcow2 by qemu-io $holder" lock_held "$holder"
set +e
out=$("$VMHOST" img convert -O raw top.qcow2 locked.raw 2>&1); rc=$?
set -e
if [ "$rc" != 0 ] && grep -q 'in use' <<<"$out"; then
	pass lock-refused "$out"
else
	fail lock-refused "exit $rc: $out"
fi
if "$VMHOST" img info -U top.qcow2 >/dev/null; then pass lock-force-share "info -U reads it anyway"; else fail lock-force-share; fi
stop_pid "$holder"

e2e_finish
