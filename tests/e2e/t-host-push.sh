#!/bin/bash
# tests/e2e/t-host-push.sh: 'vmhost img push' to host B over real OpenSSH.
# B is a network namespace with its own sshd in a private mount namespace
# (/var/lib/vmhost, /run/vmhost and /root are B's own): what B holds, it
# got over ssh, and this side reads it only through $W/state, the bind
# source of B's /var/lib/vmhost. Checks: a 2 GiB raw image with ~30% data
# sends about its allocated size (the stream's own count, and the veth's
# transmitted bytes measured independently), arrives byte-identical,
# sparse, read-only, with sidecars holding the tree hash (computed here in
# Python from its definition); a 128 GiB image with data after a 120 GiB
# hole pushes (the hash costs nothing for holes); a second push,
# also under another name, is a no-op in under a second; another image
# under a taken name is refused; a push killed on either end leaves
# nothing under the name and the next one completes (and removes the
# stale temporary file); a record damaged in transit (through the
# test-only --test-corrupt-in-transit hook: nothing else here can damage
# bytes inside ssh) is caught by the hash; two pushes of one image at
# once both succeed; a qcow2 chain arrives backing
# first, its backing name rewritten as B sees it, and B's qemu-img
# resolves the chain.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init host-push
need ip unshare ssh ssh-keygen python3 qemu-img qemu-io sha256sum
VMHOST=${VMHOST:-$ROOT/build/src/cli/vmhost}
[ -x "$VMHOST" ] || { fail vmhost-built "$VMHOST is not built"; e2e_finish; }
VMHOST=$(readlink -f "$VMHOST")

# Host B (tests/e2e/lib-hosts.sh): its own namespace, sshd and state.
source "$HERE/lib-hosts.sh"
trap 'hosts_cleanup; e2e_cleanup' EXIT
hosts_init
host_new b || e2e_finish
host_add b >"$E2E_TMP/add.txt" 2>&1 || { fail "host add" "$(cat "$E2E_TMP/add.txt")"; e2e_finish; }
W=$(host_dir b) B=$(host_ip b) NS=$(host_ns b) KEY=$HOSTS_KEY
VA=vhh$$-${HOSTS_INDEX[b]}  # B's veth, this side's end
# on_b CMD...: CMD run on B, over a plain ssh (not vmhost's transport).
on_b() {
	ssh -o BatchMode=yes -o UserKnownHostsFile="$VMHOST_HOME/hosts/b.known_hosts" -o StrictHostKeyChecking=yes \
		-i "$KEY" "root@$B" "$@"
}

cd "$E2E_TMP"
BI=$W/state/images          # B's /var/lib/vmhost/images, read from here
tx() { cat "/sys/class/net/$VA/statistics/tx_bytes"; }
alloc() { echo $(($(stat -c %b "$1") * 512)); }
# tree_hash FILE: vmhost-sha256-tree-1m (docs/hosts.md) computed here from its definition.
tree_hash() {
	python3 - "$1" <<'EOP'
import hashlib, os, struct, sys
f = open(sys.argv[1], "rb"); size = os.fstat(f.fileno()).st_size
h = hashlib.sha256(b"vmhost-sha256-tree-1m\n" + struct.pack(">Q", size))
zero = hashlib.sha256(bytes(1 << 20)).digest()
off = 0
while off < size:
    n = min(1 << 20, size - off)
    try:
        d = os.lseek(f.fileno(), off, os.SEEK_DATA)
    except OSError:
        d = size
    if d >= off + n and n == 1 << 20:
        h.update(zero)
    else:
        f.seek(off); h.update(hashlib.sha256(f.read(n)).digest())
    off += n
print(h.hexdigest())
EOP
}
# sidecar_hash FILE: the hash= of FILE's sidecar.
sidecar_hash() { sed -n 's/^hash=//p' "$1.vmhost-hash" 2>/dev/null; }
jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$@"; }

