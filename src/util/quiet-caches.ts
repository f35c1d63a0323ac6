/**
 * Caches that only speed up work that comes in bursts, dropped when the process goes quiet (an
 * agent's compaction, agent/memory.ts): the first work after a quiet spell makes them again. For
 * a cache whose rebuild costs a few milliseconds and whose keeping costs memory for as long as
 * the agent idles.
 */
const releases = new Set<() => void>();

/** `release` drops a cache; called each time the process goes quiet. */
export function releasedWhenQuiet(release: () => void): void {
  releases.add(release);
}

export function releaseQuietCaches(): void {
  for (const release of releases) release();
}
