// Subnet leases as flannel stores them: key <prefix>/subnets/10.5.1.0-24,
// or 10.5.1.0-24&fc00:0:0:1::-64 in a dual-stack network; value
// {"PublicIP":..,"PublicIPv6":null or "..","BackendType":"vxlan",
// "BackendData":{"VNI":1,"VtepMAC":".."},"BackendV6Data":{..}}. Pure: codec,
// subnet choice and the reconcile plan; etcd I/O lives in etcd-store.ts.
import { ConfigError } from "../errors";
import { subnetCount, subnetCount6, subnetRange, type NetworkConfig } from "./config";
import { F_LOCAL, type HostEntry } from "../bpf/codec";
import { type HostEntry6 } from "../bpf/codec6";
import { Cidr, formatIp, parseIp, parseMac, writeMac, type Ip4 } from "../net/ip";
import { Cidr6, formatIp6, parseIp6, subnets6, type Ip6 } from "../net/ip6";

const MAC_SCRATCH = new Uint8Array(6);

export interface LeaseAttrs {
  publicIp: Ip4;
  backendType: string;
  vni?: number;
  vtepMac?: string;
  /** `PublicIPv6`: the node's IPv6 underlay address (dual-stack). */
  publicIpv6?: Ip6;
  /** `BackendV6Data.VNI` and `.VtepMAC`: the IPv6 VXLAN device's. */
  vni6?: number;
  vtepMac6?: string;
}

