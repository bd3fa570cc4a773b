// SubnetHostMap on the real maps (loaded by the agent's loader on a bpffs
// this run mounts): a subnet that moves to another host leaves no peer
// behind (else lease churn fills ovl_peers), one write or a batch, and the
// entry count /metrics reads stays exact without listing the trie.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { checkPinnedMaps, Datapath } from "../../agent/bpf/datapath";
import { BpfMap } from "../../agent/bpf/map";
import { SubnetHostMap } from "../../agent/bpf/subnet-map";
import { decodeIp, F_LOCAL } from "../../agent/bpf/codec";
import { Cidr, formatIp, parseIp } from "../../agent/net/ip";
import { requireEnv } from "../lib/require";
import { sh } from "../lib/sh";

describe("bpf: subnet map bookkeeping", function () {
  let dir = "";
  let dp: Datapath;
  let m: SubnetHostMap;
  let peers: BpfMap;
  let stats: BpfMap;

  before(function () {
    requireEnv(this, { root: true, tools: ["mount", "bpftool"] });
    dir = mkdtempSync("/run/overlayd-bpftest-");
    sh(["mount", "-t", "bpf", "bpf", dir]);
    dp = new Datapath({
      pinPath: join(dir, "pins"),
      objDir: join(__dirname, "../../../build/bpf"),
      vni: 1,
      port: 8472,
      localIp: parseIp("172.31.0.1"),
      underlay: { name: "lo", ifindex: 1, mac: "02:00:00:00:0f:01" },
      overlay: { name: "lo", ifindex: 1, mac: "0e:00:00:00:01:01" },
      decap: "tc",
      kernelDecap: false,
    });
    dp.load();
    m = SubnetHostMap.openPinned(join(dir, "pins"));
    peers = BpfMap.openPinned(join(dir, "pins"), "ovl_peers");
    stats = BpfMap.openPinned(join(dir, "pins"), "ovl_peer_stats");
  });

  after(function () {
    m?.close();
    peers?.close();
    stats?.close();
    dp?.close();
    if (dir) {
      sh(["umount", dir], { allowFail: true });
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const peerIps = (b: BpfMap) =>
    b
      .entries()
      .map(([k]) => formatIp(decodeIp(k)))
      .sort();
  const entry = (ip: string) => ({ remoteIp: parseIp(ip), vtepMac: "0e:00:00:00:00:02", flags: 0 });
  /** n subnets 10.7.i.0/24, subnet i on host 172.20.<gen>.<i>. */
  const batch = (n: number, gen: number) =>
    Array.from({ length: n }, (_, i) => ({
      subnet: Cidr.of((0x0a070000 + i * 256) >>> 0, 24),
      host: entry(`172.20.${gen}.${i}`),
    }));

  const key = (ip: number) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(ip >>> 0);
    return b;
  };
  /** Counters as the data path makes them with a host's first packet. */
  const traffic = (ip: number, txPackets: number) => {
    const v = Buffer.alloc(stats.valueBufSize);
    v.writeUInt32LE(txPackets, 0); // cpu 0's tx_packets (low half)
    stats.update(key(ip), v);
  };

  it("a subnet that moves to another host takes its old peer (and counters) out", function () {
    assert.equal(m.count(), 0);
    m.upsert(Cidr.parse("10.5.1.0/24"), { ...entry("172.31.0.1"), flags: F_LOCAL });
    m.upsert(Cidr.parse("10.5.2.0/24"), entry("172.31.0.2"));
    assert.deepEqual(peerIps(stats), [], "the agent makes no counters: traffic does");
    traffic(parseIp("172.31.0.2"), 5);
    m.upsert(Cidr.parse("10.5.2.0/24"), entry("172.31.0.3")); // moved
    assert.deepEqual(peerIps(peers), ["172.31.0.3"]);
    assert.deepEqual(peerIps(stats), [], "the old host's counters went with its peer");
    assert.equal(m.count(), 2);
    traffic(parseIp("172.31.0.2"), 1); // a packet in flight as it went
    assert.equal(m.departing, 1);
    assert.equal(m.sweepDeparted(), 1, "made again, swept");
    assert.deepEqual(peerIps(stats), []);
    assert.equal(m.departing, 0);
    traffic(parseIp("172.31.0.3"), 1);
    m.delete(Cidr.parse("10.5.2.0/24"));
    assert.deepEqual(peerIps(peers), []);
    assert.deepEqual(peerIps(stats), []);
    assert.equal(m.count(), 1);
  });

  it("the same in a batch: 200 subnets moved at once leave 200 peers, not 400; the count stays exact", function () {
    m.upsertMany(batch(200, 1));
    assert.equal(peers.entries().length, 200);
    for (let i = 0; i < 200; i += 7) traffic(parseIp(`172.20.1.${i}`), 1);
    m.upsertMany(batch(200, 2));
    const ips = peerIps(peers);
    assert.equal(ips.length, 200);
    assert.ok(ips.every((ip) => ip.startsWith("172.20.2.")));
    assert.deepEqual(peerIps(stats), [], "the moved-off hosts' counters went");
    assert.equal(m.count(), 201, "count kept by the writes");
    assert.equal(m.list().length, 201, "and equal to a listing");
    const writes = m.writes;
    m.upsertMany(batch(200, 2)); // unchanged values: still written (the plan decides what to write)
    assert.equal(m.writes, writes + 200);
  });

  it("upsertManyAsync: the two maps written side by side, in groups, hold what upsertMany would", async function () {
    const n = 20000; // three groups of 8,192, a LOCAL entry in the second
    const es = Array.from({ length: n }, (_, i) => ({
      subnet: Cidr.of((0x14000000 + i * 256) >>> 0, 24),
      host:
        i === 9000
          ? { remoteIp: parseIp("172.31.0.1"), vtepMac: "0e:00:00:00:01:01", flags: F_LOCAL }
          : { remoteIp: (0xac180000 + i) >>> 0, vtepMac: "0e:00:00:00:00:04", flags: 0 },
    }));
    const count = m.count();
    const writes = m.writes;
    await m.upsertManyAsync(es);
    assert.equal(m.writes, writes + n);
    assert.equal(m.count(), count + n, "count kept by the writes");
    const listed = new Map(m.list().map((e) => [e.subnet.toString(), e.host]));
    const peerOf = new Map(peers.entries().map(([k, v]) => [decodeIp(k), v.readUInt32BE(0)]));
    for (const e of es) {
      assert.deepEqual(listed.get(e.subnet.toString()), e.host, e.subnet.toString());
      if (e.host.flags & F_LOCAL) continue;
      assert.equal(peerOf.get(e.host.remoteIp), e.subnet.addr, `peer ${formatIp(e.host.remoteIp)}`);
    }
    assert.equal(peerOf.has(parseIp("172.31.0.1")), false, "no peer for the LOCAL entry");
    assert.equal(stats.entries().length, 0, "and no counters written");
  });

  it("a big batch (a full sync): counters of hosts that keep a subnet stay, those of hosts that lose one go, and a prune drops counters of hosts that are no peer", function () {
    const n = 5000;
    /** subnet 10.8.x.0/24 on host 172.21.<i / 256>.<i % 256> */
    const big = (count: number, hostOf: (i: number) => number = (i) => 0xac150000 + i) =>
      Array.from({ length: count }, (_, i) => ({
        subnet: Cidr.of((0x0a080000 + i * 256) >>> 0, 24),
        host: { remoteIp: hostOf(i) >>> 0, vtepMac: "0e:00:00:00:00:03", flags: 0 },
      }));
    m.upsertMany(big(n));
    const h0 = 0xac150000;
    const h1 = 0xac150001;
    const h2 = 0xac150002;
    traffic(h0, 7);
    traffic(h1, 8);
    traffic(h2, 9);
    // the same 5,000 again, 100 more, and subnet 0 moves onto subnet 1's
    // host (an entry before the one that moves subnet 1 away from it)
    const again = big(n + 100, (i) => (i === 0 ? h1 : i === 1 ? 0xac16ffff : 0xac150000 + i));
    m.upsertMany(again);
    assert.deepEqual(
      peerIps(stats),
      [formatIp(h2)],
      "host 2 keeps its counters; hosts 0 and 1 lost their subnets (host 1 took another: it starts again)",
    );
    assert.equal(stats.lookup(key(h2))?.readUInt32LE(0), 9);
    assert.equal(peers.lookup(key(h1))?.readUInt32BE(0), 0x0a080000, "host 1 now holds subnet 0");
    assert.equal(peers.lookup(key(h0)), undefined, "host 0 holds nothing");
    // A packet in flight as host 0 went made its counters again; host 1's
    // first packet since made new ones.
    traffic(h0, 1);
    traffic(h1, 1);
    assert.equal(m.pruneCounters(), 1, "one entry pruned");
    assert.deepEqual(peerIps(stats), [formatIp(h1), formatIp(h2)].sort());
    assert.equal(m.pruneCounters(), 0, "and nothing the second time");
  });

  it("an older build's preallocated counters are not this build's: checkPinnedMaps names the map and its flags", function () {
    checkPinnedMaps(join(dir, "pins")); // this build's own pins pass
    const old = join(dir, "older");
    mkdirSync(old);
    const path = join(old, "ovl_peer_stats");
    sh([
      "bpftool",
      "map",
      "create",
      path,
      "type",
      "percpu_hash",
      "key",
      "4",
      "value",
      "32",
      "entries",
      "65536",
      "name",
      "ovl_peer_stats",
    ]);
    assert.throws(
      () => checkPinnedMaps(old),
      /map ovl_peer_stats at .* does not match this overlayd's ABI \(flags 0 != 1\)/,
    );
    rmSync(path);
  });
});
