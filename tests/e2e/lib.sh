# shellcheck shell=bash
# tests/e2e/lib.sh: shared helpers of the end-to-end tests (sourced, bash).
# Gives a private temp dir, PASS/FAIL bookkeeping, QEMU start with a serial
# unix socket + logfile, waiting for a console line, running a command in the
# guest over the serial console, and a cleanup trap that stops only the
# processes the test itself started (never by name).
# Socket I/O uses python3 (stdlib only).

E2E_PIDS=()
E2E_PASS=0
E2E_FAIL=0
E2E_FAILED=()

e2e_log() { printf '[%s] %s\n' "$(date +%T.%3N)" "$*"; }
e2e_now() { date +%s.%N; }
e2e_elapsed() { awk -v a="$1" -v b="$(e2e_now)" 'BEGIN { printf "%.2f", b - a }'; }

pass() { E2E_PASS=$((E2E_PASS + 1)); echo "PASS $1${2:+ ($2)}"; }
fail() { E2E_FAIL=$((E2E_FAIL + 1)); E2E_FAILED+=("$1"); echo "FAIL $1${2:+: $2}"; }

# wait_until TIMEOUT_S DESCRIPTION CMD...: run CMD every 50 ms until it
# succeeds, for at most TIMEOUT_S seconds (fractions allowed). On timeout the
# test fails with a check "wait" naming DESCRIPTION, and this returns 1, so
# the checks that follow still run (and say what they found). Polling, not
# sleeping: a loaded machine only makes the wait longer, never the test wrong.
wait_until() {
	local to=$1 what=$2 deadline
	shift 2
	deadline=$(awk -v t="$to" -v n="$(e2e_now)" 'BEGIN { printf "%.3f", n + t }')
	while :; do
		"$@" && return 0
		if awk -v d="$deadline" -v n="$(e2e_now)" 'BEGIN { exit !(n >= d) }'; then
			fail wait "no $what within ${to} s"
			return 1
		fi
		sleep 0.05
	done
}

# pid_dead PID: true once PID has exited: gone, or a zombie its parent has
# not reaped yet (dead all the same; vmhost's process_alive says so too).
pid_dead() {
	local st
	st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null) || return 0
	[ -z "$st" ] || [ "$st" = Z ] || [ "$st" = X ]
}

