/**
 * The `nodeport` bench against the real kernel at one small point, on every backend: wrk reaches
 * nginx in the backend pod only through the service (port 80 → 8080), so connections without
 * failures prove each backend carried them; the `local` service's nginx logs the peer address it
 * saw, which must be the client's. Once through a NodePort from the lab's outside, once through a
 * cluster IP from a pod (the same generator). Never absolute performance (shared machines).
 */
import { existsSync } from 'node:fs';
import { expect, it } from 'vitest';
import { measureNodePort, type NodePortOptions } from '../../src/bench/scenarios/nodeport.js';
import { outsideCgroup, type Entry } from '../../src/bench/scenarios/support/nodeport-lab.js';
import {
  failedConnections,
  nodePortCpuResult,
  nodePortResult,
  targetLines,
} from '../../src/bench/scenarios/support/nodeport-report.js';
import { listNetns } from '../../src/netns/index.js';
import { quickContext } from '../support/bench.js';
import { describeKernel } from '../support/kernel.js';

const BASE = `bnpt${process.pid % 1000}`;
const BACKENDS = ['ebpf', 'iptables', 'nftables'] as const;
/** eBPF twice: node ports at XDP (as it runs) and at tcx only; labs `<base>-<suffix>`. */
const ROWS = ['ebpf', 'ebpf-tc', 'iptables', 'nftables'] as const;
const LAB_SUFFIX = ['e', 't', 'i', 'n'] as const;

function options(entry: Entry): NodePortOptions {
  return { scales: [100], runs: 2, connectBatches: 2, entry, backends: BACKENDS, labBase: BASE };
}

async function expectMeasured(entry: Entry): Promise<void> {
  const ctx = quickContext();
  const data = await measureNodePort(ctx, options(entry));
  expect(ctx.ticks).toBe(4);
  for (const p of data.points) {
    expect(p.problem, `${p.backend}`).toBeUndefined();
    expect(p.runs.length, p.backend).toBe(2);
    for (const r of p.runs) {
      expect(r.connPerSec, p.backend).toBeGreaterThan(0);
      expect(Number.isFinite(r.softirqPer10k) && Number.isFinite(r.totalPer10k), p.backend).toBe(true);
      expect(r.totalPer10k, p.backend).toBeGreaterThan(0);
    }
    expect(p.connectMs.length, p.backend).toBe(64);
    expect(failedConnections(p), p.backend).toBe(0);
    expect(
      p.reused.every((r) => r.reqPerSec > 0),
      p.backend,
    ).toBe(true);
    // The backend saw the client's own address (Local keeps it; a pod's is never translated).
    expect(p.peers?.seen, p.backend).toEqual([p.peers?.client]);
  }
  const result = nodePortResult(data);
  expect(result.rows.map((r) => `${r.backend} ${r.params.services} ${r.params.metric}`)).toEqual(
    ROWS.flatMap((b) => [`${b} 100 new connections`, `${b} 100 reused connections`]),
  );
  expect(nodePortCpuResult(data).rows).toHaveLength(8);
  const targets = targetLines(data);
  expect(targets.find((l) => l.includes('0 failed connections'))).toMatch(/met \(4 points\)/);
  expect(targets.find((l) => l.includes('source address preserved'))).toMatch(/met \(4 points\)/);
  expect(targets.find((l) => l.includes('connection rate'))).toMatch(/at 100 services: [\d.]+×/);
  expect(targets.find((l) => l.includes('tcx only'))).toMatch(/at 100 services: rate [\d.]+×/);
  // The labs, and the outside namespaces with them, are down again.
  expect(listNetns().filter((n) => n.startsWith(`sy-${BASE}-`))).toEqual([]);
  for (const x of LAB_SUFFIX) expect(existsSync(outsideCgroup(`${BASE}-${x}`)), x).toBe(false);
}

describeKernel('nodeport bench scenario (one point, every backend)', () => {
  it(
    'an outside client connects through a NodePort; the Local service keeps its address',
    { timeout: 180_000 },
    () => expectMeasured('nodeport'),
  );

  it('the same generator through a cluster IP from a pod', { timeout: 180_000 }, () =>
    expectMeasured('clusterip'),
  );
});
