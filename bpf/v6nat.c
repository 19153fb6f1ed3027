/* v6nat.c: the TC entry points, one per hook; the logic is in lib/.
 *
 * v6nat_public_ingress  clsact ingress of each public interface:
 *     published ports (DNAT, new and established), SNAT replies, ICMPv6 errors
 *     about either, isolation of NAT'd prefixes; new flows straight to a
 *     routed or nat-unprotected network (lib/gateway.h); bans and each mapping's
 *     source rules (lib/policy.h).
 * v6nat_public_egress   clsact egress of each public interface:
 *     masquerade (SNAT), DNAT replies, ICMPv6 errors about either; internal
 *     and untranslatable traffic of NAT'd networks never leaves; a routed
 *     network's new flows become untranslated pairs, so replies come in.
 * v6nat_bridge_ingress  clsact ingress of each managed bridge:
 *     hairpin (container -> host address:published port) and its replies;
 *     the fast path of established flows leaving by a public interface.
 * v6nat_bridge_egress   clsact egress of each managed bridge: a flow's
 *     packet that the stack let through toward a container confirms that
 *     direction for the fast path; nothing the host sends or routes reaches
 *     an isolated network.
 * v6nat_veth_ingress    clsact ingress of the host side of each container
 *     veth of a managed network: anti-spoofing, isolation between networks,
 *     internal networks and ICC, by the port a packet arrives on;
 *     established flows leave by the fast path from here, and teach their
 *     inward half the way straight into the container.
 *
 * Every packet that is not ours continues (TC_ACT_UNSPEC) untouched; every
 * drop goes through v6nat_drop() with a reason. */
#include "lib/common.h"
#include "lib/parse.h"
#include "lib/csum.h"
#include "lib/conntrack.h"
#include "lib/nat.h"
#include "lib/stats.h"
#include "lib/frag.h"
#include "lib/icmp6.h"
#include "lib/fib.h"
#include "lib/isolation.h"
#include "lib/gateway.h"
#include "lib/policy.h"
#include "lib/fullcone.h"
#include "lib/trace.h"

/* The parsed packet lives in per-CPU map memory, not on the stack: the
 * verifier then forgets which extension-header path produced it, and those
 * paths merge instead of multiplying through the rest of the program. */
BPF_PERCPU_ARRAY(scratch, struct v6nat_pkt, 1);

/* The packet this CPU's program parsed last. */
static __always_inline struct v6nat_pkt *hook_pkt(void)
{
	__u32 zero = 0;

	return scratch.lookup(&zero);
}

/* Every entry point's prologue: the packet parsed into per-CPU memory. */
static __always_inline struct v6nat_pkt *hook_parse(struct __sk_buff *skb, int *result)
{
	struct v6nat_pkt *pkt = hook_pkt();

	if (!pkt) {
		*result = PARSE_NOT_IPV6;
		return 0;
	}
	__builtin_memset(pkt, 0, sizeof(*pkt));
	*result = v6nat_parse(skb, pkt);
	return pkt;
}

static __always_inline __u32 flow_action(const struct ct_entry *e)
{
	if (e->dir == CT_DIR_REPLY)
		return V6NAT_ACT_REVERSE;
	if (e->kind == CT_KIND_DNAT)
		return V6NAT_ACT_DNAT;
	if (e->kind == CT_KIND_SNAT)
		return V6NAT_ACT_SNAT;
	return V6NAT_ACT_HAIRPIN;
}

/* A packet of a known flow: account it on its half, then rewrite it. */
static __always_inline int flow_translate(struct __sk_buff *skb, __u32 hook, struct v6nat_pkt *pkt,
					  struct ct_key *key, struct ct_entry *e, __u32 action)
{
	int reason = ct_account(skb, hook, key, &e, pkt);

	if (reason)
		return v6nat_drop(hook, reason);
	if (nat_rewrite(skb, pkt, e))
		return v6nat_drop(hook, V6NAT_DROP_REWRITE_FAILED);
	if (!(e->tcp_flags & CT_F_UNASSURED))
		frag_remember(pkt); /* answered flows only: no flood of first fragments */
	mapping_account(skb, e->mapping_id);
	v6nat_count(hook, action);
	return V6NAT_CONTINUE;
}

