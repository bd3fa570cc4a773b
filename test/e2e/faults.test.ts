// Faults with real agents, a real etcd and real traffic: agent restarts under
// load, etcd down for 60 s, a 3-member etcd losing a member, a full network,
// the config deleted while running, and 50 lease managers racing for exactly
// 50 subnets.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { parseNetworkConfig } from "../../agent/control/config";
import { EtcdStore, type HeldLease } from "../../agent/control/etcd-store";
import { LeaseManager, NetworkFullError } from "../../agent/control/lease-manager";
import { DELETE_HOLD_MS } from "../../agent/control/reconciler";
import { createLogger } from "../../agent/log";
import { parseIp } from "../../agent/net/ip";
import { SubnetHostMap } from "../../agent/bpf/subnet-map";
import { Cluster, PREFIX, CONFIG } from "../lib/cluster";
import { EtcdServer } from "../lib/etcd";
import { requireEnv } from "../lib/require";
import { inNs, sh, sleep, waitFor } from "../lib/sh";
import { assertNothingLost, ping, PingStream, underLoad, underLoadBetween } from "../lib/traffic";
import { type NodeInfo } from "../lib/topology";

function leases(c: Cluster): Map<string, string> {
  const out = new Map<string, string>();
  for (const [k, v] of c.etcd.list(`${PREFIX}/subnets/`)) out.set(k, JSON.parse(v.value).PublicIP);
  return out;
}

/** CPU seconds a process has used (utime + stime). */
function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(f[11]) + Number(f[12])) / 100;
}

