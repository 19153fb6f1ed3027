/* v6nat.h: the one place for every map's key and value, constants, flags,
 * counters and drop reasons shared by the TC programs and the control plane.
 *
 * Python mirrors these structs once, in v6nat_ebpf/datapath/layout.py, and
 * tests/datapath/test_layout.py checks that mirror against what the compiler
 * produced. The X-macro lists (V6NAT_ACTIONS, V6NAT_DROP_REASONS, V6NAT_HOOKS)
 * are read by layout.py straight from this file, so names live only here.
 *
 * Byte order: addresses and ports are kept in network byte order everywhere
 * (keys, values), so the fast path never converts; config values are host order.
 * Every struct is padded explicitly (`_pad`) and the programs zero the padding
 * of a key before a lookup: an uninitialised pad byte is a lookup miss.
 *
 * Changing any struct below means bumping V6NAT_LAYOUT_VERSION: maps are pinned
 * under <pin_path>/v<LAYOUT_VERSION>/ and the loader refuses other versions.
 */
#ifndef V6NAT_H
#define V6NAT_H

#define V6NAT_LAYOUT_VERSION 8

/* Map capacities: defaults, overridable with -D by the loader. */
#ifndef V6NAT_CT_MAX
#define V6NAT_CT_MAX 262144
#endif
#ifndef V6NAT_DNAT_MAX
#define V6NAT_DNAT_MAX 65536
#endif
#define V6NAT_NETWORKS_MAX 1024
#define V6NAT_PUBLIC_IFACES_MAX 64
#define V6NAT_HOST_ADDRS_MAX 1024
#define V6NAT_FRAGS_MAX 8192
#define V6NAT_MAPPINGS_MAX V6NAT_DNAT_MAX
/* Flows that are not assured (both ends have not yet taken part: no TCP
 * handshake completed) and closed TCP flows live in a table of their own, so
 * that a flood of them (spoofed SYNs, one-way datagrams) or the churn of short
 * connections can only evict each other, never an idle live flow (what Linux
 * protects as IPS_ASSURED). The loader passes layout.ct_unassured_max(
 * V6NAT_CT_MAX), the same quarter. */
#ifndef V6NAT_CT_UNASSURED_MAX
#define V6NAT_CT_UNASSURED_MAX (V6NAT_CT_MAX / 4)
#endif
#define V6NAT_VETHS_MAX 4096
#define V6NAT_VETH_ADDRS 4
/* Source policy (issue 16, lib/policy.h): prefixes of every published
 * mapping's allow/deny lists together, and bans. */
#define V6NAT_POLICY_MAX 262144
#define V6NAT_BANS_MAX 65536

/* tc hooks, the first index of the counters map. */
#define V6NAT_HOOKS(X)                                                         \
	X(PUBLIC_INGRESS, public_ingress)                                      \
	X(PUBLIC_EGRESS, public_egress)                                        \
	X(BRIDGE_INGRESS, bridge_ingress)                                      \
	X(VETH_INGRESS, veth_ingress)                                          \
	X(BRIDGE_EGRESS, bridge_egress)

/* What a program did with a packet (one counter each, per hook). */
#define V6NAT_ACTIONS(X)                                                       \
	X(PASS, pass)                 /* not ours: left untouched */           \
	X(DNAT, dnat)                 /* published port, original direction */ \
	X(SNAT, snat)                 /* masquerade, original direction */     \
	X(HAIRPIN, hairpin)           /* container -> host addr:published */   \
	X(REVERSE, reverse)           /* a reply translated back */            \
	X(ICMP_ERROR, icmp_error)     /* an ICMPv6 error quoting a flow */     \
	X(FRAGMENT, fragment)         /* a non-first fragment of a flow */     \
	X(NEW_FLOW, new_flow)         /* a conntrack pair created */           \
	X(CT_REBUILT, ct_rebuilt)     /* a half lost to eviction rebuilt */    \
	X(MALFORMED, malformed)       /* unparsable: passed untranslated */    \
	X(REDIRECT, redirect)         /* fast path: sent straight to the iface */ \
	X(REDIRECT_PEER, redirect_peer) /* fast path: straight into the container */ \
	X(FIB_MISS, fib_miss)         /* fast path: no usable route, to stack */ \
	X(TO_STACK, to_stack)         /* fast path declined: left to the stack */ \
	X(CT_PROMOTED, ct_promoted)   /* a flow assured: out of ct_unassured */ \
	X(CT_RESTARTED, ct_restarted) /* a SYN on a closed tuple: a new flow */ \
	X(FULL_CONE, full_cone)       /* unsolicited UDP let in by an endpoint-independent filter */

