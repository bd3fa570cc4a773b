/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * overlayd kernel <-> user space ABI.
 *
 * This is the ONE place where map names, key and value layouts, counter
 * indexes and drop reasons are defined. The TypeScript side
 * (agent/bpf/abi.generated.ts) is generated from the BTF of the compiled
 * objects by scripts/gen-abi.ts; `make abi-check` regenerates and diffs it.
 *
 * Rules: fixed-width types, explicit padding, no bitfields, the byte order
 * of every multi-byte field written next to it.
 */
#ifndef OVERLAYD_ABI_H
#define OVERLAYD_ABI_H

#include <linux/types.h>

/*
 * Constants both sides use. An enum rather than #defines so that they are
 * in BTF, where the generator finds them.
 */
enum ovl_wire {
	/* Capacity: a /8 network cut into /24 leases is 65,536 subnets. */
	OVL_MAX_SUBNETS = 65536,
	OVL_MAX_ENDPOINTS = 16384,
	/* Bytes added in front of the inner IPv4 header: outer IPv4 + UDP +
	 * VXLAN + inner Ethernet; also underlay MTU - overlay MTU. */
	OVL_ENCAP_OVERHEAD = 50,
	/* The same over an IPv6 underlay: outer IPv6 (40) + UDP + VXLAN +
	 * inner Ethernet; flannel-v6.1's MTU is the underlay's minus this. */
	OVL_ENCAP6_OVERHEAD = 70,
	OVL_VXLAN_FLAG_I = 0x08,
	/* VXLAN Group Based Policy (draft-smith-vxlan-group-policy): the G
	 * flag in the first byte, D (don't learn) and A (policy applied) in
	 * the second, the 16-bit group policy ID in the third and fourth. */
	OVL_VXLAN_FLAG_G = 0x80,
	OVL_VXLAN_GBP_D = 0x40,
	OVL_VXLAN_GBP_A = 0x08,
	/* Where the kernel's vxlan keeps D and A in skb->mark / the tunnel
	 * metadata (VXLAN_GBP_DONT_LEARN, VXLAN_GBP_POLICY_APPLIED); the
	 * group policy ID is the mark's low 16 bits. */
	OVL_GBP_MARK_D = 0x400000,
	OVL_GBP_MARK_A = 0x80000,
	OVL_GBP_MARK_ID = 0xffff,
	OVL_DEFAULT_VNI = 1,
	OVL_DEFAULT_PORT = 8472,
};

/*
 * Maps (defined in bpf/lib/maps.h; names <= 15 characters, one prefix):
 *   ovl_subnets     LPM_TRIE      struct ovl_subnet_key -> struct ovl_subnet_val
 *   ovl_peers       HASH          __be32 underlay IP -> struct ovl_peer
 *   ovl_peer_stats  PERCPU_HASH   __be32 underlay IP -> struct ovl_peer_counters
 *                                 (not preallocated: an entry per peer that carried traffic)
 *   ovl_endpoints   HASH          __be32 pod IP -> struct ovl_endpoint
 *   ovl_stats       PERCPU_ARRAY  enum ovl_dir -> struct ovl_counter
 *   ovl_drops       PERCPU_ARRAY  dir * OVL_DROP_MAX + reason -> struct ovl_counter
 *   ovl_events      RINGBUF       struct ovl_event records (drops; traces when asked)
 *   ovl_ev_limit    PERCPU_ARRAY  0 -> struct ovl_ev_bucket (per-CPU event rate limit)
 *   ovl_monitor     ARRAY         0 -> struct ovl_monitor (what a monitor asks for)
 * IPv6 has maps of its own (an address family never changes a map's layout,
 * so an upgrade never has to refuse a pinned map):
 *   ovl_subnets6    LPM_TRIE      struct ovl_subnet6_key -> struct ovl_subnet6_val
 *   ovl_peers6      HASH          struct ovl_ip6 underlay IPv6 -> struct ovl_peer6
 *   ovl_peer_stats6 PERCPU_HASH   struct ovl_ip6 underlay IPv6 -> struct ovl_peer_counters
 *   ovl_endpoints6  HASH          struct ovl_ip6 pod IPv6 -> struct ovl_endpoint
 */

