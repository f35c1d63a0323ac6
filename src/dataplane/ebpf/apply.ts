/**
 * Applying one node: make the kernel match the IR, touching only the difference.
 *
 *   0. write the node's switches (flow aggregates on or off) to its config map: no reload;
 *   1. generate every program; load those whose code (or hook, or maps) changed — a verifier
 *      rejection stops here, before anything in force was touched; build the decision tables
 *      that changed (table mode: a new trie each, not yet in force);
 *   2. add set members and prefilter entries (old programs never look at new set indices, and a
 *      member both IRs share stays put), the difference from the backend's shadow of the set
 *      maps (node-shadow.ts; one read of them when there is none); point each changed table's
 *      index at its new trie (one atomic update per table: a rule change of a table-mode
 *      endpoint ends here, no reload);
 *   3. swap programs: BPF_LINK_UPDATE on the pinned tcx link (atomic, no gap), or a new link
 *      (first in the chain, before other tcx programs) pinned for the next apply or an agent;
 *   4. detach hooks of endpoints that left, remove members nobody wants, free counter slots and
 *      table indices;
 *   5. prefilter XDP links on the fabric-facing interfaces, and the node-port load balancer's
 *      tcx programs and maps there (nodeport.ts: traffic from outside the cluster);
 *   6. write the node's description (meta) and collect conntrack garbage;
 *   7. the scope's connect-time load balancer (services.ts), idempotent across nodes.
 */
