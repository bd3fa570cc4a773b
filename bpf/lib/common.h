/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Includes and small helpers shared by every overlayd program. */
#ifndef OVERLAYD_COMMON_H
#define OVERLAYD_COMMON_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "abi.h"

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

#define IP_MF 0x2000
#define IP_OFFSET 0x1fff
#define IP_DF 0x4000

/* VXLAN header (RFC 7348): flags(8) reserved(24) VNI(24) reserved(8). */
struct vxlanhdr {
	__u8 flags;
	__u8 reserved1[3];
	__be32 vni_res; /* network order: VNI << 8 | reserved */
};

/* What encapsulation inserts between the outer Ethernet header and the
 * inner IPv4 header. */
struct ovl_encap_hdr {
	struct iphdr ip;
	struct udphdr udp;
	struct vxlanhdr vxlan;
	struct ethhdr inner_eth;
} __attribute__((packed));

_Static_assert(sizeof(struct ovl_encap_hdr) == OVL_ENCAP_OVERHEAD,
	       "encap header size");

/* Fold a 32-bit one's complement sum into a 16-bit checksum. */
static __always_inline __u16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

/* Checksum of a 20-byte IPv4 header. Written as a loop over ten 16-bit
 * words rather than bpf_csum_diff() so the same code serves XDP and TC and
 * can check a header in packet memory (after bounds checks). */
static __always_inline __u16 ipv4_csum20(const void *hdr)
{
	const __u16 *w = hdr;
	__u32 sum = 0;

#pragma unroll
	for (int i = 0; i < 10; i++)
		sum += w[i];
	return csum_fold32(sum);
}

/* Network-order mask for a prefix length 0..32 (a shift by 32 is undefined
 * in C, hence the special case). */
static __always_inline __be32 prefix_mask(__u32 prefixlen)
{
	if (prefixlen == 0)
		return 0;
	if (prefixlen >= 32)
		return 0xffffffff;
	return bpf_htonl(~((1U << (32 - prefixlen)) - 1));
}

/* Is a (network order, four words) inside subnet/prefixlen? */
static __always_inline int ip6_in_subnet(const __be32 *a, const __be32 *subnet, __u32 prefixlen)
{
#pragma unroll
	for (int i = 0; i < 4; i++) {
		__u32 bits = prefixlen > 32 * i ? prefixlen - 32 * i : 0;

		if ((a[i] & prefix_mask(bits)) != subnet[i])
			return 0;
	}
	return 1;
}

static __always_inline void mac_copy(__u8 *dst, const volatile __u8 *src)
{
#pragma unroll
	for (int i = 0; i < ETH_ALEN; i++)
		dst[i] = src[i];
}

#endif /* OVERLAYD_COMMON_H */
