/**
 * The walk's verifier limit as predicted (dataplane/ebpf/complexity.ts) against the real verifier:
 * for rules of one, and of three separate, ports each, the largest size predicted to pass loads and
 * a size 5% over the predicted limit is rejected, so the real limit lies within 5% of the
 * prediction. The rejection is one line, and comes without a second, logged verification.
 */
import { performance } from 'node:perf_hooks';
import { describe, expect, it } from 'vitest';
import { VerifierError } from '../../src/bpf/index.js';
import { estimateVerifierWork } from '../../src/dataplane/ebpf/complexity.js';
import { nodeView } from '../../src/dataplane/ebpf/node.js';
import { OfflineNode } from '../../src/dataplane/ebpf/offline-node.js';
import { allocateWithTables } from '../../src/dataplane/ebpf/tables.js';
import type { IR } from '../../src/ir/types.js';
import { describeKernel } from '../support/kernel.js';
import { compileIR, modelOf } from '../support/manifests.js';
import { walkLimitManifests } from '../support/walk-limit.js';

function walkIR(rules: number, portsPerRule: number): IR {
  return compileIR(modelOf(walkLimitManifests(rules, portsPerRule)), { policyMode: 'walk' });
}

function predicted(rules: number, portsPerRule: number): { processed: number; limit: number } {
  const view = nodeView(walkIR(rules, portsPerRule), 'node-1');
  const rs = view.ruleSets.find((r) => r.direction === 'ingress');
  if (!rs) throw new Error('no ingress rule set');
  return estimateVerifierWork(rs, allocateWithTables(view, undefined).alloc);
}

/** The largest rule count the prediction lets through. */
function predictedLimit(portsPerRule: number): number {
  let [ok, over] = [100, 1200];
  while (over - ok > 1) {
    const mid = Math.floor((ok + over) / 2);
    const e = predicted(mid, portsPerRule);
    if (e.processed > e.limit) over = mid;
    else ok = mid;
  }
  return ok;
}

/** Loads the endpoint's programs; the verifier's error when it refuses. */
function load(rules: number, portsPerRule: number): { error?: unknown; ms: number } {
  const ir = walkIR(rules, portsPerRule);
  const started = performance.now();
  try {
    new OfflineNode(ir, 'node-1', { counterSlots: 8192, conntrackCapacity: 1024 }).close();
    return { ms: performance.now() - started };
  } catch (error) {
    return { error, ms: performance.now() - started };
  }
}

describeKernel('ebpf: the verifier explores what follows parsing once', () => {
  it('verifies a 10-rule program in under 5,000 instructions (~9,000 when each parser path walked it)', () => {
    const node = new OfflineNode(walkIR(10, 1), 'node-1', { counterSlots: 8192, conntrackCapacity: 1024 });
    try {
      const verified = node.program('big/server', 'ingress').info().verifiedInstructions;
      console.log(`10 rules: ${verified} verified instructions`);
      expect(verified).toBeLessThan(5000);
    } finally {
      node.close();
    }
  });
});

describeKernel('ebpf: the predicted verifier limit brackets the real one', () => {
  const measured: Record<string, number> = {};

  for (const portsPerRule of [1, 3]) {
    describe(`rules of ${portsPerRule} port(s)`, () => {
      it('loads 5% under the predicted limit and is rejected 5% over it, in one line', () => {
        const limit = predictedLimit(portsPerRule);
        measured[`limit${portsPerRule}`] = limit;
        const under = load(Math.floor(limit * 0.95), portsPerRule);
        expect(under.error).toBeUndefined();
        const over = load(Math.ceil(limit * 1.05), portsPerRule);
        measured[`rejectedMs${portsPerRule}`] = Math.round(over.ms);
        expect(over.error).toBeInstanceOf(VerifierError);
        const message = (over.error as VerifierError).message;
        expect(message).toMatch(/too complex for the verifier/);
        expect(message.split('\n')).toHaveLength(1);
        console.log(`predicted limit ${JSON.stringify(measured)}`);
      }, 120_000);
    });
  }
});
