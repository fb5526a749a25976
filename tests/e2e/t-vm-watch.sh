#!/usr/bin/env bash
# A long-lived QMP watcher (what the web server and a migration will be)
# does not lock the CLI out: each QEMU has a second monitor socket,
# qmp-watch.sock (0600 in the 0700 runtime directory). With a client kept
# connected there, 'vm status' and 'vm qmp' (the main socket) still answer,
# and the watcher sees the events the CLI's commands cause.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init vm-watch
source "$here/vmhost-env.sh"
trap 'vmhost_cleanup_vms; e2e_cleanup' EXIT
need python3

"$VMHOST" vm create w1 --boot kernel --kernel "$GUEST_DIR/vmlinuz" --initrd "$GUEST_DIR/initrd.img" \
	--append "console=ttyS0 quiet panic=-1 vmhost.name=w1" --memory 128M >/dev/null && pass create || fail create
out=$("$VMHOST" vm start w1 2>&1) && pass start || { fail start "$out"; e2e_finish; }

rt=$VMHOST_HOME/run/vms/w1
ws=$rt/qmp-watch.sock
[ -S "$ws" ] && [ "$(stat -c %a "$ws")" = 600 ] && pass watch-socket-private "$(stat -c %a "$ws")" ||
	fail watch-socket-private "$(ls -la "$rt")"

# The watcher: negotiates, says "ready", then writes every event's name
# to its log until it is killed; it never lets go of the socket.
python3 - "$ws" "$E2E_TMP/watch.log" <<'EOF' &
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(30)
s.connect(sys.argv[1])
f = s.makefile("rwb", buffering=0)
log = open(sys.argv[2], "w", buffering=1)
json.loads(f.readline())  # greeting
f.write(b'{"execute":"qmp_capabilities"}\n')
while True:
    m = json.loads(f.readline())
    if "return" in m:
        break
log.write("ready\n")
s.settimeout(None)
for line in f:
    m = json.loads(line)
    if "event" in m:
        log.write(m["event"] + "\n")
EOF
watcher=$!
track_pid "$watcher"
wait_for_line "$E2E_TMP/watch.log" '^ready$' 20 "$watcher" >/dev/null && pass watcher-attached || fail watcher-attached

# The CLI still answers, on both the runtime state and the main QMP socket.
t0=$(e2e_now)
st=$(timeout 10 "$VMHOST" vm status w1 --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])')
[ "$st" = running ] && pass status-with-watcher "$(e2e_elapsed "$t0") s" || fail status-with-watcher "state '$st'"
out=$(timeout 10 "$VMHOST" vm qmp w1 '{"execute":"stop"}' 2>&1) && pass qmp-with-watcher || fail qmp-with-watcher "$out"
wait_for_line "$E2E_TMP/watch.log" '^STOP$' 20 "$watcher" >/dev/null && pass watcher-sees-stop || fail watcher-sees-stop
out=$(timeout 10 "$VMHOST" vm qmp w1 '{"execute":"query-status"}' 2>&1)
grep -q '"paused"' <<<"$out" && pass query-status-paused || fail query-status-paused "$out"
out=$(timeout 10 "$VMHOST" vm qmp w1 '{"execute":"cont"}' 2>&1) &&
	wait_for_line "$E2E_TMP/watch.log" '^RESUME$' 20 "$watcher" >/dev/null && pass watcher-sees-resume ||
	fail watcher-sees-resume "$out"

# Stopping the VM ends the watcher's connection and removes the socket.
out=$(timeout 60 "$VMHOST" vm stop w1 --timeout 5 2>&1) && pass stop-with-watcher || fail stop-with-watcher "$out"
[ ! -e "$ws" ] && pass watch-socket-removed || fail watch-socket-removed "$(ls -la "$rt" 2>&1)"
e2e_finish
