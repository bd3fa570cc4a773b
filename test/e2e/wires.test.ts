// End to end on both underlays that `make bench` models (test/lib/topology.ts):
// the veth wire (GSO frames cross untouched) and the NIC-like wire (the
// switch segments to MTU-sized frames, the receiver rebuilds them with
// GRO). On each: two overlayd nodes, each with a pod registered the way the
// CNI plugin registers it and a pod behind the bridge that overlayd never
// heard of, plus a node running flannel's kernel VXLAN. Every decap
// mechanism in turn: switched to on the live nodes without losing a
// packet, then ping and iperf3 for every kind of traffic both ways, the
// frames on the switch checked against the wire's model, and flannel
// interop.
import assert from "node:assert/strict";
import { EndpointMap } from "../../agent/bpf/endpoint-map";
import { parseIp } from "../../agent/net/ip";
import { flannelAddLease, flannelUp } from "../lib/flannel";
import { loadNode, programPeers, registerPod, syncPodBridge } from "../lib/overlay";
import { requireEnv } from "../lib/require";
import { inNs, sh } from "../lib/sh";
import { Topology, type NodeInfo, type PodInfo, type Wire } from "../lib/topology";
import { assertNothingLost, framesSent, iperf, ping, underLoadBetween } from "../lib/traffic";

const MAX_FRAME = 1514; // 1,500-byte MTU + Ethernet header
/**
 * iperf3's rate while programs are replaced: traffic that must keep
 * flowing, well below what the slowest mechanism carries here (XDP on a
 * veth, about 3 Gbit/s), so a lost ping means the replacement lost it and
 * not a ring that overflowed because the loader took the CPUs.
 */
const LOAD = "1G";

