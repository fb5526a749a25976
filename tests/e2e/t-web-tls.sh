#!/usr/bin/env bash
# tests/e2e/t-web-tls.sh: 'vmhost web' over TLS against real curl, OpenSSL's
# s_client, python's ssl and a real TCG test guest. At start: --tls-cert
# without --tls-key, a key of mode 0644 and a wildcard address are refused.
# With a certificate given (on loopback): the URL is https and the printed
# fingerprint is the certificate's; curl checks the chain (--cacert); the
# token flow gives a Secure cookie; no cookie and a wrong token get 401, a
# wrong Host, a plain-http Origin and a POST without the CSRF header 403,
# the https Origin passes; TLS 1.1 is refused, 1.2 and 1.3 work; a big
# static file arrives whole; pipelined requests in one TLS record are
# answered in order; plain HTTP to the TLS port gets a plain 400 and the
# server goes on; a client that opens TCP and sends nothing and one that
# sends half a ClientHello do not stall a second client, and are dropped
# at the handshake deadline; a websocket over TLS (wss) to the serial
# console of a running VM checks Origin (https only) and runs a command.
# Then a real non-loopback address (a dummy interface in a network
# namespace) without TLS options: a self-made certificate in
# STATE/web (dir 0700, key 0600) naming that address, which curl trusts
# by --cacert and by its public key pin; a restart reuses it (same
# fingerprint), and with --server-name Host and Origin may name those
# names (without case, with the port, https only) and still no other.
# Last, headless chromium trusts it by its SPKI hash and
# opens the serial console over wss.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
source "$here/lib.sh"
e2e_init web-tls
source "$here/vmhost-env.sh"
ns=vmhost-webtls-$$
trap 'vmhost_cleanup_vms; ip netns del "$ns" 2>/dev/null; e2e_cleanup' EXIT
need curl python3 openssl ip
cd "$E2E_TMP"

fingerprint_of() { # fingerprint_of CERT: "AB:CD:..." as vmhost prints it
	local f
	f=$(openssl x509 -in "$1" -noout -fingerprint -sha256) && echo "${f#*=}"
}
spki_of() { # spki_of CERT: base64 of the SHA-256 of its public key (curl's pin, chromium's list)
	openssl x509 -in "$1" -noout -pubkey | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64
}
start_web() { # start_web OUT ARGS...: the server in the background, $server; waits for the URL in OUT
	local out=$1
	shift
	"$@" >"$out" 2>"$out.err" &
	server=$!
	track_pid "$server"
	wait_until 10 "printed URL in $out" grep -q '^https://.*/?token=[0-9a-f]\{64\}$' "$out" || {
		cat "$out" "$out.err"
		return 1
	}
}
stop_web() { # stop_web: Ctrl-C, and it must end by itself
	kill -INT "$server" 2>/dev/null
	wait_until 10 "server end" pid_dead "$server" || {
		echo "server $server still runs: $(cat /proc/"$server"/wchan 2>/dev/null), $(grep State /proc/"$server"/status)"
		kill -KILL "$server"
	}
	wait "$server" 2>/dev/null
}

# --- a certificate of our own, for 127.0.0.1
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout key.pem -out cert.pem -days 2 \
	-subj /CN=vmhost-test -addext subjectAltName=IP:127.0.0.1 2>/dev/null || fail make-cert "openssl req failed"
chmod 600 key.pem

