import assert from "node:assert/strict";
import { F_DIRECT, F_LOCAL } from "../../agent/bpf/codec";
import { type SubnetEntry } from "../../agent/bpf/subnet-map";
import { Cidr, parseIp } from "../../agent/net/ip";
import { dumpJson, dumpRows, PeerCounts } from "../../cli/commands/map-dump";

const entry = (subnet: string, ip: string, flags = 0): SubnetEntry => ({
  subnet: Cidr.parse(subnet),
  host: { remoteIp: parseIp(ip), vtepMac: "0e:2a:00:00:00:01", flags },
});

function jsonText(entries: SubnetEntry[], peers: PeerCounts): string {
  const chunks: string[] = [];
  dumpJson(entries, peers, (c) => chunks.push(c));
  return chunks.join("");
}

describe("unit: overlayctl map dump", function () {
  it("-o json is the text JSON.stringify makes of the rows, counters and flags included", function () {
    const peers = new PeerCounts();
    peers.add(parseIp("172.31.0.2"), [3, 4096, 5, 2 ** 53 - 1]);
    peers.add(parseIp("172.31.0.3"), [0, 0, 0, 0]);
    const entries = [
      entry("10.5.1.0/24", "172.31.0.1", F_LOCAL),
      entry("10.5.2.0/24", "172.31.0.2"),
      entry("10.5.3.0/24", "172.31.0.3", F_DIRECT),
      entry("10.5.4.0/24", "172.31.0.4", F_LOCAL | F_DIRECT),
      entry("10.5.5.0/24", "172.31.0.99"), // a peer without counters
    ];
    const rows = dumpRows(entries, peers);
    assert.equal(jsonText(entries, peers), JSON.stringify(rows, null, 2) + "\n");
    assert.deepEqual(rows[1], {
      subnet: "10.5.2.0/24",
      remoteIp: "172.31.0.2",
      vtepMac: "0e:2a:00:00:00:01",
      flags: [],
      txPackets: 3,
      txBytes: 4096,
      rxPackets: 5,
      rxBytes: 2 ** 53 - 1,
    });
    assert.deepEqual(
      rows.map((r) => r.flags),
      [["local"], [], ["direct"], ["local", "direct"], []],
    );
    assert.equal(rows[0]?.txPackets, 0, "a local entry has no peer counters");
  });

  it("writes a big map a chunk at a time, the same text as one JSON.stringify", function () {
    const peers = new PeerCounts();
    const entries = Array.from({ length: 20000 }, (_, i) => {
      peers.add(0xac100000 + i, [i, i * 2, i * 3, i * 4]);
      return entry(Cidr.of(0x0a000000 + i * 256, 24).toString(), "0.0.0.0");
    }).map((e, i) => ({ ...e, host: { ...e.host, remoteIp: 0xac100000 + i } }));
    const chunks: string[] = [];
    dumpJson(entries, peers, (c) => chunks.push(c));
    assert.ok(chunks.length > 1, "more than one chunk");
    assert.equal(chunks.join(""), JSON.stringify(dumpRows(entries, peers), null, 2) + "\n");
  });

  it("an empty map is []", function () {
    assert.equal(jsonText([], new PeerCounts()), "[]\n");
    assert.equal(JSON.stringify(dumpRows([], new PeerCounts()), null, 2) + "\n", "[]\n");
  });
});