# --- a 2 GiB raw image, ~30% data: 38 extents of 16 MiB, half random, half text
mkdir -p img
python3 - img/big.raw <<'EOP'
import os, sys
f = open(sys.argv[1], "wb"); f.truncate(2 << 30)
text = (b"vmhost pushes base images to hosts, once.\n" * 400000)[: 16 << 20]
for i in range(38):
    f.seek(i * 53 << 20)
    f.write(os.urandom(16 << 20) if i % 2 else text)
f.close()
EOP
ALLOC=$(alloc img/big.raw)
tx0=$(tx)
rc=0
"$VMHOST" img push --json img/big.raw b >push1.json 2>push1.err || rc=$?
tx1=$(tx)
if [ $rc -eq 0 ]; then
	wire=$(jget push1.json 'd["wire-bytes"]')
	data=$(jget push1.json 'd["data-bytes"]')
	rpath=$(jget push1.json 'd["files"][0]["remote-path"]')
	secs=$(jget push1.json 'd["seconds"]')
	# Close to the allocated size: never more (plus framing), and the
	# random half alone is incompressible.
	if [ "$data" -le "$ALLOC" ] && [ "$wire" -le $((ALLOC + ALLOC / 50)) ] && [ "$wire" -ge $((ALLOC * 45 / 100)) ] &&
		[ "$rpath" = /var/lib/vmhost/images/big.raw ]; then
		pass "push of 2 GiB / 30% allocated: stream close to allocated" \
			"allocated $ALLOC, data $data, stream $wire bytes, $secs s"
	else
		fail "push of 2 GiB: stream close to allocated" "allocated $ALLOC data $data wire $wire path $rpath"
	fi
	# Measured apart from vmhost: what left this side's veth (ssh and TCP overhead included).
	veth=$((tx1 - tx0))
	if [ "$veth" -le $((ALLOC + ALLOC / 10)) ] && [ "$veth" -ge $((wire * 95 / 100)) ]; then
		pass "bytes on the veth close to the stream" "veth tx $veth bytes, stream $wire, allocated $ALLOC"
	else
		fail "bytes on the veth close to the stream" "veth tx $veth, stream $wire, allocated $ALLOC"
	fi
else
	fail "push of 2 GiB" "exit $rc: $(cat push1.err)"
fi
lsum=$(sha256sum <img/big.raw | cut -d' ' -f1)
rsum=$(sha256sum <"$BI/big.raw" 2>/dev/null | cut -d' ' -f1 || true)
ralloc=$(alloc "$BI/big.raw" 2>/dev/null || echo 0)
mode=$(stat -c %a "$BI/big.raw" 2>/dev/null || echo none)
ltree=$(tree_hash img/big.raw)
if [ "$lsum" = "$rsum" ] && [ "$ralloc" -le $((ALLOC + ALLOC / 20)) ] && [ "$mode" = 444 ] &&
	[ "$(sidecar_hash img/big.raw)" = "$ltree" ] && [ "$(sidecar_hash "$BI/big.raw")" = "$ltree" ] &&
	grep -q "^algorithm=vmhost-sha256-tree-1m$" "$BI/big.raw.vmhost-hash"; then
	pass "B's copy byte-identical, sparse, read-only, sidecar checks" "allocated there $ralloc"
else
	fail "B's copy byte-identical" "sha $lsum vs $rsum, allocated $ralloc vs $ALLOC, mode $mode"
fi
[ -z "$(ls -A "$BI" | grep push- || true)" ] && pass "no temporary file left" || fail "no temporary file left" "$(ls -a "$BI")"

# --- second push: nothing to do, in under a second; under another name too
t0=$(e2e_now)
rc=0
"$VMHOST" img push --json img/big.raw b >push2.json 2>push2.err || rc=$?
t1=$(e2e_now)
dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
if [ $rc -eq 0 ] && [ "$(jget push2.json 'd["files"][0]["sent"]')" = False ] &&
	[ "$(jget push2.json 'd["wire-bytes"]')" = 0 ] && awk -v d="$dt" 'BEGIN { exit !(d < 1.0) }'; then
	pass "second push a no-op" "$dt s"