/* An IPv6 address, network order, as four 32-bit words. */
struct ovl_ip6 {
	__be32 addr[4];
};

/* ovl_subnets6: the IPv6 subnet of each lease (dual-stack), same flags. */
struct ovl_subnet6_key {
	__u32 prefixlen; /* host order, 0..128 */
	__be32 addr[4]; /* network order */
};

struct ovl_subnet6_val {
	__be32 remote_ip[4]; /* network order: the host's PublicIPv6 */
	__u8 vtep_mac[6]; /* the VtepMAC of the host's BackendV6Data */
	__u16 flags; /* host order, enum ovl_subnet_flags */
};

/* ovl_peers6: underlay IPv6 -> the IPv6 subnet that host's lease holds. */
struct ovl_peer6 {
	__be32 subnet[4]; /* network order */
	__u32 prefixlen; /* host order */
};

/*
 * ovl_subnets: BPF_MAP_TYPE_LPM_TRIE, subnet -> host that holds its lease.
 * The own subnet is present too, with OVL_F_LOCAL: encap leaves such
 * packets to the stack, decap only accepts inner destinations inside it.
 */
struct ovl_subnet_key {
	__u32 prefixlen; /* host order, number of significant bits of addr */
	__be32 addr; /* network order */
};

enum ovl_subnet_flags {
	OVL_F_LOCAL = 1, /* this node's own lease */
	/* The host is on our own L2 network (host-gw, vxlan DirectRouting):
	 * send the inner packet as is, with remote_ip as the next hop. */
	OVL_F_DIRECT = 2,
};

struct ovl_subnet_val {
	__be32 remote_ip; /* network order: underlay (outer) IPv4 of the host */
	__u8 vtep_mac[6]; /* the host's VTEP MAC: inner destination MAC */
	__u16 flags; /* host order, enum ovl_subnet_flags */
};

/*
 * ovl_peers: BPF_MAP_TYPE_HASH, underlay IPv4 (__be32) -> the lease it
 * holds. Decap admits VXLAN only from a key of this map, and only with an
 * inner source inside that lease.
 */
struct ovl_peer {
	__be32 subnet; /* network order */
	__u32 prefixlen; /* host order */
};

/*
 * ovl_peer_stats: BPF_MAP_TYPE_PERCPU_HASH (BPF_F_NO_PREALLOC), underlay
 * IPv4 (__be32) -> counters. The data path makes a peer's entry with its
 * first packet; the agent deletes it with the peer.
 */
struct ovl_peer_counters {
	__u64 tx_packets;
	__u64 tx_bytes;
	__u64 rx_packets;
	__u64 rx_bytes;
};

/*
 * ovl_endpoints: BPF_MAP_TYPE_HASH, local pod IPv4 (__be32) -> its veth.
 * Decap hands a packet for a listed pod straight to the pod's namespace
 * (bpf_redirect_peer); any other local destination goes through the stack.
 */
struct ovl_endpoint {
	__u32 ifindex; /* host order: host-side veth */
	__u8 pod_mac[6]; /* inner destination MAC written on delivery */
	__u8 host_mac[6]; /* inner source MAC written on delivery */
};

/* ovl_stats: BPF_MAP_TYPE_PERCPU_ARRAY indexed by enum ovl_dir. */
struct ovl_counter {
	__u64 packets;
	__u64 bytes;
};

enum ovl_dir {
	OVL_DIR_TX = 0, /* encapsulated and sent */
	OVL_DIR_RX = 1, /* received and decapsulated */
	OVL_DIR_DIRECT = 2, /* sent unencapsulated to an OVL_F_DIRECT host */
	OVL_DIR_MAX = 3,
};

/*
 * ovl_drops: BPF_MAP_TYPE_PERCPU_ARRAY of struct ovl_counter indexed by
 * dir * OVL_DROP_MAX + reason. Every drop in the programs goes through one
 * exit that counts it here.
 */
