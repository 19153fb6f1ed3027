/* nat.h: published-port lookup, managed networks, SNAT port claims, creating
 * a conntrack pair, and rewriting a packet by a conntrack half. */
#ifndef V6NAT_NAT_H
#define V6NAT_NAT_H

#include "lib/common.h"
#include "lib/parse.h"
#include "lib/csum.h"
#include "lib/conntrack.h"
#include "lib/stats.h"

#define V6NAT_DEFAULT_PORT_MIN 61000
#define V6NAT_DEFAULT_PORT_MAX 65535

/* Exact host address first, then the any-address entry. */
static __always_inline struct dnat_target *dnat_lookup(__u8 proto, const __u8 *addr, __be16 port)
{
	struct dnat_key key;
	struct dnat_target *target;

	__builtin_memset(&key, 0, sizeof(key));
	addr_copy(key.host_addr, addr);
	key.host_port = port;
	key.proto = proto;
	target = dnat.lookup(&key);
	if (target)
		return target;
	__builtin_memset(key.host_addr, 0, sizeof(key.host_addr));
	return dnat.lookup(&key);
}

static __always_inline struct network_info *network_of(const __u8 *addr)
{
	struct network_key key = { .prefixlen = 128 };

	addr_copy(key.addr, addr);
	return networks.lookup(&key);
}

static __always_inline int is_host_addr(const __u8 *addr)
{
	struct host_addr_key key;

	addr_copy(key.addr, addr);
	return host_addrs.lookup(&key) != 0;
}

/* The masquerade source of `net` leaving via skb->ifindex, or 0. */
static __always_inline const __u8 *snat_source(struct __sk_buff *skb, const struct network_info *net)
{
	__u32 ifindex = skb->ifindex;
	struct public_iface *iface;

	if (!addr_is_zero(net->snat_addr))
		return net->snat_addr;
	iface = public_ifaces.lookup(&ifindex);
	if (!iface || addr_is_zero(iface->snat_addr))
		return 0;
	return iface->snat_addr;
}

