// Generates agent/bpf/abi.generated.ts from the BTF of the linked BPF objects
// (bpftool -j btf dump), the way bpf2go does for cilium/ebpf: struct layouts,
// map definitions, .rodata layout, enums and program names. bpf/include/abi.h
// stays the single source; this file only transcribes it.
//
// usage: node dist/scripts/gen-abi.js <dir with *.bpf.o> <output.ts>
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { readdirSync, writeFileSync } from "node:fs";
import { basename, join } from "node:path";

interface BtfMember {
  name: string;
  type_id: number;
  bits_offset: number;
}
interface BtfType {
  id: number;
  kind: string;
  name?: string;
  size?: number;
  type_id?: number;
  members?: BtfMember[];
  values?: { name: string; val: number }[];
  vars?: { type_id: number; offset: number; size: number }[];
  nr_elems?: number;
  linkage?: string;
}

interface Field {
  offset: number;
  size: number;
}
interface StructLayout {
  size: number;
  fields: Record<string, Field>;
}
interface MapDef {
  type: number;
  keySize: number;
  valueSize: number;
  maxEntries: number;
  flags: number;
  key: string;
  value: string;
}

const BPF_MAP_TYPES: Record<number, string> = {
  1: "HASH",
  2: "ARRAY",
  5: "PERCPU_HASH",
  6: "PERCPU_ARRAY",
  11: "LPM_TRIE",
  27: "RINGBUF",
};

class Btf {
  private readonly byId = new Map<number, BtfType>();

  constructor(readonly object: string) {
    const out = execFileSync("bpftool", ["-j", "btf", "dump", "file", object, "format", "raw"], {
      encoding: "utf8",
      maxBuffer: 64 << 20,
    });
    for (const t of (JSON.parse(out) as { types: BtfType[] }).types) this.byId.set(t.id, t);
  }

  get(id: number): BtfType {
    const t = this.byId.get(id);
    if (!t) throw new Error(`${this.object}: BTF type id ${id} not found`);
    return t;
  }

  all(): BtfType[] {
    return [...this.byId.values()];
  }

  /** Follows typedefs and qualifiers to the type that has a size. */
  resolve(id: number): BtfType {
    let t = this.get(id);
    while (["TYPEDEF", "CONST", "VOLATILE", "RESTRICT", "TYPE_TAG"].includes(t.kind)) {
      t = this.get(t.type_id as number);
    }
    return t;
  }

  sizeOf(id: number): number {
    const t = this.resolve(id);
    if (t.kind === "ARRAY") return (t.nr_elems as number) * this.sizeOf(t.type_id as number);
    if (t.size === undefined)
      throw new Error(`${this.object}: type ${t.kind} ${t.name} has no size`);
    return t.size;
  }

  /** The name a key/value type is known by: struct name, or the typedef. */
  nameOf(id: number): string {
    const t = this.get(id);
    if (t.kind === "STRUCT" || t.kind === "TYPEDEF" || t.kind === "INT") return t.name || "anon";
    if (t.kind === "CONST" || t.kind === "VOLATILE") return this.nameOf(t.type_id as number);
    return t.kind.toLowerCase();
  }

  struct(name: string): StructLayout | undefined {
    const t = this.all().find((x) => x.kind === "STRUCT" && x.name === name);
    if (!t) return undefined;
    const fields: Record<string, Field> = {};
    for (const m of t.members ?? []) {
      if (m.bits_offset % 8 !== 0) throw new Error(`${name}.${m.name}: bitfields are not ABI`);
      fields[m.name] = { offset: m.bits_offset / 8, size: this.sizeOf(m.type_id) };
    }
    return { size: t.size as number, fields };
  }

  datasec(name: string): BtfType | undefined {
    return this.all().find((x) => x.kind === "DATASEC" && x.name === name);
  }

  /** Decodes libbpf's BTF map definitions (__uint / __type) in ".maps". */
  maps(): Record<string, MapDef> {
    const sec = this.datasec(".maps");
    const maps: Record<string, MapDef> = {};
    for (const v of sec?.vars ?? []) {
      const variable = this.get(v.type_id);
      const def = this.resolve(variable.type_id as number);
      // A ring buffer has no key or value.
      const m: Partial<MapDef> = { flags: 0, keySize: 0, valueSize: 0, key: "", value: "" };
      for (const mem of def.members ?? []) {
        const ptr = this.get(mem.type_id);
        const target = ptr.type_id as number;
        switch (mem.name) {
          case "type":
            m.type = this.get(target).nr_elems;
            break;
          case "max_entries":
            m.maxEntries = this.get(target).nr_elems;
            break;
          case "map_flags":
            m.flags = this.get(target).nr_elems;
            break;
          case "key":
            m.keySize = this.sizeOf(target);
            m.key = this.nameOf(target);
            break;
          case "value":
            m.valueSize = this.sizeOf(target);
            m.value = this.nameOf(target);
            break;
        }
      }
      maps[variable.name as string] = m as MapDef;
    }
    // Section order follows first use in the object; the ABI does not.
    return Object.fromEntries(Object.entries(maps).sort(([a], [b]) => a.localeCompare(b)));
  }

