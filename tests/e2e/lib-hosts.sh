# shellcheck shell=bash
# tests/e2e/lib-hosts.sh: test hosts for the remote-host tests (sourced
# after lib.sh and e2e_init). A test host is a network namespace with its
# own sshd (own config, host key, the test's authorized key) running inside
# its own mount namespace, where /var/lib/vmhost, /run/vmhost and /root are
# the host's private directories (and /run/openvswitch, with its own
# ovsdb-server and ovs-vswitchd, when asked), and /etc/machine-id is the
# host's own, as on a machine of its own (vmhost derives MACs from it):
# what that host's vmhost holds, it got over ssh. The hosts hang off one
# Linux bridge in this namespace, which holds this side's address (host
# "a", the machine the test drives from, with its own VMHOST_HOME).
#
#   hosts_init                 this side: VMHOST_HOME, the key, the switch
#   host_new NAME [ovs]        make host NAME and start it
#   host_start NAME / host_stop NAME
#                              its daemons (sshd, OVS; every process in its
#                              namespace goes at stop, QEMU included)
#   host_add NAME              'vmhost host add NAME' with the test key
#   host_ip NAME, host_dir NAME, host_ns NAME
#   HOSTS_NOBODY               an address on the switch where nothing answers
#   console_cmd HOST VM TIMEOUT CMD
#                              CMD in guest VM on HOST through 'vmhost --host
#                              HOST vm console VM'; its output and status
#   hosts_know_each_other A B  A and B registered with each other (as the
#                              source of a migration drives the destination)
#   HOSTS_MTU                  the switch's MTU (set before hosts_init; default
#                              1500): above 1500 leaves room for a tunnel's
#                              headers around full-size frames
#   HOSTS_SHARED=SRC:PATH      (set before host_new, optional) directory SRC
#                              bind-mounted at PATH inside every host: storage
#                              the hosts share at one path (live migration)
#
# Everything goes on exit through hosts_cleanup (call it from the trap,
# before e2e_cleanup). Traps seen on these machines (../shared/lab/
# l-ssh-hosts.sh): ssh joins the remote words with spaces (vmhost quotes
# each), and a login shell's rc files cost time on every command (root's
# home is the host's own, empty, directory).

HOSTS_ID=$(($$ % 200 + 20)) # unique per run: another run may be going on
HOSTS_NET=10.246.$HOSTS_ID
HOSTS_SWITCH=vhhb$$
HOSTS_NOBODY=$HOSTS_NET.250
HOSTS_MTU=${HOSTS_MTU:-1500}
HOSTS_KEY=
HOSTS_NAMES=()
declare -A HOSTS_INDEX=()

hosts_init() {
	need ip unshare ssh ssh-keygen
	[ -x /usr/sbin/sshd ] || { fail need-sshd "/usr/sbin/sshd missing (Debian: openssh-server)"; e2e_finish; }
	[ "$(id -u)" -eq 0 ] || { echo "SKIP: needs root (network and mount namespaces)"; exit 77; }
	# This side's home; short, since ssh's control socket paths are limited.
	export VMHOST_HOME=$E2E_TMP/a
	mkdir -p "$VMHOST_HOME"
	HOSTS_KEY=$E2E_TMP/key
	ssh-keygen -q -t ed25519 -N '' -f "$HOSTS_KEY"
	ip link add "$HOSTS_SWITCH" mtu "$HOSTS_MTU" type bridge || { fail hosts-switch "cannot make bridge $HOSTS_SWITCH"; e2e_finish; }
	ip addr add "$HOSTS_NET.1/24" dev "$HOSTS_SWITCH"
	ip link set "$HOSTS_SWITCH" up
	mkdir -p /run/sshd /var/lib/vmhost /run/vmhost /run/openvswitch
}

host_ns() { echo "vhh$$${1}"; }
host_dir() { echo "$E2E_TMP/h-$1"; }
host_ip() { echo "$HOSTS_NET.$((HOSTS_INDEX[$1] + 2))"; }

