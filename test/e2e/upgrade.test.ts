// Upgrading a live node across an ABI change: the build of an earlier commit
// (extracted from git and built here) runs two nodes; a 1 ms ping and an
// iperf3 stream cross between their pods while one node is upgraded to this
// build, whose maps have another layout (ovl_stats and ovl_drops grew with
// the `direct` direction). Nothing may be lost. Then the way back: the old
// build refuses the new pins before touching anything, and the node keeps
// forwarding.
import assert from "node:assert/strict";
import { existsSync, mkdtempSync, readdirSync, rmSync, utimesSync } from "node:fs";
import { join } from "node:path";
import { checkPinnedMaps } from "../../agent/bpf/datapath";
import { libbpf } from "../../agent/bpf/libbpf";
import { StatsReader } from "../../agent/bpf/stats";
import { Cluster } from "../lib/cluster";
import { requireEnv } from "../lib/require";
import { loadNode } from "../lib/overlay";
import { inNs, sh, shStatus, sleep, waitFor } from "../lib/sh";
import { NETWORK, Topology, type NodeInfo, type PodInfo } from "../lib/topology";
import { assertNothingLost, ping, underLoadBetween } from "../lib/traffic";

const REPO = join(__dirname, "..", "..", "..");
/** The last commit before this build's ABI change (OVL_DIR_DIRECT). */
const EARLIER = "94ef80f";
const NODE_HELPER = join(__dirname, "..", "lib", "node-helper.js");

function setup(n: NodeInfo) {
  return {
    underlay: "eth0",
    publicIp: n.underlayIp,
    network: NETWORK,
    subnet: n.subnet,
    pinPath: n.pinPath,
    decap: "tc",
  };
}

