/**
 * Connect-time load balancing for a scope (a lab): one shared set of service maps and eight cgroup
 * sock_addr programs (four per socket family), attached once with bpf_links at the scope's cgroup root
 * `<cgroup2 mount>/switchyard/<scope>`, which holds every pod's cgroup. Services are
 * cluster-wide, so almost nothing is per node here: every node's apply calls applyServices, the
 * first brings the maps to the IR and the others find nothing to do. The exception is the pod →
 * node map of internalTrafficPolicy Local, where each node writes its own pods (services-pods.ts).
 * Pins:
 *
 *     /sys/fs/bpf/switchyard/<scope>/_services/maps/{svc,svc_backends,svc_affinity,svc_revnat,svc_pod_node}
 *     /sys/fs/bpf/switchyard/<scope>/_services/links/<hook>-<code hash>
 *
 * `_services` starts with a character no node directory can start with (see paths.ts).
 *
 * Maps pinned by a version with another element layout (the IPv4-only one had 4-byte addresses)
 * are replaced at the next apply, and every link is reloaded against the new maps: the programs
 * of the old layout would misread the new maps (openServiceMaps).
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import {
  attachCgroup,
  BpfMap,
  closeFd,
  ensureBpffs,
  isPinned,
  Link,
  openMapPin,
  pinScopeDir,
  Program,
  type Codec,
  type MapBase,
} from '../../bpf/index.js';
import type { IrChange } from '../../ir/delta.js';
import type { IR } from '../../ir/types.js';
import { withDirectoryLock } from '../../netns/libc.js';
import {
  affinityKey,
  affinityValue,
  backendKey,
  backendValue,
  podNodeKey,
  podNodeValue,
  revnatKey,
  revnatValue,
  SVC_CAPACITY,
  SVC_MAP,
  svcKey,
  svcValue,
  type AffinityKey,
  type AffinityValue,
  type PodNodeKey,
  type PodNodeValue,
  type RevnatKey,
  type RevnatValue,
} from './services-layout.js';
import { serviceProgramHash, servicePrograms, type ServiceProgram } from './services-programs.js';
import {
  applyServiceSync,
  desiredServices,
  desiredServicesOf,
  planServiceDelta,
  planSize,
  type ServiceMaps,
} from './services-sync.js';
import {
  advanceServicesShadow,
  emptyServicesShadow,
  readServicesShadow,
  sumsAfter,
  type ServicesShadow,
} from './services-shadow.js';
import { dropPinnedLink } from './pinned-link.js';
import {
  readServicesRecord,
  recordServices,
  seedServiceContents,
  servicesRecordFor,
  type KnownServiceContents,
} from './map-contents.js';
import { withOutsideAddresses } from './services-outside.js';
import { syncPodNodes, type NodePods, type PodNodeShadow } from './services-pods.js';

export const SERVICES_DIR = '_services';

export interface AllServiceMaps extends ServiceMaps {
  affinity: BpfMap<AffinityKey, AffinityValue>;
  revnat: BpfMap<RevnatKey, RevnatValue>;
  podNode: BpfMap<PodNodeKey, PodNodeValue>;
}

export function servicesDir(scope: string): string {
  return join(pinScopeDir(scope), SERVICES_DIR);
}

/** The cgroup2 directory the programs attach to; hooks there cover every cgroup below it. */
export function serviceCgroup(scope: string, mounts = readFileSync('/proc/mounts', 'utf8')): string {
  const line = mounts.split('\n').find((l) => l.split(' ')[2] === 'cgroup2');
  const mount = line?.split(' ')[1]?.replace(/\\040/g, ' ');
  if (!mount) throw new Error('no cgroup2 file system is mounted: connect-time load balancing needs one');
  return join(mount, 'switchyard', scope);
}

function mapPath(dir: string, name: string): string {
  return join(dir, 'maps', name);
}

function linkDir(dir: string): string {
  return join(dir, 'links');
}