# host_new NAME [ovs]
host_new() {
	local name=$1 ovs=${2:-} ns w ip i=${#HOSTS_NAMES[@]}
	HOSTS_INDEX[$name]=$i
	HOSTS_NAMES+=("$name")
	ns=$(host_ns "$name") w=$(host_dir "$name") ip=$(host_ip "$name")
	mkdir -p -m 700 "$w"/{state,run,root,ssh,ovs}
	[ "$ovs" = ovs ] && touch "$w/ovs/wanted"
	ssh-keygen -q -t ed25519 -N '' -f "$w/ssh/hostkey"
	od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$w/machine-id" && echo >>"$w/machine-id"
	cp "$HOSTS_KEY.pub" "$w/ssh/authorized_keys"
	cat >"$w/ssh/sshd_config" <<-EOC
		ListenAddress $ip
		HostKey $w/ssh/hostkey
		AuthorizedKeysFile $w/ssh/authorized_keys
		PermitRootLogin prohibit-password
		PasswordAuthentication no
		KbdInteractiveAuthentication no
		UsePAM no
		StrictModes no
		PidFile $w/ssh/sshd.pid
		Subsystem sftp internal-sftp
	EOC
	ip netns add "$ns" || { fail "host $name" "cannot make namespace $ns"; return 1; }
	ip link add "vhh$$-$i" mtu "$HOSTS_MTU" type veth peer name eth0 netns "$ns" mtu "$HOSTS_MTU"
	ip link set "vhh$$-$i" master "$HOSTS_SWITCH" up
	# A veth hands TCP packets on with checksums still to be filled in; a
	# host's OVS userspace datapath reads them raw off eth0 (AF_PACKET)
	# and its kernel would drop them behind the internal port: no TCP (ssh
	# included) once 'vmhost net uplink' moved eth0 into OVS. A real NIC
	# delivers complete checksums: make the switch's end do so (ethtool -K
	# tx off, through the ioctl, as there may be no ethtool).
	python3 -c '
import array, fcntl, socket, struct, sys
cmd = array.array("B", struct.pack("II", 0x17, 0))  # ETHTOOL_STXCSUM, off
ifr = struct.pack("16sQ8x", sys.argv[1].encode(), cmd.buffer_info()[0])
fcntl.ioctl(socket.socket(socket.AF_INET, socket.SOCK_DGRAM), 0x8946, ifr)  # SIOCETHTOOL' "vhh$$-$i" ||
		{ fail "host $name" "cannot turn off checksum offload on vhh$$-$i"; return 1; }
	ip -n "$ns" addr add "$ip/24" dev eth0
	ip -n "$ns" link set eth0 up
	ip -n "$ns" link set lo up
	host_start "$name"
}

# host_start NAME: the host's daemons in one new private mount namespace
# (sshd's sessions, and with them the host's vmhost and QEMU, inherit it).
host_start() {
	local name=$1 ns w ip ovs=
	ns=$(host_ns "$name") w=$(host_dir "$name") ip=$(host_ip "$name")
	rm -f "$w/ssh/sshd.pid"
	if [ -e "$w/ovs/wanted" ]; then
		# The userspace datapath (no openvswitch module here), its own
		# database and sockets under the host's /run/openvswitch.
		ovs="mount --bind $w/ovs /run/openvswitch &&
		{ [ -f $w/ovs/conf.db ] || ovsdb-tool create $w/ovs/conf.db /usr/share/openvswitch/vswitch.ovsschema; } &&
		ovsdb-server $w/ovs/conf.db --remote=punix:/run/openvswitch/db.sock --pidfile=/run/openvswitch/ovsdb-server.pid \
			--unixctl=/run/openvswitch/ovsdb-server.ctl --log-file=$w/ovs/ovsdb-server.log --detach 2>/dev/null &&
		ovs-vsctl --no-wait init &&
		ovs-vswitchd unix:/run/openvswitch/db.sock --pidfile=/run/openvswitch/ovs-vswitchd.pid \
			--unixctl=/run/openvswitch/ovs-vswitchd.ctl --log-file=$w/ovs/ovs-vswitchd.log --detach 2>/dev/null &&
		ovs-vsctl --timeout=10 set Open_vSwitch . external_ids:system-id=$name &&"
	fi
	ip netns exec "$ns" unshare --mount --propagation private sh -c "
		mount --bind $w/state /var/lib/vmhost &&
		mount --bind $w/run /run/vmhost &&
		mount --bind $w/root /root &&
		mount --bind $w/machine-id /etc/machine-id && ${HOSTS_SHARED:+mkdir -p ${HOSTS_SHARED#*:} &&
		mount --bind ${HOSTS_SHARED%%:*} ${HOSTS_SHARED#*:} &&} $ovs
		exec /usr/sbin/sshd -f $w/ssh/sshd_config" ||
		{ fail "host $name start" "see $w/ovs/*.log"; return 1; }
	wait_until 10 "host $name's sshd listening" bash -c "exec 3<>/dev/tcp/$ip/22" 2>/dev/null
}

# host_stop NAME: every process of the host's namespace (sshd, its
# sessions, OVS, QEMU started there), TERM then KILL.
host_stop() {
	local ns p
	ns=$(host_ns "$1")
	ip netns list | grep -qw "$ns" || return 0
	# A process may end between the listing and the kill (set -e callers).
	for p in $(ip netns pids "$ns"); do kill "$p" 2>/dev/null || true; done
	wait_until 10 "host $1's processes gone" bash -c "[ -z \"\$(ip netns pids $ns)\" ]" ||
		for p in $(ip netns pids "$ns"); do kill -9 "$p" 2>/dev/null || true; done
	# vmhost's ssh master to the host ends with its connection.
	return 0
}

# host_add NAME [ARGS...]: register it here with the test key.
host_add() {
	local name=$1
	shift
	"$VMHOST" host add "$name" --ssh "root@$(host_ip "$name")" --identity "$HOSTS_KEY" --vmhost "$VMHOST" "$@"
}

# Keeps the status it was called with, for e2e_cleanup after it in the trap.
hosts_cleanup() {
	local rc=$? s n p
	set +e
	for s in "$VMHOST_HOME"/run/ssh/*; do
		[ -S "$s" ] && timeout 5 ssh -o ControlPath="$s" -O exit dummy >/dev/null 2>&1
	done
	# A master that did not answer: ours, by its control path.
	for p in $(pgrep -f "^ssh: $VMHOST_HOME/run/ssh/"); do kill "$p" 2>/dev/null; done
	for n in "${HOSTS_NAMES[@]}"; do
		host_stop "$n" >/dev/null 2>&1
		ip netns del "$(host_ns "$n")" 2>/dev/null
		# Gone with the namespace, unless a lingering socket keeps that
		# alive a while; its switch end takes the pair along now.
		ip link del "vhh$$-${HOSTS_INDEX[$n]}" 2>/dev/null
	done
	ip link del "$HOSTS_SWITCH" 2>/dev/null
	return $rc
}

# console_cmd HOST VM TIMEOUT CMD: CMD in the guest VM of HOST through
# 'vmhost --host HOST vm console VM' (piped); prints its output, returns
# its exit status, 124 on timeout. The console's input stays open until
# the end marker came back, so that a slow command is not cut short.
console_cmd() {
	python3 - "$VMHOST" "$@" <<'EOF'
import os, re, select, subprocess, sys, time
vmhost, host, vm, timeout, cmd = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
tag = os.urandom(4).hex()
p = subprocess.Popen([vmhost, '--host', host, 'vm', 'console', vm], stdin=subprocess.PIPE,
                     stdout=subprocess.PIPE)
# The markers are written split so that the echoed line cannot fake them.
p.stdin.write(('echo "@@B""%s"; ( %s ); echo "@@E""%s rc=$?"\n' % (tag, cmd, tag)).encode())
p.stdin.flush()
begin = ('@@B' + tag).encode()
end = re.compile(rb'@@E' + tag.encode() + rb' rc=(\d+)')
buf, rc = b'', 124
deadline = time.time() + timeout
while time.time() < deadline and len(buf) < (1 << 20):
    r, _, _ = select.select([p.stdout], [], [], 0.2)
    if r:
        d = os.read(p.stdout.fileno(), 65536)
        if not d:
            break
        buf += d
    m = end.search(buf)
    if m:
        start = buf.find(begin)
        out = buf[start + len(begin):m.start()] if start >= 0 else buf[:m.start()]
        text = out.decode(errors='replace').replace('\r', '').strip('\n')
        if text:
            print(text)
        rc = int(m.group(1))
        break
p.stdin.close()
try:
    p.wait(10)
except subprocess.TimeoutExpired:
    p.kill()
    p.wait()
if rc == 124:
    sys.stdout.write(buf.decode(errors='replace').replace('\r', ''))
    print('console_cmd: no answer from %s on %s within %.0f s to %r' % (vm, host, timeout, cmd), file=sys.stderr)
sys.exit(rc)
EOF
}

# hosts_know_each_other A B: 'host add' on A for B and on B for A, over
# plain ssh ('vmhost --host' forwards no 'host' commands).
hosts_know_each_other() {
	local a=$1 b=$2
	host_ssh "$a" "$VMHOST" host add "$b" --ssh "root@$(host_ip "$b")" --identity "$HOSTS_KEY" --vmhost "$VMHOST" >/dev/null &&
		host_ssh "$b" "$VMHOST" host add "$a" --ssh "root@$(host_ip "$a")" --identity "$HOSTS_KEY" --vmhost "$VMHOST" >/dev/null
}

# host_ssh HOST CMD...: CMD on HOST over plain ssh with the test key (not
# vmhost's transport; the test's own observation and set-up).
host_ssh() {
	ssh -i "$HOSTS_KEY" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR \
		"root@$(host_ip "$1")" "${@:2}"
}
