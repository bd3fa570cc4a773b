// The underlay's neighbour cache across a link flap. When the underlay
// loses its link the kernel flushes every neighbour entry on it. When the
// link is back two things can cost a second more than the flap:
//
//   - this node's first ARP (or ND) request to a peer is lost, because the
//     switch port forwards a few milliseconds after the host sees its link
//     (or its link-up work runs late on a busy host), and the kernel asks
//     again only after retrans_time, one second;
//   - a peer that probed its entry for this node while the link was down
//     let it fail, and re-resolves it by broadcasts one second apart.
//
// So when the link is usable again: the IPv4 entries the flush took are
// written back in PROBE state: usable at once, and the kernel sends each
// peer a unicast ARP request right away, from which the peer learns this
// node again (an ARP request updates the sender's entry). Then, for three
// seconds, every entry still unresolved is pushed again, every 50 ms at
// first: a PROBE we wrote is probed again, an INCOMPLETE one is deleted so
// that the next packet asks at once. IPv6 entries are not written back: a
// neighbour solicitation the kernel sends for a probe comes from the
// link-local address, which would not teach the peer our global one; the
// solicitation a queued packet triggers carries the packet's (global)
// source, so for IPv6 the pushes alone do it.
//
// Pure: the input is `ip -o monitor link neigh` lines (or a listing at
// start), the kernel's entries and the time; the output is what to write.

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

  /** Is the link up with carrier, as last reported? */
  get linkUsable(): boolean {
    return this.usable;
  }

  /** What the kernel holds now (a listing at start). */
  seed(entries: Listed[]): void {
    for (const e of entries) this.learn(e.ip, e.mac, e.states);
  }

  /**
   * One event. When it is the link becoming usable again after it was not,
   * returns what the flush took (possibly nothing); otherwise undefined.
   */
  apply(ev: MonitorEvent, now: number): KeptNeighbour[] | undefined {
    if (ev.dev !== this.dev) return undefined;
    if (ev.kind === "link") return this.link(ev.usable, now);
    if (ev.deleted) {
      const mac = this.kept.get(ev.ip);
      this.kept.delete(ev.ip);
      // While the link is down a deletion is the flush: the entry was
      // good until then. While it is up, it may be the start of a flush
      // (carrier loss deletes before it reports) or the kernel's GC of an
      // entry nobody uses; the link change that follows decides.
      const learned = ev.mac && ev.states.some((s) => LEARNED.has(s)) ? ev.mac : mac;
      if (!learned) return undefined;
      if (this.usable) this.recentlyDeleted.set(ev.ip, { mac: learned, at: now });
      else this.kept.set(ev.ip, learned);
      this.trimKept();
      this.expireDeleted(now);
      return undefined;
    }
    if (ev.states.some((s) => GONE.has(s))) {
      // A failed resolution while the link is up: the host is gone. While
      // down, the kernel's attempts say nothing about the host.
      if (this.usable) this.kept.delete(ev.ip);
      return undefined;
    }
    this.learn(ev.ip, ev.mac, ev.states);
    return undefined;
  }

  private link(usable: boolean, now: number): KeptNeighbour[] | undefined {
    const was = this.usable;
    this.usable = usable;
    if (!usable && was) {
      // The deletions just before this were the flush: keep them.
      for (const [ip, d] of this.recentlyDeleted) {
        if (now - d.at <= FLUSH_WINDOW_MS && !this.kept.has(ip)) this.kept.set(ip, d.mac);
      }
      this.recentlyDeleted.clear();
      this.trimKept();
    }
    if (usable && !was) return [...this.kept].map(([ip, mac]) => ({ ip, mac }));
    return undefined;
  }

  private learn(ip: string, mac: string | undefined, states: string[]): void {
    if (!mac || !states.some((s) => LEARNED.has(s))) return;
    this.kept.delete(ip); // most recent last
    this.kept.set(ip, mac);
    this.recentlyDeleted.delete(ip);
    this.trimKept();
  }

  /** At most max kept, the oldest going first. */
  private trimKept(): void {
    while (this.kept.size > this.max) this.kept.delete(this.kept.keys().next().value as string);
  }

  /** Deletions older than a flush's burst were the kernel's GC, not a flush. */
  private expireDeleted(now: number): void {
    for (const [ip, d] of this.recentlyDeleted) {
      if (now - d.at > FLUSH_WINDOW_MS) this.recentlyDeleted.delete(ip);
    }
  }
}

const isV6 = (ip: string) => ip.includes(":");

/** An entry as `ip -j neigh show` lists it. */
export interface Listed {
  ip: string;
  mac?: string;
  states: string[];
}

/**
 * The entries to write back: the kept IPv4 ones the kernel has not learned
 * again on its own meanwhile (a MAC it learned since is newer than ours).
 */
export function restorePlan(kept: KeptNeighbour[], current: Listed[]): KeptNeighbour[] {
  const known = new Set(
    current
      .filter((c) => c.mac && c.states.some((s) => LEARNED.has(s) || s === "PERMANENT"))
      .map((c) => c.ip),
  );
  return kept.filter((k) => !isV6(k.ip) && !known.has(k.ip));
}

/** `ip -force -batch -` lines writing the entries back in PROBE state. */
export function restoreBatch(dev: string, entries: KeptNeighbour[]): string {
  return entries
    .map((e) => `neigh replace ${e.ip} lladdr ${e.mac} dev ${dev} nud probe\n`)
    .join("");
}

/** When, after the link is back, unresolved entries are pushed again (ms). */
export const PUSH_AT_MS: readonly number[] = [
  ...Array.from({ length: 20 }, (_, i) => 50 * (i + 1)), // every 50 ms for 1 s
  ...Array.from({ length: 10 }, (_, i) => 1200 + 200 * i), // then every 200 ms to 3 s
];

/**
 * One push: the lines that make the kernel ask again now for every entry
 * still unresolved, and how many there were. A PROBE entry we wrote back is
 * set STALE and PROBE again (a state change restarts its timer, so the
 * probe leaves at once); an INCOMPLETE one is deleted (the next packet
 * creates it again and asks at once, instead of at retrans_time).
 */
export function pushPlan(
  dev: string,
  current: Listed[],
  restored: ReadonlySet<string>,
): { batch: string; pending: number } {
  let batch = "";
  let pending = 0;
  for (const c of current) {
    if (c.states.includes("INCOMPLETE")) {
      batch += `neigh del ${c.ip} dev ${dev}\n`;
    } else if (c.mac && c.states.includes("PROBE") && restored.has(c.ip)) {
      batch += `neigh replace ${c.ip} lladdr ${c.mac} dev ${dev} nud stale\n`;
      batch += `neigh replace ${c.ip} lladdr ${c.mac} dev ${dev} nud probe\n`;
    } else {
      continue;
    }
    pending++;
  }
  return { batch, pending };
}
