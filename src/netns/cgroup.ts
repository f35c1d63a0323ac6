import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { PrerequisiteError } from './errors.js';

/**
 * Where cgroup2 is mounted: /sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified in hybrid mode.
 * Read from /proc/mounts rather than assumed.
 */
export function cgroup2Mount(mountsText?: string): string {
  const text = mountsText ?? readFileSync('/proc/mounts', 'utf8');
  for (const line of text.split('\n')) {
    const [, dir, fstype] = line.split(' ');
    if (fstype === 'cgroup2' && dir) return dir.replace(/\\040/g, ' ');
  }
  throw new PrerequisiteError(
    'no cgroup2 file system is mounted (mount -t cgroup2 none /sys/fs/cgroup/unified)',
  );
}

/** The cgroup2 directory a process is in (`0::/path` in /proc/PID/cgroup). */
export function currentCgroup(pid: number | 'self' = 'self', mount = cgroup2Mount()): string {
  const line = readFileSync(`/proc/${pid}/cgroup`, 'utf8')
    .split('\n')
    .find((l) => l.startsWith('0::'));
  if (!line) throw new PrerequisiteError(`process ${pid} has no cgroup2 membership`);
  return join(mount, line.slice(3));
}

export function ensureCgroup(path: string): void {
  mkdirSync(path, { recursive: true });
}

/** Moves a whole process (all its threads) into the cgroup. */
export function moveToCgroup(path: string, pid: number): void {
  writeFileSync(join(path, 'cgroup.procs'), String(pid));
}

function childCgroups(path: string): string[] {
  try {
    return readdirSync(path, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => join(path, d.name));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/** Pids directly in the cgroup and in every cgroup below it. */
export function cgroupTreePids(path: string): number[] {
  if (!existsSync(path)) return [];
  let pids: number[] = [];
  try {
    pids = readFileSync(join(path, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number);
  } catch {
    // vanished meanwhile
  }
  return [...pids, ...childCgroups(path).flatMap(cgroupTreePids)];
}

function killTree(path: string): void {
  // cgroup.kill (Linux 5.14+) kills every process below, atomically against forks.
  if (existsSync(join(path, 'cgroup.kill'))) {
    try {
      writeFileSync(join(path, 'cgroup.kill'), '1');
      return;
    } catch {
      // fall through to per-process kills
    }
  }
  for (const pid of cgroupTreePids(path)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

function removeEmptyTree(path: string): string[] {
  const stuck = childCgroups(path).flatMap(removeEmptyTree);
  try {
    rmdirSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') stuck.push(`${path} (${code ?? String(e)})`);
  }
  return stuck;
}

/**
 * Whether any task (zombies included: a cgroup cannot be removed until its dead are reaped) is
 * still in the tree.
 */
export function cgroupPopulated(path: string): boolean {
  try {
    return /^populated 1$/m.test(readFileSync(join(path, 'cgroup.events'), 'utf8'));
  } catch {
    return false;
  }
}

/**
 * Kills every process in the cgroup tree, waits for them to go, and removes the tree bottom-up.
 * Returns the cgroups that could not be removed (empty on success).
 */
export async function removeCgroupTree(path: string, timeoutMs = 5000): Promise<string[]> {
  if (!existsSync(path)) return [];
  killTree(path);
  const deadline = Date.now() + timeoutMs;
  while (cgroupPopulated(path) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  return removeEmptyTree(path);
}