enum ovl_drop_reason {
	OVL_DROP_UNSPEC = 0,
	/* tx */
	OVL_DROP_NO_PEER = 1, /* overlay device: no lease covers the dst */
	OVL_DROP_ENCAP_FAILED = 2, /* bpf_skb_adjust_room/store refused */
	OVL_DROP_MTU = 3, /* does not fit the underlay after encap */
	/* rx */
	OVL_DROP_TRUNCATED = 4, /* shorter than outer+VXLAN+inner headers */
	OVL_DROP_BAD_IP_HDR = 5, /* outer IPv4 version/ihl/checksum/length */
	OVL_DROP_IP_OPTIONS = 6, /* outer IPv4 carries options */
	OVL_DROP_FRAGMENT = 7, /* outer IPv4 is a fragment */
	OVL_DROP_BAD_UDP_LEN = 8, /* UDP length disagrees with the packet */
	OVL_DROP_BAD_VXLAN_FLAGS = 9, /* I flag missing or reserved bits set */
	OVL_DROP_WRONG_VNI = 10, /* VNI is not ours */
	OVL_DROP_UNKNOWN_SOURCE = 11, /* outer source holds no lease */
	OVL_DROP_INNER_NOT_IPV4 = 12, /* inner ethertype is not IPv4 */
	OVL_DROP_INNER_BAD_IP = 13, /* inner IPv4 header malformed */
	OVL_DROP_SPOOFED_SOURCE = 14, /* inner source outside sender's lease */
	OVL_DROP_NOT_LOCAL = 15, /* inner destination outside our lease */
	OVL_DROP_DECAP_FAILED = 16, /* bpf_skb_adjust_room/xdp_adjust_head */
	/* rx, IPv6 underlay */
	OVL_DROP_BAD_IP6_HDR = 17, /* outer IPv6 payload length wrong */
	OVL_DROP_UDP_ZERO_CSUM = 18, /* UDP over IPv6 without a checksum */
	OVL_DROP_INNER_NOT_IPV6 = 19, /* inner ethertype is not IPv6 */
	OVL_DROP_MAX = 20,
};

/*
 * Load-time configuration, `const volatile` globals in .rodata set by the
 * agent before load (see bpf/lib/config.h). Listed here for reference:
 *   ovl_cfg_vni             host order, 24-bit VXLAN network identifier
 *   ovl_cfg_port            host order, UDP destination port
 *   ovl_cfg_local_ip        network order, our underlay IPv4
 *   ovl_cfg_local_ip6       network order, our underlay IPv6 (PublicIPv6),
 *                           all zero when the network has no IPv6
 *   ovl_cfg_vtep_mac        our VTEP MAC (the overlay device's MAC)
 *   ovl_cfg_underlay_ifindex, ovl_cfg_underlay_mac
 *   ovl_cfg_overlay_ifindex
 *   ovl_cfg_flags           host order, enum ovl_cfg_flags
 */

/*
 * Events for `overlayctl monitor`, through the ovl_events ring buffer. Every
 * drop emits one, rate-limited per CPU by a token bucket (OVL_EV_RATE per
 * second, bursts of OVL_EV_BURST); what the bucket or a full ring refuses is
 * counted in ovl_ev_bucket.suppressed_*, while the drop itself is always
 * counted exactly in ovl_drops. Trace events (one per forwarded packet) are
 * emitted only while ovl_monitor.trace is set by a monitor.
 */
enum ovl_event_consts {
	OVL_EV_SNAPLEN = 128, /* first bytes of the packet in each event */
	OVL_EV_RATE = 1000, /* drop events per second per CPU */
	OVL_EV_BURST = 200,
	OVL_EV_RING_BYTES = 1 << 20,
};

enum ovl_event_type {
	OVL_EV_DROP = 1,
	OVL_EV_TRACE = 2,
};

/* Which program and hook saw the packet. */
enum ovl_hook {
	OVL_HOOK_ENCAP_POD = 1, /* ovl_encap_pod, pod veth / pod bridge TC ingress */
	OVL_HOOK_ENCAP_DEV = 2, /* ovl_encap_dev, overlay device TC egress */
	OVL_HOOK_DECAP_TC = 3, /* ovl_decap_tc, underlay TC ingress */
	OVL_HOOK_DECAP_XDP = 4, /* ovl_decap_xdp, underlay XDP */
	OVL_HOOK_DECAP_DEV = 5, /* ovl_decap_dev, overlay device TC ingress */
};

