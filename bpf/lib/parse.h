/* parse.h: Ethernet + IPv6 + a bounded walk of extension headers + the
 * upper-layer tuple. Reads straight from the packet when the bytes are in the
 * linear part (no helper call), else with bpf_skb_load_bytes (non-linear
 * skbs); never writes. */
#ifndef V6NAT_PARSE_H
#define V6NAT_PARSE_H

#include "lib/common.h"

#define V6NAT_ETH_HLEN 14
#define V6NAT_IP6_HLEN 40
#define V6NAT_OFF_SADDR (V6NAT_ETH_HLEN + 8)
#define V6NAT_OFF_DADDR (V6NAT_ETH_HLEN + 24)
#define V6NAT_OFF_HOP_LIMIT (V6NAT_ETH_HLEN + 7)
/* Traffic class and flow label of the first word, in network order. */
#define V6NAT_FLOWINFO_MASK ((__be32)__builtin_bswap32(0x0fffffff))

#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60
#define V6NAT_IPPROTO_ICMPV6 58

#define ICMP6_DEST_UNREACH 1
#define ICMP6_PKT_TOOBIG 2
#define ICMP6_TIME_EXCEED 3
#define ICMP6_PARAMPROB 4
#define ICMP6_ECHO_REQUEST 128
#define ICMP6_ECHO_REPLY 129

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

enum parse_result {
	PARSE_TUPLE,       /* TCP, UDP or ICMPv6 echo: pkt holds a full tuple */
	PARSE_ICMP_ERROR,  /* ICMPv6 error: the quote starts at l4_off + 8 */
	PARSE_FRAGMENT,    /* a non-first fragment: addresses, proto, frag_id */
	PARSE_OTHER,       /* IPv6 without a tuple we translate */
	PARSE_NOT_IPV6,
	PARSE_MALFORMED,   /* truncated or inconsistent: never translated */
	PARSE_EXTHDR_LIMIT,/* more extension headers than V6NAT_MAX_EXTHDRS */
};

enum frag_kind {
	FRAG_NONE = 0,
	FRAG_FIRST = 1,    /* offset 0, more fragments follow */
	FRAG_LATER = 2,    /* offset > 0: no upper-layer header */
};

/* A parsed packet: the fields the programs decide and rewrite with. */
struct v6nat_pkt {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;    /* ICMPv6 echo: request sport=id, reply dport=id */
	__be16 dport;
	__u8 proto;      /* upper-layer protocol after the extension headers */
	__u8 tcp_flags;
	__u8 icmp_type;
	__u8 frag;       /* enum frag_kind */
	__be32 frag_id;
	__u32 l4_off;    /* upper-layer header offset from the Ethernet header */
	__u32 csum_off;  /* L4 checksum offset; 0 when this packet carries none */
	__u32 end;       /* end of the IPv6 datagram (Ethernet padding excluded) */
	__be32 flowinfo; /* traffic class and flow label (the fast path's FIB key) */
	__u8 hop_limit;
	__u8 _pad[3];
	__u32 tcp_seq;   /* host order */
	__u32 tcp_ack;   /* host order */
	__u32 tcp_hlen;  /* TCP header length (data offset) */
};

struct v6nat_ip6hdr {
	__be32 vtc_flow;
	__be16 payload_len;
	__u8 nexthdr;
	__u8 hop_limit;
	__u8 saddr[16];
	__u8 daddr[16];
};

struct v6nat_fraghdr {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off; /* offset in 8-byte units << 3 | M flag */
	__be32 id;
};

/* Copy len bytes at the constant offset off: a bounds-checked read of
 * skb->data when they are in the linear part (no helper call), else
 * bpf_skb_load_bytes. The __u32 casts let the compiler copy by words (the
 * verifier accepts unaligned packet reads on the targets we run on). */
static __always_inline int pkt_load(struct __sk_buff *skb, const __u32 off, void *to, const __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (data + off + len <= data_end) {
		__builtin_memcpy((__u32 *)to, (const __u32 *)(data + off), len);
		return 0;
	}
	return bpf_skb_load_bytes(skb, off, to, len);
}

/* The upper-layer header at off: read directly in the common case, right
 * after the IPv6 header; behind extension headers with the helper (a
 * variable packet offset would cost the verifier more than it saves). */
static __always_inline int l4_load(struct __sk_buff *skb, __u32 off, void *to, const __u32 len)
{
	if (off == V6NAT_ETH_HLEN + V6NAT_IP6_HLEN)
		return pkt_load(skb, V6NAT_ETH_HLEN + V6NAT_IP6_HLEN, to, len);
	return bpf_skb_load_bytes(skb, off, to, len);
}

static __always_inline int exthdr_is_walkable(__u8 nh)
{
	return nh == NEXTHDR_HOP || nh == NEXTHDR_ROUTING || nh == NEXTHDR_DEST ||
	       nh == NEXTHDR_AUTH || nh == NEXTHDR_FRAGMENT;
}

