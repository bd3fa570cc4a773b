// etcd's RangeResponse, read from its protobuf bytes in place. Pure.
//
// A listing of 65,536 leases is ~12 MB of RangeResponse. etcd3 decodes it
// through protobufjs into an object per key-value with two Buffers and four
// int64s as decimal strings (via Long), which the agent then decodes again:
// most of a cold start went there and into the garbage collector. Here each
// KeyValue is handed over as offsets into the response's bytes, with the two
// int64s the agent keeps, and nothing is allocated per key-value.
//
// The messages (etcd's rpc.proto and kv.proto), fields by number:
//   RangeResponse  1 header: ResponseHeader, 2 kvs: repeated KeyValue,
//                  3 more: bool, 4 count: int64
//   ResponseHeader 1 cluster_id, 2 member_id, 3 revision: int64, 4 raft_term
//   KeyValue       1 key: bytes, 2 create_revision, 3 mod_revision: int64,
//                  4 version, 5 value: bytes, 6 lease: int64
// Unknown fields are skipped by wire type, as protobuf requires.

/** One KeyValue: byte ranges in the response, and two int64s as decimal text. */
export interface RawKv {
  keyStart: number;
  keyEnd: number;
  valueStart: number;
  valueEnd: number;
  /** mod_revision, as etcd3 gives it ("longs: String"). */
  modRevision: string;
  /** lease ("0" for a key without one). */
  lease: string;
}

export interface RangeSummary {
  /** header.revision */
  revision: string;
  more: boolean;
  /** KeyValues handed to the callback. */
  kvs: number;
  /** Byte range of the last KeyValue's key (the next page starts after it). */
  lastKeyStart: number;
  lastKeyEnd: number;
}

export class ProtobufError extends Error {
  override name = "ProtobufError";
}

const WIRE_VARINT = 0;
const WIRE_I64 = 1;
const WIRE_LEN = 2;
const WIRE_I32 = 5;

/**
 * A cursor over protobuf bytes. Varints come in 32-bit halves (no BigInt);
 * a length-delimited field's bounds land in fieldStart/fieldEnd, so walking
 * a KeyValue allocates nothing.
 */
class Reader {
  pos = 0;
  /** The last varint's low and high 32 bits. */
  lo = 0;
  hi = 0;
  fieldStart = 0;
  fieldEnd = 0;

  constructor(readonly buf: Uint8Array) {}

  /** Reads a varint ending before `end` into lo/hi; returns lo (tags, lengths). */
  varint(end: number): number {
    const b = this.buf;
    let pos = this.pos;
    let lo = 0;
    let hi = 0;
    for (let shift = 0; ; shift += 7) {
      if (pos >= end || shift > 63) throw new ProtobufError("truncated varint");
      const c = b[pos++] as number;
      if (shift < 28) lo |= (c & 0x7f) << shift;
      else if (shift === 28) {
        lo |= (c & 0x0f) << 28;
        hi |= (c & 0x70) >> 4;
      } else hi |= (c & 0x7f) << (shift - 32);
      if (c < 0x80) break;
    }
    this.pos = pos;
    this.lo = lo >>> 0;
    this.hi = hi >>> 0;
    return this.lo;
  }

  /** A length-delimited field: its bounds in fieldStart/fieldEnd, pos past it. */
  field(end: number): void {
    const len = this.varint(end);
    if (this.hi !== 0 || len > end - this.pos) throw new ProtobufError("field past the end");
    this.fieldStart = this.pos;
    this.pos += len;
    this.fieldEnd = this.pos;
  }

  skip(wire: number, end: number): void {
    if (wire === WIRE_VARINT) this.varint(end);
    else if (wire === WIRE_LEN) this.field(end);
    else if (wire === WIRE_I64 || wire === WIRE_I32) {
      const n = wire === WIRE_I64 ? 8 : 4;
      if (end - this.pos < n) throw new ProtobufError("field past the end");
      this.pos += n;
    } else throw new ProtobufError(`wire type ${wire} not supported`);
  }
}

