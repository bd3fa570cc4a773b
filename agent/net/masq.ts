// --ip-masq through the backend the network config asks for: flannel's
// EnableNFTables picks nftables (nftmasq.ts), else iptables (ipmasq.ts).
// Whichever is in use, the other one's rules are removed, so a node that
// switches never masquerades twice; on the iptables path that includes our
// chain in the iptables backend (legacy or nft) the node no longer uses.
import { type Cidr } from "./ip";
import { ensureMasq, removeMasq, removeStaleMasq } from "./ipmasq";
import { ensureNftMasq, removeNftMasq } from "./nftmasq";

export type MasqMode = "iptables" | "nftables";

/** Modes whose counterpart this process has already cleared. */
const cleared = new Set<MasqMode>();

/** Makes the mode's rules what we want; returns true if anything changed. */
export function ensureMasquerade(mode: MasqMode, network: Cidr, subnet: Cidr): boolean {
  const changed =
    mode === "nftables" ? ensureNftMasq(network, subnet) : ensureMasq(network, subnet);
  // The other mode's rules: at the first check (a node that switched
  // modes across a restart) and after any change.
  if (changed || !cleared.has(mode)) {
    if (mode === "nftables") removeMasq();
    else {
      removeNftMasq();
      removeStaleMasq();
    }
    cleared.add(mode);
  }
  return changed;
}

/** `overlayd --cleanup`: both modes' rules (iptables: legacy and nft). */
export function removeMasquerade(): void {
  removeMasq();
  removeNftMasq();
}
