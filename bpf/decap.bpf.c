// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * VXLAN decapsulation on the underlay interface: TC ingress (default) or
 * XDP (for NICs with native XDP). Both share decap_check(), which decides
 * from the packet bytes alone:
 *
 *   not ours (not IPv4/UDP to our address and port) -> pass untouched
 *   ours but wrong                                  -> drop, counted by reason
 *   ours and right                                  -> strip 50 bytes, deliver
 *
 * "Right" means: UDP to the configured port, VXLAN I flag and nothing else,
 * our VNI, an outer source that holds a lease (ovl_peers), an inner IPv4
 * source inside that lease and an inner destination inside our own lease.
 * The inner destination MAC is not checked: the kernel's vxlan sender fills
 * it from its FDB and we must not depend on it.
 */
#include "lib/common.h"
#include "lib/config.h"
#include "lib/maps.h"
#include "lib/events.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define DECAP_PASS (-1)
#define DECAP_OK 0

/* Everything up to and including the inner IPv4 header. */
#define DECAP_HDRS (ETH_HLEN + OVL_ENCAP_OVERHEAD + sizeof(struct iphdr))

struct decap_info {
	__be32 peer; /* outer source */
	__be32 inner_daddr;
	__u8 inner_ttl;
	__u32 gbp; /* GBP: the mark the header carries (OVL_CFG_GBP), else 0 */
};

/*
 * The checks on the inner frame, shared by the underlay programs (peer from
 * the outer IPv4 source) and ovl_decap_dev (peer from the tunnel metadata the
 * kernel's VXLAN receive path left): an IPv4 inner frame, a sane header, a
 * source inside the sender's lease, a destination inside our own.
 * The caller has checked that ieth + inner IPv4 header lie in the packet.
 */
static __always_inline int inner_check(const struct ovl_peer *peer, struct ethhdr *ieth,
				       struct decap_info *info)
{
	struct ovl_subnet_key key = { .prefixlen = 32 };
	struct ovl_subnet_val *local;
	struct iphdr *iip = (void *)(ieth + 1);

	if (ieth->h_proto != bpf_htons(ETH_P_IP))
		return OVL_DROP_INNER_NOT_IPV4;
	if (iip->version != 4 || iip->ihl < 5 || bpf_ntohs(iip->tot_len) < iip->ihl * 4)
		return OVL_DROP_INNER_BAD_IP;
	if ((iip->saddr & prefix_mask(peer->prefixlen)) != peer->subnet)
		return OVL_DROP_SPOOFED_SOURCE;

	key.addr = iip->daddr;
	local = bpf_map_lookup_elem(&ovl_subnets, &key);
	if (!local || !(local->flags & OVL_F_LOCAL))
		return OVL_DROP_NOT_LOCAL;

	info->inner_daddr = iip->daddr;
	info->inner_ttl = iip->ttl;
	return DECAP_OK;
}

/* The VXLAN header: the I flag and nothing else (or GBP's bits, with
 * OVL_CFG_GBP, whose mark goes to *gbp), our VNI. */
static __always_inline int vxlan_check(const struct vxlanhdr *vx, __u32 *gbp)
{
	if ((ovl_cfg_flags & OVL_CFG_GBP) &&
	    vx->flags == (OVL_VXLAN_FLAG_I | OVL_VXLAN_FLAG_G)) {
		/* GBP: D and A in the second byte, the policy ID after it;
		 * any other bit is as wrong as without GBP. */
		if ((vx->reserved1[0] & ~(OVL_VXLAN_GBP_D | OVL_VXLAN_GBP_A)) ||
		    (vx->vni_res & bpf_htonl(0xff)))
			return OVL_DROP_BAD_VXLAN_FLAGS;
		*gbp = ((__u32)vx->reserved1[1] << 8 | vx->reserved1[2]) |
		       (vx->reserved1[0] & OVL_VXLAN_GBP_D ? OVL_GBP_MARK_D : 0) |
		       (vx->reserved1[0] & OVL_VXLAN_GBP_A ? OVL_GBP_MARK_A : 0);
	} else if (vx->flags != OVL_VXLAN_FLAG_I || vx->reserved1[0] ||
		   vx->reserved1[1] || vx->reserved1[2] ||
		   (vx->vni_res & bpf_htonl(0xff))) {
		return OVL_DROP_BAD_VXLAN_FLAGS;
	}
	if (bpf_ntohl(vx->vni_res) >> 8 != ovl_cfg_vni)
		return OVL_DROP_WRONG_VNI;
	return DECAP_OK;
}

