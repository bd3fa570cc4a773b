import assert from "node:assert/strict";
import { PingStream } from "../lib/traffic";

// The soak's and the fault tests' ping accounting, from `ping -n -D -O`
// lines as iputils prints them.
describe("unit: PingStream's accounting of ping's output", function () {
  const t0 = Date.now() / 1000 - 60; // a minute ago: past every grace period
  const at = (ms: number) => `[${(t0 + ms / 1000).toFixed(6)}]`;

  it("ping-host-unreachable-is-lost: a request answered by an ICMP error counts as lost, once", function () {
    const p = new PingStream("ns", "10.5.2.2", 10);
    p.startedAt = t0 * 1000;
    p.feed(`${at(10.4)} 64 bytes from 10.5.2.2: icmp_seq=1 ttl=62 time=0.4 ms`);
    // Unanswered when the next left, then the error arrives seconds later.
    p.feed(`${at(30)} no answer yet for icmp_seq=2`);
    // An error that came back before the next request left: ping prints no
    // "no answer yet" for it.
    p.feed(`${at(31)} From 10.5.2.1 icmp_seq=3 Destination Host Unreachable`);
    p.feed(`${at(40.5)} 64 bytes from 10.5.2.2: icmp_seq=4 ttl=62 time=0.5 ms`);
    p.feed(`${at(3020)} From 10.5.2.1 icmp_seq=2 Destination Host Unreachable`);
    const lost = p.lost(0);
    assert.deepEqual(
      lost.map((l) => l.seq),
      [2, 3],
    );
    // seq 2 keeps the time "no answer yet" gave; seq 3's is estimated from
    // the nearest known request (seq 2, sent at 20 ms): 30 ms.
    assert.ok(Math.abs((lost[0]?.at ?? 0) - (t0 * 1000 + 20)) < 1, `seq 2 at ${lost[0]?.at}`);
    assert.ok(Math.abs((lost[1]?.at ?? 0) - (t0 * 1000 + 30)) < 1, `seq 3 at ${lost[1]?.at}`);
    assert.equal(p.errors, 2);
    assert.equal(p.sent, 4);
  });

  it("a reply after a late report is not lost, and a slow one is disrupted", function () {
    const p = new PingStream("ns", "10.5.2.2", 10);
    p.startedAt = t0 * 1000;
    p.feed(`${at(20)} no answer yet for icmp_seq=1`);
    p.feed(`${at(150)} 64 bytes from 10.5.2.2: icmp_seq=1 ttl=62 time=140 ms`);
    assert.deepEqual(p.lost(0), []);
    assert.deepEqual(
      p.disrupted(0).map((l) => l.seq),
      [1],
    );
  });
});
