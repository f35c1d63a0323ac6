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
  formatVerdict,
  measureAgentScale,
  namespaceFile,
  nextChange,
  servicesFile,
  targetVerdicts,
  type AgentScaleData,
  type AgentScaleSample,
} from '../../src/bench/scenarios/agent.js';
import { DEFAULT_POLICY_MODE } from '../../src/ir/decision-table.js';
import { validateManifestTexts } from '../../src/model/index.js';
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

  it('refuses services with no remote pod behind them (their endpoint change could never come into force)', () => {
    expect(() => clusterSpec({ endpoints: 100, localPods: 100, policiesPerPod: 4, services: 10 })).toThrow(
      /service ns0\/s0 has no remote pod behind it/,
    );
    expect(clusterSpec({ endpoints: 100, localPods: 100, policiesPerPod: 4 }).services).toEqual([]);
  });

  it('generates services with slices of their namespace pods, and changes that take turns and stay valid', () => {
    const spec = clusterSpec({ endpoints: 300, localPods: 3, policiesPerPod: 4, services: 30 });
    expect(spec.services).toHaveLength(30);
    const remote = new Map(spec.pods.filter((p) => p.ip).map((p) => [p.ip, p.ns]));
    for (const s of spec.services) {
      expect(s.backends).toHaveLength(2);
      for (const a of s.backends) expect(remote.get(a)).toBe(s.ns);
    }
    spec.local.forEach((p, i) => (p.ip = `198.18.0.${10 + i}`));
    const files = (): { file: string; text: string }[] => [
      ...spec.namespaces.map((_, i) => ({ file: `ns${i}.yaml`, text: namespaceFile(spec, i) })),
      { file: 'svc.yaml', text: servicesFile(spec, 0) },
    ];
    const valid = (): void => {
      const { issues } = validateManifestTexts(files());
      expect(issues).toEqual([]);
    };
    valid();
    const ops: string[] = [];
    for (let u = 0; u < 6; u++) {
      const before = new Map(files().map((f) => [f.file, f.text]));
      const change = nextChange(spec, u);
      ops.push(change.op);
      expect(change.text).not.toBe(
        before.get(change.file.startsWith('svc') ? 'svc.yaml' : `ns${Number(change.file.slice(2, 6))}.yaml`),
      );
      valid();
    }
    expect(ops).toEqual(['label', 'policy', 'service', 'label', 'policy', 'service']);
  });

  it('says which target is met or missed, with the ratio', () => {
    const sample = (over: Partial<AgentScaleSample>): AgentScaleSample => ({
      backend: 'ebpf',
      mode: DEFAULT_POLICY_MODE,
      endpoints: 10_000,
      services: 10_000,
      fullSyncMs: 3000,
      startMs: 500,
      buildMs: 1000,
      applyMs: 1000,
      changes: [
        { op: 'label', ms: 40, agentMs: 45, by: 'kernel', applyMs: 10, mode: 'incremental' },
        { op: 'service', ms: 30, agentMs: 35, by: 'kernel', applyMs: 5, mode: 'incremental' },
      ],
      rssAfterSyncMiB: 100,
      rssAfterChangesMiB: 130,
      // The verdict reads the steady figures (after the agent gave its garbage back).
      rssSteadyAfterSyncMiB: 90,
      // Over 120 MB (114.4 MiB) though under 120 MiB: the issue's targets are in MB.
      rssSteadyAfterChangesMiB: 116,
      hwmMiB: 140,
      idleCpu: 0,
      changed: 1,
      repair: { ms: 2000, applyMs: 900, failedAttempts: 0, removalCutShort: false, rssSteadyMiB: 116 },
      ...over,
    });
    const spec = {
      endpoints: 10_000,
      services: 10_000,
      localPods: 100,
      namespaces: 100,
      policies: 2000,
      nodes: 100,
    };
    const data: AgentScaleData = {
      options: { points: [], localPods: 100, policiesPerPod: 10, repetitions: 1, changes: 2 },
      points: [
        { spec, samples: [sample({})], labUpMs: 1, manifestBytes: 1 },
        {
          spec: { ...spec, endpoints: 50_000 },
          samples: [sample({ endpoints: 50_000, fullSyncMs: 12_000, rssSteadyAfterChangesMiB: 200 })],
          labUpMs: 1,
          manifestBytes: 1,
        },
      ],
    };
    expect(targetVerdicts(data).map(formatVerdict)).toEqual([
      'target: one label change in force on ebpf at 10000 endpoints ≤ 50 ms: met (40 ms, 0.80× the target)',
      'target: one service endpoint change at 10000 services in force on ebpf at 10000 endpoints ≤ 20 ms: missed (30 ms, 1.50× the target)',
      'target: RSS steady after 2 changes on ebpf at 10000 endpoints ≤ 120 MB (114.4 MiB): missed (116 MiB, 1.01× the target)',
      'target: full sync on ebpf at 50000 endpoints ≤ 10000 ms: missed (12000 ms, 1.20× the target)',
      'target: RSS (after sync and changes) on ebpf at 50000 endpoints ≤ 250 MB (238.4 MiB): met (200 MiB, 0.84× the target)',
    ]);
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
    'agent: a real agent syncs a generated cluster; sync time, label, policy and service changes, RSS, a drift repair',
    { timeout: 120_000 },
    async () => {
      const ctx = context();
      const data = await measureAgentScale(ctx, {
        points: [{ endpoints: 300, services: 30, backends: ['ebpf'] }],
        localPods: 4,
        policiesPerPod: 4,
        repetitions: 1,
        changes: 3,
        lab: `bagt${TAG}`,
      });
      expect(ctx.ticks).toBe(2);
      const [point] = data.points;
      expect(point?.spec).toMatchObject({
        endpoints: 300,
        services: 30,
        localPods: 4,
        namespaces: 3,
        policies: 24,
      });
      expect(point?.samples.map((s) => `${s.backend} ${s.mode}`)).toEqual([`ebpf ${DEFAULT_POLICY_MODE}`]);
      for (const s of point?.samples ?? []) {
        expect(s.fullSyncMs).toBeGreaterThan(0);
        expect(s.applyMs).toBeGreaterThanOrEqual(0);
        expect(s.buildMs).toBeGreaterThanOrEqual(0);
        expect(s.changed).toBeGreaterThan(0);
        // Each change reached the kernel as an incremental apply of a new revision.
        expect(s.changes.map((c) => `${c.op} ${c.mode}`)).toEqual([
          'label incremental',
          'policy incremental',
          'service incremental',
        ]);
        for (const c of s.changes) expect(c.ms).toBeGreaterThan(0);
        // The bench read the kernel around the label and policy changes and saw it change.
        expect(s.changes.map((c) => c.kernelChecked === true)).toEqual([true, true, false]);
        // An incremental apply of the agent's own is in force without reading the kernel back.
        for (const c of s.changes) expect(c.phasesMs?.fingerprint).toBe(0);
        expect(s.rssAfterSyncMiB).toBeGreaterThan(0);
        expect(s.hwmMiB).toBeGreaterThanOrEqual(s.rssAfterSyncMiB);
        // V8's share, from the agent's own metrics.
        expect(s.heapAfterChanges?.used).toBeGreaterThan(0);
        expect(s.heapAfterChanges?.total).toBeGreaterThanOrEqual(s.heapAfterChanges?.used ?? Infinity);
        // The agent reports what decides its 4 pods' 8 rule sets in the mode it was started in.
        expect(s.policy).toMatchObject(
          s.mode === 'table'
            ? { mode: 'table', tables: 8, walked: 0 }
            : { mode: 'walk', tables: 0, walked: 8 },
        );
        // The dataplane removed behind the agent: it reported the repair, which took an apply.
        expect(s.repair.applyMs).toBeGreaterThan(0);
        expect(s.repair.ms).toBeGreaterThanOrEqual(s.repair.applyMs);
        expect(s.repair.rssSteadyMiB).toBeGreaterThan(0);
      }
      const r = agentScaleResult(data);
      expect(r.rows.map((row) => `${row.backend} ${row.params.services} ${row.params.op}`)).toEqual([
        'ebpf 30 full sync',
        'ebpf 30 label change',
        'ebpf 30 policy change',
        'ebpf 30 service change',
        'ebpf 30 drift repair',
      ]);
      // 300 endpoints: no target is set for that size, and the notes say so.
      expect(targetVerdicts(data)).toEqual([]);
      expect(
        r.notes?.some((n) => /targets: set for 10000 and 50000 endpoints; measured at 300/.test(n)),
      ).toBe(true);
      expect(listNetns().filter((n) => n.startsWith(`sy-bagt${TAG}`))).toEqual([]);
    },
  );
});
