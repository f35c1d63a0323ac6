/**
 * Real packets through GlobalPolicies (Log, Pass, Allow, Deny), NetworkPolicies with named ports,
 * egress named-port sets and a fabric prefilter, against the reference evaluator; then counters.
 * Once per policy mode: the rule walk, and the decision tables.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { evaluate, reachMatrix } from '../../src/calc/index.js';
import type { Backend, RuleCounter } from '../../src/dataplane/backend.js';
import { loadBackend } from '../../src/dataplane/registry.js';
import { POLICY_MODES } from '../../src/ir/decision-table.js';
import type { IR } from '../../src/ir/types.js';
import { describeKernel } from '../support/kernel.js';
import { matrixDiff, NftLab, OUTSIDE_ADDRESS, OUTSIDE_BLOCKED } from './nftables-lab.js';
import { guardrails, irOf, xyz } from './nftables-scenarios.js';

function total(counters: RuleCounter[], rule: string, endpoint?: string): number {
  return counters
    .filter((c) => c.rule === rule && (endpoint === undefined || c.endpoint === endpoint))
    .reduce((n, c) => n + c.packets, 0);
}

for (const mode of POLICY_MODES) {
  const TAG = `${(process.pid % 10000) + 1}${mode[0]}`;
  describeKernel(`nftables (${mode}): global tier, named ports and prefilter with real packets`, () => {
    let lab: NftLab | undefined;
    let backend: Backend;
    let ir: IR;

    beforeAll(async () => {
      backend = await loadBackend('nftables');
      ir = irOf([...xyz(), ...guardrails()], mode);
      if (mode === 'table') expect(ir.ruleSets.every((rs) => rs.table)).toBe(true);
      lab = new NftLab(TAG, ir);
      await lab.up([80, 81]);
      for (const node of ir.nodes) await backend.apply(lab.target(node.name), ir);
    });

    afterAll(() => lab?.down());

    for (const [port, protocol] of [
      [80, 'TCP'],
      [81, 'TCP'],
      [80, 'UDP'],
      [81, 'UDP'],
    ] as const) {
      it(`pod×pod ${port}/${protocol} equals the reference evaluator`, async () => {
        const expected = reachMatrix(ir, port, protocol);
        // The scenario must not be trivial: both verdicts occur.
        const cells = Object.values(expected.results).flatMap((r) => Object.values(r));
        expect(cells).toContain(true);
        expect(cells).toContain(false);
        expect(matrixDiff(expected, await (lab as NftLab).reach(port, protocol))).toEqual([]);
      });
    }

    it('the prefilter drops deny-listed fabric sources on node-1 only, as the evaluator says', async () => {
      const l = lab as NftLab;
      for (const source of [OUTSIDE_BLOCKED, OUTSIDE_ADDRESS]) {
        const targets = ir.endpoints.map((e) => ({
          host: e.addresses[0] as string,
          port: 80,
          protocol: 'TCP' as const,
        }));
        const measured = await l.probe(l.outside, source, targets);
        const expected = ir.endpoints.map(
          (e) =>
            evaluate(ir, { src: source, dst: e.addresses[0] as string, protocol: 'TCP', dport: 80 }).allowed,
        );
        expect(measured, `from ${source}`).toEqual(expected);
        if (source === OUTSIDE_BLOCKED) expect(expected).toContain(false);
      }
    });

    it('counters move for the rule that allowed, the prefilter and the default deny', async () => {
      const l = lab as NftLab;
      const node1 = l.target('node-1');
      const before = await backend.counters(node1);
      // y/a (node-2) → x/a (node-1) TCP 81: the Pass rule hands it to the Kubernetes tier, whose rule allows.
      const xa = ir.endpoints.find((e) => e.id === 'x/a');
      const ya = ir.endpoints.find((e) => e.id === 'y/a');
      if (!xa || !ya) throw new Error('scenario pods missing');
      const v = evaluate(ir, {
        src: ya.addresses[0] as string,
        dst: xa.addresses[0] as string,
        protocol: 'TCP',
        dport: 81,
      });
      expect(v.ingress?.rule?.id).toBe('np:x/from-y-on-81/ingress/0');
      expect(v.ingress?.passedBy?.id).toBe('gp:guard-x/ingress/1');
      const ok = await l.probe(l.podNetns('y/a'), ya.addresses[0] as string, [
        { host: xa.addresses[0] as string, port: 81, protocol: 'TCP' },
      ]);
      expect(ok).toEqual([true]);
      // Denied by default: x/c → x/a TCP 81.
      const xc = ir.endpoints.find((e) => e.id === 'x/c') as (typeof ir.endpoints)[number];
      expect(
        await l.probe(l.podNetns('x/c'), xc.addresses[0] as string, [
          { host: xa.addresses[0] as string, port: 81, protocol: 'TCP' },
        ]),
      ).toEqual([false]);
      const after = await backend.counters(node1);
      const moved = (rule: string, endpoint?: string): number =>
        total(after, rule, endpoint) - total(before, rule, endpoint);
      expect(moved('np:x/from-y-on-81/ingress/0', 'x/a')).toBeGreaterThanOrEqual(1);
      expect(moved('gp:guard-x/ingress/1', 'x/a')).toBeGreaterThanOrEqual(1);
      expect(moved('gp:audit/ingress/0', 'x/a')).toBeGreaterThanOrEqual(2);
      expect(moved('x/a/ingress/default', 'x/a')).toBeGreaterThanOrEqual(1);
      expect(total(after, 'prefilter/block')).toBeGreaterThan(0);
      const allowing = after.find((c) => c.rule === 'np:x/from-y-on-81/ingress/0' && c.endpoint === 'x/a');
      expect(allowing?.direction).toBe('ingress');
      expect(allowing?.bytes).toBeGreaterThan(0);
    });

    it('remove() deletes the table on every node', async () => {
      const l = lab as NftLab;
      for (const node of ir.nodes) {
        await backend.remove(l.target(node.name));
        expect(await backend.counters(l.target(node.name))).toEqual([]);
      }
    });
  });
}
