// Flags shared by overlayd and overlayctl: etcd connection and pin path, with
// the same defaults and OVERLAYD_* environment variables.
import { join } from "node:path";
import type { Argv } from "yargs";

export const DEFAULTS = {
  etcdEndpoints: "http://127.0.0.1:2379",
  etcdPrefix: "/coreos.com/network",
  pinPath: "/sys/fs/bpf/overlay",
  subnetFile: "/run/flannel/subnet.env",
  /** /healthz and /readyz: loopback, so only the node (its kubelet) reaches them. */
  healthzAddr: "127.0.0.1:9473",
  /** Where the BPF objects are: build/bpf next to dist/ in a checkout. */
  bpfDir: join(__dirname, "..", "..", "build", "bpf"),
} as const;

export function etcdFlags<T>(y: Argv<T>) {
  return y
    .option("etcd-endpoints", {
      type: "string",
      default: DEFAULTS.etcdEndpoints,
      describe: "comma-separated etcd URLs (give every member of a cluster)",
      group: "etcd:",
    })
    .option("etcd-prefix", {
      type: "string",
      default: DEFAULTS.etcdPrefix,
      describe: "etcd key prefix (config at <prefix>/config, leases under <prefix>/subnets/)",
      group: "etcd:",
    })
    .option("etcd-cafile", {
      type: "string",
      describe: "CA certificate for etcd TLS",
      group: "etcd:",
    })
    .option("etcd-certfile", {
      type: "string",
      describe: "client certificate for etcd TLS",
      group: "etcd:",
    })
    .option("etcd-keyfile", { type: "string", describe: "client key for etcd TLS", group: "etcd:" })
    .option("etcd-username", {
      type: "string",
      describe: "etcd user (password auth)",
      group: "etcd:",
    })
    .option("etcd-password", { type: "string", describe: "etcd password", group: "etcd:" })
    .option("pin-path", {
      type: "string",
      default: DEFAULTS.pinPath,
      describe: "bpffs directory for pinned maps and programs (bpffs mounted there if needed)",
    });
}

export interface EtcdArgs {
  etcdEndpoints: string;
  etcdPrefix: string;
  etcdCafile?: string;
  etcdCertfile?: string;
  etcdKeyfile?: string;
  etcdUsername?: string;
  etcdPassword?: string;
}

export function etcdOptions(a: EtcdArgs) {
  return {
    endpoints: a.etcdEndpoints
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean),
    prefix: a.etcdPrefix,
    caFile: a.etcdCafile,
    certFile: a.etcdCertfile,
    keyFile: a.etcdKeyfile,
    username: a.etcdUsername,
    password: a.etcdPassword,
  };
}

/**
 * yargs' strict mode also rejects environment variables it maps to unknown
 * flags, and Kubernetes injects OVERLAYD_SERVICE_HOST & co. for a Service
 * named overlayd. So environment variables that do not name a flag are
 * dropped before parsing; unknown command-line flags are still errors.
 */
export function dropUnknownEnv(
  prefix: string,
  knownFlags: Iterable<string>,
  env: NodeJS.ProcessEnv = process.env,
): string[] {
  const known = new Set([...knownFlags].map((f) => f.replace(/-/g, "_").toUpperCase()));
  const dropped: string[] = [];
  for (const k of Object.keys(env)) {
    if (!k.startsWith(`${prefix}_`)) continue;
    if (!known.has(k.slice(prefix.length + 1))) {
      dropped.push(k);
      delete env[k];
    }
  }
  return dropped;
}