/* Is there a host socket that a packet with the reply tuple would reach? */
static __always_inline int port_owned_by_host(struct __sk_buff *skb, const struct ct_key *reply)
{
	struct bpf_sock_tuple tuple;
	struct bpf_sock *sk = 0;

	__builtin_memset(&tuple, 0, sizeof(tuple));
	__builtin_memcpy(tuple.ipv6.saddr, reply->saddr, 16);
	__builtin_memcpy(tuple.ipv6.daddr, reply->daddr, 16);
	tuple.ipv6.sport = reply->sport;
	tuple.ipv6.dport = reply->dport;
	if (reply->proto == IPPROTO_TCP)
		sk = bpf_skc_lookup_tcp(skb, &tuple, sizeof(tuple.ipv6), BPF_F_CURRENT_NETNS, 0);
	else if (reply->proto == IPPROTO_UDP)
		sk = bpf_sk_lookup_udp(skb, &tuple, sizeof(tuple.ipv6), BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	bpf_sk_release(sk);
	return 1;
}

/* The SNAT port an internal endpoint (address, port, protocol of `key`)
 * prefers: its own port when that lies in the range (port preservation),
 * else one of the range picked by a keyed hash of the endpoint. The same
 * endpoint thus gets the same external port toward every destination
 * (endpoint-independent mapping, RFC 4787 REQ-1, RFC 5382 REQ-1), unless
 * that port is taken toward the very same destination; the salt keeps the
 * port unpredictable from outside (RFC 6056). */
static __always_inline __be16 nat_mapping_port(const struct ct_key *key, __u32 lo, __u32 span, __u32 salt)
{
	const __u32 *a = (const __u32 *)key->saddr;
	__u32 h = salt ^ ((__u32)key->sport << 8 | key->proto);

	if ((__u32)v6_ntohs(key->sport) - lo < span)
		return key->sport;
	h = (h ^ a[0]) * 0x9e3779b1;
	h = (h ^ a[1]) * 0x85ebca77;
	h = (h ^ a[2]) * 0xc2b2ae3d;
	h = (h ^ a[3]) * 0x27d4eb2f;
	h ^= h >> 15;
	return v6_htons(lo + h % span);
}

/* Claim a port for the NAT address reply->daddr: the internal endpoint's
 * (nat_mapping_port) if it is free, then random ones of the range.
 * Only ports of the range (kept out of the host's ephemeral ports and
 * reserved for us) are ever used, so the host can never pick a port a flow
 * holds. A candidate is free when no host socket owns it, no published port
 * uses it, and claiming the reply half (BPF_NOEXIST in ct_unassured, absent
 * from conntrack) succeeds: that insert is the atomic claim. 0 or -1. */
static __always_inline int nat_claim_port(struct __sk_buff *skb, const struct ct_key *key,
					  struct ct_key *reply, struct ct_entry *reply_entry)
{
	__u32 zero = 0;
	struct v6nat_config *cfg = config.lookup(&zero);
	__u32 lo = V6NAT_DEFAULT_PORT_MIN, span = V6NAT_DEFAULT_PORT_MAX - V6NAT_DEFAULT_PORT_MIN + 1;
	__be16 preferred;

	if (cfg && cfg->snat_port_min && cfg->snat_port_min <= cfg->snat_port_max) {
		lo = cfg->snat_port_min;
		span = (__u32)cfg->snat_port_max - cfg->snat_port_min + 1;
	}
	preferred = nat_mapping_port(key, lo, span, cfg ? cfg->port_salt : 0);
	for (int i = 0; i < V6NAT_SNAT_TRIES; i++) {
		reply->dport = i == 0 ? preferred : v6_htons(lo + bpf_get_prandom_u32() % span);
		if (reply->proto != V6NAT_IPPROTO_ICMPV6) {
			if (port_owned_by_host(skb, reply))
				continue;
			if (dnat_lookup(reply->proto, reply->daddr, reply->dport))
				continue;
		}
		if (ct_claim(reply, reply_entry, 1) == 0) {
			snat_tries_count(i + 1);
			return 0;
		}
	}
	return -1;
}

/* Create both halves for the packet with tuple `key`, translated as `orig`
 * says, in ct_unassured. Each half is claimed, never written over another
 * flow's: a new packet whose reply tuple is a live flow's (a forger's SYN
 * with a live client's address and port toward another host address) is a
 * clash, as in Linux. With claim_port, the source port is the one
 * nat_claim_port claimed (written back into orig->sport). Returns 0 or a drop reason;
 * `orig` then holds the half to translate with (another CPU's if it won a
 * race). */
static __always_inline int ct_create_pair(struct __sk_buff *skb, struct ct_key *key,
					  struct ct_entry *orig, int claim_port)
{
	struct ct_key reply_key;
	struct ct_entry *reply = ct_entry_scratch();
	struct ct_entry *winner;

	if (!reply)
		return V6NAT_DROP_CT_FULL;
	orig->dir = CT_DIR_ORIGINAL;
	orig->created_ns = v6nat_now();
	orig->last_seen_ns = orig->created_ns;
	orig->tcp_state = key->proto == IPPROTO_TCP ? CT_TCP_SYN_SENT : CT_TCP_NONE;
	orig->tcp_flags = CT_F_UNASSURED;
	ct_key_mirror(&reply_key, orig, key->proto);
	ct_entry_mirror(reply, key, orig);
	if (claim_port) {
		if (nat_claim_port(skb, key, &reply_key, reply))
			return V6NAT_DROP_PORTS_EXHAUSTED;
		orig->sport = reply_key.dport;
	} else if (ct_claim(&reply_key, reply, 1)) {
		return V6NAT_DROP_CT_CLASH;
	}
	/* The caller just missed `key` in both tables: only the insert can
	 * still fail (another CPU's same new flow), no conntrack lookup needed. */
	if (ct_unassured.insert(key, orig) == 0)
		return 0;
	/* Another CPU created this flow meanwhile: give our claim back. */
	ct_unassured.delete(&reply_key);
	winner = ct_lookup(key);
	if (!winner)
		return V6NAT_DROP_CT_FULL;
	__builtin_memcpy(orig, winner, sizeof(*orig));
	return 0;
}

/* Rewrite the packet's addresses and ports (or echo identifier) as `e` says. */
static __always_inline int nat_rewrite(struct __sk_buff *skb, const struct v6nat_pkt *pkt,
				       const struct ct_entry *e)
{
	__u64 l4_flags = pkt->proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;
	__u32 l4 = pkt->l4_off;

	if (csum_rewrite_addr(skb, V6NAT_OFF_SADDR, pkt->saddr, e->saddr, pkt->csum_off, l4_flags) ||
	    csum_rewrite_addr(skb, V6NAT_OFF_DADDR, pkt->daddr, e->daddr, pkt->csum_off, l4_flags))
		return -1;
	if (pkt->frag == FRAG_LATER)
		return 0;
	if (pkt->proto == V6NAT_IPPROTO_ICMPV6) {
		if (pkt->icmp_type == ICMP6_ECHO_REQUEST)
			return csum_rewrite_port(skb, l4 + 4, pkt->sport, e->sport, pkt->csum_off, 0);
		return csum_rewrite_port(skb, l4 + 4, pkt->dport, e->dport, pkt->csum_off, 0);
	}
	if (csum_rewrite_port(skb, l4, pkt->sport, e->sport, pkt->csum_off, l4_flags) ||
	    csum_rewrite_port(skb, l4 + 2, pkt->dport, e->dport, pkt->csum_off, l4_flags))
		return -1;
	return 0;
}

#endif
