/* fib.h: the fast path. A packet of an established translated flow is sent
 * straight out of the interface the kernel's FIB picks (bpf_redirect), past
 * the host's forwarding path and netfilter FORWARD, but only where forwarding
 * would have sent it anyway and only between a public interface and the
 * flow's own bridge (traffic between bridges keeps Docker's isolation rules).
 *
 * The stack keeps everything it must see or answer: the first packet of every
 * flow in its original direction (so FORWARD/DOCKER-USER still decide on new
 * flows), hairpin, fragments, ICMPv6 errors, packets whose hop limit expires
 * (Time Exceeded) or that exceed the output MTU (Packet Too Big), and any
 * route the FIB cannot finish (then the stack resolves or rejects it).
 *
 * Route cache: a half keeps the FIB's output interface and next hop for
 * V6NAT_FIB_CACHE_NS. Packets of at most the IPv6 minimum MTU (no route can be
 * smaller, so they need no MTU check) that arrive on the interface the answer
 * was made for skip the lookup and go out with bpf_redirect_neigh, which
 * resolves the neighbour every time. Larger and GSO packets always ask the
 * FIB (their MTU check needs it). So route, interface and network changes
 * reach established flows within V6NAT_FIB_CACHE_NS; two CPUs refreshing one
 * half at once write the same answer.
 *
 * Into the container: packets toward a container (the inward half of a DNAT
 * or SNAT flow) whose route leads to the container's bridge skip the bridge
 * as well, with bpf_redirect_peer straight into the container's namespace,
 * once the container's own packets at its veth (v6nat_veth_ingress) taught
 * the half which veth and which MACs (peer_learn), for V6NAT_PEER_CACHE_NS.
 * A veth that is gone or too small for the packet sends it the bridge way. The container's packets leave from its veth the
 * same way, except one packet per flow each half cache time (the one that
 * teaches), which takes the bridge so it keeps learning the container's MAC. */
#ifndef V6NAT_FIB_H
#define V6NAT_FIB_H

#include "lib/common.h"
#include "lib/parse.h"
#include "lib/conntrack.h"
#include "lib/nat.h"

#define V6NAT_AF_INET6 10
#define V6NAT_IPV6_MIN_MTU 1280
#define V6NAT_PACKET_HOST 0 /* skb->pkt_type of a frame to our own MAC */

/* The kernel's four-argument helper (bcc 0.26 declares an older three). */
static long (*v6nat_redirect_neigh)(__u32 ifindex, struct bpf_redir_neigh *params, int plen,
				    __u64 flags) = (void *)BPF_FUNC_redirect_neigh;

/* Declared here as bcc 0.26's helpers.h may lack it. */
static long (*v6nat_redirect_peer)(__u32 ifindex, __u64 flags) = (void *)BPF_FUNC_redirect_peer;

/* The FIB query and answer live in per-CPU map memory: on the stack they
 * would push the deepest program path (ICMPv6 errors) past 512 bytes. */
BPF_PERCPU_ARRAY(fib_scratch, struct bpf_fib_lookup, 1);

static __always_inline struct bpf_fib_lookup *fib_query(void)
{
	__u32 zero = 0;

	return fib_scratch.lookup(&zero);
}

/* How a packet leaves by the fast path. */
enum fast_route {
	FAST_NONE = 0,  /* through the stack */
	FAST_MACS = 1,  /* the FIB gave the neighbour: bpf_redirect */
	FAST_NEIGH = 2, /* neighbour unresolved: bpf_redirect_neigh resolves it */
	FAST_PEER = 3,  /* learned veth and MACs: bpf_redirect_peer into the container */
};

static __always_inline int fast_path_enabled(void)
{
	__u32 zero = 0;
	struct v6nat_config *cfg = config.lookup(&zero);

	return cfg && (cfg->flags & V6NAT_CFG_FAST_PATH);
}

