// Integration against a real etcd on loopback: lease acquisition races,
// a full network, reservations, and a watch across compaction. Uses the
// agent's own EtcdStore and LeaseManager in-process.
import assert from "node:assert/strict";
import { parseNetworkConfig, type NetworkConfig } from "../../agent/control/config";
import { EtcdStore, type HeldLease, type LeaseEvent } from "../../agent/control/etcd-store";
import { LeaseManager, NetworkFullError } from "../../agent/control/lease-manager";
import { encodeLeaseAttrs, leaseKey, type LeaseAttrs } from "../../agent/control/lease";
import { createLogger } from "../../agent/log";
import { Cidr, formatIp, parseIp } from "../../agent/net/ip";
import { EtcdServer } from "../lib/etcd";
import { requireEnv } from "../lib/require";
import { waitFor } from "../lib/sh";

const quiet = createLogger("error", () => {});

describe("e2e: leases against a real etcd", function () {
  this.timeout(120000);
  let etcd: EtcdServer;
  const stores: EtcdStore[] = [];
  const held: HeldLease[] = [];

  before(async function () {
    requireEnv(this, { tools: ["etcd", "etcdctl"] });
    etcd = await new EtcdServer().start();
  });

  after(async function () {
    for (const h of held) h.keepalive?.release();
    for (const s of stores) await s.close();
    await etcd?.stop();
  });

  function store(prefix: string): EtcdStore {
    const s = new EtcdStore({ endpoints: [etcd.endpoint], prefix });
    stores.push(s);
    return s;
  }

  function manager(s: EtcdStore, cfg: NetworkConfig, publicIp: string): LeaseManager {
    const attrs: LeaseAttrs = {
      publicIp: parseIp(publicIp),
      backendType: "vxlan",
      vni: 1,
      vtepMac: "0e:00:00:00:00:01",
    };
    return new LeaseManager(s, quiet, {
      config: () => cfg,
      attrs: () => attrs,
      ttl: 60,
      onLost: () => {},
      stopping: () => false,
      relist: () => s.list(),
      backoff: () => 5,
    });
  }

  // Found by the chaos soak: a restart adopted its lease with a fresh etcd
  // lease and left the previous run's to live out its TTL.
  it("revokes the previous run's etcd lease when it adopts its own lease after a restart", async function () {
    const prefix = "/test/adopt-revoke";
    const text = JSON.stringify({ Network: "10.7.0.0/16" });
    etcd.put(`${prefix}/config`, text);
    const cfg = parseNetworkConfig(text, `${prefix}/config`);
    const first = store(prefix);
    const h1 = await manager(first, cfg, "172.30.5.1").acquire(
      (await first.list()).leases,
      undefined,
    );
    h1.keepalive?.release(); // the first run dies without revoking
    const second = store(prefix);
    const h2 = await manager(second, cfg, "172.30.5.1").acquire(
      (await second.list()).leases,
      undefined,
    );
    held.push(h2);
    assert.ok(h2.lease.subnet.equals(h1.lease.subnet), "the same subnet, adopted");
    assert.notEqual(h2.lease.leaseId, h1.lease.leaseId);
    assert.equal(await second.ttl(h1.lease.leaseId), -1, "the previous run's etcd lease is gone");
    assert.ok((await second.ttl(h2.lease.leaseId)) > 0);
    assert.equal(
      etcd.list(`${prefix}/subnets/`).get(leaseKey(prefix, h2.lease.subnet))?.lease,
      h2.lease.leaseId,
    );
  });

  it("gives 30 managers acquiring at once 30 distinct subnets, and the 31st a clear 'network full'", async function () {
    const prefix = "/test/race";
    // Exactly 30 subnets: every manager races for the same small pool.
    const text = JSON.stringify({
      Network: "10.6.0.0/16",
      SubnetMin: "10.6.1.0",
      SubnetMax: "10.6.30.0",
    });
    etcd.put(`${prefix}/config`, text);
    const cfg = parseNetworkConfig(text, `${prefix}/config`);
    const s = store(prefix);
    const listing = await s.list();
    const results = await Promise.all(
      Array.from({ length: 30 }, (_, i) =>
        manager(s, cfg, `172.30.0.${i + 1}`).acquire(listing.leases, undefined),
      ),
    );
    held.push(...results);
    const subnets = new Set(results.map((h) => h.lease.subnet.toString()));
    assert.equal(subnets.size, 30, "distinct subnets");
    const stored = etcd.list(`${prefix}/subnets/`);
    assert.equal(stored.size, 30);
    for (const h of results) {
      const v = stored.get(leaseKey(prefix, h.lease.subnet));
      assert.ok(v, `${h.lease.subnet} stored`);
      assert.equal(JSON.parse(v.value).PublicIP, formatIp(h.lease.attrs.publicIp));
      assert.notEqual(v.lease, "0", "bound to an etcd lease");
    }
    await assert.rejects(
      manager(s, cfg, "172.30.0.99").acquire((await s.list()).leases, undefined, 1),
      (e: unknown) =>
        e instanceof NetworkFullError &&
        /network 10\.6\.0\.0\/16 is full: all 30 \/24 subnets between SubnetMin 10\.6\.1\.0 and SubnetMax 10\.6\.30\.0/.test(
          e.message,
        ),
    );
  });

  it("writes flannel's lease JSON, field for field", async function () {
    const v = [...etcd.list("/test/race/subnets/").values()][0];
    assert.ok(v);
    assert.match(
      v.value,
      /^\{"PublicIP":"172\.30\.0\.\d+","PublicIPv6":null,"BackendType":"vxlan","BackendData":\{"VNI":1,"VtepMAC":"0e:00:00:00:00:01"\}\}$/,
    );
  });

  it("reuses a node's existing lease on restart (same PublicIP)", async function () {
    const s = store("/test/race");
    const cfg = parseNetworkConfig(etcd.get("/test/race/config"), "cfg");
    const before = etcd.list("/test/race/subnets/");
    const mine = [...before].find(([, v]) => JSON.parse(v.value).PublicIP === "172.30.0.7");
    assert.ok(mine);
    const h = await manager(s, cfg, "172.30.0.7").acquire((await s.list()).leases, undefined);
    held.push(h);
    assert.equal(leaseKey("/test/race", h.lease.subnet), mine[0]);
  });

  it("honours a reservation: its node gets it, nobody else ever does, it never expires", async function () {
    const prefix = "/test/reserve";
    const text = JSON.stringify({
      Network: "10.7.0.0/16",
      SubnetMin: "10.7.1.0",
      SubnetMax: "10.7.3.0",
    });
    etcd.put(`${prefix}/config`, text);
    const cfg = parseNetworkConfig(text, "cfg");
    const reserved = Cidr.parse("10.7.2.0/24");
    // A reservation is a key written without an etcd lease.
    etcd.put(
      leaseKey(prefix, reserved),
      encodeLeaseAttrs({ publicIp: parseIp("172.30.1.50"), backendType: "vxlan" }),
    );
    const s = store(prefix);
    // Two other nodes fill the two free subnets; neither takes the reserved one.
    for (const ip of ["172.30.1.1", "172.30.1.2"]) {
      const h = await manager(s, cfg, ip).acquire((await s.list()).leases, undefined);
      held.push(h);
      assert.ok(!h.lease.subnet.equals(reserved), `${ip} took the reserved subnet`);
    }
    await assert.rejects(
      manager(s, cfg, "172.30.1.3").acquire((await s.list()).leases, undefined, 1),
      NetworkFullError,
    );
    // The reservation's node gets it, and it stays lease-less.
    const h = await manager(s, cfg, "172.30.1.50").acquire((await s.list()).leases, undefined);
    held.push(h);
    assert.ok(h.lease.subnet.equals(reserved));
    assert.equal(h.keepalive, undefined);
    const v = etcd.list(`${prefix}/subnets/`).get(leaseKey(prefix, reserved));
    assert.equal(v?.lease, "0", "still a reservation");
    assert.equal(
      JSON.parse(v!.value).BackendData.VtepMAC,
      "0e:00:00:00:00:01",
      "attributes updated",
    );
  });

  it("prefers the previous subnet file's subnet when it is free", async function () {
    const prefix = "/test/previous";
    const text = JSON.stringify({ Network: "10.8.0.0/16" });
    etcd.put(`${prefix}/config`, text);
    const s = store(prefix);
    const h = await manager(s, parseNetworkConfig(text, "cfg"), "172.30.2.1").acquire(
      [],
      Cidr.parse("10.8.77.0/24"),
    );
    held.push(h);
    assert.equal(h.lease.subnet.toString(), "10.8.77.0/24");
  });

  it("reports a compacted watch revision as a gap, and keeps a live watch across compaction", async function () {
    const prefix = "/test/watch";
    const s = store(prefix);
    const startRev = String(etcd.revision());
    const events: LeaseEvent[] = [];
    const live = await s.watch(
      String(Number(startRev) + 1),
      (e) => events.push(e),
      () => {},
      () => {},
    );
    const attrs = {
      publicIp: parseIp("172.30.3.1"),
      backendType: "vxlan",
      vni: 1,
      vtepMac: "0e:00:00:00:00:03",
    };
    etcd.put(leaseKey(prefix, Cidr.parse("10.9.1.0/24")), encodeLeaseAttrs(attrs));
    etcd.ctl(["compact", String(etcd.revision())]);
    etcd.ctl(["del", leaseKey(prefix, Cidr.parse("10.9.1.0/24"))]);
    await waitFor("events on the live watch", () => events.length >= 2);
    assert.equal(events[0]?.type, "put");
    assert.equal(events[1]?.type, "delete");
    await live.close();

    let gap = "";
    const stale = await s.watch(
      startRev,
      () => {},
      (why) => (gap = why),
      () => {},
    );
    await waitFor("a compaction gap", () => gap);
    assert.match(gap, /compact/);
    await stale.close();
  });
});
