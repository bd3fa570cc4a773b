// flannel's network configuration (<prefix>/config): parsing, defaults and
// validation. Pure. Field names match case-insensitively, as Go's
// encoding/json does for flannel.
import { ConfigError } from "../errors";
import { Cidr, formatIp, parseIp, type Ip4 } from "../net/ip";
import { Cidr6, formatIp6, IPV4_MAPPED, parseIp6, subnets6, type Ip6 } from "../net/ip6";

/** The backends overlayd implements (flannel's pkg/backend/<type>). */
export const BACKEND_TYPES = ["vxlan", "host-gw"] as const;
export type BackendType = (typeof BACKEND_TYPES)[number];

export interface BackendConfig {
  type: BackendType;
  /** vxlan: VXLAN network identifier and UDP port (host-gw: unused). */
  vni: number;
  port: number;
  /** vxlan `MTU`: the underlay MTU the overlay is cut from; undefined = the
   * external interface's. The overlay device and FLANNEL_MTU get MTU - 50. */
  mtu?: number;
  /** vxlan `GBP`: Group Based Policy, the group id carried from skb->mark. */
  gbp: boolean;
  /** vxlan `DirectRouting`: no VXLAN towards peers on our own L2 network. */
  directRouting: boolean;
  /** vxlan `Learning`: accepted; overlayd programs every peer from etcd. */
  learning: boolean;
  /** vxlan `MacPrefix`: accepted (Windows only in flannel); unused on Linux. */
  macPrefix?: string;
}

/** flannel's IPv6 keys (IPv6Network, IPv6SubnetLen/Min/Max), defaults applied. */
export interface Ipv6Config {
  network: Cidr6;
  subnetLen: number;
  subnetMin: Ip6;
  subnetMax: Ip6;
}

export interface NetworkConfig {
  /** `EnableIPv4` (default true). overlayd needs it on: see parseNetworkConfig. */
  enableIPv4: boolean;
  /** `EnableIPv6` (default false): dual-stack, with `ipv6` set. */
  enableIPv6: boolean;
  /** The IPv6 half of a dual-stack network; undefined when EnableIPv6 is off. */
  ipv6?: Ipv6Config;
  network: Cidr;
  subnetLen: number;
  subnetMin: Ip4;
  subnetMax: Ip4;
  backend: BackendConfig;
  /** `EnableNFTables`: masquerade through nftables instead of iptables. */
  enableNFTables: boolean;
  /** Keys overlayd does not know ("Foo", "Backend.Bar"): ignored, as flannel
   * ignores them, and logged once by the agent. */
  unknownKeys: string[];
}

/** flannel's top-level config keys (pkg/subnet/config.go), any case. */
const TOP_KEYS = [
  "Network",
  "SubnetLen",
  "SubnetMin",
  "SubnetMax",
  "EnableIPv4",
  "EnableIPv6",
  "IPv6Network",
  "IPv6SubnetLen",
  "IPv6SubnetMin",
  "IPv6SubnetMax",
  "EnableNFTables",
  "Backend",
];
/** What each backend reads from `Backend` (flannel's backend config structs). */
const BACKEND_KEYS: Record<BackendType, string[]> = {
  vxlan: ["Type", "VNI", "Port", "MTU", "GBP", "Learning", "DirectRouting", "MacPrefix"],
  "host-gw": ["Type"],
};
/** flannel backends overlayd does not implement, for a precise error. */
const OTHER_FLANNEL_BACKENDS = [
  "udp",
  "ipip",
  "wireguard",
  "ipsec",
  "alloc",
  "extension",
  "aws-vpc",
  "gce",
  "ali-vpc",
  "tencent-vpc",
];

export const DEFAULT_VNI = 1;
export const DEFAULT_PORT = 8472;

type Json = Record<string, unknown>;

/** Looks a field up case-insensitively; returns [value, the name as written]. */
function field(obj: Json, name: string): [unknown, string] {
  const want = name.toLowerCase();
  for (const [k, v] of Object.entries(obj)) {
    if (k.toLowerCase() === want) return [v, k];
  }
  return [undefined, name];
}

function unknownKeys(obj: Json, known: string[], prefix = ""): string[] {
  const k = new Set(known.map((x) => x.toLowerCase()));
  return Object.keys(obj)
    .filter((x) => !k.has(x.toLowerCase()))
    .map((x) => prefix + x);
}

