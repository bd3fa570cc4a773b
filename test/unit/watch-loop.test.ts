import assert from "node:assert/strict";
import { type LeaseEvent, type ListResult, type WatchHandle } from "../../agent/control/etcd-store";
import { WATCH_STABLE_MS, WatchLoop, type WatchLoopDeps } from "../../agent/control/watch-loop";
import { createLogger } from "../../agent/log";

const quiet = createLogger("error", () => {});
const turn = () => new Promise((r) => setImmediate(r));

/**
 * etcd as the loop sees it, on a fake clock: every list and watch request is
 * counted with the time it was made; `failWatch` makes each watch fail as
 * soon as it is created (a member that answers errors, a role that may list
 * but not watch), `compactAfterMs` makes it fail that long after.
 */
class FakeEtcd {
  now = 0;
  lists: number[] = [];
  watches: number[] = [];
  revision = 100;
  failWatch = true;
  list = async (): Promise<ListResult> => {
    this.lists.push(this.now);
    return { leases: [], revision: String(this.revision), bad: [] };
  };
  watch = async (
    _from: string,
    _onEvent: (e: LeaseEvent) => void,
    onGap: (reason: string) => void,
  ): Promise<WatchHandle> => {
    this.watches.push(this.now);
    if (this.failWatch) setImmediate(() => onGap("watch canceled: etcdserver: permission denied"));
    return { close: async () => {}, lastRevision: () => String(this.revision) };
  };
}

function loopOn(etcd: FakeEtcd, until: number) {
  let chain: Promise<unknown> = Promise.resolve();
  let stopped = false;
  const restarts: string[] = [];
  const deps: WatchLoopDeps = {
    store: etcd,
    log: quiet,
    onListing: () => {},
    onEvent: () => {},
    serialize: (fn) => {
      const next = chain.then(fn, fn);
      chain = next.catch(() => undefined);
      return next;
    },
    retry: (_what, fn) => fn(),
    stopping: () => stopped || etcd.now >= until,
    connection: () => {},
    restarted: (r) => restarts.push(r),
    backoff: (n) => Math.min(30_000, 500 * 2 ** n), // jitter-free for the count
    sleep: async (ms) => {
      etcd.now += ms;
      await turn();
    },
    now: () => etcd.now,
  };
  return { loop: new WatchLoop(deps), restarts, stop: () => (stopped = true) };
}

describe("unit: watch loop backoff", function () {
  it("a watch that always fails never re-lists faster than its backoff (requests counted)", async function () {
    const etcd = new FakeEtcd();
    const horizon = 120_000; // two minutes of a broken watch
    const { loop } = loopOn(etcd, horizon);
    await loop.relist("start");
    for (let i = 0; i < 10_000 && etcd.now < horizon; i++) await turn();
    // Without backoff this loops once per event-loop turn: thousands of
    // full listings. With 0.5 s doubling to a 30 s cap: 0, .5, 1, 2, 4, 8,
    // 16, 30, 30, 30 s between listings in two minutes.
    assert.ok(etcd.lists.length >= 5, `kept retrying (${etcd.lists.length} listings)`);
    assert.ok(etcd.lists.length <= 11, `${etcd.lists.length} listings in 120 s (want <= 11)`);
    assert.equal(etcd.watches.length, etcd.lists.length, "one watch per listing");
    const gaps = etcd.lists.slice(1).map((t, i) => t - (etcd.lists[i] as number));
    gaps.forEach((g, i) => {
      const want = i === 0 ? 0 : Math.min(30_000, 500 * 2 ** (i - 1));
      assert.ok(
        g >= want,
        `listing ${i + 1} came ${g} ms after the one before (backoff ${want} ms)`,
      );
    });
  });

  it("a watch that was healthy for a while re-lists at once after its gap, and the backoff starts afresh", async function () {
    const etcd = new FakeEtcd();
    etcd.failWatch = false;
    const { loop, restarts, stop } = loopOn(etcd, Infinity);
    await loop.relist("start");
    // Compaction long after the watch started: one immediate re-list.
    etcd.now += WATCH_STABLE_MS + 1;
    const gen = loop.gen;
    (loop as unknown as { restart(g: number, r: string, w: string): void }).restart(
      gen,
      "compacted",
      "compacted at revision 90",
    );
    // The same watch's second report of the same gap is not a second re-list.
    (loop as unknown as { restart(g: number, r: string, w: string): void }).restart(
      gen,
      "canceled",
      "watch canceled",
    );
    for (let i = 0; i < 20; i++) await turn();
    assert.deepEqual(restarts, ["compacted"]);
    assert.equal(etcd.lists.length, 2);
    assert.equal(
      (etcd.lists[1] as number) - (etcd.lists[0] as number),
      WATCH_STABLE_MS + 1,
      "no delay",
    );
    stop();
  });
});