else
	fail "second push a no-op" "exit $rc, $dt s: $(cat push2.json push2.err)"
fi
ln img/big.raw img/same-bytes.raw
"$VMHOST" img push img/same-bytes.raw b >/dev/null 2>push3.err || true   # computes its sidecar here
t0=$(e2e_now)
rc=0
"$VMHOST" img push img/same-bytes.raw b >push3.txt 2>&1 || rc=$?
t1=$(e2e_now)
dt=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
if [ $rc -eq 0 ] && grep -q "already: /var/lib/vmhost/images/big.raw" push3.txt && [ ! -e "$BI/same-bytes.raw" ] &&
	awk -v d="$dt" 'BEGIN { exit !(d < 1.0) }'; then
	pass "same content under another name found by hash" "$dt s: $(cat push3.txt)"
else
	fail "same content under another name found by hash" "exit $rc, $dt s: $(cat push3.err push3.txt)"
fi

# --- the same name with other content: refused, B's file untouched
mkdir -p other
head -c 1M /dev/urandom >other/big.raw
rc=0
"$VMHOST" img push other/big.raw b >refuse.txt 2>&1 || rc=$?
rsum2=$(sha256sum <"$BI/big.raw" | cut -d' ' -f1)
[ $rc -eq 3 ] && grep -q "holds another image" refuse.txt && [ "$rsum2" = "$lsum" ] &&
	pass "another image under a taken name refused" "$(tail -1 refuse.txt)" ||
	fail "another image under a taken name refused" "exit $rc: $(cat refuse.txt)"

# --- a sparse image with a big hole, then data, then a hole: the identity
# costs nothing for holes on either side (with the plain SHA-256 the far
# side hashed the 120 GiB gap before reading on, and the sender gave up
# after 30 s of no progress), and the push sends about the data.
python3 - img/holey.raw <<'EOP'
import os, sys
f = open(sys.argv[1], "wb"); f.truncate(128 << 30)
f.seek(120 << 30); f.write(os.urandom(1 << 20)); f.close()
EOP
rc=0
"$VMHOST" img push --json img/holey.raw b >holey.json 2>holey.err || rc=$?
if [ $rc -eq 0 ] && [ "$(jget holey.json 'd["wire-bytes"]')" -lt $((2 << 20)) ] &&
	[ "$(stat -c %s "$BI/holey.raw" 2>/dev/null)" = $((128 << 30)) ] &&
	[ "$(sidecar_hash "$BI/holey.raw")" = "$(tree_hash img/holey.raw)" ] &&
	cmp -s <(tail -c +$(((120 << 30) + 1)) img/holey.raw | head -c 1M) <(tail -c +$(((120 << 30) + 1)) "$BI/holey.raw" | head -c 1M); then
	pass "128 GiB sparse image, data after a 120 GiB hole, pushed" "$(jget holey.json 'd["seconds"]') s"
else
	fail "128 GiB sparse image with a big hole" "exit $rc: $(cat holey.err)"
fi
rm -f img/holey.raw img/holey.raw.vmhost-hash

# --- interrupted pushes. A slow link makes a push last long enough to be
# killed in the middle (the kills wait for the temporary file to grow,
# not for a time).
slow=0
tc qdisc add dev "$VA" root tbf rate 160mbit burst 64kb latency 500ms 2>/dev/null && slow=1
head -c $((slow ? 192 : 1024))M /dev/urandom >img/mid.raw
grow() { local f; for f in "$BI"/.mid.raw.push-*; do [ -f "$f" ] && [ "$(alloc "$f")" -gt $((8 << 20)) ] && return 0; done; return 1; }
"$VMHOST" img push --no-compress img/mid.raw b >kill1.txt 2>&1 &
pid=$!
wait_until 60 "a growing temporary file on B" grow
kill -9 $pid
wait $pid 2>/dev/null || true
# The receiver sees its stdin end and removes its file.
wait_until 20 "B's receiver to clean up" bash -c "! ls '$BI'/.mid.raw.push-* >/dev/null 2>&1"
[ ! -e "$BI/mid.raw" ] && pass "local vmhost killed mid-push: nothing under the name" ||
	fail "local vmhost killed mid-push" "$(ls -la "$BI")"