function boolField(obj: Json, name: string, where: string): boolean | undefined {
  const [v, as] = field(obj, name);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "boolean")
    throw new ConfigError(as, `must be true or false, got ${JSON.stringify(v)}`, where);
  return v;
}

function intField(
  obj: Json,
  name: string,
  where: string,
  min: number,
  max: number,
): number | undefined {
  const [v, as] = field(obj, name);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v)) {
    throw new ConfigError(as, `must be an integer, got ${JSON.stringify(v)}`, where);
  }
  if (v < min || v > max)
    throw new ConfigError(as, `must be within ${min}..${max}, got ${v}`, where);
  return v;
}

/** An address field (IPv4 with parseIp, IPv6 with parseIp6), errors naming the key. */
function addrField<T>(
  obj: Json,
  name: string,
  where: string,
  parse: (s: string, field: string) => T,
): T | undefined {
  const [v, as] = field(obj, name);
  if (v === undefined || v === null || v === "") return undefined;
  if (typeof v !== "string")
    throw new ConfigError(as, `must be a string, got ${JSON.stringify(v)}`, where);
  try {
    return parse(v, as);
  } catch (e) {
    if (e instanceof ConfigError) throw new ConfigError(as, e.rule, where);
    throw e;
  }
}

/**
 * Parses and validates the JSON text stored at `where` (the etcd key, for
 * messages). Every error names the key, the field and the rule.
 */
export function parseNetworkConfig(text: string | undefined, where: string): NetworkConfig {
  if (text === undefined) {
    throw new ConfigError(
      "config",
      "is missing: write the network configuration to this key",
      where,
    );
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError("config", `is not valid JSON (${(e as Error).message})`, where);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) {
    throw new ConfigError("config", "must be a JSON object", where);
  }
  const obj = raw as Json;

  const enableIPv4 = boolField(obj, "EnableIPv4", where) ?? true;
  const enableIPv6 = boolField(obj, "EnableIPv6", where) ?? false;
  if (!enableIPv4) {
    // flannel's etcd mode has no IPv6-only network either: its lease key is
    // always "a.b.c.d-len[&v6-len]", and flannel's nodes could not read ours.
    throw new ConfigError(
      field(obj, "EnableIPv4")[1],
      enableIPv6
        ? "IPv6-only networks are not supported: a lease key in etcd always carries an IPv4 " +
            "subnet (flannel's a.b.c.d-len&v6-len); keep EnableIPv4 true for dual-stack"
        : "EnableIPv4 and EnableIPv6 are both false: enable at least one family",
      where,
    );
  }

  const [netRaw, netAs] = field(obj, "Network");
  if (netRaw === undefined || netRaw === null || netRaw === "") {
    throw new ConfigError("Network", 'is required (e.g. "10.5.0.0/16")', where);
  }
  if (typeof netRaw !== "string") {
    throw new ConfigError(netAs, `must be a CIDR string, got ${JSON.stringify(netRaw)}`, where);
  }
  let network: Cidr;
  try {
    network = Cidr.parse(netRaw, netAs);
  } catch (e) {
    throw e instanceof ConfigError ? new ConfigError(netAs, e.rule, where) : e;
  }

  const subnetLen = subnetLenOf(obj, where, network, netAs, V4_LEN);

  const size = 2 ** (32 - subnetLen);
  const mask = Cidr.of(0, subnetLen).mask;
  const check = (v: Ip4, name: string): void => {
    const [, as] = field(obj, name);
    if (!network.contains(v)) {
      throw new ConfigError(as, `${formatIp(v)} is not inside Network ${network}`, where);
    }
    if ((v & mask) >>> 0 !== v) {
      throw new ConfigError(as, `${formatIp(v)} is not on a /${subnetLen} boundary`, where);
    }
  };
  let subnetMin = addrField(obj, "SubnetMin", where, parseIp);
  if (subnetMin === undefined) subnetMin = (network.addr + size) >>> 0;
  else check(subnetMin, "SubnetMin");
  let subnetMax = addrField(obj, "SubnetMax", where, parseIp);
  if (subnetMax === undefined) subnetMax = (network.last - size + 1) >>> 0;
  else check(subnetMax, "SubnetMax");
  if (subnetMin > subnetMax) {
    throw new ConfigError(
      field(obj, "SubnetMin")[1],
      `${formatIp(subnetMin)} is above SubnetMax ${formatIp(subnetMax)}`,
      where,
    );
  }

  const backend = parseBackend(obj, where);
  const [, bAs] = field(obj, "Backend");
  const [b] = field(obj, "Backend");
  const unknown = unknownKeys(obj, TOP_KEYS);
  if (b && typeof b === "object" && !Array.isArray(b)) {
    unknown.push(...unknownKeys(b as Json, BACKEND_KEYS[backend.type], `${bAs}.`));
  }
  const ipv6 = parseIpv6(obj, where, enableIPv6);
  return {
    enableIPv4,
    enableIPv6,
    ...(ipv6 ? { ipv6 } : {}),
    network,
    subnetLen,
    subnetMin,
    subnetMax,
    backend,
    enableNFTables: boolField(obj, "EnableNFTables", where) ?? false,
    unknownKeys: unknown,
  };
}

