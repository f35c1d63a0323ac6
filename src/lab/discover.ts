/**
 * Finding labs and what they own by name alone: state directories, cgroups, pins, fabric
 * namespaces and probe server command lines. This is how `lab down` cleans up after a run that
 * died before it could record everything.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { listNetns } from '../netns/index.js';
import { CGROUP_DIR, labNameError, netnsPrefix, PIN_ROOT } from './names.js';
import { findProbeServers } from './probe/control.js';
import { stateLabs } from './state.js';

function subdirs(path: string): string[] {
  try {
    return readdirSync(path, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => d.name);
  } catch {
    return [];
  }
}

/** Lab names behind `sy-<lab>-fabric` namespaces. */
export function fabricLabs(netns: readonly string[]): string[] {
  return netns.flatMap((n) => {
    const m = /^sy-(.+)-fabric$/.exec(n);
    return m?.[1] ? [m[1]] : [];
  });
}

export function discoverLabs(cgroupMount: string | undefined): string[] {
  const names = new Set<string>([
    ...stateLabs(),
    ...(cgroupMount ? subdirs(join(cgroupMount, CGROUP_DIR)) : []),
    ...subdirs(PIN_ROOT),
    ...fabricLabs(listNetns()),
    ...findProbeServers().keys(),
  ]);
  return [...names].filter((n) => labNameError(n) === undefined).sort();
}

/**
 * Namespaces `lab` owns by prefix: `sy-<lab>-…`, unless another lab's state lists it or a longer
 * lab name also prefixes it (lab `a` must not take `sy-a-b-x` from lab `a-b`).
 */
export function ownedByPrefix(
  lab: string,
  netns: readonly string[],
  labs: readonly string[],
  claimedByOthers: ReadonlySet<string>,
): string[] {
  const prefix = netnsPrefix(lab);
  const longer = labs.filter((l) => l !== lab && l.length > lab.length && netnsPrefix(l).startsWith(prefix));
  return netns.filter(
    (n) =>
      n.startsWith(prefix) && !claimedByOthers.has(n) && !longer.some((l) => n.startsWith(netnsPrefix(l))),
  );
}
