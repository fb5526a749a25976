/* net/netlink.c: rtnetlink and generic-netlink requests over libmnl. */
#include <arpa/inet.h>
#include <errno.h>
#include <libmnl/libmnl.h>
#include <linux/genetlink.h>
#include <linux/if.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/if_tunnel.h>
#include <linux/rtnetlink.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "base/macro.h"
#include "net/netlink.h"

/* Large enough for one dump message of a link with all its attributes. */
#define NL_BUFFER_SIZE 32768
/* Bounds a dump: no host has this many links, addresses or routes that
 * vmhost would need to look at, and it keeps memory use predictable. */
#define NL_MAX_OBJECTS 65536

struct nl_conn {
        struct mnl_socket *sock;
        unsigned portid;
        unsigned seq;
        char buf[NL_BUFFER_SIZE];
};

int nl_open(struct nl_conn **ret) {
        struct nl_conn *nl = calloc(1, sizeof(*nl));
        if (!nl)
                return -ENOMEM;
        nl->sock = mnl_socket_open(NETLINK_ROUTE);
        if (!nl->sock) {
                int r = negative_errno();
                free(nl);
                return r;
        }
        if (mnl_socket_bind(nl->sock, 0, MNL_SOCKET_AUTOPID) < 0) {
                int r = negative_errno();
                mnl_socket_close(nl->sock);
                free(nl);
                return r;
        }
        nl->portid = mnl_socket_get_portid(nl->sock);
        nl->seq = (unsigned) time(NULL);
        *ret = nl;
        return 0;
}

struct nl_conn *nl_close(struct nl_conn *nl) {
        if (!nl)
                return NULL;
        mnl_socket_close(nl->sock);
        free(nl);
        return NULL;
}

/* Sends the request in nl->buf and runs 'cb' on each answer until the ack
 * or the end of the dump. Returns 0 or the kernel's -errno. */
static int nl_transact(struct nl_conn *nl, struct nlmsghdr *nlh, mnl_cb_t cb, void *data) {
        nlh->nlmsg_seq = ++nl->seq;
        if (mnl_socket_sendto(nl->sock, nlh, nlh->nlmsg_len) < 0)
                return negative_errno();
        for (;;) {
                ssize_t n = mnl_socket_recvfrom(nl->sock, nl->buf, sizeof(nl->buf));
                if (n < 0) {
                        if (errno == EINTR)
                                continue;
                        return negative_errno();
                }
                int r = mnl_cb_run(nl->buf, (size_t) n, nl->seq, nl->portid, cb, data);
                if (r < 0)
                        return errno > 0 ? -errno : -EIO;
                if (r == MNL_CB_STOP)
                        return 0;
        }
}

/* ------------------------------------------------------------------ links */

/* The attribute table of one message: mnl_attr_parse() fills tb[0..max]
 * through attr_table_cb(), skipping types it does not know. */
struct attr_table {
        const struct nlattr **tb;
        int max;
};

static int attr_table_cb(const struct nlattr *attr, void *data) {
        const struct attr_table *t = data;
        if (mnl_attr_type_valid(attr, (uint16_t) t->max) < 0)
                return MNL_CB_OK;
        t->tb[mnl_attr_get_type(attr)] = attr;
        return MNL_CB_OK;
}

/* Room for one more element in a query's growing array 'v' ('n' used,
 * '*cap' allocated, 'size' bytes each), at most NL_MAX_OBJECTS: the array,
 * perhaps moved, or NULL with '*error' set when the dump is too large or
 * memory runs out (the callback then goes on, so that the dump is read to
 * its end). */
static void *query_grow(void *v, size_t n, size_t *cap, size_t size, int *error) {
        if (n >= NL_MAX_OBJECTS) {
                *error = -E2BIG;
                return NULL;
        }
        if (n < *cap)
                return v;
        size_t c = *cap ? *cap * 2 : 16;
        void *nv = realloc(v, c * size);
        if (!nv) {
                *error = -ENOMEM;
                return NULL;
        }
        *cap = c;
        return nv;
}

