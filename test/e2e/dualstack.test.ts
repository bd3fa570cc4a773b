// Dual-stack end to end (issue 14): a network with EnableIPv6, nodes with
// an IPv6 underlay, pods with both families through the CNI plugin and
// behind a plain bridge, a dual-stack flannel node, and what the user sees
// (etcd keys and values, subnet.env, overlayctl, /metrics).
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Cluster, PREFIX } from "../lib/cluster";
import { OVERLAYCTL } from "../lib/agent-proc";
import { flannelJoin } from "../lib/flannel";
import { requireEnv } from "../lib/require";
import { inNs, sh, shStatus, sleep, waitFor } from "../lib/sh";
import { assertNothingLost, capture, iperf, ping, underLoadBetween } from "../lib/traffic";
import { type NodeInfo, type PodInfo } from "../lib/topology";

const NET6 = "fc00:5::/48";
const CONFIG6 = {
  Network: "10.5.0.0/16",
  EnableIPv6: true,
  IPv6Network: NET6,
  Backend: { Type: "vxlan" },
};
/** flannel's subnet key pattern (pkg/subnet/subnet.go). */
const FLANNEL_KEY = /(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$/;

/** ping -6 with the options our ping() takes. */
function ping6(ns: string, dst: string, o: { count?: number; size?: number; df?: boolean } = {}) {
  return ping(ns, dst, o);
}

describe("e2e: dual-stack (IPv4 and IPv6 overlays)", function () {
  this.timeout(240000);
  const c = new Cluster();
  let n1: NodeInfo;
  let n2: NodeInfo;
  let n3: NodeInfo;
  const env = (n: NodeInfo) =>
    Object.fromEntries(
      readFileSync(c.subnetFile(n), "utf8")
        .trim()
        .split("\n")
        .map((l) => l.split("=") as [string, string]),
    );
  /** The node's IPv6 subnet, from its subnet.env (fc00:5:0:K::/64). */
  const subnet6 = (n: NodeInfo) => {
    const s = env(n).FLANNEL_IPV6_SUBNET as string; // first address/64
    return s.replace(/::1\//, "::/");
  };
  const ctl = (n: NodeInfo, args: string[]) =>
    shStatus(
      inNs(n.ns, [
        "node",
        OVERLAYCTL,
        ...args,
        "--pin-path",
        n.pinPath,
        "--etcd-endpoints",
        c.etcd.endpoint,
      ]),
    );
  const pod = (n: NodeInfo): PodInfo => c.pod(n);

  /** A pod behind the node's plain cni0 bridge, both families, no CNI of
   * ours (flannel's CNI makes pods like it). */
  function bridgedPod(n: NodeInfo, s6 = subnet6(n), subnet?: string): PodInfo {
    const p = c.topo.addPod(n, { mtu: 1430, ...(subnet ? { subnet } : {}) });
    const gw6 = s6.replace("::/64", "::1");
    const ip6 = s6.replace("::/64", "::2");
    sh(inNs(n.ns, ["ip", "-6", "addr", "add", `${gw6}/64`, "dev", "cni0", "nodad"]));
    sh(inNs(p.ns, ["ip", "-6", "addr", "add", `${ip6}/64`, "dev", "eth0", "nodad"]));
    sh(inNs(p.ns, ["ip", "-6", "route", "add", "default", "via", gw6]));
    p.ip6 = ip6;
    return p;
  }

  before(async function () {
    requireEnv(this, {
      root: true,
      tools: ["etcd", "etcdctl", "ip", "ping", "iperf3", "bridge"],
    });
    await c.startEtcd({ config: JSON.stringify(CONFIG6) });
    for (let i = 1; i <= 3; i++) c.nodes.push(c.topo.addNode(i, { ipv6: true }));
    [n1, n2, n3] = c.nodes as [NodeInfo, NodeInfo, NodeInfo];
    await c.startAgents();
    c.addPod(n1);
    c.addPod(n2);
    // node 3's pods are plain bridge ports, as flannel's CNI makes them
    // (its subnet is known only now, from its subnet.env)
    n3.subnet = env(n3).FLANNEL_SUBNET!.replace(/\.1\//, ".0/");
    n3.gateway = env(n3).FLANNEL_SUBNET!.split("/")[0]!;
    bridgedPod(n3);
  });

  after(async function () {
    await c.stop();
  });

  it("writes flannel's dual-stack lease: one key for both halves, PublicIPv6, BackendV6Data", function () {
    const leases = c.etcd.list(`${PREFIX}/subnets/`);
    assert.equal(leases.size, 3, [...leases.keys()].join(" "));
    for (const n of [n1, n2, n3]) {
      const key = [...leases.keys()].find(
        (k) => JSON.parse(leases.get(k)!.value).PublicIP === n.underlayIp,
      )!;
      const m = FLANNEL_KEY.exec(key);
      assert.ok(m, `${key} parses with flannel's pattern`);
      assert.equal(`${m[3]}/${m[4]}`, subnet6(n));
      const v = JSON.parse(leases.get(key)!.value);
      const mac = JSON.parse(sh(inNs(n.ns, ["ip", "-j", "link", "show", "ovl0"])))[0].address;
      assert.deepEqual(v, {
        PublicIP: n.underlayIp,
        PublicIPv6: n.underlayIp6,
        BackendType: "vxlan",
        BackendData: { VNI: 1, VtepMAC: mac },
        BackendV6Data: { VNI: 1, VtepMAC: mac },
      });
      const e = env(n);
      assert.equal(e.FLANNEL_IPV6_NETWORK, NET6);
      assert.match(e.FLANNEL_IPV6_SUBNET!, /^fc00:5:0:[0-9a-f]+::1\/64$/);
      assert.equal(e.FLANNEL_MTU, "1430"); // room for the IPv6 outer header
    }
  });

  it("programs both families: ovl0's IPv6 address and route, map dump and map get over IPv6", function () {
    const a6 = sh(inNs(n1.ns, ["ip", "-6", "addr", "show", "dev", "ovl0", "scope", "global"]));
    assert.match(a6, new RegExp(`inet6 ${subnet6(n1).replace("/64", "")}/128`));
    assert.match(sh(inNs(n1.ns, ["ip", "-6", "route", "show", NET6])), /dev ovl0/);
    const j = ctl(n1, ["map", "dump", "-o", "json"]);
    assert.equal(j.status, 0, j.stderr);
    const rows = JSON.parse(j.stdout) as { subnet: string; remoteIp: string; flags: string[] }[];
    for (const n of [n1, n2, n3]) {
      const r = rows.find((x) => x.subnet === subnet6(n));
      assert.ok(r, `${subnet6(n)} in ${j.stdout}`);
      assert.equal(r.remoteIp, n.underlayIp6);
      assert.deepEqual(r.flags, n === n1 ? ["local"] : []);
    }
    assert.equal(rows.length, 6);
    const dst = subnet6(n2).replace("::/64", "::7");
    const g = ctl(n1, ["map", "get", dst, "-o", "json"]);
    assert.equal(g.status, 0, g.stderr);
    assert.deepEqual(
      { ...JSON.parse(g.stdout), vtepMac: undefined },
      {
        ip: dst,
        action: "encapsulate",
        subnet: subnet6(n2),
        remoteIp: n2.underlayIp6,
        vtepMac: undefined,
      },
    );
  });

  it("carries IPv6 pod to pod (CNI pods and bridged pods) and IPv4 beside it, at the advertised MTU", async function () {
    const p1 = pod(n1);
    const p2 = pod(n2);
    const p3 = pod(n3);
    assert.ok(p1.ip6 && p2.ip6 && p3.ip6, "every pod has an IPv6 address");
    for (const [a, b] of [
      [p1, p2],
      [p2, p1],
      [p1, p3],
      [p3, p2],
    ] as const) {
      await waitFor(`${a.ns} -> ${b.ip6}`, () => ping6(a.ns, b.ip6!, { count: 1 }), 10000);
      assert.ok(ping(a.ns, b.ip, { count: 2 }), `${a.ns} -> ${b.ip} (IPv4)`);
      // full-size at the pod MTU 1430: 1430 - 40 (IPv6) - 8 (ICMPv6)
      assert.ok(
        ping6(a.ns, b.ip6!, { count: 3, size: 1382, df: true }),
        `${a.ns} -> ${b.ip6} at 1430`,
      );
    }
    // overlayctl trace over IPv6: the CNI pod's veth, a tunnel key to node 2
    const tr = ctl(n1, [
      "trace",
      p1.ip6!,
      p2.ip6!,
      "-o",
      "json",
      "--subnet-file",
      c.subnetFile(n1),
    ]);
    assert.equal(tr.status, 0, tr.stderr);
    const t = JSON.parse(tr.stdout);
    assert.equal(t.path, "encap");
    assert.equal(t.peer, n2.underlayIp6);
    assert.match(t.steps[0], /^ovl_encap_pod on /);
    const back = JSON.parse(
      ctl(n2, ["trace", p1.ip6!, p2.ip6!, "-o", "json", "--subnet-file", c.subnetFile(n2)]).stdout,
    );
    assert.equal(back.path, "decap");
    assert.match(back.steps.join("\n"), /bpf_redirect_peer/);
    // the node itself over IPv6 (ovl0's route), to CNI and bridged pods
    for (const b of [p2, p3]) {
      assert.ok(ping6(n1.ns, b.ip6!, { count: 2 }), `node 1 -> ${b.ip6}`);
    }
    const bps = await iperf(p2.ns, p2.ip6!, p1.ns, { seconds: 2 });
    assert.ok(bps > 50e6, `iperf3 over IPv6: ${(bps / 1e6).toFixed(0)} Mbit/s`);
    const bps3 = await iperf(p3.ns, p3.ip6!, p1.ns, { seconds: 2 });
    assert.ok(bps3 > 50e6, `iperf3 over IPv6 to a bridged pod: ${(bps3 / 1e6).toFixed(0)} Mbit/s`);
    // the underlay carried it as IPv6 VXLAN, counted per PublicIPv6
    const rows = JSON.parse(ctl(n1, ["map", "dump", "-o", "json"]).stdout) as {
      subnet: string;
      txBytes: string;
    }[];
    const r2 = rows.find((r) => r.subnet === subnet6(n2))!;
    assert.ok(Number(r2.txBytes) > 1e6, `tx bytes to ${n2.underlayIp6}: ${r2.txBytes}`);
    const m = c.agent(n1).http("/metrics", 9474).body;
    assert.match(m, new RegExp(`overlay_peer_tx_bytes_total\\{peer="${n2.underlayIp6}"\\} [1-9]`));
  });

  it("interoperates with a dual-stack flannel node (flannel.1 and flannel-v6.1) both ways, over both families", async function () {
    const fl = c.topo.addNode(4, { ipv6: true });
    sh(inNs(fl.ns, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]));
    flannelJoin(c.etcd, PREFIX, fl.ns, {
      publicIp: fl.underlayIp,
      subnet: "10.5.250.0/24",
      v6: { publicIp: fl.underlayIp6!, subnet: "fc00:5:0:fa::/64" },
    });
    const fp = bridgedPod(fl, "fc00:5:0:fa::/64", "10.5.250.0/24");
    await waitFor("flannel's IPv6 subnet in node 1's map", () => {
      const g = ctl(n1, ["map", "get", "fc00:5:0:fa::2", "-o", "json"]);
      return g.status === 0 && JSON.parse(g.stdout).remoteIp === fl.underlayIp6;
    });
    const mac6 = JSON.parse(sh(inNs(fl.ns, ["ip", "-j", "link", "show", "flannel-v6.1"])))[0]
      .address;
    const g = JSON.parse(ctl(n1, ["map", "get", "fc00:5:0:fa::2", "-o", "json"]).stdout);
    assert.equal(g.vtepMac, mac6, "flannel-v6.1's VtepMAC from BackendV6Data");
    for (const p of [pod(n1), pod(n3)]) {
      assert.ok(ping(p.ns, fp.ip, { count: 2 }), `${p.ns} -> flannel pod ${fp.ip}`);
      assert.ok(ping(fp.ns, p.ip, { count: 2 }), `flannel pod -> ${p.ip}`);
      await waitFor(`${p.ns} -> ${fp.ip6}`, () => ping6(p.ns, fp.ip6!, { count: 1 }), 10000);
      assert.ok(ping6(fp.ns, p.ip6!, { count: 2 }), `flannel pod -> ${p.ip6}`);
    }
    const bps = await iperf(fp.ns, fp.ip6!, pod(n1).ns, { seconds: 2 });
    assert.ok(bps > 50e6, `iperf3 over IPv6 to flannel: ${(bps / 1e6).toFixed(0)} Mbit/s`);
  });

  it("keeps a v4-only lease of an older node working in the dual-stack network (a rollout)", async function () {
    const old = c.topo.addNode(5);
    flannelJoin(c.etcd, PREFIX, old.ns, { publicIp: old.underlayIp, subnet: "10.5.251.0/24" });
    const op = c.topo.addPod(old, { subnet: "10.5.251.0/24" });
    await waitFor("the v4-only lease in node 1's map", () => {
      const g = ctl(n1, ["map", "get", op.ip, "-o", "json"]);
      return g.status === 0 && JSON.parse(g.stdout).remoteIp === old.underlayIp;
    });
    assert.ok(ping(pod(n1).ns, op.ip, { count: 2 }), "dual-stack pod -> v4-only node's pod");
    assert.ok(ping(op.ns, pod(n2).ip, { count: 2 }), "v4-only node's pod -> dual-stack pod");
    const rows = JSON.parse(ctl(n1, ["map", "dump", "-o", "json"]).stdout) as {
      remoteIp: string;
    }[];
    assert.equal(rows.filter((r) => r.remoteIp === old.underlayIp).length, 1, "one (IPv4) entry");
  });

  it("follows a lease whose key changes its IPv6 half, and a delete, in the IPv6 map", async function () {
    const lease = (s6: string) => ({
      key: `${PREFIX}/subnets/10.5.252.0-24&${s6}`,
      value: JSON.stringify({
        PublicIP: "172.31.0.252",
        PublicIPv6: "fd31::fc",
        BackendType: "vxlan",
        BackendData: { VNI: 1, VtepMAC: "0e:00:00:00:fc:01" },
        BackendV6Data: { VNI: 1, VtepMAC: "0e:00:00:00:fc:02" },
      }),
    });
    const at = (ip: string) => {
      const g = JSON.parse(ctl(n1, ["map", "get", ip, "-o", "json"]).stdout);
      return g.action === "encapsulate" ? `${g.subnet} ${g.remoteIp} ${g.vtepMac}` : g.action;
    };
    const a = lease("fc00:5:0:fc::-64");
    c.etcd.put(a.key, a.value);
    await waitFor("fc00:5:0:fc::/64", () => at("fc00:5:0:fc::1") !== "no-entry");
    assert.equal(at("fc00:5:0:fc::1"), "fc00:5:0:fc::/64 fd31::fc 0e:00:00:00:fc:02");
    assert.equal(at("10.5.252.1"), "10.5.252.0/24 172.31.0.252 0e:00:00:00:fc:01");
    // the owner moves it to another IPv6 subnet: its old key deleted, the new put
    const b = lease("fc00:5:0:fd::-64");
    c.etcd.ctl(["txn"], `\ndel ${a.key}\nput ${b.key} ${b.value}\n\n\n`);
    await waitFor("fc00:5:0:fd::/64", () => at("fc00:5:0:fd::1") !== "no-entry");
    assert.equal(at("fc00:5:0:fc::1"), "no-entry", "the old IPv6 half is gone");
    assert.equal(at("10.5.252.1"), "10.5.252.0/24 172.31.0.252 0e:00:00:00:fc:01", "IPv4 stays");
    c.etcd.ctl(["del", b.key]);
    await waitFor(
      "both halves gone",
      () => at("fc00:5:0:fd::1") === "no-entry" && at("10.5.252.1") === "no-entry",
      10000,
    );
  });

  it("restarts an agent under a 1 ms IPv6 ping and an IPv6 iperf3 flow: nothing lost, a warm start", async function () {
    const r = await underLoadBetween(
      pod(n1),
      { ns: pod(n2).ns, ip: pod(n2).ip6! },
      8,
      async () => {
        await c.agent(n2).stop("SIGKILL");
        await c.startAgent(n2).waitReady();
      },
      "1G",
    );
    assertNothingLost(r);
    assert.match(c.agent(n2).logs, /msg=ready .*start=warm .*mapWrites=0/);
  });

  it("reports a bad IPv6 config and keeps forwarding both families", async function () {
    const bad = { ...CONFIG6, IPv6SubnetLen: 40 };
    c.etcd.put(`${PREFIX}/config`, JSON.stringify(bad));
    await waitFor("IPv6SubnetLen refused", () =>
      /IPv6SubnetLen/.test(c.agent(n1).http("/readyz").body),
    );
    assert.ok(ping6(pod(n1).ns, pod(n2).ip6!, { count: 2 }), "IPv6 still forwarded");
    assert.ok(ping(pod(n1).ns, pod(n2).ip, { count: 2 }), "IPv4 still forwarded");
    c.etcd.put(`${PREFIX}/config`, JSON.stringify(CONFIG6));
    await waitFor("ready again", () => c.agent(n1).http("/readyz").status === 200);
  });

  // Found by the chaos soak (link-flap-flushes-ipv6): a link down flushes
  // the underlay's IPv6 addresses (keep_addr_on_down=0, the kernel's
  // default) until the network manager re-adds them, and a config rewrite
  // in that window was refused for want of a PublicIPv6, the node left not
  // ready with a stale error.
  it("link-flap-flushes-ipv6: a rewritten config is still valid while the PublicIPv6 is gone", async function () {
    const ns = n2.ns;
    sh(inNs(ns, ["sysctl", "-qw", "net.ipv6.conf.eth0.keep_addr_on_down=0"]));
    try {
      sh(inNs(ns, ["ip", "link", "set", "eth0", "down"]));
      sh(inNs(ns, ["ip", "link", "set", "eth0", "up"]));
      assert.doesNotMatch(sh(inNs(ns, ["ip", "-6", "addr", "show", "dev", "eth0"])), /fd31::/);
      c.etcd.put(`${PREFIX}/config`, JSON.stringify(CONFIG6, null, 2)); // the same, rewritten
      await sleep(1000);
      const r = c.agent(n2).http("/readyz");
      assert.equal(r.status, 200, r.body);
      // the address back (what the network manager does): IPv6 flows again
      sh(inNs(ns, ["ip", "-6", "addr", "add", `${n2.underlayIp6}/64`, "dev", "eth0", "nodad"]));
      await waitFor("IPv6 again", () => ping6(pod(n1).ns, pod(n2).ip6!, { count: 1 }), 10000);
      assert.ok(ping(pod(n1).ns, pod(n2).ip, { count: 2 }), "IPv4 throughout");
    } finally {
      sh(inNs(ns, ["sysctl", "-qw", "net.ipv6.conf.eth0.keep_addr_on_down=1"]));
    }
  });

  it("refuses a --public-ipv6 that is not this node's, naming it, and touches nothing", async function () {
    const n6 = c.topo.addNode(6, { ipv6: true });
    c.nodes.push(n6);
    const a = c.startAgent(n6, [...c.defaultFlags, "--public-ipv6", "fd31::99"]);
    await waitFor("the refusal", () =>
      /EnableIPv6: --public-ipv6 fd31::99 is not a global IPv6 address of this node/.test(
        a.http("/readyz").body,
      ),
    );
    assert.equal(a.http("/readyz").status, 503);
    const leases = [...c.etcd.list(`${PREFIX}/subnets/`).values()].map((v) => JSON.parse(v.value));
    assert.ok(!leases.some((l) => l.PublicIP === n6.underlayIp), "no lease taken");
    assert.equal(shStatus(inNs(n6.ns, ["ip", "link", "show", "ovl0"])).status, 1, "no ovl0");
    await a.stop("SIGKILL");
    c.agents.delete(n6.index);
  });

  it("takes a dual-stack flannel node over: both subnets kept, flannel.1 and flannel-v6.1 gone, both families reachable", async function () {
    const fl = c.topo.addNode(7, { ipv6: true });
    sh(inNs(fl.ns, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]));
    flannelJoin(c.etcd, PREFIX, fl.ns, {
      publicIp: fl.underlayIp,
      subnet: "10.5.247.0/24",
      ttl: 600,
      v6: { publicIp: fl.underlayIp6!, subnet: "fc00:5:0:f7::/64" },
    });
    const fp = bridgedPod(fl, "fc00:5:0:f7::/64", "10.5.247.0/24");
    const p1 = pod(n1);
    await waitFor("flannel's pod over IPv6", () => ping6(p1.ns, fp.ip6!, { count: 1 }), 10000);
    c.nodes.push(fl);
    await c.startAgent(fl).waitReady();
    for (const dev of ["flannel.1", "flannel-v6.1"])
      assert.equal(shStatus(inNs(fl.ns, ["ip", "link", "show", dev])).status, 1, `${dev} gone`);
    assert.equal(env(fl).FLANNEL_SUBNET, "10.5.247.1/24");
    assert.equal(env(fl).FLANNEL_IPV6_SUBNET, "fc00:5:0:f7::1/64");
    await waitFor(
      "IPv6 to the taken-over node's pod",
      () => ping6(p1.ns, fp.ip6!, { count: 1 }),
      10000,
    );
    assert.ok(ping6(fp.ns, p1.ip6!, { count: 2 }), "and back");
    assert.ok(ping(p1.ns, fp.ip, { count: 2 }), "IPv4 too");
    assert.ok(ping(fp.ns, p1.ip, { count: 2 }), "IPv4 back");
  });
});

// flannel's other dual-stack modes: host-gw, and vxlan with DirectRouting,
// for nodes on one L2 network: IPv6 pods are sent to the peer's PublicIPv6
// unwrapped (OVL_F_DIRECT in ovl_subnets6), with no VXLAN on the wire.
for (const backend of [{ Type: "host-gw" }, { Type: "vxlan", DirectRouting: true }]) {
  describe(`e2e: dual-stack with ${JSON.stringify(backend)}`, function () {
    this.timeout(180000);
    const c = new Cluster();
    let n1: NodeInfo;
    let n2: NodeInfo;

    before(async function () {
      requireEnv(this, { root: true, tools: ["etcd", "etcdctl", "ip", "ping", "tcpdump"] });
      await c.startEtcd({ config: JSON.stringify({ ...CONFIG6, Backend: backend }) });
      for (let i = 1; i <= 2; i++) c.nodes.push(c.topo.addNode(i, { ipv6: true }));
      [n1, n2] = c.nodes as [NodeInfo, NodeInfo];
      await c.startAgents();
      c.addPod(n1);
      c.addPod(n2);
    });
    after(async () => c.stop());

    it("programs the peer's IPv6 subnet as direct and carries IPv6 pods unwrapped", async function () {
      const p1 = c.pod(n1);
      const p2 = c.pod(n2);
      const out = shStatus(
        inNs(n1.ns, [
          "node",
          OVERLAYCTL,
          "map",
          "get",
          p2.ip6!,
          "-o",
          "json",
          "--pin-path",
          n1.pinPath,
        ]),
      );
      assert.equal(out.status, 0, out.stderr);
      assert.equal(JSON.parse(out.stdout).remoteIp, n2.underlayIp6);
      const dump = JSON.parse(
        sh(
          inNs(n1.ns, ["node", OVERLAYCTL, "map", "dump", "-o", "json", "--pin-path", n1.pinPath]),
        ),
      ) as { remoteIp: string; flags: string[] }[];
      assert.deepEqual(dump.find((r) => r.remoteIp === n2.underlayIp6)?.flags, ["direct"]);
      await waitFor(`${p1.ns} -> ${p2.ip6}`, () => ping(p1.ns, p2.ip6!, { count: 1 }), 10000);
      const vxlan = await capture(
        n1.ns,
        "eth0",
        ["udp", "port", "8472"],
        async () => {
          assert.ok(ping(p1.ns, p2.ip6!, { count: 5 }), "IPv6 pod -> pod");
          assert.ok(ping(p2.ns, p1.ip6!, { count: 5 }), "and back");
          assert.ok(ping(p1.ns, p2.ip, { count: 2 }), "IPv4 beside it");
        },
        "inout",
      );
      assert.deepEqual(vxlan, [], "no VXLAN on the wire");
      const plain = await capture(
        n1.ns,
        "eth0",
        ["icmp6", "and", "host", p2.ip6!],
        async () => {
          assert.ok(ping(p1.ns, p2.ip6!, { count: 3 }));
        },
        "out",
      );
      assert.ok(plain.length >= 3, `the pod's own ICMPv6 on the wire: ${plain.join("\n")}`);
      const bps = await iperf(p2.ns, p2.ip6!, p1.ns, { seconds: 2 });
      assert.ok(bps > 50e6, `iperf3 over IPv6: ${(bps / 1e6).toFixed(0)} Mbit/s`);
    });
  });
}
