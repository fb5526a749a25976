#!/bin/bash
# tests/e2e/t-img-compat.sh: the qemu-img behaviours scripts rely on
# (issue 15), each run through qemu-img and vmhost on the same input and
# compared: exit status, stdout (text, or JSON field by field), the image
# written (qemu-img info / check / compare on it).
#   info      the backing file missing, /dev/null, an unknown backing
#             format: info shows the image (exit 0, same text and JSON);
#             --backing-chain fails on a missing link (exit 1, no stdout)
#   create-u  -u: the backing file is not opened (it need not exist); the
#             same image as qemu-img's; no size, no -F: refused as qemu-img
#   commit-b  -b BASE found as qemu-img finds it (relative to each image,
#             not to the working directory), else exit 1, "Did not find"
#   create-F  a wrong -F is recorded as given (exit 0, the same image as
#             qemu-img's), with a warning on stderr
#   options   sizes 1024.0, 1024.0b, 0x10000; -o cluster_size=0x10000,
#             compression_type=zlib; -o size=... and SIZE both: refused;
#             the largest size per cluster size, as qemu-img computes it
#   shrink    resize --shrink over data: done with a warning, as qemu-img
#   check-snapshots  v3 snapshot entries with 0 or 8 bytes of extra data,
#             extra data past 1 KiB, a table past the end of the file or
#             past 64 MiB: the same report, exit status and repaired file
#             (check -r all) as qemu-img
#   prealloc  resize --preallocation=off|metadata|falloc|full, raw and
#             qcow2: the same map, data and blocks on disk as qemu-img's
#   convert-n into an existing raw, qcow2 v3 or v2 target holding other
#             data: the same data and map; a missing or small target, -o,
#             -c refused as by qemu-img; -B ignored as by qemu-img
#   convert-B -B, -o backing_file=,backing_fmt= and -F: the same backing
#             file recorded, the same data, no more data than qemu-img's;
#             no -F, raw output, a missing file: exit 1 as qemu-img
#   convert-several  three sources (not cluster aligned) into raw and
#             qcow2, new and -n: the same size, data and map; -B exit 1
#   convert-l -l NAME, ID, snapshot.name=, snapshot.id= and both: the same
#             bytes, map and exit status as qemu-img
#   convert-C -C refused with -c and -S in qemu-img's words, taken with the
#             rest: the same data as qemu-img's
#   o-help    convert and create -o help: qemu-img's heading, a subset of
#             its lines (the options vmhost takes), exit 0, no file
#   output    info (JSON, --backing-chain, human), check, map and measure
#             --output=json: stdout byte for byte, for raw, v2, v3, small
#             clusters, backing files, a missing one, snapshots, dirty and
#             corrupt bits, a non-ASCII name; create: the "Formatting" line
#             and the new file byte for byte (sizes 0 to 2T, cluster sizes,
#             options, backing files); -p of convert (raw, qcow2, empty,
#             full, -c, -S 0, -l, an overlay, several sources, -n, a
#             failure), compare (identical, different, other sizes,
#             strict) and rebase (overlays holding data, short backing
#             files, -u, a failure): the same lines; img --version
#   remaining a bad -o (exit 1), snapshot without an action, rebase -U,
#             -T SRC_CACHE on check/compare/convert/rebase, convert -m,
#             -W, -r, --target-is-zero (with -n: the same data), -r RATE
#             timed on convert and commit, measure -l: exit status and
#             output as qemu-img's; create SIZE 0 over a backing file is
#             in the create loop above
# Prints PASS/FAIL per check; exit 0 only if all pass.
# Env: VMHOST=path to the vmhost binary; E2E_KEEP=1 keeps the temp dir on failure.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init img-compat
need qemu-img qemu-io python3 cmp

VMHOST=${VMHOST:-$ROOT/build/src/cli/vmhost}
if [ ! -x "$VMHOST" ]; then
	fail vmhost-built "$VMHOST is not built (ninja -C build)"
	e2e_finish
fi
cd "$E2E_TMP"

# json_same A.json B.json: the same JSON value (key order aside), the
# differences on stdout.
json_same() {
	python3 - "$1" "$2" <<'EOF'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
if a != b:
    print("    vmhost:   %s\n    qemu-img: %s" % (json.dumps(a, sort_keys=True), json.dumps(b, sort_keys=True)))
    sys.exit(1)
EOF
}

# both NAME ARGS...: runs 'qemu-img ARGS' and 'vmhost img ARGS' in the
# current directory; sets Q_RC Q_OUT Q_ERR and V_RC V_OUT V_ERR (the
# outputs are in the files q.out q.err v.out v.err as well).
both() {
	set +e
	qemu-img "$@" >q.out 2>q.err
	Q_RC=$?
	"$VMHOST" img "$@" >v.out 2>v.err
	V_RC=$?
	set -e
	Q_OUT=$(cat q.out) Q_ERR=$(cat q.err) V_OUT=$(cat v.out) V_ERR=$(cat v.err)
}

# same_rc CHECK: passes if both exit statuses are the same, else fails
# with both outputs; returns 1 on failure.
same_rc() {
	if [ "$Q_RC" = "$V_RC" ]; then
		return 0
	fi
	fail "$1" "exit qemu-img $Q_RC, vmhost $V_RC; qemu-img: $Q_OUT $Q_ERR; vmhost: $V_OUT $V_ERR"
	return 1
}

# ------------------------------------------------------------------ info
qemu-img create -q -f qcow2 base.qcow2 1M
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 missing.qcow2
qemu-img create -q -f qcow2 -u -b /dev/null -F raw devnull.qcow2 1M
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 unknown.qcow2
mv base.qcow2 moved.qcow2
# The backing format extension of unknown.qcow2 says "qcowX" instead.
python3 - <<'EOF'
d = bytearray(open("unknown.qcow2", "rb").read())
i = d.find(b"qcow2", 0x68)  # past the header: the backing format extension
assert 0 < i < 0x200, i
d[i:i + 5] = b"qcowX"
open("unknown.qcow2", "wb").write(d)
EOF
for img in missing.qcow2 devnull.qcow2 unknown.qcow2; do
	both info "$img"
	if same_rc "info $img"; then
		if [ "$V_RC" = 0 ] && [ "$Q_OUT" = "$V_OUT" ]; then
			pass "info $img" "exit 0, same text: $(grep '^backing file' v.out | tr '\n' ' ')"
		else
			fail "info $img" "$(diff q.out v.out)"
		fi
	fi
	both info --output=json "$img"
	if same_rc "info-json $img"; then
		if [ "$V_RC" = 0 ] && d=$(json_same v.out q.out); then
			pass "info-json $img" "same JSON"
		else
			fail "info-json $img" "$d"
		fi
	fi
done
# --backing-chain: /dev/null is an empty raw image to both; a missing file
# or a format without a driver fails the whole command.
both info --output=json --backing-chain devnull.qcow2
if same_rc "info-chain devnull.qcow2"; then
	if [ "$V_RC" = 0 ] && d=$(json_same v.out q.out); then
		pass "info-chain devnull.qcow2" "2 images, same JSON"
	else
		fail "info-chain devnull.qcow2" "$d"
	fi
fi
both info --backing-chain devnull.qcow2
if same_rc "info-chain-human devnull.qcow2" && [ "$V_RC" = 0 ] && [ "$Q_OUT" = "$V_OUT" ]; then
	pass "info-chain-human devnull.qcow2" "same text"
else
	fail "info-chain-human devnull.qcow2" "$(diff q.out v.out)"
fi
for img in missing.qcow2 unknown.qcow2; do
	for out in human json; do
		both info --backing-chain --output=$out "$img"
		same_rc "info-chain $img $out" || continue
		if [ "$V_RC" = 1 ] && [ -z "$V_OUT" ] && [ -z "$Q_OUT" ] &&
		   grep -q "^vmhost: error: Could not open '.*base.qcow2" v.err; then
			pass "info-chain $img $out" "exit 1, no stdout: $V_ERR"
		else
			fail "info-chain $img $out" "stdout '$V_OUT', stderr '$V_ERR'"
		fi
	done
done
mv moved.qcow2 base.qcow2

# info_same A B: 'qemu-img info --output=json' of A and B agree but for the
# file's name and size on disk (vmhost lays out a new qcow2 file otherwise).
info_same() {
	python3 - "$1" "$2" <<'EOF'
import json, subprocess, sys
def info(p):
    d = json.loads(subprocess.run(["qemu-img", "info", "-U", "--output=json", p], check=True,
                                  capture_output=True, text=True).stdout)
    for k in ("filename", "actual-size"):
        d.pop(k, None)
    return d
a, b = info(sys.argv[1]), info(sys.argv[2])
if a != b:
    print("    %s: %s\n    %s: %s" % (sys.argv[1], json.dumps(a, sort_keys=True), sys.argv[2], json.dumps(b, sort_keys=True)))
    sys.exit(1)
EOF
}

