// Loads the BPF objects, fills their load-time constants, pins maps and
// programs under --pin-path, and attaches them:
//
//   ovl_decap_tc   TC ingress of the underlay      (--decap tc)
//   ovl_decap_xdp  XDP on the underlay             (--decap xdp)
//   ovl_encap_dev  TC egress of the overlay device
//   ovl_decap_dev  TC ingress of the overlay device, when it is the kernel's
//                  collect_md VXLAN device (kernelDecap)
//   ovl_encap_pod  TC ingress of pod veths (attachPodFromPin, by the CNI plugin)
//
// Restart without loss: maps are reused from their pins (state and counters
// survive), new programs replace the old ones atomically (tc filter replace
// at the same handle/priority, XDP replace), and nothing is detached when the
// agent exits. Only cleanup() removes what start() made.
import { existsSync, mkdirSync, renameSync, rmdirSync, statfsSync, unlinkSync } from "node:fs";
import { dirname, join } from "node:path";
import { AbiMismatchError, BpfError, OverlayError } from "../errors";
import { BPF_MAP_TYPE, MAPS, PROGRAMS, type MapName, type ProgramName } from "./abi.generated";
import {
  BPF_TC_EGRESS,
  BPF_TC_INGRESS,
  libbpf,
  XDP_FLAGS_DRV_MODE,
  type BpfObjectHandle,
} from "./libbpf";
import { BpfMap, mapInfo, type MapInfo } from "./map";
import { rodataImage } from "./codec";
import { type Ip4 } from "../net/ip";
import { effectiveCaps, missingCaps } from "../caps";
import { run } from "../net/run";
import { listLinks } from "../net/neigh";

const BPF_FS_MAGIC = 0xcafe4a11;
/** Our tc filters: a handle and priority of our own, replaced in place. */
export const TC_HANDLE = 0x0ad1;
export const TC_PRIORITY = 1;

export type DecapMode = "tc" | "xdp";
/** --decap: a mechanism, or "auto" to let the node's hardware decide;
 * "none" for a backend that does not encapsulate (host-gw). */
export type DecapChoice = DecapMode | "auto" | "none";

/**
 * Is the interface backed by a device on a bus (a NIC, virtio) rather than a
 * software device (veth, bridge, bond of those)? Software devices that run
 * XDP "natively" (veth) copy every frame into a new page for it and lose
 * GSO towards them, so `--decap auto` leaves them to TC.
 */
export function hardwareBacked(ifname: string): boolean {
  return existsSync(`/sys/class/net/${ifname}/device`);
}

export interface DatapathConfig {
  pinPath: string;
  /** Directory holding encap.bpf.o and decap.bpf.o. */
  objDir: string;
  vni: number;
  port: number;
  localIp: Ip4;
  underlay: { name: string; ifindex: number; mac: string };
  /** The overlay device; its MAC is this node's VTEP MAC. */
  overlay: { name: string; ifindex: number; mac: string };
  decap: DecapChoice;
  /** The overlay device is a collect_md VXLAN device (see OverlayDevice). */
  kernelDecap: boolean;
  /** VXLAN Group Based Policy (Backend.GBP). */
  gbp?: boolean;
  /** Our PublicIPv6, 16 bytes in network order, in a dual-stack network. */
  localIp6?: Buffer;
}

/** The object files, each once (several programs share one). */
function objectFiles(): string[] {
  return [...new Set(Object.values(PROGRAMS))];
}

/** A load's EINVAL, named: a pinned map of another layout, or the verifier. */
function abiChecked<T>(path: string, pinPath: string, load: () => T): T {
  const named = (e: unknown): never => {
    if (e instanceof BpfError && e.code === "EINVAL") {
      throw new AbiMismatchError(
        `load ${path}: EINVAL: a pinned map under ${pinPath} is incompatible, or the ` +
          `kernel refused a program (libbpf's log above says which)`,
      );
    }
    throw e;
  };
  try {
    const r = load();
    return (r instanceof Promise ? r.catch(named) : r) as T;
  } catch (e) {
    return named(e);
  }
}

