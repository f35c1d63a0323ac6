/**
 * Upstream Kubernetes network-policy e2e scenarios (test/e2e/network/netpol/network_policy.go,
 * "Netpol" on the x/y/z model) against the reference evaluator.
 *
 * Data: test/fixtures/netpol-e2e/cases.ts lists the scenarios; each names its NetworkPolicy
 * fixtures (test/fixtures/netpol-e2e/*.yaml), the model (test/fixtures/xyz/model.yaml unless a
 * label-update step uses a variant), the probes ({port, protocol}) and the expectation.
 *
 * Expectation format, as upstream builds it (test/support/reachability.ts):
 *   { default: true|false, edits: [
 *       { op: 'expectPeer', from: {ns?, pod?}, to: {ns?, pod?}, value },  // Reachability.ExpectPeer; omitted = any
 *       { op: 'expect', from: 'x/a', to: 'y/b', value },                  // Reachability.Expect
 *       { op: 'expectAllIngress', pod: 'x/a', value },                    // column, self included
 *       { op: 'expectAllEgress', pod: 'x/a', value },                     // row, self included
 *       { op: 'allowLoopback' },                                          // every self pair → true
 *   ] }
 * A probe may carry its own `expect` when upstream validates ports against different tables.
 *
 * For each case and probe: loadManifests([model, ...policies]) → buildIR → reachMatrix(port,
 * protocol), compared pair by pair with the expected table; a failure lists the mismatching pairs
 * and prints expected/observed/comparison grids like upstream's PrintSummary.
 *
 * Self-connections are always allowed in Switchyard; upstream ignores them. Cases re-allow them
 * explicitly (ALLOW_SELF), and a check below keeps every expected table consistent with that.
 */
import { readdirSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { reachMatrix } from '../../src/calc/index.js';
import { loadManifests } from '../../src/model/index.js';
import {
  caseManifestPaths,
  NETPOL_E2E_CASES,
  NETPOL_E2E_DIR,
  probeExpectation,
  type NetpolCase,
} from '../fixtures/netpol-e2e/cases.js';
import {
  applyEdits,
  formatReport,
  compareTables,
  XYZ_PODS,
  type TruthTable,
} from '../support/reachability.js';
import { compileIR } from '../support/manifests.js';

function title(c: NetpolCase): string {
  return c.step ? `${c.name} [${c.step}]` : c.name;
}

function contexts(): string[] {
  return [...new Set(NETPOL_E2E_CASES.map((c) => c.context))];
}

describe('netpol e2e transcription', () => {
  it('covers at least 25 upstream scenarios', () => {
    const distinct = new Set(NETPOL_E2E_CASES.map((c) => `${c.context}\u0000${c.name}`));
    expect(distinct.size).toBeGreaterThanOrEqual(25);
  });

  it('has unique case titles within a context', () => {
    const titles = NETPOL_E2E_CASES.map((c) => `${c.context} / ${title(c)}`);
    expect(titles.length).toBe(new Set(titles).size);
  });

  it('uses every policy fixture in the directory', () => {
    const used = new Set(NETPOL_E2E_CASES.flatMap((c) => c.policies));
    const onDisk = readdirSync(NETPOL_E2E_DIR).filter((f) => f.endsWith('.yaml'));
    expect(onDisk.filter((f) => !used.has(f))).toEqual([]);
    expect([...used].filter((f) => !onDisk.includes(f))).toEqual([]);
  });

  it('expects every self-connection to be allowed (Switchyard semantics)', () => {
    const offenders: string[] = [];
    for (const c of NETPOL_E2E_CASES) {
      for (const probe of c.probes) {
        const table = applyEdits(XYZ_PODS, probeExpectation(c, probe));
        for (const pod of XYZ_PODS) {
          if (!table[pod]?.[pod])
            offenders.push(`${title(c)} ${probe.port}/${probe.protocol}: ${pod} -> ${pod}`);
        }
      }
    }
    expect(offenders, 'cases must end with ALLOW_SELF where upstream edits block a self pair').toEqual([]);
  });
});

for (const context of contexts()) {
  describe(context, () => {
    for (const c of NETPOL_E2E_CASES.filter((k) => k.context === context)) {
      describe(title(c), () => {
        for (const probe of c.probes) {
          it(`${probe.port}/${probe.protocol}`, () => {
            const model = loadManifests(caseManifestPaths(c));
            const ir = compileIR(model);
            const matrix = reachMatrix(ir, probe.port, probe.protocol);
            const observed: TruthTable = matrix.results;

            expect(Object.keys(observed).sort(), 'reachMatrix sources').toEqual([...XYZ_PODS].sort());
            const expected = applyEdits(XYZ_PODS, probeExpectation(c, probe));
            const mismatches = compareTables(XYZ_PODS, expected, observed);
            const report = `${context} / ${title(c)} on ${probe.port}/${probe.protocol}\n${formatReport(XYZ_PODS, expected, observed)}`;
            expect(
              mismatches.map((m) => `${m.from} -> ${m.to}`),
              report,
            ).toEqual([]);
          });
        }
      });
    }
  });
}
