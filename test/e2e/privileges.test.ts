// The agent runs with exactly CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW and CAP_PERFMON (as
// root, with everything else out of the bounding set), and without any one of
// them it refuses to start, naming the missing capability.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { AgentProc } from "../lib/agent-proc";
import { Cluster } from "../lib/cluster";
import { requireEnv } from "../lib/require";
import { waitFor } from "../lib/sh";
import { ping } from "../lib/traffic";
import { type NodeInfo } from "../lib/topology";

describe("e2e: privileges", function () {
  this.timeout(180000);
  const c = new Cluster();
  let n1: NodeInfo;
  let flags: string[] = [];

  before(async function () {
    requireEnv(this, { root: true, tools: ["etcd", "ip", "setpriv"] });
    await c.start(2);
    n1 = c.nodes[0]!;
    flags = c.agent(n1).flags;
    await c.agent(n1).stop("SIGTERM");
  });
  after(async function () {
    await c.stop();
  });

  function limited(caps: string, extraFlags: string[] = []): AgentProc {
    const a = new AgentProc(n1.ns, [...flags, ...extraFlags], c.subnetFile(n1), [
      "setpriv",
      `--bounding-set=-all,${caps}`,
      "--inh-caps=-all",
    ]);
    c.agents.set(n1.index, a);
    return a.start();
  }

  it("runs with only CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW and CAP_PERFMON", async function () {
    const a = limited("+bpf,+net_admin,+net_raw,+perfmon");
    await a.waitReady();
    const caps = /CapEff:\s*([0-9a-f]+)/.exec(readFileSync(`/proc/${a.pid}/status`, "utf8"))?.[1];
    // bits 12 (NET_ADMIN), 13 (NET_RAW), 38 (PERFMON), 39 (BPF) and nothing else
    assert.equal(
      caps,
      ((1n << 12n) | (1n << 13n) | (1n << 38n) | (1n << 39n)).toString(16).padStart(16, "0"),
    );
    assert.ok(ping(c.pod(c.nodes[1]!).ns, c.pod(n1).ip));
    await a.stop("SIGTERM");
  });

  for (const [missing, caps] of [
    ["CAP_BPF", "+net_admin,+net_raw,+perfmon"],
    ["CAP_NET_ADMIN", "+bpf,+net_raw,+perfmon"],
    ["CAP_NET_RAW", "+bpf,+net_admin,+perfmon"],
    ["CAP_PERFMON", "+bpf,+net_admin,+net_raw"],
  ] as const) {
    it(`refuses to start without ${missing}, naming it`, async function () {
      const a = limited(caps);
      await waitFor("exit", () => !a.running, 20000);
      assert.equal(a.exitCode, 1);
      assert.match(
        a.logs,
        new RegExp(
          `^overlayd: missing capabilities: ${missing} \\(overlayd needs CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW, CAP_PERFMON`,
          "m",
        ),
      );
    });
  }

  it("names CAP_SYS_ADMIN when it would have to mount a bpffs", async function () {
    const a = limited("+bpf,+net_admin,+net_raw,+perfmon", [
      "--pin-path",
      `${c.topo.runDir}/not-bpffs/overlay`,
    ]);
    await waitFor("exit", () => !a.running, 20000);
    assert.equal(a.exitCode, 1);
    assert.match(a.logs, /is not on a bpffs and mounting one needs CAP_SYS_ADMIN/);
  });
});