/* Does the FIB's output interface suit this hook's flows? Public ingress
 * sends to containers: only the bridge of the destination's own network.
 * Bridge and veth ingress send to the outside: only a public interface. */
static __always_inline int fast_path_target_ok(__u32 hook, const struct ct_entry *e, __u32 ifindex)
{
	struct network_info *net;

	if (hook == V6NAT_HOOK_BRIDGE_INGRESS || hook == V6NAT_HOOK_VETH_INGRESS)
		return public_ifaces.lookup(&ifindex) != 0;
	net = network_of(e->daddr);
	return net && net->bridge_ifindex == ifindex;
}

/* Do a GSO packet's segments fit the output device's MTU? */
static __always_inline int fast_path_segments_fit(struct __sk_buff *skb, __u32 ifindex)
{
	__u32 mtu_len = 0;

	if (!skb->gso_size)
		return 1; /* the FIB checked the length */
	return bpf_check_mtu(skb, ifindex, &mtu_len, 0, BPF_MTU_CHK_SEGS) == BPF_MTU_CHK_RET_SUCCESS;
}

/* The learned delivery of inward half `e` into its container, into fib
 * (veth, MACs), or 0. bpf_check_mtu also fails for a veth that is gone. */
static __always_inline int fast_path_peer(struct __sk_buff *skb, const struct ct_entry *e,
					  struct bpf_fib_lookup *fib)
{
	__u32 mtu_len = 0;

	if (!e->peer_ifindex || v6nat_now() >= e->peer_until_ns)
		return 0;
	if (bpf_check_mtu(skb, e->peer_ifindex, &mtu_len, 0, skb->gso_size ? BPF_MTU_CHK_SEGS : 0) !=
	    BPF_MTU_CHK_RET_SUCCESS)
		return 0;
	fib->ifindex = e->peer_ifindex;
	__builtin_memcpy(fib->dmac, e->peer_macs, 6);
	__builtin_memcpy(fib->smac, e->peer_macs + 6, 6);
	return 1;
}

/* The cached route of `e` for this packet, into fib (ifindex, next hop), or 0. */
static __always_inline int fast_path_cached(struct __sk_buff *skb, const struct v6nat_pkt *pkt,
					    const struct ct_entry *e, __u32 iif, struct bpf_fib_lookup *fib)
{
	if (!e->fib_ifindex || e->fib_iif != iif || skb->gso_size ||
	    pkt->end - V6NAT_ETH_HLEN > V6NAT_IPV6_MIN_MTU || v6nat_now() >= e->fib_until_ns)
		return 0;
	fib->ifindex = e->fib_ifindex;
	__builtin_memcpy(fib->ipv6_dst, e->fib_nexthop, 16);
	return 1;
}

/* Remember the FIB's answer (after the lookup, ipv6_dst is the next hop). */
static __always_inline void fast_path_cache(struct ct_entry *e, __u32 iif, const struct bpf_fib_lookup *fib)
{
	e->fib_until_ns = 0; /* a reader racing this refresh falls back to the FIB */
	e->fib_ifindex = fib->ifindex;
	e->fib_iif = iif;
	__builtin_memcpy(e->fib_nexthop, fib->ipv6_dst, 16);
	e->fib_until_ns = v6nat_now() + V6NAT_FIB_CACHE_NS;
}

/* The FIB's (or the route cache's) way for the packet translated by `e`:
 * FAST_NONE, FAST_MACS or FAST_NEIGH, into `fib`. */
static __always_inline int fast_path_fib_route(struct __sk_buff *skb, __u32 hook, const struct v6nat_pkt *pkt,
					       struct ct_entry *e, __u32 iif, struct bpf_fib_lookup *fib)
{
	int rc;

