// Generates build/etcd-codec/: etcd's gRPC message codecs as a plain module,
// so that etcd3's clients need not be built from rpc.proto on every start
// (agent/control/etcd-codec.ts says why and how the agent uses them).
//
//   messages.js   every message of etcd3's rpc.proto (and the kv.proto and
//                 auth.proto it imports), as pbjs's static-module target
//                 writes it: the encoders, decoders and object converters
//                 that protobufjs would otherwise generate at run time.
//   index.json    the fingerprint of the inputs, the loader options, and each
//                 service method's attributes as @grpc/proto-loader itself
//                 reports them (path, streaming, originalName, options).
//
// usage: node dist/scripts/gen-etcd-codec.js <output dir>
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import type * as ProtoLoader from "@grpc/proto-loader";
import type * as Protobuf from "protobufjs";
import {
  CODEC_ROOT,
  ETCD3_LOADER_OPTIONS,
  optionsKey,
  codecFingerprint,
  etcdProtoFiles,
  type CodecIndex,
  type MethodAttrs,
} from "../agent/control/etcd-codec";

interface PbjsCli {
  pbjs: { main(args: string[], cb: (err: Error | null) => void): void };
}

async function main(out: string): Promise<void> {
  const { dir, rpc, loader: loaderFile } = etcdProtoFiles();
  // proto-loader as etcd3 resolves it, and the protobufjs it uses.
  const loader = createRequire(__filename)(loaderFile) as typeof ProtoLoader;
  const pb = createRequire(loaderFile)("protobufjs") as typeof Protobuf;
  mkdirSync(out, { recursive: true });
  const tmp = join(out, "messages.js.tmp");
  // The same parse proto-loader does (keepCase), every generated function
  // the one protobufjs generates at run time; no verify/create/delimited
  // helpers (the loader never calls them) and no service classes (grpc-js
  // makes its own clients).
  const cli = createRequire(__filename)("protobufjs-cli") as PbjsCli;
  await new Promise<void>((resolve, reject) =>
    cli.pbjs.main(
      [
        "--target",
        "static-module",
        "--wrap",
        "commonjs",
        "--root",
        CODEC_ROOT,
        "--keep-case",
        "--path",
        dir,
        "--no-verify",
        "--no-create",
        "--no-delimited",
        "--no-service",
        "--no-comments",
        "--out",
        tmp,
        rpc,
      ],
      (err) => (err ? reject(err) : resolve()),
    ),
  );

  // Each method's attributes from proto-loader itself, so that they are
  // what etcd3 gets from it by construction.
  const def = loader.loadSync(rpc, { ...ETCD3_LOADER_OPTIONS });
  // The messages' full names from the same parse in protobufjs (the
  // loader's descriptors name a message without its package).
  const root = new pb.Root().loadSync(rpc, { keepCase: true });
  root.resolveAll();
  const services: CodecIndex["services"] = {};
  for (const [name, entry] of Object.entries(def)) {
    if ("format" in entry) continue; // a message or enum, not a service
    const methods: Record<string, MethodAttrs> = {};
    const svc = root.lookupService(name);
    for (const [m, attrs] of Object.entries(entry)) {
      const rm = svc.methods[m];
      if (!rm?.resolvedRequestType || !rm.resolvedResponseType)
        throw new Error(`${name}.${m}: not in protobufjs's parse`);
      methods[m] = {
        path: attrs.path,
        requestStream: attrs.requestStream,
        responseStream: attrs.responseStream,
        originalName: attrs.originalName ?? "",
        options: attrs.options,
        requestType: rm.resolvedRequestType.fullName.replace(/^\./, ""),
        responseType: rm.resolvedResponseType.fullName.replace(/^\./, ""),
      };
    }
    services[name] = methods;
  }
  const index: CodecIndex = {
    fingerprint: codecFingerprint(),
    options: optionsKey(ETCD3_LOADER_OPTIONS),
    services,
  };
  writeFileSync(join(out, "index.json.tmp"), JSON.stringify(index, null, 1) + "\n");
  renameSync(tmp, join(out, "messages.js"));
  renameSync(join(out, "index.json.tmp"), join(out, "index.json"));
  const n = Object.values(services).reduce((s, m) => s + Object.keys(m).length, 0);
  console.log(`  etcd codec: ${Object.keys(services).length} services, ${n} methods -> ${out}`);
}

main(process.argv[2] ?? "build/etcd-codec").catch((e: unknown) => {
  console.error(`gen-etcd-codec: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
