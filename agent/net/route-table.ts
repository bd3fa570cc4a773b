// The IPv4 main routing table as data, for flannel's host-gw backend and
// vxlan DirectRouting. Pure: parses what `ip -j route` prints, looks
// addresses up (longest prefix), decides whether a peer is directly
// connected, and plans the commands that make our routes what is desired.
// agent/net/routes.ts runs ip.
import { ConfigError, OverlayError } from "../errors";
import { Cidr, formatIp, parseIp, type Ip4 } from "./ip";
import { Cidr6, parseIp6, type Ip6 } from "./ip6";

/**
 * overlayd's rtnetlink protocol number: `ip route ... proto 157`. It marks
 * the routes that are ours, so a sync deletes exactly those. Not one of the
 * kernel's RTPROT_* (0-4 are kernel/boot/static, 8-18, 42, 99, 186-192 are
 * named daemons), not in iproute2's rt_protos, and clear of the numbers
 * other route-writing agents are known to use (Calico 80, OVN 84, FRR
 * 186-199). flannel sets none, so its routes are `proto boot` (3).
 */
export const ROUTE_PROTO = 157;

export interface NextHop {
  gateway?: Ip4;
  dev?: string;
  weight?: number;
  flags: string[];
}

export interface RouteInfo {
  /** 0.0.0.0/0 for "default"; a bare host address is a /32. */
  dst: Cidr;
  gateway?: Ip4;
  /** Absent for blackhole/unreachable/prohibit/throw and multipath routes. */
  dev?: string;
  /**
   * A number (listRoutes asks ip for numbers, and names iproute2 knows by
   * default are mapped back); a name only when ip printed one it got from a
   * local rt_protos.d file.
   */
  protocol: number | string;
  /** "global", "link", "host", ... */
  scope: string;
  /** "unicast", "blackhole", "unreachable", "prohibit", "throw", "local", ... */
  type: string;
  /** The route's priority; 0 when ip prints none. */
  metric: number;
  /** e.g. "onlink", "linkdown". */
  flags: string[];
  mtu?: number;
  prefsrc?: Ip4;
  /** Routes with a TOS only match packets with that TOS. */
  tos?: number;
  /** A multipath route's next hops (then gateway and dev are absent). */
  nexthops?: NextHop[];
}

interface IpJsonNextHop {
  gateway?: string;
  dev?: string;
  weight?: number;
  flags?: string[];
}

interface IpJsonRoute extends IpJsonNextHop {
  type?: string;
  dst: string;
  protocol?: string;
  scope?: string;
  metric?: number;
  metrics?: { mtu?: number }[];
  prefsrc?: string;
  tos?: string;
  table?: string;
  nexthops?: IpJsonNextHop[];
}

// Kernel ABI numbers (rtnetlink.h) to the names iproute2 prints without -N.
const RTN_TYPES = [
  "unspec",
  "unicast",
  "local",
  "broadcast",
  "anycast",
  "multicast",
  "blackhole",
  "unreachable",
  "prohibit",
  "throw",
  "nat",
  "xresolve",
];
const RT_SCOPES: Record<string, string> = {
  "0": "global",
  "200": "site",
  "253": "link",
  "254": "host",
  "255": "nowhere",
};
const RT_TABLES: Record<string, number> = { default: 253, main: 254, local: 255 };
/** iproute2's built-in protocol names (its rt_protos as shipped). */
const RT_PROTOS: Record<string, number> = {
  unspec: 0,
  redirect: 1,
  kernel: 2,
  boot: 3,
  static: 4,
  gated: 8,
  ra: 9,
  mrt: 10,
  zebra: 11,
  bird: 12,
  dnrouted: 13,
  xorp: 14,
  ntk: 15,
  dhcp: 16,
  mrouted: 17,
  keepalived: 18,
  babel: 42,
  openr: 99,
  bgp: 186,
  isis: 187,
  ospf: 188,
  rip: 189,
  eigrp: 192,
};

const isNumeric = (s: string) => /^\d+$/.test(s);

