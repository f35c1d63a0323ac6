/**
 * The agent's Prometheus metrics. Rule counters and conntrack size are read from the kernel when
 * scraped (the kernel already keeps them; copying them on a timer would only add staleness);
 * everything the agent does itself is counted as it happens.
 *
 * Conventions (docs/metrics.md lists every series): `switchyard_` snake_case names, counters end
 * in `_total` and gauges never do, units in the name, label values without spaces, and every
 * series of a concept the backend has is there from the first scrape (0 rather than absent),
 * with the same name and labels on every backend.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { RuleCounter } from '../dataplane/backend.js';
import type { Verdict } from '../dataplane/events.js';
import type { TableModeSummary } from '../ir/decision-table.js';
import { switchyardVersion } from '../util/version.js';
import type { FlowStats } from './flows.js';

export interface RuleDescription {
  /** `NetworkPolicy`, `GlobalPolicy`, `Prefilter`, `default`, `fail_closed`, or '' (unknown). */
  kind: string;
  /** `namespace/name` of a NetworkPolicy, the name of a GlobalPolicy or prefilter, else ''. */
  policy: string;
  action: string;
}

/** What the agent has in force, as far as metrics need it. */
export interface AgentView {
  /** Revision in force and the newest one read (content hashes or etcd revisions). */
  revision?: string;
  desiredRevision?: string;
  /** When the last apply (or adoption) succeeded, ISO time. */
  lastApplyAt?: string;
  /** Endpoints on this node and policies selecting them, in force. */
  endpoints: number;
  policies: number;
}

export interface MetricsSources {
  counters: () => Promise<RuleCounter[]>;
  conntrackEntries: () => Promise<number>;
  flowStats: () => FlowStats;
  /** Policy and action of a counter's rule id (defaults and fail-closed drops included). */
  describeRule: (rule: string) => RuleDescription;
  /** How the rule sets in force are decided (undefined before the first apply). */
  policy: () => TableModeSummary | undefined;
  agent: () => AgentView;
  /** Agents fed by etcd only: whether the watch is connected. */
  etcdConnected?: () => boolean;
  /** A scrape begins and ends (it reads every rule's counters: the agent gives that garbage back). */
  scrapeStarted?: () => void;
  scrapeEnded?: () => void;
}

/** Why a packet was dropped, as `switchyard_drops_total{reason}` says it (cilium_drop_count_total's reason). */
export const DROP_REASONS = [
  'policy',
  'prefilter',
  'ct_invalid',
  'parse_error',
  'fragment',
  'ipv6_unsupported',
  'fail_closed',
] as const;
export type DropReason = (typeof DROP_REASONS)[number];

const DIRECTIONS = ['ingress', 'egress'] as const;
const VERDICTS: readonly Verdict[] = ['allow', 'deny', 'log'];
/** Modes an apply can have (ApplyMode) and stages an error can have (AgentError.stage). */
const APPLY_MODES = ['adopted', 'incremental', 'full', 'repair'] as const;
const ERROR_STAGES = ['source', 'apply', 'drift'] as const;
/** Where flow events are lost on every backend (others appear when they happen). */
const FLOW_LOSS_EVERYWHERE = ['agent_rate_limit', 'aggregation_full'] as const;

/** Fail-closed reasons the eBPF programs count (`<endpoint>/<direction>/fail-closed/<reason>`). */
const FAIL_CLOSED_REASONS: Record<string, DropReason> = {
  invalid: 'ct_invalid',
  malformed: 'parse_error',
  fragment: 'fragment',
  ipv6: 'ipv6_unsupported',
  'ipv6-headers': 'parse_error',
  'ipv6-mapped': 'parse_error',
};

/**
 * The drop reason of a kernel counter, or undefined when its packets were not dropped. Prefilter
 * lists drop what comes in; conntrack's INVALID (nftables' `conntrack/invalid`, eBPF's fail-closed
 * `invalid`) is the same reason on both; other deny actions (deny rules, default deny) are policy.
 */
export function dropReason(rule: string, action: string): DropReason | undefined {
  if (rule.startsWith('prefilter/')) return 'prefilter';
  if (rule === 'conntrack/invalid') return 'ct_invalid';
  const failClosed = /\/fail-closed\/([^/]+)$/.exec(rule);
  if (failClosed) return FAIL_CLOSED_REASONS[failClosed[1] as string] ?? 'fail_closed';
  return action === 'deny' ? 'policy' : undefined;
}

