/**
 * One JSON state file per lab under /run/switchyard/labs/<name>/ (tmpfs: gone after a reboot,
 * together with the namespaces it describes). It is written before the kernel is touched, so
 * even a run killed half-way leaves a record of every name it may have made.
 */
import { readdirSync, readFileSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Allocations } from '../calc/index.js';
import type { BackendName } from '../dataplane/backend.js';
import type { PolicyMode } from '../ir/decision-table.js';
import type { IR } from '../ir/types.js';
import type { Model } from '../model/index.js';
import { LabError } from './errors.js';
import { labNameError, STATE_ROOT } from './names.js';
import type { Topology } from './topology.js';
import { errorMessage } from '../util/errors.js';
import { PRIVATE_FILE_MODE, privateDir, writePrivateFileAtomic } from '../util/private-files.js';

export type LabBackend = 'none' | BackendName;
export type LabStatus = 'creating' | 'applying' | 'ready' | 'removing';

export interface ProbeServerInfo {
  pid: number;
  socket: string;
  startedAt: string;
}

export interface LabState {
  version: 1;
  name: string;
  status: LabStatus;
  createdAt: string;
  updatedAt: string;
  backend: LabBackend;
  nodeCount: number;
  /** How rule sets are decided (absent in labs from before decision tables: walk). */
  policyMode?: PolicyMode;
  /** Manifests of the last up/apply. */
  files: string[];
  model: Model;
  ir: IR;
  /** What the backend last applied successfully: its `previous` on the next apply. */
  backendIR?: IR;
  /**
   * What calc's allocate() gave the model (nodes, placement, addresses, service VIPs): passed back
   * in on the next up/apply so addresses and placement survive updates, and the IR is built from
   * it. A lab from before `nodes` was recorded lacks it (allocate never reads it).
   */
  allocations: Allocations;
  /** What is in the kernel (undefined until the first run completes). */
  topology?: Topology;
  /** What a run in progress is building: with `topology`, every name the lab may own. */
  target?: Topology;
  /**
   * Pods born closed and not yet plugged (ids): their host link is down and unrouted until the
   * backend reports a revision covering them in force. Written before the kernel changes; a pod
   * whose policy failed stays here (closed) until an apply succeeds.
   */
  closed?: string[];
  /** Set by a run that switches backends until it completes: an interrupted switch is rebuilt. */
  switchingFrom?: LabBackend;
  /** `<cgroup2 mount>/switchyard/<lab>` */
  cgroupRoot: string;
  probe?: ProbeServerInfo;
  /** Whether one agent per node keeps the backend in sync (else the lab applies it itself); none run without a backend. */
  agents?: boolean;
  /** Bumped by every up/apply: the desired-state revision the agents must report in force. */
  revision?: number;
  /** Cluster mode: the agents watch this etcd (started by `cluster up`) instead of `desired/`. */
  cluster?: { etcd: string };
}

export function labDir(name: string): string {
  return join(STATE_ROOT, name);
}

/** The lab's directory, created 0700 (and the state root above it: root's alone, see private-files.ts). */
export function privateLabDir(name: string): string {
  privateDir(dirname(STATE_ROOT));
  privateDir(STATE_ROOT);
  return privateDir(labDir(name));
}

export function statePath(name: string): string {
  return join(labDir(name), 'state.json');
}

export function readState(name: string): LabState | undefined {
  let text: string;
  try {
    text = readFileSync(statePath(name), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw e;
  }
  try {
    const state = JSON.parse(text) as LabState;
    if (state.version !== 1 || state.name !== name) throw new Error('unexpected content');
    return state;
  } catch (e) {
    throw new LabError(
      `the state file ${statePath(name)} is unreadable (${errorMessage(e)}); ` +
        `'switchyard lab down --lab ${name}' removes the lab by its names`,
    );
  }
}

/** Atomic: a crash leaves the old file or the new one, never half of one. */
export function writeState(state: LabState): void {
  privateLabDir(state.name);
  writePrivateFileAtomic(
    statePath(state.name),
    JSON.stringify({ ...state, updatedAt: new Date().toISOString() }, null, 1) + '\n',
  );
}

/** Lab names with a state directory. */
export function stateLabs(): string[] {
  try {
    return readdirSync(STATE_ROOT, { withFileTypes: true })
      .filter((d) => d.isDirectory() && labNameError(d.name) === undefined)
      .map((d) => d.name)
      .sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

export function removeLabDir(name: string): void {
  rmSync(labDir(name), { recursive: true, force: true });
}

/** Running (a zombie waiting for its parent to reap it counts as dead). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/**
 * Serialises changes to one lab across processes. The lock file holds the owner's pid; a lock
 * whose owner died (a killed `lab up`) is taken over.
 */
export async function withLabLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
  privateLabDir(name);
  const path = join(labDir(name), 'lock');
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(path, String(process.pid), { flag: 'wx', mode: PRIVATE_FILE_MODE });
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      let owner = Number.NaN;
      try {
        owner = Number(readFileSync(path, 'utf8').trim());
      } catch {
        // released meanwhile: try again
      }
      if (Number.isInteger(owner) && owner > 0 && owner !== process.pid && isAlive(owner)) {
        throw new LabError(`lab '${name}' is busy: another switchyard process (pid ${owner}) is changing it`);
      }
      if (attempt > 3) throw new LabError(`cannot take the lock ${path}`);
      rmSync(path, { force: true });
    }
  }
  try {
    return await fn();
  } finally {
    rmSync(path, { force: true });
    // A lab that never got a state file (bad input, say) leaves no directory behind.
    try {
      rmdirSync(labDir(name));
    } catch {
      // not empty: a real lab
    }
  }
}
