#!/usr/bin/env bash
# A VM's screen and keyboard are its owner's only. The default display is
# QEMU's VNC on a unix socket (0600 in the VM's 0700 runtime directory) and
# QEMU has no TCP listener at all; 'vmhost vm vnc' opens a relay on
# 127.0.0.1 for one client with a one-time password (QMP set_password),
# expired when the client leaves or nobody came; a TCP display (vm set
# vnc=HOST:DISPLAY, or an old "vnc = 127.0.0.1:N" definition) always
# requires this start's password. The unprivileged user 'nobody' is kept
# out at every endpoint: the VNC, QMP and serial sockets, the relay and the
# TCP display without the password. A VNC client of our own (rfb.py:
# RFB 3.8, VNC authentication with DES) that uses the printed password
# sees the screen, as big as QMP's screendump says it is.
# Runs in a network namespace of its own, so that the 0.0.0.0 display
# opens no port on this machine's network.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init vm-vnc
source "$here/vmhost-env.sh"
need python3 ss ip runuser
[ "$(id -u)" = 0 ] || { echo "SKIP: needs root (runuser, network namespace)"; exit 77; }

NS=vhvnc-$$
ip netns add "$NS" && ip -n "$NS" link set lo up || { fail netns; e2e_finish; }
vh() { ip netns exec "$NS" "$VMHOST" "$@"; }
trap 'rc=$?; vh vm stop v1 --timeout 5 >/dev/null 2>&1; ip netns del "$NS" 2>/dev/null; (exit $rc); e2e_cleanup' EXIT

# The client must be readable by nobody, and every directory above the
# VM's runtime directory traversable: then only the VM's own directory and
# socket modes keep nobody out, which is what is tested.
RFB=$E2E_TMP/rfb.py
install -m 0644 "$here/rfb.py" "$RFB"
python3 "$RFB" --selftest >/dev/null && pass des-known-answer "DES of 'Now is t' under 0123456789abcdef" ||
	fail des-known-answer "$(python3 "$RFB" --selftest)"
