// --ip-masq through the backend the network config asks for: flannel's
// EnableNFTables picks nftables (nftmasq.ts), else iptables (ipmasq.ts).
// Whichever is in use, the other one's rules are removed, so a node that
// switches never masquerades twice; on the iptables path that includes our
// chain in the iptables backend (legacy or nft) the node no longer uses.
// A dual-stack network gets the IPv6 rules too (ip6tables, or table ip6
// flannel-ipv6); a network that is no longer dual-stack loses them.
import { type Cidr } from "./ip";
import { type Cidr6 } from "./ip6";
import { ensureMasq, removeMasq, removeMasq6, removeStaleMasq } from "./ipmasq";
import { ensureNftMasq, removeNftMasq } from "./nftmasq";

export type MasqMode = "iptables" | "nftables";

/** The IPv6 half of a dual-stack node: IPv6Network and this node's IPv6 subnet. */
export interface Masq6 {
  network: Cidr6;
  subnet: Cidr6;
}

/** Modes (and families) whose counterpart this process has already cleared. */
const cleared = new Set<string>();

/** Makes the mode's rules what we want; returns true if anything changed. */
export function ensureMasquerade(
  mode: MasqMode,
  network: Cidr,
  subnet: Cidr,
  ipv6?: Masq6,
): boolean {
  let changed = mode === "nftables" ? ensureNftMasq(network, subnet) : ensureMasq(network, subnet);
  if (ipv6) {
    const c6 =
      mode === "nftables"
        ? ensureNftMasq(ipv6.network, ipv6.subnet)
        : ensureMasq(ipv6.network, ipv6.subnet);
    changed = c6 || changed;
  }
  // The other mode's rules: at the first check (a node that switched
  // modes across a restart) and after any change.
  const state = `${mode}/${ipv6 ? "dual" : "ipv4"}`;
  if (changed || !cleared.has(state)) {
    if (mode === "nftables") {
      removeMasq();
      if (!ipv6) removeNftMasq(["ipv6"]);
    } else {
      removeNftMasq();
      removeStaleMasq();
      if (!ipv6) removeMasq6();
    }
    cleared.add(state);
  }
  return changed;
}

/** `overlayd --cleanup`: both modes' rules (iptables: legacy and nft), both families. */
export function removeMasquerade(): void {
  removeMasq();
  removeNftMasq();
}