/*
 * Returns DECAP_PASS, DECAP_OK, or an enum ovl_drop_reason.
 * pkt_len is the full frame length; gso says the lengths in the headers
 * describe one segment of a super-packet and cannot be checked against it.
 */
static __always_inline int decap_check(void *data, void *data_end, __u32 pkt_len,
				       int gso, struct decap_info *info)
{
	struct ethhdr *eth = data;
	struct ovl_peer *peer;
	struct vxlanhdr *vx;
	struct iphdr *ip;
	struct udphdr *udp;
	__u32 ihl, tot_len;
	int ret;

	if (data + ETH_HLEN + sizeof(*ip) > data_end)
		return DECAP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return DECAP_PASS;
	ip = data + ETH_HLEN;
	if (ip->version != 4 || ip->ihl < 5 || ip->protocol != IPPROTO_UDP ||
	    ip->daddr != ovl_cfg_local_ip)
		return DECAP_PASS;

	/* A non-first fragment carries no UDP header: we cannot tell whose it
	 * is, the stack reassembles or drops it (and a reassembled VXLAN
	 * packet meets ovl_decap_dev's checks). */
	if (ip->frag_off & bpf_htons(IP_OFFSET))
		return DECAP_PASS;

	ihl = ip->ihl * 4;
	udp = (void *)ip + ihl;
	if ((void *)(udp + 1) > data_end)
		return DECAP_PASS;
	if (udp->dest != bpf_htons(ovl_cfg_port))
		return DECAP_PASS;

	/* From here on the packet claims to be our VXLAN. */
	if (ihl != sizeof(*ip))
		return OVL_DROP_IP_OPTIONS;
	if (ip->frag_off & bpf_htons(IP_MF))
		return OVL_DROP_FRAGMENT;
	if (ipv4_csum20(ip) != 0)
		return OVL_DROP_BAD_IP_HDR;
	tot_len = bpf_ntohs(ip->tot_len);
	if (pkt_len < DECAP_HDRS || tot_len < DECAP_HDRS - ETH_HLEN)
		return OVL_DROP_TRUNCATED;
	if (data + DECAP_HDRS > data_end)
		return OVL_DROP_TRUNCATED;
	udp = data + ETH_HLEN + sizeof(*ip);
	if (!gso) {
		if (tot_len > pkt_len - ETH_HLEN)
			return OVL_DROP_TRUNCATED;
		if (bpf_ntohs(udp->len) != tot_len - sizeof(*ip))
			return OVL_DROP_BAD_UDP_LEN;
	}

	/* Constant offsets from data (ihl is known to be 5 now): the verifier
	 * cannot bound a pointer derived from the variable-offset udp. */
	vx = data + ETH_HLEN + sizeof(*ip) + sizeof(*udp);
	ret = vxlan_check(vx, &info->gbp);
	if (ret != DECAP_OK)
		return ret;

	peer = bpf_map_lookup_elem(&ovl_peers, &ip->saddr);
	if (!peer)
		return OVL_DROP_UNKNOWN_SOURCE;
	info->peer = ip->saddr;
	return inner_check(peer, (void *)(vx + 1), info);
}

/* We skip ip_forward() on the redirect paths, so do its TTL work. The
 * caller has checked ttl > 1 and that ip is inside the packet. */
