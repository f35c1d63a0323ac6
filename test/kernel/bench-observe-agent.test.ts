/**
 * The `observe` and `agent` bench scenarios against the real kernel, with tiny parameters: real
 * agent processes per node, flows on and off (native wrk → nginx load and the Node.js client),
 * and an agent syncing a generated cluster. Asserts shapes and sane values (flows really recorded
 * when on, throughput on both sides, wrk connections without socket errors, a finished sync, a
 * resident agent), never absolute performance (shared machines).
 */
import { describe, expect, it } from 'vitest';
import { scenarioLoaders } from '../../src/bench/registry.js';
import {
  agentScaleResult,
  clusterSpec,
  ebpfVerdict,
  measureAgentScale,
} from '../../src/bench/scenarios/agent.js';
import { measureObserve, observeCosts, observeResult } from '../../src/bench/scenarios/observe.js';
import { listNetns } from '../../src/netns/index.js';
import { quickContext } from '../support/bench.js';
import { describeKernel } from '../support/kernel.js';

const TAG = String(process.pid % 10_000);

const context = quickContext;

describe('observe and agent bench scenarios', () => {
  it('are registered under their names', async () => {
    for (const name of ['observe', 'agent']) {
      const load = scenarioLoaders[name];
      expect(load, name).toBeDefined();
      expect((await (load as () => Promise<{ name: string }>)()).name).toBe(name);
    }
  });

  it('generates a cluster where every pod is selected by P policies and local pods are spread', () => {
    const spec = clusterSpec({ endpoints: 1000, localPods: 10, policiesPerPod: 10 });
    expect(spec.pods).toHaveLength(1000);
    expect(spec.local).toHaveLength(10);
    expect(new Set(spec.local.map((p) => p.ns)).size).toBe(10);
    expect(spec.policiesPerNamespace).toBe(20);
    // Policy k selects app values k…k+4 (mod 10): each app value is in exactly 10 of the 20 windows.
    for (let app = 0; app < 10; app++) {
      const selecting = Array.from({ length: 20 }, (_, k) => k).filter((k) => (app - k + 20) % 10 < 5);
      expect(selecting).toHaveLength(10);
    }
  });
});

