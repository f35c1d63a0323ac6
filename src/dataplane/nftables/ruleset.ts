/**
 * One node's slice of the IR → the objects of `table inet switchyard` (sets, verdict maps, chains
 * with their rules as nft text). Pure. Both the full script and the incremental diff are printed
 * from this one structure, so what `compile` shows and what an update installs cannot drift apart.
 */
import { defaultRuleId, prefilterRuleId } from '../../ir/rule-ids.js';
import type { Direction, Endpoint, IR, IpPortSet, IpSet, Prefilter, Rule, RuleSet } from '../../ir/types.js';
import { serviceObjects, type ServiceObjects } from './services.js';
import { externalAddressOf } from '../netfilter/service-view.js';
import { LastMemo } from '../../util/last-memo.js';
import {
  dispatchMap,
  ESTABLISHED_RULE_ID,
  familySet,
  FLOW_TRAFFIC_CHAIN,
  FORWARD_CHAIN,
  INPUT_CHAIN,
  INVALID_RULE_ID,
  kubernetesChain,
  PREFILTER_CHAIN,
  quoted,
  safeName,
  tierChain,
  WORKLOAD_IFACES_SET,
  type Family,
} from './names.js';
import { flatChain, flatSet, flattenChains, type NftChain, type NftRuleset, type NftSet } from './objects.js';
import { decisions, withMatch, type Decisions } from './decision.js';
import { tableObjects } from './table.js';

const L4: Record<'TCP' | 'UDP' | 'SCTP', string> = { TCP: 'tcp', UDP: 'udp', SCTP: 'sctp' };

function familyOf(address: string): Family {
  return address.includes(':') ? 'v6' : 'v4';
}

/** Families an IR set needs nft sets for: IPv4 always (so a rule's shape does not depend on membership), IPv6 when present. */
function familiesOf(addresses: readonly string[]): Family[] {
  return addresses.some((a) => familyOf(a) === 'v6') ? ['v4', 'v6'] : ['v4'];
}

const ADDR_TYPE: Record<Family, string> = { v4: 'ipv4_addr', v6: 'ipv6_addr' };
const ADDR_MATCH: Record<Family, string> = { v4: 'ip', v6: 'ip6' };

class RuleRenderer {
  private readonly ipFamilies = new Map<string, Family[]>();
  private readonly portFamilies = new Map<string, Family[]>();

  constructor(ipSets: readonly IpSet[], portSets: readonly IpPortSet[]) {
    for (const s of ipSets) this.ipFamilies.set(s.id, familiesOf(s.cidrs));
    for (const s of portSets) this.portFamilies.set(s.id, familiesOf(s.members.map((m) => m.address)));
  }

  private families(map: Map<string, Family[]>, id: string): Family[] {
    const f = map.get(id);
    if (!f) throw new Error(`IR references unknown set ${id}`);
    return f;
  }

  /**
   * The match part of one IR rule, one text per address family it needs. A rule without address
   * sets matches both families in one nft rule (the inet table sees IPv4 and IPv6 alike); a rule
   * with sets becomes one nft rule per family, all with the same comment so counters add up.
   */
  matches(rule: Rule, direction: Direction): string[] {
    const remote = direction === 'egress' ? 'daddr' : 'saddr';
    let families: (Family | 'any')[] = ['any'];
    if (rule.peerSet !== undefined || rule.peerPortSet !== undefined) {
      const sets = [
        ...(rule.peerSet !== undefined ? [this.families(this.ipFamilies, rule.peerSet)] : []),
        ...(rule.peerPortSet !== undefined ? [this.families(this.portFamilies, rule.peerPortSet)] : []),
      ];
      families = (['v4', 'v6'] as const).filter((f) => sets.every((s) => s.includes(f)));
    }
    return families.map((family) => {
      const parts: string[] = [];
      if (rule.protocol === 'ICMP') {
        parts.push(
          family === 'v4'
            ? 'meta l4proto icmp'
            : family === 'v6'
              ? 'meta l4proto ipv6-icmp'
              : 'meta l4proto { icmp, ipv6-icmp }',
        );
      } else if (rule.protocol !== undefined) parts.push(`meta l4proto ${L4[rule.protocol]}`);
      if (rule.ports !== undefined) {
        const ports = rule.ports.map((p) => (p.first === p.last ? `${p.first}` : `${p.first}-${p.last}`));
        parts.push(`th dport ${ports.length === 1 ? ports[0] : `{ ${ports.join(', ')} }`}`);
      }
      if (family !== 'any') {
        if (rule.peerSet !== undefined)
          parts.push(`${ADDR_MATCH[family]} ${remote} @${familySet(rule.peerSet, family)}`);
        if (rule.peerPortSet !== undefined)
          parts.push(`${ADDR_MATCH[family]} ${remote} . th dport @${familySet(rule.peerPortSet, family)}`);
      }
      return parts.join(' ');
    });
  }
}