function routeType(t: string | undefined): string {
  if (t === undefined) return "unicast"; // ip omits it without -d
  return isNumeric(t) ? (RTN_TYPES[Number(t)] ?? t) : t;
}

function protocolOf(p: string | undefined, filter: number | undefined): number | string {
  if (p === undefined) return filter ?? 0; // ip omits what it filtered on
  if (isNumeric(p)) return Number(p);
  return RT_PROTOS[p] ?? p;
}

export function parseDst(s: string): Cidr {
  if (s === "default") return Cidr.of(0, 0);
  return s.includes("/") ? Cidr.parse(s, "route dst", false) : Cidr.of(parseIp(s, "route dst"), 32);
}

function nextHops(list: IpJsonNextHop[]): NextHop[] {
  return list.map((h) => ({
    ...(h.gateway !== undefined ? { gateway: parseIp(h.gateway, "nexthop gateway") } : {}),
    ...(h.dev !== undefined ? { dev: h.dev } : {}),
    ...(h.weight !== undefined ? { weight: h.weight } : {}),
    flags: h.flags ?? [],
  }));
}

/**
 * Routes from `ip [-N] -4 -j [-d] route show ...`. `filter` is what the
 * command filtered on: ip leaves those fields out of every route it prints.
 * Without -d, ip omits the type of unicast routes.
 */
export function parseRoutes(
  json: string,
  filter: { dev?: string; proto?: number } = {},
): RouteInfo[] {
  const raw = JSON.parse(json) as IpJsonRoute[];
  return raw.map((r) => {
    const mtu = r.metrics?.find((m) => m.mtu !== undefined)?.mtu;
    const dev = r.dev ?? (r.nexthops ? undefined : filter.dev);
    return {
      dst: parseDst(r.dst),
      ...(r.gateway !== undefined ? { gateway: parseIp(r.gateway, "route gateway") } : {}),
      ...(dev !== undefined ? { dev } : {}),
      protocol: protocolOf(r.protocol, filter.proto),
      scope: r.scope === undefined ? "global" : (RT_SCOPES[r.scope] ?? r.scope),
      type: routeType(r.type),
      metric: r.metric ?? 0,
      flags: r.flags ?? [],
      ...(mtu !== undefined ? { mtu } : {}),
      ...(r.prefsrc !== undefined ? { prefsrc: parseIp(r.prefsrc, "route prefsrc") } : {}),
      ...(r.tos !== undefined && r.tos !== "0" ? { tos: Number(r.tos) } : {}),
      ...(r.nexthops ? { nexthops: nextHops(r.nexthops) } : {}),
    };
  });
}

// --- lookups ---------------------------------------------------------------
//
// routeGet answers from table main only; the kernel answers from the rules.
// They can disagree when:
//   - a policy rule before main sends the lookup to another table (VRFs,
//     wg-quick, source routing): rulesBeforeMain() lists such rules;
//   - the address is our own or a broadcast (table local): the kernel says
//     "local", routeGet the connected network; both have no gateway, so
//     isDirect agrees;
//   - the kernel holds an exception for the address (ICMP redirect, PMTU),
//     a multipath route (the kernel picks one next hop by hash), or
//     net.ipv4.conf.*.ignore_routes_with_linkdown skips a linkdown route.
// routeGetKernel() asks the kernel itself, for one address at a time.

/** What a lookup reads of a route of either family. */
interface Routable<A> {
  dst: { contains(ip: A): boolean; prefixlen: number };
  metric: number;
  type: string;
  tos?: number;
}

/** Longest-prefix match in table main. A blackhole, unreachable, prohibit or
 * throw route that wins the match means "no route": undefined. */
export function routeGet<A, R extends Routable<A>>(routes: readonly R[], ip: A): R | undefined {
  let best: R | undefined;
  for (const r of routes) {
    // A route with a TOS does not match a lookup without one.
    if (r.tos !== undefined || !r.dst.contains(ip)) continue;
    if (
      !best ||
      r.dst.prefixlen > best.dst.prefixlen ||
      (r.dst.prefixlen === best.dst.prefixlen && r.metric < best.metric)
    )
      best = r;
  }
  return best?.type === "unicast" ? best : undefined;
}