static __always_inline void ttl_dec(struct __sk_buff *skb, struct iphdr *ip)
{
	__u16 old = *(__u16 *)&ip->ttl, new; /* ttl and protocol: one word */

	ip->ttl--;
	new = *(__u16 *)&ip->ttl;
	bpf_l3_csum_replace(skb, ETH_HLEN + offsetof(struct iphdr, check), old, new,
			    sizeof(__u16));
}

static __always_inline int rx_drop(struct __sk_buff *skb, __u8 hook, __u32 reason, __u32 len)
{
	count_drop(OVL_DIR_RX, reason, len);
	emit_skb(skb, OVL_EV_DROP, OVL_DIR_RX, reason, hook, 0);
	return TC_ACT_SHOT;
}

/* A pod registered by the CNI plugin: straight into its namespace. MACs
 * first, the checksum helper invalidates packet pointers. The caller has
 * checked ttl > 1. */
static __always_inline int deliver_pod(struct __sk_buff *skb, const struct ovl_endpoint *ep,
				       __u32 len, __u8 hook)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if (data + ETH_HLEN + sizeof(struct iphdr) > data_end)
		return rx_drop(skb, hook, OVL_DROP_DECAP_FAILED, len);
	eth->h_proto = bpf_htons(ETH_P_IP);
	__builtin_memcpy(eth->h_dest, ep->pod_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, ep->host_mac, ETH_ALEN);
	ttl_dec(skb, data + ETH_HLEN);
	return bpf_redirect_peer(ep->ifindex, 0);
}

/*
 * A decapsulated packet that is not for a registered pod: route it as if it
 * had arrived on the overlay device and transmit it on the device the route
 * names (a bridge, an unregistered pod's veth) with the kernel's neighbour
 * code. Re-injecting into the stack costs a backlog queue per packet, and a
 * sender hopping CPUs then sees its segments reordered. Returns -1 when the
 * stack must take it (our own address, expiring TTL, no route).
 */
static __always_inline int deliver_fib(struct __sk_buff *skb, __u32 len, __u8 hook)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct iphdr *ip = data + ETH_HLEN;
	struct bpf_fib_lookup fib = {};
	long rc;

	if ((void *)(ip + 1) > data_end || ip->ttl <= 1)
		return -1;
	fib.family = AF_INET;
	fib.tos = ip->tos;
	fib.l4_protocol = ip->protocol;
	fib.tot_len = 0; /* GSO: a length makes it answer FRAG_NEEDED */
	fib.ifindex = ovl_cfg_overlay_ifindex;
	fib.ipv4_src = ip->saddr;
	fib.ipv4_dst = ip->daddr;
	rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);
	if ((rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH) ||
	    fib.ifindex == ovl_cfg_overlay_ifindex || fib.ifindex == ovl_cfg_underlay_ifindex)
		return -1;

	struct bpf_redir_neigh nh = {
		.nh_family = AF_INET,
		.ipv4_nh = fib.ipv4_dst,
	};

	/* Re-fetch: the verifier forgets packet bounds across helper calls. */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + ETH_HLEN + sizeof(struct iphdr) > data_end)
		return rx_drop(skb, hook, OVL_DROP_DECAP_FAILED, len);
	ttl_dec(skb, data + ETH_HLEN);
	return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
}

/* ---- IPv6 underlay (dual-stack) -----------------------------------------
 *
 * flannel-v6.1's wire format: outer IPv6 between the nodes' PublicIPv6
 * addresses, UDP with a checksum, VXLAN, an inner IPv6 frame. The same
 * rules as IPv4: our VNI, an outer source that holds a lease (ovl_peers6),
 * an inner source inside that lease's IPv6 subnet, an inner destination
 * inside ours. Outer extension headers are left to the stack: whatever its
 * socket decapsulates meets ovl_decap_dev's checks.
 */

/* Everything up to and including the inner IPv6 header. */
#define DECAP6_HDRS (ETH_HLEN + OVL_ENCAP6_OVERHEAD + sizeof(struct ipv6hdr))

struct decap_info6 {
	struct ovl_ip6 peer; /* outer source */
	struct ovl_ip6 inner_daddr;
	__u8 inner_hop;
	__u32 gbp;
};

