// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * VXLAN encapsulation, TC. Two attach points share one body:
 *
 *  ovl_encap_dev  egress of the overlay device the cluster-network route
 *                 points at: anything the stack routes into the overlay
 *                 (host-originated traffic, bridged pods).
 *  ovl_encap_pod  ingress of a pod veth's host side: the fast path, the
 *                 packet never enters the host's forwarding code.
 *
 * Wire format is flannel's vxlan backend: outer IPv4/UDP to the peer's
 * PublicIP, UDP port and VNI from the config, inner Ethernet destination =
 * the peer's VtepMAC, so a kernel VXLAN device configured by flannel
 * accepts it.
 */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/maps.h"
#include "lib/events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* GSO stays on: the kernel learns that the skb now carries a UDP tunnel
 * with a 14-byte inner Ethernet header and segments/checksums the inner
 * packet itself (SKB_GSO_UDP_TUNNEL). Without the ENCAP flags a GSO TCP
 * stream collapses. FIXED_GSO keeps gso_size: the pod MTU already leaves
 * room for the 50 bytes. */
#define ENCAP_FLAGS                                                            \
	(BPF_F_ADJ_ROOM_FIXED_GSO | BPF_F_ADJ_ROOM_ENCAP_L3_IPV4 |             \
	 BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH |           \
	 BPF_F_ADJ_ROOM_ENCAP_L2(ETH_HLEN))

#define INNER_IP_OFF ETH_HLEN

static __always_inline int drop(__u32 reason, struct __sk_buff *skb, const int from_pod)
{
	count_drop(OVL_DIR_TX, reason, skb->len);
	emit_skb(skb, OVL_EV_DROP, OVL_DIR_TX, reason,
		 from_pod ? OVL_HOOK_ENCAP_POD : OVL_HOOK_ENCAP_DEV, 0);
	return TC_ACT_SHOT;
}

/* Outer UDP source port from the flow hash, so ECMP and RSS on the underlay
 * spread flows (RFC 7348 5: 49152-65535). */
static __always_inline __be16 flow_sport(struct __sk_buff *skb)
{
	__u32 h = bpf_get_hash_recalc(skb);

	h ^= h >> 16;
	return bpf_htons(49152 | (h & 0x3fff));
}

/*
 * Length of one IPv4 packet on the wire after segmentation, for the MTU
 * check: for a GSO skb that is the headers plus gso_size, not skb->len.
 * Returns 0 for a packet that is not GSO (bpf_check_mtu uses skb->len).
 */
/*
 * Does one segment, grown by `overhead`, fit the underlay? bpf_check_mtu()
 * waves any GSO skb through once the length given exceeds the MTU (it
 * leaves segments to BPF_MTU_CHK_SEGS, which takes no length), but it
 * always writes the device's MTU back: so compare the segment with that.
 */
static __always_inline int fits_underlay(struct __sk_buff *skb, __u32 seg, __u32 overhead)
{
	__u32 mtu = seg;

	if (bpf_check_mtu(skb, ovl_cfg_underlay_ifindex, &mtu, overhead, 0))
		return 0;
	return !seg || seg + overhead <= mtu;
}

static __always_inline __u32 seg_l3_len(struct __sk_buff *skb, struct iphdr *ip,
					void *data_end)
{
	__u32 ihl = ip->ihl * 4;

	if (!skb->gso_size)
		return 0;
	if (ip->protocol == IPPROTO_TCP) {
		/* doff is the high nibble of byte 12 of the TCP header. */
		__u8 *doff = (void *)ip + ihl + 12;

		/* Header not readable: count the smallest TCP header, so the
		 * check errs towards "too big" rather than waving it through. */
		if (ihl < 20 || ihl > 60 || (void *)(doff + 1) > data_end)
			return ihl + 20 + skb->gso_size;
		return ihl + (*doff >> 4) * 4 + skb->gso_size;
	}
	return ihl + sizeof(struct udphdr) + skb->gso_size;
}

/* TTL work of ip_forward(), which the pod path bypasses. The caller has
 * checked ttl > 1. Returns 0, or -1 if the packet is no longer readable. */
static __always_inline int pod_ttl_dec(struct __sk_buff *skb, struct iphdr *ip)
{
	__u16 old, new;

	old = *(__u16 *)&ip->ttl; /* ttl and protocol share a word */
	ip->ttl--;
	new = *(__u16 *)&ip->ttl;
	return bpf_l3_csum_replace(skb, INNER_IP_OFF + offsetof(struct iphdr, check),
				   old, new, sizeof(__u16)) ? -1 : 0;
}

