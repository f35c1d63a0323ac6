/**
 * Applying a node's node-port load balancer (nodeport-programs.ts) on its fabric interfaces:
 *
 *   0. nothing at all when the shadow (nodeport-shadow.ts) was made from the same IR arrays;
 *   1. generate both programs and load the ones whose code or maps changed — a verifier
 *      rejection stops here, with nothing in force touched;
 *   2. bring np_svc / np_backends to the IR (backend slots first, so a slot below a count is
 *      always filled: services-sync.ts);
 *   3. swap the programs on their pinned tcx links (BPF_LINK_UPDATE: no gap), or attach new links;
 *      links on interfaces that stopped being the fabric go.
 *
 * Pins, beside the node's policy objects (so removeNode, the fingerprint and repair see them):
 *
 *     <node dir>/maps/{np_svc,np_backends,np_nat,np_affinity}
 *     <node dir>/links/np-<ifname>-<ingress|egress>-<code hash>
 */
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  attachTcx,
  BpfMap,
  isPinned,
  Link,
  Program,
  VerifierError,
  withNetns,
  type MapBase,
} from '../../bpf/index.js';
import type { IrChange } from '../../ir/delta.js';
import type { IR } from '../../ir/types.js';
import type { NetnsInterface } from './iface.js';
import { mapPinPath } from './maps.js';
import {
  NP_CAPACITY,
  NP_MAP,
  natKey,
  natValue,
  npAffinityKey,
  npAffinityValue,
  npBackendValue,
  npSvcKey,
} from './nodeport-layout.js';
import { NODEPORT_PROGRAM_NAMES, nodePortProgram, type NodePortHook } from './nodeport-programs.js';
import { fabricKey, nodePortCode, type NodePortShadow } from './nodeport-shadow.js';
import { desiredNodePorts, reachedFromOutside } from './nodeport-sync.js';
import { dropPinnedLink } from './pinned-link.js';
import { backendKey, svcValue } from './services-layout.js';
import { applyServiceSync, planServiceDelta, planSize, type ServiceMaps } from './services-sync.js';
import {
  advanceServicesShadow,
  emptyServicesShadow,
  readServicesShadow,
  type ServiceMapLayout,
  type ServicesShadow,
} from './services-shadow.js';

/** The node-port maps' elements: IPv4 addresses (4 bytes), for their content sums. */
const NP_LAYOUT: ServiceMapLayout = { svcKey: npSvcKey, svcValue, backendKey, backendValue: npBackendValue };
import { seedContentDigest } from './map-contents.js';

const HOOKS: readonly NodePortHook[] = ['ingress', 'egress'];
const LINK_PREFIX = 'np-';

export interface NodePortMaps extends ServiceMaps {
  nat: MapBase;
  affinity: MapBase;
}

export interface NodePortTarget {
  netns: string;
  /** The node's pin directory. */
  dir: string;
  /** The interfaces traffic from outside enters by (the fabric). */
  fabric: readonly NetnsInterface[];
  /** The whole verifier log in a rejection's error. */
  verifierLog?: boolean;
}

/** A loaded program's rejection, with the verifier's reason; the caller says what stayed in force. */
export class NodePortLoadError extends Error {}

function specs(): { name: string; create: () => MapBase; open: (path: string) => MapBase }[] {
  const hash = <K, V>(
    name: string,
    type: 'hash' | 'lru_hash',
    key: Parameters<typeof BpfMap.create<K, V>>[0]['key'],
    value: Parameters<typeof BpfMap.create<K, V>>[0]['value'],
    maxEntries: number,
  ): { name: string; create: () => MapBase; open: (path: string) => MapBase } => ({
    name,
    create: () => BpfMap.create({ type, name, key, value, maxEntries }),
    open: (path) => BpfMap.fromPin(path, key, value),
  });
  return [
    hash(NP_MAP.services, 'hash', npSvcKey, svcValue, NP_CAPACITY.services),
    hash(NP_MAP.backends, 'hash', backendKey, npBackendValue, NP_CAPACITY.backends),
    hash(NP_MAP.nat, 'lru_hash', natKey, natValue, NP_CAPACITY.nat),
    hash(NP_MAP.affinity, 'lru_hash', npAffinityKey, npAffinityValue, NP_CAPACITY.affinity),
  ];
}

function closeMaps(maps: Record<string, MapBase>): void {
  for (const m of Object.values(maps)) m.close();
}

/** The pinned maps, or new ones pinned now (fresh = true: every program must be loaded against them). */
function openOrCreateMaps(dir: string): { maps: Record<string, MapBase>; fresh: boolean } {
  const all = specs();
  const maps: Record<string, MapBase> = {};
  try {
    if (all.every((s) => isPinned(mapPinPath(dir, s.name)))) {
      for (const s of all) maps[s.name] = s.open(mapPinPath(dir, s.name));
      return { maps, fresh: false };
    }
    mkdirSync(join(dir, 'maps'), { recursive: true });
    for (const s of all) {
      const m = s.create();
      maps[s.name] = m;
      rmSync(mapPinPath(dir, s.name), { force: true });
      m.pin(mapPinPath(dir, s.name));
    }
    return { maps, fresh: true };
  } catch (e) {
    closeMaps(maps);
    throw e;
  }
}

