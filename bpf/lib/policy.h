/* policy.h: who may reach a container from outside (issue 16, docs/policy.md).
 *
 * Order: bans, then the mapping's deny and allow rules, then its default.
 * - Bans (`v6nat ban`, map bans) hold for every packet of a banned source
 *   that public ingress would let reach a container: new flows of published
 *   ports, established ones (DNAT and the replies of SNAT flows), their
 *   fragments and ICMPv6 errors, and routed networks. An established flow's
 *   half is looked up again only when ban_state's generation moved since
 *   its last check; a banned one loses both halves and the packet. Expiry
 *   is decided here, against CLOCK_BOOTTIME, which the CLI reads too.
 * - Rules (map policy, per mapping through dnat_target.policy_id) are asked
 *   once per new flow of a published port, a routed network's (gateway.h)
 *   too: established flows pay nothing.
 * Hairpin (a container to a published port) is not outside traffic: neither
 * applies. */
#ifndef V6NAT_POLICY_H
#define V6NAT_POLICY_H

#include "lib/common.h"
#include "lib/conntrack.h"
#include "lib/stats.h"

/* Nested expired bans a lookup steps over before it gives up (`v6nat ban`
 * prunes expired bans at every write, so more are rare leftovers). */
#define V6NAT_BAN_EXPIRED_DEPTH 4

/* The lookup keys live in per-CPU map memory, not on the stack: public
 * ingress inlines these checks beside the gateway modes' and would pass the
 * 512-byte stack. Program-private (not pinned), one user at a time. */
struct policy_scratch {
	struct ban_key ban;
	struct policy_key rule;
	struct ct_key peer;
};

BPF_PERCPU_ARRAY(policy_keys, struct policy_scratch, 1);

static __always_inline struct policy_scratch *policy_scratch_get(void)
{
	__u32 zero = 0;

	return policy_keys.lookup(&zero);
}

static __always_inline __u32 ban_generation(void)
{
	__u32 zero = 0;
	struct ban_state *st = ban_state.lookup(&zero);

	return st ? st->generation : 0;
}

/* Is `saddr` banned from every port, or from the published port `port`/`proto`
 * (port 0: only bans of every port apply)? `generation` is ban_generation()
 * read before: 0 means no ban was ever written. One loop, not unrolled (it
 * is inlined in several places of public ingress): the longest ban of every
 * port first, then the port's; a hit that has expired retries the shorter
 * prefixes (its prefixlen - 1). */
static __always_inline int source_banned(__u32 generation, const __u8 *saddr, __be16 port, __u8 proto)
{
	struct policy_scratch *scratch;
	struct ban_key *key;
	struct ban_info *ban;
	__u64 now;

	if (!generation)
		return 0;
	scratch = policy_scratch_get();
	if (!scratch)
		return 0;
	now = bpf_ktime_get_boot_ns();
	key = &scratch->ban;
	__builtin_memset(key, 0, sizeof(*key));
	key->prefixlen = 32 + 128;
	addr_copy(key->addr, saddr);
#pragma clang loop unroll(disable)
	for (int i = 0; i < 2 * V6NAT_BAN_EXPIRED_DEPTH; i++) {
		ban = bans.lookup(key);
		if (ban && (!ban->expires_ns || now < ban->expires_ns))
			return 1;
		if (ban && ban->prefixlen > 32) {
			key->prefixlen = ban->prefixlen - 1; /* shorter bans than the expired one */
			continue;
		}
		if (!port || key->port) /* every scope asked */
			return 0;
		key->port = port;
		key->proto = proto;
		key->prefixlen = 32 + 128;
	}
	return 0;
}

/* A packet of an established flow at public ingress (key: its tuple, e: the
 * half it hit). Banned since the half's last check: both halves go, and the
 * packet is dropped (non-zero). DNAT halves are banned by published port too. */
static __always_inline int flow_banned(struct ct_key *key, struct ct_entry *e)
{
	__u32 generation = ban_generation();
	struct policy_scratch *scratch;
	__be16 port = e->kind == CT_KIND_DNAT ? key->dport : 0;

	if (e->ban_gen == (__u16)generation)
		return 0;
	if (!source_banned(generation, key->saddr, port, key->proto)) {
		e->ban_gen = (__u16)generation;
		return 0;
	}
	scratch = policy_scratch_get();
	if (scratch) {
		ct_key_mirror(&scratch->peer, e, key->proto);
		ct_delete(&scratch->peer);
	}
	ct_delete(key);
	return 1;
}

/* A published mapping refused a new flow: counted on the mapping too. */
static __always_inline void mapping_policy_drop(__u32 mapping_id)
{
	struct mapping_stat *stat;

	if (!mapping_id)
		return;
	mapping_open(mapping_id);
	stat = mapping_stats.lookup(&mapping_id);
	if (stat)
		stat->policy_drops += 1;
}

/* The mapping's rules for a new flow from `saddr`: 0, or V6NAT_DROP_POLICY. */
static __always_inline int policy_verdict(const __u8 *saddr, const struct dnat_target *target)
{
	struct policy_scratch *scratch;
	struct policy_key *key;
	struct policy_rule *rule;

	if (!target->policy_id)
		return 0;
	scratch = policy_scratch_get();
	if (!scratch)
		return V6NAT_DROP_POLICY; /* cannot ask: refuse (never happens: a per-CPU array of one) */
	key = &scratch->rule;
	key->prefixlen = 32 + 128;
	key->policy_id = target->policy_id;
	addr_copy(key->addr, saddr);
	rule = policy.lookup(key);
	if (rule)
		return rule->verdict == V6NAT_RULE_ALLOW ? 0 : V6NAT_DROP_POLICY;
	return (target->policy_flags & V6NAT_POLICY_DEFAULT_DENY) ? V6NAT_DROP_POLICY : 0;
}

/* A new flow from outside to a published port, before DNAT: 0, or why it
 * is dropped. `generation`: ban_generation(), kept in the new flow's half. */
static __always_inline int ingress_verdict(__u32 generation, const struct v6nat_pkt *pkt,
					   const struct dnat_target *target)
{
	int reason;

	if (source_banned(generation, pkt->saddr, pkt->dport, pkt->proto))
		return V6NAT_DROP_BANNED;
	reason = policy_verdict(pkt->saddr, target);
	if (reason)
		mapping_policy_drop(target->mapping_id);
	return reason;
}

#endif
