import assert from "node:assert/strict";
import { missingCaps, parseCapEff } from "../../agent/caps";

describe("unit: capabilities", function () {
  it("reads CapEff and names what is missing", function () {
    const all = parseCapEff("Name:\tnode\nCapEff:\t000001ffffffffff\n");
    assert.deepEqual(
      missingCaps(all, ["CAP_BPF", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_PERFMON"]),
      [],
    );
    // CAP_NET_ADMIN (12) only
    const netAdmin = parseCapEff("CapEff:\t0000000000001000\n");
    assert.deepEqual(
      missingCaps(netAdmin, ["CAP_BPF", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_PERFMON"]),
      ["CAP_BPF", "CAP_NET_RAW", "CAP_PERFMON"],
    );
    assert.equal(parseCapEff("no such line"), 0n);
  });
});
