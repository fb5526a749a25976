# shellcheck shell=bash
# tests/e2e/vmhost-env.sh: a private vmhost home for one test (sourced after
# lib.sh and e2e_init). The shared test guest (tests/e2e/run builds it once)
# is linked in, so 'vmhost guest build' finds it up to date.
VMHOST=${VMHOST:?VMHOST must name the vmhost binary}
export VMHOST_HOME=$E2E_TMP/home
# Searchable by others, as /run and /var/lib are: dnsmasq, once it has
# dropped to 'nobody', re-reads its reservations file below the home.
chmod 0711 "$E2E_TMP"
mkdir -p "$VMHOST_HOME"
if [ -n "${VMHOST_GUEST_DIR:-}" ]; then
	ln -s "$VMHOST_GUEST_DIR" "$VMHOST_HOME/guest"
fi
GUEST_DIR=$VMHOST_HOME/guest

# Stop every VM of this home on exit, whatever happened. It returns the
# status it was called with, so that in "trap 'vmhost_cleanup_vms;
# e2e_cleanup' EXIT" the test's own exit status reaches e2e_cleanup.
vmhost_cleanup_vms() {
	local rc=$? n
	for n in $("$VMHOST" vm list --json 2>/dev/null | python3 -c 'import json,sys
for v in json.load(sys.stdin):
    print(v["name"])' 2>/dev/null); do
		"$VMHOST" vm stop "$n" --timeout 5 >/dev/null 2>&1 || true
	done
	return $rc
}

# vm_json NAME KEY...: a field of 'vmhost vm status NAME --json'
# (vm_json demo forwards 0 host-port).
vm_json() {
	local name=$1; shift
	"$VMHOST" vm status "$name" --json | python3 -c 'import json,sys
v = json.load(sys.stdin)
for k in sys.argv[1:]:
    v = v[int(k)] if isinstance(v, list) else v.get(k)
    if v is None:
        break
print("" if v is None else v)' "$@"
}