function createMaps(): AllServiceMaps {
  const created: MapBase[] = [];
  const make = <K, V>(m: BpfMap<K, V>): BpfMap<K, V> => {
    created.push(m);
    return m;
  };
  try {
    return {
      services: make(
        BpfMap.create({
          type: 'hash',
          name: SVC_MAP.services,
          key: svcKey,
          value: svcValue,
          maxEntries: SVC_CAPACITY.services,
        }),
      ),
      backends: make(
        BpfMap.create({
          type: 'hash',
          name: SVC_MAP.backends,
          key: backendKey,
          value: backendValue,
          maxEntries: SVC_CAPACITY.backends,
        }),
      ),
      affinity: make(
        BpfMap.create({
          type: 'lru_hash',
          name: SVC_MAP.affinity,
          key: affinityKey,
          value: affinityValue,
          maxEntries: SVC_CAPACITY.affinity,
        }),
      ),
      revnat: make(
        BpfMap.create({
          type: 'lru_hash',
          name: SVC_MAP.revnat,
          key: revnatKey,
          value: revnatValue,
          maxEntries: SVC_CAPACITY.revnat,
        }),
      ),
      podNode: make(
        BpfMap.create({
          type: 'hash',
          name: SVC_MAP.podNode,
          key: podNodeKey,
          value: podNodeValue,
          maxEntries: SVC_CAPACITY.podNode,
        }),
      ),
    };
  } catch (e) {
    for (const m of created) m.close();
    throw e;
  }
}

function mapList(maps: AllServiceMaps): [string, MapBase][] {
  return [
    [SVC_MAP.services, maps.services],
    [SVC_MAP.backends, maps.backends],
    [SVC_MAP.affinity, maps.affinity],
    [SVC_MAP.revnat, maps.revnat],
    [SVC_MAP.podNode, maps.podNode],
  ];
}

export function closeServiceMaps(maps: AllServiceMaps): void {
  for (const [, m] of mapList(maps)) m.close();
}

/** The key and value codecs of each map, by name: the layout pinned maps must have. */
const LAYOUT: Record<string, [Codec<unknown>, Codec<unknown>]> = {
  [SVC_MAP.services]: [svcKey, svcValue],
  [SVC_MAP.backends]: [backendKey, backendValue],
  [SVC_MAP.affinity]: [affinityKey, affinityValue],
  [SVC_MAP.revnat]: [revnatKey, revnatValue],
  [SVC_MAP.podNode]: [podNodeKey, podNodeValue],
};

/** Whether a pinned map has this version's key and value sizes (an older layout does not). */
function hasLayout(path: string, name: string): boolean {
  const [key, value] = LAYOUT[name] ?? [];
  const m = openMapPin(path);
  try {
    return m.info.keySize === key?.size && m.info.valueSize === value?.size;
  } finally {
    closeFd(m.fd);
  }
}

/**
 * The pinned maps, or undefined when any is missing or has another layout (then the caller
 * creates a new set and pins it over the old one); those of another layout are added to
 * `replaced`. The whole set is replaced, not one map: the programs read them together.
 */
export function openServiceMaps(scope: string, replaced: string[] = []): AllServiceMaps | undefined {
  const dir = servicesDir(scope);
  const names = Object.values(SVC_MAP);
  if (!names.every((n) => isPinned(mapPath(dir, n)))) return undefined;
  const stale = names.filter((n) => !hasLayout(mapPath(dir, n), n));
  if (stale.length > 0) {
    replaced.push(...stale);
    return undefined;
  }
  return {
    services: BpfMap.fromPin(mapPath(dir, SVC_MAP.services), svcKey, svcValue),
    backends: BpfMap.fromPin(mapPath(dir, SVC_MAP.backends), backendKey, backendValue),
    affinity: BpfMap.fromPin(mapPath(dir, SVC_MAP.affinity), affinityKey, affinityValue),
    revnat: BpfMap.fromPin(mapPath(dir, SVC_MAP.revnat), revnatKey, revnatValue),
    podNode: BpfMap.fromPin(mapPath(dir, SVC_MAP.podNode), podNodeKey, podNodeValue),
  };
}

/**
 * Makes the hook run `p`: nothing when its link already runs this code against these maps, an
 * atomic BPF_LINK_UPDATE of the pinned link when the code (or the maps) changed, else a new link.
 */
