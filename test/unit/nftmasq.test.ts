// The nftables masquerade ruleset (flannel's EnableNFTables): the same
// decisions as the iptables chain, flannel's table and chain names, one
// atomic transaction; and a clear error when nft is not installed.
import assert from "node:assert/strict";
import { OverlayError } from "../../agent/errors";
import { Cidr } from "../../agent/net/ip";
import { Cidr6 } from "../../agent/net/ip6";
import { masqRules, restoreInput, supportsRandomFully } from "../../agent/net/ipmasq";
import { ip6Commands, PLAIN_COMMANDS, variantCommands } from "../../agent/net/iptables-mode";
import {
  ensureNftMasq,
  NFT_CHAIN,
  NFT_TABLE,
  NFT_TABLE6,
  nftMasqInPlace,
  nftMasqRules,
  nftMasqRuleset,
  nftMasqTable,
  normalizeNftListing,
  removeNftMasq,
} from "../../agent/net/nftmasq";

/** One rule's decision, whichever syntax wrote it. */
interface Decision {
  mark?: string;
  src?: string;
  dst?: string;
  verdict: string;
}

/** `-m mark --mark M`, `[!] -s X`, `[!] -d Y`, `-j RETURN|MASQUERADE [--random-fully]`. */
function fromIptables(rule: string): Decision {
  const d: Decision = { verdict: "" };
  const mark = / -m mark --mark (\S+)/.exec(rule);
  if (mark) d.mark = mark[1]!;
  const src = /( !)? -s (\S+)/.exec(rule);
  if (src) d.src = `${src[1] ? "!" : ""}${src[2]}`;
  const dst = /( !)? -d (\S+)/.exec(rule);
  if (dst) d.dst = `${dst[1] ? "!" : ""}${dst[2]}`;
  d.verdict = / -j (RETURN|MASQUERADE --random-fully)/.exec(rule)![1]!;
  return d;
}

/** `meta mark & M == M`, `ip[6] saddr [!=] X`, `ip[6] daddr [!=] Y`, `return|masquerade fully-random`. */
function fromNft(rule: string): Decision {
  const d: Decision = { verdict: "" };
  const mark = /^meta mark & (0x[0-9a-f]+) == (0x[0-9a-f]+) /.exec(rule);
  if (mark) {
    assert.equal(mark[1], mark[2], "tests the bit, not the whole mark");
    const m = `0x${parseInt(mark[1]!, 16).toString(16)}`;
    d.mark = `${m}/${m}`;
  }
  const src = /ip6? saddr (!= )?(\S+)/.exec(rule);
  if (src) d.src = `${src[1] ? "!" : ""}${src[2]}`;
  const dst = /ip6? daddr (!= )?(\S+)/.exec(rule);
  if (dst) d.dst = `${dst[1] ? "!" : ""}${dst[2]}`;
  const v = / (return|masquerade fully-random) comment /.exec(rule)![1]!;
  d.verdict = v === "return" ? "RETURN" : "MASQUERADE --random-fully";
  return d;
}

/** flannel's decisions for a cluster network n, this node's subnet s, in order. */
function decisions(n: string, s: string, multicast: string): Decision[] {
  const masq = "MASQUERADE --random-fully";
  return [
    { mark: "0x4000/0x4000", verdict: "RETURN" },
    { src: s, dst: n, verdict: "RETURN" },
    { src: n, dst: s, verdict: "RETURN" },
    { src: `!${n}`, dst: s, verdict: "RETURN" },
    { src: n, dst: `!${multicast}`, verdict: masq },
    { src: `!${n}`, dst: n, verdict: masq },
  ];
}

