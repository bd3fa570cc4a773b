// --ip-masq: flannel's masquerade rules in a nat chain of our own
// (OVERLAYD-POSTRTG), jumped to from POSTROUTING. Traffic from the cluster
// network to the outside is masqueraded; pod <-> pod is not, nor is what
// kube-proxy marked for its own masquerade (flannel's first rule, on both its
// iptables and nftables paths: it avoids NAT twice). Applied with
// iptables-restore --noflush (our chain is replaced atomically, nobody
// else's rules are touched), re-checked periodically, and never removed when
// the agent stops: a restart must not break connections. The backend (legacy
// or nft) is the node's, as iptables-mode.ts detects it, once per process.
import { type Cidr } from "./ip";
import {
  iptablesMode,
  PLAIN_COMMANDS,
  variantCommands,
  type IptablesCommands,
  type IptablesMode,
} from "./iptables-mode";
import { probe, run, tryRun } from "./run";

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

/** The detected backend's iptables. */
const ipt = () => iptablesMode().commands;

/** True when the live chain and jump are exactly what we want. */
export function masqInPlace(network: Cidr, subnet: Cidr): boolean {
  const live = tryRun([ipt().iptables, "-w", "-t", "nat", "-S", CHAIN]);
  if (live === undefined) return false;
  const have = live
    .split("\n")
    .filter((l) => l.startsWith("-A "))
    .map((l) => l.replace(/\s+/g, " ").trim());
  const want = masqRules(network, subnet).map((l) => l.replace(/"/g, ""));
  const norm = (l: string) => l.replace(/"/g, "").replace(/\/32\b/g, "");
  if (have.length !== want.length || have.some((l, i) => norm(l) !== norm(want[i] as string)))
    return false;
  return tryRun([ipt().iptables, "-w", "-t", "nat", "-C", ...JUMP]) !== undefined;
}

/** Makes the chain and the jump what we want; returns true if it changed anything. */
export function ensureMasq(network: Cidr, subnet: Cidr): boolean {
  if (masqInPlace(network, subnet)) return false;
  const { iptables, restore } = ipt();
  run([restore, "-w", "--noflush"], restoreInput(network, subnet));
  if (tryRun([iptables, "-w", "-t", "nat", "-C", ...JUMP]) === undefined) {
    run([iptables, "-w", "-t", "nat", "-A", ...JUMP]);
  }
  return true;
}

/** True when iptables-save output has our chain or a jump to it. Pure. */
export function hasOurChain(save: string): boolean {
  return new RegExp(`^:${CHAIN} |^-A .* -j ${CHAIN}(\\s|$)`, "m").test(save);
}

/**
 * `overlayd --cleanup` (and a node that switched backends): remove the jump
 * and the chain from every iptables backend, legacy and nft, or all but the
 * one `keep` names. A backend is only touched when its iptables-save (no
 * table named, so legacy creates none) shows our chain. Plain iptables stands
 * in when neither iptables-legacy-save nor iptables-nft-save is installed
 * (and, being the only one, is what `keep` means then).
 */
export function removeMasq(keep?: IptablesMode): void {
  const backends: { mode?: IptablesMode; cmds: IptablesCommands; save: string }[] = [];
  for (const mode of ["legacy", "nft"] as const) {
    const cmds = variantCommands(mode);
    const save = probe([cmds.save])?.stdout;
    if (save !== undefined) backends.push({ mode, cmds, save });
  }
  if (!backends.length && !keep) {
    const save = probe([PLAIN_COMMANDS.save])?.stdout;
    if (save !== undefined) backends.push({ cmds: PLAIN_COMMANDS, save });
  }
  for (const { mode, cmds, save } of backends) {
    if ((keep && mode === keep) || !hasOurChain(save)) continue;
    while (tryRun([cmds.iptables, "-w", "-t", "nat", "-D", ...JUMP]) !== undefined) {
      /* remove every copy */
    }
    tryRun([cmds.iptables, "-w", "-t", "nat", "-F", CHAIN]);
    tryRun([cmds.iptables, "-w", "-t", "nat", "-X", CHAIN]);
  }
}

/** Our chain in the backend this node does not use (it switched). */
export function removeStaleMasq(): void {
  removeMasq(iptablesMode().mode);
}