/** What flannel's DirectRouting asks of the kernel's answer: a route without a gateway. */
export function isDirectRoute(
  r: { gateway?: Ip4 | Ip6; nexthops?: readonly { gateway?: Ip4 | Ip6 }[] } | undefined,
): boolean {
  return r !== undefined && r.gateway === undefined && !r.nexthops?.some((h) => h.gateway);
}

/**
 * flannel's ip.DirectRouting on table main: the peer is on a directly
 * connected network when the route to it has no gateway. No route (or a
 * blackhole) is not direct: flannel's RouteGet fails and it encapsulates.
 */
export function isDirect(routes: readonly RouteInfo[], ip: Ip4): boolean {
  return isDirectRoute(routeGet(routes, ip));
}

/** An IPv6 route of table main, as much as DirectRouting asks of it. */
export interface Route6 {
  /** ::/0 for "default"; a bare address is a /128. */
  dst: Cidr6;
  gateway?: Ip6;
  dev?: string;
  type: string;
  metric: number;
  nexthops?: { gateway?: Ip6; dev?: string }[];
}

/** Routes from `ip -N -6 -j -d route show table main`. */
export function parseRoutes6(json: string): Route6[] {
  const raw = JSON.parse(json) as IpJsonRoute[];
  const dst = (d: string) =>
    d === "default"
      ? Cidr6.of(0n, 0)
      : d.includes("/")
        ? Cidr6.parse(d, "route dst", false)
        : Cidr6.of(parseIp6(d, "route dst"), 128);
  return raw.map((r) => ({
    dst: dst(r.dst),
    ...(r.gateway !== undefined ? { gateway: parseIp6(r.gateway, "route gateway") } : {}),
    ...(r.dev !== undefined ? { dev: r.dev } : {}),
    type: routeType(r.type),
    metric: r.metric ?? 0,
    ...(r.nexthops
      ? {
          nexthops: r.nexthops.map((h) => ({
            ...(h.gateway !== undefined ? { gateway: parseIp6(h.gateway, "nexthop gateway") } : {}),
            ...(h.dev !== undefined ? { dev: h.dev } : {}),
          })),
        }
      : {}),
  }));
}

/** isDirect for an IPv6 peer (its PublicIPv6): flannel's rule, over IPv6. */
export function isDirect6(routes: readonly Route6[], ip: Ip6): boolean {
  return isDirectRoute(routeGet(routes, ip));
}

/** The kernel's answer for one address (`ip -j -d route get`). */
export interface KernelRoute {
  ip: Ip4;
  /** "unicast", or "local" for our own addresses. */
  type: string;
  gateway?: Ip4;
  dev: string;
  prefsrc?: Ip4;
  table?: number;
  mtu?: number;
  flags: string[];
}

export function parseRouteGet(json: string): KernelRoute | undefined {
  const r = (JSON.parse(json) as IpJsonRoute[])[0];
  if (!r) return undefined;
  const mtu = r.metrics?.find((m) => m.mtu !== undefined)?.mtu;
  const table = r.table === undefined ? undefined : (RT_TABLES[r.table] ?? Number(r.table));
  return {
    ip: parseIp(r.dst, "route get dst"),
    type: routeType(r.type),
    ...(r.gateway !== undefined ? { gateway: parseIp(r.gateway, "route gateway") } : {}),
    dev: r.dev ?? "",
    ...(r.prefsrc !== undefined ? { prefsrc: parseIp(r.prefsrc, "route prefsrc") } : {}),
    ...(table !== undefined ? { table } : {}),
    ...(mtu !== undefined ? { mtu } : {}),
    flags: r.flags ?? [],
  };
}

