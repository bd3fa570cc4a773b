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

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define DECAP_PASS (-1)
#define DECAP_OK 0

/* Everything up to and including the inner IPv4 header. */
#define DECAP_HDRS (ETH_HLEN + OVL_ENCAP_OVERHEAD + sizeof(struct iphdr))

struct decap_info {
	__be32 peer; /* outer source */
	__be32 inner_daddr;
};

/*
 * Returns DECAP_PASS, DECAP_OK, or an enum ovl_drop_reason.
 * pkt_len is the full frame length; gso says the lengths in the headers
 * describe one segment of a super-packet and cannot be checked against it.
 */
static __always_inline int decap_check(void *data, void *data_end, __u32 pkt_len,
				       int gso, struct decap_info *info)
{
	struct ethhdr *eth = data;
	struct ovl_subnet_key key = { .prefixlen = 32 };
	struct ovl_subnet_val *local;
	struct ovl_peer *peer;
	struct vxlanhdr *vx;
	struct ethhdr *ieth;
	struct iphdr *ip, *iip;
	struct udphdr *udp;
	__u32 ihl, tot_len;

	if (data + ETH_HLEN + sizeof(*ip) > data_end)
		return DECAP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return DECAP_PASS;
	ip = data + ETH_HLEN;
	if (ip->version != 4 || ip->ihl < 5 || ip->protocol != IPPROTO_UDP ||
	    ip->daddr != ovl_cfg_local_ip)
		return DECAP_PASS;

	/* A non-first fragment carries no UDP header: we cannot tell whose it
	 * is, the stack reassembles or drops it. */
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
	if (vx->flags != OVL_VXLAN_FLAG_I || vx->reserved1[0] ||
	    vx->reserved1[1] || vx->reserved1[2] ||
	    (vx->vni_res & bpf_htonl(0xff)))
		return OVL_DROP_BAD_VXLAN_FLAGS;
	if (bpf_ntohl(vx->vni_res) >> 8 != ovl_cfg_vni)
		return OVL_DROP_WRONG_VNI;

	peer = bpf_map_lookup_elem(&ovl_peers, &ip->saddr);
	if (!peer)
		return OVL_DROP_UNKNOWN_SOURCE;

	ieth = (void *)(vx + 1);
	if (ieth->h_proto != bpf_htons(ETH_P_IP))
		return OVL_DROP_INNER_NOT_IPV4;
	iip = (void *)(ieth + 1);
	if (iip->version != 4 || iip->ihl < 5 ||
	    bpf_ntohs(iip->tot_len) < iip->ihl * 4)
		return OVL_DROP_INNER_BAD_IP;
	if ((iip->saddr & prefix_mask(peer->prefixlen)) != peer->subnet)
		return OVL_DROP_SPOOFED_SOURCE;

	key.addr = iip->daddr;
	local = bpf_map_lookup_elem(&ovl_subnets, &key);
	if (!local || !(local->flags & OVL_F_LOCAL))
		return OVL_DROP_NOT_LOCAL;

	info->peer = ip->saddr;
	info->inner_daddr = iip->daddr;
	return DECAP_OK;
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

SEC("tc")
int ovl_decap_tc(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct decap_info info = {};
	struct ovl_endpoint *ep;
	struct ethhdr *eth;
	struct iphdr *ip;
	__u32 len = skb->len;
	int ret;

	/* Headers of a GSO or paged skb may not all be linear yet. */
	if (data + DECAP_HDRS > data_end && len >= DECAP_HDRS) {
		bpf_skb_pull_data(skb, DECAP_HDRS);
		data = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
	}
	ret = decap_check(data, data_end, len, skb->gso_size != 0, &info);
	if (ret == DECAP_PASS)
		return TC_ACT_OK;
	if (ret != DECAP_OK) {
		count_drop(OVL_DIR_RX, ret, len);
		return TC_ACT_SHOT;
	}

	/* Remove outer IPv4 + UDP + VXLAN + inner Ethernet, keeping the outer
	 * Ethernet header in front (rewritten below). FIXED_GSO: without it
	 * the kernel grows gso_size by 50 and forwarding drops the result as
	 * too big for the pod side. */
	if (bpf_skb_adjust_room(skb, -OVL_ENCAP_OVERHEAD, BPF_ADJ_ROOM_MAC,
				BPF_F_ADJ_ROOM_FIXED_GSO)) {
		count_drop(OVL_DIR_RX, OVL_DROP_DECAP_FAILED, len);
		return TC_ACT_SHOT;
	}
	count_dir(OVL_DIR_RX, len);
	count_peer(info.peer, 0, len);

	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if (data + ETH_HLEN + sizeof(*ip) > data_end) {
		count_drop(OVL_DIR_RX, OVL_DROP_DECAP_FAILED, len);
		return TC_ACT_SHOT;
	}
	eth = data;
	ip = data + ETH_HLEN;
	eth->h_proto = bpf_htons(ETH_P_IP);

	ep = bpf_map_lookup_elem(&ovl_endpoints, &info.inner_daddr);
	if (ip->ttl > 1 && ep) {
		/* Fast path straight into the pod's namespace. MACs first:
		 * the checksum helper invalidates packet pointers. */
		__builtin_memcpy(eth->h_dest, ep->pod_mac, ETH_ALEN);
		__builtin_memcpy(eth->h_source, ep->host_mac, ETH_ALEN);
		ttl_dec(skb, ip);
		return bpf_redirect_peer(ep->ifindex, 0);
	}
	if (ip->ttl > 1) {
		/* Any other pod (bridged, or not registered): route the inner
		 * packet as if it had arrived on the overlay device and transmit
		 * it there directly. Re-injecting into the stack instead costs a
		 * backlog queue per packet, and a sender hopping CPUs then sees
		 * its segments reordered (spurious retransmits, -75% here). */
		struct bpf_fib_lookup fib = {
			.family = AF_INET,
			.tos = ip->tos,
			.l4_protocol = ip->protocol,
			.tot_len = 0, /* GSO: a length makes it answer FRAG_NEEDED */
			.ifindex = ovl_cfg_overlay_ifindex,
			.ipv4_src = ip->saddr,
			.ipv4_dst = ip->daddr,
		};
		long rc = bpf_fib_lookup(skb, &fib, sizeof(fib), 0);

		if ((rc == BPF_FIB_LKUP_RET_SUCCESS || rc == BPF_FIB_LKUP_RET_NO_NEIGH) &&
		    fib.ifindex != ovl_cfg_overlay_ifindex &&
		    fib.ifindex != ovl_cfg_underlay_ifindex) {
			struct bpf_redir_neigh nh = {
				.nh_family = AF_INET,
				.ipv4_nh = fib.ipv4_dst,
			};

			/* Re-fetch: the fib helper may not touch data, but the
			 * verifier forgets packet bounds across helper calls. */
			data = (void *)(long)skb->data;
			data_end = (void *)(long)skb->data_end;
			if (data + ETH_HLEN + sizeof(*ip) > data_end) {
				count_drop(OVL_DIR_RX, OVL_DROP_DECAP_FAILED, len);
				return TC_ACT_SHOT;
			}
			ttl_dec(skb, data + ETH_HLEN);
			return bpf_redirect_neigh(fib.ifindex, &nh, sizeof(nh), 0);
		}
	}

	/* Local to this host (the overlay address), expiring TTL, or no route:
	 * enter the stack as if received on the overlay device, like the
	 * kernel's vxlan, so routes, rp_filter and ICMP errors see the overlay. */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end) {
		count_drop(OVL_DIR_RX, OVL_DROP_DECAP_FAILED, len);
		return TC_ACT_SHOT;
	}
	mac_copy(eth->h_dest, ovl_cfg_vtep_mac);
	return bpf_redirect(ovl_cfg_overlay_ifindex, BPF_F_INGRESS);
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
		return XDP_DROP;
	}
	/* Drop outer Ethernet + IPv4 + UDP + VXLAN; the inner Ethernet header
	 * becomes the frame's. */
	if (bpf_xdp_adjust_head(ctx, OVL_ENCAP_OVERHEAD)) {
		count_drop(OVL_DIR_RX, OVL_DROP_DECAP_FAILED, len);
		return XDP_DROP;
	}
	count_dir(OVL_DIR_RX, len);
	count_peer(info.peer, 0, len);

	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	eth = data;
	if ((void *)(eth + 1) > data_end) {
		/* Cannot happen (checked before the shrink); the verifier
		 * wants the bound, and every drop is counted. */
		count_drop(OVL_DIR_RX, OVL_DROP_DECAP_FAILED, len);
		return XDP_DROP;
	}
	/* Addressed to the underlay device so the stack takes it as ours and
	 * forwards it to the pod (the agent sets loose rp_filter in XDP mode). */
	mac_copy(eth->h_dest, ovl_cfg_underlay_mac);
	return XDP_PASS;
}