export interface RulesetOptions {
  /** Record every decision and the established traffic in the flow sets (decision.ts). Default true. */
  flowLogs?: boolean;
  /** Elements per flow set; default FLOW_SET_SIZE. */
  flowSetSize?: number;
}

/** The global tier: `allow` returns to the base chain (the other side's chain still runs), `pass` and falling off go to the Kubernetes tier. */
function globalTier(rs: RuleSet, ep: Endpoint, r: RuleRenderer, d: Decisions): NftChain {
  const k8s = kubernetesChain(rs.direction, ep.hostInterface);
  const rules: string[] = [];
  for (const rule of rs.globalRules) {
    if (rule.action === 'allow' || rule.action === 'deny') {
      for (const m of r.matches(rule, rs.direction)) rules.push(...d.decide(m, rule.action, rule.id));
      continue;
    }
    for (const m of r.matches(rule, rs.direction))
      rules.push(
        ...(rule.action === 'pass'
          ? [withMatch(m, `counter goto ${k8s} comment ${quoted(rule.id)}`)]
          : d.log(m, rule.id)),
      );
  }
  rules.push(`counter goto ${k8s}`);
  return {
    name: tierChain(rs.direction, ep.hostInterface),
    spec: '',
    base: false,
    rules,
    note: `${ep.id} ${rs.direction}: global tier, policies: ${rs.globalPolicies.length}`,
  };
}

/** The Kubernetes tier: any match allows (`return`), then the default, counted under `<endpoint>/<direction>/default`. */
function kubernetesTier(rs: RuleSet, ep: Endpoint, r: RuleRenderer, d: Decisions): NftChain {
  const rules: string[] = [];
  for (const rule of rs.kubernetesRules) {
    for (const m of r.matches(rule, rs.direction)) rules.push(...d.decide(m, 'allow', rule.id));
  }
  // The default allow needs no verdict: the chain's end returns to the base chain all the same.
  rules.push(...d.decide('', rs.kubernetesDefault, defaultRuleId(ep.id, rs.direction), ''));
  return {
    name: kubernetesChain(rs.direction, ep.hostInterface),
    spec: '',
    base: false,
    rules,
    note: `${ep.id} ${rs.direction}: Kubernetes tier, policies: ${rs.kubernetesPolicies.length}, default ${rs.kubernetesDefault}`,
  };
}

/**
 * The nft sets of each IR set, kept by the IR object: an incremental IR hands an unchanged set as
 * the same object, so its sets come with the same element arrays and the diff skips them by
 * identity. Each call gets its own set objects (callers may change them), sharing the arrays.
 */
const renderedSets = new WeakMap<IpSet | IpPortSet, readonly NftSet[]>();

function memoized<S extends IpSet | IpPortSet>(s: S, render: (s: S) => NftSet[]): NftSet[] {
  let sets = renderedSets.get(s);
  if (!sets) renderedSets.set(s, (sets = render(s).map(flatSet)));
  return sets.map((set) => ({ ...set }));
}

function ipSetObjects(s: IpSet): NftSet[] {
  return familiesOf(s.cidrs).map((family) => ({
    kind: 'set',
    name: familySet(s.id, family),
    spec: `{ type ${ADDR_TYPE[family]}; flags interval; }`,
    elements: s.cidrs.filter((c) => familyOf(c) === family),
    note: `${s.id}: ${s.description}`,
  }));
}

