import { describe, expect, it } from 'vitest';
import { LastMemo } from '../../src/util/last-memo.js';

describe('LastMemo', () => {
  it('computes again only when the source is another object, per key', () => {
    const memo = new LastMemo<number[], string>();
    let computed = 0;
    const render = (list: number[]) => () => {
      computed++;
      return list.join(',');
    };
    const first = [1, 2];
    expect(memo.get('a', first, render(first))).toBe('1,2');
    expect(memo.get('a', first, render(first))).toBe('1,2');
    expect(computed).toBe(1);
    const equalButNew = [1, 2];
    expect(memo.get('a', equalButNew, render(equalButNew))).toBe('1,2');
    expect(computed).toBe(2);
    expect(memo.get('b', first, render(first))).toBe('1,2');
    expect(computed).toBe(3);
  });

  it('keeps only the last source per key', () => {
    const memo = new LastMemo<number[], number>();
    let computed = 0;
    const a = [1];
    const b = [2];
    const sum = (list: number[]) => () => (computed++, list[0] ?? 0);
    memo.get('k', a, sum(a));
    memo.get('k', b, sum(b));
    memo.get('k', a, sum(a));
    expect(computed).toBe(3);
  });
});
