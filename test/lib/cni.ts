// Pods made the way the kubelet makes them: a network namespace, then the
// `overlay` CNI plugin (ADD) run in the node's namespace, delegating to the
// real `bridge` and `host-local` plugins from Debian's
// containernetworking-plugins.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { inNs, sh, shStatus } from "./sh";
import { type NodeInfo, type PodInfo, type Topology } from "./topology";

export const CNI_BIN_DIRS = ["/usr/lib/cni", "/opt/cni/bin"];
export const PLUGIN_DIR = join(__dirname, "..", "..", "..", "bin");

export function cniPath(pluginDir = PLUGIN_DIR): string {
  return [pluginDir, ...CNI_BIN_DIRS.filter((d) => existsSync(join(d, "bridge")))].join(":");
}

export function netconf(
  topo: Topology,
  node: NodeInfo,
  o: { subnetFile: string; pinPath: string; fastPath?: boolean },
) {
  return {
    cniVersion: "1.0.0",
    name: "overlay-net",
    type: "overlay",
    subnetFile: o.subnetFile,
    pinPath: o.pinPath,
    fastPath: o.fastPath ?? true,
    dataDir: join(topo.runDir, `n${node.index}`, "cni"),
    ipamDataDir: join(topo.runDir, `n${node.index}`, "ipam"),
  };
}

export interface CniCall {
  status: number;
  stdout: string;
  stderr: string;
}

/** Runs the plugin in the node's namespace with the kubelet's environment. */
export function cni(
  node: NodeInfo,
  command: string,
  conf: unknown,
  opts: { id: string; podNs: string; ifname?: string; pluginDir?: string },
): CniCall {
  const dir = opts.pluginDir ?? PLUGIN_DIR;
  const stdin = typeof conf === "string" ? conf : JSON.stringify(conf);
  const r = shStatus(
    inNs(node.ns, [
      "env",
      `CNI_COMMAND=${command}`,
      `CNI_CONTAINERID=${opts.id}`,
      `CNI_NETNS=/run/netns/${opts.podNs}`,
      `CNI_IFNAME=${opts.ifname ?? "eth0"}`,
      `CNI_PATH=${cniPath(dir)}`,
      "sh",
      "-c",
      `printf '%s' "$0" | ${join(dir, "overlay")}`,
      stdin,
    ]),
  );
  return r;
}

/** A pod namespace plus CNI ADD; returns the pod as the topology records it.
 *  pluginDir: where the `overlay` plugin is (default: this repository's bin/). */
export function addCniPod(
  topo: Topology,
  node: NodeInfo,
  o: { subnetFile: string; pinPath: string; fastPath?: boolean; pluginDir?: string },
): PodInfo {
  const k = node.pods.length + 1;
  const ns = `${topo.prefix}-p${node.index}${k > 1 ? `-${k}` : ""}`;
  topo.addNs(ns);
  const id = `${ns}-ctr`;
  const r = cni(node, "ADD", netconf(topo, node, o), { id, podNs: ns, pluginDir: o.pluginDir });
  if (r.status !== 0) throw new Error(`CNI ADD for ${ns} failed: ${r.stdout}${r.stderr}`);
  const result = JSON.parse(r.stdout) as {
    ips: { address: string }[];
    interfaces: { name: string; mac: string; sandbox?: string }[];
  };
  const addr = (v6: boolean) =>
    result.ips.find((x) => x.address.includes(":") === v6)?.address.split("/")[0];
  const ip = addr(false) ?? "";
  const ip6 = addr(true);
  const hostVeth = result.interfaces.find((i) => !i.sandbox && i.name !== "cni0")?.name ?? "";
  const podMac = result.interfaces.find((i) => i.sandbox)?.mac ?? "";
  const host = JSON.parse(sh(inNs(node.ns, ["ip", "-j", "link", "show", hostVeth])))[0];
  const pod: PodInfo = {
    ns,
    ip,
    ...(ip6 ? { ip6 } : {}),
    hostVeth,
    mac: podMac,
    hostMac: host.address,
    hostIfindex: host.ifindex,
    containerId: id,
  };
  node.pods.push(pod);
  return pod;
}
