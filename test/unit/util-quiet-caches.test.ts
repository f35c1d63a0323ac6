/**
 * Caches that only speed up bursts of changes are dropped when the agent goes quiet (its
 * compaction calls releaseQuietCaches) and made again, equal, by the next change: the nftables
 * diff's index of a ruleset's chains by name.
 */
import { describe, expect, it } from 'vitest';
import { byName } from '../../src/dataplane/nftables/diff.js';
import { releaseQuietCaches } from '../../src/util/quiet-caches.js';

describe('caches released when quiet', () => {
  it('drops the nftables name index of a list, and the next diff indexes it again', () => {
    const chains = Array.from({ length: 50 }, (_, i) => ({ name: `svc-${i}`, rules: [`rule ${i}`] }));
    const index = byName(chains);
    expect(byName(chains)).toBe(index);
    releaseQuietCaches();
    const again = byName(chains);
    expect(again).not.toBe(index);
    expect([...again]).toEqual([...index]);
    expect(again.get('svc-7')).toBe(chains[7]);
    expect(byName(chains)).toBe(again);
  });
});