/* Create the pair for a new flow, then translate its first packet. */
static __always_inline int flow_start(struct __sk_buff *skb, __u32 hook, struct v6nat_pkt *pkt,
				      struct ct_key *key, struct ct_entry *orig, int claim_port)
{
	struct ct_entry *e;
	int reason = ct_create_pair(skb, key, orig, claim_port);

	if (reason)
		return v6nat_drop(hook, reason);
	e = ct_lookup_in(key, orig->tcp_flags & CT_F_UNASSURED); /* ours, or a racing CPU's */
	if (!e)
		return v6nat_drop(hook, V6NAT_DROP_CT_FULL);
	if (!ct_allowed(hook, e)) /* the key is another kind of flow's */
		return v6nat_drop(hook, V6NAT_DROP_CT_CLASH);
	v6nat_count(hook, V6NAT_ACT_NEW_FLOW);
	mapping_open(e->mapping_id);
	return flow_translate(skb, hook, pkt, key, e, flow_action(e));
}

/* Does this packet create or change a flow's state (so its L4 checksum
 * must be right first)? */
static __always_inline int pkt_changes_flow(const struct v6nat_pkt *pkt)
{
	return pkt->proto == IPPROTO_TCP && (pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_FIN | TCP_FLAG_RST));
}

/* The half of a packet's tuple that this hook translates (*ep, or 0), and 0
 * or a drop reason. From outside, a packet that would change the flow (SYN,
 * FIN, RST) must have a right L4 checksum first. A pure SYN on a closed
 * flow's tuple is a new connection: the old pair goes, and the packet starts
 * a flow as if none had been (with the mapping of now). */
static __always_inline int flow_of(struct __sk_buff *skb, __u32 hook, struct ct_key *key,
				   const struct v6nat_pkt *pkt, struct ct_entry **ep)
{
	struct ct_key peer_key;
	struct ct_entry *e = ct_lookup(key);

	*ep = 0;
	if (!e || !ct_allowed(hook, e))
		return 0;
	if (hook == V6NAT_HOOK_PUBLIC_INGRESS && pkt_changes_flow(pkt) && !l4_csum_valid(skb, pkt))
		return V6NAT_DROP_BAD_CHECKSUM;
	if (!ct_tcp_reopens(e, pkt) || e->tcp_state != CT_TCP_CLOSED) {
		*ep = e;
		return 0;
	}
	ct_key_mirror(&peer_key, e, key->proto);
	ct_delete(&peer_key);
	ct_delete(key);
	v6nat_count(hook, V6NAT_ACT_CT_RESTARTED);
	return 0;
}

/* A packet of a known flow toward a container (public ingress): translate
 * it, then send it straight to the bridge when the fast path allows. */
static __always_inline int flow_forward(struct __sk_buff *skb, __u32 hook, struct v6nat_pkt *pkt,
					struct ct_key *key, struct ct_entry *e)
{
	struct bpf_fib_lookup *fib = fib_query();
	int route = fib ? fast_path_route(skb, hook, pkt, e, skb->ifindex, fib) : FAST_NONE;
	int verdict = flow_translate(skb, hook, pkt, key, e, flow_action(e));

	if (verdict != V6NAT_CONTINUE || route == FAST_NONE || !fib)
		return verdict;
	return fast_path_redirect(skb, hook, pkt, fib, route);
}

/* A container's packet that is not for a host address (its veth, or the
 * bridge): the public egress program translates it after the stack, unless
 * it belongs to an established flow that the fast path can send out
 * directly. At the veth (`veth`) it also teaches the flow's inward half the
 * way into the container. */
static __always_inline int container_outbound(struct __sk_buff *skb, __u32 hook, struct v6nat_pkt *pkt,
					      struct ct_key *key, const struct veth_info *veth)
{
	struct bpf_fib_lookup *fib = fib_query();
	struct ct_entry *e;
	int route, verdict;

	if (!fib || !fast_path_enabled())
		return v6nat_pass(hook);
	e = ct_lookup(key);
	if (!e || !ct_allowed(V6NAT_HOOK_PUBLIC_EGRESS, e))
		return v6nat_pass(hook);
	if (veth && peer_learn(skb, pkt, e, veth->bridge_ifindex))
		return v6nat_pass(hook); /* through the bridge this once (see peer_learn) */
	route = fast_path_route(skb, hook, pkt, e, veth ? veth->bridge_ifindex : skb->ifindex, fib);
	if (route == FAST_NONE)
		return V6NAT_CONTINUE;
	verdict = flow_translate(skb, hook, pkt, key, e, flow_action(e));
	if (verdict != V6NAT_CONTINUE)
		return verdict;
	return fast_path_redirect(skb, hook, pkt, fib, route);
}

