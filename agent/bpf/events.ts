// Monitor events from the ovl_events ring buffer: decoding (pure) and
// reading (the ring, the trace switch). Layout from abi.generated.ts.
import { join } from "node:path";
import { ENUMS, STRUCTS } from "./abi.generated";
import { DIRECTIONS, DROP_REASONS } from "./codec";
import { libbpf, type RingReader } from "./libbpf";
import { BpfMap } from "./map";
import { formatIp } from "../net/ip";
import { formatIp6, ip6FromBytes } from "../net/ip6";

const E = STRUCTS.ovl_event;
const F = E.fields;

const HOOKS = new Map<number, string>([
  [ENUMS.ovl_hook.OVL_HOOK_ENCAP_POD, "encap_pod"],
  [ENUMS.ovl_hook.OVL_HOOK_ENCAP_DEV, "encap_dev"],
  [ENUMS.ovl_hook.OVL_HOOK_DECAP_TC, "decap_tc"],
  [ENUMS.ovl_hook.OVL_HOOK_DECAP_XDP, "decap_xdp"],
  [ENUMS.ovl_hook.OVL_HOOK_DECAP_DEV, "decap_dev"],
]);
const ACTIONS = new Map<number, string>([
  [ENUMS.ovl_trace_action.OVL_TR_ENCAP, "encap"],
  [ENUMS.ovl_trace_action.OVL_TR_DIRECT, "direct"],
  [ENUMS.ovl_trace_action.OVL_TR_DECAP, "decap"],
  [ENUMS.ovl_trace_action.OVL_TR_TO_KERNEL, "to_kernel"],
]);

export interface FiveTuple {
  src: string;
  dst: string;
  proto: number;
  sport?: number;
  dport?: number;
}

export interface MonitorEvent {
  ts: string; // kernel monotonic ns
  type: "drop" | "trace";
  direction: string;
  /** drops: the drop reason; traces: what happened (encap, decap, ...). */
  reason: string;
  hook: string;
  ifindex: number;
  len: number;
  peer: string | null;
  outer: FiveTuple | null;
  inner: FiveTuple | null;
  /** The first bytes of the packet, hex. */
  head: string;
}

/** IPv4 5-tuple at `off` (the IPv4 header), if the bytes are there. */
function tupleAt(d: Buffer, off: number): FiveTuple | undefined {
  if (d.length < off + 20 || d[off]! >> 4 !== 4) return undefined;
  const ihl = (d[off]! & 0x0f) * 4;
  const proto = d[off + 9]!;
  const t: FiveTuple = {
    src: formatIp(d.readUInt32BE(off + 12)),
    dst: formatIp(d.readUInt32BE(off + 16)),
    proto,
  };
  if ((proto === 6 || proto === 17) && d.length >= off + ihl + 4) {
    t.sport = d.readUInt16BE(off + ihl);
    t.dport = d.readUInt16BE(off + ihl + 2);
  }
  return t;
}

/** IPv6 5-tuple at `off` (the fixed header; extension headers are not walked). */
function tuple6At(d: Buffer, off: number): FiveTuple | undefined {
  if (d.length < off + 40 || d[off]! >> 4 !== 6) return undefined;
  const proto = d[off + 6]!;
  const t: FiveTuple = {
    src: formatIp6(ip6FromBytes(d.subarray(off + 8, off + 24))),
    dst: formatIp6(ip6FromBytes(d.subarray(off + 24, off + 40))),
    proto,
  };
  if ((proto === 6 || proto === 17) && d.length >= off + 44) {
    t.sport = d.readUInt16BE(off + 40);
    t.dport = d.readUInt16BE(off + 42);
  }
  return t;
}

const ETH_P_IP = 0x0800;
const ETH_P_IPV6 = 0x86dd;