/** Makes sure pinPath is a directory on a bpffs, mounting one if needed. */
export function ensureBpffs(pinPath: string): void {
  let probe = pinPath;
  while (!existsSync(probe)) probe = dirname(probe);
  if (statfsSync(probe).type !== BPF_FS_MAGIC) {
    if (missingCaps(effectiveCaps(), ["CAP_SYS_ADMIN"]).length) {
      throw new OverlayError(
        `--pin-path ${pinPath} is not on a bpffs and mounting one needs CAP_SYS_ADMIN: ` +
          "mount /sys/fs/bpf (the DaemonSet mounts the host's) or grant the capability",
      );
    }
    mkdirSync(pinPath, { recursive: true });
    run(["mount", "-t", "bpf", "bpf", pinPath]);
    return;
  }
  mkdirSync(pinPath, { recursive: true });
}

/** Refuses to start on pinned maps left by an incompatible build: another
 *  layout (BpfMap.openPinned throws), or other flags, with which libbpf
 *  would not reuse the pin (readers such as `overlayctl map dump` still
 *  open such a map: its entries read the same). */
export function checkPinnedMaps(pinPath: string): void {
  for (const name of Object.keys(MAPS) as MapName[]) {
    const path = join(pinPath, name);
    if (!existsSync(path)) continue;
    const m = BpfMap.openPinned(pinPath, name);
    try {
      const { flags } = mapInfo(m.fd, path);
      if (flags !== MAPS[name].flags) {
        throw new AbiMismatchError(
          `map ${name} at ${path} does not match this overlayd's ABI (flags ${flags} != ${MAPS[name].flags}); ` +
            `it was made by another version: remove it (overlayd --cleanup) and restart`,
        );
      }
    } finally {
      m.close();
    }
  }
}

/**
 * What start-up does with a pinned map that another build left:
 *   reuse   same layout: the programs take it over, state and counters live on;
 *   copy    same key and value layout, another size or other flags: a new
 *           map, its entries copied over (counters, endpoints);
 *   create  another layout of a map the agent fills itself (the subnet maps,
 *           from etcd): a new map, filled before any program uses it;
 *   refuse  another layout of a map only its writers know (ovl_endpoints,
 *           written by the CNI plugin and the pod bridge): nothing is touched.
 */
export type PinAction = "reuse" | "copy" | "create" | "refuse";

/** Maps the agent can make anew: the subnet maps it fills from etcd, and
 *  the per-peer counters, which the data path fills (counters restart). */
export const REFILLED_FROM_ETCD: ReadonlySet<MapName> = new Set([
  "ovl_subnets",
  "ovl_peers",
  "ovl_peer_stats",
  "ovl_subnets6",
  "ovl_peers6",
  "ovl_peer_stats6",
]);

/** Pure: the action for one pinned map (undefined info: nothing pinned). */
export function planPinnedMap(
  name: MapName,
  info: Pick<MapInfo, "type" | "keySize" | "valueSize" | "maxEntries" | "flags"> | undefined,
): { action: PinAction | "new"; why: string } {
  const want = MAPS[name];
  if (!info) return { action: "new", why: "not pinned yet" };
  const diffs: string[] = [];
  if (info.type !== want.type) diffs.push(`type ${info.type} -> ${want.type}`);
  if (info.keySize !== want.keySize) diffs.push(`key ${info.keySize} -> ${want.keySize} B`);
  if (info.valueSize !== want.valueSize) {
    diffs.push(`value ${info.valueSize} -> ${want.valueSize} B`);
  }
  const layout = diffs.length > 0;
  if (info.maxEntries !== want.maxEntries) {
    diffs.push(`max entries ${info.maxEntries} -> ${want.maxEntries}`);
  }
  // libbpf reuses a pin only with the same flags (the per-peer counters
  // became BPF_F_NO_PREALLOC: an older build's are copied over).
  if (info.flags !== want.flags) diffs.push(`flags ${info.flags} -> ${want.flags}`);
  if (!diffs.length) return { action: "reuse", why: "same layout" };
  const why = diffs.join(", ");
  if (!layout) return { action: "copy", why };
  if (REFILLED_FROM_ETCD.has(name)) return { action: "create", why };
  return { action: "refuse", why };
}

