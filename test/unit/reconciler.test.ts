import assert from "node:assert/strict";
import { COUNTER_SWEEP_MS, DELETE_HOLD_MS, Reconciler } from "../../agent/control/reconciler";
import { type HostEntry, F_LOCAL } from "../../agent/bpf/codec";
import {
  type SubnetEntry,
  type SubnetEntryOf,
  type SubnetMapLikeOf,
} from "../../agent/bpf/subnet-map";
import { type HostEntry6 } from "../../agent/bpf/codec6";
import { type Lease, type LeaseChange } from "../../agent/control/lease";
import { EventQueue } from "../../agent/control/event-queue";
import { createLogger } from "../../agent/log";
import { Cidr, parseIp } from "../../agent/net/ip";
import { Cidr6, parseIp6 } from "../../agent/net/ip6";

/** Either family's subnet map, in memory, logging its operations. */
class FakeMapOf<C extends { toString(): string }, H> implements SubnetMapLikeOf<C, H> {
  readonly m = new Map<string, SubnetEntryOf<C, H>>();
  ops: string[] = [];
  failUpsert = false;
  upsert(subnet: C, host: H): void {
    if (this.failUpsert) throw new Error("map update ovl_subnets: E2BIG (map full)");
    this.ops.push(`+${subnet}`);
    this.m.set(subnet.toString(), { subnet, host });
  }
  delete(subnet: C): boolean {
    this.ops.push(`-${subnet}`);
    return this.m.delete(subnet.toString());
  }
  list(): SubnetEntryOf<C, H>[] {
    return [...this.m.values()];
  }
}
class FakeMap extends FakeMapOf<Cidr, HostEntry> {}
class FakeMap6 extends FakeMapOf<Cidr6, HostEntry6> {}

const quiet = createLogger("error", () => {});
const lease = (s: string, ip: string): Lease => ({
  subnet: Cidr.parse(s),
  attrs: { publicIp: parseIp(ip), backendType: "vxlan", vni: 1, vtepMac: "0e:00:00:00:00:01" },
  leaseId: "1",
  modRevision: "1",
});

