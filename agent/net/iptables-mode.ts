// Which iptables backend the node uses, legacy (the kernel's x_tables) or
// nft (iptables rules in nf_tables), so --ip-masq writes its chain where
// kube-proxy and kubelet write theirs: rules in the other backend run in an
// order nobody chose. The rule is kubernetes-sigs/iptables-wrappers' (v2,
// whose kubelet-chain checks v3 keeps unchanged):
//   1. a kubelet chain (KUBE-IPTABLES-HINT, Kubernetes >= 1.24, or
//      KUBE-KUBELET-CANARY, >= 1.17) in iptables-nft's mangle table -> nft;
//   2. a kubelet chain in any iptables-legacy table -> legacy;
//   3. else more rule lines in legacy than in nft -> legacy (v2's fallback
//      for older kubelets, which v3 dropped);
//   4. else nft, ties and empty tables included.
// IPv4 and IPv6 count together. A backend whose iptables-<mode>-save is not
// installed is not a candidate; one that fails (legacy needs CAP_NET_RAW for
// its raw socket) counts as empty, as in the wrapper, and the reason says so.
// iptables-legacy-save runs without -t: naming a table would make the kernel
// create it.
import { probe as runProbe } from "./run";

export type IptablesMode = "legacy" | "nft";

/** The chains kubelet creates (in mangle, and the canary in nat and filter too). */
export const KUBELET_CHAINS = ["KUBE-IPTABLES-HINT", "KUBE-KUBELET-CANARY"] as const;

/** What a backend's iptables-save and ip6tables-save output show. */
export interface SaveSummary {
  /** Kubelet chains found, with the table each is in. */
  kubeletChains: { table: string; chain: string }[];
  /** Rule lines (the lines that start with "-"). */
  rules: number;
  /**
   * A save command that failed ("iptables-legacy-save failed: ... Permission
   * denied (you must be root)"): its output counts as what it printed, as in
   * the wrapper, and the reason says so.
   */
  failed?: string;
}

/** Each backend's summary; undefined when its iptables-<mode>-save is not installed. */
export interface ModeCounts {
  legacy: SaveSummary | undefined;
  nft: SaveSummary | undefined;
}

export interface ModeChoice {
  mode: IptablesMode;
  reason: string;
}

export interface IptablesCommands {
  iptables: string;
  save: string;
  restore: string;
}

export interface IptablesDetection extends ModeChoice {
  commands: IptablesCommands;
}

/** The wrapper's pattern: a chain declaration that starts with a kubelet chain's name. */
const KUBELET_CHAIN = new RegExp(`^:(${KUBELET_CHAINS.join("|")})`);

/** Kubelet chains and rule lines in iptables-save outputs (IPv4 and IPv6 together). Pure. */
export function summarizeSave(...outputs: string[]): SaveSummary {
  const s: SaveSummary = { kubeletChains: [], rules: 0 };
  for (const out of outputs) {
    let table = "";
    for (const line of out.split("\n")) {
      if (line.startsWith("*")) table = line.slice(1).trim();
      else if (line.startsWith("-")) s.rules++;
      else {
        const m = KUBELET_CHAIN.exec(line);
        if (m) s.kubeletChains.push({ table, chain: m[1] as string });
      }
    }
  }
  return s;
}

function rulesWord(n: number): string {
  return `${n} rule${n === 1 ? "" : "s"}`;
}

/** iptables-wrapper's choice between the backends, and any save command that failed. Pure. */
export function chooseIptablesMode(counts: ModeCounts): ModeChoice {
  const c = chooseByRule(counts);
  const failed = [counts.legacy?.failed, counts.nft?.failed].filter((f) => f !== undefined);
  return failed.length ? { ...c, reason: `${c.reason}; ${failed.join("; ")}` } : c;
}

function chooseByRule(counts: ModeCounts): ModeChoice {
  const { legacy, nft } = counts;
  if (!legacy && !nft) {
    return {
      mode: "nft",
      reason: "neither iptables-legacy-save nor iptables-nft-save is installed; nft by default",
    };
  }
  if (!nft) return { mode: "legacy", reason: "iptables-nft-save is not installed" };
  if (!legacy) return { mode: "nft", reason: "iptables-legacy-save is not installed" };
  const nftHint = nft.kubeletChains.find((c) => c.table === "mangle");
  if (nftHint) return { mode: "nft", reason: `kubelet's ${nftHint.chain} chain is in nft mangle` };
  const legacyHint = legacy.kubeletChains[0];
  if (legacyHint) {
    return {
      mode: "legacy",
      reason: `kubelet's ${legacyHint.chain} chain is in legacy ${legacyHint.table}`,
    };
  }
  if (legacy.rules > nft.rules) {
    return {
      mode: "legacy",
      reason: `no kubelet chains; ${rulesWord(legacy.rules)} in legacy, ${nft.rules} in nft`,
    };
  }
  if (nft.rules > 0) {
    return {
      mode: "nft",
      reason: `no kubelet chains; ${rulesWord(nft.rules)} in nft, ${legacy.rules} in legacy`,
    };
  }
  return {
    mode: "nft",
    reason: "no kubelet chains and no rules in either backend; nft by default",
  };
}

