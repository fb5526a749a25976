/* net/tap.h: persistent tap devices for VM NICs. vmhost creates the tap
 * (so it can be put on a bridge or an Open vSwitch port before QEMU starts)
 * and QEMU opens it by name with ifname=TAP,script=no. */
#pragma once

/* Creates the persistent tap 'name' (IFF_TAP, no packet info). -EEXIST if a
 * link of that name exists. Needs CAP_NET_ADMIN and /dev/net/tun. */
int net_tap_create(const char *name);
