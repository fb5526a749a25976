#!/bin/bash
# tests/e2e/t-img-cancel.sh: Ctrl-C (SIGINT) in the middle of 'vmhost img
# convert' cancels it cleanly (issue 11, item 6): the signal handler only
# sets a flag, the progress callback turns it into a cancel, and convert
# stops its workers, removes its temporary output and fails. Checked on
# a large sparse raw image that holds data, for each of convert's copy
# paths, once the temporary output holds part of the data:
#   qcow2     -O qcow2 (the parallel workers), without -p
#   compress  -O qcow2 -c -p (the reader thread and the writer)
#   raw       -O raw over an existing file with --force (parallel workers):
#             the old file stays as it was
# Each: the exit status is non-zero, the message says "cancelled", the
# destination is absent (or unchanged) and no temporary file is left; and
# the same convert without a signal completes and matches the source.
# Env: VMHOST=path to the vmhost binary; E2E_KEEP=1 keeps the temp dir on
# failure.
set -uo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init img-cancel
VMHOST=${VMHOST:-$ROOT/build/src/cli/vmhost}
[ -x "$VMHOST" ] || { fail built "$VMHOST is not built (ninja -C build)"; e2e_finish; }
need qemu-img dd stat env
cd "$E2E_TMP" || exit 1

# The source: 16 GiB virtual, 96 runs of 4 MiB of random data spread over
# it (384 MiB), holes between them.
truncate -s 16G src.raw
for i in $(seq 0 95); do
	dd if=/dev/urandom of=src.raw bs=4M count=1 seek=$((i * 42)) conv=notrunc status=none
done

# allocated FILE: bytes the file takes on disk (0 when it is gone).
allocated() { stat -c '%b %B' "$1" 2>/dev/null | awk '{ print $1 * $2 }' || echo 0; }

# temp_files DST: the temporary outputs of a convert to DST, one a line.
temp_files() { find . -maxdepth 1 -name ".$1.vmhost-*.tmp" -printf '%f\n'; }

# interrupt NAME DST ARGS...: starts 'vmhost img convert ARGS' in the
# background (SIGINT at its default action: a shell without job control
# would ignore it), waits until its temporary output for DST holds at
# least 32 MiB, sends SIGINT, and waits (bounded) for the end. Sets RC,
# ERR (its stderr) and STARTED (1 if the signal came while it ran).
interrupt() {
	local name=$1 dst=$2 pid t deadline
	shift 2
	rm -f err.txt
	env --default-signal=INT "$VMHOST" img convert "$@" 2>err.txt &
	pid=$!
	track_pid "$pid"
	STARTED=0
	deadline=$((SECONDS + 120))
	while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
		t=$(temp_files "$dst" | head -n1)
		if [ -n "$t" ] && [ "$(allocated "$t")" -ge $((32 << 20)) ]; then
			kill -INT "$pid" && STARTED=1
			break
		fi
		sleep 0.02
	done
	# The cancel takes at most a window per worker: bounded.
	deadline=$((SECONDS + 60))
	while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.05; done
	if kill -0 "$pid" 2>/dev/null; then
		fail "$name-ends" "convert still runs 60 s after SIGINT"
		kill -9 "$pid"
	fi
	RC=0
	wait "$pid" || RC=$?
	ERR=$(cat err.txt)
}

# check_cancelled NAME DST: the convert ran when it was interrupted, failed
# with a message, and left no temporary file.
check_cancelled() {
	local name=$1 dst=$2 left
	if [ "$STARTED" != 1 ]; then
		fail "$name" "convert ended (exit $RC) before its output held 32 MiB; nothing was interrupted: $ERR"
		return 1
	fi
	left=$(temp_files "$dst")
	if [ "$RC" = 0 ] || [[ $ERR != *cancelled* ]] || [ -n "$left" ]; then
		fail "$name" "exit $RC, message '$ERR', temporary files left: '${left:-none}'"
		return 1
	fi
	return 0
}

# qcow2: the parallel workers, no progress shown.
interrupt qcow2 dst.qcow2 -f raw -O qcow2 src.raw dst.qcow2
if check_cancelled qcow2 dst.qcow2; then
	if [ -e dst.qcow2 ]; then fail qcow2 "dst.qcow2 exists after the cancel"; else pass qcow2 "exit $RC: $ERR"; fi
fi

# compress: the reader thread and the writer, with -p.
interrupt compress dst.qcow2 -p -c -f raw -O qcow2 src.raw dst.qcow2
if check_cancelled compress dst.qcow2; then
	if [ -e dst.qcow2 ]; then fail compress "dst.qcow2 exists after the cancel"; else pass compress "exit $RC"; fi
fi

# raw: over an existing file that holds data (--force): it stays.
head -c 1M /dev/urandom >old.raw
sum_old=$(sha256sum <old.raw)
interrupt raw old.raw --force -f raw -O raw src.raw old.raw
if check_cancelled raw old.raw; then
	if [ "$(sha256sum <old.raw)" = "$sum_old" ]; then pass raw "exit $RC, old.raw unchanged"; else fail raw "old.raw changed"; fi
fi

# Without a signal the same converts complete: what was interrupted was
# a convert that works.
if "$VMHOST" img convert -f raw -O qcow2 src.raw done.qcow2 && qemu-img compare -q -f raw src.raw done.qcow2; then
	pass uninterrupted "qemu-img compare: identical"
else
	fail uninterrupted "the convert or the compare failed"
fi

e2e_finish
