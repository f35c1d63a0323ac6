/**
 * The calculation kept between changes (felix's calculation graph, in small): a model, its
 * allocations and build options, the IR they give, and `apply` to move them on by a few model
 * changes, recomputing only what those changes reach:
 *
 *   pod / namespace labels ─► endpoints ─► peer sets whose selectors pick them (IncrementalSets)
 *                                  │             └─► named-port sets of those sets
 *                                  ├─► the endpoint's own rule sets
 *                                  └─► services selecting it, or whose slices name its address
 *   NetworkPolicy ─► rule sets of the endpoints it selected or selects (its namespace only)
 *   GlobalPolicy  ─► rule sets of the endpoints it selected or selects
 *   changed sets  ─► decision tables of the rule sets that reference them (table mode)
 *   Service / EndpointSlice ─► that service's port tables;  Prefilter ─► the prefilters
 *
 * Each piece is computed by the same functions buildIR uses (buildEndpoints, buildRuleSets,
 * buildServices, buildPrefilters, withDecisionTable), fed only the objects that matter.
 *
 * The contract with the backends is structural sharing: in the IR `apply` returns, every
 * Endpoint, IpSet, IpPortSet, RuleSet (with its decision table), ServicePortTable and Prefilter
 * that did not change is the *same object* as in the previous IR, and an array with no change at
 * all is the previous array. A backend can skip unchanged objects with `===` and do O(changed)
 * work; the returned `IrDelta` lists the ids that were added, changed or removed.
 *
 * The result always equals `buildIR(model, allocations, opts)` of the model after the changes,
 * key order included (test/unit/calc-incremental.test.ts checks random change sequences).
 */
import { isDeepStrictEqual } from 'node:util';
import { referencedSets } from '../../ir/slice.js';
import type {
  Endpoint,
  IR,
  IpPortSet,
  IpSet,
  Node,
  Prefilter,
  RuleSet,
  ServicePortTable,
} from '../../ir/types.js';
import {
  changeKey,
  MODEL_KINDS,
  type ModelChange,
  type ModelKind,
  type ModelObjects,
} from '../../model/changes.js';
import {
  emptyModel,
  type EndpointSlice,
  type GlobalPolicy,
  type Model,
  type NetworkPolicy,
} from '../../model/types.js';
import { nodeExternalAddress, nodeFabricAddress } from '../addresses.js';
import type { Allocations } from '../allocate.js';
import type { BuildOptions } from '../api.js';
import { buildPrefilters } from '../build.js';
import { withDecisionTable, type TableBuilds } from '../decision-table.js';
import { endpointBuilder } from '../endpoints.js';
import { buildRuleSets, orderedGlobalPolicies } from '../policy.js';
import { selectorMatches } from '../selectors.js';
import { buildServices, serviceTables } from '../services.js';
import { compactAdd, compactGet, compactRemove, type CompactIndex } from '../../util/compact-index.js';
import { SetRegistry, type SetResolver } from '../sets.js';
import { emptyDelta, type IdChanges, type IrDelta } from './delta.js';
import { IncrementalSets } from './sets.js';
import { indexAdd, indexRemove } from '../../util/set-index.js';

type Objects = { [K in ModelKind]: Map<string, ModelObjects[K]> };
type AnyObject = ModelObjects[ModelKind];

/** One object's move in a batch: as it was before the batch, and after it (undefined: absent). */
interface Move<T> {
  before: T | undefined;
  after: T | undefined;
}

/** An in-scope endpoint's rule sets (egress, ingress) and the sets they name. */
interface EndpointRules {
  walk: [RuleSet, RuleSet];
  /** `walk`, or with its decision tables (table mode); the previous ones until finishRuleSets. */
  final: [RuleSet, RuleSet] | undefined;
  /** Peer sets its rules asked for (all of them appear in a whole-cluster IR). */
  requested: Set<string>;
  /** IP sets and IP-port sets its rules reference. */
  referenced: Set<string>;
}

const NO_ALLOCATIONS: Allocations = {
  nodes: [],
  podNodes: {},
  podAddresses: {},
  serviceAddresses: {},
  nodePorts: {},
  loadBalancerAddresses: {},
};
const DIRECTIONS = ['egress', 'ingress'] as const;

const byId = (a: string, b: string): number => (a < b ? -1 : a > b ? 1 : 0);

