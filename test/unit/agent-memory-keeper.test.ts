import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { BASELINE_SETTLE_MS, COMPACT_GROWTH_BYTES, MemoryKeeper } from '../../src/agent/memory.js';
import type { AgentMemory } from '../../src/agent/api-types.js';

const MiB = 2 ** 20;

/** A keeper over a made-up RSS whose compactions run when the test says so (the agent's queue). */
function keeper(rss: { now: number }): {
  keeper: MemoryKeeper;
  queued: (() => void)[];
  states: AgentMemory[];
} {
  const queued: (() => void)[] = [];
  const states: AgentMemory[] = [];
  const k: MemoryKeeper = new MemoryKeeper({
    lookAfterMs: 1000,
    schedule: () => queued.push(() => void k.compact()),
    changed: (state) => states.push(state),
    rss: () => rss.now,
  });
  return { keeper: k, queued, states };
}

describe('MemoryKeeper (agent/memory.ts)', () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it('compacts once the look after work finds the process grown, and is due until then', () => {
    const rss = { now: 100 * MiB };
    const { keeper: k, queued } = keeper(rss);
    rss.now += COMPACT_GROWTH_BYTES + MiB;
    k.afterWork();
    expect(k.due).toBe(true);
    vi.advanceTimersByTime(999);
    expect(queued).toHaveLength(0);
    vi.advanceTimersByTime(1);
    expect(queued).toHaveLength(1);
    // Decided but not yet run (the queue is busy): still due.
    expect(k.due).toBe(true);
    rss.now = 110 * MiB; // what the compaction gave back
    queued[0]?.();
    expect(k.due).toBe(false);
    // The new baseline is what the compaction left: the same growth again is needed for another.
    rss.now += COMPACT_GROWTH_BYTES - MiB;
    k.afterWork();
    vi.advanceTimersByTime(1000);
    expect(queued).toHaveLength(1);
    expect(k.due).toBe(false);
  });

  it('does nothing but look when the work left little behind', () => {
    const rss = { now: 100 * MiB };
    const { keeper: k, queued, states } = keeper(rss);
    rss.now += 4 * MiB;
    k.afterWork();
    vi.advanceTimersByTime(1000);
    expect(queued).toHaveLength(0);
    expect(k.due).toBe(false);
    expect(states.map((s) => s.due)).toEqual([true, false]);
  });

  it('looks lookAfterMs after the first of several works: frequent polls do not put it off', () => {
    const rss = { now: 100 * MiB };
    const { keeper: k, queued } = keeper(rss);
    rss.now += COMPACT_GROWTH_BYTES;
    for (let t = 0; t < 10; t++) {
      k.afterWork();
      vi.advanceTimersByTime(400);
    }
    // Looked at 1000 ms and decided once; the later works' looks find the compaction pending.
    expect(queued).toHaveLength(1);
  });

  it('is not due once the owner declines the compaction it was handed', () => {
    const rss = { now: 100 * MiB };
    const { keeper: k, queued } = keeper(rss);
    rss.now += 2 * COMPACT_GROWTH_BYTES;
    k.afterWork();
    vi.advanceTimersByTime(1000);
    expect(queued).toHaveLength(1);
    k.skipped();
    expect(k.due).toBe(false);
    // Still grown: the next work's look hands it over again.
    k.afterWork();
    vi.advanceTimersByTime(1000);
    expect(queued).toHaveLength(2);
  });

  it('compacts after a scrape that a compaction ran during, whatever the growth it sees then', () => {
    const rss = { now: 100 * MiB };
    const { keeper: k, queued } = keeper(rss);
    k.started();
    rss.now = 180 * MiB; // the scrape's read, live while the read-back compacts
    k.compact();
    rss.now = 185 * MiB;
    k.ended();
    expect(k.due).toBe(true);
    vi.advanceTimersByTime(1000);
    // Against the 180 MiB the compaction saw this would be too little growth to act on.
    expect(queued).toHaveLength(1);
    rss.now = 110 * MiB;
    queued[0]?.();
    expect(k.due).toBe(false);
    // A compaction with nothing under way keeps its baseline again.
    rss.now += MiB;
    k.afterWork();
    vi.advanceTimersByTime(1000);
    expect(queued).toHaveLength(1);
  });

  it('measures growth from what the compaction left once its pages are gone, not from the RSS right after it', () => {
    const rss = { now: 180 * MiB };
    const { keeper: k, queued } = keeper(rss);
    // Right after the collection the freed pages are still mapped (an eBPF agent at 10k
    // endpoints: 177–198 MiB); they leave in the background.
    k.compact();
    rss.now = 115 * MiB;
    vi.advanceTimersByTime(BASELINE_SETTLE_MS);
    // A repair writes everything again: 75 MiB over what the compaction left, though only 10 MiB
    // over the 180 MiB read right after it.
    rss.now = 190 * MiB;
    k.afterWork();
    vi.advanceTimersByTime(1000);
    expect(queued).toHaveLength(1);
  });

  it('keeps the lower reading when work grows the process before the pages are gone', () => {
    const rss = { now: 120 * MiB };
    const { keeper: k, queued } = keeper(rss);
    k.compact();
    rss.now = 120 * MiB + COMPACT_GROWTH_BYTES - MiB;
    vi.advanceTimersByTime(BASELINE_SETTLE_MS);
    rss.now = 120 * MiB + COMPACT_GROWTH_BYTES;
    k.afterWork();
    vi.advanceTimersByTime(1000);
    expect(queued).toHaveLength(1);
  });
});
