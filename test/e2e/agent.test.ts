// End to end with real agents: overlayd processes in node namespaces, a real
// etcd on the underlay (in the switch namespace), pods on the subnets the
// agents lease, real traffic. Also a node programmed from the leases the
// way flannel's vxlan backend does it.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { SubnetHostMap } from "../../agent/bpf/subnet-map";
import { EndpointMap } from "../../agent/bpf/endpoint-map";
import { Cidr, parseIp } from "../../agent/net/ip";
import { AgentProc } from "../lib/agent-proc";
import { EtcdServer } from "../lib/etcd";
import { flannelJoin } from "../lib/flannel";
import { requireEnv } from "../lib/require";
import { exited, inNs, sh, sleep, waitFor } from "../lib/sh";
import { Topology, type NodeInfo } from "../lib/topology";
import { ping } from "../lib/traffic";

const PREFIX = "/coreos.com/network";
const CONFIG = JSON.stringify({ Network: "10.5.0.0/16", Backend: { Type: "vxlan" } });
const TTL = 4;

describe("e2e: agents, etcd and pods", function () {
  this.timeout(300000);
  const topo = new Topology();
  let etcd: EtcdServer;
  const agents = new Map<number, AgentProc>();
  const nodes: NodeInfo[] = [];

  function startAgent(n: NodeInfo, extra: string[] = []): AgentProc {
    const file = `${topo.runDir}/n${n.index}-subnet.env`;
    const a = new AgentProc(
      n.ns,
      [
        "--etcd-endpoints",
        etcd.endpoint,
        "--iface",
        "eth0",
        "--pin-path",
        n.pinPath,
        "--subnet-file",
        file,
        "--subnet-lease-ttl",
        String(TTL),
        "--metrics-addr",
        "127.0.0.1:9474",
        ...extra,
      ],
      file,
    ).start();
    agents.set(n.index, a);
    return a;
  }

  function entries(n: NodeInfo): string[] {
    const m = SubnetHostMap.openPinned(n.pinPath);
    try {
      return m.list().map((e) => e.subnet.toString());
    } finally {
      m.close();
    }
  }

  function pod(n: NodeInfo) {
    const p = n.pods[0];
    assert.ok(p, `node ${n.index} has a pod`);
    return p;
  }

  function leaseOf(n: NodeInfo): string | undefined {
    for (const [k, v] of etcd.list(`${PREFIX}/subnets/`)) {
      if (JSON.parse(v.value).PublicIP === n.underlayIp)
        return k.split("/").pop()!.replace("-", "/");
    }
    return undefined;
  }

  before(async function () {
    requireEnv(this, { root: true, tools: ["etcd", "etcdctl", "ip", "ping", "iptables"] });
    topo.create();
    const ip = topo.switchAddress();
    etcd = await new EtcdServer({ ns: topo.switchNs, ip, clientPort: 2379 }).start();
    etcd.put(`${PREFIX}/config`, CONFIG);
    for (const i of [1, 2, 3]) nodes.push(topo.addNode(i));
    for (const n of nodes) startAgent(n, n.index === 1 ? ["--ip-masq"] : []);
    for (const n of nodes) await agents.get(n.index)!.waitReady();
    for (const n of nodes) topo.addPod(n, { subnet: agents.get(n.index)!.subnet() });
  });

  after(async function () {
    for (const a of agents.values()) await a.stop("SIGKILL");
    await etcd?.stop();
    topo.destroy();
  });

  it("converges from an empty etcd: distinct leases, every peer in every map, pods ping", function () {
    const subnets = nodes.map((n) => agents.get(n.index)!.subnet());
    assert.equal(new Set(subnets).size, 3);
    for (const n of nodes) {
      assert.deepEqual(entries(n).sort(), [...subnets].sort(), `map of node ${n.index}`);
    }
    for (const a of nodes) {
      for (const b of nodes) {
        if (a !== b) assert.ok(ping(pod(a).ns, pod(b).ip), `${a.index} -> ${b.index}`);
      }
    }
  });

  it("writes flannel's subnet.env", function () {
    const a = agents.get(1)!;
    const text = readFileSync(a.subnetFile, "utf8");
    const subnet = Cidr.parse(a.subnet());
    const first = subnet.toString().replace(/\.0\/24$/, ".1/24");
    assert.equal(
      text,
      `FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=${first}\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n`,
    );
  });

  it("serves /healthz and /readyz with named checks", function () {
    const a = agents.get(2)!;
    assert.equal(a.http("/healthz").status, 200);
    const r = a.http("/readyz");
    assert.equal(r.status, 200);
    const body = JSON.parse(r.body);
    assert.equal(body.ready, true);
    for (const k of ["config", "lease", "datapath", "synced", "subnetFile", "etcd"])
      assert.equal(body.checks[k], true, k);
    assert.equal(body.info.iptables, undefined, "no iptables mode without --ip-masq");
  });

  it("installs the masquerade chain with --ip-masq, and leaves it in place across a restart", async function () {
    const n1 = nodes[0]!;
    const rules = sh(inNs(n1.ns, ["iptables", "-t", "nat", "-S", "OVERLAYD-POSTRTG"]));
    const sub = agents.get(1)!.subnet();
    assert.match(
      rules,
      new RegExp(`-s ${sub.replace(/\./g, "\\.")} -d 10\\.5\\.0\\.0/16 .*-j RETURN`),
    );
    assert.match(rules, /-s 10\.5\.0\.0\/16 ! -d 224\.0\.0\.0\/4 .*-j MASQUERADE/);
    assert.match(
      sh(inNs(n1.ns, ["iptables", "-t", "nat", "-S", "POSTROUTING"])),
      /-j OVERLAYD-POSTRTG/,
    );
    // pod <-> pod is not masqueraded: the receiver sees the pod's address
    assert.ok(ping(pod(n1).ns, pod(nodes[1]!).ip));
    // The node's namespace has no legacy rules: nft, said once, and in /readyz.
    const a = agents.get(1)!;
    const said = a.logs.match(/msg="iptables mode" mode=nft reason="[^"]+" iptables=iptables-nft/g);
    assert.equal(said?.length, 1, a.logs.slice(-3000));
    assert.match(JSON.parse(a.http("/readyz").body).info.iptables, /^nft \(.+\)$/);
  });

  it("restarts an agent without losing a ping or changing its subnet", async function () {
    const n1 = nodes[0]!;
    const before = agents.get(1)!.subnet();
    const p = spawn("ip", [
      "netns",
      "exec",
      pod(nodes[1]!).ns,
      "ping",
      "-n",
      "-i",
      "0.01",
      "-c",
      "400",
      pod(n1).ip,
    ]);
    let out = "";
    p.stdout.on("data", (d) => (out += d));
    await sleep(300);
    assert.equal(await agents.get(1)!.stop("SIGTERM"), 143, "exit code 128+SIGTERM");
    // masquerade rules survive the stop (never flushed)
    assert.match(
      sh(inNs(n1.ns, ["iptables", "-t", "nat", "-S", "OVERLAYD-POSTRTG"])),
      /MASQUERADE/,
    );
    const a = startAgent(n1, ["--ip-masq"]);
    await a.waitReady();
    await exited(p);
    const m = /(\d+) packets transmitted, (\d+) received/.exec(out);
    assert.ok(m, out);
    assert.equal(m[2], m[1], `pings lost across the restart: ${m[0]}`);
    assert.equal(a.subnet(), before, "same subnet after restart");
  });

  it("restarts warm from its pinned map: nothing written for unchanged leases, what changed while it was down still arrives", async function () {
    const n1 = nodes[0]!;
    const peer = "10.5.200.0/24";
    const key = `${PREFIX}/subnets/10.5.200.0-24`;
    const value = JSON.stringify({
      PublicIP: "172.31.9.9",
      PublicIPv6: null,
      BackendType: "vxlan",
      BackendData: { VNI: 1, VtepMAC: "0e:00:00:00:09:09" },
    });
    const readyLine = (a: AgentProc) =>
      [/msg=ready .*/, /msg="cold start.*/].map((re) => re.exec(a.logs)?.[0] ?? "").join("\n");
    const writes = (a: AgentProc) =>
      Number(/^overlay_map_writes_total (\d+)$/m.exec(a.http("/metrics", 9474).body)?.[1]);
    // A TTL that outlasts a restart on a loaded machine: with the suite's 4 s
    // the lease may expire while the agent is down, and that start is
    // rightly cold.
    const flags = ["--ip-masq", "--subnet-lease-ttl", "120"];
    const restart = async (whileDown: () => void = () => {}) => {
      await agents.get(1)!.stop("SIGTERM");
      whileDown();
      const a = startAgent(n1, flags);
      await a.waitReady();
      await waitFor("the ready log line", () => /msg=ready /.test(a.logs), 20000);
      return a;
    };
    let a = await restart(); // the lease now has the long TTL
    // Unchanged leases: only our own lease read, the watch from the saved revision.
    a = await restart();
    assert.match(readyLine(a), /start=warm/);
    await sleep(500); // the replayed events (our own lease's rewrite) are applied
    assert.equal(writes(a), 0, "no map writes");
    // The peers it logs (counted on a worker thread): one per remote lease.
    assert.equal(
      Number(/ leases=(\d+)/.exec(readyLine(a))?.[1]),
      entries(n1).length - 1,
      readyLine(a),
    );
    // A lease added while the agent was down: exactly that one entry written.
    a = await restart(() => etcd.put(key, value));
    assert.match(readyLine(a), /start=warm/);
    await waitFor("the new lease in the map", () => entries(n1).includes(peer), 20000);
    assert.equal(writes(a), 1, "one map write");
    // Deleted while down and etcd compacted past the saved revision: the
    // watch reports the gap and a full listing puts the map right.
    a = await restart(() => {
      etcd.ctl(["del", key]);
      etcd.ctl(["compact", String(etcd.revision())]);
    });
    await waitFor(
      "the deleted lease gone from the map",
      () => !entries(n1).includes(peer),
      20000, // generous: a loaded CI machine, not a timing assertion
    ).catch((e: Error) => assert.fail(`${e.message}\n${a.logs.slice(-3000)}`));
    assert.match(a.logs, /watch gap; re-listing/);
    assert.match(
      a.http("/metrics", 9474).body,
      /^overlay_etcd_watch_restarts_total\{reason="compacted"\} 1$/m,
    );
    assert.ok(ping(pod(nodes[1]!).ns, pod(n1).ip), "still forwarding");
  });

  // Found by the chaos soak: a restart within DELETE_HOLD_MS of a lease's
  // delete saved a revision past it; the warm start skipped the delete and
  // the entry stayed in the map for good.
  it("warm-restart-keeps-held-deletes: a lease deleted just before a restart is gone after the warm start", async function () {
    const n1 = nodes[0]!;
    const peer = "10.5.201.0/24";
    const key = `${PREFIX}/subnets/10.5.201.0-24`;
    etcd.put(
      key,
      JSON.stringify({
        PublicIP: "172.31.9.10",
        BackendType: "vxlan",
        BackendData: { VNI: 1, VtepMAC: "0e:00:00:00:09:0a" },
      }),
    );
    await waitFor("the peer in the map", () => entries(n1).includes(peer), 20000);
    etcd.ctl(["del", key]);
    await sleep(300); // the delete arrives and is held (DELETE_HOLD_MS)
    assert.ok(entries(n1).includes(peer), "held, not yet removed");
    await agents.get(1)!.stop("SIGTERM");
    const a = startAgent(n1, ["--ip-masq", "--subnet-lease-ttl", "120"]);
    await a.waitReady();
    await waitFor("the ready log line", () => /msg=ready /.test(a.logs), 20000);
    assert.match(/msg=ready .*/.exec(a.logs)?.[0] ?? "", /start=warm/);
    await waitFor(
      "the deleted lease gone from the map",
      () => !entries(n1).includes(peer),
      20000,
    ).catch((e: Error) => assert.fail(`${e.message}\n${a.logs.slice(-3000)}`));
    assert.ok(ping(pod(nodes[1]!).ns, pod(n1).ip), "still forwarding");
  });

  it("gives bridged pods the fast path on its own (--pod-bridge auto), and takes it away with none", async function () {
    // These pods are plain bridge ports (topo.addPod): no CNI plugin of ours.
    const n2 = nodes[1]!;
    const hasEndpoint = (n: NodeInfo) => {
      const eps = EndpointMap.openPinned(n.pinPath);
      try {
        return eps.list().some((e) => e.podIp === parseIp(pod(n).ip));
      } finally {
        eps.close();
      }
    };
    const bridgeEncap = (n: NodeInfo) =>
      /ovl_encap_pod/.test(sh(inNs(n.ns, ["tc", "filter", "show", "dev", "cni0", "ingress"])));
    for (const n of nodes) {
      assert.ok(ping(pod(n).ns, n.gateway), "the pod talks to its gateway");
      await waitFor(`node ${n.index} finds its bridged pod`, () => hasEndpoint(n), 15000);
      assert.ok(bridgeEncap(n), `encap on node ${n.index}'s cni0`);
    }
    assert.ok(ping(pod(nodes[0]!).ns, pod(n2).ip), "pod 1 -> pod 2 on the fast path");

    await agents.get(2)!.stop("SIGTERM");
    await startAgent(n2, ["--pod-bridge", "none"]).waitReady();
    assert.ok(!bridgeEncap(n2), "none detaches the bridge's encap");
    assert.ok(!hasEndpoint(n2), "and removes the endpoint discovery wrote");
    assert.ok(ping(pod(nodes[0]!).ns, pod(n2).ip), "pod 1 -> pod 2 through the stack");
    assert.ok(ping(pod(n2).ns, pod(nodes[2]!).ip), "pod 2 -> pod 3 through the stack");

    await agents.get(2)!.stop("SIGTERM");
    await startAgent(n2).waitReady();
    await waitFor("the bridge's encap is back", () => bridgeEncap(n2), 15000);
  });

  it("adds a joining node to every map within a second of its lease", async function () {
    const n4 = topo.addNode(4);
    nodes.push(n4);
    startAgent(n4);
    const lease = await waitFor("node 4's lease in etcd", () => leaseOf(n4), 30000);
    const t0 = Date.now();
    await waitFor(
      "node 4 in every map",
      () => nodes.slice(0, 3).every((n) => entries(n).includes(lease)),
      5000,
    );
    const ms = Date.now() - t0;
    assert.ok(ms < 1000, `took ${ms} ms`);
    await agents.get(4)!.waitReady();
    topo.addPod(n4, { subnet: lease });
    assert.ok(ping(pod(n4).ns, pod(nodes[0]!).ip));
    assert.ok(ping(pod(nodes[2]!).ns, pod(n4).ip));
  });

  it("re-acquires its own lease when it is deleted by hand, keeping the subnet", async function () {
    const n2 = nodes[1]!;
    const sub = agents.get(2)!.subnet();
    etcd.ctl(["del", `${PREFIX}/subnets/${sub.replace("/", "-")}`]);
    await waitFor("lease back in etcd", () => leaseOf(n2) === sub, 10000);
    await sleep(200);
    for (const n of nodes) assert.ok(entries(n).includes(sub), `node ${n.index} still maps ${sub}`);
    assert.ok(ping(pod(nodes[0]!).ns, pod(n2).ip));
  });

  it("reports an invalid config without touching the data path, and recovers", async function () {
    etcd.put(`${PREFIX}/config`, JSON.stringify({ Network: "10.5.0.0/16", SubnetLen: 31 }));
    const a = agents.get(3)!;
    await waitFor("not ready", () => a.http("/readyz").status === 503);
    const r = JSON.parse(a.http("/readyz").body);
    assert.match(
      r.checks.config,
      /\/coreos\.com\/network\/config: SubnetLen: must be less than \/31/,
    );
    assert.match(a.http("/metrics", 9474).body, /overlay_config_errors_total [1-9]/);
    assert.ok(ping(pod(nodes[2]!).ns, pod(nodes[0]!).ip), "data path untouched");
    etcd.put(`${PREFIX}/config`, CONFIG);
    await waitFor("ready again", () => a.http("/readyz").status === 200);
  });

  it("removes a stopped node's entry once its lease expires; its pins forward meanwhile", async function () {
    const n3 = nodes[2]!;
    const sub = agents.get(3)!.subnet();
    await agents.get(3)!.stop("SIGKILL");
    // agent gone, programs and maps still forward
    assert.ok(ping(pod(nodes[0]!).ns, pod(n3).ip), "forwarding without an agent");
    await waitFor(
      "lease expiry seen by the others",
      () => !entries(nodes[0]!).includes(sub) && !entries(nodes[1]!).includes(sub),
      (TTL + 10) * 1000,
    );
    assert.ok(!ping(pod(nodes[0]!).ns, pod(n3).ip, { count: 1 }), "no route to the expired subnet");
    const a = startAgent(n3);
    await a.waitReady();
    assert.equal(a.subnet(), sub, "the previous subnet file's subnet is taken back");
    await waitFor("back in the maps", () => entries(nodes[0]!).includes(sub));
    assert.ok(ping(pod(nodes[0]!).ns, pod(n3).ip));
  });

  it("interoperates with a node whose kernel VXLAN is programmed from the leases, flannel-style", async function () {
    const n5 = topo.addNode(5);
    // The flannel-style node writes its lease with an etcd lease, as flanneld does.
    const subnet = "10.5.250.0/24";
    flannelJoin(etcd, PREFIX, n5.ns, { publicIp: n5.underlayIp, subnet, ttl: 600 });
    topo.addPod(n5, { subnet });
    await waitFor("flannel lease in the overlayd maps", () => entries(nodes[0]!).includes(subnet));
    for (const n of nodes) {
      assert.ok(ping(pod(n).ns, pod(n5).ip), `overlayd ${n.index} -> flannel`);
      assert.ok(ping(pod(n5).ns, pod(n).ip), `flannel -> overlayd ${n.index}`);
    }
  });
});
