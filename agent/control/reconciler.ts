// Keeps the subnet map equal to the leases: a full reconcile after every
// listing (stale entries from a previous run go only then), incremental on
// watch events. A delete event carries no value: the map entry itself keeps
// the last host and VTEP MAC (SubnetHostMap.delete reads them to clean up the
// peer), and the reconciler keeps the last PublicIP per subnet, as numbers,
// so 65,536 leases cost a few MB here and not the listing's objects.
import { type HostEntry } from "../bpf/codec";
import { type SubnetMapLike } from "../bpf/subnet-map";
import {
  desiredEntries,
  hostEntryOf,
  planChanges,
  planSync,
  subnetId,
  type EntryOf,
  type Lease,
  type LeaseChange,
  type SyncPlan,
} from "./lease";
import { type Logger } from "../log";
import { formatIp, type Cidr, type Ip4 } from "../net/ip";

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
}

/** How long a deleted remote lease's entry stays, waiting for a re-create. */
export const DELETE_HOLD_MS = 3000;

export class Reconciler {
  /** subnet (addr * 64 + prefixlen) -> last PublicIP */
  private readonly leases = new Map<number, Ip4>();
  /** Deletes held back (subnet id -> the cancel and the last PublicIP). */
  private readonly held = new Map<number, { cancel: () => void; publicIp: Ip4 | undefined }>();
  private own: Cidr | undefined;
  private ownEntry: HostEntry | undefined;
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

  /** Our own lease: kept in the map as LOCAL, never as a remote. */
  setOwn(subnet: Cidr, entry: HostEntry): void {
    this.own = subnet;
    this.ownEntry = entry;
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
    const plan = planSync(desired, actual);
    this.apply(plan, true);
    this.fullSyncs++;
    this.hooks.synced?.(Number(process.hrtime.bigint() - t0) / 1e9, desired.size);
    if (plan.upserts.length || plan.deletes.length) {
      this.log.info("map reconciled", {
        upserts: plan.upserts.length,
        deletes: plan.deletes.length,
        entries: desired.size,
      });
    }
    return plan;
  }

  onPut(l: Lease): void {
    this.applyChanges([{ type: "put", lease: l }]);
  }

  onDelete(subnet: Cidr): void {
    this.applyChanges([{ type: "delete", subnet }]);
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
    const isOwn = (c: Cidr) => this.own !== undefined && c.equals(this.own);
    for (const c of changes) {
      if (c.type === "put") {
        const id = subnetId(c.lease.subnet);
        const held = this.held.get(id);
        if (held) {
          held.cancel();
          this.held.delete(id);
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
      const h = { cancel: () => {}, publicIp: old };
      this.held.set(id, h);
      // A put may have cancelled it after the timer fired but before the
      // agent's queue ran it: only the hold still in place deletes.
      h.cancel = defer(() => {
        if (this.held.get(id) !== h) return;
        this.held.delete(id);
        if (old !== undefined) this.logGone(c.subnet, old);
        this.apply({ upserts: [], deletes: [c.subnet] }, false);
      }, DELETE_HOLD_MS);
    }
    const entryOf = this.hooks.entryOf ?? hostEntryOf;
    const plan = planChanges(planned, this.own, (l) => entryOf(l, (m) => this.log.warn(m)));
    const deleting = new Set(plan.deletes.map(subnetId));
    for (const m of moved) if (!deleting.has(subnetId(m))) plan.deletes.push(m);
    this.apply(plan, false);
    this.hooks.synced?.(Number(process.hrtime.bigint() - t0) / 1e9, this.leases.size);
    return plan;
  }

  private logGone(subnet: Cidr, publicIp: Ip4): void {
    this.log.info("lease gone", { subnet: subnet.toString(), publicIp: formatIp(publicIp) });
  }

  private apply(plan: SyncPlan, full: boolean): void {
    if (plan.upserts.length || plan.deletes.length || full) this.hooks.changed?.(plan, full);
    // Deletes first: a subnet that moved to another host never has two.
    for (const s of plan.deletes) {
      try {
        this.map.delete(s);
      } catch (e) {
        this.hooks.syncError?.("delete", e);
        this.log.error("map delete failed", { subnet: s.toString(), error: String(e) });
      }
    }
    if (this.map.upsertMany && plan.upserts.length > 1) {
      try {
        this.map.upsertMany(plan.upserts);
        return;
      } catch (e) {
        // Fall back to one at a time, which names the entry that fails.
        this.log.warn("batch map update failed; retrying one by one", { error: String(e) });
      }
    }
    for (const u of plan.upserts) {
      try {
        this.map.upsert(u.subnet, u.host);
      } catch (e) {
        this.hooks.syncError?.("upsert", e);
        this.log.error("map upsert failed", { subnet: u.subnet.toString(), error: String(e) });
      }
    }
  }
}