/**
 * The backend `iptables -V` names: "iptables v1.8.9 (nf_tables)" is nft,
 * "(legacy)" legacy, and an iptables before 1.8 (no backend named) can only
 * be legacy. Pure.
 */
export function modeFromVersion(text: string): IptablesMode | undefined {
  if (/\(nf_tables\)/.test(text)) return "nft";
  if (/^iptables v\d/m.test(text)) return "legacy";
  return undefined;
}

export function variantCommands(mode: IptablesMode): IptablesCommands {
  return {
    iptables: `iptables-${mode}`,
    save: `iptables-${mode}-save`,
    restore: `iptables-${mode}-restore`,
  };
}

export const PLAIN_COMMANDS: IptablesCommands = {
  iptables: "iptables",
  save: "iptables-save",
  restore: "iptables-restore",
};

/** The same backend's IPv6 commands: iptables-nft -> ip6tables-nft, and so on. Pure. */
export function ip6Commands(c: IptablesCommands): IptablesCommands {
  const six = (cmd: string) => cmd.replace(/(^|\/)iptables(?=[^/]*$)/, "$1ip6tables");
  return { iptables: six(c.iptables), save: six(c.save), restore: six(c.restore) };
}

/**
 * The commands for a choice: the chosen backend's iptables-<mode> and
 * iptables-<mode>-restore when both are installed. Else plain iptables (an
 * alternatives link to one of them, or an iptables before 1.8), and then the
 * backend is the one `iptables -V` names: it is the only one we can write. Pure.
 */
export function resolveCommands(
  choice: ModeChoice,
  installed: (cmd: string) => boolean,
  plainVersion: () => string | undefined,
): IptablesDetection {
  const v = variantCommands(choice.mode);
  if (installed(v.iptables) && installed(v.restore)) return { ...choice, commands: v };
  const missing =
    !installed("iptables-legacy") && !installed("iptables-nft")
      ? "neither iptables-legacy nor iptables-nft is installed"
      : `${installed(v.iptables) ? v.restore : v.iptables} is not installed`;
  const version = plainVersion()?.trim();
  const plain = version === undefined ? undefined : modeFromVersion(version);
  if (version === undefined || plain === undefined) {
    const what = version === undefined ? "is not installed either" : `says "${version}"`;
    return {
      ...choice,
      reason: `${choice.reason}; ${missing}, plain iptables ${what}`,
      commands: PLAIN_COMMANDS,
    };
  }
  return {
    mode: plain,
    reason: `${missing}; plain iptables is ${version}`,
    commands: PLAIN_COMMANDS,
  };
}

/** A command's exit status and output; undefined when it is not installed. */
export type Probe = (
  argv: string[],
) => { status: number | null; stdout: string; stderr: string } | undefined;

/**
 * Runs the save commands and resolves the binaries. A failed save counts as
 * the output it printed (usually none), as in the wrapper.
 */
export function detectIptablesMode(probe: Probe = runProbe): IptablesDetection {
  const backend = (mode: IptablesMode): SaveSummary | undefined => {
    const cmds = [`iptables-${mode}-save`, `ip6tables-${mode}-save`];
    const [v4, v6] = cmds.map((c) => probe([c]));
    if (v4 === undefined) return undefined;
    const s = summarizeSave(v4.stdout, v6?.stdout ?? "");
    const i = [v4, v6].findIndex((r) => r !== undefined && r.status !== 0);
    const r = [v4, v6][i];
    if (!r) return s;
    const why = r.stderr.trim().split("\n")[0] || `exit status ${r.status}`;
    return { ...s, failed: `${cmds[i]} failed: ${why}` };
  };
  const choice = chooseIptablesMode({ legacy: backend("legacy"), nft: backend("nft") });
  return resolveCommands(
    choice,
    (cmd) => probe([cmd, "-V"]) !== undefined,
    () => probe(["iptables", "-V"])?.stdout,
  );
}

let detected: IptablesDetection | undefined;

/** The node's detection, made once per process on first use. */
export function iptablesMode(): IptablesDetection {
  detected ??= detectIptablesMode();
  return detected;
}

/** The detection if this process has made it, without making it. */
export function detectedIptablesMode(): IptablesDetection | undefined {
  return detected;
}

/** "legacy (kubelet's KUBE-IPTABLES-HINT chain is in legacy mangle)". Pure. */
export function describeIptablesMode(d: ModeChoice): string {
  return `${d.mode} (${d.reason})`;
}
