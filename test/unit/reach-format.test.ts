/**
 * Reach output: the prediction tells policy denial from a port nobody serves, the comparison of a
 * measured matrix with the prediction counts and lists mismatches, and the text scales (a grid up
 * to 20 pods, a per-namespace summary above).
 */
import { describe, expect, it } from 'vitest';
import { compareReach, reachMatrix, type ReachMatrix, type ReachOutcome } from '../../src/calc/index.js';
import {
  formatNamespaceSummary,
  formatReachGrid,
  formatReachView,
  reachLegend,
} from '../../src/cli/reach-format.js';
import { Cluster, namespace, networkPolicy, pod } from '../support/manifests.js';

function matrixOf(outcomes: Record<string, Record<string, ReachOutcome>>): ReachMatrix {
  const results = Object.fromEntries(
    Object.entries(outcomes).map(([s, row]) => [
      s,
      Object.fromEntries(Object.entries(row).map(([d, o]) => [d, o === 'allowed'])),
    ]),
  );
  return { port: 80, protocol: 'TCP', results, outcomes };
}

describe('reachMatrix outcomes', () => {
  // a serves 80, b serves only 81; only x/a may reach b (ingress policy on b).
  const c = new Cluster([
    namespace('x', { ns: 'x' }),
    pod('x', 'a', { labels: { pod: 'a' }, ip: '198.18.1.1', ports: [{ containerPort: 80 }] }),
    pod('x', 'b', { labels: { pod: 'b' }, ip: '198.18.1.2', ports: [{ containerPort: 81 }] }),
    pod('x', 'c', { labels: { pod: 'c' }, ip: '198.18.1.3', ports: [{ containerPort: 80 }] }),
    networkPolicy('x', 'b-from-a', {
      podSelector: { matchLabels: { pod: 'b' } },
      ingress: [{ from: [{ podSelector: { matchLabels: { pod: 'a' } } }] }],
    }),
  ]);

  it('says denied where policy drops, unserved where policy allows but nothing listens', () => {
    const m = reachMatrix(c.ir, 80, 'TCP');
    expect(m.outcomes['x/a']).toEqual({ 'x/a': 'allowed', 'x/b': 'unserved', 'x/c': 'allowed' });
    expect(m.outcomes['x/c']?.['x/b']).toBe('denied');
    expect(m.results['x/a']).toEqual({ 'x/a': true, 'x/b': false, 'x/c': true });
    expect(reachMatrix(c.ir, 81, 'TCP').outcomes['x/a']?.['x/b']).toBe('allowed');
  });

  it('prints . X - and a legend saying which is which', () => {
    const text = formatReachGrid(reachMatrix(c.ir, 80, 'TCP'));
    expect(text.split('\n')).toEqual([
      'from \\ to  x/a  x/b  x/c',
      '---------  ---  ---  ---',
      'x/a        .    -    .',
      'x/b        .    -    .',
      'x/c        .    X    .',
    ]);
    expect(reachLegend(false)).toMatch(/X denied by policy.*- allowed, but nothing serves the port/);
    expect(reachLegend(true)).toMatch(/! differs from the prediction/);
  });
});

describe('compareReach', () => {
  const predicted = matrixOf({ a: { a: 'allowed', b: 'denied' }, b: { a: 'unserved', b: 'allowed' } });

  it('counts the measured outcomes and lists each pair that differs', () => {
    const measured = matrixOf({ a: { a: 'allowed', b: 'allowed' }, b: { a: 'denied', b: 'allowed' } });
    const c = compareReach(measured, predicted);
    expect(c).toMatchObject({ pairs: 4, allowed: 3, denied: 1, unserved: 0, unpredicted: 0 });
    expect(c.mismatches).toEqual([
      { from: 'a', to: 'b', predicted: 'denied', measured: 'allowed' },
      { from: 'b', to: 'a', predicted: 'unserved', measured: 'denied' },
    ]);
    const text = formatReachView({
      matrix: measured,
      comparison: c,
      compared: true,
      durationMs: 12,
      full: false,
    });
    expect(text).toContain('a          .   .!\nb          X!  .');
    expect(text).toContain('differ from the prediction (2):\n  a → b: measured allowed, predicted denied');
    expect(text.split('\n').at(-1)).toBe(
      '4 pairs probed: 3 allowed, 1 denied, 0 unserved; 2 mismatches with the prediction (12 ms)',
    );
  });

  it('has no mismatches when measurement equals prediction', () => {
    expect(compareReach(predicted, predicted).mismatches).toEqual([]);
  });
});

describe('scaling', () => {
  // 3 namespaces × 8 pods = 24 pods: above the 20 a terminal fits.
  const pods = ['p', 'q', 'r'].flatMap((ns) => Array.from({ length: 8 }, (_, i) => `${ns}/pod-${i}`));
  const outcomes = Object.fromEntries(
    pods.map((s) => [
      s,
      Object.fromEntries(
        pods.map((d): [string, ReachOutcome] => [d, d.startsWith('r/') ? 'denied' : 'allowed']),
      ),
    ]),
  );
  const m = matrixOf(outcomes);

  it('summarises per namespace above 20 pods, listing denied pairs (capped)', () => {
    const text = formatReachView({
      matrix: m,
      comparison: compareReach(m, m),
      compared: true,
      durationMs: 5,
      full: false,
    });
    const lines = text.split('\n');
    expect(Math.max(...lines.map((l) => l.length))).toBeLessThan(100);
    expect(text).toContain('p                                    64/0/0  64/0/0  0/64/0');
    expect(text).toContain('denied by policy (192):');
    expect(text).toContain('… and 152 more (--full or --json for all)');
    expect(lines.at(-1)).toBe(
      '576 pairs probed: 384 allowed, 192 denied, 0 unserved; 0 mismatches with the prediction (5 ms)',
    );
  });

  it('prints the whole grid with --full', () => {
    const text = formatReachView({
      matrix: m,
      comparison: compareReach(m, m),
      compared: true,
      durationMs: 5,
      full: true,
    });
    expect(text.split('\n')[0]).toContain('r/pod-7');
    expect(text.split('\n')).toHaveLength(2 + 24 + 2);
  });

  it('marks namespace cells holding mismatches', () => {
    const wrong = [
      { from: 'p/pod-0', to: 'r/pod-1', predicted: 'denied' as const, measured: 'allowed' as const },
    ];
    expect(formatNamespaceSummary(m, wrong)).toContain('0/64/0 !1');
  });
});