# both_create NAME FILE ARGS...: 'create ARGS' with qemu-img, the word FILE
# in ARGS standing for q-FILE, and with vmhost, for v-FILE: the same exit
# status, and after 0, the same image.
both_create() {
	local name=$1 file=$2 a
	shift 2
	local -a qa=() va=()
	for a in "$@"; do
		if [ "$a" = FILE ]; then qa+=("q-$file"); va+=("v-$file"); else qa+=("$a"); va+=("$a"); fi
	done
	rm -f "q-$file" "v-$file"
	set +e
	qemu-img create "${qa[@]}" >q.out 2>q.err
	Q_RC=$?
	"$VMHOST" img create "${va[@]}" >v.out 2>v.err
	V_RC=$?
	set -e
	Q_OUT=$(cat q.out) Q_ERR=$(cat q.err) V_OUT=$(cat v.out) V_ERR=$(cat v.err)
	same_rc "$name" || return 0
	if [ "$V_RC" != 0 ]; then
		pass "$name" "both exit $V_RC: qemu-img '$Q_ERR', vmhost '$V_ERR'"
	elif d=$(info_same "q-$file" "v-$file"); then
		pass "$name" "exit 0, same image"
	else
		fail "$name" "$d"
	fi
}

# ------------------------------------------------------------------ create -u
rm -f later.qcow2
both_create create-u u.qcow2 -f qcow2 -u -b later.qcow2 -F qcow2 FILE 1M
both_create create-u-no-size u2.qcow2 -f qcow2 -u -b later.qcow2 -F qcow2 FILE
both_create create-u-no-F u3.qcow2 -f qcow2 -u -b later.qcow2 FILE 1M
both_create create-u-raw u4.raw -f raw -u -b later.qcow2 -F qcow2 FILE 1M
both_create create-no-u-missing u5.qcow2 -f qcow2 -b later.qcow2 -F qcow2 FILE 1M
# Once the base arrives, the overlay is a sound one.
qemu-img create -q -f qcow2 later.qcow2 1M
qemu-io -c 'write -P 0x5a 0 64k' later.qcow2 >/dev/null
if out=$(qemu-img check v-u.qcow2 2>&1) && qemu-img compare -q v-u.qcow2 later.qcow2; then
	pass create-u-base-arrives "qemu-img check clean, reads the base's data"
else
	fail create-u-base-arrives "$out"
fi

