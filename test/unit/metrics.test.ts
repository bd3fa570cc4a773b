// Scrape-time datapath metrics: each scrape reads the maps once, whichever
// metric is collected first, and a source that fails yields no samples
// rather than a failed scrape.
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { AgentMetrics, type DatapathSource } from "../../metrics/metrics";
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
