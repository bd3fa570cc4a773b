import assert from "node:assert/strict";
import {
  allowedOutageMs,
  STRICT_FLAP,
  allowedLoss,
  EVENT_TYPES,
  FLAP_SLACK_MS,
  initialDecap,
  INVALID_CONFIGS,
  judge,
  markdown,
  pauses,
  Schedule,
  STEADY,
  VALID_CONFIGS,
  windowOf,
  type ChaosEvent,
  type EventRecord,
} from "../chaos/plan";
import { parseNetworkConfig } from "../../agent/control/config";

function rec(ev: ChaosEvent, start: number, end: number): EventRecord {
  return {
    ev,
    start,
    done: start + 10,
    converged: start + 30,
    ready: start + 50,
    end,
    failures: [],
  };
}

describe("chaos soak plan", function () {
  it("a link flap may cost its own node's pairs the flap plus slack, others nothing (strict) or what an allowance says", function () {
    const ev = { type: "link-flap" as const, node: 2, flapMs: 1000, gapMs: 500 };
    assert.equal(allowedOutageMs(ev, { from: 0, to: 2 }), 1000 + STRICT_FLAP.slackMs);
    assert.equal(allowedOutageMs(ev, { from: 0, to: 1 }), 0);
    const ci = { slackMs: 1500, otherPairsMs: 500 };
    assert.equal(allowedOutageMs(ev, { from: 2, to: 3 }, ci), 2500);
    assert.equal(allowedOutageMs(ev, { from: 0, to: 1 }, ci), 500);
    assert.equal(
      allowedOutageMs({ type: "agent-sigkill" as never, node: 2 } as never, { from: 0, to: 2 }, ci),
      0,
    );
  });

  it("draws the same schedule from the same seed, and another from another", function () {
    const draw = (seed: number) => {
      const s = new Schedule(seed, { nodes: 4, members: 3 });
      return Array.from({ length: 40 }, () => s.next());
    };
    assert.deepEqual(draw(7), draw(7));
    assert.notDeepEqual(draw(7), draw(8));
  });

  it("covers every event type within its first events (one of each), whatever the seed", function () {
    for (let seed = 0; seed < 200; seed++) {
      const s = new Schedule(seed, { nodes: 4, members: 3 });
      const seen = new Set(Array.from({ length: EVENT_TYPES.length }, () => s.next().type));
      assert.deepEqual([...seen].sort(), [...EVENT_TYPES].sort(), `seed ${seed}`);
    }
  });

  it("starts half the nodes on each decap mechanism and switches a node's", function () {
    assert.deepEqual([0, 1, 2, 3].map(initialDecap), ["tc", "xdp", "tc", "xdp"]);
    const s = new Schedule(3, { nodes: 4, members: 3 });
    const switches = Array.from({ length: 300 }, () => s.next()).filter(
      (e) => e.type === "decap-switch",
    );
    assert.ok(switches.length > 5, `${switches.length} switches in 300 events`);
    for (const e of switches) assert.ok(e.node !== undefined && e.node >= 0 && e.node < 4);
    assert.equal(new Set(switches.map((e) => e.node)).size, 4, "every node is switched");
  });

  it("never has two etcd members down, and restarts the one that is", function () {
    for (let seed = 0; seed < 50; seed++) {
      const s = new Schedule(seed, { nodes: 4, members: 3 });
      let down: number | undefined;
      for (let i = 0; i < 300; i++) {
        const ev = s.next();
        if (ev.type === "etcd-kill") {
          assert.equal(down, undefined, `seed ${seed} event ${i}: a second member killed`);
          down = ev.member;
        } else if (ev.type === "etcd-restart") {
          assert.equal(ev.member, down, `seed ${seed} event ${i}: restarts a member that runs`);
          down = undefined;
        }
        if (ev.node !== undefined) assert.ok(ev.node >= 0 && ev.node < 4);
        if (ev.from !== undefined) assert.notEqual(ev.from, ev.node, "a flood from the target");
      }
    }
  });

  it("has config variants that the agent's own rules accept and refuse as stated", function () {
    for (const t of VALID_CONFIGS) parseNetworkConfig(t, "/k");
    // The "… changed" variants are valid configs that need a restart, and
    // the deleted key is reported by the store: both are checked end to end.
    for (const v of INVALID_CONFIGS.filter(
      (x) => x.text && !/changed; restart/.test(String(x.says)),
    ))
      assert.throws(() => parseNetworkConfig(v.text, "/k"), v.says);
  });

  it("allows lost pings only on the flapped node's pairs, up to the flap and its slack", function () {
    const flap: ChaosEvent = { type: "link-flap", node: 2, flapMs: 1000, gapMs: 0 };
    assert.equal(allowedLoss(flap, { from: 2, to: 0 }, 10), (1000 + FLAP_SLACK_MS) / 10);
    assert.equal(allowedLoss(flap, { from: 1, to: 2 }, 10), (1000 + FLAP_SLACK_MS) / 10);
    assert.equal(allowedLoss(flap, { from: 0, to: 1 }, 10), 0);
    for (const type of [
      "agent-sigkill",
      "agent-sigterm",
      "hostile-flood",
      "lease-churn",
      "lease-delete",
    ] as const)
      assert.equal(allowedLoss({ type, node: 2, gapMs: 0 }, { from: 2, to: 0 }, 10), 0, type);
  });

  it("finds the window a time falls in, or none", function () {
    const evs = [
      rec({ type: "etcd-kill", gapMs: 0 }, 100, 200),
      rec({ type: "config-valid", gapMs: 0 }, 300, 400),
    ];
    assert.equal(windowOf(evs, 99), -1);
    assert.equal(windowOf(evs, 100), 0);
    assert.equal(windowOf(evs, 250), -1);
    assert.equal(windowOf(evs, 399), 1);
    assert.equal(windowOf(evs, 400), -1);
  });

  it("measures pauses as runs of empty receiver intervals", function () {
    const iv = [5, 0, 0, 3, 0, 4, 0, 0, 0].map((bytes, i) => ({ at: 1000 + i * 100, bytes }));
    assert.deepEqual(pauses(iv), [
      { at: 1100, ms: 200 },
      { at: 1400, ms: 100 },
      { at: 1600, ms: 300 },
    ]);
    assert.deepEqual(pauses([{ at: 1, bytes: 1 }]), []);
  });

  it("charges each lost ping to its event and fails what exceeds the allowance", function () {
    const kill = rec({ type: "agent-sigkill", node: 0, signal: "SIGKILL", gapMs: 0 }, 1000, 2000);
    const flap = rec({ type: "link-flap", node: 1, flapMs: 100, gapMs: 0 }, 3000, 4000);
    const lost = (ts: number[]) => ts.map((at) => ({ at }));
    const v = judge(
      [kill, flap],
      [
        // Across the flapped node: 10 lost, allowed (100 + 250) / 10 = 35.
        {
          pair: { from: 0, to: 1 },
          lost: lost([3000, 3010, 3020, 3030, 3040, 3050, 3060, 3070, 3080, 3090]),
        },
        // Not across it: one lost is one too many; and one in steady state.
        { pair: { from: 2, to: 3 }, lost: lost([3500, 2500]) },
        // During the agent kill: one too many.
        { pair: { from: 3, to: 0 }, lost: lost([1500]) },
      ],
      [[{ at: 3100, ms: 700 }], [{ at: 1200, ms: 100 }]],
      10,
    );
    assert.equal(v.failures.length, 3, v.failures.join("\n"));
    assert.match(
      v.failures.join("\n"),
      /event 1 \(link-flap node 1\): pings node 2 -> node 3 lost 1, allowed 0/,
    );
    assert.match(
      v.failures.join("\n"),
      /event 0 \(agent-sigkill node 0\): pings node 3 -> node 0 lost 1, allowed 0/,
    );
    assert.match(v.failures.join("\n"), /steady: pings node 2 -> node 3 lost 1, allowed 0/);
    const by = new Map(v.perType.map((t) => [t.type, t]));
    assert.equal(by.get("link-flap")?.pingsLost, 11);
    assert.equal(by.get("link-flap")?.maxLostOnePair, 10);
    assert.equal(by.get("link-flap")?.maxOutageMs, 100);
    assert.equal(by.get("link-flap")?.maxBeyondFlapMs, 0, "no longer than the 100 ms flap");
    assert.equal(by.get("link-flap")?.maxPauseMs, 700);
    assert.equal(by.get("agent-sigkill")?.maxPauseMs, 100);
    assert.equal(by.get("agent-sigkill")?.convergenceMsMax, 20);
    assert.equal(by.get(STEADY)?.pingsLost, 1);
    assert.equal(by.has("lease-churn"), false, "types that did not happen are left out");
    const md = markdown(v.perType);
    assert.match(md, /^\| event \| count \| pings lost/);
    assert.match(md, /\| link-flap \| 1 \| 11 \| 10 \| 100 \| [^|]+ \| 0 \| 700 \|/);
  });

  it("fails a flap whose pings stay unanswered longer than the flap and its slack", function () {
    const flap = rec({ type: "link-flap", node: 1, flapMs: 100, gapMs: 0 }, 0, 5000);
    // Two lost, far apart: few pings, but 1,010 ms without an answer.
    const v = judge(
      [flap],
      [{ pair: { from: 1, to: 0 }, lost: [{ at: 10 }, { at: 1010 }] }],
      [],
      10,
    );
    assert.match(v.failures.join("\n"), /unanswered for 1010 ms, allowed 350 ms/);
    assert.equal(v.perType[0]?.maxBeyondFlapMs, 910, "1,010 ms for a 100 ms flap");
  });

  it("flap-held-longer-than-planned: allows what the link was held down, not the plan", function () {
    // Planned 100 ms; `ip link` under load held it 1,000 ms. 1,000 ms unanswered
    // is the flap itself (allowed 1,000 + 250), and nothing past it.
    const flap = {
      ...rec({ type: "link-flap", node: 1, flapMs: 100, gapMs: 0 }, 0, 5000),
      heldMs: 1000,
    };
    const v = judge(
      [flap],
      [{ pair: { from: 1, to: 0 }, lost: [{ at: 10 }, { at: 1000 }] }],
      [],
      10,
    );
    assert.deepEqual(v.failures, []);
    assert.equal(v.perType[0]?.maxBeyondFlapMs, 0, "no longer than the link was down");
    // Held 1,000 ms, unanswered 1,500: past the flap's slack, a failure.
    const late = judge(
      [flap],
      [{ pair: { from: 1, to: 0 }, lost: [{ at: 10 }, { at: 1500 }] }],
      [],
      10,
    );
    assert.match(late.failures.join("\n"), /unanswered for 1500 ms, allowed 1250 ms/);
  });

  it("passes a run whose only losses are within their allowances", function () {
    const flap = rec({ type: "link-flap", node: 1, flapMs: 300, gapMs: 0 }, 0, 5000);
    const v = judge([flap], [{ pair: { from: 1, to: 0 }, lost: [{ at: 10 }, { at: 20 }] }], [], 10);
    assert.deepEqual(v.failures, []);
  });
});
