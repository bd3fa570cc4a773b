// scripts/check-manifests.ts: the manifests under deploy/ pass, and each
// schema check and reviewer rule catches a mutated copy of the real
// DaemonSet with exactly one line that names the field and the rule.
import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  checkDocs,
  checkFiles,
  manifestFiles,
  parseFile,
  ROOT,
  type Doc,
} from "../../scripts/check-manifests";
import { shStatus } from "../lib/sh";
import type { Obj } from "../lib/deploy";

const FILE = "deploy/kubernetes/overlayd.yaml";
const DS = `${FILE}: DaemonSet overlayd-system/overlayd`;
const POD = "spec.template.spec";
const AGENT = `${POD}.containers[0]`;

describe("unit: manifest checks (scripts/check-manifests.ts)", function () {
  const { docs: real, errors } = parseFile(FILE, readFileSync(join(ROOT, FILE), "utf8"));

  /** The file's documents with the DaemonSet changed by `mutate`, checked. */
  function check(mutate: (ds: Obj, pod: Obj, agent: Obj) => void): string[] {
    const docs: Doc[] = real.map((d) => ({ ...d, obj: structuredClone(d.obj) }));
    const ds = docs.map((d) => d.obj as Obj).find((o) => o.kind === "DaemonSet");
    const pod = ds.spec.template.spec;
    mutate(
      ds,
      pod,
      pod.containers.find((c: Obj) => c.name === "overlayd"),
    );
    return checkDocs(docs);
  }

  it("passes every manifest under deploy/", function () {
    assert.deepEqual(errors, []);
    const files = manifestFiles();
    assert.ok(files.some((f) => f.endsWith("overlayd.yaml")));
    assert.ok(files.some((f) => f.endsWith("overlayd-etcd.example.yaml")));
    assert.deepEqual(checkFiles(files), []);
    assert.deepEqual(
      check(() => {}),
      [],
    );
  });

  it("rejects an unknown field (a typo the API server would drop)", function () {
    assert.deepEqual(
      check((_ds, pod) => {
        pod.hostNetwrok = pod.hostNetwork;
        delete pod.hostNetwork;
      }),
      [
        `${DS}: ${POD}.hostNetwrok: unknown field`,
        `${DS}: ${POD}.hostNetwork: not set, want true: the agent programs the node's own links, routes and BPF hooks [host-network]`,
      ],
    );
    assert.deepEqual(
      check((_ds, _pod, c) => (c.securityContext.capabilities.addd = ["SYS_ADMIN"])),
      [`${DS}: ${AGENT}.securityContext.capabilities.addd: unknown field`],
    );
  });

  it("accepts any key in maps (labels, annotations, requests)", function () {
    assert.deepEqual(
      check((ds, _pod, c) => {
        ds.metadata.labels["example.com/team"] = "net";
        ds.spec.template.metadata.annotations["example.com/x"] = "y";
        c.resources.limits["example.com/nic"] = 1;
      }),
      [],
    );
  });

  it("reports schema type and enum errors", function () {
    assert.deepEqual(
      check((ds, pod) => {
        pod.hostNetwork = "true";
        ds.spec.updateStrategy.type = "Rolling";
      }),
      [
        `${DS}: ${POD}.hostNetwork: "true", want boolean`,
        `${DS}: spec.updateStrategy.type: "Rolling", want one of OnDelete, RollingUpdate`,
        `${DS}: ${POD}.hostNetwork: "true", want true: the agent programs the node's own links, routes and BPF hooks [host-network]`,
        `${DS}: spec.updateStrategy.type: "Rolling", want RollingUpdate [update-strategy]`,
      ],
    );
    assert.deepEqual(
      check((_ds, pod) => delete pod.containers[0].name),
      [
        `${DS}: ${AGENT}.name: required field missing`,
        `${DS}: ${POD}.containers: no container named overlayd (the agent) [agent-container]`,
      ],
    );
  });

  it("requires /sys/fs/bpf and /run/flannel from the host", function () {
    assert.deepEqual(
      check((_ds, _pod, c) => {
        c.volumeMounts = c.volumeMounts.filter((m: Obj) => m.mountPath !== "/run/flannel");
      }),
      [
        `${DS}: ${AGENT}.volumeMounts: does not mount /run/flannel (want a hostPath volume of /run/flannel) [host-mounts]`,
      ],
    );
    assert.deepEqual(
      check((_ds, pod) => {
        pod.volumes[0] = { name: "bpffs", emptyDir: {} };
      }),
      [
        `${DS}: ${POD}.volumes[0]: volume "bpffs" mounted at /sys/fs/bpf is not hostPath /sys/fs/bpf [host-mounts]`,
      ],
    );
  });

  it("requires tolerating every taint", function () {
    const want = `${DS}: ${POD}.tolerations: does not tolerate every taint: want { operator: Exists } without key, effect or tolerationSeconds [tolerations]`;
    assert.deepEqual(
      check((_ds, pod) => {
        pod.tolerations = [
          {
            key: "node-role.kubernetes.io/control-plane",
            operator: "Exists",
            effect: "NoSchedule",
          },
        ];
      }),
      [want],
    );
    // Evicted 5 minutes after a NoExecute taint is not "every taint".
    assert.deepEqual(
      check((_ds, pod) => {
        pod.tolerations = [
          { operator: "Exists", effect: "NoSchedule" },
          { operator: "Exists", effect: "NoExecute", tolerationSeconds: 300 },
        ];
      }),
      [want],
    );
    // One keyless toleration per blocking effect is the full set.
    assert.deepEqual(
      check((_ds, pod) => {
        pod.tolerations = [
          { operator: "Exists", effect: "NoSchedule" },
          { operator: "Exists", effect: "NoExecute" },
        ];
      }),
      [],
    );
  });

  it("requires priorityClassName system-node-critical, and its quota outside kube-system", function () {
    assert.deepEqual(
      check((_ds, pod) => (pod.priorityClassName = "system-cluster-critical")),
      [
        `${DS}: ${POD}.priorityClassName: "system-cluster-critical", want system-node-critical: a node without its network agent is broken [priority-class]`,
      ],
    );
    const withoutQuota = real.filter((d) => (d.obj as Obj).kind !== "ResourceQuota");
    assert.deepEqual(checkDocs(withoutQuota), [
      `${DS}: ${POD}.priorityClassName: system-node-critical outside kube-system needs a ResourceQuota in overlayd-system scoped to that PriorityClass [priority-class]`,
    ]);
  });

  it("requires the namespace to allow privileged pods", function () {
    const docs = real.map((d) => ({ ...d, obj: structuredClone(d.obj) as Obj }));
    const ns = docs.find((d) => d.obj.kind === "Namespace")?.obj;
    ns.metadata.labels["pod-security.kubernetes.io/enforce"] = "baseline";
    assert.deepEqual(checkDocs(docs), [
      `${DS}: metadata.namespace: namespace overlayd-system enforces pod security "baseline": host network, hostPath and capabilities need "privileged" [pod-security]`,
    ]);
  });

  it("requires cpu and memory requests on every container", function () {
    assert.deepEqual(
      check((_ds, pod, c) => {
        delete c.resources.requests;
        delete pod.initContainers[0].resources.requests.memory;
      }),
      [
        `${DS}: ${POD}.initContainers[0].resources.requests.memory: not set: every container requests cpu and memory [requests]`,
        `${DS}: ${AGENT}.resources.requests.cpu: not set: every container requests cpu and memory [requests]`,
        `${DS}: ${AGENT}.resources.requests.memory: not set: every container requests cpu and memory [requests]`,
      ],
    );
  });

  it("requires a rolling update with maxUnavailable and no surge", function () {
    assert.deepEqual(
      check((ds) => delete ds.spec.updateStrategy.rollingUpdate.maxUnavailable),
      [
        `${DS}: spec.updateStrategy.rollingUpdate.maxUnavailable: not set: say how many nodes may restart their agent at once [update-strategy]`,
      ],
    );
    assert.deepEqual(
      check((ds) => {
        ds.spec.updateStrategy.rollingUpdate = { maxUnavailable: "10%", maxSurge: 1 };
      }),
      [
        `${DS}: spec.updateStrategy.rollingUpdate.maxSurge: 1, want 0: two agents on one node's host network share its ports and BPF pins [update-strategy]`,
      ],
    );
    assert.deepEqual(
      check((ds) => (ds.spec.updateStrategy = { type: "OnDelete" })),
      [`${DS}: spec.updateStrategy.type: "OnDelete", want RollingUpdate [update-strategy]`],
    );
  });

  it("requires exactly the capabilities the agent checks (or privileged)", function () {
    assert.deepEqual(
      check((_ds, _pod, c) => (c.securityContext.capabilities.add = ["BPF", "NET_ADMIN"])),
      [
        `${DS}: ${AGENT}.securityContext.capabilities.add: lacks NET_RAW, PERFMON: the agent refuses to start without CAP_BPF, CAP_NET_ADMIN, CAP_NET_RAW, CAP_PERFMON [privileges]`,
      ],
    );
    assert.deepEqual(
      check((_ds, _pod, c) => {
        c.securityContext.capabilities = {
          add: ["CAP_BPF", "NET_ADMIN", "NET_RAW", "PERFMON", "SYS_ADMIN"],
        };
      }),
      [
        `${DS}: ${AGENT}.securityContext.capabilities.drop: not set, want ["ALL"] (or privileged: true) [privileges]`,
        `${DS}: ${AGENT}.securityContext.capabilities.add: adds SYS_ADMIN, which the agent does not need (it needs BPF, NET_ADMIN, NET_RAW, PERFMON) [privileges]`,
      ],
    );
    assert.deepEqual(
      check((_ds, _pod, c) => {
        c.securityContext = { privileged: true };
      }),
      [],
    );
  });

  it("requires an Unconfined seccomp profile without privileged", function () {
    assert.deepEqual(
      check((_ds, _pod, c) => (c.securityContext.seccompProfile = { type: "RuntimeDefault" })),
      [
        `${DS}: ${AGENT}.securityContext.seccompProfile.type: "RuntimeDefault", want Unconfined: the runtime's default profile refuses bpf() without CAP_SYS_ADMIN [seccomp]`,
      ],
    );
  });

  it("requires probes on /healthz and /readyz where the agent serves them", function () {
    assert.deepEqual(
      check((_ds, _pod, c) => (c.livenessProbe.httpGet.path = "/health")),
      [`${DS}: ${AGENT}.livenessProbe.httpGet.path: "/health", want /healthz [probes]`],
    );
    assert.deepEqual(
      check((_ds, _pod, c) => (c.readinessProbe.httpGet.port = 9474)),
      [
        `${DS}: ${AGENT}.readinessProbe.httpGet.port: 9474, want 9473 (--healthz-addr 127.0.0.1:9473) [probes]`,
      ],
    );
    // On the host network a probe without host goes to the node's IP, where
    // an agent bound to loopback does not listen.
    assert.deepEqual(
      check((_ds, _pod, c) => delete c.livenessProbe.httpGet.host),
      [
        `${DS}: ${AGENT}.livenessProbe.httpGet.host: not set, want 127.0.0.1: the agent listens on 127.0.0.1:9473 only [probes]`,
      ],
    );
    // Bound to every address, the default host (the node's IP) is right.
    assert.deepEqual(
      check((_ds, _pod, c) => {
        c.args = c.args.map((a: string) =>
          a.startsWith("--healthz-addr=") ? "--healthz-addr=0.0.0.0:9480" : a,
        );
        c.ports.push({ name: "healthz", containerPort: 9480 });
        for (const p of [c.livenessProbe, c.readinessProbe]) {
          delete p.httpGet.host;
          p.httpGet.port = "healthz";
        }
      }),
      [],
    );
    // Without the flag the agent's default applies.
    assert.deepEqual(
      check((_ds, _pod, c) => {
        c.args = c.args.filter((a: string) => !a.startsWith("--healthz-addr"));
        c.env.push({ name: "OVERLAYD_HEALTHZ_ADDR", value: "127.0.0.1:9500" });
      }),
      [
        `${DS}: ${AGENT}.livenessProbe.httpGet.port: 9473, want 9500 (--healthz-addr 127.0.0.1:9500) [probes]`,
        `${DS}: ${AGENT}.readinessProbe.httpGet.port: 9473, want 9500 (--healthz-addr 127.0.0.1:9500) [probes]`,
      ],
    );
    assert.deepEqual(
      check((_ds, _pod, c) => {
        c.readinessProbe = { exec: { command: ["true"] } };
      }),
      [`${DS}: ${AGENT}.readinessProbe: want an httpGet on /readyz at 127.0.0.1:9473 [probes]`],
    );
  });

  it("names documents it has no schema for, and YAML errors with their line", function () {
    const { docs, errors } = parseFile(
      "x.yaml",
      "apiVersion: v1\nkind: Namespace\nmetadata: { name: a, name: b }\n---\n" +
        "apiVersion: example.com/v1\nkind: Widget\nmetadata: { name: w }\n---\n" +
        "just: a map\n",
    );
    assert.deepEqual(errors, ["x.yaml:3:22: Map keys must be unique"]);
    assert.deepEqual(checkDocs(docs), [
      "x.yaml: Widget w: no schema for apiVersion example.com/v1 kind Widget",
      "x.yaml: document 3: not a Kubernetes object (no apiVersion and kind)",
    ]);
  });

  it("runs as a script: one line per problem on stderr, exit 1", function () {
    const dir = mkdtempSync(join(tmpdir(), "overlayd-manifests-"));
    try {
      const bad = join(dir, "bad.yaml");
      const text = readFileSync(join(ROOT, FILE), "utf8");
      writeFileSync(
        bad,
        text.replace(
          "hostNetwork: true",
          "hostNetwork: true\n      hostPID: yes\n      hostNetwrok: true",
        ),
      );
      const script = join(ROOT, "dist", "scripts", "check-manifests.js");
      const r = shStatus(["node", script, bad]);
      assert.equal(r.status, 1, r.stderr);
      assert.equal(r.stdout, "");
      const where = `${bad}: DaemonSet overlayd-system/overlayd`;
      assert.equal(r.stderr, `${where}: ${POD}.hostNetwrok: unknown field\n`);
      assert.equal(shStatus(["node", script, join(ROOT, FILE)]).status, 0);
      assert.equal(shStatus(["node", script, "--help"]).status, 2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
