// The `overlay` CNI plugin (spec 1.0.0): ADD / DEL / CHECK / VERSION.
// Delegates to the standard `bridge` plugin with `host-local` IPAM (config
// rendered from subnet.env, saved so DEL replays exactly what ADD used), and
// with the fast path on, attaches overlayd's encap program to the pod's host
// veth and registers the pod for direct delivery (and undoes both on DEL).
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { attachPodFromPin, detachPod } from "../bpf/datapath";
import { type Endpoint } from "../bpf/codec";
import { EndpointMap, EndpointMap6, type EndpointMapOf } from "../bpf/endpoint-map";
import { parseIp } from "../net/ip";
import { parseIp6 } from "../net/ip6";
import { linkInfo } from "../net/link";
import {
  CNI_VERSION,
  CniCode,
  CniError,
  SUPPORTED_VERSIONS,
  parseNetConf,
  parseSubnetInfo,
  podEndpoint,
  renderDelegate,
  type CniResult,
  type OverlayNetConf,
} from "./netconf";

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new CniError(CniCode.invalidEnv, `${name} is not set`);
  return v;
}

function findPlugin(type: string): string {
  for (const dir of (process.env.CNI_PATH ?? "").split(":").filter(Boolean)) {
    const p = join(dir, type);
    if (existsSync(p)) return p;
  }
  throw new CniError(
    CniCode.invalidEnv,
    `delegate plugin "${type}" not found in CNI_PATH=${process.env.CNI_PATH ?? ""}`,
  );
}

/** Runs the delegate plugin with our environment and the given command. */
function delegate(command: string, conf: Record<string, unknown>): string {
  const r = spawnSync(findPlugin(String(conf.type)), [], {
    input: JSON.stringify(conf),
    env: { ...process.env, CNI_COMMAND: command },
    encoding: "utf8",
  });
  if (r.status !== 0) {
    let msg = r.stdout || r.stderr || `exit ${r.status}`;
    try {
      const e = JSON.parse(r.stdout) as { msg?: string; details?: string };
      msg = `${e.msg ?? msg}${e.details ? `: ${e.details}` : ""}`;
    } catch {
      /* not JSON */
    }
    throw new CniError(
      CniCode.pluginFailure,
      `delegate ${conf.type} ${command} failed: ${msg.trim()}`,
    );
  }
  return r.stdout;
}

function savedPath(conf: OverlayNetConf, id: string): string {
  return join(conf.dataDir, id);
}

/** What ADD saves for DEL and CHECK: the delegate config, its result, our endpoint. */
interface Saved {
  delegate: Record<string, unknown>;
  result?: Record<string, unknown>;
  endpoint?: { podIp: string; podIp6?: string; hostIfindex: number; hostVeth: string };
}

/** One of the pod's addresses in its family's endpoint map. */
interface PodEntry {
  text: string;
  upsert(ep: Endpoint): void;
  delete(): boolean;
  registered(): boolean;
}

function podEntry<A extends number | bigint>(m: EndpointMapOf<A>, ip: A, text: string): PodEntry {
  return {
    text,
    upsert: (ep) => m.upsert(ip, ep),
    delete: () => m.delete(ip),
    registered: () => m.list().some((x) => x.podIp === ip),
  };
}

/**
 * Runs fn for each family the pod has an address in (IPv4 always, IPv6 in a
 * dual-stack network), with that family's endpoint map, closed after.
 */
function withEndpointMaps(
  pinPath: string,
  ips: { podIp: string; podIp6?: string },
  fn: (e: PodEntry) => void,
): void {
  const m = EndpointMap.openPinned(pinPath);
  try {
    fn(podEntry(m, parseIp(ips.podIp), ips.podIp));
  } finally {
    m.close();
  }
  if (!ips.podIp6) return;
  const m6 = EndpointMap6.openPinned(pinPath);
  try {
    fn(podEntry(m6, parseIp6(ips.podIp6), ips.podIp6));
  } finally {
    m6.close();
  }
}

function save(conf: OverlayNetConf, id: string, saved: Saved): void {
  mkdirSync(conf.dataDir, { recursive: true });
  const tmp = `${savedPath(conf, id)}.tmp`;
  writeFileSync(tmp, JSON.stringify(saved));
  renameSync(tmp, savedPath(conf, id));
}

function load(conf: OverlayNetConf, id: string): Saved | undefined {
  const path = savedPath(conf, id);
  if (!existsSync(path)) return undefined;
  return JSON.parse(readFileSync(path, "utf8")) as Saved;
}

