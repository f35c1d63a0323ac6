/**
 * IPv6 is enforced, not skipped: dual-stack pods on two nodes, policies whose peers resolve to both
 * families (pod selectors, an IPv6 ipBlock with an except, named ports) and a prefilter with an IPv6
 * range; the IPv4 and IPv6 pod×pod matrices and the outside host's view against the evaluator.
 * Once per policy mode (decision tables hold IPv4 and IPv6 prefixes: one peers map per family).
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { evaluate } from '../../src/calc/index.js';
import type { ReachMatrix } from '../../src/calc/api.js';
import type { Backend } from '../../src/dataplane/backend.js';
import { loadBackend } from '../../src/dataplane/registry.js';
import { POLICY_MODES } from '../../src/ir/decision-table.js';
import type { IR } from '../../src/ir/types.js';
import { describeKernel } from '../support/kernel.js';
import { matrixDiff, NftLab, OUTSIDE_ADDRESS_V6, OUTSIDE_BLOCKED_V6 } from './nftables-lab.js';
import { dualStack, irOf } from './nftables-scenarios.js';

function v6(addresses: readonly string[]): string {
  const a = addresses.find((x) => x.includes(':'));
  if (!a) throw new Error('endpoint without IPv6');
  return a;
}

function expectedMatrix(
  ir: IR,
  port: number,
  protocol: 'TCP' | 'UDP',
  family: 4 | 6,
): Omit<ReachMatrix, 'outcomes'> {
  const pick = (a: readonly string[]): string => (family === 4 ? (a[0] as string) : v6(a));
  const results: ReachMatrix['results'] = {};
  for (const src of ir.endpoints) {
    results[src.id] = Object.fromEntries(
      ir.endpoints.map((dst) => [
        dst.id,
        evaluate(ir, { src: pick(src.addresses), dst: pick(dst.addresses), protocol, dport: port }).allowed,
      ]),
    );
  }
  return { port, protocol, results };
}

for (const mode of POLICY_MODES) {
  const TAG = `${(process.pid % 10000) + 4}${mode[0]}`;
  describeKernel(`nftables (${mode}): dual-stack pods with real IPv4 and IPv6 packets`, () => {
    let lab: NftLab | undefined;
    let backend: Backend;
    let ir: IR;

    beforeAll(async () => {
      backend = await loadBackend('nftables');
      ir = irOf(dualStack(), mode);
      if (mode === 'table')
        expect(ir.ruleSets.some((rs) => rs.table?.prefixes.some((p) => p.cidr.includes(':')))).toBe(true);
      lab = new NftLab(TAG, ir);
      await lab.up([80, 81]);
      for (const node of ir.nodes) await backend.apply(lab.target(node.name), ir);
    });

    afterAll(() => lab?.down());

    for (const family of [4, 6] as const) {
      for (const [port, protocol] of [
        [80, 'TCP'],
        [81, 'TCP'],
        [81, 'UDP'],
      ] as const) {
        it(`IPv${family} ${port}/${protocol} equals the reference evaluator`, async () => {
          const expected = expectedMatrix(ir, port, protocol, family);
          const measured = await (lab as NftLab).reach(port, protocol, family);
          expect(matrixDiff(expected, measured)).toEqual([]);
        });
      }
    }

    it('the IPv6 matrices are not trivial: IPv6 sees allows and denials', () => {
      const cells = [80, 81].flatMap((port) =>
        Object.values(expectedMatrix(ir, port, 'TCP', 6).results).flatMap((r) => Object.values(r)),
      );
      expect(cells).toContain(true);
      expect(cells).toContain(false);
    });

    it('the IPv6 prefilter drops deny-listed fabric sources', async () => {
      const l = lab as NftLab;
      for (const source of [OUTSIDE_BLOCKED_V6, OUTSIDE_ADDRESS_V6]) {
        const targets = ir.endpoints.map((e) => ({
          host: v6(e.addresses),
          port: 80,
          protocol: 'TCP' as const,
        }));
        const measured = await l.probe(l.outside, source, targets);
        const expected = ir.endpoints.map(
          (e) => evaluate(ir, { src: source, dst: v6(e.addresses), protocol: 'TCP', dport: 80 }).allowed,
        );
        expect(measured, `from ${source}`).toEqual(expected);
      }
      expect(
        ir.endpoints.some(
          (e) =>
            evaluate(ir, { src: OUTSIDE_BLOCKED_V6, dst: v6(e.addresses), protocol: 'TCP', dport: 80 })
              .decidedAt === 'prefilter',
        ),
      ).toBe(true);
    });
  });
}
