// The most common flannel pitfall: a cluster network that overlaps what the
// hosts already route, so packets for some pods silently go elsewhere. At
// start and on every route or address change (netlink, through `ip
// monitor`), the agent looks for routes inside the cluster network and
// addresses in it that are not its own, and reports each by name: the log
// (once per finding, and again when it is gone), /readyz (a warning, not a
// failure), overlayctl status and overlay_route_overlap in /metrics.
// A route that merely covers the network (a default route, 10.0.0.0/8) is no
// conflict: the overlay's own, more specific route wins.
import { IpMonitor } from "../net/ip-monitor";
import { type Logger } from "../log";
import { type Cidr, Cidr as CidrClass, formatIp, type Ip4 } from "../net/ip";
import { ipv4Addresses } from "../net/link";
import { listRoutes, type RouteInfo } from "../net/routes";

/** rtnetlink protocol numbers the kernel and iproute2 name. */
const PROTOS: Record<number, string> = {
  1: "redirect",
  2: "kernel",
  3: "boot",
  4: "static",
  16: "dhcp",
  157: "overlayd",
  186: "bgp",
  188: "ospf",
  42: "babel",
  12: "bird",
  11: "zebra",
};

export interface Overlap {
  kind: "route" | "address";
  /** The overlapping prefix: a route's destination, an address/prefixlen. */
  prefix: string;
  dev: string;
  /** Who installed it, as the kernel says (the route's protocol). */
  origin: string;
}

export interface OwnState {
  /** The overlay device (its address and the network route are ours). */
  overlayDev: string;
  /** Our lease: the pod bridge's connected route and gateway address are in it. */
  subnet?: Cidr;
}

function protoName(p: number | string): string {
  return typeof p === "number" ? (PROTOS[p] ?? `proto ${p}`) : p;
}

/** Pure: what lies inside the cluster network and is not ours. */
export function findOverlaps(
  network: Cidr,
  routes: readonly RouteInfo[],
  addresses: readonly { ifname: string; ip: Ip4; prefixlen: number }[],
  own: OwnState,
): Overlap[] {
  const out: Overlap[] = [];
  const ours = (c: Cidr, dev: string | undefined): boolean =>
    dev === own.overlayDev || (own.subnet !== undefined && own.subnet.covers(c));
  for (const r of routes) {
    if (!network.covers(r.dst)) continue; // outside, or only covering it
    if (r.protocol === 157 || ours(r.dst, r.dev)) continue;
    out.push({
      kind: "route",
      prefix: r.dst.toString(),
      dev: r.dev ?? (r.type !== "unicast" ? r.type : "multipath"),
      origin: protoName(r.protocol),
    });
  }
  for (const a of addresses) {
    const host = CidrClass.of(a.ip, 32);
    if (!network.covers(host) || ours(host, a.ifname)) continue;
    out.push({
      kind: "address",
      prefix: `${formatIp(a.ip)}/${a.prefixlen}`,
      dev: a.ifname,
      origin: "address",
    });
  }
  return out;
}

export function describeOverlap(o: Overlap): string {
  return `${o.kind} ${o.prefix} dev ${o.dev} (${o.origin})`;
}

/** Watches the host's routes and addresses for overlaps with the network. */
export class OverlapWatch {
  private current = new Map<string, Overlap>();
  private monitor: IpMonitor | undefined;
  private pending: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly network: Cidr,
    private readonly own: () => OwnState,
    private readonly log: Logger,
    private readonly changed: (overlaps: Overlap[]) => void,
  ) {}

  get overlaps(): Overlap[] {
    return [...this.current.values()];
  }

  start(): void {
    this.check();
    const recheck = () => {
      if (this.pending || this.stopped) return;
      this.pending = setTimeout(() => {
        this.pending = undefined;
        this.check();
      }, 200);
      this.pending.unref();
    };
    this.monitor = new IpMonitor(["route", "address"], this.log).on(recheck, recheck).start();
  }

  stop(): void {
    this.stopped = true;
    if (this.pending) clearTimeout(this.pending);
    this.monitor?.stop();
  }

  check(): void {
    let found: Overlap[];
    try {
      found = findOverlaps(this.network, listRoutes(), ipv4Addresses(), this.own());
    } catch (e) {
      this.log.error("cannot check routes for overlaps", { error: (e as Error).message });
      return;
    }
    const next = new Map(found.map((o) => [describeOverlap(o), o]));
    for (const [k, o] of next) {
      if (this.current.has(k)) continue;
      this.log.warn("overlaps the cluster network: packets for these pods may go elsewhere", {
        network: this.network.toString(),
        [o.kind]: o.prefix,
        dev: o.dev,
        origin: o.origin,
      });
    }
    for (const [k, o] of this.current) {
      if (!next.has(k)) {
        this.log.info("overlap with the cluster network gone", { [o.kind]: o.prefix, dev: o.dev });
      }
    }
    const differs =
      next.size !== this.current.size || [...next.keys()].some((k) => !this.current.has(k));
    this.current = next;
    if (differs) this.changed(found);
  }
}