/*
 * A host on our own L2 network (OVL_F_DIRECT: host-gw, DirectRouting): the
 * packet leaves the underlay as it is, to that host's MAC, the way a route
 * `subnet via remote_ip` would send it.
 */
static __always_inline int direct(struct __sk_buff *skb, struct iphdr *ip, void *data_end,
				  __be32 next_hop, const int from_pod)
{
	struct bpf_redir_neigh nh = { .nh_family = AF_INET, .ipv4_nh = next_hop };
	if (!fits_underlay(skb, seg_l3_len(skb, ip, data_end), 0)) {
		if (from_pod)
			return TC_ACT_OK;
		return drop(OVL_DROP_MTU, skb, from_pod);
	}
	if (from_pod) {
		if (ip->ttl <= 1)
			return TC_ACT_OK;
		if (pod_ttl_dec(skb, ip))
			return drop(OVL_DROP_ENCAP_FAILED, skb, from_pod);
	}
	count_dir(OVL_DIR_DIRECT, skb->len);
	count_peer(next_hop, 1, skb->len);
	trace_skb(skb, OVL_DIR_TX, OVL_TR_DIRECT,
		  from_pod ? OVL_HOOK_ENCAP_POD : OVL_HOOK_ENCAP_DEV, next_hop);
	return bpf_redirect_neigh(ovl_cfg_underlay_ifindex, &nh, sizeof(nh), 0);
}

/* GBP: the group policy ID and the D and A bits from skb->mark, where the
 * kernel's vxlan takes them; no G flag for a mark without them, as there. */
static __always_inline void gbp_fill(struct ovl_encap_hdr *h, __u32 mark)
{
	__u16 id = mark & OVL_GBP_MARK_ID;

	if (!(mark & (OVL_GBP_MARK_ID | OVL_GBP_MARK_D | OVL_GBP_MARK_A)))
		return;
	h->vxlan.flags |= OVL_VXLAN_FLAG_G;
	h->vxlan.reserved1[0] = (mark & OVL_GBP_MARK_D ? OVL_VXLAN_GBP_D : 0) |
				(mark & OVL_GBP_MARK_A ? OVL_VXLAN_GBP_A : 0);
	h->vxlan.reserved1[1] = id >> 8;
	h->vxlan.reserved1[2] = id & 0xff;
}

/* ---- IPv6 (dual-stack) ------------------------------------------------
 *
 * An IPv6 pod packet goes to the IPv6 host of its subnet (ovl_subnets6),
 * over an outer IPv6 header, as flannel-v6.1 sends it. Over IPv6 the outer
 * UDP checksum is required (flannel's device drops zero checksums) and
 * bpf_skb_adjust_room() cannot ask the kernel for it on GSO segments, so
 * the kernel's collect_md VXLAN device (the overlay device, which is one
 * with OVL_CFG_KERNEL_DECAP) wraps it: we set the tunnel key (peer, VNI,
 * our PublicIPv6 as source) and the inner MACs, and hand it over.
 */
#define INNER_IP6_END (ETH_HLEN + sizeof(struct ipv6hdr))

/* Extension headers walked for the MTU check: RFC 8200 4.1 has each occur
 * once at most, destination options twice, so five of the kinds walked
 * here; one more for slack. */
#define IP6_EXT_MAX 6

/*
 * seg_l3_len() for IPv6: the fixed header, the extension headers that
 * carry their length (hop-by-hop, routing, destination options: (len + 1)
 * * 8 bytes; fragment: 8), the TCP header (doff) or 8 bytes for anything
 * else, plus gso_size. Without the extension headers a GSO segment behind
 * them was taken for up to 2 KB less than it is (and its TCP header for a
 * UDP one), and waved through the MTU check (gso6-ext-mtu, found by the
 * fuzzer). A header that cannot be read ends the walk (the segment is at
 * least what was read); an unreadable TCP header counts as the smallest.
 * bpf_skb_load_bytes() because the headers of a GSO skb need not be linear.
 */
