/**
 * Real packets through the nftables backend: the upstream netpol e2e scenarios (x/y/z model) in
 * order on one running lab, every step applied as an incremental update of the previous one, and
 * each probe's measured pod×pod matrix compared pair by pair with the reference evaluator. Once per
 * policy mode: in table mode every step is an incremental update of decision tables.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { reachMatrix } from '../../src/calc/index.js';
import { irForNode } from '../../src/ir/slice.js';
import { loadBackend } from '../../src/dataplane/registry.js';
import type { Backend } from '../../src/dataplane/backend.js';
import { POLICY_MODES } from '../../src/ir/decision-table.js';
import type { IR } from '../../src/ir/types.js';
import { loadManifests } from '../../src/model/index.js';
import { caseManifestPaths, NETPOL_E2E_CASES } from '../fixtures/netpol-e2e/cases.js';
import { describeKernel } from '../support/kernel.js';
import { matrixDiff, NftLab } from './nftables-lab.js';
import { compileIR } from '../support/manifests.js';

for (const mode of POLICY_MODES) {
  const TAG = `${process.pid % 10000}${mode[0]}`;
  describeKernel(`nftables (${mode}): upstream netpol scenarios with real packets`, () => {
    let lab: NftLab | undefined;
    let backend: Backend;
    let previous: IR | undefined;

    beforeAll(async () => {
      backend = await loadBackend('nftables');
      const base = compileIR(
        loadManifests(caseManifestPaths({ name: 'model', context: '', policies: [], probes: [] })),
      );
      lab = new NftLab(TAG, base);
      await lab.up([80, 81]);
    });

    afterAll(() => lab?.down());

    for (const c of NETPOL_E2E_CASES) {
      const probes = c.probes.filter((p) => p.protocol !== 'SCTP');
      if (probes.length === 0) continue;
      it(`${c.context} / ${c.name}${c.step ? ` [${c.step}]` : ''}`, async () => {
        const l = lab as NftLab;
        const ir = compileIR(loadManifests(caseManifestPaths(c)), { policyMode: mode });
        expect(ir.endpoints.map((e) => [e.id, e.addresses, e.node])).toEqual(
          l.ir.endpoints.map((e) => [e.id, e.addresses, e.node]),
        );
        for (const node of ir.nodes) {
          const result = await backend.apply(l.target(node.name), ir, previous);
          // Unchanged nodes cost nothing: an update with no difference writes nothing.
          if (
            previous &&
            JSON.stringify(irForNode(previous, node.name)) === JSON.stringify(irForNode(ir, node.name))
          )
            expect(result.changed).toEqual([]);
        }
        previous = ir;
        for (const probe of probes) {
          const protocol = probe.protocol as 'TCP' | 'UDP';
          const measured = await l.reach(probe.port, protocol);
          const expected = reachMatrix(ir, probe.port, protocol);
          expect(matrixDiff(expected, measured), `${probe.port}/${protocol}`).toEqual([]);
        }
      });
    }

    it('remove() leaves no table behind, and removing twice is fine', async () => {
      const l = lab as NftLab;
      for (const node of l.ir.nodes) {
        await backend.remove(l.target(node.name));
        await backend.remove(l.target(node.name));
        expect(await backend.counters(l.target(node.name))).toEqual([]);
      }
      const measured = await l.reach(80, 'TCP');
      expect(Object.values(measured.results).every((row) => Object.values(row).every(Boolean))).toBe(true);
    });
  });
}
