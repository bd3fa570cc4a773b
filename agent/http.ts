// /healthz (process alive), /readyz (lease held, data path attached, first
// sync done, subnet file written) and /metrics. Binds where told; a server
// whose address is empty is not started.
import { createServer, type Server } from "node:http";
import { type Registry } from "prom-client";
import { OverlayError } from "./errors";

export interface Readiness {
  ready: boolean;
  checks: Record<string, boolean | string>;
  /** Facts about the node that are not checks (the data path mechanism). */
  info?: Record<string, string>;
  /** What is wrong around the node but does not stop it (route overlaps). */
  warnings?: string[];
}

export function parseHostPort(addr: string, flag: string): { host: string; port: number } {
  const m = /^(\[[^\]]+\]|[^:]*):(\d+)$/.exec(addr);
  if (!m || Number(m[2]) > 65535) throw new OverlayError(`${flag} ${addr}: want HOST:PORT`);
  return { host: (m[1] as string).replace(/^\[|\]$/g, "") || "0.0.0.0", port: Number(m[2]) };
}

export async function serve(
  addr: string,
  flag: string,
  routes: { readiness?: () => Readiness; registry?: Registry },
): Promise<Server> {
  const { host, port } = parseHostPort(addr, flag);
  const server = createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/healthz" && routes.readiness) {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok\n");
    } else if (path === "/readyz" && routes.readiness) {
      const r = routes.readiness();
      res
        .writeHead(r.ready ? 200 : 503, { "content-type": "application/json" })
        .end(JSON.stringify(r) + "\n");
    } else if (path === "/metrics" && routes.registry) {
      const reg = routes.registry;
      reg.metrics().then(
        (body) => res.writeHead(200, { "content-type": reg.contentType }).end(body),
        (e: unknown) => res.writeHead(500).end(String(e)),
      );
    } else {
      res.writeHead(404).end("not found\n");
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", (e) =>
      reject(new OverlayError(`${flag} ${addr}: ${(e as Error).message}`)),
    );
    server.listen(port, host, () => resolve());
  });
  return server;
}
