// Acquires this node's subnet lease. flannel's order of preference (our own
// lease by PublicIP, the previous subnet file's subnet, a random free one)
// with two fixes: a lost create race is retried with another subnet instead
// of exiting, and a reservation (a key without an etcd lease) made for our
// PublicIP is used and never taken by anyone else.
import { type NetworkConfig, subnetCount, subnetCount6 } from "./config";
import { type EtcdStore, type HeldLease, type ListResult } from "./etcd-store";
import { OverlayError } from "../errors";
import {
  chooseFree,
  chooseFree6,
  isReservation,
  preferredSubnet,
  v6Conflict,
  type Lease,
  type LeaseAttrs,
} from "./lease";
import { backoffMs, sleep } from "../backoff";
import { type Logger } from "../log";
import { formatIp, type Cidr } from "../net/ip";
import { formatIp6, type Cidr6 } from "../net/ip6";

export class NetworkFullError extends OverlayError {}

export type AcquireResult =
  "acquired" | "reused" | "reserved" | "race_lost" | "network_full" | "error";

export interface LeaseManagerDeps {
  config(): NetworkConfig;
  attrs(): LeaseAttrs;
  ttl: number;
  onLost(err: Error): void;
  stopping(): boolean;
  relist(): Promise<ListResult>;
  result?(r: AcquireResult): void;
  renewed?(): void;
  networkFull?(msg: string | undefined): void;
  /** Backoff between attempts; tests shorten it. */
  backoff?(attempt: number, kind: "full" | "error" | "race"): number;
}

export function defaultBackoff(attempt: number, kind: "full" | "error" | "race"): number {
  if (kind === "full") return backoffMs(attempt, 1000, 30000);
  if (kind === "error") return backoffMs(attempt, 250, 10000);
  return backoffMs(attempt, 10, 500);
}

export class LeaseManager {
  constructor(
    private readonly store: EtcdStore,
    private readonly log: Logger,
    private readonly deps: LeaseManagerDeps,
  ) {}

  /**
   * Keeps trying until a lease is held: races are retried at once with a
   * fresh listing, a full network is retried with a long backoff (and
   * reported through networkFull), etcd errors with a short one.
   */
  async acquire(
    leases: Lease[],
    previous: Cidr | undefined,
    maxAttempts = Infinity,
    previous6?: Cidr6,
  ): Promise<HeldLease> {
    const d = this.deps;
    const backoff = d.backoff ?? defaultBackoff;
    for (let attempt = 0; attempt < maxAttempts; attempt++) {
      if (d.stopping()) throw new OverlayError("stopped while acquiring a lease");
      try {
        const got = await this.tryOnce(leases, previous, previous6);
        if (got) {
          d.networkFull?.(undefined);
          return got;
        }
        d.result?.("race_lost");
        this.log.info("lost a lease race; choosing another subnet", { attempt });
        await sleep(backoff(attempt, "race"));
      } catch (e) {
        if (e instanceof NetworkFullError) {
          d.result?.("network_full");
          d.networkFull?.(e.message);
          this.log.error(e.message);
          if (attempt + 1 >= maxAttempts) throw e;
          await sleep(backoff(attempt, "full"));
        } else if (e instanceof OverlayError && e.recoverable) {
          d.result?.("error");
          this.log.warn("lease acquisition failed; retrying", { error: e.message });
          await sleep(backoff(attempt, "error"));
        } else {
          throw e;
        }
      }
      leases = (await d.relist()).leases;
    }
    throw new OverlayError(`no lease after ${maxAttempts} attempts`);
  }

  private async tryOnce(
    leases: Lease[],
    previous: Cidr | undefined,
    previous6: Cidr6 | undefined,
  ): Promise<HeldLease | undefined> {
    const d = this.deps;
    const cfg = d.config();
    const attrs = d.attrs();
    const pref = preferredSubnet(cfg, leases, attrs.publicIp, previous, previous6);
    // Dual-stack: the IPv6 subnet goes in the same key (flannel allocates both together).
    const subnet6 = () => {
      const v = cfg.ipv6;
      if (!v) return undefined;
      const s6 =
        pref?.subnet6 ??
        chooseFree6(
          cfg,
          leases.filter((l) => l !== pref?.existing && l.subnet6).map((l) => l.subnet6 as Cidr6),
        );
      if (!s6) {
        throw new NetworkFullError(
          `IPv6Network ${v.network} is full: all ${subnetCount6(cfg)} /${v.subnetLen} subnets between ` +
            `IPv6SubnetMin ${formatIp6(v.subnetMin)} and IPv6SubnetMax ${formatIp6(v.subnetMax)} are leased or reserved`,
        );
      }
      return s6;
    };
    if (pref?.existing) {
      const reservation = isReservation(pref.existing);
      const held = await this.store.adopt(
        pref.existing,
        attrs,
        d.ttl,
        reservation,
        d.onLost,
        subnet6(),
      );
      if (!held) return undefined;
      const moved6 = held.lease.subnet6 && !pref.subnet6;
      if (moved6 && v6Conflict(held.lease, (await d.relist()).leases)) {
        // The next attempt sees the clash and moves the lease to another
        // IPv6 subnet, under a new etcd lease; this one's keepalive stops.
        held.keepalive?.removeAllListeners("lost");
        held.keepalive?.release();
        return undefined;
      }
      d.result?.(reservation ? "reserved" : "reused");
      this.log.info(reservation ? "using reservation" : "reusing lease", {
        subnet: held.lease.subnet.toString(),
        ...(held.lease.subnet6 ? { subnet6: held.lease.subnet6.toString() } : {}),
      });
      return this.track(held);
    }
    const subnet =
      pref?.subnet ??
      chooseFree(
        cfg,
        leases.map((l) => l.subnet),
      );
    if (!subnet) {
      throw new NetworkFullError(
        `network ${cfg.network} is full: all ${subnetCount(cfg)} /${cfg.subnetLen} subnets between ` +
          `SubnetMin ${formatIp(cfg.subnetMin)} and SubnetMax ${formatIp(cfg.subnetMax)} are leased or reserved`,
      );
    }
    const held = await this.store.create(subnet, attrs, d.ttl, d.onLost, subnet6());
    if (!held) return undefined;
    if (held.lease.subnet6 && v6Conflict(held.lease, (await d.relist()).leases)) {
      // Another node took the same IPv6 subnet at the same time, first.
      await held.keepalive?.revoke().catch(() => undefined);
      return undefined;
    }
    d.result?.("acquired");
    this.log.info("lease acquired", {
      subnet: subnet.toString(),
      ...(held.lease.subnet6 ? { subnet6: held.lease.subnet6.toString() } : {}),
      ttl: d.ttl,
    });
    return this.track(held);
  }

  private track(held: HeldLease): HeldLease {
    held.keepalive?.on("keepaliveSucceeded", () => this.deps.renewed?.());
    return held;
  }
}
