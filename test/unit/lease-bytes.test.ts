import assert from "node:assert/strict";
import { leaseAttrsFromBytes, leaseKeyFromBytes } from "../../agent/control/lease-bytes";
import {
  decodeLeaseAttrs,
  encodeLeaseAttrs,
  leaseKey,
  parseLeaseKeyParts,
  subnetsPrefix,
  type LeaseAttrs,
} from "../../agent/control/lease";
import { Cidr, parseIp } from "../../agent/net/ip";
import { Cidr6 } from "../../agent/net/ip6";

const P = "/coreos.com/network";
const PREFIX = Buffer.from(subnetsPrefix(P));

/** The fast key decode, on the key placed inside a bigger buffer as in a RangeResponse. */
function fastKey(key: string): Cidr | undefined {
  const b = Buffer.concat([Buffer.from("1234"), Buffer.from(key), Buffer.from("5.6-7")]);
  return leaseKeyFromBytes(b, 4, 4 + Buffer.byteLength(key), PREFIX);
}
function fastAttrs(value: string): LeaseAttrs | undefined {
  const b = Buffer.concat([Buffer.from("9"), Buffer.from(value), Buffer.from('0"}}')]);
  return leaseAttrsFromBytes(b, 1, 1 + Buffer.byteLength(value));
}
function slowAttrs(value: string): LeaseAttrs | Error {
  try {
    return decodeLeaseAttrs(value, "k");
  } catch (e) {
    return e as Error;
  }
}

/** Whatever the fast path accepts, it decodes exactly as the general path does. */
function agreesOnKey(key: string): void {
  const fast = fastKey(key);
  if (!fast) return;
  const slow = parseLeaseKeyParts(P, key);
  assert.deepEqual(slow, { subnet: fast }, key);
}
function agreesOnValue(value: string): void {
  const fast = fastAttrs(value);
  if (!fast) return;
  assert.deepEqual(slowAttrs(value), fast, value);
}

// A seeded generator (xorshift32), so a failure replays.
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 4294967296;
  };
}

