// Command helpers for tests: run, run in a namespace, wait for a condition.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";

export function sh(argv: string[], opts: { input?: string; allowFail?: boolean } = {}): string {
  const r = spawnSync(argv[0] as string, argv.slice(1), {
    encoding: "utf8",
    input: opts.input,
    maxBuffer: 64 << 20,
  });
  if (!opts.allowFail && (r.error || r.status !== 0)) {
    throw new Error(`${argv.join(" ")} failed (${r.status}): ${r.stderr || r.error?.message}`);
  }
  return r.stdout ?? "";
}

/** Exit status and output, never throws. */
export function shStatus(argv: string[]): { status: number; stdout: string; stderr: string } {
  const r = spawnSync(argv[0] as string, argv.slice(1), { encoding: "utf8", maxBuffer: 64 << 20 });
  return { status: r.status ?? -1, stdout: r.stdout ?? "", stderr: r.stderr ?? "" };
}

export function inNs(ns: string, argv: string[]): string[] {
  return ["ip", "netns", "exec", ns, ...argv];
}

export function spawnInNs(ns: string, argv: string[]): ChildProcess {
  return spawn("ip", ["netns", "exec", ns, ...argv], { stdio: ["ignore", "pipe", "pipe"] });
}

/**
 * Settles when `p` has exited, also when it exited already: an "exit"
 * listener added after the process ended waits forever (a ping that ran out
 * while an agent start was awaited hung a test until mocha's timeout).
 */
export function exited(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve();
  return new Promise((r) => p.once("exit", () => r()));
}

export async function sleep(ms: number): Promise<void> {
  await new Promise((r) => setTimeout(r, ms));
}

/** Polls fn until it returns a truthy value or the deadline passes. */
export async function waitFor<T>(
  what: string,
  fn: () => T | undefined | false,
  timeoutMs = 10000,
  pollMs = 50,
): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`,
      );
    }
    await sleep(pollMs);
  }
}

/** True when a test tier that needs root/tools must fail rather than skip. */
export const IN_CI = process.env.CI === "true";

/** GET a URL from inside a namespace (node's http, no curl needed). */
export function httpInNs(ns: string, url: string): { status: number; body: string } {
  const script =
    `require("http").get(${JSON.stringify(url)},r=>{let b="";r.on("data",d=>b+=d);` +
    `r.on("end",()=>{process.stdout.write(r.statusCode+"\\n"+b)})}).on("error",e=>{process.stdout.write("0\\n"+e.message)})`;
  const r = shStatus(inNs(ns, ["node", "-e", script]));
  const nl = r.stdout.indexOf("\n");
  return { status: Number(r.stdout.slice(0, nl)), body: r.stdout.slice(nl + 1) };
}
