// flannel's vxlan backend: the overlay device is a collect_md VXLAN device
// (GRO and kernel decap, see agent/net/link.ts), the programs encapsulate
// towards each peer's PublicIP and VtepMAC, and the lease carries
// BackendData {VNI, VtepMAC}. DirectRouting sends to peers on our own L2
// network without VXLAN (OVL_F_DIRECT entries plus routes, direct-routes.ts).
import { ENCAP_OVERHEAD, F_DIRECT, type HostEntry } from "../bpf/codec";
import { type SubnetMapLike } from "../bpf/subnet-map";
import { type BackendConfig } from "../control/config";
import { type HostEntry6 } from "../bpf/codec6";
import {
  hostEntry6Of,
  hostEntryOf,
  type Lease,
  type LeaseAttrs,
  type SyncPlan,
} from "../control/lease";
import { type Ip4 } from "../net/ip";
import { type Ip6 } from "../net/ip6";
import { type OverlayDeviceOptions } from "../net/link";
import { type Backend, type BackendDeps, type BackendNode } from "./backend";
import { directRoutesOf, type DirectRoutes } from "./direct-routes";

export class VxlanBackend implements Backend {
  readonly type = "vxlan" as const;
  readonly overhead = ENCAP_OVERHEAD;
  readonly decapsulates = true;
  get entriesFromLeases(): boolean {
    return !this.config.directRouting; // DirectRouting: reachability decides too
  }
  private routes: DirectRoutes | undefined;

  constructor(
    readonly config: BackendConfig,
    private readonly deps: BackendDeps,
  ) {}

  check(node: BackendNode): void {
    if (this.config.directRouting) this.routes = directRoutesOf(node.iface, this.deps);
  }

  device(): OverlayDeviceOptions {
    return { port: this.config.port, gbp: this.config.gbp };
  }

  /** flannel's dual-stack vxlan lease: BackendV6Data has the same VNI; its
   * VtepMAC is ours too, since one collect_md device carries both families. */
  leaseAttrs(publicIp: Ip4, vtepMac: string, v6?: { publicIp: Ip6; vtepMac: string }): LeaseAttrs {
    const vni = this.config.vni;
    return {
      publicIp,
      backendType: "vxlan",
      vni,
      vtepMac,
      ...(v6 ? { publicIpv6: v6.publicIp, vni6: vni, vtepMac6: v6.vtepMac } : {}),
    };
  }

  entryOf(l: Lease, log: (msg: string) => void): HostEntry | undefined {
    const e = hostEntryOf(l, log);
    if (e && this.routes?.direct(l.attrs.publicIp)) e.flags |= F_DIRECT;
    return e;
  }

  /** DirectRouting: an IPv6 peer on our own network is sent to unwrapped too. */
  entryOf6(l: Lease, log: (msg: string) => void): HostEntry6 | undefined {
    const e = hostEntry6Of(l, log);
    if (e && this.routes?.direct6(e.remoteIp)) e.flags |= F_DIRECT;
    return e;
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
    const c = this.config;
    return {
      type: "vxlan",
      vni: c.vni,
      port: c.port,
      gbp: c.gbp,
      directRouting: c.directRouting,
      ...(c.mtu ? { mtu: c.mtu } : {}),
    };
  }
}
