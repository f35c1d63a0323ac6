/**
 * The `cluster` bench scenario against the real kernel with tiny parameters: a real etcd, one
 * agent process per node and real pods per backend; policy writes to etcd flip a probe between
 * pods on two nodes. Asserts that every flip was seen both ways and the figures are sane, never
 * absolute performance (shared machines).
 */
import { describe, expect, it } from 'vitest';
import { scenarioLoaders } from '../../src/bench/registry.js';
import {
  clusterBenchOptions,
  clusterFigures,
  clusterManifest,
  clusterResult,
  flipIndex,
  flipPolicy,
  measureCluster,
} from '../../src/bench/scenarios/cluster.js';
import { availableBackends } from '../../src/dataplane/registry.js';
import { validateManifestTexts } from '../../src/model/index.js';
import { listNetns } from '../../src/netns/index.js';
import { quickContext } from '../support/bench.js';
import { describeKernel } from '../support/kernel.js';

const TAG = String(process.pid % 10_000);

describe('cluster bench scenario', () => {
  it('is registered under its name', async () => {
    const load = scenarioLoaders.cluster;
    expect(load).toBeDefined();
    expect((await (load as () => Promise<{ name: string }>)()).name).toBe('cluster');
  });

  it('generates valid manifests with client and target on different nodes', () => {
    const o = clusterBenchOptions(true);
    for (const allow of [true, false]) {
      const { model, issues } = validateManifestTexts([
        { file: 'pods.yaml', text: clusterManifest(o) },
        { file: 'flip.yaml', text: flipPolicy(allow) },
      ]);
      expect(issues).toEqual([]);
      expect(model?.pods ?? []).toHaveLength(o.nodes * o.podsPerNode);
    }
  });

  it('finds the first run of confirming probes at or after t0', () => {
    const r = (start: number, ok: boolean): { start: bigint; ok: boolean } => ({ start: BigInt(start), ok });
    const results = [
      r(1, false),
      r(5, true),
      r(10, false),
      r(12, true),
      r(14, false),
      r(16, true),
      r(18, true),
      r(20, true),
    ];
    expect(flipIndex(results, 3n, true, 3)).toBe(5);
    expect(flipIndex(results, 3n, true, 1)).toBe(1);
    expect(flipIndex(results, 30n, true, 1)).toBe(-1);
  });
});

describeKernel('cluster bench scenario (tiny parameters)', () => {
  it(
    'flips a policy through etcd on every backend; the probe sees both outcomes',
    { timeout: 240_000 },
    async () => {
      const ctx = quickContext();
      const o = { ...clusterBenchOptions(true), flips: 4, podsPerNode: 3, labPrefix: `bclt${TAG}` };
      const data = await measureCluster(ctx, o);
      const backends = (['ebpf', 'iptables', 'nftables'] as const).filter((b) =>
        availableBackends().includes(b),
      );
      expect(data.runs.map((r) => r.backend)).toEqual(backends);
      expect(ctx.ticks).toBe(backends.length * (1 + o.flips));
      for (const run of data.runs) {
        expect(run.samples, run.backend).toHaveLength(o.flips);
        expect(run.samples.map((s) => s.to)).toEqual(['allow', 'deny', 'allow', 'deny']);
        for (const s of run.samples) {
          expect(s.flipMs, `${run.backend} flip to ${s.to}`).toBeDefined();
          expect(s.inForceMs, `${run.backend} in force`).toBeDefined();
          expect(Object.keys(s.nodeMs).sort()).toEqual(['node-1', 'node-2', 'node-3']);
          expect(s.baselineMismatch, `${run.backend} baseline`).toBe(0);
          expect(s.writeMs).toBeGreaterThan(0);
        }
        // The prober really saw both outcomes.
        expect(run.probes.ok, run.backend).toBeGreaterThan(0);
        expect(run.probes.denied, run.backend).toBeGreaterThan(0);
        const fig = clusterFigures(run);
        expect(fig.timedOut).toBe(0);
        for (const v of [fig.p99, fig.max, fig.inForce.p99]) {
          expect(Number.isFinite(v)).toBe(true);
          expect(v).toBeGreaterThan(0);
        }
        expect(fig.underTarget).toBeGreaterThanOrEqual(0);
        expect(fig.underTarget).toBeLessThanOrEqual(1);
      }
      const r = clusterResult(data);
      expect(r.name).toBe('cluster');
      expect(r.rows.map((row) => `${row.backend} ${row.params.figure}`)).toEqual(
        backends.flatMap((b) => [`${b} probe flips`, `${b} all nodes in force`]),
      );
      for (const row of r.rows) expect(row.samples).toHaveLength(o.flips);
      expect(r.notes?.some((n) => /target p99 < 1 s: (PASS|FAIL)/.test(n))).toBe(true);
      expect(listNetns().filter((n) => n.startsWith(`sy-bclt${TAG}`))).toEqual([]);
    },
  );
});
