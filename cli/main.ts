// overlayctl: inspect an overlayd node (pinned maps, attachments, agent) and
// the cluster's leases and config in etcd. Usage errors exit 2 with the
// usage; operational errors exit 1 with one line naming what failed.
import yargs from "yargs";
import { dropUnknownEnv, etcdFlags } from "../agent/flags";
import { configGet, configSet } from "./commands/config";
import { leaseList, leaseRelease, leaseReserve } from "./commands/lease";
import { mapDump } from "./commands/map-dump";
import { mapGet } from "./commands/map-get";
import { stats } from "./commands/stats";
import { status } from "./commands/status";
import { version } from "./commands/version";
import { traceCmd } from "./commands/trace";
import { monitor } from "./commands/monitor";
import { describeError, UsageError } from "./output";

// grpc-js sets the TLS ServerName to an IP address for https://<ip> etcd
// endpoints, and node prints a deprecation warning for it on every connect:
// not actionable for users, and it would break the one-line error contract.
process.noDeprecation = true;

let usageError = false;

// `overlayctl map dump | head`: the reader went away, so stop as a filter
// does, without a stack trace. A command with its own handler (monitor
// cleans up first) keeps it.
process.stdout.on("error", (e: NodeJS.ErrnoException) => {
  if (process.stdout.listenerCount("error") > 1) return;
  if (e.code === "EPIPE") process.exit(0);
  throw e;
});

// Every global flag may come from OVERLAYD_*; anything else with that prefix
// (Kubernetes service variables) is not ours.
dropUnknownEnv("OVERLAYD", [
  "etcd-endpoints",
  "etcd-prefix",
  "etcd-cafile",
  "etcd-certfile",
  "etcd-keyfile",
  "etcd-username",
  "etcd-password",
  "pin-path",
  "subnet-file",
  "healthz-addr",
  "output",
  "overlay-iface",
  "type",
  "pod",
  "peer",
  "reason",
  "count",
  "vxlan-port",
]);

etcdFlags(
  yargs(process.argv.slice(2))
    .scriptName("overlayctl")
    .usage(
      "$0 <command> [flags]\n\nInspect overlayd: the data path's pinned maps, and the leases in etcd.",
    )
    .env("OVERLAYD")
    .parserConfiguration({ "duplicate-arguments-array": false }),
)
  .command("map", "the subnet map (works while the agent is down)", (y) =>
    y.command(mapDump).command(mapGet).demandCommand(1, "map needs a subcommand: dump or get"),
  )
  .command(stats)
  .command("lease", "leases in etcd", (y) =>
    y
      .command(leaseList)
      .command(leaseReserve)
      .command(leaseRelease)
      .demandCommand(1, "lease needs a subcommand: list, reserve or release"),
  )
  .command("config", "the network config in etcd", (y) =>
    y
      .command(configGet)
      .command(configSet)
      .demandCommand(1, "config needs a subcommand: get or set"),
  )
  .command(status)
  .command(traceCmd)
  .command(monitor)
  .command(version)
  .demandCommand(1, "give a command")
  .strict()
  .help()
  .fail((msg, err, y) => {
    if (err instanceof UsageError) {
      process.stderr.write(`overlayctl: ${err.message} (see --help)\n`);
      process.exit(2);
    }
    if (err && err.name !== "YError") {
      // A handler failed: one line naming what, no usage, no stack.
      process.stderr.write(`overlayctl: ${describeError(err)}\n`);
      process.exit(1);
    }
    usageError = true;
    y.showHelp((s: string) => process.stderr.write(`${s}\n`));
    process.stderr.write(`\n${msg ?? err?.message ?? "usage error"}\n`);
    process.exit(2);
  })
  .parseAsync()
  .catch((e: unknown) => {
    if (usageError) return;
    if (e instanceof UsageError) {
      process.stderr.write(`overlayctl: ${e.message} (see --help)\n`);
      process.exit(2);
    }
    process.stderr.write(`overlayctl: ${describeError(e)}\n`);
    process.exit(1);
  });
