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
[ -x /usr/sbin/sshd ] || { fail need-sshd "/usr/sbin/sshd missing (Debian: openssh-server)"; e2e_finish; }
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root (network and mount namespaces)"; exit 77; }
VMHOST=${VMHOST:-$ROOT/build/src/cli/vmhost}
[ -x "$VMHOST" ] || { fail vmhost-built "$VMHOST is not built"; e2e_finish; }
VMHOST=$(readlink -f "$VMHOST")

# This side's home; short, since ssh's control socket paths are limited.
export VMHOST_HOME=$E2E_TMP/a
mkdir -p "$VMHOST_HOME"
W=$E2E_TMP/b
mkdir -p -m 700 "$W"/{state,run,root,ssh}
# Unique per run: another run of this test may be going on.
id=$(($$ % 200 + 20))
NS=vhhs$$; VA=vhhs$$a
A=10.246.$id.1; B=10.246.$id.2; NOBODY=10.246.$id.3
KEY=$E2E_TMP/key
OWNED=/tmp/vmhost-owned-$$
ssh-keygen -q -t ed25519 -N '' -f "$W/ssh/hostkey"
ssh-keygen -q -t ed25519 -N '' -f "$KEY"
cp "$KEY.pub" "$W/ssh/authorized_keys"
cat >"$W/ssh/sshd_config" <<EOC
ListenAddress $B
HostKey $W/ssh/hostkey
AuthorizedKeysFile $W/ssh/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile $W/ssh/sshd.pid
EOC

hs_cleanup() {
	local rc=$? s p
	set +e
	# ssh masters vmhost started on this side: ask each to exit.
	for s in "$VMHOST_HOME"/run/ssh/*; do
		[ -S "$s" ] && ssh -o ControlPath="$s" -O exit dummy >/dev/null 2>&1
	done
	# Everything in B's network namespace is ours: sshd and its sessions.
	if ip netns list | grep -qw "$NS"; then
		for p in $(ip netns pids "$NS"); do kill "$p" 2>/dev/null; done
		for p in $(ip netns pids "$NS"); do kill -9 "$p" 2>/dev/null; done
		ip netns del "$NS"
	fi
	ip link del "$VA" 2>/dev/null
	rm -f "$OWNED" "$OWNED"-2
	return $rc
}
trap 'hs_cleanup; e2e_cleanup' EXIT

ip netns add "$NS"
ip link add "$VA" type veth peer name eth0 netns "$NS"
ip addr add "$A/24" dev "$VA"
ip link set "$VA" up
ip -n "$NS" addr add "$B/24" dev eth0
ip -n "$NS" link set eth0 up
ip -n "$NS" link set lo up
mkdir -p /run/sshd /var/lib/vmhost /run/vmhost

# start_b: B's sshd in a new private mount namespace (its sessions inherit it).
start_b() {
	rm -f "$W/ssh/sshd.pid"
	ip netns exec "$NS" unshare --mount --propagation private sh -c "
		mount --bind $W/state /var/lib/vmhost &&
		mount --bind $W/run /run/vmhost &&
		mount --bind $W/root /root &&
		exec /usr/sbin/sshd -f $W/ssh/sshd_config"
	wait_until 10 "B's sshd listening" bash -c "exec 3<>/dev/tcp/$B/22" 2>/dev/null
}
start_b
cd "$E2E_TMP"

# --- host add
rc=0
"$VMHOST" host add b --ssh "root@$B" --identity "$KEY" --vmhost "$VMHOST" >add.txt 2>&1 || rc=$?
fp=$(ssh-keygen -l -E sha256 -f "$W/ssh/hostkey.pub" | awk '{print $2}')
if [ $rc -eq 0 ] && grep -qF "$fp" add.txt && grep -qxF "host-key = $fp" "$VMHOST_HOME/hosts/b.conf" &&
	grep -q "vmhost *0.1.0" add.txt && [ -s "$VMHOST_HOME/hosts/b.known_hosts" ]; then
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

# --- host list
rc=0
"$VMHOST" host list >list.txt 2>&1 || rc=$?
"$VMHOST" host list --json >list.json 2>&1 || rc=$?
if [ $rc -eq 0 ] && grep -qE "^b +root@$B:22 +reachable +[0-9]+ ms +0\.1\.0$" list.txt &&
	python3 -c 'import json,sys
h = {x["name"]: x for x in json.load(open("list.json"))}
b = h["b"]
assert b["reachable"] is True and b["vmhost-version"] == "0.1.0" and b["error"] is None and b["rtt-ms"] >= 0, b' 2>err.txt; then
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
# A registered host that is down is listed as such; the listing succeeds.
printf 'name = c\nssh = root@%s\nidentity = %s\n' "$NOBODY" "$KEY" >"$VMHOST_HOME/hosts/c.conf"
t0=$(e2e_now); rc=0
"$VMHOST" host list >list2.txt 2>&1 || rc=$?
dt=$(e2e_elapsed "$t0")
if [ $rc -eq 0 ] && grep -qE "^b .* reachable .* 0\.1\.0$" list2.txt && grep -qE "^c .* down .*host 'c'" list2.txt &&
	awk -v d="$dt" 'BEGIN { exit !(d < 15) }'; then
	pass "host list with a host down" "${dt} s: $(grep '^c ' list2.txt)"
else
	fail "host list with a host down" "exit $rc after ${dt} s: $(cat list2.txt)"
fi
"$VMHOST" host remove c >/dev/null

# --- a changed host key is refused
cp "$VMHOST_HOME/hosts/b.known_hosts" known.before
for p in $(ip netns pids "$NS"); do kill "$p" 2>/dev/null || true; done
wait_until 10 "B's sshd and sessions gone" bash -c "[ -z \"\$(ip netns pids $NS)\" ]"
# The master ends with its connection; a new command must not find it.
wait_until 10 "the ssh master gone" bash -c "! ls $VMHOST_HOME/run/ssh/* >/dev/null 2>&1"
rm -f "$W/ssh/hostkey" "$W/ssh/hostkey.pub"
ssh-keygen -q -t ed25519 -N '' -f "$W/ssh/hostkey"
start_b
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

# --- host remove
rc=0
"$VMHOST" host remove b >rm.txt 2>&1 || rc=$?
if [ $rc -eq 0 ] && [ ! -e "$VMHOST_HOME/hosts/b.conf" ] && [ ! -e "$VMHOST_HOME/hosts/b.known_hosts" ] &&
	! "$VMHOST" host show b >/dev/null 2>&1; then
	pass "host remove"
else
	fail "host remove" "exit $rc: $(cat rm.txt); $(ls "$VMHOST_HOME/hosts")"
fi
e2e_finish
