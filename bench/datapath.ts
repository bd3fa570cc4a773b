// `make bench`: the data path, side by side in one run.
//
// Five independent two-node topologies (namespaces this run creates; a veth
// underlay between the nodes, a pod behind each node's bridge):
//   host-gw        plain routes, no encapsulation: the limit
//   flannel-vxlan  kernel VXLAN programmed as flannel's vxlan backend does it
//   overlayd-tc    TC encap at the pod veth, TC decap into the pod (the default)
//   overlayd-xdp   TC encap at the pod veth, XDP decap
//   overlayd-dev   TC encap on the overlay device, TC decap through the FIB
// measured in interleaved rounds (A B C D E, A B C D E, ...): pod->pod TCP
// throughput with 1 and 4 streams (iperf3), TCP request/response latency
// (qperf tcp_lat), 64-byte UDP packet rate (iperf3 -u), CPU seconds per GB.
// Results: bench/results/datapath-<time>.json and datapath-latest.md.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { EndpointMap } from "../agent/bpf/endpoint-map";
import { SubnetHostMap } from "../agent/bpf/subnet-map";
import { Cidr, parseIp } from "../agent/net/ip";
import { flannelAddLease, flannelUp } from "../test/lib/flannel";
import { inNs, sh, shStatus, sleep } from "../test/lib/sh";
import { markdownTable, median, writeResults } from "./report";

const HELPER = join(__dirname, "..", "test", "lib", "node-helper.js");
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const SECONDS = Number(process.env.BENCH_SECONDS ?? 3);

type PathName = "host-gw" | "flannel-vxlan" | "overlayd-tc" | "overlayd-xdp" | "overlayd-dev";
const PATHS: PathName[] = [
  "host-gw",
  "flannel-vxlan",
  "overlayd-tc",
  "overlayd-xdp",
  "overlayd-dev",
];

interface Node {
  ns: string;
  pod: string;
  underlay: string;
  subnet: string;
  podIp: string;
  pin: string;
  vtep?: string;
}

interface Pair {
  path: PathName;
  a: Node;
  b: Node;
  servers: ChildProcess[];
}

const id = randomBytes(3).toString("hex");
const runDir = `/run/overlayd-bench-${id}`;
const created: string[] = [];
let mounted = false;

function ns(name: string): string {
  const full = `ovlb${id}-${name}`;
  sh(["ip", "netns", "add", full]);
  created.push(full);
  sh(inNs(full, ["ip", "link", "set", "lo", "up"]));
  return full;
}

