// Checks every Kubernetes manifest under deploy/ before a cluster sees one:
//
// 1. Each YAML document against the Kubernetes API schema of its apiVersion
//    and kind, as shipped by the kubernetes-models package (its ajv
//    validators). Kubernetes' OpenAPI schemas do not forbid unknown fields,
//    so a typo such as `hostNetwrok` passes them; the API server drops it
//    with a warning and the pod runs without host networking. The check runs
//    the validator over a traced copy of the object: a field the schema's
//    validator never reads is one the schema does not declare (maps such as
//    labels are enumerated, so any key passes there), and it is reported as
//    an unknown field, the way `kubectl apply --validate=strict` would.
// 2. The agent's DaemonSet against what a reviewer checks, one named rule
//    per failure (see RULES below). The capabilities and the healthz address
//    come from the agent's own code, not from a copy.
//
// Every problem is one line:
//   deploy/kubernetes/overlayd.yaml: DaemonSet overlayd-system/overlayd: spec.template.spec.hostNetwrok: unknown field
// and a reviewer rule's line ends with the rule's name in brackets.
//
// usage: node dist/scripts/check-manifests.js [FILE.yaml ...]   (default: deploy/**/*.yaml)
// Exits 1 when anything fails, 2 on a usage error.
import { readdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join, relative } from "node:path";
import { parseAllDocuments } from "yaml";
import { REQUIRED } from "../agent/caps";
import { DEFAULTS } from "../agent/flags";
import { parseHostPort } from "../agent/http";

/** The repository root (this file runs as dist/scripts/check-manifests.js). */
export const ROOT = join(__dirname, "..", "..");

type Seg = string | number;
type Obj = Record<string, unknown>;

export interface Doc {
  /** Path as printed, relative to the repository root. */
  file: string;
  /** Its place in the file, from 1. */
  n: number;
  obj: unknown;
}

interface Problem {
  path: Seg[];
  message: string;
  /** The reviewer rule that failed; schema problems have none. */
  rule?: string;
}

const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);
const obj = (v: unknown): Obj => (isObj(v) ? v : {});
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const show = (v: unknown): string => (v === undefined ? "not set" : JSON.stringify(v));

/** spec.template.spec.containers[0].name; keys that are not identifiers in brackets. */
export function formatPath(path: Seg[]): string {
  let out = "";
  for (const s of path) {
    if (typeof s === "number") out += `[${s}]`;
    else if (/^[A-Za-z_$][\w$-]*$/.test(s)) out += out ? `.${s}` : s;
    else out += `[${JSON.stringify(s)}]`;
  }
  return out || "(document)";
}

// --- 1. The API schemas ---------------------------------------------------

interface AjvError {
  instancePath: string;
  keyword: string;
  params: Record<string, unknown>;
}
interface ModelClass {
  apiVersion?: unknown;
  kind?: unknown;
  prototype: { validate(this: unknown): void };
}

const load = createRequire(__filename);

/** kubernetes-models' class for apiVersion/kind, or undefined if it has none. */
function modelFor(apiVersion: string, kind: string): ModelClass | undefined {
  // "v1" is kubernetes-models/v1, "apps/v1" kubernetes-models/apps/v1.
  if (!/^([a-z0-9-]+(\.[a-z0-9-]+)*\/)?v\d+((alpha|beta)\d+)?$/.test(apiVersion)) return undefined;
  let mod: Record<string, ModelClass | undefined>;
  try {
    mod = load(`kubernetes-models/${apiVersion}`) as typeof mod;
  } catch (e) {
    // An API group the package does not ship; anything else (the package
    // missing altogether) is not a finding about the manifest.
    if ((e as { code?: string }).code === "ERR_PACKAGE_PATH_NOT_EXPORTED") return undefined;
    throw e;
  }
  const m = mod[kind];
  return m && m.apiVersion === apiVersion && m.kind === kind ? m : undefined;
}

