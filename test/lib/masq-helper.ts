// Runs the agent's masquerade code inside a node's network namespace
// (ip netns exec NS node masq-helper.js ...), printing the result as JSON:
//   iptables|nftables ensure NETWORK SUBNET    -> true if it changed anything
//   iptables|nftables in-place NETWORK SUBNET  -> true if already as wanted
//   iptables|nftables remove                   -> null
import { Cidr } from "../../agent/net/ip";
import { ensureMasq, masqInPlace, removeMasq } from "../../agent/net/ipmasq";
import { ensureNftMasq, nftMasqInPlace, removeNftMasq } from "../../agent/net/nftmasq";

const PATHS = {
  iptables: { ensure: ensureMasq, inPlace: masqInPlace, remove: removeMasq },
  nftables: { ensure: ensureNftMasq, inPlace: nftMasqInPlace, remove: removeNftMasq },
};

const [path, cmd, network, subnet] = process.argv.slice(2);
const p = PATHS[path as keyof typeof PATHS];
const cidrs = () => [Cidr.parse(network ?? ""), Cidr.parse(subnet ?? "", "subnet")] as const;
try {
  if (p && cmd === "ensure") process.stdout.write(JSON.stringify(p.ensure(...cidrs())));
  else if (p && cmd === "in-place") process.stdout.write(JSON.stringify(p.inPlace(...cidrs())));
  else if (p && cmd === "remove") {
    p.remove();
    process.stdout.write("null");
  } else {
    process.stderr.write(
      "usage: masq-helper iptables|nftables ensure|in-place NETWORK SUBNET | iptables|nftables remove\n",
    );
    process.exit(2);
  }
} catch (e) {
  process.stderr.write(`masq-helper ${path} ${cmd}: ${(e as Error).message}\n`);
  process.exit(1);
}
