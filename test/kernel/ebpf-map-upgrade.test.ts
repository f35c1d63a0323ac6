/**
 * A node whose maps were pinned by a version with another layout (IPv6 widened the conntrack,
 * set and flow keys) is opened by the next apply: the map of the old shape is replaced by an
 * empty one under the same pin and named, the others keep their contents.
 */
import { rmSync } from 'node:fs';
import { afterAll, expect, it } from 'vitest';
import { BpfMap, codecs, pinScopeDir, removePinScope } from '../../src/bpf/index.js';
import { MAP } from '../../src/dataplane/ebpf/layout.js';
import {
  closeNodeMaps,
  createNodeMaps,
  mapPinPath,
  openPinnedMaps,
  pinNodeMaps,
} from '../../src/dataplane/ebpf/maps.js';
import { describeKernel } from '../support/kernel.js';
import { RUN_TAG } from './bpf-lab.js';

describeKernel('ebpf: maps pinned with an older layout', () => {
  const scope = `bpft-upgrade-${RUN_TAG}`;
  afterAll(() => removePinScope(scope));

  it('replaces a map whose key size changed and keeps the others with their contents', () => {
    const dir = pinScopeDir(scope);
    const fresh = createNodeMaps();
    pinNodeMaps(fresh, dir);
    fresh.config.update(0, { flags: 1, pad: 0 });
    const configBefore = fresh.config.lookup(0);
    const ctKeySize = fresh.ct.info.keySize;
    closeNodeMaps(fresh);

    // What an IPv4-only version pinned: conntrack keyed by 4-byte addresses (13 bytes of key).
    const ctPin = mapPinPath(dir, MAP.conntrack);
    rmSync(ctPin);
    const old = BpfMap.create({
      type: 'lru_hash',
      name: 'ct',
      key: codecs.bytes(13),
      value: codecs.u64n,
      maxEntries: 64,
    });
    old.update(Buffer.alloc(13, 1), 7);
    old.pin(ctPin);
    const oldId = old.info.id;
    old.close();

    const replaced: string[] = [];
    const maps = openPinnedMaps(dir, replaced);
    try {
      expect(maps).toBeDefined();
      expect(replaced).toEqual([MAP.conntrack]);
      expect(maps?.ct.info.id).not.toBe(oldId);
      expect(maps?.ct.info.keySize).toBe(ctKeySize);
      expect([...(maps?.ct.keys() ?? [])]).toEqual([]);
      expect(maps?.config.lookup(0)).toEqual(configBefore);
    } finally {
      if (maps) closeNodeMaps(maps);
    }
    // Opened again, nothing is replaced: the pin holds the new layout now.
    const again: string[] = [];
    const reopened = openPinnedMaps(dir, again);
    if (reopened) closeNodeMaps(reopened);
    expect(again).toEqual([]);
  });
});