describe("unit: nftables masquerade (EnableNFTables)", function () {
  const network = Cidr.parse("10.5.0.0/16");
  const subnet = Cidr.parse("10.5.7.0/24");

  it("makes every decision of the iptables chain, in the same order", function () {
    const nft = nftMasqRules(network, subnet).map(fromNft);
    assert.deepEqual(nft, masqRules(network, subnet).map(fromIptables));
    assert.deepEqual(nft, decisions("10.5.0.0/16", "10.5.7.0/24", "224.0.0.0/4"));
  });

  it("masquerades fully-random and comments every rule", function () {
    const rules = nftMasqRules(network, subnet);
    const masq = rules.filter((r) => /\bmasquerade\b/.test(r.replace(/ comment ".*"$/, "")));
    assert.equal(masq.length, 2);
    for (const r of masq) assert.match(r, / masquerade fully-random comment /);
    for (const r of rules) assert.match(r, / comment "overlayd masquerade"$/);
  });

  it("uses flannel's names: table ip flannel-ipv4, chain postrtg at postrouting srcnat", function () {
    assert.equal(NFT_TABLE, "flannel-ipv4");
    assert.equal(NFT_TABLE6, "flannel-ipv6");
    assert.equal(NFT_CHAIN, "postrtg");
    const table = nftMasqTable(network, subnet);
    assert.match(table, /^table ip flannel-ipv4 \{\n\tcomment "overlayd masquerade"\n/);
    assert.match(
      table,
      /\n\tchain postrtg \{\n\t\tcomment "overlayd masquerade"\n\t\ttype nat hook postrouting priority srcnat; policy accept;\n/,
    );
    assert.equal((table.match(/\bchain /g) ?? []).length, 1, "one chain");
    assert.ok(!table.includes(NFT_TABLE6), "the IPv4 table names no IPv6 one");
  });

  it("replaces the table in one transaction that never fails on absence, touching no other", function () {
    const input = nftMasqRuleset(network, subnet);
    assert.ok(
      input.startsWith(
        "table ip flannel-ipv4 {}\ndelete table ip flannel-ipv4\ntable ip flannel-ipv4 {\n",
      ),
      input,
    );
    assert.ok(input.endsWith(nftMasqTable(network, subnet)));
    assert.doesNotMatch(input, /flush ruleset|\btable (ip6|inet|arp|bridge|netdev)\b/);
    const tables = [...input.matchAll(/\btable (\S+) (\S+)/g)].map((m) => `${m[1]} ${m[2]}`);
    assert.deepEqual([...new Set(tables)], ["ip flannel-ipv4"]);
  });

  it("writes a /32 as nft prints it, and follows the lease's subnet", function () {
    const rules = nftMasqRules(network, Cidr.parse("10.5.9.4/32"));
    assert.ok(
      rules.includes(`ip saddr 10.5.9.4 ip daddr 10.5.0.0/16 return comment "overlayd masquerade"`),
    );
    assert.ok(!rules.join("\n").includes("10.5.7.0"));
  });

  it("reads a listing back: handles, padding and priority spelling aside, every line counts", function () {
    const want = normalizeNftListing(nftMasqTable(network, subnet));
    const listed = nftMasqTable(network, subnet)
      .replace("table ip flannel-ipv4 {", "table ip flannel-ipv4 { # handle 7")
      .replace("priority srcnat;", "priority 100;")
      .replace(/0x00004000/g, "0x4000")
      .replace(/("overlayd masquerade")\n(\t\t[^\t])/g, "$1 # handle 3\n$2")
      .replace(/\t/g, "    ");
    assert.deepEqual(normalizeNftListing(listed), want);
    const oneGone = nftMasqTable(network, subnet).replace(/\t\tip saddr != .* return .*\n/, "");
    assert.notDeepEqual(normalizeNftListing(oneGone), want);
    const otherSubnet = nftMasqTable(network, Cidr.parse("10.5.8.0/24"));
    assert.notDeepEqual(normalizeNftListing(otherSubnet), want);
    const noRandom = nftMasqTable(network, subnet).replace(/ fully-random/g, "");
    assert.notDeepEqual(normalizeNftListing(noRandom), want);
  });

  describe("IPv6 (dual-stack): flannel's masqIP6Rules", function () {
    const network6 = Cidr6.parse("fc00:5::/48");
    const subnet6 = Cidr6.parse("fc00:5:0:7::/64");

    it("makes the same decisions as IPv4, with ff00::/8 as the multicast never masqueraded", function () {
      const want = decisions("fc00:5::/48", "fc00:5:0:7::/64", "ff00::/8");
      assert.deepEqual(masqRules(network6, subnet6).map(fromIptables), want);
      assert.deepEqual(nftMasqRules(network6, subnet6).map(fromNft), want);
      for (const r of nftMasqRules(network6, subnet6).slice(1)) assert.match(r, /^ip6 saddr /);
    });

    it("goes without --random-fully on an iptables older than 1.6.2, as flannel does", function () {
      assert.equal(supportsRandomFully("iptables v1.8.9 (nf_tables)"), true);
      assert.equal(supportsRandomFully("ip6tables v1.6.2"), true);
      assert.equal(supportsRandomFully("ip6tables v1.6.1"), false);
      assert.equal(supportsRandomFully("iptables v1.4.21"), false);
      assert.equal(supportsRandomFully(undefined), false);
      const rules = masqRules(network6, subnet6, false);
      assert.equal(rules.filter((r) => / -j MASQUERADE$/.test(r)).length, 2);
      assert.ok(!rules.join("\n").includes("random"));
      assert.match(restoreInput(network6, subnet6), /^\*nat\n:OVERLAYD-POSTRTG - \[0:0\]\n/);
    });

    it("writes the ip6 table flannel names flannel-ipv6, replaced in one transaction", function () {
      const table = nftMasqTable(network6, subnet6);
      assert.match(table, /^table ip6 flannel-ipv6 \{\n/);
      assert.match(
        table,
        /\n\tchain postrtg \{\n.*\n\t\ttype nat hook postrouting priority srcnat;/,
      );
      const input = nftMasqRuleset(network6, subnet6);
      assert.ok(
        input.startsWith(
          "table ip6 flannel-ipv6 {}\ndelete table ip6 flannel-ipv6\ntable ip6 flannel-ipv6 {\n",
        ),
        input,
      );
      const tables = [...input.matchAll(/\btable (\S+) (\S+)/g)].map((m) => `${m[1]} ${m[2]}`);
      assert.deepEqual([...new Set(tables)], ["ip6 flannel-ipv6"], "the IPv4 table is not touched");
    });

    it("writes a /128 as nft prints it (a bare address)", function () {
      const rules = nftMasqRules(network6, Cidr6.parse("fc00:5:0:9::4/128"));
      assert.ok(
        rules.includes(
          `ip6 saddr fc00:5:0:9::4 ip6 daddr fc00:5::/48 return comment "overlayd masquerade"`,
        ),
      );
    });

    it("runs the same iptables backend's ip6tables commands", function () {
      assert.deepEqual(ip6Commands(variantCommands("nft")), {
        iptables: "ip6tables-nft",
        save: "ip6tables-nft-save",
        restore: "ip6tables-nft-restore",
      });
      assert.deepEqual(ip6Commands(variantCommands("legacy")).restore, "ip6tables-legacy-restore");
      assert.deepEqual(ip6Commands(PLAIN_COMMANDS), {
        iptables: "ip6tables",
        save: "ip6tables-save",
        restore: "ip6tables-restore",
      });
      assert.equal(
        ip6Commands({ iptables: "/usr/sbin/iptables", save: "x", restore: "y" }).iptables,
        "/usr/sbin/ip6tables",
      );
    });
  });

  describe("without nft", function () {
    const path = process.env.PATH;
    before(function () {
      process.env.PATH = "/nonexistent-overlayd-test";
    });
    after(function () {
      process.env.PATH = path;
    });

    it("names nft and the package when it is missing", function () {
      for (const f of [
        () => ensureNftMasq(network, subnet),
        () => nftMasqInPlace(network, subnet),
      ]) {
        assert.throws(f, (e: unknown) => {
          assert.ok(e instanceof OverlayError);
          assert.match(
            e.message,
            /^nftables masquerade: cannot run nft \(.*ENOENT\): install the nftables package/,
          );
          return true;
        });
      }
    });

    it("cleans up without error: nothing an absent nft could have made", function () {
      assert.doesNotThrow(() => removeNftMasq());
    });
  });
});
