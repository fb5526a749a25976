#!/bin/bash
# tests/e2e/t-cli-help.sh: every command of the CLI has --help: for each
# verb and each command its group lists ('vmhost VERB --help'), both
# 'vmhost VERB COMMAND --help' and '-h' exit 0, print a usage to stdout
# that names the command, and show an example; help for an unknown command
# is an error. The lists are read from the program's own help,
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

# has_help ARGS...: the command's help (stdout, exit 0, "Usage", an example,
# and the command itself named: for img each command has its own usage
# "Usage: vmhost img COMMAND"; vm and net print their group's usage, which
# must list the command as "  COMMAND " or show "vmhost VERB COMMAND").
has_help() {
	local what="$*" out rc=0 named=1
	for flag in --help -h; do
		out=$("$VMHOST" "$@" $flag 2>err.txt) || rc=$?
		if [ $# -ge 2 ]; then
			named=0
			grep -qE "^  $2( |\$)|vmhost $1 $2( |\$)" <<<"$out" && named=1
		fi
		if [ $rc -ne 0 ] || ! grep -q '^Usage' <<<"$out" || ! grep -qi '^Examples\?:' <<<"$out" || [ $named = 0 ]; then
			fail "help $what $flag" "exit $rc, named $named, $(wc -l <<<"$out") lines on stdout, stderr: $(head -c 200 err.txt)"
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
# Help for a command that does not exist must not pretend it does.
for verb in img vm net; do
	rc=0
	"$VMHOST" $verb no-such-command --help >out.txt 2>err.txt || rc=$?
	if [ $rc -eq 2 ] && grep -q "Unknown command '$verb no-such-command'" err.txt && [ ! -s out.txt ]; then
		pass "help $verb unknown-command" "exit 2: $(cat err.txt)"
	else
		fail "help $verb unknown-command" "exit $rc, stdout $(head -c 100 out.txt), stderr $(head -c 200 err.txt)"
	fi
done
[ $n -ge 30 ] && pass "command count" "$n commands of img, vm and net checked" ||
	fail "command count" "only $n commands found"
e2e_finish