# --- refused at start
out=$("$VMHOST" web --listen 127.0.0.1:0 --tls-cert cert.pem 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q -- '--tls-key' <<<"$out" && pass cert-without-key-refused "$out" ||
	fail cert-without-key-refused "exit $rc: $out"
cp key.pem open-key.pem && chmod 644 open-key.pem
out=$(timeout 10 "$VMHOST" web --listen 127.0.0.1:0 --tls-cert cert.pem --tls-key open-key.pem 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q 'other users (mode 0644).*chmod 600' <<<"$out" && pass key-0644-refused "$out" ||
	fail key-0644-refused "exit $rc: $out"
out=$(timeout 10 "$VMHOST" web --listen 0.0.0.0:0 2>&1); rc=$?
[ $rc -eq 2 ] && grep -q 'not every address' <<<"$out" && pass wildcard-refused "$out" ||
	fail wildcard-refused "exit $rc: $out"
printf 'not a certificate\n' >junk.pem
out=$(timeout 10 "$VMHOST" web --listen 127.0.0.1:0 --tls-cert junk.pem --tls-key key.pem 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q 'Cannot load the TLS certificate junk.pem' <<<"$out" && pass bad-cert-refused "$out" ||
	fail bad-cert-refused "exit $rc: $out"

# --- a VM whose serial console the wss check uses
"$VMHOST" vm create c1 --boot kernel --kernel "$GUEST_DIR/vmlinuz" --initrd "$GUEST_DIR/initrd.img" \
	--append "console=ttyS0 quiet panic=-1 vmhost.name=c1" --memory 128M >/dev/null
"$VMHOST" vm start c1 --wait >/dev/null || fail start-c1 "vm start c1 failed"

# --- the server with the given certificate
start_web web.out "$VMHOST" web --listen 127.0.0.1:0 --tls-cert cert.pem --tls-key key.pem || e2e_finish
url=$(head -1 web.out)
base=${url%%/\?*}
hostport=${base#https://}
pass url-https "$url"
fp=$(sed -n 's/^TLS certificate SHA-256 fingerprint: //p' web.out)
[ -n "$fp" ] && [ "$fp" = "$(fingerprint_of cert.pem)" ] && pass fingerprint-printed "$fp" ||
	fail fingerprint-printed "printed '$fp', the certificate's is $(fingerprint_of cert.pem)"

c() { curl -s --cacert "$E2E_TMP/cert.pem" "$@"; }
status() { c -o /dev/null -w '%{http_code}' "$@"; }

[ "$(status "$base/")" = 401 ] && pass no-cookie-401 || fail no-cookie-401
[ "$(status "$base/?token=$(printf '%064d' 0)")" = 401 ] && pass wrong-token-401 || fail wrong-token-401
c -D login.h -o /dev/null -c jar "$url"
if grep -qi '^set-cookie: vmhost_session_[0-9]*=[0-9a-f]\{64\}; HttpOnly; SameSite=Strict; Path=/; Secure' login.h &&
	grep -q '^HTTP/1.1 303' login.h; then
	pass token-secure-cookie "$(grep -i '^set-cookie' login.h | sed 's/=[0-9a-f]\{64\}/=.../' | tr -d '\r')"
else
	fail token-secure-cookie "$(cat login.h)"
fi
# curl sends a Secure cookie over https only, as browsers do.
csrf=$(c -b jar "$base/api/session" | python3 -c 'import json,sys; print(json.load(sys.stdin)["csrf"])' 2>/dev/null)
[ ${#csrf} -eq 64 ] && pass session-over-tls || fail session-over-tls "csrf '$csrf'"
s=$(status -b jar "$base/api/vms")
[ "$s" = 200 ] && grep -q '"c1"' <(c -b jar "$base/api/vms") && pass api-vms-over-tls || fail api-vms-over-tls "status $s"
s=$(status -b jar -H 'Host: evil.example' "$base/api/vms")
[ "$s" = 403 ] && pass wrong-host-403 || fail wrong-host-403 "status $s"
s=$(status -b jar -H "Origin: http://$hostport" "$base/api/vms")
[ "$s" = 403 ] && pass http-origin-403 || fail http-origin-403 "status $s"
s=$(status -b jar -H "Origin: https://$hostport" "$base/api/vms")
[ "$s" = 200 ] && pass https-origin-200 || fail https-origin-200 "status $s"
s=$(status -b jar -X POST -H "Origin: https://$hostport" "$base/api/vms/c1/stop")
[ "$s" = 403 ] && pass post-no-csrf-403 || fail post-no-csrf-403 "status $s"
s=$(status -b jar -X POST -H "X-VMHost-CSRF: $csrf" "$base/api/vms/nope/start")
[ "$s" = 404 ] && pass post-csrf-passes "404 for a VM that does not exist" || fail post-csrf-passes "status $s"

# --- protocol versions
out=$(openssl s_client -connect "$hostport" -tls1_1 </dev/null 2>&1); rc=$?
[ $rc -ne 0 ] && pass tls11-refused "$(grep -m1 -io 'alert[^:]*\|no protocols available\|unsupported protocol' <<<"$out" | head -1)" ||
	fail tls11-refused "handshake succeeded: $(grep -m1 Protocol <<<"$out")"
for v in 1.2 1.3; do
	s=$(status -b jar --tlsv$v --tls-max $v "$base/api/session")
	[ "$s" = 200 ] && pass "tls$v-works" || fail "tls$v-works" "status $s"
done

# --- a big file through TLS (many records, partial writes)
big=$(cd "$top/web" && find . -type f -size +100k -name '*.js' | head -1)
if [ -n "$big" ]; then
	c -b jar -o big.out "$base/${big#./}"
	cmp -s big.out "$top/web/$big" && pass big-file-whole "$big, $(stat -c %s big.out) bytes" ||
		fail big-file-whole "$big: $(stat -c %s big.out 2>/dev/null) of $(stat -c %s "$top/web/$big") bytes"
else
	fail big-file-whole "no .js file over 100 KiB under web/ (is web/vendor installed?)"
fi

# A body of many TLS records, read whole before the answer.
head -c 60000 /dev/zero | tr '\0' x >body.txt
s=$(status -b jar -H "X-VMHost-CSRF: $csrf" --data-binary @body.txt "$base/api/vms/nope/start")
[ "$s" = 404 ] && pass big-body-read "60000 bytes, then 404 for a VM that does not exist" || fail big-body-read "status $s"

# --- python's ssl: pipelining, slow handshakes, wss
cookie=$(awk '/vmhost_session/ {print $6 "=" $7}' jar)
cat >tlsc.py <<'EOF'
import base64, json, os, socket, ssl, struct, sys, time

HOSTPORT, CA, COOKIE = sys.argv[1], sys.argv[2], sys.argv[3]
host, port = HOSTPORT.rsplit(":", 1)

def tls():
    ctx = ssl.create_default_context(cafile=CA)
    s = socket.create_connection((host, int(port)), timeout=15)
    return ctx.wrap_socket(s, server_hostname=host)

def read_all(s):
    buf = b""
    while True:
        d = s.recv(65536)
        if not d:
            return buf
        buf += d

cmd = sys.argv[4]
if cmd == "pipeline":        # three requests in one write: three answers in order
    s = tls()
    req = "".join(f"GET /api/session?n={i} HTTP/1.1\r\nHost: {HOSTPORT}\r\nCookie: {COOKIE}\r\n"
                  f"{'Connection: close' if i == 2 else 'X-N: 1'}\r\n\r\n" for i in range(3))
    s.sendall(req.encode())
    out = read_all(s).decode(errors="replace")
    print(out.count("HTTP/1.1 200"))
elif cmd == "slow":          # slow OUTFILE: a silent client and half a ClientHello, held until the server drops them
    silent = socket.create_connection((host, int(port)))
    half = socket.create_connection((host, int(port)))
    # A handshake record that announces 512 bytes; 40 of them come.
    half.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(29))
    t0 = time.monotonic()
    open(sys.argv[5], "w").write("ready\n")
    res = {}
    for name, s in (("silent", silent), ("half", half)):
        s.settimeout(max(0.1, 20 - (time.monotonic() - t0)))
        try:
            d = s.recv(100)
            res[name] = {"eof_after": round(time.monotonic() - t0, 1), "bytes": len(d)}
        except (socket.timeout, TimeoutError):
            res[name] = {"eof_after": None}
        except ConnectionResetError:
            res[name] = {"eof_after": round(time.monotonic() - t0, 1), "reset": True}
    print(json.dumps(res))
elif cmd == "ws":            # ws PATH ORIGIN: the upgrade's status over TLS
    s = tls()
    key = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {sys.argv[5]} HTTP/1.1\r\nHost: {HOSTPORT}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nCookie: {COOKIE}\r\n"
               f"Origin: {sys.argv[6]}\r\n\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            break
        buf += d
    print(int(buf.split()[1]) if buf else 0)
    if len(sys.argv) > 7 and buf.startswith(b"HTTP/1.1 101"):
        rest = buf.partition(b"\r\n\r\n")[2]
        def need(n):
            global rest
            while len(rest) < n:
                d = s.recv(65536)
                if not d:
                    raise EOFError("closed")
                rest += d
            r, rest = rest[:n], rest[n:]
            return r
        def frame():
            b0, b1 = need(2)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", need(2))[0]
            elif n == 127:
                n = struct.unpack(">Q", need(8))[0]
            return b0 & 0x0F, need(n)
        def until(text):
            out = b""
            while text.encode() not in out:
                op, d = frame()
                if op == 2:
                    out += d
            return out.decode(errors="replace")
        back = until("VMHOST-READY")
        n = int.from_bytes(os.urandom(2), "big")
        data = f"echo tls$(({n}+1))\n".encode()
        m = os.urandom(4)
        s.sendall(bytes([0x82, 0x80 | len(data)]) + m + bytes(b ^ m[i % 4] for i, b in enumerate(data)))
        until(f"tls{n + 1}")
        print(json.dumps({"scrollback": "VMHOST-READY name=c1" in back, "command": True}))
EOF
tlsc() { timeout 40 python3 tlsc.py "$1" "$2" "$cookie" "${@:3}" 2>&1; }

n=$(tlsc "$hostport" cert.pem pipeline)
[ "$n" = 3 ] && pass pipelined-over-tls "3 answers to 3 requests in one record" || fail pipelined-over-tls "$n"

# Plain HTTP to the TLS port: a plain answer saying why, and the server goes on.
out=$(curl -s -m 5 -w '\n%{http_code}' "http://$hostport/")
[ "$(tail -1 <<<"$out")" = 400 ] && grep -q 'speaks HTTPS only' <<<"$out" && pass plain-http-400 "$(head -1 <<<"$out")" ||
	fail plain-http-400 "$out"
[ "$(status -b jar "$base/api/session")" = 200 ] && pass serves-after-plain-http || fail serves-after-plain-http

rm -f slow.ready
tlsc "$hostport" cert.pem slow slow.ready >slow.out &
slow=$!
wait_until 10 "slow clients connected" test -s slow.ready
t0=$(e2e_now)
s=$(status -m 5 -b jar "$base/api/session")
dt=$(e2e_elapsed "$t0")
[ "$s" = 200 ] && awk -v d="$dt" 'BEGIN { exit !(d < 2) }' && pass slow-handshake-no-stall "second client in $dt s" ||
	fail slow-handshake-no-stall "status $s after $dt s"
wait "$slow"
out=$(cat slow.out)
# The deadline of a new client is WEB_REQUEST_TIMEOUT_MS (10 s) from its connect.
python3 -c 'import json,sys; r=json.loads(sys.argv[1]); sys.exit(not all(v["eof_after"] is not None and 9 <= v["eof_after"] <= 13 for v in r.values()))' \
	"$out" 2>/dev/null && pass slow-handshake-dropped "$out" || fail slow-handshake-dropped "$out"
kill -0 "$server" 2>/dev/null && [ "$(status -b jar "$base/api/session")" = 200 ] && pass serves-after-slow ||
	fail serves-after-slow

# --- wss: the serial console over TLS
ticket() {
	c -b jar -H "X-VMHost-CSRF: $csrf" -H 'Content-Type: application/json' -d '{"kind": "serial"}' \
		"$base/api/vms/c1/console-ticket" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ticket"])'
}
out=$(tlsc "$hostport" cert.pem ws "/api/vms/c1/console/serial?ticket=$(ticket)" "http://$hostport")
[ "$out" = 403 ] && pass wss-http-origin-403 || fail wss-http-origin-403 "$out"
out=$(tlsc "$hostport" cert.pem ws "/api/vms/c1/console/serial?ticket=$(ticket)" "https://$hostport" run)
if [ "$(head -1 <<<"$out")" = 101 ] && grep -q '"scrollback": true, "command": true' <<<"$out"; then
	pass wss-serial-command "$(tail -1 <<<"$out")"
else
	fail wss-serial-command "$out"
fi
stop_web && pass stops-on-ctrl-c || fail stops-on-ctrl-c

# --- a real non-loopback address without TLS options: the self-made certificate
# (A veth pair inside it: this kernel may lack the dummy module.) No IPv6
# there: the link-local addresses its links would get change state
# seconds later (duplicate address detection), and chromium, run in this
# namespace below, takes that for a network change and fails its loads
# with ERR_NETWORK_CHANGED (seen once).
ip netns add "$ns" && ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 \
	net.ipv6.conf.default.disable_ipv6=1 && ip -n "$ns" link set lo up && ip -n "$ns" link add w0 type veth peer name w1 &&
	ip -n "$ns" addr add "10.253.$(($$ % 200 + 20)).1/24" dev w0 && ip -n "$ns" link set w0 up &&
	ip -n "$ns" link set w1 up || fail netns "cannot make a network namespace with a veth pair"
addr=10.253.$(($$ % 200 + 20)).1
# nsenter execs the command itself (ip netns exec forks, and a signal to
# its pid would not reach the server); start_web gets it as a command, not
# the function, for the same reason.
nsx=(nsenter --net="/run/netns/$ns" --)
nsx() { "${nsx[@]}" "$@"; }
port=$(free_port)
start_web self.out "${nsx[@]}" "$VMHOST" web --listen "$addr:$port" || e2e_finish
url=$(head -1 self.out)
sbase=${url%%/\?*}
[ "$sbase" = "https://$addr:$port" ] && pass self-url-https "$url" || fail self-url-https "$url"
dir=$VMHOST_HOME/web
fp1=$(sed -n 's/^TLS certificate SHA-256 fingerprint: //p' self.out)
perm="dir $(stat -c %a "$dir") key $(stat -c %a "$dir/key.pem")"
[ "$perm" = "dir 700 key 600" ] && grep -q 'Made a self-signed certificate' self.out.err && pass self-cert-made "$perm" ||
	fail self-cert-made "$perm: $(cat self.out.err)"
[ -n "$fp1" ] && [ "$fp1" = "$(fingerprint_of "$dir/cert.pem")" ] && pass self-fingerprint "$fp1" ||
	fail self-fingerprint "printed '$fp1', file $(fingerprint_of "$dir/cert.pem")"
openssl x509 -in "$dir/cert.pem" -noout -text >self.txt
grep -q "IP Address:$addr" self.txt && grep -q 'ASN1 OID: prime256v1' self.txt &&
	pass self-cert-san-p256 "$(grep -o 'IP Address:[0-9.]*' self.txt), $(grep -o 'Not After : .*' self.txt)" ||
	fail self-cert-san-p256 "$(cat self.txt)"
s=$(nsx curl -s --cacert "$dir/cert.pem" -c sjar -o /dev/null -w '%{http_code}' "$url")
[ "$s" = 303 ] && pass self-token-cacert "checked by --cacert against IP $addr" || fail self-token-cacert "status $s"
pin=$(spki_of "$dir/cert.pem")
s=$(nsx curl -s -k --pinnedpubkey "sha256//$pin" -b sjar -o /dev/null -w '%{http_code}' "$sbase/api/vms")
[ "$s" = 200 ] && pass self-pinned-pubkey "sha256//$pin" || fail self-pinned-pubkey "status $s"
s=$(nsx curl -s -k --pinnedpubkey "sha256//$(head -c 32 /dev/urandom | base64)" -o /dev/null -w '%{http_code}' "$sbase/")
[ "$s" = 000 ] && pass self-wrong-pin-refused-by-curl || fail self-wrong-pin-refused-by-curl "status $s"
s=$(nsx curl -s -o /dev/null -w '%{http_code}' "$sbase/")
[ "$s" = 000 ] && pass self-untrusted-refused-by-curl || fail self-untrusted-refused-by-curl "status $s"

# The browser: chromium trusts the certificate by its key's hash, opens
# the page and the serial console (wss) and runs a command there.
if [ -x /usr/bin/chromium ] && [ -d "$top/tests/browser/node_modules/playwright-core" ] &&
	[ -f "$top/tests/browser/tls.mjs" ]; then
	out=$(nsx timeout 90 node "$top/tests/browser/tls.mjs" "$url" "$pin" c1 2>&1)
	[ $? -eq 0 ] && pass browser-wss "$(grep -c "^PASS" <<<"$out") checks: $(grep -o "^PASS [a-z-]*" <<<"$out" | cut -c6- | tr "\n" " ")" || fail browser-wss "$out"
fi
stop_web

start_web self2.out "${nsx[@]}" "$VMHOST" web --listen "$addr:$port" --server-name dash.example \
	--server-name vm-host.lan || e2e_finish
fp2=$(sed -n 's/^TLS certificate SHA-256 fingerprint: //p' self2.out)
[ "$fp2" = "$fp1" ] && ! grep -q 'Made a' self2.out.err && pass self-cert-reused "$fp2" ||
	fail self-cert-reused "first $fp1, then $fp2: $(cat self2.out.err)"
# --server-name: Host and Origin may name these (with the port), and still
# nothing else: a name rebound to this address is refused (DNS rebinding).
nsx curl -s -k -c njar -o /dev/null "$(head -1 self2.out)"
nck="Cookie: $(awk '$6 ~ /^vmhost_session_/ { print $6 "=" $7 }' njar)"
ns() { nsx curl -s -k -o /dev/null -w '%{http_code}' -H "$nck" "$@" "$sbase/api/session"; }
got="$(ns) $(ns -H "Host: dash.example:$port") $(ns -H "Host: VM-Host.lan:$port") $(ns -H "Host: evil.example:$port")"
got+=" $(ns -H "Host: dash.example") $(ns -H "Host: dash.example.evil.example:$port")"
got+=" $(ns -H "Origin: https://dash.example:$port") $(ns -H "Origin: http://dash.example:$port") $(ns -H "Origin: https://evil.example:$port")"
want="200 200 200 403 403 403 200 403 403"
[ "$got" = "$want" ] && pass server-name-host-origin "address, dash.example, VM-Host.lan, evil.example, no port, a longer name; Origin https dash, http dash, evil: $got" ||
	fail server-name-host-origin "address, dash.example, VM-Host.lan, evil.example, no port, a longer name; Origin https dash, http dash, evil: $got (want $want)"
stop_web

# A key made readable by others since is refused, not silently replaced.
chmod 644 "$dir/key.pem"
out=$(nsx timeout 10 "$VMHOST" web --listen "$addr:$port" 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q 'other users' <<<"$out" && pass self-key-0644-refused "$out" ||
	fail self-key-0644-refused "exit $rc: $out"

"$VMHOST" vm stop c1 --timeout 10 >/dev/null 2>&1
e2e_finish
