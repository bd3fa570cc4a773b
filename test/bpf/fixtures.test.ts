// BPF_PROG_RUN fixtures: input frame -> expected verdict, output bytes and
// counters, for encap and decap (TC and XDP). The programs are loaded with
// the agent's own loader, their maps pinned on a bpffs this run mounts.
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { join } from "node:path";
import { Datapath } from "../../agent/bpf/datapath";
import { EndpointMap } from "../../agent/bpf/endpoint-map";
import { libbpf } from "../../agent/bpf/libbpf";
import { BpfMap } from "../../agent/bpf/map";
import { StatsReader } from "../../agent/bpf/stats";
import { SubnetHostMap } from "../../agent/bpf/subnet-map";
import { F_DIRECT, F_LOCAL, encodeIp } from "../../agent/bpf/codec";
import { Cidr, parseIp } from "../../agent/net/ip";
import {
  csum16,
  eth,
  ETH_P_ARP,
  ETH_P_IP,
  ETH_P_IPV6,
  gsoCtx,
  icmpEcho,
  ipv4,
  mac,
  udp,
  vxlanFrame,
} from "../lib/packets";
import { requireEnv } from "../lib/require";
import { sh } from "../lib/sh";

const TC_ACT_OK = 0;
const TC_ACT_SHOT = 2;
const TC_ACT_REDIRECT = 7;
const XDP_DROP = 1;
const XDP_PASS = 2;

const LOCAL_IP = "172.31.0.1";
const PEER_IP = "172.31.0.2";
const LOCAL_SUBNET = "10.5.1.0/24";
const PEER_SUBNET = "10.5.2.0/24";
const VTEP_MAC = "0e:00:00:00:01:01";
const PEER_VTEP = "0e:00:00:00:02:02";
const UNDERLAY_MAC = "02:00:00:00:0f:01";