describe("unit: reconciler", function () {
  it("removes stale entries only on the full sync, then applies events incrementally", function () {
    const map = new FakeMap();
    map.upsert(Cidr.parse("10.5.99.0/24"), { remoteIp: 1, vtepMac: "0e:00:00:00:00:99", flags: 0 }); // from a previous run
    const r = new Reconciler(map, quiet);
    r.setOwn(Cidr.parse("10.5.1.0/24"), {
      remoteIp: parseIp("172.31.0.1"),
      vtepMac: "0e:00:00:00:00:11",
      flags: F_LOCAL,
    });
    map.ops = [];
    r.onPut(lease("10.5.2.0/24", "172.31.0.2"));
    assert.ok(map.m.has("10.5.99.0/24"), "no deletes before the first full listing");
    assert.equal(r.synced, false);
    r.fullSync([
      lease("10.5.1.0/24", "172.31.0.1"),
      lease("10.5.2.0/24", "172.31.0.2"),
      lease("10.5.3.0/24", "172.31.0.3"),
    ]);
    assert.equal(r.synced, true);
    assert.deepEqual([...map.m.keys()].sort(), ["10.5.1.0/24", "10.5.2.0/24", "10.5.3.0/24"]);
    assert.equal(map.m.get("10.5.1.0/24")?.host.flags, F_LOCAL);
    map.ops = [];
    r.onDelete(Cidr.parse("10.5.3.0/24"));
    r.onDelete(Cidr.parse("10.5.1.0/24")); // own: handled by the agent, not removed here
    assert.deepEqual(map.ops, ["-10.5.3.0/24"]);
    assert.equal(
      r.publicIpOf(Cidr.parse("10.5.2.0/24")),
      parseIp("172.31.0.2"),
      "last PublicIP kept",
    );
    assert.equal(r.publicIpOf(Cidr.parse("10.5.3.0/24")), undefined);
    assert.equal(r.size, 1, "only 10.5.2.0/24 left: own and deleted subnets are not tracked");
  });

  it("reports map failures and keeps going", function () {
    const map = new FakeMap();
    const errors: string[] = [];
    const r = new Reconciler(map, quiet, { syncError: (op) => errors.push(op) });
    map.failUpsert = true;
    r.fullSync([lease("10.5.2.0/24", "172.31.0.2"), lease("10.5.3.0/24", "172.31.0.3")]);
    assert.deepEqual(errors, ["upsert", "upsert"]);
  });

  /** A timer queue the test runs by hand: (fn, ms) as the agent's setTimeout. */
  function timers() {
    const q: { fn: () => void; ms: number; cancelled: boolean }[] = [];
    return {
      q,
      defer: (fn: () => void, ms: number) => {
        const t = { fn, ms, cancelled: false };
        q.push(t);
        return () => (t.cancelled = true);
      },
      /** Fires every timer, cancelled or not (as a fired-then-cancelled one). */
      fireAll: (evenCancelled = false) => {
        for (const t of q.splice(0)) if (evenCancelled || !t.cancelled) t.fn();
      },
    };
  }

  /** A reconciler with held deletes on a fake map, synced with these
   *  leases (10.5.K.0/24 on 172.31.0.K), its map's op log cleared. */
  function holding(...ks: number[]) {
    const map = new FakeMap();
    const t = timers();
    const r = new Reconciler(map, quiet, { defer: t.defer });
    r.fullSync(ks.map((k) => lease(`10.5.${k}.0/24`, `172.31.0.${k}`)));
    map.ops = [];
    return { map, t, r };
  }

  it("counters of hosts whose peer went are looked at once, a moment after; a full sync prunes them all", async function () {
    class CountingMap extends FakeMap {
      departing = 0;
      sweeps = 0;
      prunes = 0;
      override delete(subnet: Cidr): boolean {
        this.departing++;
        return super.delete(subnet);
      }
      sweepDeparted(): number {
        this.sweeps++;
        const n = this.departing;
        this.departing = 0;
        return n;
      }
      pruneCounters(): number {
        this.prunes++;
        return 0;
      }
    }
    const map = new CountingMap();
    const t = timers();
    const r = new Reconciler(map, quiet, { defer: t.defer });
    r.fullSync([2, 3, 4].map((k) => lease(`10.5.${k}.0/24`, `172.31.0.${k}`)));
    assert.equal(map.prunes, 1, "pruned after the full sync");
    assert.equal(t.q.length, 0, "no sweep: no peer went");
    r.applyChanges([{ type: "put", lease: lease("10.5.3.0/24", "172.31.0.9") }]); // moved
    r.applyChanges([{ type: "put", lease: lease("10.5.4.0/24", "172.31.0.8") }]);
    assert.equal(t.q.length, 1, "one sweep for both");
    assert.equal(t.q[0]?.ms, COUNTER_SWEEP_MS);
    assert.equal(map.sweeps, 0, "not at once: the packet in flight comes after");
    t.fireAll();
    assert.equal(map.sweeps, 1);
    r.applyChanges([{ type: "put", lease: lease("10.5.2.0/24", "172.31.0.7") }]);
    assert.equal(t.q.length, 1, "the next removal gets a sweep of its own");
    // The start's sync (on worker threads) removes a stale entry: swept too.
    const m2 = new CountingMap();
    m2.upsert(Cidr.parse("10.5.9.0/24"), { remoteIp: 9, vtepMac: "0e:00:00:00:00:09", flags: 0 });
    const t2 = timers();
    await new Reconciler(m2, quiet, { defer: t2.defer }).fullSyncAsync([
      lease("10.5.2.0/24", "172.31.0.2"),
    ]);
    assert.equal(m2.prunes, 1);
    assert.equal(t2.q.length, 1, "a sweep after the start's sync");
    t2.fireAll();
    assert.equal(m2.sweeps, 1);
  });

  // Found by the chaos soak (lease-delete): a lease deleted by hand is written
  // back by its owner within milliseconds, but every other node removed the
  // entry at once, and 30-60 ms of pings to that node's pods were lost.
  it("lease deleted and re-created by its owner: the entry is held, never removed", function () {
    const { map, t, r } = holding(2);
    r.onDelete(Cidr.parse("10.5.2.0/24"));
    assert.deepEqual(map.ops, [], "nothing removed while held");
    assert.equal(t.q[0]?.ms, DELETE_HOLD_MS);
    r.onPut(lease("10.5.2.0/24", "172.31.0.2"));
    t.fireAll();
    assert.deepEqual(map.ops, ["+10.5.2.0/24"], "re-created in place, never removed");
  });

  // Found by the chaos soak (lease-churn, then an agent restarted twice within
  // the hold): the state file saved a revision past deletes still held, the
  // warm start never replayed them, and 1,000 entries outlived their leases.
  it("warm-restart-keeps-held-deletes: heldSince is the oldest held delete's revision", function () {
    const { t, r } = holding(2, 3, 4);
    assert.equal(r.heldSince(), undefined, "nothing held");
    const del = (k: number, revision: bigint) =>
      r.applyChanges([{ type: "delete", subnet: Cidr.parse(`10.5.${k}.0/24`), revision }]);
    del(3, 41n);
    del(2, 40n);
    del(4, 42n);
    assert.equal(r.heldSince(), 40n);
    r.onPut(lease("10.5.2.0/24", "172.31.0.2")); // re-created: no longer held
    assert.equal(r.heldSince(), 41n);
    t.fireAll();
    assert.equal(r.heldSince(), undefined, "applied to the map: nothing to replay");
  });

  it("removes a held entry when the hold runs out without a re-create", function () {
    const { map, t, r } = holding(2, 3);
    r.onDelete(Cidr.parse("10.5.3.0/24"));
    t.fireAll();
    assert.deepEqual(map.ops, ["-10.5.3.0/24"]);
    assert.equal(r.publicIpOf(Cidr.parse("10.5.3.0/24")), undefined);
  });

  it("a hold whose timer fired before a re-create cancelled it removes nothing", function () {
    const { map, t, r } = holding(2);
    r.onDelete(Cidr.parse("10.5.2.0/24"));
    r.onPut(lease("10.5.2.0/24", "172.31.0.2")); // queued before the fired timer ran
    map.ops = [];
    t.fireAll(true);
    assert.deepEqual(map.ops, [], "the re-created entry stays");
    assert.ok(map.m.has("10.5.2.0/24"));
  });

  it("a full sync drops held deletes and decides from the listing", function () {
    const { map, t, r } = holding(2);
    r.onDelete(Cidr.parse("10.5.2.0/24"));
    map.ops = [];
    r.fullSync([]);
    assert.deepEqual(map.ops, ["-10.5.2.0/24"]);
    assert.equal(t.q[0]?.cancelled, true);
  });

  it("a subnet that moves to another host loses the old entry before the new one goes in", function () {
    const { map, t, r } = holding(2, 3);
    // Expired and taken by another node within the hold, and a plain put
    // with another PublicIP: both remove the old host's entry first (the
    // real map removes its peer entry with it).
    r.onDelete(Cidr.parse("10.5.2.0/24"));
    r.onPut(lease("10.5.2.0/24", "172.31.0.9"));
    r.onPut(lease("10.5.3.0/24", "172.31.0.8"));
    t.fireAll();
    assert.deepEqual(map.ops, ["-10.5.2.0/24", "+10.5.2.0/24", "-10.5.3.0/24", "+10.5.3.0/24"]);
    assert.equal(map.m.get("10.5.2.0/24")?.host.remoteIp, parseIp("172.31.0.9"));
  });

  it("never removes its own subnet when a held delete runs out after taking it", function () {
    const { map, t, r } = holding(2);
    r.onDelete(Cidr.parse("10.5.2.0/24"));
    const own = { remoteIp: parseIp("172.31.0.1"), vtepMac: "0e:00:00:00:00:11", flags: F_LOCAL };
    r.setOwn(Cidr.parse("10.5.2.0/24"), own);
    map.upsert(Cidr.parse("10.5.2.0/24"), own);
    t.fireAll();
    assert.equal(map.m.get("10.5.2.0/24")?.host.flags, F_LOCAL);
  });
});

