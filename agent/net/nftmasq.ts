// --ip-masq with flannel's EnableNFTables: the decisions of ipmasq.ts's
// iptables chain, in an nftables table of our own named as flannel names its
// (table ip flannel-ipv4, chain postrtg: type nat, hook postrouting, priority
// srcnat, as flannel's). The table is ours alone: (re)applying it is one nft
// transaction that adds it if absent, deletes it and defines it again, so
// there is never a moment without the rules and no other table is touched.
// Like the iptables path it is re-checked periodically and left in place when
// the agent stops (a restart must not break connections); --cleanup removes it.
// IPv6 would go in table ip6 flannel-ipv6 (flannel's name); not made yet.
import { CommandError, OverlayError } from "../errors";
import { formatIp, type Cidr } from "./ip";
import { KUBE_PROXY_MARK } from "./ipmasq";
import { run } from "./run";

export const NFT_FAMILY = "ip";
export const NFT_TABLE = "flannel-ipv4";
/** Reserved for the IPv6 rules (family ip6), as flannel names them. */
export const NFT_TABLE6 = "flannel-ipv6";
export const NFT_CHAIN = "postrtg";
const COMMENT = "overlayd masquerade";
const MULTICAST = "224.0.0.0/4";

/** A prefix as nft prints it (a /32 is a bare address). */
function prefix(c: Cidr): string {
  return c.prefixlen === 32 ? formatIp(c.addr) : c.toString();
}

/** The chain's rules, in order, each exactly as `nft list` prints it. Pure. */
export function nftMasqRules(network: Cidr, subnet: Cidr): string[] {
  const n = prefix(network);
  const s = prefix(subnet);
  const mark = `0x${KUBE_PROXY_MARK.toString(16).padStart(8, "0")}`;
  const c = `comment "${COMMENT}"`;
  return [
    // kube-proxy masquerades these itself: do not NAT twice (the bit, as
    // iptables' --mark 0x4000/0x4000 tests it, not the whole mark)
    `meta mark & ${mark} == ${mark} return ${c}`,
    // pod <-> pod (this node's subnet to the cluster, and back): as is
    `ip saddr ${s} ip daddr ${n} return ${c}`,
    `ip saddr ${n} ip daddr ${s} return ${c}`,
    // outside -> our pods: as is (NodePort and the like)
    `ip saddr != ${n} ip daddr ${s} return ${c}`,
    // pods -> outside (not multicast): masquerade
    `ip saddr ${n} ip daddr != ${MULTICAST} masquerade fully-random ${c}`,
    // host/outside -> other nodes' pods over the overlay: masquerade
    `ip saddr != ${n} ip daddr ${n} masquerade fully-random ${c}`,
  ];
}

/** Our table as `nft list table ip flannel-ipv4` prints it. Pure. */
export function nftMasqTable(network: Cidr, subnet: Cidr): string {
  return [
    `table ${NFT_FAMILY} ${NFT_TABLE} {`,
    `\tcomment "${COMMENT}"`,
    `\tchain ${NFT_CHAIN} {`,
    `\t\tcomment "${COMMENT}"`,
    "\t\ttype nat hook postrouting priority srcnat; policy accept;",
    ...nftMasqRules(network, subnet).map((r) => `\t\t${r}`),
    "\t}",
    "}",
    "",
  ].join("\n");
}

/** Makes sure the table exists, then deletes it: `nft -f` input that never fails on absence. */
const DROP_TABLE = `table ${NFT_FAMILY} ${NFT_TABLE} {}\ndelete table ${NFT_FAMILY} ${NFT_TABLE}\n`;

/** The `nft -f` input that atomically replaces our table with the wanted one. Pure. */
export function nftMasqRuleset(network: Cidr, subnet: Cidr): string {
  return DROP_TABLE + nftMasqTable(network, subnet);
}

/**
 * A listing reduced to what it says: no handles, blank lines or indentation,
 * numbers in one spelling (nft pads hex, older nft prints priority 100 for
 * srcnat). Pure.
 */
export function normalizeNftListing(text: string): string[] {
  return text
    .split("\n")
    .map((l) =>
      l
        .replace(/#\s*handle\s+\d+\s*$/, "")
        .replace(/\s+/g, " ")
        .trim()
        .replace(/\b0x([0-9a-f]+)\b/gi, (_, h: string) => `0x${parseInt(h, 16).toString(16)}`)
        .replace(/\bpriority 100;/, "priority srcnat;"),
    )
    .filter((l) => l !== "");
}

function isMissingNft(e: unknown): e is CommandError {
  return e instanceof CommandError && e.status === null;
}

function nft(args: string[], input?: string): string {
  try {
    return run(["nft", ...args], input);
  } catch (e) {
    if (isMissingNft(e)) {
      throw new OverlayError(
        `nftables masquerade: cannot run nft (${e.stderr.trim()}): ` +
          "install the nftables package, or masquerade with iptables (EnableNFTables off)",
      );
    }
    throw e;
  }
}

/** Our table as the kernel has it, or undefined when there is none (or nft cannot list it). */
function liveTable(): string | undefined {
  try {
    return nft(["list", "table", NFT_FAMILY, NFT_TABLE]);
  } catch (e) {
    if (e instanceof CommandError) return undefined;
    throw e;
  }
}

/** True when our table is exactly the wanted one: one chain, its hook, its rules in order. */
export function nftMasqInPlace(network: Cidr, subnet: Cidr): boolean {
  const live = liveTable();
  if (live === undefined) return false;
  const have = normalizeNftListing(live);
  const want = normalizeNftListing(nftMasqTable(network, subnet));
  return have.length === want.length && have.every((l, i) => l === want[i]);
}

/** Makes our table the wanted one; returns true if it changed anything. */
export function ensureNftMasq(network: Cidr, subnet: Cidr): boolean {
  if (nftMasqInPlace(network, subnet)) return false;
  nft(["-f", "-"], nftMasqRuleset(network, subnet));
  return true;
}

/**
 * `overlayd --cleanup`: delete our table. Nothing to do (and no error) when
 * it is absent or there is no nft to have made it; an error only when it is
 * there and cannot be deleted.
 */
export function removeNftMasq(): void {
  let live: string | undefined;
  try {
    live = liveTable();
  } catch {
    return; // no nft (liveTable's one error): nothing it could have made
  }
  if (live !== undefined) nft(["-f", "-"], DROP_TABLE);
}
