import assert from "node:assert/strict";
import { F_DIRECT, F_LOCAL } from "../../agent/bpf/codec";
import { type SubnetEntry } from "../../agent/bpf/subnet-map";
import { Cidr, parseIp } from "../../agent/net/ip";
import { Cidr6, parseIp6 } from "../../agent/net/ip6";
import { dumpJson, dumpRows, EntryColumns, PeerCounts } from "../../cli/commands/map-dump";

const entry = (subnet: string, ip: string, flags = 0, mac = "0e:2a:00:00:00:01"): SubnetEntry => ({
  subnet: Cidr.parse(subnet),
  host: { remoteIp: parseIp(ip), vtepMac: mac, flags },
});

function jsonChunks(entries: SubnetEntry[], peers: PeerCounts): Buffer[] {
  const chunks: Buffer[] = [];
  dumpJson(EntryColumns.of(entries), peers, (c) => chunks.push(Buffer.from(c)));
  return chunks;
}
const jsonText = (entries: SubnetEntry[], peers: PeerCounts) =>
  Buffer.concat(jsonChunks(entries, peers)).toString();

describe("unit: overlayctl map dump", function () {
  it("-o json is the text JSON.stringify makes of the rows, counters and flags included", function () {
    const peers = new PeerCounts();
    peers.add(parseIp("172.31.0.2"), [3, 4096, 5, 2 ** 53 - 1]);
    peers.add(parseIp("172.31.0.3"), [0, 0, 0, 0]);
    peers.add(parseIp("172.31.0.1"), [9, 9, 9, 9]); // our own host: a LOCAL entry shows none
    // Sums past 2^53 are not exact: JSON.stringify's own forms
    peers.add(parseIp("172.31.0.4"), [2 ** 53, 2 ** 64, 1e21, 10]);
    const entries = [
      entry("0.0.0.0/0", "255.255.255.255", 0, "ff:ff:ff:ff:ff:ff"),
      entry("10.5.1.0/24", "172.31.0.1", F_LOCAL),
      entry("10.5.2.0/24", "172.31.0.2", 0, "00:01:0a:ab:cd:ef"),
      entry("10.5.3.0/24", "172.31.0.3", F_DIRECT),
      entry("10.5.4.0/24", "172.31.0.4", F_LOCAL | F_DIRECT),
      entry("10.5.4.0/25", "172.31.0.4"),
      entry("10.5.5.0/24", "172.31.0.99"), // a peer without counters
      entry("10.5.5.0/25", "172.31.0.98"), // the same address, a longer prefix after it
    ];
    const rows = dumpRows(entries, peers);
    assert.equal(jsonText(entries, peers), JSON.stringify(rows, null, 2) + "\n");
    assert.deepEqual(rows[2], {
      subnet: "10.5.2.0/24",
      remoteIp: "172.31.0.2",
      vtepMac: "00:01:0a:ab:cd:ef",
      flags: [],
      txPackets: 3,
      txBytes: 4096,
      rxPackets: 5,
      rxBytes: 2 ** 53 - 1,
    });
    assert.deepEqual(
      rows.map((r) => r.flags),
      [[], ["local"], [], ["direct"], ["local", "direct"], [], [], []],
    );
    assert.equal(rows[1]?.txPackets, 0, "a local entry has no peer counters");
    assert.match(
      jsonText(entries, peers),
      /"txBytes": 18446744073709552000,\n {4}"rxPackets": 1e\+21,/,
    );
  });

  it("-o json of a dual-stack node: the IPv4 rows, then the IPv6 ones, as one JSON.stringify", function () {
    const peers = new PeerCounts();
    peers.add(parseIp6("fd31::2"), [1, 2, 3, 4]);
    const v4 = [entry("10.5.1.0/24", "172.31.0.1", F_LOCAL), entry("10.5.2.0/24", "172.31.0.2")];
    const v6 = [
      {
        subnet: Cidr6.parse("fc00:5:0:1::/64"),
        host: { remoteIp: parseIp6("fd31::1"), vtepMac: "0e:2a:00:00:00:01", flags: F_LOCAL },
      },
      {
        subnet: Cidr6.parse("fc00:5:0:2::/64"),
        host: { remoteIp: parseIp6("fd31::2"), vtepMac: "0e:2a:00:00:00:02", flags: 0 },
      },
    ];
    const rows6 = dumpRows(v6, peers);
    assert.equal(rows6[1]?.remoteIp, "fd31::2");
    assert.equal(rows6[1]?.rxBytes, 4);
    const chunks: Buffer[] = [];
    dumpJson(EntryColumns.of(v4), peers, (c) => chunks.push(Buffer.from(c)), rows6);
    assert.equal(
      Buffer.concat(chunks).toString(),
      JSON.stringify([...dumpRows(v4, peers), ...rows6], null, 2) + "\n",
    );
    const only6: Buffer[] = [];
    dumpJson(EntryColumns.of([]), peers, (c) => only6.push(Buffer.from(c)), rows6);
    assert.equal(Buffer.concat(only6).toString(), JSON.stringify(rows6, null, 2) + "\n");
  });

  it("sorts by subnet address, then prefix length, whatever order the map gives", function () {
    const sorted = [entry("10.1.0.0/16", "1.1.1.1"), entry("10.1.0.0/24", "1.1.1.2")];
    const more = [entry("9.255.0.0/16", "1.1.1.3"), entry("200.0.0.0/8", "1.1.1.4")];
    const all = [...more.slice(0, 1), ...sorted, ...more.slice(1)];
    const peers = new PeerCounts();
    assert.equal(
      jsonText([all[3], all[2], all[0], all[1]] as SubnetEntry[], peers),
      JSON.stringify(dumpRows(all, peers), null, 2) + "\n",
    );
  });

  it("writes a big map a megabyte at a time, the same bytes as one JSON.stringify", function () {
    const peers = new PeerCounts();
    const entries = Array.from({ length: 20000 }, (_, i) => {
      const ip = 0xac100000 + i;
      peers.add(ip, [i, i * 2, i * 3, i * 4 + 2 ** 40]);
      return {
        subnet: Cidr.of(0x0a000000 + i * 256, 24),
        host: { remoteIp: ip, vtepMac: "0e:2a:00:00:00:01", flags: 0 },
      };
    });
    const chunks = jsonChunks(entries, peers);
    assert.ok(chunks.length > 1, "more than one chunk");
    assert.equal(
      Buffer.concat(chunks).toString(),
      JSON.stringify(dumpRows(entries, peers), null, 2) + "\n",
    );
  });

  it("an empty map is []", function () {
    assert.equal(jsonText([], new PeerCounts()), "[]\n");
    assert.equal(JSON.stringify(dumpRows([], new PeerCounts()), null, 2) + "\n", "[]\n");
  });
});
