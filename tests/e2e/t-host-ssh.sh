#!/bin/bash
# tests/e2e/t-host-ssh.sh: remote hosts over real OpenSSH. Host B is a
# network namespace joined to this one by a veth, running its own sshd
# (own config, host key and authorized test key) inside its own mount
# namespace, where /var/lib/vmhost, /run/vmhost and /root are private
# directories: what B's vmhost holds, it got over ssh (this side runs with
# its own VMHOST_HOME). Checks: 'host add' records B's key fingerprint;
# 'host list' shows B reachable with its version (and a down host with the
# reason, without failing); '--host b' (before the group and among the
# options) runs on B only, with B's exit status; names meant as shell
# injection run nothing on B and are refused there as names; an address
# with nothing listening and a refused port fail clearly within the
# timeout; a changed host key is refused naming the host; 'host remove'
# forgets B. Everything (namespace, sshd, ssh masters) goes on exit.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init host-ssh
need ip unshare ssh ssh-keygen python3
VMHOST=${VMHOST:-$ROOT/build/src/cli/vmhost}
[ -x "$VMHOST" ] || { fail vmhost-built "$VMHOST is not built"; e2e_finish; }
VMHOST=$(readlink -f "$VMHOST")

# Host B (tests/e2e/lib-hosts.sh): its own namespace, sshd and state.
source "$HERE/lib-hosts.sh"
OWNED=/tmp/vmhost-owned-$$
trap 'rc=$?; hosts_cleanup; rm -f "$OWNED" "$OWNED"-2; (exit $rc); e2e_cleanup' EXIT
hosts_init
host_new b || e2e_finish
W=$(host_dir b) B=$(host_ip b) NS=$(host_ns b) KEY=$HOSTS_KEY NOBODY=$HOSTS_NOBODY
cd "$E2E_TMP"

# --- host add
rc=0
"$VMHOST" host add b --ssh "root@$B" --identity "$KEY" --vmhost "$VMHOST" >add.txt 2>&1 || rc=$?
fp=$(ssh-keygen -l -E sha256 -f "$W/ssh/hostkey.pub" | awk '{print $2}')
if [ $rc -eq 0 ] && grep -qF "$fp" add.txt && grep -qxF "host-key = $fp" "$VMHOST_HOME/hosts/b.conf" &&
	grep -q "vmhost *0.1.0" add.txt && [ -s "$VMHOST_HOME/hosts/b.known_hosts" ] &&
	grep -qE "^  doctor +QEMU [0-9.]+, accelerator (kvm|tcg), (OVS [0-9.]+|no OVS).*, [0-9.]+ [KMGT]iB of [0-9.]+ [KMGT]iB memory free, [0-9]+ CPUs?, 0 VMs \(0 running\)$" add.txt; then
	pass "host add" "$(tr '\n' ' ' <add.txt)"
else
	fail "host add" "exit $rc: $(cat add.txt); conf: $(cat "$VMHOST_HOME/hosts/b.conf" 2>/dev/null)"
fi
mode=$(stat -c %a "$VMHOST_HOME/run/ssh" 2>/dev/null || echo none)
[ "$mode" = 700 ] && pass "control socket dir 0700" || fail "control socket dir 0700" "mode $mode"

rc=0
"$VMHOST" host add b --ssh "root@$B" --identity "$KEY" >dup.txt 2>&1 || rc=$?
[ $rc -ne 0 ] && grep -q "host 'b' exists already" dup.txt && pass "host add refuses a name in use" ||
	fail "host add refuses a name in use" "exit $rc: $(cat dup.txt)"
rc=0
"$VMHOST" host add local --ssh "root@$B" >loc.txt 2>&1 || rc=$?
[ $rc -eq 2 ] && grep -q "'local' is this machine" loc.txt && pass "host name local refused" ||
	fail "host name local refused" "exit $rc: $(cat loc.txt)"
