/**
 * IR rule sets → iptables chains, laid out like Calico felix:
 *
 *   FORWARD → SY-FORWARD: clear the accept mark, SY-FROM-WL (`-i <veth> -g SY-FW-<ep>`, the pod's
 *   egress), SY-TO-WL (`-o <veth> -g SY-TW-<ep>`, the destination pod's ingress), then ACCEPT what
 *   the endpoint chains marked. INPUT → SY-INPUT does the same for pod → node traffic (egress
 *   only: the node is not an endpoint). Node → pod traffic (OUTPUT) is not policed, as in Calico,
 *   where the host always reaches its local workloads (kubelet probes). An endpoint chain accepts conntrack ESTABLISHED/RELATED, drops
 *   INVALID, runs the global tier (its own chain: Allow = mark and return, Deny = DROP,
 *   Pass = RETURN into the Kubernetes tier, Log = count and continue), then the Kubernetes tier
 *   (any rule marks and returns) and finally the tier default.
 *
 * Every policy rule carries its IR rule id as a comment so counters map back to it. With flows on,
 * deciding and Log rules also count what they decide in flow sets (rule-text.ts).
 */
import { defaultRuleId, prefilterRuleId } from '../../ir/rule-ids.js';
import type { Direction, Endpoint, IR, Protocol, Rule, RuleSet } from '../../ir/types.js';
import { flat } from '../../util/intern.js';
import {
  ACCEPT_MARK,
  ALLOW_CHAIN,
  DEFAULT_ALLOW_COMMENT,
  DEFAULT_DENY_COMMENT,
  endpointChain,
  FAMILIES,
  FORWARD_CHAIN,
  FROM_WL_CHAIN,
  INPUT_CHAIN,
  ipsetName,
  PREFILTER_CHAIN,
  quote,
  TO_WL_CHAIN,
  type Family,
} from './names.js';
import type { ChainSpec, SetSpec, TablePlan } from './plan.js';
import { servicePlan } from './render-services.js';
import { renderTableLayout, type TableLayout, type TableRuleSet } from './render-table.js';
import {
  comment,
  conntrackRules,
  decision,
  flowFullChains,
  GOTO_ALLOW,
  line,
  logRules,
  protocolMatch,
  type FlowSets,
} from './rule-text.js';

/** xt_multiport holds 15 ports; a range takes two of them. */
export const MULTIPORT_SLOTS = 15;

const JUMP_COMMENT = `-m comment --comment ${quote('switchyard')}`;
const CLEAR_MARK = `-j MARK --set-xmark 0x0/${ACCEPT_MARK}`;
const IF_MARKED = `-m mark --mark ${ACCEPT_MARK}/${ACCEPT_MARK}`;

/** Port ranges packed into as few multiport matches as fit (a single entry uses the plain match). */
export function portMatches(
  protocol: Protocol,
  ranges: readonly { first: number; last: number }[],
): string[] {
  const chunks: string[][] = [];
  let current: string[] = [];
  let used = 0;
  for (const r of ranges) {
    const entry = r.first === r.last ? `${r.first}` : `${r.first}:${r.last}`;
    const slots = r.first === r.last ? 1 : 2;
    if (used + slots > MULTIPORT_SLOTS) {
      chunks.push(current);
      current = [];
      used = 0;
    }
    current.push(entry);
    used += slots;
  }
  if (current.length) chunks.push(current);
  const proto = protocol.toLowerCase();
  return chunks.map((c) =>
    c.length === 1 ? `-m ${proto} --dport ${c[0]}` : `-m multiport --dports ${c.join(',')}`,
  );
}

export interface RenderOptions {
  /** Aggregate flows in ipsets: what deciding and Log rules decide, and established traffic. Default true. */
  flowLogs?: boolean;
  /** Test hook: elements per flow set (default FLOW_SET_MAXELEM), to see a full set at work. */
  flowSetMaxElem?: number;
  /**
   * Deepest chain level (base chain = 0) a decision table may reach before it is walked instead;
   * default MAX_LEVEL (depth.ts). Lowered by tests to see the fallback on small tables.
   */
  maxLevel?: number;
}

interface RenderContext {
  family: Family;
  sets: ReadonlyMap<string, SetSpec>;
  /** Where flows are counted; undefined when they are off. */
  flows: FlowSets | undefined;
  /** Decision tables of the rule sets that have one (the others are walked). */
  layouts: ReadonlyMap<string, TableLayout>;
  /** Set names asked about while rendering, and whether they existed (see memoEndpointChains). */
  asked?: Map<string, boolean>;
}

