// The lease watch and what keeps it going: list -> full sync -> watch from
// the listing's revision; a gap (compaction, a cancelled watch) or a
// reconnect closes the watch, re-lists and watches again. A watch that keeps
// failing soon after it starts (a member that answers every watch with an
// error, a role that may list but not watch) backs off exponentially, so it
// never becomes the re-list hot loop that flannel#2470 describes: each turn
// of it would be a full listing of every lease from etcd.
import { backoffMs, sleep } from "../backoff";
import { type Logger } from "../log";
import { type EtcdStore, type LeaseEvent, type ListResult, type WatchHandle } from "./etcd-store";

/** A watch that lived this long was healthy: its failure starts afresh. */
export const WATCH_STABLE_MS = 10_000;

export type WatchRestartReason = "compacted" | "canceled" | "reconnected";

export interface WatchLoopDeps {
  store: Pick<EtcdStore, "list" | "watch">;
  log: Logger;
  /** Applies a listing (the reconciler's full sync). */
  onListing(listing: ListResult, reason: string): void;
  /** An event of watch number `gen` (see WatchLoop.gen). */
  onEvent(e: LeaseEvent, gen: number): void;
  /** The agent's chain: restarts run in order with event handling. */
  serialize(fn: () => Promise<void>): Promise<void>;
  /** Retries a failing etcd call with backoff until it succeeds. */
  retry<T>(what: string, fn: () => Promise<T>): Promise<T>;
  stopping(): boolean;
  /** The watch stream's connection state changed. */
  connection(connected: boolean, why?: string): void;
  /** A restart was decided (metrics). */
  restarted?(reason: WatchRestartReason): void;
  /** Delay before the n-th consecutive quick failure's re-list (from 0). */
  backoff?(attempt: number): number;
  sleep?(ms: number): Promise<void>;
  now?(): number;
}

export function defaultWatchBackoff(attempt: number): number {
  return backoffMs(attempt, 500, 30_000);
}

export class WatchLoop {
  private handle: WatchHandle | undefined;
  /** Number of the current watch; events of older ones are stale. */
  gen = 0;
  private startedAt = 0;
  /** Consecutive watches that failed within WATCH_STABLE_MS. */
  private failures = 0;
  /** A restart is queued for this watch already (one per watch). */
  private restarting = -1;
  private connected = true;

  constructor(private readonly d: WatchLoopDeps) {}

  private now(): number {
    return (this.d.now ?? performance.now.bind(performance))();
  }

  /** The revision the watch has delivered everything up to (for a restart). */
  lastRevision(): string | undefined {
    return this.handle?.lastRevision();
  }

  /** Lists, applies and watches from the listing (start-up, a re-list). */
  async relist(reason: string): Promise<ListResult> {
    const listing = await this.d.retry("list leases", () => this.d.store.list());
    this.d.onListing(listing, reason);
    await this.watchFrom(listing.revision);
    return listing;
  }

  /** Watches from after `revision` (what the map already holds). */
  async watchFrom(revision: string): Promise<void> {
    await this.close();
    const gen = ++this.gen;
    const from = (BigInt(revision) + 1n).toString();
    this.handle = await this.d.retry("watch", () =>
      this.d.store.watch(
        from,
        (e) => this.d.onEvent(e, gen),
        (why) => this.restart(gen, /compacted/.test(why) ? "compacted" : "canceled", why),
        (connected, why) => this.onState(gen, connected, why),
      ),
    );
    this.startedAt = this.now();
    this.connected = true;
    this.d.connection(true);
  }

  async close(): Promise<void> {
    const h = this.handle;
    this.handle = undefined;
    await h?.close();
  }

  private onState(gen: number, connected: boolean, why?: string): void {
    if (this.d.stopping() || gen !== this.gen) return;
    this.d.log.debug("etcd watch state", { connected, why });
    const was = this.connected;
    this.connected = connected;
    this.d.connection(connected, why);
    if (!connected && was) {
      this.d.log.warn("etcd watch disconnected; the data path keeps forwarding", { error: why });
    } else if (connected && !was) {
      // Events may have been missed while away: reconcile by diff.
      this.restart(gen, "reconnected", "reconnected");
    }
  }

  /** The delay before re-listing after a failure of a watch that started at startedAt. */
  private nextDelay(): number {
    if (this.now() - this.startedAt >= WATCH_STABLE_MS) this.failures = 0;
    const attempt = this.failures++;
    return attempt === 0 ? 0 : (this.d.backoff ?? defaultWatchBackoff)(attempt - 1);
  }

  private restart(gen: number, reason: WatchRestartReason, why: string): void {
    if (this.d.stopping() || gen !== this.gen || this.restarting === gen) return;
    this.restarting = gen;
    this.d.restarted?.(reason);
    const delay = this.nextDelay();
    this.d.log.warn(
      reason === "reconnected" ? "etcd watch reconnected; re-listing" : "watch gap; re-listing",
      {
        why,
        ...(delay ? { backoffMs: delay, failures: this.failures } : {}),
      },
    );
    void this.d.serialize(async () => {
      if (this.d.stopping() || gen !== this.gen) return;
      await this.close();
      if (delay) await (this.d.sleep ?? sleep)(delay);
      if (this.d.stopping()) return;
      await this.relist(reason);
    });
  }
}