struct link_query {
        struct nl_link *links;
        size_t n, cap;
        int error;
};

static int link_cb(const struct nlmsghdr *nlh, void *data) {
        struct link_query *q = data;
        if (nlh->nlmsg_type != RTM_NEWLINK)
                return MNL_CB_OK;
        const struct ifinfomsg *ifi = mnl_nlmsg_get_payload(nlh);
        const struct nlattr *tb[IFLA_MAX + 1] = {};
        if (mnl_attr_parse(nlh, sizeof(*ifi), attr_table_cb, &(struct attr_table) { tb, IFLA_MAX }) < 0)
                return MNL_CB_ERROR;
        struct nl_link *grown = query_grow(q->links, q->n, &q->cap, sizeof(*grown), &q->error);
        if (!grown)
                return MNL_CB_OK;
        q->links = grown;
        struct nl_link *slot = &grown[q->n++];
        struct nl_link *l = slot;
        *l = (struct nl_link) { .ifindex = ifi->ifi_index, .flags = ifi->ifi_flags };
        if (tb[IFLA_IFNAME])
                snprintf(l->name, sizeof(l->name), "%s", mnl_attr_get_str(tb[IFLA_IFNAME]));
        if (tb[IFLA_MTU])
                l->mtu = mnl_attr_get_u32(tb[IFLA_MTU]);
        if (tb[IFLA_MASTER])
                l->master = (int) mnl_attr_get_u32(tb[IFLA_MASTER]);
        if (tb[IFLA_ADDRESS] && mnl_attr_get_payload_len(tb[IFLA_ADDRESS]) == 6) {
                memcpy(l->mac, mnl_attr_get_payload(tb[IFLA_ADDRESS]), 6);
                l->has_mac = true;
        }
        if (tb[IFLA_LINKINFO]) {
                const struct nlattr *info[IFLA_INFO_MAX + 1] = {};
                if (mnl_attr_parse_nested(tb[IFLA_LINKINFO], attr_table_cb, &(struct attr_table) { info, IFLA_INFO_MAX }) >= 0 && info[IFLA_INFO_KIND])
                        snprintf(l->kind, sizeof(l->kind), "%s", mnl_attr_get_str(info[IFLA_INFO_KIND]));
        }
        return MNL_CB_OK;
}

static int link_get(struct nl_conn *nl, const char *name, int ifindex, struct nl_link *ret) {
        struct nlmsghdr *nlh = mnl_nlmsg_put_header(nl->buf);
        nlh->nlmsg_type = RTM_GETLINK;
        /* The ack after the answer ends the exchange (see nl_transact()). */
        nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
        struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
        ifi->ifi_family = AF_UNSPEC;
        ifi->ifi_index = ifindex;
        if (name) {
                if (strlen(name) > NET_IFNAME_MAX)
                        return -ENODEV;
                mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
        }
        /* Skip per-VF statistics: they only make the answer large. */
        mnl_attr_put_u32(nlh, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
        struct link_query q = {};
        int r = nl_transact(nl, nlh, link_cb, &q);
        if (r >= 0 && q.error < 0)
                r = q.error;
        if (r >= 0 && q.n == 0)
                r = -ENODEV;
        if (r >= 0)
                *ret = q.links[0];
        free(q.links);
        return r;
}

int nl_link_get(struct nl_conn *nl, const char *name, struct nl_link *ret) {
        return link_get(nl, name, 0, ret);
}

int nl_link_get_by_index(struct nl_conn *nl, int ifindex, struct nl_link *ret) {
        if (ifindex <= 0)
                return -ENODEV;
        return link_get(nl, NULL, ifindex, ret);
}

static struct nlmsghdr *link_new_header(struct nl_conn *nl, int type, int flags, int ifindex) {
        struct nlmsghdr *nlh = mnl_nlmsg_put_header(nl->buf);
        nlh->nlmsg_type = type;
        nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
        ifi->ifi_family = AF_UNSPEC;
        ifi->ifi_index = ifindex;
        return nlh;
}

int nl_bridge_add(struct nl_conn *nl, const char *name, unsigned mtu) {
        struct nlmsghdr *nlh = link_new_header(nl, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, 0);
        mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
        if (mtu)
                mnl_attr_put_u32(nlh, IFLA_MTU, mtu);
        struct nlattr *linkinfo = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
        mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "bridge");
        struct nlattr *data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
        /* No STP and no forward delay: a port forwards as soon as it is up,
         * so a guest's first DHCP request is not lost in a learning state. */
        mnl_attr_put_u32(nlh, IFLA_BR_STP_STATE, 0);
        mnl_attr_put_u32(nlh, IFLA_BR_FORWARD_DELAY, 0);
        mnl_attr_nest_end(nlh, data);
        mnl_attr_nest_end(nlh, linkinfo);
        return nl_transact(nl, nlh, NULL, NULL);
}

