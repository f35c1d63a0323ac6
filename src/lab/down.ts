/** Removing a lab, or everything a crashed run of one left behind. */
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { loadBackend } from '../dataplane/registry.js';
import {
  cgroup2Mount,
  deleteNetns,
  listNetns,
  removeCgroupTree,
  requireRoot,
  requireTools,
} from '../netns/index.js';
import { stopLabAgents, stopOrphanAgents } from './agents.js';
import { discoverLabs, ownedByPrefix } from './discover.js';
import { stopEtcd, stopOrphanEtcd } from './etcd.js';
import { CGROUP_DIR, checkLabName, PIN_ROOT, STATE_ROOT } from './names.js';
import { findProbeServers, isProbeServer, stopProcess } from './probe/control.js';
import {
  isAlive,
  readState,
  removeLabDir,
  stateLabs,
  statePath,
  withLabLock,
  type LabState,
} from './state.js';
import { topologyNetns } from './topology.js';
import { errorMessage } from '../util/errors.js';

export interface CleanupReport {
  lab: string;
  netns: string[];
  processes: number[];
  cgroups: boolean;
  pins: boolean;
  stateDir: boolean;
  /** What could not be removed; empty when the lab is fully gone. */
  problems: string[];
  /** Worth knowing but harmless (e.g. a backend's remove failed, its namespace went anyway). */
  notes: string[];
}

function cgroupMountOrUndefined(): string | undefined {
  try {
    return cgroup2Mount();
  } catch {
    return undefined;
  }
}

function stateOrUndefined(name: string): LabState | undefined {
  try {
    return readState(name);
  } catch {
    return undefined;
  }
}

/** Namespaces other labs' state files name, so prefix matching never takes them. */
function claimedByOthers(lab: string): Set<string> {
  const out = new Set<string>();
  for (const other of stateLabs()) {
    if (other === lab) continue;
    const s = stateOrUndefined(other);
    for (const t of [s?.topology, s?.target]) if (t) for (const n of topologyNetns(t)) out.add(n);
  }
  return out;
}

async function killProcesses(lab: string, state: LabState | undefined): Promise<number[]> {
  const pids = new Set(findProbeServers().get(lab) ?? []);
  const recorded = state?.probe?.pid;
  if (recorded && isProbeServer(recorded, lab)) pids.add(recorded);
  for (const pid of pids) stopProcess(pid);
  const deadline = Date.now() + 3000;
  while ([...pids].some(isAlive) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  return [...pids];
}

async function removeBackend(lab: string, state: LabState): Promise<string[]> {
  if (state.backend === 'none') return [];
  const nodes = [...(state.topology?.nodes ?? []), ...(state.target?.nodes ?? [])];
  const present = new Set(listNetns());
  try {
    const backend = await loadBackend(state.backend);
    const problems: string[] = [];
    for (const n of nodes) {
      if (!present.has(n.netns)) continue;
      try {
        await backend.remove({ scope: lab, node: n.name, netns: n.netns });
      } catch (e) {
        problems.push(`${state.backend} on ${n.name}: ${errorMessage(e)}`);
      }
    }
    // Namespaces and pins go below anyway; a failed remove is worth a note, not a stop.
    return problems;
  } catch {
    return [];
  }
}

/**
 * Removes everything of one lab: backend state, etcd, probe server and any process in its cgroups,
 * namespaces (from the state file and by the `sy-<lab>-` prefix), pins, cgroups and the state
 * directory. Works without a state file.
 */
export async function destroyLab(
  lab: string,
  opts: { knownLabs?: readonly string[]; keepStateDir?: boolean } = {},
): Promise<CleanupReport> {
  const state = stateOrUndefined(lab);
  const problems: string[] = [];
  // Agents first: they would repair what removeBackend takes away.
  const agents = await stopLabAgents(lab);
  const etcd = await stopEtcd(lab);
  const notes = state ? await removeBackend(lab, state) : [];
  const processes = [...agents, ...etcd, ...(await killProcesses(lab, state))];
  const mount = cgroupMountOrUndefined();
  const cgroupRoot = state?.cgroupRoot ?? (mount ? join(mount, CGROUP_DIR, lab) : undefined);
  const hadCgroups = cgroupRoot !== undefined && existsSync(cgroupRoot);
  // Processes first: their sockets would keep namespaces alive after the names are gone.
  if (cgroupRoot)
    problems.push(...(await removeCgroupTree(cgroupRoot)).map((c) => `cannot remove cgroup ${c}`));

  const fromState = [state?.topology, state?.target].flatMap((t) => (t ? topologyNetns(t) : []));
  const labs = opts.knownLabs ?? discoverLabs(mount);
  const byPrefix = ownedByPrefix(lab, listNetns(), labs, claimedByOthers(lab));
  const present = new Set(listNetns());
  const netns = [...new Set([...fromState, ...byPrefix])].filter((n) => present.has(n)).sort();
  const left = await deleteNetns(netns);
  problems.push(...left.map((n) => `cannot remove network namespace ${n}`));

  const pins = join(PIN_ROOT, lab);
  const hadPins = existsSync(pins);
  if (hadPins) {
    try {
      rmSync(pins, { recursive: true, force: true });
    } catch (e) {
      problems.push(`cannot remove pins ${pins}: ${errorMessage(e)}`);
    }
  }
  const hadState = existsSync(statePath(lab));
  if (!opts.keepStateDir && problems.length === 0) removeLabDir(lab);
  return {
    lab,
    netns,
    processes,
    cgroups: hadCgroups,
    pins: hadPins,
    stateDir: hadState && !opts.keepStateDir && problems.length === 0,
    problems,
    notes,
  };
}

export async function labDown(name: string): Promise<CleanupReport> {
  checkLabName(name);
  requireRoot('switchyard lab down');
  requireTools(['ip']);
  // The lock lives in the state directory, which destroyLab removes last.
  return withLabLock(name, () => destroyLab(name));
}

/** Names of every lab on the machine, by state directory or by what it left in the kernel. */
export function labsOnMachine(): string[] {
  return discoverLabs(cgroupMountOrUndefined());
}

/** Every lab on the machine, found by state directories and by the names labs leave in the kernel. */
export async function labDownAll(): Promise<CleanupReport[]> {
  requireRoot('switchyard lab down');
  requireTools(['ip']);
  const labs = discoverLabs(cgroupMountOrUndefined());
  const reports: CleanupReport[] = [];
  // Longer names first, so `a-b` is gone before `a` matches prefixes.
  for (const lab of [...labs].sort((a, b) => b.length - a.length)) {
    try {
      reports.push(await withLabLock(lab, () => destroyLab(lab, { knownLabs: labs })));
    } catch (e) {
      // One busy lab must not keep the others up.
      reports.push({
        lab,
        netns: [],
        processes: [],
        cgroups: false,
        pins: false,
        stateDir: false,
        problems: [errorMessage(e)],
        notes: [],
      });
    }
  }
  const orphans = [...(await stopOrphanAgents(STATE_ROOT)), ...(await stopOrphanEtcd())];
  if (orphans.length > 0)
    reports.push({
      lab: '(agents and etcd of labs already gone)',
      netns: [],
      processes: orphans,
      cgroups: false,
      pins: false,
      stateDir: false,
      problems: [],
      notes: [],
    });
  return reports;
}
