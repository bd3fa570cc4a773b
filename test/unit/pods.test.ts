import assert from "node:assert/strict";
import { type Endpoint } from "../../agent/bpf/codec";
import { Cidr, parseIp, type Ip4 } from "../../agent/net/ip";
import { Cidr6, parseIp6 } from "../../agent/net/ip6";
import {
  discoverEndpoints,
  findPodBridge,
  planEndpoints,
  scope4,
  scope6,
  type BridgeLink,
  type FdbEntry,
} from "../../agent/node/pods";

const SUBNET = Cidr.parse("10.5.1.0/24");
const BR_MAC = "02:00:00:00:0b:01";
const link = (o: Partial<BridgeLink> & { name: string; ifindex: number }): BridgeLink => ({
  mac: "02:00:00:00:00:00",
  addrs: [],
  ...o,
});
const cni0 = link({
  name: "cni0",
  ifindex: 3,
  kind: "bridge",
  mac: BR_MAC,
  addrs: [{ ip: parseIp("10.5.1.1"), prefixlen: 24 }],
});
const LINKS: BridgeLink[] = [
  link({ name: "lo", ifindex: 1 }),
  link({
    name: "eth0",
    ifindex: 2,
    kind: "veth",
    addrs: [{ ip: parseIp("172.31.0.1"), prefixlen: 24 }],
  }),
  cni0,
  link({ name: "veth1", ifindex: 4, kind: "veth", master: "cni0" }),
  link({ name: "veth2", ifindex: 5, kind: "veth", master: "cni0" }),
  link({ name: "vxlan9", ifindex: 6, kind: "vxlan", master: "cni0" }),
];
const learned = (mac: string, port: string): FdbEntry => ({
  mac,
  port,
  master: "cni0",
  state: "",
  flags: [],
});

