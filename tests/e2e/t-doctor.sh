#!/usr/bin/env bash
# 'vmhost doctor' on this very host: the table and --json agree, the
# accelerator follows the KVM probe (never /dev/kvm's mere existence), and
# the exit status says VMs can run (QEMU with TCG is installed by CI).
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
source "$here/lib.sh"
e2e_init doctor
need python3

t0=$(e2e_now)
"$VMHOST" doctor >"$E2E_TMP/table" 2>&1
rc=$?
[ $rc -eq 0 ] && pass doctor-exit-0 "in $(e2e_elapsed "$t0") s" || fail doctor-exit-0 "exit $rc"
cat "$E2E_TMP/table"
"$VMHOST" doctor --json >"$E2E_TMP/json" 2>&1 || true
python3 - "$E2E_TMP/json" <<'EOF2' && pass doctor-json-consistent || fail doctor-json-consistent
import json, os, sys
d = json.load(open(sys.argv[1]))
checks = {c["name"]: c for c in d["checks"]}
for c in d["checks"]:
    assert set(c) >= {"name", "status", "value", "reason"}, c
    assert c["status"] in ("ok", "warn", "missing", "unusable"), c
assert d["can-run-vms"] is True, d
probe = d["kvm-probe"]
kvm = checks["kvm"]
if not os.path.exists("/dev/kvm"):
    assert kvm["status"] == "missing", kvm
    assert d["accelerator"] == "tcg", d["accelerator"]
elif d["accelerator"] == "kvm":
    # KVM is chosen only after the guest loop ran at full speed.
    assert kvm["status"] == "ok" and probe["instructions-per-second"] >= 100e6, probe
else:
    assert kvm["status"] in ("unusable", "missing"), kvm
    assert kvm["reason"], kvm
print("accelerator:", d["accelerator"], "| kvm:", kvm["status"], "-", kvm["reason"])
EOF2
grep -qE '^accelerator: (tcg|kvm) ' "$E2E_TMP/table" && pass doctor-names-accelerator "$(grep '^accelerator:' "$E2E_TMP/table")" ||
	fail doctor-names-accelerator
grep -qE '^KVM: ' "$E2E_TMP/table" && pass doctor-says-why-kvm "$(grep '^KVM:' "$E2E_TMP/table")" || fail doctor-says-why-kvm
"$VMHOST" doctor --help | grep -q "Example" && pass doctor-help || fail doctor-help
"$VMHOST" doctor --bogus >/dev/null 2>&1; [ $? -eq 2 ] && pass doctor-bad-option || fail doctor-bad-option
e2e_finish
