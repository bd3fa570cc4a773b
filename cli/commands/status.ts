// overlayctl status: is the agent there and ready, where are the programs
// attached, how full are the maps, does the pinned ABI match this build,
// which iptables backend the node uses.
import { get } from "node:http";
import type { ArgumentsCamelCase, Argv, CommandModule } from "yargs";
import { attachments, checkPinnedMaps } from "../../agent/bpf/datapath";
import { MAPS, type MapName } from "../../agent/bpf/abi.generated";
import { BpfMap } from "../../agent/bpf/map";
import { parseHostPort } from "../../agent/http";
import { describeIptablesMode, detectIptablesMode } from "../../agent/net/iptables-mode";
import { run } from "../../agent/net/run";
import { outputOption, print, table, type Format } from "../output";

interface Args {
  pinPath: string;
  output: Format;
  healthzAddr: string;
}

function readyz(addr: string): Promise<{
  reachable: boolean;
  ready?: boolean;
  checks?: Record<string, unknown>;
  info?: Record<string, string>;
  warnings?: string[];
  error?: string;
}> {
  const { host, port } = parseHostPort(addr, "--healthz-addr");
  return new Promise((resolve) => {
    const req = get(
      { host: host === "0.0.0.0" ? "127.0.0.1" : host, port, path: "/readyz", timeout: 2000 },
      (res) => {
        let body = "";
        res.on("data", (d) => (body += d));
        res.on("end", () => {
          try {
            const j = JSON.parse(body) as {
              ready: boolean;
              checks: Record<string, unknown>;
              info?: Record<string, string>;
              warnings?: string[];
            };
            resolve({
              reachable: true,
              ready: j.ready,
              checks: j.checks,
              info: j.info,
              warnings: j.warnings,
            });
          } catch {
            resolve({ reachable: true, error: `unexpected /readyz answer: ${body.slice(0, 80)}` });
          }
        });
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (e) => resolve({ reachable: false, error: e.message }));
  });
}

/**
 * The mechanism as the kernel shows it (so it is right while the agent is
 * down): which decap program the underlay runs, whether the overlay device
 * decapsulates for the stack (ovl_decap_dev on it: GRO through its UDP
 * socket), and which bridges carry the bridged-pod encap.
 */
/**
 * What this namespace's kernel says: every link (one `ip` call), our
 * programs attached to them, and the mechanism those amount to.
 */
export function liveDatapath() {
  const links = JSON.parse(run(["ip", "-d", "-j", "link", "show"])) as {
    ifname: string;
    ifindex: number;
    linkinfo?: { info_kind?: string };
  }[];
  const names = new Map(links.map((l) => [l.ifindex, l.ifname]));
  const kinds = new Map<string | undefined, string | undefined>(
    links.map((l) => [l.ifname, l.linkinfo?.info_kind]),
  );
  const attached = attachments(links.map((l) => l.ifindex)).map((x) => ({
    ...x,
    iface: names.get(x.ifindex),
  }));
  return { names, attached, mechanism: mechanismOf(attached, kinds) };
}

function mechanismOf(
  attached: { iface?: string; hook: string; program: string }[],
  kinds: Map<string | undefined, string | undefined>,
): {
  decap: string;
  gro: string;
  podBridge: string;
} {
  const has = (p: string) => attached.some((x) => x.program === p);
  const bridges = attached
    .filter((x) => x.program === "ovl_encap_pod" && kinds.get(x.iface) === "bridge")
    .map((x) => x.iface);
  return {
    decap: has("ovl_decap_xdp") ? "xdp" : has("ovl_decap_tc") ? "tc" : "none",
    gro: has("ovl_decap_dev") ? "vxlan-socket" : "none",
    podBridge: bridges.length ? bridges.join(",") : "none",
  };
}

export const status: CommandModule<object, Args> = {
  command: "status",
  describe: "agent readiness, program attachments, map sizes, ABI check",
  builder: (y) =>
    (y as Argv<Args>).options(outputOption).option("healthz-addr", {
      type: "string",
      default: "127.0.0.1:9473",
      describe: "the agent's --healthz-addr",
    }) as Argv<Args>,
  handler: async (a: ArgumentsCamelCase<Args>) => {
    const agent = await readyz(a.healthzAddr);
    let abi = "ok";
    try {
      checkPinnedMaps(a.pinPath);
    } catch (e) {
      abi = (e as Error).message;
    }
    const maps: { name: string; entries: number | null; maxEntries: number; error?: string }[] = [];
    for (const name of Object.keys(MAPS) as MapName[]) {
      try {
        const m = BpfMap.openPinned(a.pinPath, name);
        try {
          maps.push({ name, entries: [...m.keys()].length, maxEntries: MAPS[name].maxEntries });
        } finally {
          m.close();
        }
      } catch (e) {
        maps.push({
          name,
          entries: null,
          maxEntries: MAPS[name].maxEntries,
          error: (e as Error).message,
        });
      }
    }
    const { attached, mechanism } = liveDatapath();
    // Detected here, as the agent does (same node, same rule), so it shows
    // while the agent is down; the agent's own (made at its start) is added
    // when it names another backend (the node switched since).
    const iptables = detectIptablesMode();
    const agentIptables = agent.info?.iptables;
    const agentMode = agentIptables?.split(" ")[0];
    const result = { agent, abi, mechanism, iptables, attachments: attached, maps };
    print(a.output, result, () => {
      const agentLine = !agent.reachable
        ? `agent:   not reachable at ${a.healthzAddr} (${agent.error}); the pinned data path keeps forwarding`
        : `agent:   ${agent.ready ? "ready" : "NOT ready"}${
            agent.checks
              ? `  ${Object.entries(agent.checks)
                  .map(([k, v]) => `${k}=${v === true ? "ok" : String(v)}`)
                  .join("  ")}`
              : ""
          }`;
      return [
        agentLine,
        `abi:     ${abi}`,
        ...(agent.warnings ?? []).map((w) => `warning: ${w}`),
        `datapath: ${agent.info?.backend ? `backend=${agent.info.backend} ` : ""}` +
          `decap=${mechanism.decap} gro=${mechanism.gro} pod-bridge=${mechanism.podBridge}` +
          (agent.info?.reason ? `  (${agent.info.reason})` : ""),
        `iptables: ${describeIptablesMode(iptables)}` +
          (agentMode && agentMode !== iptables.mode ? `; the agent uses ${agentIptables}` : ""),
        "",
        attached.length
          ? table(
              ["IFACE", "HOOK", "PROGRAM", "ID"],
              attached.map((x) => [x.iface ?? String(x.ifindex), x.hook, x.program, x.progId]),
            )
          : "no overlayd programs attached in this network namespace\n",
        table(
          ["MAP", "ENTRIES", "MAX"],
          maps.map((m) => [m.name, m.entries ?? `error: ${m.error}`, m.maxEntries]),
        ),
      ].join("\n");
    });
  },
};