# ------------------------------------------------------------------ commit -b
# A chain in sub/, committed from the directory above: a BASE relative to
# the working directory is not in the chain as written (names are taken
# relative to each image), an absolute one or one relative to the image is.
mkdir -p cq/sub
qemu-img create -q -f qcow2 cq/sub/base.qcow2 1M
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 cq/sub/mid.qcow2
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 cq/sub/top.qcow2
qemu-io -c 'write -P 0x11 0 128k' cq/sub/mid.qcow2 >/dev/null
qemu-io -c 'write -P 0x22 64k 128k' cq/sub/top.qcow2 >/dev/null
for base in sub/base.qcow2 base.qcow2 mid.qcow2 "$E2E_TMP/cv/sub/base.qcow2" sub/../sub/base.qcow2 \
	    nonexist.qcow2 sub/top.qcow2 top.qcow2; do
	rm -rf cv cw && cp -a cq cv && cp -a cq cw
	qbase=${base/\/cv\//\/cw\/}
	set +e
	(cd cw && qemu-img commit -b "$qbase" sub/top.qcow2) >q.out 2>q.err
	Q_RC=$?
	(cd cv && "$VMHOST" img commit -b "$base" sub/top.qcow2) >v.out 2>v.err
	V_RC=$?
	set -e
	Q_OUT=$(cat q.out) Q_ERR=$(cat q.err) V_OUT=$(cat v.out) V_ERR=$(cat v.err)
	what="commit-b ${base#"$E2E_TMP"/}"
	same_rc "$what" || continue
	if [ "$V_RC" != 0 ]; then
		if grep -qF "Did not find '$base' in the backing chain of 'sub/top.qcow2'" v.err; then
			pass "$what" "both exit $V_RC: $V_ERR"
		else
			fail "$what" "vmhost's message: $V_ERR"
		fi
	elif qemu-img compare -q cv/sub/base.qcow2 cw/sub/base.qcow2 &&
	     qemu-img compare -q cv/sub/mid.qcow2 cw/sub/mid.qcow2 &&
	     qemu-img compare -q cv/sub/top.qcow2 cw/sub/top.qcow2; then
		pass "$what" "exit 0, every layer the same as qemu-img's"
	else
		fail "$what" "the layers differ from qemu-img's"
	fi
done

# ------------------------------------------------------------------ create -F wrong
# The stated backing format is recorded and the file opened as that format
# (a qcow2 file read as raw: the size is its file size), as qemu-img does;
# vmhost warns. A raw file stated to be qcow2 cannot be opened: both fail.
qemu-img create -q -f qcow2 fbase.qcow2 1M
qemu-img create -q -f raw fbase.raw 1M
both_create create-F-raw-for-qcow2 f1.qcow2 -f qcow2 -b fbase.qcow2 -F raw FILE
if [ "$V_RC" = 0 ] && grep -q "^vmhost: warning: .*fbase.qcow2 looks like a qcow2 image, not raw" v.err &&
   [ "$(qemu-img info --output=json v-f1.qcow2 | grep -c '"backing-filename-format": "raw"')" = 1 ]; then
	pass create-F-raw-for-qcow2-warns "$(cat v.err)"
else
	fail create-F-raw-for-qcow2-warns "stderr: $(cat v.err)"
fi
both_create create-F-raw-for-qcow2-size f2.qcow2 -f qcow2 -b fbase.qcow2 -F raw FILE 2M
both_create create-F-qcow2-for-raw f3.qcow2 -f qcow2 -b fbase.raw -F qcow2 FILE 1M
both_create create-F-right f4.qcow2 -f qcow2 -b fbase.qcow2 -F qcow2 FILE
if [ ! -s v.err ]; then pass create-F-right-no-warning; else fail create-F-right-no-warning "$(cat v.err)"; fi

# ------------------------------------------------------------------ options and sizes
both_create size-1024.0 s1.raw -f raw FILE 1024.0
both_create size-1024.0b s2.raw -f raw FILE 1024.0b
both_create size-hex s3.raw -f raw FILE 0x10000
both_create size-blank s4.raw -f raw FILE " 1024"
for f in s1 s2 s3 s4; do
	[ -e "q-$f.raw" ] && [ "$(stat -c %s "q-$f.raw")" = "$(stat -c %s "v-$f.raw")" ] ||
		fail "size-$f-bytes" "qemu-img $(stat -c %s "q-$f.raw" 2>&1), vmhost $(stat -c %s "v-$f.raw" 2>&1)"
done
both_create size-fraction-of-bytes s5.raw -f raw FILE 1024.5
both_create cluster-size-hex o1.qcow2 -f qcow2 -o cluster_size=0x10000 FILE 1M
both_create compression-zlib o2.qcow2 -f qcow2 -o compression_type=zlib FILE 1M
both_create size-twice o3.qcow2 -f qcow2 -o size=10M FILE 20M
both_create size-in-o o4.qcow2 -f qcow2 -o size=10M FILE
# The largest size follows from the cluster size (32 MiB of L1 table):
# 2^22 * cluster_size^2 / 8, and a sector more is refused.
for cs in 4096 65536 262144 2097152; do
	max=$((2 ** 22 * cs / 8 * cs))
	both_create "max-size-$cs" m.qcow2 -f qcow2 -o cluster_size=$cs FILE $max
	[ "$V_RC" = 0 ] && "$VMHOST" img info v-m.qcow2 >/dev/null || fail "max-size-$cs-vmhost-reads" "$(cat v.err)"
	both_create "max-size-$cs+512" m.qcow2 -f qcow2 -o cluster_size=$cs FILE $((max + 512))
done
both_create cluster-256k-32P m.qcow2 -f qcow2 -o cluster_size=256k FILE 32P
rm -f q-m.qcow2 v-m.qcow2

# ------------------------------------------------------------------ resize --shrink
# Over data (plain, compressed, a straddling cluster, shared with a
# snapshot): the same guest view as qemu-img's after shrinking and
# growing back, qemu-img check clean, and qemu-img's warning.
for kind in plain snapshot raw; do
	for t in q v; do
		if [ "$kind" = raw ]; then
			qemu-img create -q -f raw "sh-$t.img" 4M
			qemu-io -f raw -c 'write -P 0x33 1M 2M' "sh-$t.img" >/dev/null
		else
			qemu-img create -q -f qcow2 "sh-$t.img" 4M
			qemu-io -c 'write -P 0x33 1M 2M' -c 'write -c -P 0x44 3M 64k' -c 'write -P 0x55 3200k 64k' \
				"sh-$t.img" >/dev/null
			[ "$kind" = plain ] || qemu-img snapshot -c s1 "sh-$t.img"
		fi
	done
	set +e
	qemu-img resize --shrink "sh-q.img" 1500k >q.out 2>q.err
	Q_RC=$?
	"$VMHOST" img resize --shrink "sh-v.img" 1500k >v.out 2>v.err
	V_RC=$?
	set -e
	Q_OUT=$(cat q.out) Q_ERR=$(cat q.err) V_OUT=$(cat v.out) V_ERR=$(cat v.err)
	same_rc "shrink-$kind" || continue
	qemu-img resize -q "sh-q.img" 4M && "$VMHOST" img resize -q "sh-v.img" 4M
	if [ "$V_RC" = 0 ] && grep -q "^vmhost: warning: Shrinking" v.err &&
	   { [ "$kind" = raw ] || qemu-img check -q "sh-v.img"; } && qemu-img compare -q "sh-q.img" "sh-v.img"; then
		pass "shrink-$kind" "exit 0, warned, check clean, same data as qemu-img's"
	else
		fail "shrink-$kind" "stderr $(cat v.err); $(qemu-img check "sh-v.img" 2>&1 | head -3)"
	fi
done
# Without --shrink both refuse.
qemu-img create -q -f qcow2 sh-v.img 4M
both resize sh-v.img 1M
if same_rc shrink-needs-flag && [ "$V_RC" = 1 ]; then pass shrink-needs-flag "both exit 1"; fi


# ------------------------------------------------------------------ check: snapshot tables
# A qcow2 image with two snapshots (the table is the last thing in the
# file), its table then damaged by craft.py; qemu-img check and vmhost img
# check on the same file, and -r all on two copies: the same exit status,
# the same stdout and snapshot lines on stderr, byte-identical repaired
# files, each clean to the other tool.
cat >craft.py <<'EOF'
import struct, sys
img, mode = sys.argv[1], sys.argv[2]
d = bytearray(open(img, "rb").read())
nb, off = struct.unpack(">IQ", d[60:72])
if mode == "past-eof":
    # Two entries more than the file holds: QEMU reads them as zeros.
    d[60:64] = struct.pack(">I", nb + 2)
elif mode == "big":
    # 1050 entries of 65 KiB (past QEMU's 64 MiB), refcounted, after the rest.
    cs = 65536
    at = (len(d) + cs - 1) // cs * cs
    e = struct.pack(">QIHHIIQII", 0, 0, 1, 65535, 0, 0, 0, 0, 24) + struct.pack(">QQq", 0, 4 << 20, -1)
    t = b"".join(e + b"%d" % (i % 10) + b"n" * 65535 for i in range(1050))  # 65600 bytes: no padding
    d += b"\0" * (at - len(d)) + t
    d[60:72] = struct.pack(">IQ", 1050, at)
    rt = struct.unpack(">Q", d[48:56])[0]
    rb = struct.unpack(">Q", d[rt:rt + 8])[0]
    for k in range(at // cs, (len(d) + cs - 1) // cs):
        d[rb + 2 * k:rb + 2 * k + 2] = struct.pack(">H", 1)
else:
    ents, p = [], off
    for i in range(nb):
        f = list(struct.unpack(">QIHHIIQII", d[p:p + 40]))
        ex, idl, nl = f[8], f[2], f[3]
        extra, rest = d[p + 40:p + 40 + ex], d[p + 40 + ex:p + 40 + ex + idl + nl]
        ents.append((f, bytes(extra), bytes(rest)))
        p += (40 + ex + idl + nl + 7) & ~7
    out = b""
    for i, (f, extra, rest) in enumerate(ents):
        if mode == "extra0":
            extra = b""
        elif mode == "extra8":
            extra = extra[:8]
        elif mode == "extra-big" and i == 0:
            extra = extra + b"\xab" * (2048 - len(extra))
        f[8] = len(extra)
        x = struct.pack(">QIHHIIQII", *f) + extra + rest
        out += x + b"\0" * (-len(x) % 8)
    d[off:] = out  # the table is the file's last part
open(img, "wb").write(d)
EOF
for mode in extra0 extra8 extra-big past-eof big; do
	rm -f sn.qcow2
	qemu-img create -q -f qcow2 sn.qcow2 4M
	if [ "$mode" != big ]; then
		qemu-io -c 'write -P 0x33 0 128k' sn.qcow2 >/dev/null
		qemu-img snapshot -c s1 sn.qcow2
		qemu-io -c 'write -P 0x44 0 64k' sn.qcow2 >/dev/null
		qemu-img snapshot -c s2 sn.qcow2
	fi
	python3 craft.py sn.qcow2 $mode
	both check sn.qcow2
	if same_rc "check-snapshots $mode" && [ "$Q_OUT" = "$V_OUT" ] &&
	   diff <(grep '^ERROR' q.err) <(grep '^ERROR' v.err) >/dev/null; then
		pass "check-snapshots $mode" "both exit $V_RC: $(head -1 v.err)"
	else
		fail "check-snapshots $mode" "qemu-img: $Q_OUT $Q_ERR; vmhost: $V_OUT $V_ERR"
	fi
	cp sn.qcow2 snq.qcow2
	cp sn.qcow2 snv.qcow2
	set +e
	qemu-img check -r all snq.qcow2 >q.out 2>q.err
	Q_RC=$?
	"$VMHOST" img check -r all snv.qcow2 >v.out 2>v.err
	V_RC=$?
	set -e
	Q_OUT=$(cat q.out) Q_ERR=$(cat q.err) V_OUT=$(cat v.out) V_ERR=$(cat v.err)
	if same_rc "check-snapshots-repair $mode" && [ "$Q_OUT" = "$V_OUT" ] &&
	   diff <(grep -i 'snapshot' q.err) <(grep -i 'snapshot' v.err) >/dev/null &&
	   cmp -s snq.qcow2 snv.qcow2 && qemu-img check -q snv.qcow2 && "$VMHOST" img check -q snq.qcow2; then
		pass "check-snapshots-repair $mode" "exit $V_RC, the same report and file as qemu-img's, clean to both"
	else
		fail "check-snapshots-repair $mode" "$(diff q.out v.out; diff <(grep -i snapshot q.err) <(grep -i snapshot v.err); cmp snq.qcow2 snv.qcow2 2>&1)"
	fi
done
rm -f sn.qcow2 snq.qcow2 snv.qcow2

# ------------------------------------------------------------------ resize --preallocation
# 1 MiB with 64 KiB of data, grown to 4 MiB with each mode: the same exit
# status, the same qemu-img map (host offsets aside), the same data, the
# blocks on disk within two clusters of qemu-img's, check clean.
for fmt in raw qcow2; do
	for mode in off metadata falloc full; do
		for t in q v; do
			rm -f "pa-$t.img"
			qemu-img create -q -f $fmt "pa-$t.img" 1M
			qemu-io -f $fmt -c 'write -P 0x11 0 64k' "pa-$t.img" >/dev/null
		done
		set +e
		qemu-img resize -f $fmt --preallocation=$mode pa-q.img 4M >q.out 2>q.err
		Q_RC=$?
		"$VMHOST" img resize -f $fmt --preallocation=$mode pa-v.img 4M >v.out 2>v.err
		V_RC=$?
		set -e
		Q_OUT=$(cat q.out) Q_ERR=$(cat q.err) V_OUT=$(cat v.out) V_ERR=$(cat v.err)
		same_rc "prealloc $fmt $mode" || continue
		qd=$(du -B1 pa-q.img | cut -f1) vd=$(du -B1 pa-v.img | cut -f1)
		if [ "$V_RC" != 0 ]; then
			pass "prealloc $fmt $mode" "both exit $V_RC: $V_ERR"
		elif diff <(qemu-img map --output=json -f $fmt pa-q.img | sed 's/, "offset.*//') \
			  <(qemu-img map --output=json -f $fmt pa-v.img | sed 's/, "offset.*//') >/dev/null &&
		     qemu-img compare -q -f $fmt -F $fmt pa-q.img pa-v.img &&
		     [ "$vd" -le $((qd + 131072)) ] && [ "$vd" -ge $((qd - 131072)) ] &&
		     { [ $fmt = raw ] || qemu-img check -q pa-v.img; }; then
			pass "prealloc $fmt $mode" "same map and data, $vd bytes on disk (qemu-img $qd)"
		else
			fail "prealloc $fmt $mode" "on disk $vd (qemu-img $qd); $(diff <(qemu-img map -f $fmt pa-q.img) <(qemu-img map -f $fmt pa-v.img))"
		fi
	done
done
qemu-img create -q -f qcow2 pa-v.img 4M
both resize --shrink --preallocation=full pa-v.img 1M
if same_rc prealloc-shrink && [ "$V_RC" = 1 ] && grep -q "Preallocation can only be used for growing images" v.err; then
	pass prealloc-shrink "both exit 1: $(tail -1 v.err)"
else
	fail prealloc-shrink "$(cat v.err)"
fi
rm -f pa-q.img pa-v.img

# ------------------------------------------------------------------ convert -n
# The source: 1 MiB, data at 0 and 512k. Each target is made twice (one
# for each tool) holding other data, also past the source's end; after
# 'convert -n' both must have the same exit status, the same content
# (byte for byte for raw, 'qemu-img compare' for qcow2) and the same map.
qemu-img create -q -f qcow2 cn-src.qcow2 1M
qemu-io -c 'write -P 0x11 0 64k' -c 'write -P 0x22 512k 64k' cn-src.qcow2 >/dev/null
# cn_target FILE KIND: a target of KIND raw (2 MiB), v3 or v2 (qcow2, 1 MiB)
cn_target() {
	rm -f "$1"
	case $2 in
	raw) truncate -s 2M "$1"
	     qemu-io -f raw -c 'write -P 0x33 256k 128k' -c 'write -P 0x44 1536k 64k' "$1" >/dev/null ;;
	v3) qemu-img create -q -f qcow2 "$1" 1M
	    qemu-io -c 'write -P 0x33 0 1M' "$1" >/dev/null ;;
	v2) qemu-img create -q -f qcow2 -o compat=0.10 "$1" 1M
	    qemu-io -c 'write -P 0x33 256k 128k' "$1" >/dev/null ;;
	esac
}
# cn_run CHECK KIND ARGS...: 'convert -n ARGS cn-src.qcow2 TARGET' on a
# fresh target of KIND for each tool; compares as said above, reading the
# target as -O says (raw unless -O qcow2), as both tools write it.
cn_run() {
	local check=$1 kind=$2 fmt=raw
	shift 2
	case " $* " in *" -O qcow2 "*) fmt=qcow2 ;; esac
	cn_target cnq.img "$kind"
	cn_target cnv.img "$kind"
	set +e
	qemu-img convert -n "$@" cn-src.qcow2 cnq.img >q.out 2>q.err
	Q_RC=$?
	"$VMHOST" img convert -n "$@" cn-src.qcow2 cnv.img >v.out 2>v.err
	V_RC=$?
	set -e
	Q_OUT=$(cat q.out) Q_ERR=$(cat q.err) V_OUT=$(cat v.out) V_ERR=$(cat v.err)
	same_rc "$check" || return 0
	if [ "$V_RC" != 0 ]; then
		pass "$check" "both exit $V_RC: $(head -1 v.err)"
	elif { [ $fmt = qcow2 ] || cmp -s cnq.img cnv.img; } &&
	     qemu-img compare -q -f $fmt -F $fmt cnq.img cnv.img &&
	     diff <(qemu-img map --output=json -f $fmt cnq.img | sed 's/, "offset.*//') \
		  <(qemu-img map --output=json -f $fmt cnv.img | sed 's/, "offset.*//') >/dev/null &&
	     { [ $fmt = raw ] || qemu-img check -q cnv.img; }; then
		pass "$check" "exit 0, the same data and map as qemu-img's"
	else
		fail "$check" "$(qemu-img compare -f $fmt -F $fmt cnq.img cnv.img 2>&1; diff <(qemu-img map --output=json -f $fmt cnq.img | sed 's/, "offset.*//') <(qemu-img map --output=json -f $fmt cnv.img | sed 's/, "offset.*//'); cat v.err)"
	fi
}
cn_run "convert-n raw" raw -O raw
cn_run "convert-n raw (no -O)" raw
cn_run "convert-n qcow2 v3" v3 -O qcow2
cn_run "convert-n qcow2 v2" v2 -O qcow2
cn_run "convert-n qcow2 -S 0" v3 -O qcow2 -S 0
cn_run "convert-n qcow2 as raw" v3 -O raw
cn_run "convert-n -o" raw -O raw -o cluster_size=4k
cn_run "convert-n -c" v3 -O qcow2 -c
cn_run "convert-n -B" v3 -O qcow2 -B cn-src.qcow2 -F qcow2
truncate -s 512k cn-small.raw
both convert -n cn-src.qcow2 cn-small.raw
if same_rc convert-n-smaller && [ "$V_RC" = 1 ] && grep -q "output file is smaller than input file" v.err; then
	pass convert-n-smaller "both exit 1: $V_ERR"
