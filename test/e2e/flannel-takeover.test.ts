// Replacing flannel on a live node. Node 2 runs flannel's vxlan backend (the
// fixture programs flannel.1, its neighbour/FDB entries and routes, a cni0
// bridge with a pod, and its lease in etcd under an etcd lease, as flanneld
// does); node 1 runs overlayd. overlayd is started on node 2 while a 1 ms
// ping and an iperf3 stream run from node 2's pod to node 1's. It takes the
// same lease (same subnet, same PublicIP, same VtepMAC), takes over
// forwarding and removes flannel's device only after its own path is up.
// Then the way back: `overlayd --cleanup` and flannel's state restored.
import assert from "node:assert/strict";
import { SubnetHostMap } from "../../agent/bpf/subnet-map";
import { StatsReader } from "../../agent/bpf/stats";
import { formatIp } from "../../agent/net/ip";
import { OVERLAYD } from "../lib/agent-proc";
import { Cluster, PREFIX } from "../lib/cluster";
import { flannelJoin } from "../lib/flannel";
import { requireEnv } from "../lib/require";
import { inNs, sh, shStatus, sleep, waitFor } from "../lib/sh";
import { type NodeInfo, type PodInfo } from "../lib/topology";
import { ping, pingReplies, underLoadBetween } from "../lib/traffic";

const FL_SUBNET = "10.5.250.0/24";
const FL_KEY = `${PREFIX}/subnets/10.5.250.0-24`;

describe("e2e: replacing flannel on a live node", function () {
  this.timeout(300000);
  const c = new Cluster();
  let n1: NodeInfo;
  let fl: NodeInfo;
  let flannelMac = "";
  const pod = (n: NodeInfo) => n.pods[0] as PodInfo;

  /** flanneld's part: flannel.1, the peers' entries, its lease. */
  function runFlannel(): string {
    return flannelJoin(c.etcd, PREFIX, fl.ns, {
      publicIp: fl.underlayIp,
      subnet: FL_SUBNET,
      ttl: 600,
    });
  }

  function entryFor(n: NodeInfo, subnet: string) {
    const m = SubnetHostMap.openPinned(n.pinPath);
    try {
      return m.list().find((e) => e.subnet.toString() === subnet);
    } finally {
      m.close();
    }
  }

  before(async function () {
    requireEnv(this, { root: true, tools: ["ip", "bridge", "ping", "iperf3", "etcd", "etcdctl"] });
    await c.startEtcd();
    c.addNodes(1);
    n1 = c.nodes[0] as NodeInfo;
    await c.startAgents();
    c.addPod(n1);
    fl = c.topo.addNode(2);
    flannelMac = runFlannel();
    c.topo.addPod(fl, { subnet: FL_SUBNET }); // flannel's CNI: a pod on cni0
    await waitFor("flannel's lease in node 1's map", () => entryFor(n1, FL_SUBNET) !== undefined);
    assert.ok(ping(pod(fl).ns, pod(n1).ip), "flannel -> overlayd before the switch");
    assert.ok(ping(pod(n1).ns, pod(fl).ip), "overlayd -> flannel before the switch");
  });
  after(async () => c.stop());

  it("switches the node to overlayd under a 1 ms ping and an iperf3 flow: the flow survives, < 20 ms of pings lost", async function () {
    const r = await underLoadBetween(
      pod(fl),
      pod(n1),
      8,
      async () => {
        c.nodes.push(fl);
        const a = c.startAgent(fl);
        await a.waitReady();
      },
      "500M",
    );
    const lost = r.transmitted - r.received;
    // The figure the README reports.
    process.stdout.write(
      `      flannel -> overlayd switch: ${lost} of ${r.transmitted} 1 ms pings lost\n`,
    );
    assert.ok(lost <= 20, `${lost} pings lost (at most 20 ms of a 1 ms ping)`);
    assert.ok(r.intervals.length >= 10, "the iperf3 flow ran to its end: the connection held");
    assert.match(c.agent(fl).logs, /took this node over from flannel/);
  });

  it("kept flannel's lease: same subnet, same PublicIP, same VtepMAC", function () {
    const l = JSON.parse(c.etcd.get(FL_KEY) ?? "{}");
    assert.equal(l.PublicIP, fl.underlayIp);
    assert.equal(l.BackendData.VtepMAC, flannelMac);
    assert.match(sh(inNs(fl.ns, ["cat", c.subnetFile(fl)])), /FLANNEL_SUBNET=10\.5\.250\.1\/24/);
    const e = entryFor(n1, FL_SUBNET);
    assert.equal(e && formatIp(e.host.remoteIp), fl.underlayIp);
  });

  it("forwards through overlayd's data path, with nothing left on flannel's device", async function () {
    assert.notEqual(shStatus(inNs(fl.ns, ["ip", "link", "show", "flannel.1"])).status, 0);
    assert.equal(
      sh(inNs(fl.ns, ["ip", "route", "show", "dev", "flannel.1"]), { allowFail: true }),
      "",
    );
    const stats = StatsReader.openPinned(fl.pinPath);
    try {
      const tx = stats.read().traffic.get("tx")!.packets;
      const rx = stats.read().traffic.get("rx")!.packets;
      // Each reply is one packet this node encapsulated and one it
      // decapsulated, whichever way the ping went (a ping lost on a busy
      // CI machine lowers both sides, not the assertion's truth).
      const out = pingReplies(pod(fl).ns, pod(n1).ip, 3);
      const back = pingReplies(pod(n1).ns, pod(fl).ip, 3);
      assert.ok(out > 0 && back > 0, `replies: ${out} of 3 out, ${back} of 3 back`);
      const seen = BigInt(out + back);
      await sleep(100);
      const now = stats.read().traffic;
      assert.ok(now.get("tx")!.packets >= tx + seen, `encapsulated by overlayd (>= ${seen})`);
      assert.ok(now.get("rx")!.packets >= rx + seen, `decapsulated by overlayd (>= ${seen})`);
    } finally {
      stats.close();
    }
  });

  it("goes back: overlayd --cleanup, flannel's state restored, pods talk again", async function () {
    await c.agent(fl).stop("SIGTERM");
    c.agents.delete(fl.index);
    sh(inNs(fl.ns, ["node", OVERLAYD, "--cleanup", "--iface", "eth0", "--pin-path", fl.pinPath]));
    assert.notEqual(shStatus(inNs(fl.ns, ["ip", "link", "show", "ovl0"])).status, 0, "ovl0 gone");
    const mac = runFlannel(); // flanneld started again
    await waitFor(
      "node 1 programs flannel's new VtepMAC",
      () => entryFor(n1, FL_SUBNET)?.host.vtepMac === mac,
    );
    await waitFor("flannel -> overlayd", () => ping(pod(fl).ns, pod(n1).ip), 10000);
    assert.ok(ping(pod(n1).ns, pod(fl).ip, { count: 3 }), "overlayd -> flannel");
  });
});
