#!/bin/bash
# tests/e2e/t-cli-help.sh: every command of the CLI has --help: for each
# verb and each command its group lists ('vmhost VERB --help'), both
# 'vmhost VERB COMMAND --help' and '-h' exit 0, print a usage to stdout
# and show an example. The lists are read from the program's own help,
# so a new command is covered as soon as it is listed.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init cli-help

VMHOST=${VMHOST:-$ROOT/build/src/cli/vmhost}
if [ ! -x "$VMHOST" ]; then
	fail vmhost-built "$VMHOST is not built (ninja -C build)"
	e2e_finish
fi
cd "$E2E_TMP"

# has_help ARGS...: the command's help (stdout, exit 0, "Usage" and an example).
has_help() {
	local what="$*" out rc=0
	for flag in --help -h; do
		out=$("$VMHOST" "$@" $flag 2>err.txt) || rc=$?
		if [ $rc -ne 0 ] || ! grep -q '^Usage' <<<"$out" || ! grep -qi '^Examples\?:' <<<"$out"; then
			fail "help $what $flag" "exit $rc, $(wc -l <<<"$out") lines on stdout, stderr: $(head -c 200 err.txt)"
			return
		fi
	done
	pass "help $what"
}

# commands VERB: the command names listed under "Commands:" in its help.
commands() {
	"$VMHOST" "$1" --help | awk '/^Commands:/ { on = 1; next } on && /^$/ { on = 0 } on && /^  [a-z]/ { print $1 }' |
		sort -u
}

has_help
for verb in doctor img vm net guest; do
	has_help "$verb"
done
n=0
for verb in img vm net; do
	list=$(commands "$verb")
	if [ -z "$list" ]; then
		fail "commands $verb" "no commands found in 'vmhost $verb --help'"
		continue
	fi
	for c in $list; do
		has_help "$verb" "$c"
		n=$((n + 1))
	done
done
has_help guest build
has_help guest path
[ $n -ge 30 ] && pass "command count" "$n commands of img, vm and net checked" ||
	fail "command count" "only $n commands found"
e2e_finish