/** The plan for every map of this build against what is pinned. */
export function planPins(
  pinPath: string,
): { name: MapName; action: PinAction | "new"; why: string }[] {
  return (Object.keys(MAPS) as MapName[]).map((name) => {
    const path = join(pinPath, name);
    if (!existsSync(path)) return { name, ...planPinnedMap(name, undefined) };
    const fd = libbpf.objGet(path);
    try {
      return { name, ...planPinnedMap(name, mapInfo(fd, path)) };
    } finally {
      libbpf.close(fd);
    }
  });
}

/** Where an upgrade across an ABI change stages the new build's pins. */
export const STAGING_DIR = "upgrade-staging"; // bpffs refuses names with a dot

function progName(fd: number): string {
  const info = Buffer.alloc(256);
  libbpf.objInfo(fd, info, "program");
  const end = info.indexOf(0, 64);
  return info.toString("latin1", 64, end > 64 && end < 80 ? end : 80);
}

/** Name of a loaded program by id, or undefined when it is gone. */
export function programName(id: number): string | undefined {
  let fd = -1;
  try {
    fd = libbpf.progFdById(id);
    return progName(fd);
  } catch {
    return undefined;
  } finally {
    libbpf.close(fd);
  }
}

export interface Attachment {
  ifindex: number;
  hook: "tc-ingress" | "tc-egress" | "xdp";
  progId: number;
  program: string;
}

/** Our programs attached to the given interfaces (tc at our handle, XDP). */
export function attachments(ifindexes: number[]): Attachment[] {
  const out: Attachment[] = [];
  for (const ifindex of ifindexes) {
    for (const [hook, point] of [
      ["tc-ingress", BPF_TC_INGRESS],
      ["tc-egress", BPF_TC_EGRESS],
    ] as const) {
      const id = libbpf.tcQuery(ifindex, point, TC_HANDLE, TC_PRIORITY);
      if (id) out.push({ ifindex, hook, progId: id, program: programName(id) ?? "?" });
    }
    const x = libbpf.xdpQueryId(ifindex, 0);
    const name = x ? programName(x) : undefined;
    if (x && name?.startsWith("ovl_")) out.push({ ifindex, hook: "xdp", progId: x, program: name });
  }
  return out;
}

/** Our filter: clsact if missing, then replace-or-create at our handle/priority. */
function attachTc(ifindex: number, point: number, progFd: number, what: string): void {
  libbpf.tcHookCreate(ifindex, point, what);
  libbpf.tcAttach(ifindex, point, progFd, TC_HANDLE, TC_PRIORITY, what);
}

/** Is the XDP program on ifindex our decap (and not someone else's)? */
function xdpIsOurs(ifindex: number): boolean {
  const id = libbpf.xdpQueryId(ifindex, 0);
  return id !== 0 && programName(id) === "ovl_decap_xdp";
}

export class Datapath {
  private objects: BpfObjectHandle[] = [];
  private readonly progFds = new Map<ProgramName, number>();
  /** The decap mechanism attached (what "auto" resolved to), after start(). */
  mechanism: DecapMode | "none" | undefined;
  /** Why "auto" chose the mechanism it did. */
  reason = "";

  constructor(readonly config: DatapathConfig) {}

  /** What start() did with each pinned map (an upgrade's plan), for the log. */
  pinPlan: { name: MapName; action: PinAction | "new"; why: string }[] = [];

