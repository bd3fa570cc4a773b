// SubnetHostMap: the one interface everything above the data path uses to
// say "subnet S lives on host H". It keeps three maps consistent:
//   ovl_subnets    (LPM)  S -> {H's underlay IP, H's VTEP MAC, flags}
//   ovl_peers      (hash) H's underlay IP -> S   (decap's source check)
//   ovl_peer_stats (pcpu) H's underlay IP -> counters, created here so the
//                         fast path never inserts
import { BPF_NOEXIST } from "./libbpf";
import { BpfError } from "../errors";
import { BpfMap } from "./map";
import {
  decodeHostEntry,
  decodeIp,
  decodePeer,
  decodeSubnetKey,
  encodeHostEntry,
  encodeHostEntryInto,
  encodeIp,
  encodeIpInto,
  encodeLookupKey,
  encodePeer,
  encodePeerInto,
  encodeSubnetKey,
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
import { mapInfo, possibleCpus } from "./map";
import { type Cidr, type Ip4 } from "../net/ip";

export interface SubnetEntry {
  subnet: Cidr;
  host: HostEntry;
}

export interface SubnetMapLike {
  /** Subnet entries written or deleted so far (a warm restart writes none). */
  readonly writes?: number;
  upsert(subnet: Cidr, host: HostEntry): void;
  /** Many upserts at once (a full sync); same result as upsert() each. */
  upsertMany?(entries: SubnetEntry[]): void;
  delete(subnet: Cidr): boolean;
  list(): SubnetEntry[];
}

export class SubnetHostMap implements SubnetMapLike {
  writes = 0;

  constructor(
    private readonly subnets: BpfMap,
    private readonly peers: BpfMap,
    private readonly peerStats: BpfMap,
  ) {}

  static openPinned(pinPath: string): SubnetHostMap {
    return new SubnetHostMap(
      BpfMap.openPinned(pinPath, "ovl_subnets"),
      BpfMap.openPinned(pinPath, "ovl_peers"),
      BpfMap.openPinned(pinPath, "ovl_peer_stats"),
    );
  }

  close(): void {
    this.subnets.close();
    this.peers.close();
    this.peerStats.close();
  }

  /** Entries in ovl_subnets, counted once and then kept by our writes. */
  private size: number | undefined;

  /** A subnet moved off host `ip`: the peer goes if it still points here. */
  private dropPeer(ip: Ip4, subnet: Cidr): void {
    const key = encodeIp(ip);
    const peer = this.peers.lookup(key);
    if (peer && decodePeer(peer).equals(subnet)) {
      this.peers.delete(key);
      this.peerStats.delete(key);
    }
  }

  /** Before writing `subnet` on `host`: a host it moves off loses its peer
   * first (a full ovl_peers has no room for both); the count. */
  private replacing(subnet: Cidr, host: HostEntry, old: HostEntry | undefined): void {
    if (!old) {
      if (this.size !== undefined) this.size++;
    } else if (!(old.flags & F_LOCAL) && old.remoteIp !== host.remoteIp) {
      this.dropPeer(old.remoteIp, subnet);
    }
  }

  /**
   * Adds or replaces a subnet. The peer entry goes in first, so decap admits
   * the host before encap starts sending to it; a subnet that moves to
   * another host takes its old peer out (else churn fills ovl_peers).
   */
  upsert(subnet: Cidr, host: HostEntry): void {
    this.replacing(subnet, host, this.get(subnet));
    if (!(host.flags & F_LOCAL)) {
      const ip = encodeIp(host.remoteIp);
      this.peers.update(ip, encodePeer(subnet));
      try {
        this.peerStats.update(ip, Buffer.alloc(this.peerStats.valueBufSize), BPF_NOEXIST);
      } catch (e) {
        // Counters survive a re-upsert (agent restart, lease renewal).
        if (!(e instanceof BpfError && e.code === "EEXIST")) throw e;
      }
    }
    this.subnets.update(encodeSubnetKey(subnet), encodeHostEntry(host));
    this.writes++;
  }

  upsertMany(entries: SubnetEntry[]): void {
    if (entries.length < 64) {
      for (const e of entries) this.upsert(e.subnet, e.host);
      return;
    }
    // Which entries replace one: for a map much smaller than the write (a
    // first start's holds only our own entry) one walk of its keys says,
    // else a lookup each. Hosts they move off lose their peer entries first.
    const held = this.keysUpTo(entries.length >> 4);
    for (const e of entries) {
      const known = held?.has(e.subnet.addr * 64 + e.subnet.prefixlen) ?? true;
      this.replacing(e.subnet, e.host, known ? this.get(e.subnet) : undefined);
    }
    // Which peers already have counters: one batch listing when the write
    // is a large part of the map (a full sync), else a lookup each (a
    // coalesced burst of watch events into a big map).
    let counted: Set<Ip4> | undefined;
    if (entries.length > 4096) {
      const have = (counted = new Set<Ip4>());
      this.peerStats.forEach((k, ko) => have.add(decodeIp(k, ko)));
    }
    // One pass encodes all three writes (65,536 entries at a first start).
    const n = entries.length;
    const keys = Buffer.alloc(n * SUBNET_KEY_SIZE);
    const vals = Buffer.alloc(n * HOST_ENTRY_SIZE);
    const peerKeys = Buffer.alloc(n * 4);
    const peerVals = Buffer.alloc(n * PEER_SIZE);
    const statKeys = Buffer.alloc(n * 4);
    let remote = 0;
    let fresh = 0;
    for (let i = 0; i < n; i++) {
      const e = entries[i] as SubnetEntry;
      encodeSubnetKeyInto(e.subnet, keys, i * SUBNET_KEY_SIZE);
      encodeHostEntryInto(e.host, vals, i * HOST_ENTRY_SIZE);
      if (e.host.flags & F_LOCAL) continue;
      const ip = e.host.remoteIp;
      encodeIpInto(ip, peerKeys, remote * 4);
      encodePeerInto(e.subnet, peerVals, remote * PEER_SIZE);
      remote++;
      // New peers get zeroed counters; existing ones keep theirs.
      if (counted ? !counted.has(ip) : this.peerStats.lookup(encodeIp(ip)) === undefined) {
        encodeIpInto(ip, statKeys, fresh * 4);
        fresh++;
      }
    }
    // The peers first: decap admits a host before encap sends to it.
    this.peers.updateMany(peerKeys, peerVals, remote);
    this.peerStats.updateMany(statKeys, Buffer.alloc(fresh * this.peerStats.valueBufSize), fresh);
    this.subnets.updateMany(keys, vals, n);
    this.writes += n;
  }

  /** The subnets in ovl_subnets (addr * 64 + prefixlen), if at most `limit`. */
  private keysUpTo(limit: number): Set<number> | undefined {
    const out = new Set<number>();
    for (const k of this.subnets.keys()) {
      if (out.size === limit) return undefined;
      const c = decodeSubnetKey(k);
      out.add(c.addr * 64 + c.prefixlen);
    }
    return out;
  }

  /** Removes a subnet; its peer goes too unless the peer now holds another. */
  delete(subnet: Cidr): boolean {
    const key = encodeSubnetKey(subnet);
    const old = this.subnets.lookup(key);
    const existed = this.subnets.delete(key);
    this.writes++;
    if (existed && this.size !== undefined) this.size--;
    if (old) {
      const host = decodeHostEntry(old);
      if (!(host.flags & F_LOCAL)) this.dropPeer(host.remoteIp, subnet);
    }
    return existed;
  }

  /** The subnet's entry (an exact-prefix lookup). */
  get(subnet: Cidr): HostEntry | undefined {
    const v = this.subnets.lookup(encodeSubnetKey(subnet));
    return v ? decodeHostEntry(v) : undefined;
  }

  /** Longest-prefix match: what the data path does with this destination. */
  match(ip: Ip4): SubnetEntry | undefined {
    const v = this.subnets.lookup(encodeLookupKey(ip));
    if (!v) return undefined;
    const host = decodeHostEntry(v);
    // The trie returns the value, not the matched prefix: find the key.
    let best: Cidr | undefined;
    for (const e of this.list()) {
      if (e.subnet.contains(ip) && (!best || e.subnet.prefixlen > best.prefixlen)) best = e.subnet;
    }
    return best ? { subnet: best, host } : undefined;
  }

  /** The kernel's id of ovl_subnets: another id is another map. */
  id(): number {
    return mapInfo(this.subnets.fd, "ovl_subnets").id;
  }

  /** Remote peers (ovl_peers has one per remote lease; a batch listing). */
  peerCount(): number {
    let n = 0;
    this.peers.forEach(() => n++);
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
  list(): SubnetEntry[] {
    const out: SubnetEntry[] = [];
    // Decoded from the batch buffers: no copy of each key and value.
    this.subnets.forEach((k, ko, v, vo) =>
      out.push({ subnet: decodeSubnetKey(k, ko), host: decodeHostEntry(v, vo) }),
    );
    return out.sort(
      (a, b) => a.subnet.addr - b.subnet.addr || a.subnet.prefixlen - b.subnet.prefixlen,
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

  /** Every peer's live counters as Numbers (tx packets, tx bytes, rx
   * packets, rx bytes), in one array reused for each: copy to keep. */
  eachPeer(fn: (ip: Ip4, c: Float64Array) => void): void {
    const ncpu = possibleCpus();
    const c = new Float64Array(4);
    this.peerStats.forEach((k, ko, v, vo) => {
      sumPeerCountersInto(v, ncpu, vo, c);
      fn(decodeIp(k, ko), c);
    });
  }

  /** Live per-peer counters, by underlay IP. */
  peerCounters(): Map<Ip4, PeerCounters> {
    const ncpu = possibleCpus();
    const out = new Map<Ip4, PeerCounters>();
    this.peerStats.forEach((k, ko, v, vo) =>
      out.set(decodeIp(k, ko), sumPeerCounters(v, ncpu, vo)),
    );
    return out;
  }
}
