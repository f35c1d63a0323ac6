/** Table-driven: each advisor rule, with and without measurements, and the overall choice. */
import { describe, expect, it } from 'vitest';
import { advise, parseWorkload, workloadFromIR, type WorkloadInput } from '../../src/advise/index.js';
import type { Capabilities } from '../../src/advise/index.js';
import type { BenchReport } from '../../src/bench/results.js';
import type { BenchScenarioResult } from '../../src/bench/results.js';
import { loadManifests } from '../../src/model/index.js';
import type { IR } from '../../src/ir/types.js';
import { compileIR } from '../support/manifests.js';

const NEW_KERNEL = '6.18.0';

/** Made-up probe results: a kernel with every feature, and one before tcx (say 5.15). */
const feature = (available: boolean, since: string) => ({
  available,
  since,
  detail: available ? 'ok' : 'EINVAL',
});
const MODERN: Capabilities = {
  btf: feature(true, '5.4 with CONFIG_DEBUG_INFO_BTF'),
  lpm_trie: feature(true, '4.11'),
  ringbuf: feature(true, '5.8'),
  redirect_peer: feature(true, '5.10'),
  tcx: feature(true, '6.6'),
};
const NO_TCX: Capabilities = { ...MODERN, tcx: feature(false, '6.6') };

function scenario(
  name: string,
  unit: string,
  better: 'lower' | 'higher',
  rows: [backend: string, params: Record<string, number | string>, median: number][],
): BenchScenarioResult {
  return {
    name,
    unit,
    better,
    rows: rows.map(([backend, params, median]) => ({
      backend,
      params,
      median,
      p10: median,
      p90: median,
      samples: [median],
    })),
  };
}

function report(...scenarios: BenchScenarioResult[]): BenchReport {
  return { machine: { kernel: NEW_KERNEL, cpus: 2, node: 'v20' }, scenarios };
}

// Shapes of the curves the benches produce: iptables linear in rules, nft/eBPF flat.
const policyBench = scenario('policy', 'ns/packet', 'lower', [
  ['iptables', { rules: 10 }, 90],
  ['nftables', { rules: 10 }, 95],
  ['ebpf', { rules: 10 }, 85],
  ['iptables', { rules: 1000 }, 4000],
  ['nftables', { rules: 1000 }, 600],
  ['ebpf', { rules: 1000 }, 300],
]);
const servicesBench = scenario('services', 'conn/s', 'higher', [
  ['iptables', { services: 10000 }, 3000],
  ['nftables', { services: 10000 }, 5000],
  ['ebpf', { services: 10000 }, 9000],
]);
const setBench = scenario('set-update', 'updates/s', 'higher', [
  ['iptables', { size: 100000 }, 40000],
  ['nftables', { size: 100000 }, 20000],
  ['ebpf', { size: 100000 }, 300000],
]);
const prefilterBench = scenario('prefilter', 'pps', 'higher', [
  ['iptables', { cidrs: 100000 }, 900000],
  ['ebpf', { cidrs: 100000 }, 5000000],
]);

interface Row {
  name: string;
  workload: WorkloadInput;
  capabilities?: Capabilities;
  report?: BenchReport;
  concern: string;
  choice: string;
  measured?: boolean;
  backend?: string;
}

