import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createRequire } from "node:module";
import type * as ProtoLoader from "@grpc/proto-loader";
import type * as Protobuf from "protobufjs";
import {
  DEFAULT_CODEC_DIR,
  ETCD3_LOADER_OPTIONS,
  codecDefinition,
  etcdProtoFiles,
  type PackageDefinition,
} from "../../agent/control/etcd-codec";

// The generated codec (build/etcd-codec) against @grpc/proto-loader itself,
// on the same calls etcd3's clients make: every method's attributes, and
// random messages of every request and response type through both
// serializers and both deserializers.

const ROOT = join(__dirname, "..", "..", "..");
const files = etcdProtoFiles();
// proto-loader as etcd3 resolves it, and the protobufjs it uses.
const Loader = createRequire(__filename)(files.loader) as typeof ProtoLoader;
const protobuf = createRequire(files.loader)("protobufjs") as typeof Protobuf;

// A small seeded generator (mulberry32), so that a failure can be re-run.
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A random plain object of `type`, as etcd3 would hand one to a serializer. */
function randomMessage(type: Protobuf.Type, r: () => number, depth = 0): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  const inOneof = new Set<string>();
  for (const oneof of type.oneofsArray) {
    const f = oneof.fieldsArray[Math.floor(r() * oneof.fieldsArray.length)];
    for (const x of oneof.fieldsArray) inOneof.add(x.name);
    if (f && r() < 0.8) o[f.name] = randomField(f, r, depth);
  }
  for (const f of type.fieldsArray) {
    if (inOneof.has(f.name) || r() < 0.25) continue;
    o[f.name] = f.repeated
      ? Array.from({ length: Math.floor(r() * 4) }, () => randomField(f, r, depth))
      : randomField(f, r, depth);
  }
  return o;
}

function randomField(f: Protobuf.Field, r: () => number, depth: number): unknown {
  f.resolve();
  const t = f.resolvedType;
  if (t instanceof protobuf.Type) return depth < 4 ? randomMessage(t, r, depth + 1) : {};
  if (t instanceof protobuf.Enum) {
    const names = Object.keys(t.values);
    return r() < 0.8 ? names[Math.floor(r() * names.length)] : t.values[names[0] as string];
  }
  const u32 = () => Math.floor(r() * 2 ** 32);
  const big = (signed: boolean) => {
    const v = (BigInt(u32()) << 32n) | BigInt(u32());
    return (signed ? BigInt.asIntN(64, v) : v).toString();
  };
  switch (f.type) {
    case "int32":
    case "sint32":
    case "sfixed32":
      return u32() | 0;
    case "uint32":
    case "fixed32":
      return u32();
    case "int64":
    case "sint64":
    case "sfixed64":
      return r() < 0.3 ? String(Math.floor(r() * 1000)) : big(true);
    case "uint64":
    case "fixed64":
      return big(false);
    case "bool":
      return r() < 0.5;
    case "double":
      return (r() - 0.5) * 1e12;
    case "float":
      return Math.fround((r() - 0.5) * 1e6);
    case "string":
      return Buffer.from(
        Array.from({ length: Math.floor(r() * 12) }, () => 32 + Math.floor(r() * 90)),
      ).toString();
    case "bytes":
      return Buffer.from(Array.from({ length: Math.floor(r() * 20) }, () => Math.floor(r() * 256)));
    default:
      throw new Error(`no generator for ${f.type} (${f.fullName})`);
  }
}

/** The result of `fn`, or the fact that it threw. */
function outcome<T>(fn: () => T): { ok: T } | { threw: true } {
  try {
    return { ok: fn() };
  } catch {
    return { threw: true };
  }
}

