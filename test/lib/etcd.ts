// A real etcd (Debian's etcd-server 3.4) started by the test: on loopback
// with free ports, or inside a namespace on a given address. Data dir and
// process are this run's; stop() removes both.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { inNs, sh, shStatus, waitFor } from "./sh";

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => (a && typeof a === "object" ? resolve(a.port) : reject(new Error("no port"))));
    });
  });
}

export interface TlsFiles {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

export interface EtcdServerOptions {
  ns?: string;
  ip?: string;
  clientPort?: number;
  peerPort?: number;
  name?: string;
  /** For clusters: "n1=http://…:2380,n2=…" and state "new". */
  initialCluster?: string;
  extraArgs?: string[];
  /** Keep running after this process exits (the demo's KEEP=1). */
  detached?: boolean;
  /** Serve TLS with client-certificate auth; etcdctl uses the client pair. */
  tls?: TlsFiles;
  /** etcdctl --user for a server with auth enabled. */
  ctlUser?: string;
}

export class EtcdServer {
  private proc: ChildProcess | undefined;
  readonly dataDir = mkdtempSync("/tmp/overlayd-etcd-");
  endpoint = "";
  private log = "";

  constructor(private readonly o: EtcdServerOptions = {}) {}

  /** From now on etcdctl authenticates as user:password (after auth enable). */
  setCtlUser(userPassword: string | undefined): void {
    this.o.ctlUser = userPassword;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  /** Started and not exited (killed members are not). */
  get running(): boolean {
    const p = this.proc;
    return p !== undefined && p.exitCode === null && p.signalCode === null;
  }

  /** Starts (or restarts, same ports and data) the server. */
  async start(): Promise<this> {
    const ip = this.o.ip ?? "127.0.0.1";
    const cport = (this.o.clientPort ??= await freePort());
    const pport = (this.o.peerPort ??= await freePort());
    const name = this.o.name ?? "default";
    const tls = this.o.tls;
    this.endpoint = `${tls ? "https" : "http"}://${ip}:${cport}`;
    const args = [
      "etcd",
      "--name",
      name,
      "--data-dir",
      this.dataDir,
      "--listen-client-urls",
      this.endpoint,
      "--advertise-client-urls",
      this.endpoint,
      "--listen-peer-urls",
      `http://${ip}:${pport}`,
      "--initial-advertise-peer-urls",
      `http://${ip}:${pport}`,
      "--initial-cluster",
      this.o.initialCluster ?? `${name}=http://${ip}:${pport}`,
      "--initial-cluster-state",
      "new",
      "--log-level",
      "error",
      ...(tls
        ? [
            "--cert-file",
            tls.serverCert,
            "--key-file",
            tls.serverKey,
            "--client-cert-auth",
            "--trusted-ca-file",
            tls.ca,
          ]
        : []),
      ...(this.o.extraArgs ?? []),
    ];
    const argv = this.o.ns ? inNs(this.o.ns, args) : args;
    const detached = this.o.detached ?? false;
    this.proc = spawn(argv[0] as string, argv.slice(1), {
      stdio: ["ignore", "pipe", "pipe"],
      detached,
    });
    if (detached) {
      // Outlives this process (demo KEEP=1): nothing here may hold the loop.
      this.proc.unref();
      (this.proc.stdout as unknown as { unref?: () => void })?.unref?.();
      (this.proc.stderr as unknown as { unref?: () => void })?.unref?.();
    }
    this.proc.stderr?.on("data", (d) => (this.log = (this.log + d).slice(-4000)));
    this.proc.stdout?.on("data", (d) => (this.log = (this.log + d).slice(-4000)));
    await waitFor(
      `etcd at ${this.endpoint}`,
      () => {
        if (this.proc?.exitCode !== null) throw new Error(`etcd exited: ${this.log}`);
        return shStatus(this.ctlArgv(["endpoint", "health"])).status === 0;
      },
      20000,
    );
    return this;
  }

  private ctlArgv(args: string[]): string[] {
    const t = this.o.tls;
    const auth = [
      ...(t ? [`--cacert=${t.ca}`, `--cert=${t.clientCert}`, `--key=${t.clientKey}`] : []),
      ...(this.o.ctlUser ? [`--user=${this.o.ctlUser}`] : []),
    ];
    const argv = [
      "env",
      "ETCDCTL_API=3",
      "etcdctl",
      `--endpoints=${this.endpoint}`,
      ...auth,
      ...args,
    ];
    return this.o.ns ? inNs(this.o.ns, argv) : argv;
  }

  /** etcdctl against this server. */
  ctl(args: string[], input?: string): string {
    return sh(this.ctlArgv(args), { input });
  }

  put(key: string, value: string): void {
    this.ctl(["put", key, "--", value]);
  }

  get(key: string): string | undefined {
    const out = this.ctl(["get", key, "--print-value-only"]);
    return out ? out.replace(/\n$/, "") : undefined;
  }

  /** key -> {value, lease} for every key under prefix. */
  list(prefix: string): Map<string, { value: string; lease: string }> {
    // int64 lease IDs lose precision as JS numbers: quote them first.
    const text = this.ctl(["get", prefix, "--prefix", "-w", "json"]).replace(
      /"lease":(\d+)/g,
      '"lease":"$1"',
    );
    const j = JSON.parse(text);
    const out = new Map<string, { value: string; lease: string }>();
    for (const kv of j.kvs ?? []) {
      out.set(Buffer.from(kv.key, "base64").toString(), {
        value: Buffer.from(kv.value, "base64").toString(),
        lease: String(kv.lease ?? 0),
      });
    }
    return out;
  }

  /** etcd leases (TTLs) the server holds. */
  leaseCount(): number {
    const m = /found (\d+) leases/.exec(this.ctl(["lease", "list"]));
    if (!m) throw new Error("etcdctl lease list: no count in its output");
    return Number(m[1]);
  }

  revision(): number {
    return Number(
      JSON.parse(this.ctl(["endpoint", "status", "-w", "json"]))[0].Status.header.revision,
    );
  }

  /** Stops the process (SIGSTOP-free: a real stop), keeping the data dir. */
  async kill(signal: NodeJS.Signals = "SIGTERM"): Promise<void> {
    const p = this.proc;
    // Killed by a signal: exitCode stays null, signalCode is set.
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    await new Promise<void>((resolve) => {
      p.once("exit", () => resolve());
      p.kill(signal);
    });
  }

  async stop(): Promise<void> {
    await this.kill("SIGKILL");
    rmSync(this.dataDir, { recursive: true, force: true });
  }
}