describe("e2e: faults", function () {
  this.timeout(600000);

  describe("agent restarts and etcd outages", function () {
    const c = new Cluster();
    let n1: NodeInfo;
    let n2: NodeInfo;

    before(async function () {
      requireEnv(this, { root: true, tools: ["etcd", "ip", "ping", "iperf3"] });
      await c.start(2);
      [n1, n2] = c.nodes as [NodeInfo, NodeInfo];
    });
    after(async function () {
      await c.stop();
    });

    for (const signal of ["SIGTERM", "SIGKILL"] as const) {
      it(`restarts an agent (${signal}) under a 1 ms ping and an iperf3 transfer: nothing lost, nothing stalls`, async function () {
        const subnet = c.agent(n1).subnet();
        const r = await underLoad(c, n2, n1, 6, async () => {
          await c.agent(n1).stop(signal);
          const a = c.startAgent(n1);
          await a.waitReady();
        });
        assertNothingLost(r);
        assert.equal(c.agent(n1).subnet(), subnet, "same lease after the restart");
        assert.equal(leases(c).size, 2, "no lease duplicated");
      });
    }

    // Found by the chaos soak (lease-delete): the other nodes removed the
    // entry at the delete event and 30-60 ms of pings were lost before the
    // owner wrote its lease back. They now hold it (DELETE_HOLD_MS).
    it("deletes a node's lease by hand under a 1 ms ping: its owner writes it back and no ping is lost", async function () {
      const subnet = c.agent(n1).subnet();
      const key = `${PREFIX}/subnets/${subnet.replace("/", "-")}`;
      const r = await underLoad(c, n2, n1, 6, async () => {
        c.etcd.ctl(["del", key]);
        await waitFor("lease back in etcd", () => leases(c).has(key), 10000);
        await sleep(DELETE_HOLD_MS + 500); // past the hold: the entry stayed
      });
      assertNothingLost(r);
      assert.equal(c.agent(n1).subnet(), subnet, "same subnet");
      const m = SubnetHostMap.openPinned(n2.pinPath);
      try {
        assert.ok(
          m.list().some((e) => e.subnet.toString() === subnet),
          "still in n2's map",
        );
      } finally {
        m.close();
      }
    });

    // Found by the chaos soak (etcd's lease count): every restart adopted
    // the lease with a fresh etcd lease, and every re-acquired lease took a
    // new one, leaving the old to live out its TTL (a day by default).
    it("leaves exactly one etcd lease per node after a restart and a re-acquired lease", async function () {
      await c.agent(n1).stop("SIGKILL");
      await c.startAgent(n1).waitReady();
      const sub2 = c.agent(n2).subnet();
      const key = `${PREFIX}/subnets/${sub2.replace("/", "-")}`;
      const before = c.etcd.list(key).get(key)?.lease;
      c.etcd.ctl(["del", key]);
      await waitFor("lease back in etcd", () => leases(c).has(key), 10000);
      assert.notEqual(c.etcd.list(key).get(key)?.lease, before, "re-created with a new etcd lease");
      await waitFor("old etcd leases revoked", () => c.etcd.leaseCount() === 2, 5000).catch(() => {
        throw new Error(`etcd holds ${c.etcd.leaseCount()} etcd leases for 2 nodes`);
      });
    });

    // The same restart under the other decap mechanism: the agent on n1
    // runs with --decap xdp first (that switch is not under load: attaching
    // XDP reconfigures the device), then restarts under load, and goes back
    // to the default afterwards. iperf3 is capped as in wires.test.ts: XDP on
    // a veth tops out near 3 Gbit/s and its NAPI ring must not overflow
    // because a starting agent takes the CPUs.
    describe("under --decap xdp", function () {
      before(async function () {
        await c.agent(n1).stop("SIGTERM");
        await c.startAgent(n1, [...c.defaultFlags, "--decap", "xdp"]).waitReady();
      });
      after(async function () {
        await c.agent(n1).stop("SIGTERM");
        await c.startAgent(n1).waitReady();
      });
      for (const signal of ["SIGTERM", "SIGKILL"] as const) {
        it(`restarts an agent (${signal}) under a 1 ms ping and an iperf3 transfer: nothing lost, nothing stalls`, async function () {
          assert.equal(JSON.parse(c.agent(n1).http("/readyz").body).info.decap, "xdp");
          const subnet = c.agent(n1).subnet();
          const r = await underLoadBetween(
            c.pod(n2),
            c.pod(n1),
            6,
            async () => {
              await c.agent(n1).stop(signal);
              await c.startAgent(n1, [...c.defaultFlags, "--decap", "xdp"]).waitReady();
            },
            "1G",
          );
          assertNothingLost(r);
          assert.equal(c.agent(n1).subnet(), subnet, "same lease after the restart");
          assert.equal(leases(c).size, 2, "no lease duplicated");
        });
      }
    });

    it("keeps forwarding through 60 s without etcd, reports not ready, backs off, and resumes", async function () {
      const before = leases(c);
      const pids = c.nodes.map((n) => c.agent(n).pid as number);
      const cpu0 = pids.map(cpuSeconds);
      await c.etcd.kill("SIGKILL");
      const t0 = Date.now();
      try {
        await waitFor(
          "agents report not ready",
          () => c.nodes.every((n) => c.agent(n).http("/readyz").status === 503),
          20000,
        );
        const r = JSON.parse(c.agent(n1).http("/readyz").body);
        assert.notEqual(r.checks.etcd, true);
        while (Date.now() - t0 < 60000) {
          assert.ok(
            ping(c.pod(n1).ns, c.pod(n2).ip, { count: 3 }),
            `traffic stopped ${Math.round((Date.now() - t0) / 1000)} s into the outage`,
          );
          await sleep(5000);
        }
        const used = pids.map((p, i) => cpuSeconds(p) - (cpu0[i] as number));
        for (const u of used)
          assert.ok(u < 6, `agent used ${u.toFixed(1)} CPU s in a 60 s outage (retry loop?)`);
      } finally {
        await c.etcd.start();
      }
      await waitFor(
        "agents ready again",
        () => c.nodes.every((n) => c.agent(n).http("/readyz").status === 200),
        60000,
      );
      assert.deepEqual(leases(c), before, "no lease lost or duplicated");
      assert.ok(ping(c.pod(n2).ns, c.pod(n1).ip));
      // And the control plane works again: a lease change reaches the map.
      c.etcd.put(
        `${PREFIX}/subnets/10.5.77.0-24`,
        JSON.stringify({
          PublicIP: "172.31.0.77",
          BackendType: "vxlan",
          BackendData: { VNI: 1, VtepMAC: "0e:00:00:00:77:77" },
        }),
      );
      await waitFor(
        "new lease in the map",
        () => {
          const m = SubnetHostMap.openPinned(n1.pinPath);
          try {
            return m.list().some((e) => e.subnet.toString() === "10.5.77.0/24");
          } finally {
            m.close();
          }
        },
        10000,
      );
      c.etcd.ctl(["del", `${PREFIX}/subnets/10.5.77.0-24`]);
    });

    it("reports a deleted config and leaves the data path alone", async function () {
      c.etcd.ctl(["del", `${PREFIX}/config`]);
      await waitFor("not ready", () => c.agent(n1).http("/readyz").status === 503);
      assert.match(
        JSON.parse(c.agent(n1).http("/readyz").body).checks.config,
        /\/coreos\.com\/network\/config: config: is missing/,
      );
      assert.ok(ping(c.pod(n1).ns, c.pod(n2).ip));
      c.etcd.put(`${PREFIX}/config`, CONFIG);
      await waitFor("ready again", () => c.agent(n1).http("/readyz").status === 200);
    });
  });

  // Found by the chaos soak (link-flap): two short flaps cut their node's
  // pods off for ~980 ms past the flap. The link-down flushed the node's
  // underlay neighbours; when the link came back, the first ARP request for
  // each peer left before the switch port forwarded (its link-up work ran
  // late on a loaded host), and the kernel asks again only after
  // retrans_time, 1 s. Here the switch port forwards 30 ms after the link
  // is up, every time; the agent writes the flushed entries back (PROBE) as
  // the link returns, so the pods wait for the switch, not for ARP.
  describe("an underlay link flap whose switch port forwards late", function () {
    const c = new Cluster();
    let n1: NodeInfo;
    let n2: NodeInfo;
    const LAG_MS = 30;
    const nft = (...args: string[]) => sh(inNs(c.topo.switchNs, ["nft", ...args]));

    before(async function () {
      requireEnv(this, { root: true, tools: ["etcd", "ip", "ping", "nft"] });
      await c.start(2);
      [n1, n2] = c.nodes as [NodeInfo, NodeInfo];
      nft("add", "table", "bridge", "lag");
      nft("add", "chain", "bridge", "lag", "c", "{ type filter hook prerouting priority 0; }");
    });
    after(async function () {
      await c.stop();
    });

    const flaps: [string, (up: boolean) => void][] = [
      [
        "the node sets its link down",
        (up) => sh(inNs(n2.ns, ["ip", "link", "set", "eth0", up ? "up" : "down"])),
      ],
      [
        "the node loses carrier (the switch port goes down)",
        (up) =>
          sh(inNs(c.topo.switchNs, ["ip", "link", "set", `n${n2.index}`, up ? "up" : "down"])),
      ],
    ];
    /**
     * n2's link down for flapMs, back with the switch port LAG_MS late,
     * pings from n1's pod (and back, unless oneWay): each must be answered
     * again within LAG_MS + 300 ms of the link being up.
     */
    async function flap(o: {
      set: (up: boolean) => void;
      flapMs: number;
      oneWay?: boolean;
      beforeDown?: () => void;
    }): Promise<void> {
      const pings = [new PingStream(c.pod(n1).ns, c.pod(n2).ip).start()];
      if (!o.oneWay) pings.push(new PingStream(c.pod(n2).ns, c.pod(n1).ip).start());
      await sleep(1000);
      const restoredBefore = (c.agent(n2).logs.match(/neighbour entries restored/g) ?? []).length;
      const down = Date.now();
      o.set(false);
      o.beforeDown?.();
      await sleep(o.flapMs);
      nft("add", "rule", "bridge", "lag", "c", "iifname", `n${n2.index}`, "drop");
      o.set(true);
      const up = Date.now();
      await sleep(LAG_MS);
      nft("flush", "chain", "bridge", "lag", "c");
      await sleep(3000);
      for (const p of pings) await p.stop();
      for (const p of pings) {
        const lost = p.disrupted(0).filter((l) => l.at >= down - 50);
        assert.ok(lost.length > 0, `${p.ns} -> ${p.dst}: the flap cost pings`);
        const last = Math.max(...lost.map((l) => l.at));
        assert.ok(
          last - up < LAG_MS + 300,
          `${p.ns} -> ${p.dst}: pings lost until ${Math.round(last - up)} ms after the link was up (switch: ${LAG_MS} ms)`,
        );
      }
      const restored = (c.agent(n2).logs.match(/neighbour entries restored/g) ?? []).length;
      assert.equal(restored, restoredBefore + 1, "the agent restored the flushed entries once");
      assert.match(
        sh(inNs(n2.ns, ["ip", "neigh", "show", "dev", "eth0", n1.underlayIp])),
        /lladdr \S+ (REACHABLE|STALE|DELAY|PROBE)/,
        "n1 resolved on n2",
      );
    }

    for (const [how, set] of flaps) {
      it(`link-flap-waits-for-arp: ${how}; pings both ways resume within the switch's delay, not ARP's 1 s`, async function () {
        await flap({ set, flapMs: 700 });
      });
    }

    // Found by the chaos soak after the first fix (seed 1283725539): flaps of
    // 2.6-2.9 s overran by 1-1.6 s. A peer that was probing its entry for the
    // node when the link went let it fail, then re-resolved it by broadcasts
    // a second apart. Here n1 is made to probe as the link goes, the flap
    // outlasts its three probes, and only n1 pings (n2's pod only answers,
    // so n2 has nothing of its own to ARP for): n2 must ask n1 itself.
    it("link-flap-peer-failed-entry: a peer whose entry for the node failed during a long flap learns it again as the link returns", async function () {
      const mac = JSON.parse(sh(inNs(n2.ns, ["ip", "-j", "link", "show", "eth0"])))[0]
        .address as string;
      const probe = [...["ip", "neigh", "replace", n2.underlayIp, "lladdr", mac], "dev", "eth0"];
      await flap({
        set: flaps[0]![1],
        flapMs: 3500,
        oneWay: true,
        beforeDown: () => sh(inNs(n1.ns, [...probe, "nud", "probe"])),
      });
    });
  });

  describe("a 3-member etcd cluster loses a member", function () {
    const c = new Cluster();
    before(async function () {
      requireEnv(this, { root: true, tools: ["etcd", "ip", "ping"] });
      await c.start(2, { etcdMembers: 3 });
    });
    after(async function () {
      await c.stop();
    });

    it("keeps every agent ready and the control plane working", async function () {
      const [n1, n2] = c.nodes as [NodeInfo, NodeInfo];
      await c.members[0]!.kill("SIGKILL");
      await sleep(3000);
      for (const n of c.nodes)
        assert.equal(c.agent(n).http("/readyz").status, 200, `node ${n.index}`);
      assert.ok(ping(c.pod(n1).ns, c.pod(n2).ip));
      // A new node joins through the surviving members.
      const n3 = c.topo.addNode(3);
      c.nodes.push(n3);
      const a3 = c.startAgent(n3);
      await a3.waitReady();
      const sub = a3.subnet();
      await waitFor(
        "n3 in n1's map",
        () => {
          const m = SubnetHostMap.openPinned(n1.pinPath);
          try {
            return m.list().some((e) => e.subnet.toString() === sub);
          } finally {
            m.close();
          }
        },
        10000,
      );
    });
  });

  describe("a full network", function () {
    const c = new Cluster();
    before(async function () {
      requireEnv(this, { root: true, tools: ["etcd", "ip"] });
      // Exactly two subnets.
      await c.start(2, {
        config: JSON.stringify({
          Network: "10.5.0.0/16",
          SubnetMin: "10.5.1.0",
          SubnetMax: "10.5.2.0",
        }),
      });
    });
    after(async function () {
      await c.stop();
    });

    it("makes the third agent wait with a clear error instead of exiting, and touches nobody else", async function () {
      const n3 = c.topo.addNode(3);
      const a3 = c.startAgent(n3);
      await waitFor(
        "network full reported",
        () => /network 10\.5\.0\.0\/16 is full/.test(a3.logs),
        20000,
      );
      assert.ok(a3.running, "did not exit");
      const r = a3.http("/readyz");
      assert.equal(r.status, 503);
      assert.match(
        JSON.parse(r.body).checks.config,
        /is full: all 2 \/24 subnets between SubnetMin 10\.5\.1\.0 and SubnetMax 10\.5\.2\.0/,
      );
      assert.match(
        a3.http("/metrics", 9474).body,
        /overlay_lease_acquisitions_total\{result="network_full"\} [1-9]/,
      );
      for (const n of c.nodes) assert.equal(c.agent(n).http("/readyz").status, 200);
      // A subnet frees up: the waiting agent takes it.
      const [n1] = c.nodes as [NodeInfo];
      const freed = c.agent(n1).subnet();
      await c.agent(n1).stop("SIGKILL");
      c.etcd.ctl(["del", `${PREFIX}/subnets/${freed.replace("/", "-")}`]);
      await a3.waitReady(60000);
      assert.equal(a3.subnet(), freed);
    });
  });

  describe("50 lease managers, 50 free subnets", function () {
    let etcd: EtcdServer;
    const stores: EtcdStore[] = [];
    const held: HeldLease[] = [];
    before(async function () {
      requireEnv(this, { tools: ["etcd"] });
      etcd = await new EtcdServer().start();
    });
    after(async function () {
      for (const h of held) h.keepalive?.release();
      for (const s of stores) await s.close();
      await etcd.stop();
    });

    it("gives 50 distinct leases with no exits, and the 51st a clear 'network full'", async function () {
      const prefix = "/faults/fifty";
      const text = JSON.stringify({
        Network: "10.20.0.0/16",
        SubnetMin: "10.20.1.0",
        SubnetMax: "10.20.50.0",
      });
      etcd.put(`${prefix}/config`, text);
      const cfg = parseNetworkConfig(text, "cfg");
      const log = createLogger("error", () => {});
      // One client per manager, as 50 separate agents would have.
      const managers = Array.from({ length: 51 }, (_, i) => {
        const s = new EtcdStore({ endpoints: [etcd.endpoint], prefix });
        stores.push(s);
        return {
          s,
          m: new LeaseManager(s, log, {
            config: () => cfg,
            attrs: () => ({
              publicIp: parseIp(`172.30.9.${i + 1}`),
              backendType: "vxlan",
              vni: 1,
              vtepMac: "0e:00:00:00:00:09",
            }),
            ttl: 60,
            onLost: () => {},
            stopping: () => false,
            relist: () => s.list(),
            backoff: () => 5,
          }),
        };
      });
      const fifty = await Promise.all(
        managers
          .slice(0, 50)
          .map(async ({ s, m }) => m.acquire((await s.list()).leases, undefined)),
      );
      held.push(...fifty);
      assert.equal(new Set(fifty.map((h) => h.lease.subnet.toString())).size, 50);
      const last = managers[50]!;
      await assert.rejects(
        last.m.acquire((await last.s.list()).leases, undefined, 3),
        (e: unknown) =>
          e instanceof NetworkFullError &&
          /network 10\.20\.0\.0\/16 is full: all 50 \/24 subnets/.test(e.message),
      );
    });
  });
});
