#!/usr/bin/env bash
# tests/e2e/t-web-hosts.sh: 'vmhost web' driving a VM of another host. Host
# b (tests/e2e/lib-hosts.sh: a network namespace with its own sshd and
# private vmhost state) holds VM r1, a TCG test guest booted from the
# kernel; this side ("a") runs the web server and reaches b only over
# OpenSSH. Checks:
#   listed        r1 shows in /api/vms under host b, stopped
#   start         POST /api/hosts/b/vms/r1/start starts it on b (its QEMU
#                 runs in b's namespace) and /api/vms says running
#   errors        a delete of the running r1 and a start of a missing VM fail
#                 with exactly what 'vmhost --host b vm start' prints; an
#                 unknown host is 404, a malformed one 400, "local" is this
#                 host, keys and a screenshot of a remote VM are 404 (the
#                 page sends keys over the relayed VNC screen)
#   more          monitor, snapshot create/list/revert/delete and the CD of
#                 b's r1 by b's vmhost: answers and errors as the CLI's
#   serial        the serial console over the websocket: the guest's boot
#                 output (scrollback), a command's output; a second viewer
#                 shares the one relay on b; a ticket of b's r1 opens
#                 nothing of a local r1
#   vnc           RFB through the relay: version, no password, ServerInit
#                 and a full framebuffer update of the screen's size
#   no-listen     nothing of the consoles listens on TCP, here or on b
#   stop          POST .../stop stops it; /api/vms says stopped; a console
#                 of the stopped VM is the relay's error (409)
#   the page      in headless chromium (tests/browser/hosts.mjs): r1's
#                 buttons start it, open its serial console (the ready
#                 line) and screen, stop it
#   delete        .../delete-plan names what goes on b; DELETE
#                 /api/hosts/b/vms/r1 removes it from b
#   ssh fails     a host where nothing listens: an action and a console are
#                 502 with the CLI's message
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init web-hosts
need curl python3 ssh qemu-system-x86_64 ss node /usr/bin/chromium
VMHOST=${VMHOST:-$ROOT/build/src/cli/vmhost}
[ -x "$VMHOST" ] || { fail vmhost-built "$VMHOST is not built"; e2e_finish; }
VMHOST=$(readlink -f "$VMHOST")
if [ ! -d "$ROOT/tests/browser/node_modules/playwright-core" ] || [ ! -f "$ROOT/web/vendor/novnc/core/rfb.js" ]; then
	fail need-npm "tests/browser/node_modules or web/vendor is not installed (tools/install-deps)"
	e2e_finish
fi
# shellcheck source=tests/e2e/lib-hosts.sh
source "$HERE/lib-hosts.sh"
trap 'rc=$?; "$VMHOST" --host b vm stop r1 --timeout 5 >/dev/null 2>&1; hosts_cleanup; (exit $rc); e2e_cleanup' EXIT
hosts_init
GUEST_DIR=${VMHOST_GUEST_DIR:-}
if [ -z "$GUEST_DIR" ]; then
	"$VMHOST" guest build >/dev/null || { fail guest-build; e2e_finish; }
	GUEST_DIR=$VMHOST_HOME/guest
fi
[ -s "$GUEST_DIR/vmlinuz" ] || { fail guest "no $GUEST_DIR/vmlinuz"; e2e_finish; }
cd "$E2E_TMP" || exit 1

host_new b || e2e_finish
out=$(host_add b 2>&1) && pass "host add b" || { fail "host add b" "$out"; e2e_finish; }
# The kernel and initrd are at the same path on b (only its vmhost
# directories are its own).
# A disk for its snapshots (the guest does not use it).
qemu-img create -q -f qcow2 "$E2E_TMP/r1.qcow2" 16M || { fail "qemu-img create"; e2e_finish; }
out=$("$VMHOST" --host b vm create r1 --disk "$E2E_TMP/r1.qcow2" --boot kernel --kernel "$GUEST_DIR/vmlinuz" --initrd "$GUEST_DIR/initrd.img" \
	--append "console=ttyS0 quiet panic=-1 vmhost.name=r1" --memory 128M 2>&1) ||
	{ fail "vm create r1 on b" "$out"; e2e_finish; }
