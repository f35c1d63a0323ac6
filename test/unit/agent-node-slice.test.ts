/**
 * The agent's view of "did my node change": only its endpoints' rule sets and the sets they name.
 * A policy change for pods on another node (a new peer set there) must not make this node apply.
 */
import { isDeepStrictEqual } from 'node:util';
import { describe, expect, it } from 'vitest';
import { irForNode } from '../../src/ir/slice.js';
import { modelOf, namespace, networkPolicy, pod, type Manifest, compileIR } from '../support/manifests.js';

const PODS: Manifest[] = [
  namespace('app'),
  pod('app', 'a1', { labels: { app: 'a', role: 'client' }, node: 'node-1', ip: '198.18.0.10' }),
  pod('app', 'b1', { labels: { app: 'b' }, node: 'node-1', ip: '198.18.0.11' }),
  pod('app', 'b2', { labels: { app: 'b2' }, node: 'node-2', ip: '198.18.0.12' }),
];

/** `target` pods admit only peers labelled role=`from`. */
const admit = (target: string, from: string): Manifest =>
  networkPolicy('app', `to-${target}`, {
    podSelector: { matchLabels: { app: target } },
    ingress: [{ from: [{ podSelector: { matchLabels: { role: from } } }] }],
  });

const ir = (policies: Manifest[]) => compileIR(modelOf([...PODS, ...policies]), { nodeCount: 2 });
const same = (a: ReturnType<typeof ir>, b: ReturnType<typeof ir>, node: string): boolean =>
  isDeepStrictEqual(irForNode(a, node), irForNode(b, node));

describe('agent node slice', () => {
  it("a new peer set for another node's pod leaves this node's slice equal", () => {
    const before = ir([admit('b', 'client'), admit('b2', 'client')]);
    const after = ir([admit('b', 'client'), admit('b2', 'nobody')]);
    expect(after.ipSets.length).toBeGreaterThan(0);
    expect(same(before, after, 'node-1')).toBe(true);
    expect(same(before, after, 'node-2')).toBe(false);
  });

  it('the same change for a local pod changes the slice', () => {
    const before = ir([admit('b', 'client')]);
    const after = ir([admit('b', 'nobody')]);
    expect(same(before, after, 'node-1')).toBe(false);
  });

  it('a member joining a set a local rule names changes the slice, even from another node', () => {
    const before = ir([admit('b', 'client')]);
    const more = compileIR(
      modelOf([
        ...PODS,
        pod('app', 'c2', { labels: { role: 'client' }, node: 'node-2', ip: '198.18.0.13' }),
        admit('b', 'client'),
      ]),
      { nodeCount: 2 },
    );
    expect(same(before, more, 'node-1')).toBe(false);
  });
});
