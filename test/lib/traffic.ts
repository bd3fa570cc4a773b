// Real traffic between namespaces: ping and iperf3.
import assert from "node:assert/strict";
import { type Cluster } from "./cluster";
import { inNs, sh, shStatus, sleep, spawnInNs } from "./sh";
import { type NodeInfo } from "./topology";

export function ping(
  ns: string,
  dst: string,
  opts: { count?: number; size?: number; df?: boolean } = {},
): boolean {
  const argv = ["ping", "-n", "-q", "-c", String(opts.count ?? 2), "-i", "0.1", "-W", "1"];
  if (opts.size !== undefined) argv.push("-s", String(opts.size));
  if (opts.df) argv.push("-M", "do");
  return shStatus(inNs(ns, [...argv, dst])).status === 0;
}

/** Output of one ping, for asserting on ICMP errors. */
export function pingOutput(ns: string, dst: string, extra: string[]): string {
  const r = shStatus(inNs(ns, ["ping", "-n", "-c", "1", "-W", "1", ...extra, dst]));
  return r.stdout + r.stderr;
}

let nextPort = 15201;

/** One iperf3 TCP transfer; returns received bits per second. */
export async function iperf(
  serverNs: string,
  serverIp: string,
  clientNs: string,
  opts: { seconds?: number; streams?: number } = {},
): Promise<number> {
  const port = String(nextPort++);
  const server = spawnInNs(serverNs, ["iperf3", "-s", "-1", "-p", port]);
  try {
    let why = "";
    for (let attempt = 0; attempt < 40; attempt++) {
      const r = shStatus(
        inNs(clientNs, [
          "iperf3",
          "-c",
          serverIp,
          "-p",
          port,
          "-J",
          "-t",
          String(opts.seconds ?? 1),
          "-P",
          String(opts.streams ?? 1),
        ]),
      );
      let j: { error?: string; end?: { sum_received?: { bits_per_second?: number } } } = {};
      try {
        j = JSON.parse(r.stdout);
      } catch {
        j = { error: r.stdout || r.stderr };
      }
      const bps = j.end?.sum_received?.bits_per_second;
      if (r.status === 0 && !j.error && typeof bps === "number") return bps;
      why = j.error ?? `exit ${r.status}: ${r.stderr}`;
      // The one-off server may not listen yet: retry only that.
      if (!/refused|unable to connect|busy/i.test(why)) break;
      await sleep(100);
    }
    throw new Error(`iperf3 ${clientNs} -> ${serverIp}:${port} failed: ${why.slice(0, 500)}`);
  } finally {
    server.kill("SIGKILL");
  }
}

export function nodeHelper(ns: string, args: string[]): string {
  return sh(inNs(ns, ["node", `${__dirname}/node-helper.js`, ...args]));
}

/** Runs a 1 ms ping and an iperf3 transfer pod a -> pod b while fn() runs. */
export async function underLoad(
  c: Cluster,
  a: NodeInfo,
  b: NodeInfo,
  seconds: number,
  fn: () => Promise<void>,
) {
  return underLoadBetween(c.pod(a), c.pod(b), seconds, fn);
}

/**
 * underLoad between any two endpoints: a namespace and an address in another.
 * `bitrate` caps iperf3 (e.g. "2G"): an uncapped transfer on 2 CPUs can
 * starve softirq processing while a loader runs, and a NAPI ring (veth with
 * GRO, any NIC) then overflows, which is not what these tests measure.
 */
export async function underLoadBetween(
  from: { ns: string },
  to: { ns: string; ip: string },
  seconds: number,
  fn: () => Promise<void>,
  bitrate?: string,
) {
  const port = String(15900 + Math.floor(Math.random() * 50));
  const server = spawnInNs(to.ns, ["iperf3", "-s", "-1", "-p", port]);
  await sleep(300);
  const count = String(seconds * 1000);
  const pinger = spawnInNs(from.ns, ["ping", "-n", "-q", "-i", "0.001", "-c", count, to.ip]);
  const iperf = spawnInNs(from.ns, [
    "iperf3",
    "-c",
    to.ip,
    "-p",
    port,
    "-t",
    String(seconds),
    "-i",
    "0.5",
    "-J",
    ...(bitrate ? ["-b", bitrate] : []),
  ]);
  let pingOut = "";
  let iperfOut = "";
  pinger.stdout?.on("data", (d) => (pingOut += d));
  iperf.stdout?.on("data", (d) => (iperfOut += d));
  await sleep(1000);
  await fn();
  await Promise.all([
    new Promise((r) => pinger.on("exit", r)),
    new Promise((r) => iperf.on("exit", r)),
  ]);
  server.kill("SIGKILL");
  const m = /(\d+) packets transmitted, (\d+) received/.exec(pingOut);
  assert.ok(m, pingOut);
  const intervals = (JSON.parse(iperfOut).intervals as { sum: { bytes: number } }[]).map(
    (i) => i.sum.bytes,
  );
  return { transmitted: Number(m[1]), received: Number(m[2]), intervals };
}

/**
 * What tcpdump printed (-nn -e, one line per packet) for the frames that
 * matched `filter` on an interface while fn() ran.
 */
export async function capture(
  ns: string,
  iface: string,
  filter: string[],
  fn: () => Promise<void>,
  direction: "in" | "out" | "inout" = "out",
): Promise<string[]> {
  const dump = spawnInNs(ns, [
    "tcpdump",
    "-i",
    iface,
    "-Q",
    direction,
    "-nn",
    "-e",
    "-l",
    "-c",
    "20000",
    ...filter,
  ]);
  let out = "";
  dump.stdout?.on("data", (d) => (out += d));
  let err = "";
  dump.stderr?.on("data", (d) => (err += d));
  // tcpdump says "listening on ..." once its capture is open.
  for (let i = 0; i < 100 && !/listening on/.test(err); i++) await sleep(50);
  try {
    await fn();
    await sleep(200);
  } finally {
    dump.kill("SIGINT");
    await new Promise((r) => dump.on("exit", r));
  }
  return out.split("\n").filter(Boolean);
}

/**
 * Lengths of the VXLAN frames an interface sent while fn() ran (tcpdump on
 * the switch's port towards a node sees them after any segmentation there).
 */
export async function framesSent(
  ns: string,
  iface: string,
  fn: () => Promise<void>,
): Promise<number[]> {
  const lines = await capture(ns, iface, ["udp", "port", "8472"], fn);
  return lines.flatMap((l) => {
    const m = /ethertype IPv4 \(0x0800\), length (\d+):/.exec(l);
    return m ? [Number(m[1])] : [];
  });
}

/** What underLoad saw, when nothing may be lost: every ping answered and
 *  iperf3 moving data in every 0.5 s interval. */
export function assertNothingLost(r: {
  transmitted: number;
  received: number;
  intervals: number[];
}): void {
  assert.equal(
    r.received,
    r.transmitted,
    `${r.transmitted - r.received} of ${r.transmitted} pings lost`,
  );
  assert.ok(r.intervals.length >= 10, `only ${r.intervals.length} iperf3 intervals`);
  for (const [i, bytes] of r.intervals.entries())
    assert.ok(bytes > 0, `iperf3 stalled in interval ${i}`);
}