/* Why a packet was dropped. Every TC_ACT_SHOT goes through v6nat_drop(). */
#define V6NAT_DROP_REASONS(X)                                                  \
	X(DIRECT_ULA, direct_ula)         /* from outside straight to a NAT'd network (ULA or global) */ \
	X(INTERNAL_EGRESS, internal_egress) /* internal network leaving a public iface */  \
	X(NO_SNAT_ADDR, no_snat_addr)     /* masquerade, but no source address known */  \
	X(PORTS_EXHAUSTED, ports_exhausted) /* no free SNAT port after bounded tries */   \
	X(TCP_NO_FLOW, tcp_no_flow)       /* masqueraded TCP that is no SYN and no flow */ \
	X(UNSUPPORTED, unsupported)       /* masqueraded packet we cannot translate */    \
	X(FRAG_NO_FIRST, frag_no_first)   /* masqueraded fragment, first one unseen */    \
	X(EXTHDR_LIMIT, exthdr_limit)     /* masqueraded packet, too many ext headers */  \
	X(CT_FULL, ct_full)               /* conntrack insert failed */                   \
	X(REWRITE_FAILED, rewrite_failed) /* packet store / checksum helper failed */ \
	X(ICC_BLOCKED, icc_blocked)       /* container to container, network without ICC */ \
	X(SPOOFED_SOURCE, spoofed_source) /* a container's packet with a source not its own */ \
	X(VETH_UNKNOWN, veth_unknown)     /* a veth the control plane has not described */ \
	X(BOGON_SOURCE, bogon_source)     /* from outside with an internal or impossible source */ \
	X(ISOLATION, isolation)           /* between networks, or out of an internal one */ \
	X(CT_CLASH, ct_clash)             /* a new half would overwrite another flow's */ \
	X(BAD_CHECKSUM, bad_checksum)     /* would create or change a flow, L4 checksum wrong */ \
	X(TCP_WINDOW, tcp_window)         /* RST outside the tracked sequence window */ \
	X(ICMP_FOREIGN, icmp_foreign)     /* an error about another endpoint's flow */ \
	X(UNPUBLISHED, unpublished)       /* from outside to a routed network, port not published */ \
	X(POLICY, policy)                 /* a new flow the mapping's allow/deny lists refuse */ \
	X(BANNED, banned)                 /* from a banned source (v6nat ban), new or established */

#define V6NAT_ENUM_ACTION(id, name) V6NAT_ACT_##id,
#define V6NAT_ENUM_DROP(id, name) V6NAT_DROP_##id,
#define V6NAT_ENUM_HOOK(id, name) V6NAT_HOOK_##id,

/* Counter index = hook * V6NAT_COUNTER_MAX + counter; drops follow actions. */
enum v6nat_counter {
	V6NAT_ACTIONS(V6NAT_ENUM_ACTION)
	V6NAT_DROP_REASONS(V6NAT_ENUM_DROP)
	V6NAT_COUNTER_MAX
};

enum v6nat_hook {
	V6NAT_HOOKS(V6NAT_ENUM_HOOK)
	V6NAT_HOOK_MAX
};

/* config: ARRAY of one record, written by the control plane (set_config). */
struct v6nat_config {
	__u64 tcp_established_ns;
	__u64 tcp_transitory_ns;
	__u64 udp_ns;
	__u64 icmp_ns;
	__u16 snat_port_min; /* host order, inclusive */
	__u16 snat_port_max;
	__u32 flags; /* V6NAT_CFG_* */
	/* The secret of the SNAT port an internal endpoint prefers (lib/nat.h,
	 * nat_mapping_port): random, kept across daemon restarts. */
	__u32 port_salt;
	__u32 _pad;
};

/* config.flags */
#define V6NAT_CFG_FAST_PATH 0x1 /* redirect established flows past the stack */

/* dnat: a published port (Docker's `-p [host_addr:]host_port:port`), written
 * by the control plane. host_addr all-zero means any of host_addrs. In a
 * network of gateway mode `routed` a published port is the container's own
 * (address, port): host_addr is the container's address and the target the
 * same address and port (no translation; looked up exactly, lib/gateway.h). */
