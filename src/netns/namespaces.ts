import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { ipBatch } from './ipbatch.js';

/** Where `ip netns` keeps named namespaces (bind mounts of /proc/PID/ns/net). */
export const NETNS_DIR = '/run/netns';

/** Path of a named namespace as `ip netns add` creates it; a name that could leave the directory is refused. */
export function netnsPath(name: string): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(name)) throw new Error(`invalid network namespace name '${name}'`);
  return join(NETNS_DIR, name);
}

export function listNetns(): string[] {
  try {
    return readdirSync(NETNS_DIR).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw e;
  }
}

/** Creates namespaces in one `ip -batch` (each `netns add` returns to the caller's namespace). */
export async function createNetns(names: readonly string[]): Promise<void> {
  await ipBatch(names.map((n) => `netns add ${n}`));
}

/**
 * Deletes namespaces that exist, in one batch; missing ones are fine. Returns those still present
 * afterwards (normally none).
 */
export async function deleteNetns(names: readonly string[]): Promise<string[]> {
  const present = new Set(listNetns());
  const doomed = [...new Set(names)].filter((n) => present.has(n));
  await ipBatch(
    doomed.map((n) => `netns del ${n}`),
    { force: true },
  );
  const after = new Set(listNetns());
  return doomed.filter((n) => after.has(n));
}