"$VMHOST" img push --no-compress img/mid.raw b >kill2.txt 2>&1 &
pid=$!
wait_until 60 "a growing temporary file on B" grow
rpid=
for p in $(ip netns pids "$NS"); do
	tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q "img receive" && rpid=$p
done
[ -n "$rpid" ] && kill -9 "$rpid"
rc=0
wait $pid || rc=$?
stale=$(ls "$BI"/.mid.raw.push-* 2>/dev/null | wc -l)
if [ -n "$rpid" ] && [ $rc -ne 0 ] && [ ! -e "$BI/mid.raw" ] && [ "$stale" -eq 1 ] && grep -q "died or the link was cut" kill2.txt; then
	pass "remote receiver killed: the push fails naming the host, nothing under the name" "$(tail -1 kill2.txt)"
else
	fail "remote receiver killed" "receiver pid '$rpid', exit $rc, stale temps $stale: $(cat kill2.txt)"
fi
# The link cut mid-push (B's veth down: no FIN, no RST): the keepalives
# end the push, naming the host; nothing is under the name on B, and once
# the link is back the next push completes. (B's receiver may outlive the
# cut until its side of the connection notices; its temporary file is
# never the final name.)
head -c $((slow ? 192 : 1024))M /dev/urandom >img/cut.raw
growc() { local f; for f in "$BI"/.cut.raw.push-*; do [ -f "$f" ] && [ "$(alloc "$f")" -gt $((8 << 20)) ] && return 0; done; return 1; }
"$VMHOST" img push --no-compress img/cut.raw b >cut.txt 2>&1 &
pid=$!
wait_until 60 "a growing temporary file on B" growc
ip link set "$VA" down
t0=$(e2e_now)
rc=0
wait $pid || rc=$?
dt=$(e2e_elapsed "$t0")
ip link set "$VA" up
if [ $rc -ne 0 ] && [ ! -e "$BI/cut.raw" ] && grep -q "host 'b'\|host b" cut.txt && awk -v d="$dt" 'BEGIN { exit !(d < 20) }'; then
	pass "link cut mid-push: the push fails naming the host, nothing under the name" "$dt s: $(tail -1 cut.txt)"
else
	fail "link cut mid-push" "exit $rc after $dt s: $(cat cut.txt); $(ls -a "$BI")"
fi
wait_until 10 "B reachable again" bash -c "exec 3<>/dev/tcp/$B/22" 2>/dev/null
rc=0
"$VMHOST" img push -q img/cut.raw b >cut2.txt 2>&1 || rc=$?
[ $rc -eq 0 ] && [ "$(sha256sum <"$BI/cut.raw" | cut -d' ' -f1)" = "$(sha256sum <img/cut.raw | cut -d' ' -f1)" ] &&
	pass "after the cut, the next push completes" || fail "after the cut, the next push completes" "exit $rc: $(cat cut2.txt)"
[ $slow -eq 1 ] && tc qdisc del dev "$VA" root
rc=0
"$VMHOST" img push img/mid.raw b >again.txt 2>&1 || rc=$?
msum=$(sha256sum <img/mid.raw | cut -d' ' -f1)
if [ $rc -eq 0 ] && [ "$(sha256sum <"$BI/mid.raw" | cut -d' ' -f1)" = "$msum" ] &&
	! ls "$BI"/.mid.raw.push-* >/dev/null 2>&1; then
	pass "the next push completes and removes the stale temporary file"
else
	fail "the next push completes" "exit $rc: $(cat again.txt); $(ls -a "$BI")"
fi

