// flannel's network configuration (<prefix>/config): parsing, defaults and
// validation. Pure. Field names match case-insensitively, as Go's
// encoding/json does for flannel.
import { ConfigError } from "../errors";
import { Cidr, formatIp, parseIp, type Ip4 } from "../net/ip";

export interface BackendConfig {
  type: "vxlan";
  vni: number;
  port: number;
}

export interface NetworkConfig {
  network: Cidr;
  subnetLen: number;
  subnetMin: Ip4;
  subnetMax: Ip4;
  backend: BackendConfig;
}

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

function ipField(obj: Json, name: string, where: string): Ip4 | undefined {
  const [v, as] = field(obj, name);
  if (v === undefined || v === null || v === "") return undefined;
  if (typeof v !== "string")
    throw new ConfigError(as, `must be a string, got ${JSON.stringify(v)}`, where);
  try {
    return parseIp(v, as);
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

  const [v4, v4as] = field(obj, "EnableIPv4");
  if (v4 === false)
    throw new ConfigError(v4as, "overlayd carries IPv4 only; it cannot be false", where);
  const [v6, v6as] = field(obj, "EnableIPv6");
  if (v6 === true) throw new ConfigError(v6as, "IPv6 overlays are not supported", where);

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

  let subnetLen = intField(obj, "SubnetLen", where, 0, 32);
  const [, lenAs] = field(obj, "SubnetLen");
  if (subnetLen !== undefined && subnetLen > 0) {
    if (subnetLen > 30) {
      throw new ConfigError(
        lenAs,
        `must be less than /31 (leave room for a gateway and a pod), got ${subnetLen}`,
        where,
      );
    }
    if (subnetLen < network.prefixlen + 2) {
      throw new ConfigError(
        lenAs,
        `/${subnetLen} must leave room for at least 4 subnets in ${network} (at least /${network.prefixlen + 2})`,
        where,
      );
    }
  } else {
    if (network.prefixlen > 28) {
      throw new ConfigError(
        netAs,
        `${network} is too small: the smallest useful network is a /28`,
        where,
      );
    }
    subnetLen = network.prefixlen <= 22 ? 24 : network.prefixlen + 2;
  }

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
  let subnetMin = ipField(obj, "SubnetMin", where);
  if (subnetMin === undefined) subnetMin = (network.addr + size) >>> 0;
  else check(subnetMin, "SubnetMin");
  let subnetMax = ipField(obj, "SubnetMax", where);
  if (subnetMax === undefined) subnetMax = (network.last - size + 1) >>> 0;
  else check(subnetMax, "SubnetMax");
  if (subnetMin > subnetMax) {
    throw new ConfigError(
      field(obj, "SubnetMin")[1],
      `${formatIp(subnetMin)} is above SubnetMax ${formatIp(subnetMax)}`,
      where,
    );
  }

  return { network, subnetLen, subnetMin, subnetMax, backend: parseBackend(obj, where) };
}

function parseBackend(obj: Json, where: string): BackendConfig {
  const [b, bAs] = field(obj, "Backend");
  if (b === undefined || b === null) return { type: "vxlan", vni: DEFAULT_VNI, port: DEFAULT_PORT };
  if (typeof b !== "object" || Array.isArray(b)) {
    throw new ConfigError(bAs, 'must be an object like {"Type": "vxlan"}', where);
  }
  const backend = b as Json;
  const [type, typeAs] = field(backend, "Type");
  if (type !== undefined && (typeof type !== "string" || type.toLowerCase() !== "vxlan")) {
    throw new ConfigError(
      `${bAs}.${typeAs}`,
      `only "vxlan" is supported, got ${JSON.stringify(type)}`,
      where,
    );
  }
  const sub = `${where}: ${bAs}`;
  const vni = intField(backend, "VNI", sub, 0, 0xffffff) ?? DEFAULT_VNI;
  const port = intField(backend, "Port", sub, 0, 65535) ?? DEFAULT_PORT;
  // flannel treats 0 as "default" for both.
  return { type: "vxlan", vni: vni || DEFAULT_VNI, port: port || DEFAULT_PORT };
}

/** Every subnet of the config's range, in order. */
export function* subnetRange(c: NetworkConfig): Generator<Cidr> {
  const size = 2 ** (32 - c.subnetLen);
  for (let a = c.subnetMin; a <= c.subnetMax; a += size) yield Cidr.of(a, c.subnetLen);
}

export function subnetCount(c: NetworkConfig): number {
  return (c.subnetMax - c.subnetMin) / 2 ** (32 - c.subnetLen) + 1;
}