else
	fail convert-n-smaller "$V_ERR"
fi
rm -f cn-missing.raw
both convert -n cn-src.qcow2 cn-missing.raw
if same_rc convert-n-missing && [ "$V_RC" = 1 ] && [ ! -e cn-missing.raw ]; then
	pass convert-n-missing "both exit 1, nothing created: $V_ERR"
else
	fail convert-n-missing "$V_ERR"
fi
rm -f cnq.img cnv.img cn-small.raw  # cn-src.qcow2 stays for convert -C

# ------------------------------------------------------------------ convert -B
# cb-base: 0x11 over 256k. cb-src (standalone): 0x11 at 0-128k (as the
# base), 0x22 at 128k, zeros at 192k (where the base has data), 0x33 at
# 512k. cb-top: an overlay of cb-base with 0x44 at 64k and 0x55 at 640k.
# Both tools must exit alike, record the same backing file and format,
# and give a clean overlay that reads as the source. qemu-img writes what
# the source allocates; vmhost leaves out what equals the backing file
# too, so its overlay holds no more data than qemu-img's, and for the
# overlay of the same base (cb-top) the same map.
qemu-img create -q -f qcow2 cb-base.qcow2 1M
qemu-io -c 'write -P 0x11 0 256k' cb-base.qcow2 >/dev/null
qemu-img create -q -f qcow2 cb-src.qcow2 1M
qemu-io -c 'write -P 0x11 0 128k' -c 'write -P 0x22 128k 64k' -c 'write -P 0x33 512k 64k' cb-src.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b cb-base.qcow2 -F qcow2 cb-top.qcow2
qemu-io -c 'write -P 0x44 64k 64k' -c 'write -P 0x55 640k 64k' cb-top.qcow2 >/dev/null
# depth0_data FILE: bytes of data the file itself holds, as qemu-img maps it
depth0_data() {
	qemu-img map --output=json "$1" | python3 -c '
import json, sys
print(sum(e["length"] for e in json.load(sys.stdin) if e["depth"] == 0 and e["data"]))'
}
# cb_run CHECK SRC ARGS...: 'convert -O qcow2 ARGS SRC OUT' by both tools
cb_run() {
	local check=$1 src=$2
	shift 2
	rm -f cbq.qcow2 cbv.qcow2
	set +e
	qemu-img convert -O qcow2 "$@" "$src" cbq.qcow2 >q.out 2>q.err
	Q_RC=$?
	"$VMHOST" img convert -O qcow2 "$@" "$src" cbv.qcow2 >v.out 2>v.err
	V_RC=$?
	set -e
	Q_OUT=$(cat q.out) Q_ERR=$(cat q.err) V_OUT=$(cat v.out) V_ERR=$(cat v.err)
	same_rc "$check" || return 0
	if [ "$V_RC" != 0 ]; then
		if [ ! -e cbv.qcow2 ]; then
			pass "$check" "both exit $V_RC: $(head -1 v.err)"
		else
			fail "$check" "exit $V_RC but cbv.qcow2 was written"
		fi
		return 0
	fi
	local bq bv qd vd
	bq=$(qemu-img info --output=json cbq.qcow2 | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j.get("backing-filename"), j.get("backing-filename-format"))')
	bv=$(qemu-img info --output=json cbv.qcow2 | python3 -c 'import json,sys; j=json.load(sys.stdin); print(j.get("backing-filename"), j.get("backing-filename-format"))')
	qd=$(depth0_data cbq.qcow2) vd=$(depth0_data cbv.qcow2)
	if [ "$bq" = "$bv" ] && qemu-img check -q cbv.qcow2 && qemu-img compare -q "$src" cbv.qcow2 &&
	   [ "$vd" -le "$qd" ] &&
	   { [ "$src" != cb-top.qcow2 ] ||
	     diff <(qemu-img map --output=json cbq.qcow2 | sed 's/, "offset.*//') \
		  <(qemu-img map --output=json cbv.qcow2 | sed 's/, "offset.*//') >/dev/null; }; then
		pass "$check" "backing $bv, reads as the source, $vd bytes of data (qemu-img $qd)"
	else
		fail "$check" "backing qemu-img '$bq' vmhost '$bv'; data $vd (qemu-img $qd); $(qemu-img compare "$src" cbv.qcow2 2>&1); $(diff <(qemu-img map cbq.qcow2) <(qemu-img map cbv.qcow2))"
	fi
}
cb_run "convert-B standalone" cb-src.qcow2 -B cb-base.qcow2 -F qcow2
cb_run "convert-B overlay" cb-top.qcow2 -B cb-base.qcow2 -F qcow2
cb_run "convert-B -c" cb-top.qcow2 -c -B cb-base.qcow2 -F qcow2
cb_run "convert-B -o backing_file,backing_fmt" cb-src.qcow2 -o backing_file=cb-base.qcow2,backing_fmt=qcow2
cb_run "convert-B -o backing_file -F" cb-top.qcow2 -o backing_file=cb-base.qcow2 -F qcow2
cp cb-base.qcow2 cb-base2.qcow2
cb_run "convert-B -B over -o backing_file" cb-src.qcow2 -B cb-base.qcow2 -o backing_file=cb-base2.qcow2 -F qcow2
cb_run "convert-B -F over -o backing_fmt" cb-src.qcow2 -o backing_file=cb-base.qcow2,backing_fmt=raw -F qcow2
cb_run "convert-B no -F" cb-src.qcow2 -B cb-base.qcow2
cb_run "convert-B -o backing_fmt alone" cb-src.qcow2 -o backing_fmt=qcow2
cb_run "convert-B missing" cb-src.qcow2 -B cb-nope.qcow2 -F qcow2
for a in "-B cb-base.qcow2 -F qcow2" "-o backing_file=cb-base.qcow2,backing_fmt=qcow2"; do
	rm -f cbq.raw cbv.raw
	# shellcheck disable=SC2086 # $a holds several arguments
	both convert -O raw $a cb-src.qcow2 cbv.raw
	if same_rc "convert-B raw output ($a)" && [ "$V_RC" = 1 ] && [ ! -e cbv.raw ]; then
		pass "convert-B raw output ($a)" "both exit 1: $V_ERR"
	else
		fail "convert-B raw output ($a)" "$V_ERR"
	fi
