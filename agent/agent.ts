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
import { compileCacheStats, flushCompileCache } from "./compile-cache";
import { type Server } from "node:http";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { Registry } from "prom-client";
import { type NetworkConfig, parseNetworkConfig } from "./control/config";
import { createBackend, type Backend } from "./backend";
import { type Datapath, type DecapChoice } from "./bpf/datapath";
import { F_LOCAL } from "./bpf/codec";
import { libbpf, mallocTrim } from "./bpf/libbpf";
import { StatsReader } from "./bpf/stats";
import { SubnetHostMap, SubnetHostMap6 } from "./bpf/subnet-map";
import {
  EtcdStore,
  LIST_PAGE,
  LIST_STREAMS,
  type EtcdOptions,
  type HeldLease,
  type LeaseEvent,
  type ListResult,
} from "./control/etcd-store";
import { ConfigError, OverlayError } from "./errors";
import { serve, type Readiness } from "./http";
import {
  configKey,
  listSplits,
  sameHost,
  type Lease,
  type LeaseAttrs,
  type LeaseChange,
} from "./control/lease";
import {
  readRestartState,
  warmMismatch,
  writeRestartState,
  type RestartState,
} from "./control/restart-state";
import { LeaseManager } from "./control/lease-manager";
import { EventQueue } from "./control/event-queue";
import { etcdCodecStatus } from "./control/etcd-codec";
import { WatchLoop } from "./control/watch-loop";
import { backoffMs, sleep } from "./backoff";
import { type Logger } from "./log";
import { Cidr, formatIp, type Ip4 } from "./net/ip";
import { formatIp6, type Cidr6, type Ip6 } from "./net/ip6";
import { ensureMasquerade, type Masq6 } from "./net/masq";
import { describeIptablesMode, detectedIptablesMode, iptablesMode } from "./net/iptables-mode";
import {
  choosePublicIpv6,
  chooseUnderlay,
  ensureOverlayDevice,
  linkTable,
  mustLink,
  replaceRoute,
  replaceRoute6,
  setOverlayAddress,
  setOverlayAddress6,
} from "./net/link";
import { backendMtu, prepareNode, setupNode, type NodeV6 } from "./node/node-setup";
import { disablePodBridge, PodBridge } from "./node/pod-bridge";
import { UnderlayNeighbours } from "./node/underlay-neigh";
import { IpMonitor } from "./net/ip-monitor";
import { findFlannelDevice, removeFlannelDevice } from "./node/flannel";
import { describeOverlap, OverlapWatch } from "./node/overlap";
import { previousSubnet, previousSubnet6, writeSubnetEnv } from "./control/subnet-env";
import { Reconciler } from "./control/reconciler";
import { AgentMetrics } from "../metrics/metrics";
import { buildInfo } from "./version";

export interface AgentOptions {
  etcd: EtcdOptions;
  iface?: string;
  ifaceRegex?: string;
  publicIp?: string;
  /** --public-ipv6: the PublicIPv6 of a dual-stack network (default: the
   * underlay's first global IPv6 address). */
  publicIpv6?: string;
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
  /** Warm restart state (restart-state.ts); "" disables warm restarts. */
  stateFile: string;
  /** Peers with their own /metrics series (top by traffic); -1: all. */
  metricsPeers: number;
  version: string;
}

