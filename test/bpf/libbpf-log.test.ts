// libbpf's own messages: routed through one sink (the agent's logger), and
// silent for probes whose failure is the answer (tc query on a device with
// no clsact qdisc, which the kernel explains through extack).
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { libbpf, setLibbpfSink, type LibbpfLevel } from "../../agent/bpf/libbpf";
import { BpfError } from "../../agent/errors";
import { requireEnv } from "../lib/require";
import { inNs, sh, shStatus } from "../lib/sh";

describe("bpf: libbpf's messages", function () {
  const ns = `ovl${randomBytes(3).toString("hex")}-lp`;
  let made = false;

  before(function () {
    requireEnv(this, { root: true, tools: ["ip"] });
    sh(["ip", "netns", "add", ns]);
    made = true;
    sh(inNs(ns, ["ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1"]));
    sh(inNs(ns, ["ip", "link", "set", "d0", "up"]));
  });

  after(function () {
    setLibbpfSink(undefined);
    if (made) sh(["ip", "netns", "del", ns], { allowFail: true });
  });

  it("go to the sink that is set, with libbpf's level, instead of stderr", function () {
    const got: [LibbpfLevel, string][] = [];
    setLibbpfSink((level, msg) => got.push([level, msg]));
    const path = `/nonexistent-${randomBytes(4).toString("hex")}.bpf.o`;
    assert.throws(() => libbpf.openObject(path), BpfError);
    setLibbpfSink(undefined);
    const warn = got.find(([l, m]) => l === "warn" && m.includes(path));
    assert.ok(warn, `a warning naming ${path}; got ${JSON.stringify(got)}`);
    assert.doesNotMatch(warn[1], /\n$/, "one line, no trailing newline");
  });

  it("a tc probe on a device without clsact answers 'none' and prints nothing", function () {
    const helper = `${__dirname}/../lib/node-helper.js`;
    const r = shStatus(inNs(ns, ["node", helper, "tc-probe", "d0"]));
    assert.equal(r.status, 0, r.stderr);
    assert.deepEqual(JSON.parse(r.stdout), { query: 0, detached: false });
    assert.equal(r.stderr, "", "no libbpf noise on stderr");
    // The same child does print libbpf's real warnings to stderr by default.
    const w = shStatus(
      inNs(ns, [
        "node",
        "-e",
        `try{require(${JSON.stringify(`${__dirname}/../../agent/bpf/libbpf.js`)}).libbpf.openObject("/nonexistent.o")}catch{}`,
      ]),
    );
    assert.match(w.stderr, /^libbpf: .*\/nonexistent\.o/m);
  });
});
