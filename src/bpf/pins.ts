import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statfsSync,
  statSync,
  unlinkSync,
} from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { objGet, objPin } from './commands.js';
import { bpfError } from './errors.js';
import { rawMount } from './sys.js';

/**
 * Pins keep maps, programs and links alive after the process that made them exits. Switchyard
 * keeps all of its pins under one directory per scope (a lab or an agent):
 *
 *     /sys/fs/bpf/switchyard/<scope>/maps/<name>
 *     /sys/fs/bpf/switchyard/<scope>/programs/<name>
 *     /sys/fs/bpf/switchyard/<scope>/links/<name>
 *
 * so a restarted agent finds its objects by name and cleanup removes one directory.
 */

export const BPFFS_ROOT = '/sys/fs/bpf';
export const PIN_ROOT = `${BPFFS_ROOT}/switchyard`;

export type PinKind = 'maps' | 'programs' | 'links';

interface MountEntry {
  target: string;
  type: string;
}

function mounts(): MountEntry[] {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((line) => {
      const fields = line.split(' ');
      // /proc/mounts escapes spaces in paths as \040.
      return { target: (fields[1] ?? '').replace(/\\040/g, ' '), type: fields[2] ?? '' };
    });
}

/** statfs(2)'s f_type of a bpf filesystem (BPF_FS_MAGIC, include/uapi/linux/magic.h). */
const BPF_FS_MAGIC = 0xcafe4a11;

/**
 * Whether `path` is on a bpf filesystem: one statfs, not a read of /proc/mounts, which lists every
 * netns bind mount too (a lab of 100 pods: 1 ms a read, paid by each of a full sync's 200 pins).
 */
export function isBpffsMounted(path = BPFFS_ROOT): boolean {
  try {
    return statfsSync(path).type === BPF_FS_MAGIC;
  } catch {
    // No such directory yet, or statfs refused: as /proc/mounts says.
    return mounts().some((m) => m.target === path && m.type === 'bpf');
  }
}

/** Mounts bpffs at /sys/fs/bpf unless it is already there; returns whether it mounted one. */
export function ensureBpffs(path = BPFFS_ROOT): boolean {
  if (isBpffsMounted(path)) return false;
  if (!existsSync(path)) mkdirSync(path, { recursive: true });
  const result = rawMount('bpf', path, 'bpf', 0, 'mode=0700');
  if (result < 0) throw bpfError(-result, { operation: 'mount -t bpf', subject: `at ${path}` });
  return true;
}

const SCOPE_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

/** /sys/fs/bpf/switchyard/<scope>; the scope must be a plain name (no slashes, no '..'). */
export function pinScopeDir(scope: string): string {
  if (!SCOPE_PATTERN.test(scope) || scope.includes('..'))
    throw new Error(`invalid pin scope '${scope}': use letters, digits, '.', '_' and '-' (max 64)`);
  return join(PIN_ROOT, scope);
}

export function pinPath(scope: string, kind: PinKind, name: string): string {
  if (!SCOPE_PATTERN.test(name)) throw new Error(`invalid pin name '${name}'`);
  return join(pinScopeDir(scope), kind, name);
}

function assertOnBpffs(path: string): string {
  const absolute = resolve(path);
  const inside = relative(BPFFS_ROOT, absolute);
  if (inside.startsWith('..') || inside === '' || resolve(BPFFS_ROOT, inside) !== absolute)
    throw new Error(`pin path '${path}' must be below ${BPFFS_ROOT}`);
  return absolute;
}

/** Pins an fd at `path`, creating parent directories on bpffs first. */
export function pinFd(fd: number, path: string, description?: string): void {
  const absolute = assertOnBpffs(path);
  ensureBpffs();
  mkdirSync(dirname(absolute), { recursive: true });
  objPin(fd, absolute, description);
}

/** Opens a pinned object; the caller owns the returned fd. */
export function openPinnedFd(path: string): number {
  return objGet(assertOnBpffs(path));
}

export function isPinned(path: string): boolean {
  return existsSync(path);
}

/** Removes one pin; the object dies once nothing else (fd, attachment) holds it. */
export function unpin(path: string): void {
  unlinkSync(assertOnBpffs(path));
}

/** Pins below a scope as paths relative to the scope directory, e.g. 'maps/deny'. */
export function listPins(scope: string): string[] {
  const root = pinScopeDir(scope);
  if (!existsSync(root)) return [];
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const entry of readdirSync(dir)) {
      const full = join(dir, entry);
      if (statSync(full).isDirectory()) walk(full);
      else out.push(relative(root, full));
    }
  };
  walk(root);
  return out.sort();
}

/** Removes a scope's whole pin directory (cleanup); a missing directory is not an error. */
export function removePinScope(scope: string): void {
  rmSync(pinScopeDir(scope), { recursive: true, force: true });
}