describe("unit: reconciler, the IPv6 halves of dual-stack leases", function () {
  /** 10.5.K.0/24 & fc00:5:0:K::/64 on 172.31.0.K / fd31::K (v6: false: v4 only). */
  const dual = (k: number, v6: number | false = k, host = k): Lease => ({
    ...lease(`10.5.${k}.0/24`, `172.31.0.${host}`),
    ...(v6 !== false ? { subnet6: Cidr6.parse(`fc00:5:0:${v6.toString(16)}::/64`) } : {}),
    attrs: {
      ...lease(`10.5.${k}.0/24`, `172.31.0.${host}`).attrs,
      ...(v6 !== false
        ? {
            publicIpv6: parseIp6(`fd31::${host.toString(16)}`),
            vni6: 1,
            vtepMac6: "0e:00:00:00:00:06",
          }
        : {}),
    },
  });
  const s6 = (k: number) => Cidr6.parse(`fc00:5:0:${k.toString(16)}::/64`);
  const del = (l: Lease): LeaseChange => ({
    type: "delete",
    subnet: l.subnet,
    ...(l.subnet6 ? { subnet6: l.subnet6 } : {}),
  });

  function dualReconciler(withHold: boolean) {
    const map = new FakeMap();
    const map6 = new FakeMap6();
    const q: (() => void)[] = [];
    const r = new Reconciler(map, quiet, {
      map6,
      ...(withHold
        ? { defer: (fn: () => void) => (q.push(fn), () => q.splice(q.indexOf(fn), 1)) }
        : {}),
    });
    r.setOwn(
      Cidr.parse("10.5.1.0/24"),
      { remoteIp: parseIp("172.31.0.1"), vtepMac: "0e:00:00:00:00:11", flags: F_LOCAL },
      {
        subnet: s6(1),
        host: { remoteIp: parseIp6("fd31::1"), vtepMac: "0e:00:00:00:00:11", flags: F_LOCAL },
      },
    );
    return { map, map6, r, fire: () => q.splice(0).forEach((f) => f()) };
  }

  it("a full sync fills both maps: ours LOCAL, v4-only leases in the IPv4 map only, stale IPv6 entries gone", function () {
    const { map, map6, r } = dualReconciler(false);
    map6.upsert(s6(0x99), { remoteIp: 9n, vtepMac: "0e:00:00:00:00:99", flags: 0 }); // a previous run's
    r.fullSync([dual(1), dual(2), dual(3, false)]);
    assert.deepEqual([...map.m.keys()].sort(), ["10.5.1.0/24", "10.5.2.0/24", "10.5.3.0/24"]);
    assert.deepEqual([...map6.m.keys()].sort(), ["fc00:5:0:1::/64", "fc00:5:0:2::/64"]);
    assert.equal(map6.m.get("fc00:5:0:1::/64")?.host.flags, F_LOCAL);
    assert.deepEqual(map6.m.get("fc00:5:0:2::/64")?.host, {
      remoteIp: parseIp6("fd31::2"),
      vtepMac: "0e:00:00:00:00:06",
      flags: 0,
    });
  });

  it("a lease with an IPv6 subnet but no PublicIPv6 keeps its IPv4 entry and gets no IPv6 one", function () {
    const { map, map6, r } = dualReconciler(false);
    const l = dual(2);
    delete l.attrs.publicIpv6;
    r.fullSync([l]);
    assert.ok(map.m.has("10.5.2.0/24"));
    assert.ok(!map6.m.has("fc00:5:0:2::/64"));
  });

  it("two leases claiming one IPv6 subnet: the first keeps it", function () {
    const { map6, r } = dualReconciler(false);
    r.fullSync([dual(2, 7, 2), dual(3, 7, 3)]);
    assert.equal(map6.m.get("fc00:5:0:7::/64")?.host.remoteIp, parseIp6("fd31::2"));
  });

  it("follows puts and deletes; a key re-made with another IPv6 half moves the IPv6 entry", function () {
    const { map, map6, r } = dualReconciler(false);
    r.fullSync([dual(2)]);
    map.ops = [];
    map6.ops = [];
    r.applyChanges([{ type: "put", lease: dual(3) }]);
    assert.deepEqual(map6.ops, ["+fc00:5:0:3::/64"]);
    // lease 3 re-keyed with fc00:5:0:8::/64: the old key deleted, the new put
    r.applyChanges([del(dual(3)), { type: "put", lease: dual(3, 8) }]);
    assert.deepEqual(map6.ops.slice(1).sort(), ["+fc00:5:0:8::/64", "-fc00:5:0:3::/64"]);
    assert.ok(map.m.has("10.5.3.0/24"), "the IPv4 half stays");
    // to a v4-only key (IPv6 switched off on that node): the IPv6 entry goes
    map6.ops = [];
    r.applyChanges([del(dual(3, 8)), { type: "put", lease: dual(3, false) }]);
    assert.deepEqual(map6.ops, ["-fc00:5:0:8::/64"]);
    map6.ops = [];
    r.applyChanges([del(dual(2))]);
    assert.deepEqual(map6.ops, ["-fc00:5:0:2::/64"]);
    assert.ok(!map.m.has("10.5.2.0/24"));
  });

  it("holds an IPv6 entry with its lease's delete, and drops it when the re-create has another half", function () {
    const { map6, r, fire } = dualReconciler(true);
    r.fullSync([dual(2), dual(3)]);
    map6.ops = [];
    r.applyChanges([del(dual(2))]);
    assert.deepEqual(map6.ops, [], "held");
    r.applyChanges([{ type: "put", lease: dual(2) }]);
    fire();
    assert.deepEqual(map6.ops, ["+fc00:5:0:2::/64"], "re-created in place, never removed");
    map6.ops = [];
    r.applyChanges([del(dual(3))]);
    r.applyChanges([{ type: "put", lease: dual(3, 9) }]);
    assert.deepEqual(map6.ops.sort(), ["+fc00:5:0:9::/64", "-fc00:5:0:3::/64"]);
    map6.ops = [];
    r.applyChanges([del(dual(3, 9))]);
    assert.deepEqual(map6.ops, []);
    fire();
    assert.deepEqual(map6.ops, ["-fc00:5:0:9::/64"], "the hold ran out: both halves go");
  });

  it("never touches its own IPv6 subnet from events", function () {
    const { map6, r } = dualReconciler(false);
    r.fullSync([dual(1), dual(2)]);
    map6.ops = [];
    r.applyChanges([del(dual(1)), { type: "put", lease: dual(4, 1, 4) }]);
    assert.deepEqual(map6.ops, []);
    assert.equal(map6.m.get("fc00:5:0:1::/64")?.host.flags, F_LOCAL);
  });
});

