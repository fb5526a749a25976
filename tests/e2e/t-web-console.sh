#!/usr/bin/env bash
# tests/e2e/t-web-console.sh: the consoles of 'vmhost web' against a real
# TCG test guest. A raw websocket client (python, below) checks the
# handshake and the refusals: a wrong Origin (403), no Origin (403), no
# session (401), no ticket, a reused one, one for another console or VM
# (403), a bad Sec-WebSocket-Version (426); on an open socket a frame over
# the size limit closes with 1009 and an unmasked one with 1002; ping
# gets pong. The VNC relay speaks RFB and admits without a password; the
# serial console gives the log's scrollback, runs a command, and a second
# viewer sees its output; the monitor, keys, type and screenshot APIs and
# their refusals; then the page in headless chromium
# (tests/browser/console.mjs): the screen drawn and matching a screendump,
# the serial console, two viewers, Ctrl-Alt-Del rebooting the guest.
# Last, a second server with --serial-slow-viewer 64K: a serial viewer
# that never reads is closed (1008) while another gets all of the guest's
# output and goes on.
# VMHOST_WEB_SHOTS=DIR saves the docs' screenshots there.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
source "$here/lib.sh"
e2e_init web-console
source "$here/vmhost-env.sh"
trap 'vmhost_cleanup_vms; e2e_cleanup' EXIT
need curl python3 node /usr/bin/chromium
if [ ! -d "$top/tests/browser/node_modules/playwright-core" ] || [ ! -f "$top/web/vendor/novnc/core/rfb.js" ]; then
	fail need-npm "tests/browser/node_modules or web/vendor is not installed (tools/install-deps)"
	e2e_finish
fi
cd "$E2E_TMP"

"$VMHOST" vm create c1 --boot kernel --kernel "$GUEST_DIR/vmlinuz" --initrd "$GUEST_DIR/initrd.img" \
	--append "console=ttyS0 quiet panic=-1 vmhost.name=c1" --memory 128M >/dev/null
"$VMHOST" vm create c2 --boot kernel --kernel "$GUEST_DIR/vmlinuz" --initrd "$GUEST_DIR/initrd.img" \
	--append "console=ttyS0 quiet panic=-1 vmhost.name=c2" --memory 128M --vnc none >/dev/null
"$VMHOST" vm start c1 --wait >/dev/null || fail start-c1 "vm start c1 failed"

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
api() { # api PATH JSON: POST with the CSRF header; the body in api.out, the status printed
	curl -s -o api.out -w '%{http_code}' -b jar -H "X-VMHost-CSRF: $csrf" -H 'Content-Type: application/json' \
		-d "$2" "$base$1"
}
ticket() { # ticket VM KIND
	api "/api/vms/$1/console-ticket" "{\"kind\": \"$2\"}" >/dev/null
	python3 -c 'import json; print(json.load(open("api.out"))["ticket"])'
}

# --- tickets
c=$(curl -s -o api.out -w '%{http_code}' -b jar -d '{"kind":"vnc"}' "$base/api/vms/c1/console-ticket")
[ "$c" = 403 ] && pass ticket-needs-csrf || fail ticket-needs-csrf "status $c"
c=$(api /api/vms/c1/console-ticket '{"kind":"audio"}')
[ "$c" = 400 ] && pass ticket-bad-kind-400 "$(cat api.out)" || fail ticket-bad-kind-400 "status $c"
c=$(api /api/vms/nope/console-ticket '{"kind":"vnc"}')
[ "$c" = 404 ] && pass ticket-no-vm-404 "$(cat api.out)" || fail ticket-no-vm-404 "status $c"

# --- the websocket client
cat >ws.py <<'EOF'
import base64, json, os, socket, struct, sys

HOSTPORT, COOKIE = sys.argv[1], sys.argv[2]

