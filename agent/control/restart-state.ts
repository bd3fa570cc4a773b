// What a warm restart needs to skip the full listing: the etcd revision up
// to which the pinned subnet map holds every lease change, and what that map
// was built for. Written when the agent stops (and after start-up), read at
// the next start. If anything differs (another map, prefix, node, backend or
// ABI), or etcd has compacted past the revision, the agent lists everything
// as on a first start: the file can only save work, never change the result.
//
// Why replaying from an older revision is still right: every event after it
// sets a key to its final state, and keys without events since then have not
// changed since the map last matched them. So a file older than the map (a
// crash after more events were applied) costs a few re-applied events only.
import { mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { dirname } from "node:path";

export interface RestartState {
  version: 1;
  prefix: string;
  /** Dotted quad; this node's PublicIP. */
  publicIp: string;
  /** Our own subnet, "10.5.1.0/24". */
  subnet: string;
  vtepMac: string;
  /** A dual-stack node's PublicIPv6 and IPv6 subnet (absent: IPv4 only). */
  publicIpv6?: string;
  subnet6?: string;
  backend: string;
  /** ABI hash of the build that wrote the map. */
  abi: string;
  /** Kernel id of the pinned ovl_subnets the revision is about. */
  mapId: number;
  /** Watch from this revision: every change before it is in the map. */
  resumeRevision: string;
}

/** Default: next to the subnet file (which a DaemonSet keeps on the host),
 * named after it, so agents with their own subnet files never share one. */
export function defaultStateFile(subnetFile: string): string {
  return `${subnetFile}.overlayd-state`;
}

/** Pure: the file's text -> a state, or the reason it is unusable. */
export function parseRestartState(text: string): RestartState | string {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch (e) {
    return `not JSON (${(e as Error).message})`;
  }
  if (typeof o !== "object" || o === null) return "not a JSON object";
  const r = o as Record<string, unknown>;
  if (r.version !== 1) return `version ${String(r.version)} is not 1`;
  for (const f of ["prefix", "publicIp", "subnet", "vtepMac", "backend", "abi"] as const) {
    if (typeof r[f] !== "string") return `${f} missing`;
  }
  for (const f of ["publicIpv6", "subnet6"] as const) {
    if (r[f] !== undefined && typeof r[f] !== "string") return `${f} is not a string`;
  }
  if (typeof r.mapId !== "number") return "mapId missing";
  if (typeof r.resumeRevision !== "string" || !/^\d+$/.test(r.resumeRevision))
    return "resumeRevision missing";
  return r as unknown as RestartState;
}

/**
 * Pure: can a start with `now` resume from `saved`? undefined if so, else
 * the first difference, for the log.
 */
export function warmMismatch(
  saved: RestartState,
  now: Omit<RestartState, "version" | "resumeRevision" | "subnet" | "subnet6" | "mapId">,
): string | undefined {
  for (const f of ["prefix", "publicIp", "vtepMac", "backend", "abi", "publicIpv6"] as const) {
    if (saved[f] !== now[f]) return `${f} was ${saved[f] ?? "none"}, now ${now[f] ?? "none"}`;
  }
  return undefined;
}

export function readRestartState(path: string): RestartState | string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    return `${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`;
  }
  const s = parseRestartState(text);
  return typeof s === "string" ? `${path}: ${s}` : s;
}

/** Atomically (write + rename), so a reader never sees half a file. */
export function writeRestartState(path: string, s: RestartState): void {
  mkdirSync(dirname(path), { recursive: true });
  const tmp = `${path}.tmp.${process.pid}`;
  writeFileSync(tmp, JSON.stringify(s) + "\n", { mode: 0o600 });
  renameSync(tmp, path);
}
