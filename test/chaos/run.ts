// `make chaos`: the chaos soak (test/chaos/soak.ts) for CHAOS_S seconds
// (default 600) with seed CHAOS_SEED (default: random, printed). Writes
// bench/results/chaos-latest.{json,md} and exits 1 when any invariant or
// ping-loss allowance was broken.
//   node dist/test/chaos/run.js [--seconds S] [--seed N] [--bitrate 50M]
import { markdown } from "./plan";
import { runSoak, type SoakResult } from "./soak";
import { writeResults } from "../../bench/report";

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : undefined;
  return v === undefined || v === "" || v.startsWith("--") ? undefined : v;
}

function number(name: string, text: string | undefined, dflt: number): number {
  if (text === undefined) return dflt;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) {
    console.error(`chaos: --${name} must be a non-negative integer, got "${text}"`);
    process.exit(2);
  }
  return n;
}

export function report(r: SoakResult): string {
  const t = r.verdict.perType;
  return [
    `# Chaos soak`,
    ``,
    `Seed ${r.seed}, ${r.seconds} s, ${r.nodes} nodes on a ${r.etcdMembers}-member etcd` +
      (r.decapAtStart ? ` (--decap ${r.decapAtStart.join(", ")} at the start)` : "") +
      `, ` +
      `${r.pingers} pingers every ${r.pingIntervalMs} ms (kept: ${r.pingAchievedMs} ms), ` +
      `${r.flows} iperf3 flows at ${r.bitrate}. ` +
      `${r.events.length} faults; ${r.pingsLost} of ${r.pingsSent} pings lost` +
      (r.pingsUnreachable === undefined
        ? `; `
        : ` (${r.pingsUnreachable} of them answered by an ICMP error); `) +
      `${r.flowsBroken} of ${r.flows} flows broken; agent RSS at most ${r.maxAgentRssMb} MB; ` +
      `etcd at most ${r.maxEtcdKeys} keys (${r.steadyEtcdKeys} between faults) and ` +
      `${r.maxEtcdLeases} etcd leases (one per node). ` +
      `Load average ${r.loadStart} at the start, ${r.loadEnd} at the end, on ${r.cpus} CPUs.`,
    ``,
    markdown(t),
    ``,
    r.verdict.failures.length
      ? `**${r.verdict.failures.length} failures:**\n\n${r.verdict.failures.map((f) => `- ${f}`).join("\n")}`
      : `No failures.`,
    ...flapViews(r),
  ].join("\n");
}

/** For every link flap a failure names: the neighbour entries read 300 ms
 * after the link came back, and what the flapped node's agent logged. */
function flapViews(r: SoakResult): string[] {
  const named = new Set(
    r.verdict.failures.flatMap((f) =>
      [...f.matchAll(/^event (\d+) \(link-flap/g)].map((m) => Number(m[1])),
    ),
  );
  const out: string[] = [];
  for (const i of [...named].sort((a, b) => a - b)) {
    const d = r.events[i]?.detail;
    if (!d) continue;
    out.push(
      `- event ${i} at ${r.events[i]?.atS} s: ${d.neighAfter}; agent: ${d.agentLog || "nothing"}`,
    );
  }
  return out.length ? ["", "Neighbours after the flaps that failed:", "", ...out] : [];
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.error("chaos: needs root (namespaces, BPF, etcd in a namespace)");
    process.exit(1);
  }
  const seconds = number("seconds", arg("seconds") ?? process.env.CHAOS_S, 600);
  const seed = number(
    "seed",
    arg("seed") ?? process.env.CHAOS_SEED,
    Math.floor(Math.random() * 0x7fffffff),
  );
  console.log(`chaos: seed ${seed} (CHAOS_SEED=${seed} repeats this schedule), ${seconds} s`);
  const r = await runSoak({
    seconds,
    seed,
    bitrate: arg("bitrate") ?? "50M",
    log: (l) => console.log(l),
  });
  const md = report(r);
  const file = writeResults("chaos", r, md);
  console.log(`\n${md}\n\nwritten: ${file}`);
  process.exitCode = r.verdict.failures.length ? 1 : 0;
}

main().catch((e) => {
  console.error(`chaos: ${(e as Error).stack ?? e}`);
  process.exit(1);
});
