// Integration against a real etcd on loopback: lease acquisition races,
// a full network, reservations, and a watch across compaction. Uses the
// agent's own EtcdStore and LeaseManager in-process.
import assert from "node:assert/strict";
import { Etcd3 } from "../../agent/control/etcd3";
import { parseNetworkConfig, type NetworkConfig } from "../../agent/control/config";
import { EtcdStore, type HeldLease, type LeaseEvent } from "../../agent/control/etcd-store";
import { LeaseManager, NetworkFullError } from "../../agent/control/lease-manager";
import {
  decodeLeaseAttrs,
  encodeLeaseAttrs,
  keyOf,
  leaseKey,
  parseLeaseKeyParts,
  type Lease,
  type LeaseAttrs,
} from "../../agent/control/lease";
import { createLogger } from "../../agent/log";
import { Cidr, formatIp, parseIp } from "../../agent/net/ip";
import { Cidr6, parseIp6 } from "../../agent/net/ip6";
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

  function manager(
    s: EtcdStore,
    cfg: NetworkConfig,
    publicIp: string,
    extra: Partial<LeaseAttrs> = {},
  ): LeaseManager {
    const attrs: LeaseAttrs = {
      publicIp: parseIp(publicIp),
      backendType: "vxlan",
      vni: 1,
      vtepMac: "0e:00:00:00:00:01",
      ...extra,
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

  // The listing reads etcd's RangeResponse bytes itself (range-codec.ts,
  // lease-bytes.ts): it must say what etcd holds, form for form, as the
  // general decoders read each key and value, over several pages and with
  // the key range cut in parts.
  it("lists every lease page by page from the response bytes, each as the general decoders read it", async function () {
    const prefix = "/test/list";
    const client = new Etcd3({ hosts: etcd.endpoint });
    try {
      const id = await client.lease(600, { autoKeepAlive: false }).grant();
      const vxlan = (ip: number) =>
        encodeLeaseAttrs({
          publicIp: ip,
          backendType: "vxlan",
          vni: 1,
          vtepMac: "0e:2a:00:00:00:07",
        });
      // 12,000 canonical leases: three pages of LIST_PAGE
      for (let start = 0; start < 12000; start += 100) {
        const ops = [];
        for (let i = start; i < start + 100; i++) {
          const subnet = Cidr.of(0x0a000000 + i * 256, 24);
          ops.push(
            client
              .put(leaseKey(prefix, subnet))
              .value(vxlan(0xac100000 + i))
              .lease(id),
          );
        }
        await client
          .if(`${prefix}/subnets/x`, "Version", "==", 0)
          .then(...ops)
          .commit();
      }
      // and every other form, in place of some of them (a reservation each)
      const odd: [string, string][] = [
        [leaseKey(prefix, Cidr.parse("10.0.7.0/24"), Cidr6.parse("fc00:5:0:7::/64")), vxlan(1)],
        [`${prefix}/subnets/10.1.0.0-24`, vxlan(2).replace("0e:2a", "0E:2A")],
        [`${prefix}/subnets/10.2.0.0-24`, vxlan(3).replace(/,/g, ", ")],
        [`${prefix}/subnets/10.3.0.0-24`, "not json"],
        [`${prefix}/subnets/10.4.0.1-24`, vxlan(4)], // host bits: not a lease key
        [
          `${prefix}/subnets/10.5.0.0-24`,
          encodeLeaseAttrs({ publicIp: 5, backendType: "host-gw" }),
        ],
      ];
      for (const [k, v] of odd) await client.put(k).value(v); // no lease: reservations
      await client.delete().key(leaseKey(prefix, Cidr.parse("10.0.7.0/24"))); // now only the dual-stack key
      await client.delete().key(leaseKey(prefix, Cidr.parse("10.1.0.0/24")));
      await client.put(`${prefix}/subnets/10.1.0.0-24`).value(odd[1]?.[1] as string);

      // What etcd holds, read by etcdctl and the general decoders.
      const json = etcd
        .ctl(["get", `${prefix}/subnets/`, "--prefix", "-w", "json"])
        .replace(/"(lease|mod_revision)":(\d+)/g, '"$1":"$2"');
      const kvs = (
        JSON.parse(json) as {
          kvs: { key: string; value: string; lease?: string; mod_revision: string }[];
        }
      ).kvs.map((kv) => ({
        key: Buffer.from(kv.key, "base64").toString(),
        value: Buffer.from(kv.value, "base64").toString(),
        leaseId: kv.lease ?? "0",
        modRevision: kv.mod_revision,
      }));
      const want: Lease[] = [];
      const bad: string[] = [];
      for (const kv of kvs) {
        const parts = parseLeaseKeyParts(prefix, kv.key);
        try {
          if (!parts) throw new Error("not a lease key");
          const attrs = decodeLeaseAttrs(kv.value, kv.key);
          want.push({ ...parts, attrs, leaseId: kv.leaseId, modRevision: kv.modRevision });
        } catch {
          bad.push(kv.key);
        }
      }
      // 10.3.0.0-24 turned bad; the odd forms took the places of canonical ones
      assert.equal(want.length, 12000 - 1);

      const s = store(prefix);
      const plain = await s.list();
      assert.deepEqual(plain.leases, want);
      assert.deepEqual(
        plain.bad.map((b) => b.key),
        bad,
      );
      assert.match(plain.bad[0]?.error ?? "", /10\.3\.0\.0-24.*not valid JSON/);
      assert.equal(plain.revision, String(etcd.revision()));
      assert.deepEqual(s.listStats, { rawPages: 3, decodedPages: 0, fastKeys: 12000 - 4 });

      // Cut into ranges read side by side: the same listing.
      s.setListSplits(["10.12.0.0-24", "10.3.0.0-24", "10.33.0.0-24"]);
      const cut = await s.list();
      assert.deepEqual(cut, plain);
      assert.ok(s.listStats.rawPages >= 3 + 4, `pages ${s.listStats.rawPages}`);
      assert.equal(s.listStats.decodedPages, 0);
    } finally {
      client.close();
    }
  });

  describe("dual-stack (issue 14)", function () {
    /** flannel's subnet key pattern (pkg/subnet/subnet.go). */
    const FLANNEL_KEY = /(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$/;
    const v6attrs = (i: number): Partial<LeaseAttrs> => ({
      publicIpv6: parseIp6(`fd00:30::${i.toString(16)}`),
      vtepMac6: "0e:00:00:00:01:01",
    });
    function dualConfig(prefix: string, extra: object = {}): NetworkConfig {
      const text = JSON.stringify({
        Network: "10.10.0.0/16",
        EnableIPv6: true,
        IPv6Network: "fc00:10::/48",
        ...extra,
      });
      etcd.put(`${prefix}/config`, text);
      return parseNetworkConfig(text, `${prefix}/config`);
    }

    it("gives 20 managers racing for 20 v4 and 20 v6 subnets a distinct pair each, in one key each", async function () {
      const prefix = "/test/dual-race";
      // 20 of each: every v6 choice is likely to clash with another's at first.
      const cfg = dualConfig(prefix, {
        SubnetMin: "10.10.1.0",
        SubnetMax: "10.10.20.0",
        IPv6SubnetMin: "fc00:10:0:1::",
        IPv6SubnetMax: "fc00:10:0:14::",
      });
      const s = store(prefix);
      const listing = await s.list();
      const results = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          manager(s, cfg, `172.30.4.${i + 1}`, v6attrs(i + 1)).acquire(listing.leases, undefined),
        ),
      );
      held.push(...results);
      assert.equal(new Set(results.map((h) => h.lease.subnet.toString())).size, 20);
      assert.equal(new Set(results.map((h) => h.lease.subnet6?.toString())).size, 20);
      const stored = etcd.list(`${prefix}/subnets/`);
      assert.equal(stored.size, 20, [...stored.keys()].join(" "));
      for (const h of results) {
        const key = keyOf(prefix, h.lease);
        const m = FLANNEL_KEY.exec(key);
        assert.deepEqual(m?.slice(1), [
          formatIp(h.lease.subnet.addr),
          "24",
          h.lease.subnet6!.toKey().split("-")[0],
          "64",
        ]);
        const v = JSON.parse(stored.get(key)!.value);
        assert.equal(v.PublicIP, formatIp(h.lease.attrs.publicIp));
        assert.match(v.PublicIPv6, /^fd00:30::[0-9a-f]+$/);
        assert.deepEqual(v.BackendV6Data, { VNI: 1, VtepMAC: "0e:00:00:00:01:01" });
      }
      const listed = await s.list();
      assert.deepEqual(listed.bad, []);
      assert.equal(listed.leases.filter((l) => l.subnet6).length, 20);
    });

    it("never takes a v4 subnet held under the other key form", async function () {
      const prefix = "/test/dual-forms";
      const cfg = dualConfig(prefix, { SubnetMin: "10.10.1.0", SubnetMax: "10.10.2.0" });
      const s = store(prefix);
      // an older node, v4 only, holds 10.10.1.0/24; a flannel node the other, dual-stack
      etcd.put(
        leaseKey(prefix, Cidr.parse("10.10.1.0/24")),
        encodeLeaseAttrs({ publicIp: parseIp("172.30.5.1"), backendType: "vxlan", vni: 1 }),
      );
      const flannelKey = `${prefix}/subnets/10.10.2.0-24&fc00:10:0:2::-64`;
      etcd.put(
        flannelKey,
        '{"PublicIP":"172.30.5.2","PublicIPv6":"fd00:30::5:2","BackendType":"vxlan",' +
          '"BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:05:02"},' +
          '"BackendV6Data":{"VNI":1,"VtepMAC":"0e:00:00:00:15:02"}}',
      );
      const { leases } = await s.list();
      const fl = leases.find((l) => l.subnet.toString() === "10.10.2.0/24");
      assert.equal(fl?.subnet6?.toString(), "fc00:10:0:2::/64", "flannel's lease read");
      assert.equal(fl?.attrs.vtepMac6, "0e:00:00:00:15:02");
      // Creating either v4 subnet under the other form fails (the race a listing cannot see).
      const attrs = { publicIp: parseIp("172.30.5.3"), backendType: "vxlan", ...v6attrs(3) };
      const ka = () => {};
      assert.equal(
        await s.create(Cidr.parse("10.10.1.0/24"), attrs, 60, ka, Cidr6.parse("fc00:10:0:9::/64")),
        undefined,
      );
      assert.equal(await s.create(Cidr.parse("10.10.2.0/24"), attrs, 60, ka), undefined);
      await assert.rejects(
        manager(s, cfg, "172.30.5.3", v6attrs(3)).acquire(leases, undefined, 1),
        NetworkFullError,
      );
      // get and remove find a lease by its v4 subnet, whatever its key
      assert.equal(
        (await s.get(Cidr.parse("10.10.2.0/24")))?.attrs.publicIp,
        parseIp("172.30.5.2"),
      );
      assert.equal(await s.remove(Cidr.parse("10.10.2.0/24")), true);
      assert.equal(etcd.get(flannelKey), undefined);
      assert.equal(await s.remove(Cidr.parse("10.10.2.0/24")), false);
    });

    it("moves a node's v4-only lease to the dual-stack key, keeping its v4 subnet; a watcher sees delete then put", async function () {
      const prefix = "/test/dual-rollout";
      const text4 = JSON.stringify({ Network: "10.10.0.0/16" });
      etcd.put(`${prefix}/config`, text4);
      const s = store(prefix);
      const me = "172.30.6.1";
      const first = await manager(s, parseNetworkConfig(text4, "c"), me).acquire([], undefined);
      held.push(first);
      assert.equal(first.lease.subnet6, undefined);
      const oldKey = keyOf(prefix, first.lease);
      const events: LeaseEvent[] = [];
      const w = await s.watch(
        String(etcd.revision() + 1),
        (e) => events.push(e),
        () => {},
        () => {},
      );
      // The network becomes dual-stack; the node restarts with an IPv6 address.
      const cfg = dualConfig(prefix);
      const again = await manager(s, cfg, me, v6attrs(1)).acquire(
        (await s.list()).leases,
        undefined,
      );
      held.push(again);
      assert.ok(again.lease.subnet.equals(first.lease.subnet), "same v4 subnet");
      assert.ok(again.lease.subnet6, "and a v6 one");
      const stored = etcd.list(`${prefix}/subnets/`);
      assert.deepEqual([...stored.keys()], [keyOf(prefix, again.lease)]);
      assert.notEqual(
        stored.get(keyOf(prefix, again.lease))!.lease,
        "0",
        "still bound to an etcd lease",
      );
      await waitFor("delete and put", () => events.filter((e) => e.type !== "config").length >= 2);
      const [del, put] = events.filter((e) => e.type !== "config");
      assert.equal(del?.type, "delete");
      assert.equal(put?.type, "put");
      assert.equal(
        del?.type === "delete" && del.revision,
        again.lease.modRevision,
        "one transaction: the delete is at our own write's revision",
      );
      assert.ok(put?.type === "put" && put.lease.subnet6?.equals(again.lease.subnet6!));
      await w.close();
      // Renewal keeps both: the held lease is the dual-stack key's
      assert.ok(oldKey !== keyOf(prefix, again.lease));

      // And back: the network is v4-only again; the v6 half goes, the v4 subnet stays.
      const back = await manager(s, parseNetworkConfig(text4, "c"), me).acquire(
        (await s.list()).leases,
        undefined,
      );
      held.push(back);
      assert.ok(back.lease.subnet.equals(first.lease.subnet));
      assert.equal(back.lease.subnet6, undefined);
      assert.deepEqual([...etcd.list(`${prefix}/subnets/`).keys()], [oldKey]);
    });

    it("keeps a dual-stack reservation lease-less and fills in its v6 half", async function () {
      const prefix = "/test/dual-reserve";
      const cfg = dualConfig(prefix);
      const s = store(prefix);
      await s.reserve(Cidr.parse("10.10.7.0/24"), {
        publicIp: parseIp("172.30.7.1"),
        backendType: "vxlan",
        vni: 1,
      });
      const h = await manager(s, cfg, "172.30.7.1", v6attrs(7)).acquire(
        (await s.list()).leases,
        undefined,
      );
      held.push(h);
      assert.equal(h.keepalive, undefined);
      assert.equal(h.lease.subnet.toString(), "10.10.7.0/24");
      const stored = etcd.list(`${prefix}/subnets/`);
      assert.deepEqual([...stored.keys()], [keyOf(prefix, h.lease)]);
      assert.equal(stored.get(keyOf(prefix, h.lease))!.lease, "0", "still a reservation");
      // reserve() again replaces the dual-stack key rather than adding a second
      const l = (await s.list()).leases[0] as Lease;
      await s.reserve(l.subnet, l.attrs, l.subnet6);
      assert.equal(etcd.list(`${prefix}/subnets/`).size, 1);
      await s.reserve(l.subnet, l.attrs);
      assert.deepEqual([...etcd.list(`${prefix}/subnets/`).keys()], [leaseKey(prefix, l.subnet)]);
    });
  });
});
