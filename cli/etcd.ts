// The etcd store for overlayctl commands, from the shared global flags.
import { EtcdStore } from "../agent/control/etcd-store";
import { etcdOptions, type EtcdArgs } from "../agent/flags";

export async function withStore<T>(a: EtcdArgs, fn: (s: EtcdStore) => Promise<T>): Promise<T> {
  const s = new EtcdStore({ ...etcdOptions(a), callTimeoutMs: 5000 });
  try {
    return await fn(s);
  } finally {
    await s.close();
  }
}
