#!/usr/bin/env bash
# The minimal VM lifecycle against real QEMU (TCG): create with a direct
# kernel boot, start and wait for the ready line, a console round trip
# through 'vmhost vm console', security of the endpoints (0600 unix sockets,
# no TCP listener but the 127.0.0.1 forward), kill -9 noticed by 'status',
# stale runtime files cleaned, restart, stop, delete keeps the base, and
# clear errors for bad input.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init vm-lifecycle
source "$here/vmhost-env.sh"
trap 'vmhost_cleanup_vms; e2e_cleanup' EXIT
need python3 ss

# expect_error DESC PATTERN CMD...: CMD must fail and print PATTERN.
expect_error() {
	local desc=$1 pat=$2 out; shift 2
	if out=$("$@" 2>&1); then
		fail "$desc" "succeeded: $out"
	elif grep -qE -- "$pat" <<<"$out"; then
		pass "$desc" "$out"
	else
		fail "$desc" "wrong message: $out"
	fi
}

"$VMHOST" vm create k1 --boot kernel --kernel "$GUEST_DIR/vmlinuz" --initrd "$GUEST_DIR/initrd.img" \
	--append "console=ttyS0 quiet panic=-1 no_timer_check vmhost.name=k1 vmhost.net=dhcp vmhost.tcp=7777" \
	--forward tcp:auto:7777 --memory 256M >/dev/null && pass create || fail create
# The machine type is pinned to what "pc" stands for in this QEMU.
want_machine=$(qemu-system-x86_64 -machine help | sed -n 's/^pc .*(alias of \(pc-i440fx-[0-9.]*\))$/\1/p')
got_machine=$(sed -n 's/^machine = //p' "$VMHOST_HOME/vms/k1/vm.conf")
[ -n "$want_machine" ] && [ "$got_machine" = "$want_machine" ] && pass machine-pinned "$got_machine" ||
	fail machine-pinned "vm.conf has '$got_machine', QEMU's pc is '$want_machine'"

t0=$(e2e_now)
if out=$("$VMHOST" vm start k1 --wait --timeout 120 2>&1); then
	pass start-ready "$(grep -o 'VMHOST-READY.*' <<<"$out") after $(e2e_elapsed "$t0") s"
else
	fail start-ready "$out"; tail -c 1000 "$VMHOST_HOME/vms/k1/serial.log"; e2e_finish
fi
pid=$(vm_json k1 pid)
[ "$(vm_json k1 state)" = running ] && [ -n "$pid" ] && pass status-running "pid $pid" || fail status-running

# The start time: this start's (QEMU is launched right after the command
# began, before the boot the test waited for), the same at every ask as
# the clock goes on, and the uptime shown by status and list.
started=$(vm_json k1 started)
sleep 1.2
started2=$(vm_json k1 started)
t0s=${t0%.*}
if [ -n "$started" ] && [ "$started" -ge "$t0s" ] && [ "$started" -le $((t0s + 5)) ] && [ "$started2" = "$started" ] &&
	"$VMHOST" vm status k1 | grep -qE '^uptime: +[0-9]+(s|m[0-9]{2}s) \(since ' &&
	"$VMHOST" vm list | grep -qE "^k1 +running +$pid +[0-9]+(s|m[0-9]{2}s) "; then
	pass start-time "started $started, test started the VM at $t0s; $("$VMHOST" vm status k1 | grep '^uptime')"
else
	fail start-time "started '$started' then '$started2', test start $t0s; $("$VMHOST" vm status k1; "$VMHOST" vm list)"
fi

# Console round trip: piped input, answers relayed until the console is quiet.
out=$(printf 'echo $((6*7))\n' | timeout 20 "$VMHOST" vm console k1 2>&1)
grep -qx '42' <<<"${out//$'\r'/}" && pass console-roundtrip || fail console-roundtrip "got: $out"

# Endpoints: unix sockets 0600 in a 0700 directory (VNC's too, the
# default); QEMU listens on no TCP port except the forward on 127.0.0.1.
rt=$VMHOST_HOME/run/vms/k1
m1=$(stat -c %a "$rt/qmp.sock") m2=$(stat -c %a "$rt/serial.sock") m3=$(stat -c %a "$rt/vnc.sock") md=$(stat -c %a "$rt")
[ "$m1" = 600 ] && [ "$m2" = 600 ] && [ "$m3" = 600 ] && [ "$md" = 700 ] &&
	pass sockets-private "qmp $m1, serial $m2, vnc $m3, dir $md" || fail sockets-private "qmp $m1, serial $m2, vnc $m3, dir $md"
