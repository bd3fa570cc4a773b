// flannel's backend options end to end, with real agents on real etcd:
// vxlan DirectRouting (no VXLAN between nodes on one network, VXLAN to a node
// behind a router, the direct path kept through a link flap and a route
// flush), the host-gw backend (no encapsulation at all, its start-up and
// per-lease checks), vxlan GBP (the group policy ID from skb->mark on the
// wire, both ways with a kernel VXLAN device made with `gbp`) and Backend.MTU.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { SubnetHostMap } from "../../agent/bpf/subnet-map";
import { F_DIRECT } from "../../agent/bpf/codec";
import { formatIp } from "../../agent/net/ip";
import { ROUTE_PROTO } from "../../agent/net/routes";
import { Cluster, PREFIX } from "../lib/cluster";
import { flannelJoin } from "../lib/flannel";
import { requireEnv } from "../lib/require";
import { inNs, sh, sleep, waitFor } from "../lib/sh";
import { type NodeInfo, type PodInfo } from "../lib/topology";
import { capture, ping } from "../lib/traffic";

const TOOLS = ["ip", "ping", "tcpdump", "etcd", "etcdctl", "bpftool", "iptables", "nft"];

function mapEntries(n: NodeInfo) {
  const m = SubnetHostMap.openPinned(n.pinPath);
  try {
    return m.list().map((e) => ({
      subnet: e.subnet.toString(),
      remoteIp: formatIp(e.host.remoteIp),
      direct: (e.host.flags & F_DIRECT) !== 0,
    }));
  } finally {
    m.close();
  }
}

/** Our routes on a node, as `dst via gateway dev`. */
function ourRoutes(n: NodeInfo): string[] {
  const out = sh(inNs(n.ns, ["ip", "-j", "route", "show", "proto", String(ROUTE_PROTO)]));
  return (JSON.parse(out) as { dst: string; gateway?: string; dev: string }[]).map(
    (r) => `${r.dst} via ${r.gateway} dev ${r.dev}`,
  );
}

/** Plain ICMP and VXLAN frames a switch port sent towards a node while fn ran. */
async function onWire(
  c: Cluster,
  port: string,
  fn: () => Promise<void> | void,
): Promise<{ vxlan: string[]; icmp: string[] }> {
  let vxlan: string[] = [];
  const icmp = await capture(c.topo.switchNs, port, ["icmp"], async () => {
    vxlan = await capture(c.topo.switchNs, port, ["udp", "port", "8472"], async () => {
      await fn();
    });
  });
  return { vxlan: vxlan.filter((l) => /\.8472[: ]/.test(l)), icmp };
}

/** The node's lease (from its subnet.env: FLANNEL_SUBNET=10.5.7.1/24 -> 10.5.7.0/24). */
function leaseOf(c: Cluster, n: NodeInfo): string {
  const m = /^FLANNEL_SUBNET=(\d+\.\d+\.\d+)\.\d+\/(\d+)$/m.exec(
    readFileSync(c.subnetFile(n), "utf8"),
  );
  assert.ok(m, `no FLANNEL_SUBNET for node ${n.index}`);
  return `${m[1]}.0/${m[2]}`;
}

/** The node's pod gateway: the first address of its lease. */
function gatewayOf(c: Cluster, n: NodeInfo): string {
  return leaseOf(c, n).replace(/\.0\/\d+$/, ".1");
}

function config(backend: Record<string, unknown>): string {
  return JSON.stringify({ Network: "10.5.0.0/16", Backend: backend });
}