/**
 * The set of an IR id in this family, or undefined when the family has no members. IPv4 sets
 * always exist; an IPv6 twin only when the IR set has IPv6 members, so a rule that needs a missing
 * twin can never match in IPv6 and is left out of that table.
 */
function familySet(ctx: RenderContext, irId: string): string | undefined {
  const name = ipsetName(irId, ctx.family);
  const has = ctx.sets.has(name);
  ctx.asked?.set(name, has);
  if (has) return name;
  if (ctx.family === 4) throw new Error(`IR references unknown set ${irId}`);
  return undefined;
}

/**
 * Match strings for one IR rule (several when its ports need more than one multiport), or none;
 * without the comment, which decision() places.
 */
function ruleMatches(ctx: RenderContext, rule: Rule, direction: Direction): string[] {
  const parts: string[] = [];
  if (rule.protocol) parts.push(protocolMatch(rule.protocol, ctx.family));
  const remote = direction === 'ingress' ? 'src' : 'dst';
  if (rule.peerSet !== undefined) {
    const set = familySet(ctx, rule.peerSet);
    if (!set) return [];
    parts.push(`-m set --match-set ${set} ${remote}`);
  }
  if (rule.peerPortSet !== undefined) {
    const set = familySet(ctx, rule.peerPortSet);
    if (!set) return [];
    parts.push(`-m set --match-set ${set} ${remote},dst`);
  }
  const head = parts.join(' ');
  if (rule.ports && rule.protocol && rule.protocol !== 'ICMP') {
    return portMatches(rule.protocol, rule.ports).map((p) => [head, p].filter(Boolean).join(' '));
  }
  return [head];
}

function globalRules(ctx: RenderContext, rule: Rule, match: string): string[] {
  switch (rule.action) {
    case 'allow':
      return decision(ctx.flows, match, rule.id, 'allow', rule.id, GOTO_ALLOW);
    case 'deny':
      return decision(ctx.flows, match, rule.id, 'deny', rule.id, '-j DROP');
    case 'pass':
      return [line(match, comment(rule.id), '-j RETURN')];
    case 'log':
      return logRules(ctx.flows, match, rule.id);
  }
}

/**
 * Neighbour discovery from a pod to its node (never forwarded): without it IPv6 does not work at
 * all, and no policy means to cut it. Router advertisements from pods stay subject to policy.
 */
const ND_RULES = ['router-solicitation', 'neighbour-solicitation', 'neighbour-advertisement'].map(
  (t) => `-p ipv6-icmp -m icmp6 --icmpv6-type ${t} -j ACCEPT`,
);

/** Key of a rule set's table layout in one family. */
function layoutKey(endpoint: string, direction: Direction, family: Family): string {
  return `${endpoint}|${direction}|${family}`;
}

/**
 * Table mode: after conntrack, the endpoint chain goes straight into its decision table, whose
 * every leaf allows (mark and return) or drops. No mark to clear: nothing in the table reads it.
 */
function tableChains(ctx: RenderContext, rs: RuleSet, layout: TableLayout): ChainSpec[] {
  const main = endpointChain(rs.endpoint, rs.direction, 'main');
  const rules = [
    ...conntrackRules(ctx.flows),
    ...(ctx.family === 6 && rs.direction === 'egress' ? ND_RULES : []),
  ];
  return [{ name: main, rules: [...rules, `-g ${layout.root}`] }, ...layout.chains];
}

function endpointChains(ctx: RenderContext, rs: RuleSet): ChainSpec[] {
  const layout = ctx.layouts.get(layoutKey(rs.endpoint, rs.direction, ctx.family));
  if (layout) return tableChains(ctx, rs, layout);
  const main = endpointChain(rs.endpoint, rs.direction, 'main');
  const rules = [
    ...conntrackRules(ctx.flows),
    ...(ctx.family === 6 && rs.direction === 'egress' ? ND_RULES : []),
    CLEAR_MARK,
  ];
  const out: ChainSpec[] = [];
  if (rs.globalRules.length > 0) {
    const global = endpointChain(rs.endpoint, rs.direction, 'global');
    const tier = rs.globalRules.flatMap((r) =>
      ruleMatches(ctx, r, rs.direction).flatMap((m) => globalRules(ctx, r, m)),
    );
    out.push({ name: global, rules: tier });
    rules.push(`-j ${global}`, `${IF_MARKED} -j RETURN`);
  }
  // Kubernetes rules only allow (union semantics): order among them does not matter.
  for (const r of rs.kubernetesRules) {
    for (const m of ruleMatches(ctx, r, rs.direction))
      rules.push(...decision(ctx.flows, m, r.id, 'allow', r.id, GOTO_ALLOW));
  }
  const defaultId = defaultRuleId(rs.endpoint, rs.direction);
  rules.push(
    ...(rs.kubernetesDefault === 'deny'
      ? decision(ctx.flows, '', DEFAULT_DENY_COMMENT, 'deny', defaultId, '-j DROP')
      : decision(ctx.flows, '', DEFAULT_ALLOW_COMMENT, 'allow', defaultId, GOTO_ALLOW)),
  );
  return [{ name: main, rules }, ...out];
}