/** A label value without spaces or punctuation: `process tracer: evicted` → `process_tracer_evicted`. */
export function enumLabel(value: string): string {
  return (
    value
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, '_')
      .replace(/^_+|_+$/g, '') || 'unknown'
  );
}

/**
 * A revision as a gauge value: etcd revisions as they are; a content hash (directory sources) as
 * its first 48 bits, exact in a float, so `desired != in force` still says the agent is behind.
 */
export function revisionValue(revision: string | undefined): number {
  if (revision === undefined) return 0;
  if (/^\d+$/.test(revision)) return Number(revision);
  if (/^[0-9a-f]+$/i.test(revision)) return parseInt(revision.slice(0, 12), 16);
  return 0;
}

type Registers = Registry[];

const RULE_LABELS = ['rule', 'policy_kind', 'policy', 'action', 'endpoint', 'direction'] as const;

/**
 * Series read from the kernel when scraped: rule packets and bytes, drops by reason, prefilter
 * drops, conntrack size. The rule counters are read once per scrape, shared by every series.
 * Returns what forgets the per-rule series once a scrape has been written: they are made anew
 * from the kernel by the next one, and kept in between they are ~24,000 series at 10k services on
 * netfilter (16 MiB of heap, ~28 MiB of RSS) held for nothing.
 */
