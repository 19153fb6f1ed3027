/* conntrack.h: the two halves of a translated flow. A half is keyed by the
 * tuple of a packet as it reaches the hook that translates it; its value is
 * what that packet becomes. The other half's key is the mirror of the
 * rewritten tuple, so either half rebuilds the other. TCP state lives in both
 * halves; the GC (Python) expires a pair by the later last_seen of the two. */
#ifndef V6NAT_CONNTRACK_H
#define V6NAT_CONNTRACK_H

#include "lib/common.h"
#include "lib/parse.h"

/* A half a program builds before inserting it (the mirror of a new or lost
 * half) lives in per-CPU map memory: two or three ct_entry copies would not
 * fit the 512-byte stack. One user at a time: nothing in between reuses it. */
BPF_PERCPU_ARRAY(ct_scratch, struct ct_entry, 1);

static __always_inline struct ct_entry *ct_entry_scratch(void)
{
	__u32 zero = 0;

	return ct_scratch.lookup(&zero);
}

static __always_inline void ct_key_of_pkt(struct ct_key *key, const struct v6nat_pkt *pkt)
{
	__builtin_memset(key, 0, sizeof(*key));
	addr_copy(key->saddr, pkt->saddr);
	addr_copy(key->daddr, pkt->daddr);
	key->sport = pkt->sport;
	key->dport = pkt->dport;
	key->proto = pkt->proto;
}

/* The key of the half that translates replies to packets rewritten by `e`. */
static __always_inline void ct_key_mirror(struct ct_key *peer, const struct ct_entry *e, __u8 proto)
{
	__builtin_memset(peer, 0, sizeof(*peer));
	addr_copy(peer->saddr, e->daddr);
	addr_copy(peer->daddr, e->saddr);
	peer->sport = e->dport;
	peer->dport = e->sport;
	peer->proto = proto;
}

/* The other half of (key, e): it restores the tuple of `key`, mirrored. */
static __always_inline void ct_entry_mirror(struct ct_entry *peer, const struct ct_key *key,
					    const struct ct_entry *e)
{
	__builtin_memset(peer, 0, sizeof(*peer));
	addr_copy(peer->saddr, key->daddr);
	addr_copy(peer->daddr, key->saddr);
	peer->sport = key->dport;
	peer->dport = key->sport;
	peer->kind = e->kind;
	peer->dir = e->dir ^ 1;
	peer->tcp_state = e->tcp_state;
	peer->tcp_flags = e->tcp_flags;
	peer->mapping_id = e->mapping_id;
	peer->created_ns = e->created_ns;
	peer->last_seen_ns = e->last_seen_ns;
}

/* Which halves a hook translates: the original direction where a flow starts,
 * the reply direction where its replies pass. Anything else is not ours
 * there (e.g. a spoofed ULA source arriving on a public interface). */
static __always_inline int ct_allowed(__u32 hook, const struct ct_entry *e)
{
	if (hook == V6NAT_HOOK_PUBLIC_INGRESS)
		return (e->kind == CT_KIND_DNAT && e->dir == CT_DIR_ORIGINAL) ||
		       (e->kind == CT_KIND_SNAT && e->dir == CT_DIR_REPLY);
	if (hook == V6NAT_HOOK_PUBLIC_EGRESS)
		return (e->kind == CT_KIND_DNAT && e->dir == CT_DIR_REPLY) ||
		       (e->kind == CT_KIND_SNAT && e->dir == CT_DIR_ORIGINAL);
	return e->kind == CT_KIND_HAIRPIN;
}

static __always_inline int tcp_is_syn(const struct v6nat_pkt *pkt)
{
	return (pkt->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK | TCP_FLAG_RST)) == TCP_FLAG_SYN;
}

/* The TCP state after this packet; tcp_flags updated in place. */
static __always_inline __u8 ct_tcp_next(__u8 state, __u8 *fins, __u8 dir, __u8 flags)
{
	if (flags & TCP_FLAG_RST)
		return CT_TCP_CLOSED;
	if (flags & TCP_FLAG_FIN) {
		*fins |= dir == CT_DIR_ORIGINAL ? CT_F_FIN_ORIGINAL : CT_F_FIN_REPLY;
		return (*fins & CT_F_FINS) == CT_F_FINS ? CT_TCP_CLOSED : CT_TCP_CLOSING;
	}
	if (state == CT_TCP_SYN_SENT && dir == CT_DIR_REPLY)
		return CT_TCP_ESTABLISHED;
	if (state == CT_TCP_CLOSED && dir == CT_DIR_ORIGINAL &&
	    (flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN) {
		*fins = 0; /* the same tuple reused for a new connection: its
			    * first packets take the stack again */
		return CT_TCP_SYN_SENT;
	}
	return state;
}

/* Account a packet on half `e`, keep the TCP state of both halves equal and
 * rebuild the other half when LRU eviction took it. Looking the other half up
 * on every packet also keeps it recently used, so a one-way stream does not
 * lose its quiet half. */
static __always_inline void ct_account(struct __sk_buff *skb, __u32 hook, const struct ct_key *key,
				       struct ct_entry *e, const struct v6nat_pkt *pkt)
{
	struct ct_key peer_key;
	struct ct_entry *peer;
	__u8 state = e->tcp_state, fins = e->tcp_flags;

	e->last_seen_ns = v6nat_now();
	__sync_fetch_and_add(&e->packets, 1);
	__sync_fetch_and_add(&e->bytes, skb->len);
	if (key->proto == IPPROTO_TCP && pkt->frag != FRAG_LATER)
		state = ct_tcp_next(state, &fins, e->dir, pkt->tcp_flags);
	if (e->dir == CT_DIR_REPLY)
		fins |= CT_F_REPLY_SEEN;
	e->tcp_state = state;
	e->tcp_flags = fins;

	ct_key_mirror(&peer_key, e, key->proto);
	peer = conntrack.lookup(&peer_key);
	if (peer) {
		peer->tcp_state = state;
		peer->tcp_flags = fins;
		return;
	}
	peer = ct_entry_scratch();
	if (!peer)
		return;
	ct_entry_mirror(peer, key, e);
	if (conntrack.update(&peer_key, peer) == 0)
		v6nat_count(hook, V6NAT_ACT_CT_REBUILT);
}

#endif
