/**
 * Large decision tables in the kernel: the policy bench's endpoint with 1000 rules (101 classes,
 * 2505 entries) and 10000 rules (201 classes, 13863 entries) applies with iptables-nft, whose
 * commit fails with EMLINK ("Too many links") if any chain is reached 16 jumps/gotos below its base
 * chain, and with iptables-legacy (no such limit, same rendering). Connections from a rule's peer
 * to the rule's port pass and count under that rule; the bench probe (a rule peer on a port no rule
 * names) is dropped by the default. A table that would be too deep (forced here with a lower
 * limit) is walked instead: the apply succeeds, says `table-fallback:<endpoint>/<direction>: …`
 * and decides the same; the next apply with the normal limit brings the table back.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import { policyIR, POLICY_ENDPOINT, POLICY_SOURCE } from '../../src/bench/scenarios/support/policy-ir.js';
import { IptablesBackend, type IptablesMode } from '../../src/dataplane/iptables/index.js';
import { endpointHash } from '../../src/dataplane/iptables/names.js';
import type { IR } from '../../src/ir/types.js';
import { describeKernel } from '../support/kernel.js';
import { inNs, IptLab, OUTSIDE_ADDRESS, type Target } from './iptables-lab.js';

/** NetworkPolicy rule 0 (the bench's j = 1): TCP 1007 from peer 1's block (198.18.100.32/27). */
const RULE = 'np:bench/many-rules/ingress/0';
const RULE_PEER = '198.18.100.33';
const RULE_PORT = 1007;
const PROBE_PORT = 80;

const IRS = new Map<number, IR>([1000, 10000].map((n) => [n, policyIR(n, 'table')]));

for (const mode of ['nft', 'legacy'] as const satisfies readonly IptablesMode[])
  describeKernel(`iptables-${mode}: the policy bench's large decision tables`, () => {
    const lab = new IptLab(`depth${mode === 'nft' ? 'n' : 'l'}`, IRS.get(1000) as IR);
    const backend = new IptablesBackend({ mode });
    const node = (): ReturnType<IptLab['target']> => lab.target('bench-node');
    const save = (): string =>
      inNs(node().netns, mode === 'nft' ? 'iptables-nft-save' : 'iptables-legacy-save', []);
    const server = (port: number): Target => ({ host: lab.address(POLICY_ENDPOINT), port, protocol: 'TCP' });
    let applied: IR | undefined;

    beforeAll(async () => {
      await lab.up([PROBE_PORT, RULE_PORT]);
      // Sources inside the rule peers' blocks, on the outside host; the node routes them back there.
      for (const a of [RULE_PEER, POLICY_SOURCE])
        inNs(lab.outside, 'ip', ['addr', 'add', `${a}/32`, 'dev', 'lo']);
      inNs(node().netns, 'ip', ['route', 'add', '198.18.100.0/22', 'via', OUTSIDE_ADDRESS]);
    });

    afterAll(async () => {
      await lab.down();
    });

    /** Allowed from the rule's peer to its port (counted under the rule), denied for the probe. */
    async function decidesAsTheTable(b: IptablesBackend): Promise<void> {
      const count = async (): Promise<number> =>
        (await b.counters(node())).find((c) => c.endpoint === POLICY_ENDPOINT && c.rule === RULE)?.packets ??
        0;
      const before = await count();
      expect(await lab.probe({ outside: RULE_PEER }, [server(RULE_PORT), server(PROBE_PORT)])).toEqual([
        true,
        false,
      ]);
      expect(await lab.probe({ outside: POLICY_SOURCE }, [server(PROBE_PORT), server(RULE_PORT)])).toEqual([
        false,
        false,
      ]);
      expect((await count()) - before).toBe(1);
    }

    it.each([1000, 10000])('applies the %i-rule table and decides by it', async (rules) => {
      const ir = IRS.get(rules) as IR;
      const t0 = performance.now();
      const r = await backend.apply(node(), ir, applied);
      applied = ir;
      console.log(
        `iptables-${mode}: ${rules}-rule table applied in ${(performance.now() - t0).toFixed(0)} ms (${r.changed.length} changes)`,
      );
      expect(r.changed.filter((c) => c.startsWith('table-fallback:'))).toEqual([]);
      expect(save()).toContain(`-A SY-TWT-${endpointHash(POLICY_ENDPOINT)}-`);
      await decidesAsTheTable(backend);
    });

    it('walks a table that would be too deep, says so, and takes the table back later', async () => {
      const ir = IRS.get(1000) as IR;
      const shallow = new IptablesBackend({ mode, maxChainLevel: 8 });
      // No previous IR: this backend's plan of it would walk too, so the fallback would not be news.
      const r = await shallow.apply(node(), ir);
      expect(r.changed).toEqual(
        expect.arrayContaining([
          expect.stringMatching(
            /^table-fallback:bench\/server\/ingress: its table's chains would nest \d+ levels deep/,
          ),
        ]),
      );
      expect(save()).not.toContain(`-A SY-TWT-${endpointHash(POLICY_ENDPOINT)}-`);
      expect(save()).toContain(`-A SY-TWG-${endpointHash(POLICY_ENDPOINT)} `);
      await decidesAsTheTable(shallow);

      // The same IR with the normal limit: the table again, and no fallback to report.
      const back = await backend.apply(node(), ir);
      applied = ir;
      expect(back.changed.filter((c) => c.startsWith('table-fallback:'))).toEqual([]);
      expect(save()).toContain(`-A SY-TWT-${endpointHash(POLICY_ENDPOINT)}-`);
      expect(save()).not.toContain(`-A SY-TWG-${endpointHash(POLICY_ENDPOINT)} `);
      await decidesAsTheTable(backend);
    });
  });