function ensureLink(
  dir: string,
  cgroup: string,
  p: ServiceProgram,
  maps: AllServiceMaps,
  reload: boolean,
): boolean {
  const links = linkDir(dir);
  const want = join(links, `${p.hook}-${hashOf(p)}`);
  const pinned = existsSync(links) ? readdirSync(links).filter((n) => n.startsWith(`${p.hook}-`)) : [];
  if (!reload && pinned.length === 1 && isPinned(want)) return false;
  const program = Program.load({
    name: p.name,
    type: 'cgroup_sock_addr',
    expectedAttachType: p.attachType,
    instructions: p.program,
    maps: Object.fromEntries(mapList(maps)),
  });
  try {
    const [current, ...extra] = pinned.map((n) => join(links, n));
    for (const e of extra) dropPinnedLink(e);
    if (current) {
      const link = Link.fromPin(current);
      let updated = false;
      try {
        link.update(program);
        updated = true;
      } catch {
        link.detach(); // its cgroup was recreated: attach anew below
      } finally {
        link.close();
      }
      if (updated) {
        if (current !== want) renameSync(current, want);
        return true;
      }
      rmSync(current, { force: true });
    }
    mkdirSync(links, { recursive: true });
    const link = attachCgroup(program, { cgroup, attachType: p.attachType });
    try {
      link.pin(want);
    } finally {
      link.close();
    }
    return true;
  } finally {
    program.close();
  }
}

/** One node's part of the services apply: its pods' cgroups and its shadow of what it wrote there. */
export interface ServicesNode extends NodePods {
  shadow: { pods?: PodNodeShadow };
}

/**
 * Brings the scope's load balancer to the IR; returns what changed (empty when nothing did).
 * Every node's agent syncs these lab-wide maps and links, so the sync holds a lock on the
 * scope's pin directory: two agents starting together would otherwise both pin a new link.
 * `node`, when given, writes that node's pods into the pod → node map.
 */
export function applyServices(
  scope: string,
  ir: IR,
  shadows: Map<string, ScopeServicesShadow> = new Map(),
  node?: ServicesNode,
  change?: IrChange,
): string[] {
  ensureBpffs();
  const scopeDir = pinScopeDir(scope);
  mkdirSync(scopeDir, { recursive: true });
  return withDirectoryLock(scopeDir, () => {
    try {
      return syncServices(scope, ir, shadows, node, change);
    } catch (e) {
      shadows.delete(scope);
      if (node) delete node.shadow.pods;
      throw e;
    }
  });
}

let generated: ServiceProgram[] | undefined;
const hashes = new WeakMap<ServiceProgram, string>();

function hashOf(p: ServiceProgram): string {
  let hash = hashes.get(p);
  if (hash === undefined) hashes.set(p, (hash = serviceProgramHash(p)));
  return hash;
}

/** The load balancer's programs do not depend on the IR: generated (and hashed) once per process. */
function programsOnce(): ServiceProgram[] {
  generated ??= servicePrograms();
  return generated;
}

/** A shadow of the scope's service maps, and which maps (kernel ids) it is a shadow of. */
export interface ScopeServicesShadow {
  mapIds: [number, number];
  shadow: ServicesShadow;
  /**
   * The IR arrays the maps were last synced from (all the desired contents are computed from):
   * an incremental IR hands the same arrays when no service and no node changed.
   */
  from?: { services: IR['services']; nodes: IR['nodes'] };
  /**
   * Every entry of the shadow was written from a table (a sync of the whole IR's tables into it):
   * a change of a few tables can then be planned from those tables alone.
   */
  byTable?: boolean;
}

function knownContents(shadow: ServicesShadow): KnownServiceContents {
  return {
    services: shadow.services.bytes(),
    backends: shadow.backends.bytes(),
    elements: shadow.elements,
  };
}

function sameRecord(known: KnownServiceContents, recorded: Buffer | undefined): boolean {
  return recorded !== undefined && servicesRecordFor(known).equals(recorded);
}

/**
 * Writes what `desired` needs into the maps, from our shadow of them when the digest the last
 * writer recorded says the maps still hold it. Another node's agent may have written since: if
 * the record is what our own plan would leave, that agent wrote exactly it and nothing is
 * written; otherwise the maps are read once. Returns whether anything was written.
 */
