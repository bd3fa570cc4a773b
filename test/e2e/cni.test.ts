// The `overlay` CNI plugin with Debian's real bridge/host-local plugins: pods
// on three nodes ping each other; DEL frees the address and removes what ADD
// created; CHECK and VERSION answer; bad input gets a CNI error JSON.
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { EndpointMap } from "../../agent/bpf/endpoint-map";
import { renderSubnetEnv } from "../../agent/control/subnet-env";
import { Cidr, formatIp, parseIp } from "../../agent/net/ip";
import { Cidr6 } from "../../agent/net/ip6";
import { Cluster } from "../lib/cluster";
import { cni, netconf } from "../lib/cni";
import { requireEnv } from "../lib/require";
import { inNs, sh, shStatus, waitFor } from "../lib/sh";
import { ping } from "../lib/traffic";
import { Topology, type NodeInfo } from "../lib/topology";

describe("e2e: overlay CNI plugin", function () {
  this.timeout(180000);
  const c = new Cluster();
  let nodes: NodeInfo[] = [];

  function endpoints(n: NodeInfo): string[] {
    const m = EndpointMap.openPinned(n.pinPath);
    try {
      return m.list().map((e) => formatIp(e.podIp));
    } finally {
      m.close();
    }
  }

  before(async function () {
    requireEnv(this, { root: true, tools: ["etcd", "ip", "ping"] });
    if (!existsSync("/usr/lib/cni/bridge") && !existsSync("/opt/cni/bin/bridge")) {
      throw new Error(
        "the CNI bridge plugin is missing: install containernetworking-plugins (make deps)",
      );
    }
    await c.start(3);
    nodes = c.nodes;
  });

  after(async function () {
    await c.stop();
  });

  it("ADD gives each pod an address in its node's lease, on cni0, with the overlay MTU", function () {
    for (const n of nodes) {
      const p = c.pod(n);
      const lease = c.agent(n).subnet();
      assert.equal(
        p.ip.split(".").slice(0, 3).join("."),
        lease.split(".").slice(0, 3).join("."),
        `${p.ip} in ${lease}`,
      );
      const link = JSON.parse(sh(inNs(p.ns, ["ip", "-j", "link", "show", "eth0"])))[0];
      assert.equal(link.mtu, 1450);
      const routes = sh(inNs(p.ns, ["ip", "route"]));
      assert.match(
        routes,
        /10\.5\.0\.0\/16 via 10\.5\.\d+\.1 dev eth0/,
        "a route to the cluster network",
      );
      assert.ok(endpoints(n).includes(p.ip), "registered for the fast path");
      assert.match(
        sh(inNs(n.ns, ["tc", "filter", "show", "dev", p.hostVeth, "ingress"])),
        /ovl_encap_pod/,
      );
    }
  });

  it("pods made through the plugin on three nodes ping each other", function () {
    for (const a of nodes) {
      for (const b of nodes) {
        if (a !== b) assert.ok(ping(c.pod(a).ns, c.pod(b).ip), `${c.pod(a).ip} -> ${c.pod(b).ip}`);
      }
    }
  });

  it("CHECK passes for a live pod, VERSION lists the supported versions", function () {
    const n = nodes[0]!;
    const p = c.pod(n);
    const conf = netconf(c.topo, n, { subnetFile: c.subnetFile(n), pinPath: n.pinPath });
    const chk = cni(n, "CHECK", conf, { id: p.containerId!, podNs: p.ns });
    assert.equal(chk.status, 0, chk.stdout);
    const v = cni(n, "VERSION", "{}", { id: "x", podNs: p.ns });
    assert.equal(v.status, 0);
    assert.deepEqual(JSON.parse(v.stdout).supportedVersions, ["0.3.0", "0.3.1", "0.4.0", "1.0.0"]);
  });

  it("DEL frees the address and removes what ADD created; a second DEL is a no-op", function () {
    const n = nodes[1]!;
    const p = c.addPod(n); // a second pod on node 2
    const conf = netconf(c.topo, n, { subnetFile: c.subnetFile(n), pinPath: n.pinPath });
    const ipamDir = join(conf.ipamDataDir, conf.name);
    assert.ok(existsSync(join(ipamDir, p.ip)), "host-local holds the address");
    assert.ok(ping(c.pod(nodes[0]!).ns, p.ip));
    const d = cni(n, "DEL", conf, { id: p.containerId!, podNs: p.ns });
    assert.equal(d.status, 0, d.stdout);
    assert.ok(!existsSync(join(ipamDir, p.ip)), "address freed");
    assert.ok(!endpoints(n).includes(p.ip), "endpoint unregistered");
    assert.ok(!readdirSync(conf.dataDir).includes(p.containerId!), "saved config removed");
    assert.equal(
      shStatus(inNs(n.ns, ["ip", "link", "show", p.hostVeth])).status,
      1,
      "host veth gone",
    );
    assert.ok(c.pod(n, 0) && endpoints(n).includes(c.pod(n, 0).ip), "the other pod untouched");
    assert.equal(cni(n, "DEL", conf, { id: p.containerId!, podNs: p.ns }).status, 0, "idempotent");
    // host-local hands out addresses round-robin; the freed one is free.
    const held = readdirSync(ipamDir).filter((f) => /^\d+\.\d+\.\d+\.\d+$/.test(f));
    assert.deepEqual(held, [c.pod(n, 0).ip]);
    const again = c.addPod(n);
    assert.ok(ping(c.pod(nodes[2]!).ns, again.ip));
  });

  const bad: [string, string, number, RegExp][] = [
    ["stdin that is not JSON", "{nope", 6, /network config on stdin is not JSON/],
    [
      "a config without a name",
      JSON.stringify({ cniVersion: "1.0.0", type: "overlay" }),
      7,
      /"name" must be a non-empty string/,
    ],
    [
      "an unsupported cniVersion",
      JSON.stringify({ cniVersion: "9.9.9", name: "x", type: "overlay" }),
      1,
      /cniVersion 9\.9\.9 is not supported/,
    ],
    [
      "a missing subnet file",
      JSON.stringify({
        cniVersion: "1.0.0",
        name: "x",
        type: "overlay",
        subnetFile: "/run/nope/subnet.env",
      }),
      11,
      /\/run\/nope\/subnet\.env: not there yet \(is overlayd running on this node\?\)/,
    ],
  ];
  for (const [what, stdin, code, re] of bad) {
    it(`answers ${what} with a CNI error JSON`, function () {
      const n = nodes[0]!;
      const r = cni(n, "ADD", stdin, { id: "bad", podNs: c.pod(n).ns });
      assert.equal(r.status, 1);
      const e = JSON.parse(r.stdout);
      assert.equal(e.cniVersion, "1.0.0");
      assert.equal(e.code, code);
      assert.match(e.msg, re);
    });
  }

  it("rejects an unknown CNI_COMMAND with code 4", function () {
    const n = nodes[0]!;
    const r = cni(n, "FROB", "{}", { id: "x", podNs: c.pod(n).ns });
    assert.equal(r.status, 1);
    assert.equal(JSON.parse(r.stdout).code, 4);
    assert.ok(parseIp(c.pod(n).ip));
  });
});

