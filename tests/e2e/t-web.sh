#!/usr/bin/env bash
# tests/e2e/t-web.sh: 'vmhost web' against real curl, real QEMU and a real
# browser. The refusals: a non-loopback --listen without TLS at start, no
# session (401), a wrong token (401), a wrong Host or Origin (403), a POST
# without or with a wrong CSRF header (403), '..' and %2e%2e paths (404), a
# huge header (431), a huge body (413); a client sending a header byte a
# second is dropped after the request deadline while a second client is
# served at once; more idle clients than the cap, or clients without a
# session holding one byte each, do not lock others out;
# pipelined requests are answered in order; a refusal is read, not reset
# (a 100 KB header, 20 times); Host and Origin may say localhost (also on
# [::1]) but no other name or port; event streams are bounded (24 a
# session, 48 in all) and requests still get in; sessions end when idle
# and at their lifetime (a server with 2 s and 5 s), and the 33rd sign-in
# drops the oldest; an ended session's event stream and console close
# with it (evicted: at once; idle: on time). Then the API: /api/vms has
# 'vm list --json's objects and the hosts of 'vm list --all-hosts --json'
# (a registered host that does not answer is down there), the event stream
# shows a VM the CLI creates within a second, actions return the CLI's
# messages (404 for a VM that does not exist, 409 for deleting a running
# one), an action waiting for a VM's lock does not hold up other requests;
# then the page in headless chromium (tests/browser/dashboard.mjs); Ctrl-C
# stops the server and leaves the VMs running.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
source "$here/lib.sh"
e2e_init web
source "$here/vmhost-env.sh"
trap 'vmhost_cleanup_vms; e2e_cleanup' EXIT
need curl python3 node /usr/bin/chromium
if [ ! -d "$top/tests/browser/node_modules/playwright-core" ]; then
	fail need-playwright "tests/browser/node_modules is not installed (tools/install-deps runs npm ci there)"
	e2e_finish
fi
cd "$E2E_TMP"

create_args() { # create_args NAME: the test guest, as JSON for dashboard.mjs or lines for the shell
	printf '%s\n' --boot kernel --kernel "$GUEST_DIR/vmlinuz" --initrd "$GUEST_DIR/initrd.img" \
		--append "console=ttyS0 quiet panic=-1 vmhost.name=$1" --memory 128M
}
vm_create() { mapfile -t a < <(create_args "$1"); "$VMHOST" vm create "$1" "${a[@]}" >/dev/null; }

