// overlayctl monitor: drop events (and, when asked, one trace event per
// forwarded packet) from the data path, as lines or JSON, until Ctrl-C or
// until the reader of our output goes away. One reader at a time: a BPF
// ring buffer has a single consumer position, so a second monitor would
// steal the first one's events; it gets an error saying so instead.
// A monitor that cannot write (a stalled terminal) stops reading: the ring
// fills and the data path counts the events it could not emit as
// suppressed (overlay_monitor_events_suppressed_total); forwarding never waits.
import { closeSync, openSync, readFileSync, unlinkSync, writeSync } from "node:fs";
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { DROP_REASONS } from "../../agent/bpf/codec";
import { decodeEvent, EventSource, type MonitorEvent } from "../../agent/bpf/events";
import { formatIp6, isIp6, parseIp6 } from "../../agent/net/ip6";
import { CliError, outputOption, UsageError, type Format } from "../output";

interface Args {
  pinPath: string;
  output: Format;
  type: "drop" | "trace" | "all";
  pod?: string;
  peer?: string;
  reason?: string;
  count?: number;
  vxlanPort: number;
}

const TRACE_ACTIONS = ["encap", "direct", "decap", "to_kernel"];
const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

/** An address filter as events print addresses (IPv6 canonical), or a usage error. */
export function filterIp(flag: string, v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  const m = IPV4.exec(v);
  if (m && m.slice(1).every((o) => Number(o) <= 255)) return v;
  if (isIp6(v)) return formatIp6(parseIp6(v));
  throw new UsageError(`--${flag}: "${v}" is not an IPv4 or IPv6 address`);
}

function tupleText(t: MonitorEvent["outer"]): string {
  if (!t) return "";
  const proto =
    t.proto === 6 ? "tcp" : t.proto === 17 ? "udp" : t.proto === 1 ? "icmp" : `proto ${t.proto}`;
  const port = (p?: number) => (p === undefined ? "" : `:${p}`);
  return `${t.src}${port(t.sport)} > ${t.dst}${port(t.dport)} ${proto}`;
}

export function eventLine(e: MonitorEvent): string {
  return [
    e.type.toUpperCase().padEnd(5),
    e.direction,
    e.reason,
    e.hook,
    `if=${e.ifindex}`,
    `len=${e.len}`,
    ...(e.peer ? [`peer=${e.peer}`] : []),
    ...(e.outer ? [`outer ${tupleText(e.outer)}`] : []),
    ...(e.inner ? [`inner ${tupleText(e.inner)}`] : []),
  ].join(" ");
}

export function matches(
  e: MonitorEvent,
  a: Pick<Args, "type" | "pod" | "peer" | "reason">,
): boolean {
  if (a.type !== "all" && e.type !== a.type) return false;
  if (a.reason && e.reason !== a.reason) return false;
  if (a.peer && e.peer !== a.peer && e.outer?.src !== a.peer && e.outer?.dst !== a.peer)
    return false;
  if (a.pod && e.inner?.src !== a.pod && e.inner?.dst !== a.pod) return false;
  return true;
}

/** The one-reader lock: a pid file next to nothing else of ours. */
function lockPath(pinPath: string): string {
  return `/run/overlayctl-monitor.${pinPath.replace(/[^A-Za-z0-9]+/g, "_")}.pid`;
}

function alive(pid: number): boolean {
  if (!(pid > 0)) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

function takeLock(path: string): void {
  for (let attempt = 0; attempt < 2; attempt++) {
    let fd: number;
    try {
      fd = openSync(path, "wx");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      const pid = Number(readFileSync(path, "utf8").trim());
      if (alive(pid)) {
        throw new CliError(
          `another overlayctl monitor (pid ${pid}) is reading this node's events: a BPF ring ` +
            "buffer has one reader, so a second would take the first one's events; stop it first",
        );
      }
      unlinkSync(path); // left by a monitor that died
      continue;
    }
    writeSync(fd, `${process.pid}\n`);
    closeSync(fd);
    return;
  }
}

export const monitor: CommandModule<object, Args> = {
  command: "monitor",
  describe: "stream drop events (and trace events, --type trace) from the data path",
  builder: (y) =>
    (y as Argv<Args>)
      .option("type", {
        choices: ["drop", "trace", "all"] as const,
        default: "drop" as const,
        describe:
          "drop events, trace events (one per forwarded packet, on only while asked), or both",
      })
      .option("pod", {
        type: "string",
        describe: "only events whose inner source or destination is this IP",
      })
      .option("peer", {
        type: "string",
        describe: "only events from or to this node (underlay IP)",
      })
      .option("reason", { type: "string", describe: "only this drop reason (or trace action)" })
      .option("count", { type: "number", describe: "exit after this many events" })
      .option("vxlan-port", {
        type: "number",
        default: 8472,
        describe: "UDP port of the VXLAN in snapshots",
      })
      .options(outputOption)
      .example("$0 monitor", "drops as they happen")
      .example(
        "$0 monitor --type trace --pod 10.5.1.2 -o json",
        "every packet of one pod, as JSON",
      ) as Argv<Args>,
  handler: async (a: ArgumentsCamelCase<Args>) => {
    a.pod = filterIp("pod", a.pod);
    a.peer = filterIp("peer", a.peer);
    const reasons = [...DROP_REASONS.values(), ...TRACE_ACTIONS];
    if (a.reason && !reasons.includes(a.reason)) {
      throw new UsageError(
        `--reason: "${a.reason}" is none of ${reasons.filter((r) => r !== "unspec").join(", ")}`,
      );
    }
    const lock = lockPath(a.pinPath);
    takeLock(lock);
    let seen = 0;
    let paused = false;
    let timer: NodeJS.Timeout | undefined;
    let finish = (): void => {};
    let live = false; // what waited in the ring before we came is not shown
    let source: EventSource;
    try {
      source = new EventSource(a.pinPath, (raw) => {
        if (!live || (a.count !== undefined && seen >= a.count)) return;
        const e = decodeEvent(raw, a.vxlanPort);
        if (!matches(e, a)) return;
        seen++;
        const line = a.output === "json" ? JSON.stringify(e) : eventLine(e);
        if (!process.stdout.write(`${line}\n`)) {
          // A stalled reader: stop draining, the ring fills, BPF suppresses.
          paused = true;
          process.stdout.once("drain", () => (paused = false));
        }
        if (a.count !== undefined && seen >= a.count) setImmediate(() => finish());
      });
      source.drain(); // discard the backlog
      live = true;
      if (a.type !== "drop") source.setTrace(true);
    } catch (e) {
      unlinkSync(lock);
      throw e;
    }
    const done = new Promise<void>((resolve) => {
      let finished = false;
      finish = () => {
        if (finished) return;
        finished = true;
        if (timer) clearInterval(timer);
        try {
          source.close(); // trace off again
        } finally {
          try {
            unlinkSync(lock);
          } catch {
            /* gone already */
          }
          resolve();
        }
      };
      process.once("SIGINT", finish);
      process.once("SIGTERM", finish);
      process.stdout.on("error", (e: NodeJS.ErrnoException) => {
        if (e.code === "EPIPE") finish(); // our reader went away: a clean exit
      });
      timer = setInterval(() => {
        if (!paused) source.drain();
      }, 20);
    });
    await done;
  },
};
