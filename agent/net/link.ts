// Interface set-up the way flannel does it, through iproute2 in the current
// network namespace: pick the underlay, create the overlay device, MTU,
// addresses, the cluster-network route, sysctls.
import { readFileSync, writeFileSync } from "node:fs";
import { ConfigError, OverlayError } from "../errors";
import { Cidr, formatIp, parseIp, type Ip4 } from "./ip";
import { Cidr6, formatIp6, isIp6, parseIp6, type Ip6 } from "./ip6";
import { run, tryRun } from "./run";

export interface LinkInfo {
  name: string;
  ifindex: number;
  mtu: number;
  mac: string;
  kind?: string;
  up: boolean;
  /** ARP off (IFF_NOARP), as the overlay device has it. */
  noarp: boolean;
  /** For a vxlan device: collect_md ("external") mode and its UDP port. */
  vxlan?: { external: boolean; port?: number; gbp: boolean };
}

interface IpJsonLink {
  ifname: string;
  ifindex: number;
  mtu: number;
  address?: string;
  flags?: string[];
  linkinfo?: {
    info_kind?: string;
    info_data?: { external?: boolean; port?: number; gbp?: boolean };
  };
  addr_info?: { family: string; local: string; prefixlen: number; scope?: string }[];
}

/** What `ip -d -j link show` says of one link, as LinkInfo. */
function toLinkInfo(l: IpJsonLink): LinkInfo {
  return {
    name: l.ifname,
    ifindex: l.ifindex,
    mtu: l.mtu,
    mac: l.address ?? "00:00:00:00:00:00",
    kind: l.linkinfo?.info_kind,
    up: (l.flags ?? []).includes("UP"),
    noarp: (l.flags ?? []).includes("NOARP"),
    ...(l.linkinfo?.info_kind === "vxlan"
      ? {
          vxlan: {
            external: l.linkinfo.info_data?.external === true,
            port: l.linkinfo.info_data?.port,
            gbp: l.linkinfo.info_data?.gbp === true,
          },
        }
      : {}),
  };
}

/**
 * Every link of the node by name, from one `ip` run: start-up asks about
 * the underlay, flannel's devices and the overlay device at once (each
 * `ip` run is 3-5 ms of a start that should take less than 0.5 s). A
 * snapshot: pass it only to reads made before anything changes the links.
 */
export type LinkTable = ReadonlyMap<string, LinkInfo>;

export function linkTable(): LinkTable {
  const links = JSON.parse(run(["ip", "-d", "-j", "link", "show"])) as IpJsonLink[];
  return new Map(links.map((l) => [l.ifname, toLinkInfo(l)]));
}

/** One link, from `links` when given (a linkTable() snapshot), else from `ip`. */
export function linkInfo(name: string, links?: LinkTable): LinkInfo | undefined {
  if (links) return links.get(name);
  const out = tryRun(["ip", "-d", "-j", "link", "show", "dev", name]);
  if (!out) return undefined;
  const l = (JSON.parse(out) as IpJsonLink[])[0];
  return l ? toLinkInfo(l) : undefined;
}

export function mustLink(name: string, links?: LinkTable): LinkInfo {
  const l = linkInfo(name, links);
  if (!l) throw new OverlayError(`interface ${name}: not found`);
  return l;
}

export function ipv4Addresses(): { ifname: string; ip: Ip4; prefixlen: number }[] {
  const links = JSON.parse(run(["ip", "-j", "-4", "addr", "show"])) as IpJsonLink[];
  return links.flatMap((l) =>
    (l.addr_info ?? [])
      .filter((a) => a.family === "inet")
      .map((a) => ({ ifname: l.ifname, ip: parseIp(a.local), prefixlen: a.prefixlen })),
  );
}