function serviceMaps(maps: Record<string, MapBase>): ServiceMaps {
  return {
    services: maps[NP_MAP.services] as ServiceMaps['services'],
    backends: maps[NP_MAP.backends] as ServiceMaps['backends'],
  };
}

function linkDir(dir: string): string {
  return join(dir, 'links');
}

function linkName(ifname: string, hook: NodePortHook, hash: string): string {
  return `${LINK_PREFIX}${ifname}-${hook}-${hash}`;
}

function pinnedNodePortLinks(dir: string): string[] {
  const links = linkDir(dir);
  return existsSync(links) ? readdirSync(links).filter((n) => n.startsWith(LINK_PREFIX)) : [];
}

/** Removes the node-port links and maps of a node (nothing reaches it from outside any more). */
export function removeNodePorts(dir: string): boolean {
  const links = pinnedNodePortLinks(dir);
  const maps = specs().filter((s) => isPinned(mapPinPath(dir, s.name)));
  for (const name of links) dropPinnedLink(join(linkDir(dir), name));
  for (const s of maps) rmSync(mapPinPath(dir, s.name), { force: true });
  return links.length + maps.length > 0;
}

interface PlannedLink {
  iface: NetnsInterface;
  hook: NodePortHook;
  want: string;
  current: string | undefined;
}

function planLinks(dir: string, fabric: readonly NetnsInterface[], hashes: Record<NodePortHook, string>) {
  const pinned = pinnedNodePortLinks(dir);
  const planned: PlannedLink[] = [];
  for (const iface of fabric)
    for (const hook of HOOKS) {
      const prefix = `${LINK_PREFIX}${iface.ifname}-${hook}-`;
      planned.push({
        iface,
        hook,
        want: linkName(iface.ifname, hook, hashes[hook]),
        current: pinned.find((n) => n.startsWith(prefix)),
      });
    }
  const kept = new Set(planned.map((p) => p.current).filter((n): n is string => n !== undefined));
  return { planned, stale: pinned.filter((n) => !kept.has(n)) };
}

/** Loads a program on the caller's thread; a rejection becomes a NodePortLoadError naming the hook. */
function load(
  hook: NodePortHook,
  code: ReturnType<typeof nodePortProgram>,
  maps: Record<string, MapBase>,
  fullLog: boolean,
): Program {
  try {
    return Program.load({
      name: NODEPORT_PROGRAM_NAMES[hook],
      type: 'sched_cls',
      expectedAttachType: hook === 'ingress' ? 'tcx_ingress' : 'tcx_egress',
      instructions: code,
      maps,
      ...(fullLog ? { fullLog: true } : {}),
    });
  } catch (e) {
    const reason = e instanceof VerifierError ? (fullLog ? e.withLog() : e.message) : String(e);
    throw new NodePortLoadError(
      `the node-port ${hook} program (${NODEPORT_PROGRAM_NAMES[hook]}) was not loaded: ${reason}`,
      {
        cause: e,
      },
    );
  }
}

/** Swaps the program on the pinned link when it still holds its hook, else attaches a new link. */
function swap(target: NodePortTarget, p: PlannedLink, program: Program): void {
  const links = linkDir(target.dir);
  if (p.current) {
    const path = join(links, p.current);
    const link = Link.fromPin(path);
    let updated = false;
    try {
      if (link.info().ifindex === p.iface.ifindex) {
        link.update(program);
        updated = true;
      } else link.detach();
    } catch {
      // the link went with its interface: attach anew below
    } finally {
      link.close();
    }
    if (updated) {
      if (p.current !== p.want) renameSync(path, join(links, p.want));
      return;
    }
    rmSync(path, { force: true });
  }
  mkdirSync(links, { recursive: true });
  const link = withNetns(target.netns, () =>
    attachTcx(program, { ifname: p.iface.ifname, direction: p.hook }),
  );
  try {
    link.pin(join(links, p.want));
  } finally {
    link.close();
  }
}

/** The shadow of np_svc / np_backends to plan from: kept when it is of these very maps, else one read. */
function mapsShadow(
  maps: Record<string, MapBase>,
  fresh: boolean,
  mapIds: string,
  kept: NodePortShadow | undefined,
): ServicesShadow {
  if (fresh) return emptyServicesShadow(NP_LAYOUT);
  if (kept?.installed?.mapIds === mapIds) return kept.installed.maps;
  return readServicesShadow(serviceMaps(maps), NP_LAYOUT);
}

/** After writing np_svc / np_backends from a shadow: the next fingerprint takes their digests from it. */
function seedNodePortContents(maps: Record<string, MapBase>, shadow: ServicesShadow): void {
  let backends = 0;
  for (const slots of shadow.state.slots.values()) backends += slots.length;
  const elements = shadow.state.services.size + backends;
  seedContentDigest(serviceMaps(maps).services.fd, shadow.services.bytes(), elements);
  seedContentDigest(serviceMaps(maps).backends.fd, shadow.backends.bytes(), elements);
}

