// What tracing costs each program, per packet, measured with BPF_PROG_RUN
// (the kernel times `repeat` runs of one frame): the objects as built, with
// tracing off (nobody monitors: the default) and on (a monitor asked for
// trace events and drains them), and objects built with the trace hooks
// compiled out (-DOVL_NO_TRACE, build/bpf-notrace), so "off" is compared
// with nothing at all. Part of `make bench` (bench/datapath.ts); the
// throughput cost of a running `overlayctl monitor --type trace` is
// measured there as its own path.
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { F_LOCAL } from "../agent/bpf/codec";
import { Datapath } from "../agent/bpf/datapath";
import { EndpointMap } from "../agent/bpf/endpoint-map";
import { EventSource } from "../agent/bpf/events";
import { libbpf } from "../agent/bpf/libbpf";
import { SubnetHostMap } from "../agent/bpf/subnet-map";
import { Cidr, parseIp } from "../agent/net/ip";
import { ip6ToBytes, parseIp6 } from "../agent/net/ip6";
import { eth, ETH_P_IP, ipv4, vxlanFrame } from "../test/lib/packets";
import { median } from "./report";

export type Program = "ovl_encap_pod" | "ovl_encap_dev" | "ovl_decap_tc" | "ovl_decap_xdp";
export const PROGRAMS: Program[] = [
  "ovl_encap_pod",
  "ovl_encap_dev",
  "ovl_decap_tc",
  "ovl_decap_xdp",
];

export interface ProgCost {
  program: Program;
  /** Mean ns per run, median over the repetitions. */
  noHooksNs: number;
  offNs: number;
  onNs: number;
  /** Tracing off, the programs of a dual-stack node (a PublicIPv6 in
   * .rodata: the IPv6 branches are not pruned), the same IPv4 frame. */
  dualStackNs: number;
  /** Trace events the "on" runs produced (proves tracing was on). */
  traced: number;
}

const LOCAL_IP = "172.31.0.1";
const PEER_IP = "172.31.0.2";
const CHUNK = 2000; // runs between drains: well inside the 1 MB ring
const REPS = 7;

/** A 1,400-byte TCP segment, as a pod sends it (MTU-sized, no GSO). */
function tcpSegment(src: string, dst: string): Buffer {
  const tcp = Buffer.alloc(1380);
  tcp.writeUInt16BE(40000, 0);
  tcp.writeUInt16BE(5201, 2);
  tcp[12] = 5 << 4; // data offset
  tcp[13] = 0x10; // ACK
  tcp.writeUInt16BE(65535, 14);
  return eth(
    "02:00:00:00:01:01",
    "02:00:00:00:01:02",
    ETH_P_IP,
    ipv4({ src, dst, proto: 6, ttl: 64, flags: 0x4000 }, tcp),
  );
}

function frameFor(p: Program): Buffer {
  if (p.startsWith("ovl_encap")) return tcpSegment("10.5.1.2", "10.5.2.3");
  const inner = tcpSegment("10.5.2.3", "10.5.1.2");
  return vxlanFrame({ outerSrc: PEER_IP, outerDst: LOCAL_IP, innerSrc: "", innerDst: "", inner });
}

class Bench {
  readonly dp: Datapath;
  private readonly pins: string;

  constructor(dir: string, objDir: string, ip6 = false) {
    this.pins = join(dir, "pins");
    this.dp = new Datapath({
      pinPath: this.pins,
      objDir,
      vni: 1,
      port: 8472,
      localIp: parseIp(LOCAL_IP),
      // lo: the MTU checks pass and the redirect helpers only record their
      // target under BPF_PROG_RUN.
      underlay: { name: "lo", ifindex: 1, mac: "02:00:00:00:0f:01" },
      overlay: { name: "lo", ifindex: 1, mac: "0e:00:00:00:01:01" },
      decap: "tc",
      kernelDecap: false,
      ...(ip6 ? { localIp6: ip6ToBytes(parseIp6("fd00:31::1")) } : {}),
    });
    this.dp.load();
    const subnets = SubnetHostMap.openPinned(this.pins);
    const endpoints = EndpointMap.openPinned(this.pins);
    try {
      subnets.upsert(Cidr.parse("10.5.1.0/24"), {
        remoteIp: parseIp(LOCAL_IP),
        vtepMac: "0e:00:00:00:01:01",
        flags: F_LOCAL,
      });
      subnets.upsert(Cidr.parse("10.5.2.0/24"), {
        remoteIp: parseIp(PEER_IP),
        vtepMac: "0e:00:00:00:02:02",
        flags: 0,
      });
      endpoints.upsert(parseIp("10.5.1.2"), {
        ifindex: 1,
        podMac: "02:00:00:00:01:02",
        hostMac: "02:00:00:00:01:01",
      });
    } finally {
      subnets.close();
      endpoints.close();
    }
  }

