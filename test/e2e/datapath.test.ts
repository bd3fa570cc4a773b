// End to end, data path only: three overlayd nodes and one node running
// flannel's kernel VXLAN, each with a pod, in namespaces this run creates.
// Map entries are written through SubnetHostMap from this process; the
// programs forward with no agent running (the helper that loaded them has
// exited), which is also what a restarting agent relies on.
import assert from "node:assert/strict";
import { StatsReader } from "../../agent/bpf/stats";
import { SubnetHostMap } from "../../agent/bpf/subnet-map";
import { Cidr, parseIp } from "../../agent/net/ip";
import { flannelAddLease, flannelUp } from "../lib/flannel";
import { loadNode, programPeers, registerPod } from "../lib/overlay";
import { requireEnv } from "../lib/require";
import { exited, inNs, sh } from "../lib/sh";
import { Topology, type NodeInfo } from "../lib/topology";
import { iperf, ping, pingOutput } from "../lib/traffic";

describe("e2e: data path between namespaces", function () {
  this.timeout(180000);
  const topo = new Topology();
  const vtep = new Map<number, string>();
  let nodes: NodeInfo[] = [];
  let flannel: NodeInfo;

  function podIp(n: NodeInfo): string {
    return (n.pods[0] as { ip: string }).ip;
  }
  function podNs(n: NodeInfo): string {
    return (n.pods[0] as { ns: string }).ns;
  }

  function withMap<T>(n: NodeInfo, fn: (m: SubnetHostMap) => T): T {
    const m = SubnetHostMap.openPinned(n.pinPath);
    try {
      return fn(m);
    } finally {
      m.close();
    }
  }

  function setup(n: NodeInfo, decap: "tc" | "xdp"): void {
    vtep.set(n.index, loadNode(n, decap).vtepMac);
  }

  function program(n: NodeInfo, peers: NodeInfo[]): void {
    programPeers(
      n,
      peers.map((p) => ({ node: p, vtepMac: vtep.get(p.index) as string })),
    );
  }

  before(function () {
    requireEnv(this, { root: true, tools: ["ip", "ping", "iperf3", "bridge", "bpftool"] });
    topo.create();
    nodes = [1, 2, 3].map((i) => topo.addNode(i));
    flannel = topo.addNode(4);
    for (const n of [...nodes, flannel]) topo.addPod(n);
    for (const n of nodes) setup(n, "tc");
    vtep.set(4, flannelUp(flannel.ns, { publicIp: flannel.underlayIp, subnet: flannel.subnet }));
    for (const n of nodes)
      program(
        n,
        [...nodes, flannel].filter((p) => p !== n),
      );
    for (const n of nodes) {
      flannelAddLease(flannel.ns, {
        subnet: n.subnet,
        publicIp: n.underlayIp,
        vtepMac: vtep.get(n.index) as string,
      });
    }
    // Pod fast path on nodes 1 and 2: encap at the veth, decap into the pod.
    // Node 3 keeps pods on the bridge only: overlay device + FIB paths.
    for (const n of nodes.slice(0, 2)) registerPod(n, n.pods[0]!);
  });

  after(function () {
    topo.destroy();
  });

  it("pings pod to pod in every direction among overlayd nodes", function () {
    for (const a of nodes) {
      for (const b of nodes) {
        if (a === b) continue;
        assert.ok(ping(podNs(a), podIp(b)), `${podNs(a)} -> ${podIp(b)}`);
      }
    }
  });

  it("carries an iperf3 TCP transfer pod to pod in every direction", async function () {
    const rates: string[] = [];
    for (const a of nodes) {
      for (const b of nodes) {
        if (a === b) continue;
        const bps = await iperf(podNs(b), podIp(b), podNs(a));
        rates.push(`${a.index}->${b.index} ${(bps / 1e9).toFixed(1)}G`);
        // Sanity floor only; speed is measured by `make bench`, not here.
        assert.ok(bps > 50e6, `${a.index}->${b.index}: ${bps} bit/s`);
      }
    }
    process.stdout.write(`      ${rates.join("  ")}\n`);
  });

  it("reaches remote pods from a node itself (through the overlay device)", function () {
    assert.ok(ping(nodes[0]!.ns, podIp(nodes[1]!)));
    assert.ok(ping(nodes[2]!.ns, podIp(nodes[0]!)));
  });

  it("moves the datapath and per-peer counters", function () {
    const n1 = nodes[0]!;
    // none yet if no packet went to that peer (the data path makes them)
    const before = withMap(n1, (m) => m.peerCounters().get(parseIp(nodes[1]!.underlayIp))) ?? {
      txPackets: 0n,
      txBytes: 0n,
      rxPackets: 0n,
      rxBytes: 0n,
    };
    const stats = StatsReader.openPinned(n1.pinPath);
    const tx0 = stats.read().traffic.get("tx")!.packets;
    const rx0 = stats.read().traffic.get("rx")!.packets;
    assert.ok(ping(podNs(n1), podIp(nodes[1]!), { count: 5 }));
    const after = withMap(n1, (m) => m.peerCounters().get(parseIp(nodes[1]!.underlayIp)));
    const t = stats.read().traffic;
    stats.close();
    assert.ok(after);
    assert.ok(after.txPackets >= before.txPackets + 5n, "peer tx packets");
    assert.ok(after.rxPackets >= before.rxPackets + 5n, "peer rx packets");
    assert.ok(t.get("tx")!.packets >= tx0 + 5n);
    assert.ok(t.get("rx")!.packets >= rx0 + 5n);
  });

  it("stops traffic to a subnet whose entry is removed, and only to it", function () {
    const [n1, n2, n3] = nodes as [NodeInfo, NodeInfo, NodeInfo];
    withMap(n1, (m) => assert.ok(m.delete(Cidr.parse(n3.subnet))));
    try {
      assert.ok(!ping(podNs(n1), podIp(n3)), "1 -> 3 must fail without an entry");
      assert.ok(ping(podNs(n1), podIp(n2)), "1 -> 2 unaffected");
      assert.ok(ping(podNs(n2), podIp(n3)), "2 -> 3 unaffected");
    } finally {
      program(n1, [n3]);
    }
    assert.ok(ping(podNs(n1), podIp(n3)), "1 -> 3 back after re-adding");
  });

  it("exchanges traffic with a flannel kernel-VXLAN node both ways", async function () {
    for (const n of nodes) {
      assert.ok(ping(podNs(n), podIp(flannel)), `overlayd pod ${n.index} -> flannel pod`);
      assert.ok(ping(podNs(flannel), podIp(n)), `flannel pod -> overlayd pod ${n.index}`);
    }
    assert.ok(ping(flannel.ns, podIp(nodes[0]!)), "flannel host -> overlayd pod");
    const to = await iperf(podNs(flannel), podIp(flannel), podNs(nodes[0]!));
    const from = await iperf(podNs(nodes[0]!), podIp(nodes[0]!), podNs(flannel));
    assert.ok(to > 50e6 && from > 50e6, `to ${to} from ${from}`);
  });

  it("answers fragmentation-needed to a pod whose MTU ignores the overlay", function () {
    // Pod MTU 1500 on a 1500 underlay: 1472 bytes + DF cannot be carried.
    const n1 = nodes[0]!;
    sh(inNs(podNs(n1), ["ip", "link", "set", "eth0", "mtu", "1500"]));
    sh(inNs(n1.ns, ["ip", "link", "set", n1.pods[0]!.hostVeth, "mtu", "1500"]));
    try {
      const out = pingOutput(podNs(n1), podIp(nodes[1]!), ["-M", "do", "-s", "1472"]);
      assert.match(out, /Frag needed|mtu = 1450|Message too long/i);
      assert.ok(
        ping(podNs(n1), podIp(nodes[1]!), { size: 1422, df: true }),
        "a fitting packet still passes",
      );
    } finally {
      sh(inNs(n1.ns, ["ip", "link", "set", n1.pods[0]!.hostVeth, "mtu", "1450"]));
      sh(inNs(podNs(n1), ["ip", "link", "set", "eth0", "mtu", "1450"]));
      sh(inNs(podNs(n1), ["ip", "route", "flush", "cache"]));
    }
  });

  it("switches a node's decap to XDP and back without losing reachability", async function () {
    const n2 = nodes[1]!;
    setup(n2, "xdp");
    const link = JSON.parse(sh(inNs(n2.ns, ["ip", "-d", "-j", "link", "show", "eth0"])))[0];
    assert.ok(link.xdp, "an XDP program is attached to the underlay");
    assert.equal(
      sh(inNs(n2.ns, ["tc", "filter", "show", "dev", "eth0", "ingress"])).includes("ovl_decap_tc"),
      false,
    );
    assert.ok(ping(podNs(nodes[0]!), podIp(n2)));
    assert.ok(ping(podNs(flannel), podIp(n2)));
    assert.ok((await iperf(podNs(n2), podIp(n2), podNs(nodes[2]!))) > 50e6);
    setup(n2, "tc");
    const back = JSON.parse(sh(inNs(n2.ns, ["ip", "-d", "-j", "link", "show", "eth0"])))[0];
    assert.ok(!back.xdp, "XDP detached again");
    assert.match(
      sh(inNs(n2.ns, ["tc", "filter", "show", "dev", "eth0", "ingress"])),
      /ovl_decap_tc/,
    );
    assert.ok(ping(podNs(nodes[0]!), podIp(n2)));
  });

  it("reloads the programs over a live node without losing pings", async function () {
    const n1 = nodes[0]!;
    const { spawn } = await import("node:child_process");
    const p = spawn(
      "ip",
      ["netns", "exec", podNs(nodes[1]!), "ping", "-n", "-i", "0.01", "-c", "300", podIp(n1)],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    await new Promise((r) => setTimeout(r, 500));
    setup(n1, "tc"); // what a restarted agent does: reload, reuse pins, replace
    await exited(p);
    const m = /(\d+) packets transmitted, (\d+) received/.exec(out);
    assert.ok(m, out);
    assert.equal(m[1], m[2], `lost pings during reload: ${out.split("\n").slice(-4).join(" ")}`);
  });
});