import { existsSync, readdirSync, renameSync, rmdirSync, rmSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { performance } from 'node:perf_hooks';
import {
  attachTcx,
  BpfCapacityError,
  ensureBpffs,
  isPinned,
  Link,
  PerCpuMap,
  Program,
  VerifierError,
  withNetns,
  type AssembledProgram,
  type Instruction,
} from '../../bpf/index.js';
import { onlyServicesChanged, type IrChange } from '../../ir/delta.js';
import type { IR, RuleSet } from '../../ir/types.js';
import { ApplyError, type ApplyResult, type NodeTarget } from '../backend.js';
import { collectGarbage } from './conntrack.js';
import { checkNetns, fabricInterfaces, listInterfaces, type NetnsInterface } from './iface.js';
import { MAP } from './layout.js';
import {
  closeNodeMaps,
  counterSlotsFor,
  createNodeMaps,
  mapIds,
  mapPinPath,
  MAP_SPECS,
  openPinnedMaps,
  pinNodeMaps,
  programMaps,
  writeNodeConfig,
  type NodeMaps,
} from './maps.js';
import { readMeta, writeMeta, type HookState, type NodeMeta, type PrefilterState } from './meta.js';
import { hookKey, nodeView, recordChange, type Allocation, type NodeView } from './node.js';
import {
  buildTables,
  allocateWithTables,
  dropTables,
  freedTableIndices,
  installTables,
  planTableWrites,
  type TableBudget,
  type TableChoice,
  type TableFallback,
} from './tables.js';
import { hookFor, nodeDir, tcxLinkPin } from './paths.js';
import { isIpv6Cidr, prefilterEntries, prefilterHash, PREFILTER_MIN_CAPACITY } from './prefilter.js';
import { programHash, type GeneratedProgram } from './program.js';
import { describeOverLimit, estimateVerifierWork } from './complexity.js';
import { saveVerifierLog, VERIFIER_LOG_ENV } from './verifier-log.js';
import { applyServices, removeServices, SERVICES_DIR, type ScopeServicesShadow } from './services.js';
import { addSetMembers, applyPrefilterSync, planPrefilterSync, removeSetMembers } from './sync.js';
import { forgetContentScan, seedContentDigest } from './map-contents.js';
import {
  advanceNodeShadow,
  emptyNodeShadow,
  memberCount,
  nodeShadowFor,
  planSetDelta,
  type NodeShadow,
} from './node-shadow.js';
import { ProgramCache, type CachedProgram } from './program-cache.js';
import { dropPinnedLink } from './pinned-link.js';
import { applyNodePorts, keepNodePorts, NodePortLoadError } from './nodeport.js';
import { applyFabricXdp, FabricXdpLoadError, nodePortAddressesOf } from './nodeport-xdp.js';
import type { PodNodeShadow } from './services-pods.js';
import type { NodePortShadow } from './nodeport-shadow.js';

export interface ApplyOptions {
  /**
   * Flow aggregates of allowed connections and denied packets (the `flows` map the agent drains)
   * for its flow log; default true. A switch in the node's config map: flipping it reloads
   * nothing. Log rules' aggregates are kept either way.
   */
  flowLogs?: boolean;
  /** Test hook: replaces a generated program's instructions before it is loaded. */
  mutateProgram?: (generated: GeneratedProgram) => AssembledProgram | readonly Instruction[];
  /**
   * The whole verifier log in the error of a rejected program; default: the verifier's reason
   * and the listing around the instruction it stopped at (the log stays on the error's cause).
   */
  verifierLog?: boolean;
  /** Test hook: the node's table capacity (default NODE_TABLE_BUDGET). */
  tableBudget?: TableBudget;
  /**
   * Node ports and load-balancer addresses translated at XDP on the fabric interface as well as
   * at tcx (default true; false: tcx only, for comparing). See nodeport-xdp-program.ts.
   */
  nodePortXdp?: boolean;
}

/**
 * What the backend keeps of a node between applies (index.ts holds one per target): the shadow
 * of its set maps (absent: read them once) and the programs it generated.
 */
export interface NodeMemory {
  sets: NodeShadow | undefined;
  programs: ProgramCache;
  /** This node's entries in the scope's pod → node map (services-pods.ts). */
  pods?: PodNodeShadow;
  /** The node-port load balancer as the last apply left it (nodeport-shadow.ts). */
  nodePorts?: NodePortShadow;
  /**
   * The node's description as this instance last wrote it, and its JSON without `appliedAt`:
   * the next apply starts from it instead of reading and unpacking the pinned copy, and writes a
   * new one only when something in it changed.
   */
  meta?: { value: NodeMeta; json: string };
}

/** What the backend keeps between applies: per node, and per scope for the shared service maps. */
export interface ApplyMemory {
  node: NodeMemory;
  services: Map<string, ScopeServicesShadow>;
}

interface PlannedHook {
  state: HookState;
  /** The program and what is loaded of it: only on a hook that is reloaded. */
  generated?: GeneratedProgram;
  /** What the program cache keeps of it once the apply succeeds. */
  cacheEntry: CachedProgram;
  instructions?: AssembledProgram | readonly Instruction[];
  linkPath: string;
  reload: boolean;
}

/**
 * Throws the backend's error; `cause` keeps the kernel's own (errno, verifier, missing feature).
 * A verifier rejection or a full map fails the same way until the desired state changes.
 */
function fail(message: string, detail?: string, cause?: unknown, deterministic?: boolean): never {
  throw new ApplyError(`eBPF: ${message}`, 'ebpf', detail, {
    ...(cause !== undefined ? { cause } : {}),
    deterministic: deterministic ?? (cause instanceof VerifierError || cause instanceof BpfCapacityError),
  });
}

function describeError(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** Replaces a pinned map with a bigger one (programs are reloaded against it: its id changes). */
function grownCounters(maps: NodeMaps, dir: string, slots: number): void {
  const spec = MAP_SPECS[MAP.counters];
  const bigger = PerCpuMap.create({
    type: spec.type,
    name: 'sy_counters',
    key: spec.key,
    value: spec.value,
    maxEntries: slots,
  });
  const path = mapPinPath(dir, MAP.counters);
  rmSync(`${path}-next`, { force: true });
  bigger.pin(`${path}-next`);
  renameSync(`${path}-next`, path);
  maps.counters.close();
  maps.counters = bigger;
}

/**
 * Loads a hook's program with the verifier on a worker thread (the caller's event loop keeps
 * serving). A rejection says so in a few lines; the log the kernel returned goes to a file the
 * error names (all of it with `verifierLog`).
 */
async function loadPolicy(hook: PlannedHook, maps: NodeMaps, opts: ApplyOptions): Promise<Program> {
  const { generated, instructions } = hook;
  if (!generated || !instructions) throw new Error(`no program planned for ${hook.state.endpoint}`);
  try {
    return await Program.loadAsync({
      name: generated.name,
      type: 'sched_cls',
      expectedAttachType: hookFor(generated.direction) === 'ingress' ? 'tcx_ingress' : 'tcx_egress',
      instructions,
      maps: programMaps(maps),
      ...(opts.verifierLog ? { fullLog: true } : {}),
    });
  } catch (e) {
    const what = `the ${generated.direction} program of ${generated.endpoint} (${generated.name})`;
    if (e instanceof VerifierError) {
      const file = saveVerifierLog(generated.name, opts.verifierLog ? e.withLog() : e.message + '\n' + e.log);
      const more = file
        ? `\nverifier log: ${file}${opts.verifierLog ? '' : ` (its end; all of it with ${VERIFIER_LOG_ENV}=full)`}`
        : '';
      const detail = opts.verifierLog ? e.withLog() : e.message;
      fail(`the verifier rejected ${what}; the programs in force are unchanged`, detail + more, e);
    }
    fail(`cannot load ${what}: ${describeError(e)}; the programs in force are unchanged`, undefined, e);
  }
}

/**
 * Programs verified at once, each on its own worker thread: a relabelled pod's two programs are
 * verified side by side instead of one after the other. At most one per core (and no more than
 * libuv's default four pool threads, which file reads share).
 */
const PARALLEL_LOADS = Math.max(1, Math.min(4, availableParallelism()));

/**
 * The loads of an apply, started while the hooks are still being planned: the kernel verifies
 * the first changed program while the next is generated. Programs come out in the order of their
 * hooks on the node (the order they are swapped in).
 */
class PolicyLoads {
  private readonly hooks: PlannedHook[] = [];
  /** Each started hook's place among the node's hooks (programs are swapped in that order). */
  private readonly places: number[] = [];
  private readonly programs: (Program | undefined)[] = [];
  private readonly failures: { at: number; error: unknown }[] = [];
  private readonly running = new Set<Promise<void>>();
  private next = 0;
  private discarded = false;

  /**
   * `onLoaded`: called with each program as its load succeeds (after the next load has started);
   * what it throws fails the apply like a failed load.
   */
  constructor(
    private readonly maps: NodeMaps,
    private readonly opts: ApplyOptions,
    private readonly onLoaded?: (hook: PlannedHook, program: Program) => void,
  ) {}

  start(hook: PlannedHook, place: number): void {
    this.hooks.push(hook);
    this.places.push(place);
    this.pump();
  }

  private pump(): void {
    while (
      this.running.size < PARALLEL_LOADS &&
      this.next < this.hooks.length &&
      this.failures.length === 0
    ) {
      const at = this.next++;
      const hook = this.hooks[at] as PlannedHook;
      const run: Promise<void> = loadPolicy(hook, this.maps, this.opts).then(
        (program) => void (this.programs[at] = program),
        (error: unknown) => void this.failures.push({ at, error }),
      );
      this.running.add(run);
      void run.then(() => {
        this.running.delete(run);
        this.pump();
        // After the pump: the next verification runs while this one is handed on (an attach
        // waits out an RCU grace period, ~10 ms).
        this.loaded(at, hook);
      });
    }
  }

  private loaded(at: number, hook: PlannedHook): void {
    const program = this.programs[at];
    if (!program || !this.onLoaded || this.failures.length > 0 || this.discarded) return;
    try {
      this.onLoaded(hook, program);
    } catch (error) {
      this.failures.push({ at, error });
    }
  }

  private async drain(): Promise<void> {
    while (this.running.size > 0) await Promise.all(this.running);
  }

  /**
   * Waits for every load into `loaded` (in hook order). On a failure the loads under way finish
   * first (their programs land in `loaded`, which the caller closes), nothing more starts, and the
   * first failing hook's error is thrown.
   */
  async settle(loaded: Map<PlannedHook, Program>): Promise<void> {
    await this.drain();
    const byPlace = [...this.hooks.keys()].sort((a, b) => (this.places[a] ?? 0) - (this.places[b] ?? 0));
    for (const at of byPlace) {
      const program = this.programs[at];
      if (program) loaded.set(this.hooks[at] as PlannedHook, program);
    }
    const place = (f: { at: number }): number => this.places[f.at] ?? 0;
    const first = this.failures.sort((a, b) => place(a) - place(b))[0];
    if (first) throw first.error;
  }

  /** The plan failed: what loaded is closed once the loads under way are done. */
  async discard(): Promise<void> {
    this.discarded = true;
    this.next = this.hooks.length;
    await this.drain();
    for (const program of this.programs) program?.close();
  }
}

/**
 * Swaps the program on the hook's pinned link when that link still sits on this interface (no
 * gap, no change of place in the tcx chain); otherwise attaches a new link first in the chain
 * and pins it for the next apply or an agent.
 */
function swapTcx(target: NodeTarget, hook: PlannedHook, program: Program): void {
  if (isPinned(hook.linkPath)) {
    const link = Link.fromPin(hook.linkPath);
    try {
      if (link.info().ifindex === hook.state.ifindex) {
        link.update(program);
        return;
      }
      // The interface was recreated: the old link is defunct.
      link.detach();
    } catch {
      // update refused (link gone with its interface): replace it below
    } finally {
      link.close();
    }
  }
  rmSync(hook.linkPath, { force: true });
  pinLink(attachHook(target, hook, program), hook.linkPath);
}

/** A new tcx link of `program` at `hook`, in front of what is attached there. */
function attachHook(target: NodeTarget, hook: PlannedHook, program: Program): Link {
  return withNetns(target.netns, () =>
    attachTcx(program, { ifname: hook.state.ifname, direction: hookFor(hook.state.direction), before: true }),
  );
}

function planHooks(
  view: NodeView,
  alloc: Allocation,
  interfaces: ReadonlyMap<string, NetnsInterface>,
  dir: string,
  meta: NodeMeta | undefined,
  mapsChanged: boolean,
  opts: ApplyOptions,
  programs: ProgramCache,
  reloading: (hook: PlannedHook, at: number) => void,
): PlannedHook[] {
  const endpoints = new Map(view.endpoints.map((e) => [e.id, e]));
  const previous = new Map((meta?.hooks ?? []).map((h) => [hookKey(h.endpoint, h.direction), h]));
  // One listing of the node's link pins, not a lookup per hook.
  const pinned = pinnedLinks(dir);
  const plan = (
    rs: RuleSet,
    { cached, entry }: ReturnType<ProgramCache['program']>,
    at: number,
  ): PlannedHook => {
    const ep = endpoints.get(rs.endpoint);
    const iface = ep ? interfaces.get(ep.hostInterface) : undefined;
    if (!ep || !iface) throw new Error(`no interface for ${rs.endpoint}`);
    if (!cached) {
      const estimate = estimateVerifierWork(rs, alloc, programs.generated(entry, rs, alloc).program);
      // Refused in milliseconds here rather than by the verifier after minutes.
      if (estimate.processed > estimate.limit)
        fail(
          `${describeOverLimit(estimate)}; the programs in force are unchanged`,
          undefined,
          undefined,
          true,
        );
    }
    const mutated = opts.mutateProgram?.(programs.generated(entry, rs, alloc));
    const hash = mutated ? programHash(mutated) : entry.hash;
    const before = previous.get(hookKey(rs.endpoint, rs.direction));
    const linkPath = tcxLinkPin(dir, ep.hostInterface, hookFor(rs.direction));
    const state: HookState = {
      endpoint: rs.endpoint,
      direction: rs.direction,
      ifname: ep.hostInterface,
      ifindex: iface.ifindex,
      hash,
      programName: entry.name,
    };
    const reload =
      mapsChanged ||
      !before ||
      before.hash !== hash ||
      before.ifindex !== iface.ifindex ||
      before.ifname !== ep.hostInterface ||
      !pinned.has(linkPath);
    if (!reload) return { state, cacheEntry: entry, linkPath, reload };
    // A program kept from an earlier apply is made again only when it is loaded again.
    const generated = programs.generated(entry, rs, alloc);
    const hook: PlannedHook = {
      state,
      generated,
      cacheEntry: entry,
      instructions: mutated ?? generated.program,
      linkPath,
      reload,
    };
    reloading(hook, at);
    return hook;
  };
  // A program generated anew is planned (and its load started) as soon as the cache misses it;
  // the hooks whose programs are kept are planned after, while the kernel verifies.
  const hooks: PlannedHook[] = new Array<PlannedHook>(view.ruleSets.length);
  const kept: [number, ReturnType<ProgramCache['program']>][] = [];
  view.ruleSets.forEach((rs, at) => {
    const found = programs.program(rs, alloc);
    if (found.cached) kept.push([at, found]);
    else hooks[at] = plan(rs, found, at);
  });
  for (const [at, found] of kept) hooks[at] = plan(view.ruleSets[at] as RuleSet, found, at);
  return hooks;
}

/** The paths of the node's pinned links. */
function pinnedLinks(dir: string): Set<string> {
  const links = join(dir, 'links');
  return new Set(existsSync(links) ? readdirSync(links).map((name) => join(links, name)) : []);
}

/** Zeroes counters of slots that start or stop counting something. */
function resetSlots(maps: NodeMaps, slots: readonly number[]): void {
  const zero = Array.from({ length: maps.counters.cpus }, () => ({ packets: 0, bytes: 0 }));
  const inRange = slots.filter((slot) => slot < maps.counters.info.maxEntries);
  if (inRange.length > 0) maps.counters.updateBatch(inRange.map((slot) => [slot, zero] as const));
}

function changedSlots(
  before: Allocation | undefined,
  after: Allocation,
): { fresh: number[]; freed: number[] } {
  // The numbering kept its records (nothing came or went): no slot starts or stops counting.
  if (before?.slots === after.slots) return { fresh: [], freed: [] };
  // Numbered from `before` by this apply: what came and went is known without a pass over every slot.
  const change = recordChange(after.slots);
  if (before && change?.from.deref() === before.slots)
    return { fresh: [...change.fresh], freed: [...change.freed] };
  const old = before?.slots ?? {};
  const now = new Set(Object.values(after.slots));
  const had = new Map(Object.entries(old));
  const fresh = Object.entries(after.slots)
    .filter(([key, slot]) => had.get(key) !== slot)
    .map(([, slot]) => slot);
  const freed = Object.values(old).filter((slot) => !now.has(slot));
  return { fresh, freed };
}

interface PrefilterOutcome {
  state: PrefilterState | undefined;
  changed: string[];
}

interface PrefilterContext {
  target: NodeTarget;
  maps: NodeMaps;
  dir: string;
  before: PrefilterState | undefined;
  changed: string[];
}

function applyPrefilter(
  target: NodeTarget,
  view: NodeView,
  previous: IR | undefined,
  maps: NodeMaps,
  dir: string,
  meta: NodeMeta | undefined,
  fabric: readonly NetnsInterface[],
): PrefilterOutcome {
  const pc: PrefilterContext = { target, maps, dir, before: meta?.prefilter, changed: [] };
  const lists = view.prefilters;

  if (lists.length === 0) {
    if (pc.before) {
      maps.pfTrie.deleteBatch([...maps.pfTrie.keys()]);
      maps.pfTrie6.deleteBatch([...maps.pfTrie6.keys()]);
      pc.changed.push('prefilter');
    }
    return { state: undefined, changed: pc.changed };
  }
  const hash = prefilterHash(lists);
  if (!pc.before || pc.before.hash !== hash) syncPrefilterLists(pc, lists, previous);
  return {
    state: {
      hash,
      lists: lists.map((l) => ({ name: l.name, index: l.index })),
      interfaces: fabric.map((f) => ({ ifname: f.ifname, ifindex: f.ifindex })),
      capacity: maps.pfTrie.info.maxEntries,
    },
    changed: pc.changed,
  };
}

/** The trie to the lists' entries; counters of lists that are new at their index start at zero. */
function syncPrefilterLists(
  pc: PrefilterContext,
  lists: NodeView['prefilters'],
  previous: IR | undefined,
): void {
  const { maps, before } = pc;
  const desired = prefilterEntries(lists);
  // Million-entry lists: diff against what the previous IR put there when the trie is known to
  // hold exactly that, instead of reading the whole trie back.
  const prevLists = previous ? nodeView(previous, pc.target.node).prefilters : undefined;
  const known =
    before && prevLists && prefilterHash(prevLists) === before.hash ? prefilterEntries(prevLists) : undefined;
  applyPrefilterSync(maps, planPrefilterSync(maps, desired, known));
  for (const l of lists) {
    if (before?.lists.find((b) => b.index === l.index)?.name !== l.name)
      maps.pfCounters.update(l.index, { packets: 0, bytes: 0 });
  }
  pc.changed.push(...lists.map((l) => `prefilter:${l.name}`));
}

/** Pins a new link for the next apply or an agent; the pin keeps it, this fd goes. */
function pinLink(link: Link, path: string): void {
  try {
    link.pin(path);
  } finally {
    link.close();
  }
}

/** What an apply of one node works with, once its interfaces and maps are known. */
interface NodeApply {
  target: NodeTarget;
  view: NodeView;
  interfaces: NetnsInterface[];
  /** The fabric-facing interfaces: the prefilter's and the node ports' (iface.ts). */
  fabric: NetnsInterface[];
  dir: string;
  meta: NodeMeta | undefined;
  alloc: Allocation;
  /** Which rule sets are decided by their table. */
  tables: TableChoice;
  maps: NodeMaps;
  changed: string[];
  memory: NodeMemory;
  /** The whole IR: node ports and load-balancer addresses are read from its services. */
  ir: IR;
}

/**
 * `memory` is what the backend keeps of the node between applies; it is left as this apply
 * leaves the kernel, or without a set shadow when the apply fails.
 */
export async function applyNode(
  target: NodeTarget,
  ir: IR,
  previous: IR | undefined,
  opts: ApplyOptions = {},
  memory: ApplyMemory = { node: { sets: undefined, programs: new ProgramCache() }, services: new Map() },
  change?: IrChange,
): Promise<ApplyResult> {
  const started = performance.now();
  const changed: string[] = [];
  // Steps 1 to 6 read the node's slice; a change of service tables alone that no node port names
  // leaves all of it as the last apply (of `previous`, which this memory holds) wrote it.
  if (!nodeUntouched(ir, previous, memory.node, change)) {
    const { view, interfaces, fabric } = inspectNode(target, ir);
    ensureBpffs();
    const dir = nodeDir(target.scope, target.node);
    const meta = memory.node.meta?.value ?? readMeta(dir);
    const { tables, alloc } = allocateWithTables(view, meta?.alloc, opts.tableBudget);
    const maps = openMaps(target, view, alloc, dir, changed);
    // A map replaced for its layout is empty: what this process remembers of the old one is not it.
    if (changed.some((c) => c.startsWith(REPLACED_MAP))) memory.node.sets = undefined;
    try {
      await applyPrograms(
        {
          target,
          view,
          interfaces,
          fabric,
          dir,
          meta,
          alloc,
          tables,
          maps,
          changed,
          memory: memory.node,
          ir,
        },
        previous,
        opts,
      );
    } finally {
      closeNodeMaps(maps);
    }
  }
  // 7. connect-time load balancing: shared by the scope's nodes, so the first apply syncs it.
  try {
    const pods = target.podCgroups
      ? { node: target.node, cgroups: target.podCgroups, shadow: memory.node }
      : undefined;
    const usable = change && change.from === previous ? change : undefined;
    changed.push(...applyServices(target.scope, ir, memory.services, pods, usable));
  } catch (e) {
    fail(`cannot apply the services of ${target.scope}: ${describeError(e)}`, undefined, e);
  }
  return { changed, durationMs: performance.now() - started };
}

/**
 * Whether `change` (from `previous`, the IR the node's memory was written from) touches nothing
 * of the node's own maps and programs: service tables alone changed, none reached from outside.
 */
function nodeUntouched(
  ir: IR,
  previous: IR | undefined,
  memory: NodeMemory,
  change: IrChange | undefined,
): boolean {
  if (!change || change.from !== previous || !onlyServicesChanged(change.delta)) return false;
  if (!memory.sets || !memory.meta) return false;
  return keepNodePorts(ir, change, memory);
}

/** The node's slice of the IR and the interfaces of its namespace; every endpoint must have one. */
function inspectNode(
  target: NodeTarget,
  ir: IR,
): { view: NodeView; interfaces: NetnsInterface[]; fabric: NetnsInterface[] } {
  let view: NodeView;
  try {
    checkNetns(target.netns);
    view = nodeView(ir, target.node);
  } catch (e) {
    fail(`cannot render node ${target.node}: ${describeError(e)}`, undefined, e);
  }
  let interfaces: NetnsInterface[];
  try {
    interfaces = listInterfaces(target.netns);
  } catch (e) {
    fail(`cannot list the interfaces of ${target.netns}: ${describeError(e)}`, undefined, e);
  }
  const names = new Set(interfaces.map((i) => i.ifname));
  const missing = view.endpoints.filter((e) => !names.has(e.hostInterface));
  if (missing.length > 0)
    fail(
      `node ${target.node}: host interfaces missing in ${target.netns}: ` +
        missing.map((e) => `${e.hostInterface} (${e.id})`).join(', '),
    );
  const pods = new Set(view.endpoints.map((e) => e.hostInterface));
  return { view, interfaces, fabric: fabricInterfaces(interfaces, view.address, pods) };
}

/** The highest slot of each slots record (allocate hands the same record while nothing changes). */
const highestSlots = new WeakMap<Allocation['slots'], number>();

function highestSlotOf(alloc: Allocation): number {
  let highest = highestSlots.get(alloc.slots) ?? recordChange(alloc.slots)?.highest;
  if (highest === undefined) {
    highest = 0;
    for (const slot of Object.values(alloc.slots)) if (slot > highest) highest = slot;
    highestSlots.set(alloc.slots, highest);
  }
  return highest;
}

/** Prefixes of the node's lists (both families, or those of one trie). */
function prefilterSizeOf(view: NodeView, ipv6?: boolean): number {
  const counted = (c: string): boolean => ipv6 === undefined || isIpv6Cidr(c) === ipv6;
  return view.prefilters.reduce((n, p) => n + p.cidrs.filter(counted).length, 0);
}

/** How `changed` names a map pinned with an older layout and replaced by an empty one. */
const REPLACED_MAP = 'map:new-layout:';

/** The node's pinned maps, created and pinned on its first apply. */
function openMaps(
  target: NodeTarget,
  view: NodeView,
  alloc: Allocation,
  dir: string,
  changed: string[],
): NodeMaps {
  try {
    const replaced: string[] = [];
    const pinned = openPinnedMaps(dir, replaced);
    changed.push(...replaced.map((name) => `${REPLACED_MAP}${name}`));
    if (pinned) return pinned;
    const maps = createNodeMaps({
      counterSlots: counterSlotsFor(highestSlotOf(alloc)),
      prefilterCapacity: prefilterSizeOf(view),
    });
    try {
      pinNodeMaps(maps, dir);
    } catch (e) {
      closeNodeMaps(maps);
      throw e;
    }
    changed.push('maps');
    return maps;
  } catch (e) {
    fail(
      `cannot create or open the maps of node ${target.node} under ${dir}: ${describeError(e)}`,
      undefined,
      e,
    );
  }
}

/** Counters big enough for every slot, a trie big enough for the lists, the node's switches. */
function prepareMaps(n: NodeApply, opts: ApplyOptions): void {
  const { target, maps, dir, changed } = n;
  const highestSlot = highestSlotOf(n.alloc);
  if (maps.counters.info.maxEntries <= highestSlot) {
    grownCounters(maps, dir, counterSlotsFor(highestSlot));
    changed.push('map:counters');
  }
  for (const [trie, ipv6] of [
    [maps.pfTrie, false],
    [maps.pfTrie6, true],
  ] as const) {
    const size = prefilterSizeOf(n.view, ipv6);
    if (trie.info.maxEntries < size)
      fail(
        `node ${target.node}: prefilter lists hold ${size} IPv${ipv6 ? 6 : 4} prefixes, the trie ${trie.info.maxEntries}; ` +
          `remove the node's dataplane and apply again to recreate it (at least ${Math.max(size, PREFILTER_MIN_CAPACITY)})`,
      );
  }
  // Before any program is loaded: a new node's programs start with the switches they should have.
  if (writeNodeConfig(maps, { flowEvents: opts.flowLogs ?? true }) && !changed.includes('maps'))
    changed.push('config');
}

/** Step 2's additions, made before the programs that use them run. */
interface Additions {
  tablePlan: ReturnType<typeof planTableWrites>;
  /** The tables' new tries; the caller closes them (installed ones live on in the policy map). */
  built: ReturnType<typeof buildTables>;
  shadow: NodeShadow;
  setPlan: ReturnType<typeof planSetDelta>;
  installed: ReturnType<typeof installTables>;
  slots: ReturnType<typeof changedSlots>;
}

/**
 * 2. additions: the difference from the shadow (new maps are empty; no shadow: one read), the
 * changed tables' tries pointed at, the counters of fresh slots zeroed.
 */
function addAll(n: NodeApply, kept: NodeShadow | undefined): Additions {
  const { maps, changed, meta, alloc } = n;
  const tablePlan = planTableWrites(n.view.ruleSets, n.tables, alloc, meta?.tables ?? [], maps.tables);
  const built = buildDecisionTables(n, tablePlan.writes);
  try {
    const shadow = changed.includes('maps') ? emptyNodeShadow(maps) : nodeShadowFor(maps, kept);
    const setPlan = planSetDelta(shadow, n.view, alloc);
    if (addSetMembers(maps, setPlan) > 0) changed.push('ipsets');
    const installed = installTables(maps.tables, built);
    changed.push(...installed.map((t) => `table:${t.endpoint}/${t.direction}`));
    reportFallbacks(n);
    const slots = changedSlots(meta?.alloc, alloc);
    // A new map is all zeroes already.
    if (!changed.includes('maps')) resetSlots(maps, slots.fresh);
    return { tablePlan, built, shadow, setPlan, installed, slots };
  } catch (e) {
    for (const map of built.values()) map.close();
    throw e;
  }
}

/**
 * Whether nothing of ours is in force on the node: no description and no link pinned (a first
 * apply, or the first after the node's dataplane was removed). Then a program that passed the
 * verifier is attached at once, while the others are still being verified (EarlyLinks).
 */
function nothingInForce(n: NodeApply): boolean {
  if (n.meta) return false;
  const links = join(n.dir, 'links');
  return !existsSync(links) || readdirSync(links).length === 0;
}

/**
 * The links of a node that had nothing in force, attached as their programs pass the verifier:
 * each attach waits out an RCU grace period under the rtnl lock (~10 ms; 200 hooks, 2.2 s at 50k
 * endpoints), which now overlaps the verification of the programs after it instead of following
 * all of them. The node's set members and tables are written first (step 2), so a program runs
 * with everything it reads from its first packet. The links stay unpinned, held by this process,
 * until every load has passed: a failure closes them, which detaches them, and the node has
 * nothing in force again (as before the apply); a process that dies meanwhile takes them along.
 */
class EarlyLinks {
  private readonly links = new Map<PlannedHook, Link>();

  constructor(private readonly target: NodeTarget) {}

  attach(hook: PlannedHook, program: Program): void {
    // A link pinned by an apply that did not finish: swapped as usual in step 3.
    if (isPinned(hook.linkPath)) return;
    try {
      this.links.set(hook, attachHook(this.target, hook, program));
    } catch (e) {
      failAttach(hook, e);
    }
  }

  /** The link attached here for `hook`, now the caller's (step 3 pins it). */
  take(hook: PlannedHook): Link | undefined {
    const link = this.links.get(hook);
    this.links.delete(hook);
    return link;
  }

  /** The apply failed: every early link is detached. */
  detachAll(): void {
    for (const link of this.links.values()) link.close();
    this.links.clear();
  }
}

/** Steps 1 to 6 on the open maps. */
async function applyPrograms(n: NodeApply, previous: IR | undefined, opts: ApplyOptions): Promise<void> {
  const { target, maps, changed, meta, alloc, memory } = n;
  // Until this apply succeeds the kernel holds neither the old shadow nor the new one for sure.
  const kept = memory.sets;
  memory.sets = undefined;
  prepareMaps(n, opts);
  const ids = mapIds(maps);
  const mapsChanged = !meta || JSON.stringify(meta.mapIds) !== JSON.stringify(ids);
  // Nothing in force: no old program can see the additions, so they go first and each program
  // is attached as soon as it is verified. Otherwise they wait for every load (a rejection
  // leaves all of it as it was).
  const early = nothingInForce(n) ? new EarlyLinks(target) : undefined;
  let added = early ? addAll(n, kept) : undefined;

  // 1. generate, load what changed (each load starts as soon as its program is generated)
  const loads = new PolicyLoads(maps, opts, early && ((hook, program) => early.attach(hook, program)));
  let hooks: PlannedHook[];
  const loaded = new Map<PlannedHook, Program>();
  try {
    try {
      const byName = new Map(n.interfaces.map((i) => [i.ifname, i]));
      hooks = planHooks(n.view, alloc, byName, n.dir, meta, mapsChanged, opts, memory.programs, (hook, at) =>
        loads.start(hook, at),
      );
    } catch (e) {
      await loads.discard();
      if (e instanceof ApplyError) throw e;
      fail(`cannot generate the programs of node ${target.node}: ${describeError(e)}`, undefined, e);
    }
    // A failure leaves the early links to the `finally` below, which detaches them.
    await loads.settle(loaded);
    added ??= addAll(n, kept);
    const { tablePlan, shadow, setPlan, installed, slots } = added;

    // 3. swap (the early links: pinned)
    swapAll(n, loaded, early);

    // 4. departures and removals
    detachDeparted(n, hooks);
    if (removeSetMembers(maps, setPlan) > 0 && !changed.includes('ipsets')) changed.push('ipsets');
    resetSlots(maps, slots.freed);
    if (dropTables(maps.tables, freedTableIndices(meta?.alloc, alloc)) > 0) changed.push('tables');

    // 5. prefilter
    const pf = applyPrefilter(target, n.view, previous, maps, n.dir, meta, n.fabric);
    changed.push(...pf.changed);
    if (pf.changed.length > 0) {
      forgetContentScan(maps.pfTrie.info.id);
      forgetContentScan(maps.pfTrie6.info.id);
    }
    if (changed.includes('config')) forgetContentScan(maps.config.info.id);
    changed.push(...applyNodePortsOf(n, opts));
    const xdp = applyFabricXdpOf(n, pf.state !== undefined, mapsChanged, opts);
    changed.push(...xdp.changed);

    // 6. description, garbage
    const description = describeNode(n, memory.meta, {
      version: 1,
      scope: target.scope,
      node: target.node,
      alloc,
      counterSlots: maps.counters.info.maxEntries,
      hooks: hooks.map((h) => h.state),
      ...(pf.state ? { prefilter: pf.state } : {}),
      ...(xdp.state ? { xdp: xdp.state } : {}),
      tables: [...tablePlan.kept, ...installed].sort((a, b) => a.index - b.index),
      tableFallbacks: n.tables.fallbacks,
      mapIds: ids,
    });
    collectGarbage(maps.ct, new Set(hooks.map((h) => h.state.ifindex)));
    memory.sets = rememberSets(maps, advanceNodeShadow(shadow, maps, setPlan));
    memory.meta = description;
    if (!opts.mutateProgram) memory.programs.keep(hooks.map((h) => h.cacheEntry));
  } finally {
    early?.detachAll();
    for (const program of loaded.values()) program.close();
    // Installed tries are held by the policy map now; the others were never in force.
    for (const map of added?.built.values() ?? []) map.close();
  }
}

/**
 * Writes the node's description when it differs from the one this instance wrote last (or none is
 * known); `appliedAt` is then when it last changed. Returns what the next apply starts from.
 */
function describeNode(
  n: NodeApply,
  last: NodeMemory['meta'],
  meta: Omit<NodeMeta, 'appliedAt'>,
): NonNullable<NodeMemory['meta']> {
  const json = JSON.stringify(meta);
  if (last && last.json === json) return last;
  const value: NodeMeta = { ...meta, appliedAt: new Date().toISOString() };
  writeMeta(n.dir, value);
  return { value, json };
}

/** The shadow of the set maps after an apply; the next fingerprint takes their contents from it. */
function rememberSets(maps: NodeMaps, shadow: NodeShadow): NodeShadow {
  seedContentDigest(maps.ipSets.fd, shadow.setSum.bytes(), memberCount(shadow.sets));
  seedContentDigest(maps.portSets.fd, shadow.portSum.bytes(), memberCount(shadow.ports));
  return shadow;
}

/** Step 5: the node-port load balancer on the fabric interfaces. */
function applyNodePortsOf(n: NodeApply, opts: ApplyOptions): string[] {
  try {
    return applyNodePorts(
      {
        netns: n.target.netns,
        dir: n.dir,
        fabric: n.fabric,
        ...(opts.verifierLog ? { verifierLog: true } : {}),
      },
      n.ir,
      n.target.node,
      n.memory,
    );
  } catch (e) {
    const unchanged = e instanceof NodePortLoadError ? '; the node-port programs in force are unchanged' : '';
    fail(
      `cannot apply the node ports of node ${n.target.node}: ${describeError(e)}${unchanged}`,
      undefined,
      e,
    );
  }
}

/**
 * Step 5, last: the fabric's XDP program, the prefilter then the node-port load balancer
 * (nodeport-xdp.ts), on the maps the steps before it filled.
 */
function applyFabricXdpOf(
  n: NodeApply,
  prefilter: boolean,
  mapsChanged: boolean,
  opts: ApplyOptions,
): ReturnType<typeof applyFabricXdp> {
  const nodePorts = opts.nodePortXdp === false ? undefined : nodePortAddressesOf(n.ir, n.target.node);
  const before =
    n.meta?.xdp ??
    (n.meta?.prefilter ? { hash: '', nodePorts: false, interfaces: n.meta.prefilter.interfaces } : undefined);
  try {
    return applyFabricXdp(
      {
        netns: n.target.netns,
        dir: n.dir,
        fabric: n.fabric,
        nodeMaps: programMaps(n.maps),
        mapsChanged,
        ...(opts.verifierLog ? { verifierLog: true } : {}),
      },
      { prefilter, ...(nodePorts ? { nodePorts } : {}) },
      before,
    );
  } catch (e) {
    const unchanged = e instanceof FabricXdpLoadError ? '; the XDP program in force is unchanged' : '';
    fail(
      `cannot apply the XDP program of node ${n.target.node}: ${describeError(e)}${unchanged}`,
      undefined,
      e,
    );
  }
}

/** The changed tables' tries, all built before anything in force changes (or none). */
function buildDecisionTables(
  n: NodeApply,
  writes: Parameters<typeof buildTables>[0],
): ReturnType<typeof buildTables> {
  try {
    return buildTables(writes);
  } catch (e) {
    fail(
      `cannot write the decision tables of node ${n.target.node}: ${describeError(e)}; the policy in force is unchanged`,
      undefined,
      e,
    );
  }
}

/** Rule sets that carry a table but keep the walk on this node, reported when that changes. */
function reportFallbacks(n: NodeApply): void {
  const said = (f: TableFallback): string => `table-fallback:${f.endpoint}/${f.direction}: ${f.reason}`;
  const before = new Set((n.meta?.tableFallbacks ?? []).map(said));
  for (const f of n.tables.fallbacks) if (!before.has(said(f))) n.changed.push(said(f));
}

function failAttach(hook: PlannedHook, e: unknown): never {
  // describeError says what the kernel lacks when that is why (MissingKernelFeatureError).
  fail(
    `cannot attach the ${hook.state.direction} program of ${hook.state.endpoint} on ${hook.state.ifname}: ${describeError(e)}`,
    undefined,
    e,
  );
}

function swapAll(n: NodeApply, loaded: ReadonlyMap<PlannedHook, Program>, early?: EarlyLinks): void {
  for (const [hook, program] of loaded) {
    const link = early?.take(hook);
    try {
      if (link) pinLink(link, hook.linkPath);
      else swapTcx(n.target, hook, program);
    } catch (e) {
      failAttach(hook, e);
    }
    n.changed.push(`program:${hook.state.endpoint}/${hook.state.direction}`);
  }
}

/** Detaches the hooks of endpoints (or interfaces) that are gone. */
function detachDeparted(n: NodeApply, hooks: readonly PlannedHook[]): void {
  for (const old of n.meta?.hooks ?? []) {
    const stays = hooks.some(
      (h) =>
        h.state.endpoint === old.endpoint &&
        h.state.direction === old.direction &&
        h.state.ifname === old.ifname,
    );
    if (!stays) {
      dropPinnedLink(tcxLinkPin(n.dir, old.ifname, hookFor(old.direction)));
      n.changed.push(`detached:${old.endpoint}/${old.direction}`);
    }
  }
}

/** Detaches every link of the node and removes its pins (and the scope directory once empty). */
export function removeNode(target: NodeTarget): void {
  const dir = nodeDir(target.scope, target.node);
  const links = join(dir, 'links');
  if (existsSync(links)) for (const name of readdirSync(links)) dropPinnedLink(join(links, name));
  rmSync(dir, { recursive: true, force: true });
  const scopeDir = dirname(dir);
  // The load balancer serves every node of the scope: it goes with the last one.
  if (existsSync(scopeDir) && readdirSync(scopeDir).every((n) => n === SERVICES_DIR))
    removeServices(target.scope);
  try {
    if (existsSync(scopeDir) && readdirSync(scopeDir).length === 0) rmdirSync(scopeDir);
  } catch {
    // another node of the scope is being written meanwhile
  }
}