# lock_held PID: true once process PID holds a POSIX or OFD lock on some file
# (as QEMU and qemu-io do on an open image).
lock_held() { grep -qs '^lock:' /proc/"$1"/fdinfo/*; }

# track_pid PID: stop PID on exit.
track_pid() { E2E_PIDS+=("$1"); }

# stop_pid PID: TERM, then KILL after 3 s; reaps it if it is our child.
stop_pid() {
	local p=$1 i
	[ -n "$p" ] || return 0
	if kill "$p" 2>/dev/null; then
		for i in $(seq 30); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
		kill -9 "$p" 2>/dev/null || true
	fi
	wait "$p" 2>/dev/null || true
}

e2e_cleanup() {
	local rc=$? i
	trap - EXIT INT TERM
	set +e
	for ((i = ${#E2E_PIDS[@]} - 1; i >= 0; i--)); do stop_pid "${E2E_PIDS[i]}"; done
	if [ -n "${E2E_TMP:-}" ] && [ -d "$E2E_TMP" ]; then
		if [ "$rc" != 0 ] && [ -n "${E2E_KEEP:-}" ]; then
			echo "kept $E2E_TMP (E2E_KEEP set)"
		else
			rm -rf "$E2E_TMP"
		fi
	fi
	exit "$rc"
}

# e2e_init NAME: temp dir in $E2E_TMP, cleanup traps.
e2e_init() {
	E2E_NAME=$1
	E2E_TMP=$(mktemp -d "/tmp/vmhost-e2e-$1.XXXXXX")
	trap e2e_cleanup EXIT
	trap 'exit 130' INT TERM
}

# e2e_finish: summary line, exit status 0 only if nothing failed.
e2e_finish() {
	if [ "$E2E_FAIL" -eq 0 ]; then
		echo "== $E2E_NAME: all $E2E_PASS checks passed"
		exit 0
	fi
	echo "== $E2E_NAME: $E2E_FAIL failed (${E2E_FAILED[*]}), $E2E_PASS passed"
	exit 1
}

# need_vmhost_and_image_io: VMHOST (default: ROOT's build) and IMAGE_IO
# (the image-io helper beside that build's tests/unit), both built, or the
# test fails here.
need_vmhost_and_image_io() {
	VMHOST=${VMHOST:-$ROOT/build/src/cli/vmhost}
	IMAGE_IO=${IMAGE_IO:-$(dirname "$(dirname "$(dirname "$VMHOST")")")/tests/unit/image-io}
	local b
	for b in "$VMHOST" "$IMAGE_IO"; do
		[ -x "$b" ] || { fail built "$b is not built (ninja -C build)"; e2e_finish; }
	done
}

# need CMD...: fail the test early, with the package hint, if a tool is missing.
need() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null || { fail "need-$c" "'$c' not installed"; exit 1; }
	done
}

# free_port: print a TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
	python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# qemu_start NAME QEMU-ARGS...: bare TCG QEMU in the background with the serial
# port on $E2E_TMP/NAME.sock (server) logged to $E2E_TMP/NAME.log; stdout and
# stderr of QEMU go to $E2E_TMP/NAME.qemu. Sets QEMU_PID and QEMU_T0.
qemu_start() {
	local name=$1; shift
	rm -f "$E2E_TMP/$name.sock" "$E2E_TMP/$name.log"
	# shellcheck disable=SC2034 # read by the caller
	QEMU_T0=$(e2e_now)
	qemu-system-x86_64 -accel tcg -M pc -m 256 -nodefaults -no-user-config -display none \
		-no-reboot -sandbox on \
		-chardev "socket,id=ser0,path=$E2E_TMP/$name.sock,server=on,wait=off,logfile=$E2E_TMP/$name.log" \
		-serial chardev:ser0 \
		"$@" >"$E2E_TMP/$name.qemu" 2>&1 &
	QEMU_PID=$!
	track_pid "$QEMU_PID"
}

# qemu_dump NAME: show the end of the serial log and QEMU's own output (on failure).
qemu_dump() {
	echo "---- serial log tail ($1)"
	tail -c 1500 "$E2E_TMP/$1.log" 2>/dev/null | tr -d '\r' || true
	echo "---- qemu output ($1)"
	tail -n 20 "$E2E_TMP/$1.qemu" 2>/dev/null || true
	echo "----"
}

# wait_for_line LOG REGEX TIMEOUT [PID]: wait until a line of LOG matches the
# extended REGEX; print that line. Returns 1 on timeout, 2 if PID exited first.
wait_for_line() {
	local log=$1 re=$2 to=$3 pid=${4:-} line deadline
	deadline=$(awk -v t="$to" -v n="$(e2e_now)" 'BEGIN { printf "%.3f", n + t }')
	while :; do
		if [ -f "$log" ] && line=$(grep -aE -m 1 -- "$re" "$log"); then
			printf '%s\n' "${line//$'\r'/}"
			return 0
		fi
		if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
			echo "process $pid exited while waiting for /$re/ in $log" >&2
			return 2
		fi
		if awk -v d="$deadline" -v n="$(e2e_now)" 'BEGIN { exit !(n >= d) }'; then
			echo "timeout after ${to}s waiting for /$re/ in $log" >&2
			return 1
		fi
		sleep 0.05
	done
}

# serial_cmd SOCK TIMEOUT CMD: run CMD in the guest through its serial console
# (the guest init runs each line with sh -c); print its output, return its exit
# status, 124 on timeout. CMD is one line; it runs in a subshell. The markers
# are written split ("@@B""tag") so that a console echoing the typed line can
# never fake the expanded marker.
serial_cmd() {
	python3 - "$1" "$2" "$3" <<'EOF'
import os, re, socket, sys, time
sock, timeout, cmd = sys.argv[1], float(sys.argv[2]), sys.argv[3]
tag = os.urandom(4).hex()
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sock)
s.settimeout(0.2)
# CMD runs in a subshell so that 'exit N' still reaches the end marker.
s.sendall(('echo "@@B""%s"; ( %s ); echo "@@E""%s rc=$?"\n' % (tag, cmd, tag)).encode())
begin = ('@@B' + tag).encode()
end = re.compile(rb'@@E' + tag.encode() + rb' rc=(\d+)')
buf = b''
deadline = time.time() + timeout
while time.time() < deadline and len(buf) < (1 << 20):
    try:
        d = s.recv(65536)
        if not d:
            break
        buf += d
    except socket.timeout:
        pass
    m = end.search(buf)
    if m:
        start = buf.find(begin)
        out = buf[start + len(begin):m.start()] if start >= 0 else buf[:m.start()]
        text = out.decode(errors='replace').replace('\r', '').strip('\n')
        if text:
            print(text)
        sys.exit(int(m.group(1)))
sys.stdout.write(buf.decode(errors='replace').replace('\r', ''))
print('serial_cmd: timeout after %.1fs running %r' % (timeout, cmd), file=sys.stderr)
sys.exit(124)
EOF
}

# tcp_read_line HOST PORT TIMEOUT: connect (retrying while the far end is not
# listening yet) and print the first line received.
tcp_read_line() {
	python3 - "$1" "$2" "$3" <<'EOF'
import socket, sys, time
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
deadline = time.time() + timeout
last = 'no attempt'
while time.time() < deadline:
    try:
        with socket.create_connection((host, port), timeout=2) as s:
            s.settimeout(2)
            buf = b''
            while b'\n' not in buf and len(buf) < 4096:
                d = s.recv(4096)
                if not d:
                    break
                buf += d
            line = buf.split(b'\n')[0].decode(errors='replace').strip('\r')
            if line:
                print(line)
                sys.exit(0)
            last = 'connection closed without data'
    except OSError as e:
        last = str(e)
    time.sleep(0.2)
print('tcp_read_line: no line from %s:%d in %.0fs (%s)' % (host, port, timeout, last), file=sys.stderr)
sys.exit(1)
EOF
}
