import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import {
  parseSubnetEnv,
  previousSubnet,
  renderSubnetEnv,
  writeSubnetEnv,
} from "../../agent/control/subnet-env";
import { masqRules, restoreInput } from "../../agent/net/ipmasq";
import { parseHostPort } from "../../agent/http";
import { createLogger } from "../../agent/log";
import { Cidr } from "../../agent/net/ip";

describe("unit: subnet.env, masquerade rules, flags, logging", function () {
  const env = {
    network: Cidr.parse("10.5.0.0/16"),
    subnet: Cidr.parse("10.5.7.0/24"),
    mtu: 1450,
    ipMasq: true,
  };

  it("renders flannel's subnet.env (first usable address of the subnet)", function () {
    assert.equal(
      renderSubnetEnv(env),
      "FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.7.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n",
    );
    assert.equal(parseSubnetEnv(renderSubnetEnv(env)).FLANNEL_MTU, "1450");
  });

  it("writes it atomically and reads the previous subnet back", function () {
    const dir = mkdtempSync(join(tmpdir(), "ovl-unit-"));
    try {
      const path = join(dir, "run", "subnet.env");
      writeSubnetEnv(path, env);
      assert.equal(readFileSync(path, "utf8"), renderSubnetEnv(env));
      assert.deepEqual(readdirSync(join(dir, "run")), ["subnet.env"], "no temp file left");
      assert.equal(previousSubnet(path)?.toString(), "10.5.7.0/24");
      assert.equal(previousSubnet(join(dir, "missing")), undefined);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it("masquerades pods to the outside but not pod to pod, nor what kube-proxy marked", function () {
    const rules = masqRules(env.network, env.subnet);
    assert.match(rules[0]!, /^-A OVERLAYD-POSTRTG -m mark --mark 0x4000\/0x4000 .* -j RETURN$/);
    assert.match(
      rules[1]!,
      /^-A OVERLAYD-POSTRTG -s 10\.5\.7\.0\/24 -d 10\.5\.0\.0\/16 .* -j RETURN$/,
    );
    assert.ok(
      rules.some((r) =>
        /-s 10\.5\.0\.0\/16 ! -d 224\.0\.0\.0\/4 .*-j MASQUERADE --random-fully/.test(r),
      ),
    );
    const input = restoreInput(env.network, env.subnet);
    assert.match(input, /^\*nat\n:OVERLAYD-POSTRTG - \[0:0\]\n/);
    assert.match(input, /\nCOMMIT\n$/);
    assert.doesNotMatch(
      input,
      /^:POSTROUTING/m,
      "never declares (and so never flushes) a built-in chain",
    );
  });

  it("parses HOST:PORT and names the flag on error", function () {
    assert.deepEqual(parseHostPort("127.0.0.1:9473", "--healthz-addr"), {
      host: "127.0.0.1",
      port: 9473,
    });
    assert.deepEqual(parseHostPort(":9474", "--metrics-addr"), { host: "0.0.0.0", port: 9474 });
    assert.deepEqual(parseHostPort("[::1]:1", "--x"), { host: "::1", port: 1 });
    assert.throws(
      () => parseHostPort("9474", "--metrics-addr"),
      /--metrics-addr 9474: want HOST:PORT/,
    );
  });

  it("logs logfmt lines at or above the level", function () {
    const lines: string[] = [];
    const log = createLogger("warn", (l) => lines.push(l));
    log.info("hidden");
    log.warn("lease lost", { subnet: "10.5.1.0/24", why: "two words" });
    assert.equal(lines.length, 1);
    assert.match(lines[0]!, /level=warn msg="lease lost" subnet=10.5.1.0\/24 why="two words"\n$/);
  });
});

describe("unit: OVERLAYD_* environment", function () {
  it("keeps variables that name flags and drops the rest (Kubernetes service variables)", async function () {
    const { dropUnknownEnv } = await import("../../agent/flags.js");
    const env: NodeJS.ProcessEnv = {
      OVERLAYD_ETCD_ENDPOINTS: "http://e:2379",
      OVERLAYD_SERVICE_HOST: "10.96.0.7",
      OVERLAYD_PORT_9474_TCP: "tcp://10.96.0.7:9474",
      PATH: "/bin",
    };
    const dropped = dropUnknownEnv("OVERLAYD", ["etcd-endpoints", "pin-path"], env);
    assert.deepEqual(dropped.sort(), ["OVERLAYD_PORT_9474_TCP", "OVERLAYD_SERVICE_HOST"]);
    assert.deepEqual(Object.keys(env).sort(), ["OVERLAYD_ETCD_ENDPOINTS", "PATH"]);
  });
});