const rows: Row[] = [
  { name: 'L7 rules go to a proxy', workload: { l7Rules: true }, concern: 'L7 policy', choice: 'proxy' },
  {
    name: 'service-mesh control goes to a mesh',
    workload: { serviceMesh: true },
    concern: 'service-mesh control',
    choice: 'mesh',
  },
  {
    name: 'per-packet crypto goes to WireGuard',
    workload: { encryption: true },
    concern: 'encryption',
    choice: 'wireguard',
  },
  {
    name: 'an old kernel rules eBPF out',
    workload: { services: 20000 },
    capabilities: NO_TCX,
    concern: 'kernel support',
    choice: 'nftables',
    // 20k services: nftables' verdict map beats iptables' per-service chains.
    backend: 'nftables',
  },
  {
    name: 'small rule sets: iptables is as fast and simpler (measured)',
    workload: { rulesPerEndpoint: 10 },
    report: report(policyBench),
    concern: 'policy enforcement',
    choice: 'iptables',
    measured: true,
    backend: 'iptables',
  },
  {
    name: 'large rule sets: the measured fastest wins',
    workload: { rulesPerEndpoint: 800, priority: 'latency' },
    report: report(policyBench),
    concern: 'policy enforcement',
    choice: 'ebpf',
    measured: true,
    backend: 'ebpf',
  },
  {
    name: 'large rule sets without numbers: avoid linear chains',
    workload: { rulesPerEndpoint: 800 },
    concern: 'policy enforcement',
    choice: 'nftables',
    measured: false,
  },
  {
    name: 'many services: eBPF connect-time balancing (measured)',
    workload: { services: 10000 },
    report: report(servicesBench),
    concern: 'service load balancing',
    choice: 'ebpf',
    measured: true,
    backend: 'ebpf',
  },
  {
    name: 'small rule sets: iptables when its extra cost is under 1 µs per packet, even outside the tie',
    workload: { rulesPerEndpoint: 10 },
    report: report(
      scenario('policy', 'ns/packet', 'lower', [
        ['iptables', { rules: 10 }, 2368],
        ['nftables', { rules: 10 }, 1810],
        ['ebpf', { rules: 10 }, 1712],
      ]),
    ),
    concern: 'policy enforcement',
    choice: 'iptables',
    measured: true,
    backend: 'iptables',
  },
  {
    name: 'small rule sets: not iptables when its extra cost is over 1 µs per packet',
    workload: { rulesPerEndpoint: 50 },
    report: report(
      scenario('policy', 'ns/packet', 'lower', [
        ['iptables', { rules: 50 }, 5000],
        ['ebpf', { rules: 50 }, 2500],
      ]),
    ),
    concern: 'policy enforcement',
    choice: 'ebpf',
    measured: true,
  },
  {
    name: 'few services that every backend sets up with headroom: any (measured)',
    workload: { services: 20, connectionsPerSecond: 100 },
    report: report(
      scenario('services', 'conn/s', 'higher', [
        ['iptables', { services: 100 }, 8785],
        ['nftables', { services: 100 }, 10304],
        ['ebpf', { services: 100 }, 5993],
      ]),
    ),
    concern: 'service load balancing',
    choice: 'any',
    measured: true,
  },
  {
    name: 'few services without numbers: any backend',
    workload: { services: 20 },
    concern: 'service load balancing',
    choice: 'any',
  },
  {
    name: 'NodePort at scale: eBPF, measured from outside, with its CPU beside',
    workload: { services: 1000, externalServices: 1000 },
    report: report(
      scenario('nodeport', 'conn/s (new) · req/s (reused)', 'higher', [
        ['iptables', { services: 1000, metric: 'new connections' }, 4000],
        ['nftables', { services: 1000, metric: 'new connections' }, 9000],
        ['ebpf', { services: 1000, metric: 'new connections' }, 14000],
        // A faster iptables on kept connections must not count: a different metric.
        ['iptables', { services: 1000, metric: 'reused connections' }, 90000],
        ['ebpf', { services: 1000, metric: 'reused connections' }, 30000],
      ]),
      scenario('nodeport-cpu', 'CPU-s per 10k connections', 'lower', [
        ['iptables', { services: 1000, metric: 'total' }, 2.6],
        ['ebpf', { services: 1000, metric: 'total' }, 0.9],
      ]),
    ),
    concern: 'traffic from outside',
    choice: 'ebpf',
    measured: true,
  },
  {
    name: 'NodePort at scale without numbers: no linear chains, eBPF first',
    workload: { services: 5000, externalServices: 10 },
    concern: 'traffic from outside',
    choice: 'ebpf',
    measured: false,
  },
  {
    name: 'NodePort at scale on a kernel without tcx: the nft verdict map',
    workload: { services: 5000, externalServices: 10 },
    capabilities: NO_TCX,
    concern: 'traffic from outside',
    choice: 'nftables',
  },
  {
    name: 'few NodePort services without numbers: any backend',
    workload: { services: 20, externalServices: 2 },
    concern: 'traffic from outside',
    choice: 'any',
  },
  {
    name: 'fast-churning large sets: the fastest updater',
    workload: { addressesPerSet: 100000, setUpdatesPerSecond: 5000 },
    report: report(setBench),
    concern: 'IP-set updates',
    choice: 'ebpf',
    measured: true,
  },
  {
    name: 'slow set churn: every backend keeps up',
    workload: { addressesPerSet: 100000, setUpdatesPerSecond: 10 },
    report: report(setBench),
    concern: 'IP-set updates',
    choice: 'any',
    measured: true,
  },
  {
    name: 'a flood the raw table cannot absorb: XDP',
    workload: { prefilterEntries: 100000, floodPacketsPerSecond: 2000000 },
    report: report(prefilterBench),
    concern: 'DDoS prefilter',
    choice: 'ebpf',
    measured: true,
  },
  {
    name: 'a small flood the raw table absorbs: no XDP needed',
    workload: { prefilterEntries: 100000, floodPacketsPerSecond: 100000 },
    report: report(prefilterBench),
    concern: 'DDoS prefilter',
    choice: 'iptables',
    measured: true,
  },
  {
    name: 'process context in flow records needs eBPF',
    workload: { flowLogs: true, processContext: true },
    concern: 'flow records',
    choice: 'ebpf',
    backend: 'ebpf',
  },
  {
    name: 'plain flow logs work everywhere',
    workload: { flowLogs: true },
    concern: 'flow records',
    choice: 'any',
  },
];