export class IncrementalCalculation {
  private readonly objects: Objects = {
    namespace: new Map(),
    pod: new Map(),
    service: new Map(),
    endpointSlice: new Map(),
    networkPolicy: new Map(),
    globalPolicy: new Map(),
    prefilter: new Map(),
  };
  private currentAllocations: Allocations = NO_ALLOCATIONS;
  private current: IR = {
    version: 1,
    nodes: [],
    endpoints: [],
    ipSets: [],
    ipPortSets: [],
    ruleSets: [],
    services: [],
    prefilters: [],
  };
  private modelView: Model | undefined;

  // Endpoints and their indexes.
  private readonly endpoints = new Map<string, Endpoint>();
  private sortedEndpointIds: string[] = [];
  private readonly endpointsByNamespace = new Map<string, Set<string>>();
  private readonly endpointsByAddress: CompactIndex = new Map();

  // Policies, rule sets and the sets they name.
  private readonly sets = new IncrementalSets(this.endpoints, this.endpointsByNamespace);
  private readonly policiesByNamespace = new Map<string, Map<string, NetworkPolicy>>();
  private orderedGlobals: GlobalPolicy[] = [];
  private readonly rules = new Map<string, EndpointRules>();
  /** Peer set id → endpoints whose rules asked for it. */
  private readonly requesters = new Map<string, Set<string>>();
  /** IP set or IP-port set id → endpoints whose rules reference it. */
  private readonly users = new Map<string, Set<string>>();

  // Services.
  /** Service key → its port tables: usually one, kept as the table itself (a list from the second). */
  private readonly tablesByService = new Map<string, ServicePortTable | ServicePortTable[]>();
  /** The keys of tablesByService, sorted: the IR's order, kept without sorting 10k keys per change. */
  private readonly sortedServiceKeys: string[] = [];
  private readonly servicesByNamespace = new Map<string, Set<string>>();
  /**
   * `namespace/serviceName` → its slices: almost always one, kept as the slice itself (a list only
   * from the second; 10k one-slice lists grown by `push` held 1.7 MiB at 10k services).
   */
  private readonly slicesByService = new Map<string, EndpointSlice | EndpointSlice[]>();
  /**
   * Address → services whose slices name it. The other way round is not kept: a service's
   * addresses are read from its filed slices when they move (sliceAddressesOf).
   */
  private readonly sliceServicesByAddress: CompactIndex = new Map();

  // Prefilters and their sets; the peer sets in the IR.
  private prefilterSets: IpSet[] = [];
  private presentPeer = new Set<string>();

  constructor(
    model: Model,
    allocations: Allocations,
    private readonly opts: BuildOptions = {},
  ) {
    const all: ModelChange[] = [];
    for (const kind of MODEL_KINDS)
      for (const object of modelList(model, kind)) all.push({ op: 'upsert', kind, object } as ModelChange);
    this.apply(all, allocations);
  }

  /** The IR in force: equal to buildIR of `model` with `allocations` and the options. */
  get ir(): IR {
    return this.current;
  }

  /** The model after every change applied so far. */
  get model(): Model {
    this.modelView ??= {
      namespaces: [...this.objects.namespace.values()],
      pods: [...this.objects.pod.values()],
      services: [...this.objects.service.values()],
      endpointSlices: [...this.objects.endpointSlice.values()],
      networkPolicies: [...this.objects.networkPolicy.values()],
      globalPolicies: [...this.objects.globalPolicy.values()],
      prefilters: [...this.objects.prefilter.values()],
    };
    return this.modelView;
  }

  get allocations(): Allocations {
    return this.currentAllocations;
  }