done
rm -f cbq.qcow2 cbv.qcow2 cb-base2.qcow2

# ------------------------------------------------------------------ convert of several sources
# A 1 MiB qcow2 with data at both ends, a 300 KiB raw file with 8 KiB of
# data at 4k and a 100 KiB raw file with one sector: not cluster aligned,
# so clusters of the output take data of two sources. Raw and qcow2
# output (a new file, and -n into an existing one): the same size, bytes
# or data, map and exit status as qemu-img's. -B with several sources:
# both exit 1; -c: vmhost refuses (exit 1) where qemu-img writes.
qemu-img create -q -f qcow2 cm1.qcow2 1M
qemu-io -c 'write -P 0x11 0 64k' -c 'write -P 0x12 960k 64k' cm1.qcow2 >/dev/null
truncate -s 300k cm2.raw
qemu-io -f raw -c 'write -P 0x22 4k 8k' cm2.raw >/dev/null
truncate -s 100k cm3.raw
qemu-io -f raw -c 'write -P 0x33 0 512' cm3.raw >/dev/null
# map_merged FMT FILE: qemu-img's map as (start length zero data), next
# entries of one kind merged; host offsets and "present" left out (an image
# without backing reads zeros alike from zero and unallocated clusters).
map_merged() {
	qemu-img map --output=json -f "$1" "$2" | python3 -c '
import json, sys
out = []
for e in json.load(sys.stdin):
    k = [e["zero"], e["data"]]
    if out and out[-1][2:] == k and out[-1][0] + out[-1][1] == e["start"]:
        out[-1][1] += e["length"]
    else:
        out.append([e["start"], e["length"], *k])
for o in out:
    print(*o)'
}
for fmt in raw qcow2; do
	rm -f cmq.img cmv.img
	set +e
	qemu-img convert -O $fmt cm1.qcow2 cm2.raw cm3.raw cmq.img >q.out 2>q.err
	Q_RC=$?
	"$VMHOST" img convert -O $fmt cm1.qcow2 cm2.raw cm3.raw cmv.img >v.out 2>v.err
	V_RC=$?
	set -e
	Q_OUT=$(cat q.out) Q_ERR=$(cat q.err) V_OUT=$(cat v.out) V_ERR=$(cat v.err)
	if same_rc "convert-several $fmt" && [ "$V_RC" = 0 ] &&
	   [ "$(qemu-img info -f $fmt cmv.img | grep 'virtual size')" = "$(qemu-img info -f $fmt cmq.img | grep 'virtual size')" ] &&
	   qemu-img compare -q -f $fmt -F $fmt cmq.img cmv.img && { [ $fmt = qcow2 ] || cmp -s cmq.img cmv.img; } &&
	   diff <(qemu-img map --output=json -f $fmt cmq.img | sed 's/, "offset.*//') \
		<(qemu-img map --output=json -f $fmt cmv.img | sed 's/, "offset.*//') >/dev/null &&
	   { [ $fmt = raw ] || qemu-img check -q cmv.img; }; then
		pass "convert-several $fmt" "exit 0, $(qemu-img info -f $fmt cmv.img | grep 'virtual size'), the same data and map as qemu-img's"
	else
		fail "convert-several $fmt" "$V_ERR; $(qemu-img info -f $fmt cmv.img 2>&1 | grep 'virtual size'); $(qemu-img compare -f $fmt -F $fmt cmq.img cmv.img 2>&1)"
	fi
done
for kind in raw v3; do
	fmt=raw
	[ $kind = v3 ] && fmt=qcow2
	cn_target cmq.img $kind
	cn_target cmv.img $kind
	[ $kind = v3 ] && qemu-img resize -q cmq.img 2M && qemu-img resize -q cmv.img 2M
	set +e
	qemu-img convert -n -O $fmt cm1.qcow2 cm2.raw cm3.raw cmq.img >q.out 2>q.err
	Q_RC=$?
	"$VMHOST" img convert -n -O $fmt cm1.qcow2 cm2.raw cm3.raw cmv.img >v.out 2>v.err
	V_RC=$?
	set -e
	Q_OUT=$(cat q.out) Q_ERR=$(cat q.err) V_OUT=$(cat v.out) V_ERR=$(cat v.err)
	if same_rc "convert-several -n $kind" && [ "$V_RC" = 0 ] &&
	   qemu-img compare -q -f $fmt -F $fmt cmq.img cmv.img && { [ $fmt = qcow2 ] || cmp -s cmq.img cmv.img; } &&
	   diff <(map_merged $fmt cmq.img) <(map_merged $fmt cmv.img) >/dev/null; then
		pass "convert-several -n $kind" "exit 0, the same data and map as qemu-img's"
	else
		fail "convert-several -n $kind" "$V_ERR; $(qemu-img compare -f $fmt -F $fmt cmq.img cmv.img 2>&1); $(diff <(map_merged $fmt cmq.img) <(map_merged $fmt cmv.img))"
	fi
done
rm -f cmv.img
both convert -O qcow2 -B cm1.qcow2 -F qcow2 cm1.qcow2 cm2.raw cmv.img
if same_rc "convert-several -B" && [ "$V_RC" = 1 ] && [ ! -e cmv.img ] &&
   grep -q "Having a backing file for the target makes no sense" v.err; then
	pass "convert-several -B" "both exit 1: $V_ERR"
else
	fail "convert-several -B" "$V_ERR"
fi
"$VMHOST" img convert -O qcow2 -c cm1.qcow2 cm2.raw cmv.img >v.out 2>v.err && V_RC=0 || V_RC=$?
if [ "$V_RC" = 1 ] && [ ! -e cmv.img ] && grep -q "one source only" v.err; then
	pass "convert-several -c" "refused (qemu-img writes it): $(cat v.err)"
else
	fail "convert-several -c" "exit $V_RC: $(cat v.err)"
fi
rm -f cmq.img cmv.img

# ------------------------------------------------------------------ convert -l
# sl.qcow2: 1 MiB; 0x11 at 0 when 'one' (id 1) was taken by qemu-img;
# 0x22 at 0 and 0x23 at 512k when 'two' (id 2) was; then grown to 2 MiB,
# 0x33 at 0 and 1536k when 'three' (id 3) was taken by vmhost; then 0x44
# at 0. Each -l form: the same exit status and, converted to raw, the
# same bytes as qemu-img's (the image's current size, 2 MiB, also for the
# snapshots taken at 1 MiB); to qcow2, the same data and map.
qemu-img create -q -f qcow2 sl.qcow2 1M
qemu-io -c 'write -P 0x11 0 64k' sl.qcow2 >/dev/null
qemu-img snapshot -c one sl.qcow2
qemu-io -c 'write -P 0x22 0 64k' -c 'write -P 0x23 512k 64k' sl.qcow2 >/dev/null
qemu-img snapshot -c two sl.qcow2
qemu-img resize -q sl.qcow2 2M
qemu-io -c 'write -P 0x33 0 64k' -c 'write -P 0x33 1536k 64k' sl.qcow2 >/dev/null
"$VMHOST" img snapshot -c three sl.qcow2
qemu-io -c 'write -P 0x44 0 64k' sl.qcow2 >/dev/null
for spec in one 2 three 3 snapshot.name=one snapshot.id=2 snapshot.name=three \
	    snapshot.id=1,snapshot.name=one snapshot.id=1,snapshot.name=two nope snapshot.name=nope \
	    snapshot.id=one snapshot.foo=1; do
	for fmt in raw qcow2; do
		rm -f slq.img slv.img
		set +e
		qemu-img convert -O $fmt -l "$spec" sl.qcow2 slq.img >q.out 2>q.err
		Q_RC=$?
		"$VMHOST" img convert -O $fmt -l "$spec" sl.qcow2 slv.img >v.out 2>v.err
		V_RC=$?
		set -e
		Q_OUT=$(cat q.out) Q_ERR=$(cat q.err) V_OUT=$(cat v.out) V_ERR=$(cat v.err)
		same_rc "convert-l $spec $fmt" || continue
		if [ "$V_RC" != 0 ]; then
			if [ ! -e slv.img ]; then
				pass "convert-l $spec $fmt" "both exit $V_RC: $V_ERR"
			else
				fail "convert-l $spec $fmt" "exit $V_RC, but slv.img was written"
			fi
		elif { [ $fmt = qcow2 ] || cmp -s slq.img slv.img; } &&
		     qemu-img compare -q -s -f $fmt -F $fmt slq.img slv.img &&
		     diff <(qemu-img map --output=json -f $fmt slq.img | sed 's/, "offset.*//') \
			  <(qemu-img map --output=json -f $fmt slv.img | sed 's/, "offset.*//') >/dev/null; then
			pass "convert-l $spec $fmt" "exit 0, the same data and map as qemu-img's ($(stat -c %s slv.img) bytes)"
		else
			fail "convert-l $spec $fmt" "$(qemu-img compare -s -f $fmt -F $fmt slq.img slv.img 2>&1)"
		fi
	done
