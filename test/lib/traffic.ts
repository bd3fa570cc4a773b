// Real traffic between namespaces: ping and iperf3.
import { inNs, sh, shStatus, sleep, spawnInNs } from "./sh";

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
