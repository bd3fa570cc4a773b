// Keeps the subnet map equal to the leases: a full reconcile after every
// listing (stale entries from a previous run go only then), incremental on
// watch events. Remembers the last attributes per subnet, because a delete
// event carries no value.
import { type HostEntry } from "./bpf/codec";
import { type SubnetMapLike } from "./bpf/subnet-map";
import { desiredEntries, hostEntryOf, planSync, type Lease, type SyncPlan } from "./lease";
import { type Logger } from "./log";
import { type Cidr } from "./net/ip";

export interface ReconcilerHooks {
  /** A map operation failed (op = upsert | delete | list). */
  syncError?(op: string, err: unknown): void;
  /** A full or incremental sync finished. */
  synced?(seconds: number, entries: number): void;
}

export class Reconciler {
  private readonly leases = new Map<string, Lease>();
  private own: Cidr | undefined;
  private ownEntry: HostEntry | undefined;
  private fullSyncs = 0;

  constructor(
    private readonly map: SubnetMapLike,
    private readonly log: Logger,
    private readonly hooks: ReconcilerHooks = {},
  ) {}

  get synced(): boolean {
    return this.fullSyncs > 0;
  }

  /** Our own lease: kept in the map as LOCAL, never as a remote. */
  setOwn(subnet: Cidr, entry: HostEntry): void {
    this.own = subnet;
    this.ownEntry = entry;
  }

  lease(subnet: Cidr): Lease | undefined {
    return this.leases.get(subnet.toString());
  }

  allLeases(): Lease[] {
    return [...this.leases.values()];
  }

  /** Replace everything we know with a fresh listing and converge the map. */
  fullSync(leases: Lease[]): SyncPlan {
    const t0 = process.hrtime.bigint();
    this.leases.clear();
    for (const l of leases) this.leases.set(l.subnet.toString(), l);
    const desired = desiredEntries(this.leases.values(), this.own, this.ownEntry, (m) =>
      this.log.warn(m),
    );
    let actual;
    try {
      actual = this.map.list();
    } catch (e) {
      this.hooks.syncError?.("list", e);
      throw e;
    }
    const plan = planSync(desired, actual);
    this.apply(plan);
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
    const t0 = process.hrtime.bigint();
    this.leases.set(l.subnet.toString(), l);
    if (this.own && l.subnet.equals(this.own)) return;
    const entry = hostEntryOf(l, (m) => this.log.warn(m));
    if (entry) this.apply({ upserts: [{ subnet: l.subnet, host: entry }], deletes: [] });
    else this.apply({ upserts: [], deletes: [l.subnet] });
    this.hooks.synced?.(Number(process.hrtime.bigint() - t0) / 1e9, this.leases.size);
  }

  onDelete(subnet: Cidr): void {
    const t0 = process.hrtime.bigint();
    const old = this.leases.get(subnet.toString());
    this.leases.delete(subnet.toString());
    if (this.own && subnet.equals(this.own)) return;
    if (old)
      this.log.info("lease gone", { subnet: subnet.toString(), publicIp: old.attrs.publicIp });
    this.apply({ upserts: [], deletes: [subnet] });
    this.hooks.synced?.(Number(process.hrtime.bigint() - t0) / 1e9, this.leases.size);
  }

  private apply(plan: SyncPlan): void {
    // Deletes first: a subnet that moved to another host never has two.
    for (const s of plan.deletes) {
      try {
        this.map.delete(s);
      } catch (e) {
        this.hooks.syncError?.("delete", e);
        this.log.error("map delete failed", { subnet: s.toString(), error: String(e) });
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
