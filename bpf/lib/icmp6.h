/* icmp6.h: ICMPv6 errors (Destination Unreachable, Packet Too Big, Time
 * Exceeded, Parameter Problem) that quote a translated packet. The quote is
 * the mirror of a conntrack key: the flow is found by mirroring the quoted
 * tuple, and the quote is rewritten as the mirror of that half's rewrite.
 *
 * Checksums: the outer addresses are pseudo-header changes of the outer
 * ICMPv6 checksum; every byte changed inside the quote (addresses, ports or
 * echo identifier, the quoted L4 checksum) is folded into the outer checksum
 * as data. The quoted L4 checksum is updated whenever the quote holds it: an
 * incremental update stays right for a truncated quote too. */
#ifndef V6NAT_ICMP6_H
#define V6NAT_ICMP6_H

#include "lib/common.h"
#include "lib/parse.h"
#include "lib/csum.h"
#include "lib/conntrack.h"
#include "lib/nat.h"

/* The quoted packet's tuple and where its fields sit. */
struct icmp6_quote {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;     /* echo request: id; echo reply: 0 */
	__be16 dport;     /* echo request: 0; echo reply: id */
	__u32 ip_off;     /* quoted IPv6 header */
	__u32 l4_off;     /* quoted upper-layer header */
	__u32 csum_off;   /* quoted L4 checksum, 0 when the quote cuts it */
	__u8 proto;
	__u8 icmp_type;
	__u16 _pad;
};

/* Addresses then the ports word, old and new: what bpf_csum_diff sums. */
struct icmp6_quote_words {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 port_a; /* TCP/UDP sport, or the echo identifier */
	__be16 port_b; /* TCP/UDP dport, or 0 */
};

/* Step over the quoted packet's extension headers (bounded, like v6nat_parse):
 * hop-by-hop, destination options, a routing header with no segments left (so
 * the quoted destination is the final one, the one its checksum and our flow
 * use) and the fragment header of a first fragment (later ones quote no
 * ports). Anything else (AH, too many headers, a header the quote cuts) is a
 * quote we do not translate: -1. */
static __always_inline int icmp6_quote_skip_exthdrs(struct __sk_buff *skb, struct icmp6_quote *q, __u32 end)
{
	__u32 off = q->l4_off;
	__u8 nh = q->proto;

#pragma unroll
	for (int i = 0; i < V6NAT_MAX_EXTHDRS; i++) {
		__u8 hdr[4];

		if (nh != NEXTHDR_HOP && nh != NEXTHDR_DEST && nh != NEXTHDR_ROUTING && nh != NEXTHDR_FRAGMENT)
			break;
		/* Every extension header but AH is a multiple of 8 bytes. */
		if (off + 8 > end || bpf_skb_load_bytes(skb, off, hdr, sizeof(hdr)))
			return -1;
		if (nh == NEXTHDR_FRAGMENT) {
			if (((__u16)hdr[2] << 8 | hdr[3]) & 0xfff8)
				return -1;
			off += 8;
		} else {
			if (nh == NEXTHDR_ROUTING && hdr[3])
				return -1;
			off += ((__u32)hdr[1] + 1) * 8;
		}
		nh = hdr[0];
	}
	if (exthdr_is_walkable(nh))
		return -1;
	q->proto = nh;
	q->l4_off = off;
	return 0;
}

static __always_inline int icmp6_quote_parse(struct __sk_buff *skb, const struct v6nat_pkt *pkt,
					     struct icmp6_quote *q)
{
	struct v6nat_ip6hdr ip6;
	__u32 end = pkt->end;

	q->ip_off = pkt->l4_off + 8;
	if (bpf_skb_load_bytes(skb, q->ip_off, &ip6, sizeof(ip6)))
		return -1;
	if ((ip6.vtc_flow & 0xf0) != 0x60)
		return -1;
	addr_copy(q->saddr, ip6.saddr);
	addr_copy(q->daddr, ip6.daddr);
	q->proto = ip6.nexthdr;
	q->l4_off = q->ip_off + V6NAT_IP6_HLEN;
	if (icmp6_quote_skip_exthdrs(skb, q, end))
		return -1;
	q->csum_off = 0;
	q->sport = 0;
	q->dport = 0;
	if (q->proto == IPPROTO_TCP || q->proto == IPPROTO_UDP) {
		__be16 ports[2];

		if (q->l4_off + 4 > end || bpf_skb_load_bytes(skb, q->l4_off, ports, sizeof(ports)))
			return -1;
		q->sport = ports[0];
		q->dport = ports[1];
		if (q->proto == IPPROTO_TCP && q->l4_off + 18 <= end)
			q->csum_off = q->l4_off + 16;
		if (q->proto == IPPROTO_UDP && q->l4_off + 8 <= end)
			q->csum_off = q->l4_off + 6;
		return 0;
	}
	if (q->proto == V6NAT_IPPROTO_ICMPV6) {
		__u8 icmp[6];
		__be16 id;

		if (q->l4_off + 6 > end || bpf_skb_load_bytes(skb, q->l4_off, icmp, sizeof(icmp)))
			return -1;
		q->icmp_type = icmp[0];
		__builtin_memcpy(&id, icmp + 4, 2);
		if (icmp[0] == ICMP6_ECHO_REQUEST)
			q->sport = id;
		else if (icmp[0] == ICMP6_ECHO_REPLY)
			q->dport = id;
		else
			return -1;
		q->csum_off = q->l4_off + 2;
		return 0;
	}
	return -1;
}