/** JSON pointer (ajv's instancePath) to path segments, indexes as numbers. */
function fromPointer(root: unknown, pointer: string): Seg[] {
  const out: Seg[] = [];
  let v: unknown = root;
  for (const raw of pointer.split("/").slice(1)) {
    const key = raw.replace(/~1/g, "/").replace(/~0/g, "~");
    if (Array.isArray(v)) {
      out.push(Number(key));
      v = v[Number(key)];
    } else {
      out.push(key);
      v = obj(v)[key];
    }
  }
  return out;
}

function valueAt(root: unknown, path: Seg[]): unknown {
  let v = root;
  for (const s of path) v = Array.isArray(v) ? v[s as number] : obj(v)[s];
  return v;
}

function schemaProblem(root: unknown, e: AjvError): Problem {
  const path = fromPointer(root, e.instancePath);
  const p = e.params;
  switch (e.keyword) {
    case "required":
      return { path: [...path, String(p.missingProperty)], message: "required field missing" };
    case "type":
      return { path, message: `${show(valueAt(root, path))}, want ${String(p.type)}` };
    case "enum":
      return {
        path,
        message: `${show(valueAt(root, path))}, want one of ${arr(p.allowedValues).join(", ")}`,
      };
    case "format":
      return { path, message: `${show(valueAt(root, path))} is not a valid ${String(p.format)}` };
    default:
      return { path, message: `fails the schema's ${e.keyword} ${JSON.stringify(p)}` };
  }
}

/**
 * Runs the kind's validator on a traced view of `root` and returns its
 * problems, then every field it never looked at as an unknown field.
 */
function validateSchema(model: ModelClass, root: unknown): Problem[] {
  // For each object: the keys the validator read, or "any" where it
  // enumerated the keys (a map: labels, annotations, ConfigMap data).
  const seen = new WeakMap<object, Set<PropertyKey> | "any">();
  const views = new WeakMap<object, object>();
  const note = (t: object, k: PropertyKey) => {
    const s = seen.get(t);
    if (s === undefined) seen.set(t, new Set([k]));
    else if (s !== "any") s.add(k);
  };
  const view = (v: unknown): unknown => {
    if (typeof v !== "object" || v === null) return v;
    let p = views.get(v);
    if (!p) {
      p = new Proxy(v, {
        get(t, k) {
          note(t, k);
          return view(Reflect.get(t, k));
        },
        has(t, k) {
          note(t, k);
          return Reflect.has(t, k);
        },
        ownKeys(t) {
          seen.set(t, "any");
          return Reflect.ownKeys(t);
        },
      });
      views.set(v, p);
    }
    return p;
  };

  const out: Problem[] = [];
  try {
    model.prototype.validate.call(view(root));
  } catch (e) {
    const errors = (e as { errors?: unknown }).errors;
    if (!Array.isArray(errors)) throw e;
    for (const err of errors as AjvError[]) out.push(schemaProblem(root, err));
  }

  const walk = (v: unknown, path: Seg[]) => {
    if (Array.isArray(v)) {
      v.forEach((x, i) => walk(x, [...path, i]));
    } else if (isObj(v)) {
      // Never read at all: the schema declares no properties here (free
      // form), or a type error above stopped the validator first.
      const s = seen.get(v);
      for (const [k, x] of Object.entries(v)) {
        if (s instanceof Set && !s.has(k))
          out.push({ path: [...path, k], message: "unknown field" });
        else walk(x, [...path, k]);
      }
    }
  };
  walk(root, []);
  return out;
}

// --- 2. The DaemonSet, as a reviewer reads it -----------------------------

const POD: Seg[] = ["spec", "template", "spec"];
/** The container that runs the agent (the install-cni init container does not). */
export const AGENT_CONTAINER = "overlayd";
const CAPS_WANT = REQUIRED.map((c) => c.replace(/^CAP_/, ""));

