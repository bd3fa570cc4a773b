// Runs the agent's masquerade code inside a node's network namespace
// (ip netns exec NS node masq-helper.js ...), printing the result as JSON:
//   iptables|nftables ensure NETWORK SUBNET      -> true if it changed anything
//   iptables|nftables in-place NETWORK SUBNET    -> true if already as wanted
//   iptables|nftables remove                     -> null
//   iptables|nftables masquerade NETWORK SUBNET [NETWORK6 SUBNET6]
//                                                -> as the agent applies it
//                                                   (ensureMasquerade)
// NETWORK and SUBNET of ensure and in-place may be IPv6 (ip6tables, table
// ip6 flannel-ipv6).
//   mode                                         -> the iptables mode detection
//   cleanup                                      -> null (overlayd --cleanup's
//                                                   removeMasquerade)
import { Cidr } from "../../agent/net/ip";
import { Cidr6 } from "../../agent/net/ip6";
import { detectIptablesMode } from "../../agent/net/iptables-mode";
import { ensureMasq, masqInPlace, removeMasq } from "../../agent/net/ipmasq";
import { ensureMasquerade, removeMasquerade } from "../../agent/net/masq";
import { ensureNftMasq, nftMasqInPlace, removeNftMasq } from "../../agent/net/nftmasq";

/** Each path's functions, for a network and subnet of either family. */
interface MasqPath {
  ensure(n: Cidr | Cidr6, s: Cidr | Cidr6): boolean;
  inPlace(n: Cidr | Cidr6, s: Cidr | Cidr6): boolean;
  remove(): void;
}
/** The overloads take one family at a time; the helper's arguments say which. */
const either =
  (f: { (n: Cidr, s: Cidr): boolean; (n: Cidr6, s: Cidr6): boolean }) =>
  (n: Cidr | Cidr6, s: Cidr | Cidr6): boolean =>
    n instanceof Cidr6 ? f(n, s as Cidr6) : f(n, s as Cidr);
const PATHS: Record<string, MasqPath> = {
  iptables: {
    ensure: either(ensureMasq),
    inPlace: either(masqInPlace),
    remove: () => removeMasq(),
  },
  // (removeMasq() with no argument: every backend, both families, as --cleanup)
  nftables: {
    ensure: either(ensureNftMasq),
    inPlace: either(nftMasqInPlace),
    remove: () => removeNftMasq(),
  },
};

const [path, cmd, network, subnet, network6, subnet6] = process.argv.slice(2);
const p = PATHS[path as keyof typeof PATHS];
const mode = path === "nftables" ? "nftables" : "iptables";
const cidrs = (): [Cidr | Cidr6, Cidr | Cidr6] =>
  network?.includes(":")
    ? [Cidr6.parse(network), Cidr6.parse(subnet ?? "", "subnet")]
    : [Cidr.parse(network ?? ""), Cidr.parse(subnet ?? "", "subnet")];
const v6 = () =>
  network6
    ? { network: Cidr6.parse(network6), subnet: Cidr6.parse(subnet6 ?? "", "subnet6") }
    : undefined;
const print = (v: unknown) => process.stdout.write(JSON.stringify(v));
try {
  if (path === "mode") print(detectIptablesMode());
  else if (path === "cleanup") {
    removeMasquerade();
    print(null);
  } else if (p && cmd === "ensure") print(p.ensure(...cidrs()));
  else if (p && cmd === "in-place") print(p.inPlace(...cidrs()));
  else if (p && cmd === "remove") {
    p.remove();
    print(null);
  } else if (p && cmd === "masquerade") {
    print(ensureMasquerade(mode, Cidr.parse(network ?? ""), Cidr.parse(subnet ?? ""), v6()));
  } else {
    process.stderr.write(
      "usage: masq-helper iptables|nftables ensure|in-place NETWORK SUBNET | " +
        "iptables|nftables masquerade NETWORK SUBNET [NETWORK6 SUBNET6] | " +
        "iptables|nftables remove | mode | cleanup\n",
    );
    process.exit(2);
  }
} catch (e) {
  process.stderr.write(`masq-helper ${path} ${cmd}: ${(e as Error).message}\n`);
  process.exit(1);
}
