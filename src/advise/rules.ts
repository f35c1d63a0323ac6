/**
 * One rule per concern. A rule reads the workload and, where a bench scenario measured the
 * question, the numbers; it says which mechanism to use, why, and what was measured. Thresholds
 * are where the measured curves of this project's benches cross or where a documented limitation
 * starts, and each is named here so a test can pin it.
 */
import {
  ADVISED_BACKENDS,
  canRun,
  featureLabel,
  hasTrait,
  missingFeatures,
  runnableWith,
  type Capabilities,
} from './capabilities.js';
import { isBackendName } from '../dataplane/registry.js';
import type { BackendName } from '../dataplane/backend.js';
import { EvidenceBook, formatComparison, type Comparison } from './evidence.js';
import type { Workload } from './workload.js';
import type { Choice, Recommendation } from './advice.js';

export type { Choice, Recommendation } from './advice.js';

export interface AdviseContext {
  workload: Workload;
  evidence: EvidenceBook;
  /** What the kernel the advice is for can do (feature probes). */
  capabilities: Capabilities;
}

type Rule = (ctx: AdviseContext) => Recommendation | undefined;

/** Up to here a linear iptables chain is as fast as the alternatives and simplest to read and debug. */
export const SMALL_RULESET = 50;
/** From here kube-proxy-style per-service chains dominate connection setup cost. */
export const MANY_SERVICES = 1000;
/**
 * For the policy concern's simplicity preference: iptables within this factor of the fastest is
 * "as fast" for a small rule set. (Measured ties in general follow TIE_RULE, evidence.ts.)
 */
export const TIE_FACTOR = 1.2;
/**
 * Extra per-packet cost that does not matter: 1 µs is 10% of a core at 100k packets per second,
 * more than one node's pods usually push, so a simpler backend within it is fast enough.
 */
export const NEGLIGIBLE_NS_PER_PACKET = 1000;
/** Measured capacity at least this many times the workload's need means every backend keeps up. */
export const HEADROOM = 10;

/** Weight of a vote that only says "simpler, and fast enough". */
export const PREFERENCE_WEIGHT = 0.5;

const rec = (
  r: Omit<Recommendation, 'evidence' | 'measured' | 'weight' | 'tiedWith'> &
    Partial<Pick<Recommendation, 'evidence' | 'measured' | 'weight' | 'tiedWith'>>,
): Recommendation => ({
  evidence: [],
  measured: false,
  weight: 1,
  tiedWith: [],
  ...r,
});

/** The runnable backends the measurements cannot tell from `choice` (TIE_RULE). */
function tiedWith(c: Comparison, choice: string, caps: Capabilities): BackendName[] {
  if (!c.tied.includes(choice)) return [];
  return c.tied.filter((b): b is BackendName => b !== choice && isBackendName(b) && canRun(b, caps));
}

/** "ebpf and iptables": backends named in a sentence. */
const both = (names: readonly string[]): string =>
  names.length <= 1 ? (names[0] ?? '') : `${names.slice(0, -1).join(', ')} and ${names[names.length - 1]}`;

export const l7Rule: Rule = ({ workload }) =>
  workload.l7Rules
    ? rec({
        concern: 'L7 policy',
        choice: 'proxy',
        advice:
          'Enforce HTTP/gRPC rules in a proxy such as Envoy; keep Switchyard (any backend) for L3/L4 underneath.',
        reasons: [
          'L7 rules need the reassembled byte stream and protocol parsers; eBPF programs see packets, are bounded by the verifier, and cannot buffer a request.',
          'netfilter has no L7 parsers either: this job belongs in neither kernel mechanism.',
        ],
      })
    : undefined;

export const meshRule: Rule = ({ workload }) =>
  workload.serviceMesh
    ? rec({
        concern: 'service-mesh control',
        choice: 'mesh',
        advice:
          'Use a service mesh (Envoy-based such as Istio, or Linkerd) for mTLS, retries and traffic splitting.',
        reasons: [
          "Retries, per-request routing and certificate rotation are user-space proxy work, not a packet filter's.",
        ],
      })
    : undefined;

export const encryptionRule: Rule = ({ workload }) =>
  workload.encryption
    ? rec({
        concern: 'encryption',
        choice: 'wireguard',
        advice: 'Encrypt with WireGuard (or IPsec) in the kernel, not in eBPF.',
        reasons: [
          'eBPF has no helpers for bulk per-packet encryption; the kernel crypto behind WireGuard/IPsec is faster and audited.',
          'Switchyard policy still applies to the inner (pod) addresses on any backend.',
        ],
      })
    : undefined;