struct dnat_key {
	__u8 host_addr[16];
	__be16 host_port;
	__u8 proto; /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 _pad;
};

struct dnat_target {
	__u8 addr[16]; /* the container's ULA address */
	__be16 port;
	__u16 policy_flags; /* V6NAT_POLICY_* */
	__u32 mapping_id; /* index into mapping_stats, chosen by the control plane */
	__u32 policy_id;  /* the mapping's rules in `policy`; 0: none, every source may connect */
};

/* dnat_target.policy_flags */
#define V6NAT_POLICY_DEFAULT_DENY 0x1 /* a source no rule matches is refused (an allowlist is in force) */

/* policy: LPM trie of source rules, written by the control plane. A rule
 * belongs to one policy_id (mappings with equal rules share one); the
 * longest prefix of the source decides, else the mapping's default. The
 * control plane leaves out allow prefixes inside a deny prefix, so one
 * lookup gives "deny, then allow, then default". */
struct policy_key {
	__u32 prefixlen; /* 32 + the source prefix length */
	__u32 policy_id;
	__u8 addr[16];
};

#define V6NAT_RULE_ALLOW 1
#define V6NAT_RULE_DENY 2

struct policy_rule {
	__u32 verdict; /* V6NAT_RULE_* */
};

/* bans: LPM trie of banned sources, written by `v6nat ban` (the CLI opens
 * the pinned map itself; the daemon only prunes expired entries). port and
 * proto zero: every port of every container; else only the published port
 * (host port) `port`/`proto`. */
struct ban_key {
	__u32 prefixlen; /* 32 + the source prefix length */
	__be16 port;
	__u8 proto;
	__u8 _pad;
	__u8 addr[16];
};

struct ban_info {
	__u64 expires_ns; /* CLOCK_BOOTTIME (bpf_ktime_get_boot_ns); 0: never */
	__u64 created_s;  /* Unix time, for `v6nat bans` */
	__u32 prefixlen;  /* the key's: a lookup that hits an expired ban retries shorter ones */
	__u32 _pad;
};

/* ban_state: ARRAY of one record, written by `v6nat ban` after each new ban.
 * A flow's half remembers the generation it was last checked at
 * (ct_entry.ban_gen): established flows look the bans up only when it moved. */
struct ban_state {
	__u32 generation; /* 0: no ban was ever written */
	__u32 _pad;
};

/* networks: a managed Docker network's IPv6 prefix, ULA or global (LPM trie
 * key), written by the control plane. */
struct network_key {
	__u32 prefixlen;
	__u8 addr[16];
};

#define V6NAT_NET_MASQUERADE 0x1 /* SNAT to a public address when leaving */
#define V6NAT_NET_ICC 0x2        /* containers of the network may talk */
#define V6NAT_NET_INTERNAL 0x4   /* never leaves via a public interface */
/* Docker's gateway modes (com.docker.network.bridge.gateway_mode_ipv6); none
 * of these set is `nat`. `isolated` also sets INTERNAL. */
#define V6NAT_NET_ROUTED 0x8      /* no NAT; from outside only published container ports */
#define V6NAT_NET_UNPROTECTED 0x10 /* nat-unprotected: NAT, and any port reachable directly */
#define V6NAT_NET_ISOLATED 0x20   /* nothing in or out, the host included */
#define V6NAT_NET_UDP_EIF 0x40   /* UDP filtering endpoint-independent (full cone), RFC 4787 REQ-8 */

struct network_info {
	__u8 snat_addr[16]; /* all-zero: the public interface's snat_addr */
	__u8 gateway[16];   /* the bridge's address in the prefix; all-zero: none */
	__u32 network_id;
	__u32 bridge_ifindex;
	__u32 flags; /* V6NAT_NET_* */
	__u32 _pad;
};

/* public_ifaces: key __u32 ifindex, written by the control plane. */
struct public_iface {
	__u8 snat_addr[16]; /* the interface's primary global address */
};

/* host_addrs: key = 16-byte address; every global address of the public
 * interfaces (DNAT applies to these only), written by the control plane. */
struct host_addr_info {
	__u32 ifindex;
};

