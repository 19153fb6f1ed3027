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

#endif
