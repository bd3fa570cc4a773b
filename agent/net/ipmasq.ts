// --ip-masq: flannel's masquerade rules in a nat chain of our own
// (OVERLAYD-POSTRTG), jumped to from POSTROUTING. Traffic from the cluster
// network to the outside is masqueraded; pod <-> pod is not, nor is what
// kube-proxy marked for its own masquerade (flannel's first rule, on both its
// iptables and nftables paths: it avoids NAT twice). Applied with
// iptables-restore --noflush (our chain is replaced atomically, nobody
// else's rules are touched), re-checked periodically, and never removed when
// the agent stops: a restart must not break connections.
import { type Cidr } from "./ip";
import { run, tryRun } from "./run";

export const CHAIN = "OVERLAYD-POSTRTG";
const COMMENT = "overlayd masquerade";
/** The bit kube-proxy's KUBE-MARK-MASQ sets (flannel's KubeProxyMark, 0x4000/0x4000). */
export const KUBE_PROXY_MARK = 0x4000;
const MARK = `0x${KUBE_PROXY_MARK.toString(16)}/0x${KUBE_PROXY_MARK.toString(16)}`;

/** The chain body, one rule per line in iptables-save syntax. Pure. */
export function masqRules(network: Cidr, subnet: Cidr): string[] {
  const n = network.toString();
  const s = subnet.toString();
  return [
    // kube-proxy masquerades these itself: do not NAT twice
    `-A ${CHAIN} -m mark --mark ${MARK} -m comment --comment "${COMMENT}" -j RETURN`,
    // pod <-> pod (this node's subnet to the cluster, and back): as is
    `-A ${CHAIN} -s ${s} -d ${n} -m comment --comment "${COMMENT}" -j RETURN`,
    `-A ${CHAIN} -s ${n} -d ${s} -m comment --comment "${COMMENT}" -j RETURN`,
    // outside -> our pods: as is (NodePort and the like)
    `-A ${CHAIN} ! -s ${n} -d ${s} -m comment --comment "${COMMENT}" -j RETURN`,
    // pods -> outside (not multicast): masquerade
    `-A ${CHAIN} -s ${n} ! -d 224.0.0.0/4 -m comment --comment "${COMMENT}" -j MASQUERADE --random-fully`,
    // host/outside -> other nodes' pods over the overlay: masquerade
    `-A ${CHAIN} ! -s ${n} -d ${n} -m comment --comment "${COMMENT}" -j MASQUERADE --random-fully`,
  ];
}

export function restoreInput(network: Cidr, subnet: Cidr): string {
  return ["*nat", `:${CHAIN} - [0:0]`, ...masqRules(network, subnet), "COMMIT", ""].join("\n");
}

const JUMP = ["POSTROUTING", "-m", "comment", "--comment", COMMENT, "-j", CHAIN];

/** True when the live chain and jump are exactly what we want. */
export function masqInPlace(network: Cidr, subnet: Cidr): boolean {
  const live = tryRun(["iptables", "-w", "-t", "nat", "-S", CHAIN]);
  if (live === undefined) return false;
  const have = live
    .split("\n")
    .filter((l) => l.startsWith("-A "))
    .map((l) => l.replace(/\s+/g, " ").trim());
  const want = masqRules(network, subnet).map((l) => l.replace(/"/g, ""));
  const norm = (l: string) => l.replace(/"/g, "").replace(/\/32\b/g, "");
  if (have.length !== want.length || have.some((l, i) => norm(l) !== norm(want[i] as string)))
    return false;
  return tryRun(["iptables", "-w", "-t", "nat", "-C", ...JUMP]) !== undefined;
}

/** Makes the chain and the jump what we want; returns true if it changed anything. */
export function ensureMasq(network: Cidr, subnet: Cidr): boolean {
  if (masqInPlace(network, subnet)) return false;
  run(["iptables-restore", "-w", "--noflush"], restoreInput(network, subnet));
  if (tryRun(["iptables", "-w", "-t", "nat", "-C", ...JUMP]) === undefined) {
    run(["iptables", "-w", "-t", "nat", "-A", ...JUMP]);
  }
  return true;
}

/** `overlayd --cleanup`: remove the jump and the chain. */
export function removeMasq(): void {
  while (tryRun(["iptables", "-w", "-t", "nat", "-D", ...JUMP]) !== undefined) {
    /* remove every copy */
  }
  tryRun(["iptables", "-w", "-t", "nat", "-F", CHAIN]);
  tryRun(["iptables", "-w", "-t", "nat", "-X", CHAIN]);
}