# --- damaged in transit (test hook): the far side's hash check catches it
head -c 3M /dev/urandom >img/dmg.raw
rc=0
"$VMHOST" img push --test-corrupt-in-transit img/dmg.raw b >dmg.txt 2>&1 || rc=$?
if [ $rc -ne 0 ] && grep -q "damaged in transit" dmg.txt && [ ! -e "$BI/dmg.raw" ] &&
	! ls "$BI"/.dmg.raw.push-* >/dev/null 2>&1; then
	pass "hash mismatch detected, nothing kept" "$(tail -1 dmg.txt)"
else
	fail "hash mismatch detected" "exit $rc: $(cat dmg.txt); $(ls -a "$BI")"
fi

# --- two pushes of one image to one host at once: both succeed (the one
# that renames second finds the same content under the name; the one whose
# far side answers 'present' without reading on takes that answer).
head -c 256M /dev/urandom >img/twice.raw
"$VMHOST" img push -q img/twice.raw b >twice1.txt 2>&1 & p1=$!
"$VMHOST" img push -q img/twice.raw b >twice2.txt 2>&1 & p2=$!
r1=0 r2=0
wait $p1 || r1=$?
wait $p2 || r2=$?
if [ $r1 -eq 0 ] && [ $r2 -eq 0 ] && [ "$(sidecar_hash "$BI/twice.raw")" = "$(tree_hash img/twice.raw)" ] &&
	cmp -s img/twice.raw "$BI/twice.raw" && ! ls "$BI"/.twice.raw.push-* >/dev/null 2>&1; then
	pass "two pushes of one image at once both succeed"
else
	fail "two pushes of one image at once" "exit $r1 and $r2: $(cat twice1.txt twice2.txt); $(ls -a "$BI")"
fi

# --- a qcow2 chain: backing first, its name rewritten as B sees it
mkdir -p chain/lower
qemu-img create -q -f qcow2 chain/lower/base.qcow2 256M
qemu-io -f qcow2 -c "write -P 0x5a 0 8M" -c "write -P 0x33 100M 4M" chain/lower/base.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b "$E2E_TMP/chain/lower/base.qcow2" -F qcow2 chain/ov.qcow2
qemu-io -f qcow2 -c "write -P 0x77 4M 2M" chain/ov.qcow2 >/dev/null
rc=0
"$VMHOST" img push --json chain/ov.qcow2 b >chain.json 2>chain.err || rc=$?
info=$(on_b qemu-img info --backing-chain --output=json /var/lib/vmhost/images/ov.qcow2 2>&1 || true)
if [ $rc -eq 0 ] && [ "$(jget chain.json '[f["remote-path"] for f in d["files"]]')" = \
	"['/var/lib/vmhost/images/base.qcow2', '/var/lib/vmhost/images/ov.qcow2']" ] &&
	python3 -c 'import json,sys
c = json.loads(sys.argv[1])
assert len(c) == 2 and c[0]["backing-filename"] == "base.qcow2", c
assert c[0]["full-backing-filename"] == "/var/lib/vmhost/images/base.qcow2", c' "$info" &&
	qemu-img compare -q chain/ov.qcow2 "$BI/ov.qcow2" &&
	[ "$(sed -n 's/^origin=//p' "$BI/ov.qcow2.vmhost-hash")" = "$(tree_hash chain/ov.qcow2)" ] &&
	[ "$(sidecar_hash "$BI/ov.qcow2")" = "$(tree_hash "$BI/ov.qcow2")" ] &&
	[ "$(sidecar_hash "$BI/base.qcow2")" = "$(tree_hash chain/lower/base.qcow2)" ]; then
	pass "qcow2 chain pushed backing first, B's qemu-img resolves it" "backing name base.qcow2"
else
	fail "qcow2 chain" "exit $rc: $(cat chain.json chain.err); B: $info"