port=$(vm_json k1 forwards 0 host-port)
listeners=$(ss -Hltnup | grep "pid=$pid," | awk '{print $5}' | sort -u | tr '\n' ' ')
expected="127.0.0.1:$port "
[ "$listeners" = "$expected" ] && pass only-forward-on-loopback "$listeners" ||
	fail only-forward-on-loopback "listening: '$listeners', expected '$expected'"
line=$(tcp_read_line 127.0.0.1 "$port" 20) && [[ $line == *"k1 hello"* ]] && pass forward "$line" || fail forward "$line"

# -sandbox on is in force.
tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qE -- '-sandbox on,obsolete=deny,elevateprivileges=(deny|allow),spawn=deny,resourcecontrol=deny' &&
	grep -q '^Seccomp:[[:space:]]*2' "/proc/$pid/status" && pass sandboxed "seccomp filter mode" || fail sandboxed

tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "-machine $want_machine,accel=" && pass machine-used ||
	fail machine-used "$(tr '\0' ' ' <"/proc/$pid/cmdline")"

# A forward added to the running VM works at once and is shown by status.
p2=$(free_port)
out=$("$VMHOST" vm forward k1 add "tcp:$p2:7777" 2>&1) && line=$(tcp_read_line 127.0.0.1 "$p2" 20) &&
	[[ $line == *"k1 hello"* ]] && [ "$(vm_json k1 forwards 1 host-port)" = "$p2" ] &&
	pass forward-added-while-running "127.0.0.1:$p2 -> '$line'" || fail forward-added-while-running "$out"
expect_error forward-duplicate "already forwards" "$VMHOST" vm forward k1 add tcp:auto:7777

# As root, QEMU drops to the unprivileged vmhost-qemu user.
if [ "$(id -u)" = 0 ]; then
	u=$(ps -o user= -p "$pid")
	[ "$u" = vmhost-qemu ] && pass qemu-unprivileged "runs as $u" || fail qemu-unprivileged "runs as $u"
fi

# A start of a running VM is what the user wanted: said, exit 0, no second QEMU.
out=$("$VMHOST" vm start k1 2>&1) && grep -q "VM k1 is already running (pid $pid)" <<<"$out" &&
	[ "$(pgrep -fc -- "$rt/qmp.sock")" = 1 ] && pass start-twice "$out" || fail start-twice "$out"
expect_error delete-running "is running" "$VMHOST" vm delete k1

# A QEMU killed behind vmhost's back shows up as crashed, with the reason,
# and the stale runtime files are gone.
kill -9 "$pid"
wait_until 10 "exit of QEMU $pid after kill -9" pid_dead "$pid"
st=$(vm_json k1 state)
[ "$st" = crashed ] && pass kill9-noticed "state $st, reason: $(vm_json k1 exit-reason)" || fail kill9-noticed "state $st"
[ ! -e "$rt/qmp.sock" ] && [ ! -e "$rt/state" ] && pass stale-runtime-cleaned || fail stale-runtime-cleaned "$(ls -la "$rt")"
[ "$(vm_json k1 state)" = stopped ] && "$VMHOST" vm status k1 | grep -q "last exit" && pass crash-remembered ||
	fail crash-remembered "$("$VMHOST" vm status k1)"
