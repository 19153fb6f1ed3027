/* common.h: includes, byte order, address helpers, and the
 * one place where packets are counted and dropped (v6nat_count, v6nat_drop).
 * Maps are declared in maps.h; this file needs them for the counters. */
#ifndef V6NAT_COMMON_H
#define V6NAT_COMMON_H

#include <uapi/linux/bpf.h>
#include <uapi/linux/pkt_cls.h>
#include <uapi/linux/if_ether.h>
#include <uapi/linux/in.h>

#include "v6nat.h"
#include "lib/maps.h"

/* The BPF target here is little-endian (x86-64); byte order is explicit. */
#define v6_htons(x) ((__be16)__builtin_bswap16((__u16)(x)))
#define v6_ntohs(x) ((__u16)__builtin_bswap16((__u16)(x)))
#define v6_htonl(x) ((__be32)__builtin_bswap32((__u32)(x)))

/* What the programs return for every packet they do not drop: the next
 * filter (another tool's) still runs, then the stack. */
#define V6NAT_CONTINUE TC_ACT_UNSPEC

static __always_inline void v6nat_count(__u32 hook, __u32 counter)
{
	__u32 idx = hook * V6NAT_COUNTER_MAX + counter;
	__u64 *value = counters.lookup(&idx);

	if (value)
		*value += 1;
}

/* lib/trace.h: the reason `v6nat trace` shows for this packet. */
static __always_inline void trace_note_drop(__u32 reason);

static __always_inline int v6nat_drop(__u32 hook, __u32 reason)
{
	v6nat_count(hook, reason);
	trace_note_drop(reason);
	return TC_ACT_SHOT;
}

static __always_inline int v6nat_pass(__u32 hook)
{
	v6nat_count(hook, V6NAT_ACT_PASS);
	return V6NAT_CONTINUE;
}

/* CLOCK_MONOTONIC_COARSE (at most a tick behind CLOCK_MONOTONIC): flow ages
 * and cache deadlines need no finer time, and it reads no clock source (the
 * fine clock's read_tsc showed in profiles of new connections). Declared here
 * as bcc 0.26's helpers.h may lack it. */
static __u64 (*v6nat_ktime_coarse)(void) = (void *)BPF_FUNC_ktime_get_coarse_ns;

static __always_inline __u64 v6nat_now(void)
{
	return v6nat_ktime_coarse();
}

static __always_inline int addr_equal(const __u8 *a, const __u8 *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1];
}

static __always_inline int addr_is_zero(const __u8 *a)
{
	const __u64 *x = (const __u64 *)a;

	return (x[0] | x[1]) == 0;
}

static __always_inline int mac_equal(const __u8 *a, const __u8 *b)
{
	return *(const __u32 *)a == *(const __u32 *)b && *(const __u16 *)(a + 4) == *(const __u16 *)(b + 4);
}

static __always_inline void addr_copy(__u8 *dst, const __u8 *src)
{
	__builtin_memcpy(dst, src, 16);
}

#endif