/** The node's global IPv6 addresses (no link-local, no loopback). */
export function ipv6Addresses(): { ifname: string; ip: Ip6; prefixlen: number }[] {
  const links = JSON.parse(
    run(["ip", "-j", "-6", "addr", "show", "scope", "global"]),
  ) as IpJsonLink[];
  return links.flatMap((l) =>
    (l.addr_info ?? [])
      .filter((a) => a.family === "inet6" && (a.scope ?? "global") === "global")
      .map((a) => ({ ifname: l.ifname, ip: parseIp6(a.local), prefixlen: a.prefixlen })),
  );
}

/**
 * The PublicIPv6 of a dual-stack network, as flannel picks it: --public-ipv6,
 * which must be one of this node's addresses (the outer source of every
 * IPv6 VXLAN frame, and what peers admit), else the underlay's first global
 * IPv6 address. A node without one cannot run the network: a ConfigError
 * naming EnableIPv6, waited out like a bad config, nothing touched.
 */
export function choosePublicIpv6(
  iface: string,
  publicIpv6: string | undefined,
  where: string,
  addresses: () => { ifname: string; ip: Ip6 }[] = ipv6Addresses,
): Ip6 {
  const addrs = addresses();
  if (publicIpv6 !== undefined) {
    if (!isIp6(publicIpv6)) {
      throw new OverlayError(`--public-ipv6 "${publicIpv6}" is not an IPv6 address`);
    }
    const ip = parseIp6(publicIpv6, "--public-ipv6");
    if (!addrs.some((a) => a.ip === ip)) {
      throw new ConfigError(
        "EnableIPv6",
        `--public-ipv6 ${formatIp6(ip)} is not a global IPv6 address of this node ` +
          `(it has ${addrs.map((a) => formatIp6(a.ip)).join(", ") || "none"}): ` +
          "peers would send to an address nobody here answers",
        where,
      );
    }
    return ip;
  }
  const own = addrs.find((a) => a.ifname === iface);
  if (!own) {
    throw new ConfigError(
      "EnableIPv6",
      `the network is dual-stack but interface ${iface} has no global IPv6 address: ` +
        "give it one, name another with --iface, set --public-ipv6, or set EnableIPv6 to false",
      where,
    );
  }
  return own.ip;
}

/** The interface of the IPv4 default route, as flannel picks it. */
export function defaultRouteInterface(): string | undefined {
  const routes = JSON.parse(run(["ip", "-j", "-4", "route", "show", "default"])) as {
    dev?: string;
  }[];
  return routes.find((r) => r.dev)?.dev;
}

export interface UnderlayChoice {
  iface: string;
  publicIp: Ip4;
  link: LinkInfo;
}

/**
 * flannel's rules: --iface (a name or an address), else the first interface
 * matching --iface-regex, else the default route's; the public IP is
 * --public-ip or the interface's first IPv4 address.
 */
export function chooseUnderlay(opts: {
  iface?: string;
  ifaceRegex?: string;
  publicIp?: string;
  /** A linkTable() snapshot to read the chosen interface from. */
  links?: LinkTable;
}): UnderlayChoice {
  const addrs = ipv4Addresses().filter((a) => a.ifname !== "lo");
  let iface: string | undefined;
  if (opts.iface) {
    const byAddr = /^\d+\.\d+\.\d+\.\d+$/.test(opts.iface)
      ? addrs.find((a) => a.ip === parseIp(opts.iface as string))
      : undefined;
    iface = byAddr ? byAddr.ifname : opts.iface;
  } else if (opts.ifaceRegex) {
    const re = new RegExp(opts.ifaceRegex);
    iface = addrs.find((a) => re.test(a.ifname) || re.test(formatIp(a.ip)))?.ifname;
    if (!iface) throw new OverlayError(`--iface-regex ${opts.ifaceRegex}: no interface matches`);
  } else {
    iface = defaultRouteInterface();
    if (!iface) {
      throw new OverlayError("no default route: name the underlay with --iface or --iface-regex");
    }
  }
  const link = mustLink(iface, opts.links);
  let publicIp: Ip4 | undefined;
  if (opts.publicIp) publicIp = parseIp(opts.publicIp, "--public-ip");
  else publicIp = addrs.find((a) => a.ifname === iface)?.ip;
  if (publicIp === undefined) {
    throw new OverlayError(`interface ${iface}: has no IPv4 address (set --public-ip)`);
  }
  return { iface, publicIp, link };
}