int nl_vxlan_add(struct nl_conn *nl, const char *name, const struct nl_vxlan *v, unsigned mtu) {
        struct nlmsghdr *nlh = link_new_header(nl, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, 0);
        mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
        if (mtu)
                mnl_attr_put_u32(nlh, IFLA_MTU, mtu);
        struct nlattr *linkinfo = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
        mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "vxlan");
        struct nlattr *data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
        mnl_attr_put_u32(nlh, IFLA_VXLAN_ID, v->vni);
        /* A unicast peer goes in the GROUP attribute: that is how the kernel
         * takes the default destination of a point-to-point VXLAN. */
        mnl_attr_put_u32(nlh, IFLA_VXLAN_GROUP, htonl(v->remote));
        if (v->local)
                mnl_attr_put_u32(nlh, IFLA_VXLAN_LOCAL, htonl(v->local));
        if (v->underlay_ifindex > 0)
                mnl_attr_put_u32(nlh, IFLA_VXLAN_LINK, (uint32_t) v->underlay_ifindex);
        mnl_attr_put_u16(nlh, IFLA_VXLAN_PORT, htons(v->port));
        mnl_attr_nest_end(nlh, data);
        mnl_attr_nest_end(nlh, linkinfo);
        return nl_transact(nl, nlh, NULL, NULL);
}

int nl_gretap_add(struct nl_conn *nl, const char *name, const struct nl_gretap *g, unsigned mtu) {
        struct nlmsghdr *nlh = link_new_header(nl, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, 0);
        mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
        if (mtu)
                mnl_attr_put_u32(nlh, IFLA_MTU, mtu);
        struct nlattr *linkinfo = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
        mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "gretap");
        struct nlattr *data = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
        mnl_attr_put_u32(nlh, IFLA_GRE_REMOTE, htonl(g->remote));
        if (g->local)
                mnl_attr_put_u32(nlh, IFLA_GRE_LOCAL, htonl(g->local));
        if (g->underlay_ifindex > 0)
                mnl_attr_put_u32(nlh, IFLA_GRE_LINK, (uint32_t) g->underlay_ifindex);
        if (g->has_key) {
                mnl_attr_put_u16(nlh, IFLA_GRE_IFLAGS, htons(GRE_KEY));
                mnl_attr_put_u16(nlh, IFLA_GRE_OFLAGS, htons(GRE_KEY));
                mnl_attr_put_u32(nlh, IFLA_GRE_IKEY, htonl(g->key));
                mnl_attr_put_u32(nlh, IFLA_GRE_OKEY, htonl(g->key));
        }
        mnl_attr_nest_end(nlh, data);
        mnl_attr_nest_end(nlh, linkinfo);
        return nl_transact(nl, nlh, NULL, NULL);
}

