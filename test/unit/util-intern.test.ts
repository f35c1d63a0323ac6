import { describe, expect, it } from 'vitest';
import { exact, flat, internStrings, type LeafTable } from '../../src/util/intern.js';
import { convertManifestFile } from '../../src/model/index.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

describe('intern', () => {
  it('flat gives an equal string', () => {
    const parts = ['ns12', 'pod-with-a-long-name'];
    const id = `${parts[0]}/${parts[1]}`;
    expect(flat(id)).toBe('ns12/pod-with-a-long-name');
    expect(flat('short')).toBe('short');
  });

  it('exact copies an array with its holes, and keeps an empty one empty', () => {
    const a: (number | undefined)[] = [];
    a[0] = 1;
    a[2] = 3;
    const copy = exact(a);
    expect(copy).not.toBe(a);
    expect(copy).toEqual(a);
    expect(1 in copy).toBe(false);
    expect(exact([])).toEqual([]);
  });

  it('internStrings replaces arrays by exact copies, keeps an array met twice one array, and shares strings', () => {
    const shared = ['x'];
    const value = {
      a: shared,
      b: shared,
      list: [{ name: 'a-long-label-value-1' }, { name: 'a-long-label-value-1' }],
    };
    const before = value.list;
    const out = internStrings(value);
    expect(out).toBe(value);
    expect(out.list).not.toBe(before);
    expect(out.list).toEqual([{ name: 'a-long-label-value-1' }, { name: 'a-long-label-value-1' }]);
    expect(out.a).toBe(out.b);
    expect(out.a).toEqual(['x']);
    const frozen = Object.freeze(['f']);
    expect(internStrings({ frozen }).frozen).toBe(frozen);
  });

  it('internStrings with a leaf table makes equal leaves of one input one frozen object, and leaves anything else alone', () => {
    const table: LeafTable = new Map();
    const a = { ports: [{ port: 80, protocol: 'TCP' }], labels: { app: 'x' }, none: [], src: { line: 1 } };
    const b = { ports: [{ port: 80, protocol: 'TCP' }], labels: { app: 'x' }, none: [], src: { line: 2 } };
    const c = {
      ports: [{ port: 80, protocol: 'UDP' }],
      labels: { app: 'x', extra: undefined },
      none: [null],
    };
    for (const o of [a, b, c]) internStrings(o, new Map(), table);
    expect(b.ports).toBe(a.ports);
    expect(b.ports[0]).toBe(a.ports[0]);
    expect(b.labels).toBe(a.labels);
    expect(b.none).toBe(a.none);
    expect(b.src).not.toBe(a.src);
    expect(b.src).toEqual({ line: 2 });
    expect(Object.isFrozen(a.ports) && Object.isFrozen(a.ports[0])).toBe(true);
    expect(() => (a.ports as unknown[]).push(1)).toThrow(TypeError);
    // Not equal, or not written back exactly by JSON (undefined, null): never shared.
    expect(c.ports).not.toBe(a.ports);
    expect(c.labels).not.toBe(a.labels);
    expect('extra' in c.labels).toBe(true);
    expect(Object.isFrozen(c.labels)).toBe(false);
    expect(c.none).not.toBe(a.none);
    // The value itself is never replaced or frozen.
    expect(Object.isFrozen(a)).toBe(false);
  });

  it('the pods of one manifest file share their equal ports and labels', () => {
    const dir = mkdtempSync(join(tmpdir(), 'sy-intern-'));
    try {
      const file = join(dir, 'pods.yaml');
      const pod = (i: number): string =>
        `apiVersion: v1\nkind: Pod\nmetadata:\n  name: p${i}\n  namespace: ns\n  labels: { app: web }\n` +
        `spec:\n  nodeName: node-1\n  containers: [{ name: c, ports: [{ containerPort: 8080 }] }]\n`;
      writeFileSync(file, [pod(1), pod(2)].join('---\n'));
      const [p1, p2] = convertManifestFile(file).objects.map(
        (o) => o.value as { labels: object; ports: object },
      );
      expect(p1?.labels).toEqual({ app: 'web' });
      expect(p2?.labels).toBe(p1?.labels);
      expect(p2?.ports).toBe(p1?.ports);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
