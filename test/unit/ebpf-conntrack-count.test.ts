/**
 * The eBPF conntrack gauge counts live entries only: the data path takes an entry whose expiry is
 * past bpf_ktime_get_ns for none, so an expired entry still in the LRU map is no connection
 * (a lab showed 865 entries with none live before this).
 */
import { describe, expect, it } from 'vitest';
import { countLive } from '../../src/dataplane/ebpf/conntrack.js';

describe('eBPF conntrack: live entries', () => {
  const now = 5_000_000_000_000n;

  it('counts entries whose expiry is not past the monotonic clock', () => {
    const values = [
      { expires: now - 1n },
      { expires: now - 60_000_000_000n },
      { expires: now },
      { expires: now + 1n },
      { expires: now + 300_000_000_000n },
    ];
    expect(countLive(values, now)).toBe(3);
  });

  it('is 0 for a table of expired entries only, however many', () => {
    expect(
      countLive(
        Array.from({ length: 865 }, (_, i) => ({ expires: now - BigInt(i + 1) })),
        now,
      ),
    ).toBe(0);
  });
});