  /**
   * Load (reusing pinned maps), pin, attach. Safe to call on a live node.
   * Pinned maps of another layout (an upgrade across an ABI change) are
   * replaced without a gap: the new build's maps are made beside them under
   * <pin-path>/.upgrade, filled (entries copied; `refill` writes what comes
   * from etcd), the programs swapped, and only then the pins renamed over
   * the old ones. A map that cannot be carried over stops it before
   * anything is touched.
   */
  start(opts: { refill?: (stagedPinPath: string) => void } = {}): void {
    const c = this.config;
    if (this.preloadError !== undefined) throw this.preloadError;
    if (this.preloaded) {
      this.attach();
      return;
    }
    ensureBpffs(c.pinPath);
    this.pinPlan = planPins(c.pinPath);
    const refused = this.pinPlan.filter((p) => p.action === "refuse");
    if (refused.length) {
      throw new AbiMismatchError(
        refused.map((p) => `map ${p.name} at ${join(c.pinPath, p.name)}: ${p.why}`).join("; ") +
          ": this build cannot carry it over (its content is only known to its writers); " +
          "nothing was changed. Run the build that made it, or `overlayd --cleanup` and restart",
      );
    }
    const changed = this.pinPlan.filter((p) => p.action === "copy" || p.action === "create");
    if (!changed.length) {
      this.load();
      this.attach();
      return;
    }
    const staged = join(c.pinPath, STAGING_DIR);
    this.stage(staged);
    this.load(staged);
    for (const p of changed) if (p.action === "copy") copyEntries(c.pinPath, staged, p.name);
    if (changed.some((p) => p.action === "create")) opts.refill?.(staged);
    this.attach();
    // The programs now use the staged maps: make them the pins everyone opens.
    for (const name of Object.keys(MAPS) as MapName[]) {
      renameSync(join(staged, name), join(c.pinPath, name));
    }
    rmdirSync(staged);
  }

  /** An empty staging directory holding the maps that stay (pinned twice). */
  private stage(staged: string): void {
    if (existsSync(staged)) {
      for (const name of Object.keys(MAPS)) {
        const p = join(staged, name);
        if (existsSync(p)) unlinkSync(p); // a crashed earlier attempt
      }
    } else {
      mkdirSync(staged);
    }
    for (const p of this.pinPlan) {
      if (p.action !== "reuse") continue;
      const fd = libbpf.objGet(join(this.config.pinPath, p.name));
      try {
        libbpf.objPin(fd, join(staged, p.name));
      } finally {
        libbpf.close(fd);
      }
    }
  }

  /**
   * Loads and pins without attaching (BPF_PROG_RUN fixtures use this).
   * Maps are pinned under mapDir (default: the pin path); programs always
   * under the pin path, where the CNI plugin and overlayctl find them.
   */
  load(mapDir?: string): void {
    const c = this.config;
    ensureBpffs(c.pinPath);
    if (!mapDir) checkPinnedMaps(c.pinPath);
    for (const file of objectFiles()) {
      const { obj, path } = this.open(file, mapDir ?? c.pinPath);
      abiChecked(path, c.pinPath, () => libbpf.loadObject(obj, path));
      this.pinPrograms(obj, file);
    }
  }

  /**
   * start()'s load, begun early and run off the main thread: creating the
   * maps and the verifier (~35 ms on a first start since the per-peer
   * counters are no longer preallocated; ~250 ms more when they were),
   * which the agent spends listing the leases instead. Only when every pinned map
   * is reused or new; start() carries the others over (an ABI change) as
   * before. A failed load is kept and thrown by start().
   */
  async preload(): Promise<void> {
    const c = this.config;
    try {
      ensureBpffs(c.pinPath);
      const plan = planPins(c.pinPath);
      if (plan.some((p) => p.action !== "reuse" && p.action !== "new")) return;
      this.pinPlan = plan;
      for (const file of objectFiles()) {
        const { obj, path } = this.open(file, c.pinPath);
        await abiChecked(path, c.pinPath, () => libbpf.loadObjectAsync(obj, path));
        this.pinPrograms(obj, file);
      }
      this.preloaded = true;
    } catch (e) {
      this.preloadError = e;
    }
  }

  private preloaded = false;
  private preloadError: unknown;

  /** Opens one object file with its maps pinned under mapDir and our .rodata. */
  private open(file: string, mapDir: string): { obj: BpfObjectHandle; path: string } {
    const path = join(this.config.objDir, file);
    const obj = libbpf.openObject(path);
    this.objects.push(obj);
    for (const name of Object.keys(MAPS) as MapName[]) {
      libbpf.setPinPath(libbpf.findMap(obj, name), join(mapDir, name), name);
    }
    libbpf.setInitialValue(
      libbpf.findMap(obj, ".rodata"),
      rodataImage(this.config),
      `${file} .rodata`,
    );
    return { obj, path };
  }

