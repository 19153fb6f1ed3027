/* conntrack.h: the two halves of a translated flow. A half is keyed by the
 * tuple of a packet as it reaches the hook that translates it; its value is
 * what that packet becomes. The other half's key is the mirror of the
 * rewritten tuple, so either half rebuilds the other. TCP state lives in both
 * halves; the GC (Python) expires a pair by the later last_seen of the two.
 *
 * Two tables: a new pair is claimed (BPF_NOEXIST, never over another flow's
 * half) in ct_unassured, moves to conntrack once both ends took part in it
 * (ct_assured_by) and back when a TCP flow closes. A flood of flows that a
 * forger cannot complete, and the churn of closed flows, therefore evict only
 * their own kind, never an idle live flow. */
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

/* The half of `key` in either table: answered flows first (most packets). */
static __always_inline struct ct_entry *ct_lookup(const struct ct_key *key)
{
	struct ct_entry *e = conntrack.lookup((struct ct_key *)key);

	return e ? e : ct_unassured.lookup((struct ct_key *)key);
}

/* The half of `key` in the table a pair's CT_F_UNASSURED names: one lookup
 * where the pair's table is known (a cold hash bucket costs on new flows). */
static __always_inline struct ct_entry *ct_lookup_in(struct ct_key *key, int unassured)
{
	return unassured ? ct_unassured.lookup(key) : conntrack.lookup(key);
}

/* Claim `key` for a half in the table `unassured` says; fails (non-zero)
 * when any flow holds the key in either table. */
static __always_inline int ct_claim(struct ct_key *key, struct ct_entry *e, int unassured)
{
	if (unassured) {
		if (conntrack.lookup(key))
			return -1;
		return ct_unassured.insert(key, e);
	}
	if (ct_unassured.lookup(key))
		return -1;
	return conntrack.insert(key, e);
}

static __always_inline void ct_delete(struct ct_key *key)
{
	conntrack.delete(key);
	ct_unassured.delete(key);
}

/* The one place a conntrack key is filled in: padding zeroed, as the hash
 * covers it. */
static __always_inline void ct_key_set(struct ct_key *key, const __u8 *saddr, const __u8 *daddr, __be16 sport,
				       __be16 dport, __u8 proto)
{
	__builtin_memset(key, 0, sizeof(*key));
	addr_copy(key->saddr, saddr);
	addr_copy(key->daddr, daddr);
	key->sport = sport;
	key->dport = dport;
	key->proto = proto;
}

static __always_inline void ct_key_of_pkt(struct ct_key *key, const struct v6nat_pkt *pkt)
{
	ct_key_set(key, pkt->saddr, pkt->daddr, pkt->sport, pkt->dport, pkt->proto);
}

/* The key of the half that translates replies to packets rewritten by `e`. */
static __always_inline void ct_key_mirror(struct ct_key *peer, const struct ct_entry *e, __u8 proto)
{
	ct_key_set(peer, e->daddr, e->saddr, e->dport, e->sport, proto);
}

/* The other half of (key, e): it restores the tuple of `key`, mirrored.
 * Sequence tracking is per half: the mirror starts without it. */
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

/* A pure SYN in the original direction of a flow that is past its own SYN:
 * a new connection on an old tuple, not a retransmission. */
static __always_inline int ct_tcp_reopens(const struct ct_entry *e, const struct v6nat_pkt *pkt)
{
	return pkt->proto == IPPROTO_TCP && tcp_is_syn(pkt) && e->dir == CT_DIR_ORIGINAL &&
	       e->tcp_state != CT_TCP_SYN_SENT;
}

/* The TCP state after this packet; tcp_flags updated in place. */
static __always_inline __u8 ct_tcp_next(__u8 state, __u8 *flags, __u8 dir, const struct v6nat_pkt *pkt)
{
	__u8 tcp = pkt->tcp_flags;

	if (tcp & TCP_FLAG_RST)
		return CT_TCP_CLOSED;
	if (tcp & TCP_FLAG_FIN) {
		*flags |= dir == CT_DIR_ORIGINAL ? CT_F_FIN_ORIGINAL : CT_F_FIN_REPLY;
		return (*flags & CT_F_FINS) == CT_F_FINS ? CT_TCP_CLOSED : CT_TCP_CLOSING;
	}
	if (state == CT_TCP_SYN_SENT && dir == CT_DIR_REPLY)
		return CT_TCP_ESTABLISHED;
	if (dir == CT_DIR_ORIGINAL && state != CT_TCP_SYN_SENT && tcp_is_syn(pkt)) {
		/* A new connection on a live tuple (the client lost the old
		 * one, or a forger): keep the state (a forged SYN must not cut
		 * a live flow's timeout), but its packets take the stack again
		 * until both directions pass it, so FORWARD/DOCKER-USER decide. */
		*flags &= ~CT_F_CONFIRMED;
	}
	return state;
}

