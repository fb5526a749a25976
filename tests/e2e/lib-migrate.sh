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