// Dual-stack (issue 14): from a subnet.env with flannel's FLANNEL_IPV6_*
// lines, the plugin has host-local hand out one address of each family, with
// a route to each cluster network. No agent: the fast path is off, so only
// the delegate config is under test, with Debian's real plugins.
describe("e2e: overlay CNI plugin, dual-stack subnet.env", function () {
  this.timeout(120000);
  const topo = new Topology();
  let node: NodeInfo;
  let conf: ReturnType<typeof netconf>;
  const podNs = () => `${topo.prefix}-p1`;
  const id = () => `${podNs()}-ctr`;

  before(function () {
    requireEnv(this, { root: true, tools: ["ip", "ping"] });
    if (!existsSync("/usr/lib/cni/host-local") && !existsSync("/opt/cni/bin/host-local")) {
      throw new Error(
        "the CNI host-local plugin is missing: install containernetworking-plugins (make deps)",
      );
    }
    topo.create();
    node = topo.addNode(1);
    const dir = join(topo.runDir, "n1");
    mkdirSync(dir, { recursive: true });
    const subnetFile = join(dir, "subnet.env");
    writeFileSync(
      subnetFile,
      renderSubnetEnv({
        network: Cidr.parse("10.5.0.0/16"),
        subnet: Cidr.parse("10.5.7.0/24"),
        ipv6: { network: Cidr6.parse("fc00:5::/48"), subnet: Cidr6.parse("fc00:5:0:7::/64") },
        mtu: 1430,
        ipMasq: true,
      }),
    );
    conf = netconf(topo, node, { subnetFile, pinPath: join(dir, "no-pins"), fastPath: false });
    topo.addNs(podNs());
  });

  after(function () {
    topo.destroy();
  });

  it("ADD gives the pod an IPv4 and an IPv6 address, a route to each network, the MTU", async function () {
    const r = cni(node, "ADD", conf, { id: id(), podNs: podNs() });
    assert.equal(r.status, 0, r.stdout + r.stderr);
    const ips = (JSON.parse(r.stdout).ips as { address: string; gateway: string }[]).map(
      (x) => `${x.address} gw ${x.gateway}`,
    );
    assert.deepEqual(ips.sort(), ["10.5.7.2/24 gw 10.5.7.1", "fc00:5:0:7::2/64 gw fc00:5:0:7::1"]);
    const addrs = JSON.parse(sh(inNs(podNs(), ["ip", "-j", "addr", "show", "eth0"])))[0];
    assert.equal(addrs.mtu, 1430);
    const local = (addrs.addr_info as { local: string; prefixlen: number }[]).map(
      (a) => `${a.local}/${a.prefixlen}`,
    );
    assert.ok(local.includes("10.5.7.2/24") && local.includes("fc00:5:0:7::2/64"), local.join());
    assert.match(sh(inNs(podNs(), ["ip", "route"])), /^10\.5\.0\.0\/16 via 10\.5\.7\.1 dev eth0/m);
    assert.match(
      sh(inNs(podNs(), ["ip", "-6", "route"])),
      /^fc00:5::\/48 via fc00:5:0:7::1 dev eth0/m,
    );
    // both gateways answer on cni0 (the v6 one once the bridge's duplicate
    // address detection is done)
    assert.ok(ping(podNs(), "10.5.7.1", { count: 2 }));
    await waitFor("the IPv6 gateway", () => ping(podNs(), "fc00:5:0:7::1", { count: 1 }), 10000);
  });

  it("CHECK passes, and DEL frees both addresses", function () {
    const chk = cni(node, "CHECK", conf, { id: id(), podNs: podNs() });
    assert.equal(chk.status, 0, chk.stdout + chk.stderr);
    const ipamDir = join(conf.ipamDataDir, conf.name);
    const held = () => readdirSync(ipamDir).filter((f) => /^[\d.]+$|:/.test(f));
    assert.deepEqual(held().sort(), ["10.5.7.2", "fc00:5:0:7::2"]);
    const d = cni(node, "DEL", conf, { id: id(), podNs: podNs() });
    assert.equal(d.status, 0, d.stdout + d.stderr);
    assert.deepEqual(held(), []);
  });
});