int nl_link_del(struct nl_conn *nl, int ifindex) {
        struct nlmsghdr *nlh = link_new_header(nl, RTM_DELLINK, 0, ifindex);
        return nl_transact(nl, nlh, NULL, NULL);
}

int nl_link_set_up(struct nl_conn *nl, int ifindex, bool up) {
        struct nlmsghdr *nlh = link_new_header(nl, RTM_NEWLINK, 0, ifindex);
        struct ifinfomsg *ifi = mnl_nlmsg_get_payload(nlh);
        ifi->ifi_change = IFF_UP;
        ifi->ifi_flags = up ? IFF_UP : 0;
        return nl_transact(nl, nlh, NULL, NULL);
}

int nl_link_set_mtu(struct nl_conn *nl, int ifindex, unsigned mtu) {
        struct nlmsghdr *nlh = link_new_header(nl, RTM_NEWLINK, 0, ifindex);
        mnl_attr_put_u32(nlh, IFLA_MTU, mtu);
        return nl_transact(nl, nlh, NULL, NULL);
}

int nl_link_set_master(struct nl_conn *nl, int ifindex, int master) {
        struct nlmsghdr *nlh = link_new_header(nl, RTM_NEWLINK, 0, ifindex);
        mnl_attr_put_u32(nlh, IFLA_MASTER, (uint32_t) master);
        return nl_transact(nl, nlh, NULL, NULL);
}

/* ------------------------------------------------------------------ addresses */

static struct nlmsghdr *addr_header(struct nl_conn *nl, int type, int flags, int ifindex, const struct net_prefix *p) {
        struct nlmsghdr *nlh = mnl_nlmsg_put_header(nl->buf);
        nlh->nlmsg_type = type;
        nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
        ifa->ifa_family = AF_INET;
        ifa->ifa_prefixlen = (unsigned char) p->len;
        ifa->ifa_index = (unsigned) ifindex;
        ifa->ifa_scope = RT_SCOPE_UNIVERSE;
        mnl_attr_put_u32(nlh, IFA_LOCAL, htonl(p->addr));
        mnl_attr_put_u32(nlh, IFA_ADDRESS, htonl(p->addr));
        return nlh;
}

int nl_addr_add(struct nl_conn *nl, int ifindex, const struct net_prefix *p) {
        struct nlmsghdr *nlh = addr_header(nl, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, ifindex, p);
        if (p->len < 31)
                mnl_attr_put_u32(nlh, IFA_BROADCAST, htonl(net_prefix_broadcast(p)));
        return nl_transact(nl, nlh, NULL, NULL);
}

int nl_addr_del(struct nl_conn *nl, int ifindex, const struct net_prefix *p) {
        struct nlmsghdr *nlh = addr_header(nl, RTM_DELADDR, 0, ifindex, p);
        return nl_transact(nl, nlh, NULL, NULL);
}

struct addr_query {
        int ifindex;
        struct nl_addr *v;
        size_t n, cap;
        int error;
};

static int addr_cb(const struct nlmsghdr *nlh, void *data) {
        struct addr_query *q = data;
        if (nlh->nlmsg_type != RTM_NEWADDR)
                return MNL_CB_OK;
        const struct ifaddrmsg *ifa = mnl_nlmsg_get_payload(nlh);
        if (ifa->ifa_family != AF_INET || (q->ifindex > 0 && (int) ifa->ifa_index != q->ifindex))
                return MNL_CB_OK;
        const struct nlattr *tb[IFA_MAX + 1] = {};
        if (mnl_attr_parse(nlh, sizeof(*ifa), attr_table_cb, &(struct attr_table) { tb, IFA_MAX }) < 0)
                return MNL_CB_ERROR;
        const struct nlattr *a = tb[IFA_LOCAL] ? tb[IFA_LOCAL] : tb[IFA_ADDRESS];
        if (!a || mnl_attr_get_payload_len(a) != 4)
                return MNL_CB_OK;
        struct nl_addr *grown = query_grow(q->v, q->n, &q->cap, sizeof(*grown), &q->error);
        if (!grown)
                return MNL_CB_OK;
        q->v = grown;
        struct nl_addr *slot = &grown[q->n++];
        *slot = (struct nl_addr) {
                .ifindex = (int) ifa->ifa_index,
                .prefix = { .addr = ntohl(mnl_attr_get_u32(a)), .len = ifa->ifa_prefixlen },
        };
        return MNL_CB_OK;
}

