// overlayd: the node agent. `overlayd --help` lists every flag; each is also
// read from OVERLAYD_<FLAG> (e.g. OVERLAYD_ETCD_ENDPOINTS).
import yargs from "yargs";
import { Agent } from "./agent";
import { cleanupDatapath, detachPodEncap } from "./bpf/datapath";
import { listLinks } from "./net/neigh";
import { OverlayError } from "./errors";
import { effectiveCaps, missingCaps, REQUIRED } from "./caps";
import { DEFAULTS, dropUnknownEnv, etcdFlags, etcdOptions } from "./flags";
import { createLogger, isLevel } from "./log";
import { setLibbpfSink } from "./bpf/libbpf";
import { removeMasquerade } from "./net/masq";
import { buildInfo, versionLine } from "./version";
import { removeDirectRoutes } from "./backend/direct-routes";
import { deleteLink, linkInfo, chooseUnderlay } from "./net/link";
import { defaultStateFile } from "./control/restart-state";
import { checkMetricsPeers } from "../metrics/metrics";

const BUILD = buildInfo();

// grpc-js sets the TLS ServerName to an IP address for https://<ip> etcd
// endpoints, and node prints a deprecation warning for it on every connect:
// not actionable for users, and it would break the one-line error contract.
process.noDeprecation = true;

