// Capabilities the agent needs, checked at start so a missing one is named
// up front instead of surfacing as an EPERM deep inside a BPF call.
import { readFileSync } from "node:fs";

export const CAPS = {
  CAP_NET_ADMIN: 12,
  CAP_NET_RAW: 13,
  CAP_SYS_ADMIN: 21,
  CAP_PERFMON: 38,
  CAP_BPF: 39,
} as const;
export type CapName = keyof typeof CAPS;

/** The agent's needs: BPF and netlink always; NET_RAW for iptables-legacy
 * (its raw socket; flannel's DaemonSet grants it too); SYS_ADMIN only to
 * mount bpffs. */
export const REQUIRED: CapName[] = ["CAP_BPF", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_PERFMON"];

/** Parses the CapEff line of /proc/<pid>/status. Pure. */
export function parseCapEff(status: string): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  return m ? BigInt(`0x${m[1]}`) : 0n;
}

export function missingCaps(capEff: bigint, need: CapName[]): CapName[] {
  return need.filter((c) => ((capEff >> BigInt(CAPS[c])) & 1n) === 0n);
}

export function effectiveCaps(): bigint {
  return parseCapEff(readFileSync("/proc/self/status", "utf8"));
}
