/**
 * The IP sets and IP-port sets of the incremental calculation, kept up to date as endpoints
 * change. Each peer set remembers, per peer with selectors, which endpoints its selectors pick:
 * an endpoint change re-evaluates the live sets' selectors against that one endpoint and marks
 * the sets it enters, leaves or moves in (new addresses); only those are recomputed, from their
 * members alone. Ids and contents equal SetRegistry's (calc/sets.ts): same definitions, same code.
 */
import { isDeepStrictEqual } from 'node:util';
import type { Endpoint, IpPortSet, IpSet } from '../../ir/types.js';
import type { Peer } from '../../model/types.js';
import { cidrUnion, formatCidr, type Cidr } from '../../util/ip.js';
import { selectorMatches } from '../selectors.js';
import {
  namedPortMembers,
  peerCidrs,
  peerDescription,
  peerSelects,
  portSetDefinition,
  portSetDescription,
  scopeOf,
  setId,
  type SetResolver,
} from '../sets.js';

interface PeerSetDef {
  id: string;
  peers: readonly Peer[];
  policyNamespace: string | undefined;
  /** Per peer: the endpoints its selectors pick, or undefined when it has no selector. */
  selected: (Set<string> | undefined)[];
  cidrs: Cidr[];
  set: IpSet;
}

interface PortSetDef {
  peerSetId: string | undefined;
  protocol: IpPortSet['protocol'];
  names: string[];
  set: IpPortSet;
}

export class IncrementalSets implements SetResolver {
  private readonly peerSets = new Map<string, PeerSetDef>();
  private readonly portSets = new Map<string, PortSetDef>();
  /** Port-set ids by definition (hashing it is the costly part of a repeat). */
  private readonly portSetIds = new Map<string, string>();
  /** Peer lists already named, by identity and policy namespace (policy objects live long). */
  private readonly named = new WeakMap<readonly Peer[], Map<string | undefined, string>>();
  private readonly dirtyPeerSets = new Set<string>();
  private readonly dirtyPortSets = new Set<string>();

  /**
   * `endpoints` is the calculation's live map, `byNamespace` its index of endpoint ids by
   * namespace: sets read them when they are made or recomputed.
   */
  constructor(
    private readonly endpoints: ReadonlyMap<string, Endpoint>,
    private readonly byNamespace: ReadonlyMap<string, ReadonlySet<string>>,
  ) {}

  peerSet(peers: readonly Peer[], policyNamespace?: string): { id: string; cidrs: Cidr[] } {
    let byNamespace = this.named.get(peers);
    if (!byNamespace) this.named.set(peers, (byNamespace = new Map()));
    let id = byNamespace.get(policyNamespace);
    if (id === undefined) {
      id = setId(JSON.stringify({ peers, ns: scopeOf(peers, policyNamespace) }));
      byNamespace.set(policyNamespace, id);
    }
    let def = this.peerSets.get(id);
    if (!def) {
      const selected = peers.map((p) =>
        p.podSelector || p.namespaceSelector
          ? new Set(
              this.candidates(p, policyNamespace)
                .filter((ep) => peerSelects(p, ep, policyNamespace))
                .map((ep) => ep.id),
            )
          : undefined,
      );
      const cidrs = this.cidrsOf(peers, selected, policyNamespace);
      def = {
        id,
        peers,
        policyNamespace,
        selected,
        cidrs,
        set: {
          id,
          description: peers.map((p) => peerDescription(p, policyNamespace)).join(' | '),
          cidrs: cidrs.map(formatCidr),
        },
      };
      this.peerSets.set(id, def);
    }
    return { id, cidrs: def.cidrs };
  }

  namedPortSet(
    peerSetId: string | undefined,
    _peerCidrList: readonly Cidr[] | undefined,
    protocol: IpPortSet['protocol'],
    names: readonly string[],
  ): string {
    const { definition, names: sortedNames } = portSetDefinition(peerSetId, protocol, names);
    let id = this.portSetIds.get(definition);
    if (id === undefined) this.portSetIds.set(definition, (id = setId(definition, 'sy-p')));
    if (!this.portSets.has(id)) {
      const def: PortSetDef = {
        peerSetId,
        protocol,
        names: sortedNames,
        set: {
          id,
          description: portSetDescription(peerSetId, protocol, sortedNames),
          protocol,
          members: [],
        },
      };
      def.set.members = this.membersOf(def);
      this.portSets.set(id, def);
    }
    return id;
  }

  ipSet(id: string): IpSet | undefined {
    return this.peerSets.get(id)?.set;
  }

  ipPortSet(id: string): IpPortSet | undefined {
    return this.portSets.get(id)?.set;
  }