describe("unit: reconciler under a lease flood", function () {
  class CountingMap extends FakeMap {
    batches: number[] = [];
    single = 0;
    upsertMany(entries: SubnetEntry[]): void {
      this.batches.push(entries.length);
      for (const e of entries) this.m.set(e.subnet.toString(), e);
    }
    override upsert(subnet: Cidr, host: HostEntry): void {
      this.single++;
      super.upsert(subnet, host);
    }
  }

  it("coalesces a burst of 10,000 puts into batched map writes, last change per subnet winning", async function () {
    const map = new CountingMap();
    const r = new Reconciler(map, quiet);
    r.setOwn(Cidr.parse("10.0.0.0/24"), {
      remoteIp: 1,
      vtepMac: "0e:00:00:00:00:11",
      flags: F_LOCAL,
    });
    const handled: number[] = [];
    const q = new EventQueue<LeaseChange>(
      async (batch) => {
        handled.push(batch.length);
        r.applyChanges(batch);
      },
      (e) => assert.fail(String(e)),
    );
    // 10,000 puts as etcd delivers them: watch responses of 1,000 events,
    // a few arriving per turn of the event loop.
    for (let resp = 0; resp < 10; resp++) {
      for (let i = resp * 1000; i < (resp + 1) * 1000; i++) {
        const s = `10.${(i >> 8) + 1}.${i & 255}.0/24`;
        q.push({ type: "put", lease: lease(s, `172.16.${i >> 8}.${i & 255}`) });
      }
      if (resp % 3 === 2) await new Promise((res) => setImmediate(res));
    }
    // The same subnet changed twice and then removed within the burst.
    q.push({ type: "put", lease: lease("10.200.0.0/24", "172.31.9.1") });
    q.push({ type: "put", lease: lease("10.200.0.0/24", "172.31.9.2") });
    q.push({ type: "delete", subnet: Cidr.parse("10.200.0.0/24") });
    await q.drained();
    assert.equal(map.m.size, 10000, "every lease in the map");
    assert.equal(map.single, 0, "no entry written on its own");
    assert.ok(q.batches <= 5, `10,000 puts in ${q.batches} batches (want <= 5): ${handled}`);
    assert.equal(
      map.batches.reduce((a, b) => a + b, 0),
      10000,
      "each subnet written once",
    );
    assert.ok(!map.m.has("10.200.0.0/24"), "the last change (a delete) won");
  });

  it("a lone put still reaches the map in the next turn of the event loop", async function () {
    const map = new CountingMap();
    const r = new Reconciler(map, quiet);
    const q = new EventQueue<LeaseChange>(
      async (b) => void r.applyChanges(b),
      (e) => assert.fail(String(e)),
    );
    q.push({ type: "put", lease: lease("10.5.7.0/24", "172.31.0.7") });
    await new Promise((res) => setImmediate(res));
    assert.ok(map.m.has("10.5.7.0/24"));
    assert.equal(q.batches, 1);
  });
});
