/**
 * Peers → exact address sets, deduplicated by definition. A set's id comes from what defines it
 * (selectors, blocks, the policy namespace), not from its members, so a label change that alters
 * membership updates the set in place instead of renaming it.
 */
import { createHash } from 'node:crypto';
import type { Endpoint, IpPortSet, IpSet } from '../ir/types.js';
import type { Peer } from '../model/types.js';
import {
  cidrContains,
  cidrSetDifference,
  cidrUnion,
  formatCidr,
  hostCidr,
  normalizeCidrList,
  parseAddress,
  parseCidr,
  type Address,
  type Cidr,
} from '../util/ip.js';
import { selectorMatches, selectorText } from './selectors.js';

const UNIVERSE: Cidr[] = [parseCidr('0.0.0.0/0') as Cidr, parseCidr('::/0') as Cidr];

function cidrs(list: readonly string[]): Cidr[] {
  return list.map((c) => parseCidr(c) as Cidr);
}

function intersect(a: Cidr[], b: Cidr[]): Cidr[] {
  return cidrSetDifference(a, cidrSetDifference(a, b));
}

export function setId(definition: string, prefix = 'sy-'): string {
  return prefix + createHash('sha256').update(definition).digest('hex').slice(0, 12);
}

/** Whether a peer's selectors pick `ep`; `policyNamespace` scopes a bare podSelector (NetworkPolicy). */
export function peerSelects(peer: Peer, ep: Endpoint, policyNamespace?: string): boolean {
  if (peer.namespaceSelector) {
    if (!selectorMatches(peer.namespaceSelector, ep.namespaceLabels)) return false;
  } else if (policyNamespace !== undefined && ep.namespace !== policyNamespace) return false;
  return !peer.podSelector || selectorMatches(peer.podSelector, ep.labels);
}

function selectedEndpoints(peer: Peer, endpoints: readonly Endpoint[], policyNamespace?: string): Endpoint[] {
  return endpoints.filter((ep) => peerSelects(peer, ep, policyNamespace));
}

/** The exact addresses one peer stands for: its fields ANDed, notNets removed. */
export function peerCidrs(peer: Peer, endpoints: readonly Endpoint[], policyNamespace?: string): Cidr[] {
  const constraints: Cidr[][] = [];
  if (peer.podSelector || peer.namespaceSelector) {
    const addrs = selectedEndpoints(peer, endpoints, policyNamespace).flatMap((ep) => ep.addresses);
    constraints.push(cidrUnion(addrs.map((a) => hostCidr(parseAddress(a) as Address))));
  }
  if (peer.ipBlock)
    constraints.push(cidrSetDifference(cidrs([peer.ipBlock.cidr]), cidrs(peer.ipBlock.except)));
  if (peer.nets) constraints.push(cidrUnion(cidrs(peer.nets)));
  let result = constraints.length === 0 ? UNIVERSE : (constraints[0] as Cidr[]);
  for (const c of constraints.slice(1)) result = intersect(result, c);
  if (peer.notNets) result = cidrSetDifference(result, cidrs(peer.notNets));
  return result;
}

export function peerDescription(peer: Peer, policyNamespace?: string): string {
  const parts: string[] = [];
  if (peer.podSelector || peer.namespaceSelector) {
    const pods = `pods ${peer.podSelector ? selectorText(peer.podSelector) : '{}'}`;
    const ns = peer.namespaceSelector
      ? ` in namespaces ${selectorText(peer.namespaceSelector)}`
      : policyNamespace !== undefined
        ? ` in namespace ${policyNamespace}`
        : '';
    parts.push(pods + ns);
  }
  if (peer.ipBlock)
    parts.push(
      `ipBlock ${peer.ipBlock.cidr}${peer.ipBlock.except.length ? ` except ${peer.ipBlock.except.join(',')}` : ''}`,
    );
  if (peer.nets) parts.push(`nets ${peer.nets.join(',')}`);
  if (peer.notNets) parts.push(`notNets ${peer.notNets.join(',')}`);
  return parts.join(' and ');
}

/** How rules name their sets: the full build's registry, or the incremental calculation's. */
export interface SetResolver {
  peerSet(peers: readonly Peer[], policyNamespace?: string): { id: string; cidrs: Cidr[] };
  namedPortSet(
    peerSetId: string | undefined,
    peerCidrList: readonly Cidr[] | undefined,
    protocol: IpPortSet['protocol'],
    names: readonly string[],
  ): string;
}