rc=0
"$VMHOST" host add x --ssh "-oProxyCommand=touch $OWNED" >opt.txt 2>&1 || rc=$?
[ $rc -eq 2 ] && [ ! -e "$OWNED" ] && grep -q "ssh must be" opt.txt && pass "ssh address as option refused" ||
	fail "ssh address as option refused" "exit $rc: $(cat opt.txt)"

# --- host add: vmhost missing, or of another major.minor, on the host
printf '#!/bin/sh\n[ "$1" = --version ] && { echo "vmhost 9.1.0"; exit 0; }\necho "{\\"version\\":1,\\"vmhost-version\\":\\"9.1.0\\"}"\n' >"$W/state/vmhost-9"
printf '#!/bin/sh\n[ "$1" = --version ] && { echo "vmhost 0.0.9"; exit 0; }\necho "Unknown command: host self" >&2; exit 2\n' >"$W/state/vmhost-old"
chmod 755 "$W/state/vmhost-9" "$W/state/vmhost-old"
for c in "v9|/var/lib/vmhost/vmhost-9|runs vmhost 9.1.0, this machine 0.1.0: incompatible" \
	"vold|/var/lib/vmhost/vmhost-old|runs vmhost 0.0.9, this machine 0.1.0: incompatible" \
	"vnone|/var/lib/vmhost/no-such-vmhost|has no vmhost program '/var/lib/vmhost/no-such-vmhost'.*make install.*--vmhost PATH"; do
	IFS='|' read -r name prog want <<<"$c"
	rc=0
	"$VMHOST" host add "$name" --ssh "root@$B" --identity "$KEY" --vmhost "$prog" >ver.txt 2>&1 || rc=$?
	if [ $rc -eq 1 ] && grep -q "host '$name'" ver.txt && grep -qE "$want" ver.txt &&
		[ ! -e "$VMHOST_HOME/hosts/$name.conf" ]; then
		pass "host add refuses: $name" "$(cat ver.txt)"
	else
		fail "host add refuses: $name" "exit $rc: $(cat ver.txt)"
	fi
done

# --- host id: made once per home, B's differs from this machine's
"$VMHOST" vm list >/dev/null
ida=$(cat "$VMHOST_HOME/host-id" 2>/dev/null || true); idb=$(cat "$W/state/host-id" 2>/dev/null || true)
if [[ $ida =~ ^[0-9a-f]{32}$ ]] && [[ $idb =~ ^[0-9a-f]{32}$ ]] && [ "$ida" != "$idb" ]; then
	pass "host ids differ" "a $ida, b $idb"
else
	fail "host ids differ" "a '$ida', b '$idb'"
fi

# --- host check: B's doctor
rc=0
"$VMHOST" host check b >chk.txt 2>&1 || rc=$?
"$VMHOST" host check b --json >chk.json 2>/dev/null || true
if grep -q "^qemu-system-x86_64 " chk.txt && grep -q "^VMs can run here: " chk.txt &&
	python3 -c 'import json; d = json.load(open("chk.json")); assert d["accelerator"] in ("kvm", "tcg")' 2>err.txt; then
	pass "host check" "exit $rc: $(tail -1 chk.txt)"
else
	fail "host check" "exit $rc: $(cat chk.txt) $(cat err.txt)"
fi

# --- host list
rc=0
"$VMHOST" host list >list.txt 2>&1 || rc=$?
"$VMHOST" host list --json >list.json 2>&1 || rc=$?
if [ $rc -eq 0 ] && head -1 list.txt | grep -qE "^NAME +SSH +STATE +RTT +VMHOST +QEMU +ACCEL +CPUS +MEM-FREE +VMS +WHY NOT$" &&
	grep -qE "^b +root@$B:22 +reachable +[0-9]+ ms +0\.1\.0 +[0-9.]+ +(kvm|tcg) +[0-9]+ +[0-9.]+ [KMGT]iB +0/0 +-$" list.txt &&
	python3 -c 'import json,sys