function buildPair(path: PathName, k: number): Pair {
  const mk = (i: number): Node => ({
    ns: ns(`${k}n${i}`),
    pod: ns(`${k}p${i}`),
    underlay: `172.31.0.${i}`,
    subnet: `10.5.${i}.0/24`,
    podIp: `10.5.${i}.2`,
    pin: join(runDir, "bpffs", `${k}n${i}`),
  });
  const a = mk(1);
  const b = mk(2);
  sh([
    "ip",
    "link",
    "add",
    "eth0",
    "netns",
    a.ns,
    "type",
    "veth",
    "peer",
    "name",
    "eth0",
    "netns",
    b.ns,
  ]);
  for (const n of [a, b]) {
    sh(inNs(n.ns, ["ip", "addr", "add", `${n.underlay}/24`, "dev", "eth0"]));
    sh(inNs(n.ns, ["ip", "link", "set", "eth0", "up"]));
    sh(inNs(n.ns, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]));
    const gw = n.subnet.replace(".0/24", ".1");
    sh(inNs(n.ns, ["ip", "link", "add", "cni0", "type", "bridge"]));
    sh(inNs(n.ns, ["ip", "addr", "add", `${gw}/24`, "dev", "cni0"]));
    sh(inNs(n.ns, ["ip", "link", "set", "cni0", "up"]));
    sh([
      "ip",
      "link",
      "add",
      "veth1",
      "netns",
      n.ns,
      "type",
      "veth",
      "peer",
      "name",
      "eth0",
      "netns",
      n.pod,
    ]);
    // Pod MTU: underlay - 50 on the overlays, as their CNI would set it.
    const mtu = path === "host-gw" ? "1500" : "1450";
    sh(inNs(n.ns, ["ip", "link", "set", "veth1", "master", "cni0", "mtu", mtu, "up"]));
    sh(inNs(n.pod, ["ip", "link", "set", "eth0", "mtu", mtu, "up"]));
    sh(inNs(n.pod, ["ip", "addr", "add", `${n.podIp}/24`, "dev", "eth0"]));
    sh(inNs(n.pod, ["ip", "route", "add", "default", "via", gw]));
  }
  const pair: Pair = { path, a, b, servers: [] };
  if (path === "host-gw") {
    sh(inNs(a.ns, ["ip", "route", "add", b.subnet, "via", b.underlay]));
    sh(inNs(b.ns, ["ip", "route", "add", a.subnet, "via", a.underlay]));
  } else if (path === "flannel-vxlan") {
    for (const n of [a, b]) n.vtep = flannelUp(n.ns, { publicIp: n.underlay, subnet: n.subnet });
    flannelAddLease(a.ns, { subnet: b.subnet, publicIp: b.underlay, vtepMac: b.vtep as string });
    flannelAddLease(b.ns, { subnet: a.subnet, publicIp: a.underlay, vtepMac: a.vtep as string });
  } else {
    const decap = path === "overlayd-xdp" ? "xdp" : "tc";
    for (const n of [a, b]) {
      const out = sh(
        inNs(n.ns, [
          "node",
          HELPER,
          "setup",
          JSON.stringify({
            underlay: "eth0",
            publicIp: n.underlay,
            network: "10.5.0.0/16",
            subnet: n.subnet,
            pinPath: n.pin,
            decap,
          }),
        ]),
      );
      n.vtep = JSON.parse(out).vtepMac;
    }
    for (const [n, peer] of [
      [a, b],
      [b, a],
    ] as const) {
      const m = SubnetHostMap.openPinned(n.pin);
      m.upsert(Cidr.parse(peer.subnet), {
        remoteIp: parseIp(peer.underlay),
        vtepMac: peer.vtep as string,
        flags: 0,
      });
      m.close();
      if (path !== "overlayd-dev") {
        sh(inNs(n.ns, ["node", HELPER, "attach-pod", n.pin, "veth1"]));
        const pod = JSON.parse(sh(inNs(n.pod, ["ip", "-j", "link", "show", "eth0"])))[0];
        const host = JSON.parse(sh(inNs(n.ns, ["ip", "-j", "link", "show", "veth1"])))[0];
        const gw = JSON.parse(sh(inNs(n.ns, ["ip", "-j", "link", "show", "cni0"])))[0];
        const e = EndpointMap.openPinned(n.pin);
        e.upsert(parseIp(n.podIp), {
          ifindex: host.ifindex,
          podMac: pod.address,
          hostMac: gw.address,
        });
        e.close();
      }
    }
  }
  // Servers in pod b for the whole run.
  pair.servers.push(
    spawn("ip", ["netns", "exec", b.pod, "iperf3", "-s", "-p", "5201"], { stdio: "ignore" }),
  );
  pair.servers.push(spawn("ip", ["netns", "exec", b.pod, "qperf"], { stdio: "ignore" }));
  return pair;
}

/** Busy CPU seconds of the whole machine (all namespaces share the CPUs). */
function busySeconds(): number {
  const f = readFileSync("/proc/stat", "utf8")
    .split("\n")[0]!
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  const [user, nice, system, , , irq, softirq, steal] = f as number[];
  return (
    ((user ?? 0) + (nice ?? 0) + (system ?? 0) + (irq ?? 0) + (softirq ?? 0) + (steal ?? 0)) / 100
  );
}

function iperfJson(p: Pair, args: string[]): { error?: string; end?: Record<string, unknown> } {
  for (let attempt = 0; attempt < 20; attempt++) {
    const r = shStatus(inNs(p.a.pod, ["iperf3", "-c", p.b.podIp, "-p", "5201", "-J", ...args]));
    let j: { error?: string; end?: Record<string, unknown> };
    try {
      j = JSON.parse(r.stdout);
    } catch {
      j = { error: r.stderr || r.stdout };
    }
    if (!j.error) return j;
    if (!/busy|refused|unable to connect/i.test(j.error)) return j;
    spawnSync("sleep", ["0.2"]);
  }
  return { error: "iperf3 server busy" };
}

interface Sample {
  tcp1Gbps: number;
  tcp4Gbps: number;
  cpuSecPerGb: number;
  latencyUs: number;
  udp64Kpps: number;
}

