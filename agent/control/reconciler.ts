// Keeps the subnet map equal to the leases: a full reconcile after every
// listing (stale entries from a previous run go only then), incremental on
// watch events. A delete event carries no value: the map entry itself keeps
// the last host and VTEP MAC (SubnetHostMap.delete reads them to clean up the
// peer), and the reconciler keeps the last PublicIP per subnet, as numbers,
// so 65,536 leases cost a few MB here and not the listing's objects.
import { type HostEntry } from "../bpf/codec";
import { type HostEntry6 } from "../bpf/codec6";
import { type SubnetMapLike, type SubnetMapLike6, type SubnetMapLikeOf } from "../bpf/subnet-map";
import {
  desiredEntries,
  desiredEntries6,
  hostEntry6Of,
  hostEntryOf,
  planChanges,
  planChanges6,
  planSync,
  planSync6,
  subnetId,
  type EntryOf,
  type EntryOf6,
  type Lease,
  type LeaseChange,
  type SyncPlan,
  type SyncPlanOf,
} from "./lease";
import { type Logger } from "../log";
import { formatIp, type Cidr, type Ip4 } from "../net/ip";
import { type Cidr6 } from "../net/ip6";

export interface ReconcilerHooks {
  /** A map operation failed (op = upsert | delete | list). */
  syncError?(op: string, err: unknown): void;
  /** A full or incremental sync finished. */
  synced?(seconds: number, entries: number): void;
  /** The backend's map entry for a peer lease (default: vxlan's hostEntryOf). */
  entryOf?: EntryOf;
  /** The map changed by this plan (the backend's routes follow it); full
   * is true after a full sync, when the plan is relative to the old map. */
  changed?(plan: SyncPlan, full: boolean): void;
  /**
   * Runs fn after ms, returning a cancel (a timer). With it, a watch delete
   * of a remote lease is held for DELETE_HOLD_MS before the entry goes: an
   * owner whose lease was deleted writes it back within milliseconds, and
   * traffic to its pods must not stop meanwhile. Without it (the upgrade
   * refill, tests) deletes apply at once.
   */
  defer?(fn: () => void, ms: number): () => void;
  /** A dual-stack network: the IPv6 map, kept from the leases' IPv6 halves. */
  map6?: SubnetMapLike6;
  /** The backend's IPv6 entry for a peer lease (default: hostEntry6Of). */
  entryOf6?: EntryOf6;
}

/** How long a deleted remote lease's entry stays, waiting for a re-create. */
export const DELETE_HOLD_MS = 3000;
/** How long after a peer goes its counters are looked at again (a packet
 *  in flight as it went may have made them anew). */
export const COUNTER_SWEEP_MS = 1000;

export class Reconciler {
  /** subnet (addr * 64 + prefixlen) -> last PublicIP */
  private readonly leases = new Map<number, Ip4>();
  /** Deletes held back (subnet id -> the cancel and the last PublicIP). */
  private readonly held = new Map<
    number,
    {
      cancel: () => void;
      publicIp: Ip4 | undefined;
      subnet6: Cidr6 | undefined;
      revision: bigint | undefined;
    }
  >();
  private own: Cidr | undefined;
  private ownEntry: HostEntry | undefined;
  private own6: { subnet: Cidr6; host: HostEntry6 } | undefined;
  private fullSyncs = 0;

  constructor(
    private readonly map: SubnetMapLike,
    private readonly log: Logger,
    private readonly hooks: ReconcilerHooks = {},
  ) {}

  get synced(): boolean {
    return this.fullSyncs > 0 || this.resumed;
  }

  private resumed = false;

  /**
   * A warm restart: the pinned map already matches the leases up to a
   * stored revision and the watch replays everything after it, so there is
   * nothing to list or write. PublicIPs are learnt from later events.
   */
  resume(): void {
    this.resumed = true;
  }

