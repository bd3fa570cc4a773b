// A whole test cluster: namespaces, etcd on the underlay, N overlayd nodes,
// a pod per node made through the CNI plugin. For suites that test what sits
// on top (overlayctl, metrics, CNI) rather than how it comes up.
import { join } from "node:path";
import { AgentProc } from "./agent-proc";
import { addCniPod } from "./cni";
import { EtcdServer, type TlsFiles } from "./etcd";
import { Topology, type NodeInfo, type PodInfo } from "./topology";

export const PREFIX = "/coreos.com/network";
export const CONFIG = JSON.stringify({ Network: "10.5.0.0/16", Backend: { Type: "vxlan" } });

export interface ClusterOptions {
  /** Network config JSON (default CONFIG). */
  config?: string;
  /** etcd members on the underlay (default 1); agents get every endpoint. */
  etcdMembers?: number;
  agentFlags?: string[];
  /** Flags one node's agent gets after agentFlags (by node.index, from 1),
   * on its first start and every restart through startAgent(node). */
  nodeFlags?: (index: number) => string[];
  tls?: TlsFiles;
  /** Processes outlive this one (the demo's KEEP=1). */
  detached?: boolean;
  /** Nodes get an IPv6 underlay address too (a dual-stack config). */
  ipv6?: boolean;
}

export class Cluster {
  readonly topo = new Topology();
  etcd!: EtcdServer;
  readonly members: EtcdServer[] = [];
  /** Flags every agent gets (TLS, the options' agentFlags). */
  defaultFlags: string[] = [];
  /** Per node (by node.index): flags after defaultFlags; set to change what
   * the node's next startAgent(node) runs with. */
  readonly nodeFlags = new Map<number, string[]>();
  private detached = false;
  readonly nodes: NodeInfo[] = [];
  readonly agents = new Map<number, AgentProc>();

  /** All phases: etcd, n nodes, an agent on each (ready), a pod on each. */
  async start(n: number, opts: ClusterOptions = {}): Promise<this> {
    await this.startEtcd(opts);
    this.addNodes(n, { ipv6: opts.ipv6 ?? false });
    if (opts.nodeFlags)
      for (const node of this.nodes) this.nodeFlags.set(node.index, opts.nodeFlags(node.index));
    await this.startAgents();
    for (const node of this.nodes) this.addPod(node);
    return this;
  }

  /** The underlay switch, etcd on it (one or more members), the config. */
  async startEtcd(opts: ClusterOptions = {}): Promise<void> {
    this.topo.create();
    const ip = this.topo.switchAddress();
    const count = opts.etcdMembers ?? 1;
    const peers = Array.from(
      { length: count },
      (_, i) => `m${i}=http://${ip}:${2380 + 10 * i}`,
    ).join(",");
    for (let i = 0; i < count; i++) {
      this.members.push(
        new EtcdServer({
          ns: this.topo.switchNs,
          ip,
          clientPort: 2379 + 10 * i,
          peerPort: 2380 + 10 * i,
          name: `m${i}`,
          initialCluster: peers,
          tls: opts.tls,
          detached: opts.detached,
        }),
      );
    }
    await Promise.all(this.members.map((m) => m.start()));
    this.etcd = this.members[0] as EtcdServer;
    this.etcd.put(`${PREFIX}/config`, opts.config ?? CONFIG);
    const t = opts.tls;
    const tlsFlags = t
      ? ["--etcd-cafile", t.ca, "--etcd-certfile", t.clientCert, "--etcd-keyfile", t.clientKey]
      : [];
    this.defaultFlags = [...tlsFlags, ...(opts.agentFlags ?? [])];
    this.detached = opts.detached ?? false;
  }

  addNodes(n: number, o: { ipv6?: boolean } = {}): void {
    for (let i = 1; i <= n; i++) this.nodes.push(this.topo.addNode(i, o));
  }

  /** An agent on every node, waited for until ready. */
  async startAgents(): Promise<void> {
    for (const node of this.nodes) this.startAgent(node);
    for (const node of this.nodes) await this.agent(node).waitReady();
  }

  /** Every member's client URL, as agents are configured. */
  endpoints(): string {
    return this.members.map((m) => m.endpoint).join(",");
  }

  /** A /24 of the default network that no running agent leases: for a
   *  route added by hand inside it (leases are picked at random). */
  freeSubnet(): string {
    const held = new Set([...this.agents.values()].map((a) => a.subnet()));
    for (let k = 77; ; k++) if (!held.has(`10.5.${k}.0/24`)) return `10.5.${k}.0/24`;
  }

  subnetFile(node: NodeInfo): string {
    return join(this.topo.runDir, `n${node.index}`, "subnet.env");
  }

  /** What startAgent(node) runs with by default: defaultFlags, then the
   * node's own. */
  flagsOf(node: NodeInfo): string[] {
    return [...this.defaultFlags, ...(this.nodeFlags.get(node.index) ?? [])];
  }

  startAgent(node: NodeInfo, flags: string[] = this.flagsOf(node), command?: string[]): AgentProc {
    const a = new AgentProc(
      node.ns,
      this.agentArgs(node, flags),
      this.subnetFile(node),
      [],
      command,
    );
    return this.runAgent(node, a);
  }

  /** The flags every agent of this cluster runs with, then `flags`. */
  agentArgs(node: NodeInfo, flags: string[] = this.defaultFlags): string[] {
    return [
      "--etcd-endpoints",
      this.endpoints(),
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
    ];
  }

  /** Starts an agent made elsewhere (e.g. in a container) as node's agent. */
  runAgent(node: NodeInfo, a: AgentProc): AgentProc {
    a.start(this.detached);
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
    for (const m of this.members) await m.stop();
    this.topo.destroy();
  }
}
