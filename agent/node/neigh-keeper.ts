// The underlay's neighbour cache across a link flap. When the underlay
// loses its link the kernel flushes every neighbour entry on it; when the
// link is back, the first packet to each peer waits for ARP (or ND), and if
// that first request is lost (the switch port forwards a few milliseconds
// after the host sees carrier, or its link-up work runs late on a busy
// host) the kernel asks again only after retrans_time, a whole second:
// every pod of the node is cut off for a second longer than the flap. The
// keeper remembers the entries the flush took and hands them back when the
// link is usable again, to be written as STALE: the kernel sends to a STALE
// entry at once and checks it in the background (DELAY, then a unicast
// probe), so a peer whose address moved meanwhile is corrected within
// seconds, as it would be for any stale entry.
//
// Pure: the input is `ip -o monitor link neigh` lines (or a listing at
// start) and the time; the output is what to write.

/** A neighbour worth keeping: an IPv4 or IPv6 address and its MAC. */
export interface KeptNeighbour {
  ip: string;
  mac: string;
}

export type MonitorEvent =
  | { kind: "link"; dev: string; usable: boolean }
  | { kind: "neigh"; dev: string; ip: string; mac?: string; states: string[]; deleted: boolean };

/** States whose MAC the kernel learned and still trusts. */
const LEARNED = new Set(["REACHABLE", "STALE", "DELAY", "PROBE"]);
/** The host answers no more: not one to hand back. */
const GONE = new Set(["FAILED", "INCOMPLETE"]);
const STATES = new Set([...LEARNED, ...GONE, "PERMANENT", "NOARP", "NONE"]);

/**
 * One line of `ip -o monitor link neigh`, or undefined for other lines:
 *   2: eth0@if3: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 ... state UP ...
 *   [Deleted ]172.31.0.2 dev eth0 lladdr 0a:..:02 [router] REACHABLE
 */
export function parseMonitorLine(line: string): MonitorEvent | undefined {
  const link = /^\d+: ([^:@\s]+)(?:@[^:\s]+)?: <([^>]*)>/.exec(line);
  if (link) {
    const flags = (link[2] as string).split(",");
    const usable =
      flags.includes("UP") && flags.includes("LOWER_UP") && !flags.includes("NO-CARRIER");
    return { kind: "link", dev: link[1] as string, usable };
  }
  const words = line.trim().split(/\s+/);
  const deleted = words[0] === "Deleted";
  if (deleted) words.shift();
  const [ip, devWord, dev] = words;
  if (!ip || devWord !== "dev" || !dev || !/^[0-9a-fA-F.:]+$/.test(ip)) return undefined;
  const at = words.indexOf("lladdr");
  const mac = at > 0 ? words[at + 1]?.toLowerCase() : undefined;
  return { kind: "neigh", dev, ip, mac, states: words.filter((w) => STATES.has(w)), deleted };
}

/** A flush arrives as a burst of deletions next to the link change (before
 *  it, when carrier was lost; after it, at an admin down). */
export const FLUSH_WINDOW_MS = 2000;

export class NeighKeeper {
  /** ip -> MAC, oldest first (a Map keeps insertion order). */
  private readonly kept = new Map<string, string>();
  /** Deleted while the link was up: a flush on its way, or the kernel's GC. */
  private readonly recentlyDeleted = new Map<string, { mac: string; at: number }>();
  private usable = true;

  constructor(
    readonly dev: string,
    /** The most it keeps: the most recently learned win. */
    readonly max = 8192,
  ) {}

  get size(): number {
    return this.kept.size;
  }

  /** What the kernel holds now (a listing at start). */
  seed(entries: { ip: string; mac?: string; states: string[] }[]): void {
    for (const e of entries) this.learn(e.ip, e.mac, e.states);
  }

  /**
   * One event. Returns the neighbours to write back when this is the link
   * becoming usable again after it was not; otherwise [].
   */
  apply(ev: MonitorEvent, now: number): KeptNeighbour[] {
    if (ev.dev !== this.dev) return [];
    if (ev.kind === "link") return this.link(ev.usable, now);
    if (ev.deleted) {
      const mac = this.kept.get(ev.ip);
      this.kept.delete(ev.ip);
      // While the link is down a deletion is the flush: the entry was
      // good until then. While it is up, it may be the start of a flush
      // (carrier loss deletes before it reports) or the kernel's GC of an
      // entry nobody uses; the link change that follows decides.
      const learned = ev.mac && ev.states.some((s) => LEARNED.has(s)) ? ev.mac : mac;
      if (!learned) return [];
      if (this.usable) this.recentlyDeleted.set(ev.ip, { mac: learned, at: now });
      else this.kept.set(ev.ip, learned);
      this.trim(now);
      return [];
    }
    if (ev.states.some((s) => GONE.has(s))) {
      // A failed resolution while the link is up: the host is gone. While
      // down, the kernel's attempts say nothing about the host.
      if (this.usable) this.kept.delete(ev.ip);
      return [];
    }
    this.learn(ev.ip, ev.mac, ev.states);
    return [];
  }

  private link(usable: boolean, now: number): KeptNeighbour[] {
    const was = this.usable;
    this.usable = usable;
    if (!usable && was) {
      // The deletions just before this were the flush: keep them.
      for (const [ip, d] of this.recentlyDeleted) {
        if (now - d.at <= FLUSH_WINDOW_MS && !this.kept.has(ip)) this.kept.set(ip, d.mac);
      }
      this.recentlyDeleted.clear();
      this.trim(now);
    }
    if (usable && !was) return [...this.kept].map(([ip, mac]) => ({ ip, mac }));
    return [];
  }

  private learn(ip: string, mac: string | undefined, states: string[]): void {
    if (!mac || !states.some((s) => LEARNED.has(s))) return;
    this.kept.delete(ip); // most recent last
    this.kept.set(ip, mac);
    this.recentlyDeleted.delete(ip);
    this.trim(0);
  }

  private trim(now: number): void {
    while (this.kept.size > this.max) this.kept.delete(this.kept.keys().next().value as string);
    if (now) {
      for (const [ip, d] of this.recentlyDeleted) {
        if (now - d.at > FLUSH_WINDOW_MS) this.recentlyDeleted.delete(ip);
      }
    }
  }
}

/**
 * The entries to write back: the kept ones the kernel has not learned again
 * on its own meanwhile (a MAC it learned since is newer than ours).
 */
export function restorePlan(
  kept: KeptNeighbour[],
  current: { ip: string; mac?: string; states: string[] }[],
): KeptNeighbour[] {
  const known = new Set(
    current
      .filter((c) => c.mac && c.states.some((s) => LEARNED.has(s) || s === "PERMANENT"))
      .map((c) => c.ip),
  );
  return kept.filter((k) => !known.has(k.ip));
}

/** `neigh replace ... nud stale` lines for `ip -force -batch -`. */
export function restoreBatch(dev: string, entries: KeptNeighbour[]): string {
  return entries
    .map((e) => `neigh replace ${e.ip} lladdr ${e.mac} dev ${dev} nud stale\n`)
    .join("");
}
