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
  encodeIp,
  encodeLookupKey,
  encodePeer,
  encodeSubnetKey,
  F_LOCAL,
  sumPeerCounters,
  type HostEntry,
  type PeerCounters,
} from "./codec";
import { possibleCpus } from "./map";
import { type Cidr, type Ip4 } from "../net/ip";

export interface SubnetEntry {
  subnet: Cidr;
  host: HostEntry;
}

export interface SubnetMapLike {
  upsert(subnet: Cidr, host: HostEntry): void;
  /** Many upserts at once (a full sync); same result as upsert() each. */
  upsertMany?(entries: SubnetEntry[]): void;
  delete(subnet: Cidr): boolean;
  list(): SubnetEntry[];
}

export class SubnetHostMap implements SubnetMapLike {
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

  /**
   * Adds or replaces a subnet. The peer entry goes in first, so decap admits
   * the host before encap starts sending to it.
   */
  upsert(subnet: Cidr, host: HostEntry): void {
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
  }

  upsertMany(entries: SubnetEntry[]): void {
    if (entries.length < 64) {
      for (const e of entries) this.upsert(e.subnet, e.host);
      return;
    }
    const remote = entries.filter((e) => !(e.host.flags & F_LOCAL));
    const haveStats = new Set(this.peerStats.entries().map(([k]) => decodeIp(k)));
    const fresh = remote.filter((e) => !haveStats.has(e.host.remoteIp));
    this.peers.updateMany(
      Buffer.concat(remote.map((e) => encodeIp(e.host.remoteIp))),
      Buffer.concat(remote.map((e) => encodePeer(e.subnet))),
      remote.length,
    );
    // New peers get zeroed counters; existing ones keep theirs.
    this.peerStats.updateMany(
      Buffer.concat(fresh.map((e) => encodeIp(e.host.remoteIp))),
      Buffer.alloc(fresh.length * this.peerStats.valueBufSize),
      fresh.length,
    );
    this.subnets.updateMany(
      Buffer.concat(entries.map((e) => encodeSubnetKey(e.subnet))),
      Buffer.concat(entries.map((e) => encodeHostEntry(e.host))),
      entries.length,
    );
  }

  /** Removes a subnet; its peer goes too unless the peer now holds another. */
  delete(subnet: Cidr): boolean {
    const key = encodeSubnetKey(subnet);
    const old = this.subnets.lookup(key);
    const existed = this.subnets.delete(key);
    if (old) {
      const host = decodeHostEntry(old);
      if (!(host.flags & F_LOCAL)) {
        const ip = encodeIp(host.remoteIp);
        const peer = this.peers.lookup(ip);
        if (peer && decodePeer(peer).equals(subnet)) {
          this.peers.delete(ip);
          this.peerStats.delete(ip);
        }
      }
    }
    return existed;
  }

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

  /** Number of entries (keys only: half the syscalls of list()). */
  count(): number {
    let n = 0;
    const keys = this.subnets.keys();
    while (!keys.next().done) n++;
    return n;
  }

  /** Every entry, sorted by subnet address then prefix length. */
  list(): SubnetEntry[] {
    return this.subnets
      .entries()
      .map(([k, v]) => ({ subnet: decodeSubnetKey(k), host: decodeHostEntry(v) }))
      .sort((a, b) => a.subnet.addr - b.subnet.addr || a.subnet.prefixlen - b.subnet.prefixlen);
  }

  /** Live per-peer counters, by underlay IP. */
  peerCounters(): Map<Ip4, PeerCounters> {
    const ncpu = possibleCpus();
    return new Map(
      this.peerStats.entries().map(([k, v]) => [decodeIp(k), sumPeerCounters(v, ncpu)]),
    );
  }
}