export const kernelRule: Rule = ({ capabilities }) => {
  const unable = ADVISED_BACKENDS.filter((b) => !canRun(b, capabilities));
  if (unable.length === 0) return undefined;
  const missing = [...new Set(unable.flatMap((b) => missingFeatures(b, capabilities)))];
  return rec({
    concern: 'kernel support',
    choice: 'nftables',
    advice: `This kernel lacks ${missing.map((f) => featureLabel(f, capabilities)).join(', ')}: use a netfilter backend.`,
    reasons: unable.flatMap((b) =>
      missingFeatures(b, capabilities).map(
        (f) =>
          `the ${b} backend needs ${featureLabel(f, capabilities)}; probe: ${capabilities[f]?.detail ?? 'failed'}`,
      ),
    ),
  });
};

/** What the other policy mode costs per backend at the same rule count, when the run measured both. */
function otherModeReason(evidence: EvidenceBook, rules: number, mode: 'table' | 'walk'): string[] {
  const other = mode === 'table' ? 'walk' : 'table';
  const c = evidence.compare('policy', { rules, mode: other, method: 'traffic' });
  if (!c || !c.evidence.some((e) => e.params.mode === other)) return [];
  return [`the same rules in ${other} mode: ${formatComparison(c, 'ns/packet')}`];
}

export const policyRule: Rule = ({ workload, evidence, capabilities }) => {
  const rules = workload.rulesPerEndpoint;
  const small = rules <= SMALL_RULESET;
  const simplicityFirst = workload.priority === 'simplicity';
  const mode = workload.policyMode;
  const c = evidence.compare('policy', { rules, mode, method: 'traffic' });
  if (c) {
    const tie = c.ranking.filter((r) => r.behind <= TIE_FACTOR).map((r) => r.backend);
    // The backend of linear rule chains: the simplest to operate, and fast enough for few rules.
    const simplest = c.ranking.find((r) => hasTrait(r.backend, (t) => t.linearRules));
    const extra = simplest && c.ranking[0] ? simplest.median - c.ranking[0].median : Number.POSITIVE_INFINITY;
    const simple =
      simplest !== undefined &&
      small &&
      simplicityFirst &&
      (tie.includes(simplest.backend) || extra <= NEGLIGIBLE_NS_PER_PACKET);
    const ties = simple ? [] : tiedWith(c, c.best, capabilities);
    return rec({
      concern: 'policy enforcement',
      choice: (simple ? simplest.backend : c.best) as Choice,
      tiedWith: ties,
      advice: simple
        ? extra > 0
          ? `With ~${rules} rules per endpoint ${simplest.backend} costs ${extra.toFixed(0)} ns/packet more than ${c.best}: negligible (under ${NEGLIGIBLE_NS_PER_PACKET} ns), and it is the simplest to operate.`
          : `With ~${rules} rules per endpoint ${simplest.backend} is as fast as the rest and the simplest to operate.`
        : ties.length
          ? `At ~${rules} rules per endpoint ${both([c.best, ...ties])} evaluate policy equally fast (a tie).`
          : `At ~${rules} rules per endpoint ${c.best} evaluates policy fastest.`,
      reasons: [
        `measured per-packet cost${c.evidence.some((e) => e.params.mode) ? ` in ${mode} mode` : ''}: ${formatComparison(c, 'ns/packet')}`,
        ...otherModeReason(evidence, rules, mode),
      ],
      evidence: c.evidence,
      measured: true,
      weight: (tie.length > 1 && ties.length === 0) || simple ? PREFERENCE_WEIGHT : 1,
    });
  }
  return rec({
    concern: 'policy enforcement',
    choice: small ? (simplicityFirst ? 'iptables' : 'any') : 'nftables',
    advice: small
      ? `With ~${rules} rules per endpoint any backend is fast enough${simplicityFirst ? '; iptables is the simplest' : ''}.`
      : `At ~${rules} rules per endpoint avoid linear iptables chains: nftables sets/maps or eBPF.`,
    reasons: ['not measured in this run: run `switchyard bench policy` for numbers'],
    weight: small ? PREFERENCE_WEIGHT : 1,
  });
};