/** A walked rule set's chains, by what they were rendered from (see memoEndpointChains). */
interface RenderedRuleSet {
  chains: ChainSpec[];
  asked: ReadonlyMap<string, boolean>;
}

/**
 * The chains of each walked rule set, per family and flow setting. The incremental calculation
 * hands an unchanged rule set on as the same object, so a change renders only the rule sets it
 * touched (a label change: one pod's two) and hands the rest on as the same chain objects, which
 * the diff then compares by reference. Besides the rule set, its text depends only on which of the
 * sets it names exist in the family (an IPv6 twin comes and goes with IPv6 members): reused while
 * those answers stand.
 */
const renderedRuleSets = new WeakMap<RuleSet, Map<string, RenderedRuleSet>>();

function memoEndpointChains(ctx: RenderContext, rs: RuleSet): ChainSpec[] {
  // A decision table's chains are built from its layout, rendered anew per plan.
  if (ctx.layouts.has(layoutKey(rs.endpoint, rs.direction, ctx.family))) return endpointChains(ctx, rs);
  const key = `${ctx.family}|${ctx.flows ? 'flows' : ''}`;
  let byKey = renderedRuleSets.get(rs);
  const hit = byKey?.get(key);
  if (hit && [...hit.asked].every(([name, had]) => ctx.sets.has(name) === had)) return hit.chains;
  const asked = new Map<string, boolean>();
  // Kept for as long as the rule set lives: flat strings, not the cons trees the rules are built as.
  const chains = endpointChains({ ...ctx, asked }, rs).map((c) => ({
    name: flat(c.name),
    rules: c.rules.map(flat),
  }));
  if (!byKey) renderedRuleSets.set(rs, (byKey = new Map()));
  byKey.set(key, { chains, asked });
  return chains;
}

