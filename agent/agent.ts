// The overlayd agent: etcd -> lease/watch -> reconciler -> BPF maps.
//
//   start():  config (waits until valid) -> underlay + overlay device ->
//             lease (reuse, previous subnet, or a random free one; races
//             retried) -> data path -> full reconcile -> subnet.env ->
//             ip-masq -> watch.
//   running:  watch events reconcile incrementally; a gap (compaction, a
//             cancelled watch) re-lists and reconciles by diff; losing our
//             own lease re-acquires it (the same subnet when still free) and
//             re-programs; a bad config is reported and changes nothing.
//   stop():   stops watching and renewing; the data path keeps forwarding.
import { type Server } from "node:http";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { Registry } from "prom-client";
import { type NetworkConfig, parseNetworkConfig } from "./control/config";
import { createBackend, type Backend } from "./backend";
import { type Datapath, type DecapChoice } from "./bpf/datapath";
import { F_LOCAL } from "./bpf/codec";
import { libbpf } from "./bpf/libbpf";
import { StatsReader } from "./bpf/stats";
import { SubnetHostMap } from "./bpf/subnet-map";
import {
  EtcdStore,
  type EtcdOptions,
  type HeldLease,
  type LeaseEvent,
  type ListResult,
  type WatchHandle,
} from "./control/etcd-store";
import { ConfigError, OverlayError } from "./errors";
import { serve, type Readiness } from "./http";
import { configKey, type LeaseAttrs } from "./control/lease";
import { LeaseManager } from "./control/lease-manager";
import { backoffMs, sleep } from "./backoff";
import { type Logger } from "./log";
import { Cidr, formatIp, type Ip4 } from "./net/ip";
import { ensureMasquerade } from "./net/masq";
import { describeIptablesMode, detectedIptablesMode, iptablesMode } from "./net/iptables-mode";
import {
  chooseUnderlay,
  ensureOverlayDevice,
  mustLink,
  replaceRoute,
  setOverlayAddress,
} from "./net/link";
import { backendMtu, setupNode } from "./node/node-setup";
import { disablePodBridge, PodBridge } from "./node/pod-bridge";
import { findFlannelDevice, removeFlannelDevice } from "./node/flannel";
import { describeOverlap, OverlapWatch } from "./node/overlap";
import { previousSubnet, writeSubnetEnv } from "./control/subnet-env";
import { Reconciler } from "./control/reconciler";
import { AgentMetrics } from "../metrics/metrics";
import { buildInfo } from "./version";

export interface AgentOptions {
  etcd: EtcdOptions;
  iface?: string;
  ifaceRegex?: string;
  publicIp?: string;
  subnetFile: string;
  leaseTtl: number;
  ipMasq: boolean;
  decap: DecapChoice;
  /** The pod bridge for the bridged-pod fast path: "auto", a name, or "none". */
  podBridge: string;
  pinPath: string;
  objDir: string;
  overlayIface: string;
  healthzAddr: string;
  metricsAddr: string;
  version: string;
}

/** V8's gc(), exposed at run time (bin/overlayd is started as plain `node`). */
function exposeGc(): (() => void) | undefined {
  try {
    setFlagsFromString("--expose-gc");
    return runInNewContext("gc") as () => void;
  } catch {
    return undefined;
  }
}

