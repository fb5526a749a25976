#!/bin/sh
# tools/guest/init.sh: /init of vmhost's test guest (busybox-static initramfs
# built by tools/mkguest). It brings up virtio and the network from knobs on
# the kernel command line, prints one ready line on the serial console and then
# runs the lines typed on that console, so tests can drive the guest without a
# network or an agent.
#
# Kernel command line knobs (all optional):
#   vmhost.name=NAME        name in the ready line and the TCP greeting (default: guest)
#   vmhost.ip=A.B.C.D/NN    static address on eth0 (wins over vmhost.net; /24 if no prefix)
#   vmhost.gw=A.B.C.D       default gateway for the static address
#   vmhost.mtu=N            MTU of eth0
#   vmhost.net=dhcp|none    DHCP on eth0 with busybox udhcpc (skipped when there is no eth0)
#   vmhost.tcp=PORT|off     TCP greeting service (default 7777 when eth0 exists)
#   vmhost.counter=1        print "CNT n" every 100 ms after the ready line (migration tests)
#
# After the ready line the CD-ROM drivers load in the background: /dev/sr0 is the
# VM's CD drive (mount -t iso9660 -o ro /dev/sr0 DIR).
#
# Contract with the host (tests grep for it; keep it stable):
#   exactly one line "VMHOST-READY name=NAME ip=ADDR|none uptime=SECONDS" on the console,
#   then each console line is run with sh -c (stdin /dev/null, so a command cannot eat
#   the lines that follow it).
export PATH=/bin:/sbin
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
/bin/busybox mount -t devtmpfs dev /dev 2>/dev/null
# The kernel found no /dev/console in the initramfs before devtmpfs was mounted,
# so stdio is attached here.
exec 0</dev/console 1>/dev/console 2>&1
mkdir -p /tmp /run
# Only emergencies reach the console from now on: kernel chatter (virtio probes,
# crng) would otherwise interleave with command output read by the host.
dmesg -n 1 2>/dev/null

# Dependencies first; this order is what the cloud kernel's modules.dep needs.
for m in virtio_ring virtio failover net_failover virtio_net \
         virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci virtio_blk evdev button; do
	[ -f "/lib/mod/$m.ko" ] && insmod "/lib/mod/$m.ko" 2>/dev/null
done

# ACPI power button (QMP system_powerdown, 'vmhost vm stop'): busybox acpid
# runs /etc/acpi/PWRF/00000080, which powers the machine off; QEMU then exits.
mkdir -p /etc/acpi/PWRF
printf '#!/bin/sh\necho "VMHOST-POWERDOWN"\nsync\npoweroff -f\n' > /etc/acpi/PWRF/00000080
chmod +x /etc/acpi/PWRF/00000080
echo "PWRF PWRF/00000080" > /etc/acpid.conf
acpid -c /etc/acpi -a /etc/acpid.conf -l /tmp/acpid.log 2>/dev/null

NAME=guest IP='' GW='' MTU='' NET=none TCP='' COUNTER=''
set -f # split the command line into words, but never glob them
# shellcheck disable=SC2013
for w in $(cat /proc/cmdline); do
	case "$w" in
	vmhost.name=*) NAME=${w#vmhost.name=} ;;
	vmhost.ip=*) IP=${w#vmhost.ip=} ;;
	vmhost.gw=*) GW=${w#vmhost.gw=} ;;
	vmhost.mtu=*) MTU=${w#vmhost.mtu=} ;;
	vmhost.net=*) NET=${w#vmhost.net=} ;;
	vmhost.tcp=*) TCP=${w#vmhost.tcp=} ;;
	vmhost.counter=*) COUNTER=${w#vmhost.counter=} ;;
	esac
done
set +f
# The name ends up in a shell-generated line; keep it to a safe alphabet.
case "$NAME" in ''|*[!A-Za-z0-9._-]*) NAME=guest ;; esac
echo "$NAME" > /etc/vmhost-name
hostname "$NAME"
ip link set lo up

# virtio_net probes asynchronously after insmod returns: wait briefly for eth0,
# but only when a virtio network device (vendor 0x1af4, device 0x1000 legacy or
# 0x1041 modern) is on the PCI bus, so a guest without a NIC never waits.
has_virtio_nic() {
	for d in /sys/bus/pci/devices/*; do
		[ "$(cat "$d/vendor" 2>/dev/null)" = 0x1af4 ] || continue
		case "$(cat "$d/device" 2>/dev/null)" in 0x1000|0x1041) return 0 ;; esac
	done
	return 1
}
if has_virtio_nic; then
	n=0
	while [ ! -e /sys/class/net/eth0 ] && [ $n -lt 50 ]; do usleep 100000; n=$((n+1)); done
fi

ADDR=none
if [ -e /sys/class/net/eth0 ]; then
	[ -n "$MTU" ] && ip link set eth0 mtu "$MTU"
	ip link set eth0 up
	if [ -n "$IP" ]; then
		case "$IP" in */*) ;; *) IP=$IP/24 ;; esac
		if ip addr add "$IP" dev eth0; then
			ADDR=${IP%%/*}
			[ -n "$GW" ] && ip route add default via "$GW"
		fi
	elif [ "$NET" = dhcp ]; then
		# -n: give up instead of retrying forever; -q: exit once bound.
		if udhcpc -i eth0 -s /etc/udhcpc.script -t 6 -T 1 -A 1 -n -q >/tmp/udhcpc.log 2>&1; then
			a=$(ip -4 -o addr show dev eth0 | awk '{print $4; exit}')
			[ -n "$a" ] && ADDR=${a%%/*}
		fi
	fi
	[ -n "$TCP" ] || TCP=7777
fi

case "$TCP" in
''|off|none|0) ;;
*[!0-9]*) echo "vmhost-init: ignoring bad vmhost.tcp=$TCP" ;;
*)
	nc -ll -p "$TCP" -e /bin/vmhost-hello &
	# Ready must mean connectable: wait (at most 2 s) until the listener is up.
	n=0
	while ! netstat -ltn 2>/dev/null | grep -q ":$TCP " && [ $n -lt 20 ]; do usleep 100000; n=$((n+1)); done
	;;
esac

# No echo of typed commands, set before the ready line so that a host which
# sends a command right after seeing it never gets its own line back.
stty -echo 2>/dev/null
echo "VMHOST-READY name=$NAME ip=$ADDR uptime=$(cut -d' ' -f1 /proc/uptime)"

# The CD-ROM drivers (IDE CD on QEMU's ATA controller, ISO 9660) load after
# the ready line, in the background, so they do not slow the boot; /dev/sr0
# appears a moment later (tests wait for it before mounting).
(
	for m in scsi_common scsi_mod cdrom isofs sr_mod libata ata_piix; do
		[ -f "/lib/mod/$m.ko" ] && insmod "/lib/mod/$m.ko" 2>/dev/null
	done
) </dev/null >/dev/null 2>&1 &

if [ "$COUNTER" = 1 ]; then
	( i=0; while :; do echo "CNT $i"; i=$((i+1)); usleep 100000; done ) &
fi

while IFS= read -r line; do
	[ -n "$line" ] || continue
	sh -c "$line" </dev/null
done
# The console went away (it never should on a serial line): keep PID 1 alive.
exec sh
