import assert from "node:assert/strict";
import { int64Text, ProtobufError, readRangeResponse } from "../../agent/control/range-codec";

// A protobuf writer of the test's own (varints, length-delimited fields),
// so the fixtures do not come from the code under test.
function varint(v: bigint): number[] {
  let x = BigInt.asUintN(64, v); // int64 fields: negatives as 10 bytes
  const out: number[] = [];
  do {
    let b = Number(x & 0x7fn);
    x >>= 7n;
    if (x) b |= 0x80;
    out.push(b);
  } while (x);
  return out;
}
const tag = (field: number, wire: number) => varint(BigInt((field << 3) | wire));
const vfield = (field: number, v: bigint | number) => [...tag(field, 0), ...varint(BigInt(v))];
const lfield = (field: number, bytes: number[] | Buffer) => [
  ...tag(field, 2),
  ...varint(BigInt(bytes.length)),
  ...bytes,
];
const text = (s: string) => [...Buffer.from(s)];

interface Kv {
  key: string;
  value: string;
  mod?: bigint;
  lease?: bigint;
  extra?: number[];
}
function keyValue(k: Kv): number[] {
  return [
    ...lfield(1, text(k.key)),
    ...vfield(2, 7n), // create_revision
    ...(k.mod !== undefined ? vfield(3, k.mod) : []),
    ...vfield(4, 1n), // version
    ...lfield(5, text(k.value)),
    ...(k.lease !== undefined ? vfield(6, k.lease) : []),
    ...(k.extra ?? []),
  ];
}
function response(o: { revision: bigint; kvs: Kv[]; more?: boolean; count?: number }): Buffer {
  const header = [...vfield(1, 0xdeadbeefn), ...vfield(2, 42n), ...vfield(3, o.revision)];
  return Buffer.from([
    ...lfield(1, header),
    ...o.kvs.flatMap((k) => lfield(2, keyValue(k))),
    ...(o.more !== undefined ? vfield(3, o.more ? 1 : 0) : []),
    ...vfield(4, BigInt(o.count ?? o.kvs.length)),
  ]);
}

function walk(buf: Buffer) {
  const kvs: { key: string; value: string; mod: string; lease: string }[] = [];
  const r = readRangeResponse(buf, (kv) =>
    kvs.push({
      key: buf.toString("utf8", kv.keyStart, kv.keyEnd),
      value: buf.toString("utf8", kv.valueStart, kv.valueEnd),
      mod: kv.modRevision,
      lease: kv.lease,
    }),
  );
  return { r, kvs };
}

describe("unit: RangeResponse from its bytes", function () {
  it("gives the header's revision, every KeyValue in order, and more", function () {
    const buf = response({
      revision: 1234n,
      more: true,
      kvs: [
        { key: "/p/subnets/10.5.1.0-24", value: '{"a":1}', mod: 17n, lease: 7587883234234234234n },
        { key: "/p/subnets/10.5.2.0-24", value: "", mod: 18n }, // no lease: a reservation
      ],
    });
    const { r, kvs } = walk(buf);
    assert.equal(r.revision, "1234");
    assert.equal(r.more, true);
    assert.equal(r.kvs, 2);
    assert.equal(buf.toString("utf8", r.lastKeyStart, r.lastKeyEnd), "/p/subnets/10.5.2.0-24");
    assert.deepEqual(kvs, [
      { key: "/p/subnets/10.5.1.0-24", value: '{"a":1}', mod: "17", lease: "7587883234234234234" },
      { key: "/p/subnets/10.5.2.0-24", value: "", mod: "18", lease: "0" },
    ]);
  });

  it("reads int64s as etcd3 gives them: exact past 2^53, negative lease IDs as such", function () {
    const big = 2n ** 62n + 12345n;
    const { kvs } = walk(
      response({
        revision: 1n,
        kvs: [
          { key: "a", value: "x", mod: big, lease: -5n },
          { key: "b", value: "y", mod: 2n ** 53n + 1n, lease: -(2n ** 63n) },
          { key: "c", value: "z", mod: 2n ** 32n, lease: 2n ** 63n - 1n },
        ],
      }),
    );
    assert.deepEqual(
      kvs.map((k) => [k.mod, k.lease]),
      [
        [big.toString(), "-5"],
        [(2n ** 53n + 1n).toString(), (-(2n ** 63n)).toString()],
        ["4294967296", (2n ** 63n - 1n).toString()],
      ],
    );
    assert.equal(int64Text(0xffffffff, 0x1fffff), String(2 ** 53 - 1));
  });

  it("skips fields it does not know, of every wire type, at both levels", function () {
    const unknown = [
      ...vfield(9, 99n),
      ...tag(10, 1),
      ...[1, 2, 3, 4, 5, 6, 7, 8], // fixed64
      ...lfield(11, [1, 2, 3]),
      ...tag(12, 5),
      ...[9, 9, 9, 9], // fixed32
    ];
    const kv = { key: "k", value: "v", mod: 3n, lease: 4n, extra: unknown };
    const buf = Buffer.concat([Buffer.from(unknown), response({ revision: 5n, kvs: [kv] })]);
    const { r, kvs } = walk(buf);
    assert.equal(r.revision, "5");
    assert.equal(r.more, false);
    assert.deepEqual(kvs, [{ key: "k", value: "v", mod: "3", lease: "4" }]);
  });

  it("takes the fields of a KeyValue in any order", function () {
    const body = [
      ...vfield(6, 11n),
      ...lfield(5, text("val")),
      ...vfield(3, 9n),
      ...lfield(1, text("key")),
    ];
    const buf = Buffer.from([...lfield(2, body), ...lfield(1, vfield(3, 2n))]);
    const { r, kvs } = walk(buf);
    assert.equal(r.revision, "2");
    assert.deepEqual(kvs, [{ key: "key", value: "val", mod: "9", lease: "11" }]);
  });

  it("an empty response: revision 0, nothing, no last key", function () {
    const { r, kvs } = walk(Buffer.alloc(0));
    assert.deepEqual([r.revision, r.more, r.kvs, kvs.length], ["0", false, 0, 0]);
  });

  it("refuses truncated or malformed bytes instead of reading past them", function () {
    // Cut anywhere inside the KeyValue (a field whose length says more).
    const kv = Buffer.from(lfield(2, keyValue({ key: "k", value: "v", mod: 1n, lease: 1n })));
    for (let cut = 1; cut < kv.length; cut++) {
      assert.throws(() => walk(kv.subarray(0, cut)), ProtobufError, `cut at ${cut}`);
    }
    assert.equal(walk(kv).kvs.length, 1);
    assert.throws(() => walk(Buffer.from([...lfield(2, [0x0a, 0x05, 0x61])])), ProtobufError);
    assert.throws(() => walk(Buffer.from([0x80, 0x80, 0x80])), /truncated varint/);
    assert.throws(() => walk(Buffer.from([...tag(7, 3), 0])), /wire type 3/);
    assert.throws(
      () => walk(Buffer.from([...tag(7, 0), ...Array(10).fill(0xff), 1])),
      ProtobufError,
    );
  });
});
