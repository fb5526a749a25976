#!/bin/bash
# tests/e2e/t-cli-help.sh: every command of the CLI has --help: for each
# verb and each command its group lists ('vmhost VERB --help'), both
# 'vmhost VERB COMMAND --help' and '-h' exit 0 and print to stdout that
# command's own help: a "Usage: vmhost VERB COMMAND" line, an example line
# that runs 'vmhost VERB COMMAND', every option the group's help gives the
# command (on its line under "Commands:" and under "Options of COMMAND:"),
# every option of its own usage lines explained on a line that starts with
# it, and none of the group's other commands listed. Help for an unknown
# command is an error. The lists are read from the program's own help, so a
# new command is covered as soon as it is listed.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=tests/e2e/lib.sh
source "$HERE/lib.sh"
e2e_init cli-help
need python3

VMHOST=${VMHOST:-$ROOT/build/src/cli/vmhost}
if [ ! -x "$VMHOST" ]; then
	fail vmhost-built "$VMHOST is not built (ninja -C build)"
	e2e_finish
fi
cd "$E2E_TMP"

# has_help ARGS...: the help of the program, a verb or a guest command:
# stdout, exit 0, "Usage" and an example.
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

# check_command_help.py VERB COMMAND GROUP-HELP COMMAND-HELP: judges a
# command's help against its group's; prints why not, or a summary.
cat >check_command_help.py <<'PY'
import re, sys
verb, cmd, group_file, help_file = sys.argv[1:]
group = open(group_file).read().splitlines()
text = open(help_file).read()
lines = text.splitlines()
OPT = re.compile(r'(?:^|[\s\[|])(--?[A-Za-z][A-Za-z0-9-]*)')

def options(s):
    return set(OPT.findall(s))

def synopsis(line):
    # A command or option line: the synopsis ends at the first gap of two
    # or more spaces, where the description begins.
    return re.split(r'\s{2,}', line.strip())[0]

def die(msg):
    print(msg)
    sys.exit(1)

# The group's commands, and the options the group's help gives this one.
commands, mine, where = set(), set(), None
for l in group:
    if l == 'Commands:':
        where = 'commands'
    elif l == 'Options of %s:' % cmd:
        where = 'options'
    elif not l.strip():
        where = None
    elif where == 'commands':
        m = re.match(r'^  ([a-z][a-z-]*)( |$)', l)
        if m:
            commands.add(m.group(1))
            if m.group(1) == cmd:
                mine |= options(synopsis(l))
    elif where == 'options' and re.match(r'^  --?[A-Za-z]', l):
        mine |= options(synopsis(l))
if cmd not in commands:
    die('%s is not listed in vmhost %s --help' % (cmd, verb))

head = 'Usage: vmhost %s %s' % (verb, cmd)
if not lines or not re.match(re.escape(head) + r'( |$)', lines[0]):
    die('first line is not "%s ...": %r' % (head, lines[0] if lines else ''))
if re.search(r'^Commands:', text, re.M):
    die('prints a "Commands:" list: the group\'s usage, not the command\'s')
others = sorted(c for c in commands if c != cmd and re.search(r'^  %s( |$)' % re.escape(c), text, re.M))
if others:
    die('lists other commands of %s: %s' % (verb, ', '.join(others)))
ex = [i for i, l in enumerate(lines) if re.match(r'^Examples?:$', l)]
if not ex:
    die('no "Example:" section')
examples = [l.strip() for l in lines[ex[0] + 1:] if l.startswith('  ') and 'vmhost %s %s' % (verb, cmd) in l]
if not examples:
    die('no example line running "vmhost %s %s"' % (verb, cmd))
missing = sorted(o for o in mine if not re.search(r'(^|[\s\[|,])%s([\s=\]|,]|$)' % re.escape(o), text, re.M))
if missing:
    die('does not show its options %s (given in vmhost %s --help)' % (', '.join(missing), verb))
