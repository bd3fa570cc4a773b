// `make demo`: a local etcd, three nodes in network namespaces each running
// overlayd, a pod on each node, pods pinging across the overlay, then
// `overlayctl lease list`, `overlayctl map dump` and a metrics excerpt.
// Everything is torn down at exit, unless KEEP=1 (then `make demo-clean`).
//
//   node dist/scripts/demo.js          run the demo
//   node dist/scripts/demo.js clean    remove what a KEEP=1 demo left
import { mkdirSync, readFileSync, rmSync, writeFileSync, existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { AgentProc } from "../test/lib/agent-proc";
import { EtcdServer } from "../test/lib/etcd";
import { addCniPod } from "../test/lib/cni";
import { inNs, sh, shStatus } from "../test/lib/sh";
import { Topology, type NodeInfo } from "../test/lib/topology";

const STATE = "/run/overlayd-demo/state.json";
const OVERLAYCTL = join(__dirname, "..", "..", "bin", "overlayctl");
const PREFIX = "/coreos.com/network";

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
  const topo = new Topology();
  const agents: AgentProc[] = [];
  let etcd: EtcdServer | undefined;
  let ok = false;
  try {
    say("underlay: a switch and three nodes in network namespaces");
    topo.create();
    const ip = topo.switchAddress();
    const nodes: NodeInfo[] = [1, 2, 3].map((i) => topo.addNode(i));
    for (const n of nodes) process.stdout.write(`  ${n.ns}: eth0 ${n.underlayIp}\n`);

    say("etcd on the underlay, and flannel's network config");
    etcd = await new EtcdServer({
      ns: topo.switchNs,
      ip,
      clientPort: 2379,
      detached: keep,
    }).start();
    const config = JSON.stringify({
      Network: "10.5.0.0/16",
      Backend: { Type: "vxlan", VNI: 1, Port: 8472 },
    });
    etcd.put(`${PREFIX}/config`, config);
    process.stdout.write(`  ${etcd.endpoint}  ${PREFIX}/config = ${config}\n`);

    say("overlayd on every node");
    for (const n of nodes) {
      const file = join(topo.runDir, `n${n.index}`, "subnet.env");
      const a = new AgentProc(
        n.ns,
        [
          "--etcd-endpoints",
          etcd.endpoint,
          "--iface",
          "eth0",
          "--pin-path",
          n.pinPath,
          "--subnet-file",
          file,
          "--ip-masq",
        ],
        file,
      );
      a.start(keep);
      agents.push(a);
    }
    for (const [i, a] of agents.entries()) {
      await a.waitReady();
      process.stdout.write(`  ${nodes[i]!.ns}: ready, lease ${a.subnet()}\n`);
    }

    say("a pod on every node, made by the CNI plugin (bridge + host-local)");
    for (const [i, n] of nodes.entries()) {
      const p = addCniPod(topo, n, { subnetFile: agents[i]!.subnetFile, pinPath: n.pinPath });
      process.stdout.write(`  ${p.ns}: ${p.ip}\n`);
    }

    say("pods ping each other across the overlay");
    for (const a of nodes) {
      for (const b of nodes) {
        if (a === b) continue;
        const r = shStatus(
          inNs(a.pods[0]!.ns, ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "1", b.pods[0]!.ip]),
        );
        const rtt = /rtt min\/avg\/max\/mdev = [\d.]+\/([\d.]+)/.exec(r.stdout)?.[1];
        process.stdout.write(
          `  ${a.pods[0]!.ip} -> ${b.pods[0]!.ip}: ${r.status === 0 ? `ok, ${rtt} ms` : "FAILED"}\n`,
        );
        if (r.status !== 0) throw new Error(`ping ${a.pods[0]!.ip} -> ${b.pods[0]!.ip} failed`);
      }
    }

    const n1 = nodes[0]!;
    say(`overlayctl lease list (on ${n1.ns})`);
    show(
      inNs(n1.ns, [
        "node",
        OVERLAYCTL,
        "lease",
        "list",
        "--etcd-endpoints",
        etcd.endpoint,
        "--subnet-file",
        agents[0]!.subnetFile,
      ]),
    );
    say(`overlayctl map dump (on ${n1.ns})`);
    show(inNs(n1.ns, ["node", OVERLAYCTL, "map", "dump", "--pin-path", n1.pinPath]));
    say(`overlayctl stats (on ${n1.ns})`);
    show(inNs(n1.ns, ["node", OVERLAYCTL, "stats", "--pin-path", n1.pinPath]));
    say(`metrics excerpt (http://127.0.0.1:9474/metrics on ${n1.ns})`);
    const metrics = agents[0]!.http("/metrics", 9474).body;
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
        namespaces: [...topo.createdNamespaces()],
        pids: [...agents.map((a) => a.pid), etcd.pid].filter((p): p is number => p !== undefined),
        mount: topo.bpffs,
        runDir: topo.runDir,
        etcdDir: etcd.dataDir,
      };
      mkdirSync("/run/overlayd-demo", { recursive: true });
      writeFileSync(STATE, JSON.stringify(state));
      say("KEEP=1: left running. Poke at it:");
      process.stdout.write(
        [
          `  ip netns exec ${nodes[0]!.pods[0]!.ns} ping ${nodes[1]!.pods[0]!.ip}`,
          `  ip netns exec ${n1.ns} node ${OVERLAYCTL} map dump --pin-path ${n1.pinPath}`,
          `  ip netns exec ${n1.ns} node ${OVERLAYCTL} status --pin-path ${n1.pinPath}`,
          `  ip netns exec ${n1.ns} node ${OVERLAYCTL} lease list --etcd-endpoints ${etcd.endpoint}`,
          `  ip netns exec ${topo.switchNs} env ETCDCTL_API=3 etcdctl --endpoints ${etcd.endpoint} get --prefix ${PREFIX}`,
          `  make demo-clean      # removes everything this demo made`,
          "",
        ].join("\n"),
      );
    }
  } finally {
    if (!keep || !ok) {
      say("tearing down");
      for (const a of agents) await a.stop("SIGTERM");
      await etcd?.stop();
      topo.destroy();
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