# A local VM of the same name, to tell the two apart.
"$VMHOST" vm create r1 --boot kernel --kernel "$GUEST_DIR/vmlinuz" --initrd "$GUEST_DIR/initrd.img" \
	--append "console=ttyS0 quiet panic=-1 vmhost.name=local" --memory 128M >/dev/null 2>&1 ||
	fail "vm create local r1"

"$VMHOST" web --listen 127.0.0.1:0 >web.out 2>web.err &
server=$!
track_pid "$server"
wait_until 10 "printed URL" grep -q '^http://127.0.0.1:[0-9]*/?token=' web.out || { cat web.err; e2e_finish; }
url=$(head -1 web.out)
base=${url%%/\?*}
hostport=${base#http://}
curl -s -c jar -o /dev/null "$url"
cookie=$(awk '/vmhost_session/ {print $6 "=" $7}' jar)
csrf=$(curl -s -b jar "$base/api/session" | python3 -c 'import json,sys; print(json.load(sys.stdin)["csrf"])')
# req METHOD PATH [JSON]: with the CSRF header; body in api.out, status printed
req() {
	curl -s -o api.out -w '%{http_code}' -X "$1" -b jar -H "X-VMHost-CSRF: $csrf" -H 'Content-Type: application/json' \
		${3:+-d "$3"} "$base$2"
}
err_of() { python3 -c 'import json; print(json.load(open("api.out")).get("error", ""))'; }
# state HOST VM: the VM's state in GET /api/vms ("" when not listed)
state() {
	curl -s -b jar "$base/api/vms" | python3 -c 'import json,sys
for h in json.load(sys.stdin):
    if h["host"] == sys.argv[1]:
        for v in h.get("vms") or []:
            if v["name"] == sys.argv[2]:
                print(v["state"])' "$1" "$2"
}
state_is() { [ "$(state "$1" "$2")" = "$3" ]; }

# ------------------------------------------------------------------ listed
wait_until 20 "r1 of b listed stopped" state_is b r1 stopped && pass listed "b/r1 stopped"

# ------------------------------------------------------------------ start
c=$(req POST /api/hosts/b/vms/r1/start)
[ "$c" = 200 ] && pass start-200 "$(cat api.out)" || fail start-200 "$c $(cat api.out)"
wait_until 20 "r1 of b running in /api/vms" state_is b r1 running && pass start-listed "b/r1 running"
state_is local r1 stopped && pass start-not-local "local r1 still stopped" || fail start-not-local "local r1: $(state local r1)"
qemu_in_b=0
for p in $(ip netns pids "$(host_ns b)"); do
	grep -q 'vmhost.name=r1' "/proc/$p/cmdline" 2>/dev/null && qemu_in_b=1
done
[ $qemu_in_b = 1 ] && pass start-on-b "QEMU in b's namespace" || fail start-on-b "no QEMU of r1 in b's namespace"
wait_until 90 "r1's ready line on b" grep -qs VMHOST-READY "$(host_dir b)/state/vms/r1/serial.log"

# ------------------------------------------------------------------ errors
# (A start of a running VM is no error: what was asked for is true.)
c=$(req DELETE /api/hosts/b/vms/r1)
page=$(err_of)
cli=$("$VMHOST" --host b vm delete r1 2>&1 >/dev/null)
[ "$c" = 409 ] && [ -n "$cli" ] && [ "$page" = "$cli" ] && state_is b r1 running && pass error-verbatim "$page" ||
	fail error-verbatim "status $c, page '$page', CLI '$cli'"
c=$(req POST /api/hosts/b/vms/nope/start)
page=$(err_of)
cli=$("$VMHOST" --host b vm start nope 2>&1 >/dev/null)
[ "$c" = 409 ] && [ -n "$cli" ] && [ "$page" = "$cli" ] && pass error-missing-vm "$page" ||
	fail error-missing-vm "status $c, page '$page', CLI '$cli'"
c=$(req POST /api/hosts/zz/vms/r1/start)
[ "$c" = 404 ] && grep -q "No host 'zz'" api.out && pass unknown-host-404 "$(cat api.out)" ||
	fail unknown-host-404 "$c $(cat api.out)"
c=$(req POST '/api/hosts/b.c/vms/r1/start')
[ "$c" = 400 ] && pass bad-host-400 "$(cat api.out)" || fail bad-host-400 "$c $(cat api.out)"
c=$(req POST /api/hosts/zz/vms/r1/console-ticket '{"kind": "serial"}')
[ "$c" = 404 ] && grep -q "No host 'zz'" api.out && pass unknown-host-ticket-404 ||
	fail unknown-host-ticket-404 "$c $(cat api.out)"
c=$(req POST /api/hosts/local/vms/nope/start)
[ "$c" = 404 ] && grep -q 'nope' api.out && pass local-alias "$(cat api.out)" || fail local-alias "$c $(cat api.out)"
c=$(req POST /api/hosts/local/hosts/local/vms/nope/start)
[ "$c" = 404 ] && grep -q 'expected /api/hosts/HOST/vms/NAME' api.out && pass local-alias-once "$(cat api.out)" ||
	fail local-alias-once "$c $(cat api.out)"
c=$(req POST /api/hosts/b/vms/r1/keys '{"keys": ["ctrl", "alt", "delete"]}')
[ "$c" = 404 ] && grep -q 'relayed VNC screen' api.out && pass remote-keys-404 "$(cat api.out)" ||
	fail remote-keys-404 "$c $(cat api.out)"
c=$(curl -s -o api.out -w '%{http_code}' -b jar "$base/api/hosts/b/vms/r1/screenshot.png")
[ "$c" = 404 ] && grep -q 'no screenshot' api.out && pass remote-screenshot-404 "$(cat api.out)" ||
	fail remote-screenshot-404 "$c $(cat api.out)"

# ------------------------------------------------------------------ more
# The rest of a VM's controls, by b's vmhost over ssh: each answer is what
# 'vmhost --host b vm ...' prints, the snapshot list and a delete's plan
# the JSON of b's 'vm web-query' (the fields a local VM's page gets).
out_of() { python3 -c 'import json,sys; print(json.load(open("api.out")).get(sys.argv[1], ""))' "$1"; }
c=$(req POST /api/hosts/b/vms/r1/monitor '{"command": "info status"}')
page=$(out_of output)
cli=$("$VMHOST" --host b vm monitor r1 'info status' 2>&1)
[ "$c" = 200 ] && [ -n "$cli" ] && [ "$page" = "$cli" ] && pass monitor-remote "$page" ||
	fail monitor-remote "status $c, page '$page', CLI '$cli'"
c=$(req POST /api/hosts/b/vms/r1/monitor '{"command": "quit"}')
page=$(err_of)
cli=$("$VMHOST" --host b vm monitor r1 quit 2>&1 >/dev/null)
[ "$c" = 400 ] && [ -n "$cli" ] && [ "$page" = "$cli" ] && state_is b r1 running && pass monitor-remote-error "$page" ||
	fail monitor-remote-error "status $c, page '$page', CLI '$cli'"
c=$(req POST /api/hosts/b/vms/r1/snapshots '{"name": "web-s1"}')
page=$(out_of message)
[ "$c" = 200 ] && [ "$page" = "Snapshot web-s1 of VM r1: created (full machine state, VM running)." ] &&
	pass snapshot-create-remote "$page" || fail snapshot-create-remote "status $c $(cat api.out)"
c=$(req GET /api/hosts/b/vms/r1/snapshots)
cli=$("$VMHOST" --host b vm snapshot list r1 2>&1)
python3 - "$cli" <<'PY' && pass snapshot-list-remote "$(cat api.out)" || fail snapshot-list-remote "status $c $(cat api.out) / CLI: $cli"
import json, sys
d = json.load(open("api.out"))
s = [x for x in d["snapshots"] if x["tag"] == "web-s1"]
sys.exit(not (d["name"] == "r1" and len(s) == 1 and s[0]["vm-state-size"] > 0 and s[0]["date"] > 0
              and d["text"].rstrip("\n") == sys.argv[1]))
PY
# (Not a revert to a missing snapshot: QEMU's loadvm then leaves the
# guest paused, which vm_snapshot() does not undo.)
c=$(req POST /api/hosts/b/vms/r1/snapshots/web-s1/revert)
page=$(out_of message)
st=$("$VMHOST" --host b vm monitor r1 'info status' 2>&1)
[ "$c" = 200 ] && [ "$page" = "Snapshot web-s1 of VM r1: reverted to (full machine state, VM running)." ] &&
	[ "$st" = "VM status: running" ] && pass snapshot-revert-remote "$page" ||
	fail snapshot-revert-remote "status $c $(cat api.out); $st"
c=$(req DELETE /api/hosts/b/vms/r1/snapshots/nosuch)
# (QEMU's delvm of a missing snapshot succeeds: so does 'vm snapshot delete'.)
page=$(out_of message)$(err_of)
cli=$("$VMHOST" --host b vm snapshot delete r1 nosuch 2>&1)
[ -n "$cli" ] && [ "$page" = "$cli" ] && pass snapshot-delete-remote-missing "$c: $page" ||
	fail snapshot-delete-remote-missing "status $c, page '$page', CLI '$cli'"
c=$(req DELETE /api/hosts/b/vms/r1/snapshots/web-s1)
page=$(out_of message)
[ "$c" = 200 ] && [ "$page" = "Snapshot web-s1 of VM r1: deleted (full machine state, VM running)." ] &&
	! "$VMHOST" --host b vm snapshot list r1 2>&1 | grep -q web-s1 && pass snapshot-delete-remote "$page" ||
	fail snapshot-delete-remote "status $c $(cat api.out)"
# The ISO's path is on b: one that b lacks is b's error, word for word.
c=$(req POST /api/hosts/b/vms/r1/cdrom '{"iso": "/nonexistent/web.iso"}')
page=$(err_of)
cli=$("$VMHOST" --host b vm cdrom r1 insert /nonexistent/web.iso 2>&1 >/dev/null)
[ "$c" = 409 ] && [ -n "$cli" ] && [ "$page" = "$cli" ] && pass cdrom-remote-error "$page" ||
	fail cdrom-remote-error "status $c, page '$page', CLI '$cli'"
c=$(req POST /api/hosts/b/vms/r1/cdrom '{"eject": true}')
page=$(out_of message)$(err_of)
cli=$("$VMHOST" --host b vm cdrom r1 eject 2>&1)
[ -n "$cli" ] && [ "$page" = "$cli" ] && pass cdrom-eject-remote "$c: $page" ||
	fail cdrom-eject-remote "status $c, page '$page', CLI '$cli'"
c=$(curl -s -o api.out -w '%{http_code}' -X POST -b jar "$base/api/hosts/b/vms/r1/stop")
[ "$c" = 403 ] && state_is b r1 running && pass remote-needs-csrf || fail remote-needs-csrf "$c $(cat api.out)"

# ------------------------------------------------------------------ websockets
cat >ws.py <<'EOF'
import base64, hashlib, json, os, socket, struct, sys

HOSTPORT, COOKIE = sys.argv[1], sys.argv[2]

def handshake(path):
    h, p = HOSTPORT.split(":")
    s = socket.create_connection((h, int(p)), timeout=20)
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: {HOSTPORT}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nCookie: {COOKIE}\r\n"
               f"Origin: http://{HOSTPORT}\r\nSec-WebSocket-Protocol: binary\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            break
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head else 0
    want = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    if status == 101 and b"Sec-WebSocket-Accept: " + want not in head:
        raise SystemExit("wrong Sec-WebSocket-Accept")
    return s, status, Stream(s, rest), rest if status != 101 else b""

def send(s, op, data):
    n, m = len(data), os.urandom(4)
    h = bytes([0x80 | op]) + (bytes([0x80 | n]) if n < 126 else bytes([0x80 | 126]) + struct.pack(">H", n))
    s.sendall(h + m + bytes(b ^ m[i % 4] for i, b in enumerate(data)))

class Stream:
    """The binary messages' bytes as one stream (RFB and serial do not
    care where the messages split)."""
    def __init__(self, s, rest):
        self.s, self.raw, self.data = s, rest, b""
    def _need(self, n):
        while len(self.raw) < n:
            d = self.s.recv(65536)
            if not d:
                raise EOFError("closed")
            self.raw += d
        r, self.raw = self.raw[:n], self.raw[n:]
        return r
    def frame(self):
        b0, b1 = self._need(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self._need(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self._need(8))[0]
        return b0 & 0x0F, self._need(n)
    def more(self):
        op, d = self.frame()
        if op == 8:
            raise EOFError("close %d" % (struct.unpack(">H", d[:2])[0] if len(d) >= 2 else 1005))
        if op == 2:
            self.data += d
    def read(self, n):
        while len(self.data) < n:
            self.more()
        r, self.data = self.data[:n], self.data[n:]
        return r
    def until(self, text):
        while text.encode() not in self.data:
            self.more()
        return self.data.decode(errors="replace")

cmd = sys.argv[3]
if cmd == "status":          # status PATH: the handshake's status and body
    s, st, r, body = handshake(sys.argv[4])
    print(st, body.decode(errors="replace"))
elif cmd == "serial":        # serial PATH1 PATH2 DONE: scrollback, a command, a second viewer; both
                             # kept open until file DONE exists
    s1, st1, r1, _ = handshake(sys.argv[4])
    if st1 != 101:
        raise SystemExit(f"first viewer: {st1}")
    back = r1.until("VMHOST-READY")
    n = int.from_bytes(os.urandom(2), "big")
    send(s1, 2, f"echo web$(({n}+1))\n".encode())
    first = f"web{n + 1}" in r1.until(f"web{n + 1}")
    s2, st2, r2, _ = handshake(sys.argv[5])
    if st2 != 101:
        raise SystemExit(f"second viewer: {st2}")
    send(s2, 2, f"echo two$(({n}*2))\n".encode())
    both = f"two{n * 2}" in r1.until(f"two{n * 2}") and f"two{n * 2}" in r2.until(f"two{n * 2}")
    # Both open: the caller counts the relays on b now.
    print(json.dumps({"scrollback": "VMHOST-READY name=r1" in back, "first": first, "both": both}), flush=True)
    import time
    while not os.path.exists(sys.argv[6]):
        time.sleep(0.05)
    send(s1, 8, struct.pack(">H", 1000))
    send(s2, 8, struct.pack(">H", 1000))
elif cmd == "vnc":           # vnc PATH: RFB 3.8, None security, one full raw framebuffer update
    s, st, r, _ = handshake(sys.argv[4])
    if st != 101:
        raise SystemExit(f"vnc: {st}")
    ver = r.read(12)
    send(s, 2, b"RFB 003.008\n")
    types = r.read(r.read(1)[0])
    send(s, 2, b"\x01")
    result = struct.unpack(">I", r.read(4))[0]
    send(s, 2, b"\x01")  # ClientInit: shared
    w, h = struct.unpack(">HH", r.read(4))
    pf = r.read(16)
    name = r.read(struct.unpack(">I", r.read(4))[0]).decode(errors="replace")
    bpp = pf[0]
    # SetEncodings: Raw only; then one non-incremental update of everything.
    send(s, 2, struct.pack(">BxHi", 2, 1, 0))
    send(s, 2, struct.pack(">BBHHHH", 3, 0, 0, 0, w, h))
    covered = 0
    while covered < w * h:
        mtype = r.read(1)[0]
        if mtype != 0:
            raise SystemExit(f"server message {mtype} before the update")
        (nrect,) = struct.unpack(">xH", r.read(3))
        for _ in range(nrect):
            x, y, rw, rh, enc = struct.unpack(">HHHHi", r.read(12))
            if enc != 0:
                raise SystemExit(f"encoding {enc}, not raw")
            r.read(rw * rh * bpp // 8)
            covered += rw * rh
    print(json.dumps({"version": ver.decode().strip(), "types": list(types), "result": result,
                      "size": f"{w}x{h}", "bpp": bpp, "pixels": covered, "name": name}))
EOF
ws() { timeout 40 python3 ws.py "$hostport" "$cookie" "$@" 2>&1; }
# ticket HOST VM KIND
ticket() {
	req POST "/api/hosts/$1/vms/$2/console-ticket" "{\"kind\": \"$3\"}" >/dev/null
	python3 -c 'import json; print(json.load(open("api.out")).get("ticket", "none"))'
}
# relays_on_b: how many 'vm console-relay' run on b
relays_on_b() {
	local p n=0
	for p in $(ip netns pids "$(host_ns b)"); do
		tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | grep -q '^[^ ]*vmhost vm console-relay ' && n=$((n + 1))
	done
	echo $n
}
# tcp_listeners PID: TCP sockets PID listens on (in its namespace)
tcp_listeners() { ss -Hltnp 2>/dev/null | grep -c "pid=$1," ; }

# ------------------------------------------------------------------ serial
# Another host's ticket opens nothing of the local r1 (and the reverse).
t=$(ticket b r1 serial)
out=$(ws status "/api/vms/r1/console/serial?ticket=$t")
[ "$t" != none ] && [ "${out%% *}" = 403 ] && pass ticket-is-per-host "$out" || fail ticket-is-per-host "ticket $t: $out"
t=$(ticket local r1 serial)
out=$(ws status "/api/hosts/b/vms/r1/console/serial?ticket=$t")
[ "$t" != none ] && [ "${out%% *}" = 403 ] && pass local-ticket-not-remote "$out" ||
	fail local-ticket-not-remote "ticket $t: $out"

t1=$(ticket b r1 serial) t2=$(ticket b r1 serial)
ws serial "/api/hosts/b/vms/r1/console/serial?ticket=$t1" "/api/hosts/b/vms/r1/console/serial?ticket=$t2" \
	"$E2E_TMP/serial.done" >serial.out &
ser_pid=$!
wait_until 45 "the serial viewers' answer" grep -q . serial.out
grep -q '"scrollback": true, "first": true, "both": true' serial.out && pass serial-remote "$(cat serial.out)" ||
	{ sleep 1; fail serial-remote "$(cat serial.out)"; }
n=$(relays_on_b)
[ "$n" = 1 ] && pass serial-one-relay "two viewers, $n relay on b" || fail serial-one-relay "$n relays on b"
listen_local=$(tcp_listeners "$server")
listen_b=$(ip netns exec "$(host_ns b)" ss -Hltn 2>/dev/null | grep -vc ':22 ')
# (while the consoles are open: a relay runs on b)
[ "$n" = 1 ] && [ "$listen_local" = 1 ] && [ "$listen_b" = 0 ] && pass no-listen "server: $listen_local (its own port), b: only sshd" ||
	fail no-listen "server listens on $listen_local, b on $listen_b besides sshd: $(ip netns exec "$(host_ns b)" ss -Hltnp)"
touch "$E2E_TMP/serial.done"
wait "$ser_pid" 2>/dev/null
# The last viewer gone, the relay on b ends (the chardev is free for 'vm console').
[ "$n" = 1 ] && wait_until 10 "the serial relay on b gone" bash -c "[ \"\$(ip netns pids $(host_ns b) | while read -r p; do tr '\0' ' ' </proc/\$p/cmdline 2>/dev/null; echo; done | grep -c 'vm console-relay')\" = 0 ]" &&
	pass serial-relay-ends

# ------------------------------------------------------------------ vnc
out=$(ws vnc "/api/hosts/b/vms/r1/console/vnc?ticket=$(ticket b r1 vnc)")
python3 -c 'import json,sys; v=json.loads(sys.argv[1]); sys.exit(not (v["version"]=="RFB 003.008" and v["types"]==[1] and v["result"]==0 and v["size"]=="720x400" and v["pixels"]==720*400 and "r1" in v["name"]))' "$out" 2>/dev/null &&
	pass vnc-remote "$out" || fail vnc-remote "$out"

# ------------------------------------------------------------------ stop
c=$(req POST /api/hosts/b/vms/r1/stop)
[ "$c" = 200 ] && pass stop-200 "$(cat api.out)" || fail stop-200 "$c $(cat api.out)"
[ "$c" = 200 ] && wait_until 20 "r1 of b stopped in /api/vms" state_is b r1 stopped && pass stop-listed "b/r1 stopped"
out=$(ws status "/api/hosts/b/vms/r1/console/vnc?ticket=$(ticket b r1 vnc)")
cli=$("$VMHOST" --host b vm console-relay r1 vnc 2>&1 </dev/null)
msg=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1].split(" ", 1)[1])["error"])' "$out" 2>/dev/null)
[ "${out%% *}" = 409 ] && [ -n "$cli" ] && [ "$msg" = "$cli" ] && pass console-stopped-409 "$msg" ||
	fail console-stopped-409 "$out / CLI: $cli"