interface Context {
  ds: Obj;
  pod: Obj;
  /** Every document checked, for rules that look across objects. */
  all: Obj[];
}
interface Agent {
  c: Obj;
  path: Seg[];
}
type Rule = (ctx: Context, agent: Agent | undefined) => Problem[];

const normCap = (c: unknown) => String(c).toUpperCase().replace(/^CAP_/, "");
const isLoopback = (h: string) => h === "localhost" || h === "::1" || /^127\./.test(h);
const isWildcard = (h: string) => h === "0.0.0.0" || h === "::";

/** Where the agent serves /healthz: its --healthz-addr, the env, or the default. */
function healthzAddr(c: Obj): string | undefined {
  let addr: string | undefined;
  const env = arr(c.env).map(obj);
  const e = env.find((x) => x.name === "OVERLAYD_HEALTHZ_ADDR");
  if (e) addr = typeof e.value === "string" ? e.value : undefined;
  else addr = DEFAULTS.healthzAddr;
  const argv = [...arr(c.command), ...arr(c.args)].map(String);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i] as string;
    if (a.startsWith("--healthz-addr=")) addr = a.slice("--healthz-addr=".length);
    else if (a === "--healthz-addr" && i + 1 < argv.length) addr = argv[++i];
  }
  return addr;
}

function namespaceOf(o: Obj): string {
  return String(obj(o.metadata).namespace ?? "default");
}

