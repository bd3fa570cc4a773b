// The underlay's neighbour entries across a link flap (the why is in
// neigh-keeper.ts): fed by `ip -o monitor link neigh`, seeded from a
// listing at start; when the link is back, one `ip -batch` writes the
// flushed IPv4 entries back, and for three seconds a push every 50-200 ms
// makes the kernel ask again for whatever is still unresolved.
import { type Logger } from "../log";
import { type IpMonitor } from "../net/ip-monitor";
import { listNeighbourText } from "../net/neigh";
import { run } from "../net/run";
import {
  NeighKeeper,
  parseMonitorLine,
  PUSH_AT_MS,
  pushPlan,
  restoreBatch,
  restorePlan,
  type KeptNeighbour,
} from "./neigh-keeper";

/** Pushes stop early once a push finds nothing unresolved after this. */
const SETTLED_AFTER_MS = 1000;

export class UnderlayNeighbours {
  private readonly keeper: NeighKeeper;
  private pushes: NodeJS.Timeout[] = [];
  private stopped = false;

  constructor(
    readonly dev: string,
    private readonly log: Logger,
  ) {
    this.keeper = new NeighKeeper(dev);
  }

  start(monitor: IpMonitor): void {
    this.seed();
    // Events lost while ip monitor was down: what the kernel has now.
    monitor.on(
      (line) => this.onLine(line),
      () => this.seed(),
    );
  }

  stop(): void {
    this.stopped = true;
    this.cancelPushes();
  }

  private seed(): void {
    try {
      this.keeper.seed(listNeighbourText(this.dev));
    } catch (e) {
      this.log.warn("cannot list the underlay's neighbours", {
        dev: this.dev,
        error: (e as Error).message,
      });
    }
  }

  private onLine(line: string): void {
    if (this.stopped) return;
    const ev = parseMonitorLine(line);
    if (!ev) return;
    const back = this.keeper.apply(ev, Date.now());
    if (back) this.linkBack(back);
    else if (!this.keeper.linkUsable) this.cancelPushes(); // down again
  }

  private linkBack(kept: KeptNeighbour[]): void {
    const t0 = performance.now();
    const restored = new Set<string>();
    try {
      const plan = restorePlan(kept, listNeighbourText(this.dev));
      if (plan.length) {
        run(["ip", "-force", "-batch", "-"], restoreBatch(this.dev, plan));
        for (const e of plan) restored.add(e.ip);
      }
      this.log.info("underlay link back: neighbour entries restored", {
        dev: this.dev,
        restored: plan.length,
        ms: Math.round(performance.now() - t0),
      });
    } catch (e) {
      // The link went down again, or one entry was refused: the pushes
      // and the kernel resolve the rest, as it would without us.
      this.log.warn("cannot restore the underlay's neighbour entries", {
        dev: this.dev,
        error: (e as Error).message,
      });
    }
    this.cancelPushes();
    const start = Date.now();
    this.pushes = PUSH_AT_MS.map((at) => {
      const t = setTimeout(() => this.push(restored, Date.now() - start), at);
      t.unref();
      return t;
    });
  }

  private push(restored: ReadonlySet<string>, sinceMs: number): void {
    if (this.stopped) return;
    try {
      const { batch, pending } = pushPlan(this.dev, listNeighbourText(this.dev), restored);
      if (batch) run(["ip", "-force", "-batch", "-"], batch);
      if (!pending && sinceMs >= SETTLED_AFTER_MS) this.cancelPushes();
    } catch {
      /* an entry changed under us: the next push sees the new state */
    }
  }

  private cancelPushes(): void {
    for (const t of this.pushes) clearTimeout(t);
    this.pushes = [];
  }
}