# ------------------------------------------------------------------ the page
NODE_PATH=$ROOT/tests/browser/node_modules node "$ROOT/tests/browser/hosts.mjs" "$url" b r1 >browser.out 2>&1
rc=$?
while read -r line; do
	case $line in
	PASS\ *) n=${line#PASS }; pass "browser ${n%% *}" "$(sed -n 's/^[^(]*(\(.*\))$/\1/p' <<<"$n")" ;;
	FAIL\ *) n=${line#FAIL }; fail "browser ${n%%:*}" "${n#*: }" ;;
	esac
done <browser.out
[ $rc -eq 0 ] || grep -q '^FAIL' browser.out || fail browser "exit $rc: $(tail -20 browser.out)"
grep -q '^PASS remote-stop' browser.out && state_is b r1 stopped && pass browser-stopped-on-b ||
	fail browser-stopped-on-b "b/r1: $(state b r1)"

# ------------------------------------------------------------------ delete
# What a delete removes and keeps, as b's vm_delete_plan() says: r1's
# definition there goes, the disk it was given stays.
c=$(req GET /api/hosts/b/vms/r1/delete-plan)
python3 - "$E2E_TMP/r1.qcow2" <<'PY' && pass delete-plan-remote "$(cat api.out)" || fail delete-plan-remote "status $c $(cat api.out)"
import json, sys
d = json.load(open("api.out"))
sys.exit(not (d["name"] == "r1" and any(p.startswith("definition: ") and p.endswith("/vms/r1/vm.conf")
                                        for p in d["removed"]) and any(sys.argv[1] in p for p in d["kept"])))
PY
c=$(req GET /api/hosts/b/vms/nope/delete-plan)
page=$(err_of)
[ "$c" = 404 ] || [ "$c" = 409 ] && [[ $page == "vmhost: error: No VM named 'nope'"* ]] && pass delete-plan-remote-error "$c $page" ||
	fail delete-plan-remote-error "status $c, page '$page'"
c=$(req DELETE /api/hosts/b/vms/r1)
[ "$c" = 200 ] && pass delete-200 "$(cat api.out)" || fail delete-200 "$c $(cat api.out)"
wait_until 20 "r1 of b gone from /api/vms" state_is b r1 "" && [ ! -e "$(host_dir b)/state/vms/r1" ] &&
	state_is local r1 stopped && pass delete-on-b "b's r1 gone, the local r1 kept"

# ------------------------------------------------------------------ ssh fails
# A registered host where nothing listens: ssh's own failure, as the CLI
# says it after its program prefix; the console likewise.
printf 'name = down1\nssh = root@127.0.0.1\nport = %s\n' "$(free_port)" >"$VMHOST_HOME/hosts/down1.conf"
c=$(req POST /api/hosts/down1/vms/x/start)
page=$(err_of)
# (The CLI shows ssh's own stderr line first, then this message.)
cli=$("$VMHOST" --host down1 vm start x 2>&1 >/dev/null | tail -1)
[ "$c" = 502 ] && [ "vmhost: error: $page" = "$cli" ] && pass ssh-failure-502 "$page" ||
	fail ssh-failure-502 "status $c, page '$page', CLI '$cli'"
out=$(ws status "/api/hosts/down1/vms/x/console/serial?ticket=$(ticket down1 x serial)")
msg=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1].split(" ", 1)[1])["error"])' "$out" 2>/dev/null)
[ "${out%% *}" = 502 ] && [ "vmhost: error: $msg" = "$cli" ] && pass ssh-failure-console-502 "$msg" ||
	fail ssh-failure-console-502 "$out / CLI: $cli"

kill -INT "$server"
wait_until 10 "server exit" pid_dead "$server"
wait "$server"
rc=$?
# (A sanitizer build reports there, and exits non-zero on a leak.)
[ $rc = 0 ] && ! grep -qE 'AddressSanitizer|runtime error|LeakSanitizer' web.err && pass server-stops "exit 0" ||
	fail server-stops "exit $rc: $(tail -20 web.err)"
e2e_finish
