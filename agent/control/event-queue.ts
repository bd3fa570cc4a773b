// Coalesces watch events into batches. etcd delivers a burst (a rollout's
// thousands of lease writes) as many watch responses; handling each event on
// its own costs one map write, one promise and one log line apiece. Events
// are queued as they arrive and handed over together at the next turn of the
// event loop, or, while a batch is being handled, when it is done: a burst
// becomes a few batched map writes, and a lone put still reaches the map
// within the same turn.

export class EventQueue<E> {
  private pending: E[] = [];
  private scheduled = false;
  private running = false;
  private closed = false;
  /** Batches handed over so far (tests and the bench count them). */
  batches = 0;

  constructor(
    private readonly handle: (batch: E[]) => Promise<void>,
    private readonly onError: (e: unknown) => void,
  ) {}

  push(e: E): void {
    if (this.closed) return;
    this.pending.push(e);
    this.schedule();
  }

  /** Drops what is queued and stops handing over (a re-list replaces it). */
  clear(): void {
    this.pending = [];
  }

  close(): void {
    this.closed = true;
    this.pending = [];
  }

  /** Resolves when everything queued so far has been handled. */
  async drained(): Promise<void> {
    while (this.pending.length || this.running || this.scheduled) {
      await new Promise((r) => setImmediate(r));
    }
  }

  private schedule(): void {
    if (this.scheduled || this.running) return;
    this.scheduled = true;
    setImmediate(() => void this.run());
  }

  private async run(): Promise<void> {
    this.scheduled = false;
    if (this.running) return;
    this.running = true;
    try {
      while (this.pending.length && !this.closed) {
        const batch = this.pending;
        this.pending = [];
        this.batches++;
        try {
          await this.handle(batch);
        } catch (e) {
          this.onError(e);
        }
      }
    } finally {
      this.running = false;
    }
  }
}
