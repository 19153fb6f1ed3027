/* maps.h: every map, pinned under V6NAT_PIN_DIR (set by the loader with -D,
 * <pin_path>/v<LAYOUT_VERSION>). Layouts live in v6nat.h. bcc reuses a pinned
 * map without checking it: the loader checks type and sizes before compiling. */
#ifndef V6NAT_MAPS_H
#define V6NAT_MAPS_H

#ifndef V6NAT_PIN_DIR
#error "V6NAT_PIN_DIR must be defined by the loader"
#endif
#define V6NAT_PIN(name) V6NAT_PIN_DIR "/" #name

/* Only to give a 16-byte address a type as a map key. */
struct host_addr_key {
	__u8 addr[16];
};

BPF_TABLE_PINNED("array", __u32, struct v6nat_config, config, 1, V6NAT_PIN(config));
BPF_TABLE_PINNED("hash", struct dnat_key, struct dnat_target, dnat, V6NAT_DNAT_MAX,
		 V6NAT_PIN(dnat));
BPF_TABLE_PINNED("lpm_trie", struct network_key, struct network_info, networks,
		 V6NAT_NETWORKS_MAX, V6NAT_PIN(networks), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("hash", __u32, struct public_iface, public_ifaces, V6NAT_PUBLIC_IFACES_MAX,
		 V6NAT_PIN(public_ifaces));
BPF_TABLE_PINNED("hash", struct host_addr_key, struct host_addr_info, host_addrs,
		 V6NAT_HOST_ADDRS_MAX, V6NAT_PIN(host_addrs));
BPF_TABLE_PINNED("lru_hash", struct ct_key, struct ct_entry, conntrack, V6NAT_CT_MAX,
		 V6NAT_PIN(conntrack));
BPF_TABLE_PINNED("lru_hash", struct ct_key, struct ct_entry, ct_unassured, V6NAT_CT_UNASSURED_MAX,
		 V6NAT_PIN(ct_unassured));
BPF_TABLE_PINNED("hash", __u32, struct veth_info, veths, V6NAT_VETHS_MAX, V6NAT_PIN(veths));
BPF_TABLE_PINNED("lru_hash", struct frag_key, struct frag_ports, fragments, V6NAT_FRAGS_MAX,
		 V6NAT_PIN(fragments));
BPF_TABLE_PINNED("percpu_array", __u32, __u64, counters, V6NAT_HOOK_MAX * V6NAT_COUNTER_MAX,
		 V6NAT_PIN(counters));
BPF_TABLE_PINNED("percpu_hash", __u32, struct mapping_stat, mapping_stats, V6NAT_MAPPINGS_MAX,
		 V6NAT_PIN(mapping_stats));
BPF_TABLE_PINNED("percpu_array", __u32, __u64, snat_tries, V6NAT_TRIES_SLOTS, V6NAT_PIN(snat_tries));
/* host-local access (lib/sock.h) */
BPF_TABLE_PINNED("array", __u32, struct hostlocal_config, hostlocal_config, 1, V6NAT_PIN(hostlocal_config));
BPF_TABLE_PINNED("lru_hash", struct hostlocal_sock_key, struct hostlocal_published, hostlocal_socks,
		 V6NAT_HOSTLOCAL_SOCKS_MAX, V6NAT_PIN(hostlocal_socks));
BPF_TABLE_PINNED("percpu_hash", __u32, struct hostlocal_stat, hostlocal_stats, V6NAT_MAPPINGS_MAX,
		 V6NAT_PIN(hostlocal_stats));
/* source policy (lib/policy.h) */
BPF_TABLE_PINNED("lpm_trie", struct policy_key, struct policy_rule, policy, V6NAT_POLICY_MAX,
		 V6NAT_PIN(policy), BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("lpm_trie", struct ban_key, struct ban_info, bans, V6NAT_BANS_MAX, V6NAT_PIN(bans),
		 BPF_F_NO_PREALLOC);
BPF_TABLE_PINNED("array", __u32, struct ban_state, ban_state, 1, V6NAT_PIN(ban_state));
/* full-cone UDP (lib/fullcone.h) and `v6nat trace` (lib/trace.h) */
BPF_TABLE_PINNED("lru_hash", struct nat_mapping_key, struct nat_mapping, nat_mappings, V6NAT_NAT_MAPPINGS_MAX,
		 V6NAT_PIN(nat_mappings));
BPF_TABLE_PINNED("array", __u32, struct trace_filter, trace_filter, 1, V6NAT_PIN(trace_filter));
BPF_TABLE_PINNED("percpu_array", __u32, struct trace_state, trace_state, 1, V6NAT_PIN(trace_state));
/* bcc 0.26's BPF_RINGBUF_OUTPUT cannot pin: its table, with a pin path. */
struct trace_events_table_t {
	int key;
	struct trace_event leaf;
	int (*ringbuf_output)(void *, u64, u64);
	u32 max_entries;
};
__attribute__((section("maps/ringbuf:" V6NAT_PIN(trace_events))))
struct trace_events_table_t trace_events = { .max_entries = V6NAT_TRACE_RING_BYTES };
BPF_ANNOTATE_KV_PAIR(trace_events, int, struct trace_event);

#endif