  /**
   * Applies `changes` in order, with `allocations` when they moved (a new pod needs its address;
   * default: the allocations in force). Throws like buildIR (MissingAllocationError) before
   * anything changes: the previous state stays in force.
   */
  apply(
    changes: readonly ModelChange[],
    allocations?: Allocations,
  ): { ir: IR; delta: IrDelta; services: Map<string, ServicePortTable> } {
    const next = allocations ?? this.currentAllocations;
    const batch = this.movesOf(changes);
    const effective = new Map<ModelKind, Map<string, Move<AnyObject>>>();
    for (const [kind, moves] of batch) {
      const kept = new Map([...moves].filter(([, m]) => !sameIgnoringSource(m.before, m.after)));
      if (kept.size > 0) effective.set(kind, kept);
    }
    const moves = <K extends ModelKind>(kind: K): Map<string, Move<ModelObjects[K]>> =>
      (effective.get(kind) as Map<string, Move<ModelObjects[K]>> | undefined) ?? new Map();
    const afterOf = <K extends ModelKind>(kind: K, key: string): ModelObjects[K] | undefined => {
      const m = batch.get(kind)?.get(key) as Move<ModelObjects[K]> | undefined;
      return m ? m.after : this.objects[kind].get(key);
    };

    // Everything that can fail happens before anything moves.
    const nodesChanged = !isDeepStrictEqual(next.nodes, this.currentAllocations.nodes);
    const podsToBuild = this.podsToRebuild(moves('pod'), moves('namespace'), next, nodesChanged);
    const builtEndpoints = new Map<string, Endpoint | undefined>();
    const buildEndpoint = endpointBuilder(next);
    for (const key of podsToBuild) {
      const pod = afterOf('pod', key);
      builtEndpoints.set(key, pod && buildEndpoint(pod, afterOf('namespace', pod.namespace)?.labels));
    }
    const servicesToBuild = this.servicesToRebuild(moves('service'), moves('endpointSlice'), next);
    for (const key of servicesToBuild) {
      const s = afterOf('service', key);
      // Without endpoints: what can fail is the service's own allocations (MissingAllocationError).
      if (s) serviceTables(s, emptyModel(), [], next, () => true);
    }

    // Commit the model, then move what depends on it.
    for (const [kind, list] of batch)
      for (const [key, m] of list) {
        const objects = this.objects[kind] as Map<string, AnyObject>;
        if (m.after === undefined) objects.delete(key);
        else objects.set(key, m.after);
      }
    if (batch.size > 0) this.modelView = undefined;
    this.currentAllocations = next;

    const delta = emptyDelta();
    const dirtyRules = new Set<string>();
    for (const [key, ep] of builtEndpoints)
      this.moveEndpoint(key, ep, delta.endpoints, dirtyRules, servicesToBuild);
    this.sortEndpointIds(delta.endpoints);
    this.movePolicies(moves('networkPolicy'), moves('globalPolicy'), dirtyRules);
    const serviceKey = this.serviceKeys(moves('service'));
    for (const [, m] of moves('endpointSlice')) this.moveSlice(m, serviceKey);
    for (const [key, m] of moves('service')) this.indexService(key, m);

    const { changed: walkChanged, removed: rulesRemoved } = this.recomputeRules(dirtyRules);
    this.sets.retainOnly(new Set(this.requesters.keys()), new Set(this.users.keys()));
    const refreshed = this.sets.refresh();
    const ruleSetsChanged = this.finishRuleSets(walkChanged, rulesRemoved, refreshed, delta.ruleSets);
    const services = new Map<string, ServicePortTable>();
    const servicesChanged = this.recomputeServices(servicesToBuild, delta.services, services);
    const prefiltersChanged =
      nodesChanged || moves('prefilter').size > 0
        ? this.recomputePrefilters(delta.prefilters, delta.ipSets)
        : undefined;

    delta.nodes = nodesChanged;
    const prev = this.current;
    const ipSets = this.assembleIpSets(refreshed.ipSets, delta.ipSets);
    const ir: IR = {
      version: 1,
      nodes: nodesChanged
        ? next.nodes.map((name, i): Node => ({
            name,
            address: nodeFabricAddress(i),
            externalAddress: nodeExternalAddress(i),
          }))
        : prev.nodes,
      endpoints: hasChanges(delta.endpoints)
        ? this.sortedEndpointIds.map((id) => this.endpoints.get(id) as Endpoint)
        : prev.endpoints,
      ipSets,
      ipPortSets: this.assemblePortSets(refreshed.ipPortSets, delta.ipPortSets),
      ruleSets: ruleSetsChanged ? this.assembleRuleSets() : prev.ruleSets,
      services: servicesChanged ? this.assembleServices(prev.services, servicesToBuild) : prev.services,
      prefilters: prefiltersChanged ?? prev.prefilters,
      ...(this.opts.policyMode === 'table' ? { policyMode: 'table' as const } : {}),
    };
    for (const c of Object.values(delta))
      if (typeof c === 'object') for (const l of Object.values(c as IdChanges)) l.sort();
    if (!isEmptyChange(delta)) this.current = ir;
    return { ir: this.current, delta, services };
  }

  /** The batch per kind and key: the object before the batch and after its last change. */
  private movesOf(changes: readonly ModelChange[]): Map<ModelKind, Map<string, Move<AnyObject>>> {
    const out = new Map<ModelKind, Map<string, Move<AnyObject>>>();
    for (const c of changes) {
      let list = out.get(c.kind);
      if (!list) out.set(c.kind, (list = new Map()));
      const key = changeKey(c);
      const move = list.get(key) ?? { before: this.objects[c.kind].get(key), after: undefined };
      move.after = c.op === 'remove' ? undefined : c.object;
      list.set(key, move);
    }
    return out;
  }