function writeServices(
  dir: string,
  maps: AllServiceMaps,
  desired: ReturnType<typeof desiredServices>,
  kept: ServicesShadow | undefined,
): { shadow: ServicesShadow; wrote: boolean } {
  const recorded = readServicesRecord(dir);
  let shadow = kept;
  if (shadow && !sameRecord(knownContents(shadow), recorded)) {
    const plan = planServiceDelta(shadow.state, desired);
    const after = sumsAfter(shadow, plan);
    const known = { services: after.services.bytes(), backends: after.backends.bytes(), elements: 0 };
    if (sameRecord(known, recorded)) {
      advanceServicesShadow(shadow, plan);
      seedServiceContents({ services: maps.services.fd, backends: maps.backends.fd }, knownContents(shadow));
      return { shadow, wrote: false };
    }
    shadow = undefined;
  }
  shadow ??= readServicesShadow(maps);
  const plan = planServiceDelta(shadow.state, desired);
  if (planSize(plan) > 0) applyServiceSync(maps, plan);
  advanceServicesShadow(shadow, plan);
  const known = knownContents(shadow);
  if (planSize(plan) > 0 || !sameRecord(known, recorded)) recordServices(dir, known);
  seedServiceContents({ services: maps.services.fd, backends: maps.backends.fd }, known);
  return { shadow, wrote: planSize(plan) > 0 };
}

/**
 * Our shadow, when the IR arrays the maps' contents are computed from are the ones we synced them
 * from (checked by the caller), the maps are the same and the last writer's record says they
 * still hold it: then there is nothing to plan (at 10k services planning alone walks every
 * service on every apply, label and policy changes included).
 */
function unchangedShadow(
  dir: string,
  before: ScopeServicesShadow,
  ids: [number, number],
): ServicesShadow | undefined {
  if (before.mapIds[0] !== ids[0] || before.mapIds[1] !== ids[1]) return undefined;
  return sameRecord(knownContents(before.shadow), readServicesRecord(dir)) ? before.shadow : undefined;
}

function syncServices(
  scope: string,
  ir: IR,
  shadows: Map<string, ScopeServicesShadow>,
  node: ServicesNode | undefined,
  change: IrChange | undefined,
): string[] {
  const dir = servicesDir(scope);
  const before = shadows.get(scope);
  if (before?.from && before.from.nodes === ir.nodes) {
    const unchanged = before.from.services === ir.services;
    // The IR moved on from the one the maps were synced from by a few tables.
    const delta =
      !unchanged && before.byTable && change?.from.services === before.from.services && !change.delta.nodes
        ? change
        : undefined;
    if (unchanged || delta) {
      const maps = openServiceMaps(scope);
      if (maps) {
        try {
          const ids: [number, number] = [maps.services.info.id, maps.backends.info.id];
          const shadow = unchangedShadow(dir, before, ids);
          if (shadow && !delta) return keepServices(scope, maps, shadow, ir, node);
          if (shadow && delta) {
            shadows.delete(scope);
            const changed = syncTables(dir, maps, shadow, ir, delta);
            shadows.set(scope, { ...before, shadow, from: { services: ir.services, nodes: ir.nodes } });
            return [...changed, ...syncPodsAndLinks(scope, maps, ir, node, false)];
          }
        } finally {
          closeServiceMaps(maps);
        }
      }
    }
  }
  const desired = withOutsideAddresses(desiredServices(ir), ir);
  if (desired.ports.length === 0) {
    shadows.delete(scope);
    if (!existsSync(dir)) return [];
    removeServices(scope);
    return ['services:removed'];
  }
  const changed: string[] = [];
  const replaced: string[] = [];
  let maps = openServiceMaps(scope, replaced);
  let fresh = false;
  if (!maps) {
    // Links of a previous set of maps would keep running against those: replaced below.
    maps = createMaps();
    fresh = true;
    try {
      mkdirSync(join(dir, 'maps'), { recursive: true });
      for (const [name, m] of mapList(maps)) {
        rmSync(mapPath(dir, name), { force: true });
        m.pin(mapPath(dir, name));
      }
    } catch (e) {
      closeServiceMaps(maps);
      throw e;
    }
    changed.push('services:maps', ...replaced.map((name) => `services:map:new-layout:${name}`));
  }
  try {
    const ids: [number, number] = [maps.services.info.id, maps.backends.info.id];
    const kept = fresh
      ? emptyServicesShadow()
      : before && before.mapIds[0] === ids[0] && before.mapIds[1] === ids[1]
        ? before.shadow
        : undefined;
    shadows.delete(scope);
    const { shadow, wrote } = writeServices(dir, maps, desired, kept);
    shadows.set(scope, {
      mapIds: ids,
      shadow,
      from: { services: ir.services, nodes: ir.nodes },
      byTable: true,
    });
    if (wrote) changed.push('services');
    changed.push(...syncPodsAndLinks(scope, maps, ir, node, fresh));
  } finally {
    closeServiceMaps(maps);
  }
  return changed;
}

