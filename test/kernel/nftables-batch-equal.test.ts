/**
 * The rule batch (rule-batch.ts, rules encoded by rule-encoder.ts) against `nft -f`, on the
 * upstream netpol scenarios in order (the steps the packet test nftables-netpol applies): after
 * each step the table an incremental apply left must be the one a from-scratch apply (nft parsing
 * the rule text) writes, both as nft reads it back (`nft -j`) and expression by expression as the
 * kernel holds it (`nft --debug=netlink`: registers, lengths, byte order, set flags). Once per
 * policy mode. No packets: a wrong encoding shows here whatever the timing.
 */
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { NodeTarget } from '../../src/dataplane/backend.js';
import { runInNetns } from '../../src/dataplane/exec.js';
import { createNftablesBackend } from '../../src/dataplane/nftables/index.js';
import { POLICY_MODES } from '../../src/ir/decision-table.js';
import type { IR } from '../../src/ir/types.js';
import { loadManifests } from '../../src/model/index.js';
import { caseManifestPaths, NETPOL_E2E_CASES } from '../fixtures/netpol-e2e/cases.js';
import { describeKernel } from '../support/kernel.js';
import { compileIR } from '../support/manifests.js';
import { addNetns, batchRecordingBackend, delNetns, kernelState } from './nftables-lab.js';

/**
 * Every rule's expressions as the kernel returns them, by chain (sorted: an update creates chains
 * in another order than a full apply), rules in order. Handles, anonymous set names (numbered per
 * table) and counter values are left out; the rest is compared.
 */
async function kernelExpressions(target: NodeTarget): Promise<string> {
  const r = await runInNetns(target.netns, 'nft', ['--debug=netlink', 'list', 'table', 'inet', 'switchyard']);
  if (r.code !== 0) throw new Error(`nft --debug=netlink list failed: ${r.stderr}`);
  const listing = r.stdout.indexOf('table inet switchyard');
  const rules = new Map<string, string[]>();
  let chain: string[] | undefined;
  for (const line of (listing < 0 ? r.stdout : r.stdout.slice(0, listing)).split('\n')) {
    const head = /^inet switchyard (\S+) \d+/.exec(line);
    if (head) {
      const name = head[1] as string;
      if (!rules.has(name)) rules.set(name, []);
      chain = rules.get(name);
      chain?.push('rule');
    } else if (line.startsWith('inet switchyard ')) chain = undefined;
    else if (chain && line.startsWith('  ['))
      chain.push(
        line.replace(/__set\d+/g, '__set').replace(/\[ counter pkts \d+ bytes \d+ \]/, '[ counter ]'),
      );
  }
  return [...rules.entries()]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([name, lines]) => `${name}\n${lines.join('\n')}`)
    .join('\n');
}

for (const mode of POLICY_MODES) {
  const TAG = `${(process.pid % 10000) + 4}${mode[0]}`;
  describeKernel(`nftables (${mode}): the rule batch writes what nft -f writes`, () => {
    const targets = (node: string): { inc: NodeTarget; ref: NodeTarget } => ({
      inc: { scope: `nft${TAG}`, node, netns: `sy-nft${TAG}-${node.slice(-1)}i` },
      ref: { scope: `nft${TAG}`, node, netns: `sy-nft${TAG}-${node.slice(-1)}r` },
    });
    const nodes = ['node-1', 'node-2'];

    beforeAll(() => {
      for (const n of nodes) for (const t of Object.values(targets(n))) addNetns(t.netns);
    });

    afterAll(() => {
      for (const n of nodes) for (const t of Object.values(targets(n))) delNetns(t.netns);
    });

    it('every netpol scenario step, applied incrementally, equals a from-scratch apply', async () => {
      const { backend: incremental, batched, step } = batchRecordingBackend();
      const scratch = createNftablesBackend();
      let previous: IR | undefined;
      for (const c of NETPOL_E2E_CASES) {
        const ir = compileIR(loadManifests(caseManifestPaths(c)), { policyMode: mode });
        for (const node of ir.nodes.map((n) => n.name)) {
          const { inc, ref } = targets(node);
          const current = `${c.context} / ${c.name}${c.step ? ` [${c.step}]` : ''} ${node}`;
          step(current);
          await incremental.apply(inc, ir, previous);
          // From scratch: the whole table in one nft -f, as nft parses the rule text.
          scratch.dropShadow?.(ref);
          await scratch.apply(ref, ir);
          expect(await kernelState(inc), current).toEqual(await kernelState(ref));
          expect(await kernelExpressions(inc), current).toBe(await kernelExpressions(ref));
        }
        previous = ir;
      }
      // Most steps change rules, not only members: the batch was really exercised.
      expect(batched.length).toBeGreaterThan(20);
    });
  });
}
