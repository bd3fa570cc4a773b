// What this build is: the package version, the git commit it was built from
// (build/version.json, written by `make build`; "unknown" outside a git
// checkout unless GIT_COMMIT is given), and the hash of the BPF ABI its
// programs and maps follow. `overlayd --version`, `overlayctl version`,
// overlay_build_info and the image's labels all say the same.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { ABI_HASH } from "./bpf/abi.generated";

export interface BuildInfo {
  version: string;
  commit: string;
  abi: string;
}

const ROOT = join(__dirname, "..", "..");

function readJson(path: string): Record<string, unknown> | undefined {
  try {
    return JSON.parse(readFileSync(path, "utf8")) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

let cached: BuildInfo | undefined;

export function buildInfo(): BuildInfo {
  if (cached) return cached;
  const pkg = readJson(join(ROOT, "package.json"));
  const built = readJson(join(ROOT, "build", "version.json"));
  cached = {
    version: typeof pkg?.version === "string" ? pkg.version : "unknown",
    commit: typeof built?.commit === "string" && built.commit ? built.commit : "unknown",
    abi: ABI_HASH,
  };
  return cached;
}

/** `overlayd 0.1.0 (commit 1a2b3c4d5e6f, abi 0123456789abcdef)` */
export function versionLine(program: string): string {
  const b = buildInfo();
  return `${program} ${b.version} (commit ${b.commit}, abi ${b.abi})`;
}