export const RULES: Record<string, Rule> = {
  "host-network": ({ pod }) =>
    pod.hostNetwork === true
      ? []
      : [
          {
            path: [...POD, "hostNetwork"],
            message: `${show(pod.hostNetwork)}, want true: the agent programs the node's own links, routes and BPF hooks`,
          },
        ],

  "host-mounts": ({ pod }, agent) => {
    if (!agent) return [];
    const out: Problem[] = [];
    const volumes = arr(pod.volumes).map(obj);
    const mounts = arr(agent.c.volumeMounts).map(obj);
    for (const dir of ["/sys/fs/bpf", "/run/flannel"]) {
      const m = mounts.find((x) => x.mountPath === dir);
      if (!m) {
        out.push({
          path: [...agent.path, "volumeMounts"],
          message: `does not mount ${dir} (want a hostPath volume of ${dir})`,
        });
        continue;
      }
      const vi = volumes.findIndex((v) => v.name === m.name);
      const host = obj(volumes[vi]?.hostPath).path;
      if (host !== dir) {
        out.push({
          path: vi < 0 ? [...POD, "volumes"] : [...POD, "volumes", vi],
          message: `volume ${show(m.name)} mounted at ${dir} is ${vi < 0 ? "not declared" : `not hostPath ${dir}`}`,
        });
      }
    }
    return out;
  },

  tolerations: ({ pod }) => {
    const ts = arr(pod.tolerations).map(obj);
    const anyKey = (t: Obj) =>
      t.operator === "Exists" && !t.key && t.tolerationSeconds === undefined;
    if (ts.some((t) => anyKey(t) && !t.effect)) return [];
    // Or one per effect that keeps a pod off a node or evicts it.
    if (["NoSchedule", "NoExecute"].every((e) => ts.some((t) => anyKey(t) && t.effect === e)))
      return [];
    return [
      {
        path: [...POD, "tolerations"],
        message:
          "does not tolerate every taint: want { operator: Exists } without key, effect or tolerationSeconds",
      },
    ];
  },

  "priority-class": ({ ds, pod, all }) => {
    if (pod.priorityClassName !== "system-node-critical") {
      return [
        {
          path: [...POD, "priorityClassName"],
          message: `${show(pod.priorityClassName)}, want system-node-critical: a node without its network agent is broken`,
        },
      ];
    }
    // Clusters that limit the critical classes to namespaces with a matching
    // quota (the ResourceQuota admission plugin's limitedResources; GKE does
    // by default) refuse the pods without one.
    const ns = namespaceOf(ds);
    if (ns === "kube-system") return [];
    const quota = all.some(
      (o) =>
        o.kind === "ResourceQuota" &&
        namespaceOf(o) === ns &&
        arr(obj(obj(o.spec).scopeSelector).matchExpressions)
          .map(obj)
          .some(
            (e) =>
              e.scopeName === "PriorityClass" &&
              e.operator === "In" &&
              arr(e.values).includes("system-node-critical"),
          ),
    );
    return quota
      ? []
      : [
          {
            path: [...POD, "priorityClassName"],
            message: `system-node-critical outside kube-system needs a ResourceQuota in ${ns} scoped to that PriorityClass`,
          },
        ];
  },

  "pod-security": ({ ds, all }) => {
    const ns = all.find((o) => o.kind === "Namespace" && obj(o.metadata).name === namespaceOf(ds));
    if (!ns) return [];
    const level = obj(obj(ns.metadata).labels)["pod-security.kubernetes.io/enforce"];
    return level === "privileged"
      ? []
      : [
          {
            path: ["metadata", "namespace"],
            message: `namespace ${namespaceOf(ds)} enforces pod security ${show(level)}: host network, hostPath and capabilities need "privileged"`,
          },
        ];
  },

  requests: ({ pod }) => {
    const out: Problem[] = [];
    for (const list of ["initContainers", "containers"]) {
      arr(pod[list]).forEach((c, i) => {
        const req = obj(obj(obj(c).resources).requests);
        for (const r of ["cpu", "memory"]) {
          if (req[r] === undefined) {
            out.push({
              path: [...POD, list, i, "resources", "requests", r],
              message: "not set: every container requests cpu and memory",
            });
          }
        }
      });
    }
    return out;
  },

  "update-strategy": ({ ds }) => {
    const us = obj(obj(ds.spec).updateStrategy);
    const base: Seg[] = ["spec", "updateStrategy"];
    if (us.type !== "RollingUpdate") {
      return [{ path: [...base, "type"], message: `${show(us.type)}, want RollingUpdate` }];
    }
    const ru = obj(us.rollingUpdate);
    const out: Problem[] = [];
    const mu = ru.maxUnavailable;
    if (mu === undefined) {
      out.push({
        path: [...base, "rollingUpdate", "maxUnavailable"],
        message: "not set: say how many nodes may restart their agent at once",
      });
    } else if (mu === 0 || mu === "0%") {
      out.push({
        path: [...base, "rollingUpdate", "maxUnavailable"],
        message: `${show(mu)}, want at least 1: the old agent must stop before the new one starts`,
      });
    }
    if (ru.maxSurge !== undefined && ru.maxSurge !== 0 && ru.maxSurge !== "0%") {
      out.push({
        path: [...base, "rollingUpdate", "maxSurge"],
        message: `${show(ru.maxSurge)}, want 0: two agents on one node's host network share its ports and BPF pins`,
      });
    }
    return out;
  },

  privileges: (_ctx, agent) => {
    if (!agent) return [];
    const sc = obj(agent.c.securityContext);
    if (sc.privileged === true) return [];
    const out: Problem[] = [];
    const at: Seg[] = [...agent.path, "securityContext", "capabilities"];
    const caps = obj(sc.capabilities);
    if (!arr(caps.drop).map(normCap).includes("ALL")) {
      out.push({
        path: [...at, "drop"],
        message: `${show(caps.drop)}, want ["ALL"] (or privileged: true)`,
      });
    }
    const add = arr(caps.add).map(normCap);
    const missing = CAPS_WANT.filter((c) => !add.includes(c));
    const extra = add.filter((c) => !CAPS_WANT.includes(c));
    if (missing.length) {
      out.push({
        path: [...at, "add"],
        message: `lacks ${missing.join(", ")}: the agent refuses to start without ${REQUIRED.join(", ")}`,
      });
    }
    if (extra.length) {
      out.push({
        path: [...at, "add"],
        message: `adds ${extra.join(", ")}, which the agent does not need (it needs ${CAPS_WANT.join(", ")})`,
      });
    }
    return out;
  },

  // Not privileged: the runtime's default seccomp profile refuses bpf() and
  // perf_event_open() without CAP_SYS_ADMIN (README, "Privileges").
  seccomp: ({ pod }, agent) => {
    if (!agent) return [];
    const sc = obj(agent.c.securityContext);
    if (sc.privileged === true) return [];
    const out: Problem[] = [];
    const profile =
      obj(sc.seccompProfile).type ?? obj(obj(pod.securityContext).seccompProfile).type;
    if (profile !== "Unconfined" && profile !== "Localhost") {
      out.push({
        path: [...agent.path, "securityContext", "seccompProfile", "type"],
        message: `${show(profile)}, want Unconfined: the runtime's default profile refuses bpf() without CAP_SYS_ADMIN`,
      });
    }
    return out;
  },

  probes: (_ctx, agent) => {
    if (!agent) return [];
    const { c, path } = agent;
    const addr = healthzAddr(c);
    if (addr === undefined) {
      return [{ path: [...path, "env"], message: "OVERLAYD_HEALTHZ_ADDR is not a literal value" }];
    }
    if (addr === "") {
      return [
        { path: [...path, "args"], message: "--healthz-addr is empty: no /healthz or /readyz" },
      ];
    }
    let hp: { host: string; port: number };
    try {
      hp = parseHostPort(addr, "--healthz-addr");
    } catch (e) {
      return [{ path: [...path, "args"], message: (e as Error).message }];
    }
    const out: Problem[] = [];
    const ports = arr(c.ports).map(obj);
    for (const [name, want] of [
      ["livenessProbe", "/healthz"],
      ["readinessProbe", "/readyz"],
    ] as const) {
      const at: Seg[] = [...path, name];
      const get = obj(c[name]).httpGet;
      if (!isObj(get)) {
        out.push({ path: at, message: `want an httpGet on ${want} at ${addr}` });
        continue;
      }
      if (get.path !== want) {
        out.push({ path: [...at, "httpGet", "path"], message: `${show(get.path)}, want ${want}` });
      }
      const port =
        typeof get.port === "string"
          ? ports.find((p) => p.name === get.port)?.containerPort
          : get.port;
      if (port !== hp.port) {
        out.push({
          path: [...at, "httpGet", "port"],
          message: `${show(get.port)}, want ${hp.port} (--healthz-addr ${addr})`,
        });
      }
      // Without a host the kubelet connects to the pod's IP, which on the
      // host network is the node's: right only for an agent bound to all.
      const host = typeof get.host === "string" ? get.host : "";
      const reaches = isWildcard(hp.host)
        ? true
        : isLoopback(hp.host)
          ? isLoopback(host) && (hp.host === "localhost" || host === hp.host)
          : host === hp.host;
      if (!reaches) {
        out.push({
          path: [...at, "httpGet", "host"],
          message: `${show(get.host)}, want ${hp.host === "localhost" ? "127.0.0.1" : hp.host}: the agent listens on ${addr} only`,
        });
      }
      if (get.scheme !== undefined && get.scheme !== "HTTP") {
        out.push({ path: [...at, "httpGet", "scheme"], message: `${show(get.scheme)}, want HTTP` });
      }
    }
    return out;
  },
};

