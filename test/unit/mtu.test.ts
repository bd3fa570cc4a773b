import assert from "node:assert/strict";
import { overlayMtu } from "../../agent/node/node-setup";
import { ENCAP_OVERHEAD } from "../../agent/bpf/codec";

describe("unit: MTU math", function () {
  it("leaves room for outer IPv4 + UDP + VXLAN + inner Ethernet (50 bytes)", function () {
    assert.equal(ENCAP_OVERHEAD, 20 + 8 + 8 + 14);
    assert.equal(overlayMtu(1500), 1450);
    assert.equal(overlayMtu(9001), 8951);
  });
});
