// flannel's host-gw backend: no encapsulation. Every peer must be on our own
// L2 network; its subnet is routed `via PublicIP dev <external interface>`
// (direct-routes.ts, re-checked every 10 s), and the programs send pod
// packets to that next hop themselves (OVL_F_DIRECT). The lease carries
// BackendType "host-gw" and no BackendData. Behind NAT it cannot work: the
// PublicIP others route to must be the interface's own address. In a
// dual-stack network the same for IPv6: PublicIPv6 on the interface, peers'
// IPv6 subnets sent to their PublicIPv6 (OVL_F_DIRECT in ovl_subnets6).
import { F_DIRECT, type HostEntry } from "../bpf/codec";
import { type HostEntry6 } from "../bpf/codec6";
import { type SubnetMapLike } from "../bpf/subnet-map";
import { type BackendConfig } from "../control/config";
import { type Lease, type LeaseAttrs, type SyncPlan } from "../control/lease";
import { OverlayError } from "../errors";
import { formatIp, type Ip4 } from "../net/ip";
import { formatIp6, type Ip6 } from "../net/ip6";
import { ipv4Addresses, ipv6Addresses, type OverlayDeviceOptions } from "../net/link";
import { type Backend, type BackendDeps, type BackendNode } from "./backend";
import { directRoutesOf, type DirectRoutes } from "./direct-routes";

/** host-gw entries carry no VTEP: the inner frame goes to the next hop. */
const NO_MAC = "00:00:00:00:00:00";

export class HostGwBackend implements Backend {
  readonly type = "host-gw" as const;
  readonly overhead = 0;
  readonly decapsulates = false;
  readonly entriesFromLeases = false; // direct reachability decides
  private routes: DirectRoutes | undefined;

  constructor(
    readonly config: BackendConfig,
    private readonly deps: BackendDeps,
  ) {}

  check(node: BackendNode): void {
    const own = (this.deps.addresses ?? ipv4Addresses)().filter((a) => a.ifname === node.iface);
    if (!own.some((a) => a.ip === node.publicIp)) {
      throw new OverlayError(
        `host-gw backend: PublicIP ${formatIp(node.publicIp)} is not an address of ` +
          `${node.iface} (${own.map((a) => formatIp(a.ip)).join(", ") || "no IPv4 address"}); ` +
          "behind NAT peers cannot route to it: use the vxlan backend",
      );
    }
    const v6 = node.publicIpv6;
    if (v6 !== undefined) {
      const own6 = (this.deps.addresses6 ?? ipv6Addresses)().filter((a) => a.ifname === node.iface);
      if (!own6.some((a) => a.ip === v6)) {
        throw new OverlayError(
          `host-gw backend: PublicIPv6 ${formatIp6(v6)} is not an address of ${node.iface} ` +
            `(${own6.map((a) => formatIp6(a.ip)).join(", ") || "no global IPv6 address"}); ` +
            "peers route the IPv6 subnet to it on that interface: use the vxlan backend",
        );
      }
    }
    this.routes = directRoutesOf(node.iface, this.deps);
  }

  device(): OverlayDeviceOptions {
    return {}; // a dummy: ovl_encap_dev catches what the routes miss
  }

  /** flannel's host-gw lease: PublicIPv6 in a dual-stack network, no backend data. */
  leaseAttrs(publicIp: Ip4, _vtepMac: string, v6?: { publicIp: Ip6 }): LeaseAttrs {
    return { publicIp, backendType: "host-gw", ...(v6 ? { publicIpv6: v6.publicIp } : {}) };
  }

  entryOf(l: Lease, log: (msg: string) => void): HostEntry | undefined {
    const ip = formatIp(l.attrs.publicIp);
    if (l.attrs.backendType !== "host-gw") {
      log(
        `lease ${l.subnet} (PublicIP ${ip}): BackendType "${l.attrs.backendType}" but this ` +
          `network's Backend.Type is "host-gw"; not programmed (one backend per network)`,
      );
      return undefined;
    }
    if (!this.routes?.direct(l.attrs.publicIp)) {
      log(
        `lease ${l.subnet}: PublicIP ${ip} is not on a directly connected network of ` +
          `${this.routes?.underlay ?? "the external interface"}; host-gw needs direct L2 ` +
          "between hosts (use vxlan, or DirectRouting with vxlan); not programmed",
      );
      return undefined;
    }
    return { remoteIp: l.attrs.publicIp, vtepMac: NO_MAC, flags: F_DIRECT };
  }

  /** A dual-stack peer's IPv6 subnet, via its PublicIPv6 on our network. */
  entryOf6(l: Lease, log: (msg: string) => void): HostEntry6 | undefined {
    const pub6 = l.attrs.publicIpv6;
    if (!l.subnet6 || l.attrs.backendType !== "host-gw") return undefined;
    if (pub6 === undefined) {
      log(`lease ${l.subnet} has IPv6 subnet ${l.subnet6} but no PublicIPv6; IPv6 not programmed`);
      return undefined;
    }
    if (!this.routes?.direct6(pub6)) {
      log(
        `lease ${l.subnet}: PublicIPv6 ${formatIp6(pub6)} is not on a directly connected ` +
          "IPv6 network; host-gw needs direct L2 between hosts; IPv6 subnet " +
          `${l.subnet6} not programmed`,
      );
      return undefined;
    }
    return { remoteIp: pub6, vtepMac: NO_MAC, flags: F_DIRECT };
  }

  start(map: SubnetMapLike, resync: (why: string) => void): void {
    this.routes?.start(map, resync);
  }

  changed(plan?: SyncPlan): void {
    this.routes?.changed(plan);
  }

  stop(): void {
    this.routes?.stop();
  }

  describe(): Record<string, string | number | boolean> {
    return { type: "host-gw" };
  }
}
