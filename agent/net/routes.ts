// Peer routes for flannel's host-gw backend and vxlan DirectRouting,
// through iproute2 in the current network namespace. One ip call reads the
// table, one `ip -batch` writes any number of routes: no process per route
// (unless the batch fails, and then only for the routes it did not apply).
// The logic is in ./route-table.ts.
import { CommandError } from "../errors";
import { formatIp, type Cidr, type Ip4 } from "./ip";
import {
  checkProto,
  NO_ROUTE_ERRORS,
  parseRouteGet,
  parseRoutes,
  parseRoutes6,
  parseRules,
  planRoutes,
  replaceCommand,
  deleteCommand,
  routeCommands,
  type DesiredRoute,
  type KernelRoute,
  type Route6,
  type RouteInfo,
  type RuleInfo,
} from "./route-table";
import { run } from "./run";

export * from "./route-table";

/** Table main, IPv4, from one `ip -N -4 -j -d route show table main` (-N: numbers, not names). */
export function listRoutes(opts: { dev?: string; proto?: number } = {}): RouteInfo[] {
  const argv = ["ip", "-N", "-4", "-j", "-d", "route", "show", "table", "main"];
  if (opts.dev !== undefined) argv.push("dev", opts.dev);
  if (opts.proto !== undefined) argv.push("proto", String(opts.proto));
  return parseRoutes(run(argv), opts);
}

/** Table main, IPv6 (`ip -N -6 -j -d route show table main`), for isDirect6. */
export function listRoutes6(): Route6[] {
  return parseRoutes6(run(["ip", "-N", "-6", "-j", "-d", "route", "show", "table", "main"]));
}

/**
 * The kernel's own answer for one address (`ip route get`: rules, table
 * local, exceptions), or undefined when it has no usable route (none,
 * blackhole, unreachable, prohibit). isDirectRoute() on it is flannel's
 * DirectRouting exactly.
 */
export function routeGetKernel(ip: Ip4): KernelRoute | undefined {
  try {
    return parseRouteGet(run(["ip", "-N", "-4", "-j", "-d", "route", "get", formatIp(ip)]));
  } catch (e) {
    if (e instanceof CommandError && NO_ROUTE_ERRORS.test(e.stderr)) return undefined;
    throw e;
  }
}

/** IPv4 policy rules (`ip -N -4 -j rule show`), for rulesBeforeMain(). */
export function listRules(): RuleInfo[] {
  return parseRules(run(["ip", "-N", "-4", "-j", "rule", "show"]));
}

export interface RouteFailure {
  op: "replace" | "delete";
  dst: Cidr;
  /** The ip command, e.g. `route replace 10.5.1.0/24 via 172.31.0.2 dev eth0 proto 157`. */
  command: string;
  /** What ip and the kernel said, e.g. `Error: Nexthop has invalid gateway.` */
  error: string;
}

export interface SyncResult {
  /** Routes written where the slot was empty. */
  added: number;
  /** Routes written over a different one (ours, or a foreign one: see `foreign`). */
  replaced: number;
  /** Routes of ours removed. */
  deleted: number;
  unchanged: number;
  /** Routes of other protocols that were overwritten: worth a warning each. */
  foreign: RouteInfo[];
  /** What could not be applied; everything else was. */
  failed: RouteFailure[];
}

/**
 * Makes the routes of protocol `proto` in table main exactly `desired`:
 * list (one ip call), plan (planRoutes), apply (one `ip -force -batch -`).
 * If the batch reports an error, the table is listed and planned again and
 * what is still to do is applied one command at a time, so one bad route
 * does not hold up the rest and each failure names its route and the
 * kernel's error.
 */
export function syncRoutes(desired: readonly DesiredRoute[], opts: { proto: number }): SyncResult {
  const { proto } = opts;
  checkProto(proto);
  const plan = planRoutes(desired, listRoutes(), proto);
  const lines = routeCommands(plan, proto);
  const failed: RouteFailure[] = [];
  if (lines.length) {
    try {
      // -force: keep going past a failed line; the exit status still says.
      run(["ip", "-force", "-batch", "-"], lines.join("\n") + "\n");
    } catch (e) {
      if (!(e instanceof CommandError)) throw e;
      const again = planRoutes(desired, listRoutes(), proto);
      for (const d of again.replace) {
        const command = replaceCommand(d, proto);
        const error = runOne(command);
        if (error !== undefined) failed.push({ op: "replace", dst: d.dst, command, error });
      }
      for (const r of again.delete) {
        const command = deleteCommand(r, proto);
        const error = runOne(command);
        // Gone meanwhile is what we wanted.
        if (error !== undefined && !/No such process/.test(error)) {
          failed.push({ op: "delete", dst: r.dst, command, error });
        }
      }
    }
  }
  const failedDst = new Set(failed.map((f) => `${f.op} ${f.dst.toString()}`));
  const ok = (op: string, dst: Cidr) => !failedDst.has(`${op} ${dst.toString()}`);
  const written = plan.replace.filter((d) => ok("replace", d.dst));
  return {
    added: written.filter((d) => !d.was).length,
    replaced: written.filter((d) => d.was).length,
    deleted: plan.delete.filter((r) => ok("delete", r.dst)).length,
    unchanged: plan.unchanged,
    foreign: written
      .filter((d) => d.was && d.was.protocol !== proto)
      .map((d) => d.was as RouteInfo),
    failed,
  };
}

/** One batch line as its own ip command: undefined on success, else ip's error. */
function runOne(command: string): string | undefined {
  try {
    run(["ip", ...command.split(" ")]);
    return undefined;
  } catch (e) {
    if (!(e instanceof CommandError)) throw e;
    return e.stderr.trim() || `exit status ${e.status}`;
  }
}