describe("bpf: BPF_PROG_RUN fixtures", function () {
  let dir = "";
  let dp: Datapath;
  let subnets: SubnetHostMap;
  let endpoints: EndpointMap;
  let stats: StatsReader;

  before(function () {
    requireEnv(this, { root: true, tools: ["bpftool", "mount"] });
    dir = mkdtempSync("/run/overlayd-bpftest-");
    sh(["mount", "-t", "bpf", "bpf", dir]);
    dp = new Datapath({
      pinPath: join(dir, "pins"),
      objDir: join(__dirname, "../../../build/bpf"),
      vni: 1,
      port: 8472,
      localIp: parseIp(LOCAL_IP),
      // ifindex 1 is loopback in any namespace: MTU checks pass, and the
      // redirect helpers only record their target under BPF_PROG_RUN.
      underlay: { name: "lo", ifindex: 1, mac: UNDERLAY_MAC },
      overlay: { name: "lo", ifindex: 1, mac: VTEP_MAC },
      decap: "tc",
      kernelDecap: false,
    });
    dp.load();
    subnets = SubnetHostMap.openPinned(join(dir, "pins"));
    endpoints = EndpointMap.openPinned(join(dir, "pins"));
    stats = StatsReader.openPinned(join(dir, "pins"));
    subnets.upsert(Cidr.parse(LOCAL_SUBNET), {
      remoteIp: parseIp(LOCAL_IP),
      vtepMac: VTEP_MAC,
      flags: F_LOCAL,
    });
    subnets.upsert(Cidr.parse(PEER_SUBNET), {
      remoteIp: parseIp(PEER_IP),
      vtepMac: PEER_VTEP,
      flags: 0,
    });
  });

  after(function () {
    subnets?.close();
    endpoints?.close();
    stats?.close();
    dp?.close();
    if (dir) {
      sh(["umount", dir], { allowFail: true });
      rmSync(dir, { recursive: true, force: true });
    }
  });

  function drops(dir: "tx" | "rx", reason: string): bigint {
    const d = stats.read().drops.find((x) => x.direction === dir && x.reason === reason);
    assert.ok(d, `no drop reason ${dir}/${reason}`);
    return d.packets;
  }

  function run(prog: Parameters<Datapath["programFd"]>[0], frame: Buffer) {
    return libbpf.testRun(dp.programFd(prog), frame, null, prog);
  }

  function podFrame(dst: string, ttl = 64, proto = 1): Buffer {
    const payload = proto === 17 ? udp(1234, 5678, Buffer.alloc(64, 1)) : icmpEcho(1, 1);
    return eth(
      "02:00:00:00:00:aa",
      "02:00:00:00:00:bb",
      ETH_P_IP,
      ipv4({ src: "10.5.1.2", dst, proto, ttl }, payload),
    );
  }

  describe("encap (ovl_encap_pod / ovl_encap_dev)", function () {
    it("wraps a pod packet for a remote subnet in flannel's VXLAN format", function () {
      const inFrame = podFrame("10.5.2.7", 64, 17);
      const r = run("ovl_encap_pod", inFrame);
      assert.equal(r.retval, TC_ACT_REDIRECT);
      const out = r.data;
      assert.equal(out.length, inFrame.length + 50);
      // outer Ethernet kept for the kernel's neighbour code, type IPv4
      assert.equal(out.readUInt16BE(12), ETH_P_IP);
      // outer IPv4
      const ip = out.subarray(14, 34);
      assert.equal(ip[0], 0x45);
      assert.equal(ip.readUInt16BE(2), inFrame.length - 14 + 50, "outer tot_len");
      assert.equal(ip.readUInt16BE(6), 0x4000, "DF set, no fragment offset");
      assert.equal(ip[8], 64, "outer TTL");
      assert.equal(ip[9], 17, "outer protocol UDP");
      assert.equal(ip.subarray(12, 16).join("."), LOCAL_IP);
      assert.equal(ip.subarray(16, 20).join("."), PEER_IP);
      assert.equal(csum16(ip), 0, "outer header checksum valid");
      // UDP
      const u = out.subarray(34, 42);
      assert.ok(u.readUInt16BE(0) >= 49152, "source port in the dynamic range");
      assert.equal(u.readUInt16BE(2), 8472);
      assert.equal(u.readUInt16BE(4), inFrame.length - 14 + 30);
      assert.equal(u.readUInt16BE(6), 0, "zero UDP checksum over IPv4");
      // VXLAN: I flag, VNI 1
      assert.deepEqual([...out.subarray(42, 50)], [8, 0, 0, 0, 0, 0, 1, 0]);
      // inner Ethernet: peer VTEP MAC <- our VTEP MAC
      assert.deepEqual(out.subarray(50, 56), mac(PEER_VTEP));
      assert.deepEqual(out.subarray(56, 62), mac(VTEP_MAC));
      assert.equal(out.readUInt16BE(62), ETH_P_IP);
      // inner IPv4: TTL decremented (we skip ip_forward), checksum fixed
      const inner = out.subarray(64);
      const expected = Buffer.from(inFrame.subarray(14));
      expected[8] = 63;
      expected.writeUInt16BE(0, 10);
      expected.writeUInt16BE(csum16(expected.subarray(0, 20)), 10);
      assert.deepEqual(inner, expected);
    });

    it("spreads flows over outer source ports (flow hash)", function () {
      const ports = new Set<number>();
      for (let i = 0; i < 32; i++) {
        const f = eth(
          "02:00:00:00:00:aa",
          "02:00:00:00:00:bb",
          ETH_P_IP,
          ipv4({ src: "10.5.1.2", dst: "10.5.2.7", proto: 17 }, udp(1000 + i, 53, Buffer.alloc(8))),
        );
        ports.add(run("ovl_encap_pod", f).data.readUInt16BE(34));
      }
      assert.ok(ports.size > 8, `only ${ports.size} distinct source ports for 32 flows`);
    });

    it("leaves local-subnet, off-cluster, TTL-expiring and non-IPv4 frames to the stack", function () {
      const cases: [string, Buffer][] = [
        ["local subnet", podFrame("10.5.1.9")],
        ["outside the cluster", podFrame("192.0.2.1")],
        ["TTL 1", podFrame("10.5.2.7", 1)],
        ["ARP", eth("ff:ff:ff:ff:ff:ff", "02:00:00:00:00:bb", ETH_P_ARP, Buffer.alloc(28))],
        ["IPv6", eth("02:00:00:00:00:aa", "02:00:00:00:00:bb", ETH_P_IPV6, Buffer.alloc(60))],
        ["runt", Buffer.alloc(20)],
      ];
      for (const [what, f] of cases) {
        const r = run("ovl_encap_pod", f);
        assert.equal(r.retval, TC_ACT_OK, what);
        assert.deepEqual(r.data, f, `${what}: unchanged`);
      }
    });

    it("on the overlay device, drops and counts a destination no lease covers", function () {
      const before = drops("tx", "no_peer");
      const r = run("ovl_encap_dev", podFrame("10.9.9.9"));
      assert.equal(r.retval, TC_ACT_SHOT);
      assert.equal(drops("tx", "no_peer"), before + 1n);
    });

    it("on the overlay device, does not decrement the TTL (the stack already did)", function () {
      const f = podFrame("10.5.2.7", 30);
      const r = run("ovl_encap_dev", f);
      assert.equal(r.retval, TC_ACT_REDIRECT);
      assert.equal(r.data[64 + 8], 30);
    });

    it("counts sent packets per direction and per peer, making the peer's counters with its first packet", function () {
      const peer = parseIp(PEER_IP);
      const m = BpfMap.openPinned(join(dir, "pins"), "ovl_peer_stats");
      m.delete(encodeIp(peer));
      m.close();
      assert.equal(subnets.peerCounters().get(peer), undefined, "no counters before traffic");
      const tx = stats.read().traffic.get("tx");
      const f = podFrame("10.5.2.7");
      run("ovl_encap_pod", f);
      const after = subnets.peerCounters().get(peer);
      assert.ok(after && tx);
      assert.equal(after.txPackets, 1n);
      assert.equal(after.txBytes, BigInt(f.length + 50));
      run("ovl_encap_pod", f);
      assert.equal(subnets.peerCounters().get(peer)?.txPackets, 2n, "then adds to them");
      assert.equal(stats.read().traffic.get("tx")?.packets, tx.packets + 2n);
    });

    it("stops encapsulating for a subnet once its entry is removed", function () {
      subnets.delete(Cidr.parse(PEER_SUBNET));
      try {
        assert.equal(run("ovl_encap_pod", podFrame("10.5.2.7")).retval, TC_ACT_OK);
        // and the peer is no longer admitted by decap
        assert.equal(
          run(
            "ovl_decap_tc",
            vxlanFrame({
              outerSrc: PEER_IP,
              outerDst: LOCAL_IP,
              innerSrc: "10.5.2.7",
              innerDst: "10.5.1.2",
            }),
          ).retval,
          TC_ACT_SHOT,
        );
      } finally {
        subnets.upsert(Cidr.parse(PEER_SUBNET), {
          remoteIp: parseIp(PEER_IP),
          vtepMac: PEER_VTEP,
          flags: 0,
        });
      }
      assert.equal(run("ovl_encap_pod", podFrame("10.5.2.7")).retval, TC_ACT_REDIRECT);
    });
  });

  describe("decap (ovl_decap_tc)", function () {
    const good = {
      outerSrc: PEER_IP,
      outerDst: LOCAL_IP,
      innerSrc: "10.5.2.7",
      innerDst: "10.5.1.2",
    };

    it("strips outer headers and hands a registered pod its packet (TTL - 1)", function () {
      endpoints.upsert(parseIp("10.5.1.2"), {
        ifindex: 1,
        podMac: "02:00:00:00:01:02",
        hostMac: "02:00:00:00:01:01",
      });
      try {
        const f = vxlanFrame(good);
        const r = run("ovl_decap_tc", f);
        assert.equal(r.retval, TC_ACT_REDIRECT);
        assert.equal(r.data.length, f.length - 50);
        assert.deepEqual(r.data.subarray(0, 6), mac("02:00:00:00:01:02"));
        assert.deepEqual(r.data.subarray(6, 12), mac("02:00:00:00:01:01"));
        assert.equal(r.data.readUInt16BE(12), ETH_P_IP);
        const inner = r.data.subarray(14);
        const sent = Buffer.from(f.subarray(64));
        assert.equal(inner[8], (sent[8] as number) - 1, "TTL decremented");
        assert.equal(csum16(inner.subarray(0, 20)), 0, "inner checksum valid");
        assert.deepEqual(inner.subarray(20), sent.subarray(20), "payload untouched");
      } finally {
        endpoints.delete(parseIp("10.5.1.2"));
      }
    });

    it("without an endpoint, delivers through the stack with our VTEP MAC as destination", function () {
      const f = vxlanFrame(good);
      const r = run("ovl_decap_tc", f);
      assert.equal(r.retval, TC_ACT_REDIRECT);
      assert.equal(r.data.length, f.length - 50);
      assert.deepEqual(r.data.subarray(0, 6), mac(VTEP_MAC));
      assert.deepEqual(r.data.subarray(14), f.subarray(64), "inner IPv4 untouched");
    });

    it("does not depend on the inner destination MAC (kernel vxlan peers set their own)", function () {
      const r = run("ovl_decap_tc", vxlanFrame({ ...good, innerMac: "de:ad:be:ef:00:01" }));
      assert.equal(r.retval, TC_ACT_REDIRECT);
    });

    it("counts received packets per direction and per peer", function () {
      const peer = parseIp(PEER_IP);
      const before = subnets.peerCounters().get(peer) ?? { rxPackets: 0n, rxBytes: 0n };
      const f = vxlanFrame(good);
      run("ovl_decap_tc", f);
      const after = subnets.peerCounters().get(peer);
      assert.ok(after);
      assert.equal(after.rxPackets, before.rxPackets + 1n);
      assert.equal(after.rxBytes, before.rxBytes + BigInt(f.length));
    });

    const passCases: [string, () => Buffer][] = [
      ["wrong UDP port", () => vxlanFrame({ ...good, port: 4789 })],
      ["another destination address", () => vxlanFrame({ ...good, outerDst: "172.31.0.9" })],
      [
        "TCP to our address",
        () =>
          eth(
            "02:aa:aa:aa:aa:01",
            "02:bb:bb:bb:bb:02",
            ETH_P_IP,
            ipv4({ src: PEER_IP, dst: LOCAL_IP, proto: 6 }, Buffer.alloc(40)),
          ),
      ],
      ["non-first fragment", () => vxlanFrame({ ...good, outer: { flags: 0, fragOffset: 100 } })],
      ["ARP", () => eth("ff:ff:ff:ff:ff:ff", "02:bb:bb:bb:bb:02", ETH_P_ARP, Buffer.alloc(28))],
      ["IPv6", () => eth("02:aa:aa:aa:aa:01", "02:bb:bb:bb:bb:02", ETH_P_IPV6, Buffer.alloc(80))],
    ];
    for (const [what, make] of passCases) {
      it(`passes what is not ours untouched: ${what}`, function () {
        const f = make();
        const before = stats.read().drops.reduce((a, d) => a + d.packets, 0n);
        const r = run("ovl_decap_tc", f);
        assert.equal(r.retval, TC_ACT_OK);
        assert.deepEqual(r.data, f);
        assert.equal(
          stats.read().drops.reduce((a, d) => a + d.packets, 0n),
          before,
          "no drop counted",
        );
      });
    }

    const innerArp = eth(VTEP_MAC, PEER_VTEP, ETH_P_ARP, Buffer.alloc(28));
    const dropCases: [string, string, () => Buffer][] = [
      ["wrong VNI", "wrong_vni", () => vxlanFrame({ ...good, vni: 42 })],
      ["VXLAN I flag missing", "bad_vxlan_flags", () => vxlanFrame({ ...good, vxlanFlags: 0x00 })],
      [
        "VXLAN reserved flags set",
        "bad_vxlan_flags",
        () => vxlanFrame({ ...good, vxlanFlags: 0x0c }),
      ],
      [
        "unknown outer source",
        "unknown_source",
        () => vxlanFrame({ ...good, outerSrc: "172.31.0.99" }),
      ],
      [
        "inner source outside the sender's lease",
        "spoofed_source",
        () => vxlanFrame({ ...good, innerSrc: "10.5.3.7" }),
      ],
      [
        "inner destination outside our lease",
        "not_local",
        () => vxlanFrame({ ...good, innerDst: "10.5.2.9" }),
      ],
      [
        "inner frame is ARP",
        "inner_not_ipv4",
        () => vxlanFrame({ ...good, inner: Buffer.concat([innerArp, Buffer.alloc(20)]) }),
      ],
      [
        "outer IP options",
        "ip_options",
        () => vxlanFrame({ ...good, outer: { options: Buffer.from([1, 1, 1, 0]) } }),
      ],
      ["first fragment (MF)", "fragment", () => vxlanFrame({ ...good, outer: { flags: 0x2000 } })],
      [
        "bad outer IP checksum",
        "bad_ip_hdr",
        () => vxlanFrame({ ...good, outer: { badChecksum: true } }),
      ],
      ["truncated VXLAN header", "truncated", () => vxlanFrame(good).subarray(0, 14 + 20 + 8 + 4)],
      ["truncated inner IPv4", "truncated", () => vxlanFrame(good).subarray(0, 64 + 10)],
      [
        "outer length beyond the frame",
        "truncated",
        () => vxlanFrame({ ...good, outer: { totLen: 1400 } }),
      ],
    ];
    for (const [what, reason, make] of dropCases) {
      it(`drops and counts ${what} as ${reason}`, function () {
        const before = drops("rx", reason);
        const r = run("ovl_decap_tc", make());
        assert.equal(r.retval, TC_ACT_SHOT);
        assert.equal(drops("rx", reason), before + 1n);
      });
    }

    it("drops and counts a UDP length that disagrees with the IP length", function () {
      const f = vxlanFrame(good);
      f.writeUInt16BE(f.readUInt16BE(38) - 4, 38);
      const before = drops("rx", "bad_udp_len");
      assert.equal(run("ovl_decap_tc", f).retval, TC_ACT_SHOT);
      assert.equal(drops("rx", "bad_udp_len"), before + 1n);
    });

    it("sends an inner packet whose TTL expires to the stack, which answers time-exceeded", function () {
      endpoints.upsert(parseIp("10.5.1.2"), {
        ifindex: 1,
        podMac: "02:00:00:00:01:02",
        hostMac: "02:00:00:00:01:01",
      });
      try {
        const r = run("ovl_decap_tc", vxlanFrame({ ...good, innerTtl: 1 }));
        assert.equal(r.retval, TC_ACT_REDIRECT);
        assert.deepEqual(r.data.subarray(0, 6), mac(VTEP_MAC), "stack path, not the pod");
        assert.equal(r.data[14 + 8], 1, "TTL untouched");
      } finally {
        endpoints.delete(parseIp("10.5.1.2"));
      }
    });
  });

  describe("decap (ovl_decap_xdp)", function () {
    const good = {
      outerSrc: PEER_IP,
      outerDst: LOCAL_IP,
      innerSrc: "10.5.2.7",
      innerDst: "10.5.1.2",
    };

    it("strips to the inner frame addressed to the underlay MAC and passes it", function () {
      const f = vxlanFrame(good);
      const r = run("ovl_decap_xdp", f);
      assert.equal(r.retval, XDP_PASS);
      assert.equal(r.data.length, f.length - 50);
      assert.deepEqual(r.data.subarray(0, 6), mac(UNDERLAY_MAC));
      assert.deepEqual(r.data.subarray(12), f.subarray(62), "inner type and IPv4 untouched");
    });

    it("drops and counts a wrong VNI and an unknown source", function () {
      const vni = drops("rx", "wrong_vni");
      const src = drops("rx", "unknown_source");
      assert.equal(run("ovl_decap_xdp", vxlanFrame({ ...good, vni: 7 })).retval, XDP_DROP);
      assert.equal(
        run("ovl_decap_xdp", vxlanFrame({ ...good, outerSrc: "172.31.0.50" })).retval,
        XDP_DROP,
      );
      assert.equal(drops("rx", "wrong_vni"), vni + 1n);
      assert.equal(drops("rx", "unknown_source"), src + 1n);
    });

    it("passes non-VXLAN traffic untouched", function () {
      const f = vxlanFrame({ ...good, port: 53 });
      const r = run("ovl_decap_xdp", f);
      assert.equal(r.retval, XDP_PASS);
      assert.deepEqual(r.data, f);
    });
  });

  describe("kernel decap (overlay device is collect_md VXLAN: ovl_decap_tc + ovl_decap_dev)", function () {
    // The same maps, programs loaded with OVL_CFG_KERNEL_DECAP as a node
    // whose overlay device is the kernel's collect_md VXLAN device.
    let kd: Datapath;
    const good = {
      outerSrc: PEER_IP,
      outerDst: LOCAL_IP,
      innerSrc: "10.5.2.7",
      innerDst: "10.5.1.2",
    };
    const pod = { ifindex: 1, podMac: "02:00:00:00:01:02", hostMac: "02:00:00:00:01:01" };

    before(function () {
      kd = new Datapath({ ...dp.config, kernelDecap: true });
      kd.load();
    });
    after(function () {
      kd?.close();
      // Put the plain programs' pins back for the blocks that read pins.
      dp.close();
      dp = new Datapath(dp.config);
      dp.load();
    });

    const runKd = (prog: Parameters<Datapath["programFd"]>[0], frame: Buffer, ctx?: Buffer) =>
      libbpf.testRun(kd.programFd(prog), frame, ctx ?? null, prog);

    it("leaves a checked packet for an unregistered pod to the kernel's VXLAN socket, untouched", function () {
      const f = vxlanFrame(good);
      const rx = stats.read().traffic.get("rx")!.packets;
      const r = runKd("ovl_decap_tc", f);
      assert.equal(r.retval, TC_ACT_OK);
      assert.deepEqual(r.data, f, "not decapsulated here");
      assert.equal(stats.read().traffic.get("rx")!.packets, rx, "counted where it is decapsulated");
    });

    it("still drops (and counts) what fails the checks, before the kernel sees it", function () {
      const src = drops("rx", "unknown_source");
      const r = runKd("ovl_decap_tc", vxlanFrame({ ...good, outerSrc: "172.31.0.50" }));
      assert.equal(r.retval, TC_ACT_SHOT);
      assert.equal(drops("rx", "unknown_source"), src + 1n);
    });

    it("checks a GRO'd super-packet and hands it to the kernel's socket", function () {
      // Two inner segments of 1,400 bytes under one set of outer headers,
      // gso_size set as GRO leaves it. (The test runner cannot set gso_type,
      // so adjust_room would refuse the decap of such an skb here; the
      // redirect of GRO'd packets into pods is covered end to end on the
      // NIC-like wire.)
      const big = vxlanFrame({
        ...good,
        inner: eth(
          "02:00:00:00:00:01",
          "02:00:00:00:00:02",
          ETH_P_IP,
          ipv4(
            { src: good.innerSrc, dst: good.innerDst, proto: 17 },
            udp(1, 9, Buffer.alloc(2800, 0x5a)),
          ),
        ),
      });
      const g = runKd("ovl_decap_tc", big, gsoCtx(1400, 2));
      assert.equal(g.retval, TC_ACT_OK);
      assert.deepEqual(g.data, big);
      const src = drops("rx", "unknown_source");
      const bad = vxlanFrame({ ...good, outerSrc: "172.31.0.50", inner: big.subarray(50) });
      assert.equal(runKd("ovl_decap_tc", bad, gsoCtx(1400, 2)).retval, TC_ACT_SHOT);
      assert.equal(drops("rx", "unknown_source"), src + 1n);
    });

    it("decapsulates for a registered pod itself", function () {
      endpoints.upsert(parseIp("10.5.1.2"), pod);
      try {
        const f = vxlanFrame(good);
        const r = runKd("ovl_decap_tc", f);
        assert.equal(r.retval, TC_ACT_REDIRECT);
        assert.equal(r.data.length, f.length - 50);
        assert.deepEqual(r.data.subarray(0, 6), mac(pod.podMac));
      } finally {
        endpoints.delete(parseIp("10.5.1.2"));
      }
    });

    it("ovl_decap_dev drops and counts a packet without IPv4 tunnel metadata", function () {
      // Under BPF_PROG_RUN no tunnel metadata can be attached: this is what a
      // packet that did not come through the VXLAN socket looks like, and
      // nothing but the socket should hand the overlay device a packet.
      const inner = vxlanFrame(good).subarray(50);
      const src = drops("rx", "unknown_source");
      const r = runKd("ovl_decap_dev", Buffer.from(inner));
      assert.equal(r.retval, TC_ACT_SHOT);
      assert.equal(drops("rx", "unknown_source"), src + 1n);
    });
  });

  describe("direct peers (host-gw, DirectRouting: OVL_F_DIRECT)", function () {
    const DIRECT_SUBNET = "10.5.3.0/24";
    const DIRECT_IP = "172.31.0.3";
    before(function () {
      subnets.upsert(Cidr.parse(DIRECT_SUBNET), {
        remoteIp: parseIp(DIRECT_IP),
        vtepMac: "00:00:00:00:00:00",
        flags: F_DIRECT,
      });
    });
    after(function () {
      subnets.delete(Cidr.parse(DIRECT_SUBNET));
    });

    it("sends a pod packet unencapsulated towards the peer (TTL - 1), counted as direct", function () {
      const before = stats.read().traffic.get("direct")!.packets;
      const tx = stats.read().traffic.get("tx")!.packets;
      const inFrame = podFrame("10.5.3.9", 64, 17);
      const r = run("ovl_encap_pod", inFrame);
      assert.equal(r.retval, TC_ACT_REDIRECT);
      assert.equal(r.data.length, inFrame.length, "no VXLAN header added");
      assert.equal(r.data.readUInt8(14 + 8), 63, "TTL decremented");
      assert.equal(csum16(r.data.subarray(14, 34)), 0, "inner IPv4 checksum still valid");
      assert.deepEqual(r.data.subarray(26, 34), inFrame.subarray(26, 34), "addresses unchanged");
      assert.equal(stats.read().traffic.get("direct")!.packets, before + 1n);
      assert.equal(stats.read().traffic.get("tx")!.packets, tx, "not counted as encapsulated");
      const peer = subnets.peerCounters().get(parseIp(DIRECT_IP));
      assert.ok(peer && peer.txPackets > 0n, "counted for the peer");
    });

    it("on the overlay device too, without touching the TTL", function () {
      const inFrame = podFrame("10.5.3.9", 64, 17);
      const r = run("ovl_encap_dev", inFrame);
      assert.equal(r.retval, TC_ACT_REDIRECT);
      assert.deepEqual(r.data, inFrame);
    });

    it("leaves an expiring pod packet to the stack", function () {
      const inFrame = podFrame("10.5.3.9", 1, 17);
      assert.equal(run("ovl_encap_pod", inFrame).retval, TC_ACT_OK);
    });
  });

  describe("VXLAN Group Based Policy (OVL_CFG_GBP)", function () {
    let gbp: Datapath;
    const good = {
      outerSrc: PEER_IP,
      outerDst: LOCAL_IP,
      innerSrc: "10.5.2.7",
      innerDst: "10.5.1.2",
    };
    before(function () {
      gbp = new Datapath({ ...dp.config, gbp: true });
      gbp.load();
    });
    after(function () {
      gbp?.close();
      dp.close();
      dp = new Datapath(dp.config);
      dp.load();
    });
    const runG = (prog: Parameters<Datapath["programFd"]>[0], frame: Buffer, ctx?: Buffer) =>
      libbpf.testRun(gbp.programFd(prog), frame, ctx ?? null, prog);
    /** struct __sk_buff with only mark (offset 8) set. */
    const markCtx = (mark: number) => {
      const c = Buffer.alloc(192);
      c.writeUInt32LE(mark, 8);
      return c;
    };

    it("carries skb->mark as G flag, D/A bits and group policy ID, as the kernel's vxlan", function () {
      const f = podFrame("10.5.2.7", 64, 17);
      const r = runG("ovl_encap_dev", f, markCtx(0x400000 | 0x1234));
      assert.equal(r.retval, TC_ACT_REDIRECT);
      const vx = r.data.subarray(14 + 20 + 8, 14 + 20 + 16);
      assert.equal(vx[0], 0x88, "G and I flags");
      assert.equal(vx[1], 0x40, "D bit from mark bit 22");
      assert.equal(vx.readUInt16BE(2), 0x1234, "group policy ID from the mark");
      assert.equal(vx.readUInt32BE(4) >>> 8, 1, "VNI");
      const plain = runG("ovl_encap_dev", f, markCtx(0));
      assert.equal(plain.data[14 + 20 + 8], 0x08, "no mark: no G flag");
      const a = runG("ovl_encap_dev", f, markCtx(0x80000));
      assert.equal(a.data[14 + 20 + 8 + 1], 0x08, "A bit from mark bit 19");
    });

    it("leaves pod packets to the stack, where iptables can mark them", function () {
      assert.equal(runG("ovl_encap_pod", podFrame("10.5.2.7", 64, 17)).retval, TC_ACT_OK);
    });

    it("decap accepts the G flag, sets skb->mark from it, and still checks the reserved bits", function () {
      const f = vxlanFrame({ ...good, vxlanFlags: 0x88 });
      f.writeUInt8(0x08, 14 + 20 + 8 + 1); // A
      f.writeUInt16BE(0x0bcd, 14 + 20 + 8 + 2);
      const r = runG("ovl_decap_tc", f, Buffer.alloc(192));
      assert.notEqual(r.retval, TC_ACT_SHOT);
      assert.equal(r.data.length, f.length - 50, "decapsulated");
      assert.equal(r.ctx!.readUInt32LE(8), 0x80000 | 0x0bcd, "skb->mark");
      const bad = Buffer.from(f);
      bad.writeUInt8(0x01, 14 + 20 + 8 + 1); // a reserved bit next to D/A
      const n = drops("rx", "bad_vxlan_flags");
      assert.equal(runG("ovl_decap_tc", bad).retval, TC_ACT_SHOT);
      assert.equal(drops("rx", "bad_vxlan_flags"), n + 1n);
    });

    it("XDP leaves a GBP packet to the kernel path (XDP has no mark)", function () {
      const f = vxlanFrame({ ...good, vxlanFlags: 0x88 });
      f.writeUInt16BE(0x0001, 14 + 20 + 8 + 2);
      const r = runG("ovl_decap_xdp", f);
      assert.equal(r.retval, XDP_PASS);
      assert.deepEqual(r.data, f, "not decapsulated");
    });

    it("without GBP the G flag is a bad flag, as for the kernel's vxlan", function () {
      const n = drops("rx", "bad_vxlan_flags");
      assert.equal(
        run("ovl_decap_tc", vxlanFrame({ ...good, vxlanFlags: 0x88 })).retval,
        TC_ACT_SHOT,
      );
      assert.equal(drops("rx", "bad_vxlan_flags"), n + 1n);
    });
  });
});
