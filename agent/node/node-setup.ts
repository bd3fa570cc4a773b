// What a node needs before the first lease entry can forward: the overlay
// device (MTU = underlay - 50, address = first address of our subnet, as
// flannel gives flannel.1), ip_forward, the cluster-network route, the data
// path loaded and attached, and our own subnet in the map as LOCAL. In a
// dual-stack network the same device carries IPv6 too (collect_md VXLAN
// sends either family): the IPv6 subnet's first address /128 on it, as
// flannel gives flannel-v6.1, IPv6 forwarding, the IPv6 network's route,
// our PublicIPv6 in the programs, our IPv6 subnet LOCAL in ovl_subnets6.
import { isDeepStrictEqual } from "node:util";
import { Datapath, type DatapathConfig, type DecapChoice, type DecapMode } from "../bpf/datapath";
import { ENCAP_OVERHEAD, F_LOCAL } from "../bpf/codec";
import { type Backend } from "../backend";
import { overlayMtuOf } from "../control/config";
import { SubnetHostMap, SubnetHostMap6 } from "../bpf/subnet-map";
import { OverlayError } from "../errors";
import { type Cidr, type Ip4 } from "../net/ip";
import { ip6ToBytes, type Cidr6, type Ip6 } from "../net/ip6";
import {
  ensureOverlayDevice,
  linkUp,
  type LinkInfo,
  type OverlayDevice,
  mustLink,
  replaceRoute,
  replaceRoute6,
  setOverlayAddress,
  setOverlayAddress6,
  setSysctl,
} from "../net/link";

/** The IPv6 half of a dual-stack node. */
export interface NodeV6 {
  publicIp: Ip6;
  network: Cidr6;
  subnet: Cidr6;
}

export interface NodeSetupOptions {
  underlay: string;
  publicIp: Ip4;
  network: Cidr;
  subnet: Cidr;
  vni: number;
  port: number;
  /** The network's backend: device kind, MTU, whether anything is decapsulated. */
  backend: Backend;
  /** The overlay MTU (backendMtu: with room for IPv6's outer header in a
   * dual-stack network); default the IPv4-only one. */
  mtu?: number;
  /** A dual-stack network: our PublicIPv6, the IPv6 network and subnet. */
  v6?: NodeV6;
  pinPath: string;
  objDir: string;
  decap: DecapChoice;
  overlayName: string;
  /** An upgrade across an ABI change made new subnet maps under this pin
   * directory: fill them (from etcd) before the programs use them. */
  refill?: (stagedPinPath: string) => void;
  /** The data path prepareNode began loading, its `loaded` settled. */
  prepared?: PreparedNode;
  /** Leave the overlay device down, without its address and route: the
   * caller brings it up with `bringUp()` (taking over from flannel, whose
   * device still holds the port and routes the node). */
  deferUp?: boolean;
}

export interface NodeSetupResult {
  datapath: Datapath;
  vtepMac: string;
  mtu: number;
  underlayIfindex: number;
  overlayIfindex: number;
  kernelDecap: boolean;
  /** The decap mechanism attached, and why (what --decap auto decided). */
  mechanism: DecapMode | "none";
  reason: string;
  /** What happened to each pinned map (reuse, or carried over an ABI change). */
  pinPlan: Datapath["pinPlan"];
  /** Up, address, route: done already unless deferUp. */
  bringUp: () => void;
}

/** The overlay MTU flannel's vxlan backend uses: underlay MTU - 50. */
export function overlayMtu(underlayMtu: number): number {
  return underlayMtu - ENCAP_OVERHEAD;
}

/** The overlay (pod) MTU of a backend on an underlay: Backend.MTU checked;
 * with enableIPv6, room for the IPv6 outer header (config.ts familyOverhead). */
export function backendMtu(
  backend: Backend,
  underlayMtu: number,
  where?: string,
  enableIPv6 = false,
): number {
  return overlayMtuOf(backend.config, underlayMtu, backend.overhead, where, enableIPv6);
}

/** What setupNode needs of the devices, before the lease is known. */
export type NodePrepareOptions = Omit<
  NodeSetupOptions,
  "subnet" | "network" | "v6" | "refill" | "deferUp" | "prepared"
> & {
  /** Our PublicIPv6 in a dual-stack network. */
  publicIp6?: Ip6;
  /** The devices as the caller just found or made them (else looked up). */
  devices?: { underlay: LinkInfo; overlay: OverlayDevice };
};

/** The data path loading (or loaded) before the lease: see prepareNode. */
export interface PreparedNode {
  underlay: LinkInfo;
  overlay: OverlayDevice;
  datapath: Datapath;
  /** Settles when the load is done or has failed (setupNode then throws it). */
  loaded: Promise<void>;
}