/**
 * The maps hold what our shadow says (the record agrees) and the IR moved on by `change`: only
 * the tables it names are planned and written, their entries found through the shadow.
 */
function syncTables(
  dir: string,
  maps: AllServiceMaps,
  shadow: ServicesShadow,
  ir: IR,
  change: IrChange,
): string[] {
  const { delta } = change;
  const ids = new Set([...delta.services.added, ...delta.services.changed, ...delta.services.removed]);
  const tables = [...delta.services.added, ...delta.services.changed].map((id) => {
    const t = change.services.get(id);
    if (!t) throw new Error(`the change names service table ${id} but does not carry it`);
    return t;
  });
  const desired = withOutsideAddresses(desiredServicesOf(ir, tables), ir, tables);
  const plan = planServiceDelta(shadow.state, desired, ids);
  if (planSize(plan) > 0) applyServiceSync(maps, plan);
  advanceServicesShadow(shadow, plan);
  const known = knownContents(shadow);
  if (planSize(plan) > 0) recordServices(dir, known);
  seedServiceContents({ services: maps.services.fd, backends: maps.backends.fd }, known);
  return planSize(plan) > 0 ? ['services'] : [];
}

/** The service maps hold what our unchanged shadow says: only the pods and links are checked. */
function keepServices(
  scope: string,
  maps: AllServiceMaps,
  shadow: ServicesShadow,
  ir: IR,
  node: ServicesNode | undefined,
): string[] {
  seedServiceContents({ services: maps.services.fd, backends: maps.backends.fd }, knownContents(shadow));
  return syncPodsAndLinks(scope, maps, ir, node, false);
}

/** This node's pods in the pod → node map, and the load balancer's cgroup links. */
function syncPodsAndLinks(
  scope: string,
  maps: AllServiceMaps,
  ir: IR,
  node: ServicesNode | undefined,
  fresh: boolean,
): string[] {
  const changed: string[] = [];
  if (node) {
    const kept = fresh ? undefined : node.shadow.pods;
    delete node.shadow.pods;
    const pods = syncPodNodes(maps.podNode, ir, node, kept);
    node.shadow.pods = pods.shadow;
    if (pods.wrote) changed.push('services:pods');
  }
  const dir = servicesDir(scope);
  const cgroup = serviceCgroup(scope);
  mkdirSync(cgroup, { recursive: true });
  for (const p of programsOnce())
    if (ensureLink(dir, cgroup, p, maps, fresh)) changed.push(`services:program:${p.hook}`);
  return changed;
}

/** Detaches the load balancer's links and removes its pins. */
export function removeServices(scope: string): void {
  const dir = servicesDir(scope);
  const links = linkDir(dir);
  if (existsSync(links)) for (const name of readdirSync(links)) dropPinnedLink(join(links, name));
  rmSync(dir, { recursive: true, force: true });
}

/** Program ids of the attached hooks, by hook (for tests and `compile`-like listings). */
export function serviceProgramIds(scope: string): Record<string, number> {
  const links = linkDir(servicesDir(scope));
  const out: Record<string, number> = {};
  if (!existsSync(links)) return out;
  for (const name of readdirSync(links).sort()) {
    const link = Link.fromPin(join(links, name));
    try {
      out[name.split('-')[0] ?? name] = link.info().programId;
    } finally {
      link.close();
    }
  }
  return out;
}