/** Collects the sets rules reference; identical definitions share one set. */
export class SetRegistry implements SetResolver {
  private readonly ipSets = new Map<string, IpSet>();
  private readonly portSets = new Map<string, IpPortSet>();
  /** Members of the peer sets as parsed prefixes, by set id. */
  private readonly peerMembers = new Map<string, Cidr[]>();
  /** Ids of the named-port sets by definition (hashing it is the costly part of a repeat). */
  private readonly portSetIds = new Map<string, string>();
  /**
   * Peer lists already resolved, by identity and policy namespace: every endpoint a policy
   * selects asks for the same lists, and the definition's JSON and hash need computing once.
   */
  private readonly resolved = new WeakMap<
    readonly Peer[],
    Map<string | undefined, { id: string; cidrs: Cidr[] }>
  >();

  constructor(private readonly endpoints: readonly Endpoint[]) {}

  /** Set of addresses matching any of `peers`. The returned prefixes are shared: do not modify them. */
  peerSet(peers: readonly Peer[], policyNamespace?: string): { id: string; cidrs: Cidr[] } {
    let byNamespace = this.resolved.get(peers);
    if (!byNamespace) this.resolved.set(peers, (byNamespace = new Map()));
    const known = byNamespace.get(policyNamespace);
    if (known) return known;
    const definition = JSON.stringify({ peers, ns: scopeOf(peers, policyNamespace) });
    const id = setId(definition);
    let members = this.peerMembers.get(id);
    if (!members) {
      members = cidrUnion(peers.flatMap((p) => peerCidrs(p, this.endpoints, policyNamespace)));
      this.peerMembers.set(id, members);
      this.ipSets.set(id, {
        id,
        description: peers.map((p) => peerDescription(p, policyNamespace)).join(' | '),
        cidrs: members.map(formatCidr),
      });
    }
    const result = { id, cidrs: members };
    byNamespace.set(policyNamespace, result);
    return result;
  }

  /**
   * (address, port) of every pod inside `peerCidrs` (any pod when undefined) that exposes one of
   * `names` on `protocol`: how egress to a named port resolves per destination pod.
   */
  namedPortSet(
    peerSetId: string | undefined,
    peerCidrList: readonly Cidr[] | undefined,
    protocol: IpPortSet['protocol'],
    names: readonly string[],
  ): string {
    const { definition, names: sortedNames } = portSetDefinition(peerSetId, protocol, names);
    const known = this.portSetIds.get(definition);
    if (known !== undefined) return known;
    const id = setId(definition, 'sy-p');
    this.portSetIds.set(definition, id);
    if (this.portSets.has(id)) return id;
    this.portSets.set(id, {
      id,
      description: portSetDescription(peerSetId, protocol, sortedNames),
      protocol,
      members: namedPortMembers(this.endpoints, peerCidrList, protocol, sortedNames),
    });
    return id;
  }

  /** A set defined directly by CIDRs (prefilters). */
  cidrSet(id: string, description: string, list: readonly string[]): string {
    this.ipSets.set(id, { id, description, cidrs: normalizeCidrList(list) });
    return id;
  }

  allIpSets(): IpSet[] {
    return [...this.ipSets.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
  }

  allPortSets(): IpPortSet[] {
    return [...this.portSets.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
  }
}

/** What defines a named-port set (its id is the hash of `definition`), names sorted. */
export function portSetDefinition(
  peerSetId: string | undefined,
  protocol: IpPortSet['protocol'],
  names: readonly string[],
): { definition: string; names: string[] } {
  const sorted = [...new Set(names)].sort();
  return {
    definition: JSON.stringify({ peerSetId: peerSetId ?? '*', protocol, names: sorted }),
    names: sorted,
  };
}

export function portSetDescription(
  peerSetId: string | undefined,
  protocol: IpPortSet['protocol'],
  sortedNames: readonly string[],
): string {
  return `${protocol} ports named ${sortedNames.join(',')} of ${peerSetId ?? 'any pod'}`;
}

/**
 * (address, port) of every pod in `endpoints` inside `peerCidrList` (any pod when undefined) that
 * exposes one of `names` on `protocol`, sorted by address then port.
 */
export function namedPortMembers(
  endpoints: Iterable<Endpoint>,
  peerCidrList: readonly Cidr[] | undefined,
  protocol: IpPortSet['protocol'],
  names: readonly string[],
): IpPortSet['members'] {
  const members: IpPortSet['members'] = [];
  for (const ep of endpoints) {
    for (const address of ep.addresses) {
      const a = parseAddress(address) as Address;
      if (peerCidrList && !peerCidrList.some((c) => cidrContains(c, a))) continue;
      for (const p of ep.ports) {
        if (p.protocol === protocol && p.name !== undefined && names.includes(p.name))
          members.push({ address, port: p.port });
      }
    }
  }
  members.sort((x, y) => (x.address < y.address ? -1 : x.address > y.address ? 1 : x.port - y.port));
  return members;
}

/** A bare podSelector is scoped to the policy's namespace; other peers are not. */
export function scopeOf(peers: readonly Peer[], policyNamespace?: string): string | undefined {
  return peers.some((p) => p.podSelector && !p.namespaceSelector) ? policyNamespace : undefined;
}
