/* sock.h: host-local access to published ports, in the socket layer.
 *
 * A process on the host that connects (or sends a datagram) to a published
 * (host address, port) never passes the TC hooks: its packets stay on the
 * host. The cgroup socket-address hooks (bpf/sock.c) translate the
 * destination once, at connect()/sendmsg(), to the container's address and
 * port; recvmsg()/getpeername() show the published address again. No packet
 * is rewritten, and no conntrack entry is made: the container sees the host's
 * own address on its bridge (the gateway) as the source.
 *
 * Only sockets of the network namespace v6nat serves are touched (netns
 * cookie in hostlocal_config); IPv4 and IPv4-mapped addresses never are. */
#ifndef V6NAT_SOCK_H
#define V6NAT_SOCK_H

#include "lib/common.h"
#include "lib/nat.h"

/* Declared here as bcc 0.26's helpers.h lacks the first and gives the
 * second a 32-bit result. */
static __u64 (*v6nat_netns_cookie)(void *ctx) = (void *)BPF_FUNC_get_netns_cookie;
static __u64 (*v6nat_socket_cookie)(void *ctx) = (void *)BPF_FUNC_get_socket_cookie;

#define V6NAT_AF_INET6 10

/* The socket is an IPv6 one of the namespace v6nat serves. */
static __always_inline int sock_is_ours(struct bpf_sock_addr *ctx)
{
	__u32 zero = 0;
	struct hostlocal_config *cfg = hostlocal_config.lookup(&zero);

	if (ctx->user_family != V6NAT_AF_INET6 || !cfg || !cfg->netns_cookie)
		return 0;
	return v6nat_netns_cookie(ctx) == cfg->netns_cookie;
}

static __always_inline void sock_addr_read(struct bpf_sock_addr *ctx, __u8 *addr)
{
	__u32 *words = (__u32 *)addr;

	words[0] = ctx->user_ip6[0];
	words[1] = ctx->user_ip6[1];
	words[2] = ctx->user_ip6[2];
	words[3] = ctx->user_ip6[3];
}

static __always_inline void sock_addr_write(struct bpf_sock_addr *ctx, const __u8 *addr, __be16 port)
{
	const __u32 *words = (const __u32 *)addr;

	ctx->user_ip6[0] = words[0];
	ctx->user_ip6[1] = words[1];
	ctx->user_ip6[2] = words[2];
	ctx->user_ip6[3] = words[3];
	ctx->user_port = (__u32)port;
}

static __always_inline int addr_is_loopback(const __u8 *a)
{
	const __u64 *x = (const __u64 *)a;

	return x[0] == 0 && x[1] == 0x0100000000000000ULL; /* ::1, network order */
}

static __always_inline int addr_is_v4mapped(const __u8 *a)
{
	const __u32 *x = (const __u32 *)a;

	return x[0] == 0 && x[1] == 0 && x[2] == v6_htonl(0xffff);
}

/* The published port a destination names: an exact binding (a host address,
 * or ::1 for host-only use) first, then a binding to every address, which
 * covers the host's public addresses and ::1 (where Docker's own proxy
 * listened on [::]). Any other address is not ours. */
static __always_inline struct dnat_target *sock_published(__u8 proto, const __u8 *addr, __be16 port)
{
	struct dnat_key key = {};
	struct dnat_target *target;

	addr_copy(key.host_addr, addr);
	key.host_port = port;
	key.proto = proto;
	target = dnat.lookup(&key);
	if (target || !(addr_is_loopback(addr) || is_host_addr(addr)))
		return target;
	__builtin_memset(key.host_addr, 0, sizeof(key.host_addr));
	return dnat.lookup(&key);
}

static __always_inline void hostlocal_count(__u32 mapping_id, int is_connect)
{
	struct hostlocal_stat zero = {}, *stat;

	if (!mapping_id)
		return;
	stat = hostlocal_stats.lookup(&mapping_id);
	if (!stat) {
		hostlocal_stats.insert(&mapping_id, &zero);
		stat = hostlocal_stats.lookup(&mapping_id);
		if (!stat)
			return;
	}
	if (is_connect)
		stat->connects += 1;
	else
		stat->sendmsgs += 1;
}

/* connect6 and sendmsg6: a published destination becomes the container's,
 * and the socket remembers what it asked for. */
static __always_inline void sock_translate(struct bpf_sock_addr *ctx, int is_connect)
{
	struct hostlocal_sock_key key = {};
	struct hostlocal_published asked = {};
	struct dnat_target *target;
	__u8 proto = ctx->protocol;

	if (!sock_is_ours(ctx) || (proto != IPPROTO_TCP && proto != IPPROTO_UDP))
		return;
	sock_addr_read(ctx, asked.addr);
	asked.port = (__be16)ctx->user_port;
	if (addr_is_v4mapped(asked.addr))
		return;
	target = sock_published(proto, asked.addr, asked.port);
	if (!target)
		return;
	key.sock_cookie = v6nat_socket_cookie(ctx);
	addr_copy(key.addr, target->addr);
	key.port = target->port;
	hostlocal_socks.update(&key, &asked);
	sock_addr_write(ctx, target->addr, target->port);
	hostlocal_count(target->mapping_id, is_connect);
}

/* recvmsg6 and getpeername6: a container's address this socket was sent to
 * by sock_translate shows as the published address it asked for. */
static __always_inline void sock_restore(struct bpf_sock_addr *ctx)
{
	struct hostlocal_sock_key key = {};
	struct hostlocal_published *asked;

	if (!sock_is_ours(ctx))
		return;
	key.sock_cookie = v6nat_socket_cookie(ctx);
	sock_addr_read(ctx, key.addr);
	key.port = (__be16)ctx->user_port;
	asked = hostlocal_socks.lookup(&key);
	if (asked)
		sock_addr_write(ctx, asked->addr, asked->port);
}

#endif
