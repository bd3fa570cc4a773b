// A node programmed the way flannel's vxlan backend programs one: a kernel
// VXLAN device "flannel.1" (nolearning, UDP 8472, VNI 1, MTU underlay - 50,
// the subnet's first address /32) and, per remote lease, a route
// "subnet via subnet-address onlink", a permanent neighbour entry for the
// remote VTEP MAC and an FDB entry pointing that MAC at the remote PublicIP.
// With `v6`, the same for IPv6 as flannel's dual-stack does it: a second
// device "flannel-v6.1" between the PublicIPv6 addresses (MTU underlay - 70,
// the most the kernel lets an IPv6 VXLAN device on the underlay have), the
// IPv6 subnet's first address /128, and per
// remote lease the same three entries over IPv6.
import { type EtcdServer } from "./etcd";
import { inNs, sh } from "./sh";

export interface FlannelLease {
  subnet: string; // 10.5.1.0/24, or fc00:0:0:1::/64 with v6
  publicIp: string; // the PublicIP, or the PublicIPv6 with v6
  vtepMac: string;
}

/** flannel's device for a family. */
export const flannelDev = (v6?: boolean, vni = 1): string =>
  v6 ? `flannel-v6.${vni}` : "flannel.1";

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
    /** flannel-v6.1: publicIp is the PublicIPv6, subnet the IPv6 subnet. */
    v6?: boolean;
  },
): string {
  const dev = o.underlay ?? "eth0";
  const name = flannelDev(o.v6, o.v6 ? (o.vni ?? 1) : 1);
  // flannel asks for underlay - 50 on both devices; for an IPv6 VXLAN
  // device bound to the underlay the kernel allows at most underlay - 70.
  const mtu = JSON.parse(sh(inNs(ns, ["ip", "-j", "link", "show", dev])))[0].mtu - (o.v6 ? 70 : 50);
  sh(
    inNs(ns, [
      "ip",
      "link",
      "add",
      name,
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
  sh(inNs(ns, ["ip", "link", "set", name, "mtu", String(mtu), "up"]));
  const first = o.subnet.split("/")[0] as string;
  const host = o.v6
    ? ["-6", "addr", "add", `${first}/128`, "dev", name, "nodad"]
    : ["addr", "add", `${first}/32`, "dev", name];
  sh(inNs(ns, ["ip", ...host]));
  return JSON.parse(sh(inNs(ns, ["ip", "-j", "link", "show", name])))[0].address as string;
}

export function flannelAddLease(ns: string, l: FlannelLease, v6?: boolean): void {
  const gw = l.subnet.split("/")[0] as string;
  const dev = flannelDev(v6);
  const fam = v6 ? ["-6"] : [];
  sh(
    inNs(ns, [
      "ip",
      ...fam,
      "neigh",
      "replace",
      gw,
      "lladdr",
      l.vtepMac,
      "dev",
      dev,
      "nud",
      "permanent",
    ]),
  );
  sh(inNs(ns, ["bridge", "fdb", "replace", l.vtepMac, "dev", dev, "dst", l.publicIp]));
  sh(inNs(ns, ["ip", ...fam, "route", "replace", l.subnet, "via", gw, "dev", dev, "onlink"]));
}

export function flannelDelLease(ns: string, l: FlannelLease, v6?: boolean): void {
  const gw = l.subnet.split("/")[0] as string;
  const dev = flannelDev(v6);
  const fam = v6 ? ["-6"] : [];
  sh(inNs(ns, ["ip", ...fam, "route", "del", l.subnet]), { allowFail: true });
  sh(inNs(ns, ["bridge", "fdb", "del", l.vtepMac, "dev", dev]), { allowFail: true });
  sh(inNs(ns, ["ip", ...fam, "neigh", "del", gw, "dev", dev]), { allowFail: true });
}

/**
 * What flanneld does when it starts on a node: flannel.1, its lease in etcd
 * (bound to an etcd lease of `ttl` seconds, as flanneld writes it, when
 * given), and every other lease's entries. With `v6` a dual-stack flanneld:
 * flannel-v6.1 too, the dual-stack key and value, and every other lease's
 * IPv6 entries. Returns flannel.1's VtepMAC.
 */
export function flannelJoin(
  etcd: EtcdServer,
  prefix: string,
  ns: string,
  o: {
    publicIp: string;
    subnet: string;
    gbp?: boolean;
    ttl?: number;
    v6?: { publicIp: string; subnet: string };
  },
): string {
  const mac = flannelUp(ns, { publicIp: o.publicIp, subnet: o.subnet, gbp: o.gbp });
  const mac6 = o.v6 && flannelUp(ns, { ...o.v6, gbp: o.gbp, v6: true });
  const key =
    `${prefix}/subnets/${o.subnet.replace("/", "-")}` +
    (o.v6 ? `&${o.v6.subnet.replace("/", "-")}` : "");
  const value = JSON.stringify({
    PublicIP: o.publicIp,
    PublicIPv6: o.v6?.publicIp ?? null,
    BackendType: "vxlan",
    BackendData: { VNI: 1, VtepMAC: mac },
    ...(o.v6 ? { BackendV6Data: { VNI: 1, VtepMAC: mac6 } } : {}),
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
    const [v4, v6] = k.split("/").pop()!.split("&") as [string, string | undefined];
    flannelAddLease(ns, {
      subnet: v4.replace("-", "/"),
      publicIp: l.PublicIP,
      vtepMac: l.BackendData.VtepMAC,
    });
    if (o.v6 && v6 && l.PublicIPv6 && l.BackendV6Data) {
      const i = v6.lastIndexOf("-");
      flannelAddLease(
        ns,
        {
          subnet: `${v6.slice(0, i)}/${v6.slice(i + 1)}`,
          publicIp: l.PublicIPv6,
          vtepMac: l.BackendV6Data.VtepMAC,
        },
        true,
      );
    }
  }
  return mac;
}
