// The container image, built and run the way a user (or the DaemonSet) runs
// it, with podman in storage of this run's own: images, containers and
// layers live under build/image-test/<id>/ and destroy() removes exactly
// that, never the machine's own podman images.
//
// No registry is reachable here, so the base (deploy/Dockerfile's BASE) is
// made with debootstrap and `podman import`: Debian bookworm minbase plus the
// host's Node >= 20 (Debian's nodejs is 18) and the host's extra CA
// certificates (the build fetches npm packages over TLS through whatever the
// host trusts).
import { buildInfo } from "../../agent/version";
import { copyFileSync, existsSync, mkdirSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { spawnSync } from "node:child_process";
import { AgentProc } from "./agent-proc";
import { sh, shStatus } from "./sh";

export const REPO = join(__dirname, "..", "..", "..");
export const DEBIAN_MIRROR = process.env.OVERLAYD_TEST_MIRROR ?? "http://deb.debian.org/debian";

/** Seen on this kind of machine: crun fails on hybrid cgroups, and podman's
 *  default ulimits exceed what the machine allows. */
const RUN_LIMITS = ["--ulimit", "nofile=20000:20000", "--ulimit", "nproc=32768:32768"];

export interface ContainerSpec {
  name: string;
  /** Network namespace the container joins: the simulated node's "host network". */
  netns: string;
  /** host path -> container path */
  volumes: [string, string][];
  /** --privileged; else exactly caps (drop ALL, add these) when given,
   *  else podman's default set. */
  privileged: boolean;
  caps?: string[];
  /** --security-opt values (e.g. seccomp=unconfined). */
  securityOpts?: string[];
  entrypoint?: string;
  env?: Record<string, string>;
}

export class ImageRun {
  readonly id = randomBytes(3).toString("hex");
  readonly dir = join(REPO, "build", "image-test", this.id);
  readonly base = `localhost/overlayd-test-base:${this.id}`;
  readonly image = `localhost/overlayd-test:${this.id}`;
  readonly buildLog = join(this.dir, "build.log");
  /** podman refuses a runroot longer than 50 characters, so it lives under
   *  /run whatever the checkout's path (storage stays under build/). */
  readonly runroot = `/run/overlayd-img-${this.id}`;

  /** podman with this run's storage, runtime and no journald. */
  podman(args: string[]): string[] {
    return [
      "podman",
      "--root",
      join(this.dir, "storage"),
      "--runroot",
      this.runroot,
      "--tmpdir",
      join(this.dir, "tmp"),
      "--runtime",
      "runc",
      "--cgroup-manager",
      "cgroupfs",
      "--events-backend",
      "none",
      ...args,
    ];
  }

  /** Debian minbase + host node/npm + host extra CAs, imported as this.base. */
  makeBase(): void {
    const root = join(this.dir, "rootfs");
    mkdirSync(this.dir, { recursive: true });
    sh(["debootstrap", "--variant=minbase", "bookworm", root, DEBIAN_MIRROR]);
    const local = join(root, "usr", "local");
    copyFileSync(process.execPath, join(local, "bin", "node"));
    const npmDir = join(sh(["npm", "root", "-g"]).trim(), "npm");
    mkdirSync(join(local, "lib", "node_modules"), { recursive: true });
    sh(["cp", "-a", npmDir, join(local, "lib", "node_modules", "npm")]);
    sh(["ln", "-s", "../lib/node_modules/npm/bin/npm-cli.js", join(local, "bin", "npm")]);
    sh(["ln", "-s", "../lib/node_modules/npm/bin/npx-cli.js", join(local, "bin", "npx")]);
    // Extra CAs: one per file for update-ca-certificates (run when the build
    // installs ca-certificates), and one bundle for Node (which ignores the
    // system store).
    const caSrc = "/usr/local/share/ca-certificates";
    const caDst = join(local, "share", "ca-certificates");
    mkdirSync(caDst, { recursive: true });
    // What a registry base image sets; `podman import` sets nothing.
    const changes = [
      "--change",
      "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ];
    const cas = existsSync(caSrc) ? readdirSync(caSrc).filter((f) => f.endsWith(".crt")) : [];
    if (cas.length) {
      const bundle: string[] = [];
      for (const f of cas) {
        copyFileSync(join(caSrc, f), join(caDst, f));
        bundle.push(sh(["cat", join(caSrc, f)]));
      }
      mkdirSync(join(root, "etc", "overlayd-test"), { recursive: true });
      writeFileSync(join(root, "etc", "overlayd-test", "extra-ca.pem"), bundle.join("\n"));
      changes.push("--change", "ENV NODE_EXTRA_CA_CERTS=/etc/overlayd-test/extra-ca.pem");
    }
    const r = spawnSync(
      "sh",
      [
        "-c",
        'tar -C "$0" -c . | "$@"',
        root,
        ...this.podman(["import", ...changes, "-", this.base]),
      ],
      { encoding: "utf8", maxBuffer: 64 << 20 },
    );
    if (r.status !== 0) throw new Error(`podman import failed: ${r.stderr}`);
    rmSync(root, { recursive: true, force: true });
  }

  /** podman build -f deploy/Dockerfile --build-arg BASE=<base>; log kept in buildLog. */
  build(): void {
    const r = spawnSync(
      "sh",
      [
        "-c",
        '"$@" > "$0" 2>&1',
        this.buildLog,
        ...this.podman([
          "build",
          "--network",
          "host",
          ...RUN_LIMITS,
          "-f",
          join(REPO, "deploy", "Dockerfile"),
          "--build-arg",
          `BASE=${this.base}`,
          // What `make image-args` passes: the labels name this build.
          "--build-arg",
          `GIT_COMMIT=${buildInfo().commit}`,
          "--build-arg",
          `VERSION=${buildInfo().version}`,
          "--build-arg",
          `ABI_HASH=${buildInfo().abi}`,
          "-t",
          this.image,
          REPO,
        ]),
      ],
      { encoding: "utf8" },
    );
    if (r.status !== 0) {
      const log = shStatus(["tail", "-n", "40", this.buildLog]).stdout;
      throw new Error(`podman build failed (${r.status}):\n${log}`);
    }
  }

  /** argv of `podman run` for spec, ending with the image; append the args. */
  runArgv(spec: ContainerSpec): string[] {
    const argv = [
      "run",
      "--rm",
      "--name",
      spec.name,
      "--init",
      "--network",
      `ns:/run/netns/${spec.netns}`,
      ...RUN_LIMITS,
    ];
    if (spec.privileged) argv.push("--privileged");
    else if (spec.caps)
      argv.push("--cap-drop", "ALL", ...spec.caps.flatMap((c) => ["--cap-add", c]));
    for (const o of spec.securityOpts ?? []) argv.push("--security-opt", o);
    for (const [host, ctr] of spec.volumes) argv.push("-v", `${host}:${ctr}`);
    for (const [k, v] of Object.entries(spec.env ?? {})) argv.push("-e", `${k}=${v}`);
    if (spec.entrypoint) argv.push("--entrypoint", spec.entrypoint);
    argv.push(this.image);
    return this.podman(argv);
  }

  /** Runs spec to completion; returns status and output. */
  runOnce(
    spec: ContainerSpec,
    args: string[] = [],
  ): { status: number; stdout: string; stderr: string } {
    return shStatus([...this.runArgv(spec), ...args]);
  }

  /** Removes this run's containers, images and storage; nothing else. */
  destroy(): void {
    if (!existsSync(this.dir) && !existsSync(this.runroot)) return;
    shStatus(this.podman(["rm", "-a", "-f", "-t", "0"]));
    shStatus(this.podman(["rmi", "-a", "-f"]));
    // Whatever podman left mounted under the storage (overlay layers, shm).
    const mounts = shStatus(["findmnt", "-rn", "-o", "TARGET"])
      .stdout.split("\n")
      .filter((m) => m.startsWith(this.dir) || m.startsWith(this.runroot))
      .sort()
      .reverse();
    for (const m of mounts) shStatus(["umount", "-l", m]);
    rmSync(this.dir, { recursive: true, force: true });
    rmSync(this.runroot, { recursive: true, force: true });
    if (existsSync(this.dir)) throw new Error(`could not remove ${this.dir}`);
  }
}

/** The agent as a container of the image: `podman run` in the foreground,
 *  signals sent to the container's init (--init), which passes them on. */
export class ContainerAgent extends AgentProc {
  constructor(
    readonly img: ImageRun,
    readonly spec: ContainerSpec,
    args: string[],
    /** Where the container's /run/flannel/subnet.env is on the host. */
    subnetFile: string,
  ) {
    super(spec.netns, args, subnetFile, [], img.runArgv(spec));
  }

  protected override signal(signal: NodeJS.Signals): void {
    const r = shStatus(this.img.podman(["kill", "-s", signal, this.spec.name]));
    if (r.status !== 0) this.proc?.kill(signal);
  }

  /** `podman exec` in the running container. */
  exec(argv: string[]): { status: number; stdout: string; stderr: string } {
    return shStatus(this.img.podman(["exec", this.spec.name, ...argv]));
  }
}
