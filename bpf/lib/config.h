/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Load-time configuration. `const volatile` globals live in .rodata, which
 * the agent fills in before load (libbpf-bootstrap's rodata pattern); the
 * verifier then sees them as constants and prunes dead branches. Every
 * object includes this header, so every object has the same .rodata layout.
 */
#ifndef OVERLAYD_CONFIG_H
#define OVERLAYD_CONFIG_H

#include <linux/types.h>

const volatile __u32 ovl_cfg_vni = 1; /* host order */
const volatile __u16 ovl_cfg_port = 8472; /* host order */
const volatile __u16 ovl_cfg_pad0 = 0;
const volatile __be32 ovl_cfg_local_ip = 0; /* network order */
const volatile __u32 ovl_cfg_underlay_ifindex = 0;
const volatile __u32 ovl_cfg_overlay_ifindex = 0;
const volatile __u8 ovl_cfg_vtep_mac[6] = {}; /* overlay device MAC */
const volatile __u8 ovl_cfg_underlay_mac[6] = {};
const volatile __u32 ovl_cfg_flags = 0; /* host order, enum ovl_cfg_flags */
const volatile __be32 ovl_cfg_local_ip6[4] = {}; /* network order; all zero: no IPv6 */

/* Does the network have IPv6 here (an underlay IPv6 address of ours)? A
 * constant to the verifier, which prunes the IPv6 code when it is not. */
static __always_inline int have_ip6(void)
{
	return (ovl_cfg_local_ip6[0] | ovl_cfg_local_ip6[1] | ovl_cfg_local_ip6[2] |
		ovl_cfg_local_ip6[3]) != 0;
}

#endif /* OVERLAYD_CONFIG_H */
