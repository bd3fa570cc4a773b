// Subnet leases as flannel stores them: key <prefix>/subnets/10.5.1.0-24,
// value {"PublicIP":..,"PublicIPv6":null,"BackendType":"vxlan",
// "BackendData":{"VNI":1,"VtepMAC":".."}}. Pure: codec, subnet choice and
// the reconcile plan; etcd I/O lives in etcd-store.ts.
import { ConfigError } from "../errors";
import { subnetRange, type NetworkConfig } from "./config";
import { F_LOCAL, type HostEntry } from "../bpf/codec";
import { Cidr, formatIp, parseIp, writeMac, type Ip4 } from "../net/ip";

const MAC_SCRATCH = new Uint8Array(6);

export interface LeaseAttrs {
  publicIp: Ip4;
  backendType: string;
  vni?: number;
  vtepMac?: string;
}

export interface Lease {
  subnet: Cidr;
  attrs: LeaseAttrs;
  /** etcd lease ID ("0" for a reservation, which never expires). */
  leaseId: string;
  modRevision: string;
}

export function isReservation(l: Pick<Lease, "leaseId">): boolean {
  return l.leaseId === "0" || l.leaseId === "";
}

export function subnetsPrefix(prefix: string): string {
  return `${prefix.replace(/\/+$/, "")}/subnets/`;
}

export function configKey(prefix: string): string {
  return `${prefix.replace(/\/+$/, "")}/config`;
}

export function leaseKey(prefix: string, subnet: Cidr): string {
  return `${subnetsPrefix(prefix)}${subnet.toKey()}`;
}

/** "…/subnets/10.5.1.0-24" -> 10.5.1.0/24, or undefined for foreign keys. */
export function parseLeaseKey(prefix: string, key: string): Cidr | undefined {
  const p = subnetsPrefix(prefix);
  if (!key.startsWith(p)) return undefined;
  const rest = key.slice(p.length);
  const dash = rest.lastIndexOf("-");
  if (dash < 0 || !/^\d{1,2}$/.test(rest.slice(dash + 1))) return undefined;
  const len = Number(rest.slice(dash + 1));
  let addr: number;
  try {
    addr = parseIp(rest.slice(0, dash));
  } catch {
    return undefined;
  }
  if (len > 32) return undefined;
  const c = Cidr.of(addr, len);
  return c.addr === addr ? c : undefined; // host bits set: not a lease key
}

/** flannel's lease JSON, field for field and in flannel's order. */
export function encodeLeaseAttrs(a: LeaseAttrs): string {
  return JSON.stringify({
    PublicIP: formatIp(a.publicIp),
    PublicIPv6: null,
    BackendType: a.backendType,
    // host-gw has no backend data; flannel omits the field (omitempty).
    ...(a.backendType === "host-gw"
      ? {}
      : { BackendData: { VNI: a.vni ?? 1, VtepMAC: a.vtepMac } }),
  });
}

/** A JSON field, exact case first (what flannel writes), then any case. */
function field(o: Record<string, unknown>, name: string): unknown {
  if (name in o) return o[name];
  const want = name.toLowerCase();
  for (const k in o) if (k.toLowerCase() === want) return o[k];
  return undefined;
}

/** Decodes a lease value; a bad one is a ConfigError naming the key and field. */
export function decodeLeaseAttrs(text: string, key: string): LeaseAttrs {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new ConfigError("lease", `is not valid JSON (${(e as Error).message})`, key);
  }
  if (typeof raw !== "object" || raw === null)
    throw new ConfigError("lease", "must be a JSON object", key);
  const o = raw as Record<string, unknown>;
  const get = (name: string): unknown => field(o, name);
  const pub = get("PublicIP");
  if (typeof pub !== "string") throw new ConfigError("PublicIP", "is missing", key);
  const attrs: LeaseAttrs = {
    publicIp: parseIp(pub, `${key}: PublicIP`),
    backendType: String(get("BackendType") ?? ""),
  };
  const data = get("BackendData");
  if (data && typeof data === "object") {
    const d = data as Record<string, unknown>;
    const dget = (name: string): unknown => field(d, name);
    const vni = dget("VNI");
    if (typeof vni === "number") attrs.vni = vni;
    const mac = dget("VtepMAC");
    if (typeof mac === "string") {
      writeMac(mac, MAC_SCRATCH, 0, `${key}: BackendData.VtepMAC`); // validates
      attrs.vtepMac = mac.toLowerCase();
    }
  }
  return attrs;
}

/**
 * The subnet this node should try first, in flannel's order of preference:
 * 1. a lease (or reservation) that already carries our PublicIP;
 * 2. the subnet from our previous subnet file, if nobody holds it;
 * then a random free one (chooseFree).
 */
export function preferredSubnet(
  cfg: NetworkConfig,
  leases: Lease[],
  publicIp: Ip4,
  previous: Cidr | undefined,
): { subnet: Cidr; existing?: Lease } | undefined {
  const own = leases
    .filter((l) => l.attrs.publicIp === publicIp && inRange(cfg, l.subnet))
    // a reservation wins over a lease
    .sort((a, b) => Number(isReservation(b)) - Number(isReservation(a)));
  if (own[0]) return { subnet: own[0].subnet, existing: own[0] };
  if (previous && inRange(cfg, previous) && !leases.some((l) => l.subnet.equals(previous))) {
    return { subnet: previous };
  }
  return undefined;
}

