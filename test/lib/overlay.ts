// overlayd nodes without an agent, for data-path tests: programs loaded by
// the agent's own setupNode (in the node's namespace, via node-helper), map
// entries written from this process, pods registered as the CNI plugin does
// and bridged pods found as `--pod-bridge auto` finds them.
import { EndpointMap, EndpointMap6 } from "../../agent/bpf/endpoint-map";
import { SubnetHostMap, SubnetHostMap6 } from "../../agent/bpf/subnet-map";
import { Cidr, parseIp } from "../../agent/net/ip";
import { Cidr6, parseIp6 } from "../../agent/net/ip6";
import { type PodBridgeSync } from "../../agent/node/pod-bridge";
import { NETWORK, type NodeInfo, type PodInfo } from "./topology";
import { nodeHelper } from "./traffic";

/** What these helpers need of a node (the bench's nodes have no more); with
 * underlayIp6 and subnet6 (in NETWORK6) a dual-stack node. */
export type OverlayNode = Pick<NodeInfo, "ns" | "underlayIp" | "subnet" | "pinPath"> & {
  underlayIp6?: string;
  subnet6?: string;
};

/** The IPv6 network of dual-stack helper nodes. */
export const NETWORK6 = "fc00:5::/48";

export interface Loaded {
  vtepMac: string;
  mechanism: "tc" | "xdp";
  kernelDecap: boolean;
  reason: string;
}

/** Loads and attaches the data path on a node (what a starting agent does). */
export function loadNode(n: OverlayNode, decap: "auto" | "tc" | "xdp"): Loaded {
  const out = nodeHelper(n.ns, [
    "setup",
    JSON.stringify({
      underlay: "eth0",
      publicIp: n.underlayIp,
      network: NETWORK,
      subnet: n.subnet,
      pinPath: n.pinPath,
      decap,
      ...(n.underlayIp6 && n.subnet6
        ? { v6: { publicIp: n.underlayIp6, network: NETWORK6, subnet: n.subnet6 } }
        : {}),
    }),
  ]);
  return JSON.parse(out) as Loaded;
}

/** Subnet map entries for peers, as the reconciler writes them from leases. */
export function programPeers(
  n: OverlayNode,
  peers: { node: OverlayNode; vtepMac: string }[],
): void {
  const m = SubnetHostMap.openPinned(n.pinPath);
  const m6 = SubnetHostMap6.openPinned(n.pinPath);
  try {
    for (const p of peers) {
      m.upsert(Cidr.parse(p.node.subnet), {
        remoteIp: parseIp(p.node.underlayIp),
        vtepMac: p.vtepMac,
        flags: 0,
      });
      if (n.subnet6 && p.node.subnet6 && p.node.underlayIp6) {
        m6.upsert(Cidr6.parse(p.node.subnet6), {
          remoteIp: parseIp6(p.node.underlayIp6),
          vtepMac: p.vtepMac,
          flags: 0,
        });
      }
    }
  } finally {
    m.close();
    m6.close();
  }
}

/** What the CNI plugin's fast path does for a pod: encap on its veth, an endpoint. */
export function registerPod(
  n: OverlayNode,
  pod: Pick<PodInfo, "ip" | "ip6" | "hostVeth" | "hostIfindex" | "mac" | "hostMac">,
): void {
  nodeHelper(n.ns, ["attach-pod", n.pinPath, pod.hostVeth]);
  const ep = { ifindex: pod.hostIfindex, podMac: pod.mac, hostMac: pod.hostMac };
  const eps = EndpointMap.openPinned(n.pinPath);
  const eps6 = EndpointMap6.openPinned(n.pinPath);
  try {
    eps.upsert(parseIp(pod.ip), ep);
    if (pod.ip6) eps6.upsert(parseIp6(pod.ip6), ep);
  } finally {
    eps.close();
    eps6.close();
  }
}

/** One pass of the agent's bridged-pod fast path (agent/node/pod-bridge.ts). */
export function syncPodBridge(n: OverlayNode): PodBridgeSync {
  const subnets = n.subnet6 ? `${n.subnet},${n.subnet6}` : n.subnet;
  return JSON.parse(nodeHelper(n.ns, ["pod-bridge", n.pinPath, subnets])) as PodBridgeSync;
}
