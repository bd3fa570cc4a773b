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
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return TC_ACT_OK; /* ARP, IPv6: not the overlay's business */
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