  /** Our own lease: kept in the map as LOCAL, never as a remote; its IPv6
   * half likewise in the IPv6 map. */
  setOwn(subnet: Cidr, entry: HostEntry, own6?: { subnet: Cidr6; host: HostEntry6 }): void {
    this.own = subnet;
    this.ownEntry = entry;
    this.own6 = own6;
    this.held.get(subnetId(subnet))?.cancel();
    this.held.delete(subnetId(subnet));
  }

  /** The last PublicIP seen for a subnet. */
  publicIpOf(subnet: Cidr): Ip4 | undefined {
    return this.leases.get(subnetId(subnet));
  }

  get size(): number {
    return this.leases.size;
  }

  /** Replace everything we know with a fresh listing and converge the map. */
  fullSync(leases: Lease[]): SyncPlan {
    const t0 = process.hrtime.bigint();
    const { plan, entries } = this.planFull(leases);
    this.apply(plan, true);
    return this.fullSynced(leases, plan, entries, t0);
  }

  /**
   * fullSync(), the batched map writes on worker threads (upsertManyAsync):
   * the start's first sync, before anything else touches the map. Nothing
   * else may call the reconciler until it settles.
   */
  async fullSyncAsync(leases: Lease[]): Promise<SyncPlan> {
    const t0 = process.hrtime.bigint();
    const { plan, entries } = this.planFull(leases);
    this.hooks.changed?.(plan, true);
    this.applyDeletes(this.map, plan);
    try {
      if (this.map.upsertManyAsync && plan.upserts.length > 1) {
        try {
          await this.map.upsertManyAsync(plan.upserts);
          return this.fullSynced(leases, plan, entries, t0);
        } catch (e) {
          this.batchFailed(e);
        }
      }
      this.upsertEach(this.map, plan);
      return this.fullSynced(leases, plan, entries, t0);
    } finally {
      // The prune ran at once; a packet in flight after it is swept later.
      this.sweepSoon(this.map);
    }
  }

  /** A listing's plan against the map: what we know is replaced by it. */
  private planFull(leases: Lease[]): { plan: SyncPlan; entries: number } {
    this.cancelHeld(); // the listing says what stays
    this.leases.clear();
    for (const l of leases) this.leases.set(subnetId(l.subnet), l.attrs.publicIp);
    const desired = desiredEntries(
      leases,
      this.own,
      this.ownEntry,
      (m) => this.log.warn(m),
      this.hooks.entryOf,
    );
    let actual;
    try {
      actual = this.map.list();
    } catch (e) {
      this.hooks.syncError?.("list", e);
      throw e;
    }
    return { plan: planSync(desired, actual), entries: desired.size };
  }

  /** After a full sync's IPv4 writes: the IPv6 map, the count, the log. */
  private fullSynced(leases: Lease[], plan: SyncPlan, entries: number, t0: bigint): SyncPlan {
    this.fullSync6(leases);
    this.pruneCounters();
    this.fullSyncs++;
    this.hooks.synced?.(Number(process.hrtime.bigint() - t0) / 1e9, entries);
    if (plan.upserts.length || plan.deletes.length) {
      this.log.info("map reconciled", {
        upserts: plan.upserts.length,
        deletes: plan.deletes.length,
        entries,
      });
    }
    return plan;
  }

  /** Per-peer counters of removed peers, made again by a packet in flight
   *  as they went, are dropped here (all of them, by listing, after a full
   *  sync; else those of the hosts just removed); failing that costs
   *  nothing but memory. */
  private pruneCounters(how: "pruneCounters" | "sweepDeparted" = "pruneCounters"): void {
    for (const m of [this.map, this.hooks.map6]) {
      try {
        const n = m?.[how]?.() ?? 0;
        if (n) this.log.info("counters of removed peers pruned", { entries: n });
      } catch (e) {
        this.hooks.syncError?.("prune", e);
        this.log.warn("pruning counters of removed peers failed", { error: String(e) });
      }
    }
  }

