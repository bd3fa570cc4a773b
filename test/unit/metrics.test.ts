// Scrape-time datapath metrics: each scrape reads the maps once, whichever
// metric is collected first, and a source that fails yields no samples
// rather than a failed scrape.
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import {
  AgentMetrics,
  checkMetricsPeers,
  topPeers,
  type DatapathSource,
} from "../../metrics/metrics";
import { M } from "../../metrics/names";
import { type DatapathStats } from "../../agent/bpf/stats";
import { type PeerCounters } from "../../agent/bpf/codec";
import { parseIp, type Ip4 } from "../../agent/net/ip";

class FakeSource implements DatapathSource {
  statsReads = 0;
  peerReads = 0;
  packets = 10n;
  fail = false;
  stats(): DatapathStats {
    this.statsReads++;
    if (this.fail) throw new Error("map gone");
    return {
      traffic: new Map([
        ["tx", { packets: this.packets, bytes: this.packets * 100n }],
        ["rx", { packets: 1n, bytes: 100n }],
      ]),
      drops: [
        { direction: "rx", reason: "no_lease", packets: 3n, bytes: 300n },
        { direction: "rx", reason: "unspec", packets: 0n, bytes: 0n },
      ],
      suppressed: { drop: 4n, trace: 0n },
    };
  }
  peers(): Map<Ip4, PeerCounters> {
    this.peerReads++;
    if (this.fail) throw new Error("map gone");
    return new Map([
      [parseIp("172.31.0.2"), { txPackets: 5n, txBytes: 500n, rxPackets: 6n, rxBytes: 600n }],
    ]);
  }
  entries(): number {
    return 4;
  }
}

const tick = () => new Promise((r) => setImmediate(r));

describe("unit: scrape-time metrics", function () {
  let reg: Registry;
  let src: FakeSource;

  beforeEach(function () {
    reg = new Registry();
    src = new FakeSource();
    new AgentMetrics(reg, { version: "t", commit: "c", abi: "a", libbpf: "1.1" }).setSource(src);
  });

  it("reads the stats and peer maps once per scrape, and afresh the next scrape", async function () {
    let text = await reg.metrics();
    assert.equal(src.statsReads, 1);
    assert.equal(src.peerReads, 1);
    assert.match(text, new RegExp(`^${M.packets}\\{direction="tx"\\} 10$`, "m"));
    assert.match(text, new RegExp(`^${M.bytes}\\{direction="tx"\\} 1000$`, "m"));
    assert.match(text, new RegExp(`^${M.drops}\\{reason="no_lease",direction="rx"\\} 3$`, "m"));
    assert.doesNotMatch(text, /reason="unspec"/);
    assert.match(text, new RegExp(`^${M.peerRxBytes}\\{peer="172.31.0.2"\\} 600$`, "m"));
    assert.match(text, new RegExp(`^${M.mapEntries} 4$`, "m"));
    await tick();
    src.packets = 25n;
    text = await reg.metrics();
    assert.equal(src.statsReads, 2);
    assert.match(text, new RegExp(`^${M.packets}\\{direction="tx"\\} 25$`, "m"));
  });

  it("does not depend on which metric is collected first", async function () {
    await reg.metrics();
    await tick();
    src.packets = 99n;
    // Only the bytes counter, without the packets counter before it.
    const bytes = await reg.getSingleMetric(M.bytes)!.get();
    const tx = bytes.values.find((v) => v.labels.direction === "tx");
    assert.equal(tx?.value, 9900);
  });

  it("a failing source gives no datapath samples, and the scrape still succeeds", async function () {
    src.fail = true;
    const text = await reg.metrics();
    assert.doesNotMatch(text, new RegExp(`^${M.packets}\\{`, "m"));
    assert.match(text, new RegExp(`^${M.ready} 0$`, "m"));
  });
});