  /** Pods whose endpoint may differ: changed pods, pods of relabelled namespaces, moved allocations. */
  private podsToRebuild(
    pods: ReadonlyMap<string, Move<ModelObjects['pod']>>,
    namespaces: ReadonlyMap<string, Move<ModelObjects['namespace']>>,
    next: Allocations,
    nodesChanged: boolean,
  ): Set<string> {
    const out = new Set(pods.keys());
    for (const ns of namespaces.keys()) for (const id of this.endpointsByNamespace.get(ns) ?? []) out.add(id);
    const prev = this.currentAllocations;
    if (nodesChanged) for (const id of this.endpoints.keys()) out.add(id);
    else if (next !== prev) {
      for (const table of ['podNodes', 'podAddresses', 'podAddressesV6'] as const) {
        const n = next[table] ?? {};
        const p = prev[table] ?? {};
        for (const id in n) if (n[id] !== p[id]) out.add(id);
        for (const id in p) if (!(id in n)) out.add(id);
      }
    }
    // Only pods that exist before or after the batch have an endpoint to build or remove.
    for (const id of out) if (!this.endpoints.has(id) && !pods.get(id)?.after) out.delete(id);
    return out;
  }

  /** Services whose tables may differ because they, their slices or their addresses changed. */
  private servicesToRebuild(
    services: ReadonlyMap<string, Move<ModelObjects['service']>>,
    slices: ReadonlyMap<string, Move<EndpointSlice>>,
    next: Allocations,
  ): Set<string> {
    const out = new Set(services.keys());
    for (const m of slices.values())
      for (const sl of [m.before, m.after]) if (sl) out.add(`${sl.namespace}/${sl.serviceName}`);
    const prev = this.currentAllocations;
    for (const table of ['serviceAddresses', 'serviceAddressesV6'] as const)
      if (next[table] !== prev[table])
        for (const key of this.objects.service.keys())
          if (next[table]?.[key] !== prev[table]?.[key]) out.add(key);
    if (next.loadBalancerAddresses !== prev.loadBalancerAddresses)
      for (const key of this.objects.service.keys())
        if (!isDeepStrictEqual(next.loadBalancerAddresses[key], prev.loadBalancerAddresses[key]))
          out.add(key);
    if (next.nodePorts !== prev.nodePorts)
      for (const id of new Set([...Object.keys(next.nodePorts), ...Object.keys(prev.nodePorts)]))
        if (next.nodePorts[id] !== prev.nodePorts[id]) out.add(id.slice(0, id.lastIndexOf(':')));
    return out;
  }

  /** Puts one endpoint in place (undefined removes it) and marks what depends on it. */
  private moveEndpoint(
    id: string,
    after: Endpoint | undefined,
    changes: IdChanges,
    dirtyRules: Set<string>,
    dirtyServices: Set<string>,
  ): void {
    const before = this.endpoints.get(id);
    if (before === after || (before && after && isDeepStrictEqual(before, after))) return;
    if (before) {
      indexRemove(this.endpointsByNamespace, before.namespace, id);
      for (const a of before.addresses) compactRemove(this.endpointsByAddress, a, id);
    }
    if (after) {
      this.endpoints.set(id, after);
      indexAdd(this.endpointsByNamespace, after.namespace, id);
      for (const a of after.addresses) compactAdd(this.endpointsByAddress, a, id);
    } else this.endpoints.delete(id);
    // sortedEndpointIds follows the added and removed ones once the batch is in (sortEndpointIds).
    if (!before) changes.added.push(id);
    else if (!after) changes.removed.push(id);
    else changes.changed.push(id);
    this.sets.endpointChanged(before, after);
    dirtyRules.add(id);
    for (const ep of [before, after]) {
      if (!ep) continue;
      for (const key of this.servicesByNamespace.get(ep.namespace) ?? []) {
        const selector = this.objects.service.get(key)?.selector;
        if (selector && Object.entries(selector).every(([k, v]) => ep.labels[k] === v))
          dirtyServices.add(key);
      }
      for (const a of ep.addresses)
        for (const key of compactGet(this.sliceServicesByAddress, a)) dirtyServices.add(key);
    }
  }

