/* csum.h: rewriting addresses and ports with checksums fixed by deltas.
 *
 * Addresses sit in the IPv6 header and in the L4 pseudo-header: the store
 * updates skb->csum (BPF_F_RECOMPUTE_CSUM, for CHECKSUM_COMPLETE) and the L4
 * checksum takes the delta as a pseudo-header change (BPF_F_PSEUDO_HDR, which
 * also does the right thing for CHECKSUM_PARTIAL). Ports and quoted bytes are
 * plain L4 data: the checksum change cancels the data change in skb->csum, so
 * they are stored without recompute. */
#ifndef V6NAT_CSUM_H
#define V6NAT_CSUM_H

#include "lib/common.h"
#include "lib/parse.h"

/* One's complement addition of two 32-bit partial sums. */
static __always_inline __u32 csum_add32(__u32 a, __u32 b)
{
	__u32 s = a + b;

	return s + (s < b);
}

/* Fold a 32-bit partial sum to 16 bits and complement it: a checksum field. */
static __always_inline __u16 csum_fold32(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

/* The partial sum that turns a sum over `from` into a sum over `to`. */
static __always_inline __u32 csum_delta16(__u16 from, __u16 to)
{
	return csum_add32((__u16)~from, to);
}

/* Apply a data delta to a checksum field value (network order kept: the
 * one's complement sum is byte-order independent). */
static __always_inline __u16 csum_apply(__u16 check, __u32 delta)
{
	return csum_fold32(csum_add32((__u16)~check, delta));
}

/* Rewrite the address at `off`; csum_off 0 means this packet holds no L4
 * checksum (a later fragment). l4_flags: BPF_F_MARK_MANGLED_0 for UDP. */
static __always_inline int csum_rewrite_addr(struct __sk_buff *skb, __u32 off, const __u8 *old,
					     const __u8 *new, __u32 csum_off, __u64 l4_flags)
{
	__u32 delta;

	if (addr_equal(old, new))
		return 0;
	if (csum_off) {
		/* bcc declares bpf_csum_diff as returning int, so a sum with bit
		 * 31 set looks negative: it is a valid sum, not an error (the
		 * helper fails only on sizes that are not multiples of 4). */
		delta = bpf_csum_diff((__be32 *)old, 16, (__be32 *)new, 16, 0);
		if (bpf_l4_csum_replace(skb, csum_off, 0, delta, BPF_F_PSEUDO_HDR | l4_flags))
			return -1;
	}
	return bpf_skb_store_bytes(skb, off, (void *)new, 16, BPF_F_RECOMPUTE_CSUM);
}

/* Rewrite a 16-bit L4 field (a port, an echo identifier) at `off`. */
static __always_inline int csum_rewrite_port(struct __sk_buff *skb, __u32 off, __be16 old,
					     __be16 new, __u32 csum_off, __u64 l4_flags)
{
	if (old == new)
		return 0;
	if (csum_off && bpf_l4_csum_replace(skb, csum_off, old, new, sizeof(__u16) | l4_flags))
		return -1;
	return bpf_skb_store_bytes(skb, off, &new, sizeof(new), 0);
}

/* Checking a packet's L4 checksum before it may create or change a flow (as
 * Linux conntrack does): the upper-layer data is summed in chunks through a
 * per-CPU buffer. Longer datagrams (only possible as fragments or on jumbo
 * links) are not checked here, nor is a first fragment: its checksum covers
 * the whole datagram, which no program sees. */
#define V6NAT_CSUM_CHUNK 512
#define V6NAT_CSUM_CHUNKS 3

/* Twice a chunk: the verifier sees lengths masked to 2 * chunk - 1. */
struct csum_chunk {
	__u8 data[2 * V6NAT_CSUM_CHUNK];
};

BPF_PERCPU_ARRAY(csum_scratch, struct csum_chunk, 1);

/* Declared here as bcc 0.26's helpers.h may lack it. */
static long (*v6nat_csum_level)(struct __sk_buff *skb, __u64 level) = (void *)BPF_FUNC_csum_level;

struct csum_pseudo_hdr {
	__u8 saddr[16];
	__u8 daddr[16];
	__be32 len;
	__be32 nexthdr;
};

/* Is the packet's TCP/UDP checksum right? The device's word counts when it
 * checked it (CHECKSUM_UNNECESSARY). A packet from a local sender whose
 * checksum the device still has to fill in (CHECKSUM_PARTIAL: veth, tap)
 * holds the pseudo-header's sum: taken as right. UDP's 0 (no checksum) is
 * not allowed over IPv6 (RFC 8200 8.1). */
static __always_inline int l4_csum_valid(struct __sk_buff *skb, const struct v6nat_pkt *pkt)
{
	struct csum_pseudo_hdr ph;
	struct csum_chunk *buf;
	__u32 zero = 0, len = pkt->end - pkt->l4_off, sum;
	__u16 field;

	if (v6nat_csum_level(skb, BPF_CSUM_LEVEL_QUERY) >= 0)
		return 1;
	if (len > V6NAT_CSUM_CHUNK * V6NAT_CSUM_CHUNKS || !pkt->csum_off || pkt->frag != FRAG_NONE)
		return 1;
	if (bpf_skb_load_bytes(skb, pkt->csum_off, &field, sizeof(field)))
		return 0;
	if (pkt->proto == IPPROTO_UDP && field == 0)
		return 0;
	addr_copy(ph.saddr, pkt->saddr);
	addr_copy(ph.daddr, pkt->daddr);
	ph.len = v6_htonl(len);
	ph.nexthdr = v6_htonl(pkt->proto);
	sum = bpf_csum_diff(0, 0, (__be32 *)&ph, sizeof(ph), 0);
	if (field == (__u16)~csum_fold32(sum))
		return 1;
	buf = csum_scratch.lookup(&zero);
	if (!buf)
		return 0;
#pragma unroll
	for (int i = 0; i < V6NAT_CSUM_CHUNKS; i++) {
		__u32 off = i * V6NAT_CSUM_CHUNK, n, words;

		if (off >= len)
			break;
		n = len - off;
		if (n > V6NAT_CSUM_CHUNK)
			n = V6NAT_CSUM_CHUNK;
		/* An odd tail is summed as if padded with zeros. */
		/* The compiler knows 1 <= n <= chunk, the verifier must be told. */
		asm volatile("" : "+r"(n));
		n = ((n - 1) & (2 * V6NAT_CSUM_CHUNK - 1)) + 1;
		words = (n + 3) / 4;
		*(__u32 *)&buf->data[((words - 1) * 4) & (V6NAT_CSUM_CHUNK - 4)] = 0;
		if (bpf_skb_load_bytes(skb, pkt->l4_off + off, buf->data, n))
			return 0;
		sum = bpf_csum_diff(0, 0, (__be32 *)buf->data, (words * 4) & (2 * V6NAT_CSUM_CHUNK - 4), sum);
	}
	return csum_fold32(sum) == 0;
}

#endif
