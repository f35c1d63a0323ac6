/**
 * The nftables backend under the project's lab (`switchyard lab up/apply … --backend nftables`):
 * x/y/z from examples/xyz with its policy, then updates through `lab apply` (a global tier with
 * Log/Pass/Deny, a pod label change), each time the lab's measured matrix against reachMatrix
 * pair by pair, then the lab's counters and teardown. Once per policy mode (`lab up --policy-mode`).
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { reachMatrix } from '../../src/calc/index.js';
import { loadBackend } from '../../src/dataplane/registry.js';
import { converge, labDown, measureReach } from '../../src/lab/index.js';
import { POLICY_MODES } from '../../src/ir/decision-table.js';
import { loadManifests } from '../../src/model/index.js';
import { NETPOL_E2E_DIR } from '../fixtures/netpol-e2e/cases.js';
import { globalPolicy, toYaml } from '../support/manifests.js';
import { describeKernel } from '../support/kernel.js';
import { matrixDiff } from './nftables-lab.js';

const ROOT = join(NETPOL_E2E_DIR, '..', '..', '..');
const FIXTURES = join(ROOT, 'test', 'fixtures');

for (const policyMode of POLICY_MODES) {
  const LAB = `nftl${process.pid % 10000}${policyMode[0]}`;
  describeKernel(`nftables (${policyMode}): through the lab (lab up / lab apply / lab reach)`, () => {
    let dir = '';
    let up = false;

    async function convergeTo(files: string[], mode: 'up' | 'apply') {
      const result = await converge({
        name: LAB,
        model: loadManifests(files),
        files,
        mode,
        ...(mode === 'up' ? { backend: 'nftables' as const, policyMode } : {}),
      });
      up = true;
      return result.state;
    }

    async function expectMatrix(files: string[], mode: 'up' | 'apply', probes: [number, 'TCP' | 'UDP'][]) {
      const state = await convergeTo(files, mode);
      const ir = state.ir;
      expect(ir.ruleSets.every((rs) => (rs.table !== undefined) === (policyMode === 'table'))).toBe(true);
      for (const [port, protocol] of probes) {
        const measured = await measureReach(LAB, { port, protocol, timeoutMs: 500 });
        expect(matrixDiff(reachMatrix(ir, port, protocol), measured.matrix), `${port}/${protocol}`).toEqual(
          [],
        );
      }
      return state;
    }

    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'sy-nft-lab-'));
      writeFileSync(
        join(dir, 'global.yaml'),
        toYaml([
          globalPolicy('audit-x', {
            order: 1,
            namespaceSelector: { matchLabels: { ns: 'x' } },
            ingress: [{ action: 'Log' }],
          }),
          globalPolicy('guard', {
            order: 10,
            ingress: [
              { action: 'Pass', from: [{ namespaceSelector: { matchLabels: { ns: 'x' } } }] },
              {
                action: 'Deny',
                protocol: 'TCP',
                ports: [{ port: 81 }],
                from: [{ namespaceSelector: { matchLabels: { ns: 'z' } } }],
              },
            ],
          }),
        ]),
      );
    });

    afterAll(async () => {
      if (up) await labDown(LAB);
      rmSync(dir, { recursive: true, force: true });
    });

    it('lab up examples/xyz --backend nftables enforces the policy', async () => {
      await expectMatrix([join(ROOT, 'examples', 'xyz')], 'up', [
        [80, 'TCP'],
        [81, 'UDP'],
      ]);
    });

    it('lab apply adds a global tier (Log, Pass, Deny)', async () => {
      await expectMatrix([join(ROOT, 'examples', 'xyz'), join(dir, 'global.yaml')], 'apply', [
        [80, 'TCP'],
        [81, 'TCP'],
      ]);
    });

    it('lab apply of a pod label change updates the verdicts', async () => {
      const files = (model: string) => [
        join(FIXTURES, 'xyz', model),
        join(NETPOL_E2E_DIR, 'updated-pod.yaml'),
      ];
      await expectMatrix(files('model.yaml'), 'apply', [[80, 'TCP']]);
      const state = await expectMatrix(files('model-xb-pod2-updated.yaml'), 'apply', [[80, 'TCP']]);
      const ir = state.ir;
      // x/b now reaches x/a, counted on the allowing rule.
      expect(reachMatrix(ir, 80, 'TCP').results['x/b']?.['x/a']).toBe(true);
      const xa = ir.endpoints.find((e) => e.id === 'x/a');
      const backend = await loadBackend('nftables');
      const node = state.topology?.nodes.find((n) => n.name === xa?.node);
      if (!node) throw new Error('x/a has no node in the lab topology');
      const counters = await backend.counters({ scope: LAB, node: node.name, netns: node.netns });
      const allowing = counters.find(
        (c) => c.rule === 'np:x/allow-client-a-via-pod-selector/ingress/0' && c.endpoint === 'x/a',
      );
      expect(allowing?.packets).toBeGreaterThan(0);
    });
  });
}
