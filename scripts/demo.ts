// `make demo`: a local etcd, three nodes in network namespaces each running
// overlayd, a pod on each node, pods pinging across the overlay, then
// `overlayctl lease list`, `overlayctl map dump` and a metrics excerpt.
// Everything is torn down at exit, unless KEEP=1 (then `make demo-clean`).
//
//   node dist/scripts/demo.js          run the demo
//   node dist/scripts/demo.js clean    remove what a KEEP=1 demo left
import { mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { dirname } from "node:path";
import { OVERLAYCTL } from "../test/lib/agent-proc";
import { Cluster, PREFIX } from "../test/lib/cluster";
import { inNs, sh, shStatus } from "../test/lib/sh";
import { type NodeInfo } from "../test/lib/topology";

const STATE = "/run/overlayd-demo/state.json";

function say(s: string): void {
  process.stdout.write(`\n\x1b[1m== ${s}\x1b[0m\n`);
}

function show(argv: string[]): void {
  process.stdout.write(
    `$ ${argv.filter((a) => a !== "ip" && a !== "netns" && a !== "exec").join(" ")}\n`,
  );
  const r = shStatus(argv);
  process.stdout.write(r.stdout + r.stderr);
}

interface State {
  namespaces: string[];
  pids: number[];
  mount: string;
  runDir: string;
  etcdDir?: string;
}

function clean(): void {
  if (!existsSync(STATE)) {
    process.stdout.write("nothing to clean: no KEEP=1 demo state found\n");
    return;
  }
  const s = JSON.parse(readFileSync(STATE, "utf8")) as State;
  for (const pid of s.pids) {
    try {
      process.kill(pid, "SIGKILL");
    } catch {
      /* already gone */
    }
  }
  for (const ns of s.namespaces.reverse()) sh(["ip", "netns", "del", ns], { allowFail: true });
  sh(["umount", s.mount], { allowFail: true });
  rmSync(s.runDir, { recursive: true, force: true });
  if (s.etcdDir) rmSync(s.etcdDir, { recursive: true, force: true });
  rmSync(dirname(STATE), { recursive: true, force: true });
  process.stdout.write("demo removed\n");
}

async function demo(): Promise<void> {
  const keep = process.env.KEEP === "1";
  if (existsSync(STATE))
    throw new Error(`a KEEP=1 demo is still there: run 'make demo-clean' first`);
  const c = new Cluster();
  let ok = false;
  try {
    say("etcd on an underlay switch, and flannel's network config");
    const config = JSON.stringify({
      Network: "10.5.0.0/16",
      Backend: { Type: "vxlan", VNI: 1, Port: 8472 },
    });
    await c.startEtcd({ config, agentFlags: ["--ip-masq"], detached: keep });
    process.stdout.write(`  ${c.etcd.endpoint}  ${PREFIX}/config = ${config}\n`);

    say("three nodes in network namespaces");
    c.addNodes(3);
    for (const n of c.nodes) process.stdout.write(`  ${n.ns}: eth0 ${n.underlayIp}\n`);

    say("overlayd on every node");
    await c.startAgents();
    for (const n of c.nodes)
      process.stdout.write(`  ${n.ns}: ready, lease ${c.agent(n).subnet()}\n`);

    say("a pod on every node, made by the CNI plugin (bridge + host-local)");
    for (const n of c.nodes) process.stdout.write(`  ${c.addPod(n).ns}: ${c.pod(n).ip}\n`);

    say("pods ping each other across the overlay");
    for (const a of c.nodes) {
      for (const b of c.nodes) {
        if (a === b) continue;
        const r = shStatus(
          inNs(c.pod(a).ns, ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", c.pod(b).ip]),
        );
        const rtt = /rtt min\/avg\/max\/mdev = [\d.]+\/([\d.]+)/.exec(r.stdout)?.[1];
        process.stdout.write(
          `  ${c.pod(a).ip} -> ${c.pod(b).ip}: ${r.status === 0 ? `ok, ${rtt} ms` : "FAILED"}\n`,
        );
        if (r.status !== 0) throw new Error(`ping ${c.pod(a).ip} -> ${c.pod(b).ip} failed`);
      }
    }

    const n1 = c.nodes[0] as NodeInfo;
    say(`overlayctl lease list (on ${n1.ns})`);
    show(
      inNs(n1.ns, [
        "node",
        OVERLAYCTL,
        "lease",
        "list",
        "--etcd-endpoints",
        c.endpoints(),
        "--subnet-file",
        c.subnetFile(n1),
      ]),
    );
    say(`overlayctl map dump (on ${n1.ns})`);
    show(inNs(n1.ns, ["node", OVERLAYCTL, "map", "dump", "--pin-path", n1.pinPath]));
    say(`overlayctl stats (on ${n1.ns})`);
    show(inNs(n1.ns, ["node", OVERLAYCTL, "stats", "--pin-path", n1.pinPath]));
    say(`metrics excerpt (http://127.0.0.1:9474/metrics on ${n1.ns})`);
    const metrics = c.agent(n1).http("/metrics", 9474).body;
    process.stdout.write(
      metrics
        .split("\n")
        .filter((l) =>
          /^overlay_(packets|bytes|peer_tx_packets|map_entries|ready|lease_acquisitions)/.test(l),
        )
        .map((l) => `  ${l}\n`)
        .join(""),
    );
    ok = true;

    if (keep) {
      const state: State = {
        namespaces: [...c.topo.createdNamespaces()],
        pids: [...[...c.agents.values()].map((a) => a.pid), ...c.members.map((m) => m.pid)].filter(
          (p): p is number => p !== undefined,
        ),
        mount: c.topo.bpffs,
        runDir: c.topo.runDir,
        etcdDir: c.etcd.dataDir,
      };
      mkdirSync(dirname(STATE), { recursive: true });
      writeFileSync(STATE, JSON.stringify(state));
      say("KEEP=1: left running. Poke at it:");
      process.stdout.write(
        [
          `  ip netns exec ${c.pod(n1).ns} ping ${c.pod(c.nodes[1] as NodeInfo).ip}`,
          `  ip netns exec ${n1.ns} node ${OVERLAYCTL} map dump --pin-path ${n1.pinPath}`,
          `  ip netns exec ${n1.ns} node ${OVERLAYCTL} status --pin-path ${n1.pinPath}`,
          `  ip netns exec ${n1.ns} node ${OVERLAYCTL} lease list --etcd-endpoints ${c.endpoints()}`,
          `  ip netns exec ${c.topo.switchNs} env ETCDCTL_API=3 etcdctl --endpoints ${c.etcd.endpoint} get --prefix ${PREFIX}`,
          `  make demo-clean      # removes everything this demo made`,
          "",
        ].join("\n"),
      );
    }
  } finally {
    if (!keep || !ok) {
      say("tearing down");
      for (const a of c.agents.values()) await a.stop("SIGTERM");
      await c.stop();
      process.stdout.write("  removed namespaces, pins, etcd data\n");
    }
  }
}

if (process.argv[2] === "clean") {
  clean();
} else {
  demo().then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`demo failed: ${(e as Error).message}\n`);
      process.exit(1);
    },
  );
}
