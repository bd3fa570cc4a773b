import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { OVERLAYCTL } from "../lib/agent-proc";

describe("overlayctl writing into a closed pipe (`overlayctl map dump | head`)", () => {
  it("exits 0 without a stack trace when its reader went away", async () => {
    const c = spawn(process.execPath, [OVERLAYCTL, "version"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    c.stdout.destroy(); // the reader is gone before the first write
    let stderr = "";
    c.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((r) => c.on("exit", (n) => r(n)));
    assert.equal(stderr, "");
    assert.equal(code, 0);
  });
});
