// overlayctl as a user runs it: the built binary, spawned in a node's
// namespace, against the node's real pinned maps and the cluster's etcd.
// Asserts exit codes, stdout and stderr, in table and JSON form.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Cluster, PREFIX } from "../lib/cluster";
import { OVERLAYCTL } from "../lib/agent-proc";
import { requireEnv } from "../lib/require";
import { inNs, shStatus } from "../lib/sh";
import { ping } from "../lib/traffic";
import { type NodeInfo } from "../lib/topology";

describe("e2e: overlayctl", function () {
  this.timeout(180000);
  const c = new Cluster();
  let n1: NodeInfo;
  let n2: NodeInfo;
  let tmp = "";

  function ctl(node: NodeInfo, args: string[]) {
    return shStatus(
      inNs(node.ns, [
        "node",
        OVERLAYCTL,
        ...args,
        "--pin-path",
        node.pinPath,
        "--etcd-endpoints",
        c.etcd.endpoint,
      ]),
    );
  }

  before(async function () {
    requireEnv(this, { root: true, tools: ["etcd", "etcdctl", "ip", "ping"] });
    await c.start(2);
    [n1, n2] = c.nodes as [NodeInfo, NodeInfo];
    assert.ok(ping(c.pod(n1).ns, c.pod(n2).ip, { count: 3 }));
    tmp = mkdtempSync("/tmp/overlayctl-test-");
  });

  after(async function () {
    await c.stop();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  });

  it("map dump: a sorted table with live counters, and the same as stable JSON", function () {
    const t = ctl(n1, ["map", "dump"]);
    assert.equal(t.status, 0, t.stderr);
    const lines = t.stdout.trim().split("\n");
    assert.match(
      lines[0]!,
      /^SUBNET\s+REMOTE IP\s+VTEP MAC\s+FLAGS\s+TX PACKETS\s+TX BYTES\s+RX PACKETS\s+RX BYTES$/,
    );
    assert.equal(lines.length, 3);
    const j = ctl(n1, ["map", "dump", "-o", "json"]);
    assert.equal(j.status, 0, j.stderr);
    const rows = JSON.parse(j.stdout) as {
      subnet: string;
      remoteIp: string;
      flags: string[];
      txPackets: number;
    }[];
    assert.deepEqual(
      rows.map((r) => r.subnet),
      [...rows.map((r) => r.subnet)].sort((a, b) => {
        const n = (s: string) =>
          s
            .split(/[./]/)
            .slice(0, 4)
            .reduce((x, o) => x * 256 + Number(o), 0);
        return n(a) - n(b);
      }),
      "sorted by subnet address",
    );
    const own = rows.find((r) => r.flags.includes("local"));
    const peer = rows.find((r) => r.remoteIp === n2.underlayIp);
    assert.equal(own?.subnet, c.agent(n1).subnet());
    assert.equal(peer?.subnet, c.agent(n2).subnet());
    assert.ok(peer && peer.txPackets >= 3, "pings counted towards the peer");
  });

  it("map get: what the data path does with a destination", function () {
    const remote = JSON.parse(ctl(n1, ["map", "get", c.pod(n2).ip, "-o", "json"]).stdout);
    assert.deepEqual(remote, {
      ip: c.pod(n2).ip,
      action: "encapsulate",
      subnet: c.agent(n2).subnet(),
      remoteIp: n2.underlayIp,
      vtepMac: remote.vtepMac,
    });
    assert.match(remote.vtepMac, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
    assert.equal(
      JSON.parse(ctl(n1, ["map", "get", c.pod(n1).ip, "-o", "json"]).stdout).action,
      "local",
    );
    const none = ctl(n1, ["map", "get", "192.0.2.1"]);
    assert.equal(none.status, 0);
    assert.match(none.stdout, /no-entry/);
  });

  it("stats: traffic per direction and drops with names", function () {
    const j = JSON.parse(ctl(n1, ["stats", "-o", "json", "--all"]).stdout);
    const tx = j.traffic.find((t: { direction: string }) => t.direction === "tx");
    assert.ok(tx.packets >= 3);
    const reasons = j.drops.map((d: { reason: string }) => d.reason);
    for (const r of ["wrong_vni", "unknown_source", "spoofed_source", "no_peer"])
      assert.ok(reasons.includes(r), r);
    assert.match(ctl(n1, ["stats"]).stdout, /^DIRECTION\s+PACKETS\s+BYTES\ntx\s+\d+/);
  });

  it("lease list: every lease, TTL left, this node marked", function () {
    const args = ["lease", "list", "--subnet-file", c.subnetFile(n1)];
    const j = JSON.parse(ctl(n1, [...args, "-o", "json"]).stdout) as {
      subnet: string;
      publicIp: string;
      ttlSeconds: number | null;
      thisNode: boolean;
    }[];
    assert.equal(j.length, 2);
    const mine = j.find((l) => l.thisNode);
    assert.equal(mine?.publicIp, n1.underlayIp);
    assert.ok(
      j.every((l) => l.ttlSeconds !== null && l.ttlSeconds > 80000),
      "24h TTL, renewed",
    );
    assert.match(ctl(n1, args).stdout, /^\*\s+10\.5\.\d+\.0\/24\s+172\.31\.0\.1\s/m);
  });

  it("lease reserve and release: a reservation shows as reserved, then goes", function () {
    const r = ctl(n1, ["lease", "reserve", "10.5.254.0/24", "--public-ip", "172.31.0.99"]);
    assert.equal(r.status, 0, r.stderr);
    const l = JSON.parse(ctl(n1, ["lease", "list", "-o", "json"]).stdout).find(
      (x: { subnet: string }) => x.subnet === "10.5.254.0/24",
    );
    assert.equal(l.reserved, true);
    assert.equal(l.ttlSeconds, null);
    assert.equal(
      c.etcd.list(`${PREFIX}/subnets/10.5.254.0-24`).get(`${PREFIX}/subnets/10.5.254.0-24`)?.lease,
      "0",
    );
    const taken = ctl(n1, ["lease", "reserve", c.agent(n2).subnet(), "--public-ip", "172.31.0.99"]);
    assert.equal(taken.status, 1);
    assert.match(
      taken.stderr,
      new RegExp(
        `^overlayctl: ${c.agent(n2).subnet().replace(/\./g, "\\.")} is held by 172\\.31\\.0\\.2; use --force to take it\\n$`,
      ),
    );
    assert.equal(ctl(n1, ["lease", "release", "10.5.254.0/24"]).status, 0);
    const again = ctl(n1, ["lease", "release", "10.5.254.0/24"]);
    assert.equal(again.status, 1);
    assert.match(again.stderr, /10\.5\.254\.0\/24: no such lease/);
  });

  it("config get shows the stored and effective config; set validates with the agent's rules", function () {
    const g = JSON.parse(ctl(n1, ["config", "get", "-o", "json"]).stdout);
    assert.equal(g.effective.Network, "10.5.0.0/16");
    assert.equal(g.effective.SubnetLen, 24);
    assert.equal(g.effective.Backend.Port, 8472);

    const bad = join(tmp, "bad.json");
    writeFileSync(
      bad,
      JSON.stringify({ Network: "10.5.0.0/16", SubnetMin: "10.5.9.0", SubnetMax: "10.5.3.0" }),
    );
    const b = ctl(n1, ["config", "set", bad]);
    assert.equal(b.status, 1);
    assert.match(
      b.stderr,
      /^overlayctl: .*bad\.json: SubnetMin: 10\.5\.9\.0 is above SubnetMax 10\.5\.3\.0\n$/,
    );

    const moved = join(tmp, "moved.json");
    writeFileSync(moved, JSON.stringify({ Network: "10.9.0.0/16" }));
    const m = ctl(n1, ["config", "set", moved]);
    assert.equal(m.status, 1);
    assert.match(
      m.stderr,
      /Network would change from 10\.5\.0\.0\/16 to 10\.9\.0\.0\/16 while 2 leases exist; use --force/,
    );
    assert.equal(
      JSON.parse(c.etcd.get(`${PREFIX}/config`) as string).Network,
      "10.5.0.0/16",
      "unchanged",
    );

    const same = join(tmp, "same.json");
    writeFileSync(same, JSON.stringify({ Network: "10.5.0.0/16", Backend: { Type: "vxlan" } }));
    assert.equal(ctl(n1, ["config", "set", same]).status, 0);
  });

  it("status: agent ready, programs attached, map sizes, ABI ok", function () {
    const s = JSON.parse(ctl(n1, ["status", "-o", "json"]).stdout);
    assert.equal(s.agent.reachable, true);
    assert.equal(s.agent.ready, true);
    assert.equal(s.abi, "ok");
    const hooks = s.attachments.map(
      (a: { iface: string; hook: string; program: string }) => `${a.iface}/${a.hook}/${a.program}`,
    );
    assert.ok(hooks.includes("eth0/tc-ingress/ovl_decap_tc"), hooks.join());
    assert.ok(hooks.includes("ovl0/tc-egress/ovl_encap_dev"), hooks.join());
    assert.ok(hooks.includes("ovl0/tc-ingress/ovl_decap_dev"), hooks.join());
    // The mechanism, read from the kernel, and why the agent chose it.
    assert.deepEqual(s.mechanism, { decap: "tc", gro: "vxlan-socket", podBridge: "cni0" });
    assert.equal(s.agent.info.decap, "tc");
    assert.match(s.agent.info.reason, /software device/);
    const table = ctl(n1, ["status"]).stdout;
    assert.match(
      table,
      /datapath: backend=vxlan decap=tc gro=vxlan-socket pod-bridge=cni0 {2}\(eth0 is a software device/,
    );
    // The node's iptables backend, detected by overlayctl itself (nothing
    // legacy in the node's namespace: nft).
    assert.equal(s.iptables.mode, "nft");
    assert.equal(s.iptables.commands.iptables, "iptables-nft");
    assert.match(table, /^iptables: nft \(.+\)$/m);
    assert.ok(
      hooks.some((h: string) => /\/tc-ingress\/ovl_encap_pod$/.test(h)),
      "the CNI plugin attached the pod fast path",
    );
    assert.equal(s.maps.find((m: { name: string }) => m.name === "ovl_subnets").entries, 2);
  });

  it("exits 2 with the usage on a usage error, 1 with one line on an operational one", function () {
    const u = ctl(n1, ["map", "frobnicate"]);
    assert.equal(u.status, 2);
    assert.match(u.stderr, /overlayctl map dump/);
    assert.match(u.stderr, /Unknown argument: frobnicate/);
    const none = shStatus(
      inNs(n1.ns, ["node", OVERLAYCTL, "map", "dump", "--pin-path", "/run/nonexistent"]),
    );
    assert.equal(none.status, 1);
    assert.equal(
      none.stderr,
      "overlayctl: /run/nonexistent/ovl_subnets: not found: is overlayd running on this node, and is --pin-path right?\n",
    );
    const down = shStatus(
      inNs(n1.ns, ["node", OVERLAYCTL, "lease", "list", "--etcd-endpoints", "http://127.0.0.1:1"]),
    );
    assert.equal(down.status, 1);
    assert.match(down.stderr, /^overlayctl: etcd list \/coreos\.com\/network\/subnets\/: .*\n$/);
    assert.doesNotMatch(down.stderr, /\n\s+at /, "no stack trace");
  });

  it("names the missing capability when run without CAP_BPF", function () {
    const r = shStatus(
      inNs(n1.ns, [
        // An unprivileged user. It keeps CAP_DAC_READ_SEARCH only so that it
        // can read this checkout wherever CI cloned it (a 0700 directory);
        // that capability does not open the pins (read-write).
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=-all,+dac_read_search",
        "--ambient-caps=-all,+dac_read_search",
        "node",
        OVERLAYCTL,
        "map",
        "dump",
        "--pin-path",
        n1.pinPath,
      ]),
    );
    assert.equal(r.status, 1);
    assert.match(r.stderr, /^overlayctl: .*(EPERM|EACCES): needs CAP_BPF/);
  });
  it("trace: the path of a packet out of a pod, into a pod, to no lease, and usage errors", function () {
    const sub = (n: NodeInfo) =>
      /FLANNEL_SUBNET=(\d+\.\d+\.\d+)\./.exec(readFileSync(c.subnetFile(n), "utf8"))![1];
    const withEnv = (args: string[]) => ctl(n1, [...args, "--subnet-file", c.subnetFile(n1)]);
    const out = withEnv(["trace", c.pod(n1).ip, c.pod(n2).ip, "-o", "json"]);
    assert.equal(out.status, 0, out.stderr);
    const o = JSON.parse(out.stdout);
    assert.equal(o.path, "encap");
    assert.equal(o.peer, n2.underlayIp);
    assert.equal(o.entry.subnet, `${sub(n2)}.0/24`);
    assert.match(o.steps[0], /^ovl_encap_pod on veth/);
    const into = JSON.parse(withEnv(["trace", c.pod(n2).ip, c.pod(n1).ip, "-o", "json"]).stdout);
    assert.equal(into.path, "decap");
    assert.equal(into.peer, n2.underlayIp);
    assert.ok(
      into.steps.some((x: string) => /bpf_redirect_peer/.test(x)),
      into.steps.join("; "),
    );
    const none = JSON.parse(withEnv(["trace", c.pod(n1).ip, "10.5.254.9", "-o", "json"]).stdout);
    assert.equal(none.path, "drop");
    assert.equal(none.dropReason, "no_peer");
    const spoof = JSON.parse(withEnv(["trace", "10.5.254.9", c.pod(n1).ip, "-o", "json"]).stdout);
    assert.equal(spoof.dropReason, "spoofed_source");
    const table = withEnv(["trace", c.pod(n1).ip, c.pod(n2).ip]);
    assert.match(table.stdout, /^SRC\s+DST\s+PATH\s+ENTRY\s+PEER\s+VTEP MAC\s+DROP$/m);
    assert.match(table.stdout, /^ {2}2\. VXLAN to /m);
    const bad = withEnv(["trace", "10.5.1", c.pod(n2).ip]);
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /src: "10.5.1" is not an IPv4 address/);
  });
});