/** The tuple of the IP header behind an Ethernet header at `off`, and where its L4 starts. */
function l3At(d: Buffer, off: number): { t: FiveTuple; l4: number } | undefined {
  if (d.length < off + 14) return undefined;
  const type = d.readUInt16BE(off + 12);
  const ip = off + 14;
  if (type === ETH_P_IP) {
    const t = tupleAt(d, ip);
    return t && { t, l4: ip + (d[ip]! & 0x0f) * 4 };
  }
  if (type === ETH_P_IPV6) {
    const t = tuple6At(d, ip);
    return t && { t, l4: ip + 40 };
  }
  return undefined;
}

/** The outer and inner tuples of a frame (a VXLAN frame has both), IPv4 or IPv6. */
export function tuples(d: Buffer, vxlanPort?: number): { outer?: FiveTuple; inner?: FiveTuple } {
  const first = l3At(d, 0);
  if (!first) return {};
  const isVxlan =
    first.t.proto === 17 && (vxlanPort === undefined ? true : first.t.dport === vxlanPort);
  const inner = isVxlan ? l3At(d, first.l4 + 8 + 8) : undefined;
  if (inner) return { outer: first.t, inner: inner.t };
  return { inner: first.t };
}

/** Decodes one ring record. Pure. */
export function decodeEvent(b: Buffer, vxlanPort?: number): MonitorEvent {
  const type = b.readUInt8(F.type.offset) === ENUMS.ovl_event_type.OVL_EV_TRACE ? "trace" : "drop";
  const reasonN = b.readUInt8(F.reason.offset);
  const snap = Math.min(b.readUInt32LE(F.snap_len.offset), F.data.size);
  const data = b.subarray(F.data.offset, F.data.offset + snap);
  const peer = b.readUInt32BE(F.peer.offset);
  const t = tuples(data, vxlanPort);
  // IPv6 events carry no peer (the field is 32 bits): the outer header names it.
  const outerPeer = (o: FiveTuple) =>
    DIRECTIONS.get(b.readUInt8(F.dir.offset)) === "rx" ? o.src : o.dst;
  return {
    ts: b.readBigUInt64LE(F.ts_ns.offset).toString(),
    type,
    direction: DIRECTIONS.get(b.readUInt8(F.dir.offset)) ?? "?",
    reason: (type === "drop" ? DROP_REASONS.get(reasonN) : ACTIONS.get(reasonN)) ?? `#${reasonN}`,
    hook: HOOKS.get(b.readUInt8(F.hook.offset)) ?? "?",
    ifindex: b.readUInt32LE(F.ifindex.offset),
    len: b.readUInt32LE(F.len.offset),
    peer: peer ? formatIp(peer) : t.outer?.src.includes(":") ? outerPeer(t.outer) : null,
    outer: t.outer ?? null,
    inner: t.inner ?? null,
    head: data.toString("hex"),
  };
}

/** The ring buffer, and the switch that asks the programs for traces. */
export class EventSource {
  private readonly ringFd: number;
  private readonly ring: RingReader;
  private readonly monitor: BpfMap;
  private traceOn = false;

  constructor(pinPath: string, onEvent: (raw: Buffer) => void) {
    this.monitor = BpfMap.openPinned(pinPath, "ovl_monitor");
    this.ringFd = libbpf.objGet(join(pinPath, "ovl_events"));
    try {
      this.ring = libbpf.ringReader(this.ringFd, onEvent, "ovl_events");
    } catch (e) {
      libbpf.close(this.ringFd);
      this.monitor.close();
      throw e;
    }
  }

  /** Trace events on or off (they cost the fast path only while on). */
  setTrace(on: boolean): void {
    const v = Buffer.alloc(STRUCTS.ovl_monitor.size);
    v.writeUInt32LE(on ? 1 : 0, STRUCTS.ovl_monitor.fields.trace.offset);
    this.monitor.update(Buffer.alloc(4), v);
    this.traceOn = on;
  }

  /** Everything waiting now; returns how many. */
  drain(): number {
    return this.ring.consume();
  }

  close(): void {
    if (this.traceOn) this.setTrace(false);
    this.ring.free();
    libbpf.close(this.ringFd);
    this.monitor.close();
  }
}
