/**
 * Properties of the calculation that every later layer relies on. The run count scales with
 * SWITCHYARD_PROPERTY_RUNS (CI runs ≥ 100k cases in total across these properties).
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { reachMatrix } from '../../src/calc/index.js';
import { networkPolicySelects } from '../../src/calc/policy.js';
import type { Endpoint, IR } from '../../src/ir/types.js';
import type { Model } from '../../src/model/types.js';
import { modelArb, networkPolicyArb } from '../support/arbitraries.js';
import { compileIR } from '../support/manifests.js';

const TOTAL_RUNS = Number(process.env.SWITCHYARD_PROPERTY_RUNS ?? 102_000);
const runs = (share: number): number => Math.max(100, Math.round(TOTAL_RUNS * share));

const PROBES = [
  { port: 80, protocol: 'TCP' as const },
  { port: 81, protocol: 'UDP' as const },
];

function matrices(ir: IR): ReturnType<typeof reachMatrix>[] {
  return PROBES.map((p) => reachMatrix(ir, p.port, p.protocol));
}

describe('calculation properties', () => {
  it('is deterministic: the same model gives the same IR', () => {
    fc.assert(
      fc.property(modelArb, (model) => {
        expect(compileIR(model)).toEqual(compileIR(structuredClone(model)));
      }),
      { numRuns: runs(0.2) },
    );
  });

  it('does not depend on manifest order', () => {
    const shuffled = <T>(xs: readonly T[], seed: number): T[] =>
      xs
        .map((x, i) => ({ x, k: (i * 7919 + seed * 104729) % 1000003 }))
        .sort((a, b) => a.k - b.k)
        .map((e) => e.x);
    fc.assert(
      fc.property(modelArb, fc.integer({ min: 1, max: 1000 }), (model, seed) => {
        const other: Model = {
          namespaces: shuffled(model.namespaces, seed),
          pods: shuffled(model.pods, seed + 1),
          services: shuffled(model.services, seed + 2),
          endpointSlices: shuffled(model.endpointSlices, seed + 6),
          networkPolicies: shuffled(model.networkPolicies, seed + 3),
          globalPolicies: shuffled(model.globalPolicies, seed + 4),
          prefilters: shuffled(model.prefilters, seed + 5),
        };
        const a = compileIR(model);
        const b = compileIR(other);
        expect(b).toEqual(a);
        expect(matrices(b)).toEqual(matrices(a));
      }),
      { numRuns: runs(0.3) },
    );
  });

  it('adding an allow-only NetworkPolicy never removes an allowed pair of already-selected pods', () => {
    fc.assert(
      fc.property(modelArb, networkPolicyArb('added'), (model, added) => {
        const before = compileIR(model);
        const after = compileIR({ ...model, networkPolicies: [...model.networkPolicies, added] });
        // A pod the new policy selects for the first time in a direction goes from "no policy"
        // to default deny there: that is a documented loss, so those pods are excluded.
        const newlySelected = (ep: Endpoint, direction: 'ingress' | 'egress'): boolean =>
          networkPolicySelects(added, ep, direction) &&
          !model.networkPolicies.some((np) => networkPolicySelects(np, ep, direction));
        const mb = matrices(before);
        const ma = matrices(after);
        for (const [i, m] of mb.entries()) {
          for (const src of before.endpoints) {
            if (newlySelected(src, 'egress')) continue;
            for (const dst of before.endpoints) {
              if (newlySelected(dst, 'ingress')) continue;
              if (m.results[src.id]?.[dst.id])
                expect(ma[i]?.results[src.id]?.[dst.id], `${src.id} → ${dst.id}`).toBe(true);
            }
          }
        }
      }),
      { numRuns: runs(0.5) },
    );
  });
});