static __always_inline int inner_check6(const struct ovl_peer6 *peer, struct ethhdr *ieth,
					struct decap_info6 *info)
{
	struct ovl_subnet6_key key = { .prefixlen = 128 };
	struct ipv6hdr *iip = (void *)(ieth + 1);
	struct ovl_subnet6_val *local;

	if (ieth->h_proto != bpf_htons(ETH_P_IPV6))
		return OVL_DROP_INNER_NOT_IPV6;
	if (iip->version != 6)
		return OVL_DROP_INNER_BAD_IP;
	if (!ip6_in_subnet(iip->saddr.in6_u.u6_addr32, peer->subnet, peer->prefixlen))
		return OVL_DROP_SPOOFED_SOURCE;
	__builtin_memcpy(key.addr, &iip->daddr, sizeof(key.addr));
	local = bpf_map_lookup_elem(&ovl_subnets6, &key);
	if (!local || !(local->flags & OVL_F_LOCAL))
		return OVL_DROP_NOT_LOCAL;
	__builtin_memcpy(info->inner_daddr.addr, &iip->daddr, sizeof(info->inner_daddr.addr));
	info->inner_hop = iip->hop_limit;
	return DECAP_OK;
}

static __always_inline int decap_check6(void *data, void *data_end, __u32 pkt_len, int gso,
					struct decap_info6 *info)
{
	struct ipv6hdr *ip6 = data + ETH_HLEN;
	struct ovl_peer6 *peer;
	struct udphdr *udp;
	__u32 payload;
	int ret;

	if ((void *)(ip6 + 1) > data_end)
		return DECAP_PASS;
	if (ip6->version != 6 || ip6->nexthdr != IPPROTO_UDP)
		return DECAP_PASS;
	if (ip6->daddr.in6_u.u6_addr32[0] != ovl_cfg_local_ip6[0] ||
	    ip6->daddr.in6_u.u6_addr32[1] != ovl_cfg_local_ip6[1] ||
	    ip6->daddr.in6_u.u6_addr32[2] != ovl_cfg_local_ip6[2] ||
	    ip6->daddr.in6_u.u6_addr32[3] != ovl_cfg_local_ip6[3])
		return DECAP_PASS;
	udp = (void *)(ip6 + 1);
	if ((void *)(udp + 1) > data_end)
		return DECAP_PASS;
	if (udp->dest != bpf_htons(ovl_cfg_port))
		return DECAP_PASS;

	/* From here on the packet claims to be our VXLAN. */
	if (pkt_len < DECAP6_HDRS || data + DECAP6_HDRS > data_end)
		return OVL_DROP_TRUNCATED;
	payload = bpf_ntohs(ip6->payload_len);
	if (!gso) {
		if (!payload)
			return OVL_DROP_BAD_IP6_HDR; /* a jumbogram needs hop-by-hop */
		if (payload < DECAP6_HDRS - ETH_HLEN - sizeof(*ip6) ||
		    payload > pkt_len - ETH_HLEN - sizeof(*ip6))
			return OVL_DROP_TRUNCATED;
		if (bpf_ntohs(udp->len) != payload)
			return OVL_DROP_BAD_UDP_LEN;
	}
	if (!udp->check)
		return OVL_DROP_UDP_ZERO_CSUM; /* as the kernel without udp6zerocsumrx */
	ret = vxlan_check(data + ETH_HLEN + sizeof(*ip6) + sizeof(*udp), &info->gbp);
	if (ret != DECAP_OK)
		return ret;

	__builtin_memcpy(info->peer.addr, &ip6->saddr, sizeof(info->peer.addr));
	peer = bpf_map_lookup_elem(&ovl_peers6, &info->peer);
	if (!peer)
		return OVL_DROP_UNKNOWN_SOURCE;
	return inner_check6(peer, data + ETH_HLEN + sizeof(*ip6) + sizeof(*udp) +
				      sizeof(struct vxlanhdr), info);
}

