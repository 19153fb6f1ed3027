/* stats.h: what the programs count besides the per-hook counters (common.h):
 * SNAT port claims by the candidates they took, and packets and bytes per
 * published mapping. */
#ifndef V6NAT_STATS_H
#define V6NAT_STATS_H

#include "lib/common.h"

static __always_inline void snat_tries_add(__u32 slot, __u64 n)
{
	__u64 *value = snat_tries.lookup(&slot);

	if (value)
		*value += n;
}

/* Count a successful claim that took `tries` candidates. */
static __always_inline void snat_tries_count(__u32 tries)
{
	_Static_assert(V6NAT_SNAT_TRIES == 16, "snat_tries buckets end at 16 tries");
	__u32 slot = tries == 1 ? V6NAT_TRIES_1 : tries <= 3 ? V6NAT_TRIES_2_3 :
		     tries <= 7 ? V6NAT_TRIES_4_7 : V6NAT_TRIES_8_16;

	snat_tries_add(slot, 1);
	snat_tries_add(V6NAT_TRIES_SUM, tries);
}

/* A new flow opens its mapping's stats entry (if absent); later packets only
 * add to it. The control plane deletes the entry with the dnat entry, so a
 * flow that outlives its mapping stops being counted instead of bringing the
 * entry back (which would leak it and let a republished mapping resume the
 * old totals). */
static __always_inline void mapping_open(__u32 mapping_id)
{
	struct mapping_stat zero = {};

	if (mapping_id)
		mapping_stats.insert(&mapping_id, &zero);
}

static __always_inline void mapping_account(struct __sk_buff *skb, __u32 mapping_id)
{
	struct mapping_stat *stat;

	if (!mapping_id)
		return;
	stat = mapping_stats.lookup(&mapping_id);
	if (!stat)
		return;
	stat->packets += 1;
	stat->bytes += skb->len;
}

#endif
