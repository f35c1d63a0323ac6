/**
 * Ties and headlines on recorded bench results (test/fixtures/bench/quick-run.json, a copy of a
 * `switchyard bench --quick` run): a lead inside the noise is a tie, a tied concern votes for every
 * tied backend, and the headline names only concerns whose rows chose the backend it names.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { advise, parseWorkload, type Advice, type WorkloadInput } from '../../src/advise/index.js';
import { EvidenceBook, TIE_RATIO, TIE_RULE } from '../../src/advise/evidence.js';
import type { BenchReport, BenchRow, BenchScenarioResult } from '../../src/bench/results.js';

const RECORDED = JSON.parse(
  readFileSync(new URL('../fixtures/bench/quick-run.json', import.meta.url), 'utf8'),
) as BenchReport;

function withScenario(report: BenchReport, s: BenchScenarioResult): BenchReport {
  return { ...report, scenarios: [...report.scenarios.filter((x) => x.name !== s.name), s] };
}

const row = (
  backend: string,
  params: BenchRow['params'],
  median: number,
  p10: number,
  p90: number,
): BenchRow => ({
  backend,
  params,
  median,
  p10,
  p90,
  samples: [p10, median, p90],
});

/** Every claim of the headline follows from the rows it summarises. */
function expectHeadlineMatchesRows(a: Advice): void {
  expect(a.summary.startsWith(`Run the ${a.backend} backend: `)).toBe(true);
  for (const concern of a.decidedBy) {
    const r = a.recommendations.find((x) => x.concern === concern);
    expect(r?.choice === a.backend || r?.tiedWith.includes(a.backend), concern).toBe(true);
    if (a.runnerUp) expect(r?.choice !== a.runnerUp && !r?.tiedWith.includes(a.runnerUp), concern).toBe(true);
  }
  // A concern whose row chose another backend outright is never called a win.
  for (const r of a.recommendations) {
    const against = r.choice !== a.backend && !r.tiedWith.includes(a.backend);
    if (against) expect(a.decidedBy).not.toContain(r.concern);
  }
  // The chosen backend has the most weighted votes.
  const best = Math.max(...Object.values(a.scores));
  expect(a.scores[a.backend]).toBe(best);
}

describe('advisor ties on recorded bench results', () => {
  const evidence = new EvidenceBook(RECORDED);

  it('calls 1.20M vs 1.19M pps at the prefilter a tie, and nftables 1.53x behind not one', () => {
    const c = evidence.compare('prefilter', { cidrs: 100000, method: 'traffic' });
    expect(c?.best).toBe('ebpf');
    expect(c?.tied).toEqual(['ebpf', 'iptables']);
    expect(c?.ranking.find((r) => r.backend === 'nftables')?.tie).toBe(false);
  });

  it('separates 2.0 µs (eBPF) from 3.3 and 6.7 µs per packet at 10 rules in walk mode', () => {
    const c = evidence.compare('policy', { rules: 10, mode: 'walk', method: 'traffic' });
    expect(c?.best).toBe('ebpf');
    expect(c?.tied).toEqual(['ebpf']);
  });

  it(`ties a lead under ${TIE_RATIO}x even when the ranges do not overlap, and overlapping ranges at any lead`, () => {
    const s = (rows: BenchRow[]): BenchReport =>
      withScenario(RECORDED, { name: 'set-update', unit: 'updates/s', better: 'higher', rows });
    const narrow = new EvidenceBook(
      s([row('ebpf', { size: 1 }, 108, 107, 109), row('iptables', { size: 1 }, 100, 99, 101)]),
    ).compare('set-update');
    expect(narrow?.tied).toEqual(['ebpf', 'iptables']);
    const noisy = new EvidenceBook(
      s([row('ebpf', { size: 1 }, 150, 90, 200), row('iptables', { size: 1 }, 100, 80, 120)]),
    ).compare('set-update');
    expect(noisy?.tied).toEqual(['ebpf', 'iptables']);
    const clear = new EvidenceBook(
      s([row('ebpf', { size: 1 }, 150, 140, 160), row('iptables', { size: 1 }, 100, 95, 105)]),
    ).compare('set-update');
    expect(clear?.tied).toEqual(['ebpf']);
  });

  it('a prefilter tie does not decide the backend: the policy row does, and the headline says so', () => {
    // A small rule set where iptables is as fast (the walkthrough lab's shape), beside the
    // recorded prefilter tie: before ties, "Run ebpf: it wins on DDoS prefilter" contradicted
    // the policy row.
    const report = withScenario(RECORDED, {
      name: 'policy',
      unit: 'ns/packet',
      better: 'lower',
      rows: [
        row('ebpf', { rules: 10, mode: 'walk', method: 'traffic' }, 2045, 2033, 2079),
        row('iptables', { rules: 10, mode: 'walk', method: 'traffic' }, 2350, 2300, 2400),
        row('nftables', { rules: 10, mode: 'walk', method: 'traffic' }, 3252, 3210, 3311),
      ],
    });
    const a = advise(parseWorkload({ rulesPerEndpoint: 4, prefilterEntries: 2 }), report, {});
    const prefilter = a.recommendations.find((r) => r.concern === 'DDoS prefilter');
    expect(prefilter?.tiedWith).toEqual(['iptables']);
    expect(prefilter?.advice).toMatch(/same measured rate here \(a tie\)/);
    expect(a.recommendations.find((r) => r.concern === 'policy enforcement')?.choice).toBe('iptables');
    expect(a.backend).toBe('iptables');
    expect(a.summary).toBe(
      'Run the iptables backend: it wins on policy enforcement (as fast, and simpler); DDoS prefilter is a tie (ebpf = iptables).',
    );
    expect(a.tiedOn).toEqual(['DDoS prefilter']);
    expect(a.tieRule).toBe(TIE_RULE);
    expectHeadlineMatchesRows(a);
  });

  it('a measured win that is not a tie still decides: a flood the raw table cannot absorb', () => {
    const report = withScenario(RECORDED, {
      name: 'prefilter',
      unit: 'pps',
      better: 'higher',
      rows: [
        row('ebpf', { cidrs: 100000, method: 'traffic' }, 5e6, 4.8e6, 5.2e6),
        row('iptables', { cidrs: 100000, method: 'traffic' }, 1.19e6, 1.17e6, 1.21e6),
      ],
    });
    const a = advise(parseWorkload({ prefilterEntries: 100000, floodPacketsPerSecond: 2e6 }), report, {});
    const prefilter = a.recommendations.find((r) => r.concern === 'DDoS prefilter');
    expect(prefilter?.choice).toBe('ebpf');
    expect(prefilter?.tiedWith).toEqual([]);
    expect(a.decidedBy).toContain('DDoS prefilter');
    expectHeadlineMatchesRows(a);
  });

  const workloads: [string, WorkloadInput][] = [
    ['walkthrough lab', { rulesPerEndpoint: 4, prefilterEntries: 2, flowLogs: true }],
    ['small and static', { endpoints: 30, rulesPerEndpoint: 10, services: 20 }],
    [
      'large and churning',
      {
        rulesPerEndpoint: 1000,
        addressesPerSet: 10000,
        setUpdatesPerSecond: 2000,
        services: 1000,
        processContext: true,
      },
    ],
    ['services at scale, latency first', { services: 1000, priority: 'latency' }],
    ['prefilter only', { prefilterEntries: 100000, floodPacketsPerSecond: 500000 }],
  ];
  it.each(workloads)('%s: the headline follows from the rows', (_name, w) => {
    expectHeadlineMatchesRows(advise(parseWorkload(w), RECORDED, {}));
  });
});