  /** Pins a loaded object's programs, replacing the old pins: the CNI plugin
   * and overlayctl find programs there. */
  private pinPrograms(obj: BpfObjectHandle, file: string): void {
    for (const [prog, objFile] of Object.entries(PROGRAMS) as [ProgramName, string][]) {
      if (objFile !== file) continue;
      const fd = libbpf.programFd(libbpf.findProgram(obj, prog), prog);
      this.progFds.set(prog, fd);
      const pin = join(this.config.pinPath, prog);
      if (existsSync(pin)) unlinkSync(pin);
      libbpf.objPin(fd, pin);
    }
  }

  programFd(prog: ProgramName): number {
    return this.fd(prog);
  }

  private fd(prog: ProgramName): number {
    const fd = this.progFds.get(prog);
    if (fd === undefined) throw new OverlayError(`program ${prog}: not loaded`);
    return fd;
  }

  private attach(): void {
    const c = this.config;
    const u = c.underlay.ifindex;
    this.mechanism = c.decap === "none" ? "none" : this.attachDecap();
    if (c.decap === "none") this.reason = "the backend does not encapsulate";
    // New attachments first, then remove the other decap mode: no gap.
    if (this.mechanism !== "tc") {
      libbpf.tcDetach(u, BPF_TC_INGRESS, TC_HANDLE, TC_PRIORITY, `${c.underlay.name} ingress`);
    }
    if (this.mechanism !== "xdp" && xdpIsOurs(u)) {
      libbpf.xdpDetach(u, 0, `${c.underlay.name} xdp`);
    }
    this.attachTc(c.overlay.ifindex, BPF_TC_EGRESS, "ovl_encap_dev", `${c.overlay.name} egress`);
    if (c.kernelDecap) {
      this.attachTc(
        c.overlay.ifindex,
        BPF_TC_INGRESS,
        "ovl_decap_dev",
        `${c.overlay.name} ingress`,
      );
    }
    // Pod veths and pod bridges run the ovl_encap_pod they were given when
    // attached; replace it with this build's, which uses this build's maps.
    this.podsReattached = 0;
    for (const l of listLinks()) {
      if (l.ifindex === c.underlay.ifindex || !podEncapAttached(l.ifindex)) continue;
      this.attachTc(l.ifindex, BPF_TC_INGRESS, "ovl_encap_pod", `${l.name} ingress`);
      this.podsReattached++;
    }
  }

  /** Interfaces whose ovl_encap_pod start() replaced. */
  podsReattached = 0;

  /** Attaches the decap program the config asks for; "auto" probes. */
  private attachDecap(): DecapMode {
    const c = this.config;
    const u = c.underlay.ifindex;
    const xdpWhat = `${c.underlay.name} xdp`;
    if (c.decap === "xdp") {
      libbpf.xdpAttach(u, this.fd("ovl_decap_xdp"), 0, xdpWhat);
      this.reason = "forced by --decap xdp";
      return "xdp";
    }
    if (c.decap === "auto" && hardwareBacked(c.underlay.name)) {
      // The probe is the attach itself, in driver mode only: a driver
      // without native XDP refuses, and generic XDP is never chosen.
      try {
        libbpf.xdpAttach(u, this.fd("ovl_decap_xdp"), XDP_FLAGS_DRV_MODE, xdpWhat);
        this.reason = "the underlay's driver runs XDP natively";
        return "xdp";
      } catch (e) {
        this.reason = `native XDP refused (${(e as Error).message}), TC after GRO`;
      }
    } else if (c.decap === "auto") {
      this.reason = `${c.underlay.name} is a software device (XDP would copy every frame), TC after GRO`;
    } else {
      this.reason = "forced by --decap tc";
    }
    this.attachTc(u, BPF_TC_INGRESS, "ovl_decap_tc", `${c.underlay.name} ingress`);
    return "tc";
  }

  private attachTc(ifindex: number, point: number, prog: ProgramName, what: string): void {
    attachTc(ifindex, point, this.fd(prog), what);
  }

