/**
 * The incremental calculation: random change sequences applied batch by batch must give exactly
 * buildIR of the model after them (whole cluster and node slices, walk and table modes), share
 * every unchanged object with the previous IR by reference, and report exactly what changed.
 * The run count scales with SWITCHYARD_PROPERTY_RUNS like the other calculation properties.
 */
import { isDeepStrictEqual } from 'node:util';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import {
  allocate,
  buildDecisionTable,
  buildIR,
  diffModels,
  IncrementalCalculation,
  MissingAllocationError,
  ruleSetKey,
  type Allocations,
  type BuildOptions,
  type IdChanges,
  type IrDelta,
} from '../../src/calc/index.js';
import type { IR } from '../../src/ir/types.js';
import { applyModelChanges, type ModelChange } from '../../src/model/changes.js';
import type { Model } from '../../src/model/types.js';
import { modelArb } from '../support/arbitraries.js';
import { batchArb, stepArb, type Step } from '../support/change-arbitraries.js';
import { modelOf, namespace, networkPolicy, pod, service } from '../support/manifests.js';

const TOTAL_RUNS = Number(process.env.SWITCHYARD_PROPERTY_RUNS ?? 102_000);
const SEQUENCES = Math.max(1000, Math.round(TOTAL_RUNS * 0.01));
const NODE_COUNT = 2;

const optsArb: fc.Arbitrary<BuildOptions> = fc
  .record({
    policyMode: fc.constantFrom(undefined, 'walk' as const, 'table' as const),
    node: fc.constantFrom(undefined, 'node-1', 'node-2'),
    maxTableEntries: fc.option(fc.constantFrom(6, 40)),
    readyPods: fc.option(fc.subarray(['x/a', 'x/b', 'y/a', 'y/c', 'z/d'])),
  })
  .map((r) => ({
    ...(r.policyMode === undefined ? {} : { policyMode: r.policyMode }),
    ...(r.node === undefined ? {} : { node: r.node }),
    ...(r.maxTableEntries === null ? {} : { maxTableEntries: r.maxTableEntries }),
    ...(r.readyPods === null ? {} : { readyPods: new Set(r.readyPods) }),
  }));

const sequenceArb = fc.record({
  initial: modelArb,
  seed: fc.array(stepArb, { maxLength: 5 }),
  batches: fc.array(fc.tuple(batchArb, fc.boolean()), { minLength: 1, maxLength: 6 }),
  opts: optsArb,
});

/** Runs `steps` from `model`: the model after them and every change they made, in order. */
function runSteps(model: Model, steps: readonly Step[]): { model: Model; changes: ModelChange[] } {
  const changes: ModelChange[] = [];
  let next = model;
  for (const step of steps) {
    const made = step(next);
    next = applyModelChanges(next, made);
    changes.push(...made);
  }
  return { model: next, changes };
}

function labelsSorted(key: string, value: unknown): unknown {
  return key === 'labels' || key === 'namespaceLabels'
    ? Object.fromEntries(Object.entries(value as Record<string, string>).sort(([a], [b]) => (a < b ? -1 : 1)))
    : value;
}

type Kind = Exclude<keyof IrDelta, 'nodes'>;

/** Each collection of an IR as [id, object] pairs, named as the delta names them. */
function collections(ir: IR): Record<Kind, [string, unknown][]> {
  return {
    endpoints: ir.endpoints.map((e) => [e.id, e]),
    ipSets: ir.ipSets.map((s) => [s.id, s]),
    ipPortSets: ir.ipPortSets.map((s) => [s.id, s]),
    ruleSets: ir.ruleSets.map((rs) => [ruleSetKey(rs), rs]),
    services: ir.services.map((s) => [s.id, s]),
    prefilters: ir.prefilters.map((p) => [p.name, p]),
  };
}

/**
 * Unchanged objects are the previous IR's (`===`), and the delta names exactly the ids that were
 * added, changed (not deeply equal) or removed.
 */