/**
 * Brings the node's node-port load balancer to the IR; returns what changed. `memory` holds the
 * shadow of the last apply (nodeport-shadow.ts): with it, an IR whose service tables and nodes are
 * the same arrays on the same fabric costs nothing, and a changed service writes only its entries.
 */
/** Ids of the tables reached from outside (reachedFromOutside), per IR services array. */
const outsideTables = new WeakMap<IR['services'], ReadonlySet<string>>();

/**
 * The tables of `services` reached from outside: derived from those of `change.from` by the
 * change when known (no walk of 10k tables per change), else by one walk.
 */
function outsideTablesOf(services: IR['services'], change?: IrChange): ReadonlySet<string> {
  let ids = outsideTables.get(services);
  if (ids) return ids;
  const before = change && outsideTables.get(change.from.services);
  if (change && before) {
    const next = new Set(before);
    const { added, changed, removed } = change.delta.services;
    for (const id of removed) next.delete(id);
    for (const id of [...added, ...changed]) {
      const t = change.services.get(id);
      if (t && reachedFromOutside(t)) next.add(id);
      else next.delete(id);
    }
    ids = next;
  } else ids = new Set(services.filter(reachedFromOutside).map((t) => t.id));
  outsideTables.set(services, ids);
  return ids;
}

/**
 * After `change` of service tables alone: whether the node-port load balancer stays as it is (no
 * table it names, before or after, is reached from outside), and then the shadow follows the new
 * IR without a plan. False when that cannot be told from the change (no shadow of its IR).
 */
export function keepNodePorts(ir: IR, change: IrChange, memory: { nodePorts?: NodePortShadow }): boolean {
  const kept = memory.nodePorts;
  if (!kept || kept.services !== change.from.services || kept.nodes !== ir.nodes) return false;
  const before = outsideTablesOf(change.from.services);
  const after = outsideTablesOf(ir.services, change);
  const { added, changed, removed } = change.delta.services;
  for (const id of [...added, ...changed, ...removed]) if (before.has(id) || after.has(id)) return false;
  memory.nodePorts = { ...kept, services: ir.services };
  return true;
}

export function applyNodePorts(
  target: NodePortTarget,
  ir: IR,
  node: string,
  memory: { nodePorts?: NodePortShadow } = {},
): string[] {
  const kept = memory.nodePorts;
  delete memory.nodePorts;
  const fabric = fabricKey(target.fabric);
  if (kept && kept.services === ir.services && kept.nodes === ir.nodes && kept.fabric === fabric) {
    memory.nodePorts = kept;
    return [];
  }
  const desired = desiredNodePorts(ir, node);
  const base = { services: ir.services, nodes: ir.nodes, fabric };
  if (desired.ports.length === 0 || !desired.addresses || target.fabric.length === 0) {
    const removed = removeNodePorts(target.dir);
    memory.nodePorts = base;
    return removed ? ['nodeport:removed'] : [];
  }
  const { codes, hashes } = nodePortCode(desired.addresses);
  const changed: string[] = [];
  const { maps, fresh } = openOrCreateMaps(target.dir);
  if (fresh) changed.push('nodeport:maps');
  const loaded = new Map<NodePortHook, Program>();
  try {
    const mapIds = Object.values(maps)
      .map((m) => m.info.id)
      .join(',');
    // The links are as the last apply left them while the maps, programs and fabric are.
    const linksKept =
      !fresh &&
      kept?.installed?.mapIds === mapIds &&
      kept.fabric === fabric &&
      kept.installed.hashes.ingress === hashes.ingress &&
      kept.installed.hashes.egress === hashes.egress;
    const { planned, stale } = linksKept
      ? { planned: [], stale: [] }
      : planLinks(target.dir, target.fabric, hashes);
    const todo = planned.filter(
      (p) => fresh || p.current !== p.want || !isPinned(join(linkDir(target.dir), p.want)),
    );
    // 1. load: a rejection leaves everything in force as it was
    for (const p of todo)
      if (!loaded.has(p.hook))
        loaded.set(p.hook, load(p.hook, codes[p.hook], maps, target.verifierLog ?? false));
    // 2. maps, by difference from the shadow
    const shadow = mapsShadow(maps, fresh, mapIds, kept);
    const plan = planServiceDelta(shadow.state, desired);
    if (planSize(plan) > 0) {
      applyServiceSync(serviceMaps(maps), plan);
      changed.push('nodeport:services');
    }
    advanceServicesShadow(shadow, plan);
    seedNodePortContents(maps, shadow);
    // 3. links
    for (const p of todo) {
      swap(target, p, loaded.get(p.hook) as Program);
      changed.push(`nodeport:${p.iface.ifname}/${p.hook}`);
    }
    for (const name of stale) {
      dropPinnedLink(join(linkDir(target.dir), name));
      changed.push(`nodeport:detached:${name}`);
    }
    memory.nodePorts = { ...base, installed: { mapIds, hashes, maps: shadow } };
  } finally {
    for (const program of loaded.values()) program.close();
    closeMaps(maps);
  }
  return changed;
}