/* seq within [lo, hi], modulo 2^32. */
static __always_inline int seq_between(__u32 seq, __u32 lo, __u32 hi)
{
	return seq - lo <= hi - lo;
}

static __always_inline int seq_after(__u32 a, __u32 b)
{
	return (__s32)(a - b) > 0;
}

/* A RST from the sender of half `e` is believed when its sequence lies
 * between the receiver's last acknowledgement (less a window for segments in
 * flight) and the sender's end: where a RST of the real endpoint lies (RFC
 * 5961 3.2). A sender not heard yet (the answer to a SYN) must acknowledge
 * exactly that SYN, as Linux conntrack asks in SYN_SENT. */
static __always_inline int tcp_rst_in_window(const struct ct_entry *e, const struct ct_entry *peer,
					     const struct v6nat_pkt *pkt)
{
	__u32 lo;

	if (!e->td_known)
		return !peer || !peer->td_known ||
		       ((pkt->tcp_flags & TCP_FLAG_ACK) && pkt->tcp_ack == peer->td_end);
	lo = (peer && (peer->td_known & TD_ACK_KNOWN)) ? peer->td_ack : e->td_end;
	return seq_between(pkt->tcp_seq, lo - V6NAT_RST_WINDOW, e->td_end + 1);
}

/* Follow this half's sender: the end of its highest segment, its highest ACK. */
static __always_inline void tcp_track(struct ct_entry *e, const struct v6nat_pkt *pkt)
{
	__u32 len = pkt->end - pkt->l4_off - pkt->tcp_hlen;
	__u32 end;

	if (pkt->tcp_flags & TCP_FLAG_RST)
		return;
	end = pkt->tcp_seq + len + !!(pkt->tcp_flags & TCP_FLAG_SYN) + !!(pkt->tcp_flags & TCP_FLAG_FIN);
	if (!e->td_known || seq_after(end, e->td_end))
		e->td_end = end;
	if ((pkt->tcp_flags & TCP_FLAG_ACK) &&
	    (!(e->td_known & TD_ACK_KNOWN) || seq_after(pkt->tcp_ack, e->td_ack))) {
		e->td_ack = pkt->tcp_ack;
		e->td_known |= TD_ACK_KNOWN;
	}
	e->td_known |= TD_SEQ_KNOWN;
}

/* Is the pair assured by this packet, i.e. did both ends take part in it?
 * TCP: the original side acknowledged the other's SYN (a blind forger of
 * the original side cannot: it never sees the SYN-ACK); UDP: the original
 * side spoke again after a reply; echo: the reply. As Linux's IPS_ASSURED. */
static __always_inline int ct_assured_by(const struct ct_entry *e, const struct ct_entry *peer, __u8 state,
					 __u8 flags, const struct v6nat_pkt *pkt)
{
	if (pkt->proto == IPPROTO_TCP)
		return e->dir == CT_DIR_ORIGINAL && state == CT_TCP_ESTABLISHED &&
		       (pkt->tcp_flags & TCP_FLAG_ACK) && (peer->td_known & TD_SEQ_KNOWN) &&
		       seq_between(pkt->tcp_ack, peer->td_end - V6NAT_RST_WINDOW, peer->td_end);
	if (pkt->proto == IPPROTO_UDP)
		return e->dir == CT_DIR_ORIGINAL && (flags & CT_F_REPLY_SEEN);
	return e->dir == CT_DIR_REPLY;
}

/* Move the pair (key, e) and (peer_key, peer) to the other table: into
 * conntrack once assured, back into ct_unassured once a TCP flow closed (so
 * closed flows churn there instead of pushing idle live ones out of the
 * LRU). Returns the half of `key` in its new place, or 0 when another flow
 * holds either key there (the pair is then given up). */
static __always_inline int ct_table_insert(struct ct_key *key, struct ct_entry *e, int assured)
{
	return assured ? conntrack.insert(key, e) : ct_unassured.insert(key, e);
}

static __always_inline void ct_table_delete(struct ct_key *key, int assured)
{
	if (assured)
		conntrack.delete(key);
	else
		ct_unassured.delete(key);
}