def handshake(path, cookie=COOKIE, origin="default", extra=""):
    h, p = HOSTPORT.split(":")
    s = socket.create_connection((h, int(p)), timeout=15)
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET {path} HTTP/1.1\r\nHost: {HOSTPORT}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           f"Sec-WebSocket-Key: {key}\r\nCookie: {cookie}\r\n")
    if "Sec-WebSocket-Version" not in extra:
        req += "Sec-WebSocket-Version: 13\r\n"
    if origin:
        req += f"Origin: {'http://' + HOSTPORT if origin == 'default' else origin}\r\n"
    s.sendall((req + extra + "\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            break
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split()[1]) if head else 0
    expect = base64.b64encode(__import__("hashlib").sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
    if status == 101 and f"Sec-WebSocket-Accept: {expect}" not in head.decode():
        raise SystemExit("wrong Sec-WebSocket-Accept: " + head.decode())
    return s, status, Reader(s, rest)

def send(s, op, data, mask=True):
    n = len(data)
    b1 = 0x80 if mask else 0
    h = bytes([0x80 | op]) + (bytes([b1 | n]) if n < 126 else bytes([b1 | 126]) + struct.pack(">H", n)
                               if n < 65536 else bytes([b1 | 127]) + struct.pack(">Q", n))
    if mask:
        m = os.urandom(4)
        h += m
        data = bytes(b ^ m[i % 4] for i, b in enumerate(data))
    s.sendall(h + data)

class Reader:
    def __init__(self, s, rest):
        self.s, self.buf = s, rest
    def need(self, n):
        while len(self.buf) < n:
            d = self.s.recv(65536)
            if not d:
                raise EOFError("closed")
            self.buf += d
        r, self.buf = self.buf[:n], self.buf[n:]
        return r
    def frame(self):
        b0, b1 = self.need(2)
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack(">H", self.need(2))[0]
        elif n == 127:
            n = struct.unpack(">Q", self.need(8))[0]
        return b0 & 0x0F, self.need(n)
    def until_close(self):
        while True:
            op, d = self.frame()
            if op == 8:
                return struct.unpack(">H", d[:2])[0] if len(d) >= 2 else 1005, d[2:].decode()

def serial_until(r, text):
    out = b""
    while text.encode() not in out:
        op, d = r.frame()
        if op == 2:
            out += d
    return out.decode(errors="replace")

cmd = sys.argv[3]
if cmd == "status":          # status PATH [origin|-] [cookie|-] [extra]: the handshake's status
    path = sys.argv[4]
    origin = sys.argv[5] if len(sys.argv) > 5 and sys.argv[5] != "-" else ("default" if len(sys.argv) <= 5 else None)
    cookie = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] != "-" else COOKIE
    extra = sys.argv[7].replace("\\n", "\r\n") if len(sys.argv) > 7 else ""
    print(handshake(path, cookie, origin, extra)[1])
elif cmd == "vnc":           # vnc TICKET: RFB version, security types
    s, st, r = handshake(f"/api/vms/c1/console/vnc?ticket={sys.argv[4]}", extra="Sec-WebSocket-Protocol: binary\r\n")
    op, ver = r.frame()
    send(s, 2, b"RFB 003.008\n")
    op, types = r.frame()
    send(s, 2, b"\x01")
    op, result = r.frame()
    send(s, 2, b"\x01")    # ClientInit, shared
    op, init = r.frame()
    w, h = struct.unpack(">HH", init[:4])
    print(json.dumps({"version": ver.decode().strip(), "types": list(types[1:]), "result": list(result),
                      "size": f"{w}x{h}"}))
elif cmd == "limits":        # limits TICKET KIND: ping, then a frame over the limit
    s, st, r = handshake(f"/api/vms/c1/console/{sys.argv[5]}?ticket={sys.argv[4]}")
    send(s, 9, b"hello")
    while True:
        op, d = r.frame()
        if op == 10:
            break
    pong = d.decode()
    send(s, 2, b"\0" * (64 * 1024 + 1))
    print(json.dumps({"pong": pong, "close": r.until_close()}))
elif cmd == "unmasked":      # unmasked TICKET KIND
    s, st, r = handshake(f"/api/vms/c1/console/{sys.argv[5]}?ticket={sys.argv[4]}")
    send(s, 2, b"x", mask=False)
    print(json.dumps({"close": r.until_close()}))
elif cmd == "serial":        # serial TICKET1 TICKET2: scrollback, a command, a second viewer
    s1, st1, r1 = handshake(f"/api/vms/c1/console/serial?ticket={sys.argv[4]}")
    back = serial_until(r1, "VMHOST-READY")
    n = int.from_bytes(os.urandom(2), "big")
    send(s1, 2, f"echo web$(({n}+1))\n".encode())
    out1 = serial_until(r1, f"web{n + 1}")
    s2, st2, r2 = handshake(f"/api/vms/c1/console/serial?ticket={sys.argv[5]}")
    serial_until(r2, "VMHOST-READY")
    send(s2, 1, f"echo two$(({n}*2))\n".encode())
    a = serial_until(r1, f"two{n * 2}")
    b = serial_until(r2, f"two{n * 2}")
    send(s1, 8, struct.pack(">H", 1000))
    print(json.dumps({"scrollback": "VMHOST-READY name=c1" in back, "first": f"web{n + 1}" in out1,
                      "both": True, "close": r1.until_close()[0]}))
elif cmd == "slow":          # slow TICKET1 TICKET2 LINES: viewer 1 never reads while the guest prints
                             # LINES numbered lines for viewer 2; then how viewer 1 ended
    import time
    # A small receive buffer: the kernel holds little of what viewer 1
    # is sent, so the server's own queue for it grows.
    h, p = HOSTPORT.split(":")
    real = socket.create_connection
    def small(addr, timeout=None):
        so = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        so.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        so.settimeout(timeout)
        so.connect(addr)
        return so
    socket.create_connection = small
    s1, st1, r1 = handshake(f"/api/vms/c1/console/serial?ticket={sys.argv[4]}")
    socket.create_connection = real
    s2, st2, r2 = handshake(f"/api/vms/c1/console/serial?ticket={sys.argv[5]}")
    s2.settimeout(120)
    serial_until(r2, "VMHOST-READY")
    lines, n = int(sys.argv[6]), int.from_bytes(os.urandom(2), "big")
    t0 = time.time()
    send(s2, 2, (f"yes slow-viewer-check-xxxxxxxxxxxxxxxxxxxxxxxxxx | head -n {lines} | cat -n; "
                 f"echo done$(({n}+1))\n").encode())
    out = serial_until(r2, f"done{n + 1}")
    secs = time.time() - t0
    nums = [int(l.split()[0]) for l in out.replace("\r", "").split("\n")
            if l.strip().endswith("slow-viewer-check-" + "x" * 26) and l.split()[0].isdigit()]
    # Viewer 1 now: what was queued for it, then a close frame or the end.
    s1.settimeout(10)
    how, got = "open", 0
    try:
        while True:
            op, d = r1.frame()
            if op == 8:
                how = "close %d: %s" % (struct.unpack(">H", d[:2])[0], d[2:].decode())
                break
            got += len(d)
    except EOFError:
        how = "closed without a close frame"
    except socket.timeout:
        how = "still open"
    # The console after it: viewer 2 still talks to the guest.
    send(s2, 2, f"echo after$(({n}+2))\n".encode())
    after = f"after{n + 2}" in serial_until(r2, f"after{n + 2}")
    send(s2, 8, struct.pack(">H", 1000))
    print(json.dumps({"all": nums == list(range(1, lines + 1)), "lines": len(nums), "secs": round(secs, 1),
                      "slow": how, "slow_bytes": got, "after": after}))
EOF
ws() { timeout 30 python3 ws.py "$hostport" "$cookie" "$@" 2>&1; }

# --- refusals at the handshake
t=$(ticket c1 vnc)
c=$(ws status "/api/vms/c1/console/vnc?ticket=$t" "http://evil.example")
[ "$c" = 403 ] && pass ws-wrong-origin-403 || fail ws-wrong-origin-403 "status $c"
t=$(ticket c1 vnc)
c=$(ws status "/api/vms/c1/console/vnc?ticket=$t" -)
[ "$c" = 403 ] && pass ws-no-origin-403 || fail ws-no-origin-403 "status $c"
t=$(ticket c1 vnc)
c=$(ws status "/api/vms/c1/console/vnc?ticket=$t" "http://$hostport" "x=y")
[ "$c" = 401 ] && pass ws-no-session-401 || fail ws-no-session-401 "status $c"
c=$(ws status "/api/vms/c1/console/vnc")
[ "$c" = 403 ] && pass ws-no-ticket-403 || fail ws-no-ticket-403 "status $c"
t=$(ticket c1 serial)
c=$(ws status "/api/vms/c1/console/vnc?ticket=$t")
[ "$c" = 403 ] && pass ws-ticket-other-kind-403 || fail ws-ticket-other-kind-403 "status $c"
t=$(ticket c2 vnc)
c=$(ws status "/api/vms/c1/console/vnc?ticket=$t")
[ "$c" = 403 ] && pass ws-ticket-other-vm-403 || fail ws-ticket-other-vm-403 "status $c"
t=$(ticket c1 vnc)
c=$(ws status "/api/vms/c1/console/vnc?ticket=$t" "http://$hostport" - 'Sec-WebSocket-Version: 8\n')
[ "$c" = 426 ] && pass ws-version-426 || fail ws-version-426 "status $c"

# --- the VNC relay: RFB with no password (add_client skipauth), then the
# ticket is used up.
t=$(ticket c1 vnc)
out=$(ws vnc "$t")
python3 -c 'import json,sys; v=json.loads(sys.argv[1]); sys.exit(not (v["version"]=="RFB 003.008" and v["types"]==[1] and v["result"]==[0,0,0,0] and v["size"]=="720x400"))' "$out" 2>/dev/null &&
	pass vnc-relay "$out" || fail vnc-relay "$out"
c=$(ws status "/api/vms/c1/console/vnc?ticket=$t")
[ "$c" = 403 ] && pass ws-reused-ticket-403 || fail ws-reused-ticket-403 "status $c"
t=$(ticket c2 vnc)
c=$(ws status "/api/vms/c2/console/vnc?ticket=$t")
[ "$c" = 409 ] && pass vnc-not-running-409 || fail vnc-not-running-409 "status $c"

# --- frame limits on both kinds
for kind in vnc serial; do
	out=$(ws limits "$(ticket c1 $kind)" $kind)
	python3 -c 'import json,sys; v=json.loads(sys.argv[1]); sys.exit(not (v["pong"]=="hello" and v["close"][0]==1009))' "$out" 2>/dev/null &&
		pass "ws-ping-and-1009 $kind" "$out" || fail "ws-ping-and-1009 $kind" "$out"
done
out=$(ws unmasked "$(ticket c1 vnc)" vnc)
grep -q '"close": \[1002' <<<"$out" && pass ws-unmasked-1002 "$out" || fail ws-unmasked-1002 "$out"

# --- the serial console: scrollback, a command, two viewers
out=$(ws serial "$(ticket c1 serial)" "$(ticket c1 serial)")
grep -q '"scrollback": true, "first": true, "both": true, "close": 1000' <<<"$out" &&
	pass serial-two-viewers "$out" || fail serial-two-viewers "$out"

# --- monitor, keys, type, screenshot
c=$(api /api/vms/c1/monitor '{"command": "info status"}')
grep -q 'VM status: running' api.out && [ "$c" = 200 ] && pass monitor "$(cat api.out)" || fail monitor "$c $(cat api.out)"
c=$(api /api/vms/c1/monitor '{"command": "info status\ninfo name"}')
[ "$c" = 400 ] && pass monitor-two-lines-400 || fail monitor-two-lines-400 "status $c"
c=$(api /api/vms/c2/monitor '{"command": "info status"}')
[ "$c" = 409 ] && grep -q 'not running' api.out && pass monitor-not-running-409 "$(cat api.out)" ||
	fail monitor-not-running-409 "$c $(cat api.out)"
c=$(curl -s -o /dev/null -w '%{http_code}' -b jar -d '{"command": "info status"}' "$base/api/vms/c1/monitor")
[ "$c" = 403 ] && pass monitor-needs-csrf || fail monitor-needs-csrf "status $c"
c=$(api /api/vms/c1/keys '{"keys": ["ctrl", "alt", "Delete;"]}')
[ "$c" = 400 ] && pass keys-bad-name-400 || fail keys-bad-name-400 "status $c"
c=$(api /api/vms/c1/type '{"text": "caf\u00e9"}')
[ "$c" = 400 ] && pass type-non-ascii-400 "$(cat api.out)" || fail type-non-ascii-400 "status $c"
c=$(api /api/vms/c1/type '{"text": "Hello, world!"}')
[ "$c" = 200 ] && pass type-text "$(cat api.out)" || fail type-text "$c $(cat api.out)"
c=$(curl -s -o shot.png -w '%{http_code} %{content_type}' -b jar "$base/api/vms/c1/screenshot.png")
[ "$c" = "200 image/png" ] && file shot.png | grep -q 'PNG image data, 720 x 400' && pass screenshot "$(file -b shot.png)" ||
	fail screenshot "$c $(file -b shot.png)"

# --- the page
shots=${VMHOST_WEB_SHOTS:-}
NODE_PATH=$top/tests/browser/node_modules node "$top/tests/browser/console.mjs" "$url" c1 $shots >browser.out 2>&1
rc=$?
while read -r line; do
	case $line in
	PASS\ *) n=${line#PASS }; pass "browser ${n%% *}" "$(sed -n 's/^[^(]*(\(.*\))$/\1/p' <<<"$n")" ;;
	FAIL\ *) n=${line#FAIL }; fail "browser ${n%%:*}" "${n#*: }" ;;
	esac
done <browser.out
[ $rc -eq 0 ] || grep -q '^FAIL' browser.out || fail browser "exit $rc: $(tail -20 browser.out)"

# The serial console was given back when its viewers left: 'vm console'
# style clients can connect (the guest answers one that is not us).
sleep 0.5
out=$(timeout 10 python3 - "$VMHOST_HOME/run/vms/c1/serial.sock" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(8); s.connect(sys.argv[1])
s.sendall(b"echo back$((20+22))\n")
out = b""
while b"back42" not in out:
    d = s.recv(4096)
    if not d: break
    out += d
print("back42" in out.decode(errors="replace"))
EOF
)
[ "$out" = True ] && pass serial-given-back || fail serial-given-back "$out"

kill -INT "$server"
wait_until 5 "server exit" pid_dead "$server" && pass ctrl-c-stops

# --- a slow serial viewer is cut off, the others are not. QEMU's serial
# gives some 10 KB/s, so this server cuts a viewer off at the smallest
# backlog --serial-slow-viewer takes (64 KiB; the default, 1 MiB, would
# take minutes): viewer 1 never reads (and has a small receive buffer)
# while the guest prints 6000 numbered lines (some 350 KB) for viewer 2,
# which gets every one in order; viewer 1 finds what was queued for it
# and then the server's close frame, 1008; viewer 2's console goes on.
"$VMHOST" web --listen 127.0.0.1:0 --serial-slow-viewer 64K >web2.out 2>web2.err &
server=$!
track_pid "$server"
wait_until 10 "printed URL" grep -q '^http://127.0.0.1:[0-9]*/?token=' web2.out || { cat web2.err; e2e_finish; }
url=$(head -1 web2.out)
base=${url%%/\?*}
hostport=${base#http://}
curl -s -c jar2 -o /dev/null "$url"
cookie=$(awk '/vmhost_session/ {print $6 "=" $7}' jar2)
csrf=$(curl -s -b jar2 "$base/api/session" | python3 -c 'import json,sys; print(json.load(sys.stdin)["csrf"])')
api() {
	curl -s -o api.out -w '%{http_code}' -b jar2 -H "X-VMHost-CSRF: $csrf" -H 'Content-Type: application/json' \
		-d "$2" "$base$1"
}
out=$(timeout 150 python3 ws.py "$hostport" "$cookie" slow "$(ticket c1 serial)" "$(ticket c1 serial)" 6000 2>&1)
python3 -c 'import json,sys; v=json.loads(sys.argv[1]); sys.exit(not (v["all"] and v["after"] and v["slow"].startswith("close 1008")))' "$out" 2>/dev/null &&
	pass serial-slow-viewer-cut "$out" || fail serial-slow-viewer-cut "$out"
kill -INT "$server"
wait_until 5 "server exit" pid_dead "$server"
e2e_finish