static __always_inline __u32 seg6_l3_len(struct __sk_buff *skb, struct ipv6hdr *ip6)
{
	__u32 off = ETH_HLEN + sizeof(*ip6);
	__u8 next = ip6->nexthdr;
	__u8 b[2];

	if (!skb->gso_size)
		return 0;
#pragma unroll
	for (int i = 0; i < IP6_EXT_MAX; i++) {
		if (next != IPPROTO_HOPOPTS && next != IPPROTO_ROUTING &&
		    next != IPPROTO_DSTOPTS && next != IPPROTO_FRAGMENT)
			break;
		if (bpf_skb_load_bytes(skb, off, b, sizeof(b)))
			break;
		off += next == IPPROTO_FRAGMENT ? 8 : ((__u32)b[1] + 1) * 8;
		next = b[0];
	}
	off -= ETH_HLEN;
	if (next == IPPROTO_TCP) {
		/* doff is the high nibble of byte 12 of the TCP header. */
		if (bpf_skb_load_bytes(skb, ETH_HLEN + off + 12, b, 1))
			return off + 20 + skb->gso_size;
		return off + (b[0] >> 4) * 4 + skb->gso_size;
	}
	return off + sizeof(struct udphdr) + skb->gso_size;
}

static __always_inline int direct6(struct __sk_buff *skb, struct ipv6hdr *ip6,
				   const struct ovl_ip6 *next_hop, const int from_pod)
{
	struct bpf_redir_neigh nh = { .nh_family = AF_INET6 };

	__builtin_memcpy(nh.ipv6_nh, next_hop->addr, sizeof(nh.ipv6_nh));
	if (!fits_underlay(skb, seg6_l3_len(skb, ip6), 0)) {
		if (from_pod)
			return TC_ACT_OK;
		return drop(OVL_DROP_MTU, skb, from_pod);
	}
	if (from_pod)
		ip6->hop_limit--; /* no header checksum in IPv6 */
	count_dir(OVL_DIR_DIRECT, skb->len);
	count_peer6(next_hop, 1, skb->len);
	trace_skb(skb, OVL_DIR_TX, OVL_TR_DIRECT,
		  from_pod ? OVL_HOOK_ENCAP_POD : OVL_HOOK_ENCAP_DEV, 0);
	return bpf_redirect_neigh(ovl_cfg_underlay_ifindex, &nh, sizeof(nh), 0);
}

