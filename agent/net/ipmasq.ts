// --ip-masq: flannel's masquerade rules in a nat chain of our own
// (OVERLAYD-POSTRTG), jumped to from POSTROUTING. Traffic from the cluster
// network to the outside is masqueraded; pod <-> pod is not, nor is what
// kube-proxy marked for its own masquerade (flannel's first rule, on both its
// iptables and nftables paths: it avoids NAT twice). Applied with
// iptables-restore --noflush (our chain is replaced atomically, nobody
// else's rules are touched), re-checked periodically, and never removed when
// the agent stops: a restart must not break connections. The backend (legacy
// or nft) is the node's, as iptables-mode.ts detects it, once per process.
// IPv6 (dual-stack) is the same chain through ip6tables, flannel's
// masqIP6Rules: every function takes an IPv4 or an IPv6 network and subnet,
// and the family picks the commands and the multicast range (224.0.0.0/4,
// ff00::/8) that is never masqueraded.
import { type Cidr } from "./ip";
import { Cidr6, MULTICAST6 } from "./ip6";
import {
  ip6Commands,
  iptablesMode,
  PLAIN_COMMANDS,
  variantCommands,
  type IptablesCommands,
  type IptablesMode,
} from "./iptables-mode";
import { probe, run, tryRun } from "./run";

/** A network and subnet of one family. */
type Net = Cidr | Cidr6;

export const CHAIN = "OVERLAYD-POSTRTG";
const COMMENT = "overlayd masquerade";
/** The bit kube-proxy's KUBE-MARK-MASQ sets (flannel's KubeProxyMark, 0x4000/0x4000). */
export const KUBE_PROXY_MARK = 0x4000;
const MARK = `0x${KUBE_PROXY_MARK.toString(16)}/0x${KUBE_PROXY_MARK.toString(16)}`;

/**
 * iptables >= 1.6.2 has --random-fully (flannel's HasRandomFully test); an
 * older one, or a version line that does not parse, goes without. Pure.
 */
export function supportsRandomFully(versionLine: string | undefined): boolean {
  const m = /v(\d+)\.(\d+)\.(\d+)/.exec(versionLine ?? "");
  if (!m) return false;
  const [a, b, c] = m.slice(1, 4).map(Number) as [number, number, number];
  return a > 1 || (a === 1 && (b > 6 || (b === 6 && c >= 2)));
}

/**
 * The chain body, one rule per line in iptables-save syntax, for IPv4
 * (iptables) or IPv6 (ip6tables). Pure.
 */
export function masqRules(network: Cidr, subnet: Cidr, randomFully?: boolean): string[];
export function masqRules(network: Cidr6, subnet: Cidr6, randomFully?: boolean): string[];
export function masqRules(network: Net, subnet: Net, randomFully = true): string[] {
  const n = network.toString();
  const s = subnet.toString();
  const multicast = network instanceof Cidr6 ? MULTICAST6.toString() : "224.0.0.0/4";
  const random = randomFully ? " --random-fully" : "";
  return [
    // kube-proxy masquerades these itself: do not NAT twice
    `-A ${CHAIN} -m mark --mark ${MARK} -m comment --comment "${COMMENT}" -j RETURN`,
    // pod <-> pod (this node's subnet to the cluster, and back): as is
    `-A ${CHAIN} -s ${s} -d ${n} -m comment --comment "${COMMENT}" -j RETURN`,
    `-A ${CHAIN} -s ${n} -d ${s} -m comment --comment "${COMMENT}" -j RETURN`,
    // outside -> our pods: as is (NodePort and the like)
    `-A ${CHAIN} ! -s ${n} -d ${s} -m comment --comment "${COMMENT}" -j RETURN`,
    // pods -> outside (not multicast): masquerade
    `-A ${CHAIN} -s ${n} ! -d ${multicast} -m comment --comment "${COMMENT}" -j MASQUERADE${random}`,
    // host/outside -> other nodes' pods over the overlay: masquerade
    `-A ${CHAIN} ! -s ${n} -d ${n} -m comment --comment "${COMMENT}" -j MASQUERADE${random}`,
  ];
}

