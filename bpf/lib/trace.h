/* trace.h: `v6nat trace`, live events of what the programs did to a packet.
 *
 * Every entry point (v6nat.c) ends in trace_active(), and trace_emit() when
 * it answers: with the trace off (the
 * trace_filter record without V6NAT_TRACE_ON, or its lease ran out) that is
 * one array lookup and one test. With it on, a packet that matches the filter
 * (address or prefix, port, protocol, mapping: any end, before or after
 * translation) becomes one trace_event in the trace_events ring buffer,
 * bounded by a per-CPU rate (trace_state). The drop reason of a dropped packet
 * is the one v6nat_drop() noted last on this CPU (trace_note_drop), which is
 * this packet's: every TC_ACT_SHOT goes through v6nat_drop(). */
#ifndef V6NAT_TRACE_H
#define V6NAT_TRACE_H

#include "lib/common.h"
#include "lib/parse.h"
#include "lib/conntrack.h"

#define V6NAT_TRACE_WINDOW_NS 1000000000ULL

static __always_inline struct trace_state *trace_state_of_cpu(void)
{
	__u32 zero = 0;

	return trace_state.lookup(&zero);
}

/* Called by v6nat_drop() (declared in common.h). */
static __always_inline void trace_note_drop(__u32 reason)
{
	struct trace_state *st = trace_state_of_cpu();

	if (st)
		st->drop_reason = reason;
}

/* The filter when a tracer is on, else 0: the one check every packet pays. */
static __always_inline struct trace_filter *trace_active(void)
{
	__u32 zero = 0;
	struct trace_filter *f = trace_filter.lookup(&zero);

	if (!f || !(f->flags & V6NAT_TRACE_ON))
		return 0;
	return v6nat_now() < f->expires_ns ? f : 0;
}

/* The first `bits` bits of `a` and `p` are equal. */
static __always_inline int addr_in_prefix(const __u8 *a, const __u8 *p, __u32 bits)
{
	__u64 hi_a = __builtin_bswap64(((const __u64 *)a)[0]), hi_p = __builtin_bswap64(((const __u64 *)p)[0]);
	__u64 lo_a = __builtin_bswap64(((const __u64 *)a)[1]), lo_p = __builtin_bswap64(((const __u64 *)p)[1]);

	if (bits >= 128)
		return hi_a == hi_p && lo_a == lo_p;
	if (bits >= 64)
		return hi_a == hi_p && (bits == 64 || (lo_a ^ lo_p) >> (128 - bits) == 0);
	return bits == 0 || (hi_a ^ hi_p) >> (64 - bits) == 0;
}

/* The filter's conditions on the packet (the mapping's is checked once its
 * flow is looked up, for the packets that pass these). */
static __always_inline int trace_matches(const struct trace_filter *f, const struct trace_event *ev)
{
	if ((f->flags & V6NAT_TRACE_DROPS) && ev->verdict != TC_ACT_SHOT)
		return 0;
	if (f->proto && f->proto != ev->proto)
		return 0;
	if (f->port && f->port != ev->sport && f->port != ev->dport && f->port != ev->new_sport &&
	    f->port != ev->new_dport)
		return 0;
	if (f->prefixlen && !addr_in_prefix(ev->saddr, f->addr, f->prefixlen) &&
	    !addr_in_prefix(ev->daddr, f->addr, f->prefixlen) &&
	    !addr_in_prefix(ev->new_saddr, f->addr, f->prefixlen) &&
	    !addr_in_prefix(ev->new_daddr, f->addr, f->prefixlen))
		return 0;
	return 1;
}

/* The tuple the packet leaves with, read back from the packet (the
 * programs rewrite the packet, never `pkt`). */
static __always_inline void trace_read_after(struct __sk_buff *skb, const struct v6nat_pkt *pkt,
					     struct trace_event *ev)
{
	__u32 ports = pkt->l4_off;

	addr_copy(ev->new_saddr, ev->saddr);
	addr_copy(ev->new_daddr, ev->daddr);
	ev->new_sport = ev->sport;
	ev->new_dport = ev->dport;
	if (bpf_skb_load_bytes(skb, V6NAT_OFF_SADDR, ev->new_saddr, 32) < 0 || !ports || pkt->frag == FRAG_LATER)
		return;
	if (pkt->proto == V6NAT_IPPROTO_ICMPV6) {
		if (pkt->icmp_type == ICMP6_ECHO_REQUEST)
			bpf_skb_load_bytes(skb, ports + 4, &ev->new_sport, 2);
		else if (pkt->icmp_type == ICMP6_ECHO_REPLY)
			bpf_skb_load_bytes(skb, ports + 4, &ev->new_dport, 2);
		return;
	}
	if (pkt->proto == IPPROTO_TCP || pkt->proto == IPPROTO_UDP)
		bpf_skb_load_bytes(skb, ports, &ev->new_sport, 4);
}

/* Rate limit: at most f->rate events per second on this CPU. */
static __always_inline int trace_budget_take(const struct trace_filter *f, struct trace_state *st, __u64 now)
{
	if (now - st->window_ns >= V6NAT_TRACE_WINDOW_NS) {
		st->window_ns = now;
		st->sent = 0;
	}
	if (st->sent >= f->rate) {
		st->limited += 1;
		return 0;
	}
	st->sent += 1;
	return 1;
}

static __always_inline void trace_emit(struct __sk_buff *skb, __u32 hook, const struct v6nat_pkt *pkt,
				       const struct trace_filter *f, int verdict)
{
	struct trace_event ev = {};
	struct trace_state *st = trace_state_of_cpu();
	struct ct_entry *e;
	struct ct_key key;

	if (!pkt || !st || skb->protocol != v6_htons(ETH_P_IPV6))
		return;
	addr_copy(ev.saddr, pkt->saddr);
	addr_copy(ev.daddr, pkt->daddr);
	ev.sport = pkt->sport;
	ev.dport = pkt->dport;
	ev.proto = pkt->proto;
	ev.hook = hook;
	ev.verdict = verdict;
	ev.ifindex = skb->ifindex;
	ev.drop_reason = verdict == TC_ACT_SHOT ? st->drop_reason : V6NAT_TRACE_NO_DROP;
	trace_read_after(skb, pkt, &ev);
	if (!trace_matches(f, &ev))
		return;
	ct_key_of_pkt(&key, pkt);
	e = ct_lookup(&key);
	if (e) {
		ev.kind = e->kind;
		ev.dir = e->dir;
		ev.mapping_id = e->mapping_id;
	}
	if (f->mapping_id && f->mapping_id != ev.mapping_id)
		return;
	ev.ts_ns = v6nat_now();
	if (!trace_budget_take(f, st, ev.ts_ns))
		return;
	if (trace_events.ringbuf_output(&ev, sizeof(ev), 0))
		st->lost += 1;
}

#endif
