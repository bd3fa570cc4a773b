// What the kernel knows about the pods behind a bridge, read through
// iproute2's JSON output: links with their masters and addresses, the
// bridge's neighbour entries and its FDB. Inputs for agent/node/pods.ts.
import { type BridgeLink, type FdbEntry, type Neighbour } from "../node/pods";
import { parseIp } from "./ip";
import { parseIp6, type Ip6 } from "./ip6";
import { run } from "./run";

interface IpJsonLink {
  ifname: string;
  ifindex: number;
  address?: string;
  master?: string;
  linkinfo?: { info_kind?: string };
  addr_info?: { family: string; local: string; prefixlen: number }[];
}

/** Every link with its kind, master and addresses: one `ip -d addr`. */
export function listLinks(): BridgeLink[] {
  const links = JSON.parse(run(["ip", "-d", "-j", "addr", "show"])) as IpJsonLink[];
  return links.map((l) => ({
    name: l.ifname,
    ifindex: l.ifindex,
    mac: l.address ?? "00:00:00:00:00:00",
    kind: l.linkinfo?.info_kind,
    master: l.master,
    addrs: (l.addr_info ?? [])
      .filter((a) => a.family === "inet")
      .map((a) => ({ ip: parseIp(a.local), prefixlen: a.prefixlen })),
    addrs6: (l.addr_info ?? [])
      .filter((a) => a.family === "inet6")
      .map((a) => ({ ip: parseIp6(a.local), prefixlen: a.prefixlen })),
  }));
}

interface IpJsonNeigh {
  dst: string;
  lladdr?: string;
  state?: string[];
}

function neighbours(dev: string, family: "-4" | "-6"): IpJsonNeigh[] {
  return JSON.parse(run(["ip", "-j", family, "neigh", "show", "dev", dev])) as IpJsonNeigh[];
}

/** Both families' entries on dev, addresses as text (`ip neigh show dev`). */
export function listNeighbourText(dev: string): { ip: string; mac?: string; states: string[] }[] {
  return [...neighbours(dev, "-4"), ...neighbours(dev, "-6")].map((n) => ({
    ip: n.dst,
    mac: n.lladdr?.toLowerCase(),
    states: n.state ?? [],
  }));
}

export function listNeighbours(dev: string): Neighbour[] {
  return neighbours(dev, "-4").map((n) => ({
    ip: parseIp(n.dst),
    mac: n.lladdr,
    state: n.state ?? [],
  }));
}

export function listNeighbours6(dev: string): Neighbour<Ip6>[] {
  return neighbours(dev, "-6").map((n) => ({
    ip: parseIp6(n.dst),
    mac: n.lladdr,
    state: n.state ?? [],
  }));
}

export function listFdb(bridge: string): FdbEntry[] {
  const out = JSON.parse(run(["bridge", "-j", "fdb", "show", "br", bridge])) as {
    mac: string;
    ifname: string;
    master?: string;
    state?: string;
    flags?: string[];
  }[];
  return out.map((f) => ({
    mac: f.mac,
    port: f.ifname,
    master: f.master,
    state: f.state,
    flags: f.flags ?? [],
  }));
}
