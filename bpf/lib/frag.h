/* frag.h: the ports of a fragmented datagram, remembered from its first
 * fragment for the ones that follow (which carry no upper-layer header). */
#ifndef V6NAT_FRAG_H
#define V6NAT_FRAG_H

#include "lib/common.h"
#include "lib/parse.h"

/* The fragments map's key of a packet. */
static __always_inline void frag_key_of_pkt(struct frag_key *key, const struct v6nat_pkt *pkt)
{
	__builtin_memset(key, 0, sizeof(*key));
	addr_copy(key->saddr, pkt->saddr);
	addr_copy(key->daddr, pkt->daddr);
	key->id = pkt->frag_id;
	key->proto = pkt->proto;
}

/* Remember a first fragment's ports for the fragments that follow it. */
static __always_inline void frag_remember(const struct v6nat_pkt *pkt)
{
	struct frag_key key;
	struct frag_ports ports = { .sport = pkt->sport, .dport = pkt->dport };

	if (pkt->frag != FRAG_FIRST)
		return;
	frag_key_of_pkt(&key, pkt);
	fragments.update(&key, &ports);
}

/* A later fragment: its ports from the first fragment, or -1. */
static __always_inline int frag_recall(struct v6nat_pkt *pkt)
{
	struct frag_key key;
	struct frag_ports *ports;

	frag_key_of_pkt(&key, pkt);
	ports = fragments.lookup(&key);
	if (!ports)
		return -1;
	pkt->sport = ports->sport;
	pkt->dport = ports->dport;
	return 0;
}

#endif
