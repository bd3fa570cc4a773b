// `ip -o monitor OBJECTS`: the kernel's netlink notifications as one line
// per event, for the watchers that react to link, neighbour, route and
// address changes instead of polling. One child process serves every
// listener of the same objects; if it exits it is started again a second
// later, and listeners are told so they can catch up on what they missed.
import { spawn, type ChildProcess } from "node:child_process";
import { type Logger } from "../log";

export type MonitorListener = (line: string) => void;

export class IpMonitor {
  private child: ChildProcess | undefined;
  private readonly listeners: MonitorListener[] = [];
  private readonly restartListeners: (() => void)[] = [];
  private stopped = false;
  private restart: NodeJS.Timeout | undefined;

  constructor(
    /** `link`, `neigh`, `route`, `address`. */
    private readonly objects: readonly string[],
    private readonly log: Logger,
  ) {}

  /** Every line from now on; `restarted` after a gap in which events were lost. */
  on(line: MonitorListener, restarted?: () => void): this {
    this.listeners.push(line);
    if (restarted) this.restartListeners.push(restarted);
    return this;
  }

  start(): this {
    if (this.child || this.stopped) return this;
    const m = spawn("ip", ["-o", "monitor", ...this.objects], {
      stdio: ["ignore", "pipe", "ignore"],
    });
    this.child = m;
    let rest = "";
    m.stdout.setEncoding("utf8");
    m.stdout.on("data", (chunk: string) => {
      const lines = (rest + chunk).split("\n");
      rest = lines.pop() as string;
      for (const l of lines) if (l) for (const fn of this.listeners) fn(l);
    });
    m.on("error", () => undefined); // 'exit' follows, or ip is missing: said below
    m.on("exit", () => {
      this.child = undefined;
      if (this.stopped) return;
      this.log.warn("ip monitor exited; starting it again in 1 s", {
        objects: this.objects.join(","),
      });
      this.restart = setTimeout(() => {
        this.restart = undefined;
        this.start();
        for (const fn of this.restartListeners) fn();
      }, 1000);
      this.restart.unref();
    });
    m.unref();
    return this;
  }

  stop(): void {
    this.stopped = true;
    if (this.restart) clearTimeout(this.restart);
    this.child?.kill();
  }
}