static __always_inline int icmp_error_verdict(struct __sk_buff *skb, __u32 hook,
					      const struct v6nat_pkt *pkt, int masquerade)
{
	int r = icmp6_error_translate(skb, pkt, hook);

	if (r == ICMP6_FOREIGN)
		return v6nat_drop(hook, V6NAT_DROP_ICMP_FOREIGN);
	if (r < 0)
		return v6nat_drop(hook, V6NAT_DROP_REWRITE_FAILED);
	if (r > 0)
		return V6NAT_CONTINUE;
	return masquerade ? v6nat_drop(hook, V6NAT_DROP_UNSUPPORTED) : v6nat_pass(hook);
}

static __always_inline int fragment_verdict(struct __sk_buff *skb, __u32 hook, struct v6nat_pkt *pkt,
					    int masquerade)
{
	struct ct_key key;
	struct ct_entry *e;

	if (frag_recall(pkt) == 0) {
		ct_key_of_pkt(&key, pkt);
		e = ct_lookup(&key);
		if (e && ct_allowed(hook, e)) {
			if (hook == V6NAT_HOOK_PUBLIC_INGRESS && flow_banned(&key, e))
				return v6nat_drop(hook, V6NAT_DROP_BANNED);
			return flow_translate(skb, hook, pkt, &key, e, V6NAT_ACT_FRAGMENT);
		}
	}
	return masquerade ? v6nat_drop(hook, V6NAT_DROP_FRAG_NO_FIRST) : v6nat_pass(hook);
}

/* What cannot be parsed is never translated: it continues untouched, unless
 * it comes from a NAT'd network, whose ULA source must not leave. */
static __always_inline int unparsed_verdict(__u32 hook, int result, int masquerade)
{
	if (masquerade)
		return v6nat_drop(hook, result == PARSE_EXTHDR_LIMIT ? V6NAT_DROP_EXTHDR_LIMIT
								      : V6NAT_DROP_UNSUPPORTED);
	if (result == PARSE_MALFORMED || result == PARSE_EXTHDR_LIMIT) {
		v6nat_count(hook, V6NAT_ACT_MALFORMED);
		return V6NAT_CONTINUE;
	}
	return v6nat_pass(hook);
}

/* An unsolicited datagram through a full-cone mapping (lib/fullcone.h):
 * its pair created, then translated as the reply it is. */
static __always_inline int full_cone_start(struct __sk_buff *skb, __u32 hook, struct v6nat_pkt *pkt,
					   struct ct_key *key)
{
	struct ct_entry *e;
	int reason = full_cone_pair(skb, pkt);

	if (reason == FULL_CONE_NONE)
		return v6nat_pass(hook);
	if (reason)
		return v6nat_drop(hook, reason);
	e = ct_lookup_in(key, 1);
	if (!e || !ct_allowed(hook, e))
		return v6nat_drop(hook, V6NAT_DROP_CT_CLASH);
	v6nat_count(hook, V6NAT_ACT_NEW_FLOW);
	v6nat_count(hook, V6NAT_ACT_FULL_CONE);
	return flow_translate(skb, hook, pkt, key, e, V6NAT_ACT_REVERSE);
}

/* The first packet to a published port starts a DNAT flow (client source
 * kept) or a hairpin flow (source new_saddr, from the SNAT port range;
 * `src_net` is the container's network). */
