// overlayctl monitor against a real data path: drop events for hostile VXLAN
// (rate-limited per CPU, the rest counted as suppressed while the drop
// counters stay exact), trace events only while a monitor asks for them,
// filters, one reader at a time, and clean exits on Ctrl-C and on a closed
// output pipe.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { StatsReader } from "../../agent/bpf/stats";
import { OVERLAYCTL } from "../lib/agent-proc";
import { Cluster } from "../lib/cluster";
import { requireEnv } from "../lib/require";
import { inNs, sh, shStatus, sleep } from "../lib/sh";
import { type NodeInfo } from "../lib/topology";
import { ping } from "../lib/traffic";

const HOSTILE = join(__dirname, "..", "..", "..", "test", "tools", "hostile.py");

describe("e2e: overlayctl monitor", function () {
  this.timeout(180000);
  const c = new Cluster();
  let n1: NodeInfo;
  let n2: NodeInfo;
  let outsider: NodeInfo;

  before(async function () {
    requireEnv(this, { root: true, tools: ["etcd", "ip", "ping", "/usr/bin/python3"] });
    await c.start(2);
    [n1, n2] = c.nodes as [NodeInfo, NodeInfo];
    outsider = c.topo.addNode(9);
  });
  after(async () => c.stop());

  /** Starts a monitor in n1; resolves with its output once it exits. */
  function startMonitor(args: string[]) {
    const p = spawn(
      "ip",
      ["netns", "exec", n1.ns, "node", OVERLAYCTL, "monitor", "--pin-path", n1.pinPath, ...args],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let out = "";
    let err = "";
    p.stdout.on("data", (d) => (out += d));
    p.stderr.on("data", (d) => (err += d));
    const exited = new Promise<{ code: number | null; out: string; err: string }>((r) =>
      p.on("exit", (code) => r({ code, out, err })),
    );
    return { p, exited, out: () => out };
  }

  function hostile(n: number, cases: string[]): void {
    const mac = JSON.parse(sh(inNs(n1.ns, ["ip", "-j", "link", "show", "eth0"])))[0].address;
    sh(
      inNs(outsider.ns, [
        "/usr/bin/python3",
        HOSTILE,
        "eth0",
        mac,
        n1.underlayIp,
        outsider.underlayIp,
        c.agent(n2).subnet(),
        c.pod(n1).ip,
        String(n),
        ...cases,
      ]),
    );
  }

  const stats = () => {
    const r = StatsReader.openPinned(n1.pinPath);
    try {
      return r.read();
    } finally {
      r.close();
    }
  };

  it("streams drop events with reason, hook, peer and both 5-tuples, as JSON", async function () {
    const m = startMonitor(["-o", "json", "--count", "3", "--reason", "unknown_source"]);
    await sleep(700);
    hostile(20, ["unknown_source"]);
    const r = await m.exited;
    assert.equal(r.code, 0, r.err);
    const evs = r.out
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l));
    assert.equal(evs.length, 3);
    for (const e of evs) {
      assert.equal(e.type, "drop");
      assert.equal(e.reason, "unknown_source");
      assert.equal(e.direction, "rx");
      assert.equal(e.hook, "decap_tc");
      assert.equal(e.outer.src, outsider.underlayIp);
      assert.equal(e.outer.dst, n1.underlayIp);
      assert.equal(e.outer.dport, 8472);
      assert.equal(e.inner.dst, c.pod(n1).ip);
      assert.ok(e.head.length > 100, "first bytes of the packet");
    }
  });

  it("rate-limits events in BPF and counts the rest as suppressed; drop counters stay exact", async function () {
    const before = stats();
    const dropsBefore = before.drops.find(
      (d) => d.reason === "unknown_source" && d.direction === "rx",
    )!.packets;
    const m = startMonitor(["-o", "json"]);
    await sleep(700);
    hostile(4000, ["unknown_source"]);
    await sleep(500);
    m.p.kill("SIGINT");
    const r = await m.exited;
    assert.equal(r.code, 0, `Ctrl-C is a clean exit: ${r.err}`);
    const after = stats();
    const dropped =
      after.drops.find((d) => d.reason === "unknown_source" && d.direction === "rx")!.packets -
      dropsBefore;
    assert.equal(dropped, 4000n, "every drop counted");
    const events = r.out.trim().split("\n").filter(Boolean).length;
    const suppressed = after.suppressed.drop - before.suppressed.drop;
    assert.ok(events < 4000, `${events} events: the rate limit held`);
    assert.equal(
      BigInt(events) + suppressed,
      4000n,
      `${events} emitted + ${suppressed} suppressed`,
    );
    const metrics = c.agent(n1).http("/metrics", 9474).body;
    assert.match(metrics, /^overlay_monitor_events_suppressed_total\{type="drop"\} [1-9]\d*$/m);
  });

  it("emits trace events only while a monitor asks for them, filtered by pod", async function () {
    const m = startMonitor(["--type", "trace", "--pod", c.pod(n2).ip]);
    await sleep(700);
    assert.ok(ping(c.pod(n1).ns, c.pod(n2).ip, { count: 3 }));
    await sleep(300);
    m.p.kill("SIGTERM");
    const r = await m.exited;
    assert.equal(r.code, 0, r.err);
    assert.match(
      r.out,
      new RegExp(
        `^TRACE tx encap encap_pod .*peer=${n2.underlayIp.replace(/\./g, "\\.")}.*inner ${c.pod(n1).ip.replace(/\./g, "\\.")} > ${c.pod(n2).ip.replace(/\./g, "\\.")} icmp$`,
        "m",
      ),
    );
    assert.match(r.out, /^TRACE rx decap decap_tc /m);
    // Off again once the monitor is gone.
    const mon = shStatus(
      inNs(n1.ns, ["bpftool", "map", "dump", "pinned", join(n1.pinPath, "ovl_monitor"), "-j"]),
    );
    assert.match(mon.stdout, /"trace":\s*0/);
  });

  it("allows one reader at a time, saying why, and exits cleanly when its output pipe closes", async function () {
    const first = startMonitor([]);
    await sleep(700);
    const second = shStatus(inNs(n1.ns, ["node", OVERLAYCTL, "monitor", "--pin-path", n1.pinPath]));
    assert.equal(second.status, 1);
    assert.match(
      second.stderr,
      /another overlayctl monitor \(pid \d+\) is reading this node's events/,
    );
    first.p.kill("SIGINT");
    assert.equal((await first.exited).code, 0);
    // A pipe whose reader goes away (`| head -1`): exit 0, lock released.
    const mac = JSON.parse(sh(inNs(n1.ns, ["ip", "-j", "link", "show", "eth0"])))[0].address;
    const piped = shStatus([
      "timeout",
      "30",
      "sh",
      "-c",
      `(ip netns exec ${n1.ns} node ${OVERLAYCTL} monitor --pin-path ${n1.pinPath}; echo "monitor exit $?" >&2) | head -1 & ` +
        `sleep 1.5; ip netns exec ${outsider.ns} /usr/bin/python3 ${HOSTILE} eth0 ${mac} ${n1.underlayIp} ` +
        `${outsider.underlayIp} ${c.agent(n2).subnet()} ${c.pod(n1).ip} 50 unknown_source >/dev/null; wait`,
    ]);
    assert.equal(piped.status, 0, piped.stderr);
    assert.match(piped.stdout, /^DROP {2}rx unknown_source decap_tc /);
    assert.match(piped.stderr, /monitor exit 0/);
    const again = startMonitor([]);
    await sleep(700);
    again.p.kill("SIGINT");
    assert.equal((await again.exited).code, 0, "the lock was released");
  });

  it("refuses bad filters as usage errors, and names a missing pin path", function () {
    const bad = shStatus(
      inNs(n1.ns, ["node", OVERLAYCTL, "monitor", "--pin-path", n1.pinPath, "--pod", "10.5.1"]),
    );
    assert.equal(bad.status, 2);
    assert.match(bad.stderr, /--pod: "10.5.1" is not an IPv4 or IPv6 address/);
    const reason = shStatus(
      inNs(n1.ns, ["node", OVERLAYCTL, "monitor", "--pin-path", n1.pinPath, "--reason", "nope"]),
    );
    assert.equal(reason.status, 2);
    const gone = shStatus(
      inNs(n1.ns, ["node", OVERLAYCTL, "monitor", "--pin-path", "/sys/fs/bpf/nothing-here"]),
    );
    assert.equal(gone.status, 1);
    assert.doesNotMatch(gone.stderr, /\n\s+at /, "no stack trace");
  });
});
