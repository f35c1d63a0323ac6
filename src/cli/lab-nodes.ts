/** The nodes of a lab a per-node command (counters, conntrack) reads: all, or the one `--node` names. */
import type { Command } from 'commander';
import { DEFAULT_LAB } from '../lab/names.js';
import { CliError } from './output.js';

/** Adds `--name <lab>` and `--node <name>`, as every per-node lab command takes them. */
export function labNodeOptions(cmd: Command): Command {
  return cmd.option('--name <lab>', 'lab name', DEFAULT_LAB).option('--node <name>', 'only this node');
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