done
both convert -l one sl.qcow2 sl.qcow2 slv.img
if same_rc "convert-l several sources" && [ "$V_RC" = 1 ] && grep -q "No support for concatenating multiple snapshot" v.err; then
	pass "convert-l several sources" "both exit 1: $V_ERR"
else
	fail "convert-l several sources" "$V_ERR"
fi
qemu-img create -q -f raw slr.raw 1M
both convert -l one -f raw slr.raw slv.img
if same_rc "convert-l raw source" && [ "$V_RC" = 1 ]; then
	pass "convert-l raw source" "both exit 1: $V_ERR"
else
	fail "convert-l raw source" "$V_ERR"
fi
"$VMHOST" img snapshot -l sl.qcow2 >v.out
if qemu-img check -q sl.qcow2 && [ "$(grep -c '^[0-9]' v.out)" = 3 ]; then
	pass "convert-l source unchanged" "sl.qcow2 clean, 3 snapshots"
else
	fail "convert-l source unchanged" "$(qemu-img check sl.qcow2 2>&1; cat v.out)"
fi
rm -f slq.img slv.img slr.raw  # sl.qcow2 stays for convert -C

# ------------------------------------------------------------------ convert -C
# Copy offloading: refused with -c and -S (exit 1, qemu-img's words),
# taken with everything else; the output reads as qemu-img's.
for a in "" "-O qcow2" "-c -O qcow2" "-S 4k" "-S 0" "-B cn-src.qcow2 -F qcow2 -O qcow2" "-n" "-t none" \
	 "-l snapshot.name=one"; do
	rm -f ccq.img ccv.img
	fmt=raw src=cn-src.qcow2
	case " $a " in *" -O qcow2 "*) fmt=qcow2 ;; esac
	case " $a " in *" -n "*) truncate -s 1M ccq.img ccv.img ;; esac
	case " $a " in *" -l "*) src=sl.qcow2 ;; esac
	set +e
	# shellcheck disable=SC2086 # $a holds several arguments
	qemu-img convert -C $a "$src" ccq.img >q.out 2>q.err
	Q_RC=$?
	# shellcheck disable=SC2086
	"$VMHOST" img convert -C $a "$src" ccv.img >v.out 2>v.err
	V_RC=$?
	set -e
	Q_OUT=$(cat q.out) Q_ERR=$(cat q.err) V_OUT=$(cat v.out) V_ERR=$(cat v.err)
	same_rc "convert-C $a" || continue
	if [ "$V_RC" != 0 ]; then
		if [ "$V_ERR" = "vmhost: error: ${Q_ERR#qemu-img: }" ]; then
			pass "convert-C $a" "both exit $V_RC: $V_ERR"
		else
			fail "convert-C $a" "qemu-img: $Q_ERR; vmhost: $V_ERR"
		fi
	elif qemu-img compare -q -f $fmt -F $fmt ccq.img ccv.img; then
		pass "convert-C $a" "exit 0, reads as qemu-img's output"
	else
		fail "convert-C $a" "$(qemu-img compare -f $fmt -F $fmt ccq.img ccv.img 2>&1)"
	fi
done
rm -f ccq.img ccv.img sl.qcow2 cn-src.qcow2

# ------------------------------------------------------------------ -o help
# The same first line and exit status as qemu-img; every option line
# vmhost prints is one of qemu-img's, word for word (vmhost lists only
# the options it takes); no file written.
qemu-img create -q -f qcow2 oh-src.qcow2 1M
for a in "convert -O qcow2 -o help oh-src.qcow2 oh-dst.img" "convert -O qcow2 -o ? oh-src.qcow2 oh-dst.img" \
	 "convert -O qcow2 -o cluster_size=4k,help oh-src.qcow2 oh-dst.img" \
	 "convert -O raw -o help oh-src.qcow2 oh-dst.img" "convert -O qcow2 -o help" "convert -o help" \
	 "create -f qcow2 -o help" "create -f raw -o help" "create -f qcow2 -o help oh-dst.img 1M"; do
	rm -f oh-dst.img
	# shellcheck disable=SC2086 # $a holds several arguments
	both $a
	extra=$(grep -vxF -f q.out v.out | grep -v '^$' || true)
	if same_rc "o-help $a" && [ "$V_RC" = 0 ] && [ "$(head -1 q.out)" = "$(head -1 v.out)" ] &&
	   [ -z "$extra" ] && { [ "$(wc -l <v.out)" -gt 1 ] || [[ "$a" != *"-O qcow2"* && "$a" != *"-f qcow2"* ]]; } &&
	   [ ! -e oh-dst.img ]; then
		pass "o-help $a" "exit 0, '$(head -1 v.out)' and $(($(wc -l <v.out) - 1)) of qemu-img's lines"
	else
		fail "o-help $a" "not in qemu-img's list: $extra; vmhost: $V_OUT $V_ERR"
	fi
done
rm -f oh-src.qcow2 oh-dst.img

# ------------------------------------------------------------------ output
# Item 10 and 11: the text scripts parse and the files made, byte for byte.
# The verbs that only read run both tools on the same files in q/; those
# that write work in q/ (qemu-img) and in v/ (vmhost) on the same names,
# so nothing needs normalising: the names in the outputs are the same.
mkdir -p out/q out/v
cd out

