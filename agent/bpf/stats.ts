// Reads the per-CPU datapath counters and sums them (at scrape time, the
// prom-client collect() pattern, and for `overlayctl stats`).
import { BpfMap, possibleCpus } from "./map";
import {
  DIRECTIONS,
  DIR_MAX,
  DROP_MAX,
  DROP_REASONS,
  dropIndex,
  encodeIndex,
  sumCounters,
  sumSuppressed,
  type Counter,
} from "./codec";

export interface DropCount extends Counter {
  direction: string;
  reason: string;
}

export interface DatapathStats {
  traffic: Map<string, Counter>;
  drops: DropCount[];
  /** Monitor events the data path did not emit (rate limit, full ring). */
  suppressed: { drop: bigint; trace: bigint };
}

export class StatsReader {
  constructor(
    private readonly stats: BpfMap,
    private readonly drops: BpfMap,
    private readonly evLimit: BpfMap,
  ) {}

  static openPinned(pinPath: string): StatsReader {
    return new StatsReader(
      BpfMap.openPinned(pinPath, "ovl_stats"),
      BpfMap.openPinned(pinPath, "ovl_drops"),
      BpfMap.openPinned(pinPath, "ovl_ev_limit"),
    );
  }

  close(): void {
    this.stats.close();
    this.drops.close();
    this.evLimit.close();
  }

  read(): DatapathStats {
    const ncpu = possibleCpus();
    const traffic = new Map<string, Counter>();
    for (const [dir, name] of DIRECTIONS) {
      const v = this.stats.lookup(encodeIndex(dir));
      traffic.set(name, v ? sumCounters(v, ncpu) : { packets: 0n, bytes: 0n });
    }
    const drops: DropCount[] = [];
    for (let dir = 0; dir < DIR_MAX; dir++) {
      for (let reason = 0; reason < DROP_MAX; reason++) {
        const v = this.drops.lookup(encodeIndex(dropIndex(dir, reason)));
        const c = v ? sumCounters(v, ncpu) : { packets: 0n, bytes: 0n };
        drops.push({
          direction: DIRECTIONS.get(dir) as string,
          reason: DROP_REASONS.get(reason) as string,
          ...c,
        });
      }
    }
    const b = this.evLimit.lookup(encodeIndex(0));
    return { traffic, drops, suppressed: b ? sumSuppressed(b, ncpu) : { drop: 0n, trace: 0n } };
  }
}