int nl_addr_list(struct nl_conn *nl, int ifindex, struct nl_addr **ret) {
        struct nlmsghdr *nlh = mnl_nlmsg_put_header(nl->buf);
        nlh->nlmsg_type = RTM_GETADDR;
        nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
        struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
        ifa->ifa_family = AF_INET;
        struct addr_query q = { .ifindex = ifindex };
        int r = nl_transact(nl, nlh, addr_cb, &q);
        if (r >= 0 && q.error < 0)
                r = q.error;
        if (r < 0) {
                free(q.v);
                return r;
        }
        *ret = q.v;
        return (int) q.n;
}

/* ------------------------------------------------------------------ routes */

struct route_query {
        struct nl_route *v;
        size_t n, cap;
        int error;
};

static uint32_t attr_ipv4(const struct nlattr *a) {
        return a && mnl_attr_get_payload_len(a) == 4 ? ntohl(mnl_attr_get_u32(a)) : 0;
}

static int route_cb(const struct nlmsghdr *nlh, void *data) {
        struct route_query *q = data;
        if (nlh->nlmsg_type != RTM_NEWROUTE)
                return MNL_CB_OK;
        const struct rtmsg *rtm = mnl_nlmsg_get_payload(nlh);
        if (rtm->rtm_family != AF_INET)
                return MNL_CB_OK;
        const struct nlattr *tb[RTA_MAX + 1] = {};
        if (mnl_attr_parse(nlh, sizeof(*rtm), attr_table_cb, &(struct attr_table) { tb, RTA_MAX }) < 0)
                return MNL_CB_ERROR;
        struct nl_route *grown = query_grow(q->v, q->n, &q->cap, sizeof(*grown), &q->error);
        if (!grown)
                return MNL_CB_OK;
        q->v = grown;
        struct nl_route *slot = &grown[q->n++];
        *slot = (struct nl_route) {
                .dst = { .addr = attr_ipv4(tb[RTA_DST]), .len = rtm->rtm_dst_len },
                .gateway = attr_ipv4(tb[RTA_GATEWAY]),
                .oif = tb[RTA_OIF] ? (int) mnl_attr_get_u32(tb[RTA_OIF]) : 0,
                .table = tb[RTA_TABLE] ? mnl_attr_get_u32(tb[RTA_TABLE]) : rtm->rtm_table,
                .prefsrc = attr_ipv4(tb[RTA_PREFSRC]),
                .priority = tb[RTA_PRIORITY] ? mnl_attr_get_u32(tb[RTA_PRIORITY]) : 0,
                .protocol = rtm->rtm_protocol,
                .scope = rtm->rtm_scope,
                .type = rtm->rtm_type,
        };
        return MNL_CB_OK;
}

int nl_route_list(struct nl_conn *nl, struct nl_route **ret) {
        struct nlmsghdr *nlh = mnl_nlmsg_put_header(nl->buf);
        nlh->nlmsg_type = RTM_GETROUTE;
        nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
        struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
        rtm->rtm_family = AF_INET;
        struct route_query q = {};
        int r = nl_transact(nl, nlh, route_cb, &q);
        if (r >= 0 && q.error < 0)
                r = q.error;
        if (r < 0) {
                free(q.v);
                return r;
        }
        *ret = q.v;
        return (int) q.n;
}