export interface Lease {
  subnet: Cidr;
  /** The IPv6 half of a dual-stack lease (the key's "&fc00:0:0:1::-64"). */
  subnet6?: Cidr6;
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

/** flannel's key: "10.5.1.0-24", or "10.5.1.0-24&fc00:0:0:1::-64" with an IPv6 subnet. */
export function leaseKey(prefix: string, subnet: Cidr, subnet6?: Cidr6): string {
  return `${subnetsPrefix(prefix)}${subnet.toKey()}${subnet6 ? `&${subnet6.toKey()}` : ""}`;
}

/** The key of a lease as it is (both halves). */
export function keyOf(prefix: string, l: Pick<Lease, "subnet" | "subnet6">): string {
  return leaseKey(prefix, l.subnet, l.subnet6);
}

/** One "addr-len" half of a key, or undefined when it is not a network in canonical form. */
function keyHalf<C extends Cidr | Cidr6>(
  text: string,
  parse: (s: string, field: string, strict: boolean) => C,
): C | undefined {
  const dash = text.lastIndexOf("-");
  if (dash < 0 || !/^\d{1,3}$/.test(text.slice(dash + 1))) return undefined;
  try {
    // strict: a key with host bits set is not a lease key
    return parse(`${text.slice(0, dash)}/${text.slice(dash + 1)}`, "key", true);
  } catch {
    return undefined;
  }
}

/**
 * "…/subnets/10.5.1.0-24[&fc00:0:0:1::-64]" -> both subnets, or undefined
 * for a foreign key. What flannel's pattern
 * `(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$` accepts, but whole and
 * strict: each half in the canonical text leaseKey() writes (what flannel
 * writes too), with no host bits and lengths within 0..32 and 0..128.
 */
export function parseLeaseKeyParts(
  prefix: string,
  key: string,
): { subnet: Cidr; subnet6?: Cidr6 } | undefined {
  const p = subnetsPrefix(prefix);
  if (!key.startsWith(p)) return undefined;
  const rest = key.slice(p.length);
  const amp = rest.indexOf("&");
  const subnet = keyHalf(amp < 0 ? rest : rest.slice(0, amp), (s, f, x) => Cidr.parse(s, f, x));
  if (!subnet || subnet.toKey() !== (amp < 0 ? rest : rest.slice(0, amp))) return undefined;
  if (amp < 0) return { subnet };
  const v6 = rest.slice(amp + 1);
  if (!/^[a-f\d:]+-\d+$/.test(v6)) return undefined; // flannel's pattern: lower-case hex only
  const subnet6 = keyHalf(v6, (s, f, x) => Cidr6.parse(s, f, x));
  // canonical text only: the key must be the one leaseKey() makes for it
  return subnet6 && subnet6.toKey() === v6 ? { subnet, subnet6 } : undefined;
}

/** "…/subnets/10.5.1.0-24[&…]" -> 10.5.1.0/24, or undefined for foreign keys. */
export function parseLeaseKey(prefix: string, key: string): Cidr | undefined {
  return parseLeaseKeyParts(prefix, key)?.subnet;
}

/**
 * flannel's lease JSON, field for field and in flannel's order (its
 * LeaseAttrs struct): PublicIPv6 is null without IPv6 (a nil pointer), and
 * BackendV6Data is there only with it (omitempty), as flannel's vxlan
 * backend writes them.
 */
export function encodeLeaseAttrs(a: LeaseAttrs): string {
  const data = a.backendType !== "host-gw"; // host-gw has none; flannel omits the fields
  return JSON.stringify({
    PublicIP: formatIp(a.publicIp),
    PublicIPv6: a.publicIpv6 === undefined ? null : formatIp6(a.publicIpv6),
    BackendType: a.backendType,
    ...(data ? { BackendData: { VNI: a.vni ?? 1, VtepMAC: a.vtepMac } } : {}),
    ...(data && a.publicIpv6 !== undefined
      ? { BackendV6Data: { VNI: a.vni6 ?? a.vni ?? 1, VtepMAC: a.vtepMac6 } }
      : {}),
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
  const pub6 = get("PublicIPv6");
  if (pub6 !== undefined && pub6 !== null && pub6 !== "") {
    if (typeof pub6 !== "string")
      throw new ConfigError(
        "PublicIPv6",
        `must be a string or null, got ${JSON.stringify(pub6)}`,
        key,
      );
    attrs.publicIpv6 = parseIp6(pub6, `${key}: PublicIPv6`);
  }
  const data6 = get("BackendV6Data");
  if (data6 && typeof data6 === "object") {
    const d = data6 as Record<string, unknown>;
    const vni = field(d, "VNI");
    if (typeof vni === "number") attrs.vni6 = vni;
    const mac = field(d, "VtepMAC");
    if (typeof mac === "string") {
      parseMac(mac, `${key}: BackendV6Data.VtepMAC`);
      attrs.vtepMac6 = mac.toLowerCase();
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
  previous6?: Cidr6,
): { subnet: Cidr; subnet6?: Cidr6; existing?: Lease } | undefined {
  const own = leases
    .filter((l) => l.attrs.publicIp === publicIp && inRange(cfg, l.subnet))
    // a reservation wins over a lease
    .sort((a, b) => Number(isReservation(b)) - Number(isReservation(a)));
  if (own[0]) {
    const subnet6 = preferredSubnet6(cfg, leases, own[0], previous6);
    return { subnet: own[0].subnet, ...(subnet6 ? { subnet6 } : {}), existing: own[0] };
  }
  if (previous && inRange(cfg, previous) && !leases.some((l) => l.subnet.equals(previous))) {
    const subnet6 = preferredSubnet6(cfg, leases, undefined, previous6);
    return { subnet: previous, ...(subnet6 ? { subnet6 } : {}) };
  }
  return undefined;
}

/**
 * The IPv6 subnet to keep beside a v4 choice: the existing lease's if it
 * fits the config and no earlier lease holds it too, else the previous subnet file's if it fits and is free;
 * undefined means none (IPv6 off) or a free one (chooseFree6). A v4-only
 * lease of our own in a dual-stack network so keeps its v4 subnet and gains
 * a v6 one, where flannel deletes it and starts over.
 */
function preferredSubnet6(
  cfg: NetworkConfig,
  leases: Lease[],
  existing: Lease | undefined,
  previous6: Cidr6 | undefined,
): Cidr6 | undefined {
  if (!cfg.ipv6) return undefined;
  if (existing?.subnet6 && inRange6(cfg, existing.subnet6) && !v6Conflict(existing, leases)) {
    return existing.subnet6;
  }
  if (
    previous6 &&
    inRange6(cfg, previous6) &&
    !leases.some((l) => l !== existing && l.subnet6?.overlaps(previous6))
  ) {
    return previous6;
  }
  return undefined;
}

/** Is `s` one of the config's IPv6 subnets? (Never without IPv6.) */
export function inRange6(cfg: NetworkConfig, s: Cidr6): boolean {
  const v = cfg.ipv6;
  return (
    v !== undefined &&
    s.prefixlen === v.subnetLen &&
    v.network.covers(s) &&
    s.addr >= v.subnetMin &&
    s.addr <= v.subnetMax
  );
}

export function inRange(cfg: NetworkConfig, s: Cidr): boolean {
  return (
    s.prefixlen === cfg.subnetLen &&
    cfg.network.covers(s) &&
    s.addr >= cfg.subnetMin &&
    s.addr <= cfg.subnetMax
  );
}

/**
 * Where a listing of the leases may be cut into `streams` ranges read side by
 * side (etcd answers each on its own, and one stream mostly waits for it):
 * key texts after "…/subnets/" (leaseKey()'s), ascending, each range about
 * as big. None when the config's range holds no more than `minPerStream`
 * subnets a stream. Nodes take subnets at random from [SubnetMin,
 * SubnetMax], so leases spread over the keys as the range's subnets do: the
 * cuts are the byte-order quantiles of an even sample of the range (key
 * order is text order, "10.100.0.0-24" before "10.11.0.0-24"). Any cuts give
 * the same listing; these only balance it.
 */
export function listSplits(cfg: NetworkConfig, streams: number, minPerStream: number): string[] {
  const count = subnetCount(cfg);
  const n = Math.min(streams, Math.floor(count / minPerStream));
  if (n < 2) return [];
  const samples = Math.min(count, 4096);
  const size = 2 ** (32 - cfg.subnetLen);
  const keys: string[] = [];
  for (let i = 0; i < samples; i++) {
    const k = Math.floor((i * count) / samples);
    keys.push(Cidr.of(cfg.subnetMin + k * size, cfg.subnetLen).toKey());
  }
  keys.sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const cuts: string[] = [];
  for (let i = 1; i < n; i++) {
    const k = keys[Math.floor((i * samples) / n)] as string;
    if (k !== cuts[cuts.length - 1]) cuts.push(k);
  }
  return cuts;
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

/** Ranges up to this many subnets are listed whole; bigger ones are probed. */
const LIST_LIMIT6 = 1n << 16n;

/** A uniform bigint in [0, n) from `random` (32 bits a draw). */
function randomBelow(n: bigint, random: () => number): bigint {
  let r = 0n;
  for (let bits = 0n; 1n << bits < n; bits += 32n) {
    r = (r << 32n) | BigInt(Math.floor(random() * 2 ** 32) >>> 0);
  }
  return r % n;
}

/**
 * A random IPv6 subnet of [IPv6SubnetMin, IPv6SubnetMax] that no lease
 * holds, or undefined when all are taken (or IPv6 is off). A /48 split in
 * /64s is 65,535 subnets, a /32 four billion: small ranges are listed, big
 * ones probed at random and, failing that, scanned from a random point for
 * at most as many subnets as are taken, which always finds a free one.
 */
export function chooseFree6(
  cfg: NetworkConfig,
  taken: Iterable<Cidr6>,
  random: () => number = Math.random,
): Cidr6 | undefined {
  const v = cfg.ipv6;
  if (!v) return undefined;
  const count = subnetCount6(cfg);
  const used = new Set<bigint>();
  for (const t of taken) if (t.prefixlen === v.subnetLen) used.add(t.addr);
  const shift = BigInt(128 - v.subnetLen);
  const nth = (i: bigint) => Cidr6.of(v.subnetMin + (i << shift), v.subnetLen);
  if (count <= LIST_LIMIT6) {
    const free: Cidr6[] = [];
    for (const s of subnets6(v.subnetMin, v.subnetMax, v.subnetLen))
      if (!used.has(s.addr)) free.push(s);
    return free.length ? free[Math.floor(random() * free.length)] : undefined;
  }
  for (let i = 0; i < 32; i++) {
    const s = nth(randomBelow(count, random));
    if (!used.has(s.addr)) return s;
  }
  const start = randomBelow(count, random);
  for (let i = 0n; i <= BigInt(used.size); i++) {
    const s = nth((start + i) % count);
    if (!used.has(s.addr)) return s;
  }
  return undefined;
}

/**
 * After creating a dual-stack lease: another lease holding our IPv6 subnet
 * (two nodes picked it at once; the key makes only the v4 half unique). The
 * lease written later (higher modRevision) gives way, so exactly one of the
 * two nodes retries.
 */
export function v6Conflict(own: Lease, leases: Iterable<Lease>): Lease | undefined {
  const s6 = own.subnet6;
  if (!s6) return undefined;
  for (const l of leases) {
    if (l.subnet.equals(own.subnet) || !l.subnet6?.overlaps(s6)) continue;
    if (BigInt(l.modRevision) < BigInt(own.modRevision)) return l;
  }
  return undefined;
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

export interface SyncPlanOf<C, H> {
  upserts: { subnet: C; host: H }[];
  deletes: C[];
}
export type SyncPlan = SyncPlanOf<Cidr, HostEntry>;
export type SyncPlan6 = SyncPlanOf<Cidr6, HostEntry6>;

/** Two map entries say the same (host, VTEP MAC, flags). */
export function sameHost(a: HostEntry | HostEntry6, b: HostEntry | HostEntry6): boolean {
  return a.remoteIp === b.remoteIp && a.vtepMac === b.vtepMac && a.flags === b.flags;
}

/** desired vs actual -> the smallest set of map operations (either family). */
function planSyncOf<K, C, H extends HostEntry | HostEntry6>(
  desired: Map<K, { subnet: C; host: H }>,
  actual: { subnet: C; host: H }[],
  key: (c: C) => K,
): SyncPlanOf<C, H> {
  const have = new Map(actual.map((e) => [key(e.subnet), e]));
  const plan: SyncPlanOf<C, H> = { upserts: [], deletes: [] };
  for (const [k, want] of desired) {
    const cur = have.get(k);
    if (!cur || !sameHost(cur.host, want.host)) plan.upserts.push(want);
  }
  for (const [k, cur] of have) if (!desired.has(k)) plan.deletes.push(cur.subnet);
  return plan;
}

/** desired vs actual -> the smallest set of map operations. */
export function planSync(
  desired: DesiredEntries,
  actual: { subnet: Cidr; host: HostEntry }[],
): SyncPlan {
  return planSyncOf(desired, actual, subnetId);
}

/** A lease change from the watch, as the reconciler applies it. */
export type LeaseChange =
  | { type: "put"; lease: Lease }
  /** subnet6: the IPv6 half of the deleted key (a dual-stack lease's);
   * revision: etcd's, for a delete that arrived by the watch. */
  | { type: "delete"; subnet: Cidr; subnet6?: Cidr6; revision?: bigint };

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

// --- the IPv6 half of dual-stack leases (ovl_subnets6) -----------------------
// A lease is one key holding both halves, so its IPv6 subnet changes only
// with its key (a delete of the old key, a put of the new): puts and deletes
// carry the subnet6 they concern, and the IPv6 map follows them by subnet6.

/** A backend's rule for the IPv6 map entry of a peer's dual-stack lease. */
export type EntryOf6 = (l: Lease, log: (msg: string) => void) => HostEntry6 | undefined;

/** An IPv6 subnet as one bigint (addr * 256 + prefixlen): a map key. */
export function subnet6Id(c: Cidr6): bigint {
  return (c.addr << 8n) | BigInt(c.prefixlen);
}

export type DesiredEntries6 = Map<bigint, { subnet: Cidr6; host: HostEntry6 }>;

/** The IPv6 entry of a remote dual-stack lease; undefined (logged) when the
 * lease has an IPv6 subnet it does not say how to reach. A v4-only lease
 * (an older node during a rollout) has none, silently. */
export function hostEntry6Of(
  l: Lease,
  log: (msg: string) => void = () => {},
): HostEntry6 | undefined {
  if (!l.subnet6 || l.attrs.backendType !== "vxlan") return undefined;
  if (l.attrs.publicIpv6 === undefined) {
    log(`lease ${l.subnet} has IPv6 subnet ${l.subnet6} but no PublicIPv6; IPv6 not programmed`);
    return undefined;
  }
  if (!l.attrs.vtepMac6) {
    log(`lease ${l.subnet}: no BackendV6Data.VtepMAC; IPv6 subnet ${l.subnet6} not programmed`);
    return undefined;
  }
  return { remoteIp: l.attrs.publicIpv6, vtepMac: l.attrs.vtepMac6, flags: 0 };
}

/** What ovl_subnets6 should hold for a set of leases: one entry per IPv6
 * subnet (two leases claiming one: the first, and said), ours LOCAL. */
export function desiredEntries6(
  leases: Iterable<Lease>,
  own: { subnet: Cidr6; host: HostEntry6 } | undefined,
  log: (msg: string) => void = () => {},
  entryOf: EntryOf6 = hostEntry6Of,
): DesiredEntries6 {
  const want: DesiredEntries6 = new Map();
  const by = new Map<bigint, Cidr>();
  for (const l of leases) {
    const s6 = l.subnet6;
    if (!s6 || (own && s6.equals(own.subnet))) continue;
    const id = subnet6Id(s6);
    const first = by.get(id);
    if (first) {
      log(`IPv6 subnet ${s6} is in leases ${first} and ${l.subnet}; kept ${first}'s`);
      continue;
    }
    const entry = entryOf(l, log);
    if (!entry) continue;
    by.set(id, l.subnet);
    want.set(id, { subnet: s6, host: entry });
  }
  if (own)
    want.set(subnet6Id(own.subnet), { subnet: own.subnet, host: { ...own.host, flags: F_LOCAL } });
  return want;
}

export function planSync6(
  desired: DesiredEntries6,
  actual: { subnet: Cidr6; host: HostEntry6 }[],
): SyncPlan6 {
  return planSyncOf(desired, actual, subnet6Id);
}

/**
 * A burst of watch events -> the IPv6 map's plan: the last change per IPv6
 * subnet wins; our own is left alone; a put whose lease cannot be
 * programmed over IPv6 removes its entry. Changes without an IPv6 subnet
 * (v4-only leases) change nothing here.
 */
export function planChanges6(
  changes: LeaseChange[],
  own: Cidr6 | undefined,
  entryOf: (l: Lease) => HostEntry6 | undefined,
): SyncPlan6 {
  const last = new Map<bigint, { subnet: Cidr6; change: LeaseChange }>();
  for (const c of changes) {
    const subnet = c.type === "put" ? c.lease.subnet6 : c.subnet6;
    if (!subnet) continue;
    const id = subnet6Id(subnet);
    last.delete(id);
    last.set(id, { subnet, change: c });
  }
  const plan: SyncPlan6 = { upserts: [], deletes: [] };
  for (const { subnet, change } of last.values()) {
    if (own && subnet.equals(own)) continue;
    const entry = change.type === "put" ? entryOf(change.lease) : undefined;
    if (entry) plan.upserts.push({ subnet, host: entry });
    else plan.deletes.push(subnet);
  }
  return plan;
}