describe("unit: bridged pods (agent/node/pods.ts)", function () {
  it("finds the bridge that holds the node's subnet, or the one named", function () {
    assert.equal(findPodBridge(LINKS, SUBNET)?.name, "cni0");
    // An address of the subnet with another prefix (flannel's /32 on its
    // VXLAN device) is not a pod bridge; nor is any other subnet's bridge.
    assert.equal(findPodBridge(LINKS, Cidr.parse("10.5.1.0/25")), undefined);
    assert.equal(findPodBridge(LINKS, Cidr.parse("10.5.2.0/24")), undefined);
    assert.equal(findPodBridge(LINKS, Cidr.parse("10.5.2.0/24"), "cni0")?.name, "cni0");
    assert.equal(findPodBridge(LINKS, SUBNET, "eth0"), undefined, "not a bridge");
  });

  it("turns neighbour + learned FDB entry + veth port into the endpoint the CNI plugin would write", function () {
    const eps = discoverEndpoints({
      bridge: cni0,
      scope: scope4(cni0, SUBNET),
      links: LINKS,
      neighbours: [
        { ip: parseIp("10.5.1.2"), mac: "0A:00:00:00:00:02", state: ["STALE"] },
        { ip: parseIp("10.5.1.3"), mac: "0a:00:00:00:00:03", state: ["REACHABLE"] },
        // not usable: failed resolution, the bridge's own address, outside the
        // subnet, a MAC on a port that is not a veth, a MAC never learned
        { ip: parseIp("10.5.1.4"), state: ["FAILED"] },
        { ip: parseIp("10.5.1.5"), mac: "0a:00:00:00:00:05", state: ["INCOMPLETE"] },
        { ip: parseIp("10.5.1.1"), mac: BR_MAC, state: ["PERMANENT"] },
        { ip: parseIp("10.9.0.7"), mac: "0a:00:00:00:00:02", state: ["STALE"] },
        { ip: parseIp("10.5.1.6"), mac: "0a:00:00:00:00:06", state: ["STALE"] },
        { ip: parseIp("10.5.1.7"), mac: "0a:00:00:00:00:07", state: ["STALE"] },
      ],
      fdb: [
        learned("0a:00:00:00:00:02", "veth1"),
        learned("0a:00:00:00:00:03", "veth2"),
        learned("0a:00:00:00:00:05", "veth2"),
        learned("0a:00:00:00:00:06", "vxlan9"),
        // the port's own address and a "self" entry never name a pod
        { mac: "0a:00:00:00:00:07", port: "veth1", master: "cni0", state: "permanent", flags: [] },
        { mac: "0a:00:00:00:00:07", port: "veth2", state: "permanent", flags: ["self"] },
      ],
    });
    assert.deepEqual(
      [...eps].map(([ip, ep]) => [ip, ep]),
      [
        [parseIp("10.5.1.2"), { ifindex: 4, podMac: "0a:00:00:00:00:02", hostMac: BR_MAC }],
        [parseIp("10.5.1.3"), { ifindex: 5, podMac: "0a:00:00:00:00:03", hostMac: BR_MAC }],
      ],
    );
  });

  it("finds IPv6 pods the same way: global addresses in our IPv6 subnet, not link-local, not the bridge's own", function () {
    const br6 = { ...cni0, addrs6: [{ ip: parseIp6("fc00:0:0:1::1"), prefixlen: 64 }] };
    const eps = discoverEndpoints({
      bridge: br6,
      scope: scope6(br6, Cidr6.parse("fc00:0:0:1::/64")),
      links: LINKS,
      neighbours: [
        { ip: parseIp6("fc00:0:0:1::2"), mac: "0a:00:00:00:00:02", state: ["REACHABLE"] },
        { ip: parseIp6("fe80::800:ff:fe00:2"), mac: "0a:00:00:00:00:02", state: ["STALE"] },
        { ip: parseIp6("fc00:0:0:1::1"), mac: BR_MAC, state: ["PERMANENT"] },
        { ip: parseIp6("fc00:0:0:2::3"), mac: "0a:00:00:00:00:03", state: ["STALE"] },
        { ip: parseIp6("fc00:0:0:1::3"), mac: "0a:00:00:00:00:03", state: ["FAILED"] },
      ],
      fdb: [learned("0a:00:00:00:00:02", "veth1"), learned("0a:00:00:00:00:03", "veth2")],
    });
    assert.deepEqual(
      [...eps],
      [[parseIp6("fc00:0:0:1::2"), { ifindex: 4, podMac: "0a:00:00:00:00:02", hostMac: BR_MAC }]],
    );
  });

  it("plans only the difference, keeps the CNI plugin's entries, removes what points at a dead veth", function () {
    const ep = (ifindex: number, mac = "0a:00:00:00:00:01"): Endpoint => ({
      ifindex,
      podMac: mac,
      hostMac: BR_MAC,
    });
    const ip = (s: string): Ip4 => parseIp(s);
    const plan = planEndpoints({
      discovered: new Map([
        [ip("10.5.1.2"), ep(4)], // unchanged
        [ip("10.5.1.5"), ep(5, "0a:00:00:00:00:05")], // written with another host MAC
        [ip("10.5.1.3"), ep(5)], // new
        [ip("10.5.1.4"), ep(7)], // moved to another veth
      ]),
      actual: new Map([
        [ip("10.5.1.2"), ep(4)],
        [ip("10.5.1.5"), { ...ep(5, "0A:00:00:00:00:05"), hostMac: "02:00:00:00:0e:05" }],
        [ip("10.5.1.4"), ep(6)],
        [ip("10.5.1.8"), ep(8)], // the CNI plugin's, not seen now: stays
        [ip("10.5.1.9"), ep(9)], // ours, not seen any more: goes
        [ip("10.5.1.10"), ep(99)], // anyone's, its veth is gone: goes
      ]),
      owned: new Set([ip("10.5.1.9")]),
      liveIfindexes: new Set([4, 5, 6, 7, 8, 9]),
      pluginPorts: new Set(),
    });
    assert.deepEqual(plan.upserts, [
      [ip("10.5.1.3"), ep(5)],
      [ip("10.5.1.4"), ep(7)],
    ]);
    assert.deepEqual(plan.deletes, [ip("10.5.1.9"), ip("10.5.1.10")]);
  });

  it("leaves a veth that runs the CNI plugin's fast path to the plugin: never writes its pod back, adopts nothing on it", function () {
    const ep = (ifindex: number): Endpoint => ({
      ifindex,
      podMac: "0a:00:00:00:00:01",
      hostMac: BR_MAC,
    });
    const ip = (s: string): Ip4 => parseIp(s);
    const plan = planEndpoints({
      // 10.5.1.2: the plugin's DEL removed the entry while its veth (4) was
      // still on the bridge with its ARP entry: seen, but not written back.
      // 10.5.1.3: this agent wrote it before the plugin's ADD attached to
      // veth 5: it becomes the plugin's, and stays.
      // 10.5.1.6: a plain bridged pod on veth 6, as before.
      discovered: new Map([
        [ip("10.5.1.2"), ep(4)],
        [ip("10.5.1.3"), ep(5)],
        [ip("10.5.1.6"), ep(6)],
      ]),
      actual: new Map([[ip("10.5.1.3"), ep(5)]]),
      owned: new Set([ip("10.5.1.3")]),
      liveIfindexes: new Set([4, 5, 6]),
      pluginPorts: new Set([4, 5]),
    });
    assert.deepEqual(plan.upserts, [[ip("10.5.1.6"), ep(6)]]);
    assert.deepEqual(plan.deletes, []);
    assert.deepEqual(plan.disowns, [ip("10.5.1.3")]);
    // Once the plugin's veth is gone, its entry (now not ours) goes as any dead one.
    const later = planEndpoints({
      discovered: new Map(),
      actual: new Map([[ip("10.5.1.3"), ep(5)]]),
      owned: new Set(),
      liveIfindexes: new Set([4, 6]),
      pluginPorts: new Set(),
    });
    assert.deepEqual(later.deletes, [ip("10.5.1.3")]);
  });
});