# The usage lines: "Usage: ..." and the alternatives aligned under it.
own = set()
for l in lines:
    if l.startswith('Usage:'):
        own |= options(l[len('Usage:'):])
    elif l.startswith('       vmhost '):
        own |= options(l)
    else:
        break
body = '\n'.join(lines[1:])
unexplained = sorted(o for o in own
                     if not re.search(r'^ +(-\w, )?%s([ ,=]|$)' % re.escape(o), body, re.M))
if unexplained:
    die('options of its usage line not explained on a line of their own: %s' % ', '.join(unexplained))
print('%d lines, %d options, e.g. %s' % (len(lines), len(mine | own), examples[0]))
PY

# command_help VERB COMMAND: 'vmhost VERB COMMAND --help' and -h print that
# command's own help (judged by check_command_help.py).
command_help() {
	local verb=$1 cmd=$2 rc why=""
	"$VMHOST" "$verb" --help >group.txt
	for flag in --help -h; do
		rc=0
		"$VMHOST" "$verb" "$cmd" $flag >out.txt 2>err.txt || rc=$?
		if [ $rc -ne 0 ]; then
			fail "help $verb $cmd $flag" "exit $rc, stderr: $(head -c 200 err.txt)"
			return
		fi
		if ! why=$(python3 check_command_help.py "$verb" "$cmd" group.txt out.txt); then
			fail "help $verb $cmd $flag" "$why"
			return
		fi
	done
	pass "help $verb $cmd" "$why"
}

# commands VERB: the command names listed under "Commands:" in its help.
commands() {
	"$VMHOST" "$1" --help | awk '/^Commands:/ { on = 1; next } on && /^$/ { on = 0 } on && /^  [a-z]/ { print $1 }' |
		sort -u
}

has_help
for verb in doctor img vm net guest host web; do
	has_help "$verb"
done
n=0
for verb in img vm net host; do
	list=$(commands "$verb")
	if [ -z "$list" ]; then
		fail "commands $verb" "no commands found in 'vmhost $verb --help'"
		continue
	fi
	for c in $list; do
		command_help "$verb" "$c"
		n=$((n + 1))
	done
done
# The checker itself must refuse what a command's help must not be: the
# group's usage (also under the command's own Usage line, and without its
# "Commands:" header), and create's help without one of its options.
"$VMHOST" vm --help >group.txt
"$VMHOST" vm create --help >create.txt
sed '1s/.*/Usage: vmhost vm vnc NAME/' group.txt >fake1.txt
sed '/^Commands:/d' fake1.txt >fake2.txt
grep -v -- '--disk-format' create.txt >fake3.txt
for c in "vnc group.txt first line" "vnc fake1.txt Commands:" "vnc fake2.txt other commands" "create fake3.txt --disk-format"; do
	set -- $c
	if why=$(python3 check_command_help.py vm "$1" group.txt "$2"); then
		fail "checker refuses $2" "accepted: $why"
	elif grep -qF -- "${c#* * }" <<<"$why"; then
		pass "checker refuses $2" "$why"
	else
		fail "checker refuses $2" "for another reason: $why"
	fi
done
has_help guest build
has_help guest path
# Help for a command that does not exist must not pretend it does.
for verb in img vm net host; do
	rc=0
	"$VMHOST" $verb no-such-command --help >out.txt 2>err.txt || rc=$?
	if [ $rc -eq 2 ] && grep -q "Unknown command '$verb no-such-command'" err.txt && [ ! -s out.txt ]; then
		pass "help $verb unknown-command" "exit 2: $(cat err.txt)"
	else
		fail "help $verb unknown-command" "exit $rc, stdout $(head -c 100 out.txt), stderr $(head -c 200 err.txt)"
	fi
done
[ $n -ge 30 ] && pass "command count" "$n commands of img, vm, net and host checked" ||
	fail "command count" "only $n commands found"
e2e_finish