  /**
   * The sorted endpoint ids after the batch's additions and removals: a splice each for a few, one
   * sort for many (a first build adds every endpoint: 50k splices would be quadratic).
   */
  private sortEndpointIds(changes: IdChanges): void {
    const ids = this.sortedEndpointIds;
    if (changes.added.length + changes.removed.length <= 64) {
      for (const id of changes.removed) ids.splice(sortedIndex(ids, id), 1);
      for (const id of changes.added) ids.splice(sortedIndex(ids, id), 0, id);
      return;
    }
    const removed = new Set(changes.removed);
    const kept = removed.size > 0 ? ids.filter((id) => !removed.has(id)) : ids;
    this.sortedEndpointIds = kept.concat(changes.added).sort(byId);
  }

  /** Marks the endpoints a changed policy selected or selects. */
  private movePolicies(
    networkPolicies: ReadonlyMap<string, Move<NetworkPolicy>>,
    globalPolicies: ReadonlyMap<string, Move<GlobalPolicy>>,
    dirtyRules: Set<string>,
  ): void {
    for (const [key, m] of networkPolicies) {
      const ns = (m.before ?? m.after)?.namespace as string;
      for (const id of this.endpointsByNamespace.get(ns) ?? []) {
        const ep = this.endpoints.get(id) as Endpoint;
        // Per endpoint and policy (a million times on a first build): no array, no closure.
        if (
          (m.before && selectorMatches(m.before.podSelector, ep.labels)) ||
          (m.after && selectorMatches(m.after.podSelector, ep.labels))
        )
          dirtyRules.add(id);
      }
      let list = this.policiesByNamespace.get(ns);
      if (!list) this.policiesByNamespace.set(ns, (list = new Map()));
      if (m.after) list.set(key, m.after);
      else list.delete(key);
    }
    if (globalPolicies.size === 0) return;
    for (const ep of this.endpoints.values()) {
      if (!this.inScope(ep)) continue;
      for (const m of globalPolicies.values()) {
        if ([m.before, m.after].some((gp) => gp && globalSelects(gp, ep))) {
          dirtyRules.add(ep.id);
          break;
        }
      }
    }
    this.orderedGlobals = orderedGlobalPolicies({
      ...emptyModel(),
      globalPolicies: [...this.objects.globalPolicy.values()],
    });
  }

  private inScope(ep: Endpoint): boolean {
    return this.opts.node === undefined || ep.node === this.opts.node;
  }

  /**
   * Rebuilds the walk rule sets of `dirty` endpoints; returns the endpoints whose rules changed
   * and, with the rule sets they had, those that no longer have any (gone, or off this node).
   */
  private recomputeRules(dirty: ReadonlySet<string>): {
    changed: Set<string>;
    removed: Map<string, [RuleSet, RuleSet] | undefined>;
  } {
    const changed = new Set<string>();
    const removed = new Map<string, [RuleSet, RuleSet] | undefined>();
    for (const id of dirty) {
      const ep = this.endpoints.get(id);
      const old = this.rules.get(id);
      if (!ep || !this.inScope(ep)) {
        if (old) {
          this.track(id, old, undefined);
          this.rules.delete(id);
          removed.set(id, old.final);
        }
        continue;
      }
      const requested = new Set<string>();
      const resolver: SetResolver = {
        peerSet: (peers, ns) => {
          const r = this.sets.peerSet(peers, ns);
          requested.add(r.id);
          return r;
        },
        namedPortSet: (...args) => this.sets.namedPortSet(...args),
      };
      const policies = {
        ...emptyModel(),
        globalPolicies: this.orderedGlobals,
        networkPolicies: [...(this.policiesByNamespace.get(ep.namespace)?.values() ?? [])],
      };
      const walk = buildRuleSets(policies, [ep], resolver).map((rs, i) =>
        old && isDeepStrictEqual(old.walk[i], rs) ? old.walk[i] : rs,
      ) as [RuleSet, RuleSet];
      const { ipSets, ipPortSets } = referencedSets(walk);
      const rules: EndpointRules = {
        walk,
        final: old?.final,
        requested,
        referenced: new Set([...ipSets, ...ipPortSets]),
      };
      this.track(id, old, rules);
      this.rules.set(id, rules);
      if (!old || walk.some((rs, i) => rs !== old.walk[i])) changed.add(id);
    }
    return { changed, removed };
  }

  /** Moves endpoint `id` from the sets `before` names to those `after` names. */
  private track(id: string, before: EndpointRules | undefined, after: EndpointRules | undefined): void {
    for (const [index, field] of [
      [this.requesters, 'requested'],
      [this.users, 'referenced'],
    ] as const) {
      for (const s of before?.[field] ?? []) if (!after?.[field].has(s)) indexRemove(index, s, id);
      for (const s of after?.[field] ?? []) indexAdd(index, s, id);
    }
  }