  private sweepCancel: (() => void) | undefined;

  /** Hosts lost their peer: their counters are looked at again shortly. */
  private sweepSoon(map: { readonly departing?: number }): void {
    if (!map.departing || this.sweepCancel || !this.hooks.defer) return;
    this.sweepCancel = this.hooks.defer(() => {
      this.sweepCancel = undefined;
      this.pruneCounters("sweepDeparted");
    }, COUNTER_SWEEP_MS);
  }

  private fullSync6(leases: Lease[]): void {
    const map6 = this.hooks.map6;
    if (!map6) return;
    const desired = desiredEntries6(
      leases,
      this.own6,
      (m) => this.log.warn(m),
      this.hooks.entryOf6,
    );
    let actual;
    try {
      actual = map6.list();
    } catch (e) {
      this.hooks.syncError?.("list", e);
      throw e;
    }
    const plan = planSync6(desired, actual);
    this.applyTo(map6, plan);
    if (plan.upserts.length || plan.deletes.length) {
      this.log.info("IPv6 map reconciled", {
        upserts: plan.upserts.length,
        deletes: plan.deletes.length,
        entries: desired.size,
      });
    }
  }

  onPut(l: Lease): void {
    this.applyChanges([{ type: "put", lease: l }]);
  }

  onDelete(subnet: Cidr): void {
    this.applyChanges([{ type: "delete", subnet }]);
  }

  /**
   * The oldest etcd revision whose delete is held back, not yet in the map:
   * a warm restart must replay the watch from there, or the entry would
   * outlive its lease for good.
   */
  heldSince(): bigint | undefined {
    let oldest: bigint | undefined;
    for (const h of this.held.values()) {
      if (h.revision !== undefined && (oldest === undefined || h.revision < oldest)) {
        oldest = h.revision;
      }
    }
    return oldest;
  }

  /** Held deletes are dropped (a full sync decides, or the agent stops). */
  cancelHeld(): void {
    for (const h of this.held.values()) h.cancel();
    this.held.clear();
  }

  /**
   * A burst of watch events as one plan and one batched map write. A remote
   * lease's delete is held (hooks.defer) rather than planned; a put cancels
   * its subnet's hold. A subnet whose PublicIP changed loses its old entry
   * first, and with it the old host's peer entry (decap's source check).
   */
  applyChanges(changes: LeaseChange[]): SyncPlan {
    const t0 = process.hrtime.bigint();
    const planned: LeaseChange[] = [];
    const moved: Cidr[] = [];
    // IPv6: held deletes whose key a put replaced with another IPv6 half.
    const gone6: Cidr6[] = [];
    const isOwn = (c: Cidr) => this.own !== undefined && c.equals(this.own);
    for (const c of changes) {
      if (c.type === "put") {
        const id = subnetId(c.lease.subnet);
        const held = this.held.get(id);
        if (held) {
          held.cancel();
          this.held.delete(id);
          const s6 = held.subnet6;
          if (s6 && !(c.lease.subnet6 && s6.equals(c.lease.subnet6))) gone6.push(s6);
        }
        const prev = held ? held.publicIp : this.leases.get(id);
        this.leases.set(id, c.lease.attrs.publicIp);
        if (prev !== undefined && prev !== c.lease.attrs.publicIp && !isOwn(c.lease.subnet)) {
          moved.push(c.lease.subnet);
        }
        planned.push(c);
        continue;
      }
      const id = subnetId(c.subnet);
      const old = this.leases.get(id);
      this.leases.delete(id);
      if (isOwn(c.subnet)) continue;
      const defer = this.hooks.defer;
      if (!defer) {
        if (old !== undefined) this.logGone(c.subnet, old);
        planned.push(c);
        continue;
      }
      if (this.held.has(id)) continue;
      const h = { cancel: () => {}, publicIp: old, subnet6: c.subnet6, revision: c.revision };
      this.held.set(id, h);
      // A put may have cancelled it after the timer fired but before the
      // agent's queue ran it: only the hold still in place deletes.
      h.cancel = defer(() => {
        if (this.held.get(id) !== h) return;
        this.held.delete(id);
        if (old !== undefined) this.logGone(c.subnet, old);
        this.apply({ upserts: [], deletes: [c.subnet] }, false);
        this.apply6([], h.subnet6 ? [h.subnet6] : []);
      }, DELETE_HOLD_MS);
    }
    const entryOf = this.hooks.entryOf ?? hostEntryOf;
    const plan = planChanges(planned, this.own, (l) => entryOf(l, (m) => this.log.warn(m)));
    const deleting = new Set(plan.deletes.map(subnetId));
    for (const m of moved) if (!deleting.has(subnetId(m))) plan.deletes.push(m);
    this.apply(plan, false);
    this.apply6(planned, gone6);
    this.hooks.synced?.(Number(process.hrtime.bigint() - t0) / 1e9, this.leases.size);
    return plan;
  }