export function inRange(cfg: NetworkConfig, s: Cidr): boolean {
  return (
    s.prefixlen === cfg.subnetLen &&
    cfg.network.covers(s) &&
    s.addr >= cfg.subnetMin &&
    s.addr <= cfg.subnetMax
  );
}

/** A random subnet of [SubnetMin, SubnetMax] no lease or reservation holds. */
export function chooseFree(
  cfg: NetworkConfig,
  taken: Iterable<Cidr>,
  random: () => number = Math.random,
): Cidr | undefined {
  const used = new Set<number>();
  for (const t of taken) if (t.prefixlen === cfg.subnetLen) used.add(t.addr);
  const free: Cidr[] = [];
  for (const s of subnetRange(cfg)) if (!used.has(s.addr)) free.push(s);
  if (free.length === 0) return undefined;
  return free[Math.floor(random() * free.length)];
}

/** A backend's rule for the map entry of a peer's lease (hostEntryOf for vxlan). */
export type EntryOf = (l: Lease, log: (msg: string) => void) => HostEntry | undefined;

/** A subnet as one number (addr * 64 + prefixlen): a cheap map key. */
export function subnetId(c: Cidr): number {
  return c.addr * 64 + c.prefixlen;
}

/** What the data path should hold, by subnetId. */
export type DesiredEntries = Map<number, { subnet: Cidr; host: HostEntry }>;

/** What the data path should hold for a set of leases. */
export function desiredEntries(
  leases: Iterable<Lease>,
  own: Cidr | undefined,
  ownEntry: HostEntry | undefined,
  log: (msg: string) => void = () => {},
  entryOf: EntryOf = hostEntryOf,
): DesiredEntries {
  const want: DesiredEntries = new Map();
  for (const l of leases) {
    if (own && l.subnet.equals(own)) continue;
    const entry = entryOf(l, log);
    if (entry) want.set(subnetId(l.subnet), { subnet: l.subnet, host: entry });
  }
  if (own && ownEntry)
    want.set(subnetId(own), { subnet: own, host: { ...ownEntry, flags: F_LOCAL } });
  return want;
}

/** The map entry for a remote lease, or undefined (logged) if unusable. */
export function hostEntryOf(
  l: Lease,
  log: (msg: string) => void = () => {},
): HostEntry | undefined {
  if (l.attrs.backendType !== "vxlan") {
    log(
      `lease ${l.subnet} (PublicIP ${formatIp(l.attrs.publicIp)}): BackendType ` +
        `"${l.attrs.backendType}" but this network's Backend.Type is "vxlan"; not programmed ` +
        "(one backend per network)",
    );
    return undefined;
  }
  if (!l.attrs.vtepMac) {
    log(`lease ${l.subnet}: no BackendData.VtepMAC; not programmed`);
    return undefined;
  }
  return { remoteIp: l.attrs.publicIp, vtepMac: l.attrs.vtepMac, flags: 0 };
}

export interface SyncPlan {
  upserts: { subnet: Cidr; host: HostEntry }[];
  deletes: Cidr[];
}

function sameHost(a: HostEntry, b: HostEntry): boolean {
  return a.remoteIp === b.remoteIp && a.vtepMac === b.vtepMac && a.flags === b.flags;
}

/** desired vs actual -> the smallest set of map operations. */
export function planSync(
  desired: DesiredEntries,
  actual: { subnet: Cidr; host: HostEntry }[],
): SyncPlan {
  const have = new Map(actual.map((e) => [subnetId(e.subnet), e]));
  const plan: SyncPlan = { upserts: [], deletes: [] };
  for (const [k, want] of desired) {
    const cur = have.get(k);
    if (!cur || !sameHost(cur.host, want.host)) plan.upserts.push(want);
  }
  for (const [k, cur] of have) if (!desired.has(k)) plan.deletes.push(cur.subnet);
  return plan;
}

/** A lease change from the watch, as the reconciler applies it. */
export type LeaseChange = { type: "put"; lease: Lease } | { type: "delete"; subnet: Cidr };

/**
 * A burst of watch events -> one plan: the last change per subnet wins, our
 * own subnet is left alone (the agent handles it), a put whose lease cannot
 * be programmed removes the entry.
 */
export function planChanges(
  changes: LeaseChange[],
  own: Cidr | undefined,
  entryOf: (l: Lease) => HostEntry | undefined,
): SyncPlan {
  const last = new Map<number, LeaseChange>();
  for (const c of changes) {
    const id = subnetId(c.type === "put" ? c.lease.subnet : c.subnet);
    last.delete(id); // re-insert: keeps the order of the last change
    last.set(id, c);
  }
  const plan: SyncPlan = { upserts: [], deletes: [] };
  for (const c of last.values()) {
    const subnet = c.type === "put" ? c.lease.subnet : c.subnet;
    if (own && subnet.equals(own)) continue;
    const entry = c.type === "put" ? entryOf(c.lease) : undefined;
    if (entry) plan.upserts.push({ subnet, host: entry });
    else plan.deletes.push(subnet);
  }
  return plan;
}
