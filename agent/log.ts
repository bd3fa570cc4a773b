// Leveled logfmt logging to stderr: `ts=… level=info msg="…" key=value`.
export type Level = "debug" | "info" | "warn" | "error";
const ORDER: Record<Level, number> = { debug: 0, info: 1, warn: 2, error: 3 };

export interface Logger {
  debug(msg: string, kv?: Record<string, unknown>): void;
  info(msg: string, kv?: Record<string, unknown>): void;
  warn(msg: string, kv?: Record<string, unknown>): void;
  error(msg: string, kv?: Record<string, unknown>): void;
}

function fmt(v: unknown): string {
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return /[\s"=]/.test(s) ? JSON.stringify(s) : s;
}

export function isLevel(s: string): s is Level {
  return s in ORDER;
}

export function createLogger(
  level: Level,
  write: (line: string) => void = (l) => process.stderr.write(l),
): Logger {
  const at =
    (l: Level) =>
    (msg: string, kv: Record<string, unknown> = {}) => {
      if (ORDER[l] < ORDER[level]) return;
      const extra = Object.entries(kv)
        .map(([k, v]) => ` ${k}=${fmt(v)}`)
        .join("");
      write(`ts=${new Date().toISOString()} level=${l} msg=${fmt(msg)}${extra}\n`);
    };
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}