  /** An endpoint was added (`before` undefined), changed or removed (`after` undefined). */
  endpointChanged(before: Endpoint | undefined, after: Endpoint | undefined): void {
    const id = (before ?? after)?.id as string;
    const moved = !before || !after || !isDeepStrictEqual(before.addresses, after.addresses);
    for (const def of this.peerSets.values()) {
      def.peers.forEach((peer, i) => {
        const selected = def.selected[i];
        if (!selected) return;
        const was = selected.has(id);
        const is = after !== undefined && peerSelects(peer, after, def.policyNamespace);
        if (is) selected.add(id);
        else selected.delete(id);
        if (was !== is || (is && moved)) this.dirtyPeerSets.add(def.id);
      });
    }
    for (const [portSetId, def] of this.portSets)
      if (hasNamedPort(before, def) || hasNamedPort(after, def)) this.dirtyPortSets.add(portSetId);
  }

  /** Drops the sets not in `keepPeer`/`keepPort` (nothing requests them any more). */
  retainOnly(keepPeer: ReadonlySet<string>, keepPort: ReadonlySet<string>): void {
    for (const id of this.peerSets.keys()) if (!keepPeer.has(id)) this.peerSets.delete(id);
    for (const id of this.portSets.keys()) if (!keepPort.has(id)) this.portSets.delete(id);
  }

  /**
   * Recomputes the sets marked since the last refresh; returns the ids whose set object was
   * replaced (members differ). An unchanged set keeps its object.
   */
  refresh(): { ipSets: Set<string>; ipPortSets: Set<string> } {
    const ipSets = new Set<string>();
    for (const id of this.dirtyPeerSets) {
      const def = this.peerSets.get(id);
      if (!def) continue;
      const cidrs = this.cidrsOf(def.peers, def.selected, def.policyNamespace);
      const text = cidrs.map(formatCidr);
      if (isDeepStrictEqual(text, def.set.cidrs)) continue;
      def.cidrs = cidrs;
      def.set = { ...def.set, cidrs: text };
      ipSets.add(id);
    }
    this.dirtyPeerSets.clear();
    for (const [id, def] of this.portSets)
      if (def.peerSetId !== undefined && ipSets.has(def.peerSetId)) this.dirtyPortSets.add(id);
    const ipPortSets = new Set<string>();
    for (const id of this.dirtyPortSets) {
      const def = this.portSets.get(id);
      if (!def) continue;
      const members = this.membersOf(def);
      if (isDeepStrictEqual(members, def.set.members)) continue;
      def.set = { ...def.set, members };
      ipPortSets.add(id);
    }
    this.dirtyPortSets.clear();
    return { ipSets, ipPortSets };
  }

  /**
   * Endpoints a peer's selectors can pick: those of the namespaces its namespaceSelector matches
   * (all endpoints of a namespace share its labels), or of the policy's namespace, else all.
   */
  private candidates(peer: Peer, policyNamespace: string | undefined): Endpoint[] {
    const of = (ids: Iterable<string>): Endpoint[] =>
      [...ids].map((id) => this.endpoints.get(id) as Endpoint);
    const nsSelector = peer.namespaceSelector;
    if (nsSelector) {
      return [...this.byNamespace.values()].flatMap((ids) => {
        const first = ids.values().next().value;
        const labels = first === undefined ? undefined : this.endpoints.get(first)?.namespaceLabels;
        return labels && selectorMatches(nsSelector, labels) ? of(ids) : [];
      });
    }
    if (policyNamespace !== undefined) return of(this.byNamespace.get(policyNamespace) ?? []);
    return [...this.endpoints.values()];
  }

  private cidrsOf(
    peers: readonly Peer[],
    selected: readonly (Set<string> | undefined)[],
    policyNamespace: string | undefined,
  ): Cidr[] {
    return cidrUnion(
      peers.flatMap((p, i) => {
        const ids = selected[i];
        const members = ids ? [...ids].map((id) => this.endpoints.get(id) as Endpoint) : [];
        return peerCidrs(p, members, policyNamespace);
      }),
    );
  }

  /** As SetRegistry.namedPortSet, over the pods that have one of the names at all. */
  private membersOf(def: PortSetDef): IpPortSet['members'] {
    const peer = def.peerSetId === undefined ? undefined : this.peerSets.get(def.peerSetId)?.cidrs;
    const named = [...this.endpoints.values()].filter((ep) => hasNamedPort(ep, def));
    return namedPortMembers(named, peer, def.protocol, def.names);
  }
}

function hasNamedPort(ep: Endpoint | undefined, def: PortSetDef): boolean {
  return (
    ep !== undefined &&
    ep.ports.some((p) => p.protocol === def.protocol && p.name !== undefined && def.names.includes(p.name))
  );
}
