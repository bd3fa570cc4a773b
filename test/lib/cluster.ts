// A whole test cluster: namespaces, etcd on the underlay, N overlayd nodes,
// a pod per node made through the CNI plugin. For suites that test what sits
// on top (overlayctl, metrics, CNI) rather than how it comes up.
import { join } from "node:path";
import { AgentProc } from "./agent-proc";
import { addCniPod } from "./cni";
import { EtcdServer } from "./etcd";
import { Topology, type NodeInfo, type PodInfo } from "./topology";

export const PREFIX = "/coreos.com/network";
export const CONFIG = JSON.stringify({ Network: "10.5.0.0/16", Backend: { Type: "vxlan" } });

export class Cluster {
  readonly topo = new Topology();
  etcd!: EtcdServer;
  readonly nodes: NodeInfo[] = [];
  readonly agents = new Map<number, AgentProc>();

  async start(n: number, agentFlags: string[] = []): Promise<this> {
    this.topo.create();
    const ip = this.topo.switchAddress();
    this.etcd = await new EtcdServer({ ns: this.topo.switchNs, ip, clientPort: 2379 }).start();
    this.etcd.put(`${PREFIX}/config`, CONFIG);
    for (let i = 1; i <= n; i++) this.nodes.push(this.topo.addNode(i));
    for (const node of this.nodes) this.startAgent(node, agentFlags);
    for (const node of this.nodes) await this.agent(node).waitReady();
    for (const node of this.nodes) this.addPod(node);
    return this;
  }

  subnetFile(node: NodeInfo): string {
    return join(this.topo.runDir, `n${node.index}`, "subnet.env");
  }

  startAgent(node: NodeInfo, flags: string[] = []): AgentProc {
    const a = new AgentProc(
      node.ns,
      [
        "--etcd-endpoints",
        this.etcd.endpoint,
        "--iface",
        "eth0",
        "--pin-path",
        node.pinPath,
        "--subnet-file",
        this.subnetFile(node),
        "--healthz-addr",
        "127.0.0.1:9473",
        "--metrics-addr",
        "0.0.0.0:9474",
        ...flags,
      ],
      this.subnetFile(node),
    ).start();
    this.agents.set(node.index, a);
    return a;
  }

  agent(node: NodeInfo): AgentProc {
    const a = this.agents.get(node.index);
    if (!a) throw new Error(`no agent on node ${node.index}`);
    return a;
  }

  addPod(node: NodeInfo): PodInfo {
    return addCniPod(this.topo, node, { subnetFile: this.subnetFile(node), pinPath: node.pinPath });
  }

  pod(node: NodeInfo, k = 0): PodInfo {
    const p = node.pods[k];
    if (!p) throw new Error(`node ${node.index} has no pod ${k}`);
    return p;
  }

  async stop(): Promise<void> {
    for (const a of this.agents.values()) await a.stop("SIGKILL");
    await this.etcd?.stop();
    this.topo.destroy();
  }
}