/* The upper-layer header at pkt->l4_off: TCP and UDP ports, ICMPv6 type/id. */
static __always_inline int parse_upper(struct __sk_buff *skb, struct v6nat_pkt *pkt)
{
	__u32 off = pkt->l4_off;

	if (pkt->proto == IPPROTO_TCP) {
		__u8 tcp[14] __attribute__((aligned(4)));

		if (off + 20 > pkt->end || l4_load(skb, off, tcp, sizeof(tcp)))
			return PARSE_MALFORMED;
		__builtin_memcpy(&pkt->sport, tcp, 2);
		__builtin_memcpy(&pkt->dport, tcp + 2, 2);
		pkt->tcp_seq = __builtin_bswap32(*(__u32 *)(tcp + 4));
		pkt->tcp_ack = __builtin_bswap32(*(__u32 *)(tcp + 8));
		pkt->tcp_hlen = (__u32)(tcp[12] >> 4) * 4;
		pkt->tcp_flags = tcp[13];
		pkt->csum_off = off + 16;
		return PARSE_TUPLE;
	}
	if (pkt->proto == IPPROTO_UDP) {
		__be16 ports[2] __attribute__((aligned(4)));

		if (off + 8 > pkt->end || l4_load(skb, off, ports, sizeof(ports)))
			return PARSE_MALFORMED;
		pkt->sport = ports[0];
		pkt->dport = ports[1];
		pkt->csum_off = off + 6;
		return PARSE_TUPLE;
	}
	if (pkt->proto == V6NAT_IPPROTO_ICMPV6) {
		__u8 icmp[8] __attribute__((aligned(4)));
		__be16 id;

		if (off + 8 > pkt->end || l4_load(skb, off, icmp, sizeof(icmp)))
			return PARSE_MALFORMED;
		pkt->icmp_type = icmp[0];
		pkt->csum_off = off + 2;
		__builtin_memcpy(&id, icmp + 4, 2);
		if (icmp[0] == ICMP6_ECHO_REQUEST) {
			pkt->sport = id;
			return PARSE_TUPLE;
		}
		if (icmp[0] == ICMP6_ECHO_REPLY) {
			pkt->dport = id;
			return PARSE_TUPLE;
		}
		if (icmp[0] >= ICMP6_DEST_UNREACH && icmp[0] <= ICMP6_PARAMPROB)
			return pkt->frag == FRAG_NONE ? PARSE_ICMP_ERROR : PARSE_OTHER;
		return PARSE_OTHER;
	}
	return PARSE_OTHER;
}

static __always_inline int v6nat_parse(struct __sk_buff *skb, struct v6nat_pkt *pkt)
{
	struct v6nat_ip6hdr ip6;
	__u32 off = V6NAT_ETH_HLEN + V6NAT_IP6_HLEN;
	__u8 nh;

	if (skb->protocol != v6_htons(ETH_P_IPV6))
		return PARSE_NOT_IPV6;
	if (pkt_load(skb, V6NAT_ETH_HLEN, &ip6, sizeof(ip6)))
		return PARSE_NOT_IPV6; /* too short to have addresses at all */
	if ((ip6.vtc_flow & 0xf0) != 0x60)
		return PARSE_NOT_IPV6;
	addr_copy(pkt->saddr, ip6.saddr);
	addr_copy(pkt->daddr, ip6.daddr);
	pkt->flowinfo = ip6.vtc_flow & V6NAT_FLOWINFO_MASK;
	pkt->hop_limit = ip6.hop_limit;
	pkt->end = off + v6_ntohs(ip6.payload_len);
	if (pkt->end > skb->len)
		return PARSE_MALFORMED;
	nh = ip6.nexthdr;

#pragma unroll
	for (int i = 0; i < V6NAT_MAX_EXTHDRS; i++) {
		__u8 hdr[2];

		if (!exthdr_is_walkable(nh))
			break;
		if (nh == NEXTHDR_FRAGMENT) {
			struct v6nat_fraghdr fh;
			__u16 frag_off;

			if (bpf_skb_load_bytes(skb, off, &fh, sizeof(fh)))
				return PARSE_MALFORMED;
			frag_off = v6_ntohs(fh.frag_off);
			pkt->frag_id = fh.id;
			nh = fh.nexthdr;
			off += sizeof(fh);
			if (frag_off & 0xfff8) {
				pkt->frag = FRAG_LATER;
				pkt->proto = nh;
				pkt->l4_off = off;
				return PARSE_FRAGMENT;
			}
			if (frag_off & 1)
				pkt->frag = FRAG_FIRST;
			continue;
		}
		if (bpf_skb_load_bytes(skb, off, hdr, sizeof(hdr)))
			return PARSE_MALFORMED;
		/* Segments left: the destination is not the final one, which
		 * the L4 checksum covers; such a packet is never translated. */
		if (nh == NEXTHDR_ROUTING) {
			__u8 segments_left;

			if (bpf_skb_load_bytes(skb, off + 3, &segments_left, 1))
				return PARSE_MALFORMED;
			if (segments_left)
				return PARSE_OTHER;
		}
		/* AH counts its length in 4-byte units minus 2, the others in
		 * 8-byte units minus 1. */
		if (nh == NEXTHDR_AUTH)
			off += ((__u32)hdr[1] + 2) * 4;
		else
			off += ((__u32)hdr[1] + 1) * 8;
		nh = hdr[0];
	}
	if (exthdr_is_walkable(nh))
		return PARSE_EXTHDR_LIMIT;
	pkt->proto = nh;
	pkt->l4_off = off;
	return parse_upper(skb, pkt);
}

#endif