/* conntrack: one half of a translated flow, keyed by the tuple of a packet as
 * it arrives at the hook that translates it (before translation). Both halves
 * are written by the programs when a flow starts; the value says what a
 * matching packet becomes. ICMPv6 echo: request sport=id dport=0, reply sport=0
 * dport=id, so the reply key is the plain mirror of the request key. */
struct ct_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 _pad[3];
};

enum ct_kind {
	CT_KIND_DNAT = 1,    /* published port: original at public ingress */
	CT_KIND_SNAT = 2,    /* masquerade: original at public egress */
	CT_KIND_HAIRPIN = 3, /* both halves at bridge ingress */
};

enum ct_dir {
	CT_DIR_ORIGINAL = 0, /* the direction that created the flow */
	CT_DIR_REPLY = 1,
};

enum ct_tcp_state {
	CT_TCP_NONE = 0,        /* not TCP */
	CT_TCP_SYN_SENT = 1,    /* SYN seen, no reply yet: transitory timeout */
	CT_TCP_ESTABLISHED = 2, /* reply seen: established timeout */
	CT_TCP_CLOSING = 3,     /* FIN seen one way: transitory timeout */
	CT_TCP_CLOSED = 4,      /* FIN both ways or RST: transitory timeout */
};

#define CT_F_FIN_ORIGINAL 0x1
#define CT_F_FIN_REPLY 0x2
#define CT_F_FINS (CT_F_FIN_ORIGINAL | CT_F_FIN_REPLY)
#define CT_F_REPLY_SEEN 0x4  /* a reply was seen */
#define CT_F_STACK_IN 0x8    /* a packet toward the container left the stack (bridge egress) */
#define CT_F_STACK_OUT 0x10  /* a packet from the container left the stack (public egress) */
#define CT_F_CONFIRMED (CT_F_STACK_IN | CT_F_STACK_OUT) /* the fast path may carry it */
#define CT_F_UNASSURED 0x20  /* the pair lives in ct_unassured */

/* ct_entry.td_known (per half, not kept equal) */
#define TD_SEQ_KNOWN 0x1 /* td_end */
#define TD_ACK_KNOWN 0x2 /* td_ack */

struct ct_entry {
	__u8 saddr[16]; /* the packet's new source */
	__u8 daddr[16]; /* the packet's new destination */
	__be16 sport;
	__be16 dport;
	__u8 kind;      /* enum ct_kind */
	__u8 dir;       /* enum ct_dir */
	__u8 tcp_state; /* enum ct_tcp_state, kept equal in both halves */
	__u8 tcp_flags; /* CT_F_* (all protocols), kept equal in both halves */
	__u32 mapping_id; /* DNAT/hairpin: the published mapping; else 0 */
	__u32 fib_ifindex;  /* fast path route cache: output interface; 0 = none */
	__u64 created_ns;   /* CLOCK_MONOTONIC_COARSE (v6nat_now()) */
	__u64 last_seen_ns; /* this half's last packet */
	__u64 packets;      /* this half's packets */
	__u64 bytes;        /* this half's bytes (skb->len) */
	/* The fast path route cache: the FIB's answer for this half's packets,
	 * written by the program after a full lookup, used for small packets
	 * arriving on fib_iif until fib_until_ns (see lib/fib.h). */
	__u8 fib_nexthop[16];
	__u32 fib_iif;
	/* Delivery straight into the container (lib/fib.h, fast_path_peer).
	 * The inward half (packets toward the container: DNAT original, SNAT
	 * reply) keeps the host side of the container's veth and the Ethernet
	 * header to write, learned from the container's own packets at veth
	 * ingress; peer_until_ns is when that stops being trusted. The outward
	 * half keeps in peer_until_ns only when the inward one was last taught,
	 * so the container's packets look the inward half up once in a while,
	 * not every time. */
	__u32 peer_ifindex;
	__u64 fib_until_ns;
	__u8 peer_macs[12]; /* destination (the container), then source (the bridge) */
	/* TCP sequence tracking of this half's sender (host order): the end of
	 * the highest segment sent (seq + length, SYN and FIN count one) and the
	 * highest acknowledgement sent. A RST is believed only near them. */
	__u32 td_end;
	__u32 td_ack;
	__u8 td_known; /* TD_* */
	__u8 _pad;
	/* Public ingress halves: the low 16 bits of the ban_state generation
	 * this flow's source was last found unbanned at (lib/policy.h; never 0
	 * once a ban was written, so a half made before any ban looks). */
	__u16 ban_gen;
	__u64 peer_until_ns;
};