# 'vm list' says it as 'vm status' does, in its table and its JSON.
reason=$(vm_json k1 exit-reason)
[ -n "$reason" ] && "$VMHOST" vm list | grep -qxF "    last exit: $reason" &&
	[ "$("$VMHOST" vm list --json | python3 -c 'import json,sys
print([v.get("exit-reason") for v in json.load(sys.stdin) if v["name"] == "k1"][0])')" = "$reason" ] &&
	pass list-shows-crash "$reason" || fail list-shows-crash "status: '$reason'; list: $("$VMHOST" vm list; "$VMHOST" vm list --json)"

# A definition from before machine types were pinned gets pinned at start.
sed -i '/^machine = /d' "$VMHOST_HOME/vms/k1/vm.conf"
t1=$(e2e_now)
out=$("$VMHOST" vm start k1 --wait --timeout 120 2>&1) && pass restart-after-crash || fail restart-after-crash "$out"
# The new QEMU's start, not the first one's.
started3=$(vm_json k1 started)
[ -n "$started3" ] && [ "$started3" -ge "${t1%.*}" ] && [ "$started3" -le $((${t1%.*} + 5)) ] &&
	pass start-time-new-start "$started3" || fail start-time-new-start "'$started3', started at ${t1%.*}"
got_machine=$(sed -n 's/^machine = //p' "$VMHOST_HOME/vms/k1/vm.conf")
[ "$got_machine" = "$want_machine" ] && pass machine-pinned-at-start "$got_machine" ||
	fail machine-pinned-at-start "vm.conf has '$got_machine'"
t0=$(e2e_now)
"$VMHOST" vm stop k1 >/dev/null && [ "$(vm_json k1 state)" = stopped ] && [ ! -e "$rt/serial.sock" ] &&
	pass stop "$(e2e_elapsed "$t0") s" || fail stop
# A clean stop is no crash: nothing for status or list to remember.
[ -z "$(vm_json k1 exit-reason)" ] && ! "$VMHOST" vm list | grep -q "last exit" &&
	pass stop-not-a-crash || fail stop-not-a-crash "$("$VMHOST" vm status k1; "$VMHOST" vm list)"

# An overlay VM: delete removes its own disk, never the base.
"$VMHOST" vm create o1 --base "$GUEST_DIR/disk.qcow2" >/dev/null && pass create-overlay || fail create-overlay
sum0=$(sha256sum <"$GUEST_DIR/disk.qcow2")
"$VMHOST" vm delete o1 >/dev/null && [ ! -e "$VMHOST_HOME/vms/o1" ] && [ "$(sha256sum <"$GUEST_DIR/disk.qcow2")" = "$sum0" ] &&
	pass delete-keeps-base || fail delete-keeps-base

# Bad input: clear errors naming the problem, nothing made.
expect_error bad-name "Invalid VM name 'a/b'" "$VMHOST" vm create a/b --disk /dev/null
expect_error bad-forward "Invalid forward 'tcp:99999:22'" "$VMHOST" vm create f1 --disk /dev/null --forward tcp:99999:22
expect_error bad-memory "memory must be" "$VMHOST" vm create f2 --disk /dev/null --memory lots
expect_error missing-disk "Disk /nonexistent.qcow2 does not exist" "$VMHOST" vm create f3 --disk /nonexistent.qcow2
expect_error missing-base "Base image /nonexistent.qcow2" "$VMHOST" vm create f4 --base /nonexistent.qcow2
expect_error unknown-vm "No VM named 'nope'" "$VMHOST" vm start nope
expect_error duplicate "VM k1 already exists" "$VMHOST" vm create k1 --disk /dev/null
[ -z "$(find "$VMHOST_HOME/vms" -mindepth 1 -maxdepth 1 ! -name k1 ! -name .lock)" ] && pass bad-input-made-nothing || fail bad-input-made-nothing "$(ls "$VMHOST_HOME/vms")"

# 20 creates at once: 20 distinct ids, MACs and TCP VNC displays
# (HOST:auto allocates one; the default unix display needs none).
for i in $(seq 1 20); do
	"$VMHOST" vm create p$i --disk "$GUEST_DIR/disk.qcow2" --vnc 127.0.0.1:auto >/dev/null 2>"$E2E_TMP/p$i.err" &
done
wait
"$VMHOST" vm list --json >"$E2E_TMP/list.json"
python3 - "$E2E_TMP/list.json" <<'EOF2' && pass parallel-creates-distinct || fail parallel-creates-distinct "$(cat "$E2E_TMP"/p*.err)"
import json, sys
vms = [v for v in json.load(open(sys.argv[1])) if v["name"].startswith("p")]
assert len(vms) == 20, len(vms)
macs = {v["nics"][0]["mac"] for v in vms}
vncs = {v["vnc"]["port"] for v in vms}
ids = {v["id"] for v in vms}
assert len(macs) == 20 and len(vncs) == 20 and len(ids) == 20, (macs, vncs, ids)
print("20 MACs, 20 VNC ports %d..%d, 20 ids" % (min(vncs), max(vncs)))
EOF2
for i in $(seq 1 20); do "$VMHOST" vm delete p$i >/dev/null; done

# A hand-edited definition with a typo is refused with its line number.
cp "$VMHOST_HOME/vms/k1/vm.conf" "$E2E_TMP/vm.conf.good"
echo "cpuz = 2" >>"$VMHOST_HOME/vms/k1/vm.conf"
expect_error bad-definition "vm.conf:[0-9]+: unknown key 'cpuz'" "$VMHOST" vm start k1
cp "$E2E_TMP/vm.conf.good" "$VMHOST_HOME/vms/k1/vm.conf"
e2e_finish