/** CHECK and DEL hand the delegate the ADD result: the runtime's, else ours. */
function withPrev(saved: Saved, conf: OverlayNetConf): Record<string, unknown> {
  const prev = conf.prevResult ?? saved.result;
  return prev ? { ...saved.delegate, prevResult: prev } : saved.delegate;
}

function add(conf: OverlayNetConf): string {
  const id = env("CNI_CONTAINERID");
  env("CNI_NETNS");
  const ifname = env("CNI_IFNAME");
  let text: string;
  try {
    text = readFileSync(conf.subnetFile, "utf8");
  } catch {
    throw new CniError(
      CniCode.tryAgainLater,
      `${conf.subnetFile}: not there yet (is overlayd running on this node?)`,
    );
  }
  const d = renderDelegate(conf, parseSubnetInfo(text, conf.subnetFile));
  // Saved before the delegate runs: a DEL after a half-done ADD replays it.
  save(conf, id, { delegate: d });
  const out = delegate("ADD", d);
  if (conf.fastPath) {
    const bridge = String(d.bridge ?? "cni0");
    const ep = podEndpoint(JSON.parse(out) as CniResult, ifname, bridge);
    const host = ep ? linkInfo(ep.hostVeth) : undefined;
    const gw = linkInfo(bridge);
    if (!ep || !host || !gw) {
      throw new CniError(
        CniCode.pluginFailure,
        `fast path: the ${d.type} result names no pod address, host veth or ${bridge}`,
      );
    }
    attachPodFromPin(conf.pinPath, host.ifindex, host.name);
    const value = { ifindex: host.ifindex, podMac: ep.podMac, hostMac: gw.mac };
    withEndpointMaps(conf.pinPath, ep, (e) => e.upsert(value));
    save(conf, id, {
      delegate: d,
      result: JSON.parse(out) as Record<string, unknown>,
      endpoint: {
        podIp: ep.podIp,
        ...(ep.podIp6 ? { podIp6: ep.podIp6 } : {}),
        hostIfindex: host.ifindex,
        hostVeth: host.name,
      },
    });
  } else {
    save(conf, id, { delegate: d, result: JSON.parse(out) as Record<string, unknown> });
  }
  return out;
}

function del(conf: OverlayNetConf): string {
  const id = env("CNI_CONTAINERID");
  const saved = load(conf, id);
  if (!saved) return ""; // DEL is idempotent
  const e = saved.endpoint;
  if (e) {
    try {
      withEndpointMaps(conf.pinPath, e, (p) => p.delete());
    } catch {
      /* the data path is gone: nothing to unregister */
    }
  }
  delegate("DEL", withPrev(saved, conf));
  // The veth keeps the fast path until the delegate removes it: while it
  // runs ovl_encap_pod the agent's bridge sync leaves its pod to us, and
  // does not write back the entry just removed. It usually goes with the
  // pod's namespace; detach if it is still here.
  if (e && linkInfo(e.hostVeth)?.ifindex === e.hostIfindex) detachPod(e.hostIfindex, e.hostVeth);
  rmSync(savedPath(conf, id), { force: true });
  return "";
}

function check(conf: OverlayNetConf): string {
  const id = env("CNI_CONTAINERID");
  const saved = load(conf, id);
  if (!saved)
    throw new CniError(
      CniCode.unknownContainer,
      `container ${id}: no saved config in ${conf.dataDir}`,
    );
  delegate("CHECK", withPrev(saved, conf));
  if (saved.endpoint) {
    withEndpointMaps(conf.pinPath, saved.endpoint, (e) => {
      if (!e.registered()) {
        throw new CniError(CniCode.pluginFailure, `pod ${e.text}: not registered in the data path`);
      }
    });
  }
  return "";
}

function main(): void {
  const command = process.env.CNI_COMMAND;
  try {
    if (command === "VERSION") {
      process.stdout.write(
        JSON.stringify({ cniVersion: CNI_VERSION, supportedVersions: SUPPORTED_VERSIONS }),
      );
      return;
    }
    const run =
      command === "ADD" ? add : command === "DEL" ? del : command === "CHECK" ? check : undefined;
    if (!run) {
      throw new CniError(
        CniCode.invalidEnv,
        `CNI_COMMAND=${command ?? ""}: want ADD, DEL, CHECK or VERSION`,
      );
    }
    process.stdout.write(run(parseNetConf(readFileSync(0, "utf8"))));
  } catch (e) {
    const err =
      e instanceof CniError
        ? e
        : new CniError(CniCode.pluginFailure, (e as Error).message ?? String(e));
    process.stdout.write(JSON.stringify(err));
    process.exit(1);
  }
}

main();
