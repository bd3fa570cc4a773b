// The deployment files are checked, not just written: the manifests parse
// and carry what the agent needs, the network config in the ConfigMap passes
// the agent's own validator, the CNI config the plugin's, and the systemd
// unit grants exactly the documented capabilities. The API schemas and the
// DaemonSet's reviewer rules (host network, mounts, tolerations, priority,
// requests, rollout, capabilities, seccomp, probes) are
// scripts/check-manifests.ts, tested in manifests.test.ts.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseNetworkConfig } from "../../agent/control/config";
import { parseNetConf } from "../../agent/cni/netconf";
import { REQUIRED } from "../../agent/caps";
import { DEPLOY, deployDocs as docs, type Obj } from "../lib/deploy";

describe("unit: deployment files", function () {
  const objs = docs("kubernetes/overlayd.yaml");
  const byKind = (k: string) => objs.find((o) => o.kind === k);

  it("declares the Namespace, critical-pod quota, ServiceAccount, ConfigMap and DaemonSet", function () {
    assert.deepEqual(
      objs.map((o) => o.kind),
      ["Namespace", "ResourceQuota", "ServiceAccount", "ConfigMap", "DaemonSet"],
    );
    for (const o of objs) {
      assert.ok(o.apiVersion && o.metadata?.name, `${o.kind} has apiVersion and name`);
      if (o.kind !== "Namespace") assert.equal(o.metadata.namespace, "overlayd-system");
    }
  });

  it("ships a network config the agent accepts and a CNI config the plugin accepts", function () {
    const cm = byKind("ConfigMap");
    const net = parseNetworkConfig(cm.data["net-conf.json"], "ConfigMap net-conf.json");
    assert.equal(net.backend.vni, 1);
    const list = JSON.parse(cm.data["cni-conf.json"]);
    const plugin = parseNetConf(
      JSON.stringify({ ...list.plugins[0], name: list.name, cniVersion: list.cniVersion }),
    );
    assert.equal(plugin.type, "overlay");
    assert.equal(plugin.pinPath, "/sys/fs/bpf/overlay");
  });

  it("installs the CNI plugin and is scraped", function () {
    const ds = byKind("DaemonSet");
    const spec = ds.spec.template.spec;
    const ann = ds.spec.template.metadata.annotations;
    assert.equal(ann["prometheus.io/scrape"], "true");
    assert.equal(ann["prometheus.io/port"], "9474");
    const hostPaths = Object.fromEntries(
      spec.volumes.filter((v: Obj) => v.hostPath).map((v: Obj) => [v.name, v.hostPath.path]),
    );
    for (const p of ["/etc/cni/net.d", "/opt/cni/bin"]) {
      assert.ok(Object.values(hostPaths).includes(p), `mounts ${p}`);
    }
    const init = spec.initContainers.find((i: Obj) => i.name === "install-cni");
    assert.deepEqual(init.command, ["/opt/overlayd/install-cni.sh"]);
  });

  it("has an etcd TLS Secret example", function () {
    const [s] = docs("kubernetes/overlayd-etcd.example.yaml");
    assert.equal(s.kind, "Secret");
    assert.deepEqual(Object.keys(s.data).sort(), ["ca.crt", "client.crt", "client.key"]);
  });

  it("builds the image in two stages with a replaceable base", function () {
    const d = readFileSync(join(DEPLOY, "Dockerfile"), "utf8");
    assert.match(d, /^ARG BASE=/m);
    assert.equal((d.match(/^FROM \$\{BASE\}/gm) ?? []).length, 2);
    assert.match(d, /make build SKIP_DEPS=1/);
    const build = d.slice(0, d.lastIndexOf("FROM ${BASE}"));
    assert.ok(
      build.indexOf("USER builder") < build.indexOf("npm ci"),
      "the build stage runs npm and make unprivileged",
    );
    assert.match(d, /libbpf1 iproute2 iptables/);
  });

  it("grants the systemd unit exactly the documented capabilities", function () {
    const u = readFileSync(join(DEPLOY, "systemd", "overlayd.service"), "utf8");
    const caps = /^CapabilityBoundingSet=(.*)$/m.exec(u)?.[1]?.split(/\s+/);
    assert.deepEqual(caps?.sort(), [...REQUIRED].sort());
    assert.match(u, /^Restart=always$/m);
    assert.match(u, /^ExecStart=.*overlayd/m);
  });
});