static __always_inline struct ct_entry *ct_move(struct ct_key *key, struct ct_entry *e, struct ct_key *peer_key,
						struct ct_entry *peer, int to_assured)
{
	e->tcp_flags = (e->tcp_flags & ~CT_F_UNASSURED) | (to_assured ? 0 : CT_F_UNASSURED);
	peer->tcp_flags = e->tcp_flags;
	if (ct_table_insert(peer_key, peer, to_assured))
		goto clash;
	if (ct_table_insert(key, e, to_assured)) {
		ct_table_delete(peer_key, to_assured);
		goto clash;
	}
	ct_table_delete(key, !to_assured);
	ct_table_delete(peer_key, !to_assured);
	return to_assured ? conntrack.lookup(key) : ct_unassured.lookup(key);
clash:
	ct_table_delete(key, !to_assured);
	ct_table_delete(peer_key, !to_assured);
	return 0;
}

/* Account a packet on half *ep at `hook`: sequence window, TCP state and the
 * stack's verdicts kept equal in both halves, the other half rebuilt when LRU
 * eviction took it (only where no other flow holds its key: a port is never
 * handed to two flows), and the pair moved between the tables (ct_move). Looking the
 * other half up on every packet also keeps it recently used, so a one-way
 * stream does not lose its quiet half. Returns 0 or a drop reason; *ep then
 * points to the half in its current table. */
static __always_inline int ct_account(struct __sk_buff *skb, __u32 hook, struct ct_key *key,
				      struct ct_entry **ep, const struct v6nat_pkt *pkt)
{
	struct ct_entry *e = *ep;
	struct ct_key peer_key;
	struct ct_entry *peer, *moved;
	__u8 e_state = e->tcp_state, state = e_state, flags = e->tcp_flags;
	int unassured = flags & CT_F_UNASSURED;

	ct_key_mirror(&peer_key, e, key->proto);
	peer = ct_lookup_in(&peer_key, unassured);
	if (key->proto == IPPROTO_TCP && pkt->frag != FRAG_LATER) {
		if ((pkt->tcp_flags & TCP_FLAG_RST) && !tcp_rst_in_window(e, peer, pkt))
			return V6NAT_DROP_TCP_WINDOW;
		tcp_track(e, pkt);
		state = ct_tcp_next(state, &flags, e->dir, pkt);
	}
	if (e->dir == CT_DIR_REPLY)
		flags |= CT_F_REPLY_SEEN;
	if (hook == V6NAT_HOOK_PUBLIC_EGRESS)
		flags |= CT_F_STACK_OUT;
	e->last_seen_ns = v6nat_now();
	__sync_fetch_and_add(&e->packets, 1);
	__sync_fetch_and_add(&e->bytes, skb->len);
	e->tcp_state = state;
	e->tcp_flags = flags;

	if (!peer) {
		peer = ct_entry_scratch();
		if (!peer)
			return V6NAT_DROP_CT_FULL;
		ct_entry_mirror(peer, key, e);
		if (ct_claim(&peer_key, peer, unassured))
			return V6NAT_DROP_CT_CLASH;
		v6nat_count(hook, V6NAT_ACT_CT_REBUILT);
		peer = ct_lookup_in(&peer_key, unassured);
		if (!peer)
			return V6NAT_DROP_CT_FULL;
	}
	peer->tcp_state = state;
	peer->tcp_flags = flags;
	if (unassured && ct_assured_by(e, peer, state, flags, pkt)) {
		moved = ct_move(key, e, &peer_key, peer, 1);
		v6nat_count(hook, V6NAT_ACT_CT_PROMOTED);
	} else if (!unassured && state == CT_TCP_CLOSED && e_state != CT_TCP_CLOSED) {
		moved = ct_move(key, e, &peer_key, peer, 0);
	} else {
		return 0;
	}
	if (!moved)
		return V6NAT_DROP_CT_CLASH;
	*ep = moved;
	return 0;
}

/* A packet that passed the stack toward a container (bridge egress): mark
 * its flow (found by the mirror of the packet's tuple: the container's
 * outward half) as accepted inward. Both directions accepted: fast path. */
static __always_inline void ct_mark_stack_in(const struct v6nat_pkt *pkt)
{
	struct ct_key key, peer_key;
	struct ct_entry *e, *peer;

	ct_key_set(&key, pkt->daddr, pkt->saddr, pkt->dport, pkt->sport, pkt->proto);
	e = ct_lookup(&key);
	if (!e || e->kind == CT_KIND_HAIRPIN || (e->tcp_flags & CT_F_STACK_IN))
		return;
	e->tcp_flags |= CT_F_STACK_IN;
	ct_key_mirror(&peer_key, e, pkt->proto);
	peer = ct_lookup(&peer_key);
	if (peer)
		peer->tcp_flags |= CT_F_STACK_IN;
}

#endif
