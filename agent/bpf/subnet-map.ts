// SubnetHostMap: the one interface everything above the data path uses to
// say "subnet S lives on host H". It keeps three maps consistent:
//   ovl_subnets    (LPM)  S -> {H's underlay IP, H's VTEP MAC, flags}
//   ovl_peers      (hash) H's underlay IP -> S   (decap's source check)
//   ovl_peer_stats (pcpu) H's underlay IP -> counters, made by the data
//                         path with H's first packet (not preallocated),
//                         deleted here with the peer; pruneCounters()
//                         removes any a packet in flight brought back
// One class for both address families (SubnetFamily): SubnetHostMap6 keeps
// ovl_subnets6, ovl_peers6 and ovl_peer_stats6 the same way, keyed by the
// IPv6 subnet of a dual-stack lease and the host's PublicIPv6.
import { BpfMap } from "./map";
import {
  decodeHostEntry,
  decodeIp,
  decodePeer,
  decodeSubnetKey,
  encodeHostEntryInto,
  encodeIpInto,
  encodePeerInto,
  encodeSubnetKeyInto,
  F_LOCAL,
  HOST_ENTRY_SIZE,
  PEER_SIZE,
  SUBNET_KEY_SIZE,
  sumPeerCounters,
  sumPeerCountersInto,
  type HostEntry,
  type PeerCounters,
} from "./codec";
import {
  decodeHostEntry6,
  decodeIp6,
  decodePeer6,
  decodeSubnet6Key,
  encodeHostEntry6Into,
  encodeIp6Into,
  encodePeer6Into,
  encodeSubnet6KeyInto,
  HOST_ENTRY6_SIZE,
  PEER6_SIZE,
  SUBNET6_KEY_SIZE,
  type HostEntry6,
} from "./codec6";
import { type MapName } from "./abi.generated";
import { mapInfo, possibleCpus } from "./map";
import { Cidr, type Ip4 } from "../net/ip";
import { Cidr6, type Ip6 } from "../net/ip6";

/** What both families' subnets offer (Cidr, Cidr6). */
interface FamilyCidr<A> {
  readonly addr: A;
  readonly prefixlen: number;
  equals(other: this): boolean;
  contains(ip: A): boolean;
}

/** One address family's map names and byte layouts. */
interface SubnetFamily<A extends number | bigint, C extends FamilyCidr<A>, H> {
  subnets: MapName;
  peers: MapName;
  peerStats: MapName;
  /** Address width in bits (a lookup key is addr/bits). */
  bits: number;
  ip: Layout<A>;
  key: Layout<C>;
  host: Layout<H>;
  peer: Layout<C>;
  cidr(addr: A, prefixlen: number): C;
  /** A subnet as one number or bigint (a Set key). */
  id(c: C): number | bigint;
}

interface Layout<T> {
  size: number;
  into(v: T, b: Buffer, off: number): void;
  decode(b: Buffer, off: number): T;
}

const V4: SubnetFamily<Ip4, Cidr, HostEntry> = {
  subnets: "ovl_subnets",
  peers: "ovl_peers",
  peerStats: "ovl_peer_stats",
  bits: 32,
  ip: { size: 4, into: encodeIpInto, decode: decodeIp },
  key: {
    size: SUBNET_KEY_SIZE,
    into: encodeSubnetKeyInto,
    decode: (b, o) => decodeSubnetKey(b.subarray(o)),
  },
  host: {
    size: HOST_ENTRY_SIZE,
    into: encodeHostEntryInto,
    decode: (b, o) => decodeHostEntry(b.subarray(o)),
  },
  peer: { size: PEER_SIZE, into: encodePeerInto, decode: (b, o) => decodePeer(b.subarray(o)) },
  cidr: (a, l) => Cidr.of(a, l),
  id: (c) => c.addr * 64 + c.prefixlen,
};

