/* gateway.h: Docker's gateway modes (com.docker.network.bridge.gateway_mode_ipv6)
 * for packets that reach a managed network's own addresses from outside, or
 * leave it without translation. The mode is a flag of the network's entry
 * (V6NAT_NET_*), read once when a flow starts; the flow's packets after that
 * are conntrack hits like any NAT flow's.
 *
 * nat              nothing from outside reaches the prefix (v6nat.c: direct_ula).
 * routed           no translation; from outside a new flow reaches only a
 *                  published container port (the dnat entry keyed by the
 *                  container's own address and port), and ICMPv6, which
 *                  Docker accepts too; everything else is dropped and counted
 *                  (unpublished). A flow is a pair of halves that translate
 *                  nothing, so replies pass as any flow's do.
 * nat-unprotected  NAT outward, and from outside any port is reachable: its
 *                  flows are also untranslated pairs, so that their replies
 *                  are not masqueraded.
 * isolated         no packet between the network and anything else, the
 *                  host included (isolation.h at the veth, bridge egress). */
#ifndef V6NAT_GATEWAY_H
#define V6NAT_GATEWAY_H

#include "lib/common.h"
#include "lib/parse.h"
#include "lib/conntrack.h"
#include "lib/policy.h"

/* Does a network of these flags take packets straight from outside? */
static __always_inline int gateway_open_inbound(__u32 net_flags)
{
	return net_flags & (V6NAT_NET_ROUTED | V6NAT_NET_UNPROTECTED);
}

/* Does this packet start a flow (as a new tuple): a TCP SYN, any UDP
 * datagram, an ICMPv6 echo request? */
static __always_inline int gateway_starts_flow(const struct v6nat_pkt *pkt)
{
	if (pkt->proto == IPPROTO_TCP)
		return tcp_is_syn(pkt);
	if (pkt->proto == V6NAT_IPPROTO_ICMPV6)
		return pkt->icmp_type == ICMP6_ECHO_REQUEST;
	return 1;
}

/* The published port of a routed container: the exact dnat entry of its own
 * (address, port), never the any-address entry of a host port. */
static __always_inline struct dnat_target *gateway_published(const struct v6nat_pkt *pkt)
{
	struct dnat_key key;

	__builtin_memset(&key, 0, sizeof(key));
	addr_copy(key.host_addr, pkt->daddr);
	key.host_port = pkt->dport;
	key.proto = pkt->proto;
	return dnat.lookup(&key);
}

/* A new flow from outside into `net` (a routed or nat-unprotected network),
 * its first packet a tuple no flow holds: 0 and *mapping_id when it may
 * start, or why it is dropped. ICMPv6 is never refused here. A routed
 * published port obeys its mapping's source rules as a DNAT one does (the
 * caller checked bans already). */
static __always_inline int gateway_admit(const struct network_info *net, const struct v6nat_pkt *pkt,
					 __u32 *mapping_id)
{
	struct dnat_target *target;
	int reason;

	*mapping_id = 0;
	if (!(net->flags & V6NAT_NET_ROUTED) || pkt->proto == V6NAT_IPPROTO_ICMPV6)
		return 0;
	target = gateway_published(pkt);
	if (!target || target->port != pkt->dport || !addr_equal(target->addr, pkt->daddr))
		return V6NAT_DROP_UNPUBLISHED;
	reason = policy_verdict(pkt->saddr, target);
	if (reason) {
		mapping_policy_drop(target->mapping_id);
		return reason;
	}
	*mapping_id = target->mapping_id;
	return 0;
}

/* The original half of an untranslated flow of `kind` for this packet. */
static __always_inline void gateway_identity(struct ct_entry *orig, const struct v6nat_pkt *pkt, __u8 kind,
					     __u32 mapping_id)
{
	addr_copy(orig->saddr, pkt->saddr);
	addr_copy(orig->daddr, pkt->daddr);
	orig->sport = pkt->sport;
	orig->dport = pkt->dport;
	orig->kind = kind;
	orig->mapping_id = mapping_id;
}

#endif
