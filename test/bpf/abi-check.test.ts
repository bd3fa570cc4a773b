// The loader refuses pinned maps left by an incompatible build, naming the map.
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { Datapath } from "../../agent/bpf/datapath";
import { AbiMismatchError } from "../../agent/errors";
import { requireEnv } from "../lib/require";
import { sh } from "../lib/sh";

describe("bpf: ABI check of pinned maps", function () {
  let dir = "";

  before(function () {
    requireEnv(this, { root: true, tools: ["bpftool", "mount"] });
    dir = mkdtempSync("/run/overlayd-abitest-");
    sh(["mount", "-t", "bpf", "bpf", dir]);
  });

  after(function () {
    if (!dir) return;
    sh(["umount", dir], { allowFail: true });
    rmSync(dir, { recursive: true, force: true });
  });

  it("refuses a pinned ovl_subnets whose value size differs, and names it", function () {
    const pins = join(dir, "pins");
    mkdirSync(pins);
    // What an older build with a 16-byte value would have left behind.
    sh([
      "bpftool",
      "map",
      "create",
      join(pins, "ovl_subnets"),
      "type",
      "lpm_trie",
      "key",
      "8",
      "value",
      "16",
      "entries",
      "65536",
      "name",
      "ovl_subnets",
      "flags",
      "1",
    ]);
    const dp = new Datapath({
      pinPath: pins,
      objDir: join(__dirname, "../../../build/bpf"),
      vni: 1,
      port: 8472,
      localIp: 0x01020304,
      underlay: { name: "lo", ifindex: 1, mac: "02:00:00:00:00:01" },
      overlay: { name: "lo", ifindex: 1, mac: "02:00:00:00:00:02" },
      decap: "tc",
      kernelDecap: false,
    });
    assert.throws(
      () => dp.load(),
      (e: unknown) =>
        e instanceof AbiMismatchError &&
        /^map ovl_subnets at .*\/ovl_subnets does not match this overlayd's ABI \(value size 16 != 12\)/.test(
          e.message,
        ),
    );
    dp.close();
  });
});
