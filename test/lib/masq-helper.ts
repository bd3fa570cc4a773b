// Runs the agent's masquerade code inside a node's network namespace
// (ip netns exec NS node masq-helper.js ...), printing the result as JSON:
//   iptables|nftables ensure NETWORK SUBNET      -> true if it changed anything
//   iptables|nftables in-place NETWORK SUBNET    -> true if already as wanted
//   iptables|nftables remove                     -> null
//   iptables|nftables masquerade NETWORK SUBNET  -> as the agent applies it
//                                                   (ensureMasquerade)
//   mode                                         -> the iptables mode detection
//   cleanup                                      -> null (overlayd --cleanup's
//                                                   removeMasquerade)
import { Cidr } from "../../agent/net/ip";
import { detectIptablesMode } from "../../agent/net/iptables-mode";
import { ensureMasq, masqInPlace, removeMasq } from "../../agent/net/ipmasq";
import { ensureMasquerade, removeMasquerade } from "../../agent/net/masq";
import { ensureNftMasq, nftMasqInPlace, removeNftMasq } from "../../agent/net/nftmasq";

const PATHS = {
  iptables: { ensure: ensureMasq, inPlace: masqInPlace, remove: () => removeMasq() },
  // (removeMasq() with no argument: every backend, as --cleanup)
  nftables: { ensure: ensureNftMasq, inPlace: nftMasqInPlace, remove: removeNftMasq },
};

const [path, cmd, network, subnet] = process.argv.slice(2);
const p = PATHS[path as keyof typeof PATHS];
const mode = path === "nftables" ? "nftables" : "iptables";
const cidrs = () => [Cidr.parse(network ?? ""), Cidr.parse(subnet ?? "", "subnet")] as const;
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
  } else if (p && cmd === "masquerade") print(ensureMasquerade(mode, ...cidrs()));
  else {
    process.stderr.write(
      "usage: masq-helper iptables|nftables ensure|in-place|masquerade NETWORK SUBNET | " +
        "iptables|nftables remove | mode | cleanup\n",
    );
    process.exit(2);
  }
} catch (e) {
  process.stderr.write(`masq-helper ${path} ${cmd}: ${(e as Error).message}\n`);
  process.exit(1);
}
