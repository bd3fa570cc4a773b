// --ip-masq with flannel's EnableNFTables: the decisions of ipmasq.ts's
// iptables chain, in an nftables table of our own named as flannel names its
// (table ip flannel-ipv4, chain postrtg: type nat, hook postrouting, priority
// srcnat, as flannel's). The table is ours alone: (re)applying it is one nft
// transaction that adds it if absent, deletes it and defines it again, so
// there is never a moment without the rules and no other table is touched.
// Like the iptables path it is re-checked periodically and left in place when
// the agent stops (a restart must not break connections); --cleanup removes it.
// IPv6 (dual-stack) goes in table ip6 flannel-ipv6, flannel's name for it,
// with the same chain and decisions; every function takes an IPv4 or an
// IPv6 network and subnet, and the family picks the table.
import { CommandError, OverlayError } from "../errors";
import { formatIp, type Cidr } from "./ip";
import { Cidr6, formatIp6, MULTICAST6 } from "./ip6";
import { KUBE_PROXY_MARK } from "./ipmasq";
import { run } from "./run";

export const NFT_FAMILY = "ip";
export const NFT_TABLE = "flannel-ipv4";
/** The IPv6 rules' family and table, as flannel names them. */
export const NFT_FAMILY6 = "ip6";
export const NFT_TABLE6 = "flannel-ipv6";
export const NFT_CHAIN = "postrtg";
const COMMENT = "overlayd masquerade";
const MULTICAST = "224.0.0.0/4";

type Net = Cidr | Cidr6;
type Family = { family: string; table: string; match: "ip" | "ip6" };
const V4: Family = { family: NFT_FAMILY, table: NFT_TABLE, match: "ip" };
const V6: Family = { family: NFT_FAMILY6, table: NFT_TABLE6, match: "ip6" };
const familyOf = (n: Net): Family => (n instanceof Cidr6 ? V6 : V4);

/** A prefix as nft prints it (a /32 or /128 is a bare address). */
function prefix(c: Net): string {
  if (c instanceof Cidr6) return c.prefixlen === 128 ? formatIp6(c.addr) : c.toString();
  return c.prefixlen === 32 ? formatIp(c.addr) : c.toString();
}

/** The chain's rules, in order, each exactly as `nft list` prints it. Pure. */
export function nftMasqRules(network: Cidr, subnet: Cidr): string[];
export function nftMasqRules(network: Cidr6, subnet: Cidr6): string[];
export function nftMasqRules(network: Net, subnet: Net): string[] {
  const n = prefix(network);
  const s = prefix(subnet);
  const ip = familyOf(network).match;
  const multicast = network instanceof Cidr6 ? MULTICAST6.toString() : MULTICAST;
  const mark = `0x${KUBE_PROXY_MARK.toString(16).padStart(8, "0")}`;
  const c = `comment "${COMMENT}"`;
  return [
    // kube-proxy masquerades these itself: do not NAT twice (the bit, as
    // iptables' --mark 0x4000/0x4000 tests it, not the whole mark)
    `meta mark & ${mark} == ${mark} return ${c}`,
    // pod <-> pod (this node's subnet to the cluster, and back): as is
    `${ip} saddr ${s} ${ip} daddr ${n} return ${c}`,
    `${ip} saddr ${n} ${ip} daddr ${s} return ${c}`,
    // outside -> our pods: as is (NodePort and the like)
    `${ip} saddr != ${n} ${ip} daddr ${s} return ${c}`,
    // pods -> outside (not multicast): masquerade
    `${ip} saddr ${n} ${ip} daddr != ${multicast} masquerade fully-random ${c}`,
    // host/outside -> other nodes' pods over the overlay: masquerade
    `${ip} saddr != ${n} ${ip} daddr ${n} masquerade fully-random ${c}`,
  ];
}

/** Our table as `nft list table ip flannel-ipv4` (ip6 flannel-ipv6) prints it. Pure. */
export function nftMasqTable(network: Cidr, subnet: Cidr): string;
export function nftMasqTable(network: Cidr6, subnet: Cidr6): string;
export function nftMasqTable(network: Net, subnet: Net): string {
  const { family, table } = familyOf(network);
  return [
    `table ${family} ${table} {`,
    `\tcomment "${COMMENT}"`,
    `\tchain ${NFT_CHAIN} {`,
    `\t\tcomment "${COMMENT}"`,
    "\t\ttype nat hook postrouting priority srcnat; policy accept;",
    ...nftMasqRules(network as Cidr, subnet as Cidr).map((r) => `\t\t${r}`),
    "\t}",
    "}",
    "",
  ].join("\n");
}

/** Makes sure the table exists, then deletes it: `nft -f` input that never fails on absence. */
const dropTable = ({ family, table }: Family) =>
  `table ${family} ${table} {}\ndelete table ${family} ${table}\n`;

/** The `nft -f` input that atomically replaces our table with the wanted one. Pure. */
export function nftMasqRuleset(network: Cidr, subnet: Cidr): string;
export function nftMasqRuleset(network: Cidr6, subnet: Cidr6): string;
export function nftMasqRuleset(network: Net, subnet: Net): string {
  return dropTable(familyOf(network)) + nftMasqTable(network as Cidr, subnet as Cidr);
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
function liveTable(f: Family): string | undefined {
  try {
    return nft(["list", "table", f.family, f.table]);
  } catch (e) {
    if (e instanceof CommandError) return undefined;
    throw e;
  }
}

/** True when our table is exactly the wanted one: one chain, its hook, its rules in order. */
export function nftMasqInPlace(network: Cidr, subnet: Cidr): boolean;
export function nftMasqInPlace(network: Cidr6, subnet: Cidr6): boolean;
export function nftMasqInPlace(network: Net, subnet: Net): boolean {
  const live = liveTable(familyOf(network));
  if (live === undefined) return false;
  const have = normalizeNftListing(live);
  const want = normalizeNftListing(nftMasqTable(network as Cidr, subnet as Cidr));
  return have.length === want.length && have.every((l, i) => l === want[i]);
}

/** Makes our table the wanted one; returns true if it changed anything. */
export function ensureNftMasq(network: Cidr, subnet: Cidr): boolean;
export function ensureNftMasq(network: Cidr6, subnet: Cidr6): boolean;
export function ensureNftMasq(network: Net, subnet: Net): boolean {
  const [n, s] = [network as Cidr, subnet as Cidr]; // one family; the overloads say which
  if (nftMasqInPlace(n, s)) return false;
  nft(["-f", "-"], nftMasqRuleset(n, s));
  return true;
}

/**
 * `overlayd --cleanup`: delete our tables (IPv4 and IPv6, or the `families`
 * asked). Nothing to do (and no error) when one is absent or there is no
 * nft to have made it; an error only when it is there and cannot be deleted.
 */
export function removeNftMasq(families: ("ipv4" | "ipv6")[] = ["ipv4", "ipv6"]): void {
  for (const f of families.map((x) => (x === "ipv6" ? V6 : V4))) {
    let live: string | undefined;
    try {
      live = liveTable(f);
    } catch {
      return; // no nft (liveTable's one error): nothing it could have made
    }
    if (live !== undefined) nft(["-f", "-"], dropTable(f));
  }
}