  /**
   * The final rule sets (with tables in table mode) of endpoints whose rules changed or whose
   * tables read a changed set; returns whether any rule set of the IR changed.
   */
  private finishRuleSets(
    walkChanged: ReadonlySet<string>,
    removed: ReadonlyMap<string, [RuleSet, RuleSet] | undefined>,
    refreshed: { ipSets: ReadonlySet<string>; ipPortSets: ReadonlySet<string> },
    changes: IdChanges,
  ): boolean {
    let any = false;
    for (const [id, had] of removed) {
      if (!had) continue;
      for (const d of DIRECTIONS) changes.removed.push(`${id}/${d}`);
      any = true;
    }
    const table = this.opts.policyMode === 'table';
    const dirty = new Set(walkChanged);
    if (table)
      for (const s of [...refreshed.ipSets, ...refreshed.ipPortSets])
        for (const id of this.users.get(s) ?? []) dirty.add(id);
    let context: IR | undefined;
    const builds: TableBuilds = new Map();
    const tableOpts =
      this.opts.maxTableEntries === undefined ? {} : { maxEntries: this.opts.maxTableEntries };
    for (const id of dirty) {
      const rules = this.rules.get(id) as EndpointRules;
      const before = rules.final;
      const final = rules.walk.map((rs, i) => {
        const next = table ? withDecisionTable((context ??= this.tableContext()), rs, tableOpts, builds) : rs;
        const old = before?.[i];
        return old && (old === next || isDeepStrictEqual(old, next)) ? old : next;
      }) as [RuleSet, RuleSet];
      rules.final = final;
      DIRECTIONS.forEach((d, i) => {
        if (!before) changes.added.push(`${id}/${d}`);
        else if (before[i] !== final[i]) changes.changed.push(`${id}/${d}`);
      });
      any ||= !before || final.some((rs, i) => rs !== before[i]);
    }
    return any;
  }

  /** What building a table reads of the IR: every live set. */
  private tableContext(): IR {
    const ipSets: IpSet[] = [];
    const ipPortSets: IpPortSet[] = [];
    for (const id of this.users.keys()) {
      const s = this.sets.ipSet(id);
      if (s) ipSets.push(s);
      const p = this.sets.ipPortSet(id);
      if (p) ipPortSets.push(p);
    }
    return { ...this.current, ipSets, ipPortSets };
  }

  private assembleRuleSets(): RuleSet[] {
    const out: RuleSet[] = [];
    for (const id of this.sortedEndpointIds) {
      const rules = this.rules.get(id);
      if (rules?.final) out.push(...rules.final);
    }
    return out;
  }

  // ---- services ----

  /**
   * The copy of a service key the calculation already holds (the service's own key, as
   * objects.service, sortedServiceKeys and tablesByService have it; `moved`: the services of this
   * batch, not sorted in yet), else `key`. Each slice names its service anew: the copies that
   * slicesByService and sliceServicesByAddress kept were two a service, ~0.6 MiB at 10k services.
   */
  private serviceKeys(moved: ReadonlyMap<string, unknown>): (key: string) => string {
    const batch = new Map<string, string>();
    for (const key of moved.keys()) batch.set(key, key);
    return (key) => {
      const known = this.sortedServiceKeys[sortedIndex(this.sortedServiceKeys, key)];
      return known === key ? known : (batch.get(key) ?? key);
    };
  }

  /** Files a slice under its service, and its addresses under the service (see moveEndpoint). */
  private moveSlice(m: Move<EndpointSlice>, serviceKey: (key: string) => string): void {
    const services = new Map<string, readonly string[]>();
    for (const sl of [m.before, m.after]) {
      const service = sl && serviceKey(`${sl.namespace}/${sl.serviceName}`);
      if (service !== undefined && !services.has(service))
        services.set(service, this.sliceAddressesOf(service));
    }
    for (const [sl, add] of [
      [m.before, false],
      [m.after, true],
    ] as const) {
      if (!sl) continue;
      const service = serviceKey(`${sl.namespace}/${sl.serviceName}`);
      // The slice of this key replaced in its place (as a Map's set would), added last or removed.
      const slices = [...this.slicesOf(service)];
      const at = slices.findIndex((x) => x.namespace === sl.namespace && x.name === sl.name);
      if (add && at >= 0) slices[at] = sl;
      else if (add) slices.push(sl);
      else if (at >= 0) slices.splice(at, 1);
      if (slices.length === 0) this.slicesByService.delete(service);
      else this.slicesByService.set(service, slices.length === 1 ? (slices[0] as EndpointSlice) : slices);
    }
    for (const [service, before] of services) {
      const now = this.sliceAddressesOf(service);
      const nowSet = new Set(now);
      const beforeSet = new Set(before);
      for (const a of before) if (!nowSet.has(a)) compactRemove(this.sliceServicesByAddress, a, service);
      for (const a of now) if (!beforeSet.has(a)) compactAdd(this.sliceServicesByAddress, a, service);
    }
  }