# in_both CMD...: runs CMD (a shell command line, "IMG" standing for the
# tool: qemu-img, or vmhost img; "@D" for the tool's own directory, q or
# v) in q/, and with vmhost in v/ (in q/ too with READ_ONLY=1); stdout to
# ../X.out, stderr to ../X.err, the status in Q_RC and V_RC.
in_both() {
	local cmd=$1 vdir=v
	[ "${READ_ONLY:-0}" = 1 ] && vdir=q
	set +e
	local qcmd=${cmd//@D/q} vcmd=${cmd//@D/v}
	(cd q && eval "${qcmd//IMG/qemu-img}") >q.out 2>q.err
	Q_RC=$?
	(cd $vdir && eval "${vcmd//IMG/\"\$VMHOST\" img}") >v.out 2>v.err
	V_RC=$?
	set -e
	Q_OUT=$(cat q.out) Q_ERR=$(cat q.err) V_OUT=$(cat v.out) V_ERR=$(cat v.err)
}

# same_out CHECK WHAT: the same exit status and stdout, byte for byte.
same_out() {
	if same_rc "$1" && cmp -s q.out v.out; then
		pass "$1" "$2"
	else
		fail "$1" "stdout differs: $(diff q.out v.out | head -20 | tr '\n' '|')"
	fi
}

# The images: made by qemu-img (and qemu-io) in q/; v/ gets what the
# writing verbs need, made there the same way.
(
	cd q
	qemu-img create -q -f raw raw.img 3M
	qemu-io -f raw -c 'write -P 7 64k 1M' raw.img >/dev/null
	qemu-img create -q -f qcow2 v3.qcow2 64M
	qemu-io -c 'write -P 1 0 1M' -c 'write -z 8M 1M' v3.qcow2 >/dev/null
	qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 1G
	qemu-img create -q -f qcow2 -o cluster_size=4k,lazy_refcounts=on,refcount_bits=8,compression_type=zstd \
		small.qcow2 100M
	qemu-img create -q -f qcow2 -b v3.qcow2 -F qcow2 over.qcow2
	qemu-img create -q -f qcow2 -b raw.img -F raw over-raw.qcow2
	qemu-img create -q -f qcow2 -u -b gone.qcow2 -F qcow2 missing.qcow2 1M
	qemu-img create -q -f qcow2 'name é "x\.qcow2' 1M
	qemu-img create -q -f qcow2 snap.qcow2 16M
	qemu-io -c 'write -P 2 0 64k' snap.qcow2 >/dev/null
	qemu-img snapshot -c first snap.qcow2
	qemu-img snapshot -c second snap.qcow2
	# The dirty bit (incompatible feature bit 0) and the corrupt bit (1).
	cp v3.qcow2 dirty.qcow2
	printf '\001' | dd of=dirty.qcow2 bs=1 seek=79 conv=notrunc status=none
	cp v3.qcow2 corrupt.qcow2
	printf '\002' | dd of=corrupt.qcow2 bs=1 seek=79 conv=notrunc status=none
)
(cd v && qemu-img create -q -f qcow2 v3.qcow2 64M && qemu-img create -q -f raw raw.img 3M)

READ_ONLY=1
for f in raw.img v3.qcow2 v2.qcow2 small.qcow2 over.qcow2 over-raw.qcow2 missing.qcow2 \
	 'name é "x\.qcow2' snap.qcow2 dirty.qcow2 corrupt.qcow2; do
	qf=$(printf '%q' "$f")
	in_both "IMG info --output=json $qf"
	same_out "info-json $f" "byte for byte"
	in_both "IMG info $qf"
	same_out "info-human $f" "byte for byte"
	if [ "$f" != missing.qcow2 ]; then
		in_both "IMG info --output=json --backing-chain $qf"
		same_out "info-json-chain $f" "a JSON array, byte for byte"
		in_both "IMG info --backing-chain $qf"
		same_out "info-human-chain $f" "byte for byte"
	fi
done

for f in v3.qcow2 v2.qcow2 small.qcow2 over.qcow2 snap.qcow2; do
	in_both "IMG check --output=json $f"
	same_out "check-json $f" "byte for byte"
	in_both "IMG map --output=json $f"
	same_out "map-json $f" "byte for byte"
	in_both "IMG measure --output=json -O qcow2 $f"
	same_out "measure-json $f" "byte for byte"
done
in_both "IMG map --output=json raw.img"
same_out "map-json raw.img" "byte for byte"
in_both "IMG measure --output=json -O qcow2 --size 10G"
same_out "measure-json --size" "byte for byte"
READ_ONLY=0

# create: the "Formatting" line, and (item 11) the file, byte for byte.
for a in "-f raw" "-f raw -o preallocation=off" "-f raw -o preallocation=full" "-f qcow2" \
	 "-f qcow2 -o compat=0.10" "-f qcow2 -o compat=v3" "-f qcow2 -o lazy_refcounts=on,compat=1.1" \
	 "-f qcow2 -o lazy_refcounts=yes" "-f qcow2 -o preallocation=off" "-f qcow2 -o cluster_size=4k,refcount_bits=8" \
	 "-f qcow2 -o cluster_size=2M" "-f qcow2 -o cluster_size=512" "-f qcow2 -o cluster_size=8k,refcount_bits=1" \
	 "-f qcow2 -o refcount_bits=64" "-f qcow2 -o compression_type=zlib" "-f qcow2 -b v3.qcow2 -F qcow2" \
	 "-f qcow2 -o backing_file=raw.img,backing_fmt=raw" "-f qcow2 -u -b 'no, such.qcow2' -F qcow2"; do
	for size in 0 1M 64M 1000000000 100G 2T; do
		case "$a $size" in
		# 512-byte clusters: past one refcount block (see the docs); raw
		# and full preallocation: cmp would read gigabytes.
		*cluster_size=512*[GT] | *cluster_size=512*1000000000 | "-f raw"*[GT] | *preallocation=full*[GT]) continue ;;
		*preallocation=full*1000000000) continue ;;
		esac
		rm -f q/new.img v/new.img
		in_both "IMG create $a new.img $size"
		if ! same_rc "create $a $size"; then
			continue
		fi
		# All of stdout: the one line (vmhost printed an empty one after it).
		if ! cmp -s q.out v.out; then
			fail "create-line $a $size" "qemu-img: $(od -c q.out | tail -3); vmhost: $(od -c v.out | tail -3)"
		elif [ "$Q_RC" != 0 ]; then
			pass "create-line $a $size" "both exit $Q_RC"
		elif cmp -s q/new.img v/new.img; then
			pass "create $a $size" "the same first line, the same $(stat -c %s v/new.img) bytes"
		else
			fail "create $a $size" "files differ: $(cmp q/new.img v/new.img | head -1), sizes $(stat -c %s q/new.img v/new.img | tr '\n' ' ')"
		fi
	done
done
rm -f q/new.img v/new.img

# -p: the same progress lines as qemu-img (docs/qemu-img-compat.md lists
# where they still differ). Both on a pipe: stdout.
(cd q && qemu-img create -q -f qcow2 half.qcow2 64M && qemu-io -c 'write -P 5 0 32M' half.qcow2 >/dev/null)
(cd q && qemu-img create -q -f raw zero.raw 1M)
(
	cd q
	qemu-img create -q -f qcow2 full.qcow2 64M
	qemu-io -c 'write -P 1 0 64M' full.qcow2 >/dev/null
	qemu-img create -q -f qcow2 empty.qcow2 64M
	qemu-img create -q -f raw r8.raw 8M
	qemu-io -f raw -c 'write -P 1 0 64k' r8.raw >/dev/null
	qemu-img create -q -f qcow2 mixed.qcow2 64M
	qemu-io -c 'write -P 5 0 32M' -c 'write -P 6 40M 3M' -c 'write -z 50M 1M' -c 'write -P 7 61M 100k' mixed.qcow2 >/dev/null
	qemu-img snapshot -c sn mixed.qcow2
	qemu-io -c 'write -P 9 0 60M' mixed.qcow2 >/dev/null
	qemu-img create -q -f qcow2 -b mixed.qcow2 -F qcow2 pov.qcow2
	qemu-io -c 'write -P 8 10M 5M' pov.qcow2 >/dev/null
	qemu-img create -q -f qcow2 -o cluster_size=4k s4.qcow2 16M
	qemu-io -c 'write -P 1 1k 3k' -c 'write -P 2 100k 1M' s4.qcow2 >/dev/null
)
for d in q v; do qemu-img create -q -f raw $d/n.raw 80M; done
for c in "convert -p -O qcow2 half.qcow2 ../@D/p.qcow2" "convert -p -O raw zero.raw ../@D/p.raw" \
	 "convert -p -O raw full.qcow2 ../@D/p.raw" "convert -p -O qcow2 full.qcow2 ../@D/p.qcow2" \
	 "convert -p -O raw empty.qcow2 ../@D/p.raw" "convert -p -f raw -O raw r8.raw ../@D/p.raw" \
	 "convert -p -f raw -O qcow2 r8.raw ../@D/p.qcow2" "convert -p -O raw mixed.qcow2 ../@D/p.raw" \
	 "convert -p -S 0 -O raw mixed.qcow2 ../@D/p.raw" "convert -p -c -O qcow2 mixed.qcow2 ../@D/p.qcow2" \
	 "convert -p -c -O qcow2 -o cluster_size=4k s4.qcow2 ../@D/p.qcow2" "convert -p -O raw s4.qcow2 ../@D/p.raw" \
	 "convert -p -O raw pov.qcow2 ../@D/p.raw" "convert -p -l sn -O raw mixed.qcow2 ../@D/p.raw" \
	 "convert -p -O raw mixed.qcow2 r8.raw full.qcow2 ../@D/p.raw" "convert -p -n -O raw s4.qcow2 mixed.qcow2 ../@D/n.raw" \
	 "convert -p -O raw nx.qcow2 ../@D/p.raw" \
	 "compare -p v3.qcow2 v3.qcow2" "compare -p half.qcow2 half.qcow2" "compare -p half.qcow2 full.qcow2" \
	 "compare -p full.qcow2 mixed.qcow2" "compare -p empty.qcow2 zero.raw" "compare -p zero.raw empty.qcow2" \
	 "compare -p -s empty.qcow2 zero.raw" "compare -p r8.raw empty.qcow2" "compare -p mixed.qcow2 mixed.qcow2"; do
	rm -f q/p.qcow2 v/p.qcow2 q/p.raw v/p.raw
	READ_ONLY=1 in_both "IMG $c"
	same_out "progress $c" "$(tr '\r' '\n' <v.out | grep -c /100%) lines, byte for byte"
done
# rebase onto a new empty base of an overlay that holds nothing: a step per 2 MiB.
for d in q v; do
	(cd $d && qemu-img create -q -f qcow2 b1.qcow2 64M && qemu-img create -q -f qcow2 b2.qcow2 64M &&
		qemu-img create -q -f qcow2 -b b1.qcow2 -F qcow2 ov.qcow2)
