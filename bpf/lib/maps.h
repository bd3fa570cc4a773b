/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map definitions, included by every object. The agent pins each map under
 * --pin-path/<name> before load, so both objects (and a restarted agent)
 * share one instance of each map. Layouts are in include/abi.h.
 */
#ifndef OVERLAYD_MAPS_H
#define OVERLAYD_MAPS_H

#include "common.h"

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, OVL_MAX_SUBNETS);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* required for LPM tries */
	__type(key, struct ovl_subnet_key);
	__type(value, struct ovl_subnet_val);
} ovl_subnets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OVL_MAX_SUBNETS);
	__type(key, __be32);
	__type(value, struct ovl_peer);
} ovl_peers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, OVL_MAX_SUBNETS);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* entries made by traffic, see count_peer_at() */
	__type(key, __be32);
	__type(value, struct ovl_peer_counters);
} ovl_peer_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OVL_MAX_ENDPOINTS);
	__type(key, __be32);
	__type(value, struct ovl_endpoint);
} ovl_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, OVL_MAX_SUBNETS);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct ovl_subnet6_key);
	__type(value, struct ovl_subnet6_val);
} ovl_subnets6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OVL_MAX_SUBNETS);
	__type(key, struct ovl_ip6);
	__type(value, struct ovl_peer6);
} ovl_peers6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, OVL_MAX_SUBNETS);
	__uint(map_flags, BPF_F_NO_PREALLOC); /* entries made by traffic, see count_peer_at() */
	__type(key, struct ovl_ip6);
	__type(value, struct ovl_peer_counters);
} ovl_peer_stats6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, OVL_MAX_ENDPOINTS);
	__type(key, struct ovl_ip6);
	__type(value, struct ovl_endpoint);
} ovl_endpoints6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OVL_DIR_MAX);
	__type(key, __u32);
	__type(value, struct ovl_counter);
} ovl_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, OVL_DIR_MAX * OVL_DROP_MAX);
	__type(key, __u32);
	__type(value, struct ovl_counter);
} ovl_drops SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, OVL_EV_RING_BYTES);
} ovl_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ovl_ev_bucket);
} ovl_ev_limit SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ovl_monitor);
} ovl_monitor SEC(".maps");

/* Per-CPU maps: plain increments are race-free within one CPU. */
static __always_inline void count_dir(__u32 dir, __u64 bytes)
{
	struct ovl_counter *c = bpf_map_lookup_elem(&ovl_stats, &dir);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/* The one place a drop is accounted; both program types funnel here. */
static __always_inline void count_drop(__u32 dir, __u32 reason, __u64 bytes)
{
	__u32 idx = dir * OVL_DROP_MAX + reason;
	struct ovl_counter *c = bpf_map_lookup_elem(&ovl_drops, &idx);

	if (c) {
		c->packets++;
		c->bytes += bytes;
	}
}

/*
 * Per-peer counters. A peer's entry is made by its first packet, not with
 * its lease: the kernel then holds counters (ncpu * 32 bytes each) only for
 * peers that carry traffic, instead of preallocating 65,536 per-CPU values
 * per family at load (~125 ms each on 2 CPUs, 134 MB on 64). The insert
 * runs once per peer; the packet is counted either way it goes. A packet
 * in flight while the agent removes the peer can bring its entry back; the
 * agent looks at the hosts it removed again a second later, and prunes
 * every host that is no peer at each full sync. A full map (more peers
 * than leases can exist) leaves the packet uncounted, never dropped.
 */
static __always_inline void count_peer_at(void *map, const void *peer, int tx, __u64 bytes)
{
	struct ovl_peer_counters *c = bpf_map_lookup_elem(map, peer);

	if (!c) {
		struct ovl_peer_counters zero = {};

		bpf_map_update_elem(map, peer, &zero, BPF_NOEXIST);
		c = bpf_map_lookup_elem(map, peer);
		if (!c)
			return;
	}
	if (tx) {
		c->tx_packets++;
		c->tx_bytes += bytes;
	} else {
		c->rx_packets++;
		c->rx_bytes += bytes;
	}
}

static __always_inline void count_peer(__be32 peer, int tx, __u64 bytes)
{
	count_peer_at(&ovl_peer_stats, &peer, tx, bytes);
}

static __always_inline void count_peer6(const struct ovl_ip6 *peer, int tx, __u64 bytes)
{
	count_peer_at(&ovl_peer_stats6, peer, tx, bytes);
}

#endif /* OVERLAYD_MAPS_H */