function reviewDaemonSet(ds: Obj, all: Obj[]): Problem[] {
  const pod = obj(obj(obj(ds.spec).template).spec);
  const ci = arr(pod.containers).findIndex((c) => obj(c).name === AGENT_CONTAINER);
  const agent =
    ci < 0 ? undefined : { c: obj(arr(pod.containers)[ci]), path: [...POD, "containers", ci] };
  const out: Problem[] = [];
  if (!agent) {
    out.push({
      path: [...POD, "containers"],
      message: `no container named ${AGENT_CONTAINER} (the agent)`,
      rule: "agent-container",
    });
  }
  for (const [rule, check] of Object.entries(RULES)) {
    for (const p of check({ ds, pod, all }, agent)) out.push({ ...p, rule });
  }
  return out;
}

// --- Files and documents --------------------------------------------------

function describe(o: Obj): string {
  const md = obj(o.metadata);
  const name = md.namespace ? `${String(md.namespace)}/${String(md.name)}` : String(md.name);
  return `${String(o.kind)} ${name}`;
}

/** Checks parsed documents; returns one line per problem, in document order. */
export function checkDocs(docs: Doc[]): string[] {
  const all = docs.map((d) => d.obj).filter(isObj);
  const lines: string[] = [];
  for (const { file, n, obj: o } of docs) {
    if (o === null || o === undefined) continue; // an empty document
    if (!isObj(o) || typeof o.apiVersion !== "string" || typeof o.kind !== "string") {
      lines.push(`${file}: document ${n}: not a Kubernetes object (no apiVersion and kind)`);
      continue;
    }
    const what = `${file}: ${describe(o)}`;
    const model = modelFor(o.apiVersion, o.kind);
    if (!model) {
      lines.push(`${what}: no schema for apiVersion ${o.apiVersion} kind ${o.kind}`);
      continue;
    }
    const problems = validateSchema(model, o);
    if (o.kind === "DaemonSet") problems.push(...reviewDaemonSet(o, all));
    for (const p of problems) {
      const line = `${what}: ${formatPath(p.path)}: ${p.message}${p.rule ? ` [${p.rule}]` : ""}`;
      if (!lines.includes(line)) lines.push(line);
    }
  }
  return lines;
}

