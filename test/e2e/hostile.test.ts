// Hostile and malformed packets at a live node: more than 10,000 frames
// crafted with scapy (Debian's python3-scapy), from a lease holder and from a
// host outside the cluster. The agent and the kernel keep running, each drop
// is counted under its reason exactly as many times as it was sent, traffic
// that is not VXLAN passes, and nothing reaches the pod.
import assert from "node:assert/strict";
import { Cluster } from "../lib/cluster";
import {
  dropMismatches,
  eth0Mac,
  expectedDrops,
  HOSTILE_CASES as CASES,
  requireScapy,
  rxDrops,
  sendHostile,
} from "../lib/hostile";
import { requireEnv } from "../lib/require";
import { inNs, sh } from "../lib/sh";
import { ping } from "../lib/traffic";
import { type NodeInfo } from "../lib/topology";

const PER_CASE = 800;

// Under every decap mechanism: the checks are shared code, but the hooks
// differ (TC after GRO with the kernel's VXLAN socket behind it, or XDP).
for (const decap of ["tc", "xdp"] as const)
  describe(`e2e: hostile and malformed packets (--decap ${decap})`, function () {
    this.timeout(240000);
    const c = new Cluster();
    let n1: NodeInfo;
    let n2: NodeInfo;
    let outsider: NodeInfo;

    before(async function () {
      requireEnv(this, { root: true, tools: ["etcd", "ip", "/usr/bin/python3"] });
      requireScapy();
      await c.start(2, { agentFlags: ["--decap", decap] });
      [n1, n2] = c.nodes as [NodeInfo, NodeInfo];
      outsider = c.topo.addNode(9); // on the underlay, holds no lease
    });

    after(async function () {
      await c.stop();
    });

    function drops(): Map<string, bigint> {
      return rxDrops(n1.pinPath);
    }

    /**
     * UDP datagrams that reached the pod's stack. Every crafted inner packet is
     * UDP to port 9 (it would count under UdpNoPorts); other counters see the
     * link's own chatter (IGMP, ND) and prove nothing either way.
     */
    function podRx(): number {
      const out = sh(
        inNs(c.pod(n1).ns, ["nstat", "-az", "UdpInDatagrams", "UdpNoPorts", "UdpInErrors"]),
      );
      return [...out.matchAll(/^Udp\w+\s+(\d+)/gm)].reduce((a, m) => a + Number(m[1]), 0);
    }

    function send(
      from: NodeInfo,
      cases: string[],
      via?: { ns: string; mac: string; src: string },
    ): Record<string, number> {
      return sendHostile({
        ns: via?.ns ?? from.ns,
        to: { mac: via?.mac ?? eth0Mac(n1.ns), ip: n1.underlayIp },
        src: via?.src ?? from.underlayIp,
        peerSubnet: c.agent(from === outsider ? n2 : from).subnet(),
        podIp: c.pod(n1).ip,
        count: PER_CASE,
        cases,
      });
    }

    it("counts every one of more than 10,000 crafted packets under its reason, and keeps forwarding", function () {
      const before = drops();
      const rxBefore = podRx();
      const sent = send(n2, Object.keys(CASES));
      Object.assign(
        sent,
        Object.fromEntries(
          Object.entries(send(outsider, ["unknown_source"])).map(([k, v]) => [k, v]),
        ),
      );
      const total = Object.values(sent).reduce((a, b) => a + b, 0);
      assert.ok(total >= 10000, `sent ${total}`);

      assert.deepEqual(dropMismatches(before, drops(), expectedDrops(sent)), []);

      assert.equal(podRx(), rxBefore, "nothing was decapsulated into the pod");
      assert.ok(c.agent(n1).running, "agent still running");
      assert.equal(c.agent(n1).http("/readyz").status, 200);
      assert.ok(ping(c.pod(n2).ns, c.pod(n1).ip), "real traffic still flows");
    });

    it("never decapsulates well-formed VXLAN from outside the cluster into a pod", function () {
      const before = drops().get("unknown_source") ?? 0n;
      const rxBefore = podRx();
      const sent = send(outsider, ["unknown_source"]).unknown_source as number;
      assert.equal((drops().get("unknown_source") ?? 0n) - before, BigInt(sent));
      assert.equal(podRx(), rxBefore);
    });

    it("drops VXLAN that a pod sends to its own node's VXLAN socket, which no underlay hook sees", function () {
      // pod -> its gateway -> the node's own address, port 8472: delivered
      // locally to the overlay device's UDP socket, never through the
      // underlay's TC or XDP program. ovl_decap_dev must refuse it.
      assert.equal(c.agent(n1).http("/readyz").status, 200);
      const bridge = JSON.parse(
        sh(inNs(n1.ns, ["ip", "-d", "-j", "link", "show", "type", "bridge"])),
      )[0];
      assert.ok(bridge, "the pod bridge");
      const before = drops().get("unknown_source") ?? 0n;
      const rxBefore = podRx();
      const sent = send(n2, ["unknown_source"], {
        ns: c.pod(n1).ns,
        mac: bridge.address,
        src: c.pod(n1).ip,
      }).unknown_source as number;
      const ovl0 = JSON.parse(sh(inNs(n1.ns, ["ip", "-s", "-j", "link", "show", "ovl0"])))[0];
      assert.equal(
        (drops().get("unknown_source") ?? 0n) - before,
        BigInt(sent),
        `via ${bridge.ifname} ${bridge.address}; ovl0 rx ${JSON.stringify(ovl0.stats64?.rx)}`,
      );
      assert.equal(podRx(), rxBefore, "nothing came back into the pod");
    });
  });