export function restoreInput(network: Cidr, subnet: Cidr, randomFully?: boolean): string;
export function restoreInput(network: Cidr6, subnet: Cidr6, randomFully?: boolean): string;
export function restoreInput(network: Net, subnet: Net, randomFully = true): string {
  const rules = masqRules(network as Cidr, subnet as Cidr, randomFully);
  return ["*nat", `:${CHAIN} - [0:0]`, ...rules, "COMMIT", ""].join("\n");
}

const JUMP = ["POSTROUTING", "-m", "comment", "--comment", COMMENT, "-j", CHAIN];

/** The detected backend's iptables, or its ip6tables for an IPv6 network. */
const ipt = (network: Net) => {
  const c = iptablesMode().commands;
  return network instanceof Cidr6 ? ip6Commands(c) : c;
};

const randomFullyOf = new Map<string, boolean>();
/** Whether this iptables binary has --random-fully, asked once per process. */
function randomFully(iptables: string): boolean {
  let v = randomFullyOf.get(iptables);
  if (v === undefined) {
    v = supportsRandomFully(tryRun([iptables, "-V"]));
    randomFullyOf.set(iptables, v);
  }
  return v;
}

/** True when the live chain and jump are exactly what we want. */
export function masqInPlace(network: Cidr, subnet: Cidr): boolean;
export function masqInPlace(network: Cidr6, subnet: Cidr6): boolean;
export function masqInPlace(network: Net, subnet: Net): boolean {
  const { iptables } = ipt(network);
  const live = tryRun([iptables, "-w", "-t", "nat", "-S", CHAIN]);
  if (live === undefined) return false;
  const have = live
    .split("\n")
    .filter((l) => l.startsWith("-A "))
    .map((l) => l.replace(/\s+/g, " ").trim());
  const want = masqRules(network as Cidr, subnet as Cidr, randomFully(iptables));
  // iptables -S prints a host route without its /32 (/128)
  const norm = (l: string) => l.replace(/"/g, "").replace(/\/(32|128)\b/g, "");
  if (have.length !== want.length || have.some((l, i) => norm(l) !== norm(want[i] as string)))
    return false;
  return tryRun([iptables, "-w", "-t", "nat", "-C", ...JUMP]) !== undefined;
}

/** Makes the chain and the jump what we want; returns true if it changed anything. */
export function ensureMasq(network: Cidr, subnet: Cidr): boolean;
export function ensureMasq(network: Cidr6, subnet: Cidr6): boolean;
export function ensureMasq(network: Net, subnet: Net): boolean {
  const [n, s] = [network as Cidr, subnet as Cidr]; // one family; the overloads say which
  if (masqInPlace(n, s)) return false;
  const { iptables, restore } = ipt(network);
  run([restore, "-w", "--noflush"], restoreInput(n, s, randomFully(iptables)));
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
 * and the chain from every iptables backend, legacy and nft, in the
 * `families` asked (both by default), or all but the backend `keep` names. A backend is only touched when its iptables-save (no
 * table named, so legacy creates none) shows our chain. Plain iptables stands
 * in when neither iptables-legacy-save nor iptables-nft-save is installed
 * (and, being the only one, is what `keep` means then).
 */
export function removeMasq(
  keep?: IptablesMode,
  families: ("ipv4" | "ipv6")[] = ["ipv4", "ipv6"],
): void {
  const backends: { mode?: IptablesMode; cmds: IptablesCommands; save: string }[] = [];
  for (const family of families) {
    const of = (c: IptablesCommands) => (family === "ipv6" ? ip6Commands(c) : c);
    const found: typeof backends = [];
    for (const mode of ["legacy", "nft"] as const) {
      const cmds = of(variantCommands(mode));
      const save = probe([cmds.save])?.stdout;
      if (save !== undefined) found.push({ mode, cmds, save });
    }
    if (!found.length && !keep) {
      const cmds = of(PLAIN_COMMANDS);
      const save = probe([cmds.save])?.stdout;
      if (save !== undefined) found.push({ cmds, save });
    }
    backends.push(...found);
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

/** Our IPv6 chain, from every backend: a node whose network is no longer dual-stack. */
export function removeMasq6(): void {
  removeMasq(undefined, ["ipv6"]);
}