static __always_inline int published_port_start(struct __sk_buff *skb, __u32 hook, struct v6nat_pkt *pkt,
						struct ct_key *key, const __u8 *new_saddr,
						const struct network_info *src_net)
{
	struct dnat_target *target;
	struct ct_entry orig = {};
	int reason;

	if (pkt->proto == IPPROTO_TCP && !tcp_is_syn(pkt))
		return v6nat_pass(hook);
	target = dnat_lookup(pkt->proto, pkt->daddr, pkt->dport);
	if (!target)
		return v6nat_pass(hook);
	if (src_net) {
		reason = hairpin_verdict(src_net, target);
		if (reason)
			return v6nat_drop(hook, reason);
	} else if (addr_is_ula(pkt->saddr)) {
		return v6nat_drop(hook, V6NAT_DROP_BOGON_SOURCE);
	} else if (!l4_csum_valid(skb, pkt)) {
		return v6nat_drop(hook, V6NAT_DROP_BAD_CHECKSUM);
	} else {
		/* Outside: bans and the mapping's rules, before DNAT. */
		__u32 generation = ban_generation();

		orig.ban_gen = (__u16)generation;
		reason = ingress_verdict(generation, pkt, target);
		if (reason)
			return v6nat_drop(hook, reason);
	}
	addr_copy(orig.saddr, new_saddr);
	addr_copy(orig.daddr, target->addr);
	orig.sport = pkt->sport;
	orig.dport = target->port;
	orig.kind = src_net ? CT_KIND_HAIRPIN : CT_KIND_DNAT;
	orig.mapping_id = target->mapping_id;
	return flow_start(skb, hook, pkt, key, &orig, src_net != 0);
}

/* From outside straight to a container of a routed or nat-unprotected
 * network (no flow holds the tuple): see lib/gateway.h. A routed network
 * takes only what gateway_admit lets start, the first fragments' followers
 * of its flows and ICMPv6; a nat-unprotected one everything. */
static __always_inline int direct_inbound(struct __sk_buff *skb, __u32 hook, struct v6nat_pkt *pkt,
					  struct ct_key *key, const struct network_info *net, int r)
{
	int routed = !!(net->flags & V6NAT_NET_ROUTED);
	struct ct_entry orig = {};
	__u32 mapping_id;
	int reason;

	if (r == PARSE_ICMP_ERROR)
		return icmp_error_verdict(skb, hook, pkt, 0);
	if (r == PARSE_FRAGMENT)
		return fragment_verdict(skb, hook, pkt, routed);
	if (r != PARSE_TUPLE)
		return unparsed_verdict(hook, r, routed);
	reason = gateway_admit(net, pkt, &mapping_id);
	if (reason)
		return v6nat_drop(hook, reason);
	if (!gateway_starts_flow(pkt)) {
		if (routed && pkt->proto == IPPROTO_TCP)
			return v6nat_drop(hook, V6NAT_DROP_TCP_NO_FLOW);
		return v6nat_pass(hook);
	}
	if (!l4_csum_valid(skb, pkt))
		return v6nat_drop(hook, V6NAT_DROP_BAD_CHECKSUM);
	gateway_identity(&orig, pkt, CT_KIND_DNAT, mapping_id);
	return flow_start(skb, hook, pkt, key, &orig, 0);
}

static __always_inline int public_ingress(struct __sk_buff *skb)
{
	const __u32 hook = V6NAT_HOOK_PUBLIC_INGRESS;
	struct ct_key key;
	struct ct_entry *e;
	struct network_info *net;
	int r, reason;
	struct v6nat_pkt *pkt = hook_parse(skb, &r);

	if (r == PARSE_NOT_IPV6)
		return v6nat_pass(hook);
	/* A flow's packet first: the halves translated here are keyed by a
	 * remote address that passed the source checks below when the flow
	 * began, so a hit needs no more lookups. */
	if (r == PARSE_TUPLE) {
		ct_key_of_pkt(&key, pkt);
		reason = flow_of(skb, hook, &key, pkt, &e);
		if (reason)
			return v6nat_drop(hook, reason);
		if (e && flow_banned(&key, e))
			return v6nat_drop(hook, V6NAT_DROP_BANNED);
		if (e)
			return flow_forward(skb, hook, pkt, &key, e);
	}
	/* Link-local and unspecified sources (NDP, MLD) never cross the host. */
	if (addr_is_link_local(pkt->saddr) || addr_is_zero(pkt->saddr))
		return v6nat_pass(hook);
	if (public_source_forged(pkt->saddr))
		return v6nat_drop(hook, V6NAT_DROP_BOGON_SOURCE);
	net = network_of(pkt->daddr);
	if (net && (net->flags & V6NAT_NET_INTERNAL))
		return v6nat_drop(hook, V6NAT_DROP_DIRECT_ULA);
	if (net && (net->flags & V6NAT_NET_MASQUERADE) && !(net->flags & V6NAT_NET_UNPROTECTED))
		return v6nat_drop(hook, V6NAT_DROP_DIRECT_ULA);
	if (net && addr_is_ula(pkt->saddr))
		return v6nat_drop(hook, V6NAT_DROP_BOGON_SOURCE);
	/* A banned source reaches no container of a routed network either. */
	if (net && source_banned(ban_generation(), pkt->saddr, 0, 0))
		return v6nat_drop(hook, V6NAT_DROP_BANNED);
	if (net && gateway_open_inbound(net->flags))
		return direct_inbound(skb, hook, pkt, &key, net, r);
	if (r == PARSE_ICMP_ERROR)
		return icmp_error_verdict(skb, hook, pkt, 0);
	if (r == PARSE_FRAGMENT)
		return fragment_verdict(skb, hook, pkt, 0);
	if (r != PARSE_TUPLE)
		return unparsed_verdict(hook, r, 0);

	if (pkt->proto == V6NAT_IPPROTO_ICMPV6 || !is_host_addr(pkt->daddr))
		return v6nat_pass(hook);
	if (pkt->proto == IPPROTO_UDP && !dnat_lookup(pkt->proto, pkt->daddr, pkt->dport))
		return full_cone_start(skb, hook, pkt, &key);
	return published_port_start(skb, hook, pkt, &key, pkt->saddr, 0);
}