function expectSharing(prev: IR, next: IR, delta: IrDelta): void {
  const before = collections(prev);
  const after = collections(next);
  for (const kind of Object.keys(after) as Kind[]) {
    const old = new Map(before[kind]);
    const expected: IdChanges = { added: [], changed: [], removed: [] };
    for (const [id, o] of after[kind]) {
      const was = old.get(id);
      if (was === undefined) expected.added.push(id);
      else if (!isDeepStrictEqual(was, o)) expected.changed.push(id);
      else if (was !== o) expect.fail(`${kind} ${id} is unchanged but not the previous object`);
      old.delete(id);
    }
    expected.removed = [...old.keys()];
    for (const list of Object.values(expected)) list.sort();
    expect(delta[kind], kind).toEqual(expected);
  }
  expect(delta.nodes).toBe(!isDeepStrictEqual(prev.nodes, next.nodes) || prev.policyMode !== next.policyMode);
}

describe('IncrementalCalculation', () => {
  it('equals a full buildIR after every batch of random changes, sharing what did not change', () => {
    fc.assert(
      fc.property(sequenceArb, ({ initial, seed, batches, opts }) => {
        let { model } = runSteps(initial, seed);
        let allocations: Allocations = allocate(model, {}, { nodeCount: NODE_COUNT });
        const calc = new IncrementalCalculation(model, allocations, opts);
        expect(calc.ir).toStrictEqual(buildIR(model, allocations, opts));
        for (const [steps, viaDiff] of batches) {
          const after = runSteps(model, steps);
          const changes = viaDiff ? diffModels(model, after.model) : after.changes;
          allocations = allocate(after.model, allocations, { nodeCount: NODE_COUNT });
          const prev = calc.ir;
          const { ir, delta } = calc.apply(changes, allocations);
          expect(ir).toBe(calc.ir);
          const full = buildIR(after.model, allocations, opts);
          expect(ir).toStrictEqual(full);
          // Key order too (the IR is serialised), but for label maps: a relabel that only
          // reorders a pod's labels changes nothing, so the endpoint rightly stays the old one.
          expect(JSON.stringify(ir, labelsSorted)).toBe(JSON.stringify(full, labelsSorted));
          expectSharing(prev, ir, delta);
          model = after.model;
        }
      }),
      { numRuns: SEQUENCES },
    );
  });

  it('a relabelled pod changes its own endpoint and the set naming it, nothing else', () => {
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
    expect(ir).toStrictEqual(buildIR(after, allocations));
    expect(delta.endpoints).toEqual({ added: [], changed: ['x/c'], removed: [] });
    expect(delta.ipSets.changed).toHaveLength(1);
    expect(delta.ruleSets).toEqual({ added: [], changed: [], removed: [] });
    expect(ir.endpoints.find((e) => e.id === 'x/a')).toBe(first.endpoints.find((e) => e.id === 'x/a'));
    expect(ir.ruleSets).toBe(first.ruleSets);
    expect(calc.apply([]).ir).toBe(ir);
  });

  it('a pod removed under an EndpointSlice address turns its backend into the bare address', () => {
    const model = modelOf([
      namespace('x'),
      pod('x', 'a', { ip: '198.18.0.10' }),
      pod('x', 'b', { ip: '198.18.0.11' }),
      service('x', 'ext', { ports: [{ port: 80, targetPort: 8080 }] }),
      {
        apiVersion: 'discovery.k8s.io/v1',
        kind: 'EndpointSlice',
        metadata: { name: 'ext-1', namespace: 'x', labels: { 'kubernetes.io/service-name': 'ext' } },
        addressType: 'IPv4',
        ports: [{ port: 8080, protocol: 'TCP' }],
        endpoints: [{ addresses: ['198.18.0.10'] }],
      },
    ]);
    const calc = new IncrementalCalculation(model, allocate(model));
    expect(calc.ir.services[0]?.backends[0]?.endpoint).toBe('x/a');
    const after = { ...model, pods: model.pods.filter((p) => p.name !== 'a') };
    const { ir, delta } = calc.apply([{ op: 'remove', kind: 'pod', key: 'x/a' }], allocate(after));
    expect(ir).toStrictEqual(buildIR(after, allocate(after)));
    expect(ir.services[0]?.backends[0]?.endpoint).toBe('198.18.0.10');
    expect(delta.services.changed).toEqual(['x/ext:80/TCP']);
  });

  it('a change without its allocation fails before anything moves', () => {
    const model = modelOf([namespace('x'), pod('x', 'a', { labels: { app: 'web' } })]);
    const allocations = allocate(model);
    const calc = new IncrementalCalculation(model, allocations);
    const before = calc.ir;
    const first = model.pods[0];
    if (!first) throw new Error('no pod');
    const added = { ...first, name: 'b' };
    const relabel = { ...first, labels: { app: 'db' } };
    expect(() =>
      calc.apply([
        { op: 'upsert', kind: 'pod', object: relabel },
        { op: 'upsert', kind: 'pod', object: added },
      ]),
    ).toThrow(MissingAllocationError);
    expect(calc.ir).toBe(before);
    expect(calc.model).toStrictEqual(model);
    const after = { ...model, pods: [relabel, added] };
    const { ir } = calc.apply(
      [
        { op: 'upsert', kind: 'pod', object: relabel },
        { op: 'upsert', kind: 'pod', object: added },
      ],
      allocate(after, allocations),
    );
    expect(ir).toStrictEqual(buildIR(after, allocate(after, allocations)));
  });

  it('a table shared between rule sets of the same shape equals the one built for each', () => {
    fc.assert(
      fc.property(modelArb, fc.array(stepArb, { maxLength: 5 }), (initial, steps) => {
        const { model } = runSteps(initial, steps);
        const allocations = allocate(model, {}, { nodeCount: NODE_COUNT });
        const walk = buildIR(model, allocations);
        const table = buildIR(model, allocations, { policyMode: 'table' });
        walk.ruleSets.forEach((rs, i) => {
          const direct = buildDecisionTable(walk, rs);
          const shared = table.ruleSets[i];
          expect(JSON.stringify(shared?.table)).toBe(JSON.stringify(direct.ok ? direct.table : undefined));
        });
      }),
      { numRuns: Math.round(SEQUENCES / 2) },
    );
  });

  it('the same policy in two namespaces: one table construction, renamed, equals each built alone', () => {
    const policy = (ns: string, name: string) =>
      networkPolicy(ns, name, {
        podSelector: { matchLabels: { app: 'db' } },
        ingress: [
          {
            from: [{ namespaceSelector: {}, podSelector: { matchLabels: { app: 'web' } } }],
            ports: [{ port: 80 }],
          },
          { from: [{ namespaceSelector: {}, podSelector: { matchLabels: { app: 'db' } } }] },
        ],
      });
    const model = modelOf([
      namespace('x'),
      namespace('y'),
      ...['x', 'y'].flatMap((ns) => [
        pod(ns, 'db', { labels: { app: 'db' } }),
        pod(ns, 'web', { labels: { app: 'web' } }),
      ]),
      policy('x', 'db-x'),
      policy('y', 'db-y'),
    ]);
    const allocations = allocate(model);
    const walk = buildIR(model, allocations);
    const table = buildIR(model, allocations, { policyMode: 'table' });
    const rules = (id: string) =>
      table.ruleSets.find((rs) => rs.endpoint === id && rs.direction === 'ingress');
    expect(JSON.stringify(rules('y/db')?.table)).toContain('np:y/db-y/ingress/1');
    expect(JSON.stringify(rules('y/db')?.table)).not.toContain('np:x/');
    walk.ruleSets.forEach((rs, i) => {
      const direct = buildDecisionTable(walk, rs);
      expect(JSON.stringify(table.ruleSets[i]?.table)).toBe(
        JSON.stringify(direct.ok ? direct.table : undefined),
      );
    });
  });
});
