/* isolation.h: who may send what, judged by where a packet enters, never by
 * what it claims. v6nat is the only IPv6 firewall of the host (Docker's
 * ip6tables are off), so these checks stand in for Docker's isolation rules.
 *
 * A container's veth (veths map, written by the control plane): the source
 * must be one of its container's addresses (link-local and, for duplicate
 * address detection, the unspecified address also); a network without ICC
 * sends unicast frames only to its bridge; no packet goes to another managed
 * network but to its gateway; an internal network's packets reach only their
 * own network, link-local and multicast, and the host; an isolated network's
 * not even the host.
 * A managed bridge: sources of another managed network are forged.
 * A public interface: a source of ours (a managed prefix, a host address) or
 * one no outside host has (loopback, v4-mapped, multicast) is forged. */
#ifndef V6NAT_ISOLATION_H
#define V6NAT_ISOLATION_H

#include "lib/common.h"
#include "lib/parse.h"
#include "lib/nat.h"

static __always_inline int addr_is_link_local(const __u8 *a)
{
	return a[0] == 0xfe && (a[1] & 0xc0) == 0x80;
}

static __always_inline int addr_is_multicast(const __u8 *a)
{
	return a[0] == 0xff;
}

/* fc00::/7: unique local addresses, never routed on the internet. */
static __always_inline int addr_is_ula(const __u8 *a)
{
	return (a[0] & 0xfe) == 0xfc;
}

/* ::1 and ::ffff:0:0/96 */
static __always_inline int addr_is_loopback_or_mapped(const __u8 *a)
{
	const __u32 *w = (const __u32 *)a;

	if (w[0] | w[1])
		return 0;
	return (w[2] == 0 && w[3] == v6_htonl(1)) || w[2] == v6_htonl(0xffff);
}

static __always_inline struct veth_info *veth_of(struct __sk_buff *skb)
{
	__u32 ifindex = skb->ifindex;

	return veths.lookup(&ifindex);
}

static __always_inline int veth_owns_source(const struct veth_info *v, const __u8 *saddr)
{
	if (addr_is_link_local(saddr) || addr_is_zero(saddr))
		return 1;
#pragma unroll
	for (int i = 0; i < V6NAT_VETH_ADDRS; i++)
		if (!addr_is_zero(v->addrs + 16 * i) && addr_equal(v->addrs + 16 * i, saddr))
			return 1;
	return 0;
}

/* Would this packet of an isolated network's container reach the host: a
 * unicast frame to the bridge (the host, or routed on by it), or a datagram
 * to a multicast group that the host may listen to (ICMPv6, NDP and MLD
 * among the containers, stays)? A frame that cannot be read counts as one. */
static __always_inline int veth_reaches_host(struct __sk_buff *skb, const struct v6nat_pkt *pkt,
					     const struct veth_info *v)
{
	__u8 dmac[6] __attribute__((aligned(4)));

	if (bpf_skb_load_bytes(skb, 0, dmac, 6))
		return 1;
	if (dmac[0] & 1)
		return pkt->proto != V6NAT_IPPROTO_ICMPV6;
	return mac_equal(dmac, v->bridge_mac);
}

/* A container's IPv6 packet at its veth: 0, or why it is dropped. */
static __always_inline int veth_verdict(struct __sk_buff *skb, const struct v6nat_pkt *pkt,
					const struct veth_info *v)
{
	struct network_info *dst;
	__u8 dmac[6] __attribute__((aligned(4)));

	if (!veth_owns_source(v, pkt->saddr))
		return V6NAT_DROP_SPOOFED_SOURCE;
	if ((v->net_flags & V6NAT_NET_ISOLATED) && veth_reaches_host(skb, pkt, v))
		return V6NAT_DROP_ISOLATION;
	if (!(v->net_flags & V6NAT_NET_ICC)) {
		/* By link, whatever the addresses (link-local included): a
		 * unicast frame for another MAC than the bridge's is for a
		 * sibling. Multicast (NDP, MLD) still reaches everyone. */
		if (bpf_skb_load_bytes(skb, 0, dmac, 6))
			return V6NAT_DROP_ICC_BLOCKED;
		if (!(dmac[0] & 1) && !mac_equal(dmac, v->bridge_mac))
			return V6NAT_DROP_ICC_BLOCKED;
	}
	if (addr_is_link_local(pkt->daddr) || addr_is_multicast(pkt->daddr))
		return 0;
	dst = network_of(pkt->daddr);
	if (dst) {
		if (addr_equal(pkt->daddr, dst->gateway))
			return 0;
		if (dst->network_id != v->network_id)
			return V6NAT_DROP_ISOLATION;
		/* Routed back by the host (the frame went to the bridge's MAC). */
		return (v->net_flags & V6NAT_NET_ICC) ? 0 : V6NAT_DROP_ICC_BLOCKED;
	}
	if ((v->net_flags & V6NAT_NET_INTERNAL) && !is_host_addr(pkt->daddr))
		return V6NAT_DROP_ISOLATION;
	return 0;
}

/* A hairpin to a published port from network `src` toward `target`: an
 * internal network reaches no published port; without ICC, none of a
 * container of its own network (Docker drops both in FORWARD). 0 or why. */
static __always_inline int hairpin_verdict(const struct network_info *src, const struct dnat_target *target)
{
	struct network_info *dst;

	if (src->flags & V6NAT_NET_INTERNAL)
		return V6NAT_DROP_ISOLATION;
	if (src->flags & V6NAT_NET_ICC)
		return 0;
	dst = network_of(target->addr);
	return dst && dst->network_id == src->network_id ? V6NAT_DROP_ICC_BLOCKED : 0;
}

/* A source that no packet from outside carries: ours, or impossible. */
static __always_inline int public_source_forged(const __u8 *saddr)
{
	return addr_is_multicast(saddr) || addr_is_loopback_or_mapped(saddr) || network_of(saddr) ||
	       is_host_addr(saddr);
}

#endif