function measure(p: Pair): Sample {
  const b0 = busySeconds();
  const t1 = iperfJson(p, ["-t", String(SECONDS), "-P", "1"]);
  const b1 = busySeconds();
  const sum1 = (t1.end?.sum_received ?? {}) as { bits_per_second?: number; bytes?: number };
  const t4 = iperfJson(p, ["-t", String(SECONDS), "-P", "4"]);
  const sum4 = (t4.end?.sum_received ?? {}) as { bits_per_second?: number };
  const lat = shStatus(
    inNs(p.a.pod, ["qperf", "-t", String(Math.max(1, SECONDS - 1)), p.b.podIp, "tcp_lat"]),
  );
  const m = /latency\s*=\s*([\d.]+)\s*(us|ms|ns)/.exec(lat.stdout);
  const scale = m?.[2] === "ms" ? 1000 : m?.[2] === "ns" ? 0.001 : 1;
  const u = iperfJson(p, ["-u", "-l", "64", "-b", "0", "-t", String(Math.max(1, SECONDS - 1))]);
  const us = (u.end?.sum ?? {}) as { packets?: number; lost_packets?: number; seconds?: number };
  const rx = ((us.packets ?? 0) - (us.lost_packets ?? 0)) / (us.seconds || 1);
  const gb = (sum1.bytes ?? 0) / 1e9;
  return {
    tcp1Gbps: (sum1.bits_per_second ?? NaN) / 1e9,
    tcp4Gbps: (sum4.bits_per_second ?? NaN) / 1e9,
    cpuSecPerGb: gb > 0 ? (b1 - b0) / gb : NaN,
    latencyUs: m ? Number(m[1]) * scale : NaN,
    udp64Kpps: rx / 1000,
  };
}

/** Average BPF run time per invocation, from kernel.bpf_stats_enabled. */
function bpfProfile(): Record<string, { runs: number; avgNs: number }> {
  const progs = JSON.parse(sh(["bpftool", "-j", "prog", "show"])) as {
    name?: string;
    run_time_ns?: number;
    run_cnt?: number;
  }[];
  const out: Record<string, { runs: number; avgNs: number }> = {};
  for (const p of progs) {
    if (!p.name?.startsWith("ovl_") || !p.run_cnt) continue;
    const cur = out[p.name] ?? { runs: 0, avgNs: 0 };
    const runs = cur.runs + p.run_cnt;
    out[p.name] = { runs, avgNs: (cur.avgNs * cur.runs + (p.run_time_ns ?? 0)) / runs };
  }
  return out;
}

