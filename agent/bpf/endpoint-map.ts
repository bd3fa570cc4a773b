// EndpointMap: local pods that decap may hand straight to their namespace
// (bpf_redirect_peer). Written by the CNI plugin at ADD, removed at DEL.
import { BpfMap } from "./map";
import { decodeEndpoint, decodeIp, encodeEndpoint, encodeIp, type Endpoint } from "./codec";
import { type Ip4 } from "../net/ip";

export class EndpointMap {
  constructor(private readonly map: BpfMap) {}

  static openPinned(pinPath: string): EndpointMap {
    return new EndpointMap(BpfMap.openPinned(pinPath, "ovl_endpoints"));
  }

  close(): void {
    this.map.close();
  }

  upsert(podIp: Ip4, ep: Endpoint): void {
    this.map.update(encodeIp(podIp), encodeEndpoint(ep));
  }

  delete(podIp: Ip4): boolean {
    return this.map.delete(encodeIp(podIp));
  }

  list(): Array<{ podIp: Ip4; endpoint: Endpoint }> {
    return this.map
      .entries()
      .map(([k, v]) => ({ podIp: decodeIp(k), endpoint: decodeEndpoint(v) }))
      .sort((a, b) => a.podIp - b.podIp);
  }
}