describe("e2e: vxlan DirectRouting", function () {
  this.timeout(180000);
  const c = new Cluster();
  let n1: NodeInfo;
  let n2: NodeInfo;
  let n3: NodeInfo;
  const pod = (n: NodeInfo) => n.pods[0] as PodInfo;

  before(async function () {
    requireEnv(this, { root: true, tools: TOOLS });
    await c.startEtcd({ config: config({ Type: "vxlan", DirectRouting: true }) });
    c.addNodes(2);
    [n1, n2] = c.nodes as [NodeInfo, NodeInfo];
    n3 = c.topo.addRoutedNode(3);
    c.nodes.push(n3);
    c.topo.routeToRouted();
    await c.startAgents();
    for (const n of c.nodes) c.addPod(n);
    await waitFor("every lease in n1's map", () => mapEntries(n1).length === 3);
  });
  after(async () => c.stop());

  it("marks the peer on our network direct and the one behind a router VXLAN", function () {
    const e = mapEntries(n1);
    assert.equal(e.find((x) => x.remoteIp === n2.underlayIp)?.direct, true, JSON.stringify(e));
    assert.equal(e.find((x) => x.remoteIp === n3.underlayIp)?.direct, false, JSON.stringify(e));
  });

  it("routes the direct peer's subnet via its PublicIP, and only that one", async function () {
    await waitFor("direct route on n1", () =>
      ourRoutes(n1).includes(`${leaseOf(c, n2)} via ${n2.underlayIp} dev eth0`),
    ).catch((e) => {
      throw new Error(`${e.message}\n${c.agent(n1).logs.slice(-3000)}`);
    });
    assert.deepEqual(ourRoutes(n1), [`${leaseOf(c, n2)} via ${n2.underlayIp} dev eth0`]);
  });

  it("pod to pod on one network crosses the wire without VXLAN, both ways", async function () {
    const w = await onWire(c, "n2", () => {
      assert.ok(ping(pod(n1).ns, pod(n2).ip, { count: 3 }), "n1 pod -> n2 pod");
      assert.ok(ping(pod(n2).ns, pod(n1).ip, { count: 3 }), "n2 pod -> n1 pod");
    });
    assert.equal(w.vxlan.length, 0, `VXLAN on the wire:\n${w.vxlan.slice(0, 3).join("\n")}`);
    assert.ok(
      w.icmp.some((l) => l.includes(`${pod(n1).ip} > ${pod(n2).ip}`)),
      `plain ICMP pod -> pod on the wire:\n${w.icmp.slice(0, 5).join("\n")}`,
    );
  });

  it("towards the node behind a router, VXLAN, both ways", async function () {
    const w = await onWire(c, "rt", () => {
      assert.ok(ping(pod(n1).ns, pod(n3).ip, { count: 3 }), "n1 pod -> n3 pod");
      assert.ok(ping(pod(n3).ns, pod(n1).ip, { count: 3 }), "n3 pod -> n1 pod");
    });
    assert.ok(w.vxlan.length >= 3, `no VXLAN towards the router (${w.icmp.length} plain)`);
    assert.equal(w.icmp.length, 0, `no plain pod ICMP towards the router:\n${w.icmp.join("\n")}`);
  });

  it("keeps the direct path through a link flap and a route flush, and restores the routes", async function () {
    const want = `${leaseOf(c, n2)} via ${n2.underlayIp} dev eth0`;
    sh(inNs(n1.ns, ["ip", "link", "set", "eth0", "down"]));
    sh(inNs(n1.ns, ["ip", "link", "set", "eth0", "up"]));
    assert.ok(!ourRoutes(n1).includes(want), "the kernel dropped the route with the link");
    await waitFor("pod ping after the flap", () => ping(pod(n1).ns, pod(n2).ip), 10000);
    await waitFor("route back after the flap", () => ourRoutes(n1).includes(want), 15000);
    sh(inNs(n1.ns, ["ip", "route", "flush", "proto", String(ROUTE_PROTO)]));
    assert.deepEqual(ourRoutes(n1), []);
    // The programs send to the next hop themselves: no route needed.
    assert.ok(ping(pod(n1).ns, pod(n2).ip, { count: 3 }), "pod ping right after the flush");
    await waitFor("route back after the flush", () => ourRoutes(n1).includes(want), 15000);
    const w = await onWire(c, "n2", () => {
      assert.ok(ping(pod(n1).ns, pod(n2).ip, { count: 2 }));
    });
    assert.equal(w.vxlan.length, 0, "still direct");
  });
});

