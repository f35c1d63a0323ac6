/**
 * One policy rule → IR rules for one endpoint and direction. A rule whose ports span several
 * protocols, or mix numbers with names, becomes several IR rules with the same action and origin:
 * matching any of them is matching the original rule.
 */
import type { Direction, Endpoint, PolicyRef, PortRange, Protocol, Rule, RuleAction } from '../ir/types.js';
import type { Peer, PolicyPort } from '../model/types.js';
import { policyId } from '../ir/types.js';
import type { SetResolver } from './sets.js';

export interface SourceRule {
  policy: PolicyRef;
  direction: Direction;
  ruleIndex: number;
  action: RuleAction;
  peers?: Peer[];
  ports?: PolicyPort[];
  /** GlobalPolicy `protocol`; NetworkPolicy rules have none. */
  protocol?: Protocol;
  /** Scope of a bare podSelector (NetworkPolicy namespace). */
  policyNamespace?: string;
}

type PortProtocol = PolicyPort['protocol'];

export function translateRule(src: SourceRule, endpoint: Endpoint, sets: SetResolver): Rule[] {
  const base = `${policyId(src.policy)}/${src.direction}/${src.ruleIndex}`;
  const peer = src.peers ? sets.peerSet(src.peers, src.policyNamespace) : undefined;
  const common = {
    policy: src.policy,
    ruleIndex: src.ruleIndex,
    action: src.action,
    ...(peer ? { peerSet: peer.id } : {}),
  };
  const parts: Omit<Rule, 'id'>[] = [];

  if (!src.ports) {
    parts.push({ ...common, ...(src.protocol ? { protocol: src.protocol } : {}) });
  } else {
    const byProtocol = new Map<PortProtocol, PolicyPort[]>();
    for (const p of src.ports) byProtocol.set(p.protocol, [...(byProtocol.get(p.protocol) ?? []), p]);
    for (const [protocol, ports] of byProtocol) {
      if (ports.some((p) => p.port === undefined)) {
        parts.push({ ...common, protocol });
        continue;
      }
      const ranges: PortRange[] = [];
      const names: string[] = [];
      for (const p of ports) {
        if (typeof p.port === 'number') ranges.push({ first: p.port, last: p.endPort ?? p.port });
        else if (src.direction === 'ingress') {
          // Ingress: the destination is this endpoint, so the name resolves here, once.
          const own = endpoint.ports.find((ep) => ep.name === p.port && ep.protocol === protocol);
          if (own) ranges.push({ first: own.port, last: own.port });
        } else names.push(p.port as string);
      }
      if (ranges.length > 0) parts.push({ ...common, protocol, ports: mergeRanges(ranges) });
      if (names.length > 0) {
        const portSet = sets.namedPortSet(peer?.id, peer?.cidrs, protocol, names);
        parts.push({ ...common, protocol, peerPortSet: portSet });
      }
    }
  }
  return parts.map((r, i) => ({ id: parts.length === 1 ? base : `${base}.${i}`, ...r }));
}

function mergeRanges(ranges: PortRange[]): PortRange[] {
  const sorted = [...ranges].sort((a, b) => a.first - b.first);
  const out: PortRange[] = [];
  for (const r of sorted) {
    const last = out[out.length - 1];
    if (last && r.first <= last.last + 1) last.last = Math.max(last.last, r.last);
    else out.push({ ...r });
  }
  return out;
}
