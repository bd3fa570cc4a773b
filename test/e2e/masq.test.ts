// --ip-masq through iptables and through nftables (flannel's EnableNFTables)
// make the same decisions: for every flow below, the receiver sees the same
// source address under either. Node 1 holds the rules; node 2 is "another
// node" (host-gw style routes on the underlay switch stand in for the
// overlay); "out" is the outside, on a link of its own to node 1:
//
//   p1 10.5.1.2 -- cni0 [n1] eth0 172.31.0.1 -- sw -- 172.31.0.2 eth0 [n2] cni0 -- p2 10.5.2.2
//                    ext0 198.51.100.1
//                      |
//                 out 198.51.100.2, .3
//
// Each probe is a few UDP datagrams to a fresh port (so no earlier conntrack
// entry, and its NAT binding, is reused); the receiver prints the source.
import assert from "node:assert/strict";
import { type ChildProcess } from "node:child_process";
import { Cidr } from "../../agent/net/ip";
import { Cidr6 } from "../../agent/net/ip6";
import { CHAIN } from "../../agent/net/ipmasq";
import { NFT_TABLE, NFT_TABLE6, nftMasqTable, normalizeNftListing } from "../../agent/net/nftmasq";
import { requireEnv } from "../lib/require";
import { inNs, sh, shStatus, spawnInNs, waitFor } from "../lib/sh";
import { addVeth, NETWORK, Topology } from "../lib/topology";

const HELPER = `${__dirname}/../lib/masq-helper.js`;
const N1_EXT = "198.51.100.1";
const OUT = "198.51.100.2";
/** A second outside address: node 1 marks pod traffic to it as kube-proxy would. */
const OUT_MARKED = "198.51.100.3";
/** kube-proxy's bit and another one: the rule tests the bit, as iptables' 0x4000/0x4000. */
const MARK = "0x00014000";
const MARK_TABLE = "overlayd-test-mark";

interface Flow {
  name: string;
  from: string;
  to: string;
  dst: string;
  /** Source address the sender binds to (the host flow). */
  src?: string;
}

/** Prints the source of the first datagram on the port given, after "ready". */
const RECEIVE =
  'const s=require("dgram").createSocket("udp4");' +
  's.on("message",(m,r)=>{process.stdout.write("from "+r.address+"\\n");process.exit(0)});' +
  's.bind(+process.argv[1],()=>process.stdout.write("ready\\n"))';
/** Sends 5 datagrams, 100 ms apart, from one socket (one flow). */
const SEND =
  "const [dst,port,src]=process.argv.slice(1);" +
  'const s=require("dgram").createSocket("udp4");' +
  'const go=()=>{let n=0;const t=setInterval(()=>{s.send("probe",+port,dst);' +
  "if(++n===5){clearInterval(t);setTimeout(()=>s.close(),50)}},100)};" +
  "src?s.bind({address:src},go):go()";

let nextPort = 41000;

/** The source address the receiver sees for one flow, or "nothing". */
async function sourceSeen(f: Flow): Promise<string> {
  const port = String(nextPort++);
  // IPv6 flows (dual-stack) use udp6 sockets
  const six = (code: string) => (f.dst.includes(":") ? code.replace('"udp4"', '"udp6"') : code);
  const rx: ChildProcess = spawnInNs(f.to, ["node", "-e", six(RECEIVE), port]);
  let out = "";
  rx.stdout?.on("data", (d) => (out += d));
  try {
    await waitFor(`receiver in ${f.to} on ${port}`, () => out.includes("ready"), 10000);
    const tx = shStatus(
      inNs(f.from, ["node", "-e", six(SEND), f.dst, port, ...(f.src ? [f.src] : [])]),
    );
    assert.equal(tx.status, 0, `${f.name}: sender failed: ${tx.stderr}`);
    try {
      await waitFor(`a datagram for ${f.name}`, () => /from \S+\n/.test(out), 3000);
    } catch {
      return "nothing";
    }
    return /from (\S+)\n/.exec(out)![1]!;
  } finally {
    rx.kill("SIGKILL");
  }
}

async function seen(flows: Flow[]): Promise<Record<string, string>> {
  const r: Record<string, string> = {};
  for (const f of flows) r[f.name] = await sourceSeen(f);
  return r;
}