/** The int64 in lo/hi as decimal text, exactly (two's complement when negative). */
export function int64Text(lo: number, hi: number): string {
  if (hi < 0x200000) return String(hi * 4294967296 + lo); // below 2^53: exact as a double
  return BigInt.asIntN(64, (BigInt(hi) << 32n) | BigInt(lo)).toString();
}

/** int64Text, remembering the last value: leases share an etcd lease, and a txn's keys a revision. */
class Int64Texts {
  private lo = 0;
  private hi = 0;
  private text = "0";
  of(lo: number, hi: number): string {
    if (lo !== this.lo || hi !== this.hi) {
      this.lo = lo;
      this.hi = hi;
      this.text = int64Text(lo, hi);
    }
    return this.text;
  }
}

/**
 * Walks a RangeResponse. onKv gets each KeyValue in order, in one object
 * reused for every call: read it, do not keep it.
 */
export function readRangeResponse(buf: Uint8Array, onKv: (kv: RawKv) => void): RangeSummary {
  const r = new Reader(buf);
  const end = buf.length;
  const out: RangeSummary = { revision: "0", more: false, kvs: 0, lastKeyStart: 0, lastKeyEnd: 0 };
  const kv: RawKv = {
    keyStart: 0,
    keyEnd: 0,
    valueStart: 0,
    valueEnd: 0,
    modRevision: "0",
    lease: "0",
  };
  const leases = new Int64Texts();
  const revisions = new Int64Texts();
  while (r.pos < end) {
    const tag = r.varint(end);
    const field = tag >>> 3;
    const wire = tag & 7;
    if (field === 2 && wire === WIRE_LEN) {
      r.field(end);
      const kvEnd = r.fieldEnd;
      r.pos = r.fieldStart;
      kv.keyStart = kv.keyEnd = kv.valueStart = kv.valueEnd = r.pos;
      let modLo = 0;
      let modHi = 0;
      let leaseLo = 0;
      let leaseHi = 0;
      while (r.pos < kvEnd) {
        const t = r.varint(kvEnd);
        const f = t >>> 3;
        const w = t & 7;
        if (f === 1 && w === WIRE_LEN) {
          r.field(kvEnd);
          kv.keyStart = r.fieldStart;
          kv.keyEnd = r.fieldEnd;
        } else if (f === 5 && w === WIRE_LEN) {
          r.field(kvEnd);
          kv.valueStart = r.fieldStart;
          kv.valueEnd = r.fieldEnd;
        } else if (f === 3 && w === WIRE_VARINT) {
          r.varint(kvEnd);
          modLo = r.lo;
          modHi = r.hi;
        } else if (f === 6 && w === WIRE_VARINT) {
          r.varint(kvEnd);
          leaseLo = r.lo;
          leaseHi = r.hi;
        } else r.skip(w, kvEnd);
      }
      kv.modRevision = revisions.of(modLo, modHi);
      kv.lease = leases.of(leaseLo, leaseHi);
      out.kvs++;
      out.lastKeyStart = kv.keyStart;
      out.lastKeyEnd = kv.keyEnd;
      onKv(kv);
    } else if (field === 1 && wire === WIRE_LEN) {
      r.field(end);
      const hEnd = r.fieldEnd;
      r.pos = r.fieldStart;
      while (r.pos < hEnd) {
        const t = r.varint(hEnd);
        if (t >>> 3 === 3 && (t & 7) === WIRE_VARINT) {
          r.varint(hEnd);
          out.revision = int64Text(r.lo, r.hi);
        } else r.skip(t & 7, hEnd);
      }
    } else if (field === 3 && wire === WIRE_VARINT) {
      out.more = r.varint(end) !== 0 || r.hi !== 0;
    } else r.skip(wire, end);
  }
  return out;
}
