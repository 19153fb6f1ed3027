/* fullcone.h: endpoint-independent filtering of UDP (full cone, RFC 4787
 * REQ-8), for the networks that ask for it (V6NAT_NET_UDP_EIF).
 *
 * When a container of such a network starts an outbound UDP flow, its
 * external address and port are noted in nat_mappings with the flow's remote
 * endpoint. A datagram from any remote endpoint to that external port then
 * starts a flow to the container, as long as the noted flow lives: the
 * mapping is as open as the container keeps it by sending, and gone with its
 * conntrack pair (expired, or forgotten with the container). A port the
 * container never opened outward is never open. */
#ifndef V6NAT_FULLCONE_H
#define V6NAT_FULLCONE_H

#include "lib/common.h"
#include "lib/csum.h"
#include "lib/conntrack.h"
#include "lib/nat.h"

/* Does the flow that noted mapping `m` still live? */
static __always_inline int nat_mapping_alive(const struct nat_mapping *m, __u8 proto)
{
	struct ct_key k;

	ct_key_set(&k, m->addr, m->remote, m->port, m->remote_port, proto);
	return ct_lookup(&k) != 0;
}

static __always_inline void nat_mapping_key_of(struct nat_mapping_key *mk, const __u8 *nat_addr, __be16 port,
					       __u8 proto)
{
	__builtin_memset(mk, 0, sizeof(*mk));
	addr_copy(mk->nat_addr, nat_addr);
	mk->port = port;
	mk->proto = proto;
}

/* An outbound flow started: `key` its tuple from the container, `orig` its
 * translation (source: the external address and port). Another endpoint's
 * live mapping of the same external port (port overlapping) is kept: this
 * endpoint then gets no inbound opening there. */
static __always_inline void nat_mapping_note(const struct ct_key *key, const struct ct_entry *orig)
{
	struct nat_mapping_key mk;
	struct nat_mapping m;
	struct nat_mapping *cur;

	nat_mapping_key_of(&mk, orig->saddr, orig->sport, key->proto);
	cur = nat_mappings.lookup(&mk);
	if (cur && !(addr_equal(cur->addr, key->saddr) && cur->port == key->sport) &&
	    nat_mapping_alive(cur, key->proto))
		return;
	__builtin_memset(&m, 0, sizeof(m));
	addr_copy(m.addr, key->saddr);
	addr_copy(m.remote, key->daddr);
	m.port = key->sport;
	m.remote_port = key->dport;
	nat_mappings.update(&mk, &m);
}

/* An unsolicited UDP datagram to a host address (tuple `key`): the pair of
 * the flow it starts toward the container holding its port, or a drop
 * reason; FULL_CONE_NONE when no open mapping holds the port. */
#define FULL_CONE_NONE (-1)

static __always_inline int full_cone_pair(struct __sk_buff *skb, const struct v6nat_pkt *pkt)
{
	struct nat_mapping_key mk;
	struct nat_mapping *m;
	struct network_info *net;
	struct ct_key okey;
	struct ct_entry orig = {};

	nat_mapping_key_of(&mk, pkt->daddr, pkt->dport, IPPROTO_UDP);
	m = nat_mappings.lookup(&mk);
	if (!m)
		return FULL_CONE_NONE;
	net = network_of(m->addr);
	if (!net || !(net->flags & V6NAT_NET_UDP_EIF) || !nat_mapping_alive(m, IPPROTO_UDP))
		return FULL_CONE_NONE;
	if (!l4_csum_valid(skb, pkt))
		return V6NAT_DROP_BAD_CHECKSUM;
	/* The pair as if the container had sent first: the datagram is its reply.
	 * Filled field by field: through ct_key_set here, clang 14 reuses the
	 * register holding skb for the protocol and the verifier refuses it. */
	__builtin_memset(&okey, 0, sizeof(okey));
	addr_copy(okey.saddr, m->addr);
	addr_copy(okey.daddr, pkt->saddr);
	okey.sport = m->port;
	okey.dport = pkt->sport;
	okey.proto = IPPROTO_UDP;
	addr_copy(orig.saddr, pkt->daddr);
	addr_copy(orig.daddr, pkt->saddr);
	orig.sport = pkt->dport;
	orig.dport = pkt->sport;
	orig.kind = CT_KIND_SNAT;
	return ct_create_pair(skb, &okey, &orig, 0);
}

#endif