	if (!fast_path_enabled())
		return FAST_NONE;
	/* A frame the public interface got but was not addressed to (flooded,
	 * promiscuous): the stack would drop it, so must the fast path. */
	/* Only flows the stack accepted both ways (CT_F_CONFIRMED), and never
	 * a SYN: a new connection on an old tuple is the stack's to judge. */
	if ((e->kind != CT_KIND_DNAT && e->kind != CT_KIND_SNAT) || pkt->frag != FRAG_NONE ||
	    pkt->hop_limit <= 1 || (hook == V6NAT_HOOK_PUBLIC_INGRESS && skb->pkt_type != V6NAT_PACKET_HOST) ||
	    (e->tcp_flags & CT_F_CONFIRMED) != CT_F_CONFIRMED ||
	    (pkt->proto == IPPROTO_TCP && (pkt->tcp_flags & TCP_FLAG_SYN))) {
		v6nat_count(hook, V6NAT_ACT_TO_STACK);
		return FAST_NONE;
	}
	if (fast_path_cached(skb, pkt, e, iif, fib))
		return FAST_NEIGH;
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = V6NAT_AF_INET6;
	fib->l4_protocol = pkt->proto;
	if (pkt->proto != V6NAT_IPPROTO_ICMPV6) {
		fib->sport = e->sport;
		fib->dport = e->dport;
	}
	/* A given length is checked against the route's MTU. A GSO packet's
	 * length is not its segments': it is checked after the lookup. */
	if (!skb->gso_size)
		fib->tot_len = pkt->end - V6NAT_ETH_HLEN;
	fib->ifindex = iif;
	fib->flowinfo = pkt->flowinfo;
	__builtin_memcpy(fib->ipv6_src, e->saddr, 16);
	__builtin_memcpy(fib->ipv6_dst, e->daddr, 16);
	rc = bpf_fib_lookup(skb, fib, sizeof(*fib), 0);
	if (rc == BPF_FIB_LKUP_RET_FRAG_NEEDED) {
		v6nat_count(hook, V6NAT_ACT_TO_STACK); /* the stack sends Packet Too Big */
		return FAST_NONE;
	}
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) {
		v6nat_count(hook, V6NAT_ACT_FIB_MISS);
		return FAST_NONE;
	}
	if (!fast_path_target_ok(hook, e, fib->ifindex) || !fast_path_segments_fit(skb, fib->ifindex)) {
		v6nat_count(hook, V6NAT_ACT_TO_STACK);
		return FAST_NONE;
	}
	fast_path_cache(e, iif, fib);
	return rc == BPF_FIB_LKUP_RET_SUCCESS ? FAST_MACS : FAST_NEIGH;
}

/* Decide, before translating, whether the packet translated by `e` takes
 * the fast path; fills `fib`. `iif` is where the packet entered the host's
 * routing: the arrival interface, or for a container's veth its bridge.
 * Toward a container, where the route leads to its bridge, the learned way
 * into the container replaces the bridge. Declines are counted (to_stack,
 * fib_miss). */
static __always_inline int fast_path_route(struct __sk_buff *skb, __u32 hook, const struct v6nat_pkt *pkt,
					   struct ct_entry *e, __u32 iif, struct bpf_fib_lookup *fib)
{
	int route = fast_path_fib_route(skb, hook, pkt, e, iif, fib);

	if (route != FAST_NONE && hook == V6NAT_HOOK_PUBLIC_INGRESS && fast_path_peer(skb, e, fib))
		return FAST_PEER;
	return route;
}

/* Forward a translated packet as `fib` says: hop limit decremented (IPv6 has
 * no header checksum; skb->csum follows the store), then redirected. */
static __always_inline int fast_path_redirect(struct __sk_buff *skb, __u32 hook, const struct v6nat_pkt *pkt,
					      struct bpf_fib_lookup *fib, int route)
{
	__u8 hop_limit = pkt->hop_limit - 1;