describe("unit: per-peer series are bounded", function () {
  const peer = (n: number): PeerCounters => ({
    txPackets: BigInt(n),
    txBytes: BigInt(n * 100),
    rxPackets: 1n,
    rxBytes: 100n,
  });
  /** n peers; peer i has sent i * 100 bytes. */
  class ManyPeers extends FakeSource {
    constructor(readonly n: number) {
      super();
    }
    override peers(): Map<Ip4, PeerCounters> {
      return new Map(Array.from({ length: this.n }, (_, i) => [0xac100000 + i, peer(i)]));
    }
  }
  const series = (text: string) => text.split("\n").filter((l) => l && !l.startsWith("#"));

  it("topPeers keeps the busiest n and sums the rest", function () {
    const peers = new Map<Ip4, PeerCounters>([
      [1, peer(5)],
      [2, peer(50)],
      [3, peer(7)],
      [4, peer(50)], // tie with 2: the lower address first
      [5, peer(1)],
    ]);
    const t = topPeers(peers, 2);
    assert.deepEqual(
      t.top.map(([ip]) => ip),
      [2, 4],
    );
    assert.deepEqual(t.other, [13, 1300, 3, 300]);
    assert.equal(topPeers(peers, 0).top.length, 0);
    assert.equal(topPeers(peers, 0).other?.[0], 113);
    assert.equal(topPeers(peers, -1).top.length, 5);
    assert.equal(topPeers(peers, -1).other, undefined);
    assert.equal(topPeers(peers, 10).top.length, 5);
  });

  it("65,536 peers give 4 x (10 + 1) peer series by default, fewer than 300 in all, and the sums add up", async function () {
    const reg = new Registry();
    const src = new ManyPeers(65536);
    new AgentMetrics(reg, { version: "t", commit: "c", abi: "a", libbpf: "1.1" }).setSource(src);
    const text = await reg.metrics();
    const peerLines = series(text).filter((l) => l.startsWith("overlay_peer_"));
    assert.equal(peerLines.length, 4 * 11);
    assert.ok(series(text).length < 300, `${series(text).length} series in all`);
    assert.match(text, /^overlay_peer_tx_bytes_total\{peer="172.16.255.255"\} 6553500$/m);
    // Peers 0..65525 summed: 100 * (0 + ... + 65525)
    const other = (100 * 65525 * 65526) / 2;
    assert.match(text, new RegExp(`^overlay_peer_tx_bytes_total\\{peer="other"\\} ${other}$`, "m"));
  });

  it("a source that streams its peers (eachPeer, as the BPF map does) gives the same series", async function () {
    class Streaming extends ManyPeers {
      eachPeer(fn: (ip: Ip4, c: Float64Array) => void): void {
        const c = new Float64Array(4);
        for (const [ip, p] of this.peers()) {
          c.set([Number(p.txPackets), Number(p.txBytes), Number(p.rxPackets), Number(p.rxBytes)]);
          fn(ip, c); // one array reused, as the map's reader does
        }
      }
    }
    const text = async (src: DatapathSource) => {
      const reg = new Registry();
      new AgentMetrics(reg, { version: "t", commit: "c", abi: "a", libbpf: "1.1" }).setSource(src);
      return series(await reg.metrics()).filter((l) => l.startsWith("overlay_peer_"));
    };
    const streamed = await text(new Streaming(5000));
    assert.equal(streamed.length, 44);
    assert.deepEqual(streamed, await text(new ManyPeers(5000)));
  });

  it("--metrics-peers -1 gives every peer its series; bad values are refused by name", async function () {
    const reg = new Registry();
    new AgentMetrics(
      reg,
      { version: "t", commit: "c", abi: "a", libbpf: "1.1" },
      { peers: -1 },
    ).setSource(new ManyPeers(50));
    const text = await reg.metrics();
    assert.equal(series(text).filter((l) => l.startsWith("overlay_peer_")).length, 200);
    assert.doesNotMatch(text, /peer="other"/);
    assert.throws(() => checkMetricsPeers(-2), /--metrics-peers: must be a whole number >= -1/);
    assert.throws(() => checkMetricsPeers(1.5), /--metrics-peers/);
    assert.equal(checkMetricsPeers(0), 0);
  });
});
