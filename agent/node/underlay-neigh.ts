// The underlay's neighbour entries kept across a link flap (the why is in
// neigh-keeper.ts): fed by `ip -o monitor link neigh`, seeded from a
// listing at start, written back with one `ip -batch` when the link is up.
import { type Logger } from "../log";
import { type IpMonitor } from "../net/ip-monitor";
import { listNeighbourText } from "../net/neigh";
import { run } from "../net/run";
import { NeighKeeper, parseMonitorLine, restoreBatch, restorePlan } from "./neigh-keeper";

export class UnderlayNeighbours {
  private readonly keeper: NeighKeeper;
  /** Entries written back since start. */
  restored = 0;

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
    const ev = parseMonitorLine(line);
    if (!ev) return;
    const back = this.keeper.apply(ev, Date.now());
    if (back.length) this.restore(back);
  }

  private restore(kept: { ip: string; mac: string }[]): void {
    const t0 = performance.now();
    try {
      const plan = restorePlan(kept, listNeighbourText(this.dev));
      if (!plan.length) return;
      run(["ip", "-force", "-batch", "-"], restoreBatch(this.dev, plan));
      this.restored += plan.length;
      this.log.info("underlay link back: neighbour entries restored", {
        dev: this.dev,
        restored: plan.length,
        ms: Math.round(performance.now() - t0),
      });
    } catch (e) {
      // The link went down again, or one entry was refused: the kernel
      // resolves the rest itself, as it would without us.
      this.log.warn("cannot restore the underlay's neighbour entries", {
        dev: this.dev,
        error: (e as Error).message,
      });
    }
  }
}