for (const wire of ["veth", "nic"] as Wire[]) {
  describe(`e2e: data path on the ${wire} wire, every kind of traffic, every mechanism`, function () {
    this.timeout(180000);
    const topo = new Topology();
    let n1: NodeInfo;
    let n2: NodeInfo;
    let fl: NodeInfo;
    const vtep = new Map<NodeInfo, string>();

    const cni = (n: NodeInfo) => n.pods[0] as PodInfo;
    const bridged = (n: NodeInfo) => n.pods[1] as PodInfo;

    before(function () {
      requireEnv(this, {
        root: true,
        tools: ["ip", "ping", "iperf3", "bridge", "bpftool", "ethtool", "tcpdump"],
      });
      topo.create();
      n1 = topo.addNode(1, { wire });
      n2 = topo.addNode(2, { wire });
      fl = topo.addNode(3, { wire });
      for (const n of [n1, n2]) {
        topo.addPod(n);
        topo.addPod(n);
      }
      topo.addPod(fl);
      for (const n of [n1, n2]) vtep.set(n, loadNode(n, "auto").vtepMac);
      vtep.set(fl, flannelUp(fl.ns, { publicIp: fl.underlayIp, subnet: fl.subnet }));
      for (const n of [n1, n2]) {
        programPeers(
          n,
          [n1, n2, fl].filter((p) => p !== n).map((p) => ({ node: p, vtepMac: vtep.get(p)! })),
        );
        flannelAddLease(fl.ns, { subnet: n.subnet, publicIp: n.underlayIp, vtepMac: vtep.get(n)! });
        registerPod(n, cni(n));
        // Neighbour entries for the bridged pods, as any traffic makes them.
        for (const p of n.pods) assert.ok(ping(p.ns, n.gateway), `${p.ns} -> its gateway`);
        const s = syncPodBridge(n);
        assert.equal(s.bridge, "cni0", "the pod bridge is found by its address");
      }
    });

    after(function () {
      topo.destroy();
    });

    it("finds the bridged pods and gives them endpoints, as --pod-bridge auto does", function () {
      for (const n of [n1, n2]) {
        const eps = EndpointMap.openPinned(n.pinPath);
        try {
          const ep = eps.list().find((e) => e.podIp === parseIp(bridged(n).ip));
          assert.ok(ep, `endpoint for ${bridged(n).ip}`);
          assert.equal(ep.endpoint.ifindex, bridged(n).hostIfindex, "its veth");
          assert.equal(ep.endpoint.podMac, bridged(n).mac);
        } finally {
          eps.close();
        }
        assert.match(
          sh(inNs(n.ns, ["tc", "filter", "show", "dev", "cni0", "ingress"])),
          /ovl_encap_pod/,
          "encap on the bridge's ingress",
        );
      }
    });

    for (const decap of ["tc", "xdp", "auto"] as const) {
      describe(`--decap ${decap}`, function () {
        it("is switched to on the live nodes without losing a packet", async function () {
          const want = decap === "auto" ? "tc" : decap; // veth underlays: software devices
          const wasXdp = Boolean(
            JSON.parse(sh(inNs(n2.ns, ["ip", "-d", "-j", "link", "show", "eth0"])))[0].xdp,
          );
          const r = await underLoadBetween(
            bridged(n1),
            bridged(n2),
            5,
            async () => {
              for (const n of [n1, n2]) {
                const l = loadNode(n, decap);
                assert.equal(l.mechanism, want, l.reason);
                assert.ok(l.kernelDecap, "the overlay device is the kernel's collect_md VXLAN");
              }
            },
            LOAD,
          );
          const xdp = JSON.parse(sh(inNs(n2.ns, ["ip", "-d", "-j", "link", "show", "eth0"])))[0]
            .xdp;
          assert.equal(Boolean(xdp), want === "xdp", "XDP attached exactly in xdp mode");
          if (wasXdp !== (want === "xdp")) {
            // Attaching or detaching XDP reconfigures the device: a veth
            // starts or stops NAPI for it and changes its peer's GSO (many
            // NIC drivers reset their rings), freeing the frames in flight
            // (the README's known limits). Traffic must not stall.
            assert.ok(r.received > r.transmitted * 0.99, `${r.transmitted - r.received} lost`);
            for (const [i, bytes] of r.intervals.entries())
              assert.ok(bytes > 0, `iperf3 stalled in interval ${i}`);
            return;
          }
          assertNothingLost(r);
        });

        it("is reloaded as a restarting agent reloads it without losing a packet", async function () {
          const ringDrops = () =>
            [1, 2].reduce(
              (sum, i) =>
                sum +
                Number(
                  sh(inNs(topo.switchNs, ["cat", `/sys/class/net/n${i}/statistics/tx_dropped`])),
                ),
              0,
            );
          const drops0 = ringDrops();
          const r = await underLoadBetween(
            cni(n1),
            cni(n2),
            5,
            async () => {
              for (const n of [n1, n2]) loadNode(n, decap);
            },
            LOAD,
          );
          assert.equal(
            r.received,
            r.transmitted,
            `${r.transmitted - r.received} of ${r.transmitted} pings lost; ` +
              `frames the switch could not hand to a node's receive ring meanwhile: ${ringDrops() - drops0}`,
          );
          assertNothingLost(r);
        });

        const kinds: [string, (a: NodeInfo) => { ns: string }, (b: NodeInfo) => PodInfo][] = [
          ["CNI pod -> CNI pod", cni, cni],
          ["bridged pod -> bridged pod", bridged, bridged],
          ["node itself -> bridged pod", (n) => ({ ns: n.ns }), bridged],
          ["node itself -> CNI pod", (n) => ({ ns: n.ns }), cni],
        ];
        for (const [what, src, dst] of kinds) {
          it(`carries ping and iperf3 for ${what}, both ways, in frames the wire allows`, async function () {
            for (const [a, b] of [
              [n1, n2],
              [n2, n1],
            ] as const) {
              assert.ok(ping(src(a).ns, dst(b).ip), `${what}: ${a.index} -> ${b.index}`);
              let bps = 0;
              // The switch's port towards the receiver: what crossed the wire.
              const frames = await framesSent(topo.switchNs, `n${b.index}`, async () => {
                bps = await iperf(dst(b).ns, dst(b).ip, src(a).ns);
              });
              // A floor only; speed is measured by `make bench`.
              assert.ok(bps > 50e6, `${what} ${a.index}->${b.index}: ${bps} bit/s`);
              assert.ok(frames.length > 100, `only ${frames.length} VXLAN frames captured`);
              const max = Math.max(...frames);
              if (wire === "nic") {
                assert.ok(max <= MAX_FRAME, `a ${max}-byte frame crossed the NIC-like wire`);
              } else if (decap === "xdp") {
                // XDP on a veth turns GSO off on its peer: MTU-sized frames.
                assert.ok(max <= MAX_FRAME, `a ${max}-byte frame towards an XDP veth`);
              } else {
                assert.ok(max > MAX_FRAME, `the veth wire should carry GSO frames (max ${max})`);
              }
            }
          });
        }

        it("delivers to a remote node's own overlay address (the host stack behind ovl0)", function () {
          for (const [a, b] of [
            [n1, n2],
            [n2, n1],
          ] as const) {
            const ovl = b.subnet.replace("/24", "");
            assert.ok(ping(bridged(a).ns, ovl), `${bridged(a).ip} -> ${ovl}`);
            assert.ok(ping(a.ns, ovl), `node ${a.index} -> ${ovl}`);
          }
        });

        it("exchanges traffic with the flannel node both ways", function () {
          for (const n of [n1, n2]) {
            for (const p of n.pods) {
              assert.ok(ping(p.ns, cni(fl).ip), `${p.ip} -> flannel pod`);
              assert.ok(ping(cni(fl).ns, p.ip), `flannel pod -> ${p.ip}`);
            }
            assert.ok(ping(fl.ns, bridged(n).ip), "flannel host -> bridged pod");
          }
        });
      });
    }
  });
}