/* What a trace event says happened. */
enum ovl_trace_action {
	OVL_TR_ENCAP = 1, /* wrapped in VXLAN towards peer */
	OVL_TR_DIRECT = 2, /* sent unencapsulated to peer (OVL_F_DIRECT) */
	OVL_TR_DECAP = 3, /* unwrapped; snapshot is the inner frame */
	OVL_TR_TO_KERNEL = 4, /* checked, left to the overlay device's socket */
};

struct ovl_event {
	__u64 ts_ns; /* bpf_ktime_get_ns() */
	__u8 type; /* enum ovl_event_type */
	__u8 dir; /* enum ovl_dir */
	__u8 reason; /* drops: enum ovl_drop_reason; traces: enum ovl_trace_action */
	__u8 hook; /* enum ovl_hook */
	__u32 ifindex; /* the interface the program runs on */
	__u32 len; /* packet length */
	__be32 peer; /* network order: underlay IPv4 of the peer, 0 if unknown */
	__u32 snap_len; /* bytes of data[] that are the packet's */
	__u32 pad;
	__u8 data[OVL_EV_SNAPLEN]; /* the packet from its Ethernet header */
};

struct ovl_ev_bucket {
	__u64 last_ns; /* last refill */
	__u64 tokens; /* drop events allowed now */
	__u64 suppressed_drop; /* drop events refused (rate limit or full ring) */
	__u64 suppressed_trace; /* trace events refused (full ring) */
};

struct ovl_monitor {
	__u32 trace; /* 1 while a monitor wants trace events */
	__u32 pad;
};

/* Bits of ovl_cfg_flags. */
enum ovl_cfg_flags {
	/* The overlay device is a collect_md ("external") kernel VXLAN device
	 * bound to our port. Its UDP socket makes GRO aggregate VXLAN by inner
	 * flow before TC, and its receive path decapsulates what ovl_decap_tc
	 * does not deliver itself; ovl_decap_dev checks that on its ingress.
	 * Without it ovl_decap_tc decapsulates everything (one run per frame
	 * on a wire that does not hand over GSO frames). */
	OVL_CFG_KERNEL_DECAP = 1,
	/* VXLAN Group Based Policy (Backend.GBP): encap carries skb->mark as
	 * the group policy ID, decap accepts the G flag and sets skb->mark
	 * from it, as the kernel's vxlan does with `gbp`. */
	OVL_CFG_GBP = 2,
};

/* Pulls every ABI enum into BTF; only bpf/abi.bpf.c (never loaded, read by
 * the generator) instantiates it. */
struct ovl_abi_enums {
	enum ovl_wire wire;
	enum ovl_subnet_flags subnet_flags;
	enum ovl_dir dir;
	enum ovl_drop_reason drop_reason;
	enum ovl_cfg_flags cfg_flags;
	enum ovl_event_consts event_consts;
	enum ovl_event_type event_type;
	enum ovl_hook hook;
	enum ovl_trace_action trace_action;
};

#ifndef __cplusplus
_Static_assert(sizeof(struct ovl_subnet_key) == 8, "ovl_subnet_key");
_Static_assert(sizeof(struct ovl_ip6) == 16, "ovl_ip6");
_Static_assert(sizeof(struct ovl_subnet6_key) == 20, "ovl_subnet6_key");
_Static_assert(sizeof(struct ovl_subnet6_val) == 24, "ovl_subnet6_val");
_Static_assert(sizeof(struct ovl_peer6) == 20, "ovl_peer6");
_Static_assert(sizeof(struct ovl_subnet_val) == 12, "ovl_subnet_val");
_Static_assert(sizeof(struct ovl_peer) == 8, "ovl_peer");
_Static_assert(sizeof(struct ovl_peer_counters) == 32, "ovl_peer_counters");
_Static_assert(sizeof(struct ovl_endpoint) == 16, "ovl_endpoint");
_Static_assert(sizeof(struct ovl_counter) == 16, "ovl_counter");
_Static_assert(sizeof(struct ovl_event) == 32 + OVL_EV_SNAPLEN, "ovl_event");
_Static_assert(sizeof(struct ovl_ev_bucket) == 32, "ovl_ev_bucket");
_Static_assert(sizeof(struct ovl_monitor) == 8, "ovl_monitor");
#endif

#endif /* OVERLAYD_ABI_H */
