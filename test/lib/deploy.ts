// The files under deploy/, parsed the way the tests read them.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { parseAllDocuments } from "yaml";

export const DEPLOY = join(__dirname, "..", "..", "..", "deploy");

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type Obj = any;

/** Every YAML document of deploy/<file>, failing on any parse error. */
export function deployDocs(file: string): Obj[] {
  const all = parseAllDocuments(readFileSync(join(DEPLOY, file), "utf8"));
  for (const d of all) assert.deepEqual(d.errors, [], `${file}: YAML errors`);
  return all.map((d) => d.toJS());
}
