// The deployment files are checked, not just written: the manifests parse
// and carry what the agent needs, the network config in the ConfigMap passes
// the agent's own validator, the CNI config the plugin's, and the container
// and systemd unit grant exactly the documented capabilities.
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

  it("declares the Namespace, ServiceAccount, ConfigMap and DaemonSet", function () {
    assert.deepEqual(
      objs.map((o) => o.kind),
      ["Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"],
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

  it("runs the DaemonSet the way the agent needs", function () {
    const ds = byKind("DaemonSet");
    const spec = ds.spec.template.spec;
    assert.equal(spec.hostNetwork, true);
    assert.ok(
      spec.tolerations.some((t: Obj) => t.operator === "Exists"),
      "runs on every node",
    );
    const c = spec.containers[0];
    assert.deepEqual(c.securityContext.capabilities, {
      drop: ["ALL"],
      add: REQUIRED.map((x) => x.replace("CAP_", "")),
    });
    // Default seccomp profiles refuse bpf() without CAP_SYS_ADMIN.
    assert.equal(c.securityContext.seccompProfile?.type, "Unconfined");
    assert.equal(c.livenessProbe.httpGet.path, "/healthz");
    assert.equal(c.readinessProbe.httpGet.path, "/readyz");
    assert.equal(c.livenessProbe.httpGet.host, "127.0.0.1", "healthz binds to loopback");
    assert.ok(c.args.includes("--healthz-addr=127.0.0.1:9473"));
    const ann = ds.spec.template.metadata.annotations;
    assert.equal(ann["prometheus.io/scrape"], "true");
    assert.equal(ann["prometheus.io/port"], "9474");
    const hostPaths = Object.fromEntries(
      spec.volumes.filter((v: Obj) => v.hostPath).map((v: Obj) => [v.name, v.hostPath.path]),
    );
    for (const p of ["/sys/fs/bpf", "/run/flannel", "/etc/cni/net.d", "/opt/cni/bin"]) {
      assert.ok(Object.values(hostPaths).includes(p), `mounts ${p}`);
    }
    const mounts = c.volumeMounts.map((m: Obj) => m.mountPath);
    assert.ok(mounts.includes("/sys/fs/bpf") && mounts.includes("/run/flannel"));
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
