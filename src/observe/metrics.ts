/**
 * The agent's Prometheus metrics. Rule counters and conntrack size are read from the kernel when
 * scraped (the kernel already keeps them; copying them on a timer would only add staleness);
 * everything the agent does itself is counted as it happens.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { RuleCounter } from '../dataplane/backend.js';
import type { TableModeSummary } from '../ir/decision-table.js';
import type { FlowStats } from './flows.js';

export interface RuleDescription {
  policy: string;
  action: string;
}

export interface MetricsSources {
  counters: () => Promise<RuleCounter[]>;
  conntrackEntries: () => Promise<number>;
  flowStats: () => FlowStats;
  /** Policy and action of a counter's rule id (defaults and fail-closed drops included). */
  describeRule: (rule: string) => RuleDescription;
  /** How the rule sets in force are decided (undefined before the first apply). */
  policy: () => TableModeSummary | undefined;
}

type Registers = Registry[];

const RULE_LABELS = ['rule', 'policy', 'action', 'endpoint', 'direction'] as const;

/**
 * Series read from the kernel when scraped: rule packets and bytes, prefilter drops, conntrack
 * size. The rule counters are read once per scrape, shared by the packet and byte series.
 */
function registerKernelMetrics(registers: Registers, sources: MetricsSources): void {
  let scrape: Promise<RuleCounter[]> | undefined;
  const counters = (): Promise<RuleCounter[]> =>
    (scrape ??= sources.counters().finally(() => (scrape = undefined)));
  const fill = async (
    metric: Counter<(typeof RULE_LABELS)[number]>,
    field: 'packets' | 'bytes',
  ): Promise<void> => {
    metric.reset();
    for (const c of await counters()) {
      if (c.rule.startsWith('prefilter/')) continue;
      const d = sources.describeRule(c.rule);
      metric.inc(
        {
          rule: c.rule,
          policy: d.policy,
          action: d.action,
          endpoint: c.endpoint ?? '',
          direction: c.direction ?? '',
        },
        c[field],
      );
    }
  };
  new Counter({
    name: 'switchyard_rule_packets_total',
    help: 'Packets that matched a policy rule, by the action it took',
    labelNames: RULE_LABELS,
    registers,
    async collect() {
      await fill(this, 'packets');
    },
  });
  new Counter({
    name: 'switchyard_rule_bytes_total',
    help: 'Bytes that matched a policy rule, by the action it took',
    labelNames: RULE_LABELS,
    registers,
    async collect() {
      await fill(this, 'bytes');
    },
  });
  new Counter({
    name: 'switchyard_prefilter_drops_total',
    help: 'Packets dropped by a prefilter deny-list',
    labelNames: ['prefilter'],
    registers,
    async collect() {
      this.reset();
      for (const c of await counters())
        if (c.rule.startsWith('prefilter/'))
          this.inc({ prefilter: c.rule.slice('prefilter/'.length) }, c.packets);
    },
  });
  new Gauge({
    name: 'switchyard_conntrack_entries',
    help: 'Connections the dataplane tracks on this node',
    registers,
    async collect() {
      this.set(await sources.conntrackEntries());
    },
  });
}

/** The flow table's own counters: events taken in, events dropped and where, flows held. */
function registerFlowMetrics(registers: Registers, sources: MetricsSources): void {
  new Counter({
    name: 'switchyard_flow_events_dropped_total',
    help: 'Flow events not recorded: lost in the kernel (full aggregation map or set, full buffer) or refused by the agent rate limit',
    labelNames: ['where'],
    registers,
    collect() {
      this.reset();
      const s = sources.flowStats();
      this.inc({ where: 'agent rate limit' }, s.rateLimited);
      for (const [where, n] of Object.entries(s.lost)) this.inc({ where }, n);
    },
  });
  new Counter({
    name: 'switchyard_flow_events_total',
    help: 'Flow events taken in',
    registers,
    collect() {
      this.reset();
      this.inc(sources.flowStats().events);
    },
  });
  new Counter({
    name: 'switchyard_flow_records_evicted_total',
    help: 'Flow records the agent table evicted to stay within its capacity (least recently active first)',
    registers,
    collect() {
      this.reset();
      this.inc(sources.flowStats().evicted);
    },
  });
  new Counter({
    name: 'switchyard_kernel_drops_total',
    help: "Packets to or from the node's pods the kernel dropped for a reason other than policy (no route, rp_filter, no socket …), by the kernel's drop reason",
    labelNames: ['reason'],
    registers,
    collect() {
      this.reset();
      for (const [reason, n] of Object.entries(sources.flowStats().kernelDrops ?? {}))
        this.inc({ reason }, n);
    },
  });
  new Gauge({
    name: 'switchyard_flows',
    help: 'Flows in the agent table',
    registers,
    collect() {
      this.set(sources.flowStats().flows);
    },
  });
}

/** Table mode at a glance: how many rule sets a table decides, their size, and overflows. */
function registerPolicyMetrics(registers: Registers, sources: MetricsSources): void {
  new Gauge({
    name: 'switchyard_policy_rule_sets',
    help: 'Endpoint rule sets (one per endpoint and direction) in force, by what decides them',
    labelNames: ['decided_by'],
    registers,
    collect() {
      const s = sources.policy();
      this.set({ decided_by: 'table' }, s?.tables ?? 0);
      this.set({ decided_by: 'walk' }, s?.walked ?? 0);
    },
  });
  new Gauge({
    name: 'switchyard_policy_table_entries',
    help: 'Decision table entries in force, over all tables (before any backend encoding)',
    registers,
    collect() {
      this.set(sources.policy()?.entries ?? 0);
    },
  });
  new Gauge({
    name: 'switchyard_policy_table_overflows',
    help: 'Rule sets walked because their decision table would exceed the bound (table mode only)',
    registers,
    collect() {
      this.set(sources.policy()?.overflows.length ?? 0);
    },
  });
}

export class AgentMetrics {
  readonly registry = new Registry();
  readonly applyDuration: Histogram<'mode'>;
  readonly repairs: Counter;
  readonly restarts: Counter;
  readonly errors: Counter<'stage'>;

  constructor(sources: MetricsSources, labels: { node: string; backend: string }) {
    const registers = [this.registry];
    this.registry.setDefaultLabels(labels);
    collectDefaultMetrics({ register: this.registry, prefix: 'switchyard_agent_' });

    this.applyDuration = new Histogram({
      name: 'switchyard_apply_duration_seconds',
      help: 'Time to make the dataplane equal to the desired state',
      labelNames: ['mode'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.repairs = new Counter({
      name: 'switchyard_reconcile_repairs_total',
      help: 'Times the dataplane was found changed behind the agent and restored',
      registers,
    });
    this.restarts = new Counter({
      name: 'switchyard_agent_restarts_total',
      help: "Times the node's agent was started again by its supervisor after it exited",
      registers,
    });
    this.errors = new Counter({
      name: 'switchyard_reconcile_errors_total',
      help: 'Failed applies, repairs and drift checks',
      labelNames: ['stage'],
      registers,
    });

    registerKernelMetrics(registers, sources);
    registerFlowMetrics(registers, sources);
    registerPolicyMetrics(registers, sources);
  }

  text(): Promise<string> {
    return this.registry.metrics();
  }
}
