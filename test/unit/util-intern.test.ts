import { describe, expect, it } from 'vitest';
import { exact, flat, internStrings } from '../../src/util/intern.js';

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
});