function registerKernelMetrics(registers: Registers, sources: MetricsSources): () => void {
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
          policy_kind: d.kind,
          policy: d.policy,
          action: d.action,
          endpoint: c.endpoint ?? '',
          direction: c.direction ?? '',
        },
        c[field],
      );
    }
  };
  const rulePackets = new Counter({
    name: 'switchyard_rule_packets_total',
    help: 'Packets that matched a policy rule, by the action it took',
    labelNames: RULE_LABELS,
    registers,
    async collect() {
      await fill(this, 'packets');
    },
  });
  const ruleBytes = new Counter({
    name: 'switchyard_rule_bytes_total',
    help: 'Bytes that matched a policy rule, by the action it took',
    labelNames: RULE_LABELS,
    registers,
    async collect() {
      await fill(this, 'bytes');
    },
  });
  const prefilterDrops = new Counter({
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
  new Counter({
    name: 'switchyard_drops_total',
    help: 'Packets the dataplane dropped, by reason and direction (as cilium_drop_count_total)',
    labelNames: ['reason', 'direction'],
    registers,
    async collect() {
      this.reset();
      for (const reason of DROP_REASONS)
        for (const direction of DIRECTIONS) this.inc({ reason, direction }, 0);
      for (const c of await counters()) {
        const prefilter = c.rule.startsWith('prefilter/');
        const reason = dropReason(c.rule, prefilter ? 'deny' : sources.describeRule(c.rule).action);
        if (reason === undefined || c.packets === 0) continue;
        // A prefilter drops what arrives at the node: ingress.
        this.inc({ reason, direction: c.direction ?? 'ingress' }, c.packets);
      }
    },
  });
  new Gauge({
    name: 'switchyard_conntrack_entries',
    help: 'Live connections the dataplane tracks on this node (expired entries not counted)',
    registers,
    async collect() {
      this.set(await sources.conntrackEntries());
    },
  });
  return () => {
    for (const perRule of [rulePackets, ruleBytes, prefilterDrops]) perRule.reset();
  };
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
      for (const where of FLOW_LOSS_EVERYWHERE) this.inc({ where }, 0);
      this.inc({ where: 'agent_rate_limit' }, s.rateLimited);
      for (const [where, n] of Object.entries(s.lost)) this.inc({ where: enumLabel(where) }, n);
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
  new Counter({
    name: 'switchyard_flows_processed_total',
    help: 'Packets of the flow events taken in, by verdict (as hubble_flows_processed_total) and address family (ipv4, ipv6)',
    labelNames: ['verdict', 'family'],
    registers,
    collect() {
      this.reset();
      const { packets, packetsIPv6 } = sources.flowStats();
      for (const verdict of VERDICTS) {
        const ipv6 = packetsIPv6?.[verdict] ?? 0;
        this.inc({ verdict, family: 'ipv4' }, packets[verdict] - ipv6);
        this.inc({ verdict, family: 'ipv6' }, ipv6);
      }
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

/** What the agent has in force: build, endpoints, policies, revisions, last success, datastore link. */
function registerStateMetrics(registers: Registers, sources: MetricsSources): void {
  new Gauge({
    name: 'switchyard_build_info',
    help: "The agent's version (with its node and backend); always 1",
    labelNames: ['version'],
    registers,
  }).set({ version: switchyardVersion() }, 1);
  new Gauge({
    name: 'switchyard_endpoints',
    help: 'Endpoints (pods) on this node whose policy is in force',
    registers,
    collect() {
      this.set(sources.agent().endpoints);
    },
  });
  new Gauge({
    name: 'switchyard_policies',
    help: 'Policies (NetworkPolicies and GlobalPolicies) selecting an endpoint of this node, in force',
    registers,
    collect() {
      this.set(sources.agent().policies);
    },
  });
  new Gauge({
    name: 'switchyard_revision_in_force',
    help: 'Revision of the desired state in force (etcd revision; a content hash as its first 48 bits); 0 before the first apply',
    registers,
    collect() {
      this.set(revisionValue(sources.agent().revision));
    },
  });
  new Gauge({
    name: 'switchyard_revision_desired',
    help: 'Newest revision of the desired state read from the source (same encoding as switchyard_revision_in_force)',
    registers,
    collect() {
      this.set(revisionValue(sources.agent().desiredRevision));
    },
  });
  new Gauge({
    name: 'switchyard_last_apply_success_timestamp_seconds',
    help: 'When the dataplane was last made equal to the desired state (apply, repair or adoption), Unix time; 0 before',
    registers,
    collect() {
      const at = sources.agent().lastApplyAt;
      this.set(at ? Date.parse(at) / 1000 : 0);
    },
  });
  const connected = sources.etcdConnected;
  if (connected)
    new Gauge({
      name: 'switchyard_etcd_connected',
      help: "1 while the agent's watch of etcd is connected, else 0",
      registers,
      collect() {
        this.set(connected() ? 1 : 0);
      },
    });
}

/**
 * prom-client's default Node.js gauges whose names end in `_total` (Prometheus reserves the
 * suffix for counters); the same numbers by type stay (`…_active_handles{type}` and so on).
 */
const MISNAMED_DEFAULTS = [
  'nodejs_active_handles_total',
  'nodejs_active_requests_total',
  'nodejs_active_resources_total',
];

export class AgentMetrics {
  readonly registry = new Registry();
  readonly applyDuration: Histogram<'mode'>;
  readonly repairs: Counter;
  readonly restarts: Counter;
  readonly errors: Counter<'stage'>;
  private readonly releaseKernelSeries: () => void;
  private lastScrape: Promise<void> = Promise.resolve();
  private readonly sources: Pick<MetricsSources, 'scrapeStarted' | 'scrapeEnded'>;

  constructor(sources: MetricsSources, labels: { node: string; backend: string }) {
    this.sources = sources;
    const registers = [this.registry];
    this.registry.setDefaultLabels(labels);
    collectDefaultMetrics({ register: this.registry, prefix: 'switchyard_agent_' });
    for (const name of MISNAMED_DEFAULTS) this.registry.removeSingleMetric(`switchyard_agent_${name}`);

    this.applyDuration = new Histogram({
      name: 'switchyard_apply_duration_seconds',
      help: 'Time to make the dataplane equal to the desired state',
      labelNames: ['mode'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    for (const mode of APPLY_MODES) this.applyDuration.zero({ mode });
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
    for (const stage of ERROR_STAGES) this.errors.inc({ stage }, 0);

    this.releaseKernelSeries = registerKernelMetrics(registers, sources);
    registerFlowMetrics(registers, sources);
    registerPolicyMetrics(registers, sources);
    registerStateMetrics(registers, sources);
  }

  /**
   * The exposition text. Scrapes take turns: each one's per-rule series are forgotten once it is
   * written (registerKernelMetrics), which must not happen while another scrape is reading them.
   */
  text(): Promise<string> {
    const scrape = this.lastScrape.then(async () => {
      this.sources.scrapeStarted?.();
      try {
        return await this.registry.metrics();
      } finally {
        this.releaseKernelSeries();
        this.sources.scrapeEnded?.();
      }
    });
    // Not `scrape.catch(...)`: that settles with the text too, and would keep the last
    // exposition (1.7 MB at 10k endpoints) alive until the next scrape.
    this.lastScrape = scrape.then(
      () => undefined,
      () => undefined,
    );
    return scrape;
  }
}