/**
 * `ip route get` errors that mean the kernel has no usable route: no match
 * (ENETUNREACH), unreachable (EHOSTUNREACH), prohibit (EACCES), blackhole
 * (EINVAL).
 */
export const NO_ROUTE_ERRORS =
  /Network is unreachable|No route to host|Permission denied|Invalid argument/;

// --- policy rules ----------------------------------------------------------

export interface RuleInfo {
  priority: number;
  /** 253 default, 254 main, 255 local, or another table's number/name. */
  table?: number | string;
  /** Everything else ip printed: selectors (dst, fwmark, iif, not, ...) and actions. */
  match: Record<string, unknown>;
}

export function parseRules(json: string): RuleInfo[] {
  const raw = JSON.parse(json) as ({ priority: number; table?: string; src?: string } & Record<
    string,
    unknown
  >)[];
  return raw.map(({ priority, table, ...rest }) => {
    const match: Record<string, unknown> = { ...rest };
    if (match.src === "all") delete match.src;
    return {
      priority,
      ...(table !== undefined
        ? { table: RT_TABLES[table] ?? (isNumeric(table) ? Number(table) : table) }
        : {}),
      match,
    };
  });
}

/**
 * The rules the kernel consults before the first plain `lookup main`,
 * except the plain `lookup local`. When this is empty, routeGet on table
 * main gives the kernel's answer for addresses that are not our own (but
 * see the list above); otherwise ask the kernel (routeGetKernel).
 */
export function rulesBeforeMain(rules: readonly RuleInfo[]): RuleInfo[] {
  const plain = (r: RuleInfo, table: number) =>
    r.table === table && Object.keys(r.match).length === 0;
  const sorted = [...rules].sort((a, b) => a.priority - b.priority);
  const main = sorted.findIndex((r) => plain(r, 254));
  return sorted.slice(0, main < 0 ? sorted.length : main).filter((r) => !plain(r, 255));
}

// --- keeping our routes as desired ----------------------------------------

/** One peer route: `dst via <via> dev <dev> [onlink] [mtu N]`, metric 0. */
export interface DesiredRoute {
  dst: Cidr;
  via: Ip4;
  dev: string;
  onlink?: boolean;
  mtu?: number;
}

/** A route to write with `ip route replace`, and the one it overwrites. */
export interface PlannedRoute extends DesiredRoute {
  was?: RouteInfo;
}

export interface RoutePlan {
  /** New and changed routes (`was` set for changed ones). */
  replace: PlannedRoute[];
  /** Routes of our protocol that are not desired. */
  delete: RouteInfo[];
  /** Routes of other protocols that a replace overwrites (same dst, metric 0). */
  foreign: RouteInfo[];
  /** Desired routes already in the table exactly. */
  unchanged: number;
}

// Kernel interface names: 1-15 bytes, no whitespace, '/' or ':'. Also what
// keeps a batch line one command.
const IFNAME_RE = /^[^\s/:]{1,15}$/;

export function checkProto(proto: number): void {
  if (!Number.isInteger(proto) || proto <= 4 || proto > 255) {
    throw new ConfigError(
      "route protocol",
      `${proto} must be 5..255: 0-4 are the kernel's (boot and static are everyone's routes)`,
    );
  }
}

function checkDesired(d: DesiredRoute): void {
  const where = `route ${d.dst.toString()}`;
  if (!IFNAME_RE.test(d.dev)) {
    throw new ConfigError("dev", `${JSON.stringify(d.dev)} is not an interface name`, where);
  }
  if (d.mtu !== undefined && (!Number.isInteger(d.mtu) || d.mtu < 68 || d.mtu > 65535)) {
    throw new ConfigError("mtu", `${d.mtu} is not within 68..65535`, where);
  }
}

/** Does the route at d's slot (dst, metric 0, no TOS) say exactly what d says? */
function sameRoute(r: RouteInfo, d: DesiredRoute): boolean {
  return (
    r.type === "unicast" &&
    r.nexthops === undefined &&
    r.gateway === d.via &&
    r.dev === d.dev &&
    r.flags.includes("onlink") === (d.onlink ?? false) &&
    r.mtu === d.mtu
  );
}

