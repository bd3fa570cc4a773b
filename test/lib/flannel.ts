// A node programmed the way flannel's vxlan backend programs one: a kernel
// VXLAN device "flannel.1" (nolearning, UDP 8472, VNI 1, MTU underlay - 50,
// the subnet's first address /32) and, per remote lease, a route
// "subnet via subnet-address onlink", a permanent neighbour entry for the
// remote VTEP MAC and an FDB entry pointing that MAC at the remote PublicIP.
import { type EtcdServer } from "./etcd";
import { inNs, sh } from "./sh";

export interface FlannelLease {
  subnet: string; // 10.5.1.0/24
  publicIp: string;
  vtepMac: string;
}

export function flannelUp(
  ns: string,
  o: {
    publicIp: string;
    subnet: string;
    vni?: number;
    port?: number;
    underlay?: string;
    /** flannel's Backend.GBP: the device carries skb->mark as the group policy ID. */
    gbp?: boolean;
  },
): string {
  const dev = o.underlay ?? "eth0";
  const mtu = JSON.parse(sh(inNs(ns, ["ip", "-j", "link", "show", dev])))[0].mtu - 50;
  sh(
    inNs(ns, [
      "ip",
      "link",
      "add",
      "flannel.1",
      "type",
      "vxlan",
      "id",
      String(o.vni ?? 1),
      "local",
      o.publicIp,
      "dev",
      dev,
      "dstport",
      String(o.port ?? 8472),
      "nolearning",
      ...(o.gbp ? ["gbp"] : []),
    ]),
  );
  sh(inNs(ns, ["ip", "link", "set", "flannel.1", "mtu", String(mtu), "up"]));
  const first = o.subnet.split("/")[0] as string;
  sh(inNs(ns, ["ip", "addr", "add", `${first}/32`, "dev", "flannel.1"]));
  return JSON.parse(sh(inNs(ns, ["ip", "-j", "link", "show", "flannel.1"])))[0].address as string;
}

export function flannelAddLease(ns: string, l: FlannelLease): void {
  const gw = l.subnet.split("/")[0] as string;
  sh(
    inNs(ns, [
      "ip",
      "neigh",
      "replace",
      gw,
      "lladdr",
      l.vtepMac,
      "dev",
      "flannel.1",
      "nud",
      "permanent",
    ]),
  );
  sh(inNs(ns, ["bridge", "fdb", "replace", l.vtepMac, "dev", "flannel.1", "dst", l.publicIp]));
  sh(inNs(ns, ["ip", "route", "replace", l.subnet, "via", gw, "dev", "flannel.1", "onlink"]));
}

export function flannelDelLease(ns: string, l: FlannelLease): void {
  const gw = l.subnet.split("/")[0] as string;
  sh(inNs(ns, ["ip", "route", "del", l.subnet]), { allowFail: true });
  sh(inNs(ns, ["bridge", "fdb", "del", l.vtepMac, "dev", "flannel.1"]), { allowFail: true });
  sh(inNs(ns, ["ip", "neigh", "del", gw, "dev", "flannel.1"]), { allowFail: true });
}

/**
 * What flanneld does when it starts on a node: flannel.1, its lease in etcd
 * (bound to an etcd lease of `ttl` seconds, as flanneld writes it, when
 * given), and every other lease's entries. Returns flannel.1's VtepMAC.
 */
export function flannelJoin(
  etcd: EtcdServer,
  prefix: string,
  ns: string,
  o: { publicIp: string; subnet: string; gbp?: boolean; ttl?: number },
): string {
  const mac = flannelUp(ns, { publicIp: o.publicIp, subnet: o.subnet, gbp: o.gbp });
  const key = `${prefix}/subnets/${o.subnet.replace("/", "-")}`;
  const value = JSON.stringify({
    PublicIP: o.publicIp,
    PublicIPv6: null,
    BackendType: "vxlan",
    BackendData: { VNI: 1, VtepMAC: mac },
  });
  if (o.ttl === undefined) {
    etcd.put(key, value);
  } else {
    const grant = etcd.ctl(["lease", "grant", String(o.ttl)]);
    const id = /lease ([0-9a-f]+) granted/.exec(grant)?.[1];
    if (!id) throw new Error(`etcdctl lease grant: ${grant}`);
    etcd.ctl(["put", "--lease", id, key, value]);
  }
  for (const [k, v] of etcd.list(`${prefix}/subnets/`)) {
    const l = JSON.parse(v.value);
    if (l.PublicIP === o.publicIp) continue;
    flannelAddLease(ns, {
      subnet: k.split("/").pop()!.replace("-", "/"),
      publicIp: l.PublicIP,
      vtepMac: l.BackendData.VtepMAC,
    });
  }
  return mac;
}
