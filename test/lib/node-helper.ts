// Runs inside a node's network namespace (ip netns exec NS node ...):
//   setup '<NodeSetupOptions as JSON>'   -> prints {vtepMac, mtu, ...}
//   attach-pod PIN_PATH IFNAME           -> encap_pod on the veth's ingress
//   detach-pod IFNAME
//   tc-probe IFNAME                      -> tc query/detach on a device without clsact
//   pod-bridge PIN_PATH SUBNET[,SUBNET6] [BRIDGE] -> one sync of the bridged-pod fast path
// Programs stay attached and maps pinned after it exits, which is the
// point: the data path forwards without a running agent.
import { join } from "node:path";
import { attachPodFromPin, detachPod, TC_HANDLE, TC_PRIORITY } from "../../agent/bpf/datapath";
import { BPF_TC_INGRESS, libbpf } from "../../agent/bpf/libbpf";
import { Cidr, parseIp } from "../../agent/net/ip";
import { Cidr6, parseIp6 } from "../../agent/net/ip6";
import { mustLink } from "../../agent/net/link";
import { setupNode } from "../../agent/node/node-setup";
import { createLogger } from "../../agent/log";
import { createBackend } from "../../agent/backend";
import { PodBridge } from "../../agent/node/pod-bridge";

const [cmd, ...args] = process.argv.slice(2);
if (cmd === "setup") {
  const o = JSON.parse(args[0] as string);
  const publicIp = parseIp(o.publicIp);
  const backend = createBackend(
    {
      type: "vxlan",
      vni: o.vni ?? 1,
      port: o.port ?? 8472,
      gbp: false,
      directRouting: false,
      learning: false,
      ...(o.backend ?? {}),
    },
    { log: createLogger("warn") },
  );
  backend.check({ iface: o.underlay, publicIp });
  const r = setupNode({
    underlay: o.underlay,
    publicIp,
    network: Cidr.parse(o.network),
    subnet: Cidr.parse(o.subnet),
    vni: o.vni ?? 1,
    port: o.port ?? 8472,
    backend,
    pinPath: o.pinPath,
    objDir: o.objDir ?? join(__dirname, "../../../build/bpf"),
    decap: o.decap ?? "auto",
    overlayName: o.overlayName ?? "ovl0",
    // dual-stack: {publicIp, network, subnet} of the IPv6 half
    ...(o.v6
      ? {
          v6: {
            publicIp: parseIp6(o.v6.publicIp),
            network: Cidr6.parse(o.v6.network),
            subnet: Cidr6.parse(o.v6.subnet),
          },
        }
      : {}),
  });
  r.datapath.close();
  process.stdout.write(
    JSON.stringify({
      vtepMac: r.vtepMac,
      mtu: r.mtu,
      underlayIfindex: r.underlayIfindex,
      overlayIfindex: r.overlayIfindex,
      kernelDecap: r.kernelDecap,
      mechanism: r.mechanism,
      reason: r.reason,
    }),
  );
} else if (cmd === "attach-pod") {
  const link = mustLink(args[1] as string);
  attachPodFromPin(args[0] as string, link.ifindex, link.name);
} else if (cmd === "detach-pod") {
  const link = mustLink(args[0] as string);
  detachPod(link.ifindex, link.name);
} else if (cmd === "tc-probe") {
  const link = mustLink(args[0] as string);
  const query = libbpf.tcQuery(link.ifindex, BPF_TC_INGRESS, TC_HANDLE, TC_PRIORITY);
  const detached = libbpf.tcDetach(link.ifindex, BPF_TC_INGRESS, TC_HANDLE, TC_PRIORITY, link.name);
  process.stdout.write(JSON.stringify({ query, detached }));
} else if (cmd === "pod-bridge") {
  // SUBNET, or SUBNET,SUBNET6 in a dual-stack network
  const [v4, v6] = (args[1] as string).split(",");
  const subnet = Cidr.parse(v4 as string);
  const subnet6 = v6 ? Cidr6.parse(v6) : undefined;
  const pb = new PodBridge(
    args[0] as string,
    () => subnet,
    args[2],
    createLogger("warn"),
    () => subnet6,
  );
  process.stdout.write(JSON.stringify(pb.sync()));
} else {
  process.stderr.write(
    "usage: node-helper setup JSON | attach-pod PIN IFNAME | detach-pod IFNAME | tc-probe IFNAME | pod-bridge PIN SUBNET [BRIDGE]\n",
  );
  process.exit(2);
}