function localEndpoints(ir: IR, node: string): Endpoint[] {
  return ir.endpoints.filter((e) => e.node === node).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

function filterTable(ctx: RenderContext, nodeIr: IR, node: string): TablePlan {
  const endpoints = localEndpoints(nodeIr, node);
  const ruleSets = new Map(nodeIr.ruleSets.map((rs) => [`${rs.endpoint}|${rs.direction}`, rs]));
  const chains: ChainSpec[] = [
    {
      name: FORWARD_CHAIN,
      rules: [
        // A mark set anywhere else must never smuggle a packet past policy.
        CLEAR_MARK,
        `-j ${FROM_WL_CHAIN}`,
        `-j ${TO_WL_CHAIN}`,
        `${IF_MARKED} ${comment('policy accepted')} -j ACCEPT`,
      ],
    },
    {
      name: INPUT_CHAIN,
      rules: [CLEAR_MARK, `-j ${FROM_WL_CHAIN}`, `${IF_MARKED} ${comment('policy accepted')} -j ACCEPT`],
    },
    {
      name: FROM_WL_CHAIN,
      rules: endpoints.map(
        (e) => `-i ${e.hostInterface} ${comment(e.id)} -g ${endpointChain(e.id, 'egress', 'main')}`,
      ),
    },
    {
      name: TO_WL_CHAIN,
      rules: endpoints.map(
        (e) => `-o ${e.hostInterface} ${comment(e.id)} -g ${endpointChain(e.id, 'ingress', 'main')}`,
      ),
    },
    { name: ALLOW_CHAIN, rules: [`-j MARK --set-xmark ${ACCEPT_MARK}/${ACCEPT_MARK}`] },
    // Packets whose flow set is full: the same verdicts, counted here as not aggregated.
    ...(ctx.flows ? flowFullChains() : []),
  ];
  for (const e of endpoints) {
    for (const direction of ['egress', 'ingress'] as const) {
      const rs = ruleSets.get(`${e.id}|${direction}`);
      if (!rs) throw new Error(`IR has no ${direction} rule set for local endpoint ${e.id}`);
      chains.push(...memoEndpointChains(ctx, rs));
    }
  }
  const names = new Set<string>();
  for (const c of chains) {
    if (names.has(c.name)) throw new Error(`two endpoints map to chain ${c.name}`);
    names.add(c.name);
  }
  return {
    family: ctx.family,
    table: 'filter',
    chains,
    jumps: [
      { builtin: 'FORWARD', rule: `${JUMP_COMMENT} -j ${FORWARD_CHAIN}` },
      { builtin: 'INPUT', rule: `${JUMP_COMMENT} -j ${INPUT_CHAIN}` },
    ],
  };
}

/**
 * Sources on a deny-list are dropped where they enter from the fabric. Anything entering from one
 * of this node's pod veths (or loopback) did not cross the fabric and returns untouched: the same
 * rule as the evaluator's "pods on the same node are not prefiltered", without depending on how
 * the fabric interface is named.
 */
function rawTable(ctx: RenderContext, nodeIr: IR, node: string): TablePlan | undefined {
  const drops: string[] = [];
  for (const p of nodeIr.prefilters) {
    const set = familySet(ctx, p.set);
    if (set) drops.push(`-m set --match-set ${set} src ${comment(prefilterRuleId(p.name))} -j DROP`);
  }
  if (drops.length === 0) return undefined;
  const rules = [
    '-i lo -j RETURN',
    ...localEndpoints(nodeIr, node).map((e) => `-i ${e.hostInterface} -j RETURN`),
    ...drops,
  ];
  return {
    family: ctx.family,
    table: 'raw',
    chains: [{ name: PREFILTER_CHAIN, rules }],
    jumps: [{ builtin: 'PREROUTING', rule: `${JUMP_COMMENT} -j ${PREFILTER_CHAIN}` }],
  };
}

function flowSetsOf(options: RenderOptions, family: Family): FlowSets | undefined {
  return (options.flowLogs ?? true) ? { family } : undefined;
}

/** The decision tables of the node's rule sets that carry one, per family (see render-table.ts). */
export function tableLayouts(
  nodeIr: IR,
  node: string,
  options: RenderOptions = {},
): Map<string, TableLayout> {
  const local = new Set(localEndpoints(nodeIr, node).map((e) => e.id));
  const out = new Map<string, TableLayout>();
  for (const rs of nodeIr.ruleSets) {
    if (!rs.table || !local.has(rs.endpoint)) continue;
    const withTable: TableRuleSet = { ...rs, table: rs.table };
    for (const family of FAMILIES)
      out.set(
        layoutKey(rs.endpoint, rs.direction, family),
        renderTableLayout(withTable, family, flowSetsOf(options, family)),
      );
  }
  return out;
}

/**
 * Both families: IPv6 is enforced with the same chains over the IPv6 twins of the sets. `sets`
 * are the IR's (walked rule sets and prefilters); `layouts` the decision tables, with their own.
 */
export function renderTables(
  nodeIr: IR,
  node: string,
  sets: readonly SetSpec[],
  options: RenderOptions = {},
  layouts: ReadonlyMap<string, TableLayout> = new Map(),
): TablePlan[] {
  const index = new Map(sets.map((s) => [s.name, s]));
  const out: TablePlan[] = [];
  for (const family of FAMILIES) {
    const ctx: RenderContext = { family, sets: index, flows: flowSetsOf(options, family), layouts };
    const raw = rawTable(ctx, nodeIr, node);
    if (raw) out.push(raw);
    const filter = filterTable(ctx, nodeIr, node);
    // Each family's service tables: IPv4 in iptables, the IPv6 ones (`…/IPv6`) in ip6tables.
    const services = servicePlan(nodeIr, node, family);
    const reject = services.reject;
    // Its jumps come last so they are inserted last, i.e. first in the chain: SY-FORWARD accepts
    // what policy marked, and a packet to a VIP must be rejected before that.
    if (reject)
      out.push({
        ...filter,
        chains: [...filter.chains, reject.chain],
        jumps: [...filter.jumps, ...reject.jumps],
      });
    else out.push(filter);
    const nat = services.nat;
    if (nat) out.push(nat);
  }
  return out;
}
