import type { BenchContext } from '../../src/bench/types.js';

/** A `--quick` bench context that counts progress ticks, so tests can see the work was reported. */
export function quickContext(): BenchContext & { ticks: number } {
  const ctx = {
    quick: true,
    ticks: 0,
    progress: {
      total: (): void => undefined,
      tick: (): void => {
        ctx.ticks++;
      },
    },
  };
  return ctx;
}