h = {x["name"]: x for x in json.load(open("list.json"))}
b = h["b"]
assert b["reachable"] is True and b["vmhost-version"] == "0.1.0" and b["error"] is None and b["rtt-ms"] >= 0, b
assert b["version"] == 1 and b["state"] == "reachable" and b["accelerator"] in ("kvm", "tcg"), b
assert b["qemu-version"] and b["cpus"] >= 1 and b["memory-free"] > 0 and b["memory-total"] >= b["memory-free"], b
assert b["vms"] == 0 and b["vms-running"] == 0 and b["host-id"] == sys.argv[1] and isinstance(b["ovs-running"], bool), b' "$idb" 2>err.txt; then
	pass "host list" "$(tail -1 list.txt)"
else
	fail "host list" "exit $rc: $(cat list.txt) $(cat list.json) $(cat err.txt)"
fi
"$VMHOST" host show b >show.txt 2>&1 && grep -q "host key *$fp" show.txt && pass "host show" ||
	fail "host show" "$(cat show.txt)"

# --- --host: commands run on B, in B's state only
rc=0
"$VMHOST" --host b img create -f raw /var/lib/vmhost/d.raw 1M >o1.txt 2>&1 || rc=$?
"$VMHOST" --host b vm create x --disk /var/lib/vmhost/d.raw >o2.txt 2>&1 || rc=$?
if [ $rc -eq 0 ] && [ -f "$W/state/d.raw" ] && [ -f "$W/state/vms/x/vm.conf" ] && [ ! -e /var/lib/vmhost/d.raw ] &&
	grep -q "Created VM x" o2.txt; then
	pass "--host b creates on B" "B's state: $(cd "$W/state" && find . -name vm.conf -o -name d.raw | tr '\n' ' ')"
else
	fail "--host b creates on B" "exit $rc: $(cat o1.txt o2.txt); B state: $(ls -R "$W/state" | head -20)"
fi
rc=0
"$VMHOST" --host b vm list >rl.txt 2>&1 || rc=$?
"$VMHOST" vm list --host b >rl2.txt 2>&1 || rc=$?
"$VMHOST" vm -H b list >rl3.txt 2>&1 || rc=$?
"$VMHOST" vm list >ll.txt 2>&1 || rc=$?
if [ $rc -eq 0 ] && grep -q '^x  ' rl.txt && cmp -s rl.txt rl2.txt && cmp -s rl.txt rl3.txt && ! grep -q '^x ' ll.txt; then
	pass "--host b vm list shows B's VM, local list does not" "$(grep '^x ' rl.txt)"
else
	fail "--host b vm list" "exit $rc: remote: $(cat rl.txt) / $(cat rl2.txt) / $(cat rl3.txt); local: $(cat ll.txt)"
fi
# The remote exit status is ours (vm status of a missing VM: 1 here and there).
lrc=0; rrc=0
"$VMHOST" vm status nosuch >/dev/null 2>lerr.txt || lrc=$?
"$VMHOST" --host b vm status nosuch >/dev/null 2>rerr.txt || rrc=$?
[ $lrc -ne 0 ] && [ $rrc -eq $lrc ] && grep -q "No VM named 'nosuch' (no /var/lib/vmhost/vms/" rerr.txt && pass "remote exit status and stderr" "both $rrc: $(cat rerr.txt)" ||
	fail "remote exit status and stderr" "local $lrc '$(cat lerr.txt)', remote $rrc '$(cat rerr.txt)'"
# A base image that cannot be pushed (its name) is an error of this side,
# found without ssh: exit 1, not ssh's 255.
"$VMHOST" img create -f qcow2 "$E2E_TMP/bad name.qcow2" 1M >/dev/null 2>&1
rc=0
"$VMHOST" --host b vm create z --base "$E2E_TMP/bad name.qcow2" >bn.txt 2>&1 || rc=$?
[ $rc -eq 1 ] && grep -q "Host b: image name 'bad name.qcow2' cannot be pushed" bn.txt && [ ! -e "$W/state/vms/z" ] &&
	pass "a base name that cannot be pushed: exit 1" "$(cat bn.txt)" ||
	fail "a base name that cannot be pushed: exit 1" "exit $rc: $(cat bn.txt)"