  rodata(): { size: number; vars: Record<string, Field> } {
    const sec = this.datasec(".rodata");
    const vars: Record<string, Field> = {};
    for (const v of sec?.vars ?? []) {
      vars[this.get(v.type_id).name as string] = { offset: v.offset, size: v.size };
    }
    return { size: sec?.size ?? 0, vars };
  }

  enums(): Record<string, Record<string, number>> {
    const out: Record<string, Record<string, number>> = {};
    for (const t of this.all()) {
      if (t.kind !== "ENUM" || !t.name?.startsWith("ovl_")) continue;
      out[t.name] = Object.fromEntries((t.values ?? []).map((v) => [v.name, v.val]));
    }
    return out;
  }

  programs(): string[] {
    return this.all()
      .filter((t) => t.kind === "FUNC" && t.linkage === "global")
      .map((t) => t.name as string)
      .sort();
  }
}

const ABI_STRUCTS = [
  "ovl_subnet_key",
  "ovl_subnet_val",
  "ovl_peer",
  "ovl_peer_counters",
  "ovl_endpoint",
  "ovl_counter",
  "ovl_event",
  "ovl_ev_bucket",
  "ovl_monitor",
  "ovl_ip6",
  "ovl_subnet6_key",
  "ovl_subnet6_val",
  "ovl_peer6",
];

function main(dir: string, output: string): void {
  const objects = readdirSync(dir)
    .filter((f) => f.endsWith(".bpf.o"))
    .sort()
    .map((f) => new Btf(join(dir, f)));
  if (objects.length === 0) throw new Error(`no *.bpf.o in ${dir}`);

  const structs: Record<string, StructLayout> = {};
  const enums: Record<string, Record<string, number>> = {};
  const programs: Record<string, string> = {};
  let maps: Record<string, MapDef> | undefined;
  let rodata: ReturnType<Btf["rodata"]> | undefined;

  for (const btf of objects) {
    for (const name of ABI_STRUCTS) {
      const s = btf.struct(name);
      if (s) structs[name] = s;
    }
    Object.assign(enums, btf.enums());
    const loadable = btf.programs();
    if (loadable.length === 0) continue; // abi.bpf.o: types only
    for (const p of loadable) programs[p] = basename(btf.object);
    // Every loadable object includes the same maps.h and config.h; prove it.
    const m = btf.maps();
    const r = btf.rodata();
    if (maps && JSON.stringify(maps) !== JSON.stringify(m)) {
      throw new Error(`${btf.object}: map definitions differ from the other objects`);
    }
    if (rodata && JSON.stringify(rodata) !== JSON.stringify(r)) {
      throw new Error(`${btf.object}: .rodata layout differs from the other objects`);
    }
    maps = m;
    rodata = r;
  }
  for (const name of ABI_STRUCTS) {
    if (!structs[name]) throw new Error(`struct ${name} not found in any object's BTF`);
  }

  const mapTypes = Object.fromEntries(
    Object.entries(BPF_MAP_TYPES).map(([k, v]) => [v, Number(k)]),
  );
  // One name for this layout: builds whose pinned maps and programs are
  // interchangeable have the same hash (overlayd --version, the image label).
  const abiHash = createHash("sha256")
    .update(JSON.stringify({ structs, maps, rodata, enums, programs }))
    .digest("hex")
    .slice(0, 16);
  const lines = [
    "// Generated by scripts/gen-abi.ts from the BTF of build/bpf/*.bpf.o.",
    "// DO NOT EDIT: change bpf/include/abi.h (or bpf/lib/*.h) and run `make abi`.",
    "// `make abi-check` (part of `make check`) fails when this file is stale.",
    "",
    `export const BPF_MAP_TYPE = ${JSON.stringify(mapTypes)} as const;`,
    "",
    `export const STRUCTS = ${JSON.stringify(structs)} as const;`,
    "",
    `export const MAPS = ${JSON.stringify(maps)} as const;`,
    "",
    `export const RODATA = ${JSON.stringify(rodata)} as const;`,
    "",
    `export const ENUMS = ${JSON.stringify(enums)} as const;`,
    "",
    `/** Program name -> object file that holds it. */`,
    `export const PROGRAMS = ${JSON.stringify(programs)} as const;`,
    "",
    "/** sha256 of the layouts above (first 16 hex digits): the ABI's name. */",
    `export const ABI_HASH = ${JSON.stringify(abiHash)};`,
    "",
    "export type MapName = keyof typeof MAPS;",
    "export type ProgramName = keyof typeof PROGRAMS;",
    "export type RodataVar = keyof typeof RODATA.vars;",
    "",
  ];
  writeFileSync(output, lines.join("\n"));
}

const [dir, output] = process.argv.slice(2);
if (!dir || !output) {
  process.stderr.write("usage: gen-abi <dir with *.bpf.o> <output.ts>\n");
  process.exit(2);
}
main(dir, output);
