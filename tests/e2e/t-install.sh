#!/bin/bash
# tests/e2e/t-install.sh: 'make install' gives a vmhost that needs nothing
# of the checkout. The build of VMHOST is installed with DESTDIR into a temp
# dir; the staged tree must hold the program, the guest builder with every
# file of tools/guest, and the documents the help texts name, and no file in
# it may name the checkout or the build directory (the binary is stripped, no
# path is compiled in). Then, in a private mount namespace where the
# checkout, the build directory and any real install under the prefix are
# empty tmpfs mounts, the staged binary runs --version, --help, doctor and
# 'guest build' into a fresh VMHOST_HOME: the guest is built by the staged
# builder (found relative to the staged binary), from the same inputs as the
# checkout's builder hashes, and its disk converted by the staged vmhost; a
# second build finds it cached.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init install
need make meson ninja strings unshare python3
[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root (a private mount namespace)"; exit 77; }
VMHOST=${VMHOST:-$ROOT/build/src/cli/vmhost}
[ -x "$VMHOST" ] || { fail vmhost-built "$VMHOST is not built"; e2e_finish; }
VMHOST=$(readlink -f "$VMHOST")
BUILD=$(dirname "$(dirname "$(dirname "$VMHOST")")")
[ -f "$BUILD/build.ninja" ] && [ -d "$BUILD/meson-info" ] ||
	{ fail meson-build "$VMHOST is not in a meson build directory (BUILD/src/cli/vmhost)"; e2e_finish; }
unset VMHOST_MKGUEST

# The prefix and directories this build installs to.
eval "$(meson introspect --buildoptions "$BUILD" | python3 -c 'import json, shlex, sys
o = {x["name"]: x["value"] for x in json.load(sys.stdin)}
for k in ("prefix", "bindir", "datadir"):
    print(f"{k.upper()}={shlex.quote(o[k])}")')"
case $BINDIR in /*) ;; *) BINDIR=$PREFIX/$BINDIR ;; esac
case $DATADIR in /*) ;; *) DATADIR=$PREFIX/$DATADIR ;; esac
VERSION=$(meson introspect --projectinfo "$BUILD" | python3 -c 'import json, sys; print(json.load(sys.stdin)["version"])')
DEST=$E2E_TMP/dest
BIN=$DEST$BINDIR/vmhost
cd "$E2E_TMP"

rc=0
make -C "$ROOT" install BUILD="$BUILD" DESTDIR="$DEST" >install.txt 2>&1 || rc=$?
[ $rc -eq 0 ] && [ -x "$BIN" ] && pass "make install DESTDIR" "$(find "$DEST" -type f | wc -l) files under $DEST" ||
	fail "make install DESTDIR" "exit $rc, $BIN: $(tail -5 install.txt)"

missing=
for f in "$DATADIR/vmhost/mkguest" "$DATADIR/doc/vmhost/README.md"; do
	[ -s "$DEST$f" ] || missing+=" $f"
done
[ -x "$DEST$DATADIR/vmhost/mkguest" ] || missing+=" $DATADIR/vmhost/mkguest(executable)"
for f in "$ROOT"/tools/guest/*; do
	cmp -s "$f" "$DEST$DATADIR/vmhost/guest/${f##*/}" || missing+=" $DATADIR/vmhost/guest/${f##*/}"
done
# Every document a help text or a definition file's header points to.
for d in $(grep -rhoE 'docs/[a-z0-9-]+\.md' "$ROOT/src" | sort -u); do
	[ -s "$DEST$DATADIR/doc/vmhost/${d#docs/}" ] || missing+=" $DATADIR/doc/vmhost/${d#docs/}"
done
[ -z "$missing" ] && pass "installed: program, guest builder, all of tools/guest, the documents" ||
	fail "installed files" "missing or different:$missing"

# Nothing installed names the checkout or the build directory.
named=$(grep -rlF -e "$ROOT" -e "$BUILD" "$DEST" || true)
hits=$(strings -a "$BIN" | grep -cF -e "$ROOT" -e "$BUILD" || true)
[ -z "$named" ] && [ "$hits" = 0 ] && pass "no installed file names $ROOT or $BUILD" ||
	fail "no installed file names the checkout" "files: $named; strings in vmhost: $hits: $(strings -a "$BIN" | grep -F -e "$ROOT" -e "$BUILD" | head -3)"

# The checkout's builder, for its inputs hash (its first stamp line).
VMHOST_HOME=$E2E_TMP/ref "$VMHOST" guest build >ref.txt 2>&1 ||
	fail "checkout's guest build" "$(tail -5 ref.txt)"

# In a private mount namespace: the checkout, the build directory and a real
# install under the prefix (if any) are empty; only the staged tree remains.
hide=("$ROOT")
case $BUILD/ in "$ROOT"/*) ;; *) hide+=("$BUILD") ;; esac
[ -d "$DATADIR/vmhost" ] && hide+=("$DATADIR/vmhost")
[ -e "$BINDIR/vmhost" ] && hide+=("$BINDIR")
rc=0
unshare --mount --propagation private bash -c '
	set -u
	out=$1 bin=$2; shift 2
	for d in "$@"; do mount -t tmpfs -o size=1M vmhost-hidden "$d" || exit 99; done
	for d in "$@"; do [ -z "$(ls -A "$d")" ] || exit 98; done
	cd /
	export VMHOST_HOME=$out/home
	mkdir -p "$VMHOST_HOME"
	"$bin" --version >"$out/version.txt" 2>&1; echo $? >"$out/version.rc"
	"$bin" --help >"$out/help.txt" 2>&1; echo $? >"$out/help.rc"
	"$bin" doctor >"$out/doctor.txt" 2>&1; echo $? >"$out/doctor.rc"
	"$bin" guest build >"$out/build1.txt" 2>&1; echo $? >"$out/build1.rc"
	"$bin" guest build >"$out/build2.txt" 2>&1; echo $? >"$out/build2.rc"
	"$bin" guest path >"$out/path.txt" 2>&1
	exit 0' t-install "$E2E_TMP" "$BIN" "${hide[@]}" >ns.txt 2>&1 || rc=$?
if [ $rc -ne 0 ]; then
	fail "private mount namespace hiding ${hide[*]}" "exit $rc: $(cat ns.txt)"
	e2e_finish
fi
pass "source tree hidden" "${hide[*]} empty tmpfs in the namespace"

[ "$(cat version.rc)" = 0 ] && grep -qx "vmhost $VERSION" version.txt && pass "--version" "$(cat version.txt)" ||
	fail "--version" "exit $(cat version.rc): $(cat version.txt)"
[ "$(cat help.rc)" = 0 ] && grep -q '^Usage: vmhost' help.txt && grep -q 'guest' help.txt && pass "--help" ||
	fail "--help" "exit $(cat help.rc): $(head -5 help.txt)"
[ "$(cat doctor.rc)" = 0 ] && grep -q '^VMs can run here: yes' doctor.txt && pass "doctor" "$(tail -1 doctor.txt)" ||
	fail "doctor" "exit $(cat doctor.rc): $(tail -5 doctor.txt)"

G=$E2E_TMP/home/guest
ok=1
for a in vmlinuz initrd.img disk.qcow2 guest.iso manifest.json stamp; do [ -s "$G/$a" ] || ok=0; done
if [ "$(cat build1.rc)" = 0 ] && [ $ok = 1 ] && grep -q '^mkguest: built ' build1.txt &&
	grep -qF "disk.qcow2 made with: vmhost img convert ($BIN)" build1.txt &&
	[ "$(cat path.txt)" = "$G" ]; then
	pass "guest build by the staged builder and vmhost" "$(grep '^mkguest: built' build1.txt)"
else
	fail "guest build by the staged builder" "exit $(cat build1.rc): $(tail -8 build1.txt); $(ls "$G" 2>&1)"
fi
# The staged builder hashed the same inputs as the checkout's: it found all
# of its files, and a guest built by either serves both.
ref=$(head -n 1 "$E2E_TMP/ref/guest/stamp" 2>/dev/null || echo none)
got=$(head -n 1 "$G/stamp" 2>/dev/null || echo none)
[ "$ref" != none ] && [ "$ref" = "$got" ] && pass "same guest inputs as the checkout's builder" "$got" ||
	fail "same guest inputs as the checkout's builder" "checkout: $ref, staged: $got"
[ "$(cat build2.rc)" = 0 ] && grep -qF "mkguest: $G is up to date" build2.txt && ! grep -q "^mkguest: built " build2.txt && pass "second guest build cached" "$(head -1 build2.txt)" ||
	fail "second guest build cached" "exit $(cat build2.rc): $(cat build2.txt)"

e2e_finish