describe('advise rules', () => {
  it.each(rows)('$name', (row) => {
    const a = advise(parseWorkload(row.workload), row.report, row.capabilities ?? MODERN);
    const r = a.recommendations.find((x) => x.concern === row.concern);
    expect(r, `no recommendation for ${row.concern}: ${JSON.stringify(a.recommendations)}`).toBeDefined();
    expect(r?.choice).toBe(row.choice);
    if (row.measured !== undefined) expect(r?.measured).toBe(row.measured);
    if (row.measured) {
      expect(r?.evidence.length).toBeGreaterThan(1);
      expect(r?.reasons.join(' ')).toMatch(/measured/);
    }
    if (row.backend) expect(a.backend).toBe(row.backend);
  });

  it("compares backends in the workload's policy mode, and names what the other mode costs", () => {
    const both = scenario('policy', 'ns/packet', 'lower', [
      ['ebpf', { rules: 1000, mode: 'table', method: 'traffic' }, 2100],
      ['iptables', { rules: 1000, mode: 'table', method: 'traffic' }, 3900],
      ['nftables', { rules: 1000, mode: 'table', method: 'traffic' }, 3100],
      ['ebpf', { rules: 1000, mode: 'walk', method: 'traffic' }, 44000],
      ['iptables', { rules: 1000, mode: 'walk', method: 'traffic' }, 394000],
      ['nftables', { rules: 1000, mode: 'walk', method: 'traffic' }, 205000],
      ['ebpf', { rules: 1000, mode: 'walk', method: 'test-run' }, 40000],
    ]);
    const table = advise(
      parseWorkload({ rulesPerEndpoint: 1000, priority: 'latency', policyMode: 'table' }),
      report(both),
      MODERN,
    );
    const r = table.recommendations.find((x) => x.concern === 'policy enforcement');
    expect(r?.choice).toBe('ebpf');
    expect(r?.evidence.every((e) => e.params.mode === 'table' && e.params.method === 'traffic')).toBe(true);
    expect(r?.reasons.join('\n')).toMatch(/in table mode: ebpf 2100 ns\/packet/);
    expect(r?.reasons.join('\n')).toMatch(/in walk mode: ebpf 44\.0k/);
    const walk = advise(
      parseWorkload({ rulesPerEndpoint: 1000, priority: 'latency', policyMode: 'walk' }),
      report(both),
      MODERN,
    );
    const w = walk.recommendations.find((x) => x.concern === 'policy enforcement');
    expect(w?.evidence.every((e) => e.params.mode === 'walk' && e.params.method === 'traffic')).toBe(true);
    expect(w?.reasons.join('\n')).toMatch(/in table mode: ebpf/);
  });

  it('reads the nearest measured parameter (800 rules → the 1000-rule rows)', () => {
    const a = advise(parseWorkload({ rulesPerEndpoint: 800 }), report(policyBench), MODERN);
    const r = a.recommendations.find((x) => x.concern === 'policy enforcement');
    expect(r?.evidence.every((e) => e.params.rules === 1000)).toBe(true);
  });

  it('never picks eBPF on a kernel without tcx, even when eBPF measured best', () => {
    const a = advise(parseWorkload({ services: 10000, processContext: true }), report(servicesBench), NO_TCX);
    expect(a.backend).not.toBe('ebpf');
    expect(a.recommendations.find((r) => r.concern === 'service load balancing')?.choice).toBe('nftables');
  });

  it('with nothing to separate the backends, the priority decides', () => {
    expect(advise(parseWorkload({ priority: 'simplicity' }), undefined, MODERN).backend).toBe('iptables');
    expect(advise(parseWorkload({ priority: 'latency' }), undefined, MODERN).backend).toBe('ebpf');
  });

  it('lists jobs for something other than a packet filter separately and names them in the summary', () => {
    const a = advise(parseWorkload({ l7Rules: true, encryption: true }), undefined, MODERN);
    expect(a.elsewhere.map((e) => e.choice).sort()).toEqual(['proxy', 'wireguard']);
    expect(a.summary).toMatch(/L7 policy → proxy/);
  });

  it('says what the kernel lacks, from the probes', () => {
    const a = advise(parseWorkload({}), undefined, NO_TCX);
    const r = a.recommendations.find((x) => x.concern === 'kernel support');
    expect(r?.advice).toBe('This kernel lacks tcx (Linux 6.6+): use a netfilter backend.');
    expect(r?.reasons.join(' ')).toMatch(/ebpf backend needs tcx \(Linux 6\.6\+\); probe: EINVAL/);
    expect(a.kernelLacks).toEqual(['tcx (Linux 6.6+)']);
    expect(advise(parseWorkload({}), undefined, MODERN).recommendations.map((x) => x.concern)).not.toContain(
      'kernel support',
    );
  });

  it('counts features nobody could probe (no root) as present', () => {
    expect(advise(parseWorkload({ priority: 'latency' }), undefined, {}).backend).toBe('ebpf');
  });

  it('rejects a bad workload field by name', () => {
    expect(() => parseWorkload({ services: -1 })).toThrow(/services/);
    expect(() => parseWorkload({ servces: 3 })).toThrow(/servces/);
  });

  it('counts NodePort and LoadBalancer services (by service, not port) as traffic from outside', () => {
    const table = (service: string, port: number, extra: object = {}): IR['services'][number] => ({
      id: `${service}:${port}/TCP`,
      service,
      address: '198.19.0.1',
      port,
      protocol: 'TCP',
      backends: [],
      affinity: { mode: 'None' },
      ...extra,
    });
    const ir: IR = {
      version: 1,
      nodes: [],
      endpoints: [],
      ipSets: [],
      ipPortSets: [],
      ruleSets: [],
      prefilters: [],
      services: [
        table('b/web', 80, { nodePort: 30080 }),
        table('b/web', 443, { nodePort: 30443 }),
        table('b/lb', 80, { loadBalancerIPs: ['198.19.192.1'] }),
        table('b/internal', 80),
      ],
    };
    const w = parseWorkload(workloadFromIR(ir));
    expect(w.services).toBe(3);
    expect(w.externalServices).toBe(2);
    const none = advise(parseWorkload({ services: 3 }), undefined, MODERN);
    expect(none.recommendations.map((r) => r.concern)).not.toContain('traffic from outside');
  });

  it('derives a workload from manifests', () => {
    const ir = compileIR(loadManifests(['examples/walkthrough', 'examples/global']));
    const w = workloadFromIR(ir);
    // 198.18.200.0/24 and 198.18.201.0/24 merge into one /23; plus one host entry.
    expect(w.prefilterEntries).toBe(2);
    expect(w.flowLogs).toBe(true);
    expect(w.rulesPerEndpoint).toBeGreaterThan(0);
  });
});