describe("e2e: upgrade across an ABI change, without loss", function () {
  this.timeout(600000);
  const c = new Cluster();
  let old = "";
  let n1: NodeInfo;
  let n2: NodeInfo;
  const pod = (n: NodeInfo) => n.pods[0] as PodInfo;
  const oldAgent = (n: NodeInfo) =>
    c.startAgent(n, c.defaultFlags, [
      "ip",
      "netns",
      "exec",
      n.ns,
      "node",
      join(old, "bin", "overlayd"),
    ]);

  before(async function () {
    requireEnv(this, {
      root: true,
      tools: ["git", "make", "clang", "bpftool", "ping", "iperf3", "etcd"],
    });
    // The earlier build: its tree from git, this checkout's modules, built.
    old = mkdtempSync("/tmp/overlayd-earlier-");
    sh(["sh", "-c", `git -C "${REPO}" archive ${EARLIER} | tar -x -C "${old}"`]);
    sh(["ln", "-s", join(REPO, "node_modules"), join(old, "node_modules")]);
    sh(["mkdir", "-p", join(old, "build")]);
    const stamp = join(old, "build", ".deps-stamp");
    sh(["touch", stamp]); // never `npm ci` over the shared modules
    utimesSync(stamp, new Date(Date.now() + 60000), new Date(Date.now() + 60000));
    sh(["make", "-C", old, "build"]);
    await c.startEtcd();
    c.addNodes(2);
    [n1, n2] = c.nodes as [NodeInfo, NodeInfo];
    for (const n of c.nodes) oldAgent(n);
    for (const n of c.nodes) await c.agent(n).waitReady();
    for (const n of c.nodes) c.addPod(n);
    assert.ok(ping(pod(n1).ns, pod(n2).ip), "pods talk under the earlier build");
    assert.throws(() => checkPinnedMaps(n1.pinPath), /does not match this overlayd's ABI/);
  });

  after(async function () {
    await c.stop();
    if (old) rmSync(old, { recursive: true, force: true });
  });

  it("upgrades a node to this build under a 1 ms ping and iperf3: nothing lost", async function () {
    const r = await underLoadBetween(
      pod(n1),
      pod(n2),
      8,
      async () => {
        await c.agent(n1).stop("SIGTERM");
        const a = c.startAgent(n1);
        await a.waitReady();
      },
      "1G",
    );
    assertNothingLost(r);
    const logs = c.agent(n1).logs;
    assert.match(logs, /pinned maps carried over an ABI change/);
    assert.match(logs, /ovl_stats:copy \(max entries 2 -> 3\)/);
    assert.match(logs, /ovl_peer_stats:copy \(flags 0 -> 1\)/, "counters made by traffic now");
    checkPinnedMaps(n1.pinPath); // the pins are this build's now
    assert.ok(!existsSync(join(n1.pinPath, "upgrade-staging")), "staging directory gone");
    assert.ok(!readdirSync(n1.pinPath).includes("upgrade-staging"));
  });

  it("the pods' programs and the counters are this build's", async function () {
    const pinned = libbpf.objGet(join(n1.pinPath, "ovl_encap_pod"));
    const info = Buffer.alloc(256);
    libbpf.objInfo(pinned, info, "ovl_encap_pod");
    libbpf.close(pinned);
    const id = info.readUInt32LE(4); // struct bpf_prog_info.id
    const attached = sh(
      inNs(n1.ns, ["tc", "-j", "filter", "show", "dev", pod(n1).hostVeth, "ingress"]),
    );
    assert.match(attached, new RegExp(`"id":${id}\\b`), `veth runs program ${id}: ${attached}`);
    const stats = StatsReader.openPinned(n1.pinPath);
    try {
      const before = stats.read().traffic.get("tx")!.packets;
      assert.ok(ping(pod(n1).ns, pod(n2).ip, { count: 3 }));
      await sleep(100);
      assert.ok(stats.read().traffic.get("tx")!.packets >= before + 3n, "counted in the new maps");
    } finally {
      stats.close();
    }
  });

  it("a downgrade is refused before anything is touched, and forwarding goes on", async function () {
    await c.agent(n1).stop("SIGTERM");
    const a = oldAgent(n1);
    await waitFor("the earlier build exits", () => !a.running, 20000);
    assert.notEqual(a.exitCode, 0);
    assert.match(a.logs, /does not match this overlayd's ABI/);
    assert.ok(ping(pod(n1).ns, pod(n2).ip, { count: 3 }), "still forwarding");
    checkPinnedMaps(n1.pinPath);
    c.startAgent(n1);
    await c.agent(n1).waitReady();
  });
});

describe("e2e: pinned maps of another layout", function () {
  this.timeout(120000);
  const topo = new Topology();
  let n: NodeInfo;

  before(function () {
    requireEnv(this, { root: true, tools: ["bpftool", "ip"] });
    topo.create();
    n = topo.addNode(1);
  });
  after(() => topo.destroy());

  /** A map pinned where this build expects one, with another layout. */
  function fakePin(name: string, args: string[]): void {
    sh(["mkdir", "-p", n.pinPath]);
    sh(["bpftool", "map", "create", join(n.pinPath, name), ...args, "name", name]);
  }

  it("refuses an endpoint map it cannot carry over, before touching anything", function () {
    fakePin("ovl_endpoints", ["type", "hash", "key", "4", "value", "24", "entries", "16384"]);
    const r = shStatus(inNs(n.ns, ["node", NODE_HELPER, "setup", JSON.stringify(setup(n))]));
    assert.notEqual(r.status, 0);
    assert.match(
      r.stderr,
      /map ovl_endpoints at .*: value 24 -> 16 B: this build cannot carry it over/,
    );
    assert.deepEqual(readdirSync(n.pinPath).sort(), ["ovl_endpoints"], "nothing pinned beside it");
    assert.equal(sh(inNs(n.ns, ["tc", "filter", "show", "dev", "eth0", "ingress"])).trim(), "");
    rmSync(join(n.pinPath, "ovl_endpoints"));
  });

  it("replaces a subnet map of another layout with this build's", function () {
    fakePin("ovl_subnets", [
      "type",
      "lpm_trie",
      "key",
      "8",
      "value",
      "16",
      "entries",
      "65536",
      "flags",
      "1",
    ]);
    loadNode(n, "tc");
    checkPinnedMaps(n.pinPath);
    assert.ok(!readdirSync(n.pinPath).includes("upgrade-staging"));
  });
});
