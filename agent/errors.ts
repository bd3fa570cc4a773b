// Error hierarchy (after etcd3's errors.ts). Every error says what failed and
// on which object; `recoverable` tells retry loops whether trying again can help.
import { constants } from "node:os";

const ERRNO_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(constants.errno).map(([name, n]) => [n, name]),
);

/** Human hints for the errnos BPF calls commonly return. */
const ERRNO_HINTS: Record<string, string> = {
  E2BIG: "map full",
  EPERM:
    "operation not permitted: needs CAP_BPF and CAP_NET_ADMIN (or root), and in a container a seccomp profile that allows bpf()",
  EACCES: "permission denied (verifier rejected the program, or missing CAP_BPF)",
  ENOENT: "no such entry",
  ENODEV: "no such device",
  EEXIST: "already exists",
  EINVAL: "invalid argument",
  ENOTSUP: "not supported by this kernel",
  EOPNOTSUPP: "not supported by this kernel or driver",
  ENOMEM: "out of memory (check RLIMIT_MEMLOCK / memcg)",
  EBUSY: "busy (another program attached?)",
};

export function errnoName(errno: number): string {
  return ERRNO_NAMES[errno] ?? `errno ${errno}`;
}

export class OverlayError extends Error {
  constructor(
    message: string,
    readonly recoverable = false,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

/** A failed libbpf/kernel call: `map update ovl_subnets: E2BIG (map full)`. */
export class BpfError extends OverlayError {
  readonly code: string;
  constructor(
    readonly op: string,
    readonly errno: number,
    readonly object: string,
    detail?: string,
  ) {
    const code = errnoName(errno);
    super(`${op} ${object}: ${code} (${detail ?? ERRNO_HINTS[code] ?? "failed"})`);
    this.code = code;
  }
}

/** The loaded objects or pinned maps disagree with the generated ABI. */
export class AbiMismatchError extends OverlayError {}

/** Bad configuration: names the key, the field and the rule. */
export class ConfigError extends OverlayError {
  constructor(
    readonly field: string,
    readonly rule: string,
    readonly where = "",
  ) {
    super(`${where ? `${where}: ` : ""}${field}: ${rule}`);
  }
}

/** A command (ip, sysctl, ...) failed. */
export class CommandError extends OverlayError {
  constructor(
    readonly argv: string[],
    readonly status: number | null,
    readonly stderr: string,
  ) {
    super(`${argv.join(" ")}: ${stderr.trim() || `exit status ${status}`}`);
  }
}