# --- Ctrl-C reaches the remote command: on a terminal ssh gets one (-t),
# so ^C is B's SIGINT. 'vm start --wait' of a VM whose disk boots nothing
# waits on B for its ready line until stopped; after ^C here the waiting
# vmhost on B must be gone (without the terminal it would wait 120 s).
rc=0
python3 - "$VMHOST" "$NS" >ctrlc.txt 2>&1 <<'PY' || rc=$?
import os, pty, select, subprocess, sys, time
vmhost, ns = sys.argv[1], sys.argv[2]
def waiting_on_b():
    out = subprocess.run(['ip', 'netns', 'pids', ns], capture_output=True, text=True).stdout.split()
    for p in out:
        try:
            cmd = open('/proc/%s/cmdline' % p, 'rb').read().split(b'\0')
        except OSError:
            continue
        if b'vmhost' in os.path.basename(cmd[0]) and b'start' in cmd and b'--wait' in cmd:
            return True
    return False
pid, fd = pty.fork()
if pid == 0:
    os.execv(vmhost, [vmhost, '--host', 'b', 'vm', 'start', 'x', '--wait', '--timeout', '120'])
def drain(t):
    end = time.time() + t
    while time.time() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                os.read(fd, 4096)
            except OSError:
                return
deadline = time.time() + 30
while time.time() < deadline and not waiting_on_b():
    drain(0.1)
if not waiting_on_b():
    sys.exit('the remote vm start --wait never ran on B')
drain(0.5)
os.write(fd, b'\x03')
t0 = time.time()
while time.time() < t0 + 15 and waiting_on_b():
    drain(0.1)
gone = not waiting_on_b()
end = time.time() + 15
st = None
while time.time() < end:
    w, st = os.waitpid(pid, os.WNOHANG)
    if w == pid:
        break
    drain(0.1)
else:
    os.kill(pid, 9)
    sys.exit('the local vmhost did not end after ^C')
print('remote gone after %.1f s, local status %d' % (time.time() - t0, st))
sys.exit(0 if gone else 'the remote vm start --wait still runs on B after ^C')
PY
[ $rc -eq 0 ] && pass "Ctrl-C reaches the remote command" "$(tail -1 ctrlc.txt)" ||
	fail "Ctrl-C reaches the remote command" "$(cat ctrlc.txt)"
"$VMHOST" --host b vm kill x >/dev/null 2>&1 || true

# --- MACs unique across the hosts: a MAC of a VM here is not given to a VM
# on B. B's next derived MAC is known from a VM made and deleted there;
# a local VM takes it by hand, then B's create must pick another.
mac_of() { python3 -c 'import json,sys; print(json.load(sys.stdin)["nics"][0]["mac"])'; }
rc=0
"$VMHOST" --host b vm create probe --disk /var/lib/vmhost/d.raw >/dev/null 2>&1 || rc=$?
next=$("$VMHOST" --host b vm status probe --json | mac_of) || rc=$?
"$VMHOST" --host b vm delete probe >/dev/null 2>&1 || rc=$?
"$VMHOST" img create -f raw "$E2E_TMP/l.raw" 1M >/dev/null 2>&1 || rc=$?
"$VMHOST" vm create here --disk "$E2E_TMP/l.raw" --net "user,mac=$next" >/dev/null 2>&1 || rc=$?
"$VMHOST" --host b vm create y --disk /var/lib/vmhost/d.raw >my.txt 2>&1 || rc=$?
ymac=$("$VMHOST" --host b vm status y --json | mac_of) || rc=$?
if [ $rc -eq 0 ] && [ -n "$next" ] && [ "$("$VMHOST" vm status here --json | mac_of)" = "$next" ] &&
	[ -n "$ymac" ] && [ "$ymac" != "$next" ]; then
	pass "a VM on B does not reuse a MAC of this host" "here $next, y on B $ymac"
else
	fail "a VM on B does not reuse a MAC of this host" "exit $rc: next $next, y $ymac: $(cat my.txt)"