done
in_both "IMG rebase -p -b b2.qcow2 -F qcow2 ov.qcow2"
same_out "progress rebase -p" "$(tr '\r' '\n' <v.out | grep -c /100%) lines, byte for byte"
# rebase over overlays that hold data (qemu-img takes no step there),
# backing files shorter than the overlay, -u, a failure.
for c in "-u -b b2.qcow2 -F qcow2|" "-b b2.qcow2 -F qcow2|write -P 2 4M 10M" \
	 "-b b2.qcow2 -F qcow2|write -P 2 5M 1M;write -P 3 33M 100k" "-b b3.qcow2 -F qcow2|write -P 4 1M 1M" \
	 "-b ''|write -P 5 60M 4M" "-b nx.qcow2 -F qcow2|"; do
	args=${c%%|*} writes=${c#*|}
	for d in q v; do
		(cd $d && rm -f ov.qcow2 b3.qcow2 && qemu-io -c 'write -P 1 0 8M' b1.qcow2 >/dev/null &&
			qemu-img create -q -f qcow2 b3.qcow2 20M &&
			qemu-img create -q -f qcow2 -b b1.qcow2 -F qcow2 ov.qcow2 100M)
		IFS=';' read -ra ws <<<"$writes"
		for w in "${ws[@]}"; do [ -n "$w" ] && qemu-io -c "$w" $d/ov.qcow2 >/dev/null; done
	done
	in_both "IMG rebase -p $args ov.qcow2"
	same_out "progress rebase -p $args ($writes)" "exit $V_RC, $(tr '\r' '\n' <v.out | grep -c /100%) lines, byte for byte"
done

# ------------------------------------------------------------ remaining
# The options issue 15's first pass left different (docs: the table).
mkdir -p q/r v/r
for d in q v; do
	(cd $d/r && qemu-img create -q -f qcow2 src.qcow2 8M && qemu-io -c 'write -P 3 0 2M' src.qcow2 >/dev/null &&
		qemu-img snapshot -c one src.qcow2 && qemu-io -c 'write -P 4 2M 4M' src.qcow2 >/dev/null &&
		qemu-img create -q -f qcow2 b1.qcow2 8M && qemu-io -c 'write -P 5 1M 2M' b1.qcow2 >/dev/null &&
		qemu-img create -q -f qcow2 b2.qcow2 8M &&
		qemu-img create -q -f qcow2 -b b1.qcow2 -F qcow2 ov.qcow2 && qemu-img create -q -f qcow2 -b b1.qcow2 -F qcow2 ov2.qcow2 &&
		qemu-img create -q -f raw z.raw 8M && qemu-io -f raw -c 'write -P 9 0 8M' z.raw >/dev/null)
done
# rc_same CHECK CMD: the same exit status from both tools (in q/r, v/r).
rc_same() {
	in_both "cd r && $2"
	if same_rc "$1"; then
		pass "$1" "both exit $V_RC"
	fi
}
# A bad -o exits 1 in qemu-img, whatever is wrong with it.
for o in foo=bar novalue compat=9 cluster_size=3 lazy_refcounts=maybe refcount_bits=3; do
	rm -f q/r/o.img v/r/o.img
	rc_same "o-bad create $o" "IMG create -q -f qcow2 -o $o o.img 1M"
	rc_same "o-bad convert $o" "IMG convert -O qcow2 -o $o src.qcow2 o.img"
done
rc_same "o-bad raw cluster_size" "IMG create -q -f raw -o cluster_size=4k o.img 1M"
rc_same "o-bad convert raw cluster_size" "IMG convert -O raw -o cluster_size=4k src.qcow2 o.img"
# snapshot without an action: the image opened for writing, nothing done.
cp q/r/src.qcow2 q/r/before.qcow2
cp v/r/src.qcow2 v/r/before.qcow2
rc_same "snapshot no-action" "IMG snapshot src.qcow2"
if cmp -s q/r/src.qcow2 q/r/before.qcow2 && cmp -s v/r/src.qcow2 v/r/before.qcow2; then
	pass "snapshot no-action unchanged" "both files as they were"
else
	fail "snapshot no-action unchanged" "a file changed: $(cmp q/r/src.qcow2 q/r/before.qcow2) $(cmp v/r/src.qcow2 v/r/before.qcow2)"
fi
rc_same "snapshot no-action missing" "IMG snapshot nx.qcow2"
rc_same "snapshot no-action -U" "IMG snapshot -U src.qcow2"
rc_same "snapshot two actions" "IMG snapshot -l -c x src.qcow2"
# rebase -U: qemu-img shares only the backing files; both change the image.
rc_same "rebase -U safe" "IMG rebase -q -U -b b2.qcow2 -F qcow2 ov.qcow2"
rc_same "rebase -U unsafe" "IMG rebase -q -U -u -b '' ov2.qcow2"
if qemu-img compare -q q/r/ov.qcow2 v/r/ov.qcow2 && qemu-img compare -q q/r/b1.qcow2 v/r/ov.qcow2 &&
   [ "$(qemu-img info q/r/ov2.qcow2 | grep -c backing)" = 0 ] && [ "$(qemu-img info v/r/ov2.qcow2 | grep -c backing)" = 0 ]; then
	pass "rebase -U data" "the same data as qemu-img's (and as before), -b '' recorded"
else
	fail "rebase -U data" "$(qemu-img compare q/r/ov.qcow2 v/r/ov.qcow2 2>&1)"
fi
# -T SRC_CACHE: the modes qemu-img takes (O_DIRECT ones left out: the
# test directory may be on tmpfs), and its exit status for a bad one.
for t in writeback writethrough unsafe foo; do
	rc_same "-T $t check" "IMG check -q -T $t src.qcow2"
	rc_same "-T $t compare" "IMG compare -q -T $t src.qcow2 src.qcow2"
	rm -f q/r/t.raw v/r/t.raw
	rc_same "-T $t convert" "IMG convert -T $t -O raw src.qcow2 t.raw"
	rc_same "-T $t rebase" "IMG rebase -q -u -T $t -b b1.qcow2 -F qcow2 ov2.qcow2"
done
# convert -m, -W, -r, --target-is-zero: accepted and refused as qemu-img.
for a in "-m 1" "-m 16" "-m 0" "-m 17" "-m x" "-W" "-W -m 4" "-r 0" "-r 1G" "-r x" "--target-is-zero"; do
	rm -f q/r/m.raw v/r/m.raw
	rc_same "convert $a" "IMG convert $a -O raw src.qcow2 m.raw"
	if [ "$V_RC" = 0 ] && ! qemu-img compare -q -f raw -F qcow2 v/r/m.raw v/r/src.qcow2; then
		fail "convert $a data" "the output differs from the source"
	fi
done
# --target-is-zero -n: zeros of the source are not written (a target that
# is not zero keeps its data there, in both tools: the caller's word).
for d in q v; do qemu-img create -q -f qcow2 $d/r/tz.qcow2 8M && qemu-io -c 'write -P 8 6M 1M' $d/r/tz.qcow2 >/dev/null; done
rc_same "convert -n --target-is-zero" "IMG convert -n --target-is-zero -O qcow2 src.qcow2 tz.qcow2"
if qemu-img compare -q q/r/tz.qcow2 v/r/tz.qcow2 && qemu-io -c 'read -P 8 6M 1M' v/r/tz.qcow2 | grep -q 'read 1048576'; then
	pass "convert -n --target-is-zero data" "the same data as qemu-img's, the target's old data left where the source has zeros"
else
	fail "convert -n --target-is-zero data" "$(qemu-img compare q/r/tz.qcow2 v/r/tz.qcow2 2>&1)"
fi
# -r RATE: 8 MiB at 4 MiB/s takes about 2 s, in both tools (each timed
# alone, on its own fresh files).
for t in "convert -r 4M -O raw z.raw rate.raw" "commit -q -r 4M ov.qcow2"; do
	declare -A ms=() rcs=()
	for d in q v; do
		rm -f $d/r/rate.raw
		(cd $d/r && qemu-img create -q -f qcow2 -b z.raw -F raw ov.qcow2 && qemu-io -c 'write -P 6 0 8M' ov.qcow2 >/dev/null)
		tool="qemu-img"
		[ $d = v ] && tool="$VMHOST img"
		s0=$(date +%s%N)
		set +e
		(cd $d/r && $tool $t >/dev/null 2>&1)
		rcs[$d]=$?
		set -e
		ms[$d]=$(( ($(date +%s%N) - s0) / 1000000 ))
	done
	if [ "${rcs[q]}" = 0 ] && [ "${rcs[v]}" = 0 ] && [ "${ms[v]}" -ge 1500 ] && [ "${ms[v]}" -le 6000 ]; then
		pass "rate $t" "both exit 0; qemu-img took ${ms[q]} ms, vmhost ${ms[v]} ms"
	else
		fail "rate $t" "exit qemu-img ${rcs[q]}, vmhost ${rcs[v]}; qemu-img took ${ms[q]} ms, vmhost ${ms[v]} ms"
	fi
	unset ms rcs
done
rc_same "commit -r x" "IMG commit -r x ov.qcow2"
# measure -l: the snapshot's data, not the active state's.
for l in one 1 snapshot.name=one snapshot.id=1 snapshot.id=1,snapshot.name=one nx snapshot.foo=1; do
	READ_ONLY=1 in_both "cd r && IMG measure -O qcow2 --output=json -l $l src.qcow2"
	same_out "measure -l $l" "byte for byte"
done
READ_ONLY=1 in_both "cd r && IMG measure -O qcow2 -l one --size 1M"
same_rc "measure -l --size" && pass "measure -l --size" "both exit $V_RC"

# --version: exit 0 and qemu-img's first-line shape, the version third.
set +e
ver=$("$VMHOST" img --version)
rc=$?
set -e
own=$("$VMHOST" --version | awk '{print $2}')
if [ "$rc" = 0 ] && [[ "$(head -1 <<<"$ver")" =~ ^vmhost-img\ version\ [0-9]+\.[0-9]+\.[0-9]+\ \(qemu-img\ 7\.2\ compatible\)$ ]] &&
   [ "$(awk 'NR==1 {print $3}' <<<"$ver")" = "$own" ] && [ "$("$VMHOST" img -V)" = "$ver" ]; then
	pass "version" "exit 0, '$ver'"
else
	fail "version" "exit $rc, '$ver' (vmhost $own)"
fi
cd ..
rm -rf out

e2e_finish