static __always_inline int public_egress(struct __sk_buff *skb)
{
	const __u32 hook = V6NAT_HOOK_PUBLIC_EGRESS;
	struct ct_key key;
	struct ct_entry *e;
	struct network_info *net;
	const __u8 *source;
	int masquerade;
	int r, verdict;
	struct v6nat_pkt *pkt = hook_parse(skb, &r);

	if (r == PARSE_NOT_IPV6)
		return v6nat_pass(hook);
	net = network_of(pkt->saddr);
	if (net && (net->flags & V6NAT_NET_INTERNAL))
		return v6nat_drop(hook, V6NAT_DROP_INTERNAL_EGRESS);
	masquerade = net && (net->flags & V6NAT_NET_MASQUERADE);
	/* The host's own flows, and the packets the fast path translated at
	 * bridge ingress and redirected here, come from a host address: the
	 * halves translated here are keyed by container sources, so these pass
	 * without a conntrack lookup (a small hash instead of the big LRU).
	 * ICMPv6 errors the host sends about a flow are no tuples: below. */
	if (!net && r == PARSE_TUPLE && is_host_addr(pkt->saddr))
		return v6nat_pass(hook);
	if (r == PARSE_ICMP_ERROR)
		return icmp_error_verdict(skb, hook, pkt, masquerade);
	if (r == PARSE_FRAGMENT)
		return fragment_verdict(skb, hook, pkt, masquerade);
	if (r != PARSE_TUPLE)
		return unparsed_verdict(hook, r, masquerade);

	ct_key_of_pkt(&key, pkt);
	flow_of(skb, hook, &key, pkt, &e); /* no checksum check here: no drop */
	if (e)
		return flow_translate(skb, hook, pkt, &key, e, flow_action(e));

	if (!masquerade) {
		struct ct_entry orig = {};

		/* A routed network's new flow: an untranslated pair, whose
		 * reply half lets the answers in (gateway.h). */
		if (!net || !(net->flags & V6NAT_NET_ROUTED) || !gateway_starts_flow(pkt))
			return v6nat_pass(hook);
		gateway_identity(&orig, pkt, CT_KIND_SNAT, 0);
		return flow_start(skb, hook, pkt, &key, &orig, 0);
	}
	if (pkt->proto == V6NAT_IPPROTO_ICMPV6 && pkt->icmp_type != ICMP6_ECHO_REQUEST)
		return v6nat_drop(hook, V6NAT_DROP_UNSUPPORTED);
	if (pkt->proto == IPPROTO_TCP && !tcp_is_syn(pkt))
		return v6nat_drop(hook, V6NAT_DROP_TCP_NO_FLOW);
	source = snat_source(skb, net);
	if (!source)
		return v6nat_drop(hook, V6NAT_DROP_NO_SNAT_ADDR);
	{
		struct ct_entry orig = {};

		addr_copy(orig.saddr, source);
		addr_copy(orig.daddr, pkt->daddr);
		orig.sport = pkt->sport;
		orig.dport = pkt->dport;
		orig.kind = CT_KIND_SNAT;
		verdict = flow_start(skb, hook, pkt, &key, &orig, 1);
		if (verdict != TC_ACT_SHOT && pkt->proto == IPPROTO_UDP && (net->flags & V6NAT_NET_UDP_EIF))
			nat_mapping_note(&key, &orig);
		return verdict;
	}
}