function ipPortSetObjects(s: IpPortSet): NftSet[] {
  return familiesOf(s.members.map((m) => m.address)).map((family) => ({
    kind: 'set',
    name: familySet(s.id, family),
    spec: `{ type ${ADDR_TYPE[family]} . inet_service; }`,
    elements: s.members.filter((m) => familyOf(m.address) === family).map((m) => `${m.address} . ${m.port}`),
    note: `${s.id}: ${s.description} (${s.protocol})`,
  }));
}

function addressSets(ir: IR): NftSet[] {
  const out: NftSet[] = [];
  for (const s of ir.ipSets) out.push(...memoized(s, ipSetObjects));
  for (const s of ir.ipPortSets) out.push(...memoized(s, ipPortSetObjects));
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

function baseChain(name: string, hook: string, priority: string, rules: string[], note: string): NftChain {
  return {
    name,
    spec: `{ type filter hook ${hook} priority ${priority}; policy accept; }`,
    base: true,
    rules,
    note,
  };
}

/**
 * Each local endpoint's chains (the rule walk, or its decision table when the IR carries one), the
 * decision tables' maps, its dispatch entries, and the sets its walked rules name.
 */
function endpointChains(
  ir: IR,
  local: readonly Endpoint[],
  d: Decisions,
): { chains: NftChain[]; maps: NftSet[]; dispatch: Record<Direction, string[]>; used: Set<string> } {
  const byId = new Map(local.map((e) => [e.id, e]));
  const renderer = new RuleRenderer(ir.ipSets, ir.ipPortSets);
  const used = new Set<string>();
  const chains: NftChain[] = [];
  const maps: NftSet[] = [];
  const dispatch: Record<Direction, string[]> = { egress: [], ingress: [] };
  for (const rs of ir.ruleSets) {
    const ep = byId.get(rs.endpoint);
    if (!ep) continue;
    dispatch[rs.direction].push(
      `${quoted(safeName(ep.hostInterface))} : jump ${tierChain(rs.direction, ep.hostInterface)}`,
    );
    if (rs.table) {
      // The table resolved every set and port set already: none of them is needed here.
      const objects = tableObjects(rs.table, ep, d);
      chains.push(...objects.chains);
      maps.push(...objects.maps);
      continue;
    }
    for (const rule of [...rs.globalRules, ...rs.kubernetesRules]) {
      if (rule.peerSet !== undefined) used.add(rule.peerSet);
      if (rule.peerPortSet !== undefined) used.add(rule.peerPortSet);
    }
    chains.push(globalTier(rs, ep, renderer, d), kubernetesTier(rs, ep, renderer, d));
  }
  return { chains, maps, dispatch, used };
}

function dispatchMaps(dispatch: Record<Direction, string[]>): NftSet[] {
  return (['egress', 'ingress'] as const).map((direction) => ({
    kind: 'map',
    name: dispatchMap(direction),
    spec: '{ type ifname : verdict; }',
    elements: dispatch[direction].sort(),
    note: `${direction === 'egress' ? 'iifname' : 'oifname'} → the endpoint's ${direction} chain`,
  }));
}

/** The raw-table chain dropping deny-listed sources from the fabric, before conntrack. */
function prefilterChain(prefilters: readonly Prefilter[], sets: readonly NftSet[]): NftChain {
  const rules = [`iifname "lo" counter return`, `iifname @${WORKLOAD_IFACES_SET} counter return`];
  const setNames = new Set(sets.map((s) => s.name));
  for (const p of prefilters) {
    for (const family of ['v4', 'v6'] as const) {
      const name = familySet(p.set, family);
      if (setNames.has(name))
        rules.push(
          `${ADDR_MATCH[family]} saddr @${name} counter drop comment ${quoted(prefilterRuleId(p.name))}`,
        );
    }
  }
  return baseChain(
    PREFILTER_CHAIN,
    'prerouting',
    'raw',
    rules,
    'prefilter: deny-listed sources from the fabric, before conntrack',
  );
}

/**
 * The input and forward base chains: conntrack first, then the endpoints' dispatch maps. With flow
 * logs, established packets in their original direction are recorded (and accepted) by the
 * traffic chain; replies and related packets are accepted as they are.
 */
function filterChains(flowLogs: boolean): NftChain[] {
  const established = [
    ...(flowLogs
      ? [
          `ct state established ct direction original counter goto ${FLOW_TRAFFIC_CHAIN} comment ${quoted(ESTABLISHED_RULE_ID)}`,
        ]
      : []),
    `ct state established,related counter accept comment ${quoted(ESTABLISHED_RULE_ID)}`,
    `ct state invalid counter drop comment ${quoted(INVALID_RULE_ID)}`,
  ];
  return [
    baseChain(
      INPUT_CHAIN,
      'input',
      'filter',
      [
        `iifname != @${WORKLOAD_IFACES_SET} counter return`,
        ...established,
        // Neighbour discovery is what makes IPv6 work at all; no policy can mean to cut it.
        'icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } counter accept',
        `counter iifname vmap @${dispatchMap('egress')}`,
      ],
      'pods talking to the node itself: their egress rules',
    ),
    baseChain(
      FORWARD_CHAIN,
      'forward',
      'filter',
      [
        ...established,
        `counter iifname vmap @${dispatchMap('egress')}`,
        `counter oifname vmap @${dispatchMap('ingress')}`,
      ],
      'pod traffic: egress of the sending pod, then ingress of the receiving pod',
    ),
  ];
}

/**
 * The service objects of the last IR service list rendered, per node and external address: an
 * incremental IR hands unchanged services as the same array, and 10k services render to ~12k
 * chains that a label change would otherwise render and compare again (hundreds of ms). Only the
 * last list is kept (LastMemo says why). Shared, never changed.
 */
const renderedServices = new LastMemo<IR['services'], ServiceObjects>();

function servicesOf(ir: IR, node: string): ServiceObjects {
  const key = `${node}\0${externalAddressOf(ir, node) ?? ''}`;
  return renderedServices.get(key, ir.services, () => {
    const rendered = serviceObjects(ir, node);
    return {
      sets: rendered.sets.map(flatSet),
      maps: rendered.maps.map(flatSet),
      chains: rendered.chains.map(flatChain),
    };
  });
}

/**
 * Builds the node's ruleset from `ir` (whole or already sliced with irForNode). Endpoints of other
 * nodes contribute only set members; nothing outside pod veths and the fabric prefilter is touched.
 */
export function buildRuleset(ir: IR, node: string, options: RulesetOptions = {}): NftRuleset {
  const flowLogs = options.flowLogs ?? true;
  const local = ir.endpoints.filter((e) => e.node === node);
  const d = decisions({
    flowLogs,
    ...(options.flowSetSize !== undefined ? { flowSetSize: options.flowSetSize } : {}),
  });
  const { chains, maps, dispatch, used } = endpointChains(ir, local, d);
  const flows = d.objects();
  chains.push(...flows.chains);

  const prefilters = ir.prefilters.filter((p) => p.nodes.includes(node));
  for (const p of prefilters) used.add(p.set);
  const sets = addressSets({
    ...ir,
    ipSets: ir.ipSets.filter((s) => used.has(s.id)),
    ipPortSets: ir.ipPortSets.filter((s) => used.has(s.id)),
  });
  sets.push({
    kind: 'set',
    name: WORKLOAD_IFACES_SET,
    spec: '{ type ifname; }',
    elements: local.map((e) => quoted(safeName(e.hostInterface))).sort(),
    note: 'host-side pod veths of this node',
  });
  sets.push(...flows.sets);

  if (prefilters.length > 0) chains.push(prefilterChain(prefilters, sets));
  chains.push(...filterChains(flowLogs));
  flattenChains(chains);
  const services = servicesOf(ir, node);
  const regular = [...chains.filter((c) => !c.base), ...services.chains.filter((c) => !c.base)];
  const base = [...chains.filter((c) => c.base), ...services.chains.filter((c) => c.base)];
  return {
    node,
    sets: [...sets, ...services.sets],
    maps: [...dispatchMaps(dispatch), ...maps, ...services.maps],
    chains: [...regular, ...base],
  };
}