/**
 * Parses a file's YAML documents the way kubectl does (YAML 1.1: `yes` is a
 * boolean, `0644` octal). Duplicate keys and syntax errors are problems.
 */
export function parseFile(file: string, text: string): { docs: Doc[]; errors: string[] } {
  const docs: Doc[] = [];
  const errors: string[] = [];
  let n = 0;
  for (const d of parseAllDocuments(text, { version: "1.1" })) {
    n++;
    if (d.errors.length) {
      for (const e of d.errors) {
        const pos = e.linePos?.[0];
        errors.push(
          `${file}${pos ? `:${pos.line}:${pos.col}` : ""}: ${e.message.split("\n")[0]?.replace(/ at line \d+, column \d+:?$/, "")}`,
        );
      }
      continue;
    }
    docs.push({ file, n, obj: d.toJS() });
  }
  return { docs, errors };
}

/** deploy/**\/*.yaml, sorted. (deploy/prometheus/*.yml are Prometheus files.) */
export function manifestFiles(dir = join(ROOT, "deploy")): string[] {
  const out: string[] = [];
  for (const e of readdirSync(dir, { withFileTypes: true }).sort((a, b) =>
    a.name.localeCompare(b.name),
  )) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...manifestFiles(p));
    else if (e.name.endsWith(".yaml")) out.push(p);
  }
  return out;
}

/** Checks files together (rules look across them); one line per problem. */
export function checkFiles(paths: string[]): string[] {
  const docs: Doc[] = [];
  const lines: string[] = [];
  for (const p of paths) {
    // Relative to where it runs (make runs at the root), unless outside it.
    const rel = relative(process.cwd(), p);
    const r = parseFile(rel && !rel.startsWith("..") ? rel : p, readFileSync(p, "utf8"));
    docs.push(...r.docs);
    lines.push(...r.errors);
  }
  return [...lines, ...checkDocs(docs)];
}

if (require.main === module) {
  const args = process.argv.slice(2);
  if (args.some((a) => a.startsWith("-"))) {
    process.stderr.write("usage: check-manifests [FILE.yaml ...]  (default: deploy/**/*.yaml)\n");
    process.exit(2);
  }
  const lines = checkFiles(args.length ? args : manifestFiles());
  for (const l of lines) process.stderr.write(`${l}\n`);
  process.exitCode = lines.length ? 1 : 0;
}