const V6: SubnetFamily<Ip6, Cidr6, HostEntry6> = {
  subnets: "ovl_subnets6",
  peers: "ovl_peers6",
  peerStats: "ovl_peer_stats6",
  bits: 128,
  ip: { size: 16, into: encodeIp6Into, decode: decodeIp6 },
  key: {
    size: SUBNET6_KEY_SIZE,
    into: encodeSubnet6KeyInto,
    decode: (b, o) => decodeSubnet6Key(b.subarray(o)),
  },
  host: {
    size: HOST_ENTRY6_SIZE,
    into: encodeHostEntry6Into,
    decode: (b, o) => decodeHostEntry6(b.subarray(o)),
  },
  peer: { size: PEER6_SIZE, into: encodePeer6Into, decode: (b, o) => decodePeer6(b.subarray(o)) },
  cidr: (a, l) => Cidr6.of(a, l),
  id: (c) => (c.addr << 8n) | BigInt(c.prefixlen),
};

function encode<T>(l: Layout<T>, v: T): Buffer {
  const b = Buffer.alloc(l.size);
  l.into(v, b, 0);
  return b;
}

const compare = (a: number | bigint, b: number | bigint): number => (a < b ? -1 : a > b ? 1 : 0);

/** Entries per group of upsertManyAsync's pipelined writes. */
const GROUP = 8192;

export interface SubnetEntryOf<C, H> {
  subnet: C;
  host: H;
}
export type SubnetEntry = SubnetEntryOf<Cidr, HostEntry>;
export type SubnetEntry6 = SubnetEntryOf<Cidr6, HostEntry6>;

export interface SubnetMapLikeOf<C, H> {
  /** Subnet entries written or deleted so far (a warm restart writes none). */
  readonly writes?: number;
  upsert(subnet: C, host: H): void;
  /** Many upserts at once (a full sync); same result as upsert() each. */
  upsertMany?(entries: SubnetEntryOf<C, H>[]): void;
  /** upsertMany(), the kernel's work on worker threads. */
  upsertManyAsync?(entries: SubnetEntryOf<C, H>[]): Promise<void>;
  delete(subnet: C): boolean;
  list(): SubnetEntryOf<C, H>[];
  /** Drops per-peer counters of hosts that are no peer (after a full sync). */
  pruneCounters?(): number;
  /** Hosts that lost their peer since the last sweepDeparted(). */
  readonly departing?: number;
  /** Drops counters remade for those hosts by packets in flight. */
  sweepDeparted?(): number;
}
export type SubnetMapLike = SubnetMapLikeOf<Cidr, HostEntry>;
export type SubnetMapLike6 = SubnetMapLikeOf<Cidr6, HostEntry6>;

export class SubnetHostMapOf<
  A extends number | bigint,
  C extends FamilyCidr<A>,
  H extends { remoteIp: A; flags: number },
