/* sock.c: the cgroup socket-address entry points of host-local access; the
 * logic is in lib/sock.h. Compiled together with v6nat.c (one bcc module, the
 * same pinned maps), loaded and attached to a cgroup v2 by
 * v6nat_ebpf/datapath/hostlocal.py.
 *
 * v6nat_sock_connect6      cgroup/connect6: TCP and connected UDP
 * v6nat_sock_sendmsg6      cgroup/sendmsg6: unconnected UDP
 * v6nat_sock_recvmsg6      cgroup/recvmsg6: the sender of a UDP reply
 * v6nat_sock_getpeername6  cgroup/getpeername6
 *
 * Each returns 1: the call goes on, translated or not; never refused. */
#include "lib/sock.h"

int v6nat_sock_connect6(struct bpf_sock_addr *ctx)
{
	sock_translate(ctx, 1);
	return 1;
}

int v6nat_sock_sendmsg6(struct bpf_sock_addr *ctx)
{
	sock_translate(ctx, 0);
	return 1;
}

int v6nat_sock_recvmsg6(struct bpf_sock_addr *ctx)
{
	sock_restore(ctx);
	return 1;
}

int v6nat_sock_getpeername6(struct bpf_sock_addr *ctx)
{
	sock_restore(ctx);
	return 1;
}