describe("e2e: masquerade through iptables and nftables", function () {
  this.timeout(180000);
  const topo = new Topology();
  const network = Cidr.parse(NETWORK);
  let subnet: Cidr;
  let n1: string;
  let out: string;
  let flows: Flow[];
  /** What each flow's receiver sees with no rules: the sender's own address. */
  let asSent: Record<string, string>;
  /** What each flow's receiver sees with the rules on node 1. */
  let masqueraded: Record<string, string>;
  let gateway: string;
  let viaIptables: Record<string, string> | undefined;

  function helper(path: "iptables" | "nftables", cmd: string, ...args: string[]): unknown {
    return JSON.parse(sh(inNs(n1, ["node", HELPER, path, cmd, ...args])));
  }
  const ensure = (path: "iptables" | "nftables", s = subnet) =>
    helper(path, "ensure", network.toString(), s.toString());
  const inPlace = (path: "iptables" | "nftables") =>
    helper(path, "in-place", network.toString(), subnet.toString());
  const nftTables = () => sh(inNs(n1, ["nft", "list", "tables"]));
  const natChains = () => sh(inNs(n1, ["iptables", "-w", "-t", "nat", "-S"]));

  before(function () {
    requireEnv(this, {
      root: true,
      tools: [
        "ip",
        "iptables",
        "iptables-restore",
        "iptables-legacy",
        "iptables-legacy-save",
        "nft",
      ],
    });
    topo.create();
    const node1 = topo.addNode(1);
    const node2 = topo.addNode(2);
    const p1 = topo.addPod(node1);
    const p2 = topo.addPod(node2);
    n1 = node1.ns;
    subnet = Cidr.parse(node1.subnet);
    gateway = node1.gateway;
    out = `${topo.prefix}-out`;
    topo.addNs(out);
    addVeth(n1, "ext0", out, "eth0");
    sh(inNs(n1, ["ip", "addr", "add", `${N1_EXT}/24`, "dev", "ext0"]));
    sh(inNs(n1, ["ip", "link", "set", "ext0", "up"]));
    sh(inNs(out, ["ip", "addr", "add", `${OUT}/24`, "dev", "eth0"]));
    sh(inNs(out, ["ip", "addr", "add", `${OUT_MARKED}/24`, "dev", "eth0"]));
    sh(inNs(out, ["ip", "link", "set", "eth0", "up"]));
    // Every way back exists, so nothing here depends on rp_filter.
    sh(inNs(out, ["ip", "route", "add", NETWORK, "via", N1_EXT]));
    sh(inNs(n1, ["ip", "route", "add", node2.subnet, "via", node2.underlayIp]));
    sh(inNs(node2.ns, ["ip", "route", "add", node1.subnet, "via", node1.underlayIp]));
    sh(inNs(node2.ns, ["ip", "route", "add", "198.51.100.0/24", "via", node1.underlayIp]));
    // What kube-proxy's KUBE-MARK-MASQ does, in a table of the test's own.
    sh(inNs(n1, ["nft", "-f", "-"]), {
      input:
        `table ip ${MARK_TABLE} {\n\tchain pre {\n` +
        "\t\ttype filter hook prerouting priority mangle; policy accept;\n" +
        `\t\tip saddr ${p1.ip} ip daddr ${OUT_MARKED} meta mark set ${MARK}\n\t}\n}\n`,
    });
    flows = [
      { name: "pod -> outside", from: p1.ns, to: out, dst: OUT },
      { name: "pod -> outside, kube-proxy marked", from: p1.ns, to: out, dst: OUT_MARKED },
      { name: "pod -> other node's pod", from: p1.ns, to: p2.ns, dst: p2.ip },
      { name: "other node's pod -> our pod", from: p2.ns, to: p1.ns, dst: p1.ip },
      { name: "outside -> our pod", from: out, to: p1.ns, dst: p1.ip },
      { name: "outside -> other node's pod", from: out, to: p2.ns, dst: p2.ip },
      // The host's own address towards node 2 would be what masquerading
      // picks anyway; from another of its addresses the rule shows.
      { name: "host -> other node's pod", from: n1, to: p2.ns, dst: p2.ip, src: N1_EXT },
    ];
    asSent = {
      "pod -> outside": p1.ip,
      "pod -> outside, kube-proxy marked": p1.ip,
      "pod -> other node's pod": p1.ip,
      "other node's pod -> our pod": p2.ip,
      "outside -> our pod": OUT,
      "outside -> other node's pod": OUT,
      "host -> other node's pod": N1_EXT,
    };
    masqueraded = {
      "pod -> outside": N1_EXT,
      "pod -> outside, kube-proxy marked": p1.ip,
      "pod -> other node's pod": p1.ip,
      "other node's pod -> our pod": p2.ip,
      "outside -> our pod": OUT,
      "outside -> other node's pod": node1.underlayIp,
      "host -> other node's pod": node1.underlayIp,
    };
  });

  after(function () {
    topo.destroy();
  });

  it("without rules every receiver sees the sender (so the probes can see masquerading)", async function () {
    const got = await seen(flows);
    assert.deepEqual(got, asSent);
    for (const f of ["pod -> outside", "outside -> other node's pod", "host -> other node's pod"]) {
      assert.notEqual(got[f], masqueraded[f], `${f}: masquerading must change what is seen`);
    }
  });

  it("iptables: ensureMasq applies once, then is in place; receivers see the masqueraded sources", async function () {
    assert.equal(inPlace("iptables"), false);
    assert.equal(ensure("iptables"), true);
    assert.equal(ensure("iptables"), false, "a second ensure changes nothing");
    assert.equal(inPlace("iptables"), true);
    viaIptables = await seen(flows);
    assert.deepEqual(viaIptables, masqueraded);
    helper("iptables", "remove");
    assert.ok(!natChains().includes(CHAIN), "removeMasq leaves no chain");
    assert.deepEqual(await seen(flows.slice(0, 1)), { "pod -> outside": asSent["pod -> outside"] });
  });

  it("iptables, legacy backend (kubelet's hint chain there): the same sources, from the legacy tables", async function () {
    const hint = (op: string) =>
      inNs(n1, ["iptables-legacy", "-t", "mangle", op, "KUBE-IPTABLES-HINT"]);
    sh(hint("-N"));
    try {
      assert.equal(ensure("iptables"), true);
      assert.match(
        sh(inNs(n1, ["iptables-legacy-save", "-t", "nat"])),
        new RegExp(`-j ${CHAIN}$`, "m"),
      );
      assert.ok(!natChains().includes(CHAIN), "nothing in the nft tables");
      const got = await seen(flows);
      assert.deepEqual(got, masqueraded);
      if (viaIptables) assert.deepEqual(got, viaIptables, "the same as through iptables-nft");
      helper("iptables", "remove");
      assert.ok(!sh(inNs(n1, ["iptables-legacy-save"])).includes(CHAIN), "removeMasq leaves none");
    } finally {
      sh(hint("-X"));
    }
  });

  it("nftables: ensureNftMasq applies once, reads back as loaded, and the receivers see exactly the same sources", async function () {
    helper("iptables", "remove"); // whatever a failed iptables test left
    assert.ok(!natChains().includes(CHAIN), "no iptables chain meanwhile");
    assert.ok(!nftTables().includes(NFT_TABLE));
    assert.equal(inPlace("nftables"), false);
    assert.equal(ensure("nftables"), true);
    assert.equal(ensure("nftables"), false, "a second ensure changes nothing");
    assert.equal(inPlace("nftables"), true);
    assert.deepEqual(
      normalizeNftListing(sh(inNs(n1, ["nft", "list", "table", "ip", NFT_TABLE]))),
      normalizeNftListing(nftMasqTable(network, subnet)),
    );
    const got = await seen(flows);
    assert.deepEqual(got, masqueraded);
    if (viaIptables) assert.deepEqual(got, viaIptables, "the same as through iptables");
  });

  it("nftables: a hand-deleted rule is seen as missing and put back", async function () {
    const listing = sh(inNs(n1, ["nft", "-a", "list", "chain", "ip", NFT_TABLE, "postrtg"]));
    const rule = `ip saddr != ${NETWORK} ip daddr ${subnet} return`;
    const m = new RegExp(`${rule.replace(/[./]/g, "\\$&")} .*# handle (\\d+)`).exec(listing);
    assert.ok(m, `no "${rule}" in\n${listing}`);
    sh(inNs(n1, ["nft", "delete", "rule", "ip", NFT_TABLE, "postrtg", "handle", m[1]!]));
    assert.equal(inPlace("nftables"), false);
    const inbound = flows.filter((f) => f.name === "outside -> our pod");
    // Without it the last rule masquerades the outside to our own pods.
    assert.deepEqual(await seen(inbound), { "outside -> our pod": gateway });
    assert.equal(ensure("nftables"), true);
    assert.equal(inPlace("nftables"), true);
    assert.deepEqual(await seen(inbound), { "outside -> our pod": OUT });
  });

  it("nftables: follows a new subnet by replacing the table", function () {
    const other = Cidr.parse("10.5.9.0/24");
    assert.equal(ensure("nftables", other), true);
    assert.equal(inPlace("nftables"), false, "no longer the old subnet's rules");
    assert.deepEqual(
      normalizeNftListing(sh(inNs(n1, ["nft", "list", "table", "ip", NFT_TABLE]))),
      normalizeNftListing(nftMasqTable(network, other)),
    );
    assert.equal(ensure("nftables"), true);
    assert.equal(inPlace("nftables"), true);
  });

  it("nftables: removeNftMasq leaves no table (and nobody else's goes), and again without error", function () {
    helper("nftables", "remove");
    const tables = nftTables();
    assert.ok(!tables.includes(NFT_TABLE), tables);
    assert.ok(tables.includes(MARK_TABLE), "only our table is removed");
    helper("nftables", "remove");
    assert.equal(inPlace("nftables"), false);
  });
});