/* deliver_pod() for IPv6 (no header checksum to fix). */
static __always_inline int deliver_pod6(struct __sk_buff *skb, const struct ovl_endpoint *ep,
					__u32 len, __u8 hook)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6 = data + ETH_HLEN;

	if ((void *)(ip6 + 1) > data_end)
		return rx_drop(skb, hook, OVL_DROP_DECAP_FAILED, len);
	eth->h_proto = bpf_htons(ETH_P_IPV6);
	__builtin_memcpy(eth->h_dest, ep->pod_mac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, ep->host_mac, ETH_ALEN);
	ip6->hop_limit--;
	return bpf_redirect_peer(ep->ifindex, 0);
}

/* ovl_decap_tc for an IPv6 frame. */
static __noinline int decap_tc6(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct decap_info6 info = {};
	struct ovl_endpoint *ep;
	struct ethhdr *eth;
	__u32 len = skb->len;
	int ret;

	if (data + DECAP6_HDRS > data_end && len >= DECAP6_HDRS) {
		bpf_skb_pull_data(skb, DECAP6_HDRS);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	ret = decap_check6(data, data_end, len, skb->gso_size != 0, &info);
	if (ret == DECAP_PASS)
		return TC_ACT_OK;
	if (ret != DECAP_OK)
		return rx_drop(skb, OVL_HOOK_DECAP_TC, ret, len);

	ep = bpf_map_lookup_elem(&ovl_endpoints6, &info.inner_daddr);
	if ((ovl_cfg_flags & OVL_CFG_KERNEL_DECAP) && !(ep && info.inner_hop > 1)) {
		trace_skb(skb, OVL_DIR_RX, OVL_TR_TO_KERNEL, OVL_HOOK_DECAP_TC, 0);
		return TC_ACT_OK;
	}
	/* Outer IPv6 + UDP + VXLAN + inner Ethernet: 70 bytes. */
	if (bpf_skb_adjust_room(skb, -OVL_ENCAP6_OVERHEAD, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO))
		return rx_drop(skb, OVL_HOOK_DECAP_TC, OVL_DROP_DECAP_FAILED, len);
	if (ovl_cfg_flags & OVL_CFG_GBP)
		skb->mark = info.gbp;
	count_dir(OVL_DIR_RX, len);
	count_peer6(&info.peer, 0, len);
	trace_skb(skb, OVL_DIR_RX, OVL_TR_DECAP, OVL_HOOK_DECAP_TC, 0);
	if (ep && info.inner_hop > 1)
		return deliver_pod6(skb, ep, len, OVL_HOOK_DECAP_TC);

	/* No kernel device: the stack takes it as received on the overlay. */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return rx_drop(skb, OVL_HOOK_DECAP_TC, OVL_DROP_DECAP_FAILED, len);
	eth->h_proto = bpf_htons(ETH_P_IPV6);
	mac_copy(eth->h_dest, ovl_cfg_vtep_mac);
	return bpf_redirect(ovl_cfg_overlay_ifindex, BPF_F_INGRESS);
}

/* ovl_decap_dev for what the socket received over IPv6. */
static __noinline int decap_dev6(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	__u32 len = skb->len + OVL_ENCAP6_OVERHEAD;
	struct bpf_tunnel_key tk = {};
	struct decap_info6 info = {};
	struct ovl_endpoint *ep;
	struct ovl_peer6 *peer;
	int ret;

	if (bpf_skb_get_tunnel_key(skb, &tk, offsetof(struct bpf_tunnel_key, tunnel_label),
				   BPF_F_TUNINFO_IPV6))
		return rx_drop(skb, OVL_HOOK_DECAP_DEV, OVL_DROP_UNKNOWN_SOURCE, len);
	if (tk.tunnel_id != ovl_cfg_vni)
		return rx_drop(skb, OVL_HOOK_DECAP_DEV, OVL_DROP_WRONG_VNI, len);
	/* remote_ipv6 comes in network order (unlike remote_ipv4). */
	__builtin_memcpy(info.peer.addr, tk.remote_ipv6, sizeof(info.peer.addr));
	peer = bpf_map_lookup_elem(&ovl_peers6, &info.peer);
	if (!peer)
		return rx_drop(skb, OVL_HOOK_DECAP_DEV, OVL_DROP_UNKNOWN_SOURCE, len);

	if (data + ETH_HLEN + sizeof(struct ipv6hdr) > data_end) {
		if (skb->len < ETH_HLEN + sizeof(struct ipv6hdr) ||
		    bpf_skb_pull_data(skb, ETH_HLEN + sizeof(struct ipv6hdr)))
			return rx_drop(skb, OVL_HOOK_DECAP_DEV, OVL_DROP_TRUNCATED, len);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		if (data + ETH_HLEN + sizeof(struct ipv6hdr) > data_end)
			return rx_drop(skb, OVL_HOOK_DECAP_DEV, OVL_DROP_TRUNCATED, len);
	}
	ret = inner_check6(peer, data, &info);
	if (ret != DECAP_OK)
		return rx_drop(skb, OVL_HOOK_DECAP_DEV, ret, len);
	if (ovl_cfg_flags & OVL_CFG_GBP) {
		struct { __u32 gbp; } md = {};

		if (bpf_skb_get_tunnel_opt(skb, &md, sizeof(md)) < 0)
			md.gbp = 0;
		skb->mark = md.gbp;
	}
	count_dir(OVL_DIR_RX, len);
	count_peer6(&info.peer, 0, len);
	trace_skb(skb, OVL_DIR_RX, OVL_TR_DECAP, OVL_HOOK_DECAP_DEV, 0);

	ep = bpf_map_lookup_elem(&ovl_endpoints6, &info.inner_daddr);
	if (ep && info.inner_hop > 1)
		return deliver_pod6(skb, ep, len, OVL_HOOK_DECAP_DEV);
	bpf_skb_change_type(skb, 0 /* PACKET_HOST */);
	return TC_ACT_OK;
}

/*
 * TC ingress of the underlay. Every VXLAN packet for us is checked here and
 * dropped (counted) when wrong. A right one for a registered pod is
 * decapsulated here and handed to the pod. Any other right one:
 *  - with OVL_CFG_KERNEL_DECAP, passes untouched to the overlay device's
 *    UDP socket: the kernel strips the headers and clears the tunnel GSO
 *    state (BPF cannot clear SKB_GSO_UDP_TUNNEL on these kernels, and a
 *    GRO'd packet forwarded with it set is segmented in software), then
 *    ovl_decap_dev checks and delivers it;
 *  - without, is decapsulated here and routed (deliver_fib) or handed to
 *    the stack as if received on the overlay device.
 */
SEC("tc")
int ovl_decap_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct decap_info info = {};
	struct ovl_endpoint *ep;
	struct ethhdr *eth;
	__u32 len = skb->len;
	int ret;

	/* Headers of a GSO or paged skb may not all be linear yet. */
	if (data + DECAP_HDRS > data_end && len >= DECAP_HDRS) {
		bpf_skb_pull_data(skb, DECAP_HDRS);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	ret = decap_check(data, data_end, len, skb->gso_size != 0, &info);
	if (ret == DECAP_PASS) {
		eth = data;
		if (have_ip6() && (void *)(eth + 1) <= data_end &&
		    eth->h_proto == bpf_htons(ETH_P_IPV6))
			return decap_tc6(skb);
		return TC_ACT_OK;
	}
	if (ret != DECAP_OK)
		return rx_drop(skb, OVL_HOOK_DECAP_TC, ret, len);

	ep = bpf_map_lookup_elem(&ovl_endpoints, &info.inner_daddr);
	if ((ovl_cfg_flags & OVL_CFG_KERNEL_DECAP) && !(ep && info.inner_ttl > 1)) {
		trace_skb(skb, OVL_DIR_RX, OVL_TR_TO_KERNEL, OVL_HOOK_DECAP_TC, info.peer);
		return TC_ACT_OK; /* the kernel decapsulates, ovl_decap_dev delivers */
	}

	/* Remove outer IPv4 + UDP + VXLAN + inner Ethernet, keeping the outer
	 * Ethernet header in front (rewritten below). FIXED_GSO: without it
	 * the kernel grows gso_size by 50 and TCP segmentation of the result
	 * drops packets as too big. */
	if (bpf_skb_adjust_room(skb, -OVL_ENCAP_OVERHEAD, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO))
		return rx_drop(skb, OVL_HOOK_DECAP_TC, OVL_DROP_DECAP_FAILED, len);
	if (ovl_cfg_flags & OVL_CFG_GBP)
		skb->mark = info.gbp; /* as the kernel's vxlan with gbp */
	count_dir(OVL_DIR_RX, len);
	count_peer(info.peer, 0, len);
	trace_skb(skb, OVL_DIR_RX, OVL_TR_DECAP, OVL_HOOK_DECAP_TC, info.peer);

	if (ep && info.inner_ttl > 1)
		return deliver_pod(skb, ep, len, OVL_HOOK_DECAP_TC);
	ret = deliver_fib(skb, len, OVL_HOOK_DECAP_TC);
	if (ret >= 0)
		return ret;

	/* Local to this host (the overlay address), expiring TTL, or no route:
	 * enter the stack as if received on the overlay device, like the
	 * kernel's vxlan, so routes, rp_filter and ICMP errors see the overlay. */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end)
		return rx_drop(skb, OVL_HOOK_DECAP_TC, OVL_DROP_DECAP_FAILED, len);
	eth->h_proto = bpf_htons(ETH_P_IP);
	mac_copy(eth->h_dest, ovl_cfg_vtep_mac);
	return bpf_redirect(ovl_cfg_overlay_ifindex, BPF_F_INGRESS);
}

