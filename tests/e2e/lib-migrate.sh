# shellcheck shell=bash
# tests/e2e/lib-migrate.sh: what the migration tests share (sourced after
# lib-hosts.sh, with MIG_VM naming the VM they migrate between hosts b and
# c; the test guest prints "CNT N" on its console every 100 ms with
# vmhost.counter=1).
vb() { "$VMHOST" --host b "$@"; }
vc() { "$VMHOST" --host c "$@"; }
# log_of HOST: MIG_VM's serial log on HOST, read from here.
log_of() { echo "$(host_dir "$1")/state/vms/$MIG_VM/serial.log"; }
last_cnt() { grep -ao 'CNT [0-9]*' "$1" 2>/dev/null | tail -1 | cut -d' ' -f2; }
first_cnt() { grep -ao 'CNT [0-9]*' "$1" 2>/dev/null | head -1 | cut -d' ' -f2; }
# state_of HOST: MIG_VM's state there ("running", "stopped", ...), empty if none.
state_of() { "$VMHOST" --host "$1" vm status "$MIG_VM" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' 2>/dev/null; }
# jfield KEY: that field of the JSON object on stdin.
jfield() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(d.get(sys.argv[1]))' "$1"; }
# host_link HOST up|down: HOST's one link (the switch's end of its veth,
# lib-hosts.sh): down, nothing reaches HOST and HOST reaches nobody.
host_link() { ip link set "vhh$$-${HOSTS_INDEX[$1]}" "$2"; }
# procs_on HOST REGEX: "PID COMMAND LINE" of each process in HOST's
# namespace whose command line matches REGEX (grep -E).
procs_on() {
	local p
	for p in $(ip netns pids "$(host_ns "$1")"); do
		printf '%s %s\n' "$p" "$(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null)"
	done | grep -E -- "$2"
}
# leftovers_on HOST [BRIDGE]: what of MIG_VM is on HOST, one item a line
# (nothing: nothing is left): its QEMU, a 'vm migrate-incoming' session,
# its state directory (definition, overlay, logs), its runtime directory
# (QMP and NBD sockets), taps on BRIDGE.
leftovers_on() {
	local d; d=$(host_dir "$1")
	procs_on "$1" "process=vmhost-$MIG_VM( |,|\$)" | sed 's/^/qemu: /'
	procs_on "$1" "vm migrate-incoming $MIG_VM( |\$)" | sed 's/^/session: /'
	[ -e "$d/state/vms/$MIG_VM" ] && echo "state: $(ls "$d/state/vms/$MIG_VM" | tr '\n' ' ')"
	[ -e "$d/run/vms/$MIG_VM" ] && echo "runtime: $(ls "$d/run/vms/$MIG_VM" | tr '\n' ' ')"
	[ -n "${2:-}" ] && ip -n "$(host_ns "$1")" -o link show master "$2" 2>/dev/null | sed 's/^/tap: /'
	return 0
}
