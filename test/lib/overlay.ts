// overlayd nodes without an agent, for data-path tests: programs loaded by
// the agent's own setupNode (in the node's namespace, via node-helper), map
// entries written from this process, pods registered as the CNI plugin does
// and bridged pods found as `--pod-bridge auto` finds them.
import { EndpointMap } from "../../agent/bpf/endpoint-map";
import { SubnetHostMap } from "../../agent/bpf/subnet-map";
import { Cidr, parseIp } from "../../agent/net/ip";
import { type PodBridgeSync } from "../../agent/node/pod-bridge";
import { NETWORK, type NodeInfo, type PodInfo } from "./topology";
import { nodeHelper } from "./traffic";

/** What these helpers need of a node (the bench's nodes have no more). */
export type OverlayNode = Pick<NodeInfo, "ns" | "underlayIp" | "subnet" | "pinPath">;

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
  try {
    for (const p of peers) {
      m.upsert(Cidr.parse(p.node.subnet), {
        remoteIp: parseIp(p.node.underlayIp),
        vtepMac: p.vtepMac,
        flags: 0,
      });
    }
  } finally {
    m.close();
  }
}

/** What the CNI plugin's fast path does for a pod: encap on its veth, an endpoint. */
export function registerPod(
  n: OverlayNode,
  pod: Pick<PodInfo, "ip" | "hostVeth" | "hostIfindex" | "mac" | "hostMac">,
): void {
  nodeHelper(n.ns, ["attach-pod", n.pinPath, pod.hostVeth]);
  const eps = EndpointMap.openPinned(n.pinPath);
  try {
    eps.upsert(parseIp(pod.ip), {
      ifindex: pod.hostIfindex,
      podMac: pod.mac,
      hostMac: pod.hostMac,
    });
  } finally {
    eps.close();
  }
}

/** One pass of the agent's bridged-pod fast path (agent/node/pod-bridge.ts). */
export function syncPodBridge(n: OverlayNode): PodBridgeSync {
  return JSON.parse(nodeHelper(n.ns, ["pod-bridge", n.pinPath, n.subnet])) as PodBridgeSync;
}