/**
 * What makes table main hold exactly `desired` among the routes of protocol
 * `proto`: unchanged routes are left alone, changed ones replaced, ours that
 * are not desired deleted; routes of other protocols are never deleted, but
 * one at a desired route's slot (same dst, metric 0) is overwritten, as
 * flannel replaces a conflicting route, and listed in `foreign`.
 */
export function planRoutes(
  desired: readonly DesiredRoute[],
  current: readonly RouteInfo[],
  proto = ROUTE_PROTO,
): RoutePlan {
  checkProto(proto);
  const want = new Map<string, DesiredRoute>();
  for (const d of desired) {
    checkDesired(d);
    const key = d.dst.toString();
    const other = want.get(key);
    if (other && !sameDesired(other, d)) {
      throw new OverlayError(
        `desired routes: ${key} twice, via ${formatIp(other.via)} dev ${other.dev} and via ${formatIp(d.via)} dev ${d.dev}`,
      );
    }
    want.set(key, d);
  }
  // The slot `ip route replace` writes: same dst, metric 0, no TOS.
  const slots = new Map<string, RouteInfo[]>();
  for (const r of current) {
    if (r.metric !== 0 || r.tos !== undefined) continue;
    const key = r.dst.toString();
    const list = slots.get(key);
    if (list) list.push(r);
    else slots.set(key, [r]);
  }
  const plan: RoutePlan = { replace: [], delete: [], foreign: [], unchanged: 0 };
  const kept = new Set<RouteInfo>();
  for (const [key, d] of want) {
    const slot = slots.get(key) ?? [];
    const same = slot.find((r) => r.protocol === proto && sameRoute(r, d));
    if (same) {
      kept.add(same);
      plan.unchanged++;
      continue;
    }
    const was = slot.find((r) => r.protocol === proto) ?? slot[0];
    if (was) kept.add(was);
    plan.replace.push(was ? { ...d, was } : { ...d });
    if (was && was.protocol !== proto) plan.foreign.push(was);
  }
  for (const r of current) {
    if (r.protocol === proto && !kept.has(r)) plan.delete.push(r);
  }
  return plan;
}

function sameDesired(a: DesiredRoute, b: DesiredRoute): boolean {
  return (
    a.via === b.via &&
    a.dev === b.dev &&
    (a.onlink ?? false) === (b.onlink ?? false) &&
    a.mtu === b.mtu
  );
}

/** `route replace <dst> via <gw> dev <dev> proto <N> [onlink] [mtu M]` (an ip -batch line). */
export function replaceCommand(d: DesiredRoute, proto: number): string {
  return [
    `route replace ${d.dst.toString()} via ${formatIp(d.via)} dev ${d.dev} proto ${proto}`,
    d.onlink ? " onlink" : "",
    d.mtu !== undefined ? ` mtu ${d.mtu}` : "",
  ].join("");
}

/**
 * `route del <dst> proto <N> ...`: the protocol (and the route's own metric,
 * TOS, gateway and device) make the kernel delete this route of ours and no
 * one else's, even if it changed since it was listed.
 */
export function deleteCommand(r: RouteInfo, proto: number): string {
  return [
    `route del ${r.dst.toString()} proto ${proto}`,
    r.metric ? ` metric ${r.metric}` : "",
    r.tos !== undefined ? ` tos 0x${r.tos.toString(16)}` : "",
    r.gateway !== undefined ? ` via ${formatIp(r.gateway)}` : "",
    r.dev !== undefined && IFNAME_RE.test(r.dev) ? ` dev ${r.dev}` : "",
  ].join("");
}

/** The plan as ip -batch lines: replaces first, so a moved route has no gap. */
export function routeCommands(plan: RoutePlan, proto: number): string[] {
  return [
    ...plan.replace.map((d) => replaceCommand(d, proto)),
    ...plan.delete.map((r) => deleteCommand(r, proto)),
  ];
}