// IPv6 (dual-stack, issue 14): flannel's masqIP6Rules through ip6tables and
// through table ip6 flannel-ipv6. Node 1's pod has an IPv6 address of its
// node's v6 subnet; "out" is the outside on ext0, and also holds an address
// of another node's v6 subnet (routed to it), standing in for that node's pod:
//
//   p1 fc00:5:0:1::2 -- cni0 fc00:5:0:1::1 [n1] ext0 2001:db8:100::1 -- out 2001:db8:100::2, ::3
//                                                                         fc00:5:0:2::2
describe("e2e: IPv6 masquerade through ip6tables and nftables (dual-stack)", function () {
  this.timeout(180000);
  const topo = new Topology();
  const network6 = Cidr6.parse("fc00:5::/48");
  const subnet6 = Cidr6.parse("fc00:5:0:1::/64");
  const POD = "fc00:5:0:1::2";
  const N1 = "2001:db8:100::1";
  const OUT6 = "2001:db8:100::2";
  const OUT6_MARKED = "2001:db8:100::3";
  const OTHER_POD = "fc00:5:0:2::2";
  let n1: string;
  let flows: Flow[];

  const helper = (path: "iptables" | "nftables", cmd: string, ...args: string[]): unknown =>
    JSON.parse(sh(inNs(n1, ["node", HELPER, path, cmd, ...args])));
  const ensure = (path: "iptables" | "nftables") =>
    helper(path, "ensure", network6.toString(), subnet6.toString());
  const inPlace = (path: "iptables" | "nftables") =>
    helper(path, "in-place", network6.toString(), subnet6.toString());
  const nat6 = () => sh(inNs(n1, ["ip6tables", "-w", "-t", "nat", "-S"]));
  const nftTables = () => sh(inNs(n1, ["nft", "list", "tables"]));
  /** Pod -> outside masqueraded; marked, pod -> cluster and outside -> pod as sent. */
  const masqueraded = () => ({
    "pod -> outside": N1,
    "pod -> outside, kube-proxy marked": POD,
    "pod -> other node's pod": POD,
    "outside -> our pod": OUT6,
  });

  before(function () {
    requireEnv(this, {
      root: true,
      tools: ["ip", "ip6tables", "ip6tables-restore", "nft"],
    });
    topo.create();
    const node1 = topo.addNode(1);
    const p1 = topo.addPod(node1);
    n1 = node1.ns;
    const out = `${topo.prefix}-out6`;
    topo.addNs(out);
    addVeth(n1, "ext0", out, "eth0");
    sh(inNs(n1, ["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]));
    const addr = (ns: string, a: string, dev: string) =>
      sh(inNs(ns, ["ip", "-6", "addr", "add", a, "dev", dev, "nodad"]));
    addr(n1, "fc00:5:0:1::1/64", "cni0");
    addr(p1.ns, `${POD}/64`, "eth0");
    sh(inNs(p1.ns, ["ip", "-6", "route", "add", "default", "via", "fc00:5:0:1::1"]));
    addr(n1, `${N1}/64`, "ext0");
    sh(inNs(n1, ["ip", "link", "set", "ext0", "up"]));
    for (const a of [`${OUT6}/64`, `${OUT6_MARKED}/64`, `${OTHER_POD}/64`]) addr(out, a, "eth0");
    sh(inNs(out, ["ip", "link", "set", "eth0", "up"]));
    // every way back exists: the outside reaches our pods through node 1,
    // node 1 reaches the "other node's pod" through the outside
    sh(inNs(out, ["ip", "-6", "route", "add", subnet6.toString(), "via", N1]));
    sh(inNs(n1, ["ip", "-6", "route", "add", "fc00:5:0:2::/64", "via", OUT6]));
    sh(inNs(n1, ["nft", "-f", "-"]), {
      input:
        `table ip6 ${MARK_TABLE} {\n\tchain pre {\n` +
        "\t\ttype filter hook prerouting priority mangle; policy accept;\n" +
        `\t\tip6 saddr ${POD} ip6 daddr ${OUT6_MARKED} meta mark set ${MARK}\n\t}\n}\n`,
    });
    flows = [
      { name: "pod -> outside", from: p1.ns, to: out, dst: OUT6 },
      { name: "pod -> outside, kube-proxy marked", from: p1.ns, to: out, dst: OUT6_MARKED },
      { name: "pod -> other node's pod", from: p1.ns, to: out, dst: OTHER_POD },
      // from OUT6 itself: source selection would pick the fc00:5:0:2:: address
      { name: "outside -> our pod", from: out, to: p1.ns, dst: POD, src: OUT6 },
    ];
  });

  after(function () {
    topo.destroy();
  });

  it("without rules every receiver sees the sender", async function () {
    assert.deepEqual(await seen(flows), {
      "pod -> outside": POD,
      "pod -> outside, kube-proxy marked": POD,
      "pod -> other node's pod": POD,
      "outside -> our pod": OUT6,
    });
  });

  it("ip6tables: the chain applies once, then is in place; receivers see the masqueraded sources", async function () {
    assert.equal(inPlace("iptables"), false);
    assert.equal(ensure("iptables"), true);
    assert.equal(ensure("iptables"), false, "a second ensure changes nothing");
    assert.equal(inPlace("iptables"), true);
    assert.match(nat6(), new RegExp(`^-A POSTROUTING .*-j ${CHAIN}$`, "m"));
    assert.match(nat6(), /! -d ff00::\/8 .*-j MASQUERADE --random-fully/);
    assert.ok(
      !sh(inNs(n1, ["iptables", "-w", "-t", "nat", "-S"])).includes(CHAIN),
      "no IPv4 chain",
    );
    assert.deepEqual(await seen(flows), masqueraded());
    helper("iptables", "remove");
    assert.ok(!nat6().includes(CHAIN), "removeMasq leaves no IPv6 chain");
  });

  it("nftables: table ip6 flannel-ipv6 reads back as loaded, and the receivers see the same sources", async function () {
    assert.ok(!nftTables().includes(NFT_TABLE6));
    assert.equal(ensure("nftables"), true);
    assert.equal(ensure("nftables"), false);
    assert.equal(inPlace("nftables"), true);
    assert.deepEqual(
      normalizeNftListing(sh(inNs(n1, ["nft", "list", "table", "ip6", NFT_TABLE6]))),
      normalizeNftListing(nftMasqTable(network6, subnet6)),
    );
    assert.ok(!nftTables().includes(`ip ${NFT_TABLE}`), "no IPv4 table");
    assert.deepEqual(await seen(flows), masqueraded());
    helper("nftables", "remove");
    assert.ok(!nftTables().includes(NFT_TABLE6));
    assert.ok(nftTables().includes(MARK_TABLE), "only our table is removed");
  });

  it("ensureMasquerade: both families on a dual-stack node, the IPv6 rules gone when it is not", function () {
    const v4 = [NETWORK, "10.5.1.0/24"];
    assert.equal(
      helper("nftables", "masquerade", ...v4, network6.toString(), subnet6.toString()),
      true,
    );
    assert.match(nftTables(), new RegExp(`table ip ${NFT_TABLE}\\b`));
    assert.match(nftTables(), new RegExp(`table ip6 ${NFT_TABLE6}\\b`));
    // a fresh process (a restart) on a network no longer dual-stack
    helper("nftables", "masquerade", ...v4);
    assert.match(nftTables(), new RegExp(`table ip ${NFT_TABLE}\\b`));
    assert.ok(!nftTables().includes(NFT_TABLE6), "the IPv6 table is gone");
    // iptables mode: the IPv6 chain beside the IPv4 one, and nftables' tables removed
    assert.equal(
      helper("iptables", "masquerade", ...v4, network6.toString(), subnet6.toString()),
      true,
    );
    assert.ok(nat6().includes(CHAIN));
    assert.ok(!nftTables().includes(NFT_TABLE));
    helper("iptables", "masquerade", ...v4);
    assert.ok(!nat6().includes(CHAIN), "the IPv6 chain is gone");
    sh(inNs(n1, ["node", HELPER, "cleanup"]));
    assert.ok(!sh(inNs(n1, ["iptables", "-w", "-t", "nat", "-S"])).includes(CHAIN));
  });
});