describe("e2e: host-gw backend", function () {
  this.timeout(180000);
  const c = new Cluster();
  let n1: NodeInfo;
  let n2: NodeInfo;
  let n3: NodeInfo;
  const pod = (n: NodeInfo) => n.pods[0] as PodInfo;

  before(async function () {
    requireEnv(this, { root: true, tools: TOOLS });
    await c.startEtcd({ config: config({ Type: "host-gw" }) });
    c.addNodes(2);
    [n1, n2] = c.nodes as [NodeInfo, NodeInfo];
    n3 = c.topo.addRoutedNode(3);
    c.nodes.push(n3);
    c.topo.routeToRouted();
    await c.startAgents();
    for (const n of [n1, n2]) c.addPod(n);
  });
  after(async () => c.stop());

  it("writes flannel's host-gw lease: BackendType host-gw, no BackendData", function () {
    const leases = [...c.etcd.list(`${PREFIX}/subnets/`).values()].map((v) => JSON.parse(v.value));
    const l1 = leases.find((l) => l.PublicIP === n1.underlayIp);
    assert.deepEqual(l1, { PublicIP: n1.underlayIp, PublicIPv6: null, BackendType: "host-gw" });
  });

  it("gives pods the underlay's MTU (nothing is added to their packets)", function () {
    const env = readFileSync(c.subnetFile(n1), "utf8");
    assert.match(env, /^FLANNEL_MTU=1500$/m);
    const podMtu = JSON.parse(sh(inNs(pod(n1).ns, ["ip", "-j", "link", "show", "eth0"])))[0].mtu;
    assert.equal(podMtu, 1500);
  });

  it("routes each peer's subnet via its PublicIP and carries pod traffic unencapsulated", async function () {
    await waitFor("host-gw route on n1", () =>
      ourRoutes(n1).includes(`${leaseOf(c, n2)} via ${n2.underlayIp} dev eth0`),
    );
    const w = await onWire(c, "n2", () => {
      assert.ok(ping(pod(n1).ns, pod(n2).ip, { count: 3 }), "n1 pod -> n2 pod");
      assert.ok(ping(pod(n2).ns, pod(n1).ip, { count: 3 }), "n2 pod -> n1 pod");
      // The host's own address is the source (as with flannel's host-gw):
      // the pod answers through a default route, which kube-flannel.yml's
      // delegate gives it (isDefaultGateway).
      sh(inNs(pod(n2).ns, ["ip", "route", "replace", "default", "via", gatewayOf(c, n2)]));
      assert.ok(ping(n1.ns, pod(n2).ip, { count: 2 }), "n1 host -> n2 pod");
    });
    assert.equal(w.vxlan.length, 0, "no VXLAN");
    assert.ok(w.icmp.some((l) => l.includes(`${pod(n1).ip} > ${pod(n2).ip}`)));
    const direct = mapEntries(n1).find((e) => e.remoteIp === n2.underlayIp);
    assert.equal(direct?.direct, true);
  });

  it("does not program a peer that is not on our network, and says why", async function () {
    await waitFor("n3's lease in etcd", () =>
      [...c.etcd.list(`${PREFIX}/subnets/`).values()].some((v) => v.value.includes(n3.underlayIp)),
    );
    await sleep(500);
    assert.ok(!mapEntries(n1).some((e) => e.remoteIp === n3.underlayIp));
    assert.match(
      c.agent(n1).logs,
      new RegExp(`${n3.underlayIp.replace(/\./g, "\\.")} is not on a directly connected network`),
    );
  });

  it("does not program a lease of another backend in this network, and says why", async function () {
    c.etcd.put(
      `${PREFIX}/subnets/10.5.200.0-24`,
      JSON.stringify({
        PublicIP: "172.31.0.77",
        PublicIPv6: null,
        BackendType: "vxlan",
        BackendData: { VNI: 1, VtepMAC: "0e:00:00:00:00:77" },
      }),
    );
    await waitFor("the mismatch logged", () => /one backend per network/.test(c.agent(n1).logs));
    assert.ok(!mapEntries(n1).some((e) => e.subnet === "10.5.200.0/24"));
    c.etcd.ctl(["del", `${PREFIX}/subnets/10.5.200.0-24`]);
  });

  it("refuses to run behind NAT (PublicIP not on the interface), touching nothing", async function () {
    const n4 = c.topo.addNode(4);
    const a = c.startAgent(n4, ["--public-ip", "172.31.0.99"]);
    await waitFor("the NAT error", () => /behind NAT/.test(a.logs), 15000);
    const r = a.http("/readyz");
    assert.equal(r.status, 503);
    assert.match(r.body, /host-gw/);
    assert.equal(
      sh(inNs(n4.ns, ["ip", "link", "show", "ovl0"]), { allowFail: true }),
      "",
      "no overlay device made",
    );
    assert.ok(
      ![...c.etcd.list(`${PREFIX}/subnets/`).values()].some((v) => v.value.includes("172.31.0.99")),
      "no lease taken",
    );
    await a.stop("SIGKILL");
    c.agents.delete(n4.index);
  });
});