static __always_inline int bridge_ingress(struct __sk_buff *skb)
{
	const __u32 hook = V6NAT_HOOK_BRIDGE_INGRESS;
	struct ct_key key;
	struct ct_entry *e;
	struct network_info *net;
	int r;
	struct v6nat_pkt *pkt = hook_parse(skb, &r);

	if (r == PARSE_NOT_IPV6)
		return v6nat_pass(hook);
	/* A managed network's source arrives only on its own bridge. */
	net = network_of(pkt->saddr);
	if (net && net->bridge_ifindex != skb->ifindex)
		return v6nat_drop(hook, V6NAT_DROP_SPOOFED_SOURCE);
	if (r == PARSE_ICMP_ERROR)
		return icmp_error_verdict(skb, hook, pkt, 0);
	if (r == PARSE_FRAGMENT)
		return fragment_verdict(skb, hook, pkt, 0);
	if (r != PARSE_TUPLE)
		return unparsed_verdict(hook, r, 0);
	ct_key_of_pkt(&key, pkt);
	if (!is_host_addr(pkt->daddr))
		return container_outbound(skb, hook, pkt, &key, 0);

	flow_of(skb, hook, &key, pkt, &e); /* no checksum check here: no drop */
	if (e)
		return flow_translate(skb, hook, pkt, &key, e, flow_action(e));

	if (pkt->proto == V6NAT_IPPROTO_ICMPV6 || !net)
		return v6nat_pass(hook);
	/* The source becomes the host address the container asked for, so the
	 * target's replies come back through the host. */
	return published_port_start(skb, hook, pkt, &key, pkt->daddr, net);
}

static __always_inline int bridge_egress(struct __sk_buff *skb)
{
	const __u32 hook = V6NAT_HOOK_BRIDGE_EGRESS;
	int r;
	struct network_info *net;
	struct v6nat_pkt *pkt = hook_parse(skb, &r);

	if (r == PARSE_NOT_IPV6)
		return v6nat_pass(hook);
	/* Only the host's stack sends here (frames between the bridge's ports
	 * never pass its own egress): nothing it sends or routes may reach an
	 * isolated network. */
	net = network_of(pkt->daddr);
	if (net && (net->flags & V6NAT_NET_ISOLATED))
		return v6nat_drop(hook, V6NAT_DROP_ISOLATION);
	if (r == PARSE_TUPLE)
		ct_mark_stack_in(pkt);
	return v6nat_pass(hook);
}

static __always_inline int veth_ingress(struct __sk_buff *skb)
{
	const __u32 hook = V6NAT_HOOK_VETH_INGRESS;
	struct veth_info *veth;
	struct ct_key key;
	int r, reason;
	struct v6nat_pkt *pkt = hook_parse(skb, &r);

	if (r == PARSE_NOT_IPV6)
		return v6nat_pass(hook);
	veth = veth_of(skb);
	if (!veth)
		return v6nat_drop(hook, V6NAT_DROP_VETH_UNKNOWN);
	reason = veth_verdict(skb, pkt, veth);
	if (reason)
		return v6nat_drop(hook, reason);
	/* Hairpin and the host's own addresses are the bridge program's. */
	if (r != PARSE_TUPLE || addr_is_link_local(pkt->saddr) || is_host_addr(pkt->daddr))
		return v6nat_pass(hook);
	ct_key_of_pkt(&key, pkt);
	return container_outbound(skb, hook, pkt, &key, veth);
}

/* The entry points, one per hook (v6nat_<hook>): the hook's decision, shown
 * to `v6nat trace` when a tracer is on (lib/trace.h). */
#define V6NAT_ENTRY(id, name)                                                  \
	int v6nat_##name(struct __sk_buff *skb)                                \
	{                                                                      \
		int verdict = name(skb);                                       \
		struct trace_filter *filter = trace_active();                  \
									       \
		if (filter)                                                    \
			trace_emit(skb, V6NAT_HOOK_##id, hook_pkt(), filter, verdict); \
		return verdict;                                                \
	}
V6NAT_HOOKS(V6NAT_ENTRY)
