// SubnetHostMap on the real maps (loaded by the agent's loader on a bpffs
// this run mounts): a subnet that moves to another host leaves no peer
// behind (else lease churn fills ovl_peers), one write or a batch, and the
// entry count /metrics reads stays exact without listing the trie.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { Datapath } from "../../agent/bpf/datapath";
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
    requireEnv(this, { root: true, tools: ["mount"] });
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

  it("a subnet that moves to another host takes its old peer (and counters) out", function () {
    assert.equal(m.count(), 0);
    m.upsert(Cidr.parse("10.5.1.0/24"), { ...entry("172.31.0.1"), flags: F_LOCAL });
    m.upsert(Cidr.parse("10.5.2.0/24"), entry("172.31.0.2"));
    m.upsert(Cidr.parse("10.5.2.0/24"), entry("172.31.0.3")); // moved
    assert.deepEqual(peerIps(peers), ["172.31.0.3"]);
    assert.deepEqual(peerIps(stats), ["172.31.0.3"]);
    assert.equal(m.count(), 2);
    m.delete(Cidr.parse("10.5.2.0/24"));
    assert.deepEqual(peerIps(peers), []);
    assert.equal(m.count(), 1);
  });

  it("the same in a batch: 200 subnets moved at once leave 200 peers, not 400; the count stays exact", function () {
    m.upsertMany(batch(200, 1));
    assert.equal(peers.entries().length, 200);
    m.upsertMany(batch(200, 2));
    const ips = peerIps(peers);
    assert.equal(ips.length, 200);
    assert.ok(ips.every((ip) => ip.startsWith("172.20.2.")));
    assert.equal(peerIps(stats).length, 200);
    assert.equal(m.count(), 201, "count kept by the writes");
    assert.equal(m.list().length, 201, "and equal to a listing");
    const writes = m.writes;
    m.upsertMany(batch(200, 2)); // unchanged values: still written (the plan decides what to write)
    assert.equal(m.writes, writes + 200);
  });

  it("upsertManyAsync: the three maps written side by side, in groups, hold what upsertMany would", async function () {
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
    const counted = new Set(stats.entries().map(([k]) => decodeIp(k)));
    for (const e of es) {
      assert.deepEqual(listed.get(e.subnet.toString()), e.host, e.subnet.toString());
      if (e.host.flags & F_LOCAL) continue;
      assert.equal(peerOf.get(e.host.remoteIp), e.subnet.addr, `peer ${formatIp(e.host.remoteIp)}`);
      assert.ok(counted.has(e.host.remoteIp), `counters for ${formatIp(e.host.remoteIp)}`);
    }
    assert.equal(peerOf.has(parseIp("172.31.0.1")), false, "no peer for the LOCAL entry");
  });

  it("a big batch (a full sync): new peers get zeroed counters, existing ones keep theirs, a host one subnet leaves and another takes has counters", function () {
    const n = 5000;
    /** subnet 10.8.x.0/24 on host 172.21.<i / 256>.<i % 256> */
    const big = (count: number, hostOf: (i: number) => number = (i) => 0xac150000 + i) =>
      Array.from({ length: count }, (_, i) => ({
        subnet: Cidr.of((0x0a080000 + i * 256) >>> 0, 24),
        host: { remoteIp: hostOf(i) >>> 0, vtepMac: "0e:00:00:00:00:03", flags: 0 },
      }));
    m.upsertMany(big(n));
    const key = (ip: number) => {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(ip >>> 0);
      return b;
    };
    const h0 = 0xac150000;
    const h2 = 0xac150002;
    // traffic counted for hosts 0 and 2
    for (const [h, c] of [
      [h0, 7],
      [h2, 9],
    ]) {
      const v = Buffer.alloc(stats.valueBufSize);
      v.writeUInt32LE(c as number, 0); // cpu 0's tx_packets (low half)
      stats.update(key(h as number), v);
    }
    // the same 5,000 again, 100 more, and subnet 0 moves onto subnet 1's
    // host (an entry before the one that moves subnet 1 away from it)
    const h1 = 0xac150001;
    const again = big(n + 100, (i) => (i === 0 ? h1 : i === 1 ? 0xac16ffff : 0xac150000 + i));
    m.upsertMany(again);
    const have = new Set(peerIps(stats));
    for (const e of again)
      assert.ok(have.has(formatIp(e.host.remoteIp)), formatIp(e.host.remoteIp));
    assert.equal(
      [...have].filter((ip) => /^172\.2[12]\./.test(ip)).length,
      n + 100,
      "no counters left for a host nobody has",
    );
    assert.equal(stats.lookup(key(h2))?.readUInt32LE(0), 9, "host 2 keeps its counters");
    assert.equal(stats.lookup(key(0xac16ffff))?.readUInt32LE(0), 0, "a new host starts at zero");
    assert.equal(peers.lookup(key(h1))?.readUInt32BE(0), 0x0a080000, "host 1 now holds subnet 0");
    assert.equal(stats.lookup(key(h1))?.readUInt32LE(0), 0, "with counters");
    assert.equal(peers.lookup(key(h0)), undefined, "host 0 holds nothing");
    assert.equal(stats.lookup(key(h0)), undefined);
  });
});
