/** Exponential backoff with jitter (half fixed, half random), capped. */
export function backoffMs(attempt: number, baseMs = 250, capMs = 10000): number {
  const exp = Math.min(capMs, baseMs * 2 ** Math.min(attempt, 16));
  return Math.round(exp / 2 + (Math.random() * exp) / 2);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