  private logGone(subnet: Cidr, publicIp: Ip4): void {
    this.log.info("lease gone", { subnet: subnet.toString(), publicIp: formatIp(publicIp) });
  }

  /** The IPv6 map's share of a burst: its plan from the changes, plus the
   * IPv6 subnets of replaced keys (`gone`) that no change re-creates. */
  private apply6(changes: LeaseChange[], gone: Cidr6[]): void {
    const map6 = this.hooks.map6;
    if (!map6) return;
    const entryOf = this.hooks.entryOf6 ?? hostEntry6Of;
    const plan = planChanges6(changes, this.own6?.subnet, (l) =>
      entryOf(l, (m) => this.log.warn(m)),
    );
    const own = this.own6?.subnet;
    for (const g of gone) {
      if (own && g.equals(own)) continue;
      if (!plan.upserts.some((u) => u.subnet.equals(g)) && !plan.deletes.some((d) => d.equals(g)))
        plan.deletes.push(g);
    }
    this.applyTo(map6, plan);
  }

  private apply(plan: SyncPlan, full: boolean): void {
    if (plan.upserts.length || plan.deletes.length || full) this.hooks.changed?.(plan, full);
    this.applyTo(this.map, plan);
  }

  private applyTo<C extends { toString(): string }, H>(
    map: SubnetMapLikeOf<C, H>,
    plan: SyncPlanOf<C, H>,
  ): void {
    this.applyDeletes(map, plan);
    try {
      if (map.upsertMany && plan.upserts.length > 1) {
        try {
          map.upsertMany(plan.upserts);
          return;
        } catch (e) {
          this.batchFailed(e);
        }
      }
      this.upsertEach(map, plan);
    } finally {
      this.sweepSoon(map);
    }
  }

  /** A batch write failed: the upserts are retried one at a time, which
   * names the entry that fails. */
  private batchFailed(e: unknown): void {
    this.log.warn("batch map update failed; retrying one by one", { error: String(e) });
  }

  private applyDeletes<C extends { toString(): string }, H>(
    map: SubnetMapLikeOf<C, H>,
    plan: SyncPlanOf<C, H>,
  ): void {
    // Deletes first: a subnet that moved to another host never has two.
    for (const s of plan.deletes) {
      try {
        map.delete(s);
      } catch (e) {
        this.hooks.syncError?.("delete", e);
        this.log.error("map delete failed", { subnet: s.toString(), error: String(e) });
      }
    }
  }

  private upsertEach<C extends { toString(): string }, H>(
    map: SubnetMapLikeOf<C, H>,
    plan: SyncPlanOf<C, H>,
  ): void {
    for (const u of plan.upserts) {
      try {
        map.upsert(u.subnet, u.host);
      } catch (e) {
        this.hooks.syncError?.("upsert", e);
        this.log.error("map upsert failed", { subnet: u.subnet.toString(), error: String(e) });
      }
    }
  }
}
