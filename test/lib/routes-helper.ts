// Runs agent/net/routes.ts inside a network namespace (ip netns exec NS node
// routes-helper.js) with one request as JSON on stdin (5,000 routes do not
// fit in one argv string) and the answer as JSON on stdout:
//   {"cmd":"sync","proto":N,"desired":[{"dst":"10.5.1.0/24","via":"172.30.1.1","dev":"eth0","onlink"?,"mtu"?}]}
//       -> {"ms": <time syncRoutes took>, "added", "replaced", "deleted", "unchanged", "foreign": [...], "failed": [...]}
//   {"cmd":"lookup","ips":["10.5.1.9"]}
//       -> {"rulesBeforeMain": [...], "answers": [{"ip", "table": route dst or null, "tableDirect", "kernel": gateway or "direct" or null, "kernelDirect"}]}
import { readFileSync } from "node:fs";
import { Cidr, formatIp, parseIp } from "../../agent/net/ip";
import {
  isDirect,
  isDirectRoute,
  listRoutes,
  listRules,
  routeGet,
  routeGetKernel,
  rulesBeforeMain,
  syncRoutes,
  type RouteInfo,
} from "../../agent/net/routes";

interface Request {
  cmd: string;
  proto?: number;
  desired?: { dst: string; via: string; dev: string; onlink?: boolean; mtu?: number }[];
  ips?: string[];
}

const show = (r: RouteInfo) => ({
  dst: r.dst.toString(),
  gateway: r.gateway === undefined ? undefined : formatIp(r.gateway),
  dev: r.dev,
  protocol: r.protocol,
  metric: r.metric,
});

const req = JSON.parse(readFileSync(0, "utf8")) as Request;
if (req.cmd === "sync") {
  const desired = (req.desired ?? []).map((d) => ({
    dst: Cidr.parse(d.dst),
    via: parseIp(d.via),
    dev: d.dev,
    ...(d.onlink ? { onlink: true } : {}),
    ...(d.mtu !== undefined ? { mtu: d.mtu } : {}),
  }));
  const t0 = performance.now();
  const r = syncRoutes(desired, { proto: req.proto as number });
  const ms = performance.now() - t0;
  process.stdout.write(
    JSON.stringify({
      ms,
      ...r,
      foreign: r.foreign.map(show),
      failed: r.failed.map((f) => ({ ...f, dst: f.dst.toString() })),
    }),
  );
} else if (req.cmd === "lookup") {
  const routes = listRoutes();
  const answers = (req.ips ?? []).map((a) => {
    const ip = parseIp(a);
    const t = routeGet(routes, ip);
    const k = routeGetKernel(ip);
    return {
      ip: a,
      table: t ? t.dst.toString() : null,
      tableDirect: isDirect(routes, ip),
      kernel: k ? (k.gateway === undefined ? "direct" : formatIp(k.gateway)) : null,
      kernelDirect: isDirectRoute(k),
    };
  });
  process.stdout.write(
    JSON.stringify({
      rulesBeforeMain: rulesBeforeMain(listRules()).map((r) => r.priority),
      answers,
    }),
  );
} else {
  process.stderr.write("usage: routes-helper < {cmd: sync|lookup, ...}\n");
  process.exit(2);
}