/*
 * TC ingress of the overlay device when it is the kernel's collect_md VXLAN
 * device (OVL_CFG_KERNEL_DECAP): what its UDP socket decapsulated, from the
 * underlay (already checked there) or from anywhere else (a pod or the host
 * sending to our port, another interface, a reassembled fragment). The same
 * rules hold: our VNI, an outer source that holds a lease, the inner checks.
 * Nothing but VXLAN reaches this device, so a packet without tunnel metadata
 * (or with IPv6 metadata while the network has no IPv6) is dropped too.
 */
SEC("tc")
int ovl_decap_dev(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	/* Bytes as the underlay programs count them: with the outer headers. */
	__u32 len = skb->len + OVL_ENCAP_OVERHEAD;
	struct bpf_tunnel_key tk = {};
	struct decap_info info = {};
	struct ovl_endpoint *ep;
	struct ovl_peer *peer;
	int ret;

	/* The IPv4 part of the key only (up to tunnel_label): the size every
	 * kernel since 4.x accepts; newer headers' sizeof() is refused by older
	 * kernels. An IPv6 outer header fails here and is refused too. */
	if (bpf_skb_get_tunnel_key(skb, &tk, offsetof(struct bpf_tunnel_key, tunnel_label), 0)) {
		if (have_ip6())
			return decap_dev6(skb); /* IPv6 tunnel metadata, or none */
		return rx_drop(skb, OVL_HOOK_DECAP_DEV, OVL_DROP_UNKNOWN_SOURCE, len);
	}
	if (tk.tunnel_id != ovl_cfg_vni)
		return rx_drop(skb, OVL_HOOK_DECAP_DEV, OVL_DROP_WRONG_VNI, len);
	info.peer = bpf_htonl(tk.remote_ipv4); /* the helper gives host order */
	peer = bpf_map_lookup_elem(&ovl_peers, &info.peer);
	if (!peer)
		return rx_drop(skb, OVL_HOOK_DECAP_DEV, OVL_DROP_UNKNOWN_SOURCE, len);

	if (data + ETH_HLEN + sizeof(struct iphdr) > data_end) {
		if (skb->len < ETH_HLEN + sizeof(struct iphdr) ||
		    bpf_skb_pull_data(skb, ETH_HLEN + sizeof(struct iphdr)))
			return rx_drop(skb, OVL_HOOK_DECAP_DEV, OVL_DROP_TRUNCATED, len);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		if (data + ETH_HLEN + sizeof(struct iphdr) > data_end)
			return rx_drop(skb, OVL_HOOK_DECAP_DEV, OVL_DROP_TRUNCATED, len);
	}
	ret = inner_check(peer, data, &info);
	if (ret != DECAP_OK)
		return rx_drop(skb, OVL_HOOK_DECAP_DEV, ret, len);
	if (ovl_cfg_flags & OVL_CFG_GBP) {
		/* The socket (a gbp device) parsed the header into the tunnel
		 * options; a collect_md device leaves skb->mark to us. */
		struct { __u32 gbp; } md = {};

		if (bpf_skb_get_tunnel_opt(skb, &md, sizeof(md)) < 0)
			md.gbp = 0;
		skb->mark = md.gbp;
	}
	count_dir(OVL_DIR_RX, len);
	count_peer(info.peer, 0, len);
	trace_skb(skb, OVL_DIR_RX, OVL_TR_DECAP, OVL_HOOK_DECAP_DEV, info.peer);

	ep = bpf_map_lookup_elem(&ovl_endpoints, &info.inner_daddr);
	if (ep && info.inner_ttl > 1)
		return deliver_pod(skb, ep, len, OVL_HOOK_DECAP_DEV);
	ret = deliver_fib(skb, len, OVL_HOOK_DECAP_DEV);
	if (ret >= 0)
		return ret;
	/* For this host: the stack takes it whatever inner MAC the sender
	 * wrote (decapsulation never depends on it). */
	bpf_skb_change_type(skb, 0 /* PACKET_HOST */);
	return TC_ACT_OK;
}

