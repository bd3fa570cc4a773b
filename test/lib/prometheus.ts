// A real Prometheus (Debian's) in the switch namespace, scraping every agent
// of a cluster on the underlay once a second; queries through its HTTP API.
import { spawn, type ChildProcess } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Cluster } from "./cluster";
import { httpInNs, waitFor } from "./sh";

export interface Series {
  metric: Record<string, string>;
  value: [number, string];
}

export class Prometheus {
  private proc: ChildProcess | undefined;
  private log = "";

  /** addr: HOST:PORT on the switch's underlay address. */
  constructor(
    private readonly c: Cluster,
    readonly addr: string,
  ) {}

  /** Starts it and waits until every agent is a target that is up. */
  async start(): Promise<void> {
    const dir = join(this.c.topo.runDir, `prometheus-${this.addr.split(":").pop()}`);
    mkdirSync(join(dir, "data"), { recursive: true });
    const targets = this.c.nodes.map((n) => `"${n.underlayIp}:9474"`).join(", ");
    writeFileSync(
      join(dir, "prometheus.yml"),
      `global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: overlayd\n    static_configs:\n      - targets: [${targets}]\n`,
    );
    this.proc = spawn("ip", [
      "netns",
      "exec",
      this.c.topo.switchNs,
      "prometheus",
      `--config.file=${join(dir, "prometheus.yml")}`,
      `--storage.tsdb.path=${join(dir, "data")}`,
      `--web.listen-address=${this.addr}`,
      "--log.level=warn",
    ]);
    this.proc.stderr?.on("data", (d) => (this.log = (this.log + d).slice(-3000)));
    await waitFor(
      "every target up",
      () => {
        if (this.proc?.exitCode !== null) throw new Error(`prometheus exited: ${this.log}`);
        try {
          return this.query('up{job="overlayd"} == 1').length === this.c.nodes.length;
        } catch {
          return false;
        }
      },
      60000,
    );
  }

  /** GET on the HTTP API, parsed. */
  api(path: string): { status: string; error?: string; data?: { result: Series[] } } {
    const r = httpInNs(this.c.topo.switchNs, `http://${this.addr}${path}`);
    if (r.status === 0) throw new Error(`prometheus at ${this.addr}: ${r.body}`);
    return JSON.parse(r.body);
  }

  /** An instant query; anything but success throws, naming the query. */
  query(expr: string): Series[] {
    const j = this.api(`/api/v1/query?query=${encodeURIComponent(expr)}`);
    if (j.status !== "success") throw new Error(`query ${expr}: ${j.status} ${j.error}`);
    return j.data?.result ?? [];
  }

  async stop(): Promise<void> {
    const p = this.proc;
    if (!p || p.exitCode !== null) return;
    await new Promise((r) => {
      p.once("exit", r);
      p.kill("SIGKILL");
    });
  }
}
