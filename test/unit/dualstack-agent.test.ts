// The agent's dual-stack choices that need no kernel: which PublicIPv6 a
// node announces (or why it cannot run the network), what its vxlan lease
// says, when a warm restart must turn cold, and IPv6 peers in /metrics.
import assert from "node:assert/strict";
import { Registry } from "prom-client";
import { VxlanBackend } from "../../agent/backend/vxlan";
import { type BackendConfig } from "../../agent/control/config";
import { encodeLeaseAttrs } from "../../agent/control/lease";
import { warmMismatch, type RestartState } from "../../agent/control/restart-state";
import { ConfigError, OverlayError } from "../../agent/errors";
import { createLogger } from "../../agent/log";
import { parseIp } from "../../agent/net/ip";
import { parseIp6 } from "../../agent/net/ip6";
import { choosePublicIpv6 } from "../../agent/net/link";
import { AgentMetrics, PeerRanking } from "../../metrics/metrics";

const addrs = [
  { ifname: "eth0", ip: parseIp6("fd31::2") },
  { ifname: "eth0", ip: parseIp6("2001:db8::2") },
  { ifname: "eth1", ip: parseIp6("fd32::2") },
];
const KEY = "/coreos.com/network/config";

describe("unit: dual-stack node choices", function () {
  it("announces the underlay's first global IPv6 address, or --public-ipv6 if it is this node's", function () {
    assert.equal(
      choosePublicIpv6("eth0", undefined, KEY, () => addrs),
      parseIp6("fd31::2"),
    );
    assert.equal(
      choosePublicIpv6("eth1", undefined, KEY, () => addrs),
      parseIp6("fd32::2"),
    );
    // another interface's address is the node's too (a loopback-announced address)
    assert.equal(
      choosePublicIpv6("eth0", "fd32::2", KEY, () => addrs),
      parseIp6("fd32::2"),
    );
  });

  it("refuses an underlay without IPv6 and a --public-ipv6 that is not the node's, naming EnableIPv6", function () {
    assert.throws(
      () => choosePublicIpv6("eth2", undefined, KEY, () => addrs),
      (e: unknown) =>
        e instanceof ConfigError &&
        e.field === "EnableIPv6" &&
        /interface eth2 has no global IPv6 address/.test(e.message) &&
        e.message.startsWith(`${KEY}: EnableIPv6:`),
    );
    assert.throws(
      () => choosePublicIpv6("eth0", "fd31::99", KEY, () => addrs),
      /EnableIPv6: --public-ipv6 fd31::99 is not a global IPv6 address of this node \(it has fd31::2, 2001:db8::2, fd32::2\)/,
    );
    assert.throws(
      () => choosePublicIpv6("eth0", "10.0.0.1", KEY, () => addrs),
      (e: unknown) =>
        e instanceof OverlayError && /"10.0.0.1" is not an IPv6 address/.test(String(e)),
    );
  });

  it("writes flannel's dual-stack vxlan lease: BackendV6Data with the same VNI and the device's MAC", function () {
    const b = new VxlanBackend({ type: "vxlan", vni: 4, port: 8472 } as BackendConfig, {
      log: createLogger("error", () => {}),
    });
    const v6 = { publicIp: parseIp6("fd31::2"), vtepMac: "0e:00:00:00:00:02" };
    assert.equal(
      encodeLeaseAttrs(b.leaseAttrs(parseIp("172.31.0.2"), "0e:00:00:00:00:02", v6)),
      '{"PublicIP":"172.31.0.2","PublicIPv6":"fd31::2","BackendType":"vxlan",' +
        '"BackendData":{"VNI":4,"VtepMAC":"0e:00:00:00:00:02"},' +
        '"BackendV6Data":{"VNI":4,"VtepMAC":"0e:00:00:00:00:02"}}',
    );
    assert.equal(
      encodeLeaseAttrs(b.leaseAttrs(parseIp("172.31.0.2"), "0e:00:00:00:00:02")),
      '{"PublicIP":"172.31.0.2","PublicIPv6":null,"BackendType":"vxlan",' +
        '"BackendData":{"VNI":4,"VtepMAC":"0e:00:00:00:00:02"}}',
    );
  });

  it("starts cold when the PublicIPv6 changed, or IPv6 was switched on or off", function () {
    const saved: RestartState = {
      version: 1,
      prefix: "/coreos.com/network",
      publicIp: "172.31.0.2",
      publicIpv6: "fd31::2",
      subnet: "10.5.2.0/24",
      subnet6: "fc00:5:0:2::/64",
      vtepMac: "0e:00:00:00:00:02",
      backend: "vxlan",
      abi: "x",
      mapId: 1,
      resumeRevision: "9",
    };
    const now = {
      prefix: saved.prefix,
      publicIp: saved.publicIp,
      vtepMac: saved.vtepMac,
      backend: "vxlan",
      abi: "x",
    };
    assert.equal(warmMismatch(saved, { ...now, publicIpv6: "fd31::2" }), undefined);
    assert.equal(
      warmMismatch(saved, { ...now, publicIpv6: "fd31::3" }),
      "publicIpv6 was fd31::2, now fd31::3",
    );
    assert.equal(warmMismatch(saved, now), "publicIpv6 was fd31::2, now none");
    const v4only: RestartState = { ...saved };
    delete v4only.publicIpv6;
    assert.equal(
      warmMismatch(v4only, { ...now, publicIpv6: "fd31::2" }),
      "publicIpv6 was none, now fd31::2",
    );
  });

  it("ranks IPv6 peers with IPv4 ones and labels them by PublicIPv6", async function () {
    const r = new PeerRanking(2);
    r.add(parseIp("172.31.0.3"), [1, 100, 1, 100]);
    r.add(parseIp6("fd31::3"), [1, 900, 1, 900]);
    r.add(parseIp6("fd31::4"), [1, 10, 1, 10]);
    const res = r.result();
    assert.deepEqual(
      res.top.map(([ip]) => ip),
      [parseIp6("fd31::3"), parseIp("172.31.0.3")],
    );
    assert.deepEqual(res.other, [1, 10, 1, 10]);
    const reg = new Registry();
    new AgentMetrics(reg, { version: "t", commit: "c", abi: "a", libbpf: "1" }).setSource({
      stats: () => ({ traffic: new Map(), drops: [], suppressed: { drop: 0n, trace: 0n } }),
      peers: () => new Map(),
      eachPeer: (fn) => fn(parseIp("172.31.0.3"), Float64Array.of(1, 100, 1, 100)),
      eachPeer6: (fn) => fn(parseIp6("fd31::3"), Float64Array.of(2, 900, 3, 700)),
      entries: () => 4,
    });
    const text = await reg.metrics();
    assert.match(text, /overlay_peer_tx_bytes_total\{peer="fd31::3"\} 900/);
    assert.match(text, /overlay_peer_rx_packets_total\{peer="fd31::3"\} 3/);
    assert.match(text, /overlay_peer_tx_bytes_total\{peer="172.31.0.3"\} 100/);
  });
});