async function main(): Promise<void> {
  const pairs: Pair[] = [];
  const statsBefore = sh(["sysctl", "-n", "kernel.bpf_stats_enabled"]).trim();
  try {
    mkdirSync(join(runDir, "bpffs"), { recursive: true });
    sh(["mount", "-t", "bpf", "bpf", join(runDir, "bpffs")]);
    mounted = true;
    process.stderr.write(`building ${PATHS.length} two-node topologies (run ${id})\n`);
    PATHS.forEach((p, k) => pairs.push(buildPair(p, k)));
    await sleep(1000);
    for (const p of pairs) {
      const ok =
        shStatus(inNs(p.a.pod, ["ping", "-c", "2", "-i", "0.2", "-W", "1", p.b.podIp])).status ===
        0;
      if (!ok) throw new Error(`${p.path}: pods cannot reach each other`);
    }
    sh(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"]);
    const samples: Record<string, Sample[]> = Object.fromEntries(PATHS.map((p) => [p, []]));
    for (let r = 1; r <= ROUNDS; r++) {
      for (const p of pairs) {
        const s = measure(p);
        samples[p.path]!.push(s);
        process.stderr.write(
          `round ${r}/${ROUNDS} ${p.path.padEnd(14)} tcp1 ${s.tcp1Gbps.toFixed(2)} Gbit/s  tcp4 ${s.tcp4Gbps.toFixed(2)}  lat ${s.latencyUs.toFixed(1)} us  udp64 ${s.udp64Kpps.toFixed(0)} kpps  cpu ${s.cpuSecPerGb.toFixed(2)} s/GB\n`,
        );
      }
    }
    const profile = bpfProfile();
    report(samples, profile);
  } finally {
    sh(["sysctl", "-qw", `kernel.bpf_stats_enabled=${statsBefore}`], { allowFail: true });
    for (const p of pairs) for (const s of p.servers) s.kill("SIGKILL");
    for (const n of created.reverse()) sh(["ip", "netns", "del", n], { allowFail: true });
    if (mounted) sh(["umount", join(runDir, "bpffs")], { allowFail: true });
    rmSync(runDir, { recursive: true, force: true });
  }
}

type Metric = keyof Sample;
const METRICS: { key: Metric; label: string; better: "higher" | "lower"; digits: number }[] = [
  { key: "tcp1Gbps", label: "TCP 1 stream (Gbit/s)", better: "higher", digits: 2 },
  { key: "tcp4Gbps", label: "TCP 4 streams (Gbit/s)", better: "higher", digits: 2 },
  { key: "latencyUs", label: "TCP latency (us)", better: "lower", digits: 1 },
  { key: "udp64Kpps", label: "UDP 64 B (kpps)", better: "higher", digits: 0 },
  { key: "cpuSecPerGb", label: "CPU s per GB (TCP 1)", better: "lower", digits: 2 },
];

function report(
  samples: Record<string, Sample[]>,
  profile: Record<string, { runs: number; avgNs: number }>,
): void {
  const med = (p: string, k: Metric) =>
    median(samples[p]!.map((s) => s[k]).filter((x) => Number.isFinite(x)));
  const spread = (p: string, k: Metric, d: number) => {
    const xs = samples[p]!.map((s) => s[k]).filter((x) => Number.isFinite(x));
    return `${Math.min(...xs).toFixed(d)}–${Math.max(...xs).toFixed(d)}`;
  };
  const rows = PATHS.map((p) => [
    p,
    ...METRICS.map((m) => `${med(p, m.key).toFixed(m.digits)} (${spread(p, m.key, m.digits)})`),
  ]);
  const ratio = (p: string, k: Metric, base: string) => med(p, k) / med(base, k);
  const ratioRows = PATHS.filter((p) => p !== "host-gw").map((p) => [
    p,
    ...METRICS.slice(0, 4).map(
      (m) =>
        `${ratio(p, m.key, "host-gw").toFixed(2)}× / ${ratio(p, m.key, "flannel-vxlan").toFixed(2)}×`,
    ),
  ]);
  const best = (k: Metric) =>
    med("overlayd-tc", k) >= med("overlayd-xdp", k) ? "overlayd-tc" : "overlayd-xdp";
  const t = "overlayd-tc";
  // overlayd-tc's ratio to a baseline against a bound, each stated once.
  const vs = (what: string, m: Metric, base: string, op: "≥" | "≤", bound: number) => {
    const v = ratio(t, m, base);
    return {
      what,
      target: `${op} ${bound.toFixed(2)}×`,
      v,
      ok: op === "≥" ? v >= bound : v <= bound,
    };
  };
  const targets = [
    vs("TCP throughput vs host-gw (1 stream)", "tcp1Gbps", "host-gw", "≥", 0.97),
    vs("TCP throughput vs kernel VXLAN (1 stream)", "tcp1Gbps", "flannel-vxlan", "≥", 1.15),
    vs("TCP latency vs host-gw", "latencyUs", "host-gw", "≤", 1.03),
    vs("64-byte UDP rate vs host-gw", "udp64Kpps", "host-gw", "≥", 0.95),
  ];
  const kernel = sh(["uname", "-r"]).trim();
  const cpus = sh(["nproc"]).trim();
  const when = new Date().toISOString();
  const md = [
    `### Data path (${when}, kernel ${kernel}, ${cpus} CPUs, ${ROUNDS} interleaved rounds of ${SECONDS} s, veth underlay)`,
    "",
    "Median (min–max) per path:",
    "",
    markdownTable(["path", ...METRICS.map((m) => m.label)], rows),
    "",
    "Ratios of the medians, vs host-gw / vs flannel's kernel VXLAN (latency: lower is better):",
    "",
    markdownTable(["path", ...METRICS.slice(0, 4).map((m) => m.label)], ratioRows),
    "",
    `Targets (overlayd-tc, the default path; best overlayd TCP path: ${best("tcp1Gbps")}):`,
    "",
    markdownTable(
      ["target", "wanted", "measured", "verdict"],
      targets.map((x) => [x.what, x.target, `${x.v.toFixed(2)}×`, x.ok ? "met" : "MISSED"]),
    ),
    "",
    "BPF time per packet (kernel.bpf_stats_enabled, all rounds):",
    "",
    markdownTable(
      ["program", "runs", "avg ns/run"],
      Object.entries(profile).map(([k, v]) => [k, v.runs, v.avgNs.toFixed(0)]),
    ),
    "",
  ].join("\n");
  const file = writeResults(
    "datapath",
    { when, kernel, cpus, rounds: ROUNDS, seconds: SECONDS, samples, profile, targets },
    md,
  );
  process.stdout.write(`\n${md}\nresults: ${file}\n`);
}

main().then(
  () => process.exit(0),
  (e: unknown) => {
    process.stderr.write(`bench failed: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