SEC("xdp")
int ovl_decap_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct decap_info info = {};
	__u32 len = data_end - data;
	struct ethhdr *eth;
	int ret;

	ret = decap_check(data, data_end, len, 0, &info);
	if (ret == DECAP_PASS)
		return XDP_PASS;
	if (ret != DECAP_OK) {
		count_drop(OVL_DIR_RX, ret, len);
		emit_xdp(ctx, OVL_EV_DROP, OVL_DIR_RX, ret, 0);
		return XDP_DROP;
	}
	/* XDP has no skb->mark: a GBP packet takes the overlay device's
	 * socket, whose metadata ovl_decap_dev turns into the mark. */
	if (info.gbp)
		return XDP_PASS;
	/* Drop outer Ethernet + IPv4 + UDP + VXLAN; the inner Ethernet header
	 * becomes the frame's. */
	if (bpf_xdp_adjust_head(ctx, OVL_ENCAP_OVERHEAD)) {
		count_drop(OVL_DIR_RX, OVL_DROP_DECAP_FAILED, len);
		emit_xdp(ctx, OVL_EV_DROP, OVL_DIR_RX, OVL_DROP_DECAP_FAILED, 0);
		return XDP_DROP;
	}
	count_dir(OVL_DIR_RX, len);
	count_peer(info.peer, 0, len);
	if (tracing())
		emit_xdp(ctx, OVL_EV_TRACE, OVL_DIR_RX, OVL_TR_DECAP, info.peer);

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end) {
		/* Cannot happen (checked before the shrink); the verifier
		 * wants the bound, and every drop is counted. */
		count_drop(OVL_DIR_RX, OVL_DROP_DECAP_FAILED, len);
		emit_xdp(ctx, OVL_EV_DROP, OVL_DIR_RX, OVL_DROP_DECAP_FAILED, 0);
		return XDP_DROP;
	}
	/* Addressed to the underlay device so the stack takes it as ours and
	 * forwards it to the pod (the agent sets loose rp_filter in XDP mode). */
	mac_copy(eth->h_dest, ovl_cfg_underlay_mac);
	return XDP_PASS;
}
