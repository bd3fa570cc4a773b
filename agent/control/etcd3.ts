// etcd3, with its gRPC codecs from the build (etcd-codec.ts): importing it
// through this module puts the stand-in loader in place before etcd3 loads.
import { installEtcdCodec } from "./etcd-codec";

installEtcdCodec();

export * from "etcd3";