/** flannel's SubnetLen rules, per family (pkg/subnet/config.go). */
interface LenRules {
  key: string;
  bits: number;
  /** The longest subnet, and the rule's words when it is exceeded. */
  longest: number;
  tooLong: string;
  /** The longest network flannel can split in four, and what it is called. */
  smallestNet: number;
  netName: string;
  /** The default length, for networks up to `defaultUpTo` long; else prefix+2. */
  defaultLen: number;
  defaultUpTo: number;
}
const V4_LEN: LenRules = {
  key: "SubnetLen",
  bits: 32,
  longest: 30,
  tooLong: "must be less than /31",
  smallestNet: 28,
  netName: "network",
  defaultLen: 24,
  defaultUpTo: 22,
};
const V6_LEN: LenRules = {
  key: "IPv6SubnetLen",
  bits: 128,
  longest: 126,
  tooLong: "must be at most /126",
  smallestNet: 124,
  netName: "IPv6 network",
  defaultLen: 64,
  defaultUpTo: 62,
};

/** The subnet length given (checked) or flannel's default for the network. */
function subnetLenOf(
  obj: Json,
  where: string,
  network: { prefixlen: number; toString(): string },
  netAs: string,
  r: LenRules,
): number {
  const len = intField(obj, r.key, where, 0, r.bits);
  const [, lenAs] = field(obj, r.key);
  if (len !== undefined && len > 0) {
    if (len > r.longest) {
      throw new ConfigError(
        lenAs,
        `${r.tooLong} (leave room for a gateway and a pod), got ${len}`,
        where,
      );
    }
    if (len < network.prefixlen + 2) {
      throw new ConfigError(
        lenAs,
        `/${len} must leave room for at least 4 subnets in ${network} (at least /${network.prefixlen + 2})`,
        where,
      );
    }
    return len;
  }
  if (network.prefixlen > r.smallestNet) {
    throw new ConfigError(
      netAs,
      `${network} is too small: the smallest useful ${r.netName} is a /${r.smallestNet}`,
      where,
    );
  }
  return network.prefixlen <= r.defaultUpTo ? r.defaultLen : network.prefixlen + 2;
}

/**
 * The IPv6 keys, with flannel's rules (pkg/subnet/config.go): IPv6SubnetLen
 * defaults to 64 when IPv6Network is a /62 or shorter, else prefix+2, and is
 * at most 126; the network must hold four subnets; IPv6SubnetMin/Max default
 * to the second and the last subnet and must be inside the network and on a
 * subnet boundary. With EnableIPv6 off the keys are only checked for form
 * (flannel's JSON decoding rejects a malformed one too) and otherwise ignored.
 */