/* A RST's sequence may lag the receiver's last acknowledgement by this much
 * (segments in flight, reordering); beyond, and beyond the sender's end, it
 * is a blind guess (RFC 5961). */
#define V6NAT_RST_WINDOW 65535

/* How long a cached fast path route is used before the FIB is asked again:
 * a route, interface or network change reaches established flows within it. */
#define V6NAT_FIB_CACHE_NS 100000000ULL

/* How long a learned delivery into a container is used after the container's
 * last packet taught it: a veth moved or replaced (same address, new port)
 * gets packets through the bridge again within it. */
#define V6NAT_PEER_CACHE_NS 1000000000ULL

/* veths: key __u32 ifindex of the host side of a container's veth, written
 * by the control plane before it attaches the veth program. What the port
 * may send: its container's addresses (plus link-local and, for DAD, the
 * unspecified one), and which network and bridge it belongs to. */
struct veth_info {
	__u8 addrs[V6NAT_VETH_ADDRS * 16]; /* 16 bytes each; unused slots all-zero */
	__u32 network_id;
	__u32 bridge_ifindex;
	__u32 net_flags;    /* V6NAT_NET_* of the network */
	__u8 bridge_mac[6]; /* frames to any other unicast MAC go to a sibling */
	__u16 _pad;
};

/* fragments: the ports of a fragmented datagram, written by the program that
 * saw its first fragment, read for the following ones. */
struct frag_key {
	__u8 saddr[16];
	__u8 daddr[16];
	__be32 id;
	__u8 proto;
	__u8 _pad[3];
};

struct frag_ports {
	__be16 sport;
	__be16 dport;
};

/* mapping_stats: PERCPU_HASH, key __u32 mapping_id. Created by the program
 * that starts a flow of the mapping, added to by every packet of its flows;
 * deleted by the control plane together with the mapping's dnat entry. */
struct mapping_stat {
	__u64 packets;
	__u64 bytes;
	__u64 policy_drops; /* new flows refused by the mapping's rules */
};

/* ---- host-local access (bpf/sock.c, lib/sock.h): cgroup socket hooks ---- */

/* Sockets whose published-address translation is remembered (LRU). */
#define V6NAT_HOSTLOCAL_SOCKS_MAX 65536

/* hostlocal_config: ARRAY of one record, written by the control plane. The
 * socket hooks act only on sockets of the network namespace with this cookie
 * (SO_NETNS_COOKIE); 0 = none, the hooks leave every socket alone. */
struct hostlocal_config {
	__u64 netns_cookie;
};

/* hostlocal_socks: what a socket asked for, written by connect6/sendmsg6 when
 * they send it to a container, read by recvmsg6/getpeername6 to show the
 * published address again. Keyed by the socket's cookie (never reused while
 * the system runs) and the container's address and port. */
struct hostlocal_sock_key {
	__u64 sock_cookie;
	__u8 addr[16]; /* the container's address */
	__be16 port;
	__u16 _pad[3];
};

struct hostlocal_published {
	__u8 addr[16]; /* the address the socket asked for (a host address or ::1) */
	__be16 port;
	__u16 _pad[3];
};

/* hostlocal_stats: PERCPU_HASH, key __u32 mapping_id; created by the hooks,
 * deleted by the control plane with the mapping's dnat entry. */
struct hostlocal_stat {
	__u64 connects; /* connect() (TCP, connected UDP) sent to the container */
	__u64 sendmsgs; /* unconnected UDP datagrams sent to the container */
};
/* ---- end host-local access ---- */

/* nat_mappings: LRU hash, written by the programs for networks with
 * V6NAT_NET_UDP_EIF: an external UDP address and port -> the internal
 * endpoint that holds it, and the remote endpoint of that endpoint's newest
 * outbound flow. The mapping lets unsolicited datagrams in only while that
 * flow lives (its conntrack pair: forgotten with the container), so a port a
 * container never opened outward, or stopped using, is never open. */
struct nat_mapping_key {
	__u8 nat_addr[16];
	__be16 port;
	__u8 proto;
	__u8 _pad;
};