export const setUpdateRule: Rule = ({ workload, evidence, capabilities }) => {
  if (workload.setUpdatesPerSecond === 0 && workload.addressesPerSet < 1000) return undefined;
  const c = evidence.compare('set-update', { size: workload.addressesPerSet });
  if (!c) {
    return rec({
      concern: 'IP-set updates',
      choice: 'any',
      advice: 'Large or churning address sets: measure with `switchyard bench set-update` before choosing.',
      reasons: ['not measured in this run'],
    });
  }
  const slowest = c.ranking[c.ranking.length - 1];
  const allKeepUp = slowest !== undefined && slowest.median >= HEADROOM * workload.setUpdatesPerSecond;
  const ties = allKeepUp ? [] : tiedWith(c, c.best, capabilities);
  return rec({
    concern: 'IP-set updates',
    choice: allKeepUp ? 'any' : (c.best as Choice),
    tiedWith: ties,
    advice: allKeepUp
      ? `Every backend absorbs ${workload.setUpdatesPerSecond} updates/s with 10x headroom; let other concerns decide.`
      : `${both([c.best, ...ties])} keep${ties.length ? '' : 's'} up best with ${workload.setUpdatesPerSecond} set updates/s on ${workload.addressesPerSet}-address sets${ties.length ? ' (a tie)' : ''}.`,
    reasons: [`measured update rate: ${formatComparison(c, 'updates/s')}`],
    evidence: c.evidence,
    measured: true,
  });
};

export const servicesRule: Rule = ({ workload, evidence, capabilities }) => {
  if (workload.services === 0) return undefined;
  const c = evidence.compare('services', { services: workload.services });
  const many = workload.services >= MANY_SERVICES;
  const slowest = c?.ranking[c.ranking.length - 1];
  if (c && !many && slowest && slowest.median >= HEADROOM * workload.connectionsPerSecond) {
    return rec({
      concern: 'service load balancing',
      choice: 'any',
      advice: `With ${workload.services} services every backend sets up connections at ${HEADROOM}x your ${workload.connectionsPerSecond}/s or more; let other concerns decide.`,
      reasons: [`measured new-connection rate: ${formatComparison(c, 'conn/s')}`],
      evidence: c.evidence,
      measured: true,
    });
  }
  if (c) {
    const choice = (c.ranking.find((r) => canRun(r.backend, capabilities))?.backend ?? 'nftables') as Choice;
    const ties = tiedWith(c, choice, capabilities);
    return rec({
      concern: 'service load balancing',
      choice,
      tiedWith: ties,
      advice: ties.length
        ? `${both([choice, ...ties])} set up connections equally fast at ${workload.services} services (a tie).`
        : hasTrait(choice, (t) => t.serviceBalancing === 'connect-time')
          ? `eBPF connect-time balancing: the backend is chosen once per connection, no per-packet NAT, flat in the number of services.`
          : `${choice} sets up connections fastest at ${workload.services} services.`,
      reasons: [`measured new-connection rate: ${formatComparison(c, 'conn/s')}`],
      evidence: c.evidence,
      measured: true,
    });
  }
  return rec({
    concern: 'service load balancing',
    choice: (many && runnableWith(capabilities, (t) => t.serviceBalancing === 'connect-time')) || 'any',
    advice: many
      ? 'Many services: eBPF connect-time balancing avoids kube-proxy-style chains that grow with every service.'
      : 'Few services: every backend balances them cheaply.',
    reasons: ['not measured in this run: run `switchyard bench services`'],
  });
};

/**
 * Traffic from outside (NodePort, LoadBalancer) is translated where it enters the node, per
 * packet, on every backend: eBPF's connect-time balancing does not apply (no socket of the
 * client's on the node), so this concern reads its own bench, `nodeport`.
 */
export const nodePortRule: Rule = ({ workload, evidence, capabilities }) => {
  if (workload.externalServices === 0) return undefined;
  const services = Math.max(workload.services, workload.externalServices);
  const concern = 'traffic from outside';
  const c = evidence.compare('nodeport', { services, metric: 'new connections' });
  if (c) {
    const choice = (c.ranking.find((r) => canRun(r.backend, capabilities))?.backend ?? 'nftables') as Choice;
    const ties = tiedWith(c, choice, capabilities);
    const cpu = evidence.compare('nodeport-cpu', { services, metric: 'total' });
    return rec({
      concern,
      choice,
      tiedWith: ties,
      advice: ties.length
        ? `${both([choice, ...ties])} take new connections through a NodePort equally fast at ${services} services (a tie).`
        : `${choice} takes new connections through a NodePort fastest at ${services} services.`,
      reasons: [
        `measured new-connection rate from outside: ${formatComparison(c, 'conn/s')}`,
        ...(cpu ? [`measured CPU per 10k connections: ${formatComparison(cpu, 'CPU-s')}`] : []),
      ],
      evidence: [...c.evidence, ...(cpu?.evidence ?? [])],
      measured: true,
    });
  }
  const many = services >= MANY_SERVICES;
  return rec({
    concern,
    choice: (many && runnableWith(capabilities, (t) => !t.linearRules)) || 'any',
    advice: many
      ? 'NodePort at scale: translate with one lookup (an eBPF map at the external interface, or an nft verdict map) rather than kube-proxy-style chains that walk every service before the node ports.'
      : 'Few services: every backend translates NodePort traffic cheaply.',
    reasons: ['not measured in this run: run `switchyard bench nodeport nodeport-cpu`'],
  });
};