  /** The port tables of service `key` in force. */
  private tablesOf(key: string): readonly ServicePortTable[] {
    const tables = this.tablesByService.get(key);
    return tables === undefined ? [] : Array.isArray(tables) ? tables : [tables];
  }

  /** The slices filed under `service`. */
  private slicesOf(service: string): readonly EndpointSlice[] {
    const filed = this.slicesByService.get(service);
    return filed === undefined ? [] : Array.isArray(filed) ? filed : [filed];
  }

  /** The addresses the slices filed under `service` name, each once. */
  private sliceAddressesOf(service: string): string[] {
    return [...new Set(this.slicesOf(service).flatMap((sl) => sl.endpoints.flatMap((e) => e.addresses)))];
  }

  private indexService(key: string, m: Move<ModelObjects['service']>): void {
    if (m.before) indexRemove(this.servicesByNamespace, m.before.namespace, key);
    if (m.after) indexAdd(this.servicesByNamespace, m.after.namespace, key);
  }

  /**
   * Recomputes the port tables of `keys`; returns whether any table changed. `tables` gets the
   * added and changed ones by id.
   */
  private recomputeServices(
    keys: ReadonlySet<string>,
    changes: IdChanges,
    tables: Map<string, ServicePortTable>,
  ): boolean {
    let any = false;
    for (const key of keys) {
      const s = this.objects.service.get(key);
      const old = this.tablesOf(key);
      let built: ServicePortTable[] = [];
      if (s) {
        const slices = [...this.slicesOf(key)];
        const candidates = s.selector
          ? [...(this.endpointsByNamespace.get(s.namespace) ?? [])]
          : this.sliceAddressesOf(key).flatMap((a) => [...compactGet(this.endpointsByAddress, a)]);
        const endpoints = [...new Set(candidates)].sort(byId).map((id) => this.endpoints.get(id) as Endpoint);
        built = buildServices(
          { ...emptyModel(), services: [s], endpointSlices: slices },
          endpoints,
          this.currentAllocations,
          this.opts.readyPods,
        );
      }
      const before = new Map(old.map((t) => [t.id, t]));
      built = built.map((t) => {
        const was = before.get(t.id);
        before.delete(t.id);
        if (was && isDeepStrictEqual(was, t)) return was;
        (was ? changes.changed : changes.added).push(t.id);
        tables.set(t.id, t);
        any = true;
        return t;
      });
      for (const id of before.keys()) changes.removed.push(id);
      any ||= before.size > 0;
      const at = sortedIndex(this.sortedServiceKeys, key);
      const listed = this.sortedServiceKeys[at] === key;
      if (s) {
        this.tablesByService.set(key, built.length === 1 ? (built[0] as ServicePortTable) : built);
        if (!listed) this.sortedServiceKeys.splice(at, 0, key);
      } else {
        this.tablesByService.delete(key);
        if (listed) this.sortedServiceKeys.splice(at, 1);
      }
    }
    return any;
  }

  /**
   * The IR's tables: `prev` with those of the services `keys` put in their place (a service's
   * tables are adjacent, in the order of service keys), a copy and a splice per service instead
   * of assembling 10k tables again.
   */
  private assembleServices(prev: readonly ServicePortTable[], keys: ReadonlySet<string>): ServicePortTable[] {
    // Many services (the first build, a reallocation): every table in order, once.
    if (keys.size > 64) return this.sortedServiceKeys.flatMap((k) => this.tablesOf(k));
    const out = prev.slice();
    for (const key of [...keys].sort(byId)) {
      let lo = 0;
      let hi = out.length;
      while (lo < hi) {
        const mid = (lo + hi) >>> 1;
        if ((out[mid] as ServicePortTable).service < key) lo = mid + 1;
        else hi = mid;
      }
      let end = lo;
      while (end < out.length && (out[end] as ServicePortTable).service === key) end++;
      out.splice(lo, end - lo, ...this.tablesOf(key));
    }
    return out;
  }

  // ---- prefilters ----