> implements SubnetMapLikeOf<C, H> {
  writes = 0;

  protected constructor(
    private readonly f: SubnetFamily<A, C, H>,
    private readonly subnets: BpfMap,
    private readonly peers: BpfMap,
    private readonly peerStats: BpfMap,
  ) {}

  protected static openFamily<A extends number | bigint, C extends FamilyCidr<A>, H>(
    f: SubnetFamily<A, C, H>,
    pinPath: string,
  ): [SubnetFamily<A, C, H>, BpfMap, BpfMap, BpfMap] {
    return [
      f,
      BpfMap.openPinned(pinPath, f.subnets),
      BpfMap.openPinned(pinPath, f.peers),
      BpfMap.openPinned(pinPath, f.peerStats),
    ];
  }

  close(): void {
    this.subnets.close();
    this.peers.close();
    this.peerStats.close();
  }

  /** Entries in the subnet map, counted once and then kept by our writes. */
  private size: number | undefined;

  /** A subnet moved off host `ip`: the peer goes if it still points here. */
  private dropPeer(ip: A, subnet: C): void {
    const key = encode(this.f.ip, ip);
    const peer = this.peers.lookup(key);
    if (peer && this.f.peer.decode(peer, 0).equals(subnet)) {
      this.peers.delete(key);
      this.peerStats.delete(key); // none if the peer never carried traffic
      this.departed.add(ip);
    }
  }

  /** Hosts whose peer went since the last sweepDeparted(). */
  private readonly departed = new Set<A>();

  /** How many hosts lost their peer since the last sweep. */
  get departing(): number {
    return this.departed.size;
  }

  /**
   * Deletes the counters a packet in flight made again for a host as its
   * peer went (the data path had looked the host up just before): run a
   * moment after the removals, it needs no listing. Returns how many went.
   */
  sweepDeparted(): number {
    let n = 0;
    for (const ip of this.departed) {
      const key = encode(this.f.ip, ip);
      if (this.peers.lookup(key) === undefined && this.peerStats.delete(key)) n++;
    }
    this.departed.clear();
    return n;
  }

  /** Before writing `subnet` on `host`: a host it moves off loses its peer
   * first (a full peer map has no room for both); the count. */
  private replacing(subnet: C, host: H, old: H | undefined): void {
    if (!old) {
      if (this.size !== undefined) this.size++;
    } else if (!(old.flags & F_LOCAL) && old.remoteIp !== host.remoteIp) {
      this.dropPeer(old.remoteIp, subnet);
    }
  }

  /**
   * Adds or replaces a subnet. The peer entry goes in first, so decap admits
   * the host before encap starts sending to it; a subnet that moves to
   * another host takes its old peer out (else churn fills the peer map).
   */
  upsert(subnet: C, host: H): void {
    this.replacing(subnet, host, this.get(subnet));
    if (!(host.flags & F_LOCAL)) {
      this.peers.update(encode(this.f.ip, host.remoteIp), encode(this.f.peer, subnet));
    }
    this.subnets.update(encode(this.f.key, subnet), encode(this.f.host, host));
    this.writes++;
  }

  upsertMany(entries: SubnetEntryOf<C, H>[]): void {
    if (entries.length < 64) {
      for (const e of entries) this.upsert(e.subnet, e.host);
      return;
    }
    const b = this.encodeBatch(entries);
    // The peers first: decap admits a host before encap sends to it.
    this.peers.updateMany(b.peerKeys, b.peerVals, b.remote);
    this.subnets.updateMany(b.keys, b.vals, b.n);
    this.writes += b.n;
  }

  /**
   * upsertMany() with the kernel's share on worker threads: the two maps
   * are written side by side, in groups, each group's subnets once its
   * peers are in (decap still admits a host before encap sends to it). A
   * first start's 65,536 entries are ~150 ms of kernel time in a row.
   */
  async upsertManyAsync(entries: SubnetEntryOf<C, H>[]): Promise<void> {
    if (entries.length < 64) return this.upsertMany(entries);
    const b = this.encodeBatch(entries);
    const f = this.f;
    const work: Promise<void>[] = [];
    let peers: Promise<void> = Promise.resolve();
    let subnets: Promise<void> = Promise.resolve();
    let peerFrom = 0;
    for (let g = 0; g < b.remoteAt.length; g++) {
      const from = g * GROUP;
      const to = Math.min(b.n, from + GROUP);
      const [pf, pt] = [peerFrom, b.remoteAt[g] as number];
      peerFrom = pt;
      peers = peers.then(() =>
        this.peers.updateManyAsync(
          b.peerKeys.subarray(pf * f.ip.size, pt * f.ip.size),
          b.peerVals.subarray(pf * f.peer.size, pt * f.peer.size),
          pt - pf,
        ),
      );
      const after = Promise.all([peers, subnets]);
      subnets = after.then(() =>
        this.subnets.updateManyAsync(
          b.keys.subarray(from * f.key.size, to * f.key.size),
          b.vals.subarray(from * f.host.size, to * f.host.size),
          to - from,
        ),
      );
      work.push(peers, subnets);
    }
    // Every write settled before an error is reported: the caller's retry
    // must not run beside one still in flight.
    const failed = (await Promise.allSettled(work)).find((r) => r.status === "rejected");
    if (failed) throw (failed as PromiseRejectedResult).reason;
    this.writes += b.n;
  }

  /**
   * The two writes of a batch upsert, encoded in one pass (65,536 entries
   * at a first start); hosts the entries move off lose their peers first.
   * remoteAt[g]: the peers among the first (g + 1) * GROUP entries.
   */
  private encodeBatch(entries: SubnetEntryOf<C, H>[]) {
    const f = this.f;
    // Which entries replace one: for a map much smaller than the write (a
    // first start's holds only our own entry) one walk of its keys says,
    // else a lookup each.
    const held = this.keysUpTo(entries.length >> 4);
    for (const e of entries) {
      const known = held?.has(f.id(e.subnet)) ?? true;
      this.replacing(e.subnet, e.host, known ? this.get(e.subnet) : undefined);
    }
    const n = entries.length;
    const keys = Buffer.alloc(n * f.key.size);
    const vals = Buffer.alloc(n * f.host.size);
    const peerKeys = Buffer.alloc(n * f.ip.size);
    const peerVals = Buffer.alloc(n * f.peer.size);
    const remoteAt: number[] = [];
    let remote = 0;
    for (let i = 0; i < n; i++) {
      const e = entries[i] as SubnetEntryOf<C, H>;
      f.key.into(e.subnet, keys, i * f.key.size);
      f.host.into(e.host, vals, i * f.host.size);
      if (!(e.host.flags & F_LOCAL)) {
        const ip = e.host.remoteIp;
        f.ip.into(ip, peerKeys, remote * f.ip.size);
        f.peer.into(e.subnet, peerVals, remote * f.peer.size);
        remote++;
      }
      if ((i + 1) % GROUP === 0 || i === n - 1) remoteAt.push(remote);
    }
    return { n, keys, vals, peerKeys, peerVals, remote, remoteAt };
  }

  /** The subnets in the subnet map (family ids), if at most `limit`. */
  private keysUpTo(limit: number): Set<number | bigint> | undefined {
    const out = new Set<number | bigint>();
    for (const k of this.subnets.keys()) {
      if (out.size === limit) return undefined;
      out.add(this.f.id(this.f.key.decode(k, 0)));
    }
    return out;
  }

  /**
   * Deletes the counters of hosts that are no peer (any more): a packet in
   * flight while a peer was removed can make its entry again after ours
   * went. One listing of each map, at a full sync. Returns how many went.
   */
  pruneCounters(): number {
    if (this.peerStats.keys().next().done) return 0; // a first start's: no traffic yet
    const peers = new Set<number | bigint>();
    this.peers.forEach((k, ko) => peers.add(this.f.ip.decode(k, ko)));
    const orphans: Buffer[] = [];
    this.peerStats.forEach((k, ko) => {
      if (!peers.has(this.f.ip.decode(k, ko))) {
        orphans.push(Buffer.from(k.subarray(ko, ko + this.f.ip.size)));
      }
    });
    let n = 0;
    for (const k of orphans) if (this.peerStats.delete(k)) n++;
    this.departed.clear(); // swept with the rest
    return n;
  }

  /** Removes a subnet; its peer goes too unless the peer now holds another. */
  delete(subnet: C): boolean {
    const key = encode(this.f.key, subnet);
    const old = this.subnets.lookup(key);
    const existed = this.subnets.delete(key);
    this.writes++;
    if (existed && this.size !== undefined) this.size--;
    if (old) {
      const host = this.f.host.decode(old, 0);
      if (!(host.flags & F_LOCAL)) this.dropPeer(host.remoteIp, subnet);
    }
    return existed;
  }

  /** The subnet's entry (an exact-prefix lookup). */
  get(subnet: C): H | undefined {
    const v = this.subnets.lookup(encode(this.f.key, subnet));
    return v ? this.f.host.decode(v, 0) : undefined;
  }

  /** Longest-prefix match: what the data path does with this destination. */
  match(ip: A): SubnetEntryOf<C, H> | undefined {
    const v = this.subnets.lookup(encode(this.f.key, this.f.cidr(ip, this.f.bits)));
    if (!v) return undefined;
    const host = this.f.host.decode(v, 0);
    // The trie returns the value, not the matched prefix: find the key.
    let best: C | undefined;
    for (const e of this.list()) {
      if (e.subnet.contains(ip) && (!best || e.subnet.prefixlen > best.prefixlen)) best = e.subnet;
    }
    return best ? { subnet: best, host } : undefined;
  }

  /** The kernel's id of the subnet map: another id is another map. */
  id(): number {
    return mapInfo(this.subnets.fd, this.f.subnets).id;
  }

  /** Remote peers (one per remote lease; a batch listing). */
  peerCount(): number {
    let n = 0;
    this.peers.forEach(() => n++);
    return n;
  }

  /** peerCount() with the kernel's copy on a worker thread. */
  async peerCountAsync(): Promise<number> {
    let n = 0;
    await this.peers.forEachAsync(() => n++);
    return n;
  }

  /** Number of entries: counted once (keys only), then kept by our own
   * writes, since /metrics asks on every scrape. */
  count(): number {
    if (this.size === undefined) {
      let n = 0;
      const keys = this.subnets.keys();
      while (!keys.next().done) n++;
      this.size = n;
    }
    return this.size;
  }

  /** Every entry, sorted by subnet address then prefix length. */
  list(): SubnetEntryOf<C, H>[] {
    const out: SubnetEntryOf<C, H>[] = [];
    // Decoded from the batch buffers: no copy of each key and value.
    this.subnets.forEach((k, ko, v, vo) =>
      out.push({ subnet: this.f.key.decode(k, ko), host: this.f.host.decode(v, vo) }),
    );
    return out.sort(
      (a, b) => compare(a.subnet.addr, b.subnet.addr) || a.subnet.prefixlen - b.subnet.prefixlen,
    );
  }

  /**
   * Every ovl_subnets entry as (key bytes, offset, value bytes, offset), in
   * the map's order, from the batch buffers (codec's subnetAt reads the
   * fields): for readers of the whole map that want no object per entry.
   * The buffers are reused: read them, do not keep them.
   */
  forEachEntry(fn: (k: Buffer, ko: number, v: Buffer, vo: number) => void): void {
    this.subnets.forEach(fn);
  }

  /** forEachEntry() with the kernel's copy on a worker thread (BpfMap.forEachAsync). */
  forEachEntryAsync(fn: (k: Buffer, ko: number, v: Buffer, vo: number) => void): Promise<void> {
    return this.subnets.forEachAsync(fn);
  }

  /** The live counters of every peer that carried traffic (the data path
   * makes them with a peer's first packet; a peer without is at zero) as
   * Numbers (tx packets, tx bytes, rx packets, rx bytes), in one array
   * reused for each: copy to keep. */
  eachPeer(fn: (ip: A, c: Float64Array) => void): void {
    this.peerStats.forEach(this.summing(fn));
  }

  /** eachPeer() with the kernel's copy on a worker thread (BpfMap.forEachAsync). */
  eachPeerAsync(fn: (ip: A, c: Float64Array) => void): Promise<void> {
    return this.peerStats.forEachAsync(this.summing(fn));
  }

  private summing(fn: (ip: A, c: Float64Array) => void) {
    const ncpu = possibleCpus();
    const c = new Float64Array(4);
    return (k: Buffer, ko: number, v: Buffer, vo: number) => {
      sumPeerCountersInto(v, ncpu, vo, c);
      fn(this.f.ip.decode(k, ko), c);
    };
  }

  /** Live per-peer counters, by underlay IP. */
  peerCounters(): Map<A, PeerCounters> {
    const ncpu = possibleCpus();
    const out = new Map<A, PeerCounters>();
    this.peerStats.forEach((k, ko, v, vo) =>
      out.set(this.f.ip.decode(k, ko), sumPeerCounters(v, ncpu, vo)),
    );
    return out;
  }
}

/** IPv4 subnets (ovl_subnets, ovl_peers, ovl_peer_stats). */
export class SubnetHostMap extends SubnetHostMapOf<Ip4, Cidr, HostEntry> {
  static openPinned(pinPath: string): SubnetHostMap {
    return new SubnetHostMap(...SubnetHostMapOf.openFamily(V4, pinPath));
  }
}

/** IPv6 subnets of dual-stack leases (ovl_subnets6, ovl_peers6, ovl_peer_stats6). */
export class SubnetHostMap6 extends SubnetHostMapOf<Ip6, Cidr6, HostEntry6> {
  static openPinned(pinPath: string): SubnetHostMap6 {
    return new SubnetHostMap6(...SubnetHostMapOf.openFamily(V6, pinPath));
  }
}