function parseIpv6(obj: Json, where: string, enabled: boolean): Ipv6Config | undefined {
  const [netRaw, netAs] = field(obj, "IPv6Network");
  const present = netRaw !== undefined && netRaw !== null && netRaw !== "";
  if (present && typeof netRaw !== "string") {
    throw new ConfigError(netAs, `must be a CIDR string, got ${JSON.stringify(netRaw)}`, where);
  }
  let network: Cidr6 | undefined;
  if (present) {
    try {
      network = Cidr6.parse(netRaw as string, netAs);
    } catch (e) {
      throw e instanceof ConfigError ? new ConfigError(netAs, e.rule, where) : e;
    }
  }
  intField(obj, "IPv6SubnetLen", where, 0, 128); // its form, even with IPv6 off
  const min = addrField(obj, "IPv6SubnetMin", where, parseIp6);
  const max = addrField(obj, "IPv6SubnetMax", where, parseIp6);
  if (!enabled) return undefined;
  if (!network) {
    throw new ConfigError(
      "IPv6Network",
      'is required when EnableIPv6 is true (e.g. "fc00:5::/48")',
      where,
    );
  }
  if (network.overlaps(IPV4_MAPPED)) {
    throw new ConfigError(
      netAs,
      `${network} overlaps ::ffff:0:0/96 (IPv4-mapped addresses): choose a unique local or global prefix`,
      where,
    );
  }
  const subnetLen = subnetLenOf(obj, where, network, netAs, V6_LEN);
  const size = 1n << BigInt(128 - subnetLen);
  const check = (v: Ip6, name: string): void => {
    const [, as] = field(obj, name);
    if (!network.contains(v)) {
      throw new ConfigError(as, `${formatIp6(v)} is not inside IPv6Network ${network}`, where);
    }
    if (Cidr6.of(v, subnetLen).addr !== v) {
      throw new ConfigError(as, `${formatIp6(v)} is not on a /${subnetLen} boundary`, where);
    }
  };
  if (min !== undefined) check(min, "IPv6SubnetMin");
  if (max !== undefined) check(max, "IPv6SubnetMax");
  const subnetMin = min ?? network.addr + size;
  const subnetMax = max ?? network.last - size + 1n;
  if (subnetMin > subnetMax) {
    throw new ConfigError(
      field(obj, "IPv6SubnetMin")[1],
      `${formatIp6(subnetMin)} is above IPv6SubnetMax ${formatIp6(subnetMax)}`,
      where,
    );
  }
  return { network, subnetLen, subnetMin, subnetMax };
}

const DEFAULT_BACKEND: BackendConfig = {
  type: "vxlan",
  vni: DEFAULT_VNI,
  port: DEFAULT_PORT,
  gbp: false,
  directRouting: false,
  learning: false,
};

function parseBackend(obj: Json, where: string): BackendConfig {
  const [b, bAs] = field(obj, "Backend");
  if (b === undefined || b === null) return { ...DEFAULT_BACKEND };
  if (typeof b !== "object" || Array.isArray(b)) {
    throw new ConfigError(bAs, 'must be an object like {"Type": "vxlan"}', where);
  }
  const backend = b as Json;
  const [rawType, typeAs] = field(backend, "Type");
  let type: BackendType = "vxlan";
  if (rawType !== undefined && rawType !== null && rawType !== "") {
    const t = typeof rawType === "string" ? rawType.toLowerCase() : undefined;
    if (t === undefined || !(BACKEND_TYPES as readonly string[]).includes(t)) {
      const known = t !== undefined && OTHER_FLANNEL_BACKENDS.includes(t);
      throw new ConfigError(
        `${bAs}.${typeAs}`,
        `${known ? `flannel's ${JSON.stringify(t)} backend is not implemented: ` : ""}` +
          `only "vxlan" and "host-gw" are supported, got ${JSON.stringify(rawType)}`,
        where,
      );
    }
    type = t as BackendType;
  }
  const sub = `${where}: ${bAs}`;
  if (type === "host-gw") return { ...DEFAULT_BACKEND, type };
  const vni = intField(backend, "VNI", sub, 0, 0xffffff) ?? DEFAULT_VNI;
  const port = intField(backend, "Port", sub, 0, 65535) ?? DEFAULT_PORT;
  const mtu = intField(backend, "MTU", sub, 0, 65535);
  const [mp, mpAs] = field(backend, "MacPrefix");
  if (mp !== undefined && mp !== null && mp !== "") {
    if (typeof mp !== "string" || !/^[0-9a-f]{2}-[0-9a-f]{2}$/i.test(mp)) {
      throw new ConfigError(
        mpAs,
        `must be two hex bytes like "0E-2A", got ${JSON.stringify(mp)}`,
        sub,
      );
    }
  }
  // flannel treats 0 as "default" for VNI, Port and MTU.
  return {
    type,
    vni: vni || DEFAULT_VNI,
    port: port || DEFAULT_PORT,
    ...(mtu ? { mtu } : {}),
    gbp: boolField(backend, "GBP", sub) ?? false,
    directRouting: boolField(backend, "DirectRouting", sub) ?? false,
    learning: boolField(backend, "Learning", sub) ?? false,
    ...(typeof mp === "string" && mp ? { macPrefix: mp.toUpperCase() } : {}),
  };
}