  /**
   * Mean ns per run over `runs` runs, draining events every CHUNK runs.
   * One run per BPF_PROG_RUN call: with `repeat` the kernel runs the program
   * again on the skb the last run already rewrote, so only the first run
   * would see the frame.
   */
  time(p: Program, frame: Buffer, runs: number, drain?: () => void): number {
    const fd = this.dp.programFd(p);
    let ns = 0;
    for (let i = 1; i <= runs; i++) {
      ns += libbpf.testRun(fd, frame, null, p).durationNs;
      if (drain && i % CHUNK === 0) drain();
    }
    drain?.();
    return ns / runs;
  }

  events(): EventSource {
    let traced = 0;
    const src = new EventSource(this.pins, () => traced++);
    return Object.assign(src, { count: () => traced });
  }

  close(): void {
    this.dp.close();
  }
}

/** Runs in the caller's network namespace; needs root and a free /run. */
export function progCosts(buildDir: string, runsPerRep = 20000): ProgCost[] {
  const dir = mkdtempSync("/run/overlayd-bench-progrun-");
  const mount = (args: string[]) => {
    const r = spawnSync(args[0] as string, args.slice(1), { stdio: "inherit" });
    if (r.status !== 0) throw new Error(`${args.join(" ")}: exit ${r.status}`);
  };
  mount(["mount", "-t", "bpf", "bpf", dir]);
  try {
    const out: ProgCost[] = [];
    const built = new Bench(join(dir, "built"), join(buildDir, "bpf"));
    const bare = new Bench(join(dir, "bare"), join(buildDir, "bpf-notrace"));
    const dual = new Bench(join(dir, "dual"), join(buildDir, "bpf"), true);
    try {
      for (const p of PROGRAMS) {
        const frame = frameFor(p);
        const retval = libbpf.testRun(built.dp.programFd(p), frame, null, p).retval;
        const bareRet = libbpf.testRun(bare.dp.programFd(p), frame, null, p).retval;
        if (retval !== bareRet)
          throw new Error(`${p}: verdict ${retval} with hooks, ${bareRet} without`);
        const dualRet = libbpf.testRun(dual.dp.programFd(p), frame, null, p).retval;
        if (retval !== dualRet)
          throw new Error(`${p}: verdict ${retval} IPv4-only, ${dualRet} dual-stack`);
        const dualNs: number[] = [];
        const noHooks: number[] = [];
        const off: number[] = [];
        const on: number[] = [];
        const ev = built.events() as EventSource & { count(): number };
        try {
          for (let i = 0; i < REPS; i++) {
            noHooks.push(bare.time(p, frame, runsPerRep));
            off.push(built.time(p, frame, runsPerRep));
            dualNs.push(dual.time(p, frame, runsPerRep));
            ev.setTrace(true);
            on.push(built.time(p, frame, runsPerRep, () => ev.drain()));
            ev.setTrace(false);
            ev.drain();
          }
          out.push({
            program: p,
            noHooksNs: median(noHooks),
            offNs: median(off),
            onNs: median(on),
            dualStackNs: median(dualNs),
            traced: ev.count(),
          });
        } finally {
          ev.close();
        }
      }
    } finally {
      built.close();
      bare.close();
      dual.close();
    }
    return out;
  } finally {
    spawnSync("umount", [dir]);
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * progCosts() in a network namespace of its own, with only loopback up, so
 * that no route of the caller's changes a program's path: the FIB lookups
 * see nothing, as in the fixtures.
 */
export function progCostsIsolated(buildDir: string): ProgCost[] {
  const r = spawnSync(
    "unshare",
    [
      "-n",
      "sh",
      "-c",
      'ip link set lo up && exec "$0" "$1" --json "$2"',
      process.execPath,
      __filename,
      buildDir,
    ],
    { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] },
  );
  if (r.status !== 0) throw new Error(`bench/progrun: exit ${r.status}`);
  return JSON.parse(r.stdout) as ProgCost[];
}

if (require.main === module) {
  const json = process.argv[2] === "--json";
  const costs = progCosts(process.argv[json ? 3 : 2] ?? join(__dirname, "../../build"));
  if (json) process.stdout.write(JSON.stringify(costs));
  for (const c of json ? [] : costs) {
    process.stdout.write(
      `${c.program.padEnd(14)} no hooks ${c.noHooksNs.toFixed(1)} ns  off ${c.offNs.toFixed(1)} ns  on ${c.onNs.toFixed(1)} ns  (${c.traced} traced)\n`,
    );
  }
}