fi
# And a MAC given by hand that B's VM has is refused here.
rc=0
"$VMHOST" vm create dup --disk "$E2E_TMP/l.raw" --net "user,mac=$ymac" >dupmac.txt 2>&1 || rc=$?
[ $rc -ne 0 ] && grep -q "MAC $ymac of NIC 0 of VM dup is in use by a VM on another host" dupmac.txt &&
	pass "a hand-given MAC in use on B refused" || fail "a hand-given MAC in use on B refused" "exit $rc: $(cat dupmac.txt)"

# --- vm list --all-hosts: this machine first, then B
rc=0
"$VMHOST" vm list --all-hosts >all.txt 2>&1 || rc=$?
"$VMHOST" vm list --all-hosts --json >all.json 2>/dev/null || rc=$?
if [ $rc -eq 0 ] && head -1 all.txt | grep -qE "^HOST +NAME +STATE" && grep -qE "^local +here +stopped" all.txt &&
	grep -qE "^b +x +stopped" all.txt && grep -qE "^b +y +stopped" all.txt &&
	[ "$(grep -nE '^local ' all.txt | head -1 | cut -d: -f1)" -lt "$(grep -nE '^b ' all.txt | head -1 | cut -d: -f1)" ] &&
	python3 -c 'import json
d = json.load(open("all.json"))
assert [h["host"] for h in d] == ["local", "b"], d
assert all(h["reachable"] and h["error"] is None and h["version"] == 1 for h in d), d
assert [v["name"] for v in d[0]["vms"]] == ["here"] and [v["name"] for v in d[1]["vms"]] == ["x", "y"], d' 2>err.txt; then
	pass "vm list --all-hosts" "$(tr '\n' '|' <all.txt)"
else
	fail "vm list --all-hosts" "exit $rc: $(cat all.txt) $(cat err.txt)"
fi

# --- the far side's strings reach this terminal without their escapes: a
# "vmhost" on B that answers with a VM name, a state and a warning full of
# terminal control sequences.
cat >"$W/state/vmhost-evil" <<'EOS'
#!/bin/sh
[ "$1" = --version ] && { echo "vmhost 0.1.0"; exit 0; }
printf '%s\n' '{"version":1,"vmhost-version":"0.1.0","host-id":"e","vms":1,"macs":["\u001b[31m"],"warnings":["\u001b]0;owned\u0007w"],"vm-list":[{"name":"\u001b[2Jevil\u0007","state":"\u009b31m","cpus":1,"memory":1}]}'
EOS
chmod 755 "$W/state/vmhost-evil"
rc=0
"$VMHOST" host add evil --ssh "root@$B" --identity "$KEY" --vmhost /var/lib/vmhost/vmhost-evil >ev0.txt 2>&1 || rc=$?
"$VMHOST" vm list --all-hosts >ev1.txt 2>&1 || rc=$?
"$VMHOST" host list >ev2.txt 2>&1 || rc=$?
if [ $rc -eq 0 ] && grep -qE '^evil +\?\[2Jevil\? +\?\?31m' ev1.txt && grep -q 'Host evil: ?\]0;owned?w' ev1.txt &&
	! LC_ALL=C grep -q $'[\x01-\x08\x0b-\x1f\x7f]' ev0.txt ev1.txt ev2.txt &&
	! LC_ALL=C grep -q $'\xc2[\x80-\x9f]' ev0.txt ev1.txt ev2.txt; then
	pass "the far side's escapes are not printed" "$(grep '^evil' ev1.txt)"
else
	fail "the far side's escapes are not printed" "exit $rc: $(cat -v ev0.txt ev1.txt ev2.txt)"
fi
"$VMHOST" host remove evil --force >/dev/null

rc=0
"$VMHOST" host remove b >rmb.txt 2>&1 || rc=$?
[ $rc -eq 1 ] && grep -q "Cannot remove host b: it holds 2 VMs" rmb.txt && grep -q -- "--force" rmb.txt &&
	[ -e "$VMHOST_HOME/hosts/b.conf" ] && pass "host remove refused while B holds VMs" "$(cat rmb.txt)" ||
	fail "host remove refused while B holds VMs" "exit $rc: $(cat rmb.txt)"

