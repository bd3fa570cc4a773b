// etcd security and exposure: client-certificate TLS (certificates made by
// openssl here), a wrong CA, no client certificate, username/password auth,
// and health/metrics endpoints that bind where told and leak no secrets.
import assert from "node:assert/strict";
import { readFileSync, rmSync } from "node:fs";
import { makeCerts, type Certs } from "../lib/certs";
import { Cluster, PREFIX } from "../lib/cluster";
import { OVERLAYCTL } from "../lib/agent-proc";
import { requireEnv } from "../lib/require";
import { httpInNs, inNs, shStatus, waitFor } from "../lib/sh";
import { ping } from "../lib/traffic";
import { type NodeInfo } from "../lib/topology";

describe("e2e: etcd TLS, auth and exposure", function () {
  this.timeout(240000);

  describe("client-certificate TLS", function () {
    let certs: Certs;
    const c = new Cluster();
    let n1: NodeInfo;

    before(async function () {
      requireEnv(this, { root: true, tools: ["etcd", "openssl", "ip"] });
      certs = makeCerts(["172.31.0.254", "127.0.0.1"]);
      await c.start(2, { tls: certs });
      n1 = c.nodes[0]!;
    });
    after(async function () {
      await c.stop();
      if (certs) rmSync(certs.dir, { recursive: true, force: true });
    });

    function ctl(args: string[]) {
      return shStatus(
        inNs(n1.ns, [
          "node",
          OVERLAYCTL,
          "lease",
          "list",
          "--etcd-endpoints",
          c.endpoints(),
          ...args,
        ]),
      );
    }

    it("connects with the CA and a client certificate: agents ready, pods ping", function () {
      assert.match(c.endpoints(), /^https:\/\//);
      for (const n of c.nodes) assert.equal(c.agent(n).http("/readyz").status, 200);
      assert.ok(ping(c.pod(n1).ns, c.pod(c.nodes[1]!).ip));
      const ok = ctl([
        "--etcd-cafile",
        certs.ca,
        "--etcd-certfile",
        certs.clientCert,
        "--etcd-keyfile",
        certs.clientKey,
        "-o",
        "json",
      ]);
      assert.equal(ok.status, 0, ok.stderr);
      assert.equal(JSON.parse(ok.stdout).length, 2);
    });

    it("fails with a clear error against a wrong CA", function () {
      const r = ctl([
        "--etcd-cafile",
        certs.otherCa,
        "--etcd-certfile",
        certs.clientCert,
        "--etcd-keyfile",
        certs.clientKey,
      ]);
      assert.equal(r.status, 1);
      assert.match(
        r.stderr,
        /^overlayctl: etcd list \/coreos\.com\/network\/subnets\/: .*(certificate|self[- ]signed|verify)/i,
      );
    });

    it("is refused without a client certificate, and names a missing file", function () {
      const r = ctl(["--etcd-cafile", certs.ca]);
      assert.equal(r.status, 1);
      assert.match(r.stderr, /^overlayctl: etcd list/);
      const m = ctl(["--etcd-cafile", "/nonexistent/ca.pem"]);
      assert.equal(m.status, 1);
      assert.equal(m.stderr, "overlayctl: --etcd-cafile /nonexistent/ca.pem: ENOENT\n");
    });

    it("keeps an agent with the wrong CA not ready, saying why", async function () {
      const n3 = c.topo.addNode(3);
      const a = c.startAgent(n3, [
        "--etcd-cafile",
        certs.otherCa,
        "--etcd-certfile",
        certs.clientCert,
        "--etcd-keyfile",
        certs.clientKey,
      ]);
      await waitFor(
        "a TLS error in the log",
        () => /waiting for a valid network config.*etcd get/.test(a.logs),
        30000,
      );
      assert.ok(a.running);
      const r = a.http("/readyz");
      assert.equal(r.status, 503);
      assert.match(JSON.parse(r.body).checks.config, /etcd get \/coreos\.com\/network\/config/);
      await a.stop("SIGKILL");
    });

    it("exposes no key material or file paths on /metrics and /readyz", function () {
      const key = readFileSync(certs.clientKey, "utf8").split("\n")[1] as string;
      for (const body of [
        c.agent(n1).http("/metrics", 9474).body,
        c.agent(n1).http("/readyz").body,
      ]) {
        assert.ok(!body.includes(key), "private key leaked");
        assert.ok(!body.includes(certs.dir), "certificate paths leaked");
      }
    });
  });

  describe("username/password auth and bind addresses", function () {
    const c = new Cluster();
    let n1: NodeInfo;
    const PASSWORD = "s3cr3t-overlayd-pw";

    before(async function () {
      requireEnv(this, { root: true, tools: ["etcd", "ip"] });
      await c.start(2);
      n1 = c.nodes[0]!;
      // Turn auth on under the running agents, then restart them with credentials.
      c.etcd.ctl(["user", "add", `root:${PASSWORD}`]);
      c.etcd.ctl(["auth", "enable"]);
      c.etcd.setCtlUser(`root:${PASSWORD}`);
      for (const n of c.nodes) {
        await c.agent(n).stop("SIGTERM");
        c.startAgent(n, ["--etcd-username", "root", "--etcd-password", PASSWORD]);
      }
      for (const n of c.nodes) await c.agent(n).waitReady();
    });
    after(async function () {
      await c.stop();
    });

    it("works with the right password and fails clearly with a wrong one", function () {
      assert.ok(c.etcd.list(`${PREFIX}/subnets/`).size >= 2);
      const bad = shStatus(
        inNs(n1.ns, [
          "node",
          OVERLAYCTL,
          "lease",
          "list",
          "--etcd-endpoints",
          c.endpoints(),
          "--etcd-username",
          "root",
          "--etcd-password",
          "wrong",
        ]),
      );
      assert.equal(bad.status, 1);
      assert.match(
        bad.stderr,
        /^overlayctl: etcd list .*(authentication failed|invalid user ID or password)/i,
      );
      const none = shStatus(
        inNs(n1.ns, ["node", OVERLAYCTL, "lease", "list", "--etcd-endpoints", c.endpoints()]),
      );
      assert.equal(none.status, 1);
      assert.match(none.stderr, /user name is empty|permission denied|auth/i);
    });

    it("binds /healthz where told (loopback) and /metrics on all addresses, leaking no password", function () {
      // From the switch namespace: metrics reachable, healthz not.
      const metrics = httpInNs(c.topo.switchNs, `http://${n1.underlayIp}:9474/metrics`);
      assert.equal(metrics.status, 200);
      const health = httpInNs(c.topo.switchNs, `http://${n1.underlayIp}:9473/healthz`);
      assert.equal(health.status, 0, "healthz must not answer off-host when bound to 127.0.0.1");
      assert.equal(c.agent(n1).http("/healthz").status, 200);
      for (const body of [metrics.body, c.agent(n1).http("/readyz").body])
        assert.ok(!body.includes(PASSWORD));
      const cmdline = readFileSync(`/proc/${c.agent(n1).pid}/cmdline`, "utf8");
      assert.ok(
        cmdline.includes(PASSWORD),
        "(the flag is visible in /proc, as for flannel; OVERLAYD_ETCD_PASSWORD avoids that)",
      );
    });
  });
});