describe("e2e: vxlan GBP and MTU", function () {
  this.timeout(180000);
  const c = new Cluster();
  let n1: NodeInfo;
  let fl: NodeInfo;
  const pod = (n: NodeInfo) => n.pods[0] as PodInfo;
  const FL_SUBNET = "10.5.250.0/24";

  before(async function () {
    requireEnv(this, { root: true, tools: TOOLS });
    await c.startEtcd({
      config: JSON.stringify({
        Network: "10.5.0.0/16",
        EnableNFTables: true,
        Colour: "blue",
        Backend: { Type: "vxlan", GBP: true, MTU: 1400 },
      }),
      agentFlags: ["--ip-masq"],
    });
    c.addNodes(1);
    n1 = c.nodes[0] as NodeInfo;
    await c.startAgents();
    c.addPod(n1);
    // A flannel node whose kernel VXLAN device has gbp, as flannel makes it
    // with Backend.GBP.
    fl = c.topo.addNode(5);
    flannelJoin(c.etcd, PREFIX, fl.ns, { publicIp: fl.underlayIp, subnet: FL_SUBNET, gbp: true });
    c.topo.addPod(fl, { subnet: FL_SUBNET, mtu: 1350 });
    await waitFor("flannel lease in n1's map", () =>
      mapEntries(n1).some((e) => e.subnet === FL_SUBNET),
    );
  });
  after(async () => c.stop());

  it("Backend.MTU: the overlay device, FLANNEL_MTU and the CNI pod get MTU - 50", function () {
    assert.match(readFileSync(c.subnetFile(n1), "utf8"), /^FLANNEL_MTU=1350$/m);
    const mtu = (ns: string, dev: string) =>
      JSON.parse(sh(inNs(ns, ["ip", "-j", "link", "show", dev])))[0].mtu;
    assert.equal(mtu(n1.ns, "ovl0"), 1350);
    assert.equal(mtu(pod(n1).ns, "eth0"), 1350);
  });

  it("carries the host's skb->mark as the GBP group policy ID to a gbp kernel device", async function () {
    const gbpId = "udp[8] = 0x88 and udp[10:2] = 0x1234";
    const lines = await capture(
      c.topo.switchNs,
      "n5",
      ["udp", "port", "8472", "and", ...gbpId.split(" ")],
      async () => {
        const r = sh(
          inNs(n1.ns, [
            "ping",
            "-n",
            "-c",
            "3",
            "-i",
            "0.2",
            "-W",
            "1",
            "-m",
            String(0x1234),
            pod(fl).ip,
          ]),
        );
        assert.match(r, / 0% packet loss/, "the gbp device accepted our GBP frames");
      },
    );
    assert.ok(lines.length >= 3, `${lines.length} GBP frames with ID 0x1234 on the wire`);
    const plain = await capture(
      c.topo.switchNs,
      "n5",
      ["udp", "port", "8472", "and", "udp[8]", "=", "0x08"],
      async () => {
        assert.ok(ping(n1.ns, pod(fl).ip, { count: 2 }));
      },
    );
    assert.ok(plain.length >= 2, "no mark: no G flag");
  });

  it("accepts GBP from the kernel device and hands the stack the mark, pods get their packets", async function () {
    const rule = ["INPUT", "-p", "icmp", "-m", "mark", "--mark", "0x77", "-j", "ACCEPT"];
    sh(inNs(n1.ns, ["iptables", "-w", "-I", ...rule]));
    try {
      const ovl = JSON.parse(sh(inNs(n1.ns, ["ip", "-j", "addr", "show", "ovl0"])))[0].addr_info[0]
        .local as string;
      const out = sh(
        inNs(fl.ns, ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "1", "-m", String(0x77), ovl]),
      );
      assert.match(out, / 0% packet loss/);
      const counted = sh(inNs(n1.ns, ["iptables", "-w", "-L", "INPUT", "-v", "-x", "-n"]))
        .split("\n")
        .find((l) => l.includes("mark match 0x77"));
      assert.ok(counted, "rule listed");
      assert.ok(Number(counted.trim().split(/\s+/)[0]) >= 3, `marked packets seen: ${counted}`);
      assert.ok(ping(pod(fl).ns, pod(n1).ip, { count: 2 }), "flannel pod -> overlayd pod");
    } finally {
      sh(inNs(n1.ns, ["iptables", "-w", "-D", ...rule]), { allowFail: true });
    }
  });

  it("ignores an unknown key, as flannel does, and logs it once", function () {
    const said = c.agent(n1).logs.match(/unknown config key ignored".*field=Colour/g) ?? [];
    assert.equal(said.length, 1, c.agent(n1).logs.slice(-2000));
  });

  it("EnableNFTables: masquerades through nftables, with no iptables chain beside it", function () {
    const table = sh(inNs(n1.ns, ["nft", "list", "table", "ip", "flannel-ipv4"]));
    assert.match(table, /masquerade fully-random/);
    const ipt = sh(inNs(n1.ns, ["iptables", "-w", "-t", "nat", "-S", "OVERLAYD-POSTRTG"]), {
      allowFail: true,
    });
    assert.equal(ipt, "", "no iptables chain");
  });

  it("a running node keeps forwarding when the config turns bad, and says what is wrong", async function () {
    const good = { Network: "10.5.0.0/16", EnableNFTables: true };
    c.etcd.put(
      `${PREFIX}/config`,
      JSON.stringify({
        ...good,
        Backend: { Type: "vxlan", GBP: true, MTU: 1400, DirectRouting: "yes" },
      }),
    );
    await waitFor("config error reported", () =>
      /DirectRouting/.test(c.agent(n1).http("/readyz").body),
    );
    assert.ok(ping(pod(n1).ns, pod(fl).ip, { count: 2 }), "still forwarding");
    c.etcd.put(
      `${PREFIX}/config`,
      JSON.stringify({ ...good, Backend: { Type: "vxlan", GBP: true, MTU: 1600 } }),
    );
    await waitFor("MTU error reported", () =>
      /Backend.MTU: 1600 is above the external interface's MTU 1500/.test(
        c.agent(n1).http("/readyz").body,
      ),
    );
    assert.ok(ping(pod(n1).ns, pod(fl).ip, { count: 2 }), "still forwarding");
    // A valid dual-stack config on a node without an IPv6 address: refused
    // where configs are applied, naming the key and why.
    c.etcd.put(
      `${PREFIX}/config`,
      JSON.stringify({
        ...good,
        EnableIPv6: true,
        IPv6Network: "fc00:5::/48",
        Backend: { Type: "vxlan", GBP: true, MTU: 1400 },
      }),
    );
    await waitFor("EnableIPv6 refused", () =>
      /EnableIPv6: the network is dual-stack but interface eth0 has no global IPv6 address/.test(
        c.agent(n1).http("/readyz").body,
      ),
    );
    assert.ok(ping(pod(n1).ns, pod(fl).ip, { count: 2 }), "still forwarding");
    c.etcd.put(
      `${PREFIX}/config`,
      JSON.stringify({ ...good, Backend: { Type: "vxlan", GBP: true, MTU: 1400 } }),
    );
    await waitFor("ready again", () => c.agent(n1).http("/readyz").status === 200);
  });
});
