// The container image, tested for real: deploy/Dockerfile built with podman
// on a debootstrap base, the init container's install-cni.sh run against a
// host directory, and the agent run in the image exactly as the DaemonSet in
// deploy/kubernetes/overlayd.yaml describes it (its args, env, volumes and
// capabilities, read from the manifest) as node 3 of a three-node cluster
// whose other two nodes run overlayd from this checkout. The container joins
// node 3's namespace, which is that simulated node's host network.
import assert from "node:assert/strict";
import { buildInfo } from "../../agent/version";
import {
  copyFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join, resolve } from "node:path";
import { M } from "../../metrics/names";
import { CHAIN } from "../../agent/net/ipmasq";
import { Cluster, PREFIX } from "../lib/cluster";
import { makeCerts, type Certs } from "../lib/certs";
import { deployDocs, type Obj } from "../lib/deploy";
import { addCniPod, cni } from "../lib/cni";
import { ContainerAgent, ImageRun, type ContainerSpec } from "../lib/image";
import { requireEnv } from "../lib/require";
import { inNs, sh, shStatus } from "../lib/sh";
import { assertNothingLost, ping, underLoad } from "../lib/traffic";
import { type NodeInfo } from "../lib/topology";

interface Manifest {
  args: string[];
  envNames: string[];
  caps: string[];
  /** podman's spelling of the container's seccompProfile. */
  securityOpts: string[];
  mounts: Obj[];
  initCommand: string[];
  initMounts: Obj[];
  cniConf: string;
}

function readManifest(): Manifest {
  const objs = deployDocs("kubernetes/overlayd.yaml");
  const ds = objs.find((o) => o.kind === "DaemonSet").spec.template.spec;
  const cm = objs.find((o) => o.kind === "ConfigMap");
  const c = ds.containers[0];
  const init = ds.initContainers[0];
  return {
    args: c.args,
    envNames: (c.env ?? []).map((e: Obj) => e.name),
    caps: c.securityContext.capabilities.add,
    securityOpts:
      c.securityContext.seccompProfile?.type === "Unconfined" ? ["seccomp=unconfined"] : [],
    mounts: c.volumeMounts,
    initCommand: init.command,
    initMounts: init.volumeMounts,
    cniConf: cm.data["cni-conf.json"],
  };
}

/** The host's interfaces and iptables chains, to show a run leaves none. */
function hostSnapshot(): { links: string[]; chains: string[] } {
  const links = (JSON.parse(sh(["ip", "-j", "link", "show"])) as { ifname: string }[])
    .map((l) => l.ifname)
    .sort();
  const chains = shStatus(["iptables-save"])
    .stdout.split("\n")
    .filter((l) => l.startsWith(":"))
    .map((l) => l.split(" ")[0] as string)
    .sort();
  return { links, chains };
}

