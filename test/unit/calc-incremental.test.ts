/**
 * The incremental calculation: change batches applied one after another must give exactly
 * buildIR of the final model, sharing every unchanged object with the previous IR.
 */
import { describe, expect, it } from 'vitest';
import { allocate, buildIR, diffModels, IncrementalCalculation } from '../../src/calc/index.js';
import { modelOf, namespace, networkPolicy, pod } from '../support/manifests.js';

describe('IncrementalCalculation', () => {
  it('a relabelled pod changes its own endpoint and the sets naming it, nothing else', () => {
    const before = modelOf([
      namespace('x'),
      pod('x', 'a', { labels: { app: 'web' } }),
      pod('x', 'b', { labels: { app: 'db' } }),
      pod('x', 'c', { labels: { app: 'other' } }),
      networkPolicy('x', 'db', {
        podSelector: { matchLabels: { app: 'db' } },
        ingress: [{ from: [{ podSelector: { matchLabels: { app: 'web' } } }] }],
      }),
    ]);
    const allocations = allocate(before);
    const calc = new IncrementalCalculation(before, allocations);
    const first = calc.ir;
    const after = {
      ...before,
      pods: before.pods.map((p) => (p.name === 'c' ? { ...p, labels: { app: 'web' } } : p)),
    };
    const { ir, delta } = calc.apply(diffModels(before, after));
    expect(ir).toEqual(buildIR(after, allocations));
    expect(delta.endpoints).toEqual({ added: [], changed: ['x/c'], removed: [] });
    expect(delta.ipSets.changed).toHaveLength(1);
    expect(delta.ruleSets).toEqual({ added: [], changed: [], removed: [] });
    expect(ir.endpoints.find((e) => e.id === 'x/a')).toBe(first.endpoints.find((e) => e.id === 'x/a'));
    expect(ir.ruleSets).toBe(first.ruleSets);
    expect(calc.apply([]).ir).toBe(ir);
  });
});