	if (bpf_skb_store_bytes(skb, V6NAT_OFF_HOP_LIMIT, &hop_limit, 1, BPF_F_RECOMPUTE_CSUM))
		return v6nat_drop(hook, V6NAT_DROP_REWRITE_FAILED);
	if (route == FAST_NEIGH) {
		struct bpf_redir_neigh nh = { .nh_family = V6NAT_AF_INET6 };

		/* After the lookup, ipv6_dst holds the next hop. */
		__builtin_memcpy(nh.ipv6_nh, fib->ipv6_dst, 16);
		v6nat_count(hook, V6NAT_ACT_REDIRECT);
		return v6nat_redirect_neigh(fib->ifindex, &nh, sizeof(nh), 0);
	}
	/* dmac then smac: the Ethernet header's first 12 bytes. */
	if (bpf_skb_store_bytes(skb, 0, fib->dmac, 6, 0) || bpf_skb_store_bytes(skb, 6, fib->smac, 6, 0))
		return v6nat_drop(hook, V6NAT_DROP_REWRITE_FAILED);
	if (route == FAST_PEER) {
		v6nat_count(hook, V6NAT_ACT_REDIRECT_PEER);
		return v6nat_redirect_peer(fib->ifindex, 0);
	}
	v6nat_count(hook, V6NAT_ACT_REDIRECT);
	return bpf_redirect(fib->ifindex, 0);
}

/* At a container's veth, for the container's outward half `out` of a flow:
 * at most every half cache time, teach the inward half this veth and the
 * Ethernet header that reaches the container (its MAC, the bridge's MAC).
 * Returns 1 when it was time: that packet then goes through the bridge (and
 * the bridge program's fast path), so the bridge keeps learning where the
 * container's MAC is even when every other packet of its flows skips it.
 * The packet's source MAC is believed only if it is the one the host's
 * neighbour table holds for the container's address on its bridge: a
 * container that forges another's source address with its own MAC (no raw
 * Ethernet frames: without CAP_NET_RAW) cannot draw the other's flows. One
 * that forges the MAC too could already take them over with Neighbor
 * Advertisements on the plain bridge. */
static __always_inline int peer_learn(struct __sk_buff *skb, const struct v6nat_pkt *pkt, struct ct_entry *out,
				      __u32 bridge_ifindex)
{
	struct bpf_fib_lookup *fib;
	struct ct_key inward_key;
	struct ct_entry *in;
	__u8 src_mac[6] __attribute__((aligned(4)));
	__u64 now = v6nat_now();

	if (now + V6NAT_PEER_CACHE_NS / 2 < out->peer_until_ns)
		return 0;
	out->peer_until_ns = now + V6NAT_PEER_CACHE_NS;
	ct_key_mirror(&inward_key, out, pkt->proto);
	in = ct_lookup(&inward_key);
	fib = fib_query();
	/* The inward half must deliver to this packet's source (an LRU slot
	 * reused for another flow meanwhile would not). */
	if (!in || !fib || !addr_equal(in->daddr, pkt->saddr) || in->dport != pkt->sport)
		return 1;
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = V6NAT_AF_INET6;
	fib->ifindex = bridge_ifindex;
	__builtin_memcpy(fib->ipv6_dst, pkt->saddr, 16);
	if (bpf_fib_lookup(skb, fib, sizeof(*fib), BPF_FIB_LOOKUP_OUTPUT) != BPF_FIB_LKUP_RET_SUCCESS ||
	    fib->ifindex != bridge_ifindex || bpf_skb_load_bytes(skb, 6, src_mac, 6) ||
	    !mac_equal(src_mac, fib->dmac))
		return 1;
	in->peer_until_ns = 0; /* a reader racing this takes the bridge */
	in->peer_ifindex = skb->ifindex;
	__builtin_memcpy(in->peer_macs, fib->dmac, 6);
	__builtin_memcpy(in->peer_macs + 6, fib->smac, 6);
	in->peer_until_ns = now + V6NAT_PEER_CACHE_NS;
	return 1;
}

#endif
