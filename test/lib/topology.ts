// Test topology in network namespaces this run creates (unique names per
// run; destroy() removes exactly those):
//
//   ovl<id>-sw : bridge "br0", the underlay switch, 172.31.0.0/24
//   ovl<id>-nK : node K, "eth0" = 172.31.0.K, pods behind bridge "cni0"
//   ovl<id>-pK : pod K, "eth0" = 10.5.K.2/24 via 10.5.K.1
//
// Pins go to a bpffs this run mounts under /run, which survives `ip netns
// exec` (it remounts /sys, hiding /sys/fs/bpf).
import { mkdirSync, rmSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { inNs, sh } from "./sh";

export const NETWORK = "10.5.0.0/16";

/**
 * The two underlays the tests and `make bench` model:
 *   veth  the switch hands the senders' 64 KB GSO frames on untouched;
 *   nic   what a physical NIC gives: the node keeps TSO, the switch port
 *         towards each node segments to MTU-sized frames (no TSO/GSO on it)
 *         and the node's eth0 rebuilds them with GRO (veth runs NAPI then).
 */
export type Wire = "veth" | "nic";

/** Offloads a switch port must lack to segment GSO frames to wire size. */
const SEGMENT_OFF = [
  "tso",
  "off",
  "gso",
  "off",
  "tx-udp_tnl-segmentation",
  "off",
  "tx-udp_tnl-csum-segmentation",
  "off",
  "tx-gso-partial",
  "off",
];

/** A veth pair: `a` in namespace `nsA`, its peer `b` in `nsB`. */
export function addVeth(nsA: string, a: string, nsB: string, b: string): void {
  sh(["ip", "link", "add", a, "netns", nsA, "type", "veth", "peer", "name", b, "netns", nsB]);
}

/** Makes the link between a switch port and a node's eth0 NIC-like. */
export function nicLike(switchNs: string, port: string, nodeNs: string): void {
  sh(inNs(switchNs, ["ethtool", "-K", port, ...SEGMENT_OFF]));
  sh(inNs(nodeNs, ["ethtool", "-K", "eth0", "gro", "on"]));
}

export interface PodInfo {
  ns: string;
  ip: string;
  /** The pod's IPv6 address, in a dual-stack network. */
  ip6?: string;
  hostVeth: string;
  mac: string;
  hostMac: string;
  hostIfindex: number;
  /** Set for pods made through the CNI plugin. */
  containerId?: string;
}

export interface NodeInfo {
  index: number;
  ns: string;
  underlayIp: string;
  /** The node's IPv6 underlay address (addNode's ipv6 option). */
  underlayIp6?: string;
  subnet: string;
  gateway: string;
  pinPath: string;
  pods: PodInfo[];
}

export class Topology {
  readonly id = randomBytes(3).toString("hex");
  readonly prefix = `ovl${this.id}`;
  readonly runDir = `/run/overlayd-test-${this.id}`;
  readonly bpffs = join(this.runDir, "bpffs");
  readonly nodes: NodeInfo[] = [];
  private readonly namespaces: string[] = [];
  private mounted = false;

  get switchNs(): string {
    return `${this.prefix}-sw`;
  }

  create(): void {
    mkdirSync(this.bpffs, { recursive: true });
    sh(["mount", "-t", "bpf", "bpf", this.bpffs]);
    this.mounted = true;
    this.addNs(this.switchNs);
    sh(inNs(this.switchNs, ["ip", "link", "add", "br0", "type", "bridge"]));
    sh(inNs(this.switchNs, ["ip", "link", "set", "br0", "up"]));
    // A switch forwards frames; with br_netfilter loaded the kernel would
    // also validate (and silently drop) malformed IPv4 on the way.
    for (const f of ["iptables", "ip6tables", "arptables"]) {
      sh(inNs(this.switchNs, ["sysctl", "-qw", `net.bridge.bridge-nf-call-${f}=0`]), {
        allowFail: true,
      });
    }
    sh(inNs(this.switchNs, ["ip", "link", "set", "lo", "up"]));
  }

  /** Namespaces this run made, in creation order. */
  createdNamespaces(): readonly string[] {
    return this.namespaces;
  }

  addNs(name: string): void {
    sh(["ip", "netns", "add", name]);
    this.namespaces.push(name);
    sh(inNs(name, ["ip", "link", "set", "lo", "up"]));
  }

  /** A node on the underlay switch, with a pod subnet 10.5.K.0/24. */
  addNode(index: number, opts: { mtu?: number; wire?: Wire; ipv6?: boolean } = {}): NodeInfo {
    const ns = `${this.prefix}-n${index}`;
    this.addNs(ns);
    const port = `n${index}`;
    sh([
      "ip",
      "link",
      "add",
      "eth0",
      "netns",
      ns,
      "type",
      "veth",
      "peer",
      "name",
      port,
      "netns",
      this.switchNs,
    ]);
    sh(inNs(this.switchNs, ["ip", "link", "set", port, "master", "br0", "up"]));
    const mtu = String(opts.mtu ?? 1500);
    sh(inNs(this.switchNs, ["ip", "link", "set", port, "mtu", mtu]));
    sh(inNs(ns, ["ip", "link", "set", "eth0", "mtu", mtu, "up"]));
    if (opts.wire === "nic") nicLike(this.switchNs, port, ns);
    const underlayIp = `172.31.0.${index}`;
    sh(inNs(ns, ["ip", "addr", "add", `${underlayIp}/24`, "dev", "eth0"]));
    sh(inNs(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]));
    // IPv6 underlay: fd31::K/64 (nodad: the switch has nobody else on it).
    const underlayIp6 = opts.ipv6 ? `fd31::${index.toString(16)}` : undefined;
    if (underlayIp6) {
      // Kept across a link down, as a node's network manager keeps (or
      // re-adds) a static address: the kernel's default flushes it.
      sh(inNs(ns, ["sysctl", "-qw", "net.ipv6.conf.eth0.keep_addr_on_down=1"]));
      sh(inNs(ns, ["ip", "-6", "addr", "add", `${underlayIp6}/64`, "dev", "eth0", "nodad"]));
    }
    const node: NodeInfo = {
      index,
      ns,
      underlayIp,
      ...(underlayIp6 ? { underlayIp6 } : {}),
      subnet: `10.5.${index}.0/24`,
      gateway: `10.5.${index}.1`,
      pinPath: join(this.bpffs, `n${index}`),
      pods: [],
    };
    this.nodes.push(node);
    return node;
  }

  /**
   * A node behind a router: its own segment 172.31.100.0/24 (one node
   * there), reached from the switch's 172.31.0.0/24 through a router
   * namespace at 172.31.0.253 / 172.31.100.254. Call routeToRouted() once
   * every node exists, so that the switch's nodes (and etcd) can reach it.
   */
  addRoutedNode(index: number): NodeInfo {
    const rt = `${this.prefix}-rt`;
    this.addNs(rt);
    sh([
      "ip",
      "link",
      "add",
      "up0",
      "netns",
      rt,
      "type",
      "veth",
      "peer",
      "name",
      "rt",
      "netns",
      this.switchNs,
    ]);
    sh(inNs(this.switchNs, ["ip", "link", "set", "rt", "master", "br0", "up"]));
    sh(inNs(rt, ["ip", "addr", "add", "172.31.0.253/24", "dev", "up0"]));
    sh(inNs(rt, ["ip", "link", "set", "up0", "up"]));
    sh(inNs(rt, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]));
    const ns = `${this.prefix}-n${index}`;
    this.addNs(ns);
    sh([
      "ip",
      "link",
      "add",
      "eth0",
      "netns",
      ns,
      "type",
      "veth",
      "peer",
      "name",
      "dn0",
      "netns",
      rt,
    ]);
    sh(inNs(rt, ["ip", "addr", "add", "172.31.100.254/24", "dev", "dn0"]));
    sh(inNs(rt, ["ip", "link", "set", "dn0", "up"]));
    const underlayIp = `172.31.100.${index}`;
    sh(inNs(ns, ["ip", "addr", "add", `${underlayIp}/24`, "dev", "eth0"]));
    sh(inNs(ns, ["ip", "link", "set", "eth0", "up"]));
    sh(inNs(ns, ["ip", "route", "add", "default", "via", "172.31.100.254"]));
    sh(inNs(ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]));
    const node: NodeInfo = {
      index,
      ns,
      underlayIp,
      subnet: `10.5.${index}.0/24`,
      gateway: `10.5.${index}.1`,
      pinPath: join(this.bpffs, `n${index}`),
      pods: [],
    };
    this.nodes.push(node);
    return node;
  }

  /** Routes the routed node's segment from the switch and its nodes. */
  routeToRouted(): void {
    const via = ["172.31.100.0/24", "via", "172.31.0.253"];
    sh(inNs(this.switchNs, ["ip", "route", "replace", ...via]));
    for (const n of this.nodes) {
      if (n.underlayIp.startsWith("172.31.0.")) sh(inNs(n.ns, ["ip", "route", "replace", ...via]));
    }
  }

  /** Gives the switch an address on the underlay (for an etcd there). */
  switchAddress(ip = "172.31.0.254"): string {
    sh(inNs(this.switchNs, ["ip", "addr", "add", `${ip}/24`, "dev", "br0"]));
    return ip;
  }

  /**
   * A pod behind the node's cni0 bridge (what the CNI bridge plugin makes).
   * `subnet` overrides the node's: the agent's lease decides it.
   */
  addPod(node: NodeInfo, opts: { mtu?: number; subnet?: string } = {}): PodInfo {
    const k = node.pods.length + 1;
    if (opts.subnet) {
      const base = opts.subnet.split("/")[0]!.split(".").slice(0, 3).join(".");
      node.subnet = opts.subnet;
      node.gateway = `${base}.1`;
    }
    const prefix = node.gateway.split(".").slice(0, 3).join(".");
    const ns = `${this.prefix}-p${node.index}${k > 1 ? `-${k}` : ""}`;
    this.addNs(ns);
    if (k === 1) {
      sh(inNs(node.ns, ["ip", "link", "add", "cni0", "type", "bridge"]));
      sh(inNs(node.ns, ["ip", "addr", "add", `${node.gateway}/24`, "dev", "cni0"]));
      sh(inNs(node.ns, ["sysctl", "-qw", "net.ipv4.conf.cni0.rp_filter=0"]));
      sh(inNs(node.ns, ["ip", "link", "set", "cni0", "up"]));
    }
    const hostVeth = `veth${k}`;
    const mtu = String(opts.mtu ?? 1450);
    sh([
      "ip",
      "link",
      "add",
      hostVeth,
      "netns",
      node.ns,
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "netns",
      ns,
    ]);
    sh(inNs(node.ns, ["ip", "link", "set", hostVeth, "master", "cni0", "mtu", mtu, "up"]));
    const ip = `${prefix}.${k + 1}`;
    sh(inNs(ns, ["ip", "link", "set", "eth0", "mtu", mtu, "up"]));
    sh(inNs(ns, ["ip", "addr", "add", `${ip}/24`, "dev", "eth0"]));
    sh(inNs(ns, ["ip", "route", "add", "default", "via", node.gateway]));
    const podLink = JSON.parse(sh(inNs(ns, ["ip", "-j", "link", "show", "eth0"])))[0];
    const hostLink = JSON.parse(sh(inNs(node.ns, ["ip", "-j", "link", "show", hostVeth])))[0];
    const pod: PodInfo = {
      ns,
      ip,
      hostVeth,
      mac: podLink.address,
      hostMac: hostLink.address,
      hostIfindex: hostLink.ifindex,
    };
    node.pods.push(pod);
    return pod;
  }

  destroy(): void {
    for (const ns of this.namespaces.reverse()) sh(["ip", "netns", "del", ns], { allowFail: true });
    this.namespaces.length = 0;
    if (this.mounted) {
      sh(["umount", this.bpffs], { allowFail: true });
      this.mounted = false;
    }
    rmSync(this.runDir, { recursive: true, force: true });
  }
}