# --- refused at start
out=$("$VMHOST" web --listen 0.0.0.0:0 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q -- '--tls-cert' <<<"$out" && pass non-loopback-refused "$out" ||
	fail non-loopback-refused "exit $rc: $out"
out=$("$VMHOST" web --listen nonsense 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q 'ADDRESS:PORT' <<<"$out" && pass bad-listen-refused || fail bad-listen-refused "exit $rc: $out"

# A registered host that does not answer: asked in the background, listed
# as down with the CLI's reason.
mkdir -p "$VMHOST_HOME/hosts"
printf 'name = down1\nssh = root@127.0.0.1\nport = %s\n' "$(free_port)" >"$VMHOST_HOME/hosts/down1.conf"

# --- the server
"$VMHOST" web --listen 127.0.0.1:0 >web.out 2>web.err &
server=$!
track_pid "$server"
wait_until 10 "printed URL" grep -q '^http://127.0.0.1:[0-9]*/?token=[0-9a-f]\{64\}$' web.out || {
	cat web.err
	e2e_finish
}
url=$(head -1 web.out)
base=${url%%/\?*}
hostport=${base#http://}
pass url-printed "$url"

status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }

# --- no session
[ "$(status "$base/")" = 401 ] && pass no-cookie-401-page || fail no-cookie-401-page
[ "$(status "$base/api/vms")" = 401 ] && pass no-cookie-401-api || fail no-cookie-401-api
[ "$(status "$base/?token=$(printf '%064d' 0)")" = 401 ] && pass wrong-token-401 || fail wrong-token-401

# --- the token exchange
curl -s -D login.h -o /dev/null -c jar "$url"
grep -q '^HTTP/1.1 303' login.h && grep -qi '^Location: /\s*$' login.h &&
	grep -qi '^Set-Cookie: vmhost_session_[0-9]*=[0-9a-f]\{64\}; HttpOnly; SameSite=Strict; Path=/' login.h &&
	pass token-exchange "$(grep -i '^Set-Cookie' login.h | sed 's/=[0-9a-f]\{64\}/=.../' | tr -d '\r')" ||
	fail token-exchange "$(cat login.h)"
csrf=$(curl -s -b jar "$base/api/session" | python3 -c 'import json,sys; print(json.load(sys.stdin)["csrf"])')
[ ${#csrf} -eq 64 ] && pass csrf-from-session || fail csrf-from-session "'$csrf'"

# --- static files, their types and the security headers
curl -s -D index.h -o index.html -b jar "$base/"
grep -qi '^Content-Type: text/html' index.h && grep -q 'app.js' index.html && pass index-html || fail index-html
for f in "app.js text/javascript" "app.css text/css" "favicon.svg image/svg+xml"; do
	set -- $f
	t=$(curl -s -o /dev/null -w '%{content_type}' -b jar "$base/$1")
	[ "${t%%;*}" = "$2" ] && pass "mime-$1" "$t" || fail "mime-$1" "'$t'"
done
for h in "Content-Security-Policy: default-src 'self'" "frame-ancestors 'none'" "X-Content-Type-Options: nosniff" \
	"Referrer-Policy: no-referrer"; do
	grep -qiF "$h" index.h || fail security-headers "no '$h' in: $(cat index.h)"
done
pass security-headers

# --- paths that leave the folder
for p in "/../../../../etc/passwd" "/%2e%2e/%2e%2e/etc/passwd" "/%2E%2e%2fetc%2fpasswd" "/.%2e/app.js" \
	"//etc/passwd" "/api/../app.js"; do
	c=$(status --path-as-is -b jar "$base$p")
	[ "$c" = 404 ] && pass "path-404 $p" || fail "path-404 $p" "status $c"
done
[ "$(status --path-as-is -b jar "$base/a%00b.js")" = 400 ] && pass encoded-nul-400 || fail encoded-nul-400
[ "$(status -b jar "$base/README.md")" = 404 ] && pass unknown-type-404 || fail unknown-type-404

# --- Host, Origin, CSRF
vm_create w-cli
post() { curl -s -o post.out -w '%{http_code}' -b jar -X POST "$@"; }
c=$(post -H "X-VMHost-CSRF: $csrf" -H "Origin: http://evil.example" "$base/api/vms/w-cli/kill")
[ "$c" = 403 ] && pass wrong-origin-403 "$(cat post.out)" || fail wrong-origin-403 "status $c"
c=$(post -H "X-VMHost-CSRF: $csrf" -H "Host: evil.example:${hostport#*:}" "$base/api/vms/w-cli/kill")
[ "$c" = 403 ] && pass wrong-host-403 "$(cat post.out)" || fail wrong-host-403 "status $c"
c=$(status -b jar -H "Host: rebound.example" "$base/api/vms")
[ "$c" = 403 ] && pass rebinding-get-403 || fail rebinding-get-403 "status $c"
c=$(post "$base/api/vms/w-cli/kill")
[ "$c" = 403 ] && pass post-without-csrf-403 "$(cat post.out)" || fail post-without-csrf-403 "status $c"
c=$(post -H "X-VMHost-CSRF: $(printf '%064d' 0)" "$base/api/vms/w-cli/kill")
[ "$c" = 403 ] && pass post-wrong-csrf-403 || fail post-wrong-csrf-403 "status $c"
c=$(post -H "X-VMHost-CSRF: $csrf" -H "Origin: http://$hostport" "$base/api/vms/w-cli/kill")
[ "$c" = 200 ] && pass post-same-origin-ok "$(cat post.out)" || fail post-same-origin-ok "status $c: $(cat post.out)"

# Host and Origin may name localhost on loopback, with this port only; on
# [::1] too (a review found only the literal address accepted there).
# (The cookie by hand: curl matches its jar against the Host given.)
port=${hostport#*:}
ck="Cookie: $(awk '$6 ~ /^vmhost_session_/ { print $6 "=" $7 }' jar)"
got="$(status -H "$ck" -H "Host: localhost:$port" "$base/api/session") $(status -H "$ck" -H "Host: LocalHost:$port" "$base/api/session")"
got+=" $(status -H "$ck" -H "Host: localhost:$((port + 1))" "$base/api/session") $(status -H "$ck" -H "Host: localhost" "$base/api/session")"
got+=" $(status -H "$ck" -H "Host: 127.0.0.2:$port" "$base/api/session")"
[ "$got" = "200 200 403 403 403" ] && pass host-localhost "localhost:PORT, LocalHost:PORT, another port, no port, 127.0.0.2: $got" ||
	fail host-localhost "localhost:PORT, LocalHost:PORT, another port, no port, 127.0.0.2: $got"
c=$(post -H "X-VMHost-CSRF: $csrf" -H "Origin: http://localhost:$port" "$base/api/vms/nope/start")
c2=$(post -H "X-VMHost-CSRF: $csrf" -H "Origin: http://localhost:$((port + 1))" "$base/api/vms/nope/start")
[ "$c $c2" = "404 403" ] && pass origin-localhost "same port: 404 for a VM that does not exist; another port: $c2" ||
	fail origin-localhost "same port $c, another port $c2"
"$VMHOST" web --listen '[::1]:0' >web6.out 2>web6.err &
server6=$!
track_pid "$server6"
if wait_until 10 "printed URL" grep -q '^http://\[::1\]:[0-9]*/?token=' web6.out; then
	url6=$(head -1 web6.out)
	base6=${url6%%/\?*}
	port6=${base6##*:}
	curl -s -o /dev/null -c jar6 "$url6"
	ck6="Cookie: $(awk '$6 ~ /^vmhost_session_/ { print $6 "=" $7 }' jar6)"
	got="$(status -H "$ck6" "$base6/api/session") $(status -H "$ck6" -H "Host: localhost:$port6" "$base6/api/session")"
	got+=" $(status -H "$ck6" -H "Origin: http://localhost:$port6" "$base6/api/session") $(status -H "$ck6" -H "Host: evil.example:$port6" "$base6/api/session")"
	[ "$got" = "200 200 200 403" ] && pass host-localhost-ipv6 "[::1]:PORT, Host localhost:PORT, Origin localhost, evil.example: $got" ||
		fail host-localhost-ipv6 "[::1]:PORT, Host localhost:PORT, Origin localhost, evil.example: $got"
	kill -INT "$server6"
	wait "$server6"
else
	fail host-localhost-ipv6 "no URL: $(cat web6.err)"
fi

# --- limits
big=$(head -c 20000 /dev/zero | tr '\0' a)
c=$(status -b jar -H "X-Big: $big" "$base/api/vms")
[ "$c" = 431 ] && pass huge-header-431 || fail huge-header-431 "status $c"
c=$(curl -s -o /dev/null -w '%{http_code}' -b jar -X POST -H "X-VMHost-CSRF: $csrf" -H 'Content-Type: text/plain' \
	--data-binary @<(head -c 100000 /dev/zero) "$base/api/vms/w-cli/kill")
[ "$c" = 413 ] && pass huge-body-413 || fail huge-body-413 "status $c"

# A refusal is read, not reset: a client that sent a 100 KB header gets
# its 431 every time (the server shuts its side and drains before it
# closes; closing with unread input sent a reset, seen as ECONNRESET).
cat >drain.py <<'EOF'
import socket, sys
port = int(sys.argv[1])
req = ("GET /api/vms HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nX-Big: %s\r\n\r\n" % (port, "a" * 100000)).encode()
got = []
for i in range(20):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    data = b""
    try:
        s.sendall(req)
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
        got.append(data.split(b"\r\n")[0].decode(errors="replace") or "closed without an answer")
    except OSError as e:
        got.append("%s after %d bytes" % (e.__class__.__name__, len(data)))
    s.close()
bad = [g for g in got if g != "HTTP/1.1 431 Request Header Fields Too Large"]
print("%d of 20 read the 431%s" % (20 - len(bad), ": " + ", ".join(bad[:5]) if bad else ""))
sys.exit(1 if bad else 0)
EOF
out=$(python3 drain.py "${hostport#*:}" 2>&1) && pass refusal-read-not-reset "$out" || fail refusal-read-not-reset "$out"

# Keep-alive with pipelining: two requests in one write, answered in order
# on one connection; HEAD gets the headers only.
cat >pipe.py <<'EOF'
import socket, sys
port, cookie = int(sys.argv[1]), sys.argv[2]
s = socket.create_connection(("127.0.0.1", port), timeout=10)
req = "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nCookie: %s\r\n\r\n"
s.sendall((req % ("GET", "/api/session", port, cookie) + req % ("HEAD", "/app.css", port, cookie)).encode())
data = b""
while data.count(b"HTTP/1.1 ") < 2 or not data.endswith(b"\r\n\r\n"):
    d = s.recv(65536)
    if not d:
        break
    data += d
first, _, rest = data.partition(b"HTTP/1.1 200 OK\r\n")[2].partition(b"HTTP/1.1 ")
ok = b'"csrf"' in first and rest.startswith(b"200") and b"text/css" in rest and rest.endswith(b"\r\n\r\n")
print("two answers in order, HEAD without body" if ok else "got: %r" % data[:600])
sys.exit(0 if ok else 1)
EOF
cookie=$(awk '$6 ~ /^vmhost_session_/ { print $6 "=" $7 }' jar)
out=$(python3 pipe.py "${hostport#*:}" "$cookie" 2>&1) && pass pipelined-keep-alive "$out" || fail pipelined-keep-alive "$out"

# A slowloris client (one header byte a second) is dropped at the request
# deadline (10 s), and meanwhile another client is answered at once; so
# are clients past the cap of 64 when idle ones hold every slot.
cat >slow.py <<'EOF'
import socket, sys, time
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port))
s.sendall(b"GET /api/vms HTTP/1.1\r\nHost: 127.0.0.1\r\n")
t0 = time.monotonic()
s.settimeout(0.5)
try:
    while time.monotonic() - t0 < 30:
        try:
            s.sendall(b"X")
        except (BrokenPipeError, ConnectionResetError):
            break
        try:
            d = s.recv(100)
            if d == b"" or d:
                print("closed %.1f %s" % (time.monotonic() - t0, d.split(b"\r\n")[0].decode(errors="replace")))
                sys.exit(0)
        except socket.timeout:
            pass
        time.sleep(0.5)
except ConnectionResetError:
    pass
print("closed %.1f reset" % (time.monotonic() - t0))
EOF
python3 slow.py "${hostport#*:}" >slow.out &
slow=$!
track_pid "$slow"
sleep 2
t0=$(e2e_now)
c=$(status -m 5 -b jar "$base/api/session")
dt=$(e2e_elapsed "$t0")
[ "$c" = 200 ] && awk -v d="$dt" 'BEGIN { exit !(d < 1) }' && pass slow-client-does-not-stall "$dt s" ||
	fail slow-client-does-not-stall "status $c after $dt s"
wait "$slow"
read -r _ at what <slow.out
awk -v a="$at" 'BEGIN { exit !(a >= 9 && a <= 13) }' && pass slowloris-dropped "after $at s: $what" ||
	fail slowloris-dropped "$(cat slow.out)"

cat >idle.py <<'EOF'
import socket, sys, time
socks = [socket.create_connection(("127.0.0.1", int(sys.argv[1]))) for _ in range(80)]
print("open", flush=True)
time.sleep(float(sys.argv[2]))
EOF
python3 idle.py "${hostport#*:}" 8 >idle.out &
idle=$!
track_pid "$idle"
wait_until 5 "idle clients" grep -q open idle.out
c=$(status -m 5 -b jar "$base/api/session")
[ "$c" = 200 ] && pass idle-clients-capped "80 idle connections open" || fail idle-clients-capped "status $c"
stop_pid "$idle"

# Without a session, one byte on each of 80 connections (more than the 64
# slots), reconnecting as the server drops them, must not lock out a
# client that has one: the server closes the oldest unfinished request of
# a client without a session to make room (a review found 503 here).
cat >flood.py <<'EOF'
import socket, sys, time
port, secs = int(sys.argv[1]), float(sys.argv[2])
def one():
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"G")
    s.setblocking(False)
    return s
socks = [one() for _ in range(80)]
print("open", flush=True)
end = time.monotonic() + secs
while time.monotonic() < end:
    for i, s in enumerate(socks):
        try:
            if s.recv(4096) != b"":
                continue
        except BlockingIOError:
            continue
        except OSError:
            pass
        s.close()
        socks[i] = one()
    time.sleep(0.05)
EOF
python3 flood.py "${hostport#*:}" 6 >flood.out &
flood=$!
track_pid "$flood"
wait_until 5 "the one-byte clients" grep -q open flood.out
ok=0
for _ in 1 2 3; do
	c=$(status -m 5 -b jar "$base/api/session")
	[ "$c" = 200 ] && ok=$((ok + 1))
	sleep 1
done
[ "$ok" = 3 ] && pass unauthenticated-flood-does-not-lock-out "3 of 3 requests with a session answered 200 under 80 one-byte clients" ||
	fail unauthenticated-flood-does-not-lock-out "$ok of 3 answered 200 (last status $c)"
stop_pid "$flood"

# The same without timing: every slot held by a one-byte client, then
# the owner connects and has sent nothing yet when one more one-byte
# client comes. The owner's connection must not be the one closed for
# room (it was: accepted but unread, it counted as idle and went first).
cat >fresh.py <<'EOF'
import socket, sys, time
port, jar = int(sys.argv[1]), sys.argv[2]
cookie = None
for line in open(jar):
    f = line.rstrip("\n").split("\t")
    if len(f) == 7 and f[5].startswith("vmhost_session"):
        cookie = "%s=%s" % (f[5], f[6])
def one(data=b"G"):
    s = socket.create_connection(("127.0.0.1", port))
    if data:
        s.sendall(data)
    return s
flood = [one() for _ in range(64)]
time.sleep(0.3)
owner = one(None)
time.sleep(0.3)
flood.append(one())
time.sleep(0.3)
owner.sendall(("GET /api/session HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nCookie: %s\r\n"
               "Connection: close\r\n\r\n" % (port, cookie)).encode())
owner.settimeout(5)
try:
    answer = owner.recv(4096).split(b"\r\n")[0].decode()
except OSError as e:
    answer = "no answer: %s" % e
print(answer or "closed without an answer")
EOF
out=$(python3 fresh.py "${hostport#*:}" jar 2>&1)
[ "$out" = "HTTP/1.1 200 OK" ] && pass new-client-not-evicted-before-read "$out" ||
	fail new-client-not-evicted-before-read "$out"

# --- event streams and consoles are bounded: 24 a session, 48 in all,
# so that the other 16 of the 64 slots are left for requests (they are
# never closed for room; a review found all 64 could be held).
for i in 1 2 3; do curl -s -o /dev/null -c "held$i.jar" "$url"; done
cat >held.py <<'EOF'
import socket, sys, time
port, jars = int(sys.argv[1]), sys.argv[2:]
cookies = []
for jar in jars:
    for line in open(jar):
        f = line.rstrip("\n").split("\t")
        if len(f) == 7 and f[5].startswith("vmhost_session"):
            cookies.append("%s=%s" % (f[5], f[6]))
def open_req(cookie, path="/api/events", extra=""):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nCookie: %s\r\n%s\r\n" % (path, port, cookie, extra)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(4096)
        if not d:
            break
        head += d
    return s, head
def status(head):
    return head.split(b"\r\n")[0].decode(errors="replace")
bad = []
held = []
def streams(cookie, n, want):
    for _ in range(n):
        s, head = open_req(cookie)
        if not status(head).startswith(want):
            bad.append("wanted %s, got %r" % (want, head[:300]))
        held.append(s)
streams(cookies[0], 24, "HTTP/1.1 200")
s, extra = open_req(cookies[0])
print("25th of a session:", status(extra), extra.split(b"\r\n\r\n", 1)[1][:200].decode(errors="replace"))
if not status(extra).startswith("HTTP/1.1 429") or b"24 event streams" not in extra:
    bad.append("25th stream of a session: %r" % extra[:300])
ws = ("Upgrade: websocket\r\nConnection: Upgrade\r\nOrigin: http://127.0.0.1:%d\r\nSec-WebSocket-Version: 13\r\n"
      "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" % port)
s, h = open_req(cookies[0], "/api/vms/w-cli/console/serial?ticket=x", ws)
if not status(h).startswith("HTTP/1.1 429"):
    bad.append("a console past the session's bound: %r" % h[:300])
streams(cookies[1], 24, "HTTP/1.1 200")
s, extra = open_req(cookies[2])
print("49th in all:", status(extra), extra.split(b"\r\n\r\n", 1)[1][:200].decode(errors="replace"))
if not status(extra).startswith("HTTP/1.1 503") or b"48 event streams" not in extra:
    bad.append("49th stream: %r" % extra[:300])
# Requests still get slots: 20 kept open at once (the answered ones are
# closed for room past 64), each answered.
reqs = [open_req(cookies[2], "/api/session")[1] for _ in range(20)]
n_ok = sum(status(h).startswith("HTTP/1.1 200") for h in reqs)
print("requests beside 48 streams: %d of 20 answered 200" % n_ok)
if n_ok != 20:
    bad.append("requests: %r" % [status(h) for h in reqs])
# A stream closed gives its place back (once the server has seen it go).
held.pop(0).close()
deadline = time.time() + 3
while True:
    s, h = open_req(cookies[0])
    if status(h).startswith("HTTP/1.1 200") or time.time() > deadline:
        break
    time.sleep(0.2)
if not status(h).startswith("HTTP/1.1 200"):
    bad.append("after closing one: %r" % h[:300])
print("\n".join(bad) or "ok")
sys.exit(1 if bad else 0)
EOF
out=$(python3 held.py "${hostport#*:}" held1.jar held2.jar held3.jar 2>&1) && pass streams-bounded "$(tr '\n' ';' <<<"$out")" ||
	fail streams-bounded "$out"

# --- sessions end: idle, lifetime, and at most 32 of them
# A server whose sessions idle out after 2 s and live 5 s at most (the
# defaults, 12 h and 7 days, are the same code with other numbers).
for bad in "--session-idle 0" "--session-lifetime 2x" "--session-idle 400d" "--server-name evil.example" \
	"--listen 127.0.0.1:0 --server-name a:1"; do
	out=$("$VMHOST" web $bad 2>&1); rc=$?
	[ $rc -eq 2 ] && pass "refused $bad" "$out" || fail "refused $bad" "exit $rc: $out"
done
"$VMHOST" web --listen 127.0.0.1:0 --session-idle 2 --session-lifetime 5 >web2.out 2>web2.err &
server2=$!
track_pid "$server2"
wait_until 10 "printed URL" grep -q '^http://127.0.0.1:[0-9]*/?token=' web2.out || fail web2 "$(cat web2.err)"
url2=$(head -1 web2.out)
base2=${url2%%/\?*}
nosession=$(curl -s "$base2/api/vms")
login2() { curl -s -o /dev/null -c "$1" "$url2"; }
login2 idle.jar
t0=$(e2e_now)
s1=$(status -b idle.jar "$base2/api/session")
sleep 2.5
body=$(curl -s -w ' %{http_code}' -b idle.jar "$base2/api/session")
[ "$s1" = 200 ] && [ "$body" = "$nosession 401" ] && pass session-idle-expires "200, then after 2.5 s idle: $body" ||
	fail session-idle-expires "first $s1, then $body (no session: $nosession)"
[ "$(status -b idle.jar "$base2/api/session")" = 401 ] && pass session-idle-stays-expired || fail session-idle-stays-expired
login2 life.jar
t0=$(e2e_now)
got=""
for i in 1 2 3 4; do got+="$(status -b life.jar "$base2/api/session") "; sleep 1; done
sleep 1.5
body=$(curl -s -w ' %{http_code}' -b life.jar "$base2/api/session")
[ "$got" = "200 200 200 200 " ] && [ "$body" = "$nosession 401" ] && pass session-lifetime-expires "used each second: $got; at 5.5 s: $body" ||
	fail session-lifetime-expires "used each second: $got; at 5.5 s: $body"
for i in $(seq 1 33); do login2 "many$i.jar"; done
got="$(status -b many1.jar "$base2/api/session") $(status -b many2.jar "$base2/api/session") $(status -b many33.jar "$base2/api/session")"
[ "$got" = "401 200 200" ] && pass sessions-bounded-oldest-goes "33 sign-ins: the first $got" ||
	fail sessions-bounded-oldest-goes "first, second, 33rd: $got"
kill -INT "$server2"
wait "$server2"

# --- the API: the same objects as 'vm list --json'
curl -s -b jar "$base/api/vms" >api.json
"$VMHOST" vm list --json >cli.json
python3 - api.json cli.json <<'EOF' >cmp.out 2>&1 && pass api-vms-is-vm-list "$(cat cmp.out)" || fail api-vms-is-vm-list "$(cat cmp.out)"
import json, sys
api = json.load(open(sys.argv[1]))
cli = json.load(open(sys.argv[2]))
local = [h for h in api if h["host"] == "local"]
if len(local) != 1 or not local[0]["reachable"]:
    print("no reachable local host in %s" % api)
    sys.exit(1)
vms = local[0]["vms"]
for v in vms + cli:
    v.pop("started", None)
if vms != cli:
    print("differ: %s vs %s" % (vms, cli))
    sys.exit(1)
print("%d VMs, keys %s" % (len(vms), ",".join(sorted(vms[0])) if vms else "-"))
EOF

# The cluster view: the same hosts, reachability and reasons as
# 'vm list --all-hosts --json', the down host included.
wait_until 10 "down1 in /api/vms" sh -c "curl -s -b jar '$base/api/vms' | grep -q '\"host\":\"down1\"'"
curl -s -b jar "$base/api/vms" >api.json
"$VMHOST" vm list --all-hosts --json >cli-all.json
python3 - api.json cli-all.json <<'EOF' >cmp.out 2>&1 && pass api-vms-all-hosts "$(cat cmp.out)" || fail api-vms-all-hosts "$(cat cmp.out)"
import json, sys
pick = lambda l: [(h["host"], h["reachable"], h["error"], [v["name"] for v in h["vms"]]) for h in l]
api, cli = pick(json.load(open(sys.argv[1]))), pick(json.load(open(sys.argv[2])))
if api != cli:
    print("differ: %s vs %s" % (api, cli))
    sys.exit(1)
print("; ".join("%s %s" % (h[0], "up" if h[1] else "down: " + h[2]) for h in api))
EOF

# The event stream shows a VM the CLI creates, within a second.
curl -s -N -b jar "$base/api/events" >events.txt &
events=$!
track_pid "$events"
wait_until 5 "first event" grep -q '^event: vms' events.txt
t0=$(e2e_now)
vm_create w-new
wait_until 1 "w-new in the event stream" grep -q '"name":"w-new"' events.txt &&
	pass event-after-cli-create "$(e2e_elapsed "$t0") s after the create returned"
stop_pid "$events"

# Errors are the CLI's messages.
c=$(post -H "X-VMHost-CSRF: $csrf" "$base/api/vms/nosuch/start")
cli_err=$("$VMHOST" vm start nosuch 2>&1)
api_err=$(python3 -c 'import json,sys; print(json.load(open("post.out"))["error"])')
[ "$c" = 404 ] && grep -qF "$api_err" <<<"$cli_err" && pass missing-vm-404 "$api_err" ||
	fail missing-vm-404 "status $c: '$api_err' vs CLI '$cli_err'"
c=$(post -H "X-VMHost-CSRF: $csrf" "$base/api/vms/bad.name/start")
[ "$c" = 400 ] && pass bad-name-400 || fail bad-name-400 "status $c"
c=$(post -H "X-VMHost-CSRF: $csrf" "$base/api/vms/w-new/start")
[ "$c" = 200 ] && pass api-start "$(cat post.out)" || fail api-start "status $c: $(cat post.out)"
c=$(curl -s -o post.out -w '%{http_code}' -b jar -X DELETE -H "X-VMHost-CSRF: $csrf" "$base/api/vms/w-new")
cli_err=$("$VMHOST" vm delete w-new 2>&1)
api_err=$(python3 -c 'import json,sys; print(json.load(open("post.out"))["error"])')
[ "$c" = 409 ] && grep -qF "$api_err" <<<"$cli_err" && pass delete-running-409 "$api_err" ||
	fail delete-running-409 "status $c: '$api_err' vs CLI '$cli_err'"

# An action that waits does not hold up others: another process holds
# the VM's lock (as a CLI command under way does), so the page's stop
# waits for it; meanwhile the server answers, and once the lock is free
# the stop goes through.
"$VMHOST" vm start w-new --wait --timeout 120 >/dev/null 2>&1 || fail w-new-ready
python3 - "$VMHOST_HOME/run/vms/w-new.lock" <<'EOF' >lock.out &
import fcntl, sys, time
f = open(sys.argv[1], "a")
fcntl.lockf(f, fcntl.LOCK_EX)
print("locked", flush=True)
time.sleep(3)
EOF
locker=$!
track_pid "$locker"
wait_until 5 "lock held" grep -q locked lock.out
curl -s -o stop.out -b jar -X POST -H "X-VMHost-CSRF: $csrf" "$base/api/vms/w-new/stop" &
stopper=$!
sleep 0.5
t0=$(e2e_now)
c=$(status -m 5 -b jar "$base/api/session")
dt=$(e2e_elapsed "$t0")
if kill -0 "$stopper" 2>/dev/null && [ "$c" = 200 ]; then
	pass action-does-not-block "session answered in $dt s while the stop waited for the lock"
else
	fail action-does-not-block "status $c in $dt s; the stop finished already: $(cat stop.out)"
fi
wait "$stopper"
grep -q 'stopped (the guest powered off)' stop.out && pass api-stop-after-lock "$(cat stop.out)" ||
	fail api-stop-after-lock "$(cat stop.out)"

# --- snapshots, the CD, create from a base, the facts of a delete
jpost() { curl -s -o post.out -w '%{http_code}' -b jar -X POST -H "X-VMHost-CSRF: $csrf" -H 'Content-Type: application/json' "$@"; }
field() { python3 -c 'import json,sys; print(json.load(open("post.out")).get(sys.argv[1], ""))' "$1"; }
expect() { # expect NAME WANT_STATUS GOT_STATUS: pass with the body, or fail
	[ "$3" = "$2" ] && pass "$1" "$(head -c 200 post.out)" || fail "$1" "status $3, want $2: $(head -c 300 post.out)"
}
cp "$GUEST_DIR/disk.qcow2" base.qcow2
c=$(jpost --data '{"name":"w-base","base":"'"$E2E_TMP"'/base.qcow2","memory":"192M","cpus":"2"}' "$base/api/vms")
expect api-create-from-base 200 "$c"
[ "$(vm_json w-base memory)" = $((192 << 20)) ] && [ "$(vm_json w-base cpus)" = 2 ] &&
	pass api-create-as-cli "$("$VMHOST" vm status w-base --json | head -c 200)" || fail api-create-as-cli
c=$(jpost --data '{"name":"w-base","base":"'"$E2E_TMP"'/base.qcow2"}' "$base/api/vms")
cli_err=$("$VMHOST" vm create w-base --base "$E2E_TMP/base.qcow2" 2>&1)
[ "$c" = 409 ] && grep -qF "$(field error)" <<<"$cli_err" && pass api-create-exists-409 "$(field error)" ||
	fail api-create-exists-409 "status $c: $(cat post.out) vs CLI $cli_err"
c=$(jpost --data '{"name":"w-x","base":"'"$E2E_TMP"'/base.qcow2","memory":"lots"}' "$base/api/vms")
expect api-create-bad-memory-400 400 "$c"
c=$(jpost --data '{"name":"bad.name","base":"/x"}' "$base/api/vms"); expect api-create-bad-name-400 400 "$c"
c=$(jpost --data '{"name":"w-x","base":"base.qcow2"}' "$base/api/vms"); expect api-create-relative-400 400 "$c"
c=$(jpost --data '{"name":"w-x","base":"/nonexistent.qcow2"}' "$base/api/vms"); expect api-create-missing-base 404 "$c"
c=$(jpost --data '[1,2' "$base/api/vms"); expect api-create-bad-json-400 400 "$c"
c=$(jpost --data '{"a":{"b":{"c":1}}}' "$base/api/vms"); expect api-body-too-deep-400 400 "$c"
c=$(curl -s -o post.out -w '%{http_code}' -b jar -X POST --data '{"name":"w-x","base":"/x"}' "$base/api/vms")
expect api-create-no-csrf-403 403 "$c"

# Snapshots of a stopped VM (the disk's): create, list, revert, delete.
c=$(jpost --data '{"name":"s1"}' "$base/api/vms/w-base/snapshots"); expect api-snapshot-create 200 "$c"
c=$(curl -s -o post.out -w '%{http_code}' -b jar "$base/api/vms/w-base/snapshots")
python3 -c 'import json; d=json.load(open("post.out")); assert [s["tag"] for s in d["snapshots"]] == ["s1"], d' 2>/dev/null &&
	"$VMHOST" vm snapshot list w-base | grep -q ' s1 ' && pass api-snapshot-list "$(head -c 200 post.out)" ||
	fail api-snapshot-list "status $c: $(cat post.out)"
c=$(jpost "$base/api/vms/w-base/snapshots/s1/revert"); expect api-snapshot-revert 200 "$c"
c=$(jpost "$base/api/vms/w-base/snapshots/nosnap/revert")
cli_err=$("$VMHOST" vm snapshot revert w-base nosnap 2>&1)
[ "$c" != 200 ] && grep -qF "$(field error)" <<<"$cli_err" && pass api-snapshot-revert-missing "$c: $(field error)" ||
	fail api-snapshot-revert-missing "status $c: $(cat post.out) vs CLI $cli_err"
c=$(jpost --data '{"name":"has space"}' "$base/api/vms/w-base/snapshots"); expect api-snapshot-bad-name-400 400 "$c"
c=$(jpost --data '{"nom":"x"}' "$base/api/vms/w-base/snapshots"); expect api-snapshot-bad-body-400 400 "$c"
c=$(jpost --data '{"name":"s2"}' "$base/api/vms/nosuch/snapshots"); expect api-snapshot-missing-vm-404 404 "$c"
c=$(jpost --data '{"name":"s2"}' "$base/api/vms/bad.name/snapshots"); expect api-snapshot-bad-vm-400 400 "$c"
c=$(curl -s -o post.out -w '%{http_code}' -b jar -X POST --data '{"name":"s2"}' "$base/api/vms/w-base/snapshots")
expect api-snapshot-no-csrf-403 403 "$c"
c=$(curl -s -o post.out -w '%{http_code}' -b jar -X DELETE -H "X-VMHost-CSRF: $csrf" "$base/api/vms/w-base/snapshots/s1")
expect api-snapshot-delete 200 "$c"

# The CD of a running VM (QEMU up is enough: no --wait).
"$VMHOST" vm start w-new >/dev/null || fail w-new-restart
c=$(jpost --data '{"iso":"'"$GUEST_DIR"'/guest.iso"}' "$base/api/vms/w-new/cdrom"); expect api-cdrom-insert 200 "$c"
[ "$(vm_json w-new cdrom)" = "$(readlink -f "$GUEST_DIR/guest.iso")" ] && pass api-cdrom-in-definition ||
	fail api-cdrom-in-definition "$(vm_json w-new cdrom)"
c=$(jpost --data '{"eject":true}' "$base/api/vms/w-new/cdrom"); expect api-cdrom-eject 200 "$c"
"$VMHOST" vm monitor w-new 'info block cd0-media' | grep -q "not inserted" && pass api-cdrom-ejected ||
	fail api-cdrom-ejected "$("$VMHOST" vm monitor w-new 'info block cd0-media')"
c=$(jpost --data '{"iso":"guest.iso"}' "$base/api/vms/w-new/cdrom"); expect api-cdrom-relative-400 400 "$c"
c=$(jpost --data '{"iso":"/dev/null"}' "$base/api/vms/w-new/cdrom"); expect api-cdrom-device-400 400 "$c"
c=$(jpost --data '{"iso":"/nonexistent.iso"}' "$base/api/vms/w-new/cdrom")
cli_err=$("$VMHOST" vm cdrom w-new insert /nonexistent.iso 2>&1)
# 409, as for any file of an existing VM that is missing (web-jobs.c).
[ "$c" = 409 ] && grep -qF "$(field error)" <<<"$cli_err" && pass api-cdrom-missing-iso-409 "$(field error)" ||
	fail api-cdrom-missing-iso-409 "status $c: $(cat post.out) vs CLI $cli_err"
c=$(jpost --data '{"iso":"/x","eject":true}' "$base/api/vms/w-new/cdrom"); expect api-cdrom-bad-body-400 400 "$c"
c=$(jpost --data '{"eject":true}' "$base/api/vms/nosuch/cdrom"); expect api-cdrom-missing-vm-404 404 "$c"
c=$(curl -s -o post.out -w '%{http_code}' -b jar -X POST --data '{"eject":true}' "$base/api/vms/w-new/cdrom")
expect api-cdrom-no-csrf-403 403 "$c"

# What a delete removes and keeps, from the library.
c=$(curl -s -o post.out -w '%{http_code}' -b jar "$base/api/vms/w-base/delete-plan")
python3 - "$E2E_TMP/base.qcow2" <<'EOF2' >cmp.out 2>&1 && pass api-delete-plan "$(cat cmp.out)" || fail api-delete-plan "status $c: $(cat cmp.out)"
import json, sys
d = json.load(open("post.out"))
assert any(r.startswith("definition: ") for r in d["removed"]), d
assert any(r.startswith("its own disk: ") for r in d["removed"]), d
assert "base image: " + sys.argv[1] in d["kept"], d
print("removed %d, kept %s" % (len(d["removed"]), d["kept"]))
EOF2
c=$(curl -s -o post.out -w '%{http_code}' -b jar "$base/api/vms/nosuch/delete-plan"); expect api-delete-plan-missing-404 404 "$c"

# --- a session's streams and consoles end with it
# A server whose sessions idle out after 3 s. Session E opens an event
# stream, then 32 more sign in: E, the least recently used, is evicted
# and its stream closes at once. Session S opens an event stream and a
# console (the running w-new's screen) and then sends nothing: both close
# when it idles out (3 s after its last request; the server looks every
# 250 ms), not before.
"$VMHOST" web --listen 127.0.0.1:0 --session-idle 3 >web3.out 2>web3.err &
server3=$!
track_pid "$server3"
wait_until 10 "printed URL" grep -q '^http://127.0.0.1:[0-9]*/?token=' web3.out || fail web3 "$(cat web3.err)"
url3=$(head -1 web3.out)
base3=${url3%%/\?*}
cat >held-end.py <<'EOF2'
import base64, json, os, socket, sys, time, urllib.request
hostport, vm = sys.argv[1], sys.argv[2]
def sign_in():
    h, p = hostport.split(":")
    s = socket.create_connection((h, int(p)), timeout=10)
    s.sendall(f"GET /?token={sys.argv[3]} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n".encode())
    head = s.recv(65536).decode()
    s.close()
    return [l.split(":", 1)[1].strip().split(";")[0] for l in head.split("\r\n") if l.lower().startswith("set-cookie:")][0]
def request(cookie, method, path, body=None, csrf=None):
    r = urllib.request.Request(f"http://{hostport}{path}", method=method, data=body,
                               headers={"Cookie": cookie, **({"X-VMHost-CSRF": csrf} if csrf else {})})
    return json.load(urllib.request.urlopen(r, timeout=10))
def open_raw(cookie, path, extra=""):
    h, p = hostport.split(":")
    s = socket.create_connection((h, int(p)), timeout=10)
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: {hostport}\r\nCookie: {cookie}\r\n" + extra + "\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        d = s.recv(4096)
        if not d:
            break
        head += d
    return s, head.split(b" ")[1].decode() if head else "none"
def ends_after(socks, t0, limit):
    """Seconds from t0 until each socket's end (EOF or reset), or None."""
    out = []
    for s in socks:
        s.settimeout(max(0.01, t0 + limit - time.time()))
        try:
            while s.recv(65536):
                s.settimeout(max(0.01, t0 + limit - time.time()))
            out.append(round(time.time() - t0, 2))
        except ConnectionResetError:
            out.append(round(time.time() - t0, 2))
        except socket.timeout:
            out.append(None)
    return out
res = {}
e = sign_in()
es, st = open_raw(e, "/api/events")
res["evict_stream"] = st
t0 = time.time()
for i in range(32):
    sign_in()
res["evicted_after"] = ends_after([es], t0, 2.5)[0]
c = sign_in()
csrf = request(c, "GET", "/api/session")["csrf"]
ss, st1 = open_raw(c, "/api/events")
ticket = request(c, "POST", f"/api/vms/{vm}/console-ticket", b'{"kind": "vnc"}', csrf)["ticket"]
key = base64.b64encode(os.urandom(16)).decode()
ws, st2 = open_raw(c, f"/api/vms/{vm}/console/vnc?ticket={ticket}",
                   f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   f"Sec-WebSocket-Version: 13\r\nOrigin: http://{hostport}\r\n")
t0 = time.time()
res.update({"stream": st1, "console": st2})
res["stream_closed_after"], res["console_closed_after"] = ends_after([ss, ws], t0, 8)
print(json.dumps(res))
EOF2
out=$(timeout 40 python3 held-end.py "${base3#http://}" w-new "${url3##*token=}" 2>&1)
python3 -c 'import json,sys; v=json.loads(sys.argv[1]); sys.exit(not (v["evict_stream"] == "200" and v["evicted_after"] is not None and v["evicted_after"] < 1.5 and v["stream"] == "200" and v["console"] == "101" and all(x is not None and 2.5 <= x < 4.5 for x in (v["stream_closed_after"], v["console_closed_after"]))))' "$out" 2>/dev/null &&
	pass session-end-closes-held "$out" || fail session-end-closes-held "$out"
kill -INT "$server3"
wait "$server3"

# --- the page in a real browser
vm_create b-a
# Its kernel goes away after the create: its start fails.
cp "$GUEST_DIR/vmlinuz" kernel.copy
mapfile -t a < <(create_args b-broken)
a[3]=$E2E_TMP/kernel.copy
"$VMHOST" vm create b-broken "${a[@]}" >/dev/null
rm kernel.copy
vm_create b-doomed
export VM_CREATE_ARGS
VM_CREATE_ARGS=$(create_args b-b | python3 -c 'import json,sys; print(json.dumps(sys.stdin.read().splitlines()))')
export GUEST_ISO=$GUEST_DIR/guest.iso BASE_IMAGE=$E2E_TMP/base.qcow2
GUEST_ISO_REAL=$(readlink -f "$GUEST_ISO")
export GUEST_ISO_REAL
NODE_PATH=$top/tests/browser/node_modules node "$top/tests/browser/dashboard.mjs" "$url" "$VMHOST" b-a b-b b-broken \
	b-doomed >browser.out 2>&1
rc=$?
while read -r line; do
	case $line in
	PASS\ *) n=${line#PASS }; pass "browser ${n%% *}" "$(sed -n 's/^[^(]*(\(.*\))$/\1/p' <<<"$n")" ;;
	FAIL\ *) n=${line#FAIL }; fail "browser ${n%%:*}" "${n#*: }" ;;
	esac
done <browser.out
[ $rc -eq 0 ] || grep -q '^FAIL' browser.out || fail browser "exit $rc: $(tail -20 browser.out)"

# --- Ctrl-C stops the server; the VMs keep running
"$VMHOST" vm start w-cli >/dev/null 2>&1
kill -INT "$server"
t0=$(e2e_now)
wait_until 5 "server exit" pid_dead "$server" && pass ctrl-c-stops "$(e2e_elapsed "$t0") s: $(tail -1 web.err)"
wait "$server"
rc=$?
[ $rc -eq 0 ] && pass ctrl-c-exit-0 || fail ctrl-c-exit-0 "exit $rc"
[ "$(vm_json w-cli state)" = running ] && pass vms-keep-running || fail vms-keep-running "$(vm_json w-cli state)"

e2e_finish
