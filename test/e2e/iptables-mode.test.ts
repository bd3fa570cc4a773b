// --ip-masq's iptables backend, legacy or nft, chosen as
// kubernetes-sigs/iptables-wrappers chooses it, in network namespaces this
// run makes (legacy tables are per namespace too, so each case starts from
// nothing). Each case sets up what kubelet (or an older node) would have
// left, runs the agent's detection and masquerade code in the namespace
// (masq-helper), and reads both backends back: iptables-legacy-save (no
// table named: that would create it) and iptables-nft-save.
import assert from "node:assert/strict";
import { type IptablesDetection } from "../../agent/net/iptables-mode";
import { CHAIN } from "../../agent/net/ipmasq";
import { requireEnv } from "../lib/require";
import { inNs, sh } from "../lib/sh";
import { NETWORK, Topology } from "../lib/topology";

const HELPER = `${__dirname}/../lib/masq-helper.js`;
const SUBNET = "10.5.1.0/24";
const JUMP = new RegExp(`^-A POSTROUTING .*-j ${CHAIN}$`, "m");
const OURS = new RegExp(`^:${CHAIN} `, "m");

describe("e2e: iptables mode (legacy or nft, as iptables-wrapper detects it)", function () {
  this.timeout(180000);
  const topo = new Topology();

  function helper(ns: string, ...args: string[]): unknown {
    return JSON.parse(sh(inNs(ns, ["node", HELPER, ...args])));
  }
  const detect = (ns: string) => helper(ns, "mode") as IptablesDetection;
  const ensure = (ns: string) => helper(ns, "iptables", "ensure", NETWORK, SUBNET);
  const legacy = (ns: string) => sh(inNs(ns, ["iptables-legacy-save"]));
  const nft = (ns: string) => sh(inNs(ns, ["iptables-nft-save"]));
  /** Our chain and the jump to it, in one backend's save output. */
  const ours = (save: string) => OURS.test(save) && JUMP.test(save);
  const has = (save: string) => save.includes(CHAIN);

  /** A namespace of this run's, with what the argv lists run in it first. */
  function fresh(name: string, ...setup: string[][]): string {
    const ns = `${topo.prefix}-${name}`;
    topo.addNs(ns);
    for (const argv of setup) sh(inNs(ns, argv));
    return ns;
  }

  before(function () {
    requireEnv(this, {
      root: true,
      tools: [
        "ip",
        "nft",
        "iptables",
        "iptables-legacy",
        "iptables-legacy-save",
        "iptables-legacy-restore",
        "ip6tables-legacy-save",
        "iptables-nft",
        "iptables-nft-save",
        "iptables-nft-restore",
        "ip6tables-nft-save",
        "setpriv",
      ],
    });
  });

  after(function () {
    topo.destroy();
  });

  it("kubelet's hint chain in legacy only: legacy, and our chain goes into the legacy tables, not nft", function () {
    const ns = fresh("leg", ["iptables-legacy", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT"]);
    assert.deepEqual(detect(ns), {
      mode: "legacy",
      reason: "kubelet's KUBE-IPTABLES-HINT chain is in legacy mangle",
      commands: {
        iptables: "iptables-legacy",
        save: "iptables-legacy-save",
        restore: "iptables-legacy-restore",
      },
    });
    assert.equal(ensure(ns), true);
    assert.equal(ensure(ns), false, "a second ensure finds it in place (in legacy)");
    const l = legacy(ns);
    assert.ok(ours(l), l);
    assert.equal(l.match(new RegExp(`^-A ${CHAIN} `, "gm"))?.length, 6, l);
    assert.ok(!has(nft(ns)), nft(ns));
    assert.ok(!has(sh(inNs(ns, ["nft", "list", "ruleset"]))), "nothing of ours in nftables");
  });

  it("legacy needs CAP_NET_RAW (a raw socket): without it the reason names the failure; with it, legacy", function () {
    const ns = fresh("cap", ["iptables-legacy", "-t", "mangle", "-N", "KUBE-IPTABLES-HINT"]);
    const withCaps = (caps: string) =>
      JSON.parse(
        sh(
          inNs(ns, [
            "setpriv",
            `--bounding-set=-all,${caps}`,
            "--inh-caps=-all",
            "node",
            HELPER,
            "mode",
          ]),
        ),
      ) as IptablesDetection;
    // The DaemonSet's set (README, "Privileges").
    const daemonSet = withCaps("+bpf,+net_admin,+perfmon");
    assert.equal(daemonSet.mode, "nft");
    assert.match(
      daemonSet.reason,
      /; iptables-legacy-save failed: .*Permission denied \(you must be root\)$/,
    );
    assert.equal(withCaps("+bpf,+net_admin,+perfmon,+net_raw").mode, "legacy");
  });

  it("kubelet's canary chain in nft only: nft, and our chain goes into nft, not legacy", function () {
    const ns = fresh("nft", ["iptables-nft", "-t", "mangle", "-N", "KUBE-KUBELET-CANARY"]);
    const d = detect(ns);
    assert.equal(d.mode, "nft");
    assert.equal(d.reason, "kubelet's KUBE-KUBELET-CANARY chain is in nft mangle");
    assert.equal(d.commands.restore, "iptables-nft-restore");
    assert.equal(ensure(ns), true);
    assert.equal(ensure(ns), false);
    assert.ok(ours(nft(ns)), nft(ns));
    assert.equal(legacy(ns), "", "no legacy table at all: detecting and applying made none");
  });

  it("neither backend has anything: nft (the wrapper's default), and no legacy table is made", function () {
    const ns = fresh("none");
    const d = detect(ns);
    assert.equal(d.mode, "nft");
    assert.match(d.reason, /no kubelet chains and no rules in either backend; nft by default/);
    assert.equal(d.commands.iptables, "iptables-nft");
    assert.equal(helper(ns, "iptables", "masquerade", NETWORK, SUBNET), true, "the agent's path");
    assert.ok(ours(nft(ns)), nft(ns));
    assert.equal(legacy(ns), "");
  });

  it("no kubelet chains (an older node): the backend with more rules", function () {
    const ns = fresh(
      "cnt",
      ["iptables-legacy", "-A", "INPUT", "-s", "192.0.2.1/32", "-j", "ACCEPT"],
      ["iptables-legacy", "-t", "nat", "-N", "KUBE-SERVICES"],
      ["iptables-legacy", "-t", "nat", "-A", "KUBE-SERVICES", "-d", "192.0.2.2/32", "-j", "RETURN"],
      ["iptables-nft", "-A", "INPUT", "-s", "192.0.2.3/32", "-j", "ACCEPT"],
    );
    const d = detect(ns);
    assert.equal(d.mode, "legacy");
    assert.equal(d.reason, "no kubelet chains; 2 rules in legacy, 1 in nft");
    // One more nft rule: a tie, which goes to nft.
    sh(inNs(ns, ["iptables-nft", "-A", "INPUT", "-s", "192.0.2.4/32", "-j", "ACCEPT"]));
    assert.equal(detect(ns).mode, "nft");
  });

  it("a node that switched: the agent's path moves our chain; --cleanup removes it from both backends, and only it", function () {
    const hint = (cmd: string, op: "-N" | "-X") => [cmd, "-t", "mangle", op, "KUBE-IPTABLES-HINT"];
    const ns = fresh(
      "sw",
      hint("iptables-legacy", "-N"),
      // Someone else's chain in each backend's nat table: cleanup leaves them.
      ["iptables-legacy", "-t", "nat", "-N", "KUBE-POSTROUTING"],
      ["iptables-nft", "-t", "nat", "-N", "KUBE-POSTROUTING"],
    );
    assert.equal(ensure(ns), true);
    assert.ok(ours(legacy(ns)), "in legacy first");

    // kubelet now writes nft (the node was upgraded).
    sh(inNs(ns, hint("iptables-legacy", "-X")));
    sh(inNs(ns, hint("iptables-nft", "-N")));
    assert.equal(detect(ns).mode, "nft");
    assert.equal(helper(ns, "iptables", "masquerade", NETWORK, SUBNET), true);
    assert.ok(ours(nft(ns)), "now in nft");
    assert.ok(!has(legacy(ns)), "and gone from legacy (the agent's first check clears it)");

    // And back, with ensureMasq alone (no clearing): ours in both backends.
    sh(inNs(ns, hint("iptables-nft", "-X")));
    sh(inNs(ns, hint("iptables-legacy", "-N")));
    assert.equal(ensure(ns), true);
    assert.ok(ours(legacy(ns)) && ours(nft(ns)), "in both backends");

    helper(ns, "cleanup");
    const l = legacy(ns);
    const n = nft(ns);
    assert.ok(!has(l), l);
    assert.ok(!has(n), n);
    for (const s of [l, n]) assert.match(s, /^:KUBE-POSTROUTING /m, "someone else's chain stays");
    assert.match(l, /^:KUBE-IPTABLES-HINT /m, "so does kubelet's");
    helper(ns, "cleanup"); // nothing left: no error
  });
});
