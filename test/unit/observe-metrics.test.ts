/** AgentMetrics over fake sources: what a Prometheus scrape of an agent shows. */
import { describe, expect, it } from 'vitest';
import type { RuleCounter } from '../../src/dataplane/backend.js';
import type { KernelEvent } from '../../src/dataplane/events.js';
import { FlowTable, type FlowStats } from '../../src/observe/flows.js';
import {
  AgentMetrics,
  DROP_REASONS,
  dropReason,
  enumLabel,
  revisionValue,
  type AgentView,
  type RuleDescription,
} from '../../src/observe/metrics.js';
import { checkExposition, promtoolProblems, samplesOf, type Sample } from '../support/exposition.js';

const samples = samplesOf;

function find(all: Sample[], name: string, labels: Record<string, string> = {}): Sample[] {
  return all.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
}

function value(all: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  const found = find(all, name, labels);
  if (found.length > 1) throw new Error(`${found.length} samples of ${name} ${JSON.stringify(labels)}`);
  return found[0]?.value;
}

const DESCRIPTIONS: Record<string, RuleDescription> = {
  'np:shop/db-allow-web/ingress/0': { kind: 'NetworkPolicy', policy: 'shop/db-allow-web', action: 'allow' },
  'gp:deny-bad/ingress/0': { kind: 'GlobalPolicy', policy: 'deny-bad', action: 'deny' },
  'shop/db/ingress/default': { kind: 'default', policy: '', action: 'deny' },
  'shop/db/egress/fail-closed/malformed': { kind: 'fail_closed', policy: '', action: 'deny' },
};

function fakeSources(opts: { etcd?: boolean } = {}) {
  const state = {
    counters: [
      {
        rule: 'np:shop/db-allow-web/ingress/0',
        endpoint: 'shop/db',
        direction: 'ingress',
        packets: 12,
        bytes: 3400,
      },
      { rule: 'gp:deny-bad/ingress/0', endpoint: 'shop/db', direction: 'ingress', packets: 5, bytes: 300 },
      { rule: 'shop/db/ingress/default', endpoint: 'shop/db', direction: 'ingress', packets: 2, bytes: 120 },
      { rule: 'prefilter/blocklist', packets: 9, bytes: 540 },
      { rule: 'prefilter/tor-exits', packets: 1, bytes: 60 },
    ] as RuleCounter[],
    view: { endpoints: 3, policies: 2 } as AgentView,
    etcd: undefined as boolean | undefined,
    conntrack: 42,
    flowStats: {
      events: 1000,
      rateLimited: 17,
      lost: { 'ring buffer': 3, nflog: 4 },
      flows: 55,
      evicted: 6,
      packets: { allow: 900, deny: 40, log: 2 },
      packetsIPv6: { allow: 300, deny: 0, log: 0 },
    } as FlowStats,
    counterReads: 0,
    describeCalls: [] as string[],
  };
  const metrics = new AgentMetrics(
    {
      counters: () => {
        state.counterReads++;
        return Promise.resolve(state.counters.map((c) => ({ ...c })));
      },
      conntrackEntries: () => Promise.resolve(state.conntrack),
      flowStats: () => state.flowStats,
      describeRule: (rule) => {
        state.describeCalls.push(rule);
        return DESCRIPTIONS[rule] ?? { kind: '', policy: '', action: '' };
      },
      agent: () => state.view,
      ...(opts.etcd ? { etcdConnected: () => state.etcd === true } : {}),
      policy: () => ({
        mode: 'table' as const,
        tables: 7,
        walked: 1,
        entries: 240,
        overflows: [
          {
            endpoint: 'shop/db',
            direction: 'ingress' as const,
            prefixes: 9,
            entries: 20000,
            maxEntries: 16384,
          },
        ],
      }),
    },
    { node: 'node-2', backend: 'nftables' },
  );
  return { metrics, state };
}

