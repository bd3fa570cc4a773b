// etcd's gRPC codecs, generated at build time instead of on every start.
//
// etcd3 builds its clients when it is first required: @grpc/proto-loader
// loads protobufjs in full, parses etcd's rpc.proto (with kv.proto and
// auth.proto), and protobufjs generates each message's encoder, decoder
// and object converters with `new Function`, code that no code cache can
// keep. That is ~100 ms of every agent start (about 45 ms to load
// proto-loader and protobufjs, 55-65 ms for loadSync, on a quiet 2-CPU VM).
// The build writes the same codecs once, as a plain module
// (scripts/gen-etcd-codec.ts, pbjs's static-module target, into
// build/etcd-codec/), which compiles from the code cache like any other.
//
// installEtcdCodec() puts a stand-in for @grpc/proto-loader, as etcd3
// resolves it, into the module cache. Its loadSync answers etcd3's call
// (etcd3's rpc.proto, etcd3's options) from the generated module; any other
// call, and any other export, goes to the real proto-loader, loaded then.
// The generated module is used only when the fingerprint it was made for
// (the .proto files, protobufjs's version, the options) is the installed
// one's; otherwise, or if anything about it fails, etcd3 gets the real
// loader and the reason is kept (etcdCodecStatus()).
//
// The method definitions carry what grpc-js reads (path, streaming flags,
// serializers, originalName) and proto-loader's method options; the
// message descriptors (requestType, responseType) come from the real
// loader if something asks for them (they are not enumerable, so grpc-js's
// copy of the attributes onto each client method leaves them out). Message
// and enum entries of the package definition are left out: grpc-js only passes them through, and
// etcd3 uses the services alone.
import { createHash } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import Module, { createRequire } from "node:module";
import { dirname, join, resolve } from "node:path";

/** The options etcd3 1.x passes to loadSync (lib/connection-pool.js). */
export const ETCD3_LOADER_OPTIONS = {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
} as const;

/** The generated module's protobufjs root name (not the shared "default"). */
export const CODEC_ROOT = "overlayd_etcd";

const load = createRequire(__filename);

/** Where the build writes the codec: <repo>/build/etcd-codec. */
export const DEFAULT_CODEC_DIR = join(__dirname, "..", "..", "..", "build", "etcd-codec");

/** What scripts/gen-etcd-codec.ts writes for each method. */
export interface MethodAttrs {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  originalName: string;
  options: unknown;
  /** Full names of the messages, e.g. "etcdserverpb.RangeRequest". */
  requestType: string;
  responseType: string;
}

/** build/etcd-codec/index.json */
export interface CodecIndex {
  fingerprint: string;
  /** optionsKey() of the options it serves. */
  options: string;
  /** "etcdserverpb.KV" -> "Range" -> attributes */
  services: Record<string, Record<string, MethodAttrs>>;
}

/** One generated message class: the calls proto-loader makes on a type. */
export interface MessageCodec {
  fromObject(o: Record<string, unknown>): unknown;
  toObject(m: unknown, options: object): Record<string, unknown>;
  encode(m: unknown): { finish(): Uint8Array };
  decode(b: Uint8Array): unknown;
}

type MethodDefinition = Omit<MethodAttrs, "requestType" | "responseType"> & {
  requestSerialize(v: unknown): Buffer;
  requestDeserialize(b: Buffer): Record<string, unknown>;
  responseSerialize(v: unknown): Buffer;
  responseDeserialize(b: Buffer): Record<string, unknown>;
  readonly requestType: unknown;
  readonly responseType: unknown;
};
export type PackageDefinition = Record<string, Record<string, MethodDefinition>>;

interface Loader {
  loadSync(file: string | string[], options?: object): Record<string, unknown>;
}

/** etcd3's proto directory and its rpc.proto, as installed. */
export function etcdProtoFiles(): { dir: string; rpc: string; loader: string } {
  const lib = dirname(require.resolve("etcd3"));
  const dir = join(lib, "..", "proto");
  return {
    dir,
    rpc: join(dir, "rpc.proto"),
    loader: require.resolve("@grpc/proto-loader", { paths: [lib] }),
  };
}

/** Options as comparable text (constructors such as String by name). */
export function optionsKey(o: object): string {
  return JSON.stringify(
    Object.entries(o)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([k, v]) => [k, typeof v === "function" ? `fn:${(v as { name: string }).name}` : v]),
  );
}

/** What a generated codec is valid for: etcd3's .proto files, the
 *  protobufjs proto-loader uses (its version), and the loader options. */
export function codecFingerprint(files = etcdProtoFiles()): string {
  const { dir, loader } = files;
  const h = createHash("sha256").update("overlayd etcd codec 1\0");
  for (const f of readdirSync(dir)
    .filter((n) => n.endsWith(".proto"))
    .sort()) {
    h.update(`${f}\0`)
      .update(readFileSync(join(dir, f)))
      .update("\0");
  }
  const pbjs = require.resolve("protobufjs/package.json", { paths: [dirname(loader)] });
  h.update(
    `protobufjs ${(JSON.parse(readFileSync(pbjs, "utf8")) as { version: string }).version}\0`,
  );
  h.update(optionsKey(ETCD3_LOADER_OPTIONS));
  return h.digest("hex");
}

/** The package definition for `options` from a generated codec in `dir`;
 *  throws, naming what is wrong, when it cannot serve them. */
