// Hostile and malformed VXLAN at a live node, crafted by test/tools/hostile.py
// (Debian's python3-scapy), and the drop reason each case must be counted
// under. Used by the hostile-packet suite and the chaos soak's floods.
import { join } from "node:path";
import { StatsReader } from "../../agent/bpf/stats";
import { inNs, sh } from "./sh";

export const HOSTILE = join(__dirname, "..", "..", "..", "test", "tools", "hostile.py");

/** case sent -> drop reason it must be counted under (undefined: passes). */
export const HOSTILE_CASES: Record<string, string | undefined> = {
  truncated: "truncated",
  wrong_vni: "wrong_vni",
  bad_flags: "bad_vxlan_flags",
  ip_options: "ip_options",
  fragment: "fragment",
  oversized: "truncated",
  inner_arp: "inner_not_ipv4",
  inner_ipv6: "inner_not_ipv4",
  spoofed_source: "spoofed_source",
  bad_checksum: "bad_ip_hdr",
  bad_udp_len: "bad_udp_len",
  not_local: "not_local",
  not_vxlan: undefined,
};

/** Fails with a clear message when scapy is not installed. */
export function requireScapy(): void {
  const ok = sh(["/usr/bin/python3", "-c", "import scapy; print('ok')"], { allowFail: true });
  if (!ok.includes("ok")) throw new Error("python3-scapy is missing (make deps installs it)");
}

/**
 * Sends `count` frames of each case from `ns` (its eth0) to a node:
 * `to.mac`/`to.ip` its underlay, `podIp` a pod there; `src` the outer
 * source and `peerSubnet` the subnet the inner source is taken from (the
 * sender's lease). Returns case -> frames sent.
 */
export function sendHostile(o: {
  ns: string;
  to: { mac: string; ip: string };
  src: string;
  peerSubnet: string;
  podIp: string;
  count: number;
  cases: string[];
}): Record<string, number> {
  const out = sh(
    inNs(o.ns, [
      "/usr/bin/python3",
      HOSTILE,
      "eth0",
      o.to.mac,
      o.to.ip,
      o.src,
      o.peerSubnet,
      o.podIp,
      String(o.count),
      ...o.cases,
    ]),
  );
  return JSON.parse(out.trim().split("\n").pop() as string);
}

/** The MAC of eth0 in a namespace. */
export function eth0Mac(ns: string): string {
  return JSON.parse(sh(inNs(ns, ["ip", "-j", "link", "show", "eth0"])))[0].address;
}

/** Receive-side drops by reason on a node, from its pinned counters. */
export function rxDrops(pinPath: string): Map<string, bigint> {
  const r = StatsReader.openPinned(pinPath);
  try {
    return new Map(
      r
        .read()
        .drops.filter((d) => d.direction === "rx")
        .map((d) => [d.reason, d.packets]),
    );
  } finally {
    r.close();
  }
}

/** Drop reason -> how many frames of `sent` must be counted under it. */
export function expectedDrops(sent: Record<string, number>): Map<string, number> {
  const want = new Map<string, number>();
  for (const [k, n] of Object.entries(sent)) {
    const reason = k === "unknown_source" ? "unknown_source" : HOSTILE_CASES[k];
    if (reason) want.set(reason, (want.get(reason) ?? 0) + n);
  }
  return want;
}

/** Differences between the drops counted and the drops expected, as text. */
export function dropMismatches(
  before: Map<string, bigint>,
  after: Map<string, bigint>,
  want: Map<string, number>,
): string[] {
  const out: string[] = [];
  for (const [reason, n] of want) {
    const got = (after.get(reason) ?? 0n) - (before.get(reason) ?? 0n);
    if (got !== BigInt(n)) out.push(`${reason}: counted ${got}, sent ${n}`);
  }
  for (const [reason, v] of after) {
    const d = v - (before.get(reason) ?? 0n);
    if (!want.has(reason) && d !== 0n) out.push(`unexpected drops under ${reason}: ${d}`);
  }
  return out;
}
