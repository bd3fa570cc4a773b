// Replacing flannel's vxlan backend on a live node. flannel's device
// (`flannel.<VNI>`, a kernel VXLAN device bound to the VXLAN port) holds the
// port ovl0 needs, and its per-subnet routes are more specific than
// overlayd's network route. So start-up builds overlayd's whole path beside
// it (ovl0 made down with flannel.1's MAC, so the lease's VtepMAC and every
// peer's neighbour/FDB entries stay right; programs attached, the map
// reconciled, the pod bridge's pods registered), and only then removes
// flannel's device, which takes its routes, neighbour and FDB entries with
// it, and brings ovl0 up on the freed port. Between the two, VXLAN for a
// registered pod is decapsulated by ovl_decap_tc without any socket; only
// what goes to the node itself waits for ovl0's socket.
import { deleteLink, linkInfo, type LinkTable } from "../net/link";

export interface FlannelDevice {
  name: string;
  mac: string;
  port?: number;
  /** A dual-stack flannel's second device, flannel-v6.<VNI> (it holds the
   * port's IPv6 socket); it goes with flannel.<VNI>. */
  v6?: FlannelDevice;
}

function flannelVxlan(name: string, links?: LinkTable): FlannelDevice | undefined {
  const l = linkInfo(name, links);
  if (!l || l.kind !== "vxlan" || l.vxlan?.external) return undefined;
  return { name, mac: l.mac, port: l.vxlan?.port };
}

/** flannel's VXLAN device for this VNI, if this node still has one. */
export function findFlannelDevice(vni: number, links?: LinkTable): FlannelDevice | undefined {
  const d = flannelVxlan(`flannel.${vni}`, links);
  const v6 = flannelVxlan(`flannel-v6.${vni}`, links);
  return d && v6 ? { ...d, v6 } : d;
}

/** Removes flannel's devices (their routes, neighbours and FDB go with them). */
export function removeFlannelDevice(d: FlannelDevice): void {
  deleteLink(d.name);
  if (d.v6) deleteLink(d.v6.name);
}