int nl_route_get(struct nl_conn *nl, uint32_t dst, struct nl_route *ret) {
        struct nlmsghdr *nlh = mnl_nlmsg_put_header(nl->buf);
        nlh->nlmsg_type = RTM_GETROUTE;
        nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
        struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
        rtm->rtm_family = AF_INET;
        rtm->rtm_dst_len = 32;
        mnl_attr_put_u32(nlh, RTA_DST, htonl(dst));
        struct route_query q = {};
        int r = nl_transact(nl, nlh, route_cb, &q);
        if (r >= 0 && q.error < 0)
                r = q.error;
        if (r >= 0 && q.n == 0)
                r = -ENETUNREACH;
        if (r >= 0)
                *ret = q.v[0];
        free(q.v);
        return r;
}

static int route_change(struct nl_conn *nl, int type, int flags, const struct nl_route *rt) {
        struct nlmsghdr *nlh = mnl_nlmsg_put_header(nl->buf);
        nlh->nlmsg_type = type;
        nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
        rtm->rtm_family = AF_INET;
        rtm->rtm_dst_len = (unsigned char) rt->dst.len;
        rtm->rtm_table = RT_TABLE_MAIN;
        rtm->rtm_protocol = rt->protocol ? rt->protocol : RTPROT_BOOT;
        rtm->rtm_scope = rt->gateway ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK;
        rtm->rtm_type = RTN_UNICAST;
        if (rt->dst.len)
                mnl_attr_put_u32(nlh, RTA_DST, htonl(rt->dst.addr));
        if (rt->gateway)
                mnl_attr_put_u32(nlh, RTA_GATEWAY, htonl(rt->gateway));
        if (rt->oif > 0)
                mnl_attr_put_u32(nlh, RTA_OIF, (uint32_t) rt->oif);
        if (rt->priority)
                mnl_attr_put_u32(nlh, RTA_PRIORITY, rt->priority);
        if (rt->prefsrc)
                mnl_attr_put_u32(nlh, RTA_PREFSRC, htonl(rt->prefsrc));
        return nl_transact(nl, nlh, NULL, NULL);
}

int nl_route_add(struct nl_conn *nl, const struct nl_route *r) {
        return route_change(nl, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, r);
}

int nl_route_del(struct nl_conn *nl, const struct nl_route *r) {
        return route_change(nl, RTM_DELROUTE, 0, r);
}

/* ------------------------------------------------------------------ generic netlink */

int nl_genl_family_exists(const char *family) {
        struct mnl_socket *sock = mnl_socket_open(NETLINK_GENERIC);
        if (!sock)
                return negative_errno();
        int r;
        if (mnl_socket_bind(sock, 0, MNL_SOCKET_AUTOPID) < 0) {
                r = negative_errno();
                mnl_socket_close(sock);
                return r;
        }
        char buf[8192];
        struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
        nlh->nlmsg_type = GENL_ID_CTRL;
        nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
        nlh->nlmsg_seq = (unsigned) time(NULL);
        struct genlmsghdr *genl = mnl_nlmsg_put_extra_header(nlh, sizeof(*genl));
        genl->cmd = CTRL_CMD_GETFAMILY;
        genl->version = 1;
        mnl_attr_put_strz(nlh, CTRL_ATTR_FAMILY_NAME, family);
        unsigned seq = nlh->nlmsg_seq, portid = mnl_socket_get_portid(sock);
        if (mnl_socket_sendto(sock, nlh, nlh->nlmsg_len) < 0) {
                r = negative_errno();
                mnl_socket_close(sock);
                return r;
        }
        r = 1;
        for (;;) {
                ssize_t n = mnl_socket_recvfrom(sock, buf, sizeof(buf));
                if (n < 0) {
                        r = negative_errno();
                        break;
                }
                int k = mnl_cb_run(buf, (size_t) n, seq, portid, NULL, NULL);
                if (k < 0) {
                        r = errno == ENOENT ? 0 : negative_errno();
                        break;
                }
                if (k == MNL_CB_STOP)
                        break;
        }
        mnl_socket_close(sock);
        return r;
}
