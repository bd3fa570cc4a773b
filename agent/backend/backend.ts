// What a backend is, as flannel's pkg/backend/<type> are: what it registers
// in its lease, which map entry (if any) a peer's lease becomes, the overlay
// device and decapsulation it needs, and the upkeep it does while running.
// The agent's lifecycle code calls these and never branches on the type.
import { type HostEntry } from "../bpf/codec";
import { type HostEntry6 } from "../bpf/codec6";
import { type SubnetMapLike } from "../bpf/subnet-map";
import { type BackendConfig, type BackendType } from "../control/config";
import { type Lease, type LeaseAttrs, type SyncPlan } from "../control/lease";
import { type Logger } from "../log";
import { type Ip4 } from "../net/ip";
import { type Ip6 } from "../net/ip6";
import { type OverlayDeviceOptions } from "../net/link";
import { type Route6, type RouteInfo } from "../net/routes";

export interface BackendNode {
  /** The external interface and the address the lease announces. */
  iface: string;
  publicIp: Ip4;
  /** The PublicIPv6, in a dual-stack network. */
  publicIpv6?: Ip6;
}

export interface Backend {
  readonly type: BackendType;
  readonly config: BackendConfig;
  /** Bytes the encapsulation costs: underlay MTU - overlay MTU. */
  readonly overhead: number;
  /** A peer's map entry depends on its lease alone (not on our routes), so
   * a pinned map stays right across a restart (warm restarts). */
  readonly entriesFromLeases: boolean;
  /** Decapsulation programs are attached only for a backend that encapsulates. */
  readonly decapsulates: boolean;
  /** Refuses a node this backend cannot run on, before anything is touched. */
  check(node: BackendNode): void;
  /** How the overlay device is made (a VXLAN socket, or a plain dummy). */
  device(): OverlayDeviceOptions;
  /** What our lease announces; `v6` in a dual-stack network. */
  leaseAttrs(publicIp: Ip4, vtepMac: string, v6?: { publicIp: Ip6; vtepMac: string }): LeaseAttrs;
  /** The map entry for a peer's lease; undefined (said through log) when
   * it cannot be programmed. */
  entryOf(l: Lease, log: (msg: string) => void): HostEntry | undefined;
  /** The IPv6 map entry for a peer's dual-stack lease; absent for a backend
   * that cannot carry IPv6 (the agent refuses EnableIPv6 with it). */
  entryOf6?(l: Lease, log: (msg: string) => void): HostEntry6 | undefined;
  /** Upkeep that follows the map (routes): after the first full sync.
   * `resync` asks the agent for a full re-list (the backend's view of which
   * peers it can reach changed). */
  start(map: SubnetMapLike, resync: (why: string) => void): void;
  /** The map changed by this plan (none: re-read the map): upkeep soon. */
  changed(plan?: SyncPlan): void;
  stop(): void;
  /** One line for the log, /readyz and overlayctl status. */
  describe(): Record<string, string | number | boolean>;
}

export interface BackendDeps {
  log: Logger;
  /** The main routing table (default: listRoutes(); tests inject one). */
  readRoutes?: () => RouteInfo[];
  /** The node's IPv4 addresses (default: ipv4Addresses()). */
  addresses?: () => { ifname: string; ip: Ip4 }[];
  /** The IPv6 routing table (default: listRoutes6()). */
  readRoutes6?: () => Route6[];
  /** The node's global IPv6 addresses (default: ipv6Addresses()). */
  addresses6?: () => { ifname: string; ip: Ip6 }[];
}
