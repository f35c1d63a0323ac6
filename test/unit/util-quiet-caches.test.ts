/**
 * Caches that only speed up bursts of changes are dropped when the agent goes quiet (its
 * compaction calls releaseQuietCaches) and made again, equal, by the next change: the nftables
 * diff's index of a ruleset's chains by name; and the kernel BTF the flow sources' programs needed
 * when they started.
 */
import { existsSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { kernelBtf, VMLINUX_BTF_PATH } from '../../src/bpf/btf/index.js';
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

  it.runIf(existsSync(VMLINUX_BTF_PATH) || process.env.CI === 'true')(
    'drops the cached kernel BTF, and the next use reads it again',
    () => {
      const btf = kernelBtf();
      expect(kernelBtf()).toBe(btf);
      releaseQuietCaches();
      const again = kernelBtf();
      expect(again).not.toBe(btf);
      expect(again.typeCount).toBe(btf.typeCount);
    },
  );
});