  /** Every prefilter again (there are few); the sets they name are kept apart from peer sets. */
  private recomputePrefilters(changes: IdChanges, setChanges: IdChanges): Prefilter[] {
    const registry = new SetRegistry([]);
    const model = { ...emptyModel(), prefilters: [...this.objects.prefilter.values()] };
    const next = buildPrefilters(model, this.currentAllocations.nodes, registry, this.opts.node);
    const prefilters = shareById(this.current.prefilters, next, (p) => p.name, changes);
    this.prefilterSets = shareById(this.prefilterSets, registry.allIpSets(), (s) => s.id, setChanges);
    return prefilters;
  }

  // ---- sets in the IR ----

  /** Ids of the peer sets in the IR: asked for (whole cluster) or referenced (a node's slice). */
  private presentPeerSets(): string[] {
    const ids = this.opts.node === undefined ? [...this.requesters.keys()] : [...this.users.keys()];
    return ids.filter((id) => this.sets.ipSet(id) !== undefined);
  }

  /** The IR's IP sets: peer sets present (see presentPeerSets) and the prefilters' sets. */
  private assembleIpSets(refreshed: ReadonlySet<string>, changes: IdChanges): IpSet[] {
    const now = new Set(this.presentPeerSets());
    for (const id of now) {
      if (!this.presentPeer.has(id)) changes.added.push(id);
      else if (refreshed.has(id)) changes.changed.push(id);
    }
    for (const id of this.presentPeer) if (!now.has(id)) changes.removed.push(id);
    this.presentPeer = now;
    // Prefilter sets were noted by recomputePrefilters: any change at all means a new array.
    if (!hasChanges(changes)) return this.current.ipSets;
    return [...[...now].map((id) => this.sets.ipSet(id) as IpSet), ...this.prefilterSets].sort((a, b) =>
      byId(a.id, b.id),
    );
  }

  private assemblePortSets(refreshed: ReadonlySet<string>, changes: IdChanges): IpPortSet[] {
    const prev = this.current.ipPortSets;
    const before = new Set(prev.map((s) => s.id));
    const now = [...this.users.keys()].filter((id) => this.sets.ipPortSet(id) !== undefined);
    let moved = false;
    for (const id of now) {
      if (!before.has(id)) changes.added.push(id);
      else if (refreshed.has(id)) changes.changed.push(id);
      else continue;
      moved = true;
    }
    const nowSet = new Set(now);
    for (const id of before)
      if (!nowSet.has(id)) {
        changes.removed.push(id);
        moved = true;
      }
    if (!moved) return prev;
    return now.sort(byId).map((id) => this.sets.ipPortSet(id) as IpPortSet);
  }
}

function modelList<K extends ModelKind>(model: Model, kind: K): readonly ModelObjects[K][] {
  const field = {
    namespace: model.namespaces,
    pod: model.pods,
    service: model.services,
    endpointSlice: model.endpointSlices,
    networkPolicy: model.networkPolicies,
    globalPolicy: model.globalPolicies,
    prefilter: model.prefilters,
  }[kind];
  return field as unknown as readonly ModelObjects[K][];
}

/** Equal but for where they were read from: nothing in the IR depends on that. */
function sameIgnoringSource(a: AnyObject | undefined, b: AnyObject | undefined): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  return isDeepStrictEqual({ ...a, source: undefined }, { ...b, source: undefined });
}

function globalSelects(gp: GlobalPolicy, ep: Endpoint): boolean {
  return (
    selectorMatches(gp.selector, ep.labels) &&
    (!gp.namespaceSelector || selectorMatches(gp.namespaceSelector, ep.namespaceLabels))
  );
}

/** Where `id` is or would go in the sorted `ids`. */
function sortedIndex(ids: readonly string[], id: string): number {
  let lo = 0;
  let hi = ids.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((ids[mid] as string) < id) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** `next`, each object replaced by `prev`'s with the same id when deeply equal; changes noted. */
function shareById<T>(
  prev: readonly T[],
  next: readonly T[],
  idOf: (o: T) => string,
  changes: IdChanges,
): T[] {
  const before = new Map(prev.map((o) => [idOf(o), o]));
  const out = next.map((o) => {
    const id = idOf(o);
    const was = before.get(id);
    before.delete(id);
    if (was && isDeepStrictEqual(was, o)) return was;
    (was ? changes.changed : changes.added).push(id);
    return o;
  });
  changes.removed.push(...before.keys());
  return out;
}

function hasChanges(c: IdChanges): boolean {
  return c.added.length + c.changed.length + c.removed.length > 0;
}

function isEmptyChange(delta: IrDelta): boolean {
  return !delta.nodes && Object.values(delta).every((c) => typeof c !== 'object' || !hasChanges(c));
}