fi
rc=0
"$VMHOST" img push --json chain/ov.qcow2 b >chain2.json 2>&1 || rc=$?
[ $rc -eq 0 ] && [ "$(jget chain2.json '[f["sent"] for f in d["files"]]')" = "[False, False]" ] &&
	pass "second push of the chain a no-op (the overlay found by its origin hash)" ||
	fail "second push of the chain a no-op" "exit $rc: $(cat chain2.json)"
# B's copy of the overlay is not the bytes pushed (its backing name was
# rewritten): with its sidecar lost, the origin kept on the file still
# makes the next push a no-op rather than "another image under that name".
rm -f "$BI/ov.qcow2.vmhost-hash"
rc=0
"$VMHOST" img push --json chain/ov.qcow2 b >chain3.json 2>&1 || rc=$?
[ $rc -eq 0 ] && [ "$(jget chain3.json '[f["sent"] for f in d["files"]]')" = "[False, False]" ] &&
	grep -q '^origin=' "$BI/ov.qcow2.vmhost-hash" &&
	pass "the overlay's sidecar lost on B: still found by its origin" ||
	fail "the overlay's sidecar lost on B" "exit $rc: $(cat chain3.json); $(cat "$BI/ov.qcow2.vmhost-hash" 2>&1)"

# --- a raw disk whose guest wrote a qcow2 header naming a local file: not
# followed without -f (it would send that file), pushed as raw with -f raw
mkdir -p secret sneaky
echo "a local secret" >secret/key.txt
qemu-img create -q -f qcow2 -b "$E2E_TMP/secret/key.txt" -F raw sneaky/disk.raw 64M
rc=0
"$VMHOST" img push sneaky/disk.raw b >sneaky.txt 2>&1 || rc=$?
if [ $rc -ne 0 ] && grep -q "only probed" sneaky.txt && grep -q -- "-f raw" sneaky.txt && [ ! -e "$BI/key.txt" ] &&
	[ ! -e "$BI/disk.raw" ]; then
	pass "a probed qcow2 header naming a file outside its directory: refused" "$(tail -1 sneaky.txt)"
else
	fail "a probed qcow2 header naming a file outside its directory" "exit $rc: $(cat sneaky.txt); $(ls "$BI")"
fi
rc=0
"$VMHOST" img push --json -f raw sneaky/disk.raw b >sneaky.json 2>&1 || rc=$?
if [ $rc -eq 0 ] && [ "$(jget sneaky.json 'len(d["files"])')" = 1 ] && cmp -s sneaky/disk.raw "$BI/disk.raw" &&
	[ ! -e "$BI/key.txt" ]; then
	pass "-f raw pushes it as the one raw file it is"
else
	fail "-f raw pushes it as raw" "exit $rc: $(cat sneaky.json); $(ls "$BI")"
fi

# --- a chain whose layers share a file name: the backing one gets a hash
# suffix there (its overlay's backing name is rewritten to it); --name
# names the top
mkdir -p c1 c2
qemu-img create -q -f qcow2 c1/disk.qcow2 32M
qemu-io -f qcow2 -c "write -P 0x21 0 1M" c1/disk.qcow2 >/dev/null
qemu-img create -q -f qcow2 -b "$E2E_TMP/c1/disk.qcow2" -F qcow2 c2/disk.qcow2
qemu-io -f qcow2 -c "write -P 0x22 1M 1M" c2/disk.qcow2 >/dev/null
rc=0
"$VMHOST" img push --json -f qcow2 --to /var/lib/vmhost/dup c2/disk.qcow2 b >dup.json 2>&1 || rc=$?
low=$(sed -n 's/^hash=//p' c1/disk.qcow2.vmhost-hash | cut -c1-8)
if [ $rc -eq 0 ] && [ "$(jget dup.json '[f["remote-path"] for f in d["files"]]')" = \
	"['/var/lib/vmhost/dup/disk.$low.qcow2', '/var/lib/vmhost/dup/disk.qcow2']" ] &&
	qemu-img compare -q c2/disk.qcow2 "$W/state/dup/disk.qcow2"; then
	pass "layers sharing a file name: the backing one renamed with its hash" "disk.$low.qcow2"