rfb() { ip netns exec "$NS" python3 "$RFB" "$@"; }
rfb_nobody() { ip netns exec "$NS" runuser -u nobody -- python3 "$RFB" "$@"; }
# unix_connect_nobody PATH: nobody's connect() to a unix socket; prints the error.
unix_connect_nobody() {
	runuser -u nobody -- python3 -c 'import socket, sys
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(e.strerror); sys.exit(1)
print("connected")' "$1"
}
# qemu_listeners PID: the TCP addresses QEMU listens on, in the namespace.
qemu_listeners() { ip netns exec "$NS" ss -Hltnp | grep "pid=$1," | awk '{print $4}' | sort -u | tr '\n' ' '; }
# png_size FILE: "WxH" from a PNG's header.
png_size() { python3 -c 'import struct, sys
d = open(sys.argv[1], "rb").read(24)
print("%dx%d" % struct.unpack("!II", d[16:24]))' "$1"; }
# session_start OUT [ARGS]: 'vm vnc v1' in the background, its stdout in
# OUT; waits for the password line and sets SESSION_PID, PORT and PW.
session_start() {
	local out=$1 i; shift
	ip netns exec "$NS" "$VMHOST" vm vnc v1 "$@" >"$out" 2>"$out.err" &
	SESSION_PID=$!
	track_pid "$SESSION_PID"
	wait_until 20 "password line from 'vm vnc v1'" grep -q '^password: ' "$out"
	PORT=$(sed -n 's/^endpoint: 127\.0\.0\.1://p' "$out")
	PW=$(sed -n 's/^password: //p' "$out")
}
# session_wait: the session's exit status (it must end by itself).
session_wait() {
	wait_until 20 "end of the 'vm vnc' session $SESSION_PID" pid_dead "$SESSION_PID" || kill "$SESSION_PID"
	wait "$SESSION_PID"
}

out=$(vh vm create v1 --boot kernel --kernel "$GUEST_DIR/vmlinuz" --initrd "$GUEST_DIR/initrd.img" \
	--append "console=ttyS0 quiet panic=-1 no_timer_check vmhost.name=v1" --net none 2>&1) &&
	grep -qx 'vnc = unix' "$VMHOST_HOME/vms/v1/vm.conf" && pass create-default-unix "$(grep VNC <<<"$out")" ||
	fail create-default-unix "$out"
vh vm start v1 --wait --timeout 120 >/dev/null && pass start || { fail start; e2e_finish; }
pid=$(vm_json v1 pid)
rt=$VMHOST_HOME/run/vms/v1
chmod 0755 "$E2E_TMP" "$VMHOST_HOME" "$VMHOST_HOME/run" "$VMHOST_HOME/run/vms"
runuser -u nobody -- test -x "$VMHOST_HOME/run/vms" && pass nobody-reaches-runtime-parent ||
	fail nobody-reaches-runtime-parent "the test setup would prove nothing"

# The default display: a unix socket, and QEMU listens on no TCP port.
sock=$(vh vm vnc v1 --print)
m=$(stat -c '%a %U' "$sock") md=$(stat -c %a "$rt")
[ "$sock" = "$rt/vnc.sock" ] && [ "$(vm_json v1 vnc type)" = unix ] && [ "$(vm_json v1 vnc socket)" = "$sock" ] &&
	[ "$m" = "600 root" ] && [ "$md" = 700 ] && pass unix-socket-private "$sock: $m in a $md directory" ||
	fail unix-socket-private "$sock: $m, dir $md, status $(vm_json v1 vnc)"
l=$(qemu_listeners "$pid")
[ -z "$l" ] && pass no-qemu-tcp-listener || fail no-qemu-tcp-listener "QEMU listens on $l"
tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "-vnc unix:$sock,password=on " && pass qemu-vnc-password-on ||
	fail qemu-vnc-password-on "$(tr '\0' ' ' <"/proc/$pid/cmdline")"

# nobody cannot even connect to the VM's sockets.
for s in vnc qmp serial; do
	e=$(unix_connect_nobody "$rt/$s.sock") && fail "nobody-$s-socket" "$e" ||
		{ [ "$e" = "Permission denied" ] && pass "nobody-$s-socket" "$e" || fail "nobody-$s-socket" "$e"; }
done
# Before any session the socket itself lets nobody in, not even root:
# only VNC authentication is offered, and no password is set yet.
e=$(rfb --unix "$sock" 2>&1); rc=$?
[ $rc = 4 ] && [[ $e == *"security types [2]"* ]] && pass unix-vnc-needs-password "$e" || fail unix-vnc-needs-password "rc $rc: $e"

# A session: the relay listens on 127.0.0.1 (vmhost, not QEMU) and the
# printed password opens the screen; the framebuffer is the screendump's size.
vh vm screenshot v1 "$E2E_TMP/screen.png" >/dev/null && shot=$(png_size "$E2E_TMP/screen.png") &&
	pass screenshot "$shot" || fail screenshot
session_start "$E2E_TMP/s1"
l=$(ip netns exec "$NS" ss -Hltnp | grep ":$PORT " | grep -c "pid=$SESSION_PID,")
[ -n "$PORT" ] && [ ${#PW} = 8 ] && [ "$l" = 1 ] && ip netns exec "$NS" ss -Hltn | grep -q " 127.0.0.1:$PORT " &&
	pass session-listens-loopback "127.0.0.1:$PORT, password of ${#PW} characters" ||
	fail session-listens-loopback "$(cat "$E2E_TMP/s1" "$E2E_TMP/s1.err")"
e=$(rfb 127.0.0.1 "$PORT" --password "$PW" 2>&1); rc=$?
[ $rc = 0 ] && [[ $e == "OK $shot "* ]] && pass client-sees-screen "$e" || fail client-sees-screen "rc $rc: $e (screendump $shot)"
session_wait; rc=$?
[ $rc = 0 ] && grep -q "password is expired" "$E2E_TMP/s1.err" && pass session-ends-with-client "$(tail -1 "$E2E_TMP/s1.err")" ||
	fail session-ends-with-client "rc $rc: $(cat "$E2E_TMP/s1.err")"
e=$(rfb --unix "$sock" --password "$PW" 2>&1); rc=$?
[ $rc = 3 ] && pass password-expired-after-session "$e" || fail password-expired-after-session "rc $rc: $e"
e=$(rfb 127.0.0.1 "$PORT" --password "$PW" 2>&1); rc=$?
[ $rc = 2 ] && pass relay-closed-after-session "$e" || fail relay-closed-after-session "rc $rc: $e"

# nobody at the relay: no password, or a wrong one, is refused by QEMU.
session_start "$E2E_TMP/s2"
e=$(rfb_nobody 127.0.0.1 "$PORT" 2>&1); rc=$?
[ $rc = 4 ] && pass nobody-relay-no-password "$e" || fail nobody-relay-no-password "rc $rc: $e"
session_wait >/dev/null
session_start "$E2E_TMP/s3"
e=$(rfb_nobody 127.0.0.1 "$PORT" --password "${PW:0:7}x" 2>&1); rc=$?
[ $rc = 3 ] && pass nobody-relay-wrong-password "$e" || fail nobody-relay-wrong-password "rc $rc: $e"
session_wait >/dev/null

# One client per session: while it is connected the port takes no other.
session_start "$E2E_TMP/s4"
e=$(ip netns exec "$NS" python3 - "$PORT" <<'EOF'
import socket, sys, time
port = int(sys.argv[1])
first = socket.create_connection(("127.0.0.1", port), timeout=5)
first.recv(12)  # QEMU's greeting through the relay: the session is on
try:
    socket.create_connection(("127.0.0.1", port), timeout=5)
    print("second client connected")
    sys.exit(1)
except OSError as e:
    print("second client: %s" % e.strerror)
EOF
); rc=$?
[ $rc = 0 ] && pass one-client-per-session "$e" || fail one-client-per-session "$e"
session_wait >/dev/null

# Nobody came: the session gives up after --timeout and expires the password.
session_start "$E2E_TMP/s5" --timeout 1
session_wait; rc=$?
e=$(rfb --unix "$sock" --password "$PW" 2>&1); rc2=$?
[ $rc = 1 ] && grep -q "No VNC client came" "$E2E_TMP/s5.err" && [ $rc2 = 3 ] &&
	pass session-timeout-expires "$(cat "$E2E_TMP/s5.err" | tail -1); then: $e" ||
	fail session-timeout-expires "rc $rc/$rc2: $(cat "$E2E_TMP/s5.err") $e"
# Ctrl-C ends a waiting session the same way.
session_start "$E2E_TMP/s6"
kill -INT "$SESSION_PID"
session_wait; rc=$?
e=$(rfb --unix "$sock" --password "$PW" 2>&1); rc2=$?
[ $rc = 0 ] && [ $rc2 = 3 ] && pass session-ctrl-c-expires "$(tail -1 "$E2E_TMP/s6.err")" ||
	fail session-ctrl-c-expires "rc $rc/$rc2: $(cat "$E2E_TMP/s6.err") $e"

# A TCP display open to the network: said so, and password protected.
out=$(vh vm set v1 vnc=0.0.0.0:7 2>&1)
[[ $out == *"reachable from the network"* && $out == *"password protected"* ]] && pass set-network-display-warns "$out" ||
	fail set-network-display-warns "$out"
e=$(vh vm set v1 'vnc=127.0.0.1,password=off:5' 2>&1) && fail set-vnc-option-injection "$e" ||
	{ grep -qx 'vnc = 0.0.0.0:7' "$VMHOST_HOME/vms/v1/vm.conf" && pass set-vnc-option-injection "$e" ||
		fail set-vnc-option-injection "definition changed: $(grep vnc "$VMHOST_HOME/vms/v1/vm.conf")"; }
vh vm restart v1 --wait --timeout 120 >/dev/null || fail restart-tcp
pid=$(vm_json v1 pid)
l=$(qemu_listeners "$pid")
[ "$l" = "0.0.0.0:5907 " ] && [ "$(vm_json v1 vnc password)" = True ] && pass tcp-display-listens "$l" ||
	fail tcp-display-listens "'$l' $(vm_json v1 vnc)"
out=$(vh vm vnc v1)
PW=$(sed -n 's/^password: //p' <<<"$out")
[ "$(sed -n 's/^endpoint: //p' <<<"$out")" = 0.0.0.0:5907 ] && [ ${#PW} = 8 ] &&
	[ "$(stat -c %a "$rt/vnc.password")" = 600 ] && pass tcp-display-password-shown "vnc.password 0600" ||
	fail tcp-display-password-shown "$out"
e=$(rfb_nobody 127.0.0.1 5907 2>&1); rc=$?
[ $rc = 4 ] && pass nobody-tcp-no-password "$e" || fail nobody-tcp-no-password "rc $rc: $e"
e=$(rfb_nobody 127.0.0.1 5907 --password "${PW:0:7}x" 2>&1); rc=$?
[ $rc = 3 ] && pass nobody-tcp-wrong-password "$e" || fail nobody-tcp-wrong-password "rc $rc: $e"
e=$(rfb 127.0.0.1 5907 --password "$PW" 2>&1); rc=$?
[ $rc = 0 ] && [[ $e == "OK $shot "* ]] && pass tcp-client-sees-screen "$e" || fail tcp-client-sees-screen "rc $rc: $e"
vh vm vnc v1 --print | grep -qx 0.0.0.0:5907 && pass tcp-print || fail tcp-print

# An old definition's "vnc = 127.0.0.1:N" is a TCP display with a new
# password at each start; no listener of QEMU's answers without it.
vh vm stop v1 >/dev/null
sed -i 's/^vnc = .*/vnc = 127.0.0.1:8/' "$VMHOST_HOME/vms/v1/vm.conf"
vh vm start v1 --wait --timeout 120 >/dev/null || fail start-old-definition
pid=$(vm_json v1 pid)
PW2=$(vh vm vnc v1 | sed -n 's/^password: //p')
l=$(qemu_listeners "$pid")
unguarded=""
for a in $l; do
	rfb "${a%:*}" "${a##*:}" >/dev/null 2>&1; rc=$?
	[ $rc = 4 ] || unguarded+="$a(rc $rc) "
done
[ "$l" = "127.0.0.1:5908 " ] && [ -z "$unguarded" ] && [ -n "$PW2" ] && [ "$PW2" != "$PW" ] &&
	pass old-definition-password "$l needs a password, a new one after the restart" ||
	fail old-definition-password "listeners '$l', without password: '$unguarded', passwords $PW/$PW2"
e=$(rfb 127.0.0.1 5908 --password "$PW2" 2>&1) && pass old-definition-client "$e" || fail old-definition-client "$e"

# Bad input and a VM without a display.
e=$(vh vm create v2 --disk "$GUEST_DIR/disk.qcow2" --vnc 'a b:1' 2>&1) && fail create-bad-vnc "$e" ||
	{ [[ $e == *"vnc must be unix, none or HOST:DISPLAY"* ]] && ! vh vm status v2 >/dev/null 2>&1 &&
		pass create-bad-vnc "$e" || fail create-bad-vnc "$e"; }
vh vm create v3 --disk "$GUEST_DIR/disk.qcow2" --vnc none >/dev/null
e=$(vh vm vnc v3 2>&1) && fail vnc-none "$e" || { [[ $e == *"has no VNC display"* ]] && pass vnc-none "$e" || fail vnc-none "$e"; }
e=$(vh vm vnc v1 --bogus 2>&1); rc=$?
[ $rc = 2 ] && pass vnc-bad-option || fail vnc-bad-option "rc $rc: $e"
# 'vm set' takes effect at the next start: a session on a VM still running
# its TCP display says so instead of relaying to a socket that is not there.
vh vm set v1 vnc=unix >/dev/null
e=$(vh vm vnc v1 --timeout 5 2>&1) && fail vnc-changed-while-running "$e" ||
	{ [[ $e == *"started without vnc = unix (restart it)"* ]] && pass vnc-changed-while-running "$e" ||
		fail vnc-changed-while-running "$e"; }
vh vm stop v1 >/dev/null
[ ! -e "$rt/vnc.password" ] && [ ! -e "$rt/vnc.sock" ] && pass stop-removes-vnc-files || fail stop-removes-vnc-files "$(ls -la "$rt")"
e2e_finish
