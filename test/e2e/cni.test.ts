// The `overlay` CNI plugin with Debian's real bridge/host-local plugins: pods
// on three nodes ping each other; DEL frees the address and removes what ADD
// created; CHECK and VERSION answer; bad input gets a CNI error JSON.
import assert from "node:assert/strict";
import { existsSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { EndpointMap } from "../../agent/bpf/endpoint-map";
import { formatIp, parseIp } from "../../agent/net/ip";
import { Cluster } from "../lib/cluster";
import { cni, netconf } from "../lib/cni";
import { requireEnv } from "../lib/require";
import { inNs, sh, shStatus } from "../lib/sh";
import { ping } from "../lib/traffic";
import { type NodeInfo } from "../lib/topology";

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