else
	fail "layers sharing a file name" "exit $rc: $(cat dup.json); $(ls "$W/state/dup" 2>&1)"
fi
rc=0
"$VMHOST" img push --json -f qcow2 --name top.qcow2 --to /var/lib/vmhost/dup2 c2/disk.qcow2 b >dup2.json 2>&1 || rc=$?
[ $rc -eq 0 ] && [ "$(jget dup2.json '[f["remote-path"] for f in d["files"]]')" = \
	"['/var/lib/vmhost/dup2/disk.qcow2', '/var/lib/vmhost/dup2/top.qcow2']" ] &&
	qemu-img compare -q c2/disk.qcow2 "$W/state/dup2/top.qcow2" && pass "--name names the top there" ||
	fail "--name names the top there" "exit $rc: $(cat dup2.json)"

# --- vm create --host b --base LOCAL: B's own copy of the base, by content
qemu-img create -q -f qcow2 vbase.qcow2 64M
qemu-io -f qcow2 -c "write -P 0x42 0 1M" vbase.qcow2 >/dev/null
rc=0
"$VMHOST" --host b vm create v1 --base "$E2E_TMP/vbase.qcow2" >vc1.txt 2>&1 || rc=$?
[ $rc -eq 1 ] && grep -q "Host b has no copy of base image $E2E_TMP/vbase.qcow2" vc1.txt && grep -q -- "--push" vc1.txt &&
	[ ! -e "$W/state/vms/v1" ] && pass "vm create --host b: a base B lacks is named" "$(cat vc1.txt)" ||
	fail "vm create --host b: a base B lacks is named" "exit $rc: $(cat vc1.txt)"
rc=0
"$VMHOST" --host b vm create v1 --base "$E2E_TMP/vbase.qcow2" --push >vc2.txt 2>&1 || rc=$?
vbase_b=$(sed -n 's/^base = //p' "$W/state/vms/v1/vm.conf" 2>/dev/null)
disk_b=$(sed -n 's/^disk = //p' "$W/state/vms/v1/vm.conf" 2>/dev/null)
if [ $rc -eq 0 ] && [ "$vbase_b" = /var/lib/vmhost/images/vbase.qcow2 ] && [ -f "$BI/vbase.qcow2" ] &&
	cmp -s vbase.qcow2 "$BI/vbase.qcow2" && [ -n "$disk_b" ] &&
	on_b qemu-img info --output=json "$disk_b" | grep -q '"backing-filename": "/var/lib/vmhost/images/vbase.qcow2"'; then
	pass "vm create --host b --push: base pushed, overlay on B's copy" "base $vbase_b"
else
	fail "vm create --host b --push" "exit $rc: $(cat vc2.txt); conf: $(cat "$W/state/vms/v1/vm.conf" 2>&1)"
fi
# Another name here, the same content: found by its hash, nothing sent.
cp vbase.qcow2 vbase-copy.qcow2
rc=0
"$VMHOST" --host b vm create v2 --base "$E2E_TMP/vbase-copy.qcow2" >vc3.txt 2>&1 || rc=$?
[ $rc -eq 0 ] && [ "$(sed -n 's/^base = //p' "$W/state/vms/v2/vm.conf" 2>/dev/null)" = /var/lib/vmhost/images/vbase.qcow2 ] &&
	[ ! -e "$BI/vbase-copy.qcow2" ] && pass "vm create --host b: a copy under another name is found by content" ||
	fail "vm create --host b by content" "exit $rc: $(cat vc3.txt); $(ls "$BI")"
rc=0
"$VMHOST" vm create v3 --base "$E2E_TMP/vbase.qcow2" --push >vc4.txt 2>&1 || rc=$?
[ $rc -eq 2 ] && grep -q -- "--push copies the base image to another host" vc4.txt && pass "--push without --host refused" ||
	fail "--push without --host refused" "exit $rc: $(cat vc4.txt)"
e2e_finish
