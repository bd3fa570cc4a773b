import assert from "node:assert/strict";
import { MAPS } from "../../agent/bpf/abi.generated";
import { planPinnedMap } from "../../agent/bpf/datapath";

describe("unit: pinned maps across an ABI change (planPinnedMap)", function () {
  const same = (name: keyof typeof MAPS) => ({ ...MAPS[name] });

  it("reuses a map of the same layout, creates one that is not pinned", function () {
    assert.equal(planPinnedMap("ovl_subnets", same("ovl_subnets")).action, "reuse");
    assert.equal(planPinnedMap("ovl_subnets", undefined).action, "new");
  });

  it("copies a map whose entries keep their layout but whose size changed", function () {
    const p = planPinnedMap("ovl_stats", { ...same("ovl_stats"), maxEntries: 2 });
    assert.deepEqual(p, { action: "copy", why: `max entries 2 -> ${MAPS.ovl_stats.maxEntries}` });
  });

  it("copies the per-peer counters of a build that preallocated them (flags 0 -> BPF_F_NO_PREALLOC)", function () {
    for (const name of ["ovl_peer_stats", "ovl_peer_stats6"] as const) {
      assert.equal(MAPS[name].flags, 1, `${name} is BPF_F_NO_PREALLOC`);
      const p = planPinnedMap(name, { ...same(name), flags: 0 });
      assert.deepEqual(p, { action: "copy", why: "flags 0 -> 1" }, name);
    }
  });

  it("recreates the maps the agent refills from etcd when their layout changed", function () {
    for (const name of ["ovl_subnets", "ovl_peers", "ovl_peer_stats"] as const) {
      const p = planPinnedMap(name, { ...same(name), valueSize: MAPS[name].valueSize + 4 });
      assert.equal(p.action, "create", name);
      assert.match(p.why, /value \d+ -> \d+ B/);
    }
  });

  it("refuses an endpoint map of another layout (only the CNI plugin knows its content)", function () {
    const p = planPinnedMap("ovl_endpoints", { ...same("ovl_endpoints"), valueSize: 24 });
    assert.equal(p.action, "refuse");
    assert.equal(p.why, "value 24 -> 16 B");
    const t = planPinnedMap("ovl_endpoints", { ...same("ovl_endpoints"), type: 2 });
    assert.equal(t.action, "refuse", "another map type is another layout");
  });
});
