/**
 * The pod → node map of internalTrafficPolicy Local (services-pods.ts), against a map double:
 * a node writes its own pods' cgroup ids with its node index, removes the pods that left, never
 * touches another node's entries, and with its shadow neither reads the map nor writes again.
 */
import { mkdirSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { BpfMap } from '../../src/bpf/index.js';
import type { PodNodeKey, PodNodeValue } from '../../src/dataplane/ebpf/services-layout.js';
import { syncPodNodes } from '../../src/dataplane/ebpf/services-pods.js';
import type { IR } from '../../src/ir/types.js';

const root = mkdtempSync(join(tmpdir(), 'sy-pods-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function cgroup(name: string): { path: string; id: bigint } {
  const path = join(root, name);
  mkdirSync(path, { recursive: true });
  return { path, id: statSync(path, { bigint: true }).ino };
}

/** The map calls syncPodNodes makes, over a JavaScript Map; `reads` counts full walks. */
function fakeMap() {
  const data = new Map<bigint, number>();
  const calls = { reads: 0, writes: 0, deletes: 0 };
  const map = {
    info: { id: 7 },
    *entries(): Generator<[PodNodeKey, PodNodeValue]> {
      calls.reads++;
      for (const [cgroup, node] of data) yield [{ cgroup }, { node }];
    },
    updateBatch(items: [PodNodeKey, PodNodeValue][]) {
      calls.writes += items.length;
      for (const [k, v] of items) data.set(k.cgroup, v.node);
      return items.length;
    },
    deleteBatch(keys: PodNodeKey[]) {
      calls.deletes += keys.length;
      for (const k of keys) data.delete(k.cgroup);
      return keys.length;
    },
  };
  return { map: map as unknown as BpfMap<PodNodeKey, PodNodeValue>, data, calls };
}

function ir(pods: [string, string][]): IR {
  return {
    nodes: [{ name: 'node-2' }, { name: 'node-1' }],
    endpoints: pods.map(([id, node]) => ({ id, node })),
  } as unknown as IR;
}

describe('the pod → node map', () => {
  const a = cgroup('a');
  const b = cgroup('b');
  const c = cgroup('c');
  const cgroups = { 'x/a': a.path, 'x/b': b.path, 'x/c': c.path, 'x/gone': join(root, 'never-made') };

  it("writes a node's own pods with its index (by node name), leaves other nodes' entries", () => {
    const { map, data, calls } = fakeMap();
    data.set(999n, 2); // node-2's pod
    const state = ir([
      ['x/a', 'node-1'],
      ['x/b', 'node-1'],
      ['x/c', 'node-2'],
      ['x/gone', 'node-1'],
    ]);
    const first = syncPodNodes(map, state, { node: 'node-1', cgroups }, undefined);
    expect(first.wrote).toBe(true);
    expect(new Map(data)).toEqual(
      new Map([
        [999n, 2],
        [a.id, 1],
        [b.id, 1],
      ]),
    );
    expect(calls.reads).toBe(1);
    // With the shadow: no read, no write.
    const again = syncPodNodes(map, state, { node: 'node-1', cgroups }, first.shadow);
    expect(again.wrote).toBe(false);
    expect(calls).toEqual({ reads: 1, writes: 2, deletes: 0 });
    // A pod leaves: its entry goes, and only it.
    const left = syncPodNodes(map, ir([['x/a', 'node-1']]), { node: 'node-1', cgroups }, again.shadow);
    expect(left.wrote).toBe(true);
    expect([...data.keys()].sort()).toEqual([999n, a.id].sort());
    expect(calls.reads).toBe(1);
  });

  it('without a shadow (a restart) finds its own entries by index and removes the stale ones', () => {
    const { map, data } = fakeMap();
    data.set(123n, 1); // a pod of node-1 that is gone
    data.set(456n, 2);
    syncPodNodes(map, ir([['x/b', 'node-1']]), { node: 'node-1', cgroups }, undefined);
    expect(new Map(data)).toEqual(
      new Map([
        [456n, 2],
        [b.id, 1],
      ]),
    );
  });
});
