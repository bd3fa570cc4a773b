// Guards for tiers that need root, tools or kernel features. Outside CI they
// skip with a message that says why; in CI (CI=true) they fail: nothing that
// needs root may skip silently there.
import { spawnSync } from "node:child_process";
import { IN_CI } from "./sh";

function missingTools(tools: string[]): string[] {
  return tools.filter((t) => spawnSync("sh", ["-c", `command -v ${t}`]).status !== 0);
}

/** Call from a mocha before() hook with `this`. */
export function requireEnv(ctx: Mocha.Context, opts: { root?: boolean; tools?: string[] }): void {
  const problems: string[] = [];
  if (opts.root && process.getuid?.() !== 0) problems.push("needs root (CAP_BPF, CAP_NET_ADMIN)");
  const missing = missingTools(opts.tools ?? []);
  if (missing.length) problems.push(`missing tools: ${missing.join(", ")} (run make deps)`);
  if (!problems.length) return;
  const msg = problems.join("; ");
  if (IN_CI) throw new Error(`CI=true and this tier cannot run: ${msg}`);
  process.stderr.write(`  skipping: ${msg}\n`);
  ctx.skip();
}