/** How often malloc's free pages go back to the kernel (mallocTrim). */
const TRIM_MS = 30_000;

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
  /** Our PublicIPv6, in a dual-stack network. */
  private publicIpv6: Ip6 | undefined;
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
  /** ovl_subnets6 and its peers, in a dual-stack network. */
  private map6: SubnetHostMap6 | undefined;
  private stats: StatsReader | undefined;
  private reconciler: Reconciler | undefined;
  private servers: Server[] = [];
  private masqTimer: NodeJS.Timeout | undefined;
  private podBridge: PodBridge | undefined;
  private overlapWatch: OverlapWatch | undefined;
  /** `ip monitor link neigh`, for the bridged pods and the underlay's neighbours. */
  private linkMonitor: IpMonitor | undefined;
  private underlayNeighbours: UnderlayNeighbours | undefined;
  /** The data path mechanism in use, for the log, /readyz and /metrics. */
  private mechanism: Record<string, string> | undefined;
  private stopping = false;
  private etcdConnected = false;
  private subnetFileWritten = false;
  /** Serializes lease loss handling, re-lists and event handling. */
  private chain: Promise<unknown> = Promise.resolve();
  /** Watch events, coalesced into batches (a burst is one map write). */
  private readonly events = new EventQueue<{ gen: number; e: LeaseEvent }>(
    (batch) => this.serialize(() => this.onEvents(batch)),
    (e) => this.log.error("watch events not applied", { error: String(e) }),
  );
  /** Watch from here: every lease change before it is in the map. */
  private resumeRevision: string | undefined;
  /** A warm restart's watch replays this revision's event, already applied. */
  private appliedThrough = 0n;
  /** List, full sync, watch; re-list on a gap with backoff. */
  private readonly watchLoop: WatchLoop;

  constructor(
    readonly opts: AgentOptions,
    private readonly log: Logger,
  ) {
    this.store = new EtcdStore(opts.etcd);
    this.watchLoop = new WatchLoop({
      store: this.store,
      log,
      onListing: (listing, reason) => this.reconcileListing(listing, reason),
      onEvent: (e, gen) => this.events.push({ gen, e }),
      serialize: (fn) => this.serialize(fn),
      retry: (what, fn) => this.retryEtcd(what, fn),
      stopping: () => this.stopping,
      connection: (connected) => (this.etcdConnected = connected),
      restarted: (reason) => this.metrics.watchRestarts.inc({ reason }),
    });
    const build = buildInfo();
    this.metrics = new AgentMetrics(
      new Registry(),
      {
        version: opts.version,
        commit: build.commit,
        abi: build.abi,
        libbpf: libbpf.version(),
      },
      { peers: opts.metricsPeers },
    );
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
    // Since the process started (performance's time origin): node itself,
    // loading the modules, the flags.
    const bootMs = Math.round(performance.now());
    const codec = etcdCodecStatus();
    if (codec.codec !== "generated") {
      this.log.info("etcd's codecs are built from rpc.proto at start (~0.1 s slower)", {
        reason: codec.reason,
      });
    }
    // The config's round trip (and etcd's connection) overlaps the rest of
    // the set-up below.
    const firstConfig = this.store.getConfig();
    firstConfig.catch(() => undefined); // awaited in waitForConfig
    // The restart state, read once; a warm restart's first etcd read, our
    // own lease, goes out with the config's.
    const saved = o.stateFile ? readRestartState(o.stateFile) : undefined;
    let ownEarly = this.prefetchOwnLease(saved);
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
    const u = chooseUnderlay({
      iface: o.iface,
      ifaceRegex: o.ifaceRegex,
      publicIp: o.publicIp,
      links: linkTable(),
    });
    this.publicIp = u.publicIp;
    this.node = { iface: u.iface, publicIp: u.publicIp, mtu: u.link.mtu };
    // A config this node cannot run (an MTU the underlay cannot carry,
    // host-gw behind NAT) is waited out like a bad one: nothing is touched.
    this.config = await this.waitForConfig((cfg, key) => {
      const r = this.usable(cfg, key);
      this.mtu = r.mtu;
      this.backend = r.backend;
      this.publicIpv6 = r.publicIpv6;
    }, firstConfig);
    const backend = this.backend as Backend;
    this.store.setListSplits(listSplits(this.config, LIST_STREAMS, LIST_PAGE));
    // Without restart state this start lists every lease: ask for them now,
    // and etcd prepares them while the overlay device is made.
    let early = this.coldForSure(backend, saved) ? this.store.list() : undefined;
    early?.catch(() => undefined); // awaited below
    // A node that still runs flannel's vxlan backend is taken over: ovl0
    // gets flannel.1's MAC, and flannel.1 goes only once our path is up.
    // One look at the links (the config may have been waited for: not the
    // snapshot the underlay was chosen from) for flannel's and ours.
    const links = linkTable();
    const flannel =
      backend.type === "vxlan" ? findFlannelDevice(this.config.backend.vni, links) : undefined;
    if (flannel) {
      this.log.warn("flannel's VXLAN device found: taking this node over from flannel", {
        device: flannel.name,
        vtepMac: flannel.mac,
      });
    }
    // The overlay device first: its MAC is the VtepMAC the lease announces.
    const overlayDev = ensureOverlayDevice(
      o.overlayIface,
      this.mtu,
      { ...backend.device(), ...(flannel ? { mac: flannel.mac } : {}) },
      links,
    );
    this.vtepMac = overlayDev.mac;
    this.log.info("underlay chosen", {
      iface: u.iface,
      publicIp: formatIp(u.publicIp),
      ...(this.publicIpv6 !== undefined ? { publicIpv6: formatIp6(this.publicIpv6) } : {}),
      vtepMac: this.vtepMac,
      mtu: this.mtu,
    });

    // The programs load (and the maps are made) on a worker thread while the
    // leases are listed and ours is taken: none of it needs the lease.
    const t = { start: performance.now(), loaded: 0, listed: 0, leased: 0, datapath: 0, synced: 0 };
    const prepared = prepareNode({
      underlay: u.iface,
      publicIp: u.publicIp,
      vni: this.config.backend.vni,
      port: this.config.backend.port,
      backend,
      mtu: this.mtu,
      ...(this.config.ipv6 && this.publicIpv6 !== undefined ? { publicIp6: this.publicIpv6 } : {}),
      pinPath: o.pinPath,
      objDir: o.objDir,
      decap: o.decap,
      overlayName: o.overlayIface,
      devices: { underlay: mustLink(u.iface, links), overlay: overlayDev },
    });
    void prepared.loaded.then(() => (t.loaded = performance.now()));
    // One listing serves both the lease choice and the first full sync; the
    // watch starts right after it, so our own create arrives as an event.
    // A warm restart (restart-state.ts) reads only our own lease instead,
    // and the watch replays what changed while we were away.
    let warm = this.savedState(backend, saved);
    let acquireFrom: Lease[] = [];
    if (warm) {
      const ownSubnet = Cidr.parse(warm.subnet);
      const own = await this.retryEtcd("get own lease", () => {
        const g = ownEarly ?? this.store.get(ownSubnet);
        ownEarly = undefined; // a retry reads afresh
        return g;
      });
      if (own && own.attrs.publicIp === this.publicIp) acquireFrom = [own];
      else warm = this.cold(`lease ${warm.subnet} is ${own ? "someone else's" : "gone"}`);
    }
    if (!warm) {
      this.startListing = await this.retryEtcd("list leases", () => {
        const l = early ?? this.store.list();
        early = undefined; // a retry lists afresh
        return l;
      });
      acquireFrom = this.startListing.leases;
    }
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
    this.held = await this.leases.acquire(
      acquireFrom,
      previousSubnet(o.subnetFile),
      Infinity,
      previousSubnet6(o.subnetFile),
    );
    this.configError = undefined;
    const subnet = this.held.lease.subnet;
    if (warm && this.startListing) warm = this.cold("the lease had to be chosen from a listing");
    if (warm && !subnet.equals(Cidr.parse(warm.subnet))) warm = this.cold("another subnet");
    if (warm && warm.subnet6 !== this.held.lease.subnet6?.toString())
      warm = this.cold("another IPv6 subnet");
    if (warm && BigInt(this.held.lease.modRevision) < BigInt(warm.resumeRevision)) {
      // etcd is behind the saved revision: restored from a backup, or another cluster.
      warm = this.cold(
        `etcd revision ${this.held.lease.modRevision} is before ${warm.resumeRevision}`,
      );
    }
    t.leased = performance.now();

    await prepared.loaded;
    const v6 = this.nodeV6();
    const node = setupNode({
      prepared,
      underlay: u.iface,
      publicIp: u.publicIp,
      network: this.config.network,
      subnet,
      vni: this.config.backend.vni,
      port: this.config.backend.port,
      backend,
      mtu: this.mtu,
      ...(v6 ? { v6 } : {}),
      pinPath: o.pinPath,
      objDir: o.objDir,
      decap: o.decap,
      overlayName: o.overlayIface,
      refill: (staged) => this.refill(staged, subnet),
      deferUp: flannel !== undefined,
    });
    const carried = node.pinPlan.filter((p) => p.action !== "reuse" && p.action !== "new");
    if (warm && node.pinPlan.some((p) => p.action !== "reuse")) warm = this.cold("new pinned maps");
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
    const map6 = (this.map6 = v6 ? SubnetHostMap6.openPinned(o.pinPath) : undefined);
    this.stats = StatsReader.openPinned(o.pinPath);
    const map = this.map;
    const stats = this.stats;
    this.metrics.setSource({
      stats: () => stats.read(),
      peers: () => map.peerCounters(),
      eachPeer: (fn) => map.eachPeer(fn),
      ...(map6 ? { eachPeer6: (fn) => map6.eachPeer(fn) } : {}),
      entries: () => map.count() + (map6?.count() ?? 0),
      writes: () => map.writes + (map6?.writes ?? 0),
    });
    this.reconciler = new Reconciler(this.map, this.log, {
      ...this.reconcilerFamilies(backend, map6),
      syncError: (op) => this.metrics.mapSyncErrors.inc({ op }),
      synced: (s) => this.metrics.mapSyncDuration.observe(s),
      changed: (plan) => backend.changed(plan),
      defer: (fn, ms) => {
        const t = setTimeout(() => void this.serialize(async () => !this.stopping && fn()), ms);
        t.unref();
        return () => clearTimeout(t);
      },
    });
    this.setOwn(this.reconciler);

    if (warm && map.id() !== warm.mapId) warm = this.cold("the pinned map is another one");
    let leaseCount: number;
    if (warm) {
      // The maps hold every lease up to the saved revision: check our own
      // entries, and watch from there. The peers are counted (for the log)
      // on a worker thread meanwhile: ~25 ms of kernel copy at 65,536.
      const counted = map.peerCountAsync();
      counted.catch(() => undefined); // awaited below
      const local = { remoteIp: u.publicIp, vtepMac: this.vtepMac, flags: F_LOCAL };
      const cur = map.get(subnet);
      if (!cur || !sameHost(cur, local)) map.upsert(subnet, local);
      const own6 = this.own6();
      const cur6 = own6 && map6?.get(own6.subnet);
      if (map6 && own6 && (!cur6 || !sameHost(cur6, own6.host)))
        map6.upsert(own6.subnet, own6.host);
      this.reconciler.resume();
      this.resumeRevision = warm.resumeRevision;
      // From one revision earlier than needed (its event is in the map
      // already): etcd removes a delete's tombstone when it compacts at
      // exactly that revision and still lets a watch start there, so the
      // delete would be lost without a word; one before, it reports the
      // compaction, and the watch loop lists everything.
      const from = BigInt(warm.resumeRevision) - 2n;
      this.appliedThrough = from + 1n;
      await this.watchLoop.watchFrom((from > 0n ? from : 0n).toString());
      leaseCount = await counted;
    } else {
      const listing = (this.startListing ??= await this.retryEtcd("list leases", () =>
        this.store.list(),
      ));
      await this.reconcileStartListing(listing);
      await this.watchLoop.watchFrom(listing.revision);
      leaseCount = listing.leases.length;
    }
    this.startListing = undefined; // 65,536 leases' worth of objects: let them go
    backend.start(map, (why) => {
      if (this.stopping) return;
      this.log.info("backend asks for a re-list", { why });
      void this.serialize(async () => void (await this.watchLoop.relist("backend")));
    });
    t.synced = performance.now();
    this.writeSubnetFile();
    if (o.ipMasq) this.startMasq();
    const linkMonitor = (this.linkMonitor = new IpMonitor(["link", "neigh"], this.log));
    if (o.podBridge === "none") {
      disablePodBridge(o.pinPath, this.log); // bridged pods take the stack
    } else {
      this.podBridge = new PodBridge(
        o.pinPath,
        () => this.held?.lease.subnet,
        o.podBridge === "auto" ? undefined : o.podBridge,
        this.log,
        () => (this.map6 ? this.held?.lease.subnet6 : undefined),
      );
      this.podBridge.start(linkMonitor);
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
    // After flannel's routes are gone (they were its own), and a tick after
    // ready: the overlap watch only reports, and its first scan is two `ip`
    // runs; the underlay's neighbours (kept across a link flap) start from
    // a listing too.
    const overlapWatch = this.overlapWatch;
    const underlay = (this.underlayNeighbours = new UnderlayNeighbours(this.node.iface, this.log));
    setImmediate(() => {
      if (this.stopping) return;
      overlapWatch.start();
      underlay.start(linkMonitor);
      linkMonitor.start();
    });
    const ms = (a: number, b: number) => Math.round(b - a);
    const mem = process.memoryUsage();
    const cache = compileCacheStats();
    this.saveState();
    this.log.info("ready", {
      subnet: subnet.toString(),
      ...(v6 ? { subnet6: v6.subnet.toString() } : {}),
      start: warm ? "warm" : "cold",
      leases: leaseCount,
      mapWrites: map.writes,
      bootMs,
      setupMs: ms(bootMs, t.start),
      listMs: ms(t.start, t.listed),
      leaseMs: ms(t.listed, t.leased),
      datapathMs: ms(t.leased, t.datapath),
      loadMs: ms(t.start, t.loaded), // beside the listing, not after it
      syncMs: ms(t.datapath, t.synced),
      heapMb: Math.round(mem.heapUsed / 1048576),
      rssMb: Math.round(mem.rss / 1048576),
      ...(cache
        ? { codeCacheHits: cache.hits, codeCacheMisses: cache.misses + cache.rejected }
        : {}),
    });
    this.settleMemory();
  }

  async stop(): Promise<void> {
    this.stopping = true;
    this.events.close();
    if (this.masqTimer) clearInterval(this.masqTimer);
    if (this.trimTimer) clearInterval(this.trimTimer);
    this.podBridge?.stop();
    this.linkMonitor?.stop();
    this.underlayNeighbours?.stop();
    this.backend?.stop();
    this.overlapWatch?.stop();
    // The held deletes go unapplied: the saved revision stays before them,
    // so the next start replays them.
    const heldSince = this.reconciler?.heldSince();
    this.reconciler?.cancelHeld();
    await this.watchLoop.close();
    this.saveState(heldSince);
    // Stop renewing but do not revoke: the lease outlives a restart (TTL).
    this.held?.keepalive?.release();
    await this.store.close();
    for (const s of this.servers) s.close();
    this.map?.close();
    this.map6?.close();
    this.stats?.close();
    this.datapath?.close(); // programs stay attached, maps stay pinned
    this.log.info("stopped; data path left forwarding");
  }

  /** New subnet maps of an upgrade: our own entry and every lease, before
   *  any program reads them. */
  private refill(staged: string, subnet: Cidr): void {
    const backend = this.backend as Backend;
    const m = SubnetHostMap.openPinned(staged);
    const m6 = this.nodeV6() ? SubnetHostMap6.openPinned(staged) : undefined;
    try {
      // The reconciler that later keeps the map, run once on the new map.
      const r = new Reconciler(m, this.log, this.reconcilerFamilies(backend, m6));
      this.setOwn(r, subnet);
      // A warm start has no listing here; it only gets this far with the
      // ABI it saved, whose maps are reused, never refilled (and if they
      // were, the pin plan turns the start cold and a full sync follows).
      const plan = r.fullSync(this.startListing?.leases ?? []);
      this.log.info("new subnet maps filled from etcd", { entries: plan.upserts.length });
    } finally {
      m.close();
      m6?.close();
    }
  }

  // --- warm restarts --------------------------------------------------------
  /** The saved state, if this start may resume from it (else logged why not). */
  private savedState(
    backend: Backend,
    saved: RestartState | string | undefined,
  ): RestartState | undefined {
    if (saved === undefined) return undefined; // no --state-file
    if (!backend.entriesFromLeases)
      return this.cold(`backend ${backend.type} entries follow routes too`);
    if (typeof saved === "string") return this.cold(saved);
    const why = warmMismatch(saved, {
      prefix: this.opts.etcd.prefix,
      publicIp: formatIp(this.publicIp),
      ...(this.publicIpv6 !== undefined ? { publicIpv6: formatIp6(this.publicIpv6) } : {}),
      vtepMac: this.vtepMac,
      backend: backend.type,
      abi: buildInfo().abi,
    });
    return why ? this.cold(why) : saved;
  }

  /** The read of our own lease a warm restart starts with, sent before the config is known. */
  private prefetchOwnLease(
    saved: RestartState | string | undefined,
  ): Promise<Lease | undefined> | undefined {
    if (saved === undefined || typeof saved === "string") return undefined;
    try {
      const get = this.store.get(Cidr.parse(saved.subnet));
      get.catch(() => undefined); // awaited in start(), or never when the start is cold
      return get;
    } catch {
      return undefined; // start() says what is wrong with the subnet
    }
  }

  /** No restart state this start could resume from (savedState() would say why). */
  private coldForSure(backend: Backend, saved: RestartState | string | undefined): boolean {
    return saved === undefined || !backend.entriesFromLeases || typeof saved === "string";
  }

  private cold(why: string): undefined {
    this.log.info("cold start: listing every lease", { why });
    return undefined;
  }

  /**
   * Where the map stands, for the next start (restart-state.ts): the
   * revision to resume from is before any delete still held back
   * (heldSince), which the map does not have yet.
   */
  private saveState(heldSince = this.reconciler?.heldSince()): void {
    const path = this.opts.stateFile;
    const subnet = this.held?.lease.subnet;
    let rev = this.resumeRevision;
    if (rev && heldSince !== undefined && heldSince < BigInt(rev)) rev = heldSince.toString();
    if (!path || !this.map || !subnet || !rev || !this.reconciler?.synced) return;
    try {
      writeRestartState(path, {
        version: 1,
        prefix: this.opts.etcd.prefix,
        publicIp: formatIp(this.publicIp),
        subnet: subnet.toString(),
        vtepMac: this.vtepMac,
        ...(this.map6 && this.publicIpv6 !== undefined && this.held?.lease.subnet6
          ? { publicIpv6: formatIp6(this.publicIpv6), subnet6: this.held.lease.subnet6.toString() }
          : {}),
        backend: (this.backend as Backend).type,
        abi: buildInfo().abi,
        mapId: this.map.id(),
        resumeRevision: rev,
      });
    } catch (e) {
      this.log.warn("restart state not saved; the next start lists every lease", {
        path,
        error: (e as Error).message,
      });
    }
  }

  // --- config -------------------------------------------------------------
  /**
   * Can this node run the config? Its backend's checks (host-gw: no NAT) and
   * Backend.MTU against the interface. A refusal is a ConfigError naming
   * the key. Touches nothing.
   */
  private usable(
    cfg: NetworkConfig,
    key: string,
    /** The PublicIPv6 already in use (a running node): kept, not chosen
     * again. The underlay's IPv6 address is the node's state, not the
     * config's: a link flap flushes it until the network manager re-adds
     * it, and a rewritten config must not read as invalid meanwhile. */
    running6?: Ip6,
  ): { backend: Backend; mtu: number; publicIpv6?: Ip6 } {
    const backend = createBackend(cfg.backend, { log: this.log });
    if (cfg.enableIPv6 && !backend.entryOf6) {
      throw new ConfigError(
        "EnableIPv6",
        `Backend.Type ${backend.type} carries IPv4 only; use vxlan or host-gw for a ` +
          "dual-stack network, or set EnableIPv6 to false",
        key,
      );
    }
    const publicIpv6 = !cfg.enableIPv6
      ? undefined
      : (running6 ?? choosePublicIpv6(this.node.iface, this.opts.publicIpv6, key));
    try {
      backend.check({
        iface: this.node.iface,
        publicIp: this.node.publicIp,
        ...(publicIpv6 !== undefined ? { publicIpv6 } : {}),
      });
    } catch (e) {
      if (e instanceof OverlayError && !e.recoverable) {
        throw new ConfigError("config", `cannot be used on this node: ${e.message}`, key);
      }
      throw e;
    }
    return {
      backend,
      mtu: backendMtu(backend, this.node.mtu, key, cfg.enableIPv6),
      ...(publicIpv6 !== undefined ? { publicIpv6 } : {}),
    };
  }

  private async waitForConfig(
    usable: (cfg: NetworkConfig, key: string) => void,
    first?: Promise<string | undefined>,
  ): Promise<NetworkConfig> {
    const key = configKey(this.opts.etcd.prefix);
    for (let attempt = 0; ; attempt++) {
      if (this.stopping) throw new OverlayError("stopped while waiting for the network config");
      try {
        const text = await (attempt === 0 && first ? first : this.store.getConfig());
        const cfg = parseNetworkConfig(text, key);
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
      // say precisely why a config cannot run here
      this.usable(cfg, key, this.publicIpv6).backend.stop();
      const cur = this.config as NetworkConfig;
      const changed = [
        !cfg.network.equals(cur.network) && "Network",
        cfg.subnetLen !== cur.subnetLen && "SubnetLen",
        cfg.enableNFTables !== cur.enableNFTables && "EnableNFTables",
        cfg.enableIPv6 !== cur.enableIPv6 && "EnableIPv6",
        String(cfg.ipv6?.network) !== String(cur.ipv6?.network) && "IPv6Network",
        cfg.ipv6?.subnetLen !== cur.ipv6?.subnetLen && "IPv6SubnetLen",
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
    const v6 =
      this.publicIpv6 !== undefined
        ? { publicIp: this.publicIpv6, vtepMac: this.vtepMac }
        : undefined;
    return (this.backend as Backend).leaseAttrs(this.publicIp, this.vtepMac, v6);
  }

  /** The IPv6 half of this node, when the network is dual-stack and our
   * lease has an IPv6 subnet (a full IPv6 range leaves a lease v4-only). */
  private nodeV6(): NodeV6 | undefined {
    const net6 = this.config?.ipv6?.network;
    const sub6 = this.held?.lease.subnet6;
    const pub6 = this.publicIpv6;
    return net6 && sub6 && pub6 !== undefined
      ? { publicIp: pub6, network: net6, subnet: sub6 }
      : undefined;
  }

  /** Our IPv6 subnet's LOCAL entry in ovl_subnets6. */
  private own6():
    { subnet: Cidr6; host: { remoteIp: Ip6; vtepMac: string; flags: number } } | undefined {
    const v6 = this.nodeV6();
    return (
      v6 && {
        subnet: v6.subnet,
        host: { remoteIp: v6.publicIp, vtepMac: this.vtepMac, flags: F_LOCAL },
      }
    );
  }

  /** The backend's entries for both families, for a Reconciler. */
  private reconcilerFamilies(backend: Backend, map6: SubnetHostMap6 | undefined) {
    return {
      entryOf: (l: Lease, log: (m: string) => void) => backend.entryOf(l, log),
      ...(map6 && backend.entryOf6
        ? { map6, entryOf6: (l: Lease, log: (m: string) => void) => backend.entryOf6?.(l, log) }
        : {}),
    };
  }

  /** Our own lease, both halves, as the reconciler keeps it LOCAL. */
  private setOwn(r: Reconciler, subnet = this.held?.lease.subnet): void {
    if (!subnet) return;
    r.setOwn(
      subnet,
      { remoteIp: this.publicIp, vtepMac: this.vtepMac, flags: F_LOCAL },
      this.own6(),
    );
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
    const held = await (this.leases as LeaseManager).acquire(
      listing.leases,
      old?.lease.subnet,
      Infinity,
      old?.lease.subnet6,
    );
    this.held = held;
    // The old etcd lease holds nothing now (its key was deleted, expired or
    // taken): revoke it rather than leave it to live out its TTL.
    if (old && old.lease.leaseId !== held.lease.leaseId)
      await this.store
        .revoke(old.lease.leaseId)
        .catch((e: Error) => this.log.debug("old etcd lease not revoked", { error: e.message }));
    const subnet = held.lease.subnet;
    const s6 = (l?: HeldLease) => l?.lease.subnet6?.toString();
    if (!old || !old.lease.subnet.equals(subnet) || s6(old) !== s6(held)) {
      this.reprogram(subnet, old?.lease.subnet, old?.lease.subnet6);
    }
    await this.watchLoop.relist("reacquire");
  }

  /** Our subnet changed: LOCAL entries, overlay addresses, routes, subnet file. */
  private reprogram(subnet: Cidr, old: Cidr | undefined, old6: Cidr6 | undefined): void {
    const cfg = this.config as NetworkConfig;
    const reconciler = this.reconciler as Reconciler;
    if (old) this.map?.delete(old);
    this.setOwn(reconciler, subnet);
    this.map?.upsert(subnet, { remoteIp: this.publicIp, vtepMac: this.vtepMac, flags: F_LOCAL });
    setOverlayAddress(this.opts.overlayIface, subnet.addr, cfg.network);
    replaceRoute(cfg.network, this.opts.overlayIface, subnet.addr);
    const own6 = this.own6();
    if (this.map6) {
      if (old6 && !(own6 && own6.subnet.equals(old6))) this.map6.delete(old6);
      if (own6) {
        this.map6.upsert(own6.subnet, own6.host);
        const net6 = (cfg.ipv6 as { network: Cidr6 }).network;
        setOverlayAddress6(this.opts.overlayIface, own6.subnet.addr, net6);
        replaceRoute6(net6, this.opts.overlayIface);
      }
    }
    this.writeSubnetFile();
    if (this.opts.ipMasq) ensureMasquerade(this.masqMode(), cfg.network, subnet, this.masq6());
    this.log.warn("subnet changed; pods on the old subnet must be recreated", {
      from: old?.toString(),
      to: subnet.toString(),
      ...(old6 || own6 ? { from6: old6?.toString(), to6: own6?.subnet.toString() } : {}),
    });
  }

  // --- watch ----------------------------------------------------------------
  private reconcileListing(listing: ListResult, reason: string): void {
    for (const b of listing.bad) this.log.warn("lease not decodable; ignored", b);
    (this.reconciler as Reconciler).fullSync(listing.leases);
    this.listed(listing, reason);
  }

  /** The start's listing: its map writes on worker threads, side by side. */
  private async reconcileStartListing(listing: ListResult): Promise<void> {
    for (const b of listing.bad) this.log.warn("lease not decodable; ignored", b);
    await (this.reconciler as Reconciler).fullSyncAsync(listing.leases);
    this.listed(listing, "start");
  }

  /** The map holds a listing: watch from after it. */
  private listed(listing: ListResult, reason: string): void {
    this.resumeRevision = (BigInt(listing.revision) + 1n).toString();
    this.appliedThrough = 0n;
    this.checkOwn(listing);
    this.log.debug("listed", { reason, revision: listing.revision, leases: listing.leases.length });
  }

  /**
   * A batch of watch events (EventQueue): lease changes go to the map as
   * one plan; config and undecodable values are handled in order between
   * them. Events of a watch that a re-list has since replaced are dropped:
   * the listing already holds what they said.
   */
  private async onEvents(batch: { gen: number; e: LeaseEvent }[]): Promise<void> {
    if (this.stopping) return;
    const r = this.reconciler as Reconciler;
    let changes: LeaseChange[] = [];
    const flush = () => {
      if (changes.length) r.applyChanges(changes);
      changes = [];
    };
    let ownChange: LeaseChange | undefined;
    let ownRev: string | undefined;
    const own = this.held?.lease.subnet;
    let rev: string | undefined;
    for (const { gen, e } of batch) {
      if (gen !== this.watchLoop.gen) continue;
      rev = e.type === "put" ? e.lease.modRevision : e.revision;
      if (BigInt(rev) <= this.appliedThrough) continue; // replayed, already in the map
      switch (e.type) {
        case "config":
          flush();
          this.onConfig(e.text);
          break;
        case "bad":
          this.log.warn("lease not decodable; ignored", { key: e.key, error: e.error });
          break;
        case "put":
        case "delete": {
          const c: LeaseChange =
            e.type === "put"
              ? { type: "put", lease: e.lease }
              : {
                  type: "delete",
                  subnet: e.subnet,
                  ...(e.subnet6 ? { subnet6: e.subnet6 } : {}),
                  revision: BigInt(rev),
                };
          changes.push(c);
          if (own && (e.type === "put" ? e.lease.subnet : e.subnet).equals(own)) {
            ownChange = c;
            ownRev = rev;
          }
          break;
        }
      }
    }
    flush();
    if (rev !== undefined) this.resumeRevision = (BigInt(rev) + 1n).toString();
    if (!ownChange || !own) return;
    if (ownChange.type === "delete") {
      // Not our own write: adopt() moving our lease to its dual-stack key
      // (or back) deletes the old key in the same revision as its put.
      if (ownRev === undefined || !this.ownWrite(ownRev)) await this.reacquire("own lease deleted");
    } else if (ownChange.lease.attrs.publicIp !== this.publicIp) {
      // Someone else holds our subnet now: our lease had expired.
      await this.reacquire(`subnet ${own} now held by ${formatIp(ownChange.lease.attrs.publicIp)}`);
    }
  }

  /** Is `revision` that of our lease's last write (or older)? */
  private ownWrite(revision: string): boolean {
    const held = this.held;
    return held !== undefined && BigInt(revision) <= BigInt(held.lease.modRevision);
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
  private trimTimer: NodeJS.Timeout | undefined;

  private settleMemory(): void {
    let gc: (() => void) | undefined;
    const timers = [1000, 3000].map((ms, i) =>
      setTimeout(() => {
        if (i === 0) {
          // The next start compiles from what this one compiled anew (a
          // first start, or after an upgrade). Before exposing gc: that
          // flag would stamp every entry as made under other flags.
          flushCompileCache();
          gc = exposeGc();
        }
        gc?.();
        if (i === 0) return;
        mallocTrim();
        // What malloc frees under churn (gRPC's buffers, the listing's
        // native halves) goes back to the kernel too, not only the burst's.
        this.trimTimer = setInterval(() => mallocTrim(), TRIM_MS);
        this.trimTimer.unref();
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
    const v6 = this.masq6();
    writeSubnetEnv(this.opts.subnetFile, {
      network: cfg.network,
      subnet,
      ...(v6 ? { ipv6: v6 } : {}),
      mtu: this.mtu,
      ipMasq: this.opts.ipMasq,
    });
    this.subnetFileWritten = true;
  }

  /** The IPv6 network and our IPv6 subnet, in a dual-stack network. */
  private masq6(): Masq6 | undefined {
    const net6 = this.config?.ipv6?.network;
    const sub6 = this.held?.lease.subnet6;
    return net6 && sub6 ? { network: net6, subnet: sub6 } : undefined;
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
        if (ensureMasquerade(this.masqMode(), cfg.network, subnet, this.masq6())) {
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