describe("unit: lease keys and values from etcd's bytes", function () {
  it("decodes the key forms leaseKey() writes for v4-only leases", function () {
    for (const s of [
      "10.5.1.0/24",
      "0.0.0.0/0",
      "255.255.255.255/32",
      "10.0.0.0/8",
      "1.2.3.0/30",
    ]) {
      const c = Cidr.parse(s);
      assert.ok(fastKey(leaseKey(P, c))?.equals(c), s);
    }
  });

  it("leaves every other key to parseLeaseKeyParts", function () {
    const v6 = leaseKey(P, Cidr.parse("10.5.1.0/24"), Cidr6.parse("fc00:5:0:1::/64"));
    for (const k of [
      v6, // dual-stack
      `${P}/subnets/10.5.1.1-24`, // host bits
      `${P}/subnets/010.5.1.0-24`, // not canonical
      `${P}/subnets/10.5.1.0-024`,
      `${P}/subnets/10.5.1.0-33`,
      `${P}/subnets/10.5.1.0-24x`,
      `${P}/subnets/10.5.1-24`,
      `${P}/subnets/10.5.1.0.0-24`,
      `${P}/subnets/256.5.1.0-24`,
      `${P}/subnets/10.5.1.0-`,
      `${P}/subnets/10.5.1.0`,
      `${P}/subnet/10.5.1.0-24`, // another prefix
      `/other/subnets/10.5.1.0-24`,
      `${P}/subnets/`,
    ]) {
      assert.equal(fastKey(k), undefined, k);
      agreesOnKey(k);
    }
  });

  it("decodes flannel's lease JSON as decodeLeaseAttrs does: vxlan, host-gw, pre-dual-stack flannel", function () {
    const vxlan: LeaseAttrs = {
      publicIp: parseIp("172.31.0.2"),
      backendType: "vxlan",
      vni: 4096,
      vtepMac: "0e:2a:00:ff:10:01",
    };
    const hostGw: LeaseAttrs = { publicIp: parseIp("192.168.1.200"), backendType: "host-gw" };
    for (const a of [vxlan, hostGw]) {
      const text = encodeLeaseAttrs(a);
      assert.deepEqual(fastAttrs(text), a, text);
      assert.deepEqual(fastAttrs(text), decodeLeaseAttrs(text, "k"));
    }
    // flannel before dual-stack wrote no PublicIPv6
    const old =
      '{"PublicIP":"10.0.0.9","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}';
    assert.deepEqual(fastAttrs(old), decodeLeaseAttrs(old, "k"));
    assert.equal(fastAttrs(old)?.vtepMac, "aa:bb:cc:dd:ee:ff");
  });

  it("leaves every other value to decodeLeaseAttrs (which may accept or refuse it)", function () {
    const base = encodeLeaseAttrs({
      publicIp: parseIp("172.31.0.2"),
      backendType: "vxlan",
      vni: 1,
      vtepMac: "0e:2a:00:00:00:01",
    });
    const dual = encodeLeaseAttrs({
      publicIp: parseIp("172.31.0.2"),
      backendType: "vxlan",
      vni: 1,
      vtepMac: "0e:2a:00:00:00:01",
      publicIpv6: 1n,
      vtepMac6: "0e:2a:00:00:00:02",
    });
    for (const v of [
      dual, // PublicIPv6 set
      base.replace("0e:2a", "0E:2A"), // upper-case MAC: decodeLeaseAttrs lowers it
      base.replace(":", ": "), // spaces
      base.replace('"VNI":1', '"VNI":01'),
      base.replace('"VNI":1', '"VNI":1.0'),
      base.replace('"VNI":1', '"VNI":"1"'),
      base.replace("172.31.0.2", "172.31.0.256"),
      base.replace("172.31.0.2", "172.31.0"),
      base.replace("0e:2a:00:00:00:01", "0e:2a:00:00:00:0g"),
      base.replace("0e:2a:00:00:00:01", "0e:2a:00:00:00:012"),
      base.replace("0e:2a:00:00:00:01", "0e-2a-00-00-00-01"),
      base.replace('"vxlan"', '"vx\\u006can"'), // an escape
      base.replace('"vxlan"', '"VXLAN"'),
      base.replace("}}", '},"Extra":1}'),
      base.slice(0, -1),
      base + " ",
      '{"publicip":"172.31.0.2","PublicIPv6":null,"BackendType":"host-gw"}', // case
      "",
      "null",
    ]) {
      assert.equal(fastAttrs(v), undefined, v);
    }
  });

  it("agrees with the general decoders on 20,000 mutated keys and values", function () {
    const r = rng(16);
    const keySeeds = ["10.5.1.0-24", "0.0.0.0-0", "192.168.255.252-30", "10.5.1.0-24&fc00::-64"];
    const valueSeeds = [
      encodeLeaseAttrs({
        publicIp: 0x0a000001,
        backendType: "vxlan",
        vni: 7,
        vtepMac: "aa:bb:cc:00:11:22",
      }),
      encodeLeaseAttrs({ publicIp: 0xfffffffe, backendType: "host-gw" }),
    ];
    const alphabet = '0123456789.-&:abcdefABCDEF"{},[] nul';
    const mutate = (s: string) => {
      let out = s;
      for (let n = 1 + Math.floor(r() * 3); n > 0; n--) {
        const i = Math.floor(r() * (out.length + 1));
        const c = alphabet[Math.floor(r() * alphabet.length)] as string;
        const op = r();
        out =
          op < 0.4
            ? out.slice(0, i) + c + out.slice(i + 1) // replace
            : op < 0.7
              ? out.slice(0, i) + c + out.slice(i) // insert
              : out.slice(0, i) + out.slice(i + 1); // delete
      }
      return out;
    };
    let fastKeys = 0;
    let fastValues = 0;
    for (let i = 0; i < 10000; i++) {
      const k = `${P}/subnets/${mutate(keySeeds[i % keySeeds.length] as string)}`;
      agreesOnKey(k);
      if (fastKey(k)) fastKeys++;
      const v = mutate(valueSeeds[i % valueSeeds.length] as string);
      agreesOnValue(v);
      if (fastAttrs(v)) fastValues++;
    }
    // The mutations reach both sides of the fast paths.
    assert.ok(fastKeys > 100 && fastKeys < 9000, `fast keys ${fastKeys}`);
    assert.ok(fastValues > 100 && fastValues < 9000, `fast values ${fastValues}`);
  });
});