static __noinline int encap6(struct __sk_buff *skb, const int from_pod)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ovl_subnet6_key key; /* every byte set below: an initializer
				     * would become a .rodata constant */
	struct ovl_subnet6_val *dst;
	struct bpf_tunnel_key tk = {};
	struct ovl_ip6 remote;
	struct ipv6hdr *ip6;
	struct ethhdr *eth;
	__u8 vtep_mac[ETH_ALEN];
	__u16 flags;
	__u32 len;

	if (data + INNER_IP6_END > data_end) {
		if (skb->len < INNER_IP6_END || bpf_skb_pull_data(skb, INNER_IP6_END))
			return TC_ACT_OK;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		if (data + INNER_IP6_END > data_end)
			return TC_ACT_OK;
	}
	/* On the overlay device: a pod's packet that encap6 already keyed and
	 * redirected here goes on to the device as it is. */
	if (!from_pod && !bpf_skb_get_tunnel_key(skb, &tk, sizeof(tk), BPF_F_TUNINFO_IPV6))
		return TC_ACT_OK;
	__builtin_memset(&tk, 0, sizeof(tk));

	ip6 = data + ETH_HLEN;
	/* Link-local and multicast (neighbour discovery, MLD, router
	 * solicitations the kernel sends on any device) are no overlay
	 * traffic: the device drops them as it did before IPv6 existed here. */
	if ((ip6->daddr.in6_u.u6_addr8[0] == 0xff) ||
	    (ip6->daddr.in6_u.u6_addr8[0] == 0xfe && (ip6->daddr.in6_u.u6_addr8[1] & 0xc0) == 0x80))
		return TC_ACT_OK;
	key.prefixlen = 128;
	__builtin_memcpy(key.addr, &ip6->daddr, sizeof(key.addr));
	dst = bpf_map_lookup_elem(&ovl_subnets6, &key);
	if (!dst || (dst->flags & OVL_F_LOCAL)) {
		if (from_pod)
			return TC_ACT_OK;
		return drop(OVL_DROP_NO_PEER, skb, from_pod);
	}
	__builtin_memcpy(remote.addr, dst->remote_ip, sizeof(remote.addr));
	__builtin_memcpy(vtep_mac, dst->vtep_mac, ETH_ALEN);
	flags = dst->flags;
	/* Expiring: the stack answers with ICMPv6 time exceeded. */
	if (from_pod && ip6->hop_limit <= 1)
		return TC_ACT_OK;
	if (flags & OVL_F_DIRECT)
		return direct6(skb, ip6, &remote, from_pod);

	/* Without the kernel's device or an IPv6 address of ours there is no
	 * IPv6 tunnel; a pod's packet then meets the stack's routes. */
	if (!(ovl_cfg_flags & OVL_CFG_KERNEL_DECAP) || !have_ip6()) {
		if (from_pod)
			return TC_ACT_OK;
		return drop(OVL_DROP_ENCAP_FAILED, skb, from_pod);
	}
	if (from_pod && (ovl_cfg_flags & OVL_CFG_GBP))
		return TC_ACT_OK; /* as for IPv4: the mark is set after this hook */
	if (!fits_underlay(skb, seg6_l3_len(skb, ip6), OVL_ENCAP6_OVERHEAD)) {
		/* The stack sends it to the overlay device, whose IPv6 route MTU
		 * makes it answer ICMPv6 packet-too-big. */
		if (from_pod)
			return TC_ACT_OK;
		return drop(OVL_DROP_MTU, skb, from_pod);
	}
	if (from_pod)
		ip6->hop_limit--;
	tk.tunnel_tos = (ip6->priority << 4) | (ip6->flow_lbl[0] >> 4);

	/* The inner Ethernet header as flannel-v6.1 expects it. */
	eth = data;
	__builtin_memcpy(eth->h_dest, vtep_mac, ETH_ALEN);
	mac_copy(eth->h_source, ovl_cfg_vtep_mac);

	__builtin_memcpy(tk.remote_ipv6, remote.addr, sizeof(tk.remote_ipv6));
	tk.local_ipv6[0] = ovl_cfg_local_ip6[0];
	tk.local_ipv6[1] = ovl_cfg_local_ip6[1];
	tk.local_ipv6[2] = ovl_cfg_local_ip6[2];
	tk.local_ipv6[3] = ovl_cfg_local_ip6[3];
	tk.tunnel_id = ovl_cfg_vni;
	tk.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &tk, sizeof(tk), BPF_F_TUNINFO_IPV6))
		return drop(OVL_DROP_ENCAP_FAILED, skb, from_pod);
	if (ovl_cfg_flags & OVL_CFG_GBP) {
		/* The device (created with gbp) writes the header from this. */
		struct { __u32 gbp; } md = { .gbp = skb->mark };

		if (bpf_skb_set_tunnel_opt(skb, &md, sizeof(md)))
			return drop(OVL_DROP_ENCAP_FAILED, skb, from_pod);
	}

	len = skb->len + OVL_ENCAP6_OVERHEAD; /* as it will leave the underlay */
	count_dir(OVL_DIR_TX, len);
	count_peer6(&remote, 1, len);
	trace_skb(skb, OVL_DIR_TX, OVL_TR_ENCAP,
		  from_pod ? OVL_HOOK_ENCAP_POD : OVL_HOOK_ENCAP_DEV, 0);
	if (!from_pod)
		return TC_ACT_OK; /* already on the overlay device */
	return bpf_redirect(ovl_cfg_overlay_ifindex, 0);
}