export function codecDefinition(
  options: object,
  dir = DEFAULT_CODEC_DIR,
  descriptors: () => Record<string, unknown> = () => ({}),
  files = etcdProtoFiles(),
): PackageDefinition {
  const index = JSON.parse(readFileSync(join(dir, "index.json"), "utf8")) as CodecIndex;
  if (optionsKey(options) !== optionsKey(ETCD3_LOADER_OPTIONS))
    throw new Error(`loadSync options ${optionsKey(options)} are not the codec's`);
  if (index.fingerprint !== codecFingerprint(files))
    throw new Error(`${dir} was generated from other .proto files, protobufjs or options`);
  // The generated module must run on the protobufjs the real loader uses.
  const { loader } = files;
  const minimal = (from: string) => require.resolve("protobufjs/minimal", { paths: [from] });
  if (minimal(dir) !== minimal(dirname(loader)))
    throw new Error(`${dir} resolves another protobufjs than @grpc/proto-loader`);
  // module.exports is the root: { etcdserverpb, mvccpb, authpb }
  const messages = load(join(dir, "messages.js")) as Record<string, unknown>;
  const type = (name: string): MessageCodec => {
    let t: unknown = messages;
    for (const part of name.split(".")) t = (t as Record<string, unknown> | undefined)?.[part];
    const c = t as Partial<MessageCodec> | undefined;
    if (!c?.encode || !c.decode || !c.fromObject || !c.toObject)
      throw new Error(`${dir}/messages.js has no message ${name}`);
    return c as MessageCodec;
  };
  const def: PackageDefinition = {};
  for (const [service, methods] of Object.entries(index.services)) {
    const s: Record<string, MethodDefinition> = {};
    for (const [name, m] of Object.entries(methods)) {
      const req = type(m.requestType);
      const res = type(m.responseType);
      const described = (which: "requestType" | "responseType") => () =>
        (descriptors()[service] as Record<string, Record<string, unknown>>)[name][which];
      s[name] = Object.defineProperties(
        {
          path: m.path,
          requestStream: m.requestStream,
          responseStream: m.responseStream,
          originalName: m.originalName,
          options: m.options,
          requestSerialize: serializer(req, m.requestType),
          requestDeserialize: deserializer(req, options),
          responseSerialize: serializer(res, m.responseType),
          responseDeserialize: deserializer(res, options),
        },
        {
          // Not enumerable: grpc-js copies every enumerable attribute
          // onto the client's method, which would load the real loader.
          requestType: { get: described("requestType") },
          responseType: { get: described("responseType") },
        },
      ) as MethodDefinition;
    }
    def[service] = s;
  }
  return def;
}

/** An object to its message's bytes, as proto-loader's serializers do. */
function serializer(t: MessageCodec, name: string): (v: unknown) => Buffer {
  return (v) => {
    if (Array.isArray(v))
      throw new Error(
        `Failed to serialize message: expected object with ${name} structure, got array instead`,
      );
    return t.encode(t.fromObject(v as Record<string, unknown>)).finish() as Buffer;
  };
}

/** Bytes to the plain object the loader's options ask for. */
function deserializer(t: MessageCodec, options: object): (b: Buffer) => Record<string, unknown> {
  return (b) => t.toObject(t.decode(b), options);
}

export interface CodecStatus {
  /** "generated": etcd3's clients run on build/etcd-codec; "proto-loader": on the real loader. */
  codec: "generated" | "proto-loader";
  /** Why not generated (empty when it is). */
  reason: string;
}
let status: CodecStatus = { codec: "proto-loader", reason: "not installed" };

/** Which codec etcd3 got, once it has asked for one. */
export function etcdCodecStatus(): CodecStatus {
  return status;
}

/**
 * Serves etcd3's loadSync from the generated codec in `dir` (see the top of
 * this file). Must run before etcd3 is first required; does nothing when
 * proto-loader is loaded already or `dir` is "" (OVERLAYD_ETCD_CODEC="").
 */
export function installEtcdCodec(dir = process.env.OVERLAYD_ETCD_CODEC ?? DEFAULT_CODEC_DIR): void {
  if (dir === "") {
    status = { codec: "proto-loader", reason: "OVERLAYD_ETCD_CODEC is empty" };
    return;
  }
  let files: ReturnType<typeof etcdProtoFiles>;
  try {
    files = etcdProtoFiles();
  } catch (e) {
    status = { codec: "proto-loader", reason: String(e) };
    return;
  }
  const cache = require.cache;
  if (cache[files.loader]) {
    status = { codec: "proto-loader", reason: "@grpc/proto-loader was loaded first" };
    return;
  }
  const standIn = new Module(files.loader, module);
  let real: Loader | undefined;
  const loadReal = (): Loader => {
    if (real) return real;
    if (cache[files.loader] === standIn) delete cache[files.loader];
    real = load(files.loader) as Loader;
    return real;
  };
  const loadSync = (file: string | string[], options: object = {}): Record<string, unknown> => {
    if (typeof file !== "string" || resolve(file) !== resolve(files.rpc))
      return loadReal().loadSync(file, options);
    try {
      let described: Record<string, unknown> | undefined;
      const def = codecDefinition(
        options,
        dir,
        () => (described ??= loadReal().loadSync(file, options)),
        files,
      );
      status = { codec: "generated", reason: "" };
      return def;
    } catch (e) {
      status = { codec: "proto-loader", reason: e instanceof Error ? e.message : String(e) };
      return loadReal().loadSync(file, options);
    }
  };
  standIn.filename = files.loader;
  standIn.loaded = true;
  standIn.exports = new Proxy(
    { loadSync },
    {
      get: (t, k) =>
        k === "loadSync" ? t.loadSync : (loadReal() as unknown as Record<PropertyKey, unknown>)[k],
    },
  );
  cache[files.loader] = standIn;
  status = { codec: "proto-loader", reason: "etcd3 has not asked yet" };
}