/**
 * The part of setupNode that needs no lease: the programs load (and their
 * maps are made) off the main thread while the agent lists the leases.
 * setupNode takes the result once `loaded` has settled, if its own
 * settings turned out the same; otherwise it loads afresh.
 */
export function prepareNode(o: NodePrepareOptions): PreparedNode {
  const { underlay, overlay } = devicesOf(o, o.devices);
  const datapath = new Datapath(datapathConfig(o, underlay, overlay, o.publicIp6));
  return { underlay, overlay, datapath, loaded: datapath.preload() };
}

function datapathConfig(
  o: NodePrepareOptions,
  underlay: LinkInfo,
  overlay: OverlayDevice,
  publicIp6: Ip6 | undefined,
): DatapathConfig {
  return {
    pinPath: o.pinPath,
    objDir: o.objDir,
    vni: o.vni,
    port: o.port,
    localIp: o.publicIp,
    underlay: { name: underlay.name, ifindex: underlay.ifindex, mac: underlay.mac },
    overlay: { name: overlay.name, ifindex: overlay.ifindex, mac: overlay.mac },
    decap: o.backend.decapsulates ? o.decap : "none",
    kernelDecap: overlay.kernelDecap,
    gbp: o.backend.config.gbp,
    ...(publicIp6 !== undefined ? { localIp6: ip6ToBytes(publicIp6) } : {}),
  };
}

/** The underlay and the overlay device: as given (found or made a moment
 * ago), else looked up, the overlay device made if need be. */
function devicesOf(
  o: NodePrepareOptions,
  given: { underlay: LinkInfo; overlay: OverlayDevice } | undefined,
): { underlay: LinkInfo; overlay: OverlayDevice; mtu: number } {
  const underlay = given?.underlay ?? mustLink(o.underlay);
  const mtu = o.mtu ?? backendMtu(o.backend, underlay.mtu);
  const overlay = given?.overlay ?? ensureOverlayDevice(o.overlayName, mtu, o.backend.device());
  return { underlay, overlay, mtu };
}

export function setupNode(o: NodeSetupOptions): NodeSetupResult {
  const { underlay, overlay, mtu } = devicesOf(o, o.prepared);
  setSysctl(["net", "ipv4", "ip_forward"], "1");
  const config = datapathConfig(o, underlay, overlay, o.v6?.publicIp);
  let datapath = o.prepared?.datapath;
  if (!datapath || !isDeepStrictEqual(datapath.config, config)) {
    datapath?.close();
    datapath = new Datapath(config);
  }
  datapath.start({ refill: o.refill });
  const mechanism = datapath.mechanism as DecapMode | "none";
  if (mechanism === "xdp") {
    // XDP hands decapsulated packets to the stack on the underlay, whose
    // routes point the source subnet elsewhere: strict rp_filter drops them.
    setSysctl(["net", "ipv4", "conf", o.underlay, "rp_filter"], "2");
  }
  const map = SubnetHostMap.openPinned(o.pinPath);
  try {
    map.upsert(o.subnet, { remoteIp: o.publicIp, vtepMac: overlay.mac, flags: F_LOCAL });
  } finally {
    map.close();
  }
  const v6 = o.v6;
  if (v6) {
    const map6 = SubnetHostMap6.openPinned(o.pinPath);
    try {
      map6.upsert(v6.subnet, { remoteIp: v6.publicIp, vtepMac: overlay.mac, flags: F_LOCAL });
    } finally {
      map6.close();
    }
    setSysctl(["net", "ipv6", "conf", "all", "forwarding"], "1");
    setSysctl(["net", "ipv6", "conf", overlay.name, "disable_ipv6"], "0");
  }
  const bringUp = (): void => {
    // Up only now: ovl_decap_dev guards the device's socket from its first packet.
    try {
      if (!overlay.up) linkUp(overlay.name); // a restart finds it up
    } catch (e) {
      throw new OverlayError(
        `cannot bring ${overlay.name} up: is UDP port ${o.port} taken on this node ` +
          `(another VXLAN device, such as flannel.1)? ${(e as Error).message}`,
      );
    }
    // Address and route last: traffic enters the overlay only once it works.
    setOverlayAddress(overlay.name, o.subnet.addr, o.network);
    replaceRoute(o.network, overlay.name, o.subnet.addr);
    if (v6) {
      setOverlayAddress6(overlay.name, v6.subnet.addr, v6.network);
      replaceRoute6(v6.network, overlay.name);
    }
  };
  if (!o.deferUp) bringUp();
  return {
    datapath,
    vtepMac: overlay.mac,
    mtu,
    underlayIfindex: underlay.ifindex,
    overlayIfindex: overlay.ifindex,
    kernelDecap: overlay.kernelDecap,
    mechanism,
    reason: datapath.reason,
    pinPlan: datapath.pinPlan,
    bringUp,
  };
}