export class Agent {
  readonly metrics: AgentMetrics;
  private readonly store: EtcdStore;
  private config: NetworkConfig | undefined;
  private backend: Backend | undefined;
  private configError: string | undefined;
  /** Unknown config keys already logged (once each). */
  private readonly unknownLogged = new Set<string>();
  private publicIp: Ip4 = 0;
  private vtepMac = "";
  private mtu = 0;
  /** The external interface, as chosen at start. */
  private node = { iface: "", publicIp: 0, mtu: 0 };
  private held: HeldLease | undefined;
  private leases: LeaseManager | undefined;
  /** The listing start-up works from (the lease manager's latest). */
  private startListing: ListResult | undefined;
  private datapath: Datapath | undefined;
  private map: SubnetHostMap | undefined;
  private stats: StatsReader | undefined;
  private reconciler: Reconciler | undefined;
  private watch: WatchHandle | undefined;
  private servers: Server[] = [];
  private masqTimer: NodeJS.Timeout | undefined;
  private podBridge: PodBridge | undefined;
  private overlapWatch: OverlapWatch | undefined;
  /** The data path mechanism in use, for the log, /readyz and /metrics. */
  private mechanism: Record<string, string> | undefined;
  private stopping = false;
  private etcdConnected = false;
  private subnetFileWritten = false;
  /** Serializes lease loss handling, re-lists and event handling. */
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    readonly opts: AgentOptions,
    private readonly log: Logger,
  ) {
    this.store = new EtcdStore(opts.etcd);
    const build = buildInfo();
    this.metrics = new AgentMetrics(new Registry(), {
      version: opts.version,
      commit: build.commit,
      abi: build.abi,
      libbpf: libbpf.version(),
    });
  }

  get subnet(): Cidr | undefined {
    return this.held?.lease.subnet;
  }

  readiness(): Readiness {
    const checks = {
      config: this.configError ?? (this.config ? true : "not read yet"),
      lease: this.held ? true : "not held",
      datapath: this.datapath ? true : "not attached",
      synced: this.reconciler?.synced ?? false,
      subnetFile: this.subnetFileWritten,
      etcd: this.etcdConnected ? true : "disconnected",
    };
    const ready = Object.values(checks).every((v) => v === true);
    this.metrics.ready.set(ready ? 1 : 0);
    const ipt = this.opts.ipMasq && this.masqMode() === "iptables" && detectedIptablesMode();
    const info = this.mechanism && {
      ...this.mechanism,
      ...(ipt ? { iptables: describeIptablesMode(ipt) } : {}),
    };
    const warnings = this.overlapWatch?.overlaps.map(
      (o) => `${describeOverlap(o)} overlaps the cluster network`,
    );
    return {
      ready,
      checks,
      ...(info ? { info } : {}),
      ...(warnings?.length ? { warnings } : {}),
    };
  }

  private serialize<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.chain.then(fn, fn);
    this.chain = next.catch(() => undefined);
    return next;
  }

  async start(): Promise<void> {
    const o = this.opts;
    if (o.healthzAddr) {
      this.servers.push(
        await serve(o.healthzAddr, "--healthz-addr", { readiness: () => this.readiness() }),
      );
    }
    if (o.metricsAddr) {
      this.servers.push(
        await serve(o.metricsAddr, "--metrics-addr", {
          registry: this.metrics.registry,
          readiness: () => this.readiness(),
        }),
      );
    }
    const u = chooseUnderlay({ iface: o.iface, ifaceRegex: o.ifaceRegex, publicIp: o.publicIp });
    this.publicIp = u.publicIp;
    this.node = { iface: u.iface, publicIp: u.publicIp, mtu: mustLink(u.iface).mtu };
    // A config this node cannot run (an MTU the underlay cannot carry,
    // host-gw behind NAT) is waited out like a bad one: nothing is touched.
    this.config = await this.waitForConfig((cfg, key) => {
      const r = this.usable(cfg, key);
      this.mtu = r.mtu;
      this.backend = r.backend;
    });
    const backend = this.backend as Backend;
    // A node that still runs flannel's vxlan backend is taken over: ovl0
    // gets flannel.1's MAC, and flannel.1 goes only once our path is up.
    const flannel =
      backend.type === "vxlan" ? findFlannelDevice(this.config.backend.vni) : undefined;
    if (flannel) {
      this.log.warn("flannel's VXLAN device found: taking this node over from flannel", {
        device: flannel.name,
        vtepMac: flannel.mac,
      });
    }
    // The overlay device first: its MAC is the VtepMAC the lease announces.
    this.vtepMac = ensureOverlayDevice(o.overlayIface, this.mtu, {
      ...backend.device(),
      ...(flannel ? { mac: flannel.mac } : {}),
    }).mac;
    this.log.info("underlay chosen", {
      iface: u.iface,
      publicIp: formatIp(u.publicIp),
      vtepMac: this.vtepMac,
      mtu: this.mtu,
    });

    const t = { start: performance.now(), listed: 0, leased: 0, datapath: 0, synced: 0 };
    // One listing serves both the lease choice and the first full sync; the
    // watch starts right after it, so our own create arrives as an event.
    this.startListing = await this.retryEtcd("list leases", () => this.store.list());
    t.listed = performance.now();
    this.leases = new LeaseManager(this.store, this.log, {
      config: () => this.config as NetworkConfig,
      attrs: () => this.attrs(),
      ttl: o.leaseTtl,
      onLost: this.onLost,
      stopping: () => this.stopping,
      result: (r) => this.metrics.leaseAcquisitions.inc({ result: r }),
      renewed: () => this.metrics.leaseRenewals.inc(),
      networkFull: (msg) => (this.configError = msg),
      relist: async () =>
        (this.startListing = await this.retryEtcd("list leases", () => this.store.list())),
    });
    this.held = await this.leases.acquire(this.startListing.leases, previousSubnet(o.subnetFile));
    this.configError = undefined;
    const subnet = this.held.lease.subnet;
    t.leased = performance.now();

    const node = setupNode({
      underlay: u.iface,
      publicIp: u.publicIp,
      network: this.config.network,
      subnet,
      vni: this.config.backend.vni,
      port: this.config.backend.port,
      backend,
      pinPath: o.pinPath,
      objDir: o.objDir,
      decap: o.decap,
      overlayName: o.overlayIface,
      refill: (staged) => this.refill(staged, subnet),
      deferUp: flannel !== undefined,
    });
    const carried = node.pinPlan.filter((p) => p.action !== "reuse" && p.action !== "new");
    if (carried.length) {
      this.log.warn("pinned maps carried over an ABI change", {
        maps: carried.map((p) => `${p.name}:${p.action} (${p.why})`).join("; "),
      });
    }
    this.datapath = node.datapath;
    this.mechanism = {
      backend: backend.type,
      decap: node.mechanism,
      gro: node.kernelDecap ? "vxlan-socket" : "none",
      podBridge: o.podBridge,
      reason: node.reason,
    };
    this.metrics.datapathInfo.set(
      { decap: node.mechanism, gro: this.mechanism.gro, pod_bridge: o.podBridge },
      1,
    );
    this.log.info("data path attached", this.mechanism);
    t.datapath = performance.now();
    this.map = SubnetHostMap.openPinned(o.pinPath);
    this.stats = StatsReader.openPinned(o.pinPath);
    const map = this.map;
    const stats = this.stats;
    this.metrics.setSource({
      stats: () => stats.read(),
      peers: () => map.peerCounters(),
      entries: () => map.count(),
    });
    this.reconciler = new Reconciler(this.map, this.log, {
      syncError: (op) => this.metrics.mapSyncErrors.inc({ op }),
      synced: (s) => this.metrics.mapSyncDuration.observe(s),
      entryOf: (l, log) => backend.entryOf(l, log),
      changed: () => backend.changed(),
      defer: (fn, ms) => {
        const t = setTimeout(() => void this.serialize(async () => !this.stopping && fn()), ms);
        t.unref();
        return () => clearTimeout(t);
      },
    });
    this.reconciler.setOwn(subnet, { remoteIp: u.publicIp, vtepMac: this.vtepMac, flags: F_LOCAL });

    const listing = this.startListing;
    this.reconcileListing(listing, "start");
    await this.startWatch(listing.revision);
    this.startListing = undefined; // 65,536 leases' worth of objects: let them go
    backend.start(map, (why) => {
      if (this.stopping) return;
      this.log.info("backend asks for a re-list", { why });
      void this.serialize(() => this.relist("backend"));
    });
    t.synced = performance.now();
    this.writeSubnetFile();
    if (o.ipMasq) this.startMasq();
    if (o.podBridge === "none") {
      disablePodBridge(o.pinPath, this.log); // bridged pods take the stack
    } else {
      this.podBridge = new PodBridge(
        o.pinPath,
        () => this.held?.lease.subnet,
        o.podBridge === "auto" ? undefined : o.podBridge,
        this.log,
      );
      this.podBridge.start();
    }
    this.overlapWatch = new OverlapWatch(
      this.config.network,
      () => ({ overlayDev: o.overlayIface, subnet: this.held?.lease.subnet }),
      this.log,
      (found) => {
        this.metrics.routeOverlap.reset();
        for (const f of found) this.metrics.routeOverlap.set({ ...f }, 1);
      },
    );
    if (flannel) {
      // Everything of ours is in place: flannel's device (and with it its
      // routes, neighbours and FDB entries) goes, ovl0 takes the port.
      const t0 = performance.now();
      removeFlannelDevice(flannel);
      node.bringUp();
      this.log.info("took this node over from flannel", {
        removed: flannel.name,
        switchMs: Math.round((performance.now() - t0) * 10) / 10,
      });
    }
    this.overlapWatch.start(); // after flannel's routes are gone: they were its own
    const ms = (a: number, b: number) => Math.round(b - a);
    const mem = process.memoryUsage();
    this.log.info("ready", {
      subnet: subnet.toString(),
      leases: listing.leases.length,
      listMs: ms(t.start, t.listed),
      leaseMs: ms(t.listed, t.leased),
      datapathMs: ms(t.leased, t.datapath),
      syncMs: ms(t.datapath, t.synced),
      heapMb: Math.round(mem.heapUsed / 1048576),
      rssMb: Math.round(mem.rss / 1048576),
    });
    this.settleMemory();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    if (this.masqTimer) clearInterval(this.masqTimer);
    this.podBridge?.stop();
    this.backend?.stop();
    this.overlapWatch?.stop();
    this.reconciler?.cancelHeld();
    await this.watch?.close();
    // Stop renewing but do not revoke: the lease outlives a restart (TTL).
    this.held?.keepalive?.release();
    await this.store.close();
    for (const s of this.servers) s.close();
    this.map?.close();
    this.stats?.close();
    this.datapath?.close(); // programs stay attached, maps stay pinned
    this.log.info("stopped; data path left forwarding");
  }

  /** New subnet maps of an upgrade: our own entry and every lease, before
   *  any program reads them. */
  private refill(staged: string, subnet: Cidr): void {
    const backend = this.backend as Backend;
    const m = SubnetHostMap.openPinned(staged);
    try {
      // The reconciler that later keeps the map, run once on the new map.
      const r = new Reconciler(m, this.log, { entryOf: (l, log) => backend.entryOf(l, log) });
      r.setOwn(subnet, { remoteIp: this.publicIp, vtepMac: this.vtepMac, flags: F_LOCAL });
      const plan = r.fullSync(this.startListing?.leases ?? []);
      this.log.info("new subnet maps filled from etcd", { entries: plan.upserts.length });
    } finally {
      m.close();
    }
  }

  // --- config -------------------------------------------------------------
  /**
   * Can this node run the config? Its backend's checks (host-gw: no NAT) and
   * Backend.MTU against the interface. A refusal is a ConfigError naming
   * the key. Touches nothing.
   */
  private usable(cfg: NetworkConfig, key: string): { backend: Backend; mtu: number } {
    const backend = createBackend(cfg.backend, { log: this.log });
    try {
      backend.check({ iface: this.node.iface, publicIp: this.node.publicIp });
    } catch (e) {
      if (e instanceof OverlayError && !e.recoverable) {
        throw new ConfigError("config", `cannot be used on this node: ${e.message}`, key);
      }
      throw e;
    }
    return { backend, mtu: backendMtu(backend, this.node.mtu, key) };
  }

  private async waitForConfig(
    usable: (cfg: NetworkConfig, key: string) => void,
  ): Promise<NetworkConfig> {
    const key = configKey(this.opts.etcd.prefix);
    for (let attempt = 0; ; attempt++) {
      if (this.stopping) throw new OverlayError("stopped while waiting for the network config");
      try {
        const cfg = parseNetworkConfig(await this.store.getConfig(), key);
        this.etcdConnected = true;
        this.logUnknownKeys(cfg, key);
        usable(cfg, key);
        this.configError = undefined;
        this.log.info("network config", {
          network: cfg.network.toString(),
          subnetLen: cfg.subnetLen,
          ...(this.backend?.describe() ?? {}),
          ...(cfg.enableNFTables ? { nftables: true } : {}),
        });
        return cfg;
      } catch (e) {
        if (e instanceof ConfigError) {
          this.etcdConnected = true;
          this.metrics.configErrors.inc();
        } else {
          this.etcdConnected = false;
        }
        this.configError = (e as Error).message;
        this.log.error("waiting for a valid network config", { error: this.configError });
        await sleep(backoffMs(attempt, 500, 10000));
      }
    }
  }

  /** Each unknown key once: ignored, as flannel ignores them. */
  private logUnknownKeys(cfg: NetworkConfig, key: string): void {
    for (const k of cfg.unknownKeys) {
      if (this.unknownLogged.has(k)) continue;
      this.unknownLogged.add(k);
      this.log.warn("unknown config key ignored", { key, field: k });
    }
  }

  /** A config change while running: validated, reported, never torn down. */
  private onConfig(text: string | undefined): void {
    const key = configKey(this.opts.etcd.prefix);
    try {
      const cfg = parseNetworkConfig(text, key);
      this.logUnknownKeys(cfg, key);
      this.usable(cfg, key).backend.stop(); // say precisely why a config cannot run here
      const cur = this.config as NetworkConfig;
      const changed = [
        !cfg.network.equals(cur.network) && "Network",
        cfg.subnetLen !== cur.subnetLen && "SubnetLen",
        cfg.enableNFTables !== cur.enableNFTables && "EnableNFTables",
        ...(["type", "vni", "port", "mtu", "gbp", "directRouting"] as const).map(
          (f) => cfg.backend[f] !== cur.backend[f] && `Backend.${f}`,
        ),
      ].filter(Boolean);
      if (changed.length) {
        this.configError = `${key}: ${changed.join(", ")} changed; restart overlayd to apply (data path unchanged)`;
        this.log.error("config change needs a restart", { error: this.configError });
        return;
      }
      this.config = cfg;
      this.configError = undefined;
      this.log.info("network config updated");
    } catch (e) {
      this.metrics.configErrors.inc();
      this.configError = (e as Error).message;
      this.log.error("invalid network config; keeping the running data path", {
        error: this.configError,
      });
    }
  }

  private async retryEtcd<T>(what: string, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        const r = await fn();
        this.etcdConnected = true;
        return r;
      } catch (e) {
        if (this.stopping || !(e instanceof OverlayError) || !e.recoverable) throw e;
        this.etcdConnected = false;
        this.log.warn(`${what} failed; retrying`, { error: e.message, attempt });
        await sleep(backoffMs(attempt));
      }
    }
  }

  // --- leases ---------------------------------------------------------------
  private attrs(): LeaseAttrs {
    return (this.backend as Backend).leaseAttrs(this.publicIp, this.vtepMac);
  }

  private onLost = (err: Error): void => {
    if (this.stopping) return;
    this.log.warn("own lease lost (keepalive)", { error: err.message });
    void this.serialize(() => this.reacquire("keepalive lost"));
  };

  /** Our lease is gone (expired, deleted, taken): get one back and re-program. */
  private async reacquire(why: string): Promise<void> {
    if (this.stopping) return;
    const old = this.held;
    this.held = undefined;
    old?.keepalive?.removeAllListeners("lost");
    old?.keepalive?.release();
    this.log.warn("re-acquiring lease", { why, previous: old?.lease.subnet.toString() });
    const listing = await this.retryEtcd("list leases", () => this.store.list());
    const held = await (this.leases as LeaseManager).acquire(listing.leases, old?.lease.subnet);
    this.held = held;
    // The old etcd lease holds nothing now (its key was deleted, expired or
    // taken): revoke it rather than leave it to live out its TTL.
    if (old && old.lease.leaseId !== held.lease.leaseId)
      await this.store
        .revoke(old.lease.leaseId)
        .catch((e: Error) => this.log.debug("old etcd lease not revoked", { error: e.message }));
    const subnet = held.lease.subnet;
    if (!old || !old.lease.subnet.equals(subnet)) this.reprogram(subnet, old?.lease.subnet);
    await this.relist("reacquire");
  }

  /** Our subnet changed: LOCAL entry, overlay address, route, subnet file. */
  private reprogram(subnet: Cidr, old: Cidr | undefined): void {
    const cfg = this.config as NetworkConfig;
    const reconciler = this.reconciler as Reconciler;
    if (old) this.map?.delete(old);
    reconciler.setOwn(subnet, { remoteIp: this.publicIp, vtepMac: this.vtepMac, flags: F_LOCAL });
    this.map?.upsert(subnet, { remoteIp: this.publicIp, vtepMac: this.vtepMac, flags: F_LOCAL });
    setOverlayAddress(this.opts.overlayIface, subnet.addr, cfg.network);
    replaceRoute(cfg.network, this.opts.overlayIface, subnet.addr);
    this.writeSubnetFile();
    if (this.opts.ipMasq) ensureMasquerade(this.masqMode(), cfg.network, subnet);
    this.log.warn("subnet changed; pods on the old subnet must be recreated", {
      from: old?.toString(),
      to: subnet.toString(),
    });
  }

  // --- watch ----------------------------------------------------------------
  private reconcileListing(listing: ListResult, reason: string): void {
    for (const b of listing.bad) this.log.warn("lease not decodable; ignored", b);
    (this.reconciler as Reconciler).fullSync(listing.leases);
    this.checkOwn(listing);
    this.log.debug("listed", { reason, revision: listing.revision, leases: listing.leases.length });
  }

  private async relist(reason: string): Promise<void> {
    const listing = await this.retryEtcd("list leases", () => this.store.list());
    this.reconcileListing(listing, reason);
    await this.startWatch(listing.revision);
  }

  private async relistAndWatch(reason: string): Promise<void> {
    await this.watch?.close();
    this.watch = undefined;
    await this.relist(reason);
  }

  private async startWatch(revision: string): Promise<void> {
    await this.watch?.close();
    const from = (BigInt(revision) + 1n).toString();
    this.watch = await this.retryEtcd("watch", () =>
      this.store.watch(
        from,
        (e) => void this.serialize(async () => this.onEvent(e)),
        (why) => {
          if (this.stopping) return;
          const reason =
            why.startsWith("compacted") || why.includes("compacted") ? "compacted" : "canceled";
          this.metrics.watchRestarts.inc({ reason });
          this.log.warn("watch gap; re-listing", { why });
          void this.serialize(() => this.relistAndWatch(reason));
        },
        (connected, why) => {
          if (this.stopping) return;
          this.log.debug("etcd watch state", { connected, why });
          const was = this.etcdConnected;
          this.etcdConnected = connected;
          if (!connected && was) {
            this.log.warn("etcd watch disconnected; the data path keeps forwarding", {
              error: why,
            });
          } else if (connected && !was) {
            // Events may have been missed while away: reconcile by diff.
            this.metrics.watchRestarts.inc({ reason: "reconnected" });
            this.log.info("etcd watch reconnected; re-listing");
            void this.serialize(() => this.relistAndWatch("reconnected"));
          }
        },
      ),
    );
    this.etcdConnected = true;
  }

  private async onEvent(e: LeaseEvent): Promise<void> {
    if (this.stopping) return;
    const r = this.reconciler as Reconciler;
    const own = this.held?.lease.subnet;
    switch (e.type) {
      case "config":
        this.onConfig(e.text);
        return;
      case "bad":
        this.log.warn("lease not decodable; ignored", { key: e.key, error: e.error });
        return;
      case "put":
        r.onPut(e.lease);
        if (own && e.lease.subnet.equals(own) && e.lease.attrs.publicIp !== this.publicIp) {
          // Someone else holds our subnet now: our lease had expired.
          await this.reacquire(`subnet ${own} now held by ${formatIp(e.lease.attrs.publicIp)}`);
        }
        return;
      case "delete":
        r.onDelete(e.subnet);
        if (own && e.subnet.equals(own)) await this.reacquire("own lease deleted");
        return;
    }
  }

  /** After a listing: is our lease still there and ours? */
  private checkOwn(listing: ListResult): void {
    const held = this.held;
    // A listing older than our own write cannot show it (the start-up one).
    if (!held || BigInt(listing.revision) < BigInt(held.lease.modRevision)) return;
    const own = held.lease.subnet;
    const l = listing.leases.find((x) => x.subnet.equals(own));
    if (!l || l.attrs.publicIp !== this.publicIp) {
      void this.serialize(() => this.reacquire(l ? "own subnet taken" : "own lease missing"));
    }
  }

  /**
   * Start-up allocates the whole listing at once (65,536 leases is tens of
   * MB of short-lived objects), and V8 keeps the pages. Two full collections
   * a little later hand them back (the first frees, the second releases what
   * the background sweeper finished); then report what stays.
   */
  private settleMemory(): void {
    const gc = exposeGc();
    const timers = [1000, 3000].map((ms, i) =>
      setTimeout(() => {
        gc?.();
        if (i === 0) return;
        const m = process.memoryUsage();
        this.log.info("memory after start", {
          heapMb: Math.round(m.heapUsed / 1048576),
          rssMb: Math.round(m.rss / 1048576),
        });
      }, ms),
    );
    for (const t of timers) t.unref();
  }

  // --- node files -----------------------------------------------------------
  private writeSubnetFile(): void {
    const cfg = this.config as NetworkConfig;
    const subnet = this.held?.lease.subnet;
    if (!subnet) return;
    writeSubnetEnv(this.opts.subnetFile, {
      network: cfg.network,
      subnet,
      mtu: this.mtu,
      ipMasq: this.opts.ipMasq,
    });
    this.subnetFileWritten = true;
  }

  private masqMode(): "iptables" | "nftables" {
    return this.config?.enableNFTables ? "nftables" : "iptables";
  }

  private startMasq(): void {
    if (this.masqMode() === "iptables") {
      const { mode, reason, commands } = iptablesMode();
      this.log.info("iptables mode", { mode, reason, iptables: commands.iptables });
    }
    const check = () => {
      const cfg = this.config as NetworkConfig;
      const subnet = this.held?.lease.subnet;
      if (!subnet) return;
      try {
        if (ensureMasquerade(this.masqMode(), cfg.network, subnet)) {
          this.log.info("ip-masq rules (re)applied", { mode: this.masqMode() });
        }
      } catch (e) {
        this.log.error("ip-masq rules failed", { error: (e as Error).message });
      }
    };
    check();
    this.masqTimer = setInterval(check, 10000);
    this.masqTimer.unref();
  }
}
