// EndpointMap: local pods that decap may hand straight to their namespace
// (bpf_redirect_peer). Written by the CNI plugin at ADD, removed at DEL, and
// by the agent for pods behind a plain bridge. One class for both address
// families: ovl_endpoints is keyed by IPv4, ovl_endpoints6 by IPv6, and the
// values are the same struct ovl_endpoint.
import { BpfMap } from "./map";
import { decodeEndpoint, decodeIp, encodeEndpoint, encodeIp, type Endpoint } from "./codec";
import { decodeIp6, encodeIp6 } from "./codec6";
import { type Ip4 } from "../net/ip";
import { type Ip6 } from "../net/ip6";

interface KeyCodec<A> {
  map: "ovl_endpoints" | "ovl_endpoints6";
  encode(a: A): Buffer;
  decode(b: Buffer): A;
}

const V4: KeyCodec<Ip4> = { map: "ovl_endpoints", encode: encodeIp, decode: (b) => decodeIp(b) };
const V6: KeyCodec<Ip6> = { map: "ovl_endpoints6", encode: encodeIp6, decode: (b) => decodeIp6(b) };

export class EndpointMapOf<A extends number | bigint> {
  constructor(
    private readonly map: BpfMap,
    private readonly key: KeyCodec<A>,
  ) {}

  close(): void {
    this.map.close();
  }

  upsert(podIp: A, ep: Endpoint): void {
    this.map.update(this.key.encode(podIp), encodeEndpoint(ep));
  }

  delete(podIp: A): boolean {
    return this.map.delete(this.key.encode(podIp));
  }

  list(): Array<{ podIp: A; endpoint: Endpoint }> {
    return this.map
      .entries()
      .map(([k, v]) => ({ podIp: this.key.decode(k), endpoint: decodeEndpoint(v) }))
      .sort((a, b) => (a.podIp < b.podIp ? -1 : a.podIp > b.podIp ? 1 : 0));
  }
}

/** IPv4 pods (ovl_endpoints). */
export class EndpointMap extends EndpointMapOf<Ip4> {
  constructor(map: BpfMap) {
    super(map, V4);
  }

  static openPinned(pinPath: string): EndpointMap {
    return new EndpointMap(BpfMap.openPinned(pinPath, V4.map));
  }
}

/** IPv6 pods (ovl_endpoints6). */
export class EndpointMap6 extends EndpointMapOf<Ip6> {
  constructor(map: BpfMap) {
    super(map, V6);
  }

  static openPinned(pinPath: string): EndpointMap6 {
    return new EndpointMap6(BpfMap.openPinned(pinPath, V6.map));
  }
}