describe('AgentMetrics', () => {
  it('exposes rule packets and bytes with rule, policy, action, endpoint and direction labels', async () => {
    const { metrics } = fakeSources();
    const all = samples(await metrics.text());
    expect(
      find(all, 'switchyard_rule_packets_total', { rule: 'np:shop/db-allow-web/ingress/0' })[0]?.labels,
    ).toEqual({
      rule: 'np:shop/db-allow-web/ingress/0',
      policy_kind: 'NetworkPolicy',
      policy: 'shop/db-allow-web',
      action: 'allow',
      endpoint: 'shop/db',
      direction: 'ingress',
      node: 'node-2',
      backend: 'nftables',
    });
    const rules: [string, string, string, number, number][] = [
      ['np:shop/db-allow-web/ingress/0', 'shop/db-allow-web', 'allow', 12, 3400],
      ['gp:deny-bad/ingress/0', 'deny-bad', 'deny', 5, 300],
      ['shop/db/ingress/default', '', 'deny', 2, 120],
    ];
    for (const [rule, policy, action, packets, bytes] of rules) {
      expect(value(all, 'switchyard_rule_packets_total', { rule, policy, action }), rule).toBe(packets);
      expect(value(all, 'switchyard_rule_bytes_total', { rule, policy, action }), rule).toBe(bytes);
    }
    expect(find(all, 'switchyard_rule_packets_total')).toHaveLength(3);
    expect(find(all, 'switchyard_rule_bytes_total')).toHaveLength(3);
  });

  it('keeps prefilter drops out of the rule series, in their own counter', async () => {
    const { metrics, state } = fakeSources();
    const all = samples(await metrics.text());
    expect(all.filter((s) => s.labels.rule?.startsWith('prefilter/'))).toEqual([]);
    expect(value(all, 'switchyard_prefilter_drops_total', { prefilter: 'blocklist' })).toBe(9);
    expect(value(all, 'switchyard_prefilter_drops_total', { prefilter: 'tor-exits' })).toBe(1);
    expect(find(all, 'switchyard_prefilter_drops_total')).toHaveLength(2);
    expect(state.describeCalls.filter((r) => r.startsWith('prefilter/'))).toEqual([]);
  });

  it('shows the conntrack gauge, flow counters and flow table size', async () => {
    const { metrics } = fakeSources();
    const all = samples(await metrics.text());
    expect(value(all, 'switchyard_conntrack_entries')).toBe(42);
    expect(value(all, 'switchyard_flow_events_total')).toBe(1000);
    expect(value(all, 'switchyard_flows')).toBe(55);
  });

  it('shows what decides the rule sets: tables, walks, table entries and overflows', async () => {
    const { metrics } = fakeSources();
    const all = samples(await metrics.text());
    expect(value(all, 'switchyard_policy_rule_sets', { decided_by: 'table' })).toBe(7);
    expect(value(all, 'switchyard_policy_rule_sets', { decided_by: 'walk' })).toBe(1);
    expect(value(all, 'switchyard_policy_table_entries')).toBe(240);
    expect(value(all, 'switchyard_policy_table_overflows')).toBe(1);
  });

  it('counts dropped flow events by where, the agent rate limit included', async () => {
    const { metrics } = fakeSources();
    const all = samples(await metrics.text());
    expect(value(all, 'switchyard_flow_events_dropped_total', { where: 'agent_rate_limit' })).toBe(17);
    expect(value(all, 'switchyard_flow_events_dropped_total', { where: 'ring_buffer' })).toBe(3);
    expect(value(all, 'switchyard_flow_events_dropped_total', { where: 'nflog' })).toBe(4);
    expect(value(all, 'switchyard_flow_events_dropped_total', { where: 'aggregation_full' })).toBe(0);
    expect(find(all, 'switchyard_flow_events_dropped_total')).toHaveLength(4);
  });

  it('reads the kernel at every scrape: values are the current ones, not accumulated', async () => {
    const { metrics, state } = fakeSources();
    await metrics.text();
    state.counters = [
      {
        rule: 'np:shop/db-allow-web/ingress/0',
        endpoint: 'shop/db',
        direction: 'ingress',
        packets: 20,
        bytes: 5000,
      },
      { rule: 'prefilter/blocklist', packets: 11, bytes: 660 },
    ];
    state.conntrack = 7;
    state.flowStats = {
      events: 1500,
      rateLimited: 20,
      lost: { 'ring buffer': 3 },
      flows: 60,
      evicted: 6,
      packets: { allow: 1000, deny: 41, log: 2 },
    };
    const all = samples(await metrics.text());
    expect(value(all, 'switchyard_rule_packets_total', { rule: 'np:shop/db-allow-web/ingress/0' })).toBe(20);
    expect(value(all, 'switchyard_rule_bytes_total', { rule: 'np:shop/db-allow-web/ingress/0' })).toBe(5000);
    // Rules the kernel no longer reports disappear.
    expect(find(all, 'switchyard_rule_packets_total')).toHaveLength(1);
    expect(find(all, 'switchyard_prefilter_drops_total')).toEqual([
      expect.objectContaining({ labels: expect.objectContaining({ prefilter: 'blocklist' }), value: 11 }),
    ]);
    expect(value(all, 'switchyard_conntrack_entries')).toBe(7);
    expect(value(all, 'switchyard_flow_events_total')).toBe(1500);
    expect(value(all, 'switchyard_flow_events_dropped_total', { where: 'agent_rate_limit' })).toBe(20);
    expect(find(all, 'switchyard_flow_events_dropped_total')).toHaveLength(3);
    expect(value(all, 'switchyard_flows_processed_total', { verdict: 'deny', family: 'ipv4' })).toBe(41);
  });

  it('reads the kernel counters once per scrape for packets, bytes and prefilters', async () => {
    const { metrics, state } = fakeSources();
    await metrics.text();
    expect(state.counterReads).toBe(1);
    await metrics.text();
    expect(state.counterReads).toBe(2);
  });

  it('gives every one of overlapping scrapes all rule series, though each forgets them when written', async () => {
    const { metrics, state } = fakeSources();
    const texts = await Promise.all([metrics.text(), metrics.text(), metrics.text()]);
    for (const text of texts) {
      const all = samples(text);
      expect(find(all, 'switchyard_rule_packets_total')).toHaveLength(3);
      expect(find(all, 'switchyard_rule_bytes_total')).toHaveLength(3);
      expect(find(all, 'switchyard_prefilter_drops_total')).toHaveLength(2);
    }
    expect(state.counterReads).toBe(3);
  });

  it('records apply durations in the histogram by mode', async () => {
    const { metrics } = fakeSources();
    let all = samples(await metrics.text());
    // Every mode is there from the start, at 0.
    expect(value(all, 'switchyard_apply_duration_seconds_count', { mode: 'full' })).toBe(0);
    expect(value(all, 'switchyard_apply_duration_seconds_count', { mode: 'repair' })).toBe(0);
    metrics.applyDuration.observe({ mode: 'full' }, 0.02);
    metrics.applyDuration.observe({ mode: 'full' }, 3);
    metrics.applyDuration.observe({ mode: 'incremental' }, 0.004);
    all = samples(await metrics.text());
    expect(value(all, 'switchyard_apply_duration_seconds_count', { mode: 'full' })).toBe(2);
    expect(value(all, 'switchyard_apply_duration_seconds_sum', { mode: 'full' })).toBeCloseTo(3.02);
    expect(value(all, 'switchyard_apply_duration_seconds_bucket', { mode: 'full', le: '0.01' })).toBe(0);
    expect(value(all, 'switchyard_apply_duration_seconds_bucket', { mode: 'full', le: '0.025' })).toBe(1);
    expect(value(all, 'switchyard_apply_duration_seconds_bucket', { mode: 'full', le: '5' })).toBe(2);
    expect(value(all, 'switchyard_apply_duration_seconds_bucket', { mode: 'full', le: '+Inf' })).toBe(2);
    expect(value(all, 'switchyard_apply_duration_seconds_bucket', { mode: 'incremental', le: '0.005' })).toBe(
      1,
    );
    expect(value(all, 'switchyard_apply_duration_seconds_count', { mode: 'full' })).toBe(2);
  });

  it('counts repairs and errors by stage', async () => {
    const { metrics } = fakeSources();
    metrics.repairs.inc();
    metrics.repairs.inc();
    metrics.errors.inc({ stage: 'apply' });
    const all = samples(await metrics.text());
    expect(value(all, 'switchyard_reconcile_repairs_total')).toBe(2);
    expect(value(all, 'switchyard_reconcile_errors_total', { stage: 'apply' })).toBe(1);
  });

  it('has the default process metrics under the agent prefix, labelled with node and backend', async () => {
    const { metrics } = fakeSources();
    const text = await metrics.text();
    const all = samples(text);
    const rss = find(all, 'switchyard_agent_process_resident_memory_bytes');
    expect(rss).toHaveLength(1);
    expect(rss[0]?.value).toBeGreaterThan(0);
    expect(rss[0]?.labels).toMatchObject({ node: 'node-2', backend: 'nftables' });
    expect(text).toContain('# TYPE switchyard_agent_process_cpu_seconds_total counter');
    // Every series carries the agent's labels.
    expect(all.filter((s) => s.labels.node !== 'node-2' || s.labels.backend !== 'nftables')).toEqual([]);
  });

  it('follows the exposition format and conventions: HELP/TYPE, suffixes, buckets, labels, no duplicates', async () => {
    for (const etcd of [false, true]) {
      const { metrics } = fakeSources({ etcd });
      metrics.applyDuration.observe({ mode: 'full' }, 0.3);
      const text = await metrics.text();
      expect(checkExposition(text)).toEqual([]);
      const promtool = promtoolProblems(text);
      // CI installs promtool (scripts/setup.sh); a developer machine without it still runs our checker.
      if (process.env.CI === 'true')
        expect(promtool, 'promtool (Debian prometheus) is installed').toBeDefined();
      if (promtool) expect(promtool).toEqual([]);
    }
  });

  it('the checker catches what breaks the conventions', () => {
    const bad = [
      '# HELP x_total a gauge named like a counter',
      '# TYPE x_total gauge',
      'x_total 1',
      '# HELP y a counter without _total',
      '# TYPE y counter',
      'y{reason="agent rate limit"} 1',
      'y{reason="agent rate limit"} 2',
      'z 3',
      '# HELP h a histogram',
      '# TYPE h histogram',
      'h_bucket{le="1"} 2',
      'h_bucket{le="0.5"} 1',
      'h_sum 1',
      'h_count 2',
    ].join('\n');
    const problems = checkExposition(bad);
    for (const expected of [
      'x_total: gauge ending in _total',
      'y: counter not ending in _total',
      `y{reason="agent rate limit"}: label reason has a space in 'agent rate limit'`,
      'y{reason="agent rate limit"}: duplicate series',
      'z: sample without HELP and TYPE',
      'h{}: buckets not in increasing le order',
      'h{}: no +Inf bucket last',
    ])
      expect(problems).toContain(expected);
  });

  it('counts drops by reason and direction, every reason present at 0', async () => {
    const { metrics, state } = fakeSources();
    state.counters.push({
      rule: 'shop/db/egress/fail-closed/malformed',
      endpoint: 'shop/db',
      direction: 'egress',
      packets: 4,
      bytes: 200,
    });
    const all = samples(await metrics.text());
    // gp:deny-bad (5) and the default deny (2) are policy drops; the allow rule is none.
    expect(value(all, 'switchyard_drops_total', { reason: 'policy', direction: 'ingress' })).toBe(7);
    expect(value(all, 'switchyard_drops_total', { reason: 'prefilter', direction: 'ingress' })).toBe(10);
    expect(value(all, 'switchyard_drops_total', { reason: 'parse_error', direction: 'egress' })).toBe(4);
    expect(value(all, 'switchyard_drops_total', { reason: 'policy', direction: 'egress' })).toBe(0);
    expect(find(all, 'switchyard_drops_total')).toHaveLength(DROP_REASONS.length * 2);
  });

  it('names drop reasons the same on every backend', () => {
    expect(dropReason('prefilter/blocklist', 'deny')).toBe('prefilter');
    expect(dropReason('conntrack/invalid', '')).toBe('ct_invalid');
    expect(dropReason('shop/db/ingress/fail-closed/invalid', 'deny')).toBe('ct_invalid');
    expect(dropReason('shop/db/ingress/fail-closed/table', 'deny')).toBe('fail_closed');
    expect(dropReason('shop/db/ingress/default', 'deny')).toBe('policy');
    expect(dropReason('shop/db/ingress/default', 'allow')).toBeUndefined();
    expect(dropReason('conntrack/established', '')).toBeUndefined();
  });

  it('counts flow packets by verdict, as hubble_flows_processed_total, and by family', async () => {
    const { metrics } = fakeSources();
    const all = samples(await metrics.text());
    const processed = (verdict: string, family: string) =>
      value(all, 'switchyard_flows_processed_total', { verdict, family });
    expect(processed('allow', 'ipv4')).toBe(600);
    expect(processed('allow', 'ipv6')).toBe(300);
    expect(processed('deny', 'ipv4')).toBe(40);
    // Every verdict and family is there from the first scrape.
    expect(processed('deny', 'ipv6')).toBe(0);
    expect(processed('log', 'ipv4')).toBe(2);
    expect(find(all, 'switchyard_flows_processed_total')).toHaveLength(6);
  });

  it('a flow table counts IPv6 packets apart from IPv4 ones', () => {
    const table = new FlowTable({ node: 'node-1' });
    const packet = (verdict: 'allow' | 'deny', src: string, dst: string, sport: number): KernelEvent => ({
      kind: 'verdict',
      time: 1,
      verdict,
      rule: 'r',
      endpoint: 'shop/db',
      direction: 'ingress',
      protocol: 6,
      src,
      sport,
      dst,
      dport: 80,
      bytes: 60,
    });
    table.event(packet('allow', '198.18.0.2', '198.18.0.3', 4000));
    table.event(packet('deny', 'fd00:5957::2', 'fd00:5957::3', 4000));
    table.event(packet('deny', 'fd00:5957::2', 'fd00:5957::3', 4001));
    const s = table.stats();
    expect(s.packets).toMatchObject({ allow: 1, deny: 2 });
    expect(s.packetsIPv6).toEqual({ allow: 0, deny: 2, log: 0 });
  });

  it('shows build info, endpoints, policies, revisions and the last successful apply', async () => {
    const { metrics, state } = fakeSources();
    let all = samples(await metrics.text());
    expect(find(all, 'switchyard_build_info')[0]).toMatchObject({
      labels: { node: 'node-2', backend: 'nftables', version: expect.stringMatching(/^\d+\.\d+\.\d+/) },
      value: 1,
    });
    expect(value(all, 'switchyard_endpoints')).toBe(3);
    expect(value(all, 'switchyard_policies')).toBe(2);
    expect(value(all, 'switchyard_revision_in_force')).toBe(0);
    expect(value(all, 'switchyard_last_apply_success_timestamp_seconds')).toBe(0);
    state.view = {
      endpoints: 4,
      policies: 2,
      revision: '41',
      desiredRevision: '42',
      lastApplyAt: '2026-12-05T05:00:00.000Z',
    };
    all = samples(await metrics.text());
    expect(value(all, 'switchyard_revision_in_force')).toBe(41);
    expect(value(all, 'switchyard_revision_desired')).toBe(42);
    expect(value(all, 'switchyard_last_apply_success_timestamp_seconds')).toBe(
      Date.parse('2026-12-05T05:00:00.000Z') / 1000,
    );
    expect(revisionValue('0123456789abcdef')).toBe(0x0123456789ab);
  });

  it('has the etcd connection gauge on etcd-fed agents only', async () => {
    expect(find(samples(await fakeSources().metrics.text()), 'switchyard_etcd_connected')).toEqual([]);
    const { metrics, state } = fakeSources({ etcd: true });
    expect(value(samples(await metrics.text()), 'switchyard_etcd_connected')).toBe(0);
    state.etcd = true;
    expect(value(samples(await metrics.text()), 'switchyard_etcd_connected')).toBe(1);
  });

  it('has every error stage at 0 before the first error', async () => {
    const all = samples(await fakeSources().metrics.text());
    for (const stage of ['source', 'apply', 'drift'])
      expect(value(all, 'switchyard_reconcile_errors_total', { stage })).toBe(0);
  });

  it('turns free text into enum label values', () => {
    expect(enumLabel('process tracer: evicted')).toBe('process_tracer_evicted');
    expect(enumLabel('aggregation full')).toBe('aggregation_full');
    expect(enumLabel('ebpf unresolved slot')).toBe('ebpf_unresolved_slot');
  });
});