describe("unit: etcd's generated gRPC codecs against @grpc/proto-loader", function () {
  this.timeout(60000);
  let real: ProtoLoader.PackageDefinition;
  let ours: PackageDefinition;
  let root: Protobuf.Root;
  before(function () {
    real = Loader.loadSync(files.rpc, { ...ETCD3_LOADER_OPTIONS });
    ours = codecDefinition(ETCD3_LOADER_OPTIONS);
    root = new protobuf.Root().loadSync(files.rpc, { keepCase: true });
    root.resolveAll();
  });

  it("has every service and method, with the loader's path, streaming, originalName and options", function () {
    const services = Object.keys(real).filter((k) => !("format" in (real[k] as object)));
    assert.deepEqual(Object.keys(ours).sort(), services.sort());
    assert.ok(services.includes("etcdserverpb.KV") && services.includes("etcdserverpb.Watch"));
    let methods = 0;
    for (const s of services) {
      const theirs = real[s] as ProtoLoader.ServiceDefinition;
      assert.deepEqual(Object.keys(ours[s] ?? {}).sort(), Object.keys(theirs).sort(), s);
      for (const [m, a] of Object.entries(theirs)) {
        const b = ours[s]?.[m];
        assert.ok(b, `${s}.${m}`);
        for (const k of [
          "path",
          "requestStream",
          "responseStream",
          "originalName",
          "options",
        ] as const)
          assert.deepEqual(b[k], a[k], `${s}.${m}.${k}`);
        methods++;
      }
    }
    assert.ok(methods >= 40, `${methods} methods`);
  });

  it("encodes and decodes random messages of every method's types to the same bytes and objects", function () {
    const seed = Number(process.env.CODEC_SEED ?? 1203);
    const r = rng(seed);
    let checked = 0;
    for (const [s, methods] of Object.entries(ours)) {
      const svc = root.lookupService(s);
      for (const [m, b] of Object.entries(methods)) {
        const a = (real[s] as ProtoLoader.ServiceDefinition)[m] as ProtoLoader.MethodDefinition<
          object,
          object
        >;
        const rm = svc.methods[m] as Protobuf.Method;
        const sides = [
          [
            rm.resolvedRequestType,
            a.requestSerialize,
            a.requestDeserialize,
            b.requestSerialize,
            b.requestDeserialize,
          ],
          [
            rm.resolvedResponseType,
            a.responseSerialize,
            a.responseDeserialize,
            b.responseSerialize,
            b.responseDeserialize,
          ],
        ] as const;
        for (const [type, aSer, aDes, bSer, bDes] of sides) {
          for (let i = 0; i < 40; i++) {
            const msg = randomMessage(type as Protobuf.Type, r);
            const where = `${s}.${m} ${type?.name} #${i} (CODEC_SEED=${seed})`;
            const bytes = aSer(msg);
            assert.deepEqual(bSer(msg), bytes, `serialize ${where}`);
            assert.deepEqual(bDes(bytes), aDes(bytes), `deserialize ${where}`);
            // Cut short at a random offset: both fail, or both give the same.
            const cut = bytes.subarray(0, Math.floor(r() * bytes.length));
            assert.deepEqual(
              outcome(() => bDes(cut)),
              outcome(() => aDes(cut)),
              `truncated ${where}`,
            );
            checked++;
          }
        }
      }
    }
    assert.ok(checked >= 3000, `${checked} messages`);
  });

  it("fails as the loader does on an array where a message belongs", function () {
    const a = (real["etcdserverpb.KV"] as ProtoLoader.ServiceDefinition)
      .Range as ProtoLoader.MethodDefinition<object, object>;
    const b = ours["etcdserverpb.KV"]?.Range;
    assert.throws(() => a.requestSerialize([] as unknown as object), /got array instead/);
    assert.throws(() => b?.requestSerialize([]), /RangeRequest structure, got array instead/);
  });

  it("gives the message descriptors from the real loader when asked", function () {
    const a = (real["etcdserverpb.KV"] as ProtoLoader.ServiceDefinition)
      .Range as ProtoLoader.MethodDefinition<object, object>;
    const def = codecDefinition(ETCD3_LOADER_OPTIONS, DEFAULT_CODEC_DIR, () =>
      Loader.loadSync(files.rpc, { ...ETCD3_LOADER_OPTIONS }),
    );
    assert.deepEqual(def["etcdserverpb.KV"]?.Range?.requestType, a.requestType);
    assert.equal(Object.keys(def["etcdserverpb.KV"]?.Range ?? {}).includes("requestType"), false);
  });

  // etcd3 as the agent loads it, in a process of its own (this one has
  // loaded proto-loader already).
  function status(env: NodeJS.ProcessEnv): { codec: string; reason: string; works: boolean } {
    const out = execFileSync(
      process.execPath,
      [
        "-e",
        `const e = require(${JSON.stringify(join(ROOT, "dist", "agent", "control", "etcd3.js"))});
         const s = require(${JSON.stringify(join(ROOT, "dist", "agent", "control", "etcd-codec.js"))}).etcdCodecStatus();
         const c = new e.Etcd3({ hosts: "127.0.0.1:1" });
         const works = typeof c.kv === "object";
         c.close();
         process.stdout.write(JSON.stringify({ ...s, works }));`,
      ],
      { env: { ...process.env, ...env }, encoding: "utf8" },
    );
    return JSON.parse(out) as { codec: string; reason: string; works: boolean };
  }

  it("is what etcd3 runs on when loaded through agent/control/etcd3", function () {
    assert.deepEqual(status({}), { codec: "generated", reason: "", works: true });
  });

  it("leaves etcd3 on the real loader, saying why, when the codec is stale or turned off", function () {
    assert.deepEqual(status({ OVERLAYD_ETCD_CODEC: "" }), {
      codec: "proto-loader",
      reason: "OVERLAYD_ETCD_CODEC is empty",
      works: true,
    });
    const dir = mkdtempSync(join(tmpdir(), "ovl-codec-"));
    try {
      cpSync(DEFAULT_CODEC_DIR, dir, { recursive: true });
      const index = JSON.parse(readFileSync(join(dir, "index.json"), "utf8")) as {
        fingerprint: string;
      };
      index.fingerprint = "0".repeat(64); // as if made from other .proto files
      writeFileSync(join(dir, "index.json"), JSON.stringify(index));
      const stale = status({ OVERLAYD_ETCD_CODEC: dir });
      assert.equal(stale.codec, "proto-loader");
      assert.match(stale.reason, /generated from other \.proto files/);
      assert.equal(stale.works, true);
      rmSync(join(dir, "index.json"));
      const gone = status({ OVERLAYD_ETCD_CODEC: dir });
      assert.equal(gone.codec, "proto-loader");
      assert.match(gone.reason, /index\.json/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