rc=0
"$VMHOST" --host nosuch vm list >nh.txt 2>&1 || rc=$?
[ $rc -eq 2 ] && grep -q "no host 'nosuch'" nh.txt && pass "unknown host named" "$(cat nh.txt)" ||
	fail "unknown host named" "exit $rc: $(cat nh.txt)"

# --- injection: the names stay names on B
for evil in "x;touch $OWNED" "\$(touch $OWNED-2)" "\$(id)" "x' ; touch $OWNED; '" "\`touch $OWNED\`"; do
	rc=0
	"$VMHOST" --host b vm create "$evil" --disk /var/lib/vmhost/d.raw >inj.txt 2>&1 || rc=$?
	if [ $rc -eq 2 ] && grep -qF "Invalid VM name '$evil'" inj.txt && [ ! -e "$OWNED" ] && [ ! -e "$OWNED-2" ] &&
		[ ! -e "$W/state/vms/$evil" ]; then
		pass "injection name stays a name: $evil" "$(cat inj.txt)"
	else
		fail "injection name stays a name: $evil" "exit $rc: $(cat inj.txt); owned: $(ls "$OWNED"* 2>&1)"
	fi
done

# --- unreachable hosts: clear errors within the connect timeout
for c in "c|root@$NOBODY|22|no route|no answer" "d|root@$B|2|nothing listens"; do
	IFS='|' read -r name target port want <<<"$c"
	want=${c#*|*|*|}
	t0=$(e2e_now); rc=0
	"$VMHOST" host add "$name" --ssh "$target" --port "$port" --identity "$KEY" >un.txt 2>&1 || rc=$?
	dt=$(e2e_elapsed "$t0")
	if [ $rc -ne 0 ] && grep -q "host '$name'" un.txt && grep -qE "$want" un.txt &&
		awk -v d="$dt" 'BEGIN { exit !(d < 15) }' && [ ! -e "$VMHOST_HOME/hosts/$name.conf" ] &&
		[ ! -e "$VMHOST_HOME/hosts/$name.known_hosts" ]; then
		pass "host add $target:$port fails clearly" "${dt} s: $(cat un.txt)"
	else
		fail "host add $target:$port fails clearly" "exit $rc after ${dt} s: $(cat un.txt)"
	fi
done
# A key B does not authorize: refused, naming the host and what to do.
ssh-keygen -q -t ed25519 -N '' -f "$E2E_TMP/otherkey"
rc=0
"$VMHOST" host add w --ssh "root@$B" --identity "$E2E_TMP/otherkey" >wk.txt 2>&1 || rc=$?
[ $rc -ne 0 ] && grep -q "host 'w' refused the login" wk.txt && grep -q "authorized_keys" wk.txt &&
	[ ! -e "$VMHOST_HOME/hosts/w.conf" ] && [ ! -e "$VMHOST_HOME/hosts/w.known_hosts" ] &&
	pass "host add with a key B does not take fails clearly" "$(cat wk.txt)" ||
	fail "host add with a key B does not take" "exit $rc: $(cat wk.txt)"
# A registered host that is down is listed as such; the listing succeeds.
printf 'name = c\nssh = root@%s\nidentity = %s\n' "$NOBODY" "$KEY" >"$VMHOST_HOME/hosts/c.conf"
t0=$(e2e_now); rc=0
"$VMHOST" host list >list2.txt 2>&1 || rc=$?
dt=$(e2e_elapsed "$t0")
if [ $rc -eq 0 ] && grep -qE "^b .* reachable .* 0\.1\.0 " list2.txt && grep -qE "^c .* down .*host 'c'" list2.txt &&
	awk -v d="$dt" 'BEGIN { exit !(d < 15) }'; then
	pass "host list with a host down" "${dt} s: $(grep '^c ' list2.txt)"
else
	fail "host list with a host down" "exit $rc after ${dt} s: $(cat list2.txt)"
fi
t0=$(e2e_now); rc=0
"$VMHOST" vm list --all-hosts >all2.txt 2>&1 || rc=$?
"$VMHOST" vm list --all-hosts --json >all2.json 2>/dev/null || rc=$?
dt=$(e2e_elapsed "$t0")
if [ $rc -eq 0 ] && grep -qE "^b +y +stopped" all2.txt && grep -qE "^c +- +down +cannot reach host 'c'" all2.txt &&
	awk -v d="$dt" 'BEGIN { exit !(d < 25) }' &&
	python3 -c 'import json
d = {h["host"]: h for h in json.load(open("all2.json"))}
assert d["c"]["reachable"] is False and "host '"'"'c'"'"'" in d["c"]["error"] and d["c"]["vms"] == [], d
assert d["b"]["reachable"] and len(d["b"]["vms"]) == 2, d' 2>err.txt; then
	pass "vm list --all-hosts with a host down" "${dt} s: $(grep '^c ' all2.txt)"
else
	fail "vm list --all-hosts with a host down" "exit $rc after ${dt} s: $(cat all2.txt) $(cat err.txt)"
fi
rc=0
"$VMHOST" host remove c >rmc.txt 2>&1 || rc=$?
[ $rc -eq 1 ] && grep -q "cannot ask it whether it holds VMs" rmc.txt && grep -q -- "--force" rmc.txt &&
	[ -e "$VMHOST_HOME/hosts/c.conf" ] && pass "host remove of a down host refused" ||
	fail "host remove of a down host refused" "exit $rc: $(cat rmc.txt)"
"$VMHOST" host remove c --force >/dev/null

# --- a changed host key is refused
cp "$VMHOST_HOME/hosts/b.known_hosts" known.before
host_stop b
# The master ends with its connection; a new command must not find it.
wait_until 10 "the ssh master gone" bash -c "! ls $VMHOST_HOME/run/ssh/* >/dev/null 2>&1"
rm -f "$W/ssh/hostkey" "$W/ssh/hostkey.pub"
ssh-keygen -q -t ed25519 -N '' -f "$W/ssh/hostkey"
host_start b
rc=0
"$VMHOST" --host b vm list >ck.txt 2>&1 || rc=$?
if [ $rc -eq 255 ] && grep -q "host 'b'" ck.txt && grep -q "different host key" ck.txt &&
	cmp -s known.before "$VMHOST_HOME/hosts/b.known_hosts"; then
	pass "changed host key refused" "$(grep -i "different host key" ck.txt)"
else
	fail "changed host key refused" "exit $rc: $(cat ck.txt)"
fi
rc=0
"$VMHOST" host list >list3.txt 2>&1 || rc=$?
[ $rc -eq 0 ] && grep -qE "^b .* down .*different host key" list3.txt && pass "host list: changed key" ||
	fail "host list: changed key" "exit $rc: $(cat list3.txt)"

# --- host remove: refused while B holds VMs, done with --force
rc=0
"$VMHOST" host remove b >rm0.txt 2>&1 || rc=$?
# B's key changed above, so it cannot be asked.
if [ $rc -eq 1 ] && grep -q "cannot ask it whether it holds VMs" rm0.txt && grep -q -- "--force" rm0.txt &&
	[ -e "$VMHOST_HOME/hosts/b.conf" ]; then
	pass "host remove of an unaskable host refused" "$(cat rm0.txt)"
else
	fail "host remove of an unaskable host refused" "exit $rc: $(cat rm0.txt)"
fi
rc=0
"$VMHOST" host remove b --force >rm.txt 2>&1 || rc=$?
if [ $rc -eq 0 ] && [ ! -e "$VMHOST_HOME/hosts/b.conf" ] && [ ! -e "$VMHOST_HOME/hosts/b.known_hosts" ] &&
	! "$VMHOST" host show b >/dev/null 2>&1; then
	pass "host remove"
else
	fail "host remove" "exit $rc: $(cat rm.txt); $(ls "$VMHOST_HOME/hosts")"
fi
e2e_finish