export interface OverlayDevice extends LinkInfo {
  /**
   * A collect_md ("external") kernel VXLAN device bound to the VXLAN port:
   * its UDP socket lets GRO aggregate VXLAN frames by inner flow, and its
   * receive path decapsulates for the stack (ovl_decap_dev checks each).
   * False for the fallback dummy/ifb device of a kernel without vxlan.
   */
  kernelDecap: boolean;
}

/**
 * The overlay device that the cluster-network route points at: a
 * collect_md VXLAN device on `port` where the kernel has vxlan (probed by
 * creating it), else a `dummy`, else an `ifb` (both keep GSO). An existing
 * device of ours of another kind or port (an older overlayd, a changed
 * Port) is replaced by one with the same MAC, so the VtepMAC in the lease
 * stays valid; the caller re-adds the address and route. The device is
 * created down, and `up` is left to the caller, so that ovl_decap_dev is
 * attached before its socket takes a packet.
 */
export interface OverlayDeviceOptions {
  /** The VXLAN UDP port; undefined for a backend without encapsulation
   * (host-gw), which gets a dummy device. */
  port?: number;
  /** VXLAN Group Based Policy on the device's socket (Backend.GBP). */
  gbp?: boolean;
  /** The MAC a new device gets (an existing one keeps its own): taking over
   * from flannel keeps flannel.1's, so the lease's VtepMAC stays. */
  mac?: string;
}

export function ensureOverlayDevice(
  name: string,
  mtu: number,
  o: OverlayDeviceOptions,
  links?: LinkTable,
): OverlayDevice {
  let l = linkInfo(name, links);
  if (l && l.kind !== "dummy" && l.kind !== "ifb" && l.kind !== "vxlan") {
    throw new OverlayError(
      `interface ${name}: exists as ${l.kind ?? "unknown kind"}, not an overlay device`,
    );
  }
  const port = o.port;
  const gbp = o.gbp === true;
  if (port !== undefined && l?.vxlan?.external && l.vxlan.port === port && l.vxlan.gbp === gbp) {
    // As it should be (every restart, and node-setup's second look): no
    // more `ip` runs.
    if (l.mtu === mtu && l.noarp) return { ...l, kernelDecap: true };
    run(["ip", "link", "set", "dev", name, "arp", "off", "mtu", String(mtu)]);
    return { ...mustLink(name), kernelDecap: true };
  }
  const keepMac = l?.mac ?? o.mac;
  const tmp = `${name.slice(0, 11)}.new`;
  tryRun(["ip", "link", "del", "dev", tmp]);
  const vxlan = [
    "ip",
    "link",
    "add",
    tmp,
    ...(keepMac ? ["address", keepMac] : []),
    "type",
    "vxlan",
    "external",
    "dstport",
    String(port),
    "nolearning",
    ...(gbp ? ["gbp"] : []),
  ];
  // Without the vxlan module the old device, or a dummy, keeps the node
  // forwarding without kernel decap. (A port in use only shows when the
  // device goes up: node-setup names it then.)
  if (port !== undefined && tryRun(vxlan) !== undefined) {
    if (l) run(["ip", "link", "del", "dev", name]);
    run(["ip", "link", "set", "dev", tmp, "name", name]);
    run(["ip", "link", "set", "dev", name, "arp", "off", "mtu", String(mtu)]);
    return { ...mustLink(name), kernelDecap: true };
  }
  if (port !== undefined && l?.kind === "vxlan") {
    throw new OverlayError(
      `interface ${name}: a vxlan device that is not collect_md on port ${port}, and a new one cannot be made`,
    );
  }
  if (l?.kind === "vxlan") {
    // host-gw after vxlan: the VXLAN socket goes, the MAC stays.
    run(["ip", "link", "del", "dev", name]);
    l = undefined;
    run(["ip", "link", "add", name, ...(keepMac ? ["address", keepMac] : []), "type", "dummy"]);
  }
  if (!l && !linkInfo(name) && tryRun(["ip", "link", "add", name, "type", "dummy"]) === undefined) {
    run(["ip", "link", "add", name, "type", "ifb"]);
  }
  run(["ip", "link", "set", "dev", name, "arp", "off", "mtu", String(mtu), "up"]);
  l = mustLink(name);
  return { ...l, kernelDecap: false };
}

