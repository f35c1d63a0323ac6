/**
 * buildIR(model, allocations, { node }) builds only what one node installs (what an agent needs):
 * it must be exactly irForNode(buildIR(model, allocations), node), and explain on it must answer
 * as on the whole IR.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { explain } from '../../src/calc/index.js';
import { irForNode } from '../../src/ir/slice.js';
import type { IR } from '../../src/ir/types.js';
import { loadManifests, type Model, type Prefilter } from '../../src/model/index.js';
import { NETPOL_E2E_CASES, caseManifestPaths } from '../fixtures/netpol-e2e/cases.js';
import { modelArb } from '../support/arbitraries.js';
import { compileIR } from '../support/manifests.js';

const TOTAL_RUNS = Number(process.env.SWITCHYARD_PROPERTY_RUNS ?? 102_000);
const runs = (share: number): number => Math.max(100, Math.round(TOTAL_RUNS * share));

const src = { file: 'generated.yaml', line: 1 };

/** Prefilters on some or all nodes, so the slice has node-specific prefilters and their sets. */
const prefiltersArb: fc.Arbitrary<Prefilter[]> = fc
  .array(
    fc.record({
      nodes: fc.option(fc.subarray(['node-1', 'node-2', 'node-3'], { minLength: 1 })),
      cidrs: fc.subarray(['203.0.113.0/24', '198.18.0.2/32', '2001:db8::/32', '10.0.0.0/8'], {
        minLength: 1,
      }),
    }),
    { maxLength: 3 },
  )
  .map((ps) =>
    ps.map((p, i) => ({
      name: `pf${i}`,
      cidrs: p.cidrs,
      source: src,
      ...(p.nodes ? { nodes: p.nodes } : {}),
    })),
  );

const sliceModelArb = fc
  .tuple(modelArb, prefiltersArb, fc.constantFrom(1, 2, 3))
  .map(([model, prefilters, nodeCount]) => ({ model: { ...model, prefilters }, nodeCount }));

function expectSlicesEqual(model: Model, opts: { nodeCount?: number } = {}): void {
  const whole = compileIR(model, opts);
  for (const node of [...whole.nodes.map((n) => n.name), 'node-absent']) {
    const sliced = compileIR(model, { ...opts, node });
    expect(JSON.stringify(sliced), node).toBe(JSON.stringify(irForNode(whole, node)));
  }
}

function explainAll(model: Model, ir: IR): unknown[] {
  const out: unknown[] = [];
  for (const from of ir.endpoints)
    for (const to of ir.endpoints)
      out.push(explain(model, ir, { from: from.id, to: to.id, protocol: 'TCP', port: 80 }));
  return out;
}

describe('buildIR for one node', () => {
  it('equals irForNode of the whole IR (generated models, with prefilters)', () => {
    fc.assert(
      fc.property(sliceModelArb, ({ model, nodeCount }) => expectSlicesEqual(model, { nodeCount })),
      { numRuns: runs(0.05) },
    );
  });

  it('equals irForNode of the whole IR (netpol e2e fixtures and examples)', () => {
    const seen = new Set<string>();
    for (const c of NETPOL_E2E_CASES) {
      const paths = caseManifestPaths(c);
      const key = paths.join('|');
      if (seen.has(key)) continue;
      seen.add(key);
      expectSlicesEqual(loadManifests(paths));
      expectSlicesEqual(loadManifests(paths), { nodeCount: 3 });
    }
    expectSlicesEqual(loadManifests(['examples/walkthrough', 'examples/global', 'examples/services']));
  });

  it('keeps every endpoint, node and service, and explains any pair as the whole IR does', () => {
    fc.assert(
      fc.property(sliceModelArb, ({ model, nodeCount }) => {
        const whole = compileIR(model, { nodeCount });
        const sliced = compileIR(model, { nodeCount, node: 'node-1' });
        expect(sliced.endpoints).toEqual(whole.endpoints);
        expect(sliced.nodes).toEqual(whole.nodes);
        expect(sliced.services).toEqual(whole.services);
        expect(explainAll(model, sliced)).toEqual(explainAll(model, whole));
      }),
      { numRuns: runs(0.01) },
    );
  });
});
