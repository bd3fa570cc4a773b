// Peers on our own L2 network (host-gw, vxlan DirectRouting): which peers
// are directly reachable (flannel's rule: the route to the PublicIP is one
// route without a gateway), and the kernel routes `subnet via PublicIP dev
// <underlay>` that follow the map's OVL_F_DIRECT entries. The routes carry
// overlayd's rtnetlink protocol, so only ours are ever removed; they are
// re-checked every 10 s (a link flap or a route flush loses them) and right
// after every map change. The programs do not need them (they send to the
// next hop themselves); host traffic and reverse-path checks do. The routes
// wanted are kept from the reconciler's plans (the map is listed once, at
// start): under churn at 65,536 leases a listing of the map per change
// would cost more than the change.
//
// IPv6 peers of a dual-stack network (direct6) get OVL_F_DIRECT entries in
// ovl_subnets6 by the same rule over the IPv6 table, and no routes: the
// programs send to the next hop, host traffic takes ovl0's IPv6 route into
// the same programs, and IPv6 has no reverse-path filter to satisfy.
import { F_DIRECT, F_LOCAL } from "../bpf/codec";
import { type HostEntry } from "../bpf/codec";
import { type SubnetMapLike } from "../bpf/subnet-map";
import { subnetId, type SyncPlan } from "../control/lease";
import { type Logger } from "../log";
import { type BackendDeps } from "./backend";
import { formatIp, type Cidr, type Ip4 } from "../net/ip";
import { formatIp6, type Ip6 } from "../net/ip6";
import {
  isDirect,
  isDirect6,
  listRoutes,
  listRoutes6,
  ROUTE_PROTO,
  syncRoutes,
  type Route6,
  type RouteInfo,
} from "../net/routes";

export const RECHECK_MS = 10_000;
const DEBOUNCE_MS = 100;

export class DirectRoutes {
  private routes: RouteInfo[] = [];
  private routes6: Route6[] | undefined;
  /** Peer address -> directly reachable, as entries were last computed. */
  private readonly seen = new Map<Ip4, boolean>();
  private readonly seen6 = new Map<Ip6, boolean>();
  private map: SubnetMapLike | undefined;
  /** The routes the map's direct entries want, by subnetId. */
  private readonly want = new Map<number, { dst: Cidr; via: Ip4; dev: string }>();
  /** A change without a plan: list the map again before the next sync. */
  private stale = false;
  private resync: ((why: string) => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private pending: NodeJS.Timeout | undefined;

  constructor(
    readonly underlay: string,
    private readonly log: Logger,
    private readonly read: () => RouteInfo[] = () => listRoutes(),
    /** Makes the kernel's routes these (tests record instead). */
    private readonly apply: typeof syncRoutes = syncRoutes,
    /** The IPv6 table, read once an IPv6 peer is asked about. */
    private readonly read6: () => Route6[] = () => listRoutes6(),
  ) {
    this.refresh();
  }

  /** Re-reads the routing table (one `ip route` call, two with IPv6 peers). */
  refresh(): void {
    this.routes = this.read();
    if (this.routes6) this.routes6 = this.read6();
  }

  /** Is the peer on a directly connected network of ours? Remembered, so
   * that a change of the routing table can be noticed. */
  direct(ip: Ip4): boolean {
    const d = isDirect(this.routes, ip);
    this.seen.set(ip, d);
    return d;
  }

  /** direct() for an IPv6 peer (its PublicIPv6), over the IPv6 table. */
  direct6(ip: Ip6): boolean {
    this.routes6 ??= this.read6();
    const d = isDirect6(this.routes6, ip);
    this.seen6.set(ip, d);
    return d;
  }

  start(map: SubnetMapLike, resync: (why: string) => void): void {
    this.map = map;
    this.resync = resync;
    this.stale = true;
    this.sync();
    this.timer = setInterval(() => this.recheck(), RECHECK_MS);
    this.timer.unref();
  }

  /** The map changed by `plan` (or in a way only a listing tells). */
  changed(plan?: SyncPlan): void {
    if (!this.map) return;
    if (plan) {
      for (const d of plan.deletes) this.note(d, undefined);
      for (const u of plan.upserts) this.note(u.subnet, u.host);
    } else {
      this.stale = true;
    }
    if (this.pending) return;
    this.pending = setTimeout(() => {
      this.pending = undefined;
      this.sync();
    }, DEBOUNCE_MS);
    this.pending.unref();
  }

  private note(subnet: Cidr, host: HostEntry | undefined): void {
    if (host && host.flags & F_DIRECT && !(host.flags & F_LOCAL)) {
      this.want.set(subnetId(subnet), { dst: subnet, via: host.remoteIp, dev: this.underlay });
    } else {
      this.want.delete(subnetId(subnet));
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.pending) clearTimeout(this.pending);
    this.timer = this.pending = undefined;
    this.map = undefined; // routes stay: a restart keeps forwarding
  }

  /** Every 10 s: has any peer moved behind a router, or onto our network? */
  recheck(): void {
    try {
      this.refresh();
    } catch (e) {
      this.log.error("cannot read the routing table", { error: (e as Error).message });
      return;
    }
    const moved = [
      ...[...this.seen]
        .filter(([ip, was]) => isDirect(this.routes, ip) !== was)
        .map(([ip, was]) => [formatIp(ip), was] as const),
      ...[...this.seen6]
        .filter(([ip, was]) => isDirect6(this.routes6 ?? [], ip) !== was)
        .map(([ip, was]) => [formatIp6(ip), was] as const),
    ];
    if (moved.length && this.resync) {
      const [ip, was] = moved[0] as readonly [string, boolean];
      this.seen.clear();
      this.seen6.clear();
      this.resync(
        `${moved.length} peer(s) changed reachability (${ip} is ` +
          `${was ? "no longer" : "now"} on a directly connected network)`,
      );
      return; // the re-list changes the map, which syncs the routes
    }
    this.sync();
  }

  /** Makes our routes exactly the map's direct entries. */
  sync(): void {
    const map = this.map;
    if (!map) return;
    try {
      if (this.stale) {
        this.want.clear();
        for (const e of map.list()) this.note(e.subnet, e.host);
        this.stale = false;
      }
      const desired = [...this.want.values()];
      const r = this.apply(desired, { proto: ROUTE_PROTO });
      for (const f of r.foreign) {
        this.log.warn("replaced a conflicting route", {
          dst: f.dst.toString(),
          protocol: f.protocol,
          dev: f.dev,
        });
      }
      for (const f of r.failed) {
        this.log.error("route not programmed", { command: f.command, error: f.error });
      }
      if (r.added || r.replaced || r.deleted) {
        this.log.info("direct routes synced", {
          added: r.added,
          replaced: r.replaced,
          deleted: r.deleted,
          routes: desired.length,
        });
      }
    } catch (e) {
      this.log.error("direct routes not synced", { error: (e as Error).message });
    }
  }
}

/** The DirectRoutes of a backend (host-gw, vxlan DirectRouting) on its
 * external interface, reading the tables its deps give (tests inject them). */
export function directRoutesOf(iface: string, deps: BackendDeps): DirectRoutes {
  return new DirectRoutes(iface, deps.log, deps.readRoutes, undefined, deps.readRoutes6);
}

/** `overlayd --cleanup`: removes every route overlayd made. */
export function removeDirectRoutes(): void {
  syncRoutes([], { proto: ROUTE_PROTO });
}