async function main(): Promise<number> {
  const parser = etcdFlags(
    yargs(process.argv.slice(2))
      .scriptName("overlayd")
      .usage("$0 [flags]\n\nflannel-compatible VXLAN overlay agent with an eBPF data path.")
      .env("OVERLAYD")
      // A flag given twice: the last one wins (as in most CLIs), not an array.
      .parserConfiguration({ "duplicate-arguments-array": false })
      .strict(),
  )
    .option("iface", {
      type: "string",
      describe: "underlay interface (name or address); default: the default route's",
    })
    .option("iface-regex", {
      type: "string",
      describe: "first interface whose name or address matches",
    })
    .option("public-ip", {
      type: "string",
      describe: "IPv4 announced to other nodes (default: the underlay's)",
    })
    .option("public-ipv6", {
      type: "string",
      describe:
        "IPv6 announced to other nodes in a dual-stack network (default: the underlay's first global IPv6 address)",
    })
    .option("subnet-file", {
      type: "string",
      default: DEFAULTS.subnetFile,
      describe: "where to write the subnet.env variables",
    })
    .option("subnet-lease-ttl", {
      type: "number",
      default: 86400,
      describe: "etcd lease TTL in seconds (renewed by keepalive)",
    })
    .option("ip-masq", {
      type: "boolean",
      default: false,
      describe: "masquerade traffic from pods to outside the cluster network",
    })
    .option("decap", {
      choices: ["auto", "tc", "xdp"] as const,
      default: "auto" as const,
      describe:
        "decapsulation on the underlay: xdp where its driver runs XDP natively, else tc after GRO (auto)",
    })
    .option("pod-bridge", {
      type: "string",
      default: "auto",
      describe:
        "bridge whose pods get the fast path without the CNI plugin: auto (the one holding the node's subnet), a name, or none",
    })
    .option("overlay-iface", {
      type: "string",
      default: "ovl0",
      describe: "overlay device the cluster-network route points at",
    })
    .option("bpf-dir", {
      type: "string",
      default: DEFAULTS.bpfDir,
      describe: "directory with encap.bpf.o and decap.bpf.o",
    })
    .option("healthz-addr", {
      type: "string",
      default: DEFAULTS.healthzAddr,
      describe: "HOST:PORT for /healthz and /readyz ('' disables)",
    })
    .option("metrics-addr", {
      type: "string",
      default: "0.0.0.0:9474",
      describe: "HOST:PORT for /metrics ('' disables)",
    })
    .option("metrics-peers", {
      type: "number",
      default: 10,
      describe:
        'peers with their own overlay_peer_* series, the most traffic first; the rest are summed into peer="other" (0: only that sum, -1: every peer)',
    })
    .option("state-file", {
      type: "string",
      describe:
        "where a stopping agent notes the etcd revision its pinned map holds, so the next start watches from there instead of listing every lease (default: <--subnet-file>.overlayd-state; '' disables)",
    })
    .option("log-level", {
      choices: ["debug", "info", "warn", "error"] as const,
      default: "info" as const,
    })
    .option("cleanup", {
      type: "boolean",
      default: false,
      describe: "detach programs, remove pins, the overlay device and masquerade rules, then exit",
    })
    .version(versionLine("overlayd"))
    .help();
  // getOptions() is public in yargs but missing from its type definitions.
  const known = (
    parser as unknown as { getOptions(): { key: Record<string, unknown> } }
  ).getOptions().key;
  dropUnknownEnv("OVERLAYD", Object.keys(known));
  const argv = await parser.parseAsync();

  const level = argv.logLevel;
  const log = createLogger(isLevel(level) ? level : "info");
  // libbpf's own messages become log lines ("info" from libbpf is chatty).
  setLibbpfSink((lvl, msg) => {
    const text = msg.replace(/^libbpf: /, "");
    if (lvl === "warn") log.warn("libbpf", { msg: text });
    else log.debug("libbpf", { msg: text, level: lvl });
  });

  if (argv.cleanup) {
    let underlay: number | undefined;
    try {
      underlay = linkInfo(
        chooseUnderlay({ iface: argv.iface, ifaceRegex: argv.ifaceRegex, publicIp: argv.publicIp })
          .iface,
      )?.ifindex;
    } catch {
      underlay = undefined;
    }
    const overlay = linkInfo(argv.overlayIface);
    cleanupDatapath(argv.pinPath, underlay, overlay?.ifindex);
    // Pod veths and pod bridges would otherwise go on encapsulating.
    const pods = detachPodEncap(listLinks());
    deleteLink(argv.overlayIface);
    removeDirectRoutes(); // host-gw and DirectRouting routes (our protocol only)
    removeMasquerade(); // iptables and nftables
    log.info("cleaned up", {
      pinPath: argv.pinPath,
      overlay: argv.overlayIface,
      podEncapDetached: pods.join(","),
    });
    return 0;
  }

  const missing = missingCaps(effectiveCaps(), REQUIRED);
  if (missing.length) {
    throw new OverlayError(
      `missing capabilities: ${missing.join(", ")} (overlayd needs ${REQUIRED.join(", ")}; ` +
        "CAP_SYS_ADMIN too if it must mount the bpffs at --pin-path)",
    );
  }

  const agent = new Agent(
    {
      etcd: etcdOptions(argv),
      iface: argv.iface,
      ifaceRegex: argv.ifaceRegex,
      publicIp: argv.publicIp,
      publicIpv6: argv.publicIpv6,
      subnetFile: argv.subnetFile,
      leaseTtl: argv.subnetLeaseTtl,
      ipMasq: argv.ipMasq,
      decap: argv.decap,
      podBridge: argv.podBridge,
      pinPath: argv.pinPath,
      objDir: argv.bpfDir,
      overlayIface: argv.overlayIface,
      healthzAddr: argv.healthzAddr,
      metricsAddr: argv.metricsAddr,
      metricsPeers: checkMetricsPeers(argv.metricsPeers),
      stateFile: argv.stateFile ?? defaultStateFile(argv.subnetFile),
      version: BUILD.version,
    },
    log,
  );

  let signalled = 0;
  const done = new Promise<number>((resolve) => {
    for (const [sig, n] of [
      ["SIGTERM", 15],
      ["SIGINT", 2],
    ] as const) {
      process.on(sig, () => {
        if (signalled) process.exit(128 + n); // second signal: now
        signalled = n;
        log.info("signal; stopping", { signal: sig });
        const force = setTimeout(() => process.exit(128 + n), 5000);
        force.unref();
        agent.stop().then(
          () => resolve(128 + n),
          () => resolve(128 + n),
        );
      });
    }
  });
  try {
    await agent.start();
  } catch (e) {
    if (signalled) return done;
    throw e;
  }
  return done;
}

main().then(
  (code) => process.exit(code),
  (e: unknown) => {
    const msg =
      e instanceof OverlayError
        ? e.message
        : e instanceof Error
          ? (e.stack ?? e.message)
          : String(e);
    process.stderr.write(`overlayd: ${msg}\n`);
    process.exit(1);
  },
);