/** Brings a link up (the overlay device, once its programs are attached). */
export function linkUp(name: string): void {
  run(["ip", "link", "set", "dev", name, "up"]);
}

/** Gives dev exactly this /32 address; other addresses inside the network go. */
export function setOverlayAddress(dev: string, addr: Ip4, network: Cidr): void {
  const have = ipv4Addresses().filter((a) => a.ifname === dev);
  for (const a of have) {
    if (a.ip !== addr && network.contains(a.ip)) {
      run(["ip", "addr", "del", `${formatIp(a.ip)}/${a.prefixlen}`, "dev", dev]);
    }
  }
  if (!have.some((a) => a.ip === addr)) {
    run(["ip", "addr", "add", `${formatIp(addr)}/32`, "dev", dev]);
  }
}

/** The IPv6 twin of setOverlayAddress: exactly this /128 inside network6
 * (nodad: the device is NOARP, nothing could answer a probe). */
export function setOverlayAddress6(dev: string, addr: Ip6, network: Cidr6): void {
  const have = ipv6Addresses().filter((a) => a.ifname === dev);
  for (const a of have) {
    if (a.ip !== addr && network.contains(a.ip)) {
      run(["ip", "-6", "addr", "del", `${formatIp6(a.ip)}/${a.prefixlen}`, "dev", dev]);
    }
  }
  if (!have.some((a) => a.ip === addr)) {
    run(["ip", "-6", "addr", "add", `${formatIp6(addr)}/128`, "dev", dev, "nodad"]);
  }
}

/** `ip -6 route replace NET dev DEV [src SRC]`: idempotent. */
export function replaceRoute6(net: Cidr6, dev: string, src?: Ip6): void {
  const argv = ["ip", "-6", "route", "replace", net.toString(), "dev", dev];
  if (src !== undefined) argv.push("src", formatIp6(src));
  run(argv);
}

/** `ip route replace NET dev DEV src SRC`: idempotent. */
export function replaceRoute(net: Cidr, dev: string, src?: Ip4): void {
  const argv = ["ip", "route", "replace", net.toString(), "dev", dev];
  if (src !== undefined) argv.push("src", formatIp(src));
  run(argv);
}

export function deleteLink(name: string): void {
  tryRun(["ip", "link", "del", "dev", name]);
}

/** Segments, not a dotted string: interface names may contain dots. */
export function setSysctl(path: string[], value: string): void {
  const file = `/proc/sys/${path.join("/")}`;
  if (readFileSync(file, "utf8").trim() === value) return;
  try {
    writeFileSync(file, value);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    // Unprivileged containers get /proc/sys read-only: the node must
    // provide the value (Kubernetes nodes already forward).
    const hint =
      err.code === "EROFS" || err.code === "EACCES" || err.code === "EPERM"
        ? `; /proc/sys is not writable here: set it on the node (sysctl -w ${path.join(".")}=${value}) or run the container privileged`
        : "";
    throw new OverlayError(
      `cannot set ${path.join(".")}=${value}: ${err.code ?? err.message}${hint}`,
    );
  }
}
