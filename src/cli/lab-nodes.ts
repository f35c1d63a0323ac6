/** The nodes of a lab a per-node command (counters, conntrack) reads: all, or the one `--node` names. */
import type { Command } from 'commander';
import { addLabOptions } from './lab-choice.js';
import { CliError } from './output.js';

/** Adds `--lab <name>` and `--node <name>`, as every per-node lab command takes them. */
export function labNodeOptions(cmd: Command): Command {
  return addLabOptions(cmd).option('--node <name>', 'only this node');
}

/** All nodes, or only `--node`; an unknown `--node` is a usage error listing the lab's nodes. */
export function selectLabNodes<N extends { name: string }>(
  lab: string,
  nodes: readonly N[],
  only: string | undefined,
): N[] {
  if (!only) return [...nodes];
  const selected = nodes.filter((n) => n.name === only);
  if (selected.length === 0)
    throw new CliError(
      `lab '${lab}' has no node '${only}' (nodes: ${nodes.map((n) => n.name).join(', ')})`,
      2,
    );
  return selected;
}