describeKernel('observe and agent bench scenarios (tiny parameters)', () => {
  it(
    'observe: flows on and off per backend, native wrk load and the node client, events recorded when on',
    { timeout: 120_000 },
    async () => {
      const ctx = context();
      const data = await measureObserve(ctx, {
        rounds: 1,
        bulkSeconds: 2,
        wrkRuns: 2,
        connectionBatches: 2,
        backends: ['ebpf', 'nftables'],
        labPrefix: `bobt${TAG}`,
      });
      expect(ctx.ticks).toBe(2 * 4);
      const r = observeResult(data);
      expect(r.name).toBe('observe');
      expect(r.unit).toBe('% of flows-off');
      const label = (row: (typeof r.rows)[number]): string =>
        `${row.backend} ${row.params.workload} ${row.params.client} ${row.params.flows}`;
      expect(r.rows.map(label).sort()).toEqual([
        'ebpf bulk iperf3 off',
        'ebpf bulk iperf3 on',
        'ebpf bulk iperf3 on, no process tracing',
        'ebpf connections node off',
        'ebpf connections node on',
        'ebpf connections node on, no process tracing',
        'ebpf connections wrk off',
        'ebpf connections wrk on',
        'ebpf connections wrk on, no process tracing',
        'nftables bulk iperf3 off',
        'nftables bulk iperf3 on',
        'nftables bulk iperf3 on, no process tracing',
        'nftables connections node off',
        'nftables connections node on',
        'nftables connections node on, no process tracing',
        'nftables connections wrk off',
        'nftables connections wrk on',
        'nftables connections wrk on, no process tracing',
      ]);
      for (const c of observeCosts(data)) {
        expect(c.off, `${c.backend} ${c.workload} off`).toBeGreaterThan(0);
        expect(c.on, `${c.backend} ${c.workload} on`).toBeGreaterThan(0);
        expect(Number.isFinite(c.cost)).toBe(true);
        expect(c.untraced, `${c.backend} ${c.workload} on, no process tracing`).toBeGreaterThan(0);
        expect(Number.isFinite(c.tracingCost)).toBe(true);
      }
      for (const t of data.turns) {
        const turn = `${t.backend} flows ${t.flows}`;
        expect(t.gbps.length).toBeGreaterThan(0);
        expect(t.connRates).toHaveLength(2);
        // Native load: every 1-s wrk run made connections through both nodes' dataplanes,
        // without a socket error or a failed answer, and its percentiles are ordered.
        expect(t.wrk, turn).toHaveLength(2);
        for (const s of t.wrk) {
          expect(s.connPerSecond, turn).toBeGreaterThan(0);
          expect(s.connections, turn).toBeGreaterThan(0);
          expect(s.errors, turn).toBe(0);
          expect(s.p50Ms, turn).toBeGreaterThan(0);
          expect(s.p99Ms, turn).toBeGreaterThanOrEqual(s.p50Ms);
        }
        // CPU is counted over the measured runs and the warm-up run before them.
        expect(t.cost.wrk.connections, turn).toBeGreaterThan(t.wrk.reduce((n, s) => n + s.connections, 0));
        expect(t.cost.wrk.seconds, turn).toBeGreaterThanOrEqual(3);
        expect(t.cost.wrk.softirqSeconds, turn).toBeGreaterThanOrEqual(0);
        expect(t.cost.wrk.lagSeconds, turn).toBeGreaterThanOrEqual(1);
        expect(t.nodeConnections, turn).toBeGreaterThanOrEqual(2 * 200 - t.connFailed);
        expect(t.nodeConnections, turn).toBeLessThanOrEqual(3 * 200);
        if (t.flows === 'on') {
          expect(t.flowStats?.events, `${t.backend} events`).toBeGreaterThan(0);
          expect(t.flowStats?.flows).toBeGreaterThan(0);
        } else expect(t.flowStats).toBeUndefined();
      }
      expect(r.notes?.some((n) => /ebpf connections \(wrk\): .* target ≤ 5%: (PASS|FAIL)/.test(n))).toBe(
        true,
      );
      expect(
        r.notes?.some((n) =>
          /nftables connections \(wrk\): off \d+ conn\/s, on \d+ conn\/s.*per 10k connections off: agents [\d.]+ s, softirq [\d.]+ s.*p50 [\d.]+ ms, p99 [\d.]+ ms/.test(
            n,
          ),
        ),
      ).toBe(true);
      expect(listNetns().filter((n) => n.startsWith(`sy-bobt${TAG}`))).toEqual([]);
    },
  );

  it(
    'agent: a real agent syncs a generated cluster; sync time, label change and RSS',
    { timeout: 120_000 },
    async () => {
      const ctx = context();
      const data = await measureAgentScale(ctx, {
        points: [{ endpoints: 300, backends: ['ebpf'] }],
        localPods: 4,
        policiesPerPod: 4,
        repetitions: 1,
        updates: 1,
        lab: `bagt${TAG}`,
      });
      expect(ctx.ticks).toBe(3);
      const [point] = data.points;
      expect(point?.spec).toMatchObject({ endpoints: 300, localPods: 4, namespaces: 3, policies: 24 });
      expect(point?.samples.map((s) => `${s.backend} ${s.mode}`)).toEqual(['ebpf table', 'ebpf walk']);
      for (const s of point?.samples ?? []) {
        expect(s.fullSyncMs).toBeGreaterThan(0);
        expect(s.applyMs).toBeGreaterThanOrEqual(0);
        expect(s.buildMs).toBeGreaterThanOrEqual(0);
        expect(s.changed).toBeGreaterThan(0);
        expect(s.updateMs).toHaveLength(1);
        expect(s.updateModes).toEqual(['incremental']);
        expect(s.rssAfterSyncMiB).toBeGreaterThan(0);
        expect(s.hwmMiB).toBeGreaterThanOrEqual(s.rssAfterSyncMiB);
        // The agent reports what decides its 4 pods' 8 rule sets in the mode it was started in.
        expect(s.policy).toMatchObject(
          s.mode === 'table'
            ? { mode: 'table', tables: 8, walked: 0 }
            : { mode: 'walk', tables: 0, walked: 8 },
        );
      }
      const r = agentScaleResult(data);
      expect(r.rows.map((row) => `${row.backend} ${String(row.params.mode)} ${row.params.op}`)).toEqual([
        'ebpf table full sync',
        'ebpf table label change',
        'ebpf walk full sync',
        'ebpf walk label change',
      ]);
      expect(ebpfVerdict(data)?.endpoints).toBe(300);
      expect(r.notes?.some((n) => /full sync under 5 s: (PASS|FAIL)/.test(n))).toBe(true);
      expect(r.notes?.some((n) => /full sync in table mode [\d.]+× the walk's/.test(n))).toBe(true);
      expect(listNetns().filter((n) => n.startsWith(`sy-bagt${TAG}`))).toEqual([]);
    },
  );
});