struct nat_mapping {
	__u8 addr[16];   /* the internal endpoint */
	__u8 remote[16]; /* the remote endpoint of its newest outbound flow */
	__be16 port;
	__be16 remote_port;
	__u32 _pad;
};

#define V6NAT_NAT_MAPPINGS_MAX 16384

/* ---- trace: `v6nat trace` (lib/trace.h) ---------------------------------- */

/* trace_filter: ARRAY of one record, written by `v6nat trace` while it runs and
 * put back as it was when it stops. Off (flags without V6NAT_TRACE_ON, or
 * expires_ns passed) the programs pay one lookup and one test per packet. The
 * tracer renews expires_ns while it reads, so a killed tracer turns itself off.
 * Every condition set must hold (zero fields match anything). */
struct trace_filter {
	__u8 addr[16];      /* either end, before or after translation, ... */
	__u32 prefixlen;    /* ... within this prefix; 0: any address */
	__u32 mapping_id;   /* the flow's published mapping; 0: any */
	__be16 port;        /* either end, before or after translation; 0: any */
	__u8 proto;         /* 0: any */
	__u8 _pad;
	__u32 flags;        /* V6NAT_TRACE_* */
	__u32 rate;         /* events per second and CPU at most (the rest: limited) */
	__u32 _pad2;
	__u64 expires_ns;   /* v6nat_now() from which the filter is off */
};

#define V6NAT_TRACE_ON 0x1
#define V6NAT_TRACE_DROPS 0x2 /* only packets the programs drop */

/* trace_events: RINGBUF of V6NAT_TRACE_RING_BYTES; one record per packet per
 * hook that matched the filter, written by the programs. */
#define V6NAT_TRACE_RING_BYTES 262144 /* 256 KiB */
#define V6NAT_TRACE_NO_DROP 0xffff

struct trace_event {
	__u64 ts_ns;         /* v6nat_now() */
	__u8 saddr[16];      /* the tuple as the packet arrived at the hook */
	__u8 daddr[16];
	__u8 new_saddr[16];  /* the tuple as the packet left the program */
	__u8 new_daddr[16];
	__be16 sport;
	__be16 dport;
	__be16 new_sport;
	__be16 new_dport;
	__s32 verdict;       /* the TC action returned (TC_ACT_*) */
	__u32 ifindex;
	__u32 mapping_id;    /* of the flow found for the arriving tuple; 0: none */
	__u16 drop_reason;   /* V6NAT_DROP_* for TC_ACT_SHOT, else V6NAT_TRACE_NO_DROP */
	__u8 hook;           /* enum v6nat_hook */
	__u8 proto;
	__u8 kind;           /* enum ct_kind of that flow; 0: none */
	__u8 dir;            /* enum ct_dir of that flow's half */
	__u8 _pad[6];
};

/* trace_state: PERCPU_ARRAY of one record, written by the programs: the last
 * drop reason of this CPU (v6nat_drop writes it; the trace reads it back for
 * the packet it just dropped) and the rate limit's window and losses. */
struct trace_state {
	__u64 window_ns;     /* start of the current one-second window */
	__u32 sent;          /* events sent in it */
	__u32 drop_reason;   /* V6NAT_DROP_* of this CPU's last drop */
	__u64 limited;       /* events not sent: over the rate */
	__u64 lost;          /* events not sent: ring buffer full */
};

/* ---- end of trace ---------------------------------------------------------- */

/* SNAT port allocation: candidates tried before giving up (exhaustion). */
#define V6NAT_SNAT_TRIES 16

/* snat_tries: PERCPU_ARRAY, key __u32 slot, value __u64; written by the
 * programs. Successful port claims (masquerade and hairpin) by the number of
 * candidates tried, in buckets named by their bounds (the last bound is
 * V6NAT_SNAT_TRIES), and the tries of all of them added up. A claim that
 * fails every try is the ports_exhausted drop instead. */
enum v6nat_tries_slot {
	V6NAT_TRIES_1 = 0, /* the preferred port was free */
	V6NAT_TRIES_2_3 = 1,
	V6NAT_TRIES_4_7 = 2,
	V6NAT_TRIES_8_16 = 3,
	V6NAT_TRIES_SUM = 4,
	V6NAT_TRIES_SLOTS = 5,
};
/* Extension headers walked before giving up. */
#define V6NAT_MAX_EXTHDRS 6

#endif /* V6NAT_H */