  /** Closes our handles. Attachments and pins stay: the node keeps forwarding. */
  close(): void {
    for (const obj of this.objects) libbpf.closeObject(obj);
    this.objects = [];
    this.progFds.clear();
  }
}

/** Attach the pinned encap_pod program to a pod veth (CNI plugin, tests). */
export function attachPodFromPin(pinPath: string, ifindex: number, name: string): void {
  const fd = libbpf.objGet(join(pinPath, "ovl_encap_pod"));
  try {
    attachTc(ifindex, BPF_TC_INGRESS, fd, `${name} ingress`);
  } finally {
    libbpf.close(fd);
  }
}

export function detachPod(ifindex: number, name: string): boolean {
  return libbpf.tcDetach(ifindex, BPF_TC_INGRESS, TC_HANDLE, TC_PRIORITY, `${name} ingress`);
}

/**
 * Detaches ovl_encap_pod from every listed interface that runs it (pod
 * veths, pod bridges). Returns the names it was detached from.
 */
export function detachPodEncap(links: { name: string; ifindex: number }[]): string[] {
  return links
    .filter((l) => podEncapAttached(l.ifindex) && detachPod(l.ifindex, l.name))
    .map((l) => l.name);
}

/** Does the interface run ovl_encap_pod at our TC ingress slot? */
export function podEncapAttached(ifindex: number): boolean {
  const id = libbpf.tcQuery(ifindex, BPF_TC_INGRESS, TC_HANDLE, TC_PRIORITY);
  return id !== 0 && programName(id) === "ovl_encap_pod";
}

/**
 * `overlayd --cleanup`: detach our programs from the given interfaces and
 * remove the pins. Forwarding through the overlay stops.
 */
export function cleanupDatapath(
  pinPath: string,
  underlayIfindex: number | undefined,
  overlayIfindex: number | undefined,
): void {
  if (underlayIfindex !== undefined) {
    libbpf.tcDetach(underlayIfindex, BPF_TC_INGRESS, TC_HANDLE, TC_PRIORITY, "underlay ingress");
    if (xdpIsOurs(underlayIfindex)) libbpf.xdpDetach(underlayIfindex, 0, "underlay xdp");
  }
  if (overlayIfindex !== undefined) {
    libbpf.tcDetach(overlayIfindex, BPF_TC_EGRESS, TC_HANDLE, TC_PRIORITY, "overlay egress");
    libbpf.tcDetach(overlayIfindex, BPF_TC_INGRESS, TC_HANDLE, TC_PRIORITY, "overlay ingress");
  }
  for (const dir of [join(pinPath, STAGING_DIR), pinPath]) {
    for (const name of [...Object.keys(MAPS), ...Object.keys(PROGRAMS)]) {
      const p = join(dir, name);
      if (existsSync(p)) unlinkSync(p);
    }
  }
  if (existsSync(join(pinPath, STAGING_DIR))) rmdirSync(join(pinPath, STAGING_DIR));
}

/**
 * Copies every entry of the pinned map `name` under `from` into the map of
 * the same name under `to` (same key and value layout, another size). Array
 * indexes the new map cannot hold are dropped, and so are per-peer counters
 * that never moved: those maps keep entries only for peers with traffic.
 */
export function copyEntries(from: string, to: string, name: MapName): number {
  const oldFd = libbpf.objGet(join(from, name));
  const newFd = libbpf.objGet(join(to, name));
  try {
    const old = new BpfMap(name, oldFd);
    const fresh = new BpfMap(name, newFd);
    const type: number = MAPS[name].type;
    const isArray = type === BPF_MAP_TYPE.ARRAY || type === BPF_MAP_TYPE.PERCPU_ARRAY;
    const counters = name === "ovl_peer_stats" || name === "ovl_peer_stats6";
    let n = 0;
    for (const [k, v] of old.entries()) {
      if (isArray && k.readUInt32LE(0) >= MAPS[name].maxEntries) continue;
      if (counters && v.every((b) => b === 0)) continue;
      fresh.update(k, v);
      n++;
    }
    return n;
  } finally {
    libbpf.close(oldFd);
    libbpf.close(newFd);
  }
}
