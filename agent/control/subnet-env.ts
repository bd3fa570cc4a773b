// /run/flannel/subnet.env, which flannel's CNI plugin and Docker
// integrations read. Rendering and parsing are pure; writeSubnetEnv() is
// the only writer and replaces the file atomically (write + rename).
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";
import { Cidr, formatIp } from "../net/ip";
import { Cidr6, formatIp6 } from "../net/ip6";

export interface SubnetEnv {
  network: Cidr;
  subnet: Cidr;
  /** Dual-stack: IPv6Network and this node's IPv6 subnet. */
  ipv6?: { network: Cidr6; subnet: Cidr6 };
  /** With IPv6, what the pods get must leave room for the IPv6 wrapping
   * (config.ts familyOverhead): one MTU serves both families. */
  mtu: number;
  ipMasq: boolean;
}

/**
 * FLANNEL_SUBNET (and FLANNEL_IPV6_SUBNET) is the subnet's first usable
 * address with its length; the lines in flannel's order (WriteSubnetFile):
 * the IPv4 pair, the IPv6 pair, MTU, IPMASQ.
 */
export function renderSubnetEnv(e: SubnetEnv): string {
  return [
    `FLANNEL_NETWORK=${e.network}`,
    `FLANNEL_SUBNET=${formatIp((e.subnet.addr + 1) >>> 0)}/${e.subnet.prefixlen}`,
    ...(e.ipv6
      ? [
          `FLANNEL_IPV6_NETWORK=${e.ipv6.network}`,
          `FLANNEL_IPV6_SUBNET=${formatIp6(e.ipv6.subnet.addr + 1n)}/${e.ipv6.subnet.prefixlen}`,
        ]
      : []),
    `FLANNEL_MTU=${e.mtu}`,
    `FLANNEL_IPMASQ=${e.ipMasq}`,
    "",
  ].join("\n");
}

export function parseSubnetEnv(text: string): Partial<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const m = /^\s*([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) out[m[1] as string] = (m[2] as string).trim();
  }
  return out;
}

/** A subnet a previous run wrote (`key`), if the file is there and readable. */
function previous<T>(path: string, key: string, parse: (v: string) => T): T | undefined {
  try {
    const v = parseSubnetEnv(readFileSync(path, "utf8"))[key];
    return v ? parse(v) : undefined;
  } catch {
    return undefined;
  }
}

/** The subnet a previous run wrote, if the file is there and readable. */
export function previousSubnet(path: string): Cidr | undefined {
  return previous(path, "FLANNEL_SUBNET", (v) => Cidr.parse(v, "FLANNEL_SUBNET", false));
}

/** The IPv6 subnet a previous run wrote (FLANNEL_IPV6_SUBNET), if any. */
export function previousSubnet6(path: string): Cidr6 | undefined {
  return previous(path, "FLANNEL_IPV6_SUBNET", (v) => Cidr6.parse(v, "FLANNEL_IPV6_SUBNET", false));
}

export function writeSubnetEnv(path: string, e: SubnetEnv): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp.${process.pid}`;
  writeFileSync(tmp, renderSubnetEnv(e), { mode: 0o644 });
  renameSync(tmp, path);
}
