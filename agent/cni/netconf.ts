// The overlay CNI meta-plugin's pure part: parse the network config it is
// given, and render the delegate config for the standard `bridge` plugin with
// `host-local` IPAM from subnet.env, the way flannel's CNI plugin does.
import { OverlayError } from "../errors";
import { Cidr } from "../net/ip";
import { Cidr6 } from "../net/ip6";
import { parseSubnetEnv } from "../control/subnet-env";

export const CNI_VERSION = "1.0.0";
export const SUPPORTED_VERSIONS = ["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/** CNI error codes (spec 1.0.0, "Error" section). */
export const CniCode = {
  incompatibleVersion: 1,
  unsupportedField: 2,
  unknownContainer: 3,
  invalidEnv: 4,
  ioError: 5,
  decodeFailure: 6,
  invalidNetworkConfig: 7,
  tryAgainLater: 11,
  pluginFailure: 100,
} as const;

export class CniError extends OverlayError {
  constructor(
    readonly code: number,
    msg: string,
    readonly details = "",
  ) {
    super(msg);
  }
  toJSON(): object {
    return { cniVersion: CNI_VERSION, code: this.code, msg: this.message, details: this.details };
  }
}

export interface OverlayNetConf {
  cniVersion: string;
  name: string;
  type: string;
  subnetFile: string;
  /** Where rendered delegate configs are kept for DEL (flannel: /var/lib/cni/flannel). */
  dataDir: string;
  /** Pod fast path: encap at the pod veth, decap straight into the pod. */
  fastPath: boolean;
  pinPath: string;
  /** Fields merged over the rendered bridge config. */
  delegate: Record<string, unknown>;
  /** host-local's data directory (default: host-local's own). */
  ipamDataDir?: string;
  /** The runtime's copy of the ADD result (CHECK, DEL). */
  prevResult?: Record<string, unknown>;
}

export function parseNetConf(stdin: string): OverlayNetConf {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (e) {
    throw new CniError(
      CniCode.decodeFailure,
      `network config on stdin is not JSON: ${(e as Error).message}`,
    );
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new CniError(CniCode.decodeFailure, "network config on stdin must be a JSON object");
  }
  const o = raw as Record<string, unknown>;
  const str = (k: string, def?: string): string => {
    const v = o[k] ?? def;
    if (typeof v !== "string" || !v)
      throw new CniError(
        CniCode.invalidNetworkConfig,
        `network config: "${k}" must be a non-empty string`,
      );
    return v;
  };
  const version = str("cniVersion", CNI_VERSION);
  if (!SUPPORTED_VERSIONS.includes(version)) {
    throw new CniError(
      CniCode.incompatibleVersion,
      `cniVersion ${version} is not supported (${SUPPORTED_VERSIONS.join(", ")})`,
    );
  }
  if (
    o.delegate !== undefined &&
    (typeof o.delegate !== "object" || o.delegate === null || Array.isArray(o.delegate))
  ) {
    throw new CniError(
      CniCode.invalidNetworkConfig,
      'network config: "delegate" must be an object',
    );
  }
  if (o.fastPath !== undefined && typeof o.fastPath !== "boolean") {
    throw new CniError(
      CniCode.invalidNetworkConfig,
      'network config: "fastPath" must be true or false',
    );
  }
  return {
    cniVersion: version,
    name: str("name"),
    type: str("type"),
    subnetFile: str("subnetFile", "/run/flannel/subnet.env"),
    dataDir: str("dataDir", "/var/lib/cni/overlay"),
    fastPath: (o.fastPath as boolean | undefined) ?? true,
    pinPath: str("pinPath", "/sys/fs/bpf/overlay"),
    delegate: (o.delegate as Record<string, unknown> | undefined) ?? {},
    ipamDataDir: typeof o.ipamDataDir === "string" ? o.ipamDataDir : undefined,
    prevResult:
      typeof o.prevResult === "object" && o.prevResult !== null
        ? (o.prevResult as Record<string, unknown>)
        : undefined,
  };
}

export interface SubnetInfo {
  network: Cidr;
  subnet: string; // FLANNEL_SUBNET, e.g. 10.5.1.1/24
  /** Dual-stack: FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET (e.g. fc00:0:0:1::1/64). */
  ipv6?: { network: Cidr6; subnet: string };
  mtu: number;
  ipMasq: boolean;
}

/** A subnet.env value that does not parse: the file, then the line's name and why. */
function badValue<T>(path: string, parse: () => T): T {
  try {
    return parse();
  } catch (e) {
    if (e instanceof CniError) throw e;
    throw new CniError(CniCode.invalidNetworkConfig, `${path}: ${(e as Error).message}`);
  }
}

export function parseSubnetInfo(text: string, path: string): SubnetInfo {
  const env = parseSubnetEnv(text);
  const need = (k: string): string => {
    const v = env[k];
    if (!v)
      throw new CniError(CniCode.tryAgainLater, `${path}: ${k} missing (is overlayd running?)`);
    return v;
  };
  const mtu = Number(need("FLANNEL_MTU"));
  if (!Number.isInteger(mtu) || mtu < 68)
    throw new CniError(
      CniCode.invalidNetworkConfig,
      `${path}: FLANNEL_MTU ${env.FLANNEL_MTU} is not an MTU`,
    );
  const net6 = env.FLANNEL_IPV6_NETWORK;
  const sub6 = env.FLANNEL_IPV6_SUBNET;
  if (Boolean(net6) !== Boolean(sub6)) {
    const [has, lacks] = net6
      ? ["FLANNEL_IPV6_NETWORK", "FLANNEL_IPV6_SUBNET"]
      : ["FLANNEL_IPV6_SUBNET", "FLANNEL_IPV6_NETWORK"];
    throw new CniError(CniCode.invalidNetworkConfig, `${path}: ${has} without ${lacks}`);
  }
  const subnet = need("FLANNEL_SUBNET");
  badValue(path, () => Cidr.parse(subnet, "FLANNEL_SUBNET", false));
  if (sub6) badValue(path, () => Cidr6.parse(sub6, "FLANNEL_IPV6_SUBNET", false));
  return {
    network: badValue(path, () => Cidr.parse(need("FLANNEL_NETWORK"), "FLANNEL_NETWORK")),
    subnet,
    ...(net6 && sub6
      ? {
          ipv6: {
            network: badValue(path, () => Cidr6.parse(net6, "FLANNEL_IPV6_NETWORK")),
            subnet: sub6,
          },
        }
      : {}),
    mtu,
    ipMasq: need("FLANNEL_IPMASQ") === "true",
  };
}

/**
 * flannel's delegate: bridge "cni0" as the pods' gateway, MTU from the
 * overlay, host-local handing out FLANNEL_SUBNET with a route to the cluster
 * network, and the bridge masquerading only when overlayd does not. In a
 * dual-stack network, as flannel's plugin does, a second range (the IPv6
 * subnet) and a second route (to FLANNEL_IPV6_NETWORK): the pod gets an
 * address of each family.
 */
export function renderDelegate(conf: OverlayNetConf, s: SubnetInfo): Record<string, unknown> {
  const v6 = s.ipv6;
  const ipam: Record<string, unknown> = {
    type: "host-local",
    ranges: [
      [{ subnet: Cidr.parse(s.subnet, "FLANNEL_SUBNET", false).toString() }],
      ...(v6
        ? [[{ subnet: Cidr6.parse(v6.subnet, "FLANNEL_IPV6_SUBNET", false).toString() }]]
        : []),
    ],
    // The gateway spelled out (the bridge's address, FLANNEL_SUBNET's first
    // address), so the result matches the pod's routes and CHECK passes.
    routes: [
      { dst: s.network.toString(), gw: s.subnet.split("/")[0] },
      ...(v6 ? [{ dst: v6.network.toString(), gw: v6.subnet.split("/")[0] }] : []),
    ],
  };
  if (conf.ipamDataDir) ipam.dataDir = conf.ipamDataDir;
  return {
    cniVersion: conf.cniVersion,
    name: conf.name,
    type: "bridge",
    bridge: "cni0",
    isGateway: true,
    ipMasq: !s.ipMasq,
    mtu: s.mtu,
    hairpinMode: true,
    ipam,
    ...conf.delegate,
  };
}

interface CniInterface {
  name: string;
  mac?: string;
  sandbox?: string;
}
interface CniIp {
  address: string;
  interface?: number;
}
export interface CniResult {
  cniVersion?: string;
  interfaces?: CniInterface[];
  ips?: CniIp[];
}

/**
 * From the bridge plugin's result: the pod's IPv4 (and, dual-stack, IPv6)
 * address and MAC, the host veth.
 */
export function podEndpoint(
  r: CniResult,
  ifname: string,
  bridge = "cni0",
): { podIp: string; podIp6?: string; podMac: string; hostVeth: string } | undefined {
  const ifs = r.interfaces ?? [];
  const podIdx = ifs.findIndex((i) => i.sandbox && i.name === ifname);
  const host = ifs.find((i) => !i.sandbox && i.name !== bridge);
  const ours = (r.ips ?? []).filter((x) => x.interface === podIdx);
  const ip = ours.find((x) => !x.address.includes(":"));
  const ip6 = ours.find((x) => x.address.includes(":"));
  const pod = ifs[podIdx];
  if (podIdx < 0 || !host || !ip || !pod?.mac) return undefined;
  return {
    podIp: ip.address.split("/")[0] as string,
    ...(ip6 ? { podIp6: ip6.address.split("/")[0] as string } : {}),
    podMac: pod.mac,
    hostVeth: host.name,
  };
}
