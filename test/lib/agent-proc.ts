// An overlayd process in a node's namespace, as a test drives it: started
// with flags, logs captured, readiness read from /readyz inside the
// namespace, stopped with a signal.
import { spawn, type ChildProcess } from "node:child_process";
import { join } from "node:path";
import { httpInNs, waitFor } from "./sh";
import { parseSubnetEnv } from "../../agent/control/subnet-env";
import { mkdirSync, openSync, readFileSync } from "node:fs";
import { dirname } from "node:path";

export const OVERLAYD = join(__dirname, "..", "..", "..", "bin", "overlayd");
export const OVERLAYCTL = join(__dirname, "..", "..", "..", "bin", "overlayctl");

export class AgentProc {
  proc: ChildProcess | undefined;
  logs = "";
  exitCode: number | null = null;

  constructor(
    readonly ns: string,
    readonly flags: string[],
    readonly subnetFile: string,
    /** Runs before `node` inside the namespace (e.g. setpriv with fewer caps). */
    readonly wrapper: string[] = [],
    /** The whole command before the flags, instead of `ip netns exec <ns>
     *  <wrapper> node bin/overlayd` (e.g. `podman run ... <image>`). */
    readonly command?: string[],
  ) {}

  /** detached: survives this process (the demo's KEEP=1); logs then go to a file. */
  start(detached = false): this {
    this.logs = "";
    this.exitCode = null;
    const [cmd, ...argv] = [
      ...(this.command ?? ["ip", "netns", "exec", this.ns, ...this.wrapper, "node", OVERLAYD]),
      ...this.flags,
    ] as [string, ...string[]];
    mkdirSync(dirname(this.subnetFile), { recursive: true });
    if (detached) {
      const log = openSync(`${this.subnetFile}.log`, "a");
      this.proc = spawn(cmd, argv, { stdio: ["ignore", log, log], detached: true });
      this.proc.unref();
      this.proc.on("exit", (code, sig) => (this.exitCode = code ?? (sig ? 128 : -1)));
      return this;
    }
    this.proc = spawn(cmd, argv, { stdio: ["ignore", "pipe", "pipe"] });
    const keep = (d: Buffer) => (this.logs = (this.logs + d.toString()).slice(-200000));
    this.proc.stdout?.on("data", keep);
    this.proc.stderr?.on("data", keep);
    this.proc.on("exit", (code, sig) => (this.exitCode = code ?? (sig ? 128 : -1)));
    return this;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  get running(): boolean {
    return this.proc !== undefined && this.exitCode === null;
  }

  /** GET http://127.0.0.1:<port><path> inside the namespace. */
  http(path: string, port = 9473): { status: number; body: string } {
    return httpInNs(this.ns, `http://127.0.0.1:${port}${path}`);
  }

  async waitReady(timeoutMs = 30000): Promise<void> {
    await waitFor(
      `agent in ${this.ns} ready`,
      () => {
        if (!this.running)
          throw new Error(`agent exited ${this.exitCode}: ${this.logs.slice(-2000)}`);
        return this.http("/readyz").status === 200;
      },
      timeoutMs,
    ).catch((e) => {
      throw new Error(`${(e as Error).message}\n--- agent log ---\n${this.logs.slice(-3000)}`);
    });
  }

  subnet(): string {
    const env = parseSubnetEnv(readFileSync(this.subnetFile, "utf8"));
    const [first, len] = (env.FLANNEL_SUBNET as string).split("/");
    const parts = (first as string).split(".");
    parts[3] = String(Number(parts[3]) - 1);
    return `${parts.join(".")}/${len}`;
  }

  async stop(signal: NodeJS.Signals = "SIGTERM"): Promise<number | null> {
    const p = this.proc;
    if (!p || this.exitCode !== null) return this.exitCode;
    await new Promise<void>((resolve) => {
      p.once("exit", () => resolve());
      this.signal(signal);
    });
    return this.exitCode;
  }

  /** ip netns exec execs node, so the signal reaches the agent itself. */
  protected signal(signal: NodeJS.Signals): void {
    this.proc?.kill(signal);
  }
}
