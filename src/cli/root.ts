/**
 * Commands that touch the kernel, the agents' sockets or /run/switchyard need root. They say so
 * before doing anything, in the same words, instead of failing half-way with EACCES (a socket, a
 * state file) or a misleading message (a process "did not exit" because it could not be signalled).
 */
import type { Command } from 'commander';
import { CliError } from './output.js';

/** Command paths (as typed after `switchyard`) that need root. */
export const ROOT_COMMANDS: ReadonlySet<string> = new Set([
  'lab up',
  'lab apply',
  'lab reach',
  'lab exec',
  'lab status',
  'lab down',
  'lab counters',
  'lab conntrack',
  'lab probe',
  'cluster up',
  'cluster down',
  'cluster status',
  'cluster cut',
  'cluster heal',
  'cluster etcd kill',
  'cluster etcd start',
  'agent',
  'flows',
  'console',
  'node status',
  'node endpoints',
  'node policies',
  'node explain',
  'bench',
]);

/** `lab status` for the command `switchyard lab status`. */
export function commandPath(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** Refuses a root-only command for another user, before its action runs. */
export function requireRootFor(cmd: Command, uid: number | undefined = process.geteuid?.()): void {
  const path = commandPath(cmd);
  if (uid !== 0 && ROOT_COMMANDS.has(path))
    throw new CliError(
      `switchyard ${path} needs root (run it with sudo): it works on network namespaces, BPF and ` +
        `the root-only state and sockets under /run/switchyard`,
      1,
      { code: 'needs-root' },
    );
}