describe("image: the container image, run as the DaemonSet runs it", function () {
  this.timeout(180000);
  const img = new ImageRun();
  const c = new Cluster();
  const man = readManifest();
  let certs: Certs | undefined;
  let before0: { links: string[]; chains: string[] };
  let n1: NodeInfo;
  let n2: NodeInfo;
  let n3: NodeInfo;
  let hostDir = "";
  let cniBin = "";
  let cniConf = "";
  let generation = 0;

  /** Host paths for the DaemonSet's volumes on node 3. */
  function volumes(mounts: Obj[]): [string, string][] {
    const byName: Record<string, string> = {
      bpffs: join(c.topo.bpffs, "n3"),
      "run-flannel": join(hostDir, "run-flannel"),
      "xtables-lock": join(hostDir, "xtables.lock"),
      "etcd-tls": join(hostDir, "etcd-tls"),
      "cni-bin": cniBin,
      "cni-conf": cniConf,
      config: join(hostDir, "config"),
    };
    return mounts.map((m) => {
      const host = byName[m.name];
      assert.ok(host, `the test does not know the DaemonSet volume ${m.name}`);
      return [m.subPath ? join(host, m.subPath) : host, m.mountPath];
    });
  }

  function agentSpec(opts: { privileged: boolean; netns?: string }): ContainerSpec {
    generation++;
    return {
      name: `overlayd-${img.id}-${generation}`,
      netns: opts.netns ?? n3.ns,
      volumes: volumes(man.mounts),
      privileged: opts.privileged,
      caps: man.caps,
      securityOpts: man.securityOpts,
      env: Object.fromEntries(
        man.envNames.map((n) => {
          assert.equal(n, "OVERLAYD_ETCD_ENDPOINTS", `the test does not know env ${n}`);
          return [n, c.endpoints()];
        }),
      ),
    };
  }

  function startContainerAgent(privileged: boolean): ContainerAgent {
    const a = new ContainerAgent(
      img,
      agentSpec({ privileged }),
      man.args,
      join(hostDir, "run-flannel", "subnet.env"),
    );
    c.runAgent(n3, a);
    return a;
  }

  before(async function () {
    this.timeout(30 * 60000);
    requireEnv(this, {
      root: true,
      tools: ["podman", "runc", "catatonit", "debootstrap", "etcd", "ip", "ping", "openssl"],
    });
    before0 = hostSnapshot();
    img.makeBase();
    img.build();

    certs = makeCerts(["172.31.0.254", "127.0.0.1"]);
    await c.startEtcd({ tls: certs });
    c.addNodes(3);
    [n1, n2, n3] = c.nodes as [NodeInfo, NodeInfo, NodeInfo];

    // Node 3's host directories, as the DaemonSet's hostPath volumes.
    hostDir = join(c.topo.runDir, "n3");
    cniBin = join(hostDir, "opt-cni-bin");
    cniConf = join(hostDir, "etc-cni-net.d");
    for (const d of [cniBin, cniConf, "run-flannel", "etcd-tls", "config"])
      mkdirSync(resolve(hostDir, d), { recursive: true });
    // A directory of this run's bpffs stands in for the host's /sys/fs/bpf.
    mkdirSync(join(c.topo.bpffs, "n3"), { recursive: true });
    writeFileSync(join(hostDir, "xtables.lock"), "");
    writeFileSync(join(hostDir, "config", "cni-conf.json"), man.cniConf);
    // The Secret of overlayd-etcd.example.yaml.
    copyFileSync(certs.ca, join(hostDir, "etcd-tls", "ca.crt"));
    copyFileSync(certs.clientCert, join(hostDir, "etcd-tls", "client.crt"));
    copyFileSync(certs.clientKey, join(hostDir, "etcd-tls", "client.key"));
    // The agent's default pin path, /sys/fs/bpf/overlay, seen from the host.
    n3.pinPath = join(c.topo.bpffs, "n3", "overlay");

    // The DaemonSet's init container, then its agent container.
    const init = img.runOnce(
      {
        name: `overlayd-${img.id}-install-cni`,
        netns: n3.ns,
        volumes: volumes(man.initMounts),
        privileged: false,
        entrypoint: man.initCommand[0],
      },
      man.initCommand.slice(1),
    );
    assert.equal(init.status, 0, `install-cni: ${init.stdout}${init.stderr}`);

    for (const n of [n1, n2]) c.startAgent(n);
    startContainerAgent(true);
    for (const n of c.nodes) await c.agent(n).waitReady(60000);
  });

  after(async function () {
    this.timeout(120000);
    await c.stop();
    img.destroy();
    if (certs) sh(["rm", "-rf", certs.dir]);
  });

  it("has Node >= 20, libbpf, iproute2 and iptables, and no build toolchain", function () {
    // Both iptables backends: the agent writes to the one the node uses.
    const TOOLS = [
      "ip",
      "iptables",
      "iptables-legacy",
      "iptables-legacy-save",
      "iptables-legacy-restore",
      "iptables-nft",
      "iptables-nft-save",
      "iptables-nft-restore",
      "overlayctl",
    ];
    const r = img.runOnce(
      {
        name: `overlayd-${img.id}-probe`,
        netns: n1.ns,
        volumes: [],
        privileged: false,
        entrypoint: "sh",
      },
      [
        "-c",
        "node --version; ldconfig -p | grep -c 'libbpf.so.1 '; " +
          "find /opt/overlayd ! -user 0 | wc -l; " +
          `for t in ${TOOLS.join(" ")}; do command -v $t; done; ` +
          "for t in clang gcc make npm; do command -v $t && echo has-$t; done; true",
      ],
    );
    assert.equal(r.status, 0, r.stderr);
    const [ver, libbpf, notRoot, ...rest] = r.stdout.trim().split("\n");
    assert.ok(Number(/^v(\d+)/.exec(ver ?? "")?.[1]) >= 20, `node ${ver}`);
    assert.equal(libbpf, "1");
    assert.equal(notRoot, "0", "everything under /opt/overlayd is root's (built unprivileged)");
    assert.deepEqual(
      rest.slice(0, TOOLS.length).map((p) => p.split("/").pop()),
      TOOLS,
    );
    const tools = rest.filter((l) => l.startsWith("has-"));
    // npm comes with the base (it is Node's), the compilers must not.
    assert.deepEqual(
      tools.filter((t) => t !== "has-npm"),
      [],
      "no compiler in the runtime image",
    );
  });

  it("says what it is: overlayd --version, overlayctl version and the image labels agree with this checkout", function () {
    const b = buildInfo();
    assert.notEqual(b.commit, "unknown", "the checkout's commit is known (git)");
    const probe = (entrypoint: string, args: string[]) =>
      img.runOnce(
        {
          name: `overlayd-${img.id}-v${entrypoint.length}`,
          netns: n1.ns,
          volumes: [],
          privileged: false,
          entrypoint,
        },
        args,
      );
    const agent = probe("node", ["/opt/overlayd/bin/overlayd", "--version"]);
    assert.equal(agent.status, 0, agent.stderr);
    assert.equal(agent.stdout.trim(), `overlayd ${b.version} (commit ${b.commit}, abi ${b.abi})`);
    const ctl = probe("overlayctl", ["version", "-o", "json"]);
    assert.equal(ctl.status, 0, ctl.stderr);
    assert.deepEqual(JSON.parse(ctl.stdout), b);
    const labels = JSON.parse(
      sh(img.podman(["image", "inspect", "--format", "{{json .Labels}}", img.image])),
    );
    assert.equal(labels["org.opencontainers.image.revision"], b.commit);
    assert.equal(labels["org.opencontainers.image.version"], b.version);
    assert.equal(labels["io.overlayd.abi"], b.abi);
  });

  it("the init container installs the CNI plugin and the ConfigMap's conflist on the host", function () {
    const conflist = join(cniConf, "10-overlay.conflist");
    assert.ok(existsSync(join(cniBin, "overlay")), "plugin installed");
    assert.ok(statSync(join(cniBin, "overlay")).mode & 0o111, "plugin executable");
    assert.deepEqual(JSON.parse(readFileSync(conflist, "utf8")), JSON.parse(man.cniConf));
    // The installed bundle runs on the host, with its own node and libbpf.
    const v = cni(
      n3,
      "VERSION",
      { cniVersion: "1.0.0" },
      { id: "v", podNs: "none", pluginDir: cniBin },
    );
    assert.equal(v.status, 0, v.stderr);
    assert.ok(JSON.parse(v.stdout).supportedVersions.includes("1.0.0"));
  });

  it("the agent in the image takes a lease, pins the data path on the host's bpffs and writes subnet.env", function () {
    const lease = c.etcd.list(`${PREFIX}/subnets/`);
    const mine = [...lease.values()]
      .map((v) => JSON.parse(v.value))
      .find((l) => l.PublicIP === n3.underlayIp);
    assert.ok(mine, `a lease for ${n3.underlayIp}`);
    assert.equal(mine.BackendType, "vxlan");
    const sub = c.agent(n3).subnet();
    const own = (c.agent(n3) as ContainerAgent).exec(["overlayctl", "map", "dump", "-o", "json"]);
    assert.equal(own.status, 0, own.stderr);
    const rows = JSON.parse(own.stdout) as { subnet: string; flags: string[] }[];
    assert.equal(rows.length, 3, "its own subnet and both peers");
    assert.equal(rows.find((r) => r.flags.includes("local"))?.subnet, sub);
    assert.ok(existsSync(n3.pinPath), `pins under ${n3.pinPath} on the host`);
  });

  it("pods ping across: pods made with the installed plugin on the image's node and pods on the other nodes", function () {
    // Pods: node 3's through the plugin the init container installed.
    for (const n of [n1, n2]) c.addPod(n);
    addCniPod(c.topo, n3, {
      subnetFile: c.agent(n3).subnetFile,
      pinPath: n3.pinPath,
      pluginDir: cniBin,
    });
    for (const a of c.nodes)
      for (const b of c.nodes)
        if (a !== b)
          assert.ok(
            ping(c.pod(a).ns, c.pod(b).ip, { count: 3 }),
            `pod ${a.index} -> pod ${b.index}`,
          );
  });

  it("serves metrics and health on the node's network, and applies --ip-masq with the image's iptables", function () {
    const m = c.agent(n3).http("/metrics", 9474);
    assert.equal(m.status, 200);
    assert.match(m.body, new RegExp(`^${M.mapEntries}\\S* 3$`, "m"));
    assert.match(m.body, new RegExp(`^${M.ready}\\S* 1$`, "m"));
    assert.equal(c.agent(n3).http("/healthz").status, 200);
    const rules = sh(inNs(n3.ns, ["iptables-save", "-t", "nat"]));
    assert.match(rules, new RegExp(`^-A POSTROUTING .*-j ${CHAIN}$`, "m"));
  });

  it("a rollout: SIGTERM through --init stops the agent cleanly, a new container with only the manifest's capabilities takes over, and no packet is lost", async function () {
    const subnet = c.agent(n3).subnet();
    let code: number | null = null;
    let oldLogs = "";
    const r = await underLoad(c, n1, n3, 6, async () => {
      const old = c.agent(n3);
      code = await old.stop("SIGTERM");
      oldLogs = old.logs;
      await startContainerAgent(false).waitReady(60000);
    });
    // 128 + 15 after a graceful stop (README, "Failure behaviour").
    assert.equal(code, 143, `the old agent's exit status\n${oldLogs.slice(-2000)}`);
    assert.match(oldLogs, /msg="signal; stopping" signal=SIGTERM/);
    assertNothingLost(r);
    assert.equal(c.agent(n3).subnet(), subnet, "same lease after the rollout");
    const caps = shStatus(
      img.podman([
        "inspect",
        "-f",
        "{{.EffectiveCaps}}",
        (c.agent(n3) as ContainerAgent).spec.name,
      ]),
    );
    assert.equal(caps.status, 0, caps.stderr);
    for (const cap of man.caps) assert.match(caps.stdout, new RegExp(`CAP_${cap}\\b`));
    assert.doesNotMatch(caps.stdout, /CAP_SYS_ADMIN/);
  });

  it("with the manifest's capabilities on a node that does not forward, exits naming the sysctl to set", function () {
    const n4 = c.topo.addNode(4);
    const spec = agentSpec({ privileged: false, netns: n4.ns });
    spec.volumes = spec.volumes.map(([h, ctr]) =>
      ctr === "/run/flannel"
        ? [join(c.topo.runDir, "n4"), ctr]
        : ctr === "/sys/fs/bpf"
          ? [c.topo.bpffs, ctr]
          : [h, ctr],
    );
    mkdirSync(join(c.topo.runDir, "n4"), { recursive: true });
    sh(inNs(n4.ns, ["sysctl", "-qw", "net.ipv4.ip_forward=0"]));
    const r = img.runOnce(spec, [...man.args, "--pin-path", "/sys/fs/bpf/n4"]);
    assert.notEqual(r.status, 0);
    assert.match(
      r.stdout + r.stderr,
      /net\.ipv4\.ip_forward=1.*sysctl -w net\.ipv4\.ip_forward=1/s,
    );
  });

  it("leaves no containers, images, storage, interfaces or iptables chains behind", async function () {
    await c.stop();
    img.destroy();
    assert.ok(!existsSync(img.dir), `${img.dir} removed`);
    const now = hostSnapshot();
    assert.deepEqual(now.links, before0.links, "host interfaces");
    assert.deepEqual(now.chains, before0.chains, "host iptables chains");
  });
});