export const prefilterRule: Rule = ({ workload, evidence, capabilities }) => {
  if (workload.prefilterEntries === 0) return undefined;
  const c = evidence.compare('prefilter', {
    cidrs: workload.prefilterEntries,
    method: 'traffic',
  });
  const flood = workload.floodPacketsPerSecond;
  if (c) {
    const best = c.ranking[0];
    const atXdp = (b: string): boolean => hasTrait(b, (t) => t.prefilterHook === 'xdp');
    const rawTable = c.ranking.find((r) => !atXdp(r.backend));
    const rawKeepsUp = rawTable !== undefined && flood > 0 && rawTable.median >= 2 * flood;
    const xdpRuns = runnableWith(capabilities, (t) => t.prefilterHook === 'xdp') !== undefined;
    const choice = (
      rawKeepsUp || !xdpRuns ? (rawTable?.backend ?? 'iptables') : (best?.backend ?? 'ebpf')
    ) as Choice;
    // XDP's lead is real only when no raw-table backend ties with it (same measured drop rate).
    const ties = rawKeepsUp ? [] : tiedWith(c, choice, capabilities);
    return rec({
      concern: 'DDoS prefilter',
      choice,
      tiedWith: ties,
      advice:
        atXdp(choice) && ties.length
          ? `XDP (${choice}) and the raw table (${both(ties)}) drop deny-listed sources at the same measured rate here (a tie): measure on your NIC before choosing for the prefilter.`
          : atXdp(choice)
            ? 'Drop deny-listed sources at XDP, before the stack allocates anything.'
            : rawKeepsUp
              ? `The raw table drops ${flood} pps with room to spare; XDP is not needed at this rate.`
              : `This kernel cannot run XDP for Switchyard: ${choice}'s raw table drops deny-listed sources instead.`,
      reasons: [`measured drop rate with ${workload.prefilterEntries} CIDRs: ${formatComparison(c, 'pps')}`],
      evidence: c.evidence,
      measured: true,
    });
  }
  return rec({
    concern: 'DDoS prefilter',
    choice: runnableWith(capabilities, (t) => t.prefilterHook === 'xdp') ?? 'iptables',
    advice: 'XDP drops before socket buffers are allocated; the raw table drops after.',
    reasons: ['not measured in this run: run `switchyard bench prefilter`'],
  });
};

export const observabilityRule: Rule = ({ workload, evidence, capabilities }) => {
  if (!workload.flowLogs && !workload.processContext) return undefined;
  if (workload.processContext) {
    const withProcess = runnableWith(capabilities, (t) => t.processContext);
    return rec({
      concern: 'flow records',
      choice: withProcess ?? 'any',
      advice: withProcess
        ? 'Process context (pid, comm) needs eBPF socket hooks: netfilter logs packets, not the process that sent them.'
        : 'Process context needs eBPF, which this kernel cannot run for Switchyard; netfilter gives flows without it.',
      reasons: ['NFLOG and conntrack events carry addresses and ports only'],
    });
  }
  const c = evidence.compare('observe', { flows: 'on' });
  return rec({
    concern: 'flow records',
    choice: 'any',
    advice:
      'Flow logs without process context work on every backend (ringbuf on eBPF, NFLOG/conntrack on netfilter).',
    reasons: c
      ? [`measured throughput with flow records on: ${formatComparison(c, 'Gbit/s')}`]
      : ['not measured in this run'],
    evidence: c?.evidence ?? [],
    measured: !!c,
  });
};

export const RULES: readonly Rule[] = [
  kernelRule,
  l7Rule,
  meshRule,
  encryptionRule,
  policyRule,
  setUpdateRule,
  servicesRule,
  nodePortRule,
  prefilterRule,
  observabilityRule,
];

export { EvidenceBook };