static __always_inline int encap(struct __sk_buff *skb, const int from_pod)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ovl_subnet_key key = { .prefixlen = 32 };
	struct ovl_encap_hdr h = {};
	struct ovl_subnet_val *dst;
	__be32 remote_ip;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 ip_len;
	__u8 tos, vtep_mac[ETH_ALEN];

	if (data + ETH_HLEN + sizeof(*ip) > data_end) {
		if (skb->len < ETH_HLEN + sizeof(*ip) ||
		    bpf_skb_pull_data(skb, ETH_HLEN + sizeof(*ip)))
			return TC_ACT_OK;
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		if (data + ETH_HLEN + sizeof(*ip) > data_end)
			return TC_ACT_OK;
	}
	eth = data;
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		if (!have_ip6())
			return TC_ACT_OK; /* no IPv6 in this network */
		return encap6(skb, from_pod);
	}
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK; /* ARP and the rest: not the overlay's business */
	ip = data + ETH_HLEN;

	key.addr = ip->daddr;
	dst = bpf_map_lookup_elem(&ovl_subnets, &key);
	if (!dst || (dst->flags & OVL_F_LOCAL)) {
		/* From a pod: local or outside the cluster, the stack routes it.
		 * On the overlay device nothing else can deliver it. */
		if (from_pod)
			return TC_ACT_OK;
		return drop(OVL_DROP_NO_PEER, skb, from_pod);
	}
	remote_ip = dst->remote_ip;
	if (dst->flags & OVL_F_DIRECT)
		return direct(skb, ip, data_end, remote_ip, from_pod);
	/* GBP carries the mark iptables sets, after this hook: pods take the
	 * stack to the overlay device, where the mark is known. */
	if (from_pod && (ovl_cfg_flags & OVL_CFG_GBP))
		return TC_ACT_OK;
	__builtin_memcpy(vtep_mac, dst->vtep_mac, ETH_ALEN);

	if (!fits_underlay(skb, seg_l3_len(skb, ip, data_end), OVL_ENCAP_OVERHEAD)) {
		/* A pod whose MTU ignores the overlay overhead: let the stack
		 * forward it to the overlay device, whose smaller MTU makes the
		 * kernel answer ICMP fragmentation-needed (or fragment it). */
		if (from_pod)
			return TC_ACT_OK;
		return drop(OVL_DROP_MTU, skb, from_pod);
	}

	if (from_pod) {
		/* We bypass ip_forward(), so do its TTL work; an expiring
		 * packet goes to the stack, which sends time-exceeded. */
		if (ip->ttl <= 1)
			return TC_ACT_OK;
		pod_ttl_dec(skb, ip);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		if (data + ETH_HLEN + sizeof(*ip) > data_end)
			return drop(OVL_DROP_ENCAP_FAILED, skb, from_pod);
		ip = data + ETH_HLEN;
	}
	tos = ip->tos;

	/* For a GSO skb the kernel rewrites tot_len per segment; the value
	 * here only has to be sane for a super-packet. */
	ip_len = skb->len - ETH_HLEN + OVL_ENCAP_OVERHEAD;
	if (ip_len > 0xffff)
		ip_len = 0xffff;

	h.ip.version = 4;
	h.ip.ihl = 5;
	h.ip.tos = tos;
	h.ip.tot_len = bpf_htons(ip_len);
	/* DF: the MTU was checked above, and DF spares us a unique IP ID. */
	h.ip.frag_off = bpf_htons(IP_DF);
	h.ip.ttl = 64;
	h.ip.protocol = IPPROTO_UDP;
	h.ip.saddr = ovl_cfg_local_ip;
	h.ip.daddr = remote_ip;
	h.ip.check = ipv4_csum20(&h.ip);
	h.udp.source = flow_sport(skb);
	h.udp.dest = bpf_htons(ovl_cfg_port);
	h.udp.len = bpf_htons(ip_len - sizeof(struct iphdr));
	h.udp.check = 0; /* RFC 7348: zero over IPv4, as the kernel's vxlan */
	h.vxlan.flags = OVL_VXLAN_FLAG_I;
	h.vxlan.vni_res = bpf_htonl(ovl_cfg_vni << 8);
	if (ovl_cfg_flags & OVL_CFG_GBP)
		gbp_fill(&h, skb->mark);
	__builtin_memcpy(h.inner_eth.h_dest, vtep_mac, ETH_ALEN);
	mac_copy(h.inner_eth.h_source, ovl_cfg_vtep_mac);
	h.inner_eth.h_proto = bpf_htons(ETH_P_IP);

	if (bpf_skb_adjust_room(skb, OVL_ENCAP_OVERHEAD, BPF_ADJ_ROOM_MAC,
				ENCAP_FLAGS))
		return drop(OVL_DROP_ENCAP_FAILED, skb, from_pod);
	if (bpf_skb_store_bytes(skb, ETH_HLEN, &h, sizeof(h), 0))
		return drop(OVL_DROP_ENCAP_FAILED, skb, from_pod);

	count_dir(OVL_DIR_TX, skb->len);
	count_peer(remote_ip, 1, skb->len);
	trace_skb(skb, OVL_DIR_TX, OVL_TR_ENCAP,
		  from_pod ? OVL_HOOK_ENCAP_POD : OVL_HOOK_ENCAP_DEV, remote_ip);

	/* The outer Ethernet header is left to the kernel: route lookup of the
	 * outer destination and neighbour resolution on the underlay. */
	return bpf_redirect_neigh(ovl_cfg_underlay_ifindex, NULL, 0, 0);
}

SEC("tc")
int ovl_encap_dev(struct __sk_buff *skb)
{
	return encap(skb, 0);
}

SEC("tc")
int ovl_encap_pod(struct __sk_buff *skb)
{
	return encap(skb, 1);
}
