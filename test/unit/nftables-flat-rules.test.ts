/**
 * The chains an nftables apply makes anew (the endpoints' tiers, the flow chains) are kept in the
 * backend's shadow until the next apply: their rules must be flat strings, not the trees of
 * pieces V8 makes of a template literal (docs/agent.md, "a repair's garbage, and one change at a time").
 */
import { describe, expect, it } from 'vitest';
import { buildRuleset } from '../../src/dataplane/nftables/ruleset.js';
import { policyIR } from '../../src/bench/scenarios/support/policy-ir.js';
import { BENCH_NODE } from '../../src/bench/scenarios/support/turns.js';
import type { NftRuleset } from '../../src/dataplane/nftables/objects.js';
import { consStringNodes } from '../support/heap-snapshot.js';

const RULES = 2000;

describe('nftables ruleset: strings kept flat', () => {
  it('holds the rules of the chains it makes as flat strings', async () => {
    const ir = policyIR(RULES, 'walk');
    const kept: NftRuleset[] = [];
    const before = await consStringNodes();
    // Twice: the second build's strings live beside the first's, as the next apply's do.
    for (let i = 0; i < 2; i++) kept.push(buildRuleset(ir, BENCH_NODE));
    const held = (await consStringNodes()) - before;
    const rules = kept.reduce((n, rs) => n + rs.chains.reduce((m, c) => m + c.rules.length, 0), 0);
    expect(rules).toBeGreaterThan(2 * RULES);
    // As trees: ~5 nodes a rule (measured: 120,000 here). Flattened, at most the root of each
    // string, a wrapper of the flat result (measured: 11,000–18,000).
    expect(held).toBeLessThan(rules);
  });
});
