/* icc.h: Docker's enable_icc=false. On the host side of a container's veth
 * (its packets into the bridge), a packet from one address of a network
 * without ICC to another address of the same network is dropped, unless it
 * is for the network's gateway (the bridge: DNS, the way out) or Neighbor
 * Discovery. Link-local and multicast destinations are outside the prefix
 * and pass; so does everything between networks (routed by the host, where
 * Docker's isolation rules apply). */
#ifndef V6NAT_ICC_H
#define V6NAT_ICC_H

#include "lib/common.h"
#include "lib/parse.h"
#include "lib/nat.h"

#define ICMP6_ROUTER_SOLICIT 133
#define ICMP6_REDIRECT 137

/* `src` is the network of the packet's source (network_of(pkt->saddr)). */
static __always_inline int icc_blocked(const struct v6nat_pkt *pkt, const struct network_info *src)
{
	struct network_info *dst;

	if (!src || (src->flags & V6NAT_NET_ICC) || addr_equal(pkt->daddr, src->gateway))
		return 0;
	if (pkt->proto == V6NAT_IPPROTO_ICMPV6 && pkt->icmp_type >= ICMP6_ROUTER_SOLICIT &&
	    pkt->icmp_type <= ICMP6_REDIRECT)
		return 0;
	dst = network_of(pkt->daddr);
	return dst && dst->network_id == src->network_id;
}

#endif
