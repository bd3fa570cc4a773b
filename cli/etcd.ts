// The etcd store for overlayctl commands, from the shared global flags.
import type { EtcdStore } from "../agent/control/etcd-store";
import { etcdOptions, type EtcdArgs } from "../agent/flags";

export async function withStore<T>(a: EtcdArgs, fn: (s: EtcdStore) => Promise<T>): Promise<T> {
  // etcd3 and grpc-js take a fifth of a second to load: only the commands
  // that talk to etcd pay for them, not `map dump` or `status`.
  const { EtcdStore } = await import("../agent/control/etcd-store.js");
  const s = new EtcdStore({ ...etcdOptions(a), callTimeoutMs: 5000 });
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}