static __always_inline void icmp6_quote_words(struct icmp6_quote_words *w, const __u8 *saddr,
					      const __u8 *daddr, __be16 sport, __be16 dport,
					      const struct icmp6_quote *q)
{
	addr_copy(w->saddr, saddr);
	addr_copy(w->daddr, daddr);
	if (q->proto == V6NAT_IPPROTO_ICMPV6) {
		w->port_a = q->icmp_type == ICMP6_ECHO_REQUEST ? sport : dport;
		w->port_b = 0;
	} else {
		w->port_a = sport;
		w->port_b = dport;
	}
}

/* An error about a flow, sent from inside by someone other than the flow's
 * endpoint (the quote's destination) or its network's gateway: it would
 * leave with its sender's internal source. */
static __always_inline int icmp6_sender_foreign(const struct v6nat_pkt *pkt, const struct icmp6_quote *q,
						__u32 hook)
{
	struct network_info *net;

	if (hook == V6NAT_HOOK_PUBLIC_INGRESS || addr_equal(pkt->saddr, q->daddr))
		return 0;
	net = network_of(pkt->saddr);
	return net && !addr_equal(pkt->saddr, net->gateway);
}

#define ICMP6_FOREIGN -2

/* Translate an ICMPv6 error quoting a flow translated at this hook.
 * 1: translated; 0: not ours (untouched); -1: a helper failed;
 * ICMP6_FOREIGN: about a flow, but from someone inside who is not its end. */
static __always_inline int icmp6_error_translate(struct __sk_buff *skb, const struct v6nat_pkt *pkt,
						 __u32 hook)
{
	struct icmp6_quote q;
	struct ct_key key;
	struct ct_entry *e;
	struct icmp6_quote_words old_w, new_w;
	__u8 outer_saddr[16], outer_daddr[16];
	__u32 delta;

	if (icmp6_quote_parse(skb, pkt, &q))
		return 0;
	/* The quote was sent by the error's destination; find its flow by
	 * the mirror of the quoted tuple. */
	if (!addr_equal(pkt->daddr, q.saddr))
		return 0;
	ct_key_set(&key, q.daddr, q.saddr, q.dport, q.sport, q.proto);
	e = ct_lookup(&key);
	if (!e || !ct_allowed(hook, e))
		return 0;
	if (icmp6_sender_foreign(pkt, &q, hook))
		return ICMP6_FOREIGN;

	/* The quote becomes the mirror of e's rewrite. */
	icmp6_quote_words(&old_w, q.saddr, q.daddr, q.sport, q.dport, &q);
	icmp6_quote_words(&new_w, e->daddr, e->saddr, e->dport, e->sport, &q);
	/* Any value is a valid sum (see csum_rewrite_addr). */
	delta = bpf_csum_diff((__be32 *)&old_w, sizeof(old_w), (__be32 *)&new_w, sizeof(new_w), 0);

	if (bpf_skb_store_bytes(skb, q.ip_off + 8, new_w.saddr, 16, 0) ||
	    bpf_skb_store_bytes(skb, q.ip_off + 24, new_w.daddr, 16, 0))
		return -1;
	if (q.proto == V6NAT_IPPROTO_ICMPV6) {
		if (bpf_skb_store_bytes(skb, q.l4_off + 4, &new_w.port_a, 2, 0))
			return -1;
	} else if (bpf_skb_store_bytes(skb, q.l4_off, &new_w.port_a, 4, 0)) {
		return -1;
	}
	if (q.csum_off) {
		__u16 old_check, new_check;

		if (bpf_skb_load_bytes(skb, q.csum_off, &old_check, 2))
			return -1;
		/* The quoted checksum covers the quoted pseudo-header and
		 * ports: the same delta. A zero UDP checksum means none. */
		if (!(q.proto == IPPROTO_UDP && old_check == 0)) {
			new_check = csum_apply(old_check, delta);
			if (q.proto == IPPROTO_UDP && new_check == 0)
				new_check = 0xffff;
			if (bpf_skb_store_bytes(skb, q.csum_off, &new_check, 2, 0))
				return -1;
			delta = csum_add32(delta, csum_delta16(old_check, new_check));
		}
	}
	if (bpf_l4_csum_replace(skb, pkt->csum_off, 0, delta, 0))
		return -1;

	/* Outer header: the destination is the quote's sender; the source is
	 * rewritten only when the quote's destination sent the error itself. */
	addr_copy(outer_saddr, pkt->saddr);
	if (addr_equal(pkt->saddr, q.daddr))
		addr_copy(outer_saddr, e->saddr);
	addr_copy(outer_daddr, e->daddr);
	if (csum_rewrite_addr(skb, V6NAT_OFF_SADDR, pkt->saddr, outer_saddr, pkt->csum_off, 0) ||
	    csum_rewrite_addr(skb, V6NAT_OFF_DADDR, pkt->daddr, outer_daddr, pkt->csum_off, 0))
		return -1;
	v6nat_count(hook, V6NAT_ACT_ICMP_ERROR);
	return 1;
}

#endif
