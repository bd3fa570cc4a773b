// The chaos soak (test/chaos/soak.ts) for 60 s, with a fixed seed
// (CHAOS_SEED overrides it): every fault type at least once, against four
// real agents on a 3-member etcd with pings and iperf3 flows between every
// pair of pods. `make chaos` runs the same thing for 10 minutes.
import assert from "node:assert/strict";
import { EVENT_TYPES, STEADY, type FlapAllowance } from "../chaos/plan";
import { runSoak, RSS_LIMIT_MB, type SoakResult } from "../chaos/soak";
import { requireEnv } from "../lib/require";

const SEED = Number(process.env.CHAOS_SEED || 18);

/**
 * `make chaos` holds link flaps to the strict claim (plan.ts STRICT_FLAP) and
 * reports where it fails. This run, inside `make test` after every other
 * suite, allows what has been seen on a loaded 2-CPU machine: the flapped
 * node's pairs 1.5 s past the flap (with the underlay neighbours kept across
 * a flap, and a flap timed as the link was really down, the 10-minute run
 * stays within 70 ms; this run keeps the margin it has always had in CI,
 * where the machine is shared), other pairs 0.5 s (seen on a loaded
 * machine, not understood). A cluster-wide outage, or a flap that lasts,
 * fails.
 */
const CI_FLAP: FlapAllowance = { slackMs: 1500, otherPairsMs: 500 };

describe("e2e: chaos soak, 60 s", function () {
  this.timeout(300000);
  let r: SoakResult;

  before(async function () {
    requireEnv(this, {
      root: true,
      tools: ["etcd", "etcdctl", "ip", "ping", "iperf3", "/usr/bin/python3"],
    });
    r = await runSoak({ seconds: 60, seed: SEED, flap: CI_FLAP });
  });

  it(`injects every fault type (seed ${SEED})`, function () {
    const seen = new Set(r.events.map((e) => e.ev.type));
    assert.deepEqual(
      EVENT_TYPES.filter((t) => !seen.has(t)),
      [],
      `events: ${r.events.map((e) => e.ev.type).join(", ")}`,
    );
  });

  it("keeps every map equal to etcd, every lease in place and every agent ready after each fault", function () {
    const bad = r.events.filter((e) => e.failures.length);
    assert.deepEqual(
      bad.map((e) => `${e.ev.type} at ${e.atS} s: ${e.failures.join("; ")}`),
      [],
    );
  });

  it("breaks no TCP flow", function () {
    assert.equal(r.flows, 6);
    assert.equal(r.flowsBroken, 0);
  });

  it("loses pings only where the fault allows it: link flaps, within CI_FLAP", function () {
    assert.ok(r.pingsSent > 30000, `only ${r.pingsSent} pings sent`);
    assert.deepEqual(r.verdict.failures, []);
    for (const t of r.verdict.perType)
      if (t.type !== "link-flap") assert.equal(t.pingsLost, 0, `${t.type}: ${t.pingsLost} lost`);
    // One empty 0.1 s receiver interval is the resolution: on 2 CPUs an
    // iperf3 receiver is now and then not scheduled for that long.
    const steady = r.verdict.perType.find((t) => t.type === STEADY);
    assert.ok(
      (steady?.maxPauseMs ?? 0) <= 100,
      `a flow paused ${steady?.maxPauseMs} ms between faults`,
    );
  });

  it("keeps agent RSS, etcd's key count and its etcd leases bounded", function () {
    assert.ok(r.maxAgentRssMb > 0 && r.maxAgentRssMb < RSS_LIMIT_MB, `${r.maxAgentRssMb} MB`);
    assert.equal(r.maxEtcdKeys, r.steadyEtcdKeys, "keys left behind after a fault");
    assert.equal(r.maxEtcdLeases, r.nodes, "etcd leases left behind after a fault");
  });
});