/** Encapsulation overhead of a backend: what the overlay MTU loses. */
export function backendOverhead(b: BackendConfig, encapOverhead: number): number {
  return b.type === "vxlan" ? encapOverhead : 0;
}

/**
 * What an outer IPv6 header costs beyond an outer IPv4 one (40 - 20 bytes).
 * IPv6 pod traffic goes between the nodes' PublicIPv6 addresses (flannel's
 * wire format), so it is wrapped in 70 bytes, not 50.
 */
export const IPV6_OUTER_EXTRA = 20;

/**
 * The overhead the pods' one MTU must leave room for: a pod interface
 * carries both families, so with EnableIPv6 it is the IPv6 wrapping's.
 * flannel subtracts 50 for both (FLANNEL_MTU = MTU - 50), and a full-size
 * IPv6 packet then does not fit the underlay; overlayd subtracts 70.
 */
export function familyOverhead(
  b: BackendConfig,
  encapOverhead: number,
  enableIPv6: boolean,
): number {
  const o = backendOverhead(b, encapOverhead);
  return o > 0 && enableIPv6 ? o + IPV6_OUTER_EXTRA : o;
}

/** The smallest overlay MTU overlayd accepts (IPv6's minimum link MTU). */
export const MIN_OVERLAY_MTU = 1280;

/**
 * The overlay (pod) MTU for an external interface of `underlayMtu`: the
 * backend's MTU (or the interface's) minus the encapsulation (the IPv6
 * one with `enableIPv6`, see familyOverhead). An MTU the underlay cannot
 * carry, or one that leaves pods less than 1280 bytes, is a ConfigError
 * naming Backend.MTU. Pure.
 */
export function overlayMtuOf(
  b: BackendConfig,
  underlayMtu: number,
  encapOverhead: number,
  where = "config",
  enableIPv6 = false,
): number {
  const overhead = familyOverhead(b, encapOverhead, enableIPv6);
  const base = b.mtu ?? underlayMtu;
  if (b.mtu !== undefined && b.mtu > underlayMtu) {
    throw new ConfigError(
      "Backend.MTU",
      `${b.mtu} is above the external interface's MTU ${underlayMtu}: frames would not fit the wire`,
      where,
    );
  }
  if (base - overhead < MIN_OVERLAY_MTU) {
    throw new ConfigError(
      b.mtu !== undefined ? "Backend.MTU" : "MTU",
      `${base} leaves pods ${base - overhead} bytes after the ${overhead}-byte ` +
        `encapsulation; at least ${MIN_OVERLAY_MTU + overhead} is needed`,
      where,
    );
  }
  return base - overhead;
}

/** Every subnet of the config's range, in order. */
export function* subnetRange(c: NetworkConfig): Generator<Cidr> {
  const size = 2 ** (32 - c.subnetLen);
  for (let a = c.subnetMin; a <= c.subnetMax; a += size) yield Cidr.of(a, c.subnetLen);
}

export function subnetCount(c: NetworkConfig): number {
  return (c.subnetMax - c.subnetMin) / 2 ** (32 - c.subnetLen) + 1;
}

/** Every IPv6 subnet of the config's range, in order (none without IPv6). */
export function* subnetRange6(c: NetworkConfig): Generator<Cidr6> {
  if (c.ipv6) yield* subnets6(c.ipv6.subnetMin, c.ipv6.subnetMax, c.ipv6.subnetLen);
}

/** How many IPv6 subnets the range holds (0 without IPv6). */
export function subnetCount6(c: NetworkConfig): bigint {
  const v = c.ipv6;
  return v ? ((v.subnetMax - v.subnetMin) >> BigInt(128 - v.subnetLen)) + 1n : 0n;
}
